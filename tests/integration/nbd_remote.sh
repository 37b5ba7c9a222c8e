# A disk exported on host A (`metac file export`) is used on host B
# through `metac block serve REF` (a plain NBD endpoint relaying over
# the encrypted transport) by clients nobody here wrote: nbdinfo,
# nbdcopy, qemu-img and qemu-io (also with --direct, the endpoint's own
# connection to A). Also `metac block copy` between refs
# and local files, a read-only ref, and A killed mid-copy: the client
# gets an error; after A restarts, the copy completes with the right
# data.
. "$(dirname "$0")/lib.bash"

for t in nbdinfo nbdcopy qemu-img qemu-io; do
	command -v $t >/dev/null || fail "$t is missing (contrib/install-deps.sh installs it)"
done

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

mkdir -p "$T/a"
head -c 2G /dev/urandom >"$T/a/disk"
truncate -s 2G "$T/a/empty"
truncate -s 64M "$T/a/sparse"
head -c 3M /dev/urandom | dd of="$T/a/sparse" bs=1M seek=8 conv=notrunc 2>/dev/null
SUM=$(b2sum <"$T/a/disk")

DISK=$(m A file export --persistent "local:$T/a/disk") || fail "file export of the disk"
EMPTY=$(m A file export --persistent "local:$T/a/empty") || fail "file export of the empty disk"
SPARSE=$(m A file export "local:$T/a/sparse") || fail "file export of the sparse disk"
RO=$(m A file export --read-only "local:$T/a/sparse") || fail "file export --read-only"

