/*
 * A 9P2000.L client over one connected stream socket, for callers that
 * have many requests in flight from many threads (the FUSE bridge).
 *
 * Every operation is a blocking call that any thread may make at any
 * time: it takes a tag, sends its T-message, and sleeps until a single
 * reader thread hands it the reply. Calls return 0 (or a byte count)
 * on success and a negative errno otherwise:
 *   -E...        the server's Rlerror
 *   -EPROTO      a malformed reply, or one of the wrong type
 *   -ECONNRESET  the connection is gone (every waiter fails at once)
 *   -ETIMEDOUT   no reply within the session's timeout (see
 *                p9c_set_timeout); the request was flushed
 * A server that breaks framing (a size above msize or below 7, a tag
 * nobody waits for, a reply type that does not answer the request)
 * loses the connection.
 *
 * Fids are the caller's to manage: p9c_fid_alloc hands out numbers that
 * are free on this session, and the caller clunks them on the server
 * before p9c_fid_release.
 */
#ifndef METAC_FS9P_CLIENT_H
#define METAC_FS9P_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fs9p/p9.h"
#include "lib/buf.h"

struct p9c;

/* Requests in flight at once; further callers wait for a free tag. */
#define P9C_MAX_TAGS 1024
/* How long p9c_open waits for Rversion. */
#define P9C_VERSION_TIMEOUT_MS 10000

/* Negotiates 9P2000.L with an msize of at most want_msize (clamped to
 * [P9_MIN_MSIZE, P9_MAX_MSIZE]) on fd, a connected stream socket, and
 * starts the reader thread. Takes fd only on success. -EPROTONOSUPPORT
 * if the server speaks another version. */
int p9c_open(int fd, uint32_t want_msize, struct p9c **out);
/* Fails every call in flight with -ECONNRESET, waits for them to
 * return, stops the reader and closes fd. No call may start after
 * p9c_close has begun. */
void p9c_close(struct p9c *c);
/* Gives the connection up: every call in flight and every later one
 * fails with -ECONNRESET at once. p9c_close is still to be called. */
void p9c_abort(struct p9c *c);
uint32_t p9c_msize(const struct p9c *c);
/* Per-call timeout for later calls, 0 for none (the default). A call
 * that times out sends Tflush and waits up to the same time again (at
 * least 100 ms) for Rflush. If the server answers the request before
 * the Rflush, that answer is returned rather than -ETIMEDOUT, so that
 * a walk or create that did happen is not lost. */
void p9c_set_timeout(struct p9c *c, unsigned timeout_ms);

/* A fid number free on this session (never P9_NOFID); -EMFILE when
 * P9C_MAX_FIDS are taken. */
#define P9C_MAX_FIDS (1u << 20)
int p9c_fid_alloc(struct p9c *c, uint32_t *fid);
void p9c_fid_release(struct p9c *c, uint32_t fid);

/* afid is P9_NOFID without authentication. */
int p9c_attach(struct p9c *c, uint32_t fid, uint32_t afid, const char *uname,
	       const char *aname, uint32_t n_uname, struct p9_qid *qid);
/* Walks nwname (<= P9_MAXWELEM) names from fid to newfid; qids (may be
 * NULL) receives one qid per name. nwname 0 clones fid. A walk that
 * stops early fails with -ENOENT and leaves newfid unused (it is
 * clunked, for servers that keep it anyway); with fid == newfid, fid's
 * place is then up to the server (diod moves it), so clunk it. */
int p9c_walk(struct p9c *c, uint32_t fid, uint32_t newfid, unsigned nwname,
	     const char *const *wnames, struct p9_qid *qids);
/* Walks a '/'-separated relative path ("" clones), in several Twalks
 * when it has more than P9_MAXWELEM names. qid (may be NULL) gets the
 * last name's qid; it is left alone for an empty path. On failure
 * newfid is unused. */
int p9c_walk_path(struct p9c *c, uint32_t fid, uint32_t newfid, const char *path,
		  struct p9_qid *qid);

