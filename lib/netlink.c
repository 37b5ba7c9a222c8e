/*
 * rtnetlink requests (see netlink.h; the messages are rtnetlink(7) and
 * the kernel's include/uapi/linux/{rtnetlink,if_link,if_addr,veth}.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/netlink.h"

#define NL_REQ_MAX 4096
#define NL_RECV_MAX (64u << 10)

struct nl {
	int fd;
	uint32_t seq;
	char err[256];
	uint8_t buf[NL_RECV_MAX];
};

/* A request being built: header, family header, attributes. */
struct req {
	union {
		struct nlmsghdr h;
		uint8_t b[NL_REQ_MAX];
	};
	int overflow;
};

static void *req_init(struct req *r, uint16_t type, uint16_t flags, size_t fam_len)
{
	memset(r, 0, sizeof(*r));
	r->h.nlmsg_len = (uint32_t)NLMSG_LENGTH(fam_len);
	r->h.nlmsg_type = type;
	r->h.nlmsg_flags = NLM_F_REQUEST | flags;
	return NLMSG_DATA(&r->h);
}

static struct rtattr *attr_put(struct req *r, uint16_t type, const void *p, size_t n)
{
	size_t off = NLMSG_ALIGN(r->h.nlmsg_len);
	struct rtattr *a = (struct rtattr *)(r->b + off);

	if (off + RTA_SPACE(n) > sizeof(r->b)) {
		r->overflow = 1;
		return NULL;
	}
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(n);
	if (n)
		memcpy(RTA_DATA(a), p, n);
	r->h.nlmsg_len = (uint32_t)(off + RTA_SPACE(n));
	return a;
}

static void attr_str(struct req *r, uint16_t type, const char *s)
{
	attr_put(r, type, s, strlen(s) + 1);
}

static void attr_u32(struct req *r, uint16_t type, uint32_t v)
{
	attr_put(r, type, &v, sizeof(v));
}

/* A nested attribute: attributes put until nest_end are inside it. */
static struct rtattr *nest_start(struct req *r, uint16_t type)
{
	return attr_put(r, type, NULL, 0);
}

static void nest_end(struct req *r, struct rtattr *a)
{
	if (a)
		a->rta_len = (unsigned short)((r->b + r->h.nlmsg_len) - (uint8_t *)a);
}

int nl_open(struct nl **out)
{
	struct nl *nl = calloc(1, sizeof(*nl));
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int one = 1, e;

	if (!nl)
		return -ENOMEM;
	nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl->fd < 0 || bind(nl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = -errno;
		if (nl->fd >= 0)
			close(nl->fd);
		free(nl);
		return e;
	}
	/* The kernel's own words on failure, and no echo of our request. */
	setsockopt(nl->fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(nl->fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	*out = nl;
	return 0;
}

void nl_close(struct nl *nl)
{
	if (nl) {
		close(nl->fd);
		free(nl);
	}
}

const char *nl_error(const struct nl *nl)
{
	return nl->err;
}

static int set_err(struct nl *nl, int e, const char *msg)
{
	snprintf(nl->err, sizeof(nl->err), "%s", msg && *msg ? msg : strerror(-e));
	return e;
}

/* The error of an NLMSG_ERROR message, with its extended ack text. */
static int ack_error(struct nl *nl, struct nlmsghdr *h)
{
	struct nlmsgerr *e = NLMSG_DATA(h);
	const char *msg = NULL;
	size_t off, end = h->nlmsg_len;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
		return set_err(nl, -EPROTO, "a malformed answer from the kernel");
	if (e->error == 0)
		return 0;
	if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
		off = NLMSG_LENGTH(sizeof(*e));
		if (!(h->nlmsg_flags & NLM_F_CAPPED))
			off += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
		while (off + sizeof(struct nlattr) <= end) {
			struct nlattr *a = (struct nlattr *)((uint8_t *)h + off);
			if (a->nla_len < sizeof(*a) || off + a->nla_len > end)
				break;
			if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG &&
			    a->nla_len > sizeof(*a) && ((char *)a)[a->nla_len - 1] == 0)
				msg = (const char *)(a + 1);
			off += NLA_ALIGN(a->nla_len);
		}
	}
	return set_err(nl, e->error, msg);
}

/* Sends r; for each answer message calls cb (if any) until the kernel's
 * ack or end of dump. */
