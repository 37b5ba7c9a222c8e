/*
 * Opus frames over a stream, and the jitter buffer that plays them (see
 * opus.h for the format).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <opus/opus.h>

#include "audio/opus.h"
#include "lib/buf.h"

static const uint8_t magic[6] = "MCOPUS";

/* --- the stream format --------------------------------------------- */

static void put_header(uint8_t *h)
{
	memcpy(h, magic, 6);
	h[6] = 1;
	h[7] = AUDIO_CHANNELS;
	h[8] = AUDIO_RATE & 0xff;
	h[9] = AUDIO_RATE >> 8 & 0xff;
	h[10] = AUDIO_RATE >> 16 & 0xff;
	h[11] = 0;
	h[12] = AUDIO_FRAME_SAMPLES & 0xff;
	h[13] = AUDIO_FRAME_SAMPLES >> 8;
}

void audio_parser_init(struct audio_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->need = AUDIO_HEADER_LEN;
}

int audio_parse(struct audio_parser *p, const uint8_t *data, size_t n, audio_packet_fn fn,
		void *arg)
{
	while (n) {
		size_t k;
		if (!p->have_header) {
			uint8_t want[AUDIO_HEADER_LEN];
			k = n < p->need ? n : p->need;
			memcpy(p->hdr + p->got, data, k);
			p->got += k;
			p->need -= k;
			data += k;
			n -= k;
			if (p->need)
				return 0;
			put_header(want);
			if (memcmp(p->hdr, want, AUDIO_HEADER_LEN))
				return -EPROTO; /* another format, rate or frame size */
			p->have_header = 1;
			p->got = 0;
			p->need = 6;
			continue;
		}
		if (p->got < 6) { /* length and sequence */
			k = n < 6 - p->got ? n : 6 - p->got;
			memcpy(p->hdr + p->got, data, k);
			p->got += k;
			data += k;
			n -= k;
			if (p->got < 6)
				return 0;
			p->len = (uint16_t)(p->hdr[0] | p->hdr[1] << 8);
			p->seq = get_le32(p->hdr + 2);
			if (p->len == 0 || p->len > AUDIO_MAX_PACKET)
				return -EPROTO;
			p->need = p->len;
		}
		k = n < p->need ? n : p->need;
		memcpy(p->pkt + (p->len - p->need), data, k);
		p->need -= k;
		data += k;
		n -= k;
		if (!p->need) {
			fn(arg, p->seq, p->pkt, p->len);
			p->got = 0;
		}
	}
	return 0;
}

/* --- the jitter buffer --------------------------------------------- */

/* Frames of silence to conceal before giving up and waiting to refill. */
#define MAX_CONCEAL 20
/* Frames beyond the target that make the buffer skip ahead. */
#define MAX_EXCESS 6

void audio_jitter_init(struct audio_jitter *j, int target)
{
	memset(j, 0, sizeof(*j));
	j->taken = -1;
	j->target = target < 1 ? 1 : target > AUDIO_JITTER_SLOTS / 2 ? AUDIO_JITTER_SLOTS / 2
								    : target;
}

static int before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

void audio_jitter_put(struct audio_jitter *j, uint32_t seq, const uint8_t *pkt, size_t len)
{
	int i;

	if (!len || len > AUDIO_MAX_PACKET)
		return;
	if (!j->started) {
		j->next = seq;
		j->started = 1;
	}
	if (before(seq, j->next)) { /* its time has passed: concealed already */
		j->late++;
		return;
	}
	if (seq - j->next >= AUDIO_JITTER_SLOTS) {
		/* Far ahead (the sender went on while nothing came): play from
		 * here, after what is held now. */
		for (i = 0; i < AUDIO_JITTER_SLOTS; i++)
			if (j->slot[i].len) {
				j->slot[i].len = 0;
				j->dropped++;
			}
		j->held = 0;
		j->playing = 0;
		j->next = seq;
	}
	i = seq % AUDIO_JITTER_SLOTS;
	if (!j->slot[i].len)
		j->held++;
	j->slot[i].seq = seq;
	j->slot[i].len = (uint16_t)len;
	memcpy(j->slot[i].data, pkt, len);
}

