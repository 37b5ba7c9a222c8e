/*
 * An Ethernet tunnel: a TAP device on one side, UDP datagrams to a peer
 * on the other (vxlan/packet.h), in plain RFC 7348 mode or encrypted.
 *
 * Two threads move the bytes, one each way, in batches (sendmmsg,
 * recvmmsg, UDP GSO and GRO; an encrypted tunnel takes the TAP device's
 * large segments whole and sends them in pieces); the caller (the daemon's loop) only sets keys and reads
 * counters, and never waits on them. The peer's address is learnt from
 * the packets that authenticate, so a peer that moves (roams) keeps
 * being reached; until then, and to keep NAT mappings open, keepalives
 * go out every VX_KEEPALIVE_MS.
 */
#ifndef METAC_VXLAN_TUNNEL_H
#define METAC_VXLAN_TUNNEL_H

#include <net/if.h>
#include <stdint.h>
#include <sys/socket.h>

#include "vxlan/packet.h"

#define VX_KEEPALIVE_MS 10000
#define VX_BATCH 32

enum vx_mode { VX_MODE_PLAIN, VX_MODE_ENCRYPTED };

struct vx_tunnel;

struct vx_tunnel_config {
	enum vx_mode mode;
	int tap_fd;  /* taken over (closed by vx_tunnel_free) */
	int sock_fd; /* the UDP socket (vx_udp_open), taken over too */
	uint32_t vni;
	/* Where packets go first (len 0: nowhere until a peer is heard). */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	/* The largest UDP payload the path carries unfragmented (0: 1472):
	 * larger units go in pieces. */
	size_t max_datagram;
	/* Encrypted: the keys to start with, if known (as vx_tunnel_rx_key
	 * and vx_tunnel_tx_key, but before the first datagram is read). */
	struct vx_key_cfg {
		int valid;
		uint32_t index;
		uint8_t key[VX_KEY_LEN];
	} rx, tx;
};

struct vx_stats {
	uint64_t tx_packets, tx_bytes, tx_dropped;
	uint64_t rx_packets, rx_bytes;
	/* Datagrams dropped, by reason. */
	uint64_t rx_bad, rx_vni, rx_index, rx_auth, rx_replay, rx_stranger;
	uint64_t keepalives_tx, keepalives_rx;
	uint64_t rx_dropped; /* authentic, but the device took it not */
	char peer[64]; /* where packets go now ("" if nowhere) */
};

/* Opens the TAP device name (creating it; IFF_TAP | IFF_NO_PI, and
 * IFF_VNET_HDR with vnet: what an encrypted tunnel uses); with persist
 * it outlives the descriptor (TUNSETPERSIST). Returns a descriptor, the
 * kernel's name for the device in out_name. */
int vx_tap_open(const char *name, int persist, int vnet, char out_name[IFNAMSIZ]);
/* Makes a persistent TAP device go away (opening and unpersisting it). */
int vx_tap_destroy(const char *name);

/* Bytes a frame gains on the underlay (outer IP and UDP headers too):
 * the tunnel's MTU is the underlay's less this, less 14 (Ethernet). */
unsigned vx_overhead(enum vx_mode mode, int family);
/* The path MTU towards addr (the route's device MTU): 0 if unknown. */
unsigned vx_path_mtu(const struct sockaddr *addr, socklen_t len);

/* A tunnel's UDP socket, bound to local (port 0: any free one), with
 * the options the engine wants: a descriptor, or -errno. */
int vx_udp_open(const struct sockaddr *local, socklen_t len);
/* The port a socket is bound to, or -errno. */
int vx_udp_port(int sock);

/* Sets the TAP device up for cfg's mode; nothing is read or sent until
 * vx_tunnel_start starts the threads (a process may confine itself in
 * between). */
int vx_tunnel_new(const struct vx_tunnel_config *cfg, struct vx_tunnel **out);
/* 0, or -errno (the tunnel is then for vx_tunnel_free only). */
int vx_tunnel_start(struct vx_tunnel *t);
/* Stops the threads, closes the socket and the TAP descriptor. */
void vx_tunnel_free(struct vx_tunnel *t);
/* The key and index this side receives with (the one before stays valid
 * for packets in flight). */
void vx_tunnel_rx_key(struct vx_tunnel *t, uint32_t index, const uint8_t key[VX_KEY_LEN]);
/* The key and index the peer receives with: what this side sends with. */
void vx_tunnel_tx_key(struct vx_tunnel *t, uint32_t index, const uint8_t key[VX_KEY_LEN]);
void vx_tunnel_set_peer(struct vx_tunnel *t, const struct sockaddr *sa, socklen_t len);
/* Sends a keepalive now (so that the peer learns where this side is). */
void vx_tunnel_kick(struct vx_tunnel *t);
void vx_tunnel_stats(struct vx_tunnel *t, struct vx_stats *s);

#endif
