# The headline use: host A exports a folder (`metac fs export`), host B
# mounts the ref (`metac fs bind`: the FUSE bridge, 9p over the encrypted
# transport between two network namespaces). Through the mount: create,
# read, write, append, truncate, rename, unlink, mkdir, rmdir, symlink,
# readlink, hard links, chmod, utimes and xattrs, each checked on A's
# side; a 5 GiB sparse file keeps its size and holes; a directory of
# 10,000 entries is listed whole; names with spaces and bytes that are
# not UTF-8; concurrent writers; checksums on both sides. Nothing outside
# the export is reached through symlinks, even one swapped in while B
# walks; a read-only export refuses every write; unbinding while a file
# is open works (lazy) and the bridge goes once it is closed.
. "$(dirname "$0")/lib.bash"
export LC_ALL=C

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

EX=$T/a/export
SECRET=$T/a/secret # outside the export, next to it
MNT=$T/b/mnt
MRO=$T/b/ro
mkdir -p "$EX" "$MNT" "$MRO"
echo "the server's secret" >"$SECRET"
echo hello >"$EX/hello.txt"
ln -s ../secret "$EX/rel_evil"
ln -s "$SECRET" "$EX/abs_evil"

REF=$(m A fs export "local:$EX") || fail "fs export failed"
ROREF=$(m A fs export --read-only "local:$EX") || fail "fs export --read-only failed"
m B fs bind "$MNT" "$REF" || fail "fs bind failed"
mountpoint -q "$MNT" || fail "nothing is mounted on $MNT"
grep -q " $MNT fuse.metac " /proc/self/mounts || fail "the mount is not metac's FUSE"

# --- basic operations, each seen on A's side ---
[ "$(cat "$MNT/hello.txt")" = hello ] || fail "read of an existing file"
echo one >"$MNT/new.txt" || fail "create"
[ "$(cat "$EX/new.txt")" = one ] || fail "a created file is not on A"
echo two >>"$MNT/new.txt" || fail "append"
[ "$(cat "$EX/new.txt")" = "$(printf 'one\ntwo')" ] || fail "append did not reach A"
truncate -s 3 "$MNT/new.txt" || fail "truncate"
[ "$(stat -c %s "$EX/new.txt")" = 3 ] || fail "truncate did not reach A"
printf 'XY' | dd of="$MNT/new.txt" bs=1 seek=1 conv=notrunc 2>/dev/null || fail "write at an offset"
[ "$(cat "$EX/new.txt")" = oXY ] || fail "a write at an offset: $(cat "$EX/new.txt")"
mv "$MNT/new.txt" "$MNT/moved.txt" || fail "rename"
[ -e "$EX/moved.txt" ] && [ ! -e "$EX/new.txt" ] || fail "rename did not reach A"
[ "$(cat "$MNT/moved.txt")" = oXY ] || fail "a renamed file reads wrong"
mkdir -p "$MNT/d1/d2" || fail "mkdir"
[ -d "$EX/d1/d2" ] || fail "mkdir did not reach A"
mv "$MNT/moved.txt" "$MNT/d1/d2/" || fail "rename into a directory"
mv "$MNT/d1" "$MNT/d3" || fail "rename of a directory"
[ "$(cat "$MNT/d3/d2/moved.txt")" = oXY ] || fail "a file in a renamed directory"
rm "$MNT/d3/d2/moved.txt" || fail "unlink"
[ ! -e "$EX/d3/d2/moved.txt" ] || fail "unlink did not reach A"
rmdir "$MNT/d3/d2" "$MNT/d3" || fail "rmdir"
[ ! -e "$EX/d3" ] || fail "rmdir did not reach A"
ln -s hello.txt "$MNT/link" || fail "symlink"
[ "$(readlink "$EX/link")" = hello.txt ] || fail "symlink on A: $(readlink "$EX/link")"
[ "$(readlink "$MNT/link")" = hello.txt ] || fail "readlink"
[ "$(cat "$MNT/link")" = hello ] || fail "reading through a symlink"
ln "$MNT/hello.txt" "$MNT/hard" || fail "hard link"
[ "$(stat -c %i "$EX/hello.txt")" = "$(stat -c %i "$EX/hard")" ] || fail "the hard link on A is not one"
[ "$(stat -c %h "$MNT/hello.txt")" = 2 ] || fail "link count through the mount"
[ "$(stat -c %i "$MNT/hello.txt")" = "$(stat -c %i "$MNT/hard")" ] ||
	fail "two names of one file show two inodes"
