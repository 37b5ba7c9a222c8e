/*
 * The viewer of the desktop benchmark: an RFB client (RFC 6143) that
 * decodes nothing but finds every message's end, to count how many
 * full-screen updates a server delivers per second and how many bytes
 * each takes.
 *
 * It runs the picture itself (tests/integration/x11_pattern.c, on the
 * X display in $DISPLAY) with pipes on its stdin and stdout, connects
 * (version 3.3, 3.7 or 3.8, security None, shared), asks for 32-bit
 * little-endian true colour of depth 24 and the encodings it is told,
 * takes the first full screen, then, frame after frame, in lock step:
 * writes "flip" to the picture (every pixel of the screen changes) and
 * reads updates, asking for the next one as soon as one ends, as real
 * viewers do, until the picture has said "flipped" (the whole frame is
 * on the X screen) and the rectangles received since the flip cover the
 * whole screen. A frame therefore costs the picture's drawing, the
 * server's capture, encoding and sending; no frame is counted before
 * every pixel of it came. A server that captures while the picture is
 * being drawn sends the torn part again: those bytes count too, in the
 * frame they arrive in. The first frames warm up (the servers' idle
 * naps, the daemon's first capture) and are not counted.
 *
 * Rectangles it can frame: Raw, CopyRect, ZRLE (RFC 6143 7.7.6), Tight
 * with every compression type and filter of the TightVNC spec (fill,
 * JPEG, basic with copy, palette and gradient filters), DesktopSize,
 * LastRect and the cursor pseudo-encodings (only what it advertises
 * should come). Lengths from the wire are checked against bounds; what
 * cannot be framed ends the run with status 1 and says what it was.
 *
 *   rfb_fps -p PATTERN -e raw|zrle|tight [-q 0..9] [-c 0..9] [-n FRAMES]
 *           [-w WARMUP] [-t SECONDS] [-s PID,...] HOST:PORT
 *   rfb_fps -p PATTERN -A [-n FRAMES] [-w WARMUP]     the picture alone
 * prints one line: frames= seconds= bytes= updates= rects= screens=
 * server_cpu= client_cpu= pattern_cpu= p50_ms= max_ms= width= height=:
 * over the counted frames only, screens is the rectangles' area in
 * screens (above frames when parts came twice: captured while the
 * picture was being drawn, then again), CPU in seconds, of the
 * processes given with -s, of this one, of the picture.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RBUF (1u << 20)
#define MAX_DIM 16384
#define MAX_LEN (64u << 20) /* no single rectangle's data is larger */
#define MAX_PIDS 16

enum {
	ENC_RAW = 0,
	ENC_COPYRECT = 1,
	ENC_TIGHT = 7,
	ENC_ZRLE = 16,
	ENC_RICH_CURSOR = -239,
	ENC_X_CURSOR = -240,
	ENC_POINTER_POS = -232,
	ENC_LAST_RECT = -224,
	ENC_DESKTOP_SIZE = -223,
	ENC_QUALITY_0 = -32,
	ENC_COMPRESS_0 = -256,
};

/* The connection: buffered reads under a deadline. */
static int sock = -1;
static uint8_t rbuf[RBUF];
static size_t roff, rlen;
static uint64_t consumed; /* bytes of whole messages taken so far */
static double deadline;
static int frame_no = -1; /* for messages: -1 before the first frame */

/* The screen as the viewer knows it, and what the current frame covered. */
static int fb_w, fb_h, tpixel = 3;
static uint8_t *cov;
static uint64_t covered, updates, rects, area; /* area: pixels in rectangles */

/* The picture. */
static pid_t pat_pid;
static int pat_in = -1, pat_out = -1;
static char pat_line[256];
static size_t pat_len;
static unsigned flips, flipped; /* "flip" written, "flipped" read */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "rfb_fps: ");
	if (frame_no >= 0)
		fprintf(stderr, "frame %d: ", frame_no);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (pat_pid > 0)
		kill(pat_pid, SIGTERM);
	exit(1);
}

static void die_timeout(void)
{
	if (!fb_w)
		die("timed out in the handshake");
	die("timed out: %llu of %llu pixels updated, the picture %s",
	    (unsigned long long)covered, (unsigned long long)fb_w * fb_h,
	    flipped == flips ? "has drawn its frame" : "has not drawn its frame yet");
}

static int wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	double left = deadline - now();
	int r;

	if (left <= 0)
		return 0;
	while ((r = poll(&p, 1, (int)(left * 1000) + 1)) < 0 && errno == EINTR)
		;
	if (r < 0)
		die("poll: %s", strerror(errno));
	return r;
}

