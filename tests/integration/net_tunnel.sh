# Two hosts (network namespaces joined by a veth pair) share an Ethernet
# segment: A exports newlocal:tun0, B binds newlocal:tun0 to the ref, and
# the two tun0 devices get addresses. Checked: ping both ways; ARP and
# IPv6 neighbour discovery across the tunnel; a TCP transfer arrives
# whole; a frame of the full MTU crosses (and the MTU leaves room for the
# encapsulation: no black hole); the tunnel is encrypted on the wire; a
# replayed, a forged and a misaddressed datagram are dropped and counted
# while the tunnel goes on; net list shows counters; each end's engine
# is a confined process, and one that dies (at either end) makes the
# binding bind again, with new keys; unbind takes the device away.
. "$(dirname "$0")/lib.bash"
# Engines are killed with SIGSEGV below: a sanitized build dies of it.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"

# Keys change every 2 s here (two minutes by default): all that follows
# runs across many changes of keys.
export METAC_NET_REKEY_SECONDS=2

command -v ping >/dev/null || fail "ping is missing (contrib/install-deps.sh installs iputils-ping)"
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
${CC:-gcc} -O2 -Wall -o "$T/udp_replay" "$(dirname "$0")/udp_replay.c" || fail "cannot build udp_replay"

REF=$(m A net export newlocal:tun0) || fail "net export"
in_host a ip link show tun0 >/dev/null || fail "net export did not make tun0 on A"
m B net bind newlocal:tun0 "$REF" || fail "net bind"
in_host a ip addr add 192.168.77.1/24 dev tun0
in_host a ip addr add fd78::1/64 dev tun0 nodad
in_host a ip link set tun0 up
in_host b ip addr add 192.168.77.2/24 dev tun0
in_host b ip addr add fd78::2/64 dev tun0 nodad
in_host b ip link set tun0 up

# --- ping, ARP, neighbour discovery ---
in_host b ping -c 3 -i 0.2 -W 2 192.168.77.1 >"$T/ping" || fail "ping B -> A: $(cat "$T/ping")"
in_host a ping -c 3 -i 0.2 -W 2 192.168.77.2 >"$T/ping" || fail "ping A -> B: $(cat "$T/ping")"
mac_b=$(in_host b cat /sys/class/net/tun0/address)
in_host a ip neigh show dev tun0 | grep -q "192.168.77.2 lladdr $mac_b" ||
	fail "A did not learn B's MAC by ARP: $(in_host a ip neigh show dev tun0)"
in_host b ping -6 -c 3 -i 0.2 -W 2 fd78::1 >"$T/ping" || fail "ping -6 B -> A: $(cat "$T/ping")"
in_host a ip -6 neigh show dev tun0 | grep -q "fd78::2 lladdr $mac_b" ||
	fail "A did not learn B's MAC by neighbour discovery: $(in_host a ip -6 neigh show dev tun0)"

# --- the MTU: full-size frames cross, and fit the underlay ---
mtu=$(in_host b cat /sys/class/net/tun0/mtu)
[ "$(in_host a cat /sys/class/net/tun0/mtu)" = "$mtu" ] || fail "the two ends have different MTUs"
[ "$mtu" -le $((1500 - 82)) ] || fail "MTU $mtu leaves no room for the encapsulation"
in_host b ping -M do -s $((mtu - 28)) -c 2 -W 2 192.168.77.1 >"$T/ping" ||
	fail "a full-size frame ($mtu) does not cross: $(cat "$T/ping")"
in_host b ping -6 -M do -s $((mtu - 48)) -c 2 -W 2 fd78::1 >"$T/ping" ||
	fail "a full-size IPv6 frame does not cross: $(cat "$T/ping")"

# --- TCP: 30 MB arrive whole; nothing of them is readable on the wire ---
head -c 30000000 /dev/urandom >"$T/data"
printf 'METAC-PLAINTEXT-MARKER%.0s' $(seq 2000) >>"$T/data"
in_host a socat -u TCP-LISTEN:5001,reuseaddr OPEN:"$T/got",creat,trunc &
_pids+=($!)
sleep 0.3
in_host b timeout 10 tcpdump -i "v$$b" -w "$T/wire.pcap" -U udp 2>/dev/null &
dump=$!
sleep 0.5
in_host b timeout 60 socat -u OPEN:"$T/data" TCP:192.168.77.1:5001 || fail "TCP transfer through the tunnel"
for _ in $(seq 100); do cmp -s "$T/data" "$T/got" && break; sleep 0.1; done
cmp -s "$T/data" "$T/got" || fail "the TCP transfer arrived different"
kill "$dump" 2>/dev/null
wait "$dump" 2>/dev/null
[ -s "$T/wire.pcap" ] || fail "tcpdump saw nothing on the underlay"
grep -q "METAC-PLAINTEXT-MARKER" "$T/wire.pcap" && fail "the tunnel carries plaintext"

