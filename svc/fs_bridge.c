/*
 * `metac fs _bridge`: the mount helper the daemon starts for each remote
 * folder it mounts (svc/fs.c). It runs fs9p/fuse.c on the 9p socket the
 * daemon hands it, in a process of its own, so that a crash costs one
 * mount and never the node.
 *
 *   metac fs _bridge --fd N --ctl-fd N --uid U --gid G [--read-only]
 *                    [--timeout MS] MOUNTPOINT
 *
 * The control socket (a stream socket pair with the daemon) carries:
 *   bridge -> daemon   "ok\n" once mounted, or one line saying why not;
 *                      "reconnect\n" when the 9p connection broke
 *   daemon -> bridge   'F' with a new 9p socket (SCM_RIGHTS), or
 *                      'E' and a line saying why there is none
 * When the daemon goes (the socket hangs up) the bridge unmounts.
 *
 * The bridge handles what a remote node sends, so once mounted it gives
 * up all it can (lib/sandbox.h): it becomes nobody with an empty root,
 * opens nothing more, and a seccomp filter holds for all its threads.
 * Unmounting then takes root: a helper it starts before, `metac fs
 * _unmounter MOUNTPOINT` (root with CAP_SYS_ADMIN alone, its own filter),
 * waits on a pipe and unmounts when the bridge says so.
 *
 *   metac fs mount9p [--insecure] [--uid U] [--aname TREE] [--read-only]
 *                    [--timeout MS] ADDR:PORT|unix:PATH MOUNTPOINT
 *
 * runs the same bridge in the foreground on a plain 9P2000.L server
 * (diod, `metac fs serve9p`), dialling it again when the connection
 * breaks, until unmounted or interrupted. Plain 9p is neither encrypted
 * nor authenticated: loopback and unix sockets only, unless --insecure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fs9p/fuse.h"
#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/mountinfo.h"
#include "lib/net.h"
#include "lib/proc.h"
#include "lib/sandbox.h"
#include "svc/fs_bridge.h"

struct bridge {
	int ctl;
	const char *mountpoint;
	int unmounter; /* the pipe to it, or -1 */
};

/* Starts the unmounter and confines the bridge (p9fuse confine hook). */
static int bridge_confine(void *arg, char *why, size_t whysz)
{
	struct bridge *b = arg;
	char *argv[] = { "metac", "fs", "_unmounter", (char *)b->mountpoint, NULL };
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		snprintf(why, whysz, "pipe: %s", strerror(errno));
		return -errno;
	}
	pid = proc_spawn_self(argv, &p[0], 1);
	close(p[0]);
	if (pid < 0) {
		close(p[1]);
		snprintf(why, whysz, "cannot start the unmounter: %s", strerror(-pid));
		return pid;
	}
	b->unmounter = p[1];
	return sandbox_enter(SANDBOX_FUSE, "/tmp", -1, 0, why, whysz);
}

/* The mount ends: unmounted by the unmounter, unless it is gone already
 * (the session's descriptor then says so, as libfuse checks). Without an
 * unmounter (it could not start: the bridge is not confined) libfuse
 * does it. */
static int bridge_unmount(void *arg, int fuse_fd)
{
	struct bridge *b = arg;
	struct pollfd pfd = { .fd = fuse_fd, .events = POLLIN };

	if (b->unmounter < 0)
		return -1;
	if (!(poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR)) &&
	    write(b->unmounter, "u", 1) != 1)
		log_warn("fuse %s: cannot ask for the unmount: %m", b->mountpoint);
	close(b->unmounter);
	b->unmounter = -1;
	return 0;
}

/* `metac fs _unmounter MOUNTPOINT`: waits for the bridge's word on fd 3,
 * then unmounts (lazily: open files stay usable until closed) the mount
 * the bridge made, and only that one: the topmost mount there must still
 * be the FUSE mount it found at its start (by mount ID), whatever a
 * confined, perhaps subverted bridge says. */
