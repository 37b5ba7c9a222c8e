/*
 * The desktop service and applet: an X11 display of this host shared over
 * RFB (rfb/). A Desktop capability answers vncStream: each data connection
 * to that stream is one viewer's RFB session. A ref's description is
 * "x11:N", or "x11:N xauthority=PATH" for a server that wants a cookie;
 * a read-only ref is view-only (keys, pointer and cut text dropped).
 *   metac desktop export [--persistent] [--view-only] [--xauthority FILE] local-x11:N
 *   metac desktop attach [--listen ADDR:PORT] [--viewer CMD] [--direct] REF|local-x11:N
 *   metac desktop serve --listen ADDR:PORT [--view-only] [--insecure] local-x11:N
 * attach listens on loopback (a free port unless told) and relays each
 * connection to the desktop; it starts a VNC viewer on it (CMD, else one
 * found on the system when there is a display) and ends with the viewer;
 * with none it prints HOST:PORT and serves until a signal. serve is plain
 * RFB from this process, for viewers on this host.
 *
 * The daemon serves each viewer from a process of its own (`metac
 * desktop _session`, svc/session.h): it opens the display, then runs as
 * nobody, with no capabilities, an empty root and a seccomp filter, so
 * that what a remote viewer sends is parsed with nothing to gain. serve
 * has one capture per display, whatever the number of viewers: opened
 * for the first, closed with the last (or when the X server goes away).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/cli.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/net.h"
#include "proto/node.h"
#include "rfb/rfb.h"
#include "rfb/x11.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/services.h"
#include "svc/session.h"
#include "wire/conn.h"

#define MAX_DISPLAY 9999
#define XAUTH_KEY " xauthority="
/* Socket buffers between the daemon's loop and a viewer's thread: a
 * few full-screen updates. */
#define VIEWER_SOCKBUF (4 << 20)

struct x11_spec {
	int display;
	char xauth[PATH_MAX]; /* "" for none */
};

/* "x11:N" or "x11:N xauthority=PATH" (the path is the rest). */
static int spec_parse(const char *desc, struct x11_spec *sp)
{
	char *end;
	long n;

	memset(sp, 0, sizeof(*sp));
	if (strncmp(desc, "x11:", 4) || desc[4] < '0' || desc[4] > '9')
		return -EINVAL;
	n = strtol(desc + 4, &end, 10);
	if (n < 0 || n > MAX_DISPLAY)
		return -EINVAL;
	sp->display = (int)n;
	if (!*end)
		return 0;
	if (strncmp(end, XAUTH_KEY, strlen(XAUTH_KEY)) || end[strlen(XAUTH_KEY)] != '/')
		return -EINVAL;
	end += strlen(XAUTH_KEY);
	if (strlen(end) >= sizeof(sp->xauth))
		return -ENAMETOOLONG;
	strcpy(sp->xauth, end);
	return 0;
}

/* Whether an X server could be listening: its socket is there. */
static int display_check(int display, char *err, size_t errsz)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/tmp/.X11-unix/X%d", display);
	if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		snprintf(err, errsz, "no X server on display :%d (no socket %s)", display, path);
		return -ENOENT;
	}
	return 0;
}

/* --- one capture per display ------------------------------------- */

struct capture {
	struct capture *next;
	struct x11_spec spec;
	struct rfb_x11 *x;
	int users, listed;
};

static pthread_mutex_t captures_lock = PTHREAD_MUTEX_INITIALIZER;
static struct capture *captures;

