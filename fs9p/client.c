/*
 * The 9P2000.L client (see client.h). Message layouts follow diod's
 * protocol.md and the Linux kernel's 9P2000.L documentation; Tflush
 * follows the 9P flush(5) rules: a flushed tag stays reserved until its
 * Rflush, and a reply that beats the Rflush is honoured.
 *
 * Each call lives on its caller's stack while it waits; the tag table
 * points at it. A tag whose caller gave up (a timeout with no Rflush
 * yet) becomes an orphan: the reader drops what still comes for it and
 * frees it when the Rflush arrives.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fs9p/client.h"
#include "lib/log.h"

/* Rreaddir's header before the entries: size type tag count. */
#define P9C_READDIR_HDR (P9_HDR + 4)

enum slot_state {
	SLOT_FREE,
	SLOT_CALL,         /* a caller waits on it */
	SLOT_ORPHAN,       /* a flushed request whose caller left */
	SLOT_FLUSH_ORPHAN, /* the Tflush for an orphan */
};

struct p9c_call {
	pthread_cond_t cv;
	uint16_t tag, ftag; /* the request's tag, its Tflush's (or P9_NOTAG) */
	int flushed;        /* Rflush came */
	uint8_t *msg;       /* the reply, whole, from the reader */
};

struct slot {
	struct p9c_call *call;
	uint16_t link;  /* an orphan's partner tag, or P9_NOTAG */
	uint8_t state;
	uint8_t rtype;  /* the reply type this tag waits for */
};

struct p9c {
	int fd;
	uint32_t msize;
	unsigned timeout_ms;
	int ordered; /* the server keeps per-fid order: pipeline compounds */
	pthread_t reader;
	pthread_condattr_t cattr; /* CLOCK_MONOTONIC for every cv */

	pthread_mutex_t send_lock; /* one message on the wire at a time */

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t tag_cv;  /* a tag came free, or the connection died */
	pthread_cond_t idle_cv; /* ncalls fell to 0 while closing */
	struct slot slots[P9C_MAX_TAGS];
	unsigned ntags;
	uint16_t next_tag;
	int dead; /* 0, or why the connection is gone (-ECONNRESET, -EPROTO) */
	int closing;
	unsigned ncalls;

	pthread_mutex_t fid_lock;
	uint64_t *fidmap;
	size_t fidwords;
	size_t fidhint;
};

struct reply {
	uint8_t *msg;
	struct rd r; /* the body, after the header */
};

/* A request under construction. */
struct req {
	struct buf b;
	struct p9_wr w;
};

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* Sends hdr then data as one message, whole, or fails. */
static int send_all(int fd, const void *hdr, size_t hlen, const void *data, size_t dlen)
{
	struct iovec iov[2] = {
		{ (void *)hdr, hlen },
		{ (void *)data, dlen },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = dlen ? 2 : 1 };

	while (mh.msg_iovlen) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (mh.msg_iovlen && (size_t)n >= mh.msg_iov->iov_len) {
			n -= mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
			mh.msg_iov->iov_len -= n;
		}
	}
	return 0;
}

/* Reads exactly n bytes; with timeout_ms > 0, fails with -ETIMEDOUT
 * when the bytes take longer in all. -ECONNRESET at end of stream. */
