# The node's database survives its daemon being killed (-9) at any moment
# while refs are created and revoked: in a loop, a client exports and
# revokes persistent refs as fast as it can and the daemon is killed after
# a random fraction of a second; every time, the daemon starts again (it
# runs sqlite's quick_check at open and refuses a damaged file), every ref
# whose export was answered and not revoked still works, and every ref
# whose revoke was answered stays revoked. Then 60 applets at once at a
# daemon stopped for a second are all answered.
. "$(dirname "$0")/lib.bash"

head -c 65536 /dev/urandom >"$T/file"
: >"$T/live"
: >"$T/revoked"
ROUNDS=${DB_CRASH_ROUNDS:-12}

# churn: export, and revoke every other one, until the daemon is gone.
churn() {
	local i=0 r
	while r=$(m A file export --persistent local:"$T/file" 2>/dev/null); do
		i=$((i + 1))
		if [ $((i % 2)) = 0 ]; then
			echo "$r" >>"$T/revoking"
			m A ref revoke "$r" >/dev/null 2>&1 || break
			echo "$r" >>"$T/revoked"
		else
			echo "$r" >>"$T/live"
		fi
	done
}

for round in $(seq "$ROUNDS"); do
	daemon_start A - 127.0.0.1:19$((RANDOM % 90 + 10))
	m A ref list >/dev/null || fail "round $round: the restarted daemon cannot list refs"
	churn &
	CHURN=$!
	sleep "0.$((RANDOM % 8 + 1))"
	kill -9 "$PID_A"
	wait "$CHURN" 2>/dev/null
	wait "$PID_A" 2>/dev/null
done
daemon_start A - 127.0.0.1:19099
m A ref list >"$T/list" || fail "the daemon cannot list refs after $ROUNDS kills"
# A revoke that was under way when the daemon died may have happened or not.
sort -u "$T/revoking" 2>/dev/null >"$T/unsure"
grep -vxF -f "$T/unsure" "$T/live" >"$T/sure_live" || true
n=0
while read -r r; do
	m A ref show "$r" >/dev/null 2>&1 || fail "an exported ref is gone after a kill: $(m A ref show "$r" 2>&1)"
	n=$((n + 1))
done <"$T/sure_live"
k=0
while read -r r; do
	m A ref show "$r" >/dev/null 2>&1 && fail "a revoked ref came back after a kill"
	k=$((k + 1))
done <"$T/revoked"
# The survivors do what they are for.
r=$(head -n 1 "$T/sure_live")
[ -n "$r" ] || fail "no export was ever answered"
m A file cat "$r" | cmp -s - "$T/file" || fail "a surviving ref does not read the file"
echo "$ROUNDS kills: the daemon always started again; $n refs kept, $k revoked ones stayed revoked"

# Many applets at once at a daemon that is stopped for a moment: the
# admin socket's backlog fills and the later ones wait for room (connect
# says EAGAIN on a unix socket) instead of failing; every one of them is
# answered once the daemon goes on.
kill -STOP "$PID_A"
pids=()
for i in $(seq 60); do
	m A ref list >"$T/burst.$i" 2>&1 &
	pids+=($!)
done
sleep 1
kill -CONT "$PID_A"
bad=0
for i in "${!pids[@]}"; do
	wait "${pids[$i]}" || { bad=$((bad + 1)); echo "applet $((i + 1)): $(cat "$T/burst.$((i + 1))")" >&2; }
done
[ "$bad" = 0 ] || fail "$bad of 60 applets failed at a busy daemon"
echo "60 applets at a stopped daemon: all answered after it went on"
