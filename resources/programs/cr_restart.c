/*
 * cr_restart: become the process of a checkpoint image (restart(2)).
 *
 *   cr_restart <image|-> [log|-] [id:fd ...]
 *
 * Reads the image from <image> ("-": standard input, so it can come from a
 * pipe). On success restart() does not return here: this process goes on
 * as the checkpointed one (same memory, registers, signal handlers, ids),
 * keeping only its pid and its open files. On failure it prints the errno;
 * the kernel's log lines go to <log> (default: standard error). Each id:fd
 * gives restart the shared memory object the image calls id (a shared
 * anonymous mapping's inode number) as this process's descriptor fd
 * (CR_RESTART_SHM).
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
#define CR_RESTART_SHM 0x1UL
#define MAX_SHM 64

/* struct cr_shm_fd of linux/checkpoint.h */
struct cr_shm_fd {
	unsigned long long id;
	int fd;
	unsigned int pad;
};

int main(int argc, char **argv)
{
	struct cr_shm_fd shm[MAX_SHM];
	int fd = 0, logfd = 2, nr_shm = 0;
	long ret;

	if (argc < 2 || argc > 3 + MAX_SHM) {
		fprintf(stderr, "usage: %s <image|-> [log|-] [id:fd ...]\n", argv[0]);
		return 2;
	}
	for (int i = 3; i < argc; i++, nr_shm++) {
		memset(&shm[nr_shm], 0, sizeof(shm[nr_shm]));
		if (sscanf(argv[i], "%llu:%d", &shm[nr_shm].id, &shm[nr_shm].fd) != 2) {
			fprintf(stderr, "cr_restart: %s is not id:fd\n", argv[i]);
			return 2;
		}
	}
	if (strcmp(argv[1], "-") != 0) {
		fd = open(argv[1], O_RDONLY);
		if (fd < 0) {
			perror("cr_restart: image");
			return 1;
		}
	}
	if (argc >= 3 && strcmp(argv[2], "-") != 0) {
		logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (logfd < 0) {
			perror("cr_restart: log");
			return 1;
		}
	}
	if (nr_shm)
		ret = syscall(CR_NR_RESTART, 0, fd, CR_RESTART_SHM, logfd, shm,
			      nr_shm);
	else
		ret = syscall(CR_NR_RESTART, 0, fd, 0UL, logfd);
	fprintf(stderr, "cr_restart: restart failed: %s (errno %d, ret %ld)\n",
		strerror(errno), errno, ret);
	return 1;
}
