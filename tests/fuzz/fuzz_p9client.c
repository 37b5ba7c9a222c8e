/*
 * libFuzzer target: the 9P2000.L client of fs9p/client.c reading replies
 * from a server that may say anything (what a bridge hears from a remote
 * node). A client thread makes a fixed series of calls, every kind of
 * reply decoder among them (walks and compounds, getattr, reads, a
 * directory listing walked with p9c_dirent_next, a batch with an xattr
 * list, locks, readlink, statfs, a write in two halves); the harness
 * plays the server on a socketpair. It answers Tversion properly, then
 * each request that arrives with the next record of the input:
 *
 *   type[1] len[2] body[len]   (len cut to what is left)
 *
 * sent with the request's own tag and a size it computes, so that the
 * fuzzer reaches the decoders rather than the framing checks. (Input
 * whose first byte is 0xff is sent raw instead: the framing checks too.)
 * When the input runs out the harness hangs up; every call must then
 * fail, the client thread end, and p9c_close return. Nothing may crash,
 * hang or leak.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs9p/client.h"
#include "fs9p/p9.h"
#include "lib/buf.h"
#include "lib/log.h"

struct client {
	int fd;
	struct p9c *c;
	int opened;
	int done_w; /* written to when the calls are over */
};

static void calls(struct p9c *c)
{
	static char buf[70000];
	struct p9_qid q;
	struct p9_attr a;
	struct p9_statfs sf;
	struct p9c_flock fl = { .type = P9_LOCK_TYPE_WRLCK, .length = 10 };
	struct p9c_dirent d;
	struct rd r;
	uint32_t root, f, g;
	uint8_t status;
	uint64_t size;
	ssize_t n;
	int e[4];
	size_t xlen;

	if (p9c_fid_alloc(c, &root) < 0 || p9c_fid_alloc(c, &f) < 0 || p9c_fid_alloc(c, &g) < 0)
		return;
	p9c_attach(c, root, P9_NOFID, "0", "", 0, &q);
	p9c_walk_getattr(c, root, f, "a", &q, &a);
	p9c_walk(c, root, f, 2, (const char *[]){ "b", "c" }, NULL);
	p9c_clone_lopen(c, root, g, P9_DOTL_RDONLY, &q);
	n = p9c_read(c, g, 0, buf, sizeof(buf));
	(void)n;
	if ((n = p9c_readdir(c, g, 0, buf, 8192)) > 0) {
		rd_init(&r, buf, (size_t)n);
		while (p9c_dirent_next(&r, &d) == 1)
			;
	}
	p9c_getattr(c, root, P9_GETATTR_ALL, NULL, &q, &a);
	p9c_clone_lcreate(c, root, g, "new", P9_DOTL_RDWR, 0644, 0, &q, &a);
	{
		struct p9c_batch *b = p9c_batch_new(c, 4);
		if (b) {
			p9c_batch_walk_getattr(b, root, f, "x", &q, &a, &e[0]);
			p9c_batch_getattr(b, root, &q, &a, &e[1]);
			p9c_batch_xattr_names(b, root, g, buf, 512, &xlen, &e[2]);
			p9c_batch_clunk(b, g, &e[3]);
			p9c_batch_run(b);
		}
	}
	p9c_readlink(c, root, buf, 256);
	p9c_statfs(c, root, &sf);
	p9c_lock(c, root, &fl, &status);
	p9c_getlock(c, root, &fl);
	p9c_xattrwalk(c, root, f, "user.x", &size);
	{
		struct p9c_pending *w = p9c_write_start(c, root, 0, "data", 4);
		if (w)
			p9c_write_finish(c, w);
	}
	p9c_write(c, root, 0, buf, 9000);
	p9c_clunk(c, root);
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	if (p9c_open(cl->fd, 8192, &cl->c) < 0) {
		close(cl->fd);
		return NULL;
	}
	cl->opened = 1;
	p9c_set_ordered(cl->c, 1);
	calls(cl->c);
	if (write(cl->done_w, "", 1) < 0) {
		/* The harness then waits for the hang-up instead. */
	}
	return NULL;
}

/* One whole T-message from the client, or -1 when it hung up or its
 * calls are over (done readable). */
static int read_request(int fd, int done, uint8_t *msg, size_t cap, uint16_t *tag,
			uint8_t *type)
{
	struct pollfd p[2] = { { fd, POLLIN, 0 }, { done, POLLIN, 0 } };
	size_t got = 0, size;

	if (poll(p, 2, -1) < 0 || !(p[0].revents & (POLLIN | POLLHUP)))
		return -1;
	while (got < 4) {
		ssize_t n = read(fd, msg + got, 4 - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	size = get_le32(msg);
	if (size < P9_HDR || size > cap)
		return -1;
	while (got < size) {
		ssize_t n = read(fd, msg + got, size - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	*type = msg[4];
	*tag = (uint16_t)(msg[5] | msg[6] << 8);
	return 0;
}

static void write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		/* The client may have hung up: no SIGPIPE. */
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t req[16384];
	struct client cl = { 0 };
	pthread_t t;
	int sv[2], done[2];
	uint16_t tag;
	uint8_t type;
	size_t off = 0;

	log_set_level(LOG_LVL_ERROR);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	if (pipe2(done, O_CLOEXEC) < 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	cl.fd = sv[0];
	cl.done_w = done[1];
	if (pthread_create(&t, NULL, client_main, &cl) != 0) {
		close(sv[0]);
		close(sv[1]);
		close(done[0]);
		close(done[1]);
		return 0;
	}
	/* Tversion: answered properly. */
	if (read_request(sv[1], done[0], req, sizeof(req), &tag, &type) == 0 &&
	    type == P9_TVERSION) {
		struct buf b;
		struct p9_wr w;
		buf_init(&b);
		p9_begin(&w, &b, P9_RVERSION, tag);
		p9_u32(&w, 8192);
		p9_cstr(&w, P9_VERSION);
		if (p9_end(&w, UINT32_MAX) == 0)
			write_all(sv[1], buf_head(&b), buf_avail(&b));
		buf_free(&b);
		if (size && data[0] == 0xff) {
			write_all(sv[1], data + 1, size - 1);
			off = size;
		}
		while (off < size &&
		       read_request(sv[1], done[0], req, sizeof(req), &tag, &type) == 0) {
			uint8_t hdr[P9_HDR];
			size_t len;
			uint8_t rtype = data[off++];
			if (size - off < 2)
				break;
			len = data[off] | (size_t)data[off + 1] << 8;
			off += 2;
			if (len > size - off)
				len = size - off;
			put_le32(hdr, (uint32_t)(P9_HDR + len));
			hdr[4] = rtype;
			hdr[5] = (uint8_t)tag;
			hdr[6] = (uint8_t)(tag >> 8);
			write_all(sv[1], hdr, sizeof(hdr));
			write_all(sv[1], data + off, len);
			off += len;
		}
	}
	/* The server goes: every call still waiting fails. */
	shutdown(sv[1], SHUT_RDWR);
	close(sv[1]);
	pthread_join(t, NULL);
	if (cl.opened)
		p9c_close(cl.c);
	close(done[0]);
	close(done[1]);
	return 0;
}
