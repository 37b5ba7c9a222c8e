/*
 * The 9P2000.L server (fs9p/server.c), message by message through its
 * thread-free session: path containment (.., names with '/', symlinks,
 * a directory swapped for a symlink), devices, read-only exports, and
 * the ordinary operations checked against the disk; then a threaded
 * session answering pipelined requests in per-fid order.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs9p/client.h"
#include "fs9p/p9.h"
#include "fs9p/server.h"
#include "lib/buf.h"
#include "tests/unit/unit.h"

struct srv {
	char dir[64];
	struct p9_export *ex;
	struct p9_session *s;
	struct buf out;
	struct rd r; /* the last reply's body */
};

static struct buf req;
static struct p9_wr W;

static void sh(const char *fmt, const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), fmt, dir, dir, dir, dir);
	if (system(cmd) != 0)
		fprintf(stderr, "  setup command failed: %s\n", cmd);
}

static void T(uint8_t type)
{
	buf_reset(&req);
	p9_begin(&W, &req, type, 1);
}

/* Sends the message built with T() and p9_*(); returns the reply's
 * type, or -errno from the session. */
static int send_req(struct srv *s)
{
	uint32_t size;
	uint8_t type;
	uint16_t tag;
	int e;

	if (p9_end(&W, UINT32_MAX) < 0)
		return -ENOMEM;
	buf_reset(&s->out);
	if ((e = p9_session_feed(s->s, buf_head(&req), buf_avail(&req), &s->out)) < 0)
		return e;
	rd_init(&s->r, buf_head(&s->out), buf_avail(&s->out));
	if (p9_get_hdr(&s->r, &size, &type, &tag) < 0 || size != buf_avail(&s->out))
		return -EBADMSG;
	return type;
}

/* The errno of an Rlerror reply, 0 for success, -1 for anything else. */
static int result(struct srv *s, int type)
{
	uint32_t e;
	if (type == P9_RLERROR)
		return rd_u32(&s->r, &e) == 0 ? (int)e : -1;
	return type > 0 && (type & 1) ? 0 : -1;
}

static int srv_open(struct srv *s, int read_only)
{
	int e;
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/metac-p9s.XXXXXX");
	if (!mkdtemp(s->dir))
		return -1;
	sh("cd %s && echo hello > a && mkdir -p d && echo inner > d/x && "
	   "ln -s /etc/passwd evil && ln -s .. up && ln -s /etc outdir && mkfifo fifo", s->dir);
	if (!(s->ex = p9_export_new(s->dir, read_only, P9_MAP_MOUNTER, &e)) ||
	    !(s->s = p9_session_new(s->ex)))
		return -1;
	buf_init(&s->out);
	T(P9_TVERSION);
	p9_u32(&W, 65536);
	p9_cstr(&W, P9_VERSION);
	if (send_req(s) != P9_RVERSION)
		return -1;
	T(P9_TATTACH);
	p9_u32(&W, 1);
	p9_u32(&W, P9_NOFID);
	p9_cstr(&W, "");
	p9_cstr(&W, "");
	p9_u32(&W, 1000);
	return result(s, send_req(s)) == 0 ? 0 : -1;
}

static void srv_close(struct srv *s)
{
	p9_session_free(s->s);
	p9_export_unref(s->ex);
	buf_free(&s->out);
	sh("rm -rf %s", s->dir);
}

/* Twalk fid -> newfid over names (NULL-terminated); returns the result
 * and the number of qids in *nq. */
static int walk(struct srv *s, uint32_t fid, uint32_t newfid, const char **names, int *nq)
{
	uint16_t n = 0, got = 0;
	int r;
	while (names[n])
		n++;
	T(P9_TWALK);
	p9_u32(&W, fid);
	p9_u32(&W, newfid);
	p9_u16(&W, n);
	for (int i = 0; i < n; i++)
		p9_cstr(&W, names[i]);
	r = result(s, send_req(s));
	if (r == 0)
		rd_u16(&s->r, &got);
	if (nq)
		*nq = got;
	return r;
}

static int fid_op(struct srv *s, uint8_t type, uint32_t fid)
{
	T(type);
	p9_u32(&W, fid);
	return result(s, send_req(s));
}

static int lopen(struct srv *s, uint32_t fid, uint32_t flags)
{
	T(P9_TLOPEN);
	p9_u32(&W, fid);
	p9_u32(&W, flags);
	return result(s, send_req(s));
}

