/*
 * Containers: what runs in the helper process the compute service starts
 * for each container (`metac compute _container`). The daemon stays out
 * of the new namespaces; the helper makes them, becomes their supervisor
 * and forks the container's pid 1, which sets up the root (mounts,
 * /proc, /sys, /dev, pivot_root), the hostname and the interfaces, then
 * runs the command as its child and reports how it ended.
 *
 * The daemon and the helper talk over a SOCK_SEQPACKET pair, a message
 * each, first byte the kind:
 *   daemon -> helper   the configuration (ctr_config_encode), then
 *                      'G' go (namespaces filled in) or nothing (closed)
 *   helper -> daemon   'N' namespaces made: the daemon may open
 *                          /proc/PID/ns/net and put PID in a cgroup
 *                      'I' pid     the container's pid 1 (or the process
 *                                  joining it), in the daemon's pid space
 *                      'P'         the pty's master (SCM_RIGHTS)
 *                      'R'         the command runs
 *                      'E' text    it could not be set up or started
 *                      'X' code    the command exited
 *                      'S' signal  the command was killed
 */
#ifndef METAC_SVC_CONTAINER_H
#define METAC_SVC_CONTAINER_H

#include <limits.h>
#include <net/if.h>
#include <stdint.h>
#include <sys/types.h>

#define CTR_MAX_ARGS 256
#define CTR_MAX_ENV 256
#define CTR_MAX_MOUNTS 32
#define CTR_MAX_NETS 8
#define CTR_MAX_STR 4096     /* an argument, a variable, a path */
#define CTR_MAX_MSG 65536    /* the encoded configuration */
#define CTR_HOSTNAME_MAX 64

/* Descriptors of the helper: the control socket, then (without a pty)
 * the container's stdin, stdout and stderr. */
#define CTR_FD_CTL 3
#define CTR_FD_STDIO 4

struct ctr_mount {
	char target[PATH_MAX]; /* absolute, inside the container */
	char source[PATH_MAX]; /* a directory of the host */
};

struct ctr_net {
	char name[IFNAMSIZ]; /* made in the namespace by the daemon */
	char cidr[64];       /* may be empty */
	char gateway[64];    /* may be empty */
};

struct ctr_config {
	pid_t join;          /* 0: a new container; else the pid 1 to join */
	char root[PATH_MAX]; /* the host directory that becomes "/" */
	struct ctr_mount mounts[CTR_MAX_MOUNTS];
	size_t nmounts;
	struct ctr_net nets[CTR_MAX_NETS];
	size_t nnets;
	char *args[CTR_MAX_ARGS + 1]; /* NULL-terminated */
	size_t nargs;
	char *env[CTR_MAX_ENV + 1];
	size_t nenv;
	char hostname[CTR_HOSTNAME_MAX + 1];
	uint32_t uid, gid;
	int pty;
	unsigned rows, cols;
};

struct buf;

/* The configuration as one message (for the control socket). */
int ctr_config_encode(const struct ctr_config *c, struct buf *out);
/* Decodes what came from the daemon; strings are allocated (freed with
 * ctr_config_free). -EBADMSG if malformed. */
int ctr_config_decode(const uint8_t *p, size_t n, struct ctr_config *c);
void ctr_config_free(struct ctr_config *c);

/* Whether target is an absolute path without "." or ".." components,
 * empty components or more than PATH_MAX bytes. */
int ctr_target_ok(const char *target);

/* The helper's main: runs until the container ends; daemon is the pid
 * of its parent, the daemon. */
int ctr_helper_main(pid_t daemon);

/* For the agent of a VM (svc/agent.c), which is the container's pid 1
 * itself: the control channel is a virtio port on CTR_FD_CTL (and
 * stdio, or the terminal, ports on CTR_FD_STDIO...). */
void ctr_set_vm(void);
/* Sets up the root, the network and the command, and reaps until it
 * ends (then powers the VM off). */
void ctr_inner(const struct ctr_config *c) __attribute__((noreturn));
/* Ends pid 1: in a VM, powers it off. */
void ctr_end(int status) __attribute__((noreturn));
/* Copies between two descriptors until either ends (never returns);
 * ctr_relay_spawn does it in a child process. */
void ctr_relay(int a, int b) __attribute__((noreturn));
pid_t ctr_relay_spawn(int a, int b);

#endif
