/* Streams other services make (svc/stream.c). */
#ifndef METAC_SVC_STREAM_H
#define METAC_SVC_STREAM_H

struct cap;
struct node;

/* A Stream whose one data connection pipes fd (taken over; closed with
 * the stream if no connection came). Later connections are refused: a
 * descriptor's bytes go to one reader. flags as node_pipe_fds_flags;
 * name (static) is for logs. */
struct cap *fd_stream_new(struct node *n, int fd, unsigned flags, const char *name);

#endif
