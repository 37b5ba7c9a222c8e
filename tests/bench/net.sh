#!/bin/bash
# Ethernet tunnels side by side, in one run, between the same two hosts
# (network namespaces joined by a veth pair):
#   veth         the bare link, no tunnel (the ceiling);
#   kernel-vxlan the kernel's vxlan device, plain, in the kernel;
#   wireguard-go WireGuard in userspace (Debian's wireguard-go), encrypted;
#   metac        `metac net export newlocal:` on A, `net bind` on B: encrypted.
# Each: iperf3 TCP throughput B -> A (one stream, then four) and the
# ping round trip. Prints Gbit/s and ms, and the ratios against the goals
# (metac >= 5x wireguard-go; metac's round trip <= 0.3 ms).
#
# Never fails on timing. Exits 1 if something is broken: a tunnel that
# does not come up, or a measurement that fails (after the table).
#
# Environment: METAC (required), BENCH_NET_SECONDS (per iperf3 run,
# default 10), BENCH_NET_PINGS (default 50).
set -u
: "${METAC:?METAC must point at the metac binary}"
SECS=${BENCH_NET_SECONDS:-10}
PINGS=${BENCH_NET_PINGS:-50}
TMO=$((SECS + 30))
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.bash
. "$HERE/lib.bash"

[ "$(id -u)" = 0 ] || { echo "bench net: needs root for network namespaces"; exit 77; }
for tool in iperf3 ping ip wireguard-go wg; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done

NA="bn$$-a" NB="bn$$-b"
at_cleanup "ip netns del $NA 2>/dev/null; ip netns del $NB 2>/dev/null; rm -f /var/run/wireguard/wb$$a.sock /var/run/wireguard/wb$$b.sock"
ip netns add "$NA" && ip netns add "$NB" || fail "cannot create network namespaces"
ip link add "v$$a" netns "$NA" type veth peer name "v$$b" netns "$NB" || fail "no veth pair"
ip -n "$NA" addr add 10.90.0.1/24 dev "v$$a"
ip -n "$NB" addr add 10.90.0.2/24 dev "v$$b"
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; done
ip -n "$NA" link set "v$$a" up
ip -n "$NB" link set "v$$b" up
A() { ip netns exec "$NA" "$@"; }
B() { ip netns exec "$NB" "$@"; }

echo "== net: iperf3 ${SECS}s and $PINGS pings per tunnel, B -> A;" \
	"$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# addr NAME DEV A-ADDR B-ADDR: the tunnel's device on both hosts, up.
addr() {
	A ip addr add "$3/24" dev "$2" && A ip link set "$2" up &&
		B ip addr add "$4/24" dev "$2" && B ip link set "$2" up
}

# --- the candidates ---
# kernel vxlan
A ip link add vxb type vxlan id 77 remote 10.90.0.2 dstport 4789 dev "v$$a" &&
	B ip link add vxb type vxlan id 77 remote 10.90.0.1 dstport 4789 dev "v$$b" &&
	addr kernel-vxlan vxb 192.168.91.1 192.168.91.2 || fail "cannot set up the kernel's vxlan"

# wireguard-go (its control sockets are named after the interfaces)
umask 077
wg genkey >"$T/wka" && wg genkey >"$T/wkb" || fail "wg genkey"
A wireguard-go -f "wb$$a" >"$T/wireguard-a.log" 2>&1 &
_pids+=($!)
B wireguard-go -f "wb$$b" >"$T/wireguard-b.log" 2>&1 &
_pids+=($!)
for _ in $(seq 50); do A ip link show "wb$$a" >/dev/null 2>&1 && B ip link show "wb$$b" >/dev/null 2>&1 && break; sleep 0.1; done
A wg set "wb$$a" private-key "$T/wka" listen-port 51820 peer "$(wg pubkey <"$T/wkb")" \
	allowed-ips 192.168.92.2/32 endpoint 10.90.0.2:51821 &&
	B wg set "wb$$b" private-key "$T/wkb" listen-port 51821 peer "$(wg pubkey <"$T/wka")" \
		allowed-ips 192.168.92.1/32 endpoint 10.90.0.1:51820 ||
	fail "cannot set up wireguard-go"
