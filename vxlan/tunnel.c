/*
 * The tunnel engine (see tunnel.h). Each direction is one thread with
 * non-blocking descriptors: it moves whole batches while there is work
 * and sleeps in poll() only when the descriptor is empty, so a busy
 * tunnel makes one system call per batch on the UDP side.
 *
 * The control side (keys, the peer's address) is shared under a mutex
 * and a generation number each thread checks once per batch; counters
 * are relaxed atomics.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "vxlan/tunnel.h"

/* A batch slot: room for the encrypted header, the VXLAN header, the
 * largest frame a TAP device gives, and the tag. */
#define SLOT (VX_ENC_HDR + VX_HDR + VX_MAX_FRAME + VX_TAG)
#define SOCKBUF (4 << 20)

struct ctl_key {
	uint32_t index;
	uint8_t key[VX_KEY_LEN];
	int valid;
};

struct counters {
	atomic_uint_fast64_t tx_packets, tx_bytes, tx_dropped;
	atomic_uint_fast64_t rx_packets, rx_bytes;
	atomic_uint_fast64_t rx_bad, rx_vni, rx_index, rx_auth, rx_replay, rx_stranger;
	atomic_uint_fast64_t keepalives_tx, keepalives_rx;
};

struct vx_tunnel {
	enum vx_mode mode;
	uint32_t vni;
	int tap, sock;
	int wake_tx, wake_rx; /* eventfds */
	atomic_int stop, kick;
	pthread_t tx_thread, rx_thread;
	int threads;

	pthread_mutex_t lock; /* the fields below */
	struct ctl_key rx_key, tx_key;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	atomic_uint gen; /* bumped when any of them changes */

	struct counters c;
};

#define INC(field, n) atomic_fetch_add_explicit(&t->c.field, (n), memory_order_relaxed)

/* --- TAP devices --------------------------------------------------- */

int vx_tap_open(const char *name, int persist, char out_name[IFNAMSIZ])
{
	struct ifreq ifr = { 0 };
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK), e;

	if (fd < 0)
		return -errno;
	if (strlen(name) >= IFNAMSIZ) {
		close(fd);
		return -EINVAL;
	}
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || (persist && ioctl(fd, TUNSETPERSIST, 1) < 0)) {
		e = -errno;
		close(fd);
		return e;
	}
	snprintf(out_name, IFNAMSIZ, "%s", ifr.ifr_name);
	return fd;
}

int vx_tap_destroy(const char *name)
{
	char got[IFNAMSIZ];
	int fd = vx_tap_open(name, 0, got), e = 0;

	if (fd < 0)
		return fd;
	if (ioctl(fd, TUNSETPERSIST, 0) < 0)
		e = -errno;
	close(fd);
	return e;
}

unsigned vx_overhead(enum vx_mode mode, int family)
{
	unsigned ip = family == AF_INET6 ? 40 : 20;
	return ip + 8 + (mode == VX_MODE_ENCRYPTED ? VX_ENC_OVERHEAD : VX_HDR);
}

unsigned vx_path_mtu(const struct sockaddr *addr, socklen_t len)
{
	int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0), mtu = 0;
	socklen_t sl = sizeof(mtu);

	if (fd < 0)
		return 0;
	if (connect(fd, addr, len) == 0)
		getsockopt(fd, addr->sa_family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP,
			   addr->sa_family == AF_INET6 ? IPV6_MTU : IP_MTU, &mtu, &sl);
	close(fd);
	return mtu > 0 ? (unsigned)mtu : 0;
}

/* --- shared state -------------------------------------------------- */

static void wake(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, sizeof(one)) < 0) {
		/* A full eventfd wakes its reader anyway. */
	}
}

static void drain(int fd)
{
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing was pending. */
	}
}

static int same_addr(const struct sockaddr_storage *a, socklen_t al,
		     const struct sockaddr_storage *b, socklen_t bl)
{
	return al == bl && !memcmp(a, b, al);
}

/* Same host, any port: where a plain VTEP's packets come from. */
static int same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
}

/* --- sending: TAP -> UDP ------------------------------------------- */

