/* Node key file: 32 raw bytes of X25519 private key, mode 0600. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/b64url.h"
#include "lib/log.h"
#include "proto/keys.h"

static int read_key(const char *path, uint8_t priv[NODE_KEY_LEN])
{
	struct stat st;
	int r, fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (st.st_mode & 077) {
		log_error("key file %s is accessible by others (mode %03o); "
			  "run: chmod 600 %s", path, st.st_mode & 0777, path);
		r = -EPERM;
		goto out;
	}
	ssize_t n = read(fd, priv, NODE_KEY_LEN);
	if (n != NODE_KEY_LEN || st.st_size != NODE_KEY_LEN) {
		log_error("key file %s is damaged (%lld bytes, expected %d); "
			  "move it away to create a new identity", path,
			  (long long)st.st_size, NODE_KEY_LEN);
		r = -EINVAL;
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}

static int create_key(const char *path, uint8_t priv[NODE_KEY_LEN])
{
	char tmp[PATH_MAX + 8];
	int r = 0, fd;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		log_error("cannot create key file %s: %m", tmp);
		return r;
	}
	randombytes_buf(priv, NODE_KEY_LEN);
	/* Link into place only once the whole key is on disk: a crash leaves
	 * either no key or a complete one. */
	if (write(fd, priv, NODE_KEY_LEN) != NODE_KEY_LEN || fsync(fd) < 0 ||
	    rename(tmp, path) < 0) {
		r = errno ? -errno : -EIO;
		log_error("cannot write key file %s: %m", path);
		unlink(tmp);
	}
	close(fd);
	return r;
}

int node_keys_load(const char *dir, struct node_keys *k)
{
	char path[PATH_MAX];
	int r;

	if (strlen(dir) > PATH_MAX - 16)
		return -ENAMETOOLONG;
	if (sodium_init() < 0)
		return -EIO;
	snprintf(path, sizeof(path), "%s/node.key", dir);
	r = read_key(path, k->priv);
	if (r == -ENOENT) {
		r = create_key(path, k->priv);
		if (r == 0)
			log_info("created a new node key in %s", path);
	} else if (r < 0 && r != -EPERM && r != -EINVAL) {
		log_error("cannot read key file %s: %s", path, strerror(-r));
	}
	if (r < 0)
		return r;
	crypto_scalarmult_curve25519_base(k->pub, k->priv);
	return 0;
}

void node_keys_wipe(struct node_keys *k)
{
	sodium_memzero(k, sizeof(*k));
}

void node_id_format(const uint8_t pub[NODE_KEY_LEN], char *id)
{
	b64url_encode(pub, NODE_KEY_LEN, id, NODE_ID_LEN + 1);
}
