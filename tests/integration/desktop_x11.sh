# Desktop sharing end to end with real VNC clients: an Xvfb screen with a
# known picture (x11_pattern.c) is exported by node A (network namespace
# a); node B (namespace b) restores the ref and `desktop attach` gives it a
# loopback VNC port. Through that port:
#   - TigerVNC's viewer (in a second Xvfb) shows the screen pixel for pixel
#     with Raw, ZRLE and lossless Tight, and within tolerance with Tight
#     JPEG; gtk-vnc's gvnccapture (ZRLE) matches exactly; vncsnapshot
#     (Tight) gets the picture;
#   - a change on the screen (the picture moved by 64 pixels) reaches the
#     viewer already connected, and so does a new screen size;
#   - a key typed and a button clicked in the viewer reach the X client on
#     the shared screen; cut text goes both ways;
#   - a view-only ref drops input;
#   - each viewer is served by a process of its own, confined (nobody, no
#     capabilities, seccomp on every thread, an empty root); killing it
#     costs only that viewer;
#   - attach --viewer runs the viewer and ends with it; errors are clear.
. "$(dirname "$0")/lib.bash"

# A viewer's session is sent a SIGSEGV below: a sanitized build is to die
# of it as the static one does, not report it as its own.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"

for t in Xvfb xrandr xtigervncviewer gvnccapture vncsnapshot xwd xwdtopnm pngtopnm djpeg xdotool xclip; do
	command -v $t >/dev/null || fail "$t is missing (contrib/install-deps.sh installs it)"
done
${CC:-gcc} -O2 -Wall -o "$T/x11_pattern" "$(dirname "$0")/x11_pattern.c" -lxcb ||
	fail "cannot build x11_pattern"

# xvfb NAME WxH: an X server on a free display (its number in DPY_NAME).
xvfb() {
	local fifo="$T/$1.dpy" d
	mkfifo "$fifo"
	Xvfb -displayfd 3 -screen 0 "$2"x24 -nolisten tcp -noreset 3>"$fifo" >"$T/xvfb-$1.log" 2>&1 &
	_pids+=($!)
	read -r -t 20 d <"$fifo" || fail "Xvfb $1 did not start"
	eval "DPY_$1=$d"
}
xvfb src 1024x768
xvfb view 1280x1024
SRC=:$DPY_src VIEW=:$DPY_view

# The picture, with commands on a fifo and what it saw in pattern.out.
mkfifo "$T/pattern.in"
DISPLAY=$SRC "$T/x11_pattern" <"$T/pattern.in" >"$T/pattern.out" 2>"$T/pattern.log" &
_pids+=($!)
exec 7>"$T/pattern.in"
for _ in $(seq 100); do grep -q ready "$T/pattern.out" && break; sleep 0.05; done
grep -q ready "$T/pattern.out" || fail "x11_pattern did not start"

# shot DISPLAY [WINDOW] > PPM
shot() {
	if [ -n "${2:-}" ]; then
		xwd -display "$1" -silent -id "$2"
	else
		xwd -display "$1" -silent -root
	fi | xwdtopnm 2>/dev/null
}
shot $SRC >"$T/screen.ppm"

# psnr A.ppm B.ppm: same size, PSNR in dB ("inf" when identical).
psnr() {
	python3 - "$1" "$2" <<-'EOF'
	import math, sys
	def rd(p):
	    d = open(p, 'rb').read()
	    magic, size, rest = d.split(b'\n', 2)
	    return size, rest.split(b'\n', 1)[1]
	(sa, a), (sb, b) = rd(sys.argv[1]), rd(sys.argv[2])
	if sa != sb or len(a) != len(b):
	    print(0); sys.exit()
	se = sum((x - y) ** 2 for x, y in zip(a, b))
	print('inf' if se == 0 else '%.1f' % (10 * math.log10(255 * 255 * len(a) / se)))
	EOF
}

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901

# --- errors --------------------------------------------------------------
expect_fail "no X server on display :9876" "$T/A.m" desktop export local-x11:9876
m A desktop export local:/tmp 2>"$T/err"
[ $? = 2 ] && grep -q "takes one local-x11" "$T/err" || fail "export local:/tmp: no usage error"

REF=$(m A desktop export "local-x11:$DPY_src") || fail "export failed"
RO=$(m A desktop export --view-only "local-x11:$DPY_src") || fail "view-only export failed"

