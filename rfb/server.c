/*
 * The RFB server: desktops (the shared frame and what each viewer has not
 * seen of it) and sessions (one viewer: handshake, messages, updates).
 * See rfb.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "rfb/priv.h"
#include "rfb/rfb.h"

#define READ_CHUNK 65536
/* Input waiting to be parsed before the handshake ends. */
#define MAX_EARLY_INPUT 4096

enum state {
	ST_VERSION,
	ST_SECURITY,
	ST_CLIENT_INIT,
	ST_WAIT_FRAME, /* ServerInit goes out with the first frame */
	ST_NORMAL,
};

struct rfb_session {
	struct rfb_desktop *d;
	struct rfb_session *next;
	unsigned flags;
	int evfd; /* -1 for a session fed by hand */
	enum state state;
	int minor, greeted;
	struct buf in;
	uint32_t cut_skip; /* bytes of an oversized cut text still to drop */

	/* The viewer's choices. */
	struct rfb_enc enc;
	int32_t encoding;
	int copyrect, desktop_size, colour_map_due;
	int req, req_incr, rx, ry, rw, rh;

	/* Under the desktop's lock. */
	int fb_w, fb_h;   /* the size the viewer knows */
	int tiles_w, tiles_h;
	uint8_t *dirty;   /* per tile: changed since sent */
	int32_t *copy_from; /* per dirty tile: a tile of the frame the viewer has
			     * with the same pixels, or -1 */
	int ndirty, ncopies;
	int waiting;      /* wants an update (or ServerInit) and has nothing */
	int failed;       /* -errno once the session must end */
	char *cut;        /* desktop cut text to send */
	size_t cut_len;
};

struct rfb_desktop {
	pthread_mutex_t lock;
	pthread_cond_t demand;
	pthread_mutex_t input_lock;
	int demand_fd; /* an eventfd: some viewer started waiting */
	int refs;
	char name[256];
	uint32_t *fb;
	int w, h, tiles_w, tiles_h;
	uint64_t *hash; /* per tile of fb */
	int have_frame, closed, nsessions;
	struct rfb_session *sessions;
	const struct rfb_input_ops *ops;
	void *ops_arg;
};

/* --- desktops ------------------------------------------------------ */

struct rfb_desktop *rfb_desktop_new(const char *name)
{
	struct rfb_desktop *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->input_lock, NULL);
	pthread_cond_init(&d->demand, NULL);
	d->refs = 1;
	if ((d->demand_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		free(d);
		return NULL;
	}
	snprintf(d->name, sizeof(d->name), "%s", name);
	return d;
}

void rfb_desktop_set_input(struct rfb_desktop *d, const struct rfb_input_ops *ops, void *arg)
{
	pthread_mutex_lock(&d->input_lock);
	d->ops = ops;
	d->ops_arg = arg;
	pthread_mutex_unlock(&d->input_lock);
}

void rfb_desktop_ref(struct rfb_desktop *d)
{
	pthread_mutex_lock(&d->lock);
	d->refs++;
	pthread_mutex_unlock(&d->lock);
}

void rfb_desktop_unref(struct rfb_desktop *d)
{
	int last;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	last = --d->refs == 0;
	pthread_mutex_unlock(&d->lock);
	if (!last)
		return;
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->input_lock);
	pthread_cond_destroy(&d->demand);
	close(d->demand_fd);
	free(d->fb);
	free(d->hash);
	free(d);
}

int rfb_desktop_demand_fd(struct rfb_desktop *d)
{
	return d->demand_fd;
}

static void wake(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
		/* the counter is full: it is awake already */
	}
}

static void session_wake(struct rfb_session *s)
{
	wake(s->evfd);
}

void rfb_desktop_close(struct rfb_desktop *d)
{
	struct rfb_session *s;

	pthread_mutex_lock(&d->lock);
	d->closed = 1;
	for (s = d->sessions; s; s = s->next)
		session_wake(s);
	pthread_cond_broadcast(&d->demand);
	wake(d->demand_fd);
	pthread_mutex_unlock(&d->lock);
}

int rfb_desktop_viewers(struct rfb_desktop *d)
{
	int n;

	pthread_mutex_lock(&d->lock);
	n = d->nsessions;
	pthread_mutex_unlock(&d->lock);
	return n;
}

static int any_waiting(const struct rfb_desktop *d)
{
	const struct rfb_session *s;

	for (s = d->sessions; s; s = s->next)
		if (s->waiting)
			return 1;
	return 0;
}

int rfb_desktop_wait_demand(struct rfb_desktop *d, int timeout_ms)
{
	struct timespec until;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	if (timeout_ms >= 0) {
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&d->lock);
	while (!d->closed && !any_waiting(d) && r == 0)
		r = timeout_ms < 0 ? pthread_cond_wait(&d->demand, &d->lock)
				   : pthread_cond_timedwait(&d->demand, &d->lock, &until);
	r = d->closed ? -1 : any_waiting(d) ? 1 : 0;
	pthread_mutex_unlock(&d->lock);
	return r;
}

