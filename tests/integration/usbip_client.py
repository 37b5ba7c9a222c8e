#!/usr/bin/env python3
"""A USB/IP client for tests: imports a device and runs URBs through it.

    usbip_client.py HOST PORT BUSID

Imports BUSID (OP_REQ_IMPORT), then reads the device's descriptors with
control URBs (device, configuration, strings 0-3, the HID report
descriptor), sets a report (SET_REPORT) and reads it back from the
interrupt endpoint, and unlinks an interrupt URB left waiting. Prints one
line per result ("device 12010002...", "echo ok", ...), so two runs can be
compared byte for byte; exits 1 with the reason on anything unexpected.
Written from the kernel's Documentation/usb/usbip_protocol.rst.
"""
import os
import socket
import struct
import sys

CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK = 1, 2, 3, 4


def fail(why):
    print("usbip_client: " + why, file=sys.stderr)
    sys.exit(1)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            fail("the server closed the connection (%d of %d bytes)" % (len(b), n))
        b += k
    return b


class Client:
    def __init__(self, host, port, busid):
        self.s = socket.create_connection((host, port), timeout=20)
        self.seq = 0
        self.dir_in = {}  # seq -> whether data comes back
        self.s.sendall(struct.pack(">HHI32s", 0x0111, 0x8003, 0, busid.encode()))
        version, code, status = struct.unpack(">HHI", recv_exact(self.s, 8))
        if code != 0x0003 or status != 0:
            fail("import of %s refused (code %#x status %d)" % (busid, code, status))
        dev = recv_exact(self.s, 312)
        self.busid = dev[256:288].rstrip(b"\0").decode()
        self.busnum, self.devnum = struct.unpack(">II", dev[288:296])
        if self.busid != busid:
            fail("imported %s, not %s" % (self.busid, busid))

    def submit(self, ep, dir_in, length, setup=b"\0" * 8, data=b""):
        self.seq += 1
        hdr = struct.pack(">IIIIIIiiii8s", CMD_SUBMIT, self.seq, self.busnum << 16 | self.devnum,
                          dir_in, ep, 0, length, 0, 0, 0, setup)
        self.s.sendall(hdr + (b"" if dir_in else data))
        self.dir_in[self.seq] = dir_in
        return self.seq

    def reply(self):
        cmd, seq, _, _, _ = struct.unpack(">IIIII", recv_exact(self.s, 20))
        rest = recv_exact(self.s, 28)
        if cmd == RET_UNLINK:
            (status,) = struct.unpack(">i", rest[:4])
            return cmd, seq, status, b""
        if cmd != RET_SUBMIT:
            fail("unexpected reply command %d" % cmd)
        status, actual, _, npackets, _ = struct.unpack(">iiiii", rest[:20])
        # Data follows for IN transfers only.
        data = recv_exact(self.s, actual) if actual > 0 and self.dir_in.get(seq) else b""
        return cmd, seq, status, data

    def control_in(self, req_type, req, value, index, length):
        setup = struct.pack("<BBHHH", req_type, req, value, index, length)
        seq = self.submit(0, 1, length, setup)
        cmd, rseq, status, data = self.reply()
        if rseq != seq or status != 0:
            fail("control request %#x/%#x value %#x: status %d" % (req_type, req, value, status))
        return data


def main():
    host, port, busid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = Client(host, port, busid)
    dev = c.control_in(0x80, 6, 0x0100, 0, 18)
    print("device", dev.hex())
    head = c.control_in(0x80, 6, 0x0200, 0, 9)
    total = struct.unpack("<H", head[2:4])[0]
    print("configuration", c.control_in(0x80, 6, 0x0200, 0, total).hex())
    for i in range(4):
        print("string%d" % i, c.control_in(0x80, 6, 0x0300 | i, 0x0409, 255).hex())
    print("report-descriptor", c.control_in(0x81, 6, 0x2200, 0, 255).hex())
    # SET_CONFIGURATION, then a report out and back in.
    seq = c.submit(0, 0, 0, struct.pack("<BBHHH", 0x00, 9, 1, 0, 0))
    if c.reply()[2] != 0:
        fail("SET_CONFIGURATION failed")
    report = os.urandom(8)
    seq_in = c.submit(1, 1, 8)  # waits: nothing to report yet
    seq = c.submit(0, 0, 8, struct.pack("<BBHHH", 0x21, 9, 0x0200, 0, 8), report)
    got = {}
    for _ in range(2):
        cmd, rseq, status, data = c.reply()
        got[rseq] = (status, data)
    if got.get(seq, (1,))[0] != 0:
        fail("SET_REPORT failed: %r" % (got.get(seq),))
    if got.get(seq_in) != (0, report):
        fail("the interrupt endpoint returned %r, not the report %s" % (got.get(seq_in), report.hex()))
    print("echo ok")
    # An interrupt URB left waiting, then unlinked: RET_UNLINK -ECONNRESET.
    seq_in = c.submit(1, 1, 8)
    c.seq += 1
    c.s.sendall(struct.pack(">IIIIII24s", CMD_UNLINK, c.seq, 0, 0, 0, seq_in, b""))
    cmd, rseq, status, _ = c.reply()
    if cmd != RET_UNLINK or rseq != c.seq or status != -104:
        fail("unlink answered command %d seq %d status %d" % (cmd, rseq, status))
    print("unlink ok")
    # A request the device does not know stalls (-EPIPE), and the session goes on.
    seq = c.submit(0, 1, 4, struct.pack("<BBHHH", 0xc0, 0x55, 0, 0, 4))
    cmd, rseq, status, _ = c.reply()
    if status != -32:
        fail("a vendor request answered status %d, not -EPIPE" % status)
    print("stall ok")


main()
