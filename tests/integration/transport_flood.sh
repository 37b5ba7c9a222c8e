# A flood of connections that stop mid-handshake, and garbage: the node
# keeps serving a legitimate client, and its memory stays bounded.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>/dev/null &
_pids+=($!)
for _ in $(seq 50); do [ -S "$T/echo.sock" ] && break; sleep 0.05; done
REF=$(m A stream export "unix:$T/echo.sock") || fail "export failed"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$PID_A/status"; }
before=$(rss)

# 1,000 connections from host B that send half a handshake and stall,
# plus 200 that send garbage.
in_host b bash -c '
	for i in $(seq 1000); do
		exec {fd}<>/dev/tcp/10.77.0.1/901 || exit 1
		printf "\0\x60partial" >&$fd
	done
	for i in $(seq 200); do
		head -c 300 /dev/urandom >/dev/tcp/10.77.0.1/901
	done
	sleep 4' 2>/dev/null &
flood=$!
sleep 2
echo alive | timeout 20 "$T/B.m" stream connect "$REF" | grep -qx alive ||
	fail "a legitimate client was not served during the flood"
wait $flood
after=$(rss)
echo "daemon RSS: ${before} KiB before, ${after} KiB after 1,200 hostile connections"
[ "$after" -lt $((before + 65536)) ] || fail "memory grew by more than 64 MiB"
grep -q "handshake flood" "$T/A.log" || fail "flood was not logged"
m A node >/dev/null || fail "daemon A died"
exit 0
