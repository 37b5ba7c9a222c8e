/*
 * A small blocking NBD client over a connected stream descriptor, for
 * `metac block copy`: fixed newstyle negotiation with structured replies
 * and base:allocation, then requests that may be pipelined (submit
 * several, then complete them in any order).
 *
 * The server is not trusted: every reply is checked against the request
 * it answers (cookie, chunk types, offsets and lengths within the
 * request), and anything off fails the connection with a reason.
 */
#ifndef METAC_NBD_CLIENT_H
#define METAC_NBD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#define NBD_CLIENT_MAX_INFLIGHT 64

struct nbd_client;

/* Negotiates the export named name ("" for the default). NULL with a
 * reason in err on failure; fd is closed then too. */
struct nbd_client *nbd_client_new(int fd, const char *name, char *err, size_t errsz);
/* Sends NBD_CMD_DISC (if the connection still works) and closes it. */
void nbd_client_free(struct nbd_client *c);
uint64_t nbd_client_size(const struct nbd_client *c);
/* The transmission flags (NBD_FLAG_*). */
uint16_t nbd_client_flags(const struct nbd_client *c);
/* Whether base:allocation was agreed (block status works). */
int nbd_client_has_block_status(const struct nbd_client *c);
/* The last error, for messages. */
const char *nbd_client_error(const struct nbd_client *c);

/* Sends one request. For NBD_CMD_WRITE, data holds length bytes; for
 * NBD_CMD_READ, the reply lands in buf (length bytes, valid once the
 * request completes). 0 or -errno (the connection is then unusable). */
int nbd_client_submit(struct nbd_client *c, uint16_t type, uint16_t flags, uint64_t offset,
		      uint32_t length, const void *data, void *buf);
/* Waits for the next request to complete: *err gets 0 or the server's
 * NBD error for it. Returns 0, -EAGAIN when nothing is in flight, or
 * -errno when the connection failed. */
int nbd_client_complete(struct nbd_client *c, int *err);

/* Synchronous helpers (nothing else may be in flight). Each returns 0,
 * a positive NBD error from the server, or -errno for a failed
 * connection. */
int nbd_client_read(struct nbd_client *c, uint64_t offset, uint32_t length, void *buf);
int nbd_client_flush(struct nbd_client *c);
/* base:allocation of [offset, offset+length): the first extent's length
 * and flags (NBD_STATE_*), so that callers walk extent by extent. */
int nbd_client_block_status(struct nbd_client *c, uint64_t offset, uint32_t length,
			    uint32_t *ext_len, uint32_t *ext_flags);

/* Feeds a server's replies to a client in the transmission phase, for
 * the fuzzer: the client believes requests are in flight and checks
 * what comes back. Returns 0 while it would go on, -errno where it
 * would have hung up. */
int nbd_client_fuzz_replies(const uint8_t *p, size_t n);

#endif
