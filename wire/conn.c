/*
 * Secure connections: Noise IK handshake, then AEAD-sealed records (see
 * conn.h for the framing). Everything is non-blocking on the event loop;
 * a peer costs at most one frame plus one read chunk of input buffer and
 * WIRE_OUT_LIMIT of output.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "wire/conn.h"
#include "wire/noise.h"

#define READ_CHUNK (256u << 10)
#define HDR 4
#define HS_MAX 1024
/* Buffers larger than this are let go of when they empty. */
#define KEEP_BUF (64u << 10)

enum state { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_SHUTDOWN, ST_DEAD };

struct wire_conn {
	struct loop *loop;
	int fd;
	enum wire_mode mode;
	enum state state;
	const struct wire_conn_ops *ops;
	void *arg;
	struct loop_watch *watch;
	struct loop_timer *hs_timer;
	uint32_t events;
	struct buf in, out;
	struct noise_hs hs;
	struct noise_cipher tx, rx;
	uint32_t tx_count, rx_count;
	uint8_t remote[NOISE_KEY_LEN];
	struct wire_acct *acct[WIRE_MAX_ACCTS]; /* the first: wire_conn_acct's */
	size_t charged;         /* what each has of this connection's buffers */
	uint64_t partial_since; /* a frame begun and not finished: since when */
	int fail_err; /* for a failure reported from the next round */
	unsigned paused : 1, flush_queued : 1, want_writable : 1,
		in_dispatch : 1, closing_cb : 1, rd_eof : 1;
	struct wire_conn *all_prev, *all_next; /* every connection not yet freed */
};

/* Every connection of the process, so that a shutdown can end them all
 * (wire_conn_abort_all). Loops are per thread; so is this list's use. */
static __thread struct wire_conn *all_conns;

static void conn_io(struct loop *l, int fd, uint32_t ev, void *arg);
static void conn_process(struct wire_conn *c);

static void set_events(struct wire_conn *c)
{
	uint32_t ev = 0;
	if (c->state == ST_CONNECTING || buf_avail(&c->out))
		ev |= EPOLLOUT;
	if (c->state != ST_CONNECTING && c->state != ST_SHUTDOWN && !c->paused &&
	    !c->rd_eof)
		ev |= EPOLLIN;
	if (ev != c->events) {
		loop_watch_set(c->watch, ev);
		c->events = ev;
	}
}

struct wire_acct *wire_acct_ref(struct wire_acct *a)
{
	a->refs++;
	return a;
}

void wire_acct_unref(struct wire_acct *a)
{
	if (a && --a->refs == 0)
		a->free(a);
}

/* Brings the account up to date with the buffers: the input buffer's
 * space (one frame at most, see conn_read) and the output not yet sent. */
static void acct_update(struct wire_conn *c)
{
	if (!c->acct[0])
		return;
	size_t now = c->state == ST_DEAD ? 0 : c->in.cap + buf_avail(&c->out);
	for (int i = 0; i < WIRE_MAX_ACCTS && c->acct[i]; i++)
		c->acct[i]->bytes = c->acct[i]->bytes - c->charged + now;
	c->charged = now;
}

/* The first account the connection's buffers take past its share. */
static struct wire_acct *acct_over(const struct wire_conn *c)
{
	for (int i = 0; i < WIRE_MAX_ACCTS && c->acct[i]; i++)
		if (c->acct[i]->max_bytes && c->acct[i]->bytes > c->acct[i]->max_bytes)
			return c->acct[i];
	return NULL;
}

int wire_conn_charge(struct wire_conn *c, struct wire_acct *a)
{
	int i;
	for (i = 0; i < WIRE_MAX_ACCTS && c->acct[i]; i++)
		if (c->acct[i] == a)
			return 0;
	if (i == WIRE_MAX_ACCTS)
		return -ENOSPC;
	c->acct[i] = wire_acct_ref(a);
	a->conns++;
	a->bytes += c->charged;
	acct_update(c);
	return 0;
}

struct wire_acct *wire_conn_acct(const struct wire_conn *c)
{
	return c->acct[0];
}

