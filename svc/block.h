/* BlockDevice capabilities (svc/block.c), made by File.openAsBlock. */
#ifndef METAC_SVC_BLOCK_H
#define METAC_SVC_BLOCK_H

#include <stddef.h>

struct cap;
struct node;

/* A BlockDevice of the file or block device at path (read-only if asked,
 * or if it cannot be opened for writing). On failure -errno and why in
 * err. */
int block_device_new(struct node *n, const char *path, int read_only, struct cap **out,
		     char *err, size_t errsz);

#endif
