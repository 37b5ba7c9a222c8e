/*
 * Parameter and result encoding: a sequence of typed values.
 *   u64 / i64: tag, 8 bytes little-endian     bool: tag, 1 byte (0 or 1)
 *   bytes / string: tag, u32 length, bytes    cap: tag, u8 index into caps
 * Readers check the tag and every length against what remains.
 */
#include <errno.h>
#include <string.h>

#include "proto/rpc.h"

enum { T_U64 = 1, T_I64, T_BOOL, T_BYTES, T_STR, T_CAP };

void msg_init(struct msg *m)
{
	buf_init(&m->data);
	m->ncaps = 0;
}

void msg_free(struct msg *m)
{
	buf_wipe(&m->data); /* it may have carried a key, a token or a ref */
	for (size_t i = 0; i < m->ncaps; i++)
		cap_unref(m->caps[i]);
	m->ncaps = 0;
}

static int put_tagged(struct msg *m, uint8_t tag, uint64_t v)
{
	int r = buf_put_u8(&m->data, tag);
	return r < 0 ? r : buf_put_u64(&m->data, v);
}

int msg_put_u64(struct msg *m, uint64_t v) { return put_tagged(m, T_U64, v); }
int msg_put_i64(struct msg *m, int64_t v) { return put_tagged(m, T_I64, (uint64_t)v); }

int msg_put_bool(struct msg *m, int v)
{
	int r = buf_put_u8(&m->data, T_BOOL);
	return r < 0 ? r : buf_put_u8(&m->data, v ? 1 : 0);
}

static int put_blob(struct msg *m, uint8_t tag, const void *p, size_t n)
{
	int r;
	if (n > UINT32_MAX)
		return -EMSGSIZE;
	if ((r = buf_put_u8(&m->data, tag)) < 0 ||
	    (r = buf_put_u32(&m->data, (uint32_t)n)) < 0)
		return r;
	return buf_put(&m->data, p, n);
}

int msg_put_bytes(struct msg *m, const void *p, size_t n)
{
	return put_blob(m, T_BYTES, p, n);
}

int msg_put_str(struct msg *m, const char *s)
{
	return put_blob(m, T_STR, s, strlen(s));
}

int msg_put_cap(struct msg *m, struct cap *c)
{
	int r;
	if (m->ncaps == MSG_MAX_CAPS)
		return -E2BIG;
	if ((r = buf_put_u8(&m->data, T_CAP)) < 0 ||
	    (r = buf_put_u8(&m->data, (uint8_t)m->ncaps)) < 0)
		return r;
	m->caps[m->ncaps++] = cap_ref(c);
	return 0;
}

void msg_rd_init(struct msg_rd *r, const struct msg *m)
{
	rd_init(&r->rd, buf_head(&m->data), buf_avail(&m->data));
	r->m = m;
}

int msg_at_end(const struct msg_rd *r)
{
	return rd_left(&r->rd) == 0;
}

static int expect(struct msg_rd *r, uint8_t tag)
{
	uint8_t t;
	if (rd_left(&r->rd) < 1 || r->rd.p[r->rd.off] != tag)
		return -EBADMSG;
	return rd_u8(&r->rd, &t);
}

int msg_get_u64(struct msg_rd *r, uint64_t *v)
{
	size_t save = r->rd.off;
	int e = expect(r, T_U64);
	if (e == 0 && (e = rd_u64(&r->rd, v)) < 0)
		r->rd.off = save;
	return e;
}

int msg_get_i64(struct msg_rd *r, int64_t *v)
{
	size_t save = r->rd.off;
	uint64_t u;
	int e = expect(r, T_I64);
	if (e == 0 && (e = rd_u64(&r->rd, &u)) < 0)
		r->rd.off = save;
	if (e == 0)
		*v = (int64_t)u;
	return e;
}

int msg_get_bool(struct msg_rd *r, int *v)
{
	size_t save = r->rd.off;
	uint8_t b = 2;
	int e = expect(r, T_BOOL);
	if (e == 0)
		e = rd_u8(&r->rd, &b);
	if (e == 0 && b > 1)
		e = -EBADMSG;
	if (e < 0) {
		r->rd.off = save;
		return e;
	}
	*v = b;
	return 0;
}

static int get_blob(struct msg_rd *r, uint8_t tag, const uint8_t **p, size_t *n)
{
	size_t save = r->rd.off;
	uint32_t len;
	int e = expect(r, tag);
	if (e == 0 && (e = rd_u32(&r->rd, &len)) == 0 &&
	    (e = rd_bytes(&r->rd, p, len)) == 0) {
		*n = len;
		return 0;
	}
	r->rd.off = save;
	return e;
}

int msg_get_bytes(struct msg_rd *r, const uint8_t **p, size_t *n)
{
	return get_blob(r, T_BYTES, p, n);
}

int msg_get_str(struct msg_rd *r, char *out, size_t maxlen)
{
	size_t save = r->rd.off, n = 0;
	const uint8_t *p;
	int e = get_blob(r, T_STR, &p, &n);
	if (e < 0)
		return e;
	if (n >= maxlen || memchr(p, 0, n)) {
		r->rd.off = save;
		return n >= maxlen ? -ENAMETOOLONG : -EBADMSG;
	}
	memcpy(out, p, n);
	out[n] = 0;
	return 0;
}

int msg_get_cap(struct msg_rd *r, struct cap **c)
{
	size_t save = r->rd.off;
	uint8_t i;
	int e = expect(r, T_CAP);
	if (e == 0 && (e = rd_u8(&r->rd, &i)) == 0 && i >= r->m->ncaps)
		e = -EBADMSG;
	if (e < 0) {
		r->rd.off = save;
		return e;
	}
	*c = r->m->caps[i];
	return 0;
}
