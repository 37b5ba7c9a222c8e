/*
 * The vm service: VMLauncher and VM (the MetaContainer paper's virtual
 * machines), qemu-system-x86_64 underneath, and the vm applet.
 *   metac vm start [--memory MiB] [--vcpu N] [--drive uri=URI[,driver=virtio|ide][,ro]]...
 *                  [--net URI[,model=virtio|e1000]]... [--kernel URI --initrd URI
 *                  --cmdline STR] [--serial stdio|REF] [--name NAME]
 *   metac vm list [--json]
 *   metac vm stop ID
 *
 * What qemu gets:
 *   - drives: local files directly; a ref to another node's disk (a File,
 *     opened as a BlockDevice) through an NBD endpoint on a unix socket
 *     in the VM's directory, each connection relayed to the disk's NBD
 *     stream;
 *   - networks: a TAP device for qemu and the tunnel's own, bridged: the
 *     tunnel end is an L2Interface of this node bound to the remote one
 *     (as `net bind` does), so the guest is on the remote segment; the
 *     guest is told the tunnel's MTU (virtio-net host_mtu);
 *   - serial ports: one end of a socket pair each (-chardev socket,fd=),
 *     the other end a Stream (VM.serialPort) or bound to a remote one;
 *   - kernel and initrd: local files, or Files fetched from refs into the
 *     VM's directory first.
 * KVM when /dev/kvm is there, TCG otherwise. A VM lives in the daemon
 * until it powers off or is destroyed (`metac vm stop`), whoever holds
 * its capabilities.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "lib/netlink.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/agent.h"
#include "svc/applets.h"
#include "svc/net.h"
#include "svc/services.h"
#include "svc/stream.h"
#include "vxlan/tunnel.h"
#include "wire/conn.h"

#define VM_MAX_DRIVES 8
#define VM_MAX_NETS 4
#define VM_MAX_SERIAL 4
#define VM_MAX_PORTS 48
#define VM_MAX_WAITERS 8
#define VM_MAX_CMDLINE 2048
#define VM_START_MS 700 /* qemu that lives this long has started */
#define NET_VNI 1       /* as svc/net.c */
#define QEMU "qemu-system-x86_64"

enum vm_state { VM_PREPARING, VM_STARTING, VM_RUNNING, VM_ENDED };

struct vm;

struct vm_drive {
	struct vm *vm;
	char *uri;
	int ide, ro;
	char path[PATH_MAX]; /* the file, or the NBD socket */
	struct cap *nbd;     /* the remote disk's NBD stream */
	int lfd;
	struct loop_watch *lw;
};

struct vm_net {
	char *uri;
	int e1000;
	struct cap *l2, *holder;
	int qfd; /* qemu's TAP */
	char qtap[IFNAMSIZ], ttap[IFNAMSIZ], br[IFNAMSIZ];
	unsigned mtu;
};

struct vm_serial {
	char *uri;
	int fd, qfd; /* this end, qemu's end */
	struct cap *holder;
};

struct vm_port {
	char name[32];
	int fd, qfd;
};

struct vm {
	struct vm *next;
	struct node *node;
	unsigned id;
	uint16_t tag; /* makes device names unique on the host */
	char name[64];
	char dir[PATH_MAX - 64];
	enum vm_state state;
	int handles, pending, failed;
	uint64_t memory_mib, vcpus;
	char kernel[PATH_MAX], initrd[PATH_MAX];
	char *kernel_uri, *initrd_uri;
	char cmdline[VM_MAX_CMDLINE];
	struct vm_drive drives[VM_MAX_DRIVES];
	size_t ndrives;
	struct vm_net nets[VM_MAX_NETS];
	size_t nnets;
	struct vm_serial serial[VM_MAX_SERIAL];
	size_t nserial;
	struct vm_port ports[VM_MAX_PORTS];
	size_t nports;
	pid_t pid;
	struct loop_child *child;
	struct loop_timer *start_timer;
	int status;
	struct rpc_call *launch;
	struct rpc_call *waiters[VM_MAX_WAITERS];
	size_t nwaiters;
};

static struct {
	struct node *node;
	struct vm *vms;
	unsigned next_id;
} S;

/* --- the end of a VM ----------------------------------------------- */

static void vm_cleanup(struct vm *v)
{
	struct nl *nl = NULL;

	for (size_t i = 0; i < v->ndrives; i++) {
		struct vm_drive *d = &v->drives[i];
		if (d->lw)
			loop_watch_del(d->lw);
		d->lw = NULL;
		if (d->lfd >= 0) {
			close(d->lfd);
			unlink(d->path);
		}
		d->lfd = -1;
		cap_unref(d->nbd);
		d->nbd = NULL;
	}
	for (size_t i = 0; i < v->nnets; i++) {
		struct vm_net *x = &v->nets[i];
		cap_unref(x->holder);
		cap_unref(x->l2);
		x->holder = x->l2 = NULL;
		if (x->qfd >= 0)
			close(x->qfd);
		x->qfd = -1;
		if (*x->br && (nl || nl_open(&nl) == 0))
			nl_link_delete(nl, x->br);
		*x->br = 0;
	}
	if (nl)
		nl_close(nl);
	for (size_t i = 0; i < v->nserial; i++) {
		struct vm_serial *s = &v->serial[i];
		cap_unref(s->holder);
		s->holder = NULL;
		if (s->fd >= 0)
			close(s->fd);
		if (s->qfd >= 0)
			close(s->qfd);
		s->fd = s->qfd = -1;
	}
	for (size_t i = 0; i < v->nports; i++) {
		if (v->ports[i].fd >= 0)
			close(v->ports[i].fd);
		if (v->ports[i].qfd >= 0)
			close(v->ports[i].qfd);
		v->ports[i].fd = v->ports[i].qfd = -1;
	}
	/* Fetched kernels and initrds go; local files are not ours. */
	if (v->kernel_uri && !strncmp(v->kernel_uri, "ref://", 6))
		unlink(v->kernel);
	if (v->initrd_uri && !strncmp(v->initrd_uri, "ref://", 6))
		unlink(v->initrd);
}

static void vm_maybe_free(struct vm *v)
{
	if (v->handles > 0 || v->pending > 0 || v->child || v->launch)
		return;
	vm_cleanup(v);
	for (struct vm **pp = &S.vms; *pp; pp = &(*pp)->next)
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	loop_timer_del(v->start_timer);
	for (size_t i = 0; i < v->ndrives; i++)
		free(v->drives[i].uri);
	for (size_t i = 0; i < v->nnets; i++)
		free(v->nets[i].uri);
	for (size_t i = 0; i < v->nserial; i++)
		free(v->serial[i].uri);
	free(v->kernel_uri);
	free(v->initrd_uri);
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/qemu.log", v->dir);
	unlink(log);
	rmdir(v->dir);
	free(v);
}