static int lcreate(struct srv *s, uint32_t fid, const char *name, uint32_t flags)
{
	T(P9_TLCREATE);
	p9_u32(&W, fid);
	p9_cstr(&W, name);
	p9_u32(&W, flags);
	p9_u32(&W, 0644);
	p9_u32(&W, 0);
	return result(s, send_req(s));
}

static int p9write(struct srv *s, uint32_t fid, uint64_t off, const void *p, uint32_t n)
{
	uint32_t count;
	int r;
	T(P9_TWRITE);
	p9_u32(&W, fid);
	p9_u64(&W, off);
	p9_u32(&W, n);
	p9_data(&W, p, n);
	r = result(s, send_req(s));
	if (r)
		return -r;
	return rd_u32(&s->r, &count) == 0 ? (int)count : -EBADMSG;
}

/* Reads up to n bytes into p; the count, or -errno. */
static int p9read(struct srv *s, uint32_t fid, uint64_t off, void *p, uint32_t n)
{
	uint32_t count;
	const uint8_t *d;
	int r;
	T(P9_TREAD);
	p9_u32(&W, fid);
	p9_u64(&W, off);
	p9_u32(&W, n);
	r = result(s, send_req(s));
	if (r)
		return -r;
	if (rd_u32(&s->r, &count) < 0 || count > n || rd_bytes(&s->r, &d, count) < 0)
		return -EBADMSG;
	memcpy(p, d, count);
	return (int)count;
}

static int unlinkat9(struct srv *s, uint32_t dfid, const char *name, uint32_t flags)
{
	T(P9_TUNLINKAT);
	p9_u32(&W, dfid);
	p9_cstr(&W, name);
	p9_u32(&W, flags);
	return result(s, send_req(s));
}

TEST(version_and_order)
{
	struct srv s;
	char v[32];
	uint32_t msize;

	CHECK_INT(srv_open(&s, 0), 0);
	/* An unknown version is refused; a huge msize is cut to ours. */
	T(P9_TVERSION);
	p9_u32(&W, 65536);
	p9_cstr(&W, "9P2000");
	CHECK_INT(send_req(&s), P9_RVERSION);
	CHECK_INT(rd_u32(&s.r, &msize), 0);
	CHECK_INT(p9_get_cstr(&s.r, v, sizeof(v)), 0);
	CHECK_STR(v, "unknown");
	T(P9_TVERSION);
	p9_u32(&W, 64u << 20);
	p9_cstr(&W, P9_VERSION);
	CHECK_INT(send_req(&s), P9_RVERSION);
	CHECK_INT(rd_u32(&s.r, &msize), 0);
	CHECK_INT(msize, P9_MAX_MSIZE);
	/* A new version drops every fid. */
	CHECK_INT(fid_op(&s, P9_TCLUNK, 1), EBADF);
	srv_close(&s);

	/* Nothing before Tversion. */
	struct p9_export *ex;
	struct p9_session *ps;
	struct buf out;
	int e;
	CHECK((ex = p9_export_new("/tmp", 1, P9_MAP_MOUNTER, &e)) != NULL);
	CHECK((ps = p9_session_new(ex)) != NULL);
	buf_init(&out);
	T(P9_TATTACH);
	p9_u32(&W, 1);
	p9_u32(&W, P9_NOFID);
	p9_cstr(&W, "");
	p9_cstr(&W, "");
	p9_u32(&W, 0);
	p9_end(&W, UINT32_MAX);
	CHECK_INT(p9_session_feed(ps, buf_head(&req), buf_avail(&req), &out), -EPROTO);
	p9_session_free(ps);

	/* An msize of 8192 is an msize like any other (diodls -m 8192). */
	CHECK((ps = p9_session_new(ex)) != NULL);
	T(P9_TVERSION);
	p9_u32(&W, 8192);
	p9_cstr(&W, P9_VERSION);
	p9_end(&W, UINT32_MAX);
	CHECK(p9_session_feed(ps, buf_head(&req), buf_avail(&req), &out) >= 0);
	CHECK_INT(buf_avail(&out) > 4 ? buf_head(&out)[4] : 0, P9_RVERSION);
	buf_reset(&out);
	T(P9_TATTACH);
	p9_u32(&W, 1);
	p9_u32(&W, P9_NOFID);
	p9_cstr(&W, "");
	p9_cstr(&W, "");
	p9_u32(&W, 0);
	p9_end(&W, UINT32_MAX);
	CHECK(p9_session_feed(ps, buf_head(&req), buf_avail(&req), &out) >= 0);
	CHECK_INT(buf_avail(&out) > 4 ? buf_head(&out)[4] : 0, P9_RATTACH);
	p9_session_free(ps);
	p9_export_unref(ex);
	buf_free(&out);
}

