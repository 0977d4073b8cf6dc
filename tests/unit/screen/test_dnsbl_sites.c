/*
 * test_dnsbl_sites.c - DNS list sites (core/dnsbl_sites.c): the site syntax
 * of postscreen_dnsbl_sites with its errors, RFC 5782 query names, filter
 * matching, and the parse of hand-built DNS answers (RFC 1035), each also
 * cut at every length.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnsbl_sites.h"

static int parse(const char *text, struct dnsbl_site *site, const char **why)
{
	return dnsbl_site_parse(text, strlen(text), site, why);
}

static struct dnsbl_site parse_ok(const char *text)
{
	struct dnsbl_site site;
	const char *why = NULL;
	if (parse(text, &site, &why) != 0)
		fail_msg("'%s': %s", text, why ? why : "(no reason)");
	assert_null(why);
	return site;
}

static bool matches(const struct dnsbl_site *site, uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	const uint8_t x[4] = {a, b, c, d};
	return dnsbl_site_matches(site, x);
}

/* The set of last octets 0..255 that match a.b.c.<v>, as a string "1 3 5". */
static void last_octets(const struct dnsbl_site *site, uint8_t a, uint8_t b, uint8_t c, char *out,
			size_t cap)
{
	size_t n = 0;
	out[0] = '\0';
	for (unsigned v = 0; v < 256; v++)
		if (matches(site, a, b, c, (uint8_t)v))
			n += (size_t)snprintf(out + n, cap - n, n ? " %u" : "%u", v);
}

static void header_examples(void **state)
{
	(void)state;
	struct dnsbl_site s = parse_ok("zen.example*3");
	assert_string_equal(s.zone, "zen.example");
	assert_string_equal(s.text, "zen.example*3");
	assert_int_equal(s.weight, 3);
	assert_int_equal(s.npatterns, 0);
	assert_true(matches(&s, 127, 0, 0, 2));
	assert_true(matches(&s, 0, 0, 0, 0));

	s = parse_ok("bl.example=127.0.0.[2..11]*2");
	assert_string_equal(s.zone, "bl.example");
	assert_int_equal(s.weight, 2);
	assert_int_equal(s.npatterns, 1);
	char set[1024];
	last_octets(&s, 127, 0, 0, set, sizeof(set));
	assert_string_equal(set, "2 3 4 5 6 7 8 9 10 11");
	assert_false(matches(&s, 127, 0, 1, 2));
	assert_false(matches(&s, 128, 0, 0, 2));

	s = parse_ok("wl.example=127.0.[0..255].[1..3]*-2");
	assert_int_equal(s.weight, -2);
	for (unsigned c = 0; c < 256; c++) {
		last_octets(&s, 127, 0, (uint8_t)c, set, sizeof(set));
		assert_string_equal(set, "1 2 3");
	}
	assert_false(matches(&s, 127, 1, 0, 1));

	s = parse_ok("x.example=127.0.0.2;127.0.0.4");
	assert_int_equal(s.weight, 1);
	assert_int_equal(s.npatterns, 2);
	last_octets(&s, 127, 0, 0, set, sizeof(set));
	assert_string_equal(set, "2 4");
}

static void weights(void **state)
{
	(void)state;
	struct {
		const char *text;
		int weight;
	} t[] = {
	    {"a.example", 1},		{"a.example=127.0.0.2", 1}, {"a.example*0", 0},
	    {"a.example*-1", -1},	{"a.example*+7", 7},	    {"a.example*1000", 1000},
	    {"a.example*-1000", -1000}, {"a.example*0007", 7},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct dnsbl_site s = parse_ok(t[i].text);
		if (s.weight != t[i].weight)
			fail_msg("'%s': weight %d, want %d", t[i].text, s.weight, t[i].weight);
		assert_string_equal(s.zone, "a.example");
	}
}

