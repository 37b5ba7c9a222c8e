/*
 * An NBD server for one export (a regular file or a block device) over
 * any connected stream descriptor: fixed newstyle negotiation (EXPORT_NAME,
 * ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with
 * base:allocation) and the transmission phase (READ, WRITE, FLUSH, TRIM,
 * CACHE, WRITE_ZEROES, BLOCK_STATUS, DISC; FUA everywhere).
 *
 * Each session runs NBD_SRV_THREADS threads that take turns reading a
 * request and then run it, so many requests are in flight and replies
 * may go out of order, as the protocol allows. Every connection
 * shares the file's page cache, so the export offers CAN_MULTI_CONN.
 *
 * Replies go out with write and sendfile: the process must ignore
 * SIGPIPE, or a client that hangs up kills it.
 *
 * Nothing from the client is trusted: a request beyond the end, not
 * aligned to the minimum block size, larger than NBD_MAX_PAYLOAD or with
 * a flag it may not carry gets the protocol's error; a malformed header,
 * an oversized option or a write payload too large to read is a hard
 * disconnect.
 */
#ifndef METAC_NBD_SERVER_H
#define METAC_NBD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#define NBD_SRV_THREADS 8 /* so as many requests in flight */
/* Payload bytes of requests in flight (reads' replies, writes' data). */
#define NBD_SRV_MAX_INFLIGHT_BYTES (128u << 20)
/* Negotiation must end within this, and within this many options. */
#define NBD_SRV_HANDSHAKE_TIMEOUT_MS 10000
#define NBD_SRV_MAX_OPTIONS 256
#define NBD_SRV_MAX_OPTION_LEN (64u << 10)
/* Extents in one BLOCK_STATUS reply. */
#define NBD_SRV_MAX_EXTENTS 4096

struct nbd_export;

/* Opens path (a regular file or block device, no symlink at the last
 * name) for an export named name (the default export "" is always
 * accepted too). A file that cannot be opened for writing is exported
 * read-only when *read_only is 0 and it says so by setting *read_only.
 * NULL with -errno in *err. */
struct nbd_export *nbd_export_open(const char *path, const char *name, int *read_only,
				   int *err);
/* The same over an open descriptor (taken over, closed on failure). */
struct nbd_export *nbd_export_new(int fd, const char *name, int read_only, int *err);
void nbd_export_ref(struct nbd_export *ex);
void nbd_export_unref(struct nbd_export *ex);
uint64_t nbd_export_size(const struct nbd_export *ex);
int nbd_export_read_only(const struct nbd_export *ex);
uint32_t nbd_export_min_block(const struct nbd_export *ex);
/* The export's descriptor (still the export's) and name. */
int nbd_export_fd(const struct nbd_export *ex);
const char *nbd_export_name(const struct nbd_export *ex);
/* Requests must be aligned to this (a power of two, at most 65536):
 * 1 for regular files, the logical sector size for block devices. */
void nbd_export_set_min_block(struct nbd_export *ex, uint32_t min_block);

/* Serves one session on fd until the client disconnects or breaks the
 * protocol; closes fd. Runs in the calling thread plus its workers. */
int nbd_serve(struct nbd_export *ex, int fd);
/* The same in a detached thread, which holds a reference to ex. Takes fd
 * (closed on failure too). 0 or -errno. */
int nbd_serve_async(struct nbd_export *ex, int fd);

/* A session without threads, for tests and fuzzing: bytes fed are
 * buffered, every whole message is handled at once and what the server
 * sends is appended to out (the greeting on the first call). Returns 0
 * while the session goes on, 1 once the client ended it (NBD_CMD_DISC,
 * NBD_OPT_ABORT), or -errno where a real session would hard-disconnect. */
struct buf;
struct nbd_session;
struct nbd_session *nbd_session_new(struct nbd_export *ex);
int nbd_session_feed(struct nbd_session *s, const uint8_t *p, size_t n, struct buf *out);
void nbd_session_free(struct nbd_session *s);

#endif
