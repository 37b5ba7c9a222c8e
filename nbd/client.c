/*
 * The blocking NBD client (see client.h; NetworkBlockDevice/nbd
 * doc/proto.md, "Fixed newstyle negotiation", "Structured reply chunk
 * message").
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/io.h"
#include "nbd/client.h"
#include "nbd/proto.h"

/* Option replies and error messages we are willing to read. */
#define MAX_OPT_REPLY (64u << 10)
/* A structured chunk's payload beyond a read's data. */
#define MAX_CHUNK (NBD_MAX_PAYLOAD + 4096u)

struct pending {
	int used;
	uint64_t cookie;
	uint16_t type;
	uint64_t offset;
	uint32_t length;
	uint8_t *buf;   /* a read's destination */
	uint64_t got;   /* a read's bytes delivered */
	int err;        /* the server's NBD error, 0 if none */
	int have_ext;
	uint32_t ext_len, ext_flags;
};

struct nbd_client {
	int fd;
	uint64_t size;
	uint16_t flags;
	int structured;
	int meta;
	uint32_t meta_id;
	uint64_t next_cookie;
	struct pending pend[NBD_CLIENT_MAX_INFLIGHT];
	unsigned inflight;
	struct pending last; /* the request completed last */
	int broken;
	char err[256];
	/* The fuzzer's replies come from memory instead of fd. */
	const uint8_t *mem;
	size_t mem_len, mem_off;
};

static int fail(struct nbd_client *c, int e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct nbd_client *c, int e, const char *fmt, ...)
{
	va_list ap;
	if (!c->broken) {
		va_start(ap, fmt);
		vsnprintf(c->err, sizeof(c->err), fmt, ap);
		va_end(ap);
	}
	c->broken = 1;
	return e;
}

static int cl_read(struct nbd_client *c, void *p, size_t n)
{
	int e;

	if (c->broken)
		return -EPIPE;
	if (c->mem) {
		if (c->mem_len - c->mem_off < n)
			return fail(c, -ECONNRESET, "the server hung up");
		memcpy(p, c->mem + c->mem_off, n);
		c->mem_off += n;
		return 0;
	}
	if ((e = io_read_all(c->fd, p, n)) == -ECONNRESET)
		return fail(c, e, "the server hung up");
	if (e < 0)
		return fail(c, e, "reading from the server: %s", strerror(-e));
	return 0;
}

/* Reads and drops n bytes. */
static int cl_skip(struct nbd_client *c, uint64_t n)
{
	uint8_t tmp[4096];
	while (n) {
		size_t k = n < sizeof(tmp) ? (size_t)n : sizeof(tmp);
		int e = cl_read(c, tmp, k);
		if (e < 0)
			return e;
		n -= k;
	}
	return 0;
}

static int cl_writev(struct nbd_client *c, struct iovec *iov, int n)
{
	int e;

	if (c->broken)
		return -EPIPE;
	if (c->mem)
		return 0;
	if ((e = io_writev_all(c->fd, iov, n)) < 0)
		return fail(c, e, "writing to the server: %s", strerror(-e));
	return 0;
}

/* --- negotiation --------------------------------------------------- */

static int send_option(struct nbd_client *c, uint32_t opt, const void *data, size_t len)
{
	uint8_t h[NBD_OPT_HEADER_SIZE];
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)data, len } };

	nbd_put_be64(h, NBD_IHAVEOPT);
	put_be32(h + 8, opt);
	put_be32(h + 12, (uint32_t)len);
	return cl_writev(c, iov, len ? 2 : 1);
}

/* One option reply: its type and data (in data, NUL-terminated, at most
 * MAX_OPT_REPLY bytes; the caller frees). */
