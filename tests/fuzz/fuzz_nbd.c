/*
 * libFuzzer target: the NBD server of nbd/server.c (negotiation and the
 * request decoder) through the thread-free session of server.h.
 *
 * The input is flags[1] chunk[1] and then bytes from the client, fed in
 * pieces of chunk+1 bytes (so that every message also arrives split).
 * Flags: bit 0 a read-only export, bit 1 a 512-byte minimum block size,
 * bit 2 the harness negotiates first (structured replies, base:allocation,
 * NBD_OPT_GO), so that the input is requests from its first byte.
 *
 * The export is a 64 KiB memfd, made afresh for each input. Checked:
 * nothing crashes or leaks; the export never changes size, and never
 * changes at all when read-only; once the harness negotiated, everything
 * the server sends parses as whole replies (simple replies carry no
 * data, chunks are within the maximum payload); nothing is fed after the
 * session said it ended.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "tests/fuzz/check.h"

#define SIZE 65536
#define FLAG_READ_ONLY 1
#define FLAG_MIN_BLOCK 2
#define FLAG_NEGOTIATE 4

static uint8_t pattern[SIZE], now[SIZE];

static void put_option(struct buf *b, uint32_t opt, const void *p, uint32_t n)
{
	buf_put_u64_be(b, NBD_IHAVEOPT);
	buf_put_u32_be(b, opt);
	buf_put_u32_be(b, n);
	buf_put(b, p, n);
}

/* What a client sends to reach transmission with every feature on. */
static void preamble(struct buf *b)
{
	static const char ctx[] = NBD_META_BASE_ALLOCATION;
	uint8_t m[12 + sizeof(ctx)], g[6] = { 0 };

	buf_put_u32_be(b, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	put_option(b, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	put_be32(m, 0);
	put_be32(m + 4, 1);
	put_be32(m + 8, sizeof(ctx) - 1);
	memcpy(m + 12, ctx, sizeof(ctx) - 1);
	put_option(b, NBD_OPT_SET_META_CONTEXT, m, 12 + sizeof(ctx) - 1);
	put_option(b, NBD_OPT_GO, g, sizeof(g));
}

/* Skips the negotiation replies (up to GO's ACK) in out. */
static size_t skip_negotiation(const struct buf *out)
{
	struct rd r;
	uint64_t magic;
	uint32_t opt, type, len;

	rd_init(&r, buf_head(out), buf_avail(out));
	CHECK(rd_skip(&r, 18) == 0);
	for (;;) {
		CHECK(rd_u64_be(&r, &magic) == 0 && magic == NBD_REP_MAGIC);
		CHECK(rd_u32_be(&r, &opt) == 0 && rd_u32_be(&r, &type) == 0 &&
		      rd_u32_be(&r, &len) == 0 && rd_skip(&r, len) == 0);
		CHECK(!(type & 0x80000000u));
		if (opt == NBD_OPT_GO && type == NBD_REP_ACK)
			return r.off;
	}
}

/* Every reply in p[0..n) is whole and well formed. */
static void check_replies(const uint8_t *p, size_t n)
{
	struct rd r;
	uint32_t magic, len;
	uint16_t flags, type;
	uint64_t cookie;

	rd_init(&r, p, n);
	while (rd_left(&r)) {
		CHECK(rd_u32_be(&r, &magic) == 0);
		if (magic == NBD_SIMPLE_REPLY_MAGIC) {
			CHECK(rd_skip(&r, 12) == 0);
			continue;
		}
		CHECK(magic == NBD_STRUCTURED_REPLY_MAGIC);
		CHECK(rd_u16_be(&r, &flags) == 0 && rd_u16_be(&r, &type) == 0 &&
		      rd_u64_be(&r, &cookie) == 0 && rd_u32_be(&r, &len) == 0);
		CHECK(flags == NBD_REPLY_FLAG_DONE);
		CHECK(len <= NBD_MAX_PAYLOAD + 8);
		if (type == NBD_REPLY_TYPE_BLOCK_STATUS)
			CHECK(len >= 12 && (len - 4) % 8 == 0);
		else if (type == NBD_REPLY_TYPE_ERROR)
			CHECK(len >= 6);
		else if (type == NBD_REPLY_TYPE_OFFSET_DATA)
			CHECK(len >= 9);
		else
			CHECK(type == NBD_REPLY_TYPE_NONE && len == 0);
		CHECK(rd_skip(&r, len) == 0);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init("fuzz_nbd", LOG_LVL_ERROR, 0);
	for (size_t i = 0; i < SIZE; i++)
		pattern[i] = (uint8_t)(i * 31 + 7);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_export *ex;
	struct nbd_session *s;
	struct buf out, pre;
	struct stat st;
	size_t chunk, start = 0;
	int fd, e, rc = 0, ro;

	if (size < 2)
		return 0;
	ro = data[0] & FLAG_READ_ONLY;
	chunk = (size_t)data[1] + 1;
	data += 2;
	size -= 2;

	fd = memfd_create("fuzz_nbd", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, pattern, SIZE, 0) == SIZE);
	/* Every other 4 KiB a hole, for block status to find. */
	for (off_t o = 0; o < SIZE; o += 8192)
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, o, 4096);
	CHECK(pread(fd, now, SIZE, 0) == SIZE);
	memcpy(pattern, now, SIZE); /* what read-only must keep */
	ex = nbd_export_new(fd, "fuzz", ro, &e);
	CHECK(ex);
	if (data[-2] & FLAG_MIN_BLOCK)
		nbd_export_set_min_block(ex, 512);
	s = nbd_session_new(ex);
	CHECK(s);
	buf_init(&out);
	buf_init(&pre);

	if (data[-2] & FLAG_NEGOTIATE) {
		preamble(&pre);
		CHECK(nbd_session_feed(s, buf_head(&pre), buf_avail(&pre), &out) == 0);
		start = skip_negotiation(&out);
	}
	for (size_t off = 0; off < size && rc == 0; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		rc = nbd_session_feed(s, data + off, n, &out);
	}
	if (data[-2] & FLAG_NEGOTIATE)
		check_replies(buf_head(&out) + start, buf_avail(&out) - start);

	CHECK(fstat(fd, &st) == 0 && st.st_size == SIZE);
	if (ro) {
		CHECK(pread(fd, now, SIZE, 0) == SIZE);
		CHECK(!memcmp(now, pattern, SIZE));
	}
	nbd_session_free(s);
	nbd_export_unref(ex); /* closes fd */
	buf_free(&out);
	buf_free(&pre);
	/* The pattern again, for the next input. */
	for (size_t i = 0; i < SIZE; i++)
		pattern[i] = (uint8_t)(i * 31 + 7);
	return 0;
}
