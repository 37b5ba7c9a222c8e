/*
 * Tunnel datagrams (vxlan/packet.c): sealing and opening, what a forger,
 * a replayer or a stranger's key gets (nothing), the replay window at its
 * edges, and plain RFC 7348 headers.
 */
#include <sodium.h>

#include "vxlan/packet.h"
#include "tests/unit/unit.h"

static uint8_t buf[VX_ENC_HDR + VX_HDR + 2000 + VX_TAG];

/* Seals frame (n bytes) with k into buf; returns the datagram length. */
static size_t seal(struct vx_key *k, const void *frame, size_t n, uint32_t vni)
{
	vx_hdr_put(buf + VX_ENC_HDR, vni);
	if (n)
		memcpy(buf + VX_ENC_HDR + VX_HDR, frame, n);
	return vx_seal(k, buf, VX_HDR + n);
}

static void keys(struct vx_key *tx, struct vx_key *rx)
{
	memset(tx, 0, sizeof(*tx));
	memset(rx, 0, sizeof(*rx));
	randombytes_buf(tx->key, VX_KEY_LEN);
	memcpy(rx->key, tx->key, VX_KEY_LEN);
	tx->index = rx->index = 0x1234;
	tx->valid = rx->valid = 1;
}

TEST(seal_then_open)
{
	struct vx_key tx, rx;
	struct vx_opened o;
	uint8_t frame[60];
	const uint8_t *f;
	size_t n, len;
	uint32_t index;

	CHECK(sodium_init() >= 0);
	keys(&tx, &rx);
	for (size_t i = 0; i < sizeof(frame); i++)
		frame[i] = (uint8_t)i;
	n = seal(&tx, frame, sizeof(frame), 42);
	CHECK_INT(n, VX_ENC_HDR + VX_HDR + sizeof(frame) + VX_TAG);
	CHECK_INT(buf[0], VX_TYPE_DATA);
	CHECK(vx_enc_index(buf, n, &index));
	CHECK_INT(index, 0x1234);
	/* The frame does not show on the wire. */
	CHECK(memmem(buf, n, frame + 10, 20) == NULL);
	CHECK_INT(vx_open(&rx, buf, n, &o), VX_OK);
	CHECK(!o.frag);
	CHECK_INT(vx_plain_open(o.data, o.len, 42, &f, &len), VX_OK);
	CHECK_INT(len, sizeof(frame));
	CHECK_MEM(f, frame, sizeof(frame));
	/* Inside, the VXLAN header names the segment. */
	CHECK_INT(vx_plain_open(o.data, o.len, 43, &f, &len), VX_VNI);
	/* A keepalive: an empty frame. */
	n = seal(&tx, NULL, 0, 42);
	CHECK_INT(vx_open(&rx, buf, n, &o), VX_OK);
	CHECK_INT(o.len, VX_HDR);
}

TEST(pieces_of_a_large_unit)
{
	struct vx_key tx, rx;
	struct vx_opened o;
	static uint8_t unit[50000], got[50000], d[2000];
	size_t n, piece = 1400;
	uint32_t have = 0;

	keys(&tx, &rx);
	randombytes_buf(unit, sizeof(unit));
	for (size_t off = 0; off < sizeof(unit); off += piece) {
		size_t len = sizeof(unit) - off < piece ? sizeof(unit) - off : piece;
		n = vx_seal_piece(&tx, d, 77, sizeof(unit), (uint32_t)off, unit + off, len);
		CHECK_INT(n, VX_FRAG_HDR + len + VX_TAG);
		CHECK_INT(d[0], VX_TYPE_FRAG);
		CHECK_INT(vx_open(&rx, d, n, &o), VX_OK);
		CHECK(o.frag);
		CHECK_INT(o.unit_id, 77);
		CHECK_INT(o.unit_len, sizeof(unit));
		CHECK_INT(o.offset, off);
		memcpy(got + o.offset, o.data, o.len);
		have += (uint32_t)o.len;
	}
	CHECK_INT(have, sizeof(unit));
	CHECK_MEM(got, unit, sizeof(unit));
	/* The clear header is authenticated: moving a piece elsewhere in its
	 * unit, or to another unit, fails. */
	n = vx_seal_piece(&tx, d, 77, sizeof(unit), 0, unit, piece);
	d[24] = 100;
	CHECK_INT(vx_open(&rx, d, n, &o), VX_AUTH);
	n = vx_seal_piece(&tx, d, 77, sizeof(unit), 0, unit, piece);
	d[16] ^= 1;
	CHECK_INT(vx_open(&rx, d, n, &o), VX_AUTH);
	/* Places outside the unit, or units too large, are refused unopened. */
	n = vx_seal_piece(&tx, d, 78, 1000, 900, unit, 200);
	CHECK_INT(vx_open(&rx, d, n, &o), VX_BAD);
	n = vx_seal_piece(&tx, d, 78, VX_MAX_UNIT + 1, 0, unit, 200);
	CHECK_INT(vx_open(&rx, d, n, &o), VX_BAD);
	n = vx_seal_piece(&tx, d, 78, 1000, 1000, unit, 0);
	CHECK_INT(vx_open(&rx, d, n, &o), VX_BAD);
}

