/*
 * The NBD server (nbd/server.c) message by message through its
 * thread-free session: negotiation, every command, and every way a
 * request can be wrong (beyond the end, misaligned, oversized, bad flags,
 * writes to a read-only export) answered with the protocol's errors; bad
 * framing answered by a hard disconnect. Then the threaded server with
 * metac's own client (nbd/client.c) pipelining requests, and the client
 * refusing replies that do not fit its requests.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "nbd/client.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "tests/unit/unit.h"

#define SIZE (8u << 20)

struct srv {
	char path[64];
	int fd;
	struct nbd_export *ex;
	struct nbd_session *s;
	struct buf out;
	struct rd r; /* what the server sent for the last feed */
	int rc;      /* what the last feed returned */
};

static int srv_open(struct srv *s, int read_only)
{
	int e;
	memset(s, 0, sizeof(*s));
	snprintf(s->path, sizeof(s->path), "/tmp/metac-nbd.XXXXXX");
	if ((s->fd = mkstemp(s->path)) < 0 || ftruncate(s->fd, SIZE) < 0)
		return -1;
	s->ex = nbd_export_open(s->path, "disk", &read_only, &e);
	if (!s->ex || !(s->s = nbd_session_new(s->ex)))
		return -1;
	buf_init(&s->out);
	return 0;
}

static void srv_close(struct srv *s)
{
	nbd_session_free(s->s);
	nbd_export_unref(s->ex);
	buf_free(&s->out);
	if (s->fd >= 0)
		close(s->fd);
	unlink(s->path);
}

/* Feeds bytes; the answer is in s->r. */
static int feed(struct srv *s, const void *p, size_t n)
{
	buf_reset(&s->out);
	s->rc = nbd_session_feed(s->s, p, n, &s->out);
	rd_init(&s->r, buf_head(&s->out), buf_avail(&s->out));
	return s->rc;
}

static int client_flags(struct srv *s, uint32_t f)
{
	uint8_t b[4];
	put_be32(b, f);
	return feed(s, b, 4);
}

static int option(struct srv *s, uint32_t opt, const void *data, uint32_t len)
{
	struct buf b;
	int e;
	buf_init(&b);
	buf_put_u64_be(&b, NBD_IHAVEOPT);
	buf_put_u32_be(&b, opt);
	buf_put_u32_be(&b, len);
	buf_put(&b, data, len);
	e = feed(s, buf_head(&b), buf_avail(&b));
	buf_free(&b);
	return e;
}

/* Reads one option reply from s->r: its type; data in *d, *dlen. */
static int opt_reply(struct srv *s, uint32_t opt, const uint8_t **d, uint32_t *dlen)
{
	uint64_t magic;
	uint32_t o, type, len;
	if (rd_u64_be(&s->r, &magic) < 0 || magic != NBD_REP_MAGIC || rd_u32_be(&s->r, &o) < 0 ||
	    o != opt || rd_u32_be(&s->r, &type) < 0 || rd_u32_be(&s->r, &len) < 0 ||
	    rd_bytes(&s->r, d, len) < 0)
		return -1;
	*dlen = len;
	return (int)type;
}

static int go(struct srv *s, const char *name)
{
	uint8_t b[64];
	uint32_t n = (uint32_t)strlen(name);
	put_be32(b, n);
	memcpy(b + 4, name, n);
	nbd_put_be16(b + 4 + n, 0);
	return option(s, NBD_OPT_GO, b, 6 + n);
}

static int set_meta(struct srv *s, const char *query)
{
	uint8_t b[64];
	uint32_t q = (uint32_t)strlen(query);
	put_be32(b, 0);
	put_be32(b + 4, 1);
	put_be32(b + 8, q);
	memcpy(b + 12, query, q);
	return option(s, NBD_OPT_SET_META_CONTEXT, b, 12 + q);
}

/* Greeting, flags, structured replies (if asked), base:allocation, GO:
 * the session is in transmission. Returns the transmission flags. */
