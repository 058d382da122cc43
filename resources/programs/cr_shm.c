/*
 * cr_shm: two processes sharing memory three ways, for checkpoint/restart
 * tests: after a restore they must still share it, not hold copies.
 *
 *   cr_shm <dir> [memfd]
 *
 * Before it forks, the parent sets up:
 *   A   a MAP_SHARED|MAP_ANONYMOUS mapping of 1 MiB + 5 pages, read-write.
 *       Its bytes (offsets into A):
 *         [0, 256 KiB)              pattern 0
 *         [512 KiB, +1 page)        pattern 1, then made read-only
 *                                   (mprotect: A is three VMAs, the
 *                                   second and third at an offset into
 *                                   the object)
 *         [768 KiB, +1 page)        pattern 2
 *         the last page             the control page (at 1 MiB + 4 pages)
 *         everything else           zero
 *   S1  a SysV segment of 100000 bytes (IPC_PRIVATE, 0600), attached
 *       read-write: pattern 3 but for its last 64 bytes (from 99936), the
 *       S1 words.
 *       Removed (IPC_RMID) once the child has it: it lives on, SHM_DEST.
 *   S2  a SysV segment with key 0x43520001 of 3 pages + 100 bytes (0640),
 *       attached read-write: pattern 4. The child detaches its inherited
 *       attachment and attaches S2 again read-only (SHM_RDONLY).
 * Pattern s at offset i is (i * (7 + 2 s) + 3 + s) mod 251 (251 is prime:
 * a page in the wrong place shows).
 *
 * The control page of A and the S1 words both start with four 64-bit
 * words: the parent's counter, the child's counter, a token from the
 * parent and the child's echo of it (its complement). In A then follow, at
 * +32, the token the child reports on and at +64 the child's verdict (a
 * string, empty if all is well).
 *
 * With "memfd" the parent also maps a page of a memfd ("cr_shm") shared,
 * after the fork and with the memfd closed, which checkpoint must refuse.
 *
 * Both processes count about every 50 ms into their counter, in A and in
 * S1; the parent writes "count <n>" to <dir>/state.
 *
 * On SIGUSR1 (sent to both) each checks its own view: the bytes of A, S1
 * and S2; its VMAs in /proc/self/maps (A's three with their permissions
 * and offsets, S1 rw-s, S2 rw-s in the parent and r--s in the child, each
 * where it was); that the read-only page of A (and, in the child, S2)
 * cannot be written. The parent also checks S1 and S2 with IPC_STAT (the
 * same ids, sizes, modes, S2's key, both attached twice, S1 SHM_DEST,
 * shmget of S2's key gives S2). Then the parent writes a new token into A
 * and into S1; the child, seeing it in each, echoes it there, then writes
 * its verdict into A and the token it answers. The parent waits up to 20 s
 * for both echoes and the child's verdict, then for the child's counter to
 * move on, in A and in S1. It writes "PASS <n>" or "FAIL <what>" to
 * <dir>/verdict (a failure stays: later checks repeat it). The tokens are
 * cleared again, so that a child that missed a check does not answer an
 * old token at the next. Both then go on counting.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define PAGE 4096
#define KIB 1024
#define A_SIZE (1024 * KIB + 5 * PAGE)
#define A_PAT_END (256 * KIB)
#define A_RO (512 * KIB)
#define A_PAGE2 (768 * KIB)
#define A_CTL (A_SIZE - PAGE)
#define A_ANSWERED (A_CTL + 32)
#define A_WHY (A_CTL + 64)
#define WHY_LEN 1024
#define S1_SIZE 100000
#define S1_WORDS (S1_SIZE - 64)
#define S2_KEY 0x43520001
#define S2_SIZE (3 * PAGE + 100)
#define ANSWER_MS 20000
#define MOVE_MS 5000

/* The first words of A's control page and of S1's last 64 bytes. */
struct words {
	uint64_t count[2];	/* the parent's, the child's */
	uint64_t token;		/* the parent's, at a check */
	uint64_t echo;		/* the child's answer: ~token */
};

static volatile sig_atomic_t verify_requested;
static char why[WHY_LEN];
static unsigned char *a, *s1, *s2;	/* s2: the child's is read-only */
static struct words *wa, *w1;
static int id1 = -1, id2 = -1;
static sigjmp_buf probe_env;

static void on_usr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(probe_env, 1);
}

static unsigned char pattern(int s, size_t i)
{
	return (unsigned char)((i * (7 + 2 * s) + 3 + s) % 251);
}

static void fail(const char *what)
{
	if (!why[0])
		snprintf(why, sizeof(why), "%s (errno %d)", what, errno);
}

