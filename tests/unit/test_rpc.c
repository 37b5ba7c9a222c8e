/*
 * Capability RPC (proto/rpc.c) between two connections in one process:
 * capabilities in parameters and results, release, connection loss,
 * ABORT, a peer that stops reading, oversized messages.
 */
#include <sys/socket.h>
#include <unistd.h>

#include "lib/loop.h"
#include "proto/rpc.h"
#include "wire/conn.h"
#include "tests/unit/unit.h"

enum { M_ECHO = 1, M_MAKE = 2, M_LATER = 3 };

static int live_objects;
static struct rpc_call *held_call;

struct obj {
	struct cap cap;
};

static void obj_call(struct cap *c, struct rpc_call *call);

static void obj_free(struct cap *c)
{
	live_objects--;
	free(c);
}

static const struct cap_ops obj_ops = { .name = "test object", .call = obj_call, .free = obj_free };

static struct cap *obj_new(void)
{
	struct obj *o = calloc(1, sizeof(*o));
	cap_init(&o->cap, &obj_ops);
	live_objects++;
	return &o->cap;
}

static void obj_call(struct cap *c, struct rpc_call *call)
{
	struct cap *made;
	switch (call->method) {
	case M_ECHO:
		buf_put(&call->results.data, buf_head(&call->params.data),
			buf_avail(&call->params.data));
		for (size_t i = 0; i < call->params.ncaps; i++)
			call->results.caps[i] = cap_ref(call->params.caps[i]);
		call->results.ncaps = call->params.ncaps;
		rpc_return(call);
		return;
	case M_MAKE:
		made = obj_new();
		msg_put_cap(&call->results, made);
		cap_unref(made);
		rpc_return(call);
		return;
	case M_LATER:
		held_call = call;
		return;
	}
	rpc_return_unknown(call, "test object");
}

/* One side: a wire connection and its RPC. */
struct side {
	struct wire_conn *wc;
	struct rpc_conn *rc;
	int closed, close_err;
};

static void side_record(struct wire_conn *wc, uint8_t *p, size_t n, void *arg)
{
	rpc_conn_record(((struct side *)arg)->rc, p, n);
}

static void side_closed(struct wire_conn *wc, int err, void *arg)
{
	struct side *s = arg;
	s->closed++;
	s->close_err = err;
	rpc_conn_closed(s->rc, err);
	s->rc = NULL;
	s->wc = NULL;
}

static const struct wire_conn_ops side_ops = { .record = side_record, .closed = side_closed };

struct world {
	struct loop *l;
	struct side a, b; /* a offers a test object as bootstrap */
	struct cap *boot; /* b's import of it */
};

struct result {
	int done, err;
	char errmsg[RPC_MAX_ERRMSG];
	struct cap *cap;
	uint64_t value;
};

static void got(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct result *r = arg;
	struct msg_rd rd;
	r->done++;
	r->err = err;
	if (errmsg)
		snprintf(r->errmsg, sizeof(r->errmsg), "%s", errmsg);
	if (!err && res) {
		msg_rd_init(&rd, res);
		struct cap *c;
		if (msg_get_cap(&rd, &c) == 0)
			r->cap = cap_ref(c);
		msg_get_u64(&rd, &r->value);
	}
}

static void spin(struct world *w, int rounds)
{
	for (int i = 0; i < rounds; i++)
		loop_run_once(w->l, 2);
}

static int world_open(struct world *w)
{
	int sv[2];
	struct result r = { 0 };
	struct cap *obj;

	memset(w, 0, sizeof(*w));
	held_call = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	w->l = loop_new();
	w->a.wc = wire_conn_new(w->l, sv[0], WIRE_PLAIN, NULL, NULL, &side_ops, &w->a);
	w->b.wc = wire_conn_new(w->l, sv[1], WIRE_PLAIN, NULL, NULL, &side_ops, &w->b);
	obj = obj_new();
	w->a.rc = rpc_conn_new(w->a.wc, obj, NULL, NULL);
	cap_unref(obj);
	w->b.rc = rpc_conn_new(w->b.wc, NULL, NULL, NULL);
	rpc_conn_bootstrap(w->b.rc, got, &r);
	spin(w, 5);
	w->boot = r.cap;
	return r.done == 1 && !r.err && r.cap ? 0 : -1;
}

