/*
 * audio/opus.c: the stream parser (whole and byte by byte, and every
 * malformed stream refused), the jitter buffer (order, a missing frame
 * concealed, a late one dropped, a burst trimmed back to the target, a
 * jump ahead, a quiet stream that stops and refills), and a real round
 * trip: a 1 kHz sine through audio_send and audio_receive over a socket
 * pair, once whole and once with a frame cut out of the stream, checked
 * for frequency and SNR (and that the gap was concealed, not silent).
 */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "audio/opus.h"
#include "lib/buf.h"
#include "tests/unit/unit.h"

struct got {
	int n;
	uint32_t seq[64];
	size_t len[64];
	uint8_t first[64];
};

static void on_packet(void *arg, uint32_t seq, const uint8_t *pkt, size_t len)
{
	struct got *g = arg;
	if (g->n < 64) {
		g->seq[g->n] = seq;
		g->len[g->n] = len;
		g->first[g->n++] = pkt[0];
	}
}

static void header(struct buf *b)
{
	static const uint8_t h[AUDIO_HEADER_LEN] = { 'M', 'C', 'O', 'P', 'U', 'S', 1, 2,
						     0x80, 0xbb, 0, 0, 0xe0, 0x01 };
	buf_put(b, h, sizeof(h));
}

static void packet(struct buf *b, uint32_t seq, size_t len, uint8_t fill)
{
	buf_put_u16(b, (uint16_t)len);
	buf_put_u32(b, seq);
	for (size_t i = 0; i < len; i++)
		buf_put_u8(b, fill);
}

TEST(parse_whole_and_split)
{
	struct audio_parser p;
	struct got g = { 0 }, h = { 0 };
	struct buf b;

	buf_init(&b);
	header(&b);
	packet(&b, 7, 3, 0xaa);
	packet(&b, 8, AUDIO_MAX_PACKET, 0xbb);
	packet(&b, 9, 1, 0xcc);
	audio_parser_init(&p);
	CHECK(audio_parse(&p, buf_head(&b), buf_avail(&b), on_packet, &g) == 0);
	CHECK(g.n == 3 && g.seq[0] == 7 && g.len[0] == 3 && g.first[0] == 0xaa);
	CHECK(g.seq[1] == 8 && g.len[1] == AUDIO_MAX_PACKET && g.first[1] == 0xbb);
	CHECK(g.seq[2] == 9 && g.len[2] == 1);
	audio_parser_init(&p);
	for (size_t i = 0; i < buf_avail(&b); i++)
		CHECK(audio_parse(&p, buf_head(&b) + i, 1, on_packet, &h) == 0);
	CHECK(h.n == 3 && !memcmp(h.seq, g.seq, sizeof(g.seq)) && !memcmp(h.len, g.len, sizeof(g.len)));
	buf_free(&b);
}

TEST(parse_refuses)
{
	struct audio_parser p;
	struct got g = { 0 };
	struct buf b;

	/* Another rate in the header. */
	buf_init(&b);
	header(&b);
	b.data[8] = 0x44;
	audio_parser_init(&p);
	CHECK(audio_parse(&p, buf_head(&b), buf_avail(&b), on_packet, &g) == -EPROTO);
	/* Not our stream at all. */
	audio_parser_init(&p);
	CHECK(audio_parse(&p, (const uint8_t *)"RFB 003.008\n\0\0", 14, on_packet, &g) == -EPROTO);
	/* An empty packet, and one beyond Opus's largest. */
	buf_reset(&b);
	header(&b);
	packet(&b, 1, 0, 0);
	audio_parser_init(&p);
	CHECK(audio_parse(&p, buf_head(&b), buf_avail(&b), on_packet, &g) == -EPROTO);
	buf_reset(&b);
	header(&b);
	buf_put_u16(&b, AUDIO_MAX_PACKET + 1);
	buf_put_u32(&b, 1);
	audio_parser_init(&p);
	CHECK(audio_parse(&p, buf_head(&b), buf_avail(&b), on_packet, &g) == -EPROTO);
	CHECK(g.n == 0);
	buf_free(&b);
}

static void put(struct audio_jitter *j, uint32_t seq)
{
	uint8_t pkt[4] = { (uint8_t)seq, 1, 2, 3 };
	audio_jitter_put(j, seq, pkt, sizeof(pkt));
}

/* Takes one: 1 with the packet's seq in *seq, 0 concealed, -1 nothing. */
static int take(struct audio_jitter *j, uint32_t *seq)
{
	const uint8_t *pkt;
	size_t len;
	int r = audio_jitter_take(j, &pkt, &len);

	if (r == 1)
		*seq = pkt[0];
	audio_jitter_done(j);
	return r;
}

