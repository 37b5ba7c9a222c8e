/*
 * The block service and applet. A BlockDevice (File.openAsBlock on a
 * file ref) serves its file or device as NBD, one session per data
 * connection of its stream (nbd/server.c).
 *   metac block serve --listen unix:PATH|ADDR:PORT [--read-only]
 *                     [--direct] [--insecure] [--persistent] local:PATH|REF
 *   metac block unserve unix:PATH|ADDR:PORT
 *   metac block list [--json]
 *   metac block copy SRC DST      (each local:PATH or a ref)
 * serve is a plain NBD endpoint for qemu, nbdcopy, nbdinfo or nbd-client:
 * for local:PATH it serves the file itself; for a REF it relays every
 * connection to the remote device over the encrypted transport (each
 * one restores the ref anew, so a restarted node is picked up). Plain
 * NBD has no authentication, so it listens on unix sockets and loopback
 * only, unless --insecure. With --persistent the daemon serves instead
 * of the applet, and again after a restart (the block service's
 * ServiceAdmin), until unserve.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "nbd/client.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "proto/node.h"
#include "proto/ref.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/block.h"
#include "svc/session.h"
#include "wire/conn.h"

#define SERVE_MAX_SESSIONS 64
/* Socket buffers between the daemon's loop and a session's threads:
 * room for a few large requests at once. */
#define SESSION_SOCKBUF (4 << 20)

/* --- the service --------------------------------------------------- */

struct blk_obj {
	struct cap cap;
	struct node *node;
	struct nbd_export *ex;
};

struct blk_stream {
	struct cap cap;
	struct node *node;
	struct nbd_export *ex;
};

static void blk_stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct blk_stream *)c)->node, c, call, "nbd stream");
}

/* An NBD session of ex on sock (taken), in a process of its own; ended
 * (may be NULL) runs when it is over. 0 or -errno. */
static int nbd_session_spawn(struct node *n, struct nbd_export *ex, int sock,
			     void (*ended)(void *arg), void *arg)
{
	struct session_cfg cfg = {
		.kind = SANDBOX_NBD,
		.read_only = nbd_export_read_only(ex),
		.min_block = nbd_export_min_block(ex),
		.name = nbd_export_name(ex),
	};
	return session_spawn(n, &cfg, sock, nbd_export_fd(ex), ended, arg);
}

static void blk_stream_attach(struct cap *c, struct wire_conn *data)
{
	struct blk_stream *s = (struct blk_stream *)c;
	int fd, e;

	/* The session runs in a process of its own (svc/session.h). */
	if ((e = node_pipe_pair(data, SESSION_SOCKBUF, &fd)) < 0)
		log_warn("block: cannot pipe a data connection: %s", strerror(-e));
	else
		nbd_session_spawn(s->node, s->ex, fd, NULL, NULL);
}

static void blk_stream_free(struct cap *c)
{
	nbd_export_unref(((struct blk_stream *)c)->ex);
	free(c);
}

static const struct cap_ops blk_stream_ops = {
	.name = "nbd stream",
	.call = blk_stream_call,
	.free = blk_stream_free,
	.attach = blk_stream_attach,
};

