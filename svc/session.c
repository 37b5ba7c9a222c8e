/* Data-plane sessions in processes of their own: see session.h. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs9p/server.h"
#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/proc.h"
#include "nbd/server.h"
#include "proto/node.h"
#include "rfb/rfb.h"
#include "rfb/x11.h"
#include "svc/services.h"
#include "svc/session.h"

#define SESSION_FD 3
#define EXPORT_FD 4
/* Session processes of the daemon at once: past it a data connection is
 * refused (each peer has at most 256 connections, but there are many). */
#define MAX_SESSIONS 1024

static unsigned live_sessions;
static struct session_proc *procs; /* the live ones, to forget at shutdown */

static const char *kind_name(enum sandbox_kind kind)
{
	return kind == SANDBOX_9P ? "9p" : kind == SANDBOX_RFB ? "rfb" :
	       kind == SANDBOX_USB ? "usb" : kind == SANDBOX_SOUND ? "sound" : "nbd";
}

struct session_proc {
	struct session_proc *next, **pprev;
	struct loop_child *watch;
	const char *kind;
	void (*ended)(void *arg);
	void *arg;
};

static void proc_unlist(struct session_proc *sp)
{
	if ((*sp->pprev = sp->next))
		sp->next->pprev = sp->pprev;
	live_sessions--;
}

void session_forget_all(void)
{
	while (procs) {
		struct session_proc *sp = procs;
		loop_child_del(sp->watch);
		proc_unlist(sp);
		free(sp);
	}
}

static void session_exited(struct loop *l, pid_t pid, int status, void *arg)
{
	struct session_proc *sp = arg;

	proc_unlist(sp);
	if (WIFSIGNALED(status))
		log_warn("the %s session process (pid %d) died of %s; its client lost the "
			 "session, the node goes on", sp->kind, (int)pid,
			 strsignal(WTERMSIG(status)));
	else if (WEXITSTATUS(status))
		log_warn("the %s session process (pid %d) failed (exit status %d)", sp->kind,
			 (int)pid, WEXITSTATUS(status));
	if (sp->ended)
		sp->ended(sp->arg);
	free(sp);
}

int session_spawn(struct node *n, const struct session_cfg *cfg, int sock, int expfd,
		  void (*ended)(void *arg), void *arg)
{
	struct session_proc *sp;
	char minb[16], dpy[16];
	char *argv[20];
	int argc = 0, fds[2] = { sock, expfd }, e;
	pid_t pid;

	if (live_sessions >= MAX_SESSIONS) {
		log_warn("%u sessions run already; refusing another", live_sessions);
		close(sock);
		return -EMFILE;
	}
	argv[argc++] = "metac";
	argv[argc++] = cfg->kind == SANDBOX_9P ? "fs" : cfg->kind == SANDBOX_RFB ? "desktop" :
		       cfg->kind == SANDBOX_NBD ? "block" : (char *)kind_name(cfg->kind);
	argv[argc++] = "_session";
	argv[argc++] = (char *)node_dir(n);
	if (cfg->read_only)
		argv[argc++] = "--read-only";
	if (cfg->sink)
		argv[argc++] = "--sink";
	if (cfg->passthrough)
		argv[argc++] = "--passthrough";
	if (cfg->min_block) {
		snprintf(minb, sizeof(minb), "%u", cfg->min_block);
		argv[argc++] = "--min-block";
		argv[argc++] = minb;
	}
	if (cfg->name) {
		argv[argc++] = "--name";
		argv[argc++] = (char *)cfg->name;
	}
	if (cfg->kind == SANDBOX_RFB) {
		snprintf(dpy, sizeof(dpy), "%d", cfg->display);
		argv[argc++] = "--display";
		argv[argc++] = dpy;
		if (cfg->xauth && *cfg->xauth) {
			argv[argc++] = "--xauthority";
			argv[argc++] = (char *)cfg->xauth;
		}
	}
	argv[argc] = NULL;

	if (!(sp = calloc(1, sizeof(*sp)))) {
		e = -ENOMEM;
		goto out;
	}
	sp->kind = kind_name(cfg->kind);
	sp->ended = ended;
	sp->arg = arg;
	/* fd 3 the session (SESSION_FD), fd 4 the export (EXPORT_FD). */
	e = pid = proc_spawn_self(argv, fds, expfd >= 0 ? 2 : 1);
	if (e > 0) {
		e = 0;
		if (!(sp->watch = loop_child_watch(node_loop(n), pid, session_exited, sp))) {
			/* Unwatched, it would never be reaped. */
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			e = -ENOMEM;
		} else {
			if ((sp->next = procs))
				procs->pprev = &sp->next;
			sp->pprev = &procs;
			procs = sp;
			live_sessions++;
		}
	}
	if (e < 0)
		free(sp);
out:
	if (e < 0)
		log_warn("cannot start the %s session process: %s", kind_name(cfg->kind),
			 strerror(-e));
	close(sock);
	return e;
}

