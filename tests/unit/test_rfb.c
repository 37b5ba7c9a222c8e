/*
 * The RFB server (rfb/server.c, rfb/encode.c; RFC 6143) through its
 * thread-free session, against a viewer written here that decodes all it
 * is sent: the handshakes of 3.3, 3.7 and 3.8 and their failures,
 * ServerInit, every client message (pixel formats, encodings, requests,
 * keys, pointer, cut text) and hostile input (unknown types, oversized
 * lengths, bytes one at a time, early input). Every update is decoded
 * (Raw, CopyRect, ZRLE, Tight fill/palette/copy/JPEG, DesktopSize,
 * SetColourMapEntries) into the viewer's framebuffer and compared with the
 * frame published, pixel for pixel (JPEG by PSNR). Then rfb_serve and
 * rfb_refuse over a socketpair.
 *
 * Everything a test allocates hangs off the fixture fx, so that a test
 * that fails half-way leaks nothing LeakSanitizer could see; fx_reset()
 * frees it at the start and the end of each test.
 */
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jpeglib.h>
#include <zlib.h>

#include "lib/buf.h"
#include "rfb/priv.h"
#include "rfb/rfb.h"
#include "tests/unit/unit.h"

/* A pixel no update has written. */
#define SENTINEL 0xdeadbeefu

/* A helper's CHECK: says where and why, and makes the helper return -1. */
#define NEED(c)                                                                                    \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			UNIT_FAIL("check failed: %s", #c);                                         \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

/* --- pixel formats a viewer may ask for ------------------------------- */

/* clang-format off */
static const struct rfb_pf pf_native = {
	.bpp = 32, .depth = 24, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
	.rshift = 16, .gshift = 8, .bshift = 0,
};
static const struct rfb_pf pf_32be = {
	.bpp = 32, .depth = 24, .big_endian = 1, .true_colour = 1, .rmax = 255, .gmax = 255,
	.bmax = 255, .rshift = 16, .gshift = 8, .bshift = 0,
};
static const struct rfb_pf pf_32bgr = {
	.bpp = 32, .depth = 24, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
	.rshift = 0, .gshift = 8, .bshift = 16,
};
/* Colour in the most significant 3 bytes: ZRLE's CPIXEL is those. */
static const struct rfb_pf pf_32high = {
	.bpp = 32, .depth = 24, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
	.rshift = 24, .gshift = 16, .bshift = 8,
};
static const struct rfb_pf pf_32high_be = {
	.bpp = 32, .depth = 24, .big_endian = 1, .true_colour = 1, .rmax = 255, .gmax = 255,
	.bmax = 255, .rshift = 24, .gshift = 16, .bshift = 8,
};
/* Depth 32: neither CPIXEL nor TPIXEL may drop a byte. */
static const struct rfb_pf pf_32d32 = {
	.bpp = 32, .depth = 32, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
	.rshift = 16, .gshift = 8, .bshift = 0,
};
/* 10 bits a channel. */
static const struct rfb_pf pf_30bit_be = {
	.bpp = 32, .depth = 30, .big_endian = 1, .true_colour = 1, .rmax = 1023, .gmax = 1023,
	.bmax = 1023, .rshift = 20, .gshift = 10, .bshift = 0,
};
static const struct rfb_pf pf_565le = {
	.bpp = 16, .depth = 16, .true_colour = 1, .rmax = 31, .gmax = 63, .bmax = 31,
	.rshift = 11, .gshift = 5, .bshift = 0,
};
static const struct rfb_pf pf_565be = {
	.bpp = 16, .depth = 16, .big_endian = 1, .true_colour = 1, .rmax = 31, .gmax = 63,
	.bmax = 31, .rshift = 11, .gshift = 5, .bshift = 0,
};
static const struct rfb_pf pf_555be = {
	.bpp = 16, .depth = 15, .big_endian = 1, .true_colour = 1, .rmax = 31, .gmax = 31,
	.bmax = 31, .rshift = 10, .gshift = 5, .bshift = 0,
};
static const struct rfb_pf pf_bgr233 = {
	.bpp = 8, .depth = 8, .true_colour = 1, .rmax = 7, .gmax = 7, .bmax = 3,
	.rshift = 0, .gshift = 3, .bshift = 6,
};
/* Colour-mapped: the server picks the map. */
static const struct rfb_pf pf_cmap8 = { .bpp = 8, .depth = 8 };

static const struct rfb_pf *const all_pfs[] = {
	&pf_native, &pf_32be,  &pf_32bgr,  &pf_32high, &pf_32high_be, &pf_32d32,
	&pf_30bit_be, &pf_565le, &pf_565be, &pf_555be, &pf_bgr233,   &pf_cmap8,
};
/* clang-format on */
#define NPFS ((int)(sizeof(all_pfs) / sizeof(all_pfs[0])))

/* A channel of 0..255 scaled to 0..max, to the nearest. */
static uint32_t chan(uint32_t v, unsigned max)
{
	return (v * max + 127) / 255;
}

/* The pixel value a true-colour viewer should get for colour c. */
static uint32_t expect_px(const struct rfb_pf *pf, uint32_t c)
{
	return chan(c >> 16 & 255, pf->rmax) << pf->rshift |
	       chan(c >> 8 & 255, pf->gmax) << pf->gshift | chan(c & 255, pf->bmax) << pf->bshift;
}

/* The colour (0x00RRGGBB) a true-colour pixel shows. */
static uint32_t colour_of(const struct rfb_pf *pf, uint32_t p)
{
	uint32_t r = (p >> pf->rshift & pf->rmax) * 255 / pf->rmax;
	uint32_t g = (p >> pf->gshift & pf->gmax) * 255 / pf->gmax;
	uint32_t b = (p >> pf->bshift & pf->bmax) * 255 / pf->bmax;
	return r << 16 | g << 8 | b;
}

/* --- pictures --------------------------------------------------------- */

enum {
	PIC_SOLID,
	PIC_TWO,    /* 2 colours */
	PIC_FOUR,   /* 4 colours in small blocks */
	PIC_PAL16,  /* 16 colours in small blocks */
	PIC_PAL100, /* 100 colours in runs of 8 */
	PIC_RUNS,   /* thousands of colours in runs of 8 */
	PIC_NOISE,
	PIC_PHOTO, /* smooth gradients with a little grain */
	PIC_MIXED, /* each 64x64 tile one of the above */
	PIC_KINDS,
};

static uint32_t mix(uint32_t a)
{
	a ^= a >> 16;
	a *= 0x7feb352du;
	a ^= a >> 15;
	a *= 0x846ca68bu;
	a ^= a >> 16;
	return a;
}

static uint32_t noise_at(int x, int y, uint32_t seed)
{
	return mix((uint32_t)x * 73856093u ^ (uint32_t)y * 19349663u ^ seed * 83492791u);
}

static uint32_t clamp255(double v)
{
	return v < 0 ? 0 : v > 255 ? 255 : (uint32_t)v;
}

static uint32_t pic_pixel(int kind, int x, int y, uint32_t seed)
{
	static const uint32_t four[4] = {0x000000, 0xff0000, 0x00ff00, 0x0000ff};

	switch (kind) {
	case PIC_SOLID:
		return 0x204080 ^ (seed * 0x030507u & 0x3f3f3f);
	case PIC_TWO:
		return ((x >> 1) ^ (y >> 2)) & 1 ? 0xf0f0f0 ^ (seed & 0xf) : 0x102030;
	case PIC_FOUR:
		return four[noise_at(x / 3, y / 2, seed) % 4];
	case PIC_PAL16:
		return noise_at(x / 3, y / 2, seed) % 16 * 0x0f0d0bu + 0x010203;
	case PIC_PAL100:
		return noise_at(x / 8, y, seed) % 100 * 0x020201u + 0x000100;
	case PIC_RUNS:
		return noise_at(x / 8, y, seed) & 0xffffff;
	case PIC_NOISE:
		return noise_at(x, y, seed) & 0xffffff;
	case PIC_PHOTO: {
		double grain = (double)(noise_at(x, y, seed) % 5) - 2;
		uint32_t r = clamp255(128 + 90 * sin(x * 0.05 + seed) + 20 * sin(y * 0.11) + grain);
		uint32_t g = clamp255(128 + 90 * sin(y * 0.045 + x * 0.01) + grain);
		uint32_t b = clamp255(128 + 100 * sin((x + y) * 0.03 + seed * 0.5) + grain);
		return r << 16 | g << 8 | b;
	}
	default:
		return pic_pixel((int)((x / 64 + y / 64 * 3 + seed) % PIC_MIXED), x, y, seed);
	}
}

static void paint(uint32_t *px, int kind, int w, int h, uint32_t seed)
{
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			px[(size_t)y * w + x] = pic_pixel(kind, x, y, seed);
}

/* --- the viewer ------------------------------------------------------- */

struct rect {
	int x, y, w, h;
	int32_t enc;
};

/* What the last drain() decoded. */
struct stats {
	int updates, rects, raw, copyrect, zrle, tight, desktop_size;
	int zrle_sub[256];
	int tight_fill, tight_jpeg, tight_copy, tight_mono, tight_indexed, tight_uncompressed;
	int colour_maps, cuts;
};

struct viewer {
	struct rfb_session *s; /* NULL for a viewer on a socket */
	struct buf out;	       /* what the server sent, not decoded yet */
	int rc;		       /* what the last feed returned */
	struct rfb_pf pf;      /* what the viewer asked for */
	int32_t enc[16];       /* and the encodings it said it takes */
	int nenc;
	int w, h;
	uint32_t *fb;	/* pixel values in pf */
	uint8_t *lossy; /* per pixel: last written by JPEG */
	uint16_t cmap[256][3];
	z_stream zrle, tight[4];
	int zrle_on, tight_on[4];
	struct stats st;
	struct rect *rects;
	int nrects, rects_cap;
	char name[300];
	uint8_t server_pf[16];
	char cut[64];
	size_t cut_len;
	double psnr;
};

#define MAX_VIEWERS (RFB_MAX_VIEWERS + 1)

static struct {
	struct rfb_desktop *d;
	struct viewer *v[MAX_VIEWERS];
	uint32_t *px[6];
	struct buf b[2];
} fx;

static struct viewer *viewer_alloc(void)
{
	struct viewer *v = calloc(1, sizeof(*v));

	if (v)
		buf_init(&v->out);
	return v;
}

static void viewer_free(struct viewer *v)
{
	if (!v)
		return;
	rfb_session_free(v->s);
	buf_free(&v->out);
	free(v->fb);
	free(v->lossy);
	free(v->rects);
	if (v->zrle_on)
		inflateEnd(&v->zrle);
	for (int i = 0; i < 4; i++)
		if (v->tight_on[i])
			inflateEnd(&v->tight[i]);
	free(v);
}

static void fx_reset(void)
{
	for (int i = 0; i < MAX_VIEWERS; i++)
		viewer_free(fx.v[i]);
	if (fx.d)
		rfb_desktop_unref(fx.d);
	for (int i = 0; i < 6; i++)
		free(fx.px[i]);
	buf_free(&fx.b[0]);
	buf_free(&fx.b[1]);
	memset(&fx, 0, sizeof(fx));
}

/* A desktop for this test, named so. */
static struct rfb_desktop *desk(const char *name)
{
	fx_reset();
	return fx.d = rfb_desktop_new(name);
}

/* Picture slot i, painted. */
static uint32_t *pic(int i, int kind, int w, int h, uint32_t seed)
{
	free(fx.px[i]);
	if ((fx.px[i] = malloc((size_t)w * h * 4)))
		paint(fx.px[i], kind, w, h, seed);
	return fx.px[i];
}

static int publish(const uint32_t *px, int w, int h)
{
	return rfb_desktop_frame(fx.d, px, w, h, (size_t)w);
}

static int feed(struct viewer *v, const void *p, size_t n)
{
	return v->rc = rfb_session_feed(v->s, p, n, &v->out);
}

static int feed_buf(struct viewer *v, struct buf *b)
{
	int r = feed(v, buf_head(b), buf_avail(b));

	buf_reset(b);
	return r;
}

/* The server said exactly these bytes (and nothing more) since last time. */
static int take(struct viewer *v, const void *p, size_t n)
{
	if (buf_avail(&v->out) != n || memcmp(buf_head(&v->out), p, n)) {
		size_t k = buf_avail(&v->out);
		UNIT_FAIL("the server sent %zu bytes (first %02x), expected %zu", k,
			  k ? buf_head(&v->out)[0] : 0, n);
		return -1;
	}
	buf_reset(&v->out);
	return 0;
}

/* The server's bytes start with these; consumes them. */
static int take_prefix(struct viewer *v, const void *p, size_t n)
{
	NEED(buf_avail(&v->out) >= n && !memcmp(buf_head(&v->out), p, n));
	buf_consume(&v->out, n);
	return 0;
}

static int fb_resize(struct viewer *v, int w, int h)
{
	size_t n = (size_t)w * h;

	free(v->fb);
	free(v->lossy);
	v->fb = malloc(n * 4);
	v->lossy = calloc(n, 1);
	NEED(v->fb && v->lossy);
	for (size_t i = 0; i < n; i++)
		v->fb[i] = SENTINEL;
	v->w = w;
	v->h = h;
	return 0;
}

static void pf_read(struct rfb_pf *pf, const uint8_t *p)
{
	memset(pf, 0, sizeof(*pf));
	pf->bpp = p[0];
	pf->depth = p[1];
	pf->big_endian = p[2] != 0;
	pf->true_colour = p[3] != 0;
	pf->rmax = (uint16_t)(p[4] << 8 | p[5]);
	pf->gmax = (uint16_t)(p[6] << 8 | p[7]);
	pf->bmax = (uint16_t)(p[8] << 8 | p[9]);
	pf->rshift = p[10];
	pf->gshift = p[11];
	pf->bshift = p[12];
}

/* ServerInit: size, pixel format, name. The viewer starts in the
 * server's pixel format. */
static int server_init(struct viewer *v)
{
	uint16_t w, h;
	uint32_t n;
	const uint8_t *pf, *name;
	struct rd r;

	rd_init(&r, buf_head(&v->out), buf_avail(&v->out));
	NEED(rd_u16_be(&r, &w) == 0 && rd_u16_be(&r, &h) == 0 && rd_bytes(&r, &pf, 16) == 0);
	NEED(rd_u32_be(&r, &n) == 0 && n < sizeof(v->name) && rd_bytes(&r, &name, n) == 0);
	memcpy(v->name, name, n);
	v->name[n] = 0;
	memcpy(v->server_pf, pf, 16);
	pf_read(&v->pf, pf);
	buf_consume(&v->out, r.off);
	return fb_resize(v, w, h);
}

/* Greeting, version, security, ClientInit; version "RFB 003.00N\n"
 * where the server should answer as 3.N (3, 7 or 8). */
static int handshake_as(struct viewer *v, const char *version, int as)
{
	NEED(feed(v, NULL, 0) == 0);
	NEED(take(v, "RFB 003.008\n", 12) == 0);
	NEED(feed(v, version, 12) == 0);
	if (as == 3) {
		NEED(take(v, "\0\0\0\1", 4) == 0); /* the server picked None */
	} else {
		NEED(take(v, "\1\1", 2) == 0); /* one type: None */
		NEED(feed(v, "\1", 1) == 0);
		if (as == 8)
			NEED(take(v, "\0\0\0\0", 4) == 0); /* SecurityResult OK */
		else
			NEED(take(v, "", 0) == 0);
	}
	NEED(feed(v, "\1", 1) == 0); /* ClientInit, shared */
	return 0;
}