static int recv_all(int fd, void *p, size_t n, int timeout_ms)
{
	struct timespec dl, now;

	if (timeout_ms > 0)
		deadline_in(&dl, (unsigned)timeout_ms);
	while (n) {
		ssize_t r;
		if (timeout_ms > 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			long left;
			clock_gettime(CLOCK_MONOTONIC, &now);
			left = (dl.tv_sec - now.tv_sec) * 1000 +
			       (dl.tv_nsec - now.tv_nsec) / 1000000;
			if (left <= 0)
				return -ETIMEDOUT;
			r = poll(&pfd, 1, (int)left);
			if (r < 0 && errno != EINTR)
				return -errno;
			if (r <= 0)
				continue;
		}
		r = read(fd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET;
		p = (uint8_t *)p + r;
		n -= (size_t)r;
	}
	return 0;
}

/* Marks the connection gone and wakes everyone. Under c->lock. */
static void die_locked(struct p9c *c, int err)
{
	if (c->dead)
		return;
	c->dead = err;
	for (unsigned i = 0; i < P9C_MAX_TAGS; i++)
		if (c->slots[i].state == SLOT_CALL)
			pthread_cond_signal(&c->slots[i].call->cv);
	pthread_cond_broadcast(&c->tag_cv);
	/* The server sees the end, and the reader's read returns. */
	shutdown(c->fd, SHUT_RDWR);
}

static void tag_put(struct p9c *c, uint16_t tag)
{
	c->slots[tag].state = SLOT_FREE;
	c->slots[tag].call = NULL;
	c->slots[tag].link = P9_NOTAG;
	c->ntags--;
	pthread_cond_signal(&c->tag_cv);
}

/* A free tag for call, waiting for one until dl (NULL: forever). Under
 * c->lock. */
static int tag_get(struct p9c *c, struct p9c_call *call, uint8_t rtype,
		   const struct timespec *dl, uint16_t *tag)
{
	while (c->ntags == P9C_MAX_TAGS && !c->dead) {
		if (!dl)
			pthread_cond_wait(&c->tag_cv, &c->lock);
		else if (pthread_cond_timedwait(&c->tag_cv, &c->lock, dl) == ETIMEDOUT)
			return -ETIMEDOUT;
	}
	if (c->dead)
		return -ECONNRESET;
	/* Round robin, so that a tag is not reused at once: a late reply
	 * for an old request is then caught as an unknown tag. */
	for (unsigned i = 0; i < P9C_MAX_TAGS; i++) {
		uint16_t t = (uint16_t)((c->next_tag + i) % P9C_MAX_TAGS);
		struct slot *s = &c->slots[t];
		if (s->state != SLOT_FREE)
			continue;
		s->state = SLOT_CALL;
		s->call = call;
		s->rtype = rtype;
		s->link = P9_NOTAG;
		c->ntags++;
		c->next_tag = (uint16_t)((t + 1) % P9C_MAX_TAGS);
		*tag = t;
		return 0;
	}
	return -EAGAIN; /* not reached: ntags said one was free */
}

/*
 * Hands a reply to whoever waits for its tag; 0 if msg was taken or
 * dropped, -EPROTO if the server broke the protocol (msg is then still
 * the caller's). Under c->lock.
 */
static int deliver(struct p9c *c, uint8_t *msg)
{
	uint8_t type = msg[4];
	uint16_t tag = (uint16_t)(msg[5] | msg[6] << 8);
	struct slot *s;
	struct p9c_call *call;

	if (tag >= P9C_MAX_TAGS)
		return -EPROTO;
	s = &c->slots[tag];
	if (s->state == SLOT_FREE)
		return -EPROTO;
	if (type != s->rtype && type != P9_RLERROR)
		return -EPROTO;
	switch (s->state) {
	case SLOT_CALL:
		call = s->call;
		if (tag == call->tag) {
			if (call->msg)
				return -EPROTO;
			call->msg = msg;
		} else {
			if (call->flushed)
				return -EPROTO;
			call->flushed = 1;
			free(msg);
		}
		pthread_cond_signal(&call->cv);
		return 0;
	case SLOT_ORPHAN:
		/* With a Tflush out, the tag stays taken until its Rflush. */
		free(msg);
		if (s->link == P9_NOTAG)
			tag_put(c, tag);
		return 0;
	case SLOT_FLUSH_ORPHAN:
		free(msg);
		if (s->link != P9_NOTAG)
			tag_put(c, s->link);
		tag_put(c, tag);
		return 0;
	}
	return -EPROTO;
}

static void *reader_main(void *arg)
{
	struct p9c *c = arg;
	int err;

	for (;;) {
		uint8_t h[4] = { 0 }, *msg;
		uint32_t size;

		if (recv_all(c->fd, h, sizeof(h), 0) < 0) {
			err = -ECONNRESET;
			break;
		}
		size = get_le32(h);
		if (size < P9_HDR || size > c->msize) {
			log_warn("9p client: server sent a %u-byte message (msize %u), "
				 "closing the connection", size, c->msize);
			err = -EPROTO;
			break;
		}
		if (!(msg = malloc(size))) {
			err = -ECONNRESET;
			break;
		}
		memcpy(msg, h, sizeof(h));
		if (recv_all(c->fd, msg + 4, size - 4, 0) < 0) {
			free(msg);
			err = -ECONNRESET;
			break;
		}
		pthread_mutex_lock(&c->lock);
		err = deliver(c, msg);
		if (err < 0)
			die_locked(c, err);
		pthread_mutex_unlock(&c->lock);
		if (err < 0) {
			log_warn("9p client: server sent %s for tag %u, which awaits no such reply; "
				 "closing the connection", p9_type_name(msg[4]),
				 (unsigned)(msg[5] | msg[6] << 8));
			free(msg);
			break;
		}
	}
	pthread_mutex_lock(&c->lock);
	die_locked(c, err);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/*
 * The request timed out: flush it (flush(5)) and wait, bounded, for the
 * Rflush or a late reply. Returns with c->lock held, as it was called;
 * tags that must outlive the caller are turned into orphans.
 */
static int flush_locked(struct p9c *c, struct p9c_call *call, unsigned tmo)
{
	struct timespec dl;
	struct buf b;
	struct p9_wr w;
	uint16_t old = call->tag;
	int e;

	deadline_in(&dl, tmo < 100 ? 100 : tmo);
	if (tag_get(c, call, P9_RFLUSH, &dl, &call->ftag) < 0) {
		if (c->dead)
			return c->dead;
		/* No tag for a Tflush: drop the reply whenever it comes. */
		c->slots[old].state = SLOT_ORPHAN;
		c->slots[old].call = NULL;
		return -ETIMEDOUT;
	}
	pthread_mutex_unlock(&c->lock);
	buf_init(&b);
	p9_begin(&w, &b, P9_TFLUSH, call->ftag);
	p9_u16(&w, old);
	if (!(e = p9_end(&w, c->msize))) {
		pthread_mutex_lock(&c->send_lock);
		e = send_all(c->fd, buf_head(&b), buf_avail(&b), NULL, 0);
		pthread_mutex_unlock(&c->send_lock);
	}
	buf_free(&b);
	pthread_mutex_lock(&c->lock);
	if (e < 0)
		die_locked(c, -ECONNRESET);
	while (!call->msg && !call->flushed && !c->dead)
		if (pthread_cond_timedwait(&call->cv, &c->lock, &dl) == ETIMEDOUT)
			break;
	if (!call->msg && !call->flushed && c->dead)
		return c->dead;
	if (!call->flushed) {
		/* The server still owes an Rflush: keep both tags until then. */
		c->slots[old].state = SLOT_ORPHAN;
		c->slots[old].call = NULL;
		c->slots[old].link = call->ftag;
		c->slots[call->ftag].state = SLOT_FLUSH_ORPHAN;
		c->slots[call->ftag].call = NULL;
		c->slots[call->ftag].link = old;
	}
	return call->msg ? 0 : -ETIMEDOUT;
}

/* The errno in an Rlerror body, as -errno. */
static int lerror(struct rd *r)
{
	uint32_t ecode;
	if (rd_u32(r, &ecode) < 0 || rd_left(r) || ecode == 0 || ecode > 4095)
		return -EPROTO;
	return -(int)ecode;
}

/*
 * A request on its way: rpc_start() takes a tag and sends the message,
 * rpc_finish() waits for the reply. Several can be started before the
 * first is finished: pipelining (see p9c_set_ordered).
 */
struct pending {
	struct p9c_call call;
	struct timespec dl;
	unsigned tmo;
	int started; /* counted in ncalls */
	int e;       /* why it could not be sent, or 0 */
};

/* Sends the message in b (tag patched in) followed by data. */
static void rpc_start(struct p9c *c, struct buf *b, const void *data, size_t dlen,
		      uint8_t rtype, struct pending *p)
{
	uint8_t *hdr = buf_head(b);
	int e;

	memset(p, 0, sizeof(*p));
	p->call.tag = p->call.ftag = P9_NOTAG;
	p->tmo = __atomic_load_n(&c->timeout_ms, __ATOMIC_RELAXED);
	pthread_cond_init(&p->call.cv, &c->cattr);
	if (p->tmo)
		deadline_in(&p->dl, p->tmo);
	pthread_mutex_lock(&c->lock);
	if (c->dead || c->closing) {
		pthread_mutex_unlock(&c->lock);
		p->e = -ECONNRESET;
		return;
	}
	c->ncalls++;
	p->started = 1;
	if ((p->e = tag_get(c, &p->call, rtype, p->tmo ? &p->dl : NULL, &p->call.tag)) < 0) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	pthread_mutex_unlock(&c->lock);

	hdr[5] = (uint8_t)p->call.tag;
	hdr[6] = (uint8_t)(p->call.tag >> 8);
	pthread_mutex_lock(&c->send_lock);
	e = send_all(c->fd, hdr, buf_avail(b), data, dlen);
	pthread_mutex_unlock(&c->send_lock);
	if (e < 0) {
		pthread_mutex_lock(&c->lock);
		die_locked(c, -ECONNRESET); /* a part-sent message ends the stream */
		pthread_mutex_unlock(&c->lock);
	}
}

/* Waits for the reply of a started request. On success rep holds a reply
 * of the type asked for, for the caller to decode and free (reply_done). */
static int rpc_finish(struct p9c *c, struct pending *p, struct reply *rep)
{
	struct p9c_call *call = &p->call;
	int e = p->e;

	rep->msg = NULL;
	if (!p->started) {
		pthread_cond_destroy(&call->cv);
		return e;
	}
	pthread_mutex_lock(&c->lock);
	if (!e) {
		while (!call->msg && !c->dead) {
			if (!p->tmo)
				pthread_cond_wait(&call->cv, &c->lock);
			else if (pthread_cond_timedwait(&call->cv, &c->lock, &p->dl) == ETIMEDOUT)
				break;
		}
		if (!call->msg && !c->dead)
			e = flush_locked(c, call, p->tmo);
		if (!call->msg && !e)
			e = c->dead;
	}
	/* Free the tags still ours; orphans are the reader's now. */
	if (call->tag != P9_NOTAG && c->slots[call->tag].state == SLOT_CALL &&
	    c->slots[call->tag].call == call)
		tag_put(c, call->tag);
	if (call->ftag != P9_NOTAG && c->slots[call->ftag].state == SLOT_CALL &&
	    c->slots[call->ftag].call == call)
		tag_put(c, call->ftag);
	if (--c->ncalls == 0 && c->closing)
		pthread_cond_broadcast(&c->idle_cv);
	pthread_mutex_unlock(&c->lock);
	pthread_cond_destroy(&call->cv);

	if (call->msg) {
		uint32_t size = get_le32(call->msg);
		rd_init(&rep->r, call->msg + P9_HDR, size - P9_HDR);
		if (call->msg[4] == P9_RLERROR) {
			e = lerror(&rep->r);
			free(call->msg);
			return e;
		}
		rep->msg = call->msg;
		return 0;
	}
	return e;
}

/* One round trip. */
static int rpc(struct p9c *c, struct buf *b, const void *data, size_t dlen,
	       uint8_t rtype, struct reply *rep)
{
	struct pending p;
	rpc_start(c, b, data, dlen, rtype, &p);
	return rpc_finish(c, &p, rep);
}

static void req_begin(struct req *q, uint8_t type)
{
	buf_init(&q->b);
	p9_begin(&q->w, &q->b, type, 0); /* the tag is set when sent */
}

/* Finishes the request and makes the call; data (dlen bytes) follows
 * the message built so far, inside its size. */
static int req_call(struct p9c *c, struct req *q, const void *data, size_t dlen,
		    uint8_t rtype, struct reply *rep)
{
	int e;

	rep->msg = NULL;
	rd_init(&rep->r, NULL, 0);
	if ((e = p9_end(&q->w, c->msize - (uint32_t)dlen)) == 0) {
		put_le32(buf_head(&q->b), (uint32_t)(buf_avail(&q->b) + dlen));
		e = rpc(c, &q->b, data, dlen, rtype, rep);
	}
	buf_free(&q->b);
	return e;
}

/* Ends decoding: a reply with bytes left over is malformed. */
static int reply_done(struct reply *rep, int e)
{
	if (!e && rd_left(&rep->r))
		e = -EPROTO;
	free(rep->msg);
	rep->msg = NULL;
	return e;
}

/* For replies with an empty body. */
static int simple_call(struct p9c *c, struct req *q, uint8_t rtype)
{
	struct reply rep;
	int e = req_call(c, q, NULL, 0, rtype, &rep);
	if (e < 0)
		return e;
	return reply_done(&rep, 0);
}

/* For replies that are a qid alone. */
static int qid_call(struct p9c *c, struct req *q, uint8_t rtype, struct p9_qid *qid)
{
	struct reply rep;
	struct p9_qid tmp;
	int e = req_call(c, q, NULL, 0, rtype, &rep);
	if (e < 0)
		return e;
	e = p9_get_qid(&rep.r, qid ? qid : &tmp) < 0 ? -EPROTO : 0;
	return reply_done(&rep, e);
}

/* Rversion, before the reader thread runs. */
static int negotiate(int fd, uint32_t want, uint32_t *msize)
{
	struct buf b;
	struct p9_wr w;
	struct rd r;
	uint8_t h[4] = { 0 }, *msg = NULL;
	uint32_t size, m;
	uint16_t tag, vlen;
	uint8_t type;
	const char *v;
	int e;

	buf_init(&b);
	p9_begin(&w, &b, P9_TVERSION, P9_NOTAG);
	p9_u32(&w, want);
	p9_cstr(&w, P9_VERSION);
	if (!(e = p9_end(&w, want)))
		e = send_all(fd, buf_head(&b), buf_avail(&b), NULL, 0);
	buf_free(&b);
	if (e < 0)
		goto out;
	if ((e = recv_all(fd, h, sizeof(h), P9C_VERSION_TIMEOUT_MS)) < 0)
		goto out;
	size = get_le32(h);
	if (size < P9_HDR || size > want) {
		e = -EPROTO;
		goto out;
	}
	if (!(msg = malloc(size))) {
		e = -ENOMEM;
		goto out;
	}
	memcpy(msg, h, sizeof(h));
	if ((e = recv_all(fd, msg + 4, size - 4, P9C_VERSION_TIMEOUT_MS)) < 0)
		goto out;
	rd_init(&r, msg, size);
	p9_get_hdr(&r, &size, &type, &tag);
	if (tag != P9_NOTAG || (type != P9_RVERSION && type != P9_RLERROR)) {
		e = -EPROTO;
		goto out;
	}
	if (type == P9_RLERROR) {
		e = lerror(&r);
		log_error("9p client: the server refused %s (%s)", P9_VERSION,
			  e == -EPROTO ? "a malformed error" : strerror(-e));
		e = -EPROTONOSUPPORT;
		goto out;
	}
	if (rd_u32(&r, &m) < 0 || p9_get_str(&r, &v, &vlen) < 0 || rd_left(&r)) {
		e = -EPROTO;
		goto out;
	}
	if (vlen != strlen(P9_VERSION) || memcmp(v, P9_VERSION, vlen)) {
		log_error("9p client: the server speaks \"%.*s\", not %s",
			  (int)(vlen > 64 ? 64 : vlen), v, P9_VERSION);
		e = -EPROTONOSUPPORT;
		goto out;
	}
	if (m > want || m < P9_MIN_MSIZE) {
		log_error("9p client: the server chose msize %u, outside [%u, %u]",
			  m, P9_MIN_MSIZE, want);
		e = -EPROTO;
		goto out;
	}
	*msize = m;
	e = 0;
out:
	free(msg);
	return e;
}

int p9c_open(int fd, uint32_t want_msize, struct p9c **out)
{
	struct p9c *c;
	int type, fl, e;
	socklen_t len = sizeof(type);
	uint32_t msize;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	if (type != SOCK_STREAM)
		return -EINVAL;
	/* The reader blocks in read(2); a non-blocking fd would end it. */
	if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -errno;
	if (want_msize < P9_MIN_MSIZE)
		want_msize = P9_MIN_MSIZE;
	if (want_msize > P9_MAX_MSIZE)
		want_msize = P9_MAX_MSIZE;
	if ((e = negotiate(fd, want_msize, &msize)) < 0)
		return e;
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	c->fd = fd;
	c->msize = msize;
	pthread_condattr_init(&c->cattr);
	pthread_condattr_setclock(&c->cattr, CLOCK_MONOTONIC);
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->tag_cv, &c->cattr);
	pthread_cond_init(&c->idle_cv, &c->cattr);
	pthread_mutex_init(&c->fid_lock, NULL);
	for (unsigned i = 0; i < P9C_MAX_TAGS; i++)
		c->slots[i].link = P9_NOTAG;
	if ((e = pthread_create(&c->reader, NULL, reader_main, c)) != 0) {
		pthread_mutex_destroy(&c->fid_lock);
		pthread_cond_destroy(&c->idle_cv);
		pthread_cond_destroy(&c->tag_cv);
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->send_lock);
		pthread_condattr_destroy(&c->cattr);
		free(c);
		return -e;
	}
	*out = c;
	return 0;
}