struct tx_state {
	struct vx_key key;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	unsigned gen;
};

static void tx_refresh(struct vx_tunnel *t, struct tx_state *s)
{
	unsigned g = atomic_load(&t->gen);
	if (g == s->gen)
		return;
	pthread_mutex_lock(&t->lock);
	s->gen = atomic_load(&t->gen);
	if (t->tx_key.valid && (!s->key.valid || s->key.index != t->tx_key.index ||
				memcmp(s->key.key, t->tx_key.key, VX_KEY_LEN))) {
		memset(&s->key, 0, sizeof(s->key));
		s->key.index = t->tx_key.index;
		memcpy(s->key.key, t->tx_key.key, VX_KEY_LEN);
		s->key.valid = 1;
	}
	s->peer = t->peer;
	s->peer_len = t->peer_len;
	pthread_mutex_unlock(&t->lock);
}

/* Sends n prepared datagrams; waits a little for room rather than drop
 * at once (a burst may outrun the socket buffer). Returns how many went. */
static int send_batch(struct vx_tunnel *t, struct tx_state *s, struct mmsghdr *m, int n)
{
	int sent = 0;
	for (int i = 0; i < n; i++) {
		m[i].msg_hdr.msg_name = &s->peer;
		m[i].msg_hdr.msg_namelen = s->peer_len;
	}
	while (sent < n) {
		int r = sendmmsg(t->sock, m + sent, (unsigned)(n - sent), 0);
		if (r > 0) {
			sent += r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = t->sock, .events = POLLOUT };
			if (poll(&p, 1, 100) > 0)
				continue;
		}
		/* Unreachable peer, a full queue for too long...: the rest is
		 * lost, as the network would lose it. */
		INC(tx_dropped, (unsigned)(n - sent));
		break;
	}
	return sent;
}

static void send_keepalive(struct vx_tunnel *t, struct tx_state *s, uint8_t *buf)
{
	struct iovec iov;
	struct mmsghdr m = { .msg_hdr = { .msg_iov = &iov, .msg_iovlen = 1 } };
	size_t len;

	if (t->mode != VX_MODE_ENCRYPTED || !s->key.valid || !s->peer_len)
		return;
	vx_hdr_put(buf + VX_ENC_HDR, t->vni);
	if (!(len = vx_seal(&s->key, buf, VX_HDR)))
		return;
	iov = (struct iovec){ buf, len };
	if (send_batch(t, s, &m, 1) == 1)
		INC(keepalives_tx, 1);
}

static void *tx_main(void *arg)
{
	struct vx_tunnel *t = arg;
	struct tx_state s = { .gen = ~0u };
	struct mmsghdr m[VX_BATCH];
	struct iovec iov[VX_BATCH];
	uint8_t *slots = malloc((size_t)VX_BATCH * SLOT);
	size_t off = t->mode == VX_MODE_ENCRYPTED ? VX_ENC_HDR + VX_HDR : VX_HDR;
	uint64_t last = clock_mono_ms();

	if (!slots) {
		log_error("tunnel: out of memory; the tunnel sends nothing");
		return NULL;
	}
	memset(m, 0, sizeof(m));
	while (!atomic_load(&t->stop)) {
		int n = 0;
		uint64_t bytes = 0, now;

		tx_refresh(t, &s);
		while (n < VX_BATCH) {
			uint8_t *b = slots + (size_t)n * SLOT;
			ssize_t r = read(t->tap, b + off, VX_MAX_FRAME);
			size_t len;
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			bytes += (uint64_t)r;
			if (t->mode == VX_MODE_ENCRYPTED) {
				vx_hdr_put(b + VX_ENC_HDR, t->vni);
				if (!s.key.valid || !(len = vx_seal(&s.key, b, VX_HDR + (size_t)r))) {
					INC(tx_dropped, 1);
					continue;
				}
			} else {
				vx_hdr_put(b, t->vni);
				len = VX_HDR + (size_t)r;
			}
			iov[n] = (struct iovec){ b, len };
			m[n].msg_hdr.msg_iov = &iov[n];
			m[n].msg_hdr.msg_iovlen = 1;
			n++;
		}
		if (n) {
			if (!s.peer_len) {
				INC(tx_dropped, (unsigned)n);
			} else {
				int sent = send_batch(t, &s, m, n);
				INC(tx_packets, (unsigned)sent);
				INC(tx_bytes, sent == n ? bytes : 0);
			}
			last = clock_mono_ms();
			continue;
		}
		now = clock_mono_ms();
		if (atomic_exchange(&t->kick, 0) || now - last >= VX_KEEPALIVE_MS) {
			send_keepalive(t, &s, slots);
			last = now;
		}
		struct pollfd p[2] = { { .fd = t->tap, .events = POLLIN },
				       { .fd = t->wake_tx, .events = POLLIN } };
		uint64_t left = last + VX_KEEPALIVE_MS - clock_mono_ms();
		if (poll(p, 2, left > VX_KEEPALIVE_MS ? 0 : (int)left) > 0 && p[1].revents)
			drain(t->wake_tx);
	}
	sodium_memzero(&s.key, sizeof(s.key));
	free(slots);
	return NULL;
}

