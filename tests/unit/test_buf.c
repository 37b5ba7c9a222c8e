/* Growable buffers and bounds-checked readers (lib/buf.c). */
#include "lib/buf.h"
#include "tests/unit/unit.h"

TEST(put_and_read_back)
{
	struct buf b;
	struct rd r;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;

	buf_init(&b);
	CHECK_INT(buf_put_u8(&b, 0xab), 0);
	CHECK_INT(buf_put_u16(&b, 0x1234), 0);
	CHECK_INT(buf_put_u32_be(&b, 0xdeadbeef), 0);
	CHECK_INT(buf_put_u64(&b, 0x0102030405060708ull), 0);
	CHECK_INT(buf_avail(&b), 15);
	CHECK(b.data[b.off + 1] == 0x34 && b.data[b.off + 3] == 0xde);
	rd_init(&r, buf_head(&b), buf_avail(&b));
	CHECK_INT(rd_u8(&r, &u8), 0);
	CHECK_INT(rd_u16(&r, &u16), 0);
	CHECK_INT(rd_u32_be(&r, &u32), 0);
	CHECK_INT(rd_u64(&r, &u64), 0);
	CHECK(u8 == 0xab && u16 == 0x1234 && u32 == 0xdeadbeef);
	CHECK(u64 == 0x0102030405060708ull);
	CHECK_INT(rd_left(&r), 0);
	buf_free(&b);
}

TEST(short_reads_fail_and_leave_reader_unchanged)
{
	const uint8_t data[3] = { 1, 2, 3 };
	struct rd r;
	uint32_t v = 77;
	uint16_t w;
	const uint8_t *p;

	rd_init(&r, data, sizeof(data));
	CHECK_INT(rd_u32(&r, &v), -EBADMSG);
	CHECK_INT(v, 77);
	CHECK_INT(r.off, 0);
	CHECK_INT(rd_u16(&r, &w), 0);
	CHECK_INT(rd_bytes(&r, &p, 2), -EBADMSG);
	CHECK_INT(rd_skip(&r, (size_t)-1), -EBADMSG);
	CHECK_INT(rd_copy(&r, &v, 1), 0);
	CHECK_INT(rd_u8(&r, (uint8_t *)&w), -EBADMSG);
	CHECK_INT(rd_left(&r), 0);
}

TEST(consume_reclaims_space)
{
	struct buf b;
	uint8_t chunk[1000];

	memset(chunk, 7, sizeof(chunk));
	buf_init(&b);
	for (int i = 0; i < 100; i++) {
		CHECK_INT(buf_put(&b, chunk, sizeof(chunk)), 0);
		buf_consume(&b, sizeof(chunk));
	}
	/* A FIFO that is drained as fast as it is filled stays small. */
	CHECK(b.cap <= 4096);
	CHECK_INT(buf_avail(&b), 0);
	buf_consume(&b, 10); /* more than there is: clamps */
	CHECK_INT(buf_avail(&b), 0);
	buf_wipe(&b);
	CHECK(b.data == NULL);
}

TEST(refuses_absurd_growth)
{
	struct buf b;
	buf_init(&b);
	CHECK_INT(buf_reserve(&b, (size_t)1 << 40), -ENOMEM);
	CHECK_INT(buf_reserve(&b, 10), 0);
	buf_free(&b);
}

TEST(fixed_layout_helpers)
{
	uint8_t p[8];
	put_le32(p, 0x11223344);
	CHECK(p[0] == 0x44 && get_le32(p) == 0x11223344);
	put_be32(p, 0x11223344);
	CHECK(p[0] == 0x11 && get_be32(p) == 0x11223344);
	put_le64(p, 0x8877665544332211ull);
	CHECK(get_le64(p) == 0x8877665544332211ull);
}