static void octet_sets(void **state)
{
	(void)state;
	char set[1024];
	struct dnsbl_site s = parse_ok("l.example=127.0.0.[1;3;5..7]");
	last_octets(&s, 127, 0, 0, set, sizeof(set));
	assert_string_equal(set, "1 3 5 6 7");

	s = parse_ok("l.example=127.0.0.[9..9;0;255]");
	last_octets(&s, 127, 0, 0, set, sizeof(set));
	assert_string_equal(set, "0 9 255");

	/* Lists in several octets, and several patterns with brackets. */
	s = parse_ok("l.example=[10;127].0.[0..1].2;127.0.0.[4..5];1.2.3.4");
	assert_int_equal(s.npatterns, 3);
	assert_true(matches(&s, 10, 0, 0, 2));
	assert_true(matches(&s, 127, 0, 1, 2));
	assert_false(matches(&s, 11, 0, 0, 2));
	assert_false(matches(&s, 127, 0, 2, 2));
	assert_true(matches(&s, 127, 0, 0, 5));
	assert_false(matches(&s, 127, 0, 0, 6));
	assert_true(matches(&s, 1, 2, 3, 4));
	assert_false(matches(&s, 4, 3, 2, 1));

	/* Eight patterns is the most. */
	s = parse_ok("l.example=127.0.0.1;127.0.0.2;127.0.0.3;127.0.0.4;127.0.0.5;127.0.0.6;"
		     "127.0.0.7;127.0.0.8");
	assert_int_equal(s.npatterns, DNSBL_PATTERNS_MAX);
	last_octets(&s, 127, 0, 0, set, sizeof(set));
	assert_string_equal(set, "1 2 3 4 5 6 7 8");
}

static void zones(void **state)
{
	(void)state;
	struct dnsbl_site s = parse_ok("zen.example.");
	assert_string_equal(s.zone, "zen.example");
	assert_string_equal(s.text, "zen.example.");
	s = parse_ok("ZEN.Spam-Haus.EXAMPLE.=127.0.0.2*2");
	assert_string_equal(s.zone, "zen.spam-haus.example");
	assert_string_equal(s.text, "ZEN.Spam-Haus.EXAMPLE.=127.0.0.2*2");
	assert_int_equal(s.weight, 2);
	s = parse_ok("_x.a1.example");
	assert_string_equal(s.zone, "_x.a1.example");
	s = parse_ok("example");
	assert_string_equal(s.zone, "example");

	/* The longest label and the longest zone; one more is too long. */
	char z[400];
	memset(z, 'a', 63);
	strcpy(z + 63, ".example");
	s = parse_ok(z);
	assert_string_equal(s.zone, z);
	memset(z, 'a', 64);
	strcpy(z + 64, ".example");
	const char *why = NULL;
	assert_int_equal(parse(z, &s, &why), -1);
	assert_non_null(strstr(why, "63"));

	size_t n = 0;
	while (n + 4 <= DNSBL_ZONE_MAX) {
		memcpy(z + n, "abc.", 4);
		n += 4;
	}
	while (n < DNSBL_ZONE_MAX)
		z[n++] = 'z';
	z[n] = '\0';
	s = parse_ok(z);
	assert_int_equal(strlen(s.zone), DNSBL_ZONE_MAX);
	assert_string_equal(s.text, z);
	/* With a trailing dot: the zone is the same, the text keeps the dot. */
	strcpy(z + n, ".");
	s = parse_ok(z);
	assert_int_equal(strlen(s.zone), DNSBL_ZONE_MAX);
	assert_string_equal(s.text, z);
	/* One more: its IPv6 query names would pass 253 characters. */
	strcpy(z + n, "z");
	assert_int_equal(parse(z, &s, &why), -1);
	assert_non_null(strstr(why, "189"));

	/* A long site as written is cut, NUL-terminated, in text. */
	memset(z, 'l', 63);
	memcpy(z + 63, ".example=", 9);
	n = 63 + 9;
	for (int i = 0; i < 8; i++) {
		memcpy(z + n, "[1;2;3;4;5;6;7;8;9].0.0.1;", 26);
		n += 26;
	}
	z[n - 1] = '\0';
	assert_true(n - 1 > DNSBL_SITE_TEXT_MAX);
	s = parse_ok(z);
	assert_int_equal(s.npatterns, 8);
	assert_int_equal(strlen(s.text), DNSBL_SITE_TEXT_MAX - 1);
	assert_memory_equal(s.text, z, DNSBL_SITE_TEXT_MAX - 1);
}