static void conn_free_cb(struct loop *l, void *arg)
{
	struct wire_conn *c = arg;
	for (int i = 0; i < WIRE_MAX_ACCTS && c->acct[i]; i++) {
		c->acct[i]->bytes -= c->charged;
		c->acct[i]->conns--;
		wire_acct_unref(c->acct[i]);
	}
	if (c->all_prev)
		c->all_prev->all_next = c->all_next;
	else
		all_conns = c->all_next;
	if (c->all_next)
		c->all_next->all_prev = c->all_prev;
	buf_wipe(&c->in);
	buf_wipe(&c->out);
	noise_hs_wipe(&c->hs);
	noise_cipher_wipe(&c->tx);
	noise_cipher_wipe(&c->rx);
	free(c);
}

/* Tear down now; the memory goes at the next dispatch round so that
 * callers up the stack may still look at c->state. */
static void conn_destroy(struct wire_conn *c)
{
	if (c->state == ST_DEAD)
		return;
	c->state = ST_DEAD;
	loop_watch_del(c->watch);
	if (c->hs_timer)
		loop_timer_del(c->hs_timer);
	/* Shut down, not only closed: a holder may keep a duplicate of the
	 * descriptor, and the peer must still see the end. */
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
	c->fd = -1;
	if (loop_defer(c->loop, conn_free_cb, c) < 0)
		log_error("wire: cannot defer free of a connection; leaking it");
}

static void conn_fail(struct wire_conn *c, int err)
{
	if (c->state == ST_DEAD)
		return;
	conn_destroy(c);
	if (c->ops->closed)
		c->ops->closed(c, err, c->arg);
}

static void closed_later_cb(struct loop *l, void *arg)
{
	struct wire_conn *c = arg;
	if (c->ops->closed)
		c->ops->closed(c, c->fail_err, c->arg);
}

/*
 * A failure found inside a caller's own call (a send that overflows, an
 * abort): the owner hears of it from the next dispatch round, never while
 * the caller is still on the stack with pointers into what the owner's
 * closed callback frees. The notice is queued before the free, and
 * deferred calls run in order.
 */
static void conn_fail_later(struct wire_conn *c, int err)
{
	if (c->state == ST_DEAD)
		return;
	c->fail_err = err;
	if (loop_defer(c->loop, closed_later_cb, c) < 0)
		log_error("wire: cannot defer a close notice; the owner misses it");
	conn_destroy(c);
}

static void drop_record(struct wire_conn *c, uint8_t *p, size_t n, void *arg)
{
}

/* For a connection nobody listens to any more (draining before close). */
static const struct wire_conn_ops null_ops = { .record = drop_record };

void wire_conn_close(struct wire_conn *c)
{
	/* Nobody is told, not even by a failure already queued (its owner
	 * may free what the closed callback would use). */
	c->ops = &null_ops;
	conn_destroy(c);
}

void wire_conn_abort(struct wire_conn *c, int err)
{
	conn_fail_later(c, err);
}

int wire_conn_abort_all(struct loop *l, int err)
{
	int n = 0;
	for (struct wire_conn *c = all_conns; c; c = c->all_next) {
		if (c->loop == l && c->state != ST_DEAD) {
			conn_fail_later(c, err);
			n++;
		}
	}
	return n;
}

int wire_conn_count(struct loop *l)
{
	int n = 0;
	for (struct wire_conn *c = all_conns; c; c = c->all_next)
		n += c->loop == l;
	return n;
}

static void flush_now(struct wire_conn *c)
{
	while (buf_avail(&c->out)) {
		ssize_t n = send(c->fd, buf_head(&c->out), buf_avail(&c->out),
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			conn_fail(c, -errno);
			return;
		}
		buf_consume(&c->out, n);
	}
	/* Sealed bytes only: freed, not wiped. */
	if (!buf_avail(&c->out) && c->out.cap > KEEP_BUF)
		buf_free(&c->out);
	acct_update(c);
	if (c->state == ST_SHUTDOWN && !buf_avail(&c->out)) {
		conn_fail(c, 0);
		return;
	}
	set_events(c);
	if (c->want_writable && buf_avail(&c->out) < WIRE_OUT_LOW) {
		c->want_writable = 0;
		if (c->ops->writable)
			c->ops->writable(c, c->arg);
	}
}