TEST(forged_replayed_and_misaddressed_packets_are_refused)
{
	struct vx_key tx, rx, other;
	struct vx_opened o;
	uint8_t frame[100] = { 1, 2, 3 }, copy[sizeof(buf)];
	size_t n;

	keys(&tx, &rx);
	n = seal(&tx, frame, sizeof(frame), 7);
	memcpy(copy, buf, n);
	/* Any flipped bit, in the header (authenticated) or the body. */
	for (size_t i = 4; i < n; i += 13) {
		memcpy(buf, copy, n);
		buf[i] ^= 0x20;
		CHECK_INT(vx_open(&rx, buf, n, &o), VX_AUTH);
	}
	/* Nothing forged moved the window: the real one still opens, once. */
	memcpy(buf, copy, n);
	CHECK_INT(vx_open(&rx, buf, n, &o), VX_OK);
	memcpy(buf, copy, n);
	CHECK_INT(vx_open(&rx, buf, n, &o), VX_REPLAY);
	/* Another key (as a stranger would have) fails to authenticate. */
	keys(&other, &other);
	memcpy(buf, copy, n);
	CHECK_INT(vx_open(&other, buf, n, &o), VX_AUTH);
	/* Truncated, or of another type. */
	n = seal(&tx, frame, sizeof(frame), 7);
	CHECK_INT(vx_open(&rx, buf, VX_ENC_HDR + VX_TAG - 1, &o), VX_BAD);
	buf[0] = 9;
	CHECK_INT(vx_open(&rx, buf, n, &o), VX_BAD);
}

TEST(replay_window_edges)
{
	struct vx_replay r = { 0 };
	const uint64_t W = VX_REPLAY_WINDOW;

	CHECK(vx_replay_check(&r, 0));
	vx_replay_mark(&r, 0);
	CHECK(!vx_replay_check(&r, 0));
	/* Out of order inside the window: each once. */
	vx_replay_mark(&r, 100);
	CHECK(vx_replay_check(&r, 50));
	vx_replay_mark(&r, 50);
	CHECK(!vx_replay_check(&r, 50));
	CHECK(!vx_replay_check(&r, 100));
	/* A jump far ahead: everything a window behind is refused, and
	 * what the ring held before does not alias into the new blocks. */
	vx_replay_mark(&r, 10 * W + 5);
	CHECK(!vx_replay_check(&r, 100));
	CHECK(!vx_replay_check(&r, 10 * W + 5));
	CHECK(vx_replay_check(&r, 10 * W));
	CHECK(vx_replay_check(&r, 9 * W + 100));
	/* The ring's oldest block is gone once the newest shares its word. */
	struct vx_replay q = { 0 };
	vx_replay_mark(&q, 1);
	vx_replay_mark(&q, W); /* block W/64 shares block 0's word */
	CHECK(!vx_replay_check(&q, 1));
	CHECK(!vx_replay_check(&q, 2));
	CHECK(vx_replay_check(&q, 64)); /* block 1 is still in the ring */
	vx_replay_mark(&q, 64);
	CHECK(!vx_replay_check(&q, 64));
	/* Sliding one block at a time keeps what is still inside. */
	struct vx_replay s = { 0 };
	for (uint64_t c = 0; c < 5 * W; c += 3)
		vx_replay_mark(&s, c);
	for (uint64_t c = 5 * W - 3 - W / 2; c < 5 * W; c++)
		CHECK_INT(vx_replay_check(&s, c), c % 3 != 0);
	/* Counters past the key's limit never pass. */
	CHECK(!vx_replay_check(&s, VX_MAX_COUNTER));
}

TEST(worn_out_key_stops_sending)
{
	struct vx_key tx, rx;
	uint8_t frame[20] = { 0 };

	keys(&tx, &rx);
	tx.counter = VX_MAX_COUNTER;
	CHECK_INT(seal(&tx, frame, sizeof(frame), 1), 0);
	tx.valid = 0;
	tx.counter = 0;
	CHECK_INT(seal(&tx, frame, sizeof(frame), 1), 0);
}

TEST(plain_headers)
{
	uint8_t p[VX_HDR + 14] = { 0 };
	const uint8_t *f;
	size_t len;

	vx_hdr_put(p, 0xabcdef);
	CHECK_INT(p[0], 0x08);
	CHECK_INT(p[4], 0xab);
	CHECK_INT(p[5], 0xcd);
	CHECK_INT(p[6], 0xef);
	CHECK_INT(vx_plain_open(p, sizeof(p), 0xabcdef, &f, &len), VX_OK);
	CHECK_INT(len, 14);
	CHECK(f == p + VX_HDR);
	CHECK_INT(vx_plain_open(p, sizeof(p), 1, &f, &len), VX_VNI);
	p[0] = 0;
	CHECK_INT(vx_plain_open(p, sizeof(p), 0xabcdef, &f, &len), VX_BAD);
	CHECK_INT(vx_plain_open(p, 7, 0xabcdef, &f, &len), VX_BAD);
}