TEST(dotdot_stops_at_the_root)
{
	struct srv s;
	const char *up[] = { "..", "..", "..", "a", NULL };
	const char *back[] = { "d", "..", "..", "d", "x", NULL };
	char buf[16];
	int nq;

	CHECK_INT(srv_open(&s, 0), 0);
	CHECK_INT(walk(&s, 1, 2, up, &nq), 0);
	CHECK_INT(nq, 4);
	CHECK_INT(lopen(&s, 2, P9_DOTL_RDONLY), 0);
	CHECK_INT(p9read(&s, 2, 0, buf, sizeof(buf)), 6);
	CHECK_MEM(buf, "hello\n", 6);
	CHECK_INT(walk(&s, 1, 3, back, &nq), 0);
	CHECK_INT(nq, 5);
	srv_close(&s);
}

TEST(names_are_single_entries)
{
	struct srv s;
	const char *slash[] = { "d/x", NULL };
	const char *empty[] = { "", NULL };
	const char *abs[] = { "/etc", NULL };

	CHECK_INT(srv_open(&s, 0), 0);
	CHECK_INT(walk(&s, 1, 2, slash, NULL), EINVAL);
	CHECK_INT(walk(&s, 1, 2, empty, NULL), EINVAL);
	CHECK_INT(walk(&s, 1, 2, abs, NULL), EINVAL);
	CHECK_INT(lcreate(&s, 1, "../escape", P9_DOTL_WRONLY), EINVAL);
	CHECK_INT(unlinkat9(&s, 1, "..", 0), EINVAL);
	/* A failed walk leaves no newfid behind. */
	CHECK_INT(fid_op(&s, P9_TCLUNK, 2), EBADF);
	srv_close(&s);
}

TEST(symlinks_are_never_followed)
{
	struct srv s;
	const char *evil[] = { "evil", NULL };
	const char *through[] = { "outdir", "passwd", NULL };
	const char *up[] = { "up", "a", NULL };
	char target[64];
	int nq;

	CHECK_INT(srv_open(&s, 0), 0);
	CHECK_INT(walk(&s, 1, 2, evil, &nq), 0);
	CHECK_INT(lopen(&s, 2, P9_DOTL_RDONLY), ELOOP);
	CHECK_INT(fid_op(&s, P9_TREADLINK, 2), 0);
	CHECK_INT(p9_get_cstr(&s.r, target, sizeof(target)), 0);
	CHECK_STR(target, "/etc/passwd");
	/* Through a link to a directory outside: the walk stops at the
	 * link (a short walk) and the new fid does not exist. */
	CHECK_INT(walk(&s, 1, 3, through, &nq), 0);
	CHECK_INT(nq, 1);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 3), EBADF);
	CHECK_INT(walk(&s, 1, 3, up, &nq), 0);
	CHECK_INT(nq, 1);
	/* Nor when creating through one. */
	CHECK_INT(walk(&s, 1, 4, (const char *[]){ "outdir", NULL }, &nq), 0);
	CHECK_INT(lcreate(&s, 4, "planted", P9_DOTL_WRONLY), ENOTDIR);
	CHECK(access("/etc/planted", F_OK) != 0);
	srv_close(&s);
}

TEST(a_directory_swapped_for_a_link_is_not_entered)
{
	struct srv s;
	const char *d[] = { "d", NULL };
	const char *x[] = { "x", NULL };
	const char *passwd[] = { "passwd", NULL };
	char buf[16];

	CHECK_INT(srv_open(&s, 0), 0);
	CHECK_INT(walk(&s, 1, 2, d, NULL), 0);
	/* Someone on the server moves d away and puts a link to /etc in
	 * its place: fid 2 still is the directory itself. */
	sh("mv %s/d %s/d2 && ln -s /etc %s/d", s.dir);
	CHECK_INT(walk(&s, 2, 3, passwd, NULL), ENOENT);
	CHECK_INT(walk(&s, 2, 3, x, NULL), 0);
	CHECK_INT(lopen(&s, 3, P9_DOTL_RDONLY), 0);
	CHECK_INT(p9read(&s, 3, 0, buf, sizeof(buf)), 6);
	CHECK_MEM(buf, "inner\n", 6);
	/* And a new walk by name finds the link, not /etc. */
	CHECK_INT(walk(&s, 1, 4, (const char *[]){ "d", "passwd", NULL }, NULL), 0);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 4), EBADF);
	srv_close(&s);
}

