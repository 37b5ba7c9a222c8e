/* Unit tests for lib/b64url.c: RFC 4648 section 10 vectors in the url
 * alphabet without padding, round trips and strict rejection. */
#include "tests/unit/unit.h"

#include "lib/b64url.h"

static const struct {
	const char *plain, *enc;
} rfc_vectors[] = {
	{ "", "" },
	{ "f", "Zg" },
	{ "fo", "Zm8" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg" },
	{ "fooba", "Zm9vYmE" },
	{ "foobar", "Zm9vYmFy" },
};

#define NVECTORS (sizeof(rfc_vectors) / sizeof(rfc_vectors[0]))

TEST(rfc4648_encode)
{
	char out[16];
	size_t i, n;

	for (i = 0; i < NVECTORS; i++) {
		n = strlen(rfc_vectors[i].plain);
		CHECK_INT(b64url_encoded_len(n), strlen(rfc_vectors[i].enc));
		CHECK_INT(b64url_encode((const uint8_t *)rfc_vectors[i].plain,
					n, out, sizeof(out)), 0);
		CHECK_STR(out, rfc_vectors[i].enc);
	}
}

TEST(rfc4648_decode)
{
	uint8_t out[16];
	size_t i, n, outlen;

	for (i = 0; i < NVECTORS; i++) {
		n = strlen(rfc_vectors[i].enc);
		outlen = 99;
		CHECK_INT(b64url_decode(rfc_vectors[i].enc, n, out,
					sizeof(out), &outlen), 0);
		CHECK_INT(outlen, strlen(rfc_vectors[i].plain));
		CHECK_MEM(out, rfc_vectors[i].plain, outlen);
	}
}

TEST(url_alphabet)
{
	static const uint8_t in[] = { 0xfb, 0xff };
	static const uint8_t all[] = { 0x00, 0x10, 0x83, 0x10, 0x51, 0x87,
				       0x20, 0x92, 0x8b, 0xff, 0xff, 0xff };
	char out[32];
	uint8_t back[16];
	size_t outlen;

	CHECK_INT(b64url_encode(in, sizeof(in), out, sizeof(out)), 0);
	CHECK_STR(out, "-_8");
	CHECK_INT(b64url_decode("-_8", 3, back, sizeof(back), &outlen), 0);
	CHECK_INT(outlen, 2);
	CHECK_MEM(back, in, 2);
	CHECK_INT(b64url_encode(all, sizeof(all), out, sizeof(out)), 0);
	CHECK_STR(out, "ABCDEFGHIJKL____");
}

TEST(round_trip)
{
	uint8_t in[300], back[300];
	char enc[401];
	size_t n, i, outlen;
	int iter;

	srand(4648);
	for (iter = 0; iter < 2000; iter++) {
		n = iter < 301 ? (size_t)iter : (size_t)rand() % 301;
		for (i = 0; i < n; i++)
			in[i] = (uint8_t)rand();
		CHECK_INT(b64url_encode(in, n, enc, sizeof(enc)), 0);
		CHECK_INT(strlen(enc), b64url_encoded_len(n));
		CHECK_INT(strspn(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				      "abcdefghijklmnopqrstuvwxyz0123456789-_"),
			  strlen(enc));
		CHECK_INT(b64url_decode(enc, strlen(enc), back, n, &outlen), 0);
		CHECK_INT(outlen, n);
		CHECK_MEM(back, in, n);
	}
}

static int decode_str(const char *s)
{
	uint8_t out[64];
	size_t outlen;

	return b64url_decode(s, strlen(s), out, sizeof(out), &outlen);
}

TEST(rejects)
{
	static const char *bad[] = {
		"Zg==",	 "Zg=",	  "Zm9v=",  "Z",    "Zm9vY", "Zh",
		"Zm9",	 "Zm9vYmF", "Zm9v+", "Zm9v/", " Zm9v", "Zm9v ",
		"Zm9v\n", "Zm\xc3\xa9", "Zm.v",
	};
	uint8_t out[8];
	size_t i, outlen;

	CHECK_INT(decode_str("Zm8"), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (decode_str(bad[i]) != -EINVAL) {
			UNIT_FAIL("\"%s\" was not rejected", bad[i]);
			return;
		}
	}
	/* An embedded NUL inside len is not the end of the input. */
	CHECK_INT(b64url_decode("Zm9v\0Zm9", 8, out, sizeof(out), &outlen),
		  -EINVAL);
	CHECK_INT(b64url_decode("Zm\0v", 4, out, sizeof(out), &outlen),
		  -EINVAL);
}

TEST(trailing_bits_canonical)
{
	char c[2] = { 0, 0 }, s[8];
	const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	int i, ok2 = 0, ok3 = 0;

	/* Exactly 4 of 64 last characters fit after one byte ("Zg"),
	 * 16 of 64 after two ("Zm8"). */
	for (i = 0; i < 64; i++) {
		c[0] = alpha[i];
		snprintf(s, sizeof(s), "Z%s", c);
		ok2 += decode_str(s) == 0;
		snprintf(s, sizeof(s), "Zm%s", c);
		ok3 += decode_str(s) == 0;
	}
	CHECK_INT(ok2, 4);
	CHECK_INT(ok3, 16);
}

TEST(enospc)
{
	static const uint8_t in[] = "foobar";
	char enc[16];
	uint8_t dec[16];
	size_t outlen = 99;

	/* "Zm9vYmFy" needs 9 bytes with the NUL. */
	CHECK_INT(b64url_encode(in, 6, enc, 8), -ENOSPC);
	CHECK_INT(b64url_encode(in, 6, enc, 0), -ENOSPC);
	CHECK_INT(b64url_encode(in, 0, enc, 0), -ENOSPC);
	CHECK_INT(b64url_encode(in, 6, enc, 9), 0);
	CHECK_STR(enc, "Zm9vYmFy");
	CHECK_INT(b64url_encode(in, 0, enc, 1), 0);
	CHECK_STR(enc, "");
	CHECK_INT(b64url_decode("Zm9vYmFy", 8, dec, 5, &outlen), -ENOSPC);
	CHECK_INT(outlen, 99);
	CHECK_INT(b64url_decode("Zm9vYmE", 7, dec, 4, &outlen), -ENOSPC);
	CHECK_INT(b64url_decode("Zm9vYmE", 7, dec, 5, &outlen), 0);
	CHECK_INT(outlen, 5);
	CHECK_INT(b64url_decode("", 0, NULL, 0, &outlen), 0);
	CHECK_INT(outlen, 0);
}
