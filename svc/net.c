/*
 * The net service and applet: Ethernet segments between nodes.
 *
 * An L2Interface is a TAP device of this node ("newlocal:DEV" makes it,
 * "local:DEV" takes one that exists). Binding two of them (bindTo, which
 * calls the other's setupVxlan) starts a tunnel engine (vxlan/tunnel.c)
 * at each end: encrypted datagrams whose keys the two ends tell each
 * other over the capability connection, and change every
 * NET_REKEY_MS. The end that bound pings the other every NET_PING_MS;
 * when that fails (the other node went away), the daemon's binding
 * drops its tunnel and binds again, with backoff, until it works.
 *
 *   metac net export [--persistent] newlocal:DEV|local:DEV      -> ref
 *   metac net bind [--persistent] newlocal:DEV|local:DEV REF|vxlan://HOST[:PORT]/VNI
 *   metac net unbind DEV
 *   metac net list [--json]
 *   metac net interfaces [--json]   (the node's network devices)
 *   metac net show|destroy REF, metac net rename REF NAME   (an exported device)
 * vxlan://... is a plain RFC 7348 VTEP (a kernel vxlan device, a switch):
 * no encryption, so bind asks for --plain to say so.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "lib/netlink.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/net.h"
#include "svc/net_engine.h"
#include "svc/services.h"
#include "vxlan/tunnel.h"

#define NET_VNI 1 /* the VNI inside encrypted tunnels: one segment each */
#define NET_PING_MS 5000
#define NET_PING_TIMEOUT_MS 15000
#define NET_REKEY_MS 120000 /* METAC_NET_REKEY_SECONDS changes it */
#define NET_RETRY_MIN_MS 500
#define NET_RETRY_MAX_MS 10000
#define NET_DEFAULT_MTU 1500

/* --- interfaces ---------------------------------------------------- */

struct tend;

/* A TAP device this node serves, and the tunnel end using it (at most
 * one: a TAP descriptor goes to one engine). Devices of the daemon's own
 * network namespace are listed in S.ifs and live as long as it; one in
 * another namespace (a container's, see net_l2_netns) belongs to its
 * L2Interface and to the tunnel end on it, and goes with the last. */
struct netif {
	char name[IFNAMSIZ];
	struct tend *end;
	struct netif *next;
	int nsfd;      /* the namespace it is in; -1: the daemon's own */
	unsigned refs; /* of one in another namespace */
};

struct net_state {
	unsigned rekey_ms;
	struct node *node;
	struct netif *ifs;
	struct nbind *binds;
};

static struct net_state S;

static struct netif *netif_find(const char *name)
{
	for (struct netif *i = S.ifs; i; i = i->next)
		if (!strcmp(i->name, name))
			return i;
	return NULL;
}

static struct netif *netif_get(const char *name)
{
	struct netif *i = netif_find(name);
	if (!i && (i = calloc(1, sizeof(*i)))) {
		snprintf(i->name, sizeof(i->name), "%s", name);
		i->nsfd = -1;
		i->next = S.ifs;
		S.ifs = i;
	}
	return i;
}

static struct netif *netif_hold(struct netif *i)
{
	if (i->nsfd >= 0)
		i->refs++;
	return i;
}

static void netif_put(struct netif *i)
{
	if (i->nsfd < 0 || --i->refs)
		return;
	close(i->nsfd);
	free(i);
}

/* Runs the calling thread in namespace nsfd (nothing for -1) until
 * ns_leave(*home): devices are made and configured where they belong.
 * Only this thread moves; the tunnel threads and sockets stay home. */
static int ns_enter(int nsfd, int *home)
{
	*home = -1;
	if (nsfd < 0)
		return 0;
	if ((*home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	if (setns(nsfd, CLONE_NEWNET) < 0) {
		int e = -errno;
		close(*home);
		*home = -1;
		return e;
	}
	return 0;
}

static void ns_leave(int home)
{
	if (home < 0)
		return;
	/* Staying in a container's namespace would put every later device
	 * and socket of the daemon there: better to stop. */
	if (setns(home, CLONE_NEWNET) < 0) {
		log_error("net: cannot return to the daemon's network namespace: %m");
		abort();
	}
	close(home);
}

/* Opens a TAP device: made (persistent, so that its addresses outlive
 * a restart of the daemon) when create, else it must exist and be a TAP.
 * Returns the descriptor, or -errno with why. */
static int tap_open_here(const char *name, int create, int vnet, char *err, size_t errsz)
{
	char got[IFNAMSIZ];
	int fd;

	if (!*name || strlen(name) >= IFNAMSIZ || strchr(name, '/') || strchr(name, '%')) {
		snprintf(err, errsz, "'%s' is not an interface name (1 to 15 characters)", name);
		return -EINVAL;
	}
	if (!create && !if_nametoindex(name)) {
		snprintf(err, errsz, "there is no interface named %s (newlocal:%s makes one)",
			 name, name);
		return -ENODEV;
	}
	if ((fd = vx_tap_open(name, create, vnet, got)) < 0) {
		if (fd == -EINVAL || fd == -EBUSY)
			snprintf(err, errsz, "%s exists and is not a TAP device of ours", name);
		else
			snprintf(err, errsz, "cannot open TAP device %s: %s", name, strerror(-fd));
	}
	return fd;
}

/* As tap_open_here, in nif's namespace. One made in another namespace
 * is not persistent: it goes when its tunnel does. */
static int tap_open(const struct netif *nif, int create, int vnet, char *err, size_t errsz)
{
	int home, fd, e;

	if (nif->nsfd < 0)
		return tap_open_here(nif->name, create, vnet, err, errsz);
	if ((e = ns_enter(nif->nsfd, &home)) < 0) {
		snprintf(err, errsz, "cannot enter the network namespace of %s: %s", nif->name,
			 strerror(-e));
		return e;
	}
	fd = vx_tap_open(nif->name, 0, vnet, (char[IFNAMSIZ]){ 0 });
	if (fd < 0)
		snprintf(err, errsz, "cannot make TAP device %s: %s", nif->name, strerror(-fd));
	ns_leave(home);
	return fd;
}

/* Sets the MTU of device name in namespace nsfd (-1: the daemon's). */
static void set_mtu_in(int nsfd, const char *name, unsigned mtu)
{
	struct nl *nl;
	int home;

	if (ns_enter(nsfd, &home) < 0)
		return;
	if (nl_open(&nl) == 0) {
		if (nl_link_set_mtu(nl, name, mtu) < 0)
			log_warn("net: cannot set the MTU of %s to %u: %s", name, mtu, nl_error(nl));
		nl_close(nl);
	}
	ns_leave(home);
}

static void set_mtu(const struct netif *nif, unsigned mtu)
{
	set_mtu_in(nif->nsfd, nif->name, mtu);
}

/* The MTU a tunnel towards peer can carry without fragmenting. */
static unsigned tunnel_mtu(enum vx_mode mode, const struct sockaddr_storage *peer,
			   socklen_t len)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)peer;
	int v4 = peer->ss_family == AF_INET ||
		 (peer->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr));
	unsigned path = len ? vx_path_mtu((const struct sockaddr *)peer, len) : 0;
	unsigned over = vx_overhead(mode, v4 ? AF_INET : AF_INET6) + 14;

	/* An Ethernet segment is as wide as an Ethernet: a tunnel over
	 * loopback (two ends on one node, bridged with others) must not
	 * carry frames that its neighbours on the bridge would drop. */
	if (!path || path > NET_DEFAULT_MTU)
		path = NET_DEFAULT_MTU;
	return path > over + 576 ? path - over : 576;
}

