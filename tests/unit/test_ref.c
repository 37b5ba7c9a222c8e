/* Unit tests for proto/ref.c's sturdy ref syntax: format and parse round
 * trip for IPv4, [IPv6] and names, with and without a port; the default
 * port; the key and secret are exactly the token's bytes; malformed refs
 * are rejected with a reason. */
#include "tests/unit/unit.h"

#include "proto/ref.h"

/* base64url of the bytes 0, 1, ..., 55: key 0..31, secret 32..55. */
#define TOK "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc"
/* Key 32 x 0xfb, secret 24 x 0xff: both url-alphabet characters. */
#define TOK_URL "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v_______________________________8"

static void fill(struct ref *r, const char *host, int port)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->host, sizeof(r->host), "%s", host);
	r->port = port;
	for (int i = 0; i < 32; i++)
		r->pub[i] = (uint8_t)i;
	for (int i = 0; i < REF_SECRET_LEN; i++)
		r->secret[i] = (uint8_t)(32 + i);
}

/* format(x) is expect, parse(expect) is x, format(parse(expect)) is
 * expect again. */
static void round_trip(const char *host, int port, const char *expect)
{
	struct ref in, out;
	char s[REF_MAX_LEN], again[REF_MAX_LEN];
	const char *why = NULL;

	fill(&in, host, port);
	ref_format(&in, s, sizeof(s));
	CHECK_STR(s, expect);
	if (ref_parse(s, &out, &why) != 0) {
		UNIT_FAIL("ref_parse(\"%s\") failed: %s", s, why ? why : "?");
		return;
	}
	CHECK_STR(out.host, host);
	CHECK_INT(out.port, port);
	CHECK_MEM(out.pub, in.pub, sizeof(in.pub));
	CHECK_MEM(out.secret, in.secret, sizeof(in.secret));
	ref_format(&out, again, sizeof(again));
	CHECK_STR(again, expect);
}

/* s must be refused with -EINVAL and a reason, also without why. */
static int rejects(const char *s)
{
	struct ref r;
	const char *why = NULL;
	int e = ref_parse(s, &r, &why);

	if (e != -EINVAL || !why || !why[0]) {
		UNIT_FAIL("ref_parse(\"%.120s%s\") == %d (port %d), expected -EINVAL "
			  "with a reason", s, strlen(s) > 120 ? "..." : "", e,
			  r.port);
		return 0;
	}
	if (ref_parse(s, &r, NULL) != -EINVAL) {
		UNIT_FAIL("ref_parse(\"%.120s\", NULL why) accepted it", s);
		return 0;
	}
	return 1;
}

#define REJECT(s)                  \
	do {                       \
		if (!rejects(s))   \
			return;    \
	} while (0)

TEST(round_trip_ipv4)
{
	round_trip("10.77.0.1", REF_DEFAULT_PORT, "ref://10.77.0.1/" TOK);
	round_trip("10.77.0.1", 9010, "ref://10.77.0.1:9010/" TOK);
	round_trip("192.0.2.255", 1, "ref://192.0.2.255:1/" TOK);
	round_trip("192.0.2.255", 65535, "ref://192.0.2.255:65535/" TOK);
}

TEST(round_trip_ipv6)
{
	round_trip("fd77::2", REF_DEFAULT_PORT, "ref://[fd77::2]/" TOK);
	round_trip("fd77::2", 9010, "ref://[fd77::2]:9010/" TOK);
	round_trip("::1", 65535, "ref://[::1]:65535/" TOK);
	round_trip("2001:db8::ffff:192.0.2.1", 902,
		   "ref://[2001:db8::ffff:192.0.2.1]:902/" TOK);
}

TEST(round_trip_hostname)
{
	round_trip("nas", REF_DEFAULT_PORT, "ref://nas/" TOK);
	round_trip("nas.example.org", REF_DEFAULT_PORT, "ref://nas.example.org/" TOK);
	round_trip("router-1.lan", 9001, "ref://router-1.lan:9001/" TOK);
}

