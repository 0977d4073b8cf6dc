/*
 * test_proxy.c - PROXY protocol header parser (core/proxy.c): versions 1 and
 * 2, every prefix of a valid header asks for more, malformed headers are
 * refused with a reason, and the client's bytes after the header are left.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy.h"

static int parse(const void *buf, size_t len, struct proxy_info *pi, const char **why)
{
	return proxy_parse(buf, len, pi, why);
}

/* Every proper prefix of a valid header needs more bytes. */
static void assert_prefixes_need_more(const uint8_t *h, size_t len)
{
	struct proxy_info pi;
	const char *why;
	for (size_t k = 0; k < len; k++) {
		int r = parse(h, k, &pi, &why);
		if (r != PROXY_NEED_MORE)
			fail_msg("prefix of %zu of %zu octets: %d (%s)", k, len, r, why ? why : "");
	}
}

static void assert_invalid(const char *text, const char *reason_part)
{
	struct proxy_info pi;
	const char *why = NULL;
	int r = parse(text, strlen(text), &pi, &why);
	if (r != PROXY_INVALID)
		fail_msg("%s: want invalid, got %d", text, r);
	assert_non_null(why);
	if (!strstr(why, reason_part))
		fail_msg("%s: reason '%s' lacks '%s'", text, why, reason_part);
}

static void v1_tcp4(void **state)
{
	(void)state;
	const char *h = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\nEHLO x\r\n";
	size_t hl = strlen("PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n");
	struct proxy_info pi;
	const char *why;
	assert_int_equal(parse(h, strlen(h), &pi, &why), (int)hl);
	assert_int_equal(pi.version, 1);
	assert_true(pi.has_addr);
	assert_int_equal(pi.family, AF_INET);
	char s[INET6_ADDRSTRLEN];
	assert_string_equal(inet_ntop(AF_INET, pi.src, s, sizeof(s)), "192.0.2.10");
	assert_string_equal(inet_ntop(AF_INET, pi.dst, s, sizeof(s)), "198.51.100.1");
	assert_int_equal(pi.src_port, 56324);
	assert_int_equal(pi.dst_port, 25);
	assert_prefixes_need_more((const uint8_t *)h, hl);
}

static void v1_tcp6_and_unknown(void **state)
{
	(void)state;
	const char *h = "PROXY TCP6 2001:db8::1 2001:db8:0:1::25 65535 0\r\n";
	struct proxy_info pi;
	const char *why;
	assert_int_equal(parse(h, strlen(h), &pi, &why), (int)strlen(h));
	assert_int_equal(pi.family, AF_INET6);
	char s[INET6_ADDRSTRLEN];
	assert_string_equal(inet_ntop(AF_INET6, pi.src, s, sizeof(s)), "2001:db8::1");
	assert_int_equal(pi.src_port, 65535);
	assert_int_equal(pi.dst_port, 0);

	const char *u = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
	assert_int_equal(parse(u, strlen(u), &pi, &why), (int)strlen(u));
	assert_false(pi.has_addr);
	assert_int_equal(parse("PROXY UNKNOWN\r\n", 15, &pi, &why), 15);
	assert_false(pi.has_addr);

	/* The longest TCP6 line (104 octets), and the longest v1 line: 107 with its CRLF. */
	const char *t6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(parse(t6, strlen(t6), &pi, &why), 104);
	assert_true(pi.has_addr);
	const char *max = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(strlen(max), PROXY_V1_MAX);
	assert_int_equal(parse(max, strlen(max), &pi, &why), PROXY_V1_MAX);
}

