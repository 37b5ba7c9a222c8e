/*
 * The fs applet.
 *   metac fs serve9p --listen ADDR:PORT|unix:PATH [--read-only]
 *                    [--map=mounter|passthrough] [--insecure] local:PATH
 * serves a directory as plain 9P2000.L, for local use and for testing
 * against other 9p software. It has no encryption and no authentication,
 * so it refuses anything but loopback and unix sockets unless --insecure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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
#include "lib/net.h"
#include "svc/applets.h"

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

static int serve9p(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "map", required_argument, NULL, 'm' },
		{ "insecure", no_argument, NULL, 'I' },
		{ 0 }
	};
	struct p9_export ex = { .map = P9_MAP_MOUNTER };
	const char *listen = NULL, *dir;
	struct net_addr addr, peer;
	char where[160];
	int c, insecure = 0, lfd;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:rm:", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'r': ex.read_only = 1; break;
		case 'I': insecure = 1; break;
		case 'm':
			if (fs_parse_map(optarg, &ex.map) < 0)
				return cli_usage_error(self, "--map is mounter or passthrough");
			break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1 || !(dir = local_path(argv[optind])))
		return cli_usage_error(self, "serve9p takes one local:PATH");
	if (!listen)
		return cli_usage_error(self, "serve9p needs --listen ADDR:PORT or unix:PATH");
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
	if ((ex.rootfd = p9_export_open(dir)) < 0) {
		fprintf(stderr, "metac fs: cannot export %s: %s\n", dir, strerror(-ex.rootfd));
		return EXIT_FAIL;
	}
	if ((lfd = net_listen(&addr, 64)) < 0) {
		fprintf(stderr, "metac fs: cannot listen on %s: %s\n", listen, strerror(-lfd));
		return EXIT_FAIL;
	}
	net_addr_format(&addr, where, sizeof(where));
	log_info("serving %s%s as 9P2000.L on %s", dir, ex.read_only ? " (read-only)" : "",
		 where);
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		int fd = net_accept(lfd, &peer);
		if (fd >= 0)
			serve_one(&ex, fd, &peer);
		else if (fd != -EAGAIN && fd != -EINTR && fd != -ECONNABORTED)
			log_warn("9p: accept: %s", strerror(-fd));
	}
	return EXIT_FAIL;
}

int fs_main(int argc, char **argv)
{
	const struct applet *self = applet_find("fs");
	if (argc < 2)
		return cli_usage_error(self, "missing command");
	if (!strcmp(argv[1], "serve9p"))
		return serve9p(self, argc - 1, argv + 1);
	return cli_usage_error(self, "unknown command '%s'", argv[1]);
}
