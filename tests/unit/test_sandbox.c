/*
 * lib/sandbox.c: the seccomp filters of session processes let through
 * what their servers do and refuse the rest. Each case runs in a child
 * process (a filter cannot be taken off), which reports by exit status.
 */
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <stdint.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
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
static int try_ptrace(void) { return outcome(ptrace(PTRACE_ATTACH, getppid(), 0, 0)); }
static int try_prlimit_other(void)
{
	struct rlimit rl;
	return outcome(prlimit(getppid(), RLIMIT_NOFILE, NULL, &rl));
}
static int try_prlimit_own(void)
{
	struct rlimit rl;
	return outcome(prlimit(0, RLIMIT_NOFILE, NULL, &rl));
}
static void *thread_fn(void *arg) { return arg; }
static int try_thread(void)
{
	pthread_t t;
	return pthread_create(&t, NULL, thread_fn, NULL) == 0 && pthread_join(t, NULL) == 0;
}
static int try_user_ns(void) { return outcome(unshare(CLONE_NEWUSER)); }
static int try_clone_ns(void)
{
	return outcome(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
}
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

/* fcntl on a socketpair made before the filter. */
static int fcntl_fd = -1;
static int try_fcntl_nonblock(void)
{
	return outcome(fcntl(fcntl_fd, F_SETFL, fcntl(fcntl_fd, F_GETFL) | O_NONBLOCK));
}
static int try_fcntl_async(void)
{
	return outcome(fcntl(fcntl_fd, F_SETFL, fcntl(fcntl_fd, F_GETFL) | O_ASYNC));
}
static int try_fcntl_setown(void) { return outcome(fcntl(fcntl_fd, F_SETOWN, getppid())); }
static int try_fcntl_setsig(void) { return outcome(fcntl(fcntl_fd, F_SETSIG, SIGUSR1)); }
static int try_fcntl_dup(void) { return outcome(fcntl(fcntl_fd, F_DUPFD_CLOEXEC, 0)); }

/* No filter lets a process have signals sent to others of its uid. */
TEST(filters_allow_fcntl_but_not_signals_to_others)
{
	enum sandbox_kind kinds[] = { SANDBOX_9P, SANDBOX_NBD, SANDBOX_FUSE, SANDBOX_RFB,
				      SANDBOX_USB, SANDBOX_SOUND, SANDBOX_TUNNEL };
	int sv[2];

	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fcntl_fd = sv[0];
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		CHECK_INT(filtered(kinds[i], try_fcntl_nonblock), 1);
		CHECK_INT(filtered(kinds[i], try_fcntl_dup), 1);
		CHECK_INT(filtered(kinds[i], try_fcntl_async), 0);
		CHECK_INT(filtered(kinds[i], try_fcntl_setown), 0);
		CHECK_INT(filtered(kinds[i], try_fcntl_setsig), 0);
	}
	close(sv[0]);
	close(sv[1]);
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
	CHECK_INT(filtered(SANDBOX_9P, try_prlimit_own), 1);
	CHECK_INT(filtered(SANDBOX_9P, try_prlimit_other), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_thread), 1);
	CHECK_INT(filtered(SANDBOX_9P, try_user_ns), 0);
	CHECK_INT(filtered(SANDBOX_9P, try_clone_ns), 0);
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

static int try_shm(void)
{
	int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	void *p;
	if (id < 0)
		return outcome(id);
	p = shmat(id, NULL, 0);
	shmctl(id, IPC_RMID, NULL);
	return p == (void *)-1 ? outcome(-1) : outcome(shmdt(p));
}
static int try_kill_other_thread_group(void) { return outcome(syscall(SYS_tgkill, getppid(), getppid(), 0)); }

TEST(rfb_filter_allows_capture_memory_only)
{
	/* The X capture's shared memory, threads, memory. */
	CHECK_INT(filtered(SANDBOX_RFB, try_shm), 1);
	CHECK_INT(filtered(SANDBOX_RFB, try_thread), 1);
	CHECK_INT(filtered(SANDBOX_RFB, try_thread_memory), 1);
	/* No file, socket, program, mount or other process. */
	CHECK_INT(filtered(SANDBOX_RFB, try_openat), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_socket), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_socketpair), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_exec), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_mount), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_ptrace), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_kill_parent), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_kill_other_thread_group), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_clone_ns), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_tty_ioctl), 0);
	/* Not for the 9P and NBD servers. */
	CHECK_INT(filtered(SANDBOX_NBD, try_shm), 0);
}

/* On no descriptor: EBADF if the filter lets the call through. */
static int try_usbfs_ioctl(void)
{
	uint32_t caps;
	return outcome(ioctl(-1, USBDEVFS_GET_CAPABILITIES, &caps));
}
static int try_timerfd_settime(void)
{
	struct itimerspec its = { 0 };
	return outcome(timerfd_settime(-1, 0, &its, NULL));
}

