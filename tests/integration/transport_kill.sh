# A node killed with SIGKILL in the middle of a transfer: the client gets
# an error, not a hang; the other daemon keeps serving.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

# A slow sink on A: the transfer is still running when A dies.
socat -u UNIX-LISTEN:"$T/sink.sock",fork SYSTEM:"sleep 30" 2>/dev/null &
_pids+=($!)
for _ in $(seq 50); do [ -S "$T/sink.sock" ] && break; sleep 0.05; done
REF=$(m A stream export "unix:$T/sink.sock") || fail "export failed"

head -c 200000000 /dev/zero | timeout 30 "$T/B.m" stream connect "$REF" \
	>/dev/null 2>"$T/client.err" &
client=$!
sleep 1
kill -0 $client 2>/dev/null || fail "transfer ended too early: $(cat "$T/client.err")"
kill -KILL "$PID_A"
wait $client
rc=$?
[ $rc -eq 124 ] && fail "client hung after the serving node died"
[ $rc -eq 1 ] || fail "client exit $rc, expected 1"
grep -q "error" "$T/client.err" || fail "no error message: $(cat "$T/client.err")"

# B is unharmed: it still answers, and restoring from a dead node fails
# promptly with a clear message.
m B node >/dev/null || fail "daemon B died"
expect_fail "cannot reach node at 10.77.0.1:901" "$T/B.m" stream connect "$REF"
exit 0
