/*
 * The usb service and applet: USB devices shared over USB/IP (usbip/).
 * A UsbDevice capability answers info and usbIpStream: each data
 * connection to that stream is a USB/IP session (device list, import,
 * URBs) on the device, in a process of its own (`usb _session`,
 * svc/session.h) that opens the device and then runs as nobody. The service's administration object is
 * UsbDevices: the host's devices, and one by product id.
 *
 * Devices, by a ref's description:
 *   busid:ID        this host's device at that USB port (usbip/host.c)
 *   productid:V:P   the first device with that vendor and product (hex),
 *                   found anew for each session: it survives being
 *                   unplugged and plugged in elsewhere
 *   softdev:NAME    a USB device in software (usbip/softdev.c), for tests
 *                   and demonstrations; each session gets a fresh one
 *   metac usb export [--persistent] local-busid:ID|local-productid:V:P|softdev:NAME
 *   metac usb serve --listen ADDR:PORT [--insecure] DEVICE|REF
 *                   plain USB/IP for the Linux usbip tools (usbip list -r,
 *                   usbip attach), of a local device or relayed to a ref
 *   metac usb attach [--direct] REF   the device on this host, through the
 *                   kernel's vhci-hcd, until interrupted
 *   metac usb list [--json] the USB devices of the daemon's host
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/cli.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/net.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/services.h"
#include "svc/session.h"
#include "usbip/usbip.h"
#include "wire/conn.h"

#define NAME_MAX_LEN 31 /* a busid's room on the wire */
#define MAX_SESSIONS 16
#define SESSION_SOCKBUF (1 << 20)
#define VHCI "/sys/devices/platform/vhci_hcd.0"

enum kind { SOFT, BUSID, PRODUCT };

struct spec {
	enum kind kind;
	char name[NAME_MAX_LEN + 1]; /* the busid (SOFT, BUSID) */
	uint16_t vid, pid;
};

static int name_ok(const char *n)
{
	if (!*n || strlen(n) > NAME_MAX_LEN)
		return 0;
	for (const char *c = n; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr(".-_", *c))
			return 0;
	return 1;
}

/* A description (softdev:, busid:, productid:), or with local to the
 * applet's spelling (local-busid:, local-productid:). */
static int spec_parse(const char *d, int local, struct spec *sp)
{
	const char *busid = local ? "local-busid:" : "busid:";
	const char *prod = local ? "local-productid:" : "productid:";
	unsigned v, p;
	int n = 0;

	memset(sp, 0, sizeof(*sp));
	if (!strncmp(d, "softdev:", 8) && name_ok(d + 8)) {
		sp->kind = SOFT;
		strcpy(sp->name, d + 8);
		return 0;
	}
	if (!strncmp(d, busid, strlen(busid)) && name_ok(d + strlen(busid))) {
		sp->kind = BUSID;
		strcpy(sp->name, d + strlen(busid));
		return 0;
	}
	if (!strncmp(d, prod, strlen(prod)) &&
	    sscanf(d + strlen(prod), "%4x:%4x%n", &v, &p, &n) == 2 && !d[strlen(prod) + n]) {
		sp->kind = PRODUCT;
		sp->vid = (uint16_t)v;
		sp->pid = (uint16_t)p;
		return 0;
	}
	return -EINVAL;
}

static void spec_format(const struct spec *sp, char *out, size_t sz)
{
	if (sp->kind == SOFT)
		snprintf(out, sz, "softdev:%s", sp->name);
	else if (sp->kind == BUSID)
		snprintf(out, sz, "busid:%s", sp->name);
	else
		snprintf(out, sz, "productid:%04x:%04x", sp->vid, sp->pid);
}

/* Where the device is now: its busid. 0, or -ENOENT with why in err. */
static int spec_locate(const struct spec *sp, char *busid, size_t sz, char *err, size_t errsz)
{
	char path[96];

	if (sp->kind == PRODUCT) {
		if (usbip_host_find(sp->vid, sp->pid, busid, sz) == 0)
			return 0;
		snprintf(err, errsz, "no USB device %04x:%04x on this host", sp->vid, sp->pid);
		return -ENOENT;
	}
	snprintf(busid, sz, "%s", sp->name);
	if (sp->kind == SOFT)
		return 0;
	snprintf(path, sizeof(path), "/sys/bus/usb/devices/%s/devnum", sp->name);
	if (access(path, R_OK) == 0)
		return 0;
	snprintf(err, errsz, "no USB device %s on this host", sp->name);
	return -ENOENT;
}

