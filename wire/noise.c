/*
 * Noise_IK_25519_ChaChaPoly_BLAKE2b on libsodium's primitives, written
 * from the Noise Protocol Framework, revision 34:
 *   4.2, 12.3  ENCRYPT/DECRYPT with ChaCha20-Poly1305 (IETF nonce: 32 zero
 *              bits, then the 64-bit counter little-endian), REKEY
 *   4.3, 12.8  HASH = BLAKE2b-512, HMAC (RFC 2104 over BLAKE2b with a
 *              128-byte block, not BLAKE2b's keyed mode), HKDF
 *   12.1       DH = X25519; an all-zero shared secret is rejected
 *   5.1-5.3    CipherState, SymmetricState, HandshakeState
 *   7.5        the IK pattern
 * The handshake is written out for IK rather than interpreting patterns:
 * two messages, each a few tokens.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "wire/noise.h"

#define BLOCK_LEN 128
#define NONCE_LEN crypto_aead_chacha20poly1305_IETF_NPUBBYTES
#define AEAD_MAX crypto_aead_chacha20poly1305_ietf_MESSAGEBYTES_MAX

int noise_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

/* ---- CipherState (5.1) ---- */

static void nonce_encode(uint8_t nonce[NONCE_LEN], uint64_t n)
{
	memset(nonce, 0, 4);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

/* ENCRYPT(k, n, ad, plaintext) of 4.2; len is checked by the callers. */
static void aead_seal(const uint8_t k[NOISE_KEY_LEN], uint64_t n,
		      const uint8_t *ad, size_t adlen, const uint8_t *in,
		      size_t len, uint8_t *out)
{
	uint8_t nonce[NONCE_LEN];

	nonce_encode(nonce, n);
	crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad,
						  adlen, NULL, nonce, k);
}

static void cipher_init(struct noise_cipher *c, const uint8_t *k)
{
	memcpy(c->k, k, NOISE_KEY_LEN);
	c->n = 0;
	c->has_key = 1;
}

int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad,
			 size_t adlen, const uint8_t *in, size_t len,
			 uint8_t *out)
{
	if (!c->has_key)
		return -ENOKEY;
	if (c->n == UINT64_MAX)
		return -EOVERFLOW;
	if (len > AEAD_MAX)
		return -EMSGSIZE;
	aead_seal(c->k, c->n, ad, adlen, in, len, out);
	c->n++;
	return 0;
}

int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad,
			 size_t adlen, const uint8_t *in, size_t len,
			 uint8_t *out)
{
	uint8_t nonce[NONCE_LEN];

	if (!c->has_key)
		return -ENOKEY;
	if (c->n == UINT64_MAX)
		return -EOVERFLOW;
	if (len < NOISE_TAG_LEN)
		return -EBADMSG;
	if (len - NOISE_TAG_LEN > AEAD_MAX)
		return -EMSGSIZE;
	nonce_encode(nonce, c->n);
	if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len,
						      ad, adlen, nonce,
						      c->k) != 0)
		return -EBADMSG;
	c->n++;
	return 0;
}

void noise_cipher_rekey(struct noise_cipher *c)
{
	static const uint8_t zeros[NOISE_KEY_LEN];
	uint8_t out[NOISE_KEY_LEN + NOISE_TAG_LEN];

	if (!c->has_key)
		return;
	aead_seal(c->k, UINT64_MAX, NULL, 0, zeros, sizeof(zeros), out);
	memcpy(c->k, out, NOISE_KEY_LEN);
	sodium_memzero(out, sizeof(out));
}

void noise_cipher_wipe(struct noise_cipher *c)
{
	sodium_memzero(c, sizeof(*c));
}

/* ---- HASH, HMAC, HKDF (4.3) ---- */

