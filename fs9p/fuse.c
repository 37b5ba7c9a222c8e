/*
 * The FUSE bridge (see fuse.h): libfuse's low-level API on one side, a
 * 9P2000.L client session (client.h) on the other.
 *
 * Inodes. Every inode the kernel knows (nodeid = the struct's address,
 * FUSE_ROOT_ID for the root) holds a fid walked to its file, and the
 * parent and name it was last reached by, so that it can be walked to
 * again on a new connection. Inodes are found again by qid.path, so a
 * file reached by two names is one inode. An inode lives while the
 * kernel holds lookups on it or something of ours (a child's parent
 * link, an open handle) refers to it.
 *
 * Connections. struct sess is one 9p connection; a call takes a
 * reference on the current one for as long as it uses it. A fid belongs
 * to the session it was walked in (gen): used with a later session, it
 * is walked again first. The first call that sees the connection broken
 * (ECONNRESET, or a reply that timed out) gives the session up and
 * asks for a new one; see op_session().
 *
 * Threads. The caller's thread runs the event loop: it reads requests
 * from /dev/fuse (non-blocking) into buffers of a bounded pool and
 * queues them; P9FUSE_WORKERS threads process them. When every buffer is
 * taken the loop stops reading /dev/fuse until a worker gives one back.
 */
#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs9p/client.h"
#include "fs9p/fuse.h"
#include "lib/log.h"
#include "lib/mountinfo.h"
#include "lib/loop.h"

/* How long the kernel may trust names and attributes without asking. */
#define CACHE_S 2.0
/* How long an absent xattr stays known to be absent: a listing's worth
 * (ls -l asks after it has read the whole directory). */
#define ABSENT_MS 10000
/* Requests read ahead of the workers: every buffer is ~1 MiB. */
#define QUEUE_MAX 16
/* Between two reconnect attempts that failed. */
#define RETRY_MS 1000
/* The most an attempt may take once the outage deadline has passed. */
#define LATE_ATTEMPT_MS 5000
#define HASH_BUCKETS 4096
/* Inodes that hold a fid at once, least recently used first to give it
 * up (it is walked to again by name when next used): the kernel may
 * know of far more files than a server keeps fids for (ours: 16384). */
#define MAX_INODE_FIDS 4096
/* Write-behind, on a server that keeps per-fid order: a write is
 * answered once sent, and its reply awaited meanwhile; at most this
 * much per open file is on its way. A failure is reported by the next
 * write, fsync or close of that file (as NFS does). */
#define WB_MAX_BYTES (8u << 20)
#define MAX_IO (1u << 20)

struct sess {
	struct p9c *c;
	unsigned gen;
	unsigned refs; /* calls using c, and 1 while it is the current one */
	uint32_t rootfid;
};

struct inode {
	struct inode *qnext; /* by qid.path */
	struct inode *nnext; /* by (parent, name), when named */
	uint64_t qpath;
	uint8_t qtype;
	uint64_t nlookup;     /* the kernel's references */
	unsigned refs;        /* children's parent links, open handles */
	struct inode *parent; /* with name: how to walk here again */
	char *name;
	pthread_mutex_t lock; /* fid, gen and epoch */
	uint32_t fid;
	unsigned gen;   /* session of fid; 0: none */
	unsigned epoch; /* pf->epoch when fid was walked */
	/* Until then (monotonic ms), the file is known to lack the
	 * extended attributes of the ASKED bits (see absent_*). */
	uint64_t absent_until;
	unsigned absent;
	struct inode *lru_prev, *lru_next; /* holding a fid of the current session */
	int on_lru;
	unsigned wpending; /* writes on their way (under pf->wlock) */
};

struct handle {
	struct handle *prev, *next; /* all open ones, freed at the end */
	struct inode *ino;
	pthread_mutex_t lock;
	uint32_t fid;
	unsigned gen;
	uint32_t flags; /* Tlopen flags, to open it again */
	/* Write-behind (under pf->wlock). */
	unsigned wcount;
	size_t wbytes;
	int werr;
};

/* A write on its way, for the completer thread to see answered. */
struct wb {
	struct wb *next;
	struct handle *h;
	struct sess *s;
	struct p9c_pending *p;
	uint32_t n;
};

struct qbuf {
	struct qbuf *next;
	struct fuse_buf fb;
};

struct pf {
	const struct p9fuse_config *cfg;
	struct fuse_session *se;
	struct loop *loop;
	uint32_t msize;
	unsigned timeout_ms;
	int raise_ra; /* INIT was answered: now readahead may be raised */
	int ra_fd;    /* the readahead's sysfs file until then, or -1 */

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cv;    /* the connection came back, or an attempt ended */
	struct sess *cur;     /* NULL while the connection is down */
	unsigned gen;
	int reconnecting, gone;
	uint64_t down_since, next_try;
	/* Bumped when fids may name the wrong file on a path-based server
	 * (diod keeps a path per fid: a rename leaves the fids below it
	 * stale); an inode walked in an earlier epoch is walked again. */
	unsigned epoch;
	/* Inodes holding a fid of the current session, most recent first;
	 * evictions counts fids taken back from them. */
	struct inode *lru_head, *lru_tail;
	unsigned nlru, evictions;
	struct handle *handles; /* open files and directories */

	/* Write-behind: writes on their way, oldest first. */
	pthread_mutex_t wlock;
	pthread_cond_t wcv; /* a write was answered, or queued */
	struct wb *whead, *wtail;
	int wquit;
	pthread_t completer;
	int has_completer;
	struct inode root;
	struct inode *byq[HASH_BUCKETS];
	struct inode *byname[HASH_BUCKETS];

	/* The request queue. */
	pthread_mutex_t qlock;
	pthread_cond_t qcv;
	struct qbuf *head, *tail, *free;
	unsigned nbufs, nqueued;
	int quit;
	int paused;   /* the loop stopped reading /dev/fuse: no buffer */
	int space_fd; /* eventfd: a buffer came back while paused */
	struct loop_watch *fuse_w;
	pthread_t workers[P9FUSE_WORKERS];
	int nworkers;
};


/*
 * Extended attributes asked for file after file and mostly absent: the
 * kernel asks for security.capability before every write, ls -l for
 * the SELinux label and the ACL of every file it lists. An absence seen
 * (ENODATA, a names list without it, a file just made) is kept for
 * ABSENT_MS; setting one here forgets it at once. Another client's
 * new ACL or label shows after that long at most.
 */
static const char *const asked_xattrs[] = {
	"security.capability", "security.selinux",
	"system.posix_acl_access", "system.posix_acl_default",
};
#define N_ASKED (sizeof(asked_xattrs) / sizeof(asked_xattrs[0]))
#define ALL_ASKED ((1u << N_ASKED) - 1)

static int asked_index(const char *name)
{
	for (unsigned i = 0; i < N_ASKED; i++)
		if (!strcmp(name, asked_xattrs[i]))
			return (int)i;
	return -1;
}

static int absent_known(struct inode *ino, int k)
{
	return k >= 0 && clock_mono_ms() < __atomic_load_n(&ino->absent_until, __ATOMIC_RELAXED) &&
	       (__atomic_load_n(&ino->absent, __ATOMIC_RELAXED) & (1u << k));
}

static void absent_note(struct inode *ino, unsigned bits)
{
	uint64_t now = clock_mono_ms();
	if (now >= __atomic_load_n(&ino->absent_until, __ATOMIC_RELAXED))
		__atomic_store_n(&ino->absent, bits, __ATOMIC_RELAXED);
	else
		__atomic_or_fetch(&ino->absent, bits, __ATOMIC_RELAXED);
	__atomic_store_n(&ino->absent_until, now + ABSENT_MS, __ATOMIC_RELAXED);
}

static void absent_forget(struct inode *ino, int k)
{
	if (k >= 0)
		__atomic_and_fetch(&ino->absent, ~(1u << k), __ATOMIC_RELAXED);
}

/* The asked-for names a NUL-separated names list lacks. */
static unsigned absent_from_list(const char *list, size_t len)
{
	unsigned bits = ALL_ASKED;
	for (size_t off = 0; off < len;) {
		const char *name = list + off;
		size_t n = strnlen(name, len - off);
		int k = asked_index(name);
		if (k >= 0 && n < len - off)
			bits &= ~(1u << k);
		off += n + 1;
	}
	return bits;
}

/* --- sessions ------------------------------------------------------ */

static void sess_put_locked(struct pf *pf, struct sess *s, struct sess **closeme)
{
	if (--s->refs == 0)
		*closeme = s;
}

/* Drops a reference; the last one closes the connection (outside the
 * lock: p9c_close waits for its reader). */
static void sess_put(struct pf *pf, struct sess *s)
{
	struct sess *closeme = NULL;
	pthread_mutex_lock(&pf->lock);
	sess_put_locked(pf, s, &closeme);
	pthread_mutex_unlock(&pf->lock);
	if (closeme) {
		p9c_close(closeme->c);
		free(closeme);
	}
}

/* s broke: no new call uses it, and every call on it fails now. */
static void sess_broken(struct pf *pf, struct sess *s)
{
	struct sess *closeme = NULL;
	int was_cur;

	pthread_mutex_lock(&pf->lock);
	was_cur = pf->cur == s;
	if (was_cur) {
		pf->cur = NULL;
		pf->down_since = clock_mono_ms();
		sess_put_locked(pf, s, &closeme);
	}
	pthread_mutex_unlock(&pf->lock);
	if (was_cur) {
		log_warn("fuse %s: the 9p connection broke; reconnecting", pf->cfg->mountpoint);
		p9c_abort(s->c);
	}
	if (closeme) {
		p9c_close(closeme->c);
		free(closeme);
	}
}

/* A session on fd: version, attach. Takes fd. */
static int sess_open(struct pf *pf, int fd, struct sess **out)
{
	struct sess *s = calloc(1, sizeof(*s));
	struct p9_qid q;
	char uname[16];
	int e;

	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	if ((e = p9c_open(fd, P9_MAX_MSIZE, &s->c)) < 0) {
		close(fd);
		free(s);
		return e;
	}
	snprintf(uname, sizeof(uname), "%u", pf->cfg->uid);
	if ((e = p9c_fid_alloc(s->c, &s->rootfid)) < 0 ||
	    (e = p9c_attach(s->c, s->rootfid, P9_NOFID, uname,
				pf->cfg->aname ? pf->cfg->aname : "", pf->cfg->uid, &q)) < 0) {
		p9c_close(s->c);
		free(s);
		return e;
	}
	p9c_set_timeout(s->c, pf->timeout_ms);
	p9c_set_ordered(s->c, pf->cfg->ordered);
	s->refs = 1;
	*out = s;
	return 0;
}

/* Makes s the current session. */
static void lru_clear_locked(struct pf *pf);

static void sess_install(struct pf *pf, struct sess *s)
{
	pthread_mutex_lock(&pf->lock);
	lru_clear_locked(pf); /* fids of the old session count no more */
	s->gen = ++pf->gen;
	pf->cur = s;
	pthread_cond_broadcast(&pf->cv);
	pthread_mutex_unlock(&pf->lock);
}

/* --- one request's use of the connection --------------------------- */

struct op {
	struct pf *pf;
	struct sess *s;
	struct p9c *c;
	unsigned epoch; /* when the attempt began */
	unsigned evictions;
};

static unsigned epoch_now(struct pf *pf)
{
	return __atomic_load_n(&pf->epoch, __ATOMIC_ACQUIRE);
}

/* ino's fid can be used on o's session (under ino->lock). */
static int ino_fid_current(struct op *o, const struct inode *ino)
{
	return ino->gen == o->s->gen && ino->epoch == epoch_now(o->pf);
}

