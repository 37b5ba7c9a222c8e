#!/bin/bash
# Load: many users of one node at once, side by side with the peer a user
# would otherwise pick, between two hosts (network namespaces joined by a
# veth pair):
#   fs   host A shares a folder with one file of random bytes; host B
#        mounts it 50 times (50 mounts, each its own session) and reads
#        the file through all 50 at once:
#          metac  `metac fs export local:DIR` on A, 50 `metac fs bind` on B
#                 (50 FUSE bridges, 50 9p connections);
#          sshfs  50 sshfs mounts through one private sshd on A (50 ssh
#                 connections, 50 sftp-servers), ssh's default cipher.
#   net  20 Ethernet tunnels between A and B, each with a /24 of its own,
#        and 20 iperf3 TCP streams B -> A through them at once:
#          metac         20 `net export newlocal:` on A, 20 `net bind` on B;
#          wireguard-go  20 WireGuard tunnels in userspace (20 processes a
#                        side), encrypted too.
# Prints the aggregate rate, each client's (or tunnel's) min / median /
# max and min/max (fairness: 1.00 is perfectly fair; a starved client
# drags it to 0), the time the 50 mounts took, the CPU time each side's
# processes spent per GiB and the machine's CPU use during each run, the
# ratios metac / peer, and where the run's time went.
#
# The file is in A's page cache before each read (a warm server: the
# protocol is measured, not A's disk); every mount is fresh, so nothing
# is in B's caches. The readers start together; a reader's rate is the
# file's size over the time from the common start to its end.
#
# Never fails on timing. Exits 1 if something is broken: a daemon or
# tunnel that does not come up (at once), or a mount that fails, a reader
# that reads other bytes (every reader's cksum is checked) or does not
# end, an iperf3 run that fails (after the table, marked BROKEN).
#
# Environment: METAC (required), BENCH_LOAD_CLIENTS (default 50),
# BENCH_LOAD_FS_BYTES (default 64 MiB), BENCH_LOAD_TUNNELS (default 20),
# BENCH_LOAD_SECONDS (per iperf3 run, default 10), BENCH_TIMEOUT
# (seconds the 50 reads may take, default 300).
set -u
: "${METAC:?METAC must point at the metac binary}"
NFS=${BENCH_LOAD_CLIENTS:-50}
BYTES=${BENCH_LOAD_FS_BYTES:-67108864}
NNET=${BENCH_LOAD_TUNNELS:-20}
SECS=${BENCH_LOAD_SECONDS:-10}
TMO=${BENCH_TIMEOUT:-300}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.bash
. "$HERE/lib.bash"

[ "$(id -u)" = 0 ] || { echo "bench load: needs root for network namespaces"; exit 77; }
for tool in iperf3 ping ip nsenter cksum mountpoint; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done
[ -x "$METAC" ] || fail "no metac binary at $METAC"
[ "$NFS" -gt 0 ] && [ "$BYTES" -gt 0 ] && [ "$NNET" -gt 0 ] && [ "$NNET" -le 200 ] ||
	fail "BENCH_LOAD_CLIENTS, BENCH_LOAD_FS_BYTES must be > 0, BENCH_LOAD_TUNNELS 1..200"

NA="bl$$-a" NB="bl$$-b"
# What is mounted goes first (fs_cleanup, below), the hosts after.
at_cleanup 'declare -F fs_cleanup >/dev/null && fs_cleanup'
ip netns add "$NA" && at_cleanup "ip netns del $NA" || fail "cannot create network namespaces"
ip netns add "$NB" && at_cleanup "ip netns del $NB" || fail "cannot create network namespaces"
ip link add "v$$a" netns "$NA" type veth peer name "v$$b" netns "$NB" || fail "no veth pair"
ip -n "$NA" addr add 10.90.0.1/24 dev "v$$a"
ip -n "$NB" addr add 10.90.0.2/24 dev "v$$b"
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; done
ip -n "$NA" link set "v$$a" up
ip -n "$NB" link set "v$$b" up
A() { ip netns exec "$NA" "$@"; }
B() { ip netns exec "$NB" "$@"; }
# Processes in the background run as `ip netns exec NS CMD &` or
# `nsenter --net=... CMD &` (not through A or B): $! must be CMD itself,
# for the cleanup to stop it. nsenter enters only the network namespace:
# what sshfs mounts there is where this script looks.