void p9c_close(struct p9c *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->closing = 1;
	die_locked(c, -ECONNRESET);
	while (c->ncalls)
		pthread_cond_wait(&c->idle_cv, &c->lock);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->reader, NULL);
	close(c->fd);
	free(c->fidmap);
	pthread_mutex_destroy(&c->fid_lock);
	pthread_cond_destroy(&c->idle_cv);
	pthread_cond_destroy(&c->tag_cv);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	pthread_condattr_destroy(&c->cattr);
	free(c);
}

void p9c_abort(struct p9c *c)
{
	pthread_mutex_lock(&c->lock);
	die_locked(c, -ECONNRESET);
	pthread_mutex_unlock(&c->lock);
}

uint32_t p9c_msize(const struct p9c *c)
{
	return c->msize;
}

void p9c_set_timeout(struct p9c *c, unsigned timeout_ms)
{
	__atomic_store_n(&c->timeout_ms, timeout_ms, __ATOMIC_RELAXED);
}

int p9c_fid_alloc(struct p9c *c, uint32_t *fid)
{
	int e = -EMFILE;

	pthread_mutex_lock(&c->fid_lock);
	for (size_t n = 0; n < c->fidwords; n++) {
		size_t i = (c->fidhint + n) % c->fidwords;
		if (c->fidmap[i] != UINT64_MAX) {
			unsigned bit = (unsigned)__builtin_ctzll(~c->fidmap[i]);
			c->fidmap[i] |= 1ull << bit;
			c->fidhint = i;
			*fid = (uint32_t)(i * 64 + bit);
			e = 0;
			goto out;
		}
	}
	/* All taken: grow the map, doubling, up to P9C_MAX_FIDS. */
	if (c->fidwords * 64 < P9C_MAX_FIDS) {
		size_t nw = c->fidwords ? c->fidwords * 2 : 16;
		uint64_t *m = realloc(c->fidmap, nw * sizeof(*m));
		if (!m) {
			e = -ENOMEM;
			goto out;
		}
		memset(m + c->fidwords, 0, (nw - c->fidwords) * sizeof(*m));
		m[c->fidwords] = 1;
		*fid = (uint32_t)(c->fidwords * 64);
		c->fidhint = c->fidwords;
		c->fidmap = m;
		c->fidwords = nw;
		e = 0;
	}
out:
	pthread_mutex_unlock(&c->fid_lock);
	return e;
}

