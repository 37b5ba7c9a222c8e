# Containers with local resources on one node (metac run): a busybox
# root, exit codes (0, 1, 42, death by a signal), stdin/stdout/stderr,
# the container's own pid 1, processes and hostname, a second folder
# mounted inside, the memory limit, a terminal (tmux: Ctrl-C, resizing)
# and bad input, each a clear error that leaves nothing behind.
. "$(dirname "$0")/lib.bash"

need_root
daemon_start A - 127.0.0.1:$((20000 + $$ % 20000))
R=$T/root
busybox_root "$R"
mkdir -p "$T/data" && echo outside >"$T/data/hello"
mounts_under_t | sort >"$T/mounts.ok"
run() { timeout 30 "$T/A.m" run "$@"; }

# --- exit codes ---
run --mount=/=local:"$R" true || fail "true: $?"
run --mount=/=local:"$R" false; [ $? = 1 ] || fail "false did not give 1"
run --mount=/=local:"$R" sh -c 'exit 42'; [ $? = 42 ] || fail "exit 42 did not give 42"
run --mount=/=local:"$R" sh -c 'kill -KILL $$'; rc=$?
[ $rc = 137 ] || fail "death by SIGKILL gave $rc, not 137"
run --mount=/=local:"$R" sh -c 'kill -TERM $$'; rc=$?
[ $rc = 143 ] || fail "death by SIGTERM gave $rc, not 143"

# --- stdio: stdin in, stdout and stderr apart, all of it ---
head -c 3000000 /dev/urandom >"$T/in"
run --mount=/=local:"$R" sh -c 'cat; echo to-stderr >&2' <"$T/in" >"$T/out" 2>"$T/err" ||
	fail "cat through the container"
cmp -s "$T/in" "$T/out" || fail "stdin did not come back whole on stdout"
[ "$(cat "$T/err")" = to-stderr ] || fail "stderr: $(cat "$T/err")"

# --- its own pid 1, processes, hostname; the host's are not there ---
out=$(run --mount=/=local:"$R" --hostname box1 sh -c 'hostname; cat /proc/1/comm; ls /proc | grep -c "^[0-9]"; echo $$') ||
	fail "inspecting the container"
set -- $out
[ "$1" = box1 ] || fail "hostname inside is $1, not box1"
[ "$(hostname)" != box1 ] || fail "the host's hostname changed"
[ "$3" -le 5 ] || fail "the container sees $3 processes: not its own pid namespace"
[ "$4" -le 3 ] || fail "the command's pid is $4: not a pid namespace of its own"
run --mount=/=local:"$R" sh -c "test ! -e /proc/$$" || fail "the container sees the host's processes"
run --mount=/=local:"$R" sh -c 'ip link 2>/dev/null | grep -c "^[0-9]"' >"$T/links"
[ "$(cat "$T/links")" = 1 ] || fail "the container has more than lo: $(cat "$T/links")"

# --- user and group; Ctrl-C without a terminal (SIGINT to metac run) ---
[ "$(run --mount=/=local:"$R" --uid 1000 --gid 1001 sh -c 'echo $(id -u):$(id -g)')" = 1000:1001 ] ||
	fail "--uid/--gid"
"$T/A.m" run --mount=/=local:"$R" sleep 60 &
runner=$!
sleep 1
kill -INT $runner
wait $runner
rc=$?
[ $rc = 130 ] || fail "SIGINT to metac run gave $rc, not 130 (the container's process killed by it)"

# --- one more process in a running container: compute list and exec ---
bg_start long timeout 60 "$T/A.m" run --mount=/=local:"$R" --hostname ex1 sh -c 'echo $$ >/tmp/first; sleep 30'
for _ in $(seq 50); do m A compute list | grep -q 'ex1 .*running' && break; sleep 0.1; done
id=$(m A compute list --json | grep -o '"id":[0-9]*,"hostname":"ex1"' | grep -o '[0-9]*' | head -1)
[ -n "$id" ] || fail "compute list does not show the container: $(m A compute list)"
out=$(timeout 30 "$T/A.m" compute exec "$id" sh -c 'hostname; cat /tmp/first; cat /proc/$(cat /tmp/first)/comm') ||
	fail "compute exec"