/* A viewer of display :N: the display is opened (its socket and cookie
 * reached as root), then the process gives up the rest and serves RFB
 * to the one viewer on SESSION_FD. Never returns. */
static void rfb_session(const char *dir, int display, const char *xauth, int view_only)
{
	struct rfb_x11 *x;
	char err[512];
	int e;

	if ((e = rfb_x11_open(display, xauth, &x, err, sizeof(err))) < 0) {
		log_warn("desktop: %s", err);
		rfb_refuse(SESSION_FD, err);
		_exit(EXIT_FAIL);
	}
	/* Its capture thread runs already: the sandbox for threads. */
	if ((e = sandbox_enter(SANDBOX_RFB, dir, -1, 0, err, sizeof(err))) < 0) {
		log_error("rfb session: %s", err);
		rfb_refuse(SESSION_FD, "the desktop's session could not start");
		_exit(EXIT_FAIL);
	}
	if ((e = rfb_serve(rfb_x11_desktop(x), SESSION_FD, view_only ? RFB_VIEW_ONLY : 0)) < 0)
		log_info("desktop :%d: a viewer's session ended: %s", display, strerror(-e));
	_exit(EXIT_OK);
}

int session_main(enum sandbox_kind kind, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "read-only", no_argument, NULL, 'r' },
		{ "passthrough", no_argument, NULL, 'p' },
		{ "min-block", required_argument, NULL, 'b' },
		{ "name", required_argument, NULL, 'n' },
		{ "display", required_argument, NULL, 'd' },
		{ "xauthority", required_argument, NULL, 'x' },
		{ "sink", no_argument, NULL, 's' },
		{ 0 }
	};
	const char *name = "", *xauth = NULL;
	long display = -1;
	char root[4200];
	unsigned long min_block = 0;
	int c, read_only = 0, passthrough = 0, sink = 0, e;
	char err[512];

	log_init("metac session", LOG_LVL_INFO, 0);
	/* A client gone is an error to return (EPIPE), not the end. */
	signal(SIGPIPE, SIG_IGN);
	/* Nothing but the descriptors it was given, and stdio. */
	int own_export = kind == SANDBOX_RFB || kind == SANDBOX_USB || kind == SANDBOX_SOUND;
	close_range(own_export ? SESSION_FD + 1 : EXPORT_FD + 1, ~0U, 0);
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': read_only = 1; break;
		case 'p': passthrough = 1; break;
		case 'b': min_block = strtoul(optarg, NULL, 10); break;
		case 'n': name = optarg; break;
		case 'd': display = strtol(optarg, NULL, 10); break;
		case 'x': xauth = optarg; break;
		case 's': sink = 1; break;
		default: return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || fcntl(SESSION_FD, F_GETFD) < 0 ||
	    (kind == SANDBOX_RFB ? display < 0 : own_export ? !*name :
	     fcntl(EXPORT_FD, F_GETFD) < 0)) {
		fprintf(stderr, "metac: _session is started by the daemon, with a "
				"session on fd 3 (and an export on fd 4, a display or "
				"a device)\n");
		return EXIT_USAGE;
	}
	if (kind == SANDBOX_RFB)
		rfb_session(argv[optind], (int)display, xauth, read_only);
	if (kind == SANDBOX_USB)
		usb_session_run(argv[optind], name, SESSION_FD);
	if (kind == SANDBOX_SOUND)
		sound_session_run(argv[optind], name, sink, SESSION_FD);
	snprintf(root, sizeof(root), "%s/session-root", argv[optind]);
	if (kind == SANDBOX_9P) {
		struct p9_export ex = {
			.rootfd = EXPORT_FD,
			.read_only = read_only,
			.map = passthrough ? P9_MAP_PASSTHROUGH : P9_MAP_MOUNTER,
			.refs = 1,
		};
		if ((e = sandbox_enter(kind, root, EXPORT_FD, read_only, err, sizeof(err))) < 0) {
			log_error("9p session: %s", err);
			_exit(EXIT_FAIL);
		}
		p9_serve(&ex, SESSION_FD);
	} else {
		struct nbd_export *ex = nbd_export_new(EXPORT_FD, name, read_only, &e);
		if (!ex) {
			log_error("nbd session: %s", strerror(-e));
			_exit(EXIT_FAIL);
		}
		if (min_block)
			nbd_export_set_min_block(ex, (uint32_t)min_block);
		if ((e = sandbox_enter(kind, root, EXPORT_FD, read_only, err, sizeof(err))) < 0) {
			log_error("nbd session: %s", err);
			_exit(EXIT_FAIL);
		}
		nbd_serve(ex, SESSION_FD);
	}
	/* Without exit handlers: nothing is left to do, and a sanitizer's
	 * leak check at exit would need calls the filter refuses. */
	_exit(EXIT_OK);
}