void p9c_fid_release(struct p9c *c, uint32_t fid)
{
	pthread_mutex_lock(&c->fid_lock);
	if (fid / 64 < c->fidwords)
		c->fidmap[fid / 64] &= ~(1ull << (fid % 64));
	pthread_mutex_unlock(&c->fid_lock);
}

int p9c_attach(struct p9c *c, uint32_t fid, uint32_t afid, const char *uname,
	       const char *aname, uint32_t n_uname, struct p9_qid *qid)
{
	struct req q;

	req_begin(&q, P9_TATTACH);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, afid);
	p9_cstr(&q.w, uname ? uname : "");
	p9_cstr(&q.w, aname ? aname : "");
	p9_u32(&q.w, n_uname);
	return qid_call(c, &q, P9_RATTACH, qid);
}

static int walk_n(struct p9c *c, uint32_t fid, uint32_t newfid, unsigned n,
		  const char *const *names, const size_t *lens, struct p9_qid *qids)
{
	struct p9_qid got[P9_MAXWELEM];
	struct reply rep;
	struct req q;
	uint16_t nwqid;
	int e;

	if (n > P9_MAXWELEM)
		return -EINVAL;
	req_begin(&q, P9_TWALK);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, newfid);
	p9_u16(&q.w, (uint16_t)n);
	for (unsigned i = 0; i < n; i++)
		p9_str(&q.w, names[i], lens[i]);
	if ((e = req_call(c, &q, NULL, 0, P9_RWALK, &rep)) < 0)
		return e;
	if (rd_u16(&rep.r, &nwqid) < 0 || nwqid > n)
		return reply_done(&rep, -EPROTO);
	for (unsigned i = 0; i < nwqid; i++)
		if (p9_get_qid(&rep.r, &got[i]) < 0)
			return reply_done(&rep, -EPROTO);
	if ((e = reply_done(&rep, 0)) < 0)
		return e;
	if (nwqid < n) {
		/* The spec says a walk that stops early creates no newfid,
		 * but diod 1.0 leaves it at the last name found; clunk it
		 * as Linux does (a harmless error elsewhere). */
		if (fid != newfid)
			p9c_clunk(c, newfid);
		return -ENOENT;
	}
	if (qids)
		memcpy(qids, got, nwqid * sizeof(*got));
	return 0;
}

int p9c_walk(struct p9c *c, uint32_t fid, uint32_t newfid, unsigned nwname,
	     const char *const *wnames, struct p9_qid *qids)
{
	size_t lens[P9_MAXWELEM];

	if (nwname > P9_MAXWELEM)
		return -EINVAL;
	for (unsigned i = 0; i < nwname; i++)
		lens[i] = strlen(wnames[i]);
	return walk_n(c, fid, newfid, nwname, wnames, lens, qids);
}

int p9c_walk_path(struct p9c *c, uint32_t fid, uint32_t newfid, const char *path,
		  struct p9_qid *qid)
{
	const char *names[P9_MAXWELEM];
	size_t lens[P9_MAXWELEM];
	struct p9_qid qids[P9_MAXWELEM];
	const char *p = path;
	uint32_t from = fid;
	int walked = 0;

	do {
		unsigned n = 0;
		while (n < P9_MAXWELEM) {
			while (*p == '/')
				p++;
			if (!*p)
				break;
			names[n] = p;
			lens[n] = strcspn(p, "/");
			p += lens[n];
			n++;
		}
		while (*p == '/')
			p++;
		/* Walking fid onto itself in pieces could leave it half-way
		 * with no way back. */
		if (*p && fid == newfid)
			return -EINVAL;
		int e = walk_n(c, from, newfid, n, names, lens, qids);
		if (e < 0) {
			if (walked)
				p9c_clunk(c, newfid);
			return e;
		}
		if (n && qid)
			*qid = qids[n - 1];
		walked = 1;
		from = newfid;
	} while (*p);
	return 0;
}

/* For Rlopen and Rlcreate: qid iounit. */
static int open_call(struct p9c *c, struct req *q, uint8_t rtype, struct p9_qid *qid,
		     uint32_t *iounit)
{
	struct reply rep;
	struct p9_qid tq;
	uint32_t tu;
	int e;

	if ((e = req_call(c, q, NULL, 0, rtype, &rep)) < 0)
		return e;
	if (p9_get_qid(&rep.r, qid ? qid : &tq) < 0 || rd_u32(&rep.r, iounit ? iounit : &tu) < 0)
		e = -EPROTO;
	return reply_done(&rep, e);
}

int p9c_lopen(struct p9c *c, uint32_t fid, uint32_t flags, struct p9_qid *qid,
	      uint32_t *iounit)
{
	struct req q;

	req_begin(&q, P9_TLOPEN);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, flags);
	return open_call(c, &q, P9_RLOPEN, qid, iounit);
}

int p9c_lcreate(struct p9c *c, uint32_t fid, const char *name, uint32_t flags,
		uint32_t mode, uint32_t gid, struct p9_qid *qid, uint32_t *iounit)
{
	struct req q;

	req_begin(&q, P9_TLCREATE);
	p9_u32(&q.w, fid);
	p9_cstr(&q.w, name);
	p9_u32(&q.w, flags);
	p9_u32(&q.w, mode);
	p9_u32(&q.w, gid);
	return open_call(c, &q, P9_RLCREATE, qid, iounit);
}

/* Rread and Rreaddir: count[4] and at most n bytes, copied to buf.
 * Returns the count. */
static int data_reply(struct reply *rep, void *buf, uint32_t n)
{
	const uint8_t *p;
	uint32_t got;
	int e;

	if (rd_u32(&rep->r, &got) < 0 || got > n || rd_bytes(&rep->r, &p, got) < 0)
		return reply_done(rep, -EPROTO);
	memcpy(buf, p, got);
	if ((e = reply_done(rep, 0)) < 0)
		return e;
	return (int)got;
}

/* One Tread of at most msize - P9_IOHDR bytes; the byte count. */
static int read_once(struct p9c *c, uint32_t fid, uint64_t offset, void *buf, uint32_t n)
{
	struct reply rep;
	struct req q;
	int e;

	req_begin(&q, P9_TREAD);
	p9_u32(&q.w, fid);
	p9_u64(&q.w, offset);
	p9_u32(&q.w, n);
	if ((e = req_call(c, &q, NULL, 0, P9_RREAD, &rep)) < 0)
		return e;
	return data_reply(&rep, buf, n);
}