serve() { # serve NAME REF [OPTS...]: block serve on $T/NAME.sock
	local name=$1 ref=$2
	shift 2
	bg_start "serve_$name" "$T/B.m" block serve --listen "unix:$T/$name.sock" "$@" "$ref"
	wait_socket "$T/$name.sock"
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

serve disk "$DISK"
serve empty "$EMPTY"
serve sparse "$SPARSE"
serve ro "$RO"

# --- what nbdinfo sees ---
nbdinfo --json "$(uri disk)" >"$T/info" || fail "nbdinfo: $(cat "$T/info")"
grep -q '"export-size": 2147483648' "$T/info" || fail "nbdinfo: wrong size: $(cat "$T/info")"
grep -q '"is_read_only": false' "$T/info" || fail "nbdinfo: the disk is read-only"
for f in can_multi_conn can_flush can_fua can_trim can_zero; do
	grep -q "\"$f\": true" "$T/info" || fail "nbdinfo: $f is not true"
done
nbdinfo --json "$(uri ro)" | grep -q '"is_read_only": true' || fail "the read-only ref is writable"

# --- BLOCK_STATUS across the network: the sparse file's holes ---
nbdinfo --map "$(uri sparse)" >"$T/map" || fail "nbdinfo --map"
grep -Eq '^ +0 +8388608 +3 +hole,zero' "$T/map" || fail "map: no hole at 0: $(cat "$T/map")"
grep -Eq '^ +8388608 +3145728 +0 +data' "$T/map" || fail "map: no data at 8M: $(cat "$T/map")"
grep -Eq '^ +11534336 +55574528 +3 +hole,zero' "$T/map" || fail "map: no hole at the end: $(cat "$T/map")"

# --- nbdcopy: 2 GiB out and back ---
nbdcopy "$(uri disk)" "$T/out" || fail "nbdcopy out"
[ "$(b2sum <"$T/out")" = "$SUM" ] || fail "nbdcopy out: the checksums differ"
nbdcopy "$T/out" "$(uri empty)" || fail "nbdcopy back"
rm -f "$T/out"
[ "$(b2sum <"$T/a/empty")" = "$SUM" ] || fail "nbdcopy back: A's file differs"

# --- qemu-img and qemu-io ---
qemu-img compare -f raw -F raw "nbd:unix:$T/disk.sock" "nbd:unix:$T/empty.sock" ||
	fail "qemu-img compare of the two disks"
qemu-img convert -f raw -O qcow2 "nbd:unix:$T/sparse.sock" "$T/sparse.qcow2" ||
	fail "qemu-img convert"
qemu-img compare -f qcow2 -F raw "$T/sparse.qcow2" "nbd:unix:$T/sparse.sock" ||
	fail "qemu-img compare after convert"
qemu-io -f raw -c 'write -P 0xa5 100M 3M' -c 'write -P 0x5a 4095 8193' \
	-c 'read -P 0xa5 100M 3M' -c 'read -P 0x5a 4095 8193' -c flush \
	"nbd:unix:$T/empty.sock" >"$T/qio" 2>&1 || fail "qemu-io: $(cat "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
cmp -s <(dd if="$T/a/empty" bs=1M skip=100 count=3 2>/dev/null) \
	<(head -c 3M /dev/zero | tr '\0' '\245') || fail "qemu-io's write did not reach A's file"

# --- TRIM and WRITE_ZEROES punch holes in A's sparse file ---
blocks() { stat -c %b "$T/a/sparse"; }
before=$(blocks)
qemu-io -f raw -c 'discard 8M 1M' -c 'write -z -u 9M 1M' -c 'read -P 0 8M 2M' \
	"nbd:unix:$T/sparse.sock" >"$T/qio" 2>&1 || fail "qemu-io discard: $(cat "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
after=$(blocks)
[ $((before - after)) -ge 4000 ] || fail "TRIM/WRITE_ZEROES left the blocks: $before -> $after"
nbdinfo --map "$(uri sparse)" | grep -Eq '^ +0 +10485760 +3 +hole,zero' ||
	fail "map after trim: $(nbdinfo --map "$(uri sparse)")"

# --- the read-only ref refuses writes ---
qemu-io -f raw -c 'write -P 1 0 4096' "nbd:unix:$T/ro.sock" >"$T/qio" 2>&1 &&
	grep -q "wrote" "$T/qio" && fail "a write through the read-only ref succeeded"
nbdcopy "$T/a/sparse" "$(uri ro)" 2>/dev/null && fail "nbdcopy into the read-only ref succeeded"

# --- metac block copy: ref -> file, file -> ref, in a pipe and on a terminal ---
m B block copy "$DISK" "local:$T/copy" 2>"$T/copy.err" || fail "block copy: $(cat "$T/copy.err")"
[ ! -s "$T/copy.err" ] || fail "block copy in a pipe printed: $(cat "$T/copy.err")"
[ "$(b2sum <"$T/copy")" = "$SUM" ] || fail "block copy ref -> file: the checksums differ"
truncate -s 0 "$T/a/empty" && truncate -s 2G "$T/a/empty"
script -qec "$T/B.m block copy 'local:$T/copy' '$EMPTY'" /dev/null >"$T/tty.out" 2>&1 ||
	fail "block copy on a terminal: $(cat "$T/tty.out")"
tr '\r' '\n' <"$T/tty.out" | grep -q '2.0 GiB of 2.0 GiB (100%)' ||
	fail "no progress on a terminal: $(tr '\r' '\n' <"$T/tty.out" | tail -n 3)"
rm -f "$T/copy"
[ "$(b2sum <"$T/a/empty")" = "$SUM" ] || fail "block copy file -> ref: A's file differs"
m B block copy "$SPARSE" "local:$T/sparse.copy" || fail "block copy of the sparse disk"
cmp -s "$T/a/sparse" "$T/sparse.copy" || fail "block copy of the sparse disk differs"
[ "$(stat -c %b "$T/sparse.copy")" -lt 8192 ] || fail "block copy did not keep the holes"
expect_fail "read-only" "$T/B.m" block copy "local:$T/sparse.copy" "$RO"
expect_fail "smaller" "$T/B.m" block copy "$DISK" "$SPARSE"

# --- --direct: the endpoint talks to A itself (from B's network) ---
bg_start serve_direct nsenter --net="/run/netns/$NS_PREFIX-b" "$T/B.m" block serve --direct \
	--listen "unix:$T/direct.sock" "$SPARSE"
wait_socket "$T/direct.sock"
nbdcopy "$(uri direct)" "$T/direct.copy" || fail "nbdcopy through block serve --direct"
cmp -s "$T/direct.copy" "$T/a/sparse" || fail "block serve --direct: the bytes differ"

# --- plain NBD only where nobody else can reach it ---
expect_fail "loopback or unix" "$T/B.m" block serve --listen 10.77.0.2:10809 "$DISK"

# --- A dies mid-copy: an error, not a hang; after a restart, all is well ---
(nbdcopy "$(uri disk)" "$T/out" 2>"$T/kill.err"; echo $? >"$T/kill.rc") &
sleep 1
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null
for _ in $(seq 300); do [ -e "$T/kill.rc" ] && break; sleep 0.1; done
[ -e "$T/kill.rc" ] || fail "nbdcopy hung after the serving node died"
[ "$(cat "$T/kill.rc")" != 0 ] || fail "nbdcopy succeeded although the serving node died"
daemon_start A a 10.77.0.1:901
nbdcopy "$(uri disk)" "$T/out" || fail "nbdcopy after the serving node restarted"
[ "$(b2sum <"$T/out")" = "$SUM" ] || fail "after the restart: the checksums differ"

grep -q "${DISK##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