static void flush_cb(struct loop *l, void *arg)
{
	struct wire_conn *c = arg;
	c->flush_queued = 0;
	if (c->state != ST_DEAD && c->state != ST_CONNECTING)
		flush_now(c);
}

/* Output is written once per dispatch round, so many small records cost
 * one system call. */
static void queue_flush(struct wire_conn *c)
{
	if (c->flush_queued || c->state == ST_CONNECTING)
		return;
	if (loop_defer(c->loop, flush_cb, c) == 0)
		c->flush_queued = 1;
	else
		set_events(c); /* written when the socket says it is writable */
}

static int check_out_limit(struct wire_conn *c)
{
	size_t pending = buf_avail(&c->out);
	if (pending >= WIRE_OUT_LOW)
		c->want_writable = 1;
	if (pending > WIRE_OUT_LIMIT) {
		log_warn("wire: peer is not reading (%zu bytes pending); closing", pending);
		conn_fail_later(c, -ENOBUFS);
		return -ENOBUFS;
	}
	acct_update(c);
	struct wire_acct *over = acct_over(c);
	if (over) {
		log_warn("wire: connections hold %zu bytes, over their share of %zu; "
			 "closing the one that asked for more", over->bytes, over->max_bytes);
		conn_fail_later(c, -ENOBUFS);
		return -ENOBUFS;
	}
	return 0;
}

uint8_t *wire_conn_reserve(struct wire_conn *c, size_t n)
{
	if (c->state == ST_DEAD || n > WIRE_MAX_RECORD)
		return NULL;
	if (buf_reserve(&c->out, HDR + n + NOISE_TAG_LEN) < 0)
		return NULL;
	return buf_tail(&c->out) + HDR;
}

int wire_conn_commit(struct wire_conn *c, size_t n)
{
	if (c->state == ST_DEAD)
		return -EPIPE;
	if (n > WIRE_MAX_RECORD || c->out.cap - c->out.len < HDR + n + NOISE_TAG_LEN)
		return -EINVAL;
	uint8_t *hdr = buf_tail(&c->out);
	if (c->mode == WIRE_PLAIN) {
		put_be32(hdr, (uint32_t)n);
		buf_extend(&c->out, HDR + n);
	} else {
		if (c->state != ST_OPEN)
			return -ENOTCONN;
		put_be32(hdr, (uint32_t)(n + NOISE_TAG_LEN));
		int r = noise_cipher_encrypt(&c->tx, hdr, HDR, hdr + HDR, n, hdr + HDR);
		if (r < 0)
			return r;
		buf_extend(&c->out, HDR + n + NOISE_TAG_LEN);
		if (++c->tx_count == WIRE_REKEY_RECORDS) {
			noise_cipher_rekey(&c->tx);
			c->tx_count = 0;
		}
	}
	queue_flush(c);
	return check_out_limit(c);
}

int wire_conn_send(struct wire_conn *c, const void *p, size_t n)
{
	if (n > WIRE_MAX_RECORD)
		return -EMSGSIZE;
	uint8_t *dst = wire_conn_reserve(c, n);
	if (!dst)
		return c->state == ST_DEAD ? -EPIPE : -ENOMEM;
	if (n)
		memcpy(dst, p, n);
	return wire_conn_commit(c, n);
}

int wire_conn_send_stream(struct wire_conn *c, const void *p, size_t n)
{
	const uint8_t *s = p;
	while (n) {
		size_t k = n < WIRE_MAX_RECORD ? n : WIRE_MAX_RECORD;
		int r = wire_conn_send(c, s, k);
		if (r < 0)
			return r;
		s += k;
		n -= k;
	}
	return 0;
}