/* Viewer i, its session started but not greeted. */
static struct viewer *viewer_new(int i, unsigned flags)
{
	struct viewer *v = fx.v[i] = viewer_alloc();

	if (!v || !(v->s = rfb_session_new(fx.d, flags)))
		return NULL;
	v->pf = pf_native;
	return v;
}

/* Viewer i after a 3.8 handshake and ServerInit (the desktop has a frame). */
static struct viewer *viewer_open(int i, unsigned flags)
{
	struct viewer *v = viewer_new(i, flags);

	if (!v) {
		UNIT_FAIL("no session");
		return NULL;
	}
	if (handshake_as(v, "RFB 003.008\n", 8) < 0 || server_init(v) < 0)
		return NULL;
	return v;
}

/* --- client messages -------------------------------------------------- */

static void msg_pf(struct buf *b, const struct rfb_pf *pf)
{
	uint8_t m[20] = {RFB_SET_PIXEL_FORMAT};

	m[4] = pf->bpp;
	m[5] = pf->depth;
	m[6] = pf->big_endian;
	m[7] = pf->true_colour;
	m[8] = pf->rmax >> 8;
	m[9] = (uint8_t)pf->rmax;
	m[10] = pf->gmax >> 8;
	m[11] = (uint8_t)pf->gmax;
	m[12] = pf->bmax >> 8;
	m[13] = (uint8_t)pf->bmax;
	m[14] = pf->rshift;
	m[15] = pf->gshift;
	m[16] = pf->bshift;
	buf_put(b, m, sizeof(m));
}

static void msg_encodings(struct buf *b, const int32_t *e, int n)
{
	buf_put_u8(b, RFB_SET_ENCODINGS);
	buf_put_u8(b, 0);
	buf_put_u16_be(b, (uint16_t)n);
	for (int i = 0; i < n; i++)
		buf_put_u32_be(b, (uint32_t)e[i]);
}

static void msg_request(struct buf *b, int incr, int x, int y, int w, int h)
{
	buf_put_u8(b, RFB_FB_UPDATE_REQUEST);
	buf_put_u8(b, (uint8_t)incr);
	buf_put_u16_be(b, (uint16_t)x);
	buf_put_u16_be(b, (uint16_t)y);
	buf_put_u16_be(b, (uint16_t)w);
	buf_put_u16_be(b, (uint16_t)h);
}

static void msg_key(struct buf *b, uint8_t down, uint32_t keysym)
{
	buf_put_u8(b, RFB_KEY_EVENT);
	buf_put_u8(b, down);
	buf_put_u16_be(b, 0);
	buf_put_u32_be(b, keysym);
}

static void msg_pointer(struct buf *b, uint8_t buttons, uint16_t x, uint16_t y)
{
	buf_put_u8(b, RFB_POINTER_EVENT);
	buf_put_u8(b, buttons);
	buf_put_u16_be(b, x);
	buf_put_u16_be(b, y);
}

/* The header, and the text if there is one. */
static void msg_cut(struct buf *b, const char *text, uint32_t len)
{
	buf_put_u32_be(b, (uint32_t)RFB_CLIENT_CUT_TEXT << 24);
	buf_put_u32_be(b, len);
	if (text)
		buf_put(b, text, len);
}

static int send_pf(struct viewer *v, const struct rfb_pf *pf)
{
	msg_pf(&fx.b[0], pf);
	v->pf = *pf;
	return feed_buf(v, &fx.b[0]);
}

/* Remembers what was advertised, to catch the server using anything else. */
static int send_encodings(struct viewer *v, const int32_t *e, int n)
{
	msg_encodings(&fx.b[0], e, n);
	v->nenc = n < 16 ? n : 16;
	if (n)
		memcpy(v->enc, e, (size_t)v->nenc * sizeof(*e));
	return feed_buf(v, &fx.b[0]);
}

static int send_request(struct viewer *v, int incr, int x, int y, int w, int h)
{
	msg_request(&fx.b[0], incr, x, y, w, h);
	return feed_buf(v, &fx.b[0]);
}

/* --- decoding what the server sends ----------------------------------- */

static uint32_t px_load(const struct rfb_pf *pf, const uint8_t *b)
{
	switch (pf->bpp) {
	case 8:
		return b[0];
	case 16:
		return pf->big_endian ? (uint32_t)b[0] << 8 | b[1] : (uint32_t)b[1] << 8 | b[0];
	default:
		return pf->big_endian ? get_be32(b) : get_le32(b);
	}
}

static int rd_pixel(const struct rfb_pf *pf, struct rd *r, uint32_t *px)
{
	const uint8_t *b;

	if (rd_bytes(r, &b, pf->bpp / 8) < 0)
		return -1;
	*px = px_load(pf, b);
	return 0;
}

/* ZRLE's CPIXEL (RFC 6143 7.7.6): 3 bytes when a 32-bit true-colour
 * pixel of depth 24 or less has its colour in its 3 least or 3 most
 * significant bytes; at is where those 3 bytes sit in the 4. */
static void cpixel_layout(const struct rfb_pf *pf, int *size, int *at)
{
	uint32_t mask;

	*size = pf->bpp / 8;
	*at = 0;
	if (!pf->true_colour || pf->bpp != 32 || pf->depth > 24)
		return;
	mask = (uint32_t)pf->rmax << pf->rshift | (uint32_t)pf->gmax << pf->gshift |
	       (uint32_t)pf->bmax << pf->bshift;
	if (!(mask & 0xff000000u)) {
		*size = 3;
		*at = pf->big_endian ? 1 : 0;
	} else if (!(mask & 0xff)) {
		*size = 3;
		*at = pf->big_endian ? 0 : 1;
	}
}

static int rd_cpixel(const struct rfb_pf *pf, struct rd *r, uint32_t *px)
{
	uint8_t b[4] = {0};
	const uint8_t *p;
	int size, at;

	cpixel_layout(pf, &size, &at);
	if (rd_bytes(r, &p, (size_t)size) < 0)
		return -1;
	memcpy(b + at, p, (size_t)size);
	*px = px_load(pf, b);
	return 0;
}

/* Tight's TPIXEL: R, G, B for 32-bit true colour of depth 24 with 8-bit
 * channels, else a PIXEL. */
static int tpixel_rgb(const struct rfb_pf *pf)
{
	return pf->true_colour && pf->bpp == 32 && pf->depth == 24 && pf->rmax == 255 &&
	       pf->gmax == 255 && pf->bmax == 255;
}

static int rd_tpixel(const struct rfb_pf *pf, struct rd *r, uint32_t *px)
{
	const uint8_t *b;

	if (!tpixel_rgb(pf))
		return rd_pixel(pf, r, px);
	if (rd_bytes(r, &b, 3) < 0)
		return -1;
	*px = (uint32_t)b[0] << pf->rshift | (uint32_t)b[1] << pf->gshift |
	      (uint32_t)b[2] << pf->bshift;
	return 0;
}

static void put(struct viewer *v, int x, int y, uint32_t px)
{
	v->fb[(size_t)y * v->w + x] = px;
	v->lossy[(size_t)y * v->w + x] = 0;
}

static int dec_raw(struct viewer *v, struct rd *r, int x, int y, int w, int h)
{
	uint32_t px;

	for (int j = 0; j < h; j++)
		for (int i = 0; i < w; i++) {
			NEED(rd_pixel(&v->pf, r, &px) == 0);
			put(v, x + i, y + j, px);
		}
	return 0;
}

static int dec_copyrect(struct viewer *v, struct rd *r, int x, int y, int w, int h)
{
	uint16_t sx, sy;
	uint32_t *px;
	uint8_t *lossy;

	NEED(rd_u16_be(r, &sx) == 0 && rd_u16_be(r, &sy) == 0);
	NEED(sx + w <= v->w && sy + h <= v->h);
	px = malloc((size_t)w * h * 4);
	lossy = malloc((size_t)w * h);
	if (!px || !lossy) {
		free(px);
		free(lossy);
		NEED(!"out of memory");
	}
	for (int j = 0; j < h; j++) {
		memcpy(px + (size_t)j * w, v->fb + (size_t)(sy + j) * v->w + sx, (size_t)w * 4);
		memcpy(lossy + (size_t)j * w, v->lossy + (size_t)(sy + j) * v->w + sx, (size_t)w);
	}
	for (int j = 0; j < h; j++) {
		memcpy(v->fb + (size_t)(y + j) * v->w + x, px + (size_t)j * w, (size_t)w * 4);
		memcpy(v->lossy + (size_t)(y + j) * v->w + x, lossy + (size_t)j * w, (size_t)w);
	}
	free(px);
	free(lossy);
	return 0;
}

/* Inflates n bytes on a stream that goes on from rectangle to rectangle
 * (each ends in a sync flush, so all it holds comes out now). */
static int inflate_chunk(z_stream *zs, const uint8_t *in, size_t n, struct buf *o)
{
	int z;

	zs->next_in = (Bytef *)in;
	zs->avail_in = (uInt)n;
	for (;;) {
		NEED(buf_reserve(o, 65536) == 0);
		zs->next_out = buf_tail(o);
		zs->avail_out = 65536;
		z = inflate(zs, Z_SYNC_FLUSH);
		o->len += 65536 - zs->avail_out;
		NEED(z == Z_OK || z == Z_BUF_ERROR);
		if (zs->avail_out)
			break;
	}
	NEED(zs->avail_in == 0);
	return 0;
}

static int zrle_runlen(struct rd *r, int *len)
{
	uint8_t b;
	int n = 1;

	do {
		NEED(rd_u8(r, &b) == 0);
		n += b;
		NEED(n <= RFB_TILE_PIXELS);
	} while (b == 255);
	*len = n;
	return 0;
}

static int zrle_tile(struct viewer *v, struct rd *r, int x, int y, int w, int h)
{
	uint32_t pal[128], px;
	uint8_t sub, b = 0;
	int n = w * h, i, k, len, np, bits;

	NEED(rd_u8(r, &sub) == 0);
	v->st.zrle_sub[sub]++;
	if (sub == 0) { /* raw */
		for (i = 0; i < n; i++) {
			NEED(rd_cpixel(&v->pf, r, &px) == 0);
			put(v, x + i % w, y + i / w, px);
		}
	} else if (sub == 1) { /* solid */
		NEED(rd_cpixel(&v->pf, r, &px) == 0);
		for (i = 0; i < n; i++)
			put(v, x + i % w, y + i / w, px);
	} else if (sub <= 16) { /* packed palette */
		np = sub;
		bits = np == 2 ? 1 : np <= 4 ? 2 : 4;
		for (i = 0; i < np; i++)
			NEED(rd_cpixel(&v->pf, r, &pal[i]) == 0);
		for (int j = 0; j < h; j++) {
			int used = 8;
			for (i = 0; i < w; i++) {
				if (used == 8) {
					NEED(rd_u8(r, &b) == 0);
					used = 0;
				}
				k = b >> (8 - bits - used) & ((1 << bits) - 1);
				used += bits;
				NEED(k < np);
				put(v, x + i, y + j, pal[k]);
			}
		}
	} else if (sub == 128) { /* plain RLE */
		for (i = 0; i < n; i += len) {
			NEED(rd_cpixel(&v->pf, r, &px) == 0 && zrle_runlen(r, &len) == 0);
			NEED(i + len <= n);
			for (k = i; k < i + len; k++)
				put(v, x + k % w, y + k / w, px);
		}
	} else if (sub >= 130) { /* palette RLE */
		np = sub - 128;
		for (i = 0; i < np; i++)
			NEED(rd_cpixel(&v->pf, r, &pal[i]) == 0);
		for (i = 0; i < n; i += len) {
			NEED(rd_u8(r, &b) == 0 && (b & 127) < np);
			len = 1;
			if (b & 128)
				NEED(zrle_runlen(r, &len) == 0);
			NEED(i + len <= n);
			for (k = i; k < i + len; k++)
				put(v, x + k % w, y + k / w, pal[b & 127]);
		}
	} else {
		UNIT_FAIL("ZRLE subencoding %u is unused in RFC 6143", sub);
		return -1;
	}
	return 0;
}

static int dec_zrle(struct viewer *v, struct rd *r, int x, int y, int w, int h)
{
	uint32_t len;
	const uint8_t *data;
	struct buf o;
	struct rd z;
	int ok = -1;

	NEED(rd_u32_be(r, &len) == 0 && rd_bytes(r, &data, len) == 0);
	if (!v->zrle_on) {
		memset(&v->zrle, 0, sizeof(v->zrle));
		NEED(inflateInit(&v->zrle) == Z_OK);
		v->zrle_on = 1;
	}
	buf_init(&o);
	if (inflate_chunk(&v->zrle, data, len, &o) < 0)
		goto out;
	rd_init(&z, buf_head(&o), buf_avail(&o));
	for (int ty = y; ty < y + h; ty += RFB_TILE)
		for (int tx = x; tx < x + w; tx += RFB_TILE)
			if (zrle_tile(v, &z, tx, ty, x + w - tx < RFB_TILE ? x + w - tx : RFB_TILE,
				      y + h - ty < RFB_TILE ? y + h - ty : RFB_TILE) < 0)
				goto out;
	if (rd_left(&z)) {
		UNIT_FAIL("%zu bytes after a ZRLE rectangle's tiles", rd_left(&z));
		goto out;
	}
	ok = 0;
out:
	buf_free(&o);
	return ok;
}

static int rd_compact(struct rd *r, size_t *n)
{
	uint8_t b;

	NEED(rd_u8(r, &b) == 0);
	*n = b & 0x7f;
	if (b & 0x80) {
		NEED(rd_u8(r, &b) == 0);
		*n |= (size_t)(b & 0x7f) << 7;
		if (b & 0x80) {
			NEED(rd_u8(r, &b) == 0);
			*n |= (size_t)b << 14;
		}
	}
	return 0;
}

/* Tight basic compression's n bytes: as they are below 12, else a
 * compact length and zlib data on the stream. */
static int tight_data(struct viewer *v, struct rd *r, int stream, size_t n, struct buf *o)
{
	const uint8_t *p;
	size_t len;

	if (n < 12) {
		v->st.tight_uncompressed++;
		NEED(rd_bytes(r, &p, n) == 0);
		NEED(buf_put(o, p, n) == 0);
		return 0;
	}
	NEED(rd_compact(r, &len) == 0 && rd_bytes(r, &p, len) == 0);
	if (!v->tight_on[stream]) {
		memset(&v->tight[stream], 0, sizeof(v->tight[stream]));
		NEED(inflateInit(&v->tight[stream]) == Z_OK);
		v->tight_on[stream] = 1;
	}
	if (inflate_chunk(&v->tight[stream], p, len, o) < 0)
		return -1;
	NEED(buf_avail(o) == n);
	return 0;
}

struct jpeg_err {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
};

static void jpeg_err_exit(j_common_ptr ci)
{
	longjmp(((struct jpeg_err *)(void *)ci->err)->jb, 1);
}

