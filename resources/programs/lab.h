/*
 * lab.h: what the self-checking test programs (cr_threads, cr_signals,
 * cr_files) share: their directory, its files written atomically, the
 * monotonic time, and the verdict line.
 *
 * A program sets lab_dir to its directory first. Files are written to
 * <name>.tmp, then renamed, so a reader never sees half a line; the
 * directory is made again if it is gone (a restore in a new /tmp).
 */
#ifndef CRVMM_LAB_H
#define CRVMM_LAB_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char lab_dir[256];

static inline void lab_write(const char *name, const char *text)
{
	char path[512], tmp[520];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", lab_dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 && errno == ENOENT) {
		mkdir(lab_dir, 0755);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	}
	if (fd < 0)
		return;
	if (write(fd, text, strlen(text)) < 0) {
		close(fd);
		return;
	}
	close(fd);
	rename(tmp, path);
}

static inline uint64_t lab_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* <dir>/verdict: "PASS <count>", or "FAIL <why>" if why is not empty. */
static inline void lab_verdict(const char *why, uint64_t count)
{
	char line[1300];

	if (why[0])
		snprintf(line, sizeof(line), "FAIL %s\n", why);
	else
		snprintf(line, sizeof(line), "PASS %llu\n", (unsigned long long)count);
	lab_write("verdict", line);
}

/* <dir>/state: "count <count>". */
static inline void lab_count(uint64_t count)
{
	char line[64];

	snprintf(line, sizeof(line), "count %llu\n", (unsigned long long)count);
	lab_write("state", line);
}

#endif /* CRVMM_LAB_H */
