/*
 * The FUSE bridge: a 9P2000.L session (fs9p/client.h) mounted as a local
 * directory through libfuse's low-level API.
 *
 * The calling thread runs an event loop that reads requests from
 * /dev/fuse and hands them to a pool of worker threads, each of which
 * makes blocking 9p calls: many requests are in flight at once, and
 * reads and writes go up to 1 MiB a request.
 *
 * When the 9p connection breaks, the first call to notice asks the
 * caller for a new one (reconnect), attaches again and walks every file
 * in use to its fid anew from the names it was reached by; open files
 * are opened again. Calls made meanwhile wait, up to timeout_ms from the
 * moment the connection broke; then they fail with EIO, and the next
 * call tries again. Nothing hangs for good.
 */
#ifndef METAC_FS9P_FUSE_H
#define METAC_FS9P_FUSE_H

#include <stdint.h>

#define P9FUSE_WORKERS 16
#define P9FUSE_TIMEOUT_MS 30000

struct p9fuse_config {
	const char *mountpoint;
	/* Attach as this user (n_uname); the server shows files as theirs
	 * by default. gid is the group new files get. */
	uint32_t uid, gid;
	const char *aname; /* the tree to attach (diod: its export); NULL: "" */
	const char *fsname; /* in /proc/mounts; never a secret */
	int read_only;
	/* The server keeps per-fid order (metac's does): dependent requests
	 * are sent together. */
	int ordered;
	unsigned timeout_ms; /* 0: P9FUSE_TIMEOUT_MS */
	/* A new connected 9p stream socket after the last one broke, or
	 * -errno (-EPIPE: never again; the bridge unmounts). Called from a
	 * worker thread, one call at a time; may block up to deadline_ms
	 * (CLOCK_MONOTONIC milliseconds). NULL: no reconnecting. */
	int (*reconnect)(void *arg, uint64_t deadline_ms);
	/* Called once the mount is in place (err 0) or could not be made
	 * (err and why). */
	void (*mounted)(void *arg, int err, const char *why);
	/* When this descriptor hangs up (-1: none), the bridge unmounts and
	 * returns: the daemon that owns the mount is gone. */
	int hangup_fd;
	/* Called once mounted with every descriptor open, before the worker
	 * threads start: the caller may drop privileges (0, or -errno and
	 * why; then the mount ends). NULL: nothing. */
	int (*confine)(void *arg, char *why, size_t whysz);
	/* Unmounts in place of libfuse, which could not once confined:
	 * fuse_fd is the session's descriptor. NULL, or -1 returned:
	 * libfuse does it. */
	int (*unmount)(void *arg, int fuse_fd);
	void *arg;
};

/* Mounts the 9p server on fd (a connected stream socket, taken over) at
 * cfg->mountpoint and serves it until it is unmounted, SIGTERM or SIGINT
 * arrives, or hangup_fd hangs up. Returns 0, or -errno when it could not
 * mount (after cfg->mounted said why). */
int p9fuse_run(int fd, const struct p9fuse_config *cfg);

#endif
