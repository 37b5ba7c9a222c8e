/*
 * The event loop; see loop.h and DESIGN.md, "Runtime shape".
 *
 * Everything is an fd in one level-triggered epoll set: the caller's fds,
 * timers (timerfd), signals (signalfd) and child exits (pidfd). Each
 * registration's epoll_data.ptr points at a struct that starts with a
 * struct loop_obj header, so dispatch needs no lookup.
 *
 * Deleting is safe from any callback: the object is marked dead, leaves
 * the epoll set at once (its loop-owned fd is closed), and moves to a dead
 * list that is freed only when the outermost dispatch round ends. An event
 * for a dead object still sitting in the current epoll_wait batch is
 * skipped, so a deleted watch is never called again.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/loop.h"

/* Events taken per epoll_wait; more simply wait for the next round (level
 * triggered, nothing is lost). */
#define LOOP_MAX_EVENTS 64

enum loop_kind {
	LOOP_KIND_FD,
	LOOP_KIND_TIMER,
	LOOP_KIND_SIGNAL,
	LOOP_KIND_CHILD,
};

struct loop_obj {
	enum loop_kind kind;
	bool dead;
	int fd;			/* the caller's for LOOP_KIND_FD, else ours */
	void *arg;
	struct loop *l;
	struct loop_obj *prev, *next; /* live list; dead list uses next */
};

struct loop_watch {
	struct loop_obj o;
	loop_fd_fn fn;
	uint32_t events; /* as last set: unchanged sets cost no system call */
	bool off;        /* out of the epoll set: no events wanted */
};

struct loop_timer {
	struct loop_obj o;
	loop_timer_fn fn;
};

struct loop_signal {
	struct loop_obj o;
	loop_signal_fn fn;
	int signo;
};

struct loop_child {
	struct loop_obj o;
	loop_child_fn fn;
	pid_t pid;
};

struct loop_deferred {
	loop_defer_fn fn;
	void *arg;
	struct loop_deferred *next;
};

struct loop {
	int epfd;
	bool stop;
	int depth;		/* nesting of loop_run_once calls */
	uint64_t now_ms;
	struct loop_obj *live;
	struct loop_obj *dead;
	struct loop_deferred *defer_head, **defer_tail;
};

/*
 * The signal mask is not per loop, so neither is the count of loop_signals
 * per signo. was_blocked remembers that someone else had the signal
 * blocked before us, so that we never unblock what we did not block.
 */
static struct {
	unsigned int refs;
	bool was_blocked;
} loop_signals[_NSIG];
static pthread_mutex_t loop_signals_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t clock_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int err = errno;

		free(l);
		errno = err;
		return NULL;
	}
	l->defer_tail = &l->defer_head;
	l->now_ms = clock_mono_ms();
	return l;
}

static void loop_live_add(struct loop *l, struct loop_obj *o)
{
	o->prev = NULL;
	o->next = l->live;
	if (l->live)
		l->live->prev = o;
	l->live = o;
}

static void loop_live_remove(struct loop *l, struct loop_obj *o)
{
	if (o->prev)
		o->prev->next = o->next;
	else
		l->live = o->next;
	if (o->next)
		o->next->prev = o->prev;
	o->prev = o->next = NULL;
}

/* Registers a freshly allocated object; on failure the caller frees it
 * (and closes its own fd). */
static int loop_obj_add(struct loop *l, struct loop_obj *o,
			enum loop_kind kind, int fd, uint32_t events, void *arg)
{
	struct epoll_event ev = { .events = events, .data.ptr = o };

	o->kind = kind;
	o->fd = fd;
	o->arg = arg;
	o->l = l;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	loop_live_add(l, o);
	return 0;
}

