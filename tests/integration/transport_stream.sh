# Two nodes on two network-namespace hosts: a Stream exported on one is
# restored and used from the other through the encrypted transport; refs
# can be listed, shown and revoked; bad refs fail clearly, never hang.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b "[fd77::2]:9010"

m A node | grep -q '^id: ' || fail "metac node shows no identity"
ID_A=$(m A node --json | sed 's/.*"id":"\([^"]*\)".*/\1/')
[ ${#ID_A} -eq 43 ] || fail "node id is not 43 characters: $ID_A"
[ "$(stat -c %a "$T/A/node.key")" = 600 ] || fail "key file is not 0600"

# An echo service on host A, reachable only there through a unix socket.
socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>"$T/socat.log" &
_pids+=($!)
for _ in $(seq 50); do [ -S "$T/echo.sock" ] && break; sleep 0.05; done

REF=$(m A stream export "unix:$T/echo.sock") || fail "stream export failed"
case $REF in ref://10.77.0.1/*) ;; *) fail "unexpected ref: $REF" ;; esac

# Bytes go through B's daemon, over the network to A, to the echo and back.
head -c 4000000 /dev/urandom >"$T/in"
timeout 60 "$T/B.m" stream connect "$REF" <"$T/in" >"$T/back" || fail "stream connect failed"
cmp -s "$T/in" "$T/back" || fail "echoed bytes differ"
echo small | timeout 20 "$T/B.m" stream connect "$REF" | grep -qx small ||
	fail "small echo failed"
# --direct: the client, on host B, connects to A itself with the token B's
# daemon got for it.
timeout 60 ip netns exec "$NS_PREFIX-b" "$T/B.m" stream connect --direct "$REF" \
	<"$T/in" >"$T/back" || fail "stream connect --direct failed"
cmp -s "$T/in" "$T/back" || fail "echoed bytes differ (--direct)"
grep -q "peer .* at 10.77.0.2:.* restores a ref: ok" "$T/A.log" ||
	fail "restoring peer was not logged"

# The node keeps no secret: list shows records, show finds the ref.
m A ref list | grep -q "stream .*unix:$T/echo.sock" || fail "ref list lacks the ref"
m A ref list --json | grep -q '"service":"stream"' || fail "ref list --json"
m A ref show "$REF" | grep -q ephemeral || fail "ref show"
! grep -q "${REF##*/}" "$T/A/node.db" "$T/A.log" 2>/dev/null ||
	fail "the ref's secret is stored or logged"

# A ref naming some other node's key at A's address (a man in the middle
# would look like this): the handshake fails.
TOKEN=${REF##*/}
OTHER=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
BADKEY="ref://10.77.0.1/$OTHER${TOKEN:43}"
expect_fail "handshake with 10.77.0.1:901 failed" "$T/B.m" stream connect "$BADKEY"

# Malformed refs.
expect_fail "malformed ref" "$T/B.m" stream connect "ref://10.77.0.1/short"
expect_fail "malformed ref" "$T/B.m" stream connect "http://x/y"
# Unreachable node: nothing listens on that port.
expect_fail "cannot reach node at 10.77.0.1:999" "$T/B.m" stream connect "ref://10.77.0.1:999/$TOKEN"

# Revoked refs are refused.
m A ref revoke "$REF" 2>/dev/null || fail "revoke failed"
expect_fail "no such ref on this node" "$T/B.m" stream connect "$REF"
m A ref list | grep -q stream && fail "revoked ref still listed"

# No daemon.
expect_fail "not running" env METAC_ADMIN_SOCKET="$T/none.sock" "$METAC" node
exit 0
