/*
 * cr_pipes: two processes joined by a pipe and a FIFO, each holding
 * 60 KiB that nobody has read yet, and by two socketpairs with messages
 * queued, for checkpoint/restart tests.
 *
 *   cr_pipes <dir> [fifo]
 *
 * The parent makes a pipe (its read end at fd 10, O_NONBLOCK) and the FIFO
 * <fifo> (default <dir>/fifo; open read-write at fd 11), then forks a child that keeps the
 * pipe's write end at fd 12 (and has the parent's 10 and 11) and opens the
 * FIFO write-only at fd 13. The child writes 60 KiB of a known pattern
 * into each and waits. The parent closes its copy of the write end and
 * writes "count <n>" to <dir>/state
 * about every 100 ms, never reading either. A stream socketpair joins
 * them too (parent fd 14, child fd 15): the child queues 3000 bytes for
 * the parent, the parent 2000 for the child; and a datagram socketpair
 * (parent fd 16, non-blocking, child fd 17) on which the child queues five
 * datagrams of 1, 10, 100, 1000 and 5000 bytes for the parent. Both hold
 * a semaphore eventfd at fd 18 (non-blocking), to which the child adds 3.
 *
 * On SIGUSR1 (sent to both), the child reads and checks its 2000 bytes,
 * writes a last message into the pipe (what it found wrong, if anything)
 * and exits, so its write end is closed. The parent then checks: its
 * descriptors are where they were, with their flags; the pipe still holds
 * the 60 KiB, in order, then the child's message, then end-of-file (no other
 * write end is left open anywhere); the FIFO holds its 60 KiB and is still
 * the FIFO at its path; the stream's 3000 bytes then end-of-file; the five
 * datagrams, each whole, in order; the eventfd gives 1 three times, then
 * nothing. It writes "PASS <n>" or "FAIL <what>" to
 * <dir>/verdict.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab.h"

#define HELD (60 * 1024)
#define PIPE_R 10
#define FIFO_RW 11
#define PIPE_W 12
#define FIFO_W 13
#define SK_P 14
#define SK_C 15
#define DG_P 16
#define DG_C 17
#define EVFD 18
#define TO_PARENT 3000
#define TO_CHILD 2000
#define LAST "the child's last words"

static const size_t dgram_len[] = { 1, 10, 100, 1000, 5000 };

static volatile sig_atomic_t verify_requested;
static char why[1024];

static void on_usr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

static unsigned char pattern(int stream, size_t i)
{
	return (unsigned char)((i * (stream ? 13 : 7) + stream) % 251);
}

static void fail(const char *what)
{
	if (!why[0])
		snprintf(why, sizeof(why), "%s (errno %d)", what, errno);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* Reads exactly len bytes from fd, waiting up to 10 s for each. */
static int read_all(int fd, unsigned char *buf, size_t len)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	while (len) {
		ssize_t n = read(fd, buf, len);

		if (n > 0) {
			buf += n;
			len -= n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;
		if (poll(&pfd, 1, 10000) <= 0)
			return -1;
	}
	return 0;
}

/* Fills buf with len bytes of stream s. */
static void fill(unsigned char *buf, int s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = pattern(s, i);
}

/* Whether buf holds len bytes of stream s. */
static int same(const unsigned char *buf, int s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (buf[i] != pattern(s, i))
			return 0;
	return 1;
}

