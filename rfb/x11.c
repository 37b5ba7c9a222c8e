/*
 * An X11 screen as an RFB desktop: frames captured with MIT-SHM (plain
 * GetImage without it) whenever the DAMAGE extension says the screen
 * changed and a viewer waits; keys and pointer through XTEST; cut text
 * both ways through the PRIMARY and CLIPBOARD selections (XFIXES tells
 * when another client takes them). One thread per screen does it all;
 * viewers' input arrives from their threads under the desktop's input lock
 * and only writes requests (xcb is thread-safe).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <xcb/damage.h>
#include <xcb/shm.h>
#include <xcb/xcb.h>
#include <xcb/xfixes.h>
#include <xcb/xtest.h>

#include "rfb/rfb.h"
#include "rfb/x11.h"

#define MIN_FRAME_MS 16     /* at most ~60 frames a second */
/* A screen being drawn: wait until damage has been quiet this long (but
 * no longer than SETTLE_MAX_MS after it began), or the capture catches
 * half a drawing and the other half goes out again in the next update. */
#define SETTLE_MS 4
#define SETTLE_MAX_MS 40
#define POLL_FRAME_MS 50    /* without DAMAGE: look this often */
#define IDLE_WAKE_MS 200

struct rfb_x11 {
	xcb_connection_t *c;
	xcb_window_t root, win; /* win: owns our selections */
	int width, height, depth;
	struct rfb_desktop *d;
	pthread_t thread;
	int thread_on;
	volatile int stop;

	/* capture */
	int shm_ok;
	xcb_shm_seg_t seg;
	int shmid;
	uint32_t *shm;
	size_t shm_size;
	int damage_ok, damage_event;
	xcb_damage_damage_t damage;
	int damaged, first;
	uint64_t damage_first, damage_last; /* when the damage now pending began, last grew */

	/* input */
	int xtest_ok;
	xcb_keycode_t min_kc, max_kc;
	uint8_t per_kc;
	xcb_keysym_t *keymap;
	uint8_t buttons;

	/* selections */
	int xfixes_ok, xfixes_event;
	xcb_atom_t a_clipboard, a_targets, a_utf8, a_prop;
	pthread_mutex_t cut_lock;
	char *cut; /* what a viewer cut, Latin-1 */
	size_t cut_len;
	int cut_new;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- connecting ---------------------------------------------------- */

static uint16_t be16(const uint8_t *p)
{
	return p[0] << 8 | p[1];
}

/* The MIT-MAGIC-COOKIE-1 for display on this host from an Xauthority
 * file (the format libXau reads: family, address, number, name, data,
 * each counted string with a 16-bit big-endian length). */
static int read_cookie(const char *path, int display, uint8_t *cookie, size_t *len)
{
	char host[256], num[16];
	uint8_t buf[65536];
	size_t n, off = 0;
	int fd, found = 0;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if ((ssize_t)n < 0)
		return -EIO;
	if (gethostname(host, sizeof(host)) < 0)
		host[0] = 0;
	host[sizeof(host) - 1] = 0;
	snprintf(num, sizeof(num), "%d", display);
	while (!found && off + 2 <= n) {
		const uint8_t *f[4];
		size_t flen[4];
		uint16_t family = be16(buf + off);
		int i;
		off += 2;
		for (i = 0; i < 4; i++) {
			if (off + 2 > n || off + 2 + be16(buf + off) > n)
				return -EBADMSG;
			flen[i] = be16(buf + off);
			f[i] = buf + off + 2;
			off += 2 + flen[i];
		}
		if (family != 65535 &&
		    !(family == 256 && flen[0] == strlen(host) && !memcmp(f[0], host, flen[0])))
			continue;
		if (flen[1] && (flen[1] != strlen(num) || memcmp(f[1], num, flen[1])))
			continue;
		if (flen[2] != 18 || memcmp(f[2], "MIT-MAGIC-COOKIE-1", 18) || flen[3] > 64)
			continue;
		memcpy(cookie, f[3], flen[3]);
		*len = flen[3];
		found = 1;
	}
	return found ? 0 : -ENOENT;
}

/* The X server's local socket: the file, else the abstract name. */
static int dial(int display)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, k;