/* flags are P9_DOTL_*; qid and iounit may be NULL. */
int p9c_lopen(struct p9c *c, uint32_t fid, uint32_t flags, struct p9_qid *qid,
	      uint32_t *iounit);
/* Creates name in the directory fid and opens it; fid becomes the new
 * file. */
int p9c_lcreate(struct p9c *c, uint32_t fid, const char *name, uint32_t flags,
		uint32_t mode, uint32_t gid, struct p9_qid *qid, uint32_t *iounit);

/* Reads and writes of any size, split into requests of at most
 * msize - P9_IOHDR bytes. A read ends at the first empty Rread (end of
 * file) and a write at the first short Rwrite; both return the bytes
 * moved, or -errno if the first request failed. */
ssize_t p9c_read(struct p9c *c, uint32_t fid, uint64_t offset, void *buf, size_t count);
ssize_t p9c_write(struct p9c *c, uint32_t fid, uint64_t offset, const void *buf,
		  size_t count);

/* One Twrite (at most msize - P9_IOHDR bytes) in two halves, for
 * callers that go on while it travels: start sends it (buf may be
 * reused at once), finish waits for the answer, returns the bytes
 * written or -errno, and frees what start made. NULL: out of memory. */
struct p9c_pending;
struct p9c_pending *p9c_write_start(struct p9c *c, uint32_t fid, uint64_t offset,
				    const void *buf, uint32_t n);
ssize_t p9c_write_finish(struct p9c *c, struct p9c_pending *w);

int p9c_getattr(struct p9c *c, uint32_t fid, uint64_t request_mask, uint64_t *valid,
		struct p9_qid *qid, struct p9_attr *attr);
int p9c_setattr(struct p9c *c, uint32_t fid, const struct p9_setattr *sa);

/*
 * Reads directory entries from an open directory fid at the cookie
 * offset (0 to start, then the last entry's offset) into buf: returns
 * the bytes stored (at most count, and at most msize - 11), 0 at the
 * end. Decode them with p9c_dirent_next over a struct rd set on buf.
 */
ssize_t p9c_readdir(struct p9c *c, uint32_t fid, uint64_t offset, void *buf,
		    size_t count);
struct p9c_dirent {
	struct p9_qid qid;
	uint64_t offset; /* cookie for the next Treaddir */
	uint8_t type;    /* DT_* */
	const char *name; /* into the buffer, not NUL-terminated */
	uint16_t namelen;
};
/* 1 and the next entry, 0 at the end, -EPROTO for a truncated entry or
 * a name that is empty or holds '/' or NUL. */
int p9c_dirent_next(struct rd *r, struct p9c_dirent *d);

int p9c_mkdir(struct p9c *c, uint32_t dfid, const char *name, uint32_t mode,
	      uint32_t gid, struct p9_qid *qid);
int p9c_symlink(struct p9c *c, uint32_t dfid, const char *name, const char *target,
		uint32_t gid, struct p9_qid *qid);
int p9c_mknod(struct p9c *c, uint32_t dfid, const char *name, uint32_t mode,
	      uint32_t major, uint32_t minor, uint32_t gid, struct p9_qid *qid);
int p9c_link(struct p9c *c, uint32_t dfid, uint32_t fid, const char *name);
/* The target, NUL-terminated, into buf; returns its length, or
 * -ENAMETOOLONG if it does not fit size - 1 bytes. */
int p9c_readlink(struct p9c *c, uint32_t fid, char *buf, size_t size);
int p9c_rename(struct p9c *c, uint32_t fid, uint32_t dfid, const char *name);
int p9c_renameat(struct p9c *c, uint32_t olddfid, const char *oldname,
		 uint32_t newdfid, const char *newname);
/* flags: 0 or P9_AT_REMOVEDIR. */
int p9c_unlinkat(struct p9c *c, uint32_t dfid, const char *name, uint32_t flags);
/* Removes the file and clunks fid, even when the removal fails. */
int p9c_remove(struct p9c *c, uint32_t fid);
int p9c_clunk(struct p9c *c, uint32_t fid);
int p9c_fsync(struct p9c *c, uint32_t fid, int datasync);
int p9c_statfs(struct p9c *c, uint32_t fid, struct p9_statfs *st);