rm "$MNT/hard"
chmod 640 "$MNT/hello.txt" || fail "chmod"
[ "$(stat -c %a "$EX/hello.txt")" = 640 ] || fail "chmod did not reach A"
touch -d '2001-02-03 04:05:06' "$MNT/hello.txt" || fail "utimes"
[ "$(stat -c %Y "$EX/hello.txt")" = "$(date -d '2001-02-03 04:05:06' +%s)" ] ||
	fail "utimes did not reach A"
[ "$(stat -c %Y "$MNT/hello.txt")" = "$(stat -c %Y "$EX/hello.txt")" ] || fail "mtime through the mount"
: >"$MNT/empty" && [ -f "$EX/empty" ] && [ ! -s "$EX/empty" ] || fail "an empty file"
mkfifo "$MNT/fifo" || fail "mkfifo"
[ -p "$EX/fifo" ] || fail "the FIFO is not one on A"
# User xattrs, where A's file system keeps them.
if python3 -c "import os; os.setxattr('$EX/empty', 'user.probe', b'1')" 2>/dev/null; then
	python3 - "$MNT/empty" "$EX/empty" <<'EOF' || fail "xattrs through the mount"
import os, sys
m, a = sys.argv[1], sys.argv[2]
os.setxattr(m, "user.color", b"blue")
assert os.getxattr(a, "user.color") == b"blue", "not on A"
assert os.getxattr(m, "user.color") == b"blue", "not read back"
assert "user.color" in os.listxattr(m), os.listxattr(m)
os.removexattr(m, "user.color")
assert "user.color" not in os.listxattr(a), "not removed on A"
EOF
fi
# df works, and says something sane.
df "$MNT" >/dev/null || fail "statfs"

# --- names ---
names=("with  two spaces" "$(printf 'caf\xe9')" "$(printf '\xff\xfe bytes')" " lead" "trail " "tab	in" "quote'\"")
for n in "${names[@]}"; do
	echo "$n" >"$MNT/$n" || fail "cannot create '$n'"
	[ "$(cat "$EX/$n")" = "$n" ] || fail "'$n' on A"
done
head -c 10 /dev/urandom >"$EX/$(printf 'made\xa0on A')"
(cd "$EX" && find . -maxdepth 1 -printf '%P\n' | sort) >"$T/want"
(cd "$MNT" && find . -maxdepth 1 -printf '%P\n' | sort) >"$T/got"
cmp -s "$T/want" "$T/got" || fail "listings differ: $(diff "$T/want" "$T/got" | head)"

# --- a directory of 10,000 entries, made on A, listed on B ---
mkdir "$EX/many"
(cd "$EX/many" && seq -f 'entry-%05g-with-a-longish-name' 10000 | xargs touch)
ls -f "$MNT/many" | grep -v '^\.\.\?$' | sort >"$T/got"
seq -f 'entry-%05g-with-a-longish-name' 10000 | sort >"$T/want"
cmp -s "$T/want" "$T/got" || fail "10,000 entries: got $(wc -l <"$T/got")"
# and 17,000 files looked up and stat'ed: more than a server keeps fids
# for (16,384 in metac's), so the bridge must give fids back as it goes.
(cd "$EX/many" && seq -f 'more-%05g' 7000 | xargs touch)
(cd "$MNT/many" && find . -type f -print0 | xargs -0 stat -c '%n %s') >"$T/stat.out" 2>"$T/stat.err" ||
	fail "stat of 17,000 files: $(head -3 "$T/stat.err")"
[ "$(wc -l <"$T/stat.out")" = 17000 ] || fail "stat of 17,000 files gave $(wc -l <"$T/stat.out")"

