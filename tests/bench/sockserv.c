/*
 * The far end of the transport benchmark: a Unix-socket server that
 * either discards what it reads and records how many bytes came (so the
 * benchmark can check that every byte arrived), or echoes it back.
 * Connections are served one after the other, with blocking I/O in
 * 256 KiB reads: simple, and never the bottleneck.
 *   sockserv sink PATH COUNTFILE   appends "BYTES\n" per connection
 *   sockserv echo PATH
 * socat is not used here: `socat EXEC:cat` with large blocks can deadlock
 * (socat blocks writing to cat while cat blocks writing back), and its
 * default 8 KiB blocks would cap the figures.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHUNK (256u << 10)

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void serve(int c, int echo, const char *countfile, char *buf)
{
	unsigned long long total = 0;
	ssize_t n;

	while ((n = read(c, buf, CHUNK)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		total += (unsigned long long)n;
		if (echo && write_all(c, buf, (size_t)n) < 0)
			break;
	}
	if (echo) {
		/* Half-close: the client sees the end of the echoed stream. */
		shutdown(c, SHUT_WR);
	} else {
		FILE *f = fopen(countfile, "a");
		if (f) {
			fprintf(f, "%llu\n", total);
			fclose(f);
		}
	}
	close(c);
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int echo, s;
	char *buf;

	if (argc < 3 || (strcmp(argv[1], "echo") && strcmp(argv[1], "sink")) ||
	    (!strcmp(argv[1], "sink") && argc < 4) ||
	    strlen(argv[2]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: sockserv sink PATH COUNTFILE | echo PATH\n");
		return 2;
	}
	echo = !strcmp(argv[1], "echo");
	signal(SIGPIPE, SIG_IGN);
	buf = malloc(CHUNK);
	strcpy(sa.sun_path, argv[2]);
	unlink(sa.sun_path);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (!buf || s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(s, 64) < 0) {
		fprintf(stderr, "sockserv: cannot listen on %s: %s\n", argv[2],
			strerror(errno));
		return 1;
	}
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			fprintf(stderr, "sockserv: accept on %s: %s\n", argv[2],
				strerror(errno));
			return 1;
		}
		serve(c, echo, echo ? NULL : argv[3], buf);
	}
}