static int negotiated(struct srv *s, int structured)
{
	const uint8_t *d;
	uint32_t dl;
	uint16_t tflags = 0;
	int t;

	if (feed(s, NULL, 0) != 0 || buf_avail(&s->out) != 18)
		return -1;
	if (client_flags(s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) != 0)
		return -1;
	if (structured) {
		if (option(s, NBD_OPT_STRUCTURED_REPLY, NULL, 0) != 0 ||
		    opt_reply(s, NBD_OPT_STRUCTURED_REPLY, &d, &dl) != NBD_REP_ACK)
			return -1;
		if (set_meta(s, NBD_META_BASE_ALLOCATION) != 0 ||
		    opt_reply(s, NBD_OPT_SET_META_CONTEXT, &d, &dl) != NBD_REP_META_CONTEXT ||
		    opt_reply(s, NBD_OPT_SET_META_CONTEXT, &d, &dl) != NBD_REP_ACK)
			return -1;
	}
	if (go(s, "") != 0)
		return -1;
	while ((t = opt_reply(s, NBD_OPT_GO, &d, &dl)) == (int)NBD_REP_INFO)
		if (dl == 12 && nbd_get_be16(d) == NBD_INFO_EXPORT)
			tflags = nbd_get_be16(d + 10);
	return t == NBD_REP_ACK ? tflags : -1;
}

static int request(struct srv *s, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
		   const void *data)
{
	struct nbd_request r = { .flags = flags, .type = type, .cookie = 0x1122334455667788,
				 .offset = off, .length = len };
	uint8_t h[NBD_REQUEST_SIZE];
	struct buf b;
	int e;

	nbd_request_encode(h, &r);
	buf_init(&b);
	buf_put(&b, h, sizeof(h));
	if (data)
		buf_put(&b, data, len);
	e = feed(s, buf_head(&b), buf_avail(&b));
	buf_free(&b);
	return e;
}

/* The error of the one reply in s->r (simple or structured), or -1 if
 * it is malformed; a read's data goes to data. */
static int reply_error(struct srv *s, void *data, uint32_t len)
{
	uint32_t magic, err, plen;
	uint16_t flags, type;
	uint64_t cookie, off;

	if (rd_u32_be(&s->r, &magic) < 0)
		return -1;
	if (magic == NBD_SIMPLE_REPLY_MAGIC) {
		if (rd_u32_be(&s->r, &err) < 0 || rd_u64_be(&s->r, &cookie) < 0 ||
		    cookie != 0x1122334455667788)
			return -1;
		if (data && !err && rd_copy(&s->r, data, len) < 0)
			return -1;
		return (int)err;
	}
	if (magic != NBD_STRUCTURED_REPLY_MAGIC || rd_u16_be(&s->r, &flags) < 0 ||
	    rd_u16_be(&s->r, &type) < 0 || rd_u64_be(&s->r, &cookie) < 0 ||
	    rd_u32_be(&s->r, &plen) < 0 || cookie != 0x1122334455667788 ||
	    !(flags & NBD_REPLY_FLAG_DONE))
		return -1;
	if (type == NBD_REPLY_TYPE_ERROR) {
		if (rd_u32_be(&s->r, &err) < 0 || rd_skip(&s->r, plen - 4) < 0)
			return -1;
		return (int)err;
	}
	if (type == NBD_REPLY_TYPE_OFFSET_DATA) {
		if (plen != len + 8 || rd_u64_be(&s->r, &off) < 0 || !data ||
		    rd_copy(&s->r, data, len) < 0)
			return -1;
		return 0;
	}
	if (type == NBD_REPLY_TYPE_NONE)
		return plen == 0 ? 0 : -1;
	return rd_skip(&s->r, plen) < 0 ? -1 : 0;
}

