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
	return kind == SANDBOX_9P ? "9p" : "nbd";
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
		log_warn("a %s session process (pid %d) died of %s; its client lost the "
			 "session, the node goes on", sp->kind, (int)pid,
			 strsignal(WTERMSIG(status)));
	else if (WEXITSTATUS(status))
		log_warn("a %s session process (pid %d) failed (exit status %d)", sp->kind,
			 (int)pid, WEXITSTATUS(status));
	if (sp->ended)
		sp->ended(sp->arg);
	free(sp);
}

int session_spawn(struct node *n, const struct session_cfg *cfg, int sock, int expfd,
		  void (*ended)(void *arg), void *arg)
{
	struct session_proc *sp;
	char minb[16];
	char *argv[12];
	int argc = 0, fds[2] = { sock, expfd }, e;
	pid_t pid;

	if (live_sessions >= MAX_SESSIONS) {
		log_warn("%u sessions run already; refusing another", live_sessions);
		close(sock);
		return -EMFILE;
	}
	argv[argc++] = "metac";
	argv[argc++] = cfg->kind == SANDBOX_9P ? "fs" : "block";
	argv[argc++] = "_session";
	argv[argc++] = (char *)node_dir(n);
	if (cfg->read_only)
		argv[argc++] = "--read-only";
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
	argv[argc] = NULL;

	if (!(sp = calloc(1, sizeof(*sp)))) {
		e = -ENOMEM;
		goto out;
	}
	sp->kind = kind_name(cfg->kind);
	sp->ended = ended;
	sp->arg = arg;
	/* fd 3 the session (SESSION_FD), fd 4 the export (EXPORT_FD). */
	e = pid = proc_spawn_self(argv, fds, 2);
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
		log_warn("cannot start a %s session process: %s", kind_name(cfg->kind),
			 strerror(-e));
	close(sock);
	return e;
}

int session_main(enum sandbox_kind kind, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "read-only", no_argument, NULL, 'r' },
		{ "passthrough", no_argument, NULL, 'p' },
		{ "min-block", required_argument, NULL, 'b' },
		{ "name", required_argument, NULL, 'n' },
		{ 0 }
	};
	const char *name = "";
	char root[4200];
	unsigned long min_block = 0;
	int c, read_only = 0, passthrough = 0, e;
	char err[512];

	log_init("metac session", LOG_LVL_INFO, 0);
	/* Nothing but the two descriptors it was given, and stdio. */
	close_range(EXPORT_FD + 1, ~0U, 0);
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': read_only = 1; break;
		case 'p': passthrough = 1; break;
		case 'b': min_block = strtoul(optarg, NULL, 10); break;
		case 'n': name = optarg; break;
		default: return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || fcntl(SESSION_FD, F_GETFD) < 0 || fcntl(EXPORT_FD, F_GETFD) < 0) {
		fprintf(stderr, "metac: _session is started by the daemon, with a "
				"session on fd 3 and an export on fd 4\n");
		return EXIT_USAGE;
	}
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
