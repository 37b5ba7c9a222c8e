#!/bin/bash
# The encrypted stream transport side by side with its peers, in one run,
# on loopback: the AEAD's raw single-core speed (the ceiling), a metac
# Stream (CLI -> admin socket -> daemon B -> Noise/TCP -> daemon A -> Unix
# socket), OpenSSH with AES-GCM and ChaCha20-Poly1305, and plain copies
# over TCP and a Unix socket. Prints MB/s, the CPU time all processes
# spent per GiB (on a small machine that bounds throughput as much as any
# single core), connects per second, and ratios.
#
# Never fails on timing. Exits 1 if something is broken: a daemon or
# server that does not start (at once), or a transfer that fails or loses
# bytes (after printing the table, with the row marked BROKEN).
#
# Environment: METAC (required), BENCH_BYTES (default 1 GiB per stream),
# BENCH_ECHO_BYTES (default BENCH_BYTES/4), BENCH_RUNS (best of, default
# 2), BENCH_CONNECTS (default 200), BENCH_SSH_CONNECTS (default 20),
# BENCH_TIMEOUT (seconds per transfer, default 120).
set -u
: "${METAC:?METAC must point at the metac binary}"
BYTES=${BENCH_BYTES:-1073741824}
ECHO_BYTES=${BENCH_ECHO_BYTES:-$((BYTES / 4))}
RUNS=${BENCH_RUNS:-2}
CONNECTS=${BENCH_CONNECTS:-200}
SSH_CONNECTS=${BENCH_SSH_CONNECTS:-20}
TMO=${BENCH_TIMEOUT:-120}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.bash
. "$HERE/lib.bash"

# best_of NAME BYTES CMD [LABEL:PID...]: runs CMD RUNS times and records
# the fastest run's MB/s with the CPU each side spent per GiB. CHECK, if
# set, is a shell test that must pass after each run (CHECK_WHAT says
# what it means); SETUP, if set, is a connection setup time (s) to also
# show the rate without.
best_of() {
	local name=$1 bytes=$2 cmd=$3 best=0 cpu="" detail="" m rc spec total l
	shift 3
	for _ in $(seq "$RUNS"); do
		timed "$cmd" "$@"
		rc=$?
		if [ $rc -eq 124 ]; then
			broken "$name: no end within $TMO s"
		elif [ $rc -ne 0 ]; then
			broken "$name: the transfer failed (exit $rc)"
		elif [ -n "${CHECK:-}" ] && ! eval "$CHECK"; then
			broken "$name: $CHECK_WHAT"
		else
			m=$(mbps "$bytes" "$ELAPSED")
			awk -v a="$m" -v b="$best" 'BEGIN { exit !(a > b) }' || continue
			best=$m
			total=$CLIENT_CPU
			detail="client $(per_gib "$CLIENT_CPU" "$bytes")"
			for spec in "$@"; do
				l=${spec%%:*}
				total=$(awk -v a="$total" -v b="${SRV_CPU[$l]}" 'BEGIN { print a + b }')
				detail="$detail + $l $(per_gib "${SRV_CPU[$l]}" "$bytes")"
			done
			cpu=$(per_gib "$total" "$bytes")
			[ -n "${SETUP:-}" ] && detail="$detail; $(mbps "$bytes" \
				"$(awk -v a="$ELAPSED" -v b="$SETUP" 'BEGIN { print a - b }')") MB/s without its $(awk -v b="$SETUP" \
				'BEGIN { printf "%.0f", b * 1000 }') ms setup"
			continue
		fi
		row "$name" BROKEN "" "" "see above"
		return 1
	done
	row "$name" "$best" MB/s "$cpu" "$detail"
}

src() { echo "dd if=/dev/zero bs=1M count=$1 iflag=count_bytes status=none"; }

for tool in gcc socat ss setsid timeout /usr/bin/time; do
	command -v "$tool" >/dev/null || fail "$tool is missing; run contrib/install-deps.sh"
done
[ -x "$METAC" ] || fail "no metac binary at $METAC"

echo "== transport: $((BYTES >> 20)) MiB per stream on loopback, best of $RUNS;" \
	"$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- (a) the AEAD alone ---------------------------------------------------
gcc -O2 -o "$T/aead_speed" "$HERE/aead_speed.c" -lsodium 2>"$T/gcc.log" ||
	fail "cannot compile aead_speed.c (libsodium-dev missing?)"
gcc -O2 -o "$T/sockserv" "$HERE/sockserv.c" 2>>"$T/gcc.log" ||
	fail "cannot compile sockserv.c"
