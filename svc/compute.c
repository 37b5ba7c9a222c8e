/*
 * The compute service: ComputeLauncher, ProcessEnvironment and Process
 * (the MetaContainer paper's containers), and the applets that use them.
 *   metac run [--mount=PATH=URI]... [--net=URI[,addr=CIDR][,gw=IP]]...
 *             [--memory=MiB] [--pty] [--env K=V]... [--hostname NAME]
 *             [--uid N] [--gid N] [--service=NAME] [--node=REF] CMD...
 *   metac compute export [--persistent]   a ref to this node's launcher
 *   metac compute list [--json]           containers running here
 *
 * A container's mounts are directories of this node (local:PATH, bind
 * mounted) or remote Filesystems (refs), which the fs service mounts on a
 * staging directory under the node's state directory before the
 * container's mount namespace copies them. Its networks are remote
 * L2Interfaces, each bound to a new TAP device inside the container's
 * network namespace (svc/net.c's net_l2_netns). Namespaces, the root and
 * the command are the business of a helper process (svc/container.c);
 * this file starts it, fills in what the namespaces need from outside
 * (interfaces, a memory cgroup), relays its terminal and stdio as
 * Streams and tells whoever waits how the command ended.
 *
 * A container lives while someone holds its environment or one of its
 * processes: when the last of those capabilities is released (the
 * `metac run` that started it is gone), it is killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "lib/cli.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "lib/netlink.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/agent.h"
#include "svc/container.h"
#include "svc/net.h"
#include "svc/services.h"
#include "svc/stream.h"
#include "wire/conn.h"

#define NET_VNI 1           /* as svc/net.c: one segment per tunnel */
#define MAX_WAITERS 8
#define CGROUP_TRIES 20     /* rmdir of a cgroup whose tasks are still dying */

struct ctr;

enum proc_state { P_STARTING, P_RUNNING, P_ENDED };

/* A process of a container, and the helper that started it. */
struct proc {
	struct ctr *ctr;
	struct proc *next; /* in ctr->procs */
	int is_main;
	int handles; /* Process capabilities given out */
	enum proc_state state;
	pid_t helper;     /* in this node's pid space */
	pid_t pid;        /* pid 1, or the process joining the container */
	struct loop_child *child;
	int ctl;
	struct loop_watch *ctl_w;
	int pty;
	int fds[3];       /* this end of stdin, stdout, stderr; fds[0] the pty */
	int pty_master;   /* kept for resizing */
	int code, sig;
	struct rpc_call *answer; /* launch or launchProcess, until it runs */
	char line[1100];         /* from the helper, up to its newline */
	size_t llen;
	int got_r, got_n;
	/* computevm: the VM the process runs in, and its stdio ports. */
	struct cap *vm;
	struct cap *vstreams[3];
	int vm_alive;      /* qemu runs: the VM's wait is pending */
	unsigned vm_pending; /* ports being set up */
	struct rpc_call *waiters[MAX_WAITERS];
	size_t nwaiters;
	struct ctr_config cfg;
};

struct remote_mount {
	struct ctr *ctr;
	char *ref;
	char staging[PATH_MAX];
	int bound;
};

/* A container: its environment. */
struct ctr {
	struct ctr *next;
	struct node *node;
	unsigned id;
	int handles; /* capabilities on it or its processes */
	int failed, ended;
	char dir[PATH_MAX - 64]; /* staging mounts */
	struct remote_mount remote[CTR_MAX_MOUNTS + 1];
	size_t nremote;
	char *net_ref[CTR_MAX_NETS];
	struct cap *l2[CTR_MAX_NETS], *holder[CTR_MAX_NETS];
	size_t nnets;
	unsigned pending; /* mounts and tunnels under way */
	int ns_ready;     /* the main helper said 'N' */
	int nsfd;
	uint64_t memory_mib;
	char cgroup[PATH_MAX];
	int cgroup_tries;
	struct loop_timer *cg_timer;
	struct proc *procs; /* the first is the main one */
	char why[RPC_MAX_ERRMSG];
	/* computevm: a VM instead of namespaces; its folders come over
	 * virtio ports as 9p, vm_src[0] the root's URI, then the mounts'. */
	int vm;
	char *vm_src[CTR_MAX_MOUNTS + 1];
	size_t nvm_src;
	struct cap *fs_holder[CTR_MAX_MOUNTS + 1];
};

static struct {
	struct node *node;
	struct ctr *ctrs;
	unsigned next_id;
} S;

static void vm_destroy(struct proc *p);

/* A signal for p: to its pid 1 (which passes it on), or for a VM, over
 * the control port to the agent (SIGKILL ends the VM). */
static void proc_kill(struct proc *p, int sig)
{
	if (p->vm) {
		uint8_t m[2] = { 'K', (uint8_t)sig };
		if (sig == SIGKILL || p->ctl < 0 || p->state != P_RUNNING ||
		    send(p->ctl, m, 2, MSG_NOSIGNAL | MSG_DONTWAIT) != 2)
			vm_destroy(p);
		return;
	}
	if (p->pid > 0 && p->state != P_ENDED)
		kill(p->pid, sig);
	else if (p->helper > 0)
		kill(p->helper, sig);
}

/* --- cgroups: the memory limit -------------------------------------- */

static int write_file(const char *dir, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int write_file(const char *dir, const char *name, const char *fmt, ...)
{
	char path[PATH_MAX + 64], v[64];
	va_list ap;
	int fd, n, e = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	va_start(ap, fmt);
	n = vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return -errno;
	if (write(fd, v, (size_t)n) != n)
		e = -errno;
	close(fd);
	return e;
}

/* This process's cgroup in the v1 hierarchy of controller (from
 * /proc/self/cgroup), "" if none. */
static void own_cgroup_v1(const char *controller, char *out, size_t outsz)
{
	char line[PATH_MAX + 64];
	FILE *f = fopen("/proc/self/cgroup", "re");

	*out = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = 0;
		if (strcmp(c1 + 1, controller))
			continue;
		c2[1 + strcspn(c2 + 1, "\n")] = 0;
		snprintf(out, outsz, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
		break;
	}
	fclose(f);
}

/* Makes the container's memory cgroup: cgroup v2 where the memory
 * controller is there, else the v1 memory hierarchy. */
static int cgroup_make(struct ctr *c, char *err, size_t errsz)
{
	char own[PATH_MAX], ctl[256] = "";
	uint64_t bytes = c->memory_mib << 20;
	int fd, e;

	if ((fd = open("/sys/fs/cgroup/cgroup.controllers", O_RDONLY | O_CLOEXEC)) >= 0) {
		ssize_t n = read(fd, ctl, sizeof(ctl) - 1);
		close(fd);
		ctl[n > 0 ? n : 0] = 0;
	}
	if (strstr(ctl, "memory")) {
		if (mkdir("/sys/fs/cgroup/metac", 0755) < 0 && errno != EEXIST)
			goto v2_fail;
		/* The root may have processes, "metac" has none: both can
		 * hand the controller down. */
		write_file("/sys/fs/cgroup", "cgroup.subtree_control", "+memory");
		write_file("/sys/fs/cgroup/metac", "cgroup.subtree_control", "+memory");
		snprintf(c->cgroup, sizeof(c->cgroup), "/sys/fs/cgroup/metac/c%d-%u", (int)getpid(),
			 c->id);
		if (mkdir(c->cgroup, 0755) < 0)
			goto v2_fail;
		if ((e = write_file(c->cgroup, "memory.max", "%llu", (unsigned long long)bytes)) < 0) {
			snprintf(err, errsz, "cannot set memory.max of %.300s: %s", c->cgroup,
				 strerror(-e));
			return e;
		}
		write_file(c->cgroup, "memory.swap.max", "0");
		return 0;
	v2_fail:
		e = -errno;
		snprintf(err, errsz, "cannot make a memory cgroup under /sys/fs/cgroup: %s",
			 strerror(-e));
		c->cgroup[0] = 0;
		return e;
	}
	if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0) {
		own_cgroup_v1("memory", own, sizeof(own));
		snprintf(c->cgroup, sizeof(c->cgroup), "/sys/fs/cgroup/memory%.3000s/metac-%d-%u", own,
			 (int)getpid(), c->id);
		if (mkdir(c->cgroup, 0755) < 0) {
			e = -errno;
			snprintf(err, errsz, "cannot make the memory cgroup %.300s: %s", c->cgroup,
				 strerror(-e));
			c->cgroup[0] = 0;
			return e;
		}
		if ((e = write_file(c->cgroup, "memory.limit_in_bytes", "%llu",
				    (unsigned long long)bytes)) < 0) {
			snprintf(err, errsz, "cannot set the memory limit of %.300s: %s", c->cgroup,
				 strerror(-e));
			return e;
		}
		/* Swap counts too where the kernel accounts it. */
		write_file(c->cgroup, "memory.memsw.limit_in_bytes", "%llu",
			   (unsigned long long)bytes);
		return 0;
	}
	snprintf(err, errsz, "--memory needs a memory cgroup controller, and this host has "
		 "none (neither cgroup v2 with memory nor the v1 memory hierarchy is mounted "
		 "under /sys/fs/cgroup)");
	return -ENOTSUP;
}

static void cgroup_retry(struct loop *l, struct loop_timer *t, void *arg);

/* Removes the cgroup once its tasks are gone; 1 while it waits. */
static int cgroup_remove(struct ctr *c)
{
	if (!c->cgroup[0])
		return 0;
	if (rmdir(c->cgroup) == 0 || errno == ENOENT) {
		c->cgroup[0] = 0;
		return 0;
	}
	if (errno == EBUSY && ++c->cgroup_tries < CGROUP_TRIES) {
		if (!c->cg_timer)
			c->cg_timer = loop_timer_new(node_loop(c->node), cgroup_retry, c);
		if (c->cg_timer && loop_timer_arm(c->cg_timer, 100, 0) == 0)
			return 1;
	}
	log_warn("compute: cannot remove the cgroup %s: %m", c->cgroup);
	c->cgroup[0] = 0;
	return 0;
}

/* --- the container's life ------------------------------------------ */

static void ctr_maybe_free(struct ctr *c);

static void cgroup_retry(struct loop *l, struct loop_timer *t, void *arg)
{
	ctr_maybe_free(arg);
}

static void unbound(void *arg, int err, const char *errmsg, struct msg *res)
{
	if (err)
		log_warn("compute: cannot unmount %s: %s", (char *)arg, errmsg);
	else
		rmdir(arg);
	free(arg);
}

/* Lets go of what the container used outside its namespaces: tunnels,
 * remote mounts. */