size_t wire_conn_pending(const struct wire_conn *c)
{
	return buf_avail(&c->out);
}

static void resume_cb(struct loop *l, void *arg)
{
	struct wire_conn *c = arg;
	if (c->state != ST_DEAD && !c->paused)
		conn_process(c);
}

void wire_conn_pause(struct wire_conn *c, int paused)
{
	if (c->state == ST_DEAD || c->paused == !!paused)
		return;
	c->paused = !!paused;
	set_events(c);
	/* Records already buffered are delivered without waiting for the
	 * socket to become readable again. */
	if (!paused && (buf_avail(&c->in) || c->rd_eof) && !c->in_dispatch)
		loop_defer(c->loop, resume_cb, c);
}

void wire_conn_shutdown(struct wire_conn *c)
{
	if (c->state == ST_DEAD)
		return;
	c->state = ST_SHUTDOWN;
	queue_flush(c);
	set_events(c);
}

const uint8_t *wire_conn_remote_key(const struct wire_conn *c)
{
	return c->mode == WIRE_PLAIN ? NULL : c->remote;
}

int wire_conn_fd(const struct wire_conn *c) { return c->fd; }
void wire_conn_set_arg(struct wire_conn *c, void *arg) { c->arg = arg; }


void wire_conn_set_ops(struct wire_conn *c, const struct wire_conn_ops *ops,
		       void *arg)
{
	c->ops = ops ? ops : &null_ops;
	c->arg = arg;
}
struct loop *wire_conn_loop(const struct wire_conn *c) { return c->loop; }

static void become_open(struct wire_conn *c)
{
	c->state = ST_OPEN;
	if (c->hs_timer) {
		loop_timer_del(c->hs_timer);
		c->hs_timer = NULL;
	}
	if (c->ops->ready)
		c->ops->ready(c, c->arg);
}

static int hs_send(struct wire_conn *c)
{
	uint8_t msg[HS_MAX];
	size_t len;
	int r = noise_hs_write(&c->hs, NULL, 0, msg, sizeof(msg), &len);
	if (r < 0)
		return r;
	if ((r = buf_put_u16_be(&c->out, (uint16_t)len)) < 0 ||
	    (r = buf_put(&c->out, msg, len)) < 0)
		return r;
	queue_flush(c);
	return 0;
}

static int hs_split(struct wire_conn *c)
{
	uint8_t hash[NOISE_HASH_LEN];
	memcpy(c->remote, noise_hs_remote_static(&c->hs), NOISE_KEY_LEN);
	int r = noise_hs_split(&c->hs, &c->tx, &c->rx, hash);
	sodium_memzero(hash, sizeof(hash));
	return r;
}

/* One handshake message from the peer: 0 consumed, 1 need more, <0 bad. */
static int hs_recv(struct wire_conn *c)
{
	uint8_t payload[HS_MAX];
	size_t plen;
	uint16_t len;
	int r;

	if (buf_avail(&c->in) < 2)
		return 1;
	len = (uint16_t)(buf_head(&c->in)[0] << 8 | buf_head(&c->in)[1]);
	if (len > HS_MAX)
		return -EBADMSG;
	if (buf_avail(&c->in) < 2u + len)
		return 1;
	r = noise_hs_read(&c->hs, buf_head(&c->in) + 2, len, payload,
			  sizeof(payload), &plen);
	buf_consume(&c->in, 2u + len);
	if (r < 0)
		return r;
	if (c->mode == WIRE_RESPONDER && (r = hs_send(c)) < 0)
		return r;
	if ((r = hs_split(c)) < 0)
		return r;
	become_open(c);
	return 0;
}

