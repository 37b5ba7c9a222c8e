/*
 * The container helper (see container.h): namespaces, the root, devices,
 * interfaces, the pty and the command, in a process of its own so that
 * nothing here can take the daemon down. Runs as root; a new container
 * gets mount, pid, uts, ipc and network namespaces.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <poll.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/net.h"
#include "lib/netlink.h"
#include "svc/container.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* --- the configuration --------------------------------------------- */

static int put_str(struct buf *b, const char *s)
{
	size_t n = strlen(s);
	if (n > CTR_MAX_STR)
		return -ENAMETOOLONG;
	return buf_put_u32(b, (uint32_t)n) < 0 || buf_put(b, s, n) < 0 ? -ENOMEM : 0;
}

int ctr_config_encode(const struct ctr_config *c, struct buf *b)
{
	int e = 0;
	e |= buf_put_u32(b, (uint32_t)c->join);
	e |= put_str(b, c->root);
	e |= buf_put_u32(b, (uint32_t)c->nmounts);
	for (size_t i = 0; i < c->nmounts; i++)
		e |= put_str(b, c->mounts[i].target) | put_str(b, c->mounts[i].source);
	e |= buf_put_u32(b, (uint32_t)c->nnets);
	for (size_t i = 0; i < c->nnets; i++)
		e |= put_str(b, c->nets[i].name) | put_str(b, c->nets[i].cidr) |
		     put_str(b, c->nets[i].gateway);
	e |= buf_put_u32(b, (uint32_t)c->nargs);
	for (size_t i = 0; i < c->nargs; i++)
		e |= put_str(b, c->args[i]);
	e |= buf_put_u32(b, (uint32_t)c->nenv);
	for (size_t i = 0; i < c->nenv; i++)
		e |= put_str(b, c->env[i]);
	e |= put_str(b, c->hostname);
	e |= buf_put_u32(b, c->uid) | buf_put_u32(b, c->gid);
	e |= buf_put_u8(b, (uint8_t)!!c->pty);
	e |= buf_put_u32(b, c->rows) | buf_put_u32(b, c->cols);
	if (e)
		return -ENOMEM;
	return b->len > CTR_MAX_MSG ? -E2BIG : 0;
}

/* A string into out (size outsz, NUL-terminated), or allocated (*dup). */
static int get_str(struct rd *r, char *out, size_t outsz, char **dup)
{
	uint32_t n;
	const uint8_t *p;

	if (rd_u32(r, &n) < 0 || n > CTR_MAX_STR || rd_bytes(r, &p, n) < 0 || memchr(p, 0, n))
		return -EBADMSG;
	if (dup) {
		if (!(*dup = strndup((const char *)p, n)))
			return -ENOMEM;
		return 0;
	}
	if (n >= outsz)
		return -EBADMSG;
	memcpy(out, p, n);
	out[n] = 0;
	return 0;
}

int ctr_config_decode(const uint8_t *p, size_t n, struct ctr_config *c)
{
	struct rd r;
	uint32_t v, k;
	uint8_t pty;

	memset(c, 0, sizeof(*c));
	rd_init(&r, p, n);
	if (rd_u32(&r, &v) < 0)
		return -EBADMSG;
	c->join = (pid_t)v;
	if (get_str(&r, c->root, sizeof(c->root), NULL) < 0 || rd_u32(&r, &k) < 0 ||
	    k > CTR_MAX_MOUNTS)
		return -EBADMSG;
	for (c->nmounts = 0; c->nmounts < k; c->nmounts++) {
		struct ctr_mount *m = &c->mounts[c->nmounts];
		if (get_str(&r, m->target, sizeof(m->target), NULL) < 0 ||
		    get_str(&r, m->source, sizeof(m->source), NULL) < 0)
			return -EBADMSG;
	}
	if (rd_u32(&r, &k) < 0 || k > CTR_MAX_NETS)
		return -EBADMSG;
	for (c->nnets = 0; c->nnets < k; c->nnets++) {
		struct ctr_net *x = &c->nets[c->nnets];
		if (get_str(&r, x->name, sizeof(x->name), NULL) < 0 ||
		    get_str(&r, x->cidr, sizeof(x->cidr), NULL) < 0 ||
		    get_str(&r, x->gateway, sizeof(x->gateway), NULL) < 0)
			return -EBADMSG;
	}
	if (rd_u32(&r, &k) < 0 || k == 0 || k > CTR_MAX_ARGS)
		goto bad;
	for (c->nargs = 0; c->nargs < k; c->nargs++)
		if (get_str(&r, NULL, 0, &c->args[c->nargs]) < 0)
			goto bad;
	if (rd_u32(&r, &k) < 0 || k > CTR_MAX_ENV)
		goto bad;
	for (c->nenv = 0; c->nenv < k; c->nenv++)
		if (get_str(&r, NULL, 0, &c->env[c->nenv]) < 0)
			goto bad;
	if (get_str(&r, c->hostname, sizeof(c->hostname), NULL) < 0 || rd_u32(&r, &c->uid) < 0 ||
	    rd_u32(&r, &c->gid) < 0 || rd_u8(&r, &pty) < 0 || rd_u32(&r, &c->rows) < 0 ||
	    rd_u32(&r, &c->cols) < 0 || rd_left(&r))
		goto bad;
	c->pty = pty;
	return 0;
bad:
	ctr_config_free(c);
	return -EBADMSG;
}

