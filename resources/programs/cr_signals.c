/*
 * cr_signals: a process with queued signals and armed interval timers, for
 * checkpoint/restart tests.
 *
 *   cr_signals <dir> [posixtimer|cputimer]
 *
 * Sets up, and leaves queued (blocked): real-time signals with payloads
 * sent to the process (SIGRTMIN+1 five times, SIGRTMIN+2 three times, by
 * sigqueue), SIGUSR2 and SIGWINCH sent by kill, and three SIGRTMIN+3 with
 * payloads sent to its second thread only (pthread_sigqueue). Arms
 * ITIMER_REAL every 300 ms (SIGALRM counted by a handler) and
 * ITIMER_VIRTUAL at 1000 s with a 7 s interval. With "posixtimer" it also
 * creates three POSIX timers: A on CLOCK_MONOTONIC every 200 ms
 * (SIGRTMIN+5, value 0x5151, counted by a handler), B on CLOCK_BOOTTIME
 * once after 50 ms (SIGRTMIN+4, value 0x4242, blocked: it stays queued)
 * C on CLOCK_REALTIME at 1000 s for the helper thread (SIGRTMIN+6) and D
 * at 1000 s for the main thread (SIGRTMIN+7), whose id changes when a
 * restart in a new process makes it.
 * With "cputimer" it creates one on CLOCK_PROCESS_CPUTIME_ID, which
 * checkpoint must refuse.
 *
 * Main writes "count <n>" to <dir>/state about every 100 ms, and reads
 * CLOCK_MONOTONIC and CLOCK_BOOTTIME each time: they must never go back
 * (also across a restart in another machine). On SIGUSR1 it checks that,
 * that every queued signal is still queued, in order, with its payload and
 * sender, on the right thread; that SIGALRM keeps coming; and the timers'
 * settings; with "posixtimer", that A keeps firing with its value, that
 * B's signal is queued, from B, and that C and D still count down from
 * 1000 s;
 * then queues the same signals again (and arms B again) and writes
 * "PASS <n>" or "FAIL <what>" to <dir>/verdict.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define NR_RT1 5
#define NR_RT2 3
#define NR_PRIV 3

static volatile sig_atomic_t verify_requested;
static volatile uint64_t alarms;
static pid_t sender;
static pthread_t helper;
static volatile int helper_request, helper_result;
static int64_t clock_back_ns;		/* the largest step back seen */
static timer_t timers[4];		/* posixtimer: A, B, C, D */
static int have_timers;
static volatile uint64_t ticks;		/* timer A's signals */
static volatile int tick_bad;		/* one came without A's value */
static volatile pid_t helper_tid;
static const char *clock_back_name;

static void on_usr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

static void on_alrm(int sig)
{
	(void)sig;
	alarms++;
}

static void on_tick(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_code != SI_TIMER || si->si_value.sival_int != 0x5151)
		tick_bad = 1;
	ticks++;
}

static const struct itimerspec timer_b_once = { { 0, 0 }, { 0, 50000000 } };

/* The posixtimer mode's timers A, B and C (see the top). */
static int make_timers(void)
{
	struct sigevent a = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 5 };
	struct sigevent b = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 4 };
	struct sigevent c = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 6 };
	struct sigevent d = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 7 };
	struct itimerspec every = { { 0, 200000000 }, { 0, 200000000 } };
	struct itimerspec far = { { 0, 0 }, { 1000, 0 } };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_tick;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN + 5, &sa, NULL);
	a.sigev_value.sival_int = 0x5151;
	b.sigev_value.sival_int = 0x4242;
	c.sigev_value.sival_int = 0x6363;
	c._sigev_un._tid = helper_tid;
	d._sigev_un._tid = gettid();
	have_timers = 1;
	return timer_create(CLOCK_MONOTONIC, &a, &timers[0]) ||
	       timer_create(CLOCK_BOOTTIME, &b, &timers[1]) ||
	       timer_create(CLOCK_REALTIME, &c, &timers[2]) ||
	       timer_create(CLOCK_MONOTONIC, &d, &timers[3]) ||
	       timer_settime(timers[3], 0, &far, NULL) ||
	       timer_settime(timers[0], 0, &every, NULL) ||
	       timer_settime(timers[1], 0, &timer_b_once, NULL) ||
	       timer_settime(timers[2], 0, &far, NULL);
}

