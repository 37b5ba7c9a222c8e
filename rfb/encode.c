/*
 * RFB encoders: pixels converted to the viewer's format, then Raw, ZRLE
 * (RFC 6143 7.7.6) or Tight (fill, palette, copy and JPEG; the TightVNC
 * extension as RFC 6143's registry and the community spec describe it).
 * Each works on an area of the frame and writes whole rectangles.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "lib/buf.h"
#include "rfb/priv.h"
#include "rfb/rfb.h"

const struct rfb_pf rfb_pf_native = {
	.bpp = 32, .depth = 24, .big_endian = 0, .true_colour = 1,
	.rmax = 255, .gmax = 255, .bmax = 255, .rshift = 16, .gshift = 8, .bshift = 0,
};

/* --- pixel formats ------------------------------------------------- */

void rfb_pf_read(struct rfb_pf *pf, const uint8_t p[16])
{
	pf->bpp = p[0];
	pf->depth = p[1];
	pf->big_endian = p[2] != 0;
	pf->true_colour = p[3] != 0;
	pf->rmax = p[4] << 8 | p[5];
	pf->gmax = p[6] << 8 | p[7];
	pf->bmax = p[8] << 8 | p[9];
	pf->rshift = p[10];
	pf->gshift = p[11];
	pf->bshift = p[12];
}

void rfb_pf_write(const struct rfb_pf *pf, uint8_t p[16])
{
	memset(p, 0, 16);
	p[0] = pf->bpp;
	p[1] = pf->depth;
	p[2] = pf->big_endian;
	p[3] = pf->true_colour;
	p[4] = pf->rmax >> 8;
	p[5] = pf->rmax;
	p[6] = pf->gmax >> 8;
	p[7] = pf->gmax;
	p[8] = pf->bmax >> 8;
	p[9] = pf->bmax;
	p[10] = pf->rshift;
	p[11] = pf->gshift;
	p[12] = pf->bshift;
}

static int channel_fits(uint16_t max, uint8_t shift, int bpp)
{
	return max && shift < 32 && ((uint64_t)max << shift) < ((uint64_t)1 << bpp);
}

/* True colour at 8, 16 or 32 bits per pixel, each channel inside the
 * pixel. (Colour-mapped viewers get true colour's 3-3-2 layout with a
 * matching colour map: see the session.) */
int rfb_pf_check(const struct rfb_pf *pf)
{
	if (pf->bpp != 8 && pf->bpp != 16 && pf->bpp != 32)
		return -EINVAL;
	if (!pf->true_colour)
		return 0;
	if (!channel_fits(pf->rmax, pf->rshift, pf->bpp) ||
	    !channel_fits(pf->gmax, pf->gshift, pf->bpp) ||
	    !channel_fits(pf->bmax, pf->bshift, pf->bpp))
		return -EINVAL;
	return 0;
}

static inline uint32_t cvt(const struct rfb_enc *e, uint32_t p)
{
	return e->rtab[p >> 16 & 255] | e->gtab[p >> 8 & 255] | e->btab[p & 255];
}

static inline uint8_t *put_px(int bpp, int be, uint8_t *o, uint32_t v)
{
	switch (bpp) {
	case 8:
		*o = v;
		return o + 1;
	case 16:
		if (be) {
			o[0] = v >> 8;
			o[1] = v;
		} else {
			o[0] = v;
			o[1] = v >> 8;
		}
		return o + 2;
	default:
		if (be)
			put_be32(o, v);
		else
			put_le32(o, v);
		return o + 4;
	}
}

void rfb_enc_set_pf(struct rfb_enc *e, const struct rfb_pf *pf)
{
	int i;

	e->pf = *pf;
	e->native = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && pf->bpp == 32 &&
		    !pf->big_endian && pf->true_colour && pf->rmax == 255 && pf->gmax == 255 &&
		    pf->bmax == 255 && pf->rshift == 16 && pf->gshift == 8 && pf->bshift == 0;
	for (i = 0; i < 256; i++) {
		e->rtab[i] = (uint32_t)((i * pf->rmax + 127) / 255) << pf->rshift;
		e->gtab[i] = (uint32_t)((i * pf->gmax + 127) / 255) << pf->gshift;
		e->btab[i] = (uint32_t)((i * pf->bmax + 127) / 255) << pf->bshift;
	}
}

