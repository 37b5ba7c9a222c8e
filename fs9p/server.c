/*
 * The 9P2000.L server (see server.h).
 *
 * A session: the reader (the thread that called p9_serve) takes whole
 * messages off the descriptor, answers Tversion and Tflush itself, and
 * queues everything else for P9_SRV_WORKERS worker threads. Workers send
 * replies under a write lock. A Tflush for a request still running is
 * answered right after that request's reply, as the protocol wants.
 *
 * A fid holds an O_PATH descriptor of its file (never a path to resolve
 * again), the path from the root (for "..", rename and remove), and once
 * opened a second descriptor for I/O. Reopening goes through
 * /proc/self/fd, which reaches the very file the O_PATH descriptor holds;
 * without /proc it falls back to lib/safepath beneath the root.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs9p/p9.h"
#include "fs9p/server.h"
#include "lib/buf.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/safepath.h"

#define V9FS_MAGIC 0x01021997
#define FID_BUCKETS 1024
#define MAX_PATH_LEN 4096
/* Until Tversion sets it, messages are small. */
#define PRE_VERSION_MSIZE 8192

struct fid {
	uint32_t id;
	int refs;            /* the table's and each request's */
	int pfd;             /* O_PATH, the file itself; -1 for xattr fids */
	int ofd;             /* opened for I/O, else -1 */
	int isdir, islink;
	uint32_t uid;        /* the attaching user */
	char *path;          /* from the root, "" for the root */
	pthread_mutex_t lock; /* ofd's directory position, xattr buffer */
	/* xattr fids: a value (or name list) read, or one being written. */
	int xattr;           /* 0, 1 read, 2 write */
	uint8_t *xbuf;
	size_t xlen, xsize;
	char *xname;
	int xflags;
	struct fid *next;    /* hash chain */
};

/* Fids a request names, and those it makes or changes (a barrier for
 * later requests naming them): see req_order(). */
#define REQ_MAX_FIDS 3

struct req {
	struct req *next;
	uint16_t tag;
	uint8_t type;
	uint64_t seq;            /* order of arrival */
	uint32_t fids[REQ_MAX_FIDS];
	uint8_t nfids;
	uint8_t barrier;         /* bit i: fids[i] is made or changed */
	struct req *bnext;       /* on the session's list of requests in flight */
	uint8_t ends_fid;        /* Tclunk/Tremove: after all else on fids[0] */
	size_t len;
	uint8_t data[]; /* the whole message */
};

struct flushwait {
	struct flushwait *next;
	uint16_t oldtag, tag;
};

struct session {
	const struct p9_export *ex;
	int fd;
	uint32_t msize;
	int versioned;              /* a Tversion for 9P2000.L was answered */
	pthread_mutex_t lock;       /* fids, queue, inflight, flushes */
	pthread_cond_t work;        /* queue has work, or quit */
	pthread_cond_t idle;        /* a request finished */
	pthread_mutex_t wlock;      /* writes to fd */
	struct fid *fids[FID_BUCKETS];
	unsigned nfids;
	struct req *head, *tail;
	unsigned inflight;          /* queued or running */
	uint8_t busy[65536 / 8];    /* tags in flight */
	struct flushwait *flushes;
	uint64_t next_seq;
	struct req *barriers;       /* queued or running (see req_order) */
	pthread_cond_t order;       /* a barrier request finished */
	int quit, broken;
	struct buf *sync_out;       /* p9_session_feed: replies go here */
	pthread_t workers[P9_SRV_WORKERS];
	int nworkers;
};

/* --- small helpers ------------------------------------------------- */

static int tag_busy(struct session *s, uint16_t t)
{
	return s->busy[t >> 3] & (1u << (t & 7));
}

static void tag_set(struct session *s, uint16_t t, int on)
{
	if (on)
		s->busy[t >> 3] |= 1u << (t & 7);
	else
		s->busy[t >> 3] &= ~(1u << (t & 7));
}

static void send_buf(struct session *s, struct buf *b)
{
	if (s->sync_out) {
		buf_put(s->sync_out, buf_head(b), buf_avail(b));
		return;
	}
	pthread_mutex_lock(&s->wlock);
	if (!s->broken && io_write_all(s->fd, buf_head(b), buf_avail(b)) < 0)
		s->broken = 1;
	pthread_mutex_unlock(&s->wlock);
}

static void send_rflush(struct session *s, uint16_t tag)
{
	struct buf b;
	struct p9_wr w;
	buf_init(&b);
	p9_begin(&w, &b, P9_RFLUSH, tag);
	if (p9_end(&w, s->msize) == 0)
		send_buf(s, &b);
	buf_free(&b);
}

static void qid_from_stat(const struct stat *st, struct p9_qid *q)
{
	q->type = S_ISDIR(st->st_mode) ? P9_QTDIR :
		  S_ISLNK(st->st_mode) ? P9_QTSYMLINK : P9_QTFILE;
	q->version = 0;
	/* Files of other file systems mounted inside the export must not
	 * share inode numbers with ours. */
	q->path = (uint64_t)st->st_ino ^ ((uint64_t)st->st_dev << 48);
}

static int fd_stat(int fd, struct stat *st)
{
	return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static void proc_path(int fd, char *out, size_t outsz)
{
	snprintf(out, outsz, "/proc/self/fd/%d", fd);
}

/* "a/b" + "c" -> "a/b/c"; NULL if too long or out of memory. */
static char *path_join(const char *dir, const char *name)
{
	size_t dl = strlen(dir), nl = strlen(name), n = dl + 1 + nl + 1;
	char *p;
	if (n > MAX_PATH_LEN || !(p = malloc(n)))
		return NULL;
	memcpy(p, dir, dl);
	if (dl)
		p[dl++] = '/';
	memcpy(p + dl, name, nl + 1);
	return p;
}

/* The parent of a path from the root; "" for a top-level name or root. */
static char *path_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	return strndup(path, slash ? (size_t)(slash - path) : 0);
}