[ "$out" = "ex1
2
sleep" ] || fail "compute exec did not run inside the container: $out"
expect_fail "no container" "$T/A.m" compute exec 9999 true
# A background child that keeps the output open does not keep exec waiting.
start=$(date +%s)
timeout 20 "$T/A.m" compute exec "$id" sh -c 'sleep 25 & echo started' >"$T/out" || fail "exec with a background child"
[ $(( $(date +%s) - start )) -lt 10 ] || fail "exec waited for a background child"
kill $PID_long
wait $PID_long 2>/dev/null
rm -f "$R/tmp/first"

# --- what root inside cannot do; what it does not get ---
run --mount=/=local:"$R" sh -c 'mknod /tmp/hd b 8 0' 2>/dev/null && fail "mknod works inside"
rm -f "$R/tmp/hd"
run --mount=/=local:"$R" sh -c 'mount -t tmpfs x /mnt' 2>/dev/null && fail "mount works inside"
run --mount=/=local:"$R" sh -c 'echo 0 >/proc/sys/kernel/sysrq' 2>/dev/null && fail "/proc/sys is writable inside"
run --mount=/=local:"$R" sh -c 'echo h >/proc/sysrq-trigger; test ! -s /proc/sysrq-trigger' ||
	fail "/proc/sysrq-trigger is not masked"
[ "$(run --mount=/=local:"$R" sh -c 'grep NoNewPrivs /proc/self/status')" = "NoNewPrivs:	1" ] ||
	fail "no_new_privs is not set"
# Another container's streams are not in this one (nor anything of the daemon's).
bg_start other timeout 60 "$T/A.m" run --mount=/=local:"$R" sleep 20
sleep 1
fds=$(run --mount=/=local:"$R" sh -c 'ls /proc/self/fd' | tr '\n' ' ')
[ "$fds" = "0 1 2 3 " ] || fail "a container has descriptors it should not: $fds"
kill $PID_other; wait $PID_other 2>/dev/null
# Signals are at their defaults: a pipeline into head ends.
run --mount=/=local:"$R" sh -c 'yes | head -n 1' >/dev/null || fail "a pipeline into head does not end (SIGPIPE ignored?)"
# Bad refs that fail at once do not take the daemon down.
expect_fail "cannot mount" "$T/A.m" run --mount=/=local:"$R" --mount=/a=ref://bad1 --mount=/b=ref://bad2 true
m A node >/dev/null || fail "the daemon died of two bad mount refs"

# --- a second folder, and the environment ---
out=$(run --mount=/=local:"$R" --mount=/mnt/data=local:"$T/data" --env GREETING=hi \
	sh -c 'cat /mnt/data/hello; echo $GREETING; echo made >/mnt/data/new') || fail "a mount inside"
[ "$out" = "outside
hi" ] || fail "mount or environment inside: $out"
[ "$(cat "$T/data/new")" = made ] || fail "a file written inside did not reach the folder"
[ ! -e /mnt/data/new ] || fail "the mount escaped to the host"

# --- memory limit: a process above it is killed ---
run --mount=/=local:"$R" sh -c 'dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null' ||
	fail "48 MiB without a limit"
run --memory=16 --mount=/=local:"$R" sh -c 'dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null'
rc=$?
[ $rc = 137 ] || fail "48 MiB under --memory=16 gave $rc, not 137 (killed)"

# --- a terminal: tmux runs metac run --pty ---
rm -f "$T/rc"
tmux -L "mt$$" new-session -d -x 90 -y 30 \
	"$T/A.m run --pty --mount=/=local:$R sh; echo rc=\$? >$T/rc; sleep 30" ||
	fail "tmux"
at_exit "tmux -L mt$$ kill-server 2>/dev/null"
tmx() { tmux -L "mt$$" "$@"; }
screen_has() {
	for _ in $(seq 50); do tmx capture-pane -p | grep -q -- "$1" && return 0; sleep 0.1; done
	fail "the terminal does not show '$1': $(tmx capture-pane -p)"
}
screen_has '^/ #'
tmx send-keys 'echo "T=$(tty) S=$(stty size)"' Enter
screen_has 'T=/dev/pts/0 S=30 90'
tmx send-keys 'sleep 100' Enter
sleep 0.5
tmx send-keys C-c
tmx send-keys 'echo "after $?"' Enter
screen_has 'after 130'
tmx resize-window -x 100 -y 35
sleep 0.3
tmx send-keys 'echo "S=$(stty size)"; exit 7' Enter
for _ in $(seq 50); do [ -s "$T/rc" ] && break; sleep 0.1; done
[ "$(cat "$T/rc" 2>/dev/null)" = rc=7 ] || fail "exit code through the terminal: $(cat "$T/rc" 2>/dev/null)"
tmx capture-pane -p | grep -q 'S=35 100' || fail "the resize did not reach the container: $(tmx capture-pane -p)"
no_leftovers "after the runs"

# --- bad input: clear errors, nothing left behind ---
expect_fail "not an existing directory\|No such file" "$T/A.m" run --mount=/=local:"$T/nope" true
expect_fail "no root" "$T/A.m" run --mount=/mnt=local:"$T/data" true
expect_fail "not an absolute path inside" "$T/A.m" run --mount=/=local:"$R" --mount=/../etc=local:"$T/data" true
many=()
for i in $(seq 33); do many+=(--mount=/m$i=local:"$T/data"); done
expect_fail "at most 32 mounts" "$T/A.m" run "${many[@]}" true
expect_fail "cannot run nosuch" "$T/A.m" run --mount=/=local:"$R" nosuch
at_exit "ip link del mt$$ 2>/dev/null"
NREF=$(m A net export newlocal:mt$$) || fail "net export"
# A well-formed ref to this node whose secret it never gave out.
expect_fail "network 0 (eth0)" "$T/A.m" run --mount=/=local:"$R" --net="${NREF%????}AAAA" true
expect_fail "not a ref" "$T/A.m" run --mount=/=local:"$R" --net=local:eth0 true
expect_fail "addr is" "$T/A.m" run --mount=/=local:"$R" --net="$NREF",addr=300.1.1.1/24 true
no_leftovers "after bad input"
# A symbolic link inside the root cannot take a mount out of it.
ln -s /etc "$R/evil"
run --mount=/=local:"$R" --mount=/evil/x=local:"$T/data" true || fail "a mount under a symlink"
[ -e "$R/etc/x" ] || fail "the mount under /evil did not stay inside the root"
[ ! -e /etc/x ] || { rmdir /etc/x; fail "a mount under a symlink escaped to the host's /etc"; }
no_leftovers "at the end"
echo "compute_run: all checked"
exit 0