static int loop_signal_hold(int signo)
{
	sigset_t set, old;
	int err = 0;

	sigemptyset(&set);
	sigaddset(&set, signo);
	pthread_mutex_lock(&loop_signals_lock);
	if (loop_signals[signo].refs == 0) {
		err = pthread_sigmask(SIG_BLOCK, &set, &old);
		if (err)
			goto out;
		loop_signals[signo].was_blocked = sigismember(&old, signo) == 1;
	}
	loop_signals[signo].refs++;
out:
	pthread_mutex_unlock(&loop_signals_lock);
	return -err;
}

static void loop_signal_release(int signo)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, signo);
	pthread_mutex_lock(&loop_signals_lock);
	if (--loop_signals[signo].refs == 0 && !loop_signals[signo].was_blocked)
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	pthread_mutex_unlock(&loop_signals_lock);
}

/* Takes o out of service at once; freeing waits for the round's end. */
static void loop_obj_kill(struct loop_obj *o)
{
	struct loop *l = o->l;

	if (o->dead)
		return;
	o->dead = true;
	/* Fails harmlessly if the caller already closed its fd. */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, o->fd, NULL);
	if (o->kind != LOOP_KIND_FD)
		close(o->fd);
	o->fd = -1;
	if (o->kind == LOOP_KIND_SIGNAL)
		loop_signal_release(((struct loop_signal *)o)->signo);
	loop_live_remove(l, o);
	if (l->depth == 0) {
		free(o);
		return;
	}
	o->next = l->dead;
	l->dead = o;
}

static void loop_free_dead(struct loop *l)
{
	struct loop_obj *o;

	while ((o = l->dead)) {
		l->dead = o->next;
		free(o);
	}
}

static void loop_free_deferred(struct loop_deferred *d)
{
	struct loop_deferred *next;

	for (; d; d = next) {
		next = d->next;
		free(d);
	}
}

