/* The daemon and node applets: run a node; show its identity. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/services.h"
#include "wire/conn.h"

static void on_stop(struct loop *l, int signo, void *arg)
{
	log_info("%s: shutting down", strsignal(signo));
	loop_stop(l);
}

int daemon_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "listen", required_argument, NULL, 'l' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "log", required_argument, NULL, 'L' },
		{ "idle-timeout", required_argument, NULL, 'i' },
		{ 0 }
	};
	const struct applet *self = applet_find("daemon");
	struct node_config cfg = { 0 };
	enum log_level level = LOG_LVL_INFO;
	struct loop *l = NULL;
	struct node *n = NULL;
	int c, r = EXIT_FAIL;
	const char *log = getenv("METAC_LOG");
	int use_syslog;
	unsigned long idle;
	char *end;

	cfg.dir = getenv("METAC_DIR");
	while ((c = getopt_long(argc, argv, "d:l:a:vqi:", opts, NULL)) != -1) {
		switch (c) {
		case 'd': cfg.dir = optarg; break;
		case 'l': cfg.listen = optarg; break;
		case 'a': cfg.admin_socket = optarg; break;
		case 'v': level = LOG_LVL_DEBUG; break;
		case 'q': level = LOG_LVL_WARN; break;
		case 'L': log = optarg; break;
		case 'i':
			idle = strtoul(optarg, &end, 10);
			if (*end || !*optarg || idle < 1 || idle > 86400)
				return cli_usage_error(self, "--idle-timeout takes seconds, 1 to 86400");
			cfg.idle_timeout_s = (unsigned)idle;
			break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(self, "unexpected argument '%s'", argv[optind]);
	if (!cfg.dir || !*cfg.dir)
		cfg.dir = "/var/lib/metac";
	cfg.admin_socket = admin_socket_path(cfg.admin_socket);
	/* A daemon with no terminal (systemd, procd, an init script) logs
	 * to syslog; --log (or METAC_LOG) says otherwise. */
	if (!log || !*log || !strcmp(log, "auto"))
		use_syslog = !isatty(STDERR_FILENO);
	else if (!strcmp(log, "syslog") || !strcmp(log, "stderr"))
		use_syslog = !strcmp(log, "syslog");
	else
		return cli_usage_error(self, "--log is auto, syslog or stderr");
	log_init("metac", level, use_syslog);
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(cfg.admin_socket, ADMIN_SOCKET_DEFAULT))
		mkdir("/run/metac", 0755);

	if (!(l = loop_new())) {
		log_error("cannot create the event loop: %m");
		goto out;
	}
	if (!loop_signal_new(l, SIGTERM, on_stop, NULL) ||
	    !loop_signal_new(l, SIGINT, on_stop, NULL)) {
		log_error("cannot watch signals: %m");
		goto out;
	}
	if (node_new(l, &cfg, &n) < 0)
		goto out;
	if (services_register(n) < 0) {
		log_error("cannot register services");
		goto out;
	}
	if (loop_run(l) < 0)
		log_error("event loop failed: %m");
	else
		r = EXIT_OK;
	/* Every connection ends, its owner told, while the node is still
	 * there to hear it; then the node goes, and the rounds after free
	 * what it let go of. Bounded: a shutdown never hangs on this. */
	wire_conn_abort_all(l, -ECONNRESET);
	for (int i = 0; i < 20 && wire_conn_count(l); i++) {
		loop_run_once(l, 0);
		wire_conn_abort_all(l, -ECONNRESET);
	}
out:
	node_free(n);
	if (l) {
		for (int i = 0; i < 5; i++)
			loop_run_once(l, 0);
		loop_free(l);
	}
	return r;
}

int node_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const struct applet *self = applet_find("node");
	const char *sock = NULL;
	char id[64], listen[160], adv[256], admin_path[160], dir[4096];
	struct admin a;
	struct msg res;
	struct msg_rd rd;
	int c, json = 0, r = EXIT_FAIL;

	while ((c = getopt_long(argc, argv, "ja:", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(self, "unexpected argument '%s'", argv[optind]);
	if (admin_open(&a, admin_socket_path(sock)) < 0)
		goto out;
	msg_init(&res);
	if (admin_call(&a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_INFO, NULL, &res,
		       "cannot get node information") == 0) {
		msg_rd_init(&rd, &res);
		if (msg_get_str(&rd, id, sizeof(id)) < 0 ||
		    msg_get_str(&rd, listen, sizeof(listen)) < 0 ||
		    msg_get_str(&rd, adv, sizeof(adv)) < 0 ||
		    msg_get_str(&rd, admin_path, sizeof(admin_path)) < 0 ||
		    msg_get_str(&rd, dir, sizeof(dir)) < 0) {
			fprintf(stderr, "metac node: malformed answer from the daemon\n");
		} else {
			if (json)
				printf("{\"id\":\"%s\",\"listen\":\"%s\",\"address\":\"%s\","
				       "\"admin_socket\":\"%s\",\"dir\":\"%s\"}\n",
				       id, listen, adv, admin_path, dir);
			else
				printf("id:           %s\nlisten:       %s\n"
				       "address:      %s\nadmin socket: %s\n"
				       "state:        %s\n", id, listen, adv,
				       admin_path, dir);
			r = EXIT_OK;
		}
	}
	msg_free(&res);
out:
	admin_close(&a);
	return r;
}
