/*
 * The file service and applet: a File capability is one local file (a
 * regular file or a block device) whose bytes can be read over a Stream.
 *   metac file export [--persistent] [--read-only] local:FILE   -> ref
 *   metac file cat REF       the file's bytes on stdout
 * A ref's description is the file's absolute path; File.openAsBlock
 * makes it a BlockDevice (svc/block.c). cat shows progress on
 * stderr when that is a terminal (and stdout is not), and fails unless
 * exactly the file's size arrived.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/cli.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/block.h"
#include "svc/services.h"
#include "wire/conn.h"

struct file_obj {
	struct cap cap;
	struct node *node;
	int read_only;
	char path[REF_MAX_DESC];
};

/* The stream of one read: the file's bytes from offset. */
struct file_stream {
	struct cap cap;
	struct node *node;
	char path[REF_MAX_DESC];
	uint64_t offset;
};

/* Opens a file as exported: a regular file or block device, no link
 * followed at the last name. size gets its size. */
static int file_open(const char *path, int flags, uint64_t *size)
{
	struct stat st;
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK), e;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		e = -errno;
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0) {
			e = -errno;
			goto fail;
		}
	} else {
		e = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto fail;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
fail:
	close(fd);
	return e;
}

static void file_stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct file_stream *)c)->node, c, call, "file stream");
}

