/*
 * cr_target: a process with known state, for checkpoint/restart tests.
 *
 *   cr_target <dir> [MiB [shared|noaltstack]]   (MiB of patterned memory,
 *                                                default 64)
 *
 * Sets up, then keeps: a counter in anonymous memory, heap data (brk),
 * stack data, a private writable mapping of <dir>/data that it wrote to,
 * MiB of patterned anonymous memory, known values in ymm8..ymm15 (xmm8..15
 * without AVX) held across a system call, handlers for SIGUSR1 and SIGUSR2,
 * SIGHUP ignored, SIGWINCH and SIGRTMIN+3 blocked, an alternate signal
 * stack, an rlimit, its name, and uid/gid 1000 with groups 1000 and 1001.
 *
 * About every 100 ms it increments the counter and writes "count <n>" to
 * <dir>/state. On SIGUSR1 it checks all of the above itself and writes
 * "PASS <n>" or "FAIL <what>" to <dir>/verdict. After a checkpoint and a
 * restart into another process, the verdict must still be PASS and the
 * count must go on from where it was. With "noaltstack" it disables its
 * alternate signal stack again (sigaltstack(SS_DISABLE)), which must be
 * restored as disabled. With "shared" it also maps a page of shared
 * anonymous memory, which checkpoint must refuse.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ID 1000
#define PAGE 4096
#define HEAP_BYTES (256 * 1024)
#define FILE_PAGES 4
#define STACK_WORDS 512

static volatile sig_atomic_t verify_requested, usr2_seen;
static uint64_t *anon;			/* anon[0] is the counter */
static uint64_t *big;
static size_t big_words;
static unsigned char *heap;
static unsigned char *fmap;
static int have_avx;
static uint64_t reg_fail;		/* iterations whose vector registers changed */
static char dir[256];
static uint64_t vec_pattern[16][4] __attribute__((aligned(32)));
static char altstack[4 * PAGE];
static int no_altstack;

static void on_usr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	usr2_seen++;
}

static uint64_t pattern(uint64_t i, uint64_t salt)
{
	return (i + 1) * 0x9e3779b97f4a7c15ULL ^ salt;
}

static int write_file(const char *name, const char *text)
{
	char path[512], tmp[520];
	int fd;
	ssize_t n = (ssize_t)strlen(text);

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, text, n) != n) {
		close(fd);
		return -1;
	}
	close(fd);
	return rename(tmp, path);
}

/*
 * Load vec_pattern into ymm8..15 (or xmm8..15), sleep in a raw nanosleep
 * system call (where a freeze catches the process), then compare. All in
 * one asm block, so that no compiled code can touch the registers between.
 * Returns nonzero if any register changed.
 */
