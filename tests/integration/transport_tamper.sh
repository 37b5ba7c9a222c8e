# A man in the middle that changes or replays one encrypted frame gets the
# connection closed, never a changed or duplicated byte through: a flipped
# bit or a replayed frame on a Stream's data connection ends `stream
# connect` with an error (not a hang) and the sink behind the stream gets
# nothing of that frame or after it; the same on the RPC connection makes
# the restore fail. A proxy that changes nothing (pass) works, so the
# failures come from the tampering. tamper_proxy.c is the man in the middle.
#
# The proxy runs on host A in front of A's daemon; the ref's HOST:PORT is
# rewritten to point at it, keeping the TOKEN (which pins A's key), so B's
# RPC connection and the Stream's data connection both go through it. The
# proxy counts frames per connection, 1 being the hello; `stream connect`
# through B's daemon makes B open an RPC connection to A (hello, bootstrap,
# restore, connect: frames 1-4) and then a data connection (hello, then
# one frame per chunk the client read, then an empty end-of-stream
# frame). Data frame 2 is the first payload frame, but RPC frame 2 is the
# bootstrap call, so the data cases limit the proxy to data connections.
. "$(dirname "$0")/lib.bash"

netns_pair a b
${CC:-gcc} -O2 -Wall -o "$T/tamper_proxy" "$(dirname "$0")/tamper_proxy.c" ||
	fail "cannot build tamper_proxy"
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

# wait_for WHAT CMD...: until CMD succeeds, at most 10 s.
wait_for() {
	local what=$1
	shift
	for _ in $(seq 200); do
		"$@" && return 0
		sleep 0.05
	done
	fail "timed out waiting for $what"
}

# A sink on host A: each connection's bytes are appended to $T/sink, then
# one line to $T/sink.ends, so that a test knows when a connection ended.
socat -u UNIX-LISTEN:"$T/sink.sock",fork \
	SYSTEM:"cat >>'$T/sink'; echo >>'$T/sink.ends'" 2>"$T/sink.log" &
_pids+=($!)
socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>"$T/echo.log" &
_pids+=($!)
for s in sink echo; do
	wait_for "the $s socket" test -S "$T/$s.sock"
done
touch "$T/sink.ends"
SINK=$(m A stream export "unix:$T/sink.sock") || fail "export of the sink failed"
ECHO=$(m A stream export "unix:$T/echo.sock") || fail "export of the echo failed"

sink_ends() { wc -l <"$T/sink.ends"; }
auth_failures() { grep -c "frame failed to authenticate" "$T/A.log"; }
more_than() { [ "$("$1")" -gt "$2" ]; }

# proxy_start PORT MODE N [rpc|data]: a proxy on 10.77.0.1:PORT in front
# of A's daemon, logging to $T/proxyPORT.log. Each case has its own port:
# B keeps its connection to a node address, and a new address means a new
# connection whose frames are counted from 1.
proxy_start() {
	local port=$1
	shift
	ip netns exec "$NS_PREFIX-a" "$T/tamper_proxy" "10.77.0.1:$port" \
		10.77.0.1:901 "$@" 2>"$T/proxy$port.log" &
	_pids+=($!)
	wait_for "the proxy on port $port" grep -q listening "$T/proxy$port.log"
}

# via REF PORT: REF, reached through the proxy on PORT.
via() {
	echo "ref://10.77.0.1:$2/${1##*/}"
}

# connect_fail PORT: stream connect to the sink through the proxy on PORT
# must fail promptly, restore having worked (the error is the stream's).
connect_fail() {
	local rc
	timeout 30 "$T/B.m" stream connect "$(via "$SINK" "$1")" <"$T/small" \
		>"$T/out" 2>"$T/err"
	rc=$?
	[ $rc -eq 124 ] && fail "stream connect hung through the proxy on $1"
	[ $rc -eq 1 ] || fail "stream connect exit $rc, expected 1 ($(cat "$T/err"))"
	grep -q "metac stream: the stream ended with an error" "$T/err" ||
		fail "no clear error from stream connect: $(cat "$T/err")"
	[ -s "$T/out" ] && fail "stream connect printed bytes from a one-way sink"
}

head -c 1000000 /dev/urandom >"$T/in"
# One chunk: stream connect reads a regular file in chunks of up to 64 KiB,
# so this is exactly one payload frame of 1000 + 16 bytes.
head -c 1000 /dev/urandom >"$T/small"