NOTES=()
note() { NOTES+=("$1"); }

# phase NAME: the time since the last phase ended goes to NAME (printed at
# the end: where the run's time went).
PHASES="" _phase_t=$(date +%s.%N)
phase() {
	local now
	now=$(date +%s.%N)
	PHASES+="${PHASES:+, }$1 $(awk -v a="$_phase_t" -v b="$now" 'BEGIN { printf "%.0f", b - a }')s"
	_phase_t=$now
}

# The last lines of FILE on one line.
lines() { tail -n "${2:-2}" "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//'; }

# Whether something is mounted on PATH, from the mount table (stat(2)
# would wait for a FUSE server that may not answer).
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# Busy and total ticks of the whole machine, for its CPU use during a run.
cpu_now() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
cpu_use() { # BEFORE-BUSY BEFORE-TOTAL: the busy share since, in % of all cores
	local b t
	read -r b t < <(cpu_now)
	awk -v b=$((b - $1)) -v t=$((t - $2)) -v n="$(nproc)" \
		'BEGIN { printf "%.0f%% of %d cores", (t > 0 ? 100 * b / t : 0), n }'
}

# trees_ticks PID...: CPU ticks the processes, their live descendants and
# what they reaped have used (each counted once).
trees_ticks() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v roots="$*" '
		{ pid = $1; s = $0; sub(/.*\) /, "", s); split(s, f, " ")
		  pp[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15] }
		END {
			n = split(roots, r, " ")
			for (i = 1; i <= n; i++) if (r[i] in t) in_tree[r[i]] = 1
			do {
				more = 0
				for (p in pp)
					if (!(p in in_tree) && (pp[p] in in_tree)) { in_tree[p] = 1; more = 1 }
			} while (more)
			for (p in in_tree) sum += t[p]
			print sum + 0
		}'
}
# per_gib_of TICKS BYTES: CPU seconds per GiB moved.
per_gib_of() { awk -v c="$1" -v b="$2" -v hz="$HZ" 'BEGIN { printf "%.1f", (b > 0 ? c / hz * 1073741824 / b : 0) }'; }

# stats FORMAT VALUE...: "min median max min/max" of the numbers, the
# first three in the printf FORMAT.
stats() {
	local f=$1
	shift
	printf '%s\n' "$@" | sort -g | awk -v f="$f" '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "- - - -"; exit }
			med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf f " " f " " f " %.2f\n", v[1], med, v[NR], (v[NR] > 0 ? v[1] / v[NR] : 0)
		}'
}

echo "== load: $NFS clients reading one $((BYTES >> 20)) MiB file at once; $NNET tunnels" \
	"with an iperf3 stream each at once (${SECS}s), B -> A;"
echo "   $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the nodes -----------------------------------------------------------
for h in A B; do
	ns=$NA ip=10.90.0.1
	[ $h = B ] && ns=$NB ip=10.90.0.2
	nsenter --net="/run/netns/$ns" "$METAC" daemon --dir "$T/$h" --listen "$ip:901" \
		--admin-socket "$T/$h.sock" >"$T/$h.log" 2>&1 &
	_pids+=($!)
	eval "PID_$h=$!"
	for _ in $(seq 100); do "$METAC" node --admin-socket "$T/$h.sock" >/dev/null 2>&1 && break; sleep 0.05; done
	"$METAC" node --admin-socket "$T/$h.sock" >/dev/null 2>&1 || fail "daemon $h did not start"
done
mA() { "$METAC" "$1" "$2" --admin-socket "$T/A.sock" "${@:3}"; }
mB() { "$METAC" "$1" "$2" --admin-socket "$T/B.sock" "${@:3}"; }

# =========================== fs ===========================================
SRV=$T/srv
mkdir -p "$SRV"
head -c "$BYTES" /dev/urandom >"$SRV/data" || fail "cannot write $BYTES bytes under $T"
SUM=$(cksum <"$SRV/data")
declare -A MNTS # per target: its mount points
declare -A FS_AGG FS_MIN FS_MED FS_MAX FS_FAIR FS_MOUNT FS_CPU FS_N FS_WHY FS_SECS FS_SRV FS_CLI