AEAD="AEAD raw: libsodium chacha20poly1305-ietf, 64 KiB, 1 core"
read -r _ _ v < <("$T/aead_speed" 65536 1.5) || fail "aead_speed failed"
row "$AEAD" "$v" MB/s "" "the cipher metac uses: its ceiling"
read -r _ _ v < <("$T/aead_speed" 16384 0.5)
row "AEAD raw: same, 16 KiB records" "$v" MB/s "" ""
if command -v openssl >/dev/null; then
	v=$(openssl speed -evp chacha20-poly1305 -bytes 65536 -seconds 2 2>/dev/null |
		awk '/^ChaCha20-Poly1305/ { sub(/k$/, "", $2); printf "%.1f", $2 * 1000 / 1e6 }')
	[ -n "$v" ] && row "AEAD raw: openssl chacha20-poly1305, 64 KiB, 1 core" "$v" MB/s "" \
		"reference: OpenSSL's assembly (what ssh -c chacha20 uses is slower)"
	v=$(openssl speed -evp aes-128-gcm -bytes 65536 -seconds 1 2>/dev/null |
		awk 'tolower($1) == "aes-128-gcm" { sub(/k$/, "", $2); printf "%.1f", $2 * 1000 / 1e6 }')
	[ -n "$v" ] && row "AEAD raw: openssl aes-128-gcm, 64 KiB, 1 core" "$v" MB/s "" \
		"what ssh -c aes128-gcm uses"
fi

# --- servers --------------------------------------------------------------
"$T/sockserv" sink "$T/sink.sock" "$T/sink.count" 2>"$T/sink.log" &
_pids+=($!); PID_SINK=$!
"$T/sockserv" echo "$T/echo.sock" 2>"$T/echo.log" &
_pids+=($!); PID_ECHO=$!

daemon_start A || fail "daemon A did not start"
daemon_start B || fail "daemon B did not start"
for _ in $(seq 50); do [ -S "$T/sink.sock" ] && [ -S "$T/echo.sock" ] && break; sleep 0.05; done
REF_SINK=$("$METAC" stream export --admin-socket "$T/A.sock" "unix:$T/sink.sock") ||
	fail "stream export of the sink failed"
REF_ECHO=$("$METAC" stream export --admin-socket "$T/A.sock" "unix:$T/echo.sock") ||
	fail "stream export of the echo failed"
MB="$METAC stream connect --admin-socket $T/B.sock"

# Correctness first: random bytes through B, A, the echo and back.
head -c 4194304 /dev/urandom >"$T/rand"
if ! timeout 60 $MB "$REF_ECHO" <"$T/rand" >"$T/rand.back" 2>"$T/connect.err"; then
	broken "echo of 4 MiB of random bytes failed: $(cat "$T/connect.err")"
elif ! cmp -s "$T/rand" "$T/rand.back"; then
	broken "echoed bytes differ"
fi
rm -f "$T/rand" "$T/rand.back"

# --- (b) metac ------------------------------------------------------------
M1="metac stream: CLI -> B -> Noise/TCP -> A -> sink"
M2="metac stream: round trip through A's echo"
CHECK='[ "$(tail -n 1 "$T/sink.count" 2>/dev/null)" = "$BYTES" ]'
CHECK_WHAT="the sink did not get every byte"
best_of "$M1" "$BYTES" "$(src "$BYTES") | $MB $REF_SINK" \
	"B:$PID_B" "A:$PID_A" "sink:$PID_SINK"
# The same with the client connecting to A itself (B's daemon only
# restores and gets the token): one process fewer on the data path.
M1D="metac stream --direct: CLI -> Noise/TCP -> A -> sink"
best_of "$M1D" "$BYTES" "$(src "$BYTES") | $MB --direct $REF_SINK" \
	"A:$PID_A" "sink:$PID_SINK"
CHECK='[ "$(cat "$T/echo.n")" = "$ECHO_BYTES" ]'
CHECK_WHAT="the echo did not return every byte"
best_of "$M2" "$ECHO_BYTES" "$(src "$ECHO_BYTES") | $MB $REF_ECHO | wc -c >$T/echo.n" \
	"B:$PID_B" "A:$PID_A" "echo:$PID_ECHO"
unset CHECK

# --- (c) OpenSSH ----------------------------------------------------------
HAVE_SSH=0
if ssh_start >"$T/ssh_start.msg"; then
	HAVE_SSH=1
	# Its connection setup, to tell it apart from the data rate.
	SSH_SETUP=9
	for _ in 1 2 3; do
		timed "$SSH true </dev/null" || fail "ssh true failed"
		SSH_SETUP=$(awk -v a="$ELAPSED" -v b="$SSH_SETUP" 'BEGIN { print (a < b ? a : b) }')
	done
	SETUP=$SSH_SETUP
	for c in aes128-gcm@openssh.com chacha20-poly1305@openssh.com; do
		best_of "ssh -c $c: ssh -> TCP -> sshd -> cat" "$BYTES" \
			"$(src "$BYTES") | $SSH -c $c 'cat >/dev/null'" "sshd:$PID_SSHD"
	done
	unset SETUP