/* HOST:PORT as a peer address for a dual-stack socket (IPv4 mapped). */
static int peer_addr(const char *host, int port, struct sockaddr_storage *out, socklen_t *len)
{
	char spec[300];
	struct net_addr a;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;

	snprintf(spec, sizeof(spec), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
	if (net_addr_parse(spec, port, &a) < 0)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (a.ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a.ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = s4->sin_port;
		s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xff;
		memcpy(&s6->sin6_addr.s6_addr[12], &s4->sin_addr, 4);
		*len = sizeof(*s6);
		return 0;
	}
	memcpy(out, &a.ss, a.len);
	*len = a.len;
	return 0;
}

static int have_ipv6(void)
{
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

/* An engine on a dual-stack socket (or IPv4 only, on a host without
 * IPv6); peer is v4-mapped for IPv4 (see peer_addr). */
/* The datagram an MTU-sized frame makes (what the engine cuts larger
 * frames to). */
static size_t datagram_for(enum vx_mode mode, unsigned mtu)
{
	return mtu + 14 + (mode == VX_MODE_ENCRYPTED ? VX_ENC_HDR + VX_HDR + VX_VNET_HDR + VX_TAG
						     : VX_HDR);
}

/* An engine (its own process, svc/net_engine.h) on tap, taken, with the
 * keys of an encrypted tunnel (rx, tx; NULL for plain); lost runs if it
 * dies for good. */
static int engine_start(const char *name, enum vx_mode mode, int tap, uint32_t vni,
			int local_port, const struct sockaddr_storage *peer, socklen_t peer_len,
			unsigned mtu, const struct vx_key_cfg *rx, const struct vx_key_cfg *tx,
			void (*lost)(void *arg, const char *why), void *arg,
			struct net_engine **out)
{
	struct vx_tunnel_config cfg = { .mode = mode, .tap_fd = tap, .vni = vni,
					.max_datagram = datagram_for(mode, mtu) };
	int r;
	const struct sockaddr_in6 *p6 = (const struct sockaddr_in6 *)peer;
	struct sockaddr_storage local = { 0 };
	socklen_t local_len;

	if (have_ipv6()) {
		struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;
		l6->sin6_family = AF_INET6;
		l6->sin6_addr = in6addr_any;
		l6->sin6_port = htons((uint16_t)local_port);
		local_len = sizeof(*l6);
		if (peer_len) {
			memcpy(&cfg.peer, peer, peer_len);
			cfg.peer_len = peer_len;
		}
	} else {
		struct sockaddr_in *l4 = (struct sockaddr_in *)&local;
		l4->sin_family = AF_INET;
		l4->sin_port = htons((uint16_t)local_port);
		local_len = sizeof(*l4);
		if (peer_len && IN6_IS_ADDR_V4MAPPED(&p6->sin6_addr)) {
			struct sockaddr_in *q4 = (struct sockaddr_in *)&cfg.peer;
			q4->sin_family = AF_INET;
			q4->sin_port = p6->sin6_port;
			memcpy(&q4->sin_addr, &p6->sin6_addr.s6_addr[12], 4);
			cfg.peer_len = sizeof(*q4);
		} else if (peer_len) {
			close(tap);
			return -EAFNOSUPPORT;
		}
	}
	if ((cfg.sock_fd = vx_udp_open((const struct sockaddr *)&local, local_len)) < 0) {
		close(tap);
		return cfg.sock_fd;
	}
	if (rx)
		cfg.rx = *rx;
	if (tx)
		cfg.tx = *tx;
	r = net_engine_start(S.node, name, &cfg, lost, arg, out);
	sodium_memzero(&cfg, sizeof(cfg));
	return r;
}

/* A key for engine_start. */
static struct vx_key_cfg key_cfg(uint32_t index, const uint8_t key[VX_KEY_LEN])
{
	struct vx_key_cfg k = { .valid = 1, .index = index };
	memcpy(k.key, key, VX_KEY_LEN);
	return k;
}

/* --- tunnel ends --------------------------------------------------- */

/* One end of a binding: the engine on this node's TAP, and the other
 * end (a capability) to tell new keys and to ping. */
struct tend {
	struct cap cap;
	struct netif *nif;
	struct net_engine *tun;
	struct cap *peer;        /* the other end's Tunnel */
	uint32_t rx_index;
	struct loop_timer *rekey, *ping;
	int rekeying;           /* a new key told, not yet acknowledged */
	uint64_t rekeys;        /* keys told and acknowledged */
	uint64_t ping_sent;     /* when the ping in flight left (0: none) */
	int lost;               /* its engine died for good: pings fail */
	/* The binding this end belongs to, told when the other end fails. */
	void (*failed)(void *arg, const char *why);
	void *failed_arg;
};

/* Stops t's engine and timers and lets go of its peer. t may be gone
 * when this returns (see the end): callers do not touch it after. */
static void tend_stop(struct tend *t)
{
	net_engine_stop(t->tun);
	t->tun = NULL;
	if (t->nif && t->nif->end == t)
		t->nif->end = NULL;
	if (t->nif)
		netif_put(t->nif);
	t->nif = NULL;
	loop_timer_del(t->rekey);
	loop_timer_del(t->ping);
	t->rekey = t->ping = NULL;
	t->failed = NULL;
	/* Last, and t untouched after: when both ends are on this node,
	 * the peer may hold the last reference to t, and stopping it
	 * lets go of that. */
	struct cap *peer = t->peer;
	t->peer = NULL;
	cap_unref(peer);
}

static void tend_fail(struct tend *t, const char *why)
{
	void (*failed)(void *, const char *) = t->failed;
	void *arg = t->failed_arg;
	tend_stop(t);
	if (failed)
		failed(arg, why);
}

/* Its engine died for good: as if the other end had failed (a binding
 * binds again), or just stopped (an exported end: its binder's pings
 * fail, and it binds again). */
static void tend_engine_lost(void *arg, const char *why)
{
	struct tend *t = arg;
	t->lost = 1;
	if (t->failed)
		tend_fail(t, why);
	else
		tend_stop(t);
}

static void new_key(uint32_t *index, uint8_t key[VX_KEY_LEN])
{
	randombytes_buf(index, sizeof(*index));
	randombytes_buf(key, VX_KEY_LEN);
}

static void rekey_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct tend *t = arg;
	t->rekeying = 0;
	if (!err)
		t->rekeys++;
	if (err && t->failed)
		tend_fail(t, errmsg);
	cap_unref(&t->cap);
}

/* A new key to receive with: installed here first (the old one stays
 * valid), then told to the other end, which sends with it from then on. */
static void tend_rekey(struct loop *l, struct loop_timer *tm, void *arg)
{
	struct tend *t = arg;
	uint8_t key[VX_KEY_LEN];
	struct msg p;

	/* One new key at a time: until the other end has it, it sends with
	 * the one before, which must stay valid here. */
	if (!t->tun || !t->peer || t->rekeying)
		return;
	t->rekeying = 1;
	new_key(&t->rx_index, key);
	net_engine_rx_key(t->tun, t->rx_index, key);
	msg_init(&p);
	msg_put_u64(&p, t->rx_index);
	msg_put_bytes(&p, key, VX_KEY_LEN);
	sodium_memzero(key, sizeof(key));
	rpc_call(t->peer, IFACE_TUNNEL, TUNNEL_REKEY, &p, rekey_done, cap_ref(&t->cap));
}

static void ping_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct tend *t = arg;
	t->ping_sent = 0;
	if (err && t->failed)
		tend_fail(t, errmsg);
	cap_unref(&t->cap);
}

static void tend_ping(struct loop *l, struct loop_timer *tm, void *arg)
{
	struct tend *t = arg;
	struct rpc_conn *rc;
	struct msg p;

	if (!t->peer)
		return;
	if (t->ping_sent) {
		/* A connection that answers nothing (the other side's address
		 * went away under it) is given up, so that binding again
		 * starts afresh. */
		if (loop_now_ms(l) - t->ping_sent >= NET_PING_TIMEOUT_MS &&
		    (rc = cap_conn(t->peer)))
			rpc_conn_abort(rc, "no answer to a tunnel ping");
		return;
	}
	t->ping_sent = loop_now_ms(l);
	msg_init(&p);
	rpc_call(t->peer, IFACE_TUNNEL, TUNNEL_PING, &p, ping_done, cap_ref(&t->cap));
}

