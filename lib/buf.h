/*
 * Byte buffers. struct buf is a growable output buffer with a read offset
 * (a FIFO for socket I/O); struct rd is a bounds-checked reader over bytes
 * that came from somewhere untrusted. Every rd_* call checks what remains
 * and fails with -EBADMSG, leaving the reader unchanged, on a short read.
 * Integers on the wire are little-endian unless a function says _be.
 */
#ifndef METAC_BUF_H
#define METAC_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t off; /* first unread byte */
	size_t len; /* end of written bytes */
	size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);          /* wipes nothing; see buf_wipe */
void buf_wipe(struct buf *b);          /* zero the storage, then free */
int buf_reserve(struct buf *b, size_t n); /* room for n more bytes */
static inline size_t buf_avail(const struct buf *b) { return b->len - b->off; }
/* An empty buffer has no storage; its head and tail point here rather
 * than at NULL + 0, which is undefined behaviour. */
extern uint8_t buf_no_data[1];
static inline uint8_t *buf_head(const struct buf *b)
{
	return b->data ? b->data + b->off : buf_no_data;
}
static inline uint8_t *buf_tail(const struct buf *b)
{
	return b->data ? b->data + b->len : buf_no_data;
}
void buf_consume(struct buf *b, size_t n); /* drop n read bytes */
void buf_reset(struct buf *b);
/* Claim n bytes at the tail (after buf_reserve); returns their start. */
uint8_t *buf_extend(struct buf *b, size_t n);

int buf_put(struct buf *b, const void *p, size_t n);
int buf_put_u8(struct buf *b, uint8_t v);
int buf_put_u16(struct buf *b, uint16_t v);
int buf_put_u32(struct buf *b, uint32_t v);
int buf_put_u64(struct buf *b, uint64_t v);
int buf_put_u16_be(struct buf *b, uint16_t v);
int buf_put_u32_be(struct buf *b, uint32_t v);
int buf_put_u64_be(struct buf *b, uint64_t v);

struct rd {
	const uint8_t *p;
	size_t len;
	size_t off;
};

static inline void rd_init(struct rd *r, const void *p, size_t len)
{
	r->p = p ? p : buf_no_data;
	r->len = len;
	r->off = 0;
}
static inline size_t rd_left(const struct rd *r) { return r->len - r->off; }

int rd_u8(struct rd *r, uint8_t *v);
int rd_u16(struct rd *r, uint16_t *v);
int rd_u32(struct rd *r, uint32_t *v);
int rd_u64(struct rd *r, uint64_t *v);
int rd_u16_be(struct rd *r, uint16_t *v);
int rd_u32_be(struct rd *r, uint32_t *v);
int rd_u64_be(struct rd *r, uint64_t *v);
int rd_copy(struct rd *r, void *dst, size_t n);
/* Point *p at the next n bytes without copying. */
int rd_bytes(struct rd *r, const uint8_t **p, size_t n);
int rd_skip(struct rd *r, size_t n);

/* Little-endian helpers for fixed-layout headers. */
static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}
static inline uint32_t get_le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}
static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

#endif