/* At least n (<= RBUF) bytes in the buffer. */
static void need(size_t n)
{
	if (rlen - roff >= n)
		return;
	memmove(rbuf, rbuf + roff, rlen - roff);
	rlen -= roff;
	roff = 0;
	while (rlen < n) {
		ssize_t k;
		if (!wait_readable(sock))
			die_timeout();
		k = read(sock, rbuf + rlen, RBUF - rlen);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			die("reading from the server: %s", strerror(errno));
		if (k == 0)
			die("the server closed the connection");
		rlen += k;
	}
}

static const uint8_t *take(size_t n)
{
	const uint8_t *p;

	need(n);
	p = rbuf + roff;
	roff += n;
	consumed += n;
	return p;
}

/* Skips n bytes of data, whatever their size. */
static void skip(uint64_t n)
{
	while (n) {
		size_t k;
		if (roff == rlen)
			need(1);
		k = rlen - roff < n ? rlen - roff : n;
		roff += k;
		consumed += k;
		n -= k;
	}
}

static unsigned u8(void)
{
	return *take(1);
}

static unsigned u16(void)
{
	const uint8_t *p = take(2);
	return p[0] << 8 | p[1];
}

static uint32_t u32(void)
{
	const uint8_t *p = take(4);
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void write_all(int fd, const void *buf, size_t n, const char *to)
{
	const uint8_t *p = buf;

	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			die("writing to %s: %s", to, strerror(errno));
		p += k;
		n -= k;
	}
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void request_update(int incremental)
{
	uint8_t m[10] = { 3, (uint8_t)incremental };

	put16(m + 6, fb_w);
	put16(m + 8, fb_h);
	write_all(sock, m, sizeof(m), "the server");
}

/* --- the screen ---------------------------------------------------- */

static void screen_size(int w, int h)
{
	if (w <= 0 || h <= 0 || w > MAX_DIM || h > MAX_DIM)
		die("the server's screen is %dx%d", w, h);
	free(cov);
	if (!(cov = calloc((size_t)w * h, 1)))
		die("out of memory");
	fb_w = w;
	fb_h = h;
	covered = 0;
}

static void cover_reset(void)
{
	memset(cov, 0, (size_t)fb_w * fb_h);
	covered = 0;
}

static void cover(int x, int y, int w, int h)
{
	for (int j = y; j < y + h; j++) {
		uint8_t *row = cov + (size_t)j * fb_w;
		for (int i = x; i < x + w; i++)
			if (!row[i]) {
				row[i] = 1;
				covered++;
			}
	}
}

static int screen_covered(void)
{
	return covered == (uint64_t)fb_w * fb_h;
}

/* --- framing ------------------------------------------------------- */

static uint32_t bounded(uint64_t n, const char *what)
{
	if (n > MAX_LEN)
		die("%s of %llu bytes (at most %u expected)", what, (unsigned long long)n, MAX_LEN);
	return (uint32_t)n;
}

/* Tight's compact length: 7, 7 and 8 bits, low first. */
static uint32_t compact_len(void)
{
	unsigned b = u8();
	uint32_t n = b & 0x7f;

	if (b & 0x80) {
		b = u8();
		n |= (uint32_t)(b & 0x7f) << 7;
		if (b & 0x80)
			n |= (uint32_t)u8() << 14;
	}
	return n;
}

static void tight_rect(int w, int h)
{
	unsigned ctl = u8(), type = ctl >> 4, filter = 0, colours;
	uint64_t raw;

	if (type == 8) { /* fill */
		skip(tpixel);
		return;
	}
	if (type == 9) { /* JPEG */
		skip(bounded(compact_len(), "a Tight JPEG"));
		return;
	}
	if (type > 9)
		die("a Tight rectangle with compression control 0x%02x", ctl);
	/* basic: bits 4-5 the zlib stream, bit 6 an explicit filter */
	if (ctl & 0x40)
		filter = u8();
	switch (filter) {
	case 0: /* copy */
	case 2: /* gradient: the differences, one TPIXEL each */
		raw = (uint64_t)w * h * tpixel;
		break;
	case 1: /* palette */
		colours = u8() + 1;
		skip((uint64_t)colours * tpixel);
		raw = colours <= 2 ? (uint64_t)(w + 7) / 8 * h : (uint64_t)w * h;
		break;
	default:
		die("a Tight rectangle with filter %u", filter);
	}
	if (raw < 12) /* too short to be worth compressing: as is */
		skip(raw);
	else
		skip(bounded(compact_len(), "Tight data"));
}

/* One FramebufferUpdate, after its type byte. */
static void framebuffer_update(void)
{
	unsigned n;

	u8(); /* padding */
	n = u16();
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *p = take(12);
		int x = p[0] << 8 | p[1], y = p[2] << 8 | p[3];
		int w = p[4] << 8 | p[5], h = p[6] << 8 | p[7];
		int32_t enc = (int32_t)((uint32_t)p[8] << 24 | p[9] << 16 | p[10] << 8 | p[11]);
		int pixels = 1;

		rects++;
		switch (enc) {
		case ENC_RAW:
			skip((uint64_t)w * h * 4);
			break;
		case ENC_COPYRECT:
			skip(4);
			break;
		case ENC_ZRLE:
			skip(bounded(u32(), "a ZRLE rectangle"));
			break;
		case ENC_TIGHT:
			tight_rect(w, h);
			break;
		case ENC_DESKTOP_SIZE:
			screen_size(w, h);
			pixels = 0;
			break;
		case ENC_LAST_RECT:
			n = 0;
			pixels = 0;
			break;
		case ENC_POINTER_POS:
			pixels = 0;
			break;
		case ENC_RICH_CURSOR:
			skip((uint64_t)w * h * 4 + (uint64_t)(w + 7) / 8 * h);
			pixels = 0;
			break;
		case ENC_X_CURSOR:
			if (w && h)
				skip(6 + 2 * (uint64_t)(w + 7) / 8 * h);
			pixels = 0;
			break;
		default:
			die("a rectangle in encoding %d, which was not asked for", enc);
		}
		if (!pixels)
			continue;
		if (x + w > fb_w || y + h > fb_h)
			die("a rectangle %dx%d+%d+%d outside the %dx%d screen", w, h, x, y, fb_w,
			    fb_h);
		cover(x, y, w, h);
		area += (uint64_t)w * h;
	}
	updates++;
}

