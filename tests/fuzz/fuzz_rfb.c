/*
 * libFuzzer target: the RFB server of rfb/server.c (handshake and the
 * client-to-server message decoder, and the encoders its requests drive)
 * through the thread-free session of rfb.h.
 *
 * The input is flags[1] chunk[1] and then bytes from the viewer, fed in
 * pieces of chunk+1 bytes (so that every message also arrives split).
 * Flags: bit 0 view-only; bit 1 the harness greets first (3.8, security
 * None, ClientInit), so that the input is messages from its first byte;
 * bit 2 a changed frame (part of the picture moved: CopyRect hints) is
 * published halfway; bit 3 a frame of another size instead (DesktopSize).
 *
 * Checked: nothing crashes, leaks or hangs; input callbacks see only what
 * the protocol allows (no input when view-only, cut text within
 * RFB_MAX_CUT_TEXT, pointer within 16 bits); nothing is fed after the
 * session said it ended.
 */
#include <stdint.h>
#include <string.h>

#include "lib/buf.h"
#include "rfb/rfb.h"
#include "tests/fuzz/check.h"

#define W 150
#define H 100

static uint32_t frame_a[W * H], frame_b[W * H], frame_c[(W + 30) * (H - 20)];
static int view_only;

static void on_key(void *arg, int down, uint32_t keysym)
{
	CHECK(!view_only);
	CHECK(down == 0 || down == 1);
}

static void on_pointer(void *arg, uint8_t buttons, uint16_t x, uint16_t y)
{
	CHECK(!view_only);
}

static void on_cut(void *arg, const char *text, size_t len)
{
	CHECK(!view_only);
	CHECK(len <= RFB_MAX_CUT_TEXT);
	volatile uint8_t sum = 0;
	for (size_t i = 0; i < len; i++) /* all of it readable (ASan) */
		sum += (uint8_t)text[i];
}

static const struct rfb_input_ops ops = { on_key, on_pointer, on_cut };

/* Pictures with solid, few-coloured and noisy areas, so that every
 * encoder path has something to do. */
static void pictures(void)
{
	uint32_t h = 1;

	for (int y = 0; y < H; y++)
		for (int x = 0; x < W; x++) {
			h = h * 1103515245u + 12345u;
			frame_a[y * W + x] = y < 30 ? 0x204080 : y < 60 ? ((x / 4 + y) % 3 ? 0xffffff : 0)
						      : (h >> 8) & 0xffffff;
		}
	for (int y = 0; y < H; y++)
		for (int x = 0; x < W; x++)
			frame_b[y * W + x] = x >= 64 ? frame_a[y * W + x - 64] : 0x00ff00;
	for (size_t i = 0; i < sizeof(frame_c) / 4; i++)
		frame_c[i] = (uint32_t)i * 2654435761u & 0xffffff;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t greet[] = "RFB 003.008\n\x01\x01";
	static int init;
	struct rfb_desktop *d;
	struct rfb_session *s;
	struct buf out;
	size_t chunk, off = 0, half;
	unsigned flags;
	int r = 0, changed = 0;

	if (!init) {
		pictures();
		init = 1;
	}
	if (size < 2)
		return 0;
	flags = data[0];
	chunk = (size_t)data[1] + 1;
	data += 2;
	size -= 2;
	half = size / 2;
	view_only = flags & 1;
	d = rfb_desktop_new("fuzz");
	CHECK(d);
	rfb_desktop_set_input(d, &ops, NULL);
	CHECK(rfb_desktop_frame(d, frame_a, W, H, W) == 0);
	s = rfb_session_new(d, view_only ? RFB_VIEW_ONLY : 0);
	CHECK(s);
	buf_init(&out);
	if (flags & 2)
		r = rfb_session_feed(s, greet, sizeof(greet) - 1, &out);
	else
		r = rfb_session_feed(s, NULL, 0, &out); /* the greeting */
	while (r == 0 && off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		if (!changed && off >= half && (flags & 12)) {
			if (flags & 8)
				CHECK(rfb_desktop_frame(d, frame_c, W + 30, H - 20, W + 30) == 0);
			else
				CHECK(rfb_desktop_frame(d, frame_b, W, H, W) == 0);
			changed = 1;
		}
		buf_reset(&out);
		r = rfb_session_feed(s, data + off, n, &out);
		off += n;
	}
	CHECK(r <= 0);
	rfb_session_free(s);
	rfb_desktop_close(d);
	rfb_desktop_unref(d);
	buf_free(&out);
	return 0;
}
