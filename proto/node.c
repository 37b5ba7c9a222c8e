/*
 * The node: listener for peers, admin socket, Node and NodeAdmin
 * bootstrap capabilities, sturdy ref restore (locally or through an
 * outbound connection to the ref's node) and data-connection tokens.
 */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "lib/store.h"
#include "proto/node.h"
#include "wire/conn.h"

#define MAX_SERVICES 32
#define PEER_BACKLOG 128
/* Applets queue here while the daemon is busy (they wait out a full one). */
#define ADMIN_BACKLOG 512
/* Handshake flood limits: connections that have not yet said what they
 * are for, and new peer connections accepted per second (a token bucket
 * with a burst of one second's worth). */
#define MAX_PENDING_PEERS 256
#define ACCEPTS_PER_SECOND 500
/* ... of which one address may have this many: past it, its own oldest
 * makes room, so that one host cannot crowd the others out. */
#define MAX_PENDING_PER_ADDR 32
/* A connection has this long from its accept to its hello record. */
#define HELLO_TIMEOUT_MS 15000
/* What one peer (a node key) may hold at once: connections, RPC and data
 * alike, and their buffers (wire_acct); RPC_PEER_MAX_CALLS bounds its
 * calls in progress. */
#define PEER_MAX_CONNS 256
#define PEER_MAX_BYTES (256u << 20)
/* A key costs nothing to make: the same again per source address (a
 * host with keys of many nodes, or a NAT), and for all peers at once. */
#define ADDR_MAX_CONNS 512
#define ADDR_MAX_BYTES (512u << 20)
#define ALL_MAX_CONNS 4096
#define ALL_MAX_BYTES (1024u << 20)
/* How often stalled frames, silent connections and idle sessions are
 * looked for. */
#define SWEEP_MS 5000
#define IDLE_TIMEOUT_DEFAULT_S 300

struct token {
	uint8_t token[NODE_TOKEN_LEN];
	struct cap *stream;
	uint64_t expires;
	struct token *next;
};

struct peer;
struct inconn;

/* Accepted connections in the order they came. */
struct inlist {
	struct inconn *head, *tail;
	unsigned n;
};

/* What one peer node's connections hold (see PEER_MAX_*), or one
 * source address's (ADDR_MAX_*). */
struct peer_acct {
	struct wire_acct a;
	struct node *node; /* NULL once the node is gone */
	int by_addr;
	uint8_t key[32];
	char host[128];
	struct peer_acct *next;
};

struct node {
	struct loop *loop;
	struct node_keys keys;
	char id[NODE_ID_LEN + 1];
	sqlite3 *db;
	char dir[4096];
	struct net_addr listen_addr;
	char advertise[256];
	char contact[300]; /* advertise:port, as peers would dial it */
	int listen_fd, admin_fd;
	struct loop_watch *listen_w, *admin_w;
	char admin_path[108];
	const struct node_service *services[MAX_SERVICES];
	int nservices;
	struct token *tokens;
	struct peer *peers;
	struct inlist pending;  /* accepted, no hello yet */
	struct inlist sessions; /* RPC connections of peers */
	struct peer_acct *accts;
	struct wire_acct *all; /* every peer connection: ALL_MAX_* */
	struct loop_timer *sweep;
	uint64_t idle_ms;
	double accept_tokens;
	uint64_t accept_refill_ms, last_refusal_log_ms;
	uint64_t refused;
};

/* An accepted connection until its hello record says what it is. */
struct inconn {
	struct node *node;
	struct inlist *list; /* pending, then sessions (peers only) */
	struct inconn *prev, *next;
	struct wire_conn *wc;
	struct rpc_conn *rc;
	int admin;
	uint64_t since; /* accepted at */
	char addr[128];
	char host[128]; /* addr without the port */
};

/* The bootstrap object of one connection: Node or NodeAdmin. */
struct session {
	struct cap cap;
	struct node *node;
	int admin;
	uint8_t peer_key[32];
	char addr[128];
};

/* --- services and local restore ------------------------------------ */

int node_register_service(struct node *n, const struct node_service *svc)
{
	if (n->nservices == MAX_SERVICES)
		return -ENOSPC;
	n->services[n->nservices++] = svc;
	return 0;
}

static const struct node_service *find_service(struct node *n, const char *name)
{
	for (int i = 0; i < n->nservices; i++)
		if (!strcmp(n->services[i]->name, name))
			return n->services[i];
	return NULL;
}

struct cap *node_service_admin(struct node *n, const char *name)
{
	const struct node_service *svc = find_service(n, name);
	return svc && svc->admin ? svc->admin(n) : NULL;
}

const char *node_dir(struct node *n)
{
	return n->dir;
}

int node_local_object(struct node *n, const char *service, const char *description,
		      int read_only, struct cap **out, char *err, size_t errsz)
{
	const struct node_service *svc = find_service(n, service);
	struct ref_record rec = { .read_only = read_only };

	if (!svc || !svc->restore) {
		snprintf(err, errsz, "this node runs no %s service", service);
		return -ENOSYS;
	}
	snprintf(rec.service, sizeof(rec.service), "%s", service);
	if (snprintf(rec.description, sizeof(rec.description), "%s", description) >=
	    (int)sizeof(rec.description)) {
		snprintf(err, errsz, "the description is too long");
		return -ENAMETOOLONG;
	}
	return svc->restore(n, &rec, out, err, errsz);
}

struct loop *node_loop(struct node *n) { return n->loop; }
struct sqlite3 *node_db(struct node *n) { return n->db; }
const struct node_keys *node_keys(struct node *n) { return &n->keys; }
const char *node_advertise(struct node *n) { return n->advertise; }

/* Restore a ref of this node from its secret; on success results hold
 * the capability. */
static int restore_local(struct node *n, const uint8_t *secret,
			 struct msg *results, char *err, size_t errsz)
{
	struct ref_record rec;
	struct cap *c = NULL;
	int r = ref_store_find(n->db, secret, &rec);

	if (r == -ENOENT) {
		snprintf(err, errsz, "no such ref on this node (revoked, or it "
			 "died with a daemon restart because it was not --persistent)");
		return r;
	}
	if (r == -ETIMEDOUT) {
		snprintf(err, errsz, "the ref has expired");
		return -EKEYEXPIRED;
	}
	if (r < 0) {
		snprintf(err, errsz, "database error");
		return r;
	}
	const struct node_service *svc = find_service(n, rec.service);
	if (!svc) {
		snprintf(err, errsz, "the ref names service '%s', which this "
			 "node does not run", rec.service);
		return -ENOSYS;
	}
	if ((r = svc->restore(n, &rec, &c, err, errsz)) < 0)
		return r;
	r = msg_put_cap(results, c);
	cap_unref(c);
	return r;
}

/* --- tokens -------------------------------------------------------- */

static void tokens_expire(struct node *n)
{
	uint64_t now = loop_now_ms(n->loop);
	for (struct token **p = &n->tokens; *p;) {
		struct token *t = *p;
		if (t->expires <= now) {
			*p = t->next;
			cap_unref(t->stream);
			free(t);
		} else {
			p = &t->next;
		}
	}
}

