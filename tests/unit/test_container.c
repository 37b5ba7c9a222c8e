/* Unit tests for svc/container.c's pure parts: the configuration the
 * daemon sends its container helper (round trip, every truncation and
 * corruption refused) and which mount targets stay inside a root. */
#include "tests/unit/unit.h"

#include <errno.h>
#include <stdlib.h>

#include "lib/buf.h"
#include "svc/container.h"

static void sample(struct ctr_config *c)
{
	static char a0[] = "sh", a1[] = "-c", a2[] = "echo hi", e0[] = "K=V";

	memset(c, 0, sizeof(*c));
	c->join = 1234;
	snprintf(c->root, sizeof(c->root), "/srv/root");
	c->nmounts = 2;
	snprintf(c->mounts[0].target, PATH_MAX, "/data");
	snprintf(c->mounts[0].source, PATH_MAX, "/srv/data");
	snprintf(c->mounts[1].target, PATH_MAX, "/mnt/x");
	snprintf(c->mounts[1].source, PATH_MAX, "/var/lib/metac/compute/c1/m0");
	c->nnets = 1;
	snprintf(c->nets[0].name, IFNAMSIZ, "eth0");
	snprintf(c->nets[0].cidr, 64, "10.0.0.2/24");
	snprintf(c->nets[0].gateway, 64, "10.0.0.1");
	c->args[0] = a0;
	c->args[1] = a1;
	c->args[2] = a2;
	c->nargs = 3;
	c->env[0] = e0;
	c->nenv = 1;
	snprintf(c->hostname, sizeof(c->hostname), "box");
	c->uid = 1000;
	c->gid = 1001;
	c->pty = 1;
	c->rows = 30;
	c->cols = 90;
}

TEST(config_round_trip)
{
	struct ctr_config in, out;
	struct buf b;

	sample(&in);
	buf_init(&b);
	CHECK_INT(ctr_config_encode(&in, &b), 0);
	CHECK_INT(ctr_config_decode(buf_head(&b), buf_avail(&b), &out), 0);
	CHECK_INT(out.join, 1234);
	CHECK_STR(out.root, "/srv/root");
	CHECK_INT(out.nmounts, 2);
	CHECK_STR(out.mounts[1].source, "/var/lib/metac/compute/c1/m0");
	CHECK_INT(out.nnets, 1);
	CHECK_STR(out.nets[0].gateway, "10.0.0.1");
	CHECK_INT(out.nargs, 3);
	CHECK_STR(out.args[2], "echo hi");
	CHECK(out.args[3] == NULL);
	CHECK_INT(out.nenv, 1);
	CHECK_STR(out.env[0], "K=V");
	CHECK_STR(out.hostname, "box");
	CHECK_INT(out.uid, 1000);
	CHECK_INT(out.gid, 1001);
	CHECK_INT(out.pty, 1);
	CHECK_INT(out.rows, 30);
	CHECK_INT(out.cols, 90);
	ctr_config_free(&out);
	buf_free(&b);
}

/* Every prefix is refused, and so is a byte more. */
TEST(config_truncated)
{
	struct ctr_config in, out;
	struct buf b;

	sample(&in);
	buf_init(&b);
	CHECK_INT(ctr_config_encode(&in, &b), 0);
	for (size_t n = 0; n < buf_avail(&b); n++)
		CHECK_INT(ctr_config_decode(buf_head(&b), n, &out), -EBADMSG);
	buf_put_u8(&b, 0);
	CHECK_INT(ctr_config_decode(buf_head(&b), buf_avail(&b), &out), -EBADMSG);
	buf_free(&b);
}

/* Counts beyond the limits, strings with NUL bytes, no command. */
TEST(config_corrupt)
{
	struct ctr_config in, out;
	struct buf b;
	uint8_t *p;

	sample(&in);
	in.nargs = 0;
	in.args[0] = NULL;
	buf_init(&b);
	CHECK_INT(ctr_config_encode(&in, &b), 0);
	CHECK_INT(ctr_config_decode(buf_head(&b), buf_avail(&b), &out), -EBADMSG);
	buf_free(&b);

	sample(&in);
	buf_init(&b);
	CHECK_INT(ctr_config_encode(&in, &b), 0);
	p = buf_head(&b);
	/* join (4), root length (4) and "/srv/root": a NUL inside it. */
	p[8 + 3] = 0;
	CHECK_INT(ctr_config_decode(p, buf_avail(&b), &out), -EBADMSG);
	p[8 + 3] = 'v';
	/* The mount count after the root: far too many. */
	p[8 + 9] = 200;
	CHECK_INT(ctr_config_decode(p, buf_avail(&b), &out), -EBADMSG);
	buf_free(&b);
}

TEST(targets)
{
	CHECK(ctr_target_ok("/data"));
	CHECK(ctr_target_ok("/mnt/a/b"));
	CHECK(ctr_target_ok("/..x/.y"));
	CHECK(!ctr_target_ok("data"));
	CHECK(!ctr_target_ok(""));
	CHECK(!ctr_target_ok("/../etc"));
	CHECK(!ctr_target_ok("/a/../../etc"));
	CHECK(!ctr_target_ok("/a/./b"));
	CHECK(!ctr_target_ok("/a//b"));
	CHECK(!ctr_target_ok("/a/.."));
	CHECK(ctr_target_ok("/a/"));
}
