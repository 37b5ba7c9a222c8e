/* What the net service offers other services of the daemon. */
#ifndef METAC_SVC_NET_H
#define METAC_SVC_NET_H

#include <stddef.h>

struct cap;

/* An L2Interface for a new TAP device name in the network namespace nsfd
 * (a container's; the descriptor is duplicated): made when it is bound
 * (bindTo), gone when that binding or the interface is. On failure
 * -errno and why in err. */
int net_l2_netns(int nsfd, const char *name, struct cap **out, char *err, size_t errsz);

#endif
