/*
 * Capability RPC (DESIGN.md "Capabilities and sturdy refs").
 *
 * A capability (struct cap) is a reference-counted object with a call
 * entry point. It is either local (a service object) or an import: a proxy
 * for an object exported by the peer of an RPC connection. rpc_call() works
 * the same on both. Parameters and results are a struct msg: a typed,
 * bounds-checked encoding that can carry capabilities.
 *
 * Wire messages (one per record of a wire_conn): BOOTSTRAP, CALL, RETURN,
 * RELEASE, ABORT; the layout is described in rpc.c. Every export held by a
 * connection is released when it closes, and every call waiting on it
 * fails with -ECONNRESET.
 */
#ifndef METAC_RPC_H
#define METAC_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "proto/iface.h"

struct cap;
struct rpc_call;
struct rpc_conn;
struct wire_conn;

/* Limits on what a peer can make us hold. */
#define MSG_MAX_CAPS 16
#define RPC_MAX_ERRMSG 512
#define RPC_MAX_EXPORTS 4096
#define RPC_MAX_IMPORTS 4096
#define RPC_MAX_ANSWERS 128 /* calls from the peer in progress */
/* ... and over all the connections of one peer (its wire_acct). */
#define RPC_PEER_MAX_CALLS 512

/* --- messages ------------------------------------------------------ */

struct msg {
	struct buf data;
	struct cap *caps[MSG_MAX_CAPS];
	size_t ncaps;
};

void msg_init(struct msg *m);
void msg_free(struct msg *m); /* drops the caps' references */
int msg_put_u64(struct msg *m, uint64_t v);
int msg_put_i64(struct msg *m, int64_t v);
int msg_put_bool(struct msg *m, int v);
int msg_put_bytes(struct msg *m, const void *p, size_t n);
int msg_put_str(struct msg *m, const char *s);
/* Takes a new reference to c. */
int msg_put_cap(struct msg *m, struct cap *c);

struct msg_rd {
	struct rd rd;
	const struct msg *m;
};

void msg_rd_init(struct msg_rd *r, const struct msg *m);
/* Each fails with -EBADMSG on a short message or a value of another type. */
int msg_get_u64(struct msg_rd *r, uint64_t *v);
int msg_get_i64(struct msg_rd *r, int64_t *v);
int msg_get_bool(struct msg_rd *r, int *v);
int msg_get_bytes(struct msg_rd *r, const uint8_t **p, size_t *n);
/* A string without NUL bytes, copied and NUL-terminated (max maxlen). */
int msg_get_str(struct msg_rd *r, char *out, size_t maxlen);
/* The cap is borrowed from the message: cap_ref() it to keep it. */
int msg_get_cap(struct msg_rd *r, struct cap **c);
int msg_at_end(const struct msg_rd *r);

/* --- capabilities -------------------------------------------------- */

struct cap_ops {
	const char *name; /* for logs */
	/* Handle a call; must end in exactly one rpc_return*(), now or later. */
	void (*call)(struct cap *c, struct rpc_call *call);
	/* The last reference is gone. */
	void (*free)(struct cap *c);
	/* Streams hosted here: take over a data connection (see node.h). */
	void (*attach)(struct cap *c, struct wire_conn *data);
};

struct cap {
	const struct cap_ops *ops;
	unsigned refs;
};

void cap_init(struct cap *c, const struct cap_ops *ops); /* refs = 1 */
struct cap *cap_ref(struct cap *c);
void cap_unref(struct cap *c);
/* For an import: the connection it came over (NULL for local objects or
 * when that connection is gone). */
struct rpc_conn *cap_conn(const struct cap *c);

/* --- calls --------------------------------------------------------- */

/* err is 0 or -errno; errmsg says what failed (never NULL when err != 0);
 * results are borrowed for the duration of the callback. */
typedef void (*rpc_done_fn)(void *arg, int err, const char *errmsg,
			    struct msg *results);

struct rpc_call {
	uint16_t iface, method;
	struct msg params;  /* read with msg_rd_init(&r, &call->params) */
	struct msg results; /* filled by the callee before rpc_return() */
	rpc_done_fn done;
	void *arg;
};

/* Calls target; params are moved into the call (and m is emptied). done
 * may run before rpc_call returns (local objects answer at once); NULL
 * when the answer does not matter. */
void rpc_call(struct cap *target, uint16_t iface, uint16_t method,
	      struct msg *params, rpc_done_fn done, void *arg);
void rpc_return(struct rpc_call *call);
/* Returns c as the one result; the caller's reference goes with it. */
void rpc_return_cap(struct rpc_call *call, struct cap *c);
void rpc_return_error(struct rpc_call *call, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The standard answer for an interface or method the object lacks. */
void rpc_return_unknown(struct rpc_call *call, const char *objname);

/* --- connections --------------------------------------------------- */

struct rpc_conn_ops {
	/* The connection is gone (err as for wire_conn closed); rc is freed
	 * after this returns. */
	void (*closed)(struct rpc_conn *rc, int err, void *arg);
};

/* Runs RPC over an open wire connection. bootstrap (may be NULL) is what
 * the peer gets for BOOTSTRAP; a reference is taken. */
struct rpc_conn *rpc_conn_new(struct wire_conn *wc, struct cap *bootstrap,
			      const struct rpc_conn_ops *ops, void *arg);
/* Asks the peer for its bootstrap capability. */
void rpc_conn_bootstrap(struct rpc_conn *rc, rpc_done_fn done, void *arg);
/* Feeds one record received on wc (the wire_conn's record callback). */
void rpc_conn_record(struct rpc_conn *rc, const uint8_t *p, size_t n);
/* When the peer holds nothing of ours but the bootstrap object, we hold
 * nothing of its, and no call is in progress either way: the loop time
 * of the last activity. 0 while the connection is in use. */
uint64_t rpc_conn_idle_since(const struct rpc_conn *rc);
/* The wire connection closed: fail calls, release exports, free rc. */
void rpc_conn_closed(struct rpc_conn *rc, int err);
/* Sends ABORT with a reason and closes. */
void rpc_conn_abort(struct rpc_conn *rc, const char *reason);
struct wire_conn *rpc_conn_wire(struct rpc_conn *rc);
void *rpc_conn_arg(struct rpc_conn *rc);

#endif