/* The timers after a restart; NULL or what is wrong. */
static const char *check_timers(void)
{
	static char why[120];
	const struct timespec none = { 0, 0 };
	struct itimerspec cur;
	uint64_t t0, deadline;
	sigset_t b;
	siginfo_t si;

	if (timer_gettime(timers[0], &cur) || cur.it_interval.tv_nsec != 200000000)
		return "timer A is gone or has another interval";
	t0 = ticks;
	deadline = lab_now_ms() + 10000;
	while (ticks < t0 + 2 && lab_now_ms() < deadline)
		usleep(10000);
	if (ticks < t0 + 2)
		return "timer A stopped firing";
	if (tick_bad)
		return "timer A's signal came without its value";
	sigemptyset(&b);
	sigaddset(&b, SIGRTMIN + 4);
	if (sigtimedwait(&b, &si, &none) != SIGRTMIN + 4 || si.si_code != SI_TIMER ||
	    si.si_value.sival_int != 0x4242 || si.si_timerid != (int)(intptr_t)timers[1]) {
		snprintf(why, sizeof(why), "timer B's signal is not queued from it (code %d, value %#x)",
			 si.si_code, si.si_value.sival_int);
		return why;
	}
	timer_settime(timers[1], 0, &timer_b_once, NULL);
	for (int i = 2; i < 4; i++) {
		if (timer_gettime(timers[i], &cur) || cur.it_value.tv_sec < 900 ||
		    cur.it_value.tv_sec > 1000) {
			snprintf(why, sizeof(why), "timer %c: %ld s left, not 900 to 1000",
				 'A' + i, (long)cur.it_value.tv_sec);
			return why;
		}
	}
	return NULL;
}

static void queue_shared(void)
{
	union sigval v;
	int i;

	for (i = 0; i < NR_RT1; i++) {
		v.sival_int = 100 + i;
		sigqueue(getpid(), SIGRTMIN + 1, v);
	}
	for (i = 0; i < NR_RT2; i++) {
		v.sival_int = 200 + i;
		sigqueue(getpid(), SIGRTMIN + 2, v);
	}
	kill(getpid(), SIGUSR2);
	kill(getpid(), SIGWINCH);
}

static void queue_private(void)
{
	union sigval v;
	int i;

	for (i = 0; i < NR_PRIV; i++) {
		v.sival_int = 300 + i;
		pthread_sigqueue(helper, SIGRTMIN + 3, v);
	}
}

/* Dequeue signal @sig @n times: payloads base, base+1, ...; 0 or a problem. */
static const char *take(int sig, int n, int base, int code)
{
	static char why[120];
	const struct timespec zero = { 0, 0 };
	siginfo_t si;
	sigset_t one;
	int i;

	sigemptyset(&one);
	sigaddset(&one, sig);
	for (i = 0; i < n; i++) {
		if (sigtimedwait(&one, &si, &zero) != sig) {
			snprintf(why, sizeof(why), "signal %d: %d of %d queued", sig, i, n);
			return why;
		}
		if (si.si_code != code || si.si_pid != sender ||
		    (code == SI_QUEUE && si.si_value.sival_int != base + i)) {
			snprintf(why, sizeof(why),
				 "signal %d #%d: code %d pid %d value %d, want %d %d %d",
				 sig, i, si.si_code, si.si_pid, si.si_value.sival_int,
				 code, sender, base + i);
			return why;
		}
	}
	if (sigtimedwait(&one, &si, &zero) == sig) {
		snprintf(why, sizeof(why), "signal %d: more than %d queued", sig, n);
		return why;
	}
	return NULL;
}

static void *helper_main(void *arg)
{
	const struct timespec tick = { 0, 20 * 1000 * 1000 };
	sigset_t set;

	(void)arg;
	sigfillset(&set);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	prctl(PR_SET_NAME, "crs-helper");
	helper_tid = gettid();
	for (;;) {
		if (helper_request) {
			const char *why = take(SIGRTMIN + 3, NR_PRIV, 300, SI_QUEUE);

			helper_result = why ? 2 : 1;
			if (why)
				lab_write("helper-why", why);
			helper_request = 0;
		}
		nanosleep(&tick, NULL);
	}
	return NULL;
}

