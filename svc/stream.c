/*
 * The stream service: a Stream capability whose bytes come from and go
 * to a local socket address, connected anew for each data connection. It
 * lets any local program be shared (like a port forward), and it is how
 * tests push bytes between nodes.
 *   metac stream export [--persistent] unix:PATH|ADDR:PORT  -> ref
 *   metac stream connect REF                               stdin/stdout
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/services.h"
#include "wire/conn.h"

struct sock_stream {
	struct cap cap;
	struct node *node;
	struct net_addr addr;
	char desc[REF_MAX_DESC];
};

static void sock_stream_call(struct cap *c, struct rpc_call *call)
{
	struct sock_stream *s = (struct sock_stream *)c;
	uint8_t token[NODE_TOKEN_LEN];
	int e;

	if (call->iface == IFACE_STREAM && call->method == STREAM_CONNECT) {
		if ((e = node_token_new(s->node, c, token)) < 0) {
			rpc_return_error(call, e, "out of memory");
			return;
		}
		msg_put_bytes(&call->results, token, sizeof(token));
		rpc_return(call);
		return;
	}
	rpc_return_unknown(call, "stream");
}

static void sock_stream_attach(struct cap *c, struct wire_conn *data)
{
	struct sock_stream *s = (struct sock_stream *)c;
	int e, fd = net_connect(&s->addr);

	if (fd < 0) {
		log_warn("stream %s: cannot connect: %s", s->desc, strerror(-fd));
		wire_conn_close(data);
		return;
	}
	if ((e = node_pipe_fds(data, fd, fd, NULL, NULL)) < 0) {
		log_warn("stream %s: %s", s->desc, strerror(-e));
		close(fd);
		wire_conn_close(data);
	}
}

static void sock_stream_free(struct cap *c)
{
	free(c);
}

static const struct cap_ops sock_stream_ops = {
	.name = "stream",
	.call = sock_stream_call,
	.free = sock_stream_free,
	.attach = sock_stream_attach,
};

static int stream_restore(struct node *n, const struct ref_record *rec,
			  struct cap **out, char *err, size_t errsz)
{
	struct sock_stream *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	if ((r = net_addr_parse(rec->description, 0, &s->addr)) < 0) {
		snprintf(err, errsz, "'%s' is not unix:PATH or ADDR:PORT",
			 rec->description);
		free(s);
		return r;
	}
	cap_init(&s->cap, &sock_stream_ops);
	s->node = n;
	snprintf(s->desc, sizeof(s->desc), "%s", rec->description);
	*out = &s->cap;
	return 0;
}

static const struct node_service stream_service = {
	.name = "stream",
	.restore = stream_restore,
};

int stream_service_register(struct node *n)
{
	return node_register_service(n, &stream_service);
}

/* --- applet -------------------------------------------------------- */

static int stream_export(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	int c, persistent = 0, r = EXIT_FAIL;
	struct admin a;
	struct msg params, res;
	struct msg_rd rd;
	char ref[REF_MAX_LEN];

	optind = 1;
	while ((c = getopt_long(argc, argv, "pa:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "stream export takes one address");
	if (admin_open(&a, admin_socket_path(sock)) < 0)
		goto out;
	msg_init(&params);
	msg_init(&res);
	msg_put_str(&params, "stream");
	msg_put_str(&params, argv[optind]);
	msg_put_bool(&params, persistent);
	msg_put_bool(&params, 0);
	msg_put_i64(&params, 0);
	if (admin_call(&a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_EXPORT, &params,
		       &res, "cannot export the stream") == 0) {
		msg_rd_init(&rd, &res);
		if (msg_get_str(&rd, ref, sizeof(ref)) == 0) {
			printf("%s\n", ref);
			r = EXIT_OK;
		}
	}
	msg_free(&res);
out:
	admin_close(&a);
	return r;
}

struct connect_state {
	uint8_t token[NODE_TOKEN_LEN];
	int done, err;
};

static void connect_done(void *arg, int err)
{
	struct connect_state *st = arg;
	st->done = 1;
	st->err = err;
}

static void data_ready(struct wire_conn *wc, void *arg)
{
	struct connect_state *st = arg;
	uint8_t hello[1 + NODE_TOKEN_LEN] = { HELLO_DATA };
	int e;

	memcpy(hello + 1, st->token, NODE_TOKEN_LEN);
	wire_conn_send(wc, hello, sizeof(hello));
	if ((e = node_pipe_fds(wc, STDIN_FILENO, STDOUT_FILENO, connect_done, st)) < 0) {
		wire_conn_close(wc);
		connect_done(st, e);
	}
}

static void data_record(struct wire_conn *wc, uint8_t *d, size_t n, void *arg)
{
}

static void data_closed(struct wire_conn *wc, int err, void *arg)
{
	connect_done(arg, err ? err : -ECONNRESET);
}

static const struct wire_conn_ops data_ops = {
	.ready = data_ready,
	.record = data_record,
	.closed = data_closed,
};

/* Restores the ref through the local daemon, asks it for a token, and
 * pipes stdin/stdout over a data connection on the admin socket. */
static int stream_connect(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	struct connect_state st = { 0 };
	struct admin a;
	struct msg params, res;
	struct msg_rd rd;
	struct cap *stream = NULL;
	const uint8_t *tok;
	size_t n;
	int c, fd, r = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "stream connect takes one ref");
	if (admin_open(&a, admin_socket_path(sock)) < 0)
		goto out;
	msg_init(&params);
	msg_init(&res);
	msg_put_str(&params, argv[optind]);
	if (admin_call(&a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_RESTORE, &params,
		       &res, "cannot restore the ref") < 0)
		goto out_msg;
	msg_rd_init(&rd, &res);
	if (msg_get_cap(&rd, &stream) < 0)
		goto out_msg;
	stream = cap_ref(stream);
	msg_free(&res);
	msg_init(&params);
	msg_put_cap(&params, stream);
	if (admin_call(&a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_ATTACH, &params,
		       &res, "cannot attach to the stream") < 0)
		goto out_msg;
	msg_rd_init(&rd, &res);
	if (msg_get_bytes(&rd, &tok, &n) < 0 || n != NODE_TOKEN_LEN)
		goto out_msg;
	memcpy(st.token, tok, NODE_TOKEN_LEN);
	if (admin_dial(a.path, &fd) < 0)
		goto out_msg;
	if (!wire_conn_new(a.loop, fd, WIRE_PLAIN, NULL, NULL, &data_ops, &st))
		goto out_msg;
	while (!st.done)
		if (loop_run_once(a.loop, -1) < 0)
			break;
	if (st.err)
		fprintf(stderr, "metac stream: the stream ended with an error: %s\n",
			strerror(-st.err));
	else
		r = EXIT_OK;
out_msg:
	msg_free(&res);
	cap_unref(stream);
out:
	admin_close(&a);
	return r;
}

int stream_main(int argc, char **argv)
{
	const struct applet *self = applet_find("stream");
	if (argc < 2)
		return cli_usage_error(self, "missing command");
	if (!strcmp(argv[1], "export"))
		return stream_export(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "connect"))
		return stream_connect(self, argc - 1, argv + 1);
	return cli_usage_error(self, "unknown command '%s'", argv[1]);
}
