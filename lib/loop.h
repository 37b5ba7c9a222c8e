/*
 * The event loop: one epoll instance per thread. File descriptor watches,
 * timers (timerfd), signals (signalfd), child exits (pidfd) and deferred
 * calls. Callbacks may add or remove any watch, including their own; a
 * removed watch is never called again and is freed after the current
 * dispatch round.
 */
#ifndef METAC_LOOP_H
#define METAC_LOOP_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>

struct loop;
struct loop_watch;
struct loop_timer;
struct loop_signal;
struct loop_child;

typedef void (*loop_fd_fn)(struct loop *l, int fd, uint32_t events, void *arg);
typedef void (*loop_timer_fn)(struct loop *l, struct loop_timer *t, void *arg);
typedef void (*loop_signal_fn)(struct loop *l, int signo, void *arg);
/* status as from waitpid: WIFEXITED/WEXITSTATUS etc. apply. */
typedef void (*loop_child_fn)(struct loop *l, pid_t pid, int status, void *arg);
typedef void (*loop_defer_fn)(struct loop *l, void *arg);

struct loop *loop_new(void);
void loop_free(struct loop *l);
/* Run until loop_stop(); returns 0, or -errno if epoll_wait fails. */
int loop_run(struct loop *l);
/* Process ready events once, waiting at most timeout_ms (-1 forever). */
int loop_run_once(struct loop *l, int timeout_ms);
void loop_stop(struct loop *l);
/* Monotonic milliseconds now, for code outside a loop (threads, blocking
 * helpers). */
uint64_t clock_mono_ms(void);
/* Monotonic milliseconds, cached per dispatch round. */
uint64_t loop_now_ms(struct loop *l);

/* events: EPOLLIN, EPOLLOUT, ... (level-triggered). The fd stays owned by
 * the caller; remove the watch before closing it. loop_watch_set(w, 0)
 * silences a watch completely, hangups included, until events are set. */
struct loop_watch *loop_watch_fd(struct loop *l, int fd, uint32_t events,
				 loop_fd_fn fn, void *arg);
int loop_watch_set(struct loop_watch *w, uint32_t events);
void loop_watch_del(struct loop_watch *w);

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *arg);
/* First expiry after first_ms (0 disarms), then every interval_ms (0: once). */
int loop_timer_arm(struct loop_timer *t, uint64_t first_ms, uint64_t interval_ms);
void loop_timer_del(struct loop_timer *t);

/* Blocks signo for the whole process and delivers it here. */
struct loop_signal *loop_signal_new(struct loop *l, int signo,
				    loop_signal_fn fn, void *arg);
void loop_signal_del(struct loop_signal *s);

/* Reaps pid (a child of this process) when it exits, then calls fn once
 * and frees the watch. */
struct loop_child *loop_child_watch(struct loop *l, pid_t pid,
				    loop_child_fn fn, void *arg);
void loop_child_del(struct loop_child *c);

/* Call fn(arg) at the start of the next dispatch round. */
int loop_defer(struct loop *l, loop_defer_fn fn, void *arg);

#endif
