/*
 * A host's own USB device as a USB/IP backend, through libusb (static;
 * see lib/nodl.c for why libusb's udev calls are stubbed out: devices are
 * found in sysfs and opened by their usbfs node, with device discovery
 * off). Transfers are libusb's asynchronous ones; its events run on a
 * thread of their own, which queues finished URBs and wakes the session
 * (event_fd), whose thread answers them (events).
 *
 * As the kernel's usbip-host does, requests that change the device's
 * state are done, not passed on: SET_CONFIGURATION (interfaces released
 * and claimed again), SET_INTERFACE, CLEAR_FEATURE(ENDPOINT_HALT) and a
 * port reset. Kernel drivers are detached while the device is imported
 * and attached again when it is released.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libusb-1.0/libusb.h>

#include "lib/buf.h"
#include "usbip/usbip.h"

#define SYSFS "/sys/bus/usb/devices"

static libusb_context *ctx;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static int ctx_err;

static void *event_thread(void *arg)
{
	for (;;)
		libusb_handle_events(ctx);
	return NULL;
}

static void ctx_init(void)
{
	pthread_t t;

	libusb_set_option(NULL, LIBUSB_OPTION_NO_DEVICE_DISCOVERY);
	if (libusb_init(&ctx) < 0 || pthread_create(&t, NULL, event_thread, NULL) != 0) {
		ctx_err = -EIO;
		return;
	}
	pthread_detach(t);
}

struct usbip_host {
	int fd, efd;
	libusb_device_handle *h;
	struct libusb_config_descriptor *config;
	uint8_t ep_type[32]; /* per endpoint address (IN in 16..31): LIBUSB_TRANSFER_TYPE_* */
	int claimed;
	pthread_mutex_t lock;
	struct usbip_urb *done, **done_tail; /* finished, for the session's thread */
	struct xfer *inflight; /* submitted, not yet finished by the session */
	int ninflight;
};

struct xfer { /* u->backend */
	struct usbip_host *h;
	struct libusb_transfer *t;
	uint8_t *buf; /* control: setup and data */
	int status;
	struct usbip_urb *next_done;
	struct xfer *prev, *next; /* in h->inflight */
};

/* --- sysfs ----------------------------------------------------------- */

