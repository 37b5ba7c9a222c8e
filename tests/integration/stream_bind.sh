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

# A source on A (sends a file, then ends) and a sink on B (stores what
# it gets), each a one-connection socat.
head -c 3000000 /dev/urandom >"$T/in"
socat -u OPEN:"$T/in",rdonly UNIX-LISTEN:"$T/src.sock" 2>"$T/src.log" &
SRC=$!; _pids+=($SRC)
socat -u UNIX-LISTEN:"$T/sink.sock" CREATE:"$T/out" 2>"$T/sink.log" &
SINK=$!; _pids+=($SINK)
for _ in $(seq 50); do [ -S "$T/src.sock" ] && [ -S "$T/sink.sock" ] && break; sleep 0.05; done
REF_SRC=$(m A stream export "unix:$T/src.sock") || fail "export on A failed"
REF_SINK=$(m B stream export "unix:$T/sink.sock") || fail "export on B failed"

# C binds them: A learns of B's stream only through C, asks B (through C)
# for a token and where B is, and connects to B itself.
"$T/C.m" stream bind "$REF_SRC" "$REF_SINK" 2>"$T/bind.err" &
BIND=$!; _pids+=($BIND)
wait_bound "$T/bind.err" || fail "bind failed: $(cat "$T/bind.err")"
wait_gone "$SRC" "$SINK" || fail "the bound transfer did not finish"
cmp -s "$T/in" "$T/out" || fail "bytes differ after the binding"
kill -0 "$BIND" 2>/dev/null || fail "the bind applet did not wait to be released"
kill -TERM "$BIND"
wait "$BIND" || fail "bind did not exit cleanly on SIGTERM"

# Dropping the holder ends the binding at both ends, even when neither
# end has anything to say: two sinks that wait forever for bytes.
socat -u UNIX-LISTEN:"$T/h1.sock" CREATE:"$T/h1.out" 2>/dev/null &
H1=$!; _pids+=($H1)
socat -u UNIX-LISTEN:"$T/h2.sock" CREATE:"$T/h2.out" 2>/dev/null &
H2=$!; _pids+=($H2)
for _ in $(seq 50); do [ -S "$T/h1.sock" ] && [ -S "$T/h2.sock" ] && break; sleep 0.05; done
R1=$(m A stream export "unix:$T/h1.sock") || fail "export h1"
R2=$(m B stream export "unix:$T/h2.sock") || fail "export h2"
"$T/C.m" stream bind "$R1" "$R2" 2>"$T/bind2.err" &
BIND=$!; _pids+=($BIND)
wait_bound "$T/bind2.err" || fail "second bind failed: $(cat "$T/bind2.err")"
# Both ends are connected (their socats accepted) while the holder lives.
for _ in $(seq 200); do
	[ -z "$(ss -Hxl "src = $T/h1.sock" 2>/dev/null)" ] &&
		[ -z "$(ss -Hxl "src = $T/h2.sock" 2>/dev/null)" ] && break
	sleep 0.05
done
kill -0 "$H1" 2>/dev/null && kill -0 "$H2" 2>/dev/null ||
	fail "an end of the binding went before the holder"
kill -INT "$BIND"
wait "$BIND" || fail "bind did not exit cleanly on SIGINT"
wait_gone "$H1" "$H2" || fail "dropping the holder left an end connected"

# Two streams of one node (A), bound from B: piped inside A.
head -c 500000 /dev/urandom >"$T/in3"
socat -u OPEN:"$T/in3",rdonly UNIX-LISTEN:"$T/s3.sock" 2>/dev/null &
S3=$!; _pids+=($S3)
socat -u UNIX-LISTEN:"$T/k3.sock" CREATE:"$T/out3" 2>/dev/null &
K3=$!; _pids+=($K3)
for _ in $(seq 50); do [ -S "$T/s3.sock" ] && [ -S "$T/k3.sock" ] && break; sleep 0.05; done
R3=$(m A stream export "unix:$T/s3.sock") || fail "export s3"
K3R=$(m A stream export "unix:$T/k3.sock") || fail "export k3"
"$T/B.m" stream bind "$R3" "$K3R" 2>"$T/bind3.err" &
BIND=$!; _pids+=($BIND)
wait_bound "$T/bind3.err" || fail "local bind failed: $(cat "$T/bind3.err")"
wait_gone "$S3" "$K3" || fail "the local bound transfer did not finish"
cmp -s "$T/in3" "$T/out3" || fail "bytes differ after the local binding"
kill -TERM "$BIND"
wait "$BIND" || fail "bind did not exit cleanly"

# Usage and errors.
"$T/C.m" stream bind "$REF_SRC" 2>"$T/usage.err"
[ $? -eq 2 ] && grep -q "takes two refs" "$T/usage.err" || fail "usage error expected"
expect_fail "malformed ref" "$T/C.m" stream bind "$REF_SRC" "ref://10.77.0.2/short"
m A ref revoke "$R3" || fail "revoke"
expect_fail "no such ref" "$T/C.m" stream bind "$R3" "$K3R"

# Every daemon survived all of it.
for d in A B C; do m "$d" node >/dev/null || fail "daemon $d died"; done
exit 0
