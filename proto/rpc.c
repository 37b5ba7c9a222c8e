/*
 * Capability RPC over a wire connection.
 *
 * Every wire message is one record:
 *   BOOTSTRAP  u8 1, u32 question
 *   CALL       u8 2, u32 question, u32 target export, u16 iface, u16 method,
 *              caps, data
 *   RETURN     u8 3, u32 question, i32 -errno or 0, u16 n, n bytes message,
 *              caps, data
 *   RELEASE    u8 4, u32 export, u32 count
 *   ABORT      u8 5, u16 n, n bytes reason
 * caps is u8 n followed by n entries of (u8 kind, u32 id): kind 1 is an
 * export of the sender (the receiver imports it), kind 2 an export of the
 * receiver coming back to it. data is the rest of the record: the msg
 * encoding of proto/msg.c.
 *
 * Reference counting follows the usual scheme: every time a sender sends
 * one of its exports it counts one wire reference; the receiver's import
 * remembers how many it got and returns them all in one RELEASE when its
 * last local reference goes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "proto/rpc.h"
#include "wire/conn.h"

enum { M_BOOTSTRAP = 1, M_CALL, M_RETURN, M_RELEASE, M_ABORT };
enum { CD_SENDER = 1, CD_RECEIVER = 2 };

struct export {
	struct cap *cap; /* NULL: free slot */
	uint32_t refs;
};

struct import {
	struct cap cap;
	struct rpc_conn *conn; /* NULL once the connection is gone */
	uint32_t id;
	uint32_t wire_refs;
	struct import *next;
};

struct question {
	int used;
	rpc_done_fn done;
	void *arg;
};

/* A call from the peer that we are answering. */
struct answer {
	struct rpc_conn *conn; /* NULL if the connection went away */
	struct wire_acct *acct; /* the peer's account, counted in (or NULL) */
	uint32_t qid;
	struct answer *prev, *next;
};

struct rpc_conn {
	struct wire_conn *wc;
	const struct rpc_conn_ops *ops;
	void *arg;
	struct cap *bootstrap;
	struct export *exports;
	uint32_t nexports, exports_used;
	struct import *imports;
	uint32_t nimports;
	struct question *questions;
	uint32_t nquestions;
	struct answer *answers;
	uint32_t nanswers;
	uint64_t last_active; /* loop time of the last record or answer */
	int dead;
};

/* --- caps ---------------------------------------------------------- */

void cap_init(struct cap *c, const struct cap_ops *ops)
{
	c->ops = ops;
	c->refs = 1;
}

struct cap *cap_ref(struct cap *c)
{
	c->refs++;
	return c;
}

void cap_unref(struct cap *c)
{
	if (c && --c->refs == 0)
		c->ops->free(c);
}

/* --- calls --------------------------------------------------------- */

static void call_finish(struct rpc_call *call, int err, const char *errmsg)
{
	if (call->done)
		call->done(call->arg, err, errmsg, &call->results);
	msg_free(&call->params);
	msg_free(&call->results);
	free(call);
}

void rpc_call(struct cap *target, uint16_t iface, uint16_t method,
	      struct msg *params, rpc_done_fn done, void *arg)
{
	struct rpc_call *call = calloc(1, sizeof(*call));
	if (!call) {
		msg_free(params);
		if (done)
			done(arg, -ENOMEM, "out of memory", NULL);
		return;
	}
	call->iface = iface;
	call->method = method;
	call->params = *params;
	msg_init(params);
	msg_init(&call->results);
	call->done = done;
	call->arg = arg;
	target->ops->call(target, call);
}

void rpc_return(struct rpc_call *call)
{
	call_finish(call, 0, NULL);
}

void rpc_return_cap(struct rpc_call *call, struct cap *c)
{
	int e = msg_put_cap(&call->results, c);
	cap_unref(c);
	if (e < 0)
		rpc_return_error(call, e, "cannot return the object");
	else
		rpc_return(call);
}

void rpc_return_error(struct rpc_call *call, int err, const char *fmt, ...)
{
	char msg[RPC_MAX_ERRMSG];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	msg_free(&call->results);
	call_finish(call, err < 0 ? err : -EIO, msg);
}

