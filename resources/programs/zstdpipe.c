// SPDX-License-Identifier: Apache-2.0
/*
 * zstdpipe: compress or decompress standard input to standard output in
 * the zstd frame format, with libzstd (linked statically).
 *
 *   zstdpipe [-LEVEL]   compress (level 1..19, default 3)
 *   zstdpipe -d         decompress
 *
 * The guest's busybox has no zstd applet; this is the smallest filter that
 * lets a checkpoint image stream through zstd inside the guest. Its output
 * is an ordinary .zst stream that zstd(1) on the host reads, and it reads
 * what zstd(1) writes. Exit status: 0, 1 on a read/write/format error
 * (with a message on stderr), 2 on bad usage.
 *
 * crvmm-ldflags: -lzstd
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

static int usage(void)
{
	fprintf(stderr, "usage: zstdpipe [-LEVEL] | -d  (stdin to stdout)\n");
	return 2;
}

/* Write all of buf, retrying short writes; 0 or -1 with errno set. */
static int write_all(const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(STDOUT_FILENO, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

static ssize_t read_some(void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(STDIN_FILENO, buf, len);
	while (n < 0 && errno == EINTR);
	return n;
}

static int io_error(const char *what)
{
	fprintf(stderr, "zstdpipe: %s: %s\n", what, strerror(errno));
	return 1;
}

static int zstd_error(const char *what, size_t code)
{
	fprintf(stderr, "zstdpipe: %s: %s\n", what, ZSTD_getErrorName(code));
	return 1;
}

static int compress(int level)
{
	size_t in_cap = ZSTD_CStreamInSize(), out_cap = ZSTD_CStreamOutSize();
	char *in = malloc(in_cap), *out = malloc(out_cap);
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	int last = 0;

	if (!in || !out || !cctx) {
		fprintf(stderr, "zstdpipe: out of memory\n");
		return 1;
	}
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	while (!last) {
		ssize_t n = read_some(in, in_cap);
		ZSTD_inBuffer ib = { in, 0, 0 };
		ZSTD_EndDirective mode;
		size_t rest;

		if (n < 0)
			return io_error("read");
		ib.size = n;
		last = n == 0;
		mode = last ? ZSTD_e_end : ZSTD_e_continue;
		do {
			ZSTD_outBuffer ob = { out, out_cap, 0 };

			rest = ZSTD_compressStream2(cctx, &ob, &ib, mode);
			if (ZSTD_isError(rest))
				return zstd_error("compress", rest);
			if (write_all(out, ob.pos))
				return io_error("write");
		} while (last ? rest != 0 : ib.pos < ib.size);
	}
	ZSTD_freeCCtx(cctx);
	free(in);
	free(out);
	return 0;
}

static int decompress(void)
{
	size_t in_cap = ZSTD_DStreamInSize(), out_cap = ZSTD_DStreamOutSize();
	char *in = malloc(in_cap), *out = malloc(out_cap);
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	size_t rest = 0;
	int seen = 0;

	if (!in || !out || !dctx) {
		fprintf(stderr, "zstdpipe: out of memory\n");
		return 1;
	}
	for (;;) {
		ssize_t n = read_some(in, in_cap);
		ZSTD_inBuffer ib = { in, 0, 0 };

		if (n < 0)
			return io_error("read");
		if (n == 0)
			break;
		seen = 1;
		ib.size = n;
		while (ib.pos < ib.size) {
			ZSTD_outBuffer ob = { out, out_cap, 0 };

			rest = ZSTD_decompressStream(dctx, &ob, &ib);
			if (ZSTD_isError(rest))
				return zstd_error("decompress", rest);
			if (write_all(out, ob.pos))
				return io_error("write");
		}
	}
	/* rest != 0: the input ended inside a frame. */
	if (!seen || rest != 0) {
		fprintf(stderr, "zstdpipe: decompress: input ends inside a frame\n");
		return 1;
	}
	ZSTD_freeDCtx(dctx);
	free(in);
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	int level = 3, decomp = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char *end;

		if (strcmp(a, "-d") == 0) {
			decomp = 1;
		} else if (a[0] == '-' && a[1] >= '0' && a[1] <= '9') {
			level = strtol(a + 1, &end, 10);
			if (*end || level < 1 || level > ZSTD_maxCLevel())
				return usage();
		} else {
			return usage();
		}
	}
	return decomp ? decompress() : compress(level);
}
