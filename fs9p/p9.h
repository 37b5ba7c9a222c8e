/*
 * 9P2000.L on the wire: message numbers, constants, and a bounds-checked
 * encoder and decoder shared by the server and the client.
 *
 * Every message is size[4] type[1] tag[2] body, little-endian; size
 * counts itself. Strings are len[2] bytes (no NUL); a qid is type[1]
 * version[4] path[8]. Decoding goes through lib/buf.h's struct rd, which
 * fails with -EBADMSG on any short read.
 */
#ifndef METAC_P9_H
#define METAC_P9_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define P9_VERSION "9P2000.L"
#define P9_HDR 7              /* size[4] type[1] tag[2] */
#define P9_IOHDR 24           /* header room in Tread/Twrite/Rread: msize - iounit */
#define P9_NOTAG 0xffff
#define P9_NOFID 0xffffffffu
#define P9_MAXWELEM 16
#define P9_MIN_MSIZE 4096
/* Our largest msize: 1 MiB of data per read or write plus headers. */
#define P9_MAX_MSIZE ((1u << 20) + 4096)

enum p9_type {
	P9_TLERROR = 6, P9_RLERROR,
	P9_TSTATFS = 8, P9_RSTATFS,
	P9_TLOPEN = 12, P9_RLOPEN,
	P9_TLCREATE = 14, P9_RLCREATE,
	P9_TSYMLINK = 16, P9_RSYMLINK,
	P9_TMKNOD = 18, P9_RMKNOD,
	P9_TRENAME = 20, P9_RRENAME,
	P9_TREADLINK = 22, P9_RREADLINK,
	P9_TGETATTR = 24, P9_RGETATTR,
	P9_TSETATTR = 26, P9_RSETATTR,
	P9_TXATTRWALK = 30, P9_RXATTRWALK,
	P9_TXATTRCREATE = 32, P9_RXATTRCREATE,
	P9_TREADDIR = 40, P9_RREADDIR,
	P9_TFSYNC = 50, P9_RFSYNC,
	P9_TLOCK = 52, P9_RLOCK,
	P9_TGETLOCK = 54, P9_RGETLOCK,
	P9_TLINK = 70, P9_RLINK,
	P9_TMKDIR = 72, P9_RMKDIR,
	P9_TRENAMEAT = 74, P9_RRENAMEAT,
	P9_TUNLINKAT = 76, P9_RUNLINKAT,
	P9_TVERSION = 100, P9_RVERSION,
	P9_TAUTH = 102, P9_RAUTH,
	P9_TATTACH = 104, P9_RATTACH,
	P9_TERROR = 106, P9_RERROR,
	P9_TFLUSH = 108, P9_RFLUSH,
	P9_TWALK = 110, P9_RWALK,
	P9_TOPEN = 112, P9_ROPEN,
	P9_TCREATE = 114, P9_RCREATE,
	P9_TREAD = 116, P9_RREAD,
	P9_TWRITE = 118, P9_RWRITE,
	P9_TCLUNK = 120, P9_RCLUNK,
	P9_TREMOVE = 122, P9_RREMOVE,
	P9_TSTAT = 124, P9_RSTAT,
	P9_TWSTAT = 126, P9_RWSTAT,
};

/* qid.type */
#define P9_QTDIR 0x80
#define P9_QTAPPEND 0x40
#define P9_QTEXCL 0x20
#define P9_QTSYMLINK 0x02
#define P9_QTFILE 0x00

/* Tlopen/Tlcreate flags: Linux's generic O_* values, spelled out because
 * some architectures number their own O_* differently. */
#define P9_DOTL_RDONLY 00000000
#define P9_DOTL_WRONLY 00000001
#define P9_DOTL_RDWR 00000002
#define P9_DOTL_NOACCESS 00000003
#define P9_DOTL_CREATE 00000100
#define P9_DOTL_EXCL 00000200
#define P9_DOTL_NOCTTY 00000400
#define P9_DOTL_TRUNC 00001000
#define P9_DOTL_APPEND 00002000
#define P9_DOTL_NONBLOCK 00004000
#define P9_DOTL_DSYNC 00010000
#define P9_DOTL_FASYNC 00020000
#define P9_DOTL_DIRECT 00040000
#define P9_DOTL_LARGEFILE 00100000
#define P9_DOTL_DIRECTORY 00200000
#define P9_DOTL_NOFOLLOW 00400000
#define P9_DOTL_NOATIME 01000000
#define P9_DOTL_CLOEXEC 02000000
#define P9_DOTL_SYNC 04000000