/* One attempt at a new connection, with pf->lock held on entry and exit
 * (dropped meanwhile). */
static void reconnect_locked(struct pf *pf, uint64_t deadline)
{
	struct sess *s = NULL;
	int fd, e;

	pf->reconnecting = 1;
	pthread_mutex_unlock(&pf->lock);
	fd = pf->cfg->reconnect ? pf->cfg->reconnect(pf->cfg->arg, deadline) : -EPIPE;
	e = fd < 0 ? fd : sess_open(pf, fd, &s);
	if (e == 0) {
		log_info("fuse %s: reconnected", pf->cfg->mountpoint);
		sess_install(pf, s);
	} else {
		log_warn("fuse %s: reconnecting failed: %s", pf->cfg->mountpoint, strerror(-e));
	}
	pthread_mutex_lock(&pf->lock);
	pf->reconnecting = 0;
	if (e == -EPIPE) {
		pf->gone = 1;
		fuse_session_exit(pf->se);
	}
	pf->next_try = clock_mono_ms() + RETRY_MS;
	pthread_cond_broadcast(&pf->cv);
}

/*
 * A reference on a live session for o, waiting for the connection to
 * come back if it is down: until the outage is timeout_ms old. Later
 * calls fail at once with EIO, but for one attempt every RETRY_MS.
 */
static int op_session(struct op *o)
{
	struct pf *pf = o->pf;
	int e = 0, late_tried = 0;

	pthread_mutex_lock(&pf->lock);
	for (;;) {
		uint64_t now = clock_mono_ms(), deadline;

		if (pf->cur) {
			o->s = pf->cur;
			o->s->refs++;
			o->c = o->s->c;
			break;
		}
		if (pf->gone) {
			e = -EIO;
			break;
		}
		deadline = pf->down_since + pf->timeout_ms;
		if (now >= deadline && late_tried) {
			e = -EIO;
			break;
		}
		if (!pf->reconnecting && now >= pf->next_try) {
			if (now >= deadline) {
				late_tried = 1;
				deadline = now + LATE_ATTEMPT_MS;
			}
			reconnect_locked(pf, deadline);
			continue;
		}
		if (now >= deadline) {
			e = -EIO;
			break;
		}
		{
			uint64_t until = pf->reconnecting ? deadline :
					 pf->next_try < deadline ? pf->next_try : deadline;
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			uint64_t ms = until - now;
			ts.tv_sec += ms / 1000;
			ts.tv_nsec += (long)(ms % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&pf->cv, &pf->lock, &ts);
		}
	}
	pthread_mutex_unlock(&pf->lock);
	return e;
}

/* After an attempt: 1 to try again on a new connection (the error was
 * the connection's), else 0 with o's session let go. */
static int op_retry(struct op *o, int *e)
{
	struct sess *s = o->s;

	if (!s)
		return 0;
	o->s = NULL;
	o->c = NULL;
	if (*e == -ECONNRESET || *e == -ETIMEDOUT) {
		sess_broken(o->pf, s);
		sess_put(o->pf, s);
		return 1;
	}
	/* A fid went stale under the attempt (walked again and clunked by
	 * another request): once more, with fresh fids. */
	if (*e == -EBADF && (o->epoch != epoch_now(o->pf) ||
			     o->evictions != __atomic_load_n(&o->pf->evictions, __ATOMIC_RELAXED))) {
		sess_put(o->pf, s);
		return 1;
	}
	sess_put(o->pf, s);
	return 0;
}

/* --- inodes -------------------------------------------------------- */

static unsigned hash_q(uint64_t q)
{
	q ^= q >> 29;
	q *= 0xbf58476d1ce4e5b9ull;
	return (unsigned)(q >> 40) % HASH_BUCKETS;
}

static unsigned hash_name(const struct inode *parent, const char *name)
{
	uint64_t h = (uintptr_t)parent * 0x9e3779b97f4a7c15ull;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return (unsigned)(h >> 40) % HASH_BUCKETS;
}

static struct inode *ino_of(struct pf *pf, fuse_ino_t n)
{
	return n == FUSE_ROOT_ID ? &pf->root : (struct inode *)(uintptr_t)n;
}

static fuse_ino_t nodeid_of(struct pf *pf, struct inode *ino)
{
	return ino == &pf->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)ino;
}

/* Takes ino out of the name table (under pf->lock). */
static void ino_unname_locked(struct pf *pf, struct inode *ino)
{
	struct inode **p;
	if (!ino->name)
		return;
	for (p = &pf->byname[hash_name(ino->parent, ino->name)]; *p; p = &(*p)->nnext) {
		if (*p == ino) {
			*p = ino->nnext;
			break;
		}
	}
	ino->nnext = NULL;
}

static struct inode *ino_find_name_locked(struct pf *pf, struct inode *parent,
					  const char *name)
{
	for (struct inode *i = pf->byname[hash_name(parent, name)]; i; i = i->nnext)
		if (i->parent == parent && !strcmp(i->name, name))
			return i;
	return NULL;
}

static void ino_unref_locked(struct pf *pf, struct inode *ino, struct inode **freeme);
static void ino_free_chain(struct pf *pf, struct inode *chain);

/* Names ino parent/name, which nothing else is named any more. Under
 * pf->lock; a parent link let go of goes to *freeme's chain. */
static void ino_set_name_locked(struct pf *pf, struct inode *ino, struct inode *parent,
				const char *name, struct inode **freeme)
{
	struct inode *other, *oldparent;
	char *nn;

	if (ino == &pf->root)
		return;
	if (ino->parent == parent && ino->name && !strcmp(ino->name, name))
		return;
	if (!(nn = strdup(name)))
		return; /* it keeps the old name: a later walk may go stale */
	if ((other = ino_find_name_locked(pf, parent, name)) && other != ino) {
		/* That name now means ino: the other file lost it. */
		ino_unname_locked(pf, other);
		free(other->name);
		other->name = NULL;
		oldparent = other->parent;
		other->parent = NULL;
		if (oldparent)
			ino_unref_locked(pf, oldparent, freeme);
	}
	ino_unname_locked(pf, ino);
	free(ino->name);
	oldparent = ino->parent;
	ino->name = nn;
	ino->parent = parent;
	parent->refs++;
	ino->nnext = pf->byname[hash_name(parent, nn)];
	pf->byname[hash_name(parent, nn)] = ino;
	if (oldparent)
		ino_unref_locked(pf, oldparent, freeme);
}

/* The file that was parent/name is not there any more. */
static void name_gone(struct pf *pf, struct inode *parent, const char *name)
{
	struct inode *ino, *freeme = NULL;

	pthread_mutex_lock(&pf->lock);
	if ((ino = ino_find_name_locked(pf, parent, name))) {
		ino_unname_locked(pf, ino);
		free(ino->name);
		ino->name = NULL;
		ino->parent = NULL;
		ino_unref_locked(pf, parent, &freeme);
	}
	pthread_mutex_unlock(&pf->lock);
	ino_free_chain(pf, freeme);
}

static int ino_dead(const struct inode *ino)
{
	return !ino->nlookup && !ino->refs;
}

/* Unlinks a dead inode from the tables and queues it (through qnext)
 * for freeing outside the lock; its parent link is let go of too. */
/* --- the fid budget (under pf->lock) ------------------------------- */

static void lru_unlink_locked(struct pf *pf, struct inode *ino)
{
	if (!ino->on_lru)
		return;
	if (ino->lru_prev)
		ino->lru_prev->lru_next = ino->lru_next;
	else
		pf->lru_head = ino->lru_next;
	if (ino->lru_next)
		ino->lru_next->lru_prev = ino->lru_prev;
	else
		pf->lru_tail = ino->lru_prev;
	ino->lru_prev = ino->lru_next = NULL;
	ino->on_lru = 0;
	pf->nlru--;
}

static void lru_push_locked(struct pf *pf, struct inode *ino)
{
	ino->lru_prev = NULL;
	ino->lru_next = pf->lru_head;
	if (pf->lru_head)
		pf->lru_head->lru_prev = ino;
	else
		pf->lru_tail = ino;
	pf->lru_head = ino;
	ino->on_lru = 1;
	pf->nlru++;
}

static void lru_clear_locked(struct pf *pf)
{
	while (pf->lru_head)
		lru_unlink_locked(pf, pf->lru_head);
}

/* ino was used: to the front. */
static void lru_touch(struct pf *pf, struct inode *ino)
{
	pthread_mutex_lock(&pf->lock);
	if (ino->on_lru && pf->lru_head != ino) {
		lru_unlink_locked(pf, ino);
		lru_push_locked(pf, ino);
	}
	pthread_mutex_unlock(&pf->lock);
}

static void fid_drop(struct op *o, uint32_t fid);

/* ino just got a fid on o's session: counted, and if that is too many,
 * the least recently used others give theirs back (not ino). */
static void lru_add(struct op *o, struct inode *ino)
{
	struct pf *pf = o->pf;
	uint32_t victims[8];
	int n = 0;

	pthread_mutex_lock(&pf->lock);
	lru_unlink_locked(pf, ino);
	lru_push_locked(pf, ino);
	for (struct inode *v = pf->lru_tail; v && pf->nlru > MAX_INODE_FIDS && n < 8;) {
		struct inode *prev = v->lru_prev;
		/* Busy walking (its lock held): the next one. */
		if (v != ino && pthread_mutex_trylock(&v->lock) == 0) {
			if (v->gen == o->s->gen)
				victims[n++] = v->fid;
			v->gen = 0;
			lru_unlink_locked(pf, v);
			pthread_mutex_unlock(&v->lock);
		}
		v = prev;
	}
	if (n)
		__atomic_add_fetch(&pf->evictions, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&pf->lock);
	while (n)
		fid_drop(o, victims[--n]);
}

static void ino_unref_locked(struct pf *pf, struct inode *ino, struct inode **freeme)
{
	if (ino == &pf->root)
		return;
	if (ino->refs)
		ino->refs--;
	while (ino && ino != &pf->root && ino_dead(ino)) {
		struct inode **p, *parent = ino->parent;
		for (p = &pf->byq[hash_q(ino->qpath)]; *p; p = &(*p)->qnext) {
			if (*p == ino) {
				*p = ino->qnext;
				break;
			}
		}
		ino_unname_locked(pf, ino);
		lru_unlink_locked(pf, ino);
		ino->parent = NULL;
		ino->qnext = *freeme;
		*freeme = ino;
		ino = NULL;
		if (parent && parent != &pf->root) {
			parent->refs--;
			ino = parent;
		}
	}
}

/* Frees inodes ino_unref_locked queued, clunking their fids on the
 * current session. */
static void ino_free_chain(struct pf *pf, struct inode *chain)
{
	struct sess *s = NULL;

	if (!chain)
		return;
	unsigned n = 0, k = 0;
	uint32_t *fids = NULL;
	int *errs = NULL;
	struct p9c_batch *b = NULL;

	pthread_mutex_lock(&pf->lock);
	if ((s = pf->cur))
		s->refs++;
	pthread_mutex_unlock(&pf->lock);
	for (struct inode *i = chain; i; i = i->qnext)
		n += s && i->gen == s->gen;
	/* Their fids go in one round trip (a FORGET names many). */
	if (n && (!(fids = calloc(n, sizeof(*fids))) || !(errs = calloc(n, sizeof(*errs))) ||
		  !(b = p9c_batch_new(s->c, n)))) {
		free(fids);
		free(errs);
		fids = NULL;
	}
	while (chain) {
		struct inode *ino = chain;
		chain = ino->qnext;
		if (s && ino->gen == s->gen) {
			if (fids) {
				fids[k] = ino->fid;
				p9c_batch_clunk(b, fids[k], &errs[k]);
				k++;
			} else {
				p9c_clunk(s->c, ino->fid);
				p9c_fid_release(s->c, ino->fid);
			}
		}
		pthread_mutex_destroy(&ino->lock);
		free(ino->name);
		free(ino);
	}
	if (fids) {
		p9c_batch_run(b);
		for (unsigned i = 0; i < k; i++)
			p9c_fid_release(s->c, fids[i]);
		free(fids);
		free(errs);
	}
	if (s)
		sess_put(pf, s);
}