static int64_t ns_of(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads both clocks and remembers if one went back. */
static void watch_clocks(void)
{
	static int64_t last[2];
	static const clockid_t ids[2] = { CLOCK_MONOTONIC, CLOCK_BOOTTIME };
	static const char *const names[2] = { "CLOCK_MONOTONIC", "CLOCK_BOOTTIME" };

	for (int i = 0; i < 2; i++) {
		int64_t now = ns_of(ids[i]);

		if (now < last[i] && last[i] - now > clock_back_ns) {
			clock_back_ns = last[i] - now;
			clock_back_name = names[i];
		}
		last[i] = now;
	}
}

#define FAIL(...) do { snprintf(why, sizeof(why), __VA_ARGS__); goto out; } while (0)

static void verify(uint64_t count)
{
	char why[200] = "";
	const char *problem;
	struct itimerval it;
	uint64_t a0, deadline;
	sigset_t pending;

	if (clock_back_ns)
		FAIL("%s went back by %lld ms", clock_back_name,
		     (long long)(clock_back_ns / 1000000));
	sigpending(&pending);
	if (!sigismember(&pending, SIGRTMIN + 1) || !sigismember(&pending, SIGRTMIN + 2) ||
	    !sigismember(&pending, SIGUSR2) || !sigismember(&pending, SIGWINCH))
		FAIL("a process-wide signal is no longer pending");
	if ((problem = take(SIGRTMIN + 1, NR_RT1, 100, SI_QUEUE)) ||
	    (problem = take(SIGRTMIN + 2, NR_RT2, 200, SI_QUEUE)) ||
	    (problem = take(SIGUSR2, 1, 0, SI_USER)) ||
	    (problem = take(SIGWINCH, 1, 0, SI_USER)))
		FAIL("%s", problem);
	/* Main must not see the helper's own queue. */
	if (take(SIGRTMIN + 3, 0, 0, SI_QUEUE))
		FAIL("the helper's signals reached the process queue");

	helper_result = 0;
	helper_request = 1;
	deadline = lab_now_ms() + 10000;
	while (!helper_result && lab_now_ms() < deadline)
		usleep(10000);
	if (helper_result != 1)
		FAIL("helper thread: its own queued signals are wrong (%d)", helper_result);

	if (getitimer(ITIMER_REAL, &it) || it.it_interval.tv_sec != 0 ||
	    it.it_interval.tv_usec != 300000)
		FAIL("ITIMER_REAL interval %ld.%06ld", (long)it.it_interval.tv_sec,
		     (long)it.it_interval.tv_usec);
	a0 = alarms;
	deadline = lab_now_ms() + 10000;
	while (alarms < a0 + 2 && lab_now_ms() < deadline)
		usleep(10000);
	if (alarms < a0 + 2)
		FAIL("SIGALRM stopped coming (%llu)", (unsigned long long)alarms);
	if (getitimer(ITIMER_VIRTUAL, &it) || it.it_interval.tv_sec != 7 ||
	    it.it_value.tv_sec < 900 || it.it_value.tv_sec > 1000)
		FAIL("ITIMER_VIRTUAL %ld s, interval %ld s", (long)it.it_value.tv_sec,
		     (long)it.it_interval.tv_sec);
	if (have_timers && (problem = check_timers()))
		FAIL("%s", problem);
out:
	queue_shared();
	queue_private();
	lab_verdict(why, count);
}

int main(int argc, char **argv)
{
	const struct timespec tick = { 0, 100 * 1000 * 1000 };
	struct itimerval real = { { 0, 300000 }, { 0, 300000 } };
	struct itimerval virt = { { 7, 0 }, { 1000, 0 } };
	struct sigaction sa;
	uint64_t count = 0;
	sigset_t set;

	if (argc < 2 || argc > 3 ||
	    (argc == 3 && strcmp(argv[2], "posixtimer") && strcmp(argv[2], "cputimer"))) {
		fprintf(stderr, "usage: %s <dir> [posixtimer|cputimer]\n", argv[0]);
		return 2;
	}
	snprintf(lab_dir, sizeof(lab_dir), "%s", argv[1]);
	mkdir(lab_dir, 0755);
	prctl(PR_SET_NAME, "cr_signals");
	sender = getpid();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_alrm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 1);
	sigaddset(&set, SIGRTMIN + 2);
	sigaddset(&set, SIGRTMIN + 3);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGRTMIN + 4);
	sigaddset(&set, SIGRTMIN + 7);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	if (pthread_create(&helper, NULL, helper_main, NULL) != 0) {
		fprintf(stderr, "cr_signals: pthread_create failed\n");
		return 1;
	}
	queue_shared();
	queue_private();
	if (setitimer(ITIMER_REAL, &real, NULL) || setitimer(ITIMER_VIRTUAL, &virt, NULL)) {
		perror("cr_signals: setitimer");
		return 1;
	}
	while (!helper_tid)
		usleep(1000);
	if (argc == 3 && !strcmp(argv[2], "posixtimer") && make_timers()) {
		perror("cr_signals: timer_create");
		return 1;
	}
	if (argc == 3 && !strcmp(argv[2], "cputimer")) {
		struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 4 };
		struct itimerspec ts = { { 1, 0 }, { 1, 0 } };
		timer_t timer;

		if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &ev, &timer) ||
		    timer_settime(timer, 0, &ts, NULL)) {
			perror("cr_signals: timer_create");
			return 1;
		}
	}
	for (;;) {
		watch_clocks();
		count++;
		lab_count(count);
		if (verify_requested) {
			verify_requested = 0;
			verify(count);
		}
		nanosleep(&tick, NULL);
	}
}