static void tend_call(struct cap *c, struct rpc_call *call)
{
	struct tend *t = (struct tend *)c;
	struct msg_rd r;
	const uint8_t *key;
	size_t klen;
	uint64_t index, mtu;

	if (call->iface != IFACE_TUNNEL) {
		rpc_return_unknown(call, "tunnel");
		return;
	}
	msg_rd_init(&r, &call->params);
	switch (call->method) {
	case TUNNEL_PING:
		/* Not for an end replaced by a binding after it (its binder
		 * would take the device back, and so on). */
		if (t->lost)
			rpc_return_error(call, -ENOTCONN, "the other end's tunnel engine stopped");
		else
			rpc_return(call);
		return;
	case TUNNEL_REKEY:
		if (msg_get_u64(&r, &index) < 0 || index > UINT32_MAX ||
		    msg_get_bytes(&r, &key, &klen) < 0 || klen != VX_KEY_LEN) {
			rpc_return_error(call, -EINVAL, "malformed key");
			return;
		}
		if (!t->tun) {
			rpc_return_error(call, -ENOTCONN, "this tunnel has stopped");
			return;
		}
		net_engine_tx_key(t->tun, (uint32_t)index, key);
		rpc_return(call);
		return;
	case TUNNEL_SET_MTU:
		if (msg_get_u64(&r, &mtu) < 0 || mtu < 576 || mtu > VX_MAX_FRAME) {
			rpc_return_error(call, -EINVAL, "malformed MTU");
			return;
		}
		if (t->nif)
			set_mtu(t->nif, (unsigned)mtu);
		rpc_return(call);
		return;
	}
	rpc_return_unknown(call, "tunnel");
}

static void tend_free(struct cap *c)
{
	tend_stop((struct tend *)c);
	free(c);
}

static const struct cap_ops tend_ops = {
	.name = "tunnel",
	.call = tend_call,
	.free = tend_free,
};

/* A new end on nif, whose TAP goes to an engine: the caller starts it. */
static struct tend *tend_new(struct netif *nif)
{
	struct tend *t = calloc(1, sizeof(*t));
	struct loop *l = node_loop(S.node);

	if (!t)
		return NULL;
	cap_init(&t->cap, &tend_ops);
	t->nif = netif_hold(nif);
	if (!(t->rekey = loop_timer_new(l, tend_rekey, t)) ||
	    loop_timer_arm(t->rekey, S.rekey_ms, S.rekey_ms) < 0) {
		loop_timer_del(t->rekey);
		netif_put(nif);
		free(t);
		return NULL;
	}
	return t;
}

/* Drops whatever end nif had: a new binding replaces the old one. */
static void netif_take(struct netif *nif, struct tend *t)
{
	if (nif->end && nif->end != t) {
		log_info("net: %s: a new binding replaces the one before", nif->name);
		tend_stop(nif->end);
	}
	nif->end = t;
}

/* --- L2Interface --------------------------------------------------- */

struct l2 {
	struct cap cap;
	char name[IFNAMSIZ];
	int create; /* newlocal: make the device when needed */
	struct netif *nif; /* in another namespace; NULL: S.ifs by name */
};

static struct netif *l2_netif(struct l2 *x)
{
	return x->nif ? x->nif : netif_get(x->name);
}

/* setupVxlan, the callee's side: a tunnel towards the caller. */
static void l2_setup(struct l2 *x, struct rpc_call *call)
{
	struct msg_rd r;
	uint64_t vni, index, mtu_hint;
	const uint8_t *key;
	size_t klen;
	char hint[256], err[256];
	struct cap *peer;
	struct sockaddr_storage ha;
	socklen_t hlen = 0;
	struct netif *nif;
	struct tend *t;
	uint8_t mykey[VX_KEY_LEN];
	unsigned mtu;
	int fd, e, port;

	msg_rd_init(&r, &call->params);
	if (msg_get_u64(&r, &vni) < 0 || vni > VX_MAX_VNI || msg_get_u64(&r, &index) < 0 ||
	    index > UINT32_MAX || msg_get_bytes(&r, &key, &klen) < 0 || klen != VX_KEY_LEN ||
	    msg_get_str(&r, hint, sizeof(hint)) < 0 || msg_get_u64(&r, &mtu_hint) < 0 ||
	    msg_get_cap(&r, &peer) < 0) {
		rpc_return_error(call, -EINVAL, "malformed tunnel request");
		return;
	}
	/* A TAP device takes one descriptor: a binding before this one
	 * lets go of it first. */
	if (!(nif = l2_netif(x)) || !(t = tend_new(nif))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	netif_take(nif, t);
	if ((fd = tap_open(nif, x->create, 1, err, sizeof(err))) < 0) {
		cap_unref(&t->cap);
		rpc_return_error(call, fd, "%s", err);
		return;
	}
	/* Where the caller is: a hint for the MTU; the engine learns its
	 * real address from its first packet. */
	if (*hint)
		peer_addr(hint, 1, &ha, &hlen);
	mtu = tunnel_mtu(VX_MODE_ENCRYPTED, &ha, hlen);
	if (mtu_hint && mtu_hint < mtu)
		mtu = (unsigned)mtu_hint;
	/* The engine starts with both keys: nothing it reads is for a key
	 * not yet told. */
	new_key(&t->rx_index, mykey);
	struct vx_key_cfg rk = key_cfg(t->rx_index, mykey), tk = key_cfg((uint32_t)index, key);
	e = engine_start(x->name, VX_MODE_ENCRYPTED, fd, (uint32_t)vni, 0, NULL, 0, mtu, &rk, &tk,
			 tend_engine_lost, t, &t->tun);
	sodium_memzero(&rk, sizeof(rk));
	sodium_memzero(&tk, sizeof(tk));
	if (e < 0) {
		sodium_memzero(mykey, sizeof(mykey));
		cap_unref(&t->cap);
		rpc_return_error(call, e, "cannot start the tunnel: %s", strerror(-e));
		return;
	}
	t->peer = cap_ref(peer);
	set_mtu(nif, mtu);
	port = net_engine_local_port(t->tun);
	log_info("net: %s: a tunnel end on UDP port %d, MTU %u", x->name, port, mtu);
	msg_put_cap(&call->results, &t->cap);
	msg_put_u64(&call->results, t->rx_index);
	msg_put_bytes(&call->results, mykey, VX_KEY_LEN);
	msg_put_str(&call->results, node_advertise(S.node));
	msg_put_u64(&call->results, (uint64_t)port);
	msg_put_u64(&call->results, mtu);
	sodium_memzero(mykey, sizeof(mykey));
	cap_unref(&t->cap); /* the results hold it now */
	rpc_return(call);
}

/* bindTo: this end calls the other's setupVxlan, then starts its own. */
struct bind_ctx {
	struct rpc_call *call; /* answered with the holder */
	struct l2 *x;
	struct tend *t;
	int fd;
	uint8_t key[VX_KEY_LEN];
	char host_hint[256];
};

static void bind_ctx_free(struct bind_ctx *b)
{
	if (b->fd >= 0)
		close(b->fd);
	if (b->t)
		cap_unref(&b->t->cap);
	cap_unref(&b->x->cap);
	sodium_memzero(b->key, sizeof(b->key));
	free(b);
}

static void bind_setup_done(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct bind_ctx *b = arg;
	struct msg_rd r;
	struct cap *peer;
	const uint8_t *key;
	size_t klen;
	uint64_t index, port, mtu;
	char host[256];
	struct sockaddr_storage pa;
	socklen_t plen;
	unsigned mine;
	struct tend *t = b->t;
	int e;

	if (err) {
		rpc_return_error(b->call, err, "%s", errmsg);
		bind_ctx_free(b);
		return;
	}
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &peer) < 0 || msg_get_u64(&r, &index) < 0 || index > UINT32_MAX ||
	    msg_get_bytes(&r, &key, &klen) < 0 || klen != VX_KEY_LEN ||
	    msg_get_str(&r, host, sizeof(host)) < 0 || msg_get_u64(&r, &port) < 0 ||
	    port == 0 || port > 65535 || msg_get_u64(&r, &mtu) < 0 ||
	    peer_addr(host, (int)port, &pa, &plen) < 0) {
		rpc_return_error(b->call, -EPROTO, "the other end's answer is malformed");
		bind_ctx_free(b);
		return;
	}
	/* Both ends carry what the narrower path allows. */
	mine = tunnel_mtu(VX_MODE_ENCRYPTED, &pa, plen);
	if (mtu >= 576 && mtu < mine)
		mine = (unsigned)mtu;
	struct vx_key_cfg rk = key_cfg(t->rx_index, b->key), tk = key_cfg((uint32_t)index, key);
	e = engine_start(t->nif->name, VX_MODE_ENCRYPTED, b->fd, NET_VNI, 0, &pa, plen, mine, &rk,
			 &tk, tend_engine_lost, t, &t->tun);
	sodium_memzero(&rk, sizeof(rk));
	sodium_memzero(&tk, sizeof(tk));
	if (e < 0) {
		b->fd = -1;
		rpc_return_error(b->call, e, "cannot start the tunnel: %s", strerror(-e));
		bind_ctx_free(b);
		return;
	}
	b->fd = -1;
	t->peer = cap_ref(peer);
	set_mtu(t->nif, mine);
	if (mine < mtu) {
		struct msg p;
		msg_init(&p);
		msg_put_u64(&p, mine);
		rpc_call(peer, IFACE_TUNNEL, TUNNEL_SET_MTU, &p, NULL, NULL);
	}
	/* The other end learns where this one is from its first packet. */
	net_engine_kick(t->tun);
	if ((t->ping = loop_timer_new(node_loop(S.node), tend_ping, t)))
		loop_timer_arm(t->ping, NET_PING_MS, NET_PING_MS);
	log_info("net: %s: tunnel to %s:%llu, MTU %u", t->nif->name, host,
		 (unsigned long long)port, mine);
	rpc_return_cap(b->call, cap_ref(&t->cap));
	bind_ctx_free(b);
}