int node_token_new(struct node *n, struct cap *stream, uint8_t token[NODE_TOKEN_LEN])
{
	struct token *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	tokens_expire(n);
	randombytes_buf(t->token, NODE_TOKEN_LEN);
	memcpy(token, t->token, NODE_TOKEN_LEN);
	t->stream = cap_ref(stream);
	t->expires = loop_now_ms(n->loop) + NODE_TOKEN_TTL_MS;
	t->next = n->tokens;
	n->tokens = t;
	return 0;
}

/* Takes the stream a token was issued for (one use only). */
static struct cap *token_take(struct node *n, const uint8_t *token)
{
	tokens_expire(n);
	for (struct token **p = &n->tokens; *p; p = &(*p)->next) {
		struct token *t = *p;
		if (sodium_memcmp(t->token, token, NODE_TOKEN_LEN) == 0) {
			struct cap *c = t->stream;
			*p = t->next;
			free(t);
			return c;
		}
	}
	return NULL;
}

/* --- outbound peers ------------------------------------------------ */

struct waiter {
	rpc_done_fn done;
	void *arg;
	struct waiter *next;
};

struct peer {
	struct node *node;
	char addr[300];
	uint8_t pub[32];
	struct wire_conn *wc;
	struct rpc_conn *rc;
	struct cap *boot;
	struct waiter *waiters;
	int failed;
	struct peer *next;
};

static void peer_unlink(struct peer *p)
{
	for (struct peer **pp = &p->node->peers; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
}

static void peer_fail_waiters(struct peer *p, int err, const char *msg)
{
	struct waiter *w = p->waiters;
	p->waiters = NULL;
	while (w) {
		struct waiter *next = w->next;
		w->done(w->arg, err, msg, NULL);
		free(w);
		w = next;
	}
}

static void peer_serve_waiters(struct peer *p)
{
	for (struct waiter *w = p->waiters; w; w = p->waiters) {
		struct msg m;
		p->waiters = w->next;
		msg_init(&m);
		msg_put_cap(&m, p->boot);
		w->done(w->arg, 0, NULL, &m);
		msg_free(&m);
		free(w);
	}
}

static void peer_boot_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct peer *p = arg;
	struct msg_rd r;
	struct cap *c;

	if (err) {
		peer_fail_waiters(p, err, errmsg);
		return;
	}
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &c) < 0) {
		peer_fail_waiters(p, -EBADMSG, "peer sent no bootstrap capability");
		return;
	}
	p->boot = cap_ref(c);
	peer_serve_waiters(p);
}

static void peer_rpc_closed(struct rpc_conn *rc, int err, void *arg)
{
	struct peer *p = arg;
	p->rc = NULL;
}

static const struct rpc_conn_ops peer_rpc_ops = { .closed = peer_rpc_closed };

static void peer_ready(struct wire_conn *wc, void *arg)
{
	struct peer *p = arg;
	uint8_t hello = HELLO_RPC;
	wire_conn_send(wc, &hello, 1);
	p->rc = rpc_conn_new(wc, NULL, &peer_rpc_ops, p);
	if (!p->rc) {
		wire_conn_close(wc);
		p->wc = NULL;
		peer_unlink(p);
		peer_fail_waiters(p, -ENOMEM, "out of memory");
		free(p);
		return;
	}
	rpc_conn_bootstrap(p->rc, peer_boot_done, p);
}

static void peer_record(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
	struct peer *p = arg;
	if (p->rc)
		rpc_conn_record(p->rc, d, n);
}

static void peer_closed(struct wire_conn *wc, int err, void *arg)
{
	struct peer *p = arg;
	char msg[512];

	peer_unlink(p);
	if (!p->rc) {
		/* It never got past the handshake. */
		if (err == -ECONNREFUSED || err == -EHOSTUNREACH ||
		    err == -ENETUNREACH || err == -ETIMEDOUT)
			snprintf(msg, sizeof(msg), "cannot reach node at %s: %s",
				 p->addr, strerror(-err));
		else
			snprintf(msg, sizeof(msg), "handshake with %s failed: the "
				 "node there does not hold the key named in the ref "
				 "(a wrong ref, or a man in the middle), or it is not "
				 "a metac node", p->addr);
		peer_fail_waiters(p, err ? err : -ECONNRESET, msg);
	} else {
		rpc_conn_closed(p->rc, err);
		snprintf(msg, sizeof(msg), "connection to %s lost", p->addr);
		peer_fail_waiters(p, -ECONNRESET, msg);
	}
	cap_unref(p->boot);
	free(p);
}

static const struct wire_conn_ops peer_ops = {
	.ready = peer_ready,
	.record = peer_record,
	.closed = peer_closed,
};

/* Starts a connection to addr (pinned to pub); NULL with err on failure. */
static struct wire_conn *dial(struct node *n, const char *addr, const uint8_t *pub,
			      const struct wire_conn_ops *ops, void *arg,
			      char *err, size_t errsz)
{
	struct net_addr na;
	int r = net_addr_parse(addr, REF_DEFAULT_PORT, &na), fd;
	if (r < 0) {
		snprintf(err, errsz, "cannot resolve %s (numeric addresses and "
			 "/etc/hosts names only)", addr);
		return NULL;
	}
	if ((fd = net_connect(&na)) < 0) {
		snprintf(err, errsz, "cannot connect to %s: %s", addr, strerror(-fd));
		return NULL;
	}
	struct wire_conn *wc = wire_conn_new(n->loop, fd, WIRE_INITIATOR,
					     n->keys.priv, pub, ops, arg);
	if (!wc)
		snprintf(err, errsz, "out of memory");
	return wc;
}

/* Gets the bootstrap Node capability of the node at addr with key pub. */
static void peer_bootstrap(struct node *n, const char *addr, const uint8_t *pub,
			   rpc_done_fn done, void *arg)
{
	struct peer *p;
	struct waiter *w = calloc(1, sizeof(*w));
	char err[512];

	if (!w) {
		done(arg, -ENOMEM, "out of memory", NULL);
		return;
	}
	w->done = done;
	w->arg = arg;
	for (p = n->peers; p; p = p->next)
		if (!strcmp(p->addr, addr) && !memcmp(p->pub, pub, 32))
			break;
	if (!p) {
		if (!(p = calloc(1, sizeof(*p)))) {
			free(w);
			done(arg, -ENOMEM, "out of memory", NULL);
			return;
		}
		p->node = n;
		snprintf(p->addr, sizeof(p->addr), "%s", addr);
		memcpy(p->pub, pub, 32);
		p->wc = dial(n, addr, pub, &peer_ops, p, err, sizeof(err));
		if (!p->wc) {
			free(p);
			free(w);
			done(arg, -EHOSTUNREACH, err, NULL);
			return;
		}
		p->next = n->peers;
		n->peers = p;
	}
	w->next = p->waiters;
	p->waiters = w;
	if (p->boot)
		peer_serve_waiters(p);
}

/* --- restore ------------------------------------------------------- */

struct restore_ctx {
	struct node *node;
	uint8_t secret[REF_SECRET_LEN];
	rpc_done_fn done;
	void *arg;
};

static void restore_remote_done(void *arg, int err, const char *errmsg,
				struct msg *res)
{
	struct restore_ctx *ctx = arg;
	ctx->done(ctx->arg, err, errmsg, res);
	sodium_memzero(ctx, sizeof(*ctx));
	free(ctx);
}