/* The last line qemu wrote (why it stopped), or "". */
static void qemu_last_words(struct vm *v, char *out, size_t outsz)
{
	char path[PATH_MAX], buf[2048];
	int fd;
	ssize_t n;

	*out = 0;
	snprintf(path, sizeof(path), "%s/qemu.log", v->dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	lseek(fd, end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = 0;
	char *line = strrchr(buf, '\n');
	snprintf(out, outsz, "%.250s", line ? line + 1 : buf);
}

static void vm_fail(struct vm *v, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Starting v failed: the launcher's caller hears why. */
static void vm_fail(struct vm *v, int err, const char *fmt, ...)
{
	char why[RPC_MAX_ERRMSG];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (v->launch) {
		rpc_return_error(v->launch, err, "%s", why);
		v->launch = NULL;
	}
	if (!v->failed)
		log_info("vm %u: %s", v->id, why);
	v->failed = 1;
	if (v->child && v->pid > 0)
		kill(v->pid, SIGKILL);
	vm_cleanup(v);
	vm_maybe_free(v);
}

static void qemu_exited(struct loop *l, pid_t pid, int status, void *arg)
{
	struct vm *v = arg;
	char why[300];

	v->child = NULL;
	v->state = VM_ENDED;
	v->status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
	if (v->launch) {
		/* No one holds it yet: vm_fail frees it. */
		qemu_last_words(v, why, sizeof(why));
		vm_fail(v, -EIO, "qemu ended at once (status %d)%s%s", v->status,
			*why ? ": " : "", why);
		return;
	}
	log_info("vm %u (%s) ended, status %d", v->id, v->name, v->status);
	/* Held while the waiters hear: one may drop the last handle. */
	v->handles++;
	for (size_t i = 0; i < v->nwaiters; i++) {
		msg_put_i64(&v->waiters[i]->results, v->status);
		rpc_return(v->waiters[i]);
	}
	v->nwaiters = 0;
	vm_cleanup(v);
	v->handles--;
	vm_maybe_free(v);
}

/* --- capabilities -------------------------------------------------- */

struct vm_handle {
	struct cap cap;
	struct vm *vm;
};

static void vm_handle_call(struct cap *c, struct rpc_call *call);

static void vm_handle_free(struct cap *c)
{
	struct vm *v = ((struct vm_handle *)c)->vm;
	free(c);
	v->handles--;
	vm_maybe_free(v);
}

static const struct cap_ops vm_handle_ops = {
	.name = "VM",
	.call = vm_handle_call,
	.free = vm_handle_free,
};

static struct cap *vm_handle_new(struct vm *v)
{
	struct vm_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	cap_init(&h->cap, &vm_handle_ops);
	h->vm = v;
	v->handles++;
	return &h->cap;
}

static void vm_handle_call(struct cap *c, struct rpc_call *call)
{
	struct vm *v = ((struct vm_handle *)c)->vm;
	struct msg_rd r;
	uint64_t i;
	struct cap *s;

	if (call->iface != IFACE_VM) {
		rpc_return_unknown(call, "VM");
		return;
	}
	msg_rd_init(&r, &call->params);
	switch (call->method) {
	case VM_DESTROY:
		if (v->state != VM_ENDED && v->pid > 0 && v->child)
			kill(v->pid, SIGKILL);
		rpc_return(call);
		return;
	case VM_SERIAL_PORT:
		if (msg_get_u64(&r, &i) < 0 || i >= v->nserial) {
			rpc_return_error(call, -ENOENT, "the VM has %zu serial ports", v->nserial);
			return;
		}
		if (v->serial[i].fd < 0 || v->serial[i].holder) {
			rpc_return_error(call, -EBUSY, "serial port %llu is taken",
					 (unsigned long long)i);
			return;
		}
		if (!(s = fd_stream_new(v->node, v->serial[i].fd, NODE_PIPE_NO_SHUTDOWN, "vm serial port"))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		v->serial[i].fd = -1;
		rpc_return_cap(call, s);
		return;
	case VM_PORT: {
		int eof = 0;
		if (msg_get_u64(&r, &i) < 0 || i >= v->nports || msg_get_bool(&r, &eof) < 0) {
			rpc_return_error(call, -ENOENT, "the VM has %zu ports", v->nports);
			return;
		}
		if (v->ports[i].fd < 0) {
			rpc_return_error(call, -EBUSY, "port %llu is taken", (unsigned long long)i);
			return;
		}
		if (!(s = fd_stream_new(v->node, v->ports[i].fd, eof ? 0 : NODE_PIPE_NO_SHUTDOWN,
					"vm port"))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		v->ports[i].fd = -1;
		rpc_return_cap(call, s);
		return;
	}
	case VM_NETWORK:
		if (msg_get_u64(&r, &i) < 0 || i >= v->nnets || !v->nets[i].l2) {
			rpc_return_error(call, -ENOENT, "the VM has no network %llu",
					 (unsigned long long)i);
			return;
		}
		rpc_return_cap(call, cap_ref(v->nets[i].l2));
		return;
	case VM_WAIT:
		if (v->state == VM_ENDED) {
			msg_put_i64(&call->results, v->status);
			rpc_return(call);
		} else if (v->nwaiters == VM_MAX_WAITERS) {
			rpc_return_error(call, -EBUSY, "too many waiting on this VM");
		} else {
			v->waiters[v->nwaiters++] = call;
		}
		return;
	}
	rpc_return_unknown(call, "VM");
}

/* --- qemu ---------------------------------------------------------- */

/* A path as a qemu option value: commas doubled. */
static void qemu_escape(char *out, size_t outsz, const char *s)
{
	size_t o = 0;
	for (; *s && o + 2 < outsz; s++) {
		if (*s == ',')
			out[o++] = ',';
		out[o++] = *s;
	}
	out[o] = 0;
}

struct argv_b {
	char *v[160];
	size_t n;
	int overflow;
};

static void arg(struct argv_b *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void arg(struct argv_b *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (a->n + 1 >= sizeof(a->v) / sizeof(a->v[0])) {
		a->overflow = 1;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		a->overflow = 1;
	else
		a->v[a->n++] = s;
	va_end(ap);
}

static void start_timer_fired(struct loop *l, struct loop_timer *t, void *arg)
{
	struct vm *v = arg;
	struct cap *h;

	if (!v->launch || v->state != VM_STARTING)
		return;
	v->state = VM_RUNNING;
	if (!(h = vm_handle_new(v))) {
		vm_fail(v, -ENOMEM, "out of memory");
		return;
	}
	log_info("vm %u (%s) runs: qemu pid %d", v->id, v->name, (int)v->pid);
	msg_put_cap(&v->launch->results, h);
	cap_unref(h);
	msg_put_u64(&v->launch->results, v->id);
	rpc_return(v->launch);
	v->launch = NULL;
}

static void vm_spawn(struct vm *v)
{
	struct argv_b a = { 0 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;
	char esc[2 * PATH_MAX], log[PATH_MAX];
	int next_fd = 10, e;

	if (v->failed)
		return;
	arg(&a, QEMU);
	arg(&a, "-nodefaults");
	/* qemu's own seccomp filter: it handles what the guest does, so it
	 * may not gain privileges, start programs or change its scheduling;
	 * everything it needs (drives, TAP and serial descriptors) it holds
	 * before the guest runs. */
	arg(&a, "-sandbox");
	arg(&a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
	arg(&a, "-no-user-config");
	arg(&a, "-display");
	arg(&a, "none");
	arg(&a, "-no-reboot");
	arg(&a, "-name");
	arg(&a, "%s", v->name);
	arg(&a, "-m");
	arg(&a, "%llu", (unsigned long long)v->memory_mib);
	arg(&a, "-smp");
	arg(&a, "%llu", (unsigned long long)v->vcpus);
	if (access("/dev/kvm", R_OK | W_OK) == 0) {
		arg(&a, "-accel");
		arg(&a, "kvm");
		arg(&a, "-cpu");
		arg(&a, "host");
	} else {
		arg(&a, "-accel");
		arg(&a, "tcg");
	}
	if (*v->kernel) {
		arg(&a, "-kernel");
		arg(&a, "%s", v->kernel);
		if (*v->initrd) {
			arg(&a, "-initrd");
			arg(&a, "%s", v->initrd);
		}
		arg(&a, "-append");
		arg(&a, "%s", v->cmdline);
	}
	for (size_t i = 0; i < v->ndrives; i++) {
		struct vm_drive *d = &v->drives[i];
		qemu_escape(esc, sizeof(esc), d->path);
		arg(&a, "-drive");
		if (d->nbd)
			arg(&a, "driver=raw,file.driver=nbd,file.server.type=unix,"
				"file.server.path=%s,if=%s,cache=none%s", esc, d->ide ? "ide" : "virtio",
			    d->ro ? ",readonly=on" : "");
		else
			arg(&a, "driver=raw,file.driver=file,file.filename=%s,if=%s%s", esc,
			    d->ide ? "ide" : "virtio", d->ro ? ",readonly=on" : "");
	}
	posix_spawn_file_actions_init(&fa);
	for (size_t i = 0; i < v->nnets; i++) {
		struct vm_net *x = &v->nets[i];
		posix_spawn_file_actions_adddup2(&fa, x->qfd, next_fd);
		arg(&a, "-netdev");
		arg(&a, "tap,id=n%zu,fd=%d,vhost=off", i, next_fd++);
		arg(&a, "-device");
		if (x->e1000)
			arg(&a, "e1000,netdev=n%zu", i);
		else
			arg(&a, "virtio-net-pci,netdev=n%zu,host_mtu=%u", i, x->mtu);
	}
	for (size_t i = 0; i < v->nserial; i++) {
		posix_spawn_file_actions_adddup2(&fa, v->serial[i].qfd, next_fd);
		arg(&a, "-chardev");
		arg(&a, "socket,id=s%zu,fd=%d", i, next_fd++);
		arg(&a, "-serial");
		arg(&a, "chardev:s%zu", i);
	}
	if (v->nports) {
		arg(&a, "-device");
		arg(&a, "virtio-serial-pci,id=vs0,max_ports=%d", VM_MAX_PORTS + 1);
	}
	for (size_t i = 0; i < v->nports; i++) {
		posix_spawn_file_actions_adddup2(&fa, v->ports[i].qfd, next_fd);
		arg(&a, "-chardev");
		arg(&a, "socket,id=p%zu,fd=%d", i, next_fd++);
		arg(&a, "-device");
		arg(&a, "virtserialport,bus=vs0.0,chardev=p%zu,name=%s", i, v->ports[i].name);
	}
	snprintf(log, sizeof(log), "%s/qemu.log", v->dir);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	a.v[a.n] = NULL;
	e = a.overflow ? E2BIG : posix_spawnp(&v->pid, QEMU, &fa, &attr, a.v, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	for (size_t i = 0; i < a.n; i++)
		free(a.v[i]);
	if (e) {
		vm_fail(v, -e, e == ENOENT ? QEMU " is not installed (Debian package "
			"qemu-system-x86)" : "cannot start " QEMU ": %s", strerror(e));
		return;
	}
	/* qemu holds its ends now. */
	for (size_t i = 0; i < v->nnets; i++) {
		close(v->nets[i].qfd);
		v->nets[i].qfd = -1;
	}
	for (size_t i = 0; i < v->nserial; i++) {
		close(v->serial[i].qfd);
		v->serial[i].qfd = -1;
	}
	for (size_t i = 0; i < v->nports; i++) {
		close(v->ports[i].qfd);
		v->ports[i].qfd = -1;
	}
	v->state = VM_STARTING;
	v->child = loop_child_watch(node_loop(v->node), v->pid, qemu_exited, v);
	v->start_timer = loop_timer_new(node_loop(v->node), start_timer_fired, v);
	if (!v->child || !v->start_timer || loop_timer_arm(v->start_timer, VM_START_MS, 0) < 0) {
		kill(v->pid, SIGKILL);
		vm_fail(v, -ENOMEM, "out of memory");
	}
}

static void prepared(struct vm *v)
{
	if (--v->pending == 0 && !v->failed)
		vm_spawn(v);
	else
		vm_maybe_free(v);
}

/* --- getting the resources ----------------------------------------- */

/* A step of preparing one resource: which VM, which resource. */
struct step {
	struct vm *vm;
	int kind; /* 'k' kernel, 'i' initrd, 'd' drive, 'n' net, 's' serial */
	size_t i;
};

static struct step *step_new(struct vm *v, int kind, size_t i)
{
	struct step *s = calloc(1, sizeof(*s));
	if (s) {
		s->vm = v;
		s->kind = kind;
		s->i = i;
		v->pending++;
	}
	return s;
}

/* The step is over (err 0: done). */
static void step_end(struct step *s, int err, const char *why)
{
	struct vm *v = s->vm;
	static const char *const what[] = { ['k'] = "the kernel", ['i'] = "the initrd",
					    ['d'] = "drive", ['n'] = "network", ['s'] = "serial port" };
	if (err && !v->failed) {
		if (s->kind == 'd' || s->kind == 'n' || s->kind == 's')
			vm_fail(v, err, "%s %zu: %s", what[s->kind], s->i, why);
		else
			vm_fail(v, err, "%s: %s", what[s->kind], why);
	}
	free(s);
	prepared(v);
}

static void fetched(void *arg, int err)
{
	step_end(arg, err, err ? strerror(-err) : NULL);
}

static void fetch_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	struct step *s = arg;
	struct vm *v = s->vm;
	const char *path = s->kind == 'k' ? v->kernel : v->initrd;
	int in = -1, out = -1, e;

	if (!wc) {
		step_end(s, err, why);
		return;
	}
	if (v->failed) {
		wire_conn_close(wc);
		step_end(s, 0, NULL);
		return;
	}
	if ((in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0 ||
	    (out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
		e = -errno;
		if (in >= 0)
			close(in);
		wire_conn_close(wc);
		step_end(s, e, "cannot write it here");
		return;
	}
	if ((e = node_pipe_fds(wc, in, out, fetched, s)) < 0) {
		close(in);
		close(out);
		wire_conn_close(wc);
		step_end(s, e, "cannot fetch it");
	}
}

static void fetch_streamed(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct msg_rd r;
	struct cap *st;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &st) < 0)
			err = -EPROTO, errmsg = "no stream";
	}
	if (err || s->vm->failed) {
		step_end(s, err, errmsg);
		return;
	}
	node_stream_open(s->vm->node, st, fetch_opened, s);
}

/* The NBD endpoint of a drive: each connection qemu makes is relayed to
 * a new data connection of the disk's NBD stream. */
static void nbd_relay_opened(void *arg, struct wire_conn *wc, int err, const char *why)
{
	int fd = (int)(intptr_t)arg, e;

	if (!wc) {
		log_warn("vm: a drive's disk cannot be reached: %s", why);
		close(fd);
		return;
	}
	if ((e = node_pipe_fds(wc, fd, fd, NULL, NULL)) < 0) {
		close(fd);
		wire_conn_close(wc);
	}
}

static void nbd_accept(struct loop *l, int lfd, uint32_t ev, void *arg)
{
	struct vm_drive *d = arg;
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	if (!d->nbd) {
		close(fd);
		return;
	}
	node_stream_open(d->vm->node, d->nbd, nbd_relay_opened, (void *)(intptr_t)fd);
}

static int nbd_listen(struct vm *v, struct vm_drive *d, char *why, size_t whysz)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	snprintf(d->path, sizeof(d->path), "%s/d%zu.sock", v->dir, (size_t)(d - v->drives));
	if (strlen(d->path) >= sizeof(sa.sun_path)) {
		snprintf(why, whysz, "the state directory's path is too long for a socket");
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, d->path, strlen(d->path) + 1);
	unlink(d->path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(d->path, 0600) < 0 ||
	    listen(fd, 16) < 0) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		snprintf(why, whysz, "cannot listen on %s: %s", d->path, strerror(-e));
		return e;
	}
	d->lfd = fd;
	if (!(d->lw = loop_watch_fd(node_loop(v->node), fd, EPOLLIN, nbd_accept, d))) {
		snprintf(why, whysz, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void drive_streamed(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct vm_drive *d = &s->vm->drives[s->i];
	struct msg_rd r;
	struct cap *st;
	char why[300];

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &st) < 0)
			err = -EPROTO, errmsg = "no NBD stream";
	}
	if (err || s->vm->failed) {
		step_end(s, err, errmsg);
		return;
	}
	d->nbd = cap_ref(st);
	err = nbd_listen(s->vm, d, why, sizeof(why));
	step_end(s, err, why);
}

static void drive_opened(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct msg_rd r;
	struct cap *blk;
	struct msg p;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &blk) < 0)
			err = -EPROTO, errmsg = "not a disk";
	}
	if (err || s->vm->failed) {
		step_end(s, err, errmsg);
		return;
	}
	msg_init(&p);
	rpc_call(blk, IFACE_BLOCK_DEVICE, BLOCK_DEVICE_NBD_STREAM, &p, drive_streamed, s);
}

static void net_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct vm_net *x = &s->vm->nets[s->i];
	struct msg_rd r;
	struct cap *h;
	struct nl *nl;
	struct nl_link link;
	int e;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &h) < 0)
			err = -EPROTO, errmsg = "bindTo answered no tunnel";
	}
	if (err || s->vm->failed) {
		step_end(s, err, errmsg);
		return;
	}
	x->holder = cap_ref(h);
	/* qemu's TAP and the tunnel's, one bridge. */
	if ((e = nl_open(&nl)) < 0) {
		step_end(s, e, "netlink");
		return;
	}
	x->mtu = nl_link_get(nl, x->ttap, &link) == 0 && link.mtu ? link.mtu : 1500;
	snprintf(x->br, sizeof(x->br), "mv%04xb%zu", s->vm->tag, s->i);
	if ((e = nl_link_add_bridge(nl, x->br)) < 0 || (e = nl_link_set_master(nl, x->qtap, x->br)) < 0 ||
	    (e = nl_link_set_master(nl, x->ttap, x->br)) < 0 ||
	    (e = nl_link_set_mtu(nl, x->qtap, x->mtu)) < 0 || (e = nl_link_set_up(nl, x->qtap, 1)) < 0 ||
	    (e = nl_link_set_up(nl, x->ttap, 1)) < 0 || (e = nl_link_set_up(nl, x->br, 1)) < 0) {
		char why[300];
		snprintf(why, sizeof(why), "cannot bridge %s and %s: %s", x->qtap, x->ttap,
			 nl_error(nl));
		nl_close(nl);
		step_end(s, e, why);
		return;
	}
	nl_close(nl);
	step_end(s, 0, NULL);
}