static void l2_bind_to(struct l2 *x, struct rpc_call *call)
{
	struct msg_rd r;
	struct cap *other;
	uint64_t vni;
	struct bind_ctx *b;
	struct netif *nif;
	struct sockaddr_storage none;
	char err[256];
	struct msg p;

	msg_rd_init(&r, &call->params);
	if (msg_get_cap(&r, &other) < 0 || msg_get_u64(&r, &vni) < 0 || vni > VX_MAX_VNI) {
		rpc_return_error(call, -EINVAL, "bindTo takes an L2Interface and a VNI");
		return;
	}
	if (!(b = calloc(1, sizeof(*b)))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		return;
	}
	b->call = call;
	b->x = (struct l2 *)cap_ref(&x->cap);
	b->fd = -1;
	if (!(nif = l2_netif(x)) || !(b->t = tend_new(nif))) {
		rpc_return_error(call, -ENOMEM, "out of memory");
		bind_ctx_free(b);
		return;
	}
	netif_take(nif, b->t);
	if ((b->fd = tap_open(nif, x->create, 1, err, sizeof(err))) < 0) {
		rpc_return_error(call, b->fd, "%s", err);
		bind_ctx_free(b);
		return;
	}
	new_key(&b->t->rx_index, b->key);
	memset(&none, 0, sizeof(none));
	msg_init(&p);
	msg_put_u64(&p, NET_VNI);
	msg_put_u64(&p, b->t->rx_index);
	msg_put_bytes(&p, b->key, VX_KEY_LEN);
	msg_put_str(&p, node_advertise(S.node));
	msg_put_u64(&p, 0);
	msg_put_cap(&p, &b->t->cap);
	rpc_call(other, IFACE_L2_INTERFACE, L2_INTERFACE_SETUP_VXLAN, &p, bind_setup_done, b);
}

/* Refs naming device old (newlocal: or local:) follow it to its new
 * name, or are revoked (new NULL). */
static void refs_follow(const char *old, const char *new)
{
	static const char *const kinds[] = { "newlocal:", "local:" };
	for (size_t i = 0; i < 2; i++) {
		char o[64], n[64];
		snprintf(o, sizeof(o), "%s%s", kinds[i], old);
		snprintf(n, sizeof(n), "%s%s", kinds[i], new ? new : "");
		if (ref_store_redescribe(node_db(S.node), "net", o, new ? n : NULL) < 0)
			log_warn("net: the refs to %s do not follow it", old);
	}
}

static void l2_call(struct cap *c, struct rpc_call *call)
{
	struct l2 *x = (struct l2 *)c;
	struct nl *nl;
	char name[IFNAMSIZ + 1];
	struct msg_rd r;
	struct netif *nif;
	int e;

	if (call->iface == IFACE_L2_INTERFACE && call->method == L2_INTERFACE_SETUP_VXLAN) {
		l2_setup(x, call);
		return;
	}
	if (call->iface == IFACE_L2_INTERFACE && call->method == L2_INTERFACE_BIND_TO) {
		l2_bind_to(x, call);
		return;
	}
	if (call->iface != IFACE_KERNEL_INTERFACE) {
		rpc_return_unknown(call, "L2Interface");
		return;
	}
	if (x->nif && call->method != KERNEL_INTERFACE_GET_NAME) {
		rpc_return_error(call, -EPERM, "%s is a container's interface: it goes with the "
			      "container", x->name);
		return;
	}
	switch (call->method) {
	case KERNEL_INTERFACE_GET_NAME:
		msg_put_str(&call->results, x->name);
		rpc_return(call);
		return;
	case KERNEL_INTERFACE_RENAME:
		msg_rd_init(&r, &call->params);
		if (msg_get_str(&r, name, sizeof(name)) < 0 || !*name || strlen(name) >= IFNAMSIZ) {
			rpc_return_error(call, -EINVAL, "interface names are 1 to 15 characters");
			return;
		}
		if ((e = nl_open(&nl)) < 0) {
			rpc_return_error(call, e, "netlink: %s", strerror(-e));
			return;
		}
		if ((e = nl_link_rename(nl, x->name, name)) < 0) {
			rpc_return_error(call, e, "cannot rename %s: %s", x->name, nl_error(nl));
			nl_close(nl);
			return;
		}
		nl_close(nl);
		if ((nif = netif_find(x->name)))
			snprintf(nif->name, sizeof(nif->name), "%.*s", IFNAMSIZ - 1, name);
		refs_follow(x->name, name);
		snprintf(x->name, sizeof(x->name), "%.*s", IFNAMSIZ - 1, name);
		rpc_return(call);
		return;
	case KERNEL_INTERFACE_DESTROY:
		if ((nif = netif_find(x->name)) && nif->end)
			tend_stop(nif->end);
		if ((e = vx_tap_destroy(x->name)) < 0 && e != -ENODEV) {
			rpc_return_error(call, e, "cannot destroy %s: %s", x->name, strerror(-e));
			return;
		}
		/* Refs to it named a device that is no more. */
		refs_follow(x->name, NULL);
		log_info("net: %s destroyed", x->name);
		rpc_return(call);
		return;
	}
	rpc_return_unknown(call, "KernelInterface");
}

/* Objects that own nothing but their memory. */

static void l2_free(struct cap *c)
{
	struct l2 *x = (struct l2 *)c;
	if (x->nif) {
		if (x->nif->end)
			tend_stop(x->nif->end);
		netif_put(x->nif);
	}
	free(x);
}

static const struct cap_ops l2_ops = {
	.name = "L2Interface",
	.call = l2_call,
	.free = l2_free,
};

/* An L2Interface for "newlocal:DEV" or "local:DEV": checked now (a new
 * device is made at once, so that it can be given addresses). */
static int l2_new(const char *uri, struct cap **out, char *err, size_t errsz)
{
	const char *name = cli_local_path(uri);
	int create = 0, fd;
	struct l2 *x;

	if (!name && !strncmp(uri, "newlocal:", 9) && uri[9]) {
		name = uri + 9;
		create = 1;
	}
	if (!name) {
		snprintf(err, errsz, "'%s' is not newlocal:DEV or local:DEV", uri);
		return -EINVAL;
	}
	/* Made now if new (so that it can be given addresses), checked
	 * otherwise; one an engine here holds is there. */
	struct netif *nif = netif_find(name);
	if (!nif || !nif->end || !nif->end->tun) {
		if ((fd = tap_open_here(name, create, 0, err, errsz)) < 0)
			return fd;
		close(fd);
	}
	if (!(x = calloc(1, sizeof(*x))))
		return -ENOMEM;
	cap_init(&x->cap, &l2_ops);
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->create = create;
	*out = &x->cap;
	return 0;
}

