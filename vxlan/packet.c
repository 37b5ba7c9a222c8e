/* Tunnel datagrams: see packet.h (RFC 7348 section 5 for the plain
 * header). */
#include <string.h>

#include <sodium.h>

#include "lib/buf.h"
#include "vxlan/packet.h"

void vx_hdr_put(uint8_t p[VX_HDR], uint32_t vni)
{
	p[0] = 0x08;
	p[1] = p[2] = p[3] = 0;
	p[4] = (uint8_t)(vni >> 16);
	p[5] = (uint8_t)(vni >> 8);
	p[6] = (uint8_t)vni;
	p[7] = 0;
}

enum vx_verdict vx_plain_open(const uint8_t *p, size_t n, uint32_t vni,
			      const uint8_t **frame, size_t *len)
{
	/* The I flag must be set; other flag bits and reserved fields are
	 * ignored on receipt (RFC 7348 5). */
	if (n < VX_HDR || !(p[0] & 0x08))
		return VX_BAD;
	if ((uint32_t)(p[4] << 16 | p[5] << 8 | p[6]) != vni)
		return VX_VNI;
	*frame = p + VX_HDR;
	*len = n - VX_HDR;
	return VX_OK;
}

static void nonce_of(uint8_t nonce[12], uint64_t counter)
{
	memset(nonce, 0, 4);
	put_le64(nonce + 4, counter);
}

/* The clear header: type, index, counter (the counter then moves on). */
static int head_put(struct vx_key *k, uint8_t *p, uint8_t type, uint8_t nonce[12])
{
	if (!k->valid || k->counter >= VX_MAX_COUNTER)
		return -1;
	p[0] = type;
	p[1] = p[2] = p[3] = 0;
	put_le32(p + 4, k->index);
	put_le64(p + 8, k->counter);
	nonce_of(nonce, k->counter);
	k->counter++;
	return 0;
}

size_t vx_seal(struct vx_key *k, uint8_t *buf, size_t len)
{
	uint8_t nonce[12];
	unsigned long long clen;

	if (head_put(k, buf, VX_TYPE_DATA, nonce) < 0)
		return 0;
	crypto_aead_chacha20poly1305_ietf_encrypt(buf + VX_ENC_HDR, &clen, buf + VX_ENC_HDR, len,
						  buf, VX_ENC_HDR, NULL, nonce, k->key);
	return VX_ENC_HDR + (size_t)clen;
}

size_t vx_seal_piece(struct vx_key *k, uint8_t *out, uint32_t unit_id, uint32_t unit_len,
		     uint32_t offset, const uint8_t *piece, size_t len)
{
	uint8_t nonce[12];
	unsigned long long clen;

	if (head_put(k, out, VX_TYPE_FRAG, nonce) < 0)
		return 0;
	put_le32(out + 16, unit_id);
	put_le32(out + 20, unit_len);
	put_le32(out + 24, offset);
	crypto_aead_chacha20poly1305_ietf_encrypt(out + VX_FRAG_HDR, &clen, piece, len, out,
						  VX_FRAG_HDR, NULL, nonce, k->key);
	return VX_FRAG_HDR + (size_t)clen;
}

int vx_enc_index(const uint8_t *p, size_t n, uint32_t *index)
{
	if (n < VX_ENC_HDR + VX_TAG || (p[0] != VX_TYPE_DATA && p[0] != VX_TYPE_FRAG))
		return 0;
	*index = get_le32(p + 4);
	return 1;
}

/* The window is VX_REPLAY_WINDOW bits in 64-bit words, used as a ring of
 * 64-counter blocks: a counter may pass if it is new, or if its block is
 * still in the ring (fewer than the ring's words behind the newest
 * block) and its bit is clear. */
int vx_replay_check(const struct vx_replay *r, uint64_t c)
{
	const uint64_t words = VX_REPLAY_WINDOW / 64;

	if (c >= r->top)
		return c < VX_MAX_COUNTER;
	if ((r->top - 1) / 64 - c / 64 >= words)
		return 0;
	return !(r->bits[(c / 64) % words] & (UINT64_C(1) << (c % 64)));
}

void vx_replay_mark(struct vx_replay *r, uint64_t c)
{
	const uint64_t words = VX_REPLAY_WINDOW / 64;

	if (c >= r->top) {
		/* The blocks after the newest one, up to c's, start empty:
		 * their words still hold blocks a ring's length older. */
		if (r->top) {
			uint64_t hb = (r->top - 1) / 64, cb = c / 64;
			if (cb - hb >= words)
				memset(r->bits, 0, sizeof(r->bits));
			else
				for (uint64_t b = hb + 1; b <= cb; b++)
					r->bits[b % words] = 0;
		}
		r->top = c + 1;
	}
	r->bits[(c / 64) % words] |= UINT64_C(1) << (c % 64);
}

enum vx_verdict vx_open(struct vx_key *k, uint8_t *p, size_t n, struct vx_opened *o)
{
	uint8_t nonce[12];
	unsigned long long mlen;
	uint64_t counter;
	size_t head = p[0] == VX_TYPE_FRAG ? VX_FRAG_HDR : VX_ENC_HDR;

	if ((p[0] != VX_TYPE_DATA && p[0] != VX_TYPE_FRAG) || n < head + VX_TAG || p[1] || p[2] ||
	    p[3])
		return VX_BAD;
	memset(o, 0, sizeof(*o));
	if ((o->frag = p[0] == VX_TYPE_FRAG)) {
		o->unit_id = get_le32(p + 16);
		o->unit_len = get_le32(p + 20);
		o->offset = get_le32(p + 24);
		if (o->unit_len > VX_MAX_UNIT || o->offset >= o->unit_len ||
		    n - head - VX_TAG > o->unit_len - o->offset || n == head + VX_TAG)
			return VX_BAD;
	}
	counter = get_le64(p + 8);
	/* Cheap refusal before the expensive part. */
	if (!vx_replay_check(&k->replay, counter))
		return VX_REPLAY;
	nonce_of(nonce, counter);
	if (crypto_aead_chacha20poly1305_ietf_decrypt(p + head, &mlen, NULL, p + head, n - head,
						      p, head, nonce, k->key) < 0)
		return VX_AUTH;
	vx_replay_mark(&k->replay, counter);
	o->data = p + head;
	o->len = (size_t)mlen;
	return VX_OK;
}
