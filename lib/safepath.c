/*
 * Path resolution beneath an export's root directory fd; see safepath.h.
 *
 * The contract is stricter than RESOLVE_BENEATH: ".." is refused outright
 * (openat2 would allow "a/../b" since it stays beneath), and no symlink is
 * followed anywhere. openat2(2) does the walk when the kernel has it
 * (Linux 5.6+); otherwise every component is opened with O_NOFOLLOW from
 * the previous one's fd, so a concurrent rename cannot redirect the walk.
 * Both ways return the same errors for the same trees.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/safepath.h"

/* The only flags open(2) honours together with O_PATH; openat2 refuses the
 * rest, openat ignores them: drop them so both ways behave alike. */
#define SAFE_PATH_OFLAGS (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

#define SAFE_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | \
		      RESOLVE_NO_MAGICLINKS)

static int safe_path_fallback;
static int safe_openat2_missing;

void safe_path_force_fallback(int on)
{
	__atomic_store_n(&safe_path_fallback, !!on, __ATOMIC_RELAXED);
}

static int safe_use_openat2(void)
{
	return !__atomic_load_n(&safe_path_fallback, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&safe_openat2_missing, __ATOMIC_RELAXED);
}

int safe_name_check(const char *name, size_t len)
{
	if (len == 0 || len > NAME_MAX)
		return -EINVAL;
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return -EINVAL;
	if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')))
		return -EINVAL;
	return 0;
}

static int safe_is_dotdot(const char *s, size_t n)
{
	return n == 2 && s[0] == '.' && s[1] == '.';
}

static int safe_is_dot(const char *s, size_t n)
{
	return n == 1 && s[0] == '.';
}

/*
 * Refuses what the contract refuses before anything touches the disk.
 * Returns 1 if the path names the root itself ("", ".", "./", ...).
 */
static int safe_path_check(const char *path)
{
	size_t len = strlen(path), i = 0, n;
	int root = 1;

	if (len >= PATH_MAX)
		return -ENAMETOOLONG;
	if (path[0] == '/')
		return -EXDEV;
	while (i < len) {
		n = strcspn(path + i, "/");
		if (safe_is_dotdot(path + i, n))
			return -EXDEV;
		if (n && !safe_is_dot(path + i, n))
			root = 0;
		i += n;
		i += strspn(path + i, "/");
	}
	return root;
}

/*
 * Copies the next component of path[0..len) at *pos into name, skipping
 * "." components. Returns 1 for a component, 0 at the end.
 */
static int safe_next_name(const char *path, size_t len, size_t *pos,
			  char name[NAME_MAX + 1])
{
	size_t i = *pos, n;

	for (;;) {
		while (i < len && path[i] == '/')
			i++;
		if (i == len)
			break;
		for (n = 0; i + n < len && path[i + n] != '/'; n++)
			;
		if (n > NAME_MAX)
			return -ENAMETOOLONG;
		if (!safe_is_dot(path + i, n)) {
			memcpy(name, path + i, n);
			name[n] = '\0';
			*pos = i + n;
			return 1;
		}
		i += n;
	}
	*pos = i;
	return 0;
}

static int safe_is_symlink(int dirfd, const char *name)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	return S_ISLNK(st.st_mode);
}

/*
 * openat() of one name with O_NOFOLLOW added. With O_DIRECTORY (or O_PATH
 * lookups that want a directory) the kernel reports a symlink as ENOTDIR
 * rather than ELOOP; openat2 says ELOOP, so say that too.
 */
static int safe_open_name(int dirfd, const char *name, int flags, mode_t mode)
{
	int fd = openat(dirfd, name, flags | O_NOFOLLOW, mode);

	if (fd >= 0)
		return fd;
	if (errno == ENOTDIR && safe_is_symlink(dirfd, name))
		return -ELOOP;
	return -errno;
}

/* The fallback walk: opens path[0..len) as a directory, one component at
 * a time, each beneath the fd of the one before. */