# The FUSE servers of TARGET's mounts: B's bridges, or the sshfs processes.
fuse_servers() { # metac|sshfs
	case $1 in
	metac) pgrep -f " fs _bridge .*$T/mnt-metac/" ;;
	sshfs) pgrep -f "^sshfs .*$T/mnt-sshfs/" ;;
	esac
}

unmount_all() { # TARGET
	local t=$1 mp p s
	for mp in ${MNTS[$t]:-}; do
		is_mounted "$mp" || continue
		case $t in
		metac) timeout 30 "$METAC" fs unbind --admin-socket "$T/B.sock" "$mp" >>"$T/unbind.out" 2>&1 ;;
		sshfs) timeout 30 fusermount3 -u "$mp" >>"$T/sshfs.log" 2>&1 ;;
		esac
		is_mounted "$mp" && { note "$t: $mp would not unmount; unmounted lazily"; umount -l "$mp"; }
	done
	# Their FUSE servers are to go once the kernel lets go.
	s=$(date +%s)
	while [ -n "$(fuse_servers "$t")" ] && [ $(($(date +%s) - s)) -lt 10 ]; do sleep 0.1; done
	p=$(fuse_servers "$t" | tr '\n' ' ')
	if [ -n "$p" ]; then
		note "$t: $(echo $p | wc -w) FUSE servers (pids $p) still ran 10 s after their unmount; killed"
		kill -KILL $p 2>/dev/null
	fi
	MNTS[$t]=""
}
# Interrupted or broken: no FUSE server left, nothing mounted.
READERS=() # the reader subshells of the run under way
fs_cleanup() {
	local t p mp
	for p in "${READERS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	for t in metac sshfs; do
		for mp in ${MNTS[$t]:-}; do
			[ $t = metac ] && timeout 5 "$METAC" fs unbind --admin-socket "$T/B.sock" "$mp" >/dev/null 2>&1
			is_mounted "$mp" && umount -l "$mp"
		done
		for p in $(fuse_servers $t); do kill -KILL "$p" 2>/dev/null; done
	done
}

# mount_all TARGET: NFS mounts at once under $T/mnt-TARGET; sets
# FS_MOUNT[TARGET] (seconds). Returns 1 with MOUNT_ERR if any fails.
MOUNT_ERR=""
mount_all() {
	local t=$1 i s pids=() rc mp
	MNTS[$t]=""
	for ((i = 0; i < NFS; i++)); do
		mp=$T/mnt-$t/$i
		mkdir -p "$mp"
		MNTS[$t]+=" $mp"
	done
	s=$(date +%s.%N)
	for ((i = 0; i < NFS; i++)); do
		mp=$T/mnt-$t/$i
		case $t in
		metac)
			timeout 120 "$METAC" fs bind --admin-socket "$T/B.sock" --timeout 60 "$mp" "$REF" \
				>"$T/bind$i.out" 2>&1 &
			pids+=($!)
			;;
		sshfs)
			# In B's network namespace only, so that the mount is ours.
			nsenter --net="/run/netns/$NB" sshfs -f -o ssh_command="$SSHFS_SSH" "$SSH_DEST:$SRV" "$mp" \
				>>"$T/sshfs.log" 2>&1 &
			_pids+=($!)
			;;
		esac
	done
	if [ "$t" = metac ]; then
		local again=0
		for ((i = 0; i < NFS; i++)); do
			wait "${pids[$i]}"
			rc=$?
			# B's admin socket refuses a connection at once (EAGAIN)
			# when more are waiting than its listen backlog holds: the
			# bind is asked for again, and that is said.
			if [ $rc = 1 ] && grep -q "cannot connect to .*Resource temporarily unavailable" "$T/bind$i.out"; then
				again=$((again + 1))
				timeout 120 "$METAC" fs bind --admin-socket "$T/B.sock" --timeout 60 \
					"$T/mnt-$t/$i" "$REF" >"$T/bind$i.out" 2>&1
				rc=$?
			fi
			[ $rc = 0 ] || { MOUNT_ERR="bind $i of $NFS failed (exit $rc): $(lines "$T/bind$i.out" 2)"; return 1; }
		done
		[ $again = 0 ] || note "metac: $again of the $NFS binds made at once were refused by B's admin socket (connect: EAGAIN, its listen backlog was full) and were asked for again, one at a time"
	fi
	for _ in $(seq 1200); do
		rc=0
		for mp in ${MNTS[$t]}; do is_mounted "$mp" || { rc=1; break; }; done
		[ $rc = 0 ] && break
		sleep 0.1
	done
	FS_MOUNT[$t]=$(awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
	i=0
	for mp in ${MNTS[$t]}; do is_mounted "$mp" && i=$((i + 1)); done
	[ $i = "$NFS" ] || { MOUNT_ERR="$i of $NFS mounts came up within 120 s$([ $t = sshfs ] &&
		echo ": $(lines "$T/sshfs.log" 2)")"; return 1; }
	return 0
}