/* HASH(a || b) */
static void hash2(uint8_t out[NOISE_HASH_LEN], const uint8_t *a, size_t alen,
		  const uint8_t *b, size_t blen)
{
	crypto_generichash_blake2b_state st;

	crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASH_LEN);
	if (alen)
		crypto_generichash_blake2b_update(&st, a, alen);
	if (blen)
		crypto_generichash_blake2b_update(&st, b, blen);
	crypto_generichash_blake2b_final(&st, out, NOISE_HASH_LEN);
	sodium_memzero(&st, sizeof(st));
}

static void hmac_pad(uint8_t pad[BLOCK_LEN], const uint8_t *key, uint8_t x)
{
	memset(pad, x, BLOCK_LEN);
	for (size_t i = 0; i < NOISE_HASH_LEN; i++)
		pad[i] ^= key[i];
}

/* HMAC-HASH(key, a || b); every key Noise uses here is HASHLEN bytes,
 * shorter than a block, so it is only zero-padded. */
static void hmac2(uint8_t out[NOISE_HASH_LEN], const uint8_t *key,
		  const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	crypto_generichash_blake2b_state st;
	uint8_t pad[BLOCK_LEN], inner[NOISE_HASH_LEN];

	hmac_pad(pad, key, 0x36);
	crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASH_LEN);
	crypto_generichash_blake2b_update(&st, pad, BLOCK_LEN);
	if (alen)
		crypto_generichash_blake2b_update(&st, a, alen);
	if (blen)
		crypto_generichash_blake2b_update(&st, b, blen);
	crypto_generichash_blake2b_final(&st, inner, NOISE_HASH_LEN);
	hmac_pad(pad, key, 0x5c);
	hash2(out, pad, BLOCK_LEN, inner, NOISE_HASH_LEN);
	sodium_memzero(&st, sizeof(st));
	sodium_memzero(pad, sizeof(pad));
	sodium_memzero(inner, sizeof(inner));
}

/* HKDF(chaining_key, input_key_material, 2) */
static void hkdf2(const uint8_t *ck, const uint8_t *ikm, size_t ikmlen,
		  uint8_t out1[NOISE_HASH_LEN], uint8_t out2[NOISE_HASH_LEN])
{
	static const uint8_t one = 1, two = 2;
	uint8_t temp[NOISE_HASH_LEN];

	hmac2(temp, ck, ikm, ikmlen, NULL, 0);
	hmac2(out1, temp, &one, 1, NULL, 0);
	hmac2(out2, temp, out1, NOISE_HASH_LEN, &two, 1);
	sodium_memzero(temp, sizeof(temp));
}

/* ---- SymmetricState (5.2) ---- */

static void mix_hash(struct noise_hs *hs, const uint8_t *data, size_t len)
{
	hash2(hs->h, hs->h, NOISE_HASH_LEN, data, len);
}

static void mix_key(struct noise_hs *hs, const uint8_t *ikm, size_t len)
{
	uint8_t ck[NOISE_HASH_LEN], k[NOISE_HASH_LEN];

	hkdf2(hs->ck, ikm, len, ck, k);
	memcpy(hs->ck, ck, NOISE_HASH_LEN);
	cipher_init(&hs->cipher, k);	/* HASHLEN 64: truncated to 32 */
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(k, sizeof(k));
}

/* Writes len (+ NOISE_TAG_LEN once there is a key) bytes to out. */
static int encrypt_and_hash(struct noise_hs *hs, const uint8_t *in,
			    size_t len, uint8_t *out)
{
	if (!hs->cipher.has_key) {
		memmove(out, in, len);
	} else {
		int r = noise_cipher_encrypt(&hs->cipher, hs->h, NOISE_HASH_LEN,
					     in, len, out);
		if (r < 0)
			return r;
		len += NOISE_TAG_LEN;
	}
	mix_hash(hs, out, len);
	return 0;
}