/* A JPEG of w x h as R, G, B bytes: 0 or -1. */
static int jpeg_rgb(const uint8_t *p, size_t n, int w, int h, uint8_t *rgb)
{
	struct jpeg_decompress_struct ci;
	struct jpeg_err je;
	JSAMPROW row;

	ci.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jpeg_err_exit;
	if (setjmp(je.jb)) {
		jpeg_destroy_decompress(&ci);
		return -1;
	}
	jpeg_create_decompress(&ci);
	jpeg_mem_src(&ci, (unsigned char *)p, (unsigned long)n);
	jpeg_read_header(&ci, TRUE);
	ci.out_color_space = JCS_RGB;
	jpeg_start_decompress(&ci);
	if ((int)ci.output_width != w || (int)ci.output_height != h || ci.output_components != 3) {
		jpeg_destroy_decompress(&ci);
		return -1;
	}
	while (ci.output_scanline < ci.output_height) {
		row = rgb + (size_t)ci.output_scanline * w * 3;
		jpeg_read_scanlines(&ci, &row, 1);
	}
	jpeg_finish_decompress(&ci);
	jpeg_destroy_decompress(&ci);
	return 0;
}

static int tight_jpeg(struct viewer *v, struct rd *r, int x, int y, int w, int h)
{
	const uint8_t *p;
	uint8_t *rgb;
	size_t len;

	v->st.tight_jpeg++;
	NEED(v->pf.true_colour && v->pf.bpp >= 16);
	NEED(rd_compact(r, &len) == 0 && rd_bytes(r, &p, len) == 0);
	rgb = malloc((size_t)w * h * 3);
	NEED(rgb);
	if (jpeg_rgb(p, len, w, h, rgb) < 0) {
		free(rgb);
		NEED(!"a JPEG libjpeg can read, of the rectangle's size");
	}
	for (int j = 0; j < h; j++)
		for (int i = 0; i < w; i++) {
			const uint8_t *c = rgb + ((size_t)j * w + i) * 3;
			put(v, x + i, y + j,
			    expect_px(&v->pf, (uint32_t)c[0] << 16 | c[1] << 8 | c[2]));
			v->lossy[(size_t)(y + j) * v->w + x + i] = 1;
		}
	free(rgb);
	return 0;
}

static int dec_tight(struct viewer *v, struct rd *r, int x, int y, int w, int h)
{
	uint32_t pal[256], px;
	uint8_t ctl, filter = 0, nb;
	int np = 0, stream, ok = -1;
	size_t n;
	struct buf o;
	struct rd d;

	NEED(rd_u8(r, &ctl) == 0);
	for (int i = 0; i < 4; i++)
		if (ctl & 1 << i && v->tight_on[i])
			inflateReset(&v->tight[i]);
	ctl >>= 4;
	if (ctl == 8) { /* fill */
		v->st.tight_fill++;
		NEED(rd_tpixel(&v->pf, r, &px) == 0);
		for (int j = 0; j < h; j++)
			for (int i = 0; i < w; i++)
				put(v, x + i, y + j, px);
		return 0;
	}
	if (ctl == 9)
		return tight_jpeg(v, r, x, y, w, h);
	NEED(ctl < 8); /* basic */
	NEED(w <= 2048);
	stream = ctl & 3;
	if (ctl & 4)
		NEED(rd_u8(r, &filter) == 0);
	if (filter == 0) {
		v->st.tight_copy++;
		n = (size_t)w * h * (tpixel_rgb(&v->pf) ? 3 : v->pf.bpp / 8);
	} else if (filter == 1) {
		NEED(rd_u8(r, &nb) == 0);
		np = nb + 1;
		NEED(np >= 2);
		for (int i = 0; i < np; i++)
			NEED(rd_tpixel(&v->pf, r, &pal[i]) == 0);
		if (np == 2)
			v->st.tight_mono++;
		else
			v->st.tight_indexed++;
		n = np == 2 ? (size_t)(w + 7) / 8 * h : (size_t)w * h;
	} else {
		UNIT_FAIL("Tight filter %u (this server sends copy and palette only)", filter);
		return -1;
	}
	buf_init(&o);
	if (tight_data(v, r, stream, n, &o) < 0)
		goto out;
	rd_init(&d, buf_head(&o), buf_avail(&o));
	for (int j = 0; j < h; j++) {
		uint8_t b = 0;
		for (int i = 0; i < w; i++) {
			if (filter == 0) {
				if (rd_tpixel(&v->pf, &d, &px) < 0)
					goto out;
			} else if (np == 2) {
				if (i % 8 == 0 && rd_u8(&d, &b) < 0)
					goto out;
				px = pal[b >> (7 - i % 8) & 1];
			} else {
				if (rd_u8(&d, &b) < 0 || b >= np) {
					UNIT_FAIL("palette index beyond %d colours", np);
					goto out;
				}
				px = pal[b];
			}
			put(v, x + i, y + j, px);
		}
	}
	ok = 0;
out:
	buf_free(&o);
	return ok;
}

static int advertised(const struct viewer *v, int32_t enc)
{
	for (int i = 0; i < v->nenc; i++)
		if (v->enc[i] == enc)
			return 1;
	return 0;
}

static int dec_update(struct viewer *v, struct rd *r)
{
	uint8_t pad;
	uint16_t n, x, y, w, h;
	uint32_t e;
	int32_t enc;
	int ok;

	NEED(rd_u8(r, &pad) == 0 && rd_u16_be(r, &n) == 0);
	for (int i = 0; i < n; i++) {
		NEED(rd_u16_be(r, &x) == 0 && rd_u16_be(r, &y) == 0 && rd_u16_be(r, &w) == 0 &&
		     rd_u16_be(r, &h) == 0 && rd_u32_be(r, &e) == 0);
		enc = (int32_t)e;
		if (v->nrects == v->rects_cap) {
			struct rect *nr;
			v->rects_cap = v->rects_cap ? v->rects_cap * 2 : 64;
			nr = realloc(v->rects, (size_t)v->rects_cap * sizeof(*nr));
			NEED(nr);
			v->rects = nr;
		}
		v->rects[v->nrects++] = (struct rect){x, y, w, h, enc};
		v->st.rects++;
		if (enc != RFB_ENC_RAW && !advertised(v, enc)) {
			UNIT_FAIL("a rectangle in encoding %d, which the viewer did not advertise",
				  enc);
			return -1;
		}
		if (enc == RFB_ENC_DESKTOP_SIZE) {
			v->st.desktop_size++;
			NEED(w > 0 && h > 0);
			NEED(fb_resize(v, w, h) == 0);
			continue;
		}
		if (!(w > 0 && h > 0 && x + w <= v->w && y + h <= v->h)) {
			UNIT_FAIL("rectangle %ux%u at %u,%u outside the %dx%d framebuffer", w, h, x,
				  y, v->w, v->h);
			return -1;
		}
		switch (enc) {
		case RFB_ENC_RAW:
			v->st.raw++;
			ok = dec_raw(v, r, x, y, w, h);
			break;
		case RFB_ENC_COPYRECT:
			v->st.copyrect++;
			ok = dec_copyrect(v, r, x, y, w, h);
			break;
		case RFB_ENC_ZRLE:
			v->st.zrle++;
			ok = dec_zrle(v, r, x, y, w, h);
			break;
		case RFB_ENC_TIGHT:
			v->st.tight++;
			ok = dec_tight(v, r, x, y, w, h);
			break;
		default:
			UNIT_FAIL("rectangle encoding %d", enc);
			return -1;
		}
		if (ok < 0) {
			UNIT_FAIL("in rectangle %d, %ux%u at %u,%u, encoding %d", i, w, h, x, y,
				  enc);
			return -1;
		}
	}
	return 0;
}

static int dec_colour_map(struct viewer *v, struct rd *r)
{
	uint8_t pad;
	uint16_t first, n;

	NEED(rd_u8(r, &pad) == 0 && rd_u16_be(r, &first) == 0 && rd_u16_be(r, &n) == 0);
	NEED(first + n <= 256);
	for (int i = first; i < first + n; i++)
		for (int k = 0; k < 3; k++)
			NEED(rd_u16_be(r, &v->cmap[i][k]) == 0);
	v->st.colour_maps++;
	return 0;
}

static int dec_cut(struct viewer *v, struct rd *r)
{
	const uint8_t *p;
	uint32_t len;

	NEED(rd_skip(r, 3) == 0 && rd_u32_be(r, &len) == 0 && rd_bytes(r, &p, len) == 0);
	v->cut_len = len;
	memcpy(v->cut, p, len < sizeof(v->cut) ? len : sizeof(v->cut));
	v->st.cuts++;
	return 0;
}

/* Decodes all the server sent: the number of FramebufferUpdates, or -1. */
static int drain(struct viewer *v)
{
	struct rd r;
	uint8_t type;

	memset(&v->st, 0, sizeof(v->st));
	v->nrects = 0;
	rd_init(&r, buf_head(&v->out), buf_avail(&v->out));
	while (rd_left(&r)) {
		NEED(rd_u8(&r, &type) == 0);
		switch (type) {
		case RFB_FB_UPDATE:
			NEED(dec_update(v, &r) == 0);
			v->st.updates++;
			break;
		case RFB_SET_COLOUR_MAP:
			NEED(dec_colour_map(v, &r) == 0);
			break;
		case RFB_SERVER_CUT_TEXT:
			NEED(dec_cut(v, &r) == 0);
			break;
		default:
			UNIT_FAIL("server message type %u", type);
			return -1;
		}
	}
	buf_reset(&v->out);
	return v->st.updates;
}

/* A FramebufferUpdateRequest, and what came back decoded: the number of
 * updates, or -1. */
static int update(struct viewer *v, int incr, int x, int y, int w, int h)
{
	if (send_request(v, incr, x, y, w, h) < 0) {
		UNIT_FAIL("the session ended: %s", strerror(-v->rc));
		return -1;
	}
	return drain(v);
}

static int update_all(struct viewer *v, int incr)
{
	return update(v, incr, 0, 0, v->w, v->h);
}

/* The viewer shows the frame: exact, except where JPEG went (there the
 * PSNR, in v->psnr, is at least min_psnr). */
static int fb_check(struct viewer *v, const uint32_t *px, int w, int h, double min_psnr)
{
	double se = 0;
	long lossy = 0;

	NEED(v->w == w && v->h == h);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++) {
			uint32_t got = v->fb[(size_t)y * w + x], c = px[(size_t)y * w + x];
			if (v->lossy[(size_t)y * w + x]) {
				uint32_t s = colour_of(&v->pf, got);
				for (int k = 0; k < 24; k += 8) {
					double dd = (double)(s >> k & 255) - (double)(c >> k & 255);
					se += dd * dd;
				}
				lossy++;
				continue;
			}
			if (!v->pf.true_colour) {
				/* the map's colour, within 3-3-2 quantisation */
				const uint16_t *m = got < 256 ? v->cmap[got] : NULL;
				if (m && abs((m[0] >> 8) - (int)(c >> 16 & 255)) <= 19 &&
				    abs((m[1] >> 8) - (int)(c >> 8 & 255)) <= 19 &&
				    abs((m[2] >> 8) - (int)(c & 255)) <= 43)
					continue;
				UNIT_FAIL("pixel %d,%d: index 0x%x for colour %06x", x, y, got, c);
				return -1;
			}
			if (got != expect_px(&v->pf, c)) {
				UNIT_FAIL("pixel %d,%d of %dx%d (%d bpp): 0x%x, expected 0x%x for "
					  "colour %06x",
					  x, y, w, h, v->pf.bpp, got, expect_px(&v->pf, c), c);
				return -1;
			}
		}
	v->psnr = 0;
	if (lossy) {
		double mse = se / (3.0 * lossy);
		v->psnr = mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : 99;
		if (v->psnr < min_psnr) {
			UNIT_FAIL("JPEG PSNR %.1f dB, below %.1f", v->psnr, min_psnr);
			return -1;
		}
	}
	return 0;
}

/* Every rectangle of the last update lies inside the 64x64 tiles of
 * [x0,x1)x[y0,y1) (in tiles). */
static int rects_within_tiles(const struct viewer *v, int tx0, int ty0, int tx1, int ty1)
{
	for (int i = 0; i < v->nrects; i++) {
		const struct rect *r = &v->rects[i];
		if (r->x < tx0 * RFB_TILE || r->y < ty0 * RFB_TILE ||
		    r->x + r->w > tx1 * RFB_TILE || r->y + r->h > ty1 * RFB_TILE) {
			UNIT_FAIL("rectangle %dx%d at %d,%d outside tiles %d,%d..%d,%d", r->w, r->h,
				  r->x, r->y, tx0, ty0, tx1, ty1);
			return -1;
		}
	}
	return 0;
}

/* --- input ------------------------------------------------------------ */

struct input_log {
	int keys, pointers, cuts;
	int down[8];
	uint32_t keysym[8];
	uint8_t buttons[8];
	uint16_t x[8], y[8];
	size_t cut_len;
	char cut[64];
};

static struct input_log ilog;

static void on_key(void *arg, int down, uint32_t keysym)
{
	struct input_log *l = arg;

	if (l->keys < 8) {
		l->down[l->keys] = down;
		l->keysym[l->keys] = keysym;
	}
	l->keys++;
}

static void on_pointer(void *arg, uint8_t buttons, uint16_t x, uint16_t y)
{
	struct input_log *l = arg;

	if (l->pointers < 8) {
		l->buttons[l->pointers] = buttons;
		l->x[l->pointers] = x;
		l->y[l->pointers] = y;
	}
	l->pointers++;
}

static void on_cut(void *arg, const char *text, size_t len)
{
	struct input_log *l = arg;

	l->cut_len = len;
	memcpy(l->cut, text, len < sizeof(l->cut) ? len : sizeof(l->cut));
	l->cuts++;
}

static const struct rfb_input_ops log_ops = {on_key, on_pointer, on_cut};

/* ===================================================================== */
/* Handshakes                                                            */
/* ===================================================================== */

TEST(handshake_38_server_init)
{
	struct viewer *v;
	static const uint8_t native[16] = {32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0};

	CHECK(desk("metac test desktop"));
	CHECK(publish(pic(0, PIC_NOISE, 100, 70, 1), 100, 70) == 0);
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.008\n", 8) == 0);
	CHECK(server_init(v) == 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(v->w, 100);
	CHECK_INT(v->h, 70);
	CHECK_MEM(v->server_pf, native, 16); /* 32 bpp, depth 24, LE, true colour, 16/8/0 */
	CHECK_STR(v->name, "metac test desktop");
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, fx.px[0], 100, 70, 0) == 0);
	fx_reset();
}

TEST(handshake_37_has_no_security_result)
{
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_MIXED, 130, 64, 2), 130, 64) == 0);
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.007\n", 7) == 0);
	CHECK(server_init(v) == 0);
	CHECK_INT(v->w, 130);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, fx.px[0], 130, 64, 0) == 0);
	fx_reset();
}

TEST(handshake_33_server_picks_none)
{
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_MIXED, 64, 65, 3), 64, 65) == 0);
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.003\n", 3) == 0);
	CHECK(server_init(v) == 0);
	CHECK_INT(v->h, 65);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, fx.px[0], 64, 65, 0) == 0);
	fx_reset();
}

/* RFC 6143 7.1.1: an unknown 3.x is 3.3; the server never speaks above 3.8. */
TEST(handshake_other_minor_versions)
{
	static const struct {
		const char *v;
		int as;
	} cases[] = {
	    {"RFB 003.005\n", 3}, {"RFB 003.006\n", 3}, {"RFB 003.009\n", 8},
	    {"RFB 003.889\n", 8}, {"RFB 003.004\n", 3},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct viewer *v;
		CHECK(desk("d"));
		CHECK(publish(pic(0, PIC_TWO, 10, 10, 1), 10, 10) == 0);
		CHECK(v = viewer_new(0, 0));
		if (handshake_as(v, cases[i].v, cases[i].as) < 0 || server_init(v) < 0) {
			UNIT_FAIL("version %.11s", cases[i].v);
			return;
		}
	}
	fx_reset();
}

