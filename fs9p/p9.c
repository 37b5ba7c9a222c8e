/* 9P2000.L encoding and decoding (see p9.h). */
#include <errno.h>
#include <string.h>

#include "fs9p/p9.h"

void p9_begin(struct p9_wr *w, struct buf *b, uint8_t type, uint16_t tag)
{
	w->b = b;
	w->start = b->len;
	w->err = 0;
	p9_u32(w, 0); /* size, written by p9_end */
	p9_u8(w, type);
	p9_u16(w, tag);
}

static void wr_check(struct p9_wr *w, int r)
{
	if (r < 0 && !w->err)
		w->err = r;
}

void p9_u8(struct p9_wr *w, uint8_t v) { wr_check(w, buf_put_u8(w->b, v)); }
void p9_u16(struct p9_wr *w, uint16_t v) { wr_check(w, buf_put_u16(w->b, v)); }
void p9_u32(struct p9_wr *w, uint32_t v) { wr_check(w, buf_put_u32(w->b, v)); }
void p9_u64(struct p9_wr *w, uint64_t v) { wr_check(w, buf_put_u64(w->b, v)); }

void p9_str(struct p9_wr *w, const char *s, size_t len)
{
	if (len > 0xffff) {
		wr_check(w, -ENAMETOOLONG);
		return;
	}
	p9_u16(w, (uint16_t)len);
	p9_data(w, s, len);
}

void p9_cstr(struct p9_wr *w, const char *s)
{
	p9_str(w, s, strlen(s));
}

void p9_qid(struct p9_wr *w, const struct p9_qid *q)
{
	p9_u8(w, q->type);
	p9_u32(w, q->version);
	p9_u64(w, q->path);
}

void p9_data(struct p9_wr *w, const void *p, size_t n)
{
	wr_check(w, buf_put(w->b, p, n));
}

uint8_t *p9_reserve(struct p9_wr *w, size_t n)
{
	int r = buf_reserve(w->b, n);
	if (r < 0) {
		wr_check(w, r);
		return NULL;
	}
	return buf_extend(w->b, n);
}

void p9_attr(struct p9_wr *w, const struct p9_attr *a)
{
	p9_u32(w, a->mode);
	p9_u32(w, a->uid);
	p9_u32(w, a->gid);
	p9_u64(w, a->nlink);
	p9_u64(w, a->rdev);
	p9_u64(w, a->size);
	p9_u64(w, a->blksize);
	p9_u64(w, a->blocks);
	p9_u64(w, a->atime_sec);
	p9_u64(w, a->atime_nsec);
	p9_u64(w, a->mtime_sec);
	p9_u64(w, a->mtime_nsec);
	p9_u64(w, a->ctime_sec);
	p9_u64(w, a->ctime_nsec);
	p9_u64(w, a->btime_sec);
	p9_u64(w, a->btime_nsec);
	p9_u64(w, a->gen);
	p9_u64(w, a->data_version);
}

void p9_statfs(struct p9_wr *w, const struct p9_statfs *s)
{
	p9_u32(w, s->type);
	p9_u32(w, s->bsize);
	p9_u64(w, s->blocks);
	p9_u64(w, s->bfree);
	p9_u64(w, s->bavail);
	p9_u64(w, s->files);
	p9_u64(w, s->ffree);
	p9_u64(w, s->fsid);
	p9_u32(w, s->namelen);
}

int p9_end(struct p9_wr *w, uint32_t max)
{
	size_t n = w->b->len - w->start;
	if (!w->err && n > max)
		w->err = -EMSGSIZE;
	if (w->err) {
		p9_cancel(w);
		return w->err;
	}
	put_le32(w->b->data + w->start, (uint32_t)n);
	return 0;
}

void p9_cancel(struct p9_wr *w)
{
	if (w->b->len > w->start)
		w->b->len = w->start;
}

int p9_put_lerror(struct buf *b, uint16_t tag, int err)
{
	struct p9_wr w;
	p9_begin(&w, b, P9_RLERROR, tag);
	p9_u32(&w, (uint32_t)(err < 0 ? -err : err));
	return p9_end(&w, UINT32_MAX);
}

int p9_get_hdr(struct rd *r, uint32_t *size, uint8_t *type, uint16_t *tag)
{
	size_t off = r->off;
	if (rd_u32(r, size) < 0 || rd_u8(r, type) < 0 || rd_u16(r, tag) < 0) {
		r->off = off;
		return -EBADMSG;
	}
	return 0;
}

int p9_get_str(struct rd *r, const char **s, uint16_t *len)
{
	size_t off = r->off;
	const uint8_t *p;
	if (rd_u16(r, len) < 0 || rd_bytes(r, &p, *len) < 0) {
		r->off = off;
		return -EBADMSG;
	}
	*s = (const char *)p;
	return 0;
}

int p9_get_cstr(struct rd *r, char *out, size_t outsz)
{
	size_t off = r->off;
	const char *s;
	uint16_t n;

	if (p9_get_str(r, &s, &n) < 0)
		return -EBADMSG;
	if (memchr(s, 0, n)) {
		r->off = off;
		return -EBADMSG;
	}
	if ((size_t)n + 1 > outsz) {
		r->off = off;
		return -ENAMETOOLONG;
	}
	memcpy(out, s, n);
	out[n] = 0;
	return 0;
}

int p9_get_qid(struct rd *r, struct p9_qid *q)
{
	size_t off = r->off;
	if (rd_u8(r, &q->type) < 0 || rd_u32(r, &q->version) < 0 ||
	    rd_u64(r, &q->path) < 0) {
		r->off = off;
		return -EBADMSG;
	}
	return 0;
}