static int read_opt_reply(struct nbd_client *c, uint32_t opt, uint32_t *type,
			  uint8_t **data, uint32_t *len)
{
	uint8_t h[NBD_OPT_REPLY_HEADER_SIZE];
	int e;

	*data = NULL;
	if ((e = cl_read(c, h, sizeof(h))) < 0)
		return e;
	if (nbd_get_be64(h) != NBD_REP_MAGIC || get_be32(h + 8) != opt)
		return fail(c, -EPROTO, "the server's option reply is malformed");
	*type = get_be32(h + 12);
	*len = get_be32(h + 16);
	if (*len > MAX_OPT_REPLY)
		return fail(c, -EPROTO, "the server's option reply is too long (%u bytes)", *len);
	if (!(*data = calloc(1, (size_t)*len + 1)))
		return fail(c, -ENOMEM, "out of memory");
	if ((e = cl_read(c, *data, *len)) < 0) {
		free(*data);
		*data = NULL;
	}
	return e;
}

static void rep_error_text(uint32_t type, const uint8_t *data, uint32_t len, char *out,
			   size_t outsz)
{
	static const char *const names[] = {
		"", "unsupported", "refused by policy", "invalid", "unsupported on this platform",
		"TLS required", "unknown export", "server shutting down", "block size required",
		"too big",
	};
	uint32_t n = type & 0x7fffffffu;
	const char *what = n < sizeof(names) / sizeof(names[0]) ? names[n] : "error";
	/* The message is the server's: print it as text, cut short. */
	snprintf(out, outsz, "%s%s%.*s", what, len ? ": " : "", (int)(len > 200 ? 200 : len),
		 (const char *)data);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 32 || *p == 127)
			*p = '?';
}

static int negotiate(struct nbd_client *c, const char *name)
{
	uint8_t h[18], cf[4], *data = NULL, *go;
	uint32_t type, len, nlen = (uint32_t)strlen(name);
	static const char ctx[] = NBD_META_BASE_ALLOCATION;
	char why[256];
	int e, got_export = 0;

	if (nlen > NBD_MAX_STRING)
		return fail(c, -EINVAL, "export name too long");
	if ((e = cl_read(c, h, sizeof(h))) < 0)
		return e;
	if (nbd_get_be64(h) != NBD_MAGIC || nbd_get_be64(h + 8) != NBD_IHAVEOPT)
		return fail(c, -EPROTO, "not an NBD server (or an oldstyle one)");
	if (!(nbd_get_be16(h + 16) & NBD_FLAG_FIXED_NEWSTYLE))
		return fail(c, -EPROTO, "the server does not speak fixed newstyle negotiation");
	put_be32(cf, NBD_FLAG_C_FIXED_NEWSTYLE |
			     (nbd_get_be16(h + 16) & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0));
	struct iovec iov = { cf, 4 };
	if ((e = cl_writev(c, &iov, 1)) < 0)
		return e;

	if ((e = send_option(c, NBD_OPT_STRUCTURED_REPLY, NULL, 0)) < 0 ||
	    (e = read_opt_reply(c, NBD_OPT_STRUCTURED_REPLY, &type, &data, &len)) < 0)
		return e;
	free(data);
	c->structured = type == NBD_REP_ACK;

	if (c->structured) {
		size_t ml = 4 + nlen + 4 + 4 + sizeof(ctx) - 1;
		uint8_t *m = malloc(ml);
		if (!m)
			return fail(c, -ENOMEM, "out of memory");
		put_be32(m, nlen);
		memcpy(m + 4, name, nlen);
		put_be32(m + 4 + nlen, 1);
		put_be32(m + 8 + nlen, sizeof(ctx) - 1);
		memcpy(m + 12 + nlen, ctx, sizeof(ctx) - 1);
		e = send_option(c, NBD_OPT_SET_META_CONTEXT, m, ml);
		free(m);
		if (e < 0)
			return e;
		for (;;) {
			if ((e = read_opt_reply(c, NBD_OPT_SET_META_CONTEXT, &type, &data, &len)) < 0)
				return e;
			if (type == NBD_REP_META_CONTEXT && len == 4 + sizeof(ctx) - 1 &&
			    !memcmp(data + 4, ctx, sizeof(ctx) - 1)) {
				c->meta = 1;
				c->meta_id = get_be32(data);
			}
			free(data);
			if (type != NBD_REP_META_CONTEXT)
				break;
		}
		if (type != NBD_REP_ACK)
			c->meta = 0;
	}

	if (!(go = malloc(4 + nlen + 4)))
		return fail(c, -ENOMEM, "out of memory");
	put_be32(go, nlen);
	memcpy(go + 4, name, nlen);
	nbd_put_be16(go + 4 + nlen, 1);
	nbd_put_be16(go + 6 + nlen, NBD_INFO_BLOCK_SIZE);
	e = send_option(c, NBD_OPT_GO, go, 4 + nlen + 4);
	free(go);
	if (e < 0)
		return e;
	for (;;) {
		if ((e = read_opt_reply(c, NBD_OPT_GO, &type, &data, &len)) < 0)
			return e;
		if (type == NBD_REP_INFO && len >= 2 && nbd_get_be16(data) == NBD_INFO_EXPORT) {
			if (len != 12) {
				free(data);
				return fail(c, -EPROTO, "the server's export information is malformed");
			}
			c->size = nbd_get_be64(data + 2);
			c->flags = nbd_get_be16(data + 10);
			got_export = 1;
		}
		if (type & 0x80000000u) {
			rep_error_text(type, data, len, why, sizeof(why));
			free(data);
			return fail(c, -ENOENT, "the server refused the export: %s", why);
		}
		free(data);
		if (type == NBD_REP_ACK)
			break;
		if (type != NBD_REP_INFO)
			return fail(c, -EPROTO, "unexpected reply %#x to NBD_OPT_GO", type);
	}
	if (!got_export)
		return fail(c, -EPROTO, "the server did not describe the export");
	return 0;
}