static void ctr_release(struct ctr *c)
{
	struct cap *fs = NULL;

	for (size_t i = 0; i < c->nnets; i++) {
		cap_unref(c->holder[i]);
		cap_unref(c->l2[i]);
		c->holder[i] = c->l2[i] = NULL;
	}
	for (size_t i = 0; i < c->nvm_src; i++) {
		cap_unref(c->fs_holder[i]);
		c->fs_holder[i] = NULL;
	}
	for (struct proc *p = c->procs; p; p = p->next)
		if (p->vm && p->vm_alive)
			vm_destroy(p);
	if (c->nsfd >= 0)
		close(c->nsfd);
	c->nsfd = -1;
	for (size_t i = 0; i < c->nremote; i++) {
		struct remote_mount *m = &c->remote[i];
		struct msg p;
		char *dir;
		if (!m->bound)
			continue;
		m->bound = 0;
		if (!fs && !(fs = node_service_admin(c->node, "fs")))
			break;
		if (!(dir = strdup(m->staging)))
			continue;
		msg_init(&p);
		msg_put_str(&p, m->staging);
		rpc_call(fs, IFACE_SERVICE_ADMIN, FS_ADMIN_UNBIND, &p, unbound, dir);
	}
	cap_unref(fs);
}

static void proc_free(struct proc *p)
{
	cap_unref(p->vm);
	for (int i = 0; i < 3; i++)
		cap_unref(p->vstreams[i]);
	for (int i = 0; i < 3; i++)
		if (p->fds[i] >= 0)
			close(p->fds[i]);
	if (p->pty_master >= 0)
		close(p->pty_master);
	if (p->ctl_w)
		loop_watch_del(p->ctl_w);
	if (p->ctl >= 0)
		close(p->ctl);
	ctr_config_free(&p->cfg);
	free(p);
}

/* Frees c once nothing refers to it: no capability, no helper running. */
static void ctr_maybe_free(struct ctr *c)
{
	if (c->handles > 0 || c->pending)
		return;
	for (struct proc *p = c->procs; p; p = p->next)
		if (p->child || p->handles > 0 || p->vm_alive || p->vm_pending)
			return;
	ctr_release(c);
	if (cgroup_remove(c))
		return;
	for (struct ctr **pp = &S.ctrs; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	while (c->procs) {
		struct proc *p = c->procs;
		c->procs = p->next;
		proc_free(p);
	}
	for (size_t i = 0; i < c->nremote; i++)
		free(c->remote[i].ref);
	for (size_t i = 0; i < c->nnets; i++)
		free(c->net_ref[i]);
	for (size_t i = 0; i < c->nvm_src; i++)
		free(c->vm_src[i]);
	loop_timer_del(c->cg_timer);
	rmdir(c->dir);
	free(c);
}

/* Tells everyone waiting on p how it ended. */
static void proc_ended(struct proc *p, int code, int sig)
{
	if (p->state == P_ENDED)
		return;
	p->state = P_ENDED;
	p->code = code;
	p->sig = sig;
	for (size_t i = 0; i < p->nwaiters; i++) {
		msg_put_i64(&p->waiters[i]->results, code);
		msg_put_i64(&p->waiters[i]->results, sig);
		rpc_return(p->waiters[i]);
	}
	p->nwaiters = 0;
	if (p->is_main) {
		/* pid 1 is gone, and with it every process inside. */
		p->ctr->ended = 1;
		for (struct proc *q = p->ctr->procs; q; q = q->next)
			if (q != p && q->state != P_ENDED)
				proc_ended(q, -1, SIGKILL);
		ctr_release(p->ctr);
	}
}

/* p could not be started: whoever asked hears why; a container whose
 * main process failed is taken down. */
static void proc_failed(struct proc *p, int err, const char *why)
{
	struct ctr *c = p->ctr;

	if (p->answer) {
		rpc_return_error(p->answer, err, "%s", why);
		p->answer = NULL;
	}
	if (p->helper > 0 && p->child)
		kill(p->helper, SIGKILL);
	if (p->state != P_ENDED)
		proc_ended(p, -1, 0);
	if (p->is_main) {
		c->failed = 1;
		ctr_release(c);
	}
}

/* --- capabilities given out ---------------------------------------- */

/* A Process or (p NULL) the ProcessEnvironment of c. */
struct handle {
	struct cap cap;
	struct ctr *ctr;
	struct proc *proc;
};

/* A process that joined a container, ended and held by no one: gone
 * (only the main one stays with its container). */
static void proc_reap(struct proc *p)
{
	struct ctr *c = p->ctr;

	if (p->is_main || p->state != P_ENDED || p->child || p->handles || p->answer ||
	    p->nwaiters || p->vm_alive)
		return;
	for (struct proc **pp = &c->procs; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	proc_free(p);
}

static void handle_free(struct cap *cap)
{
	struct handle *h = (struct handle *)cap;
	struct ctr *c = h->ctr;
	struct proc *p = h->proc;

	/* A process that joined lives while held, like its container. */
	if (p && --p->handles == 0 && !p->is_main) {
		if (p->state != P_ENDED)
			proc_kill(p, SIGKILL);
		proc_reap(p);
	}
	if (--c->handles == 0 && !c->ended) {
		/* No one can see or reach it any more. */
		log_info("compute: container %u is no longer held; killing it", c->id);
		for (struct proc *q = c->procs; q; q = q->next)
			if (q->is_main)
				proc_kill(q, SIGKILL);
	}
	free(h);
	ctr_maybe_free(c);
}

static void handle_call(struct cap *cap, struct rpc_call *call);

static const struct cap_ops handle_ops = {
	.name = "container",
	.call = handle_call,
	.free = handle_free,
};

static struct cap *handle_new(struct ctr *c, struct proc *p)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	cap_init(&h->cap, &handle_ops);
	h->ctr = c;
	h->proc = p;
	c->handles++;
	if (p)
		p->handles++;
	return &h->cap;
}

static void process_call(struct proc *p, struct rpc_call *call)
{
	struct msg_rd r;
	uint64_t v, rows, cols;
	struct cap *s;

	msg_rd_init(&r, &call->params);
	switch (call->method) {
	case PROCESS_FILE:
		if (msg_get_u64(&r, &v) < 0 || v > 2 || (p->pty && v != 0)) {
			rpc_return_error(call, -EINVAL, p->pty ? "a process with a terminal has "
				      "one stream, 0" : "a process has streams 0, 1 and 2");
			return;
		}
		if (p->vm) {
			if (!p->vstreams[v]) {
				rpc_return_error(call, -EBUSY, "stream %llu of this process is taken",
						 (unsigned long long)v);
				return;
			}
			rpc_return_cap(call, p->vstreams[v]); /* ours goes with it */
			p->vstreams[v] = NULL;
			return;
		}
		if (p->fds[v] < 0) {
			rpc_return_error(call, -EBUSY, "stream %llu of this process is taken or "
				      "not there yet", (unsigned long long)v);
			return;
		}
		if (!(s = fd_stream_new(S.node, p->fds[v], 0, "process stream"))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		p->fds[v] = -1;
		rpc_return_cap(call, s);
		return;
	case PROCESS_KILL:
		if (msg_get_u64(&r, &v) < 0 || v == 0 || v >= 65) {
			rpc_return_error(call, -EINVAL, "not a signal number");
			return;
		}
		if (p->state == P_ENDED) {
			rpc_return_error(call, -ESRCH, "the process has ended");
			return;
		}
		proc_kill(p, (int)v);
		rpc_return(call);
		return;
	case PROCESS_RETURN_CODE:
		msg_put_bool(&call->results, p->state == P_ENDED);
		msg_put_i64(&call->results, p->state == P_ENDED ? p->code : 0);
		msg_put_i64(&call->results, p->state == P_ENDED ? p->sig : 0);
		rpc_return(call);
		return;
	case PROCESS_WAIT:
		if (p->state == P_ENDED) {
			msg_put_i64(&call->results, p->code);
			msg_put_i64(&call->results, p->sig);
			rpc_return(call);
		} else if (p->nwaiters == MAX_WAITERS) {
			rpc_return_error(call, -EBUSY, "too many waiting on this process");
		} else {
			p->waiters[p->nwaiters++] = call;
		}
		return;
	case PROCESS_RESIZE: {
		struct winsize ws = { 0 };
		if (msg_get_u64(&r, &rows) < 0 || msg_get_u64(&r, &cols) < 0 || rows > 10000 ||
		    cols > 10000) {
			rpc_return_error(call, -EINVAL, "resize takes rows and columns");
			return;
		}
		if (p->vm && p->pty) {
			uint8_t m[5] = { 'W', (uint8_t)rows, (uint8_t)(rows >> 8), (uint8_t)cols,
					 (uint8_t)(cols >> 8) };
			if (p->ctl >= 0)
				(void)!send(p->ctl, m, 5, MSG_NOSIGNAL | MSG_DONTWAIT);
			rpc_return(call);
			return;
		}
		if (p->pty_master < 0) {
			rpc_return_error(call, -ENOTTY, "the process has no terminal");
			return;
		}
		ws.ws_row = (unsigned short)rows;
		ws.ws_col = (unsigned short)cols;
		ioctl(p->pty_master, TIOCSWINSZ, &ws);
		rpc_return(call);
		return;
	}
	}
	rpc_return_unknown(call, "Process");
}

static int read_process(struct msg_rd *r, struct ctr_config *cfg, char *err, size_t errsz);
static int proc_start(struct ctr *c, struct proc *p, char *err, size_t errsz);

static void env_launch_process(struct ctr *c, struct rpc_call *call)
{
	struct msg_rd r;
	struct proc *p, *main = c->procs;
	char err[256];
	int e;

	if (c->ended || c->failed || !main || main->state != P_RUNNING) {
		rpc_return_error(call, -ESRCH, "the container is not running");
		return;
	}
	if (c->vm) {
		rpc_return_error(call, -ENOTSUP, "a container in a VM runs one process");
		return;
	}
	if (!(p = calloc(1, sizeof(*p)))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	p->ctr = c;
	p->ctl = p->pty_master = -1;
	p->fds[0] = p->fds[1] = p->fds[2] = -1;
	msg_rd_init(&r, &call->params);
	if ((e = read_process(&r, &p->cfg, err, sizeof(err))) < 0 || !msg_at_end(&r)) {
		proc_free(p);
		rpc_return_error(call, e < 0 ? e : -EINVAL, "%s",
				 e < 0 ? err : "launchProcess: malformed request");
		return;
	}
	p->cfg.join = main->pid;
	p->next = main->next;
	main->next = p;
	p->answer = call;
	if ((e = proc_start(c, p, err, sizeof(err))) < 0) {
		proc_failed(p, e, err);
		proc_reap(p);
	}
}

static void handle_call(struct cap *cap, struct rpc_call *call)
{
	struct handle *h = (struct handle *)cap;
	struct ctr *c = h->ctr;
	struct msg_rd r;
	uint64_t i;

	if (h->proc && call->iface == IFACE_PROCESS) {
		process_call(h->proc, call);
		return;
	}
	if (h->proc || call->iface != IFACE_PROCESS_ENVIRONMENT) {
		rpc_return_unknown(call, h->proc ? "Process" : "ProcessEnvironment");
		return;
	}
	switch (call->method) {
	case PROCESS_ENV_LAUNCH_PROCESS:
		env_launch_process(c, call);
		return;
	case PROCESS_ENV_NETWORK:
		msg_rd_init(&r, &call->params);
		if (msg_get_u64(&r, &i) < 0 || i >= c->nnets || !c->l2[i]) {
			rpc_return_error(call, -ENOENT, "the container has no network %llu",
					 (unsigned long long)i);
			return;
		}
		rpc_return_cap(call, cap_ref(c->l2[i]));
		return;
	}
	rpc_return_unknown(call, "ProcessEnvironment");
}

/* --- the helper ---------------------------------------------------- */

static void proc_running(struct proc *p)
{
	struct ctr *c = p->ctr;
	struct cap *ph, *eh = NULL;

	p->state = P_RUNNING;
	if (!p->answer)
		return;
	if (!(ph = handle_new(c, p)) || (p->is_main && !(eh = handle_new(c, NULL)))) {
		if (ph)
			cap_unref(ph);
		proc_failed(p, -ENOMEM, "out of memory");
		return;
	}
	msg_put_cap(&p->answer->results, ph);
	cap_unref(ph);
	if (eh) {
		msg_put_cap(&p->answer->results, eh);
		cap_unref(eh);
	}
	rpc_return(p->answer);
	p->answer = NULL;
	if (p->is_main)
		log_info("compute: container %u runs %s (pid %d)", c->id, p->cfg.args[0],
			 (int)p->pid);
}

static void go(struct ctr *c, struct proc *p)
{
	if (send(p->ctl, "G", 1, MSG_NOSIGNAL) != 1)
		proc_failed(p, -EIO, "the container's helper is gone");
}

/* The namespaces are there: interfaces and cgroup, then go. */
static void nets_bound(struct ctr *c);

static void net_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct ctr *c = arg;
	struct msg_rd r;
	struct cap *h;
	size_t i;

	c->pending--;
	for (i = 0; i < c->nnets && c->holder[i]; i++)
		;
	if (!c->failed && !err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &h) < 0)
			err = -EPROTO, errmsg = "bindTo answered no tunnel";
		else if (i < c->nnets)
			c->holder[i] = cap_ref(h);
	}
	if (err && !c->failed)
		proc_failed(c->procs, err, errmsg);
	if (c->failed) {
		ctr_maybe_free(c);
		return;
	}
	nets_bound(c);
}

