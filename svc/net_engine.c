/* Tunnel engines in processes of their own: see net_engine.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/proc.h"
#include "lib/sandbox.h"
#include "proto/node.h"
#include "svc/net_engine.h"

#define CTL_FD 3
#define TAP_FD 4
#define SOCK_FD 5
#define STATS_FD 6
#define ENGINE_PUBLISH_MS 100
/* How long net list waits for an engine's fresh counters (it blocks the
 * daemon's loop meanwhile) before it shows the last ones. */
#define ENGINE_ANSWER_MS 50

/* PUBLISH: the counters, now (the engine publishes them after every
 * message anyway, and every ENGINE_PUBLISH_MS). */
enum ctl_op { CTL_NONE, CTL_START, CTL_RX_KEY, CTL_TX_KEY, CTL_PEER, CTL_KICK, CTL_PUBLISH };

/* One message on the control socket, whatever its op: START holds the
 * whole configuration (the keys and peer as last told), RX_KEY and
 * TX_KEY their key, PEER the peer. */
struct ctl_msg {
	uint32_t op;
	uint32_t mode, vni;
	uint64_t max_datagram;
	struct vx_key_cfg rx, tx;
	uint32_t peer_len;
	struct sockaddr_storage peer;
};

/* The engine's counters: it writes, the daemon reads (seq odd: being
 * written). */
struct shared_stats {
	_Atomic uint32_t seq;
	struct vx_stats s;
};

struct net_engine {
	struct node *node;
	char name[IFNAMSIZ + 16];
	pid_t pid;
	struct loop_child *watch;
	int ctl, stats_fd, port;
	struct shared_stats *shared;
	void (*lost)(void *arg, const char *why);
	void *arg;
};

/* --- the daemon's side ----------------------------------------------- */

static void ctl_send(struct net_engine *e, const struct ctl_msg *m)
{
	/* A few messages a minute: the socket's buffer holds them, unless
	 * the engine stopped reading. A key it missed would break the tunnel
	 * unseen: it is ended instead, and its owner told (engine_exited). */
	if (e->ctl >= 0 && send(e->ctl, m, sizeof(*m), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
	    e->pid > 0) {
		log_warn("net: %s: its tunnel engine takes no message (%s); ending it", e->name,
			 strerror(errno));
		kill(e->pid, SIGKILL);
	}
}

static void engine_exited(struct loop *l, pid_t pid, int status, void *arg);

/* The engine on tap and sock (closed here: it holds them), told start. */
static int spawn(struct net_engine *e, int tap, int sock, const struct ctl_msg *start)
{
	char *argv[] = { "metac", "net", "_tunnel", (char *)node_dir(e->node), NULL };
	int sv[2], r;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		close(tap);
		close(sock);
		return r;
	}
	int fds[] = { sv[1], tap, sock, e->stats_fd };
	r = proc_spawn_self(argv, fds, 4);
	close(sv[1]);
	close(tap);
	close(sock);
	if (r < 0) {
		close(sv[0]);
		return r;
	}
	e->pid = r;
	e->ctl = sv[0];
	if (!(e->watch = loop_child_watch(node_loop(e->node), e->pid, engine_exited, e))) {
		/* Unwatched, it would never be reaped. */
		kill(e->pid, SIGKILL);
		waitpid(e->pid, NULL, 0);
		e->pid = 0;
		return -ENOMEM;
	}
	ctl_send(e, start);
	return 0;
}

static void stats_read(const struct net_engine *e, struct vx_stats *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < 1000; i++) {
		uint32_t a = atomic_load_explicit(&e->shared->seq, memory_order_acquire);
		if (a & 1)
			continue;
		memcpy(s, &e->shared->s, sizeof(*s));
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->shared->seq, memory_order_relaxed) == a)
			break;
	}
	/* Written by a process that reads what strangers send. */
	s->peer[sizeof(s->peer) - 1] = 0;
}

/* It ended without being asked: its tunnel stops. Not started again on
 * the same keys: its counters (the nonces) and replay window died with
 * it, so the owner binds again, with new keys. */
static void engine_exited(struct loop *l, pid_t pid, int status, void *arg)
{
	struct net_engine *e = arg;
	char why[160];

	e->watch = NULL;
	e->pid = 0;
	close(e->ctl);
	e->ctl = -1;
	if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "its tunnel engine (pid %d) died of %s", (int)pid,
			 strsignal(WTERMSIG(status)));
	else
		snprintf(why, sizeof(why), "its tunnel engine (pid %d) ended (status %d)",
			 (int)pid, WEXITSTATUS(status));
	log_warn("net: %s: %s; the tunnel stops", e->name, why);
	if (e->lost)
		e->lost(e->arg, why);
}

