/*
 * test_dsn.c - the delivery status notification (core/dsn.c): the whole
 * message for one recipient byte for byte; the delivery-status part of
 * three; the null sender refused; every contract breach refused; control
 * bytes in the reply, the remote MTA's name, the addresses and the headers
 * (nothing can add a line or a field); long headers cut before a field,
 * before a line, or in the first line; long lines folded, never splitting
 * UTF-8; SMTPUTF8 (RFC 6533 types only with a non-ASCII address); the
 * output too small (the size asked for, nothing written past cap); dates;
 * a boundary the headers contain; a delay warning; the size bound with
 * RCPT_LIMIT_MAX recipients of the longest fields.
 *
 * Every message made is checked for its framing (check_frame): CRLF only,
 * lines <= 998 octets, no control byte but HTAB, the boundary only in its
 * four delimiter lines and the Content-Type. check_dsn.py parses the same
 * kinds of messages with Python's email package.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dsn.h"
#include "msg.h"

/* ---- fixtures ---- */

static const char base_headers[] =
    "Received: from client.example.org ([192.0.2.1]:40000)\r\n"
    "\tby mx.example.com (mxring) with ESMTPS id 0123456789ABCDEF;\r\n"
    "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: Quarterly report\r\n"
    "Message-ID: <1234@client.example.org>\r\n"
    "\r\n"
    "The body is not carried.\r\n";

static const char diag_550[] = "550 5.1.1 <bob@example.net>: Recipient address rejected: User "
			       "unknown in local recipient table";

static struct dsn_rcpt base_rcpt(void)
{
	return (struct dsn_rcpt){
	    .addr = "bob@example.net",
	    .action = DSN_FAILED,
	    .status = "5.1.1",
	    .remote_mta = "hub.example.net",
	    .diag_type = DSN_DIAG_SMTP,
	    .diag = diag_550,
	    .last_attempt_s = 1700000100,
	};
}

static struct dsn_report base_report(const struct dsn_rcpt *rc, uint32_t n)
{
	return (struct dsn_report){
	    .myhostname = "mx.example.com",
	    .qid = "0123456789ABCDEF",
	    .sender = "alice@example.org",
	    .arrival_s = 1700000000,
	    .now_s = 1700000101,
	    .utc_offset_min = 60,
	    .seed = 0x5eed5eed5eed5eedu,
	    .headers = (const uint8_t *)base_headers,
	    .headers_len = sizeof(base_headers) - 1,
	    .rcpt = rc,
	    .nrcpt = n,
	};
}

/* ---- checks ---- */

/* The boundary named in the top Content-Type, into b. */
static void boundary_of(const char *m, char *b, size_t cap)
{
	const char *p = strstr(m, "\r\n\tboundary=\"");
	assert_non_null(p);
	p += strlen("\r\n\tboundary=\"");
	const char *q = strchr(p, '"');
	assert_non_null(q);
	assert_true((size_t)(q - p) < cap && q - p > 0 && q - p <= (long)DSN_BOUNDARY_MAX);
	memcpy(b, p, (size_t)(q - p));
	b[q - p] = 0;
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* The framing every message must have, whatever went in. */
static void check_frame(const char *m, size_t n)
{
	assert_true(n >= 2 && m[n - 2] == '\r' && m[n - 1] == '\n');
	assert_int_equal(strlen(m), n); /* no NUL */
	size_t line = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)m[i];
		if (c == '\r') {
			assert_true(i + 1 < n && m[i + 1] == '\n');
			assert_true(line <= DSN_LINE_MAX);
			line = 0;
			i++;
			continue;
		}
		assert_true(c != '\n');
		assert_true(c >= 0x20 || c == '\t');
		assert_true(c != 0x7f);
		line++;
	}
	/* The header: fields and continuations up to the first empty line. */
	const char *end = strstr(m, "\r\n\r\n");
	assert_non_null(end);
	for (const char *l = m; l <= end; l = strstr(l, "\r\n") + 2) {
		const char *colon = strchr(l, ':');
		assert_true(*l == '\t' || *l == ' ' || (colon && colon < strstr(l, "\r\n")));
	}
	char b[DSN_BOUNDARY_MAX + 8], delim[DSN_BOUNDARY_MAX + 16];
	boundary_of(m, b, sizeof(b));
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", b);
	assert_int_equal(count(m, delim), 3);
	snprintf(delim, sizeof(delim), "\r\n--%s--\r\n", b);
	assert_int_equal(count(m, delim), 1);
	assert_true(strcmp(m + n - strlen(delim), delim) == 0);
	assert_int_equal(count(m, b), 5);
}

/* Formats r: asks the size, then formats into exactly that; checks it. */
static char *fmt_ok(const struct dsn_report *r, struct dsn_result *res)
{
	assert_int_equal(dsn_format(r, NULL, 0, res), -ENOSPC);
	size_t need = res->len;
	assert_true(need > 0 && need <= dsn_size_max(r->nrcpt));
	char *m = malloc(need + 1);
	assert_non_null(m);
	assert_int_equal(dsn_format(r, m, need, res), 0);
	assert_int_equal(res->len, need);
	m[need] = 0;
	check_frame(m, need);
	return m;
}