static void unlist(struct capture *c)
{
	for (struct capture **pp = &captures; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->listed = 0;
}

/* The capture of a display, opened by its first user. NULL with why in err. */
static struct capture *capture_get(const struct x11_spec *sp, char *err, size_t errsz)
{
	struct capture *c, *next;
	int e;

	pthread_mutex_lock(&captures_lock);
	for (c = captures; c; c = next) {
		next = c->next;
		if (c->spec.display != sp->display)
			continue;
		if (!rfb_x11_alive(c->x)) { /* its X server went away */
			unlist(c);
			continue;
		}
		c->users++;
		pthread_mutex_unlock(&captures_lock);
		return c;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	c->spec = *sp;
	if ((e = rfb_x11_open(sp->display, sp->xauth[0] ? sp->xauth : NULL, &c->x, err,
			      errsz)) < 0) {
		free(c);
		c = NULL;
		goto out;
	}
	log_info("desktop: capturing display :%d", sp->display);
	c->users = 1;
	c->listed = 1;
	c->next = captures;
	captures = c;
out:
	pthread_mutex_unlock(&captures_lock);
	return c;
}

static void capture_put(struct capture *c)
{
	int last;

	pthread_mutex_lock(&captures_lock);
	if ((last = --c->users == 0) && c->listed)
		unlist(c);
	pthread_mutex_unlock(&captures_lock);
	if (last) {
		log_info("desktop: display :%d has no viewer left", c->spec.display);
		rfb_x11_close(c->x);
		free(c);
	}
}

struct viewer {
	struct x11_spec spec;
	unsigned flags;
	int fd;
};

static void *viewer_thread(void *arg)
{
	struct viewer *v = arg;
	struct capture *c;
	char err[256];
	int e;

	if (!(c = capture_get(&v->spec, err, sizeof(err)))) {
		log_warn("desktop: %s", err);
		rfb_refuse(v->fd, err);
	} else {
		if ((e = rfb_serve(rfb_x11_desktop(c->x), v->fd, v->flags)) < 0)
			log_info("desktop :%d: a viewer's session ended: %s", v->spec.display,
				 strerror(-e));
		capture_put(c);
	}
	free(v);
	return NULL;
}

/* Serves one viewer on fd (taken over) in a thread of its own. */
static int viewer_start(const struct x11_spec *sp, unsigned flags, int fd)
{
	struct viewer *v = calloc(1, sizeof(*v));

	if (!v) {
		close(fd);
		return -ENOMEM;
	}
	v->spec = *sp;
	v->flags = flags;
	v->fd = fd;
	if (io_thread_detached(viewer_thread, v) < 0) {
		close(fd);
		free(v);
		return -EAGAIN;
	}
	return 0;
}

/* --- the service --------------------------------------------------- */

struct desk {
	struct cap cap;
	struct node *node;
	struct x11_spec spec;
	int view_only;
};

static void desk_stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct desk *)c)->node, c, call, "vnc stream");
}

/* Each viewer's RFB session runs in a process of its own, which opens
 * the display and then gives up root (svc/session.h). */
static void desk_stream_attach(struct cap *c, struct wire_conn *data)
{
	struct desk *s = (struct desk *)c;
	struct session_cfg cfg = {
		.kind = SANDBOX_RFB,
		.read_only = s->view_only,
		.display = s->spec.display,
		.xauth = s->spec.xauth,
	};
	int fd, e;

	if ((e = node_pipe_pair(data, VIEWER_SOCKBUF, &fd)) < 0)
		log_warn("desktop: cannot start a viewer's session: %s", strerror(-e));
	else
		session_spawn(s->node, &cfg, fd, -1, NULL, NULL);
}

static void desk_free(struct cap *c)
{
	free(c);
}

static const struct cap_ops desk_stream_ops = {
	.name = "vnc stream",
	.call = desk_stream_call,
	.free = desk_free,
	.attach = desk_stream_attach,
};

static struct desk *desk_new(const struct cap_ops *ops, struct node *n,
			     const struct x11_spec *sp, int view_only)
{
	struct desk *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	cap_init(&d->cap, ops);
	d->node = n;
	d->spec = *sp;
	d->view_only = view_only;
	return d;
}

