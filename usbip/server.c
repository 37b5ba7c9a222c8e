/*
 * The USB/IP server's protocol (see usbip.h): a session parses what the
 * client sends, answers the device list and import, and turns URB
 * commands into backend calls and backend completions into replies.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "usbip/usbip.h"

enum state { ST_OP, ST_URB, ST_DONE };

struct usbip_session {
	const struct usbip_export *devs;
	int ndevs;
	const struct usbip_export *dev; /* the one imported */
	enum state state;
	struct buf in;
	struct buf *out; /* during a feed */
	struct usbip_urb *urbs;
	int nurbs;
};

struct usbip_session *usbip_session_new(const struct usbip_export *devs, int ndevs)
{
	struct usbip_session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->devs = devs;
	s->ndevs = ndevs;
	buf_init(&s->in);
	return s;
}

static void urb_free(struct usbip_urb *u)
{
	free(u->data);
	free(u->iso);
	free(u);
}

static void urb_unlist(struct usbip_session *s, struct usbip_urb *u)
{
	for (struct usbip_urb **pp = &s->urbs; *pp; pp = &(*pp)->next)
		if (*pp == u) {
			*pp = u->next;
			s->nurbs--;
			return;
		}
}

void usbip_session_free(struct usbip_session *s)
{
	if (!s)
		return;
	if (s->dev && s->dev->ops->release)
		s->dev->ops->release(s->dev->dev, s);
	while (s->urbs) {
		struct usbip_urb *u = s->urbs;
		s->urbs = u->next;
		urb_free(u);
	}
	buf_free(&s->in);
	free(s);
}

struct buf *usbip_session_out(struct usbip_session *s)
{
	return s->out;
}

static void put_dev(struct buf *out, const struct usbip_dev_info *d, int with_intf)
{
	char path[256] = { 0 }, busid[32] = { 0 };

	/* NUL-padded fields: whatever follows the name is zero. */
	memcpy(path, d->path, strnlen(d->path, sizeof(path) - 1));
	memcpy(busid, d->busid, strnlen(d->busid, sizeof(busid) - 1));
	buf_put(out, path, sizeof(path));
	buf_put(out, busid, sizeof(busid));
	buf_put_u32_be(out, d->busnum);
	buf_put_u32_be(out, d->devnum);
	buf_put_u32_be(out, d->speed);
	buf_put_u16_be(out, d->id_vendor);
	buf_put_u16_be(out, d->id_product);
	buf_put_u16_be(out, d->bcd_device);
	buf_put_u8(out, d->dev_class);
	buf_put_u8(out, d->dev_subclass);
	buf_put_u8(out, d->dev_protocol);
	buf_put_u8(out, d->config_value);
	buf_put_u8(out, d->num_configs);
	buf_put_u8(out, d->num_interfaces);
	for (int i = 0; with_intf && i < d->num_interfaces && i < USBIP_MAX_INTERFACES; i++) {
		buf_put_u8(out, d->intf[i].class);
		buf_put_u8(out, d->intf[i].subclass);
		buf_put_u8(out, d->intf[i].protocol);
		buf_put_u8(out, 0);
	}
}

static void put_op(struct buf *out, uint16_t code, uint32_t status)
{
	buf_put_u16_be(out, USBIP_VERSION);
	buf_put_u16_be(out, code);
	buf_put_u32_be(out, status);
}

/* An operation before import: > 0 consumed, 0 more needed, 1 session
 * over is signalled by state ST_DONE. */
static long handle_op(struct usbip_session *s, const uint8_t *p, size_t n)
{
	uint16_t version, code;
	char busid[33];

	if (n < 8)
		return 0;
	version = get_be16(p);
	code = get_be16(p + 2);
	if (version >> 8 != 1) /* 1.x: what every usbip tool speaks */
		return -EPROTO;
	if (code == USBIP_OP_REQ_DEVLIST) {
		put_op(s->out, USBIP_OP_REP_DEVLIST, 0);
		buf_put_u32_be(s->out, (uint32_t)s->ndevs);
		for (int i = 0; i < s->ndevs; i++)
			put_dev(s->out, &s->devs[i].info, 1);
		s->state = ST_DONE;
		return 8;
	}
	if (code != USBIP_OP_REQ_IMPORT)
		return -EPROTO;
	if (n < 8 + 32)
		return 0;
	memcpy(busid, p + 8, 32);
	busid[32] = 0;
	for (int i = 0; i < s->ndevs; i++)
		if (!strcmp(busid, s->devs[i].info.busid)) {
			s->dev = &s->devs[i];
			break;
		}
	if (!s->dev) {
		put_op(s->out, USBIP_OP_REP_IMPORT, 1);
		s->state = ST_DONE;
		return 40;
	}
	put_op(s->out, USBIP_OP_REP_IMPORT, 0);
	put_dev(s->out, &s->dev->info, 0);
	s->state = ST_URB;
	return 40;
}

