/*
 * A secure connection on the event loop: the Noise IK handshake, then a
 * stream of records, each sealed in one length-prefixed AEAD frame:
 *
 *   u32 big-endian length L | L bytes of ChaChaPoly ciphertext (tag included)
 *
 * The length is authenticated as associated data; nonces are the Noise
 * counters; both sides rekey (Noise REKEY) after every WIRE_REKEY_RECORDS
 * records in a direction. The first frame that fails to authenticate, or
 * claims more than WIRE_MAX_RECORD bytes, closes the connection.
 *
 * Plain mode (the local admin socket) has the same framing without the
 * handshake or encryption.
 *
 * Handshake messages are u16 big-endian length-prefixed (the Noise spec's
 * recommended framing); the prologue names the protocol version.
 */
#ifndef METAC_WIRE_CONN_H
#define METAC_WIRE_CONN_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct wire_conn;

#define WIRE_PROLOGUE "metac wire 1"
#define WIRE_MAX_RECORD (64 * 1024)
#define WIRE_REKEY_RECORDS (1u << 16)
/* A peer that stops mid-handshake is dropped after this. */
#define WIRE_HANDSHAKE_TIMEOUT_MS 10000
/* Pending output beyond this closes the connection: a peer that never
 * reads must not make us buffer without bound. */
#define WIRE_OUT_LIMIT (64u << 20)
/* wire_conn_ops.writable fires when output drains below this. */
#define WIRE_OUT_LOW (256u << 10)
/* A frame begun must be complete within this (wire_conn_sweep): a peer
 * that trickles a byte now and then cannot hold a connection's buffer. */
#define WIRE_FRAME_TIMEOUT_MS 30000

enum wire_mode { WIRE_PLAIN, WIRE_INITIATOR, WIRE_RESPONDER };

/*
 * What one peer's connections hold together. The owner (the node) charges
 * every connection of a peer to one account, so that the peer's share of
 * memory is bounded however many connections it opens: a connection whose
 * send would take the account's buffers past max_bytes is closed, as for
 * WIRE_OUT_LIMIT. rpc.c counts the peer's calls in progress here too.
 * Connections and calls hold references; free runs when the last goes.
 */
struct wire_acct {
	unsigned refs;
	unsigned conns;   /* connections charged to it */
	unsigned calls;   /* the peer's RPC calls being answered */
	size_t bytes;     /* buffer space of its connections */
	size_t max_bytes; /* 0: no limit */
	void (*free)(struct wire_acct *a);
};

struct wire_acct *wire_acct_ref(struct wire_acct *a);
void wire_acct_unref(struct wire_acct *a);

struct wire_conn_ops {
	/* Handshake finished (plain mode: at once, deferred). */
	void (*ready)(struct wire_conn *c, void *arg);
	/* One record; p is valid during the call only, and may be modified. */
	void (*record)(struct wire_conn *c, uint8_t *p, size_t n, void *arg);
	/* Pending output dropped below WIRE_OUT_LOW (flow control). */
	void (*writable)(struct wire_conn *c, void *arg);
	/* The connection is gone: err is 0 for an orderly close by the peer,
	 * else -errno. Called once; c is freed after it returns. */
	void (*closed)(struct wire_conn *c, int err, void *arg);
};

/* Takes ownership of fd (connected, or connecting: completion is
 * awaited). local_priv is this node's static key (unused in plain mode);
 * remote_pub is required for WIRE_INITIATOR. */
struct wire_conn *wire_conn_new(struct loop *l, int fd, enum wire_mode mode,
				const uint8_t *local_priv,
				const uint8_t *remote_pub,
				const struct wire_conn_ops *ops, void *arg);
/* Queue one record (n <= WIRE_MAX_RECORD) for sending: 0 or -errno. */
int wire_conn_send(struct wire_conn *c, const void *p, size_t n);
/* Queue bytes as as many records as needed. */
int wire_conn_send_stream(struct wire_conn *c, const void *p, size_t n);
/* Room to read n plaintext bytes straight into the output buffer, then
 * wire_conn_commit() seals them in place: saves a copy on data paths. */
uint8_t *wire_conn_reserve(struct wire_conn *c, size_t n);
int wire_conn_commit(struct wire_conn *c, size_t n);
size_t wire_conn_pending(const struct wire_conn *c);
/* Stop or resume delivering records (and reading the socket). */
void wire_conn_pause(struct wire_conn *c, int paused);
/* Close now, without calling ops->closed. Pending output is dropped. */
void wire_conn_close(struct wire_conn *c);
/* Close now, dropping pending output, and tell the owner: ops->closed(c,
 * err) runs at the next dispatch round, not from inside this call. Send
 * functions that fail the connection (output limit) behave the same. */
void wire_conn_abort(struct wire_conn *c, int err);
/* Aborts every live connection of loop l (as wire_conn_abort): for a
 * shutdown, so that owners let go of them while the loop still runs a
 * few rounds. Returns how many. */
int wire_conn_abort_all(struct loop *l, int err);
/* Connections of l not yet freed (freeing waits for a dispatch round). */
int wire_conn_count(struct loop *l);
/* Send what is pending, then close and call ops->closed(c, 0). */
void wire_conn_shutdown(struct wire_conn *c);
/* The peer's static public key (after ready; NULL in plain mode). */
const uint8_t *wire_conn_remote_key(const struct wire_conn *c);
int wire_conn_fd(const struct wire_conn *c);
void wire_conn_set_arg(struct wire_conn *c, void *arg);
/* Hand the connection to a new owner (e.g. from the hello record). */
void wire_conn_set_ops(struct wire_conn *c, const struct wire_conn_ops *ops,
		       void *arg);
struct loop *wire_conn_loop(const struct wire_conn *c);
/* Charge c's buffers to a as well (a reference is taken): a connection
 * may count against WIRE_MAX_ACCTS accounts (its peer's, its address's,
 * the node's); 0, or -ENOSPC. wire_conn_acct gives the first. */
#define WIRE_MAX_ACCTS 3
int wire_conn_charge(struct wire_conn *c, struct wire_acct *a);
struct wire_acct *wire_conn_acct(const struct wire_conn *c);
/* Closes the connections of l that have had a frame begun and not
 * finished for timeout_ms (their owners hear -ETIMEDOUT).
 * Call it every few seconds; returns how many it closed. */
int wire_conn_sweep(struct loop *l, uint64_t timeout_ms);

#endif