TEST(jitter_order_conceal_late)
{
	static struct audio_jitter j;
	uint32_t s = 0;

	audio_jitter_init(&j, 3);
	CHECK(take(&j, &s) == -1); /* nothing yet */
	put(&j, 10);
	put(&j, 11);
	CHECK(take(&j, &s) == -1); /* filling up to the target */
	put(&j, 13);               /* 12 is missing */
	CHECK(take(&j, &s) == 1 && s == 10);
	CHECK(take(&j, &s) == 1 && s == 11);
	CHECK(take(&j, &s) == 0); /* 12's time: concealed */
	put(&j, 12);              /* too late now */
	CHECK(j.late == 1);
	CHECK(take(&j, &s) == 1 && s == 13);
	CHECK(j.played == 3 && j.concealed == 1 && j.held == 0);
	/* Out of order within the buffer is fine. */
	put(&j, 15);
	put(&j, 14);
	CHECK(take(&j, &s) == 1 && s == 14);
	CHECK(take(&j, &s) == 1 && s == 15);
}

TEST(jitter_burst_trimmed)
{
	static struct audio_jitter j;
	uint32_t s = 0;

	audio_jitter_init(&j, 4);
	for (uint32_t i = 0; i < 40; i++) /* a stall, then all at once */
		put(&j, i);
	CHECK(j.held == 40);
	CHECK(take(&j, &s) == 1);
	/* Back to the target and a little: the oldest went. */
	CHECK(j.held <= 4 + 6 && j.dropped >= 40 - 11);
	CHECK(s == 40 - (uint32_t)j.held - 1);
}

TEST(jitter_jump_and_quiet)
{
	static struct audio_jitter j;
	uint32_t s = 0;
	int i;

	audio_jitter_init(&j, 2);
	put(&j, 0);
	put(&j, 1);
	CHECK(take(&j, &s) == 1 && s == 0);
	put(&j, 1000); /* far ahead: start again from there */
	put(&j, 1001);
	CHECK(take(&j, &s) == 1 && (s == (1000 & 0xff)));
	CHECK(take(&j, &s) == 1 && (s == (1001 & 0xff)));
	/* Nothing comes: concealed for a while, then silence (stopped). */
	for (i = 0; i < 100 && take(&j, &s) == 0; i++)
		;
	CHECK(i > 5 && i < 100);
	CHECK(take(&j, &s) == -1);
	put(&j, 1002 + (uint32_t)i);
	CHECK(take(&j, &s) == -1); /* refilling */
	put(&j, 1003 + (uint32_t)i);
	CHECK(take(&j, &s) == 1);
}

/* --- a round trip through Opus ------------------------------------- */

#define SECONDS 1
#define SAMPLES (AUDIO_RATE * SECONDS)

struct sender {
	int pcm, out;
	struct audio_stats st;
	int r;
};

static void *send_thread(void *arg)
{
	struct sender *s = arg;
	s->r = audio_send(s->pcm, s->out, NULL, &s->st);
	close(s->out);
	return NULL;
}

struct feeder {
	int fd;
	const int16_t *pcm;
};

/* PCM at the pace a recorder gives it: a frame every 10 ms. */
static void *feed_thread(void *arg)
{
	struct feeder *f = arg;
	const uint8_t *p = (const uint8_t *)f->pcm;

	for (int i = 0; i < SAMPLES / AUDIO_FRAME_SAMPLES; i++) {
		if (write(f->fd, p, AUDIO_FRAME_BYTES) != AUDIO_FRAME_BYTES)
			break;
		p += AUDIO_FRAME_BYTES;
		usleep(10000);
	}
	close(f->fd);
	return NULL;
}

/* Drops the stream's packet with sequence drop (or none: -1) on its way. */
static void *cut_thread(void *arg)
{
	int *fds = arg, in = fds[0], out = fds[1], drop = fds[2];
	uint8_t b[8192];
	struct buf acc;
	size_t hdr = AUDIO_HEADER_LEN;
	ssize_t k;

	buf_init(&acc);
	while ((k = read(in, b, sizeof(b))) > 0) {
		buf_put(&acc, b, (size_t)k);
		if (hdr) {
			if (buf_avail(&acc) < hdr)
				continue;
			if (write(out, buf_head(&acc), hdr) < 0)
				break;
			buf_consume(&acc, hdr);
			hdr = 0;
		}
		while (buf_avail(&acc) >= 6) {
			const uint8_t *p = buf_head(&acc);
			size_t len = (size_t)(p[0] | p[1] << 8);
			uint32_t seq = get_le32(p + 2);
			if (buf_avail(&acc) < 6 + len)
				break;
			if ((int)seq != drop && write(out, p, 6 + len) < 0)
				break;
			buf_consume(&acc, 6 + len);
		}
	}
	buf_free(&acc);
	close(out);
	close(in);
	return NULL;
}