static void child(void)
{
	unsigned char *buf = malloc(HELD);
	char last[sizeof(LAST)] = LAST;
	size_t i;
	int s;

	if (!buf)
		_exit(1);
	close(SK_P);
	close(DG_P);
	for (s = 0; s < 2; s++) {
		fill(buf, s, HELD);
		if (write_all(s ? FIFO_W : PIPE_W, buf, HELD))
			_exit(2);
	}
	fill(buf, 4, HELD);
	for (i = 0; i < sizeof(dgram_len) / sizeof(dgram_len[0]); i++)
		if (send(DG_C, buf, dgram_len[i], 0) != (ssize_t)dgram_len[i])
			_exit(4);
	if (eventfd_write(EVFD, 3))
		_exit(6);
	fill(buf, 2, TO_PARENT);
	if (write_all(SK_C, buf, TO_PARENT))
		_exit(5);
	while (!verify_requested)
		usleep(100000);
	if (read_all(SK_C, buf, TO_CHILD) || !same(buf, 3, TO_CHILD))
		snprintf(last, sizeof(last), "child: no 2000 bytes");
	write_all(PIPE_W, last, sizeof(last));
	_exit(0);
}

static void check_stream(int s, int fd)
{
	unsigned char *buf = malloc(HELD);
	int held = -1;
	size_t i;

	if (!buf) {
		fail("malloc");
		return;
	}
	if (ioctl(fd, FIONREAD, &held) || held < HELD) {
		snprintf(why, sizeof(why), "%s holds %d bytes, not %d",
			 s ? "the FIFO" : "the pipe", held, HELD);
	} else if (read_all(fd, buf, HELD)) {
		fail(s ? "reading the FIFO" : "reading the pipe");
	} else {
		for (i = 0; i < HELD; i++)
			if (buf[i] != pattern(s, i))
				break;
		if (i < HELD)
			snprintf(why, sizeof(why), "%s: byte %zu is %u, not %u",
				 s ? "the FIFO" : "the pipe", i, buf[i],
				 pattern(s, i));
	}
	free(buf);
}

static void check_sockets(void)
{
	unsigned char buf[TO_PARENT], extra;
	struct pollfd pfd = { .fd = SK_P, .events = POLLIN };
	size_t i;
	ssize_t n;

	if (!(fcntl(DG_P, F_GETFL) & O_NONBLOCK) || (fcntl(SK_P, F_GETFL) & O_NONBLOCK))
		fail("the sockets' O_NONBLOCK flags changed");
	if (read_all(SK_P, buf, TO_PARENT) || !same(buf, 2, TO_PARENT))
		fail("the stream socket lost its 3000 bytes");
	else if (poll(&pfd, 1, 10000) <= 0 || read(SK_P, &extra, 1) != 0)
		fail("no end-of-file on the stream socket after the child went");
	for (i = 0; !why[0] && i < sizeof(dgram_len) / sizeof(dgram_len[0]); i++) {
		static unsigned char dgram[8192];

		n = recv(DG_P, dgram, sizeof(dgram), MSG_DONTWAIT);
		if (n != (ssize_t)dgram_len[i] || !same(dgram, 4, n))
			snprintf(why, sizeof(why), "datagram %zu: %zd bytes, not %zu",
				 i, n, dgram_len[i]);
	}
	if (!why[0] && recv(DG_P, buf, 1, MSG_DONTWAIT) >= 0)
		fail("a sixth datagram");
	for (i = 0; !why[0] && i < 4; i++) {
		eventfd_t one = 0;
		int got = eventfd_read(EVFD, &one);

		if (i < 3 && (got || one != 1))
			fail("the semaphore eventfd did not give 1 three times");
		if (i == 3 && (got == 0 || errno != EAGAIN))
			fail("the eventfd gave more than its count of 3");
	}
}

