# Busybox-style dispatch: `metac APPLET` and a link metac-APPLET behave the
# same; --list, --install, --help; usage errors exit 2; static binary.
. "$(dirname "$0")/lib.bash"

"$METAC" --list | grep -qx daemon || fail "--list lacks daemon"
"$METAC" --help | grep -q "usage: metac APPLET" || fail "--help"
ln -s "$METAC" "$T/metac-daemon"
"$T/metac-daemon" --help | grep -q "metac daemon \[--dir DIR\]" || fail "link --help"
"$METAC" daemon -h | grep -q "metac daemon \[--dir DIR\]" || fail "daemon -h"
for a in $("$METAC" --list); do
	"$METAC" "$a" --help >/dev/null || fail "$a --help exits non-zero"
done
"$METAC" no-such-applet 2>"$T/err"; [ $? -eq 2 ] || fail "unknown applet: exit not 2"
grep -q "unknown applet 'no-such-applet'" "$T/err" || fail "unknown applet message"
"$METAC" daemon --bogus 2>/dev/null; [ $? -eq 2 ] || fail "bad option: exit not 2"
"$METAC" ref frobnicate 2>/dev/null; [ $? -eq 2 ] || fail "bad command: exit not 2"
"$METAC" 2>/dev/null; [ $? -eq 2 ] || fail "no applet: exit not 2"
mkdir "$T/bin"
"$METAC" --install "$T/bin" || fail "--install"
for a in $("$METAC" --list); do
	[ -L "$T/bin/metac-$a" ] || fail "--install made no metac-$a"
done
"$T/bin/metac-node" --admin-socket "$T/none.sock" 2>"$T/err"
[ $? -eq 1 ] && grep -q "not running" "$T/err" || fail "metac-node without daemon"
# The release build is static (a SANITIZE=1 build is not, by design).
case $METAC in */build/san/*) ;; *)
	ldd "$METAC" 2>&1 | grep -q "not a dynamic executable" || fail "metac is not static" ;;
esac
exit 0