ssize_t p9c_read(struct p9c *c, uint32_t fid, uint64_t offset, void *buf, size_t count)
{
	size_t max = c->msize - P9_IOHDR, done = 0;

	if (count > SSIZE_MAX)
		count = SSIZE_MAX;
	while (done < count) {
		uint32_t n = (uint32_t)(count - done < max ? count - done : max);
		int got = read_once(c, fid, offset + done, (uint8_t *)buf + done, n);
		if (got < 0)
			return done ? (ssize_t)done : got;
		if (got == 0)
			break;
		done += (size_t)got;
	}
	return (ssize_t)done;
}

static int write_once(struct p9c *c, uint32_t fid, uint64_t offset, const void *buf,
		      uint32_t n)
{
	struct reply rep;
	struct req q;
	uint32_t got;
	int e;

	req_begin(&q, P9_TWRITE);
	p9_u32(&q.w, fid);
	p9_u64(&q.w, offset);
	p9_u32(&q.w, n);
	if ((e = req_call(c, &q, buf, n, P9_RWRITE, &rep)) < 0)
		return e;
	if (rd_u32(&rep.r, &got) < 0 || got > n)
		return reply_done(&rep, -EPROTO);
	if ((e = reply_done(&rep, 0)) < 0)
		return e;
	return (int)got;
}

struct p9c_pending {
	struct req q;
	struct pending p;
	uint32_t n;
	int e;
};

struct p9c_pending *p9c_write_start(struct p9c *c, uint32_t fid, uint64_t offset,
				    const void *buf, uint32_t n)
{
	struct p9c_pending *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	if (n > c->msize - P9_IOHDR)
		n = c->msize - P9_IOHDR;
	w->n = n;
	req_begin(&w->q, P9_TWRITE);
	p9_u32(&w->q.w, fid);
	p9_u64(&w->q.w, offset);
	p9_u32(&w->q.w, n);
	if ((w->e = p9_end(&w->q.w, c->msize - n)) == 0) {
		put_le32(buf_head(&w->q.b), (uint32_t)(buf_avail(&w->q.b) + n));
		rpc_start(c, &w->q.b, buf, n, P9_RWRITE, &w->p);
	}
	return w;
}

ssize_t p9c_write_finish(struct p9c *c, struct p9c_pending *w)
{
	struct reply rep;
	uint32_t got;
	int e = w->e;

	if (!e && (e = rpc_finish(c, &w->p, &rep)) == 0) {
		if (rd_u32(&rep.r, &got) < 0 || got > w->n)
			e = reply_done(&rep, -EPROTO);
		else if ((e = reply_done(&rep, 0)) == 0)
			e = (int)got;
	}
	buf_free(&w->q.b);
	free(w);
	return e;
}

ssize_t p9c_write(struct p9c *c, uint32_t fid, uint64_t offset, const void *buf,
		  size_t count)
{
	size_t max = c->msize - P9_IOHDR, done = 0;

	if (count > SSIZE_MAX)
		count = SSIZE_MAX;
	while (done < count) {
		uint32_t n = (uint32_t)(count - done < max ? count - done : max);
		int got = write_once(c, fid, offset + done, (const uint8_t *)buf + done, n);
		if (got < 0)
			return done ? (ssize_t)done : got;
		done += (size_t)got;
		if ((uint32_t)got < n)
			break;
	}
	return (ssize_t)done;
}

int p9c_getattr(struct p9c *c, uint32_t fid, uint64_t request_mask, uint64_t *valid,
		struct p9_qid *qid, struct p9_attr *attr)
{
	struct reply rep;
	struct req q;
	struct p9_qid tq;
	uint64_t tv;
	int e;

	req_begin(&q, P9_TGETATTR);
	p9_u32(&q.w, fid);
	p9_u64(&q.w, request_mask);
	if ((e = req_call(c, &q, NULL, 0, P9_RGETATTR, &rep)) < 0)
		return e;
	if (rd_u64(&rep.r, valid ? valid : &tv) < 0 || p9_get_qid(&rep.r, qid ? qid : &tq) < 0 ||
	    p9_get_attr(&rep.r, attr) < 0)
		e = -EPROTO;
	return reply_done(&rep, e);
}

int p9c_setattr(struct p9c *c, uint32_t fid, const struct p9_setattr *sa)
{
	struct req q;

	req_begin(&q, P9_TSETATTR);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, sa->valid);
	p9_u32(&q.w, sa->mode);
	p9_u32(&q.w, sa->uid);
	p9_u32(&q.w, sa->gid);
	p9_u64(&q.w, sa->size);
	p9_u64(&q.w, sa->atime_sec);
	p9_u64(&q.w, sa->atime_nsec);
	p9_u64(&q.w, sa->mtime_sec);
	p9_u64(&q.w, sa->mtime_nsec);
	return simple_call(c, &q, P9_RSETATTR);
}

ssize_t p9c_readdir(struct p9c *c, uint32_t fid, uint64_t offset, void *buf,
		    size_t count)
{
	struct reply rep;
	struct req q;
	uint32_t n;
	int e;

	n = (uint32_t)(count < c->msize - P9C_READDIR_HDR ? count : c->msize - P9C_READDIR_HDR);
	req_begin(&q, P9_TREADDIR);
	p9_u32(&q.w, fid);
	p9_u64(&q.w, offset);
	p9_u32(&q.w, n);
	if ((e = req_call(c, &q, NULL, 0, P9_RREADDIR, &rep)) < 0)
		return e;
	return data_reply(&rep, buf, n);
}

int p9c_dirent_next(struct rd *r, struct p9c_dirent *d)
{
	size_t off = r->off;

	if (!rd_left(r))
		return 0;
	if (p9_get_qid(r, &d->qid) < 0 || rd_u64(r, &d->offset) < 0 ||
	    rd_u8(r, &d->type) < 0 || p9_get_str(r, &d->name, &d->namelen) < 0)
		goto bad;
	if (!d->namelen || memchr(d->name, '/', d->namelen) || memchr(d->name, 0, d->namelen))
		goto bad;
	return 1;
bad:
	r->off = off;
	return -EPROTO;
}

int p9c_mkdir(struct p9c *c, uint32_t dfid, const char *name, uint32_t mode,
	      uint32_t gid, struct p9_qid *qid)
{
	struct req q;

	req_begin(&q, P9_TMKDIR);
	p9_u32(&q.w, dfid);
	p9_cstr(&q.w, name);
	p9_u32(&q.w, mode);
	p9_u32(&q.w, gid);
	return qid_call(c, &q, P9_RMKDIR, qid);
}

int p9c_symlink(struct p9c *c, uint32_t dfid, const char *name, const char *target,
		uint32_t gid, struct p9_qid *qid)
{
	struct req q;

	req_begin(&q, P9_TSYMLINK);
	p9_u32(&q.w, dfid);
	p9_cstr(&q.w, name);
	p9_cstr(&q.w, target);
	p9_u32(&q.w, gid);
	return qid_call(c, &q, P9_RSYMLINK, qid);
}

int p9c_mknod(struct p9c *c, uint32_t dfid, const char *name, uint32_t mode,
	      uint32_t major, uint32_t minor, uint32_t gid, struct p9_qid *qid)
{
	struct req q;

	req_begin(&q, P9_TMKNOD);
	p9_u32(&q.w, dfid);
	p9_cstr(&q.w, name);
	p9_u32(&q.w, mode);
	p9_u32(&q.w, major);
	p9_u32(&q.w, minor);
	p9_u32(&q.w, gid);
	return qid_call(c, &q, P9_RMKNOD, qid);
}