static void net_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct ctr *c = arg;
	struct msg_rd r;
	struct cap *remote;
	struct msg p;
	size_t i;
	char why[RPC_MAX_ERRMSG];

	c->pending--;
	for (i = 0; i < c->nnets && c->holder[i]; i++)
		;
	if (!c->failed && err) {
		snprintf(why, sizeof(why), "network %zu (%s): %s", i, c->procs->cfg.nets[i].name,
			 errmsg);
		proc_failed(c->procs, err, why);
	}
	if (c->failed) {
		ctr_maybe_free(c);
		return;
	}
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &remote) < 0) {
		proc_failed(c->procs, -EPROTO, "a network ref restored to nothing");
		ctr_maybe_free(c);
		return;
	}
	msg_init(&p);
	msg_put_cap(&p, remote);
	msg_put_u64(&p, NET_VNI);
	c->pending++;
	rpc_call(c->l2[i], IFACE_L2_INTERFACE, L2_INTERFACE_BIND_TO, &p, net_bound, c);
}

/* Binds the next network that has no tunnel yet (one at a time: each
 * answer knows which it was). */
static void nets_bound(struct ctr *c)
{
	size_t i;
	char why[256];
	int e;

	for (i = 0; i < c->nnets && c->holder[i]; i++)
		;
	if (i == c->nnets) {
		go(c, c->procs);
		return;
	}
	if ((e = net_l2_netns(c->nsfd, c->procs->cfg.nets[i].name, &c->l2[i], why,
			      sizeof(why))) < 0) {
		proc_failed(c->procs, e, why);
		return;
	}
	c->pending++;
	node_restore(c->node, c->net_ref[i], net_restored, c);
}

static void helper_namespaces(struct proc *p)
{
	struct ctr *c = p->ctr;
	char path[64], why[512];
	int e;

	if (c->memory_mib && !c->cgroup[0] && (e = cgroup_make(c, why, sizeof(why))) < 0) {
		proc_failed(p, e, why);
		return;
	}
	if (c->cgroup[0] &&
	    (e = write_file(c->cgroup, "cgroup.procs", "%d", (int)p->helper)) < 0) {
		snprintf(why, sizeof(why), "cannot put the container in %.300s: %s", c->cgroup,
			 strerror(-e));
		proc_failed(p, e, why);
		return;
	}
	if (!p->is_main) {
		go(c, p);
		return;
	}
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)p->helper);
	if ((c->nsfd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		e = -errno;
		snprintf(why, sizeof(why), "cannot open the container's network namespace: %s",
			 strerror(-e));
		proc_failed(p, e, why);
		return;
	}
	c->ns_ready = 1;
	nets_bound(c);
}

/* The parent of pid (from /proc), or -1. */
static pid_t parent_of(pid_t pid)
{
	char path[64], buf[512], *rp;
	int fd, ppid;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* "pid (comm) state ppid": comm may hold anything but ends at
	 * the last ')'. */
	if (!(rp = strrchr(buf, ')')) || sscanf(rp + 1, " %*c %d", &ppid) != 1)
		return -1;
	return (pid_t)ppid;
}

/* One message from the helper. */
static void helper_message(struct proc *p, const char *m, size_t n, int fd)
{
	char text[1024];
	long v;

	snprintf(text, sizeof(text), "%.*s", (int)(n > 1 ? n - 1 : 0), m + 1);
	v = strtol(text, NULL, 10);
	switch (n ? m[0] : 0) {
	case 'N':
		if (p->state == P_STARTING && !p->got_n++)
			helper_namespaces(p);
		break;
	case 'I':
		/* Once, and only a child of the helper: pid 1 holds this
		 * channel too, and must not point kills elsewhere. */
		if (!p->pid && v > 1 && p->state == P_STARTING && parent_of((pid_t)v) == p->helper) {
			p->pid = (pid_t)v;
			if (p->got_r)
				proc_running(p);
		}
		break;
	case 'P':
		if (fd >= 0 && p->pty && p->fds[0] < 0 && isatty(fd)) {
			net_set_nonblock(fd);
			p->fds[0] = fd;
			p->pty_master = fcntl(fd, F_DUPFD_CLOEXEC, 3);
			return;
		}
		break;
	case 'R':
		/* Running; answered once the pid is known too ('I' comes
		 * from another process, in no set order). */
		p->got_r = 1;
		if (p->state == P_STARTING && (p->pid || p->vm))
			proc_running(p);
		break;
	case 'E':
		log_info("compute: container %u: %s", p->ctr->id, text);
		if (fd >= 0)
			close(fd);
		proc_failed(p, -EIO, text);
		return;
	case 'X':
		if (p->state == P_RUNNING)
			proc_ended(p, (int)v, 0);
		break;
	case 'S':
		if (p->state == P_RUNNING)
			proc_ended(p, -1, (int)v);
		break;
	}
	if (fd >= 0)
		close(fd);
}

static void helper_ctl(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct proc *p = arg;
	char ctrl[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
			     .msg_controllen = sizeof(ctrl) };
	struct cmsghdr *cm;
	ssize_t n;
	int got = -1;
	char *nl;

	iov.iov_base = p->line + p->llen;
	iov.iov_len = sizeof(p->line) - 1 - p->llen;
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* The helper and the container are gone: its exit says how. */
		loop_watch_del(p->ctl_w);
		p->ctl_w = NULL;
		return;
	}
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
			int *fds = (int *)CMSG_DATA(cm);
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				if (got < 0)
					got = fds[i];
				else
					close(fds[i]);
			}
		}
	/* Lines: a helper sends one per message, an agent's port is a
	 * byte stream. A descriptor belongs to the first line that came
	 * with it. */
	p->llen += (size_t)n;
	p->line[p->llen] = 0;
	while ((nl = memchr(p->line, '\n', p->llen))) {
		size_t used = (size_t)(nl - p->line) + 1;
		*nl = 0;
		helper_message(p, p->line, used - 1, got);
		got = -1;
		if (!p->ctl_w)
			return; /* p is gone or going */
		memmove(p->line, p->line + used, p->llen - used + 1);
		p->llen -= used;
	}
	if (got >= 0)
		close(got);
	if (p->llen == sizeof(p->line) - 1)
		p->llen = 0; /* a line too long: not one of ours */
}