static void world_close(struct world *w)
{
	cap_unref(w->boot);
	if (w->b.wc)
		wire_conn_abort(w->b.wc, -ECONNRESET);
	spin(w, 5);
	if (w->a.wc)
		wire_conn_abort(w->a.wc, -ECONNRESET);
	spin(w, 5);
	loop_free(w->l);
}

TEST(capabilities_travel_and_come_back)
{
	struct world w;
	struct result r = { 0 };
	struct msg p;
	int before = live_objects;

	CHECK_INT(world_open(&w), 0);
	/* b sends one of its own objects to a, which sends it back: b must
	 * get its own object, not a proxy of a proxy. */
	struct cap *mine = obj_new();
	msg_init(&p);
	msg_put_cap(&p, mine);
	msg_put_u64(&p, 42);
	rpc_call(w.boot, IFACE_STREAM, M_ECHO, &p, got, &r);
	spin(&w, 10);
	CHECK_INT(r.done, 1);
	CHECK_INT(r.err, 0);
	CHECK(r.cap == mine);
	CHECK_INT(r.value, 42);
	cap_unref(r.cap);
	cap_unref(mine);
	spin(&w, 10);
	/* a released its import of b's object: gone everywhere. */
	CHECK_INT(live_objects, before + 1); /* only a's bootstrap object */
	world_close(&w);
	CHECK_INT(live_objects, before);
}

TEST(release_frees_the_remote_object)
{
	struct world w;
	struct result r = { 0 };
	struct msg p;
	int before = live_objects;

	CHECK_INT(world_open(&w), 0);
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_MAKE, &p, got, &r);
	spin(&w, 10);
	CHECK(r.cap && cap_conn(r.cap));
	CHECK_INT(live_objects, before + 2);
	cap_unref(r.cap);
	spin(&w, 10);
	CHECK_INT(live_objects, before + 1);
	world_close(&w);
	CHECK_INT(live_objects, before);
}

TEST(lost_connection_fails_calls_and_releases_exports)
{
	struct world w;
	struct result r1 = { 0 }, r2 = { 0 }, late = { 0 };
	struct msg p;
	int before = live_objects;

	CHECK_INT(world_open(&w), 0);
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_MAKE, &p, got, &r1);
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_LATER, &p, got, &r2);
	spin(&w, 10);
	CHECK(r1.cap && held_call && !r2.done);
	wire_conn_abort(w.b.wc, -ECONNRESET);
	spin(&w, 10);
	/* The caller hears of it. a sees its connection go too, and every
	 * export of a is released: the made object and the bootstrap. */
	CHECK_INT(r2.done, 1);
	CHECK_INT(r2.err, -ECONNRESET);
	CHECK_INT(w.a.closed, 1);
	CHECK_INT(live_objects, before);
	/* Calls on an import of a lost connection fail at once. */
	msg_init(&p);
	rpc_call(r1.cap, IFACE_STREAM, M_ECHO, &p, got, &late);
	CHECK_INT(late.done, 1);
	CHECK_INT(late.err, -ECONNRESET);
	/* The late answer of a goes nowhere, and frees what it holds. */
	rpc_return(held_call);
	cap_unref(r1.cap);
	world_close(&w);
	CHECK_INT(live_objects, before);
}

TEST(peer_abort_reaches_the_owner)
{
	struct world w;
	CHECK_INT(world_open(&w), 0);
	rpc_conn_abort(w.b.rc, "testing");
	spin(&w, 10);
	/* a's owner is told (and frees its side), as is b's. */
	CHECK_INT(w.a.closed, 1);
	CHECK_INT(w.a.close_err, -ECONNABORTED);
	CHECK_INT(w.b.closed, 1);
	world_close(&w);
}

