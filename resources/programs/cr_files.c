/*
 * cr_files: a process with known open files, for checkpoint/restart tests.
 *
 *   cr_files <dir> [pipe|packetpipe|fifo|socket|boundsocket|inet|eventfd|epoll|signalfd|timerfd|shm|memfd|sharedfile|shmpart|deleted]
 *
 * Works in <dir> (its working directory) and keeps open:
 *   3  <dir>/data, read-write, at offset 4321 (the file is 10000 bytes)
 *   4  <dir>/data, read-only and non-blocking, at offset 123
 *   5  <dir>/log, write-only with O_APPEND
 *   6  <dir> itself (a directory)
 *   7  /dev/null, write-only
 *   8  /dev/zero, read-only, close-on-exec
 * With a mode it also opens, at fd 9, one thing checkpoint must refuse (a
 * packet-mode pipe, a unix socket bound to <dir>/sock, a TCP socket, an
 * epoll instance, a signalfd, a timerfd; or maps a memfd or <dir>/shared shared, or attaches a
 * SysV segment and makes part of it read-only) or that restart needs its
 * caller to provide (a pipe or a socketpair, at 9 and 10; a FIFO, an
 * eventfd; an attached SysV shared memory segment, removed); or, with
 * "deleted", keeps
 *   9  <dir>/gone, read-write at offset 1234, 5000 bytes, deleted
 * which checkpoint saves with its content.
 *
 * Writes "count <n>" to <dir>/state about every 100 ms. On SIGUSR1 it
 * checks that each descriptor is still the same file with the same offset,
 * flags and close-on-exec flag, that reads and appends go where they
 * should, that its working directory is <dir>, and that no other
 * descriptor than 0 to 8 (9 with "deleted") is open; then writes "PASS <n>"
 * or "FAIL <what>" to <dir>/verdict.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/shm.h>
#include <sys/prctl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define DATA_SIZE 10000

static volatile sig_atomic_t verify_requested;
static int deleted;			/* fd 9 is a deleted file */

#define GONE_SIZE 5000
#define GONE_POS 1234

static unsigned char gone_byte(int i)
{
	return (unsigned char)(i * 7 + 3);
}

static void on_usr1(int sig)
{
	(void)sig;
	verify_requested = 1;
}

/* open() @path at descriptor @want_fd. */
static int open_at(int want_fd, const char *path, int flags)
{
	int got = open(path, flags, 0644);

	if (got < 0 || got == want_fd)
		return got;
	if (dup2(got, want_fd) < 0)
		return -1;
	close(got);
	return want_fd;
}

#define FAIL(...) do { snprintf(why, sizeof(why), __VA_ARGS__); goto out; } while (0)