/* --- receiving: UDP -> TAP ----------------------------------------- */

struct rx_state {
	struct vx_key cur, prev;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	unsigned gen;
};

static void rx_refresh(struct vx_tunnel *t, struct rx_state *s)
{
	unsigned g = atomic_load(&t->gen);
	if (g == s->gen)
		return;
	pthread_mutex_lock(&t->lock);
	s->gen = atomic_load(&t->gen);
	if (t->rx_key.valid && (!s->cur.valid || s->cur.index != t->rx_key.index)) {
		/* A new key: the old one stays for packets already on their way. */
		s->prev = s->cur;
		memset(&s->cur, 0, sizeof(s->cur));
		s->cur.index = t->rx_key.index;
		memcpy(s->cur.key, t->rx_key.key, VX_KEY_LEN);
		s->cur.valid = 1;
	}
	s->peer = t->peer;
	s->peer_len = t->peer_len;
	pthread_mutex_unlock(&t->lock);
}

/* An authenticated packet from somewhere new: the peer has moved. */
static void roam(struct vx_tunnel *t, struct rx_state *s, const struct sockaddr_storage *from,
		 socklen_t len)
{
	char was[64], now[64];
	struct net_addr a;

	pthread_mutex_lock(&t->lock);
	memcpy(&a.ss, &t->peer, sizeof(a.ss));
	a.len = t->peer_len;
	if (a.len)
		net_addr_format(&a, was, sizeof(was));
	else
		snprintf(was, sizeof(was), "nowhere");
	t->peer = *from;
	t->peer_len = len;
	atomic_fetch_add(&t->gen, 1);
	pthread_mutex_unlock(&t->lock);
	s->peer = *from;
	s->peer_len = len;
	memcpy(&a.ss, from, sizeof(a.ss));
	a.len = len;
	net_addr_format(&a, now, sizeof(now));
	log_info("tunnel: the peer is now at %s (was %s)", now, was);
	wake(t->wake_tx);
}

static void rx_one(struct vx_tunnel *t, struct rx_state *s, uint8_t *p, size_t n,
		   const struct sockaddr_storage *from, socklen_t flen)
{
	enum vx_verdict v;
	uint8_t *frame;
	size_t len;
	uint32_t index;
	struct vx_key *k;

	if (t->mode == VX_MODE_PLAIN) {
		const uint8_t *f;
		if (s->peer_len && !same_host(from, &s->peer)) {
			INC(rx_stranger, 1);
			return;
		}
		v = vx_plain_open(p, n, t->vni, &f, &len);
		frame = (uint8_t *)f;
	} else if (!vx_enc_index(p, n, &index)) {
		v = VX_BAD;
	} else {
		k = s->cur.valid && s->cur.index == index	 ? &s->cur
		    : s->prev.valid && s->prev.index == index ? &s->prev
							      : NULL;
		v = k ? vx_open(k, p, n, t->vni, &frame, &len) : VX_INDEX;
		if (v == VX_OK && !same_addr(from, flen, &s->peer, s->peer_len))
			roam(t, s, from, flen);
	}
	switch (v) {
	case VX_OK:
		break;
	case VX_BAD: INC(rx_bad, 1); return;
	case VX_VNI: INC(rx_vni, 1); return;
	case VX_INDEX: INC(rx_index, 1); return;
	case VX_AUTH: INC(rx_auth, 1); return;
	case VX_REPLAY: INC(rx_replay, 1); return;
	}
	if (!len) {
		INC(keepalives_rx, 1);
		return;
	}
	if (len < 14) {
		INC(rx_bad, 1);
		return;
	}
	if (write(t->tap, frame, len) == (ssize_t)len) {
		INC(rx_packets, 1);
		INC(rx_bytes, len);
	}
}

