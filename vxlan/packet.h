/*
 * Datagrams of a tunnel, in either mode (DESIGN.md "The secure transport",
 * tunnels):
 *
 * Plain, RFC 7348: UDP (port 4789) carrying
 *   flags u8 (0x08: the VNI is valid) | reserved[3] | VNI u24 | reserved u8
 *   | the Ethernet frame
 *
 * Encrypted (metac's own):
 *   type u8 (VX_TYPE_DATA) | reserved[3] | receiver index u32 LE
 *   | counter u64 LE | ChaCha20-Poly1305(the plain datagram above) | tag[16]
 * The first 16 bytes are the AEAD's associated data; the nonce is four
 * zero bytes and the counter. Keys are agreed over the control connection
 * (each side picks the key and index it receives with); the receiver
 * index names which of the receiver's keys seals the packet, so that keys
 * can change (rekeying) while packets are in flight. A sliding window
 * refuses replayed and very old counters. A packet whose frame is empty
 * is a keepalive: it only tells the receiver where the sender is.
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
#define VX_ENC_HDR 16     /* type, index, counter */
#define VX_TAG 16
#define VX_ENC_OVERHEAD (VX_ENC_HDR + VX_HDR + VX_TAG)
#define VX_TYPE_DATA 4
#define VX_KEY_LEN 32
#define VX_MAX_FRAME 65535
#define VX_MAX_VNI 0xffffffu
/* Counters this far behind the newest one seen are still accepted once. */
#define VX_REPLAY_WINDOW 2048
/* A key is used for at most this many packets (then the sender stops). */
#define VX_MAX_COUNTER (UINT64_C(1) << 60)

enum vx_verdict {
	VX_OK = 0,
	VX_BAD,      /* malformed: too short, wrong flags or type */
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

/* Writes the VXLAN header for vni at p. */
void vx_hdr_put(uint8_t p[VX_HDR], uint32_t vni);
/* Checks a plain datagram: VX_OK with the frame at *frame (*len bytes). */
enum vx_verdict vx_plain_open(const uint8_t *p, size_t n, uint32_t vni,
			      const uint8_t **frame, size_t *len);

/* Seals in place: buf holds VX_ENC_HDR bytes of room, the VXLAN header and
 * the frame (len bytes from buf + VX_ENC_HDR), and VX_TAG bytes of room
 * after them. Returns the datagram's length, or 0 if the key is worn out. */
size_t vx_seal(struct vx_key *k, uint8_t *buf, size_t len);
/* The receiver index of an encrypted datagram (0 if it is too short). */
int vx_enc_index(const uint8_t *p, size_t n, uint32_t *index);
/* Opens in place with k (whose index matched): VX_OK with the frame at
 * *frame (*len bytes; 0 for a keepalive). The replay window moves only
 * for datagrams that authenticate. */
enum vx_verdict vx_open(struct vx_key *k, uint8_t *p, size_t n, uint32_t vni,
			uint8_t **frame, size_t *len);

/* The window alone (for tests): whether counter c may pass, and marking
 * it seen. */
int vx_replay_check(const struct vx_replay *r, uint64_t c);
void vx_replay_mark(struct vx_replay *r, uint64_t c);

#endif