# --- data: checksums on both sides ---
head -c 33554433 /dev/urandom >"$T/data" # 32 MiB and a byte: odd sizes
cp "$T/data" "$MNT/data" || fail "copying 32 MiB in"
cmp -s "$T/data" "$EX/data" || fail "32 MiB written through the mount differ on A"
head -c 20000000 /dev/urandom >"$EX/fromA"
cmp -s "$EX/fromA" "$MNT/fromA" || fail "20 MB written on A read differently on B"
# Written on A after B read it: B sees the new bytes once attributes
# expire (2 s), with no stale page cache.
head -c 20000000 /dev/urandom >"$T/fromA2"
cp "$T/fromA2" "$EX/fromA.tmp" && mv "$EX/fromA.tmp" "$EX/fromA"
sleep 2.5
cmp -s "$T/fromA2" "$MNT/fromA" || fail "B read stale data after A replaced the file"
printf 'changed' | dd of="$EX/data" bs=1 seek=1000 conv=notrunc 2>/dev/null
sleep 2.5
[ "$(dd if="$MNT/data" bs=1 skip=1000 count=7 2>/dev/null)" = changed ] ||
	fail "B read stale bytes after A changed the file in place"

# Writes are answered before the server has them (write-behind): one
# region written over and over through one open file ends as the last
# write left it, and its size is right at once.
python3 - "$MNT/overwrite" <<'EOF' || fail "overlapping writes in flight"
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
for i in range(2000):
    os.pwrite(fd, b"%06d" % i, (i % 7) * 3)
os.pwrite(fd, b"end", 4096)
assert os.fstat(fd).st_size == 4099, os.fstat(fd).st_size
os.close(fd)
EOF
python3 - "$EX/overwrite" <<'EOF' || fail "overlapping writes landed out of order on A"
import sys
want = bytearray(4099)
for i in range(2000):
    want[(i % 7) * 3:(i % 7) * 3 + 6] = b"%06d" % i
want[4096:4099] = b"end"
got = open(sys.argv[1], "rb").read()
assert got == bytes(want), (got[:24], bytes(want[:24]))
EOF

# --- a 5 GiB sparse file: size and holes ---
truncate -s 5G "$MNT/sparse" || fail "truncate to 5 GiB"
printf 'middle' | dd of="$MNT/sparse" bs=1 seek=$((3 * 1024 * 1024 * 1024)) conv=notrunc 2>/dev/null
printf 'end' | dd of="$MNT/sparse" bs=1 seek=$((5 * 1024 * 1024 * 1024 - 3)) conv=notrunc 2>/dev/null
[ "$(stat -c %s "$EX/sparse")" = $((5 * 1024 * 1024 * 1024)) ] || fail "the sparse file's size on A"
[ "$(stat -c %s "$MNT/sparse")" = $((5 * 1024 * 1024 * 1024)) ] || fail "the sparse file's size on B"
[ "$(du -k "$EX/sparse" | cut -f1)" -lt 1024 ] || fail "the sparse file lost its holes on A: $(du -k "$EX/sparse")"
[ "$(du -k "$MNT/sparse" | cut -f1)" -lt 1024 ] || fail "B shows no holes: $(du -k "$MNT/sparse")"
[ "$(dd if="$MNT/sparse" bs=1 skip=$((3 * 1024 * 1024 * 1024)) count=6 2>/dev/null)" = middle ] ||
	fail "data in the middle of the sparse file"
[ "$(dd if="$MNT/sparse" bs=1M skip=1024 count=1 2>/dev/null | tr -d '\0' | wc -c)" = 0 ] ||
	fail "a hole does not read as zeros"
[ "$(tail -c 3 "$MNT/sparse")" = end ] || fail "the end of the sparse file"

# --- concurrent writers ---
writers=()
for i in 1 2 3 4; do
	(head -c 4194304 /dev/urandom >"$T/w$i" && cp "$T/w$i" "$MNT/w$i") &
	writers+=($!)
done
# and four writers into disjoint 1 MiB regions of one file
for i in 0 1 2 3; do
	(head -c 1048576 /dev/urandom >"$T/r$i" &&
		dd if="$T/r$i" of="$MNT/shared" bs=1M seek=$i conv=notrunc 2>/dev/null) &
	writers+=($!)
done
for w in "${writers[@]}"; do wait "$w" || fail "a concurrent writer failed"; done
for i in 1 2 3 4; do
	cmp -s "$T/w$i" "$EX/w$i" || fail "concurrent writer $i: A's copy differs"
	cmp -s "$T/w$i" "$MNT/w$i" || fail "concurrent writer $i: B's copy differs"
