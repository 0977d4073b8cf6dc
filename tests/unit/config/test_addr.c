/*
 * test_addr.c - addr_parse over a table of valid and invalid paths (RFC 5321
 * 4.1.2), the length limits of 4.5.3.1 exactly at and one past each bound,
 * and addr_accepted against the relay tricks an open relay falls for.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "addr.h"

#define NUL_OK	 1  /* allow_null */
#define UTF8_OK	 2  /* allow_utf8 */
#define ROUTING	 4  /* expect has_routing */
#define LITERAL	 8  /* expect is_literal */
#define EIGHTBIT 16 /* expect has_8bit */
#define NULLPATH 32 /* expect is_null */
#define ANY_END	 ((size_t)-1)

struct parse_case {
	const char *in;
	unsigned flags;
	enum addr_status want;
	const char *mailbox; /* on ADDR_OK */
	size_t end;	     /* on ADDR_OK; ANY_END: strlen(in) */
};

static const struct parse_case cases[] = {
    /* plain */
    {"<user@example.com>", 0, ADDR_OK, "user@example.com", ANY_END},
    {"<u@d>", 0, ADDR_OK, "u@d", ANY_END},
    {"<first.last+tag@mail.example.org>", 0, ADDR_OK, "first.last+tag@mail.example.org", ANY_END},
    {"<!#$&'*+-/=?^_`{|}~@x.example>", ROUTING, ADDR_OK, "!#$&'*+-/=?^_`{|}~@x.example", ANY_END},
    {"<a-b@x-y.example>", 0, ADDR_OK, "a-b@x-y.example", ANY_END},
    {"<u@123.example>", 0, ADDR_OK, "u@123.example", ANY_END},
    {"<u@localhost>", 0, ADDR_OK, "u@localhost", ANY_END},
    /* parameters and spaces around */
    {"<u@d.example> SIZE=1000 BODY=8BITMIME", 0, ADDR_OK, "u@d.example", 13},
    {"   <u@d.example>", 0, ADDR_OK, "u@d.example", ANY_END},
    {" \t<u@d.example>", 0, ADDR_OK, "u@d.example", ANY_END},
    {"<u@d.example>x", 0, ADDR_OK, "u@d.example", 13},
    /* sloppy clients: no brackets, one token */
    {"u@d.example", 0, ADDR_OK, "u@d.example", ANY_END},
    {"  u@d.example SIZE=10", 0, ADDR_OK, "u@d.example", 13},
    {"u@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"u@d.example<", 0, ADDR_SYNTAX, NULL, 0},
    {"\"a b\"@d.example", 0, ADDR_SYNTAX, NULL, 0},
    /* quoted local parts */
    {"<\"john doe\"@example.com>", 0, ADDR_OK, "\"john doe\"@example.com", ANY_END},
    {"<\"a\\\"b\"@example.com>", 0, ADDR_OK, "\"a\\\"b\"@example.com", ANY_END},
    {"<\"a\\\\b\"@example.com>", 0, ADDR_OK, "\"a\\\\b\"@example.com", ANY_END},
    {"<\"\"@example.com>", 0, ADDR_OK, "\"\"@example.com", ANY_END},
    {"<\"a.\"@example.com>", 0, ADDR_OK, "\"a.\"@example.com", ANY_END},
    {"<\"user@other.example\"@example.com>", ROUTING, ADDR_OK, "\"user@other.example\"@example.com",
     ANY_END},
    {"<\"a\\@b\"@example.com>", ROUTING, ADDR_OK, "\"a\\@b\"@example.com", ANY_END},
    {"<\"unterminated@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<\"a\"b@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<\"a\tb\"@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<\"a\\\x01\"@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    /* routing characters */
    {"<user%other.example@example.com>", ROUTING, ADDR_OK, "user%other.example@example.com",
     ANY_END},
    {"<user!other@example.com>", ROUTING, ADDR_OK, "user!other@example.com", ANY_END},
    /* null path */
    {"<>", NUL_OK | NULLPATH, ADDR_OK, "", 2},
    {"<> SIZE=10", NUL_OK | NULLPATH, ADDR_OK, "", 2},
    {"<>", 0, ADDR_NULL, NULL, 0},
    {"< >", NUL_OK, ADDR_SYNTAX, NULL, 0},
    /* source routes are dropped */
    {"<@a.example,@b.example:u@c.example>", 0, ADDR_OK, "u@c.example", ANY_END},
    {"<@a.example:u@c.example>", 0, ADDR_OK, "u@c.example", ANY_END},
    {"<@a.example,b.example:u@c.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<@a.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<@a.example:>", 0, ADDR_SYNTAX, NULL, 0},
    {"<@:u@c.example>", 0, ADDR_SYNTAX, NULL, 0},
    /* address literals */
    {"<u@[127.0.0.1]>", LITERAL, ADDR_OK, "u@[127.0.0.1]", ANY_END},
    {"<u@[IPv6:::1]>", LITERAL, ADDR_OK, "u@[IPv6:::1]", ANY_END},
    {"<u@[ipv6:2001:db8::1]>", LITERAL, ADDR_OK, "u@[ipv6:2001:db8::1]", ANY_END},
    {"<u@[IPv6:::ffff:192.0.2.1]>", LITERAL, ADDR_OK, "u@[IPv6:::ffff:192.0.2.1]", ANY_END},
    {"<u@[x-tag:some-content]>", LITERAL, ADDR_OK, "u@[x-tag:some-content]", ANY_END},
    {"<u@[256.0.0.1]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[1.2.3]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[IPv6:1::2::3]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[IPv6:]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[::1]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[127.0.0.1>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[tag-:x]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[tag:]>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@[1.2.3.4 ]>", 0, ADDR_SYNTAX, NULL, 0},
    /* structure */
    {"<user@example.com", 0, ADDR_SYNTAX, NULL, 0},
    {"user@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@example.com >", 0, ADDR_SYNTAX, NULL, 0},
    {"< user@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"", 0, ADDR_SYNTAX, NULL, 0},
    {"   ", 0, ADDR_SYNTAX, NULL, 0},
    {"<", 0, ADDR_SYNTAX, NULL, 0},
    {"<user>", 0, ADDR_SYNTAX, NULL, 0},
    {"<@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@>", 0, ADDR_SYNTAX, NULL, 0},
    {"<u@@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<a@b@c>", 0, ADDR_SYNTAX, NULL, 0},
    {"<a..b@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<.a@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<a.@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<a(b)@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<a,b@d.example>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@example.com.>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@.example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@example..com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@-example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@example-.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@exa_mple.com>", 0, ADDR_SYNTAX, NULL, 0},
    /* control characters */
    {"<us\x01r@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@exam\x7fple.com>", 0, ADDR_SYNTAX, NULL, 0},
    {"<user@example.com\r>", 0, ADDR_SYNTAX, NULL, 0},
    {"<\"a\x7f\"@example.com>", 0, ADDR_SYNTAX, NULL, 0},
    /* 8-bit and UTF-8 (RFC 6531) */
    {"<j\xc3\xbcrgen@example.com>", UTF8_OK | EIGHTBIT, ADDR_OK, "j\xc3\xbcrgen@example.com",
     ANY_END},
    {"<j\xc3\xbcrgen@example.com>", 0, ADDR_UTF8, NULL, 0},
    {"<u@b\xc3\xbc"
     "cher.example>",
     UTF8_OK | EIGHTBIT, ADDR_OK,
     "u@b\xc3\xbc"
     "cher.example",
     ANY_END},
    {"<u@b\xc3\xbc"
     "cher.example>",
     0, ADDR_UTF8, NULL, 0},
    {"<\"\xe2\x82\xac x\"@example.com>", UTF8_OK | EIGHTBIT, ADDR_OK,
     "\"\xe2\x82\xac x\"@example.com", ANY_END},
    {"<\xf0\x9f\x93\xa7@example.com>", UTF8_OK | EIGHTBIT, ADDR_OK, "\xf0\x9f\x93\xa7@example.com",
     ANY_END},
    {"<\xc3\x28@example.com>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<\xc0\xaf@example.com>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<\xed\xa0\x80@example.com>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<\xf5\x80\x80\x80@example.com>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<\xe2\x82@example.com>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<\x80@example.com>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<u@example.com\xc3>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
    {"<\xc3\x28@example.com>", 0, ADDR_UTF8, NULL, 0},
    {"<u@[1.2.3.4\xc3\xbc]>", UTF8_OK, ADDR_SYNTAX, NULL, 0},
};

static void test_parse_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct parse_case *c = &cases[i];
		struct addr a;
		size_t end = 9999, want_end;
		enum addr_status st;

		st = addr_parse(c->in, strlen(c->in), c->flags & NUL_OK, c->flags & UTF8_OK, &a,
				&end);
		if (st != c->want)
			fail_msg("case %zu '%s': status %d, want %d", i, c->in, st, c->want);
		if (st != ADDR_OK)
			continue;
		want_end = c->end == ANY_END ? strlen(c->in) : c->end;
		if (strcmp(a.mailbox, c->mailbox) != 0 || end != want_end)
			fail_msg("case %zu '%s': mailbox '%s' end %zu", i, c->in, a.mailbox, end);
		assert_int_equal(a.len, strlen(a.mailbox));
		assert_int_equal(a.is_null, !!(c->flags & NULLPATH));
		assert_int_equal(a.has_routing, !!(c->flags & ROUTING));
		assert_int_equal(a.is_literal, !!(c->flags & LITERAL));
		assert_int_equal(a.has_8bit, !!(c->flags & EIGHTBIT));
		if (!a.is_null)
			assert_int_equal(a.mailbox[a.at], '@');
	}
}

/* The input need not be NUL-terminated: nothing past len is read. */
static void test_parse_len_bound(void **state)
{
	const char buf[] = "<u@d.example>MORE";
	struct addr a;
	size_t end;

	(void)state;
	assert_int_equal(addr_parse(buf, 13, false, false, &a, &end), ADDR_OK);
	assert_int_equal(end, 13);
	assert_int_equal(addr_parse(buf, 12, false, false, &a, &end), ADDR_SYNTAX);
	assert_int_equal(addr_parse("u@d.exampleX", 11, false, false, &a, &end), ADDR_OK);
	assert_string_equal(a.mailbox, "u@d.example");
	assert_int_equal(addr_parse("<>", 1, true, false, &a, &end), ADDR_SYNTAX);
}

/* Appends n copies of ch to s (which has room). */
static void fill(char *s, char ch, size_t n)
{
	size_t l = strlen(s);

	memset(s + l, ch, n);
	s[l + n] = '\0';
}

/* "<" local(nl) "@" domain of labels up to 63 totalling nd ">" */
static void make_path(char *s, size_t nl, size_t nd, bool brackets)
{
	s[0] = '\0';
	if (brackets)
		strcat(s, "<");
	fill(s, 'l', nl);
	strcat(s, "@");
	while (nd > 0) {
		size_t lab = nd > 63 ? 63 : nd;

		/* never leave a lone trailing dot or an empty label */
		if (nd > 63 && nd - 63 < 2)
			lab = 61;
		fill(s, 'd', lab);
		nd -= lab;
		if (nd > 0) {
			strcat(s, ".");
			nd--;
		}
	}
	if (brackets)
		strcat(s, ">");
}

struct len_case {
	size_t nl, nd;
	bool brackets;
	enum addr_status want;
};

static const struct len_case len_cases[] = {
    {64, 10, true, ADDR_OK},	    /* local part at the limit */
    {65, 10, true, ADDR_TOO_LONG},  /* one past */
    {64, 189, true, ADDR_OK},	    /* path of exactly 256 octets */
    {64, 190, true, ADDR_TOO_LONG}, /* 257 */
    {10, 243, true, ADDR_OK},	    /* 256 with a long domain */
    {10, 244, true, ADDR_TOO_LONG}, /* 257 */
    {64, 189, false, ADDR_OK},	    /* bare: counted as if bracketed */
    {64, 190, false, ADDR_TOO_LONG},
    {1, 255, true, ADDR_TOO_LONG}, /* domain at its limit: the path is past */
    {1, 256, true, ADDR_TOO_LONG}, /* domain past its limit */
};

static void test_parse_lengths(void **state)
{
	char s[600];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(len_cases) / sizeof(len_cases[0]); i++) {
		const struct len_case *c = &len_cases[i];
		struct addr a;
		size_t end;
		enum addr_status st;

		make_path(s, c->nl, c->nd, c->brackets);
		st = addr_parse(s, strlen(s), false, false, &a, &end);
		if (st != c->want)
			fail_msg("case %zu (local %zu, domain %zu): %d, want %d", i, c->nl, c->nd,
				 st, c->want);
		if (st == ADDR_OK) {
			assert_int_equal(a.len, c->nl + 1 + c->nd);
			assert_int_equal(a.at, c->nl);
			assert_int_equal(end, strlen(s));
		}
	}
}

static void test_parse_label_length(void **state)
{
	char s[200] = "<u@";
	struct addr a;
	size_t end;

	(void)state;
	fill(s, 'x', 63);
	strcat(s, ".example>");
	assert_int_equal(addr_parse(s, strlen(s), false, false, &a, &end), ADDR_OK);
	strcpy(s, "<u@");
	fill(s, 'x', 64);
	strcat(s, ".example>");
	assert_int_equal(addr_parse(s, strlen(s), false, false, &a, &end), ADDR_TOO_LONG);
}

/* A route does not count in the mailbox, but it does in the path. */
static void test_parse_route_length(void **state)
{
	char s[600] = "<@";
	struct addr a;
	size_t end;

	(void)state;
	fill(s, 'r', 60);
	strcat(s, ".example:");
	/* 2 + 60 + 9 = 71 so far; the mailbox may take 256 - 71 - 1 = 184 */
	fill(s, 'u', 20);
	strcat(s, "@");
	fill(s, 'd', 63);
	strcat(s, ".");
	fill(s, 'd', 63);
	strcat(s, ".");
	fill(s, 'd', 35);
	strcat(s, ">");
	assert_int_equal(strlen(s), 256);
	assert_int_equal(addr_parse(s, strlen(s), false, false, &a, &end), ADDR_OK);
	assert_int_equal(a.len, 184);
	s[strlen(s) - 1] = 'd';
	strcat(s, ">");
	assert_int_equal(addr_parse(s, strlen(s), false, false, &a, &end), ADDR_TOO_LONG);
}

struct accept_case {
	const char *in;
	bool want;
};

static const struct accept_case accept_cases[] = {
    {"<user@example.com>", true},
    {"<u@EXAMPLE.COM>", true},
    {"<u@Example.Com>", true},
    {"<\"john doe\"@example.com>", true},
    {"<@relay.example:user@example.com>", true},
    {"<user@other.example>", false},
    {"<user@xexample.com>", false},
    {"<user@example.com.evil>", false},
    {"<user@www.example.com>", false}, /* "example.com" is exact */
    /* relay tricks */
    {"<user%other.example@example.com>", false},
    {"<\"user@other.example\"@example.com>", false},
    {"<\"user%other.example\"@example.com>", false},
    {"<user!other@example.com>", false},
    {"<@example.com:user@other.example>", false}, /* the route is ignored */
    {"<user@[127.0.0.1]>", false},
    {"<user@[IPv6:::1]>", false},
    /* ".sub.example.net": below it, not itself */
    {"<u@a.sub.example.net>", true},
    {"<u@b.a.SUB.example.net>", true},
    {"<u@sub.example.net>", false},
    {"<u@xsub.example.net>", false},
    {"<u@example.net>", false},
    /* both forms written: the domain and everything below */
    {"<u@both.example>", true},
    {"<u@x.both.example>", true},
    {"<u@localhost>", false},
};

static void test_accepted(void **state)
{
	static char d1[] = "example.com", d2[] = ".sub.example.net", d3[] = "both.example",
		    d4[] = ".both.example";
	static char *doms[] = {d1, d2, d3, d4};
	struct config cfg;
	size_t i;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.accept_domains = doms;
	cfg.naccept_domains = 4;
	for (i = 0; i < sizeof(accept_cases) / sizeof(accept_cases[0]); i++) {
		struct addr a;
		size_t end;

		assert_int_equal(addr_parse(accept_cases[i].in, strlen(accept_cases[i].in), false,
					    false, &a, &end),
				 ADDR_OK);
		if (addr_accepted(&cfg, &a) != accept_cases[i].want)
			fail_msg("case %zu '%s': accepted %d", i, accept_cases[i].in,
				 !accept_cases[i].want);
	}
}

static void test_accepted_edge(void **state)
{
	static char d1[] = "example.com";
	static char *doms[] = {d1};
	struct config cfg;
	struct addr a;
	size_t end;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.accept_domains = doms;
	cfg.naccept_domains = 1;
	/* a trailing dot never gets as far as relay control */
	assert_int_equal(addr_parse("<user@example.com.>", 19, false, false, &a, &end),
			 ADDR_SYNTAX);
	assert_int_equal(addr_parse("<>", 2, true, false, &a, &end), ADDR_OK);
	assert_false(addr_accepted(&cfg, &a));
	cfg.naccept_domains = 0;
	assert_int_equal(addr_parse("<u@example.com>", 15, false, false, &a, &end), ADDR_OK);
	assert_false(addr_accepted(&cfg, &a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),	       cmocka_unit_test(test_parse_len_bound),
	    cmocka_unit_test(test_parse_lengths),      cmocka_unit_test(test_parse_label_length),
	    cmocka_unit_test(test_parse_route_length), cmocka_unit_test(test_accepted),
	    cmocka_unit_test(test_accepted_edge),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
