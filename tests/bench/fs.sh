#!/bin/bash
# A shared folder side by side with its peers, in one run, on this one
# machine over loopback:
#   metac  daemon A exports a directory (`metac fs export local:DIR`),
#          daemon B mounts the ref (`metac fs bind`: FUSE bridge, 9p over
#          Noise/TCP to A);
#   sshfs  the same kind of directory through a private sshd with key
#          authentication (sftp-server), ssh's default cipher;
#   local  the directory on disk itself.
# Workloads, each: a sequential write (dd bs=1M conv=fsync), reading the
# file back with a cold cache, creating small files, find + stat of them
# with a cold cache, and removing them. The write and the creates share a
# mount; the read, and find + stat with the removal, each start on a
# fresh mount after sync and dropping the page cache (so that no client
# keeps a cache of its own, sshfs's attribute cache for one). One run
# each. Prints MB/s or files/s, the CPU time all processes spent, and the
# ratios metac / sshfs with the goals.
#
# Never fails on timing. Exits 1 if something is broken: a daemon or
# server that does not start, a mount that fails, a workload that fails,
# hangs or loses data (after printing the table, with the rows marked
# BROKEN). Checked: the file has the right size on the server side and
# reads back with the right checksum; the small files exist on the server
# side with their size, are all found by find, and are gone after removal.
#
# Environment: METAC (required), BENCH_FS_BYTES (default 1 GiB),
# BENCH_FS_FILES (default 2000 files of 4 KiB), BENCH_TIMEOUT (seconds per
# workload, default 300; a hung FUSE server is killed 20 s after).
set -u
: "${METAC:?METAC must point at the metac binary}"
BYTES=${BENCH_FS_BYTES:-1073741824}
FILES=${BENCH_FS_FILES:-2000}
TMO=${BENCH_TIMEOUT:-300}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.bash
. "$HERE/lib.bash"
# sshd works in children that live as long as the connection.
TICKS_OF=fs_ticks

TARGETS=(metac sshfs local)
WORKS=(write read create stat remove)
declare -A SRV DIR MOUNTED RES NOTE_ONCE
NOTES=()
for t in "${TARGETS[@]}"; do
	SRV[$t]=$T/srv-$t # the directory served (the server side)
	DIR[$t]=$T/mnt-$t # where the workloads run
	MOUNTED[$t]=0
done
SRV[local]=$T/local
DIR[local]=$T/local
mkdir -p "${SRV[@]}" "${DIR[@]}"
mkfifo "$T/wd.fifo"
FUSE_PID=""  # the FUSE server of the current mount (sshfs, B's bridge)
BRIDGE=""    # B's FUSE bridge process of the current metac mount
PID_SSHFS="" # the current sshfs process
PID_SSHFS_SSH="" # and its ssh (not its child: sshfs forks it off)
_wd=""       # the watchdog

# The last N (default 2) lines of FILE on one line.
lines() {
	tail -n "${2:-2}" "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//'
}

note() { # said once, after the table
	[ -n "${NOTE_ONCE[$1]:-}" ] && return
	NOTE_ONCE[$1]=1
	NOTES+=("$1")
}

forget_pid() {
	local i
	for i in "${!_pids[@]}"; do [ "${_pids[$i]}" = "$1" ] && unset '_pids[$i]'; done
}

# The processes whose command line has every STRING, one a line.
find_procs() { # STRING...
	local p c s
	for p in /proc/[0-9]*; do
		c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		for s in "$@"; do [[ $c == *"$s"* ]] || continue 2; done
		echo "${p#/proc/}"
	done
}

is_bridge() { # PID [MOUNTPOINT]
	local c
	c=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ $c == *" fs _bridge "* && $c == *"${2:-}"* ]]
}

# CPU ticks of a process (with what it reaped), or with TPID of its tree.
fs_ticks() {
	case $1 in
	T*) tree_ticks "${1#T}" ;;
	*) cpu_ticks "$1" ;;
	esac
}

