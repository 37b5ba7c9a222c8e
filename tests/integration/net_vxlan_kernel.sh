# metac in plain RFC 7348 mode against the kernel's own vxlan device:
# host A has a kernel VTEP (VNI 42, UDP 4789) towards B; B binds
# newlocal:vx0 to vxlan://A/42 with --plain. Ping works both ways, with
# full-size frames, and both ends agree on the MTU.
. "$(dirname "$0")/lib.bash"

command -v ping >/dev/null || fail "ping is missing (contrib/install-deps.sh installs iputils-ping)"
netns_pair a b
daemon_start B b 10.77.0.2:901

in_host a ip link add vx0 type vxlan id 42 remote 10.77.0.2 dstport 4789 dev "v$$a" ||
	skip "the kernel has no vxlan device"
in_host a ip addr add 192.168.78.1/24 dev vx0
in_host a ip link set vx0 up
m B net bind --plain newlocal:vx0 vxlan://10.77.0.1/42 || fail "net bind --plain"
in_host b ip addr add 192.168.78.2/24 dev vx0
in_host b ip link set vx0 up

in_host b ping -c 3 -i 0.2 -W 2 192.168.78.1 >"$T/ping" || fail "ping metac -> kernel: $(cat "$T/ping")"
in_host a ping -c 3 -i 0.2 -W 2 192.168.78.2 >"$T/ping" || fail "ping kernel -> metac: $(cat "$T/ping")"
mtu_a=$(in_host a cat /sys/class/net/vx0/mtu)
mtu_b=$(in_host b cat /sys/class/net/vx0/mtu)
[ "$mtu_a" = "$mtu_b" ] || fail "MTUs differ: kernel $mtu_a, metac $mtu_b"
in_host b ping -M do -s $((mtu_b - 28)) -c 2 -W 2 192.168.78.1 >"$T/ping" ||
	fail "a full-size frame does not cross: $(cat "$T/ping")"
in_host a ping -M do -s $((mtu_a - 28)) -c 2 -W 2 192.168.78.2 >"$T/ping" ||
	fail "a full-size frame does not come back: $(cat "$T/ping")"
m B net list | grep -q "^vx0 .*plain" || fail "net list: $(m B net list)"

# Another VNI is not ours: the kernel's frames for it are dropped and counted.
in_host a ip link add vx1 type vxlan id 43 remote 10.77.0.2 dstport 4789 dev "v$$a"
in_host a ip addr add 192.168.79.1/24 dev vx1
in_host a ip link set vx1 up
in_host a ping -c 2 -W 1 192.168.79.2 >/dev/null 2>&1
m B net list --json | grep -q '"rx_vni": [1-9]' || fail "frames of another VNI were not counted"
m B net unbind vx0 || fail "net unbind"
exit 0
