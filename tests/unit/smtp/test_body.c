/*
 * test_body.c - the DATA/BDAT body decoder (body.c) against a reference decoder.
 *
 * The reference works on the whole input at once, one byte at a time, in the
 * plainest way: a LF is a line end only when the byte before it (in the raw
 * stream) is CR; a line start is the start of DATA or the byte after such a
 * line end; there ".\r\n" ends DATA, ".\n" keeps its dot (not a terminator,
 * and the bare LF becomes CRLF), any other "." is dropped; every bare LF is
 * reported as CRLF and counted. A dot, or a dot and CR, at the very end of
 * the input is not reported (it is not yet known what it is).
 *
 * body_data must give the same content, terminator position and bare LF count
 * however the input is split, and report content only as runs inside the
 * input it was given or inside body_static (nothing copied). Inputs are drawn
 * from {'\r', '\n', '.', 'a'} so that every edge case is dense.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "body.h"

#define MAX_IN 96

struct ref {
	uint8_t out[2 * MAX_IN + 8];
	size_t out_len;
	size_t used; /* input bytes used: up to and including the terminator, else all */
	bool done;
	uint32_t bare_lf;
};

static void ref_put(struct ref *r, const char *s, size_t n)
{
	memcpy(r->out + r->out_len, s, n);
	r->out_len += n;
}

static void ref_data(const uint8_t *in, size_t len, struct ref *r)
{
	memset(r, 0, sizeof(*r));
	bool ls = true;
	bool ls_lf = false; /* after a bare LF: unstuffing, never the end */
	size_t i = 0;
	while (i < len) {
		if (ls_lf && in[i] == '.') {
			if (i + 1 == len)
				break; /* held */
			if (in[i + 1] == '\r' || in[i + 1] == '\n')
				ref_put(r, ".", 1); /* "." alone: kept */
			i++;			    /* otherwise a stuffed dot: dropped */
			ls_lf = false;
			continue;
		}
		ls_lf = false;
		if (ls && in[i] == '.') {
			if (i + 1 == len)
				break; /* held */
			if (in[i + 1] == '\r') {
				if (i + 2 == len)
					break; /* held */
				if (in[i + 2] == '\n') {
					r->done = true;
					r->used = i + 3;
					return;
				}
			}
			if (in[i + 1] == '\n')
				ref_put(r, ".", 1); /* "." then a bare LF: kept */
			i++;			    /* otherwise a stuffed dot: dropped */
			ls = false;
			continue;
		}
		ls = false;
		if (in[i] == '\n') {
			if (i > 0 && in[i - 1] == '\r') {
				ref_put(r, "\n", 1);
				ls = true;
			} else {
				ref_put(r, "\r\n", 2);
				r->bare_lf++;
				ls_lf = true;
			}
		} else {
			ref_put(r, (const char *)&in[i], 1);
		}
		i++;
	}
	r->used = len;
}

static void ref_bdat(const uint8_t *in, size_t len, struct ref *r)
{
	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n' && !(i > 0 && in[i - 1] == '\r')) {
			ref_put(r, "\r\n", 2);
			r->bare_lf++;
		} else {
			ref_put(r, (const char *)&in[i], 1);
		}
	}
	r->used = len;
}

/* What the decoder reported, and where its runs pointed. */
struct sink {
	uint8_t out[8192];
	size_t out_len;
	const uint8_t *piece; /* the input of the current call */
	size_t piece_len;
	unsigned runs;
	unsigned fail_after; /* emit returns 1 on this run (1-based); 0 = never */
	const char *bad;     /* first problem seen */
};

static int emit(void *ctx, const uint8_t *p, size_t len)
{
	struct sink *k = ctx;
	k->runs++;
	uintptr_t a = (uintptr_t)p, in = (uintptr_t)k->piece;
	bool inside = a >= in && len <= k->piece_len && a - in <= k->piece_len - len;
	/* Only ".", "\r" and "\r\n" come from body_static. */
	bool fixed = (p == body_static && len == 1) || (p == body_static + 1 && len <= 2);
	if (len == 0 && !k->bad)
		k->bad = "empty run";
	if (!inside && !fixed && !k->bad)
		k->bad = body_is_static(p) ? "bad body_static run" : "run outside the input";
	if (k->out_len + len <= sizeof(k->out)) {
		memcpy(k->out + k->out_len, p, len);
		k->out_len += len;
	} else if (!k->bad) {
		k->bad = "too much output";
	}
	if (k->fail_after && k->runs == k->fail_after)
		return 1;
	return 0;
}

