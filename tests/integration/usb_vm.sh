# A host's own USB device through two nodes, with the kernel at both
# ends. These machines have no USB, so the test boots Debian's full kernel
# (linux-image-amd64: it has dummy_hcd, the USB gadget framework and
# vhci-hcd) under qemu, with a busybox initrd holding this metac. Inside:
#   - a real USB device: a SourceSink gadget (usb_f_ss_lb, configured
#     through configfs) on dummy_hcd's emulated port, enumerated by the
#     kernel as any device is;
#   - node A exports it by product id (local-productid:), node B attaches
#     the ref through vhci-hcd (`metac usb attach`): metac's libusb
#     backend on one side, the kernel's USB/IP client on the other; A's
#     session runs as nobody with every thread (libusb's events too)
#     under the USB filter, usbfs ioctls only;
#   - the kernel enumerates the attached copy through metac (control
#     transfers, SET_CONFIGURATION): its descriptors are the original's,
#     byte for byte, and its interfaces are there;
#   - the kernel's usbtest driver, bound to the copy (the gadget has
#     Gadget Zero's ids), runs its test cases through it: bulk writes and
#     reads of fixed and varied sizes, queued and scatter-gather bulk,
#     control requests single and queued, unlinks of bulk and control
#     URBs in flight, endpoint halts set and cleared, OUT control data
#     (usbtest_run.c asks for them, as testusb does; dummy_hcd has no
#     isochronous endpoints, so those cases are not among them);
#   - detaching (SIGTERM to attach) removes the copy and gives the
#     original back to its kernel driver; `usb list` showed it.
. "$(dirname "$0")/lib.bash"

KVER=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | grep -v cloud | sort -V | tail -n 1)
[ -n "$KVER" ] || fail "no full Debian kernel (contrib/install-deps.sh installs linux-image-amd64)"
KVER=$(basename "$KVER" | sed 's/^vmlinuz-//')
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is missing (qemu-system-x86)"
# The guest has no shared libraries: the static binary, not SANITIZE=1's.
ldd "$METAC" >/dev/null 2>&1 && skip "usb_vm needs the static metac (the guest has no shared libraries)"

cat >"$T/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in /lib/mods/*.ko; do insmod "$m" 2>/dev/null || echo "INSMOD-FAILED $m"; done
ip link set lo up
# The device: a SourceSink gadget on dummy_hcd.
mount -t configfs none /sys/kernel/config
G=/sys/kernel/config/usb_gadget/g1
mkdir -p $G/strings/0x409 $G/configs/c.1/strings/0x409 $G/functions/SourceSink.0
# Gadget Zero's ids: usbtest knows what to test on it.
echo 0x0525 >$G/idVendor; echo 0xa4a0 >$G/idProduct; echo 0x0100 >$G/bcdDevice
echo metac >$G/strings/0x409/manufacturer
echo "metac test source-sink" >$G/strings/0x409/product
echo 42 >$G/strings/0x409/serialnumber
echo "source and sink" >$G/configs/c.1/strings/0x409/configuration
ln -s $G/functions/SourceSink.0 $G/configs/c.1/
echo dummy_udc.0 >$G/UDC || echo "GADGET-FAILED"
find_dev() { # VID PID [not BUSID]: the busid of such a device
	for d in /sys/bus/usb/devices/*; do
		[ -f $d/idVendor ] || continue
		[ "$(cat $d/idVendor):$(cat $d/idProduct)" = "$1:$2" ] || continue
		[ "$(basename $d)" = "${3:-}" ] && continue
		basename $d; return 0
	done
	return 1
}
for i in $(seq 100); do ORIG=$(find_dev 0525 a4a0) && break; sleep 0.1; done
[ -n "$ORIG" ] && echo "DEVICE $ORIG" || { echo "NO-DEVICE"; poweroff -f; }
export METAC_LOG=stderr
/metac daemon --dir /tmp/a --listen 127.0.0.1:901 --admin-socket /tmp/a.sock 2>/tmp/a.log &
/metac daemon --dir /tmp/b --listen 127.0.0.1:902 --admin-socket /tmp/b.sock 2>/tmp/b.log &
for i in $(seq 100); do [ -S /tmp/a.sock ] && [ -S /tmp/b.sock ] && break; sleep 0.1; done
METAC_ADMIN_SOCKET=/tmp/a.sock /metac usb list | grep -q "^$ORIG  *0525:a4a0" && echo "LISTED"
REF=$(METAC_ADMIN_SOCKET=/tmp/a.sock /metac usb export local-productid:0525:a4a0) || echo "EXPORT-FAILED"
METAC_ADMIN_SOCKET=/tmp/b.sock /metac usb attach "$REF" 2>/tmp/attach.log &
ATTACH=$!
for i in $(seq 300); do COPY=$(find_dev 0525 a4a0 $ORIG) && break; sleep 0.1; done
if [ -n "$COPY" ]; then
	echo "ATTACHED $COPY"
	for i in $(seq 100); do [ -d /sys/bus/usb/devices/$COPY:1.0 ] && break; sleep 0.1; done
	[ -d /sys/bus/usb/devices/$COPY:1.0 ] && echo "INTERFACE-OK"
	cmp /sys/bus/usb/devices/$ORIG/descriptors /sys/bus/usb/devices/$COPY/descriptors &&
		echo "DESCRIPTORS-SAME"
	echo "PRODUCT $(cat /sys/bus/usb/devices/$COPY/product)"
	echo "SPEED $(cat /sys/bus/usb/devices/$ORIG/speed) $(cat /sys/bus/usb/devices/$COPY/speed)"
	for i in $(seq 50); do [ -e /sys/bus/usb/devices/$COPY:1.0/driver ] && break; sleep 0.1; done
	echo "DRIVER $(basename "$(readlink /sys/bus/usb/devices/$COPY:1.0/driver)")"
	# A's session: nobody, every thread (libusb's events too) filtered.
	SPID=$(ps -o pid,args | awk '/usb _session/ && !/awk/ { print $1; exit }')
	echo "SESSION uid $(awk '/^Uid:/ { print $2 }' /proc/$SPID/status)" \
		"threads $(ls /proc/$SPID/task | wc -l)" \
		"seccomp $(cat /proc/$SPID/task/*/status | awk '/^Seccomp:/ { print $2 }' | sort -u | xargs)"
	NODE=$(printf /dev/bus/usb/%03d/%03d $(cat /sys/bus/usb/devices/$COPY/busnum) \
		$(cat /sys/bus/usb/devices/$COPY/devnum))
	/usbtest_run $NODE 1 2 3 4 5 6 7 8 9 10 11 12 13 14 17 18 19 20 21 24 27 28 29 && echo "USBTEST-OK"
