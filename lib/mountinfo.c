/* Finding a mount in /proc/self/mountinfo: see mountinfo.h. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/mountinfo.h"

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(const char *in, char *out, size_t outsz)
{
	size_t n = 0;
	for (const char *p = in; *p && n + 1 < outsz; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
			out[n++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			out[n++] = *p;
		}
	}
	out[n] = 0;
}

/* One line: id parent maj:min root mountpoint ... - fstype source opts */
static int line_matches(char *line, const char *mountpoint, const char *fstype,
			struct mountinfo_ent *e)
{
	char mp[PATH_MAX], un[PATH_MAX], *dash = strstr(line, " - ");
	size_t flen = strlen(fstype);

	if (!dash || sscanf(line, "%u %*u %u:%u %*s %4095s", &e->id, &e->maj, &e->min, mp) != 4)
		return 0;
	if (strncmp(dash + 3, fstype, flen) || dash[3 + flen] != ' ')
		return 0;
	unescape(mp, un, sizeof(un));
	return !strcmp(un, mountpoint);
}

int mountinfo_find(int fd, const char *mountpoint, const char *fstype,
		   struct mountinfo_ent *out)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap + 1), *line, *nl;
	struct mountinfo_ent e;
	int found = 0;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	/* From the start: a fresh listing. */
	while ((n = pread(fd, buf + len, cap - len, (off_t)len)) > 0) {
		len += (size_t)n;
		if (len == cap) {
			char *b = realloc(buf, 2 * cap + 1);
			if (!b) {
				free(buf);
				return -ENOMEM;
			}
			buf = b;
			cap *= 2;
		}
	}
	buf[len] = 0;
	for (line = buf; *line; line = nl + 1) {
		if (!(nl = strchr(line, '\n')))
			nl = line + strlen(line) - 1;
		else
			*nl = 0;
		/* The last one counts: mounts stack. */
		if (line_matches(line, mountpoint, fstype, &e)) {
			*out = e;
			found = 1;
		}
		if (!nl[1])
			break;
	}
	free(buf);
	return found ? 0 : -ENOENT;
}
