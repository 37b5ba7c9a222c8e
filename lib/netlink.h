/*
 * rtnetlink, spoken directly on the kernel's UAPI (Debian ships no static
 * libmnl): interfaces (create veth pairs and bridges, delete, rename, up
 * and down, MTU, MAC, master, network namespace, list), addresses and
 * routes. Every call is synchronous: a request, then the kernel's answer.
 *
 * Calls return 0 or -errno; when the kernel said why (extended ack),
 * nl_error() has its words, else a description of the errno.
 */
#ifndef METAC_NETLINK_H
#define METAC_NETLINK_H

#include <net/if.h>
#include <stddef.h>
#include <stdint.h>

struct nl;

struct nl_link {
	int index;
	char name[IFNAMSIZ];
	char kind[16]; /* "veth", "bridge", "tun", "vxlan"...; "" if none */
	unsigned flags; /* IFF_* */
	unsigned mtu;
	uint8_t mac[6];
	int has_mac;
	int master; /* ifindex of the bridge it is enslaved to, or 0 */
};

/* A NETLINK_ROUTE socket in the calling thread's network namespace. */
int nl_open(struct nl **out);
void nl_close(struct nl *nl);
/* Why the last call failed: the kernel's message, or strerror's. */
const char *nl_error(const struct nl *nl);

/* Every interface (*out malloc'd, *n entries). */
int nl_link_list(struct nl *nl, struct nl_link **out, size_t *n);
int nl_link_get(struct nl *nl, const char *name, struct nl_link *out); /* -ENODEV */
int nl_link_set_up(struct nl *nl, const char *name, int up);
int nl_link_set_mtu(struct nl *nl, const char *name, unsigned mtu);
int nl_link_set_mac(struct nl *nl, const char *name, const uint8_t mac[6]);
int nl_link_rename(struct nl *nl, const char *name, const char *newname);
/* master NULL: no longer enslaved. */
int nl_link_set_master(struct nl *nl, const char *name, const char *master);
/* Moves the interface into the network namespace nsfd refers to. */
int nl_link_set_netns(struct nl *nl, const char *name, int nsfd);
int nl_link_delete(struct nl *nl, const char *name);
/* A veth pair; peer_nsfd >= 0 puts the peer in that namespace. */
int nl_link_add_veth(struct nl *nl, const char *name, const char *peer, int peer_nsfd);
int nl_link_add_bridge(struct nl *nl, const char *name);

/* cidr: "192.0.2.1/24" or "2001:db8::1/64". */
int nl_addr_add(struct nl *nl, const char *name, const char *cidr);
int nl_addr_del(struct nl *nl, const char *name, const char *cidr);
/* A route to dst ("default" or a cidr) via gw (NULL: on link) out of dev
 * (NULL: wherever gw is). */
int nl_route_add(struct nl *nl, const char *dst, const char *gw, const char *dev);
int nl_route_del(struct nl *nl, const char *dst, const char *gw, const char *dev);

/* Parses "ADDR/PREFIX" (prefix optional: a host route): family AF_INET
 * or AF_INET6, addr 4 or 16 bytes. -EINVAL if malformed. */
int nl_parse_cidr(const char *s, int *family, uint8_t addr[16], unsigned *prefix);

#endif
