/* Applets talk to the local daemon over the admin socket: plain records,
 * the same RPC as between nodes, NodeAdmin as the bootstrap. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/loop.h"
#include "lib/net.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "wire/conn.h"

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
	if ((fd = net_connect(&na)) < 0 || (r = net_connect_result(fd)) < 0) {
		r = fd < 0 ? fd : r;
		if (fd >= 0)
			close(fd);
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