int net_engine_start(struct node *n, const char *name, const struct vx_tunnel_config *cfg,
		     void (*lost)(void *arg, const char *why), void *arg,
		     struct net_engine **out)
{
	struct ctl_msg start = { .op = CTL_START, .mode = cfg->mode, .vni = cfg->vni,
				 .max_datagram = cfg->max_datagram, .rx = cfg->rx, .tx = cfg->tx,
				 .peer_len = cfg->peer_len };
	struct net_engine *e = calloc(1, sizeof(*e));
	int r = -ENOMEM;

	memcpy(&start.peer, &cfg->peer, sizeof(start.peer));
	if (!e)
		goto fail;
	e->node = n;
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->ctl = -1;
	e->lost = lost;
	e->arg = arg;
	e->port = vx_udp_port(cfg->sock_fd);
	/* Sealed at its size: the engine can write it, not shrink it under
	 * the daemon's reads. */
	if ((e->stats_fd = memfd_create("metac-tunnel-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0 ||
	    ftruncate(e->stats_fd, sizeof(*e->shared)) < 0 ||
	    fcntl(e->stats_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
	    (e->shared = mmap(NULL, sizeof(*e->shared), PROT_READ | PROT_WRITE, MAP_SHARED,
			      e->stats_fd, 0)) == MAP_FAILED) {
		r = -errno;
		e->shared = NULL;
		goto fail;
	}
	r = spawn(e, cfg->tap_fd, cfg->sock_fd, &start);
	sodium_memzero(&start, sizeof(start));
	if (r < 0) {
		e->lost = NULL;
		net_engine_stop(e);
		return r;
	}
	*out = e;
	return 0;
fail:
	sodium_memzero(&start, sizeof(start));
	close(cfg->tap_fd);
	close(cfg->sock_fd);
	if (e) {
		e->lost = NULL;
		net_engine_stop(e);
	}
	return r;
}

void net_engine_stop(struct net_engine *e)
{
	if (!e)
		return;
	loop_child_del(e->watch);
	if (e->ctl >= 0)
		close(e->ctl);
	/* At once, not when it notices: a binding that follows opens the
	 * TAP device again, which takes one holder only. */
	if (e->pid > 0) {
		kill(e->pid, SIGKILL);
		waitpid(e->pid, NULL, 0);
	}
	if (e->shared)
		munmap(e->shared, sizeof(*e->shared));
	if (e->stats_fd >= 0)
		close(e->stats_fd);
	free(e);
}

int net_engine_local_port(const struct net_engine *e)
{
	return e->port;
}

static void key_tell(struct net_engine *e, enum ctl_op op, uint32_t index,
		     const uint8_t key[VX_KEY_LEN])
{
	struct ctl_msg m = { .op = op };
	struct vx_key_cfg *k = op == CTL_RX_KEY ? &m.rx : &m.tx;

	k->valid = 1;
	k->index = index;
	memcpy(k->key, key, VX_KEY_LEN);
	ctl_send(e, &m);
	sodium_memzero(&m, sizeof(m));
}

void net_engine_rx_key(struct net_engine *e, uint32_t index, const uint8_t key[VX_KEY_LEN])
{
	key_tell(e, CTL_RX_KEY, index, key);
}

void net_engine_tx_key(struct net_engine *e, uint32_t index, const uint8_t key[VX_KEY_LEN])
{
	key_tell(e, CTL_TX_KEY, index, key);
}

void net_engine_set_peer(struct net_engine *e, const struct sockaddr *sa, socklen_t len)
{
	struct ctl_msg m = { .op = CTL_PEER, .peer_len = len };

	if (len > sizeof(m.peer))
		return;
	memcpy(&m.peer, sa, len);
	ctl_send(e, &m);
}

void net_engine_kick(struct net_engine *e)
{
	struct ctl_msg m = { .op = CTL_KICK };
	ctl_send(e, &m);
}

void net_engine_stats(struct net_engine *e, struct vx_stats *s)
{
	struct ctl_msg m = { .op = CTL_PUBLISH };
	uint32_t before = atomic_load_explicit(&e->shared->seq, memory_order_acquire);
	/* Two steps a publication: three if one was under way. */
	uint32_t want = before + (before & 1 ? 3 : 2);

	/* Fresh: the peer it learnt a moment ago, say. */
	if (e->ctl >= 0 && send(e->ctl, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL) == sizeof(m))
		for (int i = 0; i < ENGINE_ANSWER_MS &&
		     (int32_t)(atomic_load_explicit(&e->shared->seq, memory_order_acquire) - want) < 0;
		     i++)
			usleep(1000);
	stats_read(e, s);
}

/* --- the engine's side ------------------------------------------------ */

static void publish(struct vx_tunnel *t, struct shared_stats *sh)
{
	struct vx_stats s;

	vx_tunnel_stats(t, &s);
	atomic_fetch_add_explicit(&sh->seq, 1, memory_order_acq_rel);
	atomic_thread_fence(memory_order_release);
	memcpy(&sh->s, &s, sizeof(s));
	atomic_fetch_add_explicit(&sh->seq, 1, memory_order_release);
}

static void apply(struct vx_tunnel *t, const struct ctl_msg *m)
{
	switch (m->op) {
	case CTL_RX_KEY:
		vx_tunnel_rx_key(t, m->rx.index, m->rx.key);
		break;
	case CTL_TX_KEY:
		vx_tunnel_tx_key(t, m->tx.index, m->tx.key);
		break;
	case CTL_PEER:
		if (m->peer_len <= sizeof(m->peer))
			vx_tunnel_set_peer(t, (const struct sockaddr *)&m->peer, m->peer_len);
		break;
	case CTL_KICK:
		vx_tunnel_kick(t);
		break;
	}
}

int net_engine_main(int argc, char **argv)
{
	struct vx_tunnel_config cfg = { .tap_fd = TAP_FD, .sock_fd = SOCK_FD };
	struct shared_stats *sh;
	struct vx_tunnel *t;
	struct ctl_msg m;
	char err[512];
	ssize_t n;
	int r;

	log_init("metac tunnel", LOG_LVL_INFO, 0);
	/* It will hold keys: no core dump of it, no ptrace by nobody. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	close_range(STATS_FD + 1, ~0U, 0);
	if (argc != 2 || fcntl(CTL_FD, F_GETFD) < 0 || fcntl(STATS_FD, F_GETFD) < 0) {
		fprintf(stderr, "metac: _tunnel is started by the daemon, with its control "
				"socket, TAP device, UDP socket and counters on fds 3 to 6\n");
		return EXIT_USAGE;
	}
	if ((n = recv(CTL_FD, &m, sizeof(m), 0)) != sizeof(m) || m.op != CTL_START ||
	    m.peer_len > sizeof(m.peer) ||
	    (m.mode != VX_MODE_PLAIN && m.mode != VX_MODE_ENCRYPTED)) {
		log_error("tunnel engine: no configuration");
		_exit(EXIT_FAIL);
	}
	/* libsodium picks its fastest code for this CPU (and its random
	 * source) here; without it, the portable code runs. */
	if (sodium_init() < 0) {
		log_error("tunnel engine: libsodium does not start");
		_exit(EXIT_FAIL);
	}
	cfg.mode = m.mode;
	cfg.vni = m.vni;
	cfg.max_datagram = m.max_datagram;
	cfg.peer_len = m.peer_len;
	memcpy(&cfg.peer, &m.peer, sizeof(cfg.peer));
	cfg.rx = m.rx;
	cfg.tx = m.tx;
	sodium_memzero(&m, sizeof(m));
	if ((sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, STATS_FD, 0)) ==
	    MAP_FAILED) {
		log_error("tunnel engine: cannot map its counters: %s", strerror(errno));
		_exit(EXIT_FAIL);
	}
	r = vx_tunnel_new(&cfg, &t);
	sodium_memzero(&cfg, sizeof(cfg));
	if (r < 0) {
		log_error("tunnel engine: cannot start: %s", strerror(-r));
		_exit(EXIT_FAIL);
	}
	/* Confined before the first datagram is read. */
	if ((r = sandbox_enter(SANDBOX_TUNNEL, argv[1], -1, 0, err, sizeof(err))) < 0) {
		log_error("tunnel engine: %s", err);
		_exit(EXIT_FAIL);
	}
	if ((r = vx_tunnel_start(t)) < 0) {
		log_error("tunnel engine: cannot start its threads: %s", strerror(-r));
		_exit(EXIT_FAIL);
	}
	for (;;) {
		struct pollfd p = { .fd = CTL_FD, .events = POLLIN };
		if (poll(&p, 1, ENGINE_PUBLISH_MS) > 0) {
			n = recv(CTL_FD, &m, sizeof(m), MSG_DONTWAIT);
			/* The daemon let go of it (or is gone): the end. */
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (n == sizeof(m))
				apply(t, &m);
			sodium_memzero(&m, sizeof(m));
		}
		publish(t, sh);
	}
	/* Its keys go with the process. */
	_exit(EXIT_OK);
}
