/*
 * A known picture on an X screen, for the desktop tests and bench: a
 * window covering the whole screen, drawn with PutImage, in three bands
 * that exercise every path of the encoders: noise (raw, JPEG), large
 * solid rectangles (fills) and few-coloured stripes (palettes, RLE).
 * It prints what reaches it on stdout, one line each:
 *   ready                 the picture is on the screen
 *   key 0xKEYSYM          a key was pressed
 *   button N X Y          a pointer button was pressed
 * and reads commands on stdin:
 *   shift N               draw the picture again, N pixels further right
 *   flip                  draw the next frame of an animation (the whole
 *                         screen changes), then print "flipped"
 * Usage: x11_pattern (DISPLAY from the environment). Built by the tests
 * with the system's libxcb.
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xcb/xcb.h>

static xcb_connection_t *c;
static xcb_window_t win;
static xcb_gcontext_t gc;
static int W, H;
static uint32_t *img;
static xcb_keysym_t *syms;
static int per_kc, min_kc;

static uint32_t noise(int x, int y, int seed)
{
	uint32_t h = (uint32_t)x * 374761393u + (uint32_t)y * 668265263u + (uint32_t)seed * 2246822519u;
	h = (h ^ (h >> 13)) * 1274126177u;
	return (h ^ (h >> 16)) & 0xffffff;
}

static uint32_t pixel(int x, int y, int shift, int frame)
{
	int band = y * 3 / H, xs = x - shift;

	if (frame) /* the animation: every pixel changes from frame to frame */
		return ((uint32_t)(xs + frame * 5) & 255) << 16 |
		       ((uint32_t)(y * 2 + frame * 3) & 255) << 8 | (noise(xs, y, frame) & 0x3f);
	if (band == 0) /* smooth gradients with noise on top */
		return ((uint32_t)(xs * 255 / W) << 16 | (uint32_t)(y * 255 / H) << 8 |
			(uint32_t)((xs ^ y) & 255)) ^ (noise(xs, y, 0) & 0x0f0f0f);
	if (band == 1) /* large solid blocks */
		return (uint32_t)((xs / 96) * 0x3a5f17 + (y / 80) * 0x1b2c3d) & 0xffffff;
	/* stripes of two or three colours, like text */
	return ((xs / 3 + y / 2) % 7 == 0) ? 0x000000 : ((xs / 40) % 3 == 0) ? 0xffffff : 0xe0e8f0;
}

static void draw(int shift, int frame)
{
	int rows = 262144 / 4 / W; /* keep each request well under the limit */

	for (int y = 0; y < H; y++)
		for (int x = 0; x < W; x++)
			img[(size_t)y * W + x] = pixel(x, y, shift, frame);
	for (int y = 0; y < H; y += rows) {
		int h = y + rows > H ? H - y : rows;
		xcb_put_image(c, XCB_IMAGE_FORMAT_Z_PIXMAP, win, gc, W, h, 0, y, 0, 24,
			      (uint32_t)W * h * 4, (const uint8_t *)(img + (size_t)y * W));
	}
	free(xcb_get_input_focus_reply(c, xcb_get_input_focus(c), NULL)); /* drawn */
}

static void load_keymap(void)
{
	const xcb_setup_t *s = xcb_get_setup(c);
	xcb_get_keyboard_mapping_reply_t *r = xcb_get_keyboard_mapping_reply(
		c, xcb_get_keyboard_mapping(c, s->min_keycode, s->max_keycode - s->min_keycode + 1),
		NULL);
	int n;

	if (!r)
		exit(1);
	n = xcb_get_keyboard_mapping_keysyms_length(r);
	free(syms);
	syms = malloc((n + 1) * sizeof(*syms));
	memcpy(syms, xcb_get_keyboard_mapping_keysyms(r), n * sizeof(*syms));
	per_kc = r->keysyms_per_keycode;
	min_kc = s->min_keycode;
	free(r);
}

int main(void)
{
	xcb_screen_t *scr;
	uint32_t vals[3];
	char line[128];
	int frame = 0, shift = 0;

	c = xcb_connect(NULL, NULL);
	if (xcb_connection_has_error(c)) {
		fprintf(stderr, "x11_pattern: cannot connect to the X server\n");
		return 1;
	}
	scr = xcb_setup_roots_iterator(xcb_get_setup(c)).data;
	W = scr->width_in_pixels;
	H = scr->height_in_pixels;
	if (scr->root_depth != 24 || !(img = malloc((size_t)W * H * 4)))
		return 1;
	load_keymap();
	win = xcb_generate_id(c);
	vals[0] = scr->black_pixel;
	vals[1] = 1; /* override-redirect: exactly at 0,0 whatever runs */
	vals[2] = XCB_EVENT_MASK_KEY_PRESS | XCB_EVENT_MASK_BUTTON_PRESS | XCB_EVENT_MASK_EXPOSURE;
	xcb_create_window(c, 24, win, scr->root, 0, 0, W, H, 0, XCB_WINDOW_CLASS_INPUT_OUTPUT,
			  scr->root_visual,
			  XCB_CW_BACK_PIXEL | XCB_CW_OVERRIDE_REDIRECT | XCB_CW_EVENT_MASK, vals);
	gc = xcb_generate_id(c);
	xcb_create_gc(c, gc, win, 0, NULL);
	xcb_map_window(c, win);
	xcb_set_input_focus(c, XCB_INPUT_FOCUS_POINTER_ROOT, win, XCB_CURRENT_TIME);
	draw(0, 0);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd p[2] = { { .fd = xcb_get_file_descriptor(c), .events = POLLIN },
				       { .fd = 0, .events = POLLIN } };
		xcb_generic_event_t *ev;

		xcb_flush(c);
		if (poll(p, 2, -1) < 0)
			return 1;
		if (p[1].revents) {
			int n;
			if (!fgets(line, sizeof(line), stdin))
				return 0;
			if (sscanf(line, "shift %d", &n) == 1) {
				draw(shift = n, frame = 0);
				printf("shifted\n");
			} else if (!strncmp(line, "flip", 4)) {
				draw(shift = 0, ++frame);
				printf("flipped\n");
			}
			fflush(stdout);
		}
		while ((ev = xcb_poll_for_event(c))) {
			int type = ev->response_type & 0x7f;
			if (type == XCB_KEY_PRESS) {
				xcb_key_press_event_t *k = (void *)ev;
				printf("key 0x%x\n", syms[(k->detail - min_kc) * per_kc]);
			} else if (type == XCB_BUTTON_PRESS) {
				xcb_button_press_event_t *b = (void *)ev;
				printf("button %d %d %d\n", b->detail, b->event_x, b->event_y);
			} else if (type == XCB_EXPOSE && !((xcb_expose_event_t *)ev)->count) {
				draw(shift, frame);
			} else if (type == XCB_MAPPING_NOTIFY) {
				load_keymap();
			}
			fflush(stdout);
			free(ev);
		}
		if (xcb_connection_has_error(c))
			return 0;
	}
}
