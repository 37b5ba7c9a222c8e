/*
 * Sound over a byte stream: PCM (48 kHz, stereo, s16le) cut into 10 ms
 * frames, each Opus-encoded and sent with a sequence number; on the other
 * side a jitter buffer that plays each frame at its time, conceals a
 * frame that is missing when its time comes (Opus packet-loss
 * concealment), drops frames that come too late, and keeps the delay near
 * its target when frames arrive in bursts.
 *
 * On the wire: a header, then packets.
 *   header  "MCOPUS" u8 version(1) u8 channels(2) u32 rate(48000)
 *           u16 frame_samples(480)                 (little-endian)
 *   packet  u16 length (1..AUDIO_MAX_PACKET) u32 sequence, payload
 * The engine knows nothing of capabilities: it reads and writes fds.
 */
#ifndef METAC_AUDIO_OPUS_H
#define METAC_AUDIO_OPUS_H

#include <stddef.h>
#include <stdint.h>

#define AUDIO_RATE 48000
#define AUDIO_CHANNELS 2
#define AUDIO_FRAME_SAMPLES 480 /* 10 ms */
#define AUDIO_FRAME_BYTES (AUDIO_FRAME_SAMPLES * AUDIO_CHANNELS * 2)
#define AUDIO_MAX_PACKET 1275   /* Opus's largest frame */
#define AUDIO_HEADER_LEN 14
#define AUDIO_JITTER_SLOTS 64   /* frames held at most (640 ms) */
#define AUDIO_BITRATE 192000

/* The stream parser: bytes in, whole packets out. */
struct audio_parser {
	int have_header;
	size_t need; /* bytes still to come for the current piece */
	uint8_t hdr[AUDIO_HEADER_LEN];
	size_t got;
	uint32_t seq;
	uint16_t len;
	uint8_t pkt[AUDIO_MAX_PACKET];
};

typedef void (*audio_packet_fn)(void *arg, uint32_t seq, const uint8_t *pkt, size_t len);

void audio_parser_init(struct audio_parser *p);
/* Feeds n bytes; fn gets each whole packet. 0, or -EPROTO for a stream
 * that is not ours (bad header, a length out of range). */
int audio_parse(struct audio_parser *p, const uint8_t *data, size_t n, audio_packet_fn fn,
		void *arg);

/* The jitter buffer. */
struct audio_jitter {
	struct {
		uint32_t seq;
		uint16_t len; /* 0: empty */
		uint8_t data[AUDIO_MAX_PACKET];
	} slot[AUDIO_JITTER_SLOTS];
	uint32_t next;  /* the frame to play next */
	int started, playing, target, held;
	int taken;         /* the slot audio_jitter_take handed out, or -1 */
	int concealed_run; /* frames concealed in a row */
	/* counters */
	uint64_t played, concealed, late, dropped;
};

/* target: frames to hold before playing (and to come back to). */
void audio_jitter_init(struct audio_jitter *j, int target);
void audio_jitter_put(struct audio_jitter *j, uint32_t seq, const uint8_t *pkt, size_t len);
/* The packet to play now: 1 with *pkt and *len set, 0 for a frame to conceal, -1
 * when nothing is to be played (not started, or waiting to fill again
 * after the stream went quiet). */
int audio_jitter_take(struct audio_jitter *j, const uint8_t **pkt, size_t *len);
void audio_jitter_done(struct audio_jitter *j); /* the taken slot may be reused */

struct audio_stats {
	uint64_t frames, bytes, concealed, late, dropped, overruns;
};

/* Reads PCM from pcm (until it ends), sends it encoded on out (a stream).
 * 0, or -errno. stop, when set, ends it. */
int audio_send(int pcm, int out, volatile int *stop, struct audio_stats *st);
/* Reads a stream on in, writes PCM to pcm (a pipe to the player) every
 * 10 ms, from a jitter buffer of target_ms. Returns when the stream ends
 * (0) or fails (-errno). */
int audio_receive(int in, int pcm, int target_ms, volatile int *stop, struct audio_stats *st);

#endif
