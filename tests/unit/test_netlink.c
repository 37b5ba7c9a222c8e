/*
 * lib/netlink.c against the kernel, in a network namespace of the test's
 * own (unshare: needs root, as the integration tests do).
 * What it does is checked with rtnetlink's own answers and with
 * /sys/class/net and /proc/net, which it never reads itself.
 */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/netlink.h"
#include "tests/unit/unit.h"

/* A network namespace of the test's own, and a sysfs that shows it (a
 * sysfs shows the namespace of whoever mounted it). */
static int in_private_netns(void)
{
	static int done = -1;
	if (done < 0)
		done = unshare(CLONE_NEWNET | CLONE_NEWNS) == 0 &&
		       mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
		       mount("sysfs", "/sys", "sysfs", 0, NULL) == 0;
	if (!done)
		fprintf(stderr, "  cannot unshare a network namespace (not root?): %m\n");
	return done;
}

static int sys_read(const char *path, char *out, size_t n)
{
	FILE *f = fopen(path, "r");
	size_t k;
	if (!f)
		return -1;
	k = fread(out, 1, n - 1, f);
	fclose(f);
	out[k] = 0;
	if (k && out[k - 1] == '\n')
		out[k - 1] = 0;
	return 0;
}

static int file_has(const char *path, const char *needle)
{
	static char buf[1 << 16];
	return sys_read(path, buf, sizeof(buf)) == 0 && strstr(buf, needle) != NULL;
}

static struct nl_link *find(struct nl_link *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return &v[i];
	return NULL;
}

TEST(veth_up_mtu_mac_rename_delete)
{
	struct nl *nl;
	struct nl_link l, *v, *p;
	size_t n;
	char s[64];
	static const uint8_t mac[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };

	CHECK(in_private_netns());
	CHECK_INT(nl_open(&nl), 0);
	CHECK_INT(nl_link_add_veth(nl, "mt-a", "mt-b", -1), 0);
	CHECK_INT(nl_link_add_veth(nl, "mt-a", "mt-c", -1), -EEXIST);
	CHECK_INT(nl_link_set_mtu(nl, "mt-a", 1400), 0);
	CHECK_INT(nl_link_set_mac(nl, "mt-a", mac), 0);
	CHECK_INT(nl_link_set_up(nl, "mt-a", 1), 0);
	CHECK_INT(nl_link_get(nl, "mt-a", &l), 0);
	CHECK_STR(l.kind, "veth");
	CHECK_INT(l.mtu, 1400);
	CHECK(l.has_mac);
	CHECK_MEM(l.mac, mac, 6);
	CHECK(l.flags & IFF_UP);
	CHECK(sys_read("/sys/class/net/mt-a/mtu", s, sizeof(s)) == 0);
	CHECK_STR(s, "1400");
	CHECK(sys_read("/sys/class/net/mt-a/address", s, sizeof(s)) == 0);
	CHECK_STR(s, "02:11:22:33:44:55");

	CHECK_INT(nl_link_list(nl, &v, &n), 0);
	CHECK((p = find(v, n, "mt-b")) != NULL);
	CHECK_STR(p->kind, "veth");
	CHECK(find(v, n, "lo") != NULL);
	free(v);

	/* Renaming an interface that is up: down, rename, up again. */
	CHECK_INT(nl_link_rename(nl, "mt-a", "mt-renamed"), 0);
	CHECK_INT(nl_link_get(nl, "mt-a", &l), -ENODEV);
	CHECK_INT(nl_link_get(nl, "mt-renamed", &l), 0);
	CHECK(l.flags & IFF_UP);
	CHECK_INT(nl_link_rename(nl, "mt-renamed", "a-name-far-too-long"), -EINVAL);

	/* The kernel's own reason comes back. */
	CHECK(nl_link_set_mtu(nl, "mt-renamed", 10) < 0);
	CHECK(strlen(nl_error(nl)) > 0);
	CHECK_INT(nl_link_set_up(nl, "nosuch", 1), -ENODEV);
	CHECK(strstr(nl_error(nl), "nosuch") != NULL);

	CHECK_INT(nl_link_delete(nl, "mt-renamed"), 0);
	CHECK_INT(nl_link_get(nl, "mt-b", &l), -ENODEV); /* its peer went too */
	nl_close(nl);
}

TEST(bridge_and_enslaving)
{
	struct nl *nl;
	struct nl_link l, br;

	CHECK(in_private_netns());
	CHECK_INT(nl_open(&nl), 0);
	CHECK_INT(nl_link_add_bridge(nl, "mt-br"), 0);
	CHECK_INT(nl_link_add_veth(nl, "mt-p", "mt-q", -1), 0);
	CHECK_INT(nl_link_set_master(nl, "mt-p", "mt-br"), 0);
	CHECK_INT(nl_link_get(nl, "mt-br", &br), 0);
	CHECK_STR(br.kind, "bridge");
	CHECK_INT(nl_link_get(nl, "mt-p", &l), 0);
	CHECK_INT(l.master, br.index);
	CHECK(access("/sys/class/net/mt-br/brif/mt-p", F_OK) == 0);
	CHECK_INT(nl_link_set_master(nl, "mt-p", NULL), 0);
	CHECK_INT(nl_link_get(nl, "mt-p", &l), 0);
	CHECK_INT(l.master, 0);
	CHECK_INT(nl_link_set_master(nl, "mt-p", "nosuch"), -ENODEV);
	CHECK_INT(nl_link_delete(nl, "mt-p"), 0);
	CHECK_INT(nl_link_delete(nl, "mt-br"), 0);
	nl_close(nl);
}

