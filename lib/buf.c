/* Byte buffers and bounds-checked readers; see buf.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "lib/buf.h"

/* No single buffer may grow past this: a bound on what a peer can make us
 * allocate even through a logic error elsewhere. */
#define BUF_MAX ((size_t)1 << 30)

uint8_t buf_no_data[1];

void buf_init(struct buf *b)
{
	memset(b, 0, sizeof(*b));
}

void buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void buf_wipe(struct buf *b)
{
	if (b->data)
		sodium_memzero(b->data, b->cap);
	buf_free(b);
}

void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n > buf_avail(b))
		n = buf_avail(b);
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

int buf_reserve(struct buf *b, size_t n)
{
	if (b->cap - b->len >= n)
		return 0;
	/* Reclaim consumed space before growing. */
	if (b->off) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->cap - b->len >= n)
			return 0;
	}
	if (n > BUF_MAX - b->len)
		return -ENOMEM;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len < n)
		cap *= 2;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

uint8_t *buf_extend(struct buf *b, size_t n)
{
	uint8_t *p = b->data + b->len;
	b->len += n;
	return p;
}

int buf_put(struct buf *b, const void *p, size_t n)
{
	int r = buf_reserve(b, n);
	if (r < 0)
		return r;
	if (n)
		memcpy(buf_extend(b, n), p, n);
	return 0;
}

int buf_put_u8(struct buf *b, uint8_t v)
{
	return buf_put(b, &v, 1);
}

static int put_uint(struct buf *b, uint64_t v, int n, int big)
{
	uint8_t t[8];
	for (int i = 0; i < n; i++) {
		int shift = big ? (n - 1 - i) * 8 : i * 8;
		t[i] = (uint8_t)(v >> shift);
	}
	return buf_put(b, t, n);
}

int buf_put_u16(struct buf *b, uint16_t v) { return put_uint(b, v, 2, 0); }
int buf_put_u32(struct buf *b, uint32_t v) { return put_uint(b, v, 4, 0); }
int buf_put_u64(struct buf *b, uint64_t v) { return put_uint(b, v, 8, 0); }
int buf_put_u16_be(struct buf *b, uint16_t v) { return put_uint(b, v, 2, 1); }
int buf_put_u32_be(struct buf *b, uint32_t v) { return put_uint(b, v, 4, 1); }
int buf_put_u64_be(struct buf *b, uint64_t v) { return put_uint(b, v, 8, 1); }

int rd_bytes(struct rd *r, const uint8_t **p, size_t n)
{
	if (n > rd_left(r))
		return -EBADMSG;
	*p = r->p + r->off;
	r->off += n;
	return 0;
}

int rd_skip(struct rd *r, size_t n)
{
	const uint8_t *p;
	return rd_bytes(r, &p, n);
}

int rd_copy(struct rd *r, void *dst, size_t n)
{
	const uint8_t *p;
	int e = rd_bytes(r, &p, n);
	if (e == 0 && n)
		memcpy(dst, p, n);
	return e;
}

static int rd_uint(struct rd *r, uint64_t *v, int n, int big)
{
	const uint8_t *p;
	int e = rd_bytes(r, &p, n);
	if (e < 0)
		return e;
	uint64_t x = 0;
	for (int i = 0; i < n; i++) {
		int shift = big ? (n - 1 - i) * 8 : i * 8;
		x |= (uint64_t)p[i] << shift;
	}
	*v = x;
	return 0;
}

#define RD_FN(name, type, n, big)                     \
	int name(struct rd *r, type *v)                \
	{                                              \
		uint64_t x;                            \
		int e = rd_uint(r, &x, n, big);        \
		if (e == 0)                            \
			*v = (type)x;                  \
		return e;                              \
	}

RD_FN(rd_u8, uint8_t, 1, 0)
RD_FN(rd_u16, uint16_t, 2, 0)
RD_FN(rd_u32, uint32_t, 4, 0)
RD_FN(rd_u64, uint64_t, 8, 0)
RD_FN(rd_u16_be, uint16_t, 2, 1)
RD_FN(rd_u32_be, uint32_t, 4, 1)
RD_FN(rd_u64_be, uint64_t, 8, 1)