# --- watchdog -----------------------------------------------------------
# A process waiting on a FUSE request its server never answers cannot be
# killed, not even by timeout(1), and neither can an unmount that waits
# for the server: if a step has not ended after SECS, kill the mount's
# FUSE server, which ends every request in flight.
kill_fuse_server() { # PID: if it is still sshfs or B's bridge
	[ -n "$1" ] || return 0
	if [ "$1" = "$PID_SSHFS" ] || is_bridge "$1"; then
		kill -KILL "$1" 2>/dev/null
	fi
}

watchdog_start() { # SECS WHAT
	rm -f "$T/wd.fired"
	(
		read -r -t "$1" _ <>"$T/wd.fifo"
		[ $? -gt 128 ] || exit 0
		echo "$2: no end within $1 s; killed its FUSE server (pid ${FUSE_PID:-none})" \
			>"$T/wd.fired"
		kill_fuse_server "$FUSE_PID"
	) &
	_wd=$!
}

watchdog_stop() { # returns 1 if it fired
	[ -n "$_wd" ] || return 0
	kill "$_wd" 2>/dev/null
	wait "$_wd" 2>/dev/null
	_wd=""
	[ ! -e "$T/wd.fired" ]
}

# --- the page cache -------------------------------------------------------
DROP_ERR=""
drop_caches() {
	watchdog_start 120 "sync before dropping the page cache"
	sync
	watchdog_stop || broken "$(cat "$T/wd.fired")"
	{ echo 3 >/proc/sys/vm/drop_caches; } 2>"$T/drop.err" ||
		DROP_ERR=$(tr '\n' ' ' <"$T/drop.err")
}

# --- mounts -------------------------------------------------------------
# Whether something is mounted on PATH, from the mount table (stat(2) of
# the path would wait for a FUSE server that may not answer).
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# tgt_mount TARGET: mounts it on DIR[TARGET] (nothing for local); sets
# FUSE_PID. Returns 1 with MOUNT_ERR if it cannot.
MOUNT_ERR=""
tgt_mount() {
	case $1 in
	local) FUSE_PID="" ;;
	metac) metac_mount ;;
	sshfs) sshfs_mount ;;
	esac
}

# tgt_unmount TARGET: under the watchdog.
tgt_unmount() {
	[ "$1" = local ] && return 0
	watchdog_start 60 "$1: unmounting"
	case $1 in
	metac) metac_unmount ;;
	sshfs) sshfs_unmount ;;
	esac
	watchdog_stop || broken "$(cat "$T/wd.fired")"
	FUSE_PID=""
}

REF="" METAC_ERR=""
metac_mount() {
	local mp=${DIR[metac]} rc
	[ -n "$METAC_ERR" ] && { MOUNT_ERR=$METAC_ERR; return 1; }
	timeout 60 "$METAC" fs bind --admin-socket "$T/B.sock" "$mp" "$REF" \
		>"$T/bind.out" 2>&1
	rc=$?
	MOUNTED[metac]=1 # whatever it left behind is undone by metac_unmount
	BRIDGE=$(find_procs " fs _bridge " " $mp" | head -n 1)
	FUSE_PID=$BRIDGE
	if [ $rc -ne 0 ]; then
		MOUNT_ERR="metac fs bind failed (exit $rc$([ $rc = 124 ] &&
			echo ": no answer within 60 s")): $(lines "$T/bind.out" 3)"
		return 1
	fi
	[ -n "$BRIDGE" ] || note "metac: found no 'metac fs _bridge ... $mp' process after a bind (B's CPU is counted with all its children; a hang cannot be broken by killing the bridge)"
	if ! is_mounted "$mp"; then
		MOUNT_ERR="metac fs bind succeeded but nothing is mounted on $mp"
		return 1
	fi
	return 0
}

