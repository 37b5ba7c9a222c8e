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

. "$(dirname "$0")/nbd.bash"

serve() { # serve NAME PATH [OPTS...]: block serve on $T/NAME.sock
	local name=$1 path=$2
	shift 2
	bg_start "serve_$name" "$METAC" block serve --listen "unix:$T/$name.sock" "$@" "local:$path"
	wait_socket "$T/$name.sock"
}

nbd_disks "$T"

serve disk "$T/disk"
serve empty "$T/empty"
serve sparse "$T/sparse"
serve ro "$T/sparse" --read-only

nbd_check_info disk ro
nbdinfo --list "$(nbd_uri disk)" | grep -q 'export="disk"' || fail "nbdinfo --list does not list the export"
nbd_check_map sparse
# Four connections, many requests each.
nbd_check_copy disk empty "$T"
qemu-img convert -n -f raw -O raw "nbd:unix:$T/sparse.sock" "nbd:unix:$T/empty.sock" ||
	fail "qemu-img convert from one export into another"
cmp -s -n 67108864 "$T/sparse" "$T/empty" || fail "qemu-img convert between exports: the bytes differ"
nbd_check_qemu sparse empty "$T"
nbd_check_trim sparse "$T"
nbd_check_read_only ro "$T"

# --- a block device: its size and sector size ---
if [ "$(id -u)" = 0 ] && LOOP=$(losetup -f --show "$T/sparse" 2>/dev/null); then
	at_exit "losetup -d $LOOP"
	serve loop "$LOOP"
	nbdinfo --json "$(nbd_uri loop)" >"$T/info" || fail "nbdinfo on a block device"
	grep -q '"export-size": 67108864' "$T/info" || fail "block device size: $(cat "$T/info")"
	grep -q '"block_size_minimum": 512' "$T/info" || fail "block device sector: $(cat "$T/info")"
	qemu-io -f raw -c 'write -P 0x77 40M 1M' -c 'read -P 0x77 40M 1M' "nbd:unix:$T/loop.sock" \
		>"$T/qio" 2>&1 || fail "qemu-io on a block device: $(cat "$T/qio")"
	grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
	nbdcopy "$(nbd_uri loop)" "$T/loop.copy" || fail "nbdcopy from a block device"
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