TEST(devices_and_fifos_are_not_opened)
{
	struct srv s;
	int nq;

	CHECK_INT(srv_open(&s, 0), 0);
	T(P9_TMKNOD);
	p9_u32(&W, 1);
	p9_cstr(&W, "disk");
	p9_u32(&W, S_IFBLK | 0600);
	p9_u32(&W, 8);
	p9_u32(&W, 0);
	p9_u32(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), EPERM);
	CHECK_INT(walk(&s, 1, 2, (const char *[]){ "fifo", NULL }, &nq), 0);
	CHECK_INT(lopen(&s, 2, P9_DOTL_RDONLY), EPERM);
	/* Creating over a FIFO does not hang either. */
	CHECK_INT(lcreate(&s, 1, "fifo", P9_DOTL_WRONLY), EPERM);
	srv_close(&s);
}

TEST(read_only_exports_refuse_every_write)
{
	struct srv s;
	const char *a[] = { "a", NULL };
	char buf[16];

	CHECK_INT(srv_open(&s, 1), 0);
	CHECK_INT(lcreate(&s, 1, "new", P9_DOTL_WRONLY), EROFS);
	CHECK_INT(unlinkat9(&s, 1, "a", 0), EROFS);
	T(P9_TMKDIR);
	p9_u32(&W, 1);
	p9_cstr(&W, "nd");
	p9_u32(&W, 0755);
	p9_u32(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), EROFS);
	T(P9_TSYMLINK);
	p9_u32(&W, 1);
	p9_cstr(&W, "l");
	p9_cstr(&W, "a");
	p9_u32(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), EROFS);
	T(P9_TRENAMEAT);
	p9_u32(&W, 1);
	p9_cstr(&W, "a");
	p9_u32(&W, 1);
	p9_cstr(&W, "b");
	CHECK_INT(result(&s, send_req(&s)), EROFS);
	CHECK_INT(walk(&s, 1, 2, a, NULL), 0);
	CHECK_INT(lopen(&s, 2, P9_DOTL_RDWR), EROFS);
	CHECK_INT(lopen(&s, 2, P9_DOTL_RDONLY | P9_DOTL_TRUNC), EROFS);
	T(P9_TSETATTR);
	p9_u32(&W, 2);
	p9_u32(&W, P9_SETATTR_SIZE);
	for (int i = 0; i < 3; i++)
		p9_u32(&W, 0);
	for (int i = 0; i < 5; i++)
		p9_u64(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), EROFS);
	T(P9_TXATTRCREATE);
	p9_u32(&W, 2);
	p9_cstr(&W, "user.x");
	p9_u64(&W, 1);
	p9_u32(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), EROFS);
	CHECK_INT(fid_op(&s, P9_TREMOVE, 2), EROFS);
	/* Reading still works, and the file is intact. */
	CHECK_INT(walk(&s, 1, 3, a, NULL), 0);
	CHECK_INT(lopen(&s, 3, P9_DOTL_RDONLY), 0);
	CHECK_INT(p9read(&s, 3, 0, buf, sizeof(buf)), 6);
	srv_close(&s);
}