static void net_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct vm *v = s->vm;
	struct vm_net *x = &v->nets[s->i];
	struct msg_rd r;
	struct cap *remote;
	struct msg p;
	char why[300], got[IFNAMSIZ];
	int self;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &remote) < 0)
			err = -EPROTO, errmsg = "the ref restored to nothing";
	}
	if (err || v->failed) {
		step_end(s, err, errmsg);
		return;
	}
	snprintf(x->qtap, sizeof(x->qtap), "mv%04xq%zu", v->tag, s->i);
	snprintf(x->ttap, sizeof(x->ttap), "mv%04xt%zu", v->tag, s->i);
	if ((x->qfd = vx_tap_open(x->qtap, 0, 0, got)) < 0) {
		snprintf(why, sizeof(why), "cannot make TAP device %s: %s", x->qtap,
			 strerror(-x->qfd));
		step_end(s, x->qfd, why);
		return;
	}
	/* The tunnel's end: a TAP of this namespace that goes with it. */
	if ((self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) {
		step_end(s, -errno, "cannot open this network namespace");
		return;
	}
	err = net_l2_netns(self, x->ttap, &x->l2, why, sizeof(why));
	close(self);
	if (err < 0) {
		step_end(s, err, why);
		return;
	}
	msg_init(&p);
	msg_put_cap(&p, remote);
	msg_put_u64(&p, NET_VNI);
	rpc_call(x->l2, IFACE_L2_INTERFACE, L2_INTERFACE_BIND_TO, &p, net_bound, s);
}

