/*
 * The guest agent of computevm: this very binary as /init of a VM's
 * initramfs, and what builds that initramfs.
 *
 * The VM (svc/vm.c) has virtio-serial ports: metac.ctl (the container
 * helper's control protocol, svc/container.h, as a byte stream),
 * metac.0/1/2 (stdin, stdout, stderr) or metac.tty (the terminal), and
 * metac.9p.N for each folder: 9P2000.L sessions that the host pipes to
 * the Filesystems. Debian's cloud kernel has no 9p client, so the agent
 * mounts them with metac's own FUSE bridge (fs9p/fuse.c) over a socket
 * pair relayed to the port. Then it is the container's pid 1, as the
 * container helper's is (svc/container.c, ctr_inner): the root, /proc,
 * /sys, /dev, the interfaces, the command; and when the command ends, it
 * powers the VM off.
 */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs9p/fuse.h"
#include "lib/buf.h"
#include "lib/cpio.h"
#include "svc/agent.h"
#include "svc/container.h"

#define MODULE_LIST "lib/metac/modules"
#define PORT_WAIT_MS 60000

/* --- in the guest -------------------------------------------------- */

/* Says why on the console and, once there is one, to the host. */
static void __attribute__((noreturn, format(printf, 1, 2))) agent_fail(const char *fmt, ...)
{
	char m[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	fprintf(stderr, "metac agent: %s\n", m);
	dprintf(CTR_FD_CTL, "E%s\n", m);
	ctr_end(1);
}

static void load_modules(void)
{
	FILE *f = fopen("/" MODULE_LIST, "re");
	char line[512];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		int fd;
		line[strcspn(line, "\n")] = 0;
		if (!*line || (fd = open(line, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
			fprintf(stderr, "metac agent: cannot load %s: %s\n", line, strerror(errno));
		close(fd);
	}
	fclose(f);
}

/* The device of the virtio port called name (/dev/vportNpM), or -1. */
static int find_port(const char *name, char dev[64])
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	char path[300], got[64];
	int found = -1;

	if (!d)
		return -1;
	while (found < 0 && (e = readdir(d))) {
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		if (fgets(got, sizeof(got), f)) {
			got[strcspn(got, "\n")] = 0;
			if (!strcmp(got, name)) {
				snprintf(dev, 64, "/dev/%.50s", e->d_name);
				found = 0;
			}
		}
		fclose(f);
	}
	closedir(d);
	return found;
}

static int open_port(const char *name, int wait_ms)
{
	char dev[64];
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	for (int waited = 0;; waited += 50) {
		int fd;
		if (find_port(name, dev) == 0 && (fd = open(dev, O_RDWR | O_CLOEXEC)) >= 0)
			return fd;
		if (waited >= wait_ms)
			return -1;
		nanosleep(&ts, NULL);
	}
}

static int read_exact(int fd, void *p, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t r = read(fd, (char *)p + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* As read_exact on a port: until the host's side is connected, a read
 * finds nothing (0); that is waited out, up to wait_ms in all. */
static int read_port(int fd, void *p, size_t n, int wait_ms)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	int waited = 0;

	for (size_t done = 0; done < n;) {
		ssize_t r = read(fd, (char *)p + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			if ((waited += 20) > wait_ms)
				return -1;
			nanosleep(&ts, NULL);
			continue;
		}
		done += (size_t)r;
	}
	return 0;
}

static void mounted(void *arg, int err, const char *why)
{
	int fd = *(int *)arg;
	(void)!write(fd, &err, sizeof(err));
	(void)why;
}

/* Mounts the 9p session of port name on dir: the FUSE bridge in a
 * child, on a socket pair another child relays to the port. */
static void mount_port(const char *name, const char *dir)
{
	int port = open_port(name, 0), sv[2], pp[2], err = -EIO;
	pid_t pid;

	if (port < 0)
		agent_fail("no port %s", name);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		agent_fail("cannot make %s: %s", dir, strerror(errno));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(pp, O_CLOEXEC) < 0)
		agent_fail("socketpair: %s", strerror(errno));
	if (ctr_relay_spawn(port, sv[0]) < 0)
		agent_fail("fork: %s", strerror(errno));
	close(port);
	close(sv[0]);
	if ((pid = fork()) < 0)
		agent_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		struct p9fuse_config cfg = { .mountpoint = dir, .fsname = "metac", .ordered = 1,
					     .mounted = mounted, .hangup_fd = -1, .arg = &pp[1] };
		close(pp[0]);
		_exit(p9fuse_run(sv[1], &cfg) < 0 ? 1 : 0);
	}
	close(sv[1]);
	close(pp[1]);
	if (read_exact(pp[0], &err, sizeof(err)) < 0 || err)
		agent_fail("cannot mount the folder of %s on %s: %s", name, dir,
			   strerror(err < 0 ? -err : EIO));
	close(pp[0]);
}

/* "port:NAME" sources become the directories they are mounted on. */
static void mount_ports(struct ctr_config *c)
{
	char dir[64];
	int k = 0;

	if (mkdir("/mnt", 0755) < 0 && errno != EEXIST)
		agent_fail("cannot make /mnt: %s", strerror(errno));
	if (!strncmp(c->root, "port:", 5)) {
		snprintf(dir, sizeof(dir), "/mnt/%d", k++);
		mount_port(c->root + 5, dir);
		snprintf(c->root, sizeof(c->root), "%s", dir);
	}
	for (size_t i = 0; i < c->nmounts; i++) {
		if (strncmp(c->mounts[i].source, "port:", 5))
			continue;
		snprintf(dir, sizeof(dir), "/mnt/%d", k++);
		mount_port(c->mounts[i].source + 5, dir);
		snprintf(c->mounts[i].source, sizeof(c->mounts[i].source), "%s", dir);
	}
}

/* fd, moved to target (it may be there already). */
static int move_fd(int fd, int target)
{
	if (fd == target)
		return 0;
	if (dup2(fd, target) < 0)
		return -1;
	close(fd);
	return 0;
}

int agent_main(void)
{
	static uint8_t m[CTR_MAX_MSG];
	struct ctr_config c;
	uint8_t len[4], go;
	uint32_t n;
	int fd;

	ctr_set_vm();
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount("dev", "/dev", "devtmpfs", MS_NOSUID, NULL);
	if ((fd = open("/dev/console", O_RDWR)) >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	load_modules();
	if ((fd = open_port("metac.ctl", PORT_WAIT_MS)) < 0)
		agent_fail("no control port (metac.ctl): is this a computevm VM?");
	if (move_fd(fd, CTR_FD_CTL) < 0)
		agent_fail("dup2: %s", strerror(errno));
	if (read_port(CTR_FD_CTL, len, 4, PORT_WAIT_MS) < 0)
		agent_fail("the host sent no configuration: %s", strerror(errno));
	n = (uint32_t)len[0] | (uint32_t)len[1] << 8 | (uint32_t)len[2] << 16 | (uint32_t)len[3] << 24;
	if (n > sizeof(m) || read_port(CTR_FD_CTL, m, n, PORT_WAIT_MS) < 0 ||
	    ctr_config_decode(m, n, &c) < 0)
		agent_fail("the host's configuration is malformed");
	/* The terminal, or stdin, stdout and stderr. */
	for (int i = 0; i < (c.pty ? 1 : 3); i++) {
		char name[16];
		snprintf(name, sizeof(name), c.pty ? "metac.tty" : "metac.%d", i);
		if ((fd = open_port(name, 0)) < 0 || move_fd(fd, CTR_FD_STDIO + i) < 0)
			agent_fail("no port %s", name);
	}
	if (read_port(CTR_FD_CTL, &go, 1, PORT_WAIT_MS) < 0 || go != 'G')
		agent_fail("the host did not say go");
	mount_ports(&c);
	ctr_inner(&c);
}

/* --- building the initramfs ---------------------------------------- */

int agent_kernel(char *kver, size_t n)
{
	const char *env = getenv("METAC_VM_KERNEL");
	DIR *d;
	struct dirent *e;
	char best[256] = "";

	if (env && *env) {
		snprintf(kver, n, "%s", env);
		return 0;
	}
	if (!(d = opendir("/boot")))
		return -ENOENT;
	/* The newest cloud kernel: versions compare as strings well enough
	 * within one Debian release's series. */
	while ((e = readdir(d))) {
		const char *v = e->d_name + 8;
		size_t l = strlen(e->d_name);
		if (strncmp(e->d_name, "vmlinuz-", 8) || l < 14 ||
		    strcmp(e->d_name + l - 6, "-amd64") || !strstr(v, "cloud"))
			continue;
		if (strverscmp(v, best) > 0)
			snprintf(best, sizeof(best), "%s", v);
	}
	closedir(d);
	if (!*best)
		return -ENOENT;
	snprintf(kver, n, "%s", best);
	return 0;
}

static int read_file(const char *path, struct buf *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	int e = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || buf_reserve(out, (size_t)st.st_size) < 0) {
		e = -ENOMEM;
	} else if (read_exact(fd, buf_extend(out, (size_t)st.st_size), (size_t)st.st_size) < 0) {
		e = -EIO;
	}
	close(fd);
	return e;
}

/* Adds module name (and first what it depends on, from modules.dep) to
 * the archive and to the load list. */
static int add_module(struct buf *b, struct buf *list, const char *kver, const char *name,
		      char *seen, size_t seensz, int depth, char *err, size_t errsz)
{
	char path[512], line[4096], mod[128], *colon, *dep, *save;
	FILE *f;
	int e = 0;

	snprintf(mod, sizeof(mod), " %s ", name);
	if (strstr(seen, mod))
		return 0;
	if (depth > 16 || strlen(seen) + strlen(mod) >= seensz)
		return -ELOOP;
	strcat(seen, mod);
	snprintf(path, sizeof(path), "/lib/modules/%s/modules.dep", kver);
	if (!(f = fopen(path, "re"))) {
		snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		char *base;
		if (!(colon = strchr(line, ':')))
			continue;
		*colon = 0;
		base = strrchr(line, '/');
		base = base ? base + 1 : line;
		if (strncmp(base, name, strlen(name)) || strcmp(base + strlen(name), ".ko"))
			continue;
		fclose(f);
		f = NULL;
		for (dep = strtok_r(colon + 1, " \n", &save); dep; dep = strtok_r(NULL, " \n", &save)) {
			char dname[128], *dbase = strrchr(dep, '/');
			snprintf(dname, sizeof(dname), "%s", dbase ? dbase + 1 : dep);
			dname[strcspn(dname, ".")] = 0;
			if ((e = add_module(b, list, kver, dname, seen, seensz, depth + 1, err,
					    errsz)) < 0)
				return e;
		}
		{
			struct buf data;
			char full[4400], in[200];
			snprintf(full, sizeof(full), "/lib/modules/%.200s/%s", kver, line);
			snprintf(in, sizeof(in), "lib/metac/%.100s.ko", name);
			buf_init(&data);
			if ((e = read_file(full, &data)) < 0) {
				snprintf(err, errsz, "cannot read %s: %s", full, strerror(-e));
			} else if (cpio_add_file(b, in, 0644, buf_head(&data), buf_avail(&data)) < 0 ||
				   buf_put(list, "/", 1) < 0 || buf_put(list, in, strlen(in)) < 0 ||
				   buf_put(list, "\n", 1) < 0) {
				e = -ENOMEM;
				snprintf(err, errsz, "out of memory");
			}
			buf_free(&data);
			return e;
		}
	}
	if (f)
		fclose(f);
	/* Not a module: built into this kernel. */
	return 0;
}

const char *agent_binary(void)
{
	const char *e = getenv("METAC_AGENT");
	return e && *e ? e : "/proc/self/exe";
}

/* Whether an ELF image asks for no program interpreter (static). */
static int elf_static(const uint8_t *p, size_t n)
{
	const Elf64_Ehdr *h = (const Elf64_Ehdr *)p;

	if (n < sizeof(*h) || memcmp(h->e_ident, ELFMAG, SELFMAG) || h->e_ident[EI_CLASS] != ELFCLASS64 ||
	    h->e_phentsize != sizeof(Elf64_Phdr) || h->e_phoff > n ||
	    (n - h->e_phoff) / sizeof(Elf64_Phdr) < h->e_phnum)
		return 0;
	for (unsigned i = 0; i < h->e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, p + h->e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_INTERP)
			return 0;
	}
	return 1;
}

