/*
 * lib/sandbox.c: the seccomp filters of session processes let through
 * what their servers do and refuse the rest. Each case runs in a child
 * process (a filter cannot be taken off), which reports by exit status.
 */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/sandbox.h"
#include "tests/unit/unit.h"

/* Runs fn under kind's filter in a child: fn's return value (0-255), or
 * 255 when the filter cannot be loaded, 254 when the child died. */
static int filtered(enum sandbox_kind kind, int (*fn)(void))
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || sandbox_filter(kind) < 0)
			_exit(255);
		_exit(fn());
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return 254;
	return WEXITSTATUS(status);
}

/* Each returns 0 when the call failed with EPERM, 1 when it worked, 2
 * when it failed otherwise. */
static int outcome(long r)
{
	return r >= 0 ? 1 : errno == EPERM ? 0 : 2;
}

static int try_socket(void) { return outcome(socket(AF_INET, SOCK_STREAM, 0)); }
static int try_exec(void)
{
	char *argv[] = { "/bin/true", NULL };
	return outcome(execve("/bin/true", argv, NULL));
}
static int try_mount(void) { return outcome(mount("none", "/tmp", "tmpfs", 0, NULL)); }
static int try_kill_parent(void) { return outcome(kill(getppid(), 0)); }
static int try_ptrace(void) { return outcome(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)); }
static int try_openat(void) { return outcome(openat(AT_FDCWD, ".", O_RDONLY | O_DIRECTORY)); }
static int try_socketpair(void)
{
	int p[2];
	return outcome(socketpair(AF_UNIX, SOCK_STREAM, 0, p));
}
static int try_tty_ioctl(void)
{
	int n;
	return outcome(ioctl(0, FIONREAD, &n));
}
static int try_thread_memory(void)
{
	void *p = malloc(1 << 20);
	int ok = p != NULL;
	free(p);
	return ok;
}

TEST(nine_p_filter_allows_files_refuses_the_rest)
{
	CHECK_INT(filtered(SANDBOX_9P, try_openat), 1);
	CHECK_INT(filtered(SANDBOX_9P, try_thread_memory), 1);
	CHECK_INT(filtered(SANDBOX_9P, try_socket), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_exec), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_mount), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_kill_parent), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_ptrace), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_tty_ioctl), 0);
}

TEST(nbd_filter_allows_its_descriptor_only)
{
	CHECK_INT(filtered(SANDBOX_NBD, try_thread_memory), 1);
	/* No file is opened once the session runs. */
	CHECK_INT(filtered(SANDBOX_NBD, try_openat), 0);
	CHECK_INT(filtered(SANDBOX_NBD, try_socket), 0);
	/* Not even a socket pair: sessions use the descriptors they got. */
	CHECK_INT(filtered(SANDBOX_NBD, try_socketpair), 0);
	CHECK_INT(filtered(SANDBOX_NBD, try_exec), 0);
	CHECK_INT(filtered(SANDBOX_NBD, try_tty_ioctl), 0);
}
