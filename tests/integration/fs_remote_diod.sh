# A folder exported on host A, reached from host B through the encrypted
# transport: `metac fs serve9p REF` on B relays local 9p connections to
# A's Filesystem, and diod's own clients (software nobody here wrote) list,
# read, write and hammer it. A read-only export refuses writes; a revoked
# ref is refused.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
command -v diodls >/dev/null || fail "diod's clients are missing (contrib/install-deps.sh installs diod)"

EX=$T/export
mkdir -p "$EX/sub" "$EX/many"
echo hello >"$EX/a.txt"
head -c 5000000 /dev/urandom >"$EX/sub/big"
head -c 1048576 /dev/zero >"$EX/zero"
: >"$EX/null"
for i in $(seq 300); do : >"$EX/many/f$i"; done
ln -s /etc/passwd "$EX/evil"

REF=$(m A fs export "local:$EX") || fail "fs export failed"
ROREF=$(m A fs export --read-only "local:$EX") || fail "fs export --read-only failed"

# relay NAME REF: serve9p on host B's loopback; its port in PORT_NAME.
relay() {
	local port=$((20000 + RANDOM % 20000))
	ip netns exec "$NS_PREFIX-b" "$T/B.m" fs serve9p --listen "127.0.0.1:$port" "$2" \
		2>"$T/$1.log" &
	_pids+=($!)
	eval "PORT_$1=$port"
	for _ in $(seq 100); do
		ip netns exec "$NS_PREFIX-b" ss -Hltn "sport = :$port" | grep -q . && return 0
		sleep 0.05
	done
	fail "serve9p relay $1 did not listen: $(cat "$T/$1.log")"
}
inb() { ip netns exec "$NS_PREFIX-b" timeout 60 "$@"; }

relay rw "$REF"
relay ro "$ROREF"
S="127.0.0.1:$PORT_rw"

inb diodls -s "$S" -a x / >"$T/ls" || fail "diodls failed"
for n in a.txt sub many evil zero null; do grep -qx "$n" "$T/ls" || fail "listing lacks $n"; done
inb diodls -s "$S" -a x /many | grep -c '^f' | grep -qx 300 || fail "a directory of 300 was not listed whole"
[ "$(inb diodcat -s "$S" -a x a.txt)" = hello ] || fail "diodcat of a small file"
for ms in 65536 1048576; do
	inb diodcat -s "$S" -a x -m $ms sub/big | cmp -s - "$EX/sub/big" ||
		fail "a 5 MB file read at msize $ms differs"
done
# Nothing outside the export is reachable from B.
! inb diodcat -s "$S" -a x evil >"$T/evil" 2>/dev/null || fail "a symlink was followed"
! inb diodcat -s "$S" -a x ../../etc/passwd >>"$T/evil" 2>/dev/null || fail "'..' left the export"
! grep -q root: "$T/evil" || fail "bytes from outside the export came through"

# Reads and writes from 8 connections at once, then getattrs.
inb diodload -s "$S" -r 2 -n 8 -m 1048576 >"$T/load" 2>&1 || fail "diodload: $(cat "$T/load")"
grep -q "ops/s" "$T/load" || fail "diodload printed no rate"
inb diodload -s "$S" -r 1 -n 8 -g >"$T/load" 2>&1 || fail "diodload -g: $(cat "$T/load")"
[ "$(inb diodcat -s "$S" -a x a.txt)" = hello ] || fail "the relay stopped serving after the load"

# Read-only: reading works, diodload's writes are refused, nothing changes.
before=$(stat -c %s "$EX/null")
[ "$(inb diodcat -s "127.0.0.1:$PORT_ro" -a x a.txt)" = hello ] || fail "read-only export unreadable"
# (diodload reports the error but exits 0.)
inb diodload -s "127.0.0.1:$PORT_ro" -r 1 -n 1 >"$T/load" 2>&1
grep -q "open null: Read-only file system" "$T/load" || fail "a read-only export took writes: $(cat "$T/load")"
[ "$(stat -c %s "$EX/null")" = "$before" ] || fail "the read-only export changed"

# A revoked ref is refused when relaying starts.
m A ref revoke "$ROREF" || fail "revoke"
expect_fail "no such ref" ip netns exec "$NS_PREFIX-b" "$T/B.m" fs serve9p \
	--listen 127.0.0.1:1 "$ROREF"
# serve9p speaks plain 9p: not on a network address without --insecure.
expect_fail "loopback or unix" "$T/B.m" fs serve9p --listen 10.77.0.2:5640 "$REF"
grep -q "${REF##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