static int sysfs_read(const char *busid, const char *attr, char *out, size_t sz)
{
	char path[320];
	FILE *f;

	snprintf(path, sizeof(path), SYSFS "/%s/%s", busid, attr);
	if (!(f = fopen(path, "r")))
		return -errno;
	if (!fgets(out, (int)sz, f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	out[strcspn(out, "\n")] = 0;
	return 0;
}

static int is_device(const char *name)
{
	/* BUS-PORT[.PORT...]; interfaces have a ':' and root hubs are usbN */
	return name[0] >= '1' && name[0] <= '9' && strchr(name, '-') && !strchr(name, ':');
}

int usbip_host_find(uint16_t vid, uint16_t pid, char *busid, size_t sz)
{
	DIR *d = opendir(SYSFS);
	struct dirent *e;
	char v[16], p[16];
	int r = -ENOENT;

	if (!d)
		return -ENOENT;
	while (r < 0 && (e = readdir(d)))
		if (is_device(e->d_name) && sysfs_read(e->d_name, "idVendor", v, sizeof(v)) == 0 &&
		    sysfs_read(e->d_name, "idProduct", p, sizeof(p)) == 0 &&
		    strtoul(v, NULL, 16) == vid && strtoul(p, NULL, 16) == pid &&
		    strlen(e->d_name) < sz) {
			strcpy(busid, e->d_name);
			r = 0;
		}
	closedir(d);
	return r;
}

int usbip_host_list(struct usbip_dev_info *out, int max)
{
	DIR *d = opendir(SYSFS);
	struct dirent *e;
	char v[32];
	int n = 0;

	if (!d)
		return 0;
	while (n < max && (e = readdir(d))) {
		struct usbip_dev_info *i = &out[n];
		if (!is_device(e->d_name) || strlen(e->d_name) >= sizeof(i->busid))
			continue;
		memset(i, 0, sizeof(*i));
		strcpy(i->busid, e->d_name);
		snprintf(i->path, sizeof(i->path), SYSFS "/%.31s", e->d_name);
		if (sysfs_read(e->d_name, "idVendor", v, sizeof(v)) == 0)
			i->id_vendor = (uint16_t)strtoul(v, NULL, 16);
		if (sysfs_read(e->d_name, "idProduct", v, sizeof(v)) == 0)
			i->id_product = (uint16_t)strtoul(v, NULL, 16);
		if (sysfs_read(e->d_name, "busnum", v, sizeof(v)) == 0)
			i->busnum = (uint32_t)strtoul(v, NULL, 10);
		if (sysfs_read(e->d_name, "devnum", v, sizeof(v)) == 0)
			i->devnum = (uint32_t)strtoul(v, NULL, 10);
		n++;
	}
	closedir(d);
	return n;
}

/* --- claiming ---------------------------------------------------------- */

static void release_all(struct usbip_host *h)
{
	if (!h->config)
		return;
	for (int i = 0; i < h->config->bNumInterfaces; i++)
		if (h->claimed & 1 << i)
			libusb_release_interface(h->h, i);
	h->claimed = 0;
	libusb_free_config_descriptor(h->config);
	h->config = NULL;
}

/* The active configuration's interfaces claimed (kernel drivers detached)
 * and its endpoints' types known. */
static int claim_all(struct usbip_host *h)
{
	release_all(h);
	memset(h->ep_type, LIBUSB_TRANSFER_TYPE_BULK, sizeof(h->ep_type));
	if (libusb_get_active_config_descriptor(libusb_get_device(h->h), &h->config) < 0) {
		h->config = NULL;
		return 0; /* unconfigured: only ep 0 works */
	}
	for (int i = 0; i < h->config->bNumInterfaces && i < 31; i++) {
		const struct libusb_interface *in = &h->config->interface[i];
		if (libusb_claim_interface(h->h, i) == 0)
			h->claimed |= 1 << i;
		for (int a = 0; a < in->num_altsetting; a++)
			for (int k = 0; k < in->altsetting[a].bNumEndpoints; k++) {
				const struct libusb_endpoint_descriptor *ep = &in->altsetting[a].endpoint[k];
				int idx = (ep->bEndpointAddress & 0x0f) | (ep->bEndpointAddress & 0x80 ? 16 : 0);
				h->ep_type[idx] = ep->bmAttributes & 3;
			}
	}
	return 0;
}

/* --- transfers ---------------------------------------------------------- */

static int status_of(enum libusb_transfer_status st)
{
	switch (st) {
	case LIBUSB_TRANSFER_COMPLETED: return 0;
	case LIBUSB_TRANSFER_STALL: return -EPIPE;
	case LIBUSB_TRANSFER_NO_DEVICE: return -ENODEV;
	case LIBUSB_TRANSFER_TIMED_OUT: return -ETIMEDOUT;
	case LIBUSB_TRANSFER_CANCELLED: return -ECONNRESET;
	case LIBUSB_TRANSFER_OVERFLOW: return -EOVERFLOW;
	default: return -EPROTO;
	}
}

/* On libusb's thread: queue it for the session's. */
static void LIBUSB_CALL transfer_done(struct libusb_transfer *t)
{
	struct usbip_urb *u = t->user_data;
	struct xfer *x = u->backend;
	struct usbip_host *h = x->h;
	uint64_t one = 1;

	x->status = status_of(t->status);
	/* In the order they finished: a client may count on it (queued
	 * control requests do). */
	x->next_done = NULL;
	pthread_mutex_lock(&h->lock);
	*h->done_tail = u;
	h->done_tail = &x->next_done;
	pthread_mutex_unlock(&h->lock);
	if (write(h->efd, &one, sizeof(one)) < 0) {
		/* the counter is full: it is readable anyway */
	}
}

static void xfer_free(struct usbip_urb *u)
{
	struct xfer *x = u->backend;
	if (!x)
		return;
	libusb_free_transfer(x->t);
	free(x->buf);
	free(x);
	u->backend = NULL;
}

/* A URB's answer from its transfer (on the session's thread). */
static void finish(struct usbip_host *h, struct usbip_session *s, struct usbip_urb *u,
		   struct buf *out)
{
	struct xfer *x = u->backend;
	struct libusb_transfer *t = x->t;
	int32_t actual = 0;

	if (t->type == LIBUSB_TRANSFER_TYPE_CONTROL) {
		actual = t->actual_length;
		if (u->dir_in && actual > 0)
			memcpy(u->data, x->buf + 8, (size_t)actual);
	} else if (t->type == LIBUSB_TRANSFER_TYPE_ISOCHRONOUS) {
		/* IN data goes packed, packet after packet, as usbip-host sends it */
		for (int i = 0; i < u->npackets; i++) {
			struct libusb_iso_packet_descriptor *d = &t->iso_packet_desc[i];
			u->iso[i].actual = d->actual_length;
			u->iso[i].status = (uint32_t)status_of(d->status);
			if (u->dir_in && d->actual_length) {
				memmove(u->data + actual, u->data + u->iso[i].offset, d->actual_length);
			}
			actual += (int32_t)d->actual_length;
		}
		if (!u->dir_in)
			actual = t->actual_length;
	} else {
		actual = t->actual_length;
	}
	int status = x->status;

	*(x->prev ? &x->prev->next : &h->inflight) = x->next;
	if (x->next)
		x->next->prev = x->prev;
	h->ninflight--;
	xfer_free(u);
	usbip_complete(s, u, status, actual, out);
}

/* Requests that change the device's state, done here: 1 if u was one
 * (answered), 0 if it goes to the device. */
static int state_request(struct usbip_host *h, struct usbip_session *s, struct usbip_urb *u)
{
	uint8_t type = u->setup[0], req = u->setup[1];
	uint16_t value = (uint16_t)(u->setup[2] | u->setup[3] << 8);
	uint16_t index = (uint16_t)(u->setup[4] | u->setup[5] << 8);
	int r;

	if (type == 0x00 && req == LIBUSB_REQUEST_SET_CONFIGURATION) {
		int cur = -1;
		if (libusb_get_configuration(h->h, &cur) == 0 && cur == (value & 0xff))
			return usbip_complete(s, u, 0, 0, usbip_session_out(s)), 1;
		/* Our claims go without giving the interfaces back to kernel
		 * drivers (which would make the change fail as busy). */
		libusb_set_auto_detach_kernel_driver(h->h, 0);
		release_all(h);
		for (int i = 0; i < USBIP_MAX_INTERFACES; i++)
			libusb_detach_kernel_driver(h->h, i);
		r = libusb_set_configuration(h->h, value & 0xff);
		libusb_set_auto_detach_kernel_driver(h->h, 1);
		claim_all(h);
	} else if (type == 0x01 && req == LIBUSB_REQUEST_SET_INTERFACE) {
		r = libusb_set_interface_alt_setting(h->h, index, value);
	} else if (type == 0x02 && req == LIBUSB_REQUEST_CLEAR_FEATURE && value == 0) {
		r = libusb_clear_halt(h->h, (unsigned char)index);
	} else if (type == 0x23 && req == LIBUSB_REQUEST_SET_FEATURE && value == 4) {
		/* a port reset (USB_RT_PORT, USB_PORT_FEAT_RESET) */
		r = libusb_reset_device(h->h);
		claim_all(h);
	} else {
		return 0;
	}
	usbip_complete(s, u, r == 0 ? 0 : r == LIBUSB_ERROR_PIPE ? -EPIPE : -EPROTO, 0,
		       usbip_session_out(s));
	return 1;
}

static int host_submit(void *dev, struct usbip_session *s, struct usbip_urb *u)
{
	struct usbip_host *h = dev;
	int idx = (int)(u->ep & 0x0f) | (u->dir_in ? 16 : 0), type, r;
	unsigned char ep = (unsigned char)(u->ep | (u->dir_in ? 0x80 : 0));
	struct xfer *x;

	if (u->ep == 0 && state_request(h, s, u))
		return 0;
	type = u->ep == 0 ? LIBUSB_TRANSFER_TYPE_CONTROL : h->ep_type[idx];
	if (u->npackets > 0)
		type = LIBUSB_TRANSFER_TYPE_ISOCHRONOUS;
	if (!(x = calloc(1, sizeof(*x))) ||
	    !(x->t = libusb_alloc_transfer(type == LIBUSB_TRANSFER_TYPE_ISOCHRONOUS ? u->npackets : 0))) {
		free(x);
		return -ENOMEM;
	}
	x->h = h;
	u->backend = x;
	switch (type) {
	case LIBUSB_TRANSFER_TYPE_CONTROL:
		if (!(x->buf = malloc(8 + (size_t)u->length))) {
			xfer_free(u);
			return -ENOMEM;
		}
		memcpy(x->buf, u->setup, 8);
		if (!u->dir_in)
			memcpy(x->buf + 8, u->data, (size_t)u->length);
		libusb_fill_control_transfer(x->t, h->h, x->buf, transfer_done, u, 0);
		/* The setup's wLength rules; the URB's buffer may be larger. */
		break;
	case LIBUSB_TRANSFER_TYPE_ISOCHRONOUS:
		libusb_fill_iso_transfer(x->t, h->h, ep, u->data, u->length, u->npackets,
					 transfer_done, u, 0);
		for (int i = 0; i < u->npackets; i++)
			x->t->iso_packet_desc[i].length = u->iso[i].length;
		break;
	case LIBUSB_TRANSFER_TYPE_INTERRUPT:
		libusb_fill_interrupt_transfer(x->t, h->h, ep, u->data, u->length, transfer_done, u, 0);
		break;
	default:
		libusb_fill_bulk_transfer(x->t, h->h, ep, u->data, u->length, transfer_done, u, 0);
	}
	if ((r = libusb_submit_transfer(x->t)) < 0) {
		xfer_free(u);
		return r == LIBUSB_ERROR_NO_DEVICE ? -ENODEV : r == LIBUSB_ERROR_PIPE ? -EPIPE : -EPROTO;
	}
	x->prev = NULL;
	x->next = h->inflight;
	if (x->next)
		x->next->prev = x;
	h->inflight = x;
	h->ninflight++;
	return 0;
}

static int host_unlink(void *dev, struct usbip_session *s, struct usbip_urb *u)
{
	struct xfer *x = u->backend;

	if (!x)
		return 0; /* answered already */
	/* Cancelled or not (it may have finished, its answer queued), its
	 * completion comes and answers the unlink after its own. */
	libusb_cancel_transfer(x->t);
	return 2;
}

static int host_event_fd(void *dev)
{
	return ((struct usbip_host *)dev)->efd;
}

static void host_events(void *dev, struct usbip_session *s, struct buf *out)
{
	struct usbip_host *h = dev;
	struct usbip_urb *list, *u;
	uint64_t n;

	if (read(h->efd, &n, sizeof(n)) < 0) {
		/* nothing was counted */
	}
	pthread_mutex_lock(&h->lock);
	list = h->done;
	h->done = NULL;
	h->done_tail = &h->done;
	pthread_mutex_unlock(&h->lock);
	while ((u = list)) {
		list = ((struct xfer *)u->backend)->next_done;
		finish(h, s, u, out);
	}
}

/* The client went away: every transfer in flight is cancelled and waited
 * for (libusb owns their buffers, which are the session's URBs', until
 * then), interfaces go back to the kernel's drivers. */
static void host_release(void *dev, struct usbip_session *s)
{
	struct usbip_host *h = dev;
	struct buf junk;
	int waited = 0;

	buf_init(&junk);
	for (struct xfer *x = h->inflight; x; x = x->next)
		libusb_cancel_transfer(x->t);
	while (h->ninflight > 0) {
		struct pollfd p = { .fd = h->efd, .events = POLLIN };
		if (poll(&p, 1, 1000) == 0 && ++waited % 5 == 0)
			fprintf(stderr, "metac: usb: %d transfers still cancelling\n", h->ninflight);
		host_events(h, s, &junk); /* answers no one: the client left */
		buf_reset(&junk);
	}
	buf_free(&junk);
	release_all(h);
}

static const struct usbip_dev_ops host_ops = {
	.submit = host_submit,
	.unlink = host_unlink,
	.release = host_release,
	.event_fd = host_event_fd,
	.events = host_events,
};

/* Cancels whatever is still in flight when the session frees its URBs
 * (host_release waits for them first). */

int usbip_host_open(const char *busid, struct usbip_host **out, struct usbip_export *ex,
		    char *err, size_t errsz)
{
	struct usbip_host *h;
	struct libusb_device_descriptor dd;
	char v[32], node[64];
	unsigned busnum, devnum;
	int r;

	pthread_once(&ctx_once, ctx_init);
	if (ctx_err) {
		snprintf(err, errsz, "libusb does not start");
		return ctx_err;
	}
	if (sysfs_read(busid, "busnum", v, sizeof(v)) < 0 || sscanf(v, "%u", &busnum) != 1 ||
	    sysfs_read(busid, "devnum", v, sizeof(v)) < 0 || sscanf(v, "%u", &devnum) != 1) {
		snprintf(err, errsz, "no USB device %s on this host", busid);
		return -ENOENT;
	}
	if (!(h = calloc(1, sizeof(*h)))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&h->lock, NULL);
	h->done_tail = &h->done;
	snprintf(node, sizeof(node), "/dev/bus/usb/%03u/%03u", busnum, devnum);
	h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if ((h->fd = open(node, O_RDWR | O_CLOEXEC)) < 0 || h->efd < 0) {
		r = -errno;
		snprintf(err, errsz, "%s: %s", node, strerror(errno));
		goto fail;
	}
	if ((r = libusb_wrap_sys_device(ctx, h->fd, &h->h)) < 0) {
		snprintf(err, errsz, "libusb cannot open %s: %s", node, libusb_error_name(r));
		r = -EIO;
		goto fail;
	}
	libusb_set_auto_detach_kernel_driver(h->h, 1);
	claim_all(h);
	libusb_get_device_descriptor(libusb_get_device(h->h), &dd);
	memset(ex, 0, sizeof(*ex));
	snprintf(ex->info.path, sizeof(ex->info.path), SYSFS "/%s", busid);
	snprintf(ex->info.busid, sizeof(ex->info.busid), "%s", busid);
	ex->info.busnum = busnum;
	ex->info.devnum = devnum;
	switch (libusb_get_device_speed(libusb_get_device(h->h))) {
	case LIBUSB_SPEED_LOW: ex->info.speed = 1; break;
	case LIBUSB_SPEED_FULL: ex->info.speed = 2; break;
	case LIBUSB_SPEED_HIGH: ex->info.speed = 3; break;
	case LIBUSB_SPEED_SUPER: ex->info.speed = 5; break;
	default: ex->info.speed = 6;
	}
	ex->info.id_vendor = dd.idVendor;
	ex->info.id_product = dd.idProduct;
	ex->info.bcd_device = dd.bcdDevice;
	ex->info.dev_class = dd.bDeviceClass;
	ex->info.dev_subclass = dd.bDeviceSubClass;
	ex->info.dev_protocol = dd.bDeviceProtocol;
	ex->info.num_configs = dd.bNumConfigurations;
	if (h->config) {
		ex->info.config_value = h->config->bConfigurationValue;
		ex->info.num_interfaces = h->config->bNumInterfaces;
		for (int i = 0; i < h->config->bNumInterfaces && i < USBIP_MAX_INTERFACES; i++) {
			const struct libusb_interface_descriptor *a = &h->config->interface[i].altsetting[0];
			ex->info.intf[i].class = a->bInterfaceClass;
			ex->info.intf[i].subclass = a->bInterfaceSubClass;
			ex->info.intf[i].protocol = a->bInterfaceProtocol;
		}
	}
	ex->ops = &host_ops;
	ex->dev = h;
	*out = h;
	return 0;
fail:
	usbip_host_close(h);
	return r;
}

void usbip_host_close(struct usbip_host *h)
{
	if (!h)
		return;
	release_all(h);
	if (h->h)
		libusb_close(h->h); /* kernel drivers come back (auto-detach) */
	if (h->fd >= 0)
		close(h->fd);
	if (h->efd >= 0)
		close(h->efd);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