/* Tgetattr request_mask / Rgetattr valid */
#define P9_GETATTR_MODE 0x00000001ull
#define P9_GETATTR_NLINK 0x00000002ull
#define P9_GETATTR_UID 0x00000004ull
#define P9_GETATTR_GID 0x00000008ull
#define P9_GETATTR_RDEV 0x00000010ull
#define P9_GETATTR_ATIME 0x00000020ull
#define P9_GETATTR_MTIME 0x00000040ull
#define P9_GETATTR_CTIME 0x00000080ull
#define P9_GETATTR_INO 0x00000100ull
#define P9_GETATTR_SIZE 0x00000200ull
#define P9_GETATTR_BLOCKS 0x00000400ull
#define P9_GETATTR_BASIC 0x000007ffull
#define P9_GETATTR_BTIME 0x00000800ull
#define P9_GETATTR_GEN 0x00001000ull
#define P9_GETATTR_DATA_VERSION 0x00002000ull
#define P9_GETATTR_ALL 0x00003fffull

/* Tsetattr valid */
#define P9_SETATTR_MODE 0x00000001u
#define P9_SETATTR_UID 0x00000002u
#define P9_SETATTR_GID 0x00000004u
#define P9_SETATTR_SIZE 0x00000008u
#define P9_SETATTR_ATIME 0x00000010u
#define P9_SETATTR_MTIME 0x00000020u
#define P9_SETATTR_CTIME 0x00000040u
#define P9_SETATTR_ATIME_SET 0x00000080u
#define P9_SETATTR_MTIME_SET 0x00000100u

/* Tlock/Tgetlock */
#define P9_LOCK_TYPE_RDLCK 0
#define P9_LOCK_TYPE_WRLCK 1
#define P9_LOCK_TYPE_UNLCK 2
#define P9_LOCK_FLAGS_BLOCK 1
#define P9_LOCK_FLAGS_RECLAIM 2
#define P9_LOCK_SUCCESS 0
#define P9_LOCK_BLOCKED 1
#define P9_LOCK_ERROR 2
#define P9_LOCK_GRACE 3

/* Tunlinkat flags */
#define P9_AT_REMOVEDIR 0x200

struct p9_qid {
	uint8_t type;
	uint32_t version;
	uint64_t path;
};

/* Rgetattr body after valid and qid. */
struct p9_attr {
	uint32_t mode, uid, gid;
	uint64_t nlink, rdev, size, blksize, blocks;
	uint64_t atime_sec, atime_nsec, mtime_sec, mtime_nsec;
	uint64_t ctime_sec, ctime_nsec, btime_sec, btime_nsec;
	uint64_t gen, data_version;
};

/* Tsetattr body after fid. */
struct p9_setattr {
	uint32_t valid, mode, uid, gid;
	uint64_t size, atime_sec, atime_nsec, mtime_sec, mtime_nsec;
};

/* Rstatfs body. */
struct p9_statfs {
	uint32_t type, bsize;
	uint64_t blocks, bfree, bavail, files, ffree, fsid;
	uint32_t namelen;
};

/*
 * Building a message into a struct buf: begin, add fields, end. Failures
 * (out of memory) are sticky and reported by p9_end, which also writes
 * the size. One message at a time per writer.
 */
struct p9_wr {
	struct buf *b;
	size_t start;
	int err;
};

void p9_begin(struct p9_wr *w, struct buf *b, uint8_t type, uint16_t tag);
void p9_u8(struct p9_wr *w, uint8_t v);
void p9_u16(struct p9_wr *w, uint16_t v);
void p9_u32(struct p9_wr *w, uint32_t v);
void p9_u64(struct p9_wr *w, uint64_t v);
void p9_str(struct p9_wr *w, const char *s, size_t len); /* len <= 65535 */
void p9_cstr(struct p9_wr *w, const char *s);
void p9_qid(struct p9_wr *w, const struct p9_qid *q);
void p9_data(struct p9_wr *w, const void *p, size_t n);
/* Room for n bytes written later by the caller (a read's data). */
uint8_t *p9_reserve(struct p9_wr *w, size_t n);
void p9_attr(struct p9_wr *w, const struct p9_attr *a);
void p9_statfs(struct p9_wr *w, const struct p9_statfs *s);
/* Writes the size field; returns 0, -ENOMEM, or -EMSGSIZE past max. */
int p9_end(struct p9_wr *w, uint32_t max);
/* Drops the message under construction. */
void p9_cancel(struct p9_wr *w);

/* An error reply: Rlerror with a Linux errno (positive). */
int p9_put_lerror(struct buf *b, uint16_t tag, int err);

/* Decoding. Strings point into the message (not NUL-terminated). */
int p9_get_hdr(struct rd *r, uint32_t *size, uint8_t *type, uint16_t *tag);
int p9_get_str(struct rd *r, const char **s, uint16_t *len);
/* A string copied out NUL-terminated; -EBADMSG if it has a NUL inside,
 * -ENAMETOOLONG if it does not fit outsz - 1 bytes. */
int p9_get_cstr(struct rd *r, char *out, size_t outsz);
int p9_get_qid(struct rd *r, struct p9_qid *q);
int p9_get_attr(struct rd *r, struct p9_attr *a);
int p9_get_setattr(struct rd *r, struct p9_setattr *s);
int p9_get_statfs(struct rd *r, struct p9_statfs *s);

/* The message type's name, for logs ("Twalk"); "?" when unknown. */
const char *p9_type_name(uint8_t type);

#endif
