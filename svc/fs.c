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
#include <sqlite3.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/mount.h>
#include <sys/stat.h>
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

#include <sodium.h>

#include "fs9p/server.h"
#include "lib/cli.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/session.h"
#include "svc/fs_bridge.h"
#include "svc/services.h"
#include "wire/conn.h"

#define SERVE9P_MAX_SESSIONS 64

/* Whether path is the root of a mount. */
static int is_mountpoint(const char *path)
{
	struct statx sx;
	return statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) == 0 &&
	       (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	       (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
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
	char dir[REF_MAX_DESC];
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
	int fd, e;

	struct session_cfg cfg = {
		.kind = SANDBOX_9P,
		.read_only = s->ex->read_only,
		.passthrough = s->ex->map == P9_MAP_PASSTHROUGH,
	};

	/* The session runs in a process of its own (svc/session.h). */
	if ((e = node_pipe_pair(data, 0, &fd)) < 0)
		log_warn("fs: cannot pipe a data connection: %s", strerror(-e));
	else
		session_spawn(s->node, &cfg, fd, s->ex->rootfd, NULL, NULL);
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

static int fs_obj_new(struct node *n, const char *dir, int read_only, enum p9_idmap map,
		      struct cap **out, char *err, size_t errsz);

static void fs_call(struct cap *c, struct rpc_call *call)
{
	struct fs_obj *fs = (struct fs_obj *)c;
	struct fs_stream *s;
	struct cap *ro;
	char err[PATH_MAX + 64];
	int e;

	if (call->iface == IFACE_FILESYSTEM && call->method == FILESYSTEM_READ_ONLY) {
		/* The same tree, read-only: enforced here, by the server. */
		if ((e = fs_obj_new(fs->node, fs->dir, 1, fs->ex->map, &ro, err, sizeof(err))) < 0) {
			rpc_return_error(call, e, "%s", err);
			return;
		}
		rpc_return_cap(call, ro);
		return;
	}
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
	rpc_return_cap(call, &s->cap);
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

static int fs_obj_new(struct node *n, const char *dir, int read_only, enum p9_idmap map,
		      struct cap **out, char *err, size_t errsz)
{
	struct fs_obj *fs = calloc(1, sizeof(*fs));
	int e;

	if (!fs)
		return -ENOMEM;
	if (!(fs->ex = p9_export_new(dir, read_only, map, &e))) {
		snprintf(err, errsz, "cannot export %s: %s", dir, strerror(-e));
		free(fs);
		return e;
	}
	cap_init(&fs->cap, &fs_ops);
	fs->node = n;
	snprintf(fs->dir, sizeof(fs->dir), "%s", dir);
	*out = &fs->cap;
	return 0;
}

/*
 * A Filesystem of another node, re-exported here (`fs export REF`): each
 * stream asked for restores the ref anew and asks its Filesystem, after
 * making it read-only there (FILESYSTEM_READ_ONLY) if this export is.
 * The data connection then goes to that node directly.
 */
struct fs_proxy {
	struct cap cap;
	struct node *node;
	char target[REF_MAX_DESC];
	int read_only;
};

struct proxy_call {
	struct fs_proxy *p;
	struct rpc_call *call;
	struct cap *fs; /* the target's Filesystem, read-only once asked */
};

static void proxy_end(struct proxy_call *pc, int err, const char *why, struct msg *res)
{
	struct msg_rd r;
	struct cap *c;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &c) < 0)
			err = -EPROTO, why = "the remote filesystem gave no stream";
		else
			msg_put_cap(&pc->call->results, c);
	}
	if (err)
		rpc_return_error(pc->call, err, "%s", why);
	else
		rpc_return(pc->call);
	cap_unref(pc->fs);
	cap_unref(&pc->p->cap);
	free(pc);
}

static void proxy_streamed(void *arg, int err, const char *why, struct msg *res)
{
	proxy_end(arg, err, why, res);
}

static void proxy_ask_stream(struct proxy_call *pc)
{
	struct msg params;
	msg_init(&params);
	rpc_call(pc->fs, IFACE_FILESYSTEM, FILESYSTEM_V9FS_STREAM, &params, proxy_streamed, pc);
}

/* fs (the target's, or its read-only self) in res[0] replaces pc->fs. */
static int proxy_take_fs(struct proxy_call *pc, struct msg *res)
{
	struct msg_rd r;
	struct cap *c;

	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &c) < 0)
		return -EPROTO;
	cap_unref(pc->fs);
	pc->fs = cap_ref(c);
	return 0;
}

static void proxy_made_ro(void *arg, int err, const char *why, struct msg *res)
{
	struct proxy_call *pc = arg;
	if (!err && proxy_take_fs(pc, res) < 0)
		err = -EPROTO, why = "the remote filesystem gave no read-only self";
	if (err) {
		proxy_end(pc, err, why, NULL);
		return;
	}
	proxy_ask_stream(pc);
}

