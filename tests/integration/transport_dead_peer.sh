# A peer that vanishes without a word (its link goes down: no FIN, no
# RST) is noticed by TCP keepalives and the user timeout, not after the
# kernel's two hours: a stream idle across the two hosts ends with an
# error within about 25 s (data in flight is bounded the same way, by
# TCP_USER_TIMEOUT). The figure is printed; only a hang (90 s) fails.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>/dev/null &
_pids+=($!)
wait_socket "$T/echo.sock"
REF=$(m A stream export "unix:$T/echo.sock") || fail "stream export"

# Idle: a connection through B's daemon to A that carries nothing.
mkfifo "$T/in"
sleep 1000 >"$T/in" &
holder=$!
_pids+=($holder)
"$T/B.m" stream connect "$REF" <"$T/in" >"$T/out" 2>"$T/err" &
client=$!
_pids+=($client)
sleep 2
kill -0 $client 2>/dev/null || fail "the stream did not stay up: $(cat "$T/err")"
start=$(date +%s)
in_host a ip link set "v$$a" down
for _ in $(seq 900); do kill -0 $client 2>/dev/null || break; sleep 0.1; done
kill -0 $client 2>/dev/null && fail "an idle stream to a vanished peer still hangs after 90 s"
wait $client
rc=$?
took=$(( $(date +%s) - start ))
[ $rc = 1 ] || fail "the stream's client exited $rc, not 1: $(cat "$T/err")"
echo "idle stream: the vanished peer was noticed after ${took} s"
echo "transport_dead_peer: all checked"