int audio_jitter_take(struct audio_jitter *j, const uint8_t **pkt, size_t *len)
{
	int i;

	if (!j->started)
		return -1;
	if (!j->playing) {
		if (j->held < j->target)
			return -1;
		j->playing = 1;
		j->concealed_run = 0;
	}
	/* Too much held (a burst after a stall): drop the oldest to come
	 * back to the target delay. */
	while (j->held > j->target + MAX_EXCESS) {
		i = j->next % AUDIO_JITTER_SLOTS;
		if (j->slot[i].len && j->slot[i].seq == j->next) {
			j->slot[i].len = 0;
			j->held--;
			j->dropped++;
		}
		j->next++;
	}
	i = j->next % AUDIO_JITTER_SLOTS;
	j->next++;
	if (j->slot[i].len && j->slot[i].seq == j->next - 1) {
		*pkt = j->slot[i].data;
		*len = j->slot[i].len;
		j->taken = i;
		j->played++;
		j->concealed_run = 0;
		return 1;
	}
	if (++j->concealed_run > MAX_CONCEAL) { /* the stream went quiet */
		j->playing = 0;
		j->next--;
		return -1;
	}
	j->concealed++;
	return 0;
}

void audio_jitter_done(struct audio_jitter *j)
{
	if (j->taken >= 0 && j->slot[j->taken].len) {
		j->slot[j->taken].len = 0;
		j->held--;
	}
	j->taken = -1;
}