TEST(create_write_read_stat)
{
	struct srv s;
	static uint8_t data[60000], back[60000];
	char path[128];
	struct stat st;
	uint64_t valid, size;
	struct p9_qid q;
	struct p9_attr at;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	CHECK_INT(srv_open(&s, 0), 0);
	CHECK_INT(walk(&s, 1, 2, (const char *[]){ NULL }, NULL), 0);
	CHECK_INT(lcreate(&s, 2, "new", P9_DOTL_RDWR), 0);
	CHECK_INT(p9write(&s, 2, 0, data, sizeof(data)), (int)sizeof(data));
	CHECK_INT(p9read(&s, 2, 0, back, sizeof(back)), (int)sizeof(back));
	CHECK_MEM(back, data, sizeof(data));
	CHECK_INT(p9read(&s, 2, sizeof(data), back, 10), 0);
	snprintf(path, sizeof(path), "%s/new", s.dir);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_size, sizeof(data));
	T(P9_TGETATTR);
	p9_u32(&W, 2);
	p9_u64(&W, P9_GETATTR_ALL);
	CHECK_INT(result(&s, send_req(&s)), 0);
	CHECK_INT(rd_u64(&s.r, &valid), 0);
	CHECK_INT(p9_get_qid(&s.r, &q), 0);
	CHECK_INT(p9_get_attr(&s.r, &at), 0);
	size = at.size;
	CHECK_INT(size, sizeof(data));
	CHECK_INT(at.uid, 1000); /* shown as the attaching user's */
	CHECK_INT(at.mode & 0777, 0644);
	/* Truncate, chmod and utimes through setattr. */
	T(P9_TSETATTR);
	p9_u32(&W, 2);
	p9_u32(&W, P9_SETATTR_SIZE | P9_SETATTR_MODE | P9_SETATTR_MTIME | P9_SETATTR_MTIME_SET);
	p9_u32(&W, 0600);
	p9_u32(&W, 0);
	p9_u32(&W, 0);
	p9_u64(&W, 10);
	p9_u64(&W, 0);
	p9_u64(&W, 0);
	p9_u64(&W, 1000000000);
	p9_u64(&W, 5);
	CHECK_INT(result(&s, send_req(&s)), 0);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_size, 10);
	CHECK_INT(st.st_mode & 0777, 0600);
	CHECK_INT(st.st_mtim.tv_sec, 1000000000);
	/* In the mounter's view, ownership cannot be handed to others. */
	T(P9_TSETATTR);
	p9_u32(&W, 2);
	p9_u32(&W, P9_SETATTR_UID);
	p9_u32(&W, 0);
	p9_u32(&W, 4242);
	p9_u32(&W, 0);
	for (int i = 0; i < 5; i++)
		p9_u64(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), EPERM);
	srv_close(&s);
}

TEST(readdir_lists_every_entry_in_rounds)
{
	struct srv s;
	uint64_t off = 0;
	int names = 0, rounds = 0, found_last = 0;

	CHECK_INT(srv_open(&s, 0), 0);
	sh("cd %s && mkdir many && cd many && for i in $(seq 500); do : > f$i; done", s.dir);
	CHECK_INT(walk(&s, 1, 2, (const char *[]){ "many", NULL }, NULL), 0);
	CHECK_INT(lopen(&s, 2, P9_DOTL_RDONLY | P9_DOTL_DIRECTORY), 0);
	for (;;) {
		uint32_t count;
		T(P9_TREADDIR);
		p9_u32(&W, 2);
		p9_u64(&W, off);
		p9_u32(&W, 2048);
		CHECK_INT(result(&s, send_req(&s)), 0);
		CHECK_INT(rd_u32(&s.r, &count), 0);
		CHECK(count <= 2048);
		if (!count)
			break;
		rounds++;
		struct rd e;
		const uint8_t *p;
		CHECK_INT(rd_bytes(&s.r, &p, count), 0);
		rd_init(&e, p, count);
		while (rd_left(&e)) {
			struct p9_qid q;
			uint8_t type;
			char name[256];
			CHECK_INT(p9_get_qid(&e, &q), 0);
			CHECK_INT(rd_u64(&e, &off), 0);
			CHECK_INT(rd_u8(&e, &type), 0);
			CHECK_INT(p9_get_cstr(&e, name, sizeof(name)), 0);
			if (name[0] == 'f')
				names++;
			found_last |= !strcmp(name, "f500");
		}
	}
	CHECK_INT(names, 500);
	CHECK(found_last && rounds > 1);
	srv_close(&s);
}