static void errors(void **state)
{
	(void)state;
	struct {
		const char *text;
		const char *why;
	} t[] = {
	    {"", "empty zone"},
	    {".", "empty zone"},
	    {"=127.0.0.2", "empty zone"},
	    {"*2", "empty zone"},
	    {"a..example", "empty label"},
	    {".example", "empty label"},
	    {"a.example..", "empty label"},
	    {"a b.example", "character"},
	    {"a/b.example", "character"},
	    {"a.example=", "empty filter"},
	    {"a.example=127.0.0.256", "past 255"},
	    {"a.example=127.0.0.1000", "past 255"},
	    {"a.example=127.0.0.99999999999999999999", "past 255"},
	    {"a.example=127.0.0.[256]", "past 255"},
	    {"a.example=127.0.0.[1..256]", "past 255"},
	    {"a.example=127.0.0.[5..2]", "reversed"},
	    {"a.example=127.0.0.[1;2", "unclosed"},
	    {"a.example=127.0.0.[1..", "not a number"},
	    {"a.example=127.0.0.[", "not a number"},
	    {"a.example=127.0.0.[]", "not a number"},
	    {"a.example=127.0.0.[1;;2]", "not a number"},
	    {"a.example=127.0.0.[1;2;]", "not a number"},
	    {"a.example=127.0.0.[1,2]", "';' or ']'"},
	    {"a.example=127.0.0.[1...2]", "not a number"},
	    {"a.example=127.0.0", "four octets"},
	    {"a.example=127.0.0.", "not a number"},
	    {"a.example=127.0.0.1.2", "more than four"},
	    {"a.example=127.0.0.x", "not a number"},
	    {"a.example=127.0.0.-1", "not a number"},
	    {"a.example=127.0.0.2;", "empty filter pattern"},
	    {"a.example=127.0.0.2;;127.0.0.3", "empty filter pattern"},
	    {"a.example=;127.0.0.3", "empty filter pattern"},
	    {"a.example=127.0.0.2 ", "';' between"},
	    {"a.example=127.0.0.2,127.0.0.3", "';' between"},
	    {"a.example=127.0.0.1;127.0.0.2;127.0.0.3;127.0.0.4;127.0.0.5;127.0.0.6;"
	     "127.0.0.7;127.0.0.8;127.0.0.9",
	     "more than 8"},
	    {"a.example*", "not a number"},
	    {"a.example*-", "not a number"},
	    {"a.example*x", "not a number"},
	    {"a.example*2x", "not a number"},
	    {"a.example*1.5", "not a number"},
	    {"a.example* 2", "not a number"},
	    {"a.example*2*3", "not a number"},
	    {"a.example*2=127.0.0.2", "not a number"},
	    {"a.example*1001", "out of range"},
	    {"a.example*-1001", "out of range"},
	    {"a.example*99999999999999999999", "out of range"},
	    {"a.example=127.0.0.2*", "not a number"},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct dnsbl_site s;
		const char *why = NULL;
		int r = parse(t[i].text, &s, &why);
		if (r != -1)
			fail_msg("'%s': accepted", t[i].text);
		if (!why || !strstr(why, t[i].why))
			fail_msg("'%s': reason '%s' lacks '%s'", t[i].text, why ? why : "(none)",
				 t[i].why);
	}
	/* A NUL inside the length given is a character like any other. */
	struct dnsbl_site s;
	const char *why = NULL;
	assert_int_equal(dnsbl_site_parse("a.example\0x", 11, &s, &why), -1);
	assert_int_equal(dnsbl_site_parse("a.example*2\0", 12, &s, &why), -1);
	/* Only len bytes are read: what follows does not count. */
	assert_int_equal(dnsbl_site_parse("a.example*2 junk", 11, &s, &why), 0);
	assert_int_equal(s.weight, 2);
	assert_string_equal(s.text, "a.example*2");
}