static uint64_t load(uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000 };

	nanosleep(&ts, NULL);	/* cut short by SIGUSR1: fine */
}

static void fill(unsigned char *base, int s, size_t from, size_t to)
{
	size_t i;

	for (i = from; i < to; i++)
		base[i] = pattern(s, i);
}

/* Whether base[from, to) holds pattern s (zeros if s < 0); why if not. */
static int check_bytes(const char *what, const unsigned char *base, int s,
		       size_t from, size_t to)
{
	size_t i;

	for (i = from; i < to; i++) {
		unsigned char want = s < 0 ? 0 : pattern(s, i);

		if (base[i] != want) {
			if (!why[0])
				snprintf(why, sizeof(why), "%s: byte %zu is %u, not %u",
					 what, i, base[i], want);
			return 0;
		}
	}
	return 1;
}

/* The bytes of A (but its control page), S1 (but its words) and S2. */
static void check_contents(void)
{
	if (check_bytes("A", a, 0, 0, A_PAT_END) &&
	    check_bytes("A", a, -1, A_PAT_END, A_RO) &&
	    check_bytes("A's read-only page", a, 1, A_RO, A_RO + PAGE) &&
	    check_bytes("A", a, -1, A_RO + PAGE, A_PAGE2) &&
	    check_bytes("A's page at 768 KiB", a, 2, A_PAGE2, A_PAGE2 + PAGE) &&
	    check_bytes("A", a, -1, A_PAGE2 + PAGE, A_CTL) &&
	    check_bytes("S1", s1, 3, 0, S1_WORDS))
		check_bytes("S2", s2, 4, 0, S2_SIZE);
}

/*
 * The VMA of /proc/self/maps holding addr must be [addr, addr + len) with
 * perms and offset.
 */
static void check_vma(const char *what, const void *addr, size_t len,
		      const char *perms, unsigned long offset)
{
	unsigned long at = (unsigned long)addr, start = 0, end = 0, off = 0;
	char line[512], got[8];
	FILE *maps = fopen("/proc/self/maps", "r");
	int found = 0;

	if (!maps) {
		fail("opening /proc/self/maps");
		return;
	}
	while (!found && fgets(line, sizeof(line), maps))
		found = sscanf(line, "%lx-%lx %7s %lx", &start, &end, got, &off) == 4 &&
			start <= at && at < end;
	fclose(maps);
	if (why[0])
		return;
	if (!found)
		snprintf(why, sizeof(why), "%s: nothing mapped at %#lx", what, at);
	else if (start != at || end != at + len || strcmp(got, perms) || off != offset)
		snprintf(why, sizeof(why),
			 "%s: the VMA at %#lx is %#lx-%#lx %s offset %#lx, not %#lx-%#lx %s offset %#lx",
			 what, at, start, end, got, off, at, at + len, perms, offset);
}

static size_t page_up(size_t n)
{
	return (n + PAGE - 1) / PAGE * PAGE;
}

static void check_maps(int child)
{
	check_vma("A", a, A_RO, "rw-s", 0);
	check_vma("A's read-only page", a + A_RO, PAGE, "r--s", A_RO);
	check_vma("A after its read-only page", a + A_RO + PAGE,
		  A_SIZE - A_RO - PAGE, "rw-s", A_RO + PAGE);
	check_vma("S1", s1, page_up(S1_SIZE), "rw-s", 0);
	if (child)
		check_vma("the child's S2", s2, page_up(S2_SIZE), "r--s", 0);
	else
		check_vma("S2", s2, page_up(S2_SIZE), "rw-s", 0);
}

/* Whether the byte at p can be written (it is written with itself). */
static int writable(volatile unsigned char *p)
{
	struct sigaction sa = { .sa_handler = on_segv }, old;
	int ok = 0;

	sigaction(SIGSEGV, &sa, &old);
	if (sigsetjmp(probe_env, 1) == 0) {
		*p = *p;
		ok = 1;
	}
	sigaction(SIGSEGV, &old, NULL);
	return ok;
}

static void check_read_only(int child)
{
	if (writable(a + A_RO) && !why[0])
		snprintf(why, sizeof(why), "A's read-only page can be written");
	if (child && writable(s2) && !why[0])
		snprintf(why, sizeof(why), "the child's read-only S2 can be written");
}

