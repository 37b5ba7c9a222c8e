/* Running helper programs (PulseAudio's clients, say) from the daemon. */
#ifndef METAC_PROC_H
#define METAC_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Runs argv (argv[0] a path, or a name found in PATH) with no stdin; its
 * stdout and stderr, NUL-terminated and cut to outsz, in out. Killed after
 * timeout_ms. Its exit status (0..255), or -errno (-ETIMEDOUT when
 * killed, -ENOENT when it could not be started). */
int proc_run(char *const argv[], char *out, size_t outsz, int timeout_ms);

/* Starts argv with one end of a pipe as its stdin (to_child: we write) or
 * its stdout (we read); *fd gets our end (close-on-exec), stderr goes to
 * the log's stderr. The pid, or -errno. */
pid_t proc_spawn_pipe(char *const argv[], int to_child, int *fd);

/* Starts this program again (/proc/self/exe) with argv, fds[i] as
 * descriptor 3 + i (nothing else past stdio that is close-on-exec), an
 * empty signal mask and every signal at its default: for the daemon's
 * helper processes, which must not inherit its ignored SIGPIPE. The
 * caller keeps its fds. The pid, or -errno. */
pid_t proc_spawn_self(char *const argv[], const int *fds, int nfds);

/* Ends a child started so: SIGTERM, then SIGKILL after grace_ms; reaps it. */
void proc_stop(pid_t pid, int grace_ms);

#endif