/*
 * The inode for a file just walked to: fid (on o's session, or P9_NOFID
 * for none) and qid, reached as parent/name. An inode of that qid is
 * reused (and fid clunked unless it needs one); else a new one takes
 * fid. One more kernel lookup on it. NULL when out of memory (fid is
 * clunked).
 */
/* Fids to clunk later, together (a listing's leftovers). */
struct fidbag {
	uint32_t fid[256];
	unsigned n;
};

static struct inode *ino_found_bag(struct op *o, struct inode *parent, const char *name,
				   const struct p9_qid *qid, uint32_t fid, struct fidbag *bag);

static struct inode *ino_found(struct op *o, struct inode *parent, const char *name,
			       const struct p9_qid *qid, uint32_t fid)
{
	return ino_found_bag(o, parent, name, qid, fid, NULL);
}

static void fid_dispose(struct op *o, uint32_t fid, struct fidbag *bag)
{
	if (bag && bag->n < sizeof(bag->fid) / sizeof(bag->fid[0]))
		bag->fid[bag->n++] = fid;
	else
		fid_drop(o, fid);
}

static struct inode *ino_found_bag(struct op *o, struct inode *parent, const char *name,
				   const struct p9_qid *qid, uint32_t fid, struct fidbag *bag)
{
	struct pf *pf = o->pf;
	struct inode *ino, *freeme = NULL;
	uint32_t stale = P9_NOFID;
	int keep = 0;

	pthread_mutex_lock(&pf->lock);
	for (ino = pf->byq[hash_q(qid->path)]; ino; ino = ino->qnext)
		if (ino->qpath == qid->path && ino->qtype == qid->type)
			break;
	if (ino) {
		/* A fid of an earlier session or epoch is replaced. */
		if (fid != P9_NOFID && pthread_mutex_trylock(&ino->lock) == 0) {
			if (!ino_fid_current(o, ino)) {
				if (ino->gen == o->s->gen)
					stale = ino->fid;
				ino->fid = fid;
				ino->gen = o->s->gen;
				ino->epoch = o->epoch;
				keep = 1;
			}
			pthread_mutex_unlock(&ino->lock);
		}
	} else if ((ino = calloc(1, sizeof(*ino)))) {
		ino->qpath = qid->path;
		ino->qtype = qid->type;
		pthread_mutex_init(&ino->lock, NULL);
		if (fid != P9_NOFID) {
			ino->fid = fid;
			ino->gen = o->s->gen;
			ino->epoch = o->epoch;
			keep = 1;
		}
		ino->qnext = pf->byq[hash_q(qid->path)];
		pf->byq[hash_q(qid->path)] = ino;
	}
	if (ino) {
		ino->nlookup++;
		ino_set_name_locked(pf, ino, parent, name, &freeme);
	}
	pthread_mutex_unlock(&pf->lock);
	if (!keep && fid != P9_NOFID)
		fid_dispose(o, fid, bag);
	if (stale != P9_NOFID)
		fid_dispose(o, stale, bag);
	if (keep)
		lru_add(o, ino);
	ino_free_chain(pf, freeme);
	return ino;
}

/* The kernel lets go of n lookups; the dead go to *freeme. */
static void ino_forget_locked(struct pf *pf, struct inode *ino, uint64_t n,
			      struct inode **freeme)
{
	if (ino == &pf->root)
		return;
	ino->nlookup = n < ino->nlookup ? ino->nlookup - n : 0;
	if (ino_dead(ino)) {
		ino->refs++; /* what ino_unref_locked lets go of */
		ino_unref_locked(pf, ino, freeme);
	}
}

static void ino_forget(struct pf *pf, struct inode *ino, uint64_t n)
{
	struct inode *freeme = NULL;

	pthread_mutex_lock(&pf->lock);
	ino_forget_locked(pf, ino, n, &freeme);
	pthread_mutex_unlock(&pf->lock);
	ino_free_chain(pf, freeme);
}

static void ino_hold(struct pf *pf, struct inode *ino)
{
	pthread_mutex_lock(&pf->lock);
	ino->refs++;
	pthread_mutex_unlock(&pf->lock);
}

static void ino_release(struct pf *pf, struct inode *ino)
{
	struct inode *freeme = NULL;
	pthread_mutex_lock(&pf->lock);
	ino_unref_locked(pf, ino, &freeme);
	pthread_mutex_unlock(&pf->lock);
	ino_free_chain(pf, freeme);
}

/* A new fid on o's session walked from fid by one name ("" clones). */
static int walk1(struct op *o, uint32_t from, const char *name, uint32_t *newfid,
		 struct p9_qid *qid)
{
	const char *names[1] = { name };
	int e;

	if ((e = p9c_fid_alloc(o->c, newfid)) < 0)
		return e;
	e = p9c_walk(o->c, from, *newfid, *name ? 1 : 0, names, qid);
	if (e < 0)
		p9c_fid_release(o->c, *newfid);
	return e;
}

static void fid_drop(struct op *o, uint32_t fid)
{
	p9c_clunk(o->c, fid);
	p9c_fid_release(o->c, fid);
}

/* ino's fid on o's session: walked to again, from its parent, if it was
 * walked on an earlier connection (or never). */
static int ino_fid(struct op *o, struct inode *ino, uint32_t *fid)
{
	struct pf *pf = o->pf;
	struct inode *parent;
	struct p9_qid q;
	uint32_t pfid, nf;
	char *name = NULL;
	int e;

	if (ino == &pf->root) {
		*fid = o->s->rootfid;
		return 0;
	}
	pthread_mutex_lock(&ino->lock);
	if (ino_fid_current(o, ino)) {
		*fid = ino->fid;
		pthread_mutex_unlock(&ino->lock);
		lru_touch(pf, ino);
		return 0;
	}
	pthread_mutex_lock(&pf->lock);
	parent = ino->parent;
	if (parent)
		parent->refs++;
	name = ino->name ? strdup(ino->name) : NULL;
	pthread_mutex_unlock(&pf->lock);
	if (!parent || !name) {
		e = -ESTALE; /* no name left to find it by */
	} else if ((e = ino_fid(o, parent, &pfid)) == 0 &&
		   (e = walk1(o, pfid, name, &nf, &q)) == 0) {
		if (q.path != ino->qpath) {
			fid_drop(o, nf);
			e = -ESTALE; /* another file has that name now */
		} else {
			/* A fid of this session, of an earlier epoch. */
			if (ino->gen == o->s->gen)
				fid_drop(o, ino->fid);
			ino->fid = nf;
			ino->gen = o->s->gen;
			ino->epoch = o->epoch;
			*fid = nf;
			lru_add(o, ino);
		}
	}
	pthread_mutex_unlock(&ino->lock);
	if (e == -ENOENT)
		e = -ESTALE;
	free(name);
	if (parent)
		ino_release(pf, parent);
	return e;
}

/* --- waiting for writes on their way (see write_behind) ------------ */

/* Waits until h's writes are answered; returns (and clears) the first
 * failure among them. */
static int wb_wait_handle(struct pf *pf, struct handle *h)
{
	int e;
	pthread_mutex_lock(&pf->wlock);
	while (h->wcount)
		pthread_cond_wait(&pf->wcv, &pf->wlock);
	e = h->werr;
	h->werr = 0;
	pthread_mutex_unlock(&pf->wlock);
	return e;
}

/* Waits until the writes to ino are answered: before asking the server
 * for its size, or truncating it, or reading it through another fid. */