static void helper_exited(struct loop *l, pid_t pid, int status, void *arg)
{
	struct proc *p = arg;
	struct ctr *c = p->ctr;

	p->child = NULL;
	p->helper = 0;
	/* What it said before it went is all there is. */
	if (p->ctl_w)
		helper_ctl(l, p->ctl, EPOLLIN, p);
	while (p->ctl_w && p->state != P_ENDED) {
		char k;
		if (recv(p->ctl, &k, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
			break;
		helper_ctl(l, p->ctl, EPOLLIN, p);
	}
	if (p->state == P_STARTING)
		proc_failed(p, -EIO, "the container's helper ended before the command ran");
	else if (p->state != P_ENDED)
		proc_ended(p, -1, SIGKILL);
	proc_reap(p);
	ctr_maybe_free(c);
}

/* The configuration as the helper or the agent reads it: its length
 * first (an agent reads it from a byte stream), then the encoding. */
static int config_frame(const struct ctr_config *cfg, struct buf *b)
{
	size_t at = b->len;
	uint32_t len;
	int e;

	if (buf_put_u32(b, 0) < 0)
		return -ENOMEM;
	if ((e = ctr_config_encode(cfg, b)) < 0)
		return e;
	len = (uint32_t)(b->len - at - 4);
	for (int i = 0; i < 4; i++)
		b->data[at + (size_t)i] = (uint8_t)(len >> (8 * i));
	return 0;
}

/* Moves *fd to a descriptor above those a helper gets (still close-on-exec). */
static int move_high(int *fd)
{
	int n = fcntl(*fd, F_DUPFD_CLOEXEC, 16);
	if (n < 0)
		return -errno;
	close(*fd);
	*fd = n;
	return 0;
}

/* Starts p's helper: `metac compute _container` with the control socket
 * and (without a pty) the container's ends of stdin, stdout and stderr. */
static int proc_start(struct ctr *c, struct proc *p, char *err, size_t errsz)
{
	char daemon[16];
	char *argv[] = { "metac", "compute", "_container", daemon, NULL };
	int ctl[2] = { -1, -1 }, io[3][2] = { { -1, -1 }, { -1, -1 }, { -1, -1 } }, e = 0;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	struct buf b;
	sigset_t none, all;

	p->pty = p->cfg.pty;
	buf_init(&b);
	if ((e = config_frame(&p->cfg, &b)) < 0) {
		snprintf(err, errsz, "the container's description is too large");
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0)
		goto errno_out;
	for (int i = 0; !p->pty && i < 3; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, io[i]) < 0)
			goto errno_out;
	if (send(ctl[0], buf_head(&b), buf_avail(&b), MSG_NOSIGNAL) < 0)
		goto errno_out;
	/* Above what they go to, so that no dup2 below overwrites a source. */
	if ((e = move_high(&ctl[1])) < 0)
		goto errno_out;
	for (int i = 0; !p->pty && i < 3; i++)
		if ((e = move_high(&io[i][1])) < 0)
			goto errno_out;
	snprintf(daemon, sizeof(daemon), "%d", (int)getpid());
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, ctl[1], CTR_FD_CTL);
	for (int i = 0; !p->pty && i < 3; i++)
		posix_spawn_file_actions_adddup2(&fa, io[i][1], CTR_FD_STDIO + i);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	/* Nothing the daemon ignores (SIGPIPE) stays ignored in there. */
	sigfillset(&all);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	e = -posix_spawn(&p->helper, "/proc/self/exe", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (e < 0) {
		snprintf(err, errsz, "cannot start the container's helper: %s", strerror(-e));
		goto out;
	}
	p->ctl = ctl[0];
	ctl[0] = -1;
	for (int i = 0; !p->pty && i < 3; i++) {
		net_set_nonblock(io[i][0]);
		p->fds[i] = io[i][0];
		io[i][0] = -1;
	}
	p->ctl_w = loop_watch_fd(node_loop(c->node), p->ctl, EPOLLIN, helper_ctl, p);
	p->child = loop_child_watch(node_loop(c->node), p->helper, helper_exited, p);
	if (!p->ctl_w || !p->child) {
		kill(p->helper, SIGKILL);
		snprintf(err, errsz, "out of memory");
		e = -ENOMEM;
	}
	goto out;
errno_out:
	e = -errno;
	snprintf(err, errsz, "cannot start the container: %s", strerror(-e));
out:
	buf_free(&b);
	for (int i = 0; i < 2; i++) {
		if (ctl[i] >= 0)
			close(ctl[i]);
		for (int k = 0; k < 3; k++)
			if (io[k][i] >= 0)
				close(io[k][i]);
	}
	return e;
}

/* --- computevm: the container in a VM -------------------------------- */

#define VM_DEFAULT_MIB 256
#define VM_PORTS_FIXED 4 /* metac.ctl, then stdio (or the terminal) */

/* In a VM, each folder is the 9p session of a port: the URIs the
 * launch named, in order (the root first), and the configuration the
 * agent gets names the ports. */
static int vm_sources(struct ctr *c, struct ctr_config *cfg, char *err, size_t errsz)
{
	const char *paths[CTR_MAX_MOUNTS + 1];
	char buf[PATH_MAX + 16];
	size_t n = 0;

	paths[n++] = cfg->root;
	for (size_t i = 0; i < cfg->nmounts; i++)
		paths[n++] = cfg->mounts[i].source;
	for (size_t i = 0; i < n; i++) {
		const char *uri = NULL;
		for (size_t k = 0; k < c->nremote; k++)
			if (!strcmp(paths[i], c->remote[k].staging))
				uri = c->remote[k].ref;
		if (!uri) {
			/* Owners and modes as they are: the guest's root is root. */
			snprintf(buf, sizeof(buf), "passthrough:%s", paths[i]);
			uri = buf;
		}
		if (!(c->vm_src[i] = strdup(uri))) {
			snprintf(err, errsz, "out of memory");
			return -ENOMEM;
		}
		c->nvm_src = i + 1;
	}
	snprintf(cfg->root, sizeof(cfg->root), "port:metac.9p.0");
	for (size_t i = 0; i < cfg->nmounts; i++)
		snprintf(cfg->mounts[i].source, PATH_MAX, "port:metac.9p.%zu", i + 1);
	return 0;
}

static void vm_destroy(struct proc *p)
{
	struct msg q;
	if (!p->vm || !p->vm_alive)
		return;
	msg_init(&q);
	rpc_call(p->vm, IFACE_VM, VM_DESTROY, &q, NULL, NULL);
}

/* A step of setting up one port of p's VM. */
struct vm_step {
	struct proc *p;
	size_t port;
	struct cap *stream; /* the port's */
};

static void vm_step_end(struct vm_step *st, int err, const char *why);

/* The VM is gone: like a helper's exit. */
static void vm_waited(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct proc *p = arg;
	struct ctr *c = p->ctr;

	p->vm_alive = 0;
	if (p->ctl_w)
		helper_ctl(node_loop(c->node), p->ctl, EPOLLIN, p);
	if (p->state == P_STARTING)
		proc_failed(p, -EIO, "the VM ended before the command ran (its console may say why)");
	else if (p->state != P_ENDED)
		proc_ended(p, -1, SIGKILL);
	ctr_maybe_free(c);
}

/* Everything is wired: the agent gets its configuration, then go. */
static void vm_go(struct proc *p)
{
	struct buf b;

	buf_init(&b);
	if (config_frame(&p->cfg, &b) < 0) {
		buf_free(&b);
		proc_failed(p, -E2BIG, "the container's description is too large");
		return;
	}
	if (buf_put_u8(&b, 'G') < 0 || io_write_all(p->ctl, buf_head(&b), buf_avail(&b)) < 0)
		proc_failed(p, -EIO, "cannot reach the VM's agent");
	buf_free(&b);
}

static void vm_ctl_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct vm_step *st = arg;
	struct proc *p = st->p;
	int sv[2];

	if (!wc) {
		vm_step_end(st, err, why);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		wire_conn_close(wc);
		vm_step_end(st, -errno, "socketpair");
		return;
	}
	net_set_nonblock(sv[0]);
	if ((err = node_pipe_fds(wc, sv[0], sv[0], NULL, NULL)) < 0) {
		close(sv[0]);
		close(sv[1]);
		wire_conn_close(wc);
		vm_step_end(st, err, "cannot pipe the control port");
		return;
	}
	p->ctl = sv[1];
	if (!(p->ctl_w = loop_watch_fd(node_loop(p->ctr->node), p->ctl, EPOLLIN, helper_ctl, p))) {
		vm_step_end(st, -ENOMEM, "out of memory");
		return;
	}
	vm_step_end(st, 0, NULL);
}

static void vm_fs_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct vm_step *st = arg;
	struct msg_rd r;
	struct cap *h;
	size_t k = st->port - VM_PORTS_FIXED;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &h) < 0)
			err = -EPROTO, errmsg = "bindTo answered nothing";
		else
			st->p->ctr->fs_holder[k] = cap_ref(h);
	}
	vm_step_end(st, err, errmsg);
}

static void vm_fs_streamed(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct vm_step *st = arg;
	struct msg_rd r;
	struct cap *fsst;
	struct msg q;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &fsst) < 0)
			err = -EPROTO, errmsg = "the folder gave no 9p stream";
	}
	if (err) {
		vm_step_end(st, err, errmsg);
		return;
	}
	/* The folder's 9p sessions, piped to the port for good. */
	msg_init(&q);
	msg_put_cap(&q, st->stream);
	rpc_call(fsst, IFACE_STREAM, STREAM_BIND_TO, &q, vm_fs_bound, st);
}

static void vm_fs_found(struct vm_step *st, struct cap *fs)
{
	struct msg q;
	msg_init(&q);
	rpc_call(fs, IFACE_FILESYSTEM, FILESYSTEM_V9FS_STREAM, &q, vm_fs_streamed, st);
}

static void vm_fs_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct vm_step *st = arg;
	struct msg_rd r;
	struct cap *fs;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &fs) < 0)
			err = -EPROTO, errmsg = "the ref restored to nothing";
	}
	if (err) {
		vm_step_end(st, err, errmsg);
		return;
	}
	vm_fs_found(st, fs);
}

/* Port st->port's Stream is there: wire it to what it is for. */
static void vm_port_got(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct vm_step *st = arg;
	struct proc *p = st->p;
	struct ctr *c = p->ctr;
	struct msg_rd r;
	struct cap *s, *fs;
	char why[256];

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &s) < 0)
			err = -EPROTO, errmsg = "no port";
	}
	if (err || c->failed) {
		vm_step_end(st, err, errmsg);
		return;
	}
	st->stream = cap_ref(s);
	if (st->port == 0) {
		node_stream_open(c->node, st->stream, vm_ctl_opened, st);
	} else if (st->port < VM_PORTS_FIXED) {
		p->vstreams[st->port - 1] = cap_ref(st->stream);
		vm_step_end(st, 0, NULL);
	} else {
		const char *uri = c->vm_src[st->port - VM_PORTS_FIXED];
		if (!strncmp(uri, "ref://", 6)) {
			node_restore(c->node, uri, vm_fs_restored, st);
		} else if ((err = node_local_object(c->node, "fs", uri, 0, &fs, why,
						    sizeof(why))) < 0) {
			vm_step_end(st, err, why);
		} else {
			vm_fs_found(st, fs);
			cap_unref(fs);
		}
	}
}

static void vm_step_end(struct vm_step *st, int err, const char *why)
{
	struct proc *p = st->p;
	struct ctr *c = p->ctr;
	char msg[RPC_MAX_ERRMSG];

	cap_unref(st->stream);
	free(st);
	p->vm_pending--;
	if (err && !c->failed) {
		snprintf(msg, sizeof(msg), "the VM's channels: %s", why ? why : strerror(-err));
		proc_failed(p, err, msg);
	}
	if (c->failed) {
		ctr_maybe_free(c);
		return;
	}
	if (!p->vm_pending)
		vm_go(p);
}

static void vm_console_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct ctr *c = arg;
	char path[PATH_MAX];
	int in, out;

	if (!wc)
		return;
	snprintf(path, sizeof(path), "%.3000s/computevm-%d-%u.console", node_dir(S.node),
		 (int)getpid(), c->id);
	in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (in < 0 || out < 0 || node_pipe_fds(wc, in, out, NULL, NULL) < 0) {
		if (in >= 0)
			close(in);
		if (out >= 0)
			close(out);
		wire_conn_close(wc);
	}
}

static void vm_console_got(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct msg_rd r;
	struct cap *s;

	if (err)
		return;
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &s) == 0)
		node_stream_open(S.node, s, vm_console_opened, arg);
}