/* The part after "Content-Type: type", up to the next delimiter: a copy. */
static char *part_of(const char *m, const char *type)
{
	char b[DSN_BOUNDARY_MAX + 8], delim[DSN_BOUNDARY_MAX + 16], ct[128];
	boundary_of(m, b, sizeof(b));
	snprintf(delim, sizeof(delim), "\r\n--%s", b);
	snprintf(ct, sizeof(ct), "\r\nContent-Type: %s\r\n", type);
	const char *p = strstr(m, ct);
	assert_non_null(p);
	p = strstr(p, "\r\n\r\n");
	assert_non_null(p);
	p += 4;
	const char *q = strstr(p, delim);
	assert_non_null(q);
	char *s = malloc((size_t)(q - p) + 1);
	assert_non_null(s);
	memcpy(s, p, (size_t)(q - p));
	s[q - p] = 0;
	return s;
}

/* The value of the first line starting with name (e.g. "Status: "), a copy. */
static char *field(const char *m, const char *name)
{
	char key[128];
	snprintf(key, sizeof(key), "\r\n%s", name);
	const char *p = strstr(m, key);
	assert_non_null(p);
	p += strlen(key);
	const char *q = strstr(p, "\r\n");
	char *s = malloc((size_t)(q - p) + 1);
	assert_non_null(s);
	memcpy(s, p, (size_t)(q - p));
	s[q - p] = 0;
	return s;
}

static void assert_field(const char *m, const char *name, const char *want)
{
	char *v = field(m, name);
	assert_string_equal(v, want);
	free(v);
}

/* ---- tests ---- */

static const char golden_one[] =
    "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
    "To: <alice@example.org>\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "Date: Tue, 14 Nov 2023 23:15:01 +0100\r\n"
    "Message-ID: <20231114221501.0123456789ABCDEF.5eed5eed5eed5eed@mx.example.com>\r\n"
    "Auto-Submitted: auto-replied\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
    "\tboundary=\"mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed\"\r\n"
    "\r\n"
    "This is a MIME-encapsulated message.\r\n"
    "\r\n"
    "--mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed\r\n"
    "Content-Description: Notification\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "This is the mail system at host mx.example.com.\r\n"
    "\r\n"
    "I'm sorry to report that your message could not be delivered to one or\r\n"
    "more of its recipients. Each of them is listed below with the reason\r\n"
    "given. There will be no further attempts for them.\r\n"
    "\r\n"
    "For help, please write to the postmaster of this site and include this\r\n"
    "report; the headers of your message are attached to it.\r\n"
    "\r\n"
    "                   The mail system\r\n"
    "\r\n"
    "<bob@example.net>: host hub.example.net said: 550 5.1.1 <bob@example.net>:\r\n"
    "    Recipient address rejected: User unknown in local recipient table\r\n"
    "\r\n"
    "--mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed\r\n"
    "Content-Description: Delivery report\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.example.com\r\n"
    "X-Mxring-Queue-ID: 0123456789ABCDEF\r\n"
    "X-Mxring-Sender: rfc822; alice@example.org\r\n"
    "Arrival-Date: Tue, 14 Nov 2023 23:13:20 +0100\r\n"
    "\r\n"
    "Final-Recipient: rfc822; bob@example.net\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Remote-MTA: dns; hub.example.net\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown "
    "in local recipient table\r\n"
    "Last-Attempt-Date: Tue, 14 Nov 2023 23:15:00 +0100\r\n"
    "\r\n"
    "--mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed\r\n"
    "Content-Description: Undelivered Message Headers\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "Received: from client.example.org ([192.0.2.1]:40000)\r\n"
    "\tby mx.example.com (mxring) with ESMTPS id 0123456789ABCDEF;\r\n"
    "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: Quarterly report\r\n"
    "Message-ID: <1234@client.example.org>\r\n"
    "\r\n"
    "--mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed--\r\n";

static void test_one_exact(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_string_equal(m, golden_one);
	assert_int_equal(res.len, sizeof(golden_one) - 1);
	assert_int_equal(res.env_flags, 0);
	assert_false(res.headers_cut);
	free(m);
}