static void *rx_main(void *arg)
{
	struct vx_tunnel *t = arg;
	struct rx_state s = { .gen = ~0u };
	struct mmsghdr m[VX_BATCH];
	struct iovec iov[VX_BATCH];
	struct sockaddr_storage from[VX_BATCH];
	uint8_t *slots = malloc((size_t)VX_BATCH * SLOT);

	if (!slots) {
		log_error("tunnel: out of memory; the tunnel receives nothing");
		return NULL;
	}
	while (!atomic_load(&t->stop)) {
		int n;
		rx_refresh(t, &s);
		for (int i = 0; i < VX_BATCH; i++) {
			iov[i] = (struct iovec){ slots + (size_t)i * SLOT, SLOT };
			m[i].msg_hdr = (struct msghdr){ .msg_name = &from[i],
							.msg_namelen = sizeof(from[i]),
							.msg_iov = &iov[i], .msg_iovlen = 1 };
		}
		n = recvmmsg(t->sock, m, VX_BATCH, 0, NULL);
		if (n > 0) {
			for (int i = 0; i < n; i++)
				rx_one(t, &s, iov[i].iov_base, m[i].msg_len, &from[i],
				       m[i].msg_hdr.msg_namelen);
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			/* ICMP errors surface here (a peer not listening yet):
			 * nothing to do but go on. */
			continue;
		}
		struct pollfd p[2] = { { .fd = t->sock, .events = POLLIN },
				       { .fd = t->wake_rx, .events = POLLIN } };
		if (poll(p, 2, -1) > 0 && p[1].revents)
			drain(t->wake_rx);
	}
	sodium_memzero(&s.cur, sizeof(s.cur));
	sodium_memzero(&s.prev, sizeof(s.prev));
	free(slots);
	return NULL;
}

/* --- the tunnel ---------------------------------------------------- */

