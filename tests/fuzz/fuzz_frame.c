/*
 * libFuzzer target: the record/frame decoder of wire/conn.c (conn.h
 * describes the framing).
 *
 * Plain mode: the input is written as raw bytes into a socket whose other
 * end is a WIRE_PLAIN wire_conn, then the writer shuts down; the loop runs
 * until the connection closes or nothing moves. Each record is echoed
 * (send, or reserve/commit), and its first byte may pause ('P'), shut down
 * ('S') or close ('C') the connection from inside the record callback.
 *
 * Handshake framing: the same raw input to a fresh WIRE_RESPONDER, so the
 * u16-framed message 1 is parsed from the bytes; a seed holding a genuine
 * message 1 for the fixed responder key gets it to the open state, where
 * the rest of the input is read as frames.
 *
 * Encrypted mode: a real Noise IK handshake between an initiator and a
 * responder with fixed static keys, relayed by hand through the middle
 * (initiator <-> a[0] | a[1] harness b[0] | b[1] <-> responder). Then the
 * initiator sends the input as one genuine record, and the harness writes
 * the input raw towards the responder: frames that fail to authenticate
 * or claim too much must close it, costing bounded memory.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "wire/conn.h"
#include "wire/noise.h"

/* Bounds on dispatch rounds: a stuck connection ends the run, not the
 * fuzzer. */
#define MAX_ROUNDS 4096
#define IDLE_ROUNDS 4
#define HANDSHAKE_ROUNDS 64

static const uint8_t init_priv[NOISE_KEY_LEN] = {
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
	0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
	0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
};
static const uint8_t resp_priv[NOISE_KEY_LEN] = {
	0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
	0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55,
	0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
};
static uint8_t resp_pub[NOISE_KEY_LEN];

struct end {
	struct wire_conn *wc; /* NULL once closed */
	int ready, paused, echo;
	size_t records;
};

static void on_ready(struct wire_conn *c, void *arg)
{
	((struct end *)arg)->ready = 1;
}

static void echo(struct wire_conn *c, const uint8_t *p, size_t n)
{
	if (n && p[0] == 'R') {
		uint8_t *dst = wire_conn_reserve(c, n);
		if (dst) {
			memcpy(dst, p, n);
			wire_conn_commit(c, n);
		}
		return;
	}
	wire_conn_send(c, p, n);
}

static void on_record(struct wire_conn *c, uint8_t *p, size_t n, void *arg)
{
	struct end *e = arg;

	e->records++;
	if (!e->echo)
		return;
	echo(c, p, n);
	if (!n)
		return;
	switch (p[0]) {
	case 'P':
		/* Resumed by the harness on its next round. */
		wire_conn_pause(c, 1);
		e->paused = 1;
		break;
	case 'S':
		wire_conn_shutdown(c);
		break;
	case 'C':
		wire_conn_close(c);
		e->wc = NULL;
		break;
	}
}

static void on_closed(struct wire_conn *c, int err, void *arg)
{
	((struct end *)arg)->wc = NULL;
}

static const struct wire_conn_ops ops = {
	.ready = on_ready,
	.record = on_record,
	.closed = on_closed,
};

/* Moves what is readable on from to to; 1 if anything moved. At EOF the
 * write side of to is shut down (once, *eof remembers). */
