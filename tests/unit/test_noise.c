/*
 * Unit tests for wire/noise.c: the published Noise_IK_25519_ChaChaPoly_
 * BLAKE2b vectors (cacophony and snow, filtered into
 * ../shared/vectors/, or $METAC_VECTORS) byte for byte, then what the
 * vectors cannot show: tampered, truncated and reordered handshake
 * messages, static key pinning, REKEY and nonces, random handshakes.
 * The vector file is read with a small JSON reader of our own.
 */
#include "tests/unit/unit.h"

#include <ctype.h>

#include <sodium.h>

#include "wire/noise.h"

#define VECTORS_DEFAULT \
	"../shared/vectors/noise-ik-25519-chachapoly-blake2b.json"
#define JSON_MAX_DEPTH 32
#define BYTES_MAX 2048

/* ---- a minimal JSON reader ---- */

enum json_type { JSON_SCALAR, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_type type;
	char *key;		/* member name, inside an object */
	char *str;		/* JSON_STRING: the decoded value */
	struct json *child, *next;
};

struct json_parser {
	const char *p, *end;
	int depth;
};

static void json_free(struct json *j)
{
	struct json *next;

	for (; j; j = next) {
		next = j->next;
		json_free(j->child);
		free(j->key);
		free(j->str);
		free(j);
	}
}

static void json_skip_ws(struct json_parser *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' ||
				   *jp->p == '\r' || *jp->p == '\n'))
		jp->p++;
}

static int json_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One escape after the backslash at *p; non-ASCII \u escapes become '?'
 * (nothing in the vectors needs them). Returns the bytes consumed or 0. */
static size_t json_unescape(const char *p, const char *end, char *out)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	unsigned v = 0;

	if (p + 1 >= end)
		return 0;
	if (p[1] != 'u') {
		const char *f = p[1] ? strchr(from, p[1]) : NULL;
		if (!f)
			return 0;
		*out = to[f - from];
		return 2;
	}
	if (end - p < 6)
		return 0;
	for (int i = 2; i < 6; i++) {
		int d = json_hexval(p[i]);
		if (d < 0)
			return 0;
		v = v << 4 | (unsigned)d;
	}
	*out = v < 0x80 ? (char)v : '?';
	return 6;
}

/* A string at jp->p (its opening quote), decoded into a new buffer. */
static char *json_string(struct json_parser *jp)
{
	const char *q;
	char *s, *o;
	size_t n;

	if (jp->p >= jp->end || *jp->p != '"')
		return NULL;
	for (q = jp->p + 1; q < jp->end && *q != '"'; q++)
		if (*q == '\\')
			q++;
	if (q >= jp->end)
		return NULL;
	s = malloc((size_t)(q - jp->p));
	if (!s)
		return NULL;
	for (jp->p++, o = s; *jp->p != '"'; o++) {
		if ((unsigned char)*jp->p < 0x20)
			goto bad;
		if (*jp->p != '\\') {
			*o = *jp->p++;
			continue;
		}
		if (!(n = json_unescape(jp->p, q, o)))
			goto bad;
		jp->p += n;
	}
	*o = '\0';
	jp->p++;
	return s;
bad:
	free(s);
	return NULL;
}

static struct json *json_value(struct json_parser *jp);

/* The members of an object or elements of an array, after its opener. */
static int json_items(struct json_parser *jp, struct json *parent, char close)
{
	struct json **tail = &parent->child, *item;
	char *key = NULL;

	json_skip_ws(jp);
	if (jp->p < jp->end && *jp->p == close) {
		jp->p++;
		return 0;
	}
	for (;;) {
		if (parent->type == JSON_OBJECT) {
			json_skip_ws(jp);
			if (!(key = json_string(jp)))
				return -1;
			json_skip_ws(jp);
			if (jp->p >= jp->end || *jp->p++ != ':')
				goto bad;
		}
		if (!(item = json_value(jp)))
			goto bad;
		item->key = key;
		key = NULL;
		*tail = item;
		tail = &item->next;
		json_skip_ws(jp);
		if (jp->p >= jp->end)
			return -1;
		if (*jp->p == close) {
			jp->p++;
			return 0;
		}
		if (*jp->p++ != ',')
			return -1;
	}
bad:
	free(key);
	return -1;
}

/* true, false, null or a number: kept as an opaque scalar. */
static int json_scalar(struct json_parser *jp)
{
	const char *start = jp->p;

	while (jp->p < jp->end &&
	       (isalnum((unsigned char)*jp->p) ||
		(*jp->p && strchr("+-.", *jp->p))))
		jp->p++;
	return jp->p > start ? 0 : -1;
}

static struct json *json_value(struct json_parser *jp)
{
	struct json *j;
	int r;

