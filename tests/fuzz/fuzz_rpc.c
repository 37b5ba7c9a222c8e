/*
 * libFuzzer target: the capability RPC decoder of proto/rpc.c and the
 * message encoding of proto/msg.c (layouts at the top of each file).
 *
 * An rpc_conn runs over a plain wire_conn on a socketpair; its bootstrap
 * is a local test object. The input is cut into records, each a length
 * (one byte; with the top bit set, fifteen bits over two bytes) and that
 * many bytes, and each record is handed to rpc_conn_record() as if it had
 * come from the peer; the answers go out through the wire_conn and are
 * drained. The harness asks for the peer's bootstrap first, so RETURN has
 * a question to answer, and calls whatever it gets back.
 *
 * The test object's methods (any interface):
 *   1 echo params back as results (data and caps)
 *   2 return a new object (an export) and a number
 *   3 read every param, then fail with an error message
 *   4 call every cap in params (imports send a CALL to the peer)
 *   5 answer later: after more records, or after the connection closed
 *   6 drop our reference to the peer's bootstrap (sends RELEASE)
 *   else "no such method"
 * Every object must be freed by the end: all references held over a
 * connection go when it closes.
 *
 * The input is also read as a bare struct msg with every msg_get_*(): a
 * getter that fails must leave the reader where it was.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "proto/iface.h"
#include "proto/rpc.h"
#include "wire/conn.h"
#include "tests/fuzz/check.h"

#define MAX_HELD 2
#define RAW_CAPS 3

enum { M_ECHO = 1, M_NEW, M_READ, M_CALL_CAPS, M_HOLD, M_DROP_BOOT };

struct harness {
	struct loop *l;
	int peer; /* our end of the socketpair: drained, never written */
	struct wire_conn *wc;
	struct rpc_conn *rc;
	struct cap *boot; /* the peer's bootstrap (an import), if it gave one */
	struct rpc_call *held[MAX_HELD];
	size_t nheld;
	unsigned live; /* test objects not yet freed */
	int feeding;   /* inside rpc_conn_record() */
};

struct obj {
	struct cap cap;
	struct harness *h;
};

static struct harness H;

/* --- reading messages ---------------------------------------------- */

/* Reads one value of kind k: 0 or the getter's error. */
static int get_one(struct msg_rd *r, int k)
{
	uint64_t u;
	int64_t i;
	int b;
	const uint8_t *p;
	size_t n;
	char s[64];
	struct cap *c;
	volatile uint8_t sink = 0;
	int e = -EBADMSG;

	switch (k) {
	case 0: e = msg_get_u64(r, &u); break;
	case 1: e = msg_get_i64(r, &i); break;
	case 2:
		e = msg_get_bool(r, &b);
		CHECK(e < 0 || b == 0 || b == 1);
		break;
	case 3:
		e = msg_get_bytes(r, &p, &n);
		/* Touch every byte: ASan checks the bounds. */
		for (size_t j = 0; e == 0 && j < n; j++)
			sink ^= p[j];
		break;
	case 4:
		e = msg_get_str(r, s, sizeof(s));
		CHECK(e < 0 || strlen(s) < sizeof(s));
		break;
	case 5:
		e = msg_get_cap(r, &c);
		CHECK(e < 0 || c->refs > 0);
		break;
	}
	(void)sink;
	return e;
}

/* Reads values until none fits; returns how many were read. */
static size_t read_all(const struct msg *m)
{
	struct msg_rd r;
	size_t count = 0;

	msg_rd_init(&r, m);
	while (!msg_at_end(&r)) {
		size_t before = r.rd.off;
		int k;
		for (k = 0; k < 6; k++) {
			if (get_one(&r, k) == 0)
				break;
			CHECK(r.rd.off == before);
		}
		if (k == 6)
			break;
		CHECK(r.rd.off > before && r.rd.off <= r.rd.len);
		count++;
	}
	return count;
}

/* --- the test object ----------------------------------------------- */

static void obj_call(struct cap *c, struct rpc_call *call);

static void obj_free(struct cap *c)
{
	struct obj *o = (struct obj *)c;
	o->h->live--;
	free(o);
}

static const struct cap_ops obj_ops = {
	.name = "fuzz object",
	.call = obj_call,
	.free = obj_free,
};

static struct cap *obj_new(struct harness *h)
{
	struct obj *o = calloc(1, sizeof(*o));
	if (!o)
		abort();
	cap_init(&o->cap, &obj_ops);
	o->h = h;
	h->live++;
	return &o->cap;
}

static void ignore_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	CHECK(err <= 0 && (err == 0 || errmsg));
	if (res)
		read_all(res);
}

static void release_held(struct harness *h)
{
	for (size_t i = 0; i < h->nheld; i++)
		rpc_return(h->held[i]);
	h->nheld = 0;
}

