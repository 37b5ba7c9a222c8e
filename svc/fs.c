/*
 * The fs service and applet: a Filesystem capability serves a local
 * directory as 9P2000.L, one session per data connection of its stream.
 *   metac fs export [--persistent] [--read-only] local:PATH   -> ref
 *   metac fs serve9p --listen ADDR:PORT|unix:PATH [--read-only]
 *                    [--map=mounter|passthrough] [--insecure] local:PATH|REF
 * serve9p speaks plain 9p on a local socket: for local:PATH it serves the
 * directory itself; for a REF it relays each connection to the remote
 * Filesystem through the daemon (so 9p tools reach remote trees). It has
 * no encryption and no authentication, so it refuses anything but
 * loopback and unix sockets unless --insecure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs9p/server.h"
#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/services.h"
#include "wire/conn.h"

#define SERVE9P_MAX_SESSIONS 64

/* "local:PATH" -> PATH; NULL for anything else. */
static const char *local_path(const char *arg)
{
	return strncmp(arg, "local:", 6) || !arg[6] ? NULL : arg + 6;
}

static int fs_parse_map(const char *s, enum p9_idmap *map)
{
	if (!strcmp(s, "mounter"))
		*map = P9_MAP_MOUNTER;
	else if (!strcmp(s, "passthrough"))
		*map = P9_MAP_PASSTHROUGH;
	else
		return -EINVAL;
	return 0;
}

/* --- the service --------------------------------------------------- */

/* A Filesystem: its export, shared with the sessions it serves. */
struct fs_obj {
	struct cap cap;
	struct node *node;
	struct p9_export *ex;
};

/* The stream of a Filesystem: each data connection a 9p session. */
struct fs_stream {
	struct cap cap;
	struct node *node;
	struct p9_export *ex;
};

static void fs_stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct fs_stream *)c)->node, c, call, "9p stream");
}