int p9c_link(struct p9c *c, uint32_t dfid, uint32_t fid, const char *name)
{
	struct req q;

	req_begin(&q, P9_TLINK);
	p9_u32(&q.w, dfid);
	p9_u32(&q.w, fid);
	p9_cstr(&q.w, name);
	return simple_call(c, &q, P9_RLINK);
}

int p9c_readlink(struct p9c *c, uint32_t fid, char *buf, size_t size)
{
	struct reply rep;
	struct req q;
	const char *s;
	uint16_t n;
	int e;

	req_begin(&q, P9_TREADLINK);
	p9_u32(&q.w, fid);
	if ((e = req_call(c, &q, NULL, 0, P9_RREADLINK, &rep)) < 0)
		return e;
	if (p9_get_str(&rep.r, &s, &n) < 0 || memchr(s, 0, n))
		return reply_done(&rep, -EPROTO);
	if ((size_t)n + 1 > size)
		return reply_done(&rep, -ENAMETOOLONG);
	memcpy(buf, s, n);
	buf[n] = 0;
	if ((e = reply_done(&rep, 0)) < 0)
		return e;
	return n;
}

int p9c_rename(struct p9c *c, uint32_t fid, uint32_t dfid, const char *name)
{
	struct req q;

	req_begin(&q, P9_TRENAME);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, dfid);
	p9_cstr(&q.w, name);
	return simple_call(c, &q, P9_RRENAME);
}

int p9c_renameat(struct p9c *c, uint32_t olddfid, const char *oldname,
		 uint32_t newdfid, const char *newname)
{
	struct req q;

	req_begin(&q, P9_TRENAMEAT);
	p9_u32(&q.w, olddfid);
	p9_cstr(&q.w, oldname);
	p9_u32(&q.w, newdfid);
	p9_cstr(&q.w, newname);
	return simple_call(c, &q, P9_RRENAMEAT);
}

int p9c_unlinkat(struct p9c *c, uint32_t dfid, const char *name, uint32_t flags)
{
	struct req q;

	req_begin(&q, P9_TUNLINKAT);
	p9_u32(&q.w, dfid);
	p9_cstr(&q.w, name);
	p9_u32(&q.w, flags);
	return simple_call(c, &q, P9_RUNLINKAT);
}

int p9c_remove(struct p9c *c, uint32_t fid)
{
	struct req q;

	req_begin(&q, P9_TREMOVE);
	p9_u32(&q.w, fid);
	return simple_call(c, &q, P9_RREMOVE);
}

int p9c_clunk(struct p9c *c, uint32_t fid)
{
	struct req q;

	req_begin(&q, P9_TCLUNK);
	p9_u32(&q.w, fid);
	return simple_call(c, &q, P9_RCLUNK);
}

int p9c_fsync(struct p9c *c, uint32_t fid, int datasync)
{
	struct req q;

	/* Linux sends datasync; servers that know only fid (diod 1.0)
	 * ignore what follows it. */
	req_begin(&q, P9_TFSYNC);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, datasync ? 1 : 0);
	return simple_call(c, &q, P9_RFSYNC);
}

int p9c_statfs(struct p9c *c, uint32_t fid, struct p9_statfs *st)
{
	struct reply rep;
	struct req q;
	int e;

	req_begin(&q, P9_TSTATFS);
	p9_u32(&q.w, fid);
	if ((e = req_call(c, &q, NULL, 0, P9_RSTATFS, &rep)) < 0)
		return e;
	e = p9_get_statfs(&rep.r, st) < 0 ? -EPROTO : 0;
	return reply_done(&rep, e);
}

/* --- compound calls ------------------------------------------------ */

/* One request of a compound: built, sent, then waited for. */
struct step {
	struct req q;
	struct pending p;
	struct reply rep;
	int e; /* 0, or why it was never sent */
};

static void step_send(struct p9c *c, struct step *k, uint8_t rtype)
{
	k->rep.msg = NULL;
	rd_init(&k->rep.r, NULL, 0);
	if ((k->e = p9_end(&k->q.w, c->msize)) == 0)
		rpc_start(c, &k->q.b, NULL, 0, rtype, &k->p);
}

static int step_wait(struct p9c *c, struct step *k)
{
	int e = k->e ? k->e : rpc_finish(c, &k->p, &k->rep);
	buf_free(&k->q.b);
	return e;
}

/* Sends steps[0..n) and waits for their answers, into e[]: all at once
 * on a server that keeps per-fid order, else one by one, stopping at
 * the first failure (later ones get -ECANCELED). */
static void steps_run(struct p9c *c, struct step *k, const uint8_t *rtype, int n, int *e)
{
	int i;

	if (__atomic_load_n(&c->ordered, __ATOMIC_RELAXED)) {
		for (i = 0; i < n; i++)
			step_send(c, &k[i], rtype[i]);
		for (i = 0; i < n; i++)
			e[i] = step_wait(c, &k[i]);
		return;
	}
	for (i = 0; i < n; i++) {
		step_send(c, &k[i], rtype[i]);
		e[i] = step_wait(c, &k[i]);
		if (e[i] < 0)
			break;
	}
	for (i++; i < n; i++) {
		buf_free(&k[i].q.b);
		k[i].rep.msg = NULL;
		e[i] = -ECANCELED;
	}
}

void p9c_set_ordered(struct p9c *c, int on)
{
	__atomic_store_n(&c->ordered, on, __ATOMIC_RELAXED);
}

/* Decoders for the replies compounds use. */
static int walk_reply(struct reply *rep, unsigned n, struct p9_qid *qid)
{
	struct p9_qid q = { 0 };
	uint16_t nwqid;

	if (rd_u16(&rep->r, &nwqid) < 0 || nwqid > n)
		return reply_done(rep, -EPROTO);
	for (unsigned i = 0; i < nwqid; i++)
		if (p9_get_qid(&rep->r, &q) < 0)
			return reply_done(rep, -EPROTO);
	if (reply_done(rep, 0) < 0)
		return -EPROTO;
	if (nwqid < n)
		return -ENOENT;
	if (qid && n)
		*qid = q;
	return 0;
}

static int getattr_reply(struct reply *rep, struct p9_qid *qid, struct p9_attr *attr)
{
	uint64_t valid;
	struct p9_qid tq;
	int e = 0;

	if (rd_u64(&rep->r, &valid) < 0 || p9_get_qid(&rep->r, qid ? qid : &tq) < 0 ||
	    p9_get_attr(&rep->r, attr) < 0)
		e = -EPROTO;
	return reply_done(rep, e);
}

static int open_reply(struct reply *rep, struct p9_qid *qid)
{
	struct p9_qid tq;
	uint32_t iounit;
	int e = 0;

	if (p9_get_qid(&rep->r, qid ? qid : &tq) < 0 || rd_u32(&rep->r, &iounit) < 0)
		e = -EPROTO;
	return reply_done(rep, e);
}

static void walk_step(struct step *k, uint32_t fid, uint32_t newfid, const char *name)
{
	req_begin(&k->q, P9_TWALK);
	p9_u32(&k->q.w, fid);
	p9_u32(&k->q.w, newfid);
	p9_u16(&k->q.w, *name ? 1 : 0);
	if (*name)
		p9_cstr(&k->q.w, name);
}

static void getattr_step(struct step *k, uint32_t fid)
{
	req_begin(&k->q, P9_TGETATTR);
	p9_u32(&k->q.w, fid);
	p9_u64(&k->q.w, P9_GETATTR_BASIC);
}

