#!/bin/bash
# NBD servers side by side, in one run, on this one machine: nbdcopy reads
# a 2 GiB export into null: and writes 2 GiB of random data into one,
# from and to
#   metac        `metac block serve local:FILE` (plain NBD on a Unix socket);
#   nbdkit       nbdkit's file plugin, the same way;
#   qemu-nbd     qemu-nbd on the raw file (--shared=4, writeback cache);
#   metac-enc    daemon A exports the file (`metac file export`), daemon B
#                relays (`metac block serve REF`): nbdcopy -> Unix socket ->
#                block serve -> admin socket -> B -> Noise/TCP -> A -> NBD;
#   metac-direct the same with `block serve --direct` (B out of the path).
# Files live in the page cache (read once first; written ones are fresh
# sparse files), so this measures the servers and the transport, not a
# disk. Prints MB/s, the CPU time the server side spent per GiB, and the
# ratios against the goals (metac >= nbdkit; encrypted >= 70% of plain).
#
# Never fails on timing. Exits 1 if something is broken: a server that
# does not start, or a copy that fails or writes the wrong bytes (after
# printing the table, with the row marked BROKEN).
#
# Environment: METAC (required), BENCH_NBD_BYTES (default 2 GiB),
# BENCH_RUNS (best of, default 3), BENCH_TIMEOUT (seconds per copy,
# default 120).
set -u
: "${METAC:?METAC must point at the metac binary}"
BYTES=${BENCH_NBD_BYTES:-2147483648}
RUNS=${BENCH_RUNS:-3}
TMO=${BENCH_TIMEOUT:-120}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.bash
. "$HERE/lib.bash"

for tool in nbdcopy nbdkit qemu-nbd setsid timeout /usr/bin/time b2sum; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done
[ -x "$METAC" ] || fail "no metac binary at $METAC"

echo "== nbd: nbdcopy of $((BYTES >> 20)) MiB, best of $RUNS;" \
	"$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

head -c "$BYTES" /dev/urandom >"$T/src" || fail "cannot make the source file"
SUM=$(b2sum <"$T/src")
cat "$T/src" >/dev/null

wait_sock() {
	for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
	return 1
}

# Each server serves $T/r-NAME (a copy of src, to read) on $T/r-NAME.sock
# and $T/w-NAME (written) on $T/w-NAME.sock.
start_metac() {
	"$METAC" block serve --listen "unix:$T/$1-metac.sock" "local:$T/$1-metac" \
		>"$T/serve-$1-metac.log" 2>&1 &
	_pids+=($!); eval "PID_$1_metac=$!"
	wait_sock "$T/$1-metac.sock"
}
start_nbdkit() {
	nbdkit -f -U "$T/$1-nbdkit.sock" file "$T/$1-nbdkit" >"$T/nbdkit-$1.log" 2>&1 &
	_pids+=($!); eval "PID_$1_nbdkit=$!"
	wait_sock "$T/$1-nbdkit.sock"
}
start_qemu() {
	qemu-nbd -t -f raw --shared=4 --cache=writeback -k "$T/$1-qemu-nbd.sock" "$T/$1-qemu-nbd" \
		>"$T/qemu-nbd-$1.log" 2>&1 &
	_pids+=($!); eval "PID_$1_qemu_nbd=$!"
	wait_sock "$T/$1-qemu-nbd.sock"
}
start_enc() { # start_enc r|w NAME [--direct]
	local ref
	ref=$("$METAC" file export --admin-socket "$T/A.sock" "local:$T/$1-$2") || return 1
	"$METAC" block serve --admin-socket "$T/B.sock" ${3:-} --listen "unix:$T/$1-$2.sock" "$ref" \
		>"$T/serve-$1-$2.log" 2>&1 &
	_pids+=($!); eval "PID_$1_${2//-/_}=$!"
	wait_sock "$T/$1-$2.sock"
}

daemon_start A || fail "daemon A does not start"
daemon_start B || fail "daemon B does not start"
SERVERS=(metac nbdkit qemu-nbd metac-enc metac-direct)
for s in "${SERVERS[@]}"; do
	cp --reflink=auto "$T/src" "$T/r-$s"
	truncate -s "$BYTES" "$T/w-$s"