static void wb_wait_inode(struct pf *pf, struct inode *ino)
{
	if (!__atomic_load_n(&ino->wpending, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&pf->wlock);
	while (ino->wpending)
		pthread_cond_wait(&pf->wcv, &pf->wlock);
	pthread_mutex_unlock(&pf->wlock);
}

/* --- attributes ---------------------------------------------------- */

static void attr_to_stat(const struct p9_qid *q, const struct p9_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = q->path;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_rdev = a->rdev;
	st->st_size = (off_t)a->size;
	st->st_blksize = (blksize_t)a->blksize;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_atim.tv_sec = (time_t)a->atime_sec;
	st->st_atim.tv_nsec = (long)a->atime_nsec;
	st->st_mtim.tv_sec = (time_t)a->mtime_sec;
	st->st_mtim.tv_nsec = (long)a->mtime_nsec;
	st->st_ctim.tv_sec = (time_t)a->ctime_sec;
	st->st_ctim.tv_nsec = (long)a->ctime_nsec;
}

static int fid_stat(struct op *o, uint32_t fid, struct stat *st)
{
	struct p9_qid q;
	struct p9_attr a;
	uint64_t valid;
	int e = p9c_getattr(o->c, fid, P9_GETATTR_BASIC, &valid, &q, &a);
	if (e == 0)
		attr_to_stat(&q, &a, st);
	return e;
}

/* Tlopen flags from open(2) flags. */
static uint32_t p9_flags(int fl)
{
	uint32_t f = (uint32_t)(fl & O_ACCMODE);
	static const struct { int o; uint32_t p9; } map[] = {
		{ O_TRUNC, P9_DOTL_TRUNC }, { O_APPEND, P9_DOTL_APPEND },
		{ O_DSYNC, P9_DOTL_DSYNC }, { O_DIRECT, P9_DOTL_DIRECT },
		{ O_NOATIME, P9_DOTL_NOATIME }, { O_DIRECTORY, P9_DOTL_DIRECTORY },
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (fl & map[i].o)
			f |= map[i].p9;
	if ((fl & O_SYNC) == O_SYNC)
		f |= P9_DOTL_SYNC;
	return f;
}

/* --- replies ------------------------------------------------------- */

static void reply_err(fuse_req_t req, int e)
{
	fuse_reply_err(req, e < 0 ? -e : e);
}

/* An entry for the file parent/name on o's session: walk, getattr, and
 * the inode. */
static int entry_of(struct op *o, struct inode *parent, uint32_t dfid, const char *name,
		    struct fuse_entry_param *ep)
{
	struct p9_qid q;
	uint32_t nf;
	struct inode *ino;
	int e;

	struct p9_attr a;

	memset(ep, 0, sizeof(*ep));
	if ((e = p9c_fid_alloc(o->c, &nf)) < 0)
		return e;
	if ((e = p9c_walk_getattr(o->c, dfid, nf, name, &q, &a)) < 0) {
		p9c_fid_release(o->c, nf);
		return e;
	}
	attr_to_stat(&q, &a, &ep->attr);
	if (!(ino = ino_found(o, parent, name, &q, nf)))
		return -ENOMEM;
	ep->ino = nodeid_of(o->pf, ino);
	ep->attr_timeout = CACHE_S;
	ep->entry_timeout = CACHE_S;
	return 0;
}

/* An attempt begins: a live session, and what its fids may be judged by
 * if one goes stale meanwhile (op_retry). */
static int op_begin(struct op *o)
{
	int e = op_session(o);
	o->epoch = epoch_now(o->pf);
	o->evictions = __atomic_load_n(&o->pf->evictions, __ATOMIC_RELAXED);
	return e;
}

/* The body of every request: run attempt(o, ctx) on a live session
 * until it succeeds or fails for a reason other than the connection. */
static int run(struct pf *pf, int (*attempt)(struct op *o, void *ctx), void *ctx)
{
	struct op o = { .pf = pf };
	int e;

	do {
		if ((e = op_begin(&o)) < 0)
			return e;
		e = attempt(&o, ctx);
	} while (op_retry(&o, &e));
	return e;
}

/* --- lookups and attributes ---------------------------------------- */

struct name_ctx {
	struct inode *dir;
	const char *name;
	struct fuse_entry_param ep;
	/* for mkdir, mknod, symlink, link */
	uint32_t mode, gid;
	dev_t rdev;
	const char *target;
	struct inode *ino;
	int flags;
};

static int do_lookup(struct op *o, void *arg)
{
	struct name_ctx *x = arg;
	uint32_t dfid;
	int e = ino_fid(o, x->dir, &dfid);
	return e < 0 ? e : entry_of(o, x->dir, dfid, x->name, &x->ep);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct pf *pf = fuse_req_userdata(req);
	struct name_ctx x = { .dir = ino_of(pf, parent), .name = name };
	struct inode *known;
	int e;

	/* Its size must not come back older than the writes on their way. */
	pthread_mutex_lock(&pf->lock);
	if ((known = ino_find_name_locked(pf, x.dir, name)))
		known->refs++;
	pthread_mutex_unlock(&pf->lock);
	if (known) {
		wb_wait_inode(pf, known);
		ino_release(pf, known);
	}
	e = run(pf, do_lookup, &x);

	if (e < 0)
		reply_err(req, e);
	else if (fuse_reply_entry(req, &x.ep) < 0)
		ino_forget(pf, ino_of(pf, x.ep.ino), 1); /* the kernel did not take it */
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct pf *pf = fuse_req_userdata(req);
	ino_forget(pf, ino_of(pf, ino), nlookup);
	fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *fd)
{
	struct pf *pf = fuse_req_userdata(req);
	struct inode *freeme = NULL;

	pthread_mutex_lock(&pf->lock);
	for (size_t i = 0; i < count; i++)
		ino_forget_locked(pf, ino_of(pf, fd[i].ino), fd[i].nlookup, &freeme);
	pthread_mutex_unlock(&pf->lock);
	ino_free_chain(pf, freeme);
	fuse_reply_none(req);
}

/* The fid for I/O on an open file: the handle's, opened again on a new
 * connection. */
static int fh_fid(struct op *o, struct handle *h, uint32_t *fid)
{
	uint32_t ifid, nf;
	struct p9_qid q;
	int e = 0;

	pthread_mutex_lock(&h->lock);
	if (h->gen != o->s->gen && (e = ino_fid(o, h->ino, &ifid)) == 0 &&
	    (e = p9c_fid_alloc(o->c, &nf)) == 0) {
		if ((e = p9c_clone_lopen(o->c, ifid, nf, h->flags, &q)) < 0) {
			p9c_fid_release(o->c, nf);
		} else {
			h->fid = nf;
			h->gen = o->s->gen;
		}
	}
	*fid = h->fid;
	pthread_mutex_unlock(&h->lock);
	return e;
}

struct attr_ctx {
	struct inode *ino;
	struct handle *h;
	struct stat st;
	const struct stat *in;
	int to_set;
};

static int do_getattr(struct op *o, void *arg)
{
	struct attr_ctx *x = arg;
	uint32_t fid;
	int e = x->h ? fh_fid(o, x->h, &fid) : ino_fid(o, x->ino, &fid);
	return e < 0 ? e : fid_stat(o, fid, &x->st);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct attr_ctx x = { .ino = ino_of(pf, ino) };
	int e;

	if (fi)
		x.h = (struct handle *)(uintptr_t)fi->fh;
	wb_wait_inode(pf, x.ino);
	if ((e = run(pf, do_getattr, &x)) < 0)
		reply_err(req, e);
	else
		fuse_reply_attr(req, &x.st, CACHE_S);
}

static int do_setattr(struct op *o, void *arg)
{
	struct attr_ctx *x = arg;
	struct p9_setattr sa = { 0 };
	uint32_t fid;
	int e, s = x->to_set;

	if ((e = x->h ? fh_fid(o, x->h, &fid) : ino_fid(o, x->ino, &fid)) < 0)
		return e;
	if (s & FUSE_SET_ATTR_MODE) {
		sa.valid |= P9_SETATTR_MODE;
		sa.mode = x->in->st_mode & 07777;
	}
	if (s & FUSE_SET_ATTR_UID) {
		sa.valid |= P9_SETATTR_UID;
		sa.uid = x->in->st_uid;
	}
	if (s & FUSE_SET_ATTR_GID) {
		sa.valid |= P9_SETATTR_GID;
		sa.gid = x->in->st_gid;
	}
	if (s & FUSE_SET_ATTR_SIZE) {
		sa.valid |= P9_SETATTR_SIZE;
		sa.size = (uint64_t)x->in->st_size;
	}
	/* 9p: ATIME alone is "now", with ATIME_SET the time given. */
	if (s & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
		sa.valid |= P9_SETATTR_ATIME;
	if (s & FUSE_SET_ATTR_ATIME && !(s & FUSE_SET_ATTR_ATIME_NOW)) {
		sa.valid |= P9_SETATTR_ATIME_SET;
		sa.atime_sec = (uint64_t)x->in->st_atim.tv_sec;
		sa.atime_nsec = (uint64_t)x->in->st_atim.tv_nsec;
	}
	if (s & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
		sa.valid |= P9_SETATTR_MTIME;
	if (s & FUSE_SET_ATTR_MTIME && !(s & FUSE_SET_ATTR_MTIME_NOW)) {
		sa.valid |= P9_SETATTR_MTIME_SET;
		sa.mtime_sec = (uint64_t)x->in->st_mtim.tv_sec;
		sa.mtime_nsec = (uint64_t)x->in->st_mtim.tv_nsec;
	}
	if (s & FUSE_SET_ATTR_CTIME)
		sa.valid |= P9_SETATTR_CTIME;
	if (sa.valid && (e = p9c_setattr(o->c, fid, &sa)) < 0)
		return e;
	return fid_stat(o, fid, &x->st);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct attr_ctx x = { .ino = ino_of(pf, ino), .in = attr, .to_set = to_set };
	int e;

	if (fi)
		x.h = (struct handle *)(uintptr_t)fi->fh;
	wb_wait_inode(pf, x.ino);
	if ((e = run(pf, do_setattr, &x)) < 0)
		reply_err(req, e);
	else
		fuse_reply_attr(req, &x.st, CACHE_S);
}

struct link_ctx {
	struct inode *ino;
	char buf[PATH_MAX];
};

static int do_readlink(struct op *o, void *arg)
{
	struct link_ctx *x = arg;
	uint32_t fid;
	int e = ino_fid(o, x->ino, &fid);
	return e < 0 ? e : p9c_readlink(o->c, fid, x->buf, sizeof(x->buf));
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct pf *pf = fuse_req_userdata(req);
	struct link_ctx *x = malloc(sizeof(*x));
	int e;

	if (!x) {
		reply_err(req, ENOMEM);
		return;
	}
	x->ino = ino_of(pf, ino);
	if ((e = run(pf, do_readlink, x)) < 0)
		reply_err(req, e);
	else
		fuse_reply_readlink(req, x->buf);
	free(x);
}

/* --- making and removing names ------------------------------------- */

enum make_kind { MAKE_NOD, MAKE_DIR, MAKE_SYMLINK, MAKE_LINK };

struct make_ctx {
	struct name_ctx n;
	enum make_kind kind;
	int made; /* the name was made on the server: a retry is a lookup */
};

static int do_make(struct op *o, void *arg)
{
	struct make_ctx *x = arg;
	struct p9_qid q;
	uint32_t dfid, fid;
	int e;

	if ((e = ino_fid(o, x->n.dir, &dfid)) < 0)
		return e;
	if (!x->made) {
		switch (x->kind) {
		case MAKE_NOD:
			e = p9c_mknod(o->c, dfid, x->n.name, x->n.mode, major(x->n.rdev),
				      minor(x->n.rdev), x->n.gid, &q);
			break;
		case MAKE_DIR:
			e = p9c_mkdir(o->c, dfid, x->n.name, x->n.mode, x->n.gid, &q);
			break;
		case MAKE_SYMLINK:
			e = p9c_symlink(o->c, dfid, x->n.name, x->n.target, x->n.gid, &q);
			break;
		case MAKE_LINK:
			if ((e = ino_fid(o, x->n.ino, &fid)) == 0)
				e = p9c_link(o->c, dfid, fid, x->n.name);
			break;
		}
		if (e < 0)
			return e;
		x->made = 1;
	}
	return entry_of(o, x->n.dir, dfid, x->n.name, &x->n.ep);
}

static void make(fuse_req_t req, struct make_ctx *x)
{
	struct pf *pf = fuse_req_userdata(req);
	int e = run(pf, do_make, x);

	if (e < 0)
		reply_err(req, e);
	else if (fuse_reply_entry(req, &x->n.ep) < 0)
		ino_forget(pf, ino_of(pf, x->n.ep.ino), 1);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	struct pf *pf = fuse_req_userdata(req);
	struct make_ctx x = { .kind = MAKE_NOD };
	x.n.dir = ino_of(pf, parent);
	x.n.name = name;
	x.n.mode = mode;
	x.n.rdev = rdev;
	x.n.gid = fuse_req_ctx(req)->gid;
	make(req, &x);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct pf *pf = fuse_req_userdata(req);
	struct make_ctx x = { .kind = MAKE_DIR };
	x.n.dir = ino_of(pf, parent);
	x.n.name = name;
	x.n.mode = mode;
	x.n.gid = fuse_req_ctx(req)->gid;
	make(req, &x);
}

static void ll_symlink(fuse_req_t req, const char *target, fuse_ino_t parent,
		       const char *name)
{
	struct pf *pf = fuse_req_userdata(req);
	struct make_ctx x = { .kind = MAKE_SYMLINK };
	x.n.dir = ino_of(pf, parent);
	x.n.name = name;
	x.n.target = target;
	x.n.gid = fuse_req_ctx(req)->gid;
	make(req, &x);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct pf *pf = fuse_req_userdata(req);
	struct make_ctx x = { .kind = MAKE_LINK };
	x.n.dir = ino_of(pf, newparent);
	x.n.name = newname;
	x.n.ino = ino_of(pf, ino);
	make(req, &x);
}

/* Servers without Tunlinkat/Trenameat (diod has neither) answer
 * EOPNOTSUPP; then, as Linux's own 9p client does, the older
 * fid-based Tremove/Trename. */
static int old_style(int e)
{
	return e == -EOPNOTSUPP || e == -ENOSYS;
}

static int do_unlink(struct op *o, void *arg)
{
	struct name_ctx *x = arg;
	struct p9_qid q;
	uint32_t dfid, nf;
	int e = ino_fid(o, x->dir, &dfid);

	if (e < 0)
		return e;
	e = p9c_unlinkat(o->c, dfid, x->name, (uint32_t)x->flags);
	if (!old_style(e) || (e = walk1(o, dfid, x->name, &nf, &q)) < 0)
		return e;
	if (!(q.type & P9_QTDIR) != !(x->flags & P9_AT_REMOVEDIR)) {
		fid_drop(o, nf);
		return x->flags & P9_AT_REMOVEDIR ? -ENOTDIR : -EISDIR;
	}
	e = p9c_remove(o->c, nf); /* clunks nf, whatever happens */
	p9c_fid_release(o->c, nf);
	return e;
}

static void unlink_name(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	struct pf *pf = fuse_req_userdata(req);
	struct name_ctx x = { .dir = ino_of(pf, parent), .name = name, .flags = flags };
	int e = run(pf, do_unlink, &x);

	if (e == 0)
		name_gone(pf, x.dir, name);
	reply_err(req, e);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	unlink_name(req, parent, name, 0);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	unlink_name(req, parent, name, P9_AT_REMOVEDIR);
}

struct rename_ctx {
	struct inode *dir, *newdir;
	const char *name, *newname;
};

static int do_rename(struct op *o, void *arg)
{
	struct rename_ctx *x = arg;
	uint32_t dfid, ndfid;
	int e;

	struct p9_qid q;
	uint32_t nf;

	if ((e = ino_fid(o, x->dir, &dfid)) < 0 || (e = ino_fid(o, x->newdir, &ndfid)) < 0)
		return e;
	e = p9c_renameat(o->c, dfid, x->name, ndfid, x->newname);
	if (!old_style(e) || (e = walk1(o, dfid, x->name, &nf, &q)) < 0)
		return e;
	e = p9c_rename(o->c, nf, ndfid, x->newname);
	fid_drop(o, nf);
	/* A server this old keeps paths in its fids: every fid below the
	 * old name now names nothing. */
	if (e == 0)
		__atomic_add_fetch(&o->pf->epoch, 1, __ATOMIC_RELEASE);
	return e;
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct pf *pf = fuse_req_userdata(req);
	struct rename_ctx x = { .dir = ino_of(pf, parent), .newdir = ino_of(pf, newparent),
				 .name = name, .newname = newname };
	struct inode *moved, *freeme = NULL;
	int e;

	/* 9P2000.L has no RENAME_NOREPLACE or RENAME_EXCHANGE. */
	if (flags) {
		reply_err(req, EINVAL);
		return;
	}
	if ((e = run(pf, do_rename, &x)) == 0) {
		pthread_mutex_lock(&pf->lock);
		if ((moved = ino_find_name_locked(pf, x.dir, name))) {
			moved->refs++;
			ino_set_name_locked(pf, moved, x.newdir, newname, &freeme);
			ino_unref_locked(pf, moved, &freeme);
		} else {
			/* What was at newname is gone either way. */
			struct inode *other = ino_find_name_locked(pf, x.newdir, newname);
			if (other) {
				ino_unname_locked(pf, other);
				free(other->name);
				other->name = NULL;
				other->parent = NULL;
				ino_unref_locked(pf, x.newdir, &freeme);
			}
		}
		pthread_mutex_unlock(&pf->lock);
		ino_free_chain(pf, freeme);
	}
	reply_err(req, e);
}

/* --- open files ---------------------------------------------------- */

struct open_ctx {
	struct inode *ino;
	struct handle *h;
	/* create */
	struct inode *dir;
	const char *name;
	uint32_t mode, gid;
	struct fuse_entry_param ep;
	int created;
};

static int do_open(struct op *o, void *arg)
{
	struct open_ctx *x = arg;
	uint32_t fid;
	/* A new handle has no session yet: fh_fid opens it. */
	int e = fh_fid(o, x->h, &fid);

	/* Opened once with O_TRUNC is enough: not again on a reconnect. */
	if (e == 0)
		x->h->flags &= ~P9_DOTL_TRUNC;
	return e;
}

static void handle_link(struct pf *pf, struct handle *h)
{
	pthread_mutex_lock(&pf->lock);
	h->prev = NULL;
	h->next = pf->handles;
	if (pf->handles)
		pf->handles->prev = h;
	pf->handles = h;
	pthread_mutex_unlock(&pf->lock);
}

static struct handle *handle_new(struct pf *pf, struct inode *ino, uint32_t flags)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->ino = ino;
	h->flags = flags;
	pthread_mutex_init(&h->lock, NULL);
	ino_hold(pf, ino);
	handle_link(pf, h);
	return h;
}

static void handle_free(struct pf *pf, struct handle *h)
{
	struct sess *s;

	pthread_mutex_lock(&pf->lock);
	if ((s = pf->cur))
		s->refs++;
	if (h->prev)
		h->prev->next = h->next;
	else
		pf->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&pf->lock);
	if (s) {
		if (h->gen == s->gen) {
			p9c_clunk(s->c, h->fid);
			p9c_fid_release(s->c, h->fid);
		}
		sess_put(pf, s);
	}
	ino_release(pf, h->ino);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static void open_common(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int dir)
{
	struct pf *pf = fuse_req_userdata(req);
	struct open_ctx x = { .ino = ino_of(pf, ino) };
	uint32_t flags = p9_flags(fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY));
	int e;

	if (dir)
		flags = P9_DOTL_RDONLY | P9_DOTL_DIRECTORY;
	if (!(x.h = handle_new(pf, x.ino, flags))) {
		reply_err(req, ENOMEM);
		return;
	}
	if ((e = run(pf, do_open, &x)) < 0) {
		handle_free(pf, x.h);
		reply_err(req, e);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)x.h;
	if (!dir) {
		/* The page cache stays: the kernel drops it when it sees
		 * mtime or size change (FUSE_CAP_AUTO_INVAL_DATA). */
		fi->keep_cache = !(fi->flags & O_DIRECT);
		fi->direct_io = !!(fi->flags & O_DIRECT);
	}
	if (fuse_reply_open(req, fi) < 0)
		handle_free(pf, x.h);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	open_common(req, ino, fi, 0);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	open_common(req, ino, fi, 1);
}

static int do_create(struct op *o, void *arg)
{
	struct open_ctx *x = arg;
	struct handle *h = x->h;
	struct p9_qid q;
	uint32_t dfid, nf;
	int e;

	struct p9_attr a;

	if (x->created)
		return 0;
	if ((e = ino_fid(o, x->dir, &dfid)) < 0 || (e = p9c_fid_alloc(o->c, &nf)) < 0)
		return e;
	if ((e = p9c_clone_lcreate(o->c, dfid, nf, x->name, h->flags, x->mode, x->gid, &q,
				   &a)) < 0) {
		p9c_fid_release(o->c, nf);
		return e;
	}
	attr_to_stat(&q, &a, &x->ep.attr);
	/* The inode gets its own fid when first used (walked by name). */
	if (!(x->ino = ino_found(o, x->dir, x->name, &q, P9_NOFID))) {
		fid_drop(o, nf);
		return -ENOMEM;
	}
	h->ino = x->ino;
	h->fid = nf;
	h->gen = o->s->gen;
	h->flags &= ~(P9_DOTL_TRUNC | P9_DOTL_CREATE | P9_DOTL_EXCL);
	x->created = 1;
	return 0;
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct open_ctx x = { .dir = ino_of(pf, parent), .name = name, .mode = mode };
	int e;

	x.gid = fuse_req_ctx(req)->gid;
	if (!(x.h = calloc(1, sizeof(*x.h)))) {
		reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&x.h->lock, NULL);
	x.h->flags = p9_flags(fi->flags & ~O_NOCTTY) | P9_DOTL_CREATE |
		     (fi->flags & O_EXCL ? P9_DOTL_EXCL : 0);
	if ((e = run(pf, do_create, &x)) < 0) {
		pthread_mutex_destroy(&x.h->lock);
		free(x.h);
		reply_err(req, e);
		return;
	}
	ino_hold(pf, x.ino); /* the handle's */
	handle_link(pf, x.h);
	/* A new file has none of them. */
	absent_note(x.ino, ALL_ASKED);
	x.ep.ino = nodeid_of(pf, x.ino);
	x.ep.attr_timeout = CACHE_S;
	x.ep.entry_timeout = CACHE_S;
	fi->fh = (uint64_t)(uintptr_t)x.h;
	fi->keep_cache = !(fi->flags & O_DIRECT);
	fi->direct_io = !!(fi->flags & O_DIRECT);
	if (fuse_reply_create(req, &x.ep, fi) < 0) {
		handle_free(pf, x.h);
		ino_forget(pf, x.ino, 1);
	}
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	/* Too late to tell anyone of a failure (flush did, if there was one). */
	wb_wait_handle(pf, h);
	handle_free(pf, h);
	reply_err(req, 0);
}

struct io_ctx {
	struct handle *h;
	uint64_t off;
	size_t size;
	char *buf;
	const char *wbuf;
	ssize_t done;
	int datasync;
};

static __thread char *io_buf;

static int do_read(struct op *o, void *arg)
{
	struct io_ctx *x = arg;
	uint32_t fid;
	int e = fh_fid(o, x->h, &fid);
	if (e < 0)
		return e;
	x->done = p9c_read(o->c, fid, x->off, x->buf, x->size);
	return x->done < 0 ? (int)x->done : 0;
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct io_ctx x = { .h = (struct handle *)(uintptr_t)fi->fh, .off = (uint64_t)off };
	int e;

	if (!io_buf && !(io_buf = malloc(MAX_IO))) {
		reply_err(req, ENOMEM);
		return;
	}
	x.size = size < MAX_IO ? size : MAX_IO;
	x.buf = io_buf;
	wb_wait_inode(pf, x.h->ino);
	if ((e = run(pf, do_read, &x)) < 0)
		reply_err(req, e);
	else
		fuse_reply_buf(req, x.buf, (size_t)x.done);
}

static int do_write(struct op *o, void *arg)
{
	struct io_ctx *x = arg;
	uint32_t fid;
	int e = fh_fid(o, x->h, &fid);
	if (e < 0)
		return e;
	x->done = p9c_write(o->c, fid, x->off, x->wbuf, x->size);
	return x->done < 0 ? (int)x->done : 0;
}

/* --- write-behind -------------------------------------------------- */

static void *completer_main(void *arg)
{
	struct pf *pf = arg;

	for (;;) {
		struct wb *w;
		ssize_t n;
		int e;

		pthread_mutex_lock(&pf->wlock);
		while (!pf->whead && !pf->wquit)
			pthread_cond_wait(&pf->wcv, &pf->wlock);
		if (!(w = pf->whead)) {
			pthread_mutex_unlock(&pf->wlock);
			return NULL;
		}
		pf->whead = w->next;
		if (!pf->whead)
			pf->wtail = NULL;
		pthread_mutex_unlock(&pf->wlock);

		n = p9c_write_finish(w->s->c, w->p);
		e = n == (ssize_t)w->n ? 0 : n < 0 ? (int)n : -EIO;
		if (e == -ECONNRESET || e == -ETIMEDOUT) {
			/* Lost with the connection: the writer hears EIO. */
			sess_broken(pf, w->s);
			e = -EIO;
		}
		sess_put(pf, w->s);
		pthread_mutex_lock(&pf->wlock);
		if (e && !w->h->werr)
			w->h->werr = e;
		w->h->wcount--;
		w->h->wbytes -= w->n;
		w->h->ino->wpending--;
		pthread_cond_broadcast(&pf->wcv);
		pthread_mutex_unlock(&pf->wlock);
		free(w);
	}
}

/* Sends one write and queues its answer for the completer: 0 when the
 * write is on its way, -EAGAIN when it should be made the usual way
 * (no session at hand, out of memory), or an earlier write's failure. */
static int write_behind(struct pf *pf, struct handle *h, const char *buf, size_t size,
			uint64_t off)
{
	struct op o = { .pf = pf };
	struct wb *w;
	uint32_t fid;
	int e;

	pthread_mutex_lock(&pf->wlock);
	while (h->wbytes && h->wbytes + size > WB_MAX_BYTES && !h->werr)
		pthread_cond_wait(&pf->wcv, &pf->wlock);
	e = h->werr;
	h->werr = 0;
	pthread_mutex_unlock(&pf->wlock);
	if (e)
		return e;
	if (!(w = calloc(1, sizeof(*w))))
		return -EAGAIN;
	if (op_begin(&o) < 0) {
		free(w);
		return -EAGAIN;
	}
	if ((e = fh_fid(&o, h, &fid)) < 0 ||
	    !(w->p = p9c_write_start(o.c, fid, off, buf, (uint32_t)size))) {
		sess_put(pf, o.s);
		free(w);
		return -EAGAIN;
	}
	w->h = h;
	w->s = o.s; /* its reference goes with the write */
	w->n = (uint32_t)size;
	pthread_mutex_lock(&pf->wlock);
	h->wcount++;
	h->wbytes += size;
	h->ino->wpending++;
	if (pf->wtail)
		pf->wtail->next = w;
	else
		pf->whead = w;
	pf->wtail = w;
	pthread_cond_broadcast(&pf->wcv);
	pthread_mutex_unlock(&pf->wlock);
	return 0;
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct io_ctx x = { .h = (struct handle *)(uintptr_t)fi->fh, .off = (uint64_t)off, .size = size };
	int e;

	/* Appends and synchronous writes want the server's answer first. */
	if (pf->has_completer && size <= pf->msize - P9_IOHDR &&
	    !(x.h->flags & (P9_DOTL_APPEND | P9_DOTL_SYNC | P9_DOTL_DSYNC | P9_DOTL_DIRECT))) {
		e = write_behind(pf, x.h, buf, size, (uint64_t)off);
		if (e == 0) {
			fuse_reply_write(req, size);
			return;
		}
		if (e != -EAGAIN) {
			reply_err(req, e);
			return;
		}
	}
	x.wbuf = buf;
	if ((e = run(pf, do_write, &x)) < 0)
		reply_err(req, e);
	else
		fuse_reply_write(req, (size_t)x.done);
}

/* close(2) hears of a write that failed after write(2) returned. With
 * no writes on their way this does not reach the server. */
static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	reply_err(req, wb_wait_handle(pf, (struct handle *)(uintptr_t)fi->fh));
}

static int do_fsync(struct op *o, void *arg)
{
	struct io_ctx *x = arg;
	uint32_t fid;
	int e = fh_fid(o, x->h, &fid);
	return e < 0 ? e : p9c_fsync(o->c, fid, x->datasync);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct io_ctx x = { .h = (struct handle *)(uintptr_t)fi->fh };
	int e = wb_wait_handle(pf, x.h), e2;

	x.datasync = datasync;
	e2 = run(pf, do_fsync, &x);
	reply_err(req, e ? e : e2);
}

/* --- directories --------------------------------------------------- */

static int do_readdir(struct op *o, void *arg)
{
	struct io_ctx *x = arg;
	uint32_t fid;
	int e = fh_fid(o, x->h, &fid);
	if (e < 0)
		return e;
	x->done = p9c_readdir(o->c, fid, x->off, x->buf, x->size);
	return x->done < 0 ? (int)x->done : 0;
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct io_ctx x = { .h = (struct handle *)(uintptr_t)fi->fh, .off = (uint64_t)off };
	struct p9c_dirent d;
	struct rd r;
	char *out, name[NAME_MAX + 1];
	size_t used = 0;
	int e;

	if (size > MAX_IO)
		size = MAX_IO;
	if (!io_buf && !(io_buf = malloc(MAX_IO))) {
		reply_err(req, ENOMEM);
		return;
	}
	if (!(out = malloc(size))) {
		reply_err(req, ENOMEM);
		return;
	}
	x.buf = io_buf;
	x.size = size;
	if ((e = run(pf, do_readdir, &x)) < 0) {
		free(out);
		reply_err(req, e);
		return;
	}
	rd_init(&r, x.buf, (size_t)x.done);
	while ((e = p9c_dirent_next(&r, &d)) == 1) {
		struct stat st = { 0 };
		size_t n;
		if (d.namelen > NAME_MAX)
			continue;
		memcpy(name, d.name, d.namelen);
		name[d.namelen] = 0;
		st.st_ino = d.qid.path;
		st.st_mode = (mode_t)d.type << 12;
		n = fuse_add_direntry(req, out + used, size - used, name, &st, (off_t)d.offset);
		if (n > size - used)
			break; /* the next call starts at this entry again */
		used += n;
	}
	if (e < 0 && !used) {
		free(out);
		reply_err(req, EIO);
		return;
	}
	fuse_reply_buf(req, out, used);
	free(out);
}

/*
 * A listing with every entry's attributes, so that `ls -l` or find+stat
 * need no lookup per name: the walks and getattrs of all the entries
 * that fit go out together (one round trip on metac's server). Each
 * entry with a nodeid counts as a lookup; "." and "..", and entries
 * that went away meanwhile, go as plain entries without one.
 */
#define PLUS_MAX 128
#define PLUS_XATTR_LIST 512 /* an entry's xattr names; longer: not cached */

struct plus_ctx {
	struct inode *dir;
	unsigned n; /* entries that fit */
	const char *names[PLUS_MAX];
	uint8_t dtype[PLUS_MAX];
	uint64_t qpath[PLUS_MAX], next[PLUS_MAX];
	struct fuse_entry_param ep[PLUS_MAX];
};

static int dotname(const char *n)
{
	return n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2]));
}

