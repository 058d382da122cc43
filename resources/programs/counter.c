/*
 * counter: a small workload for checkpoint/restart tests.
 *
 *   counter [MiB] [state-file]        (defaults: 1, /tmp/counter.state)
 *
 * Allocates MiB of anonymous memory, fills it with a position-dependent
 * pattern, then loops forever: about every 100 ms it increments a counter
 * and writes "counter <n> checksum <hex>" to the state file (through a
 * temporary file and rename(), so readers never see half a line).
 * On SIGUSR1 it checks every word of the region against the pattern and
 * writes "PASS <counter>" or "FAIL <reason>" to "<state-file>.verdict".
 *
 * After a restore, the counter must go on from where it was and the
 * verdict must be PASS: memory, registers and open files all came back.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t verify_requested;

static void on_sigusr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

/* The expected value of word i: different in every word, cheap to compute. */
static uint64_t pattern(size_t i)
{
	return (i + 1) * 0x9e3779b97f4a7c15ULL;
}

/* Order-dependent 64-bit checksum (FNV-1a over words). */
static uint64_t checksum(const uint64_t *words, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ words[i]) * 0x100000001b3ULL;
	return h;
}

/* Replace path with text atomically: write path.tmp, then rename it. */
static int write_atomic(const char *path, const char *text)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	if (fputs(text, f) == EOF) {
		fclose(f);
		unlink(tmp);
		return -1;
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *state = argc > 2 ? argv[2] : "/tmp/counter.state";
	unsigned long mib = 1;
	char verdict_path[4096], line[256];
	const struct timespec tick = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
	struct sigaction sa;
	uint64_t *words, counter = 0;
	size_t n;

	if (argc > 1) {
		char *end;

		mib = strtoul(argv[1], &end, 10);
		if (*argv[1] == '\0' || *end != '\0' || mib == 0 || mib > (1UL << 20)) {
			fprintf(stderr, "usage: %s [MiB] [state-file]\n", argv[0]);
			return 2;
		}
	}
	if (snprintf(verdict_path, sizeof(verdict_path), "%s.verdict", state) >=
	    (int)sizeof(verdict_path)) {
		fprintf(stderr, "counter: state file name too long\n");
		return 2;
	}

	n = mib * 1024 * 1024 / sizeof(*words);
	words = mmap(NULL, n * sizeof(*words), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (words == MAP_FAILED) {
		perror("counter: mmap");
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		words[i] = pattern(i);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigusr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0) {
		perror("counter: sigaction");
		return 1;
	}

	for (;;) {
		counter++;
		snprintf(line, sizeof(line), "counter %" PRIu64 " checksum %016" PRIx64 "\n",
			 counter, checksum(words, n));
		if (write_atomic(state, line) != 0)
			perror("counter: writing the state file");

		if (verify_requested) {
			verify_requested = 0;
			snprintf(line, sizeof(line), "PASS %" PRIu64 "\n", counter);
			for (size_t i = 0; i < n; i++) {
				if (words[i] != pattern(i)) {
					snprintf(line, sizeof(line),
						 "FAIL word %zu is %016" PRIx64 ", expected %016" PRIx64 "\n",
						 i, words[i], pattern(i));
					break;
				}
			}
			if (write_atomic(verdict_path, line) != 0)
				perror("counter: writing the verdict file");
		}
		nanosleep(&tick, NULL);	/* cut short by SIGUSR1: fine */
	}
}