done
start_metac r && start_metac w || fail "metac block serve does not start"
start_nbdkit r && start_nbdkit w || fail "nbdkit does not start"
start_qemu r && start_qemu w || fail "qemu-nbd does not start"
start_enc r metac-enc && start_enc w metac-enc || fail "metac block serve REF does not start"
start_enc r metac-direct --direct && start_enc w metac-direct --direct ||
	fail "metac block serve --direct REF does not start"

# The server side's processes, as LABEL:PID for timed.
server_pids() { # server_pids r|w NAME
	local v="PID_$1_${2//-/_}"
	case $2 in
	metac-enc) echo "serve:${!v} A:$PID_A B:$PID_B" ;;
	metac-direct) echo "serve:${!v} A:$PID_A" ;;
	*) echo "server:${!v}" ;;
	esac
}

# measure read|write NAME: one run; keeps the best in BEST/CPU/DETAIL.
declare -A BEST CPU DETAIL FAILED
measure() {
	local kind=$1 s=$2 cmd m rc l total spec detail
	local uri="nbd+unix:///?socket=$T/${kind:0:1}-$s.sock" key="$1 $2"
	[ -n "${FAILED[$key]:-}" ] && return
	if [ "$kind" = read ]; then
		cmd="nbdcopy '$uri' null:"
	else
		truncate -s 0 "$T/w-$s"
		truncate -s "$BYTES" "$T/w-$s"
		cmd="nbdcopy '$T/src' '$uri'"
	fi
	# shellcheck disable=SC2046
	timed "$cmd" $(server_pids "${kind:0:1}" "$s")
	rc=$?
	if [ $rc -ne 0 ]; then
		broken "$key: nbdcopy failed (exit $rc)"
		FAILED[$key]=1
		return
	fi
	if [ "$kind" = write ] && [ "$(b2sum <"$T/w-$s")" != "$SUM" ]; then
		broken "$key: the written file differs"
		FAILED[$key]=1
		return
	fi
	m=$(mbps "$BYTES" "$ELAPSED")
	awk -v a="$m" -v b="${BEST[$key]:-0}" 'BEGIN { exit !(a > b) }' || return
	BEST[$key]=$m
	total=0
	detail=""
	for spec in $(server_pids "${kind:0:1}" "$s"); do
		l=${spec%%:*}
		total=$(awk -v a="$total" -v b="${SRV_CPU[$l]}" 'BEGIN { print a + b }')
		detail="$detail $l $(per_gib "${SRV_CPU[$l]}" "$BYTES")"
	done
	CPU[$key]=$(per_gib "$total" "$BYTES")
	DETAIL[$key]="nbdcopy $(per_gib "$CLIENT_CPU" "$BYTES");$detail"
}

# Round by round, every server once per round: a machine that slows
# down for a while slows all of them alike.
for _ in $(seq "$RUNS"); do
	for kind in read write; do
		for s in "${SERVERS[@]}"; do
			measure "$kind" "$s"
		done
	done
done
for kind in read write; do
	for s in "${SERVERS[@]}"; do
		key="$kind $s"
		if [ -n "${FAILED[$key]:-}" ]; then
			row "$key" BROKEN "" "" ""
		else
			row "$key" "${BEST[$key]}" MB/s "${CPU[$key]}" "${DETAIL[$key]}"
		fi
	done
done

echo
print_table 20 "srv CPU/GiB" "CPU s per GiB: client; server side"
echo
echo "   ratios (goal):"
ratio "read: metac / nbdkit" "read metac" "read nbdkit" "(goal >= 1)"
ratio "write: metac / nbdkit" "write metac" "write nbdkit" "(goal >= 1)"
ratio "read: metac / qemu-nbd" "read metac" "read qemu-nbd" ""
ratio "write: metac / qemu-nbd" "write metac" "write qemu-nbd" ""
ratio "read: encrypted / plain" "read metac-enc" "read metac" "(goal >= 0.7)"
ratio "write: encrypted / plain" "write metac-enc" "write metac" "(goal >= 0.7)"
ratio "read: encrypted --direct / plain" "read metac-direct" "read metac" "(goal >= 0.7)"
ratio "write: encrypted --direct / plain" "write metac-direct" "write metac" "(goal >= 0.7)"
finish