/* --- sending --------------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EPIPE;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Reads a whole frame: 1, 0 at the end, or -errno. */
static int read_frame(int fd, uint8_t *p, volatile int *stop)
{
	size_t got = 0;

	while (got < AUDIO_FRAME_BYTES) {
		ssize_t k;
		if (stop && *stop)
			return 0;
		k = read(fd, p + got, AUDIO_FRAME_BYTES - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return 0;
		got += (size_t)k;
	}
	return 1;
}

int audio_send(int pcm, int out, volatile int *stop, struct audio_stats *st)
{
	uint8_t frame[AUDIO_FRAME_BYTES], pkt[6 + AUDIO_MAX_PACKET], hdr[AUDIO_HEADER_LEN];
	opus_int16 s[AUDIO_FRAME_SAMPLES * AUDIO_CHANNELS];
	int err, r;
	uint32_t seq = 0;
	OpusEncoder *enc = opus_encoder_create(AUDIO_RATE, AUDIO_CHANNELS,
					       OPUS_APPLICATION_AUDIO, &err);

	if (!enc)
		return -ENOMEM;
	opus_encoder_ctl(enc, OPUS_SET_BITRATE(AUDIO_BITRATE));
	put_header(hdr);
	if ((r = write_all(out, hdr, sizeof(hdr))) < 0)
		goto out;
	while ((r = read_frame(pcm, frame, stop)) > 0) {
		opus_int32 n;
		for (int i = 0; i < AUDIO_FRAME_SAMPLES * AUDIO_CHANNELS; i++)
			s[i] = (opus_int16)(frame[2 * i] | frame[2 * i + 1] << 8);
		n = opus_encode(enc, s, AUDIO_FRAME_SAMPLES, pkt + 6, AUDIO_MAX_PACKET);
		if (n <= 0) {
			r = -EIO;
			break;
		}
		pkt[0] = (uint8_t)n;
		pkt[1] = (uint8_t)(n >> 8);
		put_le32(pkt + 2, seq++);
		if ((r = write_all(out, pkt, 6 + (size_t)n)) < 0)
			break;
		if (st) {
			st->frames++;
			st->bytes += 6 + (uint64_t)n;
		}
	}
out:
	opus_encoder_destroy(enc);
	return r < 0 ? r : 0;
}

/* --- receiving ------------------------------------------------------- */

static void to_jitter(void *arg, uint32_t seq, const uint8_t *pkt, size_t len)
{
	audio_jitter_put(arg, seq, pkt, len);
}

/* Frames decoded but not yet taken by the player, at most: beyond, the
 * player fell behind (its clock is slower) and the oldest is dropped. */
#define MAX_BACKLOG 4

/* Decodes (or conceals) one frame into the backlog for the player. */
static void decode(OpusDecoder *dec, const uint8_t *pkt, size_t len, struct buf *backlog,
		   struct audio_stats *st)
{
	opus_int16 s[AUDIO_FRAME_SAMPLES * AUDIO_CHANNELS];
	uint8_t *out;
	int n = opus_decode(dec, pkt, (opus_int32)len, s, AUDIO_FRAME_SAMPLES, 0);

	if (n != AUDIO_FRAME_SAMPLES)
		memset(s, 0, sizeof(s)); /* a packet Opus refuses: silence */
	if (buf_avail(backlog) >= MAX_BACKLOG * AUDIO_FRAME_BYTES) {
		buf_consume(backlog, AUDIO_FRAME_BYTES);
		st->overruns++;
	}
	if (buf_reserve(backlog, AUDIO_FRAME_BYTES) < 0)
		return;
	out = buf_extend(backlog, AUDIO_FRAME_BYTES);
	for (int i = 0; i < AUDIO_FRAME_SAMPLES * AUDIO_CHANNELS; i++) {
		out[2 * i] = (uint8_t)s[i];
		out[2 * i + 1] = (uint8_t)((uint16_t)s[i] >> 8);
	}
}

/* Writes what the player takes now: 0 or -errno. */
static int flush(int pcm, struct buf *backlog)
{
	while (buf_avail(backlog)) {
		ssize_t k = write(pcm, buf_head(backlog), buf_avail(backlog));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			return 0;
		if (k <= 0)
			return k < 0 ? -errno : -EPIPE;
		buf_consume(backlog, (size_t)k);
	}
	buf_reset(backlog);
	return 0;
}

int audio_receive(int in, int pcm, int target_ms, volatile int *stop, struct audio_stats *st)
{
	static struct audio_stats none;
	struct audio_jitter *j = malloc(sizeof(*j));
	struct audio_parser *p = malloc(sizeof(*p));
	struct itimerspec tick = { { 0, AUDIO_FRAME_SAMPLES * (1000000000 / AUDIO_RATE) },
				   { 0, AUDIO_FRAME_SAMPLES * (1000000000 / AUDIO_RATE) } };
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK), err, r = 0;
	OpusDecoder *dec = opus_decoder_create(AUDIO_RATE, AUDIO_CHANNELS, &err);
	uint8_t buf[16384];
	struct buf backlog;
	int eof = 0;

	buf_init(&backlog);
	if (!st)
		st = &none;
	if (!j || !p || tfd < 0 || !dec) {
		r = -ENOMEM;
		goto out;
	}
	audio_jitter_init(j, target_ms / 10);
	audio_parser_init(p);
	fcntl(pcm, F_SETFL, fcntl(pcm, F_GETFL) | O_NONBLOCK);
	timerfd_settime(tfd, 0, &tick, NULL);
	while (!(stop && *stop)) {
		struct pollfd pfd[3] = { { .fd = tfd, .events = POLLIN },
					 { .fd = eof ? -1 : in, .events = POLLIN },
					 { .fd = buf_avail(&backlog) ? pcm : -1, .events = POLLOUT } };
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if (pfd[1].revents) {
			ssize_t k = read(in, buf, sizeof(buf));
			if (k < 0 && errno != EINTR && errno != EAGAIN) {
				r = -errno;
				break;
			}
			if (k == 0)
				eof = 1;
			if (k > 0 && (r = audio_parse(p, buf, (size_t)k, to_jitter, j)) < 0)
				break;
		}
		if (pfd[0].revents) {
			uint64_t ticks;
			if (read(tfd, &ticks, sizeof(ticks)) != sizeof(ticks))
				continue;
			while (ticks--) {
				const uint8_t *pkt = NULL;
				size_t len = 0;
				int t = audio_jitter_take(j, &pkt, &len);
				if (t < 0)
					break;
				decode(dec, t ? pkt : NULL, t ? len : 0, &backlog, st);
				audio_jitter_done(j);
			}
		}
		if ((r = flush(pcm, &backlog)) < 0)
			break;
		/* Ended: what is held plays out (however little), then done. */
		if (eof) {
			j->target = 1;
			if (!j->held && !buf_avail(&backlog))
				break;
		}
	}
out:
	buf_free(&backlog);
	if (j) {
		st->frames = j->played;
		st->concealed = j->concealed;
		st->late = j->late;
		st->dropped = j->dropped;
	}
	if (dec)
		opus_decoder_destroy(dec);
	if (tfd >= 0)
		close(tfd);
	free(j);
	free(p);
	return r;
}
