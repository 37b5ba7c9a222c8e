# The sessions that parse what remote peers send in bulk run in processes
# of their own, with least privilege (svc/session.c, lib/sandbox.c):
# - a 9P session (B mounts A's folder): seccomp filter on, no new
#   privileges, only the file capabilities (CapEff 1f), its root a tmpfs
#   with nothing but the export and proc/self/fd; record locks taken
#   through the mount hold on A's file;
# - an NBD session (B serves A's disk): uid nobody, no capabilities,
#   seccomp, same root;
# - B's FUSE bridge: nobody, no capabilities, an empty root, seccomp on
#   every thread; its unmounter holds CAP_SYS_ADMIN alone;
# - a session that crashes (SIGSEGV) costs its client the session only:
#   A's daemon goes on and says so, the mount reads on (the bridge
#   reconnects to a fresh session), a new NBD connection works.
. "$(dirname "$0")/lib.bash"

# The crashes are sent (SIGSEGV): a sanitized build is to die of them as
# the static one does, not report them as its own.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"
command -v nbdcopy >/dev/null || fail "nbdcopy is missing (contrib/install-deps.sh installs it)"
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
EX=$T/a/export MNT=$T/b/mnt
mkdir -p "$EX" "$MNT"
echo hello >"$EX/hello.txt"
head -c 64M /dev/urandom >"$EX/big"
head -c 16M /dev/urandom >"$T/a/disk"
FS=$(m A fs export "local:$EX") || fail "fs export"
DISK=$(m A file export "local:$T/a/disk") || fail "file export"
m B fs bind --timeout 10 "$MNT" "$FS" || fail "fs bind"
[ "$(cat "$MNT/hello.txt")" = hello ] || fail "the mount does not read"
# Record locks reach the confined session's file (fcntl's lock commands
# are in its filter): held through the mount, they hold on A's disk.
python3 - "$MNT/hello.txt" "$EX/hello.txt" <<'PY' || fail "record locks through the mount"
import fcntl, sys
held = open(sys.argv[1], "r+")
fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
try:
    fcntl.lockf(open(sys.argv[2], "r+"), fcntl.LOCK_EX | fcntl.LOCK_NB)
    sys.exit("a lock taken through the mount does not hold on A's file")
except BlockingIOError:
    pass
PY

# sessions KIND: the session processes of A's daemon
sessions() { pgrep -P "$PID_A" -f "$1 _session"; }

pid=$(sessions fs | head -n 1)
[ -n "$pid" ] || fail "no 9p session process under A's daemon"
[ "$(proc_status "$pid" Seccomp)" = 2 ] || fail "the 9p session has no seccomp filter"
[ "$(proc_status "$pid" NoNewPrivs)" = 1 ] || fail "the 9p session may gain privileges"
[ "$(proc_status "$pid" CapEff)" = 000000000000001f ] || fail "9p session CapEff $(proc_status "$pid" CapEff)"
[ "$(proc_status "$pid" CapBnd)" = 000000000000001f ] || fail "9p session CapBnd $(proc_status "$pid" CapBnd)"
[ "$(ls -A "/proc/$pid/root/" | tr '\n' ' ')" = "export proc " ] ||
	fail "the 9p session's root holds: $(ls -A "/proc/$pid/root/")"
[ "$(ls "/proc/$pid/root/export/hello.txt")" ] || fail "the 9p session's export is not at /export"
ls "/proc/$pid/root/proc/self/fd/" | grep -qx 4 || fail "the 9p session does not see its own descriptors"
[ -z "$(ls -A "$T/A/session-root")" ] || fail "the session root is not empty from outside"
echo "9p session $pid: Seccomp 2, NoNewPrivs 1, CapEff 1f, root: the export and proc/self/fd only"