/* The device as it is found now, opened for a session: 1 and ex filled,
 * or 0 if it cannot be (a device that cannot be opened is absent from
 * the list, and its import refused, which is what a usbip client
 * understands). */
static int session_open(const struct spec *sp, struct usbip_softdev **soft,
			struct usbip_host **host, struct usbip_export *ex)
{
	char busid[NAME_MAX_LEN + 1], err[256];

	*soft = NULL;
	*host = NULL;
	if (spec_locate(sp, busid, sizeof(busid), err, sizeof(err)) < 0) {
		log_warn("usb: %s", err);
		return 0;
	}
	if (sp->kind == SOFT) {
		if (!(*soft = usbip_softdev_new(busid)))
			return 0;
		usbip_softdev_export(*soft, ex);
		return 1;
	}
	if (usbip_host_open(busid, host, ex, err, sizeof(err)) < 0) {
		log_warn("usb: %s", err);
		return 0;
	}
	return 1;
}

static void session_run(const struct spec *sp, int fd, const char *dir)
{
	struct usbip_softdev *soft;
	struct usbip_host *host;
	struct usbip_export ex;
	char what[64], err[512];
	int n, r;

	n = session_open(sp, &soft, &host, &ex);
	spec_format(sp, what, sizeof(what));
	if (dir && (r = sandbox_enter(SANDBOX_USB, dir, -1, 0, err, sizeof(err))) < 0) {
		log_error("usb session: %s", err);
	} else if ((r = usbip_serve(&ex, n, fd)) < 0) {
		log_info("usb %s: a session ended: %s", what, strerror(-r));
	}
	usbip_softdev_free(soft);
	/* Kernel drivers come back, through the device's own descriptor. */
	usbip_host_close(host);
}

/* `metac usb _session DIR --name DESCRIPTION` (svc/session.c): the
 * device is opened as root (its usbfs node), then the process becomes
 * nobody in an empty root, its ioctls limited to usbfs's, and serves
 * the one USB/IP session on fd. */
void usb_session_run(const char *dir, const char *desc, int fd)
{
	struct spec sp;

	if (spec_parse(desc, 0, &sp) < 0) {
		log_error("usb session: '%s' is not a device", desc);
		_exit(EXIT_USAGE);
	}
	session_run(&sp, fd, dir);
	_exit(EXIT_OK);
}

/* `usb serve` of a local device (a user's own process): a thread per
 * USB/IP client. */
struct session {
	int fd;
	struct spec spec;
};

static void *session_thread(void *arg)
{
	struct session *s = arg;

	session_run(&s->spec, s->fd, NULL);
	free(s);
	return NULL;
}

static int session_start(const struct spec *sp, int fd)
{
	struct session *s = calloc(1, sizeof(*s));

	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	s->fd = fd;
	s->spec = *sp;
	if (io_thread_detached(session_thread, s) < 0) {
		close(fd);
		free(s);
		return -EAGAIN;
	}
	return 0;
}

/* --- the service --------------------------------------------------- */

struct usbdev {
	struct cap cap;
	struct node *node;
	struct spec spec;
};

static void usbdev_free(struct cap *c)
{
	free(c);
}

static void stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct usbdev *)c)->node, c, call, "usbip stream");
}

static void stream_attach(struct cap *c, struct wire_conn *data)
{
	struct usbdev *d = (struct usbdev *)c;
	char desc[64];
	struct session_cfg cfg = { .kind = SANDBOX_USB, .name = desc };
	int fd, e;

	/* Each session in a process of its own (svc/session.h). */
	spec_format(&d->spec, desc, sizeof(desc));
	if ((e = node_pipe_pair(data, SESSION_SOCKBUF, &fd)) < 0)
		log_warn("usb: cannot start a USB/IP session: %s", strerror(-e));
	else
		session_spawn(d->node, &cfg, fd, -1, NULL, NULL);
}

static const struct cap_ops stream_ops = {
	.name = "usbip stream",
	.call = stream_call,
	.free = usbdev_free,
	.attach = stream_attach,
};

static struct usbdev *usbdev_new(const struct cap_ops *ops, struct node *n, const struct spec *sp)
{
	struct usbdev *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	cap_init(&d->cap, ops);
	d->node = n;
	d->spec = *sp;
	return d;
}

