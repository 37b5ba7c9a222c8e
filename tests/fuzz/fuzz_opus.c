/*
 * libFuzzer target: the sound stream's receiving side (audio/opus.c): the
 * parser, the jitter buffer, and Opus decoding of whatever packets it
 * holds, as audio_receive does with a peer's bytes.
 *
 * The input is chunk[1] takes[1] and then the stream's bytes, fed in
 * pieces of chunk+1 bytes; after each piece the harness takes (and
 * decodes or conceals) up to takes%8 frames, as playback ticks would.
 * Checked: nothing crashes or leaks; the parser hands over only packets of
 * 1..AUDIO_MAX_PACKET bytes; the jitter buffer's count of held frames
 * stays within its slots and matches what it holds; a decoded frame is a
 * frame.
 */
#include <stdint.h>
#include <string.h>

#include <opus/opus.h>

#include "audio/opus.h"
#include "tests/fuzz/check.h"

static struct audio_jitter jit;

static void on_packet(void *arg, uint32_t seq, const uint8_t *pkt, size_t len)
{
	CHECK(len >= 1 && len <= AUDIO_MAX_PACKET);
	audio_jitter_put(&jit, seq, pkt, len);
}

static void check_held(void)
{
	int n = 0;
	for (int i = 0; i < AUDIO_JITTER_SLOTS; i++)
		n += jit.slot[i].len != 0;
	CHECK(jit.held == n);
	CHECK(jit.held >= 0 && jit.held <= AUDIO_JITTER_SLOTS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static OpusDecoder *dec;
	static opus_int16 pcm[AUDIO_FRAME_SAMPLES * AUDIO_CHANNELS * 6];
	struct audio_parser p;
	size_t chunk, takes, off = 0;
	int err;

	if (!dec && !(dec = opus_decoder_create(AUDIO_RATE, AUDIO_CHANNELS, &err)))
		return 0;
	if (size < 2)
		return 0;
	chunk = (size_t)data[0] + 1;
	takes = data[1] % 8;
	data += 2;
	size -= 2;
	audio_parser_init(&p);
	audio_jitter_init(&jit, 1 + (int)(takes % 4));
	opus_decoder_ctl(dec, OPUS_RESET_STATE);
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		if (audio_parse(&p, data + off, n, on_packet, NULL) < 0)
			break;
		off += n;
		check_held();
		for (size_t t = 0; t < takes; t++) {
			const uint8_t *pkt;
			size_t len;
			int r = audio_jitter_take(&jit, &pkt, &len), got;
			if (r < 0)
				break;
			got = opus_decode(dec, r ? pkt : NULL, r ? (opus_int32)len : 0, pcm,
					  AUDIO_FRAME_SAMPLES, 0);
			/* Packets longer than a frame are refused, not overrun. */
			CHECK(got < 0 || got <= AUDIO_FRAME_SAMPLES);
			audio_jitter_done(&jit);
			check_held();
		}
	}
	return 0;
}
