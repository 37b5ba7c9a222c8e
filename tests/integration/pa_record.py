#!/usr/bin/env python3
"""Records PulseAudio sources at once, each with the time of its samples.

    pa_record.py SECONDS OUT1.raw DEV1 [OUTn.raw DEVn ...]

Each source goes to its raw file (s16le, 48 kHz, stereo) from a thread of
its own, through libpulse-simple (ctypes: no module to install). After
every read, the time on this machine's monotonic clock when the last
sample read was captured is the time of the read less the stream's
latency (pa_simple_get_latency); the median over the reads, taken back to
the first sample, is printed per file as "OUT start_seconds". Two
recordings' sample times can so be compared on one clock, whatever the
start-up delay of each stream, which is what measuring the delay between
two points of an audio path needs.
"""
import ctypes
import statistics
import sys
import threading
import time

RATE, CHANNELS, CHUNK = 48000, 2, 480  # 10 ms reads


class SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class BufferAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("maxlength", "tlength", "prebuf", "minreq", "fragsize")]


pa = ctypes.CDLL("libpulse-simple.so.0")
pa.pa_simple_new.restype = ctypes.c_void_p
pa.pa_simple_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_char_p, ctypes.POINTER(SampleSpec), ctypes.c_void_p,
                             ctypes.POINTER(BufferAttr), ctypes.POINTER(ctypes.c_int)]
pa.pa_simple_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_int)]
pa.pa_simple_get_latency.restype = ctypes.c_uint64
pa.pa_simple_get_latency.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
pa.pa_simple_free.argtypes = [ctypes.c_void_p]
PA_SAMPLE_S16LE, PA_STREAM_RECORD = 3, 2


def record(seconds, out, dev, result):
    spec = SampleSpec(PA_SAMPLE_S16LE, RATE, CHANNELS)
    attr = BufferAttr(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, CHUNK * CHANNELS * 2)
    err = ctypes.c_int(0)
    s = pa.pa_simple_new(None, b"metac-test", PA_STREAM_RECORD, dev.encode(), b"record",
                         ctypes.byref(spec), None, ctypes.byref(attr), ctypes.byref(err))
    if not s:
        result[out] = "cannot record %s (error %d)" % (dev, err.value)
        return
    buf = ctypes.create_string_buffer(CHUNK * CHANNELS * 2)
    starts, got = [], 0
    with open(out, "wb") as f:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if pa.pa_simple_read(s, buf, len(buf), ctypes.byref(err)) < 0:
                result[out] = "read failed (error %d)" % err.value
                break
            now = time.monotonic()
            lat = pa.pa_simple_get_latency(s, ctypes.byref(err)) / 1e6
            f.write(buf.raw)
            got += CHUNK
            starts.append(now - lat - (got - 1) / RATE)
    pa.pa_simple_free(s)
    if out not in result:
        result[out] = "%.6f" % statistics.median(starts)


def main():
    seconds, pairs = float(sys.argv[1]), sys.argv[2:]
    result, threads = {}, []
    for out, dev in zip(pairs[0::2], pairs[1::2]):
        t = threading.Thread(target=record, args=(seconds, out, dev, result))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    for out in pairs[0::2]:
        print(out, result.get(out, "no result"))


main()
