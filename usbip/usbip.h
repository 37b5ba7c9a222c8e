/*
 * A USB/IP server: the protocol of the Linux usbip tools (the kernel's
 * Documentation/usb/usbip_protocol.rst) over any stream descriptor.
 * Before import, a connection asks for the device list (OP_REQ_DEVLIST)
 * or imports one device (OP_REQ_IMPORT); after import it carries URBs:
 * USBIP_CMD_SUBMIT answered by USBIP_RET_SUBMIT, USBIP_CMD_UNLINK by
 * USBIP_RET_UNLINK. Everything is big-endian.
 *
 * A device is a backend behind struct usbip_dev_ops: usbip/softdev.c (a
 * HID device in software, for tests) or a real one. Nothing the client
 * sends is trusted: transfer lengths are bounded by USBIP_MAX_TRANSFER,
 * ISO packet counts by USBIP_MAX_ISO, URBs in flight by USBIP_MAX_URBS,
 * and a malformed header ends the session.
 */
#ifndef METAC_USBIP_H
#define METAC_USBIP_H

#include <stddef.h>
#include <stdint.h>

#define USBIP_VERSION 0x0111
#define USBIP_PORT 3240
#define USBIP_MAX_TRANSFER (1u << 20)
#define USBIP_MAX_ISO 1024
#define USBIP_MAX_URBS 256
#define USBIP_MAX_INTERFACES 32

#define USBIP_OP_REQ_DEVLIST 0x8005
#define USBIP_OP_REP_DEVLIST 0x0005
#define USBIP_OP_REQ_IMPORT 0x8003
#define USBIP_OP_REP_IMPORT 0x0003
#define USBIP_CMD_SUBMIT 1
#define USBIP_CMD_UNLINK 2
#define USBIP_RET_SUBMIT 3
#define USBIP_RET_UNLINK 4
#define USBIP_HDR_LEN 48
#define USBIP_DEV_LEN 312 /* struct usbip_usb_device on the wire */
#define USBIP_ISO_LEN 16

struct buf;

/* What OP_REP_DEVLIST and OP_REP_IMPORT say of a device. */
struct usbip_dev_info {
	char path[256], busid[32];
	uint32_t busnum, devnum, speed; /* speed: 1 low, 2 full, 3 high, 5 super */
	uint16_t id_vendor, id_product, bcd_device;
	uint8_t dev_class, dev_subclass, dev_protocol;
	uint8_t config_value, num_configs, num_interfaces;
	struct {
		uint8_t class, subclass, protocol;
	} intf[USBIP_MAX_INTERFACES];
};

struct usbip_iso {
	uint32_t offset, length, actual, status;
};

/* One URB: what CMD_SUBMIT asked, and room for the answer. */
struct usbip_urb {
	uint32_t seqnum, devid, dir_in, ep, flags;
	int32_t length, start_frame, npackets, interval;
	uint8_t setup[8];
	uint8_t *data;          /* length bytes: OUT data, or room for IN data */
	struct usbip_iso *iso;  /* npackets of them, or NULL */
	/* the answer */
	int32_t status, actual, error_count;
	uint32_t unlink_seq; /* an unlink waits for this URB to end (0: none) */
	struct usbip_urb *next; /* the session's list of URBs in flight */
	void *backend;          /* for the backend's use */
};

struct usbip_session;

struct usbip_dev_ops {
	/* Starts u; it completes now or later through usbip_complete, from
	 * the session's thread. 0, or -errno to answer it with that status. */
	int (*submit)(void *dev, struct usbip_session *s, struct usbip_urb *u);
	/* Cancels u: 1 if it was cancelled at once (no completion follows),
	 * 0 if it is too late, 2 if the cancel is under way (u completes,
	 * with -ECONNRESET if it was cancelled in time). */
	int (*unlink)(void *dev, struct usbip_session *s, struct usbip_urb *u);
	/* The client went away: cancel everything, release the device. */
	void (*release)(void *dev, struct usbip_session *s);
	/* For backends whose URBs complete on threads of their own: a
	 * descriptor that is readable when some have (NULL: none), and
	 * events(), called on the session's thread, completes them. */
	int (*event_fd)(void *dev);
	void (*events)(void *dev, struct usbip_session *s, struct buf *out);
};

struct usbip_export {
	struct usbip_dev_info info;
	const struct usbip_dev_ops *ops;
	void *dev;
};

/* A session over the exported devices (at most one imported). Bytes fed
 * are handled at once; what the server sends is appended to out. 0 while
 * the session goes on, 1 once it ended cleanly (a device list sent),
 * -errno when it must end. */
struct usbip_session *usbip_session_new(const struct usbip_export *devs, int ndevs);
int usbip_session_feed(struct usbip_session *s, const uint8_t *p, size_t n, struct buf *out);
void usbip_session_free(struct usbip_session *s);
/* A backend's answer to u (status 0 or -errno as Linux's URB status,
 * actual bytes of IN data in u->data); the RET_SUBMIT goes to out. */
void usbip_complete(struct usbip_session *s, struct usbip_urb *u, int status, int32_t actual,
		    struct buf *out);
/* The output buffer of the feed in progress, for backends that complete
 * from within submit. */
struct buf *usbip_session_out(struct usbip_session *s);

/* Serves one client on fd until it leaves; closes fd. 0 or -errno. */
int usbip_serve(const struct usbip_export *devs, int ndevs, int fd);

/* A device of this host (usbip/host.c, libusb on its usbfs node), by
 * busid ("1-1.2"): opened and its interfaces claimed (kernel drivers
 * detached until usbip_host_close). 0, or -errno with why in err. */
struct usbip_host;
int usbip_host_open(const char *busid, struct usbip_host **out, struct usbip_export *ex,
		    char *err, size_t errsz);
void usbip_host_close(struct usbip_host *h);
/* The busid of the first device with that vendor and product: 0 or -ENOENT. */
int usbip_host_find(uint16_t vid, uint16_t pid, char *busid, size_t sz);
/* This host's devices (busid, ids, bus and device numbers): how many. */
int usbip_host_list(struct usbip_dev_info *out, int max);

/* The software test device (usbip/softdev.c): a HID device, vendor
 * 0x1209 (pid.codes) product 0x0001 (its test id), whose interrupt IN
 * endpoint 0x81 returns each report set with SET_REPORT. */
struct usbip_softdev;
struct usbip_softdev *usbip_softdev_new(const char *busid);
void usbip_softdev_free(struct usbip_softdev *d);
void usbip_softdev_export(struct usbip_softdev *d, struct usbip_export *ex);
/* Its descriptors, as GET_DESCRIPTOR answers them (for tests). */
size_t usbip_softdev_descriptor(uint8_t type, uint8_t index, const uint8_t **p);

#endif