	for (k = 0; k < 2; k++) {
		socklen_t len;
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
			return -errno;
		snprintf(sa.sun_path + k, sizeof(sa.sun_path) - 1, "/tmp/.X11-unix/X%d", display);
		len = offsetof(struct sockaddr_un, sun_path) + k + strlen(sa.sun_path + k) + !k;
		if (connect(fd, (struct sockaddr *)&sa, len) == 0)
			return fd;
		close(fd);
		memset(sa.sun_path, 0, sizeof(sa.sun_path));
	}
	return -ECONNREFUSED;
}

static int has_extension(xcb_connection_t *c, xcb_extension_t *ext, int *event_base)
{
	const xcb_query_extension_reply_t *q = xcb_get_extension_data(c, ext);

	if (!q || !q->present)
		return 0;
	if (event_base)
		*event_base = q->first_event;
	return 1;
}

static xcb_atom_t atom(xcb_connection_t *c, const char *name)
{
	xcb_intern_atom_reply_t *r =
		xcb_intern_atom_reply(c, xcb_intern_atom(c, 0, strlen(name), name), NULL);
	xcb_atom_t a = r ? r->atom : XCB_ATOM_NONE;

	free(r);
	return a;
}

static int load_keymap(struct rfb_x11 *x)
{
	const xcb_setup_t *setup = xcb_get_setup(x->c);
	xcb_get_keyboard_mapping_reply_t *r;
	int n;

	x->min_kc = setup->min_keycode;
	x->max_kc = setup->max_keycode;
	r = xcb_get_keyboard_mapping_reply(
		x->c, xcb_get_keyboard_mapping(x->c, x->min_kc, x->max_kc - x->min_kc + 1), NULL);
	if (!r)
		return -EIO;
	n = xcb_get_keyboard_mapping_keysyms_length(r);
	free(x->keymap);
	if (!(x->keymap = malloc((n ? n : 1) * sizeof(xcb_keysym_t)))) {
		free(r);
		return -ENOMEM;
	}
	memcpy(x->keymap, xcb_get_keyboard_mapping_keysyms(r), n * sizeof(xcb_keysym_t));
	x->per_kc = r->keysyms_per_keycode;
	free(r);
	return 0;
}

static int shm_setup(struct rfb_x11 *x, size_t size)
{
	xcb_generic_error_t *e;

	if (x->shm) {
		xcb_shm_detach(x->c, x->seg);
		shmdt(x->shm);
		x->shm = NULL;
	}
	if ((x->shmid = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600)) < 0)
		return -errno;
	x->shm = shmat(x->shmid, NULL, 0);
	if (x->shm == (void *)-1) {
		x->shm = NULL;
		shmctl(x->shmid, IPC_RMID, NULL);
		return -errno;
	}
	x->seg = xcb_generate_id(x->c);
	e = xcb_request_check(x->c, xcb_shm_attach_checked(x->c, x->seg, x->shmid, 0));
	/* Gone once both sides detach: nothing leaks if we crash. */
	shmctl(x->shmid, IPC_RMID, NULL);
	if (e) {
		free(e);
		shmdt(x->shm);
		x->shm = NULL;
		return -EACCES;
	}
	x->shm_size = size;
	return 0;
}

/* --- capture ------------------------------------------------------- */

