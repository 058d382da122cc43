/*
 * cr_restart: become the process of a checkpoint image (restart(2)).
 *
 *   cr_restart <image|-> [log|-]
 *
 * Reads the image from <image> ("-": standard input, so it can come from a
 * pipe). On success restart() does not return here: this process goes on
 * as the checkpointed one (same memory, registers, signal handlers, ids),
 * keeping only its pid and its open files. On failure it prints the errno;
 * the kernel's log lines go to <log> (default: standard error).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CR_NR_RESTART 464

int main(int argc, char **argv)
{
	int fd = 0, logfd = 2;
	long ret;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s <image|-> [log|-]\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "-") != 0) {
		fd = open(argv[1], O_RDONLY);
		if (fd < 0) {
			perror("cr_restart: image");
			return 1;
		}
	}
	if (argc == 3 && strcmp(argv[2], "-") != 0) {
		logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (logfd < 0) {
			perror("cr_restart: log");
			return 1;
		}
	}
	ret = syscall(CR_NR_RESTART, 0, fd, 0UL, logfd);
	fprintf(stderr, "cr_restart: restart failed: %s (errno %d, ret %ld)\n",
		strerror(errno), errno, ret);
	return 1;
}