static void check_ipc(void)
{
	struct shmid_ds ds;

	if (shmctl(id2, IPC_STAT, &ds)) {
		fail("shmctl(S2, IPC_STAT)");
	} else if (ds.shm_segsz != S2_SIZE || (ds.shm_perm.mode & 0777) != 0640 ||
		   (ds.shm_perm.mode & SHM_DEST) || ds.shm_perm.__key != S2_KEY ||
		   ds.shm_nattch != 2) {
		if (!why[0])
			snprintf(why, sizeof(why),
				 "S2 (id %d): %zu bytes, mode %#o, key %#x, %lu attached; not %d bytes, 0640, key %#x, 2 attached",
				 id2, (size_t)ds.shm_segsz, (unsigned)ds.shm_perm.mode,
				 (unsigned)ds.shm_perm.__key, (unsigned long)ds.shm_nattch,
				 S2_SIZE, S2_KEY);
	} else if (shmget(S2_KEY, 0, 0) != id2 && !why[0]) {
		snprintf(why, sizeof(why), "shmget(%#x) does not give S2's id %d (errno %d)",
			 S2_KEY, id2, errno);
	}
	if (shmctl(id1, IPC_STAT, &ds)) {
		fail("shmctl(S1, IPC_STAT)");
	} else if (ds.shm_segsz != S1_SIZE || (ds.shm_perm.mode & 0777) != 0600 ||
		   !(ds.shm_perm.mode & SHM_DEST) || ds.shm_nattch != 2) {
		if (!why[0])
			snprintf(why, sizeof(why),
				 "S1 (id %d): %zu bytes, mode %#o, %lu attached; not %d bytes, 0600 with SHM_DEST, 2 attached",
				 id1, (size_t)ds.shm_segsz, (unsigned)ds.shm_perm.mode,
				 (unsigned long)ds.shm_nattch, S1_SIZE);
	}
}

/* The parent's half of the exchange: its token must come back, twice. */
static void exchange(uint64_t token)
{
	uint64_t deadline = lab_now_ms() + ANSWER_MS, answered = 0, echo1 = 0;
	char child_why[WHY_LEN];

	store(&wa->token, token);
	store(&w1->token, token);
	while (lab_now_ms() < deadline) {
		answered = load((uint64_t *)(a + A_ANSWERED));
		echo1 = load(&w1->echo);
		if (answered == token && echo1 == ~token)
			break;
		sleep_ms(5);
	}
	/* A child that missed this one must not answer it at the next. */
	store(&wa->token, 0);
	store(&w1->token, 0);
	memcpy(child_why, a + A_WHY, sizeof(child_why));
	child_why[sizeof(child_why) - 1] = 0;
	if (why[0])
		return;
	if (load(&wa->echo) != ~token && echo1 != ~token)
		snprintf(why, sizeof(why),
			 "the child echoed token %#llx in neither A nor S1 within %d ms",
			 (unsigned long long)token, ANSWER_MS);
	else if (load(&wa->echo) != ~token)
		snprintf(why, sizeof(why),
			 "the child did not echo token %#llx in A within %d ms: A is not shared",
			 (unsigned long long)token, ANSWER_MS);
	else if (echo1 != ~token)
		snprintf(why, sizeof(why),
			 "the child did not echo token %#llx in S1 within %d ms: S1 is not shared",
			 (unsigned long long)token, ANSWER_MS);
	else if (answered != token)
		snprintf(why, sizeof(why), "the child did not report on token %#llx within %d ms",
			 (unsigned long long)token, ANSWER_MS);
	else if (child_why[0])
		snprintf(why, sizeof(why), "child: %s", child_why);
}

/* The child's half: echo each new token where it came, then report. */
static void answer(void)
{
	static uint64_t last_a, last_1;
	uint64_t deadline = lab_now_ms() + ANSWER_MS + MOVE_MS, ta = 0, t1;
	int done_a = 0, done_1 = 0;

	while (!(done_a && done_1) && lab_now_ms() < deadline) {
		t1 = load(&w1->token);
		if (!done_1 && t1 && t1 != last_1) {
			store(&w1->echo, ~t1);
			last_1 = t1;
			done_1 = 1;
		}
		ta = load(&wa->token);
		if (!done_a && ta && ta != last_a) {
			store(&wa->echo, ~ta);
			last_a = ta;
			done_a = 1;
		}
		sleep_ms(5);
	}
	if (!done_1 && !why[0])
		snprintf(why, sizeof(why), "no new token in S1 within %d ms: S1 is not shared",
			 ANSWER_MS + MOVE_MS);
	if (!done_a)
		return;		/* The parent cannot see A: it says so. */
	memcpy(a + A_WHY, why, sizeof(why));
	store((uint64_t *)(a + A_ANSWERED), last_a);
}