/* What a device is now, without opening it: the software device's
 * identity, or sysfs's. */
static int spec_info(const struct spec *sp, struct usbip_dev_info *info, char *err, size_t errsz)
{
	struct usbip_dev_info all[64];
	struct usbip_softdev *sd;
	struct usbip_export ex;
	char busid[NAME_MAX_LEN + 1];
	int e, n;

	if ((e = spec_locate(sp, busid, sizeof(busid), err, errsz)) < 0)
		return e;
	if (sp->kind == SOFT) {
		if (!(sd = usbip_softdev_new(busid)))
			return -ENOMEM;
		usbip_softdev_export(sd, &ex);
		usbip_softdev_free(sd);
		*info = ex.info;
		return 0;
	}
	n = usbip_host_list(all, 64);
	for (int i = 0; i < n; i++)
		if (!strcmp(all[i].busid, busid)) {
			*info = all[i];
			return 0;
		}
	snprintf(err, errsz, "no USB device %s on this host", busid);
	return -ENOENT;
}

static void usbdev_call(struct cap *c, struct rpc_call *call)
{
	struct usbdev *d = (struct usbdev *)c, *s;
	struct usbip_dev_info info;
	char err[256];
	int e;

	if (call->iface != IFACE_USB_DEVICE) {
		rpc_return_unknown(call, "usb device");
		return;
	}
	switch (call->method) {
	case USB_DEVICE_INFO:
		if ((e = spec_info(&d->spec, &info, err, sizeof(err))) < 0) {
			rpc_return_error(call, e, "%s", err);
			return;
		}
		msg_put_str(&call->results, info.busid);
		msg_put_u64(&call->results, info.id_vendor);
		msg_put_u64(&call->results, info.id_product);
		msg_put_u64(&call->results, info.speed);
		rpc_return(call);
		return;
	case USB_DEVICE_USBIP_STREAM:
		if (!(s = usbdev_new(&stream_ops, d->node, &d->spec))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, &s->cap);
		return;
	}
	rpc_return_unknown(call, "usb device");
}

static const struct cap_ops usbdev_ops = {
	.name = "usb device",
	.call = usbdev_call,
	.free = usbdev_free,
};