/* One server message; 1 if it was a FramebufferUpdate. */
static int server_message(void)
{
	unsigned type = u8(), n;

	switch (type) {
	case 0:
		framebuffer_update();
		return 1;
	case 1: /* SetColourMapEntries */
		u8();
		u16();
		n = u16();
		skip((uint64_t)n * 6);
		return 0;
	case 2: /* Bell */
		return 0;
	case 3: /* ServerCutText */
		take(3);
		skip(bounded(u32(), "cut text"));
		return 0;
	default:
		die("a server message of type %u", type);
	}
	return 0;
}

/* --- the handshake ------------------------------------------------- */

static void security_failed(void)
{
	uint32_t n = bounded(u32(), "a reason");
	const uint8_t *p = take(n < 200 ? n : 200);

	die("the server refuses: %.*s", (int)(n < 200 ? n : 200), (const char *)p);
}

static void handshake(const int32_t encodings[], int nenc, int quality, int compress)
{
	const uint8_t *p;
	uint8_t m[4 + 20 + 8 * 4], *e;
	char version[13] = "";
	int major, minor, ok = 0, count = 0;

	memcpy(version, take(12), 12);
	if (sscanf(version, "RFB %3d.%3d\n", &major, &minor) != 2 || major != 3)
		die("not an RFB server (it says '%s')", version);
	minor = minor >= 8 ? 8 : minor >= 7 ? 7 : 3;
	snprintf((char *)m, sizeof(m), "RFB 003.00%d\n", minor);
	write_all(sock, m, 12, "the server");
	if (minor == 3) {
		uint32_t t = u32();
		if (t == 0)
			security_failed();
		if (t != 1)
			die("the server wants security type %u, not None", t);
	} else {
		unsigned n = u8();
		if (n == 0)
			security_failed();
		p = take(n);
		for (unsigned i = 0; i < n; i++)
			ok |= p[i] == 1;
		if (!ok)
			die("the server does not offer security type None");
		m[0] = 1;
		write_all(sock, m, 1, "the server");
		if (minor == 8 && u32() != 0)
			security_failed();
	}
	m[0] = 1; /* ClientInit: shared */
	write_all(sock, m, 1, "the server");
	p = take(4);
	screen_size(p[0] << 8 | p[1], p[2] << 8 | p[3]);
	take(16); /* its pixel format: ours replaces it */
	skip(bounded(u32(), "the desktop's name"));

	/* SetPixelFormat: 32 bits, depth 24, little-endian, true colour,
	 * 8 bits a channel (so that Tight's TPIXEL is 3 bytes). */
	memset(m, 0, 20);
	memcpy(m + 4, "\x20\x18\x00\x01\x00\xff\x00\xff\x00\xff\x10\x08\x00", 13);
	write_all(sock, m, 20, "the server");
	tpixel = 3;

	e = m + 4;
	for (int i = 0; i < nenc; i++, count++, e += 4)
		put32(e, (uint32_t)encodings[i]);
	if (quality >= 0) {
		put32(e, (uint32_t)(ENC_QUALITY_0 + quality));
		e += 4;
		count++;
	}
	if (compress >= 0) {
		put32(e, (uint32_t)(ENC_COMPRESS_0 + compress));
		e += 4;
		count++;
	}
	m[0] = 2;
	m[1] = 0;
	put16(m + 2, count);
	write_all(sock, m, e - m, "the server");
}

