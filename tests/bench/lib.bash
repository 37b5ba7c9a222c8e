# shellcheck shell=bash disable=SC2034 # its variables are the benchmark's
# Helpers shared by the benchmarks in tests/bench/ (sourced, not run).
#
# Conventions: a benchmark never fails on timing. Setup that cannot work
# (a daemon or server that does not start) is `fail` (exit 1 at once); a
# measurement that goes wrong (a transfer that fails, bytes that go
# missing) is `broken`: its row shows BROKEN, the run goes on, and
# `finish` prints what broke and exits 1 after the table.
#
# Sourcing this creates the scratch directory $T and installs the traps
# that clean up on exit or interruption. The benchmark sets METAC (for
# daemon_start) and TMO (seconds per timed command) before using them.
# Provides: cleanup (and at_cleanup), show_logs, fail, broken, free_port,
# cpu_ticks, tree_ticks, timed, row/ROWS/VAL, mbps, per_gib,
# print_table, ratio, finish, daemon_start, ssh_start.

# Daemons log to stderr (their log files), not to syslog.
export METAC_LOG=stderr

HZ=$(getconf CLK_TCK)
T=$(mktemp -d /tmp/metac-bench.XXXXXX)
_pids=()     # servers: daemons, sshd, socket servers
_jobs=()     # timed jobs, each its own process group (setsid)
_cleanups=() # commands the benchmark adds with at_cleanup
_run_dir=""
BROKEN=()

# at_cleanup CMD: run CMD (eval, in a subshell) when the benchmark ends,
# after its timed job is stopped and before its servers are: unmount what
# it mounted.
at_cleanup() {
	_cleanups+=("$1")
}

cleanup() {
	local p c
	for p in "${_jobs[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
	# In a subshell each: an error there must not stop the rest.
	for c in "${_cleanups[@]}"; do (eval "$c"); done
	for p in "${_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${_pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
	done
	# The privilege separation directory sshd insists on, if we made it.
	[ -n "$_run_dir" ] && rmdir "$_run_dir" 2>/dev/null
	# Never into something still mounted there.
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

show_logs() {
	local f
	for f in "$T"/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; } >&2; done
}

# Setup is broken: nothing to measure.
fail() {
	echo "BROKEN: $*" >&2
	show_logs
	exit 1
}

# A measurement is broken: say so, go on, exit 1 at the end.
broken() {
	echo "BROKEN: $*" >&2
	BROKEN+=("$*")
}

# Ends the benchmark: 1 if something was broken (says what), else 0.
finish() {
	if [ ${#BROKEN[@]} -gt 0 ]; then
		echo
		printf 'BROKEN: %s\n' "${BROKEN[@]}"
		show_logs
		exit 1
	fi
	exit 0
}

# A TCP port on 127.0.0.1 nobody listens on (others may run daemons here).
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
	done
	fail "no free TCP port on 127.0.0.1"
}

# CPU ticks a process and its reaped children have used.
cpu_ticks() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	echo $((${12} + ${13} + ${14} + ${15}))
}

# CPU ticks a process, its live descendants and everything they reaped
# have used: for servers whose work happens in children that live as
# long as a connection (sshd's session, sshfs's ssh, a FUSE helper).
tree_ticks() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
		{ pid = $1; s = $0; sub(/.*\) /, "", s); split(s, f, " ")
		  pp[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15] }
		END {
			if (!(root in t)) { print 0; exit }
			in_tree[root] = 1; sum = t[root]
			do {
				more = 0
				for (p in pp)
					if (!(p in in_tree) && (pp[p] in in_tree)) {
						in_tree[p] = 1; sum += t[p]; more = 1
					}
			} while (more)
			print sum
		}'
}

