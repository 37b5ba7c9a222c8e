/* Least privilege for session processes: see sandbox.h. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mount.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/sandbox.h"

#define NOBODY 65534

/* What every session process does: memory, threads, time, signals to
 * itself, the socket it was given, and its end. */
static const int common_calls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(preadv), SCMP_SYS(pwritev),
	SCMP_SYS(sendto), SCMP_SYS(recvfrom), SCMP_SYS(sendmsg), SCMP_SYS(recvmsg),
	SCMP_SYS(shutdown), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
	SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(lseek), SCMP_SYS(close),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(dup),
	SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(mremap),
	SCMP_SYS(madvise), SCMP_SYS(brk),
	SCMP_SYS(set_robust_list),
	SCMP_SYS(rseq), SCMP_SYS(futex), SCMP_SYS(sched_yield),
	SCMP_SYS(sched_getaffinity), SCMP_SYS(getrandom),
	SCMP_SYS(gettid), SCMP_SYS(getpid), SCMP_SYS(getuid), SCMP_SYS(geteuid),
	SCMP_SYS(getgid), SCMP_SYS(getegid),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall),
	SCMP_SYS(exit), SCMP_SYS(exit_group),
};

/* The 9P server: files reached from the export's root descriptor, one
 * name at a time (fs9p/server.c, lib/safepath.c). */
static const int p9_calls[] = {
	SCMP_SYS(openat), SCMP_SYS(openat2), SCMP_SYS(statx), SCMP_SYS(fstatfs),
	SCMP_SYS(getdents64), SCMP_SYS(mkdirat), SCMP_SYS(mknodat),
	SCMP_SYS(unlinkat), SCMP_SYS(renameat), SCMP_SYS(renameat2),
	SCMP_SYS(linkat), SCMP_SYS(symlinkat), SCMP_SYS(readlinkat),
	SCMP_SYS(fchownat), SCMP_SYS(fchown), SCMP_SYS(fchmodat), SCMP_SYS(fchmod),
	SCMP_SYS(chmod), SCMP_SYS(utimensat), SCMP_SYS(ftruncate),
	SCMP_SYS(fallocate), SCMP_SYS(fsync), SCMP_SYS(fdatasync),
	SCMP_SYS(getxattr), SCMP_SYS(lgetxattr), SCMP_SYS(fgetxattr),
	SCMP_SYS(setxattr), SCMP_SYS(lsetxattr), SCMP_SYS(fsetxattr),
	SCMP_SYS(listxattr), SCMP_SYS(llistxattr), SCMP_SYS(flistxattr),
	SCMP_SYS(removexattr), SCMP_SYS(lremovexattr), SCMP_SYS(fremovexattr),
	SCMP_SYS(umask),
};

/* The NBD server: one open file or block device (nbd/server.c). */
static const int nbd_calls[] = {
	SCMP_SYS(fallocate), SCMP_SYS(fdatasync), SCMP_SYS(fsync),
	SCMP_SYS(sendfile), SCMP_SYS(ftruncate),
};

/* The FUSE bridge: its event loop, /dev/fuse and the 9P sockets the
 * daemon sends it (fs9p/fuse.c, fs9p/client.c, lib/loop.c). */
static const int fuse_calls[] = {
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl),
	SCMP_SYS(epoll_create1), SCMP_SYS(eventfd2), SCMP_SYS(signalfd4),
	SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime),
	SCMP_SYS(pipe2), SCMP_SYS(splice),
};

/* An RFB session: its viewer's wake-ups, and the X capture's shared
 * memory (rfb/server.c, rfb/x11.c; the X socket is open already). */
static const int rfb_calls[] = {
	SCMP_SYS(eventfd2), SCMP_SYS(shmget), SCMP_SYS(shmat), SCMP_SYS(shmdt),
	SCMP_SYS(shmctl),
};

/* A USB/IP session: libusb's event thread (its eventfd and timerfd are
 * open already) and transfers through the usbfs descriptor. */
static const int usb_calls[] = {
	SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime),
};

/* An Opus stream: the receiver's tick, and the wait for its PulseAudio
 * client at the end (audio/opus.c, svc/sound.c). */
static const int sound_calls[] = {
	SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime), SCMP_SYS(wait4),
};

