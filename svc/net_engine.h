/*
 * Tunnel engines in processes of their own. The engine (vxlan/tunnel.c)
 * reads every datagram that reaches a tunnel's UDP port, from anyone; it
 * runs in `metac net _tunnel DIR`, which the daemon starts with
 *   fd 3  a control socket (SOCK_SEQPACKET): the configuration, then
 *         keys, the peer's address and kicks, one message each;
 *   fd 4  the TAP device; fd 5 the UDP socket, bound by the daemon;
 *   fd 6  a page the engine publishes its counters in (a seqlock; a
 *         memfd sealed at its size);
 * and which runs as nobody in an empty root under a seccomp filter
 * (lib/sandbox.h) before it reads its first datagram. The engine is
 * parsed nothing from: the daemon only reads numbers from the page (and
 * the peer's address, cut to its size). One that dies is not started
 * again on the same keys (its nonces and replay window died with it):
 * its owner hears of it through lost(), and binds again with new keys.
 */
#ifndef METAC_SVC_NET_ENGINE_H
#define METAC_SVC_NET_ENGINE_H

#include "vxlan/tunnel.h"

struct node;
struct net_engine;

/* Starts an engine for cfg (its TAP and socket descriptors taken over).
 * name is for the log. lost() runs when the engine died (or stopped
 * taking messages); the owner then calls net_engine_stop. 0 or -errno. */
int net_engine_start(struct node *n, const char *name, const struct vx_tunnel_config *cfg,
		     void (*lost)(void *arg, const char *why), void *arg,
		     struct net_engine **out);
/* Ends the engine (at once: the TAP device is free when this returns)
 * and frees e. */
void net_engine_stop(struct net_engine *e);

int net_engine_local_port(const struct net_engine *e);
/* As vx_tunnel_rx_key, vx_tunnel_tx_key, vx_tunnel_set_peer,
 * vx_tunnel_kick, vx_tunnel_stats (asked of the engine, which answers
 * within a millisecond or so; after 50 ms the counters it last
 * published, at most 100 ms old). */
void net_engine_rx_key(struct net_engine *e, uint32_t index, const uint8_t key[VX_KEY_LEN]);
void net_engine_tx_key(struct net_engine *e, uint32_t index, const uint8_t key[VX_KEY_LEN]);
void net_engine_set_peer(struct net_engine *e, const struct sockaddr *sa, socklen_t len);
void net_engine_kick(struct net_engine *e);
void net_engine_stats(struct net_engine *e, struct vx_stats *s);

/* `metac net _tunnel DIR`: the engine process itself. */
int net_engine_main(int argc, char **argv);

#endif