void rfb_enc_init(struct rfb_enc *e)
{
	memset(e, 0, sizeof(*e));
	e->zlevel = 1;
	rfb_enc_set_pf(e, &rfb_pf_native);
}

void rfb_enc_free(struct rfb_enc *e)
{
	int i;

	if (e->zrle_on)
		deflateEnd(&e->zrle);
	for (i = 0; i < 4; i++)
		if (e->tight_on & 1u << i)
			deflateEnd(&e->tight[i]);
	free(e->tmp);
	e->tmp = NULL;
	e->tmp_cap = 0;
	buf_free(&e->zout);
	e->zrle_on = e->tight_on = 0;
}

static uint8_t *scratch(struct rfb_enc *e, size_t n)
{
	uint8_t *p;

	if (n <= e->tmp_cap)
		return e->tmp;
	if (!(p = realloc(e->tmp, n)))
		return NULL;
	e->tmp = p;
	e->tmp_cap = n;
	return p;
}

int rfb_rect_header(struct buf *out, int x, int y, int w, int h, int32_t enc)
{
	uint8_t *p;

	if (buf_reserve(out, 12) < 0)
		return -ENOMEM;
	p = buf_extend(out, 12);
	p[0] = x >> 8;
	p[1] = x;
	p[2] = y >> 8;
	p[3] = y;
	p[4] = w >> 8;
	p[5] = w;
	p[6] = h >> 8;
	p[7] = h;
	put_be32(p + 8, (uint32_t)enc);
	return 0;
}

int rfb_enc_copyrect(struct buf *out, int x, int y, int w, int h, int sx, int sy)
{
	if (rfb_rect_header(out, x, y, w, h, RFB_ENC_COPYRECT) < 0 || buf_put_u16_be(out, sx) < 0 ||
	    buf_put_u16_be(out, sy) < 0)
		return -ENOMEM;
	return 1;
}

/* The area's pixels in the viewer's format, row after row. */
static uint8_t *put_area(const struct rfb_enc *e, uint8_t *o, const struct rfb_frame *f, int x,
			 int y, int w, int h)
{
	int row, i;

	for (row = 0; row < h; row++) {
		const uint32_t *src = f->px + (size_t)(y + row) * f->stride + x;
		if (e->native) {
			memcpy(o, src, (size_t)w * 4);
			o += (size_t)w * 4;
			continue;
		}
		for (i = 0; i < w; i++)
			o = put_px(e->pf.bpp, e->pf.big_endian, o, cvt(e, src[i]));
	}
	return o;
}

int rfb_enc_raw(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		struct buf *out)
{
	size_t n = (size_t)w * h * (e->pf.bpp / 8);

	if (rfb_rect_header(out, x, y, w, h, RFB_ENC_RAW) < 0 || buf_reserve(out, n) < 0)
		return -ENOMEM;
	put_area(e, buf_extend(out, n), f, x, y, w, h);
	return 1;
}

/* Compresses n bytes of in through zs onto out (a sync flush at the
 * end, so the viewer can decode this much now); returns the number of
 * bytes written, or -errno. */
static long deflate_onto(z_stream *zs, const uint8_t *in, size_t n, struct buf *out)
{
	size_t before = out->len;
	int r;

	zs->next_in = (uint8_t *)in;
	zs->avail_in = n;
	do {
		size_t room = deflateBound(zs, zs->avail_in) + 64;
		if (buf_reserve(out, room) < 0)
			return -ENOMEM;
		zs->next_out = buf_tail(out);
		zs->avail_out = room;
		r = deflate(zs, Z_SYNC_FLUSH);
		if (r != Z_OK && r != Z_BUF_ERROR)
			return -EIO;
		out->len += room - zs->avail_out;
	} while (zs->avail_in || zs->avail_out == 0);
	return (long)(out->len - before);
}

static int stream_on(z_stream *zs, int level)
{
	memset(zs, 0, sizeof(*zs));
	return deflateInit(zs, level) == Z_OK ? 0 : -ENOMEM;
}

/* --- ZRLE ---------------------------------------------------------- */

