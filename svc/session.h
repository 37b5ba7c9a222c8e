/*
 * Data-plane sessions in processes of their own. A 9P session (fs), an
 * NBD session (block), a viewer's RFB session (desktop), a USB/IP
 * session (usb) or an Opus stream (sound) parses what a remote peer sends
 * in bulk; each runs in a process spawned for its data connection
 * (`metac fs|block|desktop|usb|sound _session`), which gives up root's
 * powers once it holds what it serves (lib/sandbox.h):
 *   fd 3  the session's socket: the daemon pipes the decrypted data
 *         connection to its other end
 *   fd 4  the export: an O_PATH directory (9P) or the open file (NBD);
 *         an RFB session opens its X display itself, a USB/IP session its
 *         device and a sound session its PulseAudio client, before the
 *         sandbox
 * A session that crashes costs only its client that session (a bind then
 * reconnects to a fresh one); the daemon logs it and carries on.
 */
#ifndef METAC_SVC_SESSION_H
#define METAC_SVC_SESSION_H

#include <stdint.h>

#include "lib/sandbox.h"

struct node;

struct session_cfg {
	enum sandbox_kind kind;
	int read_only;
	int passthrough;    /* 9P: ids as they are (P9_MAP_PASSTHROUGH) */
	uint32_t min_block; /* NBD: 0 for the file's own */
	const char *name;   /* NBD: the export's name; USB: the device's description */
	int display;        /* RFB: the X display's number */
	const char *xauth;  /* RFB: its authority file, or NULL */
	int sink;           /* sound: the device takes audio (name: PulseAudio's) */
};

/* Starts a session on sock (taken: closed here either way) for the
 * export behind expfd (left to the caller; -1 for RFB). ended (may be NULL) runs
 * when the session process has exited, if it started. 0 or -errno. */
int session_spawn(struct node *n, const struct session_cfg *cfg, int sock, int expfd,
		  void (*ended)(void *arg), void *arg);

/* At the daemon's shutdown: stops watching the session processes (they
 * end by themselves when their sockets close) and drops what they would
 * have told their ended(). Before the exports those calls name go. */
void session_forget_all(void);

/* `metac fs|block|desktop|usb|sound _session DIR [--read-only]
 * [--passthrough] [--min-block N] [--name NAME] [--display N
 * [--xauthority FILE]] [--sink]`: the
 * process itself (--read-only: a view-only viewer for RFB). */
int session_main(enum sandbox_kind kind, int argc, char **argv);

#endif