static void query_names(void **state)
{
	(void)state;
	struct dnsbl_site s = parse_ok("Zone.Example.");
	char out[DNSBL_QNAME_MAX];

	/* RFC 5782 2.1: 192.0.2.99 -> 99.2.0.192 */
	const uint8_t v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 99};
	const char *want4 = "99.2.0.192.zone.example";
	assert_int_equal(dnsbl_query_name(&s, v4, out, sizeof(out)), strlen(want4));
	assert_string_equal(out, want4);

	const uint8_t v4b[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 20, 0, 255};
	assert_int_equal(dnsbl_query_name(&s, v4b, out, sizeof(out)), 23);
	assert_string_equal(out, "255.0.20.1.zone.example");

	/* RFC 5782 2.4: 2001:db8:1:2:3:4:567:89ab */
	const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x02,
				0x00, 0x03, 0x00, 0x04, 0x05, 0x67, 0x89, 0xab};
	const char *want6 = "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2."
			    "zone.example";
	assert_int_equal(dnsbl_query_name(&s, v6, out, sizeof(out)), strlen(want6));
	assert_string_equal(out, want6);

	/* Not ::ffff:0:0/96 is IPv6, also ::1 and an IPv4-compatible address. */
	const uint8_t v6b[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 192, 0, 2, 99};
	assert_int_equal(dnsbl_query_name(&s, v6b, out, sizeof(out)), 64 + 12);
	assert_memory_equal(out, "3.6.2.0.0.0.0.c.f.f.0.0.0.0.0.0", 31);

	/* The NUL must fit: cap of the length alone is too small. */
	size_t n = strlen(want4);
	char small[64];
	memset(small, 'x', sizeof(small));
	assert_int_equal(dnsbl_query_name(&s, v4, small, n), 0);
	assert_int_equal(dnsbl_query_name(&s, v4, small, 0), 0);
	assert_int_equal(dnsbl_query_name(&s, v4, small, n + 1), n);
	assert_string_equal(small, want4);
	assert_int_equal(dnsbl_query_name(&s, v6, out, strlen(want6)), 0);

	/* The longest zone with an IPv6 address fits DNSBL_QNAME_MAX: 253
	 * characters, the most a DNS name may have. */
	char z[DNSBL_ZONE_MAX + 1];
	memset(z, 'a', DNSBL_ZONE_MAX);
	for (size_t i = 63; i < DNSBL_ZONE_MAX; i += 64)
		z[i] = '.';
	z[DNSBL_ZONE_MAX] = '\0';
	s = parse_ok(z);
	assert_int_equal(dnsbl_query_name(&s, v6, out, sizeof(out)), DNSBL_QNAME_MAX - 1);
	assert_int_equal(DNSBL_QNAME_MAX - 1, 253);
}

/* A DNS message built by hand. */
struct msg {
	uint8_t b[2048];
	size_t n;
};

static void put8(struct msg *m, unsigned v)
{
	assert_true(m->n < sizeof(m->b));
	m->b[m->n++] = (uint8_t)v;
}

static void put16(struct msg *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v & 0xff);
}

static void put32(struct msg *m, uint32_t v)
{
	put16(m, v >> 16);
	put16(m, v & 0xffff);
}

/* An uncompressed name, "" for the root. */
static void put_name(struct msg *m, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		put8(m, (unsigned)l);
		for (size_t i = 0; i < l; i++)
			put8(m, (uint8_t)name[i]);
		name += l + (dot ? 1 : 0);
	}
	put8(m, 0);
}

static void put_ptr(struct msg *m, size_t off)
{
	put16(m, 0xc000 | (unsigned)off);
}

/* Header: flags are QR, RD and RA with rcode. */
static void put_header(struct msg *m, unsigned rcode, unsigned qd, unsigned an, unsigned ns)
{
	m->n = 0;
	put16(m, 0x1234);
	put16(m, 0x8180 | rcode);
	put16(m, qd);
	put16(m, an);
	put16(m, ns);
	put16(m, 0);
}

#define QNAME "2.0.0.127.zen.example"

static void put_question(struct msg *m)
{
	put_name(m, QNAME);
	put16(m, 1);
	put16(m, 1);
}

/* TYPE, CLASS, TTL and RDLENGTH after an RR's owner name. */
static void put_fixed(struct msg *m, unsigned type, unsigned class, uint32_t ttl, size_t rdlen)
{
	put16(m, type);
	put16(m, class);
	put32(m, ttl);
	put16(m, (unsigned)rdlen);
}