static void restore_boot_done(void *arg, int err, const char *errmsg,
			      struct msg *res)
{
	struct restore_ctx *ctx = arg;
	struct msg_rd r;
	struct msg params;
	struct cap *boot;

	if (err) {
		restore_remote_done(ctx, err, errmsg, NULL);
		return;
	}
	msg_rd_init(&r, res);
	msg_get_cap(&r, &boot); /* peer_boot_done always puts one */
	msg_init(&params);
	msg_put_bytes(&params, ctx->secret, REF_SECRET_LEN);
	rpc_call(boot, IFACE_NODE, NODE_RESTORE, &params, restore_remote_done, ctx);
}

void node_restore(struct node *n, const char *s, rpc_done_fn done, void *arg)
{
	struct ref ref;
	const char *why;
	char err[512], addr[300];
	struct msg res;
	int r;

	if (ref_parse(s, &ref, &why) < 0) {
		snprintf(err, sizeof(err), "malformed ref: %s", why);
		done(arg, -EINVAL, err, NULL);
		return;
	}
	if (!memcmp(ref.pub, n->keys.pub, 32)) {
		msg_init(&res);
		r = restore_local(n, ref.secret, &res, err, sizeof(err));
		done(arg, r, r ? err : NULL, &res);
		msg_free(&res);
	} else {
		struct restore_ctx *ctx = calloc(1, sizeof(*ctx));
		if (!ctx) {
			done(arg, -ENOMEM, "out of memory", NULL);
			return;
		}
		ctx->node = n;
		memcpy(ctx->secret, ref.secret, REF_SECRET_LEN);
		ctx->done = done;
		ctx->arg = arg;
		ref_address(&ref, addr, sizeof(addr));
		peer_bootstrap(n, addr, ref.pub, restore_boot_done, ctx);
	}
	sodium_memzero(&ref, sizeof(ref));
}

/* --- streams ------------------------------------------------------ */

static struct peer *peer_of_conn(struct node *n, struct rpc_conn *rc)
{
	for (struct peer *p = n->peers; p; p = p->next)
		if (p->rc == rc)
			return p;
	return NULL;
}

/* Answers (token, key, addr) for a data connection to this node: over
 * the network (its key and address), or over the admin socket (neither). */
static void answer_token(struct node *n, struct cap *stream, struct rpc_call *call,
			 int network)
{
	uint8_t token[NODE_TOKEN_LEN];
	int e;

	if ((e = node_token_new(n, stream, token)) < 0) {
		rpc_return_error(call, e, "out of memory");
		return;
	}
	msg_put_bytes(&call->results, token, sizeof(token));
	msg_put_bytes(&call->results, n->keys.pub, network ? sizeof(n->keys.pub) : 0);
	msg_put_str(&call->results, network ? n->contact : "");
	sodium_memzero(token, sizeof(token));
	rpc_return(call);
}

void node_stream_connect(struct node *n, struct cap *stream, struct rpc_call *call)
{
	answer_token(n, stream, call, 1);
}

void node_stream_call(struct node *n, struct cap *stream, struct rpc_call *call,
		      const char *objname)
{
	if (call->iface == IFACE_STREAM && call->method == STREAM_CONNECT)
		node_stream_connect(n, stream, call);
	else if (call->iface == IFACE_STREAM && call->method == STREAM_BIND_TO)
		node_stream_bind(n, stream, call);
	else
		rpc_return_unknown(call, objname);
}

/*
 * Where a data connection for a remote stream goes: its node issues a
 * token and says who and where it is. A node we reached ourselves is
 * dialed where we reached it (its own idea of its address may not hold
 * from here); any other (a stream handed on by a third node) at the
 * address it gives, pinned to the key it gives.
 */
struct stream_dest {
	uint8_t token[NODE_TOKEN_LEN];
	uint8_t pub[32];
	char addr[300];
};

typedef void (*locate_fn)(void *arg, int err, const char *why,
			  const struct stream_dest *d);

struct locate_ctx {
	locate_fn cb;
	void *arg;
	int via_peer;
	uint8_t via_pub[32];
	char via_addr[300];
};

static void locate_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct locate_ctx *ctx = arg;
	struct stream_dest d;
	struct msg_rd r;
	const uint8_t *tok, *pub;
	size_t ntok, npub;
	char why[RPC_MAX_ERRMSG + 64];

	memset(&d, 0, sizeof(d));
	if (err) {
		snprintf(why, sizeof(why), "the stream refuses a connection: %s", errmsg);
		goto fail;
	}
	msg_rd_init(&r, res);
	if (msg_get_bytes(&r, &tok, &ntok) < 0 || ntok != NODE_TOKEN_LEN ||
	    msg_get_bytes(&r, &pub, &npub) < 0 || npub != 32 ||
	    msg_get_str(&r, d.addr, sizeof(d.addr)) < 0) {
		err = -EBADMSG;
		snprintf(why, sizeof(why), "the stream's answer is malformed");
		goto fail;
	}
	memcpy(d.token, tok, NODE_TOKEN_LEN);
	memcpy(d.pub, pub, 32);
	if (ctx->via_peer && !memcmp(d.pub, ctx->via_pub, 32))
		snprintf(d.addr, sizeof(d.addr), "%s", ctx->via_addr);
	if (!d.addr[0]) {
		err = -EHOSTUNREACH;
		snprintf(why, sizeof(why), "the stream's node does not say where it is");
		goto fail;
	}
	ctx->cb(ctx->arg, 0, NULL, &d);
	sodium_memzero(&d, sizeof(d));
	free(ctx);
	return;
fail:
	ctx->cb(ctx->arg, err, why, NULL);
	free(ctx);
}

static void stream_locate(struct node *n, struct cap *stream, locate_fn cb, void *arg)
{
	struct locate_ctx *ctx = calloc(1, sizeof(*ctx));
	struct rpc_conn *rc = cap_conn(stream);
	struct peer *p = rc ? peer_of_conn(n, rc) : NULL;
	struct msg params;

	if (!ctx) {
		cb(arg, -ENOMEM, "out of memory", NULL);
		return;
	}
	ctx->cb = cb;
	ctx->arg = arg;
	if (p) {
		ctx->via_peer = 1;
		memcpy(ctx->via_pub, p->pub, 32);
		snprintf(ctx->via_addr, sizeof(ctx->via_addr), "%s", p->addr);
	}
	msg_init(&params);
	rpc_call(stream, IFACE_STREAM, STREAM_CONNECT, &params, locate_done, ctx);
}

/* Opening a data connection: to a stream of this node, the near end of a
 * socket pair whose far end the stream takes; to a remote one, a
 * connection of our own to its node, presenting a token. */
struct open_ctx {
	struct node *node;
	node_open_fn cb;
	void *arg;
	uint8_t token[NODE_TOKEN_LEN];
	char addr[300];
};

static void open_finish(struct open_ctx *ctx, struct wire_conn *wc, int err,
			const char *why)
{
	if (wc)
		wire_conn_set_ops(wc, NULL, NULL);
	ctx->cb(ctx->arg, wc, err, why);
	sodium_memzero(ctx->token, sizeof(ctx->token));
	free(ctx);
}