static void verify(uint64_t count)
{
	char why[1200] = "", buf[64], path[512], cwd[512];
	struct stat st, want;
	struct dirent *e;
	off_t pos;
	DIR *d;
	int fl;

	snprintf(path, sizeof(path), "%s/data", lab_dir);
	if (stat(path, &want) || fstat(3, &st) || st.st_ino != want.st_ino)
		FAIL("fd 3 is not %s", path);
	if ((pos = lseek(3, 0, SEEK_CUR)) != 4321)
		FAIL("fd 3 at %lld, not 4321", (long long)pos);
	if (((fl = fcntl(3, F_GETFL)) & O_ACCMODE) != O_RDWR || fl & O_APPEND)
		FAIL("fd 3 flags %#x", fl);
	if (fstat(4, &st) || st.st_ino != want.st_ino || lseek(4, 0, SEEK_CUR) != 123)
		FAIL("fd 4 is not %s at 123", path);
	if (((fl = fcntl(4, F_GETFL)) & O_ACCMODE) != O_RDONLY || !(fl & O_NONBLOCK))
		FAIL("fd 4 flags %#x", fl);
	if (pread(4, buf, 4, 123) != 4 || memcmp(buf, "\x7b\x7c\x7d\x7e", 4))
		FAIL("fd 4 reads other data");
	if (((fl = fcntl(5, F_GETFL)) & O_ACCMODE) != O_WRONLY || !(fl & O_APPEND))
		FAIL("fd 5 flags %#x", fl);
	snprintf(path, sizeof(path), "%s/log", lab_dir);
	if (write(5, "v\n", 2) != 2 || stat(path, &st) || st.st_size % 2)
		FAIL("fd 5 does not append to %s", path);
	if (fstat(6, &st) || !S_ISDIR(st.st_mode) || stat(lab_dir, &want) ||
	    st.st_ino != want.st_ino)
		FAIL("fd 6 is not %s", lab_dir);
	if (fstat(7, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3) ||
	    (fcntl(7, F_GETFL) & O_ACCMODE) != O_WRONLY)
		FAIL("fd 7 is not /dev/null for writing");
	if (fstat(8, &st) || st.st_rdev != makedev(1, 5) || read(8, buf, 8) != 8 || buf[3])
		FAIL("fd 8 is not /dev/zero");
	for (int fd = 3; fd <= 8; fd++)
		if (!!(fcntl(fd, F_GETFD) & FD_CLOEXEC) != (fd == 8))
			FAIL("fd %d close-on-exec flag", fd);
	if (deleted) {
		unsigned char got[GONE_SIZE];

		if (fstat(9, &st) || !S_ISREG(st.st_mode) || st.st_nlink ||
		    st.st_size != GONE_SIZE)
			FAIL("fd 9 is not a deleted file of %d bytes", GONE_SIZE);
		if (lseek(9, 0, SEEK_CUR) != GONE_POS ||
		    (fcntl(9, F_GETFL) & O_ACCMODE) != O_RDWR)
			FAIL("fd 9 offset or access mode");
		if (pread(9, got, GONE_SIZE, 0) != GONE_SIZE)
			FAIL("fd 9 cannot be read");
		for (int i = 0; i < GONE_SIZE; i++)
			if (got[i] != gone_byte(i))
				FAIL("fd 9 byte %d differs", i);
	}
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, lab_dir))
		FAIL("working directory %s, not %s", cwd, lab_dir);
	d = opendir("/proc/self/fd");
	if (!d)
		FAIL("no /proc/self/fd");
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd > 8 + deleted && fd != dirfd(d)) {
			snprintf(why, sizeof(why), "fd %d is open", fd);
			break;
		}
	}
	closedir(d);
out:
	lab_verdict(why, count);
}