/* One frame: 0 delivered, 1 need more, <0 bad. */
static int frame_recv(struct wire_conn *c)
{
	size_t avail = buf_avail(&c->in), max, n;
	uint8_t *p = buf_head(&c->in);
	uint32_t len;

	if (avail < HDR)
		return 1;
	len = get_be32(p);
	max = WIRE_MAX_RECORD + (c->mode == WIRE_PLAIN ? 0 : NOISE_TAG_LEN);
	if (len > max || (c->mode != WIRE_PLAIN && len < NOISE_TAG_LEN))
		return -EMSGSIZE;
	if (avail < HDR + (size_t)len)
		return 1;
	n = len;
	if (c->mode != WIRE_PLAIN) {
		if (noise_cipher_decrypt(&c->rx, p, HDR, p + HDR, len, p + HDR) < 0)
			return -EBADMSG;
		n -= NOISE_TAG_LEN;
		if (++c->rx_count == WIRE_REKEY_RECORDS) {
			noise_cipher_rekey(&c->rx);
			c->rx_count = 0;
		}
	}
	/* Consume first: the callback may pause, close or send. */
	buf_consume(&c->in, HDR + (size_t)len);
	c->partial_since = 0;
	c->ops->record(c, p + HDR, n, c->arg);
	return 0;
}

/*
 * The peer sent its last byte. Complete records still buffered (the owner
 * paused us) are delivered first; then the connection ends, cleanly if
 * nothing is left over, as a reset if a frame was cut off or the
 * handshake never finished.
 */
static void input_ended(struct wire_conn *c)
{
	if (c->state == ST_DEAD || c->state == ST_SHUTDOWN)
		return;
	if (c->state == ST_OPEN && c->paused && buf_avail(&c->in)) {
		set_events(c);
		return;
	}
	conn_fail(c, buf_avail(&c->in) || c->state != ST_OPEN ? -ECONNRESET : 0);
}

static void conn_process(struct wire_conn *c)
{
	int r = 0;
	c->in_dispatch = 1;
	while (c->state != ST_DEAD && !c->paused && buf_avail(&c->in)) {
		if (c->state == ST_HANDSHAKE)
			r = hs_recv(c);
		else if (c->state == ST_OPEN)
			r = frame_recv(c);
		else
			break;
		if (r != 0)
			break;
	}
	c->in_dispatch = 0;
	/* What is left is the start of a frame, unless we stopped reading
	 * (then it is whole frames waiting for us, not for the peer). */
	if (c->state == ST_OPEN && !c->paused && buf_avail(&c->in)) {
		if (!c->partial_since)
			c->partial_since = loop_now_ms(c->loop);
	} else {
		c->partial_since = 0;
	}
	/* An idle connection keeps no read chunk: a peer's many quiet
	 * connections cost little. (It held plaintext: wiped.) */
	if (!buf_avail(&c->in) && c->in.cap > KEEP_BUF && c->state != ST_DEAD) {
		sodium_memzero(c->in.data, c->in.len);
		buf_free(&c->in);
		acct_update(c);
	}
	/* At the end of input, "more needed" (r == 1: a frame cut off)
	 * will never be met: that is an end too. */
	if (r >= 0 && c->rd_eof)
		input_ended(c);
	if (r < 0) {
		const char *what = r == -EMSGSIZE ? "oversized frame" :
				   c->state == ST_HANDSHAKE ? "handshake failed" :
				   "frame failed to authenticate";
		/* Failed handshakes are what a flood is made of: not one log
		 * line each. */
		if (c->state == ST_HANDSHAKE)
			log_debug("wire: closing connection: %s", what);
		else
			log_info("wire: closing connection: %s", what);
		conn_fail(c, r);
	}
}

static void conn_read(struct wire_conn *c)
{
	/* Read only while less than one whole frame is buffered: input is
	 * bounded whatever the peer sends. */
	if (buf_avail(&c->in) > WIRE_MAX_RECORD + NOISE_TAG_LEN + HDR)
		return;
	/* Until the handshake is done a peer has proven nothing: it gets a
	 * buffer for one handshake message, not a bulk read chunk. */
	size_t chunk = c->state == ST_OPEN ? READ_CHUNK : HS_MAX + 2;
	if (buf_reserve(&c->in, chunk) < 0) {
		conn_fail(c, -ENOMEM);
		return;
	}
	ssize_t n = read(c->fd, buf_tail(&c->in), chunk);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_fail(c, -errno);
		return;
	}
	if (n == 0) {
		/* Records may still be buffered from before a pause. */
		c->rd_eof = 1;
		set_events(c);
		conn_process(c);
		return;
	}
	buf_extend(&c->in, n);
	acct_update(c);
	conn_process(c);
}