static void open_remote_ready(struct wire_conn *wc, void *arg)
{
	struct open_ctx *ctx = arg;
	uint8_t hello[1 + NODE_TOKEN_LEN] = { HELLO_DATA };
	int e;

	memcpy(hello + 1, ctx->token, NODE_TOKEN_LEN);
	e = wire_conn_send(wc, hello, sizeof(hello));
	sodium_memzero(hello, sizeof(hello));
	if (e < 0) {
		wire_conn_close(wc);
		open_finish(ctx, NULL, e, "cannot send the token");
		return;
	}
	open_finish(ctx, wc, 0, NULL);
}

static void open_remote_closed(struct wire_conn *wc, int err, void *arg)
{
	struct open_ctx *ctx = arg;
	char why[400];
	snprintf(why, sizeof(why), "data connection to %s failed: %s", ctx->addr,
		 strerror(err ? -err : ECONNRESET));
	open_finish(ctx, NULL, err ? err : -ECONNRESET, why);
}

static void drop_record(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
}

static const struct wire_conn_ops open_remote_ops = {
	.ready = open_remote_ready,
	.record = drop_record,
	.closed = open_remote_closed,
};

static void open_located(void *arg, int err, const char *why,
			 const struct stream_dest *d)
{
	struct open_ctx *ctx = arg;
	char msg[512];

	if (err) {
		open_finish(ctx, NULL, err, why);
		return;
	}
	memcpy(ctx->token, d->token, NODE_TOKEN_LEN);
	snprintf(ctx->addr, sizeof(ctx->addr), "%s", d->addr);
	if (!dial(ctx->node, d->addr, d->pub, &open_remote_ops, ctx, msg, sizeof(msg)))
		open_finish(ctx, NULL, -EHOSTUNREACH, msg);
}

static void open_local_ready(struct wire_conn *wc, void *arg)
{
	open_finish(arg, wc, 0, NULL);
}

static void open_local_closed(struct wire_conn *wc, int err, void *arg)
{
	open_finish(arg, NULL, err ? err : -ECONNRESET, "the local stream went away");
}

static const struct wire_conn_ops open_local_ops = {
	.ready = open_local_ready,
	.record = drop_record,
	.closed = open_local_closed,
};

/* The stream's end until its attach takes it over. */
static const struct wire_conn_ops open_far_ops = {
	.record = drop_record,
};

void node_stream_open(struct node *n, struct cap *stream, node_open_fn cb, void *arg)
{
	struct open_ctx *ctx = calloc(1, sizeof(*ctx));
	struct wire_conn *near, *far;
	int sv[2];

	if (!ctx) {
		cb(arg, NULL, -ENOMEM, "out of memory");
		return;
	}
	ctx->node = n;
	ctx->cb = cb;
	ctx->arg = arg;
	if (!stream->ops->attach) {
		stream_locate(n, stream, open_located, ctx);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
		free(ctx);
		cb(arg, NULL, -errno, "cannot create a socket pair");
		return;
	}
	far = wire_conn_new(n->loop, sv[1], WIRE_PLAIN, NULL, NULL, &open_far_ops, NULL);
	near = wire_conn_new(n->loop, sv[0], WIRE_PLAIN, NULL, NULL, &open_local_ops, ctx);
	if (!far || !near) {
		if (far)
			wire_conn_close(far);
		if (near)
			wire_conn_close(near);
		free(ctx);
		cb(arg, NULL, -ENOMEM, "out of memory");
		return;
	}
	/* near's ready (or failure) answers; far is the stream's from now. */
	stream->ops->attach(stream, far);
}

/* A data connection that arrived for a stream: piped to it, locally or
 * through a connection to the stream's node. */
struct attach_ctx {
	struct wire_conn *data; /* NULL once it went */
};

static void attach_wait_closed(struct wire_conn *wc, int err, void *arg)
{
	((struct attach_ctx *)arg)->data = NULL;
}

static const struct wire_conn_ops attach_wait_ops = {
	.record = drop_record,
	.closed = attach_wait_closed,
};

static void attach_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct attach_ctx *ctx = arg;

	if (!ctx->data) {
		if (wc)
			wire_conn_close(wc);
	} else if (!wc) {
		log_warn("stream: %s", why);
		wire_conn_close(ctx->data);
	} else {
		node_pipe(ctx->data, wc);
	}
	free(ctx);
}

void node_stream_attach(struct node *n, struct cap *stream, struct wire_conn *data)
{
	struct attach_ctx *ctx;

	if (stream->ops->attach) {
		stream->ops->attach(stream, data);
		return;
	}
	if (!(ctx = calloc(1, sizeof(*ctx)))) {
		wire_conn_close(data);
		return;
	}
	ctx->data = data;
	wire_conn_pause(data, 1);
	wire_conn_set_ops(data, &attach_wait_ops, ctx);
	node_stream_open(n, stream, attach_opened, ctx);
}

/*
 * bindTo: the holder keeps a duplicate of the binding's connection
 * descriptor. Dropping the holder shuts that socket down, which ends the
 * pipes on both sides however many hops they span; a binding that ended
 * on its own leaves a holder that cuts nothing.
 */
struct holder {
	struct cap cap;
	int fd;
};

static void holder_call(struct cap *c, struct rpc_call *call)
{
	rpc_return_unknown(call, "holder");
}

static void holder_free(struct cap *c)
{
	struct holder *h = (struct holder *)c;
	shutdown(h->fd, SHUT_RDWR);
	close(h->fd);
	log_debug("stream: binding released");
	free(h);
}

static const struct cap_ops holder_ops = {
	.name = "holder",
	.call = holder_call,
	.free = holder_free,
};

struct bind_ctx {
	struct node *node;
	struct cap *stream;
	struct rpc_call *call;
};

static void bind_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct bind_ctx *ctx = arg;
	struct holder *h;

	if (!wc) {
		rpc_return_error(ctx->call, err, "cannot reach the other stream: %s", why);
		goto out;
	}
	if (!(h = calloc(1, sizeof(*h))) || (h->fd = fcntl(wire_conn_fd(wc), F_DUPFD_CLOEXEC, 0)) < 0) {
		free(h);
		wire_conn_close(wc);
		rpc_return_error(ctx->call, -ENOMEM, "out of memory");
		goto out;
	}
	cap_init(&h->cap, &holder_ops);
	node_stream_attach(ctx->node, ctx->stream, wc);
	msg_put_cap(&ctx->call->results, &h->cap);
	cap_unref(&h->cap);
	rpc_return(ctx->call);
out:
	cap_unref(ctx->stream);
	free(ctx);
}

void node_stream_bind(struct node *n, struct cap *stream, struct rpc_call *call)
{
	struct bind_ctx *ctx;
	struct msg_rd r;
	struct cap *other;

	msg_rd_init(&r, &call->params);
	if (msg_get_cap(&r, &other) < 0) {
		rpc_return_error(call, -EINVAL, "bindTo takes a stream");
		return;
	}
	if (other == stream) {
		rpc_return_error(call, -EINVAL, "a stream cannot be bound to itself");
		return;
	}
	if (!(ctx = calloc(1, sizeof(*ctx)))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	ctx->node = n;
	ctx->stream = cap_ref(stream);
	ctx->call = call;
	node_stream_open(n, other, bind_opened, ctx);
}

/* --- Node and NodeAdmin -------------------------------------------- */

static void answer_cap(struct rpc_call *call, int err, const char *errmsg,
		       struct msg *res)
{
	struct msg_rd r;
	struct cap *c;
	if (err) {
		rpc_return_error(call, err, "%s", errmsg);
		return;
	}
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &c) < 0) {
		rpc_return_error(call, -EBADMSG, "restore returned no object");
		return;
	}
	msg_put_cap(&call->results, c);
	rpc_return(call);
}