TEST(usb_filter_allows_usbfs_ioctls_only)
{
	/* libusb's transfers and events, threads, memory. */
	CHECK_INT(filtered(SANDBOX_USB, try_usbfs_ioctl), 2);
	CHECK_INT(filtered(SANDBOX_USB, try_timerfd_settime), 2);
	CHECK_INT(filtered(SANDBOX_USB, try_thread), 1);
	CHECK_INT(filtered(SANDBOX_USB, try_thread_memory), 1);
	/* No other ioctl, file, socket, program, mount or process. */
	CHECK_INT(filtered(SANDBOX_USB, try_tty_ioctl), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_openat), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_socket), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_socketpair), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_exec), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_mount), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_ptrace), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_kill_parent), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_kill_other_thread_group), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_clone_ns), 0);
	CHECK_INT(filtered(SANDBOX_USB, try_shm), 0);
	/* usbfs is for the USB session alone. */
	CHECK_INT(filtered(SANDBOX_NBD, try_usbfs_ioctl), 0);
	CHECK_INT(filtered(SANDBOX_RFB, try_usbfs_ioctl), 0);
}

static int try_timerfd_create(void) { return outcome(timerfd_create(CLOCK_MONOTONIC, 0)); }
static int try_wait(void) { return outcome(waitpid(-1, NULL, WNOHANG)); }

TEST(sound_filter_allows_its_timer_and_wait_only)
{
	CHECK_INT(filtered(SANDBOX_SOUND, try_timerfd_create), 1);
	CHECK_INT(filtered(SANDBOX_SOUND, try_timerfd_settime), 2);
	CHECK_INT(filtered(SANDBOX_SOUND, try_wait), 2); /* no child: ECHILD */
	CHECK_INT(filtered(SANDBOX_SOUND, try_thread_memory), 1);
	CHECK_INT(filtered(SANDBOX_SOUND, try_usbfs_ioctl), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_tty_ioctl), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_openat), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_socket), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_exec), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_kill_parent), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_ptrace), 0);
	CHECK_INT(filtered(SANDBOX_SOUND, try_clone_ns), 0);
}

static int try_sendmmsg(void) { return outcome(sendmmsg(-1, NULL, 0, 0)); }
static int try_recvmmsg(void) { return outcome(recvmmsg(-1, NULL, 0, 0, NULL)); }

TEST(tunnel_filter_allows_datagrams_only)
{
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_sendmmsg), 2);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_recvmmsg), 2);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_thread), 1);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_thread_memory), 1);
	/* No new socket: the one it was given. */
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_socket), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_socketpair), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_tty_ioctl), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_usbfs_ioctl), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_openat), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_exec), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_kill_parent), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_clone_ns), 0);
	CHECK_INT(filtered(SANDBOX_TUNNEL, try_wait), 0);
	/* Batches of datagrams are the tunnel's alone. */
	CHECK_INT(filtered(SANDBOX_NBD, try_recvmmsg), 0);
}

/* A 9P session process that runs code of an attacker's still sees only
 * its export: ".." from the export's descriptor stops at the new root,
 * which holds nothing but the export and proc/self/fd; files inside the
 * export are there to use. Needs root (namespaces, mounts). */
TEST(nine_p_session_sees_only_its_export)
{
	char base[] = "/tmp/metac-sbx.XXXXXX", path[256], err[256];
	int status, fd;
	pid_t pid;

	if (geteuid() != 0) {
		printf("# not root: the 9P root is not checked\n");
		return;
	}
	CHECK(mkdtemp(base) != NULL);
	snprintf(path, sizeof(path), "%s/export", base);
	CHECK_INT(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/secret", base);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	CHECK(fd >= 0);
	close(fd);
	pid = fork();
	if (pid == 0) {
		int code = 0, e;
		snprintf(path, sizeof(path), "%s/export", base);
		if ((e = open(path, O_PATH | O_DIRECTORY)) < 0 || dup2(e, 4) < 0)
			_exit(100);
		snprintf(path, sizeof(path), "%s/root", base);
		if (sandbox_enter(SANDBOX_9P, path, 4, 0, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			_exit(101);
		}
		if (openat(4, "../secret", O_RDONLY) >= 0 || openat(4, "../../secret", O_RDONLY) >= 0)
			code |= 1;
		if (open("/secret", O_RDONLY) >= 0 || open("/etc/passwd", O_RDONLY) >= 0)
			code |= 2;
		if ((e = openat(4, "made-inside", O_CREAT | O_WRONLY, 0600)) < 0)
			code |= 4;
		if (openat(AT_FDCWD, "/proc/self/fd/4", O_PATH | O_DIRECTORY) < 0)
			code |= 8;
		if (mkdir("/new", 0755) == 0)
			code |= 16;
		_exit(code);
	}
	CHECK(pid > 0);
	CHECK_INT(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status));
	CHECK_INT(WEXITSTATUS(status), 0);
	snprintf(path, sizeof(path), "%s/export/made-inside", base);
	CHECK_INT(access(path, F_OK), 0);
	snprintf(path, sizeof(path), "rm -rf %s", base);
	CHECK_INT(system(path), 0);
}
