/*
 * libFuzzer target: the USB/IP server of usbip/server.c (the operations
 * before import and the URB decoder after it) with the software device
 * of usbip/softdev.c behind it, through the thread-free session.
 *
 * The input is flags[1] chunk[1] and then the client's bytes, fed in
 * pieces of chunk+1 bytes. Flag bit 0: the harness imports the device
 * first, so that the input is URB traffic from its first byte.
 * Checked: nothing crashes, leaks or hangs; what the server writes after
 * import starts as a RET_SUBMIT or RET_UNLINK (a whole 48-byte header,
 * a length within a transfer's bound); nothing is fed after the session
 * ended.
 */
#include <stdint.h>
#include <string.h>

#include "lib/buf.h"
#include "usbip/usbip.h"
#include "tests/fuzz/check.h"

/* What a feed wrote after import starts with a whole reply header (a
 * feed's output begins at a message boundary), of a reply type, whose
 * length field is within a transfer's bound. */
static void check_replies(const struct buf *out, size_t from, int imported)
{
	const uint8_t *p = out->data + from;
	size_t n = out->len - from;
	uint32_t cmd;

	if (!imported || !n)
		return;
	CHECK(n >= USBIP_HDR_LEN);
	cmd = get_be32(p);
	CHECK(cmd == USBIP_RET_SUBMIT || cmd == USBIP_RET_UNLINK);
	if (cmd == USBIP_RET_SUBMIT)
		CHECK(get_be32(p + 24) <= USBIP_MAX_TRANSFER);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct usbip_softdev *d;
	struct usbip_session *s;
	struct usbip_export ex;
	struct buf out;
	size_t chunk, off = 0;
	int r = 0, imported;

	if (size < 2)
		return 0;
	imported = data[0] & 1;
	chunk = (size_t)data[1] + 1;
	data += 2;
	size -= 2;
	d = usbip_softdev_new("1-1");
	CHECK(d);
	usbip_softdev_export(d, &ex);
	s = usbip_session_new(&ex, 1);
	CHECK(s);
	buf_init(&out);
	if (imported) {
		uint8_t req[40] = { 0x01, 0x11, 0x80, 0x03 };
		memcpy(req + 8, "1-1", 3);
		CHECK(usbip_session_feed(s, req, sizeof(req), &out) == 0);
		CHECK(out.len == 8 + USBIP_DEV_LEN);
		buf_reset(&out);
	}
	while (r == 0 && off < size) {
		size_t n = size - off < chunk ? size - off : chunk, from = out.len;
		r = usbip_session_feed(s, data + off, n, &out);
		off += n;
		if (r == 0)
			check_replies(&out, from, imported);
	}
	usbip_session_free(s);
	usbip_softdev_free(d);
	buf_free(&out);
	return 0;
}