metac_unmount() {
	local mp=${DIR[metac]} rc
	[ "${MOUNTED[metac]}" = 1 ] || return 0
	MOUNTED[metac]=0
	if is_mounted "$mp"; then
		timeout 60 "$METAC" fs unbind --admin-socket "$T/B.sock" "$mp" \
			>"$T/unbind.out" 2>&1
		rc=$?
		if [ $rc -ne 0 ]; then
			broken "metac fs unbind failed (exit $rc): $(lines "$T/unbind.out" 3)"
			umount -l "$mp" 2>/dev/null
		elif is_mounted "$mp"; then
			broken "metac fs unbind returned, but $mp is still mounted"
			umount -l "$mp"
		fi
	fi
	# The bridge is to exit once the kernel lets go of the mount.
	if [ -n "$BRIDGE" ]; then
		for _ in $(seq 100); do is_bridge "$BRIDGE" || break; sleep 0.05; done
		if is_bridge "$BRIDGE"; then
			note "metac: B's FUSE bridge (pid $BRIDGE) was still running 5 s after unbind; killed it"
			kill -KILL "$BRIDGE" 2>/dev/null
		fi
	fi
	BRIDGE=""
}

SSHFS_SSH="" SSHFS_ERR=""
sshfs_mount() {
	local mp=${DIR[sshfs]}
	[ -n "$SSHFS_ERR" ] && { MOUNT_ERR=$SSHFS_ERR; return 1; }
	sshfs -f -o ssh_command="$SSHFS_SSH" "$SSH_DEST:${SRV[sshfs]}" "$mp" \
		>>"$T/sshfs.log" 2>&1 &
	PID_SSHFS=$!
	_pids+=("$PID_SSHFS")
	MOUNTED[sshfs]=1
	FUSE_PID=$PID_SSHFS
	for _ in $(seq 400); do
		if is_mounted "$mp"; then
			PID_SSHFS_SSH=$(find_procs "$SSH_KEY" " sftp" | head -n 1)
			[ -n "$PID_SSHFS_SSH" ] || note "sshfs: found no ssh process of sshfs: its CPU is not counted"
			return 0
		fi
		kill -0 "$PID_SSHFS" 2>/dev/null || break
		sleep 0.05
	done
	MOUNT_ERR="sshfs did not mount: $(lines "$T/sshfs.log" 2)"
	return 1
}

sshfs_unmount() {
	local mp=${DIR[sshfs]}
	[ "${MOUNTED[sshfs]}" = 1 ] || return 0
	MOUNTED[sshfs]=0
	if is_mounted "$mp" && ! fusermount3 -u "$mp" 2>>"$T/sshfs.log"; then
		broken "fusermount3 -u of the sshfs mount failed: $(lines "$T/sshfs.log" 1)"
		fusermount3 -u -z "$mp" 2>/dev/null
	fi
	for _ in $(seq 100); do kill -0 "$PID_SSHFS" 2>/dev/null || break; sleep 0.05; done
	kill -TERM "$PID_SSHFS" 2>/dev/null
	wait "$PID_SSHFS" 2>/dev/null
	forget_pid "$PID_SSHFS"
	PID_SSHFS="" PID_SSHFS_SSH=""
}

# Interrupted: no time for manners. A FUSE server that is gone answers
# nothing, so that neither the unmount nor anyone using the mount waits.
fs_cleanup() {
	[ -n "$_wd" ] && kill "$_wd" 2>/dev/null
	if [ "${MOUNTED[metac]}" = 1 ]; then
		timeout 10 "$METAC" fs unbind --admin-socket "$T/B.sock" "${DIR[metac]}" \
			>/dev/null 2>&1
		kill_fuse_server "$BRIDGE"
		is_mounted "${DIR[metac]}" && umount -l "${DIR[metac]}"
	fi
	if [ "${MOUNTED[sshfs]}" = 1 ]; then
		kill_fuse_server "$PID_SSHFS"
		is_mounted "${DIR[sshfs]}" && fusermount3 -u -z "${DIR[sshfs]}"
	fi
}
at_cleanup fs_cleanup