void rpc_return_unknown(struct rpc_call *call, const char *objname)
{
	rpc_return_error(call, -ENOSYS, "%s has no method %u of interface %s",
			 objname, call->method, iface_name(call->iface));
}

/* --- sending ------------------------------------------------------- */

static int send_record(struct rpc_conn *rc, struct buf *b)
{
	if (rc->dead)
		return -EPIPE;
	if (buf_avail(b) > WIRE_MAX_RECORD)
		return -EMSGSIZE;
	return wire_conn_send(rc->wc, buf_head(b), buf_avail(b));
}

static int export_cap(struct rpc_conn *rc, struct cap *c, uint32_t *id)
{
	uint32_t i, free_slot = UINT32_MAX;
	for (i = 0; i < rc->nexports; i++) {
		if (rc->exports[i].cap == c) {
			rc->exports[i].refs++;
			*id = i;
			return 0;
		}
		if (!rc->exports[i].cap && free_slot == UINT32_MAX)
			free_slot = i;
	}
	if (free_slot == UINT32_MAX) {
		if (rc->nexports == RPC_MAX_EXPORTS)
			return -ENFILE;
		struct export *e = realloc(rc->exports, (rc->nexports + 1) * sizeof(*e));
		if (!e)
			return -ENOMEM;
		rc->exports = e;
		free_slot = rc->nexports++;
	}
	rc->exports[free_slot].cap = cap_ref(c);
	rc->exports[free_slot].refs = 1;
	rc->exports_used++;
	*id = free_slot;
	return 0;
}

static const struct cap_ops import_ops;

static void unexport(struct rpc_conn *rc, uint32_t id)
{
	if (--rc->exports[id].refs == 0) {
		struct cap *c = rc->exports[id].cap;
		rc->exports[id].cap = NULL;
		rc->exports_used--;
		cap_unref(c);
	}
}

/* Exports counted for a message; undone if the message is not sent, so
 * that no wire reference is counted that the peer never got. */
struct payload_exports {
	uint32_t ids[MSG_MAX_CAPS];
	size_t n;
};

static void payload_undo(struct rpc_conn *rc, struct payload_exports *px)
{
	while (px->n)
		unexport(rc, px->ids[--px->n]);
}

/* Caps table and data of m, appended to b. On failure nothing stays
 * exported. */
static int put_payload(struct rpc_conn *rc, struct buf *b, const struct msg *m,
		       struct payload_exports *px)
{
	int r = buf_put_u8(b, (uint8_t)m->ncaps);
	px->n = 0;
	for (size_t i = 0; r == 0 && i < m->ncaps; i++) {
		struct cap *c = m->caps[i];
		uint32_t id;
		if (c->ops == &import_ops && ((struct import *)c)->conn == rc) {
			if ((r = buf_put_u8(b, CD_RECEIVER)) == 0)
				r = buf_put_u32(b, ((struct import *)c)->id);
			continue;
		}
		if ((r = export_cap(rc, c, &id)) < 0)
			break;
		px->ids[px->n++] = id;
		if ((r = buf_put_u8(b, CD_SENDER)) == 0)
			r = buf_put_u32(b, id);
	}
	if (r == 0)
		r = buf_put(b, buf_head(&m->data), buf_avail(&m->data));
	if (r == 0 && buf_avail(b) > WIRE_MAX_RECORD)
		r = -EMSGSIZE;
	if (r < 0)
		payload_undo(rc, px);
	return r;
}

static void send_release(struct rpc_conn *rc, uint32_t id, uint32_t count)
{
	struct buf b;
	buf_init(&b);
	if (buf_put_u8(&b, M_RELEASE) == 0 && buf_put_u32(&b, id) == 0 &&
	    buf_put_u32(&b, count) == 0)
		send_record(rc, &b);
	buf_wipe(&b);
}

/* --- imports ------------------------------------------------------- */

static void unlink_import(struct import *im)
{
	struct rpc_conn *rc = im->conn;
	for (struct import **p = &rc->imports; *p; p = &(*p)->next) {
		if (*p == im) {
			*p = im->next;
			rc->nimports--;
			break;
		}
	}
	im->conn = NULL;
}

