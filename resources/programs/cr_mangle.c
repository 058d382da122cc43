/*
 * cr_mangle: damage a checkpoint image on purpose, for negative tests.
 *
 *   cr_mangle <in> <out> <type> <index> <offset> <bytes> <value>
 *
 * Copies <in> to <out>, walking its records (struct cr_hdr: u32 type,
 * u32 len, payload padded to 8 bytes), and in the <index>-th record
 * (from 0) of type <type> overwrites <bytes> (1, 4 or 8) bytes at
 * <offset> from the start of its payload with <value> (little endian;
 * a negative offset reaches into the record header: -4 is its length).
 * Prints the absolute file offset it changed. Exit status 1 if there is
 * no such record.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	unsigned long type, index, bytes, seen = 0;
	long offset;
	uint64_t value;
	unsigned char *buf;
	size_t size = 0, cap = 1 << 20, pos = 0;
	FILE *in, *out;
	size_t n;

	if (argc != 8) {
		fprintf(stderr, "usage: %s <in> <out> <type> <index> <offset> <bytes> <value>\n",
			argv[0]);
		return 2;
	}
	type = strtoul(argv[3], NULL, 0);
	index = strtoul(argv[4], NULL, 0);
	offset = strtol(argv[5], NULL, 0);
	bytes = strtoul(argv[6], NULL, 0);
	value = strtoull(argv[7], NULL, 0);
	if (bytes != 1 && bytes != 4 && bytes != 8)
		return 2;
	in = fopen(argv[1], "rb");
	if (!in) {
		perror(argv[1]);
		return 1;
	}
	buf = malloc(cap);
	while (buf && (n = fread(buf + size, 1, cap - size, in)) > 0) {
		size += n;
		if (size == cap)
			buf = realloc(buf, cap *= 2);
	}
	fclose(in);
	if (!buf)
		return 1;
	while (pos + 8 <= size) {
		uint32_t t, len;

		memcpy(&t, buf + pos, 4);
		memcpy(&len, buf + pos + 4, 4);
		if (t == type && seen++ == index) {
			long at = (long)pos + 8 + offset;

			if (at < 0 || (size_t)at + bytes > size) {
				fprintf(stderr, "cr_mangle: offset outside the image\n");
				return 1;
			}
			memcpy(buf + at, &value, bytes);
			out = fopen(argv[2], "wb");
			if (!out || fwrite(buf, 1, size, out) != size || fclose(out) != 0) {
				perror(argv[2]);
				return 1;
			}
			printf("cr_mangle: changed %lu bytes at offset %ld\n", bytes, at);
			return 0;
		}
		pos += 8 + ((len + 7ULL) & ~7ULL);
	}
	fprintf(stderr, "cr_mangle: no record %lu of type %lu\n", index, type);
	return 1;
}