/* Cuts: the input is fed in pieces ending at cuts[0..ncuts) then at len. */
struct cuts {
	size_t at[MAX_IN + 1];
	size_t n;
};

struct result {
	struct ref got;
	const char *bad;
};

static void run_data(const uint8_t *in, size_t len, const struct cuts *c, struct result *res)
{
	struct body_dec d;
	struct sink k = {0};
	body_init(&d);
	memset(res, 0, sizeof(*res));
	size_t off = 0;
	for (size_t j = 0; j <= c->n && off <= len; j++) {
		size_t end = j < c->n ? c->at[j] : len;
		if (end < off)
			continue;
		if (end == off && j < c->n)
			continue; /* no empty feeds */
		size_t n = end - off;
		uint8_t *piece = malloc(n ? n : 1);
		memcpy(piece, in + off, n);
		k.piece = piece;
		k.piece_len = n;
		bool done = true; /* must be set by body_data */
		size_t used = body_data(&d, piece, n, emit, &k, &done);
		free(piece);
		if (used > n && !k.bad)
			k.bad = "used > len";
		if (!done && used != n && !k.bad)
			k.bad = "stopped early without done";
		off += used;
		if (done) {
			res->got.done = true;
			break;
		}
		if (end == len)
			break;
	}
	res->got.used = off;
	res->got.bare_lf = d.bare_lf;
	if (k.out_len > sizeof(res->got.out)) {
		k.out_len = sizeof(res->got.out);
		k.bad = k.bad ? k.bad : "too much output";
	}
	memcpy(res->got.out, k.out, k.out_len);
	res->got.out_len = k.out_len;
	res->bad = k.bad;
}

static void run_bdat(const uint8_t *in, size_t len, const struct cuts *c, struct result *res)
{
	struct body_dec d;
	struct sink k = {0};
	body_init(&d);
	memset(res, 0, sizeof(*res));
	size_t off = 0;
	for (size_t j = 0; j <= c->n; j++) {
		size_t end = j < c->n ? c->at[j] : len;
		if (end <= off)
			continue;
		size_t n = end - off;
		uint8_t *piece = malloc(n);
		memcpy(piece, in + off, n);
		k.piece = piece;
		k.piece_len = n;
		if (body_bdat(&d, piece, n, emit, &k) != 0 && !k.bad)
			k.bad = "body_bdat failed";
		free(piece);
		off = end;
	}
	res->got.used = off;
	res->got.bare_lf = d.bare_lf;
	if (k.out_len > sizeof(res->got.out)) {
		k.out_len = sizeof(res->got.out);
		k.bad = k.bad ? k.bad : "too much output";
	}
	memcpy(res->got.out, k.out, k.out_len);
	res->got.out_len = k.out_len;
	res->bad = k.bad;
}

static void show(const char *what, const uint8_t *p, size_t n)
{
	fprintf(stderr, "%s \"", what);
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r')
			fprintf(stderr, "\\r");
		else if (p[i] == '\n')
			fprintf(stderr, "\\n");
		else
			fputc(p[i], stderr);
	}
	fprintf(stderr, "\"\n");
}

static void expect_same(const uint8_t *in, size_t len, const struct cuts *c, const struct ref *want,
			const struct result *res)
{
	bool same = !res->bad && res->got.done == want->done && res->got.used == want->used &&
		    res->got.bare_lf == want->bare_lf && res->got.out_len == want->out_len &&
		    memcmp(res->got.out, want->out, want->out_len) == 0;
	if (same)
		return;
	show("input", in, len);
	fprintf(stderr, "cuts:");
	for (size_t j = 0; j < c->n; j++)
		fprintf(stderr, " %zu", c->at[j]);
	fprintf(stderr, "\n%s\n", res->bad ? res->bad : "");
	show("want", want->out, want->out_len);
	show("got ", res->got.out, res->got.out_len);
	fprintf(stderr, "want done %d used %zu bare %u; got done %d used %zu bare %u\n", want->done,
		want->used, want->bare_lf, res->got.done, res->got.used, res->got.bare_lf);
	fail_msg("decoder differs from the reference");
}

/* splitmix64: a fixed seed gives the same inputs on every run. */
static uint64_t rng_state = 0x6d78726e67ULL;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static size_t random_input(uint8_t *in)
{
	static const uint8_t alphabet[] = {'\r', '\n', '.', 'a'};
	size_t len = (size_t)(rnd() % (MAX_IN + 1));
	for (size_t i = 0; i < len; i++)
		in[i] = alphabet[rnd() % 4];
	/* Half the inputs start a fresh line often: more terminators and dots. */
	if (rnd() & 1)
		for (size_t i = 0; i + 2 < len; i += 1 + (size_t)(rnd() % 8))
			if (rnd() % 3 == 0)
				memcpy(in + i, "\r\n.", 3);
	return len;
}