static void import_free(struct cap *c)
{
	struct import *im = (struct import *)c;
	if (im->conn) {
		send_release(im->conn, im->id, im->wire_refs);
		unlink_import(im);
	}
	free(im);
}

static int alloc_question(struct rpc_conn *rc, rpc_done_fn done, void *arg,
			  uint32_t *qid)
{
	uint32_t i;
	for (i = 0; i < rc->nquestions && rc->questions[i].used; i++)
		;
	if (i == rc->nquestions) {
		struct question *q = realloc(rc->questions, (i + 1) * sizeof(*q));
		if (!q)
			return -ENOMEM;
		rc->questions = q;
		rc->nquestions++;
	}
	rc->questions[i] = (struct question){ 1, done, arg };
	*qid = i;
	return 0;
}

static void import_call(struct cap *c, struct rpc_call *call)
{
	struct import *im = (struct import *)c;
	struct rpc_conn *rc = im->conn;
	struct buf b;
	uint32_t qid;
	int r;

	if (!rc) {
		rpc_return_error(call, -ECONNRESET, "the connection to the "
				 "node holding this object was lost");
		return;
	}
	buf_init(&b);
	if ((r = alloc_question(rc, call->done, call->arg, &qid)) == 0) {
		struct payload_exports px = { .n = 0 };
		if ((r = buf_put_u8(&b, M_CALL)) == 0 &&
		    (r = buf_put_u32(&b, qid)) == 0 &&
		    (r = buf_put_u32(&b, im->id)) == 0 &&
		    (r = buf_put_u16(&b, call->iface)) == 0 &&
		    (r = buf_put_u16(&b, call->method)) == 0 &&
		    (r = put_payload(rc, &b, &call->params, &px)) == 0 &&
		    (r = send_record(rc, &b)) < 0)
			payload_undo(rc, &px);
		if (r < 0)
			rc->questions[qid].used = 0;
	}
	buf_wipe(&b);
	if (r < 0) {
		if (r == -EMSGSIZE)
			rpc_return_error(call, r, "the call's parameters exceed "
					 "%d bytes", WIRE_MAX_RECORD);
		else
			rpc_return_error(call, r, "cannot send call: %s", strerror(-r));
		return;
	}
	/* The answer arrives as a RETURN; the question now owns done. */
	call->done = NULL;
	call_finish(call, 0, NULL);
}

static const struct cap_ops import_ops = {
	.name = "remote object",
	.call = import_call,
	.free = import_free,
};

struct rpc_conn *cap_conn(const struct cap *c)
{
	if (c->ops != &import_ops)
		return NULL;
	return ((const struct import *)c)->conn;
}

static struct import *get_import(struct rpc_conn *rc, uint32_t id)
{
	struct import *im;
	for (im = rc->imports; im; im = im->next) {
		if (im->id == id) {
			im->wire_refs++;
			cap_ref(&im->cap);
			return im;
		}
	}
	if (rc->nimports == RPC_MAX_IMPORTS || !(im = calloc(1, sizeof(*im))))
		return NULL;
	cap_init(&im->cap, &import_ops);
	im->conn = rc;
	im->id = id;
	im->wire_refs = 1;
	im->next = rc->imports;
	rc->imports = im;
	rc->nimports++;
	return im;
}

/* --- receiving ----------------------------------------------------- */

/* Reads the caps table and data into m (caps referenced). */
static int get_payload(struct rpc_conn *rc, struct rd *r, struct msg *m)
{
	uint8_t n, kind;
	uint32_t id;
	const uint8_t *data;
	int e;

	if ((e = rd_u8(r, &n)) < 0)
		return e;
	if (n > MSG_MAX_CAPS)
		return -EBADMSG;
	for (unsigned i = 0; i < n; i++) {
		if ((e = rd_u8(r, &kind)) < 0 || (e = rd_u32(r, &id)) < 0)
			return e;
		if (kind == CD_SENDER) {
			struct import *im = get_import(rc, id);
			if (!im)
				return -ENFILE;
			m->caps[m->ncaps++] = &im->cap;
		} else if (kind == CD_RECEIVER && id < rc->nexports &&
			   rc->exports[id].cap) {
			m->caps[m->ncaps++] = cap_ref(rc->exports[id].cap);
		} else {
			return -EBADMSG;
		}
	}
	rd_bytes(r, &data, rd_left(r));
	return buf_put(&m->data, data, r->len - r->off + (r->p + r->off - data));
}