static void restore_call_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	answer_cap(arg, err, errmsg, res);
}

static void node_call_restore(struct session *s, struct rpc_call *call)
{
	struct msg_rd r;
	const uint8_t *secret;
	size_t n;
	char err[512], key[NODE_ID_LEN + 1];
	struct msg res;
	int e;

	msg_rd_init(&r, &call->params);
	if (msg_get_bytes(&r, &secret, &n) < 0 || n != REF_SECRET_LEN) {
		rpc_return_error(call, -EINVAL, "restore takes a %d-byte secret",
				 REF_SECRET_LEN);
		return;
	}
	node_id_format(s->peer_key, key);
	msg_init(&res);
	e = restore_local(s->node, secret, &res, err, sizeof(err));
	log_info("peer %s at %s restores a ref: %s", key, s->addr,
		 e ? err : "ok");
	answer_cap(call, e, err, &res);
	msg_free(&res);
}

static int put_description(struct msg *m, const char *desc)
{
	char shown[REF_MAX_DESC];
	ref_redact(desc, shown, sizeof(shown));
	return msg_put_str(m, shown);
}

static int put_record(struct msg *m, const struct ref_record *rec)
{
	int r;
	if ((r = msg_put_i64(m, rec->id)) < 0 ||
	    (r = msg_put_str(m, rec->service)) < 0 ||
	    (r = put_description(m, rec->description)) < 0 ||
	    (r = msg_put_bool(m, rec->read_only)) < 0 ||
	    (r = msg_put_bool(m, rec->persistent)) < 0 ||
	    (r = msg_put_i64(m, rec->expiry)) < 0)
		return r;
	return msg_put_i64(m, rec->created);
}

static int list_one(const struct ref_record *rec, void *arg)
{
	return put_record(arg, rec);
}

/* A ref given to NodeAdmin: must name this node. */
static int admin_own_ref(struct node *n, struct rpc_call *call, struct ref_record *rec)
{
	struct msg_rd r;
	char s[REF_MAX_LEN];
	struct ref ref;
	const char *why;
	int e;

	msg_rd_init(&r, &call->params);
	if (msg_get_str(&r, s, sizeof(s)) < 0 || ref_parse(s, &ref, &why) < 0) {
		rpc_return_error(call, -EINVAL, "malformed ref");
		return -EINVAL;
	}
	if (memcmp(ref.pub, n->keys.pub, 32)) {
		rpc_return_error(call, -EXDEV, "that ref belongs to another node "
				 "(only its own node can show or revoke it)");
		return -EXDEV;
	}
	e = ref_store_find(n->db, ref.secret, rec);
	sodium_memzero(&ref, sizeof(ref));
	if (e == -ENOENT)
		rpc_return_error(call, e, "no such ref on this node (already revoked?)");
	else if (e < 0 && e != -ETIMEDOUT)
		rpc_return_error(call, e, "database error");
	return e == -ETIMEDOUT ? 0 : e;
}

static void admin_export(struct session *s, struct rpc_call *call)
{
	struct node *n = s->node;
	struct ref_record rec = { 0 };
	struct msg_rd r;
	struct ref ref = { 0 };
	struct cap *probe = NULL;
	char err[512], out[REF_MAX_LEN];
	int e;

	msg_rd_init(&r, &call->params);
	if (msg_get_str(&r, rec.service, sizeof(rec.service)) < 0 ||
	    msg_get_str(&r, rec.description, sizeof(rec.description)) < 0 ||
	    msg_get_bool(&r, &rec.persistent) < 0 ||
	    msg_get_bool(&r, &rec.read_only) < 0 ||
	    msg_get_i64(&r, &rec.expiry) < 0) {
		rpc_return_error(call, -EINVAL, "malformed export request");
		return;
	}
	const struct node_service *svc = find_service(n, rec.service);
	if (!svc) {
		rpc_return_error(call, -ENOSYS, "no service named '%s'", rec.service);
		return;
	}
	/* Restoring once now checks the description, so that a bad one fails
	 * at export time rather than at the far end. */
	if ((e = svc->restore(n, &rec, &probe, err, sizeof(err))) < 0) {
		rpc_return_error(call, e, "%s", err);
		return;
	}
	cap_unref(probe);
	if ((e = ref_store_add(n->db, &rec, ref.secret)) < 0) {
		rpc_return_error(call, e, "cannot store the ref (database error)");
		return;
	}
	snprintf(ref.host, sizeof(ref.host), "%s", n->advertise);
	ref.port = net_addr_port(&n->listen_addr);
	memcpy(ref.pub, n->keys.pub, 32);
	ref_format(&ref, out, sizeof(out));
	sodium_memzero(&ref, sizeof(ref));
	{
		char shown[REF_MAX_DESC];
		ref_redact(rec.description, shown, sizeof(shown));
		log_info("exported %s %s as ref #%lld%s", rec.service, shown,
			 (long long)rec.id, rec.persistent ? " (persistent)" : "");
	}
	msg_put_str(&call->results, out);
	sodium_memzero(out, sizeof(out));
	rpc_return(call);
}

static void admin_attach_located(void *arg, int err, const char *why,
				 const struct stream_dest *d)
{
	struct rpc_call *call = arg;
	if (err) {
		rpc_return_error(call, err, "%s", why);
		return;
	}
	msg_put_bytes(&call->results, d->token, sizeof(d->token));
	msg_put_bytes(&call->results, d->pub, sizeof(d->pub));
	msg_put_str(&call->results, d->addr);
	rpc_return(call);
}

/* A local program wants a data connection for a stream: through the
 * admin socket, this daemon relaying; or, if it asks to be direct and
 * the stream is remote, straight to the stream's node, so that its bytes
 * take no detour (when it can reach that node itself: it may live in
 * another network namespace than this daemon). */
static void admin_attach(struct session *s, struct rpc_call *call)
{
	struct msg_rd r;
	struct cap *c;
	int direct = 0;

	msg_rd_init(&r, &call->params);
	if (msg_get_cap(&r, &c) < 0 || msg_get_bool(&r, &direct) < 0) {
		rpc_return_error(call, -EINVAL, "attach takes a stream and a flag");
		return;
	}
	if (direct && !c->ops->attach && cap_conn(c))
		stream_locate(s->node, c, admin_attach_located, call);
	else
		answer_token(s->node, c, call, 0);
}

