/*
 * Path resolution that cannot escape a directory: everything a remote
 * peer names is resolved beneath an export's root directory fd, with no
 * symlink followed and no ".." leaving the root.
 */
#ifndef METAC_SAFEPATH_H
#define METAC_SAFEPATH_H

#include <sys/types.h>

/* A single directory entry name a peer may use: not empty, not "." or
 * "..", no '/', no NUL, at most 255 bytes. Returns 0 or -EINVAL. */
int safe_name_check(const char *name, size_t len);

/*
 * openat() beneath rootfd: path is relative ("" or "." means the root
 * itself); ".." components are refused (-EXDEV) rather than resolved, and
 * no symlink is followed on the way, including the last component
 * (-ELOOP), unless flags has O_PATH|O_NOFOLLOW, which opens the link
 * itself. Uses openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
 * RESOLVE_NO_MAGICLINKS) and falls back to a per-component O_NOFOLLOW walk
 * on kernels without it. Returns an fd or -errno.
 */
int safe_openat(int rootfd, const char *path, int flags, mode_t mode);

/* For tests: force the fallback walk even when openat2 exists. */
void safe_path_force_fallback(int on);

#endif
