# A file exported on host A (`metac file export`) is read on host B
# (`metac file cat REF`) across two network namespaces: its bytes arrive
# exact (random data, an empty file); progress shows on a terminal and
# never in a pipe; a directory or a missing file cannot be exported; a
# revoked ref is refused; killing A mid-transfer makes cat fail, never
# hang or end as if the file were shorter.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

mkdir -p "$T/a"
head -c 20000001 /dev/urandom >"$T/a/data"
: >"$T/a/empty"
truncate -s 20G "$T/a/huge" # sparse: zeros to read, nothing on disk

FREF=$(m A file export "local:$T/a/data") || fail "file export"
EREF=$(m A file export "local:$T/a/empty") || fail "file export of an empty file"
HREF=$(m A file export --persistent "local:$T/a/huge") || fail "file export of a sparse file"

m B file cat "$FREF" >"$T/got" 2>"$T/cat.err" || fail "file cat: $(cat "$T/cat.err")"
cmp -s "$T/a/data" "$T/got" || fail "file cat: the bytes differ"
[ ! -s "$T/cat.err" ] || fail "file cat in a pipe printed: $(cat "$T/cat.err")"
m B file cat "$EREF" >"$T/got" || fail "file cat of an empty file"
[ ! -s "$T/got" ] || fail "an empty file came out non-empty"

# On a terminal (stderr), progress; the bytes are the same.
script -qec "$T/B.m file cat '$FREF' >'$T/got.tty'" /dev/null >"$T/tty.out" 2>&1 ||
	fail "file cat under a terminal: $(cat "$T/tty.out")"
cmp -s "$T/a/data" "$T/got.tty" || fail "file cat under a terminal: the bytes differ"
tr '\r' '\n' <"$T/tty.out" | grep -q '19.1 MiB of 19.1 MiB (100%)' ||
	fail "no progress on a terminal: $(tr '\r' '\n' <"$T/tty.out" | tail -n 3)"

expect_fail "Is a directory" "$T/A.m" file export "local:$T/a"
expect_fail "No such file" "$T/A.m" file export "local:$T/a/missing"
"$T/A.m" file export "$T/a/data" 2>"$T/err"
[ $? = 2 ] || fail "file export without local: is not a usage error"

m A ref revoke "$EREF" || fail "revoke"
expect_fail "no such ref" "$T/B.m" file cat "$EREF"

# A is killed while B reads 20 GiB: cat fails with an error, at once.
(m B file cat "$HREF" >/dev/null 2>"$T/kill.err"; echo $? >"$T/kill.rc") &
reader=$!
sleep 1
kill -KILL "$PID_A"
for _ in $(seq 200); do [ -e "$T/kill.rc" ] && break; sleep 0.1; done
[ -e "$T/kill.rc" ] || { kill $reader; fail "file cat hung after its server died"; }
[ "$(cat "$T/kill.rc")" = 1 ] || fail "file cat exited $(cat "$T/kill.rc") after its server died"
grep -q "broke off" "$T/kill.err" || fail "file cat's error: $(cat "$T/kill.err")"
grep -q "${FREF##*/}" "$T"/*.log && fail "a ref was logged"
exit 0
