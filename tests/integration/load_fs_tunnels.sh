# Load, the correctness half (the figures are tests/bench/load.sh's):
# - 50 clients read the same export at once: host A exports a folder
#   with one file of random bytes, host B binds the ref 50 times (50
#   mounts, each its own bridge and its own 9p connection; the binds are
#   asked for all at once), and 50 readers read the file through the 50
#   mounts at the same time. Every reader gets the right checksum, and
#   every one finishes (none starved: each within a generous bound, which
#   only catches a hang). Then all 50 are unbound: nothing stays mounted
#   and every bridge exits.
# - 20 tunnels on one node: A exports newlocal:ltN 20 times, B binds each
#   (the binds all at once too), each pair gets a /24 of its own. All 20
#   carry pings at once, then 20 TCP transfers run through them at once,
#   each arriving whole; every tunnel's counters show its own transfer
#   (no crossed wires); unbinding takes all 20 devices away.
# No timing decides anything here but the hang bounds.
#
# Environment: LOAD_FS_CLIENTS (default 50), LOAD_FS_BYTES (default
# 8 MiB), LOAD_TUNNELS (default 20), LOAD_NET_BYTES (per tunnel, default
# 4 MB), LOAD_HANG (seconds a reader or a transfer may take, default 120).
. "$(dirname "$0")/lib.bash"
export LC_ALL=C

NFS=${LOAD_FS_CLIENTS:-50}
FS_BYTES=${LOAD_FS_BYTES:-8388608}
NNET=${LOAD_TUNNELS:-20}
NET_BYTES=${LOAD_NET_BYTES:-4000000}
HANG=${LOAD_HANG:-120}

for tool in ping socat sha256sum mountpoint; do
	command -v $tool >/dev/null || fail "$tool is missing (contrib/install-deps.sh installs it)"
done
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

# wait_all WHAT SECS PID...: every PID ends within SECS (it is killed
# else, and the test fails).
wait_all() {
	local what=$1 secs=$2 p left
	shift 2
	for _ in $(seq $((secs * 10))); do
		left=0
		for p in "$@"; do kill -0 "$p" 2>/dev/null && left=$((left + 1)); done
		[ $left = 0 ] && break
		sleep 0.1
	done
	if [ $left != 0 ]; then
		for p in "$@"; do kill -KILL "$p" 2>/dev/null; done
		fail "$what: $left of $# did not end within $secs s"
	fi
	for p in "$@"; do wait "$p" 2>/dev/null; done
}

# ============ 50 clients reading the same export at once ============
EX=$T/a/export
mkdir -p "$EX"
head -c "$FS_BYTES" /dev/urandom >"$EX/data" || fail "cannot write the data"
SUM=$(sha256sum <"$EX/data")
REF=$(m A fs export --read-only "local:$EX") || fail "fs export failed"

# Whatever the test leaves mounted goes with it, however it ends (the
# lib's cleanup unmounts lazily what is under $T too; this goes first,
# while the daemons still run).
unbind_all() {
	local i
	for ((i = 0; i < NFS; i++)); do
		mountpoint -q "$T/b/m$i" 2>/dev/null && timeout 10 "$T/B.m" fs unbind "$T/b/m$i" >/dev/null 2>&1
	done
}
trap 'unbind_all; cleanup' EXIT

pids=()
for ((i = 0; i < NFS; i++)); do
	mkdir -p "$T/b/m$i"
	( timeout -k 5 "$HANG" "$T/B.m" fs bind --timeout 60 "$T/b/m$i" "$REF" \
		>"$T/bind$i.out" 2>&1; echo $? >"$T/bind$i.rc" ) &
	pids+=($!)
done
wait_all "binding $NFS mounts at once" "$HANG" "${pids[@]}"
for ((i = 0; i < NFS; i++)); do
	[ "$(cat "$T/bind$i.rc")" = 0 ] || fail "bind $i of $NFS failed (exit $(cat "$T/bind$i.rc")): $(cat "$T/bind$i.out")"
	mountpoint -q "$T/b/m$i" || fail "bind $i of $NFS succeeded, but nothing is mounted on $T/b/m$i"
done
nbridges=$(pgrep -fc "fs _bridge .*$T/b/m")
[ "$nbridges" = "$NFS" ] || fail "$NFS mounts, but $nbridges bridges"

# All readers start together, once $T/go is there.
pids=()
for ((i = 0; i < NFS; i++)); do
	(
		while [ ! -e "$T/go" ]; do sleep 0.05; done
		s=$(date +%s.%N)
		timeout -k 5 "$HANG" sha256sum <"$T/b/m$i/data" >"$T/sum$i" 2>"$T/sum$i.err"
		echo "$? $s $(date +%s.%N)" >"$T/read$i.rc"
	) &
	pids+=($!)
done
sleep 0.5
touch "$T/go"
start=$(date +%s.%N)
wait_all "$NFS readers of the same file at once" $((HANG + 10)) "${pids[@]}"
for ((i = 0; i < NFS; i++)); do
	read -r rc s e <"$T/read$i.rc"
	[ "$rc" = 124 ] || [ "$rc" = 137 ] && fail "reader $i of $NFS did not finish within $HANG s (starved or hung)"
	[ "$rc" = 0 ] || fail "reader $i of $NFS failed (exit $rc): $(cat "$T/sum$i.err")"
	[ "$(cat "$T/sum$i")" = "$SUM" ] || fail "reader $i of $NFS read other bytes (sha256 $(cat "$T/sum$i"))"
