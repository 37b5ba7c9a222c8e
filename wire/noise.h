/*
 * Noise_IK_25519_ChaChaPoly_BLAKE2b, the handshake that opens every
 * connection (Noise Protocol Framework, revision 34): the CipherState of
 * section 5.1, with REKEY of 4.2 and the ChaChaPoly nonce of 12.3, and a
 * HandshakeState (5.2, 5.3) that runs the IK pattern of 7.5:
 *
 *   <- s
 *   ...
 *   -> e, es, s, ss
 *   <- e, ee, se
 *
 * Every function returns 0 or a negative errno. Handshake messages and
 * their lengths come from the peer; every one is checked before use.
 */
#ifndef METAC_WIRE_NOISE_H
#define METAC_WIRE_NOISE_H

#include <stddef.h>
#include <stdint.h>

#define NOISE_PROTOCOL_NAME "Noise_IK_25519_ChaChaPoly_BLAKE2b"
#define NOISE_KEY_LEN 32
#define NOISE_HASH_LEN 64
#define NOISE_TAG_LEN 16
#define NOISE_MAX_MSG 65535
/* Handshake message sizes for a payload of n bytes. */
#define NOISE_MSG1_LEN(n) (2 * NOISE_KEY_LEN + 2 * NOISE_TAG_LEN + (n))
#define NOISE_MSG2_LEN(n) (NOISE_KEY_LEN + NOISE_TAG_LEN + (n))

/* A CipherState. Transport ciphers come out of noise_hs_split(). */
struct noise_cipher {
	uint8_t k[NOISE_KEY_LEN];
	uint64_t n;
	int has_key;
};

/* Seal len bytes of in into len + NOISE_TAG_LEN bytes of out (in == out
 * is allowed). -ENOKEY without a key, -EOVERFLOW once the nonce reaches
 * 2^64-1, which the spec reserves. */
int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad,
			 size_t adlen, const uint8_t *in, size_t len,
			 uint8_t *out);
/* Open len bytes of in (tag included) into len - NOISE_TAG_LEN bytes of
 * out (in == out is allowed). -EBADMSG if it fails to authenticate; the
 * nonce then stays where it was and out's contents are undefined. */
int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad,
			 size_t adlen, const uint8_t *in, size_t len,
			 uint8_t *out);
/* k = REKEY(k); the nonce carries on. */
void noise_cipher_rekey(struct noise_cipher *c);
void noise_cipher_wipe(struct noise_cipher *c);

enum noise_hs_step {
	NOISE_HS_UNSET,		/* zeroed or wiped: unusable */
	NOISE_HS_MSG1,		/* -> e, es, s, ss next */
	NOISE_HS_MSG2,		/* <- e, ee, se next */
	NOISE_HS_DONE,		/* ready to split */
	NOISE_HS_FAILED,	/* a message failed; secrets wiped */
};

/* A HandshakeState with its SymmetricState; public so that callers can
 * embed it, but only this module touches the fields. */
struct noise_hs {
	struct noise_cipher cipher;
	uint8_t ck[NOISE_HASH_LEN];
	uint8_t h[NOISE_HASH_LEN];
	uint8_t s_priv[NOISE_KEY_LEN], s_pub[NOISE_KEY_LEN];
	uint8_t e_priv[NOISE_KEY_LEN], e_pub[NOISE_KEY_LEN];
	uint8_t rs[NOISE_KEY_LEN], re[NOISE_KEY_LEN];
	int initiator, has_e, has_rs;
	enum noise_hs_step step;
};

/* sodium_init(); the other functions call it where they need it. */
int noise_init(void);
int noise_keypair_generate(uint8_t priv[NOISE_KEY_LEN],
			   uint8_t pub[NOISE_KEY_LEN]);
int noise_pubkey(const uint8_t priv[NOISE_KEY_LEN],
		 uint8_t pub[NOISE_KEY_LEN]);

/* rs_pub is the responder's static key: required for the initiator, NULL
 * for the responder (it learns the initiator's from message 1). */
int noise_hs_init(struct noise_hs *hs, int initiator, const uint8_t *prologue,
		  size_t prologue_len, const uint8_t s_priv[NOISE_KEY_LEN],
		  const uint8_t *rs_pub);
/* Fix the ephemeral key (test vectors only); otherwise the first write
 * generates one. Only before this side's message is written. */
int noise_hs_set_ephemeral(struct noise_hs *hs,
			   const uint8_t e_priv[NOISE_KEY_LEN]);
/* Write this side's next message carrying payload (which must not overlap
 * out) into out: -EPROTO out of turn, -EMSGSIZE if the message would
 * exceed NOISE_MAX_MSG, -ENOBUFS if outsz is too small. */
int noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t plen,
		   uint8_t *out, size_t outsz, size_t *outlen);
/* Read the peer's next message, its payload into payload (psz bytes, not
 * overlapping msg): -EPROTO out of turn, -ENOBUFS if the payload does not
 * fit (nothing changes), -EBADMSG if the message is malformed or not
 * authentic, which leaves the handshake NOISE_HS_FAILED for good. */
int noise_hs_read(struct noise_hs *hs, const uint8_t *msg, size_t mlen,
		  uint8_t *payload, size_t psz, size_t *plen);
int noise_hs_finished(const struct noise_hs *hs);
/* The transport ciphers (the initiator sends with the first key of Split,
 * the responder with the second) and the handshake hash (may be NULL).
 * Wipes the handshake state. */
int noise_hs_split(struct noise_hs *hs, struct noise_cipher *send,
		   struct noise_cipher *recv, uint8_t hash[NOISE_HASH_LEN]);
/* The peer's static key, or NULL while unknown: the initiator knows it
 * from the start, the responder after reading message 1. */
const uint8_t *noise_hs_remote_static(const struct noise_hs *hs);
void noise_hs_wipe(struct noise_hs *hs);

#endif