static void serial_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct msg_rd r;
	struct cap *h;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &h) < 0)
			err = -EPROTO, errmsg = "bindTo answered nothing";
		else
			s->vm->serial[s->i].holder = cap_ref(h);
	}
	step_end(s, err, errmsg);
}

static void serial_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct vm_serial *sp = &s->vm->serial[s->i];
	struct msg_rd r;
	struct cap *remote, *mine;
	struct msg p;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &remote) < 0)
			err = -EPROTO, errmsg = "the ref restored to nothing";
	}
	if (err || s->vm->failed) {
		step_end(s, err, errmsg);
		return;
	}
	if (!(mine = fd_stream_new(s->vm->node, sp->fd, NODE_PIPE_NO_SHUTDOWN, "vm serial port"))) {
		step_end(s, -ENOMEM, "out of memory");
		return;
	}
	sp->fd = -1;
	msg_init(&p);
	msg_put_cap(&p, remote);
	rpc_call(mine, IFACE_STREAM, STREAM_BIND_TO, &p, serial_bound, s);
	cap_unref(mine);
}

static void file_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct step *s = arg;
	struct msg_rd r;
	struct cap *f;
	struct msg p;

	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_cap(&r, &f) < 0)
			err = -EPROTO, errmsg = "the ref restored to nothing";
	}
	if (err || s->vm->failed) {
		step_end(s, err, errmsg);
		return;
	}
	msg_init(&p);
	if (s->kind == 'd') {
		msg_put_bool(&p, s->vm->drives[s->i].ro);
		rpc_call(f, IFACE_FILE, FILE_OPEN_AS_BLOCK, &p, drive_opened, s);
	} else {
		msg_put_u64(&p, 0);
		rpc_call(f, IFACE_FILE, FILE_READ_STREAM, &p, fetch_streamed, s);
	}
}