static void vm_launched(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct proc *p = arg;
	struct ctr *c = p->ctr;
	size_t nports = VM_PORTS_FIXED + c->nvm_src;
	struct msg_rd r;
	struct cap *vm;
	struct msg q;

	p->vm_pending--;
	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &vm) < 0)
			err = -EPROTO, errmsg = "the VM launcher answered no VM";
	}
	if (err) {
		if (!c->failed)
			proc_failed(p, err, errmsg);
		ctr_maybe_free(c);
		return;
	}
	p->vm = cap_ref(vm);
	p->vm_alive = 1;
	msg_init(&q);
	rpc_call(p->vm, IFACE_VM, VM_WAIT, &q, vm_waited, p);
	/* Its console, for when something goes wrong in there. */
	msg_init(&q);
	msg_put_u64(&q, 0);
	rpc_call(p->vm, IFACE_VM, VM_SERIAL_PORT, &q, vm_console_got, c);
	if (c->failed) {
		vm_destroy(p);
		return;
	}
	for (size_t i = 0; i < nports; i++) {
		struct vm_step *st;
		if (p->pty && i >= 2 && i < VM_PORTS_FIXED)
			continue; /* one port for the terminal */
		if (!(st = calloc(1, sizeof(*st)))) {
			proc_failed(p, -ENOMEM, "out of memory");
			break;
		}
		st->p = p;
		st->port = i;
		p->vm_pending++;
		msg_init(&q);
		msg_put_u64(&q, i);
		/* stdin's end is the command's; nothing else ends that way. */
		msg_put_bool(&q, !p->pty && i == 1);
		rpc_call(p->vm, IFACE_VM, VM_PORT, &q, vm_port_got, st);
		if (c->failed)
			break;
	}
}

/* The VM launcher's answer: launch with what was prepared. */
struct launch_ctx {
	struct proc *p;
	struct msg params;
};

static void vm_launcher_got(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct launch_ctx *lc = arg;
	struct proc *p = lc->p;
	struct msg_rd r;
	struct cap *l;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &l) < 0)
			err = -EPROTO, errmsg = "the vm service gave no launcher";
	}
	if (err || p->ctr->failed) {
		msg_free(&lc->params);
		free(lc);
		p->vm_pending--;
		if (!p->ctr->failed)
			proc_failed(p, err, errmsg);
		ctr_maybe_free(p->ctr);
		return;
	}
	/* vm_launched takes over p's pending count. */
	rpc_call(l, IFACE_VM_LAUNCHER, VM_LAUNCHER_LAUNCH, &lc->params, vm_launched, p);
	free(lc);
}

/* Starts the VM: the cloud kernel, the agent's initramfs (made on first
 * use), the networks, one serial console and the ports. */
static void vm_start(struct ctr *c, struct proc *p)
{
	char kver[256], initrd[PATH_MAX], kernel[PATH_MAX + 16], err[512], name[32];
	struct cap *admin = NULL;
	struct launch_ctx *lc;
	struct msg q;
	struct stat st;
	int e;

	if ((e = agent_kernel(kver, sizeof(kver))) < 0) {
		proc_failed(p, e, "computevm needs a kernel: Debian's linux-image-cloud-amd64, or "
			    "METAC_VM_KERNEL=VERSION with /boot/vmlinuz-VERSION");
		ctr_maybe_free(c);
		return;
	}
	snprintf(initrd, sizeof(initrd), "%.3000s/computevm-%.200s.img", node_dir(c->node), kver);
	/* Made again when this binary is newer than the one inside. */
	struct stat self;
	if ((stat(initrd, &st) < 0 ||
	     (stat(agent_binary(), &self) == 0 && self.st_mtime >= st.st_mtime)) &&
	    (e = agent_initrd_build(kver, initrd, err, sizeof(err))) < 0) {
		proc_failed(p, e, err);
		ctr_maybe_free(c);
		return;
	}
	if (!(admin = node_service_admin(c->node, "vm"))) {
		proc_failed(p, -ENOSYS, "this node runs no vm service");
		ctr_maybe_free(c);
		return;
	}
	p->pty = p->cfg.pty;
	msg_init(&q);
	msg_put_u64(&q, c->memory_mib ? c->memory_mib : VM_DEFAULT_MIB);
	msg_put_u64(&q, 1);
	snprintf(kernel, sizeof(kernel), "local:/boot/vmlinuz-%s", kver);
	msg_put_str(&q, kernel);
	snprintf(kernel, sizeof(kernel), "local:%s", initrd);
	msg_put_str(&q, kernel);
	msg_put_str(&q, "console=ttyS0 quiet panic=-1");
	msg_put_u64(&q, 0); /* drives */
	msg_put_u64(&q, c->nnets);
	for (size_t i = 0; i < c->nnets; i++) {
		msg_put_str(&q, c->net_ref[i]);
		msg_put_str(&q, "virtio");
	}
	msg_put_u64(&q, 1);
	msg_put_str(&q, "");
	msg_put_u64(&q, VM_PORTS_FIXED + c->nvm_src);
	msg_put_str(&q, "metac.ctl");
	for (int i = 0; i < 3; i++) {
		char pn[32];
		snprintf(pn, sizeof(pn), p->pty ? (i ? "metac.unused%d" : "metac.tty") : "metac.%d", i);
		msg_put_str(&q, pn);
	}
	for (size_t i = 0; i < c->nvm_src; i++) {
		char pn[32];
		snprintf(pn, sizeof(pn), "metac.9p.%zu", i);
		msg_put_str(&q, pn);
	}
	snprintf(name, sizeof(name), "computevm-%u", c->id);
	msg_put_str(&q, name);
	if (!(lc = calloc(1, sizeof(*lc)))) {
		msg_free(&q);
		cap_unref(admin);
		proc_failed(p, -ENOMEM, "out of memory");
		ctr_maybe_free(c);
		return;
	}
	lc->p = p;
	lc->params = q;
	p->vm_pending++;
	msg_init(&q);
	rpc_call(admin, IFACE_SERVICE_ADMIN, VM_ADMIN_LAUNCHER, &q, vm_launcher_got, lc);
	cap_unref(admin);
}

/* --- launch -------------------------------------------------------- */