/* An RR whose owner is a pointer to the question's name (offset 12). */
static void put_rr_class(struct msg *m, unsigned type, unsigned class, uint32_t ttl,
			 const uint8_t *rdata, size_t rdlen)
{
	put_ptr(m, 12);
	put_fixed(m, type, class, ttl, rdlen);
	for (size_t i = 0; i < rdlen; i++)
		put8(m, rdata[i]);
}

static void put_rr(struct msg *m, unsigned type, uint32_t ttl, const uint8_t *rdata, size_t rdlen)
{
	put_rr_class(m, type, 1, ttl, rdata, rdlen);
}

static void put_a(struct msg *m, uint32_t ttl, uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	const uint8_t r[4] = {a, b, c, d};
	put_rr(m, 1, ttl, r, 4);
}

static void put_soa(struct msg *m, uint32_t ttl, uint32_t minimum)
{
	put_ptr(m, 12 + 10); /* "zen.example" inside the question's name */
	put_fixed(m, 6, 1, ttl, 0);
	size_t len_at = m->n - 2;
	put8(m, 2);
	put8(m, 'n');
	put8(m, 's');
	put_ptr(m, 12 + 10);
	put_name(m, "hostmaster.zen.example");
	put32(m, 2024010101); /* serial */
	put32(m, 3600);	      /* refresh */
	put32(m, 600);	      /* retry */
	put32(m, 86400);      /* expire */
	put32(m, minimum);
	size_t rdlen = m->n - len_at - 2;
	m->b[len_at] = (uint8_t)(rdlen >> 8);
	m->b[len_at + 1] = (uint8_t)rdlen;
}

static bool same_answer(const struct dnsbl_answer *x, const struct dnsbl_answer *y)
{
	return x->rcode == y->rcode && x->na == y->na && !memcmp(x->a, y->a, sizeof(x->a)) &&
	       x->ttl == y->ttl && x->has_ttl == y->has_ttl;
}

/*
 * Parses m as a whole (a copy of exactly its size, so a read past it is an
 * error under ASan), then every prefix: each is refused or parses to the
 * same, and once a prefix parses, every longer one does.
 */
static int parse_msg(const struct msg *m, struct dnsbl_answer *out)
{
	uint8_t *buf = malloc(m->n ? m->n : 1);
	assert_non_null(buf);
	memcpy(buf, m->b, m->n);
	int r = dnsbl_parse_answer(buf, m->n, out);
	free(buf);
	bool ok = false;
	for (size_t k = 0; k < m->n; k++) {
		struct dnsbl_answer cut;
		buf = malloc(k ? k : 1);
		assert_non_null(buf);
		memcpy(buf, m->b, k);
		int rk = dnsbl_parse_answer(buf, k, &cut);
		free(buf);
		if (rk == 0 && !(r == 0 && same_answer(&cut, out)))
			fail_msg("the first %zu of %zu octets parse differently", k, m->n);
		if (ok && rk != 0)
			fail_msg("the first %zu of %zu octets are refused, fewer were not", k,
				 m->n);
		ok = rk == 0;
	}
	return r;
}

static void answer_two_a(void **state)
{
	(void)state;
	struct msg m;
	put_header(&m, 0, 1, 2, 0);
	put_question(&m);
	put_a(&m, 300, 127, 0, 0, 2);
	put_a(&m, 60, 127, 0, 0, 10);
	struct dnsbl_answer ans;
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.rcode, 0);
	assert_int_equal(ans.na, 2);
	assert_memory_equal(ans.a[0], ((uint8_t[]){127, 0, 0, 2}), 4);
	assert_memory_equal(ans.a[1], ((uint8_t[]){127, 0, 0, 10}), 4);
	assert_true(ans.has_ttl);
	assert_int_equal(ans.ttl, 60);

	/* With an SOA in the authority section too, the A records' TTL counts. */
	put_header(&m, 0, 1, 1, 1);
	put_question(&m);
	put_a(&m, 900, 127, 0, 0, 2);
	put_soa(&m, 30, 10);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, 1);
	assert_int_equal(ans.ttl, 900);
}