int net_l2_netns(int nsfd, const char *name, struct cap **out, char *err, size_t errsz)
{
	struct l2 *x;

	if (!*name || strlen(name) >= IFNAMSIZ || strchr(name, '/') || strchr(name, '%')) {
		snprintf(err, errsz, "'%s' is not an interface name (1 to 15 characters)", name);
		return -EINVAL;
	}
	if (!(x = calloc(1, sizeof(*x))) || !(x->nif = calloc(1, sizeof(*x->nif)))) {
		free(x);
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	if ((x->nif->nsfd = fcntl(nsfd, F_DUPFD_CLOEXEC, 3)) < 0) {
		int e = -errno;
		free(x->nif);
		free(x);
		snprintf(err, errsz, "cannot hold the network namespace: %s", strerror(-e));
		return e;
	}
	x->nif->refs = 1;
	snprintf(x->nif->name, sizeof(x->nif->name), "%s", name);
	cap_init(&x->cap, &l2_ops);
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->create = 1;
	*out = &x->cap;
	return 0;
}

static int net_restore(struct node *n, const struct ref_record *rec, struct cap **out,
		       char *err, size_t errsz)
{
	return l2_new(rec->description, out, err, errsz);
}

/* --- bindings made by this daemon ---------------------------------- */

enum bind_state { NB_CONNECTING, NB_UP, NB_WAITING };

struct nbind {
	char dev[IFNAMSIZ];
	char local[64];
	char remote[REF_MAX_LEN];
	int persistent, plain;
	enum bind_state state;
	struct cap *holder;      /* the tunnel end (encrypted) */
	struct net_engine *plain_tun;
	struct loop_timer *retry;
	unsigned backoff;
	char why[400];
	unsigned mtu;
	struct rpc_call *call;   /* NET_ADMIN_BIND waiting for the first try */
	struct nbind *next;
};

static const char *const state_names[] = { "connecting", "up", "waiting to retry" };

static void nbind_connect(struct nbind *b);

static void nbind_answer(struct nbind *b, int err)
{
	struct rpc_call *call = b->call;
	b->call = NULL;
	if (!call)
		return;
	if (err)
		rpc_return_error(call, err, "%s", b->why);
	else
		rpc_return(call);
}

static void nbind_retry(struct loop *l, struct loop_timer *t, void *arg)
{
	nbind_connect(arg);
}

static void nbind_free(struct nbind *b);

/* The binding failed: try again later, or (the first try of one that
 * is not persistent) give up and tell the user why. */
static void nbind_failed(struct nbind *b, int err, const char *why)
{
	snprintf(b->why, sizeof(b->why), "%s", why);
	if (b->holder)
		tend_stop((struct tend *)b->holder);
	cap_unref(b->holder);
	b->holder = NULL;
	b->state = NB_WAITING;
	if (b->call && !b->persistent) {
		int made = !strncmp(b->local, "newlocal:", 9);
		char dev[IFNAMSIZ];
		snprintf(dev, sizeof(dev), "%s", b->dev);
		nbind_answer(b, err ? err : -EIO);
		nbind_free(b);
		/* A failed bind leaves nothing behind. */
		if (made)
			vx_tap_destroy(dev);
		return;
	}
	if (b->call) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%s (the binding is kept and tried again; "
			 "'metac net unbind %s' drops it)", why, b->dev);
		snprintf(b->why, sizeof(b->why), "%s", msg);
		nbind_answer(b, err ? err : -EIO);
		snprintf(b->why, sizeof(b->why), "%s", why);
	}
	b->backoff = b->backoff ? b->backoff * 2 : NET_RETRY_MIN_MS;
	if (b->backoff > NET_RETRY_MAX_MS)
		b->backoff = NET_RETRY_MAX_MS;
	log_warn("net: %s: %s; trying again in %u ms", b->dev, why, b->backoff);
	if (b->retry)
		loop_timer_arm(b->retry, b->backoff, 0);
}

static void nbind_end_failed(void *arg, const char *why)
{
	nbind_failed(arg, -ECONNRESET, why);
}

/* A plain VTEP's engine died for good: set up again, with backoff. */
static void nbind_plain_lost(void *arg, const char *why)
{
	struct nbind *b = arg;
	net_engine_stop(b->plain_tun);
	b->plain_tun = NULL;
	nbind_failed(b, -EIO, why);
}

static void nbind_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct nbind *b = arg;
	struct msg_rd r;
	struct cap *h;
	struct tend *t;

	if (b->state != NB_CONNECTING)
		return; /* unbound meanwhile */
	if (err) {
		nbind_failed(b, err, errmsg);
		return;
	}
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &h) < 0) {
		nbind_failed(b, -EPROTO, "bindTo answered with no tunnel");
		return;
	}
	b->holder = cap_ref(h);
	t = (struct tend *)h; /* a local object: bindTo ran here */
	t->failed = nbind_end_failed;
	t->failed_arg = b;
	b->state = NB_UP;
	b->backoff = 0;
	b->why[0] = 0;
	log_info("net: %s is bound", b->dev);
	nbind_answer(b, 0);
}

static void nbind_restored(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct nbind *b = arg;
	struct cap *remote, *local;
	struct msg_rd r;
	struct msg p;
	char why[256];

	if (b->state != NB_CONNECTING)
		return;
	if (err) {
		nbind_failed(b, err, errmsg);
		return;
	}
	msg_rd_init(&r, res);
	if (msg_get_cap(&r, &remote) < 0) {
		nbind_failed(b, -EPROTO, "the ref restored to nothing");
		return;
	}
	if ((err = l2_new(b->local, &local, why, sizeof(why))) < 0) {
		nbind_failed(b, err, why);
		return;
	}
	msg_init(&p);
	msg_put_cap(&p, remote);
	msg_put_u64(&p, NET_VNI);
	rpc_call(local, IFACE_L2_INTERFACE, L2_INTERFACE_BIND_TO, &p, nbind_bound, b);
	cap_unref(local);
}

/* vxlan://HOST[:PORT]/VNI */
static int parse_vxlan(const char *uri, char *host, size_t hsz, int *port, uint32_t *vni)
{
	const char *p = uri + 8, *slash = strrchr(p, '/'), *colon;
	char *end;
	unsigned long v;
	size_t hl;

	if (strncmp(uri, "vxlan://", 8) || !slash || !slash[1])
		return -EINVAL;
	v = strtoul(slash + 1, &end, 10);
	if (*end || v > VX_MAX_VNI)
		return -EINVAL;
	*vni = (uint32_t)v;
	*port = VX_PORT;
	hl = (size_t)(slash - p);
	if (*p == '[') {
		const char *rb = memchr(p, ']', hl);
		if (!rb)
			return -EINVAL;
		colon = rb + 1 < slash && rb[1] == ':' ? rb + 1 : NULL;
		if (snprintf(host, hsz, "%.*s", (int)(rb - p - 1), p + 1) >= (int)hsz)
			return -EINVAL;
	} else {
		colon = memchr(p, ':', hl);
		if (snprintf(host, hsz, "%.*s", (int)((colon ? colon : slash) - p), p) >= (int)hsz)
			return -EINVAL;
	}
	if (colon) {
		v = strtoul(colon + 1, &end, 10);
		if (end != slash || v == 0 || v > 65535)
			return -EINVAL;
		*port = (int)v;
	}
	return *host ? 0 : -EINVAL;
}