TEST(addresses_and_routes)
{
	struct nl *nl;

	CHECK(in_private_netns());
	CHECK_INT(nl_open(&nl), 0);
	CHECK_INT(nl_link_add_veth(nl, "mt-r", "mt-s", -1), 0);
	CHECK_INT(nl_link_set_up(nl, "mt-r", 1), 0);
	CHECK_INT(nl_link_set_up(nl, "mt-s", 1), 0);
	CHECK_INT(nl_addr_add(nl, "mt-r", "10.99.0.1/24"), 0);
	CHECK_INT(nl_addr_add(nl, "mt-r", "10.99.0.1/24"), -EEXIST);
	CHECK_INT(nl_addr_add(nl, "mt-r", "fd99::1/64"), 0);
	CHECK(file_has("/proc/net/if_inet6", "fd990000000000000000000000000001"));
	CHECK_INT(nl_route_add(nl, "10.98.0.0/16", "10.99.0.254", NULL), 0);
	CHECK(file_has("/proc/net/route", "0000620A")); /* 10.98.0.0, little-endian hex */
	CHECK_INT(nl_route_add(nl, "default", "10.99.0.254", "mt-r"), 0);
	CHECK(file_has("/proc/net/route", "mt-r\t00000000\tFE00630A"));
	CHECK_INT(nl_route_del(nl, "default", "10.99.0.254", "mt-r"), 0);
	CHECK(!file_has("/proc/net/route", "mt-r\t00000000\tFE00630A"));
	CHECK_INT(nl_route_del(nl, "10.98.0.0/16", "10.99.0.254", NULL), 0);
	CHECK_INT(nl_route_add(nl, "10.97.0.0/16", "fd99::2", NULL), -EINVAL);
	CHECK_INT(nl_addr_add(nl, "mt-r", "10.99.0.300/24"), -EINVAL);
	CHECK_INT(nl_addr_add(nl, "mt-r", "10.99.0.3/33"), -EINVAL);
	CHECK_INT(nl_addr_del(nl, "mt-r", "10.99.0.1/24"), 0);
	CHECK_INT(nl_addr_del(nl, "mt-r", "10.99.0.1/24"), -EADDRNOTAVAIL);
	CHECK_INT(nl_link_delete(nl, "mt-r"), 0);
	nl_close(nl);
}

TEST(move_into_another_namespace)
{
	struct nl *nl;
	struct nl_link l;
	char path[64];
	int ready[2], go[2], nsfd, status;
	pid_t child;
	char c;

	CHECK(in_private_netns());
	/* One pipe each way: a pipe read by both ends would race. */
	CHECK_INT(pipe(ready), 0);
	CHECK_INT(pipe(go), 0);
	/* A child that sits in a namespace of its own until told to go. */
	if ((child = fork()) == 0) {
		if (unshare(CLONE_NEWNET) < 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(file_has("/proc/net/dev", "mt-moved:") && file_has("/proc/net/dev", "mt-x:")
			      ? 0 : 2);
	}
	CHECK(child > 0);
	CHECK_INT(read(ready[0], &c, 1), 1);
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)child);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		kill(child, SIGKILL);
	CHECK(nsfd >= 0);
	CHECK_INT(nl_open(&nl), 0);
	CHECK_INT(nl_link_add_veth(nl, "mt-stay", "mt-moved", nsfd), 0);
	CHECK_INT(nl_link_get(nl, "mt-moved", &l), -ENODEV);
	CHECK_INT(nl_link_add_veth(nl, "mt-x", "mt-y", -1), 0);
	CHECK_INT(nl_link_set_netns(nl, "mt-x", nsfd), 0);
	CHECK_INT(nl_link_get(nl, "mt-x", &l), -ENODEV);
	close(nsfd);
	CHECK_INT(write(go[1], "g", 1), 1);
	CHECK_INT(waitpid(child, &status, 0), child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	nl_close(nl);
	for (int i = 0; i < 2; i++) {
		close(ready[i]);
		close(go[i]);
	}
}

TEST(cidr_parsing)
{
	uint8_t a[16];
	unsigned p;
	int f;

	CHECK_INT(nl_parse_cidr("192.0.2.1/24", &f, a, &p), 0);
	CHECK_INT(f, AF_INET);
	CHECK_INT(p, 24);
	CHECK_INT(nl_parse_cidr("2001:db8::1", &f, a, &p), 0);
	CHECK_INT(f, AF_INET6);
	CHECK_INT(p, 128);
	CHECK_INT(nl_parse_cidr("2001:db8::1/129", &f, a, &p), -EINVAL);
	CHECK_INT(nl_parse_cidr("192.0.2.1/", &f, a, &p), -EINVAL);
	CHECK_INT(nl_parse_cidr("192.0.2.1/-1", &f, a, &p), -EINVAL);
	CHECK_INT(nl_parse_cidr("/24", &f, a, &p), -EINVAL);
	CHECK_INT(nl_parse_cidr("host/24", &f, a, &p), -EINVAL);
}
