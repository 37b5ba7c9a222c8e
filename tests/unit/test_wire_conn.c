/*
 * wire/conn.c between two real endpoints, with the test in the middle as
 * a man in the middle: bytes are forwarded by hand between two socket
 * pairs, so that a test can flip, replay or forge them.
 */
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/loop.h"
#include "wire/conn.h"
#include "wire/noise.h"
#include "tests/unit/unit.h"

struct end {
	int ready, closed, err;
	size_t records, bytes;
	uint8_t last[64];
	struct wire_conn *wc;
};

static void on_ready(struct wire_conn *c, void *arg)
{
	((struct end *)arg)->ready = 1;
}

static void on_record(struct wire_conn *c, uint8_t *p, size_t n, void *arg)
{
	struct end *e = arg;
	e->records++;
	e->bytes += n;
	memcpy(e->last, p, n < sizeof(e->last) ? n : sizeof(e->last));
}

static void on_closed(struct wire_conn *c, int err, void *arg)
{
	struct end *e = arg;
	e->closed = 1;
	e->err = err;
	e->wc = NULL;
}

static const struct wire_conn_ops ops = {
	.ready = on_ready, .record = on_record, .closed = on_closed,
};

/* The middle: what goes from the initiator to the responder passes
 * through here and may be changed. */
struct mitm {
	int from_i, to_r; /* initiator -> responder */
	int from_r, to_i; /* responder -> initiator */
	size_t seen;      /* bytes initiator -> responder so far */
	long flip_at;     /* flip this byte (-1: none) */
	int replay_next;  /* duplicate the next chunk that holds a frame */
	int dropped;
};

static void pump(int from, int to, struct mitm *m, int forward)
{
	uint8_t buf[1 << 17];
	ssize_t n = read(from, buf, sizeof(buf));
	if (n <= 0)
		return;
	if (forward) {
		if (m->flip_at >= 0 && (size_t)m->flip_at >= m->seen &&
		    (size_t)m->flip_at < m->seen + n)
			buf[m->flip_at - m->seen] ^= 0x40;
		m->seen += n;
		if (m->replay_next && m->seen > 2 + 96) {
			m->replay_next = 0;
			if (send(to, buf, n, MSG_NOSIGNAL) != n)
				m->dropped = 1;
		}
	}
	if (send(to, buf, n, MSG_NOSIGNAL) != n)
		m->dropped = 1;
}

struct pair {
	struct loop *l;
	struct end i, r;
	struct mitm m;
	uint8_t i_priv[32], r_priv[32], r_pub[32];
};

static void run(struct pair *p, int rounds)
{
	for (int k = 0; k < rounds; k++) {
		loop_run_once(p->l, 5);
		pump(p->m.from_i, p->m.to_r, &p->m, 1);
		pump(p->m.from_r, p->m.to_i, &p->m, 0);
	}
}

/* initiator <-> fds[0] | fds[1] (test) fds[2] | fds[3] <-> responder */
static int pair_open(struct pair *p, const uint8_t *expect_pub)
{
	int a[2], b[2];
	memset(p, 0, sizeof(*p));
	p->m.flip_at = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b) < 0)
		return -1;
	p->m.from_i = a[1];
	p->m.to_i = a[1];
	p->m.to_r = b[0];
	p->m.from_r = b[0];
	noise_keypair_generate(p->i_priv, p->r_pub);
	noise_keypair_generate(p->r_priv, p->r_pub);
	p->l = loop_new();
	p->i.wc = wire_conn_new(p->l, a[0], WIRE_INITIATOR, p->i_priv,
				expect_pub ? expect_pub : p->r_pub, &ops, &p->i);
	p->r.wc = wire_conn_new(p->l, b[1], WIRE_RESPONDER, p->r_priv, NULL,
				&ops, &p->r);
	return p->i.wc && p->r.wc ? 0 : -1;
}

static void pair_close(struct pair *p)
{
	if (p->i.wc)
		wire_conn_close(p->i.wc);
	if (p->r.wc)
		wire_conn_close(p->r.wc);
	loop_run_once(p->l, 0);
	loop_free(p->l);
	close(p->m.from_i);
	close(p->m.to_r);
}