/* ZRLE's CPIXEL: a pixel, or 3 of its bytes when a 32-bit true colour
 * pixel's colour lies in its low or high 3 bytes. */
static void cpixel_shape(const struct rfb_pf *pf, int *size, int *skip)
{
	uint32_t mask;

	*size = pf->bpp / 8;
	*skip = 0;
	if (!pf->true_colour || pf->bpp != 32 || pf->depth > 24)
		return;
	mask = (uint32_t)pf->rmax << pf->rshift | (uint32_t)pf->gmax << pf->gshift |
	       (uint32_t)pf->bmax << pf->bshift;
	if (mask < 1u << 24) {
		*size = 3;
		*skip = pf->big_endian; /* the low bytes: first in little-endian */
	} else if (!(mask & 0xff)) {
		*size = 3;
		*skip = !pf->big_endian;
	}
}

struct zctx {
	const struct rfb_enc *e;
	int cpx, skip;
	uint8_t *o;
};

static inline void put_cpx(struct zctx *z, uint32_t v)
{
	uint8_t b[4];

	put_px(z->e->pf.bpp, z->e->pf.big_endian, b, v);
	memcpy(z->o, b + z->skip, z->cpx);
	z->o += z->cpx;
}

static inline void put_runlen(struct zctx *z, unsigned len)
{
	for (len--; len >= 255; len -= 255)
		*z->o++ = 255;
	*z->o++ = len;
}

#define PAL_SLOTS 512

/* A small palette: colour -> index, up to max colours. */
struct palette {
	uint32_t key[PAL_SLOTS];
	int16_t idx[PAL_SLOTS];
	uint32_t colour[256];
	int n;
};

static void pal_reset(struct palette *p)
{
	memset(p->idx, 0xff, sizeof(p->idx));
	p->n = 0;
}

static inline int pal_slot(const struct palette *p, uint32_t c)
{
	unsigned h = (c * 2654435761u) >> 23; /* 9 bits */
	while (p->idx[h] >= 0 && p->key[h] != c)
		h = (h + 1) & (PAL_SLOTS - 1);
	return h;
}

/* The colour's index, adding it; -1 once the palette holds max. */
static inline int pal_add(struct palette *p, uint32_t c, int max)
{
	int h = pal_slot(p, c);
	if (p->idx[h] >= 0)
		return p->idx[h];
	if (p->n >= max)
		return -1;
	p->key[h] = c;
	p->idx[h] = p->n;
	p->colour[p->n] = c;
	return p->n++;
}

static inline int pal_find(const struct palette *p, uint32_t c)
{
	return p->idx[pal_slot(p, c)];
}

static unsigned runlen_bytes(unsigned len)
{
	return 1 + (len - 1) / 255;
}

static void zrle_tile(struct zctx *z, const uint32_t *v, int w, int h, struct palette *pal)
{
	int n = w * h, i, j, ncol, bits, row;
	size_t raw, plain = 1, prle = 1, packed = SIZE_MAX;
	int full = 0;

	pal_reset(pal);
	for (i = 0; i < n; i++)
		if (pal_add(pal, v[i], 127) < 0) {
			full = 1;
			break;
		}
	ncol = pal->n;
	if (!full && ncol == 1) {
		*z->o++ = 1;
		put_cpx(z, v[0]);
		return;
	}
	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && v[j] == v[i]; j++)
			;
		plain += z->cpx + runlen_bytes(j - i);
		prle += j - i == 1 ? 1 : 1 + runlen_bytes(j - i);
	}
	raw = 1 + (size_t)n * z->cpx;
	bits = ncol <= 2 ? 1 : ncol <= 4 ? 2 : 4;
	if (!full) {
		prle += (size_t)ncol * z->cpx;
		if (ncol <= 16)
			packed = 1 + (size_t)ncol * z->cpx + (size_t)h * ((w * bits + 7) / 8);
	} else {
		prle = SIZE_MAX;
	}
	if (packed <= prle && packed <= plain && packed <= raw) {
		*z->o++ = ncol;
		for (i = 0; i < ncol; i++)
			put_cpx(z, pal->colour[i]);
		for (row = 0; row < h; row++) {
			unsigned acc = 0, nb = 0;
			for (i = 0; i < w; i++) {
				acc = acc << bits | pal_find(pal, v[row * w + i]);
				if ((nb += bits) == 8) {
					*z->o++ = acc;
					acc = nb = 0;
				}
			}
			if (nb)
				*z->o++ = acc << (8 - nb);
		}
	} else if (prle <= plain && prle <= raw) {
		*z->o++ = 128 + ncol;
		for (i = 0; i < ncol; i++)
			put_cpx(z, pal->colour[i]);
		for (i = 0; i < n; i = j) {
			for (j = i + 1; j < n && v[j] == v[i]; j++)
				;
			if (j - i == 1) {
				*z->o++ = pal_find(pal, v[i]);
			} else {
				*z->o++ = 128 | pal_find(pal, v[i]);
				put_runlen(z, j - i);
			}
		}
	} else if (plain < raw) {
		*z->o++ = 128;
		for (i = 0; i < n; i = j) {
			for (j = i + 1; j < n && v[j] == v[i]; j++)
				;
			put_cpx(z, v[i]);
			put_runlen(z, j - i);
		}
	} else {
		*z->o++ = 0;
		for (i = 0; i < n; i++)
			put_cpx(z, v[i]);
	}
}