/* Starts getting every resource of v that is not a local file; v is
 * spawned when the last is there. */
static int vm_prepare(struct vm *v)
{
	struct step *s;

	v->pending = 1; /* this function's own, dropped at the end */
	for (int k = 0; k < 2; k++) {
		const char *uri = k ? v->initrd_uri : v->kernel_uri;
		char *path = k ? v->initrd : v->kernel;
		const char *local = cli_local_path(uri);
		if (!*uri)
			continue;
		if (local) {
			snprintf(path, PATH_MAX, "%s", local);
			continue;
		}
		snprintf(path, PATH_MAX, "%s/%s", v->dir, k ? "initrd" : "kernel");
		if (!(s = step_new(v, k ? 'i' : 'k', 0)))
			goto nomem;
		node_restore(v->node, uri, file_restored, s);
	}
	for (size_t i = 0; i < v->ndrives; i++) {
		struct vm_drive *d = &v->drives[i];
		const char *local = cli_local_path(d->uri);
		if (local) {
			snprintf(d->path, sizeof(d->path), "%s", local);
			continue;
		}
		if (!(s = step_new(v, 'd', i)))
			goto nomem;
		node_restore(v->node, d->uri, file_restored, s);
	}
	for (size_t i = 0; i < v->nnets; i++) {
		if (!(s = step_new(v, 'n', i)))
			goto nomem;
		node_restore(v->node, v->nets[i].uri, net_restored, s);
	}
	for (size_t i = 0; i < v->nserial; i++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
			vm_fail(v, -errno, "serial port %zu: %s", i, strerror(errno));
			break;
		}
		net_set_nonblock(sv[0]);
		v->serial[i].fd = sv[0];
		v->serial[i].qfd = sv[1];
		if (!*v->serial[i].uri)
			continue;
		if (!(s = step_new(v, 's', i)))
			goto nomem;
		node_restore(v->node, v->serial[i].uri, serial_restored, s);
	}
	for (size_t i = 0; i < v->nports; i++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
			vm_fail(v, -errno, "port %zu: %s", i, strerror(errno));
			break;
		}
		net_set_nonblock(sv[0]);
		v->ports[i].fd = sv[0];
		v->ports[i].qfd = sv[1];
	}
	prepared(v);
	return 0;
nomem:
	vm_fail(v, -ENOMEM, "out of memory");
	prepared(v);
	return -ENOMEM;
}

/* --- launch -------------------------------------------------------- */

static int get_uri(struct msg_rd *r, char **out, int allow_empty, const char *what, char *err,
		   size_t errsz)
{
	char s[REF_MAX_LEN + PATH_MAX];

	if (msg_get_str(r, s, sizeof(s)) < 0) {
		snprintf(err, errsz, "malformed %s", what);
		return -EINVAL;
	}
	if (!*s && !allow_empty) {
		snprintf(err, errsz, "no %s", what);
		return -EINVAL;
	}
	if (*s && strncmp(s, "ref://", 6) && !(cli_local_path(s) && cli_local_path(s)[0] == '/')) {
		snprintf(err, errsz, "%s '%.300s' is neither local:/ABSOLUTE/PATH nor a ref", what, s);
		return -EINVAL;
	}
	if (!(*out = strdup(s))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int read_launch(struct msg_rd *r, struct vm *v, char *err, size_t errsz)
{
	uint64_t n;
	char word[32];
	int e;

	if (msg_get_u64(r, &v->memory_mib) < 0 || msg_get_u64(r, &v->vcpus) < 0) {
		snprintf(err, errsz, "malformed memory or vcpus");
		return -EINVAL;
	}
	if (v->memory_mib < 16 || v->memory_mib > (1u << 20) || v->vcpus < 1 || v->vcpus > 64) {
		snprintf(err, errsz, "memory is 16 MiB to 1 TiB, vcpus 1 to 64");
		return -EINVAL;
	}
	if ((e = get_uri(r, &v->kernel_uri, 1, "kernel", err, errsz)) < 0 ||
	    (e = get_uri(r, &v->initrd_uri, 1, "initrd", err, errsz)) < 0)
		return e;
	if (msg_get_str(r, v->cmdline, sizeof(v->cmdline)) < 0) {
		snprintf(err, errsz, "malformed or too long kernel command line");
		return -EINVAL;
	}
	if (!*v->kernel_uri && (*v->initrd_uri || *v->cmdline)) {
		snprintf(err, errsz, "an initrd or a command line needs a kernel");
		return -EINVAL;
	}
	if (msg_get_u64(r, &n) < 0 || n > VM_MAX_DRIVES) {
		snprintf(err, errsz, "at most %d drives", VM_MAX_DRIVES);
		return -EINVAL;
	}
	for (v->ndrives = 0; v->ndrives < n; v->ndrives++) {
		struct vm_drive *d = &v->drives[v->ndrives];
		d->vm = v;
		d->lfd = -1;
		if ((e = get_uri(r, &d->uri, 0, "drive", err, errsz)) < 0)
			return e;
		if (msg_get_str(r, word, sizeof(word)) < 0 || msg_get_bool(r, &d->ro) < 0 ||
		    (strcmp(word, "virtio") && strcmp(word, "ide"))) {
			snprintf(err, errsz, "a drive's driver is virtio or ide");
			v->ndrives++;
			return -EINVAL;
		}
		d->ide = !strcmp(word, "ide");
	}
	if (msg_get_u64(r, &n) < 0 || n > VM_MAX_NETS) {
		snprintf(err, errsz, "at most %d networks", VM_MAX_NETS);
		return -EINVAL;
	}
	for (v->nnets = 0; v->nnets < n; v->nnets++) {
		struct vm_net *x = &v->nets[v->nnets];
		x->qfd = -1;
		if ((e = get_uri(r, &x->uri, 0, "network", err, errsz)) < 0)
			return e;
		if (strncmp(x->uri, "ref://", 6)) {
			snprintf(err, errsz, "a network is a ref to an L2Interface");
			v->nnets++;
			return -EINVAL;
		}
		if (msg_get_str(r, word, sizeof(word)) < 0 ||
		    (strcmp(word, "virtio") && strcmp(word, "e1000"))) {
			snprintf(err, errsz, "a network's model is virtio or e1000");
			v->nnets++;
			return -EINVAL;
		}
		x->e1000 = !strcmp(word, "e1000");
	}
	if (msg_get_u64(r, &n) < 0 || n > VM_MAX_SERIAL) {
		snprintf(err, errsz, "at most %d serial ports", VM_MAX_SERIAL);
		return -EINVAL;
	}
	for (v->nserial = 0; v->nserial < n; v->nserial++) {
		struct vm_serial *sp = &v->serial[v->nserial];
		sp->fd = sp->qfd = -1;
		if ((e = get_uri(r, &sp->uri, 1, "serial port", err, errsz)) < 0)
			return e;
		if (*sp->uri && strncmp(sp->uri, "ref://", 6)) {
			snprintf(err, errsz, "a serial port is new (\"\") or bound to a Stream ref");
			v->nserial++;
			return -EINVAL;
		}
	}
	if (msg_get_u64(r, &n) < 0 || n > VM_MAX_PORTS) {
		snprintf(err, errsz, "at most %d ports", VM_MAX_PORTS);
		return -EINVAL;
	}
	for (v->nports = 0; v->nports < n; v->nports++) {
		struct vm_port *pt = &v->ports[v->nports];
		pt->fd = pt->qfd = -1;
		if (msg_get_str(r, pt->name, sizeof(pt->name)) < 0 || !*pt->name) {
			snprintf(err, errsz, "a port's name is 1 to 31 characters");
			v->nports++;
			return -EINVAL;
		}
		for (char *c = pt->name; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.' ||
			      *c == '-' || *c == '_')) {
				snprintf(err, errsz, "a port's name is lower-case letters, digits, "
					 "'.', '-' and '_'");
				v->nports++;
				return -EINVAL;
			}
	}
	if (msg_get_str(r, v->name, sizeof(v->name)) < 0 || !msg_at_end(r)) {
		snprintf(err, errsz, "malformed name");
		return -EINVAL;
	}
	for (char *c = v->name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		      *c == '-' || *c == '_' || *c == '.')) {
			snprintf(err, errsz, "a VM's name is letters, digits, '-', '_' and '.'");
			return -EINVAL;
		}
	if (!*v->kernel_uri && !v->ndrives) {
		snprintf(err, errsz, "nothing to boot: give a kernel or a drive");
		return -EINVAL;
	}
	return 0;
}