# attach NAME REF [ARGS]: B's attach in the background, its port in PORT_NAME.
attach() {
	local name=$1 ref=$2
	shift 2
	"$T/B.m" desktop attach --viewer none "$@" "$ref" >"$T/$name.addr" 2>"$T/attach-$name.log" &
	_pids+=($!)
	eval "PID_$name=$!"
	for _ in $(seq 200); do [ -s "$T/$name.addr" ] && break; sleep 0.05; done
	[ -s "$T/$name.addr" ] || fail "attach $name printed no address"
	eval "PORT_$name=$(sed 's/.*://' "$T/$name.addr")"
}
attach rw "$REF"
attach ro "$RO"

VPID=
viewer_stop() {
	[ -n "$VPID" ] || return 0
	kill "$VPID" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$VPID" 2>/dev/null || break; sleep 0.1; done
	for _ in $(seq 50); do
		DISPLAY=$VIEW xdotool search --name TigerVNC >/dev/null 2>&1 || break
		sleep 0.1
	done
	VPID=
}

# viewer PORT ARGS...: TigerVNC's viewer on the viewing display at 0,0;
# its window id in VWIN.
viewer() {
	local port=$1
	shift
	viewer_stop
	DISPLAY=$VIEW xtigervncviewer -geometry 1024x768+0+0 -AutoSelect=0 -FullColor \
		-SecurityTypes None "$@" "127.0.0.1::$port" >>"$T/viewer.log" 2>&1 &
	VPID=$!
	_pids+=($VPID)
	VWIN=
	for _ in $(seq 100); do
		VWIN=$(DISPLAY=$VIEW xdotool search --name "TigerVNC" 2>/dev/null | head -1)
		[ -n "$VWIN" ] && return 0
		sleep 0.1
	done
	fail "the viewer did not open a window"
}

# shows REF.ppm [MIN_PSNR]: the viewer's window becomes the picture
# (identical, or at least MIN_PSNR dB) within 15 s.
shows() {
	local p=0
	for _ in $(seq 60); do
		shot $VIEW "$VWIN" >"$T/view.ppm"
		p=$(psnr "$1" "$T/view.ppm")
		[ "$p" = inf ] && return 0
		[ -n "${2:-}" ] && python3 -c "import sys; sys.exit(0 if $p >= $2 else 1)" && return 0
		sleep 0.25
	done
	fail "the viewer does not show the screen (PSNR $p dB, wanted ${2:-exact})"
}

for enc in "Raw" "ZRLE" "Tight -NoJPEG"; do
	set -- $enc
	viewer "$PORT_rw" -PreferredEncoding=$1 ${2:-}
	shows "$T/screen.ppm"
	echo "viewer, $enc: pixel for pixel"
done
viewer "$PORT_rw" -PreferredEncoding=Tight -QualityLevel=6
shows "$T/screen.ppm" 30
echo "viewer, Tight JPEG quality 6: $(psnr "$T/screen.ppm" "$T/view.ppm") dB"

# gtk-vnc (ZRLE): exact.
timeout 30 gvnccapture --quiet "127.0.0.1:$((PORT_rw - 5900))" "$T/gvnc.png" ||
	fail "gvnccapture failed"
pngtopnm "$T/gvnc.png" >"$T/gvnc.ppm"
[ "$(psnr "$T/screen.ppm" "$T/gvnc.ppm")" = inf ] || fail "gvnccapture's picture differs"
echo "gvnccapture: pixel for pixel"

# vncsnapshot (Tight, JPEG quality 6; it writes a JPEG of its own too).
timeout 30 vncsnapshot -quiet -allowblank -encodings "tight" -quality 6 \
	"127.0.0.1::$PORT_rw" "$T/snap.jpg" >/dev/null 2>"$T/vncsnapshot.log" ||
	fail "vncsnapshot failed: $(cat "$T/vncsnapshot.log")"
djpeg -pnm "$T/snap.jpg" >"$T/snap.ppm"
p=$(psnr "$T/screen.ppm" "$T/snap.ppm")
python3 -c "import sys; sys.exit(0 if $p >= 20 else 1)" || fail "vncsnapshot: PSNR $p dB"
echo "vncsnapshot (Tight, then its own JPEG): $p dB"

# --- updates: the picture moves under a connected viewer ----------------
viewer "$PORT_rw" -PreferredEncoding=ZRLE
shows "$T/screen.ppm"
echo "shift 64" >&7
for _ in $(seq 100); do grep -q shifted "$T/pattern.out" && break; sleep 0.05; done
shot $SRC >"$T/moved.ppm"
shows "$T/moved.ppm"
echo "a moved picture reaches a connected viewer"