int main(int argc, char **argv)
{
	const struct timespec tick = { 0, 100 * 1000 * 1000 };
	unsigned char data[DATA_SIZE];
	char path[512];
	struct sigaction sa;
	uint64_t count = 0;
	int fd, sv[2];

	if (argc < 2 || argc > 3 || argv[1][0] != '/') {
		fprintf(stderr, "usage: %s <absolute dir> [pipe|packetpipe|fifo|socket|boundsocket|inet|eventfd|epoll|signalfd|timerfd|shm|memfd|sharedfile|shmpart|deleted]\n",
			argv[0]);
		return 2;
	}
	snprintf(lab_dir, sizeof(lab_dir), "%s", argv[1]);
	mkdir(lab_dir, 0755);
	if (chdir(lab_dir)) {
		perror("cr_files: chdir");
		return 1;
	}
	prctl(PR_SET_NAME, "cr_files");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	/* Nothing above 2 yet: the descriptors below get their numbers. */
	syscall(SYS_close_range, 3, ~0U, 0);

	for (int i = 0; i < DATA_SIZE; i++)
		data[i] = (unsigned char)i;
	snprintf(path, sizeof(path), "%s/data", lab_dir);
	fd = open_at(3, path, O_RDWR | O_CREAT | O_TRUNC);
	if (fd != 3 || write(3, data, DATA_SIZE) != DATA_SIZE || lseek(3, 4321, SEEK_SET) != 4321 ||
	    open_at(4, path, O_RDONLY | O_NONBLOCK) != 4 || lseek(4, 123, SEEK_SET) != 123) {
		perror("cr_files: data");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/log", lab_dir);
	if (open_at(5, path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND) != 5 ||
	    write(5, "s\n", 2) != 2 || open_at(6, lab_dir, O_RDONLY | O_DIRECTORY) != 6 ||
	    open_at(7, "/dev/null", O_WRONLY) != 7 || open_at(8, "/dev/zero", O_RDONLY) != 8 ||
	    fcntl(8, F_SETFD, FD_CLOEXEC)) {
		perror("cr_files: open");
		return 1;
	}
	if (argc == 3) {
		int ok;

		if (!strcmp(argv[2], "pipe")) {
			ok = pipe(sv) == 0;
		} else if (!strcmp(argv[2], "packetpipe")) {
			ok = pipe2(sv, O_DIRECT) == 0;
		} else if (!strcmp(argv[2], "socket")) {
			ok = socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0;
		} else if (!strcmp(argv[2], "boundsocket")) {
			struct sockaddr_un sun = { .sun_family = AF_UNIX };
			int s = socket(AF_UNIX, SOCK_DGRAM, 0);

			snprintf(sun.sun_path, sizeof(sun.sun_path), "%.90s/sock", lab_dir);
			ok = s >= 0 && bind(s, (struct sockaddr *)&sun, sizeof(sun)) == 0;
		} else if (!strcmp(argv[2], "fifo")) {
			snprintf(path, sizeof(path), "%s/fifo", lab_dir);
			ok = mkfifo(path, 0644) == 0 && open(path, O_RDWR) >= 0;
		} else if (!strcmp(argv[2], "inet")) {
			ok = socket(AF_INET, SOCK_STREAM, 0) >= 0;
		} else if (!strcmp(argv[2], "eventfd")) {
			ok = eventfd(0, 0) >= 0;
		} else if (!strcmp(argv[2], "epoll")) {
			ok = epoll_create1(0) >= 0;
		} else if (!strcmp(argv[2], "signalfd")) {
			sigset_t set;

			sigemptyset(&set);
			sigaddset(&set, SIGUSR2);
			ok = signalfd(-1, &set, 0) >= 0;
		} else if (!strcmp(argv[2], "timerfd")) {
			ok = timerfd_create(CLOCK_MONOTONIC, 0) >= 0;
		} else if (!strcmp(argv[2], "shm")) {
			int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);

			ok = id >= 0 && shmat(id, NULL, 0) != (void *)-1 &&
			     shmctl(id, IPC_RMID, NULL) == 0;
		} else if (!strcmp(argv[2], "memfd")) {
			int m = memfd_create("cr_files", MFD_CLOEXEC);

			ok = m >= 0 && ftruncate(m, 4096) == 0 &&
			     mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
				  m, 0) != MAP_FAILED && close(m) == 0;
		} else if (!strcmp(argv[2], "sharedfile")) {
			int m;

			snprintf(path, sizeof(path), "%s/shared", lab_dir);
			m = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
			ok = m >= 0 && ftruncate(m, 4096) == 0 &&
			     mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
				  m, 0) != MAP_FAILED && close(m) == 0;
		} else if (!strcmp(argv[2], "shmpart")) {
			int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
			char *at = id < 0 ? (char *)-1 : shmat(id, NULL, 0);

			ok = at != (char *)-1 && shmctl(id, IPC_RMID, NULL) == 0 &&
			     mprotect(at, 4096, PROT_READ) == 0;
		} else if (!strcmp(argv[2], "deleted")) {
			unsigned char gone[GONE_SIZE];

			for (int i = 0; i < GONE_SIZE; i++)
				gone[i] = gone_byte(i);
			snprintf(path, sizeof(path), "%s/gone", lab_dir);
			deleted = 1;
			ok = open_at(9, path, O_RDWR | O_CREAT | O_TRUNC) == 9 &&
			     write(9, gone, GONE_SIZE) == GONE_SIZE &&
			     lseek(9, GONE_POS, SEEK_SET) == GONE_POS && unlink(path) == 0;
		} else {
			fprintf(stderr, "cr_files: unknown mode %s\n", argv[2]);
			return 2;
		}
		if (!ok) {
			perror("cr_files: mode");
			return 1;
		}
	}
	for (;;) {
		count++;
		lab_count(count);
		if (verify_requested) {
			verify_requested = 0;
			verify(count);
		}
		nanosleep(&tick, NULL);
	}
}
