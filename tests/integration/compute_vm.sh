# Containers in VMs (metac run --service=computevm) on two hosts
# (network namespaces joined by a veth pair), under TCG: Debian's cloud
# kernel boots with metac's initramfs, whose agent mounts the root and a
# folder over 9p on virtio ports (the root local to A, the folder B's,
# a ref), runs the command with stdio forwarded and reports its exit
# code; stdin's end reaches the command; death by a signal comes back;
# the VM's NIC is on B's segment; a client that goes away takes its VM
# with it; bad input is a clear error and leaves no qemu behind.
. "$(dirname "$0")/lib.bash"

KVER=$(cloud_kernel) || exit 1
# The agent is /init of an initramfs: a static metac. A sanitizer build
# of the daemon puts the default (static) build there.
if readelf -l "$METAC" 2>/dev/null | grep -q INTERP; then
	[ -x "$(dirname "$0")/../../build/rel/metac" ] || skip "no static metac for the VM's agent (make)"
	export METAC_AGENT=$(cd "$(dirname "$0")/../../build/rel" && pwd)/metac
fi
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
R=$T/root
busybox_root "$R"
mkdir -p "$T/share" && echo from-B >"$T/share/hello"
vmrun() { timeout 120 "$T/A.m" run --service=computevm "$@"; }
no_qemu() {
	for _ in $(seq 50); do pgrep -f "qemu-system-x86_64 .*computevm-" >/dev/null || return 0; sleep 0.2; done
	fail "$1: qemu is left: $(pgrep -af qemu-system)"
}

# --- hello, and the exit code ---
out=$(vmrun --mount=/=local:"$R" sh -c 'echo hello; uname -r; exit 42')
rc=$?
[ $rc = 42 ] || fail "exit code $rc, not 42 ($out)"
[ "$out" = "hello
$KVER" ] || fail "output: $out"
no_qemu "after hello"

# --- stdin in (and its end), stderr apart, death by a signal ---
head -c 200000 /dev/urandom >"$T/in"
vmrun --mount=/=local:"$R" sh -c 'cat; echo to-stderr >&2' <"$T/in" >"$T/out" 2>"$T/err" ||
	fail "cat in a VM"
cmp -s "$T/in" "$T/out" || fail "stdin did not come back whole"
[ "$(cat "$T/err")" = to-stderr ] || fail "stderr: $(cat "$T/err")"
vmrun --mount=/=local:"$R" sh -c 'kill -KILL $$'; rc=$?
[ $rc = 137 ] || fail "death by SIGKILL gave $rc"

# --- a terminal (script gives metac run one) ---
command -v script >/dev/null || fail "script is missing (bsdutils)"
timeout 120 script -qec "stty rows 33 cols 77; $T/A.m run --pty --service=computevm --mount=/=local:$R sh -c 'echo T=\$(tty) S=\$(stty size); exit 6'; echo RC=\$?" \
	/dev/null </dev/null >"$T/pty" 2>&1
grep -q 'T=/dev/pts/0 S=33 77' "$T/pty" || fail "the terminal in the VM: $(cat -v "$T/pty" | tail -5)"
grep -q 'RC=6' "$T/pty" || fail "the exit code through the terminal: $(cat -v "$T/pty" | tail -5)"

# --- B's folder inside; a file written there lands on B; B's segment ---
FREF=$(m B fs export local:"$T/share") || fail "fs export"
NREF=$(m B net export newlocal:cvseg) || fail "net export"
in_host b ip addr add 10.9.0.1/24 dev cvseg
in_host b ip link set cvseg up
out=$(vmrun --mount=/=local:"$R" --mount=/data="$FREF" --net="$NREF",addr=10.9.0.2/24 \
	sh -c 'cat /data/hello; echo written-in-vm >/data/fromvm; ping -c 2 -W 3 10.9.0.1 >/dev/null && echo PING-OK') ||
	fail "a VM with B's folder and segment: $out"
[ "$out" = "from-B
PING-OK" ] || fail "B's folder or segment inside the VM: $out"
[ "$(cat "$T/share/fromvm" 2>/dev/null)" = written-in-vm ] || fail "the file written in the VM is not on B"

# --- a client that goes away takes its VM along ---
"$T/A.m" run --service=computevm --mount=/=local:"$R" sleep 100 &
client=$!
for _ in $(seq 100); do m A compute list | grep -q running && break; sleep 0.2; done
m A compute list | grep -q running || fail "the VM container does not run: $(m A compute list)"
kill -KILL $client
wait $client 2>/dev/null
no_qemu "after its client was killed"

# --- bad input ---
expect_fail "not an existing directory\|No such file" "$T/A.m" run --service=computevm --mount=/=local:"$T/nope" true
expect_fail "cannot run nosuch" timeout 60 "$T/A.m" run --service=computevm --mount=/=local:"$R" nosuch
no_qemu "after bad input"
echo "compute_vm: all checked"
