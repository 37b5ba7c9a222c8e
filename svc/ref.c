/* The ref applet: list, show and revoke this node's sturdy refs. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/cli.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"

static int get_record(struct msg_rd *rd, struct ref_record *rec)
{
	int r;
	if ((r = msg_get_i64(rd, &rec->id)) < 0 ||
	    (r = msg_get_str(rd, rec->service, sizeof(rec->service))) < 0 ||
	    (r = msg_get_str(rd, rec->description, sizeof(rec->description))) < 0 ||
	    (r = msg_get_bool(rd, &rec->read_only)) < 0 ||
	    (r = msg_get_bool(rd, &rec->persistent)) < 0 ||
	    (r = msg_get_i64(rd, &rec->expiry)) < 0)
		return r;
	return msg_get_i64(rd, &rec->created);
}

static void print_time(int64_t t)
{
	char s[32];
	time_t tt = (time_t)t;
	struct tm tm;
	if (!t) {
		printf("%-20s", "never");
		return;
	}
	gmtime_r(&tt, &tm);
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("%-20s", s);
}

static void print_record(const struct ref_record *rec, int json, int first)
{
	if (json) {
		printf("%s{\"id\":%lld,\"service\":", first ? "" : ",",
		       (long long)rec->id);
		cli_json_str(stdout, rec->service);
		printf(",\"description\":");
		cli_json_str(stdout, rec->description);
		printf(",\"read_only\":%s,\"persistent\":%s,\"expiry\":%lld,"
		       "\"created\":%lld}", rec->read_only ? "true" : "false",
		       rec->persistent ? "true" : "false",
		       (long long)rec->expiry, (long long)rec->created);
		return;
	}
	printf("#%-5lld %-8s ", (long long)rec->id, rec->service);
	print_time(rec->created);
	printf(" %-10s %-3s ", rec->persistent ? "persistent" : "ephemeral",
	       rec->read_only ? "ro" : "rw");
	if (rec->expiry) {
		printf("expires ");
		print_time(rec->expiry);
		printf(" ");
	}
	printf("%s\n", rec->description);
}

static int ref_cmd(const struct applet *self, const char *cmd, int argc,
		   char **argv, const char *sock, int json)
{
	struct admin a;
	struct msg params, res;
	struct msg_rd rd;
	struct ref_record rec;
	int r = EXIT_FAIL, method, first = 1;

	if (!strcmp(cmd, "list"))
		method = NODE_ADMIN_REF_LIST;
	else if (!strcmp(cmd, "show"))
		method = NODE_ADMIN_REF_SHOW;
	else if (!strcmp(cmd, "revoke"))
		method = NODE_ADMIN_REF_REVOKE;
	else
		return cli_usage_error(self, "unknown command '%s'", cmd);
	if ((method == NODE_ADMIN_REF_LIST) != (argc == 0) || argc > 1)
		return cli_usage_error(self, "%s takes %s", cmd,
				       argc ? "no argument" : "one ref");
	if (admin_open(&a, admin_socket_path(sock)) < 0)
		goto out;
	msg_init(&params);
	msg_init(&res);
	if (argc)
		msg_put_str(&params, argv[0]);
	if (admin_call(&a, NULL, IFACE_NODE_ADMIN, method, &params, &res,
		       method == NODE_ADMIN_REF_REVOKE ? "cannot revoke the ref" :
		       "cannot read refs") < 0)
		goto out_msg;
	msg_rd_init(&rd, &res);
	if (json && method == NODE_ADMIN_REF_LIST)
		printf("[");
	while (method != NODE_ADMIN_REF_REVOKE && !msg_at_end(&rd)) {
		if (get_record(&rd, &rec) < 0) {
			fprintf(stderr, "metac ref: malformed answer from the daemon\n");
			goto out_msg;
		}
		print_record(&rec, json, first);
		first = 0;
	}
	if (json)
		printf(method == NODE_ADMIN_REF_LIST ? "]\n" : "\n");
	if (method == NODE_ADMIN_REF_REVOKE)
		fprintf(stderr, "revoked\n");
	r = EXIT_OK;
out_msg:
	msg_free(&res);
out:
	admin_close(&a);
	return r;
}

int ref_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const struct applet *self = applet_find("ref");
	const char *sock = NULL;
	int c, json = 0;

	while ((c = getopt_long(argc, argv, "ja:", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'a': sock = optarg; break;
		default: return cli_usage_error(self, "unknown option");
		}
	}
	if (optind >= argc)
		return cli_usage_error(self, "missing command");
	return ref_cmd(self, argv[optind], argc - optind - 1, argv + optind + 1,
		       sock, json);
}