static void conn_start(struct wire_conn *c)
{
	int r = net_connect_result(c->fd);
	if (r < 0) {
		conn_fail(c, r);
		return;
	}
	if (c->mode == WIRE_PLAIN) {
		c->state = ST_OPEN;
		set_events(c);
		if (c->ops->ready)
			c->ops->ready(c, c->arg);
		return;
	}
	c->state = ST_HANDSHAKE;
	if (c->mode == WIRE_INITIATOR && (r = hs_send(c)) < 0) {
		conn_fail(c, r);
		return;
	}
	set_events(c);
}

static void conn_io(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct wire_conn *c = arg;

	if (c->state == ST_CONNECTING) {
		conn_start(c);
		return;
	}
	/* A connection shutting down reads nothing more, whatever the
	 * event: only its flush decides how it ends (done, or an error if
	 * the peer went before taking what was queued). */
	if (c->state == ST_SHUTDOWN) {
		flush_now(c);
		return;
	}
	/* A paused connection reads nothing, not even on a hangup: records
	 * already buffered must reach the owner before the end does. */
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->paused && !c->rd_eof)
		conn_read(c);
	if (c->state != ST_DEAD && (ev & EPOLLOUT))
		flush_now(c);
}

int wire_conn_sweep(struct loop *l, uint64_t timeout_ms)
{
	uint64_t now = loop_now_ms(l);
	int n = 0;
	for (struct wire_conn *c = all_conns; c; c = c->all_next) {
		if (c->loop != l || c->state != ST_OPEN || c->paused || !c->partial_since ||
		    now - c->partial_since < timeout_ms)
			continue;
		log_info("wire: peer left a frame unfinished for %llu ms; closing",
			 (unsigned long long)timeout_ms);
		conn_fail_later(c, -ETIMEDOUT);
		n++;
	}
	return n;
}

static void hs_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct wire_conn *c = arg;
	log_info("wire: peer did not finish the handshake in %d s; closing",
		 WIRE_HANDSHAKE_TIMEOUT_MS / 1000);
	conn_fail(c, -ETIMEDOUT);
}

struct wire_conn *wire_conn_new(struct loop *l, int fd, enum wire_mode mode,
				const uint8_t *local_priv,
				const uint8_t *remote_pub,
				const struct wire_conn_ops *ops, void *arg)
{
	struct wire_conn *c = calloc(1, sizeof(*c));
	if (!c)
		goto fail;
	c->loop = l;
	c->fd = fd;
	c->mode = mode;
	c->ops = ops;
	c->arg = arg;
	c->state = ST_CONNECTING;
	buf_init(&c->in);
	buf_init(&c->out);
	if (mode != WIRE_PLAIN) {
		if ((mode == WIRE_INITIATOR && !remote_pub) ||
		    noise_hs_init(&c->hs, mode == WIRE_INITIATOR,
				  (const uint8_t *)WIRE_PROLOGUE,
				  strlen(WIRE_PROLOGUE), local_priv,
				  remote_pub) < 0)
			goto fail;
		c->hs_timer = loop_timer_new(l, hs_timeout, c);
		if (!c->hs_timer || loop_timer_arm(c->hs_timer, WIRE_HANDSHAKE_TIMEOUT_MS, 0) < 0)
			goto fail;
	}
	c->events = EPOLLOUT;
	c->watch = loop_watch_fd(l, fd, c->events, conn_io, c);
	if (!c->watch)
		goto fail;
	c->all_next = all_conns;
	if (all_conns)
		all_conns->all_prev = c;
	all_conns = c;
	return c;
fail:
	if (c) {
		if (c->hs_timer)
			loop_timer_del(c->hs_timer);
		noise_hs_wipe(&c->hs);
		free(c);
	}
	close(fd);
	return NULL;
}