static void put_header(struct buf *out, uint32_t cmd, uint32_t seqnum)
{
	buf_put_u32_be(out, cmd);
	buf_put_u32_be(out, seqnum);
	buf_put_u32_be(out, 0); /* devid, direction, ep: 0 in replies */
	buf_put_u32_be(out, 0);
	buf_put_u32_be(out, 0);
}

static void put_ret_unlink(struct buf *out, uint32_t seqnum, int32_t status)
{
	put_header(out, USBIP_RET_UNLINK, seqnum);
	buf_put_u32_be(out, (uint32_t)status);
	buf_put(out, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24);
}

void usbip_complete(struct usbip_session *s, struct usbip_urb *u, int status, int32_t actual,
		    struct buf *out)
{
	int iso = u->iso && u->npackets > 0;

	if (u->unlink_seq && status == -ECONNRESET) {
		/* Cancelled by an unlink: its answer is the only one. */
		put_ret_unlink(out, u->unlink_seq, -ECONNRESET);
		urb_unlist(s, u);
		urb_free(u);
		return;
	}
	if (actual < 0 || actual > u->length)
		actual = 0;
	put_header(out, USBIP_RET_SUBMIT, u->seqnum);
	buf_put_u32_be(out, (uint32_t)status);
	buf_put_u32_be(out, (uint32_t)actual);
	buf_put_u32_be(out, (uint32_t)u->start_frame);
	buf_put_u32_be(out, iso ? (uint32_t)u->npackets : 0xffffffffu);
	buf_put_u32_be(out, (uint32_t)u->error_count);
	buf_put(out, "\0\0\0\0\0\0\0\0", 8);
	if (u->dir_in && actual)
		buf_put(out, u->data, (size_t)actual);
	for (int i = 0; iso && i < u->npackets; i++) {
		buf_put_u32_be(out, u->iso[i].offset);
		buf_put_u32_be(out, u->iso[i].length);
		buf_put_u32_be(out, u->iso[i].actual);
		buf_put_u32_be(out, u->iso[i].status);
	}
	if (u->unlink_seq) /* too late to cancel: done, and the unlink answered */
		put_ret_unlink(out, u->unlink_seq, 0);
	urb_unlist(s, u);
	urb_free(u);
}

static long handle_submit(struct usbip_session *s, const uint8_t *p, size_t n)
{
	int32_t length = (int32_t)get_be32(p + 24), npackets = (int32_t)get_be32(p + 32);
	uint32_t dir_in = get_be32(p + 12);
	size_t need = USBIP_HDR_LEN, isos;
	struct usbip_urb *u;
	int e;

	if (length < 0 || (uint32_t)length > USBIP_MAX_TRANSFER || dir_in > 1 ||
	    get_be32(p + 16) > 15)
		return -EPROTO;
	/* 0 or -1 (0xffffffff): not isochronous. */
	if (npackets != -1 && (npackets < 0 || npackets > USBIP_MAX_ISO))
		return -EPROTO;
	isos = npackets > 0 ? (size_t)npackets : 0;
	need += (dir_in ? 0 : (size_t)length) + isos * USBIP_ISO_LEN;
	if (n < need)
		return 0;
	if (s->nurbs >= USBIP_MAX_URBS)
		return -EPROTO; /* a client that never waits */
	if (!(u = calloc(1, sizeof(*u))) || !(u->data = malloc(length ? (size_t)length : 1)) ||
	    (isos && !(u->iso = calloc(isos, sizeof(*u->iso))))) {
		if (u)
			urb_free(u);
		return -ENOMEM;
	}
	u->seqnum = get_be32(p + 4);
	u->devid = get_be32(p + 8);
	u->dir_in = dir_in;
	u->ep = get_be32(p + 16);
	u->flags = get_be32(p + 20);
	u->length = length;
	u->start_frame = (int32_t)get_be32(p + 28);
	u->npackets = npackets;
	u->interval = (int32_t)get_be32(p + 36);
	memcpy(u->setup, p + 40, 8);
	if (!dir_in)
		memcpy(u->data, p + USBIP_HDR_LEN, (size_t)length);
	else
		memset(u->data, 0, (size_t)length);
	for (size_t i = 0; i < isos; i++) {
		const uint8_t *d = p + USBIP_HDR_LEN + (dir_in ? 0 : (size_t)length) + i * USBIP_ISO_LEN;
		u->iso[i].offset = get_be32(d);
		u->iso[i].length = get_be32(d + 4);
		if (u->iso[i].offset > (uint32_t)length ||
		    u->iso[i].length > (uint32_t)length - u->iso[i].offset) {
			urb_free(u);
			return -EPROTO;
		}
	}
	u->next = s->urbs;
	s->urbs = u;
	s->nurbs++;
	if ((e = s->dev->ops->submit(s->dev->dev, s, u)) < 0)
		usbip_complete(s, u, e, 0, s->out);
	return (long)need;
}