static void obj_call(struct cap *c, struct rpc_call *call)
{
	struct harness *h = ((struct obj *)c)->h;
	struct cap *o;
	size_t n;

	switch (call->method) {
	case M_ECHO:
		if (buf_avail(&call->params.data))
			buf_put(&call->results.data, buf_head(&call->params.data),
				buf_avail(&call->params.data));
		for (size_t i = 0; i < call->params.ncaps; i++)
			call->results.caps[i] = cap_ref(call->params.caps[i]);
		call->results.ncaps = call->params.ncaps;
		rpc_return(call);
		return;
	case M_NEW:
		o = obj_new(h);
		msg_put_cap(&call->results, o);
		cap_unref(o);
		msg_put_u64(&call->results, h->live);
		rpc_return(call);
		return;
	case M_READ:
		n = read_all(&call->params);
		rpc_return_error(call, -EINVAL, "read %zu values", n);
		return;
	case M_CALL_CAPS:
		for (size_t i = 0; i < call->params.ncaps; i++) {
			struct msg params;
			msg_init(&params);
			msg_put_str(&params, "callback");
			rpc_call(call->params.caps[i], call->iface, M_ECHO,
				 &params, ignore_done, NULL);
		}
		rpc_return(call);
		return;
	case M_HOLD:
		if (h->nheld == MAX_HELD)
			release_held(h);
		h->held[h->nheld++] = call;
		return;
	case M_DROP_BOOT:
		cap_unref(h->boot);
		h->boot = NULL;
		rpc_return(call);
		return;
	}
	rpc_return_unknown(call, "fuzz object");
}

/* --- the connection ------------------------------------------------ */

static void boot_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct harness *h = arg;
	struct msg_rd r;
	struct cap *c;
	struct msg params;

	CHECK(err <= 0 && (err == 0 || errmsg));
	if (err || !res)
		return;
	msg_rd_init(&r, res);
	if (h->boot || msg_get_cap(&r, &c) < 0)
		return;
	h->boot = cap_ref(c);
	/* Call it with one of ours: exports a cap in a CALL. */
	msg_init(&params);
	struct cap *o = obj_new(h);
	msg_put_cap(&params, o);
	cap_unref(o);
	rpc_call(h->boot, IFACE_NODE, NODE_INFO, &params, ignore_done, h);
}

static void rpc_closed(struct rpc_conn *rc, int err, void *arg)
{
	struct harness *h = arg;
	h->rc = NULL;
	/* On ABORT from the peer rpc.c closes the wire itself, without its
	 * closed callback. */
	if (h->feeding)
		h->wc = NULL;
}

static const struct rpc_conn_ops rpc_ops = { .closed = rpc_closed };

static void wire_record(struct wire_conn *c, uint8_t *p, size_t n, void *arg)
{
	struct harness *h = arg;
	if (h->rc)
		rpc_conn_record(h->rc, p, n);
}

static void wire_closed(struct wire_conn *c, int err, void *arg)
{
	struct harness *h = arg;
	h->wc = NULL;
	if (h->rc)
		rpc_conn_closed(h->rc, err);
}

static const struct wire_conn_ops wire_ops = {
	.record = wire_record,
	.closed = wire_closed,
};

static void drain(int fd)
{
	uint8_t b[1 << 16];
	while (recv(fd, b, sizeof(b), MSG_DONTWAIT) > 0)
		;
}

static void fuzz_rpc(const uint8_t *data, size_t size)
{
	struct harness *h = &H;
	struct cap *boot;
	int sv[2];
	size_t off = 0;

	memset(h, 0, sizeof(*h));
	if (!(h->l = loop_new()))
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	h->peer = sv[1];
	if (!(h->wc = wire_conn_new(h->l, sv[0], WIRE_PLAIN, NULL, NULL, &wire_ops, h)))
		abort();
	boot = obj_new(h);
	h->rc = rpc_conn_new(h->wc, boot, &rpc_ops, h);
	cap_unref(boot);
	if (!h->rc)
		abort();
	loop_run_once(h->l, 0); /* connected */
	rpc_conn_bootstrap(h->rc, boot_done, h);

	while (off < size && h->rc) {
		size_t len = data[off] & 0x7f;
		if (data[off++] & 0x80) {
			if (off == size)
				break;
			len = len << 8 | data[off++];
		}
		if (len > size - off)
			len = size - off;
		/* A copy of its exact size: ASan sees reads past the record. */
		uint8_t *rec = malloc(len ? len : 1);
		if (!rec)
			abort();
		memcpy(rec, data + off, len);
		off += len;
		h->feeding = 1;
		rpc_conn_record(h->rc, rec, len);
		h->feeding = 0;
		free(rec);
		loop_run_once(h->l, 0);
		drain(h->peer);
	}

	/* Drop the peer's bootstrap while connected (a RELEASE) or only after
	 * the connection is gone, as the input says. */
	if (h->boot && size && (data[size - 1] & 1)) {
		cap_unref(h->boot);
		h->boot = NULL;
	}
	if (h->rc)
		rpc_conn_closed(h->rc, 0);
	if (h->wc) {
		wire_conn_close(h->wc);
		h->wc = NULL;
	}
	/* Answers to a connection that is gone go nowhere. */
	release_held(h);
	cap_unref(h->boot);
	h->boot = NULL;
	loop_run_once(h->l, 0);
	loop_run_once(h->l, 0);
	loop_free(h->l);
	close(h->peer);
	CHECK(h->live == 0);
}

/* The input as the data of a bare message with RAW_CAPS caps. */
static void fuzz_msg(const uint8_t *data, size_t size)
{
	struct msg m;

	msg_init(&m);
	if (size) {
		/* Exactly size bytes, so that ASan sees any read past them. */
		if (!(m.data.data = malloc(size)))
			abort();
		memcpy(m.data.data, data, size);
		m.data.len = m.data.cap = size;
	}
	for (size_t i = 0; i < RAW_CAPS; i++)
		m.caps[m.ncaps++] = obj_new(&H);
	read_all(&m);
	msg_free(&m);
	CHECK(H.live == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_LVL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_rpc(data, size);
	fuzz_msg(data, size);
	return 0;
}
