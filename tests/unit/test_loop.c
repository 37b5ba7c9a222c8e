/* Unit tests for lib/loop.c: fd, timer, signal and child watches, deferred
 * calls, deletion from callbacks and loop_stop. Every wait is bounded, and
 * tests that could block for good arm alarm() so a broken loop fails. */
#include "tests/unit/unit.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/loop.h"

/* Longest any test waits for something that should happen. */
#define WAIT_MS 2000

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs rounds until *count reaches want or WAIT_MS pass. */
static int run_until(struct loop *l, const int *count, int want)
{
	uint64_t end = mono_ms() + WAIT_MS;

	while (*count < want && mono_ms() < end)
		if (loop_run_once(l, 50) < 0)
			return 0;
	return *count >= want;
}

/* Runs rounds for about ms milliseconds, whatever happens. */
static void run_for(struct loop *l, int ms)
{
	uint64_t end = mono_ms() + (uint64_t)ms;

	while (mono_ms() < end)
		loop_run_once(l, 10);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int signal_blocked(int signo)
{
	sigset_t cur;

	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	return sigismember(&cur, signo);
}

struct fd_seen {
	int count;
	int fd;
	uint32_t events;
};

static void on_readable(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct fd_seen *s = arg;
	char c;

	s->count++;
	s->fd = fd;
	s->events = events;
	if (read(fd, &c, 1) != 1)
		s->count += 1000;
}

TEST(pipe_watch_fires_on_write_only)
{
	struct loop *l = loop_new();
	struct fd_seen seen = { 0 };
	struct loop_watch *w;
	int p[2];

	CHECK(l);
	CHECK_INT(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	w = loop_watch_fd(l, p[0], EPOLLIN, on_readable, &seen);
	CHECK(w);
	CHECK_INT(loop_run_once(l, 20), 0);
	CHECK_INT(seen.count, 0);
	CHECK_INT(write(p[1], "x", 1), 1);
	CHECK_INT(loop_run_once(l, WAIT_MS), 1);
	CHECK_INT(seen.count, 1);
	CHECK_INT(seen.fd, p[0]);
	CHECK(seen.events & EPOLLIN);
	/* Drained by the callback: quiet again. */
	CHECK_INT(loop_run_once(l, 20), 0);
	CHECK_INT(seen.count, 1);
	/* No events asked for: a ready fd stays quiet until asked again. */
	CHECK_INT(loop_watch_set(w, 0), 0);
	CHECK_INT(write(p[1], "y", 1), 1);
	CHECK_INT(loop_run_once(l, 20), 0);
	CHECK_INT(seen.count, 1);
	CHECK_INT(loop_watch_set(w, EPOLLIN), 0);
	CHECK_INT(loop_run_once(l, WAIT_MS), 1);
	CHECK_INT(seen.count, 2);
	loop_watch_del(w);
	loop_free(l);
	/* The caller's fds stay open. */
	CHECK_INT(fcntl(p[0], F_GETFD), FD_CLOEXEC);
	close(p[0]);
	close(p[1]);
}

static void on_timer(struct loop *l, struct loop_timer *t, void *arg)
{
	(*(int *)arg)++;
}

TEST(oneshot_timer_fires_once)
{
	struct loop *l = loop_new();
	struct loop_timer *t;
	uint64_t start;
	int fired = 0;

	CHECK(l);
	t = loop_timer_new(l, on_timer, &fired);
	CHECK(t);
	start = loop_now_ms(l);
	CHECK_INT(loop_timer_arm(t, 30, 0), 0);
	CHECK(run_until(l, &fired, 1));
	CHECK_INT(fired, 1);
	CHECK(loop_now_ms(l) - start >= 30);
	run_for(l, 100);
	CHECK_INT(fired, 1);
	loop_timer_del(t);
	loop_free(l);
}

TEST(interval_timer_repeats_until_disarmed)
{
	struct loop *l = loop_new();
	struct loop_timer *t;
	int fired = 0, seen;

	CHECK(l);
	t = loop_timer_new(l, on_timer, &fired);
	CHECK(t);
	CHECK_INT(loop_timer_arm(t, 10, 10), 0);
	CHECK(run_until(l, &fired, 3));
	CHECK_INT(loop_timer_arm(t, 0, 10), 0);
	seen = fired;
	run_for(l, 100);
	CHECK_INT(fired, seen);
	/* Re-arming works after disarming. */
	CHECK_INT(loop_timer_arm(t, 10, 0), 0);
	CHECK(run_until(l, &fired, seen + 1));
	loop_free(l);
}

struct sig_seen {
	int count;
	int signo;
};

static void on_signal(struct loop *l, int signo, void *arg)
{
	struct sig_seen *s = arg;

	s->count++;
	s->signo = signo;
}

TEST(signal_delivered_to_callback)
{
	struct loop *l = loop_new();
	struct sig_seen s1 = { 0 }, s2 = { 0 };
	struct loop_signal *a, *b;

	CHECK(l);
	CHECK(!signal_blocked(SIGUSR1));
	a = loop_signal_new(l, SIGUSR1, on_signal, &s1);
	CHECK(a);
	b = loop_signal_new(l, SIGUSR2, on_signal, &s2);
	CHECK(b);
	CHECK(signal_blocked(SIGUSR1));
	CHECK_INT(raise(SIGUSR1), 0);
	CHECK(run_until(l, &s1.count, 1));
	CHECK_INT(s1.signo, SIGUSR1);
	CHECK_INT(s2.count, 0);
	CHECK_INT(kill(getpid(), SIGUSR2), 0);
	CHECK(run_until(l, &s2.count, 1));
	CHECK_INT(s2.signo, SIGUSR2);
	CHECK_INT(s1.count, 1);
	loop_signal_del(a);
	loop_signal_del(b);
	CHECK(!signal_blocked(SIGUSR1));
	CHECK(!signal_blocked(SIGUSR2));
	loop_free(l);
}

TEST(signal_unblocked_after_last_del)
{
	struct loop *l = loop_new();
	struct sig_seen s = { 0 };
	struct loop_signal *a, *b;
	sigset_t set;

	CHECK(l);
	a = loop_signal_new(l, SIGUSR1, on_signal, &s);
	b = loop_signal_new(l, SIGUSR1, on_signal, &s);
	CHECK(a && b);
	loop_signal_del(a);
	CHECK(signal_blocked(SIGUSR1));
	loop_signal_del(b);
	CHECK(!signal_blocked(SIGUSR1));

	/* Blocked by someone else first: stays blocked. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	a = loop_signal_new(l, SIGUSR2, on_signal, &s);
	CHECK(a);
	loop_signal_del(a);
	CHECK(signal_blocked(SIGUSR2));
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	/* loop_free restores the mask too. */
	a = loop_signal_new(l, SIGUSR1, on_signal, &s);
	CHECK(a);
	loop_free(l);
	CHECK(!signal_blocked(SIGUSR1));
}

struct child_seen {
	int count;
	pid_t pid;
	int status;
};

static void on_child(struct loop *l, pid_t pid, int status, void *arg)
{
	struct child_seen *c = arg;

	c->count++;
	c->pid = pid;
	c->status = status;
}

static pid_t fork_child(int exit_code, int wait_forever)
{
	pid_t pid = fork();

	if (pid == 0) {
		alarm(10);	/* never outlive a broken test */
		if (wait_forever)
			for (;;)
				pause();
		_exit(exit_code);
	}
	return pid;
}

/* Valgrind (3.19) lacks pidfd_open; the kernels we target all have it. */
static int child_unsupported(struct loop *l, pid_t pid)
{
	if (errno != ENOSYS)
		return 0;
	fprintf(stderr, "  pidfd_open: ENOSYS (valgrind?), child test skipped\n");
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	loop_free(l);
	return 1;
}

TEST(child_exit_status)
{
	struct loop *l = loop_new();
	struct child_seen c = { 0 };
	struct loop_child *w;
	pid_t pid;

	CHECK(l);
	pid = fork_child(42, 0);
	CHECK(pid > 0);
	w = loop_child_watch(l, pid, on_child, &c);
	if (!w && child_unsupported(l, pid))
		return;
	CHECK(w);
	CHECK(run_until(l, &c.count, 1));
	CHECK_INT(c.pid, pid);
	CHECK(WIFEXITED(c.status));
	CHECK_INT(WEXITSTATUS(c.status), 42);
	/* Reaped already, and the watch is gone. */
	CHECK_INT(waitpid(pid, NULL, WNOHANG), -1);
	CHECK_INT(errno, ECHILD);
	run_for(l, 50);
	CHECK_INT(c.count, 1);
	loop_free(l);
}

TEST(child_killed_by_signal)
{
	struct loop *l = loop_new();
	struct child_seen c = { 0 };
	struct loop_child *w;
	pid_t pid;

	CHECK(l);
	pid = fork_child(0, 1);
	CHECK(pid > 0);
	w = loop_child_watch(l, pid, on_child, &c);
	if (!w && child_unsupported(l, pid))
		return;
	if (!w)
		kill(pid, SIGKILL);
	CHECK(w);
	/* Still running: nothing to report. */
	CHECK_INT(loop_run_once(l, 20), 0);
	CHECK_INT(c.count, 0);
	CHECK_INT(kill(pid, SIGKILL), 0);
	CHECK(run_until(l, &c.count, 1));
	CHECK(WIFSIGNALED(c.status));
	CHECK_INT(WTERMSIG(c.status), SIGKILL);
	loop_free(l);
}

static void on_child_del_self(struct loop *l, pid_t pid, int status,
			      void *arg)
{
	struct loop_child **w = arg;

	/* Already finished; must be a harmless no-op. */
	loop_child_del(*w);
	*w = NULL;
}

TEST(child_del_in_callback_and_bad_args)
{
	struct loop *l = loop_new();
	struct loop_child *w;
	uint64_t end;
	pid_t pid;

	CHECK(l);
	errno = 0;
	CHECK(!loop_child_watch(l, -1, on_child, NULL));
	CHECK_INT(errno, EINVAL);
	errno = 0;
	CHECK(!loop_signal_new(l, SIGKILL, on_signal, NULL));
	CHECK_INT(errno, EINVAL);
	pid = fork_child(0, 0);
	CHECK(pid > 0);
	w = loop_child_watch(l, pid, on_child_del_self, &w);
	if (!w && child_unsupported(l, pid))
		return;
	CHECK(w);
	end = mono_ms() + WAIT_MS;
	while (w && mono_ms() < end)
		loop_run_once(l, 50);
	CHECK(!w);
	loop_free(l);
}

struct defer_seen {
	int first, second, spin;
};

static void on_defer_second(struct loop *l, void *arg)
{
	((struct defer_seen *)arg)->second++;
}

static void on_defer_first(struct loop *l, void *arg)
{
	((struct defer_seen *)arg)->first++;
	loop_defer(l, on_defer_second, arg);
}

/* Capped so that a loop running new calls in the same round fails the
 * test instead of spinning forever. */
static void on_defer_spin(struct loop *l, void *arg)
{
	struct defer_seen *d = arg;

	if (++d->spin < 100)
		loop_defer(l, on_defer_spin, arg);
}

TEST(defer_runs_next_round)
{
	struct loop *l = loop_new();
	struct defer_seen d = { 0 };
	uint64_t start;

	CHECK(l);
	CHECK_INT(loop_defer(l, on_defer_first, &d), 0);
	CHECK_INT(d.first, 0);
	/* The defer queued in round one must not let round one block. */
	start = mono_ms();
	CHECK_INT(loop_run_once(l, WAIT_MS), 0);
	CHECK(mono_ms() - start < WAIT_MS / 2);
	CHECK_INT(d.first, 1);
	CHECK_INT(d.second, 0);
	CHECK_INT(loop_run_once(l, 0), 0);
	CHECK_INT(d.first, 1);
	CHECK_INT(d.second, 1);
	CHECK_INT(loop_run_once(l, 0), 0);
	CHECK_INT(d.second, 1);

	/* A call that re-queues itself runs once per round. */
	CHECK_INT(loop_defer(l, on_defer_spin, &d), 0);
	CHECK_INT(loop_run_once(l, 0), 0);
	CHECK_INT(d.spin, 1);
	CHECK_INT(loop_run_once(l, 0), 0);
	CHECK_INT(d.spin, 2);
	/* Pending calls are freed with the loop, not run. */
	loop_free(l);
	CHECK_INT(d.spin, 2);
}

/* A watch and a timer, both ready in one round; whichever runs first
 * deletes the other. */
struct pair {
	struct loop_watch *w;
	struct loop_timer *t;
	int watch_calls, timer_calls;
};

static void on_pair_watch(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct pair *p = arg;

	p->watch_calls++;
	loop_timer_del(p->t);
	p->t = NULL;
}

static void on_pair_timer(struct loop *l, struct loop_timer *t, void *arg)
{
	struct pair *p = arg;

	p->timer_calls++;
	loop_watch_del(p->w);
	p->w = NULL;
}

/* Two pipe watches, both ready in one round; whichever runs first deletes
 * the other. */
struct two_pipes {
	struct loop_watch *w[2];
	int calls[2];
};

struct pipe_end {
	struct two_pipes *tp;
	int me;
};

static void on_pipe_del_other(struct loop *l, int fd, uint32_t events,
			      void *arg)
{
	struct pipe_end *e = arg;
	int other = !e->me;

	e->tp->calls[e->me]++;
	loop_watch_del(e->tp->w[other]);
	e->tp->w[other] = NULL;
}

TEST(delete_other_ready_watch_in_same_round)
{
	struct loop *l = loop_new();
	struct two_pipes tp = { { NULL, NULL }, { 0, 0 } };
	struct pipe_end ends[2] = { { &tp, 0 }, { &tp, 1 } };
	int i, survivor, fds[2][2];

	CHECK(l);
	for (i = 0; i < 2; i++) {
		CHECK_INT(pipe2(fds[i], O_CLOEXEC | O_NONBLOCK), 0);
		tp.w[i] = loop_watch_fd(l, fds[i][0], EPOLLIN,
					on_pipe_del_other, &ends[i]);
		CHECK(tp.w[i]);
		CHECK_INT(write(fds[i][1], "x", 1), 1);
	}
	CHECK_INT(loop_run_once(l, WAIT_MS), 2);
	CHECK_INT(tp.calls[0] + tp.calls[1], 1);
	survivor = tp.calls[0] ? 0 : 1;
	CHECK(tp.w[survivor] && !tp.w[!survivor]);
	/* Level-triggered: the survivor fires again, the other never. */
	CHECK_INT(loop_run_once(l, WAIT_MS), 1);
	CHECK_INT(tp.calls[survivor], 2);
	CHECK_INT(tp.calls[!survivor], 0);
	loop_watch_del(tp.w[survivor]);
	loop_free(l);
	for (i = 0; i < 2; i++) {
		close(fds[i][0]);
		close(fds[i][1]);
	}
}

TEST(delete_other_kind_in_same_round)
{
	struct loop *l = loop_new();
	struct pair p = { 0 };
	int fds[2];

	CHECK(l);
	CHECK_INT(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
	p.w = loop_watch_fd(l, fds[0], EPOLLIN, on_pair_watch, &p);
	p.t = loop_timer_new(l, on_pair_timer, &p);
	CHECK(p.w && p.t);
	CHECK_INT(loop_timer_arm(p.t, 1, 0), 0);
	CHECK_INT(write(fds[1], "x", 1), 1);
	usleep(20 * 1000);
	CHECK_INT(loop_run_once(l, WAIT_MS), 2);
	CHECK_INT(p.watch_calls + p.timer_calls, 1);
	run_for(l, 30);
	if (p.w) {
		/* The watch won and keeps firing; the timer never ran. */
		CHECK(p.watch_calls > 1);
		CHECK_INT(p.timer_calls, 0);
	} else {
		CHECK_INT(p.timer_calls, 1);
		CHECK_INT(p.watch_calls, 0);
	}
	loop_free(l);
	close(fds[0]);
	close(fds[1]);
}

struct self_del {
	struct loop_watch *w;
	struct loop_timer *t;
	int calls;
};

static void on_watch_del_self(struct loop *l, int fd, uint32_t events,
			      void *arg)
{
	struct self_del *s = arg;

	s->calls++;
	loop_watch_del(s->w);
	/* A second del of a dead watch is harmless in the same round. */
	loop_watch_del(s->w);
}

static void on_timer_del_self(struct loop *l, struct loop_timer *t, void *arg)
{
	struct self_del *s = arg;

	s->calls++;
	loop_timer_del(t);
	/* A deleted timer refuses to be re-armed within the round. */
	if (loop_timer_arm(t, 1, 1) != -EINVAL)
		s->calls += 1000;
}

TEST(callback_deletes_itself)
{
	struct loop *l = loop_new();
	struct self_del s = { 0 };
	int fds[2];

	CHECK(l);
	CHECK_INT(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
	s.w = loop_watch_fd(l, fds[0], EPOLLIN, on_watch_del_self, &s);
	CHECK(s.w);
	CHECK_INT(write(fds[1], "x", 1), 1);
	CHECK_INT(loop_run_once(l, WAIT_MS), 1);
	CHECK_INT(s.calls, 1);
	/* Still readable, but nobody watches it. */
	CHECK_INT(loop_run_once(l, 20), 0);
	CHECK_INT(s.calls, 1);

	s.t = loop_timer_new(l, on_timer_del_self, &s);
	CHECK(s.t);
	CHECK_INT(loop_timer_arm(s.t, 5, 5), 0);
	CHECK(run_until(l, &s.calls, 2));
	run_for(l, 50);
	CHECK_INT(s.calls, 2);
	loop_free(l);
	close(fds[0]);
	close(fds[1]);
}

static void on_timer_stop(struct loop *l, struct loop_timer *t, void *arg)
{
	(*(int *)arg)++;
	loop_stop(l);
}

TEST(stop_from_callback_ends_run)
{
	struct loop *l = loop_new();
	struct loop_timer *t;
	int fired = 0;

	CHECK(l);
	t = loop_timer_new(l, on_timer_stop, &fired);
	CHECK(t);
	CHECK_INT(loop_timer_arm(t, 10, 10), 0);
	alarm(10);		/* a loop that never stops kills the test */
	CHECK_INT(loop_run(l), 0);
	alarm(0);
	CHECK_INT(fired, 1);
	loop_free(l);
}

static void on_alarm(int signo)
{
}

TEST(run_survives_eintr)
{
	struct loop *l = loop_new();
	struct itimerval it = { .it_value = { .tv_usec = 20000 } };
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	struct loop_timer *t;
	int fired = 0;

	CHECK(l);
	t = loop_timer_new(l, on_timer_stop, &fired);
	CHECK(t);
	CHECK_INT(loop_timer_arm(t, 100, 0), 0);
	CHECK_INT(sigaction(SIGALRM, &sa, &old), 0);
	CHECK_INT(setitimer(ITIMER_REAL, &it, NULL), 0);
	CHECK_INT(loop_run(l), 0);
	sigaction(SIGALRM, &old, NULL);
	CHECK_INT(fired, 1);
	loop_free(l);
}

static void on_nothing(struct loop *l, int fd, uint32_t events, void *arg)
{
}

static void on_defer_nothing(struct loop *l, void *arg)
{
}

TEST(free_releases_everything)
{
	struct loop *l;
	struct child_seen c = { 0 };
	int before, fds[2], fired = 0;
	pid_t pid;

	CHECK_INT(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
	before = count_fds();
	CHECK(before > 0);
	l = loop_new();
	CHECK(l);
	CHECK(loop_watch_fd(l, fds[0], EPOLLIN, on_nothing, NULL));
	CHECK(loop_timer_new(l, on_timer, &fired));
	CHECK(loop_signal_new(l, SIGUSR1, on_signal, NULL));
	pid = fork_child(0, 1);
	CHECK(pid > 0);
	if (!loop_child_watch(l, pid, on_child, &c))
		CHECK_INT(errno, ENOSYS);
	CHECK_INT(loop_defer(l, on_defer_nothing, NULL), 0);
	CHECK(count_fds() > before);
	loop_free(l);
	CHECK_INT(count_fds(), before);
	CHECK(!signal_blocked(SIGUSR1));
	/* The caller's pipe survives. */
	CHECK_INT(write(fds[1], "x", 1), 1);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(fds[0]);
	close(fds[1]);
}