static void verify(const char *fifo, pid_t kid)
{
	unsigned char last[sizeof(LAST)], extra;
	struct stat a, b;
	int flags;

	flags = fcntl(PIPE_R, F_GETFL);
	if (flags < 0 || (flags & O_ACCMODE) != O_RDONLY || !(flags & O_NONBLOCK))
		fail("fd 10 is not the pipe's read end, O_NONBLOCK");
	flags = fcntl(FIFO_RW, F_GETFL);
	if (flags < 0 || (flags & O_ACCMODE) != O_RDWR || (flags & O_NONBLOCK))
		fail("fd 11 is not the FIFO open read-write, blocking");
	if (fstat(FIFO_RW, &a) || stat(fifo, &b) || a.st_ino != b.st_ino ||
	    a.st_dev != b.st_dev)
		fail("fd 11 is not the FIFO at its path");
	if (fcntl(PIPE_W, F_GETFD) >= 0 || fcntl(FIFO_W, F_GETFD) >= 0)
		fail("the parent holds the child's descriptors");
	if (!why[0])
		check_stream(0, PIPE_R);
	if (!why[0] && (read_all(PIPE_R, last, sizeof(last)) ||
			memcmp(last, LAST, sizeof(LAST))))
		fail("the child's last message did not come through the pipe");
	/* The child has exited: no write end is left, so end-of-file. */
	if (!why[0]) {
		struct pollfd pfd = { .fd = PIPE_R, .events = POLLIN };

		if (poll(&pfd, 1, 10000) <= 0 || read(PIPE_R, &extra, 1) != 0)
			fail("no end-of-file on the pipe: a write end is left open");
	}
	if (!why[0])
		check_stream(1, FIFO_RW);
	if (!why[0])
		check_sockets();
	waitpid(kid, NULL, 0);
}

/* Opens path with flags at descriptor fd. */
static int open_at(const char *path, int flags, int fd)
{
	int got = open(path, flags);

	if (got < 0 || dup2(got, fd) < 0)
		return -1;
	close(got);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned char out[TO_CHILD];
	char fifo[300];
	uint64_t count = 0;
	int fds[2], sk[2], dg[2], held = 0;
	pid_t kid;

	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: cr_pipes <dir> [fifo]\n");
		return 2;
	}
	snprintf(lab_dir, sizeof(lab_dir), "%s", argv[1]);
	mkdir(lab_dir, 0755);
	if (argc == 3)
		snprintf(fifo, sizeof(fifo), "%s", argv[2]);
	else
		snprintf(fifo, sizeof(fifo), "%s/fifo", lab_dir);
	unlink(fifo);
	if (mkfifo(fifo, 0600) || pipe(fds) || dup2(fds[0], PIPE_R) < 0 ||
	    dup2(fds[1], PIPE_W) < 0) {
		perror("cr_pipes: setup");
		return 1;
	}
	close(fds[0]);
	close(fds[1]);
	fcntl(PIPE_R, F_SETFL, O_NONBLOCK);
	if (open_at(fifo, O_RDWR, FIFO_RW)) {
		perror("cr_pipes: fifo");
		return 1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sk) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    dup2(sk[0], SK_P) < 0 || dup2(sk[1], SK_C) < 0 || dup2(dg[0], DG_P) < 0 ||
	    dup2(dg[1], DG_C) < 0) {
		perror("cr_pipes: socketpair");
		return 1;
	}
	close(sk[0]);
	close(sk[1]);
	close(dg[0]);
	close(dg[1]);
	fcntl(DG_P, F_SETFL, O_NONBLOCK);
	fds[0] = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
	if (fds[0] < 0 || dup2(fds[0], EVFD) < 0) {
		perror("cr_pipes: eventfd");
		return 1;
	}
	close(fds[0]);
	signal(SIGUSR1, on_usr1);
	kid = fork();
	if (kid == 0) {
		if (open_at(fifo, O_WRONLY, FIFO_W))
			_exit(3);
		child();
	}
	close(PIPE_W);
	close(SK_C);
	close(DG_C);
	fill(out, 3, TO_CHILD);
	if (write_all(SK_P, out, TO_CHILD))
		return 1;
	/* The child queues the stream's bytes last: then all is queued. */
	while (held < TO_PARENT) {
		usleep(10000);
		if (ioctl(SK_P, FIONREAD, &held))
			return 1;
	}
	for (;;) {
		if (verify_requested) {
			verify(fifo, kid);
			lab_verdict(why, count);
			verify_requested = 0;
		}
		lab_count(++count);
		usleep(100000);
	}
}