static void nbind_connect(struct nbind *b)
{
	char why[256], host[256];
	int fd, port, e;
	uint32_t vni;
	struct sockaddr_storage pa;
	socklen_t plen;
	struct netif *nif;

	b->state = NB_CONNECTING;
	if (!b->plain) {
		node_restore(S.node, b->remote, nbind_restored, b);
		return;
	}
	/* A plain VTEP: only this end to set up. */
	if (parse_vxlan(b->remote, host, sizeof(host), &port, &vni) < 0 ||
	    peer_addr(host, port, &pa, &plen) < 0) {
		nbind_failed(b, -EINVAL, "not vxlan://HOST[:PORT]/VNI");
		return;
	}
	const char *name = b->dev;
	if ((nif = netif_find(name)) && nif->end)
		tend_stop(nif->end);
	if ((fd = tap_open_here(name, !strncmp(b->local, "newlocal:", 9), 0, why, sizeof(why))) < 0) {
		nbind_failed(b, fd, why);
		return;
	}
	/* The VTEP sends to port 4789 (or its own): this end listens there. */
	b->mtu = tunnel_mtu(VX_MODE_PLAIN, &pa, plen);
	if ((e = engine_start(name, VX_MODE_PLAIN, fd, vni, port, &pa, plen, b->mtu, NULL, NULL,
			      nbind_plain_lost, b, &b->plain_tun)) < 0) {
		snprintf(why, sizeof(why), "cannot start the tunnel on UDP port %d: %s", port,
			 strerror(-e));
		nbind_failed(b, e, why);
		return;
	}
	set_mtu_in(-1, name, b->mtu);
	b->state = NB_UP;
	log_info("net: %s: plain VXLAN (VNI %u) with %s:%d, MTU %u", name, vni, host, port, b->mtu);
	nbind_answer(b, 0);
}

static struct nbind *nbind_find(const char *dev)
{
	for (struct nbind *b = S.binds; b; b = b->next)
		if (!strcmp(b->dev, dev))
			return b;
	return NULL;
}

