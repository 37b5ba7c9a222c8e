# A disk exported on host A (`metac file export`) is used on host B
# through `metac block serve REF` (a plain NBD endpoint relaying over
# the encrypted transport) by clients nobody here wrote: nbdinfo,
# nbdcopy, qemu-img and qemu-io (also with --direct, the endpoint's own
# connection to A). Also `metac block copy` between refs
# and local files, a read-only ref, and A killed mid-copy: the client
# gets an error; after A restarts, the copy completes with the right
# data.
. "$(dirname "$0")/lib.bash"

. "$(dirname "$0")/nbd.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

nbd_disks "$T/a"

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

serve disk "$DISK"
serve empty "$EMPTY"
serve sparse "$SPARSE"
serve ro "$RO"

nbd_check_info disk ro
nbd_check_map sparse
nbd_check_copy disk empty "$T/a"
nbd_check_qemu sparse empty "$T/a"
nbd_check_trim sparse "$T/a"
nbd_check_read_only ro "$T/a"

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
nbdcopy "$(nbd_uri direct)" "$T/direct.copy" || fail "nbdcopy through block serve --direct"
cmp -s "$T/direct.copy" "$T/a/sparse" || fail "block serve --direct: the bytes differ"

# --- plain NBD only where nobody else can reach it ---
expect_fail "loopback or unix" "$T/B.m" block serve --listen 10.77.0.2:10809 "$DISK"

# --- A dies mid-copy: an error, not a hang; after a restart, all is well ---
(nbdcopy "$(nbd_uri disk)" "$T/out" 2>"$T/kill.err"; echo $? >"$T/kill.rc") &
sleep 1
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null
for _ in $(seq 300); do [ -e "$T/kill.rc" ] && break; sleep 0.1; done
[ -e "$T/kill.rc" ] || fail "nbdcopy hung after the serving node died"
[ "$(cat "$T/kill.rc")" != 0 ] || fail "nbdcopy succeeded although the serving node died"
daemon_start A a 10.77.0.1:901
nbdcopy "$(nbd_uri disk)" "$T/out" || fail "nbdcopy after the serving node restarted"
[ "$(b2sum <"$T/out")" = "$SUM" ] || fail "after the restart: the checksums differ"

grep -q "${DISK##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