static void test_three(void **state)
{
	(void)state;
	struct dsn_rcpt rc[3] = {base_rcpt(), base_rcpt(), base_rcpt()};
	rc[1].addr = "carol@example.net";
	rc[1].orig_addr = "Carol@Example.NET";
	rc[1].status = "5.2.2";
	rc[1].diag = "552 5.2.2 <carol@example.net> Mailbox is full";
	rc[1].last_attempt_s = 0;
	rc[2].addr = "dave@example.net";
	rc[2].status = "4.4.7";
	rc[2].remote_mta = NULL;
	rc[2].diag_type = DSN_DIAG_LOCAL;
	rc[2].diag = "message expired after 5 days in the queue";
	struct dsn_report r = base_report(rc, 3);
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	char *ds = part_of(m, "message/delivery-status");
	assert_string_equal(
	    ds, "Reporting-MTA: dns; mx.example.com\r\n"
		"X-Mxring-Queue-ID: 0123456789ABCDEF\r\n"
		"X-Mxring-Sender: rfc822; alice@example.org\r\n"
		"Arrival-Date: Tue, 14 Nov 2023 23:13:20 +0100\r\n"
		"\r\n"
		"Final-Recipient: rfc822; bob@example.net\r\n"
		"Action: failed\r\n"
		"Status: 5.1.1\r\n"
		"Remote-MTA: dns; hub.example.net\r\n"
		"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient "
		"address rejected: User unknown in local recipient table\r\n"
		"Last-Attempt-Date: Tue, 14 Nov 2023 23:15:00 +0100\r\n"
		"\r\n"
		"Final-Recipient: rfc822; carol@example.net\r\n"
		"Original-Recipient: rfc822; Carol@Example.NET\r\n"
		"Action: failed\r\n"
		"Status: 5.2.2\r\n"
		"Remote-MTA: dns; hub.example.net\r\n"
		"Diagnostic-Code: smtp; 552 5.2.2 <carol@example.net> Mailbox is full\r\n"
		"\r\n"
		"Final-Recipient: rfc822; dave@example.net\r\n"
		"Action: failed\r\n"
		"Status: 4.4.7\r\n"
		"Diagnostic-Code: X-mxring; message expired after 5 days in the queue\r\n"
		"Last-Attempt-Date: Tue, 14 Nov 2023 23:15:00 +0100\r\n");
	char *text = part_of(m, "text/plain; charset=us-ascii");
	const char *a = strstr(text, "\r\n\r\n<bob@example.net>: host hub.example.net said: 550");
	const char *b = strstr(text, "\r\n\r\n<carol@example.net> (original recipient "
				     "<Carol@Example.NET>): host\r\n    hub.example.net said: 552");
	const char *c = strstr(text, "\r\n\r\n<dave@example.net>: message expired after 5 days in "
				     "the queue\r\n");
	assert_true(a && b && c && a < b && b < c);
	assert_int_equal(count(m, "Final-Recipient: "), 3);
	free(text);
	free(ds);
	free(m);
}

static void test_null_sender(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	r.sender = "";
	char buf[64 << 10];
	memset(buf, 'x', sizeof(buf));
	struct dsn_result res = {.len = 12345};
	assert_int_equal(dsn_format(&r, buf, sizeof(buf), &res), -EPERM);
	assert_int_equal(res.len, 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 'x');
	/* Refused whatever else is wrong. */
	r.nrcpt = 0;
	assert_int_equal(dsn_format(&r, NULL, 0, &res), -EPERM);
}

/* One breach of the contract each. */
static void test_invalid(void **state)
{
	(void)state;
	static char long_addr[PATH_MAX_OCTETS + 2];
	memset(long_addr, 'a', sizeof(long_addr) - 1);
	for (int k = 0; k < 32; k++) {
		struct dsn_rcpt rc[2] = {base_rcpt(), base_rcpt()};
		struct dsn_report r = base_report(rc, 2);
		switch (k) {
		case 0:
			r.sender = NULL;
			break;
		case 1:
			r.sender = long_addr;
			break;
		case 2:
			r.myhostname = "";
			break;
		case 3:
			r.myhostname = "mx.example.com\r\nX: y";
			break;
		case 4:
			r.qid = "0123-456";
			break;
		case 5:
			r.qid = "0123456789ABCDEF0";
			break;
		case 6:
			r.arrival_s = 0;
			break;
		case 7:
			r.now_s = DSN_TIME_MAX + 1;
			break;
		case 8:
			r.utc_offset_min = 1440;
			break;
		case 9:
			r.utc_offset_min = -1440;
			break;
		case 10:
			r.headers = NULL;
			break;
		case 11:
			r.nrcpt = 0;
			break;
		case 12:
			r.nrcpt = RCPT_LIMIT_MAX + 1;
			break;
		case 13:
			r.rcpt = NULL;
			break;
		case 14:
			rc[1].action = DSN_DELAYED;
			rc[1].status = "4.2.0";
			break;
		case 15:
			rc[0].action = 3;
			rc[1].action = 3;
			break;
		case 16:
			rc[1].addr = "";
			break;
		case 17:
			rc[1].addr = long_addr;
			break;
		case 18:
			rc[1].orig_addr = long_addr;
			break;
		case 19:
			rc[1].status = "2.0.0";
			break;
		case 20:
			rc[1].status = "5.1";
			break;
		case 21:
			rc[1].status = "5.1.1234";
			break;
		case 22:
			rc[1].status = "5.1.1 ";
			break;
		case 23:
			rc[1].status = "5..1";
			break;
		case 24:
			rc[1].status = NULL;
			break;
		case 25:
			rc[1].diag = "";
			break;
		case 26:
			rc[1].diag = NULL;
			break;
		case 27:
			rc[1].diag_type = 2;
			break;
		case 28:
			rc[1].last_attempt_s = -1;
			break;
		case 29:
			rc[1].retry_until_s = 1700000000;
			break; /* failed: no retry */
		case 30:       /* delayed: class 4 only */
			rc[0].action = rc[1].action = DSN_DELAYED;
			rc[0].status = "4.2.0";
			break;
		case 31:
			rc[1].status = "5.1000.1";
			break;
		}
		struct dsn_result res;
		print_message("case %d\n", k);
		assert_int_equal(dsn_format(&r, NULL, 0, &res), -EINVAL);
	}
	/* And what is allowed: 4.x.x with failed (the queue lifetime ran out),
	 * no headers, no remote MTA, an empty original recipient. */
	struct dsn_rcpt rc = base_rcpt();
	rc.status = "4.4.7";
	rc.remote_mta = "";
	rc.orig_addr = "";
	struct dsn_report r = base_report(&rc, 1);
	r.headers = NULL;
	r.headers_len = 0;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_null(strstr(m, "Remote-MTA"));
	assert_null(strstr(m, "Original-Recipient"));
	assert_non_null(strstr(m, "Content-Type: text/rfc822-headers\r\n\r\n\r\n--"));
	free(m);
}