static void nbind_free(struct nbind *b)
{
	struct nbind **pp;
	for (pp = &S.binds; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	if (b->holder)
		tend_stop((struct tend *)b->holder);
	cap_unref(b->holder);
	net_engine_stop(b->plain_tun);
	loop_timer_del(b->retry);
	b->state = NB_WAITING;
	free(b);
}

static void binds_store(struct nbind *b, int add)
{
	sqlite3_stmt *st;
	const char *sql = add ? "INSERT OR REPLACE INTO binds (service, target, source, uid, gid)"
				" VALUES ('net', ?1, ?2, 0, 0)"
			      : "DELETE FROM binds WHERE service = 'net' AND target = ?1";

	if (sqlite3_prepare_v2(node_db(S.node), sql, -1, &st, NULL) != SQLITE_OK) {
		log_warn("net: cannot record the binding of %s: %s", b->dev,
			 sqlite3_errmsg(node_db(S.node)));
		return;
	}
	sqlite3_bind_text(st, 1, b->local, -1, SQLITE_STATIC);
	if (add)
		sqlite3_bind_text(st, 2, b->remote, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_warn("net: cannot record the binding of %s", b->dev);
	sqlite3_finalize(st);
}

/* Starts a binding; call (may be NULL) is answered after the first try. */
static int nbind_start(const char *local, const char *remote, int persistent, int store,
		       struct rpc_call *call, char *err, size_t errsz)
{
	const char *name = cli_local_path(local);
	struct nbind *b;

	if (!name && !strncmp(local, "newlocal:", 9) && local[9])
		name = local + 9;
	if (!name || strlen(name) >= IFNAMSIZ) {
		snprintf(err, errsz, "'%s' is not newlocal:DEV or local:DEV", local);
		return -EINVAL;
	}
	if (strlen(remote) >= REF_MAX_LEN ||
	    (strncmp(remote, "ref://", 6) && strncmp(remote, "vxlan://", 8))) {
		snprintf(err, errsz, "'%s' is neither a ref nor vxlan://HOST[:PORT]/VNI", remote);
		return -EINVAL;
	}
	if (nbind_find(name)) {
		snprintf(err, errsz, "%s is bound already ('metac net unbind %s' first)", name, name);
		return -EBUSY;
	}
	if (!(b = calloc(1, sizeof(*b))))
		return -ENOMEM;
	snprintf(b->dev, sizeof(b->dev), "%s", name);
	snprintf(b->local, sizeof(b->local), "%s", local);
	snprintf(b->remote, sizeof(b->remote), "%s", remote);
	b->persistent = persistent;
	b->plain = !strncmp(remote, "vxlan://", 8);
	b->call = call;
	b->retry = loop_timer_new(node_loop(S.node), nbind_retry, b);
	b->next = S.binds;
	S.binds = b;
	if (persistent && store)
		binds_store(b, 1);
	nbind_connect(b);
	return 0;
}

/* --- administration ------------------------------------------------ */

static void admin_bind(struct rpc_call *call)
{
	struct msg_rd r;
	char local[64], remote[REF_MAX_LEN], err[256];
	int persistent, e;

	msg_rd_init(&r, &call->params);
	if (msg_get_str(&r, local, sizeof(local)) < 0 || msg_get_str(&r, remote, sizeof(remote)) < 0 ||
	    msg_get_bool(&r, &persistent) < 0) {
		rpc_return_error(call, -EINVAL, "malformed bind request");
		return;
	}
	if ((e = nbind_start(local, remote, persistent, 1, call, err, sizeof(err))) < 0)
		rpc_return_error(call, e, "%s", err);
}

static void admin_unbind(struct rpc_call *call)
{
	struct msg_rd r;
	char dev[IFNAMSIZ + 16];
	struct nbind *b;

	msg_rd_init(&r, &call->params);
	if (msg_get_str(&r, dev, sizeof(dev)) < 0) {
		rpc_return_error(call, -EINVAL, "malformed unbind request");
		return;
	}
	if (!(b = nbind_find(dev))) {
		rpc_return_error(call, -ENOENT, "%s is not bound here", dev);
		return;
	}
	char made[IFNAMSIZ] = "";
	if (b->persistent)
		binds_store(b, 0);
	nbind_answer(b, -ECANCELED);
	if (!strncmp(b->local, "newlocal:", 9))
		snprintf(made, sizeof(made), "%s", b->dev);
	log_info("net: %s is unbound", b->dev);
	nbind_free(b);
	/* What bind made, unbind takes away. */
	if (*made && vx_tap_destroy(made) < 0)
		log_warn("net: cannot remove %s", made);
	rpc_return(call);
}

static void put_stats(struct msg *m, const struct vx_stats *s)
{
	const uint64_t v[] = { s->tx_packets, s->tx_bytes, s->tx_dropped, s->rx_packets,
			       s->rx_bytes, s->rx_bad, s->rx_vni, s->rx_index, s->rx_auth,
			       s->rx_replay, s->rx_stranger, s->keepalives_tx, s->keepalives_rx,
			       s->rx_dropped };
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		msg_put_u64(m, v[i]);
}

static void list_one(struct msg *m, const char *dev, const char *remote, const char *mode,
		     const char *state, int persistent, struct net_engine *tun, uint64_t rekeys)
{
	struct vx_stats s = { 0 };
	struct nl *nl;
	struct nl_link l = { 0 };

	if (tun)
		net_engine_stats(tun, &s);
	if (nl_open(&nl) == 0) {
		nl_link_get(nl, dev, &l);
		nl_close(nl);
	}
	msg_put_str(m, dev);
	msg_put_str(m, remote);
	msg_put_str(m, mode);
	msg_put_str(m, state);
	msg_put_bool(m, persistent);
	msg_put_str(m, s.peer);
	msg_put_u64(m, l.mtu);
	put_stats(m, &s);
	msg_put_u64(m, rekeys);
}

static void admin_list(struct rpc_call *call)
{
	uint64_t n = 0;
	struct msg *m = &call->results;
	char shown[REF_MAX_LEN];

	for (struct nbind *b = S.binds; b; b = b->next)
		n++;
	for (struct netif *i = S.ifs; i; i = i->next)
		if (i->end && !nbind_find(i->name))
			n++;
	msg_put_u64(m, n);
	for (struct nbind *b = S.binds; b; b = b->next) {
		struct netif *i = netif_find(b->dev);
		char state[440];
		ref_redact(b->remote, shown, sizeof(shown));
		snprintf(state, sizeof(state), "%s%s%s", state_names[b->state],
			 b->why[0] && b->state != NB_UP ? ": " : "", b->state != NB_UP ? b->why : "");
		list_one(m, b->dev, shown, b->plain ? "plain" : "encrypted", state, b->persistent,
			 b->plain ? b->plain_tun : i && i->end ? i->end->tun : NULL,
			 !b->plain && i && i->end ? i->end->rekeys : 0);
	}
	/* Ends that other nodes bound to interfaces exported here. */
	for (struct netif *i = S.ifs; i; i = i->next)
		if (i->end && !nbind_find(i->name))
			list_one(m, i->name, "(exported)", "encrypted", i->end->tun ? "up" : "stopped",
				 0, i->end->tun, i->end->rekeys);
	rpc_return(call);
}

/* KernelNetworkNamespace: this node's devices. */
static void netns_call(struct cap *c, struct rpc_call *call)
{
	struct msg_rd r;
	char name[IFNAMSIZ + 16], uri[IFNAMSIZ + 32], err[256];
	struct nl *nl;
	struct nl_link *v;
	struct cap *x;
	size_t n;
	int e;

	if (call->iface != IFACE_KERNEL_NETNS) {
		rpc_return_unknown(call, "KernelNetworkNamespace");
		return;
	}
	switch (call->method) {
	case KERNEL_NETNS_LIST_INTERFACES:
		if ((e = nl_open(&nl)) < 0 || (e = nl_link_list(nl, &v, &n)) < 0) {
			rpc_return_error(call, e, "cannot list interfaces");
			if (e != -ENOMEM && nl)
				nl_close(nl);
			return;
		}
		nl_close(nl);
		msg_put_u64(&call->results, n);
		for (size_t i = 0; i < n; i++) {
			msg_put_str(&call->results, v[i].name);
			msg_put_str(&call->results, v[i].kind);
			msg_put_u64(&call->results, v[i].mtu);
			msg_put_bool(&call->results, !!(v[i].flags & IFF_UP));
		}
		free(v);
		rpc_return(call);
		return;
	case KERNEL_NETNS_CREATE_INTERFACE:
		msg_rd_init(&r, &call->params);
		if (msg_get_str(&r, name, sizeof(name)) < 0) {
			rpc_return_error(call, -EINVAL, "malformed request");
			return;
		}
		snprintf(uri, sizeof(uri), "newlocal:%s", name);
		if ((e = l2_new(uri, &x, err, sizeof(err))) < 0) {
			rpc_return_error(call, e, "%s", err);
			return;
		}
		rpc_return_cap(call, x);
		return;
	}
	rpc_return_unknown(call, "KernelNetworkNamespace");
}

static const struct cap_ops netns_ops = {
	.name = "KernelNetworkNamespace",
	.call = netns_call,
	.free = node_obj_free,
};

static void net_admin_call(struct cap *c, struct rpc_call *call)
{
	struct cap *ns;

	if (call->iface != IFACE_SERVICE_ADMIN) {
		rpc_return_unknown(call, "net admin");
		return;
	}
	switch (call->method) {
	case NET_ADMIN_BIND: admin_bind(call); return;
	case NET_ADMIN_UNBIND: admin_unbind(call); return;
	case NET_ADMIN_LIST: admin_list(call); return;
	case NET_ADMIN_NETNS:
		if (!(ns = node_obj_new(node_obj_node(c), &netns_ops))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, ns);
		return;
	}
	rpc_return_unknown(call, "net admin");
}

static const struct cap_ops net_admin_ops = {
	.name = "net admin",
	.call = net_admin_call,
	.free = node_obj_free,
};

static struct cap *net_admin_new(struct node *n)
{
	return node_obj_new(n, &net_admin_ops);
}

/* Bindings recorded as persistent come back once the node runs. */
static void binds_restore(struct loop *l, void *arg)
{
	sqlite3_stmt *st;
	char err[256];

	if (sqlite3_prepare_v2(node_db(S.node), "SELECT target, source FROM binds WHERE service = 'net'",
			       -1, &st, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *local = (const char *)sqlite3_column_text(st, 0);
		const char *remote = (const char *)sqlite3_column_text(st, 1);
		if (local && remote && nbind_start(local, remote, 1, 0, NULL, err, sizeof(err)) < 0)
			log_warn("net: cannot restore the binding of %s: %s", local, err);
	}
	sqlite3_finalize(st);
}

/* Tunnels stop with the daemon; their TAP devices stay (persistent). */
static void net_stop(struct node *n)
{
	while (S.binds)
		nbind_free(S.binds);
	while (S.ifs) {
		struct netif *i = S.ifs;
		S.ifs = i->next;
		if (i->end)
			tend_stop(i->end);
		free(i);
	}
}

static const struct node_service net_service = {
	.name = "net",
	.restore = net_restore,
	.admin = net_admin_new,
	.stop = net_stop,
};

int net_service_register(struct node *n)
{
	const char *rk = getenv("METAC_NET_REKEY_SECONDS");
	int e;
	S.node = n;
	S.rekey_ms = NET_REKEY_MS;
	if (rk && atoi(rk) > 0)
		S.rekey_ms = (unsigned)atoi(rk) * 1000u;
	if ((e = node_register_service(n, &net_service)) == 0)
		loop_defer(node_loop(n), binds_restore, n);
	return e;
}

/* --- applet -------------------------------------------------------- */

static int is_local_uri(const char *s)
{
	return cli_local_path(s) || (!strncmp(s, "newlocal:", 9) && s[9]);
}

static int net_export(const struct applet *self, int argc, char **argv)
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
		switch (c) {
		case 'p': persistent = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1 || !is_local_uri(argv[optind]))
		return cli_usage_error(self, "net export takes one newlocal:DEV or local:DEV");
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, "net", argv[optind], persistent, 0, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

static int net_bind(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "plain", no_argument, NULL, 'P' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	int c, persistent = 0, plain = 0, r = EXIT_FAIL;
	struct admin a;
	struct cap *na = NULL;
	struct msg p;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pa:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'P': plain = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 2 || !is_local_uri(argv[optind]))
		return cli_usage_error(self, "net bind takes newlocal:DEV or local:DEV, then a "
					     "ref or vxlan://HOST[:PORT]/VNI");
	if (!strncmp(argv[optind + 1], "vxlan://", 8) && !plain) {
		fprintf(stderr, "metac net: %s is a plain VXLAN peer: no encryption and no "
				"authentication; say --plain if that is what you want\n",
			argv[optind + 1]);
		return EXIT_USAGE;
	}
	if (admin_open_service(&a, sock, "net", &na) == 0) {
		msg_init(&p);
		msg_put_str(&p, argv[optind]);
		msg_put_str(&p, argv[optind + 1]);
		msg_put_bool(&p, persistent);
		if (admin_call(&a, na, IFACE_SERVICE_ADMIN, NET_ADMIN_BIND, &p, NULL,
			       "cannot bind") == 0)
			r = EXIT_OK;
	}
	cap_unref(na);
	admin_close(&a);
	return r;
}

static int net_unbind(const struct applet *self, int argc, char **argv)
{
	const char *sock = NULL;
	int r = EXIT_FAIL;
	struct admin a;
	struct cap *na = NULL;
	struct msg p;

	if (argc == 4 && !strcmp(argv[1], "--admin-socket")) {
		sock = argv[2];
		argv += 2;
		argc -= 2;
	}
	if (argc != 2)
		return cli_usage_error(self, "net unbind takes one device");
	if (admin_open_service(&a, sock, "net", &na) == 0) {
		msg_init(&p);
		msg_put_str(&p, argv[1]);
		if (admin_call(&a, na, IFACE_SERVICE_ADMIN, NET_ADMIN_UNBIND, &p, NULL,
			       "cannot unbind") == 0)
			r = EXIT_OK;
	}
	cap_unref(na);
	admin_close(&a);
	return r;
}

/* The options of the listing commands: --json, --admin-socket; -1 after
 * a usage error. */
static int list_opts(const struct applet *self, int argc, char **argv, const char *what,
		     int *json, const char **sock)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "ja:", opts, NULL)) != -1) {
		switch (c) {
		case 'j': *json = 1; break;
		case 'a': *sock = optarg; break;
		default: cli_usage_error(self, "unknown option"); return -1;
		}
	}
	if (optind != argc) {
		cli_usage_error(self, "%s takes no arguments", what);
		return -1;
	}
	return 0;
}

static const char *const counter_names[] = {
	"tx_packets", "tx_bytes", "tx_dropped", "rx_packets", "rx_bytes", "rx_bad", "rx_vni",
	"rx_index", "rx_auth", "rx_replay", "rx_stranger", "keepalives_tx", "keepalives_rx",
	"rx_dropped", "rekeys",
};
#define NCOUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))

