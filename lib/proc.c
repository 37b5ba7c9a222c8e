/* Child processes with pipes (see proc.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/loop.h"
#include "lib/proc.h"

#define now_ms clock_mono_ms

/* In the child: fds as given, the rest closed, default signals, exec. */
static void child_exec(char *const argv[], int in, int out, int err)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(127);
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	execvp(argv[0], argv);
	_exit(127);
}

static int wait_child(pid_t pid, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -EINTR;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (now_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -ETIMEDOUT;
		}
		usleep(2000);
	}
}

int proc_run(char *const argv[], char *out, size_t outsz, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	int p[2], devnull, e;
	size_t got = 0;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if ((devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		e = -errno;
		close(p[0]);
		close(p[1]);
		return e;
	}
	if ((pid = fork()) == 0)
		child_exec(argv, devnull, p[1], p[1]);
	e = pid < 0 ? -errno : 0;
	close(p[1]);
	close(devnull);
	if (e < 0) {
		close(p[0]);
		return e;
	}
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		uint64_t now = now_ms();
		char junk[512];
		ssize_t k;

		if (now >= end || poll(&pfd, 1, (int)(end - now)) == 0)
			break;
		if (got + 1 < outsz)
			k = read(p[0], out + got, outsz - 1 - got);
		else
			k = read(p[0], junk, sizeof(junk));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (got + 1 < outsz)
			got += (size_t)k;
	}
	if (outsz)
		out[got] = 0;
	close(p[0]);
	e = wait_child(pid, (int)(end > now_ms() ? end - now_ms() : 0) + 50);
	/* exec failed: the shell's convention */
	return e == 127 ? -ENOENT : e;
}

pid_t proc_spawn_pipe(char *const argv[], int to_child, int *fd)
{
	int p[2], devnull, e;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if ((devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
		e = -errno;
		close(p[0]);
		close(p[1]);
		return e;
	}
	if ((pid = fork()) == 0) {
		if (to_child)
			child_exec(argv, p[0], devnull, 2);
		else
			child_exec(argv, devnull, p[1], 2);
	}
	e = pid < 0 ? -errno : 0;
	close(devnull);
	close(to_child ? p[0] : p[1]);
	if (e < 0) {
		close(to_child ? p[1] : p[0]);
		return e;
	}
	*fd = to_child ? p[1] : p[0];
	return pid;
}

void proc_stop(pid_t pid, int grace_ms)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	if (wait_child(pid, grace_ms) == -ETIMEDOUT)
		return; /* killed and reaped there */
}
