/*
 * A peer that completes metac's handshake (so it is an authenticated
 * node, with a key of its own) and then misbehaves, for the hostile-peer
 * tests. It speaks the wire format of wire/conn.h by hand: u16-prefixed
 * Noise IK messages, then u32-prefixed ChaChaPoly frames with the header
 * as associated data.
 *
 *   hostile_peer MODE HOST:PORT REF [N]
 *
 * REF is any ref of the node (it carries the node's key). Modes:
 *   slow      say hello, then begin a 1000-byte frame and send one byte
 *             of it a second: prints how long until the node hangs up
 *   oversize  say hello, then a frame header claiming 16 MiB
 *   silent    finish the handshake and say nothing
 *   idle      say hello and hold nothing
 *   conns     open N connections with one key, each says hello; prints
 *             "open K of N" for those still open a second later, then
 *             holds them for HOLD seconds (the 5th argument, default 0)
 * Every mode but conns prints "closed after S s" and exits 0 when the
 * node hangs up, 1 if it has not after 120 s.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/b64url.h"
#include "wire/noise.h"

#define PROLOGUE "metac wire 1"

struct peer {
	int fd;
	struct noise_cipher tx, rx;
};

static uint8_t my_priv[32], my_pub[32], node_pub[32];

static int dial(const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	int fd;

	if (!colon || colon - addr >= (long)sizeof(host))
		return -1;
	memcpy(host, addr, colon - addr);
	host[colon - addr] = 0;
	if (getaddrinfo(host, colon + 1, &hints, &ai))
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = write(fd, p, n);
		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

/* Dials and runs the handshake as the initiator: 0 or -1. */
static int handshake(struct peer *p, const char *addr)
{
	struct noise_hs hs;
	uint8_t msg[1024], payload[256];
	size_t len, plen;

	if ((p->fd = dial(addr)) < 0)
		return -1;
	if (noise_hs_init(&hs, 1, (const uint8_t *)PROLOGUE, strlen(PROLOGUE), my_priv,
			  node_pub) < 0 ||
	    noise_hs_write(&hs, NULL, 0, msg + 2, sizeof(msg) - 2, &len) < 0)
		return -1;
	msg[0] = (uint8_t)(len >> 8);
	msg[1] = (uint8_t)len;
	if (write_full(p->fd, msg, len + 2) < 0 || read_full(p->fd, msg, 2) < 0)
		return -1;
	len = (size_t)msg[0] << 8 | msg[1];
	if (len > sizeof(msg) || read_full(p->fd, msg, len) < 0 ||
	    noise_hs_read(&hs, msg, len, payload, sizeof(payload), &plen) < 0 ||
	    noise_hs_split(&hs, &p->tx, &p->rx, NULL) < 0)
		return -1;
	return 0;
}

static int send_frame(struct peer *p, const uint8_t *d, size_t n)
{
	uint8_t f[4 + 64 + 16];
	size_t len = n + 16;

	if (n > 64)
		return -1;
	f[0] = (uint8_t)(len >> 24);
	f[1] = (uint8_t)(len >> 16);
	f[2] = (uint8_t)(len >> 8);
	f[3] = (uint8_t)len;
	if (noise_cipher_encrypt(&p->tx, f, 4, d, n, f + 4) < 0)
		return -1;
	return write_full(p->fd, f, 4 + len);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Has the node hung up? Waits up to ms; anything it sends is dropped. */
static int hung_up(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint8_t junk[4096];

	while (poll(&pfd, 1, ms) > 0) {
		ssize_t r = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			return 1;
		ms = 0;
	}
	return 0;
}

static int wait_hangup(struct peer *p, double start, int trickle)
{
	uint8_t byte = 0;

	for (int i = 0; i < 120; i++) {
		if (hung_up(p->fd, 1000)) {
			printf("closed after %.1f s\n", now_s() - start);
			return 0;
		}
		if (trickle && write(p->fd, &byte, 1) != 1) {
			printf("closed after %.1f s\n", now_s() - start);
			return 0;
		}
	}
	printf("still open after 120 s\n");
	return 1;
}

static int parse_ref(const char *ref)
{
	uint8_t tok[64];
	size_t n;
	const char *slash = strrchr(ref, '/');

	if (strncmp(ref, "ref://", 6) || !slash ||
	    b64url_decode(slash + 1, strlen(slash + 1), tok, sizeof(tok), &n) < 0 || n < 32)
		return -1;
	memcpy(node_pub, tok, 32);
	return 0;
}

int main(int argc, char **argv)
{
	static const uint8_t hello = 'R';
	struct peer p;
	double start;

	if (argc < 4 || sodium_init() < 0 || parse_ref(argv[3]) < 0) {
		fprintf(stderr, "usage: hostile_peer slow|oversize|silent|idle|conns "
				"HOST:PORT REF [N]\n");
		return 2;
	}
	noise_keypair_generate(my_priv, my_pub);
	const char *mode = argv[1], *addr = argv[2];

	if (!strcmp(mode, "conns")) {
		int n = argc > 4 ? atoi(argv[4]) : 300, open = 0;
		struct peer *ps = calloc(n, sizeof(*ps));
		for (int i = 0; i < n; i++) {
			if (handshake(&ps[i], addr) < 0 || send_frame(&ps[i], &hello, 1) < 0) {
				fprintf(stderr, "connection %d failed its handshake\n", i);
				ps[i].fd = -1;
			}
		}
		sleep(1);
		for (int i = 0; i < n; i++)
			open += ps[i].fd >= 0 && !hung_up(ps[i].fd, 0);
		printf("open %d of %d\n", open, n);
		fflush(stdout);
		if (argc > 5)
			sleep((unsigned)atoi(argv[5]));
		return 0;
	}
	if (handshake(&p, addr) < 0) {
		fprintf(stderr, "hostile_peer: handshake with %s failed\n", addr);
		return 1;
	}
	start = now_s();
	if (!strcmp(mode, "silent"))
		return wait_hangup(&p, start, 0);
	if (send_frame(&p, &hello, 1) < 0)
		return 1;
	if (!strcmp(mode, "idle"))
		return wait_hangup(&p, start, 0);
	if (!strcmp(mode, "oversize")) {
		static const uint8_t hdr[4] = { 0x01, 0x00, 0x00, 0x00 };
		if (write_full(p.fd, hdr, 4) < 0)
			return 1;
		return wait_hangup(&p, start, 0);
	}
	if (!strcmp(mode, "slow")) {
		static const uint8_t hdr[4] = { 0x00, 0x00, 0x03, 0xe8 };
		if (write_full(p.fd, hdr, 4) < 0)
			return 1;
		return wait_hangup(&p, start, 1);
	}
	fprintf(stderr, "hostile_peer: unknown mode %s\n", mode);
	return 2;
}
