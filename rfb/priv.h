/* Inside the RFB server: wire constants, pixel formats, the encoders. */
#ifndef METAC_RFB_PRIV_H
#define METAC_RFB_PRIV_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "lib/buf.h"

/* Client-to-server messages. */
enum {
	RFB_SET_PIXEL_FORMAT = 0,
	RFB_SET_ENCODINGS = 2,
	RFB_FB_UPDATE_REQUEST = 3,
	RFB_KEY_EVENT = 4,
	RFB_POINTER_EVENT = 5,
	RFB_CLIENT_CUT_TEXT = 6,
};

/* Server-to-client messages. */
enum {
	RFB_FB_UPDATE = 0,
	RFB_SET_COLOUR_MAP = 1,
	RFB_SERVER_CUT_TEXT = 3,
};

/* Encodings and pseudo-encodings (signed on the wire). */
enum {
	RFB_ENC_RAW = 0,
	RFB_ENC_COPYRECT = 1,
	RFB_ENC_TIGHT = 7,
	RFB_ENC_ZRLE = 16,
	RFB_ENC_DESKTOP_SIZE = -223,
	RFB_ENC_QUALITY_0 = -32,  /* .. -23: JPEG quality levels 0..9 */
	RFB_ENC_COMPRESS_0 = -256, /* .. -247: zlib levels 0..9 */
};

struct rfb_pf {
	uint8_t bpp, depth, big_endian, true_colour;
	uint16_t rmax, gmax, bmax;
	uint8_t rshift, gshift, bshift;
};

/* The frame an encoder reads: pixels 0x00RRGGBB. */
struct rfb_frame {
	const uint32_t *px;
	int w, h;
	size_t stride;
};

/* One session's encoder state: its pixel format and zlib streams. */
struct rfb_enc {
	struct rfb_pf pf;
	uint32_t rtab[256], gtab[256], btab[256]; /* intensity -> channel bits */
	int native;      /* pf is 32 bpp 0x00RRGGBB little-endian: rows as they are */
	int jpeg_quality; /* 1..100, 0 for no JPEG */
	int jpeg_subsamp; /* chroma: 0 full, 1 halved across (4:2:2), 2 halved both ways */
	int zlevel;      /* 0..9 */
	z_stream zrle, tight[4];
	unsigned zrle_on : 1, tight_on : 4;
	struct buf zout; /* Tight's compressed data, before its length */
	uint8_t *tmp; /* scratch for data before compression */
	size_t tmp_cap;
};

/* The server's own pixel format (ServerInit): 32 bpp, depth 24,
 * little-endian, 0x00RRGGBB. */
extern const struct rfb_pf rfb_pf_native;

/* 0 if pf is one this server can send, else -EINVAL. */
int rfb_pf_check(const struct rfb_pf *pf);
void rfb_pf_read(struct rfb_pf *pf, const uint8_t p[16]);
void rfb_pf_write(const struct rfb_pf *pf, uint8_t p[16]);

void rfb_enc_init(struct rfb_enc *e);
void rfb_enc_set_pf(struct rfb_enc *e, const struct rfb_pf *pf);
void rfb_enc_free(struct rfb_enc *e);

/* Each appends whole rectangles (header included) to out and returns how
 * many, or -errno. The area must lie inside the frame. */
int rfb_enc_raw(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		struct buf *out);
int rfb_enc_zrle(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		 struct buf *out);
int rfb_enc_tight(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w, int h,
		  struct buf *out);
int rfb_enc_copyrect(struct buf *out, int x, int y, int w, int h, int sx, int sy);
int rfb_rect_header(struct buf *out, int x, int y, int w, int h, int32_t enc);

#endif