/* A tunnel engine: datagrams in batches (vxlan/tunnel.c); the TAP
 * device's reads and writes are common calls. */
static const int tunnel_calls[] = {
	SCMP_SYS(sendmmsg), SCMP_SYS(recvmmsg),
};

/* The bridge's unmounter: one umount at the end. */
static const int unmount_calls[] = {
	SCMP_SYS(umount2),
};

/* ... and of ioctl only what it asks of a block device. */
static const unsigned long nbd_ioctls[] = {
	BLKZEROOUT, BLKDISCARD, BLKSSZGET, BLKGETSIZE64, BLKIOMIN, BLKIOOPT,
	BLKPBSZGET, BLKFLSBUF,
};

/* The kinds for processes whose threads run already: nobody in an empty
 * root, one filter for all threads. */
static int sandbox_threaded(enum sandbox_kind kind)
{
	return kind == SANDBOX_FUSE || kind == SANDBOX_RFB || kind == SANDBOX_USB ||
	       kind == SANDBOX_SOUND || kind == SANDBOX_TUNNEL;
}

/* Of fcntl, what the servers and libraries do with their descriptors:
 * flags, duplicates, pipe sizes, record locks. Not F_SETOWN, F_SETSIG,
 * F_SETLEASE, F_NOTIFY or O_ASYNC, which would have signals sent to
 * other processes of the same uid. */
static const int fcntl_cmds[] = {
	F_GETFD, F_SETFD, F_GETFL, F_DUPFD, F_DUPFD_CLOEXEC, F_GETPIPE_SZ, F_SETPIPE_SZ,
	F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW,
};

static int add_fcntl(scmp_filter_ctx ctx)
{
	int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 2,
				 SCMP_A1(SCMP_CMP_EQ, F_SETFL),
				 SCMP_A2(SCMP_CMP_MASKED_EQ, O_ASYNC, 0));
	for (size_t i = 0; r == 0 && i < sizeof(fcntl_cmds) / sizeof(fcntl_cmds[0]); i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 1,
				     SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)fcntl_cmds[i]));
	return r;
}

static int add_calls(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);
		/* A call this architecture lacks is not an error. */
		if (r < 0 && r != -EDOM && r != -EFAULT)
			return r;
	}
	return 0;
}

int sandbox_filter(enum sandbox_kind kind)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	int r;

	if (!ctx)
		return -ENOMEM;
	r = add_calls(ctx, common_calls, sizeof(common_calls) / sizeof(common_calls[0]));
	if (r == 0)
		r = add_fcntl(ctx);
	/* Threads, not namespaces; clone3's flags are out of the filter's
	 * sight, so "not here": glibc then uses clone. */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWNS | CLONE_NEWUSER |
					     CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
					     CLONE_NEWUTS | CLONE_NEWCGROUP, 0));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* Its own limits only (glibc reads them so). */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1,
				     SCMP_A0(SCMP_CMP_EQ, 0));
	if (r == 0 && kind == SANDBOX_9P)
		r = add_calls(ctx, p9_calls, sizeof(p9_calls) / sizeof(p9_calls[0]));
#ifdef SYS_fchmodat2
	/* Newer than this kernel, maybe: "not here" makes the server fall
	 * back to chmod through proc/self/fd, "not allowed" would not. */
	if (r == 0 && kind == SANDBOX_9P)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SYS_fchmodat2, 0);
