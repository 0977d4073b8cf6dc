/*
 * fuzz_body.c - the DATA/BDAT content decoder (body.c) against a reference.
 *
 * Input: byte 0 is the mode (bit 0: BDAT instead of DATA; bit 1: emit fails
 * once, on the run given by byte 2), byte 1 seeds the split points, the
 * rest is the content stream. The stream is cut into pieces at pseudo-random
 * points (from byte 1) and each piece is an exact-size allocation, so a
 * sanitizer catches a read past it.
 *
 * The reference below reads the whole stream at once, one byte at a time,
 * in the plainest way RFC 5321 4.1.1.4 / 4.5.2 and body.h say it: a LF ends
 * a line only after CR; a line start is the start of DATA or the byte after
 * such a line end; there ".\r\n" ends DATA, ".\n" keeps its dot, any other
 * "." is dropped; every bare LF is reported as CRLF and counted; a dot, or a
 * dot and CR, at the very end is held (not yet reported). BDAT has no dot
 * rules and no terminator. Any difference in content, terminator position
 * or bare LF count aborts, as does a run that is empty or lies outside the
 * current piece and body_static.
 */
#include <string.h>

#include "body.h"
#include "fuzz.h"

struct ref {
	uint8_t *out;
	size_t len;
	size_t used; /* bytes up to and including the terminator, else all */
	bool done;
	uint32_t bare_lf;
};

static void put(struct ref *r, const char *s, size_t n)
{
	memcpy(r->out + r->len, s, n);
	r->len += n;
}

static void ref_data(const uint8_t *in, size_t len, struct ref *r)
{
	bool ls = true;
	size_t i = 0;
	while (i < len) {
		if (ls && in[i] == '.') {
			if (i + 1 == len)
				break;
			if (in[i + 1] == '\r') {
				if (i + 2 == len)
					break;
				if (in[i + 2] == '\n') {
					r->done = true;
					r->used = i + 3;
					return;
				}
			}
			if (in[i + 1] == '\n')
				put(r, ".", 1);
			i++;
			ls = false;
			continue;
		}
		ls = false;
		if (in[i] == '\n' && i > 0 && in[i - 1] == '\r') {
			put(r, "\n", 1);
			ls = true;
		} else if (in[i] == '\n') {
			put(r, "\r\n", 2);
			r->bare_lf++;
		} else {
			put(r, (const char *)&in[i], 1);
		}
		i++;
	}
	r->used = len;
}

static void ref_bdat(const uint8_t *in, size_t len, struct ref *r)
{
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n' && !(i > 0 && in[i - 1] == '\r')) {
			put(r, "\r\n", 2);
			r->bare_lf++;
		} else {
			put(r, (const char *)&in[i], 1);
		}
	}
	r->used = len;
}

struct sink {
	uint8_t *out;
	size_t len;
	const uint8_t *piece;
	size_t piece_len;
	unsigned runs;
	unsigned fail_on; /* 1-based run that fails; 0 = never */
	bool failed;
};

static int emit(void *ctx, const uint8_t *p, size_t len)
{
	struct sink *k = ctx;
	FUZZ_CHECK(!k->failed, "emit called again after it failed");
	FUZZ_CHECK(len > 0, "empty run");
	uintptr_t a = (uintptr_t)p, in = (uintptr_t)k->piece;
	bool inside = a >= in && len <= k->piece_len && a - in <= k->piece_len - len;
	bool fixed = (p == body_static && len == 1) || (p == body_static + 1 && len <= 2);
	FUZZ_CHECK(inside || fixed, "run %p+%zu outside the piece %p+%zu and body_static",
		   (const void *)p, len, (const void *)k->piece, k->piece_len);
	memcpy(k->out + k->len, p, len);
	k->len += len;
	if (++k->runs == k->fail_on) {
		k->failed = true;
		return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	bool bdat = data[0] & 1;
	unsigned fail_on = data[0] & 2 ? (unsigned)data[2] + 1 : 0;
	uint32_t x = data[1] * 2654435761u + 1;
	const uint8_t *in = data + 3;
	size_t len = size - 3;

	struct ref r = {.out = fuzz_alloc(2 * len)};
	if (bdat)
		ref_bdat(in, len, &r);
	else
		ref_data(in, len, &r);

	struct sink k = {.out = fuzz_alloc(2 * len + 3), .fail_on = fail_on};
	struct body_dec d;
	body_init(&d);
	size_t off = 0;
	bool done = false;
	while (off < len && !done && !k.failed) {
		x = x * 1103515245u + 12345u;
		size_t n = 1 + (x >> 8) % (len - off < 64 ? len - off : 64);
		if ((x >> 24) % 4 == 0)
			n = len - off; /* sometimes all the rest */
		uint8_t *piece = fuzz_alloc(n);
		memcpy(piece, in + off, n);
		k.piece = piece;
		k.piece_len = n;
		if (bdat) {
			int rc = body_bdat(&d, piece, n, emit, &k);
			FUZZ_CHECK(rc == (k.failed ? 1 : 0), "body_bdat returned %d", rc);
			off += n;
		} else {
			size_t used = body_data(&d, piece, n, emit, &k, &done);
			FUZZ_CHECK(used <= n, "used %zu of %zu", used, n);
			FUZZ_CHECK(!done || !k.failed, "done after emit failed");
			FUZZ_CHECK(done || k.failed || used == n, "used %zu of %zu, not done", used,
				   n);
			off += used;
		}
		free(piece);
	}
	if (k.failed) {
		/* Stopped early: what was reported is a prefix of the reference. */
		FUZZ_CHECK(k.len <= r.len && memcmp(k.out, r.out, k.len) == 0,
			   "content before the failure differs from the reference");
	} else {
		FUZZ_CHECK(done == r.done, "terminator: decoder %d, reference %d", done, r.done);
		FUZZ_CHECK(off == r.used, "used %zu, reference %zu", off, r.used);
		FUZZ_CHECK(k.len == r.len && memcmp(k.out, r.out, r.len) == 0,
			   "content differs from the reference (%zu vs %zu bytes)", k.len, r.len);
		FUZZ_CHECK(d.bare_lf == r.bare_lf, "bare LFs: decoder %u, reference %u", d.bare_lf,
			   r.bare_lf);
	}
	free(r.out);
	free(k.out);
	return 0;
}
