/*
 * The ceiling for metac's encrypted streams: how fast one core seals
 * records with the AEAD the transport uses (libsodium's IETF
 * ChaCha20-Poly1305, as in wire/noise.c), with the same 4-byte associated
 * data and in place, as wire/conn.c does. Prints one line:
 *   aead BYTES-per-record MB/s
 * Usage: aead_speed [RECORD_BYTES [SECONDS]]   (defaults 65536, 1.5)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t len = argc > 1 ? strtoul(argv[1], NULL, 0) : 65536;
	double secs = argc > 2 ? strtod(argv[2], NULL) : 1.5;
	unsigned char key[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
	unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = { 0 };
	unsigned char ad[4] = { 0 };
	unsigned char *buf;
	unsigned long long clen, n = 0, counter = 0;
	double t0, t;

	if (sodium_init() < 0 || len == 0 || secs <= 0) {
		fprintf(stderr, "aead_speed: bad arguments or no libsodium\n");
		return 1;
	}
	buf = calloc(1, len + crypto_aead_chacha20poly1305_ietf_ABYTES);
	if (!buf) {
		fprintf(stderr, "aead_speed: out of memory\n");
		return 1;
	}
	randombytes_buf(key, sizeof(key));
	/* Warm up caches and the CPU clock before timing. */
	for (int i = 0; i < 64; i++)
		crypto_aead_chacha20poly1305_ietf_encrypt(buf, &clen, buf, len, ad,
							  sizeof(ad), NULL, nonce, key);
	t0 = now();
	do {
		/* Check the clock every 64 records only. */
		for (int i = 0; i < 64; i++) {
			memcpy(nonce + 4, &counter, sizeof(counter));
			counter++;
			crypto_aead_chacha20poly1305_ietf_encrypt(buf, &clen, buf, len,
								  ad, sizeof(ad), NULL,
								  nonce, key);
		}
		n += 64;
		t = now() - t0;
	} while (t < secs);
	printf("aead %zu %.1f\n", len, (double)n * (double)len / t / 1e6);
	free(buf);
	return 0;
}
