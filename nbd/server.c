/*
 * The NBD server (see server.h; the protocol is NetworkBlockDevice/nbd
 * doc/proto.md, "Fixed newstyle negotiation" and "Transmission").
 *
 * One state machine, two drivers. hs_message() takes one whole
 * negotiation message and appends the answer; req_run() runs one
 * request and hands its reply to a sink. nbd_serve() drives them from a
 * descriptor with blocking reads (and worker threads for requests);
 * nbd_session_feed() from bytes in memory, for tests and the fuzzer.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "nbd/proto.h"
#include "nbd/server.h"

/* Input: room for the largest option; requests are read in small
 * gulps so that a write's payload goes straight to its own buffer. */
#define IN_BUF_SIZE (80u << 10)
#define IN_GULP (16u << 10)
/* Payload buffers kept for reuse per session (see struct pool). */
#define POOL_MAX 32
#define POOL_BYTES (32u << 20)
#define ZERO_CHUNK (1u << 20)

struct nbd_export {
	int fd;
	int is_blk;
	int read_only;
	uint32_t min_block;
	int refs;
	char *name;
};

enum phase { PH_FLAGS, PH_OPTIONS, PH_TRANSMISSION, PH_DONE };

/* Payload buffers, reused: a fresh large malloc per request costs page
 * faults and mmap/munmap (and the mm lock every worker then fights for). */
struct pool {
	pthread_mutex_t lock;
	void *buf[POOL_MAX];
	size_t size[POOL_MAX];
	int n;
	size_t held;
};

/* What negotiation agreed; read-only once transmission starts. */
struct conn {
	struct nbd_export *ex;
	enum phase phase;
	uint32_t cflags;
	int structured;
	int meta_alloc; /* base:allocation selected, as context id 1 */
	unsigned noptions;
	uint64_t size;
	uint16_t tflags;
	struct pool *pool; /* NULL: plain malloc */
};

#define META_ALLOC_ID 1

/* Where replies go: a socket under a lock, or a buffer. */
struct sink {
	int (*send)(struct sink *k, const struct iovec *iov, int n);
	/* Optional: a structured read reply straight from the file (see
	 * fd_send_read). */
	int (*send_read)(struct sink *k, const struct nbd_request *r, int fd);
};

/* Reads this large go out with sendfile: the kernel hands the page
 * cache's pages to the socket instead of two copies through a buffer. */
#define SENDFILE_MIN (64u << 10)

struct req {
	struct nbd_request r;
	uint8_t *data; /* a write's payload */
	size_t cap;    /* data's size */
	size_t cost;   /* bytes counted against the in-flight limit */
};

/* A buffer of at least len bytes; *cap gets its size. */
static void *pool_get(struct pool *p, size_t len, size_t *cap)
{
	int best = -1;
	void *b;

	if (p) {
		pthread_mutex_lock(&p->lock);
		for (int i = 0; i < p->n; i++)
			if (p->size[i] >= len && (best < 0 || p->size[i] < p->size[best]))
				best = i;
		if (best >= 0) {
			b = p->buf[best];
			*cap = p->size[best];
			p->held -= *cap;
			p->n--;
			p->buf[best] = p->buf[p->n];
			p->size[best] = p->size[p->n];
			pthread_mutex_unlock(&p->lock);
			return b;
		}
		pthread_mutex_unlock(&p->lock);
		/* Round up, so that a buffer fits the next request too. */
		len = (len + 65535) & ~(size_t)65535;
	}
	*cap = len;
	return malloc(len ? len : 1);
}

static void pool_put(struct pool *p, void *b, size_t cap)
{
	if (!b)
		return;
	if (p) {
		pthread_mutex_lock(&p->lock);
		if (p->n < POOL_MAX && p->held + cap <= POOL_BYTES) {
			p->buf[p->n] = b;
			p->size[p->n++] = cap;
			p->held += cap;
			b = NULL;
		}
		pthread_mutex_unlock(&p->lock);
	}
	free(b);
}

static void pool_drain(struct pool *p)
{
	while (p->n)
		free(p->buf[--p->n]);
	p->held = 0;
}

/* --- the export ---------------------------------------------------- */

struct nbd_export *nbd_export_new(int fd, const char *name, int read_only, int *err)
{
	struct nbd_export *ex = calloc(1, sizeof(*ex));
	struct stat st;
	int e;

	if (!ex || !(ex->name = strdup(name ? name : ""))) {
		e = -ENOMEM;
		goto fail;
	}
	if (strlen(ex->name) > NBD_MAX_STRING) {
		e = -ENAMETOOLONG;
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		e = -errno;
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		int ssz = 512;
		ex->is_blk = 1;
		if (ioctl(fd, BLKSSZGET, &ssz) < 0 || ssz < 512 || ssz > 65536 ||
		    (ssz & (ssz - 1)))
			ssz = 512;
		ex->min_block = (uint32_t)ssz;
	} else if (S_ISREG(st.st_mode)) {
		ex->min_block = 1;
	} else {
		e = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto fail;
	}
	ex->fd = fd;
	ex->read_only = read_only;
	ex->refs = 1;
	return ex;
fail:
	close(fd);
	if (ex)
		free(ex->name);
	free(ex);
	*err = e;
	return NULL;
}

struct nbd_export *nbd_export_open(const char *path, const char *name, int *read_only,
				   int *err)
{
	/* O_NONBLOCK: a FIFO must not hang the open (it is refused below). */
	int flags = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, fd;

	fd = open(path, flags | (*read_only ? O_RDONLY : O_RDWR));
	if (fd < 0 && !*read_only && (errno == EACCES || errno == EROFS || errno == EPERM)) {
		fd = open(path, flags | O_RDONLY);
		if (fd >= 0)
			*read_only = 1;
	}
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return nbd_export_new(fd, name, *read_only, err);
}

