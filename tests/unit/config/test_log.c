/*
 * test_log.c - log_escape (table of cases, bounds at every cap) and log_line
 * (format, one write, truncation, log_enable).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct esc_case {
	const char *src;
	size_t len;
	size_t cap;
	size_t max;
	const char *want;
};

#define S(x) x, sizeof(x) - 1

static const struct esc_case esc_cases[] = {
    {S("abc"), 64, 100, "abc"},
    {S(""), 64, 100, ""},
    {S("mx.example.com"), 64, 100, "mx.example.com"},
    {S("a b"), 64, 100, "a\\x20b"},
    {S("say \"hi\""), 64, 100, "say\\x20\\\"hi\\\""},
    {S("C:\\dir"), 64, 100, "C:\\\\dir"},
    {S("x\r\ny"), 64, 100, "x\\x0d\\x0ay"},
    {S("tab\there"), 64, 100, "tab\\x09here"},
    {S("del\x7f"), 64, 100, "del\\x7f"},
    {S("nul\0x"), 64, 100, "nul\\x00x"},
    {S("\x80\xff\xc3\xa9"), 64, 100, "\\x80\\xff\\xc3\\xa9"},
    {S("key=value"), 64, 100, "key=value"},
    /* cut by max: the mark says text was dropped */
    {S("abcdef"), 64, 3, "abc..."},
    {S("abcdef"), 64, 6, "abcdef"},
    {S("abcdef"), 64, 0, "..."},
    /* cut by cap: 7 characters and the NUL */
    {S("abcdefghij"), 8, 100, "abcd..."},
    {S("abcdefg"), 8, 100, "abcdefg"},
    {S("abcdefgh"), 8, 100, "abcd..."},
    /* an escape is never split */
    {S("ab\x01"), 8, 100, "ab\\x01"},
    {S("ab\x01\x02"), 8, 100, "ab..."},
    {S("\x01\x02"), 7, 100, "..."},
    /* tiny caps keep what fits */
    {S("abc"), 1, 100, ""},
    {S("abcdef"), 2, 100, "."},
    {S("abcdef"), 3, 100, ".."},
    {S("abcdef"), 4, 100, "..."},
    {S("abcdef"), 5, 100, "a..."},
    {S("abc"), 4, 100, "abc"},
};

static void test_escape_table(void **state)
{
	char dst[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(esc_cases) / sizeof(esc_cases[0]); i++) {
		const struct esc_case *c = &esc_cases[i];
		size_t n;

		memset(dst, 'Z', sizeof(dst));
		n = log_escape(dst, c->cap, c->src, c->len, c->max);
		if (strcmp(dst, c->want) != 0 || n != strlen(c->want))
			fail_msg("case %zu: got '%s' (%zu), want '%s'", i, dst, n, c->want);
		assert_int_equal(dst[c->cap], 'Z');
	}
}

static void test_escape_cap_zero(void **state)
{
	char dst[4] = "ZZZ";

	(void)state;
	assert_int_equal(log_escape(dst, 0, "abc", 3, 100), 0);
	assert_string_equal(dst, "ZZZ");
}

/* Every cap from 0 to 80 over pseudo-random bytes: within cap, NUL-terminated. */
static void test_escape_bounds(void **state)
{
	unsigned seed = 12345;
	char src[64], dst[96];
	size_t cap, k, max;

	(void)state;
	for (k = 0; k < 200; k++) {
		for (size_t j = 0; j < sizeof(src); j++) {
			seed = seed * 1103515245u + 12345u;
			src[j] = (char)(seed >> 16);
		}
		max = k % 70;
		for (cap = 0; cap <= 80; cap++) {
			size_t n;

			memset(dst, 'Z', sizeof(dst));
			n = log_escape(dst, cap, src, sizeof(src), max);
			if (cap == 0) {
				assert_int_equal(n, 0);
				assert_int_equal(dst[0], 'Z');
				continue;
			}
			assert_true(n < cap);
			assert_int_equal(strlen(dst), n);
			for (size_t z = cap; z < sizeof(dst); z++)
				assert_int_equal(dst[z], 'Z');
			/* src is longer than max (64 > 69 never): cut when max < 64 */
			if (max < sizeof(src) && cap >= 4)
				assert_memory_equal(dst + n - 3, "...", 3);
		}
	}
}

/* Runs fn with fd 2 sent to a temporary file; returns what was written. */
static size_t capture_stderr(void (*fn)(void), char *buf, size_t cap)
{
	char path[] = "/tmp/mxring-test-log-XXXXXX";
	int fd = mkstemp(path), saved;
	ssize_t n;

	assert_true(fd >= 0);
	unlink(path);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, 2), 2);
	fn();
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	n = pread(fd, buf, cap - 1, 0);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	return (size_t)n;
}

static void emit_short(void)
{
	log_line("session end client=%s reason=%s n=%d", "192.0.2.1", "quit", 42);
}

static void test_line_format(void **state)
{
	char buf[4096];
	size_t n;

	(void)state;
	n = capture_stderr(emit_short, buf, sizeof(buf));
	/* 2026-11-28T04:30:00.123Z */
	assert_true(n > 25);
	assert_int_equal(buf[4], '-');
	assert_int_equal(buf[7], '-');
	assert_int_equal(buf[10], 'T');
	assert_int_equal(buf[13], ':');
	assert_int_equal(buf[16], ':');
	assert_int_equal(buf[19], '.');
	assert_int_equal(buf[23], 'Z');
	for (int i = 20; i < 23; i++)
		assert_true(buf[i] >= '0' && buf[i] <= '9');
	assert_string_equal(buf + 24, " mxring: session end client=192.0.2.1 reason=quit n=42\n");
}

static void emit_long(void)
{
	static char big[3 * LOG_LINE_MAX];

	memset(big, 'x', sizeof(big) - 1);
	log_line("big=%s", big);
}

static void test_line_truncated(void **state)
{
	char buf[4 * LOG_LINE_MAX];
	size_t n;

	(void)state;
	n = capture_stderr(emit_long, buf, sizeof(buf));
	assert_int_equal(n, LOG_LINE_MAX);
	assert_int_equal(buf[n - 1], '\n');
	assert_int_equal(buf[n - 2], 'x');
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);
}

static void emit_disabled(void)
{
	log_enable(0);
	log_line("must not appear");
	log_enable(1);
	log_line("after");
}

static void test_line_disabled(void **state)
{
	char buf[512];

	(void)state;
	capture_stderr(emit_disabled, buf, sizeof(buf));
	assert_null(strstr(buf, "must not appear"));
	assert_non_null(strstr(buf, " mxring: after\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escape_table),   cmocka_unit_test(test_escape_cap_zero),
	    cmocka_unit_test(test_escape_bounds),  cmocka_unit_test(test_line_format),
	    cmocka_unit_test(test_line_truncated), cmocka_unit_test(test_line_disabled),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
