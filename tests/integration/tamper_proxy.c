/*
 * A TCP proxy that tampers with one frame of metac's wire protocol, for
 * tests/integration/transport_tamper.sh. Used to prove that a frame that
 * was changed on the way (flip) or sent again (replay) closes the
 * connection at the receiver and is never delivered, and that a proxy
 * that changes nothing (pass) is invisible.
 *
 *   tamper_proxy LISTEN_ADDR:PORT TARGET_ADDR:PORT flip|replay|pass N [rpc|data]
 *
 * On each accepted connection the client->server bytes are parsed: the
 * u16-length-prefixed Noise message 1, then u32-length-prefixed frames,
 * counted from 1 (the hello). Frame N gets one bit flipped in its
 * ciphertext (flip) or is sent twice (replay). Server->client bytes pass
 * unchanged; an end of stream is passed on as a half-close, an error as
 * a reset of both sides.
 *
 * The optional last argument limits the tampering to RPC or to data
 * connections. The proxy cannot decrypt, but the hello's length tells
 * them apart: 'R' is 1 byte, 'D' is 1 + 16 bytes of token (plus the
 * 16-byte tag each). Without it every connection is tampered with.
 *
 * One line per connection and per tampered frame goes to stderr; after
 * listen() it prints "listening" there, so a test can wait for it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TAG_LEN 16
#define HELLO_RPC_LEN (1 + TAG_LEN)
#define HELLO_DATA_LEN (1 + 16 + TAG_LEN)
/* Larger than any frame metac sends (64 KiB + tag); beyond it the rest
 * of the connection is passed through unparsed. */
#define MAX_FRAME (1u << 20)

enum mode { PASS, FLIP, REPLAY };
enum only { ALL, RPC, DATA };

static enum mode mode;
static enum only only;
static unsigned long target_n;
static struct sockaddr_storage target;
static socklen_t target_len;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

struct conn {
	unsigned id;
	int cfd, sfd;
};

