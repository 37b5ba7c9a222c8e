/*
 * Unit tests for lib/safepath.c. Every test builds its own tree under a
 * fresh mkdtemp directory (plus a second one standing for "outside the
 * export"), runs once with openat2 and once with the forced per-component
 * fallback, and removes both trees afterwards.
 */
#include "tests/unit/unit.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/safepath.h"

static struct {
	char root[64];	/* the export root */
	char out[64];	/* a directory outside it */
	int rootfd;
} T;

static int rm_one(const char *path, const struct stat *st, int type,
		  struct FTW *ftw)
{
	remove(path);
	return 0;
}

static void rm_rf(const char *path)
{
	if (path[0])
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n++;
	closedir(d);
	return n;
}

static int tree_setup(void)
{
	strcpy(T.root, "/tmp/metac-safepath-root-XXXXXX");
	strcpy(T.out, "/tmp/metac-safepath-out-XXXXXX");
	T.rootfd = -1;
	if (!mkdtemp(T.root)) {
		T.root[0] = '\0';
		return -1;
	}
	if (!mkdtemp(T.out)) {
		T.out[0] = '\0';
		return -1;
	}
	T.rootfd = open(T.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return T.rootfd < 0 ? -1 : 0;
}

static void tree_teardown(void)
{
	if (T.rootfd >= 0)
		close(T.rootfd);
	rm_rf(T.root);
	rm_rf(T.out);
	memset(&T, 0, sizeof(T));
}

/* Runs one body against a fresh tree, openat2 or fallback. Cleanup runs
 * even when a CHECK in the body returned early. */
static void run(void (*body)(void), int fallback)
{
	int fds;

	if (tree_setup() < 0) {
		UNIT_FAIL("cannot create test trees under /tmp: %s",
			  strerror(errno));
		tree_teardown();
		return;
	}
	safe_path_force_fallback(fallback);
	fds = count_fds();
	body();
	if (!unit_failed_now && count_fds() != fds)
		UNIT_FAIL("fd leak: %d open before, %d after", fds,
			  count_fds());
	safe_path_force_fallback(0);
	tree_teardown();
}

#define SAFE_TEST(name)                                  \
	static void body_##name(void);                       \
	TEST(name##_openat2)                                 \
	{                                                    \
		run(body_##name, 0);                         \
	}                                                    \
	TEST(name##_fallback)                                \
	{                                                    \
		run(body_##name, 1);                         \
	}                                                    \
	static void body_##name(void)

/* Tree builders, relative to the root; 0 or -1. */
static int mk(const char *rel)
{
	return mkdirat(T.rootfd, rel, 0755);
}

static int put_at(int dirfd, const char *rel, const char *text)
{
	int fd = openat(dirfd, rel, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC,
			0644);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int put(const char *rel, const char *text)
{
	return put_at(T.rootfd, rel, text);
}

static int ln(const char *target, const char *rel)
{
	return symlinkat(target, T.rootfd, rel);
}

/* Reads what safe_openat opens, then closes it. */
static int slurp(const char *path, char *buf, size_t size)
{
	int fd = safe_openat(T.rootfd, path, O_RDONLY, 0);
	ssize_t n;

	if (fd < 0)
		return fd;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* safe_openat's result is closed here: 0 if it opened, else -errno. */
static int try_open(const char *path, int flags)
{
	int fd = safe_openat(T.rootfd, path, flags, 0);

	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static int same_file(int fd, int dirfd, const char *rel)
{
	struct stat a, b;

	if (fstat(fd, &a) < 0 || fstatat(dirfd, rel, &b, AT_SYMLINK_NOFOLLOW))
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

SAFE_TEST(nested_file)
{
	char buf[64];
	int fd;

	CHECK(mk("a") == 0 && mk("a/b") == 0 && put("a/b/c", "hello") == 0);
	CHECK_INT(slurp("a/b/c", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "hello");
	CHECK_INT(slurp("a//b///c", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "hello");
	CHECK_INT(slurp("./a/./b/c", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "hello");
	fd = safe_openat(T.rootfd, "a/b/", O_RDONLY | O_DIRECTORY, 0);
	CHECK(fd >= 0);
	CHECK(same_file(fd, T.rootfd, "a/b"));
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	CHECK_INT(try_open("a/b/c/", O_RDONLY), -ENOTDIR);
	CHECK_INT(try_open("a/b/c/d", O_RDONLY), -ENOTDIR);
	CHECK_INT(try_open("a/b/c", O_RDONLY | O_DIRECTORY), -ENOTDIR);
	CHECK_INT(try_open("a/missing", O_RDONLY), -ENOENT);
	CHECK_INT(try_open("missing/c", O_RDONLY), -ENOENT);
	CHECK_INT(try_open("...", O_RDONLY), -ENOENT);
	CHECK_INT(try_open("..a", O_RDONLY), -ENOENT);
}

SAFE_TEST(root_itself)
{
	static const char *paths[] = { "", ".", "./", ".//.", "./." };
	size_t i;
	int fd;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		fd = safe_openat(T.rootfd, paths[i], O_RDONLY | O_DIRECTORY,
				 0);
		CHECK(fd >= 0);
		CHECK(same_file(fd, T.rootfd, "."));
		close(fd);
	}
	CHECK_INT(try_open("", O_CREAT | O_WRONLY), -EISDIR);
}

SAFE_TEST(dotdot_and_absolute)
{
	static const char *paths[] = {
		"a/../b", "..", "../x", "/etc/passwd", "a/..", "a/../",
		"./..", "a//..//b", "/", "a/b/../../..",
	};
	size_t i;
	int ret;

	CHECK(mk("a") == 0 && mk("b") == 0);
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		ret = try_open(paths[i], O_RDONLY);
		if (ret != -EXDEV) {
			UNIT_FAIL("\"%s\" gave %d, expected -EXDEV", paths[i],
				  ret);
			return;
		}
	}
	CHECK_INT(try_open("../x", O_CREAT | O_WRONLY), -EXDEV);
	CHECK_INT(try_open("..", O_PATH | O_NOFOLLOW), -EXDEV);
}

SAFE_TEST(symlink_absolute_outside)
{
	char target[128];

	CHECK(put_at(AT_FDCWD, strcat(strcpy(target, T.out), "/secret"),
		     "outside") == 0);
	CHECK(ln(target, "evil") == 0);
	CHECK(ln(T.out, "evildir") == 0);
	CHECK_INT(try_open("evil", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("evil", O_WRONLY | O_TRUNC), -ELOOP);
	CHECK_INT(try_open("evildir/secret", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("evildir", O_RDONLY | O_DIRECTORY), -ELOOP);
	CHECK_INT(try_open("evildir/", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("evildir", O_PATH), -ELOOP);
	CHECK_INT(try_open("evildir/.", O_PATH | O_NOFOLLOW), -ELOOP);
}

SAFE_TEST(symlink_relative_escape)
{
	CHECK(mk("a") == 0 && mk("a/b") == 0);
	CHECK(ln("../../etc", "a/up") == 0);
	CHECK(ln("../../etc", "up") == 0);
	CHECK(ln("../../../etc/passwd", "a/b/pw") == 0);
	CHECK_INT(try_open("a/up", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("a/up/passwd", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("up/passwd", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("a/b/pw", O_RDONLY), -ELOOP);
}

SAFE_TEST(symlink_intermediate)
{
	CHECK(mk("real") == 0 && put("real/f", "x") == 0);
	CHECK(ln("real", "link") == 0);
	CHECK_INT(try_open("real/f", O_RDONLY), 0);
	CHECK_INT(try_open("link/f", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("link/f", O_PATH | O_NOFOLLOW), -ELOOP);
	CHECK_INT(try_open("link/new", O_CREAT | O_WRONLY), -ELOOP);
	CHECK_INT(try_open("link", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("link/", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("link/.", O_RDONLY), -ELOOP);
	CHECK_INT(faccessat(T.rootfd, "real/new", F_OK, 0), -1);
}

SAFE_TEST(symlink_loop)
{
	CHECK(ln("b", "a") == 0 && ln("a", "b") == 0);
	CHECK(ln("self", "self") == 0);
	CHECK_INT(try_open("a", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("a/x", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("self", O_RDONLY), -ELOOP);
	CHECK_INT(try_open("self/self/self", O_RDONLY | O_DIRECTORY), -ELOOP);
}

SAFE_TEST(opath_nofollow_link)
{
	struct stat st;
	char buf[64];
	ssize_t n;
	int fd;

	CHECK(mk("sub") == 0 && ln("/etc/passwd", "sub/ln") == 0);
	CHECK(ln("sub", "sublink") == 0);
	fd = safe_openat(T.rootfd, "sub/ln", O_PATH | O_NOFOLLOW, 0);
	CHECK(fd >= 0);
	CHECK(fstat(fd, &st) == 0);
	n = readlinkat(fd, "", buf, sizeof(buf) - 1);
	close(fd);
	CHECK(S_ISLNK(st.st_mode));
	CHECK_INT(n, strlen("/etc/passwd"));
	buf[n] = '\0';
	CHECK_STR(buf, "/etc/passwd");
	/* Only the last component may be a link, and only with both flags. */
	CHECK_INT(try_open("sublink/ln", O_PATH | O_NOFOLLOW), -ELOOP);
	CHECK_INT(try_open("sub/ln", O_PATH), -ELOOP);
	CHECK_INT(try_open("sub/ln", O_RDONLY | O_NOFOLLOW), -ELOOP);
	CHECK_INT(try_open("sub/ln/", O_PATH | O_NOFOLLOW), -ELOOP);
	/* Not a link: an ordinary O_PATH fd. */
	fd = safe_openat(T.rootfd, "sub", O_PATH | O_NOFOLLOW, 0);
	CHECK(fd >= 0);
	CHECK(same_file(fd, T.rootfd, "sub"));
	close(fd);
}

SAFE_TEST(create_beneath)
{
	char target[128];
	struct stat st;
	int fd;

	CHECK(mk("sub") == 0);
	fd = safe_openat(T.rootfd, "sub/new", O_CREAT | O_EXCL | O_WRONLY,
			 0600);
	CHECK(fd >= 0);
	CHECK_INT(write(fd, "abc", 3), 3);
	close(fd);
	CHECK(fstatat(T.rootfd, "sub/new", &st, AT_SYMLINK_NOFOLLOW) == 0);
	CHECK(S_ISREG(st.st_mode));
	CHECK_INT(st.st_size, 3);
	CHECK_INT(st.st_mode & 0777, 0600);
	CHECK_INT(try_open("sub/new", O_CREAT | O_EXCL | O_WRONLY), -EEXIST);
	CHECK_INT(try_open("nodir/new", O_CREAT | O_WRONLY), -ENOENT);
	CHECK_INT(try_open("sub/", O_CREAT | O_WRONLY), -EISDIR);
	CHECK_INT(try_open("sub/x/", O_CREAT | O_WRONLY), -EISDIR);
	/* A dangling link must not create its target outside. */
	strcat(strcpy(target, T.out), "/created");
	CHECK(ln(target, "dangle") == 0);
	CHECK_INT(try_open("dangle", O_CREAT | O_WRONLY), -ELOOP);
	CHECK_INT(access(target, F_OK), -1);
}

SAFE_TEST(name_too_long)
{
	char name[NAME_MAX + 2], path[PATH_MAX + 8];

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	CHECK_INT(try_open(name, O_RDONLY), -ENAMETOOLONG);
	CHECK(mk("a") == 0);
	snprintf(path, sizeof(path), "a/%s/x", name);
	CHECK_INT(try_open(path, O_RDONLY), -ENAMETOOLONG);
	memset(path, 'a', sizeof(path));
	for (size_t i = 1; i < sizeof(path); i += 2)
		path[i] = '/';
	path[sizeof(path) - 1] = '\0';
	CHECK_INT(try_open(path, O_RDONLY), -ENAMETOOLONG);
}

/*
 * The race: "d" (a real directory holding "secretfile") and "x" (a
 * symlink to a directory outside, holding its own "secretfile") swap
 * places atomically, over and over, while we open "d/secretfile". Each
 * open may fail, but must never yield the outside file.
 */
static int race_stop, race_errno;
static long race_swaps;

static void *race_swapper(void *arg)
{
	while (!__atomic_load_n(&race_stop, __ATOMIC_RELAXED)) {
		if (renameat2(T.rootfd, "d", T.rootfd, "x", RENAME_EXCHANGE)) {
			__atomic_store_n(&race_errno, errno, __ATOMIC_RELAXED);
			break;
		}
		__atomic_add_fetch(&race_swaps, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Opens "d/secretfile" n times: 0, or -EIO once an open escaped or found
 * a third file, or the first unexpected error. */
static int race_opens(int n, dev_t in_dev, ino_t in_ino, dev_t out_dev,
		      ino_t out_ino, int *opened)
{
	struct stat st;
	int i, fd, ret = 0;

	for (i = 0; i < n && !ret; i++) {
		fd = safe_openat(T.rootfd, "d/secretfile", O_RDONLY, 0);
		if (fd == -ELOOP || fd == -ENOTDIR || fd == -ENOENT)
			continue;
		if (fd < 0)
			return fd;
		if (fstat(fd, &st) < 0)
			ret = -errno;
		else if (st.st_dev == out_dev && st.st_ino == out_ino)
			ret = -EIO;
		else if (st.st_dev != in_dev || st.st_ino != in_ino)
			ret = -EIO;
		(*opened)++;
		close(fd);
	}
	return ret;
}

SAFE_TEST(rename_race)
{
	char outside[128];
	struct stat in_st, out_st;
	pthread_t thr;
	int ret, opened = 0;

	CHECK(mk("d") == 0 && put("d/secretfile", "inside") == 0);
	CHECK(put_at(AT_FDCWD, strcat(strcpy(outside, T.out), "/secretfile"),
		     "outside") == 0);
	CHECK(ln(T.out, "x") == 0);
	CHECK(fstatat(T.rootfd, "d/secretfile", &in_st, 0) == 0);
	CHECK(stat(outside, &out_st) == 0);
	race_stop = race_errno = 0;
	race_swaps = 0;
	CHECK(pthread_create(&thr, NULL, race_swapper, NULL) == 0);
	while (!__atomic_load_n(&race_swaps, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&race_errno, __ATOMIC_RELAXED))
		;
	ret = race_opens(2000, in_st.st_dev, in_st.st_ino, out_st.st_dev,
			 out_st.st_ino, &opened);
	__atomic_store_n(&race_stop, 1, __ATOMIC_RELAXED);
	pthread_join(thr, NULL);
	CHECK_INT(race_errno, 0);
	CHECK_INT(ret, 0);
	if (getenv("SAFEPATH_RACE_VERBOSE"))
		fprintf(stderr, "  %ld swaps, %d of 2000 opens succeeded\n",
			race_swaps, opened);
}

TEST(name_check)
{
	char name[NAME_MAX + 1];

	memset(name, 'x', sizeof(name));
	CHECK_INT(safe_name_check("a", 1), 0);
	CHECK_INT(safe_name_check("a b", 3), 0);
	CHECK_INT(safe_name_check("...", 3), 0);
	CHECK_INT(safe_name_check(".a", 2), 0);
	CHECK_INT(safe_name_check(name, NAME_MAX), 0);
	CHECK_INT(safe_name_check(name, NAME_MAX + 1), -EINVAL);
	CHECK_INT(safe_name_check("", 0), -EINVAL);
	CHECK_INT(safe_name_check(".", 1), -EINVAL);
	CHECK_INT(safe_name_check("..", 2), -EINVAL);
	CHECK_INT(safe_name_check("a/b", 3), -EINVAL);
	CHECK_INT(safe_name_check("/", 1), -EINVAL);
	CHECK_INT(safe_name_check("a\0b", 3), -EINVAL);
	CHECK_INT(safe_name_check("a\0", 2), -EINVAL);
	/* Only len bytes count: "ab/" with len 2 is "ab". */
	CHECK_INT(safe_name_check("ab/", 2), 0);
}