static int talk(struct nl *nl, struct req *r, int (*cb)(struct nlmsghdr *, void *), void *arg)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	/* NLM_F_DUMP's bits mean CREATE and EXCL on NEW requests: only a GET
	 * (type 2 mod 4) dumps. */
	int dump = (r->h.nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP && r->h.nlmsg_type % 4 == 2;

	nl->err[0] = 0;
	if (r->overflow)
		return set_err(nl, -EMSGSIZE, "request too large");
	r->h.nlmsg_seq = ++nl->seq;
	if (!dump)
		r->h.nlmsg_flags |= NLM_F_ACK;
	if (sendto(nl->fd, r->b, r->h.nlmsg_len, 0, (struct sockaddr *)&kernel,
		   sizeof(kernel)) < 0)
		return set_err(nl, -errno, NULL);
	for (;;) {
		ssize_t n = recv(nl->fd, nl->buf, sizeof(nl->buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return set_err(nl, -errno, NULL);
		for (struct nlmsghdr *h = (struct nlmsghdr *)nl->buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			int e;
			if (h->nlmsg_seq != r->h.nlmsg_seq)
				continue;
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR)
				return ack_error(nl, h);
			if (cb && (e = cb(h, arg)) < 0)
				return set_err(nl, e, NULL);
		}
	}
}

/* --- interfaces ---------------------------------------------------- */

static int index_of(struct nl *nl, const char *name)
{
	unsigned i = if_nametoindex(name);
	if (!i) {
		char msg[64];
		snprintf(msg, sizeof(msg), "no interface named %s", name);
		return set_err(nl, -ENODEV, msg);
	}
	return (int)i;
}

static int parse_link(struct nlmsghdr *h, struct nl_link *l)
{
	struct ifinfomsg *ifi = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*ifi));

	if (len < 0)
		return -EPROTO;
	memset(l, 0, sizeof(*l));
	l->index = ifi->ifi_index;
	l->flags = ifi->ifi_flags;
	for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		size_t n = RTA_PAYLOAD(a);
		switch (a->rta_type) {
		case IFLA_IFNAME:
			snprintf(l->name, sizeof(l->name), "%.*s", (int)n, (char *)RTA_DATA(a));
			break;
		case IFLA_MTU:
			if (n >= 4)
				memcpy(&l->mtu, RTA_DATA(a), 4);
			break;
		case IFLA_MASTER:
			if (n >= 4)
				memcpy(&l->master, RTA_DATA(a), 4);
			break;
		case IFLA_ADDRESS:
			if (n == 6) {
				memcpy(l->mac, RTA_DATA(a), 6);
				l->has_mac = 1;
			}
			break;
		case IFLA_LINKINFO: {
			int ilen = (int)n;
			for (struct rtattr *b = RTA_DATA(a); RTA_OK(b, ilen); b = RTA_NEXT(b, ilen))
				if (b->rta_type == IFLA_INFO_KIND)
					snprintf(l->kind, sizeof(l->kind), "%.*s",
						 (int)RTA_PAYLOAD(b), (char *)RTA_DATA(b));
			break;
		}
		}
	}
	return 0;
}

struct link_list {
	struct nl_link *v;
	size_t n, cap;
};

