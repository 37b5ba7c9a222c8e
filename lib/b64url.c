/*
 * base64url without padding (RFC 4648 section 5), with strict decoding:
 * every byte string has exactly one accepted encoding, so sturdy-ref
 * tokens can be compared as strings. See b64url.h.
 */
#include <errno.h>

#include "lib/b64url.h"

static const char b64url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * Character to 6-bit value; 64 (bit 6) marks a character outside the
 * alphabet. OR-ing every looked-up value and testing bit 6 once checks the
 * whole input without a branch per (secret) character.
 */
#define B64URL_BAD 64

static const uint8_t b64url_table[256] = {
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 62, 64, 64,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 64, 64, 64, 64, 64, 64,
	64,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 64, 64, 64, 64, 63,
	64, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
};

size_t b64url_encoded_len(size_t n)
{
	static const size_t tail[3] = { 0, 2, 3 };

	return n / 3 * 4 + tail[n % 3];
}

int b64url_encode(const uint8_t *in, size_t n, char *out, size_t outsz)
{
	size_t need = b64url_encoded_len(n), i = 0, o = 0;
	uint32_t v;

	if (outsz == 0 || need > outsz - 1)
		return -ENOSPC;
	for (; n - i >= 3; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (n - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
	} else if (n - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	out[o] = '\0';
	return 0;
}

/* Bytes that len characters decode to; -EINVAL for a length of 1 mod 4,
 * which no byte string encodes to. */
static int b64url_decoded_len(size_t len, size_t *n)
{
	static const size_t tail[4] = { 0, 0, 1, 2 };

	if (len % 4 == 1)
		return -EINVAL;
	*n = len / 4 * 3 + tail[len % 4];
	return 0;
}

/* Canonical form: the unused low bits of the last character must be 0. */
static uint8_t b64url_trailing_bits(const uint8_t *s, size_t len)
{
	static const uint8_t unused[4] = { 0, 0, 0x0f, 0x03 };

	if (len == 0)
		return 0;
	return b64url_table[s[len - 1]] & unused[len % 4];
}

static void b64url_decode_quad(const uint8_t *s, uint8_t *out)
{
	uint32_t v = (uint32_t)b64url_table[s[0]] << 18 |
		     (uint32_t)b64url_table[s[1]] << 12 |
		     (uint32_t)b64url_table[s[2]] << 6 | b64url_table[s[3]];

	out[0] = (uint8_t)(v >> 16);
	out[1] = (uint8_t)(v >> 8);
	out[2] = (uint8_t)v;
}

int b64url_decode(const char *in, size_t len, uint8_t *out, size_t outsz,
		  size_t *outlen)
{
	const uint8_t *s = (const uint8_t *)in;
	uint8_t bad = 0, quad[4] = { 'A', 'A', 'A', 'A' }, tmp[3];
	size_t need, i, o = 0, rest;
	int ret;

	ret = b64url_decoded_len(len, &need);
	if (ret)
		return ret;
	/* Validate everything first so nothing is written for bad input. */
	for (i = 0; i < len; i++)
		bad |= b64url_table[s[i]];
	if ((bad & B64URL_BAD) || b64url_trailing_bits(s, len))
		return -EINVAL;
	if (need > outsz)
		return -ENOSPC;
	for (i = 0; len - i >= 4; i += 4, o += 3)
		b64url_decode_quad(s + i, out + o);
	rest = len - i;
	if (rest) {
		/* Pad the tail with 'A' (zero bits) and keep what it holds. */
		for (i = 0; i < rest; i++)
			quad[i] = s[len - rest + i];
		b64url_decode_quad(quad, tmp);
		for (i = 0; i < rest - 1; i++)
			out[o++] = tmp[i];
	}
	if (outlen)
		*outlen = o;
	return 0;
}