/* Opens name's value (name "" lists the names, NUL-separated) for
 * reading on newfid with p9c_read; *size is its length. */
int p9c_xattrwalk(struct p9c *c, uint32_t fid, uint32_t newfid, const char *name,
		  uint64_t *size);
/* Turns fid into a sink for a value of exactly size bytes, written with
 * p9c_write and set when fid is clunked. flags: XATTR_CREATE/REPLACE. */
int p9c_xattrcreate(struct p9c *c, uint32_t fid, const char *name, uint64_t size,
		    uint32_t flags);

/*
 * Compounds: a few requests that would each wait for the one before,
 * sent at once when the server keeps per-fid order (metac's does; say
 * so with p9c_set_ordered), else one after the other. On failure newfid
 * is unused (clunked if it was made).
 *   walk_getattr   Twalk(fid, newfid, name or "" to clone), Tgetattr
 *   clone_lopen    Twalk(fid, newfid), Tlopen(newfid)
 *   clone_lcreate  Twalk(dfid, newfid), Tlcreate(newfid), Tgetattr:
 *                  newfid is the new file, open
 */
void p9c_set_ordered(struct p9c *c, int on);
int p9c_walk_getattr(struct p9c *c, uint32_t fid, uint32_t newfid, const char *name,
		     struct p9_qid *qid, struct p9_attr *attr);
/*
 * A batch: independent requests (say, one per entry of a listing) sent
 * together on a server that keeps per-fid order, one by one elsewhere.
 * Each request's outcome goes to its err (set to 0 when added; strings
 * and outputs must live until the batch runs). p9c_batch_run runs and
 * frees it. NULL: out of memory. Adding past max sets err -ENOBUFS.
 */
struct p9c_batch;
struct p9c_batch *p9c_batch_new(struct p9c *c, unsigned max);
void p9c_batch_walk_getattr(struct p9c_batch *b, uint32_t dfid, uint32_t newfid,
			    const char *name, struct p9_qid *qid, struct p9_attr *attr, int *err);
void p9c_batch_getattr(struct p9c_batch *b, uint32_t fid, struct p9_qid *qid,
		       struct p9_attr *attr, int *err);
void p9c_batch_clunk(struct p9c_batch *b, uint32_t fid, int *err);
/* fid's xattr names (NUL-separated) into buf, through xfid (a free fid,
 * free again after): -ERANGE if they do not fit. */
void p9c_batch_xattr_names(struct p9c_batch *b, uint32_t fid, uint32_t xfid, void *buf,
			   size_t bufsz, size_t *len, int *err);
void p9c_batch_run(struct p9c_batch *b);
int p9c_clone_lopen(struct p9c *c, uint32_t fid, uint32_t newfid, uint32_t flags,
		    struct p9_qid *qid);
int p9c_clone_lcreate(struct p9c *c, uint32_t dfid, uint32_t newfid, const char *name,
		      uint32_t flags, uint32_t mode, uint32_t gid, struct p9_qid *qid,
		      struct p9_attr *attr);

/* Tlock/Tgetlock. client_id is sent NUL-terminated, and Rgetlock's is
 * copied back (cut to fit). */
struct p9c_flock {
	uint8_t type;   /* P9_LOCK_TYPE_* */
	uint32_t flags; /* P9_LOCK_FLAGS_*, Tlock only */
	uint64_t start, length;
	uint32_t proc_id;
	char client_id[256];
};
/* *status: P9_LOCK_SUCCESS, _BLOCKED, _ERROR or _GRACE. */
int p9c_lock(struct p9c *c, uint32_t fid, const struct p9c_flock *fl, uint8_t *status);
/* fl in: the lock wanted; out: the conflicting lock, or type
 * P9_LOCK_TYPE_UNLCK if none. */
int p9c_getlock(struct p9c *c, uint32_t fid, struct p9c_flock *fl);

#endif