static uint64_t sleep_holding_vectors(const struct timespec *ts)
{
	uint64_t bad = 0;
	long ret;

	if (have_avx) {
		__asm__ volatile(
			"vmovdqa 0(%[p]), %%ymm8\n\t"
			"vmovdqa 32(%[p]), %%ymm9\n\t"
			"vmovdqa 64(%[p]), %%ymm10\n\t"
			"vmovdqa 96(%[p]), %%ymm11\n\t"
			"vmovdqa 128(%[p]), %%ymm12\n\t"
			"vmovdqa 160(%[p]), %%ymm13\n\t"
			"vmovdqa 192(%[p]), %%ymm14\n\t"
			"vmovdqa 224(%[p]), %%ymm15\n\t"
			"syscall\n\t"
			"vpxor 0(%[p]), %%ymm8, %%ymm8\n\t"
			"vpxor 32(%[p]), %%ymm9, %%ymm9\n\t"
			"vpxor 64(%[p]), %%ymm10, %%ymm10\n\t"
			"vpxor 96(%[p]), %%ymm11, %%ymm11\n\t"
			"vpxor 128(%[p]), %%ymm12, %%ymm12\n\t"
			"vpxor 160(%[p]), %%ymm13, %%ymm13\n\t"
			"vpxor 192(%[p]), %%ymm14, %%ymm14\n\t"
			"vpxor 224(%[p]), %%ymm15, %%ymm15\n\t"
			"vpor %%ymm9, %%ymm8, %%ymm8\n\t"
			"vpor %%ymm10, %%ymm8, %%ymm8\n\t"
			"vpor %%ymm11, %%ymm8, %%ymm8\n\t"
			"vpor %%ymm12, %%ymm8, %%ymm8\n\t"
			"vpor %%ymm13, %%ymm8, %%ymm8\n\t"
			"vpor %%ymm14, %%ymm8, %%ymm8\n\t"
			"vpor %%ymm15, %%ymm8, %%ymm8\n\t"
			"vptest %%ymm8, %%ymm8\n\t"
			"setnz %b[bad]\n\t"
			"vzeroupper\n\t"
			: "=a"(ret), [bad] "+r"(bad)
			: "0"(35L), "D"(ts), "S"(0L), [p] "r"(vec_pattern)
			: "rcx", "r11", "memory", "cc", "xmm8", "xmm9", "xmm10",
			  "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	} else {
		__asm__ volatile(
			"movdqa 0(%[p]), %%xmm8\n\t"
			"movdqa 32(%[p]), %%xmm9\n\t"
			"movdqa 64(%[p]), %%xmm10\n\t"
			"movdqa 96(%[p]), %%xmm11\n\t"
			"syscall\n\t"
			"pxor 0(%[p]), %%xmm8\n\t"
			"pxor 32(%[p]), %%xmm9\n\t"
			"pxor 64(%[p]), %%xmm10\n\t"
			"pxor 96(%[p]), %%xmm11\n\t"
			"por %%xmm9, %%xmm8\n\t"
			"por %%xmm10, %%xmm8\n\t"
			"por %%xmm11, %%xmm8\n\t"
			"ptest %%xmm8, %%xmm8\n\t"
			"setnz %b[bad]\n\t"
			: "=a"(ret), [bad] "+r"(bad)
			: "0"(35L), "D"(ts), "S"(0L), [p] "r"(vec_pattern)
			: "rcx", "r11", "memory", "cc", "xmm8", "xmm9", "xmm10",
			  "xmm11");
	}
	(void)ret;
	return bad & 0xff;
}

#define CHECK(cond, ...)                                              \
	do {                                                          \
		if (!(cond)) {                                        \
			snprintf(why, sizeof(why), __VA_ARGS__);      \
			return -1;                                    \
		}                                                     \
	} while (0)

static char why[256];

static int check_all(const uint64_t *stack_words)
{
	stack_t ss;
	struct sigaction sa;
	sigset_t set;
	struct rlimit rl;
	gid_t groups[8];
	char name[17] = "";
	char path[512];
	unsigned char disk[PAGE];
	int fd, n;

	for (size_t i = 1; i < PAGE / 8; i++)
		CHECK(anon[i] == pattern(i, 1), "anon word %zu", i);
	for (size_t i = 0; i < big_words; i++)
		CHECK(big[i] == pattern(i, 2), "big word %zu is %016" PRIx64, i, big[i]);
	for (size_t i = 0; i < HEAP_BYTES; i++)
		CHECK(heap[i] == (unsigned char)(i * 7 + 3), "heap byte %zu", i);
	CHECK(sbrk(0) == heap + HEAP_BYTES, "brk %p, expected %p", sbrk(0),
	      (void *)(heap + HEAP_BYTES));
	for (size_t i = 0; i < STACK_WORDS; i++)
		CHECK(stack_words[i] == pattern(i, 3), "stack word %zu", i);
	for (size_t i = 0; i < FILE_PAGES * PAGE; i++)
		CHECK(fmap[i] == (unsigned char)(i % PAGE < 100 ? 'W' : i * 13),
		      "file mapping byte %zu", i);
	/* The private mapping's writes never reached the file. */
	snprintf(path, sizeof(path), "%s/data", dir);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0, "open data: %s", strerror(errno));
	n = (int)read(fd, disk, sizeof(disk));
	close(fd);
	CHECK(n == PAGE && disk[0] == 0 && disk[1] == 13, "data file changed");
	CHECK(reg_fail == 0, "vector registers changed in %" PRIu64 " sleeps", reg_fail);

	CHECK(sigaction(SIGUSR1, NULL, &sa) == 0 && sa.sa_handler == on_usr1 &&
	      (sa.sa_flags & SA_RESTART) && sigismember(&sa.sa_mask, SIGUSR2),
	      "SIGUSR1 action");
	CHECK(sigaction(SIGUSR2, NULL, &sa) == 0 && sa.sa_sigaction == on_usr2 &&
	      (sa.sa_flags & SA_SIGINFO) && (sa.sa_flags & SA_ONSTACK),
	      "SIGUSR2 action");
	CHECK(sigaction(SIGHUP, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN,
	      "SIGHUP action");
	CHECK(sigprocmask(SIG_BLOCK, NULL, &set) == 0 && sigismember(&set, SIGWINCH) &&
	      sigismember(&set, SIGRTMIN + 3) && !sigismember(&set, SIGUSR1),
	      "blocked mask");
	CHECK(getuid() == ID && geteuid() == ID && getgid() == ID && getegid() == ID,
	      "ids %d/%d %d/%d", getuid(), geteuid(), getgid(), getegid());
	n = getgroups(8, groups);
	CHECK(n == 2 && groups[0] == ID && groups[1] == ID + 1, "groups (%d)", n);
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == 100 &&
	      rl.rlim_max == 200, "RLIMIT_NOFILE");
	prctl(PR_GET_NAME, name);
	CHECK(strcmp(name, "cr_target") == 0, "comm %s", name);
	CHECK(sigaltstack(NULL, &ss) == 0, "sigaltstack");
	if (no_altstack)
		CHECK(ss.ss_flags == SS_DISABLE, "altstack flags %#x", ss.ss_flags);
	else
		CHECK(ss.ss_flags == 0 && ss.ss_sp == altstack &&
		      ss.ss_size == sizeof(altstack),
		      "altstack %p+%zu flags %#x", ss.ss_sp, ss.ss_size, ss.ss_flags);
	return 0;
}

