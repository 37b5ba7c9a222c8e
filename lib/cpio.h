/* cpio archives in the "newc" format (what the kernel unpacks as an
 * initramfs; see the kernel's Documentation/driver-api/early-userspace). */
#ifndef METAC_CPIO_H
#define METAC_CPIO_H

#include <stddef.h>
#include <sys/types.h>

struct buf;

/* Each appends one entry; name without a leading '/'. 0 or -ENOMEM. */
int cpio_add_dir(struct buf *b, const char *name, mode_t mode);
int cpio_add_file(struct buf *b, const char *name, mode_t mode, const void *data, size_t n);
int cpio_add_symlink(struct buf *b, const char *name, const char *target);
/* The TRAILER!!! entry that ends an archive. */
int cpio_end(struct buf *b);

#endif
