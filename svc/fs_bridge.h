/* The FUSE bridge's applets (svc/fs_bridge.c). */
#ifndef METAC_FS_BRIDGE_H
#define METAC_FS_BRIDGE_H

struct applet;

int fs_bridge_main(const struct applet *self, int argc, char **argv);
int fs_unmounter_main(const struct applet *self, int argc, char **argv);
/* `metac fs mount9p`: the bridge on a plain 9p server, in the foreground. */
int fs_mount9p_main(const struct applet *self, int argc, char **argv);

#endif
