# What the NBD tests check of an endpoint, whoever serves it (metac's
# server itself, or a relay to another node): sourced after lib.bash.
# Endpoint NAME listens on $T/NAME.sock; the files behind them are in a
# directory DIR (the serving host's).

for t in nbdinfo nbdcopy qemu-img qemu-io; do
	command -v $t >/dev/null || fail "$t is missing (contrib/install-deps.sh installs it)"
done

nbd_uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

# nbd_disks DIR: DIR/disk (2 GiB of random bytes, its b2sum in SUM),
# DIR/empty (a 2 GiB hole), DIR/sparse (64 MiB, 3 MiB of data at 8 MiB).
nbd_disks() {
	mkdir -p "$1"
	head -c 2G /dev/urandom >"$1/disk"
	truncate -s 2G "$1/empty"
	truncate -s 64M "$1/sparse"
	head -c 3M /dev/urandom | dd of="$1/sparse" bs=1M seek=8 conv=notrunc 2>/dev/null
	SUM=$(b2sum <"$1/disk")
}

# nbd_check_info DISK RO: nbdinfo's size and flags.
nbd_check_info() {
	nbdinfo --json "$(nbd_uri "$1")" >"$T/info" || fail "nbdinfo: $(cat "$T/info")"
	grep -q '"export-size": 2147483648' "$T/info" || fail "nbdinfo: wrong size: $(cat "$T/info")"
	grep -q '"is_read_only": false' "$T/info" || fail "nbdinfo: the disk is read-only"
	for f in can_multi_conn can_flush can_fua can_trim can_zero can_fast_zero can_cache; do
		grep -q "\"$f\": true" "$T/info" || fail "nbdinfo: $f is not true"
	done
	grep -q '"block_size_maximum": 33554432' "$T/info" || fail "nbdinfo: block sizes: $(cat "$T/info")"
	nbdinfo --json "$(nbd_uri "$2")" >"$T/info"
	grep -q '"is_read_only": true' "$T/info" || fail "the read-only export is writable"
	grep -q '"can_trim": true' "$T/info" && fail "a read-only export offers TRIM"
	return 0
}

# nbd_check_map SPARSE [START-HOLE]: BLOCK_STATUS as nbdinfo --map shows it.
nbd_check_map() {
	nbdinfo --map "$(nbd_uri "$1")" >"$T/map" || fail "nbdinfo --map"
	grep -Eq "^ +0 +${2:-8388608} +3 +hole,zero" "$T/map" || fail "map: no hole at 0: $(cat "$T/map")"
	if [ -z "${2:-}" ]; then
		grep -Eq '^ +8388608 +3145728 +0 +data' "$T/map" || fail "map: no data at 8M: $(cat "$T/map")"
	fi
	grep -Eq '^ +11534336 +55574528 +3 +hole,zero' "$T/map" ||
		fail "map: no hole at the end: $(cat "$T/map")"
}

# nbd_check_copy DISK EMPTY DIR: nbdcopy 2 GiB out of DISK and back into
# EMPTY (DIR/empty), with identical checksums.
nbd_check_copy() {
	nbdcopy "$(nbd_uri "$1")" "$T/out" || fail "nbdcopy out"
	[ "$(b2sum <"$T/out")" = "$SUM" ] || fail "nbdcopy out: the checksums differ"
	nbdcopy "$T/out" "$(nbd_uri "$2")" || fail "nbdcopy back"
	rm -f "$T/out"
	[ "$(b2sum <"$3/empty")" = "$SUM" ] || fail "nbdcopy back: the served file differs"
}

# nbd_check_qemu SPARSE EMPTY DIR: qemu-img convert and compare;
# qemu-io's patterns, read back and found in DIR/empty.
nbd_check_qemu() {
	qemu-img convert -f raw -O qcow2 "nbd:unix:$T/$1.sock" "$T/sparse.qcow2" ||
		fail "qemu-img convert"
	qemu-img compare -f qcow2 -F raw "$T/sparse.qcow2" "nbd:unix:$T/$1.sock" ||
		fail "qemu-img compare after convert"
	qemu-io -f raw -c 'write -P 0xa5 100M 3M' -c 'write -P 0x5a 4095 8193' \
		-c 'write -P 0x11 2047M 1M' -c 'read -P 0xa5 100M 3M' -c 'read -P 0x5a 4095 8193' \
		-c 'read -P 0x11 2047M 1M' -c flush \
		"nbd:unix:$T/$2.sock" >"$T/qio" 2>&1 || fail "qemu-io: $(cat "$T/qio")"
	grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
	cmp -s <(dd if="$3/empty" bs=1M skip=100 count=3 2>/dev/null) \
		<(head -c 3M /dev/zero | tr '\0' '\245') || fail "qemu-io's write did not reach the file"
}

# nbd_check_trim SPARSE DIR: TRIM and WRITE_ZEROES punch holes in
# DIR/sparse; WRITE_ZEROES with NO_HOLE writes zeros and keeps blocks.
nbd_check_trim() {
	local before after
	before=$(stat -c %b "$2/sparse")
	qemu-io -f raw -c 'discard 8M 1M' -c 'write -z -u 9M 1M' -c 'read -P 0 8M 2M' \
		"nbd:unix:$T/$1.sock" >"$T/qio" 2>&1 || fail "qemu-io discard: $(cat "$T/qio")"
	grep -q "Pattern verification failed" "$T/qio" && fail "qemu-io: $(cat "$T/qio")"
	after=$(stat -c %b "$2/sparse")
	[ $((before - after)) -ge 4000 ] || fail "TRIM/WRITE_ZEROES left the blocks: $before -> $after"
	qemu-io -f raw -c 'write -z 10M 512k' -c 'read -P 0 10M 512k' "nbd:unix:$T/$1.sock" \
		>"$T/qio" 2>&1 || fail "qemu-io write -z: $(cat "$T/qio")"
	[ "$(stat -c %b "$2/sparse")" -ge "$after" ] || fail "WRITE_ZEROES with NO_HOLE made a hole"
	nbd_check_map "$1" 10485760
}

# nbd_check_read_only RO DIR: writes are refused; DIR/sparse stays.
nbd_check_read_only() {
	cp "$2/sparse" "$T/sparse.before"
	qemu-io -f raw -c 'write -P 1 0 4096' "nbd:unix:$T/$1.sock" >"$T/qio" 2>&1
	grep -q "^wrote" "$T/qio" && fail "a write through the read-only export succeeded"
	# Something else of the same size, so that only read-only stops it.
	head -c 64M /dev/zero | tr '\0' '\1' >"$T/ones"
	nbdcopy "$T/ones" "$(nbd_uri "$1")" 2>/dev/null && fail "nbdcopy into the read-only export succeeded"
	cmp -s "$2/sparse" "$T/sparse.before" || fail "the read-only export changed"
}