static void admin_call(struct session *s, struct rpc_call *call)
{
	struct node *n = s->node;
	struct ref_record rec;
	char ref[REF_MAX_LEN], listen[128];
	struct msg_rd r;

	switch (call->method) {
	case NODE_ADMIN_INFO:
		net_addr_format(&n->listen_addr, listen, sizeof(listen));
		msg_put_str(&call->results, n->id);
		msg_put_str(&call->results, listen);
		msg_put_str(&call->results, n->advertise);
		msg_put_str(&call->results, n->admin_path);
		msg_put_str(&call->results, n->dir);
		rpc_return(call);
		return;
	case NODE_ADMIN_RESTORE:
		msg_rd_init(&r, &call->params);
		if (msg_get_str(&r, ref, sizeof(ref)) < 0) {
			rpc_return_error(call, -EINVAL, "restore takes a ref");
			return;
		}
		node_restore(n, ref, restore_call_done, call);
		sodium_memzero(ref, sizeof(ref));
		return;
	case NODE_ADMIN_REF_LIST:
		ref_store_each(n->db, list_one, &call->results);
		rpc_return(call);
		return;
	case NODE_ADMIN_REF_SHOW:
		if (admin_own_ref(n, call, &rec) < 0)
			return;
		put_record(&call->results, &rec);
		rpc_return(call);
		return;
	case NODE_ADMIN_REF_REVOKE:
		if (admin_own_ref(n, call, &rec) < 0)
			return;
		if (ref_store_delete(n->db, rec.id) < 0) {
			rpc_return_error(call, -EIO, "database error");
			return;
		}
		{
			char shown[REF_MAX_DESC];
			ref_redact(rec.description, shown, sizeof(shown));
			log_info("revoked ref #%lld (%s %s)", (long long)rec.id, rec.service,
				 shown);
		}
		rpc_return(call);
		return;
	case NODE_ADMIN_EXPORT:
		admin_export(s, call);
		return;
	case NODE_ADMIN_ATTACH:
		admin_attach(s, call);
		return;
	case NODE_ADMIN_SERVICE: {
		char name[32];
		const struct node_service *svc;
		struct cap *c;
		msg_rd_init(&r, &call->params);
		if (msg_get_str(&r, name, sizeof(name)) < 0 || !(svc = find_service(n, name))) {
			rpc_return_error(call, -ENOENT, "no such service");
			return;
		}
		if (!svc->admin || !(c = svc->admin(n))) {
			rpc_return_error(call, -ENOSYS, "the %s service has no administration", name);
			return;
		}
		msg_put_cap(&call->results, c);
		cap_unref(c);
		rpc_return(call);
		return;
	}
	}
	rpc_return_unknown(call, "NodeAdmin");
}

static void session_call(struct cap *c, struct rpc_call *call)
{
	struct session *s = (struct session *)c;

	if (s->admin && call->iface == IFACE_NODE_ADMIN) {
		admin_call(s, call);
		return;
	}
	if (call->iface == IFACE_NODE && call->method == NODE_RESTORE) {
		node_call_restore(s, call);
		return;
	}
	if (call->iface == IFACE_NODE && call->method == NODE_INFO) {
		msg_put_str(&call->results, s->node->id);
		rpc_return(call);
		return;
	}
	rpc_return_unknown(call, s->admin ? "NodeAdmin" : "Node");
}

static void session_free(struct cap *c)
{
	free(c);
}

static const struct cap_ops session_ops = {
	.name = "node",
	.call = session_call,
	.free = session_free,
};

/* --- accepted connections ------------------------------------------ */

static void inlist_add(struct inlist *l, struct inconn *ic)
{
	ic->list = l;
	ic->next = NULL;
	ic->prev = l->tail;
	if (l->tail)
		l->tail->next = ic;
	else
		l->head = ic;
	l->tail = ic;
	l->n++;
}

static void inlist_del(struct inconn *ic)
{
	struct inlist *l = ic->list;
	if (!l)
		return;
	if (ic->prev)
		ic->prev->next = ic->next;
	else
		l->head = ic->next;
	if (ic->next)
		ic->next->prev = ic->prev;
	else
		l->tail = ic->prev;
	ic->prev = ic->next = NULL;
	ic->list = NULL;
	l->n--;
}

/* Ends a connection that never said what it is for, silently: its owner
 * is this code. */
static void pending_drop(struct inconn *ic)
{
	inlist_del(ic);
	wire_conn_close(ic->wc);
	free(ic);
}

static void in_rpc_record(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
	struct inconn *ic = arg;
	rpc_conn_record(ic->rc, d, n);
}

static void in_closed(struct wire_conn *wc, int err, void *arg)
{
	struct inconn *ic = arg;
	inlist_del(ic);
	if (ic->rc)
		rpc_conn_closed(ic->rc, err);
	free(ic);
}

static const struct wire_conn_ops in_rpc_ops = {
	.record = in_rpc_record,
	.closed = in_closed,
};

static int start_rpc(struct inconn *ic)
{
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	cap_init(&s->cap, &session_ops);
	s->node = ic->node;
	s->admin = ic->admin;
	if (!ic->admin)
		memcpy(s->peer_key, wire_conn_remote_key(ic->wc), 32);
	snprintf(s->addr, sizeof(s->addr), "%s", ic->addr);
	ic->rc = rpc_conn_new(ic->wc, &s->cap, NULL, ic);
	cap_unref(&s->cap);
	if (!ic->rc)
		return -ENOMEM;
	wire_conn_set_ops(ic->wc, &in_rpc_ops, ic);
	if (!ic->admin)
		inlist_add(&ic->node->sessions, ic);
	return 0;
}

/* --- per-peer limits ----------------------------------------------- */

static void all_acct_free(struct wire_acct *a)
{
	free(a);
}

static void acct_free(struct wire_acct *a)
{
	struct peer_acct *pa = (struct peer_acct *)a;
	if (pa->node) {
		for (struct peer_acct **pp = &pa->node->accts; *pp; pp = &(*pp)->next) {
			if (*pp == pa) {
				*pp = pa->next;
				break;
			}
		}
	}
	free(pa);
}

/* The account of a peer's key, or of an address (key NULL); made if
 * there is none. NULL when out of memory. */
static struct peer_acct *acct_get(struct node *n, const uint8_t *key, const char *host)
{
	struct peer_acct *pa;

	for (pa = n->accts; pa; pa = pa->next) {
		if (key ? !pa->by_addr && !memcmp(pa->key, key, sizeof(pa->key))
			: pa->by_addr && !strcmp(pa->host, host))
			return pa;
	}
	if (!(pa = calloc(1, sizeof(*pa))))
		return NULL;
	pa->a.max_bytes = key ? PEER_MAX_BYTES : ADDR_MAX_BYTES;
	pa->a.free = acct_free;
	pa->node = n;
	pa->by_addr = !key;
	if (key)
		memcpy(pa->key, key, sizeof(pa->key));
	else
		snprintf(pa->host, sizeof(pa->host), "%s", host);
	pa->next = n->accts;
	n->accts = pa;
	return pa;
}

/* Logs a refusal for the limits, now and then. */
static void limit_note(struct node *n, const char *who, const char *from, int max)
{
	uint64_t now = loop_now_ms(n->loop);
	if (now - n->last_refusal_log_ms >= 10000 || !n->last_refusal_log_ms) {
		n->last_refusal_log_ms = now;
		log_warn("%s (from %s) has %d connections, the most %s; refusing more", who,
			 from, max, strcmp(who, "every peer") ? "one peer may have" : "allowed");
	}
}

/* Charges a peer's new connection to its key's account, its address's
 * and the node's; refuses it when any of them is at its limit. */