static int do_plus_walks(struct op *o, void *arg)
{
	struct plus_ctx *x = arg;
	struct pf *pf = o->pf;
	struct inode *known[PLUS_MAX] = { NULL };
	uint32_t fids[PLUS_MAX], dfid;
	uint8_t walked[PLUS_MAX] = { 0 }, asked[PLUS_MAX] = { 0 };
	struct p9_qid qids[PLUS_MAX];
	struct p9_attr attrs[PLUS_MAX];
	int errs[PLUS_MAX], e, lost = 0;
	/* And each one's xattr names: ls -l asks for two of them. */
	uint32_t xfids[PLUS_MAX];
	size_t xlen[PLUS_MAX];
	int xerr[PLUS_MAX];
	uint8_t xasked[PLUS_MAX] = { 0 };
	struct fidbag *bag = calloc(1, sizeof(*bag));
	char *xbuf = malloc((size_t)PLUS_MAX * PLUS_XATTR_LIST);
	struct p9c_batch *b = NULL;
	unsigned i;

	if (!bag || !xbuf || (e = ino_fid(o, x->dir, &dfid)) < 0 ||
	    !(b = p9c_batch_new(o->c, 2 * PLUS_MAX))) {
		free(bag);
		free(xbuf);
		return !bag || !xbuf || !b ? -ENOMEM : e;
	}
	/* A file already known with a fid needs only its attributes. */
	pthread_mutex_lock(&pf->lock);
	for (i = 0; i < x->n; i++)
		if (!dotname(x->names[i]) && (known[i] = ino_find_name_locked(pf, x->dir, x->names[i])))
			known[i]->refs++;
	pthread_mutex_unlock(&pf->lock);
	for (i = 0; i < x->n; i++) {
		if (dotname(x->names[i]))
			continue;
		if (known[i]) {
			pthread_mutex_lock(&known[i]->lock);
			if (ino_fid_current(o, known[i]))
				fids[i] = known[i]->fid;
			else
				fids[i] = P9_NOFID;
			pthread_mutex_unlock(&known[i]->lock);
			if (fids[i] != P9_NOFID) {
				p9c_batch_getattr(b, fids[i], &qids[i], &attrs[i], &errs[i]);
				asked[i] = 1;
			}
		}
		if (!asked[i]) {
			if (p9c_fid_alloc(o->c, &fids[i]) < 0)
				continue;
			p9c_batch_walk_getattr(b, dfid, fids[i], x->names[i], &qids[i], &attrs[i],
					       &errs[i]);
			asked[i] = walked[i] = 1;
		}
		if (p9c_fid_alloc(o->c, &xfids[i]) == 0) {
			p9c_batch_xattr_names(b, fids[i], xfids[i], xbuf + (size_t)i * PLUS_XATTR_LIST,
					      PLUS_XATTR_LIST, &xlen[i], &xerr[i]);
			xasked[i] = 1;
		}
	}
	p9c_batch_run(b);
	for (i = 0; i < x->n; i++)
		if (xasked[i])
			p9c_fid_release(o->c, xfids[i]);
	for (i = 0; i < x->n; i++)
		if (asked[i] && (errs[i] == -ECONNRESET || errs[i] == -ETIMEDOUT))
			lost = errs[i];
	for (i = 0; i < x->n; i++) {
		struct fuse_entry_param *ep = &x->ep[i];
		struct inode *ino;
		if (!asked[i])
			goto next;
		if (lost || errs[i] < 0) {
			/* A lost connection: all again, on a new one. */
			if (walked[i] && errs[i] == 0)
				fid_dispose(o, fids[i], bag);
			else if (walked[i])
				p9c_fid_release(o->c, fids[i]);
			goto next;
		}
		ino = ino_found_bag(o, x->dir, x->names[i], &qids[i], walked[i] ? fids[i] : P9_NOFID,
				    bag);
		if (ino) {
			attr_to_stat(&qids[i], &attrs[i], &ep->attr);
			ep->ino = nodeid_of(pf, ino);
			ep->attr_timeout = CACHE_S;
			ep->entry_timeout = CACHE_S;
			if (xasked[i] && xerr[i] == 0)
				absent_note(ino, absent_from_list(xbuf + (size_t)i * PLUS_XATTR_LIST,
								  xlen[i]));
			else if (xasked[i] && xerr[i] == -EOPNOTSUPP)
				absent_note(ino, ALL_ASKED);
		}
next:
		if (known[i])
			ino_release(pf, known[i]);
	}
	/* Fids that turned out to be spare go in one round trip too. */
	if (bag->n && (b = p9c_batch_new(o->c, bag->n))) {
		int *ce = calloc(bag->n, sizeof(int));
		for (i = 0; ce && i < bag->n; i++)
			p9c_batch_clunk(b, bag->fid[i], &ce[i]);
		p9c_batch_run(b);
		free(ce);
	}
	for (i = 0; i < bag->n; i++)
		p9c_fid_release(o->c, bag->fid[i]);
	free(bag);
	free(xbuf);
	if (lost)
		for (i = 0; i < x->n; i++)
			memset(&x->ep[i], 0, sizeof(x->ep[i]));
	return lost;
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	struct pf *pf = fuse_req_userdata(req);
	struct plus_ctx *x = calloc(1, sizeof(*x));
	struct io_ctx io = { .h = (struct handle *)(uintptr_t)fi->fh, .off = (uint64_t)off };
	struct fuse_entry_param probe = { 0 };
	char *out = NULL, *names = NULL;
	size_t used = 0, room = 0, npos = 0;
	struct p9c_dirent d;
	struct rd r;
	unsigned i;
	int e;

	if (size > MAX_IO)
		size = MAX_IO;
	if (!x || (!io_buf && !(io_buf = malloc(MAX_IO))) || !(out = malloc(size)) ||
	    !(names = malloc(size))) {
		free(x);
		free(out);
		reply_err(req, ENOMEM);
		return;
	}
	x->dir = ino_of(pf, ino);
	io.buf = io_buf;
	io.size = size; /* a 9p entry is smaller than its FUSE one: enough */
	if ((e = run(pf, do_readdir, &io)) < 0)
		goto fail;
	rd_init(&r, io.buf, (size_t)io.done);
	while (x->n < PLUS_MAX && (e = p9c_dirent_next(&r, &d)) == 1) {
		size_t need;
		if (d.namelen > NAME_MAX)
			continue;
		memcpy(names + npos, d.name, d.namelen);
		names[npos + d.namelen] = 0;
		/* What fits: sized with the attributes to come. */
		need = fuse_add_direntry_plus(req, NULL, 0, names + npos, &probe, 0);
		if (room + need > size)
			break;
		room += need;
		x->names[x->n] = names + npos;
		x->dtype[x->n] = d.type;
		x->qpath[x->n] = d.qid.path;
		x->next[x->n] = d.offset;
		npos += d.namelen + 1;
		x->n++;
	}
	if (e < 0 && !x->n) {
		e = -EIO;
		goto fail;
	}
	if ((e = run(pf, do_plus_walks, x)) < 0)
		goto fail;
	for (i = 0; i < x->n; i++) {
		struct fuse_entry_param *ep = &x->ep[i];
		if (!ep->ino) {
			/* No attributes: a plain entry, as readdir gives. */
			memset(ep, 0, sizeof(*ep));
			ep->attr.st_ino = x->qpath[i];
			ep->attr.st_mode = (mode_t)x->dtype[i] << 12;
		}
		used += fuse_add_direntry_plus(req, out + used, size - used, x->names[i], ep,
					       (off_t)x->next[i]);
	}
	fuse_reply_buf(req, out, used);
	free(out);
	free(names);
	free(x);
	return;
fail:
	reply_err(req, e);
	free(out);
	free(names);
	free(x);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	ll_release(req, ino, fi);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	ll_fsync(req, ino, datasync, fi);
}

