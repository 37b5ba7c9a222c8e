/*
 * libFuzzer target: the tunnel datagram decoder of vxlan/packet.c.
 *
 * The input is mode[1] and then datagrams, each len[2] and len bytes
 * (cut to what is left). Mode bit 0: plain RFC 7348 datagrams, opened as
 * they are. Otherwise encrypted, and bit 1 chooses how: raw datagrams
 * from an attacker without the key (opened with a fixed key: all must be
 * refused, and nothing may move the replay window), or a sender with the
 * key, where each datagram's first 8 bytes are the counter to seal its
 * rest with (what a replaying or reordering network could deliver).
 *
 * Checked: no crash or overrun; what opens lies inside the datagram, a
 * piece inside its unit; nothing forged ever opens; no counter ever opens
 * twice; a counter above every one seen always opens.
 */
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "lib/buf.h"
#include "vxlan/packet.h"
#include "tests/fuzz/check.h"

#define VNI 4242
#define MAX_SEEN 4096

static uint8_t buf[VX_FRAG_HDR + 65536 + VX_TAG];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return sodium_init() < 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint64_t seen[MAX_SEEN];
	struct vx_key tx = { .index = 7, .valid = 1 }, rx = { .index = 7, .valid = 1 };
	size_t nseen = 0, off = 1;
	uint64_t top = 0;
	int any = 0;

	if (size < 1)
		return 0;
	memset(tx.key, 0x5a, VX_KEY_LEN);
	memcpy(rx.key, tx.key, VX_KEY_LEN);
	while (off + 2 <= size) {
		size_t n = (size_t)data[off] << 8 | data[off + 1];
			size_t len;
		off += 2;
		if (n > size - off)
			n = size - off;
		if (data[0] & 1) {
			const uint8_t *pf;
			if (vx_plain_open(data + off, n, VNI, &pf, &len) == VX_OK)
				CHECK(pf >= data + off && pf + len == data + off + n);
		} else if (!(data[0] & 2)) {
			struct vx_replay before = rx.replay;
			struct vx_opened o;
			memcpy(buf, data + off, n);
			CHECK(vx_open(&rx, buf, n, &o) != VX_OK);
			CHECK(!memcmp(&before, &rx.replay, sizeof(before)));
		} else if (n >= 8) {
			uint64_t c = get_le64(data + off) % (4 * VX_REPLAY_WINDOW);
			struct vx_opened o;
			enum vx_verdict v;
			size_t flen = n - 8, dlen;
			int piece = data[off] & 1;
			tx.counter = c;
			if (piece) {
				uint32_t ulen = (uint32_t)flen + data[off + 1], at = data[off + 1];
				dlen = vx_seal_piece(&tx, buf, 9, ulen, at, data + off + 8, flen);
				CHECK(dlen == VX_FRAG_HDR + flen + VX_TAG);
			} else {
				memcpy(buf + VX_ENC_HDR, data + off + 8, flen);
				dlen = vx_seal(&tx, buf, flen);
				CHECK(dlen == VX_ENC_HDR + flen + VX_TAG);
			}
			v = vx_open(&rx, buf, dlen, &o);
			int dup = 0;
			for (size_t i = 0; i < nseen; i++)
				dup |= seen[i] == c;
			if (dup)
				CHECK(v == VX_REPLAY || v == VX_BAD);
			if ((!any || c >= top) && (!piece || flen))
				CHECK(v == VX_OK);
			if (v == VX_OK) {
				CHECK(o.len == flen && !memcmp(o.data, data + off + 8, flen));
				CHECK(o.data >= buf && o.data + o.len <= buf + dlen);
				if (o.frag)
					CHECK(o.offset < o.unit_len && o.len <= o.unit_len - o.offset &&
					      o.unit_len <= VX_MAX_UNIT);
				if (nseen < MAX_SEEN)
					seen[nseen++] = c;
				if (!any || c >= top)
					top = c + 1;
				any = 1;
			}
		}
		off += n;
	}
	return 0;
}
