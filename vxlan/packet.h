/*
 * Datagrams of a tunnel, in either mode (DESIGN.md "The secure transport",
 * tunnels):
 *
 * Plain, RFC 7348: UDP (port 4789) carrying
 *   flags u8 (0x08: the VNI is valid) | reserved[3] | VNI u24 | reserved u8
 *   | the Ethernet frame
 *
 * Encrypted (metac's own). What a tunnel carries is a unit: the VXLAN
 * header, the frame's virtio_net_hdr (checksum and segmentation offload
 * state, VX_VNET_HDR bytes, little-endian) and the frame, which may be a
 * large TCP segment the receiving kernel cuts up (or hands to TCP whole).
 * A unit that fits one datagram goes as
 *   type u8 = VX_TYPE_DATA | reserved[3] | receiver index u32 LE
 *   | counter u64 LE | ChaCha20-Poly1305(the unit) | tag[16]
 * and a larger one in pieces, each authenticated on its own:
 *   type u8 = VX_TYPE_FRAG | reserved[3] | receiver index u32 LE
 *   | counter u64 LE | unit id u32 LE | unit length u32 LE
 *   | offset u32 LE | ChaCha20-Poly1305(the piece) | tag[16]
 * The clear part of each is the AEAD's associated data; the nonce is
 * four zero bytes and the counter. Keys are agreed over the control
 * connection (each side picks the key and index it receives with); the
 * index names which of the receiver's keys seals the packet, so keys can
 * change while packets are in flight. A sliding window refuses replayed
 * and very old counters. An empty frame is a keepalive: it only tells
 * the receiver where the sender is.
 *
 * Everything here is a pure function of its inputs: the decoder is what
 * the fuzzer drives.
 */
#ifndef METAC_VXLAN_PACKET_H
#define METAC_VXLAN_PACKET_H

#include <stddef.h>
#include <stdint.h>

#define VX_PORT 4789
#define VX_HDR 8          /* the VXLAN header */
#define VX_VNET_HDR 10    /* struct virtio_net_hdr */
#define VX_ENC_HDR 16     /* type, index, counter */
#define VX_FRAG_HDR 28    /* ... and unit id, length, offset */
#define VX_TAG 16
#define VX_TYPE_DATA 4
#define VX_TYPE_FRAG 5
#define VX_KEY_LEN 32
#define VX_MAX_FRAME 65535
#define VX_MAX_UNIT (VX_HDR + VX_VNET_HDR + VX_MAX_FRAME)
#define VX_MAX_VNI 0xffffffu
/* Counters this far behind the newest one seen are still accepted once. */
#define VX_REPLAY_WINDOW 2048
/* A key is used for at most this many packets (then the sender stops). */
#define VX_MAX_COUNTER (UINT64_C(1) << 60)

enum vx_verdict {
	VX_OK = 0,
	VX_BAD,      /* malformed: too short, wrong flags, type or lengths */
	VX_VNI,      /* a VNI other than the tunnel's */
	VX_INDEX,    /* no key with that receiver index */
	VX_AUTH,     /* failed to authenticate (forged or damaged) */
	VX_REPLAY,   /* a counter seen before, or too old */
};

struct vx_replay {
	uint64_t top; /* highest counter accepted + 1 (0: none yet) */
	uint64_t bits[VX_REPLAY_WINDOW / 64];
};

/* A key one side receives with (index its name) or sends with. */
struct vx_key {
	uint32_t index;
	uint8_t key[VX_KEY_LEN];
	int valid;
	uint64_t counter;         /* sending: the next counter */
	struct vx_replay replay;  /* receiving */
};

/* What an encrypted datagram held, once opened. */
struct vx_opened {
	int frag;          /* a piece of a larger unit */
	uint32_t unit_id;  /* pieces: which unit, how long, where */
	uint32_t unit_len, offset;
	uint8_t *data;     /* the unit, or the piece (in the datagram) */
	size_t len;
};

/* Writes the VXLAN header for vni at p. */
void vx_hdr_put(uint8_t p[VX_HDR], uint32_t vni);
/* Checks a VXLAN header and what follows: VX_OK with the rest at *frame
 * (*len bytes). */
enum vx_verdict vx_plain_open(const uint8_t *p, size_t n, uint32_t vni,
			      const uint8_t **frame, size_t *len);

/* Seals a whole unit in place: buf holds VX_ENC_HDR bytes of room, the
 * unit (len bytes from buf + VX_ENC_HDR), and VX_TAG bytes of room after
 * it. Returns the datagram's length, or 0 if the key is worn out. */
size_t vx_seal(struct vx_key *k, uint8_t *buf, size_t len);
/* Seals the piece [offset, offset + len) of a unit unit_len long into out
 * (VX_FRAG_HDR + len + VX_TAG bytes). Returns the datagram's length, or 0. */
size_t vx_seal_piece(struct vx_key *k, uint8_t *out, uint32_t unit_id, uint32_t unit_len,
		     uint32_t offset, const uint8_t *piece, size_t len);
/* The receiver index of an encrypted datagram (0 if it is not one). */
int vx_enc_index(const uint8_t *p, size_t n, uint32_t *index);
/* Opens in place with k (whose index matched). The replay window moves
 * only for datagrams that authenticate. A piece's place is checked to lie
 * within its unit, and the unit within VX_MAX_UNIT. */
enum vx_verdict vx_open(struct vx_key *k, uint8_t *p, size_t n, struct vx_opened *o);

/* The window alone (for tests): whether counter c may pass, and marking
 * it seen. */
int vx_replay_check(const struct vx_replay *r, uint64_t c);
void vx_replay_mark(struct vx_replay *r, uint64_t c);

#endif