static int grab(struct rfb_x11 *x)
{
	xcb_get_geometry_reply_t *g =
		xcb_get_geometry_reply(x->c, xcb_get_geometry(x->c, x->root), NULL);
	size_t size;
	int r;

	if (!g)
		return -EIO;
	x->width = g->width;
	x->height = g->height;
	free(g);
	size = (size_t)x->width * x->height * 4;
	if (x->damage_ok)
		xcb_damage_subtract(x->c, x->damage, XCB_NONE, XCB_NONE);
	if (x->shm_ok && size > x->shm_size && shm_setup(x, size) < 0)
		x->shm_ok = 0;
	if (x->shm_ok) {
		xcb_shm_get_image_reply_t *ir = xcb_shm_get_image_reply(
			x->c,
			xcb_shm_get_image(x->c, x->root, 0, 0, x->width, x->height, ~0u,
					  XCB_IMAGE_FORMAT_Z_PIXMAP, x->seg, 0),
			NULL);
		if (!ir)
			return -EIO;
		free(ir);
		r = rfb_desktop_frame(x->d, x->shm, x->width, x->height, x->width);
	} else {
		xcb_get_image_reply_t *ir = xcb_get_image_reply(
			x->c,
			xcb_get_image(x->c, XCB_IMAGE_FORMAT_Z_PIXMAP, x->root, 0, 0, x->width,
				      x->height, ~0u),
			NULL);
		if (!ir)
			return -EIO;
		if ((size_t)xcb_get_image_data_length(ir) < size) {
			free(ir);
			return -EIO;
		}
		r = rfb_desktop_frame(x->d, (const uint32_t *)xcb_get_image_data(ir), x->width,
				      x->height, x->width);
		free(ir);
	}
	x->damaged = 0;
	x->first = 0;
	return r;
}

/* --- selections ---------------------------------------------------- */

static void answer_selection(struct rfb_x11 *x, xcb_selection_request_event_t *rq)
{
	xcb_selection_notify_event_t ev = {
		.response_type = XCB_SELECTION_NOTIFY, .time = rq->time,
		.requestor = rq->requestor, .selection = rq->selection, .target = rq->target,
		.property = rq->property ? rq->property : rq->target,
	};

	pthread_mutex_lock(&x->cut_lock);
	if (rq->target == x->a_targets) {
		xcb_atom_t t[3] = { x->a_targets, XCB_ATOM_STRING, x->a_utf8 };
		xcb_change_property(x->c, XCB_PROP_MODE_REPLACE, rq->requestor, ev.property,
				    XCB_ATOM_ATOM, 32, 3, t);
	} else if (rq->target == XCB_ATOM_STRING && x->cut) {
		xcb_change_property(x->c, XCB_PROP_MODE_REPLACE, rq->requestor, ev.property,
				    XCB_ATOM_STRING, 8, x->cut_len, x->cut);
	} else if (rq->target == x->a_utf8 && x->cut) {
		char *u = malloc(x->cut_len * 2 + 1), *o = u;
		size_t i;
		if (u) {
			for (i = 0; i < x->cut_len; i++) {
				unsigned char ch = x->cut[i];
				if (ch < 0x80) {
					*o++ = ch;
				} else {
					*o++ = 0xc0 | ch >> 6;
					*o++ = 0x80 | (ch & 0x3f);
				}
			}
			xcb_change_property(x->c, XCB_PROP_MODE_REPLACE, rq->requestor,
					    ev.property, x->a_utf8, 8, o - u, u);
			free(u);
		} else {
			ev.property = XCB_NONE;
		}
	} else {
		ev.property = XCB_NONE;
	}
	pthread_mutex_unlock(&x->cut_lock);
	xcb_send_event(x->c, 0, rq->requestor, XCB_EVENT_MASK_NO_EVENT, (const char *)&ev);
	xcb_flush(x->c);
}

/* Another client's selection arrived (as STRING, Latin-1): to viewers. */
static void selection_arrived(struct rfb_x11 *x, xcb_selection_notify_event_t *ev)
{
	xcb_get_property_reply_t *p;

	if (ev->property == XCB_NONE)
		return;
	p = xcb_get_property_reply(x->c,
				   xcb_get_property(x->c, 1, x->win, ev->property, XCB_ATOM_ANY, 0,
						    RFB_MAX_CUT_TEXT / 4),
				   NULL);
	if (!p)
		return;
	if (p->format == 8)
		rfb_desktop_cut_text(x->d, xcb_get_property_value(p),
				     xcb_get_property_value_length(p));
	free(p);
}