static void proxy_restored(void *arg, int err, const char *why, struct msg *res)
{
	struct proxy_call *pc = arg;
	struct msg params;

	if (!err && proxy_take_fs(pc, res) < 0)
		err = -EPROTO, why = "the ref restored to nothing";
	if (err) {
		proxy_end(pc, err, why, NULL);
		return;
	}
	if (!pc->p->read_only) {
		proxy_ask_stream(pc);
		return;
	}
	msg_init(&params);
	rpc_call(pc->fs, IFACE_FILESYSTEM, FILESYSTEM_READ_ONLY, &params, proxy_made_ro, pc);
}

static int fs_proxy_new(struct node *n, const char *target, int read_only, struct cap **out);

static void fs_proxy_call(struct cap *c, struct rpc_call *call)
{
	struct fs_proxy *p = (struct fs_proxy *)c;
	struct proxy_call *pc;
	struct cap *ro;
	int e;

	if (call->iface == IFACE_FILESYSTEM && call->method == FILESYSTEM_READ_ONLY) {
		if ((e = fs_proxy_new(p->node, p->target, 1, &ro)) < 0) {
			rpc_return_error(call, e, "out of memory");
			return;
		}
		rpc_return_cap(call, ro);
		return;
	}
	if (call->iface != IFACE_FILESYSTEM || call->method != FILESYSTEM_V9FS_STREAM) {
		rpc_return_unknown(call, "filesystem");
		return;
	}
	if (!(pc = calloc(1, sizeof(*pc)))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	pc->p = (struct fs_proxy *)cap_ref(c);
	pc->call = call;
	node_restore(p->node, p->target, proxy_restored, pc);
}

static void fs_proxy_free(struct cap *c)
{
	sodium_memzero(((struct fs_proxy *)c)->target, REF_MAX_DESC);
	free(c);
}

static const struct cap_ops fs_proxy_ops = {
	.name = "filesystem (re-exported)",
	.call = fs_proxy_call,
	.free = fs_proxy_free,
};

static int fs_proxy_new(struct node *n, const char *target, int read_only, struct cap **out)
{
	struct fs_proxy *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	cap_init(&p->cap, &fs_proxy_ops);
	p->node = n;
	p->read_only = read_only;
	snprintf(p->target, sizeof(p->target), "%s", target);
	*out = &p->cap;
	return 0;
}

/*
 * A ref's description says what it exports:
 *   /PATH               a directory, files shown as the mounter's
 *   passthrough:/PATH   a directory, numeric owners as they are
 *   ref://...           another node's Filesystem, re-exported
 */
static int fs_restore(struct node *n, const struct ref_record *rec, struct cap **out,
		      char *err, size_t errsz)
{
	const char *d = rec->description, *why;
	enum p9_idmap map = P9_MAP_MOUNTER;
	struct ref ref;

	if (!strncmp(d, "ref://", 6)) {
		if (ref_parse(d, &ref, &why) < 0) {
			snprintf(err, errsz, "malformed ref: %s", why);
			return -EINVAL;
		}
		sodium_memzero(&ref, sizeof(ref));
		return fs_proxy_new(n, d, rec->read_only, out);
	}
	if (!strncmp(d, "passthrough:", 12)) {
		map = P9_MAP_PASSTHROUGH;
		d += 12;
	}
	if (d[0] != '/') {
		snprintf(err, errsz, "'%s' is not an absolute path", d);
		return -EINVAL;
	}
	return fs_obj_new(n, d, rec->read_only, map, out, err, errsz);
}

/* --- binds: folders mounted on this node ---------------------------- */

/*
 * A remote folder is mounted by a bridge process (`metac fs _bridge`,
 * FUSE; svc/fs_bridge.c): the daemon opens the data connection, pipes it
 * to a socket pair and hands the other end to the bridge, which reports
 * "ok" or why not on a control socket. When the 9p connection breaks,
 * the bridge asks there for a new one: the daemon restores the ref again
 * and passes the new socket over (SCM_RIGHTS). A crash of the bridge
 * costs that mount, not the node. local:PATH is a plain bind mount.
 */
enum bind_state { B_STARTING, B_MOUNTED, B_GONE };

struct fs_bind {
	struct fs_bind *next;
	struct node *node;
	char mountpoint[PATH_MAX];
	char *source; /* local:PATH or a ref: never logged */
	int persistent, local;
	uint32_t uid, gid;
	unsigned timeout_ms; /* how long calls wait out an outage; 0: default */
	enum bind_state state;
	struct rpc_call *call; /* the administrator waiting for the outcome */
	struct cap *fs, *stream;
	pid_t pid;
	struct loop_child *child;
	int ctl_fd; /* the control socket to the bridge */
	struct loop_watch *ctl_w;
	char line[256];
	size_t llen;
	int reconnecting;
	int pending; /* calls under way that still refer to b */
	int leaving;  /* on the leaving list */
	unsigned retry_ms; /* a restored mount: if it fails, again after this */
};

static struct fs_bind *binds;
/* Unbound or failed, but a bridge or a call still holds them: kept in
 * sight so that a daemon stopping meanwhile lets them go too. */
static struct fs_bind *leaving;

/* A persistent mount that did not come back when the daemon started (its
 * node not reachable yet, say): tried again, each wait twice the last up
 * to BIND_RETRY_MAX_MS, until it mounts, the ref is refused for good, or
 * it is unbound. */
#define BIND_RETRY_FIRST_MS 1000
#define BIND_RETRY_MAX_MS 60000

struct bind_retry {
	struct node *node;
	char mountpoint[PATH_MAX];
	char *source;
	uint32_t uid, gid;
	unsigned timeout_ms, delay_ms;
	struct loop_timer *t;
	struct bind_retry *next;
};

static struct bind_retry *retries;

static void bind_start(struct node *n, const char *mountpoint, const char *source,
		       int persistent, uint32_t uid, uint32_t gid, unsigned timeout_ms,
		       unsigned retry_ms, struct rpc_call *call);

static void retry_free(struct bind_retry *r)
{
	for (struct bind_retry **pp = &retries; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	if (r->t)
		loop_timer_del(r->t);
	free(r->source);
	free(r);
}

static void retry_fire(struct loop *l, struct loop_timer *t, void *arg)
{
	struct bind_retry *r = arg;
	unsigned next = r->delay_ms * 2 > BIND_RETRY_MAX_MS ? BIND_RETRY_MAX_MS : r->delay_ms * 2;
	struct node *n = r->node;
	char mp[PATH_MAX];
	char *src = r->source;
	uint32_t uid = r->uid, gid = r->gid;
	unsigned tmo = r->timeout_ms;

	snprintf(mp, sizeof(mp), "%s", r->mountpoint);
	r->source = NULL;
	retry_free(r);
	bind_start(n, mp, src, 1, uid, gid, tmo, next, NULL);
	free(src);
}

static void retry_later(struct fs_bind *b, int err)
{
	struct bind_retry *r;

	if (err == -ENOENT || err == -EKEYEXPIRED || err == -EACCES || err == -ENOTDIR) {
		log_warn("fs: the persistent mount on %s will not come back (%s); "
			 "`metac fs unbind %s` forgets it", b->mountpoint, strerror(-err),
			 b->mountpoint);
		return;
	}
	if (!(r = calloc(1, sizeof(*r))) || !(r->source = strdup(b->source)) ||
	    !(r->t = loop_timer_new(node_loop(b->node), retry_fire, r)) ||
	    loop_timer_arm(r->t, b->retry_ms, 0) < 0) {
		if (r) {
			if (r->t)
				loop_timer_del(r->t);
			free(r->source);
			free(r);
		}
		log_error("fs: cannot schedule another try of the mount on %s", b->mountpoint);
		return;
	}
	r->node = b->node;
	snprintf(r->mountpoint, sizeof(r->mountpoint), "%s", b->mountpoint);
	r->uid = b->uid;
	r->gid = b->gid;
	r->timeout_ms = b->timeout_ms;
	r->delay_ms = b->retry_ms;
	r->next = retries;
	retries = r;
	log_info("fs: trying the persistent mount on %s again in %u s", b->mountpoint,
		 b->retry_ms / 1000);
}

static struct fs_bind *bind_find(const char *mp)
{
	for (struct fs_bind *b = binds; b; b = b->next)
		if (!strcmp(b->mountpoint, mp))
			return b;
	return NULL;
}

static void list_del(struct fs_bind **head, struct fs_bind *b)
{
	for (struct fs_bind **p = head; *p; p = &(*p)->next) {
		if (*p == b) {
			*p = b->next;
			return;
		}
	}
}

/* b is no longer bound: off the list, onto the leaving one until freed. */
static void bind_unlink(struct fs_bind *b)
{
	if (b->leaving)
		return;
	list_del(&binds, b);
	b->next = leaving;
	leaving = b;
	b->leaving = 1;
}

/* Lets go of what b holds of the remote side. The control socket stays
 * while the bridge runs: it unmounts when that socket hangs up, and a
 * lazily unmounted folder still serves its open files. */
static void bind_release(struct fs_bind *b)
{
	if (!b->child) {
		if (b->ctl_w)
			loop_watch_del(b->ctl_w);
		b->ctl_w = NULL;
		if (b->ctl_fd >= 0)
			close(b->ctl_fd);
		b->ctl_fd = -1;
	}
	cap_unref(b->stream);
	cap_unref(b->fs);
	b->stream = b->fs = NULL;
}

/* Frees b unless its bridge still runs (its exit frees it then) or a
 * call under way still refers to it (its answer does). */
static void bind_free(struct fs_bind *b)
{
	bind_release(b);
	if (b->child || b->pending)
		return;
	if (b->leaving)
		list_del(&leaving, b);
	free(b->source);
	free(b);
}

/* A call that referred to b has come back: 0 if b is still wanted, else
 * b is freed if nothing else holds it. */
static int bind_back(struct fs_bind *b)
{
	b->pending--;
	if (b->state != B_GONE)
		return 0;
	bind_free(b);
	return -1;
}

static void bind_answer(struct fs_bind *b, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void bind_answer(struct fs_bind *b, int err, const char *fmt, ...)
{
	char msg[RPC_MAX_ERRMSG];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err)
		log_warn("fs: cannot mount %s: %s", b->mountpoint, msg);
	if (!b->call)
		return;
	if (err)
		rpc_return_error(b->call, err, "%s", msg);
	else
		rpc_return(b->call);
	b->call = NULL;
}

static void bind_fail(struct fs_bind *b, int err, const char *why)
{
	bind_answer(b, err, "%s", why);
	if (b->retry_ms && !b->local)
		retry_later(b, err);
	b->state = B_GONE;
	bind_unlink(b);
	if (b->pid > 0)
		kill(b->pid, SIGTERM);
	bind_free(b);
}

static int bind_store(struct fs_bind *b)
{
	sqlite3_stmt *st;
	int ok;
	if (sqlite3_prepare_v2(node_db(b->node), "INSERT OR REPLACE INTO binds"
			       " (service, target, source, uid, gid, timeout_ms)"
			       " VALUES ('fs', ?, ?, ?, ?, ?)",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, b->mountpoint, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, b->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, b->uid);
	sqlite3_bind_int64(st, 4, b->gid);
	sqlite3_bind_int64(st, 5, b->timeout_ms);
	ok = sqlite3_step(st) == SQLITE_DONE;
	sqlite3_finalize(st);
	return ok ? 0 : -EIO;
}

/* Drops mp's record: whether there was one. */
static int bind_forget(struct node *n, const char *mp)
{
	sqlite3_stmt *st;
	int had;
	if (sqlite3_prepare_v2(node_db(n), "DELETE FROM binds WHERE service = 'fs'"
			       " AND target = ?", -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(st, 1, mp, -1, SQLITE_STATIC);
	had = sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(node_db(n)) > 0;
	sqlite3_finalize(st);
	return had;
}

static void bind_mounted(struct fs_bind *b)
{
	b->state = B_MOUNTED;
	if (b->persistent && bind_store(b) < 0)
		log_warn("fs: cannot record the mount at %s for restarts", b->mountpoint);
	log_info("fs: mounted a %s folder on %s%s", b->local ? "local" : "remote",
		 b->mountpoint, b->persistent ? " (persistent)" : "");
	bind_answer(b, 0, "ok");
}

static void bridge_exited(struct loop *l, pid_t pid, int status, void *arg)
{
	struct fs_bind *b = arg;
	b->child = NULL;
	b->pid = 0;
	if (b->state == B_STARTING) {
		bind_fail(b, -EIO, b->llen ? b->line : "the mount helper exited");
		return;
	}
	if (b->state == B_MOUNTED) {
		/* Not asked to go: say so, and leave no dead mount behind. */
		log_warn("fs: the mount helper of %s exited (status %d); unmounting",
			 b->mountpoint, status);
		umount2(b->mountpoint, MNT_DETACH);
		b->state = B_GONE;
		bind_unlink(b);
	}
	bind_free(b);
}

static void bind_reconnect(struct fs_bind *b);

/* A line from the bridge: how the mount went, or a request for a new
 * connection. */
static void bridge_line(struct fs_bind *b, const char *line)
{
	if (b->state == B_STARTING) {
		if (!strcmp(line, "ok"))
			bind_mounted(b);
		else
			bind_fail(b, -EIO, line);
	} else if (b->state == B_MOUNTED && !strcmp(line, "reconnect")) {
		bind_reconnect(b);
	}
}

static void bridge_ctl(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct fs_bind *b = arg;
	ssize_t n = read(fd, b->line + b->llen, sizeof(b->line) - 1 - b->llen);
	char *nl;

	if (n <= 0) {
		if (n < 0 && errno == EAGAIN)
			return;
		/* Closed: the bridge's exit tells the rest. */
		loop_watch_del(b->ctl_w);
		b->ctl_w = NULL;
		return;
	}
	b->llen += (size_t)n;
	b->line[b->llen] = 0;
	while ((nl = strchr(b->line, '\n'))) {
		size_t used = (size_t)(nl - b->line) + 1;
		*nl = 0;
		bridge_line(b, b->line);
		if (b->state == B_GONE || !b->ctl_w)
			return; /* b may be freed */
		memmove(b->line, b->line + used, b->llen - used + 1);
		b->llen -= used;
	}
	if (b->llen == sizeof(b->line) - 1)
		b->llen = 0; /* a line too long: not ours */
}

/* Tells the bridge why it gets no new connection. */
static void bridge_refuse(struct fs_bind *b, const char *why)
{
	char line[RPC_MAX_ERRMSG + 4];
	int n = snprintf(line, sizeof(line), "E%s", why);

	for (char *p = line; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (n >= (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (b->ctl_fd >= 0 && send(b->ctl_fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_info("fs: cannot answer the mount helper of %s: %m", b->mountpoint);
}

/* Hands the bridge a new 9p socket. */
static int bridge_give(struct fs_bind *b, int fd)
{
	if (b->ctl_fd < 0)
		return -EBADF;
	return net_send_fd(b->ctl_fd, "F", 1, fd, MSG_DONTWAIT);
}

static void pipe_ended(void *arg, int err)
{
	/* The 9p connection ended; the bridge sees its end close, fails
	 * what is in flight and unmounts or keeps failing with EIO until
	 * unbound. */
	if (err)
		log_info("fs: the 9p connection of a mount ended: %s", strerror(-err));
}

static int spawn_bridge(struct fs_bind *b, int fd9p, int ctl)
{
	char uid[16], gid[16], tmo[16];
	char *argv[] = { "metac", "fs", "_bridge", "--fd", "3", "--ctl-fd", "4",
			 "--uid", uid, "--gid", gid, "--timeout", tmo, b->mountpoint, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;
	int e;

	snprintf(uid, sizeof(uid), "%u", b->uid);
	snprintf(gid, sizeof(gid), "%u", b->gid);
	snprintf(tmo, sizeof(tmo), "%u", b->timeout_ms);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd9p, 3);
	posix_spawn_file_actions_adddup2(&fa, ctl, 4);
	posix_spawnattr_init(&attr);
	/* The daemon blocks the signals its loop handles: the bridge must
	 * not inherit that. */
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	/* This very binary, even if a newer one replaced its file since. */
	e = posix_spawn(&b->pid, "/proc/self/exe", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return -e;
}

/* Getting a 9p connection failed: the mount fails if it was being made,
 * else the bridge hears why it gets none. */
static void bind_error(struct fs_bind *b, int err, const char *why)
{
	if (b->state == B_STARTING) {
		bind_fail(b, err, why);
		return;
	}
	log_warn("fs: cannot reconnect the folder mounted on %s: %s", b->mountpoint, why);
	b->reconnecting = 0;
	bridge_refuse(b, why);
}

/* A 9p data connection for b: piped to a socket pair whose other end
 * goes to a new bridge, or to the running one. */
static void bind_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct fs_bind *b = arg;
	int sv[2] = { -1, -1 }, ctl[2] = { -1, -1 }, e;

	if (bind_back(b) < 0) {
		if (wc)
			wire_conn_close(wc);
		return;
	}
	if (!wc) {
		bind_error(b, err, why);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		e = -errno;
		wire_conn_close(wc);
		goto fail;
	}
	net_set_nonblock(sv[0]);
	if ((e = node_pipe_fds(wc, sv[0], sv[0], pipe_ended, b)) < 0) {
		close(sv[0]);
		wire_conn_close(wc);
		goto fail;
	}
	sv[0] = -1; /* the pipe's now */
	if (b->state == B_MOUNTED) {
		if ((e = bridge_give(b, sv[1])) < 0)
			goto fail;
		close(sv[1]);
		b->reconnecting = 0;
		log_info("fs: gave the mount helper of %s a new connection", b->mountpoint);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0) {
		e = -errno;
		goto fail;
	}
	if ((e = spawn_bridge(b, sv[1], ctl[1])) < 0)
		goto fail;
	close(sv[1]);
	close(ctl[1]);
	net_set_nonblock(ctl[0]);
	b->ctl_fd = ctl[0];
	b->ctl_w = loop_watch_fd(node_loop(b->node), ctl[0], EPOLLIN, bridge_ctl, b);
	b->child = loop_child_watch(node_loop(b->node), b->pid, bridge_exited, b);
	if (!b->ctl_w || !b->child) {
		kill(b->pid, SIGKILL);
		bind_fail(b, -ENOMEM, "out of memory");
	}
	return;
fail:
	for (int i = 0; i < 2; i++) {
		if (sv[i] >= 0)
			close(sv[i]);
		if (ctl[i] >= 0)
			close(ctl[i]);
	}
	bind_error(b, e, b->state == B_MOUNTED ? "cannot pass the mount helper a connection"
					       : "cannot start the mount helper");
}

static void bind_streamed(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct fs_bind *b = arg;
	struct msg_rd r;
	struct cap *c;

	if (bind_back(b) < 0)
		return;
	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &c) < 0)
			err = -EPROTO, errmsg = "the filesystem gave no stream";
	}
	if (err) {
		bind_error(b, err, errmsg);
		return;
	}
	cap_unref(b->stream);
	b->stream = cap_ref(c);
	b->pending++;
	node_stream_open(b->node, b->stream, bind_opened, b);
}

static void bind_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct fs_bind *b = arg;
	struct msg_rd r;
	struct msg params;
	struct cap *c;

	if (bind_back(b) < 0)
		return;
	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &c) < 0)
			err = -EPROTO, errmsg = "the ref restored to nothing";
	}
	if (err) {
		bind_error(b, err, errmsg);
		return;
	}
	cap_unref(b->fs);
	b->fs = cap_ref(c);
	msg_init(&params);
	b->pending++;
	rpc_call(b->fs, IFACE_FILESYSTEM, FILESYSTEM_V9FS_STREAM, &params, bind_streamed, b);
}

/* The bridge lost its 9p connection: restore the ref anew (its node may
 * have restarted, or the old connection to it died) for another. */
static void bind_reconnect(struct fs_bind *b)
{
	if (b->reconnecting)
		return;
	b->reconnecting = 1;
	log_info("fs: the mount helper of %s asks for a new connection", b->mountpoint);
	b->pending++;
	node_restore(b->node, b->source, bind_restored, b);
}

/* Starts mounting source on mountpoint; call (may be NULL) hears how it
 * went. */
static void bind_start(struct node *n, const char *mountpoint, const char *source,
		       int persistent, uint32_t uid, uint32_t gid, unsigned timeout_ms,
		       unsigned retry_ms, struct rpc_call *call)
{
	struct fs_bind *b = calloc(1, sizeof(*b));
	struct stat st;
	const char *dir;

	if (!b || !(b->source = strdup(source))) {
		free(b);
		if (call)
			rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	b->node = n;
	b->ctl_fd = -1;
	b->persistent = persistent;
	b->uid = uid;
	b->gid = gid;
	b->timeout_ms = timeout_ms;
	b->retry_ms = retry_ms;
	b->call = call;
	snprintf(b->mountpoint, sizeof(b->mountpoint), "%s", mountpoint);
	if (mountpoint[0] != '/' || stat(mountpoint, &st) < 0 || !S_ISDIR(st.st_mode)) {
		bind_answer(b, -ENOTDIR, "%s is not an existing directory (by absolute path)",
			    mountpoint);
		bind_free(b);
		return;
	}
	if (bind_find(mountpoint)) {
		bind_answer(b, -EBUSY, "something is already bound on %s", mountpoint);
		bind_free(b);
		return;
	}
	b->next = binds;
	binds = b;
	if ((dir = cli_local_path(source))) {
		b->local = 1;
		if (mount(dir, mountpoint, NULL, MS_BIND | MS_REC, NULL) < 0) {
			int e = -errno;
			char why[PATH_MAX + 64];
			snprintf(why, sizeof(why), "bind mount of %s: %s", dir, strerror(-e));
			bind_fail(b, e, why);
			return;
		}
		bind_mounted(b);
		return;
	}
	b->pending++;
	node_restore(n, source, bind_restored, b);
}

static int unbind(struct node *n, const char *mp, char *why, size_t whysz)
{
	struct fs_bind *b = bind_find(mp);

	for (struct bind_retry *r = retries; r; r = r->next) {
		if (!strcmp(r->mountpoint, mp)) {
			retry_free(r);
			bind_forget(n, mp);
			log_info("fs: %s will not be mounted again", mp);
			return 0;
		}
	}
	/* A persistent mount that gave up (its ref refused) is only a record. */
	if (!b && bind_forget(n, mp)) {
		log_info("fs: %s will not be mounted again", mp);
		return 0;
	}
	if (!b || b->state != B_MOUNTED) {
		snprintf(why, whysz, b ? "%s is still being mounted" : "nothing is bound on %s", mp);
		return b ? -EBUSY : -ENOENT;
	}
	/* Lazy: whoever still uses it keeps it until done; the bridge exits
	 * when the kernel lets go of the mount. */
	if (umount2(mp, MNT_DETACH) < 0 && errno != EINVAL) {
		snprintf(why, whysz, "cannot unmount %s: %s", mp, strerror(errno));
		return -errno;
	}
	bind_forget(n, mp);
	b->state = B_GONE;
	bind_unlink(b);
	log_info("fs: unmounted %s", mp);
	bind_free(b);
	return 0;
}

/* The fs service's administration object. */
static void fs_admin_call(struct cap *c, struct rpc_call *call);

static const struct cap_ops fs_admin_ops = {
	.name = "fs admin",
	.call = fs_admin_call,
	.free = node_obj_free,
};

static void fs_admin_call(struct cap *c, struct rpc_call *call)
{
	struct node *n = node_obj_node(c);
	char mp[PATH_MAX], source[REF_MAX_LEN + PATH_MAX], why[PATH_MAX + 64];
	int persistent;
	uint64_t uid, gid, tmo;
	struct msg_rd r;
	int e;

	msg_rd_init(&r, &call->params);
	if (call->iface != IFACE_SERVICE_ADMIN) {
		rpc_return_unknown(call, "fs admin");
		return;
	}
	switch (call->method) {
	case FS_ADMIN_BIND:
		if (msg_get_str(&r, mp, sizeof(mp)) < 0 ||
		    msg_get_str(&r, source, sizeof(source)) < 0 ||
		    msg_get_bool(&r, &persistent) < 0 || msg_get_u64(&r, &uid) < 0 ||
		    msg_get_u64(&r, &gid) < 0 || msg_get_u64(&r, &tmo) < 0 ||
		    uid > UINT32_MAX || gid > UINT32_MAX || tmo > UINT32_MAX) {
			rpc_return_error(call, -EINVAL, "malformed bind request");
			return;
		}
		bind_start(n, mp, source, persistent, (uint32_t)uid, (uint32_t)gid,
			   (unsigned)tmo, 0, call);
		return;
	case FS_ADMIN_UNBIND:
		if (msg_get_str(&r, mp, sizeof(mp)) < 0) {
			rpc_return_error(call, -EINVAL, "malformed unbind request");
			return;
		}
		if ((e = unbind(n, mp, why, sizeof(why))) < 0)
			rpc_return_error(call, e, "%s", why);
		else
			rpc_return(call);
		return;
	case FS_ADMIN_LIST: {
		uint64_t count = 0;
		for (struct fs_bind *b = binds; b; b = b->next)
			count += b->state == B_MOUNTED;
		msg_put_u64(&call->results, count);
		for (struct fs_bind *b = binds; b; b = b->next) {
			if (b->state != B_MOUNTED)
				continue;
			msg_put_str(&call->results, b->mountpoint);
			msg_put_str(&call->results, b->local ? "local" : "remote");
			msg_put_bool(&call->results, b->persistent);
		}
		rpc_return(call);
		return;
	}
	}
	rpc_return_unknown(call, "fs admin");
}

static struct cap *fs_admin_new(struct node *n)
{
	return node_obj_new(n, &fs_admin_ops);
}

/* Mounts recorded as persistent come back once the node runs. */
static void binds_restore(struct loop *l, void *arg)
{
	struct node *n = arg;
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(node_db(n), "SELECT target, source, uid, gid, timeout_ms FROM binds"
			       " WHERE service = 'fs'", -1, &st, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *mp = (const char *)sqlite3_column_text(st, 0);
		const char *src = (const char *)sqlite3_column_text(st, 1);
		if (!mp || !src)
			continue;
		/* A bind mount outlives the daemon: it is still there. */
		if (cli_local_path(src) && is_mountpoint(mp))
			continue;
		bind_start(n, mp, src, 1, (uint32_t)sqlite3_column_int64(st, 2),
			   (uint32_t)sqlite3_column_int64(st, 3),
			   (unsigned)sqlite3_column_int64(st, 4), BIND_RETRY_FIRST_MS, NULL);
	}
	sqlite3_finalize(st);
}

/* Mounts made here die with the daemon, but for persistent bind mounts
 * (the kernel keeps those, and a restart finds them). */
static void fs_stop(struct node *n)
{
	session_forget_all();
	while (retries)
		retry_free(retries);
	while (binds) {
		struct fs_bind *b = binds;
		binds = b->next;
		if (b->state == B_MOUNTED && !(b->local && b->persistent))
			umount2(b->mountpoint, MNT_DETACH);
		if (b->pid > 0)
			kill(b->pid, SIGTERM);
		b->call = NULL;
		b->state = B_GONE;
		if (b->child) {
			loop_child_del(b->child);
			b->child = NULL;
		}
		/* A call still under way frees it when it comes back. */
		bind_free(b);
	}
	for (struct fs_bind *b = leaving, *next; b; b = next) {
		next = b->next;
		if (b->child) {
			kill(b->pid, SIGTERM);
			loop_child_del(b->child);
			b->child = NULL;
		}
		bind_free(b);
	}
}

static const struct node_service fs_service = {
	.name = "fs",
	.restore = fs_restore,
	.admin = fs_admin_new,
	.stop = fs_stop,
};

int fs_service_register(struct node *n)
{
	int e = node_register_service(n, &fs_service);
	if (e == 0)
		loop_defer(node_loop(n), binds_restore, n);
	return e;
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

/* Serves dir itself: one thread (and its workers) per connection. */
static void serve_one(int fd, const struct net_addr *peer, void *arg)
{
	const struct p9_export *ex = arg;
	struct conn *c;

	if (atomic_load(&sessions) >= SERVE9P_MAX_SESSIONS || !(c = calloc(1, sizeof(*c)))) {
		log_warn("9p: too many sessions; refusing a connection");
		close(fd);
		return;
	}
	c->ex = ex;
	c->fd = fd;
	net_addr_format(peer, c->peer, sizeof(c->peer));
	atomic_fetch_add(&sessions, 1);
	if (io_thread_detached(session_thread, c) < 0) {
		atomic_fetch_sub(&sessions, 1);
		close(fd);
		free(c);
	}
}

static int serve_remote(const char *sock, const char *ref, int lfd)
{
	struct admin a;
	struct cap *fs = NULL, *stream = NULL;
	struct msg params;
	int ret = EXIT_FAIL;

	if (admin_open(&a, admin_socket_path(sock)) < 0 || admin_restore(&a, ref, &fs) < 0)
		goto out;
	msg_init(&params);
	if (admin_call_cap(&a, fs, IFACE_FILESYSTEM, FILESYSTEM_V9FS_STREAM, &params,
			   &stream, "the ref is not a filesystem") < 0)
		goto out;
	if (admin_relay_stream(&a, stream, lfd, 0, SERVE9P_MAX_SESSIONS, 0, NULL,
			       "metac fs") == 0)
		ret = EXIT_OK;
out:
	cap_unref(stream);
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
	dir = cli_local_path(argv[optind]);
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
	if (dir)
		return net_accept_each(lfd, serve_one, ex, "9p") < 0 ? EXIT_FAIL : EXIT_OK;
	return serve_remote(sock, argv[optind], lfd);
}

static int fs_export(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "map", required_argument, NULL, 'm' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *dir, *src;
	char abs[PATH_MAX], desc[PATH_MAX + 16], ref[REF_MAX_LEN];
	int c, persistent = 0, read_only = 0, r = EXIT_FAIL;
	enum p9_idmap map = P9_MAP_MOUNTER;
	struct admin a;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pra:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'r': read_only = 1; break;
		case 'a': sock = optarg; break;
		case 'm':
			if (fs_parse_map(optarg, &map) < 0)
				return cli_usage_error(self, "--map is mounter or passthrough");
			break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "fs export takes one local:PATH or REF");
	src = argv[optind];
	if (!strncmp(src, "ref://", 6)) {
		/* Another node's folder, shared on from here (--read-only
		 * makes it read-only at its source). */
		if (map != P9_MAP_MOUNTER)
			return cli_usage_error(self, "--map is for local:PATH; a REF keeps its own");
		snprintf(desc, sizeof(desc), "%s", src);
	} else {
		if (!(dir = cli_local_path(src)))
			return cli_usage_error(self, "fs export takes one local:PATH or REF");
		/* The daemon has its own working directory. */
		if (!realpath(dir, abs)) {
			fprintf(stderr, "metac fs: %s: %m\n", dir);
			return EXIT_FAIL;
		}
		snprintf(desc, sizeof(desc), "%s%s", map == P9_MAP_PASSTHROUGH ? "passthrough:" : "",
			 abs);
	}
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, "fs", desc, persistent, read_only, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

/* The fs service's administration object, from the daemon. */
static int fs_bind(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 't' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *src;
	char mp[PATH_MAX], abs[PATH_MAX + 6], *end;
	int c, persistent = 0, r = EXIT_FAIL;
	unsigned long tmo_s = 0;
	struct admin a;
	struct cap *fsa = NULL;
	struct msg params, res;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pt:a:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'a': sock = optarg; break;
		case 't':
			tmo_s = strtoul(optarg, &end, 10);
			if (*end || !*optarg || tmo_s < 1 || tmo_s > 86400)
				return cli_usage_error(self, "--timeout takes seconds, 1 to 86400");
			break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 2)
		return cli_usage_error(self, "bind takes a mountpoint and local:PATH or a REF");
	src = argv[optind + 1];
	if (strncmp(src, "ref://", 6) && !cli_local_path(src))
		return cli_usage_error(self, "the source is local:PATH or a REF");
	/* The daemon has its own working directory. */
	if (!realpath(argv[optind], mp)) {
		fprintf(stderr, "metac fs: %s: %m\n", argv[optind]);
		return EXIT_FAIL;
	}
	if (cli_local_path(src)) {
		char dir[PATH_MAX];
		if (!realpath(cli_local_path(src), dir)) {
			fprintf(stderr, "metac fs: %s: %m\n", cli_local_path(src));
			return EXIT_FAIL;
		}
		snprintf(abs, sizeof(abs), "local:%s", dir);
		src = abs;
	}
	if (admin_open_service(&a, sock, "fs", &fsa) == 0) {
		msg_init(&params);
		msg_init(&res);
		msg_put_str(&params, mp);
		msg_put_str(&params, src);
		msg_put_bool(&params, persistent);
		/* Files will appear as the caller's. */
		msg_put_u64(&params, getuid());
		msg_put_u64(&params, getgid());
		msg_put_u64(&params, tmo_s * 1000);
		if (admin_call(&a, fsa, IFACE_SERVICE_ADMIN, FS_ADMIN_BIND, &params, &res,
			       "cannot bind") == 0)
			r = EXIT_OK;
		msg_free(&res);
	}
	cap_unref(fsa);
	admin_close(&a);
	return r;
}

static int fs_unbind(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	char mp[PATH_MAX];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "unbind takes a mountpoint");
	/* A dead mount cannot be resolved: then take the path as given. */
	if (!realpath(argv[optind], mp))
		snprintf(mp, sizeof(mp), "%s", argv[optind]);
	return admin_service_call_str(sock, "fs", FS_ADMIN_UNBIND, mp, "cannot unbind");
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
	if (!strcmp(argv[1], "bind") || !strcmp(argv[1], "mount"))
		return fs_bind(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "unbind"))
		return fs_unbind(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "mount9p"))
		return fs_mount9p_main(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "_bridge"))
		return fs_bridge_main(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "_unmounter"))
		return fs_unmounter_main(self, argc - 1, argv + 1);
	if (!strcmp(argv[1], "_session"))
		return session_main(SANDBOX_9P, argc - 1, argv + 1);
	return cli_usage_error(self, "unknown command '%s'", argv[1]);
}