/* Random keys and secrets survive format and parse unchanged. */
TEST(round_trip_random)
{
	static const char *const hosts[] = { "10.0.0.1", "fe80::1", "host" };
	struct ref in, out;
	char s[REF_MAX_LEN];

	srand(901);
	for (int iter = 0; iter < 300; iter++) {
		fill(&in, hosts[iter % 3], iter % 2 ? 1 + rand() % 65535 : 901);
		for (int i = 0; i < 32; i++)
			in.pub[i] = (uint8_t)rand();
		for (int i = 0; i < REF_SECRET_LEN; i++)
			in.secret[i] = (uint8_t)rand();
		ref_format(&in, s, sizeof(s));
		CHECK_INT(ref_parse(s, &out, NULL), 0);
		CHECK_STR(out.host, in.host);
		CHECK_INT(out.port, in.port);
		CHECK_MEM(out.pub, in.pub, 32);
		CHECK_MEM(out.secret, in.secret, REF_SECRET_LEN);
	}
}

TEST(default_port)
{
	struct ref r;
	char s[REF_MAX_LEN];

	CHECK_INT(REF_DEFAULT_PORT, 901);
	CHECK_INT(ref_parse("ref://10.77.0.1/" TOK, &r, NULL), 0);
	CHECK_INT(r.port, 901);
	CHECK_INT(ref_parse("ref://[fd77::1]/" TOK, &r, NULL), 0);
	CHECK_INT(r.port, 901);
	CHECK_STR(r.host, "fd77::1");
	CHECK_INT(ref_parse("ref://nas/" TOK, &r, NULL), 0);
	CHECK_INT(r.port, 901);
	/* An explicit 901 is the same ref, written without it. */
	CHECK_INT(ref_parse("ref://nas:901/" TOK, &r, NULL), 0);
	CHECK_INT(r.port, 901);
	ref_format(&r, s, sizeof(s));
	CHECK_STR(s, "ref://nas/" TOK);
	CHECK_INT(ref_parse("ref://[fd77::1]:901/" TOK, &r, NULL), 0);
	ref_format(&r, s, sizeof(s));
	CHECK_STR(s, "ref://[fd77::1]/" TOK);
	/* ref_address always names the port. */
	ref_address(&r, s, sizeof(s));
	CHECK_STR(s, "[fd77::1]:901");
	CHECK_INT(ref_parse("ref://10.77.0.1:9010/" TOK, &r, NULL), 0);
	ref_address(&r, s, sizeof(s));
	CHECK_STR(s, "10.77.0.1:9010");
}

/* The key and secret are the token's bytes, nothing else: checked
 * against tokens written out by hand, not produced by ref_format. */
TEST(exact_key_and_secret)
{
	struct ref r;
	uint8_t key[32], secret[REF_SECRET_LEN];

	memset(&r, 0x5a, sizeof(r));
	CHECK_INT(ref_parse("ref://10.77.0.1:9010/" TOK, &r, NULL), 0);
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < REF_SECRET_LEN; i++)
		secret[i] = (uint8_t)(32 + i);
	CHECK_MEM(r.pub, key, 32);
	CHECK_MEM(r.secret, secret, REF_SECRET_LEN);
	CHECK_STR(r.host, "10.77.0.1");

	memset(key, 0xfb, sizeof(key));
	memset(secret, 0xff, sizeof(secret));
	CHECK_INT(ref_parse("ref://[::1]/" TOK_URL, &r, NULL), 0);
	CHECK_MEM(r.pub, key, 32);
	CHECK_MEM(r.secret, secret, REF_SECRET_LEN);
	CHECK_STR(r.host, "::1");
}