static int usbdev_open(struct node *n, const struct spec *sp, struct cap **out, char *err,
		       size_t errsz)
{
	struct usbip_dev_info info;
	struct usbdev *d;
	int e;

	/* At export and restore the device must be there (productid: some
	 * device of that id); sessions find it anew. */
	if ((e = spec_info(sp, &info, err, errsz)) < 0)
		return e;
	if (!(d = usbdev_new(&usbdev_ops, n, sp))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	*out = &d->cap;
	return 0;
}

static int usb_restore(struct node *n, const struct ref_record *rec, struct cap **out, char *err,
		       size_t errsz)
{
	struct spec sp;

	if (spec_parse(rec->description, 0, &sp) < 0) {
		snprintf(err, errsz, "'%s' is not busid:ID, productid:VID:PID or softdev:NAME",
			 rec->description);
		return -EINVAL;
	}
	return usbdev_open(n, &sp, out, err, errsz);
}

/* UsbDevices: the service's administration object (a node_obj). */

static void usbdevs_call(struct cap *c, struct rpc_call *call)
{
	struct usbip_dev_info all[64];
	struct spec sp = { .kind = PRODUCT };
	struct msg_rd rd;
	struct cap *d;
	uint64_t v, p;
	char err[256];
	int n, e;

	if (call->iface != IFACE_SERVICE_ADMIN) {
		rpc_return_unknown(call, "usb service");
		return;
	}
	switch (call->method) {
	case USB_ADMIN_LIST_DEVICES:
		n = usbip_host_list(all, 64);
		msg_put_u64(&call->results, (uint64_t)n);
		for (int i = 0; i < n; i++) {
			msg_put_str(&call->results, all[i].busid);
			msg_put_u64(&call->results, all[i].id_vendor);
			msg_put_u64(&call->results, all[i].id_product);
		}
		rpc_return(call);
		return;
	case USB_ADMIN_BY_PRODUCT_ID:
		msg_rd_init(&rd, &call->params);
		if (msg_get_u64(&rd, &v) < 0 || msg_get_u64(&rd, &p) < 0 || v > 0xffff || p > 0xffff) {
			rpc_return_error(call, -EINVAL, "malformed request");
			return;
		}
		sp.vid = (uint16_t)v;
		sp.pid = (uint16_t)p;
		if ((e = usbdev_open(node_obj_node(c), &sp, &d, err, sizeof(err))) < 0) {
			rpc_return_error(call, e, "%s", err);
			return;
		}
		rpc_return_cap(call, d);
		return;
	}
	rpc_return_unknown(call, "usb service");
}

static const struct cap_ops usbdevs_ops = {
	.name = "usb service",
	.call = usbdevs_call,
	.free = node_obj_free,
};

static struct cap *usbdevs_new(struct node *n)
{
	return node_obj_new(n, &usbdevs_ops);
}

static const struct node_service usb_service = {
	.name = "usb",
	.restore = usb_restore,
	.admin = usbdevs_new,
};

int usb_service_register(struct node *n)
{
	return node_register_service(n, &usb_service);
}

/* --- applet -------------------------------------------------------- */

static int usb_describe(const char *arg, char *desc, size_t sz)
{
	struct spec sp;

	if (spec_parse(arg, 1, &sp) < 0)
		return -EINVAL;
	spec_format(&sp, desc, sz);
	return 0;
}

static int usb_export(const struct applet *self, int argc, char **argv)
{
	return admin_export_applet(self, argc, argv, "usb", usb_describe,
				   "export takes local-busid:ID, local-productid:VID:PID or "
				   "softdev:NAME");
}

static void serve_one(int fd, const struct net_addr *peer, void *arg)
{
	session_start(arg, fd);
}


static int usb_serve(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "direct", no_argument, NULL, 'd' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *listen = NULL, *sock = NULL, *src;
	char where[160], err[256], busid[NAME_MAX_LEN + 1];
	struct cap *dev = NULL, *stream = NULL;
	struct spec sp;
	struct net_addr addr;
	struct msg p;
	struct admin a;
	int c, insecure = 0, direct = 0, lfd, r = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:da:", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'I': insecure = 1; break;
		case 'd': direct = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1 || !listen)
		return cli_usage_error(self, "serve takes --listen ADDR:PORT and one device or REF");
	src = argv[optind];
	if (strncmp(src, "ref://", 6) && spec_parse(src, 1, &sp) < 0)
		return cli_usage_error(self, "serve takes local-busid:ID, local-productid:VID:PID, "
					     "softdev:NAME or a REF");
	if (strncmp(src, "ref://", 6) && spec_locate(&sp, busid, sizeof(busid), err, sizeof(err)) < 0) {
		fprintf(stderr, "metac usb: %s\n", err);
		return EXIT_FAIL;
	}
	if (net_addr_parse(listen, USBIP_PORT, &addr) < 0) {
		fprintf(stderr, "metac usb: cannot parse listen address '%s'\n", listen);
		return EXIT_FAIL;
	}
	if (addr.ss.ss_family != AF_UNIX && !net_addr_is_loopback(&addr) && !insecure) {
		fprintf(stderr, "metac usb: serve speaks plain USB/IP, with no encryption or "
				"authentication; it listens on loopback only (--insecure to "
				"override)\n");
		return EXIT_FAIL;
	}
	if ((lfd = net_listen(&addr, 16)) < 0) {
		fprintf(stderr, "metac usb: cannot listen on %s: %s\n", listen, strerror(-lfd));
		return EXIT_FAIL;
	}
	net_addr_format(&addr, where, sizeof(where));
	if (strncmp(src, "ref://", 6)) {
		log_info("serving %s as USB/IP on %s", src, where);
		return net_accept_each(lfd, serve_one, &sp, "usbip") < 0 ? EXIT_FAIL : EXIT_OK;
	}
	msg_init(&p);
	if (admin_open(&a, admin_socket_path(sock)) == 0 && admin_restore(&a, src, &dev) == 0 &&
	    admin_call_cap(&a, dev, IFACE_USB_DEVICE, USB_DEVICE_USBIP_STREAM, &p, &stream,
			   "the ref is not a USB device") == 0) {
		log_info("serving a remote USB device as USB/IP on %s", where);
		if (admin_relay_stream(&a, stream, lfd, direct, MAX_SESSIONS, 0, NULL,
				       "metac usb") == 0)
			r = EXIT_OK;
	}
	cap_unref(stream);
	cap_unref(dev);
	admin_close(&a);
	close(lfd);
	return r;
}