static void handle_event(struct rfb_x11 *x, xcb_generic_event_t *ev)
{
	int type = ev->response_type & 0x7f;

	if (x->damage_ok && type == x->damage_event + XCB_DAMAGE_NOTIFY) {
		x->damage_last = now_ms();
		if (!x->damaged)
			x->damage_first = x->damage_last;
		x->damaged = 1;
	} else if (x->xfixes_ok && type == x->xfixes_event + XCB_XFIXES_SELECTION_NOTIFY) {
		xcb_xfixes_selection_notify_event_t *s = (void *)ev;
		if (s->owner != x->win && s->owner != XCB_NONE)
			xcb_convert_selection(x->c, x->win, s->selection, XCB_ATOM_STRING, x->a_prop,
					      s->timestamp);
		xcb_flush(x->c);
	} else if (type == XCB_SELECTION_REQUEST) {
		answer_selection(x, (void *)ev);
	} else if (type == XCB_SELECTION_NOTIFY) {
		selection_arrived(x, (void *)ev);
	} else if (type == XCB_MAPPING_NOTIFY) {
		load_keymap(x);
	}
}

static void take_selections(struct rfb_x11 *x)
{
	pthread_mutex_lock(&x->cut_lock);
	if (x->cut_new) {
		x->cut_new = 0;
		xcb_set_selection_owner(x->c, x->win, XCB_ATOM_PRIMARY, XCB_CURRENT_TIME);
		xcb_set_selection_owner(x->c, x->win, x->a_clipboard, XCB_CURRENT_TIME);
		xcb_flush(x->c);
	}
	pthread_mutex_unlock(&x->cut_lock);
}

static void *capture_thread(void *arg)
{
	struct rfb_x11 *x = arg;
	uint64_t last = 0;
	int fd = xcb_get_file_descriptor(x->c);

	while (!x->stop) {
		xcb_generic_event_t *ev;
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = rfb_desktop_demand_fd(x->d), .events = POLLIN } };
		uint64_t junk;
		int demand = rfb_desktop_wait_demand(x->d, 0), timeout = IDLE_WAKE_MS;
		uint64_t now = now_ms();

		if (demand < 0 || xcb_connection_has_error(x->c))
			break;
		take_selections(x);
		if (demand && (x->first || x->damaged || !x->damage_ok)) {
			unsigned gap = x->damage_ok || x->first ? MIN_FRAME_MS : POLL_FRAME_MS;
			if (x->damaged && !x->first && now - x->damage_last < SETTLE_MS &&
			    now - x->damage_first < SETTLE_MAX_MS) {
				timeout = SETTLE_MS;
			} else if (now - last >= gap) {
				/* A grab fails when the screen changes size under
				 * it (the image asked for is no longer inside the
				 * root): try again, unless the connection is gone. */
				if (grab(x) < 0) {
					if (xcb_connection_has_error(x->c))
						break;
					x->damaged = 1;
				}
				last = now_ms();
				continue; /* the viewers may want more */
			} else {
				timeout = (int)(last + gap - now);
			}
		}
		poll(p, 2, timeout);
		if (p[1].revents && read(p[1].fd, &junk, sizeof(junk)) < 0) {
			/* drained already */
		}
		while ((ev = xcb_poll_for_event(x->c))) {
			handle_event(x, ev);
			free(ev);
		}
	}
	/* The X server went away (or we stop): viewers are told by closing. */
	rfb_desktop_close(x->d);
	return NULL;
}

/* --- input ---------------------------------------------------------- */

static int keycode_of(struct rfb_x11 *x, uint32_t keysym)
{
	int n = (x->max_kc - x->min_kc + 1) * x->per_kc, i, col;

	/* The unshifted column first, so 'a' is not found as some other
	 * key's shifted symbol. */
	for (col = 0; col < x->per_kc; col++)
		for (i = col; i < n; i += x->per_kc)
			if (x->keymap[i] == keysym)
				return x->min_kc + i / x->per_kc;
	return 0;
}