struct statfs_ctx {
	struct inode *ino;
	struct p9_statfs st;
};

static int do_statfs(struct op *o, void *arg)
{
	struct statfs_ctx *x = arg;
	uint32_t fid;
	int e = ino_fid(o, x->ino, &fid);
	return e < 0 ? e : p9c_statfs(o->c, fid, &x->st);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct pf *pf = fuse_req_userdata(req);
	struct statfs_ctx x = { .ino = ino_of(pf, ino) };
	struct statvfs sv = { 0 };
	int e;

	if ((e = run(pf, do_statfs, &x)) < 0) {
		reply_err(req, e);
		return;
	}
	sv.f_bsize = sv.f_frsize = x.st.bsize;
	sv.f_blocks = x.st.blocks;
	sv.f_bfree = x.st.bfree;
	sv.f_bavail = x.st.bavail;
	sv.f_files = x.st.files;
	sv.f_ffree = sv.f_favail = x.st.ffree;
	sv.f_fsid = x.st.fsid;
	sv.f_namemax = x.st.namelen;
	fuse_reply_statfs(req, &sv);
}

/* --- extended attributes ------------------------------------------- */

struct xattr_ctx {
	struct inode *ino;
	const char *name; /* "" lists */
	const char *value;
	size_t size;
	int flags;
	char *out;
	uint64_t len;
	int remove;
};