# The processes serving TARGET's reads on A and on B (with their children).
fs_roots() { # TARGET A|B
	case $1,$2 in
	metac,A) echo "$PID_A" ;;
	metac,B) echo "$PID_B" ;; # the bridges are its children
	sshfs,A) echo "$PID_SSHD" ;;
	sshfs,B) fuse_servers sshfs ;; # with their ssh each
	esac
}

# read_all TARGET: every mount's file read at once; fills FS_*[TARGET].
read_all() {
	local t=$1 i mp pids=() start cb ct left rc s e bad=0 rates=() last=0 n=0 ra rb
	rm -f "$T/go" "$T"/read*.rc
	cat "$SRV/data" >/dev/null # warm on A
	i=0
	for mp in ${MNTS[$t]}; do
		(
			while [ ! -e "$T/go" ]; do [ -d "$T" ] || exit 1; sleep 0.02; done
			timeout -k 5 "$TMO" cksum <"$mp/data" >"$T/sum$i" 2>"$T/sum$i.err"
			echo "$? $(date +%s.%N)" >"$T/read$i.rc"
		) &
		pids+=($!)
		i=$((i + 1))
	done
	READERS=("${pids[@]}")
	sleep 1
	ra=$(fs_roots "$t" A) rb=$(fs_roots "$t" B)
	FS_SRV[$t]=$(trees_ticks $ra) FS_CLI[$t]=$(trees_ticks $rb)
	read -r cb ct < <(cpu_now)
	start=$(date +%s.%N)
	touch "$T/go"
	for _ in $(seq $(((TMO + 20) * 10))); do
		left=0
		for i in "${pids[@]}"; do kill -0 "$i" 2>/dev/null && left=$((left + 1)); done
		[ $left = 0 ] && break
		sleep 0.1
	done
	FS_CPU[$t]=$(cpu_use "$cb" "$ct")
	FS_SRV[$t]=$(($(trees_ticks $ra) - FS_SRV[$t])) FS_CLI[$t]=$(($(trees_ticks $rb) - FS_CLI[$t]))
	if [ $left != 0 ]; then
		# Readers stuck in FUSE requests nobody answers: end the servers.
		for i in $(fuse_servers "$t"); do kill -KILL "$i" 2>/dev/null; done
		FS_WHY[$t]="$left of $NFS readers did not end within $((TMO + 20)) s"
		broken "$t: ${FS_WHY[$t]}"
	fi
	for i in "${pids[@]}"; do wait "$i" 2>/dev/null; done
	READERS=()
	for ((i = 0; i < NFS; i++)); do
		read -r rc e <"$T/read$i.rc" 2>/dev/null || { rc=none; e=0; }
		if [ "$rc" != 0 ]; then
			bad=$((bad + 1))
			[ $bad = 1 ] && broken "$t: reader $i failed (exit $rc): $(lines "$T/sum$i.err" 1)"
		elif [ "$(cat "$T/sum$i")" != "$SUM" ]; then
			bad=$((bad + 1))
			[ $bad = 1 ] && broken "$t: reader $i read other bytes (cksum $(cat "$T/sum$i"), not $SUM)"
		else
			rates+=("$(mbps "$BYTES" "$(awk -v s="$start" -v e="$e" 'BEGIN { print e - s }')")")
			n=$((n + 1))
			last=$(awk -v a="$last" -v e="$e" -v s="$start" 'BEGIN { d = e - s; print (d > a ? d : a) }')
		fi
	done
	[ $bad = 0 ] || FS_WHY[$t]="${FS_WHY[$t]:+${FS_WHY[$t]}; }$bad of $NFS readers failed or read other bytes"
	FS_N[$t]=$n
	if [ $n -gt 0 ]; then
		FS_SECS[$t]=$(printf %.1f "$last")
		FS_SRV[$t]=$(per_gib_of "${FS_SRV[$t]}" $((NFS * BYTES)))
		FS_CLI[$t]=$(per_gib_of "${FS_CLI[$t]}" $((NFS * BYTES)))
		FS_AGG[$t]=$(mbps $((n * BYTES)) "$last")
		read -r "FS_MIN[$t]" "FS_MED[$t]" "FS_MAX[$t]" "FS_FAIR[$t]" < <(stats %.1f "${rates[@]}")
	fi
}