TEST(records_cross_both_ways)
{
	struct pair p;
	static uint8_t big[WIRE_MAX_RECORD];
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	CHECK(p.i.ready && p.r.ready);
	CHECK_INT(wire_conn_send(p.i.wc, "hello", 5), 0);
	CHECK_INT(wire_conn_send(p.r.wc, "back", 4), 0);
	CHECK_INT(wire_conn_send(p.i.wc, big, sizeof(big)), 0);
	CHECK_INT(wire_conn_send(p.i.wc, big, sizeof(big) + 1), -EMSGSIZE);
	run(&p, 20);
	CHECK_INT(p.r.records, 2);
	CHECK_INT(p.r.bytes, 5 + sizeof(big));
	CHECK_INT(p.i.records, 1);
	CHECK_MEM(p.i.last, "back", 4);
	CHECK(!p.i.closed && !p.r.closed);
	pair_close(&p);
}

TEST(responder_learns_initiator_key)
{
	struct pair p;
	uint8_t i_pub[32];
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	CHECK(p.r.ready);
	noise_pubkey(p.i_priv, i_pub);
	CHECK_MEM(wire_conn_remote_key(p.r.wc), i_pub, 32);
	pair_close(&p);
}

TEST(flipped_byte_closes_and_delivers_nothing)
{
	struct pair p;
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	CHECK(p.r.ready);
	/* The first transport frame starts after message 1 (2 + 96 bytes):
	 * flip a ciphertext byte inside it. */
	p.m.flip_at = 2 + 96 + 4 + 3;
	CHECK_INT(wire_conn_send(p.i.wc, "secret payload", 14), 0);
	run(&p, 10);
	CHECK_INT(p.r.records, 0);
	CHECK(p.r.closed);
	CHECK_INT(p.r.err, -EBADMSG);
	pair_close(&p);
}