TEST(peer_that_stops_reading_costs_bounded_memory)
{
	struct world w;
	static struct result r[1200];
	static uint8_t big[60000];
	struct msg p;
	int errors = 0, dones = 0;

	CHECK_INT(world_open(&w), 0);
	memset(r, 0, sizeof(r));
	/* Without running the loop, nothing is read or written: past the
	 * output limit the connection fails, and every call is answered
	 * exactly once, never from inside a freed connection. */
	for (int i = 0; i < 1200; i++) {
		msg_init(&p);
		msg_put_bytes(&p, big, sizeof(big));
		rpc_call(w.boot, IFACE_STREAM, M_ECHO, &p, got, &r[i]);
	}
	spin(&w, 5);
	for (int i = 0; i < 1200; i++) {
		CHECK(r[i].done <= 1);
		dones += r[i].done;
		errors += r[i].err != 0;
	}
	CHECK_INT(dones, 1200);
	CHECK(errors > 0);
	CHECK_INT(w.b.closed, 1);
	CHECK_INT(w.b.close_err, -ENOBUFS);
	world_close(&w);
}

TEST(oversized_call_fails_and_connection_survives)
{
	struct world w;
	struct result r = { 0 }, ok = { 0 };
	static uint8_t big[WIRE_MAX_RECORD];
	struct msg p;

	CHECK_INT(world_open(&w), 0);
	msg_init(&p);
	msg_put_bytes(&p, big, sizeof(big));
	rpc_call(w.boot, IFACE_STREAM, M_ECHO, &p, got, &r);
	CHECK_INT(r.done, 1);
	CHECK_INT(r.err, -EMSGSIZE);
	msg_init(&p);
	msg_put_u64(&p, 7);
	rpc_call(w.boot, IFACE_STREAM, M_ECHO, &p, got, &ok);
	spin(&w, 10);
	CHECK_INT(ok.err, 0);
	CHECK_INT(ok.value, 7);
	world_close(&w);
}

TEST(unknown_method_says_so)
{
	struct world w;
	struct result r = { 0 };
	struct msg p;

	CHECK_INT(world_open(&w), 0);
	msg_init(&p);
	rpc_call(w.boot, IFACE_FILESYSTEM, 99, &p, got, &r);
	spin(&w, 10);
	CHECK_INT(r.err, -ENOSYS);
	CHECK(strstr(r.errmsg, "test object has no method 99 of interface Filesystem"));
	world_close(&w);
}

TEST(message_values_round_trip_and_reject)
{
	struct msg m;
	struct msg_rd r;
	uint64_t u;
	int64_t i;
	int b;
	char s[8];
	const uint8_t *p;
	size_t n;

	msg_init(&m);
	msg_put_u64(&m, 1);
	msg_put_i64(&m, -2);
	msg_put_bool(&m, 1);
	msg_put_str(&m, "hello");
	msg_put_str(&m, "too long for eight");
	msg_put_bytes(&m, "\0\1", 2);
	msg_rd_init(&r, &m);
	CHECK_INT(msg_get_i64(&r, &i), -EBADMSG); /* wrong type: unchanged */
	CHECK_INT(msg_get_u64(&r, &u), 0);
	CHECK_INT(u, 1);
	CHECK_INT(msg_get_i64(&r, &i), 0);
	CHECK_INT(i, -2);
	CHECK_INT(msg_get_bool(&r, &b), 0);
	CHECK_INT(b, 1);
	CHECK_INT(msg_get_str(&r, s, sizeof(s)), 0);
	CHECK_STR(s, "hello");
	CHECK_INT(msg_get_str(&r, s, sizeof(s)), -ENAMETOOLONG);
	CHECK_INT(msg_get_bytes(&r, &p, &n), -EBADMSG);
	msg_free(&m);

	/* A string with a NUL inside, a bool that is 2, a cap index past
	 * the table, a length past the end. */
	static const uint8_t bad_str[] = { 5, 3, 0, 0, 0, 'a', 0, 'b' };
	static const uint8_t bad_bool[] = { 3, 2 };
	static const uint8_t bad_cap[] = { 6, 0 };
	static const uint8_t bad_len[] = { 4, 0xff, 0xff, 0xff, 0x7f, 1 };
	struct cap *c;
	msg_init(&m);
	buf_put(&m.data, bad_str, sizeof(bad_str));
	msg_rd_init(&r, &m);
	CHECK_INT(msg_get_str(&r, s, sizeof(s)), -EBADMSG);
	msg_free(&m);
	msg_init(&m);
	buf_put(&m.data, bad_bool, sizeof(bad_bool));
	msg_rd_init(&r, &m);
	CHECK_INT(msg_get_bool(&r, &b), -EBADMSG);
	msg_free(&m);
	msg_init(&m);
	buf_put(&m.data, bad_cap, sizeof(bad_cap));
	msg_rd_init(&r, &m);
	CHECK_INT(msg_get_cap(&r, &c), -EBADMSG);
	msg_free(&m);
	msg_init(&m);
	buf_put(&m.data, bad_len, sizeof(bad_len));
	msg_rd_init(&r, &m);
	CHECK_INT(msg_get_bytes(&r, &p, &n), -EBADMSG);
	CHECK(!msg_at_end(&r));
	msg_free(&m);
	/* An empty message reads as empty. */
	msg_init(&m);
	msg_rd_init(&r, &m);
	CHECK(msg_at_end(&r));
	CHECK_INT(msg_get_u64(&r, &u), -EBADMSG);
	msg_free(&m);
}

