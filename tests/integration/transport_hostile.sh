# Authenticated peers that misbehave (hostile_peer.c completes the
# handshake with a key of its own, then):
# - trickles a frame a byte a second (slowloris): closed within 30 s of
#   beginning it, plus the sweep's 5 s (against B, whose idle timeout is
#   the default: A's would end the session first);
# - sends a frame header claiming 16 MiB: closed at once;
# - says nothing after the handshake: closed within 15 s (+5);
# - says hello and holds nothing: closed after the idle timeout (3 s
#   here, +5);
# - opens 300 connections with one key: 256 stay, the rest are refused;
#   with a new key each time, 512 stay from one address (the daemon's
#   memory with them all open is printed).
# Meanwhile a legitimate client is served throughout, and the daemon's
# memory stays bounded (printed).
. "$(dirname "$0")/lib.bash"

top=$(cd "$(dirname "$0")/../.." && pwd)
${CC:-gcc} -O2 -Wall -I"$top" -o "$T/hostile_peer" "$top/tests/integration/hostile_peer.c" \
	"$top/wire/noise.c" "$top/lib/b64url.c" -lsodium || fail "cannot build hostile_peer"

# A sanitized build keeps freed memory in quarantine (256 MiB): less of
# it, so that the figure is the daemon's own.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
netns_pair a b
DAEMON_OPTS="--idle-timeout 3" daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>/dev/null &
_pids+=($!)
for _ in $(seq 50); do [ -S "$T/echo.sock" ] && break; sleep 0.05; done
REF=$(m A stream export "unix:$T/echo.sock") || fail "export failed"
REFB=$(m B stream export "unix:$T/echo.sock") || fail "export on B failed"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$PID_A/status"; }
before=$(rss)
hp() { in_host b "$T/hostile_peer" "$1" 10.77.0.1:901 "$REF" "${@:2}"; }

# secs_within "closed after S s" LIMIT WHAT
secs_within() {
	local s=${1#closed after }
	s=${s%% *}
	[ -n "$s" ] && [ "${s%.*}" -lt "$2" ] 2>/dev/null || fail "$3: $1 (limit $2 s)"
}

in_host a "$T/hostile_peer" slow 10.77.0.2:901 "$REFB" >"$T/slow.out" &
slow=$!
hp silent >"$T/silent.out" &
silent=$!
hp idle >"$T/idle.out" &
idle=$!
out=$(hp oversize) || fail "oversized frame: $out"
secs_within "$out" 3 "an oversized frame"
out=$(hp conns 300) || fail "300 connections: $out"
[ "$out" = "open 256 of 300" ] || fail "300 connections from one node: $out (256 should stay)"
grep -q "has 256 connections, the most one peer may have" "$T/A.log" ||
	fail "the refused connections were not logged"
kp=()
for k in 1 2 3; do hp conns 256 8 >"$T/keys$k.out" & kp+=($!); done
for _ in $(seq 100); do [ "$(cat "$T"/keys*.out | wc -l)" = 3 ] && break; sleep 0.2; done
held=$(awk '{ s += $2 } END { print s }' "$T"/keys*.out)
rss_held=$(rss)
[ "$held" -le 512 ] && [ "$held" -ge 500 ] || fail "3 keys from one address hold $held connections ($(cat "$T"/keys*.out))"
echo "3 new keys x 256 connections from one address: $held stay; daemon RSS ${rss_held} KiB with them open"
wait "${kp[@]}"
# The legitimate client, while the slow one holds its frame.
for i in 1 2 3; do
	echo "alive $i" | timeout 20 "$T/B.m" stream connect "$REF" | grep -qx "alive $i" ||
		fail "a legitimate client was not served among hostile peers ($i)"
	sleep 2
done
wait $silent || fail "a silent peer: $(cat "$T/silent.out")"
secs_within "$(cat "$T/silent.out")" 22 "a peer silent after its handshake"
wait $idle || fail "an idle peer: $(cat "$T/idle.out")"
secs_within "$(cat "$T/idle.out")" 10 "an idle session"
wait $slow || fail "a slowloris peer: $(cat "$T/slow.out")"
secs_within "$(cat "$T/slow.out")" 37 "a peer trickling a frame"
grep -q "left a frame unfinished" "$T/B.log" || fail "the stalled frame was not logged"
after=$(rss)
echo "daemon RSS: ${before} KiB before, ${after} KiB after the hostile peers" \
	"(slowloris $(cat "$T/slow.out"), silent $(cat "$T/silent.out"), idle $(cat "$T/idle.out"))"
[ "$after" -lt $((before + 65536)) ] && [ "$rss_held" -lt $((before + 65536)) ] ||
	fail "memory grew by more than 64 MiB"
echo "alive" | timeout 20 "$T/B.m" stream connect "$REF" | grep -qx alive ||
	fail "a legitimate client was not served after the hostile peers"
echo "alive" | timeout 20 "$T/A.m" stream connect "$REFB" | grep -qx alive ||
	fail "B did not serve a legitimate client after the slowloris peer"
exit 0
