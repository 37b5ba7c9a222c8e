# metac's 9p client and FUSE bridge against diod, a 9P2000.L server
# nobody here wrote: `metac fs mount9p` mounts a diod export on loopback,
# and files made, changed, renamed, linked and removed through the mount
# are what diod's export holds; a 32 MiB file and a directory of 2,000
# entries come through whole. diod is then killed and started again on
# the same port: the mount reconnects, a file held open reads on, and
# new calls work. SIGTERM unmounts.
. "$(dirname "$0")/lib.bash"
export LC_ALL=C

DIOD=$(command -v diod || echo /usr/sbin/diod)
[ -x "$DIOD" ] || fail "diod is missing (contrib/install-deps.sh installs it)"
need_root # diod serves files as the attaching user

EX=$T/export
MNT=$T/mnt
mkdir -p "$EX" "$MNT"
echo hello >"$EX/hello.txt"
head -c 33554432 /dev/urandom >"$EX/big"

# diod on a free loopback port; -n -N: no auth, no passwd lookups.
start_diod() {
	"$DIOD" -f -n -N -c /dev/null -l "127.0.0.1:$PORT" -e "$EX" -L stderr \
		>>"$T/diod.log" 2>&1 &
	PID_DIOD=$!
	_pids+=($PID_DIOD)
	for _ in $(seq 100); do
		ss -Hltnp "sport = :$PORT" | grep -q "pid=$PID_DIOD," && return 0
		kill -0 $PID_DIOD 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
for _ in 1 2 3 4 5; do
	PORT=$((20000 + RANDOM % 30000))
	ss -Hltn "sport = :$PORT" | grep -q . && continue
	start_diod && break
done
kill -0 "$PID_DIOD" 2>/dev/null || fail "diod did not start: $(cat "$T/diod.log")"

"$METAC" fs mount9p --timeout 10000 --aname "$EX" "127.0.0.1:$PORT" "$MNT" \
	>"$T/mount9p.log" 2>&1 &
PID_M=$!
_pids+=($PID_M)
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done
mountpoint -q "$MNT" || fail "mount9p did not mount: $(cat "$T/mount9p.log")"

[ "$(cat "$MNT/hello.txt")" = hello ] || fail "reading a file diod serves"
cmp -s "$EX/big" "$MNT/big" || fail "a 32 MiB file read through diod differs"
echo one >"$MNT/new" && [ "$(cat "$EX/new")" = one ] || fail "create through diod"
echo two >>"$MNT/new" && [ "$(wc -l <"$EX/new")" = 2 ] || fail "append through diod"
truncate -s 2 "$MNT/new" && [ "$(stat -c %s "$EX/new")" = 2 ] || fail "truncate through diod"
mkdir -p "$MNT/d/e" && [ -d "$EX/d/e" ] || fail "mkdir through diod"
mv "$MNT/new" "$MNT/d/e/moved" && [ -f "$EX/d/e/moved" ] || fail "rename through diod"
ln -s moved "$MNT/d/e/link" && [ "$(readlink "$EX/d/e/link")" = moved ] || fail "symlink through diod"
[ "$(readlink "$MNT/d/e/link")" = moved ] || fail "readlink through diod"
ln "$MNT/d/e/moved" "$MNT/hard" && [ "$(stat -c %h "$EX/hard")" = 2 ] || fail "link through diod"
chmod 600 "$MNT/hard" && [ "$(stat -c %a "$EX/hard")" = 600 ] || fail "chmod through diod"
touch -d '2001-02-03 04:05:06' "$MNT/hard" || fail "utimes through diod"
[ "$(stat -c %Y "$EX/hard")" = "$(date -d '2001-02-03 04:05:06' +%s)" ] || fail "utimes on diod's side"
rm "$MNT/hard" "$MNT/d/e/link" "$MNT/d/e/moved" && rmdir "$MNT/d/e" "$MNT/d" || fail "removing through diod"
[ ! -e "$EX/d" ] || fail "removals did not reach diod's export"
head -c 33554433 /dev/urandom >"$T/data"
cp "$T/data" "$MNT/data" && cmp -s "$T/data" "$EX/data" || fail "32 MiB written through diod differ"
mkdir "$EX/many"
(cd "$EX/many" && seq -f 'name-%04g' 2000 | xargs touch)
[ "$(ls -f "$MNT/many" | grep -c '^name-')" = 2000 ] || fail "2,000 entries listed through diod"
df "$MNT" >/dev/null || fail "statfs through diod"

# diod goes and comes back on the same port: the mount reconnects.
exec 7<"$MNT/big"
head -c 1000000 <&7 >"$T/part1"
kill -KILL "$PID_DIOD"
wait "$PID_DIOD" 2>/dev/null
start_diod || fail "diod did not start again"
cat <&7 >"$T/part2" || fail "reading on after diod restarted"
exec 7<&-
cat "$T/part1" "$T/part2" | cmp -s - "$EX/big" || fail "the file read across diod's restart differs"
echo after >"$MNT/after" && [ "$(cat "$EX/after")" = after ] || fail "a write after diod restarted"
grep -q reconnected "$T/mount9p.log" || fail "mount9p did not say it reconnected"

kill -TERM "$PID_M"
wait "$PID_M"
rc=$?
[ $rc = 0 ] || fail "mount9p exited $rc on SIGTERM: $(cat "$T/mount9p.log")"
mountpoint -q "$MNT" && fail "SIGTERM left the mount behind"
# Plain 9p is refused on a network address.
"$METAC" fs mount9p 192.0.2.1:564 "$MNT" 2>"$T/err" && fail "mount9p to a network address without --insecure"
grep -q "unencrypted" "$T/err" || fail "mount9p's refusal does not say why: $(cat "$T/err")"
exit 0