int rfb_enc_zrle(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		 struct buf *out)
{
	uint32_t v[RFB_TILE_PIXELS];
	struct palette *pal;
	struct zctx z = { .e = e };
	size_t lenpos, worst;
	long n;
	int tx, ty, tw, th, i, j;
	uint8_t *start;

	cpixel_shape(&e->pf, &z.cpx, &z.skip);
	/* Worst case per tile: raw, plus the subencoding byte. */
	worst = ((size_t)w * h * z.cpx) + ((size_t)(w / 64 + 1) * (h / 64 + 1)) * (1 + 4);
	if (!(start = scratch(e, worst)) || !(pal = malloc(sizeof(*pal))))
		return -ENOMEM;
	z.o = start;
	for (ty = y; ty < y + h; ty += 64) {
		th = y + h - ty < 64 ? y + h - ty : 64;
		for (tx = x; tx < x + w; tx += 64) {
			tw = x + w - tx < 64 ? x + w - tx : 64;
			for (j = 0; j < th; j++) {
				const uint32_t *src = f->px + (size_t)(ty + j) * f->stride + tx;
				for (i = 0; i < tw; i++)
					v[j * tw + i] = cvt(e, src[i]);
			}
			zrle_tile(&z, v, tw, th, pal);
		}
	}
	free(pal);
	if (!e->zrle_on) {
		if (stream_on(&e->zrle, e->zlevel) < 0)
			return -ENOMEM;
		e->zrle_on = 1;
	}
	if (rfb_rect_header(out, x, y, w, h, RFB_ENC_ZRLE) < 0 || buf_put_u32_be(out, 0) < 0)
		return -ENOMEM;
	lenpos = out->len - 4;
	if ((n = deflate_onto(&e->zrle, start, z.o - start, out)) < 0)
		return (int)n;
	put_be32(out->data + lenpos, (uint32_t)n);
	return 1;
}

/* --- Tight --------------------------------------------------------- */

#define TIGHT_MAX_WIDTH 2048
#define TIGHT_MAX_PIXELS 65536
#define TIGHT_MIN_TO_COMPRESS 12
#define TIGHT_FILL 0x80
#define TIGHT_JPEG 0x90
#define TIGHT_EXPLICIT_FILTER 0x40
#define TIGHT_FILTER_PALETTE 1
/* Streams, as TightVNC assigns them. */
#define TIGHT_STREAM_FULL 0
#define TIGHT_STREAM_MONO 1
#define TIGHT_STREAM_INDEXED 2

/* Tight's TPIXEL: R, G, B bytes for 32-bit true colour of depth 24 with
 * 8-bit channels, else the pixel as is. */
static int tpixel_rgb(const struct rfb_pf *pf)
{
	return pf->true_colour && pf->bpp == 32 && pf->depth == 24 && pf->rmax == 255 &&
	       pf->gmax == 255 && pf->bmax == 255;
}

