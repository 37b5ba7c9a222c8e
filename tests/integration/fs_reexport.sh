# Sharing on what was shared: host B re-exports host A's folder
# (`metac fs export REF`), and a mount of B's new ref reads and writes
# A's files; `--read-only` on the re-export makes it read-only at A (the
# 9p server there refuses the writes) while A's own ref stays writable.
# Neither the re-exported ref nor its token shows in B's ref list or in
# any log. Owner mapping: by default files appear as the mounter's;
# `fs export --map=passthrough` shows their numeric owners.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

EX=$T/a/export
mkdir -p "$EX" "$T/b/rw" "$T/b/ro" "$T/b/own" "$T/b/pass"
echo hello >"$EX/hello.txt"
echo owned >"$EX/owned"
chown 1234:4321 "$EX/owned"

REF=$(m A fs export "local:$EX") || fail "fs export"
REF2=$(m B fs export "$REF") || fail "fs export of a ref"
REF3=$(m B fs export --read-only "$REF") || fail "fs export --read-only of a ref"
case "$REF2" in ref://10.77.0.2*) ;; *) fail "the re-export is not B's: $REF2" ;; esac

m B fs bind "$T/b/rw" "$REF2" || fail "binding the re-exported ref"
[ "$(cat "$T/b/rw/hello.txt")" = hello ] || fail "reading through a re-export"
echo via-b >"$T/b/rw/new" || fail "writing through a re-export"
[ "$(cat "$EX/new")" = via-b ] || fail "a write through the re-export did not reach A"

m B fs bind "$T/b/ro" "$REF3" || fail "binding the read-only re-export"
[ "$(cat "$T/b/ro/hello.txt")" = hello ] || fail "reading through a read-only re-export"
sh -c "echo x >'$T/b/ro/nope'" 2>"$T/ro.err" && fail "a read-only re-export took a new file"
grep -q "Read-only file system" "$T/ro.err" || fail "read-only re-export said: $(cat "$T/ro.err")"
rm "$T/b/ro/hello.txt" 2>/dev/null && fail "a read-only re-export took an unlink"
[ -e "$EX/hello.txt" ] && [ ! -e "$EX/nope" ] || fail "the read-only re-export changed A"
# The original stays writable.
echo still >"$T/b/rw/still" && [ -e "$EX/still" ] || fail "A's own ref became read-only"

# A re-export can be revoked on B without touching A's ref.
m B ref revoke "$REF2" || fail "revoking the re-export"
m B fs unbind "$T/b/rw"
expect_fail "no such ref" "$T/B.m" fs bind "$T/b/rw" "$REF2"
m B fs bind "$T/b/rw" "$REF" || fail "A's ref stopped working when B's re-export was revoked"
m B fs unbind "$T/b/rw"

# The ref B re-exports is a secret: listed and logged by host only.
m B ref list >"$T/list" || fail "ref list"
grep -q "ref://10.77.0.1/\.\.\." "$T/list" || fail "ref list does not show what B re-exports: $(cat "$T/list")"
grep -q "${REF##*/}" "$T/list" && fail "ref list shows the re-exported ref's token"
m B ref list --json | grep -q "${REF##*/}" && fail "ref list --json shows the token"

# --- owners ---
m B fs bind "$T/b/own" "$REF" || fail "bind for owners"
[ "$(stat -c %u:%g "$T/b/own/owned")" = 0:0 ] ||
	fail "default mapping: owned shows $(stat -c %u:%g "$T/b/own/owned"), not the mounter's"
PREF=$(m A fs export --map=passthrough "local:$EX") || fail "fs export --map=passthrough"
m B fs bind "$T/b/pass" "$PREF" || fail "bind of a passthrough export"
[ "$(stat -c %u:%g "$T/b/pass/owned")" = 1234:4321 ] ||
	fail "passthrough: owned shows $(stat -c %u:%g "$T/b/pass/owned")"
chown 777:888 "$T/b/pass/owned" || fail "chown through a passthrough export"
[ "$(stat -c %u:%g "$EX/owned")" = 777:888 ] || fail "chown did not reach A"
"$T/A.m" fs export --map=bogus "local:$EX" 2>/dev/null
[ $? = 2 ] || fail "a bad --map is not a usage error"

for f in "$T"/*.log; do
	grep -q "${REF##*/}" "$f" && fail "a ref's token was logged in $f"
done
exit 0