struct nbd_client *nbd_client_new(int fd, const char *name, char *err, size_t errsz)
{
	struct nbd_client *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errsz, "out of memory");
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->next_cookie = 1;
	if (negotiate(c, name) < 0) {
		snprintf(err, errsz, "%s", c->err);
		close(fd);
		free(c);
		return NULL;
	}
	return c;
}

void nbd_client_free(struct nbd_client *c)
{
	if (!c)
		return;
	if (!c->broken && !c->mem) {
		struct nbd_request r = { .type = NBD_CMD_DISC };
		uint8_t h[NBD_REQUEST_SIZE];
		struct iovec iov = { h, sizeof(h) };
		nbd_request_encode(h, &r);
		cl_writev(c, &iov, 1);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

uint64_t nbd_client_size(const struct nbd_client *c) { return c->size; }
uint16_t nbd_client_flags(const struct nbd_client *c) { return c->flags; }
int nbd_client_has_block_status(const struct nbd_client *c) { return c->meta; }
const char *nbd_client_error(const struct nbd_client *c) { return c->err; }

/* --- transmission -------------------------------------------------- */

int nbd_client_submit(struct nbd_client *c, uint16_t type, uint16_t flags, uint64_t offset,
		      uint32_t length, const void *data, void *buf)
{
	struct pending *p = NULL;
	struct nbd_request r;
	uint8_t h[NBD_REQUEST_SIZE];
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)data, length } };

	if (c->broken)
		return -EPIPE;
	for (int i = 0; i < NBD_CLIENT_MAX_INFLIGHT && !p; i++)
		if (!c->pend[i].used)
			p = &c->pend[i];
	if (!p)
		return -EBUSY;
	memset(p, 0, sizeof(*p));
	p->used = 1;
	p->cookie = c->next_cookie++;
	p->type = type;
	p->offset = offset;
	p->length = length;
	p->buf = buf;
	c->inflight++;
	r = (struct nbd_request){ .flags = flags, .type = type, .cookie = p->cookie,
				  .offset = offset, .length = length };
	nbd_request_encode(h, &r);
	return cl_writev(c, iov, type == NBD_CMD_WRITE && length ? 2 : 1);
}

static struct pending *find(struct nbd_client *c, uint64_t cookie)
{
	for (int i = 0; i < NBD_CLIENT_MAX_INFLIGHT; i++)
		if (c->pend[i].used && c->pend[i].cookie == cookie)
			return &c->pend[i];
	return NULL;
}