static inline uint8_t *put_tpx(const struct rfb_enc *e, int rgb, uint8_t *o, uint32_t p)
{
	if (rgb) {
		o[0] = p >> 16;
		o[1] = p >> 8;
		o[2] = p;
		return o + 3;
	}
	return put_px(e->pf.bpp, e->pf.big_endian, o, cvt(e, p));
}

static int put_compact_len(struct buf *out, size_t n)
{
	uint8_t b[3];
	int k = 1;

	if (n >= 1u << 22)
		return -E2BIG;
	b[0] = n & 0x7f;
	if (n > 0x7f) {
		b[0] |= 0x80;
		b[1] = n >> 7 & 0x7f;
		k = 2;
		if (n > 0x3fff) {
			b[1] |= 0x80;
			b[2] = n >> 14;
			k = 3;
		}
	}
	return buf_put(out, b, k);
}

/* Basic compression's data: raw when short, else compressed on stream. */
static int tight_data(struct rfb_enc *e, int stream, const uint8_t *p, size_t n,
		      struct buf *out)
{
	long c;

	if (n < TIGHT_MIN_TO_COMPRESS)
		return buf_put(out, p, n);
	if (!(e->tight_on & 1u << stream)) {
		if (stream_on(&e->tight[stream], e->zlevel) < 0)
			return -ENOMEM;
		e->tight_on |= 1u << stream;
	}
	buf_reset(&e->zout);
	if ((c = deflate_onto(&e->tight[stream], p, n, &e->zout)) < 0)
		return (int)c;
	return put_compact_len(out, (size_t)c) < 0 || buf_put(out, buf_head(&e->zout), c) < 0
		       ? -ENOMEM : 0;
}

struct jpeg_fail {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
};

