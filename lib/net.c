/* Address parsing (numeric and /etc/hosts) and non-blocking sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/net.h"

static int parse_port(const char *s, int allow_zero, int *port)
{
	char *end;
	long v;
	if (!*s)
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < !allow_zero || v > 65535)
		return -EINVAL;
	*port = (int)v;
	return 0;
}

static int set_ip(const char *host, int port, struct net_addr *a)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;

	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		a->len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		a->len = sizeof(*v6);
		return 0;
	}
	return -EINVAL;
}

/* First address of NAME in /etc/hosts. */
static int hosts_lookup(const char *name, char *out, size_t outsz)
{
	char line[512];
	int r = -ENOENT;
	FILE *f = fopen("/etc/hosts", "re");
	if (!f)
		return -ENOENT;
	while (r < 0 && fgets(line, sizeof(line), f)) {
		char *save, *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *addr = strtok_r(line, " \t\n", &save);
		for (char *n; addr && (n = strtok_r(NULL, " \t\n", &save));) {
			if (!strcasecmp(n, name) && strlen(addr) < outsz) {
				strcpy(out, addr);
				r = 0;
				break;
			}
		}
	}
	fclose(f);
	return r;
}

static int parse_unix(const char *path, struct net_addr *a)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(un->sun_path))
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, n);
	a->len = offsetof(struct sockaddr_un, sun_path) + n + 1;
	return 0;
}

int net_addr_parse(const char *s, int default_port, struct net_addr *a)
{
	char host[256], resolved[INET6_ADDRSTRLEN];
	const char *port_s = NULL;
	int port = default_port, r;

	if (!strncmp(s, "unix:", 5))
		return parse_unix(s + 5, a);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || (size_t)(close - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, close - s - 1);
		host[close - s - 1] = 0;
		if (close[1] == ':')
			port_s = close + 2;
		else if (close[1])
			return -EINVAL;
	} else {
		const char *colon = strrchr(s, ':');
		size_t n = colon ? (size_t)(colon - s) : strlen(s);
		if (colon && strchr(s, ':') != colon)
			return -EINVAL; /* bare IPv6 needs brackets */
		if (n >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = 0;
		if (colon)
			port_s = colon + 1;
	}
	if (port_s && (r = parse_port(port_s, default_port == NET_ANY_PORT, &port)) < 0)
		return r;
	if (port == NET_ANY_PORT)
		port = 0;
	else if (port == 0 && default_port != NET_ANY_PORT)
		return -EINVAL;
	if (!host[0] || !strcmp(host, "*"))
		strcpy(host, "::");
	if (set_ip(host, port, a) == 0)
		return 0;
	if ((r = hosts_lookup(host, resolved, sizeof(resolved))) < 0)
		return r;
	return set_ip(resolved, port, a);
}

void net_addr_format(const struct net_addr *a, char *out, size_t outsz)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	const struct sockaddr_in *v4 = (const void *)&a->ss;
	const struct sockaddr_in6 *v6 = (const void *)&a->ss;
	const struct sockaddr_un *un = (const void *)&a->ss;

	switch (a->ss.ss_family) {
	case AF_INET:
		inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip));
		snprintf(out, outsz, "%s:%d", ip, ntohs(v4->sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outsz, "[%s]:%d", ip, ntohs(v6->sin6_port));
		break;
	case AF_UNIX:
		snprintf(out, outsz, "unix:%s", un->sun_path[0] ? un->sun_path : "(unnamed)");
		break;
	default:
		snprintf(out, outsz, "(unknown address family %d)", a->ss.ss_family);
	}
}

int net_addr_port(const struct net_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

int net_addr_is_loopback(const struct net_addr *a)
{
	const struct sockaddr_in *v4 = (const void *)&a->ss;
	const struct sockaddr_in6 *v6 = (const void *)&a->ss;

	switch (a->ss.ss_family) {
	case AF_UNIX:
		return 1;
	case AF_INET:
		return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
	case AF_INET6:
		if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
			return 1;
		if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
			return v6->sin6_addr.s6_addr[12] == 127;
		return 0;
	}
	return 0;
}

int net_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* Every TCP connection: no Nagle delay, and a peer that vanishes (its
 * machine died, the path broke) is noticed within NET_DEAD_PEER_MS
 * whether the connection is idle (keepalive probes) or has data in
 * flight (user timeout), not after the kernel's two hours. */
static void tune_tcp(int fd, int family)
{
	int one = 1, idle = NET_KEEPALIVE_IDLE_S, intvl = NET_KEEPALIVE_INTVL_S,
	    cnt = NET_KEEPALIVE_COUNT;
	unsigned user = NET_DEAD_PEER_MS;

	if (family != AF_INET && family != AF_INET6)
		return;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user));
}

int net_listen(const struct net_addr *a, int backlog)
{
	int one = 1, zero = 0, r, family = a->ss.ss_family;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (family == AF_UNIX) {
		const struct sockaddr_un *un = (const void *)&a->ss;
		struct stat st;
		/* Replace a stale socket, never some other kind of file. */
		if (lstat(un->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(un->sun_path);
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, backlog) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int net_connect(const struct net_addr *a)
{
	int r, fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	tune_tcp(fd, a->ss.ss_family);
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 &&
	    errno != EINPROGRESS) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int net_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

int net_accept(int lfd, struct net_addr *peer)
{
	struct net_addr tmp;
	struct net_addr *p = peer ? peer : &tmp;
	p->len = sizeof(p->ss);
	int fd = accept4(lfd, (struct sockaddr *)&p->ss, &p->len,
			 SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	tune_tcp(fd, p->ss.ss_family);
	return fd;
}

int net_accept_each(int lfd, void (*fn)(int fd, const struct net_addr *peer, void *arg),
		    void *arg, const char *what)
{
	struct net_addr peer;

	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			return -errno;
		int fd = net_accept(lfd, &peer);
		if (fd >= 0) {
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
			fn(fd, &peer, arg);
		} else if (fd != -EAGAIN && fd != -EINTR && fd != -ECONNABORTED) {
			log_warn("%s: accept: %s", what, strerror(-fd));
		}
	}
}

int net_send_fd(int sock, const void *p, size_t n, int fd, int flags)
{
	char ctrl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { (void *)p, n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
			     .msg_controllen = sizeof(ctrl) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	ssize_t r;

	memset(ctrl, 0, sizeof(ctrl));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	r = sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
	if (r < 0)
		return -errno;
	return r == (ssize_t)n ? 0 : -EIO;
}
