# Stream.bindTo between nodes: node C holds refs to a stream on A and one
# on B and binds them; the bytes go from A straight to B (C only holds the
# binding), and dropping the holder cuts both ends. Streams of one node
# bind too.
. "$(dirname "$0")/lib.bash"

netns_pair a b
daemon_start A a 10.77.0.1:901
daemon_start B b 10.77.0.2:901
daemon_start C b 10.77.0.2:9011

# wait_gone PID...: each process exits within 10 s.
wait_gone() {
	local p
	for p in "$@"; do
		for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
		! kill -0 "$p" 2>/dev/null || return 1
	done
}

# wait_bound LOG: the bind applet says it holds the binding.
wait_bound() {
	for _ in $(seq 200); do
		grep -q "bound;" "$1" 2>/dev/null && return 0
		kill -0 "$BIND" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# endpoint NAME send|store FILE: a one-connection socat on $T/NAME.sock
# that sends FILE and ends, or stores what it gets in FILE; pid in EP.
endpoint() {
	if [ "$2" = send ]; then
		socat -u OPEN:"$3",rdonly UNIX-LISTEN:"$T/$1.sock" 2>"$T/$1.log" &
	else
		socat -u UNIX-LISTEN:"$T/$1.sock" CREATE:"$3" 2>"$T/$1.log" &
	fi
	EP=$!; _pids+=($EP)
	for _ in $(seq 50); do [ -S "$T/$1.sock" ] && return 0; sleep 0.05; done
	fail "endpoint $1 did not start"
}

# bind_start CLIENT REF1 REF2: CLIENT's `stream bind` in the background
# (pid in BIND), once it holds the binding.
bind_start() {
	"$T/$1.m" stream bind "$2" "$3" 2>"$T/bind.err" &
	BIND=$!; _pids+=($BIND)
	wait_bound "$T/bind.err" || fail "bind from $1 failed: $(cat "$T/bind.err")"
}

# transfer CLIENT SRCNODE SINKNODE BYTES: a file sent by a stream on
# SRCNODE reaches one on SINKNODE whole, bound by CLIENT.
transfer() {
	local src sink
	head -c "$4" /dev/urandom >"$T/in"
	rm -f "$T/out" "$T/src.sock" "$T/sink.sock"
	endpoint src send "$T/in"; src=$EP
	endpoint sink store "$T/out"; sink=$EP
	R1=$(m "$2" stream export "unix:$T/src.sock") || fail "export on $2 failed"
	R2=$(m "$3" stream export "unix:$T/sink.sock") || fail "export on $3 failed"
	bind_start "$1" "$R1" "$R2"
	wait_gone "$src" "$sink" || fail "the transfer $2 -> $3 did not finish"
	cmp -s "$T/in" "$T/out" || fail "bytes differ after binding $2 -> $3"
	kill -0 "$BIND" 2>/dev/null || fail "the bind applet did not wait to be released"
	kill -TERM "$BIND"
	wait "$BIND" || fail "bind did not exit cleanly on SIGTERM"
}

# C binds a stream on A to one on B: A learns of B's stream only through
# C, asks B (through C) for a token and where B is, and connects to B.
transfer C A B 3000000
# Two streams of one node, bound from another: piped inside A.
transfer B A A 500000
REF_SRC=$R1

# Dropping the holder ends the binding at both ends, even when neither
# end has anything to say: two sinks that wait forever for bytes.
endpoint h1 store "$T/h1.out"; H1=$EP
endpoint h2 store "$T/h2.out"; H2=$EP
R1=$(m A stream export "unix:$T/h1.sock") || fail "export h1"
R2=$(m B stream export "unix:$T/h2.sock") || fail "export h2"
bind_start C "$R1" "$R2"
# Both ends get connected (each socat accepts, so stops listening), and
# stay so while the holder lives.
accepted() { [ -z "$(ss -Hxl "src = $T/h1.sock")" ] && [ -z "$(ss -Hxl "src = $T/h2.sock")" ]; }
for _ in $(seq 200); do accepted && break; sleep 0.05; done
accepted || fail "the binding did not connect both ends"
kill -0 "$H1" 2>/dev/null && kill -0 "$H2" 2>/dev/null ||
	fail "an end of the binding went before the holder"
kill -INT "$BIND"
wait "$BIND" || fail "bind did not exit cleanly on SIGINT"
wait_gone "$H1" "$H2" || fail "dropping the holder left an end connected"

# Usage and errors.
"$T/C.m" stream bind "$REF_SRC" 2>"$T/usage.err"
[ $? -eq 2 ] && grep -q "takes two refs" "$T/usage.err" || fail "usage error expected"
expect_fail "malformed ref" "$T/C.m" stream bind "$REF_SRC" "ref://10.77.0.2/short"
m A ref revoke "$R1" || fail "revoke"
expect_fail "no such ref" "$T/C.m" stream bind "$R1" "$R2"

# Every daemon survived all of it.
for d in A B C; do m "$d" node >/dev/null || fail "daemon $d died"; done
exit 0
