/*
 * Pipes: records of one connection become records of another, or bytes
 * of a plain file descriptor pair. Flow control: a side whose output is
 * backed up stops the other side's input until it drains.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "proto/node.h"
#include "wire/conn.h"

#define FD_OUT_HIGH (1u << 20)

/* --- connection <-> connection ------------------------------------- */

struct cpipe {
	struct wire_conn *end[2];
};

static int cpipe_side(struct cpipe *p, struct wire_conn *c)
{
	return p->end[1] == c;
}

static void cpipe_record(struct wire_conn *c, uint8_t *d, size_t n, void *arg)
{
	struct cpipe *p = arg;
	struct wire_conn *other = p->end[!cpipe_side(p, c)];
	if (wire_conn_send(other, d, n) < 0)
		return;
	if (wire_conn_pending(other) >= WIRE_OUT_LOW)
		wire_conn_pause(c, 1);
}

static void cpipe_writable(struct wire_conn *c, void *arg)
{
	struct cpipe *p = arg;
	wire_conn_pause(p->end[!cpipe_side(p, c)], 0);
}

static void cpipe_closed(struct wire_conn *c, int err, void *arg)
{
	struct cpipe *p = arg;
	struct wire_conn *other = p->end[!cpipe_side(p, c)];
	/* After an orderly end the other side gets what is queued, then
	 * closes; after an error it is cut off too, so that the error is
	 * seen at the far end rather than looking like an end of stream. */
	wire_conn_set_ops(other, NULL, NULL);
	if (err)
		wire_conn_close(other);
	else
		wire_conn_shutdown(other);
	free(p);
}

static const struct wire_conn_ops cpipe_ops = {
	.record = cpipe_record,
	.writable = cpipe_writable,
	.closed = cpipe_closed,
};

void node_pipe(struct wire_conn *a, struct wire_conn *b)
{
	struct cpipe *p = calloc(1, sizeof(*p));
	if (!p) {
		wire_conn_close(a);
		wire_conn_close(b);
		return;
	}
	p->end[0] = a;
	p->end[1] = b;
	wire_conn_set_ops(a, &cpipe_ops, p);
	wire_conn_set_ops(b, &cpipe_ops, p);
	wire_conn_pause(a, 0);
	wire_conn_pause(b, 0);
}

/* --- connection <-> file descriptors ------------------------------- */

/*
 * An empty record marks the end of one direction (a half-close): end of
 * file on rfd sends one, and receiving one shuts wfd down for writing
 * once everything before it is written. The pipe ends when both
 * directions have ended, on an error, or when the connection goes.
 */
struct fpipe {
	struct loop *loop;
	struct wire_conn *wc;
	int rfd, wfd;
	struct loop_watch *rw, *ww;
	struct buf out;   /* received bytes not yet written to wfd */
	int rx_eof;       /* rfd reached end of file; marker sent */
	int tx_eof;       /* marker received; wfd shut once out drains */
	int tx_done;
	int wc_gone;
	int hangup;       /* rfd is a terminal that hung up: nothing more to do */
	int no_shutdown;  /* the far end's end of stream is not passed on */
	/* Regular files cannot be polled; they are always ready. */
	int r_queued;
	/* Received records are written once per dispatch round. */
	int w_queued;
	int ended;    /* fpipe_finish ran: fds closed */
	int finished; /* done reported: freed once no deferred call is due */
	int err;
	void (*done)(void *arg, int err);
	void *arg;
};

static void fpipe_drop(struct wire_conn *c, uint8_t *d, size_t n, void *arg)
{
}

static void fpipe_release(struct fpipe *p)
{
	p->finished = 1;
	if (!p->r_queued && !p->w_queued)
		free(p);
}

static void fpipe_drained(struct wire_conn *c, int err, void *arg)
{
	struct fpipe *p = arg;
	if (p->done)
		p->done(p->arg, p->err ? p->err : err);
	fpipe_release(p);
}

/* While what was queued is sent before the connection closes. */
static const struct wire_conn_ops fpipe_drain_ops = {
	.record = fpipe_drop,
	.closed = fpipe_drained,
};

/* Ends the pipe; done runs once the connection has sent everything and
 * closed, so that "done" means the bytes have left. */
