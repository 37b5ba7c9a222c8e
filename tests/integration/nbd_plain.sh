# metac's NBD server on its own (`metac block serve local:PATH`) against
# clients nobody here wrote: nbdinfo shows the right size and flags and
# the holes of a sparse file (BLOCK_STATUS); nbdcopy copies 2 GiB out and
# back with identical checksums over several connections; qemu-img
# converts and compares; qemu-io writes and verifies patterns; TRIM and
# WRITE_ZEROES punch holes in the backing file; a read-only export
# refuses writes; a block device (a loop device) is served with its own
# size and sector size; TCP listens on loopback only unless --insecure;
# `metac block copy` between local files keeps holes.
. "$(dirname "$0")/lib.bash"

for t in nbdinfo nbdcopy qemu-img qemu-io; do
	command -v $t >/dev/null || fail "$t is missing (contrib/install-deps.sh installs it)"
done

serve() { # serve NAME PATH [OPTS...]: block serve on $T/NAME.sock
	local name=$1 path=$2
	shift 2
	bg_start "serve_$name" "$METAC" block serve --listen "unix:$T/$name.sock" "$@" "local:$path"
	wait_socket "$T/$name.sock"
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

head -c 2G /dev/urandom >"$T/disk"
truncate -s 2G "$T/empty"
truncate -s 64M "$T/sparse"
head -c 3M /dev/urandom | dd of="$T/sparse" bs=1M seek=8 conv=notrunc 2>/dev/null
SUM=$(b2sum <"$T/disk")

serve disk "$T/disk"
serve empty "$T/empty"
serve sparse "$T/sparse"
serve ro "$T/sparse" --read-only

# --- nbdinfo: size, flags, list, map ---
nbdinfo --json "$(uri disk)" >"$T/info" || fail "nbdinfo: $(cat "$T/info")"
grep -q '"export-size": 2147483648' "$T/info" || fail "nbdinfo: wrong size: $(cat "$T/info")"
grep -q '"is_read_only": false' "$T/info" || fail "nbdinfo: the disk is read-only"
for f in can_multi_conn can_flush can_fua can_trim can_zero can_fast_zero can_cache; do
	grep -q "\"$f\": true" "$T/info" || fail "nbdinfo: $f is not true"
done
grep -q '"block_size_maximum": 33554432' "$T/info" || fail "nbdinfo: block sizes: $(cat "$T/info")"
nbdinfo --list "$(uri disk)" | grep -q 'export="disk"' || fail "nbdinfo --list does not list the export"
nbdinfo --json "$(uri ro)" >"$T/info"
grep -q '"is_read_only": true' "$T/info" || fail "the --read-only export is writable"
grep -q '"can_trim": true' "$T/info" && fail "a read-only export offers TRIM"
nbdinfo --map "$(uri sparse)" >"$T/map" || fail "nbdinfo --map"
grep -Eq '^ +0 +8388608 +3 +hole,zero' "$T/map" || fail "map: no hole at 0: $(cat "$T/map")"
grep -Eq '^ +8388608 +3145728 +0 +data' "$T/map" || fail "map: no data at 8M: $(cat "$T/map")"
grep -Eq '^ +11534336 +55574528 +3 +hole,zero' "$T/map" || fail "map: no hole at the end: $(cat "$T/map")"

# --- nbdcopy: 2 GiB out and back (four connections, many requests each) ---
nbdcopy --connections=4 --requests=64 "$(uri disk)" "$T/out" || fail "nbdcopy out"
[ "$(b2sum <"$T/out")" = "$SUM" ] || fail "nbdcopy out: the checksums differ"
nbdcopy --connections=4 "$T/out" "$(uri empty)" || fail "nbdcopy back"
rm -f "$T/out"
[ "$(b2sum <"$T/empty")" = "$SUM" ] || fail "nbdcopy back: the file differs"

# --- qemu-img and qemu-io ---
qemu-img convert -f raw -O qcow2 "nbd:unix:$T/sparse.sock" "$T/sparse.qcow2" || fail "qemu-img convert"
qemu-img compare -f qcow2 -F raw "$T/sparse.qcow2" "nbd:unix:$T/sparse.sock" ||
	fail "qemu-img compare after convert"
qemu-img convert -n -f qcow2 -O raw "$T/sparse.qcow2" "nbd:unix:$T/empty.sock" ||
	fail "qemu-img convert into the export"
cmp -s -n 67108864 "$T/sparse" "$T/empty" || fail "qemu-img convert into the export: the bytes differ"
qemu-io -f raw -c 'write -P 0xa5 100M 3M' -c 'write -P 0x5a 4095 8193' -c 'write -P 0x11 2047M 1M' \
	-c 'read -P 0xa5 100M 3M' -c 'read -P 0x5a 4095 8193' -c 'read -P 0x11 2047M 1M' -c flush \
	"nbd:unix:$T/empty.sock" >"$T/qio" 2>&1 || fail "qemu-io: $(cat "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
cmp -s <(dd if="$T/empty" bs=1M skip=100 count=3 2>/dev/null) \
	<(head -c 3M /dev/zero | tr '\0' '\245') || fail "qemu-io's write did not reach the file"

# --- TRIM and WRITE_ZEROES punch holes; NO_HOLE writes zeros ---
blocks() { stat -c %b "$T/sparse"; }
before=$(blocks)
qemu-io -f raw -c 'discard 8M 1M' -c 'write -z -u 9M 1M' -c 'read -P 0 8M 2M' \
	"nbd:unix:$T/sparse.sock" >"$T/qio" 2>&1 || fail "qemu-io discard: $(cat "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
after=$(blocks)
[ $((before - after)) -ge 4000 ] || fail "TRIM/WRITE_ZEROES left the blocks: $before -> $after"
qemu-io -f raw -c 'write -z 10M 512k' -c 'read -P 0 10M 512k' "nbd:unix:$T/sparse.sock" \
	>"$T/qio" 2>&1 || fail "qemu-io write -z: $(cat "$T/qio")"
[ "$(blocks)" -ge "$after" ] || fail "WRITE_ZEROES with NO_HOLE made a hole"
nbdinfo --map "$(uri sparse)" | grep -Eq '^ +0 +10485760 +3 +hole,zero' ||
	fail "map after trim: $(nbdinfo --map "$(uri sparse)")"

# --- read-only: writes refused, nothing changes ---
cp "$T/sparse" "$T/sparse.before"
qemu-io -f raw -c 'write -P 1 0 4096' "nbd:unix:$T/ro.sock" >"$T/qio" 2>&1
grep -q "^wrote" "$T/qio" && fail "a write through the read-only export succeeded"
nbdcopy "$T/disk" "$(uri ro)" 2>/dev/null && fail "nbdcopy into the read-only export succeeded"
cmp -s "$T/sparse" "$T/sparse.before" || fail "the read-only export changed"

# --- a block device: its size and sector size ---
if [ "$(id -u)" = 0 ] && LOOP=$(losetup -f --show "$T/sparse" 2>/dev/null); then
	at_exit "losetup -d $LOOP"
	serve loop "$LOOP"
	nbdinfo --json "$(uri loop)" >"$T/info" || fail "nbdinfo on a block device"
	grep -q '"export-size": 67108864' "$T/info" || fail "block device size: $(cat "$T/info")"
	grep -q '"block_size_minimum": 512' "$T/info" || fail "block device sector: $(cat "$T/info")"
	qemu-io -f raw -c 'write -P 0x77 40M 1M' -c 'read -P 0x77 40M 1M' "nbd:unix:$T/loop.sock" \
		>"$T/qio" 2>&1 || fail "qemu-io on a block device: $(cat "$T/qio")"
	grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
	nbdcopy "$(uri loop)" "$T/loop.copy" || fail "nbdcopy from a block device"
	cmp -s "$T/loop.copy" "$T/sparse" || fail "the block device's copy differs"
fi

# --- TCP: loopback works, anything else needs --insecure ---
bg_start serve_tcp "$METAC" block serve --listen 127.0.0.1:10899 "local:$T/sparse"
for _ in $(seq 100); do nbdinfo nbd://127.0.0.1:10899 >/dev/null 2>&1 && break; sleep 0.05; done
nbdinfo --size nbd://127.0.0.1:10899 | grep -qx 67108864 || fail "nbdinfo over loopback TCP"
expect_fail "loopback or unix" "$METAC" block serve --listen 0.0.0.0:10898 "local:$T/sparse"
expect_fail "No such file" "$METAC" block serve --listen "unix:$T/x.sock" "local:$T/missing"
expect_fail "Is a directory" "$METAC" block serve --listen "unix:$T/x.sock" "local:$T"
mkfifo "$T/fifo"
expect_fail "not a regular file" "$METAC" block serve --listen "unix:$T/x.sock" "local:$T/fifo"

# --- block copy between local files: exact, and sparse ---
"$METAC" block copy "local:$T/sparse" "local:$T/sparse.copy" || fail "block copy"
cmp -s "$T/sparse" "$T/sparse.copy" || fail "block copy: the bytes differ"
[ "$(stat -c %b "$T/sparse.copy")" -le "$(stat -c %b "$T/sparse")" ] ||
	fail "block copy filled the holes"
expect_fail "the source itself" "$METAC" block copy "local:$T/sparse" "local:$T/sparse"
cmp -s "$T/sparse" "$T/sparse.copy" || fail "copying a file onto itself harmed it"
"$METAC" block copy "$T/a" "$T/b" 2>/dev/null
[ $? = 2 ] || fail "block copy without local: is not a usage error"
exit 0