done
cat "$T/r0" "$T/r1" "$T/r2" "$T/r3" | cmp -s - "$EX/shared" || fail "the shared file differs on A"
[ "$(md5sum <"$MNT/shared")" = "$(md5sum <"$EX/shared")" ] || fail "the shared file: checksums differ"

# --- nothing outside the export ---
# The links are served as links; B resolves them on B, where $T/b/secret
# and $T/secret are not the server's secret.
echo "B's own decoy" >"$T/b/secret"
for l in rel_evil abs_evil; do
	[ -L "$MNT/$l" ] || fail "$l is not a symlink on B"
done
[ "$(readlink "$MNT/rel_evil")" = ../secret ] || fail "a link's target changed"
[ "$(cat "$MNT/rel_evil")" = "B's own decoy" ] || fail "a relative link was resolved on the server"
[ "$(readlink "$MNT/abs_evil")" = "$SECRET" ] || fail "an absolute link's target changed"
# A directory swapped for a link to outside while B walks through it:
# B must never read the secret (A's daemon, not B, resolves the walk).
mkdir "$EX/swap"
echo inside >"$EX/swap/f"
mkdir -p "$T/a/outside"
echo "the server's secret" >"$T/a/outside/f"
(
	for _ in $(seq 300); do
		mv "$EX/swap" "$EX/swap.d" && ln -s ../outside "$EX/swap"
		rm "$EX/swap" && mv "$EX/swap.d" "$EX/swap"
	done
) &
swapper=$!
: >"$T/seen"
while kill -0 $swapper 2>/dev/null; do
	cat "$MNT/swap/f" >>"$T/seen" 2>/dev/null
done
wait $swapper
grep -q "secret" "$T/seen" && fail "a walk through a swapped-in link reached outside the export"
grep -q inside "$T/seen" || fail "the swap test never read the file at all"

# --- read-only ---
m B fs bind "$MRO" "$ROREF" || fail "fs bind of a read-only ref"
[ "$(cat "$MRO/hello.txt")" = hello ] || fail "a read-only mount does not read"
(cd "$EX" && find . | sort && md5sum hello.txt empty) >"$T/ro.before"
ro() { # CMD...: must fail with EROFS
	"$@" 2>"$T/ro.err" && fail "read-only mount took: $*"
	grep -q "Read-only file system" "$T/ro.err" || fail "read-only: $* said: $(cat "$T/ro.err")"
}
ro touch "$MRO/newfile"
ro sh -c "echo x >>'$MRO/hello.txt'"
ro sh -c "echo x >'$MRO/hello.txt'"
ro mkdir "$MRO/newdir"
ro rm "$MRO/empty"
ro mv "$MRO/empty" "$MRO/empty2"
ro chmod 600 "$MRO/empty"
ro truncate -s 0 "$MRO/hello.txt"
ro ln -s x "$MRO/newlink"
ro ln "$MRO/empty" "$MRO/newhard"
ro touch -d 2000-01-01 "$MRO/empty"
(cd "$EX" && find . | sort && md5sum hello.txt empty) >"$T/ro.after"
cmp -s "$T/ro.before" "$T/ro.after" || fail "the read-only export changed"
m B fs unbind "$MRO" || fail "unbind of the read-only mount"

# --- unbind while busy: lazy, and the bridge goes when the file closes ---
exec 7<"$MNT/hello.txt"
m B fs unbind "$MNT" || fail "unbind while a file is open"
mountpoint -q "$MNT" && fail "still mounted after unbind"
[ "$(cat <&7)" = hello ] || fail "an open file stopped reading after a lazy unbind"
pgrep -f "fs _bridge .*$MNT" >/dev/null || fail "the bridge went while a file was still open"
exec 7<&-
for _ in $(seq 100); do pgrep -f "fs _bridge .*$MNT" >/dev/null || break; sleep 0.1; done
pgrep -f "fs _bridge .*$MNT" >/dev/null && fail "the bridge stayed after the last file closed"
m B fs bind "$MNT" "$REF" || fail "binding again after unbind"
[ "$(cat "$MNT/hello.txt")" = hello ] || fail "the second mount does not read"
m B fs unbind "$MNT" || fail "unbind"
grep -q "${REF##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
