/* Logging to stderr (with a level tag) or to syslog when not on a terminal. */
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

#include "lib/log.h"

static enum log_level log_level = LOG_LVL_INFO;
static int log_syslog;
static const char *log_ident = "metac";

void log_init(const char *ident, enum log_level level, int use_syslog)
{
	log_ident = ident;
	log_level = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level log_get_level(void)
{
	return log_level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const tag[] = { "error", "warning", "info", "debug" };
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		char line[1024];
		vsnprintf(line, sizeof(line), fmt, ap);
		/* One write per line so that concurrent writers don't interleave. */
		fprintf(stderr, "%s: %s: %s\n", log_ident, tag[level], line);
	}
	va_end(ap);
}