int p9c_walk_getattr(struct p9c *c, uint32_t fid, uint32_t newfid, const char *name,
		     struct p9_qid *qid, struct p9_attr *attr)
{
	static const uint8_t rt[2] = { P9_RWALK, P9_RGETATTR };
	struct step k[2];
	int e[2];

	walk_step(&k[0], fid, newfid, name);
	getattr_step(&k[1], newfid);
	steps_run(c, k, rt, 2, e);
	if (e[0] == 0)
		e[0] = walk_reply(&k[0].rep, *name ? 1 : 0, qid);
	if (e[1] == 0)
		e[1] = getattr_reply(&k[1].rep, qid, attr);
	/* A walk of one name either makes newfid or fails with nothing
	 * made (diod leaves a fid only after a walk of several names). */
	if (e[0] < 0)
		return e[0];
	if (e[1] < 0)
		p9c_clunk(c, newfid);
	return e[1];
}

/* --- batches ------------------------------------------------------- */

enum { B_WALK_GETATTR, B_GETATTR, B_CLUNK, B_XATTR_NAMES };

struct bitem {
	int kind;
	uint32_t fid, newfid;
	const char *name;
	struct p9_qid *qid;
	struct p9_attr *attr;
	int *err;
	/* B_XATTR_NAMES */
	void *buf;
	size_t bufsz, *len;
};

struct p9c_batch {
	struct p9c *c;
	unsigned n, max;
	struct bitem *items;
};

struct p9c_batch *p9c_batch_new(struct p9c *c, unsigned max)
{
	struct p9c_batch *b = calloc(1, sizeof(*b));
	if (!b || !(b->items = calloc(max ? max : 1, sizeof(*b->items)))) {
		free(b);
		return NULL;
	}
	b->c = c;
	b->max = max;
	return b;
}

static struct bitem *batch_add(struct p9c_batch *b, int kind, int *err)
{
	struct bitem *it;
	if (b->n == b->max) {
		*err = -ENOBUFS;
		return NULL;
	}
	it = &b->items[b->n++];
	it->kind = kind;
	it->err = err;
	*err = 0;
	return it;
}

void p9c_batch_walk_getattr(struct p9c_batch *b, uint32_t dfid, uint32_t newfid,
			    const char *name, struct p9_qid *qid, struct p9_attr *attr, int *err)
{
	struct bitem *it = batch_add(b, B_WALK_GETATTR, err);
	if (!it)
		return;
	it->fid = dfid;
	it->newfid = newfid;
	it->name = name;
	it->qid = qid;
	it->attr = attr;
}

void p9c_batch_getattr(struct p9c_batch *b, uint32_t fid, struct p9_qid *qid,
		       struct p9_attr *attr, int *err)
{
	struct bitem *it = batch_add(b, B_GETATTR, err);
	if (!it)
		return;
	it->fid = fid;
	it->qid = qid;
	it->attr = attr;
}

void p9c_batch_xattr_names(struct p9c_batch *b, uint32_t fid, uint32_t xfid, void *buf,
			   size_t bufsz, size_t *len, int *err)
{
	struct bitem *it = batch_add(b, B_XATTR_NAMES, err);
	if (!it)
		return;
	it->fid = fid;
	it->newfid = xfid;
	it->buf = buf;
	it->bufsz = bufsz < b->c->msize - P9_IOHDR ? bufsz : b->c->msize - P9_IOHDR;
	it->len = len;
}

/* The names list alone, for servers without per-fid order. */
static int xattr_names(struct p9c *c, uint32_t fid, uint32_t xfid, void *buf, size_t bufsz,
		       size_t *len)
{
	uint64_t size;
	ssize_t n;
	int e = p9c_xattrwalk(c, fid, xfid, "", &size);

	if (e < 0)
		return e;
	if (size > bufsz) {
		p9c_clunk(c, xfid);
		return -ERANGE;
	}
	n = p9c_read(c, xfid, 0, buf, (size_t)size);
	p9c_clunk(c, xfid);
	if (n < 0)
		return (int)n;
	*len = (size_t)n;
	return 0;
}

void p9c_batch_clunk(struct p9c_batch *b, uint32_t fid, int *err)
{
	struct bitem *it = batch_add(b, B_CLUNK, err);
	if (it)
		it->fid = fid;
}

/* Runs every request of the batch and frees it: all sent at once on a
 * server that keeps per-fid order, else one after the other. */
void p9c_batch_run(struct p9c_batch *b)
{
	struct p9c *c = b->c;
	struct step *k;
	unsigned i, n = 0;

	if (!__atomic_load_n(&c->ordered, __ATOMIC_RELAXED) ||
	    !(k = calloc(3 * (size_t)b->n + 1, sizeof(*k)))) {
		for (i = 0; i < b->n; i++) {
			struct bitem *it = &b->items[i];
			if (*it->err)
				continue;
			*it->err = it->kind == B_WALK_GETATTR ?
				   p9c_walk_getattr(c, it->fid, it->newfid, it->name, it->qid, it->attr) :
				   it->kind == B_GETATTR ?
				   p9c_getattr(c, it->fid, P9_GETATTR_BASIC, NULL, it->qid, it->attr) :
				   it->kind == B_XATTR_NAMES ?
				   xattr_names(c, it->fid, it->newfid, it->buf, it->bufsz, it->len) :
				   p9c_clunk(c, it->fid);
		}
		goto out;
	}
	for (i = 0; i < b->n; i++) {
		struct bitem *it = &b->items[i];
		if (*it->err)
			continue;
		switch (it->kind) {
		case B_WALK_GETATTR:
			walk_step(&k[n], it->fid, it->newfid, it->name);
			step_send(c, &k[n++], P9_RWALK);
			getattr_step(&k[n], it->newfid);
			step_send(c, &k[n++], P9_RGETATTR);
			break;
		case B_GETATTR:
			getattr_step(&k[n], it->fid);
			step_send(c, &k[n++], P9_RGETATTR);
			break;
		case B_CLUNK:
			req_begin(&k[n].q, P9_TCLUNK);
			p9_u32(&k[n].q.w, it->fid);
			step_send(c, &k[n++], P9_RCLUNK);
			break;
		case B_XATTR_NAMES:
			/* walk to the list, read it, let go: the server
			 * runs the read after the walk, the clunk last */
			req_begin(&k[n].q, P9_TXATTRWALK);
			p9_u32(&k[n].q.w, it->fid);
			p9_u32(&k[n].q.w, it->newfid);
			p9_cstr(&k[n].q.w, "");
			step_send(c, &k[n++], P9_RXATTRWALK);
			req_begin(&k[n].q, P9_TREAD);
			p9_u32(&k[n].q.w, it->newfid);
			p9_u64(&k[n].q.w, 0);
			p9_u32(&k[n].q.w, (uint32_t)it->bufsz);
			step_send(c, &k[n++], P9_RREAD);
			req_begin(&k[n].q, P9_TCLUNK);
			p9_u32(&k[n].q.w, it->newfid);
			step_send(c, &k[n++], P9_RCLUNK);
			break;
		}
	}
	n = 0;
	for (i = 0; i < b->n; i++) {
		struct bitem *it = &b->items[i];
		int e, e2;
		if (*it->err)
			continue;
		switch (it->kind) {
		case B_WALK_GETATTR:
			e = step_wait(c, &k[n]);
			e2 = step_wait(c, &k[n + 1]);
			if (e == 0)
				e = walk_reply(&k[n].rep, *it->name ? 1 : 0, it->qid);
			if (e2 == 0)
				e2 = getattr_reply(&k[n + 1].rep, it->qid, it->attr);
			if (e == 0 && e2 < 0)
				p9c_clunk(c, it->newfid);
			*it->err = e < 0 ? e : e2;
			n += 2;
			break;
		case B_GETATTR:
			e = step_wait(c, &k[n]);
			*it->err = e == 0 ? getattr_reply(&k[n].rep, it->qid, it->attr) : e;
			n++;
			break;
		case B_CLUNK:
			e = step_wait(c, &k[n]);
			*it->err = e == 0 ? reply_done(&k[n].rep, 0) : e;
			n++;
			break;
		case B_XATTR_NAMES: {
			uint64_t size = 0;
			uint32_t got = 0;
			const uint8_t *p;
			int e3;
			e = step_wait(c, &k[n]);
			e2 = step_wait(c, &k[n + 1]);
			e3 = step_wait(c, &k[n + 2]);
			if (e == 0)
				e = rd_u64(&k[n].rep.r, &size) < 0 ? reply_done(&k[n].rep, -EPROTO)
								    : reply_done(&k[n].rep, 0);
			if (e2 == 0) {
				if (rd_u32(&k[n + 1].rep.r, &got) < 0 || got > it->bufsz ||
				    rd_bytes(&k[n + 1].rep.r, &p, got) < 0)
					e2 = reply_done(&k[n + 1].rep, -EPROTO);
				else {
					memcpy(it->buf, p, got);
					e2 = reply_done(&k[n + 1].rep, 0);
				}
			}
			if (e3 == 0)
				reply_done(&k[n + 2].rep, 0);
			/* A list longer than the buffer is no list. */
			if (e == 0 && e2 == 0 && size != got)
				e2 = -ERANGE;
			*it->err = e < 0 ? e : e2;
			if (!*it->err)
				*it->len = got;
			n += 3;
			break;
		}
		}
	}
	free(k);
out:
	free(b->items);
	free(b);
}