TEST(rename_link_unlink)
{
	struct srv s;
	char path[128];
	struct stat st;

	CHECK_INT(srv_open(&s, 0), 0);
	CHECK_INT(walk(&s, 1, 2, (const char *[]){ "d", NULL }, NULL), 0);
	T(P9_TRENAMEAT);
	p9_u32(&W, 1);
	p9_cstr(&W, "a");
	p9_u32(&W, 2);
	p9_cstr(&W, "moved");
	CHECK_INT(result(&s, send_req(&s)), 0);
	snprintf(path, sizeof(path), "%s/d/moved", s.dir);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(walk(&s, 2, 3, (const char *[]){ "moved", NULL }, NULL), 0);
	T(P9_TLINK);
	p9_u32(&W, 1);
	p9_u32(&W, 3);
	p9_cstr(&W, "hard");
	CHECK_INT(result(&s, send_req(&s)), 0);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_nlink, 2);
	/* Trename moves the fid's own file. */
	T(P9_TRENAME);
	p9_u32(&W, 3);
	p9_u32(&W, 1);
	p9_cstr(&W, "back");
	CHECK_INT(result(&s, send_req(&s)), 0);
	snprintf(path, sizeof(path), "%s/back", s.dir);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(unlinkat9(&s, 1, "hard", 0), 0);
	CHECK_INT(unlinkat9(&s, 1, "d", 0), EISDIR);
	CHECK_INT(unlinkat9(&s, 2, "x", 0), 0);
	CHECK_INT(unlinkat9(&s, 1, "d", P9_AT_REMOVEDIR), 0);
	/* Tremove clunks the fid even when it works. */
	CHECK_INT(fid_op(&s, P9_TREMOVE, 3), 0);
	CHECK(stat(path, &st) != 0);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 3), EBADF);
	/* The root itself cannot be removed. */
	CHECK_INT(walk(&s, 1, 4, (const char *[]){ NULL }, NULL), 0);
	CHECK_INT(fid_op(&s, P9_TREMOVE, 4), EBUSY);
	srv_close(&s);
}

TEST(xattrs_round_trip)
{
	struct srv s;
	uint64_t size;
	char value[16];

	CHECK_INT(srv_open(&s, 0), 0);
	{
		char probe[128];
		snprintf(probe, sizeof(probe), "%s/a", s.dir);
		if (setxattr(probe, "user.probe", "1", 1, 0) < 0) {
			/* This file system keeps no user xattrs. */
			srv_close(&s);
			return;
		}
	}
	CHECK_INT(walk(&s, 1, 2, (const char *[]){ "a", NULL }, NULL), 0);
	T(P9_TXATTRCREATE);
	p9_u32(&W, 2);
	p9_cstr(&W, "user.color");
	p9_u64(&W, 4);
	p9_u32(&W, 0);
	CHECK_INT(result(&s, send_req(&s)), 0);
	CHECK_INT(p9write(&s, 2, 0, "blue", 4), 4);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 2), 0);
	CHECK_INT(walk(&s, 1, 5, (const char *[]){ "a", NULL }, NULL), 0);
	T(P9_TXATTRWALK);
	p9_u32(&W, 5);
	p9_u32(&W, 3);
	p9_cstr(&W, "user.color");
	CHECK_INT(result(&s, send_req(&s)), 0);
	CHECK_INT(rd_u64(&s.r, &size), 0);
	CHECK_INT(size, 4);
	CHECK_INT(p9read(&s, 3, 0, value, sizeof(value)), 4);
	CHECK_MEM(value, "blue", 4);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 3), 0);
	/* Removal: size 0 with XATTR_REPLACE, as Linux sends it. */
	CHECK_INT(walk(&s, 1, 4, (const char *[]){ "a", NULL }, NULL), 0);
	T(P9_TXATTRCREATE);
	p9_u32(&W, 4);
	p9_cstr(&W, "user.color");
	p9_u64(&W, 0);
	p9_u32(&W, XATTR_REPLACE);
	CHECK_INT(result(&s, send_req(&s)), 0);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 4), 0);
	T(P9_TXATTRWALK);
	p9_u32(&W, 5);
	p9_u32(&W, 3);
	p9_cstr(&W, "user.color");
	CHECK_INT(result(&s, send_req(&s)), ENODATA);
	srv_close(&s);
}