TEST(handshake_bad_versions_end_the_session)
{
	static const char *const bad[] = {
	    "RFB 004.000\n",  "RFB 002.999\n",	 "RFB 003.002\n",
	    "RFB 003.000\n",  "RFB 003.008\r",	 "RFB 003-008\n",
	    "RFB003.008\n\n", "GET / HTTP/1.\n", "\0\0\0\0\0\0\0\0\0\0\0\0",
	    "RFB 003.-08\n",  "rfb 003.008\n",
	};

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct viewer *v = viewer_new((int)i, 0);
		CHECK(v);
		CHECK_INT(feed(v, NULL, 0), 0);
		CHECK(take(v, "RFB 003.008\n", 12) == 0);
		if (feed(v, bad[i], 12) >= 0) {
			UNIT_FAIL("version \"%.11s\" accepted", bad[i]);
			return;
		}
		CHECK_INT(v->rc, -EPROTO);
		CHECK_INT(buf_avail(&v->out), 0); /* nothing more said */
	}
	fx_reset();
}

/* 3.8: SecurityResult failed, with a reason, then the end; 3.7: the end. */
TEST(handshake_security_type_refused)
{
	struct viewer *v;
	struct rd r;
	uint32_t status, len;
	const uint8_t *why;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	for (int type = 0; type < 256; type += 2) { /* 0, 2 (VNC auth), ... */
		CHECK(v = viewer_new(0, 0));
		CHECK_INT(feed(v, "RFB 003.008\n", 12), 0);
		CHECK(take(v, "RFB 003.008\n\1\1", 14) == 0);
		uint8_t t = (uint8_t)type;
		CHECK_INT(feed(v, &t, 1), -EPROTO);
		rd_init(&r, buf_head(&v->out), buf_avail(&v->out));
		CHECK(rd_u32_be(&r, &status) == 0 && status == 1);
		CHECK(rd_u32_be(&r, &len) == 0 && len > 0 && rd_bytes(&r, &why, len) == 0);
		CHECK_INT(rd_left(&r), 0);
		viewer_free(v);
		fx.v[0] = NULL;
	}
	CHECK(v = viewer_new(0, 0));
	CHECK_INT(feed(v, "RFB 003.007\n", 12), 0);
	CHECK(take(v, "RFB 003.008\n\1\1", 14) == 0);
	CHECK_INT(feed(v, "\2", 1), -EPROTO);
	CHECK_INT(buf_avail(&v->out), 0);
	fx_reset();
}

/* Nothing after ClientInit until there is a frame; then ServerInit with
 * its size. */
TEST(server_init_waits_for_the_first_frame)
{
	struct viewer *v;

	CHECK(desk("late"));
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.008\n", 8) == 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 1); /* someone waits for a frame */
	CHECK(publish(pic(0, PIC_PAL16, 65, 129, 4), 65, 129) == 0);
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK(server_init(v) == 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(v->w, 65);
	CHECK_INT(v->h, 129);
	CHECK_STR(v->name, "late");
	CHECK_INT(feed(v, NULL, 0), 0); /* once only */
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, fx.px[0], 65, 129, 0) == 0);
	fx_reset();
}

TEST(desktop_name_is_bounded)
{
	char name[400];
	struct viewer *v;

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	CHECK(desk(name));
	CHECK(publish(pic(0, PIC_SOLID, 1, 1, 1), 1, 1) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(strlen(v->name), 255);
	fx_reset();
}

/* ===================================================================== */
/* Pixel formats                                                         */
/* ===================================================================== */

/* Raw in each format, pixel exact against RFC 6143's true colour. */
TEST(set_pixel_format_raw_exact)
{
	for (int i = 0; i < NPFS; i++) {
		struct viewer *v;
		CHECK(desk("d"));
		CHECK(publish(pic(0, PIC_NOISE, 100, 70, (uint32_t)i), 100, 70) == 0);
		CHECK(v = viewer_open(0, 0));
		CHECK_INT(send_pf(v, all_pfs[i]), 0);
		if (update_all(v, 0) != 1 || fb_check(v, fx.px[0], 100, 70, 0) < 0) {
			UNIT_FAIL("pixel format %d (%d bpp)", i, all_pfs[i]->bpp);
			return;
		}
		CHECK_INT(v->st.raw, 2);
	}
	fx_reset();
}

/* Explicit byte-level values, independent of the helpers above. */
TEST(set_pixel_format_byte_layout)
{
	struct viewer *v;
	uint32_t px = 0x12fe80; /* r 0x12, g 0xfe, b 0x80 */
	const uint8_t *p;

	CHECK(desk("d"));
	CHECK(publish(&px, 1, 1) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_request(v, 0, 0, 0, 1, 1), 0);
	p = buf_head(&v->out);
	CHECK_INT(buf_avail(&v->out), 4 + 12 + 4);
	CHECK_MEM(p + 16, "\x80\xfe\x12\x00", 4);
	buf_reset(&v->out);
	CHECK_INT(send_pf(v, &pf_32be), 0);
	CHECK_INT(send_request(v, 0, 0, 0, 1, 1), 0);
	CHECK_MEM(buf_head(&v->out) + 16, "\x00\x12\xfe\x80", 4);
	buf_reset(&v->out);
	/* 565: r 0x12 -> 2, g 0xfe -> 63, b 0x80 -> 16: 0x17f0 */
	CHECK_INT(send_pf(v, &pf_565be), 0);
	CHECK_INT(send_request(v, 0, 0, 0, 1, 1), 0);
	CHECK_INT(buf_avail(&v->out), 4 + 12 + 2);
	CHECK_MEM(buf_head(&v->out) + 16, "\x17\xf0", 2);
	buf_reset(&v->out);
	CHECK_INT(send_pf(v, &pf_565le), 0);
	CHECK_INT(send_request(v, 0, 0, 0, 1, 1), 0);
	CHECK_MEM(buf_head(&v->out) + 16, "\xf0\x17", 2);
	buf_reset(&v->out);
	/* 3-3-2 as BGR233: r 0, g 7, b 2 -> 0 | 7 << 3 | 2 << 6 = 0xb8 */
	CHECK_INT(send_pf(v, &pf_bgr233), 0);
	CHECK_INT(send_request(v, 0, 0, 0, 1, 1), 0);
	CHECK_INT(buf_avail(&v->out), 4 + 12 + 1);
	CHECK_INT(buf_head(&v->out)[16], 0xb8);
	fx_reset();
}

TEST(set_pixel_format_invalid_ends_the_session)
{
	/* clang-format off */
	static const struct rfb_pf bad[] = {
		{ .bpp = 24, .depth = 24, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
		  .rshift = 16, .gshift = 8 },
		{ .bpp = 0, .depth = 0, .true_colour = 1, .rmax = 1, .gmax = 1, .bmax = 1 },
		{ .bpp = 12, .depth = 12, .true_colour = 1, .rmax = 15, .gmax = 15, .bmax = 15,
		  .rshift = 8, .gshift = 4 },
		{ .bpp = 32, .depth = 24, .true_colour = 1, .rmax = 0, .gmax = 255, .bmax = 255,
		  .rshift = 16, .gshift = 8 },
		{ .bpp = 16, .depth = 16, .true_colour = 1, .rmax = 31, .gmax = 63, .bmax = 0,
		  .rshift = 11, .gshift = 5 },
		{ .bpp = 16, .depth = 16, .true_colour = 1, .rmax = 31, .gmax = 63, .bmax = 31,
		  .rshift = 12, .gshift = 5 }, /* red beyond bit 15 */
		{ .bpp = 32, .depth = 24, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
		  .rshift = 32, .gshift = 8 },
		{ .bpp = 32, .depth = 24, .true_colour = 1, .rmax = 255, .gmax = 255, .bmax = 255,
		  .rshift = 255, .gshift = 8 },
		{ .bpp = 8, .depth = 8, .true_colour = 1, .rmax = 255, .gmax = 7, .bmax = 3,
		  .rshift = 1, .gshift = 3, .bshift = 6 },
		{ .bpp = 8, .depth = 8, .true_colour = 1, .rmax = 0xffff, .gmax = 7, .bmax = 3 },
		{ .bpp = 16, .depth = 16, .true_colour = 0 }, /* a colour map beyond 8 bits */
		{ .bpp = 32, .depth = 24, .true_colour = 0 },
	};
	/* clang-format on */

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct viewer *v = viewer_open((int)i, 0);
		CHECK(v);
		if (send_pf(v, &bad[i]) >= 0) {
			UNIT_FAIL("pixel format %zu accepted", i);
			return;
		}
		CHECK_INT(v->rc, -EPROTO);
	}
	fx_reset();
}

/* A colour-mapped 8-bit viewer gets SetColourMapEntries, then indices
 * into that map, with any encoding. */
TEST(colour_map_viewer)
{
	static const int32_t encs[3] = {RFB_ENC_RAW, RFB_ENC_ZRLE, RFB_ENC_TIGHT};

	for (int e = 0; e < 3; e++) {
		struct viewer *v;
		CHECK(desk("d"));
		CHECK(publish(pic(0, PIC_MIXED, 300, 200, 9), 300, 200) == 0);
		CHECK(v = viewer_open(0, 0));
		CHECK_INT(send_encodings(v, &encs[e], 1), 0);
		CHECK_INT(send_pf(v, &pf_cmap8), 0);
		CHECK_INT(drain(v), 0);
		CHECK_INT(v->st.colour_maps, 1);
		CHECK_INT(update_all(v, 0), 1);
		CHECK_INT(v->st.colour_maps, 0); /* once per SetPixelFormat */
		CHECK(fb_check(v, fx.px[0], 300, 200, 0) == 0);
		CHECK(publish(pic(1, PIC_MIXED, 300, 200, 10), 300, 200) == 0);
		CHECK_INT(update_all(v, 1), 1);
		CHECK(fb_check(v, fx.px[1], 300, 200, 0) == 0);
	}
	fx_reset();
}

/* ===================================================================== */
/* Encodings                                                             */
/* ===================================================================== */

/* The encoding of the pixel rectangles of a full update after these
 * SetEncodings, or -1 if they were mixed. */
static int32_t encoding_used(const int32_t *e, int n)
{
	struct viewer *v;

	if (!desk("d") || publish(pic(0, PIC_MIXED, 200, 150, 1), 200, 150) < 0 ||
	    !(v = viewer_open(0, 0)) || send_encodings(v, e, n) < 0 || update_all(v, 0) != 1 ||
	    fb_check(v, fx.px[0], 200, 150, 0) < 0)
		return -1000;
	if (v->st.raw == v->st.rects)
		return RFB_ENC_RAW;
	if (v->st.zrle == v->st.rects)
		return RFB_ENC_ZRLE;
	if (v->st.tight == v->st.rects)
		return RFB_ENC_TIGHT;
	return -1;
}

TEST(set_encodings_first_known_wins)
{
	static const int32_t a[] = {RFB_ENC_TIGHT, RFB_ENC_ZRLE, RFB_ENC_RAW};
	static const int32_t b[] = {RFB_ENC_ZRLE, RFB_ENC_TIGHT};
	static const int32_t c[] = {
	    99, -300, 0x12345678, 2 /* RRE */, 5 /* Hextile */, RFB_ENC_TIGHT, RFB_ENC_ZRLE};
	static const int32_t d[] = {RFB_ENC_COPYRECT, RFB_ENC_DESKTOP_SIZE, -26, -250};
	static const int32_t e[] = {5, RFB_ENC_RAW, RFB_ENC_ZRLE};
	static const int32_t f[] = {(int32_t)0x80000000, RFB_ENC_ZRLE};

	CHECK_INT(encoding_used(a, 3), RFB_ENC_TIGHT);
	CHECK_INT(encoding_used(b, 2), RFB_ENC_ZRLE);
	CHECK_INT(encoding_used(c, 7), RFB_ENC_TIGHT);
	CHECK_INT(encoding_used(d, 4), RFB_ENC_RAW);
	CHECK_INT(encoding_used(NULL, 0), RFB_ENC_RAW);
	CHECK_INT(encoding_used(e, 3), RFB_ENC_RAW);
	CHECK_INT(encoding_used(f, 2), RFB_ENC_ZRLE);
	fx_reset();
}

TEST(set_encodings_again_replaces)
{
	static const int32_t z[] = {RFB_ENC_ZRLE}, t[] = {RFB_ENC_TIGHT};
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_MIXED, 200, 150, 1), 200, 150) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_encodings(v, z, 1), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(v->st.zrle > 0 && v->st.zrle == v->st.rects);
	CHECK_INT(send_encodings(v, t, 1), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(v->st.tight > 0 && v->st.tight == v->st.rects);
	CHECK_INT(send_encodings(v, NULL, 0), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(v->st.raw > 0 && v->st.raw == v->st.rects);
	CHECK(fb_check(v, fx.px[0], 200, 150, 0) == 0);
	fx_reset();
}

/* RFB_MAX_ENCODINGS is the most a SetEncodings may list; one more ends
 * the session as soon as its header is in. */
TEST(set_encodings_limit)
{
	struct viewer *v;
	uint8_t hdr[4] = {RFB_SET_ENCODINGS, 0, (RFB_MAX_ENCODINGS + 1) >> 8,
			  (uint8_t)(RFB_MAX_ENCODINGS + 1)};
	int32_t *e;

	CHECK(desk("d"));
	CHECK(e = (int32_t *)(fx.px[5] = malloc(RFB_MAX_ENCODINGS * sizeof(*e))));
	for (int i = 0; i < RFB_MAX_ENCODINGS; i++)
		e[i] = 1000 + i; /* unknown to the server */
	e[RFB_MAX_ENCODINGS - 1] = RFB_ENC_ZRLE;
	CHECK(publish(pic(0, PIC_MIXED, 100, 70, 1), 100, 70) == 0);
	CHECK(v = viewer_open(0, 0));
	msg_encodings(&fx.b[0], e, RFB_MAX_ENCODINGS);
	CHECK_INT(feed_buf(v, &fx.b[0]), 0);
	v->enc[0] = RFB_ENC_ZRLE;
	v->nenc = 1;
	CHECK_INT(update_all(v, 0), 1);
	CHECK(v->st.zrle > 0 && v->st.zrle == v->st.rects);

	CHECK(v = viewer_open(1, 0));
	CHECK(feed(v, hdr, 4) < 0);
	CHECK_INT(v->rc, -EPROTO);
	fx_reset();
}

/* ===================================================================== */
/* Update requests                                                       */
/* ===================================================================== */

TEST(update_incremental_sends_changed_tiles_only)
{
	struct viewer *v;
	uint32_t *a, *b;

	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_MIXED, 300, 200, 1));
	CHECK(b = pic(1, PIC_MIXED, 300, 200, 1));
	CHECK(publish(a, 300, 200) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(update_all(v, 0), 1); /* non-incremental: everything */
	CHECK(fb_check(v, a, 300, 200, 0) == 0);
	CHECK_INT(update_all(v, 1), 0); /* nothing changed: nothing */
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK(publish(a, 300, 200) == 0); /* the same frame again */
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 1);

	b[70 * 300 + 130] ^= 0x010101; /* in tile 2,1 */
	CHECK(publish(b, 300, 200) == 0);
	CHECK_INT(feed(v, NULL, 0), 0); /* the waiting request is answered */
	CHECK_INT(drain(v), 1);
	CHECK_INT(v->nrects, 1);
	CHECK(v->rects[0].x == 128 && v->rects[0].y == 64 && v->rects[0].w == 64 &&
	      v->rects[0].h == 64);
	CHECK(fb_check(v, b, 300, 200, 0) == 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 0); /* answered: nobody waits */

	/* The partial tiles at the right and bottom edges. */
	b[199 * 300 + 299] ^= 0xffffff;
	b[0 * 300 + 290] ^= 0xffffff;
	CHECK(publish(b, 300, 200) == 0);
	CHECK_INT(update_all(v, 1), 1);
	CHECK_INT(v->nrects, 2);
	CHECK(rects_within_tiles(v, 4, 0, 5, 4) == 0);
	CHECK(v->rects[0].w == 44 && v->rects[1].w == 44 && v->rects[1].h == 8);
	CHECK(fb_check(v, b, 300, 200, 0) == 0);

	/* Several changes between requests: one update with the latest. */
	paint(b, PIC_NOISE, 300, 200, 5);
	CHECK(publish(b, 300, 200) == 0);
	paint(b, PIC_PAL16, 300, 200, 6);
	CHECK(publish(b, 300, 200) == 0);
	CHECK_INT(update_all(v, 1), 1);
	CHECK(fb_check(v, b, 300, 200, 0) == 0);
	fx_reset();
}