TEST(negotiation_then_write_and_read_back)
{
	struct srv s;
	uint8_t w[5000], r[5000];
	int flags;

	CHECK(srv_open(&s, 0) == 0);
	flags = negotiated(&s, 1);
	CHECK(flags >= 0);
	CHECK(flags & NBD_FLAG_CAN_MULTI_CONN);
	CHECK(flags & NBD_FLAG_SEND_TRIM);
	CHECK(flags & NBD_FLAG_SEND_WRITE_ZEROES);
	CHECK(flags & NBD_FLAG_SEND_FUA);
	CHECK(!(flags & NBD_FLAG_READ_ONLY));
	for (size_t i = 0; i < sizeof(w); i++)
		w[i] = (uint8_t)(i * 7 + 1);
	CHECK_INT(request(&s, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 1001, sizeof(w), w), 0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	CHECK_INT(request(&s, NBD_CMD_READ, 0, 1001, sizeof(r), NULL), 0);
	CHECK_INT(reply_error(&s, r, sizeof(r)), 0);
	CHECK_MEM(r, w, sizeof(w));
	CHECK_INT(pread(s.fd, r, sizeof(r), 1001), sizeof(r));
	CHECK_MEM(r, w, sizeof(w));
	CHECK_INT(request(&s, NBD_CMD_FLUSH, 0, 0, 0, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	CHECK_INT(request(&s, NBD_CMD_CACHE, 0, 0, 4096, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	CHECK_INT(request(&s, NBD_CMD_READ, 0, 0, 0, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	CHECK_INT(request(&s, NBD_CMD_DISC, 0, 0, 0, NULL), 1);
	srv_close(&s);
}

TEST(requests_beyond_the_end_get_errors)
{
	struct srv s;
	uint8_t b[4096] = { 0 };

	CHECK(srv_open(&s, 0) == 0);
	CHECK(negotiated(&s, 1) >= 0);
	CHECK_INT(request(&s, NBD_CMD_READ, 0, SIZE - 100, 4096, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_WRITE, 0, SIZE, sizeof(b), b), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_ENOSPC);
	CHECK_INT(request(&s, NBD_CMD_WRITE_ZEROES, 0, SIZE - 1, 2, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_ENOSPC);
	CHECK_INT(request(&s, NBD_CMD_TRIM, 0, 0, SIZE + 1, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_BLOCK_STATUS, 0, SIZE, 1, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	/* offset + length wraps around */
	CHECK_INT(request(&s, NBD_CMD_READ, 0, UINT64_MAX - 10, 4096, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	/* The session goes on: the last byte reads. */
	CHECK_INT(request(&s, NBD_CMD_READ, 0, SIZE - 1, 1, NULL), 0);
	CHECK_INT(reply_error(&s, b, 1), 0);
	srv_close(&s);
}

TEST(misaligned_and_oversized_requests_get_errors)
{
	struct srv s;
	uint8_t b[512] = { 0 };

	CHECK(srv_open(&s, 0) == 0);
	nbd_export_set_min_block(s.ex, 512);
	CHECK(negotiated(&s, 1) >= 0);
	CHECK_INT(request(&s, NBD_CMD_READ, 0, 100, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_WRITE, 0, 512, 100, b), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_TRIM, 0, 1, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_WRITE, 0, 512, 512, b), 0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	/* A read larger than the maximum payload: refused, not served. */
	CHECK_INT(request(&s, NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EOVERFLOW);
	/* A write that large cannot even be read: a hard disconnect. */
	CHECK(request(&s, NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 512, NULL) < 0);
	srv_close(&s);
}

TEST(unknown_commands_and_flags_get_EINVAL)
{
	struct srv s;

	CHECK(srv_open(&s, 0) == 0);
	CHECK(negotiated(&s, 0) >= 0); /* simple replies: no DF either */
	CHECK_INT(request(&s, 99, 0, 0, 0, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE, 0, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(request(&s, NBD_CMD_READ, 0x8000, 0, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	/* Without a metadata context there is no block status. */
	CHECK_INT(request(&s, NBD_CMD_BLOCK_STATUS, 0, 0, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	/* With simple replies a read's error carries no data. */
	CHECK_INT(request(&s, NBD_CMD_READ, 0, SIZE, 512, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EINVAL);
	CHECK_INT(rd_left(&s.r), 0);
	srv_close(&s);
}

TEST(read_only_export_refuses_writes)
{
	struct srv s;
	uint8_t b[512] = { 1 };
	int flags;

	CHECK(srv_open(&s, 1) == 0);
	flags = negotiated(&s, 1);
	CHECK(flags >= 0);
	CHECK(flags & NBD_FLAG_READ_ONLY);
	CHECK(!(flags & NBD_FLAG_SEND_TRIM));
	CHECK_INT(request(&s, NBD_CMD_WRITE, 0, 0, sizeof(b), b), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EPERM);
	CHECK_INT(request(&s, NBD_CMD_TRIM, 0, 0, 4096, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EPERM);
	CHECK_INT(request(&s, NBD_CMD_WRITE_ZEROES, 0, 0, 4096, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), NBD_EPERM);
	CHECK_INT(pread(s.fd, b, 1, 0), 1);
	CHECK_INT(b[0], 0);
	CHECK_INT(request(&s, NBD_CMD_READ, 0, 0, 512, NULL), 0);
	CHECK_INT(reply_error(&s, b, 512), 0);
	srv_close(&s);
}

/* The extents of one BLOCK_STATUS reply in s->r. */
static int extents(struct srv *s, uint32_t *ext, int max)
{
	uint32_t magic, plen, id;
	uint16_t flags, type;
	uint64_t cookie;
	int n = 0;

	if (rd_u32_be(&s->r, &magic) < 0 || magic != NBD_STRUCTURED_REPLY_MAGIC ||
	    rd_u16_be(&s->r, &flags) < 0 || rd_u16_be(&s->r, &type) < 0 ||
	    rd_u64_be(&s->r, &cookie) < 0 || rd_u32_be(&s->r, &plen) < 0 ||
	    type != NBD_REPLY_TYPE_BLOCK_STATUS || rd_u32_be(&s->r, &id) < 0 || id != 1)
		return -1;
	for (plen -= 4; plen >= 8 && n < max; plen -= 8, n++)
		if (rd_u32_be(&s->r, &ext[2 * n]) < 0 || rd_u32_be(&s->r, &ext[2 * n + 1]) < 0)
			return -1;
	return n;
}

TEST(block_status_trim_and_write_zeroes)
{
	struct srv s;
	static uint8_t data[2 << 20];
	uint32_t ext[16];
	struct stat st;
	blkcnt_t before;

	CHECK(srv_open(&s, 0) == 0);
	memset(data, 0xee, sizeof(data));
	CHECK_INT(pwrite(s.fd, data, sizeof(data), 1 << 20), sizeof(data));
	fsync(s.fd);
	CHECK(negotiated(&s, 1) >= 0);
	/* hole [0,1M), data [1M,3M), hole [3M,8M) */
	CHECK_INT(request(&s, NBD_CMD_BLOCK_STATUS, 0, 0, SIZE, NULL), 0);
	CHECK_INT(extents(&s, ext, 8), 3);
	CHECK_INT(ext[0], 1 << 20);
	CHECK_INT(ext[1], NBD_STATE_HOLE | NBD_STATE_ZERO);
	CHECK_INT(ext[2], 2 << 20);
	CHECK_INT(ext[3], 0);
	CHECK_INT(ext[4], 5 << 20);
	CHECK_INT(ext[5], NBD_STATE_HOLE | NBD_STATE_ZERO);
	/* REQ_ONE: one extent, no longer than asked. */
	CHECK_INT(request(&s, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 4096, 8192, NULL), 0);
	CHECK_INT(extents(&s, ext, 8), 1);
	CHECK_INT(ext[0], 8192);

	fstat(s.fd, &st);
	before = st.st_blocks;
	CHECK_INT(request(&s, NBD_CMD_TRIM, 0, 1 << 20, 512 << 10, NULL), 0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	CHECK_INT(request(&s, NBD_CMD_WRITE_ZEROES, 0, (1 << 20) + (512 << 10), 512 << 10, NULL),
		  0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	fstat(s.fd, &st);
	CHECK(st.st_blocks <= before - 2048 + 8);
	/* NO_HOLE: zeros, still allocated. */
	CHECK_INT(request(&s, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE, 2 << 20, 1 << 20, NULL),
		  0);
	CHECK_INT(reply_error(&s, NULL, 0), 0);
	CHECK_INT(pread(s.fd, data, sizeof(data), 1 << 20), sizeof(data));
	for (size_t i = 0; i < sizeof(data); i++)
		if (data[i])
			CHECK(!"zeroed range reads non-zero");
	CHECK_INT(request(&s, NBD_CMD_BLOCK_STATUS, 0, 0, SIZE, NULL), 0);
	CHECK_INT(extents(&s, ext, 8), 3);
	CHECK_INT(ext[0], 2 << 20); /* the trimmed megabyte joins the first hole */
	CHECK_INT(ext[2], 1 << 20);
	CHECK_INT(ext[3], 0);
	srv_close(&s);
}

TEST(negotiation_errors)
{
	struct srv s;
	const uint8_t *d;
	uint32_t dl;
	uint8_t b[16];

	/* Unknown client flags: hang up. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	CHECK(client_flags(&s, 0x80) < 0);
	srv_close(&s);

	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	CHECK_INT(client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE), 0);
	CHECK_INT(go(&s, "nosuch"), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_GO, &d, &dl), NBD_REP_ERR_UNKNOWN);
	CHECK_INT(option(&s, NBD_OPT_STARTTLS, NULL, 0), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_STARTTLS, &d, &dl), NBD_REP_ERR_POLICY);
	CHECK_INT(option(&s, 42, "xyz", 3), 0);
	CHECK_INT((uint32_t)opt_reply(&s, 42, &d, &dl), NBD_REP_ERR_UNSUP);
	CHECK_INT(set_meta(&s, NBD_META_BASE_ALLOCATION), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_SET_META_CONTEXT, &d, &dl), NBD_REP_ERR_INVALID);
	CHECK_INT(option(&s, NBD_OPT_LIST, NULL, 0), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_LIST, &d, &dl), NBD_REP_SERVER);
	CHECK_INT(dl, 8);
	CHECK_MEM(d + 4, "disk", 4);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_LIST, &d, &dl), NBD_REP_ACK);
	/* GO whose request count does not fit its length */
	put_be32(b, 0);
	nbd_put_be16(b + 4, 3);
	CHECK_INT(option(&s, NBD_OPT_GO, b, 6), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_GO, &d, &dl), NBD_REP_ERR_INVALID);
	/* a metadata query overrunning the option */
	CHECK_INT(option(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_STRUCTURED_REPLY, &d, &dl), NBD_REP_ACK);
	CHECK_INT(option(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_STRUCTURED_REPLY, &d, &dl), NBD_REP_ERR_INVALID);
	put_be32(b, 0);
	put_be32(b + 4, 1);
	put_be32(b + 8, 1000);
	CHECK_INT(option(&s, NBD_OPT_SET_META_CONTEXT, b, 12), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_SET_META_CONTEXT, &d, &dl), NBD_REP_ERR_INVALID);
	/* the named export works as well as the default one */
	CHECK_INT(go(&s, "disk"), 0);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_GO, &d, &dl), NBD_REP_INFO);
	srv_close(&s);

	/* An option too long to hold: hang up. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	nbd_put_be64(b, NBD_IHAVEOPT);
	put_be32(b + 8, NBD_OPT_GO);
	put_be32(b + 12, NBD_SRV_MAX_OPTION_LEN + 1);
	CHECK(feed(&s, b, 16) < 0);
	srv_close(&s);

	/* An option without its magic: hang up. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	memset(b, 0, 16);
	CHECK(feed(&s, b, 16) < 0);
	srv_close(&s);

	/* Endless options: hang up. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	int e = 0;
	for (int i = 0; i <= NBD_SRV_MAX_OPTIONS && e == 0; i++)
		e = option(&s, 42, NULL, 0);
	CHECK(e < 0);
	srv_close(&s);

	/* ABORT ends the session politely. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	CHECK_INT(option(&s, NBD_OPT_ABORT, NULL, 0), 1);
	CHECK_INT((uint32_t)opt_reply(&s, NBD_OPT_ABORT, &d, &dl), NBD_REP_ACK);
	srv_close(&s);
}

TEST(export_name_option)
{
	struct srv s;
	uint8_t h[NBD_REQUEST_SIZE];

	/* Unknown name: the option cannot say no, so the server hangs up. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	CHECK(option(&s, NBD_OPT_EXPORT_NAME, "other", 5) < 0);
	srv_close(&s);

	/* Without NO_ZEROES: size, flags and 124 zeros. */
	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	CHECK_INT(option(&s, NBD_OPT_EXPORT_NAME, "disk", 4), 0);
	CHECK_INT(buf_avail(&s.out), 134);
	CHECK_INT(nbd_get_be64(buf_head(&s.out)), SIZE);
	srv_close(&s);

	CHECK(srv_open(&s, 0) == 0);
	feed(&s, NULL, 0);
	client_flags(&s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	CHECK_INT(option(&s, NBD_OPT_EXPORT_NAME, NULL, 0), 0);
	CHECK_INT(buf_avail(&s.out), 10);
	/* A request without its magic: hang up. */
	memset(h, 0, sizeof(h));
	CHECK(feed(&s, h, sizeof(h)) < 0);
	srv_close(&s);
}

/* --- the threaded server and metac's client ------------------------ */

TEST(client_pipelines_against_the_threaded_server)
{
	struct srv s;
	struct nbd_client *c;
	static uint8_t w[64][65536], r[64][65536];
	char err[256];
	int sv[2], nerr, e;
	uint32_t elen, eflags;

	signal(SIGPIPE, SIG_IGN); /* as server.h asks */
	CHECK(srv_open(&s, 0) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK_INT(nbd_serve_async(s.ex, sv[1]), 0);
	c = nbd_client_new(sv[0], "", err, sizeof(err));
	if (!c)
		UNIT_FAIL("client: %s", err);
	CHECK(c);
	CHECK_INT(nbd_client_size(c), SIZE);
	CHECK(nbd_client_has_block_status(c));
	/* 64 writes in flight, then 64 reads, completed in any order. */
	for (int i = 0; i < 64; i++) {
		memset(w[i], i + 1, sizeof(w[i]));
		CHECK_INT(nbd_client_submit(c, NBD_CMD_WRITE, 0, (uint64_t)i * 65536, 65536, w[i],
					    NULL), 0);
	}
	for (int i = 0; i < 64; i++) {
		CHECK_INT(nbd_client_complete(c, &nerr), 0);
		CHECK_INT(nerr, 0);
	}
	CHECK_INT(nbd_client_complete(c, &nerr), -EAGAIN);
	CHECK_INT(nbd_client_flush(c), 0);
	for (int i = 0; i < 64; i++)
		CHECK_INT(nbd_client_submit(c, NBD_CMD_READ, 0, (uint64_t)i * 65536, 65536, NULL,
					    r[i]), 0);
	for (int i = 0; i < 64; i++) {
		CHECK_INT(nbd_client_complete(c, &nerr), 0);
		CHECK_INT(nerr, 0);
	}
	CHECK_MEM(r, w, sizeof(w));
	CHECK_INT(nbd_client_block_status(c, 0, SIZE, &elen, &eflags), 0);
	CHECK_INT(elen, 64 * 65536);
	CHECK_INT(eflags, 0);
	CHECK_INT(nbd_client_block_status(c, 64 * 65536, SIZE - 64 * 65536, &elen, &eflags), 0);
	CHECK(eflags & NBD_STATE_ZERO);
	/* The server's errors come back as errors, and the session goes on. */
	e = nbd_client_read(c, SIZE - 10, 4096, r[0]);
	CHECK_INT(e, NBD_EINVAL);
	CHECK_INT(nbd_client_read(c, SIZE - 10, 10, r[0]), 0);
	nbd_client_free(c);
	srv_close(&s);
}

/* A threaded session whose client never finishes negotiating is
 * dropped, and one that hangs up mid-request goes away quietly. */
TEST(threaded_server_drops_a_client_that_hangs_up)
{
	struct srv s;
	int sv[2];
	uint8_t b[64];

	signal(SIGPIPE, SIG_IGN);
	CHECK(srv_open(&s, 0) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK_INT(nbd_serve_async(s.ex, sv[1]), 0);
	CHECK_INT(read(sv[0], b, 18), 18);
	put_be32(b, NBD_FLAG_C_FIXED_NEWSTYLE);
	CHECK_INT(write(sv[0], b, 4), 4);
	nbd_put_be64(b, NBD_IHAVEOPT);
	put_be32(b + 8, NBD_OPT_GO);
	put_be32(b + 12, 100); /* then only part of it */
	CHECK_INT(write(sv[0], b, 20), 20);
	close(sv[0]);
	/* The export outlives the session; its last reference goes below. */
	srv_close(&s);
}

/* --- the client against replies that do not fit -------------------- */

static void chunk(struct buf *b, uint16_t flags, uint16_t type, uint64_t cookie,
		  const void *p, uint32_t n)
{
	buf_put_u32_be(b, NBD_STRUCTURED_REPLY_MAGIC);
	buf_put_u16_be(b, flags);
	buf_put_u16_be(b, type);
	buf_put_u64_be(b, cookie);
	buf_put_u32_be(b, n);
	buf_put(b, p, n);
}

TEST(client_refuses_replies_that_do_not_fit)
{
	struct buf b;
	static uint8_t data[8 + 65536];
	uint8_t bs[12], e6[6];

	/* The fuzz harness's requests: cookie 1 READ 0+65536, 2 BLOCK_STATUS,
	 * 3 WRITE, 4 READ 65536+512; the first byte picks structured. */
	buf_init(&b);
	buf_put_u8(&b, 1);
	nbd_put_be64(data, 0);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 1, data, 8 + 65536);
	put_be32(bs, 1);
	put_be32(bs + 4, 1 << 20);
	put_be32(bs + 8, 0);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, 2, bs, 12);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 3, NULL, 0);
	put_be32(e6, NBD_EIO);
	nbd_put_be16(e6 + 4, 0);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 4, e6, 6);
	CHECK_INT(nbd_client_fuzz_replies(buf_head(&b), buf_avail(&b)), 0);

	/* Data beyond the request it answers. */
	buf_reset(&b);
	buf_put_u8(&b, 1);
	nbd_put_be64(data, 65536 - 512);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 4, data, 8 + 1024);
	CHECK_INT(nbd_client_fuzz_replies(buf_head(&b), buf_avail(&b)), -EPROTO);

	/* A reply to a request never made. */
	buf_reset(&b);
	buf_put_u8(&b, 1);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 99, NULL, 0);
	CHECK_INT(nbd_client_fuzz_replies(buf_head(&b), buf_avail(&b)), -EPROTO);

	/* A read "done" with half its data. */
	buf_reset(&b);
	buf_put_u8(&b, 1);
	nbd_put_be64(data, 0);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 1, data, 8 + 100);
	CHECK_INT(nbd_client_fuzz_replies(buf_head(&b), buf_avail(&b)), -EPROTO);

	/* An error message longer than its chunk. */
	buf_reset(&b);
	buf_put_u8(&b, 1);
	put_be32(e6, NBD_EIO);
	nbd_put_be16(e6 + 4, 100);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 3, e6, 6);
	CHECK_INT(nbd_client_fuzz_replies(buf_head(&b), buf_avail(&b)), -EPROTO);

	/* Structured chunks where none were negotiated. */
	buf_reset(&b);
	buf_put_u8(&b, 0);
	chunk(&b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 3, NULL, 0);
	CHECK_INT(nbd_client_fuzz_replies(buf_head(&b), buf_avail(&b)), -EPROTO);
	buf_free(&b);
}