static void x11_key(void *arg, int down, uint32_t keysym)
{
	struct rfb_x11 *x = arg;
	int kc;

	if (!x->xtest_ok || !(kc = keycode_of(x, keysym)))
		return;
	xcb_test_fake_input(x->c, down ? XCB_KEY_PRESS : XCB_KEY_RELEASE, kc, XCB_CURRENT_TIME,
			    XCB_NONE, 0, 0, 0);
	xcb_flush(x->c);
}

static void x11_pointer(void *arg, uint8_t buttons, uint16_t px, uint16_t py)
{
	struct rfb_x11 *x = arg;
	int i;

	if (!x->xtest_ok)
		return;
	xcb_test_fake_input(x->c, XCB_MOTION_NOTIFY, 0, XCB_CURRENT_TIME, x->root, px, py, 0);
	for (i = 0; i < 8; i++) {
		uint8_t bit = 1u << i;
		if ((buttons ^ x->buttons) & bit)
			xcb_test_fake_input(x->c,
					    buttons & bit ? XCB_BUTTON_PRESS : XCB_BUTTON_RELEASE,
					    i + 1, XCB_CURRENT_TIME, XCB_NONE, 0, 0, 0);
	}
	x->buttons = buttons;
	xcb_flush(x->c);
}

static void x11_cut(void *arg, const char *text, size_t len)
{
	struct rfb_x11 *x = arg;
	char *c = malloc(len ? len : 1);

	if (!c)
		return;
	memcpy(c, text, len);
	pthread_mutex_lock(&x->cut_lock);
	free(x->cut);
	x->cut = c;
	x->cut_len = len;
	x->cut_new = 1; /* the capture thread takes the selections */
	pthread_mutex_unlock(&x->cut_lock);
}

static const struct rfb_input_ops x11_input = {
	.key = x11_key,
	.pointer = x11_pointer,
	.cut_text = x11_cut,
};

/* --- lifetime ------------------------------------------------------- */

void rfb_x11_close(struct rfb_x11 *x)
{
	if (!x)
		return;
	x->stop = 1;
	if (x->d)
		rfb_desktop_close(x->d);
	if (x->thread_on)
		pthread_join(x->thread, NULL);
	if (x->d) {
		rfb_desktop_set_input(x->d, NULL, NULL);
		rfb_desktop_unref(x->d);
	}
	if (x->shm) {
		if (!xcb_connection_has_error(x->c))
			xcb_shm_detach(x->c, x->seg);
		shmdt(x->shm);
	}
	if (x->c)
		xcb_disconnect(x->c);
	pthread_mutex_destroy(&x->cut_lock);
	free(x->keymap);
	free(x->cut);
	free(x);
}