/* --- the picture --------------------------------------------------- */

static void pattern_start(const char *path)
{
	int in[2], out[2];

	if (pipe(in) < 0 || pipe(out) < 0)
		die("pipe: %s", strerror(errno));
	if ((pat_pid = fork()) < 0)
		die("fork: %s", strerror(errno));
	if (pat_pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execl(path, path, (char *)NULL);
		fprintf(stderr, "rfb_fps: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	pat_in = in[1];
	pat_out = out[0];
}

/* Reads what the picture said; returns 1 once it said "ready". */
static int pattern_read(void)
{
	ssize_t k;
	int ready = 0;
	char *nl;

	k = read(pat_out, pat_line + pat_len, sizeof(pat_line) - 1 - pat_len);
	if (k < 0 && errno == EINTR)
		return 0;
	if (k <= 0)
		die("the picture (x11_pattern) ended; is DISPLAY right?");
	pat_len += k;
	pat_line[pat_len] = 0;
	while ((nl = strchr(pat_line, '\n'))) {
		*nl = 0;
		if (!strcmp(pat_line, "flipped"))
			flipped++;
		else if (!strcmp(pat_line, "ready"))
			ready = 1;
		pat_len -= nl + 1 - pat_line;
		memmove(pat_line, nl + 1, pat_len + 1);
	}
	if (pat_len == sizeof(pat_line) - 1)
		pat_len = 0; /* a line too long to matter */
	return ready;
}

static void flip(void)
{
	write_all(pat_in, "flip\n", 5, "the picture");
	flips++;
}

/* --- measuring ----------------------------------------------------- */

/* User and system time, with reaped children, of a process: seconds. */
static double proc_cpu(pid_t pid)
{
	char path[64], buf[1024], *s;
	unsigned long long v[4];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* after the name (which may hold anything): state is field 3,
	 * utime, stime, cutime and cstime are 14 to 17 */
	if (!(s = strrchr(buf, ')')) ||
	    sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &v[0],
		   &v[1], &v[2], &v[3]) != 4)
		return 0;
	return (double)(v[0] + v[1] + v[2] + v[3]) / sysconf(_SC_CLK_TCK);
}

static pid_t srv_pids[MAX_PIDS];
static int nsrv;

static double servers_cpu(void)
{
	double t = 0;

	for (int i = 0; i < nsrv; i++)
		t += proc_cpu(srv_pids[i]);
	return t;
}

static double self_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Waits for the picture or the server (their messages handled). */
static void wait_any(int with_server)
{
	struct pollfd p[2] = { { .fd = pat_out, .events = POLLIN },
			       { .fd = sock, .events = POLLIN } };
	double left = deadline - now();
	int r;

	if (with_server && roff < rlen) { /* already buffered */
		if (server_message())
			request_update(1);
		return;
	}
	if (left <= 0)
		die_timeout();
	r = poll(p, with_server ? 2 : 1, (int)(left * 1000) + 1);
	if (r < 0 && errno != EINTR)
		die("poll: %s", strerror(errno));
	if (r <= 0)
		return;
	if (p[0].revents)
		pattern_read();
	if (with_server && p[1].revents && server_message())
		request_update(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: rfb_fps -p PATTERN -e raw|zrle|tight [-q 0..9] [-c 0..9] "
			"[-n FRAMES] [-w WARMUP] [-t SECONDS] [-s PID,...] HOST:PORT\n"
			"       rfb_fps -p PATTERN -A [-n FRAMES] [-w WARMUP]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *pattern = NULL, *enc = NULL;
	int32_t list[4];
	int frames = 60, warmup = 3, timeout_s = 20, quality = -1, compress = -1, alone = 0;
	int nenc = 0, c;
	double *took, t0 = 0, t_frame, cpu_srv0 = 0, cpu_self0 = 0, cpu_pat0 = 0, elapsed;
	uint64_t bytes0 = 0, updates0 = 0, rects0 = 0, area0 = 0;
	char *s;

	while ((c = getopt(argc, argv, "p:e:q:c:n:w:t:s:A")) != -1) {
		switch (c) {
		case 'p': pattern = optarg; break;
		case 'e': enc = optarg; break;
		case 'q': quality = atoi(optarg); break;
		case 'c': compress = atoi(optarg); break;
		case 'n': frames = atoi(optarg); break;
		case 'w': warmup = atoi(optarg); break;
		case 't': timeout_s = atoi(optarg); break;
		case 'A': alone = 1; break;
		case 's':
			for (s = strtok(optarg, ","); s && nsrv < MAX_PIDS; s = strtok(NULL, ","))
				srv_pids[nsrv++] = atoi(s);
			break;
		default: usage();
		}
	}
	if (!pattern || frames < 1 || warmup < 0 || timeout_s < 1 || quality > 9 ||
	    compress > 9 || (alone ? optind != argc : optind != argc - 1 || !enc))
		usage();
	if (!alone) {
		/* CopyRect and DesktopSize as every viewer asks for them. */
		if (!strcmp(enc, "raw"))
			list[nenc++] = ENC_RAW;
		else if (!strcmp(enc, "zrle"))
			list[nenc++] = ENC_ZRLE;
		else if (!strcmp(enc, "tight"))
			list[nenc++] = ENC_TIGHT;
		else
			usage();
		list[nenc++] = ENC_COPYRECT;
		list[nenc++] = ENC_DESKTOP_SIZE;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!(took = calloc(frames, sizeof(*took))))
		die("out of memory");

	pattern_start(pattern);
	deadline = now() + timeout_s;
	while (!pattern_read())
		if (!wait_readable(pat_out))
			die("the picture (x11_pattern) did not start within %d s", timeout_s);

	if (!alone) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		char host[64];
		int port, one = 1;
		if (sscanf(argv[optind], "%63[^:]:%d", host, &port) != 2 ||
		    inet_pton(AF_INET, host, &sa.sin_addr) != 1 || port <= 0 || port > 65535)
			die("'%s' is not IPV4:PORT", argv[optind]);
		sa.sin_port = htons(port);
		if ((sock = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
		    connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			die("cannot connect to %s: %s", argv[optind], strerror(errno));
		setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		handshake(list, nenc, quality, compress);
		/* The first full screen: not a frame. */
		request_update(0);
		while (!screen_covered())
			if (server_message())
				request_update(1);
	}

	for (frame_no = 0; frame_no < warmup + frames; frame_no++) {
		if (frame_no == warmup) {
			t0 = now();
			bytes0 = consumed;
			updates0 = updates;
			rects0 = rects;
			area0 = area;
			cpu_srv0 = servers_cpu();
			cpu_self0 = self_cpu();
			cpu_pat0 = proc_cpu(pat_pid);
		}
		t_frame = now();
		deadline = t_frame + timeout_s;
		if (!alone)
			cover_reset();
		flip();
		while (flipped < flips || (!alone && !screen_covered()))
			wait_any(!alone);
		if (frame_no >= warmup)
			took[frame_no - warmup] = now() - t_frame;
	}
	elapsed = now() - t0;
	printf("frames=%d seconds=%.3f bytes=%llu updates=%llu rects=%llu screens=%.3f", frames,
	       elapsed, (unsigned long long)(consumed - bytes0),
	       (unsigned long long)(updates - updates0), (unsigned long long)(rects - rects0),
	       fb_w ? (double)(area - area0) / ((double)fb_w * fb_h) : 0);
	printf(" server_cpu=%.2f client_cpu=%.2f pattern_cpu=%.2f", servers_cpu() - cpu_srv0,
	       self_cpu() - cpu_self0, proc_cpu(pat_pid) - cpu_pat0);
	qsort(took, frames, sizeof(*took), cmp_double);
	printf(" p50_ms=%.1f max_ms=%.1f width=%d height=%d\n", took[frames / 2] * 1000,
	       took[frames - 1] * 1000, fb_w, fb_h);
	fflush(stdout);

	close(pat_in);
	waitpid(pat_pid, NULL, 0);
	if (sock >= 0)
		close(sock);
	free(took);
	free(cov);
	return 0;
}