static int add_link(struct nlmsghdr *h, void *arg)
{
	struct link_list *ll = arg;
	if (h->nlmsg_type != RTM_NEWLINK)
		return 0;
	if (ll->n == ll->cap) {
		size_t cap = ll->cap ? 2 * ll->cap : 16;
		struct nl_link *v = realloc(ll->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ll->v = v;
		ll->cap = cap;
	}
	return parse_link(h, &ll->v[ll->n]) == 0 ? (ll->n++, 0) : 0;
}

int nl_link_list(struct nl *nl, struct nl_link **out, size_t *n)
{
	struct req r;
	struct link_list ll = { 0 };
	struct ifinfomsg *ifi = req_init(&r, RTM_GETLINK, NLM_F_DUMP, sizeof(*ifi));
	int e;

	ifi->ifi_family = AF_UNSPEC;
	if ((e = talk(nl, &r, add_link, &ll)) < 0) {
		free(ll.v);
		return e;
	}
	*out = ll.v;
	*n = ll.n;
	return 0;
}

static int get_one(struct nlmsghdr *h, void *arg)
{
	return h->nlmsg_type == RTM_NEWLINK ? parse_link(h, arg) : 0;
}

int nl_link_get(struct nl *nl, const char *name, struct nl_link *out)
{
	struct req r;
	struct ifinfomsg *ifi = req_init(&r, RTM_GETLINK, 0, sizeof(*ifi));
	int idx = index_of(nl, name);

	if (idx < 0)
		return idx;
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = idx;
	memset(out, 0, sizeof(*out));
	return talk(nl, &r, get_one, out);
}

/* A change to an existing interface: the request, ready for attributes. */
static struct ifinfomsg *link_change(struct nl *nl, struct req *r, const char *name)
{
	struct ifinfomsg *ifi = req_init(r, RTM_NEWLINK, 0, sizeof(*ifi));
	int idx = index_of(nl, name);
	if (idx < 0)
		return NULL;
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = idx;
	return ifi;
}

int nl_link_set_up(struct nl *nl, const char *name, int up)
{
	struct req r;
	struct ifinfomsg *ifi = link_change(nl, &r, name);
	if (!ifi)
		return -ENODEV;
	ifi->ifi_flags = up ? IFF_UP : 0;
	ifi->ifi_change = IFF_UP;
	return talk(nl, &r, NULL, NULL);
}

int nl_link_set_mtu(struct nl *nl, const char *name, unsigned mtu)
{
	struct req r;
	if (!link_change(nl, &r, name))
		return -ENODEV;
	attr_u32(&r, IFLA_MTU, mtu);
	return talk(nl, &r, NULL, NULL);
}

int nl_link_set_mac(struct nl *nl, const char *name, const uint8_t mac[6])
{
	struct req r;
	if (!link_change(nl, &r, name))
		return -ENODEV;
	attr_put(&r, IFLA_ADDRESS, mac, 6);
	return talk(nl, &r, NULL, NULL);
}

int nl_link_rename(struct nl *nl, const char *name, const char *newname)
{
	struct nl_link l;
	struct req r;
	int e;

	if (strlen(newname) >= IFNAMSIZ || !*newname)
		return set_err(nl, -EINVAL, "interface names are 1 to 15 characters");
	if ((e = nl_link_get(nl, name, &l)) < 0)
		return e;
	/* The kernel renames only interfaces that are down. */
	if ((l.flags & IFF_UP) && (e = nl_link_set_up(nl, name, 0)) < 0)
		return e;
	if (!link_change(nl, &r, name))
		return -ENODEV;
	attr_str(&r, IFLA_IFNAME, newname);
	e = talk(nl, &r, NULL, NULL);
	if (l.flags & IFF_UP) {
		char err[sizeof(nl->err)];
		memcpy(err, nl->err, sizeof(err));
		nl_link_set_up(nl, e ? name : newname, 1);
		memcpy(nl->err, err, sizeof(err));
	}
	return e;
}

int nl_link_set_master(struct nl *nl, const char *name, const char *master)
{
	struct req r;
	int m = 0;

	if (master && (m = index_of(nl, master)) < 0)
		return m;
	if (!link_change(nl, &r, name))
		return -ENODEV;
	attr_u32(&r, IFLA_MASTER, (uint32_t)m);
	return talk(nl, &r, NULL, NULL);
}

int nl_link_set_netns(struct nl *nl, const char *name, int nsfd)
{
	struct req r;
	if (!link_change(nl, &r, name))
		return -ENODEV;
	attr_u32(&r, IFLA_NET_NS_FD, (uint32_t)nsfd);
	return talk(nl, &r, NULL, NULL);
}

int nl_link_delete(struct nl *nl, const char *name)
{
	struct req r;
	struct ifinfomsg *ifi = req_init(&r, RTM_DELLINK, 0, sizeof(*ifi));
	int idx = index_of(nl, name);

	if (idx < 0)
		return idx;
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = idx;
	return talk(nl, &r, NULL, NULL);
}

/* A request to create name of kind: *info is its IFLA_LINKINFO, still
 * open for IFLA_INFO_DATA (nest_end it before sending). */
static int link_new(struct nl *nl, struct req *r, const char *name, const char *kind,
		    struct rtattr **info)
{
	struct ifinfomsg *ifi = req_init(r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ifi));

	if (strlen(name) >= IFNAMSIZ || !*name)
		return set_err(nl, -EINVAL, "interface names are 1 to 15 characters");
	ifi->ifi_family = AF_UNSPEC;
	attr_str(r, IFLA_IFNAME, name);
	*info = nest_start(r, IFLA_LINKINFO);
	attr_str(r, IFLA_INFO_KIND, kind);
	return 0;
}

int nl_link_add_veth(struct nl *nl, const char *name, const char *peer, int peer_nsfd)
{
	struct req r;
	struct rtattr *info, *data, *p;
	struct ifinfomsg pifi = { .ifi_family = AF_UNSPEC };
	size_t off;
	int e;

	if (strlen(peer) >= IFNAMSIZ || !*peer)
		return set_err(nl, -EINVAL, "interface names are 1 to 15 characters");
	if ((e = link_new(nl, &r, name, "veth", &info)) < 0)
		return e;
	data = nest_start(&r, IFLA_INFO_DATA);
	p = nest_start(&r, VETH_INFO_PEER);
	/* The peer's own interface header, then its attributes. */
	off = NLMSG_ALIGN(r.h.nlmsg_len);
	if (off + NLMSG_ALIGN(sizeof(pifi)) > sizeof(r.b)) {
		r.overflow = 1;
	} else {
		memcpy(r.b + off, &pifi, sizeof(pifi));
		r.h.nlmsg_len = (uint32_t)(off + NLMSG_ALIGN(sizeof(pifi)));
	}
	attr_str(&r, IFLA_IFNAME, peer);
	if (peer_nsfd >= 0)
		attr_u32(&r, IFLA_NET_NS_FD, (uint32_t)peer_nsfd);
	nest_end(&r, p);
	nest_end(&r, data);
	nest_end(&r, info);
	return talk(nl, &r, NULL, NULL);
}

