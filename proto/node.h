/*
 * The node: its keys and database, the peer listener, the admin socket,
 * outbound connections to other nodes, sturdy ref restore and one-time
 * tokens for data connections.
 *
 * Every connection's first record says what it is for:
 *   u8 'R'                   capability RPC (Node, or NodeAdmin on the
 *                            admin socket, as bootstrap)
 *   u8 'D', 16-byte token    a data connection for the Stream the token
 *                            was issued for
 */
#ifndef METAC_NODE_H
#define METAC_NODE_H

#include <stdint.h>

#include "proto/keys.h"
#include "proto/ref.h"
#include "proto/rpc.h"

struct loop;
struct node;
struct wire_conn;

#define NODE_TOKEN_LEN 16
#define NODE_TOKEN_TTL_MS 30000
#define HELLO_RPC 'R'
#define HELLO_DATA 'D'

struct node_config {
	const char *dir;
	const char *listen;       /* ADDR:PORT, NULL for the default */
	const char *admin_socket; /* NULL for DIR-independent default */
	unsigned idle_timeout_s;  /* idle peer sessions end; 0: default */
};

/* A service that sturdy refs can name. restore builds the capability a
 * ref record describes; on failure it returns -errno and says why in err.
 * It also validates a description at export time. */
struct node_service {
	const char *name;
	int (*restore)(struct node *n, const struct ref_record *rec,
		       struct cap **out, char *err, size_t errsz);
	/* The service's own administration object, handed to local
	 * administrators (NODE_ADMIN_SERVICE); NULL if it has none. Returns
	 * a new reference. */
	struct cap *(*admin)(struct node *n);
	/* The node is shutting down (NULL: nothing to do). */
	void (*stop)(struct node *n);
};

int node_new(struct loop *l, const struct node_config *cfg, struct node **out);
void node_free(struct node *n);
int node_register_service(struct node *n, const struct node_service *svc);
struct loop *node_loop(struct node *n);
/* The state directory (keys, database, working files of services). */
const char *node_dir(struct node *n);
/* The administration object of the service called name (a new reference),
 * as NODE_ADMIN_SERVICE gives it; NULL if there is none. */
struct cap *node_service_admin(struct node *n, const char *name);
/* An object whose only state is the node it belongs to (a service's
 * administration object, a launcher): its ops' free must be
 * node_obj_free. NULL if out of memory. */
struct cap *node_obj_new(struct node *n, const struct cap_ops *ops);
struct node *node_obj_node(struct cap *c);
void node_obj_free(struct cap *c);
/* The object a ref of service with this description would restore to,
 * made here without a ref (for services using one another's objects). */
int node_local_object(struct node *n, const char *service, const char *description,
		      int read_only, struct cap **out, char *err, size_t errsz);
struct sqlite3;
struct sqlite3 *node_db(struct node *n);
const struct node_keys *node_keys(struct node *n);
/* The address peers are told to reach this node at. */
const char *node_advertise(struct node *n);

/* A one-time token: the first data connection presenting it is handed to
 * stream's attach (see node_stream_attach). */
int node_token_new(struct node *n, struct cap *stream, uint8_t token[NODE_TOKEN_LEN]);

/* Pipes a data connection to a Stream capability, local or remote. */
void node_stream_attach(struct node *n, struct cap *stream, struct wire_conn *data);

/* Opens a data connection for a stream, local or remote; cb gets it
 * ready for records (its ops to be set by cb), or NULL, -errno and why. */
typedef void (*node_open_fn)(void *arg, struct wire_conn *wc, int err,
			     const char *why);
void node_stream_open(struct node *n, struct cap *stream, node_open_fn cb, void *arg);

/* Stream methods any stream of this node answers the same way:
 * STREAM_CONNECT (a token and where to present it) and STREAM_BIND_TO. */
void node_stream_connect(struct node *n, struct cap *stream, struct rpc_call *call);
void node_stream_bind(struct node *n, struct cap *stream, struct rpc_call *call);
/* Answers a call on a stream of this node: the two methods above, else
 * "no such method" naming objname. */
void node_stream_call(struct node *n, struct cap *stream, struct rpc_call *call,
		      const char *objname);

/* Restores a ref: locally when it names this node, else over a
 * connection to its node. done gets the capability in results (index 0). */
void node_restore(struct node *n, const char *ref, rpc_done_fn done, void *arg);

/* Pipes two open connections' records both ways until either closes. */
void node_pipe(struct wire_conn *a, struct wire_conn *b);
/* Pipes a connection to plain descriptors: bytes read from rfd are sent
 * as records, records received are written to wfd (rfd == wfd for a
 * socket). Takes ownership of the fds; done (may be NULL) runs at the end. */
int node_pipe_fds(struct wire_conn *wc, int rfd, int wfd,
		  void (*done)(void *arg, int err), void *arg);
/* As node_pipe_fds; with NODE_PIPE_NO_SHUTDOWN the far side's end of
 * stream is not passed on to wfd (no shutdown(SHUT_WR)): for a
 * descriptor that outlives one reader, such as a VM's serial port,
 * whose other end gives up on a half-closed socket. */
#define NODE_PIPE_NO_SHUTDOWN 1u
int node_pipe_fds_flags(struct wire_conn *wc, int rfd, int wfd, unsigned flags,
			void (*done)(void *arg, int err), void *arg);
/* Pipes a data connection to one end of a new socket pair and gives the
 * other end (blocking) to a server that runs in threads of its own;
 * sockbuf, if not 0, sizes both ends' socket buffers. On failure the
 * connection is closed and -errno returned. */
int node_pipe_pair(struct wire_conn *data, int sockbuf, int *fd);

#endif