static int finish(struct nbd_client *c, struct pending *p, int *err)
{
	if (!p->err && p->type == NBD_CMD_READ && p->got != p->length)
		return fail(c, -EPROTO, "the server answered a read of %u bytes with %llu",
			    p->length, (unsigned long long)p->got);
	if (!p->err && p->type == NBD_CMD_BLOCK_STATUS && !p->have_ext)
		return fail(c, -EPROTO, "the server's block status reply has no extent");
	*err = p->err;
	c->last = *p;
	p->used = 0;
	c->inflight--;
	return 0;
}

/* One structured chunk for p; *done when it was the last. */
static int read_chunk(struct nbd_client *c, struct pending *p, uint16_t flags, uint16_t type,
		      uint32_t len)
{
	uint8_t b[16];
	uint64_t off;
	int e;

	if (len > MAX_CHUNK)
		return fail(c, -EPROTO, "a reply chunk of %u bytes", len);
	switch (type) {
	case NBD_REPLY_TYPE_NONE:
		if (len || !(flags & NBD_REPLY_FLAG_DONE))
			return fail(c, -EPROTO, "a malformed NONE chunk");
		return 0;
	case NBD_REPLY_TYPE_OFFSET_DATA:
		if (p->type != NBD_CMD_READ || len < 9)
			return fail(c, -EPROTO, "an unexpected data chunk");
		if ((e = cl_read(c, b, 8)) < 0)
			return e;
		off = nbd_get_be64(b);
		len -= 8;
		if (off < p->offset || off - p->offset > p->length ||
		    len > p->length - (off - p->offset) || p->got + len > p->length)
			return fail(c, -EPROTO, "a data chunk outside its request");
		p->got += len;
		return cl_read(c, p->buf + (off - p->offset), len);
	case NBD_REPLY_TYPE_OFFSET_HOLE: {
		uint32_t hs;
		if (p->type != NBD_CMD_READ || len != 12)
			return fail(c, -EPROTO, "an unexpected hole chunk");
		if ((e = cl_read(c, b, 12)) < 0)
			return e;
		off = nbd_get_be64(b);
		hs = get_be32(b + 8);
		if (!hs || off < p->offset || off - p->offset > p->length ||
		    hs > p->length - (off - p->offset) || p->got + hs > p->length)
			return fail(c, -EPROTO, "a hole chunk outside its request");
		memset(p->buf + (off - p->offset), 0, hs);
		p->got += hs;
		return 0;
	}
	case NBD_REPLY_TYPE_BLOCK_STATUS:
		if (p->type != NBD_CMD_BLOCK_STATUS || len < 12 || (len - 4) % 8)
			return fail(c, -EPROTO, "an unexpected block status chunk");
		if ((e = cl_read(c, b, 12)) < 0)
			return e;
		if (get_be32(b) == c->meta_id && !p->have_ext) {
			p->ext_len = get_be32(b + 4);
			p->ext_flags = get_be32(b + 8);
			if (!p->ext_len)
				return fail(c, -EPROTO, "an extent of length 0");
			p->have_ext = 1;
		}
		return cl_skip(c, len - 12);
	}
	if (type & 0x8000) {
		uint16_t mlen;
		if (len < 6)
			return fail(c, -EPROTO, "a malformed error chunk");
		if ((e = cl_read(c, b, 6)) < 0)
			return e;
		mlen = nbd_get_be16(b + 4);
		if (mlen > len - 6)
			return fail(c, -EPROTO, "an error chunk's message overruns it");
		p->err = get_be32(b) ? (int)get_be32(b) : NBD_EIO;
		if (p->err < 0)
			p->err = NBD_EIO;
		return cl_skip(c, len - 6);
	}
	return fail(c, -EPROTO, "a reply chunk of unknown type %u", type);
}