int fs_unmounter_main(const struct applet *self, int argc, char **argv)
{
	struct mountinfo_ent mine, now;
	char c = 0, err[256];
	int mi;

	if (argc != 2 || fcntl(3, F_GETFD) < 0)
		return cli_usage_error(self, "_unmounter is started by the mount helper");
	log_init("metac-fs-unmounter", LOG_LVL_INFO, 0);
	close_range(4, ~0U, 0);
	if ((mi = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)) < 0 ||
	    mountinfo_find(mi, argv[1], "fuse.metac", &mine) < 0) {
		log_error("fuse unmounter: no metac mount on %s", argv[1]);
		_exit(EXIT_FAIL);
	}
	if (sandbox_enter(SANDBOX_UNMOUNT, NULL, -1, 0, err, sizeof(err)) < 0) {
		log_error("fuse unmounter: %s", err);
		_exit(EXIT_FAIL);
	}
	while (read(3, &c, 1) < 0 && errno == EINTR)
		;
	/* Nothing read: the bridge ended without asking (unmounted already). */
	if (c == 'u' && mountinfo_find(mi, argv[1], "fuse.metac", &now) == 0 &&
	    now.id == mine.id && umount2(argv[1], MNT_DETACH | UMOUNT_NOFOLLOW) < 0 &&
	    errno != EINVAL)
		log_warn("fuse: cannot unmount %s: %m", argv[1]);
	_exit(EXIT_OK);
}

static void ctl_line(struct bridge *b, const char *line)
{
	size_t n = strlen(line), done = 0;
	while (done < n) {
		ssize_t w = send(b->ctl, line + done, n - done, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		done += (size_t)w;
	}
}

static void bridge_mounted(void *arg, int err, const char *why)
{
	struct bridge *b = arg;
	char line[512];

	if (!err) {
		ctl_line(b, "ok\n");
		return;
	}
	snprintf(line, sizeof(line), "%s\n", why ? why : strerror(-err));
	/* One line: the daemon reads up to the first newline. */
	for (char *p = line; *p && p[1]; p++)
		if (*p == '\n')
			*p = ' ';
	ctl_line(b, line);
}


/* One message from the daemon: 'F' and a descriptor, or 'E' and why. */
static int ctl_recv(struct bridge *b, int flags, char *kind, int *fd)
{
	char c, ctrl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &c, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = ctrl, .msg_controllen = sizeof(ctrl) };
	struct cmsghdr *cm;
	ssize_t n = recvmsg(b->ctl, &mh, flags | MSG_CMSG_CLOEXEC);

	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	*kind = c;
	*fd = -1;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(cm), sizeof(int));
	return 0;
}

/* The rest of an 'E' message: its line, into why. */
static void ctl_read_line(struct bridge *b, char *why, size_t whysz, uint64_t deadline)
{
	size_t n = 0;
	for (;;) {
		struct pollfd p = { b->ctl, POLLIN, 0 };
		uint64_t now = clock_mono_ms();
		char c;
		if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0 ||
		    recv(b->ctl, &c, 1, 0) != 1 || c == '\n')
			break;
		if (n + 1 < whysz)
			why[n++] = c;
	}
	why[n] = 0;
}

static int bridge_reconnect(void *arg, uint64_t deadline)
{
	struct bridge *b = arg;
	char kind, why[256];
	int fd, e;

	/* An answer that came too late for an earlier attempt is stale. */
	while (ctl_recv(b, MSG_DONTWAIT, &kind, &fd) == 0) {
		if (fd >= 0)
			close(fd);
		if (kind == 'E')
			ctl_read_line(b, why, sizeof(why), clock_mono_ms() + 100);
	}
	ctl_line(b, "reconnect\n");
	for (;;) {
		struct pollfd p = { b->ctl, POLLIN, 0 };
		uint64_t now = clock_mono_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		e = poll(&p, 1, (int)(deadline - now));
		if (e < 0 && errno == EINTR)
			continue;
		if (e <= 0)
			return -ETIMEDOUT;
		if ((e = ctl_recv(b, 0, &kind, &fd)) < 0)
			return e == -EPIPE || e == -ECONNRESET ? -EPIPE : e;
		if (kind == 'F' && fd >= 0)
			return fd;
		if (fd >= 0)
			close(fd);
		if (kind == 'E') {
			ctl_read_line(b, why, sizeof(why), deadline);
			log_warn("fuse %s: no new connection: %s", b->mountpoint, why);
			return -EHOSTUNREACH;
		}
		/* Anything else is not ours: ignore it. */
	}
}