static void desk_call(struct cap *c, struct rpc_call *call)
{
	struct desk *d = (struct desk *)c, *s;

	if (call->iface != IFACE_DESKTOP || call->method != DESKTOP_VNC_STREAM) {
		rpc_return_unknown(call, "desktop");
		return;
	}
	if (!(s = desk_new(&desk_stream_ops, d->node, &d->spec, d->view_only))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	rpc_return_cap(call, &s->cap);
}

static const struct cap_ops desk_ops = {
	.name = "desktop",
	.call = desk_call,
	.free = desk_free,
};

static int desk_open(struct node *n, const struct x11_spec *sp, int view_only,
		     struct cap **out, char *err, size_t errsz)
{
	struct desk *d;
	int e;

	if ((e = display_check(sp->display, err, errsz)) < 0)
		return e;
	if (!(d = desk_new(&desk_ops, n, sp, view_only))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	*out = &d->cap;
	return 0;
}

static int desk_restore(struct node *n, const struct ref_record *rec, struct cap **out,
			char *err, size_t errsz)
{
	struct x11_spec sp;

	if (spec_parse(rec->description, &sp) < 0) {
		snprintf(err, errsz, "'%s' is not x11:N [xauthority=/PATH]", rec->description);
		return -EINVAL;
	}
	return desk_open(n, &sp, rec->read_only, out, err, errsz);
}

static void desk_admin_call(struct cap *c, struct rpc_call *call)
{
	struct x11_spec sp = { 0 };
	struct cap *d;
	struct msg_rd r;
	uint64_t display;
	char err[256];
	int view_only = 0, e;

	if (call->iface != IFACE_SERVICE_ADMIN || call->method != DESKTOP_ADMIN_X11) {
		rpc_return_unknown(call, "desktop service");
		return;
	}
	msg_rd_init(&r, &call->params);
	if (msg_get_u64(&r, &display) < 0 || display > MAX_DISPLAY ||
	    msg_get_str(&r, sp.xauth, sizeof(sp.xauth)) < 0 || msg_get_bool(&r, &view_only) < 0 ||
	    (sp.xauth[0] && sp.xauth[0] != '/')) {
		rpc_return_error(call, -EINVAL, "malformed desktop request");
		return;
	}
	sp.display = (int)display;
	if ((e = desk_open(node_obj_node(c), &sp, view_only, &d, err, sizeof(err))) < 0) {
		rpc_return_error(call, e, "%s", err);
		return;
	}
	rpc_return_cap(call, d);
}

static const struct cap_ops desk_admin_ops = {
	.name = "desktop service",
	.call = desk_admin_call,
	.free = node_obj_free,
};

static struct cap *desk_admin_new(struct node *n)
{
	return node_obj_new(n, &desk_admin_ops);
}

static const struct node_service desktop_service = {
	.name = "desktop",
	.restore = desk_restore,
	.admin = desk_admin_new,
};

int desktop_service_register(struct node *n)
{
	return node_register_service(n, &desktop_service);
}

/* --- applet -------------------------------------------------------- */

/* local-x11:N, with the X authority file: --xauthority, else $XAUTHORITY,
 * else ~/.Xauthority if there is one (absolute: the daemon has its own
 * working directory and environment). */
static int local_spec(const char *arg, const char *xauth, struct x11_spec *sp)
{
	char desc[32];
	const char *home;
	char guess[PATH_MAX];

	if (strncmp(arg, "local-x11:", 10) || strlen(arg) > 20)
		return -EINVAL;
	snprintf(desc, sizeof(desc), "x11:%s", arg + 10);
	if (spec_parse(desc, sp) < 0)
		return -EINVAL;
	if (!xauth && !(xauth = getenv("XAUTHORITY")) && (home = getenv("HOME"))) {
		snprintf(guess, sizeof(guess), "%s/.Xauthority", home);
		if (access(guess, R_OK) == 0)
			xauth = guess;
	}
	if (xauth && *xauth && !realpath(xauth, sp->xauth)) {
		fprintf(stderr, "metac desktop: %s: %m\n", xauth);
		return -ENOENT;
	}
	return 0;
}

static int desktop_export(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "view-only", no_argument, NULL, 'v' },
		{ "xauthority", required_argument, NULL, 'x' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *xauth = NULL;
	char desc[sizeof(XAUTH_KEY) + PATH_MAX + 16], ref[REF_MAX_LEN];
	int c, persistent = 0, view_only = 0, r = EXIT_FAIL, e;
	struct x11_spec sp;
	struct admin a;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pvx:a:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'v': view_only = 1; break;
		case 'x': xauth = optarg; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "export takes one local-x11:N");
	if ((e = local_spec(argv[optind], xauth, &sp)) < 0)
		return e == -EINVAL ? cli_usage_error(self, "export takes one local-x11:N")
				    : EXIT_FAIL;
	snprintf(desc, sizeof(desc), "x11:%d%s%s", sp.display, sp.xauth[0] ? XAUTH_KEY : "",
		 sp.xauth);
	if (strlen(desc) >= REF_MAX_DESC) {
		fprintf(stderr, "metac desktop: the X authority file's path is too long\n");
		return EXIT_FAIL;
	}
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, "desktop", desc, persistent, view_only, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

/* A viewer on this system, if there is a display to show it on. */
static const char *find_viewer(void)
{
	static const char *const names[] = { "xtigervncviewer", "vncviewer",
					     "xtightvncviewer", "xvnc4viewer", NULL };
	static char found[PATH_MAX];
	const char *path = getenv("PATH");

	if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY"))
		return NULL;
	for (int i = 0; names[i]; i++) {
		for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
			size_t n = strcspn(p, ":");
			if (n && n + strlen(names[i]) + 2 <= sizeof(found)) {
				snprintf(found, sizeof(found), "%.*s/%s", (int)n, p, names[i]);
				if (access(found, X_OK) == 0)
					return found;
			}
			p += n + (p[n] == ':');
		}
	}
	return NULL;
}

/* Runs "CMD HOST::PORT" through the shell. */
static pid_t viewer_spawn(const char *cmd, const char *target)
{
	char line[PATH_MAX + 32];
	pid_t pid;

	snprintf(line, sizeof(line), "exec %s \"$1\"", cmd);
	if ((pid = fork()) == 0) {
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", line, "sh", target, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Listens on addr (a free port if it has none); where gets HOST:PORT. */
static int listen_on(const char *listen, int insecure, char *where, size_t wsz)
{
	struct net_addr addr;
	int lfd;

	/* ADDR:0 or a bare ADDR: any free port. */
	if (net_addr_parse(listen, NET_ANY_PORT, &addr) < 0) {
		fprintf(stderr, "metac desktop: cannot parse listen address '%s'\n", listen);
		return -1;
	}
	if (addr.ss.ss_family == AF_UNIX || (!net_addr_is_loopback(&addr) && !insecure)) {
		fprintf(stderr, "metac desktop: VNC viewers connect with no encryption or "
				"authentication; listen on a loopback address%s\n",
			insecure ? "" : " (--insecure to override)");
		return -1;
	}
	if ((lfd = net_listen(&addr, 16)) < 0) {
		fprintf(stderr, "metac desktop: cannot listen on %s: %s\n", listen, strerror(-lfd));
		return -1;
	}
	addr.len = sizeof(addr.ss);
	getsockname(lfd, (struct sockaddr *)&addr.ss, &addr.len);
	net_addr_format(&addr, where, wsz);
	return lfd;
}

static int desktop_attach(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "viewer", required_argument, NULL, 'V' },
		{ "direct", no_argument, NULL, 'd' },
		{ "view-only", no_argument, NULL, 'v' },
		{ "xauthority", required_argument, NULL, 'x' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *listen = "127.0.0.1:0", *viewer = NULL, *xauth = NULL, *src;
	char where[160], target[180], *colon;
	int c, direct = 0, view_only = 0, lfd = -1, status = 0, r = EXIT_FAIL;
	struct cap *desk = NULL, *admin = NULL, *stream = NULL;
	struct x11_spec sp;
	struct msg params;
	struct admin a;
	pid_t pid = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:V:dvx:a:", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'V': viewer = optarg; break;
		case 'd': direct = 1; break;
		case 'v': view_only = 1; break;
		case 'x': xauth = optarg; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "attach takes one REF or local-x11:N");
	src = argv[optind];
	if (strncmp(src, "ref://", 6) && strncmp(src, "local-x11:", 10))
		return cli_usage_error(self, "attach takes one REF or local-x11:N");
	if (!strncmp(src, "local-x11:", 10) && local_spec(src, xauth, &sp) < 0)
		return cli_usage_error(self, "attach takes one REF or local-x11:N");
	if ((lfd = listen_on(listen, 0, where, sizeof(where))) < 0)
		return EXIT_FAIL;
	if (admin_open(&a, admin_socket_path(sock)) < 0)
		goto out;
	if (!strncmp(src, "ref://", 6)) {
		if (view_only)
			fprintf(stderr, "metac desktop: --view-only applies to local-x11:N; a ref "
					"is view-only if exported so\n");
		if (admin_restore(&a, src, &desk) < 0)
			goto out;
	} else {
		if (admin_service(&a, "desktop", &admin) < 0)
			goto out;
		msg_init(&params);
		msg_put_u64(&params, (uint64_t)sp.display);
		msg_put_str(&params, sp.xauth);
		msg_put_bool(&params, view_only);
		if (admin_call_cap(&a, admin, IFACE_SERVICE_ADMIN, DESKTOP_ADMIN_X11, &params,
				   &desk, "cannot open the display") < 0)
			goto out;
	}
	msg_init(&params);
	if (admin_call_cap(&a, desk, IFACE_DESKTOP, DESKTOP_VNC_STREAM, &params, &stream,
			   "the ref is not a desktop") < 0)
		goto out;
	/* Viewers write HOST::PORT (HOST:N would be display N, port 5900+N). */
	snprintf(target, sizeof(target), "%s", where);
	if ((colon = strrchr(target, ':')))
		memmove(colon + 1, colon, strlen(colon) + 1);
	if (!viewer)
		viewer = find_viewer();
	if (viewer && strcmp(viewer, "none")) {
		if ((pid = viewer_spawn(viewer, target)) < 0) {
			fprintf(stderr, "metac desktop: cannot start the viewer: %m\n");
			goto out;
		}
		log_info("desktop on %s; viewer: %s %s", where, viewer, target);
	} else {
		printf("%s\n", where);
		fflush(stdout);
		log_info("desktop on %s: point a VNC viewer at %s", where, target);
	}
	if (admin_relay_stream(&a, stream, lfd, direct, RFB_MAX_VIEWERS, pid, &status,
			       "metac desktop") == 0)
		r = pid <= 0 ? EXIT_OK : WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_FAIL;
out:
	if (pid > 0 && waitpid(pid, &status, WNOHANG) == 0)
		kill(pid, SIGTERM);
	close(lfd);
	cap_unref(stream);
	cap_unref(desk);
	cap_unref(admin);
	admin_close(&a);
	return r;
}

struct serve {
	struct x11_spec spec;
	unsigned flags;
};

static void serve_one(int fd, const struct net_addr *peer, void *arg)
{
	struct serve *s = arg;
	viewer_start(&s->spec, s->flags, fd);
}

static int desktop_serve(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "view-only", no_argument, NULL, 'v' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "xauthority", required_argument, NULL, 'x' },
		{ 0 }
	};
	const char *listen = NULL, *xauth = NULL;
	struct serve s = { 0 };
	struct capture *cap;
	char where[160], err[256];
	int c, insecure = 0, lfd, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:vx:", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'v': s.flags |= RFB_VIEW_ONLY; break;
		case 'I': insecure = 1; break;
		case 'x': xauth = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (!listen)
		return cli_usage_error(self, "serve needs --listen ADDR:PORT");
	if (optind != argc - 1 || local_spec(argv[optind], xauth, &s.spec) < 0)
		return cli_usage_error(self, "serve takes one local-x11:N");
	/* Opened once here, to say at once what is wrong, and kept open. */
	if (!(cap = capture_get(&s.spec, err, sizeof(err)))) {
		fprintf(stderr, "metac desktop: %s\n", err);
		return EXIT_FAIL;
	}
	if ((lfd = listen_on(listen, insecure, where, sizeof(where))) < 0) {
		capture_put(cap);
		return EXIT_FAIL;
	}
	printf("%s\n", where);
	fflush(stdout);
	log_info("serving display :%d as plain RFB on %s%s", s.spec.display, where,
		 s.flags & RFB_VIEW_ONLY ? " (view only)" : "");
	r = net_accept_each(lfd, serve_one, &s, "rfb");
	capture_put(cap);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}

static int desktop_session(const struct applet *self, int argc, char **argv)
{
	return session_main(SANDBOX_RFB, argc, argv);
}

int desktop_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", desktop_export },
		{ "attach", desktop_attach },
		{ "serve", desktop_serve },
		{ "_session", desktop_session },
		{ 0 }
	};
	return cli_dispatch(applet_find("desktop"), cmds, argc, argv);
}