void rfb_desktop_cut_text(struct rfb_desktop *d, const char *text, size_t len)
{
	struct rfb_session *s;

	if (len > RFB_MAX_CUT_TEXT)
		len = RFB_MAX_CUT_TEXT;
	pthread_mutex_lock(&d->lock);
	for (s = d->sessions; s; s = s->next) {
		char *c = malloc(len ? len : 1);
		if (!c)
			continue;
		memcpy(c, text, len);
		free(s->cut);
		s->cut = c;
		s->cut_len = len;
		session_wake(s);
	}
	pthread_mutex_unlock(&d->lock);
}

/* A tile's pixels in a frame of width w (the stride). */
static uint64_t tile_hash(const uint32_t *fb, int w, int x, int y, int tw, int th)
{
	uint64_t h = 0xcbf29ce484222325ull;
	int i, j;

	for (j = 0; j < th; j++) {
		const uint32_t *p = fb + (size_t)(y + j) * w + x;
		for (i = 0; i < tw; i++)
			h = (h ^ p[i]) * 0x100000001b3ull;
	}
	return h;
}

static int tile_dim(int total, int t)
{
	return total - t * RFB_TILE < RFB_TILE ? total - t * RFB_TILE : RFB_TILE;
}

/* Sizes a session's tile maps for the desktop's frame, everything dirty. */
static int session_resize(struct rfb_session *s, int tiles_w, int tiles_h)
{
	size_t n = (size_t)tiles_w * tiles_h;
	uint8_t *dirty = malloc(n);
	int32_t *from = malloc(n * sizeof(*from));

	if (!dirty || !from) {
		free(dirty);
		free(from);
		return -ENOMEM;
	}
	free(s->dirty);
	free(s->copy_from);
	s->dirty = dirty;
	s->copy_from = from;
	memset(dirty, 1, n);
	memset(from, 0xff, n * sizeof(*from));
	s->tiles_w = tiles_w;
	s->tiles_h = tiles_h;
	s->ndirty = (int)n;
	s->ncopies = 0;
	return 0;
}

static void drop_copies(struct rfb_session *s)
{
	size_t i, n = (size_t)s->tiles_w * s->tiles_h;

	if (!s->ncopies)
		return;
	for (i = 0; i < n; i++)
		s->copy_from[i] = -1;
	s->ncopies = 0;
}

static int frame_resize(struct rfb_desktop *d, const uint32_t *px, int w, int h, size_t stride)
{
	int tw = (w + RFB_TILE - 1) / RFB_TILE, th = (h + RFB_TILE - 1) / RFB_TILE, i, j;
	uint32_t *fb = malloc((size_t)w * h * 4);
	uint64_t *hash = malloc((size_t)tw * th * sizeof(*hash));
	struct rfb_session *s;

	if (!fb || !hash) {
		free(fb);
		free(hash);
		return -ENOMEM;
	}
	for (j = 0; j < h; j++)
		memcpy(fb + (size_t)j * w, px + (size_t)j * stride, (size_t)w * 4);
	for (j = 0; j < th; j++)
		for (i = 0; i < tw; i++)
			hash[j * tw + i] = tile_hash(fb, w, i * RFB_TILE, j * RFB_TILE,
						     tile_dim(w, i), tile_dim(h, j));
	free(d->fb);
	free(d->hash);
	d->fb = fb;
	d->hash = hash;
	d->w = w;
	d->h = h;
	d->tiles_w = tw;
	d->tiles_h = th;
	d->have_frame = 1;
	for (s = d->sessions; s; s = s->next)
		if (session_resize(s, tw, th) < 0)
			s->failed = -ENOMEM;
	return 0;
}

/* The tile of the current frame, other than t, that holds new's pixels
 * for tile t (a whole tile, hash then bytes compared), or -1. */
static int32_t find_moved(const struct rfb_desktop *d, const uint32_t *px, size_t stride, int t,
			  uint64_t h)
{
	int n = d->tiles_w * d->tiles_h, k, j;
	int tx = t % d->tiles_w, ty = t / d->tiles_w;

	for (k = 0; k < n; k++) {
		int kx = k % d->tiles_w, ky = k / d->tiles_w;
		if (k == t || d->hash[k] != h || tile_dim(d->w, kx) != RFB_TILE ||
		    tile_dim(d->h, ky) != RFB_TILE)
			continue;
		for (j = 0; j < RFB_TILE; j++)
			if (memcmp(px + (size_t)(ty * RFB_TILE + j) * stride + tx * RFB_TILE,
				   d->fb + (size_t)(ky * RFB_TILE + j) * d->w + kx * RFB_TILE,
				   RFB_TILE * 4))
				break;
		if (j == RFB_TILE)
			return k;
	}
	return -1;
}