static int acct_charge(struct node *n, struct inconn *ic)
{
	const uint8_t *key = wire_conn_remote_key(ic->wc);
	struct peer_acct *pk = acct_get(n, key, NULL), *ph = pk ? acct_get(n, NULL, ic->host) : NULL;
	char id[NODE_ID_LEN + 1], who[NODE_ID_LEN + 16];

	if (!pk || !ph) {
		/* A fresh account nothing holds yet goes at once. */
		if (pk && !pk->a.refs)
			acct_free(&pk->a);
		return -ENOMEM;
	}
	node_id_format(key, id);
	snprintf(who, sizeof(who), "node %s", id);
	if (pk->a.conns >= PEER_MAX_CONNS)
		limit_note(n, who, ic->addr, PEER_MAX_CONNS);
	else if (ph->a.conns >= ADDR_MAX_CONNS)
		limit_note(n, "address", ic->addr, ADDR_MAX_CONNS);
	else if (n->all->conns >= ALL_MAX_CONNS)
		limit_note(n, "every peer", ic->addr, ALL_MAX_CONNS);
	else {
		wire_conn_charge(ic->wc, &pk->a);
		wire_conn_charge(ic->wc, &ph->a);
		wire_conn_charge(ic->wc, n->all);
		return 0;
	}
	if (!pk->a.refs)
		acct_free(&pk->a);
	if (!ph->a.refs)
		acct_free(&ph->a);
	return -EMFILE;
}

static void in_hello(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
	struct inconn *ic = arg;
	struct node *node = ic->node;
	struct cap *stream;

	inlist_del(ic);
	if (!ic->admin && acct_charge(node, ic) < 0) {
		wire_conn_close(wc);
		free(ic);
		return;
	}
	if (n == 1 && d[0] == HELLO_RPC) {
		if (start_rpc(ic) == 0)
			return;
	} else if (n == 1 + NODE_TOKEN_LEN && d[0] == HELLO_DATA) {
		stream = token_take(node, d + 1);
		if (stream) {
			free(ic);
			node_stream_attach(node, stream, wc);
			cap_unref(stream);
			return;
		}
		log_info("connection from %s presented an unknown or expired "
			 "stream token", ic->addr);
	} else {
		log_info("connection from %s: bad hello; closing", ic->addr);
	}
	wire_conn_close(wc);
	free(ic);
}

static void in_hello_closed(struct wire_conn *wc, int err, void *arg)
{
	struct inconn *ic = arg;
	inlist_del(ic);
	free(ic);
}

/* Counts a connection dropped for the flood limits; logs now and then. */
static void flood_note(struct node *n, uint64_t now)
{
	n->refused++;
	if (now - n->last_refusal_log_ms >= 10000 || !n->last_refusal_log_ms) {
		n->last_refusal_log_ms = now;
		log_warn("handshake flood: dropping peer connections that do not "
			 "finish their handshake (%u pending, %llu dropped so far)",
			 n->pending.n, (unsigned long long)n->refused);
	}
}

/* May another peer connection start a handshake now? At the caps (all
 * pending ones, or those of one address), the oldest pending one makes
 * room: a flood of stalled handshakes cannot lock out peers that complete
 * theirs. */
static int admit_peer(struct node *n, const char *host)
{
	uint64_t now = loop_now_ms(n->loop);
	struct inconn *old = NULL;
	unsigned same = 0;

	n->accept_tokens += (now - n->accept_refill_ms) * ACCEPTS_PER_SECOND / 1000.0;
	n->accept_refill_ms = now;
	if (n->accept_tokens > ACCEPTS_PER_SECOND)
		n->accept_tokens = ACCEPTS_PER_SECOND;
	if (n->accept_tokens < 1) {
		flood_note(n, now);
		return 0;
	}
	n->accept_tokens -= 1;
	for (struct inconn *ic = n->pending.head; ic; ic = ic->next) {
		if (!strcmp(ic->host, host) && !same++)
			old = ic;
	}
	if (same < MAX_PENDING_PER_ADDR)
		old = n->pending.n >= MAX_PENDING_PEERS ? n->pending.head : NULL;
	if (old) {
		pending_drop(old);
		flood_note(n, now);
	}
	return 1;
}

static const struct wire_conn_ops in_hello_ops = {
	.record = in_hello,
	.closed = in_hello_closed,
};

static int peer_is_admin(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 0;
	/* root, or the user the daemon runs as */
	return cred.uid == 0 || cred.uid == geteuid();
}

static void accept_one(struct node *n, int lfd, int admin)
{
	struct net_addr peer;
	struct inconn *ic;
	int fd = net_accept(lfd, &peer);

	if (fd < 0) {
		if (fd != -EAGAIN && fd != -ECONNABORTED)
			log_warn("accept: %s", strerror(-fd));
		return;
	}
	if (admin && !peer_is_admin(fd)) {
		log_warn("admin socket: refusing a client that is neither root "
			 "nor the daemon's user");
		close(fd);
		return;
	}
	if (!(ic = calloc(1, sizeof(*ic)))) {
		close(fd);
		return;
	}
	ic->node = n;
	ic->admin = admin;
	ic->since = loop_now_ms(n->loop);
	net_addr_format(&peer, ic->addr, sizeof(ic->addr));
	snprintf(ic->host, sizeof(ic->host), "%s", ic->addr);
	if (strrchr(ic->host, ':'))
		*strrchr(ic->host, ':') = 0;
	if (admin)
		snprintf(ic->addr, sizeof(ic->addr), "admin socket");
	else if (!admit_peer(n, ic->host)) {
		close(fd);
		free(ic);
		return;
	}
	ic->wc = wire_conn_new(n->loop, fd, admin ? WIRE_PLAIN : WIRE_RESPONDER,
			       n->keys.priv, NULL, &in_hello_ops, ic);
	if (!ic->wc)
		free(ic);
	else if (!admin)
		inlist_add(&n->pending, ic);
}

/* Every SWEEP_MS: frames begun and never finished, connections that have
 * not said what they are for, and peers' sessions idle for idle_ms (they
 * hold nothing of ours but the node object, and we nothing of theirs). */
static void sweep(struct loop *l, struct loop_timer *t, void *arg)
{
	struct node *n = arg;
	uint64_t now = loop_now_ms(l), since;
	unsigned dropped = 0;

	while (n->pending.head && now - n->pending.head->since >= HELLO_TIMEOUT_MS) {
		pending_drop(n->pending.head);
		dropped++;
	}
	wire_conn_sweep(l, WIRE_FRAME_TIMEOUT_MS);
	if (dropped)
		log_info("closed %u connection(s) that did not say what they were "
			 "for within %d s", dropped, HELLO_TIMEOUT_MS / 1000);
	for (struct inconn *ic = n->sessions.head; ic; ic = ic->next) {
		since = rpc_conn_idle_since(ic->rc);
		if (since && now - since >= n->idle_ms) {
			log_debug("closing the idle connection of %s", ic->addr);
			wire_conn_abort(ic->wc, -ETIMEDOUT);
		}
	}
}

static void listen_io(struct loop *l, int fd, uint32_t ev, void *arg)
{
	accept_one(arg, fd, 0);
}

static void admin_io(struct loop *l, int fd, uint32_t ev, void *arg)
{
	accept_one(arg, fd, 1);
}

/* --- setup --------------------------------------------------------- */

/* The host written into new refs: the listen address when it is a
 * specific one, else the first global address of this machine. */