# --- measuring ------------------------------------------------------------
declare -A LABEL=(
	[write]="sequential write $((BYTES >> 20)) MiB (dd bs=1M conv=fsync)"
	[read]="sequential read, cold cache (dd bs=1M)"
	[create]="create $FILES files of 4 KiB"
	[stat]="find + stat $FILES files, cold cache"
	[remove]="remove $FILES files (rm -r)"
)
rowname() { echo "${LABEL[$2]}: $1"; }

result() { # TARGET WORK VALUE UNIT CPU DETAIL
	RES[$1,$2]="$3|$4|$5|$6"
}

specs_of() {
	case $1 in
	metac)
		if [ -n "$BRIDGE" ]; then
			echo "B:$PID_B bridge:$BRIDGE A:$PID_A"
		else
			echo "B+children:T$PID_B A:$PID_A"
		fi
		;;
	sshfs)
		echo "sshfs:$PID_SSHFS${PID_SSHFS_SSH:+ ssh:$PID_SSHFS_SSH} sshd:T$PID_SSHD" ;;
	local) echo "" ;;
	esac
}

# measure TARGET WORK CMD CHECK CHECK-WHAT: runs CMD (with WD, the
# directory to work in, in its environment) under the watchdog, then the
# shell test CHECK (under the watchdog too). Returns 1 if it is broken.
measure() {
	local t=$1 w=$2 cmd=$3 check=$4 what=$5 rc v unit total detail spec l why
	local -a specs
	read -r -a specs <<<"$(specs_of "$t")"
	export WD=${DIR[$t]}
	watchdog_start $((TMO + 20)) "$t: $w"
	timed "{ $cmd; } 2>$T/work.err" "${specs[@]}"
	rc=$?
	if ! watchdog_stop; then
		why=$(cat "$T/wd.fired")
	elif [ $rc -eq 124 ]; then
		why="$t: $w: no end within $TMO s"
	elif [ $rc -ne 0 ]; then
		why="$t: $w failed (exit $rc): $(lines "$T/work.err" 2)"
	else
		watchdog_start "$TMO" "$t: checking $w"
		rm -f "$T/check.why"
		eval "$check"
		rc=$?
		if ! watchdog_stop; then
			why=$(cat "$T/wd.fired")
		elif [ $rc -ne 0 ]; then
			why="$t: $w: $what$([ -s "$T/check.why" ] && echo ": $(cat "$T/check.why")")"
		else
			why=""
		fi
	fi
	if [ -n "$why" ]; then
		broken "$why"
		result "$t" "$w" BROKEN "" "" "${why#"$t: "}"
		return 1
	fi
	if [ "$w" = write ] || [ "$w" = read ]; then
		unit=MB/s
		v=$(mbps "$BYTES" "$ELAPSED")
	else
		unit=files/s
		v=$(awk -v n="$FILES" -v t="$ELAPSED" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')
	fi
	total=$CLIENT_CPU
	detail="in $ELAPSED s; client $CLIENT_CPU"
	for spec in "${specs[@]}"; do
		l=${spec%%:*}
		total=$(awk -v a="$total" -v b="${SRV_CPU[$l]}" 'BEGIN { print a + b }')
		detail="$detail + $l ${SRV_CPU[$l]}"
	done
	result "$t" "$w" "$v" "$unit" "$(awk -v a="$total" 'BEGIN { printf "%.2f", a }')" "$detail"
	return 0
}

# Every row of TARGET not measured yet is BROKEN for WHY.
all_broken() { # TARGET WHY
	local w
	for w in "${WORKS[@]}"; do
		[ -n "${RES[$1,$w]:-}" ] || result "$1" "$w" BROKEN "" "" "$2"
	done
}

run_target() {
	local t=$1 srv wrote=0 created=0 cached
	srv=${SRV[$t]}
	drop_caches
	cat "$T/src" >/dev/null # the source of the write, from memory
	if ! tgt_mount "$t"; then
		broken "$t: $MOUNT_ERR"
		all_broken "$t" "$MOUNT_ERR"
		tgt_unmount "$t"
		return
	fi
	measure "$t" write 'dd if="$SRC" of="$WD/big" bs=1M conv=fsync status=none' \
		'[ "$(stat -c %s "'"$srv"'/big" 2>/dev/null)" = "$BYTES" ]' \
		"the file on the server side has not $BYTES bytes" && wrote=1
	# One write each: no stdio buffer splits it, no process per file.
	measure "$t" create 'mkdir "$WD/small" && cd "$WD/small" &&
		for ((i = 0; i < NFILES; i++)); do printf %s "$BLK" >"f$i" || exit 1; done' \
		'[ "$(find "'"$srv"'/small" -type f -size 4096c 2>/dev/null | wc -l)" = "$FILES" ]' \
		"the server side has not $FILES files of 4096 bytes" && created=1
	tgt_unmount "$t"

	drop_caches
	if ! tgt_mount "$t"; then
		broken "$t: mounting again: $MOUNT_ERR"
		all_broken "$t" "mounting again: $MOUNT_ERR"
		tgt_unmount "$t"
		return
	fi
	if [ $wrote = 1 ]; then
		cached=$(fincore -n -b -o RES "$srv/big" 2>/dev/null)
		[ "${cached:-0}" -gt 0 ] 2>/dev/null &&
			note "$t: $cached bytes of the file were still in the page cache before the cold read"
		measure "$t" read 'dd if="$WD/big" of=/dev/null bs=1M status=none' \
			'[ "$(cksum <"$WD/big")" = "$CKSUM" ]' \
			"the file read back has another checksum or size than what was written"
	else
		result "$t" read BROKEN "" "" "nothing to read: the write failed"
	fi
	tgt_unmount "$t"
	rm -f "$srv/big"

	drop_caches
	if ! tgt_mount "$t"; then
		broken "$t: mounting again: $MOUNT_ERR"
		all_broken "$t" "mounting again: $MOUNT_ERR"
		tgt_unmount "$t"
		return
	fi
	if [ $created = 1 ]; then
		measure "$t" stat 'find "$WD/small" -type f -print0 | xargs -0 stat -c %s |
			awk "{ n++; s += \$1 } END { print n + 0, s + 0 }" >"$T/stat.out"' \
			'[ "$(cat "$T/stat.out")" = "$FILES $((FILES * 4096))" ] ||
			{ echo "saw $(cat "$T/stat.out") (files, bytes)" >"$T/check.why"; false; }' \
			"find + stat did not see $FILES files of 4096 bytes"
		measure "$t" remove 'rm -r "$WD/small"' \
			'[ ! -e "'"$srv"'/small" ]' "the files are still there on the server side"
	else
		result "$t" stat BROKEN "" "" "nothing to stat: creating the files failed"
		result "$t" remove BROKEN "" "" "nothing to remove: creating the files failed"
	fi
	tgt_unmount "$t"
	rm -rf "$srv/small"
}

# --- setup ----------------------------------------------------------------
for tool in ss setsid timeout /usr/bin/time cksum fincore findmnt; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done
[ -x "$METAC" ] || fail "no metac binary at $METAC"
[ "$BYTES" -gt 0 ] && [ "$FILES" -gt 0 ] || fail "BENCH_FS_BYTES and BENCH_FS_FILES must be > 0"

# The data: random, so that a hole or a lost block cannot pass for it.
head -c "$BYTES" /dev/urandom >"$T/src" || fail "cannot write $BYTES bytes under $T"
CKSUM=$(cksum <"$T/src")
BLK=$(head -c 3072 /dev/urandom | base64 -w 0) # 4096 bytes
export SRC="$T/src" BYTES FILES NFILES=$FILES BLK CKSUM T

# metac: A exports, B mounts.
if ! daemon_start A; then
	METAC_ERR="daemon A did not start: $(lines "$T/A.log" 2)"
elif ! daemon_start B; then
	METAC_ERR="daemon B did not start: $(lines "$T/B.log" 2)"
elif ! REF=$("$METAC" fs export --admin-socket "$T/A.sock" "local:${SRV[metac]}" \
	2>"$T/export.err"); then
	METAC_ERR="metac fs export failed: $(lines "$T/export.err" 2)"
fi

# sshfs: through a private sshd, sftp-server as Debian configures it.
CIPHER=""
if ! command -v sshfs >/dev/null || ! command -v fusermount3 >/dev/null; then
	SSHFS_ERR="sshfs or fusermount3 is not installed"
elif [ ! -x /usr/lib/openssh/sftp-server ]; then
	SSHFS_ERR="/usr/lib/openssh/sftp-server is not installed"
elif ! ssh_start "Subsystem sftp /usr/lib/openssh/sftp-server" >"$T/ssh_start.msg"; then
	SSHFS_ERR="sshd: $(cat "$T/ssh_start.msg")"
else
	SSHFS_SSH="ssh -F /dev/null -p $SSH_PORT -i $SSH_KEY -o BatchMode=yes
		-o IdentitiesOnly=yes -o StrictHostKeyChecking=no
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
	SSHFS_SSH=$(echo $SSHFS_SSH)
	# No -c: what ssh picks by default, asked of ssh itself.
	# shellcheck disable=SC2086
	CIPHER=$(timeout 10 ssh -v ${SSHFS_SSH#ssh } "$SSH_DEST" true </dev/null 2>&1 |
		sed -n 's/.*kex: client->server cipher: \([^ ]*\) .*/\1/p' | head -n 1)
	[ -n "$CIPHER" ] || CIPHER="(unknown: ssh -v did not say)"
fi

drop_caches
echo "== fs: a folder shared on loopback: $((BYTES >> 20)) MiB sequential, $FILES files" \
	"of 4 KiB; $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   metac: daemon A exports a directory, daemon B mounts its ref (FUSE bridge, 9p)"
echo "   sshfs $(sshfs --version 2>&1 | sed -n 's/^SSHFS version //p') with its default options" \
	"through a private sshd (sftp-server); cipher $CIPHER: ssh's default, no -c"
echo "   local: $(findmnt -n -o FSTYPE,SOURCE --target "$T" | tr -s ' ') (where every side keeps its files)"
if [ -n "$DROP_ERR" ]; then
	echo "   cannot drop the page cache ($DROP_ERR): 'cold' phases may read from memory"
else
	echo "   cold: after sync; echo 3 > /proc/sys/vm/drop_caches, on a fresh mount"
fi
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the runs -------------------------------------------------------------
for t in "${TARGETS[@]}"; do
	run_target "$t"
done

# --- table ----------------------------------------------------------------
for w in "${WORKS[@]}"; do
	for t in "${TARGETS[@]}"; do
		IFS='|' read -r v unit cpu detail <<<"${RES[$t,$w]:-BROKEN|||not run}"
		row "$(rowname "$t" "$w")" "$v" "$unit" "$cpu" "$detail"
	done
done
echo
w=0
for r in "${ROWS[@]}"; do r=${r%%|*}; [ ${#r} -gt $w ] && w=${#r}; done
print_table "$w" "CPU s" "(all processes; split)" 7
echo
echo "ratios (one run each):"
for w in "${WORKS[@]}"; do
	case $w in write | read) goal="goal >= 3x" ;; *) goal="goal >= 2x" ;; esac
	ratio "metac / sshfs: $w" "$(rowname metac "$w")" "$(rowname sshfs "$w")" "$goal"
done
for w in "${WORKS[@]}"; do
	ratio "metac / local: $w" "$(rowname metac "$w")" "$(rowname local "$w")" ""
done
echo "   CPU s: user+sys of the client (dd, bash, find, xargs, stat, rm) and of each server:"
echo "   daemon B, its FUSE bridge, daemon A; sshfs, its ssh, sshd with its session and"
echo "   sftp-server. Kernel threads (writeback) are not counted."
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ${#NOTES[@]} -gt 0 ]; then
	echo
	printf 'NOTE: %s\n' "${NOTES[@]}"
fi
finish
