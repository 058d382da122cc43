/*
 * cr_dump: checkpoint one process with the checkpoint(2) system call.
 *
 *   cr_dump [-n] [-k] [-i] [-u uid] <pid> <cgroup-dir> <image|-> [log|-]
 *
 * Freezes <cgroup-dir> (cgroup v2: writes 1 to cgroup.freeze and waits
 * for "frozen 1" in cgroup.events), writes the image of <pid> to <image>
 * ("-": standard output, so it can go through a pipe), then kills the
 * target (-k) or not, and thaws the cgroup. The kernel's log lines go to
 * <log> (default: standard error). -n skips the freeze (to test that the
 * kernel refuses an unfrozen target); -u switches to <uid> after freezing
 * (to test that the kernel refuses a caller without permission); -i
 * passes CR_CHECKPOINT_INHERIT_STDIO (descriptors 0 to 2 are left to
 * whoever restarts the image).
 *
 * Exit status 0 on success; otherwise 1, with the errno printed. The
 * cgroup is thawed in every case but a failed freeze.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CR_NR_CHECKPOINT 463
#define CR_CHECKPOINT_INHERIT_STDIO 0x1UL

static int write_str(const char *dir, const char *file, const char *val)
{
	char path[512];
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
	close(fd);
	return ok ? 0 : -1;
}

static int wait_frozen(const char *dir, int want)
{
	char path[512], buf[256], key[16];
	struct timespec ms = { 0, 1000 * 1000 };

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	snprintf(key, sizeof(key), "frozen %d", want);
	for (int i = 0; i < 10000; i++) {
		int fd = open(path, O_RDONLY);
		ssize_t n;

		if (fd < 0)
			return -1;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (strstr(buf, key))
				return 0;
		}
		nanosleep(&ms, NULL);
	}
	errno = ETIMEDOUT;
	return -1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int no_freeze = 0, kill_after = 0, fd, logfd = 2, opt, uid = -1;
	const char *cg, *image;
	double t0, t1, t2;
	unsigned long flags = 0;
	long ret;
	pid_t pid;

	/*
	 * A reader that goes away (cr_dump ... - | head -c 1000) must give
	 * EPIPE, so that the cgroup is thawed below, not a SIGPIPE death that
	 * leaves the target frozen.
	 */
	signal(SIGPIPE, SIG_IGN);
	while ((opt = getopt(argc, argv, "nkiu:")) != -1) {
		if (opt == 'u')
			uid = atoi(optarg);
		else if (opt == 'n')
			no_freeze = 1;
		else if (opt == 'k')
			kill_after = 1;
		else if (opt == 'i')
			flags |= CR_CHECKPOINT_INHERIT_STDIO;
		else
			goto usage;
	}
	if (argc - optind < 3 || argc - optind > 4)
		goto usage;
	pid = atoi(argv[optind]);
	cg = argv[optind + 1];
	image = argv[optind + 2];
	if (argc - optind == 4 && strcmp(argv[optind + 3], "-") != 0) {
		logfd = open(argv[optind + 3], O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (logfd < 0) {
			perror("cr_dump: log");
			return 1;
		}
	}
	if (strcmp(image, "-") == 0) {
		fd = 1;
	} else {
		fd = open(image, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0) {
			perror("cr_dump: image");
			return 1;
		}
	}

	t0 = now();
	if (!no_freeze) {
		if (write_str(cg, "cgroup.freeze", "1") != 0 || wait_frozen(cg, 1) != 0) {
			perror("cr_dump: freezing");
			return 1;
		}
	}
	if (uid >= 0 && setuid(uid) != 0) {
		perror("cr_dump: setuid");
		return 1;
	}
	t1 = now();
	ret = syscall(CR_NR_CHECKPOINT, pid, fd, flags, logfd);
	t2 = now();
	if (ret != 0) {
		int e = errno;

		fprintf(stderr, "cr_dump: checkpoint of %d failed: %s (errno %d)\n",
			pid, strerror(e), e);
		if (!no_freeze)
			write_str(cg, "cgroup.freeze", "0");
		return 1;
	}
	if (kill_after)
		kill(pid, SIGKILL);
	if (!no_freeze)
		write_str(cg, "cgroup.freeze", "0");
	if (fd != 1) {
		struct stat st;

		fstat(fd, &st);
		fprintf(stderr, "cr_dump: pid %d: %lld bytes, freeze %.3f s, checkpoint %.3f s\n",
			pid, (long long)st.st_size, t1 - t0, t2 - t1);
		close(fd);
	} else {
		fprintf(stderr, "cr_dump: pid %d: freeze %.3f s, checkpoint %.3f s\n",
			pid, t1 - t0, t2 - t1);
	}
	return 0;
usage:
	fprintf(stderr, "usage: %s [-n] [-k] [-i] [-u uid] <pid> <cgroup-dir> <image|-> [log|-]\n", argv[0]);
	return 2;
}
