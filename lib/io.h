/* Blocking I/O on descriptors, for the threads of protocol engines (the
 * event loop never uses these), and starting such threads. */
#ifndef METAC_IO_H
#define METAC_IO_H

#include <stddef.h>
#include <sys/uio.h>

/* All of p, or -errno. */
int io_write_all(int fd, const void *p, size_t n);
/* All of iov[0..n) (the array is used up as it goes), or -errno. */
int io_writev_all(int fd, struct iovec *iov, int n);
/* Exactly n bytes, or -errno; an end before them is -ECONNRESET. */
int io_read_all(int fd, void *p, size_t n);

/* Runs fn(arg) in a detached thread: 0 or -errno. */
int io_thread_detached(void *(*fn)(void *), void *arg);

#endif