static void pick_advertise(struct node *n)
{
	struct ifaddrs *ifa, *i;
	char ip[INET6_ADDRSTRLEN], tmp[160];

	net_addr_format(&n->listen_addr, tmp, sizeof(tmp));
	if (strncmp(tmp, "[::]", 4) && strncmp(tmp, "0.0.0.0", 7)) {
		*strrchr(tmp, ':') = 0;
		snprintf(n->advertise, sizeof(n->advertise), "%s",
			 tmp[0] == '[' ? tmp + 1 : tmp);
		char *close = strchr(n->advertise, ']');
		if (close)
			*close = 0;
		return;
	}
	snprintf(n->advertise, sizeof(n->advertise), "127.0.0.1");
	if (getifaddrs(&ifa) < 0)
		return;
	for (i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		struct sockaddr_in *sin = (struct sockaddr_in *)i->ifa_addr;
		if ((ntohl(sin->sin_addr.s_addr) >> 24) == 127)
			continue;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(n->advertise, sizeof(n->advertise), "%s", ip);
		break;
	}
	freeifaddrs(ifa);
}

static int open_listeners(struct node *n, const struct node_config *cfg)
{
	struct net_addr admin;
	char where[160];
	int r;

	if ((r = net_addr_parse(cfg->listen ? cfg->listen : "[::]:901",
				REF_DEFAULT_PORT, &n->listen_addr)) < 0) {
		log_error("bad --listen address '%s'", cfg->listen);
		return r;
	}
	net_addr_format(&n->listen_addr, where, sizeof(where));
	if ((n->listen_fd = net_listen(&n->listen_addr, PEER_BACKLOG)) < 0) {
		log_error("cannot listen on %s: %s (another daemon there? use "
			  "--listen)", where, strerror(-n->listen_fd));
		return n->listen_fd;
	}
	snprintf(n->admin_path, sizeof(n->admin_path), "%s", cfg->admin_socket);
	snprintf(where, sizeof(where), "unix:%s", cfg->admin_socket);
	if ((r = net_addr_parse(where, 0, &admin)) < 0) {
		log_error("admin socket path too long: %s", cfg->admin_socket);
		return r;
	}
	net_addr_format(&n->listen_addr, where, sizeof(where));
	/* Only the owner can connect at all; SO_PEERCRED checks again. */
	mode_t old = umask(077);
	n->admin_fd = net_listen(&admin, ADMIN_BACKLOG);
	umask(old);
	if (n->admin_fd < 0) {
		log_error("cannot create admin socket %s: %s", cfg->admin_socket,
			  strerror(-n->admin_fd));
		return n->admin_fd;
	}
	n->listen_w = loop_watch_fd(n->loop, n->listen_fd, EPOLLIN, listen_io, n);
	n->admin_w = loop_watch_fd(n->loop, n->admin_fd, EPOLLIN, admin_io, n);
	if (!n->listen_w || !n->admin_w)
		return -ENOMEM;
	log_info("node %s listening on %s, admin socket %s", n->id, where,
		 cfg->admin_socket);
	return 0;
}

int node_new(struct loop *l, const struct node_config *cfg, struct node **out)
{
	char path[4200];
	struct node *n = calloc(1, sizeof(*n));
	int r;

	if (!n)
		return -ENOMEM;
	n->loop = l;
	n->listen_fd = n->admin_fd = -1;
	n->accept_tokens = ACCEPTS_PER_SECOND;
	n->accept_refill_ms = loop_now_ms(l);
	snprintf(n->dir, sizeof(n->dir), "%s", cfg->dir);
	if (mkdir(n->dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error("cannot create state directory %s: %m", n->dir);
		goto fail;
	}
	if ((r = node_keys_load(n->dir, &n->keys)) < 0)
		goto fail;
	node_id_format(n->keys.pub, n->id);
	snprintf(path, sizeof(path), "%s/node.db", n->dir);
	if ((r = store_open(path, &node_db_schema, &n->db)) < 0)
		goto fail;
	if ((r = ref_store_drop_ephemeral(n->db)) < 0 ||
	    (r = open_listeners(n, cfg)) < 0)
		goto fail;
	/* Connections may outlive the node by a round or two: theirs too. */
	if (!(n->all = calloc(1, sizeof(*n->all)))) {
		r = -ENOMEM;
		goto fail;
	}
	n->all->max_bytes = ALL_MAX_BYTES;
	n->all->free = all_acct_free;
	n->all->refs = 1; /* the node's own */
	n->idle_ms = (cfg->idle_timeout_s ? cfg->idle_timeout_s : IDLE_TIMEOUT_DEFAULT_S) * 1000ull;
	if (!(n->sweep = loop_timer_new(l, sweep, n)) ||
	    loop_timer_arm(n->sweep, SWEEP_MS, SWEEP_MS) < 0) {
		r = -errno;
		log_error("cannot create a timer: %m");
		goto fail;
	}
	pick_advertise(n);
	snprintf(n->contact, sizeof(n->contact),
		 strchr(n->advertise, ':') ? "[%s]:%d" : "%s:%d", n->advertise,
		 net_addr_port(&n->listen_addr));
	*out = n;
	return 0;
fail:
	node_free(n);
	return r;
}

void node_free(struct node *n)
{
	if (!n)
		return;
	for (int i = n->nservices - 1; i >= 0; i--)
		if (n->services[i]->stop)
			n->services[i]->stop(n);
	while (n->peers) {
		struct peer *p = n->peers;
		n->peers = p->next;
		if (p->rc)
			rpc_conn_closed(p->rc, -ECONNRESET);
		if (p->wc)
			wire_conn_close(p->wc);
		peer_fail_waiters(p, -ECONNRESET, "node shutting down");
		cap_unref(p->boot);
		free(p);
	}
	/* Connections not yet freed outlive the node: they must not find
	 * it through their lists or accounts. */
	for (struct inlist *l = &n->pending; l; l = l == &n->pending ? &n->sessions : NULL)
		while (l->head)
			inlist_del(l->head);
	for (struct peer_acct *pa = n->accts; pa; pa = pa->next)
		pa->node = NULL;
	if (n->all)
		wire_acct_unref(n->all);
	if (n->sweep)
		loop_timer_del(n->sweep);
	while (n->tokens) {
		struct token *t = n->tokens;
		n->tokens = t->next;
		cap_unref(t->stream);
		free(t);
	}
	if (n->listen_w)
		loop_watch_del(n->listen_w);
	if (n->admin_w)
		loop_watch_del(n->admin_w);
	if (n->listen_fd >= 0)
		close(n->listen_fd);
	if (n->admin_fd >= 0) {
		close(n->admin_fd);
		unlink(n->admin_path);
	}
	if (n->db)
		store_close(n->db);
	node_keys_wipe(&n->keys);
	free(n);
}

struct node_obj {
	struct cap cap;
	struct node *node;
};

struct cap *node_obj_new(struct node *n, const struct cap_ops *ops)
{
	struct node_obj *o = calloc(1, sizeof(*o));

	if (!o)
		return NULL;
	cap_init(&o->cap, ops);
	o->node = n;
	return &o->cap;
}

struct node *node_obj_node(struct cap *c)
{
	return ((struct node_obj *)c)->node;
}

void node_obj_free(struct cap *c)
{
	free(c);
}
