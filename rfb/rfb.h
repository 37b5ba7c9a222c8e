/*
 * An RFB (VNC) server, RFC 6143, over any connected stream descriptor.
 *
 * A desktop (struct rfb_desktop) is one screen shared by every viewer: a
 * source (rfb/x11.c, or a test) publishes whole frames; the desktop keeps
 * the current frame, finds the 64x64 tiles that changed (and tiles that
 * moved, for CopyRect) and marks them dirty for each viewer. A viewer's
 * session runs in a thread of its own: it answers FramebufferUpdateRequests
 * with the dirty tiles it has not sent yet, in the encoding the viewer
 * prefers (Raw, CopyRect, ZRLE, Tight with zlib and JPEG), converted to its
 * pixel format, and passes keys, pointer and cut text to the source.
 * Whatever the number of viewers, the source captures once per frame, and
 * only while some viewer waits for an update (rfb_desktop_wait_demand).
 *
 * Protocol versions 3.3, 3.7 and 3.8; security type None only: the metac
 * transport authenticates and encrypts, and plain endpoints listen on
 * loopback. Nothing a viewer sends is trusted: sizes are bounded (cut text
 * beyond RFB_MAX_CUT_TEXT is read and dropped), an unknown message or a
 * malformed pixel format ends the session, the handshake must end within
 * RFB_HANDSHAKE_TIMEOUT_MS.
 */
#ifndef METAC_RFB_H
#define METAC_RFB_H

#include <stddef.h>
#include <stdint.h>

#define RFB_TILE 64
#define RFB_TILE_PIXELS (RFB_TILE * RFB_TILE)
#define RFB_MAX_DIM 8192           /* a frame's width and height */
#define RFB_MAX_CUT_TEXT (1u << 20)
#define RFB_MAX_ENCODINGS 1024
#define RFB_MAX_VIEWERS 64
#define RFB_HANDSHAKE_TIMEOUT_MS 10000

struct buf;
struct rfb_desktop;
struct rfb_session;

/* What a desktop does with viewers' input (any may be NULL). Called from
 * viewers' threads, one call at a time per desktop. */
struct rfb_input_ops {
	void (*key)(void *arg, int down, uint32_t keysym);
	void (*pointer)(void *arg, uint8_t buttons, uint16_t x, uint16_t y);
	/* Latin-1, not NUL-terminated, at most RFB_MAX_CUT_TEXT bytes. */
	void (*cut_text)(void *arg, const char *text, size_t len);
};

/* A desktop with no frame yet (viewers wait for the first one). name is
 * what ServerInit tells viewers. NULL if out of memory. */
struct rfb_desktop *rfb_desktop_new(const char *name);
void rfb_desktop_set_input(struct rfb_desktop *d, const struct rfb_input_ops *ops,
			   void *arg);
void rfb_desktop_ref(struct rfb_desktop *d);
void rfb_desktop_unref(struct rfb_desktop *d);

/* The source's side. A whole frame: pixels 0x00RRGGBB, stride in pixels.
 * A new size is passed on to viewers (DesktopSize; those that cannot take
 * it are disconnected). 0 or -errno (-EINVAL for a size out of range). */
int rfb_desktop_frame(struct rfb_desktop *d, const uint32_t *px, int w, int h,
		      size_t stride);
/* Waits until some viewer waits for an update: 1, or 0 after timeout_ms
 * (-1: no limit), or -1 once the desktop is closed. */
int rfb_desktop_wait_demand(struct rfb_desktop *d, int timeout_ms);
/* Readable (an eventfd: read it to clear) whenever a viewer starts
 * waiting, for a source that polls; the desktop owns it. */
int rfb_desktop_demand_fd(struct rfb_desktop *d);
/* Text cut on the desktop (Latin-1), sent to every viewer. */
void rfb_desktop_cut_text(struct rfb_desktop *d, const char *text, size_t len);
/* Ends every session and makes the desktop refuse new ones. */
void rfb_desktop_close(struct rfb_desktop *d);
int rfb_desktop_viewers(struct rfb_desktop *d);

#define RFB_VIEW_ONLY 1u /* drop the viewer's keys, pointer and cut text */

/* Serves one viewer on fd until it leaves or breaks the protocol, or the
 * desktop closes; closes fd. 0, or -errno for why the session ended. */
int rfb_serve(struct rfb_desktop *d, int fd, unsigned flags);

/* Tells a viewer on fd why it cannot have the desktop (the handshake's
 * failure reason, which viewers show), then closes fd. 0 or -errno. */
int rfb_refuse(int fd, const char *reason);

/* A session without threads or sockets, for tests and fuzzing: bytes fed
 * are handled at once; what the server sends (the greeting on the first
 * call, then replies and any update due) is appended to out. Returns 0
 * while the session goes on, -errno where a real one would end. */
struct rfb_session *rfb_session_new(struct rfb_desktop *d, unsigned flags);
int rfb_session_feed(struct rfb_session *s, const uint8_t *p, size_t n, struct buf *out);
void rfb_session_free(struct rfb_session *s);

#endif