# timed CMD [LABEL:PID...]: runs CMD (a shell pipeline) in its own process
# group, under a timeout. Sets ELAPSED (s), CLIENT_CPU (user+sys s of the
# whole pipeline) and SRV_CPU[LABEL] (s used meanwhile by each server,
# counted by $TICKS_OF: cpu_ticks, or tree_ticks).
# Returns the pipeline's status (124 on timeout).
declare -A SRV_CPU
TICKS_OF=cpu_ticks
timed() {
	local cmd=$1 s e rc spec
	local -A before
	shift
	for spec in "$@"; do before[$spec]=$($TICKS_OF "${spec#*:}"); done
	s=$(date +%s.%N)
	setsid timeout "$TMO" /usr/bin/time -o "$T/time" -f '%U %S' \
		bash -c "set -o pipefail; $cmd" &
	_jobs+=($!)
	wait $!
	rc=$?
	e=$(date +%s.%N)
	unset '_jobs[-1]'
	sleep 0.2 # let forking servers reap the connection's child
	SRV_CPU=()
	for spec in "$@"; do
		SRV_CPU[${spec%%:*}]=$(awk -v t=$(($($TICKS_OF "${spec#*:}") - before[$spec])) \
			-v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
	done
	ELAPSED=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f", e - s }')
	CLIENT_CPU=$(awk 'NF == 2 { printf "%.2f", $1 + $2 }' "$T/time" 2>/dev/null)
	[ -n "$CLIENT_CPU" ] || CLIENT_CPU=0
	return $rc
}

# Rows of the table: NAME|VALUE|UNIT|CPU|DETAIL
ROWS=()
declare -A VAL

row() {
	ROWS+=("$1|$2|$3|$4|$5")
	VAL[$1]=$2
}

mbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", (t > 0 ? b / t / 1e6 : 0) }'; }
per_gib() { awk -v c="$1" -v b="$2" 'BEGIN { printf "%.2f", c * 1073741824 / b }'; }

# print_table NAME-WIDTH CPU-HEADING DETAIL-HEADING [UNIT-WIDTH]: the rows.
print_table() {
	local w=$1 uw=${4:-5} r name v unit cpu detail
	printf "%-${w}s %10s %-${uw}s %9s  %s\n" "" "" "" "$2" "$3"
	for r in "${ROWS[@]}"; do
		IFS='|' read -r name v unit cpu detail <<<"$r"
		printf "%-${w}s %10s %-${uw}s %9s  %s\n" "$name" "$v" "$unit" "$cpu" "$detail"
	done
}

ratio() { # LABEL NUM-ROW DEN-ROW GOAL
	local n=${VAL[$2]:-} d=${VAL[$3]:-}
	if [[ ! $n =~ ^[0-9.]+$ || ! $d =~ ^[0-9.]+$ ]]; then
		printf '   %-34s %8s\n' "$1" "n/a"
		return
	fi
	awk -v l="$1" -v n="$n" -v d="$d" -v g="$4" \
		'BEGIN { printf "   %-34s %7.2fx  %s\n", l, (d > 0 ? n / d : 0), g }'
}

# daemon_start NAME: a node on a free loopback port, state under $T, admin
# socket $T/NAME.sock, log $T/NAME.log; sets PID_NAME. Returns 1 if it
# does not start.
daemon_start() {
	local name=$1 port pid
	for _ in 1 2 3; do
		port=$(free_port)
		"$METAC" daemon --dir "$T/$name" --listen "127.0.0.1:$port" \
			--admin-socket "$T/$name.sock" >"$T/$name.log" 2>&1 &
		pid=$!
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			if "$METAC" node --admin-socket "$T/$name.sock" >/dev/null 2>&1; then
				_pids+=("$pid")
				eval "PID_$name=$pid"
				return 0
			fi
			sleep 0.05
		done
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		grep -q "in use" "$T/$name.log" || break # not a lost race for the port
	done
	return 1
}

# ssh_start [SSHD-CONFIG-LINE...]: a private sshd on a loopback port, keys
# and config under $T, key authentication only. Sets SSH (an ssh command
# line to run commands there), SSH_PORT, SSH_KEY, SSH_DEST (user@host)
# and PID_SSHD. Prints why not and returns 1 if it cannot be used.
ssh_start() {
	local d="$T/ssh" port
	command -v ssh >/dev/null && [ -x /usr/sbin/sshd ] ||
		{ echo "ssh or /usr/sbin/sshd is not installed"; return 1; }
	mkdir -p "$d" && chmod 700 "$d"
	ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" &&
		ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" ||
		{ echo "ssh-keygen failed"; return 1; }
	cp "$d/client_key.pub" "$d/authorized_keys"
	port=$(free_port)
	cat >"$d/sshd_config" <<-EOF
		ListenAddress 127.0.0.1:$port
		HostKey $d/host_key
		PidFile $d/sshd.pid
		AuthorizedKeysFile $d/authorized_keys
		UsePAM no
		StrictModes no
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com
		Compression no
		UseDNS no
		PrintMotd no
		LogLevel ERROR
		# The login shell must not read ~/.bashrc (bash does for sshd
		# sessions unless SHLVL is set): it may be slow, and it is not
		# what is measured.
		SetEnv SHLVL=1
		PermitUserRC no
	EOF
	[ $# -gt 0 ] && printf '%s\n' "$@" >>"$d/sshd_config"
	if [ ! -d /run/sshd ]; then
		mkdir -p /run/sshd 2>/dev/null && chmod 755 /run/sshd && _run_dir=/run/sshd
	fi
	/usr/sbin/sshd -t -f "$d/sshd_config" >"$T/sshd.log" 2>&1 ||
		{ echo "sshd refuses its config: $(tail -n 1 "$T/sshd.log")"; return 1; }
	/usr/sbin/sshd -D -e -f "$d/sshd_config" >>"$T/sshd.log" 2>&1 &
	_pids+=($!); PID_SSHD=$!
	SSH_PORT=$port
	SSH_KEY=$d/client_key
	SSH_DEST=$(id -un)@127.0.0.1
	SSH="ssh -F /dev/null -T -x -a -p $port -i $d/client_key -o BatchMode=yes
		-o IdentitiesOnly=yes -o StrictHostKeyChecking=no
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR $SSH_DEST"
	SSH=$(echo $SSH)
	for _ in $(seq 50); do
		timeout 10 $SSH true 2>"$T/ssh.err" </dev/null && return 0
		kill -0 "$PID_SSHD" 2>/dev/null || break
		sleep 0.1
	done
	echo "ssh to a private sshd on 127.0.0.1:$port fails:" \
		"$(tail -n 1 "$T/ssh.err") $(tail -n 1 "$T/sshd.log")"
	return 1
}