typedef void (*runner_fn)(const uint8_t *, size_t, const struct cuts *, struct result *);
typedef void (*ref_fn)(const uint8_t *, size_t, struct ref *);

/* Every way of cutting one input that the tests use. */
static void check_all_cuts(const uint8_t *in, size_t len, runner_fn run, ref_fn refd)
{
	struct ref want;
	struct result res;
	struct cuts c = {0};
	refd(in, len, &want);

	run(in, len, &c, &res); /* whole */
	expect_same(in, len, &c, &want, &res);
	for (size_t s = 1; s < len; s++) { /* every two-piece split */
		c.n = 1;
		c.at[0] = s;
		run(in, len, &c, &res);
		expect_same(in, len, &c, &want, &res);
	}
	c.n = 0; /* byte by byte */
	for (size_t s = 1; s < len; s++)
		c.at[c.n++] = s;
	run(in, len, &c, &res);
	expect_same(in, len, &c, &want, &res);
	for (int r = 0; r < 8; r++) { /* random cuts */
		c.n = 0;
		for (size_t s = 1; s < len; s++)
			if (rnd() % 4 == 0)
				c.at[c.n++] = s;
		run(in, len, &c, &res);
		expect_same(in, len, &c, &want, &res);
	}
}

static void test_data_random(void **state)
{
	(void)state;
	uint8_t in[MAX_IN];
	unsigned terminated = 0;
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = random_input(in);
		struct ref want;
		ref_data(in, len, &want);
		terminated += want.done;
		check_all_cuts(in, len, run_data, ref_data);
	}
	assert_true(terminated > 1000); /* the alphabet does reach the terminator */
}

static void test_bdat_random(void **state)
{
	(void)state;
	uint8_t in[MAX_IN];
	for (int iter = 0; iter < 5000; iter++) {
		size_t len = random_input(in);
		check_all_cuts(in, len, run_bdat, ref_bdat);
	}
}

/* Every input up to 7 bytes over the alphabet: no edge case left to chance. */
static void test_data_exhaustive(void **state)
{
	(void)state;
	static const uint8_t alphabet[] = {'\r', '\n', '.', 'a'};
	uint8_t in[8];
	for (size_t len = 0; len <= 7; len++) {
		size_t total = (size_t)1 << (2 * len);
		for (size_t v = 0; v < total; v++) {
			for (size_t i = 0; i < len; i++)
				in[i] = alphabet[(v >> (2 * i)) & 3];
			check_all_cuts(in, len, run_data, ref_data);
			check_all_cuts(in, len, run_bdat, ref_bdat);
		}
	}
}

/*
 * Hand-written cases: they pin the reference itself (and the decoder) to
 * RFC 5321 4.1.1.4 / 4.5.2 and the smuggling rules in body.h.
 */
struct fixed {
	const char *in;
	const char *out;
	bool done;
	size_t used; /* SIZE_MAX: all */
	uint32_t bare_lf;
};

static const struct fixed fixed_cases[] = {
    {".\r\n", "", true, 3, 0},
    {".\r\nMAIL", "", true, 3, 0},
    {"a\r\n.\r\n", "a\r\n", true, 6, 0},
    {"..\r\n.\r\n", ".\r\n", true, 7, 0},
    {"..x\r\n.\r\n", ".x\r\n", true, 8, 0},
    {"...\r\n.\r\n", "..\r\n", true, 8, 0},
    {"a.\r\n.\r\n", "a.\r\n", true, 7, 0},
    {"\r\n.\r\n", "\r\n", true, 5, 0},
    {"a\n.\nb", "a\r\n.\r\nb", false, SIZE_MAX, 2},
    {"a\n.\r\nb", "a\r\n.\r\nb", false, SIZE_MAX, 1},
    {"a\r.\rb", "a\r.\rb", false, SIZE_MAX, 0},
    {"a\r\n.\nb", "a\r\n.\r\nb", false, SIZE_MAX, 1},
    {"a\r\n.\rb", "a\r\n\rb", false, SIZE_MAX, 0},
    {"a\r.\r\nb", "a\r.\r\nb", false, SIZE_MAX, 0},
    {"a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", true, 10, 0},
    {"\n.\r\n", "\r\n.\r\n", false, SIZE_MAX, 1},
    {".\n", ".\r\n", false, SIZE_MAX, 1},
    {"a\r\n.", "a\r\n", false, SIZE_MAX, 0},
    {"a\r\n.\r", "a\r\n", false, SIZE_MAX, 0},
    {"a\r", "a\r", false, SIZE_MAX, 0},
    {"\r\r\n.\r\n", "\r\r\n", true, 6, 0},
    {"\n\n", "\r\n\r\n", false, SIZE_MAX, 2},
    {"a\r\n\n.\r\n", "a\r\n\r\n.\r\n", false, SIZE_MAX, 1},
    /* After a bare LF a dot is unstuffed (as Postfix does), "." alone is kept. */
    {"a\n..b\r\n", "a\r\n.b\r\n", false, SIZE_MAX, 1},
    {"a\n.b\r\n", "a\r\nb\r\n", false, SIZE_MAX, 1},
    {"a\n...\n", "a\r\n..\r\n", false, SIZE_MAX, 2},
    {"a\n.\r\n.\r\n", "a\r\n.\r\n", true, 8, 1},
    {"a\n.\n..\r\n", "a\r\n.\r\n.\r\n", false, SIZE_MAX, 2},
};