	json_skip_ws(jp);
	if (jp->p >= jp->end || jp->depth >= JSON_MAX_DEPTH)
		return NULL;
	if (!(j = calloc(1, sizeof(*j))))
		return NULL;
	jp->depth++;
	if (*jp->p == '{' || *jp->p == '[') {
		j->type = *jp->p == '{' ? JSON_OBJECT : JSON_ARRAY;
		jp->p++;
		r = json_items(jp, j, j->type == JSON_OBJECT ? '}' : ']');
	} else if (*jp->p == '"') {
		j->type = JSON_STRING;
		r = (j->str = json_string(jp)) ? 0 : -1;
	} else {
		r = json_scalar(jp);
	}
	jp->depth--;
	if (r < 0) {
		json_free(j);
		return NULL;
	}
	return j;
}

static struct json *json_parse(const char *text, size_t len)
{
	struct json_parser jp = { text, text + len, 0 };
	struct json *j = json_value(&jp);

	json_skip_ws(&jp);
	if (j && jp.p != jp.end) {
		json_free(j);
		return NULL;
	}
	return j;
}

static const struct json *json_get(const struct json *obj, const char *key,
				   enum json_type type)
{
	const struct json *j;

	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	for (j = obj->child; j; j = j->next)
		if (!strcmp(j->key, key))
			return j->type == type ? j : NULL;
	return NULL;
}

static struct json *json_load(const char *path)
{
	struct json *j = NULL;
	char *text = NULL;
	FILE *f = fopen(path, "r");
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) <= 0 ||
	    fseek(f, 0, SEEK_SET) < 0)
		goto out;
	text = malloc((size_t)len);
	if (text && fread(text, 1, (size_t)len, f) == (size_t)len)
		j = json_parse(text, (size_t)len);
out:
	free(text);
	fclose(f);
	return j;
}

/* ---- helpers ---- */

struct bytes {
	uint8_t b[BYTES_MAX];
	size_t n;
};