int nbd_client_complete(struct nbd_client *c, int *err)
{
	uint8_t h[NBD_CHUNK_HEADER_SIZE];
	struct pending *p;
	int e;

	if (c->broken)
		return -EPIPE;
	if (!c->inflight)
		return -EAGAIN;
	for (;;) {
		if ((e = cl_read(c, h, 4)) < 0)
			return e;
		if (get_be32(h) == NBD_SIMPLE_REPLY_MAGIC) {
			if ((e = cl_read(c, h + 4, NBD_SIMPLE_REPLY_SIZE - 4)) < 0)
				return e;
			if (!(p = find(c, nbd_get_be64(h + 8))))
				return fail(c, -EPROTO, "a reply to no request of ours");
			p->err = (int)get_be32(h + 4);
			if (p->err < 0)
				p->err = NBD_EIO;
			if (p->type == NBD_CMD_READ && c->structured)
				return fail(c, -EPROTO, "a simple reply to a read");
			if (p->type == NBD_CMD_BLOCK_STATUS && !p->err)
				return fail(c, -EPROTO, "a simple reply to block status");
			if (p->type == NBD_CMD_READ && !p->err) {
				if ((e = cl_read(c, p->buf, p->length)) < 0)
					return e;
				p->got = p->length;
			}
			return finish(c, p, err);
		}
		if (get_be32(h) != NBD_STRUCTURED_REPLY_MAGIC || !c->structured)
			return fail(c, -EPROTO, "a reply with a bad magic number");
		if ((e = cl_read(c, h + 4, NBD_CHUNK_HEADER_SIZE - 4)) < 0)
			return e;
		if (!(p = find(c, nbd_get_be64(h + 8))))
			return fail(c, -EPROTO, "a reply to no request of ours");
		uint16_t flags = nbd_get_be16(h + 4);
		if ((e = read_chunk(c, p, flags, nbd_get_be16(h + 6), get_be32(h + 16))) < 0)
			return e;
		if (flags & NBD_REPLY_FLAG_DONE)
			return finish(c, p, err);
	}
}

static int one(struct nbd_client *c, uint16_t type, uint16_t flags, uint64_t off,
	       uint32_t len, void *buf)
{
	int e, err = 0;
	if ((e = nbd_client_submit(c, type, flags, off, len, NULL, buf)) < 0 ||
	    (e = nbd_client_complete(c, &err)) < 0)
		return e;
	return err;
}

int nbd_client_read(struct nbd_client *c, uint64_t offset, uint32_t length, void *buf)
{
	return one(c, NBD_CMD_READ, 0, offset, length, buf);
}

int nbd_client_flush(struct nbd_client *c)
{
	return one(c, NBD_CMD_FLUSH, 0, 0, 0, NULL);
}

int nbd_client_block_status(struct nbd_client *c, uint64_t offset, uint32_t length,
			    uint32_t *ext_len, uint32_t *ext_flags)
{
	int e = one(c, NBD_CMD_BLOCK_STATUS, 0, offset, length, NULL);
	if (e == 0) {
		*ext_len = c->last.ext_len;
		*ext_flags = c->last.ext_flags;
	}
	return e;
}

/* --- fuzzing ------------------------------------------------------- */

int nbd_client_fuzz_replies(const uint8_t *p, size_t n)
{
	static uint8_t rbuf[2][65536];
	struct nbd_client *c = calloc(1, sizeof(*c));
	int e = 0, err;

	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->mem = p;
	c->mem_len = n;
	c->structured = p && n && (p[0] & 1);
	c->meta = 1;
	c->meta_id = 1;
	c->size = 1 << 20;
	c->next_cookie = 1;
	/* Requests in flight, as a copy would have them. */
	nbd_client_submit(c, NBD_CMD_READ, 0, 0, 65536, NULL, rbuf[0]);
	nbd_client_submit(c, NBD_CMD_BLOCK_STATUS, 0, 0, 1 << 20, NULL, NULL);
	nbd_client_submit(c, NBD_CMD_WRITE, 0, 4096, 0, NULL, NULL);
	nbd_client_submit(c, NBD_CMD_READ, 0, 65536, 512, NULL, rbuf[1]);
	c->mem_off = n ? 1 : 0;
	while (c->inflight && (e = nbd_client_complete(c, &err)) == 0)
		;
	free(c);
	return e;
}
