# Shared helpers for integration tests: hosts as network namespaces joined
# by veth pairs, daemons per host, and cleanup that runs however the test
# ends. Source it, then call netns_pair / daemon_start; fail() ends a test.

set -u
# Daemons log to stderr (their log files), not to syslog.
export METAC_LOG=stderr
: "${METAC:?METAC must point at the metac binary}"
T=$(mktemp -d /tmp/metac-it.XXXXXX)
NS_PREFIX="mt$$"
_pids=()
_netns=()
_atexit=()

# Mounts under $T, deepest first.
mounts_under_t() {
	awk -v t="$T" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

cleanup() {
	local p ns mp c
	for p in "${_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${_pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
	done
	for c in "${_atexit[@]}"; do eval "$c"; done
	# Whatever a daemon mounted and left (killed -9, say): never let rm
	# walk into a mount.
	for mp in $(mounts_under_t); do umount -l "$mp" 2>/dev/null; done
	pkill -KILL -f "fs _bridge .*$T/" 2>/dev/null
	for ns in "${_netns[@]}"; do ip netns del "$ns" 2>/dev/null; done
	# Under SANITIZE=1 a daemon's (or its helpers') report lands in its
	# log: a test whose processes crashed or leaked fails, whatever it
	# checked itself.
	local f bad=0
	for f in "$T"/*.log; do
		[ -f "$f" ] && grep -q 'ERROR: \(AddressSanitizer\|LeakSanitizer\)\|runtime error:' "$f" &&
			{ echo "FAIL: sanitizer report in $f:"; grep -A 15 'ERROR:\|runtime error:' "$f" | head -40; bad=1; } >&2
	done
	rm -rf --one-file-system "$T"
	[ $bad = 0 ] || exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# at_exit CMD: cleanup runs CMD (a string for eval) once the test's
# processes are gone, however the test ends.
at_exit() {
	_atexit+=("$1")
}

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; } >&2; done
	exit 1
}

skip() {
	echo "$*"
	exit 77
}

need_root() {
	[ "$(id -u)" = 0 ] || skip "needs root for network namespaces"
}

# netns_pair A B: hosts $NS_PREFIX-A (10.77.0.1) and $NS_PREFIX-B
# (10.77.0.2) joined by a veth pair; also fd77::1 and fd77::2.
netns_pair() {
	local a="$NS_PREFIX-$1" b="$NS_PREFIX-$2"
	need_root
	ip netns add "$a" && _netns+=("$a") || fail "cannot create netns $a"
	ip netns add "$b" && _netns+=("$b") || fail "cannot create netns $b"
	ip link add "v$$a" netns "$a" type veth peer name "v$$b" netns "$b" ||
		fail "cannot create veth pair"
	ip -n "$a" addr add 10.77.0.1/24 dev "v$$a"
	ip -n "$b" addr add 10.77.0.2/24 dev "v$$b"
	ip -n "$a" addr add fd77::1/64 dev "v$$a" nodad
	ip -n "$b" addr add fd77::2/64 dev "v$$b" nodad
	for ns in "$a" "$b"; do
		ip -n "$ns" link set lo up
	done
	ip -n "$a" link set "v$$a" up
	ip -n "$b" link set "v$$b" up
}

# in_host H CMD...: run CMD in host H's network namespace.
in_host() {
	local h="$NS_PREFIX-$1"
	shift
	ip netns exec "$h" "$@"
}

# daemon_start NAME HOST|- LISTEN: a daemon with state in $T/NAME and its
# admin socket at $T/NAME.sock; HOST - runs it in this namespace. Options
# in DAEMON_OPTS (word-split) go on its command line.
daemon_start() {
	local name=$1 host=$2 listen=$3
	if [ "$host" = - ]; then
		"$METAC" daemon --dir "$T/$name" --listen "$listen" \
			--admin-socket "$T/$name.sock" ${DAEMON_OPTS:-} >"$T/$name.log" 2>&1 &
	else
		# Not through in_host: $! must be the daemon itself, not a
		# subshell, so that tests can signal it and cleanup reaps it.
		# nsenter, not `ip netns exec`: that one also gives the process
		# a mount namespace of its own, and the daemon's mounts must be
		# where the test looks.
		nsenter --net="/run/netns/$NS_PREFIX-$host" "$METAC" daemon --dir "$T/$name" \
			--listen "$listen" --admin-socket "$T/$name.sock" ${DAEMON_OPTS:-} \
			>"$T/$name.log" 2>&1 &
	fi
	_pids+=($!)
	eval "PID_$name=$!"
	# $T/NAME.m: metac as a client of this daemon (usable with timeout).
	printf '#!/bin/sh\nMETAC_ADMIN_SOCKET="%s" exec "%s" "$@"\n' \
		"$T/$name.sock" "$METAC" >"$T/$name.m"
	chmod +x "$T/$name.m"
	for _ in $(seq 100); do
		[ -S "$T/$name.sock" ] && "$METAC" node --admin-socket "$T/$name.sock" \
			>/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "daemon $name did not start"
}

# bg_start NAME CMD...: CMD in the background, its output in $T/NAME.log
# (checked like a daemon's), its pid in PID_NAME; cleanup stops it.
bg_start() {
	local name=$1
	shift
	"$@" >"$T/$name.log" 2>&1 &
	_pids+=($!)
	eval "PID_$name=$!"
}

# wait_socket PATH: until a unix socket is there (5 s at most).
wait_socket() {
	for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
	fail "nothing listens on $1"
}

# m NAME ARGS...: metac ARGS as a client of daemon NAME.
m() {
	local name=$1
	shift
	"$T/$name.m" "$@"
}

# expect_fail PATTERN CMD...: CMD must exit 1 with PATTERN on stderr,
# within 20 s (no hang).
expect_fail() {
	local pat=$1 rc
	shift
	timeout 20 "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ $rc -eq 124 ] && fail "hung: $*"
	[ $rc -eq 1 ] || fail "expected exit 1, got $rc: $* ($(cat "$T/err"))"
	grep -q -- "$pat" "$T/err" || fail "expected '$pat' from: $* (got: $(cat "$T/err"))"
}

# proc_status PID FIELD: a field of /proc/PID/status (its first word).
proc_status() { grep "^$2:" "/proc/$1/status" | awk '{ print $2 }'; }

# confined_nobody PID WHAT: the process runs as nobody with no
# capabilities, cannot gain privileges, has a seccomp filter on every
# thread and an empty root (lib/sandbox.c's threaded sessions). A process
# just started is given 10 s to get there (the filter comes last).
confined_nobody() {
	local pid=$1 what=$2 tid
	for _ in $(seq 100); do
		[ "$(proc_status "$pid" Seccomp)" = 2 ] && break
		sleep 0.1
	done
	[ "$(proc_status "$pid" Uid)" = 65534 ] || fail "$what runs as uid $(proc_status "$pid" Uid)"
	[ "$(proc_status "$pid" CapEff)" = 0000000000000000 ] ||
		fail "$what has capabilities $(proc_status "$pid" CapEff)"
	[ "$(proc_status "$pid" NoNewPrivs)" = 1 ] || fail "$what may gain privileges"
	for tid in /proc/"$pid"/task/*; do
		[ "$(awk '/^Seccomp:/ { print $2 }' "$tid/status")" = 2 ] ||
			fail "$what: thread $(basename "$tid") has no seccomp filter"
	done
	[ -z "$(ls -A "/proc/$pid/root/")" ] || fail "$what: its root is not empty"
}

# session_crash PID KIND NAME: the session process PID (of daemon NAME)
# dies of SIGSEGV; the daemon goes on and logs it as its KIND session's.
session_crash() {
	local pid=$1 kind=$2 name=$3 dpid
	eval "dpid=\$PID_$name"
	kill -SEGV "$pid"
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$dpid" || fail "a $kind session crashing took daemon $name down"
	grep -q "$kind session process (pid $pid) died of Segmentation fault" "$T/$name.log" ||
		fail "daemon $name did not log its $kind session's crash"
}

# busybox_root DIR: a root filesystem of Debian's busybox-static in DIR
# (/bin/busybox and a link per applet).
busybox_root() {
	local dir=$1 a
	[ -x /bin/busybox ] || fail "busybox is missing (contrib/install-deps.sh installs busybox-static)"
	mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" || fail "cannot make $dir"
	cp /bin/busybox "$dir/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"
	done
}

# no_leftovers WHAT: no container helper runs, no memory cgroup of a
# container is left, and $T has no mount but those listed in $T/mounts.ok.
no_leftovers() {
	local what=$1
	for _ in $(seq 50); do
		pgrep -f "compute _container" >/dev/null || break
		sleep 0.1
	done
	pgrep -af "compute _container" >&2 && fail "$what: a container helper is left"
	find /sys/fs/cgroup -maxdepth 6 -name 'metac-*' -o -maxdepth 6 -name 'c[0-9]*-[0-9]*' \
		2>/dev/null | grep . >&2 && fail "$what: a cgroup is left"
	mounts_under_t | sort >"$T/mounts.now"
	cmp -s "$T/mounts.now" "$T/mounts.ok" || fail "$what: mounts left: $(comm -13 "$T/mounts.ok" "$T/mounts.now")"
}

# cloud_kernel: the newest Debian cloud kernel's version (package
# linux-image-cloud-amd64), for VMs under test.
cloud_kernel() {
	local k
	k=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1)
	[ -n "$k" ] || fail "no cloud kernel (contrib/install-deps.sh installs linux-image-cloud-amd64)"
	command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is missing (qemu-system-x86)"
	basename "$k" | sed 's/^vmlinuz-//'
}

# vm_initrd OUT KVER INIT MODULE...: an initrd (newc cpio, gzip) with
# busybox, INIT (a shell script) as /init and the modules with what they
# depend on, as /lib/mods/N-NAME.ko in the order to load them.
vm_initrd() {
	local out=$1 kver=$2 init=$3 dir n=0 m
	shift 3
	dir=$(mktemp -d "$T/initrd.XXXXXX")
	mkdir -p "$dir/bin" "$dir/lib/mods" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/tmp"
	cp /bin/busybox "$dir/bin/busybox"
	for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"; done
	cp "$init" "$dir/init" && chmod +x "$dir/init"
	local -A seen=()
	add_mod() {
		local path dep
		path=$(awk -v m="$1" -F: '{ n = $1; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n) }
			n == m { print $1; exit }' "/lib/modules/$kver/modules.dep")
		[ -n "$path" ] || fail "kernel $kver has no module $1"
		[ -n "${seen[$1]:-}" ] && return
		seen[$1]=1
		for dep in $(awk -v p="$path" -F: '$1 == p { print $2 }' "/lib/modules/$kver/modules.dep"); do
			dep=${dep##*/}
			add_mod "${dep%%.ko*}"
		done
		n=$((n + 1))
		cp "/lib/modules/$kver/$path" "$dir/lib/mods/$(printf %02d $n)-$1.ko"
	}
	for m in "$@"; do add_mod "$m"; done
	(cd "$dir" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$out" ||
		fail "cannot build the initrd"
}
