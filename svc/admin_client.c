/* Applets talk to the local daemon over the admin socket: plain records,
 * the same RPC as between nodes, NodeAdmin as the bootstrap. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "wire/conn.h"
#include "wire/noise.h"

const char *admin_socket_path(const char *opt)
{
	const char *env = getenv("METAC_ADMIN_SOCKET");
	if (opt)
		return opt;
	return env && *env ? env : ADMIN_SOCKET_DEFAULT;
}

struct wait {
	struct admin *a;
	int done;
	int err;
	struct msg *results;
};

static void wait_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct wait *w = arg;
	w->done = 1;
	w->err = err;
	if (err)
		snprintf(w->a->errmsg, sizeof(w->a->errmsg), "%s", errmsg);
	else if (w->results && res) {
		/* Take the results over: the caller reads them afterwards. */
		*w->results = *res;
		msg_init(res);
	}
}

static int run_until(struct admin *a, struct wait *w)
{
	while (!w->done && !a->err)
		if (loop_run_once(a->loop, -1) < 0)
			return -EIO;
	if (!w->done)
		return a->err;
	return w->err;
}

static void admin_record(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
	struct admin *a = arg;
	rpc_conn_record(a->rc, d, n);
}

static void admin_closed(struct wire_conn *wc, int err, void *arg)
{
	struct admin *a = arg;
	a->wc = NULL;
	if (a->rc)
		rpc_conn_closed(a->rc, err);
	a->rc = NULL;
	a->err = err ? err : -ECONNRESET;
	snprintf(a->errmsg, sizeof(a->errmsg), "the daemon closed the connection");
}

static const struct wire_conn_ops admin_ops = {
	.record = admin_record,
	.closed = admin_closed,
};

/* A plain connection to the admin socket, connected synchronously so that
 * "daemon not running" is reported at once. */
/* EAGAIN: tried again every 20 ms for up to 30 s. */
#define ADMIN_DIAL_TRIES 1500
#define ADMIN_DIAL_WAIT_US 20000

int admin_dial(const char *path, int *fdp)
{
	struct net_addr na;
	char spec[200];
	int fd, r;

	snprintf(spec, sizeof(spec), "unix:%s", path);
	if (net_addr_parse(spec, 0, &na) < 0) {
		fprintf(stderr, "metac: admin socket path too long: %s\n", path);
		return -EINVAL;
	}
	/* A unix socket's full backlog says EAGAIN: a busy daemon (or one
	 * stopped for a moment) takes the connection soon, so wait for it a
	 * while, as a TCP connect would, rather than fail the command. */
	for (int tries = 0;; tries++) {
		if ((fd = net_connect(&na)) >= 0 && (r = net_connect_result(fd)) >= 0)
			break;
		r = fd < 0 ? fd : r;
		if (fd >= 0)
			close(fd);
		if (r != -EAGAIN || tries >= ADMIN_DIAL_TRIES)
			break;
		usleep(ADMIN_DIAL_WAIT_US);
	}
	if (r < 0) {
		if (r == -ENOENT || r == -ECONNREFUSED)
			fprintf(stderr, "metac: the metac daemon is not running "
				"(no one listens on %s); start it with 'metac daemon', "
				"or point --admin-socket/METAC_ADMIN_SOCKET at it\n", path);
		else if (r == -EACCES || r == -EPERM)
			fprintf(stderr, "metac: permission denied on %s: the admin "
				"socket is for root and the daemon's user\n", path);
		else
			fprintf(stderr, "metac: cannot connect to %s: %s\n", path,
				strerror(-r));
		return r;
	}
	*fdp = fd;
	return 0;
}

int admin_open(struct admin *a, const char *path)
{
	struct wait w = { .a = a };
	struct msg res;
	struct msg_rd r;
	struct cap *c;
	int fd, e;

	memset(a, 0, sizeof(*a));
	a->path = path;
	if ((e = admin_dial(path, &fd)) < 0)
		return e;
	if (!(a->loop = loop_new()))
		return -ENOMEM;
	a->wc = wire_conn_new(a->loop, fd, WIRE_PLAIN, NULL, NULL, &admin_ops, a);
	/* Plain records may be queued before the socket is writable; the
	 * hello must be the first. */
	uint8_t hello = HELLO_RPC;
	if (!a->wc || wire_conn_send(a->wc, &hello, 1) < 0 ||
	    !(a->rc = rpc_conn_new(a->wc, NULL, NULL, a)))
		return -ENOMEM;
	msg_init(&res);
	w.results = &res;
	rpc_conn_bootstrap(a->rc, wait_done, &w);
	e = run_until(a, &w);
	msg_rd_init(&r, &res);
	if (e == 0 && msg_get_cap(&r, &c) == 0)
		a->node_admin = cap_ref(c);
	msg_free(&res);
	if (!a->node_admin) {
		fprintf(stderr, "metac: the daemon at %s did not answer: %s\n",
			path, e ? a->errmsg : "no NodeAdmin");
		return e ? e : -EPROTO;
	}
	return 0;
}