static int read_strings(struct msg_rd *r, char **out, size_t *n, size_t max, const char *what,
			char *err, size_t errsz)
{
	uint64_t k;
	char s[CTR_MAX_STR + 1];

	if (msg_get_u64(r, &k) < 0 || k > max) {
		snprintf(err, errsz, "at most %zu %s", max, what);
		return -EINVAL;
	}
	for (*n = 0; *n < k; (*n)++) {
		if (msg_get_str(r, s, sizeof(s)) < 0) {
			snprintf(err, errsz, "malformed %s", what);
			return -EINVAL;
		}
		if (!(out[*n] = strdup(s))) {
			snprintf(err, errsz, "out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}

/* args, env, then (after what launch has between) uid, gid, pty, rows,
 * cols: the process part of a launch or launchProcess. */
static int read_command(struct msg_rd *r, struct ctr_config *cfg, char *err, size_t errsz)
{
	int e;

	if ((e = read_strings(r, cfg->args, &cfg->nargs, CTR_MAX_ARGS, "arguments", err,
			      errsz)) < 0 ||
	    (e = read_strings(r, cfg->env, &cfg->nenv, CTR_MAX_ENV, "environment variables", err,
			      errsz)) < 0)
		return e;
	if (!cfg->nargs) {
		snprintf(err, errsz, "no command to run");
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->nenv; i++)
		if (!strchr(cfg->env[i], '=') || cfg->env[i][0] == '=') {
			snprintf(err, errsz, "'%s' is not NAME=VALUE", cfg->env[i]);
			return -EINVAL;
		}
	return 0;
}

static int read_identity(struct msg_rd *r, struct ctr_config *cfg, char *err, size_t errsz)
{
	uint64_t uid, gid, rows, cols;
	int pty;

	if (msg_get_u64(r, &uid) < 0 || msg_get_u64(r, &gid) < 0 || uid > UINT32_MAX - 1 ||
	    gid > UINT32_MAX - 1 || msg_get_bool(r, &pty) < 0 || msg_get_u64(r, &rows) < 0 ||
	    msg_get_u64(r, &cols) < 0 || rows > 10000 || cols > 10000) {
		snprintf(err, errsz, "malformed user, group or terminal");
		return -EINVAL;
	}
	cfg->uid = (uint32_t)uid;
	cfg->gid = (uint32_t)gid;
	cfg->pty = pty;
	cfg->rows = (unsigned)rows;
	cfg->cols = (unsigned)cols;
	return 0;
}

static int read_process(struct msg_rd *r, struct ctr_config *cfg, char *err, size_t errsz)
{
	int e = read_command(r, cfg, err, errsz);
	return e < 0 ? e : read_identity(r, cfg, err, errsz);
}

static int hostname_ok(const char *h)
{
	if (!*h || strlen(h) > CTR_HOSTNAME_MAX)
		return 0;
	for (; *h; h++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		      (*h >= '0' && *h <= '9') || *h == '-' || *h == '.'))
			return 0;
	return 1;
}

/* Reads the mounts of a launch: the root to cfg->root (or a remote one
 * to c->remote[0]), the others to cfg->mounts. */
static int read_mounts(struct msg_rd *r, struct ctr *c, struct ctr_config *cfg, int allow_local,
		       char *err, size_t errsz)
{
	uint64_t k;
	char target[PATH_MAX], source[REF_MAX_LEN + PATH_MAX];
	int have_root = 0;
	struct stat st;

	if (msg_get_u64(r, &k) < 0 || k > CTR_MAX_MOUNTS + 1) {
		snprintf(err, errsz, "at most %d mounts", CTR_MAX_MOUNTS + 1);
		return -EINVAL;
	}
	for (uint64_t i = 0; i < k; i++) {
		const char *dir;
		int root;
		if (msg_get_str(r, target, sizeof(target)) < 0 ||
		    msg_get_str(r, source, sizeof(source)) < 0) {
			snprintf(err, errsz, "malformed mount");
			return -EINVAL;
		}
		root = !strcmp(target, "/");
		if (!root && cfg->nmounts == CTR_MAX_MOUNTS) {
			snprintf(err, errsz, "at most %d mounts besides /", CTR_MAX_MOUNTS);
			return -EINVAL;
		}
		if (!root && !ctr_target_ok(target)) {
			snprintf(err, errsz, "mount target '%.300s' is not an absolute path inside "
				 "the container (no '..', '.' or '//')", target);
			return -EINVAL;
		}
		if (root && have_root++) {
			snprintf(err, errsz, "two mounts on /");
			return -EINVAL;
		}
		if ((dir = cli_local_path(source)) && !allow_local) {
			snprintf(err, errsz, "a launcher reached by a ref mounts refs only (not "
				 "local:PATH of its node); export the folder and pass its ref");
			return -EPERM;
		}
		if (dir) {
			if (dir[0] != '/' || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
				snprintf(err, errsz, "%.200s (for %.200s) is not an existing "
					 "directory of this node, by absolute path", dir, target);
				return -ENOENT;
			}
			if (root) {
				if (!realpath(dir, cfg->root)) {
					snprintf(err, errsz, "%s: %s", dir, strerror(errno));
					return -errno;
				}
				continue;
			}
			snprintf(cfg->mounts[cfg->nmounts].source, PATH_MAX, "%s", dir);
		} else if (!strncmp(source, "ref://", 6)) {
			struct remote_mount *m = &c->remote[c->nremote++];
			m->ctr = c;
			if (!(m->ref = strdup(source))) {
				snprintf(err, errsz, "out of memory");
				return -ENOMEM;
			}
			snprintf(m->staging, sizeof(m->staging), "%s/m%zu", c->dir, c->nremote - 1);
			if (root) {
				snprintf(cfg->root, sizeof(cfg->root), "%s", m->staging);
				continue;
			}
			snprintf(cfg->mounts[cfg->nmounts].source, PATH_MAX, "%s", m->staging);
		} else {
			snprintf(err, errsz, "mount source for %.300s is neither local:PATH nor a ref",
				 target);
			return -EINVAL;
		}
		snprintf(cfg->mounts[cfg->nmounts++].target, PATH_MAX, "%s", target);
	}
	if (!have_root) {
		snprintf(err, errsz, "no root: one mount must be on /");
		return -EINVAL;
	}
	return 0;
}

static int read_nets(struct msg_rd *r, struct ctr *c, struct ctr_config *cfg, char *err,
		     size_t errsz)
{
	uint64_t k;
	char ref[REF_MAX_LEN + 1];

	if (msg_get_u64(r, &k) < 0 || k > CTR_MAX_NETS) {
		snprintf(err, errsz, "at most %d networks", CTR_MAX_NETS);
		return -EINVAL;
	}
	for (cfg->nnets = 0; cfg->nnets < k; cfg->nnets++) {
		struct ctr_net *x = &cfg->nets[cfg->nnets];
		int fam;
		uint8_t a[16];
		unsigned prefix;
		if (msg_get_str(r, ref, sizeof(ref)) < 0 ||
		    msg_get_str(r, x->cidr, sizeof(x->cidr)) < 0 ||
		    msg_get_str(r, x->gateway, sizeof(x->gateway)) < 0) {
			snprintf(err, errsz, "malformed network");
			return -EINVAL;
		}
		if (strncmp(ref, "ref://", 6)) {
			snprintf(err, errsz, "network %zu is not a ref to an L2Interface", cfg->nnets);
			return -EINVAL;
		}
		if ((*x->cidr && (nl_parse_cidr(x->cidr, &fam, a, &prefix) < 0 ||
				  !strchr(x->cidr, '/'))) ||
		    (*x->gateway && (nl_parse_cidr(x->gateway, &fam, a, &prefix) < 0 ||
				     strchr(x->gateway, '/')))) {
			snprintf(err, errsz, "network %zu: addr is ADDRESS/PREFIX and gw an address",
				 cfg->nnets);
			return -EINVAL;
		}
		snprintf(x->name, sizeof(x->name), "eth%zu", cfg->nnets);
		if (!(c->net_ref[cfg->nnets] = strdup(ref))) {
			snprintf(err, errsz, "out of memory");
			return -ENOMEM;
		}
		c->nnets = cfg->nnets + 1;
	}
	return 0;
}

static void vm_start(struct ctr *c, struct proc *p);

/* The remote mounts are in place (or one failed): start the helper. */
static void mounts_done(struct ctr *c)
{
	struct proc *p = c->procs;
	char err[256];
	int e;

	if (c->pending || c->failed)
		return;
	if (c->vm) {
		vm_start(c, p);
		return;
	}
	if ((e = proc_start(c, p, err, sizeof(err))) < 0) {
		proc_failed(p, e, err);
		ctr_maybe_free(c);
	}
}

static void mount_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct remote_mount *m = arg;
	struct ctr *c = m->ctr; /* held by its pending count */
	char why[RPC_MAX_ERRMSG];

	c->pending--;
	if (err) {
		if (!c->failed) {
			snprintf(why, sizeof(why), "cannot mount the folder for %s: %s",
				 m == c->remote && !strcmp(c->procs->cfg.root, m->staging) ? "/"
											 : "a mount",
				 errmsg);
			proc_failed(c->procs, err, why);
		}
		rmdir(m->staging);
	} else {
		m->bound = 1;
		if (c->failed)
			ctr_release(c);
	}
	if (c->failed)
		ctr_maybe_free(c);
	else
		mounts_done(c);
}

static int vm_sources(struct ctr *c, struct ctr_config *cfg, char *err, size_t errsz);

static void launch(struct rpc_call *call, int allow_local, int vm)
{
	struct msg_rd r;
	struct ctr *c = calloc(1, sizeof(*c));
	struct proc *p = calloc(1, sizeof(*p));
	struct cap *fs = NULL;
	char err[512];
	uint64_t mib;
	int e;

	if (!c || !p) {
		free(c);
		free(p);
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	c->node = S.node;
	c->id = ++S.next_id;
	c->nsfd = -1;
	c->procs = p;
	p->ctr = c;
	p->is_main = 1;
	p->ctl = p->pty_master = -1;
	p->fds[0] = p->fds[1] = p->fds[2] = -1;
	/* Unique to this daemon's run: one killed may have left its own. */
	snprintf(c->dir, sizeof(c->dir), "%.3000s/compute/c%d-%u", node_dir(S.node), (int)getpid(),
		 c->id);
	c->next = S.ctrs;
	S.ctrs = c;
	msg_rd_init(&r, &call->params);
	if ((e = read_command(&r, &p->cfg, err, sizeof(err))) < 0 ||
	    (e = read_mounts(&r, c, &p->cfg, allow_local, err, sizeof(err))) < 0 ||
	    (e = read_nets(&r, c, &p->cfg, err, sizeof(err))) < 0)
		goto fail;
	if (msg_get_u64(&r, &mib) < 0 || mib > (1ull << 30) ||
	    (e = read_identity(&r, &p->cfg, err, sizeof(err))) < 0 ||
	    msg_get_str(&r, p->cfg.hostname, sizeof(p->cfg.hostname)) < 0 || !msg_at_end(&r)) {
		e = -EINVAL;
		snprintf(err, sizeof(err), "launch: malformed request");
		goto fail;
	}
	c->memory_mib = mib;
	if ((c->vm = vm) && (e = vm_sources(c, &p->cfg, err, sizeof(err))) < 0)
		goto fail;
	if (!*p->cfg.hostname)
		snprintf(p->cfg.hostname, sizeof(p->cfg.hostname), "metac");
	if (!hostname_ok(p->cfg.hostname)) {
		e = -EINVAL;
		snprintf(err, sizeof(err), "'%s' is not a hostname", p->cfg.hostname);
		goto fail;
	}
	p->answer = call;
	if (c->nremote && !c->vm) {
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%s/compute", node_dir(S.node));
		errno = ENOSYS;
		if ((mkdir(parent, 0700) < 0 && errno != EEXIST) || mkdir(c->dir, 0700) < 0 ||
		    !(fs = node_service_admin(S.node, "fs"))) {
			e = -errno;
			snprintf(err, sizeof(err), "cannot prepare %.300s for remote mounts: %s", c->dir,
				 strerror(-e));
			p->answer = NULL;
			goto fail;
		}
		/* Held while the binds go out: a local one can answer (and
		 * fail the container) before rpc_call returns. */
		c->pending++;
		for (size_t i = 0; i < c->nremote && !c->failed; i++) {
			struct msg q;
			struct remote_mount *m = &c->remote[i];
			if (mkdir(m->staging, 0700) < 0) {
				snprintf(err, sizeof(err), "cannot make %.300s: %s", m->staging,
					 strerror(errno));
				proc_failed(p, -errno, err);
				break;
			}
			msg_init(&q);
			msg_put_str(&q, m->staging);
			msg_put_str(&q, m->ref);
			msg_put_bool(&q, 0);
			msg_put_u64(&q, 0);
			msg_put_u64(&q, 0);
			msg_put_u64(&q, 0);
			c->pending++;
			rpc_call(fs, IFACE_SERVICE_ADMIN, FS_ADMIN_BIND, &q, mount_bound, m);
		}
		cap_unref(fs);
		c->pending--;
		if (c->failed)
			ctr_maybe_free(c);
		else
			mounts_done(c);
		return;
	}
	mounts_done(c);
	return;
fail:
	rpc_return_error(call, e, "%s", err);
	c->failed = 1;
	ctr_maybe_free(c);
}

/* --- the launcher, the admin object, the service -------------------- */

/* A launcher: the one the admin socket gives may mount this node's
 * folders (local:PATH); one restored from a ref only what its caller
 * brings (refs), so that a ref to it is not a ref to every folder here. */
struct launcher {
	struct cap cap;
	int local;
	int vm; /* computevm */
};

static void launcher_call(struct cap *c, struct rpc_call *call)
{
	if (call->iface == IFACE_COMPUTE_LAUNCHER && call->method == COMPUTE_LAUNCHER_LAUNCH)
		launch(call, ((struct launcher *)c)->local, ((struct launcher *)c)->vm);
	else
		rpc_return_unknown(call, "ComputeLauncher");
}

static void plain_free(struct cap *c)
{
	free(c);
}

static const struct cap_ops launcher_ops = {
	.name = "ComputeLauncher",
	.call = launcher_call,
	.free = plain_free,
};

static struct cap *launcher_new(int local, int vm)
{
	struct launcher *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	cap_init(&l->cap, &launcher_ops);
	l->local = local;
	l->vm = vm;
	return &l->cap;
}

static const struct cap_ops computevm_admin_ops;

static void compute_admin_call(struct cap *cap, struct rpc_call *call)
{
	struct cap *l;
	uint64_t n = 0;

	if (call->iface != IFACE_SERVICE_ADMIN) {
		rpc_return_unknown(call, "compute service");
		return;
	}
	switch (call->method) {
	case COMPUTE_ADMIN_LAUNCHER:
		if (!(l = launcher_new(1, cap->ops == &computevm_admin_ops))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, l);
		return;
	case COMPUTE_ADMIN_ENVIRONMENT: {
		struct msg_rd r;
		uint64_t id;
		struct ctr *c;
		msg_rd_init(&r, &call->params);
		if (msg_get_u64(&r, &id) < 0) {
			rpc_return_error(call, -EINVAL, "environment takes a container's id");
			return;
		}
		for (c = S.ctrs; c && c->id != id; c = c->next)
			;
		if (!c || c->ended || c->failed || !c->procs || c->procs->state != P_RUNNING) {
			rpc_return_error(call, -ENOENT, "no container %llu runs here ('metac "
				      "compute list' shows them)", (unsigned long long)id);
			return;
		}
		if (!(l = handle_new(c, NULL))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, l);
		return;
	}
	case COMPUTE_ADMIN_LIST:
		for (struct ctr *c = S.ctrs; c; c = c->next)
			n++;
		msg_put_u64(&call->results, n);
		for (struct ctr *c = S.ctrs; c; c = c->next) {
			struct proc *p = c->procs;
			msg_put_u64(&call->results, c->id);
			msg_put_str(&call->results, p->cfg.hostname);
			msg_put_str(&call->results, p->cfg.nargs ? p->cfg.args[0] : "");
			msg_put_u64(&call->results, p->pid > 0 ? (uint64_t)p->pid : 0);
			msg_put_str(&call->results, c->failed ? "failed"
						    : c->ended ? "ended"
						    : p->state == P_RUNNING ? "running"
									    : "starting");
		}
		rpc_return(call);
		return;
	}
	rpc_return_unknown(call, "compute service");
}

static const struct cap_ops compute_admin_ops = {
	.name = "compute service",
	.call = compute_admin_call,
	.free = node_obj_free,
};

static struct cap *compute_admin_new(struct node *n)
{
	return node_obj_new(n, &compute_admin_ops);
}

static int compute_restore(struct node *n, const struct ref_record *rec, struct cap **out,
			   char *err, size_t errsz)
{
	if (strcmp(rec->description, "launcher")) {
		snprintf(err, errsz, "the compute service exports only its launcher");
		return -EINVAL;
	}
	if (!(*out = launcher_new(0, 0))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* The daemon is going: so are its containers. */
static void compute_stop(struct node *n)
{
	for (struct ctr *c = S.ctrs; c; c = c->next)
		for (struct proc *p = c->procs; p; p = p->next)
			if (p->helper > 0)
				kill(p->helper, SIGKILL);
}

static const struct node_service compute_service = {
	.name = "compute",
	.restore = compute_restore,
	.admin = compute_admin_new,
	.stop = compute_stop,
};

static const struct cap_ops computevm_admin_ops = {
	.name = "computevm service",
	.call = compute_admin_call,
	.free = plain_free,
};

static struct cap *computevm_admin_new(struct node *n)
{
	struct cap *c = calloc(1, sizeof(*c));
	if (c)
		cap_init(c, &computevm_admin_ops);
	return c;
}

/* computevm: the same containers, each in a VM of its own. */
static const struct node_service computevm_service = {
	.name = "computevm",
	.admin = computevm_admin_new,
};

int compute_service_register(struct node *n)
{
	int e;
	S.node = n;
	if ((e = node_register_service(n, &compute_service)) < 0)
		return e;
	return node_register_service(n, &computevm_service);
}

/* --- metac run ----------------------------------------------------- */

struct run {
	struct admin a;
	struct cap *process, *env;
	int pty;
	int waited, outputs; /* outputs still open */
	int64_t code, sig;
	char why[RPC_MAX_ERRMSG];
	int failed;
};

static void run_output_done(void *arg, int err)
{
	struct run *r = arg;
	r->outputs--;
	if (err && err != -ECONNRESET)
		fprintf(stderr, "metac run: a stream of the process ended with an error: %s\n",
			strerror(-err));
}

static void run_input_done(void *arg, int err)
{
}

static void run_waited(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct run *r = arg;
	struct msg_rd rd;

	r->waited = 1;
	if (!err) {
		msg_rd_init(&rd, res);
		if (msg_get_i64(&rd, &r->code) < 0 || msg_get_i64(&rd, &r->sig) < 0)
			err = -EPROTO, errmsg = "malformed answer to wait";
	}
	if (err) {
		snprintf(r->why, sizeof(r->why), "%s", errmsg);
		r->failed = 1;
	}
}

static void run_signal(struct loop *l, int signo, void *arg)
{
	struct run *r = arg;
	struct msg p;
	struct winsize ws;

	msg_init(&p);
	if (signo == SIGWINCH) {
		if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
			return;
		msg_put_u64(&p, ws.ws_row);
		msg_put_u64(&p, ws.ws_col);
		rpc_call(r->process, IFACE_PROCESS, PROCESS_RESIZE, &p, NULL, NULL);
		return;
	}
	msg_put_u64(&p, (uint64_t)signo);
	rpc_call(r->process, IFACE_PROCESS, PROCESS_KILL, &p, NULL, NULL);
}

static struct termios saved_tio;
static int tio_saved;

static void restore_terminal(void)
{
	if (tio_saved)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tio);
	tio_saved = 0;
}

/* Pipes the process's streams to this process's stdio. */
static int run_attach(struct run *r)
{
	int n = r->pty ? 1 : 3;

	for (int i = 0; i < n; i++) {
		struct msg p, res;
		struct msg_rd rd;
		struct cap *s;
		int rfd, wfd;

		msg_init(&p);
		msg_init(&res);
		msg_put_u64(&p, (uint64_t)i);
		if (admin_call(&r->a, r->process, IFACE_PROCESS, PROCESS_FILE, &p, &res,
			       "cannot reach the process's stdio") < 0) {
			msg_free(&res);
			return -1;
		}
		msg_rd_init(&rd, &res);
		if (msg_get_cap(&rd, &s) < 0) {
			fprintf(stderr, "metac run: the process gave no stream\n");
			msg_free(&res);
			return -1;
		}
		cap_ref(s);
		msg_free(&res);
		/* Each pipe takes its descriptors: copies, so that the
		 * standard ones stay open for messages. */
		if (r->pty || i == 0)
			rfd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
		else
			rfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (r->pty || i > 0)
			wfd = fcntl(i == 2 ? STDERR_FILENO : STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
		else
			wfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (rfd < 0 || wfd < 0) {
			fprintf(stderr, "metac run: %m\n");
			cap_unref(s);
			return -1;
		}
		if (r->pty || i > 0)
			r->outputs++;
		admin_stream_pipe(&r->a, s, 0, rfd, wfd, r->pty || i > 0 ? run_output_done
									: run_input_done, r);
		cap_unref(s);
	}
	return 0;
}

/* Pipes the process's stdio (or terminal) here, passes signals and
 * resizes on, and waits for it: its exit code, 128+N for death by signal
 * N, or EXIT_FAIL if it could not be followed. */
static int run_follow(struct run *r)
{
	struct loop_signal *sigs[4] = { 0 };
	struct msg p;
	int rc = EXIT_FAIL;

	if (run_attach(r) < 0) {
		run_signal(r->a.loop, SIGKILL, r);
		return EXIT_FAIL;
	}
	if (r->pty) {
		struct termios raw;
		if (tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
			tio_saved = 1;
			atexit(restore_terminal);
			raw = saved_tio;
			cfmakeraw(&raw);
			tcsetattr(STDIN_FILENO, TCSADRAIN, &raw);
		}
		sigs[0] = loop_signal_new(r->a.loop, SIGWINCH, run_signal, r);
	} else {
		sigs[0] = loop_signal_new(r->a.loop, SIGINT, run_signal, r);
		sigs[1] = loop_signal_new(r->a.loop, SIGQUIT, run_signal, r);
	}
	sigs[2] = loop_signal_new(r->a.loop, SIGTERM, run_signal, r);
	sigs[3] = loop_signal_new(r->a.loop, SIGHUP, run_signal, r);
	msg_init(&p);
	rpc_call(r->process, IFACE_PROCESS, PROCESS_WAIT, &p, run_waited, r);
	/* Once it has ended, what it wrote comes at once; a background
	 * child left holding its output is not waited for long. */
	uint64_t until = 0;
	while ((!r->waited || r->outputs > 0) && !r->a.err) {
		int wait_ms = -1;
		if (r->waited) {
			uint64_t now = clock_mono_ms();
			if (!until)
				until = now + 2000;
			if (now >= until)
				break;
			wait_ms = (int)(until - now);
		}
		if (loop_run_once(r->a.loop, wait_ms) < 0)
			break;
	}
	restore_terminal();
	if (r->failed || (!r->waited && r->a.err))
		fprintf(stderr, "metac: lost the process: %s\n", r->failed ? r->why : r->a.errmsg);
	else if (r->sig)
		rc = 128 + (int)r->sig;
	else
		rc = (int)(r->code & 0xff);
	for (size_t i = 0; i < 4; i++)
		loop_signal_del(sigs[i]);
	return rc;
}

/* --net=URI[,addr=CIDR][,gw=IP] */
static int put_net(struct msg *m, char *spec)
{
	char *addr = "", *gw = "", *save = NULL, *uri = strtok_r(spec, ",", &save), *o;

	if (!uri)
		return -1;
	while ((o = strtok_r(NULL, ",", &save))) {
		if (!strncmp(o, "addr=", 5))
			addr = o + 5;
		else if (!strncmp(o, "gw=", 3))
			gw = o + 3;
		else
			return -1;
	}
	msg_put_str(m, uri);
	msg_put_str(m, addr);
	msg_put_str(m, gw);
	return 0;
}

/* What run and compute exec say of the process: --pty, --env, --uid,
 * --gid. */
struct proc_opts {
	int pty;
	const char *env[CTR_MAX_ENV];
	size_t nenv;
	unsigned long long uid, gid;
};

/* Takes option c if it is one of those: 1, or 0 if not, or the usage
 * error's exit code (above 1). */
static int proc_opt(const struct applet *self, int c, struct proc_opts *o)
{
	unsigned long long v;
	char *end;

	switch (c) {
	case 't':
		o->pty = 1;
		return 1;
	case 'e':
		if (o->nenv == CTR_MAX_ENV || !strchr(optarg, '='))
			return cli_usage_error(self, "--env K=V");
		o->env[o->nenv++] = optarg;
		return 1;
	case 'u':
	case 'g':
		v = strtoull(optarg, &end, 10);
		if (*end || !*optarg || v >= UINT32_MAX)
			return cli_usage_error(self, "--uid and --gid take numbers");
		*(c == 'u' ? &o->uid : &o->gid) = v;
		return 1;
	}
	return 0;
}

/* The arguments and the environment (with the terminal's TERM). */
static void put_command(struct msg *m, int argc, char **argv, const struct proc_opts *o)
{
	const char *term = o->pty ? getenv("TERM") : NULL;

	msg_put_u64(m, (uint64_t)argc);
	for (int i = 0; i < argc; i++)
		msg_put_str(m, argv[i]);
	msg_put_u64(m, o->nenv + (term ? 1 : 0));
	if (term) {
		char t[128];
		snprintf(t, sizeof(t), "TERM=%s", term);
		msg_put_str(m, t);
	}
	for (size_t i = 0; i < o->nenv; i++)
		msg_put_str(m, o->env[i]);
}

/* User, group, and the terminal with its size. */
static void put_identity(struct msg *m, const struct proc_opts *o)
{
	struct winsize ws = { 0 };

	msg_put_u64(m, o->uid);
	msg_put_u64(m, o->gid);
	msg_put_bool(m, o->pty);
	if (o->pty)
		ioctl(STDIN_FILENO, TIOCGWINSZ, &ws);
	msg_put_u64(m, ws.ws_row);
	msg_put_u64(m, ws.ws_col);
}

int run_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mount", required_argument, NULL, 'm' },
		{ "net", required_argument, NULL, 'n' },
		{ "memory", required_argument, NULL, 'M' },
		{ "pty", no_argument, NULL, 't' },
		{ "env", required_argument, NULL, 'e' },
		{ "hostname", required_argument, NULL, 'h' },
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ "service", required_argument, NULL, 's' },
		{ "node", required_argument, NULL, 'N' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const struct applet *self = applet_find("run");
	char *mounts[CTR_MAX_MOUNTS + 1], *nets[CTR_MAX_NETS];
	char exported[CTR_MAX_MOUNTS + 1][REF_MAX_LEN];
	size_t nm = 0, nn = 0, nexp = 0;
	const char *sock = NULL, *service = "compute", *node = NULL, *hostname = "";
	unsigned long long memory = 0;
	struct proc_opts po = { 0 };
	struct run r = { 0 };
	struct cap *launcher = NULL, *admin = NULL;
	struct msg p, res;
	int c, rc = EXIT_FAIL;
	char *end;

	msg_init(&res);
	optind = 1;
	while ((c = getopt_long(argc, argv, "+te:", opts, NULL)) != -1) {
		int took = proc_opt(self, c, &po);
		if (took > 1)
			return took;
		if (took)
			continue;
		switch (c) {
		case 'm':
			if (nm == CTR_MAX_MOUNTS + 1 || optarg[0] != '/' || !strchr(optarg, '='))
				return cli_usage_error(self, "--mount=PATH=URI, PATH absolute");
			mounts[nm++] = optarg;
			break;
		case 'n':
			if (nn == CTR_MAX_NETS)
				return cli_usage_error(self, "at most %d --net", CTR_MAX_NETS);
			nets[nn++] = optarg;
			break;
		case 'M':
			memory = strtoull(optarg, &end, 10);
			if (*end || !memory || memory > (1ull << 30))
				return cli_usage_error(self, "--memory takes MiB, a number above 0");
			break;
		case 'h': hostname = optarg; break;
		case 's': service = optarg; break;
		case 'N': node = optarg; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	r.pty = po.pty;
	if (optind >= argc)
		return cli_usage_error(self, "no command to run");
	if (argc - optind > CTR_MAX_ARGS)
		return cli_usage_error(self, "at most %d arguments", CTR_MAX_ARGS);
	if (r.pty && !isatty(STDIN_FILENO))
		return cli_usage_error(self, "--pty needs a terminal on stdin");
	if (admin_open(&r.a, admin_socket_path(sock)) < 0)
		goto out;
	/* The launcher: another node's (a ref), or a service of this one. */
	if (node) {
		if (admin_restore(&r.a, node, &launcher) < 0)
			goto out;
	} else {
		if (admin_service(&r.a, service, &admin) < 0)
			goto out;
		msg_init(&p);
		if (admin_call_cap(&r.a, admin, IFACE_SERVICE_ADMIN, COMPUTE_ADMIN_LAUNCHER, &p,
				   &launcher, "the service launches nothing") < 0)
			goto out;
	}
	msg_init(&p);
	put_command(&p, argc - optind, argv + optind, &po);
	msg_put_u64(&p, nm);
	for (size_t i = 0; i < nm; i++) {
		char *eq = strchr(mounts[i], '='), target[PATH_MAX], abs[PATH_MAX];
		const char *src = eq + 1, *dir = cli_local_path(src);
		snprintf(target, sizeof(target), "%.*s", (int)(eq - mounts[i]), mounts[i]);
		if (dir && !realpath(dir, abs)) {
			fprintf(stderr, "metac run: %s (for %s): %m\n", dir, target);
			goto out_exports;
		}
		if (dir && node) {
			/* The other node reaches this folder through a ref that
			 * lives as long as this run. */
			char desc[PATH_MAX + 16];
			snprintf(desc, sizeof(desc), "passthrough:%s", abs);
			if (admin_export(&r.a, "fs", desc, 0, 0, exported[nexp],
					 sizeof(exported[nexp])) < 0)
				goto out_exports;
			src = exported[nexp++];
		} else if (dir) {
			char local[PATH_MAX + 8];
			snprintf(local, sizeof(local), "local:%s", abs);
			msg_put_str(&p, target);
			msg_put_str(&p, local);
			continue;
		}
		msg_put_str(&p, target);
		msg_put_str(&p, src);
	}
	msg_put_u64(&p, nn);
	for (size_t i = 0; i < nn; i++)
		if (put_net(&p, nets[i]) < 0) {
			msg_free(&p);
			rc = cli_usage_error(self, "--net=URI[,addr=CIDR][,gw=IP]");
			goto out_exports;
		}
	msg_put_u64(&p, memory);
	put_identity(&p, &po);
	msg_put_str(&p, hostname);
	if (admin_call(&r.a, launcher, IFACE_COMPUTE_LAUNCHER, COMPUTE_LAUNCHER_LAUNCH, &p, &res,
		       "cannot run the container") < 0)
		goto out_exports;
	{
		struct msg_rd rd;
		struct cap *pc, *ec;
		msg_rd_init(&rd, &res);
		if (msg_get_cap(&rd, &pc) < 0 || msg_get_cap(&rd, &ec) < 0) {
			fprintf(stderr, "metac run: the launcher answered no process\n");
			goto out_exports;
		}
		r.process = cap_ref(pc);
		r.env = cap_ref(ec);
	}
	rc = run_follow(&r);
out_exports:
	for (size_t i = 0; i < nexp; i++) {
		msg_init(&p);
		msg_put_str(&p, exported[i]);
		struct msg rr;
		msg_init(&rr);
		admin_call(&r.a, NULL, IFACE_NODE_ADMIN, NODE_ADMIN_REF_REVOKE, &p, &rr,
			   "cannot revoke a ref made for the run");
		msg_free(&rr);
	}
out:
	msg_free(&res);
	cap_unref(r.process);
	cap_unref(r.env);
	cap_unref(launcher);
	cap_unref(admin);
	admin_close(&r.a);
	return rc;
}

/* --- metac compute ------------------------------------------------- */

static int compute_export(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	char ref[REF_MAX_LEN];
	int c, persistent = 0, r = EXIT_FAIL;
	struct admin a;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pa:", opts, NULL)) != -1) {
		if (c == 'p')
			persistent = 1;
		else if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc)
		return cli_usage_error(self, "compute export takes no arguments");
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, "compute", "launcher", persistent, 0, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

static int compute_list(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	int c, json = 0, r = EXIT_FAIL;
	struct admin a;
	struct cap *admin = NULL;
	struct msg p, res;
	struct msg_rd rd;
	uint64_t n, id, pid;
	char host[CTR_HOSTNAME_MAX + 1], cmd[CTR_MAX_STR + 1], state[32];

	optind = 1;
	while ((c = getopt_long(argc, argv, "ja:", opts, NULL)) != -1) {
		if (c == 'j')
			json = 1;
		else if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc)
		return cli_usage_error(self, "compute list takes no arguments");
	msg_init(&res);
	if (admin_open_service(&a, sock, "compute", &admin) < 0)
		goto out;
	msg_init(&p);
	if (admin_call(&a, admin, IFACE_SERVICE_ADMIN, COMPUTE_ADMIN_LIST, &p, &res,
		       "cannot list containers") < 0)
		goto out;
	msg_rd_init(&rd, &res);
	if (msg_get_u64(&rd, &n) < 0)
		goto bad;
	if (json)
		printf("[");
	else
		printf("%-5s %-16s %-8s %-9s %s\n", "ID", "HOSTNAME", "PID", "STATE", "COMMAND");
	for (uint64_t i = 0; i < n; i++) {
		if (msg_get_u64(&rd, &id) < 0 || msg_get_str(&rd, host, sizeof(host)) < 0 ||
		    msg_get_str(&rd, cmd, sizeof(cmd)) < 0 || msg_get_u64(&rd, &pid) < 0 ||
		    msg_get_str(&rd, state, sizeof(state)) < 0)
			goto bad;
		if (json) {
			printf("%s{\"id\":%llu,\"hostname\":", i ? "," : "", (unsigned long long)id);
			cli_json_str(stdout, host);
			printf(",\"command\":");
			cli_json_str(stdout, cmd);
			printf(",\"pid\":%llu,\"state\":", (unsigned long long)pid);
			cli_json_str(stdout, state);
			printf("}");
		} else {
			printf("%-5llu %-16s %-8llu %-9s %s\n", (unsigned long long)id, host,
			       (unsigned long long)pid, state, cmd);
		}
	}
	if (json)
		printf("]\n");
	r = EXIT_OK;
	goto out;
bad:
	fprintf(stderr, "metac compute: the daemon's list is malformed\n");
out:
	msg_free(&res);
	cap_unref(admin);
	admin_close(&a);
	return r;
}

/* metac compute exec: one more process in a running container. */
static int compute_exec(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pty", no_argument, NULL, 't' },
		{ "env", required_argument, NULL, 'e' },
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	unsigned long long id;
	struct proc_opts po = { 0 };
	struct run r = { 0 };
	struct cap *admin = NULL, *envcap = NULL;
	struct msg p, res;
	int c, rc = EXIT_FAIL;
	char *end;

	msg_init(&res);
	optind = 1;
	while ((c = getopt_long(argc, argv, "+te:", opts, NULL)) != -1) {
		int took = proc_opt(self, c, &po);
		if (took > 1)
			return took;
		if (took)
			continue;
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	r.pty = po.pty;
	if (argc - optind < 2)
		return cli_usage_error(self, "compute exec takes a container's id and a command");
	id = strtoull(argv[optind], &end, 10);
	if (*end || !*argv[optind])
		return cli_usage_error(self, "'%s' is not a container's id", argv[optind]);
	optind++;
	if (argc - optind > CTR_MAX_ARGS)
		return cli_usage_error(self, "at most %d arguments", CTR_MAX_ARGS);
	if (r.pty && !isatty(STDIN_FILENO))
		return cli_usage_error(self, "--pty needs a terminal on stdin");
	if (admin_open_service(&r.a, sock, "compute", &admin) < 0)
		goto out;
	msg_init(&p);
	msg_put_u64(&p, id);
	if (admin_call_cap(&r.a, admin, IFACE_SERVICE_ADMIN, COMPUTE_ADMIN_ENVIRONMENT, &p,
			   &envcap, "cannot reach the container") < 0)
		goto out;
	msg_init(&p);
	put_command(&p, argc - optind, argv + optind, &po);
	put_identity(&p, &po);
	if (admin_call_cap(&r.a, envcap, IFACE_PROCESS_ENVIRONMENT, PROCESS_ENV_LAUNCH_PROCESS, &p,
			   &r.process, "cannot run it in the container") < 0)
		goto out;
	rc = run_follow(&r);
out:
	msg_free(&res);
	cap_unref(r.process);
	cap_unref(envcap);
	cap_unref(admin);
	admin_close(&r.a);
	return rc;
}

static int compute_container(const struct applet *self, int argc, char **argv)
{
	/* argv[1]: the daemon's pid (only the daemon starts this). */
	if (argc != 2 || atoi(argv[1]) <= 0)
		return cli_usage_error(self, "_container is started by the daemon");
	return ctr_helper_main((pid_t)atoi(argv[1]));
}

int compute_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", compute_export },
		{ "list", compute_list },
		{ "exec", compute_exec },
		{ "_container", compute_container },
		{ 0 }
	};
	return cli_dispatch(applet_find("compute"), cmds, argc, argv);
}
