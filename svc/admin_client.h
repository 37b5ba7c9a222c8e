/* The applets' side of the admin socket: connect, get NodeAdmin, call. */
#ifndef METAC_ADMIN_CLIENT_H
#define METAC_ADMIN_CLIENT_H

#include <sys/types.h>

#include "lib/loop.h"
#include "proto/rpc.h"

struct loop;

#define ADMIN_SOCKET_DEFAULT "/run/metac/admin.sock"

struct admin {
	struct loop *loop;
	struct wire_conn *wc;
	struct rpc_conn *rc;
	struct cap *node_admin;
	const char *path;
	int err;
	char errmsg[RPC_MAX_ERRMSG];
};

/* The admin socket path: the option if given, $METAC_ADMIN_SOCKET, else
 * the default. */
const char *admin_socket_path(const char *opt);
/* Connects and bootstraps; prints what to do on failure. */
int admin_open(struct admin *a, const char *path);
void admin_close(struct admin *a);
/* A connected plain socket to the admin socket (for data connections). */
int admin_dial(const char *path, int *fd);
/* Calls NodeAdmin (target NULL) or target and waits for the answer.
 * results (initialised by the caller) receive the results; on failure the
 * error is printed, prefixed by what. */
int admin_call(struct admin *a, struct cap *target, uint16_t iface,
	       uint16_t method, struct msg *params, struct msg *results,
	       const char *what);

/* As admin_call, for a call whose answer is one capability: *out gets a
 * reference. */
int admin_call_cap(struct admin *a, struct cap *target, uint16_t iface,
		   uint16_t method, struct msg *params, struct cap **out,
		   const char *what);
/* Runs a->loop with lfd watched (accept is called when a connection
 * waits) until SIGINT or SIGTERM, or until the daemon's connection fails:
 * 0, or -1 with the reason printed, prefixed by what. */
int admin_serve(struct admin *a, int lfd, loop_fd_fn accept, void *arg, const char *what);
/* As admin_serve, each connection piped through a new data connection of
 * stream (one that takes many, each a session of its own), at most
 * max_conns at once; and, if child > 0, until that child exits (its
 * waitpid status in *status). what prefixes errors and logs. */
int admin_relay_stream(struct admin *a, struct cap *stream, int lfd, int direct,
		       int max_conns, pid_t child, int *status, const char *what);
/* Keeps what the caller holds (a binding) until SIGINT or SIGTERM, or
 * until the daemon's connection fails: 0, or -1 with why printed. */
int admin_hold(struct admin *a, const char *what);
struct applet;
/* For `APPLET export [--persistent] ARG`: describe (NULL: ARG as it is)
 * turns ARG into the ref's description, or returns < 0 for a usage
 * error (usage then says what export takes); the new ref is printed.
 * An EXIT_* code. */
int admin_export_applet(const struct applet *self, int argc, char **argv, const char *service,
			int (*describe)(const char *arg, char *desc, size_t sz), const char *usage);
/* For `APPLET list [--json]`: parses those options, opens the admin
 * socket and calls iface.method of service's administration object;
 * res gets the answer, *json whether it was asked
 * for. EXIT_OK, or EXIT_USAGE/EXIT_FAIL with why printed; the caller
 * closes a either way. */
int admin_list_call(const struct applet *self, int argc, char **argv, const char *service,
		    uint16_t iface, uint16_t method, struct admin *a, struct msg *res, int *json);
/* The administration object of a service of the daemon (NODE_ADMIN_SERVICE);
 * admin_open_service opens the socket (sock: as admin_socket_path) first. */
int admin_service(struct admin *a, const char *service, struct cap **out);
int admin_open_service(struct admin *a, const char *sock, const char *service,
		       struct cap **out);
/* Restores a ref through the daemon. */
int admin_restore(struct admin *a, const char *ref, struct cap **out);
/* Opens the socket (sock: as admin_socket_path) and calls method of
 * service's administration object with one string, arg; an error is
 * printed after what. EXIT_OK or EXIT_FAIL. */
int admin_service_call_str(const char *sock, const char *service, uint16_t method,
			   const char *arg, const char *what);
/* Exports through NodeAdmin; the new ref is written to ref. */
int admin_export(struct admin *a, const char *service, const char *description,
		 int persistent, int read_only, char *ref, size_t refsz);

/*
 * Pipes rfd/wfd (taken over) through a data connection of stream: the
 * daemon says where to open it (through itself, or with direct, straight
 * to a remote stream's node). done(arg, err) runs once the stream ended
 * and its bytes left, or it failed (the reason printed). Asynchronous:
 * the caller runs a->loop.
 */
void admin_stream_pipe(struct admin *a, struct cap *stream, int direct, int rfd,
		       int wfd, void (*done)(void *arg, int err), void *arg);

#endif