int agent_initrd_build(const char *kver, const char *out, char *err, size_t errsz)
{
	static const char *const modules[] = { "virtio_pci", "virtio_console", "virtio_net",
					       "virtio_blk", "fuse" };
	static const char *const dirs[] = { "dev", "proc", "sys", "mnt", "lib", "lib/metac" };
	struct buf b, list, self;
	char seen[4096] = " ", tmp[4200];
	int e = 0, fd = -1;

	buf_init(&b);
	buf_init(&list);
	buf_init(&self);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (cpio_add_dir(&b, dirs[i], 0755) < 0)
			goto nomem;
	if ((e = read_file(agent_binary(), &self)) < 0) {
		snprintf(err, errsz, "cannot read %s: %s", agent_binary(), strerror(-e));
		goto out;
	}
	if (!elf_static(buf_head(&self), buf_avail(&self))) {
		e = -ENOEXEC;
		snprintf(err, errsz, "%s is not a static binary, and an initramfs has no libraries "
			 "for it: set METAC_AGENT to a static metac (make's default build)",
			 agent_binary());
		goto out;
	}
	if (cpio_add_file(&b, "init", 0755, buf_head(&self), buf_avail(&self)) < 0)
		goto nomem;
	for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
		if ((e = add_module(&b, &list, kver, modules[i], seen, sizeof(seen), 0, err,
				    errsz)) < 0)
			goto out;
	if (cpio_add_file(&b, MODULE_LIST, 0644, buf_head(&list), buf_avail(&list)) < 0 ||
	    cpio_end(&b) < 0)
		goto nomem;
	/* Whole or not at all: written aside, then renamed. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0 ||
	    write(fd, buf_head(&b), buf_avail(&b)) != (ssize_t)buf_avail(&b) || fsync(fd) < 0 ||
	    close(fd) < 0 || rename(tmp, out) < 0) {
		e = -errno;
		snprintf(err, errsz, "cannot write %s: %s", out, strerror(errno));
		if (fd >= 0)
			unlink(tmp);
	}
	goto out;
nomem:
	e = -ENOMEM;
	snprintf(err, errsz, "out of memory");
out:
	buf_free(&b);
	buf_free(&list);
	buf_free(&self);
	return e;
}