static int do_getxattr(struct op *o, void *arg)
{
	struct xattr_ctx *x = arg;
	uint32_t fid, nf;
	ssize_t n;
	int e;

	if ((e = ino_fid(o, x->ino, &fid)) < 0 || (e = p9c_fid_alloc(o->c, &nf)) < 0)
		return e;
	if ((e = p9c_xattrwalk(o->c, fid, nf, x->name, &x->len)) < 0) {
		p9c_fid_release(o->c, nf);
		return e;
	}
	if (x->size) {
		if (x->len > x->size) {
			e = -ERANGE;
		} else if (!(x->out = malloc(x->len ? x->len : 1))) {
			e = -ENOMEM;
		} else if ((n = p9c_read(o->c, nf, 0, x->out, x->len)) < 0) {
			e = (int)n;
		} else {
			x->len = (uint64_t)n;
		}
		if (e < 0) {
			free(x->out);
			x->out = NULL;
		}
	}
	fid_drop(o, nf);
	return e;
}

static void getxattr_common(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct pf *pf = fuse_req_userdata(req);
	struct xattr_ctx x = { .ino = ino_of(pf, ino), .name = name, .size = size };
	int k = *name ? asked_index(name) : -1, e;

	if (absent_known(x.ino, k)) {
		reply_err(req, ENODATA);
		return;
	}
	e = run(pf, do_getxattr, &x);
	if (k >= 0 && (e == -ENODATA || e == -EOPNOTSUPP))
		absent_note(x.ino, 1u << k);
	else if (!*name && e == 0 && x.out)
		absent_note(x.ino, absent_from_list(x.out, (size_t)x.len));
	if (e < 0)
		reply_err(req, e == -EOPNOTSUPP ? ENODATA : e);
	else if (!size)
		fuse_reply_xattr(req, (size_t)x.len);
	else
		fuse_reply_buf(req, x.out, (size_t)x.len);
	free(x.out);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (!*name) {
		reply_err(req, EINVAL);
		return;
	}
	getxattr_common(req, ino, name, size);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	getxattr_common(req, ino, "", size);
}

static int do_setxattr(struct op *o, void *arg)
{
	struct xattr_ctx *x = arg;
	uint32_t fid, nf;
	struct p9_qid q;
	ssize_t n;
	int e;

	if ((e = ino_fid(o, x->ino, &fid)) < 0 || (e = walk1(o, fid, "", &nf, &q)) < 0)
		return e;
	if ((e = p9c_xattrcreate(o->c, nf, x->name, x->remove ? 0 : x->size,
				 x->remove ? XATTR_REPLACE : (uint32_t)x->flags)) < 0) {
		fid_drop(o, nf);
		return e;
	}
	if (!x->remove && x->size && (n = p9c_write(o->c, nf, 0, x->value, x->size)) !=
					     (ssize_t)x->size) {
		fid_drop(o, nf);
		return n < 0 ? (int)n : -EIO;
	}
	/* The value is set when the fid is clunked: its answer is ours. */
	e = p9c_clunk(o->c, nf);
	p9c_fid_release(o->c, nf);
	return e;
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct pf *pf = fuse_req_userdata(req);
	struct xattr_ctx x = { .ino = ino_of(pf, ino), .name = name, .value = value,
			       .size = size, .flags = flags };
	absent_forget(x.ino, asked_index(name));
	reply_err(req, run(pf, do_setxattr, &x));
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct pf *pf = fuse_req_userdata(req);
	struct xattr_ctx x = { .ino = ino_of(pf, ino), .name = name, .remove = 1 };
	reply_err(req, run(pf, do_setxattr, &x));
}

/* --- POSIX locks --------------------------------------------------- */

struct lock_ctx {
	struct handle *h;
	struct p9c_flock fl;
	uint8_t status;
	int get;
};

static int do_lock(struct op *o, void *arg)
{
	struct lock_ctx *x = arg;
	uint32_t fid;
	int e = fh_fid(o, x->h, &fid);
	if (e < 0)
		return e;
	return x->get ? p9c_getlock(o->c, fid, &x->fl) : p9c_lock(o->c, fid, &x->fl, &x->status);
}

static void flock_to_p9(const struct flock *lk, uint64_t owner, struct p9c_flock *fl)
{
	memset(fl, 0, sizeof(*fl));
	fl->type = lk->l_type == F_RDLCK ? P9_LOCK_TYPE_RDLCK :
		   lk->l_type == F_WRLCK ? P9_LOCK_TYPE_WRLCK : P9_LOCK_TYPE_UNLCK;
	fl->start = (uint64_t)lk->l_start;
	fl->length = (uint64_t)lk->l_len;
	fl->proc_id = (uint32_t)lk->l_pid;
	/* The kernel's lock owner tells lockers apart: it names the client. */
	snprintf(fl->client_id, sizeof(fl->client_id), "metac-%016llx", (unsigned long long)owner);
}

static void ll_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	struct pf *pf = fuse_req_userdata(req);
	struct lock_ctx x = { .h = (struct handle *)(uintptr_t)fi->fh };
	int e;

	x.get = 1;
	flock_to_p9(lock, fi->lock_owner, &x.fl);
	if ((e = run(pf, do_lock, &x)) < 0) {
		reply_err(req, e);
		return;
	}
	lock->l_type = x.fl.type == P9_LOCK_TYPE_RDLCK ? F_RDLCK :
		       x.fl.type == P9_LOCK_TYPE_WRLCK ? F_WRLCK : F_UNLCK;
	lock->l_start = (off_t)x.fl.start;
	lock->l_len = (off_t)x.fl.length;
	lock->l_pid = (pid_t)x.fl.proc_id;
	fuse_reply_lock(req, lock);
}

static void ll_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct pf *pf = fuse_req_userdata(req);
	struct lock_ctx x = { .h = (struct handle *)(uintptr_t)fi->fh };
	int e;

	flock_to_p9(lock, fi->lock_owner, &x.fl);
	/* A blocking lock is polled, as Linux's own 9p client does: the
	 * server answers BLOCKED rather than wait. */
	for (;;) {
		if ((e = run(pf, do_lock, &x)) < 0)
			break;
		if (x.status == P9_LOCK_SUCCESS)
			break;
		if (x.status != P9_LOCK_BLOCKED || !sleep) {
			e = x.status == P9_LOCK_BLOCKED ? -EAGAIN : -ENOLCK;
			break;
		}
		if (fuse_req_interrupted(req)) {
			e = -EINTR;
			break;
		}
		usleep(50000);
	}
	reply_err(req, e);
}

/* --- session setup ------------------------------------------------- */

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
	struct pf *pf = userdata;
	unsigned io = pf->msize - P9_IOHDR;

	if (io > MAX_IO)
		io = MAX_IO;
	conn->max_write = io;
	conn->max_readahead = io;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* Listings always carry attributes on metac's server, where a
	 * batch's walks take one round trip. Not "auto": the kernel then
	 * asks for them only until the first plain batch, and find, which
	 * reads a whole directory before it stats, would get none. */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	if (pf->cfg->ordered && (conn->capable & FUSE_CAP_READDIRPLUS))
		conn->want |= FUSE_CAP_READDIRPLUS;
	else
		conn->want &= ~FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_POSIX_LOCKS)
		conn->want |= FUSE_CAP_POSIX_LOCKS;
	/* Not cached here: another client may change the file. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	__atomic_store_n(&pf->raise_ra, 1, __ATOMIC_RELAXED);
}

static const struct fuse_lowlevel_ops ll_ops = {
	.init = ll_init,
	.lookup = ll_lookup,
	.forget = ll_forget,
	.forget_multi = ll_forget_multi,
	.getattr = ll_getattr,
	.setattr = ll_setattr,
	.readlink = ll_readlink,
	.mknod = ll_mknod,
	.mkdir = ll_mkdir,
	.unlink = ll_unlink,
	.rmdir = ll_rmdir,
	.symlink = ll_symlink,
	.rename = ll_rename,
	.link = ll_link,
	.open = ll_open,
	.read = ll_read,
	.write = ll_write,
	.flush = ll_flush,
	.release = ll_release,
	.fsync = ll_fsync,
	.opendir = ll_opendir,
	.readdir = ll_readdir,
	.readdirplus = ll_readdirplus,
	.releasedir = ll_releasedir,
	.fsyncdir = ll_fsyncdir,
	.statfs = ll_statfs,
	.setxattr = ll_setxattr,
	.getxattr = ll_getxattr,
	.listxattr = ll_listxattr,
	.removexattr = ll_removexattr,
	.create = ll_create,
	.getlk = ll_getlk,
	.setlk = ll_setlk,
};

/* --- the request queue --------------------------------------------- */

static void raise_readahead(struct pf *pf, unsigned bytes);

static void *worker_main(void *arg)
{
	struct pf *pf = arg;
	uint64_t one = 1;

	for (;;) {
		struct qbuf *q;
		int wake;

		pthread_mutex_lock(&pf->qlock);
		while (!pf->head && !pf->quit)
			pthread_cond_wait(&pf->qcv, &pf->qlock);
		if (!pf->head) {
			pthread_mutex_unlock(&pf->qlock);
			free(io_buf);
			io_buf = NULL;
			return NULL;
		}
		q = pf->head;
		pf->head = q->next;
		if (!pf->head)
			pf->tail = NULL;
		pf->nqueued--;
		pthread_mutex_unlock(&pf->qlock);

		fuse_session_process_buf(pf->se, &q->fb);
		/* The kernel sets readahead from INIT's answer, just sent. */
		if (__atomic_exchange_n(&pf->raise_ra, 0, __ATOMIC_RELAXED))
			raise_readahead(pf, MAX_IO);

		pthread_mutex_lock(&pf->qlock);
		q->next = pf->free;
		pf->free = q;
		wake = pf->paused;
		pf->paused = 0;
		pthread_mutex_unlock(&pf->qlock);
		if (wake && write(pf->space_fd, &one, sizeof(one)) < 0) {
			/* The counter is full: the loop will look anyway. */
		}
	}
}