void admin_close(struct admin *a)
{
	cap_unref(a->node_admin);
	a->node_admin = NULL;
	if (a->rc)
		rpc_conn_closed(a->rc, 0);
	a->rc = NULL;
	if (a->wc)
		wire_conn_close(a->wc);
	a->wc = NULL;
	if (a->loop) {
		loop_run_once(a->loop, 0); /* deferred frees */
		loop_free(a->loop);
	}
	a->loop = NULL;
}

int admin_call(struct admin *a, struct cap *target, uint16_t iface,
	       uint16_t method, struct msg *params, struct msg *results,
	       const char *what)
{
	struct wait w = { .a = a, .results = results };
	struct msg empty;
	int e;

	if (!params) {
		msg_init(&empty);
		params = &empty;
	}
	rpc_call(target ? target : a->node_admin, iface, method, params,
		 wait_done, &w);
	e = run_until(a, &w);
	if (e < 0 && what)
		fprintf(stderr, "metac: %s: %s\n", what, a->errmsg);
	return e;
}

int admin_export(struct admin *a, const char *service, const char *description,
		 int persistent, int read_only, char *ref, size_t refsz)
{
	struct msg params, res;
	struct msg_rd rd;
	char what[64];
	int r = -1;

	msg_init(&params);
	msg_init(&res);
	msg_put_str(&params, service);
	msg_put_str(&params, description);
	msg_put_bool(&params, persistent);
	msg_put_bool(&params, read_only);
	msg_put_i64(&params, 0);
	snprintf(what, sizeof(what), "cannot export the %s", service);
	if (admin_call(a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_EXPORT, &params, &res,
		       what) == 0) {
		msg_rd_init(&rd, &res);
		r = msg_get_str(&rd, ref, refsz) == 0 ? 0 : -1;
	}
	msg_free(&res);
	return r;
}

static void serve_stop(struct loop *l, int signo, void *arg)
{
	*(int *)arg = 1;
}

struct child_wait {
	int *status, *stop;
	struct loop_child **watch;
};

static void child_ended(struct loop *l, pid_t pid, int st, void *arg)
{
	struct child_wait *cw = arg;
	if (cw->status)
		*cw->status = st;
	*cw->stop = 1;
	*cw->watch = NULL; /* freed by the loop */
}

/* Runs a->loop with lfd watched until SIGINT or SIGTERM, the daemon's
 * connection failing, or child (if > 0) exiting (its status in *status). */
static int serve_until(struct admin *a, int lfd, loop_fd_fn accept, void *arg, pid_t child,
		       int *status, const char *what)
{
	struct loop_watch *w = lfd >= 0 ? loop_watch_fd(a->loop, lfd, EPOLLIN, accept, arg) : NULL;
	int stop = 0, r = -1;
	struct loop_signal *si = loop_signal_new(a->loop, SIGINT, serve_stop, &stop);
	struct loop_signal *st = loop_signal_new(a->loop, SIGTERM, serve_stop, &stop);
	struct child_wait cw = { .status = status, .stop = &stop };
	struct loop_child *cc = child > 0 ? loop_child_watch(a->loop, child, child_ended, &cw)
					  : NULL;

	if ((lfd >= 0 && !w) || !si || !st || (child > 0 && !cc)) {
		fprintf(stderr, "%s: out of memory\n", what);
		goto out;
	}
	cw.watch = &cc;
	while (!stop && !a->err)
		if (loop_run_once(a->loop, -1) < 0)
			break;
	if (a->err)
		fprintf(stderr, "%s: %s\n", what, a->errmsg);
	else
		r = 0;
out:
	if (cc)
		loop_child_del(cc);
	if (w)
		loop_watch_del(w);
	loop_signal_del(si);
	loop_signal_del(st);
	return r;
}

int admin_serve(struct admin *a, int lfd, loop_fd_fn accept, void *arg, const char *what)
{
	return serve_until(a, lfd, accept, arg, 0, NULL, what);
}

int admin_hold(struct admin *a, const char *what)
{
	fprintf(stderr, "%s: bound; SIGINT or SIGTERM releases the binding\n", what);
	if (serve_until(a, -1, NULL, NULL, 0, NULL, what) < 0) {
		fprintf(stderr, "%s: the binding is gone\n", what);
		return -1;
	}
	return 0;
}