/* The child's counter must move on, in A and in S1. */
static void check_child_counts(void)
{
	uint64_t deadline = lab_now_ms() + MOVE_MS;
	uint64_t in_a = load(&wa->count[1]), in_1 = load(&w1->count[1]);

	while ((load(&wa->count[1]) == in_a || load(&w1->count[1]) == in_1) &&
	       lab_now_ms() < deadline)
		sleep_ms(10);
	if (why[0])
		return;
	if (load(&wa->count[1]) == in_a)
		snprintf(why, sizeof(why), "the child's counter in A stays at %llu",
			 (unsigned long long)in_a);
	else if (load(&w1->count[1]) == in_1)
		snprintf(why, sizeof(why), "the child's counter in S1 stays at %llu",
			 (unsigned long long)in_1);
}

static void verify(int child)
{
	check_contents();
	check_maps(child);
	check_read_only(child);
	if (child) {
		answer();
		return;
	}
	check_ipc();
	exchange(0x5348000000000000ull | (lab_now_ms() & 0xffffffffffffull));
	check_child_counts();
}

/* One count: into the process's counter in A and in S1. */
static uint64_t tick(int who)
{
	uint64_t n = load(&wa->count[who]) + 1;

	store(&wa->count[who], n);
	store(&w1->count[who], n);
	return n;
}

static void __attribute__((noreturn)) run(int child)
{
	for (;;) {
		uint64_t n = tick(child);

		if (!child)
			lab_count(n);
		if (verify_requested) {
			verify_requested = 0;
			verify(child);
			if (!child)
				lab_verdict(why, n);
		}
		sleep_ms(50);
	}
}

static int setup_a(void)
{
	a = mmap(NULL, A_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return -1;
	fill(a, 0, 0, A_PAT_END);
	fill(a, 1, A_RO, A_RO + PAGE);
	fill(a, 2, A_PAGE2, A_PAGE2 + PAGE);
	wa = (struct words *)(a + A_CTL);
	return mprotect(a + A_RO, PAGE, PROT_READ);
}

static int setup_sysv(void)
{
	id1 = shmget(IPC_PRIVATE, S1_SIZE, IPC_CREAT | 0600);
	if (id1 < 0)
		return -1;
	s1 = shmat(id1, NULL, 0);
	if (s1 == (void *)-1)
		return -1;
	fill(s1, 3, 0, S1_WORDS);
	w1 = (struct words *)(s1 + S1_WORDS);
	id2 = shmget(S2_KEY, S2_SIZE, IPC_CREAT | IPC_EXCL | 0640);
	if (id2 < 0)
		return -1;
	s2 = shmat(id2, NULL, 0);
	if (s2 == (void *)-1)
		return -1;
	fill(s2, 4, 0, S2_SIZE);
	return 0;
}

/* A page of a memfd, mapped shared; the memfd itself is closed. */
static int map_memfd(void)
{
	int fd = memfd_create("cr_shm", 0);
	char *p;

	if (fd < 0 || ftruncate(fd, PAGE))
		return -1;
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	p[0] = 1;
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t deadline;
	pid_t kid;

	if ((argc != 2 && argc != 3) || (argc == 3 && strcmp(argv[2], "memfd"))) {
		fprintf(stderr, "usage: cr_shm <dir> [memfd]\n");
		return 2;
	}
	snprintf(lab_dir, sizeof(lab_dir), "%s", argv[1]);
	mkdir(lab_dir, 0755);
	if (setup_a()) {
		perror("cr_shm: A");
		return 1;
	}
	if (setup_sysv()) {
		perror("cr_shm: SysV shm");
		if (id1 >= 0)
			shmctl(id1, IPC_RMID, NULL);
		if (id2 >= 0)
			shmctl(id2, IPC_RMID, NULL);
		return 1;
	}
	signal(SIGUSR1, on_usr1);
	kid = fork();
	if (kid < 0) {
		perror("cr_shm: fork");
		return 1;
	}
	if (kid == 0) {
		if (shmdt(s2))
			_exit(3);
		s2 = shmat(id2, NULL, SHM_RDONLY);
		if (s2 == (void *)-1)
			_exit(4);
		run(1);
	}
	if (shmctl(id1, IPC_RMID, NULL)) {
		perror("cr_shm: IPC_RMID");
		return 1;
	}
	if (argc == 3 && map_memfd()) {
		perror("cr_shm: memfd");
		return 1;
	}
	/* The child counts once it has S2 read-only: then all is set up. */
	deadline = lab_now_ms() + 10000;
	while (!load(&wa->count[1])) {
		if (lab_now_ms() > deadline) {
			fprintf(stderr, "cr_shm: the child does not count\n");
			return 1;
		}
		sleep_ms(5);
	}
	run(0);
}
