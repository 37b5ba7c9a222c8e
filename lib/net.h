/* Socket addresses and non-blocking sockets. Names resolve through
 * /etc/hosts only: no NSS, so a static binary behaves the same anywhere. */
#ifndef METAC_NET_H
#define METAC_NET_H

#include <sys/socket.h>

/* Dead peers on TCP: noticed within NET_DEAD_PEER_MS (keepalive probes
 * after NET_KEEPALIVE_IDLE_S of silence, NET_KEEPALIVE_COUNT of them
 * NET_KEEPALIVE_INTVL_S apart; or unacknowledged data that long). */
#define NET_KEEPALIVE_IDLE_S 10
#define NET_KEEPALIVE_INTVL_S 5
#define NET_KEEPALIVE_COUNT 3
#define NET_DEAD_PEER_MS 25000

struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/*
 * Parses "unix:PATH", "IPV4[:PORT]", "[IPV6][:PORT]", "NAME[:PORT]" (NAME
 * from /etc/hosts) and ":PORT" or "*:PORT" (any IPv6/IPv4 address).
 * default_port is used when none is given (0: a port is required;
 * NET_ANY_PORT: port 0, any free one to listen on, also as ":0").
 * Returns 0, -EINVAL for bad syntax, -ENOENT for an unknown name.
 */
#define NET_ANY_PORT (-1)
int net_addr_parse(const char *s, int default_port, struct net_addr *a);
/* "1.2.3.4:901", "[::1]:901" or "unix:/path". */
void net_addr_format(const struct net_addr *a, char *out, size_t outsz);
int net_addr_is_loopback(const struct net_addr *a);
int net_addr_port(const struct net_addr *a);

/* Non-blocking, close-on-exec. Listening unix sockets replace a stale
 * socket file. Return an fd or -errno. */
int net_listen(const struct net_addr *a, int backlog);
/* Starts a non-blocking connect; completion shows as EPOLLOUT, then
 * net_connect_result() tells whether it worked. */
int net_connect(const struct net_addr *a);
int net_connect_result(int fd);
/* Accepts one connection, non-blocking and close-on-exec. */
int net_accept(int lfd, struct net_addr *peer);
int net_set_nonblock(int fd);
/* Accepts connections on lfd for ever, each handed to fn as a blocking
 * descriptor (fn owns it): for servers whose sessions run in threads.
 * what names the server in logs. Returns only if waiting fails. */
int net_accept_each(int lfd, void (*fn)(int fd, const struct net_addr *peer, void *arg),
		    void *arg, const char *what);

/* Sends n bytes (at least one) with descriptor fd attached (SCM_RIGHTS)
 * on a unix socket: 0 or -errno. */
int net_send_fd(int sock, const void *p, size_t n, int fd, int flags);

#endif