/* A free port of vhci-hcd for a device of that speed ("hs" ports take
 * low, full and high speed; "ss" ports super speed), or -1. */
static int vhci_free_port(uint32_t speed)
{
	const char *want = speed >= 5 ? "ss" : "hs";
	FILE *f = fopen(VHCI "/status", "r");
	char line[256], hub[8];
	unsigned port, sta;
	int r = -1;

	if (!f)
		return -1;
	while (r < 0 && fgets(line, sizeof(line), f))
		if (sscanf(line, "%7s %u %u", hub, &port, &sta) == 3 && !strcmp(hub, want) &&
		    sta == 4 /* VDEV_ST_NULL */)
			r = (int)port;
	fclose(f);
	return r;
}

static int vhci_write(const char *file, const char *text)
{
	int fd = open(file, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		r = -errno;
	close(fd);
	return r;
}

struct attach {
	int done, err;
};

static void attach_done(void *arg, int err)
{
	struct attach *at = arg;
	at->done = 1;
	at->err = err;
}

static volatile sig_atomic_t attach_stop;

static void attach_signal(struct loop *l, int signo, void *arg)
{
	attach_stop = signo;
}

/* Imports the device on our end of the pipe: the reply to OP_REQ_IMPORT
 * (while the loop carries the bytes). 0, or -1 with why printed. */
static int import(struct admin *a, int fd, const char *busid, struct attach *at,
		  uint8_t rep[8 + USBIP_DEV_LEN])
{
	uint8_t req[40] = { USBIP_VERSION >> 8, USBIP_VERSION & 0xff, USBIP_OP_REQ_IMPORT >> 8,
			    USBIP_OP_REQ_IMPORT & 0xff };
	size_t got = 0;

	memcpy(req + 8, busid, strnlen(busid, 31));
	if (io_write_all(fd, req, sizeof(req)) < 0) {
		fprintf(stderr, "metac usb: cannot send the import request: %m\n");
		return -1;
	}
	while (got < 8 + USBIP_DEV_LEN && !at->done && !a->err && !attach_stop) {
		ssize_t k = read(fd, rep + got, 8 + USBIP_DEV_LEN - got);
		if (k > 0) {
			got += (size_t)k;
			if (got >= 8 && get_be32(rep + 4) != 0)
				break; /* refused: no device follows */
			continue;
		}
		if (k == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		if (loop_run_once(a->loop, 1000) < 0)
			break;
	}
	if (got < 8 || get_be32(rep + 4) != 0 || got < 8 + USBIP_DEV_LEN) {
		fprintf(stderr, "metac usb: the device's node %s\n",
			got >= 8 ? "refused the import" : a->err ? a->errmsg : "closed the stream");
		return -1;
	}
	return 0;
}

/* Attaches a remote device to this host through vhci-hcd: the kernel
 * takes one end of a socket pair, whose other end is piped to the
 * device's USB/IP stream; runs until interrupted, then detaches. */
static int usb_attach(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "direct", no_argument, NULL, 'd' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	struct cap *dev = NULL, *stream = NULL;
	struct loop_signal *si = NULL, *st = NULL;
	struct attach at = { 0 };
	struct msg p, res;
	struct msg_rd rd;
	struct admin a;
	struct stat stt;
	uint8_t rep[8 + USBIP_DEV_LEN];
	char busid[64] = "", line[64];
	uint32_t busnum, devnum, speed;
	int c, direct = 0, sv[2] = { -1, -1 }, port = -1, e, r = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "da:", opts, NULL)) != -1) {
		switch (c) {
		case 'd': direct = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1 || strncmp(argv[optind], "ref://", 6))
		return cli_usage_error(self, "attach takes one REF");
	if (stat(VHCI "/attach", &stt) < 0) {
		fprintf(stderr, "metac usb: the kernel's vhci-hcd is not loaded (no %s): "
				"`modprobe vhci-hcd` first, on a kernel that has it\n", VHCI);
		return EXIT_FAIL;
	}
	msg_init(&res);
	msg_init(&p);
	if (admin_open(&a, admin_socket_path(sock)) < 0 || admin_restore(&a, argv[optind], &dev) < 0 ||
	    admin_call(&a, dev, IFACE_USB_DEVICE, USB_DEVICE_INFO, &p, &res,
		       "the ref is not a USB device") < 0)
		goto out;
	msg_rd_init(&rd, &res);
	msg_get_str(&rd, busid, sizeof(busid));
	msg_init(&p);
	if (admin_call_cap(&a, dev, IFACE_USB_DEVICE, USB_DEVICE_USBIP_STREAM, &p, &stream,
			   "cannot open the device's USB/IP stream") < 0)
		goto out;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "metac usb: %m\n");
		goto out;
	}
	si = loop_signal_new(a.loop, SIGINT, attach_signal, NULL);
	st = loop_signal_new(a.loop, SIGTERM, attach_signal, NULL);
	admin_stream_pipe(&a, stream, direct, sv[1], sv[1], attach_done, &at);
	sv[1] = -1;
	net_set_nonblock(sv[0]);
	if (import(&a, sv[0], busid, &at, rep) < 0)
		goto out;
	busnum = get_be32(rep + 8 + 288);
	devnum = get_be32(rep + 8 + 292);
	speed = get_be32(rep + 8 + 296);
	/* The kernel reads and writes the socket itself, blocking. */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) & ~O_NONBLOCK);
	if ((port = vhci_free_port(speed)) < 0) {
		fprintf(stderr, "metac usb: vhci-hcd has no free port for this device\n");
		goto out;
	}
	snprintf(line, sizeof(line), "%d %d %u %u", port, sv[0], busnum << 16 | devnum, speed);
	if ((e = vhci_write(VHCI "/attach", line)) < 0) {
		fprintf(stderr, "metac usb: vhci-hcd refused the device: %s\n", strerror(-e));
		port = -1;
		goto out;
	}
	fprintf(stderr, "metac usb: %s attached on vhci-hcd port %d; SIGINT or SIGTERM "
			"detaches it\n", busid, port);
	while (!attach_stop && !at.done && !a.err)
		if (loop_run_once(a.loop, -1) < 0)
			break;
	if (at.done || a.err)
		fprintf(stderr, "metac usb: the device's stream ended: %s\n",
			a.err ? a.errmsg : at.err ? strerror(-at.err) : "closed");
	else
		r = EXIT_OK;