static void test_injection(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	rc.diag = "550 5.1.1 no\r\nX-Injected: 1\r\n\r\n--x\n.\r\n\x1b[31m\x7f\t\x01 end";
	rc.remote_mta = "hub.example.net\r\nX-Injected: 2";
	rc.addr = "bob@example.net\r\nX-Injected: 3";
	rc.orig_addr = "bob\n\rX-Injected: 4";
	struct dsn_report r = base_report(&rc, 1);
	r.sender = "alice@example.org>\r\nX-Injected: 5";
	static const char hdrs[] = "Subject: a\rX-Injected: 6\r\n"
				   "X-Nul: \0\x01\x7f\r\n"
				   "X-Bare-Lf: x\n"
				   "\r\n";
	r.headers = (const uint8_t *)hdrs;
	r.headers_len = sizeof(hdrs) - 1;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_null(strstr(m, "\nX-Injected"));
	assert_field(
	    m, "Diagnostic-Code: ", "smtp; 550 5.1.1 no  X-Injected: 1    --x .   [31m    end");
	assert_field(m, "Remote-MTA: ", "dns; hub.example.net??X-Injected: 2");
	assert_field(m, "Final-Recipient: ", "rfc822; bob@example.net??X-Injected: 3");
	assert_field(m, "Original-Recipient: ", "rfc822; bob??X-Injected: 4");
	assert_field(m, "To: ", "<alice@example.org>??X-Injected: 5>");
	char *h = part_of(m, "text/rfc822-headers");
	assert_string_equal(h, "Subject: a?X-Injected: 6\r\n"
			       "X-Nul: ???\r\n"
			       "X-Bare-Lf: x\r\n");
	free(h);
	free(m);
}

/* n octets of header fields "X-Fill-NNNNN: ...\r\n" of 64 octets each. */
static size_t fill(char *p, size_t n, unsigned first)
{
	size_t k = 0;
	for (unsigned i = first; k + 64 <= n; i++) {
		int w = snprintf(p + k, 65, "X-Fill-%05u: %-48s\r\n", i % 100000, "filler");
		assert_int_equal(w, 64);
		k += 64;
	}
	return k;
}

static void test_headers_cut(void **state)
{
	(void)state;
	size_t cap = 3 * DSN_HEADERS_MAX;
	char *h = malloc(cap);
	assert_non_null(h);
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	r.headers = (const uint8_t *)h;
	struct dsn_result res;

	/* Exactly the bound: all of it; one octet more: cut before the last field. */
	size_t n = fill(h, DSN_HEADERS_MAX, 0);
	assert_int_equal(n, DSN_HEADERS_MAX);
	r.headers_len = n;
	char *m = fmt_ok(&r, &res);
	assert_false(res.headers_cut);
	char *part = part_of(m, "text/rfc822-headers");
	assert_int_equal(strlen(part), n);
	assert_null(strstr(m, "are longer than"));
	free(part);
	free(m);
	memcpy(h + n, "X", 1);
	r.headers_len = n + 1;
	m = fmt_ok(&r, &res);
	assert_true(res.headers_cut);
	part = part_of(m, "text/rfc822-headers");
	assert_int_equal(strlen(part), n);
	assert_memory_equal(part, h, n);
	assert_non_null(strstr(m, "\r\nThe headers of your message are longer than 65536 octets: "
				  "only the first 65536\r\n    octets of them are attached.\r\n"));
	free(part);
	free(m);

	/* A field folded over many lines across the bound: cut before that
	 * field, not between its lines; the empty line and body are never read. */
	n = fill(h, 1000, 0);
	memcpy(h + n, "X-Folded: start\r\n", 17);
	size_t field_at = n;
	n += 17;
	while (n < DSN_HEADERS_MAX + 1000) {
		memcpy(h + n, "\tmore folded text of the same field\r\n", 37);
		n += 37;
	}
	memcpy(h + n, "\r\nbody\r\n", 8);
	r.headers_len = n + 8;
	m = fmt_ok(&r, &res);
	assert_true(res.headers_cut);
	part = part_of(m, "text/rfc822-headers");
	assert_int_equal(strlen(part), field_at);
	free(part);
	free(m);

	/* The first field alone is over the bound: cut before one of its lines. */
	r.headers = (const uint8_t *)h + field_at;
	r.headers_len = n - field_at;
	m = fmt_ok(&r, &res);
	assert_true(res.headers_cut);
	part = part_of(m, "text/rfc822-headers");
	size_t len = strlen(part);
	assert_true(len <= DSN_HEADERS_MAX && len > DSN_HEADERS_MAX - 37);
	assert_memory_equal(part, h + field_at, len);
	assert_true(part[len - 1] == '\n');
	free(part);
	free(m);

	/* One line over the bound: its first DSN_HEADERS_MAX octets, folded. */
	memcpy(h, "X-Huge: ", 8);
	memset(h + 8, 'h', cap - 8);
	r.headers = (const uint8_t *)h;
	r.headers_len = cap;
	m = fmt_ok(&r, &res);
	assert_true(res.headers_cut);
	part = part_of(m, "text/rfc822-headers");
	len = strlen(part);
	size_t folds = count(part, "\r\n\t");
	assert_int_equal(folds,
			 (DSN_HEADERS_MAX - 2) / (DSN_LINE_MAX - 1)); /* 998, then 997 each */
	assert_int_equal(len, DSN_HEADERS_MAX + 3 * folds + 2);
	free(part);
	free(m);
	free(h);
}

