# metac's own 9P2000.L server (`metac fs serve9p local:PATH`, no daemon)
# against diod's clients, software nobody here wrote, over TCP and a unix
# socket: listings (spaces, non-UTF-8 names, a directory of 300 long
# names) and reads come back exact at msizes from 8192 to 1 MiB; nothing
# outside the export is reachable by "..", absolute or relative symlinks,
# or a symlink to a directory; load from 16 connections at once; a
# read-only export takes no writes; plain 9p is refused on a non-loopback
# address; hostile bytes, a second Tversion and a stalled client affect
# only their own connection.
. "$(dirname "$0")/lib.bash"
export LC_ALL=C # names are bytes, not necessarily UTF-8

command -v diodls >/dev/null || fail "diod's clients are missing (contrib/install-deps.sh installs diod)"

EX=$T/export
O=$T/client # every client's output, searched for /etc/passwd at the end
mkdir -p "$EX/sub/deeper" "$EX/many" "$O"
echo hello >"$EX/a.txt"
echo spaces >"$EX/name with  spaces.txt"
head -c 3000 /dev/urandom >"$EX/$(printf 'caf\xe9')"           # Latin-1, not UTF-8
head -c 100 /dev/urandom >"$EX/sub/$(printf '\xff\xfe bytes')"
echo inner >"$EX/sub/deeper/inner"
head -c 5242880 /dev/urandom >"$EX/big"
chmod 644 "$EX/big"
head -c 1048576 /dev/zero >"$EX/zero" # diodload reads "zero" and writes "null"
: >"$EX/null"
# 300 names of 240 bytes: more than one Treaddir at msize 65536.
pad=$(printf '%0220d' 0 | tr 0 x)
for i in $(seq -w 300); do : >"$EX/many/$i-$pad"; done
ln -s /etc/passwd "$EX/abs_evil"
ln -s ../../../../etc/passwd "$EX/rel_evil"
ln -s /etc "$EX/outdir"
ln -s ../../.. "$EX/sub/up"
grep -v '^$' /etc/passwd >"$T/passwd.lines"
[ -s "$T/passwd.lines" ] || fail "/etc/passwd is empty: nothing to look for"

# serve NAME ARGS...: serve9p ARGS on a free loopback port; its port in
# PORT_NAME, its pid in PID_NAME. Ready once it listens (ss shows its pid).
serve() {
	local name=$1 port pid
	shift
	for _ in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 30000))
		ss -Hltn "sport = :$port" | grep -q . && continue
		"$METAC" fs serve9p --listen "127.0.0.1:$port" "$@" 2>"$T/$name.log" &
		pid=$!
		_pids+=($pid)
		for _ in $(seq 200); do
			if ss -Hltnp "sport = :$port" | grep -q "pid=$pid,"; then
				eval "PORT_$name=$port PID_$name=$pid"
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break # the port was taken: another
			sleep 0.05
		done
	done
	fail "serve9p $name did not listen: $(cat "$T/$name.log")"
}

# c CMD...: a client, never allowed to hang.
c() { timeout 60 "$@"; }

alive() {
	kill -0 "$PID_rw" 2>/dev/null || fail "serve9p died $1"
	[ "$(c diodcat -s "$S" -a x a.txt 2>&1)" = hello ] || fail "serve9p stopped serving $1"
}