# The screen shrinks (RandR): the viewer follows (DesktopSize), and back.
DISPLAY=$SRC xrandr --fb 800x600 >/dev/null 2>&1 # complains, but resizes Xvfb's screen
shot $SRC >"$T/small.ppm"
head -2 "$T/small.ppm" | grep -q "^800 600" || fail "xrandr did not resize the screen"
shows "$T/small.ppm"
DISPLAY=$SRC xrandr --fb 1024x768 >/dev/null 2>&1
shows "$T/moved.ppm"
echo "the viewer follows the screen's size"

# --- input ---------------------------------------------------------------
# No window manager gives the viewer the keyboard: xdotool does.
DISPLAY=$VIEW xdotool mousemove --window "$VWIN" 200 150 click 1 windowfocus --sync "$VWIN" key a
for _ in $(seq 100); do grep -q "key 0x61" "$T/pattern.out" && break; sleep 0.05; done
grep -q "key 0x61" "$T/pattern.out" || fail "the key did not reach the X client: $(cat "$T/pattern.out")"
grep -q "^button 1 200 150" "$T/pattern.out" ||
	fail "the click did not reach the X client at 200,150: $(cat "$T/pattern.out")"
echo "key and click reached the X client"

# Cut text: the viewer's clipboard to the shared screen's, and back.
# clip FROM TO SELECTION TEXT: TEXT cut on display FROM is pasted on TO.
clip() {
	local got=
	printf '%s' "$4" | DISPLAY=$1 xclip -i -selection "$3" >/dev/null 2>&1
	for _ in $(seq 100); do
		got=$(DISPLAY=$2 timeout 2 xclip -o -selection "$3" 2>/dev/null) &&
			[ "$got" = "$4" ] && return 0
		sleep 0.1
	done
	fail "cut text did not go from $1 to $2 (got '$got')"
}
clip $VIEW $SRC clipboard "from the viewer"
clip $SRC $VIEW primary "from the screen"
echo "cut text both ways"

# --- view only -----------------------------------------------------------
viewer "$PORT_ro" -PreferredEncoding=ZRLE
shows "$T/moved.ppm"
DISPLAY=$VIEW xdotool mousemove --window "$VWIN" 300 300 click 1 windowfocus --sync "$VWIN" key b
sleep 2
grep -q "key 0x62\|button 1 300 300" "$T/pattern.out" && fail "a view-only ref passed input on"
echo "view-only: input dropped, picture shown"

# --- each viewer's session: a confined process; its crash costs only it ---
spid=$(pgrep -nf "desktop _session .*--read-only")
[ -n "$spid" ] || fail "no session process for the connected viewer"
confined_nobody "$spid" "the RFB session"
session_crash "$spid" rfb A
timeout 30 gvnccapture --quiet "127.0.0.1:$((PORT_rw - 5900))" "$T/after.png" ||
	fail "no viewer served after a session crashed"
pngtopnm "$T/after.png" >"$T/after.ppm"
[ "$(psnr "$T/moved.ppm" "$T/after.ppm")" = inf ] || fail "the picture differs after a crash"
echo "viewer session $spid: uid 65534, CapEff 0, every thread Seccomp 2, empty root;" \
	"its crash (SIGSEGV) cost only its viewer"
viewer_stop

# --- the node's own display through DesktopAdmin --------------------------
attach local "local-x11:$DPY_src"
timeout 30 gvnccapture --quiet "127.0.0.1:$((PORT_local - 5900))" "$T/local.png" ||
	fail "gvnccapture of local-x11 failed"
pngtopnm "$T/local.png" >"$T/local.ppm"
[ "$(psnr "$T/moved.ppm" "$T/local.ppm")" = inf ] || fail "local-x11's picture differs"
echo "local-x11 through the daemon: pixel for pixel"

# --- attach --viewer: runs it, ends with it -------------------------------
cat >"$T/viewer.sh" <<EOF
#!/bin/sh
vncsnapshot -quiet -allowblank "\$1" "$T/byviewer.jpg" >/dev/null 2>&1 || exit 9
exit 7
EOF
chmod +x "$T/viewer.sh"
timeout 60 "$T/B.m" desktop attach --viewer "$T/viewer.sh" "$REF" 2>"$T/attach-viewer.log"
rc=$?
[ $rc = 7 ] || fail "attach --viewer ended with $rc, not the viewer's 7"
[ -s "$T/byviewer.jpg" ] || fail "the viewer started by attach got no picture"
echo "attach --viewer: the viewer ran and attach ended with its status"

# A display that goes away: viewers are told why.
expect_fail "no X server on display :9876" "$T/B.m" desktop attach --viewer none local-x11:9876
echo "ok"