int nl_link_add_bridge(struct nl *nl, const char *name)
{
	struct req r;
	struct rtattr *info;
	int e;

	if ((e = link_new(nl, &r, name, "bridge", &info)) < 0)
		return e;
	nest_end(&r, info);
	return talk(nl, &r, NULL, NULL);
}

/* --- addresses and routes ------------------------------------------ */

int nl_parse_cidr(const char *s, int *family, uint8_t addr[16], unsigned *prefix)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	unsigned max;

	if (n == 0 || n >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, n);
	host[n] = 0;
	if (inet_pton(AF_INET, host, addr) == 1) {
		*family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, addr) == 1) {
		*family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	*prefix = max;
	if (slash) {
		char *end;
		unsigned long p;
		if (!slash[1] || slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		p = strtoul(slash + 1, &end, 10);
		if (*end || p > max)
			return -EINVAL;
		*prefix = (unsigned)p;
	}
	return 0;
}

static int addr_req(struct nl *nl, uint16_t type, const char *name, const char *cidr)
{
	struct req r;
	struct ifaddrmsg *ifa;
	uint8_t a[16];
	unsigned prefix;
	int family, idx = index_of(nl, name);

	if (idx < 0)
		return idx;
	if (nl_parse_cidr(cidr, &family, a, &prefix) < 0)
		return set_err(nl, -EINVAL, "not an address/prefix");
	ifa = req_init(&r, type, type == RTM_NEWADDR ? NLM_F_CREATE | NLM_F_EXCL : 0,
		       sizeof(*ifa));
	ifa->ifa_family = (uint8_t)family;
	ifa->ifa_prefixlen = (uint8_t)prefix;
	ifa->ifa_index = (unsigned)idx;
	attr_put(&r, IFA_LOCAL, a, family == AF_INET ? 4 : 16);
	attr_put(&r, IFA_ADDRESS, a, family == AF_INET ? 4 : 16);
	return talk(nl, &r, NULL, NULL);
}

int nl_addr_add(struct nl *nl, const char *name, const char *cidr)
{
	return addr_req(nl, RTM_NEWADDR, name, cidr);
}

int nl_addr_del(struct nl *nl, const char *name, const char *cidr)
{
	return addr_req(nl, RTM_DELADDR, name, cidr);
}

static int route_req(struct nl *nl, uint16_t type, const char *dst, const char *gw,
		     const char *dev)
{
	struct req r;
	struct rtmsg *rt;
	uint8_t d[16] = { 0 }, g[16];
	unsigned prefix = 0, gprefix;
	int family = 0, gfamily = 0, idx = 0;

	if (dev && (idx = index_of(nl, dev)) < 0)
		return idx;
	if (strcmp(dst, "default") && nl_parse_cidr(dst, &family, d, &prefix) < 0)
		return set_err(nl, -EINVAL, "a route's destination is 'default' or an address/prefix");
	if (gw && (nl_parse_cidr(gw, &gfamily, g, &gprefix) < 0 || strchr(gw, '/')))
		return set_err(nl, -EINVAL, "a gateway is an address");
	if (!family)
		family = gfamily ? gfamily : AF_INET;
	if (gfamily && gfamily != family)
		return set_err(nl, -EINVAL, "the gateway is not of the destination's family");
	rt = req_init(&r, type, type == RTM_NEWROUTE ? NLM_F_CREATE | NLM_F_EXCL : 0, sizeof(*rt));
	rt->rtm_family = (uint8_t)family;
	rt->rtm_dst_len = (uint8_t)prefix;
	rt->rtm_table = RT_TABLE_MAIN;
	rt->rtm_protocol = RTPROT_BOOT;
	rt->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
	rt->rtm_type = RTN_UNICAST;
	if (prefix)
		attr_put(&r, RTA_DST, d, family == AF_INET ? 4 : 16);
	if (gw)
		attr_put(&r, RTA_GATEWAY, g, family == AF_INET ? 4 : 16);
	if (idx)
		attr_u32(&r, RTA_OIF, (uint32_t)idx);
	return talk(nl, &r, NULL, NULL);
}

int nl_route_add(struct nl *nl, const char *dst, const char *gw, const char *dev)
{
	return route_req(nl, RTM_NEWROUTE, dst, gw, dev);
}

int nl_route_del(struct nl *nl, const char *dst, const char *gw, const char *dev)
{
	return route_req(nl, RTM_DELROUTE, dst, gw, dev);
}