int fs_bridge_main(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "fd", required_argument, NULL, 'f' },
		{ "ctl-fd", required_argument, NULL, 'c' },
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' },
		{ 0 }
	};
	struct p9fuse_config cfg = { .hangup_fd = -1, .fsname = "metac" };
	struct bridge b = { .ctl = -1, .unmounter = -1 };
	int c, fd = -1, e;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f': fd = atoi(optarg); break;
		case 'c': b.ctl = atoi(optarg); break;
		case 'u': cfg.uid = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'g': cfg.gid = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'r': cfg.read_only = 1; break;
		case 't': cfg.timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		default: return cli_usage_error(self, "unknown option to _bridge");
		}
	}
	if (optind != argc - 1 || fd < 0 || b.ctl < 0)
		return cli_usage_error(self, "_bridge is started by the daemon, not by hand");
	log_init("metac-fs-bridge", LOG_LVL_INFO, 0);
	b.mountpoint = cfg.mountpoint = argv[optind];
	cfg.reconnect = bridge_reconnect;
	cfg.ordered = 1; /* a ref always leads to metac's own server */
	cfg.mounted = bridge_mounted;
	/* Confined only as root: a user's bridge unmounts through
	 * fusermount3, a program it would have to start. */
	if (geteuid() == 0) {
		cfg.confine = bridge_confine;
		cfg.unmount = bridge_unmount;
	}
	cfg.hangup_fd = b.ctl;
	cfg.arg = &b;
	e = p9fuse_run(fd, &cfg) < 0 ? EXIT_FAIL : EXIT_OK;
	/* Without exit handlers: confined, a sanitizer's leak check at exit
	 * would need calls the filter refuses, and hang or die there. */
	if (cfg.confine)
		_exit(e);
	return e;
}

/* --- mount9p ------------------------------------------------------- */

struct dialer {
	struct net_addr addr;
	char where[128];
	int ok;
};

/* A blocking connect to a plain 9p server, bounded by deadline. */
static int dial(struct dialer *d, uint64_t deadline)
{
	int fd = net_connect(&d->addr), e;
	struct pollfd p;
	uint64_t now;

	if (fd < 0)
		return fd;
	p.fd = fd;
	p.events = POLLOUT;
	now = clock_mono_ms();
	e = poll(&p, 1, now < deadline ? (int)(deadline - now) : 0);
	if (e <= 0) {
		close(fd);
		return e == 0 ? -ETIMEDOUT : -errno;
	}
	if ((e = net_connect_result(fd)) < 0) {
		close(fd);
		return e;
	}
	return fd;
}

static int mount9p_reconnect(void *arg, uint64_t deadline)
{
	return dial(arg, deadline);
}

static void mount9p_mounted(void *arg, int err, const char *why)
{
	struct dialer *d = arg;
	if (err) {
		fprintf(stderr, "metac fs mount9p: %s\n", why ? why : strerror(-err));
		return;
	}
	d->ok = 1;
	log_info("mounted the 9p server at %s", d->where);
}

int fs_mount9p_main(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "insecure", no_argument, NULL, 'i' },
		{ "uid", required_argument, NULL, 'u' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' },
		{ "aname", required_argument, NULL, 'n' },
		{ 0 }
	};
	struct p9fuse_config cfg = { .hangup_fd = -1, .fsname = "metac-9p" };
	struct dialer d = { 0 };
	char mp[PATH_MAX];
	int c, insecure = 0, fd, e;

	cfg.uid = getuid();
	cfg.gid = getgid();
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'i': insecure = 1; break;
		case 'u': cfg.uid = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'r': cfg.read_only = 1; break;
		case 't': cfg.timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'n': cfg.aname = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 2)
		return cli_usage_error(self, "mount9p takes an address and a mountpoint");
	if ((e = net_addr_parse(argv[optind], 0, &d.addr)) < 0)
		return cli_usage_error(self, "'%s' is not unix:PATH or ADDR:PORT", argv[optind]);
	if (!insecure && !net_addr_is_loopback(&d.addr)) {
		fprintf(stderr, "metac fs mount9p: plain 9p to %s would cross the network "
			"unencrypted; use a ref, or --insecure if you mean it\n", argv[optind]);
		return EXIT_USAGE;
	}
	if (!realpath(argv[optind + 1], mp)) {
		fprintf(stderr, "metac fs mount9p: %s: %m\n", argv[optind + 1]);
		return EXIT_FAIL;
	}
	net_addr_format(&d.addr, d.where, sizeof(d.where));
	log_init("metac", LOG_LVL_INFO, 0);
	if ((fd = dial(&d, clock_mono_ms() + 10000)) < 0) {
		fprintf(stderr, "metac fs mount9p: cannot connect to %s: %s\n", d.where,
			strerror(-fd));
		return EXIT_FAIL;
	}
	cfg.mountpoint = mp;
	cfg.reconnect = mount9p_reconnect;
	cfg.mounted = mount9p_mounted;
	cfg.arg = &d;
	return p9fuse_run(fd, &cfg) < 0 || !d.ok ? EXIT_FAIL : EXIT_OK;
}
