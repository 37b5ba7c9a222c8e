/*
 * libFuzzer target: the 9P2000.L server of fs9p/server.c and the message
 * coding of fs9p/p9.c, through the thread-free session of server.h.
 *
 * The input is flags[1] and then messages, each len[2] type[1] tag[2]
 * and len bytes of body (len cut to what is left); the harness writes
 * each message's size field. Flags: bit 0 a read-only export, bit 1
 * --map=passthrough. A session starts with Tversion(msize 65536,
 * "9P2000.L") and ends at the first message on which a real session
 * would close.
 *
 * The export is a small tree in a private directory B (on /dev/shm when
 * there is one): B/export holds files, a directory, symlinks inside and
 * out, and a FIFO (listed, never to be opened); B/outside/secret is what
 * must stay out of reach. The tree is made afresh after every input that
 * could have changed it, so that each input runs on the same files and
 * the export never grows.
 *
 * Checked for every message: one well-formed reply (size, tag, type,
 * sizes of Rread, Rreaddir and Rwalk against the request), or none when
 * the session would close; no qid (Rwalk, Rattach, Rgetattr, Rreaddir
 * ...) is ever of B or what lies in B/outside; after a Tversion agreed on
 * 9P2000.L the session never forgets it; B/outside never changes; no
 * descriptor outlives its session.
 *
 * FUZZ_P9_TRACE=1 in the environment prints each request and its reply,
 * to read what a crashing input does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs9p/p9.h"
#include "fs9p/server.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "tests/fuzz/check.h"

#define MSIZE 65536
#define FLAG_READ_ONLY 1
#define FLAG_PASSTHROUGH 2

static char base[64];  /* B */
static char exdir[96]; /* B/export */
static struct p9_export ex = {.rootfd = -1};
static int fresh; /* the export has not been touched since made */
/* Qid paths that must never come back: B, B/outside, B/outside/secret,
 * as walks give them (inode ^ device << 48) and as readdir does (inode). */
static uint64_t forbidden[2][3];
static struct stat outside_st[2];
static int trace;

/* --- the export ----------------------------------------------------- */

static void must(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_p9: %s: %s\n", what, strerror(errno));
		abort();
	}
}

static void write_file(int dirfd, const char *name, const char *data, size_t n, mode_t mode)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	must(fd >= 0, name);
	must(write(fd, data, n) == (ssize_t)n, name);
	close(fd);
}

/* Removes name beneath dirfd, whatever modes a client left on it. */
static void rm_tree(int dirfd, const char *name)
{
	struct dirent *d;
	DIR *dir;
	int fd;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return;
	fchmodat(dirfd, name, 0700, 0);
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	must(fd >= 0, name);
	must((dir = fdopendir(fd)) != NULL, name);
	while ((d = readdir(dir)))
		if (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))
			rm_tree(fd, d->d_name);
	closedir(dir);
	must(unlinkat(dirfd, name, AT_REMOVEDIR) == 0, name);
}

/* Nothing but export/ in B and secret in B/outside, all as they were. */
static void check_outside(int full)
{
	char path[128];
	struct stat st;

	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), i ? "%s/outside/secret" : "%s/outside", base);
		must(lstat(path, &st) == 0, path);
		CHECK(st.st_ino == outside_st[i].st_ino && st.st_mode == outside_st[i].st_mode &&
		      st.st_size == outside_st[i].st_size &&
		      st.st_nlink == outside_st[i].st_nlink && st.st_uid == outside_st[i].st_uid &&
		      st.st_gid == outside_st[i].st_gid &&
		      st.st_mtim.tv_sec == outside_st[i].st_mtim.tv_sec &&
		      st.st_mtim.tv_nsec == outside_st[i].st_mtim.tv_nsec &&
		      st.st_ctim.tv_sec == outside_st[i].st_ctim.tv_sec &&
		      st.st_ctim.tv_nsec == outside_st[i].st_ctim.tv_nsec);
	}
	if (!full)
		return;
	DIR *dir = opendir(base);
	struct dirent *d;
	must(dir != NULL, base);
	while ((d = readdir(dir)))
		CHECK(!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..") ||
		      !strcmp(d->d_name, "export") || !strcmp(d->d_name, "outside"));
	closedir(dir);
}