static void test_headers_shapes(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	struct dsn_result res;
	static const struct {
		const char *in;
		size_t len; /* 0: strlen */
		const char *out;
	} t[] = {
	    {"A: 1\nB: 2\n\nbody", 0, "A: 1\r\nB: 2\r\n"},
	    {"A: 1\r\nB: 2", 0, "A: 1\r\nB: 2\r\n"},
	    {"A: 1\r\n\r\nB: 2\r\n", 0, "A: 1\r\n"},
	    {"A: 1\r\n\n", 0, "A: 1\r\n"},
	    {"A: 1\r\n\r", 0, "A: 1\r\n"},
	    {"A: 1\r\r\n \t\r\n", 0, "A: 1?\r\n \t\r\n"},
	    {"\r\nA: 1\r\n", 0, ""},
	    {"A: \xc3\xa9t\xc3\xa9\r\n", 0, "A: \xc3\xa9t\xc3\xa9\r\n"},
	    {"A: 1\0B\r\n", 8, "A: 1?B\r\n"},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		print_message("case %zu\n", i);
		r.headers = (const uint8_t *)t[i].in;
		r.headers_len = t[i].len ? t[i].len : strlen(t[i].in);
		char *m = fmt_ok(&r, &res);
		char *part = part_of(m, "text/rfc822-headers");
		assert_string_equal(part, t[i].out);
		assert_false(res.headers_cut);
		free(part);
		free(m);
	}

	/* 8-bit headers of a message without SMTPUTF8: declared 8bit. */
	r.headers = (const uint8_t *)"Subject: \xe9t\xe9\r\n";
	r.headers_len = strlen((const char *)r.headers);
	char *m = fmt_ok(&r, &res);
	assert_int_equal(res.env_flags, ENV_8BITMIME);
	assert_non_null(strstr(m, "report-type=delivery-status;\r\n\tboundary=\"mxring-dsn."
				  "0123456789ABCDEF.5eed5eed5eed5eed\"\r\n"
				  "Content-Transfer-Encoding: 8bit\r\n\r\n"));
	assert_non_null(strstr(m, "Content-Type: text/rfc822-headers\r\n"
				  "Content-Transfer-Encoding: 8bit\r\n\r\nSubject: \xe9t\xe9\r\n"));
	assert_non_null(strstr(m, "Content-Type: text/plain; charset=us-ascii\r\n\r\n"));
	free(m);

	/* A line of 2000: folded at 998, then 997 after the HTAB; a UTF-8
	 * sequence across the fold moves to the next line whole (so the first
	 * has 996 octets, the second 997 with the HTAB, the third 7). */
	static char line[2100];
	memset(line, 'a', 2000);
	memcpy(line + 996, "\xe2\x82\xac", 3); /* octets 996..998 */
	memcpy(line + 2000, "\r\n", 3);
	r.headers = (const uint8_t *)line;
	r.headers_len = strlen(line);
	m = fmt_ok(&r, &res);
	char *part = part_of(m, "text/rfc822-headers");
	assert_int_equal(strlen(part), 2000 + 2 * 3 + 2);
	assert_memory_equal(part, line, 996);
	assert_memory_equal(part + 996, "\r\n\t\xe2\x82\xac", 6);
	assert_memory_equal(part + 1002, line + 999, 994);
	assert_memory_equal(part + 1996, "\r\n\t", 3);
	assert_memory_equal(part + 1999, line + 1993, 7);
	assert_memory_equal(part + 2006, "\r\n", 2);
	free(part);
	free(m);
}