/* A request for part of the screen gets the tiles under it, no more. */
TEST(update_sub_rectangle)
{
	struct viewer *v;
	uint32_t *a, *b;

	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_NOISE, 300, 200, 1));
	CHECK(b = pic(1, PIC_NOISE, 300, 200, 2));
	CHECK(publish(a, 300, 200) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(update(v, 0, 70, 10, 10, 10), 1);
	CHECK_INT(v->nrects, 1);
	CHECK(v->rects[0].x == 64 && v->rects[0].y == 0 && v->rects[0].w == 64 &&
	      v->rects[0].h == 64);
	CHECK_INT(v->fb[0], SENTINEL); /* tile 0,0 not sent */
	CHECK_INT(v->fb[75 * 300 + 75], SENTINEL);
	CHECK_INT(v->fb[15 * 300 + 75], expect_px(&v->pf, a[15 * 300 + 75]));

	/* Spanning tiles 1..3 x 1..2 */
	CHECK_INT(update(v, 0, 100, 100, 100, 50), 1);
	CHECK(rects_within_tiles(v, 1, 1, 4, 3) == 0);
	CHECK_INT(v->fb[64 * 300 + 64], expect_px(&v->pf, a[64 * 300 + 64]));
	CHECK_INT(v->fb[191 * 300 + 255], expect_px(&v->pf, a[191 * 300 + 255]));

	/* Beyond the frame: nothing of it. */
	CHECK_INT(update(v, 0, 400, 400, 10, 10), 1);
	CHECK_INT(v->nrects, 0);
	CHECK_INT(update(v, 0, 0, 0, 0, 0), 1);
	CHECK_INT(v->nrects, 0);

	/* Clipped at the frame's edge. */
	CHECK_INT(update(v, 0, 250, 150, 65535, 65535), 1);
	CHECK(rects_within_tiles(v, 3, 2, 5, 4) == 0);

	/* Incremental, elsewhere than the change: nothing until a change
	 * falls inside. */
	CHECK_INT(update_all(v, 0), 1);
	CHECK(publish(b, 300, 200) == 0);
	CHECK_INT(update(v, 1, 0, 0, 10, 10), 1);
	CHECK(rects_within_tiles(v, 0, 0, 1, 1) == 0);
	b[150 * 300 + 10] ^= 0x808080; /* tile 0,2 */
	CHECK(publish(b, 300, 200) == 0);
	CHECK_INT(update(v, 1, 200, 0, 100, 64), 1); /* tiles 3,0 and 4,0 still dirty */
	CHECK(rects_within_tiles(v, 3, 0, 5, 1) == 0);
	CHECK_INT(update(v, 1, 200, 0, 100, 64), 0);
	CHECK_INT(update_all(v, 1), 1);
	CHECK(fb_check(v, b, 300, 200, 0) == 0);
	fx_reset();
}

/* ===================================================================== */
/* CopyRect                                                              */
/* ===================================================================== */

/* A viewer in sync with frame a, with CopyRect and the given encoding,
 * waiting (incremental request) when frame b comes: the update must
 * turn a into b exactly, with at least min_copies CopyRects. */
static int copy_case(const uint32_t *a, const uint32_t *b, int w, int h, int32_t enc,
		     int min_copies, int max_copies)
{
	int32_t e[2] = {RFB_ENC_COPYRECT, enc};
	struct viewer *v;

	NEED(publish(a, w, h) == 0);
	NEED((v = viewer_open(0, 0)));
	NEED(send_encodings(v, e, 2) == 0);
	NEED(update_all(v, 0) == 1 && fb_check(v, a, w, h, 0) == 0);
	NEED(update_all(v, 1) == 0);
	NEED(publish(b, w, h) == 0);
	NEED(feed(v, NULL, 0) == 0);
	NEED(drain(v) == 1);
	if (fb_check(v, b, w, h, 0) < 0) {
		UNIT_FAIL("%dx%d, encoding %d, %d CopyRects", w, h, enc, v->st.copyrect);
		return -1;
	}
	if (v->st.copyrect < min_copies || v->st.copyrect > max_copies) {
		UNIT_FAIL("%d CopyRects, expected %d..%d", v->st.copyrect, min_copies, max_copies);
		return -1;
	}
	viewer_free(v);
	fx.v[0] = NULL;
	return 0;
}

static void shift(uint32_t *b, const uint32_t *a, int w, int h, int dx, int dy, uint32_t fill)
{
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			b[(size_t)y * w + x] =
			    x >= dx && y >= dy ? a[(size_t)(y - dy) * w + x - dx] : fill;
}

static const int32_t pixel_encs[3] = {RFB_ENC_RAW, RFB_ENC_ZRLE, RFB_ENC_TIGHT};

TEST(copyrect_shift_right)
{
	static const int sizes[][2] = {{320, 192}, {300, 200}, {128, 64}, {1000, 64}};

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		int w = sizes[s][0], h = sizes[s][1], full_x = w / 64, full_y = h / 64;
		for (int e = 0; e < 3; e++) {
			uint32_t *a, *b;
			CHECK(desk("d"));
			CHECK(a = pic(0, PIC_NOISE, w, h, (uint32_t)s));
			CHECK(b = pic(1, PIC_SOLID, w, h, 0));
			shift(b, a, w, h, 64, 0, 0x00ff00);
			/* every full tile but the first column comes from its left */
			CHECK(copy_case(a, b, w, h, pixel_encs[e], (full_x - 1) * full_y,
					(full_x - 1) * full_y) == 0);
		}
	}
	fx_reset();
}

TEST(copyrect_shift_down)
{
	static const int sizes[][2] = {{320, 192}, {130, 300}, {64, 640}};

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		int w = sizes[s][0], h = sizes[s][1], full_x = w / 64, full_y = h / 64;
		for (int e = 0; e < 3; e++) {
			uint32_t *a, *b;
			CHECK(desk("d"));
			CHECK(a = pic(0, PIC_MIXED, w, h, (uint32_t)s + 7));
			CHECK(b = pic(1, PIC_SOLID, w, h, 0));
			shift(b, a, w, h, 0, 64, 0x0000ff);
			CHECK(copy_case(a, b, w, h, pixel_encs[e], 1, full_x * (full_y - 1)) == 0);
		}
	}
	fx_reset();
}

TEST(copyrect_shift_diagonal_and_left)
{
	int w = 384, h = 256;
	uint32_t *a, *b;

	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_NOISE, w, h, 3));
	CHECK(b = pic(1, PIC_SOLID, w, h, 0));
	shift(b, a, w, h, 64, 128, 0x123456);
	CHECK(copy_case(a, b, w, h, RFB_ENC_ZRLE, 5 * 2, 5 * 2) == 0);
	/* left and up: the copies run the other way */
	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_NOISE, w, h, 3));
	CHECK(b = pic(1, PIC_SOLID, w, h, 0));
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			b[y * w + x] =
			    x + 128 < w && y + 64 < h ? a[(y + 64) * w + x + 128] : 0x654321;
	CHECK(copy_case(a, b, w, h, RFB_ENC_RAW, 4 * 3, 4 * 3) == 0);
	fx_reset();
}

static void swap_tiles(uint32_t *px, int w, int t1x, int t1y, int t2x, int t2y)
{
	for (int j = 0; j < 64; j++)
		for (int i = 0; i < 64; i++) {
			uint32_t *p = &px[(t1y * 64 + j) * w + t1x * 64 + i];
			uint32_t *q = &px[(t2y * 64 + j) * w + t2x * 64 + i];
			uint32_t t = *p;
			*p = *q;
			*q = t;
		}
}

static void copy_tile(uint32_t *dst, const uint32_t *src, int w, int dx, int dy, int sx, int sy)
{
	for (int j = 0; j < 64; j++)
		memcpy(&dst[(dy * 64 + j) * w + dx * 64], &src[(sy * 64 + j) * w + sx * 64],
		       64 * 4);
}

/* Copies that wait on each other in a cycle cannot all be CopyRects:
 * the result must still be exact. */
TEST(copyrect_cycles)
{
	int w = 320, h = 192;
	uint32_t *a, *b;

	for (int e = 0; e < 3; e++) {
		CHECK(desk("d"));
		CHECK(a = pic(0, PIC_NOISE, w, h, 11));
		CHECK(b = pic(1, PIC_NOISE, w, h, 11));
		swap_tiles(b, w, 0, 0, 1, 0); /* a 2-cycle */
		CHECK(copy_case(a, b, w, h, pixel_encs[e], 0, 2) == 0);

		/* a 2-cycle with a tile reading from it, and a 3-cycle */
		CHECK(desk("d"));
		CHECK(a = pic(0, PIC_NOISE, w, h, 12));
		CHECK(b = pic(1, PIC_NOISE, w, h, 12));
		swap_tiles(b, w, 0, 0, 1, 0);
		copy_tile(b, a, w, 4, 2, 0, 0);
		copy_tile(b, a, w, 2, 1, 3, 1);
		copy_tile(b, a, w, 3, 1, 4, 1);
		copy_tile(b, a, w, 4, 1, 2, 1);
		CHECK(copy_case(a, b, w, h, pixel_encs[e], 1, 6) == 0);

		/* a whole row rotated left: one long cycle */
		CHECK(desk("d"));
		CHECK(a = pic(0, PIC_NOISE, w, h, 13));
		CHECK(b = pic(1, PIC_NOISE, w, h, 13));
		for (int t = 0; t < 5; t++)
			copy_tile(b, a, w, t, 1, (t + 1) % 5, 1);
		CHECK(copy_case(a, b, w, h, pixel_encs[e], 0, 5) == 0);

		/* the screen reversed tile by tile: pairs of swaps */
		CHECK(desk("d"));
		CHECK(a = pic(0, PIC_NOISE, w, h, 14));
		CHECK(b = pic(1, PIC_NOISE, w, h, 14));
		for (int t = 0; t < 15; t++)
			copy_tile(b, a, w, t % 5, t / 5, (14 - t) % 5, (14 - t) / 5);
		CHECK(copy_case(a, b, w, h, pixel_encs[e], 0, 15) == 0);

		/* a chain: each tile from the next, one tile from a solid one
		 * (many identical sources) */
		CHECK(desk("d"));
		CHECK(a = pic(0, PIC_MIXED, w, h, 15));
		CHECK(b = pic(1, PIC_MIXED, w, h, 15));
		for (int t = 0; t < 14; t++)
			copy_tile(b, a, w, t % 5, t / 5, (t + 1) % 5, (t + 1) / 5);
		CHECK(copy_case(a, b, w, h, pixel_encs[e], 1, 15) == 0);
	}
	fx_reset();
}

/* Copies into a requested area whose sources lie outside it, then the
 * rest: still exact. */
TEST(copyrect_partial_requests)
{
	int32_t e[2] = {RFB_ENC_COPYRECT, RFB_ENC_RAW};
	int w = 320, h = 128;
	struct viewer *v;
	uint32_t *a, *b;

	for (int part = 0; part < 3; part++) {
		CHECK(desk("d"));
		CHECK(a = pic(0, PIC_NOISE, w, h, 21));
		CHECK(b = pic(1, PIC_SOLID, w, h, 0));
		shift(b, a, w, h, 64, 0, 0xff00ff);
		CHECK(publish(a, w, h) == 0);
		CHECK(v = viewer_open(0, 0));
		CHECK_INT(send_encodings(v, e, 2), 0);
		CHECK_INT(update_all(v, 0), 1);
		CHECK(publish(b, w, h) == 0);
		if (part == 0)
			CHECK_INT(update(v, 1, 192, 0, 128, 128), 1); /* tiles 3,4 */
		else if (part == 1)
			CHECK_INT(update(v, 1, 0, 0, 128, 64), 1); /* tiles 0,1 of row 0 */
		else
			CHECK_INT(update(v, 1, 100, 70, 1, 1), 1); /* tile 1,1 */
		CHECK(v->st.copyrect > 0);
		CHECK_INT(update_all(v, 1), 1);
		CHECK(fb_check(v, b, w, h, 0) == 0);
	}
	fx_reset();
}

/* Two frames before the viewer asks: the copies planned for the first no
 * longer hold; the update must still give the second exactly. */
TEST(copyrect_two_frames_before_request)
{
	int32_t e[2] = {RFB_ENC_COPYRECT, RFB_ENC_ZRLE};
	int w = 320, h = 192;
	struct viewer *v;
	uint32_t *a, *b, *c;

	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_NOISE, w, h, 31));
	CHECK(b = pic(1, PIC_SOLID, w, h, 0));
	CHECK(c = pic(2, PIC_SOLID, w, h, 0));
	shift(b, a, w, h, 64, 0, 0x00ff00);
	shift(c, b, w, h, 0, 64, 0x0000ff);
	CHECK(publish(a, w, h) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_encodings(v, e, 2), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(publish(b, w, h) == 0);
	CHECK(publish(c, w, h) == 0);
	CHECK_INT(update_all(v, 1), 1);
	CHECK(fb_check(v, c, w, h, 0) == 0);
	/* and a non-incremental request after a planned copy */
	CHECK(publish(a, w, h) == 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK_INT(v->st.copyrect, 0);
	CHECK(fb_check(v, a, w, h, 0) == 0);
	fx_reset();
}

/* Two viewers, one with CopyRect and one without, one in sync and one
 * not: each gets what it can decode. */
TEST(copyrect_two_viewers)
{
	int32_t e1[2] = {RFB_ENC_COPYRECT, RFB_ENC_ZRLE}, e2[1] = {RFB_ENC_TIGHT};
	int w = 320, h = 192;
	struct viewer *v1, *v2, *v3;
	uint32_t *a, *b;

	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_NOISE, w, h, 41));
	CHECK(b = pic(1, PIC_SOLID, w, h, 0));
	shift(b, a, w, h, 64, 0, 0x00ff00);
	CHECK(publish(a, w, h) == 0);
	CHECK(v1 = viewer_open(0, 0));
	CHECK(v2 = viewer_open(1, 0));
	CHECK(v3 = viewer_open(2, 0));
	CHECK_INT(send_encodings(v1, e1, 2), 0);
	CHECK_INT(send_encodings(v2, e2, 1), 0);
	CHECK_INT(send_encodings(v3, e1, 2), 0);
	CHECK_INT(send_pf(v2, &pf_565be), 0);
	CHECK_INT(update_all(v1, 0), 1);
	CHECK_INT(update_all(v2, 0), 1);
	CHECK_INT(update(v3, 0, 0, 0, 64, 64), 1); /* v3 not in sync */
	CHECK(publish(b, w, h) == 0);
	CHECK_INT(update_all(v1, 1), 1);
	CHECK_INT(v1->st.copyrect, 4 * 3);
	CHECK(fb_check(v1, b, w, h, 0) == 0);
	CHECK_INT(update_all(v2, 1), 1);
	CHECK(fb_check(v2, b, w, h, 0) == 0);
	CHECK_INT(update_all(v3, 1), 1);
	CHECK_INT(v3->st.copyrect, 0);
	CHECK(fb_check(v3, b, w, h, 0) == 0);
	fx_reset();
}