TEST(flipped_length_closes)
{
	struct pair p;
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	p.m.flip_at = 2 + 96 + 3; /* low byte of the length */
	CHECK_INT(wire_conn_send(p.i.wc, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefxx", 66), 0);
	CHECK_INT(wire_conn_send(p.i.wc, "more", 4), 0);
	run(&p, 10);
	CHECK_INT(p.r.records, 0);
	CHECK(p.r.closed);
	pair_close(&p);
}

TEST(replayed_frame_rejected)
{
	struct pair p;
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	p.m.replay_next = 1;
	CHECK_INT(wire_conn_send(p.i.wc, "pay me once", 11), 0);
	run(&p, 10);
	/* The original is delivered, the copy fails its nonce. */
	CHECK_INT(p.r.records, 1);
	CHECK(p.r.closed);
	CHECK_INT(p.r.err, -EBADMSG);
	pair_close(&p);
}

TEST(oversized_frame_closes)
{
	struct pair p;
	uint8_t hdr[4] = { 0x00, 0x10, 0x00, 0x00 }; /* 1 MiB */
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	CHECK(p.r.ready);
	CHECK_INT(send(p.m.to_r, hdr, 4, MSG_NOSIGNAL), 4);
	run(&p, 5);
	CHECK(p.r.closed);
	CHECK_INT(p.r.err, -EMSGSIZE);
	pair_close(&p);
}

TEST(garbage_instead_of_handshake)
{
	struct pair p;
	uint8_t junk[300];
	CHECK_INT(pair_open(&p, NULL), 0);
	/* Replace the initiator's message with noise of the right size. */
	randombytes_buf(junk, sizeof(junk));
	junk[0] = 0;
	junk[1] = 96;
	CHECK_INT(send(p.m.to_r, junk, 98, MSG_NOSIGNAL), 98);
	run(&p, 5);
	CHECK(p.r.closed);
	CHECK(!p.r.ready);
	pair_close(&p);
}

TEST(wrong_responder_key_fails_handshake)
{
	struct pair p;
	uint8_t other_priv[32], other_pub[32];
	noise_keypair_generate(other_priv, other_pub);
	CHECK_INT(pair_open(&p, other_pub), 0);
	run(&p, 10);
	CHECK(!p.i.ready && !p.r.ready);
	CHECK(p.r.closed);
	pair_close(&p);
}

TEST(rekey_keeps_both_sides_in_step)
{
	struct pair p;
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	/* Past one rekey interval in each direction. */
	for (unsigned k = 0; k < WIRE_REKEY_RECORDS + 100; k++) {
		CHECK_INT(wire_conn_send(p.i.wc, "x", 1), 0);
		CHECK_INT(wire_conn_send(p.r.wc, "y", 1), 0);
		if (k % 4096 == 0)
			run(&p, 2);
	}
	for (int k = 0; k < 200 && (p.r.records < WIRE_REKEY_RECORDS + 100 ||
				    p.i.records < WIRE_REKEY_RECORDS + 100); k++)
		run(&p, 1);
	CHECK_INT(p.r.records, WIRE_REKEY_RECORDS + 100);
	CHECK_INT(p.i.records, WIRE_REKEY_RECORDS + 100);
	CHECK(!p.i.closed && !p.r.closed);
	pair_close(&p);
}

/* A peer that sends its last records and goes while the receiver is
 * paused (a pipe waiting for its other side to drain): the records are
 * all delivered on resume, then the end, cleanly. Meanwhile the hung-up
 * socket does not wake the loop. */
TEST(end_while_paused_delivers_everything_first)
{
	struct loop *l = loop_new();
	struct end a = { 0 }, b = { 0 };
	int sv[2], woke = 0;

	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	a.wc = wire_conn_new(l, sv[0], WIRE_PLAIN, NULL, NULL, &ops, &a);
	b.wc = wire_conn_new(l, sv[1], WIRE_PLAIN, NULL, NULL, &ops, &b);
	for (int k = 0; k < 5; k++)
		loop_run_once(l, 0);
	wire_conn_pause(b.wc, 1);
	CHECK_INT(wire_conn_send(a.wc, "one", 3), 0);
	CHECK_INT(wire_conn_send(a.wc, "two", 3), 0);
	CHECK_INT(wire_conn_send(a.wc, "", 0), 0);
	wire_conn_shutdown(a.wc);
	for (int k = 0; k < 5; k++)
		loop_run_once(l, 0);
	CHECK(a.closed && !a.err);
	for (int k = 0; k < 20; k++)
		woke += loop_run_once(l, 0) > 0;
	CHECK_INT(woke, 0);
	CHECK(!b.closed && b.records == 0);
	wire_conn_pause(b.wc, 0);
	for (int k = 0; k < 5; k++)
		loop_run_once(l, 0);
	CHECK_INT(b.records, 3);
	CHECK_INT(b.bytes, 6);
	CHECK(b.closed);
	CHECK_INT(b.err, 0);
	loop_free(l);
}

/* A peer that dies halfway through a frame (a node killed mid-transfer):
 * the receiver sees the end as a reset at once, with and without a pause
 * in between, rather than waiting forever for the rest of the frame. */
TEST(peer_gone_mid_frame_is_a_reset)
{
	for (int paused = 0; paused < 2; paused++) {
		struct loop *l = loop_new();
		struct end b = { 0 };
		uint8_t frame[4 + 10] = { 0, 0, 0, 100 }; /* claims 100 bytes */
		int sv[2];

		CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
		b.wc = wire_conn_new(l, sv[1], WIRE_PLAIN, NULL, NULL, &ops, &b);
		for (int k = 0; k < 3; k++)
			loop_run_once(l, 0);
		if (paused)
			wire_conn_pause(b.wc, 1);
		CHECK_INT(write(sv[0], frame, sizeof(frame)), sizeof(frame));
		close(sv[0]);
		for (int k = 0; k < 5; k++)
			loop_run_once(l, 0);
		if (paused)
			wire_conn_pause(b.wc, 0);
		for (int k = 0; k < 5; k++)
			loop_run_once(l, 0);
		CHECK(b.closed);
		CHECK_INT(b.err, -ECONNRESET);
		CHECK_INT(b.records, 0);
		loop_free(l);
	}
}

/* A peer that begins a frame and trickles it (slowloris): the sweep
 * closes it once the frame has been unfinished for the timeout, but not a
 * connection whose frames keep completing, nor one we paused. */
TEST(unfinished_frame_is_swept)
{
	struct pair p;
	uint8_t hdr[6] = { 0, 0, 0, 100, 1, 2 }; /* claims 100 bytes, sends 2 */
	CHECK_INT(pair_open(&p, NULL), 0);
	run(&p, 10);
	CHECK(p.r.ready);
	CHECK_INT(wire_conn_send(p.i.wc, "x", 1), 0);
	run(&p, 5);
	CHECK_INT(p.r.records, 1);
	CHECK_INT(wire_conn_sweep(p.l, 0), 0); /* nothing begun */
	CHECK_INT(send(p.m.to_r, hdr, sizeof(hdr), MSG_NOSIGNAL), (long)sizeof(hdr));
	run(&p, 5);
	CHECK(!p.r.closed);
	CHECK_INT(wire_conn_sweep(p.l, 60000), 0); /* not yet */
	wire_conn_pause(p.r.wc, 1);
	CHECK_INT(wire_conn_sweep(p.l, 0), 0); /* paused: ours to wait for */
	wire_conn_pause(p.r.wc, 0);
	run(&p, 3);
	usleep(2000);
	CHECK_INT(wire_conn_sweep(p.l, 1), 1);
	run(&p, 3);
	CHECK(p.r.closed);
	CHECK_INT(p.r.err, -ETIMEDOUT);
	pair_close(&p);
}

struct acct_test {
	struct wire_acct a;
	int freed;
};

static void acct_test_free(struct wire_acct *a)
{
	((struct acct_test *)a)->freed = 1;
}

/* Two connections of one peer share one account: together they may not
 * buffer past max_bytes, and the account forgets them when they go. */
TEST(peer_account_bounds_connections_together)
{
	struct acct_test t = { .a = { .max_bytes = 3u << 20, .free = acct_test_free } };
	struct loop *l = loop_new();
	struct end b[2] = { { 0 } };
	static uint8_t chunk[WIRE_MAX_RECORD];
	int sv[2][2], r = 0;
	size_t sent = 0;

	for (int k = 0; k < 2; k++) {
		CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv[k]), 0);
		b[k].wc = wire_conn_new(l, sv[k][1], WIRE_PLAIN, NULL, NULL, &ops, &b[k]);
		wire_conn_charge(b[k].wc, &t.a);
	}
	for (int k = 0; k < 3; k++)
		loop_run_once(l, 0);
	CHECK_INT(t.a.conns, 2);
	/* Nobody reads the other ends: the first connection fills a part of
	 * the share, the second runs into the limit. */
	for (int k = 0; k < 16 && r == 0; k++, sent += sizeof(chunk))
		r = wire_conn_send(b[0].wc, chunk, sizeof(chunk));
	CHECK_INT(r, 0);
	for (int k = 0; k < 200 && r == 0; k++) {
		r = wire_conn_send(b[1].wc, chunk, sizeof(chunk));
		loop_run_once(l, 0);
	}
	CHECK_INT(r, -ENOBUFS);
	for (int k = 0; k < 3; k++)
		loop_run_once(l, 0);
	CHECK(b[1].closed);
	CHECK(!b[0].closed);
	CHECK(t.a.bytes <= t.a.max_bytes + sizeof(chunk) + 64);
	wire_conn_close(b[0].wc);
	for (int k = 0; k < 3; k++)
		loop_run_once(l, 0);
	CHECK_INT(t.a.conns, 0);
	CHECK_INT(t.a.bytes, 0);
	CHECK(t.freed);
	close(sv[0][0]);
	close(sv[1][0]);
	loop_free(l);
}

/* An owner that closes a connection hears nothing more of it, not even
 * of a failure queued before (the sweep's, say): it may have freed what
 * its closed callback would use. */
TEST(close_after_queued_failure_is_silent)
{
	struct loop *l = loop_new();
	struct end b = { 0 };
	int sv[2];

	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	b.wc = wire_conn_new(l, sv[1], WIRE_PLAIN, NULL, NULL, &ops, &b);
	for (int k = 0; k < 3; k++)
		loop_run_once(l, 0);
	wire_conn_abort(b.wc, -ETIMEDOUT);
	wire_conn_close(b.wc);
	for (int k = 0; k < 3; k++)
		loop_run_once(l, 0);
	CHECK(!b.closed);
	close(sv[0]);
	loop_free(l);
}
