/*
 * libFuzzer target: the Noise IK handshake of wire/noise.c, both sides of
 * what a peer can send (DESIGN.md "The secure transport").
 *
 * Responder: the input is message 1 (-> e, es, s, ss); if it is accepted,
 * message 2 is written and the handshake split. Initiator: message 1 is
 * written with a fixed ephemeral key, then the input is read as message 2
 * (<- e, ee, se), first into a payload buffer too small for most inputs
 * (-ENOBUFS must change nothing), then into one that fits. A message that
 * fails must leave the handshake failed for good.
 *
 * Keys, ephemeral and prologue are fixed so that seeds made from them (see
 * corpus/fuzz_handshake/) are genuine messages and reach the success
 * paths.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/noise.h"
#include "tests/fuzz/check.h"

#define PROLOGUE "metac wire 1"

static const uint8_t init_priv[NOISE_KEY_LEN] = {
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
	0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
	0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
};
static const uint8_t init_eph[NOISE_KEY_LEN] = {
	0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
	0x7b, 0x7c, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85,
	0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
};
static const uint8_t resp_priv[NOISE_KEY_LEN] = {
	0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
	0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55,
	0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
};
static uint8_t resp_pub[NOISE_KEY_LEN];

static uint8_t payload[NOISE_MAX_MSG];
static uint8_t out[NOISE_MAX_MSG];

static int hs_init(struct noise_hs *hs, int initiator)
{
	return noise_hs_init(hs, initiator, (const uint8_t *)PROLOGUE,
			     strlen(PROLOGUE), initiator ? init_priv : resp_priv,
			     initiator ? resp_pub : NULL);
}

/* A message that failed to authenticate leaves nothing usable behind. */
static void check_failed_for_good(struct noise_hs *hs, const uint8_t *data,
				  size_t size)
{
	size_t plen;

	CHECK(hs->step == NOISE_HS_FAILED);
	CHECK(!noise_hs_finished(hs));
	CHECK(noise_hs_read(hs, data, size, payload, sizeof(payload), &plen) == -EPROTO);
	CHECK(noise_hs_write(hs, NULL, 0, out, sizeof(out), &plen) == -EPROTO);
}

static void split_and_check(struct noise_hs *hs)
{
	struct noise_cipher tx, rx;
	uint8_t hash[NOISE_HASH_LEN], sealed[4 + NOISE_TAG_LEN];

	CHECK(noise_hs_finished(hs));
	CHECK(noise_hs_split(hs, &tx, &rx, hash) == 0);
	CHECK(tx.has_key && rx.has_key && tx.n == 0 && rx.n == 0);
	CHECK(noise_cipher_encrypt(&tx, NULL, 0, (const uint8_t *)"ping", 4, sealed) == 0);
	/* The peer's receive key is not ours: our own rx must refuse it. */
	CHECK(noise_cipher_decrypt(&rx, NULL, 0, sealed, sizeof(sealed), sealed) == -EBADMSG);
	noise_cipher_wipe(&tx);
	noise_cipher_wipe(&rx);
}

static void fuzz_responder(const uint8_t *data, size_t size)
{
	struct noise_hs hs;
	size_t plen = 0, mlen = 0;
	int r;

	CHECK(hs_init(&hs, 0) == 0);
	r = noise_hs_read(&hs, data, size, payload, sizeof(payload), &plen);
	if (r < 0) {
		CHECK(r == -EBADMSG);
		check_failed_for_good(&hs, data, size);
		return;
	}
	CHECK(size >= NOISE_MSG1_LEN(0) && plen == size - NOISE_MSG1_LEN(0));
	CHECK(noise_hs_remote_static(&hs) != NULL);
	CHECK(hs.step == NOISE_HS_MSG2);
	/* Reading again is out of turn. */
	CHECK(noise_hs_read(&hs, data, size, payload, sizeof(payload), &plen) == -EPROTO);
	/* Message 2 echoes the payload back (message 2 has the smaller
	 * overhead, so it always fits). */
	CHECK(noise_hs_write(&hs, payload, plen, out, NOISE_MSG2_LEN(plen) - 1, &mlen) == -ENOBUFS);
	CHECK(noise_hs_write(&hs, payload, plen, out, sizeof(out), &mlen) == 0);
	CHECK(mlen == NOISE_MSG2_LEN(plen));
	split_and_check(&hs);
	noise_hs_wipe(&hs);
}

static void fuzz_initiator(const uint8_t *data, size_t size)
{
	struct noise_hs hs;
	uint8_t small[32];
	size_t plen = 0, mlen = 0;
	int r;

	CHECK(hs_init(&hs, 1) == 0);
	CHECK(noise_hs_set_ephemeral(&hs, init_eph) == 0);
	/* Not our turn to read yet. */
	CHECK(noise_hs_read(&hs, data, size, payload, sizeof(payload), &plen) == -EPROTO);
	CHECK(noise_hs_write(&hs, NULL, 0, out, sizeof(out), &mlen) == 0);
	CHECK(mlen == NOISE_MSG1_LEN(0));

	r = noise_hs_read(&hs, data, size, small, sizeof(small), &plen);
	if (r == -ENOBUFS) {
		CHECK(size > NOISE_MSG2_LEN(sizeof(small)));
		CHECK(hs.step == NOISE_HS_MSG2);
		r = noise_hs_read(&hs, data, size, payload, sizeof(payload), &plen);
	}
	if (r < 0) {
		CHECK(r == -EBADMSG);
		check_failed_for_good(&hs, data, size);
		return;
	}
	CHECK(size >= NOISE_MSG2_LEN(0) && plen == size - NOISE_MSG2_LEN(0));
	CHECK(noise_hs_write(&hs, NULL, 0, out, sizeof(out), &mlen) == -EPROTO);
	split_and_check(&hs);
	noise_hs_wipe(&hs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (noise_init() < 0 || noise_pubkey(resp_priv, resp_pub) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_responder(data, size);
	fuzz_initiator(data, size);
	return 0;
}