int rfb_desktop_frame(struct rfb_desktop *d, const uint32_t *px, int w, int h, size_t stride)
{
	struct rfb_session *s;
	int32_t *moved = NULL;
	uint8_t *changed = NULL;
	int t, n, nchanged = 0, i, j, r = 0;

	if (w <= 0 || h <= 0 || w > RFB_MAX_DIM || h > RFB_MAX_DIM || stride < (size_t)w)
		return -EINVAL;
	pthread_mutex_lock(&d->lock);
	if (!d->have_frame || w != d->w || h != d->h) {
		r = frame_resize(d, px, w, h, stride);
		goto wake;
	}
	n = d->tiles_w * d->tiles_h;
	if (!(changed = calloc(n, 1)) || !(moved = malloc(n * sizeof(*moved)))) {
		r = -ENOMEM;
		goto out;
	}
	/* Which tiles changed, and where the new pixels were before (all
	 * found before any tile of fb is overwritten). */
	for (t = 0; t < n; t++) {
		int tx = t % d->tiles_w, ty = t / d->tiles_w;
		int tw = tile_dim(w, tx), th = tile_dim(h, ty);
		moved[t] = -1;
		for (j = 0; j < th; j++)
			if (memcmp(px + (size_t)(ty * RFB_TILE + j) * stride + tx * RFB_TILE,
				   d->fb + (size_t)(ty * RFB_TILE + j) * w + tx * RFB_TILE,
				   (size_t)tw * 4))
				break;
		if (j == th)
			continue;
		changed[t] = 1;
		nchanged++;
	}
	if (!nchanged)
		goto out;
	{
		uint64_t *newhash = malloc(n * sizeof(*newhash));
		if (!newhash) {
			r = -ENOMEM;
			goto out;
		}
		for (t = 0; t < n; t++) {
			int tx = t % d->tiles_w, ty = t / d->tiles_w;
			newhash[t] = d->hash[t];
			if (!changed[t])
				continue;
			newhash[t] = tile_hash(px, (int)stride, tx * RFB_TILE, ty * RFB_TILE,
					       tile_dim(w, tx), tile_dim(h, ty));
			if (tile_dim(w, tx) == RFB_TILE && tile_dim(h, ty) == RFB_TILE)
				moved[t] = find_moved(d, px, stride, t, newhash[t]);
		}
		for (t = 0; t < n; t++) {
			int tx = t % d->tiles_w, ty = t / d->tiles_w;
			if (!changed[t])
				continue;
			for (j = 0; j < tile_dim(h, ty); j++)
				memcpy(d->fb + (size_t)(ty * RFB_TILE + j) * w + tx * RFB_TILE,
				       px + (size_t)(ty * RFB_TILE + j) * stride + tx * RFB_TILE,
				       (size_t)tile_dim(w, tx) * 4);
		}
		free(d->hash);
		d->hash = newhash;
	}
	for (s = d->sessions; s; s = s->next) {
		/* A viewer that has all of the last frame can copy tiles from
		 * it; any other forgets what it was told to copy. */
		int in_sync = s->ndirty == 0 && s->ncopies == 0;
		if (s->tiles_w != d->tiles_w || s->tiles_h != d->tiles_h)
			continue;
		if (!in_sync)
			drop_copies(s);
		for (i = 0; i < n; i++) {
			if (!changed[i])
				continue;
			if (!s->dirty[i]) {
				s->dirty[i] = 1;
				s->ndirty++;
			}
			if (in_sync && s->copyrect && moved[i] >= 0) {
				s->copy_from[i] = moved[i];
				s->ncopies++;
			}
		}
	}
wake:
	for (s = d->sessions; s; s = s->next)
		session_wake(s);
out:
	pthread_mutex_unlock(&d->lock);
	free(changed);
	free(moved);
	return r;
}

/* --- sessions: what the viewer says -------------------------------- */

static int put_server_init(struct rfb_session *s, struct buf *out)
{
	struct rfb_desktop *d = s->d;
	uint8_t pf[16];
	size_t n = strlen(d->name);

	rfb_pf_write(&rfb_pf_native, pf);
	if (buf_put_u16_be(out, d->w) < 0 || buf_put_u16_be(out, d->h) < 0 ||
	    buf_put(out, pf, 16) < 0 || buf_put_u32_be(out, n) < 0 || buf_put(out, d->name, n) < 0)
		return -ENOMEM;
	return 0;
}