static void jpeg_fail_exit(j_common_ptr cinfo)
{
	longjmp(((struct jpeg_fail *)(void *)cinfo->err)->jb, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level)
{
}

/* The area as a JPEG (libjpeg-turbo reads 0x00RRGGBB rows as BGRX). */
static int tight_jpeg(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		      struct buf *out)
{
	struct jpeg_compress_struct ci;
	struct jpeg_fail jf;
	unsigned char *mem = NULL;
	unsigned long memlen = 0;
	JSAMPROW row;
	int r = -EIO, j;

	ci.err = jpeg_std_error(&jf.pub);
	jf.pub.error_exit = jpeg_fail_exit;
	jf.pub.emit_message = jpeg_quiet;
	if (setjmp(jf.jb)) {
		jpeg_destroy_compress(&ci);
		free(mem);
		return -EIO;
	}
	jpeg_create_compress(&ci);
	jpeg_mem_dest(&ci, &mem, &memlen);
	ci.image_width = w;
	ci.image_height = h;
	ci.input_components = 4;
	ci.in_color_space = JCS_EXT_BGRX;
	jpeg_set_defaults(&ci);
	jpeg_set_quality(&ci, e->jpeg_quality, TRUE);
	/* Luma's sampling factors against chroma's 1x1. */
	ci.comp_info[0].h_samp_factor = e->jpeg_subsamp ? 2 : 1;
	ci.comp_info[0].v_samp_factor = e->jpeg_subsamp == 2 ? 2 : 1;
	ci.dct_method = JDCT_ISLOW;
	jpeg_start_compress(&ci, TRUE);
	for (j = 0; j < h; j++) {
		row = (JSAMPROW)(f->px + (size_t)(y + j) * f->stride + x);
		jpeg_write_scanlines(&ci, &row, 1);
	}
	jpeg_finish_compress(&ci);
	jpeg_destroy_compress(&ci);
	if (rfb_rect_header(out, x, y, w, h, RFB_ENC_TIGHT) == 0 && buf_put_u8(out, TIGHT_JPEG) == 0 &&
	    put_compact_len(out, memlen) == 0 && buf_put(out, mem, memlen) == 0)
		r = 0;
	free(mem);
	return r;
}

/* One piece of at most TIGHT_MAX_PIXELS pixels and TIGHT_MAX_WIDTH wide. */
static int tight_piece(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		       struct palette *pal, struct buf *out)
{
	int rgb = tpixel_rgb(&e->pf), tpx = rgb ? 3 : e->pf.bpp / 8;
	int i, j, full = 0, ncol;
	uint8_t *o, *start;
	size_t n;

	pal_reset(pal);
	for (j = 0; j < h && !full; j++) {
		const uint32_t *src = f->px + (size_t)(y + j) * f->stride + x;
		for (i = 0; i < w; i++)
			if (pal_add(pal, src[i], 256) < 0) {
				full = 1;
				break;
			}
	}
	ncol = pal->n;
	if (!full && ncol == 1) {
		uint8_t px[4];
		if (rfb_rect_header(out, x, y, w, h, RFB_ENC_TIGHT) < 0 ||
		    buf_put_u8(out, TIGHT_FILL) < 0)
			return -ENOMEM;
		o = put_tpx(e, rgb, px, pal->colour[0]);
		return buf_put(out, px, o - px) < 0 ? -ENOMEM : 1;
	}
	if (full && e->jpeg_quality && e->pf.true_colour && e->pf.bpp >= 16)
		return tight_jpeg(e, f, x, y, w, h, out) < 0 ? -EIO : 1;
	if (rfb_rect_header(out, x, y, w, h, RFB_ENC_TIGHT) < 0)
		return -ENOMEM;
	if (full) { /* the copy filter: pixels as they are */
		n = (size_t)w * h * tpx;
		if (!(start = scratch(e, n)) || buf_put_u8(out, TIGHT_STREAM_FULL << 4) < 0)
			return -ENOMEM;
		o = start;
		for (j = 0; j < h; j++) {
			const uint32_t *src = f->px + (size_t)(y + j) * f->stride + x;
			for (i = 0; i < w; i++)
				o = put_tpx(e, rgb, o, src[i]);
		}
		return tight_data(e, TIGHT_STREAM_FULL, start, n, out) < 0 ? -ENOMEM : 1;
	}
	/* The palette filter: two colours as a bitmap, more as bytes. */
	{
		int stream = ncol == 2 ? TIGHT_STREAM_MONO : TIGHT_STREAM_INDEXED;
		uint8_t hdr[2 + 256 * 4], *h2 = hdr;
		*h2++ = (stream << 4) | TIGHT_EXPLICIT_FILTER;
		*h2++ = TIGHT_FILTER_PALETTE;
		if (buf_put(out, hdr, 2) < 0 || buf_put_u8(out, ncol - 1) < 0)
			return -ENOMEM;
		h2 = hdr;
		for (i = 0; i < ncol; i++)
			h2 = put_tpx(e, rgb, h2, pal->colour[i]);
		if (buf_put(out, hdr, h2 - hdr) < 0)
			return -ENOMEM;
		n = ncol == 2 ? (size_t)((w + 7) / 8) * h : (size_t)w * h;
		if (!(start = scratch(e, n)))
			return -ENOMEM;
		o = start;
		for (j = 0; j < h; j++) {
			const uint32_t *src = f->px + (size_t)(y + j) * f->stride + x;
			if (ncol > 2) {
				for (i = 0; i < w; i++)
					*o++ = pal_find(pal, src[i]);
				continue;
			}
			unsigned acc = 0, nb = 0;
			for (i = 0; i < w; i++) {
				acc = acc << 1 | pal_find(pal, src[i]);
				if (++nb == 8) {
					*o++ = acc;
					acc = nb = 0;
				}
			}
			if (nb)
				*o++ = acc << (8 - nb);
		}
		return tight_data(e, stream, start, n, out) < 0 ? -ENOMEM : 1;
	}
}

int rfb_enc_tight(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		  struct buf *out)
{
	struct palette *pal = malloc(sizeof(*pal));
	int maxw, px, py, pw, ph, rects = 0, r = 0;

	if (!pal)
		return -ENOMEM;
	for (py = y; py < y + h && r >= 0; py += ph) {
		ph = y + h - py < RFB_TILE ? y + h - py : RFB_TILE;
		maxw = TIGHT_MAX_PIXELS / ph;
		if (maxw > TIGHT_MAX_WIDTH)
			maxw = TIGHT_MAX_WIDTH;
		for (px = x; px < x + w; px += pw) {
			pw = x + w - px < maxw ? x + w - px : maxw;
			if ((r = tight_piece(e, f, px, py, pw, ph, pal, out)) < 0)
				break;
			rects += r;
		}
	}
	free(pal);
	return r < 0 ? r : rects;
}
