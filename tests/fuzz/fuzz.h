/*
 * fuzz.h - shared by the fuzz targets: the libFuzzer entry point, a check
 * that aborts with a message (so libFuzzer and the replay main both see a
 * crash), and the reply checker the engine targets share.
 *
 * Every target defines LLVMFuzzerTestOneInput only; it links either with
 * libFuzzer (-fsanitize=fuzzer, clang) or with replay.c (any compiler),
 * which runs the files of a corpus through it.
 */
#ifndef MXRING_FUZZ_H
#define MXRING_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* malloc that never returns NULL (a fuzz input is small). */
static inline void *fuzz_alloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

/*
 * Reply framing (RFC 5321 4.2): out[0..len) must be whole lines, each
 * "DDD" then ' ' or '-' then printable ASCII, CRLF-terminated, at most 512
 * octets with the CRLF; a '-' line is followed by a line with the same code,
 * and the last line of the buffer is not a '-' line (a reply is never cut).
 * Returns the code of the last line (0 when len is 0).
 */
static inline int fuzz_check_replies(const uint8_t *out, size_t len)
{
	size_t pos = 0;
	int code = 0;
	bool cont = false;
	while (pos < len) {
		size_t n = 0;
		while (pos + n + 1 < len && !(out[pos + n] == '\r' && out[pos + n + 1] == '\n'))
			n++;
		FUZZ_CHECK(pos + n + 1 < len, "reply without CRLF at %zu: '%.*s'", pos,
			   (int)(len - pos), (const char *)out + pos);
		const uint8_t *l = out + pos;
		FUZZ_CHECK(n + 2 <= 512, "reply line of %zu octets", n + 2);
		FUZZ_CHECK(n >= 4 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' &&
			       l[2] >= '0' && l[2] <= '9' && (l[3] == ' ' || l[3] == '-'),
			   "bad reply line '%.*s'", (int)n, (const char *)l);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(l[i] >= 0x20 && l[i] < 0x7f, "byte 0x%02x in reply '%.*s'", l[i],
				   (int)n, (const char *)l);
		int c = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		FUZZ_CHECK(!cont || c == code, "multi-line reply changes code %d -> %d", code, c);
		code = c;
		cont = l[3] == '-';
		pos += n + 2;
	}
	FUZZ_CHECK(!cont, "reply cut after a continuation line");
	return code;
}

#endif