static void input_key(struct rfb_session *s, int down, uint32_t keysym)
{
	struct rfb_desktop *d = s->d;

	if (s->flags & RFB_VIEW_ONLY)
		return;
	pthread_mutex_lock(&d->input_lock);
	if (d->ops && d->ops->key)
		d->ops->key(d->ops_arg, down, keysym);
	pthread_mutex_unlock(&d->input_lock);
}

static void input_pointer(struct rfb_session *s, uint8_t mask, uint16_t x, uint16_t y)
{
	struct rfb_desktop *d = s->d;

	if (s->flags & RFB_VIEW_ONLY)
		return;
	pthread_mutex_lock(&d->input_lock);
	if (d->ops && d->ops->pointer)
		d->ops->pointer(d->ops_arg, mask, x, y);
	pthread_mutex_unlock(&d->input_lock);
}

static void input_cut(struct rfb_session *s, const uint8_t *text, size_t len)
{
	struct rfb_desktop *d = s->d;

	if (s->flags & RFB_VIEW_ONLY)
		return;
	pthread_mutex_lock(&d->input_lock);
	if (d->ops && d->ops->cut_text)
		d->ops->cut_text(d->ops_arg, (const char *)text, len);
	pthread_mutex_unlock(&d->input_lock);
}

/* A colour-mapped viewer gets 3-3-2 true colour and the map to match. */
static const struct rfb_pf pf_bgr233 = {
	.bpp = 8, .depth = 8, .true_colour = 1, .rmax = 7, .gmax = 7, .bmax = 3,
	.rshift = 0, .gshift = 3, .bshift = 6,
};

static int set_pixel_format(struct rfb_session *s, const uint8_t *p)
{
	struct rfb_pf pf;

	rfb_pf_read(&pf, p);
	if (rfb_pf_check(&pf) < 0)
		return -EPROTO;
	if (!pf.true_colour) {
		if (pf.bpp != 8)
			return -EPROTO;
		pf = pf_bgr233;
		s->colour_map_due = 1;
	}
	rfb_enc_set_pf(&s->enc, &pf);
	return 0;
}

static void set_encodings(struct rfb_session *s, const uint8_t *p, unsigned n)
{
	static const int32_t quality[10] = { 15, 29, 41, 42, 62, 77, 79, 86, 92, 100 };
	unsigned i;

	s->encoding = RFB_ENC_RAW;
	s->copyrect = s->desktop_size = 0;
	s->enc.jpeg_quality = 0;
	for (i = n; i-- > 0;) { /* the first of each kind wins */
		int32_t e = (int32_t)get_be32(p + 4 * i);
		if (e == RFB_ENC_RAW || e == RFB_ENC_ZRLE || e == RFB_ENC_TIGHT)
			s->encoding = e;
		else if (e == RFB_ENC_COPYRECT)
			s->copyrect = 1;
		else if (e == RFB_ENC_DESKTOP_SIZE)
			s->desktop_size = 1;
		else if (e >= RFB_ENC_QUALITY_0 && e <= RFB_ENC_QUALITY_0 + 9) {
			/* As TigerVNC's viewers expect of a level: full colour
			 * resolution from 6 up, halved below. */
			int level = e - RFB_ENC_QUALITY_0;
			s->enc.jpeg_quality = quality[level];
			s->enc.jpeg_subsamp = level >= 6 ? 0 : level >= 3 ? 1 : 2;
		}
		else if (e >= RFB_ENC_COMPRESS_0 && e <= RFB_ENC_COMPRESS_0 + 9 && !s->enc.zrle_on &&
			 !s->enc.tight_on)
			s->enc.zlevel = e - RFB_ENC_COMPRESS_0;
	}
}

/* Handles one whole message at the head of s->in: its length, 0 if more
 * bytes are needed, or -errno to end the session. */
static long handle_message(struct rfb_session *s, struct buf *out)
{
	const uint8_t *p = buf_head(&s->in);
	size_t have = buf_avail(&s->in);
	uint32_t len;
	unsigned n;
	int r;

	switch (p[0]) {
	case RFB_SET_PIXEL_FORMAT:
		if (have < 20)
			return 0;
		return (r = set_pixel_format(s, p + 4)) < 0 ? r : 20;
	case RFB_SET_ENCODINGS:
		if (have < 4)
			return 0;
		n = p[2] << 8 | p[3];
		if (n > RFB_MAX_ENCODINGS)
			return -EPROTO;
		if (have < 4 + 4 * (size_t)n)
			return 0;
		set_encodings(s, p + 4, n);
		return 4 + 4 * (long)n;
	case RFB_FB_UPDATE_REQUEST:
		if (have < 10)
			return 0;
		s->req = 1;
		s->req_incr = p[1] != 0;
		s->rx = p[2] << 8 | p[3];
		s->ry = p[4] << 8 | p[5];
		s->rw = p[6] << 8 | p[7];
		s->rh = p[8] << 8 | p[9];
		return 10;
	case RFB_KEY_EVENT:
		if (have < 8)
			return 0;
		input_key(s, p[1] != 0, get_be32(p + 4));
		return 8;
	case RFB_POINTER_EVENT:
		if (have < 6)
			return 0;
		input_pointer(s, p[1], p[2] << 8 | p[3], p[4] << 8 | p[5]);
		return 6;
	case RFB_CLIENT_CUT_TEXT:
		if (have < 8)
			return 0;
		len = get_be32(p + 4);
		if (len > RFB_MAX_CUT_TEXT) { /* read and dropped */
			s->cut_skip = len;
			return 8;
		}
		if (have < 8 + (size_t)len)
			return 0;
		input_cut(s, p + 8, len);
		return 8 + (long)len;
	}
	return -EPROTO;
}