static void answer_unlink(struct answer *a)
{
	struct rpc_conn *rc = a->conn;
	if (!rc)
		return;
	if (a->prev)
		a->prev->next = a->next;
	else
		rc->answers = a->next;
	if (a->next)
		a->next->prev = a->prev;
	if (rc->nanswers-- == RPC_MAX_ANSWERS && !rc->dead)
		wire_conn_pause(rc->wc, 0);
}

/* A RETURN record: err, message, and (when err is 0) the results. */
static int put_return(struct rpc_conn *rc, struct buf *b, uint32_t qid, int err,
		      const char *errmsg, const struct msg *res,
		      struct payload_exports *px)
{
	static const struct msg empty;
	size_t elen = errmsg ? strnlen(errmsg, RPC_MAX_ERRMSG) : 0;
	int r;

	buf_reset(b);
	px->n = 0;
	if ((r = buf_put_u8(b, M_RETURN)) < 0 || (r = buf_put_u32(b, qid)) < 0 ||
	    (r = buf_put_u32(b, (uint32_t)err)) < 0 ||
	    (r = buf_put_u16(b, (uint16_t)elen)) < 0 ||
	    (r = buf_put(b, errmsg, elen)) < 0)
		return r;
	return put_payload(rc, b, err || !res ? &empty : res, px);
}

static void answer_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct answer *a = arg;
	struct rpc_conn *rc = a->conn;
	struct payload_exports px;
	struct buf b;
	int r;

	if (rc && !rc->dead) {
		rc->last_active = loop_now_ms(wire_conn_loop(rc->wc));
		buf_init(&b);
		r = put_return(rc, &b, a->qid, err, errmsg, res, &px);
		if (r < 0 && !err) {
			/* The results cannot be sent (too large, too many
			 * capabilities exported): the caller gets an error
			 * rather than waiting forever. */
			log_warn("rpc: cannot send a result: %s", strerror(-r));
			r = put_return(rc, &b, a->qid, r, r == -EMSGSIZE ?
				       "the result is too large to send" :
				       "the result cannot be sent (too many "
				       "objects exported to this peer?)", NULL, &px);
		}
		if (r == 0 && send_record(rc, &b) < 0)
			payload_undo(rc, &px);
		buf_wipe(&b);
	}
	answer_unlink(a);
	if (a->acct) {
		a->acct->calls--;
		wire_acct_unref(a->acct);
	}
	free(a);
}

static struct answer *answer_new(struct rpc_conn *rc, uint32_t qid)
{
	struct answer *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->conn = rc;
	a->qid = qid;
	a->next = rc->answers;
	if (a->next)
		a->next->prev = a;
	rc->answers = a;
	/* Backpressure: a peer with many calls in progress is not read. */
	if (++rc->nanswers == RPC_MAX_ANSWERS)
		wire_conn_pause(rc->wc, 1);
	return a;
}

static int recv_bootstrap(struct rpc_conn *rc, struct rd *r)
{
	uint32_t qid;
	struct msg res;
	int e;

	if ((e = rd_u32(r, &qid)) < 0)
		return e;
	struct answer *a = answer_new(rc, qid);
	if (!a)
		return -ENOMEM;
	msg_init(&res);
	if (!rc->bootstrap) {
		answer_done(a, -EACCES, "this connection offers nothing", NULL);
		return 0;
	}
	e = msg_put_cap(&res, rc->bootstrap);
	answer_done(a, e, e ? "out of memory" : NULL, &res);
	msg_free(&res);
	return 0;
}