static void say(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&log_lock);
	va_start(ap, fmt);
	fputs("tamper_proxy: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	pthread_mutex_unlock(&log_lock);
}

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *h = s;
	size_t hlen;
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM }, *ai;

	colon = strrchr(s, ':');
	if (!colon)
		return -1;
	hlen = colon - s;
	if (s[0] == '[' && hlen >= 2 && s[hlen - 1] == ']') {
		h = s + 1;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = 0;
	if (getaddrinfo(host, colon + 1, &hints, &ai))
		return -1;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* 1 read all, 0 clean end of stream before the first byte, -1 error or
 * end of stream in the middle. */
static int read_full(int fd, uint8_t *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 && got == 0 ? 0 : -1;
		got += r;
	}
	return 1;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

/* Copies what is left of a direction unchanged: 0 at a clean end. */
static int copy_rest(int from, int to)
{
	uint8_t b[65536];

	for (;;) {
		ssize_t r = read(from, b, sizeof(b));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return 0;
		if (write_full(to, b, r) < 0)
			return -1;
	}
}

/* A clean end is passed on as a half-close; anything else cuts both
 * sides, which also wakes the other direction's thread. */
static void end_direction(struct conn *c, int to, int err)
{
	if (err) {
		shutdown(c->cfd, SHUT_RDWR);
		shutdown(c->sfd, SHUT_RDWR);
	} else {
		shutdown(to, SHUT_WR);
	}
}

static void *server_to_client(void *arg)
{
	struct conn *c = arg;
	end_direction(c, c->cfd, copy_rest(c->sfd, c->cfd) < 0);
	return NULL;
}

static int tamper_this(struct conn *c, uint32_t hello_len)
{
	const char *kind = hello_len == HELLO_RPC_LEN ? "rpc" :
			   hello_len == HELLO_DATA_LEN ? "data" : "unknown";

	say("conn %u: %s connection (hello of %u bytes)", c->id, kind, hello_len);
	return only == ALL || (only == RPC && hello_len == HELLO_RPC_LEN) ||
	       (only == DATA && hello_len == HELLO_DATA_LEN);
}

/* Client to server: the handshake message, then frame by frame. */
static int client_to_server(struct conn *c)
{
	static const char *const names[] = { "passed", "flipped", "replayed" };
	uint8_t *f = malloc(4 + MAX_FRAME);
	unsigned long n = 0;
	int act = 1, r;
	uint32_t len;

	if (!f)
		return -1;
	if ((r = read_full(c->cfd, f, 2)) <= 0)
		goto out;
	len = (uint32_t)f[0] << 8 | f[1];
	if (read_full(c->cfd, f + 2, len) <= 0) {
		r = -1;
		goto out;
	}
	if ((r = write_full(c->sfd, f, 2 + len)) < 0)
		goto out;
	for (;;) {
		if ((r = read_full(c->cfd, f, 4)) <= 0)
			goto out;
		len = (uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 |
		      (uint32_t)f[2] << 8 | f[3];
		if (len > MAX_FRAME) {
			say("conn %u: frame %lu claims %u bytes; passing the rest",
			    c->id, n + 1, len);
			r = write_full(c->sfd, f, 4) < 0 ? -1 : copy_rest(c->cfd, c->sfd);
			goto out;
		}
		if ((r = read_full(c->cfd, f + 4, len)) <= 0) {
			r = -1;
			goto out;
		}
		if (++n == 1)
			act = tamper_this(c, len);
		if (n == target_n && act && mode != PASS) {
			if (mode == FLIP && len)
				f[4 + len / 2] ^= 0x04;
			else if (mode == REPLAY &&
				 (r = write_full(c->sfd, f, 4 + len)) < 0)
				goto out;
			say("conn %u: frame %lu of %u bytes %s", c->id, n, len,
			    names[mode]);
		}
		if ((r = write_full(c->sfd, f, 4 + len)) < 0)
			goto out;
	}
out:
	free(f);
	say("conn %u: client sent %lu frames, %s", c->id, n,
	    r < 0 ? "then failed" : "then ended");
	return r < 0 ? -1 : 0;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	pthread_t t;

	c->sfd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->sfd < 0 || connect(c->sfd, (struct sockaddr *)&target, target_len) < 0) {
		say("conn %u: cannot connect to the target: %s", c->id,
		    strerror(errno));
		goto out;
	}
	if (pthread_create(&t, NULL, server_to_client, c)) {
		say("conn %u: cannot start a thread", c->id);
		goto out;
	}
	end_direction(c, c->sfd, client_to_server(c) < 0);
	pthread_join(t, NULL);
out:
	if (c->sfd >= 0)
		close(c->sfd);
	close(c->cfd);
	free(c);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage la;
	socklen_t llen;
	unsigned id = 0;
	int lfd, one = 1;
	char *end;

	if (argc < 5 || argc > 6 || parse_addr(argv[1], &la, &llen) < 0 ||
	    parse_addr(argv[2], &target, &target_len) < 0)
		goto usage;
	if (!strcmp(argv[3], "pass"))
		mode = PASS;
	else if (!strcmp(argv[3], "flip"))
		mode = FLIP;
	else if (!strcmp(argv[3], "replay"))
		mode = REPLAY;
	else
		goto usage;
	target_n = strtoul(argv[4], &end, 10);
	if (*end || target_n < 1)
		goto usage;
	if (argc == 6 && !strcmp(argv[5], "rpc"))
		only = RPC;
	else if (argc == 6 && !strcmp(argv[5], "data"))
		only = DATA;
	else if (argc == 6)
		goto usage;

	signal(SIGPIPE, SIG_IGN);
	lfd = socket(la.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, (struct sockaddr *)&la, llen) || listen(lfd, 64)) {
		say("cannot listen on %s: %s", argv[1], strerror(errno));
		return 1;
	}
	say("listening on %s, to %s, %s frame %lu%s%s", argv[1], argv[2],
	    argv[3], target_n, argc == 6 ? " of connections: " : "",
	    argc == 6 ? argv[5] : "");
	for (;;) {
		struct conn *c;
		pthread_t t;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			say("accept: %s", strerror(errno));
			return 1;
		}
		if (!(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->id = ++id;
		c->cfd = fd;
		c->sfd = -1;
		if (pthread_create(&t, NULL, conn_main, c)) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
usage:
	fprintf(stderr, "usage: tamper_proxy LISTEN_ADDR:PORT TARGET_ADDR:PORT "
		"flip|replay|pass N [rpc|data]\n");
	return 2;
}