static void make_export(void)
{
	static const char hello[] = "hello, 9p\n";
	char b[1000];
	int root, sub;

	if (ex.rootfd >= 0) {
		check_outside(1);
		close(ex.rootfd);
		rm_tree(AT_FDCWD, exdir);
	}
	must(mkdir(exdir, 0755) == 0, exdir);
	chmod(exdir, 0755); /* whatever the umask */
	must((root = open(exdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0, exdir);
	write_file(root, "a", hello, sizeof(hello) - 1, 0644);
	write_file(root, "empty", "", 0, 0600);
	must(mkdirat(root, "sub", 0755) == 0, "sub");
	must((sub = openat(root, "sub", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0, "sub");
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (char)('a' + i % 26);
	write_file(sub, "b", b, sizeof(b), 0644);
	must(mkdirat(sub, "deeper", 0700) == 0, "sub/deeper");
	close(sub);
	must(symlinkat("a", root, "link") == 0, "link");
	must(symlinkat("/etc/passwd", root, "abs") == 0, "abs");
	must(symlinkat("../outside/secret", root, "up") == 0, "up");
	must(symlinkat("..", root, "dotdot") == 0, "dotdot");
	must(mkfifoat(root, "fifo", 0644) == 0, "fifo");
	close(root);
	must((ex.rootfd = p9_export_open(exdir)) >= 0, exdir);
	fresh = 1;
}

/* --- replies -------------------------------------------------------- */

static void check_qid(const uint8_t *q, int from_readdir)
{
	uint64_t path = get_le64(q + 5);
	for (int i = 0; i < 3; i++)
		CHECK(path != forbidden[from_readdir][i]);
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Rreaddir data: whole entries with sane names, nothing from outside. */
static void check_dirents(const uint8_t *p, size_t n)
{
	while (n) {
		CHECK(n >= 24);
		size_t nl = le16(p + 22);
		CHECK(nl >= 1 && nl <= 255 && 24 + nl <= n);
		const char *name = (const char *)p + 24;
		CHECK(!memchr(name, '/', nl) && !memchr(name, '\0', nl));
		if (!(nl == 1 && name[0] == '.') && !(nl == 2 && name[0] == '.' && name[1] == '.'))
			check_qid(p, 1);
		p += 24 + nl;
		n -= 24 + nl;
	}
}

/* What the session agreed on: its msize, and whether the last Tversion
 * was answered with 9P2000.L (not "unknown", which leaves the msize). */
struct agreed {
	uint32_t msize;
	int version;
};

/*
 * The one reply r (n bytes) to request q (qn bytes). Request fields are
 * read only where the server must have parsed them to answer so.
 */
static void check_reply(const uint8_t *q, size_t qn, const uint8_t *r, size_t n, struct agreed *a)
{
	uint8_t t = q[4], rt;
	uint32_t count, msize = a->msize;

	CHECK(n >= P9_HDR && get_le32(r) == n);
	CHECK(le16(r + 5) == le16(q + 5));
	rt = r[4];
	if (rt == P9_RLERROR) {
		CHECK(t != P9_TVERSION && t != P9_TFLUSH);
		CHECK(n == 11 && get_le32(r + 7) > 0 && get_le32(r + 7) < 4096);
		return;
	}
	CHECK(rt == t + 1);
	if (t != P9_TVERSION)
		CHECK(n <= msize);
	switch (rt) {
	case P9_RVERSION:
		CHECK(n >= 13 && n == 13u + le16(r + 11));
		if (n == 21 && !memcmp(r + 13, P9_VERSION, 8)) {
			a->msize = get_le32(r + 7);
			a->version = 1;
			CHECK(a->msize >= P9_MIN_MSIZE && a->msize <= P9_MAX_MSIZE);
		} else {
			CHECK(n == 20 && !memcmp(r + 13, "unknown", 7));
			CHECK(get_le32(r + 7) == msize);
			a->version = 0;
		}
		break;
	case P9_RATTACH:
		CHECK(n == 20 && r[7] == P9_QTDIR);
		check_qid(r + 7, 0);
		break;
	case P9_RWALK: {
		uint16_t nw = le16(r + 7), asked = le16(q + 15);
		CHECK(n == 9u + 13u * nw && nw <= asked && nw <= P9_MAXWELEM);
		CHECK(nw > 0 || asked == 0);
		for (unsigned i = 0; i < nw; i++)
			check_qid(r + 9 + 13 * i, 0);
		break;
	}
	case P9_RLOPEN:
	case P9_RLCREATE:
		CHECK(n == 24 && get_le32(r + 20) == msize - P9_IOHDR);
		CHECK(r[7] == P9_QTDIR || r[7] == P9_QTFILE);
		check_qid(r + 7, 0);
		break;
	case P9_RREAD:
	case P9_RREADDIR:
		CHECK(qn >= P9_HDR + 16);
		count = get_le32(r + 7);
		CHECK(n == 11 + (size_t)count && count <= get_le32(q + 19) &&
		      count <= msize - P9_IOHDR);
		if (rt == P9_RREADDIR)
			check_dirents(r + 11, count);
		break;
	case P9_RWRITE:
		CHECK(n == 11 && get_le32(r + 7) <= get_le32(q + 19));
		break;
	case P9_RGETATTR:
		CHECK(n == 160 && get_le64(r + 7) == P9_GETATTR_BASIC);
		check_qid(r + 15, 0);
		break;
	case P9_RMKDIR:
	case P9_RSYMLINK:
	case P9_RMKNOD:
		CHECK(n == 20);
		check_qid(r + 7, 0);
		break;
	case P9_RREADLINK:
		CHECK(n >= 9 && n == 9u + le16(r + 7) && le16(r + 7) > 0);
		break;
	case P9_RSTATFS:
		CHECK(n == 67);
		break;
	case P9_RXATTRWALK:
		CHECK(n == 15 && get_le64(r + 7) <= P9_SRV_MAX_XATTR);
		break;
	case P9_RLOCK:
		CHECK(n == 8 && r[7] <= P9_LOCK_GRACE);
		break;
	case P9_RGETLOCK:
		CHECK(n >= 30 && n == 30u + le16(r + 28) && r[7] <= P9_LOCK_TYPE_UNLCK);
		break;
	case P9_RCLUNK:
	case P9_RREMOVE:
	case P9_RSETATTR:
	case P9_RFLUSH:
	case P9_RRENAME:
	case P9_RRENAMEAT:
	case P9_RUNLINKAT:
	case P9_RLINK:
	case P9_RFSYNC:
	case P9_RXATTRCREATE:
		CHECK(n == P9_HDR);
		break;
	default:
		CHECK(!"a reply to a request the server does not serve");
	}
}

/* Whether a request may have changed the export. */
static int mutates(uint8_t type, const uint8_t *body, size_t len)
{
	switch (type) {
	case P9_TVERSION:
	case P9_TATTACH:
	case P9_TWALK:
	case P9_TREAD:
	case P9_TREADDIR:
	case P9_TGETATTR:
	case P9_TCLUNK:
	case P9_TSTATFS:
	case P9_TXATTRWALK:
	case P9_TREADLINK:
	case P9_TFLUSH:
	case P9_TAUTH:
	case P9_TLOCK:
	case P9_TGETLOCK:
	case P9_TFSYNC:
		return 0;
	case P9_TLOPEN:
		/* Read-only opens change nothing; others may truncate. */
		return len < 8 || (get_le32(body + 4) & (3 | P9_DOTL_TRUNC)) != 0;
	default:
		return 1;
	}
}

/* --- a session ------------------------------------------------------ */

static void trace_msg(const char *dir, const uint8_t *m, size_t n)
{
	if (!trace)
		return;
	fprintf(stderr, "%s %s tag %u, %zu bytes", dir, p9_type_name(m[4]), le16(m + 5), n);
	if (m[4] == P9_RLERROR && n >= 11)
		fprintf(stderr, ": %s", strerror((int)get_le32(m + 7)));
	fprintf(stderr, "\n");
}

static void put_version(uint8_t *m, uint32_t msize)
{
	put_le32(m, 21);
	m[4] = P9_TVERSION;
	m[5] = m[6] = 0xff;
	put_le32(m + 7, msize);
	m[11] = 8;
	m[12] = 0;
	memcpy(m + 13, P9_VERSION, 8);
}

/* Lowest free descriptor: a leak moves it up. */
static int free_fd(void)
{
	int fd = fcntl(ex.rootfd, F_DUPFD_CLOEXEC, 0);
	must(fd >= 0, "dup");
	close(fd);
	return fd;
}

static void fuzz_session(const uint8_t *data, size_t size)
{
	struct p9_session *s;
	struct buf out;
	uint8_t v[21];
	struct agreed a = {0};
	size_t off = 1;
	int fd0, e;

	ex.read_only = data[0] & FLAG_READ_ONLY;
	ex.map = data[0] & FLAG_PASSTHROUGH ? P9_MAP_PASSTHROUGH : P9_MAP_MOUNTER;
	fd0 = free_fd();
	buf_init(&out);
	CHECK((s = p9_session_new(&ex)) != NULL);
	put_version(v, MSIZE);
	CHECK(p9_session_feed(s, v, sizeof(v), &out) == 0);
	a.msize = MSIZE;
	check_reply(v, sizeof(v), buf_head(&out), buf_avail(&out), &a);
	CHECK(a.version && a.msize == MSIZE);

	while (size - off >= 5) {
		size_t len = le16(data + off);
		uint8_t type = data[off + 2];
		off += 5;
		if (len > size - off)
			len = size - off;
		if (fresh && mutates(type, data + off, len))
			fresh = 0;
		/* A copy of its exact size: ASan sees reads past the message. */
		uint8_t *m = malloc(P9_HDR + len);
		CHECK(m != NULL);
		put_le32(m, (uint32_t)(P9_HDR + len));
		memcpy(m + 4, data + off - 3, 3);
		memcpy(m + P9_HDR, data + off, len);
		off += len;

		buf_reset(&out);
		trace_msg("->", m, P9_HDR + len);
		e = p9_session_feed(s, m, P9_HDR + len, &out);
		if (buf_avail(&out) >= P9_HDR)
			trace_msg("<-", buf_head(&out), buf_avail(&out));
		if (e < 0) {
			if (trace)
				fprintf(stderr, "   the session closes: %s\n", strerror(-e));
			/* A real session closes here, saying nothing more; not
			 * for a session that agreed on a version, though. */
			CHECK(buf_avail(&out) == 0);
			CHECK(e != -EPROTO || !a.version);
			free(m);
			break;
		}
		check_reply(m, P9_HDR + len, buf_head(&out), buf_avail(&out), &a);
		free(m);
	}
	p9_session_free(s);
	buf_free(&out);
	CHECK(free_fd() == fd0);
	check_outside(0);
}

static void remove_base(void)
{
	if (ex.rootfd >= 0)
		close(ex.rootfd);
	rm_tree(AT_FDCWD, base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	char path[128];
	struct stat st;

	log_set_level(LOG_LVL_ERROR);
	trace = getenv("FUZZ_P9_TRACE") != NULL;
	snprintf(base, sizeof(base), "%s/fuzz_p9.XXXXXX", tmp);
	must(mkdtemp(base) != NULL, base);
	snprintf(exdir, sizeof(exdir), "%s/export", base);
	snprintf(path, sizeof(path), "%s/outside", base);
	must(mkdir(path, 0755) == 0, path);
	snprintf(path, sizeof(path), "%s/outside/secret", base);
	write_file(AT_FDCWD, path, "secret\n", 7, 0644);
	for (int i = 0; i < 3; i++) {
		static const char *const sub[] = {"", "/outside", "/outside/secret"};
		snprintf(path, sizeof(path), "%s%s", base, sub[i]);
		must(lstat(path, &st) == 0, path);
		forbidden[0][i] = (uint64_t)st.st_ino ^ ((uint64_t)st.st_dev << 48);
		forbidden[1][i] = (uint64_t)st.st_ino;
		if (i)
			outside_st[i - 1] = st;
	}
	make_export();
	atexit(remove_base);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (!fresh)
		make_export();
	fuzz_session(data, size);
	return 0;
}
