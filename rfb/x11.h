/* An X11 screen shared as an RFB desktop (rfb/x11.c). */
#ifndef METAC_RFB_X11_H
#define METAC_RFB_X11_H

#include <stddef.h>

struct rfb_desktop;
struct rfb_x11;

/* Connects to display :N on this host (its local socket), with the
 * MIT-MAGIC-COOKIE-1 for it from xauthority if given, and starts the
 * capture thread. 0, or -errno with why in err. */
int rfb_x11_open(int display, const char *xauthority, struct rfb_x11 **out, char *err,
		 size_t errsz);
/* The desktop viewers are served from (the capture holds a reference). */
struct rfb_desktop *rfb_x11_desktop(struct rfb_x11 *x);
/* False once the X server went away (the desktop is closed then). */
int rfb_x11_alive(struct rfb_x11 *x);
void rfb_x11_close(struct rfb_x11 *x);

#endif