#endif
	if (r == 0 && kind == SANDBOX_RFB)
		r = add_calls(ctx, rfb_calls, sizeof(rfb_calls) / sizeof(rfb_calls[0]));
	if (r == 0 && kind == SANDBOX_USB) {
		r = add_calls(ctx, usb_calls, sizeof(usb_calls) / sizeof(usb_calls[0]));
		/* Of ioctl only usbfs's: USBDEVFS_* all have type 'U'. */
		if (r == 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, 'U' << 8));
	}
	if (r == 0 && kind == SANDBOX_SOUND)
		r = add_calls(ctx, sound_calls, sizeof(sound_calls) / sizeof(sound_calls[0]));
	if (r == 0 && kind == SANDBOX_TUNNEL)
		r = add_calls(ctx, tunnel_calls, sizeof(tunnel_calls) / sizeof(tunnel_calls[0]));
	if (r == 0 && sandbox_threaded(kind)) {
		if (kind == SANDBOX_FUSE)
			r = add_calls(ctx, fuse_calls, sizeof(fuse_calls) / sizeof(fuse_calls[0]));
		/* Signals to its own threads only (abort, raise). */
		if (r == 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
					     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
		/* Its threads run already: the filter is for all of them. */
		if (r == 0)
			r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	}
	if (r == 0 && kind == SANDBOX_UNMOUNT)
		r = add_calls(ctx, unmount_calls, 1);
	if (r == 0 && kind == SANDBOX_NBD) {
		r = add_calls(ctx, nbd_calls, sizeof(nbd_calls) / sizeof(nbd_calls[0]));
		for (size_t i = 0; r == 0 && i < sizeof(nbd_ioctls) / sizeof(nbd_ioctls[0]); i++)
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					     SCMP_A1(SCMP_CMP_EQ, nbd_ioctls[i]));
	}
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	return r;
}

/* Takes from the bounding set every capability not in keep (a bit mask
 * of CAP_*): nothing can bring them back. */
