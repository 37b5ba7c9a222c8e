/*
 * cpio "newc" writer: a 110-byte ASCII header (magic 070701 and thirteen
 * 8-digit hex fields), the name with its NUL, padding to 4 bytes, the
 * data, padding to 4 bytes. Enough for an initramfs: directories,
 * regular files and symbolic links, owned by root.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/buf.h"
#include "lib/cpio.h"

static unsigned ino = 1;

static int pad4(struct buf *b)
{
	static const char zero[4];
	size_t n = (4 - b->len % 4) % 4;
	return buf_put(b, zero, n);
}

static int entry(struct buf *b, const char *name, unsigned mode, const void *data, size_t n)
{
	char h[111];
	size_t namesz = strlen(name) + 1;

	if (n > 0xffffffffu || namesz > 4096)
		return -EINVAL;
	snprintf(h, sizeof(h),
		 "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		 ino++, mode, 0u, 0u, 1u, 0u, (unsigned)n, 0u, 0u, 0u, 0u, (unsigned)namesz, 0u);
	if (buf_put(b, h, 110) < 0 || buf_put(b, name, namesz) < 0 || pad4(b) < 0 ||
	    buf_put(b, data, n) < 0 || pad4(b) < 0)
		return -ENOMEM;
	return 0;
}

int cpio_add_dir(struct buf *b, const char *name, mode_t mode)
{
	return entry(b, name, S_IFDIR | (mode & 07777), NULL, 0);
}

int cpio_add_file(struct buf *b, const char *name, mode_t mode, const void *data, size_t n)
{
	return entry(b, name, S_IFREG | (mode & 07777), data, n);
}

int cpio_add_symlink(struct buf *b, const char *name, const char *target)
{
	return entry(b, name, S_IFLNK | 0777, target, strlen(target));
}

int cpio_end(struct buf *b)
{
	return entry(b, "TRAILER!!!", 0, NULL, 0);
}
