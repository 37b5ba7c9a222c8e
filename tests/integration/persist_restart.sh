# Everything persistent comes back by itself when both daemons restart.
# Host A exports a folder, a disk and an Ethernet segment, all
# --persistent; host B binds the folder (fs bind), serves the disk as
# NBD on a unix socket (block serve) and joins the segment (net bind),
# all --persistent. Then both daemons are stopped and started again,
# with SIGTERM and kill -9, in both orders (B coming up while A is still
# down, so that its bindings wait for A), and after each round the mount
# reads, the NBD endpoint gives the disk's bytes, and the tunnel pings.
# A disk written through the endpoint while A is killed (-9) ends up
# either with every byte written, or the writer told of an error.
# Finally unbind/unserve stick across a restart.
. "$(dirname "$0")/lib.bash"

for t in nbdcopy ping; do
	command -v $t >/dev/null || fail "$t is missing (contrib/install-deps.sh installs it)"
done
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

EX=$T/a/export MNT=$T/b/mnt SOCK=$T/b/nbd.sock
mkdir -p "$EX" "$MNT"
echo hello >"$EX/hello.txt"
head -c 32M /dev/urandom >"$T/a/disk"
SUM=$(b2sum <"$T/a/disk")

FS=$(m A fs export --persistent "local:$EX") || fail "fs export"
DISK=$(m A file export --persistent "local:$T/a/disk") || fail "file export"
NET=$(m A net export --persistent newlocal:tun0) || fail "net export"
m B fs bind --persistent --timeout 5 "$MNT" "$FS" || fail "fs bind"
m B block serve --persistent --listen "unix:$SOCK" "$DISK" || fail "block serve --persistent"
m B net bind --persistent newlocal:tun0 "$NET" || fail "net bind"
in_host a ip addr add 192.168.77.1/24 dev tun0
in_host a ip link set tun0 up
in_host b ip addr add 192.168.77.2/24 dev tun0
in_host b ip link set tun0 up
m B block list | grep -q "^unix:$SOCK .*ref://10.77.0.1:901/\.\.\. *rw *yes" ||
	fail "block list: $(m B block list 2>&1)"

# all_back_within SECONDS WHAT
all_back_within() {
	local fs=0 nbd=0 net=0
	for _ in $(seq $(($1 * 2))); do
		[ $fs = 1 ] || { mountpoint -q "$MNT" &&
			[ "$(timeout 10 cat "$MNT/hello.txt" 2>/dev/null)" = hello ] && fs=1; }
		[ $nbd = 1 ] || { timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK" "$T/read" 2>/dev/null &&
			[ "$(b2sum <"$T/read")" = "$SUM" ] && nbd=1; }
		[ $net = 1 ] || { in_host b ping -c 1 -W 1 192.168.77.1 >/dev/null 2>&1 && net=1; }
		[ $fs$nbd$net = 111 ] && return 0
		sleep 0.5
	done
	fail "after $2, not back within $1 s: fs bind $fs, block serve $nbd, tunnel $net" \
		"(B: $(m B net list 2>&1 | tail -n 1))"
}
all_back_within 10 "binding"

stop() { # stop NAME SIGNAL
	local pid_var="PID_$1"
	kill "-$2" "${!pid_var}"
	wait "${!pid_var}" 2>/dev/null
}
start() { # start NAME
	if [ "$1" = A ]; then daemon_start A a 10.77.0.1:901; else daemon_start B b 10.77.0.2:901; fi
}

# round SIG1 FIRST SIG2 SECOND THEN...: stop FIRST with SIG1 and SECOND
# with SIG2, then start them in the order given.
round() {
	stop "$2" "$1"
	stop "$4" "$3"
	start "$5"
	# What comes up first waits for the other for a while.
	sleep 3
	start "$6"
	all_back_within 60 "SIG$1 to $2, SIG$3 to $4, $5 started first"
	echo "round: SIG$1 to $2, SIG$3 to $4, $5 started first: all back"
}
round TERM A TERM B A B
round KILL B KILL A B A
round KILL A TERM B B A
round TERM B KILL A A B

# --- A killed while a disk is written through B's endpoint ---
head -c 32M /dev/urandom >"$T/wdata"
cp "$T/a/disk" "$T/before"
(nbdcopy "$T/wdata" "nbd+unix:///?socket=$SOCK" 2>"$T/w.err"; echo $? >"$T/w.rc") &
sleep 0.5
stop A KILL
start A
for _ in $(seq 600); do [ -e "$T/w.rc" ] && break; sleep 0.1; done
[ -e "$T/w.rc" ] || fail "a writer hung across A's kill -9"
if [ "$(cat "$T/w.rc")" = 0 ]; then
	cmp -s "$T/wdata" "$T/a/disk" || fail "the writer was told all was well, but A's disk differs"
	echo "write across A's kill -9: completed, and the disk matches"
else
	echo "write across A's kill -9: the writer got an error ($(tail -n 1 "$T/w.err"))"
	# Every 512-byte sector is the old one or the new one, nothing else.
	python3 - "$T/before" "$T/wdata" "$T/a/disk" <<'PY' || fail "A's disk has sectors that are neither old nor new"
import sys
old, new, disk = (open(f, "rb").read() for f in sys.argv[1:4])
bad = [o for o in range(0, len(disk), 512)
       if disk[o:o + 512] not in (old[o:o + 512], new[o:o + 512])]
print(f"{len(bad)} torn sectors" if bad else "every sector old or new")
sys.exit(1 if bad else 0)
PY
	nbdcopy "$T/wdata" "nbd+unix:///?socket=$SOCK" || fail "writing again after A came back"
	cmp -s "$T/wdata" "$T/a/disk" || fail "the disk differs after writing again"
fi
SUM=$(b2sum <"$T/a/disk")
all_back_within 30 "the writer's round"

# --- what is taken down stays down ---
m B block unserve "unix:$SOCK" || fail "block unserve"
[ -e "$SOCK" ] && fail "unserve left the socket behind"
m B fs unbind "$MNT" || fail "fs unbind"
stop B TERM
start B
sleep 1
[ -e "$SOCK" ] && fail "an unserved endpoint came back"
mountpoint -q "$MNT" && fail "an unbound mount came back"
m B block list 2>&1 | grep -q "serves no NBD endpoint" || fail "block list after unserve: $(m B block list 2>&1)"
in_host b ping -c 1 -W 2 192.168.77.1 >/dev/null || fail "the tunnel did not stay"
grep -q -e "${FS##*/}" -e "${DISK##*/}" -e "${NET##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