static int bset_limit(uint64_t keep)
{
	for (int cap = 0; cap <= 63; cap++) {
		if (keep & (1ull << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -errno;
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	return 0;
}

/* Keeps only the capabilities in keep in the effective, permitted and
 * inheritable sets. */
static int caps_limit(uint64_t keep)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = (uint32_t)keep;
	d[1].effective = d[1].permitted = (uint32_t)(keep >> 32);
	return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

/*
 * The root becomes a tmpfs of the process's own mount namespace, mounted
 * on dir (an empty directory of the daemon's; other processes still see
 * it empty), read-only, the old root detached from it. For 9P it holds
 * the export, bind-mounted at /export (read-only if the export is) and
 * reopened as EXPORT_FD, so that ".." from it stops at the export as it
 * would at any mount's root; and proc/self/fd, a bind of this process's
 * own descriptor directory, through which the server reaches the very
 * file an O_PATH descriptor holds. No other process, and nothing of the
 * host's tree but the export, is reachable from here.
 */
static int root_private(const char *dir, int export_fd, int read_only, char *err,
			size_t errsz)
{
	const unsigned long ro = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	char path[4200], src[64], where[4096];
	struct stat before, after;
	const char *what;
	ssize_t n;
	int fd;

	/* A mount of the namespace left behind cannot be bound into the new
	 * one: the export is bound by its path, and checked to be the same
	 * directory once reopened. */
	if (export_fd >= 0) {
		what = "the export's path";
		snprintf(src, sizeof(src), "/proc/self/fd/%d", export_fd);
		if (fstat(export_fd, &before) < 0 || (n = readlink(src, where, sizeof(where) - 1)) < 0)
			goto fail;
		where[n] = 0;
	}
	what = "a mount namespace";
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		goto fail;
	what = "a tmpfs";
	if ((mkdir(dir, 0700) < 0 && errno != EEXIST) ||
	    mount("metac-session", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=16k,nr_inodes=16,mode=0755") < 0)
		goto fail;
	if (export_fd >= 0) {
		what = "the export";
		snprintf(path, sizeof(path), "%s/export", dir);
		if (mkdir(path, 0755) < 0 || mount(where, path, NULL, MS_BIND | MS_REC, NULL) < 0 ||
		    (read_only && mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY |
					MS_NOSUID | MS_NODEV, NULL) < 0))
			goto fail;
		what = "proc/self/fd";
		snprintf(path, sizeof(path), "%s/proc", dir);
		if (mkdir(path, 0555) < 0)
			goto fail;
		snprintf(path, sizeof(path), "%s/proc/self", dir);
		if (mkdir(path, 0555) < 0)
			goto fail;
		snprintf(path, sizeof(path), "%s/proc/self/fd", dir);
		snprintf(src, sizeof(src), "/proc/%d/fd", (int)getpid());
		if (mkdir(path, 0555) < 0 || mount(src, path, NULL, MS_BIND, NULL) < 0)
			goto fail;
	}
	what = "the new root";
	if (mount(NULL, dir, NULL, ro, NULL) < 0 || chdir(dir) < 0 ||
	    syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
	    chdir("/") < 0)
		goto fail;
	if (export_fd >= 0) {
		what = "the export again";
		if ((fd = open("/export", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0 ||
		    fstat(fd, &after) < 0)
			goto fail;
		if (after.st_dev != before.st_dev || after.st_ino != before.st_ino) {
			snprintf(err, errsz, "the export moved while its session started");
			return -ESTALE;
		}
		if (dup3(fd, export_fd, O_CLOEXEC) < 0)
			goto fail;
		close(fd);
	}
	return 0;
fail:
	snprintf(err, errsz, "cannot set up %s: %s", what, strerror(errno));
	return -errno;
}

/* The root becomes a directory made for this process and removed at
 * once: nothing is in it and nothing can be made in it. For a process
 * that already runs threads, which may not take a mount namespace. */
static int root_deleted(const char *parent, char *err, size_t errsz)
{
	char dir[4200];

	snprintf(dir, sizeof(dir), "%s/metac-root.XXXXXX", parent);
	if (!mkdtemp(dir) || chdir(dir) < 0) {
		snprintf(err, errsz, "cannot make an empty directory in %s: %s", parent,
			 strerror(errno));
		return -errno;
	}
	if (rmdir(dir) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		int e = errno;
		rmdir(dir);
		snprintf(err, errsz, "cannot change root: %s", strerror(e));
		return -e;
	}
	return 0;
}

/* The FUSE bridge, an RFB, USB/IP or sound session, a tunnel engine: all its threads become nobody (glibc
 * passes set*id on to every thread, and with the uid go the capabilities). */
static int enter_threaded(const char *root_dir, char *err, size_t errsz)
{
	int r;
	if (geteuid() == 0) {
		if ((r = root_deleted(root_dir, err, errsz)) < 0)
			return r;
		if ((r = bset_limit(0)) < 0 || setgroups(0, NULL) < 0 ||
		    setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0) {
			snprintf(err, errsz, "cannot become nobody: %s",
				 strerror(r < 0 ? -r : errno));
			return r < 0 ? r : -errno;
		}
	}
	return 0;
}

int sandbox_enter(enum sandbox_kind kind, const char *root_dir, int export_fd, int read_only,
		  char *err, size_t errsz)
{
	int r;

	if (sandbox_threaded(kind)) {
		if ((r = enter_threaded(root_dir, err, errsz)) < 0)
			return r;
	} else if (kind == SANDBOX_UNMOUNT) {
		/* Root, with nothing but the power to unmount. */
		if (geteuid() == 0 && ((r = bset_limit(1ull << CAP_SYS_ADMIN)) < 0 ||
				       (r = caps_limit(1ull << CAP_SYS_ADMIN)) < 0)) {
			snprintf(err, errsz, "cannot drop capabilities: %s", strerror(-r));
			return r;
		}
	} else if (geteuid() == 0) {
		if ((r = root_private(root_dir, kind == SANDBOX_9P ? export_fd : -1, read_only,
				      err, errsz)) < 0)
			return r;
		uint64_t keep = kind == SANDBOX_NBD ? 0 :
			1ull << CAP_CHOWN | 1ull << CAP_DAC_OVERRIDE | 1ull << CAP_DAC_READ_SEARCH |
			1ull << CAP_FOWNER | 1ull << CAP_FSETID;
		if ((r = bset_limit(keep)) == 0 && kind == SANDBOX_NBD) {
			/* The device is open: nobody may use it from here (and
			 * a uid other than 0 holds no capability). */
			if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
			    setresuid(NOBODY, NOBODY, NOBODY) < 0) {
				snprintf(err, errsz, "cannot become nobody: %s", strerror(errno));
				return -errno;
			}
		}
		if (r == 0)
			r = caps_limit(keep);
		if (r < 0) {
			snprintf(err, errsz, "cannot drop capabilities: %s", strerror(-r));
			return r;
		}
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errsz, "cannot set no_new_privs: %s", strerror(errno));
		return -errno;
	}
	if ((r = sandbox_filter(kind)) < 0) {
		snprintf(err, errsz, "cannot load the seccomp filter: %s", strerror(-r));
		return r;
	}
	return 0;
}
