# What contrib/ ships for a real installation: `make install` into a
# staging root lays out the binary, its applet links, the man page, the
# bash completion and the systemd unit; the man page renders without a
# warning and names every applet; systemd accepts the unit; the procd
# script parses; the completion completes applets, commands and options;
# and the daemon logs to syslog when it has no terminal (to stderr when
# asked).
. "$(dirname "$0")/lib.bash"

top=$(cd "$(dirname "$0")/../.." && pwd)
c=$top/contrib
applets=$("$METAC" --list) || fail "metac --list"

# --- make install ---
make -s -C "$top" install DESTDIR="$T/root" PREFIX=/usr >"$T/install.log" 2>&1 ||
	fail "make install: $(tail -5 "$T/install.log")"
for f in usr/bin/metac usr/share/man/man1/metac.1 usr/share/bash-completion/completions/metac \
	etc/systemd/system/metac.service; do
	[ -f "$T/root/$f" ] || fail "make install did not install /$f"
done
for a in $applets; do
	[ -L "$T/root/usr/bin/metac-$a" ] || fail "make install made no metac-$a link"
done
grep -q '^ExecStart=/usr/bin/metac daemon' "$T/root/etc/systemd/system/metac.service" ||
	fail "the installed unit does not run /usr/bin/metac"

# --- the man page ---
out=$(groff -man -ww -z "$c/metac.1" 2>&1)
[ -z "$out" ] || fail "the man page has warnings: $out"
for a in $applets; do
	grep -q "^\.B $a\b\|^\.B $a " "$c/metac.1" || fail "the man page does not describe $a"
done

# --- the systemd unit and the procd script ---
sed "s|/usr/local/bin/metac|$METAC|" "$c/metac.service" >"$T/metac.service"
systemd-analyze verify --man=no "$T/metac.service" >"$T/verify" 2>&1 ||
	fail "systemd rejects the unit: $(cat "$T/verify")"
sh -n "$c/metac.init" || fail "the procd script does not parse"
grep -q '^USE_PROCD=1' "$c/metac.init" || fail "the init script is not a procd one"

# --- bash completion ---
complete_words() {
	bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _metac; printf "%s\n" "${COMPREPLY[@]}"' \
		_ "$c/metac.bash-completion" "$@"
}
for a in $applets; do
	complete_words "$METAC" "" | grep -qx "$a" || fail "completion does not offer applet $a"
done
[ "$(complete_words "$METAC" net b)" = bind ] || fail "completion of 'net b': $(complete_words "$METAC" net b)"
complete_words "$METAC" run --me | grep -q -- '--memory=' || fail "completion of run options"
complete_words metac-vm st | grep -qx start || fail "completion through a metac-vm link"

# --- syslog when there is no terminal, stderr when asked ---
command -v socat >/dev/null || fail "socat is missing"
# The daemon's syslog() goes to /dev/log: a private one in a mount
# namespace of its own catches it.
cat >"$T/syslog-test.sh" <<SH
mount -t tmpfs tmp /dev/shm || exit 1
socat -u UNIX-RECV:/dev/shm/log CREATE:$T/syslog.out &
sleep 0.3
mount --bind /dev/shm/log /dev/log || exit 1
METAC_LOG= timeout 3 "$METAC" daemon --dir "$T/n1" --listen 127.0.0.1:$((20000 + $$ % 20000)) \
	--admin-socket "$T/n1.sock" >"$T/n1.stderr" 2>&1 </dev/null
kill %1
SH
# A mount point for it: /dev/log is a socket where a syslog daemon runs;
# made (and removed after) where none does.
if [ ! -e /dev/log ]; then
	touch /dev/log || fail "cannot make /dev/log"
	at_exit "rm -f /dev/log"
fi
unshare -m bash "$T/syslog-test.sh" >"$T/syslog-test.log" 2>&1
grep -q 'metac.*listening on' "$T/syslog.out" 2>/dev/null ||
	fail "no terminal, yet nothing reached syslog: $(cat "$T/syslog-test.log") / $(cat "$T/n1.stderr")"
grep -q 'listening on' "$T/n1.stderr" && fail "with syslog, the daemon still wrote to stderr"
METAC_LOG=stderr timeout 3 "$METAC" daemon --dir "$T/n2" --listen 127.0.0.1:$((21000 + $$ % 20000)) \
	--admin-socket "$T/n2.sock" >"$T/n2.stderr" 2>&1 </dev/null
grep -q 'listening on' "$T/n2.stderr" || fail "--log stderr: $(cat "$T/n2.stderr")"

echo "contrib_files: all checked"