static void blk_call(struct cap *c, struct rpc_call *call)
{
	struct blk_obj *b = (struct blk_obj *)c;
	struct blk_stream *s;

	if (call->iface != IFACE_BLOCK_DEVICE) {
		rpc_return_unknown(call, "block device");
		return;
	}
	switch (call->method) {
	case BLOCK_DEVICE_INFO:
		msg_put_u64(&call->results, nbd_export_size(b->ex));
		msg_put_bool(&call->results, nbd_export_read_only(b->ex));
		msg_put_u64(&call->results, nbd_export_min_block(b->ex));
		rpc_return(call);
		return;
	case BLOCK_DEVICE_NBD_STREAM:
		if (!(s = calloc(1, sizeof(*s)))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		cap_init(&s->cap, &blk_stream_ops);
		s->node = b->node;
		s->ex = b->ex;
		nbd_export_ref(s->ex);
		rpc_return_cap(call, &s->cap);
		return;
	}
	rpc_return_unknown(call, "block device");
}

static void blk_free(struct cap *c)
{
	nbd_export_unref(((struct blk_obj *)c)->ex);
	free(c);
}

static const struct cap_ops blk_ops = {
	.name = "block device",
	.call = blk_call,
	.free = blk_free,
};

static const char *base_name(const char *path)
{
	const char *b = strrchr(path, '/');
	return b && b[1] ? b + 1 : path;
}

int block_device_new(struct node *n, const char *path, int read_only, struct cap **out,
		     char *err, size_t errsz)
{
	struct blk_obj *b = calloc(1, sizeof(*b));
	int e;

	if (!b) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	if (!(b->ex = nbd_export_open(path, base_name(path), &read_only, &e))) {
		snprintf(err, errsz, "%s: %s", path,
			 e == -EINVAL ? "not a regular file or block device" : strerror(-e));
		free(b);
		return e;
	}
	cap_init(&b->cap, &blk_ops);
	b->node = n;
	*out = &b->cap;
	return 0;
}

/* --- block serve --------------------------------------------------- */

static void serve_one(int fd, const struct net_addr *peer, void *arg)
{
	nbd_serve_async(arg, fd);
}

/* Relaying to a remote BlockDevice: each connection restores the ref,
 * opens the device and pipes itself to a fresh NBD stream. */
struct relay {
	struct admin *a;
	const char *ref;
	int read_only, direct;
	int lfd, conns;
};

struct relay_conn {
	struct relay *r;
	int fd;
	struct cap *file, *blk, *stream;
};

static void relay_conn_end(struct relay_conn *rc)
{
	if (rc->fd >= 0)
		close(rc->fd);
	cap_unref(rc->stream);
	cap_unref(rc->blk);
	cap_unref(rc->file);
	rc->r->conns--;
	free(rc);
}

/* The cap a call answered with, as a new reference; NULL (and the
 * reason logged) if it failed. */
static struct cap *answer_cap(int err, const char *errmsg, struct msg *res, const char *what)
{
	struct msg_rd rd;
	struct cap *c;

	if (err) {
		log_warn("nbd relay: %s: %s", what, errmsg);
		return NULL;
	}
	msg_rd_init(&rd, res);
	if (msg_get_cap(&rd, &c) < 0) {
		log_warn("nbd relay: %s: the answer holds no object", what);
		return NULL;
	}
	return cap_ref(c);
}

static void relay_done(void *arg, int err)
{
	struct relay_conn *rc = arg;
	if (err)
		log_info("nbd relay: a session ended: %s", strerror(-err));
	relay_conn_end(rc);
}

static void relay_have_stream(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct relay_conn *rc = arg;
	if (!(rc->stream = answer_cap(err, errmsg, res, "cannot open an NBD stream"))) {
		relay_conn_end(rc);
		return;
	}
	admin_stream_pipe(rc->r->a, rc->stream, rc->r->direct, rc->fd, rc->fd, relay_done, rc);
	rc->fd = -1;
}

static void relay_have_blk(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct relay_conn *rc = arg;
	struct msg params;

	if (!(rc->blk = answer_cap(err, errmsg, res, "cannot open the block device"))) {
		relay_conn_end(rc);
		return;
	}
	msg_init(&params);
	rpc_call(rc->blk, IFACE_BLOCK_DEVICE, BLOCK_DEVICE_NBD_STREAM, &params,
		 relay_have_stream, rc);
}

static void relay_have_file(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct relay_conn *rc = arg;
	struct msg params;

	if (!(rc->file = answer_cap(err, errmsg, res, "cannot restore the ref"))) {
		relay_conn_end(rc);
		return;
	}
	msg_init(&params);
	msg_put_bool(&params, rc->r->read_only);
	rpc_call(rc->file, IFACE_FILE, FILE_OPEN_AS_BLOCK, &params, relay_have_blk, rc);
}

static void relay_accept(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct relay *r = arg;
	struct relay_conn *rc;
	struct net_addr peer;
	struct msg params;
	int c = net_accept(r->lfd, &peer);

	if (c < 0)
		return;
	if (r->conns >= SERVE_MAX_SESSIONS || !(rc = calloc(1, sizeof(*rc)))) {
		log_warn("nbd relay: too many sessions; refusing a connection");
		close(c);
		return;
	}
	r->conns++;
	rc->r = r;
	rc->fd = c;
	msg_init(&params);
	msg_put_str(&params, r->ref);
	rpc_call(r->a->node_admin, IFACE_NODE_ADMIN, NODE_ADMIN_RESTORE, &params,
		 relay_have_file, rc);
}

/* Opens REF as a block device through the daemon (to check it, and say
 * what it is) and relays connections to it until a signal. */
static int serve_remote(const char *sock, const char *ref, int read_only, int direct,
			int lfd, const char *where)
{
	struct admin a;
	struct relay r = { .a = &a, .ref = ref, .read_only = read_only, .direct = direct,
			   .lfd = lfd };
	struct cap *file = NULL, *blk = NULL;
	struct msg params, res;
	struct msg_rd rd;
	uint64_t size = 0;
	int ro = 0, ret = EXIT_FAIL;

	msg_init(&res);
	if (admin_open(&a, admin_socket_path(sock)) < 0 || admin_restore(&a, ref, &file) < 0)
		goto out;
	msg_init(&params);
	msg_put_bool(&params, read_only);
	if (admin_call_cap(&a, file, IFACE_FILE, FILE_OPEN_AS_BLOCK, &params, &blk,
			   "the ref is not a file or block device") < 0 ||
	    admin_call(&a, blk, IFACE_BLOCK_DEVICE, BLOCK_DEVICE_INFO, NULL, &res,
		       "cannot read the block device's size") < 0)
		goto out;
	msg_rd_init(&rd, &res);
	msg_get_u64(&rd, &size);
	msg_get_bool(&rd, &ro);
	/* Never the ref itself: it is a secret. */
	log_info("serving a remote block device (%llu bytes%s) as NBD on %s",
		 (unsigned long long)size, ro ? ", read-only" : "", where);
	cap_unref(blk);
	cap_unref(file);
	blk = file = NULL;
	if (admin_serve(&a, lfd, relay_accept, &r, "metac block") == 0)
		ret = EXIT_OK;
out:
	msg_free(&res);
	cap_unref(blk);
	cap_unref(file);
	admin_close(&a);
	return ret;
}

/* --- NBD endpoints the daemon serves (block serve --persistent) ----- */

/*
 * An endpoint lives in the daemon, so it outlives the applet that asked
 * for it; a persistent one is in the binds table (service 'block', target
 * the address, source local:PATH or the ref, flags BSERVE_READ_ONLY) and
 * comes back when the daemon starts. A local file is served in-process;
 * for a ref, every connection restores the ref anew and is piped to a
 * fresh NBD stream of the remote device, so a restarted remote node is
 * picked up by the next connection.
 */
#define BSERVE_READ_ONLY 1
#define BSERVE_RETRY_MS 5000

struct bserve {
	struct node *node;
	char where[160];  /* the address as listened on: the key */
	char source[REF_MAX_LEN];
	int read_only, insecure, persistent;
	int lfd;
	struct loop_watch *w;
	struct loop_timer *retry; /* listening failed: tried again */
	struct nbd_export *ex;    /* a local source */
	unsigned sessions, refs;
	struct bserve *next;
};

static struct bserve *bserves;

static void bserve_unref(struct bserve *s)
{
	if (--s->refs)
		return;
	nbd_export_unref(s->ex);
	sodium_memzero(s->source, sizeof(s->source));
	free(s);
}

static void bserve_session_ended(void *arg)
{
	struct bserve *s = arg;
	s->sessions--;
	bserve_unref(s);
}

/* One connection to a ref's endpoint, through restore, openAsBlock and
 * nbdStream to a data connection. */
struct bconn {
	struct bserve *s;
	int fd;
	struct cap *file, *blk, *stream;
};

static void bconn_end(struct bconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	cap_unref(c->stream);
	cap_unref(c->blk);
	cap_unref(c->file);
	c->s->sessions--;
	bserve_unref(c->s);
	free(c);
}

static void bconn_done(void *arg, int err)
{
	struct bconn *c = arg;
	c->fd = -1; /* the pipe closed it */
	bconn_end(c);
}

static void bconn_open(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct bconn *c = arg;
	int e;

	if (!wc) {
		log_warn("block serve %s: cannot reach the device: %s", c->s->where, why);
		bconn_end(c);
		return;
	}
	if ((e = node_pipe_fds(wc, c->fd, c->fd, bconn_done, c)) < 0) {
		log_warn("block serve %s: cannot pipe a session: %s", c->s->where, strerror(-e));
		wire_conn_close(wc);
		bconn_end(c);
	}
}

static void bconn_have_stream(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct bconn *c = arg;
	if (!(c->stream = answer_cap(err, errmsg, res, "cannot open an NBD stream"))) {
		bconn_end(c);
		return;
	}
	node_stream_open(c->s->node, c->stream, bconn_open, c);
}

static void bconn_have_blk(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct bconn *c = arg;
	struct msg params;

	if (!(c->blk = answer_cap(err, errmsg, res, "cannot open the block device"))) {
		bconn_end(c);
		return;
	}
	msg_init(&params);
	rpc_call(c->blk, IFACE_BLOCK_DEVICE, BLOCK_DEVICE_NBD_STREAM, &params,
		 bconn_have_stream, c);
}

static void bconn_have_file(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct bconn *c = arg;
	struct msg params;

	if (!(c->file = answer_cap(err, errmsg, res, "cannot restore the ref"))) {
		bconn_end(c);
		return;
	}
	msg_init(&params);
	msg_put_bool(&params, c->s->read_only);
	rpc_call(c->file, IFACE_FILE, FILE_OPEN_AS_BLOCK, &params, bconn_have_blk, c);
}

static void bserve_accept(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct bserve *s = arg;
	struct net_addr peer;
	struct bconn *c;
	int cfd = net_accept(s->lfd, &peer);

	if (cfd < 0)
		return;
	if (s->sessions >= SERVE_MAX_SESSIONS) {
		log_warn("block serve %s: too many sessions; refusing a connection", s->where);
		close(cfd);
		return;
	}
	if (s->ex) {
		/* Counted like the relayed ones, until its process ends. */
		s->sessions++;
		s->refs++;
		if (nbd_session_spawn(s->node, s->ex, cfd, bserve_session_ended, s) < 0)
			bserve_session_ended(s);
		return;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		log_warn("block serve %s: too many sessions; refusing a connection", s->where);
		close(cfd);
		return;
	}
	s->sessions++;
	s->refs++;
	c->s = s;
	c->fd = cfd;
	node_restore(s->node, s->source, bconn_have_file, c);
}

/* Listens; -errno and why on failure. */
static int bserve_listen(struct bserve *s, char *err, size_t errsz)
{
	struct net_addr addr;

	if (net_addr_parse(s->where, 0, &addr) < 0) {
		snprintf(err, errsz, "cannot parse listen address '%s'", s->where);
		return -EINVAL;
	}
	if ((s->lfd = net_listen(&addr, 64)) < 0) {
		int e = s->lfd;
		snprintf(err, errsz, "cannot listen on %s: %s", s->where, strerror(-e));
		s->lfd = -1;
		return e;
	}
	if (!(s->w = loop_watch_fd(node_loop(s->node), s->lfd, EPOLLIN, bserve_accept, s))) {
		close(s->lfd);
		s->lfd = -1;
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void bserve_retry(struct loop *l, struct loop_timer *t, void *arg)
{
	struct bserve *s = arg;
	char err[256];

	if (bserve_listen(s, err, sizeof(err)) == 0) {
		log_info("block serve: listening on %s again", s->where);
		loop_timer_del(s->retry);
		s->retry = NULL;
	}
}

static void bserve_stop(struct bserve *s)
{
	if (s->w)
		loop_watch_del(s->w);
	if (s->lfd >= 0) {
		close(s->lfd);
		if (!strncmp(s->where, "unix:", 5))
			unlink(s->where + 5);
	}
	if (s->retry)
		loop_timer_del(s->retry);
	s->w = NULL;
	s->retry = NULL;
	s->lfd = -1;
}

static int bserve_store(struct bserve *s, int add)
{
	const char *sql = add ? "INSERT OR REPLACE INTO binds (service, target, source, uid, gid, flags)"
				" VALUES ('block', ?1, ?2, 0, 0, ?3)"
			      : "DELETE FROM binds WHERE service = 'block' AND target = ?1";
	sqlite3_stmt *st;
	int ok;

	if (sqlite3_prepare_v2(node_db(s->node), sql, -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, s->where, -1, SQLITE_STATIC);
	if (add) {
		sqlite3_bind_text(st, 2, s->source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, s->read_only ? BSERVE_READ_ONLY : 0);
	}
	ok = sqlite3_step(st) == SQLITE_DONE;
	sqlite3_finalize(st);
	return ok ? 0 : -EIO;
}

static struct bserve *bserve_find(const char *where)
{
	for (struct bserve *s = bserves; s; s = s->next)
		if (!strcmp(s->where, where))
			return s;
	return NULL;
}

/* Starts an endpoint. restoring: it comes from the database, and a
 * listen that fails is tried again rather than refused. */
static int bserve_start(struct node *n, const char *listen, const char *source, int read_only,
			int insecure, int persistent, int restoring, char *where, size_t wsz,
			char *err, size_t errsz)
{
	const char *path = cli_local_path(source);
	struct net_addr addr;
	struct ref ref;
	struct bserve *s;
	int e;

	if (net_addr_parse(listen, 0, &addr) < 0) {
		snprintf(err, errsz, "cannot parse listen address '%s'", listen);
		return -EINVAL;
	}
	if (addr.ss.ss_family != AF_UNIX && !net_addr_is_loopback(&addr) && !insecure) {
		snprintf(err, errsz, "serve speaks plain NBD, with no encryption or "
			 "authentication; it listens on loopback or unix sockets only "
			 "(--insecure to override)");
		return -EPERM;
	}
	if (!path && ref_parse(source, &ref, NULL) < 0) {
		snprintf(err, errsz, "the source is neither local:PATH nor a ref");
		return -EINVAL;
	}
	if (!(s = calloc(1, sizeof(*s)))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	s->node = n;
	s->refs = 1;
	s->lfd = -1;
	s->read_only = read_only;
	s->insecure = insecure;
	s->persistent = persistent;
	net_addr_format(&addr, s->where, sizeof(s->where));
	snprintf(s->source, sizeof(s->source), "%s", source);
	if (bserve_find(s->where)) {
		snprintf(err, errsz, "%s is served already (block unserve it first)", s->where);
		bserve_unref(s);
		return -EEXIST;
	}
	if (path && !(s->ex = nbd_export_open(path, base_name(path), &s->read_only, &e))) {
		snprintf(err, errsz, "cannot serve %s: %s", path,
			 e == -EINVAL ? "not a regular file or block device" : strerror(-e));
		bserve_unref(s);
		return e;
	}
	if ((e = bserve_listen(s, err, errsz)) < 0) {
		if (!restoring) {
			bserve_unref(s);
			return e;
		}
		log_warn("block serve: %s; trying again every %d s", err, BSERVE_RETRY_MS / 1000);
		if (!(s->retry = loop_timer_new(node_loop(n), bserve_retry, s)) ||
		    loop_timer_arm(s->retry, BSERVE_RETRY_MS, BSERVE_RETRY_MS) < 0) {
			bserve_stop(s);
			bserve_unref(s);
			return -ENOMEM;
		}
	}
	if (persistent && !restoring && bserve_store(s, 1) < 0) {
		snprintf(err, errsz, "cannot record the endpoint in the database");
		bserve_stop(s);
		bserve_unref(s);
		return -EIO;
	}
	s->next = bserves;
	bserves = s;
	if (where)
		snprintf(where, wsz, "%s", s->where);
	/* Never the ref itself: it is a secret. */
	log_info("serving %s as NBD on %s%s%s", path ? path : "a remote block device",
		 s->where, s->read_only ? " (read-only)" : "", persistent ? " (persistent)" : "");
	return 0;
}

static int bserve_end(struct node *n, const char *listen, char *err, size_t errsz)
{
	struct net_addr addr;
	char where[160];
	struct bserve *s;

	if (net_addr_parse(listen, 0, &addr) < 0) {
		snprintf(err, errsz, "cannot parse listen address '%s'", listen);
		return -EINVAL;
	}
	net_addr_format(&addr, where, sizeof(where));
	if (!(s = bserve_find(where))) {
		snprintf(err, errsz, "nothing is served on %s", where);
		return -ENOENT;
	}
	for (struct bserve **pp = &bserves; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	if (s->persistent)
		bserve_store(s, 0);
	bserve_stop(s);
	log_info("no longer serving NBD on %s", s->where);
	bserve_unref(s);
	return 0;
}

/* What a listing shows of a source: never a ref's secret. */
static void source_shown(const char *source, char *out, size_t outsz)
{
	struct ref ref;
	if (cli_local_path(source) || ref_parse(source, &ref, NULL) < 0)
		snprintf(out, outsz, "%s", source);
	else
		snprintf(out, outsz, strchr(ref.host, ':') ? "ref://[%s]:%d/..." :
			 "ref://%s:%d/...", ref.host, ref.port);
}

static void block_admin_call(struct cap *c, struct rpc_call *call)
{
	struct node *n = node_obj_node(c);
	char listen[160], source[REF_MAX_LEN], err[512], where[160];
	int read_only, insecure, persistent, e;
	struct msg_rd r;

	if (call->iface != IFACE_SERVICE_ADMIN) {
		rpc_return_unknown(call, "block admin");
		return;
	}
	msg_rd_init(&r, &call->params);
	switch (call->method) {
	case BLOCK_ADMIN_SERVE:
		if (msg_get_str(&r, listen, sizeof(listen)) < 0 ||
		    msg_get_str(&r, source, sizeof(source)) < 0 ||
		    msg_get_bool(&r, &read_only) < 0 || msg_get_bool(&r, &insecure) < 0 ||
		    msg_get_bool(&r, &persistent) < 0) {
			rpc_return_error(call, -EINVAL, "malformed serve call");
			break;
		}
		e = bserve_start(n, listen, source, read_only, insecure, persistent, 0, where,
				 sizeof(where), err, sizeof(err));
		sodium_memzero(source, sizeof(source));
		if (e < 0) {
			rpc_return_error(call, e, "%s", err);
			break;
		}
		msg_put_str(&call->results, where);
		rpc_return(call);
		break;
	case BLOCK_ADMIN_UNSERVE:
		if (msg_get_str(&r, listen, sizeof(listen)) < 0) {
			rpc_return_error(call, -EINVAL, "malformed unserve call");
			break;
		}
		if ((e = bserve_end(n, listen, err, sizeof(err))) < 0)
			rpc_return_error(call, e, "%s", err);
		else
			rpc_return(call);
		break;
	case BLOCK_ADMIN_LIST: {
		uint64_t count = 0;
		for (struct bserve *s = bserves; s; s = s->next)
			count++;
		msg_put_u64(&call->results, count);
		for (struct bserve *s = bserves; s; s = s->next) {
			source_shown(s->source, source, sizeof(source));
			msg_put_str(&call->results, s->where);
			msg_put_str(&call->results, source);
			msg_put_bool(&call->results, s->read_only);
			msg_put_bool(&call->results, s->persistent);
			msg_put_u64(&call->results, s->sessions);
		}
		rpc_return(call);
		break;
	}
	default:
		rpc_return_unknown(call, "block admin");
	}
}

static const struct cap_ops block_admin_ops = {
	.name = "block admin",
	.call = block_admin_call,
	.free = node_obj_free,
};

static struct cap *block_admin_new(struct node *n)
{
	return node_obj_new(n, &block_admin_ops);
}

/* Endpoints recorded as persistent come back once the node runs. */
static void bserves_restore(struct loop *l, void *arg)
{
	struct node *n = arg;
	char err[512];
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(node_db(n), "SELECT target, source, flags FROM binds"
			       " WHERE service = 'block'", -1, &st, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *where = (const char *)sqlite3_column_text(st, 0);
		const char *src = (const char *)sqlite3_column_text(st, 1);
		int flags = sqlite3_column_int(st, 2);
		/* It was accepted once: --insecure or not, the address is
		 * what the administrator chose. */
		if (where && src &&
		    bserve_start(n, where, src, !!(flags & BSERVE_READ_ONLY), 1, 1, 1, NULL, 0,
				 err, sizeof(err)) < 0)
			log_warn("block serve %s does not come back: %s", where, err);
	}
	sqlite3_finalize(st);
}

static void block_stop(struct node *n)
{
	session_forget_all();
	while (bserves) {
		struct bserve *s = bserves;
		bserves = s->next;
		bserve_stop(s);
		bserve_unref(s);
	}
}

static const struct node_service block_service = {
	.name = "block",
	.admin = block_admin_new,
	.stop = block_stop,
};

int block_service_register(struct node *n)
{
	int e = node_register_service(n, &block_service);
	if (e == 0)
		loop_defer(node_loop(n), bserves_restore, n);
	return e;
}

/* serve --persistent: the daemon serves, and again after a restart. */
static int serve_in_daemon(const char *sock, const char *listen, const char *path,
			   const char *source, int read_only, int insecure)
{
	char abs[PATH_MAX + 8], where[160], lsn[PATH_MAX + 16], cwd[PATH_MAX];
	struct cap *ba = NULL;
	struct msg params, res;
	struct msg_rd rd;
	struct admin a;
	int r = EXIT_FAIL;

	/* The daemon resolves nothing against the applet's directory. */
	if (!strncmp(listen, "unix:", 5) && listen[5] != '/') {
		if (!getcwd(cwd, sizeof(cwd))) {
			fprintf(stderr, "metac block: cannot tell the current directory: %s\n",
				strerror(errno));
			return EXIT_FAIL;
		}
		snprintf(lsn, sizeof(lsn), "unix:%s/%s", cwd, listen + 5);
		listen = lsn;
	}
	if (path) {
		char real[PATH_MAX];
		if (!realpath(path, real)) {
			fprintf(stderr, "metac block: %s: %s\n", path, strerror(errno));
			return EXIT_FAIL;
		}
		snprintf(abs, sizeof(abs), "local:%s", real);
		source = abs;
	}
	msg_init(&res);
	if (admin_open_service(&a, sock, "block", &ba) == 0) {
		msg_init(&params);
		msg_put_str(&params, listen);
		msg_put_str(&params, source);
		msg_put_bool(&params, read_only);
		msg_put_bool(&params, insecure);
		msg_put_bool(&params, 1);
		if (admin_call(&a, ba, IFACE_SERVICE_ADMIN, BLOCK_ADMIN_SERVE, &params, &res,
			       "cannot serve") == 0) {
			msg_rd_init(&rd, &res);
			if (msg_get_str(&rd, where, sizeof(where)) == 0)
				fprintf(stderr, "metac block: the node serves NBD on %s, "
						"until `metac block unserve %s`\n", where, where);
			r = EXIT_OK;
		}
	}
	msg_free(&res);
	cap_unref(ba);
	admin_close(&a);
	return r;
}

static int block_unserve(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "unserve takes the address served on");
	return admin_service_call_str(sock, "block", BLOCK_ADMIN_UNSERVE, argv[optind],
				      "cannot unserve");
}

/* The NBD endpoints the daemon serves. */
static int block_list(const struct applet *self, int argc, char **argv)
{
	struct msg res;
	struct msg_rd rd;
	struct admin a;
	uint64_t n = 0;
	int json, r;

	msg_init(&res);
	if ((r = admin_list_call(self, argc, argv, "block", IFACE_SERVICE_ADMIN,
				 BLOCK_ADMIN_LIST, &a, &res, &json)) != EXIT_OK)
		goto out;
	msg_rd_init(&rd, &res);
	msg_get_u64(&rd, &n);
	if (json)
		printf("[");
	for (uint64_t i = 0; i < n; i++) {
		char where[160], source[PATH_MAX + 8];
		int ro = 0, persistent = 0;
		uint64_t sessions = 0;
		if (msg_get_str(&rd, where, sizeof(where)) < 0 ||
		    msg_get_str(&rd, source, sizeof(source)) < 0 || msg_get_bool(&rd, &ro) < 0 ||
		    msg_get_bool(&rd, &persistent) < 0 || msg_get_u64(&rd, &sessions) < 0)
			break;
		if (json) {
			printf("%s{\"listen\":", i ? "," : "");
			cli_json_str(stdout, where);
			printf(",\"source\":");
			cli_json_str(stdout, source);
			printf(",\"read_only\":%s,\"persistent\":%s,\"relayed_sessions\":%llu}",
			       ro ? "true" : "false", persistent ? "true" : "false",
			       (unsigned long long)sessions);
		} else {
			printf("%-32s %-40s %-3s %-3s %llu\n", where, source, ro ? "ro" : "rw",
			       persistent ? "yes" : "no", (unsigned long long)sessions);
		}
	}
	if (json)
		printf("]\n");
	else if (!n)
		fprintf(stderr, "metac block: the node serves no NBD endpoint\n");
out:
	msg_free(&res);
	admin_close(&a);
	return r;
}

static int block_serve(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "direct", no_argument, NULL, 'd' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ "persistent", no_argument, NULL, 'p' },
		{ 0 }
	};
	const char *listen = NULL, *path, *sock = NULL;
	struct nbd_export *ex = NULL;
	struct net_addr addr;
	char where[160];
	int c, insecure = 0, read_only = 0, direct = 0, persistent = 0, lfd, e;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:rda:p", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'p': persistent = 1; break;
		case 'r': read_only = 1; break;
		case 'd': direct = 1; break;
		case 'I': insecure = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "serve takes one local:PATH or REF");
	path = cli_local_path(argv[optind]);
	if (!path && strncmp(argv[optind], "ref://", 6))
		return cli_usage_error(self, "serve takes one local:PATH or REF");
	if (!listen)
		return cli_usage_error(self, "serve needs --listen unix:PATH or ADDR:PORT");
	if (path && direct)
		return cli_usage_error(self, "--direct applies to a REF");
	if (persistent)
		return serve_in_daemon(sock, listen, path, argv[optind], read_only, insecure);
	if (net_addr_parse(listen, 0, &addr) < 0) {
		fprintf(stderr, "metac block: cannot parse listen address '%s'\n", listen);
		return EXIT_FAIL;
	}
	if (addr.ss.ss_family != AF_UNIX && !net_addr_is_loopback(&addr) && !insecure) {
		fprintf(stderr, "metac block: serve speaks plain NBD, with no encryption or "
				"authentication; it listens on loopback or unix sockets only "
				"(--insecure to override)\n");
		return EXIT_FAIL;
	}
	if (path && !(ex = nbd_export_open(path, base_name(path), &read_only, &e))) {
		fprintf(stderr, "metac block: cannot export %s: %s\n", path,
			e == -EINVAL ? "not a regular file or block device" : strerror(-e));
		return EXIT_FAIL;
	}
	if ((lfd = net_listen(&addr, 64)) < 0) {
		fprintf(stderr, "metac block: cannot listen on %s: %s\n", listen, strerror(-lfd));
		nbd_export_unref(ex);
		return EXIT_FAIL;
	}
	net_addr_format(&addr, where, sizeof(where));
	if (!path)
		return serve_remote(sock, argv[optind], read_only, direct, lfd, where);
	log_info("serving %s (%llu bytes%s) as NBD on %s", path,
		 (unsigned long long)nbd_export_size(ex), read_only ? ", read-only" : "", where);
	return net_accept_each(lfd, serve_one, ex, "nbd") < 0 ? EXIT_FAIL : EXIT_OK;
}

/* --- block copy ---------------------------------------------------- */

#define COPY_CHUNK (2u << 20)
#define COPY_BATCH 16 /* chunks in flight */

/* One side of a copy: a local file or device, or an NBD connection to
 * a remote one. */
struct endpoint {
	const char *spec;
	const char *path; /* local */
	int fd;
	int sock; /* remote: our end of the data connection */
	struct nbd_client *nbd;
	uint64_t size;
	int is_blk;
	int fresh; /* a regular file we truncated: holes need no writing */
};

struct copy {
	struct endpoint src, dst;
	struct cli_progress progress;
	char err[512];
	int notify[2]; /* the copy thread says it is done */
	int finished;
};

static int ep_open_src(struct endpoint *e, char *err, size_t errsz)
{
	struct stat st;

	if (e->sock >= 0) {
		if (!(e->nbd = nbd_client_new(e->sock, "", err, errsz)))
			return -1;
		e->sock = -1;
		e->size = nbd_client_size(e->nbd);
		return 0;
	}
	if ((e->fd = open(e->path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(e->fd, &st) < 0) {
		snprintf(err, errsz, "%s: %s", e->path, strerror(errno));
		return -1;
	}
	e->is_blk = S_ISBLK(st.st_mode);
	if (e->is_blk ? ioctl(e->fd, BLKGETSIZE64, &e->size) < 0 : !S_ISREG(st.st_mode)) {
		snprintf(err, errsz, "%s: not a regular file or block device", e->path);
		return -1;
	}
	if (!e->is_blk)
		e->size = (uint64_t)st.st_size;
	return 0;
}

static int ep_open_dst(struct endpoint *e, const struct endpoint *src, char *err,
		       size_t errsz)
{
	struct stat st, sst;

	if (e->sock >= 0) {
		if (!(e->nbd = nbd_client_new(e->sock, "", err, errsz)))
			return -1;
		e->sock = -1;
		e->size = nbd_client_size(e->nbd);
		if (nbd_client_flags(e->nbd) & NBD_FLAG_READ_ONLY) {
			snprintf(err, errsz, "the destination is read-only");
			return -1;
		}
		if (e->size < src->size) {
			snprintf(err, errsz, "the destination (%llu bytes) is smaller than the "
				 "source (%llu bytes)", (unsigned long long)e->size,
				 (unsigned long long)src->size);
			return -1;
		}
		return 0;
	}
	if (stat(e->path, &st) == 0 && S_ISBLK(st.st_mode)) {
		if ((e->fd = open(e->path, O_WRONLY | O_CLOEXEC)) < 0 ||
		    ioctl(e->fd, BLKGETSIZE64, &e->size) < 0) {
			snprintf(err, errsz, "%s: %s", e->path, strerror(errno));
			return -1;
		}
		e->is_blk = 1;
		if (e->size < src->size) {
			snprintf(err, errsz, "%s (%llu bytes) is smaller than the source "
				 "(%llu bytes)", e->path, (unsigned long long)e->size,
				 (unsigned long long)src->size);
			return -1;
		}
		return 0;
	}
	if ((e->fd = open(e->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666)) < 0 ||
	    fstat(e->fd, &st) < 0) {
		snprintf(err, errsz, "%s: %s", e->path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errsz, "%s: not a regular file or block device", e->path);
		return -1;
	}
	/* Truncating the source itself would lose it. */
	if (src->fd >= 0 && fstat(src->fd, &sst) == 0 && sst.st_dev == st.st_dev &&
	    sst.st_ino == st.st_ino) {
		snprintf(err, errsz, "%s is the source itself", e->path);
		return -1;
	}
	if (ftruncate(e->fd, 0) < 0 || ftruncate(e->fd, (off_t)src->size) < 0) {
		snprintf(err, errsz, "%s: %s", e->path, strerror(errno));
		return -1;
	}
	e->size = src->size;
	e->fresh = 1;
	return 0;
}

static void ep_close(struct endpoint *e)
{
	nbd_client_free(e->nbd);
	e->nbd = NULL;
	if (e->fd >= 0)
		close(e->fd);
	if (e->sock >= 0)
		close(e->sock);
	e->fd = e->sock = -1;
}

/* The extent at off (at most len): its length, and whether it reads as
 * zeros. */
static int ep_extent(struct endpoint *e, uint64_t off, uint64_t len, uint64_t *elen,
		     int *zero, char *err, size_t errsz)
{
	*elen = len;
	*zero = 0;
	if (e->nbd) {
		uint32_t l, flags;
		int r;
		if (!nbd_client_has_block_status(e->nbd))
			return 0;
		r = nbd_client_block_status(e->nbd, off, len > 0x80000000u ? 0x80000000u
								      : (uint32_t)len,
					    &l, &flags);
		if (r < 0) {
			snprintf(err, errsz, "%s", nbd_client_error(e->nbd));
			return -1;
		}
		if (r == 0) {
			*elen = l < len ? l : len;
			*zero = !!(flags & NBD_STATE_ZERO);
		}
		return 0;
	}
	if (!e->is_blk) {
		off_t d = lseek(e->fd, (off_t)off, SEEK_DATA);
		if (d < 0 && errno == ENXIO) {
			*zero = 1;
		} else if (d > (off_t)off) {
			*zero = 1;
			*elen = (uint64_t)d - off < len ? (uint64_t)d - off : len;
		} else if (d == (off_t)off) {
			off_t h = lseek(e->fd, (off_t)off, SEEK_HOLE);
			if (h > (off_t)off && (uint64_t)h - off < len)
				*elen = (uint64_t)h - off;
		}
	}
	return 0;
}

static int is_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* A piece of a batch: read from the source (unless zero), then written. */
struct piece {
	uint64_t off;
	uint32_t len;
	int zero;
	uint8_t *buf;
};

static int nbd_fail(struct endpoint *e, const char *what, uint64_t off, int r, char *err,
		    size_t errsz)
{
	if (r < 0)
		snprintf(err, errsz, "%s: %s", e->spec, nbd_client_error(e->nbd));
	else
		snprintf(err, errsz, "%s: %s at offset %llu: %s", e->spec, what,
			 (unsigned long long)off, strerror(r));
	return -1;
}

/* Waits for every request in flight on e. */
static int drain(struct endpoint *e, const char *what, char *err, size_t errsz)
{
	int r, nerr, first = 0;
	while ((r = nbd_client_complete(e->nbd, &nerr)) == 0)
		if (nerr && !first)
			first = nerr;
	if (r != -EAGAIN)
		return nbd_fail(e, what, 0, r, err, errsz);
	if (first)
		return nbd_fail(e, what, 0, first, err, errsz);
	return 0;
}

static int read_pieces(struct endpoint *e, struct piece *p, int n, char *err, size_t errsz)
{
	for (int i = 0; i < n; i++) {
		if (p[i].zero)
			continue;
		if (!e->nbd) {
			for (uint32_t done = 0; done < p[i].len;) {
				ssize_t r = pread(e->fd, p[i].buf + done, p[i].len - done,
						  (off_t)(p[i].off + done));
				if (r <= 0) {
					snprintf(err, errsz, "%s: reading at %llu: %s", e->spec,
						 (unsigned long long)p[i].off,
						 r ? strerror(errno) : "the file shrank");
					return -1;
				}
				done += (uint32_t)r;
			}
		} else {
			int r = nbd_client_submit(e->nbd, NBD_CMD_READ, 0, p[i].off, p[i].len, NULL,
						  p[i].buf);
			if (r < 0)
				return nbd_fail(e, "read", p[i].off, r, err, errsz);
		}
	}
	return e->nbd ? drain(e, "read", err, errsz) : 0;
}

/* Zeros on a local destination that may hold data. */
static int local_zero(struct endpoint *e, uint64_t off, uint32_t len)
{
	static const uint8_t zeros[1 << 16];
	if (fallocate(e->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	if (e->is_blk && !((off | len) & 511)) {
		uint64_t range[2] = { off, len };
		if (ioctl(e->fd, BLKZEROOUT, range) == 0)
			return 0;
	}
	while (len) {
		uint32_t k = len < sizeof(zeros) ? len : sizeof(zeros);
		if (pwrite(e->fd, zeros, k, (off_t)off) != (ssize_t)k)
			return -1;
		off += k;
		len -= k;
	}
	return 0;
}

static int write_pieces(struct endpoint *e, struct piece *p, int n, char *err, size_t errsz)
{
	static const uint8_t zeros[COPY_CHUNK];
	int can_zero = e->nbd && (nbd_client_flags(e->nbd) & NBD_FLAG_SEND_WRITE_ZEROES);

	for (int i = 0; i < n; i++) {
		int zero = p[i].zero || is_zero(p[i].buf, p[i].len);
		if (!e->nbd) {
			ssize_t r = 0;
			if (zero && e->fresh)
				continue;
			if (zero)
				r = local_zero(e, p[i].off, p[i].len) ? -1 : (ssize_t)p[i].len;
			else
				for (uint32_t done = 0; done < p[i].len && r >= 0; done += (uint32_t)r)
					r = pwrite(e->fd, p[i].buf + done, p[i].len - done,
						   (off_t)(p[i].off + done));
			if (r < 0) {
				snprintf(err, errsz, "%s: writing at %llu: %s", e->spec,
					 (unsigned long long)p[i].off, strerror(errno));
				return -1;
			}
			continue;
		}
		int r = zero && can_zero
				? nbd_client_submit(e->nbd, NBD_CMD_WRITE_ZEROES, 0, p[i].off,
						    p[i].len, NULL, NULL)
				: nbd_client_submit(e->nbd, NBD_CMD_WRITE, 0, p[i].off, p[i].len,
						    zero ? zeros : p[i].buf, NULL);
		if (r < 0)
			return nbd_fail(e, "write", p[i].off, r, err, errsz);
	}
	return e->nbd ? drain(e, "write", err, errsz) : 0;
}

static int copy_run(struct copy *cp)
{
	struct piece p[COPY_BATCH];
	uint8_t *bufs = malloc((size_t)COPY_BATCH * COPY_CHUNK);
	uint64_t pos = 0, size;
	int r = -1;

	if (!bufs) {
		snprintf(cp->err, sizeof(cp->err), "out of memory");
		return -1;
	}
	if (ep_open_src(&cp->src, cp->err, sizeof(cp->err)) < 0 ||
	    ep_open_dst(&cp->dst, &cp->src, cp->err, sizeof(cp->err)) < 0)
		goto out;
	size = cp->src.size;
	cli_progress_start(&cp->progress, size, isatty(STDERR_FILENO));
	while (pos < size) {
		int n = 0;
		/* A batch: extents of the source cut into chunks. */
		while (n < COPY_BATCH && pos < size) {
			uint64_t elen;
			int zero;
			if (ep_extent(&cp->src, pos, size - pos, &elen, &zero, cp->err,
				      sizeof(cp->err)) < 0)
				goto out;
			if (zero) {
				/* One piece for the whole run: nothing to read. */
				uint64_t l = elen < 0x40000000u ? elen : 0x40000000u;
				p[n++] = (struct piece){ .off = pos, .len = (uint32_t)l, .zero = 1 };
				pos += l;
				continue;
			}
			while (n < COPY_BATCH && elen) {
				uint32_t l = elen < COPY_CHUNK ? (uint32_t)elen : COPY_CHUNK;
				p[n] = (struct piece){ .off = pos, .len = l,
						       .buf = bufs + (size_t)n * COPY_CHUNK };
				n++;
				pos += l;
				elen -= l;
			}
		}
		if (read_pieces(&cp->src, p, n, cp->err, sizeof(cp->err)) < 0 ||
		    write_pieces(&cp->dst, p, n, cp->err, sizeof(cp->err)) < 0)
			goto out;
		cp->progress.done = pos;
		cli_progress_show(&cp->progress, 0);
	}
	if (cp->dst.nbd) {
		int e = nbd_client_flush(cp->dst.nbd);
		if (e) {
			nbd_fail(&cp->dst, "flush", 0, e, cp->err, sizeof(cp->err));
			goto out;
		}
	} else if (fsync(cp->dst.fd) < 0) {
		snprintf(cp->err, sizeof(cp->err), "%s: %s", cp->dst.spec, strerror(errno));
		goto out;
	}
	cli_progress_show(&cp->progress, 1);
	r = 0;
out:
	if (r < 0 && cp->progress.on && cp->progress.done)
		fputc('\n', stderr);
	free(bufs);
	ep_close(&cp->src);
	ep_close(&cp->dst);
	return r;
}

static void *copy_thread(void *arg)
{
	struct copy *cp = arg;
	char one = copy_run(cp) == 0 ? 'y' : 'n';
	if (write(cp->notify[1], &one, 1) != 1)
		abort(); /* a pipe of our own */
	return NULL;
}

static void copy_notified(struct loop *l, int fd, uint32_t ev, void *arg)
{
	((struct copy *)arg)->finished = 1;
}

static void pipe_ended(void *arg, int err)
{
	/* The copy thread sees the connection end by itself. */
}

/* A connected socket whose other end the daemon (or the remote node,
 * with direct) pipes to REF's NBD stream. */
static int open_remote(struct admin *a, const char *ref, int read_only, int direct, int *sock)
{
	struct cap *file = NULL, *blk = NULL, *stream = NULL;
	struct msg params;
	int sv[2] = { -1, -1 }, r = -1;

	if (admin_restore(a, ref, &file) < 0)
		goto out;
	msg_init(&params);
	msg_put_bool(&params, read_only);
	if (admin_call_cap(a, file, IFACE_FILE, FILE_OPEN_AS_BLOCK, &params, &blk,
			   "the ref is not a file or block device") < 0)
		goto out;
	msg_init(&params);
	if (admin_call_cap(a, blk, IFACE_BLOCK_DEVICE, BLOCK_DEVICE_NBD_STREAM, &params, &stream,
			   "cannot open an NBD stream") < 0)
		goto out;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "metac block: %m\n");
		goto out;
	}
	admin_stream_pipe(a, stream, direct, sv[0], sv[0], pipe_ended, NULL);
	*sock = sv[1];
	r = 0;
out:
	cap_unref(stream);
	cap_unref(blk);
	cap_unref(file);
	return r;
}

static int endpoint_init(struct endpoint *e, const char *spec)
{
	memset(e, 0, sizeof(*e));
	e->spec = spec;
	e->fd = e->sock = -1;
	if ((e->path = cli_local_path(spec)))
		return 0;
	return strncmp(spec, "ref://", 6) ? -1 : 0;
}

static int block_copy(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "direct", no_argument, NULL, 'd' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	struct copy *cp = calloc(1, sizeof(*cp));
	const char *sock = NULL;
	struct admin a = { 0 };
	struct loop_watch *w = NULL;
	pthread_t t;
	int c, r = EXIT_FAIL, started = 0, direct = 0, use_admin;

	if (!cp)
		return EXIT_FAIL;
	cp->notify[0] = cp->notify[1] = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "da:", opts, NULL)) != -1) {
		switch (c) {
		case 'd': direct = 1; break;
		case 'a': sock = optarg; break;
		default:
			free(cp);
			return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 2 || endpoint_init(&cp->src, argv[optind]) < 0 ||
	    endpoint_init(&cp->dst, argv[optind + 1]) < 0) {
		free(cp);
		return cli_usage_error(self, "copy takes SRC and DST, each local:PATH or a ref");
	}
	use_admin = !cp->src.path || !cp->dst.path;
	if (use_admin) {
		if (admin_open(&a, admin_socket_path(sock)) < 0)
			goto out;
		if ((!cp->src.path &&
		     open_remote(&a, cp->src.spec, 1, direct, &cp->src.sock) < 0) ||
		    (!cp->dst.path && open_remote(&a, cp->dst.spec, 0, direct, &cp->dst.sock) < 0))
			goto out;
	} else if (!(a.loop = loop_new())) {
		goto out;
	}
	if (pipe2(cp->notify, O_CLOEXEC) < 0 ||
	    !(w = loop_watch_fd(a.loop, cp->notify[0], EPOLLIN, copy_notified, cp)) ||
	    pthread_create(&t, NULL, copy_thread, cp) != 0) {
		fprintf(stderr, "metac block: cannot start the copy: %m\n");
		goto out;
	}
	started = 1;
	/* This thread pipes the data connections; the copy thread does
	 * blocking I/O on their other ends. */
	while (!cp->finished)
		if (loop_run_once(a.loop, -1) < 0)
			break;
	pthread_join(t, NULL);
	if (cp->err[0])
		fprintf(stderr, "metac block: copy failed: %s\n", cp->err);
	else
		r = EXIT_OK;
out:
	if (!started) {
		ep_close(&cp->src);
		ep_close(&cp->dst);
	}
	loop_watch_del(w);
	for (int i = 0; i < 2; i++)
		if (cp->notify[i] >= 0)
			close(cp->notify[i]);
	if (use_admin)
		admin_close(&a);
	else if (a.loop)
		loop_free(a.loop);
	free(cp);
	return r;
}

static int block_session(const struct applet *self, int argc, char **argv)
{
	return session_main(SANDBOX_NBD, argc, argv);
}

int block_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "serve", block_serve },
		{ "unserve", block_unserve },
		{ "_session", block_session },
		{ "list", block_list },
		{ "copy", block_copy },
		{ 0 }
	};
	/* A client that hangs up is an error on its connection, not a
	 * reason to die (nbd/server.h). */
	signal(SIGPIPE, SIG_IGN);
	return cli_dispatch(applet_find("block"), cmds, argc, argv);
}
