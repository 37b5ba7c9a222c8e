/* Child processes with pipes (see proc.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/loop.h"
#include "lib/proc.h"

#define now_ms clock_mono_ms

extern char **environ;

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

/* argv with one end of a pipe as its stdin (to_child) or stdout, the
 * other standard descriptors /dev/null, except stderr: ours, or the pipe
 * too with merge_err. *fd gets our end. The pid, or -errno. */
static pid_t spawn(char *const argv[], int to_child, int merge_err, int *fd)
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
			child_exec(argv, devnull, p[1], merge_err ? p[1] : 2);
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

int proc_run(char *const argv[], char *out, size_t outsz, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	size_t got = 0;
	int fd, e;
	pid_t pid;

	if ((pid = spawn(argv, 0, 1, &fd)) < 0)
		return pid;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = now_ms();
		char junk[512];
		ssize_t k;

		if (now >= end || poll(&pfd, 1, (int)(end - now)) == 0)
			break;
		if (got + 1 < outsz)
			k = read(fd, out + got, outsz - 1 - got);
		else
			k = read(fd, junk, sizeof(junk));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (got + 1 < outsz)
			got += (size_t)k;
	}
	if (outsz)
		out[got] = 0;
	close(fd);
	e = wait_child(pid, (int)(end > now_ms() ? end - now_ms() : 0) + 50);
	/* exec failed: the shell's convention */
	return e == 127 ? -ENOENT : e;
}

pid_t proc_spawn_self(char *const argv[], const int *fds, int nfds)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	int high[8], e = 0;
	pid_t pid = 0;

	if (nfds > 8)
		return -EINVAL;
	for (int i = 0; i < nfds; i++)
		high[i] = -1;
	/* Copies above 3 + nfds first, so that no dup2 overwrites a source. */
	for (int i = 0; i < nfds && e == 0; i++)
		if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 16)) < 0)
			e = -errno;
	if (e == 0) {
		posix_spawn_file_actions_init(&fa);
		for (int i = 0; i < nfds; i++)
			posix_spawn_file_actions_adddup2(&fa, high[i], 3 + i);
		posix_spawnattr_init(&attr);
		sigemptyset(&none);
		posix_spawnattr_setsigmask(&attr, &none);
		sigfillset(&all);
		posix_spawnattr_setsigdefault(&attr, &all);
		posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
		e = -posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, environ);
		posix_spawn_file_actions_destroy(&fa);
		posix_spawnattr_destroy(&attr);
	}
	for (int i = 0; i < nfds; i++)
		if (high[i] >= 0)
			close(high[i]);
	return e < 0 ? e : pid;
}

pid_t proc_spawn_pipe(char *const argv[], int to_child, int *fd)
{
	return spawn(argv, to_child, 0, fd);
}

void proc_stop(pid_t pid, int grace_ms)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	wait_child(pid, grace_ms); /* which kills it if the grace runs out */
}