static int handshake_step(struct rfb_session *s, struct buf *out)
{
	const uint8_t *p = buf_head(&s->in);
	int major, minor;
	char v[13];

	switch (s->state) {
	case ST_VERSION:
		if (buf_avail(&s->in) < 12)
			return 0;
		memcpy(v, p, 12);
		v[12] = 0;
		if (memcmp(v, "RFB ", 4) || v[7] != '.' || v[11] != '\n' ||
		    sscanf(v + 4, "%3d.%3d", &major, &minor) != 2 || major != 3 || minor < 3)
			return -EPROTO;
		s->minor = minor >= 8 ? 8 : minor == 7 ? 7 : 3;
		buf_consume(&s->in, 12);
		if (s->minor == 3) { /* the server picks: None */
			s->state = ST_CLIENT_INIT;
			return buf_put_u32_be(out, 1) < 0 ? -ENOMEM : 1;
		}
		s->state = ST_SECURITY;
		return buf_put(out, "\x01\x01", 2) < 0 ? -ENOMEM : 1;
	case ST_SECURITY:
		if (buf_avail(&s->in) < 1)
			return 0;
		if (p[0] != 1) {
			static const char why[] = "only security type None is offered";
			if (s->minor == 8) {
				buf_put_u32_be(out, 1);
				buf_put_u32_be(out, sizeof(why) - 1);
				buf_put(out, why, sizeof(why) - 1);
			}
			return -EPROTO;
		}
		buf_consume(&s->in, 1);
		s->state = ST_CLIENT_INIT;
		if (s->minor == 8 && buf_put_u32_be(out, 0) < 0)
			return -ENOMEM;
		return 1;
	case ST_CLIENT_INIT:
		if (buf_avail(&s->in) < 1)
			return 0;
		buf_consume(&s->in, 1); /* shared or not, the desktop is shared */
		s->state = ST_WAIT_FRAME;
		return 1;
	default:
		return 0;
	}
}

/* Handles every whole message buffered. */
static int session_input(struct rfb_session *s, struct buf *out)
{
	long r;

	for (;;) {
		if (s->cut_skip) {
			size_t k = buf_avail(&s->in) < s->cut_skip ? buf_avail(&s->in) : s->cut_skip;
			buf_consume(&s->in, k);
			s->cut_skip -= k;
			if (s->cut_skip)
				return 0;
		}
		if (!buf_avail(&s->in))
			return 0;
		if (s->state == ST_NORMAL) {
			if ((r = handle_message(s, out)) <= 0)
				break;
			buf_consume(&s->in, r);
		} else if (s->state == ST_WAIT_FRAME) {
			r = buf_avail(&s->in) > MAX_EARLY_INPUT ? -EPROTO : 0;
			break;
		} else if ((r = handshake_step(s, out)) <= 0) {
			break;
		}
	}
	/* What is left is the start of one message: bounded by its kind. */
	return r < 0 ? (int)r : 0;
}

/* --- sessions: what the viewer gets -------------------------------- */

typedef int (*encode_fn)(struct rfb_enc *e, const struct rfb_frame *f, int x, int y, int w,
			 int h, struct buf *out);

static encode_fn encoder(int32_t encoding)
{
	switch (encoding) {
	case RFB_ENC_ZRLE: return rfb_enc_zrle;
	case RFB_ENC_TIGHT: return rfb_enc_tight;
	default: return rfb_enc_raw;
	}
}

static int put_colour_map(struct buf *out)
{
	uint8_t m[6 + 256 * 6], *p = m + 6;
	int i;

	memcpy(m, "\x01\x00\x00\x00\x01\x00", 6); /* first colour 0, 256 colours */
	for (i = 0; i < 256; i++) {
		unsigned r = (i & 7) * 65535 / 7, g = (i >> 3 & 7) * 65535 / 7,
			 b = (i >> 6 & 3) * 65535 / 3;
		*p++ = r >> 8; *p++ = r;
		*p++ = g >> 8; *p++ = g;
		*p++ = b >> 8; *p++ = b;
	}
	return buf_put(out, m, sizeof(m));
}

