/*
 * A USB device in software, for tests (there is no USB hardware on the
 * machines that run them): full speed, one configuration, one HID
 * interface with an interrupt IN endpoint (0x81), vendor-defined 8-byte
 * reports. It answers the standard requests a host sends while it
 * enumerates a device (GET_DESCRIPTOR, SET_ADDRESS, SET/GET_CONFIGURATION,
 * GET_STATUS, SET_INTERFACE) and HID's (SET_IDLE, SET_PROTOCOL,
 * SET_REPORT, GET_REPORT); a report set with SET_REPORT comes back on
 * the interrupt endpoint, where URBs wait until there is one (as on real
 * hardware, which NAKs), so a round trip through it has something to
 * carry. Anything else stalls (-EPIPE).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usbip/usbip.h"

#define VID 0x1209 /* pid.codes */
#define PID 0x0001 /* its id for tests */
#define REPORT_LEN 8
#define MAX_WAITING 64

static const uint8_t dev_desc[18] = {
	18, 1, 0x00, 0x02, /* USB 2.0 */
	0, 0, 0, 64,        /* class in the interface; ep0 of 64 bytes */
	VID & 0xff, VID >> 8, PID & 0xff, PID >> 8,
	0x00, 0x01,         /* bcdDevice 1.00 */
	1, 2, 3, 1,         /* strings; one configuration */
};

static const uint8_t report_desc[] = {
	0x06, 0x00, 0xff, /* usage page: vendor */
	0x09, 0x01,       /* usage 1 */
	0xa1, 0x01,       /* collection: application */
	0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08, 0x95, REPORT_LEN,
	0x09, 0x01, 0x81, 0x02, /* input: 8 bytes */
	0x09, 0x01, 0x91, 0x02, /* output: 8 bytes */
	0xc0,
};

static const uint8_t config_desc[9 + 9 + 9 + 7] = {
	9, 2, sizeof(config_desc), 0, 1, 1, 0, 0x80, 50, /* one interface, 100 mA */
	9, 4, 0, 0, 1, 3, 0, 0, 0,                     /* HID, one endpoint */
	9, 0x21, 0x11, 0x01, 0, 1, 0x22, sizeof(report_desc), 0,
	7, 5, 0x81, 3, REPORT_LEN, 0, 10,              /* interrupt IN, 10 ms */
};

static const char *const strings[] = { NULL, "metac", "metac test HID", "0001" };

struct usbip_softdev {
	char busid[32];
	uint8_t config, report[REPORT_LEN];
	int report_new;
	struct usbip_urb *waiting[MAX_WAITING]; /* interrupt IN, oldest first */
	int nwaiting;
};

size_t usbip_softdev_descriptor(uint8_t type, uint8_t index, const uint8_t **p)
{
	static uint8_t str[64];
	size_t n;

	switch (type) {
	case 1:
		*p = dev_desc;
		return sizeof(dev_desc);
	case 2:
		*p = config_desc;
		return sizeof(config_desc);
	case 3:
		if (index == 0) {
			static const uint8_t langs[4] = { 4, 3, 0x09, 0x04 }; /* en-US */
			*p = langs;
			return sizeof(langs);
		}
		if (index >= sizeof(strings) / sizeof(*strings))
			return 0;
		n = strlen(strings[index]);
		str[0] = (uint8_t)(2 + 2 * n);
		str[1] = 3;
		for (size_t i = 0; i < n; i++) {
			str[2 + 2 * i] = (uint8_t)strings[index][i];
			str[3 + 2 * i] = 0;
		}
		*p = str;
		return 2 + 2 * n;
	case 0x22:
		*p = report_desc;
		return sizeof(report_desc);
	}
	return 0;
}

/* Copies what a request returns into u: its length, cut to wLength. */
static int reply(struct usbip_urb *u, const void *p, size_t n, int32_t *actual)
{
	uint16_t wlength = (uint16_t)(u->setup[6] | u->setup[7] << 8);
	size_t k = n < wlength ? n : wlength;

	if (k > (size_t)u->length)
		k = (size_t)u->length;
	memcpy(u->data, p, k);
	*actual = (int32_t)k;
	return 0;
}