int rfb_x11_open(int display, const char *xauthority, struct rfb_x11 **out, char *err,
		 size_t errsz)
{
	struct rfb_x11 *x = calloc(1, sizeof(*x));
	uint8_t cookie[64];
	size_t cookie_len = 0;
	xcb_auth_info_t auth = { 18, "MIT-MAGIC-COOKIE-1", 0, (char *)cookie };
	const xcb_setup_t *setup;
	xcb_screen_t *scr;
	char name[64];
	int fd, e;

	if (!x) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&x->cut_lock, NULL);
	if (xauthority && (e = read_cookie(xauthority, display, cookie, &cookie_len)) < 0 &&
	    e != -ENOENT) {
		snprintf(err, errsz, "cannot read the X authority file %s: %s", xauthority,
			 strerror(-e));
		goto fail;
	}
	auth.datalen = cookie_len;
	if ((fd = dial(display)) < 0) {
		e = fd;
		snprintf(err, errsz, "no X server on display :%d (nothing listens on "
				     "/tmp/.X11-unix/X%d)", display, display);
		goto fail;
	}
	x->c = xcb_connect_to_fd(fd, cookie_len ? &auth : NULL);
	if (xcb_connection_has_error(x->c)) {
		e = -EACCES;
		snprintf(err, errsz, "the X server on display :%d refused the connection%s",
			 display, cookie_len ? "" : " (no X authority cookie for it: pass "
						    "--xauthority FILE or set XAUTHORITY)");
		goto fail;
	}
	setup = xcb_get_setup(x->c);
	scr = xcb_setup_roots_iterator(setup).data;
	x->root = scr->root;
	x->depth = scr->root_depth;
	if ((x->depth != 24 && x->depth != 32) || setup->image_byte_order != XCB_IMAGE_ORDER_LSB_FIRST) {
		e = -ENOTSUP;
		snprintf(err, errsz, "display :%d has depth %d; only 24-bit true colour "
				     "screens can be shared", display, x->depth);
		goto fail;
	}
	x->shm_ok = has_extension(x->c, &xcb_shm_id, NULL);
	x->xtest_ok = has_extension(x->c, &xcb_test_id, NULL);
	x->damage_ok = has_extension(x->c, &xcb_damage_id, &x->damage_event);
	x->xfixes_ok = has_extension(x->c, &xcb_xfixes_id, &x->xfixes_event);
	if (x->damage_ok) {
		xcb_damage_query_version_reply_t *v = xcb_damage_query_version_reply(
			x->c, xcb_damage_query_version(x->c, 1, 1), NULL);
		free(v);
		x->damage = xcb_generate_id(x->c);
		/* An event whenever the damaged area grows: how long drawing
		 * goes on shows (NonEmpty would tell only that it began). */
		xcb_damage_create(x->c, x->damage, x->root, XCB_DAMAGE_REPORT_LEVEL_BOUNDING_BOX);
	}
	x->win = xcb_generate_id(x->c);
	xcb_create_window(x->c, XCB_COPY_FROM_PARENT, x->win, x->root, -10, -10, 1, 1, 0,
			  XCB_WINDOW_CLASS_INPUT_ONLY, XCB_COPY_FROM_PARENT, 0, NULL);
	x->a_clipboard = atom(x->c, "CLIPBOARD");
	x->a_targets = atom(x->c, "TARGETS");
	x->a_utf8 = atom(x->c, "UTF8_STRING");
	x->a_prop = atom(x->c, "METAC_SELECTION");
	if (x->xfixes_ok) {
		xcb_xfixes_query_version_reply_t *v = xcb_xfixes_query_version_reply(
			x->c, xcb_xfixes_query_version(x->c, 1, 0), NULL);
		free(v);
		xcb_xfixes_select_selection_input(x->c, x->win, x->a_clipboard,
						  XCB_XFIXES_SELECTION_EVENT_MASK_SET_SELECTION_OWNER);
		xcb_xfixes_select_selection_input(x->c, x->win, XCB_ATOM_PRIMARY,
						  XCB_XFIXES_SELECTION_EVENT_MASK_SET_SELECTION_OWNER);
	}
	if ((e = load_keymap(x)) < 0) {
		snprintf(err, errsz, "cannot read the keyboard map of display :%d", display);
		goto fail;
	}
	x->first = 1;
	snprintf(name, sizeof(name), "metac desktop :%d", display);
	if (!(x->d = rfb_desktop_new(name))) {
		e = -ENOMEM;
		snprintf(err, errsz, "out of memory");
		goto fail;
	}
	rfb_desktop_set_input(x->d, &x11_input, x);
	xcb_flush(x->c);
	if ((e = -pthread_create(&x->thread, NULL, capture_thread, x)) < 0) {
		snprintf(err, errsz, "cannot start a capture thread: %s", strerror(-e));
		goto fail;
	}
	x->thread_on = 1;
	*out = x;
	return 0;
fail:
	rfb_x11_close(x);
	return e;
}

struct rfb_desktop *rfb_x11_desktop(struct rfb_x11 *x)
{
	return x->d;
}

int rfb_x11_alive(struct rfb_x11 *x)
{
	return !x->stop && !xcb_connection_has_error(x->c);
}