static int recv_call(struct rpc_conn *rc, struct rd *r)
{
	uint32_t qid, target;
	uint16_t iface, method;
	struct msg params;
	int e;

	if ((e = rd_u32(r, &qid)) < 0 || (e = rd_u32(r, &target)) < 0 ||
	    (e = rd_u16(r, &iface)) < 0 || (e = rd_u16(r, &method)) < 0)
		return e;
	msg_init(&params);
	if ((e = get_payload(rc, r, &params)) < 0) {
		msg_free(&params);
		return e;
	}
	struct answer *a = answer_new(rc, qid);
	if (!a) {
		msg_free(&params);
		return -ENOMEM;
	}
	/* One peer's calls in progress, over all its connections. */
	struct wire_acct *acct = wire_conn_acct(rc->wc);
	if (acct && acct->calls >= RPC_PEER_MAX_CALLS) {
		msg_free(&params);
		answer_done(a, -EBUSY, "too many calls in progress from this node; "
			    "try again later", NULL);
		return 0;
	}
	if (acct) {
		a->acct = wire_acct_ref(acct);
		acct->calls++;
	}
	if (target >= rc->nexports || !rc->exports[target].cap) {
		msg_free(&params);
		answer_done(a, -EBADF, "no such object (it was released)", NULL);
		return 0;
	}
	/* Hold the target: a RELEASE during the call must not free it. */
	struct cap *c = cap_ref(rc->exports[target].cap);
	rpc_call(c, iface, method, &params, answer_done, a);
	cap_unref(c);
	return 0;
}

static int recv_return(struct rpc_conn *rc, struct rd *r)
{
	uint32_t qid, err;
	uint16_t elen;
	const uint8_t *ep;
	char errmsg[RPC_MAX_ERRMSG + 1];
	struct msg res;
	int e;

	if ((e = rd_u32(r, &qid)) < 0 || (e = rd_u32(r, &err)) < 0 ||
	    (e = rd_u16(r, &elen)) < 0 || (e = rd_bytes(r, &ep, elen)) < 0)
		return e;
	if (qid >= rc->nquestions || !rc->questions[qid].used ||
	    elen > RPC_MAX_ERRMSG || (int32_t)err > 0 || (int32_t)err < -4095)
		return -EBADMSG;
	struct question q = rc->questions[qid];
	rc->questions[qid].used = 0;
	msg_init(&res);
	if ((e = get_payload(rc, r, &res)) < 0) {
		msg_free(&res);
		if (q.done)
			q.done(q.arg, -EBADMSG, "malformed answer from peer", NULL);
		return e;
	}
	memcpy(errmsg, ep, elen);
	errmsg[elen] = 0;
	for (size_t i = 0; i < elen; i++)
		if (errmsg[i] < 0x20 || errmsg[i] == 0x7f)
			errmsg[i] = '?'; /* no terminal escapes from peers */
	if (err && !elen)
		snprintf(errmsg, sizeof(errmsg), "%s", strerror(-(int32_t)err));
	if (q.done)
		q.done(q.arg, (int32_t)err, err ? errmsg : NULL, &res);
	msg_free(&res);
	return 0;
}

static int recv_release(struct rpc_conn *rc, struct rd *r)
{
	uint32_t id, count;
	int e;
	if ((e = rd_u32(r, &id)) < 0 || (e = rd_u32(r, &count)) < 0)
		return e;
	if (id >= rc->nexports || !rc->exports[id].cap ||
	    count > rc->exports[id].refs || count == 0)
		return -EBADMSG;
	rc->exports[id].refs -= count - 1;
	unexport(rc, id);
	return 0;
}

static int recv_abort(struct rpc_conn *rc, struct rd *r)
{
	uint16_t n;
	const uint8_t *p;
	if (rd_u16(r, &n) == 0 && rd_bytes(r, &p, n) == 0)
		log_info("rpc: peer aborted: %.*s", (int)(n > 200 ? 200 : n), p);
	return -ECONNABORTED;
}

void rpc_conn_record(struct rpc_conn *rc, const uint8_t *p, size_t n)
{
	struct rd r;
	uint8_t type;
	int e;

	rc->last_active = loop_now_ms(wire_conn_loop(rc->wc));
	rd_init(&r, p, n);
	if ((e = rd_u8(&r, &type)) == 0) {
		switch (type) {
		case M_BOOTSTRAP: e = recv_bootstrap(rc, &r); break;
		case M_CALL: e = recv_call(rc, &r); break;
		case M_RETURN: e = recv_return(rc, &r); break;
		case M_RELEASE: e = recv_release(rc, &r); break;
		case M_ABORT: e = recv_abort(rc, &r); break;
		default: e = -EBADMSG;
		}
	}
	if (e < 0 && e != -ECONNABORTED && !rc->dead) {
		log_warn("rpc: bad message from peer (%s); closing", strerror(-e));
		rpc_conn_abort(rc, "malformed message");
	} else if (e == -ECONNABORTED && !rc->dead) {
		/* The owner's closed callback tears rc down. */
		wire_conn_abort(rc->wc, -ECONNABORTED);
	}
}