int p9c_clone_lopen(struct p9c *c, uint32_t fid, uint32_t newfid, uint32_t flags,
		    struct p9_qid *qid)
{
	static const uint8_t rt[2] = { P9_RWALK, P9_RLOPEN };
	struct step k[2];
	int e[2];

	walk_step(&k[0], fid, newfid, "");
	req_begin(&k[1].q, P9_TLOPEN);
	p9_u32(&k[1].q.w, newfid);
	p9_u32(&k[1].q.w, flags);
	steps_run(c, k, rt, 2, e);
	if (e[0] == 0)
		e[0] = walk_reply(&k[0].rep, 0, NULL);
	if (e[1] == 0)
		e[1] = open_reply(&k[1].rep, qid);
	if (e[0] < 0)
		return e[0];
	if (e[1] < 0)
		p9c_clunk(c, newfid);
	return e[1];
}

int p9c_clone_lcreate(struct p9c *c, uint32_t dfid, uint32_t newfid, const char *name,
		      uint32_t flags, uint32_t mode, uint32_t gid, struct p9_qid *qid,
		      struct p9_attr *attr)
{
	static const uint8_t rt[3] = { P9_RWALK, P9_RLCREATE, P9_RGETATTR };
	struct step k[3];
	int e[3];

	walk_step(&k[0], dfid, newfid, "");
	req_begin(&k[1].q, P9_TLCREATE);
	p9_u32(&k[1].q.w, newfid);
	p9_cstr(&k[1].q.w, name);
	p9_u32(&k[1].q.w, flags);
	p9_u32(&k[1].q.w, mode);
	p9_u32(&k[1].q.w, gid);
	getattr_step(&k[2], newfid);
	steps_run(c, k, rt, 3, e);
	if (e[0] == 0)
		e[0] = walk_reply(&k[0].rep, 0, NULL);
	if (e[1] == 0)
		e[1] = open_reply(&k[1].rep, qid);
	if (e[2] == 0)
		e[2] = getattr_reply(&k[2].rep, qid, attr);
	if (e[0] < 0)
		return e[0];
	if (e[1] < 0 || e[2] < 0)
		p9c_clunk(c, newfid);
	return e[1] < 0 ? e[1] : e[2];
}

int p9c_xattrwalk(struct p9c *c, uint32_t fid, uint32_t newfid, const char *name,
		  uint64_t *size)
{
	struct reply rep;
	struct req q;
	int e;

	req_begin(&q, P9_TXATTRWALK);
	p9_u32(&q.w, fid);
	p9_u32(&q.w, newfid);
	p9_cstr(&q.w, name ? name : "");
	if ((e = req_call(c, &q, NULL, 0, P9_RXATTRWALK, &rep)) < 0)
		return e;
	e = rd_u64(&rep.r, size) < 0 ? -EPROTO : 0;
	return reply_done(&rep, e);
}

int p9c_xattrcreate(struct p9c *c, uint32_t fid, const char *name, uint64_t size,
		    uint32_t flags)
{
	struct req q;

	req_begin(&q, P9_TXATTRCREATE);
	p9_u32(&q.w, fid);
	p9_cstr(&q.w, name);
	p9_u64(&q.w, size);
	p9_u32(&q.w, flags);
	return simple_call(c, &q, P9_RXATTRCREATE);
}

static void put_client_id(struct p9_wr *w, const struct p9c_flock *fl)
{
	p9_str(w, fl->client_id, strnlen(fl->client_id, sizeof(fl->client_id)));
}

int p9c_lock(struct p9c *c, uint32_t fid, const struct p9c_flock *fl, uint8_t *status)
{
	struct reply rep;
	struct req q;
	int e;

	req_begin(&q, P9_TLOCK);
	p9_u32(&q.w, fid);
	p9_u8(&q.w, fl->type);
	p9_u32(&q.w, fl->flags);
	p9_u64(&q.w, fl->start);
	p9_u64(&q.w, fl->length);
	p9_u32(&q.w, fl->proc_id);
	put_client_id(&q.w, fl);
	if ((e = req_call(c, &q, NULL, 0, P9_RLOCK, &rep)) < 0)
		return e;
	e = rd_u8(&rep.r, status) < 0 ? -EPROTO : 0;
	return reply_done(&rep, e);
}

int p9c_getlock(struct p9c *c, uint32_t fid, struct p9c_flock *fl)
{
	struct reply rep;
	struct req q;
	struct p9c_flock got = { 0 };
	const char *s;
	uint16_t n;
	int e;

	req_begin(&q, P9_TGETLOCK);
	p9_u32(&q.w, fid);
	p9_u8(&q.w, fl->type);
	p9_u64(&q.w, fl->start);
	p9_u64(&q.w, fl->length);
	p9_u32(&q.w, fl->proc_id);
	put_client_id(&q.w, fl);
	if ((e = req_call(c, &q, NULL, 0, P9_RGETLOCK, &rep)) < 0)
		return e;
	if (rd_u8(&rep.r, &got.type) < 0 || rd_u64(&rep.r, &got.start) < 0 ||
	    rd_u64(&rep.r, &got.length) < 0 || rd_u32(&rep.r, &got.proc_id) < 0 ||
	    p9_get_str(&rep.r, &s, &n) < 0 || memchr(s, 0, n))
		return reply_done(&rep, -EPROTO);
	if (n >= sizeof(got.client_id))
		n = sizeof(got.client_id) - 1;
	memcpy(got.client_id, s, n);
	if ((e = reply_done(&rep, 0)) < 0)
		return e;
	*fl = got;
	return 0;
}