static void launch(struct rpc_call *call)
{
	struct vm *v = calloc(1, sizeof(*v));
	struct msg_rd r;
	char err[512], parent[PATH_MAX];
	int e;

	if (!v) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	v->node = S.node;
	v->id = ++S.next_id;
	randombytes_buf(&v->tag, sizeof(v->tag));
	v->next = S.vms;
	S.vms = v;
	msg_rd_init(&r, &call->params);
	if ((e = read_launch(&r, v, err, sizeof(err))) < 0) {
		rpc_return_error(call, e, "%s", err);
		v->failed = 1;
		vm_maybe_free(v);
		return;
	}
	if (!*v->name)
		snprintf(v->name, sizeof(v->name), "vm%u", v->id);
	snprintf(parent, sizeof(parent), "%s/vm", node_dir(S.node));
	snprintf(v->dir, sizeof(v->dir), "%.3000s/vm/%u-%04x", node_dir(S.node), v->id, v->tag);
	if ((mkdir(parent, 0700) < 0 && errno != EEXIST) || mkdir(v->dir, 0700) < 0) {
		rpc_return_error(call, -errno, "cannot make %s: %s", v->dir, strerror(errno));
		v->failed = 1;
		vm_maybe_free(v);
		return;
	}
	v->launch = call;
	vm_prepare(v);
}

/* --- the launcher, the admin object, the service -------------------- */

static void launcher_call(struct cap *c, struct rpc_call *call)
{
	if (call->iface == IFACE_VM_LAUNCHER && call->method == VM_LAUNCHER_LAUNCH)
		launch(call);
	else
		rpc_return_unknown(call, "VMLauncher");
}

static const struct cap_ops launcher_ops = {
	.name = "VMLauncher",
	.call = launcher_call,
	.free = node_obj_free,
};

static const char *state_name(const struct vm *v)
{
	static const char *const names[] = { "preparing", "starting", "running", "ended" };
	return v->failed ? "failed" : names[v->state];
}

static void vm_admin_call(struct cap *cap, struct rpc_call *call)
{
	struct msg_rd r;
	uint64_t n = 0, id;
	struct cap *c;
	struct vm *v;

	if (call->iface != IFACE_SERVICE_ADMIN) {
		rpc_return_unknown(call, "vm service");
		return;
	}
	switch (call->method) {
	case VM_ADMIN_LAUNCHER:
		if (!(c = node_obj_new(node_obj_node(cap), &launcher_ops))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, c);
		return;
	case VM_ADMIN_LIST:
		for (v = S.vms; v; v = v->next)
			n++;
		msg_put_u64(&call->results, n);
		for (v = S.vms; v; v = v->next) {
			msg_put_u64(&call->results, v->id);
			msg_put_str(&call->results, v->name);
			msg_put_u64(&call->results, v->child ? (uint64_t)v->pid : 0);
			msg_put_u64(&call->results, v->memory_mib);
			msg_put_str(&call->results, state_name(v));
		}
		rpc_return(call);
		return;
	case VM_ADMIN_GET:
		msg_rd_init(&r, &call->params);
		if (msg_get_u64(&r, &id) < 0) {
			rpc_return_error(call, -EINVAL, "get takes a VM's id");
			return;
		}
		for (v = S.vms; v && (v->id != id || v->failed || v->state == VM_ENDED); v = v->next)
			;
		if (!v || v->state != VM_RUNNING) {
			rpc_return_error(call, -ENOENT, "no VM %llu runs here ('metac vm list' shows "
				      "them)", (unsigned long long)id);
			return;
		}
		if (!(c = vm_handle_new(v))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, c);
		return;
	}
	rpc_return_unknown(call, "vm service");
}

static const struct cap_ops vm_admin_ops = {
	.name = "vm service",
	.call = vm_admin_call,
	.free = node_obj_free,
};

static struct cap *vm_admin_new(struct node *n)
{
	return node_obj_new(n, &vm_admin_ops);
}