/* A FramebufferUpdate for the pending request, if there is anything to
 * send: 1 if one went out, 0 if not (the viewer waits), or -errno. */
/* The planned copies into tiles of [tx0,tx1)x[ty0,ty1), first in the
 * update: each reads what the viewer had before it, so a copy into a tile
 * waits until every copy reading that tile is out (a shift to the right
 * goes from right to left). Copies that wait for each other in a cycle are
 * left dirty, to be sent as pixels. Returns the rectangles written. */
static int put_copies(struct rfb_session *s, int tx0, int ty0, int tx1, int ty1,
		      struct buf *out)
{
	int n = s->tiles_w * s->tiles_h, *readers = calloc(n, sizeof(int)), *ready, nready = 0;
	int count = 0, t, tx, ty, r = 0;

	if (!readers)
		return -ENOMEM;
	ready = malloc(n * sizeof(int));
#define PLANNED(t) (s->dirty[t] && s->copy_from[t] >= 0 && (t) % s->tiles_w >= tx0 && \
		    (t) % s->tiles_w < tx1 && (t) / s->tiles_w >= ty0 && (t) / s->tiles_w < ty1)
	for (ty = ty0; ty < ty1; ty++)
		for (tx = tx0; tx < tx1; tx++)
			if (PLANNED(t = ty * s->tiles_w + tx))
				readers[s->copy_from[t]]++;
	for (ty = ty0; ty < ty1 && ready; ty++)
		for (tx = tx0; tx < tx1; tx++)
			if (PLANNED(t = ty * s->tiles_w + tx) && !readers[t])
				ready[nready++] = t;
	while (nready && r >= 0) {
		int32_t src;
		t = ready[--nready];
		src = s->copy_from[t];
		r = rfb_enc_copyrect(out, t % s->tiles_w * RFB_TILE, t / s->tiles_w * RFB_TILE,
				     RFB_TILE, RFB_TILE, src % s->tiles_w * RFB_TILE,
				     src / s->tiles_w * RFB_TILE);
		count++;
		s->dirty[t] = 0;
		s->ndirty--;
		s->copy_from[t] = -1;
		if (--readers[src] == 0 && PLANNED(src))
			ready[nready++] = src;
	}
#undef PLANNED
	free(readers);
	free(ready);
	return !ready ? -ENOMEM : r < 0 ? r : count;
}

static int put_update(struct rfb_session *s, struct buf *out)
{
	struct rfb_desktop *d = s->d;
	struct rfb_frame f = { .px = d->fb, .w = d->w, .h = d->h, .stride = d->w };
	int resized = s->fb_w != d->w || s->fb_h != d->h;
	int x1, y1, tx0, ty0, tx1, ty1, tx, ty, t, count = 0, due = 0, r = 0;
	encode_fn enc = encoder(s->encoding);
	size_t hdr;

	if (resized && !s->desktop_size)
		return -ENOTSUP; /* the viewer cannot follow the new size */
	x1 = s->rx + s->rw < d->w ? s->rx + s->rw : d->w;
	y1 = s->ry + s->rh < d->h ? s->ry + s->rh : d->h;
	if (resized || s->rx >= x1 || s->ry >= y1) {
		tx0 = ty0 = tx1 = ty1 = 0; /* nothing asked for (or all, if resized) */
		if (resized) {
			tx1 = d->tiles_w;
			ty1 = d->tiles_h;
		}
	} else {
		tx0 = s->rx / RFB_TILE;
		ty0 = s->ry / RFB_TILE;
		tx1 = (x1 + RFB_TILE - 1) / RFB_TILE;
		ty1 = (y1 + RFB_TILE - 1) / RFB_TILE;
	}
	if (!s->req_incr) {
		drop_copies(s);
		for (ty = ty0; ty < ty1; ty++)
			for (tx = tx0; tx < tx1; tx++)
				if (!s->dirty[t = ty * d->tiles_w + tx]) {
					s->dirty[t] = 1;
					s->ndirty++;
				}
	}
	for (ty = ty0; ty < ty1 && !due; ty++)
		for (tx = tx0; tx < tx1 && !due; tx++)
			due = s->dirty[ty * d->tiles_w + tx];
	if (!due && !resized && s->req_incr)
		return 0;

	hdr = out->len;
	if (buf_put(out, "\x00\x00\x00\x00", 4) < 0)
		return -ENOMEM;
	if (resized) {
		if (rfb_rect_header(out, 0, 0, d->w, d->h, RFB_ENC_DESKTOP_SIZE) < 0)
			return -ENOMEM;
		s->fb_w = d->w;
		s->fb_h = d->h;
		count++;
	}
	/* (A viewer that withdrew CopyRect gets none of those planned.) */
	if (s->ncopies && s->copyrect && (r = put_copies(s, tx0, ty0, tx1, ty1, out)) < 0)
		return r;
	count += r > 0 ? r : 0;
	/* Then runs of dirty tiles, row by row. */
	for (ty = ty0; ty < ty1; ty++)
		for (tx = tx0; tx < tx1;) {
			int end, x, y, w, h;
			if (!s->dirty[ty * d->tiles_w + tx]) {
				tx++;
				continue;
			}
			for (end = tx; end < tx1 && s->dirty[ty * d->tiles_w + end]; end++) {
				s->dirty[ty * d->tiles_w + end] = 0;
				s->ndirty--;
			}
			x = tx * RFB_TILE;
			y = ty * RFB_TILE;
			w = (end * RFB_TILE < d->w ? end * RFB_TILE : d->w) - x;
			h = tile_dim(d->h, ty);
			if ((r = enc(&s->enc, &f, x, y, w, h, out)) < 0)
				return r;
			count += r;
			tx = end;
		}
	/* Tiles outside the request may have been copy sources: no copy
	 * planned before this update is safe after it. */
	drop_copies(s);
	out->data[hdr + 2] = count >> 8;
	out->data[hdr + 3] = count;
	s->req = 0;
	return 1;
}