static int relay(int from, int to, int *eof)
{
	uint8_t b[1 << 16];
	int moved = 0;

	for (;;) {
		ssize_t n = recv(from, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 && !*eof) {
			*eof = 1;
			if (to >= 0)
				shutdown(to, SHUT_WR);
			return 1;
		}
		if (n <= 0)
			return moved;
		moved = 1;
		/* The far end may be gone or full: what it does not take is
		 * dropped, the connection under test copes either way. */
		if (to >= 0)
			send(to, b, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
}

/* Writes what fits of data[*off..size) to fd; 1 if anything was written. */
static int feed(int fd, const uint8_t *data, size_t size, size_t *off)
{
	if (*off >= size)
		return 0;
	ssize_t n = send(fd, data + *off, size - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n <= 0) {
		if (n < 0 && errno != EAGAIN)
			*off = size; /* the far end is gone */
		return 0;
	}
	*off += (size_t)n;
	return 1;
}

static void resume(struct end *e)
{
	if (e->paused && e->wc) {
		e->paused = 0;
		wire_conn_pause(e->wc, 0);
	}
}

static void close_end(struct end *e)
{
	if (e->wc) {
		wire_conn_close(e->wc);
		e->wc = NULL;
	}
}

/* Closed connections are freed by deferred calls: run them before
 * loop_free, which drops deferred calls without running them. */
static void loop_finish(struct loop *l)
{
	loop_run_once(l, 0);
	loop_run_once(l, 0);
	loop_free(l);
}

/* The input raw into a fresh connection of the given mode. */
static void fuzz_raw(enum wire_mode mode, const uint8_t *data, size_t size)
{
	struct loop *l = loop_new();
	struct end e = { .echo = 1 };
	int sv[2], eof = 0, shut = 0, idle = 0;
	size_t off = 0;

	if (!l)
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	e.wc = wire_conn_new(l, sv[0], mode, resp_priv, NULL, &ops, &e);
	if (!e.wc)
		abort();
	for (int round = 0; round < MAX_ROUNDS && e.wc && idle < IDLE_ROUNDS; round++) {
		int progress = feed(sv[1], data, size, &off);
		if (off == size && !shut) {
			shutdown(sv[1], SHUT_WR);
			shut = progress = 1;
		}
		if (e.paused) {
			resume(&e);
			progress = 1;
		}
		if (loop_run_once(l, 0) > 0)
			progress = 1;
		progress |= relay(sv[1], -1, &eof);
		idle = progress ? 0 : idle + 1;
	}
	close_end(&e);
	loop_finish(l);
	close(sv[1]);
}

static void fuzz_encrypted(const uint8_t *data, size_t size)
{
	struct loop *l = loop_new();
	struct end ini = { .echo = 0 }, resp = { .echo = 1 };
	int a[2], b[2], eof_a = 0, eof_b = 0, shut = 0, idle = 0, round;
	size_t off = 0;

	if (!l)
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b) < 0)
		abort();
	ini.wc = wire_conn_new(l, a[0], WIRE_INITIATOR, init_priv, resp_pub, &ops, &ini);
	resp.wc = wire_conn_new(l, b[1], WIRE_RESPONDER, resp_priv, NULL, &ops, &resp);
	if (!ini.wc || !resp.wc)
		abort();

	for (round = 0; round < HANDSHAKE_ROUNDS && !(ini.ready && resp.ready); round++) {
		loop_run_once(l, 0);
		relay(a[1], b[0], &eof_a);
		relay(b[0], a[1], &eof_b);
	}
	if (!ini.ready || !resp.ready || !ini.wc || !resp.wc) {
		fprintf(stderr, "fuzz_frame: the handshake did not complete\n");
		abort();
	}

	/* A genuine record first: the responder decrypts and acts on it. */
	wire_conn_send(ini.wc, data, size < WIRE_MAX_RECORD ? size : WIRE_MAX_RECORD);
	for (round = 0; round < MAX_ROUNDS && resp.wc && ini.wc && !resp.records &&
			idle < IDLE_ROUNDS; round++) {
		int progress = loop_run_once(l, 0) > 0;
		progress |= relay(a[1], b[0], &eof_a);
		progress |= relay(b[0], a[1], &eof_b);
		resume(&resp);
		idle = progress ? 0 : idle + 1;
	}

	/* Then the input raw, as if forged by a man in the middle. */
	idle = 0;
	for (round = 0; round < MAX_ROUNDS && resp.wc && idle < IDLE_ROUNDS; round++) {
		int progress = feed(b[0], data, size, &off);
		if (off == size && !shut) {
			shutdown(b[0], SHUT_WR);
			shut = progress = 1;
		}
		if (resp.paused) {
			resume(&resp);
			progress = 1;
		}
		if (loop_run_once(l, 0) > 0)
			progress = 1;
		progress |= relay(b[0], a[1], &eof_b);
		progress |= relay(a[1], -1, &eof_a);
		idle = progress ? 0 : idle + 1;
	}
	close_end(&ini);
	close_end(&resp);
	loop_finish(l);
	close(a[1]);
	close(b[0]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_LVL_ERROR);
	if (noise_init() < 0 || noise_pubkey(resp_priv, resp_pub) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_raw(WIRE_PLAIN, data, size);
	fuzz_raw(WIRE_RESPONDER, data, size);
	fuzz_encrypted(data, size);
	return 0;
}