static int safe_walk_dir(int rootfd, const char *path, size_t len)
{
	char name[NAME_MAX + 1];
	size_t pos = 0;
	int cur, next, ret;

	cur = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return -errno;
	while ((ret = safe_next_name(path, len, &pos, name)) > 0) {
		next = safe_open_name(cur, name,
				      O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
		if (next < 0) {
			ret = next;
			goto out;
		}
		close(cur);
		cur = next;
	}
	if (ret == 0)
		return cur;
out:
	close(cur);
	return ret;
}

static int safe_openat2(int dirfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (unsigned int)flags | O_CLOEXEC,
		.resolve = SAFE_RESOLVE,
	};
	long fd;

	/* openat2 refuses a mode that open would ignore. */
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		how.mode = mode;
	fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	if (errno == ENOSYS)
		__atomic_store_n(&safe_openat2_missing, 1, __ATOMIC_RELAXED);
	return -errno;
}

/* The directory holding the last component, resolved beneath rootfd. */
static int safe_open_parent(int rootfd, const char *path, size_t len)
{
	char buf[PATH_MAX];
	int fd;

	if (!safe_use_openat2())
		return safe_walk_dir(rootfd, path, len);
	memcpy(buf, path, len);
	buf[len] = '\0';
	fd = safe_openat2(rootfd, len ? buf : ".", O_PATH | O_DIRECTORY, 0);
	if (fd == -ENOSYS)
		return safe_walk_dir(rootfd, path, len);
	return fd;
}

/*
 * Opens the last component beneath parentfd. A trailing slash demands a
 * directory (and makes open follow a symlink, so emulate it instead).
 * allow_link: O_PATH|O_NOFOLLOW asked for the link itself.
 */
static int safe_open_last(int parentfd, const char *name, int flags,
			  mode_t mode, int trailing, int allow_link)
{
	struct stat st;
	int fd;

	if (trailing && (flags & O_CREAT))
		return -EISDIR;
	if (trailing)
		flags |= O_DIRECTORY;
	fd = safe_open_name(parentfd, name, flags | O_CLOEXEC, mode);
	if (fd < 0 || !(flags & O_PATH) || allow_link)
		return fd;
	/* O_PATH|O_NOFOLLOW opens a symlink without failing. */
	if (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode)) {
		close(fd);
		return -ELOOP;
	}
	return fd;
}

/* Splits path (not naming the root) into parent and last component. */
static int safe_openat_split(int rootfd, const char *path, int flags,
			     mode_t mode, int link_ok)
{
	char name[NAME_MAX + 1];
	size_t len = strlen(path), start, n;
	int parentfd, trailing, ret;

	trailing = path[len - 1] == '/';
	while (len && path[len - 1] == '/')
		len--;
	start = len;
	while (start && path[start - 1] != '/')
		start--;
	n = len - start;
	if (n > NAME_MAX)
		return -ENAMETOOLONG;
	memcpy(name, path + start, n);
	name[n] = '\0';
	parentfd = safe_open_parent(rootfd, path, start);
	if (parentfd < 0)
		return parentfd;
	ret = safe_open_last(parentfd, name, flags, mode, trailing,
			     link_ok && !trailing);
	close(parentfd);
	return ret;
}

int safe_openat(int rootfd, const char *path, int flags, mode_t mode)
{
	int ret, link_ok;

	ret = safe_path_check(path);
	if (ret < 0)
		return ret;
	if (flags & O_PATH)
		flags &= SAFE_PATH_OFLAGS;
	if (ret == 1) {
		ret = openat(rootfd, ".", flags | O_CLOEXEC, mode);
		return ret < 0 ? -errno : ret;
	}
	/* RESOLVE_NO_SYMLINKS refuses even a final link opened with O_PATH|
	 * O_NOFOLLOW, so that case resolves the parent and opens the last
	 * component itself. */
	link_ok = (flags & (O_PATH | O_NOFOLLOW)) == (O_PATH | O_NOFOLLOW);
	if (!link_ok && safe_use_openat2()) {
		ret = safe_openat2(rootfd, path, flags, mode);
		if (ret != -ENOSYS)
			return ret;
	}
	return safe_openat_split(rootfd, path, flags, mode, link_ok);
}