# (a) pass: the proxy is transparent, both ways, for both connections.
proxy_start 9101 pass 1
ends=$(sink_ends)
timeout 60 "$T/B.m" stream connect "$(via "$SINK" 9101)" <"$T/in" >"$T/out" ||
	fail "stream connect through a passing proxy failed"
wait_for "the sink's connection to end" more_than sink_ends "$ends"
cmp -s "$T/in" "$T/sink" || fail "the sink got other bytes than were sent"
timeout 60 "$T/B.m" stream connect "$(via "$ECHO" 9101)" <"$T/in" >"$T/back" ||
	fail "echo through a passing proxy failed"
cmp -s "$T/in" "$T/back" || fail "echoed bytes differ through the proxy"
grep -q "conn 1: rpc connection" "$T/proxy9101.log" ||
	fail "the RPC connection did not go through the proxy"
[ "$(grep -c ': data connection' "$T/proxy9101.log")" -eq 2 ] ||
	fail "the data connections did not go through the proxy"
grep -q "peer .* at 10.77.0.1:.* restores a ref: ok" "$T/A.log" ||
	fail "A did not see the restore come from the proxy"
[ "$(auth_failures)" -eq 0 ] || fail "frames failed to authenticate through a passing proxy"

# (b) flip a bit of the first payload frame of the data connection: A
# closes it; the sink, connected when the hello was accepted, gets nothing.
proxy_start 9102 flip 2 data
: >"$T/sink"
ends=$(sink_ends)
fails=$(auth_failures)
connect_fail 9102
wait_for "A to log the failed frame" more_than auth_failures "$fails"
wait_for "the sink's connection to end" more_than sink_ends "$ends"
grep -q "frame 2 of 1016 bytes flipped" "$T/proxy9102.log" ||
	fail "the proxy did not flip the payload frame"
[ -s "$T/sink" ] && fail "the sink got $(stat -c %s "$T/sink") bytes of a tampered stream"

# (c) replay the first payload frame: the copy fails (its nonce is
# spent), A closes the connection; the sink gets the bytes once at most
# (not at all if A had not yet written them when it cut the sink off).
proxy_start 9103 replay 2 data
: >"$T/sink"
ends=$(sink_ends)
fails=$(auth_failures)
connect_fail 9103
wait_for "A to log the failed frame" more_than auth_failures "$fails"
wait_for "the sink's connection to end" more_than sink_ends "$ends"
grep -q "frame 2 of 1016 bytes replayed" "$T/proxy9103.log" ||
	fail "the proxy did not replay the payload frame"
size=$(stat -c %s "$T/sink")
[ "$size" -le 1000 ] || fail "the sink got $size bytes: a replayed frame was delivered"
cmp -s -n "$size" "$T/sink" "$T/small" || fail "the sink got other bytes than were sent"

# (d) the RPC connection: a flipped hello (every connection, but the RPC
# connection is the first, and there is no other), then a replayed hello
# and a flipped restore call; the restore fails, and no data connection
# is opened.
n=0
for args in "flip 1" "replay 1 rpc" "flip 3 rpc"; do
	port=$((9104 + n))
	n=$((n + 1))
	proxy_start "$port" $args
	fails=$(auth_failures)
	expect_fail "cannot restore the ref: connection to .* lost" \
		"$T/B.m" stream connect "$(via "$SINK" "$port")"
	wait_for "A to log the failed frame" more_than auth_failures "$fails"
	grep -q "conn 1: rpc connection" "$T/proxy$port.log" ||
		fail "$args: the first connection is not B's RPC connection"
	set -- $args
	case $1 in flip) verb=flipped ;; replay) verb=replayed ;; esac
	grep -q "conn 1: frame $2 of [0-9]* bytes $verb" "$T/proxy$port.log" ||
		fail "$args: the proxy did not tamper with frame $2"
	grep -q ": data connection" "$T/proxy$port.log" &&
		fail "$args: a data connection was opened after a failed restore"
done

# One failed frame per tampering, none from anything else.
[ "$(auth_failures)" -eq 5 ] || fail "A logged $(auth_failures) failed frames, expected 5"
# Both nodes are unharmed, and the first proxy still works.
m A node >/dev/null || fail "daemon A died"
m B node >/dev/null || fail "daemon B died"
echo small | timeout 20 "$T/B.m" stream connect "$(via "$ECHO" 9101)" |
	grep -qx small || fail "echo through the passing proxy failed afterwards"
exit 0