void nbd_export_ref(struct nbd_export *ex)
{
	__atomic_add_fetch(&ex->refs, 1, __ATOMIC_RELAXED);
}

void nbd_export_unref(struct nbd_export *ex)
{
	if (ex && __atomic_sub_fetch(&ex->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		close(ex->fd);
		free(ex->name);
		free(ex);
	}
}

static uint64_t export_size(const struct nbd_export *ex)
{
	struct stat st;
	uint64_t size = 0;

	if (ex->is_blk)
		return ioctl(ex->fd, BLKGETSIZE64, &size) < 0 ? 0 : size;
	return fstat(ex->fd, &st) < 0 ? 0 : (uint64_t)st.st_size;
}

uint64_t nbd_export_size(const struct nbd_export *ex)
{
	return export_size(ex);
}

int nbd_export_read_only(const struct nbd_export *ex)
{
	return ex->read_only;
}

uint32_t nbd_export_min_block(const struct nbd_export *ex)
{
	return ex->min_block;
}

int nbd_export_fd(const struct nbd_export *ex)
{
	return ex->fd;
}

const char *nbd_export_name(const struct nbd_export *ex)
{
	return ex->name;
}

void nbd_export_set_min_block(struct nbd_export *ex, uint32_t min_block)
{
	if (min_block && min_block <= 65536 && !(min_block & (min_block - 1)))
		ex->min_block = min_block;
}

/* --- I/O on the export --------------------------------------------- */

static int errno_to_nbd(int e)
{
	switch (e < 0 ? -e : e) {
	case 0: return 0;
	case EPERM: case EACCES: case EROFS: return NBD_EPERM;
	case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
	case ENOMEM: return NBD_ENOMEM;
	case EINVAL: return NBD_EINVAL;
	case EOVERFLOW: return NBD_EOVERFLOW;
	case ENOTSUP: return NBD_ENOTSUP;
	case ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;
	}
}

/* Reads len bytes at off; what lies past a shrunk file reads as zeros. */
static int ex_pread(const struct nbd_export *ex, uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(ex->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			memset(p, 0, len);
			break;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int ex_pwrite(const struct nbd_export *ex, const uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(ex->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int ex_flush(const struct nbd_export *ex)
{
	return fdatasync(ex->fd) < 0 ? -errno : 0;
}

static int ex_trim(const struct nbd_export *ex, uint64_t off, uint32_t len)
{
	if (!len)
		return 0;
	if (fallocate(ex->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	/* A trim is a hint: a file system that cannot punch holes ignores it. */
	return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : -errno;
}

static const uint8_t zeros[ZERO_CHUNK];

/* Zeroes [off, off+len): a hole when allowed, else allocated zeros;
 * with fast, only by a means quicker than writing (else -ENOTSUP). */
static int ex_zero(const struct nbd_export *ex, uint64_t off, uint32_t len, int may_trim,
		   int fast)
{
	if (!len)
		return 0;
	if (may_trim && fallocate(ex->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  (off_t)off, (off_t)len) == 0)
		return 0;
	if (fallocate(ex->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL && errno != ENODEV)
		return -errno;
	if (ex->is_blk && !((off | len) & 511)) {
		uint64_t range[2] = { off, len };
		if (ioctl(ex->fd, BLKZEROOUT, range) == 0)
			return 0;
	}
	if (fast)
		return -ENOTSUP;
	while (len) {
		uint32_t n = len < ZERO_CHUNK ? len : ZERO_CHUNK;
		int e = ex_pwrite(ex, zeros, n, off);
		if (e < 0)
			return e;
		off += n;
		len -= n;
	}
	return 0;
}

/* base:allocation extents of [off, off+len) (within the export) as
 * (length, flags) pairs into ext; returns how many (at least one). */
static size_t ex_extents(const struct nbd_export *ex, uint64_t off, uint64_t len,
			 size_t max, uint32_t *ext)
{
	uint64_t pos = off, end = off + len;
	size_t n = 0;

	while (pos < end && n < max) {
		uint64_t stop = end;
		uint32_t flags = 0;
		off_t d = ex->is_blk ? (off_t)pos : lseek(ex->fd, (off_t)pos, SEEK_DATA);

		if (d < 0 && errno == ENXIO) {
			flags = NBD_STATE_HOLE | NBD_STATE_ZERO;
		} else if (d < 0) {
			/* Unknown: say allocated, which is always safe. */
		} else if ((uint64_t)d > pos) {
			flags = NBD_STATE_HOLE | NBD_STATE_ZERO;
			stop = (uint64_t)d < end ? (uint64_t)d : end;
		} else if (!ex->is_blk) {
			off_t h = lseek(ex->fd, (off_t)pos, SEEK_HOLE);
			if (h > (off_t)pos && (uint64_t)h < end)
				stop = (uint64_t)h;
		}
		/* Lengths are 32-bit on the wire: split long runs, keeping them
		 * multiples of any block size. */
		if (stop - pos > 0x80000000u)
			stop = pos + 0x80000000u;
		if (n && ext[2 * (n - 1) + 1] == flags &&
		    (uint64_t)ext[2 * (n - 1)] + (stop - pos) <= 0x80000000u) {
			ext[2 * (n - 1)] += (uint32_t)(stop - pos);
		} else {
			ext[2 * n] = (uint32_t)(stop - pos);
			ext[2 * n + 1] = flags;
			n++;
		}
		pos = stop;
	}
	return n;
}

/* --- negotiation --------------------------------------------------- */

static void put_u32(struct buf *out, uint32_t v) { buf_put_u32_be(out, v); }

static void opt_reply(struct buf *out, uint32_t opt, uint32_t type, const void *data,
		      size_t len)
{
	buf_put_u64_be(out, NBD_REP_MAGIC);
	put_u32(out, opt);
	put_u32(out, type);
	put_u32(out, (uint32_t)len);
	buf_put(out, data, len);
}

static void opt_error(struct buf *out, uint32_t opt, uint32_t type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void opt_error(struct buf *out, uint32_t opt, uint32_t type, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	opt_reply(out, opt, type, msg, (size_t)n);
}

static uint16_t transmission_flags(const struct conn *c)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
		     NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;

	if (c->ex->read_only)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	if (c->structured)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

static int name_matches(const struct conn *c, const uint8_t *name, size_t len)
{
	return len == 0 || (len == strlen(c->ex->name) && !memcmp(name, c->ex->name, len));
}

static void info_reply(struct buf *out, uint32_t opt, uint16_t type, const void *p,
		       size_t len)
{
	uint8_t hdr[2];
	nbd_put_be16(hdr, type);
	buf_put_u64_be(out, NBD_REP_MAGIC);
	put_u32(out, opt);
	put_u32(out, NBD_REP_INFO);
	put_u32(out, (uint32_t)(2 + len));
	buf_put(out, hdr, 2);
	buf_put(out, p, len);
}

/* NBD_OPT_INFO and NBD_OPT_GO: 0, or 1 when transmission begins. */
static int opt_info_go(struct conn *c, uint32_t opt, struct rd *r, struct buf *out)
{
	const uint8_t *name;
	uint32_t namelen;
	uint16_t nreq, req;
	int want_name = 0, want_desc = 0;
	uint8_t p[14];

	if (rd_u32_be(r, &namelen) < 0 || namelen > NBD_MAX_STRING ||
	    rd_bytes(r, &name, namelen) < 0 || rd_u16_be(r, &nreq) < 0 ||
	    rd_left(r) != 2u * nreq) {
		opt_error(out, opt, NBD_REP_ERR_INVALID, "malformed %s request",
			  opt == NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO");
		return 0;
	}
	while (nreq--) {
		rd_u16_be(r, &req);
		want_name |= req == NBD_INFO_NAME;
		want_desc |= req == NBD_INFO_DESCRIPTION;
	}
	if (!name_matches(c, name, namelen)) {
		opt_error(out, opt, NBD_REP_ERR_UNKNOWN, "no export named '%.*s' here (try '%s')",
			  (int)(namelen > 64 ? 64 : namelen), (const char *)name, c->ex->name);
		return 0;
	}
	c->size = export_size(c->ex);
	c->tflags = transmission_flags(c);
	nbd_put_be64(p, c->size);
	nbd_put_be16(p + 8, c->tflags);
	info_reply(out, opt, NBD_INFO_EXPORT, p, 10);
	put_be32(p, c->ex->min_block);
	put_be32(p + 4, c->ex->min_block > 4096 ? c->ex->min_block : 4096);
	put_be32(p + 8, NBD_MAX_PAYLOAD);
	info_reply(out, opt, NBD_INFO_BLOCK_SIZE, p, 12);
	if (want_name)
		info_reply(out, opt, NBD_INFO_NAME, c->ex->name, strlen(c->ex->name));
	(void)want_desc; /* no description to give */
	opt_reply(out, opt, NBD_REP_ACK, NULL, 0);
	if (opt == NBD_OPT_GO) {
		c->phase = PH_TRANSMISSION;
		return 1;
	}
	return 0;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
static void opt_meta(struct conn *c, uint32_t opt, struct rd *r, struct buf *out)
{
	const uint8_t *name, *q;
	uint32_t namelen, nq, qlen;
	int set = opt == NBD_OPT_SET_META_CONTEXT, found = 0;
	static const char alloc[] = NBD_META_BASE_ALLOCATION;

	if (set)
		c->meta_alloc = 0; /* replaced, even when this fails */
	if (!c->structured) {
		opt_error(out, opt, NBD_REP_ERR_INVALID,
			  "negotiate structured replies before metadata contexts");
		return;
	}
	if (rd_u32_be(r, &namelen) < 0 || namelen > NBD_MAX_STRING ||
	    rd_bytes(r, &name, namelen) < 0 || rd_u32_be(r, &nq) < 0) {
		opt_error(out, opt, NBD_REP_ERR_INVALID, "malformed metadata context request");
		return;
	}
	if (nq > 128) {
		opt_error(out, opt, NBD_REP_ERR_TOO_BIG, "too many queries");
		return;
	}
	/* Check the whole request before answering any of it. */
	struct rd chk = *r;
	for (uint32_t i = 0; i < nq; i++) {
		if (rd_u32_be(&chk, &qlen) < 0 || qlen > NBD_MAX_STRING ||
		    rd_bytes(&chk, &q, qlen) < 0) {
			opt_error(out, opt, NBD_REP_ERR_INVALID, "malformed metadata query");
			return;
		}
	}
	if (rd_left(&chk)) {
		opt_error(out, opt, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
		return;
	}
	if (!name_matches(c, name, namelen)) {
		opt_error(out, opt, NBD_REP_ERR_UNKNOWN, "no such export");
		return;
	}
	for (uint32_t i = 0; i < nq; i++) {
		rd_u32_be(r, &qlen);
		rd_bytes(r, &q, qlen);
		if (qlen == sizeof(alloc) - 1 && !memcmp(q, alloc, qlen))
			found = 1;
		else if (!set && qlen == 5 && !memcmp(q, "base:", 5))
			found = 1; /* the namespace's wildcard, when listing */
	}
	if (!set && nq == 0)
		found = 1;
	if (found) {
		uint8_t p[4 + sizeof(alloc) - 1];
		put_be32(p, set ? META_ALLOC_ID : 0);
		memcpy(p + 4, alloc, sizeof(alloc) - 1);
		opt_reply(out, opt, NBD_REP_META_CONTEXT, p, sizeof(p));
		if (set)
			c->meta_alloc = 1;
	}
	opt_reply(out, opt, NBD_REP_ACK, NULL, 0);
}

static void greeting(struct buf *out)
{
	buf_put_u64_be(out, NBD_MAGIC);
	buf_put_u64_be(out, NBD_IHAVEOPT);
	buf_put_u16_be(out, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

/*
 * Takes one whole negotiation message from p[0..n): returns the bytes it
 * used (the answer appended to out), 0 if more are needed, or -errno for
 * a hard disconnect. c->phase tells what comes next.
 */
static ssize_t hs_message(struct conn *c, const uint8_t *p, size_t n, struct buf *out)
{
	uint32_t opt, len;
	struct rd r;

	if (c->phase == PH_FLAGS) {
		if (n < 4)
			return 0;
		c->cflags = get_be32(p);
		if (c->cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
			log_info("nbd: unknown client flags %#x; closing", c->cflags);
			return -EPROTO;
		}
		c->phase = PH_OPTIONS;
		return 4;
	}
	if (n < NBD_OPT_HEADER_SIZE)
		return 0;
	if (nbd_get_be64(p) != NBD_IHAVEOPT) {
		log_info("nbd: an option without its magic; closing");
		return -EPROTO;
	}
	opt = get_be32(p + 8);
	len = get_be32(p + 12);
	if (len > NBD_SRV_MAX_OPTION_LEN) {
		log_info("nbd: option %u of %u bytes; closing", opt, len);
		return -EMSGSIZE;
	}
	if (n < NBD_OPT_HEADER_SIZE + (size_t)len)
		return 0;
	if (++c->noptions > NBD_SRV_MAX_OPTIONS) {
		log_info("nbd: more than %u options; closing", NBD_SRV_MAX_OPTIONS);
		return -EPROTO;
	}
	rd_init(&r, p + NBD_OPT_HEADER_SIZE, len);
	switch (opt) {
	case NBD_OPT_EXPORT_NAME: {
		uint8_t info[10];
		if (!name_matches(c, r.p, len)) {
			/* This option has no way to say no but hanging up. */
			log_info("nbd: a client asked for an unknown export; closing");
			return -ENOENT;
		}
		c->size = export_size(c->ex);
		c->tflags = transmission_flags(c);
		nbd_put_be64(info, c->size);
		nbd_put_be16(info + 8, c->tflags);
		buf_put(out, info, sizeof(info));
		if (!(c->cflags & NBD_FLAG_C_NO_ZEROES))
			buf_put(out, zeros, 124);
		c->phase = PH_TRANSMISSION;
		break;
	}
	case NBD_OPT_ABORT:
		opt_reply(out, opt, NBD_REP_ACK, NULL, 0);
		c->phase = PH_DONE;
		break;
	case NBD_OPT_LIST: {
		size_t nl = strlen(c->ex->name);
		uint8_t hdr[4];
		if (len) {
			opt_error(out, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
			break;
		}
		put_be32(hdr, (uint32_t)nl);
		buf_put_u64_be(out, NBD_REP_MAGIC);
		put_u32(out, opt);
		put_u32(out, NBD_REP_SERVER);
		put_u32(out, (uint32_t)(4 + nl));
		buf_put(out, hdr, 4);
		buf_put(out, c->ex->name, nl);
		opt_reply(out, opt, NBD_REP_ACK, NULL, 0);
		break;
	}
	case NBD_OPT_STARTTLS:
		opt_error(out, opt, NBD_REP_ERR_POLICY,
			  "no TLS here: metac's own transport authenticates and encrypts");
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		opt_info_go(c, opt, &r, out);
		break;
	case NBD_OPT_STRUCTURED_REPLY:
		if (len)
			opt_error(out, opt, NBD_REP_ERR_INVALID, "takes no data");
		else if (c->structured)
			opt_error(out, opt, NBD_REP_ERR_INVALID, "already negotiated");
		else {
			c->structured = 1;
			opt_reply(out, opt, NBD_REP_ACK, NULL, 0);
		}
		break;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		opt_meta(c, opt, &r, out);
		break;
	default:
		opt_error(out, opt, NBD_REP_ERR_UNSUP, "option %u is not supported", opt);
		break;
	}
	return NBD_OPT_HEADER_SIZE + (ssize_t)len;
}

/* --- transmission -------------------------------------------------- */

static int send_simple(struct sink *k, uint64_t cookie, uint32_t err, const void *data,
		       size_t len)
{
	uint8_t h[NBD_SIMPLE_REPLY_SIZE];
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)data, len } };

	put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
	put_be32(h + 4, err);
	nbd_put_be64(h + 8, cookie);
	return k->send(k, iov, len ? 2 : 1);
}

/* One structured chunk: a fixed part (prefix) then data. */
static int send_chunk(struct sink *k, uint64_t cookie, uint16_t flags, uint16_t type,
		      const void *prefix, size_t plen, const void *data, size_t dlen)
{
	uint8_t h[NBD_CHUNK_HEADER_SIZE];
	struct iovec iov[3] = { { h, sizeof(h) }, { (void *)prefix, plen },
				{ (void *)data, dlen } };

	put_be32(h, NBD_STRUCTURED_REPLY_MAGIC);
	nbd_put_be16(h + 4, flags);
	nbd_put_be16(h + 6, type);
	nbd_put_be64(h + 8, cookie);
	put_be32(h + 16, (uint32_t)(plen + dlen));
	return k->send(k, iov, dlen ? 3 : plen ? 2 : 1);
}

static int reply_error(const struct conn *c, struct sink *k, const struct nbd_request *r,
		       uint32_t err, const char *msg)
{
	uint8_t p[6];
	size_t mlen = strlen(msg);

	if (!c->structured)
		return send_simple(k, r->cookie, err, NULL, 0);
	put_be32(p, err);
	nbd_put_be16(p + 4, (uint16_t)mlen);
	return send_chunk(k, r->cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, p, 6, msg,
			  mlen);
}

/* Whether a request may run: 0, or an NBD error and why. */
static uint32_t req_check(const struct conn *c, const struct nbd_request *r,
			  const char **why)
{
	static const uint16_t allowed[] = {
		[NBD_CMD_READ] = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
		[NBD_CMD_WRITE] = NBD_CMD_FLAG_FUA,
		[NBD_CMD_FLUSH] = NBD_CMD_FLAG_FUA,
		[NBD_CMD_TRIM] = NBD_CMD_FLAG_FUA,
		[NBD_CMD_CACHE] = NBD_CMD_FLAG_FUA,
		[NBD_CMD_WRITE_ZEROES] = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
					 NBD_CMD_FLAG_FAST_ZERO,
		[NBD_CMD_BLOCK_STATUS] = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
	};
	int writes = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
		     r->type == NBD_CMD_WRITE_ZEROES;

	if (r->type >= sizeof(allowed) / sizeof(allowed[0]) || r->type == NBD_CMD_DISC) {
		*why = "unknown command";
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed[r->type]) {
		*why = "a flag this command may not carry";
		return NBD_EINVAL;
	}
	if ((r->flags & NBD_CMD_FLAG_DF) && !c->structured) {
		*why = "DF without structured replies";
		return NBD_EINVAL;
	}
	if (r->type == NBD_CMD_FLUSH)
		return 0;
	if (writes && c->ex->read_only) {
		*why = "the export is read-only";
		return NBD_EPERM;
	}
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
	    r->length > NBD_MAX_PAYLOAD) {
		*why = "larger than the maximum payload";
		return r->type == NBD_CMD_READ && c->structured ? NBD_EOVERFLOW : NBD_EINVAL;
	}
	if (r->offset > c->size || r->length > c->size - r->offset) {
		*why = "beyond the end of the export";
		return writes && r->type != NBD_CMD_TRIM ? NBD_ENOSPC : NBD_EINVAL;
	}
	if (((r->offset | r->length) & (c->ex->min_block - 1)) &&
	    !(r->offset + r->length == c->size && !(r->offset & (c->ex->min_block - 1)))) {
		*why = "not aligned to the minimum block size";
		return NBD_EINVAL;
	}
	if (r->type == NBD_CMD_BLOCK_STATUS && !c->meta_alloc) {
		*why = "no metadata context was negotiated";
		return NBD_EINVAL;
	}
	return 0;
}

/* Runs one request (never DISC) and sends its reply. data is a write's
 * payload. Returns what sending returned: < 0 means the connection is
 * broken. */
static int req_run(const struct conn *c, struct sink *k, const struct nbd_request *r,
		   const uint8_t *data)
{
	const struct nbd_export *ex = c->ex;
	const char *why = NULL;
	uint32_t err = req_check(c, r, &why);
	int e = 0, fua = r->flags & NBD_CMD_FLAG_FUA;

	if (err)
		return reply_error(c, k, r, err, why);
	switch (r->type) {
	case NBD_CMD_READ: {
		uint8_t off[8], *p;
		size_t cap;
		if (!r->length) {
			if (c->structured)
				return send_chunk(k, r->cookie, NBD_REPLY_FLAG_DONE,
						  NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0);
			return send_simple(k, r->cookie, 0, NULL, 0);
		}
		if (k->send_read && c->structured && r->length >= SENDFILE_MIN)
			return k->send_read(k, r, ex->fd);
		if (!(p = pool_get(c->pool, r->length, &cap)))
			return reply_error(c, k, r, NBD_ENOMEM, "out of memory");
		if ((e = ex_pread(ex, p, r->length, r->offset)) < 0) {
			pool_put(c->pool, p, cap);
			return reply_error(c, k, r, errno_to_nbd(e), strerror(-e));
		}
		nbd_put_be64(off, r->offset);
		e = c->structured ? send_chunk(k, r->cookie, NBD_REPLY_FLAG_DONE,
					       NBD_REPLY_TYPE_OFFSET_DATA, off, 8, p, r->length)
				  : send_simple(k, r->cookie, 0, p, r->length);
		pool_put(c->pool, p, cap);
		return e;
	}
	case NBD_CMD_WRITE:
		e = ex_pwrite(ex, data, r->length, r->offset);
		break;
	case NBD_CMD_FLUSH:
		e = ex_flush(ex);
		fua = 0;
		break;
	case NBD_CMD_TRIM:
		e = ex_trim(ex, r->offset, r->length);
		break;
	case NBD_CMD_CACHE:
		posix_fadvise(ex->fd, (off_t)r->offset, (off_t)r->length, POSIX_FADV_WILLNEED);
		fua = 0;
		break;
	case NBD_CMD_WRITE_ZEROES:
		e = ex_zero(ex, r->offset, r->length, !(r->flags & NBD_CMD_FLAG_NO_HOLE),
			    !!(r->flags & NBD_CMD_FLAG_FAST_ZERO));
		break;
	case NBD_CMD_BLOCK_STATUS: {
		size_t max = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : NBD_SRV_MAX_EXTENTS;
		uint32_t *ext = malloc(max * 8), id;
		size_t n;
		if (!ext)
			return reply_error(c, k, r, NBD_ENOMEM, "out of memory");
		n = r->length ? ex_extents(ex, r->offset, r->length, max, ext) : 0;
		if (!n) {
			free(ext);
			return reply_error(c, k, r, NBD_EINVAL, "empty range");
		}
		for (size_t i = 0; i < 2 * n; i++)
			put_be32((uint8_t *)&ext[i], ext[i]);
		put_be32((uint8_t *)&id, META_ALLOC_ID);
		e = send_chunk(k, r->cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
			       &id, 4, ext, n * 8);
		free(ext);
		return e;
	}
	}
	if (e == 0 && fua)
		e = ex_flush(ex);
	if (e < 0)
		return reply_error(c, k, r, errno_to_nbd(e), strerror(-e));
	return send_simple(k, r->cookie, 0, NULL, 0);
}

/* --- sessions over a descriptor ------------------------------------ */

struct session {
	struct conn c;
	int fd;
	struct sink sink;
	pthread_mutex_t wlock; /* one reply at a time on fd */
	int send_failed;
	/* Reading requests: one thread at a time, under rlock. */
	pthread_mutex_t rlock;
	uint8_t *in;
	size_t in_off, in_len;
	int stop; /* DISC, the client gone, or broken framing */
	int err;
	/* Payload bytes of requests being run, bounded (room). */
	pthread_mutex_t lock;
	pthread_cond_t room;
	size_t inflight_bytes;
	pthread_t threads[NBD_SRV_THREADS];
	int nthreads;
	struct pool pool;
};

static int fd_send(struct sink *k, const struct iovec *iov, int n)
{
	struct session *s = (struct session *)((char *)k - offsetof(struct session, sink));
	struct iovec v[4];
	int e;

	memcpy(v, iov, (size_t)n * sizeof(*v));
	pthread_mutex_lock(&s->wlock);
	e = s->send_failed ? -EPIPE : io_writev_all(s->fd, v, n);
	if (e < 0 && !s->send_failed) {
		s->send_failed = 1;
		/* Wake the reader: nobody hears us any more. */
		shutdown(s->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->wlock);
	return e;
}

/* A structured read reply whose data comes from fd by sendfile: a data
 * chunk (not final: the file may fail midway), then NONE, or, if the file
 * failed, zeros to the chunk's end (the protocol wants it whole) and an
 * error chunk. All under the write lock, so chunks do not interleave. */
static int fd_send_read(struct sink *k, const struct nbd_request *r, int fd)
{
	struct session *s = (struct session *)((char *)k - offsetof(struct session, sink));
	uint8_t h[NBD_CHUNK_HEADER_SIZE + 8], t[NBD_CHUNK_HEADER_SIZE + 6];
	struct iovec iov = { h, sizeof(h) };
	off_t off = (off_t)r->offset;
	size_t left = r->length;
	int e, ferr = 0;

	put_be32(h, NBD_STRUCTURED_REPLY_MAGIC);
	nbd_put_be16(h + 4, 0);
	nbd_put_be16(h + 6, NBD_REPLY_TYPE_OFFSET_DATA);
	nbd_put_be64(h + 8, r->cookie);
	put_be32(h + 16, 8 + r->length);
	nbd_put_be64(h + 20, r->offset);
	pthread_mutex_lock(&s->wlock);
	if (s->send_failed) {
		e = -EPIPE;
		goto out;
	}
	if ((e = io_writev_all(s->fd, &iov, 1)) < 0)
		goto out;
	while (left && !ferr) {
		ssize_t n = sendfile(s->fd, fd, &off, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0) {
			left -= (size_t)n;
			continue;
		}
		/* The file ended or failed: which one is ours to find out, as
		 * sendfile's errors mix the socket's and the file's. */
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)) {
			e = -errno;
			goto out;
		}
		ferr = n < 0 ? errno : 0;
		break;
	}
	/* What the file did not give: zeros (past a shrunk file's end they
	 * are the data; after an error, padding). */
	while (left) {
		struct iovec z = { (void *)zeros, left < ZERO_CHUNK ? left : ZERO_CHUNK };
		left -= z.iov_len;
		if ((e = io_writev_all(s->fd, &z, 1)) < 0)
			goto out;
	}
	put_be32(t, NBD_STRUCTURED_REPLY_MAGIC);
	nbd_put_be16(t + 4, NBD_REPLY_FLAG_DONE);
	nbd_put_be16(t + 6, ferr ? NBD_REPLY_TYPE_ERROR : NBD_REPLY_TYPE_NONE);
	nbd_put_be64(t + 8, r->cookie);
	put_be32(t + 16, ferr ? 6 : 0);
	put_be32(t + 20, (uint32_t)errno_to_nbd(ferr));
	nbd_put_be16(t + 24, 0);
	iov = (struct iovec){ t, ferr ? sizeof(t) : NBD_CHUNK_HEADER_SIZE };
	e = io_writev_all(s->fd, &iov, 1);
out:
	if (e < 0 && !s->send_failed) {
		s->send_failed = 1;
		shutdown(s->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->wlock);
	return e;
}

/* Makes n bytes available at s->in + s->in_off, reading as needed; with
 * a deadline (monotonic ms, 0 for none) a silent client times out. */
static int in_fill(struct session *s, size_t n, uint64_t deadline)
{
	while (s->in_len - s->in_off < n) {
		ssize_t r;
		if (s->in_off + n > IN_BUF_SIZE) {
			memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
			s->in_len -= s->in_off;
			s->in_off = 0;
		}
		if (deadline) {
			uint64_t now = clock_mono_ms();
			struct pollfd p = { .fd = s->fd, .events = POLLIN };
			if (now >= deadline)
				return -ETIMEDOUT;
			int pr = poll(&p, 1, (int)(deadline - now));
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr == 0)
				return -ETIMEDOUT;
		}
		size_t want = n - (s->in_len - s->in_off);
		if (want < IN_GULP)
			want = IN_GULP;
		if (want > IN_BUF_SIZE - s->in_len)
			want = IN_BUF_SIZE - s->in_len;
		r = read(s->fd, s->in + s->in_len, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ECONNRESET;
		s->in_len += (size_t)r;
	}
	return 0;
}

/* Fills p with n bytes: first what is buffered, then straight from fd. */
static int in_read(struct session *s, uint8_t *p, size_t n)
{
	size_t have = s->in_len - s->in_off;
	if (have > n)
		have = n;
	memcpy(p, s->in + s->in_off, have);
	s->in_off += have;
	return io_read_all(s->fd, p + have, n - have);
}

static int negotiate(struct session *s)
{
	uint64_t deadline = clock_mono_ms() + NBD_SRV_HANDSHAKE_TIMEOUT_MS;
	struct buf out;
	size_t need = 4;
	int e = 0;

	buf_init(&out);
	greeting(&out);
	while (s->c.phase != PH_TRANSMISSION && s->c.phase != PH_DONE) {
		ssize_t used;
		struct iovec iov = { buf_head(&out), buf_avail(&out) };
		if (buf_avail(&out) && (e = io_writev_all(s->fd, &iov, 1)) < 0)
			break;
		buf_reset(&out);
		if ((e = in_fill(s, need, deadline)) < 0)
			break;
		used = hs_message(&s->c, s->in + s->in_off, s->in_len - s->in_off, &out);
		if (used < 0) {
			e = (int)used;
			break;
		}
		if (used == 0) {
			/* An option header is in: wait for all of its data. */
			need = s->in_len - s->in_off < NBD_OPT_HEADER_SIZE
				       ? NBD_OPT_HEADER_SIZE
				       : NBD_OPT_HEADER_SIZE + get_be32(s->in + s->in_off + 12);
			continue;
		}
		s->in_off += (size_t)used;
		need = s->c.phase == PH_FLAGS ? 4 : NBD_OPT_HEADER_SIZE;
	}
	if (e == 0 && buf_avail(&out)) {
		struct iovec iov = { buf_head(&out), buf_avail(&out) };
		e = io_writev_all(s->fd, &iov, 1);
	}
	buf_free(&out);
	if (e == -ETIMEDOUT)
		log_info("nbd: a client did not finish negotiating in %d s; closing",
			 NBD_SRV_HANDSHAKE_TIMEOUT_MS / 1000);
	return e;
}

/* A request is over: its bytes and buffer go back. */
static void req_done(struct session *s, struct req *q)
{
	pthread_mutex_lock(&s->lock);
	s->inflight_bytes -= q->cost;
	pthread_cond_broadcast(&s->room);
	pthread_mutex_unlock(&s->lock);
	pool_put(&s->pool, q->data, q->cap);
	free(q);
}

/* Reads one request (and a write's payload), holding rlock: 0, 1 for
 * DISC, or -errno. */
static int read_request(struct session *s, struct req **out)
{
	struct nbd_request r;
	struct req *q;
	int e;

	if ((e = in_fill(s, NBD_REQUEST_SIZE, 0)) < 0)
		return e;
	if (nbd_request_decode(s->in + s->in_off, &r) < 0) {
		log_info("nbd: a request without its magic; closing");
		return -EPROTO;
	}
	s->in_off += NBD_REQUEST_SIZE;
	if (r.type == NBD_CMD_DISC)
		return 1;
	if (r.type == NBD_CMD_WRITE && r.length > NBD_MAX_PAYLOAD) {
		log_info("nbd: a write of %u bytes; closing", r.length);
		return -EMSGSIZE;
	}
	if (!(q = calloc(1, sizeof(*q))))
		return -ENOMEM;
	q->r = r;
	if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) && r.length <= NBD_MAX_PAYLOAD)
		q->cost = r.length;
	/* A client can make us hold only so much: wait for room (the
	 * others finish without needing rlock). */
	pthread_mutex_lock(&s->lock);
	while (s->inflight_bytes && s->inflight_bytes + q->cost > NBD_SRV_MAX_INFLIGHT_BYTES)
		pthread_cond_wait(&s->room, &s->lock);
	s->inflight_bytes += q->cost;
	pthread_mutex_unlock(&s->lock);
	if (r.type == NBD_CMD_WRITE && r.length) {
		if (!(q->data = pool_get(&s->pool, r.length, &q->cap)))
			e = -ENOMEM;
		else
			e = in_read(s, q->data, r.length);
		if (e < 0) {
			req_done(s, q);
			return e;
		}
	}
	*out = q;
	return 0;
}

/*
 * Each of a session's threads takes its turn at reading one request,
 * then runs it and replies while another reads the next: no hand-over
 * between threads, and at most NBD_SRV_THREADS requests in flight.
 */
static void *session_thread(void *arg)
{
	struct session *s = arg;

	for (;;) {
		struct req *q = NULL;
		int e;

		pthread_mutex_lock(&s->rlock);
		if (s->stop) {
			pthread_mutex_unlock(&s->rlock);
			break;
		}
		if ((e = read_request(s, &q)) != 0) {
			/* DISC or the client gone: requests already read still
			 * run (the protocol asks that of DISC), then all stop. */
			s->stop = 1;
			if (e < 0 && e != -ECONNRESET)
				s->err = e;
			pthread_mutex_unlock(&s->rlock);
			break;
		}
		pthread_mutex_unlock(&s->rlock);
		req_run(&s->c, &s->sink, &q->r, q->data);
		req_done(s, q);
	}
	return NULL;
}

int nbd_serve(struct nbd_export *ex, int fd)
{
	struct session *s = calloc(1, sizeof(*s));
	int e;

	if (!s || !(s->in = malloc(IN_BUF_SIZE))) {
		free(s);
		close(fd);
		return -ENOMEM;
	}
	s->c.ex = ex;
	s->c.pool = &s->pool;
	s->fd = fd;
	s->sink.send = fd_send;
	s->sink.send_read = fd_send_read;
	pthread_mutex_init(&s->pool.lock, NULL);
	pthread_mutex_init(&s->rlock, NULL);
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->wlock, NULL);
	pthread_cond_init(&s->room, NULL);

	if ((e = negotiate(s)) < 0 || s->c.phase == PH_DONE)
		goto done;
	for (int i = 1; i < NBD_SRV_THREADS; i++)
		if (pthread_create(&s->threads[s->nthreads], NULL, session_thread, s) == 0)
			s->nthreads++;
	session_thread(s);
	for (int i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	e = s->err;
done:
	close(fd);
	pool_drain(&s->pool);
	pthread_mutex_destroy(&s->pool.lock);
	pthread_mutex_destroy(&s->rlock);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->wlock);
	pthread_cond_destroy(&s->room);
	free(s->in);
	free(s);
	return e;
}

struct serve_args {
	struct nbd_export *ex;
	int fd;
};

static void *serve_thread(void *arg)
{
	struct serve_args a = *(struct serve_args *)arg;
	free(arg);
	nbd_serve(a.ex, a.fd);
	nbd_export_unref(a.ex);
	return NULL;
}

int nbd_serve_async(struct nbd_export *ex, int fd)
{
	struct serve_args *a = malloc(sizeof(*a));
	int e;

	if (!a) {
		close(fd);
		return -ENOMEM;
	}
	nbd_export_ref(ex);
	a->ex = ex;
	a->fd = fd;
	if ((e = io_thread_detached(serve_thread, a)) < 0) {
		free(a);
		close(fd);
		nbd_export_unref(ex);
		return e;
	}
	return 0;
}

/* --- without threads, for tests and fuzzing ------------------------ */

struct nbd_session {
	struct conn c;
	struct sink sink;
	struct buf in;
	struct buf *out;
	int greeted;
};

static int buf_send(struct sink *k, const struct iovec *iov, int n)
{
	struct nbd_session *s = (struct nbd_session *)((char *)k -
							offsetof(struct nbd_session, sink));
	for (int i = 0; i < n; i++)
		if (buf_put(s->out, iov[i].iov_base, iov[i].iov_len) < 0)
			return -ENOMEM;
	return 0;
}

struct nbd_session *nbd_session_new(struct nbd_export *ex)
{
	struct nbd_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->c.ex = ex;
	s->sink.send = buf_send;
	buf_init(&s->in);
	return s;
}

int nbd_session_feed(struct nbd_session *s, const uint8_t *p, size_t n, struct buf *out)
{
	if (!s->greeted) {
		greeting(out);
		s->greeted = 1;
	}
	if (s->c.phase == PH_DONE)
		return 1;
	if (buf_put(&s->in, p, n) < 0)
		return -ENOMEM;
	s->out = out;
	for (;;) {
		const uint8_t *h = buf_head(&s->in);
		size_t avail = buf_avail(&s->in), need = NBD_REQUEST_SIZE;
		struct nbd_request r;

		if (s->c.phase != PH_TRANSMISSION) {
			ssize_t used = hs_message(&s->c, h, avail, out);
			if (used < 0)
				return (int)used;
			if (used == 0)
				return 0;
			buf_consume(&s->in, (size_t)used);
			if (s->c.phase == PH_DONE)
				return 1;
			continue;
		}
		if (avail < NBD_REQUEST_SIZE)
			return 0;
		if (nbd_request_decode(h, &r) < 0)
			return -EPROTO;
		if (r.type == NBD_CMD_DISC) {
			s->c.phase = PH_DONE;
			return 1;
		}
		if (r.type == NBD_CMD_WRITE) {
			if (r.length > NBD_MAX_PAYLOAD)
				return -EMSGSIZE;
			need += r.length;
		}
		if (avail < need)
			return 0;
		if (req_run(&s->c, &s->sink, &r, h + NBD_REQUEST_SIZE) < 0)
			return -ENOMEM;
		buf_consume(&s->in, need);
	}
}

void nbd_session_free(struct nbd_session *s)
{
	if (s) {
		buf_free(&s->in);
		free(s);
	}
}