else
	echo "NOT-ATTACHED"
fi
kill $ATTACH
for i in $(seq 100); do find_dev 0525 a4a0 $ORIG >/dev/null || break; sleep 0.1; done
find_dev 0525 a4a0 $ORIG >/dev/null && echo "STILL-ATTACHED" || echo "DETACHED"
# Released: the original's interface has its kernel driver back.
for i in $(seq 50); do [ -e /sys/bus/usb/devices/$ORIG:1.0/driver ] && break; sleep 0.1; done
echo "ORIGINAL-DRIVER $(basename "$(readlink /sys/bus/usb/devices/$ORIG:1.0/driver)")"
echo "--- attach"; cat /tmp/attach.log; echo "--- a"; tail -5 /tmp/a.log; echo "--- b"; tail -5 /tmp/b.log
echo "--- end"
poweroff -f
INIT
# metac is static: /metac in the initrd, with the test's usbtest_run.
vm_initrd "$T/initrd.img" "$KVER" "$T/init" dummy_hcd libcomposite usb_f_ss_lb vhci-hcd usbtest
mkdir -p "$T/add" && cp "$METAC" "$T/add/metac"
${CC:-gcc} -static -O2 -Wall -o "$T/add/usbtest_run" "$(dirname "$0")/usbtest_run.c" ||
	fail "cannot build usbtest_run"
(cd "$T/add" && printf 'metac\nusbtest_run\n' | /bin/busybox cpio -o -H newc 2>/dev/null |
	gzip -1) >>"$T/initrd.img"
timeout 300 qemu-system-x86_64 -m 512 -nographic -no-reboot -kernel /boot/vmlinuz-"$KVER" \
	-initrd "$T/initrd.img" -append "console=ttyS0 quiet panic=-1" </dev/null >"$T/console" 2>&1
grep -a "INSMOD-FAILED\|GADGET-FAILED\|NO-DEVICE\|EXPORT-FAILED" "$T/console" &&
	fail "setting up the device failed: $(tail -30 "$T/console")"
grep -aq "^ATTACHED" "$T/console" || fail "the device did not appear through vhci-hcd: $(tail -40 "$T/console")"
grep -aq "^INTERFACE-OK" "$T/console" || fail "the attached device was not configured: $(tail -30 "$T/console")"
grep -aq "^DESCRIPTORS-SAME" "$T/console" || fail "the attached device's descriptors differ"
grep -aq "^PRODUCT metac test source-sink" "$T/console" || fail "the attached device's strings differ"
grep -aq "^SESSION uid 65534 threads [2-9] seccomp 2[[:space:]]*$" "$T/console" ||
	fail "the USB/IP session is not confined: $(grep -a "^SESSION" "$T/console")"
grep -aq "^USBTEST-OK" "$T/console" || fail "usbtest failed through metac: $(grep -a "^TEST\|^DRIVER" "$T/console")"
grep -aq "^DETACHED" "$T/console" || fail "the device stayed attached after attach ended"
grep -aq "^LISTED" "$T/console" || fail "usb list does not show the device"
grep -aq "^ORIGINAL-DRIVER usbtest" "$T/console" ||
	fail "the original did not get its kernel driver back: $(grep -a ORIGINAL-DRIVER "$T/console")"
grep -a "^DEVICE\|^ATTACHED\|^SPEED\|^DRIVER\|^SESSION\|^TEST" "$T/console"
echo "ok"