struct result {
	double freq, snr;
	size_t n;
	struct audio_stats rx;
};

/* A sine through send, the cut, receive; the left channel analysed. */
static int round_trip(int drop, struct result *res)
{
	static int16_t in[SAMPLES * 2], out[SAMPLES * 2 + 48000];
	int pcm[2], s1[2], s2[2], played[2], cut[3];
	pthread_t tf, ts, tc;
	struct feeder f;
	struct sender snd = { 0 };
	size_t got = 0;
	ssize_t k;
	double a = 0, b = 0, pn = 0, w;
	int first = -1, last = -1, crossings = 0, r;

	for (int i = 0; i < SAMPLES; i++)
		in[2 * i] = in[2 * i + 1] = (int16_t)(12000 * sin(2 * M_PI * 1000 * i / AUDIO_RATE));
	if (pipe(pcm) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, s1) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, s2) < 0 || pipe(played) < 0)
		return -1;
	f.fd = pcm[1];
	f.pcm = in;
	snd.pcm = pcm[0];
	snd.out = s1[0];
	cut[0] = s1[1];
	cut[1] = s2[0];
	cut[2] = drop;
	pthread_create(&tf, NULL, feed_thread, &f);
	pthread_create(&ts, NULL, send_thread, &snd);
	pthread_create(&tc, NULL, cut_thread, cut);
	/* The receiver writes to a pipe we empty only afterwards: make it
	 * big enough for all of it. */
	fcntl(played[1], F_SETPIPE_SZ, 1 << 20);
	/* A deep buffer: a loaded machine's scheduling must not look like loss. */
	r = audio_receive(s2[1], played[1], 100, NULL, &res->rx);
	close(played[1]);
	close(s2[1]);
	pthread_join(tf, NULL);
	pthread_join(ts, NULL);
	pthread_join(tc, NULL);
	close(pcm[0]);
	while ((k = read(played[0], (uint8_t *)out + got, sizeof(out) - got)) > 0)
		got += (size_t)k;
	close(played[0]);
	if (r < 0 || snd.r < 0)
		return -1;
	res->n = got / 4;
	/* Where the sine is: first and last loud samples. */
	for (size_t i = 0; i < res->n; i++)
		if (abs(out[2 * i]) > 3000) {
			if (first < 0)
				first = (int)i;
			last = (int)i;
		}
	if (first < 0 || last - first < 24000)
		return -1;
	first += 4800; /* leave out the codec's start */
	last -= 4800;
	for (int i = first; i < last; i++)
		if (out[2 * i] <= 0 && out[2 * i + 2] > 0)
			crossings++;
	res->freq = crossings / ((last - first) / (double)AUDIO_RATE);
	w = 2 * M_PI * 1000 / AUDIO_RATE;
	for (int i = first; i < last; i++) {
		a += out[2 * i] * cos(w * i);
		b += out[2 * i] * sin(w * i);
	}
	a *= 2.0 / (last - first);
	b *= 2.0 / (last - first);
	for (int i = first; i < last; i++) {
		double e = out[2 * i] - a * cos(w * i) - b * sin(w * i);
		pn += e * e;
	}
	pn /= last - first;
	res->snr = 10 * log10((a * a + b * b) / 2 / pn);
	return 0;
}

TEST(round_trip_sine)
{
	struct result r = { 0 };

	CHECK(round_trip(-1, &r) == 0);
	fprintf(stderr, "  whole: %zu samples, %.1f Hz, SNR %.1f dB, %llu played, %llu concealed\n",
		r.n, r.freq, r.snr, (unsigned long long)r.rx.frames,
		(unsigned long long)r.rx.concealed);
	CHECK(fabs(r.freq - 1000) < 2);
	CHECK(r.snr > 30);
	/* Every frame played (one late under load would be concealed
	 * instead: not counted against it). */
	CHECK(r.rx.frames + r.rx.concealed >= SAMPLES / AUDIO_FRAME_SAMPLES - 1);
}

TEST(round_trip_lost_frame_concealed)
{
	struct result r = { 0 };

	CHECK(round_trip(40, &r) == 0);
	fprintf(stderr, "  one frame lost: %.1f Hz, SNR %.1f dB, %llu concealed\n", r.freq, r.snr,
		(unsigned long long)r.rx.concealed);
	CHECK(r.rx.concealed >= 1);
	/* Concealment keeps the tone going: no silent gap, the SNR barely
	 * moves (one 10 ms frame in ~0.8 s of analysis). */
	CHECK(fabs(r.freq - 1000) < 2);
	CHECK(r.snr > 15);
}