static void fuse_readable(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct pf *pf = arg;

	for (int i = 0; i < 8; i++) {
		struct qbuf *q;
		int n;

		pthread_mutex_lock(&pf->qlock);
		q = pf->free;
		if (q) {
			pf->free = q->next;
		} else if (pf->nbufs < P9FUSE_WORKERS + QUEUE_MAX &&
			   (q = calloc(1, sizeof(*q)))) {
			pf->nbufs++;
		} else {
			pf->paused = 1;
		}
		pthread_mutex_unlock(&pf->qlock);
		if (!q) {
			/* Every buffer is busy: wait for one (space_ready). */
			loop_watch_set(pf->fuse_w, 0);
			return;
		}
		n = fuse_session_receive_buf(pf->se, &q->fb);
		if (n <= 0) {
			pthread_mutex_lock(&pf->qlock);
			q->next = pf->free;
			pf->free = q;
			pthread_mutex_unlock(&pf->qlock);
			if (n == -EAGAIN || n == -EINTR || n == -ENOENT)
				return;
			/* ENODEV or 0: unmounted. */
			loop_stop(l);
			return;
		}
		if (fuse_session_exited(pf->se)) {
			loop_stop(l);
			return;
		}
		pthread_mutex_lock(&pf->qlock);
		q->next = NULL;
		if (pf->tail)
			pf->tail->next = q;
		else
			pf->head = q;
		pf->tail = q;
		pf->nqueued++;
		pthread_cond_signal(&pf->qcv);
		pthread_mutex_unlock(&pf->qlock);
	}
}

static void space_ready(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct pf *pf = arg;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0) {
		/* Nothing to read after all. */
	}
	if (fuse_session_exited(pf->se))
		loop_stop(l);
	else
		loop_watch_set(pf->fuse_w, EPOLLIN);
}

static void on_signal(struct loop *l, int signo, void *arg)
{
	struct pf *pf = arg;
	log_info("fuse %s: signal %d, unmounting", pf->cfg->mountpoint, signo);
	fuse_session_exit(pf->se);
	loop_stop(l);
}

static void on_hangup(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct pf *pf = arg;
	log_warn("fuse %s: the daemon is gone; unmounting", pf->cfg->mountpoint);
	fuse_session_exit(pf->se);
	loop_stop(l);
}

/* The sysfs file of the mount's readahead, opened at once (the bridge
 * may give up opening files before INIT comes), written once INIT is
 * answered (the kernel sets readahead from that answer): -1 if there is
 * none. The mount's device number comes from mountinfo, not stat():
 * nothing may touch the mount before the loop serves it. */
static int open_readahead(const char *mountpoint)
{
	struct mountinfo_ent e;
	char path[96];
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return -1;
	r = mountinfo_find(fd, mountpoint, "fuse.metac", &e);
	close(fd);
	if (r < 0)
		return -1;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", e.maj, e.min);
	return open(path, O_WRONLY | O_CLOEXEC);
}

/* Lets the kernel read ahead as much as one request carries. */
static void raise_readahead(struct pf *pf, unsigned bytes)
{
	char val[16];

	if (pf->ra_fd < 0)
		return;
	snprintf(val, sizeof(val), "%u", bytes / 1024);
	if (write(pf->ra_fd, val, strlen(val)) < 0)
		log_debug("fuse: cannot set the readahead: %m");
	close(pf->ra_fd);
	pf->ra_fd = -1;
}

static void stop_workers(struct pf *pf)
{
	struct sess *s;

	pthread_mutex_lock(&pf->qlock);
	pf->quit = 1;
	pthread_cond_broadcast(&pf->qcv);
	pthread_mutex_unlock(&pf->qlock);
	/* Calls waiting on the server fail now; waits for a reconnect end. */
	pthread_mutex_lock(&pf->lock);
	pf->gone = 1;
	if ((s = pf->cur))
		p9c_abort(s->c);
	pthread_cond_broadcast(&pf->cv);
	pthread_mutex_unlock(&pf->lock);
	for (int i = 0; i < pf->nworkers; i++)
		pthread_join(pf->workers[i], NULL);
	/* Writes still on their way are answered, or fail, now. */
	if (pf->has_completer) {
		pthread_mutex_lock(&pf->wlock);
		pf->wquit = 1;
		pthread_cond_broadcast(&pf->wcv);
		pthread_mutex_unlock(&pf->wlock);
		pthread_join(pf->completer, NULL);
	}
}

static void free_all(struct pf *pf)
{
	struct qbuf *q;

	while ((q = pf->head)) {
		pf->head = q->next;
		free(q->fb.mem);
		free(q);
	}
	while ((q = pf->free)) {
		pf->free = q->next;
		free(q->fb.mem);
		free(q);
	}
	/* Files still open when the kernel let go (a SIGTERM unmount). */
	while (pf->handles) {
		struct handle *h = pf->handles;
		pf->handles = h->next;
		pthread_mutex_destroy(&h->lock);
		free(h);
	}
	for (int i = 0; i < HASH_BUCKETS; i++) {
		while (pf->byq[i]) {
			struct inode *ino = pf->byq[i];
			pf->byq[i] = ino->qnext;
			pthread_mutex_destroy(&ino->lock);
			free(ino->name);
			free(ino);
		}
	}
	if (pf->cur) {
		p9c_close(pf->cur->c);
		free(pf->cur);
	}
}

int p9fuse_run(int fd, const struct p9fuse_config *cfg)
{
	struct pf *pf = calloc(1, sizeof(*pf));
	struct loop_signal *sigs[3] = { NULL };
	struct loop_watch *hup_w = NULL, *space_w = NULL;
	struct sess *s = NULL;
	char fsname[160], why[256];
	char *argv[] = { "metac", "-o", fsname, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	int e, mounted = 0;

	if (!pf) {
		close(fd);
		cfg->mounted(cfg->arg, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	pf->cfg = cfg;
	pf->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : P9FUSE_TIMEOUT_MS;
	pf->space_fd = -1;
	pf->ra_fd = -1;
	pthread_mutex_init(&pf->lock, NULL);
	pthread_mutex_init(&pf->qlock, NULL);
	pthread_mutex_init(&pf->wlock, NULL);
	pthread_cond_init(&pf->wcv, NULL);
	pthread_cond_init(&pf->qcv, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&pf->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	pf->root.nlookup = 1;
	pthread_mutex_init(&pf->root.lock, NULL);

	if ((e = sess_open(pf, fd, &s)) < 0) {
		snprintf(why, sizeof(why), "the 9p server refused the session: %s", strerror(-e));
		goto fail;
	}
	pf->msize = p9c_msize(s->c);
	sess_install(pf, s);

	snprintf(fsname, sizeof(fsname),
		 "fsname=%s,subtype=metac,allow_other,default_permissions%s",
		 cfg->fsname ? cfg->fsname : "metac", cfg->read_only ? ",ro" : "");
	if (!(pf->loop = loop_new())) {
		e = -ENOMEM;
		snprintf(why, sizeof(why), "out of memory");
		goto fail;
	}
	/* Blocked before the workers start, so that they inherit it. */
	sigs[0] = loop_signal_new(pf->loop, SIGTERM, on_signal, pf);
	sigs[1] = loop_signal_new(pf->loop, SIGINT, on_signal, pf);
	sigs[2] = loop_signal_new(pf->loop, SIGHUP, on_signal, pf);
	signal(SIGPIPE, SIG_IGN);
	if (!(pf->se = fuse_session_new(&args, &ll_ops, sizeof(ll_ops), pf))) {
		e = -EINVAL;
		snprintf(why, sizeof(why), "libfuse refused the options");
		goto fail;
	}
	if (fuse_session_mount(pf->se, cfg->mountpoint) != 0) {
		e = -EIO;
		snprintf(why, sizeof(why), "cannot mount FUSE on %s (is /dev/fuse there?)",
			 cfg->mountpoint);
		goto fail;
	}
	mounted = 1;
	pf->ra_fd = open_readahead(cfg->mountpoint);
	if ((pf->space_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		e = -errno;
		snprintf(why, sizeof(why), "eventfd: %s", strerror(-e));
		goto fail;
	}
	fcntl(fuse_session_fd(pf->se), F_SETFL,
	      fcntl(fuse_session_fd(pf->se), F_GETFL) | O_NONBLOCK);
	pf->fuse_w = loop_watch_fd(pf->loop, fuse_session_fd(pf->se), EPOLLIN, fuse_readable, pf);
	space_w = loop_watch_fd(pf->loop, pf->space_fd, EPOLLIN, space_ready, pf);
	if (cfg->hangup_fd >= 0)
		hup_w = loop_watch_fd(pf->loop, cfg->hangup_fd, EPOLLRDHUP, on_hangup, pf);
	if (!pf->fuse_w || !space_w || (cfg->hangup_fd >= 0 && !hup_w)) {
		e = -ENOMEM;
		snprintf(why, sizeof(why), "out of memory");
		goto fail;
	}
	/* Everything opened: the caller may give up the rest. */
	if (cfg->confine && (e = cfg->confine(cfg->arg, why, sizeof(why))) < 0)
		goto fail;
	for (int i = 0; i < P9FUSE_WORKERS; i++) {
		if (pthread_create(&pf->workers[i], NULL, worker_main, pf) != 0)
			break;
		pf->nworkers++;
	}
	if (!pf->nworkers) {
		e = -EAGAIN;
		snprintf(why, sizeof(why), "cannot start threads");
		goto fail;
	}
	/* Write-behind needs writes to one fid kept in order: our server. */
	if (cfg->ordered && pthread_create(&pf->completer, NULL, completer_main, pf) == 0)
		pf->has_completer = 1;
	cfg->mounted(cfg->arg, 0, NULL);
	loop_run(pf->loop);
	e = 0;
	goto out;
fail:
	cfg->mounted(cfg->arg, e, why);
out:
	if (pf->se)
		fuse_session_exit(pf->se);
	stop_workers(pf);
	if (pf->fuse_w)
		loop_watch_del(pf->fuse_w);
	if (space_w)
		loop_watch_del(space_w);
	if (hup_w)
		loop_watch_del(hup_w);
	for (int i = 0; i < 3; i++)
		if (sigs[i])
			loop_signal_del(sigs[i]);
	if (pf->se) {
		if (mounted && (!cfg->unmount ||
				cfg->unmount(cfg->arg, fuse_session_fd(pf->se)) < 0))
			fuse_session_unmount(pf->se);
		fuse_session_destroy(pf->se);
	}
	if (pf->ra_fd >= 0)
		close(pf->ra_fd);
	if (pf->loop)
		loop_free(pf->loop);
	if (pf->space_fd >= 0)
		close(pf->space_fd);
	free_all(pf);
	pthread_mutex_destroy(&pf->root.lock);
	pthread_cond_destroy(&pf->cv);
	pthread_cond_destroy(&pf->qcv);
	pthread_mutex_destroy(&pf->qlock);
	pthread_cond_destroy(&pf->wcv);
	pthread_mutex_destroy(&pf->wlock);
	pthread_mutex_destroy(&pf->lock);
	fuse_opt_free_args(&args);
	free(pf);
	return e;
}
