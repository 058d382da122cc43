/*
 * cr_threads: a multi-threaded process with known per-thread state, for
 * checkpoint/restart tests.
 *
 *   cr_threads <dir> [threads]        (default 8, at least 5)
 *
 * Thread 0 (main) counts, writing "count <n>" to <dir>/state about every
 * 100 ms. The other threads each have a name, a thread-local value, a
 * blocked signal mask of their own, and one kind of wait:
 *   1      futex wait without a timeout, woken by the verification
 *   2      futex wait with a 1.5 s timeout, in a loop (ETIMEDOUT expected)
 *   3      clock_nanosleep of 1.5 s, in a loop
 *   4      poll() with no fds and a 1.5 s timeout, in a loop
 *   5...   counters sleeping 10 ms at a time
 * Every thread checks, on each turn, that its tid, thread-local value and
 * signal mask are still its own and that no wait ended early with EINTR.
 *
 * On SIGUSR1 the main thread checks all of that, that each looping thread
 * goes on, that the futex waiter wakes when told, and that every thread's
 * name is kept, then writes "PASS <n>" or "FAIL <what>" to <dir>/verdict.
 * After a checkpoint and a restart, the verdict must still be PASS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define MAX_THREADS 64
#define TLS_MAGIC 0x7c0ffee000000000ULL

enum kind { MAIN, GATE, FUTEX_TIMED, SLEEPER, POLLER, COUNTER };

struct slot {
	enum kind kind;
	pid_t tid;
	char name[16];
	volatile uint64_t turns;
	volatile int bad;		/* first problem seen, as a code */
	volatile uint64_t eintr;
};

static struct slot slots[MAX_THREADS];
static int nthreads = 8;
static volatile sig_atomic_t verify_requested;
static volatile uint32_t gate, gate_woken, never;
static __thread uint64_t tls_value;

