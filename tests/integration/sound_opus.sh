# Sound between two nodes (network namespaces) through Opus over the
# transport. One PulseAudio daemon, started here, is both nodes' mixer
# (null sinks: there is no sound card; each node uses devices of its own
# names), so that one recording can hold both ends of the path and the
# latency is measured on one clock:
#   - A exports newlocalsink:tone (a sink programs on A play into); B
#     binds it to localsink:speaker (a "sound card" on B): a 1 kHz sine
#     played into tone on A comes out of speaker on B, its frequency within
#     1 Hz and its SNR above 30 dB; the end-to-end latency is printed;
#   - B exports newlocalsource:mic (a source programs on B record from);
#     A binds its tone.monitor (localsource:) to it: the sine reaches mic;
#   - each stream is coded in a process of its own, nobody in an empty
#     root under a seccomp filter; one killed costs only its stream;
#   - `sound list` shows the devices; errors are clear.
. "$(dirname "$0")/lib.bash"
# A session is killed with SIGSEGV below: a sanitized build dies of it.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"

for t in pulseaudio pactl parec pacat; do
	command -v $t >/dev/null || fail "$t is missing (contrib/install-deps.sh installs it)"
done

# pulse NAME: a PulseAudio daemon (system mode: the tests run as root)
# whose clients use PULSE_NAME. It runs as the user pulse, so its socket
# is in a folder of its own outside $T.
pulse() {
	local dir
	dir=$(mktemp -d /tmp/metac-pa.XXXXXX) || fail "mktemp"
	at_exit "rm -rf '$dir'"
	chown pulse "$dir" || fail "no user pulse (package pulseaudio makes it)"
	DBUS_SYSTEM_BUS_ADDRESS=none pulseaudio --system -n --daemonize=no --disallow-exit \
		--use-pid-file=false --exit-idle-time=-1 \
		--load="module-native-protocol-unix auth-anonymous=1 socket=$dir/sock" \
		>"$T/pulse-$1.out" 2>&1 &
	_pids+=($!)
	eval "PULSE_$1=unix:$dir/sock"
	for _ in $(seq 100); do
		PULSE_SERVER=unix:$dir/sock pactl info >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	fail "PulseAudio $1 did not start: $(tail -5 "$T/pulse-$1.out")"
}
pulse A
PULSE_B=$PULSE_A
pa() { local s=$1; shift; PULSE_SERVER=$s "$@"; }
pa "$PULSE_B" pactl load-module module-null-sink sink_name=speaker rate=48000 >/dev/null ||
	fail "cannot make B's speaker"

netns_pair a b
PULSE_SERVER=$PULSE_A daemon_start A a 10.77.0.1:901
PULSE_SERVER=$PULSE_B daemon_start B b 10.77.0.2:901

# --- errors ----------------------------------------------------------------
m A sound export speaker 2>"$T/err"
[ $? = 2 ] || fail "export of a bad URI: no usage error"
expect_fail "PulseAudio has no sink 'nosuch'" "$T/A.m" sound export localsink:nosuch

REF=$(m A sound export newlocalsink:tone) || fail "export newlocalsink failed"
m A sound list >"$T/list" || fail "sound list failed"
grep -q "^source *tone.monitor" "$T/list" || fail "list lacks tone.monitor: $(cat "$T/list")"
m A sound list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert any(x["name"]=="tone" and x["kind"]=="sink" for x in d)' ||
	fail "list --json lacks the sink tone"
expect_fail "both devices are sources" "$T/B.m" sound bind "$REF" "$REF"

# The signal: 0.5 s of silence, then 3 s of a 1 kHz sine (48 kHz stereo).
python3 - "$T/sine.raw" <<'EOF'
import math, struct, sys
n0, n1 = 24000, 144000
frames = [0] * n0 + [int(12000 * math.sin(2 * math.pi * 1000 * i / 48000)) for i in range(n1)]
open(sys.argv[1], 'wb').write(b''.join(struct.pack('<hh', v, v) for v in frames))
EOF