int vx_tunnel_new(const struct vx_tunnel_config *cfg, struct vx_tunnel **out)
{
	struct vx_tunnel *t = calloc(1, sizeof(*t));
	int sz = SOCKBUF, pmtu = IP_PMTUDISC_DO, e;

	if (!t) {
		close(cfg->tap_fd);
		return -ENOMEM;
	}
	t->mode = cfg->mode;
	t->vni = cfg->vni;
	t->tap = cfg->tap_fd;
	t->sock = t->wake_tx = t->wake_rx = -1;
	pthread_mutex_init(&t->lock, NULL);
	if (cfg->peer_len) {
		memcpy(&t->peer, &cfg->peer, cfg->peer_len);
		t->peer_len = cfg->peer_len;
	}
	fcntl(t->tap, F_SETFL, fcntl(t->tap, F_GETFL) | O_NONBLOCK);
	t->sock = socket(cfg->local.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (t->sock < 0)
		goto fail;
	setsockopt(t->sock, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(t->sock, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	/* Never fragmented on the underlay: the MTU is set so that frames
	 * fit. An IPv6 socket serves IPv4 peers too (v4-mapped addresses). */
	if (cfg->local.ss_family == AF_INET6) {
		int pmtu6 = IPV6_PMTUDISC_DO, off = 0;
		setsockopt(t->sock, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
		setsockopt(t->sock, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu6, sizeof(pmtu6));
	}
	setsockopt(t->sock, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu));
	if (bind(t->sock, (const struct sockaddr *)&cfg->local, cfg->local_len) < 0)
		goto fail;
	if ((t->wake_tx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
	    (t->wake_rx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		goto fail;
	if ((e = pthread_create(&t->tx_thread, NULL, tx_main, t)) != 0) {
		errno = e;
		goto fail;
	}
	t->threads = 1;
	if ((e = pthread_create(&t->rx_thread, NULL, rx_main, t)) != 0) {
		errno = e;
		goto fail;
	}
	t->threads = 2;
	*out = t;
	return 0;
fail:
	e = -errno;
	vx_tunnel_free(t);
	return e;
}

void vx_tunnel_free(struct vx_tunnel *t)
{
	if (!t)
		return;
	atomic_store(&t->stop, 1);
	if (t->threads >= 1) {
		wake(t->wake_tx);
		pthread_join(t->tx_thread, NULL);
	}
	if (t->threads >= 2) {
		wake(t->wake_rx);
		pthread_join(t->rx_thread, NULL);
	}
	if (t->sock >= 0)
		close(t->sock);
	if (t->wake_tx >= 0)
		close(t->wake_tx);
	if (t->wake_rx >= 0)
		close(t->wake_rx);
	close(t->tap);
	sodium_memzero(&t->rx_key, sizeof(t->rx_key));
	sodium_memzero(&t->tx_key, sizeof(t->tx_key));
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int vx_tunnel_local_port(const struct vx_tunnel *t)
{
	struct net_addr a;
	a.len = sizeof(a.ss);
	if (getsockname(t->sock, (struct sockaddr *)&a.ss, &a.len) < 0)
		return -errno;
	return net_addr_port(&a);
}

static void set_key(struct vx_tunnel *t, struct ctl_key *k, uint32_t index,
		    const uint8_t key[VX_KEY_LEN])
{
	pthread_mutex_lock(&t->lock);
	k->index = index;
	memcpy(k->key, key, VX_KEY_LEN);
	k->valid = 1;
	atomic_fetch_add(&t->gen, 1);
	pthread_mutex_unlock(&t->lock);
	wake(t->wake_tx);
	wake(t->wake_rx);
}

void vx_tunnel_rx_key(struct vx_tunnel *t, uint32_t index, const uint8_t key[VX_KEY_LEN])
{
	set_key(t, &t->rx_key, index, key);
}

void vx_tunnel_tx_key(struct vx_tunnel *t, uint32_t index, const uint8_t key[VX_KEY_LEN])
{
	set_key(t, &t->tx_key, index, key);
}

void vx_tunnel_set_peer(struct vx_tunnel *t, const struct sockaddr *sa, socklen_t len)
{
	pthread_mutex_lock(&t->lock);
	memcpy(&t->peer, sa, len);
	t->peer_len = len;
	atomic_fetch_add(&t->gen, 1);
	pthread_mutex_unlock(&t->lock);
	wake(t->wake_tx);
	wake(t->wake_rx);
}

void vx_tunnel_kick(struct vx_tunnel *t)
{
	atomic_store(&t->kick, 1);
	wake(t->wake_tx);
}

void vx_tunnel_stats(struct vx_tunnel *t, struct vx_stats *s)
{
	struct net_addr a;

	memset(s, 0, sizeof(*s));
#define GET(f) s->f = atomic_load_explicit(&t->c.f, memory_order_relaxed)
	GET(tx_packets); GET(tx_bytes); GET(tx_dropped);
	GET(rx_packets); GET(rx_bytes);
	GET(rx_bad); GET(rx_vni); GET(rx_index); GET(rx_auth); GET(rx_replay); GET(rx_stranger);
	GET(keepalives_tx); GET(keepalives_rx);
#undef GET
	pthread_mutex_lock(&t->lock);
	memcpy(&a.ss, &t->peer, sizeof(a.ss));
	a.len = t->peer_len;
	pthread_mutex_unlock(&t->lock);
	if (a.len)
		net_addr_format(&a, s->peer, sizeof(s->peer));
}
