# A tunnel outlives what happens to its ends: A exports newlocal:tun0
# and B binds to it, both --persistent. Then
# - B's underlay address changes (it roams): traffic goes on, and A
#   sends to B's new address;
# - A is killed (-9) and started again; later B is stopped (SIGTERM) and
#   started again, then B killed (-9) and A stopped (SIGTERM), each
#   restarted: every time the tunnel comes back by itself, the devices
#   keeping their addresses.
. "$(dirname "$0")/lib.bash"

command -v ping >/dev/null || fail "ping is missing (contrib/install-deps.sh installs iputils-ping)"
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

REF=$(m A net export --persistent newlocal:tun0) || fail "net export"
m B net bind --persistent newlocal:tun0 "$REF" || fail "net bind"
in_host a ip addr add 192.168.77.1/24 dev tun0
in_host a ip link set tun0 up
in_host b ip addr add 192.168.77.2/24 dev tun0
in_host b ip link set tun0 up

# works_within SECONDS WHAT: pings B -> A until one answers.
works_within() {
	for _ in $(seq $(($1 * 2))); do
		in_host b ping -c 1 -W 1 192.168.77.1 >/dev/null 2>&1 &&
			in_host a ping -c 1 -W 1 192.168.77.2 >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	fail "the tunnel did not come back within $1 s after $2 ($(m B net list 2>&1 | tail -n 1))"
}
works_within 5 "binding"

# --- B roams to another address ---
in_host b ip addr del 10.77.0.2/24 dev "v$$b"
in_host b ip addr add 10.77.0.3/24 dev "v$$b"
works_within 5 "B's address changed"
m A net list | grep -q "10.77.0.3" || fail "A does not send to B's new address: $(m A net list)"
# Its control connection went with the old address: B binds again, on
# the new one, and the tunnel stays up through it.
sleep 22
works_within 10 "B bound again from its new address"

restart() { # restart NAME HOST LISTEN SIGNAL
	local pid_var="PID_$1"
	kill "-$4" "${!pid_var}"
	wait "${!pid_var}" 2>/dev/null
	daemon_start "$1" "$2" "$3"
}
restart A a 10.77.0.1:901 KILL
works_within 30 "A was killed and restarted"
restart B b 10.77.0.3:901 TERM
works_within 30 "B was stopped and restarted"
restart B b 10.77.0.3:901 KILL
works_within 30 "B was killed and restarted"
restart A a 10.77.0.1:901 TERM
works_within 30 "A was stopped and restarted"
in_host a ip addr show dev tun0 | grep -q 192.168.77.1/24 || fail "A's tun0 lost its address"
m B net list | grep -q "^tun0 .*yes .* up" || fail "net list after the restarts: $(m B net list)"
exit 0