static const char *path_base(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* --- fids ---------------------------------------------------------- */

static struct fid *fid_find(struct session *s, uint32_t id)
{
	for (struct fid *f = s->fids[id % FID_BUCKETS]; f; f = f->next)
		if (f->id == id)
			return f;
	return NULL;
}

/* A reference to fid id, or NULL. */
static struct fid *fid_get(struct session *s, uint32_t id)
{
	pthread_mutex_lock(&s->lock);
	struct fid *f = fid_find(s, id);
	if (f)
		f->refs++;
	pthread_mutex_unlock(&s->lock);
	return f;
}

static void fid_destroy(struct fid *f)
{
	if (f->pfd >= 0)
		close(f->pfd);
	if (f->ofd >= 0)
		close(f->ofd);
	free(f->path);
	free(f->xbuf);
	free(f->xname);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static void fid_put(struct session *s, struct fid *f)
{
	int last;
	if (!f)
		return;
	pthread_mutex_lock(&s->lock);
	last = --f->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last)
		fid_destroy(f);
}

static struct fid *fid_new(uint32_t id, int pfd, char *path, uint32_t uid)
{
	struct fid *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->id = id;
	f->refs = 1;
	f->pfd = pfd;
	f->ofd = -1;
	f->path = path;
	f->uid = uid;
	pthread_mutex_init(&f->lock, NULL);
	return f;
}

/* Fills isdir/islink from the file. */
static int fid_classify(struct fid *f, struct stat *st)
{
	int e = fd_stat(f->pfd, st);
	if (e < 0)
		return e;
	f->isdir = S_ISDIR(st->st_mode);
	f->islink = S_ISLNK(st->st_mode);
	return 0;
}

/* Adds f under its id (the table takes f's reference). -EEXIST if taken. */
static int fid_insert(struct session *s, struct fid *f)
{
	int e = 0;
	pthread_mutex_lock(&s->lock);
	if (fid_find(s, f->id))
		e = -EEXIST;
	else if (s->nfids >= P9_SRV_MAX_FIDS)
		e = -EMFILE;
	if (!e) {
		f->next = s->fids[f->id % FID_BUCKETS];
		s->fids[f->id % FID_BUCKETS] = f;
		s->nfids++;
	}
	pthread_mutex_unlock(&s->lock);
	return e;
}

/* Takes fid id out of the table; returns the table's reference. */
static struct fid *fid_remove(struct session *s, uint32_t id)
{
	struct fid *f = NULL;
	pthread_mutex_lock(&s->lock);
	for (struct fid **p = &s->fids[id % FID_BUCKETS]; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			f = *p;
			*p = f->next;
			s->nfids--;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return f;
}

/* Drops every fid. The table is emptied under the lock, the references
 * let go outside it (fid_put takes the lock itself). */
static void fids_clear(struct session *s)
{
	struct fid *all = NULL;

	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < FID_BUCKETS; i++) {
		while (s->fids[i]) {
			struct fid *f = s->fids[i];
			s->fids[i] = f->next;
			f->next = all;
			all = f;
		}
	}
	s->nfids = 0;
	pthread_mutex_unlock(&s->lock);
	while (all) {
		struct fid *f = all;
		all = f->next;
		fid_put(s, f);
	}
}

/* --- opening files ------------------------------------------------- */

static int open_flags(uint32_t fl)
{
	static const struct { uint32_t p9; int o; } map[] = {
		{ P9_DOTL_TRUNC, O_TRUNC }, { P9_DOTL_APPEND, O_APPEND },
		{ P9_DOTL_DSYNC, O_DSYNC }, { P9_DOTL_SYNC, O_SYNC },
		{ P9_DOTL_DIRECTORY, O_DIRECTORY }, { P9_DOTL_EXCL, O_EXCL },
	};
	int o;
	switch (fl & 3) {
	case P9_DOTL_WRONLY: o = O_WRONLY; break;
	case P9_DOTL_RDWR: o = O_RDWR; break;
	default: o = O_RDONLY; break;
	}
	/* O_DIRECT, O_NOATIME, O_NONBLOCK, async and tty flags are the
	 * client's business, not ours. */
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (fl & map[i].p9)
			o |= map[i].o;
	return o | O_CLOEXEC;
}

static int writes(int oflags)
{
	return (oflags & O_ACCMODE) != O_RDONLY || (oflags & O_TRUNC);
}

/* An I/O descriptor for the file f holds. */
static int reopen(struct session *s, struct fid *f, int oflags)
{
	char pp[64];
	int fd;

	if (f->isdir)
		return (fd = openat(f->pfd, ".", oflags | O_DIRECTORY)) < 0 ? -errno : fd;
	proc_path(f->pfd, pp, sizeof(pp));
	fd = open(pp, oflags);
	if (fd >= 0 || errno != ENOENT)
		return fd < 0 ? -errno : fd;
	/* No /proc: the same path again, still beneath the root. */
	if ((fd = safe_openat(s->ex->rootfd, f->path, oflags | O_NOFOLLOW | O_NONBLOCK, 0)) < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EPERM;
	}
	fcntl(fd, F_SETFL, oflags & ~O_ACCMODE & ~O_CLOEXEC);
	return fd;
}

/* Only directories, regular files and symlinks (as links) are opened: a
 * device or FIFO in an export is listed, not used. */
static int openable(const struct stat *st)
{
	return S_ISREG(st->st_mode) || S_ISDIR(st->st_mode) ? 0 :
	       S_ISLNK(st->st_mode) ? -ELOOP : -EPERM;
}

/* --- request context ----------------------------------------------- */

struct ctx {
	struct session *s;
	struct rd r;
	struct buf *out;
	struct p9_wr w;
	uint16_t tag;
	uint8_t type;
};

static void reply_begin(struct ctx *c)
{
	p9_begin(&c->w, c->out, c->type + 1, c->tag);
}

static int ro(struct ctx *c)
{
	return c->s->ex->read_only ? -EROFS : 0;
}

/* Reads a single entry name from the message; -EINVAL for "", ".",
 * "..", or anything with '/' or NUL. */
static int get_name(struct ctx *c, char name[NAME_MAX + 1])
{
	int e = p9_get_cstr(&c->r, name, NAME_MAX + 1);
	if (e == -ENAMETOOLONG)
		return e;
	if (e < 0)
		return -EBADMSG;
	return safe_name_check(name, strlen(name));
}

static int get_fid(struct ctx *c, struct fid **f)
{
	uint32_t id;
	*f = NULL; /* callers fid_put() it whatever happens */
	if (rd_u32(&c->r, &id) < 0)
		return -EBADMSG;
	if (!(*f = fid_get(c->s, id)))
		return -EBADF;
	return 0;
}

static int get_dir_fid(struct ctx *c, struct fid **f)
{
	int e = get_fid(c, f);
	if (e < 0)
		return e;
	if ((*f)->xattr || !(*f)->isdir)
		return -ENOTDIR;
	return 0;
}

/* Ownership of something a client just created. */
static void chown_new(struct ctx *c, int dirfd, const char *name, uint32_t uid,
		      uint32_t gid)
{
	if (c->s->ex->map != P9_MAP_PASSTHROUGH || geteuid() != 0)
		return;
	if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		log_debug("9p: cannot give %s to %u:%u: %m", name, uid, gid);
}

static int reply_qid_of(struct ctx *c, int dirfd, const char *name)
{
	struct stat st;
	struct p9_qid q;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	qid_from_stat(&st, &q);
	reply_begin(c);
	p9_qid(&c->w, &q);
	return 0;
}

/* --- operations ---------------------------------------------------- */

static int op_attach(struct ctx *c)
{
	uint32_t fid, afid, n_uname;
	const char *s;
	uint16_t n;
	struct stat st;
	struct p9_qid q;
	struct fid *f;
	int pfd, e;

	if (rd_u32(&c->r, &fid) < 0 || rd_u32(&c->r, &afid) < 0 ||
	    p9_get_str(&c->r, &s, &n) < 0 || p9_get_str(&c->r, &s, &n) < 0 ||
	    rd_u32(&c->r, &n_uname) < 0)
		return -EBADMSG;
	if (afid != P9_NOFID)
		return -EOPNOTSUPP;
	/* The ref (or the local socket) is the authority: any aname names
	 * this export. An unknown user becomes nobody. */
	if (n_uname == P9_NOFID)
		n_uname = 65534;
	if ((pfd = openat(c->s->ex->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	char *root = strdup("");
	if (!root || !(f = fid_new(fid, pfd, root, n_uname))) {
		free(root);
		close(pfd);
		return -ENOMEM;
	}
	if ((e = fid_classify(f, &st)) < 0 || (e = fid_insert(c->s, f)) < 0) {
		fid_destroy(f);
		return e;
	}
	qid_from_stat(&st, &q);
	reply_begin(c);
	p9_qid(&c->w, &q);
	return 0;
}

static int op_walk(struct ctx *c)
{
	uint32_t newfid;
	uint16_t nw;
	struct fid *f = NULL, *nf;
	char name[NAME_MAX + 1];
	struct p9_qid qids[P9_MAXWELEM];
	struct stat st;
	char *path = NULL;
	int cur = -1, e, i;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u32(&c->r, &newfid) < 0 || rd_u16(&c->r, &nw) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if (nw > P9_MAXWELEM) {
		e = -EINVAL;
		goto out;
	}
	/* From an open fid only to another fid: an open one keeps its file. */
	if (f->xattr || (f->ofd >= 0 && newfid == f->id)) {
		e = -EBUSY;
		goto out;
	}
	if (newfid != f->id && (nf = fid_get(c->s, newfid))) {
		fid_put(c->s, nf);
		e = -EEXIST;
		goto out;
	}
	if ((cur = fcntl(f->pfd, F_DUPFD_CLOEXEC, 0)) < 0 || !(path = strdup(f->path))) {
		e = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nw; i++) {
		int next;
		char *np;

		e = p9_get_cstr(&c->r, name, sizeof(name));
		if (e == -EBADMSG)
			goto out;
		if (!e && !strcmp(name, "..")) {
			/* Up, but never above the root. */
			np = path_parent(path);
			next = np ? safe_openat(c->s->ex->rootfd, np, O_PATH | O_DIRECTORY, 0) : -ENOMEM;
		} else if (!e && !strcmp(name, ".")) {
			np = strdup(path);
			next = np ? fcntl(cur, F_DUPFD_CLOEXEC, 0) : -ENOMEM;
		} else {
			if (!e)
				e = safe_name_check(name, strlen(name));
			np = e ? NULL : path_join(path, name);
			if (e)
				next = e;
			else if (!np)
				next = -ENAMETOOLONG;
			else if ((next = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0)
				next = -errno;
		}
		if (next < 0) {
			free(np);
			e = next;
			break;
		}
		close(cur);
		free(path);
		cur = next;
		path = np;
		if ((e = fd_stat(cur, &st)) < 0)
			break;
		qid_from_stat(&st, &qids[i]);
	}
	if (i < nw) {
		/* The first name failing is an error; a later one, a short
		 * walk (and newfid stays unused). */
		if (i == 0)
			goto out;
		e = 0;
	} else if (newfid == f->id) {
		/* In place: the fid now names the new file. */
		pthread_mutex_lock(&f->lock);
		close(f->pfd);
		free(f->path);
		f->pfd = cur;
		f->path = path;
		cur = -1;
		path = NULL;
		pthread_mutex_unlock(&f->lock);
		fid_classify(f, &st);
	} else {
		if (!(nf = fid_new(newfid, cur, path, f->uid))) {
			e = -ENOMEM;
			goto out;
		}
		cur = -1;
		path = NULL;
		if ((e = fid_classify(nf, &st)) < 0 || (e = fid_insert(c->s, nf)) < 0) {
			fid_destroy(nf);
			goto out;
		}
	}
	reply_begin(c);
	p9_u16(&c->w, (uint16_t)i);
	for (int k = 0; k < i; k++)
		p9_qid(&c->w, &qids[k]);
	e = 0;
out:
	if (cur >= 0)
		close(cur);
	free(path);
	fid_put(c->s, f);
	return e;
}

static int op_lopen(struct ctx *c)
{
	struct fid *f;
	uint32_t flags;
	struct stat st;
	struct p9_qid q;
	int e, of, fd;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u32(&c->r, &flags) < 0) {
		e = -EBADMSG;
		goto out;
	}
	of = open_flags(flags) & ~O_EXCL;
	if (f->xattr || f->ofd >= 0) {
		e = -EBUSY;
		goto out;
	}
	if (writes(of) && (e = ro(c)) < 0)
		goto out;
	if ((e = fd_stat(f->pfd, &st)) < 0 || (e = openable(&st)) < 0)
		goto out;
	if ((fd = reopen(c->s, f, of)) < 0) {
		e = fd;
		goto out;
	}
	pthread_mutex_lock(&f->lock);
	if (f->ofd >= 0) {
		close(fd);
		e = -EBUSY;
	} else {
		f->ofd = fd;
	}
	pthread_mutex_unlock(&f->lock);
	if (e)
		goto out;
	qid_from_stat(&st, &q);
	reply_begin(c);
	p9_qid(&c->w, &q);
	p9_u32(&c->w, c->s->msize - P9_IOHDR);
out:
	fid_put(c->s, f);
	return e;
}

static int op_lcreate(struct ctx *c)
{
	struct fid *f;
	char name[NAME_MAX + 1];
	uint32_t flags, mode, gid;
	struct stat st;
	struct p9_qid q;
	char *np = NULL;
	int e, fd = -1, pfd = -1;

	if ((e = get_dir_fid(c, &f)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0)
		goto out;
	if (rd_u32(&c->r, &flags) < 0 || rd_u32(&c->r, &mode) < 0 ||
	    rd_u32(&c->r, &gid) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0)
		goto out;
	if (f->ofd >= 0) {
		e = -EBUSY;
		goto out;
	}
	if (!(np = path_join(f->path, name))) {
		e = -ENAMETOOLONG;
		goto out;
	}
	/* An existing device or FIFO of that name is not opened at all (a
	 * FIFO would give ENXIO or hang, a device could act on the open);
	 * O_NONBLOCK and the check after the open cover a swap in between. */
	if (fstatat(f->pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode) &&
	    !(flags & P9_DOTL_EXCL)) {
		e = S_ISDIR(st.st_mode) ? -EISDIR : S_ISLNK(st.st_mode) ? -ELOOP : -EPERM;
		goto out;
	}
	fd = openat(f->pfd, name, (open_flags(flags) & ~O_DIRECTORY) | O_CREAT |
		    O_NOFOLLOW | O_NONBLOCK, mode & 07777);
	if (fd < 0) {
		e = -errno;
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		e = -EPERM;
		goto out;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	chown_new(c, f->pfd, name, f->uid, gid);
	if ((pfd = openat(f->pfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
	    fstat(fd, &st) < 0) {
		e = -errno;
		goto out;
	}
	/* The fid now is the new file, open. */
	pthread_mutex_lock(&f->lock);
	close(f->pfd);
	free(f->path);
	f->pfd = pfd;
	f->ofd = fd;
	f->path = np;
	f->isdir = f->islink = 0;
	pthread_mutex_unlock(&f->lock);
	pfd = fd = -1;
	np = NULL;
	qid_from_stat(&st, &q);
	reply_begin(c);
	p9_qid(&c->w, &q);
	p9_u32(&c->w, c->s->msize - P9_IOHDR);
out:
	if (fd >= 0)
		close(fd);
	if (pfd >= 0)
		close(pfd);
	free(np);
	fid_put(c->s, f);
	return e;
}

static int op_read(struct ctx *c)
{
	struct fid *f;
	uint64_t off;
	uint32_t count;
	uint8_t *dst;
	ssize_t n;
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u64(&c->r, &off) < 0 || rd_u32(&c->r, &count) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if (count > c->s->msize - P9_IOHDR)
		count = c->s->msize - P9_IOHDR;
	reply_begin(c);
	p9_u32(&c->w, 0);
	if (!(dst = p9_reserve(&c->w, count))) {
		e = -ENOMEM;
		goto out;
	}
	if (f->xattr == 1) {
		pthread_mutex_lock(&f->lock);
		n = off >= f->xlen ? 0 : (ssize_t)(f->xlen - off < count ? f->xlen - off : count);
		if (n)
			memcpy(dst, f->xbuf + off, n);
		pthread_mutex_unlock(&f->lock);
	} else if (f->ofd < 0) {
		e = -EBADF;
		goto out;
	} else if (off > INT64_MAX) {
		e = -EINVAL;
		goto out;
	} else if ((n = pread(f->ofd, dst, count, (off_t)off)) < 0) {
		e = -errno;
		goto out;
	}
	/* Give back what was not read, and say how much was. */
	c->out->len -= count - n;
	put_le32(c->out->data + c->w.start + P9_HDR, (uint32_t)n);
out:
	fid_put(c->s, f);
	return e;
}

static int op_write(struct ctx *c)
{
	struct fid *f;
	uint64_t off;
	uint32_t count;
	const uint8_t *src;
	ssize_t n;
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u64(&c->r, &off) < 0 || rd_u32(&c->r, &count) < 0 ||
	    rd_bytes(&c->r, &src, count) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if (f->xattr == 2) {
		pthread_mutex_lock(&f->lock);
		if (off != f->xlen || count > f->xsize - f->xlen) {
			e = -EINVAL; /* in order, within the size announced */
		} else {
			memcpy(f->xbuf + f->xlen, src, count);
			f->xlen += count;
		}
		pthread_mutex_unlock(&f->lock);
		n = count;
	} else if (f->ofd < 0 || f->xattr) {
		e = -EBADF;
	} else if ((e = ro(c)) < 0) {
	} else if (off > INT64_MAX) {
		e = -EINVAL;
	} else if ((n = pwrite(f->ofd, src, count, (off_t)off)) < 0) {
		e = -errno;
	}
	if (!e) {
		reply_begin(c);
		p9_u32(&c->w, (uint32_t)n);
	}
out:
	fid_put(c->s, f);
	return e;
}

static int op_clunk(struct ctx *c, int remove)
{
	uint32_t id;
	struct fid *f;
	char pp[64];
	int e = 0;

	if (rd_u32(&c->r, &id) < 0)
		return -EBADMSG;
	if (!(f = fid_remove(c->s, id)))
		return -EBADF;
	if (remove) {
		/* Tremove clunks whatever happens. */
		if ((e = ro(c)) == 0) {
			char *parent = path_parent(f->path);
			int pd = !*f->path ? -EBUSY : parent ?
				 safe_openat(c->s->ex->rootfd, parent, O_PATH | O_DIRECTORY, 0) : -ENOMEM;
			if (pd < 0) {
				e = pd;
			} else {
				if (unlinkat(pd, path_base(f->path), f->isdir ? AT_REMOVEDIR : 0) < 0)
					e = -errno;
				close(pd);
			}
			free(parent);
		}
	} else if (f->xattr == 2) {
		/* An xattr being written is set when its fid goes. */
		pthread_mutex_lock(&f->lock);
		if (f->xlen != f->xsize) {
			e = -EINVAL;
		} else {
			proc_path(f->pfd, pp, sizeof(pp));
			if (f->xsize == 0 && (f->xflags & XATTR_REPLACE)
				    ? removexattr(pp, f->xname) < 0
				    : setxattr(pp, f->xname, f->xbuf, f->xsize, f->xflags) < 0)
				e = -errno;
		}
		pthread_mutex_unlock(&f->lock);
	}
	fid_put(c->s, f);
	if (!e)
		reply_begin(c);
	return e;
}

static int op_getattr(struct ctx *c)
{
	struct fid *f;
	uint64_t mask;
	struct stat st;
	struct p9_qid q;
	struct p9_attr a = { 0 };
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u64(&c->r, &mask) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if ((e = fd_stat(f->pfd, &st)) < 0)
		goto out;
	qid_from_stat(&st, &q);
	a.mode = st.st_mode;
	a.uid = c->s->ex->map == P9_MAP_PASSTHROUGH ? st.st_uid : f->uid;
	a.gid = c->s->ex->map == P9_MAP_PASSTHROUGH ? st.st_gid : f->uid;
	a.nlink = st.st_nlink;
	a.rdev = st.st_rdev;
	a.size = st.st_size;
	a.blksize = st.st_blksize;
	a.blocks = st.st_blocks;
	a.atime_sec = st.st_atim.tv_sec;
	a.atime_nsec = st.st_atim.tv_nsec;
	a.mtime_sec = st.st_mtim.tv_sec;
	a.mtime_nsec = st.st_mtim.tv_nsec;
	a.ctime_sec = st.st_ctim.tv_sec;
	a.ctime_nsec = st.st_ctim.tv_nsec;
	reply_begin(c);
	p9_u64(&c->w, P9_GETATTR_BASIC);
	p9_qid(&c->w, &q);
	p9_attr(&c->w, &a);
out:
	fid_put(c->s, f);
	return e;
}

static int chmod_fid(struct fid *f, mode_t mode)
{
	char pp[64];
	if (f->islink)
		return -EOPNOTSUPP;
#ifdef SYS_fchmodat2
	if (syscall(SYS_fchmodat2, f->pfd, "", mode, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != ENOSYS && errno != EINVAL)
		return -errno;
#endif
	proc_path(f->pfd, pp, sizeof(pp));
	return chmod(pp, mode) < 0 ? -errno : 0;
}

static struct timespec set_time(uint32_t valid, uint32_t bit, uint32_t setbit,
				uint64_t sec, uint64_t nsec)
{
	struct timespec t = { .tv_nsec = UTIME_OMIT };
	if (valid & bit) {
		if (valid & setbit) {
			t.tv_sec = (time_t)sec;
			t.tv_nsec = (long)(nsec < 1000000000 ? nsec : 999999999);
		} else {
			t.tv_nsec = UTIME_NOW;
		}
	}
	return t;
}

static int op_setattr(struct ctx *c)
{
	struct fid *f;
	struct p9_setattr sa;
	char pp[64];
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (p9_get_setattr(&c->r, &sa) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0 || f->xattr) {
		e = e ? e : -EBADF;
		goto out;
	}
	if ((sa.valid & P9_SETATTR_MODE) && (e = chmod_fid(f, sa.mode & 07777)) < 0)
		goto out;
	if (sa.valid & (P9_SETATTR_UID | P9_SETATTR_GID)) {
		uid_t u = sa.valid & P9_SETATTR_UID ? sa.uid : (uid_t)-1;
		gid_t g = sa.valid & P9_SETATTR_GID ? sa.gid : (gid_t)-1;
		if (c->s->ex->map != P9_MAP_PASSTHROUGH) {
			/* Ids are the mounter's view: nothing to change. */
			if ((u != (uid_t)-1 && u != f->uid) || (g != (gid_t)-1 && g != f->uid)) {
				e = -EPERM;
				goto out;
			}
		} else if (fchownat(f->pfd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
			e = -errno;
			goto out;
		}
	}
	if (sa.valid & P9_SETATTR_SIZE) {
		if (sa.size > INT64_MAX) {
			e = -EFBIG;
			goto out;
		}
		if (f->isdir || f->islink) {
			e = f->isdir ? -EISDIR : -EINVAL;
			goto out;
		}
		if (f->ofd >= 0 && (fcntl(f->ofd, F_GETFL) & O_ACCMODE) != O_RDONLY) {
			if (ftruncate(f->ofd, (off_t)sa.size) < 0) {
				e = -errno;
				goto out;
			}
		} else {
			int fd = reopen(c->s, f, O_WRONLY | O_CLOEXEC);
			if (fd < 0) {
				e = fd;
				goto out;
			}
			e = ftruncate(fd, (off_t)sa.size) < 0 ? -errno : 0;
			close(fd);
			if (e)
				goto out;
		}
	}
	if (sa.valid & (P9_SETATTR_ATIME | P9_SETATTR_MTIME)) {
		struct timespec ts[2] = {
			set_time(sa.valid, P9_SETATTR_ATIME, P9_SETATTR_ATIME_SET,
				 sa.atime_sec, sa.atime_nsec),
			set_time(sa.valid, P9_SETATTR_MTIME, P9_SETATTR_MTIME_SET,
				 sa.mtime_sec, sa.mtime_nsec),
		};
		if (utimensat(f->pfd, "", ts, AT_EMPTY_PATH) < 0) {
			/* Older kernels: through /proc, for all but links. */
			proc_path(f->pfd, pp, sizeof(pp));
			if (f->islink || utimensat(AT_FDCWD, pp, ts, 0) < 0) {
				e = -errno;
				goto out;
			}
		}
	}
	reply_begin(c);
out:
	fid_put(c->s, f);
	return e;
}

static int op_readdir(struct ctx *c)
{
	struct fid *f;
	uint64_t off;
	uint32_t count;
	uint8_t *tmp = NULL;
	size_t used = 0, cpos;
	long n;
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u64(&c->r, &off) < 0 || rd_u32(&c->r, &count) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if (f->ofd < 0 || !f->isdir) {
		e = f->ofd < 0 ? -EBADF : -ENOTDIR;
		goto out;
	}
	if (count > c->s->msize - P9_IOHDR)
		count = c->s->msize - P9_IOHDR;
	if (!(tmp = malloc(count + 512))) {
		e = -ENOMEM;
		goto out;
	}
	reply_begin(c);
	cpos = c->out->len;
	p9_u32(&c->w, 0);
	pthread_mutex_lock(&f->lock);
	/* Stateless: the client's offset is the cookie of the entry before. */
	if (off > INT64_MAX || lseek(f->ofd, (off_t)off, SEEK_SET) < 0) {
		e = -EINVAL;
	} else if ((n = syscall(SYS_getdents64, f->ofd, tmp, count + 512)) < 0) {
		e = -errno;
	} else {
		for (long pos = 0; pos < n;) {
			struct {
				uint64_t ino;
				int64_t off;
				uint16_t reclen;
				uint8_t type;
				char name[];
			} *d = (void *)(tmp + pos);
			size_t nl = strlen(d->name);
			size_t need = 13 + 8 + 1 + 2 + nl;
			struct p9_qid q = {
				.type = d->type == DT_DIR ? P9_QTDIR :
					d->type == DT_LNK ? P9_QTSYMLINK : P9_QTFILE,
				.path = d->ino,
			};
			if (used + need > count)
				break;
			p9_qid(&c->w, &q);
			p9_u64(&c->w, (uint64_t)d->off);
			p9_u8(&c->w, d->type);
			p9_str(&c->w, d->name, nl);
			used += need;
			pos += d->reclen;
		}
	}
	pthread_mutex_unlock(&f->lock);
	if (!e && !c->w.err)
		put_le32(c->out->data + cpos, (uint32_t)used);
out:
	free(tmp);
	fid_put(c->s, f);
	return e;
}

static int op_mkdir(struct ctx *c)
{
	struct fid *f;
	char name[NAME_MAX + 1];
	uint32_t mode, gid;
	int e;

	if ((e = get_dir_fid(c, &f)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0)
		goto out;
	if (rd_u32(&c->r, &mode) < 0 || rd_u32(&c->r, &gid) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0)
		goto out;
	if (mkdirat(f->pfd, name, mode & 07777) < 0) {
		e = -errno;
		goto out;
	}
	chown_new(c, f->pfd, name, f->uid, gid);
	e = reply_qid_of(c, f->pfd, name);
out:
	fid_put(c->s, f);
	return e;
}

static int op_symlink(struct ctx *c)
{
	struct fid *f;
	char name[NAME_MAX + 1], target[PATH_MAX];
	uint32_t gid;
	int e;

	if ((e = get_dir_fid(c, &f)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0)
		goto out;
	if ((e = p9_get_cstr(&c->r, target, sizeof(target))) < 0 ||
	    rd_u32(&c->r, &gid) < 0) {
		e = e == -ENAMETOOLONG ? e : -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0)
		goto out;
	/* The target is only ever stored: the server never follows it. */
	if (!*target) {
		e = -ENOENT;
		goto out;
	}
	if (symlinkat(target, f->pfd, name) < 0) {
		e = -errno;
		goto out;
	}
	chown_new(c, f->pfd, name, f->uid, gid);
	e = reply_qid_of(c, f->pfd, name);
out:
	fid_put(c->s, f);
	return e;
}

static int op_mknod(struct ctx *c)
{
	struct fid *f;
	char name[NAME_MAX + 1];
	uint32_t mode, major, minor, gid;
	int e;

	if ((e = get_dir_fid(c, &f)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0)
		goto out;
	if (rd_u32(&c->r, &mode) < 0 || rd_u32(&c->r, &major) < 0 ||
	    rd_u32(&c->r, &minor) < 0 || rd_u32(&c->r, &gid) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0)
		goto out;
	/* A device node made by a client would open the server's devices. */
	if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode)) {
		e = -EPERM;
		goto out;
	}
	if (mknodat(f->pfd, name, mode & (S_IFMT | 07777), 0) < 0) {
		e = -errno;
		goto out;
	}
	chown_new(c, f->pfd, name, f->uid, gid);
	e = reply_qid_of(c, f->pfd, name);
out:
	fid_put(c->s, f);
	return e;
}

static int op_link(struct ctx *c)
{
	struct fid *d = NULL, *f = NULL;
	char name[NAME_MAX + 1], pp[64];
	int e;

	if ((e = get_dir_fid(c, &d)) < 0 || (e = get_fid(c, &f)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0 || (e = ro(c)) < 0)
		goto out;
	if (f->xattr || f->isdir) {
		e = -EPERM;
		goto out;
	}
	if (linkat(f->pfd, "", d->pfd, name, AT_EMPTY_PATH) < 0) {
		/* Without CAP_DAC_READ_SEARCH: through /proc. */
		proc_path(f->pfd, pp, sizeof(pp));
		if (errno != ENOENT && errno != EPERM)
			e = -errno;
		else if (linkat(AT_FDCWD, pp, d->pfd, name, AT_SYMLINK_FOLLOW) < 0)
			e = -errno;
	}
	if (!e)
		reply_begin(c);
out:
	fid_put(c->s, f);
	fid_put(c->s, d);
	return e;
}

static int op_readlink(struct ctx *c)
{
	struct fid *f;
	char target[PATH_MAX];
	ssize_t n;
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (!f->islink || f->xattr) {
		e = -EINVAL;
		goto out;
	}
	if ((n = readlinkat(f->pfd, "", target, sizeof(target))) < 0) {
		e = -errno;
		goto out;
	}
	reply_begin(c);
	p9_str(&c->w, target, (size_t)n);
out:
	fid_put(c->s, f);
	return e;
}

static int op_rename(struct ctx *c)
{
	struct fid *f = NULL, *d = NULL;
	char name[NAME_MAX + 1];
	char *parent = NULL, *np = NULL;
	int e, pd = -1;

	if ((e = get_fid(c, &f)) < 0 || (e = get_dir_fid(c, &d)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0 || (e = ro(c)) < 0)
		goto out;
	if (!*f->path || f->xattr) {
		e = -EBUSY;
		goto out;
	}
	if (!(parent = path_parent(f->path)) || !(np = path_join(d->path, name))) {
		e = -ENAMETOOLONG;
		goto out;
	}
	if ((pd = safe_openat(c->s->ex->rootfd, parent, O_PATH | O_DIRECTORY, 0)) < 0) {
		e = pd;
		goto out;
	}
	if (renameat(pd, path_base(f->path), d->pfd, name) < 0) {
		e = -errno;
		goto out;
	}
	pthread_mutex_lock(&f->lock);
	free(f->path);
	f->path = np;
	np = NULL;
	pthread_mutex_unlock(&f->lock);
	reply_begin(c);
out:
	if (pd >= 0)
		close(pd);
	free(parent);
	free(np);
	fid_put(c->s, d);
	fid_put(c->s, f);
	return e;
}

static int op_renameat(struct ctx *c)
{
	struct fid *od = NULL, *nd = NULL;
	char oname[NAME_MAX + 1], nname[NAME_MAX + 1];
	int e;

	if ((e = get_dir_fid(c, &od)) < 0 || (e = get_name(c, oname)) < 0 ||
	    (e = get_dir_fid(c, &nd)) < 0 || (e = get_name(c, nname)) < 0 ||
	    (e = ro(c)) < 0)
		goto out;
	if (renameat(od->pfd, oname, nd->pfd, nname) < 0)
		e = -errno;
	else
		reply_begin(c);
out:
	fid_put(c->s, nd);
	fid_put(c->s, od);
	return e;
}

static int op_unlinkat(struct ctx *c)
{
	struct fid *d;
	char name[NAME_MAX + 1];
	uint32_t flags;
	int e;

	if ((e = get_dir_fid(c, &d)) < 0)
		goto out;
	if ((e = get_name(c, name)) < 0)
		goto out;
	if (rd_u32(&c->r, &flags) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0)
		goto out;
	if (unlinkat(d->pfd, name, flags & P9_AT_REMOVEDIR ? AT_REMOVEDIR : 0) < 0)
		e = -errno;
	else
		reply_begin(c);
out:
	fid_put(c->s, d);
	return e;
}

static int op_fsync(struct ctx *c)
{
	struct fid *f;
	uint32_t datasync = 0;
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	/* Older clients send no datasync field. */
	if (rd_left(&c->r) >= 4)
		rd_u32(&c->r, &datasync);
	if (f->ofd < 0)
		e = -EBADF;
	else if ((datasync ? fdatasync(f->ofd) : fsync(f->ofd)) < 0)
		e = -errno;
	else
		reply_begin(c);
	fid_put(c->s, f);
	return e;
}

static int op_statfs(struct ctx *c)
{
	struct fid *f;
	struct statfs sf;
	struct p9_statfs s = { 0 };
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (fstatfs(f->pfd >= 0 ? f->pfd : c->s->ex->rootfd, &sf) < 0) {
		e = -errno;
		goto out;
	}
	s.type = V9FS_MAGIC;
	s.bsize = sf.f_bsize;
	s.blocks = sf.f_blocks;
	s.bfree = sf.f_bfree;
	s.bavail = sf.f_bavail;
	s.files = sf.f_files;
	s.ffree = sf.f_ffree;
	memcpy(&s.fsid, &sf.f_fsid, sizeof(s.fsid) < sizeof(sf.f_fsid) ?
	       sizeof(s.fsid) : sizeof(sf.f_fsid));
	s.namelen = sf.f_namelen;
	reply_begin(c);
	p9_statfs(&c->w, &s);
out:
	fid_put(c->s, f);
	return e;
}

static int op_xattrwalk(struct ctx *c)
{
	struct fid *f, *nf = NULL;
	uint32_t newfid;
	char name[XATTR_NAME_MAX + 1], pp[64];
	uint8_t *buf = NULL;
	ssize_t n;
	int e, pfd = -1;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u32(&c->r, &newfid) < 0 ||
	    (e = p9_get_cstr(&c->r, name, sizeof(name))) < 0) {
		e = e == -ENAMETOOLONG ? -ERANGE : -EBADMSG;
		goto out;
	}
	if (f->xattr) {
		e = -EBADF;
		goto out;
	}
	proc_path(f->pfd, pp, sizeof(pp));
	/* Size, then value: it may change in between, so retry once. */
	for (int tries = 0; tries < 2; tries++) {
		n = *name ? getxattr(pp, name, NULL, 0) : listxattr(pp, NULL, 0);
		if (n < 0) {
			e = -errno;
			goto out;
		}
		if (n > (ssize_t)P9_SRV_MAX_XATTR) {
			e = -E2BIG;
			goto out;
		}
		free(buf);
		if (!(buf = malloc(n ? n : 1))) {
			e = -ENOMEM;
			goto out;
		}
		n = *name ? getxattr(pp, name, buf, n) : listxattr(pp, (char *)buf, n);
		if (n >= 0 || errno != ERANGE)
			break;
	}
	if (n < 0) {
		e = -errno;
		goto out;
	}
	if ((pfd = fcntl(f->pfd, F_DUPFD_CLOEXEC, 0)) < 0) {
		e = -errno;
		goto out;
	}
	char *path = strdup(f->path);
	if (!path || !(nf = fid_new(newfid, pfd, path, f->uid))) {
		free(path);
		e = -ENOMEM;
		goto out;
	}
	pfd = -1;
	nf->xattr = 1;
	nf->xbuf = buf;
	nf->xlen = nf->xsize = (size_t)n;
	buf = NULL;
	if ((e = fid_insert(c->s, nf)) < 0) {
		fid_destroy(nf);
		goto out;
	}
	reply_begin(c);
	p9_u64(&c->w, (uint64_t)n);
out:
	if (pfd >= 0)
		close(pfd);
	free(buf);
	fid_put(c->s, f);
	return e;
}

static int op_xattrcreate(struct ctx *c)
{
	struct fid *f;
	char name[XATTR_NAME_MAX + 1];
	uint64_t size;
	uint32_t flags;
	int e;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if ((e = p9_get_cstr(&c->r, name, sizeof(name))) < 0 ||
	    rd_u64(&c->r, &size) < 0 || rd_u32(&c->r, &flags) < 0) {
		e = e == -ENAMETOOLONG ? -ERANGE : -EBADMSG;
		goto out;
	}
	if ((e = ro(c)) < 0)
		goto out;
	if (!*name || size > P9_SRV_MAX_XATTR || (flags & ~(XATTR_CREATE | XATTR_REPLACE))) {
		e = *name ? (size > P9_SRV_MAX_XATTR ? -E2BIG : -EINVAL) : -EINVAL;
		goto out;
	}
	pthread_mutex_lock(&f->lock);
	if (f->xattr || f->ofd >= 0) {
		e = -EBUSY;
	} else if (!(f->xname = strdup(name)) || !(f->xbuf = malloc(size ? size : 1))) {
		free(f->xname);
		f->xname = NULL;
		e = -ENOMEM;
	} else {
		f->xattr = 2;
		f->xsize = size;
		f->xlen = 0;
		f->xflags = (int)flags;
	}
	pthread_mutex_unlock(&f->lock);
	if (!e)
		reply_begin(c);
out:
	fid_put(c->s, f);
	return e;
}

static int lock_type(uint8_t t)
{
	return t == P9_LOCK_TYPE_RDLCK ? F_RDLCK : t == P9_LOCK_TYPE_WRLCK ? F_WRLCK :
	       t == P9_LOCK_TYPE_UNLCK ? F_UNLCK : -1;
}

static int op_lock(struct ctx *c, int get)
{
	struct fid *f;
	uint8_t type;
	uint32_t flags = 0, proc_id;
	uint64_t start, length;
	const char *client;
	uint16_t clen;
	struct flock fl = { 0 };
	int e, status = P9_LOCK_SUCCESS;

	if ((e = get_fid(c, &f)) < 0)
		return e;
	if (rd_u8(&c->r, &type) < 0 || (!get && rd_u32(&c->r, &flags) < 0) ||
	    rd_u64(&c->r, &start) < 0 || rd_u64(&c->r, &length) < 0 ||
	    rd_u32(&c->r, &proc_id) < 0 || p9_get_str(&c->r, &client, &clen) < 0) {
		e = -EBADMSG;
		goto out;
	}
	if (f->ofd < 0 || lock_type(type) < 0 || start > INT64_MAX || length > INT64_MAX) {
		e = f->ofd < 0 ? -EBADF : -EINVAL;
		goto out;
	}
	fl.l_type = (short)lock_type(type);
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)start;
	fl.l_len = (off_t)length;
	/* Open file description locks: owned by this fid's open file, never
	 * blocking a worker; a client that wants to wait polls. */
	if (fcntl(f->ofd, get ? F_OFD_GETLK : F_OFD_SETLK, &fl) < 0) {
		if (get || (errno != EAGAIN && errno != EACCES)) {
			e = -errno;
			goto out;
		}
		status = P9_LOCK_BLOCKED;
	}
	reply_begin(c);
	if (!get) {
		p9_u8(&c->w, (uint8_t)status);
	} else {
		p9_u8(&c->w, fl.l_type == F_RDLCK ? P9_LOCK_TYPE_RDLCK :
			     fl.l_type == F_WRLCK ? P9_LOCK_TYPE_WRLCK : P9_LOCK_TYPE_UNLCK);
		p9_u64(&c->w, (uint64_t)fl.l_start);
		p9_u64(&c->w, (uint64_t)fl.l_len);
		p9_u32(&c->w, fl.l_type == F_UNLCK ? proc_id : (uint32_t)fl.l_pid);
		p9_str(&c->w, client, clen);
	}
out:
	fid_put(c->s, f);
	return e;
}

/* Runs one request; the reply (or Rlerror) is left in out. */
static void handle(struct session *s, struct req *q, struct buf *out)
{
	struct ctx c = { .s = s, .out = out, .tag = q->tag, .type = q->type };
	int e;

	rd_init(&c.r, q->data + P9_HDR, q->len - P9_HDR);
	c.w.b = out;
	c.w.start = out->len;
	switch (q->type) {
	case P9_TATTACH: e = op_attach(&c); break;
	case P9_TWALK: e = op_walk(&c); break;
	case P9_TLOPEN: e = op_lopen(&c); break;
	case P9_TLCREATE: e = op_lcreate(&c); break;
	case P9_TREAD: e = op_read(&c); break;
	case P9_TWRITE: e = op_write(&c); break;
	case P9_TCLUNK: e = op_clunk(&c, 0); break;
	case P9_TREMOVE: e = op_clunk(&c, 1); break;
	case P9_TGETATTR: e = op_getattr(&c); break;
	case P9_TSETATTR: e = op_setattr(&c); break;
	case P9_TREADDIR: e = op_readdir(&c); break;
	case P9_TMKDIR: e = op_mkdir(&c); break;
	case P9_TSYMLINK: e = op_symlink(&c); break;
	case P9_TMKNOD: e = op_mknod(&c); break;
	case P9_TLINK: e = op_link(&c); break;
	case P9_TREADLINK: e = op_readlink(&c); break;
	case P9_TRENAME: e = op_rename(&c); break;
	case P9_TRENAMEAT: e = op_renameat(&c); break;
	case P9_TUNLINKAT: e = op_unlinkat(&c); break;
	case P9_TFSYNC: e = op_fsync(&c); break;
	case P9_TSTATFS: e = op_statfs(&c); break;
	case P9_TXATTRWALK: e = op_xattrwalk(&c); break;
	case P9_TXATTRCREATE: e = op_xattrcreate(&c); break;
	case P9_TLOCK: e = op_lock(&c, 0); break;
	case P9_TGETLOCK: e = op_lock(&c, 1); break;
	/* No authentication in 9p itself (the transport did it): ENOENT is
	 * how servers say "none required" (diod's clients rely on it). */
	case P9_TAUTH: e = -ENOENT; break;
	default: e = -EOPNOTSUPP; break;
	}
	if (e == 0 && c.w.b == out && out->len > c.w.start)
		e = p9_end(&c.w, s->msize);
	else if (e == 0)
		e = -EIO; /* an operation that forgot its reply */
	if (e < 0) {
		out->len = c.w.start;
		if (e == -EMSGSIZE)
			e = -ENOBUFS;
		p9_put_lerror(out, q->tag, e);
	}
}

/* --- the session ---------------------------------------------------- */

/*
 * Sends a request's reply and frees its tag. The tag is free before the
 * reply leaves (the client may reuse it the moment it reads the reply),
 * and the write lock is held throughout, so that a Tflush for it that
 * comes in meanwhile is answered only after the reply, and flushes that
 * waited for it right after.
 */
static void reply_and_finish(struct session *s, struct buf *out, uint16_t tag)
{
	struct flushwait *done = NULL;

	pthread_mutex_lock(&s->wlock);
	pthread_mutex_lock(&s->lock);
	tag_set(s, tag, 0);
	for (struct flushwait **p = &s->flushes; *p;) {
		struct flushwait *fw = *p;
		if (fw->oldtag == tag) {
			*p = fw->next;
			fw->next = done;
			done = fw;
			/* The Tflush's own tag is answered here too. */
			tag_set(s, fw->tag, 0);
			s->inflight--;
		} else {
			p = &fw->next;
		}
	}
	s->inflight--;
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	if (!s->broken && out && io_write_all(s->fd, buf_head(out), buf_avail(out)) < 0)
		s->broken = 1;
	while (done) {
		struct flushwait *fw = done;
		struct buf b;
		struct p9_wr w;
		done = fw->next;
		buf_init(&b);
		p9_begin(&w, &b, P9_RFLUSH, fw->tag);
		if (p9_end(&w, s->msize) == 0 && !s->broken &&
		    io_write_all(s->fd, buf_head(&b), buf_avail(&b)) < 0)
			s->broken = 1;
		buf_free(&b);
		free(fw);
	}
	pthread_mutex_unlock(&s->wlock);
}

/*
 * Requests on one fid keep their order where it matters: a request that
 * names a fid waits for every earlier request that makes or changes
 * that fid (Tattach, Twalk's newfid, Txattrwalk's newfid, Tlopen,
 * Tlcreate, Txattrcreate, Tclunk, Tremove) or writes through it
 * (Twrite: so that writes sent back to back land in order, and a read
 * or fsync after them sees them) to finish; and a Tclunk or Tremove
 * waits for every earlier request naming its fid, so that Txattrwalk,
 * Tread and Tclunk of one fid may go together. So a client may
 * send Twalk(newfid) and Tgetattr(newfid) together and get both
 * answers in one round trip. Everything else still runs at once. A
 * request only ever waits for earlier ones, which the FIFO queue has
 * handed to workers already: no deadlock.
 */
static void req_order(struct req *q)
{
	struct rd r;
	uint32_t f0 = P9_NOFID, f1 = P9_NOFID;
	const char *s;
	uint16_t n;

	q->nfids = 0;
	q->barrier = 0;
	q->ends_fid = q->type == P9_TCLUNK || q->type == P9_TREMOVE;
	rd_init(&r, q->data + P9_HDR, q->len - P9_HDR);
	if (rd_u32(&r, &f0) < 0)
		return;
	q->fids[q->nfids++] = f0;
	switch (q->type) {
	case P9_TWALK:
	case P9_TXATTRWALK:
		/* fid, newfid: the new one is made (or fid changed). */
		if (rd_u32(&r, &f1) == 0) {
			q->fids[q->nfids] = f1;
			q->barrier |= 1u << q->nfids++;
		}
		break;
	case P9_TLINK:
	case P9_TRENAME:
		if (rd_u32(&r, &f1) == 0)
			q->fids[q->nfids++] = f1;
		break;
	case P9_TRENAMEAT:
		if (p9_get_str(&r, &s, &n) == 0 && rd_u32(&r, &f1) == 0)
			q->fids[q->nfids++] = f1;
		break;
	case P9_TATTACH:
	case P9_TWRITE:
	case P9_TLOPEN:
	case P9_TLCREATE:
	case P9_TXATTRCREATE:
	case P9_TCLUNK:
	case P9_TREMOVE:
		q->barrier |= 1;
		break;
	}
}

/* Whether an earlier unfinished request makes or changes a fid q names
 * (under s->lock). */
static int req_must_wait(struct session *s, const struct req *q)
{
	for (const struct req *b = s->barriers; b; b = b->bnext) {
		if (b->seq >= q->seq)
			continue;
		for (int i = 0; i < b->nfids; i++) {
			if (q->ends_fid && q->nfids && b->fids[i] == q->fids[0])
				return 1;
			if (!(b->barrier & (1u << i)))
				continue;
			for (int k = 0; k < q->nfids; k++)
				if (q->fids[k] == b->fids[i])
					return 1;
		}
	}
	return 0;
}

static void req_done_order(struct session *s, struct req *q)
{
	pthread_mutex_lock(&s->lock);
	for (struct req **p = &s->barriers; *p; p = &(*p)->bnext) {
		if (*p == q) {
			*p = q->bnext;
			break;
		}
	}
	pthread_cond_broadcast(&s->order);
	pthread_mutex_unlock(&s->lock);
}

static void *worker(void *arg)
{
	struct session *s = arg;
	struct buf out;

	buf_init(&out);
	for (;;) {
		pthread_mutex_lock(&s->lock);
		while (!s->head && !s->quit)
			pthread_cond_wait(&s->work, &s->lock);
		if (!s->head) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		struct req *q = s->head;
		s->head = q->next;
		if (!s->head)
			s->tail = NULL;
		while (req_must_wait(s, q))
			pthread_cond_wait(&s->order, &s->lock);
		pthread_mutex_unlock(&s->lock);

		buf_reset(&out);
		handle(s, q, &out);
		req_done_order(s, q);
		reply_and_finish(s, &out, q->tag);
		free(q);
		/* A large read's buffer is not kept around idle. */
		if (out.cap > (256u << 10))
			buf_free(&out);
	}
	buf_free(&out);
	return NULL;
}

static void wait_idle(struct session *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->inflight)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static int do_version(struct session *s, struct req *q)
{
	struct rd r;
	uint32_t msize;
	const char *v;
	uint16_t vn;
	struct buf out;
	struct p9_wr w;
	int ok;

	rd_init(&r, q->data + P9_HDR, q->len - P9_HDR);
	if (rd_u32(&r, &msize) < 0 || p9_get_str(&r, &v, &vn) < 0)
		return -EBADMSG;
	/* A new version aborts everything: wait for what runs, then start
	 * over with no fids. */
	wait_idle(s);
	fids_clear(s);
	ok = vn >= 8 && !memcmp(v, P9_VERSION, 8) && msize >= P9_MIN_MSIZE;
	if (ok)
		s->msize = msize < P9_MAX_MSIZE ? msize : P9_MAX_MSIZE;
	s->versioned = ok;
	buf_init(&out);
	p9_begin(&w, &out, P9_RVERSION, q->tag);
	p9_u32(&w, s->msize);
	p9_cstr(&w, ok ? P9_VERSION : "unknown");
	if (p9_end(&w, UINT32_MAX) == 0)
		send_buf(s, &out);
	buf_free(&out);
	return 0;
}

/* Tflush: answered at once unless its request still runs. */
static int do_flush(struct session *s, struct req *q)
{
	struct rd r;
	uint16_t old;
	struct flushwait *fw;

	rd_init(&r, q->data + P9_HDR, q->len - P9_HDR);
	if (rd_u16(&r, &old) < 0)
		return -EBADMSG;
	pthread_mutex_lock(&s->lock);
	if (old != q->tag && tag_busy(s, old) && (fw = calloc(1, sizeof(*fw)))) {
		fw->oldtag = old;
		fw->tag = q->tag;
		fw->next = s->flushes;
		s->flushes = fw;
		/* Its tag stays busy until it is answered. */
		tag_set(s, q->tag, 1);
		s->inflight++;
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	send_rflush(s, q->tag);
	return 0;
}

static int read_request(struct session *s, struct req **out)
{
	uint8_t hdr[P9_HDR];
	uint32_t size;
	struct req *q;
	int e;

	if ((e = io_read_all(s->fd, hdr, sizeof(hdr))) < 0)
		return e;
	size = get_le32(hdr);
	if (size < P9_HDR || size > s->msize) {
		log_info("9p: message of %u bytes (msize %u); closing the session",
			 size, s->msize);
		return -EMSGSIZE;
	}
	if (!(q = malloc(sizeof(*q) + size)))
		return -ENOMEM;
	memcpy(q->data, hdr, sizeof(hdr));
	if ((e = io_read_all(s->fd, q->data + P9_HDR, size - P9_HDR)) < 0) {
		free(q);
		return e;
	}
	q->len = size;
	q->type = hdr[4];
	q->tag = (uint16_t)(hdr[5] | hdr[6] << 8);
	q->next = NULL;
	*out = q;
	return 0;
}

static struct session *session_new(const struct p9_export *ex, int fd)
{
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->ex = ex;
	s->fd = fd;
	s->msize = PRE_VERSION_MSIZE;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->wlock, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->idle, NULL);
	pthread_cond_init(&s->order, NULL);
	return s;
}

static void session_free(struct session *s)
{
	while (s->flushes) {
		struct flushwait *fw = s->flushes;
		s->flushes = fw->next;
		free(fw);
	}
	fids_clear(s);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->wlock);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->idle);
	pthread_cond_destroy(&s->order);
	free(s);
}

int p9_serve(const struct p9_export *ex, int fd)
{
	struct session *s = session_new(ex, fd);
	struct req *q;
	int e = 0;

	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	for (int i = 0; i < P9_SRV_WORKERS; i++) {
		if (pthread_create(&s->workers[i], NULL, worker, s) != 0)
			break;
		s->nworkers++;
	}
	if (!s->nworkers) {
		e = -EAGAIN;
		goto done;
	}
	while (!s->broken && (e = read_request(s, &q)) == 0) {
		if (q->type == P9_TVERSION) {
			e = do_version(s, q);
			free(q);
		} else if (!s->versioned) {
			log_info("9p: %s before Tversion; closing the session",
				 p9_type_name(q->type));
			free(q);
			e = -EPROTO;
		} else if (q->type == P9_TFLUSH) {
			e = do_flush(s, q);
			free(q);
		} else {
			pthread_mutex_lock(&s->lock);
			/* Bounded work per client: wait while it has many
			 * requests running. */
			while (s->inflight >= P9_SRV_MAX_INFLIGHT && !s->broken)
				pthread_cond_wait(&s->idle, &s->lock);
			if (tag_busy(s, q->tag)) {
				pthread_mutex_unlock(&s->lock);
				log_info("9p: tag %u reused while in flight; closing the session",
					 q->tag);
				free(q);
				e = -EPROTO;
				break;
			}
			tag_set(s, q->tag, 1);
			s->inflight++;
			q->seq = s->next_seq++;
			req_order(q);
			q->bnext = s->barriers;
			s->barriers = q;
			if (s->tail)
				s->tail->next = q;
			else
				s->head = q;
			s->tail = q;
			pthread_cond_signal(&s->work);
			pthread_mutex_unlock(&s->lock);
		}
		if (e < 0)
			break;
	}
	if (e == -ECONNRESET)
		e = 0; /* the client went */
done:
	/* Let queued requests run out (their replies may fail), then stop. */
	shutdown(fd, SHUT_RD);
	pthread_mutex_lock(&s->lock);
	s->quit = 1;
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i], NULL);
	close(fd);
	session_free(s);
	return e;
}

/* --- without threads, for tests and fuzzing ------------------------ */

struct p9_session *p9_session_new(const struct p9_export *ex)
{
	return (struct p9_session *)session_new(ex, -1);
}

int p9_session_feed(struct p9_session *ps, const uint8_t *msg, size_t len,
		    struct buf *out)
{
	struct session *s = (struct session *)ps;
	struct req *q;
	int e = 0;

	if (len < P9_HDR || get_le32(msg) != len || len > s->msize)
		return -EMSGSIZE;
	if (!(q = malloc(sizeof(*q) + len)))
		return -ENOMEM;
	memcpy(q->data, msg, len);
	q->len = len;
	q->type = msg[4];
	q->tag = (uint16_t)(msg[5] | msg[6] << 8);
	s->sync_out = out;
	if (q->type == P9_TVERSION)
		e = do_version(s, q);
	else if (!s->versioned)
		e = -EPROTO;
	else if (q->type == P9_TFLUSH)
		e = do_flush(s, q);
	else
		handle(s, q, out);
	s->sync_out = NULL;
	free(q);
	return e;
}

void p9_session_free(struct p9_session *ps)
{
	if (ps)
		session_free((struct session *)ps);
}

static void *serve_thread(void *arg)
{
	struct async { struct p9_export *ex; int fd; } a = *(struct async *)arg;
	free(arg);
	p9_serve(a.ex, a.fd);
	p9_export_unref(a.ex);
	return NULL;
}

int p9_serve_async(struct p9_export *ex, int fd)
{
	struct async { struct p9_export *ex; int fd; } *a = malloc(sizeof(*a));
	int e;

	if (!a) {
		close(fd);
		return -ENOMEM;
	}
	p9_export_ref(ex);
	a->ex = ex;
	a->fd = fd;
	if ((e = io_thread_detached(serve_thread, a)) < 0) {
		free(a);
		close(fd);
		p9_export_unref(ex);
		return e;
	}
	return 0;
}

struct p9_export *p9_export_new(const char *dir, int read_only, enum p9_idmap map,
				int *err)
{
	struct p9_export *ex = calloc(1, sizeof(*ex));
	if (!ex) {
		*err = -ENOMEM;
		return NULL;
	}
	if ((ex->rootfd = p9_export_open(dir)) < 0) {
		*err = ex->rootfd;
		free(ex);
		return NULL;
	}
	ex->read_only = read_only;
	ex->map = map;
	ex->refs = 1;
	return ex;
}

void p9_export_ref(struct p9_export *ex)
{
	__atomic_add_fetch(&ex->refs, 1, __ATOMIC_RELAXED);
}

void p9_export_unref(struct p9_export *ex)
{
	if (ex && __atomic_sub_fetch(&ex->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		close(ex->rootfd);
		free(ex);
	}
}

int p9_export_open(const char *dir)
{
	struct stat st;
	int fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
		close(fd);
		return -ENOTDIR;
	}
	return fd;
}