A ip addr add 192.168.92.1/24 dev "wb$$a" && A ip link set "wb$$a" up &&
	B ip addr add 192.168.92.2/24 dev "wb$$b" && B ip link set "wb$$b" up || fail "wireguard-go's devices"

# metac: a daemon on each host
for h in A B; do
	ns=$NA; [ $h = B ] && ns=$NB
	ip=10.90.0.1; [ $h = B ] && ip=10.90.0.2
	nsenter --net="/run/netns/$ns" "$METAC" daemon --dir "$T/$h" --listen "$ip:901" \
		--admin-socket "$T/$h.sock" >"$T/$h.log" 2>&1 &
	_pids+=($!)
	for _ in $(seq 100); do "$METAC" node --admin-socket "$T/$h.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done
REF=$("$METAC" net export --admin-socket "$T/A.sock" newlocal:mcb) &&
	"$METAC" net bind --admin-socket "$T/B.sock" newlocal:mcb "$REF" &&
	addr metac mcb 192.168.93.1 192.168.93.2 || fail "cannot set up metac's tunnel"

NAMES=(veth kernel-vxlan wireguard-go metac)
declare -A TO=([veth]=10.90.0.1 [kernel-vxlan]=192.168.91.1 [wireguard-go]=192.168.92.1
	[metac]=192.168.93.1)
for n in "${NAMES[@]}"; do
	B ping -c 3 -W 2 -i 0.2 "${TO[$n]}" >/dev/null || fail "$n does not carry a ping"
done

# iperf3 B -> A over a tunnel: Gbit/s, or BROKEN.
gbits() { # gbits NAME STREAMS
	local out
	A iperf3 -s -1 -B "${TO[$1]}" >/dev/null 2>&1 &
	local srv=$!
	sleep 0.3
	if out=$(timeout "$TMO" ip netns exec "$NB" iperf3 -c "${TO[$1]}" -t "$SECS" -P "$2" -J 2>&1); then
		echo "$out" | tr -d ' \t\n' | sed -n 's/.*"sum_received":{[^}]*"bits_per_second":\([0-9.e+]*\).*/\1/p' |
			awk '{ printf "%.2f", $1 / 1e9 }'
	else
		broken "$1: iperf3 -P $2 failed"
		echo BROKEN
	fi
	kill "$srv" 2>/dev/null
	wait "$srv" 2>/dev/null
}

rtt() { # the average ping round trip over a tunnel, ms
	B ping -c "$PINGS" -i 0.05 -q "${TO[$1]}" 2>/dev/null |
		sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p'
}

declare -A G1 G4 RTT
for n in "${NAMES[@]}"; do
	G1[$n]=$(gbits "$n" 1)
	G4[$n]=$(gbits "$n" 4)
	RTT[$n]=$(rtt "$n")
	[ -n "${RTT[$n]}" ] || { broken "$n: no ping answered"; RTT[$n]=BROKEN; }
	row "$n 1 stream" "${G1[$n]}" Gbit/s "" ""
	row "$n 4 streams" "${G4[$n]}" Gbit/s "" ""
	row "$n ping" "${RTT[$n]}" ms "" ""
done

echo
print_table 24 "" "" 6
echo
echo "   ratios (goal):"
ratio "metac / wireguard-go, 1 stream" "metac 1 stream" "wireguard-go 1 stream" "(goal >= 5)"
ratio "metac / wireguard-go, 4 streams" "metac 4 streams" "wireguard-go 4 streams" "(goal >= 5)"
ratio "metac / kernel vxlan, 1 stream" "metac 1 stream" "kernel-vxlan 1 stream" ""
ratio "metac / veth, 1 stream" "metac 1 stream" "veth 1 stream" ""
printf '   %-34s %8s ms  (goal <= 0.3; wireguard-go %s ms)\n' "metac ping round trip" \
	"${RTT[metac]}" "${RTT[wireguard-go]}"
"$METAC" net list --admin-socket "$T/B.sock" | sed 's/^/   /'
finish