static void fs_stream_attach(struct cap *c, struct wire_conn *data)
{
	struct fs_stream *s = (struct fs_stream *)c;
	int sv[2], e;

	/* The daemon's loop pipes the connection to a socket pair; the
	 * session's threads read the other end with blocking calls. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_warn("fs: cannot create a socket pair: %m");
		wire_conn_close(data);
		return;
	}
	net_set_nonblock(sv[0]);
	if ((e = node_pipe_fds(data, sv[0], sv[0], NULL, NULL)) < 0) {
		log_warn("fs: %s", strerror(-e));
		close(sv[0]);
		close(sv[1]);
		wire_conn_close(data);
		return;
	}
	if ((e = p9_serve_async(s->ex, sv[1])) < 0)
		log_warn("fs: cannot start a 9p session: %s", strerror(-e));
}

static void fs_stream_free(struct cap *c)
{
	p9_export_unref(((struct fs_stream *)c)->ex);
	free(c);
}

static const struct cap_ops fs_stream_ops = {
	.name = "9p stream",
	.call = fs_stream_call,
	.free = fs_stream_free,
	.attach = fs_stream_attach,
};

static void fs_call(struct cap *c, struct rpc_call *call)
{
	struct fs_obj *fs = (struct fs_obj *)c;
	struct fs_stream *s;

	if (call->iface != IFACE_FILESYSTEM || call->method != FILESYSTEM_V9FS_STREAM) {
		rpc_return_unknown(call, "filesystem");
		return;
	}
	if (!(s = calloc(1, sizeof(*s)))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	cap_init(&s->cap, &fs_stream_ops);
	s->node = fs->node;
	s->ex = fs->ex;
	p9_export_ref(s->ex);
	msg_put_cap(&call->results, &s->cap);
	cap_unref(&s->cap);
	rpc_return(call);
}

static void fs_free(struct cap *c)
{
	p9_export_unref(((struct fs_obj *)c)->ex);
	free(c);
}

static const struct cap_ops fs_ops = {
	.name = "filesystem",
	.call = fs_call,
	.free = fs_free,
};

/* A ref's description is the exported directory's absolute path. */
static int fs_restore(struct node *n, const struct ref_record *rec, struct cap **out,
		      char *err, size_t errsz)
{
	struct fs_obj *fs;
	int e;

	if (rec->description[0] != '/') {
		snprintf(err, errsz, "'%s' is not an absolute path", rec->description);
		return -EINVAL;
	}
	if (!(fs = calloc(1, sizeof(*fs))))
		return -ENOMEM;
	if (!(fs->ex = p9_export_new(rec->description, rec->read_only, P9_MAP_MOUNTER, &e))) {
		snprintf(err, errsz, "cannot export %s: %s", rec->description, strerror(-e));
		free(fs);
		return e;
	}
	cap_init(&fs->cap, &fs_ops);
	fs->node = n;
	*out = &fs->cap;
	return 0;
}

static const struct node_service fs_service = {
	.name = "fs",
	.restore = fs_restore,
};

int fs_service_register(struct node *n)
{
	return node_register_service(n, &fs_service);
}

/* --- applet -------------------------------------------------------- */

static atomic_int sessions;

struct conn {
	const struct p9_export *ex;
	int fd;
	char peer[128];
};

static void *session_thread(void *arg)
{
	struct conn *c = arg;
	int e = p9_serve(c->ex, c->fd);
	if (e < 0)
		log_info("9p session from %s ended: %s", c->peer, strerror(-e));
	free(c);
	atomic_fetch_sub(&sessions, 1);
	return NULL;
}

static void serve_one(const struct p9_export *ex, int fd, const struct net_addr *peer)
{
	struct conn *c;
	pthread_attr_t attr;
	pthread_t t;

	if (atomic_load(&sessions) >= SERVE9P_MAX_SESSIONS || !(c = calloc(1, sizeof(*c)))) {
		log_warn("9p: too many sessions; refusing a connection");
		close(fd);
		return;
	}
	/* The session reads and writes with blocking calls in threads of
	 * its own. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	c->ex = ex;
	c->fd = fd;
	net_addr_format(peer, c->peer, sizeof(c->peer));
	atomic_fetch_add(&sessions, 1);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, session_thread, c) != 0) {
		atomic_fetch_sub(&sessions, 1);
		close(fd);
		free(c);
	}
	pthread_attr_destroy(&attr);
}

/* Serves dir itself: one thread (and its workers) per connection. */
static int serve_local(struct p9_export *ex, int lfd)
{
	struct net_addr peer;
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			return EXIT_FAIL;
		int fd = net_accept(lfd, &peer);
		if (fd >= 0)
			serve_one(ex, fd, &peer);
		else if (fd != -EAGAIN && fd != -EINTR && fd != -ECONNABORTED)
			log_warn("9p: accept: %s", strerror(-fd));
	}
}

/* Relays each connection to a remote Filesystem's 9p stream. */
struct relay {
	struct admin *a;
	struct cap *stream;
	int lfd, conns, stop;
};

static void relay_done(void *arg, int err)
{
	struct relay *r = arg;
	r->conns--;
	if (err)
		log_info("9p relay: a session ended: %s", strerror(-err));
}

static void relay_accept(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct relay *r = arg;
	struct net_addr peer;
	int c = net_accept(r->lfd, &peer);

	if (c < 0)
		return;
	if (r->conns >= SERVE9P_MAX_SESSIONS) {
		log_warn("9p relay: too many sessions; refusing a connection");
		close(c);
		return;
	}
	r->conns++;
	admin_stream_pipe(r->a, r->stream, 0, c, c, relay_done, r);
}

static void relay_stop(struct loop *l, int signo, void *arg)
{
	((struct relay *)arg)->stop = 1;
}

static int serve_remote(const char *sock, const char *ref, int lfd)
{
	struct admin a;
	struct relay r = { .a = &a, .lfd = lfd };
	struct cap *fs = NULL;
	struct msg params;
	struct loop_watch *w = NULL;
	struct loop_signal *si = NULL, *st = NULL;
	int ret = EXIT_FAIL;

	if (admin_open(&a, admin_socket_path(sock)) < 0 || admin_restore(&a, ref, &fs) < 0)
		goto out;
	msg_init(&params);
	if (admin_call_cap(&a, fs, IFACE_FILESYSTEM, FILESYSTEM_V9FS_STREAM, &params,
			   &r.stream, "the ref is not a filesystem") < 0)
		goto out;
	w = loop_watch_fd(a.loop, lfd, EPOLLIN, relay_accept, &r);
	si = loop_signal_new(a.loop, SIGINT, relay_stop, &r);
	st = loop_signal_new(a.loop, SIGTERM, relay_stop, &r);
	if (!w || !si || !st)
		goto out;
	while (!r.stop && !a.err)
		if (loop_run_once(a.loop, -1) < 0)
			break;
	if (a.err)
		fprintf(stderr, "metac fs: %s\n", a.errmsg);
	else
		ret = EXIT_OK;
out:
	loop_watch_del(w);
	loop_signal_del(si);
	loop_signal_del(st);
	cap_unref(r.stream);
	cap_unref(fs);
	admin_close(&a);
	return ret;
}

static int serve9p(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "map", required_argument, NULL, 'm' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	enum p9_idmap map = P9_MAP_MOUNTER;
	const char *listen = NULL, *dir, *sock = NULL;
	struct p9_export *ex = NULL;
	struct net_addr addr;
	char where[160];
	int c, insecure = 0, read_only = 0, lfd, e;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:rm:a:", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'r': read_only = 1; break;
		case 'I': insecure = 1; break;
		case 'a': sock = optarg; break;
		case 'm':
			if (fs_parse_map(optarg, &map) < 0)
				return cli_usage_error(self, "--map is mounter or passthrough");
			break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "serve9p takes one local:PATH or REF");
	dir = local_path(argv[optind]);
	if (!dir && strncmp(argv[optind], "ref://", 6))
		return cli_usage_error(self, "serve9p takes one local:PATH or REF");
	if (!listen)
		return cli_usage_error(self, "serve9p needs --listen ADDR:PORT or unix:PATH");
	if (!dir && (read_only || map != P9_MAP_MOUNTER))
		return cli_usage_error(self, "--read-only and --map apply to local:PATH");
	if (net_addr_parse(listen, 0, &addr) < 0) {
		fprintf(stderr, "metac fs: cannot parse listen address '%s'\n", listen);
		return EXIT_FAIL;
	}
	if (addr.ss.ss_family != AF_UNIX && !net_addr_is_loopback(&addr) && !insecure) {
		fprintf(stderr, "metac fs: serve9p speaks plain 9p, with no encryption or "
				"authentication; it listens on loopback or unix sockets only "
				"(--insecure to override)\n");
		return EXIT_FAIL;
	}
	if (dir && !(ex = p9_export_new(dir, read_only, map, &e))) {
		fprintf(stderr, "metac fs: cannot export %s: %s\n", dir, strerror(-e));
		return EXIT_FAIL;
	}
	if ((lfd = net_listen(&addr, 64)) < 0) {
		fprintf(stderr, "metac fs: cannot listen on %s: %s\n", listen, strerror(-lfd));
		return EXIT_FAIL;
	}
	net_addr_format(&addr, where, sizeof(where));
	/* Never the ref itself: it is a secret. */
	log_info("serving %s%s as 9P2000.L on %s", dir ? dir : "a remote filesystem",
		 read_only ? " (read-only)" : "", where);
	return dir ? serve_local(ex, lfd) : serve_remote(sock, argv[optind], lfd);
}

static int fs_export(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *dir;
	char abs[PATH_MAX], ref[REF_MAX_LEN];
	int c, persistent = 0, read_only = 0, r = EXIT_FAIL;
	struct admin a;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pra:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'r': read_only = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1 || !(dir = local_path(argv[optind])))
		return cli_usage_error(self, "fs export takes one local:PATH");
	/* The daemon has its own working directory. */
	if (!realpath(dir, abs)) {
		fprintf(stderr, "metac fs: %s: %m\n", dir);
		return EXIT_FAIL;
	}
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, "fs", abs, persistent, read_only, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

int fs_main(int argc, char **argv)
{
	const struct applet *self = applet_find("fs");
	if (argc < 2)
		return cli_usage_error(self, "missing command");
	if (!strcmp(argv[1], "serve9p"))
		return serve9p(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "export"))
		return fs_export(self, argc - 1, argv + 1);
	return cli_usage_error(self, "unknown command '%s'", argv[1]);
}