out:
	if (port >= 0) {
		snprintf(line, sizeof(line), "%d", port);
		vhci_write(VHCI "/detach", line);
	}
	for (int i = 0; i < 2; i++)
		if (sv[i] >= 0)
			close(sv[i]);
	loop_signal_del(si);
	loop_signal_del(st);
	msg_free(&res);
	cap_unref(stream);
	cap_unref(dev);
	admin_close(&a);
	return r;
}

/* The daemon's host's USB devices (UsbDevices.listDevices). */
static int usb_list(const struct applet *self, int argc, char **argv)
{
	struct msg res;
	struct msg_rd rd;
	struct admin a;
	uint64_t n = 0;
	int json, r;

	msg_init(&res);
	if ((r = admin_list_call(self, argc, argv, "usb", IFACE_SERVICE_ADMIN,
				 USB_ADMIN_LIST_DEVICES, &a, &res, &json)) != EXIT_OK)
		goto out;
	msg_rd_init(&rd, &res);
	msg_get_u64(&rd, &n);
	if (json)
		printf("[");
	for (uint64_t i = 0; i < n; i++) {
		char busid[64];
		uint64_t v = 0, pr = 0;
		if (msg_get_str(&rd, busid, sizeof(busid)) < 0 || msg_get_u64(&rd, &v) < 0 ||
		    msg_get_u64(&rd, &pr) < 0)
			break;
		if (json) {
			printf("%s{\"busid\":", i ? "," : "");
			cli_json_str(stdout, busid);
			printf(",\"id\":\"%04x:%04x\"}", (unsigned)v, (unsigned)pr);
		} else {
			printf("%-12s %04x:%04x\n", busid, (unsigned)v, (unsigned)pr);
		}
	}
	if (json)
		printf("]\n");
	else if (!n)
		fprintf(stderr, "metac usb: the node's host has no USB devices\n");
out:
	msg_free(&res);
	admin_close(&a);
	return r;
}

static int usb_session(const struct applet *self, int argc, char **argv)
{
	return session_main(SANDBOX_USB, argc, argv);
}

int usb_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", usb_export },
		{ "serve", usb_serve },
		{ "attach", usb_attach },
		{ "list", usb_list },
		{ "_session", usb_session },
		{ 0 }
	};
	return cli_dispatch(applet_find("usb"), cmds, argc, argv);
}