static int vm_restore(struct node *n, const struct ref_record *rec, struct cap **out,
		      char *err, size_t errsz)
{
	if (strcmp(rec->description, "launcher")) {
		snprintf(err, errsz, "the vm service exports only its launcher");
		return -EINVAL;
	}
	if (!(*out = node_obj_new(n, &launcher_ops))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* The daemon is going: its VMs with it. */
static void vm_stop(struct node *n)
{
	for (struct vm *v = S.vms; v; v = v->next)
		if (v->child && v->pid > 0)
			kill(v->pid, SIGKILL);
}

static const struct node_service vm_service = {
	.name = "vm",
	.restore = vm_restore,
	.admin = vm_admin_new,
	.stop = vm_stop,
};

int vm_service_register(struct node *n)
{
	S.node = n;
	return node_register_service(n, &vm_service);
}

/* --- metac vm ------------------------------------------------------ */

/* A local:PATH made absolute (the daemon has its own working directory);
 * refs and "" as they are. */
static int absolute_uri(const char *uri, char *out, size_t outsz)
{
	const char *local = cli_local_path(uri);
	char abs[PATH_MAX];

	if (!local) {
		snprintf(out, outsz, "%s", uri);
		return 0;
	}
	if (!realpath(local, abs)) {
		fprintf(stderr, "metac vm: %s: %m\n", local);
		return -1;
	}
	snprintf(out, outsz, "local:%s", abs);
	return 0;
}

struct console {
	int done, waited, err;
	int64_t status;
	char why[RPC_MAX_ERRMSG];
};

static void console_done(void *arg, int err)
{
	((struct console *)arg)->done = 1;
}

static void console_waited(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct console *c = arg;
	struct msg_rd r;

	c->waited = 1;
	if (!err) {
		msg_rd_init(&r, res);
		if (msg_get_i64(&r, &c->status) < 0)
			err = -EPROTO, errmsg = "malformed answer";
	}
	if (err) {
		c->err = err;
		snprintf(c->why, sizeof(c->why), "%s", errmsg);
	}
}

static int stop_signal;

static void on_signal(struct loop *l, int signo, void *arg)
{
	stop_signal = signo;
}

static struct termios saved_tio;
static int tio_saved;

static void restore_terminal(void)
{
	if (tio_saved)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tio);
	tio_saved = 0;
}

/* --serial stdio: the console here until the VM ends (or a signal,
 * which destroys it). Ctrl-] ends a console on a terminal. */
static int vm_console(struct admin *a, struct cap *vm, uint64_t id)
{
	struct console c = { 0 };
	struct msg p, res;
	struct msg_rd r;
	struct cap *s;
	struct loop_signal *si, *st;
	int rc = EXIT_FAIL, in, out;

	msg_init(&p);
	msg_init(&res);
	msg_put_u64(&p, 0);
	if (admin_call(a, vm, IFACE_VM, VM_SERIAL_PORT, &p, &res, "no serial port") < 0)
		return EXIT_FAIL;
	msg_rd_init(&r, &res);
	if (msg_get_cap(&r, &s) < 0) {
		msg_free(&res);
		return EXIT_FAIL;
	}
	cap_ref(s);
	msg_free(&res);
	in = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	out = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
		struct termios raw = saved_tio;
		tio_saved = 1;
		atexit(restore_terminal);
		cfmakeraw(&raw);
		tcsetattr(STDIN_FILENO, TCSADRAIN, &raw);
		fprintf(stderr, "metac vm: the console of VM %llu; 'metac vm stop %llu' ends it\r\n",
			(unsigned long long)id, (unsigned long long)id);
	}
	admin_stream_pipe(a, s, 0, in, out, console_done, &c);
	cap_unref(s);
	si = loop_signal_new(a->loop, SIGINT, on_signal, NULL);
	st = loop_signal_new(a->loop, SIGTERM, on_signal, NULL);
	msg_init(&p);
	rpc_call(vm, IFACE_VM, VM_WAIT, &p, console_waited, &c);
	while (!c.waited && !stop_signal && !a->err)
		if (loop_run_once(a->loop, 200) < 0)
			break;
	restore_terminal();
	if (stop_signal || a->err) {
		msg_init(&p);
		msg_init(&res);
		if (!a->err)
			admin_call(a, vm, IFACE_VM, VM_DESTROY, &p, &res, "cannot stop the VM");
		msg_free(&res);
		fprintf(stderr, "metac vm: %s; the VM is stopped\n",
			a->err ? a->errmsg : "interrupted");
	} else if (c.err) {
		fprintf(stderr, "metac vm: lost the VM: %s\n", c.why);
	} else {
		/* What the console still had on its way. */
		for (int i = 0; i < 50 && !c.done && !a->err; i++)
			loop_run_once(a->loop, 20);
		rc = c.status == 0 ? EXIT_OK : EXIT_FAIL;
		if (c.status)
			fprintf(stderr, "metac vm: qemu ended with status %lld\n",
				(long long)c.status);
	}
	loop_signal_del(si);
	loop_signal_del(st);
	return rc;
}

static int vm_start(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "memory", required_argument, NULL, 'm' },
		{ "vcpu", required_argument, NULL, 'c' },
		{ "drive", required_argument, NULL, 'd' },
		{ "net", required_argument, NULL, 'n' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "cmdline", required_argument, NULL, 'l' },
		{ "serial", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'N' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	char *drives[VM_MAX_DRIVES], *nets[VM_MAX_NETS];
	size_t nd = 0, nn = 0;
	const char *sock = NULL, *kernel = "", *initrd = "", *cmdline = "", *serial = NULL,
		   *name = "";
	unsigned long long memory = 512, vcpu = 1;
	char uri[REF_MAX_LEN + PATH_MAX], *end;
	struct admin a = { 0 };
	struct cap *admin = NULL, *launcher = NULL, *vm = NULL;
	struct msg p, res;
	struct msg_rd r;
	uint64_t id;
	int c, rc = EXIT_FAIL, stdio;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
		case 'c': {
			unsigned long long v = strtoull(optarg, &end, 10);
			if (*end || !*optarg || !v)
				return cli_usage_error(self, "--memory and --vcpu take numbers");
			*(c == 'm' ? &memory : &vcpu) = v;
			break;
		}
		case 'd':
			if (nd == VM_MAX_DRIVES)
				return cli_usage_error(self, "at most %d drives", VM_MAX_DRIVES);
			drives[nd++] = optarg;
			break;
		case 'n':
			if (nn == VM_MAX_NETS)
				return cli_usage_error(self, "at most %d networks", VM_MAX_NETS);
			nets[nn++] = optarg;
			break;
		case 'k': kernel = optarg; break;
		case 'i': initrd = optarg; break;
		case 'l': cmdline = optarg; break;
		case 's': serial = optarg; break;
		case 'N': name = optarg; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(self, "vm start takes options only");
	stdio = serial && !strcmp(serial, "stdio");
	if (serial && !stdio && strncmp(serial, "ref://", 6))
		return cli_usage_error(self, "--serial is stdio or a ref to a Stream");
	msg_init(&res);
	msg_init(&p);
	msg_put_u64(&p, memory);
	msg_put_u64(&p, vcpu);
	if (absolute_uri(kernel, uri, sizeof(uri)) < 0)
		goto out_p;
	msg_put_str(&p, uri);
	if (absolute_uri(initrd, uri, sizeof(uri)) < 0)
		goto out_p;
	msg_put_str(&p, uri);
	msg_put_str(&p, cmdline);
	msg_put_u64(&p, nd);
	for (size_t i = 0; i < nd; i++) {
		/* uri=URI[,driver=virtio|ide][,ro]: a ref has no commas. */
		char *save = NULL, *o, *u = NULL;
		const char *driver = "virtio";
		int ro = 0;
		for (o = strtok_r(drives[i], ",", &save); o; o = strtok_r(NULL, ",", &save)) {
			if (!strncmp(o, "uri=", 4))
				u = o + 4;
			else if (!strncmp(o, "driver=", 7))
				driver = o + 7;
			else if (!strcmp(o, "ro") || !strcmp(o, "readonly=on"))
				ro = 1;
			else {
				msg_free(&p);
				return cli_usage_error(self, "--drive uri=URI[,driver=virtio|ide][,ro]");
			}
		}
		if (!u) {
			msg_free(&p);
			return cli_usage_error(self, "--drive needs uri=URI");
		}
		if (absolute_uri(u, uri, sizeof(uri)) < 0)
			goto out_p;
		msg_put_str(&p, uri);
		msg_put_str(&p, driver);
		msg_put_bool(&p, ro);
	}
	msg_put_u64(&p, nn);
	for (size_t i = 0; i < nn; i++) {
		char *comma = strchr(nets[i], ','), *model = "virtio";
		if (comma) {
			*comma = 0;
			if (strncmp(comma + 1, "model=", 6)) {
				msg_free(&p);
				return cli_usage_error(self, "--net REF[,model=virtio|e1000]");
			}
			model = comma + 7;
		}
		msg_put_str(&p, nets[i]);
		msg_put_str(&p, model);
	}
	msg_put_u64(&p, 1);
	msg_put_str(&p, serial && !stdio ? serial : "");
	msg_put_u64(&p, 0); /* no virtio-serial ports */
	msg_put_str(&p, name);
	if (admin_open_service(&a, sock, "vm", &admin) < 0)
		goto out_p;
	{
		struct msg q;
		msg_init(&q);
		if (admin_call_cap(&a, admin, IFACE_SERVICE_ADMIN, VM_ADMIN_LAUNCHER, &q, &launcher,
				   "the vm service launches nothing") < 0)
			goto out_p;
	}
	if (admin_call(&a, launcher, IFACE_VM_LAUNCHER, VM_LAUNCHER_LAUNCH, &p, &res,
		       "cannot start the VM") < 0)
		goto out;
	msg_rd_init(&r, &res);
	if (msg_get_cap(&r, &vm) < 0 || msg_get_u64(&r, &id) < 0) {
		fprintf(stderr, "metac vm: the launcher answered no VM\n");
		goto out;
	}
	cap_ref(vm);
	fprintf(stderr, "metac vm: VM %llu runs\n", (unsigned long long)id);
	if (stdio) {
		rc = vm_console(&a, vm, id);
	} else {
		printf("%llu\n", (unsigned long long)id);
		rc = EXIT_OK;
	}
	goto out;
out_p:
	msg_free(&p);
out:
	msg_free(&res);
	cap_unref(vm);
	cap_unref(launcher);
	cap_unref(admin);
	admin_close(&a);
	return rc;
}

