#!/bin/bash
# Desktop sharing side by side, in one run, on one Xvfb screen of
# 1920x1080: how many full-screen changes a second reach a VNC viewer,
# and how many bytes each takes, from
#   metac        `metac desktop serve local-x11:N` (plain RFB on loopback);
#   x11vnc       Debian's x11vnc on the same display;
#   metac-enc    daemon A exports the display (`metac desktop export`),
#                daemon B attaches it (`metac desktop attach --viewer none`):
#                viewer -> attach's loopback port -> B -> Noise/TCP -> A.
# The picture is tests/integration/x11_pattern.c's animation, in which
# every pixel changes from one frame to the next. The viewer is
# rfb_fps.c: in lock step, it has the picture draw the next frame, then
# takes updates (always one request outstanding, as viewers do) until
# the whole screen has come; the next frame starts only then. So a frame
# costs drawing (a few ms: the "x11_pattern alone" row), capture,
# encoding and transport, and frames per second are one over that
# latency; bytes per frame are those of one full-screen change. It asks
# for each encoding in turn, with CopyRect and DesktopSize as viewers do:
#   tight-q6     Tight with JPEG quality level 6 (TigerVNC's viewer asks
#                for 8, vncviewers of the TightVNC line for 6); what a
#                level means is each server's choice (libvncserver, in
#                x11vnc, follows TigerVNC's table: JPEG quality 79 with no
#                chroma subsampling at 6), so compare bytes with that in
#                mind (tight-q9 is JPEG quality 100 in both);
#   zrle         ZRLE (no JPEG: close to raw size for this picture's noise);
#   raw          Raw: capture and transport alone.
# and no compression level: each server uses its own default.
#
# x11vnc runs with its defaults for capture (-xdamage hints plus its
# scanline polling, MIT-SHM, -wait 20 ms between polls, -defer 20 ms
# before an update goes out, no threads); those defaults bound its
# frame rate, and are what its users get. Only what would otherwise
# differ from a viewer's point of view is set: -shared -forever (the
# viewer connects once per encoding), -localhost (as metac's plain
# serve), -nopw -norc (no prompt, no ~/.x11vncrc), -nocursor (metac does
# not draw the cursor into the picture either).
#
# Prints frames per second, KiB per frame, the CPU time the server side
# (the serving process; for metac-enc both daemons and attach) spent per
# frame, the frame time's median and maximum, the area sent per frame
# in screens (above 1 when a server sent parts it had captured while the
# picture was being drawn, and then again), the ratios metac / x11vnc,
# and any warning in metac's logs. Never fails on timing. Exits 1 if something is broken: a
# server that does not start, or a run that does not get every frame
# (after the table, with the row marked BROKEN).
#
# Environment: METAC (required), CC (default gcc), BENCH_DESKTOP_FRAMES
# (counted frames per row, default 60), BENCH_DESKTOP_ENCODINGS (default
# "tight-q6 zrle raw"; tight-qN for other levels, tight for no JPEG),
# BENCH_RUNS (best of, default 1), BENCH_TIMEOUT (seconds per row,
# default 120).
set -u
: "${METAC:?METAC must point at the metac binary}"
FRAMES=${BENCH_DESKTOP_FRAMES:-60}
ENCODINGS=${BENCH_DESKTOP_ENCODINGS:-"tight-q6 zrle raw"}
RUNS=${BENCH_RUNS:-1}
TMO=${BENCH_TIMEOUT:-120}
WARMUP=3
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.bash
. "$HERE/lib.bash"

for tool in Xvfb x11vnc "${CC:-gcc}" ss setsid timeout /usr/bin/time; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done
[ -x "$METAC" ] || fail "no metac binary at $METAC"
"${CC:-gcc}" -O2 -Wall -o "$T/x11_pattern" "$HERE/../integration/x11_pattern.c" -lxcb \
	2>"$T/cc.log" || fail "cannot build x11_pattern (libxcb1-dev? run contrib/install-deps.sh)"
"${CC:-gcc}" -O2 -Wall -Wextra -o "$T/rfb_fps" "$HERE/rfb_fps.c" 2>>"$T/cc.log" ||
	fail "cannot build rfb_fps"

echo "== desktop: full-screen changes at 1920x1080, $FRAMES frames per row, best of $RUNS;" \
	"$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# The screen, on a free display (Xvfb writes its number on the fifo).
mkfifo "$T/display"
Xvfb -displayfd 3 -screen 0 1920x1080x24 -nolisten tcp -noreset 3>"$T/display" \
	>"$T/xvfb.log" 2>&1 &
_pids+=($!)
read -r -t 20 DPY <"$T/display" || fail "Xvfb did not start"
export DISPLAY=:$DPY

