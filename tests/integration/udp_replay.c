/*
 * A hostile network for tunnel tests: waits for one UDP datagram (over
 * IPv4) arriving on an interface for a port, then sends copies of its
 * payload to that port on this host, each sent COUNT times:
 *   replay   unchanged (an attacker replaying what it saw)
 *   forge    a counter never seen and one byte of the sealed part
 *            flipped (a forgery: it passes the replay window, then fails
 *            to authenticate)
 *   index    the receiver index changed (packets for no key)
 * Runs in the receiving host's network namespace.
 *   udp_replay IFACE PORT replay|forge|index COUNT
 * Exits 0 once sent, 1 if nothing came within 10 s.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	unsigned char buf[65536];
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP) };
	struct sockaddr_in to = { .sin_family = AF_INET };
	int port, count, fd, out;
	time_t start = time(NULL);

	if (argc != 5) {
		fprintf(stderr, "usage: udp_replay IFACE PORT replay|forge|index COUNT\n");
		return 2;
	}
	port = atoi(argv[2]);
	count = atoi(argv[4]);
	sll.sll_ifindex = (int)if_nametoindex(argv[1]);
	fd = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	if (!sll.sll_ifindex || fd < 0 || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		perror("udp_replay: capture socket");
		return 1;
	}
	while (time(NULL) - start < 10) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;
		struct iphdr *ip = (struct iphdr *)buf;
		struct udphdr *udp;
		unsigned char *payload;
		size_t plen;

		if (poll(&p, 1, 1000) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < (ssize_t)sizeof(*ip) || ip->protocol != IPPROTO_UDP ||
		    (size_t)n < ip->ihl * 4u + sizeof(*udp))
			continue;
		udp = (struct udphdr *)(buf + ip->ihl * 4);
		if (ntohs(udp->dest) != port)
			continue;
		payload = (unsigned char *)(udp + 1);
		plen = (size_t)n - ip->ihl * 4u - sizeof(*udp);
		if (plen < 40)
			continue;
		if (!strcmp(argv[3], "forge")) {
			payload[8 + 6] ^= 0x01;
			payload[plen - 20] ^= 0x01;
		}
		else if (!strcmp(argv[3], "index"))
			payload[4] ^= 0x5a;
		out = socket(AF_INET, SOCK_DGRAM, 0);
		to.sin_port = htons((unsigned short)port);
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		for (int i = 0; i < count; i++)
			if (sendto(out, payload, plen, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
				perror("udp_replay: send");
				return 1;
			}
		return 0;
	}
	fprintf(stderr, "udp_replay: no datagram for port %d on %s\n", port, argv[1]);
	return 1;
}
