# USB/IP with the Linux usbip tool and a client of the test's own, over the
# software device (there is no USB hardware here):
#   - `metac usb serve softdev:1-1` (plain, no daemon): `usbip list -r`
#     lists it; usbip_client.py imports it and runs URBs (descriptors,
#     a report set and read back on the interrupt endpoint, an unlink, a
#     stall);
#   - node A exports it, node B relays the ref (`usb serve REF`): usbip
#     lists it through both nodes and the same URBs return the same bytes;
#     each session on A is a process of its own, nobody in an empty root
#     under a seccomp filter, and killing one costs only its client;
#   - garbage on the endpoint ends that connection only; attach says
#     clearly that vhci-hcd is missing; a host device that is not there
#     is refused plainly (host devices themselves: usb_vm.sh).
. "$(dirname "$0")/lib.bash"

command -v usbip >/dev/null || fail "usbip is missing (contrib/install-deps.sh installs it)"
HERE=$(dirname "$0")
# A session is killed with SIGSEGV below: under SANITIZE=1 it must die of
# it, not turn it into a report and an exit status.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"

# listed PORT: usbip list -r shows the software device on that port.
listed() {
	timeout 20 usbip --tcp-port "$1" list -r 127.0.0.1 >"$T/list.out" 2>&1 ||
		fail "usbip list -r failed: $(cat "$T/list.out")"
	grep -q "1-1: .*(1209:0001)" "$T/list.out" || fail "usbip does not list the device: $(cat "$T/list.out")"
	grep -q "(03/00/00)" "$T/list.out" || fail "usbip does not show the HID interface"
}

# --- plain, from the applet ---------------------------------------------
bg_start plain "$METAC" usb serve --listen 127.0.0.1:13240 softdev:1-1
for _ in $(seq 100); do grep -q "serving" "$T/plain.log" && break; sleep 0.05; done
listed 13240
echo "usbip list -r: the software device"
python3 "$HERE/usbip_client.py" 127.0.0.1 13240 1-1 >"$T/local.out" || fail "URBs failed (plain)"
grep -q "^device 1201000200000040091201000001" "$T/local.out" ||
	fail "unexpected device descriptor: $(head -1 "$T/local.out")"
echo "URBs on the plain endpoint: $(grep -c . "$T/local.out") results"

# Garbage ends that connection, not the server.
head -c 4096 /dev/urandom | timeout 10 socat -u - TCP:127.0.0.1:13240 2>/dev/null
printf '\x01\x11\x80\x03' | timeout 10 socat -u - TCP:127.0.0.1:13240 2>/dev/null
listed 13240
echo "garbage: connection closed, endpoint still serving"

# --- two nodes ----------------------------------------------------------
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
REF=$(m A usb export softdev:1-1) || fail "export failed"
"$T/B.m" usb serve --listen 127.0.0.1:13241 "$REF" >"$T/relay.log" 2>&1 &
_pids+=($!)
for _ in $(seq 100); do grep -q "serving" "$T/relay.log" && break; sleep 0.05; done
listed 13241
python3 "$HERE/usbip_client.py" 127.0.0.1 13241 1-1 >"$T/remote.out" ||
	fail "URBs failed through two nodes"
cmp -s "$T/local.out" "$T/remote.out" ||
	fail "different answers through two nodes: $(diff "$T/local.out" "$T/remote.out")"
echo "through two nodes: usbip lists it, the same URBs return the same bytes"

# Each of A's USB/IP sessions is a confined process; its crash costs only it.
sleep 60 | socat - TCP:127.0.0.1:13241 >/dev/null 2>&1 &
_pids+=($!)
for _ in $(seq 100); do spid=$(pgrep -P "$PID_A" -f "usb _session") && break; sleep 0.05; done
[ -n "$spid" ] || fail "no USB/IP session process under A's daemon"
confined_nobody "$spid" "the USB/IP session"
session_crash "$spid" usb A
python3 "$HERE/usbip_client.py" 127.0.0.1 13241 1-1 >"$T/after.out" ||
	fail "URBs failed after a session crashed"
cmp -s "$T/local.out" "$T/after.out" || fail "different answers after a session crashed"
echo "USB/IP session $spid: uid 65534, CapEff 0, every thread Seccomp 2, empty root;" \
	"its crash (SIGSEGV) cost only its client"

# --- errors ----------------------------------------------------------------
if [ ! -e /sys/devices/platform/vhci_hcd.0/attach ]; then
	expect_fail "vhci-hcd is not loaded" "$T/B.m" usb attach "$REF"
	echo "attach without vhci-hcd: $(cat "$T/err")"
fi
[ -e /sys/bus/usb/devices/9-9 ] ||
	expect_fail "no USB device 9-9 on this host" "$T/A.m" usb export local-busid:9-9
expect_fail "no USB device 1209:0002 on this host" "$T/A.m" usb export local-productid:1209:0002
m A usb export local:/dev/null 2>/dev/null
[ $? = 2 ] || fail "export of a bad device: no usage error"
echo "ok"