# B's side: the FUSE bridge, nobody with an empty root, and its unmounter.
bpid=$(pgrep -f "fs _bridge .*$MNT\$" | head -n 1)
upid=$(pgrep -P "$bpid" -f "fs _unmounter")
[ -n "$bpid" ] && [ -n "$upid" ] || fail "no bridge ($bpid) or unmounter ($upid) on B"
confined_nobody "$bpid" "the bridge"
[ "$(proc_status "$upid" CapEff)" = 0000000000200000 ] || fail "unmounter CapEff $(proc_status "$upid" CapEff)"
[ "$(proc_status "$upid" Seccomp)" = 2 ] || fail "the unmounter has no seccomp filter"
# Confined after the readahead was opened: it is still raised.
dev=$(mountpoint -d "$MNT")
[ "$(cat "/sys/class/bdi/$dev/read_ahead_kb")" -gt 128 ] ||
	fail "the mount's readahead is $(cat "/sys/class/bdi/$dev/read_ahead_kb") KiB"
echo "bridge $bpid: uid 65534, CapEff 0, all threads Seccomp 2; unmounter CAP_SYS_ADMIN only;" \
	"readahead $(cat "/sys/class/bdi/$dev/read_ahead_kb") KiB"

# --- a 9p session crashes mid-read ---
(timeout 120 cat "$MNT/big" >"$T/big.read"; echo $? >"$T/read.rc") &
sleep 0.3
kill -SEGV "$pid"
for _ in $(seq 600); do [ -e "$T/read.rc" ] && break; sleep 0.2; done
[ -e "$T/read.rc" ] || fail "a read hung after its session crashed"
if [ "$(cat "$T/read.rc")" = 0 ]; then
	cmp -s "$T/big.read" "$EX/big" || fail "a read across a crashed session returned wrong bytes"
fi
m A node >/dev/null || fail "A's daemon died with its session"
grep -q "9p session process (pid $pid) died of Segmentation fault" "$T/A.log" ||
	fail "the crash was not logged"
ok=0
for _ in $(seq 60); do
	[ "$(timeout 20 cat "$MNT/hello.txt" 2>/dev/null)" = hello ] && { ok=1; break; }
	sleep 0.5
done
[ $ok = 1 ] || fail "the mount did not come back after its session crashed"
cmp -s "$MNT/big" "$EX/big" || fail "the mount reads wrong after its session crashed"
echo "a crashed 9p session: read rc $(cat "$T/read.rc"), the node went on, the mount came back"

# --- NBD sessions ---
bg_start serve "$T/B.m" block serve --listen "unix:$T/nbd.sock" "$DISK"
wait_socket "$T/nbd.sock"
nbdcopy "nbd+unix:///?socket=$T/nbd.sock" "$T/disk.read" || fail "nbdcopy through A's session"
cmp -s "$T/disk.read" "$T/a/disk" || fail "the disk reads wrong"
# One connection held open, to look at its session.
python3 - "$T/nbd.sock" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.recv(18)  # the server's greeting: its session has started
time.sleep(30)
PY
holder=$!
_pids+=($holder)
for _ in $(seq 100); do pid=$(sessions block | head -n 1); [ -n "$pid" ] && break; sleep 0.1; done
[ -n "$pid" ] || fail "no NBD session process under A's daemon"
[ "$(proc_status "$pid" Uid)" = 65534 ] || fail "the NBD session runs as uid $(proc_status "$pid" Uid)"
[ "$(proc_status "$pid" CapEff)" = 0000000000000000 ] || fail "NBD session CapEff $(proc_status "$pid" CapEff)"
[ "$(proc_status "$pid" Seccomp)" = 2 ] || fail "the NBD session has no seccomp filter"
echo "nbd session $pid: uid 65534, CapEff 0, Seccomp 2"
kill -SEGV "$pid"
kill $holder 2>/dev/null
nbdcopy "nbd+unix:///?socket=$T/nbd.sock" "$T/disk.read2" || fail "nbdcopy after a session crashed"
cmp -s "$T/disk.read2" "$T/a/disk" || fail "the disk reads wrong after a session crashed"
grep -q "nbd session process (pid $pid) died of Segmentation fault" "$T/A.log" ||
	fail "the NBD crash was not logged"
m A node >/dev/null || fail "A's daemon died"
exit 0
