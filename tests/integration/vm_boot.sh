# Virtual machines (metac vm) on two hosts (network namespaces joined by
# a veth pair), booting Debian's cloud kernel under qemu (TCG here) with
# a busybox initrd built by the test. A VM on A whose drive is B's disk
# (a ref, through the NBD endpoint A's daemon makes for qemu) reads the
# disk's exact bytes, and its NIC is on B's exported segment (a metac
# tunnel): it pings B. The console comes back on stdio and the exit is
# clean. A second VM runs detached with its console bound to a Stream
# that B exports: the guest's console lands there; qemu runs under its
# seccomp sandbox; vm list shows it, vm stop ends it, and no qemu is left.
. "$(dirname "$0")/lib.bash"

command -v ping >/dev/null || fail "ping is missing (contrib/install-deps.sh installs iputils-ping)"
KVER=$(cloud_kernel) || exit 1
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
at_exit "pkill -KILL -f 'qemu-system-x86_64 .*-name mt$$' 2>/dev/null"

# --- B's disk, segment and console sink ---
head -c 4194304 /dev/urandom >"$T/disk.img"
sum=$(sha256sum "$T/disk.img" | cut -d' ' -f1)
DREF=$(m B file export local:"$T/disk.img") || fail "file export"
NREF=$(m B net export newlocal:vmseg) || fail "net export"
in_host b ip addr add 10.8.0.1/24 dev vmseg
in_host b ip link set vmseg up

# --- a VM that reads the disk and pings B ---
cat >"$T/init1" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /lib/mods/*.ko; do insmod "$m" || echo "INSMOD-FAILED $m"; done
for i in $(seq 50); do [ -b /dev/vda ] && [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
echo "DISK $(sha256sum /dev/vda | cut -d' ' -f1)"
echo "MTU $(cat /sys/class/net/eth0/mtu)"
ip link set lo up; ip addr add 10.8.0.2/24 dev eth0; ip link set eth0 up
ping -c 2 -W 3 10.8.0.1 >/dev/null && echo PING-OK || echo PING-FAILED
ping -c 1 -s 1300 -W 3 10.8.0.1 >/dev/null && echo BIG-PING-OK || echo BIG-PING-FAILED
poweroff -f
INIT
vm_initrd "$T/initrd1.img" "$KVER" "$T/init1" virtio_pci virtio_blk virtio_net
timeout 180 "$T/A.m" vm start --name "mt$$" --memory 256 --kernel local:/boot/vmlinuz-"$KVER" \
	--initrd local:"$T/initrd1.img" --cmdline "console=ttyS0 quiet panic=-1" \
	--drive uri="$DREF" --net "$NREF" --serial stdio </dev/null >"$T/console1" 2>"$T/vm1.err"
rc=$?
[ $rc = 0 ] || fail "vm start gave $rc: $(cat "$T/vm1.err") $(tail -5 "$T/console1")"
grep -q "^DISK $sum" "$T/console1" || fail "the guest read other bytes from B's disk: $(grep -a 'DISK\|INSMOD' "$T/console1")"
grep -q "^PING-OK" "$T/console1" || fail "the guest cannot ping B through the tunnel: $(tail -8 "$T/console1")"
grep -q "^BIG-PING-OK" "$T/console1" || fail "a large frame does not cross: $(grep -a MTU "$T/console1")"
mtu=$(in_host a cat /sys/class/net/vmseg/mtu 2>/dev/null || in_host b cat /sys/class/net/vmseg/mtu)
grep -q "^MTU $mtu" "$T/console1" || fail "the guest's MTU is not the tunnel's ($mtu): $(grep -a MTU "$T/console1")"
pgrep -f "qemu-system-x86_64 .*-name mt$$" >/dev/null && fail "qemu is left after the VM powered off"
in_host a ip link show | grep -q "mv[0-9a-f]*[qtb]0" && fail "a VM's TAP or bridge is left on A"

# --- a detached VM whose console goes to B ---
socat -u UNIX-LISTEN:"$T/console.sock" CREATE:"$T/console2" &
_pids+=($!)
wait_socket "$T/console.sock"
SREF=$(m B stream export unix:"$T/console.sock") || fail "stream export"
cat >"$T/init2" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
i=0; while true; do echo "SERIAL-HELLO $i"; i=$((i + 1)); sleep 1; done
INIT
vm_initrd "$T/initrd2.img" "$KVER" "$T/init2"
id=$(timeout 60 "$T/A.m" vm start --name "mt$$" --memory 128 --kernel local:/boot/vmlinuz-"$KVER" \
	--initrd local:"$T/initrd2.img" --cmdline "console=ttyS0 quiet" --serial "$SREF") ||
	fail "vm start (detached)"
m A vm list | grep -q "^$id .*mt$$ .*running" || fail "vm list: $(m A vm list)"
for _ in $(seq 150); do grep -q "SERIAL-HELLO 1" "$T/console2" 2>/dev/null && break; sleep 0.2; done
grep -q "SERIAL-HELLO 1" "$T/console2" || fail "the console did not reach B's stream: $(tail -c 300 "$T/console2" 2>/dev/null)"
# qemu runs under its own seccomp filter (-sandbox).
qpid=$(pgrep -f "qemu-system-x86_64 .*-name mt$$" | head -n 1)
[ "$(awk '/^Seccomp:/ { print $2 }' "/proc/$qpid/status")" = 2 ] || fail "qemu runs without a seccomp filter"
m A vm stop "$id" || fail "vm stop"
pgrep -f "qemu-system-x86_64 .*-name mt$$" >/dev/null && fail "qemu is left after vm stop"
m A vm list | grep -q "^$id " && fail "vm list still shows the stopped VM: $(m A vm list)"
expect_fail "no VM" "$T/A.m" vm stop "$id"

# --- bad input ---
expect_fail "nothing to boot" "$T/A.m" vm start
expect_fail "drive 0" "$T/A.m" vm start --drive uri="${DREF%????}AAAA"
expect_fail "No such file" "$T/A.m" vm start --kernel local:"$T/nope"
echo "vm_boot: all checked"
