# Containers with resources of other nodes, on two hosts (network
# namespaces joined by a veth pair): a folder exported by A mounted in a
# container on B (a file written there appears on A); two containers, one
# on each host, on one Ethernet segment made of metac tunnels (A's two
# exported TAP devices bridged on A) ping each other; `metac run
# --node=REF` on A runs a container on B whose root is A's folder, with
# stdio and the exit code coming back, and the ref made for it revoked
# after.
. "$(dirname "$0")/lib.bash"

command -v ping >/dev/null || fail "ping is missing (contrib/install-deps.sh installs iputils-ping)"
netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
R=$T/root
busybox_root "$R"
mkdir -p "$T/share"
mounts_under_t | sort >"$T/mounts.ok"

# --- a remote folder inside a container ---
FREF=$(m A fs export local:"$T/share") || fail "fs export"
out=$(timeout 60 "$T/B.m" run --mount=/=local:"$R" --mount=/data="$FREF" \
	sh -c 'echo written-in-B >/data/fromB && ls /data && cat /data/fromB') ||
	fail "a container on B with A's folder: $out"
[ "$(cat "$T/share/fromB" 2>/dev/null)" = written-in-B ] || fail "the file written in the container is not in A's folder"
echo "$out" | grep -q '^written-in-B$' || fail "reading back inside: $out"

# --- two containers on one segment, across hosts ---
T1=$(m A net export newlocal:ct1) || fail "net export ct1"
T2=$(m A net export newlocal:ct2) || fail "net export ct2"
in_host a ip link add brc type bridge || fail "bridge"
for d in ct1 ct2 brc; do in_host a ip link set "$d" up; done
in_host a ip link set ct1 master brc
in_host a ip link set ct2 master brc
bg_start pingA timeout 60 "$T/A.m" run --mount=/=local:"$R" --hostname ca --net="$T1",addr=10.9.0.1/24 \
	sh -c 'for i in $(seq 80); do ping -c 1 -W 1 10.9.0.2 >/dev/null && echo reached-B && sleep 6 && exit 0; sleep 0.25; done; exit 1'
out=$(timeout 60 "$T/B.m" run --mount=/=local:"$R" --hostname cb --net="$T2",addr=10.9.0.2/24,gw=10.9.0.1 \
	sh -c 'for i in $(seq 80); do ping -c 1 -W 1 10.9.0.1 >/dev/null && break; sleep 0.25; done
	       ping -c 3 -W 2 10.9.0.1 && ip route | grep default; sleep 2') ||
	fail "the container on B cannot ping the one on A: $out"
echo "$out" | grep -q 'default via 10.9.0.1' || fail "the gateway is not the default route: $out"
wait "$PID_pingA" || fail "the container on A cannot ping the one on B: $(cat "$T/pingA.log")"
grep -q reached-B "$T/pingA.log" || fail "the container on A: $(cat "$T/pingA.log")"
# The containers' interfaces went with them: nothing is left on B.
in_host b ip link show | grep -q eth0 && fail "a container's interface is left on B"

# --- a container on B, started from A, its root A's folder ---
LREF=$(m B compute export) || fail "compute export"
out=$(timeout 120 "$T/A.m" run --node="$LREF" --mount=/=local:"$R" --hostname remote1 \
	sh -c 'hostname; echo from-B >/tmp/mark; cat; exit 42' <<<"stdin-from-A")
rc=$?
[ $rc = 42 ] || fail "the remote run gave $rc, not 42 ($out)"
[ "$out" = "remote1
stdin-from-A" ] || fail "the remote run's output: $out"
[ "$(cat "$R/tmp/mark" 2>/dev/null)" = from-B ] || fail "the remote container did not write into A's folder"
m A ref list | grep -q "$R" && fail "the ref made for the remote run is still there: $(m A ref list)"

# --- what is left: nothing ---
no_leftovers "after the runs"
in_host b ip link show | grep -q eth0 && fail "an interface is left on B"
echo "compute_remote: all checked"
exit 0