# wait_addr FILE PID: until the server (PID) prints HOST:PORT into FILE.
wait_addr() {
	for _ in $(seq 200); do
		grep -q ':[0-9]' "$1" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# --- the servers, all up for the whole run (idle ones do not capture) ---
declare -A ADDR SRV
port=$(free_port)
"$METAC" desktop serve --listen "127.0.0.1:$port" "local-x11:$DPY" >"$T/serve.addr" \
	2>"$T/serve.log" &
_pids+=($!)
SRV[metac]=$!
wait_addr "$T/serve.addr" "${SRV[metac]}" || fail "metac desktop serve does not start"
ADDR[metac]=$(head -n 1 "$T/serve.addr")

port=$(free_port)
x11vnc -display "$DISPLAY" -rfbport "$port" -localhost -shared -forever -nopw -norc \
	-nocursor >"$T/x11vnc.out" 2>"$T/x11vnc.log" &
_pids+=($!)
SRV[x11vnc]=$!
for _ in $(seq 200); do
	[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && break
	kill -0 "${SRV[x11vnc]}" 2>/dev/null || break
	sleep 0.05
done
[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] || fail "x11vnc does not start"
ADDR[x11vnc]=127.0.0.1:$port

daemon_start A || fail "daemon A does not start"
daemon_start B || fail "daemon B does not start"
REF=$("$METAC" desktop export --admin-socket "$T/A.sock" "local-x11:$DPY" 2>"$T/export.log") ||
	fail "metac desktop export fails: $(cat "$T/export.log")"
"$METAC" desktop attach --admin-socket "$T/B.sock" --viewer none "$REF" >"$T/attach.addr" \
	2>"$T/attach.log" &
_pids+=($!)
PID_attach=$!
wait_addr "$T/attach.addr" "$PID_attach" || fail "metac desktop attach does not start"
ADDR[metac-enc]=$(head -n 1 "$T/attach.addr")
SRV[metac-enc]="$PID_A,$PID_B,$PID_attach"

PEERS=(metac x11vnc metac-enc)

# The picture alone: the ceiling of a frame rate in lock step.
if timed "'$T/rfb_fps' -p '$T/x11_pattern' -A -n $FRAMES -w $WARMUP >'$T/alone.out' 2>'$T/alone.err'"; then
	ALONE=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' "$T/alone.out")
	ALONE=$(awk -v n="$FRAMES" -v s="$ALONE" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
else
	broken "x11_pattern alone: $(cat "$T/alone.err")"
	ALONE=BROKEN
fi

# field NAME FILE: NAME=VALUE from rfb_fps's line.
field() {
	sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" "$2" | head -n 1
}

# measure PEER ENCODING: one run; keeps the best frame rate in BEST and
# its figures in KIB/CPU/DETAIL.
declare -A BEST KIB CPU DETAIL FAILED
measure() {
	local peer=$1 enc=$2 key="$1 $2" args out fps
	[ -n "${FAILED[$key]:-}" ] && return
	case $enc in
	tight-q[0-9]) args="-e tight -q ${enc#tight-q}" ;;
	tight | zrle | raw) args="-e $enc" ;;
	*) fail "unknown encoding '$enc' in BENCH_DESKTOP_ENCODINGS" ;;
	esac
	out="$T/fps-$peer-$enc"
	timed "'$T/rfb_fps' -p '$T/x11_pattern' $args -n $FRAMES -w $WARMUP -s '${SRV[$peer]}' ${ADDR[$peer]} >'$out.out' 2>'$out.err'"
	local rc=$?
	if [ $rc -ne 0 ] || [ -z "$(field frames "$out.out")" ]; then
		broken "$key: the viewer failed (exit $rc): $(tail -n 1 "$out.err")"
		FAILED[$key]=1
		return
	fi
	fps=$(awk -v n="$FRAMES" -v s="$(field seconds "$out.out")" \
		'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
	awk -v a="$fps" -v b="${BEST[$key]:-0}" 'BEGIN { exit !(a > b) }' || return
	BEST[$key]=$fps
	KIB[$key]=$(awk -v b="$(field bytes "$out.out")" -v n="$FRAMES" \
		'BEGIN { printf "%.1f", b / n / 1024 }')
	CPU[$key]=$(awk -v c="$(field server_cpu "$out.out")" -v n="$FRAMES" \
		'BEGIN { printf "%.1f ms", c * 1000 / n }')
	DETAIL[$key]=$(awk -v k="${KIB[$key]}" -v p="$(field p50_ms "$out.out")" \
		-v m="$(field max_ms "$out.out")" -v c="$(field client_cpu "$out.out")" \
		-v u="$(field updates "$out.out")" -v a="$(field screens "$out.out")" -v n="$FRAMES" \
		'BEGIN { printf "%8.1f KiB; %5.1f / %5.1f ms; %4.2f screens in %3.1f updates; viewer %.1f ms",
			k, p, m, a / n, u / n, c * 1000 / n }')
}

# Round by round, every peer once per round: a machine that slows down
# for a while slows all of them alike.
for _ in $(seq "$RUNS"); do
	for enc in $ENCODINGS; do
		for peer in "${PEERS[@]}"; do
			measure "$peer" "$enc"
		done
	done
done

row "x11_pattern alone" "$ALONE" fps "" "drawing a frame, the lock step's ceiling"
for enc in $ENCODINGS; do
	for peer in "${PEERS[@]}"; do
		key="$peer $enc"
		if [ -n "${FAILED[$key]:-}" ]; then
			row "$key" BROKEN "" "" ""
		else
			row "$key" "${BEST[$key]}" fps "${CPU[$key]}" "${DETAIL[$key]}"
			VAL["$key KiB"]=${KIB[$key]}
		fi
	done
done

echo
print_table 20 "srv CPU/fr" "per frame: bytes; time p50 / max; area sent, in updates; viewer CPU" 3
echo
echo "   ratios:"
for enc in $ENCODINGS; do
	ratio "$enc fps: metac / x11vnc" "metac $enc" "x11vnc $enc" "(higher is better)"
	ratio "$enc bytes: metac / x11vnc" "metac $enc KiB" "x11vnc $enc KiB" "(lower is better)"
done
for enc in $ENCODINGS; do
	ratio "$enc fps: encrypted / plain" "metac-enc $enc" "metac $enc" ""
done
for f in "$T/serve.log" "$T/A.log" "$T/B.log" "$T/attach.log"; do
	grep -E -i 'warn|error|fail|ended' "$f" | sed "s|^|   $(basename "$f"): |" | head -n 5
done
finish