/* Not from a callback of l. */
void loop_free(struct loop *l)
{
	if (!l)
		return;
	while (l->live)
		loop_obj_kill(l->live);
	loop_free_dead(l);
	loop_free_deferred(l->defer_head);
	close(l->epfd);
	free(l);
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

uint64_t loop_now_ms(struct loop *l)
{
	return l->now_ms;
}

/* Runs the calls queued so far; calls they queue wait for the next round.
 * Returns whether any are waiting. */
static bool loop_run_deferred(struct loop *l)
{
	struct loop_deferred *d = l->defer_head, *next;

	l->defer_head = NULL;
	l->defer_tail = &l->defer_head;
	for (; d; d = next) {
		next = d->next;
		d->fn(l, d->arg);
		free(d);
	}
	return l->defer_head != NULL;
}

static void loop_fd_ready(struct loop_watch *w, uint32_t events)
{
	w->fn(w->o.l, w->o.fd, events, w->o.arg);
}

static void loop_timer_ready(struct loop_timer *t)
{
	uint64_t ticks;

	/* EAGAIN: disarmed or re-armed earlier in this round. */
	if (read(t->o.fd, &ticks, sizeof(ticks)) != sizeof(ticks))
		return;
	t->fn(t->o.l, t, t->o.arg);
}

static void loop_signal_ready(struct loop_signal *s)
{
	struct signalfd_siginfo si;

	if (read(s->o.fd, &si, sizeof(si)) != sizeof(si))
		return;
	s->fn(s->o.l, s->signo, s->o.arg);
}

static int loop_child_status(const siginfo_t *si)
{
	switch (si->si_code) {
	case CLD_EXITED:
		return W_EXITCODE(si->si_status, 0);
	case CLD_DUMPED:
		return si->si_status | WCOREFLAG;
	default:
		return si->si_status;
	}
}

/*
 * The pidfd is readable once the child exits. A status of -1 means waitid
 * failed (ECHILD: someone else reaped it, or SIGCHLD is ignored); the watch
 * is finished either way, or the readable pidfd would spin the loop.
 */
static void loop_child_ready(struct loop_child *c)
{
	struct loop *l = c->o.l;
	loop_child_fn fn = c->fn;
	void *arg = c->o.arg;
	pid_t pid = c->pid;
	siginfo_t si = { 0 };
	int status;

	if (waitid((idtype_t)P_PIDFD, (id_t)c->o.fd, &si,
		   WEXITED | WNOHANG) < 0) {
		if (errno == EINTR)
			return;
		status = -1;
	} else if (si.si_pid == 0) {
		return;
	} else {
		status = loop_child_status(&si);
	}
	/* Finished before fn runs, so fn may call loop_child_del harmlessly. */
	loop_obj_kill(&c->o);
	if (fn)
		fn(l, pid, status, arg);
}

static void loop_dispatch(struct loop_obj *o, uint32_t events)
{
	if (o->dead)
		return;
	switch (o->kind) {
	case LOOP_KIND_FD:
		loop_fd_ready((struct loop_watch *)o, events);
		break;
	case LOOP_KIND_TIMER:
		loop_timer_ready((struct loop_timer *)o);
		break;
	case LOOP_KIND_SIGNAL:
		loop_signal_ready((struct loop_signal *)o);
		break;
	case LOOP_KIND_CHILD:
		loop_child_ready((struct loop_child *)o);
		break;
	}
}

/*
 * One dispatch round: deferred calls, one epoll_wait, the callbacks. The
 * events array lives on the stack and the dead list is freed only at depth
 * 0, so a callback may even run a nested round. Returns the number of
 * events taken (EINTR counts as none), or -errno.
 */
int loop_run_once(struct loop *l, int timeout_ms)
{
	struct epoll_event ev[LOOP_MAX_EVENTS];
	int n, i;

	l->depth++;
	if (loop_run_deferred(l) || l->stop)
		timeout_ms = 0;
	n = epoll_wait(l->epfd, ev, LOOP_MAX_EVENTS, timeout_ms);
	if (n < 0)
		n = errno == EINTR ? 0 : -errno;
	l->now_ms = clock_mono_ms();
	for (i = 0; i < n; i++)
		loop_dispatch(ev[i].data.ptr, ev[i].events);
	if (--l->depth == 0)
		loop_free_dead(l);
	return n;
}

int loop_run(struct loop *l)
{
	int n;

	l->stop = false;
	while (!l->stop) {
		n = loop_run_once(l, -1);
		if (n < 0)
			return n;
	}
	return 0;
}

int loop_defer(struct loop *l, loop_defer_fn fn, void *arg)
{
	struct loop_deferred *d;

	if (!fn)
		return -EINVAL;
	d = malloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->fn = fn;
	d->arg = arg;
	d->next = NULL;
	*l->defer_tail = d;
	l->defer_tail = &d->next;
	return 0;
}

struct loop_watch *loop_watch_fd(struct loop *l, int fd, uint32_t events,
				 loop_fd_fn fn, void *arg)
{
	struct loop_watch *w;
	int err;

	if (!fn || fd < 0) {
		errno = EINVAL;
		return NULL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->fn = fn;
	w->events = events;
	err = loop_obj_add(l, &w->o, LOOP_KIND_FD, fd, events, arg);
	if (err) {
		free(w);
		errno = -err;
		return NULL;
	}
	return w;
}

int loop_watch_set(struct loop_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &w->o };

	if (w->o.dead)
		return -EINVAL;
	if (events == w->events && (events || w->off))
		return 0;
	/* epoll reports hangups and errors whatever the mask: a watch that
	 * wants nothing leaves the set, or a hung-up fd would spin. */
	if (!events) {
		if (!w->off && epoll_ctl(w->o.l->epfd, EPOLL_CTL_DEL, w->o.fd, NULL) < 0)
			return -errno;
		w->off = true;
		w->events = 0;
		return 0;
	}
	if (epoll_ctl(w->o.l->epfd, w->off ? EPOLL_CTL_ADD : EPOLL_CTL_MOD,
		      w->o.fd, &ev) < 0)
		return -errno;
	w->off = false;
	w->events = events;
	return 0;
}

void loop_watch_del(struct loop_watch *w)
{
	if (w)
		loop_obj_kill(&w->o);
}

/* Wraps a loop-owned fd in a new object; closes the fd on failure. */
static void *loop_owned_new(struct loop *l, size_t size, enum loop_kind kind,
			    int fd, void *arg)
{
	struct loop_obj *o;
	int err;

	if (fd < 0)
		return NULL;
	o = calloc(1, size);
	if (!o) {
		err = ENOMEM;
		goto fail;
	}
	err = -loop_obj_add(l, o, kind, fd, EPOLLIN, arg);
	if (err)
		goto fail;
	return o;
fail:
	free(o);
	close(fd);
	errno = err;
	return NULL;
}

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *arg)
{
	struct loop_timer *t;
	int fd;

	if (!fn) {
		errno = EINVAL;
		return NULL;
	}
	fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	t = loop_owned_new(l, sizeof(*t), LOOP_KIND_TIMER, fd, arg);
	if (t)
		t->fn = fn;
	return t;
}