/* The new h is taken before decrypting, so out may overlap in. */
static int decrypt_and_hash(struct noise_hs *hs, const uint8_t *in,
			    size_t len, uint8_t *out)
{
	uint8_t h[NOISE_HASH_LEN];
	int r = 0;

	hash2(h, hs->h, NOISE_HASH_LEN, in, len);
	if (!hs->cipher.has_key)
		memmove(out, in, len);
	else
		r = noise_cipher_decrypt(&hs->cipher, hs->h, NOISE_HASH_LEN,
					 in, len, out);
	if (r == 0)
		memcpy(hs->h, h, NOISE_HASH_LEN);
	return r;
}

/* ---- DH (12.1) and keys ---- */

int noise_pubkey(const uint8_t priv[NOISE_KEY_LEN], uint8_t pub[NOISE_KEY_LEN])
{
	if (noise_init() < 0)
		return -EIO;
	return crypto_scalarmult_curve25519_base(pub, priv) ? -EINVAL : 0;
}

int noise_keypair_generate(uint8_t priv[NOISE_KEY_LEN],
			   uint8_t pub[NOISE_KEY_LEN])
{
	if (noise_init() < 0)
		return -EIO;
	randombytes_buf(priv, NOISE_KEY_LEN);
	return noise_pubkey(priv, pub);
}

/*
 * A DH token "xy" as the spec writes it: x names the initiator's key, y
 * the responder's, each 'e' or 's'. Each side uses its own private key
 * and the peer's public one. A low-order peer key gives an all-zero
 * secret, which libsodium reports and we refuse.
 */
static int mix_dh(struct noise_hs *hs, char x, char y)
{
	char mine = hs->initiator ? x : y, theirs = hs->initiator ? y : x;
	const uint8_t *priv = mine == 's' ? hs->s_priv : hs->e_priv;
	const uint8_t *pub = theirs == 's' ? hs->rs : hs->re;
	uint8_t shared[NOISE_KEY_LEN];
	int r = -EBADMSG;

	if (crypto_scalarmult_curve25519(shared, priv, pub) == 0) {
		mix_key(hs, shared, sizeof(shared));
		r = 0;
	}
	sodium_memzero(shared, sizeof(shared));
	return r;
}

/* ---- HandshakeState (5.3) and IK (7.5) ---- */

int noise_hs_init(struct noise_hs *hs, int initiator, const uint8_t *prologue,
		  size_t prologue_len, const uint8_t s_priv[NOISE_KEY_LEN],
		  const uint8_t *rs_pub)
{
	static const char name[] = NOISE_PROTOCOL_NAME;
	int r;

	memset(hs, 0, sizeof(*hs));
	if (!s_priv || (!prologue && prologue_len))
		return -EINVAL;
	/* IK: the initiator knows the responder's key, the responder not. */
	if (initiator ? !rs_pub : rs_pub != NULL)
		return -EINVAL;
	memcpy(hs->s_priv, s_priv, NOISE_KEY_LEN);
	if ((r = noise_pubkey(s_priv, hs->s_pub)) < 0) {
		noise_hs_wipe(hs);
		return r;
	}
	hs->initiator = !!initiator;
	if (rs_pub) {
		memcpy(hs->rs, rs_pub, NOISE_KEY_LEN);
		hs->has_rs = 1;
	}
	/* The name is shorter than HASHLEN: h is the name zero-padded. */
	memcpy(hs->h, name, sizeof(name) - 1);
	memcpy(hs->ck, hs->h, NOISE_HASH_LEN);
	mix_hash(hs, prologue, prologue_len);
	/* Pre-message "<- s": the responder's static key. */
	mix_hash(hs, initiator ? hs->rs : hs->s_pub, NOISE_KEY_LEN);
	hs->step = NOISE_HS_MSG1;
	return 0;
}