# names DIR: the entries of $EX/DIR, one a line, sorted.
names() { find "$EX/$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort; }

# expect_ls OUT DIR ARGS...: diodls ARGS lists exactly the entries of DIR.
expect_ls() {
	local out=$1 dir=$2
	shift 2
	c diodls -s "$S" -a x "$@" >"$O/$out" 2>"$O/$out.err" ||
		fail "diodls $*: $(cat "$O/$out.err")"
	names "$dir" >"$T/want"
	sort "$O/$out" >"$T/got"
	cmp -s "$T/want" "$T/got" || fail "diodls $* listed: $(diff "$T/want" "$T/got" | head)"
}

serve rw "local:$EX"
serve ro --read-only "local:$EX"
S=127.0.0.1:$PORT_rw
grep -q "serving $EX as 9P2000.L on 127.0.0.1:$PORT_rw" "$T/rw.log" ||
	fail "serve9p did not say what it serves: $(cat "$T/rw.log")"

# --- listings ---
expect_ls ls_root . /
expect_ls ls_sub sub sub
expect_ls ls_deeper sub/deeper sub/deeper
expect_ls ls_many many many
[ "$(wc -l <"$O/ls_many")" -eq 300 ] || fail "a directory of 300 was not listed whole"
expect_ls ls_many_small many -m 8192 many
# ".." never climbs above the root: it lists the export itself.
expect_ls ls_up . ..
expect_ls ls_upup . sub/../../..
# Long listings: a walk and a getattr per name, "." and ".." included.
# expect_ls_long OUT DIR PATH: diodls -l PATH shows exactly DIR's entries.
expect_ls_long() {
	c diodls -s "$S" -a x -l "$3" >"$O/$1" 2>"$O/$1.err" || fail "diodls -l $3: $(cat "$O/$1.err")"
	# mode nlink user group size "Mmm dd hh:mm" name
	sed -E 's/^[^ ]+ +[0-9]+ [^ ]+ [^ ]+ +[0-9]+ [A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2} //' \
		"$O/$1" | sort >"$T/got"
	{ names "$2"; printf '.\n..\n'; } | sort >"$T/want"
	cmp -s "$T/want" "$T/got" || fail "diodls -l $3 listed: $(diff "$T/want" "$T/got" | head)"
}
expect_ls_long ls_long . /
expect_ls_long ls_long_sub sub sub
expect_ls_long ls_long_many many many
grep -Eq '^-rw-r--r--\. +1 [^ ]+ [^ ]+ +5242880 .* big$' "$O/ls_long" ||
	fail "diodls -l shows big wrongly: $(grep 'big$' "$O/ls_long")"
grep -Eq '^d.* sub$' "$O/ls_long" || fail "diodls -l: sub is not a directory"

# --- reads ---
# catfile PATH ARGS...: diodcat ARGS PATH returns the bytes of $EX/PATH.
catfile() {
	local p=$1
	shift
	c diodcat -s "$S" -a x "$@" "$p" >"$O/cat" 2>"$O/cat.err" ||
		fail "diodcat $* '$p': $(cat "$O/cat.err")"
	cmp -s "$O/cat" "$EX/$p" || fail "diodcat $* '$p' returned other bytes"
}
catfile a.txt
catfile "name with  spaces.txt"
catfile "$(printf 'caf\xe9')"
catfile "sub/$(printf '\xff\xfe bytes')"
catfile sub/deeper/inner
catfile sub/../a.txt
for ms in 8192 65536 1048576; do catfile big -m $ms; done

# --- escapes: every one fails and shows nothing from outside ---
for p in ../../etc/passwd ../../../../../../../../../../etc/passwd /etc/passwd \
	sub/../../etc/passwd sub/deeper/../../../../etc/passwd ./../etc/passwd \
	abs_evil rel_evil outdir/passwd outdir/../etc/passwd sub/up/etc/passwd; do
	echo "== $p" >>"$O/escape"
	c diodcat -s "$S" -a x "$p" >>"$O/escape" 2>&1 && fail "diodcat '$p' succeeded"
done
for p in outdir outdir/ sub/up sub/up/etc; do
	c diodls -s "$S" -a x "$p" >"$T/ls" 2>&1 && fail "diodls '$p' succeeded"
	grep -qx -e passwd -e group -e hostname "$T/ls" && fail "diodls '$p' listed /etc: $(head "$T/ls")"
	cat "$T/ls" >>"$O/escape"
done
# Symlinks are served as symlinks, not followed: -l shows the link itself.
c diodls -s "$S" -a x -l / | grep -q ' outdir$' || fail "the symlink outdir is not listed"

# --- load: 16 connections at once ---
# diodload exits 0 even on errors, which it prints: expect only its rate.
load() {
	local out=$1 ops
	shift
	c diodload "$@" >"$O/$out" 2>&1 || fail "diodload $*: exit $? ($(cat "$O/$out"))"
	grep -v ' ops/s, ' "$O/$out" | grep -q . && fail "diodload $*: $(cat "$O/$out")"
	ops=$(sed -nE 's/.* ([0-9]+) ops\/s, .*/\1/p' "$O/$out")
	[ -n "$ops" ] && [ "$ops" -gt 0 ] || fail "diodload $* did nothing: $(cat "$O/$out")"
}
load load_rw -s "$S" -r 2 -n 16
# Each thread wrote msize - 24 bytes (one Twrite) of zeros at offset 0.
[ "$(stat -c %s "$EX/null")" = 65512 ] || fail "null holds $(stat -c %s "$EX/null") bytes, not 65512"
cmp -s "$EX/null" <(head -c 65512 /dev/zero) || fail "null holds other bytes than zeros"
load load_rw1m -s "$S" -r 1 -n 4 -m 1048576
load load_getattr -s "$S" -r 2 -n 16 -g
alive "after diodload"

# --- read-only ---
sum=$(stat -c '%s %Y' "$EX/null")$(sha256sum <"$EX/null")
c diodload -s "127.0.0.1:$PORT_ro" -r 1 -n 2 >"$O/load_ro" 2>&1
grep -q "open null: Read-only file system" "$O/load_ro" ||
	fail "a read-only export took writes: $(cat "$O/load_ro")"
grep -q ' 0 ops/s, ' "$O/load_ro" || fail "diodload did something read-only: $(cat "$O/load_ro")"
[ "$(stat -c '%s %Y' "$EX/null")$(sha256sum <"$EX/null")" = "$sum" ] ||
	fail "the read-only export changed null"
S_rw=$S
S=127.0.0.1:$PORT_ro
catfile a.txt
catfile big -m 1048576
expect_ls ls_ro . /
load load_ro_getattr -s "$S" -r 1 -n 4 -g
S=$S_rw

# --- a unix socket: diod's clients take a path for -s ---
"$METAC" fs serve9p --listen "unix:$T/9p.sock" "local:$EX" 2>"$T/unix.log" &
_pids+=($!)
for i in $(seq 200); do
	ss -Hlxp | grep -q "$T/9p.sock .*pid=$!," && break
	[ "$i" = 200 ] && fail "serve9p did not listen on unix:$T/9p.sock"
	sleep 0.05
done
S=$T/9p.sock
expect_ls ls_unix . /
catfile big -m 65536
S=$S_rw

# --- the command line ---
port=$((20000 + RANDOM % 30000))
expect_fail "listens on loopback or unix sockets only (--insecure to override)" \
	"$METAC" fs serve9p --listen "0.0.0.0:$port" "local:$EX"
expect_fail "loopback or unix sockets only" "$METAC" fs serve9p --listen "[::]:$port" "local:$EX"
ss -Hltn "sport = :$port" | grep -q . && fail "serve9p listened on 0.0.0.0"
expect_fail "cannot export $T/none" "$METAC" fs serve9p --listen 127.0.0.1:1 "local:$T/none"
expect_fail "cannot export $EX/a.txt: Not a directory" \
	"$METAC" fs serve9p --listen 127.0.0.1:1 "local:$EX/a.txt"
# expect_usage PATTERN ARGS...: serve9p ARGS exits 2 with PATTERN.
expect_usage() {
	local pat=$1 rc
	shift
	timeout 20 "$METAC" fs serve9p "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ $rc -eq 2 ] || fail "expected exit 2, got $rc: serve9p $* ($(cat "$T/err"))"
	grep -q -- "$pat" "$T/err" || fail "expected '$pat' from serve9p $* (got: $(cat "$T/err"))"
	grep -q "usage:" "$T/err" || fail "no usage from serve9p $*"
}
expect_usage "needs --listen" "local:$EX"
expect_usage "takes one local:PATH or REF" --listen 127.0.0.1:1
expect_usage "takes one local:PATH or REF" --listen 127.0.0.1:1 "$EX"
expect_usage "takes one local:PATH or REF" --listen 127.0.0.1:1 "local:$EX" "local:$EX"
expect_usage "--map is mounter or passthrough" --listen 127.0.0.1:1 --map=bogus "local:$EX"
expect_usage "unknown option" --listen 127.0.0.1:1 --bogus "local:$EX"

# --- hostile bytes: the server closes that connection, serves the rest ---
# hostile NAME [WHY] <BYTES: send BYTES on a new connection, then read until
# the server closes it; a hang fails (with WHY). The answer is in
# $O/hostile-NAME.
hostile() {
	local fd rc
	exec {fd}<>"/dev/tcp/127.0.0.1/$PORT_rw" || fail "cannot connect for $1"
	# In a subshell: a write to a closed connection must not kill us.
	(cat >&$fd) 2>/dev/null
	timeout 10 cat <&$fd >"$O/hostile-$1" 2>/dev/null
	rc=$?
	exec {fd}>&-
	[ $rc -eq 124 ] && fail "${2:-the server kept a connection open after $1}"
	alive "after $1"
}
# v9p MSIZE: a Tversion with that msize (tag NOTAG).
v9p() { printf '\x15\x00\x00\x00\x64\xff\xff%b\x08\x009P2000.L' "$(le32 "$1")"; }
byte() { od -An -tu1 -j"$2" -N1 "$1" | tr -d ' '; }
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) \
	$(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
hostile garbage < <(printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'; head -c 60000 /dev/urandom)
hostile huge_size < <(printf '\xff\xff\xff\xff\x64\x00\x00')
hostile tiny_size < <(printf '\x03\x00\x00\x00\x64\x00\x00')
# Tattach (tag 1, fid 1, no afid, empty names, uid 0) before Tversion.
attach='\x17\x00\x00\x00\x68\x01\x00\x01\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00'
hostile attach_first < <(printf "$attach")
[ -s "$O/hostile-attach_first" ] && fail "an attach before Tversion was answered"
hostile huge_after_version < <(v9p 8192; printf '\xff\xff\xff\x7f\x6e\x01\x00')
# The Rversion came, then nothing: size 21, type 101, msize 8192, "9P2000.L".
cmp -s "$O/hostile-huge_after_version" <(printf '\x15\x00\x00\x00\x65\xff\xff\x00\x20\x00\x00\x08\x009P2000.L') ||
	fail "unexpected answer to Tversion: $(od -An -tx1 "$O/hostile-huge_after_version")"
# An msize of 4 GiB is cut down; a message larger than what was agreed
# (2 MiB) still closes the connection.
hostile big_msize < <(v9p 4294967295; printf '\x00\x00\x20\x00\x6e\x01\x00'; head -c 100 /dev/zero)
ms=$(od -An -tu4 -j7 -N4 "$O/hostile-big_msize" | tr -d ' ')
[ -n "$ms" ] && [ "$ms" -ge 65536 ] && [ "$ms" -le 2097152 ] || fail "agreed msize: '$ms'"
# Tversion with a version string longer than the message.
hostile short_string < <(printf '\x15\x00\x00\x00\x64\xff\xff\x00\x20\x00\x00\xff\xff9P2000.L')
grep -q "closing the session" "$T/rw.log" || fail "closing hostile sessions was not logged"

# A second Tversion starts the session over: answered, fids dropped.
hostile reversion "a second Tversion (after a Tattach) hung its session" < <(v9p 65536; printf "$attach"; v9p 65536; printf "$attach"
	printf '\xff\xff\xff\x7f\x6e\x01\x00')
# Rversion, Rattach, Rversion, Rattach (fid 1 is free again): 82 bytes.
r=$O/hostile-reversion
[ "$(stat -c %s "$r")" = 82 ] && [ "$(byte "$r" 4) $(byte "$r" 25) $(byte "$r" 45) $(byte "$r" 66)" = \
	"101 105 101 105" ] || fail "a second Tversion was not answered in order: $(od -An -tx1 "$r")"

# A client stalled in the middle of a message holds only its own session.
exec {stall}<>"/dev/tcp/127.0.0.1/$PORT_rw" || fail "cannot connect"
{ v9p 65536; printf '\xe8\x03\x00\x00\x6e\x01\x00\x01\x00'; } >&$stall
expect_ls ls_stalled . /
catfile big -m 1048576
load load_stalled -s "$S" -r 1 -n 4
exec {stall}>&-
alive "after a stalled client"

# Nothing read through the server ever showed a line of /etc/passwd.
grep -rqaF -f "$T/passwd.lines" "$O" && fail "bytes of /etc/passwd came through: $(grep -rlaF -f "$T/passwd.lines" "$O")"
exit 0
