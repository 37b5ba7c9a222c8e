/*
 * The stream service: a Stream capability whose bytes come from and go
 * to a local socket address, connected anew for each data connection. It
 * lets any local program be shared (like a port forward), and it is how
 * tests push bytes between nodes.
 *   metac stream export [--persistent] unix:PATH|ADDR:PORT  -> ref
 *   metac stream connect [--direct] REF                    stdin/stdout
 *   metac stream bind REF1 REF2     pipes two streams until interrupted
 */
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
#include "svc/applets.h"
#include "svc/services.h"
#include "svc/stream.h"
#include "wire/conn.h"
#include "wire/noise.h"

struct sock_stream {
	struct cap cap;
	struct node *node;
	struct net_addr addr;
	char desc[REF_MAX_DESC];
};

static void sock_stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct sock_stream *)c)->node, c, call, "stream");
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

/* --- a descriptor as a Stream --------------------------------------- */

struct fd_stream {
	struct cap cap;
	struct node *node;
	int fd;
	unsigned flags;
	const char *name;
};

static void fd_stream_call(struct cap *c, struct rpc_call *call)
{
	struct fd_stream *s = (struct fd_stream *)c;
	node_stream_call(s->node, c, call, s->name);
}

static void fd_stream_attach(struct cap *c, struct wire_conn *data)
{
	struct fd_stream *s = (struct fd_stream *)c;
	int fd = s->fd, e;

	s->fd = -1;
	if (fd < 0) {
		log_info("%s: connected already", s->name);
		wire_conn_close(data);
		return;
	}
	if ((e = node_pipe_fds_flags(data, fd, fd, s->flags, NULL, NULL)) < 0) {
		log_warn("%s: %s", s->name, strerror(-e));
		close(fd);
		wire_conn_close(data);
	}
}

static void fd_stream_free(struct cap *c)
{
	struct fd_stream *s = (struct fd_stream *)c;
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

static const struct cap_ops fd_stream_ops = {
	.name = "descriptor stream",
	.call = fd_stream_call,
	.free = fd_stream_free,
	.attach = fd_stream_attach,
};

struct cap *fd_stream_new(struct node *n, int fd, unsigned flags, const char *name)
{
	struct fd_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	cap_init(&s->cap, &fd_stream_ops);
	s->node = n;
	s->fd = fd;
	s->flags = flags;
	s->name = name;
	return &s->cap;
}

/* --- applet -------------------------------------------------------- */

static int stream_export(const struct applet *self, int argc, char **argv)
{
	return admin_export_applet(self, argc, argv, "stream", NULL,
				   "stream export takes one address");
}

struct connect_state {
	int done, err;
};

static void connect_done(void *arg, int err)
{
	struct connect_state *st = arg;
	st->done = 1;
	st->err = err;
}

/* Restores the ref through the local daemon and pipes stdin/stdout over
 * a data connection of the stream. By default the data goes through the
 * daemon, which needs nothing of this process but the admin socket;
 * --direct connects to a remote stream's node itself. */
static int stream_connect(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ "direct", no_argument, NULL, 'd' },
		{ 0 }
	};
	const char *sock = NULL;
	struct connect_state st = { 0 };
	struct admin a;
	struct cap *stream = NULL;
	int c, direct = 0, r = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:d", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else if (c == 'd')
			direct = 1;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "stream connect takes one ref");
	if (admin_open(&a, admin_socket_path(sock)) < 0 ||
	    admin_restore(&a, argv[optind], &stream) < 0)
		goto out;
	admin_stream_pipe(&a, stream, direct, STDIN_FILENO, STDOUT_FILENO,
			  connect_done, &st);
	while (!st.done && !a.err)
		if (loop_run_once(a.loop, -1) < 0)
			break;
	if (!st.done)
		fprintf(stderr, "metac stream: %s\n", a.errmsg);
	else if (st.err)
		fprintf(stderr, "metac stream: the stream ended with an error: %s\n",
			strerror(-st.err));
	else
		r = EXIT_OK;
out:
	cap_unref(stream);
	admin_close(&a);
	return r;
}

/* Binds two streams (on any nodes) and keeps the binding until SIGINT or
 * SIGTERM: the holder lives in the daemon's session of this process. */
static int stream_bind(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	struct admin a;
	struct msg params, res;
	struct cap *s1 = NULL, *s2 = NULL;
	int c, r = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 2)
		return cli_usage_error(self, "stream bind takes two refs");
	if (admin_open(&a, admin_socket_path(sock)) < 0)
		goto out;
	msg_init(&res);
	if (admin_restore(&a, argv[optind], &s1) < 0 ||
	    admin_restore(&a, argv[optind + 1], &s2) < 0)
		goto out_msg;
	msg_init(&params);
	msg_put_cap(&params, s2);
	if (admin_call(&a, s1, IFACE_STREAM, STREAM_BIND_TO, &params, &res,
		       "cannot bind the streams") == 0 && admin_hold(&a, "metac stream") == 0)
		r = EXIT_OK;
out_msg:
	msg_free(&res); /* holds the holder: dropping it releases the binding */
out:
	cap_unref(s1);
	cap_unref(s2);
	admin_close(&a);
	return r;
}

int stream_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", stream_export },
		{ "connect", stream_connect },
		{ "bind", stream_bind },
		{ 0 }
	};
	return cli_dispatch(applet_find("stream"), cmds, argc, argv);
}