static void test_smtputf8(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	rc.addr = "m\xc3\xbcller@example.net";
	rc.orig_addr = "M\xc3\x9cLLER@example.net";
	rc.diag = "550 5.1.1 <m\xc3\xbcller@example.net>: unknown \xff\xc3";
	struct dsn_report r = base_report(&rc, 1);
	r.flags = DSN_F_SMTPUTF8;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_int_equal(res.env_flags, ENV_SMTPUTF8 | ENV_8BITMIME);
	assert_field(m, "Final-Recipient: ", "utf-8; m\xc3\xbcller@example.net");
	assert_field(m, "Original-Recipient: ", "utf-8; M\xc3\x9cLLER@example.net");
	assert_field(m, "X-Mxring-Sender: ", "rfc822; alice@example.org");
	assert_field(
	    m, "Diagnostic-Code: ", "smtp; 550 5.1.1 <m\xc3\xbcller@example.net>: unknown ??");
	assert_non_null(strstr(m, "\r\nContent-Type: text/plain; charset=utf-8\r\n"
				  "Content-Transfer-Encoding: 8bit\r\n\r\n"));
	assert_non_null(strstr(m, "\r\nContent-Type: message/global-delivery-status\r\n"
				  "Content-Transfer-Encoding: 8bit\r\n\r\n"));
	assert_non_null(strstr(m, "\r\nContent-Type: message/global-headers\r\n"
				  "Content-Transfer-Encoding: 8bit\r\n\r\n"));
	assert_non_null(strstr(m, "\r\n\r\n<m\xc3\xbcller@example.net> (original recipient "));
	free(m);

	/* Only the sender is not ASCII: still global. */
	rc = base_rcpt();
	r.sender = "j\xc3\xb6rg@example.org";
	m = fmt_ok(&r, &res);
	assert_int_equal(res.env_flags, ENV_SMTPUTF8 | ENV_8BITMIME);
	assert_field(m, "To: ", "<j\xc3\xb6rg@example.org>");
	assert_field(m, "X-Mxring-Sender: ", "utf-8; j\xc3\xb6rg@example.org");
	assert_field(m, "Final-Recipient: ", "rfc822; bob@example.net");
	free(m);

	/* Invalid UTF-8 in an address: '?' for each octet that is not in a
	 * valid sequence (a lone continuation, an overlong form, a surrogate,
	 * a C1 control), still the utf-8 type. */
	r.sender = "a\x80\xc0\xaf\xed\xa0\x80\xc2\x85\xf4\x90\x80\x80\xe2\x82@x";
	m = fmt_ok(&r, &res);
	assert_field(m, "X-Mxring-Sender: ", "utf-8; a??????????????@x");
	free(m);

	/* SMTPUTF8, every address ASCII: the classic types, 7bit. */
	r.sender = "alice@example.org";
	m = fmt_ok(&r, &res);
	assert_int_equal(res.env_flags, 0);
	assert_non_null(strstr(m, "\r\nContent-Type: message/delivery-status\r\n\r\n"));
	assert_non_null(strstr(m, "\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
	assert_null(strstr(m, "8bit"));
	free(m);

	/* Not SMTPUTF8, yet a non-ASCII address and reply: '?', 7bit. */
	r.flags = 0;
	rc.addr = "m\xc3\xbcller@example.net";
	rc.diag = "550 m\xc3\xbcller";
	m = fmt_ok(&r, &res);
	assert_int_equal(res.env_flags, 0);
	assert_field(m, "Final-Recipient: ", "rfc822; m??ller@example.net");
	assert_field(m, "Diagnostic-Code: ", "smtp; 550 m??ller");
	for (const char *p = m; *p; p++)
		assert_true((unsigned char)*p < 0x80);
	free(m);
}

static void test_nospc(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	struct dsn_result res;
	assert_int_equal(dsn_format(&r, NULL, 0, &res), -ENOSPC);
	size_t need = res.len;
	assert_int_equal(need, sizeof(golden_one) - 1);
	char *buf = malloc(need + 64);
	assert_non_null(buf);
	size_t caps[] = {0, 1, 100, need / 2, need - 1};
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		memset(buf, 0xaa, need + 64);
		assert_int_equal(dsn_format(&r, buf, caps[i], &res), -ENOSPC);
		assert_int_equal(res.len, need);
		/* What was written is the message's start, and nothing at or past cap. */
		size_t w = 0;
		while (w < need + 64 && (unsigned char)buf[w] != 0xaa)
			w++;
		assert_true(w <= caps[i]);
		assert_memory_equal(buf, golden_one, w);
		for (size_t k = w; k < need + 64; k++)
			assert_int_equal((unsigned char)buf[k], 0xaa);
	}
	memset(buf, 0xaa, need + 64);
	assert_int_equal(dsn_format(&r, buf, need + 64, &res), 0);
	assert_int_equal(res.len, need);
	assert_memory_equal(buf, golden_one, need);
	assert_int_equal((unsigned char)buf[need], 0xaa);
	free(buf);
}

static void test_dates(void **state)
{
	(void)state;
	static const struct {
		int64_t t;
		int32_t off;
		const char *want;
	} t[] = {
	    {1700000000, 0, "Tue, 14 Nov 2023 22:13:20 +0000"},
	    {1700000000, -300, "Tue, 14 Nov 2023 17:13:20 -0500"},
	    {1700000000, 330, "Wed, 15 Nov 2023 03:43:20 +0530"},
	    {1709164800, 0, "Thu, 29 Feb 2024 00:00:00 +0000"},
	    {951782400, 0, "Tue, 29 Feb 2000 00:00:00 +0000"},
	    {4107542400, 0, "Mon, 1 Mar 2100 00:00:00 +0000"},
	    {DSN_TIME_MIN, -DSN_UTC_OFFSET_MAX, "Thu, 1 Jan 1970 00:01:00 -2359"},
	    {DSN_TIME_MIN, 0, "Fri, 2 Jan 1970 00:00:00 +0000"},
	    {DSN_TIME_MAX, DSN_UTC_OFFSET_MAX, "Fri, 31 Dec 9999 23:58:59 +2359"},
	    {1700000000, -1, "Tue, 14 Nov 2023 22:12:20 -0001"},
	};
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		print_message("case %zu\n", i);
		r.now_s = t[i].t;
		r.arrival_s = t[i].t;
		r.utc_offset_min = t[i].off;
		struct dsn_result res;
		char *m = fmt_ok(&r, &res);
		assert_field(m, "Date: ", t[i].want);
		assert_field(m, "Arrival-Date: ", t[i].want);
		free(m);
	}
	/* The Message-ID's stamp is UTC whatever the zone. */
	r.now_s = 1700000000;
	r.utc_offset_min = -300;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_field(
	    m, "Message-ID: ", "<20231114221320.0123456789ABCDEF.5eed5eed5eed5eed@mx.example.com>");
	free(m);
}

