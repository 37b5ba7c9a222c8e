/*
 * A 9P2000.L file server for one exported directory, over any connected
 * stream descriptor. Each session reads requests in a thread of its own
 * and runs them on a few worker threads, so many requests are in flight
 * at once and no event loop ever waits for a disk.
 *
 * Nothing a client names leaves the export: every file is reached one
 * name at a time from the export's root with no symlink followed, ".."
 * stops at the root, and symlinks are served as symlinks. Device nodes
 * can be listed but neither created nor opened.
 */
#ifndef METAC_FS9P_SERVER_H
#define METAC_FS9P_SERVER_H

#include <stddef.h>
#include <stdint.h>

enum p9_idmap {
	/* Files appear owned by the attaching user (n_uname); ownership
	 * cannot be changed. The default: the share is the mounter's. */
	P9_MAP_MOUNTER,
	/* Numeric ids are shown and set as they are on the server. */
	P9_MAP_PASSTHROUGH,
};

struct p9_export {
	int rootfd; /* O_PATH directory descriptor of the export root */
	int read_only;
	enum p9_idmap map;
	int refs;   /* sessions and owners; see p9_export_new */
};

/* Per-session limits. */
#define P9_SRV_WORKERS 4
#define P9_SRV_MAX_INFLIGHT 32
#define P9_SRV_MAX_FIDS 16384
#define P9_SRV_MAX_XATTR (64u << 10)

/* Opens dir as an export root (a directory, not a symlink). Returns an
 * O_PATH descriptor or -errno. */
int p9_export_open(const char *dir);

/* A shared export of dir: freed (its root closed) when the last of its
 * owner and its sessions lets go. NULL with *err on failure. */
struct p9_export *p9_export_new(const char *dir, int read_only, enum p9_idmap map,
				int *err);
void p9_export_ref(struct p9_export *ex);
void p9_export_unref(struct p9_export *ex);

/* Serves one session on fd until the client goes or breaks the protocol;
 * closes fd. Runs in the calling thread (plus its workers). */
int p9_serve(const struct p9_export *ex, int fd);

/* The same in a detached thread, which holds a reference to ex (from
 * p9_export_new). Takes fd, closes it on failure too. 0 or -errno. */
int p9_serve_async(struct p9_export *ex, int fd);

/* A session without threads, for tests and fuzzing: each whole message
 * fed is handled at once and its reply appended to out. A negative
 * return means a real session would have closed. */
struct buf;
struct p9_session;
struct p9_session *p9_session_new(const struct p9_export *ex);
int p9_session_feed(struct p9_session *s, const uint8_t *msg, size_t len,
		    struct buf *out);
void p9_session_free(struct p9_session *s);

#endif