static int vm_list(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	int c, json = 0, rc = EXIT_FAIL;
	struct admin a = { 0 };
	struct cap *admin = NULL;
	struct msg p, res;
	struct msg_rd r;
	uint64_t n, id, pid, mem;
	char name[64], state[32];

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
		return cli_usage_error(self, "vm list takes no arguments");
	msg_init(&res);
	if (admin_open_service(&a, sock, "vm", &admin) < 0)
		goto out;
	msg_init(&p);
	if (admin_call(&a, admin, IFACE_SERVICE_ADMIN, VM_ADMIN_LIST, &p, &res,
		       "cannot list VMs") < 0)
		goto out;
	msg_rd_init(&r, &res);
	if (msg_get_u64(&r, &n) < 0)
		goto bad;
	if (json)
		printf("[");
	else
		printf("%-5s %-16s %-8s %-8s %s\n", "ID", "NAME", "PID", "MEMORY", "STATE");
	for (uint64_t i = 0; i < n; i++) {
		if (msg_get_u64(&r, &id) < 0 || msg_get_str(&r, name, sizeof(name)) < 0 ||
		    msg_get_u64(&r, &pid) < 0 || msg_get_u64(&r, &mem) < 0 ||
		    msg_get_str(&r, state, sizeof(state)) < 0)
			goto bad;
		if (json) {
			printf("%s{\"id\":%llu,\"name\":", i ? "," : "", (unsigned long long)id);
			cli_json_str(stdout, name);
			printf(",\"pid\":%llu,\"memory_mib\":%llu,\"state\":", (unsigned long long)pid,
			       (unsigned long long)mem);
			cli_json_str(stdout, state);
			printf("}");
		} else {
			printf("%-5llu %-16s %-8llu %-8llu %s\n", (unsigned long long)id, name,
			       (unsigned long long)pid, (unsigned long long)mem, state);
		}
	}
	if (json)
		printf("]\n");
	rc = EXIT_OK;
	goto out;
bad:
	fprintf(stderr, "metac vm: the daemon's list is malformed\n");
out:
	msg_free(&res);
	cap_unref(admin);
	admin_close(&a);
	return rc;
}

static int vm_stop_cmd(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	int c, rc = EXIT_FAIL;
	struct admin a = { 0 };
	struct cap *admin = NULL, *vm = NULL;
	struct msg p, res;
	unsigned long long id;
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 1)
		return cli_usage_error(self, "vm stop takes a VM's id");
	id = strtoull(argv[optind], &end, 10);
	if (*end || !*argv[optind])
		return cli_usage_error(self, "'%s' is not a VM's id", argv[optind]);
	msg_init(&res);
	if (admin_open_service(&a, sock, "vm", &admin) < 0)
		goto out;
	msg_init(&p);
	msg_put_u64(&p, id);
	if (admin_call_cap(&a, admin, IFACE_SERVICE_ADMIN, VM_ADMIN_GET, &p, &vm,
			   "cannot stop it") < 0)
		goto out;
	msg_init(&p);
	if (admin_call(&a, vm, IFACE_VM, VM_DESTROY, &p, &res, "cannot stop it") < 0)
		goto out;
	msg_free(&res);
	msg_init(&res);
	/* Until qemu is gone. */
	msg_init(&p);
	if (admin_call(&a, vm, IFACE_VM, VM_WAIT, &p, &res, "cannot wait for it") < 0)
		goto out;
	rc = EXIT_OK;
out:
	msg_free(&res);
	cap_unref(vm);
	cap_unref(admin);
	admin_close(&a);
	return rc;
}

/* metac vm initrd: what computevm boots, made ahead (make vm-initrd). */
static int vm_initrd(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel-version", required_argument, NULL, 'k' },
		{ "output", required_argument, NULL, 'o' },
		{ 0 }
	};
	const char *out = NULL;
	char kver[256] = "", err[512];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "k:o:", opts, NULL)) != -1) {
		if (c == 'k')
			snprintf(kver, sizeof(kver), "%s", optarg);
		else if (c == 'o')
			out = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (!out || optind != argc)
		return cli_usage_error(self, "vm initrd -o FILE [--kernel-version V]");
	if (!*kver && agent_kernel(kver, sizeof(kver)) < 0) {
		fprintf(stderr, "metac vm: no cloud kernel in /boot (Debian package "
			"linux-image-cloud-amd64); --kernel-version names another\n");
		return EXIT_FAIL;
	}
	if (agent_initrd_build(kver, out, err, sizeof(err)) < 0) {
		fprintf(stderr, "metac vm: %s\n", err);
		return EXIT_FAIL;
	}
	fprintf(stderr, "metac vm: %s: the computevm initramfs for kernel %s\n", out, kver);
	return EXIT_OK;
}

int vm_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "start", vm_start },
		{ "initrd", vm_initrd },
		{ "list", vm_list },
		{ "stop", vm_stop_cmd },
		{ 0 }
	};
	return cli_dispatch(applet_find("vm"), cmds, argc, argv);
}