/* A control request: 0 with *actual, or -EPIPE (stall). */
static int control(struct usbip_softdev *d, struct usbip_urb *u, int32_t *actual)
{
	uint8_t type = u->setup[0], req = u->setup[1];
	uint16_t value = (uint16_t)(u->setup[2] | u->setup[3] << 8);
	uint16_t wlength = (uint16_t)(u->setup[6] | u->setup[7] << 8);
	const uint8_t *p;
	size_t n;

	*actual = 0;
	if (type == 0x80 && req == 6) { /* GET_DESCRIPTOR (device) */
		if (!(n = usbip_softdev_descriptor(value >> 8, value & 0xff, &p)) || (value >> 8) == 0x22)
			return -EPIPE;
		return reply(u, p, n, actual);
	}
	if (type == 0x81 && req == 6 && value >> 8 == 0x22) /* the HID report descriptor */
		return reply(u, report_desc, sizeof(report_desc), actual);
	if (type == 0x81 && req == 6 && value >> 8 == 0x21) /* the HID descriptor */
		return reply(u, config_desc + 18, 9, actual);
	if (type == 0x00 && req == 5) /* SET_ADDRESS: the host side's business */
		return 0;
	if (type == 0x00 && req == 9) { /* SET_CONFIGURATION */
		if ((value & 0xff) > 1)
			return -EPIPE;
		d->config = (uint8_t)value;
		return 0;
	}
	if (type == 0x80 && req == 8) /* GET_CONFIGURATION */
		return reply(u, &d->config, 1, actual);
	if ((type & 0x9f) == 0x80 && req == 0) { /* GET_STATUS: bus powered, nothing */
		static const uint8_t zero[2];
		return reply(u, zero, 2, actual);
	}
	if (type == 0x01 && req == 11) /* SET_INTERFACE: it has one setting */
		return value == 0 ? 0 : -EPIPE;
	if (type == 0x21 && (req == 0x0a || req == 0x0b)) /* SET_IDLE, SET_PROTOCOL */
		return 0;
	if (type == 0x21 && req == 0x09) { /* SET_REPORT */
		if (wlength != REPORT_LEN || u->length < REPORT_LEN || u->dir_in)
			return -EPIPE;
		memcpy(d->report, u->data, REPORT_LEN);
		d->report_new = 1;
		*actual = REPORT_LEN;
		return 0;
	}
	if (type == 0xa1 && req == 0x01) /* GET_REPORT */
		return reply(u, d->report, REPORT_LEN, actual);
	return -EPIPE;
}

/* A new report for the oldest waiting interrupt URB. */
static void deliver(struct usbip_softdev *d, struct usbip_session *s)
{
	struct usbip_urb *u;
	int32_t k;

	if (!d->report_new || !d->nwaiting)
		return;
	u = d->waiting[0];
	memmove(d->waiting, d->waiting + 1, (size_t)--d->nwaiting * sizeof(*d->waiting));
	k = u->length < REPORT_LEN ? u->length : REPORT_LEN;
	memcpy(u->data, d->report, (size_t)k);
	d->report_new = 0;
	usbip_complete(s, u, 0, k, usbip_session_out(s));
}

static int soft_submit(void *dev, struct usbip_session *s, struct usbip_urb *u)
{
	struct usbip_softdev *d = dev;
	int32_t actual;
	int r;

	if (u->ep == 0) {
		if ((r = control(d, u, &actual)) < 0)
			return r;
		usbip_complete(s, u, 0, actual, usbip_session_out(s));
		deliver(d, s);
		return 0;
	}
	if (u->ep == 1 && u->dir_in && u->npackets <= 0) {
		if (d->nwaiting == MAX_WAITING)
			return -ENOSPC;
		d->waiting[d->nwaiting++] = u;
		deliver(d, s);
		return 0;
	}
	return -EPIPE; /* no such endpoint */
}

static int soft_unlink(void *dev, struct usbip_session *s, struct usbip_urb *u)
{
	struct usbip_softdev *d = dev;

	for (int i = 0; i < d->nwaiting; i++)
		if (d->waiting[i] == u) {
			memmove(d->waiting + i, d->waiting + i + 1,
				(size_t)(d->nwaiting - i - 1) * sizeof(*d->waiting));
			d->nwaiting--;
			return 1;
		}
	return 0;
}

static void soft_release(void *dev, struct usbip_session *s)
{
	struct usbip_softdev *d = dev;
	d->nwaiting = 0; /* the session frees the URBs */
	d->config = 0;
}

static const struct usbip_dev_ops soft_ops = {
	.submit = soft_submit,
	.unlink = soft_unlink,
	.release = soft_release,
};

struct usbip_softdev *usbip_softdev_new(const char *busid)
{
	struct usbip_softdev *d = calloc(1, sizeof(*d));

	if (d)
		snprintf(d->busid, sizeof(d->busid), "%s", busid);
	return d;
}

void usbip_softdev_free(struct usbip_softdev *d)
{
	free(d);
}

void usbip_softdev_export(struct usbip_softdev *d, struct usbip_export *ex)
{
	memset(ex, 0, sizeof(*ex));
	snprintf(ex->info.path, sizeof(ex->info.path), "/sys/devices/metac/softdev/%s", d->busid);
	snprintf(ex->info.busid, sizeof(ex->info.busid), "%s", d->busid);
	ex->info.busnum = 1;
	ex->info.devnum = 1;
	ex->info.speed = 2; /* full */
	ex->info.id_vendor = VID;
	ex->info.id_product = PID;
	ex->info.bcd_device = 0x0100;
	ex->info.config_value = 1;
	ex->info.num_configs = 1;
	ex->info.num_interfaces = 1;
	ex->info.intf[0].class = 3; /* HID */
	ex->ops = &soft_ops;
	ex->dev = d;
}