done
# For the log only: how long the slowest and the fastest took.
for ((i = 0; i < NFS; i++)); do cat "$T/read$i.rc"; done |
	awk -v st="$start" '{ d = $3 - st; if (min == "" || d < min) min = d; if (d > max) max = d }
		END { printf "%d readers of %d bytes each: fastest %.2f s, slowest %.2f s\n", NR, '"$FS_BYTES"', min, max }'

for ((i = 0; i < NFS; i++)); do
	m B fs unbind "$T/b/m$i" || fail "unbind of mount $i"
done
for ((i = 0; i < NFS; i++)); do
	mountpoint -q "$T/b/m$i" && fail "mount $i is still there after unbind"
done
for _ in $(seq 100); do pgrep -f "fs _bridge .*$T/b/m" >/dev/null || break; sleep 0.1; done
pgrep -af "fs _bridge .*$T/b/m" >&2 && fail "bridges still run 10 s after every mount was unbound"
kill -0 "$PID_A" && kill -0 "$PID_B" || fail "a daemon is gone"

# ============ 20 tunnels on one node ============
pids=()
for ((i = 0; i < NNET; i++)); do
	(
		r=$(timeout 30 "$T/A.m" net export "newlocal:lt$i" 2>"$T/nexp$i.err") ||
			{ echo "export: $(cat "$T/nexp$i.err")" >"$T/net$i.err"; exit 1; }
		timeout 30 "$T/B.m" net bind "newlocal:lt$i" "$r" 2>"$T/net$i.err"
	) &
	pids+=($!)
done
for ((i = 0; i < NNET; i++)); do
	wait "${pids[$i]}" || fail "tunnel $i of $NNET: $(cat "$T/net$i.err")"
done
for ((i = 0; i < NNET; i++)); do
	in_host a ip addr add "10.100.$i.1/24" dev "lt$i" && in_host a ip link set "lt$i" up &&
		in_host b ip addr add "10.100.$i.2/24" dev "lt$i" && in_host b ip link set "lt$i" up ||
		fail "cannot give lt$i its addresses"
done

# Pings through all of them at once (each ping has its own deadline).
pids=()
for ((i = 0; i < NNET; i++)); do
	in_host b ping -c 5 -i 0.2 -w 20 "10.100.$i.1" >"$T/ping$i" 2>&1 &
	pids+=($!)
done
for ((i = 0; i < NNET; i++)); do
	wait "${pids[$i]}" || fail "tunnel $i of $NNET does not carry pings: $(tail -n 2 "$T/ping$i")"
done

# 20 transfers at once, B -> A, each through its own tunnel to a listener
# bound to that tunnel's address.
tx_before=()
counter() { # counter HOST DEV NAME: a counter of DEV from net list --json
	m "$1" net list --json | tr '{}' '\n\n' | grep "\"$2\"" | tr ',' '\n' |
		sed -n "s/^ *\"$3\": //p" | head -n 1
}
for ((i = 0; i < NNET; i++)); do
	tx_before[$i]=$(counter B "lt$i" tx_bytes)
	[ -n "${tx_before[$i]}" ] || fail "net list on B does not show lt$i: $(m B net list)"
	head -c "$NET_BYTES" /dev/urandom >"$T/ndata$i"
	in_host a socat -u "TCP-LISTEN:5001,bind=10.100.$i.1,reuseaddr" \
		"OPEN:$T/ngot$i,creat,trunc" 2>"$T/nsrv$i.err" &
	_pids+=($!)
done
sleep 0.5
pids=()
for ((i = 0; i < NNET; i++)); do
	in_host b timeout -k 5 "$HANG" socat -u "OPEN:$T/ndata$i" "TCP:10.100.$i.1:5001" \
		2>"$T/ncli$i.err" &
	pids+=($!)
done
wait_all "$NNET transfers through $NNET tunnels at once" $((HANG + 10)) "${pids[@]}"
for ((i = 0; i < NNET; i++)); do
	for _ in $(seq 100); do cmp -s "$T/ndata$i" "$T/ngot$i" && break; sleep 0.1; done
	cmp -s "$T/ndata$i" "$T/ngot$i" ||
		fail "the transfer through tunnel $i arrived different ($(stat -c %s "$T/ngot$i" 2>/dev/null) of $NET_BYTES bytes): $(cat "$T/ncli$i.err")"
done
for ((i = 0; i < NNET; i++)); do
	tx=$(counter B "lt$i" tx_bytes)
	[ $((tx - tx_before[i])) -ge "$NET_BYTES" ] ||
		fail "lt$i sent $((tx - tx_before[i])) bytes for a transfer of $NET_BYTES"
	[ $((tx - tx_before[i])) -lt $((NET_BYTES * 2)) ] ||
		fail "lt$i sent $((tx - tx_before[i])) bytes for a transfer of $NET_BYTES: another tunnel's?"
done

for ((i = 0; i < NNET; i++)); do
	m B net unbind "lt$i" || fail "net unbind lt$i"
done
for ((i = 0; i < NNET; i++)); do
	in_host b ip link show "lt$i" >/dev/null 2>&1 && fail "unbind left lt$i on B"
done
kill -0 "$PID_A" && kill -0 "$PID_B" || fail "a daemon is gone"
exit 0