else
	echo "   skipping the OpenSSH rows: $(cat "$T/ssh_start.msg")"
fi
S1="ssh -c aes128-gcm@openssh.com: ssh -> TCP -> sshd -> cat"
S2="ssh -c chacha20-poly1305@openssh.com: ssh -> TCP -> sshd -> cat"

# --- (d) plain copies -----------------------------------------------------
TCP_PORT=$(free_port)
socat -b 262144 -u "TCP-LISTEN:$TCP_PORT,bind=127.0.0.1,reuseaddr,fork" OPEN:/dev/null \
	2>"$T/socat.log" &
_pids+=($!); PID_TCPSINK=$!
for _ in $(seq 50); do [ -n "$(ss -Hltn "sport = :$TCP_PORT")" ] && break; sleep 0.05; done
P1="plain TCP: socat -> TCP -> socat -> /dev/null"
best_of "$P1" "$BYTES" \
	"$(src "$BYTES") | socat -b 262144 -u STDIN TCP:127.0.0.1:$TCP_PORT" "socat:$PID_TCPSINK"
CHECK='[ "$(tail -n 1 "$T/sink.count" 2>/dev/null)" = "$BYTES" ]'
CHECK_WHAT="the sink did not get every byte"
best_of "plain Unix socket: socat -> sink (like the CLI's hop)" "$BYTES" \
	"$(src "$BYTES") | socat -b 65536 -u STDIN UNIX-CONNECT:$T/sink.sock" "sink:$PID_SINK"
unset CHECK

# --- (e) connects ---------------------------------------------------------
# Every `stream connect` is a process start, an admin-socket RPC restore
# (B reuses its control connection to A), an attach for a token, and a new
# data connection B -> A with its own Noise IK handshake, then A connects
# to the echo. `metac node` (process start + one local RPC) is the local
# floor; the difference is what the remote part costs.
loop_rate() { # NAME N CMD: sets RATE (ops/s) and LAT (ms/op)
	local name=$1 n=$2 cmd=$3
	RATE="" LAT=""
	if ! timed "for i in \$(seq $n); do $cmd || exit 1; done"; then
		broken "$name: a run failed"
		return 1
	fi
	RATE=$(awk -v n="$n" -v t="$ELAPSED" 'BEGIN { printf "%.1f", n / t }')
	LAT=$(awk -v n="$n" -v t="$ELAPSED" 'BEGIN { printf "%.2f", t * 1000 / n }')
}
if loop_rate "metac node" "$CONNECTS" "$METAC node --admin-socket $T/B.sock >/dev/null"; then
	row "metac node: process start + local RPC" "$RATE" ops/s "" "$LAT ms/op"
	LAT_LOCAL=$LAT
	if loop_rate "stream connect" "$CONNECTS" "[ \"\$(echo x | $MB $REF_ECHO)\" = x ]"; then
		row "metac stream connect + echo of 2 bytes" "$RATE" ops/s "" \
			"$LAT ms/op end to end (process start included); remote part $(awk \
			-v a="$LAT" -v b="$LAT_LOCAL" 'BEGIN { printf "%.2f", a - b }') ms"
	fi
fi
if [ "$HAVE_SSH" = 1 ] &&
	loop_rate "ssh true" "$SSH_CONNECTS" "$SSH -c aes128-gcm@openssh.com true </dev/null"; then
	row "ssh true: handshake + auth + exec" "$RATE" ops/s "" "$LAT ms/op ($SSH_CONNECTS runs)"
fi

# --- table ----------------------------------------------------------------
echo
print_table 58 "CPU s/GiB" "(all processes; split)"

echo
echo "ratios (metac one way, best run):"
ratio "metac / AEAD raw (libsodium)" "$M1" "$AEAD" "goal >= 0.5x"
ratio "metac / ssh aes128-gcm" "$M1" "$S1" "goal >= 2x"
ratio "metac / ssh chacha20-poly1305" "$M1" "$S2" "goal >= 2x"
ratio "metac / plain TCP" "$M1" "$P1" ""
ratio "metac --direct / AEAD raw (libsodium)" "$M1D" "$AEAD" "goal >= 0.5x"
ratio "metac --direct / ssh aes128-gcm" "$M1D" "$S1" "goal >= 2x"
ratio "metac --direct / ssh chacha20-poly1305" "$M1D" "$S2" "goal >= 2x"
ratio "metac round trip / one way" "$M2" "$M1" ""
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
finish