int main(int argc, char **argv)
{
	const struct timespec tick = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
	uint64_t stack_words[STACK_WORDS];
	unsigned long mib = 64;
	struct sigaction sa;
	struct rlimit rl = { .rlim_cur = 100, .rlim_max = 200 };
	gid_t groups[2] = { ID, ID + 1 };
	unsigned int a, b, c, d;
	char path[512], line[300];
	unsigned char page[PAGE];
	stack_t ss;
	sigset_t set;
	int fd;

	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: %s <dir> [MiB [shared|noaltstack]]\n", argv[0]);
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	if (argc >= 3)
		mib = strtoul(argv[2], NULL, 10);
	if (argc == 4 && strcmp(argv[3], "noaltstack") == 0) {
		no_altstack = 1;
	} else if (argc == 4 && strcmp(argv[3], "shared") == 0) {
		char *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		if (shared == MAP_FAILED) {
			perror("cr_target: shared mapping");
			return 1;
		}
		shared[0] = 1;
	} else if (argc == 4) {
		fprintf(stderr, "cr_target: unknown mode %s\n", argv[3]);
		return 2;
	}
	prctl(PR_SET_NAME, "cr_target");

	/* AVX needs CPU support and the OS saving ymm (OSXSAVE, XCR0 bit 2). */
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_AVX) && (c & bit_OSXSAVE)) {
		uint32_t lo, hi;

		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		have_avx = (lo & 6) == 6;
	}
	for (int r = 0; r < 16; r++)
		for (int w = 0; w < 4; w++)
			vec_pattern[r][w] = pattern(r * 4 + w, 4);

	/* Files first, while still root: dir and data owned by the new uid. */
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/data", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror("cr_target: data");
		return 1;
	}
	for (int i = 0; i < PAGE; i++)
		page[i] = (unsigned char)(i * 13);
	for (int p = 0; p < FILE_PAGES; p++)
		if (write(fd, page, PAGE) != PAGE) {
			perror("cr_target: write data");
			return 1;
		}
	fmap = mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	if (fmap == MAP_FAILED) {
		perror("cr_target: mmap data");
		return 1;
	}
	for (int p = 0; p < FILE_PAGES; p++)
		memset(fmap + p * PAGE, 'W', 100);
	if (chown(dir, ID, ID) != 0) {
		perror("cr_target: chown");
		return 1;
	}

	anon = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	big_words = mib * 1024 * 1024 / 8;
	big = mmap(NULL, big_words * 8, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	heap = sbrk(HEAP_BYTES);
	if (anon == MAP_FAILED || big == MAP_FAILED || heap == (void *)-1) {
		perror("cr_target: memory");
		return 1;
	}
	for (size_t i = 1; i < PAGE / 8; i++)
		anon[i] = pattern(i, 1);
	for (size_t i = 0; i < big_words; i++)
		big[i] = pattern(i, 2);
	for (size_t i = 0; i < HEAP_BYTES; i++)
		heap[i] = (unsigned char)(i * 7 + 3);
	for (size_t i = 0; i < STACK_WORDS; i++)
		stack_words[i] = pattern(i, 3);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	sigaction(SIGUSR1, &sa, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr2;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGRTMIN + 3);
	sigprocmask(SIG_BLOCK, &set, NULL);
	ss.ss_sp = altstack;
	ss.ss_size = sizeof(altstack);
	ss.ss_flags = 0;
	sigaltstack(&ss, NULL);
	if (no_altstack) {
		ss.ss_flags = SS_DISABLE;
		sigaltstack(&ss, NULL);
	}
	setrlimit(RLIMIT_NOFILE, &rl);

	if (setgroups(2, groups) != 0 || setgid(ID) != 0 || setuid(ID) != 0) {
		perror("cr_target: dropping to uid 1000");
		return 1;
	}
	prctl(PR_SET_DUMPABLE, 1);
	printf("cr_target: pid %d ready (%lu MiB, %s)\n", getpid(), mib,
	       have_avx ? "avx" : "sse");
	fflush(stdout);

	for (;;) {
		anon[0]++;
		snprintf(line, sizeof(line), "count %" PRIu64 "\n", anon[0]);
		write_file("state", line);
		if (verify_requested) {
			verify_requested = 0;
			if (check_all(stack_words) == 0)
				snprintf(line, sizeof(line), "PASS %" PRIu64 "\n", anon[0]);
			else
				snprintf(line, sizeof(line), "FAIL %s\n", why);
			write_file("verdict", line);
		}
		reg_fail += sleep_holding_vectors(&tick);
	}
}