# analyse RAW: "tone", its frequency, its SNR and how many of its windows
# were damaged. The left channel from 0.5 s after the onset (the first
# sample above a quarter of the peak), for 1.5 s, in 100 ms windows: each
# gets its frequency (a line through its zero crossings) and a sine of
# that frequency fitted to it, the rest being noise and distortion. The
# medians are the tone's; a window under 20 dB is counted as damaged (a
# dropout on a loaded machine), not averaged in.
analyse() {
	python3 - "$1" <<'EOF'
import math, statistics, struct, sys
d = open(sys.argv[1], 'rb').read()
s = struct.unpack('<%dh' % (len(d) // 2), d)[0::2]
peak = max(abs(x) for x in s) if s else 0
if peak < 1000:
    print("silence 0 0 0"); sys.exit()
start = next(i for i, x in enumerate(s) if abs(x) > peak / 4) + 24000
freqs, snrs = [], []
for w0 in range(start, start + 72000, 4800):
    seg = s[w0:w0 + 4800]
    n = len(seg)
    zc = [i + seg[i] / (seg[i] - seg[i + 1]) for i in range(n - 1) if seg[i] <= 0 < seg[i + 1]]
    k = len(zc)
    if n < 4800 or k < 50:
        snrs.append(-99); continue
    mx, my = (k - 1) / 2, sum(zc) / k
    f = 48000 / (sum((i - mx) * (z - my) for i, z in enumerate(zc)) / sum((i - mx) ** 2 for i in range(k)))
    w = 2 * math.pi * f / 48000
    c = [math.cos(w * i) for i in range(n)]
    sn = [math.sin(w * i) for i in range(n)]
    a = 2 * sum(x * y for x, y in zip(seg, c)) / n
    b = 2 * sum(x * y for x, y in zip(seg, sn)) / n
    pn = sum((x - a * ci - b * si) ** 2 for x, ci, si in zip(seg, c, sn)) / n
    freqs.append(f)
    snrs.append(10 * math.log10((a * a + b * b) / 2 / max(pn, 1e-9)))
if len(freqs) < 8:
    print("short 0 0 0"); sys.exit()
print("tone %.3f %.1f %d" % (statistics.median(freqs), statistics.median(snrs),
                             sum(1 for x in snrs if x < 20)))
EOF
}

# record NAME SERVER DEVICE: parec in the background (pid in REC_NAME).
record() {
	PULSE_SERVER=$2 parec -d "$3" --raw --format=s16le --rate=48000 --channels=2 \
		--latency-msec=10 >"$T/$1.raw" 2>"$T/parec-$1.log" &
	_pids+=($!)
	eval "REC_$1=$!"
}

# bind_start CLIENT SINK SOURCE: CLIENT's `sound bind`, once it holds the binding.
bind_start() {
	"$T/$1.m" sound bind "$2" "$3" 2>"$T/bind-$1.log" &
	_pids+=($!)
	BIND=$!
	for _ in $(seq 200); do
		grep -q "bound;" "$T/bind-$1.log" && return 0
		kill -0 $BIND 2>/dev/null || fail "sound bind failed: $(cat "$T/bind-$1.log")"
		sleep 0.05
	done
	fail "sound bind did not bind"
}

# check NAME: the recording NAME holds the tone: frequency, SNR.
check() {
	set -- $(analyse "$T/$1.raw") "$1"
	[ "$1" = tone ] || fail "$5: no tone recorded ($1)"
	python3 -c "import sys; sys.exit(0 if abs($2 - 1000) <= 1 and $3 > 30 else 1)" ||
		fail "$5: frequency $2 Hz, SNR $3 dB (want 1000 +- 1 Hz, > 30 dB)"
	echo "$5: $2 Hz, SNR $3 dB (median of 15 windows; $4 damaged)"
}

# --- A's tone to B's speaker ------------------------------------------------
bind_start B localsink:speaker "$REF"
# Both ends recorded at once, each with the times of its samples
# (pa_record.py), while the tone plays into A's sink.
PULSE_SERVER=$PULSE_A python3 "$(dirname "$0")/pa_record.py" 5 "$T/src.raw" tone.monitor \
	"$T/dst.raw" speaker.monitor >"$T/times" 2>"$T/pa_record.log" &
REC=$!
_pids+=($REC)
sleep 0.7
pa "$PULSE_A" pacat -d tone --raw --format=s16le --rate=48000 --channels=2 "$T/sine.raw" ||
	fail "cannot play into tone"
wait $REC || fail "recording failed: $(cat "$T/pa_record.log")"
grep -q "no result\|cannot\|failed" "$T/times" && fail "recording failed: $(cat "$T/times")"
check src
check dst
latency=$(python3 - "$T/times" <<'EOF'
import struct, sys
start = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[1])}
def onset(path):
    d = open(path, 'rb').read()
    s = struct.unpack('<%dh' % (len(d) // 2), d)[0::2]
    peak = max(abs(x) for x in s)
    return start[path] + next(i for i, x in enumerate(s) if abs(x) > peak / 4) / 48000
src, dst = [p for p in start]
print('%.0f' % ((onset(dst) - onset(src)) * 1000))
EOF
)
echo "end-to-end latency (tone on A -> speaker on B): $latency ms"
kill $BIND
wait $BIND 2>/dev/null

# --- A's source to a new source on B ---------------------------------------
MIC=$(m B sound export newlocalsource:mic) || fail "export newlocalsource failed"
pa "$PULSE_B" pactl list short sources | grep -q "mic" || fail "B has no source mic"
bind_start A "$MIC" localsource:tone.monitor
record mic "$PULSE_B" mic
sleep 0.5
pa "$PULSE_A" pacat -d tone --raw --format=s16le --rate=48000 --channels=2 "$T/sine.raw" ||
	fail "cannot play into tone"
sleep 0.5
kill $REC_mic
wait $REC_mic 2>/dev/null
check mic

# Each stream is coded in a confined process of its own: A's from parec,
# B's to pacat. One killed costs only its stream, and its pacat ends.
for n in A B; do
	eval "dpid=\$PID_$n"
	spid=$(pgrep -P "$dpid" -f "sound _session" | head -n 1)
	[ -n "$spid" ] || fail "no sound session process under $n's daemon"
	confined_nobody "$spid" "$n's sound session"
done
pgrep -f "pacat --device=mic.input" >/dev/null || fail "no pacat plays into mic.input"
session_crash "$spid" sound B
for _ in $(seq 50); do pgrep -f "pacat --device=mic.input" >/dev/null || break; sleep 0.1; done
pgrep -af "pacat --device=mic.input" && fail "pacat stayed after its session crashed"
echo "sound sessions: uid 65534, CapEff 0, Seccomp 2, empty root; a crashed one (SIGSEGV)" \
	"cost only its stream, and its pacat ended"
kill $BIND
wait $BIND 2>/dev/null
grep -q "concealed" "$T/A.log" || fail "A logged no stream statistics"
echo "ok"