int p9_get_attr(struct rd *r, struct p9_attr *a)
{
	size_t off = r->off;
	uint64_t *u64[] = {
		&a->nlink, &a->rdev, &a->size, &a->blksize, &a->blocks,
		&a->atime_sec, &a->atime_nsec, &a->mtime_sec, &a->mtime_nsec,
		&a->ctime_sec, &a->ctime_nsec, &a->btime_sec, &a->btime_nsec,
		&a->gen, &a->data_version,
	};
	if (rd_u32(r, &a->mode) < 0 || rd_u32(r, &a->uid) < 0 || rd_u32(r, &a->gid) < 0)
		goto bad;
	for (size_t i = 0; i < sizeof(u64) / sizeof(u64[0]); i++)
		if (rd_u64(r, u64[i]) < 0)
			goto bad;
	return 0;
bad:
	r->off = off;
	return -EBADMSG;
}

int p9_get_setattr(struct rd *r, struct p9_setattr *s)
{
	size_t off = r->off;
	if (rd_u32(r, &s->valid) < 0 || rd_u32(r, &s->mode) < 0 ||
	    rd_u32(r, &s->uid) < 0 || rd_u32(r, &s->gid) < 0 ||
	    rd_u64(r, &s->size) < 0 || rd_u64(r, &s->atime_sec) < 0 ||
	    rd_u64(r, &s->atime_nsec) < 0 || rd_u64(r, &s->mtime_sec) < 0 ||
	    rd_u64(r, &s->mtime_nsec) < 0) {
		r->off = off;
		return -EBADMSG;
	}
	return 0;
}

int p9_get_statfs(struct rd *r, struct p9_statfs *s)
{
	size_t off = r->off;
	if (rd_u32(r, &s->type) < 0 || rd_u32(r, &s->bsize) < 0 ||
	    rd_u64(r, &s->blocks) < 0 || rd_u64(r, &s->bfree) < 0 ||
	    rd_u64(r, &s->bavail) < 0 || rd_u64(r, &s->files) < 0 ||
	    rd_u64(r, &s->ffree) < 0 || rd_u64(r, &s->fsid) < 0 ||
	    rd_u32(r, &s->namelen) < 0) {
		r->off = off;
		return -EBADMSG;
	}
	return 0;
}

const char *p9_type_name(uint8_t type)
{
	static const char *const names[] = {
		[P9_TLERROR] = "Tlerror", [P9_RLERROR] = "Rlerror",
		[P9_TSTATFS] = "Tstatfs", [P9_RSTATFS] = "Rstatfs",
		[P9_TLOPEN] = "Tlopen", [P9_RLOPEN] = "Rlopen",
		[P9_TLCREATE] = "Tlcreate", [P9_RLCREATE] = "Rlcreate",
		[P9_TSYMLINK] = "Tsymlink", [P9_RSYMLINK] = "Rsymlink",
		[P9_TMKNOD] = "Tmknod", [P9_RMKNOD] = "Rmknod",
		[P9_TRENAME] = "Trename", [P9_RRENAME] = "Rrename",
		[P9_TREADLINK] = "Treadlink", [P9_RREADLINK] = "Rreadlink",
		[P9_TGETATTR] = "Tgetattr", [P9_RGETATTR] = "Rgetattr",
		[P9_TSETATTR] = "Tsetattr", [P9_RSETATTR] = "Rsetattr",
		[P9_TXATTRWALK] = "Txattrwalk", [P9_RXATTRWALK] = "Rxattrwalk",
		[P9_TXATTRCREATE] = "Txattrcreate", [P9_RXATTRCREATE] = "Rxattrcreate",
		[P9_TREADDIR] = "Treaddir", [P9_RREADDIR] = "Rreaddir",
		[P9_TFSYNC] = "Tfsync", [P9_RFSYNC] = "Rfsync",
		[P9_TLOCK] = "Tlock", [P9_RLOCK] = "Rlock",
		[P9_TGETLOCK] = "Tgetlock", [P9_RGETLOCK] = "Rgetlock",
		[P9_TLINK] = "Tlink", [P9_RLINK] = "Rlink",
		[P9_TMKDIR] = "Tmkdir", [P9_RMKDIR] = "Rmkdir",
		[P9_TRENAMEAT] = "Trenameat", [P9_RRENAMEAT] = "Rrenameat",
		[P9_TUNLINKAT] = "Tunlinkat", [P9_RUNLINKAT] = "Runlinkat",
		[P9_TVERSION] = "Tversion", [P9_RVERSION] = "Rversion",
		[P9_TAUTH] = "Tauth", [P9_RAUTH] = "Rauth",
		[P9_TATTACH] = "Tattach", [P9_RATTACH] = "Rattach",
		[P9_TERROR] = "Terror", [P9_RERROR] = "Rerror",
		[P9_TFLUSH] = "Tflush", [P9_RFLUSH] = "Rflush",
		[P9_TWALK] = "Twalk", [P9_RWALK] = "Rwalk",
		[P9_TOPEN] = "Topen", [P9_ROPEN] = "Ropen",
		[P9_TCREATE] = "Tcreate", [P9_RCREATE] = "Rcreate",
		[P9_TREAD] = "Tread", [P9_RREAD] = "Rread",
		[P9_TWRITE] = "Twrite", [P9_RWRITE] = "Rwrite",
		[P9_TCLUNK] = "Tclunk", [P9_RCLUNK] = "Rclunk",
		[P9_TREMOVE] = "Tremove", [P9_RREMOVE] = "Rremove",
		[P9_TSTAT] = "Tstat", [P9_RSTAT] = "Rstat",
		[P9_TWSTAT] = "Twstat", [P9_RWSTAT] = "Rwstat",
	};
	if (type < sizeof(names) / sizeof(names[0]) && names[type])
		return names[type];
	return "?";
}