static void answer_cname_then_a(void **state)
{
	(void)state;
	struct msg m;
	put_header(&m, 0, 1, 2, 0);
	put_question(&m);
	/* 2.0.0.127.zen.example CNAME 2.0.0.127.other.example (compressed). */
	put_ptr(&m, 12);
	put_fixed(&m, 5, 1, 10, 2 + 2 + 2 + 4 + 6 + 2);
	size_t target = m.n;
	put8(&m, 1);
	put8(&m, '2');
	put8(&m, 1);
	put8(&m, '0');
	put8(&m, 1);
	put8(&m, '0');
	put8(&m, 3);
	put8(&m, '1');
	put8(&m, '2');
	put8(&m, '7');
	put8(&m, 5);
	memcpy(m.b + m.n, "other", 5);
	m.n += 5;
	put_ptr(&m, 12 + 14); /* "example" */
	/* The A record's owner is a pointer to the CNAME's target. */
	put_ptr(&m, target);
	put_fixed(&m, 1, 1, 120, 4);
	put32(&m, 0x7f000004);
	struct dnsbl_answer ans;
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, 1);
	assert_memory_equal(ans.a[0], ((uint8_t[]){127, 0, 0, 4}), 4);
	assert_int_equal(ans.ttl, 120);
}

static void answer_negative(void **state)
{
	(void)state;
	struct msg m;
	struct dnsbl_answer ans;

	/* NXDOMAIN: min(SOA TTL, MINIMUM), both ways round. */
	put_header(&m, 3, 1, 0, 1);
	put_question(&m);
	put_soa(&m, 900, 300);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.rcode, 3);
	assert_int_equal(ans.na, 0);
	assert_true(ans.has_ttl);
	assert_int_equal(ans.ttl, 300);

	put_header(&m, 3, 1, 0, 1);
	put_question(&m);
	put_soa(&m, 120, 3600);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.ttl, 120);

	/* NODATA: NOERROR, a CNAME but no A, and an SOA. */
	put_header(&m, 0, 1, 1, 1);
	put_question(&m);
	const uint8_t cname[] = {1, 'x', 0xc0, 12 + 10};
	put_rr(&m, 5, 50, cname, sizeof(cname));
	put_soa(&m, 3600, 3600);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.rcode, 0);
	assert_int_equal(ans.na, 0);
	assert_true(ans.has_ttl);
	assert_int_equal(ans.ttl, 3600);

	/* NXDOMAIN without an SOA: no TTL. */
	put_header(&m, 3, 1, 0, 0);
	put_question(&m);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.rcode, 3);
	assert_false(ans.has_ttl);

	/* Two SOAs and an NS record: the lowest counts, the NS is skipped. */
	put_header(&m, 3, 1, 0, 3);
	put_question(&m);
	put_soa(&m, 500, 400);
	const uint8_t ns[] = {2, 'n', 's', 0xc0, 12 + 10};
	put_rr(&m, 2, 1, ns, sizeof(ns));
	put_soa(&m, 200, 900);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.ttl, 200);
}

static void answer_failures(void **state)
{
	(void)state;
	struct msg m;
	struct dnsbl_answer ans;

	put_header(&m, 2, 1, 0, 0); /* SERVFAIL */
	put_question(&m);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.rcode, 2);
	assert_int_equal(ans.na, 0);
	assert_false(ans.has_ttl);

	put_header(&m, 5, 0, 0, 0); /* REFUSED, no question */
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.rcode, 5);

	/* A query (QR clear) is not an answer. */
	put_header(&m, 0, 1, 1, 0);
	m.b[2] &= 0x7f;
	put_question(&m);
	put_a(&m, 1, 127, 0, 0, 2);
	assert_int_equal(parse_msg(&m, &ans), -1);

	/* An A record whose RDATA is not 4 octets. */
	put_header(&m, 0, 1, 1, 0);
	put_question(&m);
	const uint8_t five[] = {127, 0, 0, 2, 0};
	put_rr_class(&m, 1, 1, 1, five, sizeof(five));
	assert_int_equal(parse_msg(&m, &ans), -1);

	/* An A record of another class (CH) is skipped. */
	put_header(&m, 0, 1, 1, 0);
	put_question(&m);
	put_rr_class(&m, 1, 3, 1, five, 4);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, 0);
	assert_false(ans.has_ttl);

	/* Counts that claim more records than there are. */
	put_header(&m, 0, 1, 2, 0);
	put_question(&m);
	put_a(&m, 1, 127, 0, 0, 2);
	assert_int_equal(parse_msg(&m, &ans), -1);
	put_header(&m, 0, 2, 0, 0);
	put_question(&m);
	assert_int_equal(parse_msg(&m, &ans), -1);
	put_header(&m, 3, 1, 0, 1);
	put_question(&m);
	assert_int_equal(parse_msg(&m, &ans), -1);
	put_header(&m, 0, 0xffff, 0xffff, 0xffff);
	assert_int_equal(parse_msg(&m, &ans), -1);
}