/* Whatever is due to the viewer: ServerInit once there is a frame, cut
 * text, the colour map, and (if may_update) an update. */
static int session_pump(struct rfb_session *s, struct buf *out, int may_update)
{
	struct rfb_desktop *d = s->d;
	int r = 0, was;

	pthread_mutex_lock(&d->lock);
	if (d->closed)
		r = -ESHUTDOWN;
	else if (s->failed)
		r = s->failed;
	if (!r && s->state == ST_WAIT_FRAME && d->have_frame) {
		if ((r = session_resize(s, d->tiles_w, d->tiles_h)) == 0 &&
		    (r = put_server_init(s, out)) == 0) {
			s->fb_w = d->w;
			s->fb_h = d->h;
			s->state = ST_NORMAL;
		}
	}
	if (!r && s->state == ST_NORMAL && s->cut) {
		if (buf_put_u32_be(out, RFB_SERVER_CUT_TEXT << 24) < 0 ||
		    buf_put_u32_be(out, s->cut_len) < 0 || buf_put(out, s->cut, s->cut_len) < 0)
			r = -ENOMEM;
		free(s->cut);
		s->cut = NULL;
	}
	if (!r && s->state == ST_NORMAL && s->colour_map_due) {
		r = put_colour_map(out) < 0 ? -ENOMEM : 0;
		s->colour_map_due = 0;
	}
	if (!r && s->state == ST_NORMAL && s->req && may_update && (r = put_update(s, out)) > 0)
		r = 0;
	was = s->waiting;
	s->waiting = !r && (s->state == ST_WAIT_FRAME || (s->state == ST_NORMAL && s->req));
	if (s->waiting && !was) {
		pthread_cond_broadcast(&d->demand);
		wake(d->demand_fd);
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* session_pump, and if that ended the wait for the first frame, the
 * messages that came right behind ClientInit (held until then). */
static int session_step(struct rfb_session *s, struct buf *out, int may_update)
{
	enum state before = s->state;
	int r = session_pump(s, out, may_update);

	if (r < 0 || before != ST_WAIT_FRAME || s->state != ST_NORMAL || !buf_avail(&s->in))
		return r;
	if ((r = session_input(s, out)) < 0)
		return r;
	return session_pump(s, out, may_update);
}

static struct rfb_session *session_new(struct rfb_desktop *d, unsigned flags, int evfd)
{
	struct rfb_session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->d = d;
	s->flags = flags;
	s->evfd = evfd;
	s->encoding = RFB_ENC_RAW;
	rfb_enc_init(&s->enc);
	buf_init(&s->in);
	pthread_mutex_lock(&d->lock);
	if (d->closed || d->nsessions >= RFB_MAX_VIEWERS) {
		pthread_mutex_unlock(&d->lock);
		rfb_enc_free(&s->enc);
		free(s);
		return NULL;
	}
	s->next = d->sessions;
	d->sessions = s;
	d->nsessions++;
	d->refs++;
	pthread_mutex_unlock(&d->lock);
	return s;
}

void rfb_session_free(struct rfb_session *s)
{
	struct rfb_desktop *d;
	struct rfb_session **pp;

	if (!s)
		return;
	d = s->d;
	pthread_mutex_lock(&d->lock);
	for (pp = &d->sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	d->nsessions--;
	pthread_mutex_unlock(&d->lock);
	rfb_enc_free(&s->enc);
	buf_free(&s->in);
	free(s->dirty);
	free(s->copy_from);
	free(s->cut);
	free(s);
	rfb_desktop_unref(d);
}

struct rfb_session *rfb_session_new(struct rfb_desktop *d, unsigned flags)
{
	return session_new(d, flags, -1);
}

static const char greeting[] = "RFB 003.008\n";

int rfb_session_feed(struct rfb_session *s, const uint8_t *p, size_t n, struct buf *out)
{
	int r;

	if (!s->greeted) {
		if (buf_put(out, greeting, 12) < 0)
			return -ENOMEM;
		s->greeted = 1;
	}
	if (n && buf_put(&s->in, p, n) < 0)
		return -ENOMEM;
	if ((r = session_input(s, out)) < 0)
		return r;
	return session_step(s, out, 1);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes what it can of out without blocking: 0, or -errno. */
static int flush_out(int fd, struct buf *out)
{
	while (buf_avail(out)) {
		ssize_t n = send(fd, buf_head(out), buf_avail(out), MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, buf_head(out), buf_avail(out));
		if (n > 0) {
			buf_consume(out, n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return n < 0 ? -errno : -EPIPE;
	}
	buf_reset(out);
	return 0;
}

int rfb_serve(struct rfb_desktop *d, int fd, unsigned flags)
{
	uint64_t deadline = now_ms() + RFB_HANDSHAKE_TIMEOUT_MS, junk;
	int evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), r = 0;
	struct rfb_session *s = NULL;
	struct pollfd pfd[2];
	struct buf out;

	buf_init(&out);
	if (evfd < 0 || !(s = session_new(d, flags, evfd))) {
		r = evfd < 0 ? -errno : -EBUSY;
		goto out;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (buf_put(&out, greeting, 12) < 0) {
		r = -ENOMEM;
		goto out;
	}
	for (;;) {
		int timeout = -1, held = buf_avail(&out) != 0;
		if ((r = session_step(s, &out, !held)) < 0 || (r = flush_out(fd, &out)) < 0)
			break;
		/* An update held back while output drained may be due now. */
		if (held && !buf_avail(&out) && s->req)
			continue;
		if (s->state != ST_NORMAL && s->state != ST_WAIT_FRAME) {
			uint64_t now = now_ms();
			if (now >= deadline) {
				r = -ETIMEDOUT;
				break;
			}
			timeout = (int)(deadline - now);
		}
		pfd[0].fd = fd;
		pfd[0].events = POLLIN | (buf_avail(&out) ? POLLOUT : 0);
		pfd[1].fd = evfd;
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if (pfd[1].revents && read(evfd, &junk, sizeof(junk)) < 0) {
			/* nothing to drain */
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n;
			if (buf_reserve(&s->in, READ_CHUNK) < 0) {
				r = -ENOMEM;
				break;
			}
			n = read(fd, buf_tail(&s->in), READ_CHUNK);
			if (n == 0)
				break; /* the viewer left */
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				r = -errno;
				break;
			}
			if (n > 0) {
				s->in.len += n;
				if ((r = session_input(s, &out)) < 0) {
					flush_out(fd, &out); /* a security failure's reason */
					break;
				}
			}
		}
	}
out:
	rfb_session_free(s);
	buf_free(&out);
	if (evfd >= 0)
		close(evfd);
	close(fd);
	return r;
}

/* Reads n bytes from a non-blocking fd before deadline: 0 or -errno. */
static int read_by(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
	while (n) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t k;

		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
			return -errno;
		k = read(fd, p, n);
		if (k == 0)
			return -ECONNRESET;
		if (k < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		}
	}
	return 0;
}

int rfb_refuse(int fd, const char *reason)
{
	uint64_t deadline = now_ms() + RFB_HANDSHAKE_TIMEOUT_MS;
	size_t len = strlen(reason);
	uint8_t v[12];
	struct buf out;
	int minor, r = 0;

	buf_init(&out);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (buf_put(&out, greeting, 12) < 0 || (r = flush_out(fd, &out)) < 0 ||
	    (r = read_by(fd, v, sizeof(v), deadline)) < 0)
		goto out;
	minor = memcmp(v, "RFB 003.", 8) ? 0 : (v[9] - '0') * 10 + (v[10] - '0');
	/* 3.3: security type 0 (failed); later: an empty list. Both then
	 * carry the reason. */
	if (minor >= 7)
		buf_put(&out, "", 1);
	else
		buf_put_u32_be(&out, 0);
	buf_put_u32_be(&out, (uint32_t)len);
	buf_put(&out, reason, len);
	while (buf_avail(&out) && (r = flush_out(fd, &out)) == 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		if (now_ms() >= deadline || poll(&pfd, 1, 100) < 0) {
			r = -ETIMEDOUT;
			break;
		}
	}
out:
	buf_free(&out);
	close(fd);
	return r;
}