/* --- connection ---------------------------------------------------- */

struct rpc_conn *rpc_conn_new(struct wire_conn *wc, struct cap *bootstrap,
			      const struct rpc_conn_ops *ops, void *arg)
{
	struct rpc_conn *rc = calloc(1, sizeof(*rc));
	if (!rc)
		return NULL;
	rc->wc = wc;
	rc->ops = ops;
	rc->arg = arg;
	rc->bootstrap = bootstrap ? cap_ref(bootstrap) : NULL;
	rc->last_active = loop_now_ms(wire_conn_loop(wc));
	return rc;
}

uint64_t rpc_conn_idle_since(const struct rpc_conn *rc)
{
	if (rc->nimports || rc->nanswers)
		return 0;
	for (uint32_t i = 0; i < rc->nquestions; i++)
		if (rc->questions[i].used)
			return 0;
	for (uint32_t i = 0; i < rc->nexports; i++)
		if (rc->exports[i].cap && rc->exports[i].cap != rc->bootstrap)
			return 0;
	return rc->last_active;
}

void rpc_conn_bootstrap(struct rpc_conn *rc, rpc_done_fn done, void *arg)
{
	struct buf b;
	uint32_t qid;
	int r;

	buf_init(&b);
	if ((r = alloc_question(rc, done, arg, &qid)) == 0) {
		if ((r = buf_put_u8(&b, M_BOOTSTRAP)) == 0 &&
		    (r = buf_put_u32(&b, qid)) == 0)
			r = send_record(rc, &b);
		if (r < 0)
			rc->questions[qid].used = 0;
	}
	buf_wipe(&b);
	if (r < 0)
		done(arg, r, "cannot send bootstrap request", NULL);
}

void rpc_conn_closed(struct rpc_conn *rc, int err)
{
	if (rc->dead)
		return;
	rc->dead = 1;
	/* Orphan answers still being worked on: their results go nowhere,
	 * and they no longer count against the peer. */
	for (struct answer *a = rc->answers; a; a = a->next) {
		a->conn = NULL;
		if (a->acct) {
			a->acct->calls--;
			wire_acct_unref(a->acct);
			a->acct = NULL;
		}
	}
	rc->answers = NULL;
	while (rc->imports)
		unlink_import(rc->imports);
	for (uint32_t i = 0; i < rc->nquestions; i++) {
		if (rc->questions[i].used) {
			rc->questions[i].used = 0;
			if (rc->questions[i].done)
				rc->questions[i].done(rc->questions[i].arg, -ECONNRESET,
						      "connection to peer lost", NULL);
		}
	}
	for (uint32_t i = 0; i < rc->nexports; i++) {
		struct cap *c = rc->exports[i].cap;
		rc->exports[i].cap = NULL;
		cap_unref(c);
	}
	if (rc->ops && rc->ops->closed)
		rc->ops->closed(rc, err, rc->arg);
	cap_unref(rc->bootstrap);
	free(rc->exports);
	free(rc->questions);
	free(rc);
}

void rpc_conn_abort(struct rpc_conn *rc, const char *reason)
{
	struct buf b;
	size_t n = strlen(reason);
	buf_init(&b);
	if (buf_put_u8(&b, M_ABORT) == 0 && buf_put_u16(&b, (uint16_t)n) == 0 &&
	    buf_put(&b, reason, n) == 0)
		send_record(rc, &b);
	buf_wipe(&b);
	wire_conn_shutdown(rc->wc);
}

struct wire_conn *rpc_conn_wire(struct rpc_conn *rc) { return rc->wc; }
void *rpc_conn_arg(struct rpc_conn *rc) { return rc->arg; }