TEST(reject_scheme)
{
	REJECT("");
	REJECT("ref:/");
	REJECT("ref://");
	REJECT("http://10.77.0.1/" TOK);
	REJECT("REF://10.77.0.1/" TOK);
	REJECT("ref:/10.77.0.1/" TOK);
	REJECT("ref:10.77.0.1/" TOK);
	REJECT(" ref://10.77.0.1/" TOK);
	REJECT("10.77.0.1/" TOK);
	REJECT(TOK);
}

TEST(reject_missing_token)
{
	REJECT("ref://10.77.0.1");
	REJECT("ref://10.77.0.1:901");
	REJECT("ref://[fd77::1]");
	REJECT("ref://10.77.0.1/");
	REJECT("ref://[fd77::1]:901/");
}

TEST(reject_token_length)
{
	/* 74 characters: 55 bytes; 76: 57 bytes. */
	REJECT("ref://10.77.0.1/" "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Ng");
	REJECT("ref://10.77.0.1/" TOK "A");
	REJECT("ref://10.77.0.1/" TOK "AA");
	REJECT("ref://10.77.0.1/" TOK TOK);
	/* 43 characters: a bare key, as `metac node` shows it. */
	REJECT("ref://10.77.0.1/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
	REJECT("ref://10.77.0.1/short");
}

TEST(reject_token_characters)
{
	char s[REF_MAX_LEN];
	static const char bad[] = "+/=.~ \t\n%:?#@[]!$&'()*,;\x7f\x80\xff";

	/* Standard base64's alphabet, a path, a query, trailing space. */
	REJECT("ref://10.77.0.1/" "+_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v_______________________________8");
	REJECT("ref://10.77.0.1/" TOK "/");
	REJECT("ref://10.77.0.1/x/" TOK);
	REJECT("ref://10.77.0.1/" TOK "?x=1");
	REJECT("ref://10.77.0.1/" TOK "\n");
	REJECT("ref://10.77.0.1/" TOK " ");
	/* Any one character outside the alphabet, at any place. */
	for (size_t i = 0; i < sizeof(bad) - 1; i++) {
		for (size_t at = 0; at < 75; at += 37) {
			snprintf(s, sizeof(s), "ref://h/%s", TOK);
			s[8 + at] = bad[i];
			REJECT(s);
		}
	}
	/* A non-zero trailing bit: the same bytes, written another way. */
	REJECT("ref://10.77.0.1/" "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njd");
}

TEST(reject_padding)
{
	REJECT("ref://10.77.0.1/" TOK "=");
	REJECT("ref://10.77.0.1/" TOK "==");
	REJECT("ref://10.77.0.1/" "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Nj=");
}

TEST(reject_port)
{
	REJECT("ref://10.77.0.1:0/" TOK);
	REJECT("ref://10.77.0.1:65536/" TOK);
	REJECT("ref://10.77.0.1:99999/" TOK);
	REJECT("ref://10.77.0.1:4294967297/" TOK);
	REJECT("ref://10.77.0.1:99999999999999999999999/" TOK);
	REJECT("ref://10.77.0.1:-1/" TOK);
	REJECT("ref://10.77.0.1:-0/" TOK);
	REJECT("ref://10.77.0.1:/" TOK);
	REJECT("ref://10.77.0.1:http/" TOK);
	REJECT("ref://10.77.0.1:9x/" TOK);
	REJECT("ref://10.77.0.1:0x50/" TOK);
	REJECT("ref://10.77.0.1:80:90/" TOK);
	REJECT("ref://10.77.0.1:80.5/" TOK);
	REJECT("ref://[fd77::1]:0/" TOK);
	REJECT("ref://[fd77::1]:65536/" TOK);
	REJECT("ref://[fd77::1]:/" TOK);
	REJECT("ref://[fd77::1]:x/" TOK);
	REJECT("ref://[fd77::1]9010/" TOK);
}

/* strtol() also takes leading white space and a sign: a port is digits. */
TEST(reject_port_not_digits)
{
	REJECT("ref://10.77.0.1:+80/" TOK);
	REJECT("ref://10.77.0.1: 80/" TOK);
	REJECT("ref://10.77.0.1:\t80/" TOK);
	REJECT("ref://10.77.0.1:\n80/" TOK);
	REJECT("ref://[fd77::1]: +80/" TOK);
}

TEST(reject_empty_host)
{
	REJECT("ref:///" TOK);
	REJECT("ref://:901/" TOK);
	REJECT("ref://:/" TOK);
	REJECT("ref://[]/" TOK);
	REJECT("ref://[]:901/" TOK);
}

TEST(reject_brackets)
{
	REJECT("ref://[fd77::1/" TOK);
	REJECT("ref://[fd77::1:901/" TOK);
	REJECT("ref://[/" TOK);
	REJECT("ref://[fd77::1]x/" TOK);
	REJECT("ref://[fd77::1]]/" TOK);
	REJECT("ref://[fd77::1]:901]/" TOK);
	/* An IPv6 address needs its brackets. */
	REJECT("ref://fd77::1/" TOK);
	REJECT("ref://::1/" TOK);
}

TEST(reject_overlong)
{
	char s[8192], host[300];
	struct ref r;

	/* The longest host fits, and so does the longest ref it makes. */
	memset(host, 'a', 255);
	host[255] = 0;
	snprintf(s, sizeof(s), "ref://%s:65535/%s", host, TOK);
	CHECK_INT(ref_parse(s, &r, NULL), 0);
	CHECK_INT(strlen(r.host), 255);
	CHECK(strlen(s) < REF_MAX_LEN);
	round_trip(host, 65535, s);
	if (unit_failed_now)
		return;

	memset(host, 'a', 256);
	host[256] = 0;
	snprintf(s, sizeof(s), "ref://%s/%s", host, TOK);
	REJECT(s);
	snprintf(s, sizeof(s), "ref://[%s]/%s", host, TOK);
	REJECT(s);
	memset(s, 'a', sizeof(s) - 1);
	s[sizeof(s) - 1] = 0;
	memcpy(s, "ref://", 6);
	REJECT(s);
	memcpy(s + sizeof(s) - 1 - 76, "/" TOK, 76);
	REJECT(s);
	/* A token as long as the whole buffer. */
	memset(s, 'A', sizeof(s) - 1);
	memcpy(s, "ref://h/", 8);
	REJECT(s);
}

/* No ref is longer than REF_MAX_LEN - 1 (the buffers that carry refs
 * are that long): padding the port with zeros must not make one. */
TEST(reject_longer_than_max)
{
	char s[1024];
	int n;

	n = snprintf(s, sizeof(s), "ref://10.77.0.1:");
	memset(s + n, '0', 400);
	snprintf(s + n + 400, sizeof(s) - n - 400, "9010/%s", TOK);
	CHECK(strlen(s) >= REF_MAX_LEN);
	REJECT(s);
}

/* A description that holds a ref shows its host, never its token. */
TEST(redact_hides_tokens)
{
	char out[REF_MAX_DESC];

	ref_redact("ref://10.77.0.1/" TOK, out, sizeof(out));
	CHECK_STR(out, "ref://10.77.0.1/...");
	ref_redact("ref://[fd77::2]:902/" TOK_URL " and more", out, sizeof(out));
	CHECK_STR(out, "ref://[fd77::2]:902/... and more");
	ref_redact("/srv/share", out, sizeof(out));
	CHECK_STR(out, "/srv/share");
	ref_redact("passthrough:/srv", out, sizeof(out));
	CHECK_STR(out, "passthrough:/srv");
	/* Too small for the host: cut, but no token either. */
	ref_redact("ref://10.77.0.1/" TOK, out, 12);
	CHECK(strstr(out, "AAEC") == NULL);
	CHECK(strlen(out) < 12);
}
