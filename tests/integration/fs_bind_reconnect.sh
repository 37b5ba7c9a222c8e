# A mount outlives its connection: host B mounts a persistent export of
# host A, and
# - A's daemon is killed (-9) and started again: a file B holds open
#   reads on to its end with the right bytes, and new calls work;
# - while A stays down longer than the mount's timeout, calls fail with
#   EIO in bounded time (no hang), and work again once A is back;
# - the link between the hosts goes down for 2 s during a read: the
#   read completes with the right bytes;
# - B's bridge is killed: B's daemon unmounts, and binding again works;
# - a persistent bind comes back by itself when B's daemon restarts,
#   after SIGTERM or kill -9.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

EX=$T/a/export
MNT=$T/b/mnt
mkdir -p "$EX" "$MNT"
echo hello >"$EX/hello.txt"
head -c 60000000 /dev/urandom >"$EX/big"
REF=$(m A fs export --persistent "local:$EX") || fail "fs export failed"
m B fs bind --timeout 4 "$MNT" "$REF" || fail "fs bind failed"
[ "$(cat "$MNT/hello.txt")" = hello ] || fail "the mount does not read"

bridge() { pgrep -f "fs _bridge .*$MNT\$"; }
mounted() { mountpoint -q "$MNT"; }

# --- A restarts under an open file ---
exec 7<"$MNT/big"
head -c 10000000 <&7 >"$T/part1" || fail "reading the first part"
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null
daemon_start A a 10.77.0.1:901
cat <&7 >"$T/part2" || fail "reading on after A restarted"
exec 7<&-
cat "$T/part1" "$T/part2" | cmp -s - "$EX/big" || fail "the file read across A's restart differs"
echo after >"$MNT/after.txt" || fail "writing after A restarted"
[ "$(cat "$EX/after.txt")" = after ] || fail "a write after the restart did not reach A"
grep -q "reconnected" "$T/B.log" || fail "B's bridge did not say it reconnected"

# --- A dies under a writer: the file is whole, or the writer heard ---
head -c 100000000 /dev/urandom >"$T/wdata"
(dd if="$T/wdata" of="$MNT/written" bs=1M 2>"$T/dd.err"; echo $? >"$T/dd.rc") &
writer=$!
sleep 0.3
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null
daemon_start A a 10.77.0.1:901
for _ in $(seq 600); do [ -e "$T/dd.rc" ] && break; sleep 0.1; done
[ -e "$T/dd.rc" ] || fail "a writer hung across A's restart"
if [ "$(cat "$T/dd.rc")" = 0 ]; then
	cmp -s "$T/wdata" "$EX/written" || fail "the writer was told all was well, but A's file differs"
else
	grep -q "Input/output error" "$T/dd.err" || fail "the writer failed oddly: $(cat "$T/dd.err")"
fi
wait $writer

# --- A down for longer than the timeout: EIO, not a hang ---
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null
start=$(date +%s)
timeout 60 cat "$MNT/after.txt" >/dev/null 2>"$T/eio.err" && fail "a read succeeded with A down"
secs=$(($(date +%s) - start))
grep -q "Input/output error" "$T/eio.err" || fail "A down: got $(cat "$T/eio.err")"
[ $secs -lt 30 ] || fail "A down: the read took $secs s to fail"
# Later calls fail at once, but for one attempt now and then.
timeout 20 stat "$MNT/hello.txt" >/dev/null 2>&1 && fail "stat succeeded with A down"
daemon_start A a 10.77.0.1:901
ok=0
for _ in $(seq 30); do
	[ "$(timeout 20 cat "$MNT/hello.txt" 2>/dev/null)" = hello ] && { ok=1; break; }
	sleep 0.5
done
[ $ok = 1 ] || fail "the mount did not come back after A did"

# --- the network goes away for 2 s mid-read ---
(timeout 120 cat "$MNT/big" >"$T/blip") &
reader=$!
sleep 0.2
ip -n "$NS_PREFIX-b" link set "v$$b" down || fail "cannot take B's link down"
sleep 2
ip -n "$NS_PREFIX-b" link set "v$$b" up || fail "cannot bring B's link up"
wait $reader || fail "a read across a 2 s network loss failed"
cmp -s "$T/blip" "$EX/big" || fail "a read across a 2 s network loss differs"

# --- the bridge dies: the daemon unmounts, and a new bind works ---
pid=$(bridge) || fail "no bridge process"
kill -KILL "$pid"
for _ in $(seq 100); do mounted || break; sleep 0.1; done
mounted && fail "a dead bridge's mount was left behind"
m B fs bind "$MNT" "$REF" || fail "binding again after the bridge died"
[ "$(cat "$MNT/hello.txt")" = hello ] || fail "the new mount does not read"
m B fs unbind "$MNT" || fail "unbind"

# --- a persistent bind comes back when B restarts ---
m B fs bind --persistent "$MNT" "$REF" || fail "fs bind --persistent"
for how in TERM KILL; do
	kill -$how "$PID_B"
	wait "$PID_B" 2>/dev/null
	for _ in $(seq 100); do mounted || break; sleep 0.1; done
	mounted && fail "B's mount stayed after its daemon died (SIG$how)"
	daemon_start B b 10.77.0.2:901
	ok=0
	for _ in $(seq 100); do
		mounted && [ "$(timeout 10 cat "$MNT/hello.txt" 2>/dev/null)" = hello ] && { ok=1; break; }
		sleep 0.1
	done
	[ $ok = 1 ] || fail "the persistent bind did not come back after SIG$how"
done
m B fs unbind "$MNT" || fail "unbind of the persistent bind"
kill -TERM "$PID_B"
wait "$PID_B" 2>/dev/null
daemon_start B b 10.77.0.2:901
sleep 0.5
mounted && fail "an unbound persistent bind came back"
grep -q "${REF##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