/* A viewer that withdraws CopyRect (SetEncodings without it) between the
 * frame and its update must not get CopyRect: RFC 6143 7.5.2 lets the
 * server send Raw unasked, nothing else. */
TEST(copyrect_not_sent_once_withdrawn)
{
	int32_t e1[2] = {RFB_ENC_COPYRECT, RFB_ENC_RAW}, e2[1] = {RFB_ENC_RAW};
	int w = 320, h = 128;
	struct viewer *v;
	uint32_t *a, *b;

	CHECK(desk("d"));
	CHECK(a = pic(0, PIC_NOISE, w, h, 51));
	CHECK(b = pic(1, PIC_SOLID, w, h, 0));
	shift(b, a, w, h, 64, 0, 0x00ff00);
	CHECK(publish(a, w, h) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_encodings(v, e1, 2), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(publish(b, w, h) == 0);
	CHECK_INT(send_encodings(v, e2, 1), 0);
	CHECK_INT(update_all(v, 1), 1); /* and not one CopyRect in it */
	CHECK_INT(v->st.copyrect, 0);
	CHECK(fb_check(v, b, w, h, 0) == 0);
	fx_reset();
}

/* ===================================================================== */
/* ZRLE and Tight                                                        */
/* ===================================================================== */

static const int content_sizes[][2] = {
    {100, 70}, {1, 1}, {65, 129}, {64, 64}, {5, 2}, {300, 200}, {130, 64},
};
#define NSIZES ((int)(sizeof(content_sizes) / sizeof(content_sizes[0])))

/* One viewer through a frame of every kind (each change an incremental
 * update, zlib streams going on across them), then a full refresh in
 * another pixel format; sums the stats into *sum. */
static int content_run(const int32_t *enc, int nenc, const struct rfb_pf *pf, int w, int h,
		       struct stats *sum)
{
	struct viewer *v;
	uint32_t *px;

	NEED(desk("content"));
	NEED((px = pic(0, PIC_SOLID, w, h, 100)));
	NEED(publish(px, w, h) == 0);
	NEED((v = viewer_open(0, 0)));
	NEED(send_pf(v, pf) == 0 && send_encodings(v, enc, nenc) == 0);
	NEED(drain(v) == 0);
	NEED(update_all(v, 0) == 1 && fb_check(v, px, w, h, 0) == 0);
	for (int k = 0; k < PIC_KINDS; k++) {
		int i;
		paint(px, k, w, h, (uint32_t)k + 1);
		NEED(publish(px, w, h) == 0);
		if (update_all(v, 1) != 1 || fb_check(v, px, w, h, 0) < 0) {
			UNIT_FAIL("%dx%d, kind %d, %d bpp (depth %d)", w, h, k, pf->bpp, pf->depth);
			return -1;
		}
		for (i = 0; i < 256; i++)
			sum->zrle_sub[i] += v->st.zrle_sub[i];
		sum->tight_fill += v->st.tight_fill;
		sum->tight_copy += v->st.tight_copy;
		sum->tight_mono += v->st.tight_mono;
		sum->tight_indexed += v->st.tight_indexed;
		sum->tight_uncompressed += v->st.tight_uncompressed;
		sum->tight_jpeg += v->st.tight_jpeg;
	}
	NEED(send_pf(v, pf->bpp == 16 ? &pf_32be : &pf_565le) == 0);
	if (update_all(v, 0) != 1 || fb_check(v, px, w, h, 0) < 0) {
		UNIT_FAIL("%dx%d, after a new pixel format", w, h);
		return -1;
	}
	return 0;
}

TEST(zrle_every_format_size_and_content)
{
	static const int32_t enc[1] = {RFB_ENC_ZRLE};
	struct stats sum;
	int packed2 = 0, packed4 = 0, packed16 = 0, prle = 0;

	memset(&sum, 0, sizeof(sum));
	for (int p = 0; p < NPFS; p++)
		for (int s = 0; s < NSIZES; s++)
			if (content_run(enc, 1, all_pfs[p], content_sizes[s][0],
					content_sizes[s][1], &sum) < 0) {
				UNIT_FAIL("pixel format %d, size %dx%d", p, content_sizes[s][0],
					  content_sizes[s][1]);
				return;
			}
	packed2 = sum.zrle_sub[2];
	for (int i = 3; i <= 4; i++)
		packed4 += sum.zrle_sub[i];
	for (int i = 5; i <= 16; i++)
		packed16 += sum.zrle_sub[i];
	for (int i = 130; i < 256; i++)
		prle += sum.zrle_sub[i];
	/* every subencoding was decoded somewhere */
	CHECK(sum.zrle_sub[0] > 0); /* raw */
	CHECK(sum.zrle_sub[1] > 0); /* solid */
	CHECK(packed2 > 0);
	CHECK(packed4 > 0);
	CHECK(packed16 > 0);
	CHECK(sum.zrle_sub[128] > 0); /* plain RLE */
	CHECK(prle > 0);	      /* palette RLE */
	fx_reset();
}

TEST(tight_every_format_size_and_content)
{
	static const int32_t enc[1] = {RFB_ENC_TIGHT};
	struct stats sum;

	memset(&sum, 0, sizeof(sum));
	for (int p = 0; p < NPFS; p++)
		for (int s = 0; s < NSIZES; s++)
			if (content_run(enc, 1, all_pfs[p], content_sizes[s][0],
					content_sizes[s][1], &sum) < 0) {
				UNIT_FAIL("pixel format %d, size %dx%d", p, content_sizes[s][0],
					  content_sizes[s][1]);
				return;
			}
	CHECK(sum.tight_fill > 0);
	CHECK(sum.tight_mono > 0);
	CHECK(sum.tight_indexed > 0);
	CHECK(sum.tight_copy > 0);
	CHECK(sum.tight_uncompressed > 0);
	CHECK_INT(sum.tight_jpeg, 0); /* not asked for */
	fx_reset();
}

/* The zlib level pseudo-encodings (stored blocks at 0). */
TEST(zlib_levels)
{
	static const int32_t z0[2] = {RFB_ENC_ZRLE, RFB_ENC_COMPRESS_0};
	static const int32_t z9[2] = {RFB_ENC_ZRLE, RFB_ENC_COMPRESS_0 + 9};
	static const int32_t t0[2] = {RFB_ENC_TIGHT, RFB_ENC_COMPRESS_0};
	static const int32_t t9[2] = {RFB_ENC_TIGHT, RFB_ENC_COMPRESS_0 + 9};
	struct stats sum;

	memset(&sum, 0, sizeof(sum));
	CHECK(content_run(z0, 2, &pf_native, 300, 200, &sum) == 0);
	CHECK(content_run(z9, 2, &pf_565be, 300, 200, &sum) == 0);
	CHECK(content_run(t0, 2, &pf_native, 300, 200, &sum) == 0);
	CHECK(content_run(t9, 2, &pf_32be, 300, 200, &sum) == 0);
	fx_reset();
}

/* Rectangles wider than Tight's 2048 pixels are cut. */
TEST(tight_wide_frame_is_cut)
{
	static const int32_t enc[1] = {RFB_ENC_TIGHT};
	struct viewer *v;
	uint32_t *px;
	int w = 4200, h = 70;

	CHECK(desk("wide"));
	CHECK(px = pic(0, PIC_NOISE, w, h, 1));
	CHECK(publish(px, w, h) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_encodings(v, enc, 1), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, px, w, h, 0) == 0);
	for (int i = 0; i < v->nrects; i++)
		CHECK(v->rects[i].w <= 2048);
	paint(px, PIC_MIXED, w, h, 2);
	CHECK(publish(px, w, h) == 0);
	CHECK_INT(update_all(v, 1), 1);
	CHECK(fb_check(v, px, w, h, 0) == 0);
	fx_reset();
}

/* Tight JPEG (quality pseudo-encoding -32+Q) on photo-like pixels;
 * pieces of few colours stay lossless. */
static int jpeg_run(int32_t quality, const struct rfb_pf *pf, int w, int h, double min_psnr,
		    double *psnr)
{
	int32_t e[2] = {RFB_ENC_TIGHT, quality};
	struct viewer *v;
	uint32_t *px;

	NEED(desk("jpeg"));
	NEED((px = pic(0, PIC_PHOTO, w, h, 3)));
	/* below the first band of 64 rows: 16 colours, then solid */
	for (int y = 64; y < h; y++)
		for (int x = 0; x < w; x++)
			px[y * w + x] =
			    y < 128 ? pic_pixel(PIC_PAL16, x, y, 1) : pic_pixel(PIC_SOLID, x, y, 1);
	NEED(publish(px, w, h) == 0);
	NEED((v = viewer_open(0, 0)));
	NEED(send_pf(v, pf) == 0 && send_encodings(v, e, 2) == 0);
	NEED(update_all(v, 0) == 1);
	NEED(v->st.tight_jpeg > 0);
	NEED(fb_check(v, px, w, h, min_psnr) == 0);
	*psnr = v->psnr;
	/* all photo, as an incremental update */
	paint(px, PIC_PHOTO, w, h, 4);
	NEED(publish(px, w, h) == 0);
	NEED(update_all(v, 1) == 1);
	NEED(v->st.tight_jpeg > 0);
	NEED(fb_check(v, px, w, h, min_psnr) == 0);
	return 0;
}

TEST(tight_jpeg_within_tolerance)
{
	double q6, q9, q0, p565;

	CHECK(jpeg_run(RFB_ENC_QUALITY_0 + 6, &pf_native, 300, 200, 30, &q6) == 0); /* -26 */
	CHECK(jpeg_run(RFB_ENC_QUALITY_0 + 9, &pf_native, 300, 200, 40, &q9) == 0);
	CHECK(jpeg_run(RFB_ENC_QUALITY_0, &pf_native, 65, 129, 28, &q0) == 0);
	CHECK(jpeg_run(RFB_ENC_QUALITY_0 + 6, &pf_32be, 130, 70, 30, &q6) == 0);
	CHECK(jpeg_run(RFB_ENC_QUALITY_0 + 6, &pf_565le, 300, 200, 30, &p565) == 0);
	CHECK(q9 > q0);
	fx_reset();
}

/* No JPEG for an 8-bit viewer, whatever it asks. */
TEST(tight_jpeg_not_for_8_bit)
{
	int32_t e[2] = {RFB_ENC_TIGHT, RFB_ENC_QUALITY_0 + 6};
	struct viewer *v;
	uint32_t *px;

	for (int c = 0; c < 2; c++) {
		CHECK(desk("d"));
		CHECK(px = pic(0, PIC_PHOTO, 200, 100, 1));
		CHECK(publish(px, 200, 100) == 0);
		CHECK(v = viewer_open(0, 0));
		CHECK_INT(send_pf(v, c ? &pf_cmap8 : &pf_bgr233), 0);
		CHECK_INT(send_encodings(v, e, 2), 0);
		CHECK(drain(v) == 0);
		CHECK_INT(update_all(v, 0), 1);
		CHECK_INT(v->st.tight_jpeg, 0);
		CHECK(fb_check(v, px, 200, 100, 0) == 0);
	}
	fx_reset();
}

/* ===================================================================== */
/* DesktopSize                                                           */
/* ===================================================================== */

TEST(desktop_size_followed)
{
	int32_t e[3] = {RFB_ENC_ZRLE, RFB_ENC_COPYRECT, RFB_ENC_DESKTOP_SIZE};
	static const int sizes[][2] = {{150, 90}, {1, 1}, {640, 130}, {64, 64}};
	struct viewer *v;
	uint32_t *px;

	CHECK(desk("d"));
	CHECK(px = pic(0, PIC_MIXED, 300, 200, 1));
	CHECK(publish(px, 300, 200) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_encodings(v, e, 3), 0);
	CHECK_INT(update_all(v, 0), 1);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int w = sizes[i][0], h = sizes[i][1];
		CHECK_INT(update_all(v, 1), 0); /* waiting */
		CHECK(px = pic(0, PIC_MIXED, w, h, (uint32_t)i + 2));
		CHECK(publish(px, w, h) == 0);
		CHECK_INT(feed(v, NULL, 0), 0);
		CHECK_INT(drain(v), 1);
		CHECK_INT(v->st.desktop_size, 1);
		CHECK_INT(v->rects[0].enc, RFB_ENC_DESKTOP_SIZE); /* before any pixels */
		CHECK(v->rects[0].w == w && v->rects[0].h == h);
		CHECK(fb_check(v, px, w, h, 0) == 0);
		/* then updates at the new size, of what changed only */
		px[(h - 1) * w + w - 1] ^= 0x0f0f0f;
		CHECK(publish(px, w, h) == 0);
		CHECK_INT(update_all(v, 1), 1);
		CHECK_INT(v->st.desktop_size, 0);
		CHECK(rects_within_tiles(v, (w - 1) / 64, (h - 1) / 64, (w + 63) / 64,
					 (h + 63) / 64) == 0);
		CHECK(fb_check(v, px, w, h, 0) == 0);
	}
	fx_reset();
}

/* A resize with no request pending comes with the next request, even a
 * request for a part of the old screen. */