static void acct_nop_free(struct wire_acct *a)
{
}

/* Calls in progress are counted per peer, over all its connections: past
 * RPC_PEER_MAX_CALLS the next gets EBUSY at once (not a closed connection);
 * answered ones leave the count; and a connection that holds nothing but
 * the bootstrap object says since when it has been idle. */
TEST(peer_calls_in_progress_are_bounded)
{
	struct world w;
	struct wire_acct acct = { .free = acct_nop_free };
	struct result held = { 0 }, busy = { 0 }, ok = { 0 };
	struct msg p;

	CHECK_INT(world_open(&w), 0);
	wire_conn_charge(w.a.wc, &acct);
	CHECK(rpc_conn_idle_since(w.a.rc) != 0);
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_LATER, &p, got, &held);
	spin(&w, 5);
	CHECK(held_call != NULL);
	CHECK_INT(acct.calls, 1);
	CHECK_INT(rpc_conn_idle_since(w.a.rc), 0);
	/* As if the peer's other connections had the rest in progress. */
	acct.calls = RPC_PEER_MAX_CALLS;
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_ECHO, &p, got, &busy);
	spin(&w, 5);
	CHECK_INT(busy.done, 1);
	CHECK_INT(busy.err, -EBUSY);
	CHECK(strstr(busy.errmsg, "too many calls") != NULL);
	acct.calls = 1;
	rpc_return(held_call);
	spin(&w, 5);
	CHECK_INT(held.done, 1);
	CHECK_INT(acct.calls, 0);
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_ECHO, &p, got, &ok);
	spin(&w, 5);
	CHECK_INT(ok.err, 0);
	CHECK(rpc_conn_idle_since(w.a.rc) != 0);
	world_close(&w);
	CHECK_INT(acct.conns, 0);
}

/* A call still being worked on when its connection goes no longer counts
 * against the peer: a peer that reconnects is not locked out by the
 * answers it will never get. */
TEST(orphaned_calls_leave_the_peer_count)
{
	struct world w;
	struct wire_acct acct = { .free = acct_nop_free };
	struct result held = { 0 };
	struct msg p;

	CHECK_INT(world_open(&w), 0);
	wire_conn_charge(w.a.wc, &acct);
	msg_init(&p);
	rpc_call(w.boot, IFACE_STREAM, M_LATER, &p, got, &held);
	spin(&w, 5);
	CHECK(held_call != NULL);
	CHECK_INT(acct.calls, 1);
	wire_conn_abort(w.b.wc, -ECONNRESET);
	spin(&w, 10);
	CHECK(w.a.closed);
	CHECK_INT(acct.calls, 0);
	rpc_return(held_call); /* answered into the void, counted once */
	CHECK_INT(acct.calls, 0);
	world_close(&w);
	CHECK_INT(acct.refs, 0);
}