static void test_data_fixed(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(fixed_cases) / sizeof(fixed_cases[0]); k++) {
		const struct fixed *f = &fixed_cases[k];
		size_t len = strlen(f->in);
		struct ref want = {0}, r;
		memcpy(want.out, f->out, strlen(f->out));
		want.out_len = strlen(f->out);
		want.done = f->done;
		want.used = f->used == SIZE_MAX ? len : f->used;
		want.bare_lf = f->bare_lf;
		ref_data((const uint8_t *)f->in, len, &r);
		if (r.out_len != want.out_len || memcmp(r.out, want.out, r.out_len) != 0 ||
		    r.done != want.done || r.used != want.used || r.bare_lf != want.bare_lf) {
			show("reference wrong for", (const uint8_t *)f->in, len);
			fail();
		}
		check_all_cuts((const uint8_t *)f->in, len, run_data, ref_data);
	}
}

/* emit failing: body_data stops at once, says not done, is not called again. */
static void test_data_emit_fails(void **state)
{
	(void)state;
	static const char in[] = "abc\n..def\r\n.x\nghi\r\n.\r\n";
	size_t len = sizeof(in) - 1;
	for (unsigned fail_at = 1; fail_at <= 6; fail_at++) {
		struct body_dec d;
		struct sink k = {.fail_after = fail_at};
		uint8_t *piece = malloc(len);
		memcpy(piece, in, len);
		k.piece = piece;
		k.piece_len = len;
		body_init(&d);
		bool done = true;
		size_t used = body_data(&d, piece, len, emit, &k, &done);
		free(piece);
		assert_null(k.bad);
		if (k.runs < fail_at) {
			/* fewer runs than that: it went to the end */
			assert_true(done);
			continue;
		}
		assert_int_equal(k.runs, fail_at);
		assert_false(done);
		assert_true(used <= len);
	}
}

static void test_bdat_emit_fails(void **state)
{
	(void)state;
	static const char in[] = "a\nb\nc";
	struct body_dec d;
	struct sink k = {.fail_after = 2};
	uint8_t piece[5];
	memcpy(piece, in, 5);
	k.piece = piece;
	k.piece_len = 5;
	body_init(&d);
	assert_int_not_equal(body_bdat(&d, piece, 5, emit, &k), 0);
	assert_int_equal(k.runs, 2);
}

/* A long line of ordinary text is one run per feed: nothing is cut without need. */
static void test_runs_are_long(void **state)
{
	(void)state;
	uint8_t *in = malloc(4096);
	memset(in, 'x', 4096);
	memcpy(in + 4094, "\r\n", 2);
	struct body_dec d;
	struct sink k = {0};
	k.piece = in;
	k.piece_len = 4096;
	body_init(&d);
	bool done;
	assert_int_equal(body_data(&d, in, 4096, emit, &k, &done), 4096);
	assert_false(done);
	assert_int_equal(k.runs, 1);
	assert_null(k.bad);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_data_fixed),	    cmocka_unit_test(test_data_exhaustive),
	    cmocka_unit_test(test_data_random),	    cmocka_unit_test(test_bdat_random),
	    cmocka_unit_test(test_data_emit_fails), cmocka_unit_test(test_bdat_emit_fails),
	    cmocka_unit_test(test_runs_are_long),
	};
	return cmocka_run_group_tests_name("smtp_body", tests, NULL, NULL);
}