static void fpipe_finish(struct fpipe *p, int err)
{
	p->ended = 1;
	if (p->rw)
		loop_watch_del(p->rw);
	if (p->ww)
		loop_watch_del(p->ww);
	p->rw = p->ww = NULL;
	close(p->rfd);
	close(p->wfd);
	buf_free(&p->out);
	p->err = err;
	if (!p->wc_gone) {
		wire_conn_set_ops(p->wc, &fpipe_drain_ops, p);
		if (err)
			wire_conn_close(p->wc);
		else
			wire_conn_shutdown(p->wc);
		if (!err)
			return;
	}
	fpipe_drained(p->wc, err, p);
}

static void fpipe_rfd_io(struct loop *l, int fd, uint32_t ev, void *arg);

/* A regular file as input: read a chunk per dispatch round. */
static void fpipe_file_read(struct loop *l, void *arg)
{
	struct fpipe *p = arg;
	p->r_queued = 0;
	if (p->ended) {
		if (p->finished)
			fpipe_release(p);
		return;
	}
	fpipe_rfd_io(l, p->rfd, EPOLLIN, p);
}

/* Recompute interest; returns 1 if the pipe finished. */
static int fpipe_update(struct fpipe *p)
{
	if (!buf_avail(&p->out) && (p->tx_eof || p->wc_gone) && !p->tx_done) {
		p->tx_done = 1;
		if (!p->no_shutdown && shutdown(p->wfd, SHUT_WR) < 0 && errno == ENOTSOCK) {
			/* A pipe or terminal: nothing more will be written. */
		}
	}
	if ((p->tx_done && p->rx_eof) || (p->wc_gone && p->tx_done) || (p->hangup && p->rx_eof)) {
		fpipe_finish(p, 0);
		return 1;
	}
	int want_read = !p->rx_eof && !p->wc_gone &&
			wire_conn_pending(p->wc) < WIRE_OUT_LOW;
	if (!p->wc_gone)
		wire_conn_pause(p->wc, buf_avail(&p->out) >= FD_OUT_HIGH);
	if (p->ww)
		loop_watch_set(p->ww, buf_avail(&p->out) ? EPOLLOUT : 0);
	/* The fd's input waits while the connection's output is backed up. */
	if (p->rw)
		loop_watch_set(p->rw, want_read ? EPOLLIN : 0);
	else if (want_read && !p->r_queued && loop_defer(p->loop, fpipe_file_read, p) == 0)
		p->r_queued = 1;
	return 0;
}

static void fpipe_flush(struct fpipe *p)
{
	while (buf_avail(&p->out)) {
		ssize_t n = write(p->wfd, buf_head(&p->out), buf_avail(&p->out));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			fpipe_finish(p, -errno);
			return;
		}
		buf_consume(&p->out, n);
	}
	fpipe_update(p);
}

static void fpipe_flush_cb(struct loop *l, void *arg)
{
	struct fpipe *p = arg;
	p->w_queued = 0;
	if (p->ended) {
		if (p->finished)
			fpipe_release(p);
		return;
	}
	fpipe_flush(p);
}

static void fpipe_wfd_io(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct fpipe *p = arg;
	if ((ev & (EPOLLERR | EPOLLHUP)) && !buf_avail(&p->out)) {
		/* The reader is gone and nothing waits: stop watching, or
		 * level-triggered hang-ups would spin. A later write fails. */
		loop_watch_del(p->ww);
		p->ww = NULL;
		return;
	}
	fpipe_flush(p);
}

static void fpipe_rfd_io(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct fpipe *p = arg;
	uint8_t *dst = wire_conn_reserve(p->wc, WIRE_MAX_RECORD);
	ssize_t n;

	if (!dst) {
		fpipe_finish(p, -ENOMEM);
		return;
	}
	n = read(p->rfd, dst, WIRE_MAX_RECORD);
	int e = n < 0 ? errno : 0;
	/* A pty's master reads EIO once no one holds the terminal: its end,
	 * and the pipe's, since nothing can be written to it either. */
	if (e == EIO && isatty(p->rfd)) {
		n = 0;
		p->hangup = 1;
	}
	if (n < 0) {
		if (e != EAGAIN && e != EINTR)
			fpipe_finish(p, -e);
		return;
	}
	if (n == 0) {
		/* epoll reports hang-up whatever the mask: stop watching. */
		p->rx_eof = 1;
		if (p->rw)
			loop_watch_del(p->rw);
		p->rw = NULL;
	}
	/* n == 0 commits the empty end-of-stream record. */
	if (wire_conn_commit(p->wc, n) < 0)
		return; /* closed: the closed callback finishes */
	fpipe_update(p);
}

