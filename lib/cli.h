/* Command-line conventions shared by every applet (DESIGN.md "Command
 * line"): exit codes, usage errors, the -h/--help convention. */
#ifndef METAC_CLI_H
#define METAC_CLI_H

#include <stdint.h>
#include <stdio.h>

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

struct applet {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
	/* Printed for -h/--help and after a usage error. */
	const char *usage;
};

/* An applet's commands ("metac net bind ..."): each gets argc/argv from
 * the command on. */
struct cli_command {
	const char *name;
	int (*fn)(const struct applet *self, int argc, char **argv);
};

/* Runs the command argv[1] names (a NULL-named entry ends cmds). */
int cli_dispatch(const struct applet *self, const struct cli_command *cmds, int argc,
		 char **argv);

/* Prints "metac APPLET: message" and the usage, returns EXIT_USAGE. */
int cli_usage_error(const struct applet *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Prints the usage to stdout, returns EXIT_OK. */
int cli_help(const struct applet *a);
/* True if argv has -h or --help before any "--". */
int cli_wants_help(int argc, char **argv);
/* Looks an applet up by name; NULL if unknown. */
const struct applet *applet_find(const char *name);
/* "local:PATH" -> PATH; NULL for anything else (or an empty PATH). */
const char *cli_local_path(const char *arg);
/* Writes s as a JSON string literal, escaped. */
void cli_json_str(FILE *f, const char *s);

/* Progress of a long transfer on stderr ("1.0 GiB of 2.0 GiB (50%),
 * 300.0 MiB/s"), redrawn at most every 200 ms; shown only when on (a
 * terminal: see DESIGN.md "Command line"). */
struct cli_progress {
	uint64_t total, done;
	uint64_t start_ms, last_ms;
	int on;
};

void cli_progress_start(struct cli_progress *p, uint64_t total, int on);
/* final: draw now, and end the line. */
void cli_progress_show(struct cli_progress *p, int final);

#endif