static long futex(volatile uint32_t *word, int op, uint32_t val,
		  const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static void on_usr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

/* The mask each thread keeps: its own real-time signal, and SIGUSR1. */
static void thread_mask(int i, sigset_t *set)
{
	sigemptyset(set);
	if (i > 0) {
		sigaddset(set, SIGUSR1);
		sigaddset(set, SIGRTMIN + 1 + i % 16);
	}
}

/* What every thread checks on each turn; 0 or a problem code. */
static int check_self(int i)
{
	sigset_t want, cur;

	/* Main's id is the restarting process's, the others' are kept. */
	if (i > 0 && (pid_t)syscall(SYS_gettid) != slots[i].tid)
		return 1;
	if (tls_value != (TLS_MAGIC | (uint64_t)i))
		return 2;
	thread_mask(i, &want);
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	for (int s = 1; s < 65; s++)
		if (s != SIGKILL && s != SIGSTOP &&
		    sigismember(&want, s) != sigismember(&cur, s))
			return 3;
	return 0;
}

static void *thread_main(void *arg)
{
	int i = (int)(intptr_t)arg;
	struct slot *me = &slots[i];
	const struct timespec wait = { 1, 500 * 1000 * 1000 };
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	sigset_t set;
	uint32_t seen;

	thread_mask(i, &set);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	tls_value = TLS_MAGIC | (uint64_t)i;
	me->tid = (pid_t)syscall(SYS_gettid);
	prctl(PR_SET_NAME, me->name);
	for (;;) {
		int bad = check_self(i), r = 0;

		if (bad && !me->bad)
			me->bad = bad;
		switch (me->kind) {
		case GATE:
			seen = gate;
			while (gate == seen)
				futex(&gate, FUTEX_WAIT, seen, NULL);
			gate_woken = gate;
			futex(&gate_woken, FUTEX_WAKE, 1, NULL);
			break;
		case FUTEX_TIMED:
			/* never stays 0: each wait ends by its timeout. */
			r = futex(&never, FUTEX_WAIT, 0, &wait) ? errno : 0;
			if (r == EINTR)
				me->eintr++;
			break;
		case SLEEPER:
			r = clock_nanosleep(CLOCK_MONOTONIC, 0, &wait, NULL);
			if (r == EINTR)
				me->eintr++;
			break;
		case POLLER:
			if (poll(NULL, 0, 1500) < 0 && errno == EINTR)
				me->eintr++;
			break;
		default:
			if (nanosleep(&tick, NULL) != 0 && errno == EINTR)
				me->eintr++;
			break;
		}
		me->turns++;
	}
	return NULL;
}

static int comm_of(pid_t tid, char *out, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, out, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	out[n] = 0;
	out[strcspn(out, "\n")] = 0;
	return 0;
}

#define FAIL(...) do { snprintf(why, sizeof(why), __VA_ARGS__); goto out; } while (0)

static void verify(uint64_t count)
{
	uint64_t before[MAX_THREADS], deadline;
	char why[200] = "", comm[32];
	int i, moving;
	uint32_t want;
	pid_t tid;

	for (i = 0; i < nthreads; i++) {
		if (slots[i].bad)
			FAIL("thread %d (%s): problem %d", i, slots[i].name, slots[i].bad);
		if (slots[i].eintr)
			FAIL("thread %d (%s): %llu waits ended with EINTR", i,
			     slots[i].name, (unsigned long long)slots[i].eintr);
		tid = i ? slots[i].tid : (pid_t)syscall(SYS_gettid);
		if (comm_of(tid, comm, sizeof(comm)) || strcmp(comm, slots[i].name))
			FAIL("thread %d: tid %d is not named %s", i, tid, slots[i].name);
		before[i] = slots[i].turns;
	}
	if (check_self(0))
		FAIL("main thread: problem %d", check_self(0));

	/* Every looping thread goes on (the timed waits take 1.5 s a turn). */
	deadline = lab_now_ms() + 20000;
	do {
		struct timespec t = { 0, 50 * 1000 * 1000 };

		nanosleep(&t, NULL);
		moving = 1;
		for (i = 1; i < nthreads; i++)
			if (slots[i].kind != GATE && slots[i].turns <= before[i])
				moving = 0;
	} while (!moving && lab_now_ms() < deadline);
	for (i = 1; i < nthreads; i++)
		if (slots[i].kind != GATE && slots[i].turns <= before[i])
			FAIL("thread %d (%s) stopped", i, slots[i].name);

	/* The futex waiter wakes when the gate moves. */
	want = ++gate;
	futex(&gate, FUTEX_WAKE, 1, NULL);
	deadline = lab_now_ms() + 10000;
	while (gate_woken != want && lab_now_ms() < deadline) {
		struct timespec t = { 0, 1000 * 1000 };

		futex(&gate_woken, FUTEX_WAIT, gate_woken, &t);
	}
	if (gate_woken != want)
		FAIL("the futex waiter did not wake");
	for (i = 0; i < nthreads; i++)
		if (slots[i].bad || slots[i].eintr)
			FAIL("thread %d (%s): problem %d, %llu EINTR", i, slots[i].name,
			     slots[i].bad, (unsigned long long)slots[i].eintr);
out:
	lab_verdict(why, count);
}

int main(int argc, char **argv)
{
	const struct timespec tick = { 0, 100 * 1000 * 1000 };
	struct sigaction sa;
	uint64_t count = 0;
	sigset_t set;
	int i;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s <dir> [threads]\n", argv[0]);
		return 2;
	}
	snprintf(lab_dir, sizeof(lab_dir), "%s", argv[1]);
	if (argc == 3)
		nthreads = atoi(argv[2]);
	if (nthreads < 5 || nthreads > MAX_THREADS) {
		fprintf(stderr, "cr_threads: 5 to %d threads\n", MAX_THREADS);
		return 2;
	}
	mkdir(lab_dir, 0755);
	prctl(PR_SET_NAME, "cr_threads");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	thread_mask(0, &set);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	tls_value = TLS_MAGIC;
	slots[0].kind = MAIN;
	slots[0].tid = getpid();
	snprintf(slots[0].name, sizeof(slots[0].name), "cr_threads");
	for (i = 1; i < nthreads; i++) {
		static const char *const names[] = { "", "crt-gate", "crt-futex",
						     "crt-sleep", "crt-poll" };
		pthread_t th;

		slots[i].kind = i <= POLLER ? (enum kind)i : COUNTER;
		if (i <= POLLER)
			snprintf(slots[i].name, sizeof(slots[i].name), "%s", names[i]);
		else
			snprintf(slots[i].name, sizeof(slots[i].name), "crt-count%d", i);
		if (pthread_create(&th, NULL, thread_main, (void *)(intptr_t)i) != 0) {
			fprintf(stderr, "cr_threads: pthread_create failed\n");
			return 1;
		}
	}
	/* All threads have started (and are in their waits) before counting. */
	for (i = 1; i < nthreads; i++)
		while (!slots[i].tid)
			nanosleep(&tick, NULL);
	for (;;) {
		count++;
		lab_count(count);
		if (verify_requested) {
			verify_requested = 0;
			verify(count);
		}
		if (nanosleep(&tick, NULL) != 0 && errno == EINTR && !verify_requested)
			slots[0].eintr++;
	}
}