int noise_hs_set_ephemeral(struct noise_hs *hs,
			   const uint8_t e_priv[NOISE_KEY_LEN])
{
	int r;

	/* The initiator writes its e in message 1, the responder in 2. */
	if (hs->step != NOISE_HS_MSG1 &&
	    !(hs->step == NOISE_HS_MSG2 && !hs->initiator))
		return -EPROTO;
	memcpy(hs->e_priv, e_priv, NOISE_KEY_LEN);
	r = noise_pubkey(e_priv, hs->e_pub);
	hs->has_e = r == 0;
	return r;
}

/* A message failed after state was mixed: nothing more can succeed. */
static int hs_fail(struct noise_hs *hs, int r)
{
	noise_hs_wipe(hs);
	hs->step = NOISE_HS_FAILED;
	return r;
}

/* Token "e", writing. */
static int write_e(struct noise_hs *hs, uint8_t *out)
{
	if (!hs->has_e) {
		int r = noise_keypair_generate(hs->e_priv, hs->e_pub);

		if (r < 0)
			return r;
		hs->has_e = 1;
	}
	memcpy(out, hs->e_pub, NOISE_KEY_LEN);
	mix_hash(hs, hs->e_pub, NOISE_KEY_LEN);
	return 0;
}

/* Token "e", reading. */
static void read_e(struct noise_hs *hs, const uint8_t *msg)
{
	memcpy(hs->re, msg, NOISE_KEY_LEN);
	mix_hash(hs, hs->re, NOISE_KEY_LEN);
}

/* -> e, es, s, ss, then the payload; out holds NOISE_MSG1_LEN(plen). */
static int write_msg1(struct noise_hs *hs, const uint8_t *payload,
		      size_t plen, uint8_t *out)
{
	int r;

	if ((r = write_e(hs, out)) < 0 ||
	    (r = mix_dh(hs, 'e', 's')) < 0 ||
	    (r = encrypt_and_hash(hs, hs->s_pub, NOISE_KEY_LEN,
				  out + NOISE_KEY_LEN)) < 0 ||
	    (r = mix_dh(hs, 's', 's')) < 0 ||
	    (r = encrypt_and_hash(hs, payload, plen,
				  out + 2 * NOISE_KEY_LEN + NOISE_TAG_LEN)) < 0)
		return r;
	hs->step = NOISE_HS_MSG2;
	return 0;
}

/* <- e, ee, se, then the payload; out holds NOISE_MSG2_LEN(plen). */
static int write_msg2(struct noise_hs *hs, const uint8_t *payload,
		      size_t plen, uint8_t *out)
{
	int r;

	if ((r = write_e(hs, out)) < 0 ||
	    (r = mix_dh(hs, 'e', 'e')) < 0 ||
	    (r = mix_dh(hs, 's', 'e')) < 0 ||
	    (r = encrypt_and_hash(hs, payload, plen, out + NOISE_KEY_LEN)) < 0)
		return r;
	hs->step = NOISE_HS_DONE;
	return 0;
}

/* Message 1 as the responder; mlen >= NOISE_MSG1_LEN(0) was checked. */
static int read_msg1(struct noise_hs *hs, const uint8_t *msg, size_t mlen,
		     uint8_t *payload)
{
	const size_t s_off = NOISE_KEY_LEN;
	const size_t p_off = s_off + NOISE_KEY_LEN + NOISE_TAG_LEN;
	int r;

	read_e(hs, msg);
	if ((r = mix_dh(hs, 'e', 's')) < 0 ||
	    (r = decrypt_and_hash(hs, msg + s_off,
				  NOISE_KEY_LEN + NOISE_TAG_LEN, hs->rs)) < 0)
		return r;
	hs->has_rs = 1;
	if ((r = mix_dh(hs, 's', 's')) < 0 ||
	    (r = decrypt_and_hash(hs, msg + p_off, mlen - p_off, payload)) < 0)
		return r;
	hs->step = NOISE_HS_MSG2;
	return 0;
}