int admin_export_applet(const struct applet *self, int argc, char **argv, const char *service,
			int (*describe)(const char *arg, char *desc, size_t sz), const char *usage)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	char ref[REF_MAX_LEN], desc[REF_MAX_DESC];
	int c, persistent = 0, r = EXIT_FAIL;
	struct admin a;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pa:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "%s", usage);
	if (!describe)
		snprintf(desc, sizeof(desc), "%s", argv[optind]);
	else if (describe(argv[optind], desc, sizeof(desc)) < 0)
		return cli_usage_error(self, "%s", usage);
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, service, desc, persistent, 0, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

int admin_list_call(const struct applet *self, int argc, char **argv, const char *service,
		    uint16_t iface, uint16_t method, struct admin *a, struct msg *res, int *json)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	struct cap *obj = NULL;
	struct msg p;
	char what[64];
	int c, r;

	*json = 0;
	memset(a, 0, sizeof(*a)); /* admin_close works on it whatever happens */
	optind = 1;
	while ((c = getopt_long(argc, argv, "ja:", opts, NULL)) != -1) {
		switch (c) {
		case 'j': *json = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(self, "list takes no arguments");
	msg_init(&p);
	snprintf(what, sizeof(what), "cannot list the %s service's devices", service);
	r = admin_open_service(a, sock, service, &obj) < 0 ||
	    admin_call(a, obj, iface, method, &p, res, what) < 0 ? EXIT_FAIL : EXIT_OK;
	cap_unref(obj);
	return r;
}

struct stream_relay {
	struct admin *a;
	struct cap *stream;
	int lfd, direct, conns, max_conns;
	const char *what;
};

static void stream_relay_done(void *arg, int err)
{
	struct stream_relay *r = arg;
	r->conns--;
	if (err)
		log_info("%s: a session ended: %s", r->what, strerror(-err));
}

static void stream_relay_accept(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct stream_relay *r = arg;
	struct net_addr peer;
	int c = net_accept(r->lfd, &peer);

	if (c < 0)
		return;
	if (r->conns >= r->max_conns) {
		log_warn("%s: too many sessions; refusing a connection", r->what);
		close(c);
		return;
	}
	r->conns++;
	admin_stream_pipe(r->a, r->stream, r->direct, c, c, stream_relay_done, r);
}

int admin_relay_stream(struct admin *a, struct cap *stream, int lfd, int direct,
		       int max_conns, pid_t child, int *status, const char *what)
{
	struct stream_relay r = { .a = a, .stream = stream, .lfd = lfd, .direct = direct,
				  .max_conns = max_conns, .what = what };
	return serve_until(a, lfd, stream_relay_accept, &r, child, status, what);
}

int admin_service_call_str(const char *sock, const char *service, uint16_t method,
			   const char *arg, const char *what)
{
	struct cap *svc = NULL;
	struct msg params, res;
	struct admin a;
	int r = EXIT_FAIL;

	msg_init(&res);
	if (admin_open_service(&a, sock, service, &svc) == 0) {
		msg_init(&params);
		msg_put_str(&params, arg);
		if (admin_call(&a, svc, IFACE_SERVICE_ADMIN, method, &params, &res, what) == 0)
			r = EXIT_OK;
	}
	msg_free(&res);
	cap_unref(svc);
	admin_close(&a);
	return r;
}

int admin_restore(struct admin *a, const char *ref, struct cap **out)
{
	struct msg params;
	msg_init(&params);
	msg_put_str(&params, ref);
	return admin_call_cap(a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_RESTORE, &params,
			      out, "cannot restore the ref");
}

int admin_service(struct admin *a, const char *service, struct cap **out)
{
	struct msg params;
	char what[64];

	msg_init(&params);
	msg_put_str(&params, service);
	snprintf(what, sizeof(what), "the daemon has no %s service", service);
	return admin_call_cap(a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_SERVICE, &params, out, what);
}

int admin_open_service(struct admin *a, const char *sock, const char *service,
		       struct cap **out)
{
	if (admin_open(a, admin_socket_path(sock)) < 0)
		return -1;
	return admin_service(a, service, out);
}

int admin_call_cap(struct admin *a, struct cap *target, uint16_t iface,
		   uint16_t method, struct msg *params, struct cap **out,
		   const char *what)
{
	struct msg res;
	struct msg_rd rd;
	struct cap *c;
	int r = -1;

	msg_init(&res);
	if (admin_call(a, target, iface, method, params, &res, what) == 0) {
		msg_rd_init(&rd, &res);
		if (msg_get_cap(&rd, &c) == 0) {
			*out = cap_ref(c);
			r = 0;
		} else {
			fprintf(stderr, "metac: %s: the answer holds no object\n", what);
		}
	}
	msg_free(&res);
	return r;
}

/* --- data connections ---------------------------------------------- */

struct dpipe {
	struct admin *a;
	int rfd, wfd;
	uint8_t token[NODE_TOKEN_LEN];
	void (*done)(void *arg, int err);
	void *arg;
};

static void dpipe_end(struct dpipe *p, int err)
{
	if (p->rfd >= 0)
		close(p->rfd);
	if (p->wfd >= 0 && p->wfd != p->rfd)
		close(p->wfd);
	sodium_memzero(p->token, sizeof(p->token));
	if (p->done)
		p->done(p->arg, err);
	free(p);
}

static void dpipe_finished(void *arg, int err)
{
	struct dpipe *p = arg;
	/* node_pipe_fds owned and closed the descriptors. */
	p->rfd = p->wfd = -1;
	dpipe_end(p, err);
}

static void dpipe_ready(struct wire_conn *wc, void *arg)
{
	struct dpipe *p = arg;
	uint8_t hello[1 + NODE_TOKEN_LEN] = { HELLO_DATA };
	int e;

	memcpy(hello + 1, p->token, NODE_TOKEN_LEN);
	e = wire_conn_send(wc, hello, sizeof(hello));
	sodium_memzero(hello, sizeof(hello));
	if (e == 0)
		e = node_pipe_fds(wc, p->rfd, p->wfd, dpipe_finished, p);
	if (e < 0) {
		wire_conn_close(wc);
		dpipe_end(p, e);
	}
}

static void dpipe_record(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
}

static void dpipe_closed(struct wire_conn *wc, int err, void *arg)
{
	dpipe_end(arg, err ? err : -ECONNRESET);
}

static const struct wire_conn_ops dpipe_ops = {
	.ready = dpipe_ready,
	.record = dpipe_record,
	.closed = dpipe_closed,
};

/* Dials what an ATTACH answer describes: the admin socket for a stream
 * piped by the daemon, else the stream's node itself under a throwaway
 * key (the token is what authorizes). */
static struct wire_conn *dpipe_dial(struct dpipe *p, struct msg *res)
{
	struct msg_rd rd;
	const uint8_t *tok, *pub;
	size_t ntok, npub;
	char addr[300];
	uint8_t priv[32], mypub[32];
	struct net_addr na;
	struct wire_conn *wc;
	int fd;

	msg_rd_init(&rd, res);
	if (msg_get_bytes(&rd, &tok, &ntok) < 0 || ntok != NODE_TOKEN_LEN ||
	    msg_get_bytes(&rd, &pub, &npub) < 0 || (npub != 0 && npub != 32) ||
	    msg_get_str(&rd, addr, sizeof(addr)) < 0) {
		fprintf(stderr, "metac: the daemon's attach answer is malformed\n");
		return NULL;
	}
	memcpy(p->token, tok, NODE_TOKEN_LEN);
	if (!npub) {
		if (admin_dial(p->a->path, &fd) < 0)
			return NULL;
		return wire_conn_new(p->a->loop, fd, WIRE_PLAIN, NULL, NULL, &dpipe_ops, p);
	}
	if (net_addr_parse(addr, REF_DEFAULT_PORT, &na) < 0) {
		fprintf(stderr, "metac: cannot resolve the stream's node %s\n", addr);
		return NULL;
	}
	if ((fd = net_connect(&na)) < 0) {
		fprintf(stderr, "metac: cannot reach the stream's node at %s: %s\n",
			addr, strerror(-fd));
		return NULL;
	}
	noise_keypair_generate(priv, mypub);
	wc = wire_conn_new(p->a->loop, fd, WIRE_INITIATOR, priv, pub, &dpipe_ops, p);
	sodium_memzero(priv, sizeof(priv));
	return wc;
}

static void attach_answered(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct dpipe *p = arg;
	if (err) {
		fprintf(stderr, "metac: cannot attach to the stream: %s\n", errmsg);
		dpipe_end(p, err);
		return;
	}
	if (!dpipe_dial(p, res))
		dpipe_end(p, -EHOSTUNREACH);
}

void admin_stream_pipe(struct admin *a, struct cap *stream, int direct, int rfd,
		       int wfd, void (*done)(void *arg, int err), void *arg)
{
	struct dpipe *p = calloc(1, sizeof(*p));
	struct msg params;

	if (!p) {
		close(rfd);
		if (wfd != rfd)
			close(wfd);
		done(arg, -ENOMEM);
		return;
	}
	p->a = a;
	p->rfd = rfd;
	p->wfd = wfd;
	p->done = done;
	p->arg = arg;
	msg_init(&params);
	msg_put_cap(&params, stream);
	msg_put_bool(&params, direct);
	rpc_call(a->node_admin, IFACE_NODE_ADMIN, NODE_ADMIN_ATTACH, &params,
		 attach_answered, p);
}
