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
#include <netinet/udp.h>
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

#define SOCKBUF (4 << 20)
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

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
	atomic_uint_fast64_t rx_dropped;
};

struct vx_tunnel {
	enum vx_mode mode;
	uint32_t vni;
	size_t max_datagram; /* UDP payload that fits the path */
	int tap, sock;
	int wake_tx; /* an eventfd */
	/* Sending (TAP -> UDP): its state, under txlock. */
	pthread_mutex_t txlock;
	struct tx_state *tx;
	uint8_t *tx_slots;
	uint64_t tx_last; /* when something last went out (ms) */
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

int vx_tap_open(const char *name, int persist, int vnet, char out_name[IFNAMSIZ])
{
	struct ifreq ifr = { 0 };
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK), e;

	if (fd < 0)
		return -errno;
	if (strlen(name) >= IFNAMSIZ) {
		close(fd);
		return -EINVAL;
	}
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
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
	int fd = vx_tap_open(name, 0, 0, got), e = 0;

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
	return ip + 8 +
	       (mode == VX_MODE_ENCRYPTED ? VX_ENC_HDR + VX_HDR + VX_VNET_HDR + VX_TAG : VX_HDR);
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

/* Datagrams in one UDP GSO send at most (the kernel's UDP_MAX_SEGMENTS
 * was 64 before it grew). */
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 65000
/* A frame's pieces, at the smallest datagram we allow (576-byte path). */
#define MAX_PIECES (VX_MAX_UNIT / (512 - VX_FRAG_HDR - VX_TAG) + 1)
#define MSGS (VX_BATCH * (MAX_PIECES / 8 + 2))

struct tx_state {
	struct vx_key key;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	unsigned gen;
	uint32_t unit_id;
	/* One message per frame (or per GSO_MAX_SEGS of its pieces). */
	struct mmsghdr m[MSGS];
	struct iovec iov[MSGS];
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} ctl[MSGS];
	int n;
	uint64_t bytes;
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

/* Queues len bytes of datagrams at p, each seg long but the last (seg 0:
 * one datagram): one message, sent with UDP GSO when there are several. */
static void tx_queue(struct tx_state *s, uint8_t *p, size_t len, size_t seg)
{
	struct msghdr *h = &s->m[s->n].msg_hdr;

	memset(h, 0, sizeof(*h));
	s->iov[s->n] = (struct iovec){ p, len };
	h->msg_iov = &s->iov[s->n];
	h->msg_iovlen = 1;
	if (seg && seg < len) {
		struct cmsghdr *c;
		h->msg_control = s->ctl[s->n].buf;
		h->msg_controllen = sizeof(s->ctl[s->n].buf);
		c = CMSG_FIRSTHDR(h);
		c->cmsg_level = SOL_UDP;
		c->cmsg_type = UDP_SEGMENT;
		c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
		*(uint16_t *)CMSG_DATA(c) = (uint16_t)seg;
	}
	s->n++;
}

/* Sends what is queued; waits a little for room rather than drop at once
 * (a burst may outrun the socket buffer). Returns how many messages went. */
static int tx_flush(struct vx_tunnel *t, struct tx_state *s)
{
	int sent = 0, n = s->n;

	s->n = 0;
	if (!s->peer_len) {
		INC(tx_dropped, (unsigned)n);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		s->m[i].msg_hdr.msg_name = &s->peer;
		s->m[i].msg_hdr.msg_namelen = s->peer_len;
	}
	while (sent < n) {
		int r = sendmmsg(t->sock, s->m + sent, (unsigned)(n - sent), MSG_DONTWAIT);
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

/* Seals one unit (its VXLAN header at unit, ulen bytes, VX_ENC_HDR bytes
 * of room before it and VX_TAG after) and queues its datagrams: one if
 * it fits, else pieces sealed into out. Returns how many datagrams. */
static int tx_unit(struct vx_tunnel *t, struct tx_state *s, uint8_t *unit, size_t ulen,
		   uint8_t *out)
{
	size_t piece, d, off, len, segs, k = 0;
	uint32_t id;

	if (!s->key.valid)
		return 0;
	if (VX_ENC_HDR + ulen + VX_TAG <= t->max_datagram) {
		if (!(len = vx_seal(&s->key, unit - VX_ENC_HDR, ulen)))
			return 0;
		tx_queue(s, unit - VX_ENC_HDR, len, 0);
		return 1;
	}
	piece = t->max_datagram - VX_FRAG_HDR - VX_TAG;
	d = VX_FRAG_HDR + piece + VX_TAG;
	/* One UDP GSO send is one IP datagram before it is cut: 64 KiB. */
	segs = GSO_MAX_BYTES / d < GSO_MAX_SEGS ? GSO_MAX_BYTES / d : GSO_MAX_SEGS;
	id = s->unit_id++;
	for (off = 0; off < ulen; off += piece, k++) {
		len = ulen - off < piece ? ulen - off : piece;
		if (!vx_seal_piece(&s->key, out + k * d, id, (uint32_t)ulen, (uint32_t)off,
				   unit + off, len))
			return 0;
		if (k % segs == segs - 1 || off + len == ulen) {
			size_t first = k - k % segs;
			tx_queue(s, out + first * d, (k - first) * d + VX_FRAG_HDR + len + VX_TAG, d);
		}
	}
	return (int)k;
}

static void send_keepalive(struct vx_tunnel *t, struct tx_state *s, uint8_t *slot)
{
	if (t->mode != VX_MODE_ENCRYPTED || !s->key.valid || !s->peer_len)
		return;
	vx_hdr_put(slot + VX_ENC_HDR, t->vni);
	if (tx_unit(t, s, slot + VX_ENC_HDR, VX_HDR, NULL) && tx_flush(t, s) == 1)
		INC(keepalives_tx, 1);
}

/* A tx slot: room for one unit sealed in place, then for its pieces. */
#define TX_SLOT_IN (VX_ENC_HDR + VX_MAX_UNIT + VX_TAG)
#define TX_SLOT (TX_SLOT_IN + MAX_PIECES * (VX_FRAG_HDR + VX_TAG) + VX_MAX_UNIT)

/* Moves one batch from the TAP device to the peer: how many frames.
 * Under txlock: the sending thread calls it, and so does the receiving
 * one right after it wrote to the device (see rx_main). */
static int tx_pump(struct vx_tunnel *t)
{
	struct tx_state *s = t->tx;
	int enc = t->mode == VX_MODE_ENCRYPTED, frames = 0;
	/* Where the TAP's bytes land: after the headers that go before. */
	size_t off = enc ? VX_ENC_HDR + VX_HDR : VX_HDR;
	size_t room = enc ? VX_VNET_HDR + VX_MAX_FRAME : VX_MAX_FRAME;
	uint64_t bytes = 0;

	tx_refresh(t, s);
	while (frames < VX_BATCH && s->n < MSGS - MAX_PIECES / 8 - 2) {
		uint8_t *b = t->tx_slots + (size_t)frames * TX_SLOT;
		ssize_t r = read(t->tap, b + off, room);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		frames++;
		bytes += (uint64_t)r;
		if (enc) {
			vx_hdr_put(b + VX_ENC_HDR, t->vni);
			if (!tx_unit(t, s, b + VX_ENC_HDR, VX_HDR + (size_t)r, b + TX_SLOT_IN))
				INC(tx_dropped, 1);
		} else {
			vx_hdr_put(b, t->vni);
			tx_queue(s, b, VX_HDR + (size_t)r, 0);
		}
	}
	if (frames) {
		int msgs = s->n;
		if (msgs && tx_flush(t, s) == msgs) {
			INC(tx_packets, (unsigned)frames);
			INC(tx_bytes, bytes);
		}
		t->tx_last = clock_mono_ms();
	}
	return frames;
}

static void *tx_main(void *arg)
{
	struct vx_tunnel *t = arg;

	while (!atomic_load(&t->stop)) {
		uint64_t now, left;
		int frames;

		pthread_mutex_lock(&t->txlock);
		frames = tx_pump(t);
		now = clock_mono_ms();
		if (!frames && (atomic_exchange(&t->kick, 0) || now - t->tx_last >= VX_KEEPALIVE_MS)) {
			send_keepalive(t, t->tx, t->tx_slots);
			t->tx_last = now;
		}
		left = t->tx_last + VX_KEEPALIVE_MS - now;
		pthread_mutex_unlock(&t->txlock);
		if (frames)
			continue;
		struct pollfd p[2] = { { .fd = t->tap, .events = POLLIN },
				       { .fd = t->wake_tx, .events = POLLIN } };
		if (poll(p, 2, left > VX_KEEPALIVE_MS ? 0 : (int)left) > 0 && p[1].revents)
			drain(t->wake_tx);
	}
	return NULL;
}

/* --- receiving: UDP -> TAP ----------------------------------------- */

#define REASM_SLOTS 8
#define RX_BUF 65536 /* one recvmmsg buffer: a UDP GRO train at most */

/* A unit being put together from its pieces. */
struct reasm {
	int used;
	uint32_t id, len, got;
	uint64_t age;
	uint8_t *buf;
};

struct rx_state {
	struct vx_key cur, prev;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	unsigned gen;
	struct reasm r[REASM_SLOTS];
	uint64_t clock;
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

/* A whole unit: its VXLAN header checked, its frame to the TAP device. */
static void rx_unit(struct vx_tunnel *t, const uint8_t *u, size_t n)
{
	const uint8_t *f;
	size_t len;
	enum vx_verdict v = vx_plain_open(u, n, t->vni, &f, &len);
	size_t min = t->mode == VX_MODE_ENCRYPTED ? VX_VNET_HDR + 14 : 14;

	if (v == VX_VNI) {
		INC(rx_vni, 1);
		return;
	}
	if (v != VX_OK) {
		INC(rx_bad, 1);
		return;
	}
	if (!len && t->mode == VX_MODE_ENCRYPTED) {
		INC(keepalives_rx, 1);
		return;
	}
	if (len < min) {
		INC(rx_bad, 1);
		return;
	}
	/* The kernel checks the virtio_net_hdr, as from any guest. */
	if (write(t->tap, f, len) == (ssize_t)len) {
		INC(rx_packets, 1);
		INC(rx_bytes, len - (min - 14));
	} else {
		INC(rx_dropped, 1); /* the device is down, or refused it */
	}
}

/* A piece: into its unit's slot (the oldest slot makes room). */
static void rx_piece(struct vx_tunnel *t, struct rx_state *s, const struct vx_opened *o)
{
	struct reasm *r = NULL, *oldest = &s->r[0];

	for (int i = 0; i < REASM_SLOTS; i++) {
		struct reasm *c = &s->r[i];
		if (c->used && c->id == o->unit_id && c->len == o->unit_len) {
			r = c;
			break;
		}
		if (!c->used || (oldest->used && c->age < oldest->age))
			oldest = c;
	}
	if (!r) {
		r = oldest;
		if (!r->buf && !(r->buf = malloc(VX_MAX_UNIT)))
			return;
		r->used = 1;
		r->id = o->unit_id;
		r->len = o->unit_len;
		r->got = 0;
	}
	r->age = ++s->clock;
	memcpy(r->buf + o->offset, o->data, o->len);
	r->got += (uint32_t)o->len;
	if (r->got < r->len)
		return;
	/* Pieces never repeat (each has its own counter); more bytes than
	 * the unit holds is a broken sender. */
	if (r->got == r->len)
		rx_unit(t, r->buf, r->len);
	else
		INC(rx_bad, 1);
	r->used = 0;
}

static void rx_one(struct vx_tunnel *t, struct rx_state *s, uint8_t *p, size_t n,
		   const struct sockaddr_storage *from, socklen_t flen)
{
	struct vx_opened o;
	enum vx_verdict v;
	uint32_t index;
	struct vx_key *k;

	if (t->mode == VX_MODE_PLAIN) {
		if (s->peer_len && !same_host(from, &s->peer)) {
			INC(rx_stranger, 1);
			return;
		}
		rx_unit(t, p, n);
		return;
	}
	if (!vx_enc_index(p, n, &index)) {
		INC(rx_bad, 1);
		return;
	}
	k = s->cur.valid && s->cur.index == index	  ? &s->cur
	    : s->prev.valid && s->prev.index == index ? &s->prev
						      : NULL;
	v = k ? vx_open(k, p, n, &o) : VX_INDEX;
	switch (v) {
	case VX_OK: break;
	case VX_BAD: INC(rx_bad, 1); return;
	case VX_VNI: INC(rx_vni, 1); return;
	case VX_INDEX: INC(rx_index, 1); return;
	case VX_AUTH: INC(rx_auth, 1); return;
	case VX_REPLAY: INC(rx_replay, 1); return;
	}
	if (!same_addr(from, flen, &s->peer, s->peer_len))
		roam(t, s, from, flen);
	if (o.frag)
		rx_piece(t, s, &o);
	else
		rx_unit(t, o.data, o.len);
}

static void *rx_main(void *arg)
{
	struct vx_tunnel *t = arg;
	struct rx_state *s = calloc(1, sizeof(*s));
	struct mmsghdr m[VX_BATCH];
	struct iovec iov[VX_BATCH];
	struct sockaddr_storage from[VX_BATCH];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl[VX_BATCH];
	uint8_t *bufs = malloc((size_t)VX_BATCH * RX_BUF);

	if (!bufs || !s) {
		log_error("tunnel: out of memory; the tunnel receives nothing");
		free(bufs);
		free(s);
		return NULL;
	}
	s->gen = ~0u;
	while (!atomic_load(&t->stop)) {
		int n;
		for (int i = 0; i < VX_BATCH; i++) {
			iov[i] = (struct iovec){ bufs + (size_t)i * RX_BUF, RX_BUF };
			m[i].msg_hdr = (struct msghdr){ .msg_name = &from[i],
							.msg_namelen = sizeof(from[i]),
							.msg_iov = &iov[i], .msg_iovlen = 1,
							.msg_control = ctl[i].buf,
							.msg_controllen = sizeof(ctl[i].buf) };
		}
		/* Blocks for the first datagram, then takes what else is there:
		 * no poll() between packets, one call per batch. */
		n = recvmmsg(t->sock, m, VX_BATCH, MSG_WAITFORONE, NULL);
		rx_refresh(t, s);
		if (n > 0) {
			for (int i = 0; i < n; i++) {
				/* With UDP GRO, a message may be a train of
				 * datagrams of one size (the last shorter). */
				size_t seg = m[i].msg_len, len = m[i].msg_len;
				struct cmsghdr *c;
				for (c = CMSG_FIRSTHDR(&m[i].msg_hdr); c;
				     c = CMSG_NXTHDR(&m[i].msg_hdr, c))
					if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO)
						seg = (size_t)*(int *)CMSG_DATA(c);
				if (!seg)
					seg = len;
				for (size_t off = 0; off < len; off += seg)
					rx_one(t, s, (uint8_t *)iov[i].iov_base + off,
					       len - off < seg ? len - off : seg, &from[i],
					       m[i].msg_hdr.msg_namelen);
			}
			/* What the kernel answered to the frames just written
			 * (an echo reply, a TCP ack) is often in the TAP
			 * device already: sent from here, it does not wait
			 * for the sending thread to wake up. */
			if (pthread_mutex_trylock(&t->txlock) == 0) {
				tx_pump(t);
				pthread_mutex_unlock(&t->txlock);
			}
			continue;
		}
		/* 0: shut down (vx_tunnel_free); errors: ICMP ones surface here
		 * (a peer not listening yet), nothing to do but go on. */
	}
	sodium_memzero(&s->cur, sizeof(s->cur));
	sodium_memzero(&s->prev, sizeof(s->prev));
	for (int i = 0; i < REASM_SLOTS; i++)
		free(s->r[i].buf);
	free(s);
	free(bufs);
	return NULL;
}

/* --- the tunnel ---------------------------------------------------- */

int vx_udp_open(const struct sockaddr *local, socklen_t len)
{
	int sz = SOCKBUF, pmtu = IP_PMTUDISC_DO, one = 1, fd, e;

	/* Blocking: the receiving thread sleeps in recvmmsg; sends say
	 * MSG_DONTWAIT. */
	if ((fd = socket(local->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	/* Never fragmented on the underlay: the MTU is set so that frames
	 * fit. An IPv6 socket serves IPv4 peers too (v4-mapped addresses). */
	if (local->sa_family == AF_INET6) {
		int pmtu6 = IPV6_PMTUDISC_DO, off = 0;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
		setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu6, sizeof(pmtu6));
	}
	setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu));
	/* Trains of datagrams in one receive (and one send: UDP_SEGMENT). */
	setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
	if (bind(fd, local, len) < 0) {
		e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

int vx_udp_port(int sock)
{
	struct net_addr a;
	a.len = sizeof(a.ss);
	if (getsockname(sock, (struct sockaddr *)&a.ss, &a.len) < 0)
		return -errno;
	return net_addr_port(&a);
}

int vx_tunnel_new(const struct vx_tunnel_config *cfg, struct vx_tunnel **out)
{
	struct vx_tunnel *t = calloc(1, sizeof(*t));
	int e;

	if (!t) {
		close(cfg->tap_fd);
		close(cfg->sock_fd);
		return -ENOMEM;
	}
	t->mode = cfg->mode;
	t->vni = cfg->vni;
	t->max_datagram = cfg->max_datagram ? cfg->max_datagram : 1472;
	if (t->max_datagram < 512)
		t->max_datagram = 512;
	if (t->max_datagram > 65507)
		t->max_datagram = 65507;
	t->tap = cfg->tap_fd;
	t->sock = cfg->sock_fd;
	t->wake_tx = -1;
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->txlock, NULL);
	t->tx = calloc(1, sizeof(*t->tx));
	t->tx_slots = malloc((size_t)VX_BATCH * TX_SLOT);
	t->tx_last = clock_mono_ms();
	if (!t->tx || !t->tx_slots) {
		errno = ENOMEM;
		goto fail;
	}
	t->tx->gen = ~0u;
	if (cfg->peer_len) {
		memcpy(&t->peer, &cfg->peer, cfg->peer_len);
		t->peer_len = cfg->peer_len;
	}
	fcntl(t->tap, F_SETFL, fcntl(t->tap, F_GETFL) | O_NONBLOCK);
	if (t->mode == VX_MODE_ENCRYPTED) {
		/* Large TCP (and UDP) segments and unfinished checksums from
		 * the TAP device, passed on whole with their virtio_net_hdr:
		 * the receiving kernel finishes the work, or need not do it at
		 * all. The header is little-endian whatever the CPU. */
		int hsz = VX_VNET_HDR, le = 1;
		unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
		ioctl(t->tap, TUNSETVNETHDRSZ, &hsz);
		ioctl(t->tap, TUNSETVNETLE, &le);
		if (ioctl(t->tap, TUNSETOFFLOAD, off | TUN_F_USO4 | TUN_F_USO6) < 0 &&
		    ioctl(t->tap, TUNSETOFFLOAD, off) < 0)
			log_warn("tunnel: no offloads on the TAP device: %m");
	}
	if ((t->wake_tx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		goto fail;
	if (cfg->rx.valid)
		vx_tunnel_rx_key(t, cfg->rx.index, cfg->rx.key);
	if (cfg->tx.valid)
		vx_tunnel_tx_key(t, cfg->tx.index, cfg->tx.key);
	*out = t;
	return 0;
fail:
	e = -errno;
	vx_tunnel_free(t);
	return e;
}

int vx_tunnel_start(struct vx_tunnel *t)
{
	int e;

	if (t->threads)
		return -EALREADY;
	if ((e = pthread_create(&t->tx_thread, NULL, tx_main, t)) != 0)
		return -e;
	t->threads = 1;
	if ((e = pthread_create(&t->rx_thread, NULL, rx_main, t)) != 0)
		return -e;
	t->threads = 2;
	return 0;
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
		/* Wakes the receiver out of recvmmsg. */
		shutdown(t->sock, SHUT_RDWR);
		pthread_join(t->rx_thread, NULL);
	}
	if (t->sock >= 0)
		close(t->sock);
	if (t->wake_tx >= 0)
		close(t->wake_tx);
	close(t->tap);
	sodium_memzero(&t->rx_key, sizeof(t->rx_key));
	sodium_memzero(&t->tx_key, sizeof(t->tx_key));
	if (t->tx)
		sodium_memzero(&t->tx->key, sizeof(t->tx->key));
	free(t->tx);
	free(t->tx_slots);
	pthread_mutex_destroy(&t->txlock);
	pthread_mutex_destroy(&t->lock);
	free(t);
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
	GET(keepalives_tx); GET(keepalives_rx); GET(rx_dropped);
#undef GET
	pthread_mutex_lock(&t->lock);
	memcpy(&a.ss, &t->peer, sizeof(a.ss));
	a.len = t->peer_len;
	pthread_mutex_unlock(&t->lock);
	if (a.len)
		net_addr_format(&a, s->peer, sizeof(s->peer));
}