static int net_list(const struct applet *self, int argc, char **argv)
{
	const char *sock = NULL;
	int json = 0, r = EXIT_FAIL;
	struct admin a;
	struct cap *na = NULL;
	struct msg res;
	struct msg_rd rd;
	uint64_t n;

	if (list_opts(self, argc, argv, "net list", &json, &sock) < 0)
		return EXIT_USAGE;
	msg_init(&res);
	if (admin_open_service(&a, sock, "net", &na) < 0 ||
	    admin_call(&a, na, IFACE_SERVICE_ADMIN, NET_ADMIN_LIST, NULL, &res,
		       "cannot list tunnels") < 0)
		goto out;
	msg_rd_init(&rd, &res);
	if (msg_get_u64(&rd, &n) < 0)
		goto bad;
	if (json)
		printf("[");
	else
		printf("%-15s %-9s %-7s %-21s %5s %12s %12s %8s  %s\n", "DEVICE", "MODE", "PERSIST",
		       "PEER", "MTU", "TX PACKETS", "RX PACKETS", "DROPPED", "STATE / REMOTE");
	for (uint64_t i = 0; i < n; i++) {
		char dev[IFNAMSIZ + 16], remote[REF_MAX_LEN], mode[16], state[460], peer[64];
		uint64_t mtu, v[NCOUNTERS], dropped;
		int persistent;
		if (msg_get_str(&rd, dev, sizeof(dev)) < 0 ||
		    msg_get_str(&rd, remote, sizeof(remote)) < 0 ||
		    msg_get_str(&rd, mode, sizeof(mode)) < 0 ||
		    msg_get_str(&rd, state, sizeof(state)) < 0 || msg_get_bool(&rd, &persistent) < 0 ||
		    msg_get_str(&rd, peer, sizeof(peer)) < 0 || msg_get_u64(&rd, &mtu) < 0)
			goto bad;
		for (size_t k = 0; k < NCOUNTERS; k++)
			if (msg_get_u64(&rd, &v[k]) < 0)
				goto bad;
		if (json) {
			printf("%s\n  {\"device\": ", i ? "," : "");
			cli_json_str(stdout, dev);
			printf(", \"remote\": ");
			cli_json_str(stdout, remote);
			printf(", \"mode\": \"%s\", \"state\": ", mode);
			cli_json_str(stdout, state);
			printf(", \"persistent\": %s, \"peer\": ", persistent ? "true" : "false");
			cli_json_str(stdout, peer);
			printf(", \"mtu\": %llu", (unsigned long long)mtu);
			for (size_t k = 0; k < NCOUNTERS; k++)
				printf(", \"%s\": %llu", counter_names[k], (unsigned long long)v[k]);
			printf("}");
			continue;
		}
		dropped = v[2] + v[13];
		for (size_t k = 5; k <= 10; k++)
			dropped += v[k];
		printf("%-15s %-9s %-7s %-21s %5llu %12llu %12llu %8llu  %s%s%s\n", dev, mode,
		       persistent ? "yes" : "no", *peer ? peer : "-", (unsigned long long)mtu,
		       (unsigned long long)v[0], (unsigned long long)v[3],
		       (unsigned long long)dropped, state, *remote ? " / " : "", remote);
	}
	if (json)
		printf("%s]\n", n ? "\n" : "");
	r = EXIT_OK;
	goto out;
bad:
	fprintf(stderr, "metac net: the daemon's list is malformed\n");
out:
	msg_free(&res);
	cap_unref(na);
	admin_close(&a);
	return r;
}

/* What a ref to an interface lets its holder do: show its name, rename
 * it, destroy it (KernelInterface). */
static int net_ref_call(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *cmd = argv[0];
	char name[IFNAMSIZ + 16];
	int c, r = EXIT_FAIL, rename = !strcmp(cmd, "rename"), method;
	struct admin a;
	struct cap *x = NULL;
	struct msg p, res;
	struct msg_rd rd;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c != 'a')
			return cli_usage_error(self, "unknown option");
		sock = optarg;
	}
	if (optind != argc - 1 - rename || strncmp(argv[optind], "ref://", 6))
		return cli_usage_error(self, rename ? "net rename takes a ref and a new name"
						    : "net %s takes a ref", cmd);
	method = rename ? KERNEL_INTERFACE_RENAME
		 : !strcmp(cmd, "destroy") ? KERNEL_INTERFACE_DESTROY : KERNEL_INTERFACE_GET_NAME;
	msg_init(&p);
	msg_init(&res);
	if (rename)
		msg_put_str(&p, argv[optind + 1]);
	if (admin_open(&a, admin_socket_path(sock)) == 0 && admin_restore(&a, argv[optind], &x) == 0 &&
	    admin_call(&a, x, IFACE_KERNEL_INTERFACE, method, &p, &res, "the interface refused") == 0) {
		msg_rd_init(&rd, &res);
		if (method == KERNEL_INTERFACE_GET_NAME && msg_get_str(&rd, name, sizeof(name)) == 0)
			printf("%s\n", name);
		r = EXIT_OK;
	}
	msg_free(&p);
	msg_free(&res);
	cap_unref(x);
	admin_close(&a);
	return r;
}

/* The devices of the node's network namespace (KernelNetworkNamespace). */
static int net_interfaces(const struct applet *self, int argc, char **argv)
{
	const char *sock = NULL;
	int json = 0, r = EXIT_FAIL;
	struct admin a;
	struct cap *na = NULL, *ns = NULL;
	struct msg res;
	struct msg_rd rd;
	uint64_t n;

	if (list_opts(self, argc, argv, "net interfaces", &json, &sock) < 0)
		return EXIT_USAGE;
	msg_init(&res);
	if (admin_open_service(&a, sock, "net", &na) < 0 ||
	    admin_call_cap(&a, na, IFACE_SERVICE_ADMIN, NET_ADMIN_NETNS, NULL, &ns,
			   "the daemon has no network namespace to show") < 0 ||
	    admin_call(&a, ns, IFACE_KERNEL_NETNS, KERNEL_NETNS_LIST_INTERFACES, NULL, &res,
		       "cannot list interfaces") < 0)
		goto out;
	msg_rd_init(&rd, &res);
	if (msg_get_u64(&rd, &n) < 0)
		goto bad;
	printf(json ? "[" : "%-16s %-10s %6s %s\n", "DEVICE", "KIND", "MTU", "STATE");
	for (uint64_t i = 0; i < n; i++) {
		char name[IFNAMSIZ + 16], kind[32];
		uint64_t mtu;
		int up;
		if (msg_get_str(&rd, name, sizeof(name)) < 0 || msg_get_str(&rd, kind, sizeof(kind)) < 0 ||
		    msg_get_u64(&rd, &mtu) < 0 || msg_get_bool(&rd, &up) < 0)
			goto bad;
		if (json) {
			printf("%s\n  {\"device\": ", i ? "," : "");
			cli_json_str(stdout, name);
			printf(", \"kind\": ");
			cli_json_str(stdout, kind);
			printf(", \"mtu\": %llu, \"up\": %s}", (unsigned long long)mtu,
			       up ? "true" : "false");
		} else {
			printf("%-16s %-10s %6llu %s\n", name, *kind ? kind : "-",
			       (unsigned long long)mtu, up ? "up" : "down");
		}
	}
	if (json)
		printf("%s]\n", n ? "\n" : "");
	r = EXIT_OK;
	goto out;
bad:
	fprintf(stderr, "metac net: the daemon's list is malformed\n");
out:
	msg_free(&res);
	cap_unref(ns);
	cap_unref(na);
	admin_close(&a);
	return r;
}

static int net_tunnel(const struct applet *self, int argc, char **argv)
{
	return net_engine_main(argc, argv);
}

int net_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", net_export },
		{ "bind", net_bind },
		{ "unbind", net_unbind },
		{ "list", net_list },
		{ "interfaces", net_interfaces },
		{ "show", net_ref_call },
		{ "rename", net_ref_call },
		{ "destroy", net_ref_call },
		{ "_tunnel", net_tunnel },
		{ 0 }
	};
	return cli_dispatch(applet_find("net"), cmds, argc, argv);
}