static int hex_decode(const char *s, struct bytes *out)
{
	size_t len = strlen(s);

	if (len % 2 || len / 2 > sizeof(out->b))
		return -1;
	for (out->n = 0; out->n < len / 2; out->n++) {
		int hi = json_hexval(s[2 * out->n]);
		int lo = json_hexval(s[2 * out->n + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out->b[out->n] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int hex_field(const struct json *obj, const char *key,
		     struct bytes *out)
{
	const struct json *j = json_get(obj, key, JSON_STRING);

	return j ? hex_decode(j->str, out) : -1;
}

static int key_field(const struct json *obj, const char *key,
		     struct bytes *out)
{
	return hex_field(obj, key, out) == 0 && out->n == NOISE_KEY_LEN ?
		       0 : -1;
}

/* One handshake message of a vector, from w to r. */
static void vector_handshake(struct noise_hs *w, struct noise_hs *r,
			     const struct json *m)
{
	struct bytes payload, ct;
	uint8_t out[BYTES_MAX];
	size_t n;

	CHECK(m && hex_field(m, "payload", &payload) == 0);
	CHECK(hex_field(m, "ciphertext", &ct) == 0);
	CHECK_INT(noise_hs_write(w, payload.b, payload.n, out, sizeof(out), &n),
		  0);
	CHECK_INT(n, ct.n);
	CHECK_MEM(out, ct.b, n);
	CHECK_INT(noise_hs_read(r, ct.b, ct.n, out, sizeof(out), &n), 0);
	CHECK_INT(n, payload.n);
	CHECK_MEM(out, payload.b, n);
}

/* One transport message of a vector. */
static void vector_transport(struct noise_cipher *send,
			     struct noise_cipher *recv, const struct json *m)
{
	struct bytes payload, ct;
	uint8_t out[BYTES_MAX + NOISE_TAG_LEN];

	CHECK(hex_field(m, "payload", &payload) == 0);
	CHECK(hex_field(m, "ciphertext", &ct) == 0);
	CHECK_INT(ct.n, payload.n + NOISE_TAG_LEN);
	CHECK_INT(noise_cipher_encrypt(send, NULL, 0, payload.b, payload.n,
				       out), 0);
	CHECK_MEM(out, ct.b, ct.n);
	CHECK_INT(noise_cipher_decrypt(recv, NULL, 0, ct.b, ct.n, out), 0);
	CHECK_MEM(out, payload.b, payload.n);
}

struct vector_keys {
	struct bytes pro_i, pro_r, s_i, e_i, rs_i, s_r, e_r, hash;
	int has_hash;
};

static void vector_keys(const struct json *v, struct vector_keys *k)
{
	uint8_t pub[NOISE_KEY_LEN];

	CHECK(hex_field(v, "init_prologue", &k->pro_i) == 0);
	CHECK(hex_field(v, "resp_prologue", &k->pro_r) == 0);
	CHECK(key_field(v, "init_static", &k->s_i) == 0);
	CHECK(key_field(v, "init_ephemeral", &k->e_i) == 0);
	CHECK(key_field(v, "init_remote_static", &k->rs_i) == 0);
	CHECK(key_field(v, "resp_static", &k->s_r) == 0);
	CHECK(key_field(v, "resp_ephemeral", &k->e_r) == 0);
	k->has_hash = json_get(v, "handshake_hash", JSON_STRING) != NULL;
	if (k->has_hash) {
		CHECK(hex_field(v, "handshake_hash", &k->hash) == 0);
		CHECK_INT(k->hash.n, NOISE_HASH_LEN);
	}
	/* The vector is self-consistent: rs is the responder's key. */
	CHECK_INT(noise_pubkey(k->s_r.b, pub), 0);
	CHECK_MEM(pub, k->rs_i.b, NOISE_KEY_LEN);
}

static void run_vector(const struct json *v)
{
	const struct json *msgs = json_get(v, "messages", JSON_ARRAY), *m;
	struct noise_cipher i_send, i_recv, r_send, r_recv;
	uint8_t h_i[NOISE_HASH_LEN], h_r[NOISE_HASH_LEN];
	struct noise_hs ini, res;
	struct vector_keys k;
	int i;

	vector_keys(v, &k);
	if (unit_failed_now)
		return;
	CHECK(msgs && msgs->child && msgs->child->next);
	CHECK_INT(noise_hs_init(&ini, 1, k.pro_i.b, k.pro_i.n, k.s_i.b,
				k.rs_i.b), 0);
	CHECK_INT(noise_hs_init(&res, 0, k.pro_r.b, k.pro_r.n, k.s_r.b, NULL),
		  0);
	CHECK_INT(noise_hs_set_ephemeral(&ini, k.e_i.b), 0);
	CHECK_INT(noise_hs_set_ephemeral(&res, k.e_r.b), 0);
	m = msgs->child;
	vector_handshake(&ini, &res, m);
	if (unit_failed_now)
		return;
	CHECK(noise_hs_remote_static(&res));
	CHECK_MEM(noise_hs_remote_static(&res), ini.s_pub, NOISE_KEY_LEN);
	vector_handshake(&res, &ini, m->next);
	if (unit_failed_now)
		return;
	CHECK(noise_hs_finished(&ini) && noise_hs_finished(&res));
	CHECK_INT(noise_hs_split(&ini, &i_send, &i_recv, h_i), 0);
	CHECK_INT(noise_hs_split(&res, &r_send, &r_recv, h_r), 0);
	CHECK_MEM(h_i, h_r, NOISE_HASH_LEN);
	if (k.has_hash)
		CHECK_MEM(h_i, k.hash.b, NOISE_HASH_LEN);
	for (m = m->next->next, i = 0; m; m = m->next, i++) {
		if (i % 2 == 0)
			vector_transport(&i_send, &r_recv, m);
		else
			vector_transport(&r_send, &i_recv, m);
		if (unit_failed_now)
			return;
	}
}

static const char *vectors_path(void)
{
	const char *p = getenv("METAC_VECTORS");

	return p && *p ? p : VECTORS_DEFAULT;
}

/* Two fresh parties with generated keys, ready for message 1. */
struct pair {
	uint8_t s_i[NOISE_KEY_LEN], p_i[NOISE_KEY_LEN];
	uint8_t s_r[NOISE_KEY_LEN], p_r[NOISE_KEY_LEN];
	struct noise_hs ini, res;
};

#define PROLOGUE ((const uint8_t *)"metac test")
#define PROLOGUE_LEN 10

static int pair_init(struct pair *p)
{
	if (noise_keypair_generate(p->s_i, p->p_i) < 0 ||
	    noise_keypair_generate(p->s_r, p->p_r) < 0)
		return -1;
	if (noise_hs_init(&p->ini, 1, PROLOGUE, PROLOGUE_LEN, p->s_i,
			  p->p_r) < 0 ||
	    noise_hs_init(&p->res, 0, PROLOGUE, PROLOGUE_LEN, p->s_r,
			  NULL) < 0)
		return -1;
	return 0;
}

/* A full handshake with short payloads; the transport ciphers out. */
static int pair_handshake(struct pair *p, struct noise_cipher c[4])
{
	uint8_t msg[256], pl[64], hi[NOISE_HASH_LEN], hr[NOISE_HASH_LEN];
	size_t n, pn;

	if (noise_hs_write(&p->ini, (const uint8_t *)"one", 3, msg,
			   sizeof(msg), &n) < 0 ||
	    noise_hs_read(&p->res, msg, n, pl, sizeof(pl), &pn) < 0 ||
	    pn != 3 || memcmp(pl, "one", 3) ||
	    noise_hs_write(&p->res, (const uint8_t *)"two", 3, msg,
			   sizeof(msg), &n) < 0 ||
	    noise_hs_read(&p->ini, msg, n, pl, sizeof(pl), &pn) < 0 ||
	    pn != 3 || memcmp(pl, "two", 3))
		return -1;
	if (noise_hs_split(&p->ini, &c[0], &c[1], hi) < 0 ||
	    noise_hs_split(&p->res, &c[2], &c[3], hr) < 0)
		return -1;
	return memcmp(hi, hr, sizeof(hi)) ? -1 : 0;
}

/* ---- tests ---- */

TEST(vectors)
{
	const char *path = vectors_path();
	struct json *root = json_load(path);
	const struct json *vectors, *v;
	int matched = 0;

	if (!root) {
		UNIT_FAIL("cannot read or parse %s (set METAC_VECTORS)", path);
		return;
	}
	vectors = json_get(root, "vectors", JSON_ARRAY);
	for (v = vectors ? vectors->child : NULL; v && !unit_failed_now;
	     v = v->next) {
		const struct json *name =
			json_get(v, "protocol_name", JSON_STRING);

		if (!name || strcmp(name->str, NOISE_PROTOCOL_NAME))
			continue;
		matched++;
		run_vector(v);
		if (unit_failed_now)
			UNIT_FAIL("in vector %d of %s", matched, path);
	}
	json_free(root);
	if (unit_failed_now)
		return;
	CHECK(vectors);
	CHECK(matched >= 2);
}

TEST(json_reader)
{
	static const char *bad[] = {
		"", "{", "{\"a\":}", "{\"a\" 1}", "[1,]", "[1 2]", "\"abc",
		"\"a\\q\"", "\"\\u12\"", "{\"a\":1}x", "{1:2}", "\"a\nb\"",
	};
	static const char good[] =
		" {\"a\": [\"x\\\"y\\u0041\", {}, [], true, -1.5e3],"
		" \"b\" : \"\"} ";
	const struct json *a;
	struct json *j;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = json_parse(bad[i], strlen(bad[i]));
		json_free(j);
		if (j)
			UNIT_FAIL("accepted %s", bad[i]);
		CHECK(!j);
	}
	j = json_parse(good, strlen(good));
	CHECK(j);
	a = json_get(j, "a", JSON_ARRAY);
	if (!a || !a->child || strcmp(a->child->str, "x\"yA") ||
	    !json_get(j, "b", JSON_STRING) || json_get(j, "c", JSON_STRING))
		UNIT_FAIL("wrong parse");
	json_free(j);
}

/* Handshake messages with payloads "hello" and "world", and snapshots of
 * the reader of each, to replay reads from. */
struct transcript {
	struct pair p;
	struct noise_hs res0;	/* the responder before message 1 */
	struct noise_hs ini1;	/* the initiator before message 2 */
	uint8_t msg1[128], msg2[128];
	size_t n1, n2;
};

static void transcript_make(struct transcript *t)
{
	uint8_t pl[8];
	size_t pn;

	CHECK_INT(pair_init(&t->p), 0);
	t->res0 = t->p.res;
	CHECK_INT(noise_hs_write(&t->p.ini, (const uint8_t *)"hello", 5,
				 t->msg1, sizeof(t->msg1), &t->n1), 0);
	CHECK_INT(t->n1, NOISE_MSG1_LEN(5));
	t->ini1 = t->p.ini;
	CHECK_INT(noise_hs_read(&t->p.res, t->msg1, t->n1, pl, sizeof(pl),
				&pn), 0);
	CHECK_INT(noise_hs_write(&t->p.res, (const uint8_t *)"world", 5,
				 t->msg2, sizeof(t->msg2), &t->n2), 0);
	CHECK_INT(t->n2, NOISE_MSG2_LEN(5));
}

/* Read msg (len bytes, of which the first n are from the transcript's
 * message 1 or 2, the rest zeros) with a fresh copy of its reader. */
static int transcript_read(const struct transcript *t, int second,
			   const uint8_t *msg, size_t len)
{
	struct noise_hs hs = second ? t->ini1 : t->res0;
	uint8_t pl[64];
	size_t pn;
	int r = noise_hs_read(&hs, msg, len, pl, sizeof(pl), &pn);

	/* After a failure nothing more is accepted. */
	if (r == -EBADMSG &&
	    noise_hs_read(&hs, second ? t->msg2 : t->msg1,
			  second ? t->n2 : t->n1, pl, sizeof(pl), &pn) !=
		    -EPROTO)
		return -EINVAL;
	return r;
}

TEST(tamper)
{
	static const uint8_t flips[] = { 0x01, 0x80, 0xff };
	uint8_t bad[128], pl[8];
	struct transcript t;
	size_t pn;

	transcript_make(&t);
	if (unit_failed_now)
		return;
	/* Every byte, flipped in its low bit, its high bit (which X25519
	 * ignores in keys, but the transcript hash does not) or all bits. */
	for (int second = 0; second < 2; second++) {
		size_t len = second ? t.n2 : t.n1;

		for (size_t at = 0; at < len; at++) {
			for (size_t f = 0; f < sizeof(flips); f++) {
				memcpy(bad, second ? t.msg2 : t.msg1, len);
				bad[at] ^= flips[f];
				if (transcript_read(&t, second, bad, len) ==
				    -EBADMSG)
					continue;
				UNIT_FAIL("msg%d byte %zu ^ %#x accepted",
					  second + 1, at, flips[f]);
				return;
			}
		}
	}
	/* The untouched messages still go through. */
	CHECK_INT(transcript_read(&t, 0, t.msg1, t.n1), 0);
	CHECK_INT(noise_hs_read(&t.p.ini, t.msg2, t.n2, pl, sizeof(pl), &pn),
		  0);
	CHECK_INT(pn, 5);
	CHECK_MEM(pl, "world", 5);
}

TEST(truncated)
{
	static const size_t lens1[] = { 0, 1, 32, 95, 96, 100, 102 };
	static const size_t lens2[] = { 0, 1, 32, 47, 48, 52, 54 };
	uint8_t msg[128] = { 0 };
	struct transcript t;

	transcript_make(&t);
	if (unit_failed_now)
		return;
	memcpy(msg, t.msg1, t.n1);
	for (size_t i = 0; i < sizeof(lens1) / sizeof(lens1[0]); i++)
		CHECK(transcript_read(&t, 0, msg, lens1[i]) < 0);
	CHECK_INT(transcript_read(&t, 0, msg, t.n1), 0);
	memset(msg, 0, sizeof(msg));
	memcpy(msg, t.msg2, t.n2);
	for (size_t i = 0; i < sizeof(lens2) / sizeof(lens2[0]); i++)
		CHECK(transcript_read(&t, 1, msg, lens2[i]) < 0);
	/* Longer than any Noise message: refused before it is read. */
	CHECK_INT(transcript_read(&t, 1, msg, NOISE_MAX_MSG + 1), -EBADMSG);
	CHECK_INT(transcript_read(&t, 1, msg, t.n2), 0);
}

TEST(wrong_order)
{
	uint8_t msg1[128] = { 0 }, msg2[128] = { 0 }, pl[64];
	struct noise_cipher a, b;
	struct noise_hs hs;
	size_t n1, n2, pn;
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	/* Nobody speaks out of turn, nor splits early. */
	CHECK_INT(noise_hs_write(&p.res, NULL, 0, msg2, sizeof(msg2), &n2),
		  -EPROTO);
	CHECK_INT(noise_hs_read(&p.ini, msg1, 96, pl, sizeof(pl), &pn),
		  -EPROTO);
	CHECK_INT(noise_hs_split(&p.ini, &a, &b, NULL), -EPROTO);
	CHECK_INT(noise_hs_write(&p.ini, NULL, 0, msg1, sizeof(msg1), &n1), 0);
	CHECK_INT(noise_hs_write(&p.ini, NULL, 0, msg1, sizeof(msg1), &n1),
		  -EPROTO);
	CHECK_INT(noise_hs_set_ephemeral(&p.ini, p.s_i), -EPROTO);
	/* The initiator handed its own message back as message 2. */
	hs = p.ini;
	CHECK_INT(noise_hs_read(&hs, msg1, n1, pl, sizeof(pl), &pn), -EBADMSG);
	CHECK_INT(noise_hs_read(&p.res, msg1, n1, pl, sizeof(pl), &pn), 0);
	CHECK_INT(pn, 0);
	/* A replayed message 1. */
	CHECK_INT(noise_hs_read(&p.res, msg1, n1, pl, sizeof(pl), &pn),
		  -EPROTO);
	CHECK_INT(noise_hs_write(&p.res, NULL, 0, msg2, sizeof(msg2), &n2), 0);
	CHECK_INT(noise_hs_write(&p.res, NULL, 0, msg2, sizeof(msg2), &n2),
		  -EPROTO);
	/* Message 2 to a responder that is still waiting for message 1. */
	CHECK_INT(pair_init(&p), 0);
	CHECK_INT(noise_hs_read(&p.res, msg2, n2, pl, sizeof(pl), &pn),
		  -EBADMSG);
	/* A zeroed or wiped state does nothing. */
	memset(&hs, 0, sizeof(hs));
	CHECK_INT(noise_hs_write(&hs, NULL, 0, msg1, sizeof(msg1), &n1),
		  -EPROTO);
	CHECK_INT(noise_hs_read(&hs, msg1, n1, pl, sizeof(pl), &pn), -EPROTO);
	CHECK(!noise_hs_finished(&hs));
}

TEST(prologue_mismatch)
{
	uint8_t msg[128], pl[64];
	size_t n, pn;
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	CHECK_INT(noise_hs_init(&p.res, 0, (const uint8_t *)"metac tesT",
				PROLOGUE_LEN, p.s_r, NULL), 0);
	CHECK_INT(noise_hs_write(&p.ini, NULL, 0, msg, sizeof(msg), &n), 0);
	CHECK_INT(noise_hs_read(&p.res, msg, n, pl, sizeof(pl), &pn),
		  -EBADMSG);
}

TEST(bad_arguments)
{
	uint8_t k[NOISE_KEY_LEN] = { 1 }, msg[256] = { 0 }, pl[8] = { 0 };
	struct noise_hs hs;
	size_t n, pn;
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	CHECK_INT(noise_hs_init(&hs, 1, NULL, 0, k, NULL), -EINVAL);
	CHECK_INT(noise_hs_init(&hs, 0, NULL, 0, k, k), -EINVAL);
	CHECK_INT(noise_hs_init(&hs, 0, NULL, 1, k, NULL), -EINVAL);
	CHECK_INT(noise_hs_init(&hs, 0, NULL, 0, NULL, NULL), -EINVAL);
	/* A low-order responder key gives an all-zero DH: refused. */
	memset(k, 0, sizeof(k));
	CHECK_INT(noise_hs_init(&hs, 1, NULL, 0, p.s_i, k), 0);
	CHECK_INT(noise_hs_write(&hs, NULL, 0, msg, sizeof(msg), &n), -EBADMSG);
	CHECK_INT(hs.step, NOISE_HS_FAILED);
	/* Sizes: refused without touching the state. */
	CHECK_INT(noise_hs_write(&p.ini, msg, NOISE_MAX_MSG - 95, NULL,
				 NOISE_MAX_MSG + 1, &n), -EMSGSIZE);
	CHECK_INT(noise_hs_write(&p.ini, NULL, 0, msg, 95, &n), -ENOBUFS);
	CHECK_INT(noise_hs_write(&p.ini, NULL, 1, msg, sizeof(msg), &n),
		  -EINVAL);
	CHECK_INT(noise_hs_write(&p.ini, pl, 8, msg, sizeof(msg), &n), 0);
	CHECK_INT(noise_hs_read(&p.res, msg, n, pl, 7, &pn), -ENOBUFS);
	CHECK_INT(noise_hs_read(&p.res, msg, n, NULL, 8, &pn), -ENOBUFS);
	CHECK_INT(noise_hs_read(&p.res, msg, n, pl, 8, &pn), 0);
}

TEST(max_message)
{
	uint8_t *big = malloc(2 * NOISE_MAX_MSG), *pl;
	size_t n, pn;
	struct pair p;

	CHECK(big);
	pl = big + NOISE_MAX_MSG;
	memset(big, 7, NOISE_MAX_MSG);
	if (pair_init(&p) < 0)
		UNIT_FAIL("pair_init");
	else if (noise_hs_write(&p.ini, big, NOISE_MAX_MSG - 96, pl,
				NOISE_MAX_MSG, &n) < 0 || n != NOISE_MAX_MSG)
		UNIT_FAIL("largest message 1 not written");
	else if (noise_hs_read(&p.res, pl, n, big, NOISE_MAX_MSG, &pn) < 0 ||
		 pn != NOISE_MAX_MSG - 96)
		UNIT_FAIL("largest message 1 not read");
	free(big);
}

TEST(remote_static)
{
	uint8_t msg1[128], msg2[128], pl[8], e[NOISE_KEY_LEN];
	uint8_t other_priv[NOISE_KEY_LEN], other_pub[NOISE_KEY_LEN];
	struct noise_hs wrong;
	size_t n1, n2, pn;
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	CHECK_INT(noise_keypair_generate(e, other_pub), 0);
	CHECK_INT(noise_keypair_generate(other_priv, other_pub), 0);
	CHECK(noise_hs_remote_static(&p.res) == NULL);
	CHECK_MEM(noise_hs_remote_static(&p.ini), p.p_r, NOISE_KEY_LEN);
	/* "wrong" is the same initiator, same ephemeral, but it expects
	 * another responder key. */
	CHECK_INT(noise_hs_init(&wrong, 1, PROLOGUE, PROLOGUE_LEN, p.s_i,
				other_pub), 0);
	CHECK_INT(noise_hs_set_ephemeral(&wrong, e), 0);
	CHECK_INT(noise_hs_set_ephemeral(&p.ini, e), 0);
	CHECK_INT(noise_hs_write(&wrong, NULL, 0, msg1, sizeof(msg1), &n1), 0);
	CHECK_INT(noise_hs_read(&p.res, msg1, n1, pl, sizeof(pl), &pn),
		  -EBADMSG);
	CHECK(noise_hs_remote_static(&p.res) == NULL);

	CHECK_INT(noise_hs_init(&p.res, 0, PROLOGUE, PROLOGUE_LEN, p.s_r,
				NULL), 0);
	CHECK_INT(noise_hs_write(&p.ini, NULL, 0, msg1, sizeof(msg1), &n1), 0);
	CHECK_INT(noise_hs_read(&p.res, msg1, n1, pl, sizeof(pl), &pn), 0);
	CHECK(noise_hs_remote_static(&p.res));
	CHECK_MEM(noise_hs_remote_static(&p.res), p.p_i, NOISE_KEY_LEN);
	CHECK_INT(noise_hs_write(&p.res, NULL, 0, msg2, sizeof(msg2), &n2), 0);
	/* Only the initiator that expected this responder accepts its
	 * answer. */
	CHECK_INT(noise_hs_read(&wrong, msg2, n2, pl, sizeof(pl), &pn),
		  -EBADMSG);
	CHECK_INT(noise_hs_read(&p.ini, msg2, n2, pl, sizeof(pl), &pn), 0);
	CHECK(noise_hs_finished(&p.ini) && noise_hs_finished(&p.res));
}

TEST(rekey)
{
	static const uint8_t zeros[NOISE_KEY_LEN];
	uint8_t nonce[12], expect[NOISE_KEY_LEN + NOISE_TAG_LEN];
	uint8_t ct[64], pt[64];
	struct noise_cipher c[4], old;
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	CHECK_INT(pair_handshake(&p, c), 0);
	/* c[0] is the initiator's send, c[3] the responder's receive. */
	CHECK_MEM(c[0].k, c[3].k, NOISE_KEY_LEN);
	CHECK_MEM(c[1].k, c[2].k, NOISE_KEY_LEN);
	CHECK(memcmp(c[0].k, c[1].k, NOISE_KEY_LEN));
	CHECK_INT(noise_cipher_encrypt(&c[0], NULL, 0, (const uint8_t *)"a", 1,
				       ct), 0);
	CHECK_INT(noise_cipher_decrypt(&c[3], NULL, 0, ct, 17, pt), 0);

	/* REKEY(k) = ENCRYPT(k, 2^64-1, "", 32 zero bytes)[0:32] */
	memset(nonce, 0xff, sizeof(nonce));
	memset(nonce, 0, 4);
	crypto_aead_chacha20poly1305_ietf_encrypt(expect, NULL, zeros, 32,
						  NULL, 0, NULL, nonce,
						  c[0].k);
	old = c[0];
	noise_cipher_rekey(&c[0]);
	noise_cipher_rekey(&c[3]);
	CHECK(memcmp(c[0].k, old.k, NOISE_KEY_LEN));
	CHECK_MEM(c[0].k, expect, NOISE_KEY_LEN);
	CHECK_MEM(c[3].k, expect, NOISE_KEY_LEN);
	CHECK_INT(c[0].n, 1);
	CHECK_INT(c[3].n, 1);
	for (int i = 0; i < 3; i++) {
		CHECK_INT(noise_cipher_encrypt(&c[0], (const uint8_t *)"ad", 2,
					       (const uint8_t *)"after", 5, ct),
			  0);
		CHECK_INT(noise_cipher_decrypt(&c[3], (const uint8_t *)"ad", 2,
					       ct, 21, pt), 0);
		CHECK_MEM(pt, "after", 5);
	}
	/* The old key no longer opens anything. */
	CHECK_INT(noise_cipher_encrypt(&old, NULL, 0, (const uint8_t *)"x", 1,
				       ct), 0);
	old = c[3];
	CHECK_INT(noise_cipher_decrypt(&old, NULL, 0, ct, 17, pt), -EBADMSG);
	/* The other direction was not rekeyed and still works. */
	CHECK_INT(noise_cipher_encrypt(&c[2], NULL, 0, (const uint8_t *)"b", 1,
				       ct), 0);
	CHECK_INT(noise_cipher_decrypt(&c[1], NULL, 0, ct, 17, pt), 0);
}

TEST(nonces)
{
	uint8_t m1[32], m2[32], bad[32], pt[32];
	struct noise_cipher c[4], none = { .has_key = 0 };
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	CHECK_INT(pair_handshake(&p, c), 0);
	CHECK_INT(noise_cipher_encrypt(&c[2], NULL, 0, (const uint8_t *)"m1", 2,
				       m1), 0);
	CHECK_INT(noise_cipher_encrypt(&c[2], NULL, 0, (const uint8_t *)"m2", 2,
				       m2), 0);
	CHECK_INT(c[2].n, 2);
	/* A failed decrypt leaves the nonce alone. */
	memcpy(bad, m1, 18);
	bad[17] ^= 1;
	CHECK_INT(noise_cipher_decrypt(&c[1], NULL, 0, bad, 18, pt), -EBADMSG);
	CHECK_INT(noise_cipher_decrypt(&c[1], NULL, 0, m1, 15, pt), -EBADMSG);
	CHECK_INT(noise_cipher_decrypt(&c[1], (const uint8_t *)"x", 1, m1, 18,
				       pt), -EBADMSG);
	CHECK_INT(c[1].n, 0);
	/* Out of order is refused too: counters must match. */
	CHECK_INT(noise_cipher_decrypt(&c[1], NULL, 0, m2, 18, pt), -EBADMSG);
	CHECK_INT(noise_cipher_decrypt(&c[1], NULL, 0, m1, 18, pt), 0);
	CHECK_MEM(pt, "m1", 2);
	CHECK_INT(noise_cipher_decrypt(&c[1], NULL, 0, m2, 18, pt), 0);
	CHECK_MEM(pt, "m2", 2);
	CHECK_INT(c[1].n, 2);
	/* In place, as wire/conn.c does it. */
	memcpy(m1, "inplace", 7);
	CHECK_INT(noise_cipher_encrypt(&c[0], m2, 4, m1, 7, m1), 0);
	CHECK_INT(noise_cipher_decrypt(&c[3], m2, 4, m1, 23, m1), 0);
	CHECK_MEM(m1, "inplace", 7);
	/* 2^64-1 is reserved. */
	c[0].n = UINT64_MAX - 1;
	CHECK_INT(noise_cipher_encrypt(&c[0], NULL, 0, m1, 1, m2), 0);
	CHECK_INT(noise_cipher_encrypt(&c[0], NULL, 0, m1, 1, m2), -EOVERFLOW);
	c[3].n = UINT64_MAX;
	CHECK_INT(noise_cipher_decrypt(&c[3], NULL, 0, m2, 17, pt), -EOVERFLOW);
	CHECK_INT(noise_cipher_encrypt(&none, NULL, 0, m1, 1, m2), -ENOKEY);
	CHECK_INT(noise_cipher_decrypt(&none, NULL, 0, m2, 17, pt), -ENOKEY);
	for (int i = 0; i < 4; i++) {
		noise_cipher_wipe(&c[i]);
		CHECK(!c[i].has_key);
	}
}

/* Random payloads both ways through the handshake and the transport. */
static void random_round(int round)
{
	uint8_t payload[600], msg[700], pl[700];
	size_t len = round ? randombytes_uniform(sizeof(payload)) : 0, n, pn;
	struct noise_cipher c[4];
	struct pair p;

	CHECK_INT(pair_init(&p), 0);
	randombytes_buf(payload, len);
	CHECK_INT(noise_hs_write(&p.ini, payload, len, msg, sizeof(msg), &n),
		  0);
	CHECK_INT(noise_hs_read(&p.res, msg, n, pl, sizeof(pl), &pn), 0);
	CHECK_INT(pn, len);
	CHECK_MEM(pl, payload, len);
	CHECK_MEM(noise_hs_remote_static(&p.res), p.p_i, NOISE_KEY_LEN);
	CHECK_INT(noise_hs_write(&p.res, payload, len, msg, sizeof(msg), &n),
		  0);
	CHECK_INT(noise_hs_read(&p.ini, msg, n, pl, sizeof(pl), &pn), 0);
	CHECK_INT(pn, len);
	CHECK_MEM(pl, payload, len);
	CHECK_INT(noise_hs_split(&p.ini, &c[0], &c[1], NULL), 0);
	CHECK_INT(noise_hs_split(&p.res, &c[2], &c[3], NULL), 0);
	CHECK_INT(p.ini.step, NOISE_HS_UNSET);
	for (int i = 0; i < 10; i++) {
		int from = i % 2 ? 2 : 0, to = i % 2 ? 1 : 3;

		len = randombytes_uniform(sizeof(payload));
		randombytes_buf(payload, len);
		CHECK_INT(noise_cipher_encrypt(&c[from], NULL, 0, payload, len,
					       msg), 0);
		CHECK_INT(noise_cipher_decrypt(&c[to], NULL, 0, msg,
					       len + NOISE_TAG_LEN, pl), 0);
		CHECK_MEM(pl, payload, len);
	}
}

TEST(random_handshakes)
{
	for (int round = 0; round < 50 && !unit_failed_now; round++)
		random_round(round);
}
