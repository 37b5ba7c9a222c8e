/* Usage and help output shared by the applets. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/cli.h"

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