TEST(desktop_size_on_next_request)
{
	int32_t e[1] = {RFB_ENC_DESKTOP_SIZE};
	struct viewer *v;
	uint32_t *px;

	CHECK(desk("d"));
	CHECK(px = pic(0, PIC_MIXED, 300, 200, 1));
	CHECK(publish(px, 300, 200) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(send_encodings(v, e, 1), 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(px = pic(0, PIC_MIXED, 200, 300, 2));
	CHECK(publish(px, 200, 300) == 0);
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(update(v, 1, 0, 0, 10, 10), 1);
	CHECK_INT(v->st.desktop_size, 1);
	CHECK(fb_check(v, px, 200, 300, 0) == 0);
	fx_reset();
}

/* A viewer that cannot take a new size: its session ends. */
TEST(desktop_size_refused_ends_the_session)
{
	struct viewer *v, *w2;
	uint32_t *px;

	CHECK(desk("d"));
	CHECK(px = pic(0, PIC_MIXED, 300, 200, 1));
	CHECK(publish(px, 300, 200) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK(w2 = viewer_open(1, 0));
	CHECK_INT(update_all(v, 0), 1);
	CHECK_INT(update_all(v, 1), 0); /* waiting */
	CHECK(px = pic(0, PIC_MIXED, 310, 200, 2));
	CHECK(publish(px, 310, 200) == 0);
	CHECK(feed(v, NULL, 0) < 0);
	/* one without a request pending ends at its next one */
	CHECK_INT(feed(w2, NULL, 0), 0);
	CHECK(send_request(w2, 1, 0, 0, 300, 200) < 0);
	fx_reset();
}

/* rfb.h: "-errno for why the session ended"; put_update says -ENOTSUP
 * (the viewer cannot follow the new size), not a protocol error. */
TEST(desktop_size_refused_says_enotsup)
{
	struct viewer *v;
	uint32_t *px;

	CHECK(desk("d"));
	CHECK(px = pic(0, PIC_MIXED, 300, 200, 1));
	CHECK(publish(px, 300, 200) == 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(update_all(v, 0), 1);
	CHECK(px = pic(0, PIC_MIXED, 310, 200, 2));
	CHECK(publish(px, 310, 200) == 0);
	CHECK_INT(send_request(v, 1, 0, 0, 300, 200), -ENOTSUP);
	fx_reset();
}

/* ===================================================================== */
/* Input and cut text                                                    */
/* ===================================================================== */

TEST(input_reaches_the_desktop)
{
	struct viewer *v;
	struct buf *b = &fx.b[1];

	memset(&ilog, 0, sizeof(ilog));
	CHECK(desk("d"));
	rfb_desktop_set_input(fx.d, &log_ops, &ilog);
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	CHECK(v = viewer_open(0, 0));
	msg_key(b, 1, 0xff0d);
	msg_key(b, 0, 0x61);
	msg_key(b, 7, 0xffffffffu);
	msg_pointer(b, 0x85, 65535, 300);
	msg_pointer(b, 0, 0, 0);
	msg_cut(b, "h\xe9llo", 5);
	msg_cut(b, "", 0);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK_INT(ilog.keys, 3);
	CHECK(ilog.down[0] == 1 && ilog.keysym[0] == 0xff0d);
	CHECK(ilog.down[1] == 0 && ilog.keysym[1] == 0x61);
	CHECK(ilog.down[2] == 1 && ilog.keysym[2] == 0xffffffffu);
	CHECK_INT(ilog.pointers, 2);
	CHECK(ilog.buttons[0] == 0x85 && ilog.x[0] == 65535 && ilog.y[0] == 300);
	CHECK(ilog.buttons[1] == 0 && ilog.x[1] == 0 && ilog.y[1] == 0);
	CHECK_INT(ilog.cuts, 2);
	CHECK_INT(ilog.cut_len, 0);
	CHECK(memcmp(ilog.cut, "h\xe9llo", 5) == 0);
	/* without input ops: dropped, the session goes on */
	rfb_desktop_set_input(fx.d, NULL, NULL);
	msg_key(b, 1, 1);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(ilog.keys, 3);
	fx_reset();
}

TEST(input_dropped_when_view_only)
{
	struct viewer *v;
	struct buf *b = &fx.b[1];

	memset(&ilog, 0, sizeof(ilog));
	CHECK(desk("d"));
	rfb_desktop_set_input(fx.d, &log_ops, &ilog);
	CHECK(publish(pic(0, PIC_NOISE, 80, 80, 1), 80, 80) == 0);
	CHECK(v = viewer_open(0, RFB_VIEW_ONLY));
	msg_key(b, 1, 0xff0d);
	msg_pointer(b, 1, 10, 10);
	msg_cut(b, "secret", 6);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(ilog.keys + ilog.pointers + ilog.cuts, 0);
	CHECK_INT(update_all(v, 0), 1); /* it still sees */
	CHECK(fb_check(v, fx.px[0], 80, 80, 0) == 0);
	fx_reset();
}

/* Exactly RFB_MAX_CUT_TEXT is delivered; one more byte is skipped as it
 * streams past, and the message after it is handled. */
TEST(cut_text_oversized_is_skipped)
{
	static uint8_t body[RFB_MAX_CUT_TEXT + 1];
	struct viewer *v;
	struct buf *b = &fx.b[1];
	size_t off;

	memset(&ilog, 0, sizeof(ilog));
	memset(body, 'x', sizeof(body));
	CHECK(desk("d"));
	rfb_desktop_set_input(fx.d, &log_ops, &ilog);
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	CHECK(v = viewer_open(0, 0));

	msg_cut(b, (const char *)body, RFB_MAX_CUT_TEXT);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(ilog.cuts, 1);
	CHECK_INT(ilog.cut_len, RFB_MAX_CUT_TEXT);

	msg_cut(b, NULL, RFB_MAX_CUT_TEXT + 1);
	CHECK_INT(feed_buf(v, b), 0);
	for (off = 0; off + 4096 + 100 < sizeof(body); off += 4096)
		CHECK_INT(feed(v, body + off, 4096), 0);
	msg_key(b, 1, 0x41); /* still inside the text: skipped with it */
	CHECK_INT(feed_buf(v, b), 0);
	off += 8;
	buf_put(b, body, sizeof(body) - off); /* the rest, then a key */
	msg_key(b, 1, 0x42);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(ilog.cuts, 1);
	CHECK_INT(ilog.keys, 1);
	CHECK_INT(ilog.keysym[0], 0x42);
	CHECK_INT(update_all(v, 0), 1);
	fx_reset();
}

/* A length of 0xffffffff: 4 GiB skipped through 1 MiB pieces, never held. */
TEST(cut_text_length_ffffffff)
{
	static uint8_t zeros[1 << 20];
	struct viewer *v;
	struct buf *b = &fx.b[1];
	uint64_t left = 0xffffffffu;

	memset(&ilog, 0, sizeof(ilog));
	CHECK(desk("d"));
	rfb_desktop_set_input(fx.d, &log_ops, &ilog);
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	CHECK(v = viewer_open(0, 0));
	msg_cut(b, NULL, 0xffffffffu);
	CHECK_INT(feed_buf(v, b), 0);
	while (left > sizeof(zeros)) {
		CHECK_INT(feed(v, zeros, sizeof(zeros)), 0);
		left -= sizeof(zeros);
	}
	buf_put(b, zeros, (size_t)left);
	msg_key(b, 0, 0x43);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(ilog.cuts, 0);
	CHECK_INT(ilog.keys, 1);
	CHECK_INT(ilog.keysym[0], 0x43);
	fx_reset();
}

TEST(server_cut_text_to_every_viewer)
{
	static uint8_t big[RFB_MAX_CUT_TEXT + 10];
	struct viewer *v1, *v2, *v3;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	CHECK(v1 = viewer_open(0, 0));
	CHECK(v2 = viewer_open(1, RFB_VIEW_ONLY));
	CHECK(v3 = viewer_new(2, 0)); /* still in its handshake */
	CHECK_INT(feed(v3, NULL, 0), 0);
	buf_reset(&v3->out);
	rfb_desktop_cut_text(fx.d, "clip\xe9", 5);
	CHECK_INT(feed(v1, NULL, 0), 0);
	CHECK(take(v1, "\3\0\0\0\0\0\0\5clip\xe9", 13) == 0);
	CHECK_INT(feed(v1, NULL, 0), 0); /* once */
	CHECK_INT(buf_avail(&v1->out), 0);
	CHECK_INT(feed(v2, NULL, 0), 0);
	CHECK_INT(drain(v2), 0);
	CHECK_INT(v2->st.cuts, 1);
	CHECK(v2->cut_len == 5 && memcmp(v2->cut, "clip\xe9", 5) == 0);
	/* after ServerInit for a viewer that was not there yet */
	CHECK_INT(feed(v3, "RFB 003.008\n", 12), 0);
	CHECK_INT(feed(v3, "\1", 1), 0);
	buf_reset(&v3->out);
	CHECK_INT(feed(v3, "\1", 1), 0);
	CHECK(server_init(v3) == 0);
	CHECK_INT(drain(v3), 0);
	CHECK_INT(v3->st.cuts, 1);
	/* the latest text wins; an empty one is sent too */
	rfb_desktop_cut_text(fx.d, "one", 3);
	rfb_desktop_cut_text(fx.d, "", 0);
	CHECK_INT(feed(v1, NULL, 0), 0);
	CHECK(take(v1, "\3\0\0\0\0\0\0\0", 8) == 0);
	/* beyond RFB_MAX_CUT_TEXT: cut there */
	memset(big, 'b', sizeof(big));
	rfb_desktop_cut_text(fx.d, (const char *)big, sizeof(big));
	CHECK_INT(feed(v1, NULL, 0), 0);
	CHECK_INT(drain(v1), 0);
	CHECK_INT(v1->st.cuts, 1);
	CHECK_INT(v1->cut_len, RFB_MAX_CUT_TEXT);
	fx_reset();
}

/* ===================================================================== */
/* Hostile input                                                         */
/* ===================================================================== */

TEST(unknown_message_type_ends_the_session)
{
	static const uint8_t types[] = {1, 7, 8, 9, 127, 150, 250, 255};

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	for (size_t i = 0; i < sizeof(types); i++) {
		struct viewer *v = viewer_open((int)i, 0);
		uint8_t m[32] = {types[i]};
		CHECK(v);
		if (feed(v, m, sizeof(m)) != -EPROTO) {
			UNIT_FAIL("message type %u: %d", types[i], v->rc);
			return;
		}
	}
	fx_reset();
}

/* The same messages whole and one byte at a time: the same bytes back,
 * the same input delivered. */
static int run_script(struct viewer *v, const uint8_t *p, size_t n, size_t piece)
{
	for (size_t off = 0; off < n; off += piece)
		NEED(feed(v, p + off, n - off < piece ? n - off : piece) == 0);
	return 0;
}

TEST(messages_split_at_every_byte)
{
	static const int32_t e[3] = {RFB_ENC_ZRLE, RFB_ENC_COPYRECT, RFB_ENC_DESKTOP_SIZE};
	static const size_t pieces[] = {1, 2, 3, 7, 64, 1 << 20};
	struct buf *script = &fx.b[1];
	struct input_log first;
	struct viewer *v;
	uint8_t *ref = NULL;
	size_t ref_len = 0;

	CHECK(desk("d"));
	rfb_desktop_set_input(fx.d, &log_ops, &ilog);
	CHECK(publish(pic(0, PIC_MIXED, 200, 130, 1), 200, 130) == 0);
	msg_pf(script, &pf_565be);
	msg_encodings(script, e, 3);
	msg_key(script, 1, 0xffe1);
	msg_pointer(script, 3, 199, 129);
	msg_cut(script, "split", 5);
	msg_key(script, 0, 0xffe1);
	msg_cut(script, NULL, RFB_MAX_CUT_TEXT + 3);
	for (uint32_t i = 0; i < RFB_MAX_CUT_TEXT + 3; i++)
		buf_put_u8(script, (uint8_t)i);
	msg_request(script, 0, 0, 0, 200, 130);

	for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
		memset(&ilog, 0, sizeof(ilog));
		CHECK(v = viewer_open((int)k, 0));
		CHECK(run_script(v, buf_head(script), buf_avail(script), pieces[k]) == 0);
		if (!ref) {
			CHECK(ref = malloc(buf_avail(&v->out)));
			fx.px[5] = (uint32_t *)(void *)ref;
			ref_len = buf_avail(&v->out);
			memcpy(ref, buf_head(&v->out), ref_len);
			first = ilog;
		} else if (buf_avail(&v->out) != ref_len ||
			   memcmp(buf_head(&v->out), ref, ref_len)) {
			UNIT_FAIL("in pieces of %zu: %zu bytes back, %zu whole", pieces[k],
				  buf_avail(&v->out), ref_len);
			return;
		}
		CHECK(ilog.keys == first.keys && ilog.pointers == first.pointers &&
		      ilog.cuts == first.cuts && ilog.cut_len == first.cut_len);
		CHECK(!memcmp(ilog.keysym, first.keysym, sizeof(ilog.keysym)) &&
		      !memcmp(ilog.down, first.down, sizeof(ilog.down)) &&
		      !memcmp(ilog.buttons, first.buttons, sizeof(ilog.buttons)) &&
		      !memcmp(ilog.x, first.x, sizeof(ilog.x)) &&
		      !memcmp(ilog.y, first.y, sizeof(ilog.y)) &&
		      !memcmp(ilog.cut, first.cut, sizeof(ilog.cut)));
		v->pf = pf_565be;
		memcpy(v->enc, e, sizeof(e));
		v->nenc = 3;
		CHECK_INT(drain(v), 1);
		CHECK(fb_check(v, fx.px[0], 200, 130, 0) == 0);
	}
	CHECK_INT(first.keys, 2);
	CHECK_INT(first.pointers, 1);
	CHECK_INT(first.cuts, 1);
	fx_reset();
}

/* The whole session, handshake included, one byte at a time. */
TEST(handshake_split_at_every_byte)
{
	static const char hs[] = "RFB 003.008\n\1\1";
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_MIXED, 100, 100, 1), 100, 100) == 0);
	CHECK(v = viewer_new(0, 0));
	CHECK(run_script(v, (const uint8_t *)hs, sizeof(hs) - 1, 1) == 0);
	CHECK(take_prefix(v, "RFB 003.008\n\1\1\0\0\0\0", 18) == 0);
	CHECK(server_init(v) == 0);
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, fx.px[0], 100, 100, 0) == 0);
	fx_reset();
}

/* A viewer that sends its first messages right behind ClientInit (it
 * need not wait for ServerInit to ask for its encodings and an update):
 * "bytes fed are handled at once" (rfb.h), so fed whole they must give
 * what they give one byte at a time: ServerInit, then the update. */
TEST(messages_right_after_client_init)
{
	static const int32_t e[1] = {RFB_ENC_ZRLE};
	struct buf *script = &fx.b[1];
	struct viewer *v;
	size_t n_bytewise;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_MIXED, 100, 100, 1), 100, 100) == 0);
	buf_put(script, "RFB 003.008\n\1\1", 14);
	msg_encodings(script, e, 1);
	msg_request(script, 0, 0, 0, 100, 100);

	CHECK(v = viewer_new(0, 0));
	CHECK(run_script(v, buf_head(script), buf_avail(script), 1) == 0);
	n_bytewise = buf_avail(&v->out);

	CHECK(v = viewer_new(1, 0));
	CHECK(run_script(v, buf_head(script), buf_avail(script), buf_avail(script)) == 0);
	CHECK(take_prefix(v, "RFB 003.008\n\1\1\0\0\0\0", 18) == 0);
	CHECK(server_init(v) == 0);
	v->enc[0] = RFB_ENC_ZRLE;
	v->nenc = 1;
	CHECK_INT(buf_avail(&v->out) + 18 + 24 + 1, n_bytewise);
	CHECK_INT(drain(v), 1); /* the update, in this same call */
	CHECK(fb_check(v, fx.px[0], 100, 100, 0) == 0);
	fx_reset();
}

/* Input before the first frame (after ClientInit) is held, up to a bound. */
TEST(early_input_is_bounded)
{
	static uint8_t junk[4097];
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.008\n", 8) == 0);
	CHECK_INT(feed(v, junk, 4096), 0);
	CHECK_INT(feed(v, junk, 1), -EPROTO);
	CHECK(v = viewer_new(1, 0));
	CHECK(handshake_as(v, "RFB 003.008\n", 8) == 0);
	CHECK_INT(feed(v, junk, sizeof(junk)), -EPROTO);
	fx_reset();
}

/* What was held is handled once ServerInit is out: the request it held
 * is answered when the frame comes, as it would be for bytes fed after. */
