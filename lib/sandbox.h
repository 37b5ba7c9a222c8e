/*
 * Least privilege for a process that serves what remote peers send in
 * bulk (a 9P, NBD, RFB, USB/IP or sound session, svc/session.c; a tunnel
 * engine, svc/net_engine.c): once it holds the descriptors
 * it needs, it gives up the rest of the system.
 *   - its root becomes an empty read-only tmpfs of its own mount
 *     namespace, the old one detached (for 9P, with the export bound
 *     in and its own descriptors in proc/self/fd): nothing else of the
 *     host is reachable, not even through ".." from the export;
 *   - its capabilities shrink to what the server needs (9P: overriding
 *     file permissions and ownership inside the export; NBD: none, and it
 *     runs as nobody), and the bounding set with them;
 *   - no new privileges, ever (no setuid binary, no file capabilities);
 *   - a seccomp filter lets through only the system calls that server
 *     makes; anything else fails with EPERM (no socket, no exec, no
 *     mount, no ptrace, no kill of other processes).
 * Not root (a daemon run by a user): the root and capabilities stay as
 * they are, the filter still applies.
 */
#ifndef METAC_SANDBOX_H
#define METAC_SANDBOX_H

#include <stddef.h>

enum sandbox_kind {
	SANDBOX_9P,
	SANDBOX_NBD,
	/* The FUSE bridge of a mount (svc/fs_bridge.c), once mounted: nobody,
	 * an empty root (root_dir is where to make it), its loop's calls;
	 * the filter holds for all its threads. */
	SANDBOX_FUSE,
	/* The bridge's unmounter: root with CAP_SYS_ADMIN alone, which may
	 * read its pipe and unmount; root_dir unused. */
	SANDBOX_UNMOUNT,
	/* A viewer's RFB session (svc/session.c), its X display open and
	 * its capture thread running: as SANDBOX_FUSE, with the calls of the
	 * RFB server and the X capture (MIT-SHM segments) instead. */
	SANDBOX_RFB,
	/* A USB/IP session (svc/usb.c), its device open and, for a host
	 * device, libusb's event thread running: as SANDBOX_FUSE, with the
	 * calls of libusb's events and of ioctl only usbfs's (USBDEVFS_*). */
	SANDBOX_USB,
	/* An Opus stream (svc/sound.c), its PulseAudio client started: as
	 * SANDBOX_FUSE, with its timer and the wait for that client. */
	SANDBOX_SOUND,
	/* A tunnel engine (svc/net_engine.c), its TAP device and UDP socket
	 * open and its threads running: as SANDBOX_FUSE, with batched
	 * datagrams (sendmmsg, recvmmsg) and nothing else. */
	SANDBOX_TUNNEL,
};

/* 0, or -errno with what failed in err. */
/* root_dir is an empty directory to mount the new root on (made if
 * missing); other processes keep seeing it empty. For 9P, export_fd is
 * the export's directory: it is reopened at the same number from inside
 * the new root (read-only there if read_only). */
int sandbox_enter(enum sandbox_kind kind, const char *root_dir, int export_fd, int read_only,
		  char *err, size_t errsz);

/* The system call filter alone (for tests): 0 or -errno. */
int sandbox_filter(enum sandbox_kind kind);

#endif