static void test_boundary_collision(void **state)
{
	(void)state;
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	char h[2048];
	size_t n = 0;
	/* The first boundary the seed gives, in a header: another is taken. */
	n += (size_t)snprintf(h + n, sizeof(h) - n,
			      "X-Trap: --mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed\r\n");
	r.headers = (const uint8_t *)h;
	r.headers_len = n;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res); /* check_frame: the boundary only where it belongs */
	char b[DSN_BOUNDARY_MAX + 8];
	boundary_of(m, b, sizeof(b));
	assert_string_not_equal(b, "mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed");
	assert_int_equal(strlen(b), strlen("mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed"));
	free(m);
	/* Every one of them: refused. */
	for (uint64_t k = 1; k < 8; k++)
		n += (size_t)snprintf(h + n, sizeof(h) - n, "X-Trap: mxring-dsn.%s.%016llx\r\n",
				      r.qid,
				      (unsigned long long)(r.seed ^ (k * 0x9e3779b97f4a7c15u)));
	r.headers_len = n;
	assert_int_equal(dsn_format(&r, NULL, 0, &res), -EEXIST);
	r.seed++;
	m = fmt_ok(&r, &res);
	free(m);

	/* The boundary in any other text from outside: avoided too, though
	 * none of it can start a line (check_frame counts every occurrence). */
	static const char trap[] = "x-mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed-x";
	for (int where = 0; where < 6; where++) {
		rc = base_rcpt();
		r = base_report(&rc, 1);
		switch (where) {
		case 0:
			r.sender = trap;
			break;
		case 1:
			rc.addr = trap;
			break;
		case 2:
			rc.orig_addr = trap;
			break;
		case 3:
			rc.remote_mta = trap;
			break;
		case 4:
			rc.diag = trap;
			break;
		case 5:
			r.myhostname = trap;
			break;
		}
		print_message("case %d\n", where);
		m = fmt_ok(&r, &res);
		boundary_of(m, b, sizeof(b));
		assert_string_not_equal(b, "mxring-dsn.0123456789ABCDEF.5eed5eed5eed5eed");
		free(m);
	}
}

static void test_delayed(void **state)
{
	(void)state;
	struct dsn_rcpt rc[2] = {base_rcpt(), base_rcpt()};
	for (int i = 0; i < 2; i++) {
		rc[i].action = DSN_DELAYED;
		rc[i].status = "4.2.0";
		rc[i].diag = "451 4.2.0 Mailbox temporarily unavailable";
	}
	rc[0].retry_until_s = 1700432000;
	rc[1].addr = "carol@example.net";
	rc[1].diag_type = DSN_DIAG_LOCAL;
	rc[1].remote_mta = NULL;
	rc[1].diag = "connect to hub.example.net[192.0.2.10]:25: Connection refused";
	struct dsn_report r = base_report(rc, 2);
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_field(m, "Subject: ", "Delayed Mail (still being retried)");
	assert_int_equal(count(m, "\r\nAction: delayed\r\n"), 2);
	assert_int_equal(count(m, "\r\nWill-Retry-Until: "), 1);
	assert_field(m, "Will-Retry-Until: ", "Sun, 19 Nov 2023 23:13:20 +0100");
	assert_non_null(strstr(m, "This is a warning only"));
	assert_non_null(strstr(m, "\r\n\r\n<bob@example.net>: host hub.example.net said: 451 "
				  "4.2.0 Mailbox temporarily\r\n    unavailable (delivery will be "
				  "tried until Sun, 19 Nov 2023 23:13:20 +0100)\r\n"));
	assert_non_null(strstr(m, "\r\n\r\n<carol@example.net>: connect to "
				  "hub.example.net[192.0.2.10]:25: Connection\r\n    refused\r\n"));
	assert_null(strstr(m, "I'm sorry"));
	free(m);
}