static void file_stream_attach(struct cap *c, struct wire_conn *data)
{
	struct file_stream *s = (struct file_stream *)c;
	uint64_t size;
	int fd = file_open(s->path, O_RDONLY, &size), sink = -1, e;

	if (fd < 0) {
		log_warn("file %s: %s", s->path, strerror(-fd));
		goto fail;
	}
	if (lseek(fd, (off_t)s->offset, SEEK_SET) < 0) {
		log_warn("file %s: cannot seek to %llu: %m", s->path,
			 (unsigned long long)s->offset);
		goto fail;
	}
	/* Bytes the reader sends have nowhere to go. */
	if ((sink = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0 ||
	    (e = node_pipe_fds(data, fd, sink, NULL, NULL)) < 0) {
		log_warn("file %s: cannot start the transfer", s->path);
		goto fail;
	}
	return;
fail:
	if (fd >= 0)
		close(fd);
	if (sink >= 0)
		close(sink);
	wire_conn_close(data);
}

static void file_stream_free(struct cap *c)
{
	free(c);
}

static const struct cap_ops file_stream_ops = {
	.name = "file stream",
	.call = file_stream_call,
	.free = file_stream_free,
	.attach = file_stream_attach,
};

static void file_call(struct cap *c, struct rpc_call *call)
{
	struct file_obj *f = (struct file_obj *)c;
	struct file_stream *s;
	struct msg_rd r;
	struct stat st;
	uint64_t size, offset;
	int fd;

	if (call->iface != IFACE_FILE) {
		rpc_return_unknown(call, "file");
		return;
	}
	switch (call->method) {
	case FILE_STAT:
		if ((fd = file_open(f->path, O_RDONLY, &size)) < 0) {
			rpc_return_error(call, fd, "%s: %s", f->path, strerror(-fd));
			return;
		}
		fstat(fd, &st);
		close(fd);
		msg_put_u64(&call->results, size);
		msg_put_u64(&call->results, st.st_mode);
		msg_put_i64(&call->results, st.st_mtim.tv_sec);
		rpc_return(call);
		return;
	case FILE_READ_STREAM:
		msg_rd_init(&r, &call->params);
		if (msg_get_u64(&r, &offset) < 0) {
			rpc_return_error(call, -EINVAL, "malformed read request");
			return;
		}
		if (!(s = calloc(1, sizeof(*s)))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		cap_init(&s->cap, &file_stream_ops);
		s->node = f->node;
		s->offset = offset;
		snprintf(s->path, sizeof(s->path), "%s", f->path);
		rpc_return_cap(call, &s->cap);
		return;
	case FILE_OPEN_AS_BLOCK: {
		struct cap *blk;
		char err[512];
		int ro = 0, e;
		msg_rd_init(&r, &call->params);
		msg_get_bool(&r, &ro); /* absent: as exported */
		if ((e = block_device_new(f->node, f->path, f->read_only || ro, &blk, err,
					  sizeof(err))) < 0) {
			rpc_return_error(call, e, "%s", err);
			return;
		}
		rpc_return_cap(call, blk);
		return;
	}
	}
	rpc_return_unknown(call, "file");
}

static void file_free(struct cap *c)
{
	free(c);
}

static const struct cap_ops file_ops = {
	.name = "file",
	.call = file_call,
	.free = file_free,
};

static int file_restore(struct node *n, const struct ref_record *rec, struct cap **out,
			char *err, size_t errsz)
{
	struct file_obj *f;
	uint64_t size;
	int fd;

	if (rec->description[0] != '/') {
		snprintf(err, errsz, "'%s' is not an absolute path", rec->description);
		return -EINVAL;
	}
	/* Checked at export and restore: the file must be there and be one. */
	if ((fd = file_open(rec->description, O_RDONLY, &size)) < 0) {
		snprintf(err, errsz, "%s: %s", rec->description,
			 fd == -EINVAL ? "not a regular file or block device" : strerror(-fd));
		return fd;
	}
	close(fd);
	if (!(f = calloc(1, sizeof(*f))))
		return -ENOMEM;
	cap_init(&f->cap, &file_ops);
	f->node = n;
	f->read_only = rec->read_only;
	snprintf(f->path, sizeof(f->path), "%s", rec->description);
	*out = &f->cap;
	return 0;
}

static const struct node_service file_service = {
	.name = "file",
	.restore = file_restore,
};

int file_service_register(struct node *n)
{
	return node_register_service(n, &file_service);
}

/* --- applet -------------------------------------------------------- */

static int file_export(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "persistent", no_argument, NULL, 'p' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL, *path;
	char abs[PATH_MAX], ref[REF_MAX_LEN];
	int c, persistent = 0, read_only = 0, r = EXIT_FAIL;
	struct admin a;

	optind = 1;
	while ((c = getopt_long(argc, argv, "pra:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': persistent = 1; break;
		case 'r': read_only = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1 || !(path = cli_local_path(argv[optind])))
		return cli_usage_error(self, "file export takes one local:FILE");
	/* The daemon has its own working directory. */
	if (!realpath(path, abs)) {
		fprintf(stderr, "metac file: %s: %m\n", path);
		return EXIT_FAIL;
	}
	if (admin_open(&a, admin_socket_path(sock)) == 0 &&
	    admin_export(&a, "file", abs, persistent, read_only, ref, sizeof(ref)) == 0) {
		printf("%s\n", ref);
		r = EXIT_OK;
	}
	admin_close(&a);
	return r;
}

struct cat {
	uint64_t size;
	int done, err, eof;
	struct cli_progress progress;
	int out_err;
	char buf[256 << 10];
};

static void cat_done(void *arg, int err)
{
	struct cat *ct = arg;
	ct->done = 1;
	ct->err = err;
}

/* Bytes from the stream's pipe go to stdout (a blocking write: this
 * process does nothing else meanwhile). */
static void cat_readable(struct loop *l, int fd, uint32_t ev, void *arg)
{
	struct cat *ct = arg;
	ssize_t n = read(fd, ct->buf, sizeof(ct->buf));

	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		ct->eof = 1;
		return;
	}
	ct->progress.done += (uint64_t)n;
	for (ssize_t done = 0; done < n && !ct->out_err;) {
		ssize_t w = write(STDOUT_FILENO, ct->buf + done, (size_t)(n - done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			ct->out_err = errno ? errno : EIO;
		else
			done += w;
	}
	cli_progress_show(&ct->progress, 0);
}

static int file_cat(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	struct admin a;
	struct cap *file = NULL, *stream = NULL;
	struct msg params, res;
	struct msg_rd rd;
	struct loop_watch *w = NULL;
	struct cat *ct = calloc(1, sizeof(*ct));
	int c, pfd[2] = { -1, -1 }, devnull = -1, r = EXIT_FAIL;

	if (!ct)
		return EXIT_FAIL;
	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a') {
			sock = optarg;
		} else {
			free(ct);
			return cli_usage_error(self, "unknown option");
		}
	}
	if (optind != argc - 1) {
		free(ct);
		return cli_usage_error(self, "file cat takes one ref");
	}
	msg_init(&res);
	if (admin_open(&a, admin_socket_path(sock)) < 0 ||
	    admin_restore(&a, argv[optind], &file) < 0)
		goto out;
	msg_init(&params);
	if (admin_call(&a, file, IFACE_FILE, FILE_STAT, &params, &res,
		       "cannot read the file's size") < 0)
		goto out;
	msg_rd_init(&rd, &res);
	if (msg_get_u64(&rd, &ct->size) < 0) {
		fprintf(stderr, "metac file: the file's size is missing from the answer\n");
		goto out;
	}
	msg_init(&params);
	msg_put_u64(&params, 0);
	if (admin_call_cap(&a, file, IFACE_FILE, FILE_READ_STREAM, &params, &stream,
			   "cannot open the file") < 0)
		goto out;
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "metac file: %m\n");
		goto out;
	}
	cli_progress_start(&ct->progress, ct->size,
			   isatty(STDERR_FILENO) && !isatty(STDOUT_FILENO));
	if (!(w = loop_watch_fd(a.loop, pfd[0], EPOLLIN, cat_readable, ct)))
		goto out;
	/* Nothing to send: our side of the stream ends at once. */
	admin_stream_pipe(&a, stream, 0, devnull, pfd[1], cat_done, ct);
	devnull = pfd[1] = -1;
	while (!(ct->done && ct->eof) && !a.err && !ct->out_err)
		if (loop_run_once(a.loop, ct->done ? 100 : -1) < 0)
			break;
	cli_progress_show(&ct->progress, 1);
	if (ct->out_err)
		fprintf(stderr, "metac file: cannot write to stdout: %s\n", strerror(ct->out_err));
	else if (!ct->done)
		fprintf(stderr, "metac file: %s\n", a.errmsg);
	else if (ct->err)
		fprintf(stderr, "metac file: the transfer broke off after %llu bytes: %s\n",
			(unsigned long long)ct->progress.done, strerror(-ct->err));
	else if (ct->progress.done != ct->size)
		fprintf(stderr, "metac file: got %llu bytes of %llu: the file changed while "
			"being read\n", (unsigned long long)ct->progress.done,
			(unsigned long long)ct->size);
	else
		r = EXIT_OK;
out:
	if (w)
		loop_watch_del(w);
	for (int i = 0; i < 2; i++)
		if (pfd[i] >= 0)
			close(pfd[i]);
	if (devnull >= 0)
		close(devnull);
	msg_free(&res);
	cap_unref(stream);
	cap_unref(file);
	admin_close(&a);
	free(ct);
	return r;
}

int file_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", file_export },
		{ "cat", file_cat },
		{ 0 }
	};
	return cli_dispatch(applet_find("file"), cmds, argc, argv);
}