/* Message 2 as the initiator; mlen >= NOISE_MSG2_LEN(0) was checked. */
static int read_msg2(struct noise_hs *hs, const uint8_t *msg, size_t mlen,
		     uint8_t *payload)
{
	int r;

	read_e(hs, msg);
	if ((r = mix_dh(hs, 'e', 'e')) < 0 ||
	    (r = mix_dh(hs, 's', 'e')) < 0 ||
	    (r = decrypt_and_hash(hs, msg + NOISE_KEY_LEN,
				  mlen - NOISE_KEY_LEN, payload)) < 0)
		return r;
	hs->step = NOISE_HS_DONE;
	return 0;
}

/* 0 if it is this side's turn to write (writing) or read, else -EPROTO. */
static int hs_turn(const struct noise_hs *hs, int writing)
{
	if (hs->step == NOISE_HS_MSG1)
		return hs->initiator == writing ? 0 : -EPROTO;
	if (hs->step == NOISE_HS_MSG2)
		return hs->initiator != writing ? 0 : -EPROTO;
	return -EPROTO;
}

int noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t plen,
		   uint8_t *out, size_t outsz, size_t *outlen)
{
	int first = hs->step == NOISE_HS_MSG1, r;
	size_t overhead = first ? NOISE_MSG1_LEN(0) : NOISE_MSG2_LEN(0);

	if ((r = hs_turn(hs, 1)) < 0)
		return r;
	if (!payload && plen)
		return -EINVAL;
	if (plen > NOISE_MAX_MSG - overhead)
		return -EMSGSIZE;
	if (outsz < overhead + plen)
		return -ENOBUFS;
	r = first ? write_msg1(hs, payload, plen, out) :
		    write_msg2(hs, payload, plen, out);
	if (r < 0)
		return hs_fail(hs, r);
	if (outlen)
		*outlen = overhead + plen;
	return 0;
}

int noise_hs_read(struct noise_hs *hs, const uint8_t *msg, size_t mlen,
		  uint8_t *payload, size_t psz, size_t *plen)
{
	int first = hs->step == NOISE_HS_MSG1, r;
	size_t overhead = first ? NOISE_MSG1_LEN(0) : NOISE_MSG2_LEN(0);
	uint8_t none[1];

	if ((r = hs_turn(hs, 0)) < 0)
		return r;
	if (mlen < overhead || mlen > NOISE_MAX_MSG)
		return hs_fail(hs, -EBADMSG);
	if (mlen - overhead > (payload ? psz : 0))
		return -ENOBUFS;
	if (!payload)
		payload = none;	/* an empty payload still has a tag */
	r = first ? read_msg1(hs, msg, mlen, payload) :
		    read_msg2(hs, msg, mlen, payload);
	if (r < 0)
		return hs_fail(hs, r);
	if (plen)
		*plen = mlen - overhead;
	return 0;
}

int noise_hs_finished(const struct noise_hs *hs)
{
	return hs->step == NOISE_HS_DONE;
}

int noise_hs_split(struct noise_hs *hs, struct noise_cipher *send,
		   struct noise_cipher *recv, uint8_t hash[NOISE_HASH_LEN])
{
	uint8_t k1[NOISE_HASH_LEN], k2[NOISE_HASH_LEN];

	if (hs->step != NOISE_HS_DONE)
		return -EPROTO;
	hkdf2(hs->ck, NULL, 0, k1, k2);
	cipher_init(hs->initiator ? send : recv, k1);
	cipher_init(hs->initiator ? recv : send, k2);
	if (hash)
		memcpy(hash, hs->h, NOISE_HASH_LEN);
	sodium_memzero(k1, sizeof(k1));
	sodium_memzero(k2, sizeof(k2));
	noise_hs_wipe(hs);
	return 0;
}

const uint8_t *noise_hs_remote_static(const struct noise_hs *hs)
{
	return hs->has_rs ? hs->rs : NULL;
}

void noise_hs_wipe(struct noise_hs *hs)
{
	sodium_memzero(hs, sizeof(*hs));
}