static void fpipe_record(struct wire_conn *c, uint8_t *d, size_t n, void *arg)
{
	struct fpipe *p = arg;
	if (n == 0) {
		p->tx_eof = 1;
	} else if (p->tx_eof || buf_put(&p->out, d, n) < 0) {
		fpipe_finish(p, -EPROTO);
		return;
	}
	/* Records that arrive together leave in one write. */
	if (p->w_queued)
		return;
	if (loop_defer(p->loop, fpipe_flush_cb, p) == 0)
		p->w_queued = 1;
	else
		fpipe_flush(p);
}

static void fpipe_writable(struct wire_conn *c, void *arg)
{
	fpipe_update(arg);
}

static void fpipe_closed(struct wire_conn *c, int err, void *arg)
{
	struct fpipe *p = arg;
	p->wc_gone = 1;
	/* A stream that ends without its end-of-stream record was cut off
	 * (a node died, a network broke): that is an error, not an end. */
	if (!err && !p->tx_eof)
		err = -ECONNRESET;
	if (err)
		fpipe_finish(p, err);
	else
		fpipe_update(p);
}

static const struct wire_conn_ops fpipe_ops = {
	.record = fpipe_record,
	.writable = fpipe_writable,
	.closed = fpipe_closed,
};

int node_pipe_fds(struct wire_conn *wc, int rfd, int wfd,
		  void (*done)(void *arg, int err), void *arg)
{
	return node_pipe_fds_flags(wc, rfd, wfd, 0, done, arg);
}

int node_pipe_fds_flags(struct wire_conn *wc, int rfd, int wfd, unsigned flags,
			void (*done)(void *arg, int err), void *arg)
{
	struct fpipe *p = calloc(1, sizeof(*p));
	int r = -ENOMEM;

	if (!p)
		goto fail;
	p->no_shutdown = !!(flags & NODE_PIPE_NO_SHUTDOWN);
	p->loop = wire_conn_loop(wc);
	p->wc = wc;
	p->rfd = rfd;
	/* Each direction gets its own descriptor, so its own watch. */
	p->wfd = wfd == rfd ? fcntl(rfd, F_DUPFD_CLOEXEC, 3) : wfd;
	p->done = done;
	p->arg = arg;
	buf_init(&p->out);
	if (p->wfd < 0) {
		r = -errno;
		goto fail;
	}
	net_set_nonblock(rfd);
	net_set_nonblock(p->wfd);
	p->rw = loop_watch_fd(p->loop, rfd, EPOLLIN, fpipe_rfd_io, p);
	if (!p->rw && errno != EPERM)
		goto fail;
	p->ww = loop_watch_fd(p->loop, p->wfd, 0, fpipe_wfd_io, p);
	if (!p->ww && errno != EPERM)
		goto fail;
	wire_conn_set_ops(wc, &fpipe_ops, p);
	wire_conn_pause(wc, 0);
	fpipe_update(p);
	return 0;
fail:
	if (p) {
		if (p->rw)
			loop_watch_del(p->rw);
		if (p->ww)
			loop_watch_del(p->ww);
		if (p->wfd >= 0 && p->wfd != wfd)
			close(p->wfd);
		free(p);
	}
	return r;
}

int node_pipe_pair(struct wire_conn *data, int sockbuf, int *fd)
{
	int sv[2], e;

	/* The loop pipes the connection to sv[0]; the server's threads
	 * read sv[1] with blocking calls. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		e = -errno;
		wire_conn_close(data);
		return e;
	}
	for (int i = 0; sockbuf && i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof(sockbuf));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof(sockbuf));
	}
	if ((e = node_pipe_fds(data, sv[0], sv[0], NULL, NULL)) < 0) {
		close(sv[0]);
		close(sv[1]);
		wire_conn_close(data);
		return e;
	}
	*fd = sv[1];
	return 0;
}