void ctr_config_free(struct ctr_config *c)
{
	for (size_t i = 0; i < c->nargs; i++)
		free(c->args[i]);
	for (size_t i = 0; i < c->nenv; i++)
		free(c->env[i]);
	c->nargs = c->nenv = 0;
}

int ctr_target_ok(const char *t)
{
	size_t n = strlen(t);
	if (t[0] != '/' || n >= PATH_MAX)
		return 0;
	for (const char *p = t + 1; *p;) {
		const char *e = strchrnul(p, '/');
		size_t l = (size_t)(e - p);
		if (l == 0 && *e)
			return 0; /* "//" */
		if ((l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.'))
			return 0;
		p = *e ? e + 1 : e;
	}
	return 1;
}

/* --- talking to the daemon ----------------------------------------- */

/* The agent of a VM talks over a virtio port (a character device): no
 * send() there. */
static int in_vm;

void ctr_set_vm(void)
{
	in_vm = 1;
}

/* The end of pid 1 (or of the helper): in a VM, the machine's. */
void ctr_end(int status)
{
	if (in_vm) {
		sync();
		reboot(RB_POWER_OFF);
	}
	_exit(status);
}

static void ctl_write(const void *p, size_t n)
{
	if (in_vm)
		(void)!write(CTR_FD_CTL, p, n);
	else
		(void)!send(CTR_FD_CTL, p, n, MSG_NOSIGNAL);
}

static void say(char kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(char kind, const char *fmt, ...)
{
	char m[1024];
	va_list ap;
	int n;

	m[0] = kind;
	va_start(ap, fmt);
	n = vsnprintf(m + 1, sizeof(m) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(m) - 3)
		n = (int)sizeof(m) - 3;
	/* One line each: the channel may be a byte stream (a VM's port). */
	for (int i = 1; i <= n; i++)
		if (m[i] == '\n' || m[i] == '\r')
			m[i] = ' ';
	m[n + 1] = '\n';
	/* Nothing to be done if the daemon is gone: the container ends
	 * with it anyway. */
	ctl_write(m, (size_t)n + 2);
}

static void say_fd(char kind, int fd)
{
	char line[2] = { kind, '\n' };
	(void)!net_send_fd(CTR_FD_CTL, line, 2, fd, 0);
}

/* Says what failed and ends this process. */
static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	char m[1000];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	say('E', "%s", m);
	ctr_end(1);
}

/* --- the root ------------------------------------------------------ */

static int openat2_in(int root, const char *path, int flags)
{
	struct open_how how = { .flags = (uint64_t)flags | O_CLOEXEC,
				.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
	return (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
}

/* Opens path inside the tree root as its "/" (symbolic links cannot
 * lead out of it), making missing directories on the way. */
static int open_dir_in(int root, const char *path)
{
	char prefix[PATH_MAX];
	const char *p = path;
	int fd;

	while (*p == '/')
		p++;
	if (!*p)
		return fcntl(root, F_DUPFD_CLOEXEC, 3);
	if ((fd = openat2_in(root, path, O_PATH | O_DIRECTORY)) >= 0 || errno != ENOENT)
		return fd;
	/* Make each missing component in turn, under its resolved parent. */
	for (const char *e = p;; e++) {
		if (*e != '/' && *e)
			continue;
		int len = (int)(e - path);
		snprintf(prefix, sizeof(prefix), "%.*s", len, path);
		fd = openat2_in(root, prefix, O_PATH | O_DIRECTORY);
		if (fd < 0 && errno == ENOENT) {
			char *slash = strrchr(prefix, '/');
			int parent;
			*slash = 0;
			parent = openat2_in(root, *prefix ? prefix : "/", O_PATH | O_DIRECTORY);
			if (parent < 0)
				return -1;
			if (mkdirat(parent, slash + 1, 0755) < 0 && errno != EEXIST) {
				int e2 = errno;
				close(parent);
				errno = e2;
				return -1;
			}
			close(parent);
			*slash = '/';
			fd = openat2_in(root, prefix, O_PATH | O_DIRECTORY);
		}
		if (fd < 0)
			return -1;
		if (!*e)
			return fd;
		close(fd);
	}
}

/* Sets flags on the bind mount at path inside root, keeping those it
 * has (a remount must repeat them). */
static void remount_in(int root, const char *path, unsigned long flags)
{
	char at[64];
	struct statvfs sv;
	int fd = open_dir_in(root, path);

	if (fd < 0 || fstatvfs(fd, &sv) < 0)
		fail("cannot open %s again: %s", path, strerror(errno));
	if (sv.f_flag & ST_RDONLY)
		flags |= MS_RDONLY;
	if (sv.f_flag & ST_NOSUID)
		flags |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		flags |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		flags |= MS_NOEXEC;
	snprintf(at, sizeof(at), "/proc/self/fd/%d", fd);
	if (mount(NULL, at, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
		fail("cannot set the flags of %s: %s", path, strerror(errno));
	close(fd);
}

/* Mounts on path inside root (resolved there). */
static void mount_in(int root, const char *path, const char *src, const char *type,
		     unsigned long flags, const char *data)
{
	char at[64];
	int fd = open_dir_in(root, path);

	if (fd < 0)
		fail("cannot make %s in the container's root: %s", path, strerror(errno));
	snprintf(at, sizeof(at), "/proc/self/fd/%d", fd);
	if (mount(src, at, type, flags, data) < 0)
		fail("cannot mount %s on %s: %s", type ? type : src, path, strerror(errno));
	close(fd);
	/* Flags of bind mounts take a second pass, on the new mount (fd
	 * was the directory under it). */
	if ((flags & MS_BIND) && (flags & (MS_RDONLY | MS_NODEV | MS_NOSUID)))
		remount_in(root, path, flags & (MS_RDONLY | MS_NODEV | MS_NOSUID));
}

/* Puts the host's node at path over the file fd (on a nodev tmpfs,
 * device nodes of its own would not open; bind mounts of the host's do,
 * and only those). */
static int bind_over(int fd, const char *host)
{
	char at[64];
	snprintf(at, sizeof(at), "/proc/self/fd/%d", fd);
	return mount(host, at, NULL, MS_BIND, NULL);
}

/* The device nodes of the container's /dev (mounted nodev), before the
 * host's /dev is out of reach. */
static void make_dev_nodes(int root)
{
	static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
	int dev = open_dir_in(root, "/dev"), fd;
	char host[32];

	if (dev < 0)
		fail("cannot open the container's /dev: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		snprintf(host, sizeof(host), "/dev/%s", nodes[i]);
		if ((fd = openat(dev, nodes[i], O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666)) < 0 ||
		    bind_over(fd, host) < 0)
			fail("cannot make /dev/%s: %s", nodes[i], strerror(errno));
		close(fd);
	}
	close(dev);
}

/* Files of /proc that would reach past the container (sysrq, kernel
 * memory) show nothing; /proc/sys is read-only. */
static void mask_proc(int root)
{
	static const char *const masked[] = { "/proc/sysrq-trigger", "/proc/kcore", "/proc/keys",
					      "/proc/timer_list" };
	char at[64];
	int fd;

	for (size_t i = 0; i < sizeof(masked) / sizeof(masked[0]); i++) {
		if ((fd = openat2_in(root, masked[i], O_PATH | O_NOFOLLOW)) < 0)
			continue; /* not in this kernel */
		if (bind_over(fd, "/dev/null") < 0)
			fail("cannot mask %s: %s", masked[i], strerror(errno));
		close(fd);
	}
	if ((fd = openat2_in(root, "/proc/sys", O_PATH | O_DIRECTORY)) < 0)
		fail("cannot open /proc/sys: %s", strerror(errno));
	snprintf(at, sizeof(at), "/proc/self/fd/%d", fd);
	if (mount(at, at, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail("cannot make /proc/sys read-only: %s", strerror(errno));
	close(fd);
	remount_in(root, "/proc/sys", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

static void make_dev(void)
{
	static const char *const links[][2] = { { "pts/ptmx", "ptmx" },
						{ "/proc/self/fd", "fd" },
						{ "/proc/self/fd/0", "stdin" },
						{ "/proc/self/fd/1", "stdout" },
						{ "/proc/self/fd/2", "stderr" } };
	int dev = open("/dev", O_PATH | O_DIRECTORY | O_CLOEXEC);
	int fd;

	if (dev < 0)
		fail("cannot open the container's /dev: %s", strerror(errno));
	umask(0);
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlinkat(links[i][0], dev, links[i][1]) < 0)
			fail("cannot make /dev/%s: %s", links[i][1], strerror(errno));
	/* The console is the terminal when there is one, else nothing. */
	if ((fd = openat(dev, "console", O_CREAT | O_WRONLY | O_CLOEXEC, 0600)) < 0)
		fail("cannot make /dev/console: %s", strerror(errno));
	close(fd);
	if (mkdirat(dev, "pts", 0755) < 0 || mkdirat(dev, "shm", 01777) < 0)
		fail("cannot make /dev/pts and /dev/shm: %s", strerror(errno));
	close(dev);
	umask(022);
	if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=0620") < 0)
		fail("cannot mount /dev/pts: %s", strerror(errno));
	if (mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
		fail("cannot mount /dev/shm: %s", strerror(errno));
	if (mount("/dev/null", "/dev/console", NULL, MS_BIND, NULL) < 0)
		fail("cannot make /dev/console: %s", strerror(errno));
}

/* Builds the container's tree and moves into it. */
static void setup_root(const struct ctr_config *c)
{
	int root;

	/* Nothing mounted here travels back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fail("cannot make the mounts private: %s", strerror(errno));
	if (mount(c->root, c->root, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail("cannot bind the root %s: %s", c->root, strerror(errno));
	if ((root = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		fail("cannot open the root %s: %s", c->root, strerror(errno));
	/* No device node of the root's own opens inside. */
	remount_in(root, "/", MS_NODEV);
	for (size_t i = 0; i < c->nmounts; i++)
		mount_in(root, c->mounts[i].target, c->mounts[i].source, NULL,
			 MS_BIND | MS_REC | MS_NODEV,
			 NULL);
	mount_in(root, "/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_in(root, "/sys", "sysfs", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		 NULL);
	mount_in(root, "/dev", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=755,size=1024k");
	make_dev_nodes(root);
	mask_proc(root);
	if (in_vm) {
		/* An initramfs cannot be pivoted away: moved over, as
		 * switch_root does. */
		if (fchdir(root) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
		    chdir("/") < 0)
			fail("cannot move into %s: %s", c->root, strerror(errno));
	} else {
		/* The old root is stacked under the new one and let go of. */
		if (fchdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
			fail("cannot pivot into %s: %s", c->root, strerror(errno));
		if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
			fail("cannot let go of the host's root: %s", strerror(errno));
	}
	close(root);
	make_dev();
	if (sethostname(c->hostname, strlen(c->hostname)) < 0)
		fail("cannot set the hostname: %s", strerror(errno));
}

static void setup_net(const struct ctr_config *c)
{
	struct nl *nl;
	int e;

	if ((e = nl_open(&nl)) < 0)
		fail("netlink: %s", strerror(-e));
	if (nl_link_set_up(nl, "lo", 1) < 0)
		fail("cannot bring up lo: %s", nl_error(nl));
	for (size_t i = 0; i < c->nnets; i++) {
		const struct ctr_net *x = &c->nets[i];
		if (nl_link_set_up(nl, x->name, 1) < 0)
			fail("cannot bring up %s: %s", x->name, nl_error(nl));
		if (*x->cidr && nl_addr_add(nl, x->name, x->cidr) < 0)
			fail("cannot give %s the address %s: %s", x->name, x->cidr, nl_error(nl));
		if (*x->gateway && nl_route_add(nl, "default", x->gateway, x->name) < 0)
			fail("cannot route through %s on %s: %s", x->gateway, x->name,
			     nl_error(nl));
	}
	nl_close(nl);
}

/* Joins the namespaces and the root of the container whose pid 1 is
 * pid (seen from here); the pid namespace takes the next child. */
static void join_namespaces(pid_t pid)
{
	static const struct {
		const char *name;
		int type;
	} ns[] = { { "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS }, { "net", CLONE_NEWNET },
		   { "pid", CLONE_NEWPID }, { "mnt", CLONE_NEWNS } };
	char path[64];
	int fds[5], root;

	/* Everything is opened before the first setns: /proc is the host's
	 * only until the mount namespace changes. */
	for (size_t i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, ns[i].name);
		if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			fail("the container is gone (%s: %s)", path, strerror(errno));
	}
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	if ((root = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		fail("the container is gone (%s: %s)", path, strerror(errno));
	for (size_t i = 0; i < 5; i++) {
		if (setns(fds[i], ns[i].type) < 0)
			fail("cannot join the container's %s namespace: %s", ns[i].name,
			     strerror(errno));
		close(fds[i]);
	}
	if (fchdir(root) < 0 || chroot(".") < 0 || chdir("/") < 0)
		fail("cannot enter the container's root: %s", strerror(errno));
	close(root);
}

/* The command's pid, seen from pid 1. */
static volatile pid_t command_pid;

/* --- in a VM: relays and the host's requests ------------------------- */

void ctr_relay(int a, int b)
{
	static char buf[65536];
	struct pollfd p[2] = { { a, POLLIN, 0 }, { b, POLLIN, 0 } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n;
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(p[i].fd, buf, sizeof(buf));
			if (n <= 0)
				_exit(0);
			for (ssize_t done = 0; done < n;) {
				ssize_t w = write(p[!i].fd, buf + done, (size_t)(n - done));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					_exit(0);
				done += w;
			}
		}
	}
}

pid_t ctr_relay_spawn(int a, int b)
{
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < 1024; i++)
			if (i != a && i != b && i > 2)
				close(i);
		ctr_relay(a, b);
	}
	return pid;
}

/* What the host asks of a VM's command, over the control port:
 * 'W' rows cols (two u16 each, little-endian): the terminal's size;
 * 'K' signal (one byte): a signal for the command. */
static void host_requests_spawn(int master)
{
	pid_t cmd = command_pid;
	uint8_t m[5];

	if (fork() != 0)
		return;
	for (;;) {
		if (read(CTR_FD_CTL, m, 1) != 1)
			_exit(0);
		if (m[0] == 'W' && read(CTR_FD_CTL, m + 1, 4) == 4) {
			struct winsize ws = { .ws_row = (unsigned short)(m[1] | m[2] << 8),
					      .ws_col = (unsigned short)(m[3] | m[4] << 8) };
			if (master >= 0)
				ioctl(master, TIOCSWINSZ, &ws);
		} else if (m[0] == 'K' && read(CTR_FD_CTL, m + 1, 1) == 1) {
			if (kill(-cmd, m[1]) < 0)
				kill(cmd, m[1]);
		}
	}
}

/* --- the command --------------------------------------------------- */


/* What reaches pid 1 is meant for the command (its process group). */
static void forward(int sig)
{
	pid_t p = command_pid;
	if (p > 0 && kill(-p, sig) < 0)
		kill(p, sig);
}

static int open_pty(const struct ctr_config *c, char slave[64])
{
	int m = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC), unlock = 0, n;
	struct winsize ws = { .ws_row = (unsigned short)c->rows, .ws_col = (unsigned short)c->cols };

	if (m < 0)
		fail("cannot open a terminal: %s", strerror(errno));
	if (ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCGPTN, &n) < 0)
		fail("cannot set up a terminal: %s", strerror(errno));
	if (c->rows && c->cols)
		ioctl(m, TIOCSWINSZ, &ws);
	snprintf(slave, 64, "/dev/pts/%d", n);
	return m;
}

/* What root in a container keeps (Docker's default set, less MKNOD):
 * nothing that administers the host (SYS_ADMIN, SYS_MODULE, SYS_RAWIO,
 * SYS_PTRACE, SYS_BOOT, SYS_TIME, NET_ADMIN, ...). */
static int cap_kept(int cap)
{
	static const int keep[] = { 0 /* CHOWN */,	  1 /* DAC_OVERRIDE */, 3 /* FOWNER */,
				    4 /* FSETID */,	  5 /* KILL */,		6 /* SETGID */,
				    7 /* SETUID */,	  8 /* SETPCAP */,	10 /* NET_BIND_SERVICE */,
				    13 /* NET_RAW */,	  18 /* SYS_CHROOT */,	29 /* AUDIT_WRITE */,
				    31 /* SETFCAP */ };
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		if (keep[i] == cap)
			return 1;
	return 0;
}

static int drop_privileges(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];

	for (int cap = 0; cap < 64; cap++)
		if (!cap_kept(cap) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -1;
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (syscall(SYS_capget, &h, d) < 0)
		return -1;
	d[0].inheritable = d[1].inheritable = 0;
	if (syscall(SYS_capset, &h, d) < 0)
		return -1;
	/* No setuid or file capability gives any of it back. */
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

static void __attribute__((noreturn)) exec_command(const struct ctr_config *c,
						   const char *slave, int errfd)
{
	int e;

	setsid();
	if (slave) {
		int t = open(slave, O_RDWR);
		if (t < 0 || ioctl(t, TIOCSCTTY, 0) < 0)
			goto out;
		dup2(t, 0);
		dup2(t, 1);
		dup2(t, 2);
		if (t > 2)
			close(t);
	} else {
		for (int i = 0; i < 3; i++)
			if (dup2(CTR_FD_STDIO + i, i) < 0)
				goto out;
	}
	/* Nothing of the helper's, the daemon's or the VM agent's goes
	 * past exec (errfd is close-on-exec already). */
	close(CTR_FD_CTL);
	for (int i = CTR_FD_STDIO; i < CTR_FD_STDIO + 3; i++)
		close(i);
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		goto out;
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	/* The command dies with pid 1 (or with the process that joined it
	 * into a container). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (drop_privileges() < 0)
		goto out;
	if (setgroups(0, NULL) < 0 || setresgid(c->gid, c->gid, c->gid) < 0 ||
	    setresuid(c->uid, c->uid, c->uid) < 0)
		goto out;
	clearenv();
	putenv(DEFAULT_PATH);
	putenv("HOME=/");
	for (size_t i = 0; i < c->nenv; i++)
		putenv(c->env[i]);
	if (!slave)
		unsetenv("TERM");
	execvp(c->args[0], c->args);
out:
	e = errno;
	(void)!write(errfd, &e, sizeof(e));
	_exit(127);
}

/* Starts the command; says why not and ends here when it cannot. */
static pid_t start_command(const struct ctr_config *c, const char *slave)
{
	int p[2], e = 0;
	pid_t pid;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) < 0)
		fail("pipe: %s", strerror(errno));
	if ((pid = fork()) < 0)
		fail("cannot fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		exec_command(c, slave, p[1]);
	}
	close(p[1]);
	/* Nothing to read: exec succeeded and closed its end. */
	while ((n = read(p[0], &e, sizeof(e))) < 0 && errno == EINTR)
		;
	close(p[0]);
	if (n == sizeof(e)) {
		waitpid(pid, NULL, 0);
		fail("cannot run %s: %s", c->args[0], strerror(e));
	}
	return pid;
}

/* The container's pid 1 (or the process joining it): runs the command
 * and reaps whatever ends, until the command does. */
void ctr_inner(const struct ctr_config *c)
{
	static const int fwd[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
				   SIGWINCH, SIGCONT };
	struct sigaction sa = { .sa_handler = forward, .sa_flags = SA_RESTART };
	char slave[64];
	int st;
	pid_t w;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Not to be ptraced or looked into (/proc/1/fd) from inside. */
	prctl(PR_SET_DUMPABLE, 0);
	/* One joining a container did that before it was forked. */
	if (!c->join) {
		setup_root(c);
		setup_net(c);
	}
	int m = -1;
	if (c->pty) {
		m = open_pty(c, slave);
		if (!c->join && mount(slave, "/dev/console", NULL, MS_BIND, NULL) < 0)
			fail("cannot make the terminal the console: %s", strerror(errno));
		if (!in_vm) {
			say_fd('P', m);
			close(m);
			m = -1;
		} else {
			/* The host's end of the terminal is a port: copied
			 * to and from the pty's master here. */
			ctr_relay_spawn(CTR_FD_STDIO, m);
		}
	}
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
		sigaction(fwd[i], &sa, NULL);
	command_pid = start_command(c, c->pty ? slave : NULL);
	if (in_vm)
		host_requests_spawn(m);
	if (m >= 0)
		close(m);
	/* Only the command holds the container's stdio now. */
	for (int i = CTR_FD_STDIO; i < CTR_FD_STDIO + 3; i++)
		close(i);
	say('R', "%d", (int)command_pid);
	for (;;) {
		w = waitpid(-1, &st, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			ctr_end(0); /* cannot happen: the command is a child */
		if (w != command_pid)
			continue;
		if (WIFSIGNALED(st))
			say('S', "%d", WTERMSIG(st));
		else
			say('X', "%d", WEXITSTATUS(st));
		/* pid 1 going ends every process left in the container (in
		 * a VM, the machine). */
		ctr_end(0);
	}
}

/* --- the helper ---------------------------------------------------- */

static int wait_go(void)
{
	char k;
	ssize_t n;
	while ((n = read(CTR_FD_CTL, &k, 1)) < 0 && errno == EINTR)
		;
	return n == 1 && k == 'G' ? 0 : -1;
}

int ctr_helper_main(pid_t daemon)
{
	static uint8_t m[CTR_MAX_MSG];
	struct ctr_config c;
	ssize_t n;
	pid_t pid, w;
	int st;

	/* Gone with the daemon: no container outlives its supervisor (if
	 * the daemon went before this took effect, it is not the parent). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != daemon)
		_exit(1);
	/* The control socket and the container's stdio are all this
	 * process and the container get of the daemon. */
	close_range(CTR_FD_STDIO + 3, ~0U, 0);
	int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0 || dup2(nul, 2) < 0)
		_exit(1);
	close(nul);
	/* One message: its length, then the configuration. */
	while ((n = recv(CTR_FD_CTL, m, sizeof(m), 0)) < 0 && errno == EINTR)
		;
	if (n < 4 || (uint32_t)(n - 4) != ((uint32_t)m[0] | (uint32_t)m[1] << 8 |
					   (uint32_t)m[2] << 16 | (uint32_t)m[3] << 24) ||
	    ctr_config_decode(m + 4, (size_t)n - 4, &c) < 0) {
		say('E', "the container's configuration is malformed");
		_exit(1);
	}
	if (c.join)
		join_namespaces(c.join);
	else if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID) < 0)
		fail("cannot make namespaces: %s", strerror(errno));
	say('N', "%d", (int)getpid());
	if (wait_go() < 0)
		_exit(1); /* the daemon gave up: it said why */
	if ((pid = fork()) < 0)
		fail("cannot fork: %s", strerror(errno));
	if (pid == 0)
		ctr_inner(&c);
	for (int i = CTR_FD_STDIO; i < CTR_FD_STDIO + 3; i++)
		close(i);
	say('I', "%d", (int)pid);
	while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	/* pid 1 killed (by kill(SIGKILL) or the OOM killer) says nothing
	 * itself. */
	if (w == pid && WIFSIGNALED(st))
		say('S', "%d", WTERMSIG(st));
	ctr_config_free(&c);
	/* _exit: a sanitizer's leak check at exit cannot stop the world
	 * from inside other pid namespaces. */
	_exit(0);
}