fs_target() { # TARGET
	local t=$1
	if ! mount_all "$t"; then
		FS_WHY[$t]=$MOUNT_ERR
		broken "$t: $MOUNT_ERR"
	else
		read_all "$t"
	fi
	unmount_all "$t"
}

# metac: A exports the folder.
REF=$(mA fs export --read-only "local:$SRV" 2>"$T/export.err") ||
	fail "metac fs export failed: $(lines "$T/export.err")"
phase setup
fs_target metac
phase "fs metac"

# sshfs: a private sshd on A, key authentication only; enough unfinished
# logins allowed for 50 mounts made at once (MaxStartups).
SSHFS_WHY=""
if ! command -v sshfs >/dev/null || ! command -v fusermount3 >/dev/null; then
	SSHFS_WHY="sshfs or fusermount3 is not installed"
elif [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ]; then
	SSHFS_WHY="openssh-server (sshd, sftp-server) is not installed"
else
	d=$T/ssh
	mkdir -p "$d" && chmod 700 "$d"
	ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" && ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" ||
		fail "ssh-keygen failed"
	cp "$d/client_key.pub" "$d/authorized_keys"
	cat >"$d/sshd_config" <<-EOF
		ListenAddress 10.90.0.1:22
		HostKey $d/host_key
		PidFile $d/sshd.pid
		AuthorizedKeysFile $d/authorized_keys
		UsePAM no
		StrictModes no
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		Compression no
		UseDNS no
		PrintMotd no
		LogLevel ERROR
		MaxStartups $((NFS + 10))
		SetEnv SHLVL=1
		PermitUserRC no
		Subsystem sftp /usr/lib/openssh/sftp-server
	EOF
	if [ ! -d /run/sshd ]; then
		mkdir -p /run/sshd && chmod 755 /run/sshd && at_cleanup "rmdir /run/sshd"
	fi
	/usr/sbin/sshd -t -f "$d/sshd_config" >"$T/sshd.log" 2>&1 || fail "sshd refuses its config: $(lines "$T/sshd.log" 1)"
	nsenter --net="/run/netns/$NA" /usr/sbin/sshd -D -e -f "$d/sshd_config" >>"$T/sshd.log" 2>&1 &
	_pids+=($!)
	PID_SSHD=$!
	SSH_DEST=$(id -un)@10.90.0.1
	SSHFS_SSH="ssh -F /dev/null -i $d/client_key -o BatchMode=yes -o IdentitiesOnly=yes
		-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
	SSHFS_SSH=$(echo $SSHFS_SSH)
	for _ in $(seq 50); do
		# shellcheck disable=SC2086
		timeout 10 nsenter --net="/run/netns/$NB" $SSHFS_SSH "$SSH_DEST" true </dev/null 2>"$T/ssh.err" && break
		sleep 0.1
	done
	# shellcheck disable=SC2086
	CIPHER=$(timeout 10 nsenter --net="/run/netns/$NB" ssh -v ${SSHFS_SSH#ssh } "$SSH_DEST" true </dev/null 2>&1 |
		sed -n 's/.*kex: client->server cipher: \([^ ]*\) .*/\1/p' | head -n 1)
	[ -n "$CIPHER" ] || SSHFS_WHY="ssh to the private sshd on A fails: $(lines "$T/ssh.err" 1) $(lines "$T/sshd.log" 1)"
fi
if [ -n "$SSHFS_WHY" ]; then
	note "sshfs: not measured: $SSHFS_WHY"
else
	fs_target sshfs
fi
phase "fs sshfs"

# =========================== net ==========================================
for tool in wireguard-go wg; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done
# 20 tunnels each: metac's lmN (10.120.N.0/24), wireguard-go's (10.121.N.0/24).
for ((i = 0; i < NNET; i++)); do
	r=$(mA net export "newlocal:lm$i" 2>"$T/nexp.err") || fail "metac net export $i: $(lines "$T/nexp.err")"
	mB net bind "newlocal:lm$i" "$r" 2>"$T/nbind.err" || fail "metac net bind $i: $(lines "$T/nbind.err")"
	A ip addr add "10.120.$i.1/24" dev "lm$i" && A ip link set "lm$i" up &&
		B ip addr add "10.120.$i.2/24" dev "lm$i" && B ip link set "lm$i" up || fail "lm$i's addresses"
done

umask 077
NET_ROOTS_wg=""
WGA=() WGB=() # device names (wireguard-go's control sockets are named after them)
for ((i = 0; i < NNET; i++)); do
	WGA+=("wg$$a$i") WGB+=("wg$$b$i")
	at_cleanup "rm -f /var/run/wireguard/wg$$a$i.sock /var/run/wireguard/wg$$b$i.sock"
	ip netns exec "$NA" wireguard-go -f "wg$$a$i" >>"$T/wireguard-a.log" 2>&1 &
	_pids+=($!)
	NET_ROOTS_wg+=" $!"
	ip netns exec "$NB" wireguard-go -f "wg$$b$i" >>"$T/wireguard-b.log" 2>&1 &
	_pids+=($!)
	NET_ROOTS_wg+=" $!"
done
wg genkey >"$T/wka" && wg genkey >"$T/wkb" || fail "wg genkey"
for ((i = 0; i < NNET; i++)); do
	for _ in $(seq 100); do
		A ip link show "${WGA[$i]}" >/dev/null 2>&1 && B ip link show "${WGB[$i]}" >/dev/null 2>&1 && break
		sleep 0.1
	done
	A wg set "${WGA[$i]}" private-key "$T/wka" listen-port $((52000 + i)) peer "$(wg pubkey <"$T/wkb")" \
		allowed-ips "10.121.$i.2/32" endpoint "10.90.0.2:$((53000 + i))" &&
		B wg set "${WGB[$i]}" private-key "$T/wkb" listen-port $((53000 + i)) peer "$(wg pubkey <"$T/wka")" \
			allowed-ips "10.121.$i.1/32" endpoint "10.90.0.1:$((52000 + i))" &&
		A ip addr add "10.121.$i.1/24" dev "${WGA[$i]}" && A ip link set "${WGA[$i]}" up &&
		B ip addr add "10.121.$i.2/24" dev "${WGB[$i]}" && B ip link set "${WGB[$i]}" up ||
		fail "cannot set up wireguard-go tunnel $i"
done

# All of them carry pings (at once; each has its own deadline).
pids=()
for ((i = 0; i < NNET; i++)); do
	for net in 120 121; do
		B ping -c 3 -i 0.2 -w 15 "10.$net.$i.1" >"$T/ping$net.$i" 2>&1 &
		pids+=("$!:$net.$i")
	done
done
for p in "${pids[@]}"; do
	n=metac
	[[ ${p#*:} == 121.* ]] && n=wireguard-go
	wait "${p%%:*}" || fail "$n: tunnel 10.${p#*:}.0/24 does not carry pings: $(lines "$T/ping${p#*:}" 2)"
done

IPERFS=() # iperf3 servers and clients of the run under way
at_cleanup 'for p in "${IPERFS[@]}"; do kill "$p" 2>/dev/null; done'
declare -A NET_AGG NET_MIN NET_MED NET_MAX NET_FAIR NET_CPU NET_WHY NET_TUN
NET_ROOTS_metac="$PID_A $PID_B"
# iperf_all NAME NET: 20 iperf3 servers on A, 20 clients on B at once.
iperf_all() {
	local name=$1 net=$2 i srv=() cli=() rates=() v bad=0 cb ct roots ticks
	for ((i = 0; i < NNET; i++)); do
		ip netns exec "$NA" iperf3 -s -1 -B "10.$net.$i.1" -p $((5201 + i)) >/dev/null 2>&1 &
		srv+=($!)
		IPERFS+=($!)
	done
	sleep 0.5
	roots=$NET_ROOTS_metac
	[ "$name" = metac ] || roots=$NET_ROOTS_wg
	ticks=$(trees_ticks $roots)
	read -r cb ct < <(cpu_now)
	for ((i = 0; i < NNET; i++)); do
		timeout $((SECS + 30)) ip netns exec "$NB" iperf3 -c "10.$net.$i.1" -p $((5201 + i)) \
			-t "$SECS" -J >"$T/iperf$i.json" 2>&1 &
		cli+=($!)
		IPERFS+=($!)
	done
	for ((i = 0; i < NNET; i++)); do
		if ! wait "${cli[$i]}"; then
			bad=$((bad + 1))
			[ $bad = 1 ] && broken "$name: iperf3 through tunnel $i failed: $(tr -d '\n' <"$T/iperf$i.json" | grep -o '"error":[^}]*' | head -c 200)"
			continue
		fi
		v=$(tr -d ' \t\n' <"$T/iperf$i.json" |
			sed -n 's/.*"sum_received":{[^}]*"bits_per_second":\([0-9.e+]*\).*/\1/p' |
			awk '{ printf "%.3f", $1 / 1e9 }')
		[ -n "$v" ] || { bad=$((bad + 1)); broken "$name: iperf3 through tunnel $i said no rate"; continue; }
		rates+=("$v")
	done
	NET_CPU[$name]=$(cpu_use "$cb" "$ct")
	NET_TUN[$name]=$(($(trees_ticks $roots) - ticks))
	for i in "${srv[@]}"; do kill "$i" 2>/dev/null; wait "$i" 2>/dev/null; done
	IPERFS=()
	[ $bad = 0 ] || NET_WHY[$name]="$bad of $NNET iperf3 runs failed"
	if [ ${#rates[@]} -gt 0 ]; then
		NET_AGG[$name]=$(printf '%s\n' "${rates[@]}" | awk '{ s += $1 } END { printf "%.2f", s }')
		# CPU s per GiB carried: the tunnels' processes, both sides.
		NET_TUN[$name]=$(per_gib_of "${NET_TUN[$name]}" \
			"$(awk -v g="${NET_AGG[$name]}" -v s="$SECS" 'BEGIN { printf "%.0f", g * 1e9 / 8 * s }')")
		read -r "NET_MIN[$name]" "NET_MED[$name]" "NET_MAX[$name]" "NET_FAIR[$name]" < <(stats %.3f "${rates[@]}")
	fi
}
phase "tunnels up"
iperf_all metac 120
phase "net metac"
iperf_all wireguard-go 121
phase "net wireguard-go"

# =========================== table ========================================
echo
echo "-- fs: $NFS clients read one $((BYTES >> 20)) MiB file at once, through $NFS mounts of one export"
echo "   metac: A exports, B binds $NFS times; sshfs $(sshfs --version 2>&1 | sed -n 's/^SSHFS version //p')," \
	"default options, through a private sshd on A (cipher ${CIPHER:-?}: ssh's default)"
printf '   %-12s %9s %7s %7s %7s %7s %7s %7s  %-14s %s\n' "" "aggregate" "min" "median" "max" "min/max" \
	"reads" "mounts" "CPU s/GiB A+B" "machine"
for t in metac sshfs; do
	[ $t = sshfs ] && [ -n "$SSHFS_WHY" ] && { printf '   %-12s %s\n' $t "not measured: $SSHFS_WHY"; continue; }
	if [ -z "${FS_AGG[$t]:-}" ]; then
		printf '   %-12s %9s  %s\n' $t BROKEN "${FS_WHY[$t]:-}"
		continue
	fi
	printf '   %-12s %9s %7s %7s %7s %7s %6ss %6ss  %-14s %s\n' $t "${FS_AGG[$t]}" "${FS_MIN[$t]}" \
		"${FS_MED[$t]}" "${FS_MAX[$t]}" "${FS_FAIR[$t]}" "${FS_SECS[$t]}" "${FS_MOUNT[$t]}" \
		"${FS_SRV[$t]}+${FS_CLI[$t]}" "${FS_CPU[$t]}"
	[ -n "${FS_WHY[$t]:-}" ] && printf '   %-12s BROKEN: %s (figures of the %s that read right)\n' "" "${FS_WHY[$t]}" "${FS_N[$t]}"
done
echo "   MB/s: aggregate, and min / median / max of one client's; min/max 1.00 is perfectly fair."
echo "   reads: until the last reader ended; mounts: the $NFS mounts made at once."
echo "   CPU s per GiB read: A (metac: daemon A; sshfs: sshd, its sessions and sftp-servers) +"
echo "   B (metac: daemon B and its $NFS bridges; sshfs: the $NFS sshfs and their ssh);"
echo "   machine: the busy share of all cores during the reads."

echo
echo "-- net: $NNET tunnels, one iperf3 TCP stream each B -> A, all at once, ${SECS}s"
printf '   %-12s %9s %7s %7s %7s %7s  %-9s %s\n' "" "aggregate" "min" "median" "max" "min/max" "CPU s/GiB" "machine"
for n in metac wireguard-go; do
	if [ -z "${NET_AGG[$n]:-}" ]; then
		printf '   %-12s %9s  %s\n' $n BROKEN "${NET_WHY[$n]:-}"
		continue
	fi
	printf '   %-12s %9s %7s %7s %7s %7s  %-9s %s\n' $n "${NET_AGG[$n]}" "${NET_MIN[$n]}" \
		"${NET_MED[$n]}" "${NET_MAX[$n]}" "${NET_FAIR[$n]}" "${NET_TUN[$n]}" "${NET_CPU[$n]}"
	[ -n "${NET_WHY[$n]:-}" ] && printf '   %-12s BROKEN: %s\n' "" "${NET_WHY[$n]}"
done
echo "   Gbit/s: the sum of the $NNET streams' rates, and min / median / max of one stream's."
echo "   CPU s per GiB carried: both daemons (metac), the $((2 * NNET)) wireguard-go processes;"
echo "   machine: the busy share of all cores (iperf3 included)."

VAL=()
row "fs aggregate metac" "${FS_AGG[metac]:-}" "" "" ""
row "fs aggregate sshfs" "${FS_AGG[sshfs]:-}" "" "" ""
row "fs min metac" "${FS_MIN[metac]:-}" "" "" ""
row "fs min sshfs" "${FS_MIN[sshfs]:-}" "" "" ""
row "net aggregate metac" "${NET_AGG[metac]:-}" "" "" ""
row "net aggregate wireguard-go" "${NET_AGG[wireguard-go]:-}" "" "" ""
row "net min metac" "${NET_MIN[metac]:-}" "" "" ""
row "net min wireguard-go" "${NET_MIN[wireguard-go]:-}" "" "" ""
echo
echo "ratios (one run each):"
ratio "metac / sshfs: fs aggregate" "fs aggregate metac" "fs aggregate sshfs" ""
ratio "metac / sshfs: fs slowest client" "fs min metac" "fs min sshfs" ""
ratio "metac / wireguard-go: net aggregate" "net aggregate metac" "net aggregate wireguard-go" ""
ratio "metac / wireguard-go: net slowest" "net min metac" "net min wireguard-go" ""
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   time taken: $PHASES"
if [ ${#NOTES[@]} -gt 0 ]; then
	echo
	printf 'NOTE: %s\n' "${NOTES[@]}"
fi
finish