/* An SOA's RDATA: two names and exactly five 32-bit fields. */
static void answer_soa_rdata(void **state)
{
	(void)state;
	struct msg m;
	struct dnsbl_answer ans;
	uint8_t rd[64] = {0};
	rd[2 + 19] = 42; /* MNAME and RNAME the root; MINIMUM 42 */
	for (size_t len = 2 + 18; len <= 2 + 22; len++) {
		put_header(&m, 3, 1, 0, 1);
		put_question(&m);
		put_rr_class(&m, 6, 1, 100, rd, len);
		int r = parse_msg(&m, &ans);
		if (len == 2 + 20) {
			assert_int_equal(r, 0);
			assert_int_equal(ans.ttl, 42);
		} else if (r != -1) {
			fail_msg("an SOA RDATA of %zu octets accepted", len);
		}
	}

	/* An SOA of another class does not count. */
	put_header(&m, 3, 1, 0, 1);
	put_question(&m);
	put_rr_class(&m, 6, 3, 100, rd, 22);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_false(ans.has_ttl);

	/* MNAME running past the RDATA into the octets after the record. */
	const uint8_t label[] = {5, 'a', 'b', 'c', 'd', 'e', 0, 0};
	put_header(&m, 3, 1, 0, 1);
	put_question(&m);
	put_rr_class(&m, 6, 1, 100, label, 2);
	for (size_t i = 2; i < sizeof(label); i++)
		put8(&m, label[i]);
	for (int i = 0; i < 20; i++)
		put8(&m, 0);
	assert_int_equal(parse_msg(&m, &ans), -1);

	/* The empty message and the bare header. */
	m.n = 0;
	assert_int_equal(parse_msg(&m, &ans), -1);
	put_header(&m, 0, 0, 0, 0);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, 0);
	assert_false(ans.has_ttl);
}

static void answer_ttl_top_bit(void **state)
{
	(void)state;
	struct msg m;
	struct dnsbl_answer ans;
	put_header(&m, 0, 1, 2, 0);
	put_question(&m);
	put_a(&m, 3600, 127, 0, 0, 2);
	put_a(&m, 0x80000010u, 127, 0, 0, 3);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, 2);
	assert_int_equal(ans.ttl, 0);

	put_header(&m, 0, 1, 1, 0);
	put_question(&m);
	put_a(&m, 0x7fffffffu, 127, 0, 0, 2);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.ttl, 0x7fffffffu);

	put_header(&m, 3, 1, 0, 1);
	put_question(&m);
	put_soa(&m, 600, 0xffffffffu);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_true(ans.has_ttl);
	assert_int_equal(ans.ttl, 0);
}

static void answer_many_a(void **state)
{
	(void)state;
	struct msg m;
	struct dnsbl_answer ans;
	put_header(&m, 0, 1, DNSBL_ANSWERS_MAX + 4, 0);
	put_question(&m);
	for (unsigned i = 0; i < DNSBL_ANSWERS_MAX + 4; i++)
		put_a(&m, i == DNSBL_ANSWERS_MAX + 2 ? 5 : 100, 127, 0, 0, (uint8_t)i);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, DNSBL_ANSWERS_MAX);
	for (unsigned i = 0; i < DNSBL_ANSWERS_MAX; i++)
		assert_int_equal(ans.a[i][3], i);
	/* The TTL of a record not kept still counts. */
	assert_int_equal(ans.ttl, 5);
}