TEST(early_input_handled_after_the_first_frame)
{
	static const int32_t e[1] = {RFB_ENC_TIGHT};
	struct buf *b = &fx.b[1];
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.008\n", 8) == 0);
	msg_encodings(b, e, 1);
	msg_request(b, 0, 0, 0, 100, 100);
	CHECK_INT(feed_buf(v, b), 0);
	CHECK_INT(buf_avail(&v->out), 0);
	CHECK(publish(pic(0, PIC_MIXED, 100, 100, 1), 100, 100) == 0);
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK(server_init(v) == 0);
	v->enc[0] = RFB_ENC_TIGHT;
	v->nenc = 1;
	CHECK_INT(drain(v), 1); /* ServerInit and the update, in this same call */
	CHECK(fb_check(v, fx.px[0], 100, 100, 0) == 0);
	fx_reset();
}

/* ===================================================================== */
/* Desktops                                                              */
/* ===================================================================== */

TEST(frame_arguments_checked)
{
	uint32_t *px;

	CHECK(desk("d"));
	CHECK(px = pic(0, PIC_SOLID, 8192, 2, 1));
	CHECK_INT(rfb_desktop_frame(fx.d, px, 0, 1, 1), -EINVAL);
	CHECK_INT(rfb_desktop_frame(fx.d, px, 1, 0, 1), -EINVAL);
	CHECK_INT(rfb_desktop_frame(fx.d, px, -1, 1, 1), -EINVAL);
	CHECK_INT(rfb_desktop_frame(fx.d, px, 8193, 1, 8193), -EINVAL);
	CHECK_INT(rfb_desktop_frame(fx.d, px, 1, 8193, 1), -EINVAL);
	CHECK_INT(rfb_desktop_frame(fx.d, px, 10, 1, 9), -EINVAL);
	CHECK_INT(rfb_desktop_frame(fx.d, px, 8192, 2, 8192), 0);
	CHECK_INT(rfb_desktop_frame(fx.d, px, 100, 100, 163), 0); /* a stride wider than w */
	fx_reset();
}

/* A frame read with a stride wider than its width. */
TEST(frame_with_stride)
{
	struct viewer *v;
	uint32_t *big, *px;

	CHECK(desk("d"));
	CHECK(big = pic(0, PIC_MIXED, 250, 150, 1));
	CHECK(px = pic(1, PIC_SOLID, 200, 130, 1));
	for (int y = 0; y < 130; y++)
		memcpy(px + y * 200, big + y * 250, 200 * 4);
	CHECK_INT(rfb_desktop_frame(fx.d, big, 200, 130, 250), 0);
	CHECK(v = viewer_open(0, 0));
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, px, 200, 130, 0) == 0);
	big[100 * 250 + 100] ^= 0xffffff;
	px[100 * 200 + 100] ^= 0xffffff;
	CHECK_INT(rfb_desktop_frame(fx.d, big, 200, 130, 250), 0);
	CHECK_INT(update_all(v, 1), 1);
	CHECK_INT(v->nrects, 1);
	CHECK(fb_check(v, px, 200, 130, 0) == 0);
	fx_reset();
}

/* The desktop lives while a session holds it, whoever made it. */
TEST(desktop_outlives_its_first_reference)
{
	struct viewer *v;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_MIXED, 100, 70, 1), 100, 70) == 0);
	CHECK(v = viewer_open(0, 0));
	rfb_desktop_ref(fx.d);
	rfb_desktop_unref(fx.d);
	rfb_desktop_unref(fx.d); /* the creator's: the session's is left */
	fx.d = NULL;
	CHECK_INT(update_all(v, 0), 1);
	CHECK(fb_check(v, fx.px[0], 100, 70, 0) == 0);
	fx_reset(); /* the session's goes with it */
}

TEST(viewer_limit_and_close)
{
	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 8, 8, 1), 8, 8) == 0);
	for (int i = 0; i < RFB_MAX_VIEWERS; i++)
		CHECK(viewer_new(i, 0));
	CHECK_INT(rfb_desktop_viewers(fx.d), RFB_MAX_VIEWERS);
	CHECK(!rfb_session_new(fx.d, 0));
	viewer_free(fx.v[3]);
	fx.v[3] = NULL;
	CHECK_INT(rfb_desktop_viewers(fx.d), RFB_MAX_VIEWERS - 1);
	CHECK(viewer_open(3, 0));
	rfb_desktop_close(fx.d);
	CHECK_INT(feed(fx.v[3], NULL, 0), -ESHUTDOWN);
	CHECK_INT(feed(fx.v[0], NULL, 0), -ESHUTDOWN);
	CHECK(!rfb_session_new(fx.d, 0));
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), -1);
	fx_reset();
}

/* The source captures only while some viewer waits. */
TEST(demand_follows_waiting_viewers)
{
	struct viewer *v;
	struct pollfd pfd;
	uint64_t junk;

	CHECK(desk("d"));
	pfd.fd = rfb_desktop_demand_fd(fx.d);
	pfd.events = POLLIN;
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 20), 0);
	CHECK(v = viewer_new(0, 0));
	CHECK(handshake_as(v, "RFB 003.008\n", 8) == 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 1); /* for ServerInit */
	CHECK_INT(poll(&pfd, 1, 0), 1);
	CHECK_INT(read(pfd.fd, &junk, sizeof(junk)), 8);
	CHECK(publish(pic(0, PIC_NOISE, 70, 70, 1), 70, 70) == 0);
	CHECK_INT(feed(v, NULL, 0), 0);
	CHECK(server_init(v) == 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 0); /* no request */
	CHECK_INT(update_all(v, 0), 1);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 0);
	CHECK_INT(update_all(v, 1), 0);
	CHECK_INT(rfb_desktop_wait_demand(fx.d, 0), 1);
	CHECK_INT(poll(&pfd, 1, 0), 1);
	fx_reset();
}

/* ===================================================================== */
/* rfb_serve and rfb_refuse on a socket                                  */
/* ===================================================================== */

static int read_full(int fd, void *p, size_t n, int timeout_ms)
{
	uint8_t *b = p;

	while (n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t k;
		if (poll(&pfd, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		k = read(fd, b, n);
		if (k <= 0)
			return k == 0 ? -ECONNRESET : -errno;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* n bytes from fd onto the viewer's input. */
static int recv_into(struct viewer *v, int fd, size_t n, int timeout_ms)
{
	NEED(buf_reserve(&v->out, n) == 0);
	if (read_full(fd, buf_tail(&v->out), n, timeout_ms) < 0)
		return -1;
	v->out.len += n;
	return 0;
}

struct serve_arg {
	struct rfb_desktop *d;
	int fd, rc;
	unsigned flags;
};

static void *serve_thread(void *p)
{
	struct serve_arg *a = p;

	a->rc = rfb_serve(a->d, a->fd, a->flags);
	return NULL;
}

/* Up to ServerInit on a socket: 0 or -1. */
static int socket_handshake(struct viewer *v, int fd)
{
	uint8_t b[24];

	NEED(read_full(fd, b, 12, 5000) == 0 && memcmp(b, "RFB 003.008\n", 12) == 0);
	NEED(write(fd, "RFB 003.008\n", 12) == 12);
	NEED(read_full(fd, b, 2, 5000) == 0 && memcmp(b, "\1\1", 2) == 0);
	NEED(write(fd, "\1", 1) == 1);
	NEED(read_full(fd, b, 4, 5000) == 0 && memcmp(b, "\0\0\0\0", 4) == 0);
	NEED(write(fd, "\1", 1) == 1);
	NEED(recv_into(v, fd, 24, 5000) == 0);
	NEED(recv_into(v, fd, get_be32(buf_head(&v->out) + 20), 5000) == 0);
	return server_init(v);
}

static int send_buf(int fd, struct buf *b)
{
	ssize_t n = write(fd, buf_head(b), buf_avail(b));
	int ok = n == (ssize_t)buf_avail(b) ? 0 : -1;

	buf_reset(b);
	return ok;
}

TEST(serve_on_a_socket)
{
	struct serve_arg a = {.rc = 1};
	struct viewer *v;
	pthread_t t;
	int sv[2];
	uint32_t *px;

	CHECK(desk("served"));
	CHECK(px = pic(0, PIC_NOISE, 100, 70, 1));
	CHECK(publish(px, 100, 70) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	a.d = fx.d;
	a.fd = sv[1];
	CHECK(pthread_create(&t, NULL, serve_thread, &a) == 0);
	CHECK(v = fx.v[0] = viewer_alloc());
	if (socket_handshake(v, sv[0]) == 0) {
		CHECK_STR(v->name, "served");
		msg_request(&fx.b[0], 0, 0, 0, 100, 70);
		CHECK(send_buf(sv[0], &fx.b[0]) == 0);
		/* Raw: a rectangle per band of tiles */
		CHECK(recv_into(v, sv[0], 4 + 2 * 12 + 100 * 70 * 4, 5000) == 0);
		CHECK_INT(drain(v), 1);
		CHECK(fb_check(v, px, 100, 70, 0) == 0);
		msg_request(&fx.b[0], 1, 0, 0, 100, 70);
		CHECK(send_buf(sv[0], &fx.b[0]) == 0);
		CHECK_INT(rfb_desktop_wait_demand(fx.d, 5000), 1);
		px[5] ^= 0xffffff;
		CHECK(publish(px, 100, 70) == 0);
		CHECK(recv_into(v, sv[0], 4 + 12 + 64 * 64 * 4, 5000) == 0);
		CHECK_INT(drain(v), 1);
		CHECK(fb_check(v, px, 100, 70, 0) == 0);
	}
	close(sv[0]); /* the viewer leaves */
	pthread_join(t, NULL);
	CHECK_INT(a.rc, 0);
	CHECK(!unit_failed_now);
	CHECK_INT(rfb_desktop_viewers(fx.d), 0);
	fx_reset();
}

TEST(serve_ends_when_the_desktop_closes)
{
	struct serve_arg a = {.rc = 1};
	struct viewer *v;
	pthread_t t;
	int sv[2];
	uint8_t b;

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 10, 10, 1), 10, 10) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	a.d = fx.d;
	a.fd = sv[1];
	CHECK(pthread_create(&t, NULL, serve_thread, &a) == 0);
	CHECK(v = fx.v[0] = viewer_alloc());
	if (socket_handshake(v, sv[0]) == 0) {
		rfb_desktop_close(fx.d);
		CHECK_INT(read_full(sv[0], &b, 1, 5000), -ECONNRESET);
	}
	close(sv[0]);
	pthread_join(t, NULL);
	CHECK_INT(a.rc, -ESHUTDOWN);
	fx_reset();
}

/* messages_right_after_client_init on a socket: the viewer waits for its
 * update without sending anything more, so it must come unprompted. */
TEST(serve_answers_a_request_sent_with_client_init)
{
	struct serve_arg a = {.rc = 1};
	struct viewer *v;
	pthread_t t;
	int sv[2], got;
	uint8_t b[24];

	CHECK(desk("d"));
	CHECK(publish(pic(0, PIC_SOLID, 10, 10, 1), 10, 10) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	a.d = fx.d;
	a.fd = sv[1];
	CHECK(pthread_create(&t, NULL, serve_thread, &a) == 0);
	CHECK(v = fx.v[0] = viewer_alloc());
	got = read_full(sv[0], b, 12, 5000) == 0 && write(sv[0], "RFB 003.008\n", 12) == 12 &&
	      read_full(sv[0], b, 2, 5000) == 0;
	if (got) {
		buf_put(&fx.b[0], "\1\1", 2); /* None, ClientInit, and at once: */
		msg_request(&fx.b[0], 0, 0, 0, 10, 10);
		got = send_buf(sv[0], &fx.b[0]) == 0 && read_full(sv[0], b, 4, 5000) == 0 &&
		      recv_into(v, sv[0], 24 + 1, 5000) == 0 && server_init(v) == 0;
		if (got) /* Raw, 10x10 */
			got = recv_into(v, sv[0], 4 + 12 + 400, 1000) == 0 ? 2 : 1;
	}
	close(sv[0]);
	pthread_join(t, NULL);
	CHECK(got >= 1);
	CHECK_INT(got, 2); /* the update, within a second */
	CHECK_INT(drain(v), 1);
	fx_reset();
}

/* A request that comes while the previous update is still going out (a
 * viewer that asks for the next update as the last one starts, as
 * TigerVNC does), with a change to send: answered once the output has
 * drained, without waiting for more input or another change. */
TEST(serve_answers_a_request_made_while_sending)
{
	struct serve_arg a = {.rc = 1};
	struct pollfd pfd;
	struct viewer *v;
	pthread_t t;
	int sv[2], w = 1024, h = 768, got = 0;
	uint32_t *px;

	CHECK(desk("d"));
	CHECK(px = pic(0, PIC_NOISE, w, h, 1));
	CHECK(publish(px, w, h) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	a.d = fx.d;
	a.fd = sv[1];
	CHECK(pthread_create(&t, NULL, serve_thread, &a) == 0);
	CHECK(v = fx.v[0] = viewer_alloc());
	if (socket_handshake(v, sv[0]) == 0) {
		msg_request(&fx.b[0], 0, 0, 0, w, h); /* 3 MiB of Raw: more than the socket holds */
		pfd.fd = sv[0];
		pfd.events = POLLIN;
		if (send_buf(sv[0], &fx.b[0]) == 0 && poll(&pfd, 1, 5000) == 1) {
			msg_request(&fx.b[0], 1, 0, 0, w, h);
			got = send_buf(sv[0], &fx.b[0]) == 0 &&
			      rfb_desktop_wait_demand(fx.d, 5000) == 1;
		}
		if (got) {
			px[0] ^= 0xffffff; /* tile 0,0 */
			got = publish(px, w, h) == 0;
			usleep(100 * 1000);
		}
		if (got)
			got = recv_into(v, sv[0], 4 + (size_t)h / 64 * 12 + (size_t)w * h * 4,
					5000) == 0 &&
			      drain(v) == 1;
		if (got) /* the second update, the changed tile */
			got = recv_into(v, sv[0], 4 + 12 + 64 * 64 * 4, 1000) == 0 ? 2 : 1;
	}
	close(sv[0]);
	pthread_join(t, NULL);
	CHECK(got >= 1);
	CHECK_INT(got, 2); /* within a second */
	CHECK_INT(drain(v), 1);
	CHECK(fb_check(v, px, w, h, 0) == 0);
	fx_reset();
}

TEST(refuse_tells_the_reason)
{
	static const char *const versions[] = {"RFB 003.008\n", "RFB 003.007\n", "RFB 003.003\n"};

	for (int i = 0; i < 3; i++) {
		int sv[2];
		uint8_t b[64];
		uint32_t len;
		CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
		CHECK(write(sv[0], versions[i], 12) == 12); /* before the server asks */
		CHECK_INT(rfb_refuse(sv[1], "display busy"), 0);
		CHECK(read_full(sv[0], b, 12, 1000) == 0 && !memcmp(b, "RFB 003.008\n", 12));
		if (i < 2) {
			CHECK(read_full(sv[0], b, 1, 1000) == 0 && b[0] == 0); /* no types */
		} else {
			CHECK(read_full(sv[0], b, 4, 1000) == 0 && get_be32(b) == 0); /* failed */
		}
		CHECK(read_full(sv[0], b, 4, 1000) == 0);
		len = get_be32(b);
		CHECK_INT(len, 12);
		CHECK(read_full(sv[0], b, len, 1000) == 0 && !memcmp(b, "display busy", 12));
		CHECK_INT(read_full(sv[0], b, 1, 1000), -ECONNRESET);
		close(sv[0]);
	}
}
