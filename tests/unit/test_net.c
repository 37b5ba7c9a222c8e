/* Address parsing (lib/net.c): ports required, defaulted, or any. */
#include "lib/net.h"
#include "tests/unit/unit.h"

static int port_of(const char *s, int def)
{
	struct net_addr a;
	int r = net_addr_parse(s, def, &a);
	return r < 0 ? r : net_addr_port(&a);
}

TEST(ports)
{
	CHECK_INT(port_of("127.0.0.1:901", 0), 901);
	CHECK_INT(port_of("127.0.0.1", 901), 901);
	CHECK_INT(port_of("127.0.0.1", 0), -EINVAL);   /* required */
	CHECK_INT(port_of("127.0.0.1:0", 901), -EINVAL); /* 0 only where asked */
	CHECK_INT(port_of("127.0.0.1:70000", 0), -EINVAL);
	CHECK_INT(port_of("[::1]:5901", 0), 5901);
}

TEST(any_port)
{
	CHECK_INT(port_of("127.0.0.1:0", NET_ANY_PORT), 0);
	CHECK_INT(port_of("127.0.0.1", NET_ANY_PORT), 0);
	CHECK_INT(port_of("[::1]", NET_ANY_PORT), 0);
	CHECK_INT(port_of("127.0.0.1:5901", NET_ANY_PORT), 5901);
	CHECK_INT(port_of("127.0.0.1:x", NET_ANY_PORT), -EINVAL);
}