static void answer_names(void **state)
{
	(void)state;
	struct msg m;
	struct dnsbl_answer ans;

	/* A chain of pointers: owner -> "abc" + pointer -> "127.zen.example". */
	put_header(&m, 0, 1, 2, 0);
	put_question(&m);
	size_t second = m.n;
	put8(&m, 3);
	put8(&m, 'a');
	put8(&m, 'b');
	put8(&m, 'c');
	put_ptr(&m, 12 + 6); /* "127.zen.example" */
	put_fixed(&m, 1, 1, 7, 4);
	put32(&m, 0x7f000002);
	put8(&m, 1);
	put8(&m, 'q');
	put_ptr(&m, second);
	put_fixed(&m, 1, 1, 8, 4);
	put32(&m, 0x7f000003);
	assert_int_equal(parse_msg(&m, &ans), 0);
	assert_int_equal(ans.na, 2);
	assert_int_equal(ans.ttl, 7);

	/* A second question whose name is bad; at is where it starts. */
	const size_t at = 12 + 23 + 4;
	struct {
		const char *what;
		uint8_t name[8];
		size_t len;
	} bad[] = {
	    {"a pointer to itself", {0xc0, at}, 2},
	    {"a pointer forwards", {0xc0, at + 2}, 2},
	    {"a pointer into the header", {0xc0, 4}, 2},
	    {"a pointer past the message", {0xff, 0xff}, 2},
	    {"a label, then a pointer back to it", {1, 'x', 0xc0, at}, 4},
	    {"label type 01", {0x41, 'x', 0}, 3},
	    {"label type 10", {0x81, 'x', 0}, 3},
	    {"a label past the message", {9, 'x', 0}, 3},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_header(&m, 0, 2, 0, 0);
		put_question(&m);
		assert_int_equal(m.n, at);
		for (size_t k = 0; k < bad[i].len; k++)
			put8(&m, bad[i].name[k]);
		put16(&m, 1);
		put16(&m, 1);
		if (parse_msg(&m, &ans) != -1)
			fail_msg("%s: accepted", bad[i].what);
	}

	/* Two names that point at each other. */
	put_header(&m, 0, 2, 0, 0);
	put_ptr(&m, 12 + 6);
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse_msg(&m, &ans), -1);

	/* The longest name (255 octets) and one octet more. */
	for (unsigned extra = 0; extra < 2; extra++) {
		put_header(&m, 0, 1, 0, 0);
		for (int l = 0; l < 3; l++) {
			put8(&m, 63);
			for (int k = 0; k < 63; k++)
				put8(&m, 'a');
		}
		put8(&m, 61 + extra);
		for (unsigned k = 0; k < 61 + extra; k++)
			put8(&m, 'b');
		put8(&m, 0);
		put16(&m, 1);
		put16(&m, 1);
		assert_int_equal(parse_msg(&m, &ans), extra ? -1 : 0);
	}

	/*
	 * A chain of n pointers, each to the one before, inside a TXT
	 * record's RDATA (not read), then an A record whose owner points at
	 * the last: n + 1 jumps, of which 64 are allowed.
	 */
	for (unsigned n = 62; n <= 64; n++) {
		put_header(&m, 0, 0, 2, 0);
		put_name(&m, "x");
		put_fixed(&m, 16, 1, 1, 1 + 2 * n);
		size_t root = m.n;
		put8(&m, 0);
		for (unsigned k = 0; k < n; k++)
			put_ptr(&m, k == 0 ? root : m.n - 2);
		size_t last = m.n - 2;
		put_ptr(&m, last);
		put_fixed(&m, 1, 1, 1, 4);
		put32(&m, 0x7f000002);
		int r = parse_msg(&m, &ans);
		if (r != (n + 1 <= 64 ? 0 : -1))
			fail_msg("%u jumps: %d", n + 1, r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(header_examples),	cmocka_unit_test(weights),
	    cmocka_unit_test(octet_sets),	cmocka_unit_test(zones),
	    cmocka_unit_test(errors),		cmocka_unit_test(query_names),
	    cmocka_unit_test(answer_two_a),	cmocka_unit_test(answer_cname_then_a),
	    cmocka_unit_test(answer_negative),	cmocka_unit_test(answer_failures),
	    cmocka_unit_test(answer_soa_rdata), cmocka_unit_test(answer_ttl_top_bit),
	    cmocka_unit_test(answer_many_a),	cmocka_unit_test(answer_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