static void v1_malformed(void **state)
{
	(void)state;
	assert_invalid("EHLO client.example\r\n", "not a PROXY");
	assert_invalid("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "single spaces");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROTO SRC DST");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROTO SRC DST");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces");
	assert_invalid("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol");
	assert_invalid("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "address");
	assert_invalid("PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "address");
	assert_invalid("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "address");
	assert_invalid("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "address");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "port");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "control");
	assert_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed");
	assert_invalid("PROXY TCP4 1.2.3.4\x80 5.6.7.8 1 2\r\n", "8-bit");

	/* 107 octets without CRLF: refused without waiting for more. */
	char longl[200];
	memset(longl, 'A', sizeof(longl));
	memcpy(longl, "PROXY UNKNOWN ", 14);
	struct proxy_info pi;
	const char *why;
	assert_int_equal(parse(longl, 106, &pi, &why), PROXY_NEED_MORE);
	assert_int_equal(parse(longl, 107, &pi, &why), PROXY_INVALID);
	assert_non_null(strstr(why, "107"));
	/* CRLF that would end at octet 108. */
	longl[106] = '\r';
	longl[107] = '\n';
	assert_int_equal(parse(longl, 108, &pi, &why), PROXY_INVALID);
}

static size_t v2_header(uint8_t *b, uint8_t ver_cmd, uint8_t fam, const uint8_t *addr, size_t alen)
{
	static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	memcpy(b, sig, 12);
	b[12] = ver_cmd;
	b[13] = fam;
	b[14] = (uint8_t)(alen >> 8);
	b[15] = (uint8_t)alen;
	if (alen)
		memcpy(b + 16, addr, alen);
	return 16 + alen;
}

static void v2_inet_inet6_local(void **state)
{
	(void)state;
	uint8_t b[2048], a[300];
	struct proxy_info pi;
	const char *why;

	/* INET: 192.0.2.10:56324 -> 198.51.100.1:25, plus a TLV (skipped). */
	const uint8_t a4[] = {192,  0, 2,  10,	 198,  51,   100, 1,  0xDC,
			      0x04, 0, 25, 0x04, 0x00, 0x02, 'h', 'i'};
	size_t n = v2_header(b, 0x21, 0x11, a4, sizeof(a4));
	memcpy(b + n, "EHLO", 4);
	assert_int_equal(parse(b, n + 4, &pi, &why), (int)n);
	assert_int_equal(pi.version, 2);
	assert_true(pi.has_addr);
	assert_int_equal(pi.family, AF_INET);
	assert_memory_equal(pi.src, a4, 4);
	assert_memory_equal(pi.dst, a4 + 4, 4);
	assert_int_equal(pi.src_port, 56324);
	assert_int_equal(pi.dst_port, 25);
	assert_prefixes_need_more(b, n);

	/* INET6. */
	memset(a, 0, sizeof(a));
	a[0] = 0x20, a[1] = 0x01, a[2] = 0x0d, a[3] = 0xb8, a[15] = 1;
	a[16] = 0x20, a[17] = 0x01, a[31] = 0x25;
	a[32] = 0x01, a[33] = 0x02, a[34] = 0x00, a[35] = 0x19;
	n = v2_header(b, 0x21, 0x21, a, 36);
	assert_int_equal(parse(b, n, &pi, &why), (int)n);
	assert_int_equal(pi.family, AF_INET6);
	assert_memory_equal(pi.src, a, 16);
	assert_int_equal(pi.src_port, 0x0102);
	assert_int_equal(pi.dst_port, 25);

	/* LOCAL (a balancer's health check): addresses ignored, even if present. */
	n = v2_header(b, 0x20, 0x11, a4, 12);
	assert_int_equal(parse(b, n, &pi, &why), (int)n);
	assert_false(pi.has_addr);
	n = v2_header(b, 0x20, 0x00, NULL, 0);
	assert_int_equal(parse(b, n, &pi, &why), 16);
	assert_false(pi.has_addr);
	/* PROXY with UNSPEC. */
	n = v2_header(b, 0x21, 0x00, NULL, 0);
	assert_int_equal(parse(b, n, &pi, &why), 16);
	assert_false(pi.has_addr);

	/* The longest accepted block: 1024 octets of address and TLVs. */
	memset(a, 0, sizeof(a));
	uint8_t big[1024] = {0};
	n = v2_header(b, 0x21, 0x11, big, sizeof(big));
	assert_int_equal(parse(b, n, &pi, &why), PROXY_V2_MAX);
}

static void v2_malformed(void **state)
{
	(void)state;
	uint8_t b[2048];
	const uint8_t a4[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
	struct proxy_info pi;
	const char *why;
	struct {
		uint8_t ver_cmd, fam;
		size_t alen;
		const char *why;
	} bad[] = {
	    {0x11, 0x11, 12, "version"},	 {0x31, 0x11, 12, "version"},
	    {0x22, 0x11, 12, "command"},	 {0x21, 0x12, 12, "STREAM"},
	    {0x21, 0x31, 12, "family"},		 {0x21, 0x11, 11, "shorter than 12"},
	    {0x21, 0x21, 12, "shorter than 36"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t a[64] = {0};
		memcpy(a, a4, sizeof(a4));
		size_t n = v2_header(b, bad[i].ver_cmd, bad[i].fam, a, bad[i].alen);
		why = NULL;
		assert_int_equal(parse(b, n, &pi, &why), PROXY_INVALID);
		if (!why || !strstr(why, bad[i].why))
			fail_msg("case %zu: reason '%s' lacks '%s'", i, why ? why : "(none)",
				 bad[i].why);
	}
	/* A length past the bound is refused at once, before its bytes arrive. */
	size_t n = v2_header(b, 0x21, 0x11, a4, 12);
	b[14] = 0x04, b[15] = 0x01; /* 1025 */
	assert_int_equal(parse(b, 16, &pi, &why), PROXY_INVALID);
	assert_non_null(strstr(why, "1024"));
	(void)n;
	/* A wrong signature octet. */
	v2_header(b, 0x21, 0x11, a4, 12);
	b[7] = 'X';
	assert_int_equal(parse(b, 8, &pi, &why), PROXY_INVALID);
	assert_int_equal(parse(b, 7, &pi, &why), PROXY_NEED_MORE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(v1_tcp4),	    cmocka_unit_test(v1_tcp6_and_unknown),
	    cmocka_unit_test(v1_malformed), cmocka_unit_test(v2_inet_inet6_local),
	    cmocka_unit_test(v2_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