/* Long words are cut at the width, never inside a UTF-8 sequence; spaces
 * in the second half of a line are where lines break. */
static void test_wrap(void **state)
{
	(void)state;
	static char diag[DSN_DIAG_MAX + 100];
	struct dsn_rcpt rc = base_rcpt();
	struct dsn_report r = base_report(&rc, 1);
	r.flags = DSN_F_SMTPUTF8;
	rc.addr = "\xc3\xa9@example.net"; /* global, so UTF-8 passes */
	size_t n = 0;
	while (n + 3 < sizeof(diag))
		n += (size_t)snprintf(diag + n, sizeof(diag) - n, "\xe2\x82\xac");
	rc.diag = diag;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	/* Cut at DSN_DIAG_MAX on a sequence boundary: 170 euro signs. */
	char *d = field(m, "Diagnostic-Code: ");
	assert_int_equal(strlen(d), 6 + 510);
	free(d);
	char *text = part_of(m, "text/plain; charset=utf-8");
	const char *p = strstr(text, "<\xc3\xa9@example.net>");
	assert_non_null(p);
	for (const char *l = p; *l; l = strstr(l, "\r\n") + 2) {
		size_t len = (size_t)(strstr(l, "\r\n") - l);
		assert_true(len <= DSN_WRAP_COLS);
		/* Every line holds whole sequences: starts on a lead byte. */
		size_t at = l == p ? 0 : 4;
		assert_true(len == 0 || ((unsigned char)l[at] & 0xc0) != 0x80);
	}
	free(text);
	free(m);
}

/* The bound with RCPT_LIMIT_MAX recipients of the longest fields. */
static void test_size_max(void **state)
{
	(void)state;
	static char addr[PATH_MAX_OCTETS + 1], mta[DSN_MTA_MAX + 50], diag[DSN_DIAG_MAX + 50];
	static char host[DOMAIN_MAX + 1];
	memset(addr, 'a', PATH_MAX_OCTETS);
	memset(mta, 'm', sizeof(mta) - 1);
	memset(host, 'h', DOMAIN_MAX);
	for (size_t i = 0; i + 1 < sizeof(diag); i++)
		diag[i] = i % 3 == 2 ? ' ' : 'd'; /* many short words: the most breaks */
	struct dsn_rcpt *rc = calloc(RCPT_LIMIT_MAX, sizeof(*rc));
	assert_non_null(rc);
	for (uint32_t i = 0; i < RCPT_LIMIT_MAX; i++) {
		rc[i] = base_rcpt();
		rc[i].action = DSN_DELAYED;
		rc[i].status = "4.999.999";
		rc[i].addr = addr;
		rc[i].orig_addr = addr;
		rc[i].remote_mta = mta;
		rc[i].diag = diag;
		rc[i].retry_until_s = DSN_TIME_MAX;
	}
	size_t hlen = 2 * DSN_HEADERS_MAX;
	char *h = malloc(hlen);
	assert_non_null(h);
	for (size_t i = 0; i < hlen; i += 2)
		memcpy(h + i, "a\n", 2); /* lines of one octet: LF -> CRLF */
	struct dsn_report r = base_report(rc, RCPT_LIMIT_MAX);
	r.myhostname = host;
	r.sender = addr;
	r.headers = (const uint8_t *)h;
	r.headers_len = hlen;
	struct dsn_result res;
	char *m = fmt_ok(&r, &res);
	assert_true(res.headers_cut);
	assert_true(res.len <= dsn_size_max(RCPT_LIMIT_MAX));
	print_message("%zu octets, bound %zu\n", res.len, dsn_size_max(RCPT_LIMIT_MAX));
	char *d = field(m, "Remote-MTA: ");
	assert_int_equal(strlen(d), 5 + DSN_MTA_MAX);
	free(d);
	free(m);
	free(h);
	free(rc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_exact),
	    cmocka_unit_test(test_three),
	    cmocka_unit_test(test_null_sender),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_injection),
	    cmocka_unit_test(test_headers_cut),
	    cmocka_unit_test(test_headers_shapes),
	    cmocka_unit_test(test_smtputf8),
	    cmocka_unit_test(test_nospc),
	    cmocka_unit_test(test_dates),
	    cmocka_unit_test(test_boundary_collision),
	    cmocka_unit_test(test_delayed),
	    cmocka_unit_test(test_wrap),
	    cmocka_unit_test(test_size_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
