/* Usage and help output shared by the applets. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/cli.h"
#include "lib/loop.h"

int cli_usage_error(const struct applet *a, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "metac %s: ", a->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: %s", a->usage);
	fprintf(stderr, "try 'metac %s --help'\n", a->name);
	return EXIT_USAGE;
}

int cli_dispatch(const struct applet *self, const struct cli_command *cmds, int argc,
		 char **argv)
{
	if (argc < 2)
		return cli_usage_error(self, "missing command");
	for (const struct cli_command *c = cmds; c->name; c++)
		if (!strcmp(argv[1], c->name))
			return c->fn(self, argc - 1, argv + 1);
	return cli_usage_error(self, "unknown command '%s'", argv[1]);
}

int cli_help(const struct applet *a)
{
	printf("metac %s: %s\n\nusage: %s", a->name, a->summary, a->usage);
	return EXIT_OK;
}

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return 1;
	}
	return 0;
}

const char *cli_local_path(const char *arg)
{
	return strncmp(arg, "local:", 6) || !arg[6] ? NULL : arg + 6;
}

void cli_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void human(uint64_t n, char *out, size_t outsz)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, outsz, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void cli_progress_start(struct cli_progress *p, uint64_t total, int on)
{
	p->total = total;
	p->done = 0;
	p->start_ms = p->last_ms = clock_mono_ms();
	p->on = on;
}

void cli_progress_show(struct cli_progress *p, int final)
{
	uint64_t now = clock_mono_ms(), ms = now - p->start_ms;
	char done[32], total[32], rate[32];

	if (!p->on || (!final && now - p->last_ms < 200))
		return;
	p->last_ms = now;
	human(p->done, done, sizeof(done));
	human(p->total, total, sizeof(total));
	human(ms ? p->done * 1000 / ms : 0, rate, sizeof(rate));
	fprintf(stderr, "\r%s of %s (%3u%%), %s/s%s", done, total,
		p->total ? (unsigned)(p->done * 100 / p->total) : 100, rate, final ? "\n" : "  ");
}
