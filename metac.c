/*
 * metac: one binary, busybox-style. `metac APPLET ARGS` and a link named
 * `metac-APPLET` behave the same. Each applet's main lives in the file of
 * the service it belongs to and is listed once, here.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/cli.h"
#include "svc/agent.h"
#include "svc/applets.h"

static const struct applet applets[] = {
	{ "daemon", daemon_main, "run a node: keys, database, peers, admin socket",
	  "metac daemon [--dir DIR] [--listen ADDR:PORT] [--admin-socket PATH] [-v|-q]\n"
	  "             [--log auto|syslog|stderr]   (auto: syslog when stderr is no terminal)\n"
	  "             [--idle-timeout SECONDS]     (idle peer connections end; default 300)\n" },
	{ "node", node_main, "show this node's identity and addresses",
	  "metac node [--json] [--admin-socket PATH]\n" },
	{ "ref", ref_main, "list, show and revoke this node's refs",
	  "metac ref list [--json]\n"
	  "       metac ref show [--json] REF\n"
	  "       metac ref revoke REF\n" },
	{ "fs", fs_main, "share folders",
	  "metac fs export [--persistent] [--read-only] [--map=mounter|passthrough] local:PATH|REF\n"
	  "       metac fs bind|mount [--persistent] [--timeout SECONDS] MOUNTPOINT local:PATH|REF\n"
	  "       metac fs unbind MOUNTPOINT\n"
	  "       metac fs serve9p --listen ADDR:PORT|unix:PATH [--read-only]\n"
	  "                 [--map=mounter|passthrough] [--insecure] local:PATH|REF\n"
	  "       metac fs mount9p [--insecure] [--read-only] [--uid UID] [--aname TREE] [--timeout MS]\n"
	  "                 ADDR:PORT|unix:PATH MOUNTPOINT   (plain 9p, in the foreground)\n" },
	{ "file", file_main, "share a file: export it, read it from anywhere",
	  "metac file export [--persistent] [--read-only] local:FILE\n"
	  "       metac file cat REF   (its bytes on stdout; progress when stderr is a terminal)\n" },
	{ "block", block_main, "serve disks as NBD, copy them",
	  "metac block serve --listen unix:PATH|ADDR:PORT [--read-only] [--direct] [--insecure]\n"
	  "                  [--persistent] local:PATH|REF   (plain NBD for qemu, nbdcopy, nbdinfo,\n"
	  "                  nbd-client; --persistent: the daemon serves it, across restarts)\n"
	  "       metac block unserve unix:PATH|ADDR:PORT\n"
	  "       metac block list [--json]\n"
	  "       metac block copy [--direct] SRC DST   (each local:PATH or REF; progress on a terminal)\n" },
	{ "desktop", desktop_main, "share an X11 desktop over VNC (RFB), view remote ones",
	  "metac desktop export [--persistent] [--view-only] [--xauthority FILE] local-x11:N\n"
	  "       metac desktop attach [--listen ADDR:PORT] [--viewer CMD|none] [--direct]\n"
	  "                 [--view-only] REF|local-x11:N   (a loopback VNC port; starts CMD\n"
	  "                 HOST::PORT or a viewer found, else prints HOST:PORT)\n"
	  "       metac desktop serve --listen ADDR:PORT [--view-only] [--insecure]\n"
	  "                 [--xauthority FILE] local-x11:N   (plain RFB from this process)\n" },
	{ "sound", sound_main, "share sound devices: audio between PulseAudio mixers, as Opus",
	  "metac sound export [--persistent] SOUND-URI\n"
	  "       metac sound bind SINK-URI SOURCE-URI   (each a SOUND-URI or a ref; until interrupted)\n"
	  "       metac sound list [--json]\n"
	  "   SOUND-URI: localsink:NAME, localsource:NAME, newlocalsink:NAME, newlocalsource:NAME\n" },
	{ "usb", usb_main, "share USB devices over USB/IP",
	  "metac usb export [--persistent] local-busid:ID|local-productid:VID:PID|softdev:NAME\n"
	  "       metac usb serve --listen ADDR:PORT [--insecure] [--direct] DEVICE|REF\n"
	  "                 (plain USB/IP for the usbip tools)\n"
	  "       metac usb attach [--direct] REF   (on this host, through the kernel's vhci-hcd)\n"
	  "       metac usb list [--json]\n" },
	{ "net", net_main, "join Ethernet segments across nodes (encrypted tunnels)",
	  "metac net export [--persistent] newlocal:DEV|local:DEV\n"
	  "       metac net bind [--persistent] newlocal:DEV|local:DEV REF\n"
	  "       metac net bind [--persistent] --plain newlocal:DEV|local:DEV vxlan://HOST[:PORT]/VNI\n"
	  "       metac net unbind DEV\n"
	  "       metac net list [--json]\n"
	  "       metac net interfaces [--json]\n"
	  "       metac net show|destroy REF   (the name of an exported device; destroy it)\n"
	  "       metac net rename REF NAME\n" },
	{ "run", run_main, "run a command in a container, with local and remote resources",
	  "metac run [--mount=PATH=URI]... [--net=URI[,addr=CIDR][,gw=IP]]... [--memory=MiB]\n"
	  "          [--pty] [--env K=V]... [--hostname NAME] [--uid N] [--gid N]\n"
	  "          [--service=NAME] [--node=REF] CMD [ARG...]\n"
	  "   URI: local:PATH (of the node that runs it) or a ref to a folder; one mount is /.\n"
	  "   --net: a ref to an L2Interface (metac net export), ethN inside.\n"
	  "   The exit code is the command's (128+N when killed by signal N).\n" },
	{ "compute", compute_main, "containers: export this node's launcher, list what runs",
	  "metac compute export [--persistent]   (a ref for 'metac run --node=REF')\n"
	  "       metac compute list [--json]\n"
	  "       metac compute exec [--pty] [--env K=V]... [--uid N] [--gid N] ID CMD [ARG...]\n"
	  "                 (one more process in a running container)\n" },
	{ "vm", vm_main, "virtual machines (qemu) with local and remote disks, networks, consoles",
	  "metac vm start [--memory MiB] [--vcpu N] [--drive uri=URI[,driver=virtio|ide][,ro]]...\n"
	  "               [--net REF[,model=virtio|e1000]]... [--kernel URI [--initrd URI]\n"
	  "               [--cmdline STR]] [--serial stdio|REF] [--name NAME]\n"
	  "   URI: local:PATH or a ref to a file (a disk); --serial stdio is the console here,\n"
	  "   until the VM ends; otherwise its id is printed and it runs on.\n"
	  "       metac vm list [--json]\n"
	  "       metac vm stop ID\n"
	  "       metac vm initrd -o FILE [--kernel-version V]   (what run --service=computevm boots)\n" },
	{ "stream", stream_main, "share a local socket as a Stream; connect to one",
	  "metac stream export [--persistent] unix:PATH|ADDR:PORT\n"
	  "       metac stream connect [--direct] REF   (pipes stdin and stdout)\n"
	  "       metac stream bind REF1 REF2   (pipes two streams until SIGINT/SIGTERM)\n" },
};

#define N_APPLETS (sizeof(applets) / sizeof(applets[0]))

const struct applet *applet_find(const char *name)
{
	for (size_t i = 0; i < N_APPLETS; i++)
		if (!strcmp(applets[i].name, name))
			return &applets[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: metac APPLET [ARGS...]\n"
		   "       metac --list | --install DIR | --help\n\napplets:\n");
	for (size_t i = 0; i < N_APPLETS; i++)
		fprintf(f, "  %-10s %s\n", applets[i].name, applets[i].summary);
	fprintf(f, "\n'metac APPLET --help' shows an applet's options.\n");
}

/* Make DIR/metac-APPLET links to this binary for every applet. */
static int install_links(const char *dir)
{
	char self[PATH_MAX], link[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0) {
		fprintf(stderr, "metac --install: cannot find my own path: %m\n");
		return EXIT_FAIL;
	}
	self[n] = 0;
	for (size_t i = 0; i < N_APPLETS; i++) {
		snprintf(link, sizeof(link), "%s/metac-%s", dir, applets[i].name);
		if (unlink(link) < 0 && errno != ENOENT) {
			fprintf(stderr, "metac --install: cannot replace %s: %m\n", link);
			return EXIT_FAIL;
		}
		if (symlink(self, link) < 0) {
			fprintf(stderr, "metac --install: cannot create %s: %m "
				"(does %s exist and is it writable?)\n", link, dir);
			return EXIT_FAIL;
		}
	}
	return EXIT_OK;
}

static int run_applet(const char *name, int argc, char **argv)
{
	const struct applet *a = applet_find(name);
	if (!a) {
		fprintf(stderr, "metac: unknown applet '%s'; 'metac --list' "
			"lists them\n", name);
		return EXIT_USAGE;
	}
	if (cli_wants_help(argc, argv))
		return cli_help(a);
	return a->main(argc, argv);
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];

	/* The /init of a computevm VM's initramfs (svc/agent.c). */
	if (getpid() == 1 && !strcmp(base, "init"))
		agent_main();
	if (!strncmp(base, "metac-", 6))
		return run_applet(base + 6, argc, argv);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--list")) {
		for (size_t i = 0; i < N_APPLETS; i++)
			printf("%s\n", applets[i].name);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--install")) {
		if (argc != 3) {
			fprintf(stderr, "usage: metac --install DIR\n");
			return EXIT_USAGE;
		}
		return install_links(argv[2]);
	}
	if (argv[1][0] == '-') {
		fprintf(stderr, "metac: unknown option '%s'\n", argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	return run_applet(argv[1], argc - 1, argv + 1);
}