static long handle_unlink(struct usbip_session *s, const uint8_t *p)
{
	uint32_t seqnum = get_be32(p + 4), victim = get_be32(p + 20);
	int32_t status = 0;

	for (struct usbip_urb *u = s->urbs; u; u = u->next)
		if (u->seqnum == victim && !u->unlink_seq) {
			int r = s->dev->ops->unlink(s->dev->dev, s, u);
			if (r == 1) {
				urb_unlist(s, u);
				urb_free(u);
				status = -ECONNRESET;
			} else if (r == 2 && seqnum) {
				u->unlink_seq = seqnum; /* answered when u ends */
				return USBIP_HDR_LEN;
			}
			break;
		}
	put_ret_unlink(s->out, seqnum, status);
	return USBIP_HDR_LEN;
}

static long handle_urb(struct usbip_session *s, const uint8_t *p, size_t n)
{
	if (n < USBIP_HDR_LEN)
		return 0;
	switch (get_be32(p)) {
	case USBIP_CMD_SUBMIT:
		return handle_submit(s, p, n);
	case USBIP_CMD_UNLINK:
		return handle_unlink(s, p);
	}
	return -EPROTO;
}

int usbip_session_feed(struct usbip_session *s, const uint8_t *p, size_t n, struct buf *out)
{
	long r = 0;

	if (s->state == ST_DONE)
		return 1;
	if (n && buf_put(&s->in, p, n) < 0)
		return -ENOMEM;
	s->out = out;
	while (s->state != ST_DONE && buf_avail(&s->in)) {
		if (s->state == ST_OP)
			r = handle_op(s, buf_head(&s->in), buf_avail(&s->in));
		else
			r = handle_urb(s, buf_head(&s->in), buf_avail(&s->in));
		if (r <= 0)
			break;
		buf_consume(&s->in, (size_t)r);
	}
	s->out = NULL;
	if (r < 0)
		return (int)r;
	return s->state == ST_DONE ? 1 : 0;
}

int usbip_serve(const struct usbip_export *devs, int ndevs, int fd)
{
	struct usbip_session *s = usbip_session_new(devs, ndevs);
	uint8_t *b = malloc(65536);
	struct buf out;
	int r = 0;

	buf_init(&out);
	if (!s || !b) {
		r = -ENOMEM;
		goto done;
	}
	for (;;) {
		const struct usbip_export *dev = s->dev;
		int efd = dev && dev->ops->event_fd ? dev->ops->event_fd(dev->dev) : -1;
		struct pollfd pfd[2] = { { .fd = fd, .events = POLLIN }, { .fd = efd, .events = POLLIN } };
		ssize_t k;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if (pfd[1].revents) {
			dev->ops->events(dev->dev, s, &out);
			r = 0;
		}
		if (pfd[0].revents) {
			k = read(fd, b, 65536);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				r = k < 0 ? -errno : 0;
				break;
			}
			r = usbip_session_feed(s, b, (size_t)k, &out);
		}
		while (buf_avail(&out)) {
			ssize_t w = send(fd, buf_head(&out), buf_avail(&out), MSG_NOSIGNAL);
			if (w < 0 && errno == ENOTSOCK)
				w = write(fd, buf_head(&out), buf_avail(&out));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				r = -EPIPE;
				break;
			}
			buf_consume(&out, (size_t)w);
		}
		buf_reset(&out);
		if (r != 0)
			break;
	}
	if (r == 1)
		r = 0;
done:
	usbip_session_free(s);
	buf_free(&out);
	free(b);
	close(fd);
	return r;
}