# --- hostile datagrams: dropped, counted, harmless ---
counter() { # counter HOST NAME: a counter of tun0 from net list --json
	m "$1" net list --json | tr ',{}' '\n\n\n' | sed -n "s/^ *\"$2\": //p" | head -n 1
}
port_a=$(m B net list --json | sed -n 's/.*"peer": "[^"]*:\([0-9]*\)".*/\1/p' | head -n 1)
[ -n "$port_a" ] || fail "net list on B shows no peer: $(m B net list --json)"
for what in replay:rx_replay forge:rx_auth index:rx_index; do
	mode=${what%%:*} name=${what#*:}
	before=$(counter A "$name")
	(sleep 0.5; in_host b ping -c 2 -i 0.2 192.168.77.1 >/dev/null) &
	pinger=$!
	in_host a "$T/udp_replay" "v$$a" "$port_a" "$mode" 3 || fail "udp_replay $mode"
	wait "$pinger"
	sleep 0.3
	after=$(counter A "$name")
	[ "$after" -ge $((before + 3)) ] || fail "$mode: $name went from $before to $after"
done
in_host b ping -c 2 -W 2 192.168.77.1 >/dev/null || fail "the tunnel broke after hostile datagrams"
m B net list >"$T/list" || fail "net list"
grep -q "^tun0 .*encrypted .* up" "$T/list" || fail "net list: $(cat "$T/list")"
[ "$(counter B tx_bytes)" -gt 30000000 ] || fail "net list counts no bytes: $(m B net list --json)"
[ "$(counter A rekeys)" -ge 2 ] && [ "$(counter B rekeys)" -ge 2 ] ||
	fail "the keys did not change: $(m A net list --json) $(m B net list --json)"
[ "$(counter A rx_index)" -le 3 ] && [ "$(counter B rx_index)" = 0 ] ||
	fail "packets for keys that were gone: $(m A net list --json) $(m B net list --json)"
[ "$(counter A rx_bad)" = 0 ] && [ "$(counter B rx_bad)" = 0 ] ||
	fail "packets were found bad: $(m A net list --json) $(m B net list --json)"

# --- each engine: a confined process, started again when it dies ---
epid() { pgrep -P "$1" -f "net _tunnel" | head -n 1; }
# pings_through: B reaches A through the tunnel within 30 s.
pings_through() {
	for _ in $(seq 30); do
		in_host b ping -c 1 -W 1 192.168.77.1 >/dev/null && return 0
	done
	fail "$1: the tunnel does not carry pings"
}
for n in A B; do
	eval "dpid=\$PID_$n"
	e=$(epid "$dpid")
	[ -n "$e" ] || fail "no tunnel engine process under $n's daemon"
	confined_nobody "$e" "$n's tunnel engine"
done
# An engine killed: its end stops, and the binding binds again with new
# keys (never the old ones again: their nonces died with the engine).
# A's (the exported end: B's next ping or rekey fails), then B's own.
for n in A B; do
	eval "dpid=\$PID_$n"
	e=$(epid "$dpid")
	kill -SEGV "$e"
	for _ in $(seq 50); do grep -q "engine (pid $e) died of Segmentation fault; the tunnel stops" \
		"$T/$n.log" && break; sleep 0.1; done
	grep -q "engine (pid $e) died of Segmentation fault; the tunnel stops" "$T/$n.log" ||
		fail "$n did not stop the tunnel of its dead engine: $(tail -3 "$T/$n.log")"
	pings_through "after $n's engine died"
	[ "$(epid "$dpid")" != "$e" ] || fail "$n has no new engine"
done
[ "$(grep -c "trying again" "$T/B.log")" -ge 2 ] || fail "B did not bind again: $(tail -5 "$T/B.log")"
kill -0 "$PID_A" && kill -0 "$PID_B" || fail "a daemon died with its tunnel engine"
echo "engines: uid 65534, CapEff 0, every thread Seccomp 2, empty root; one killed" \
	"(either end) stops its tunnel and the binding binds again with new keys"

m A net interfaces >"$T/ifs" || fail "net interfaces"
grep -q "^tun0 *tun .* up" "$T/ifs" && grep -q "^v$$a *veth" "$T/ifs" ||
	fail "net interfaces: $(cat "$T/ifs")"

# --- errors ---
expect_fail "bound already" "$T/B.m" net bind newlocal:tun0 "$REF"
expect_fail "not a TAP\|no interface" "$T/B.m" net bind local:lo "$REF"
"$T/B.m" net bind newlocal:tun1 vxlan://10.77.0.1/5 2>"$T/err"
[ $? = 2 ] && grep -q -- "--plain" "$T/err" || fail "a plain peer without --plain: $(cat "$T/err")"
m A ref revoke "$REF" || fail "ref revoke"
expect_fail "no such ref" "$T/B.m" net bind newlocal:tun2 "$REF"
in_host b ip link show tun2 >/dev/null 2>&1 && fail "a failed bind left tun2 behind"

# --- what a ref to a device lets its holder do: name it, rename it, destroy it ---
XREF=$(m A net export newlocal:xtra0) || fail "net export newlocal:xtra0"
[ "$(m B net show "$XREF")" = xtra0 ] || fail "net show: $(m B net show "$XREF" 2>&1)"
m B net rename "$XREF" xtra1 || fail "net rename"
in_host a ip link show xtra1 >/dev/null || fail "net rename did not rename A's device"
[ "$(m B net show "$XREF")" = xtra1 ] || fail "net show after rename"
expect_fail "refused" "$T/B.m" net rename "$XREF" "a-name-far-too-long"
m B net destroy "$XREF" || fail "net destroy"
in_host a ip link show xtra1 >/dev/null 2>&1 && fail "net destroy left A's device"

# --- unbind takes away what bind made ---
m B net unbind tun0 || fail "net unbind"
in_host b ip link show tun0 >/dev/null 2>&1 && fail "unbind left tun0 on B"
expect_fail "not bound" "$T/B.m" net unbind tun0
grep -q "${REF##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