static struct timespec loop_ms_to_ts(uint64_t ms)
{
	struct timespec ts = {
		.tv_sec = (time_t)(ms / 1000),
		.tv_nsec = (long)(ms % 1000) * 1000000,
	};

	return ts;
}

/* Re-arming also discards expirations not yet read. */
int loop_timer_arm(struct loop_timer *t, uint64_t first_ms,
		   uint64_t interval_ms)
{
	struct itimerspec its = { 0 };

	if (t->o.dead)
		return -EINVAL;
	if (first_ms) {
		its.it_value = loop_ms_to_ts(first_ms);
		its.it_interval = loop_ms_to_ts(interval_ms);
	}
	if (timerfd_settime(t->o.fd, 0, &its, NULL) < 0)
		return -errno;
	return 0;
}

void loop_timer_del(struct loop_timer *t)
{
	if (t)
		loop_obj_kill(&t->o);
}

/*
 * The signal is blocked before the signalfd exists, so one arriving in
 * between stays pending and is read from it. pthread_sigmask changes only
 * the calling thread's mask, which threads created later inherit: create
 * loop_signals before starting threads.
 */
struct loop_signal *loop_signal_new(struct loop *l, int signo,
				    loop_signal_fn fn, void *arg)
{
	struct loop_signal *s;
	sigset_t set;
	int err, fd;

	if (!fn || signo <= 0 || signo >= _NSIG || signo == SIGKILL ||
	    signo == SIGSTOP) {
		errno = EINVAL;
		return NULL;
	}
	err = loop_signal_hold(signo);
	if (err) {
		errno = -err;
		return NULL;
	}
	sigemptyset(&set);
	sigaddset(&set, signo);
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	s = loop_owned_new(l, sizeof(*s), LOOP_KIND_SIGNAL, fd, arg);
	if (!s) {
		err = errno;
		loop_signal_release(signo);
		errno = err;
		return NULL;
	}
	s->fn = fn;
	s->signo = signo;
	return s;
}

void loop_signal_del(struct loop_signal *s)
{
	if (s)
		loop_obj_kill(&s->o);
}

/* fn may be NULL to just reap. pidfds are always close-on-exec. */
struct loop_child *loop_child_watch(struct loop *l, pid_t pid,
				    loop_child_fn fn, void *arg)
{
	struct loop_child *c;
	int fd;

	if (pid <= 0) {
		errno = EINVAL;
		return NULL;
	}
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	c = loop_owned_new(l, sizeof(*c), LOOP_KIND_CHILD, fd, arg);
	if (c) {
		c->fn = fn;
		c->pid = pid;
	}
	return c;
}

void loop_child_del(struct loop_child *c)
{
	if (c)
		loop_obj_kill(&c->o);
}