TEST(protocol_abuse_is_refused)
{
	struct srv s;
	uint8_t small[4] = { 3, 0, 0, 0 };
	struct buf out;

	CHECK_INT(srv_open(&s, 0), 0);
	buf_init(&out);
	/* A size field that lies, and one below the header. */
	CHECK_INT(p9_session_feed(s.s, small, sizeof(small), &out), -EMSGSIZE);
	T(P9_TCLUNK);
	p9_u32(&W, 1);
	p9_end(&W, UINT32_MAX);
	req.data[0] ^= 1;
	CHECK_INT(p9_session_feed(s.s, buf_head(&req), buf_avail(&req), &out), -EMSGSIZE);
	/* Truncated bodies get an error reply, not a crash. */
	T(P9_TWALK);
	p9_u32(&W, 1);
	CHECK_INT(result(&s, send_req(&s)), EBADMSG);
	T(P9_TWALK);
	p9_u32(&W, 1);
	p9_u32(&W, 2);
	p9_u16(&W, P9_MAXWELEM + 1);
	CHECK_INT(result(&s, send_req(&s)), EINVAL);
	/* newfid in use, unknown fids, unknown messages. */
	CHECK_INT(walk(&s, 1, 1, (const char *[]){ "d", NULL }, NULL), 0);
	CHECK_INT(walk(&s, 1, 1, (const char *[]){ "x", NULL }, NULL), 0);
	CHECK_INT(walk(&s, 1, 5, (const char *[]){ NULL }, NULL), 0);
	CHECK_INT(walk(&s, 1, 5, (const char *[]){ NULL }, NULL), EEXIST);
	CHECK_INT(fid_op(&s, P9_TCLUNK, 77), EBADF);
	T(P9_TSTAT);
	p9_u32(&W, 1);
	CHECK_INT(result(&s, send_req(&s)), EOPNOTSUPP);
	/* Tflush of nothing in flight is answered at once. */
	T(P9_TFLUSH);
	p9_u16(&W, 99);
	CHECK_INT(send_req(&s), P9_RFLUSH);
	buf_free(&out);
	srv_close(&s);
}

/* A real threaded session (p9_serve_async) with metac's own client
 * pipelining dependent requests: Twalk(newfid)+Tgetattr(newfid) and
 * Twalk+Tlcreate+Tgetattr sent together must be answered as if sent one
 * by one, for every one of many rounds, from several threads at once. */
struct pipe_arg {
	struct p9c *c;
	uint32_t root;
	int id, failures;
};

static void *pipe_worker(void *arg)
{
	struct pipe_arg *a = arg;
	char name[32];

	for (int i = 0; i < 200; i++) {
		struct p9_qid q;
		struct p9_attr at;
		uint32_t nf;

		if (p9c_fid_alloc(a->c, &nf) < 0) {
			a->failures++;
			continue;
		}
		snprintf(name, sizeof(name), "t%d-%d", a->id, i);
		if (p9c_clone_lcreate(a->c, a->root, nf, name, P9_DOTL_RDWR, 0644, 0, &q, &at) < 0 ||
		    !S_ISREG(at.mode) || at.size != 0)
			a->failures++;
		else
			p9c_clunk(a->c, nf);
		if (p9c_walk_getattr(a->c, a->root, nf, name, &q, &at) < 0 || !S_ISREG(at.mode))
			a->failures++;
		else
			p9c_clunk(a->c, nf);
		/* A name that is not there: the walk fails, and so does the whole. */
		if (p9c_walk_getattr(a->c, a->root, nf, "missing", &q, &at) != -ENOENT)
			a->failures++;
		p9c_fid_release(a->c, nf);
	}
	return NULL;
}

TEST(pipelined_requests_keep_their_order_per_fid)
{
	char dir[] = "/tmp/metac-p9o.XXXXXX";
	struct p9_export *ex;
	struct p9c *c;
	struct p9_qid q;
	struct pipe_arg args[4];
	pthread_t t[4];
	uint32_t root;
	int sv[2], e, failures = 0;

	CHECK(mkdtemp(dir) != NULL);
	CHECK((ex = p9_export_new(dir, 0, P9_MAP_MOUNTER, &e)) != NULL);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK_INT(p9_serve_async(ex, sv[1]), 0);
	CHECK_INT(p9c_open(sv[0], 65536, &c), 0);
	p9c_set_ordered(c, 1);
	CHECK_INT(p9c_fid_alloc(c, &root), 0);
	CHECK_INT(p9c_attach(c, root, P9_NOFID, "0", "", 0, &q), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct pipe_arg){ c, root, i, 0 };
		CHECK(pthread_create(&t[i], NULL, pipe_worker, &args[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		failures += args[i].failures;
	}
	p9c_close(c);
	p9_export_unref(ex);
	sh("rm -rf %s", dir);
	CHECK_INT(failures, 0);
}
