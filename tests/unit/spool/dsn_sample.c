/*
 * dsn_sample.c - writes one delivery status notification (core/dsn.c) to
 * stdout, for check_dsn.py to parse with Python's email package.
 *
 *   dsn_sample SCENARIO
 *
 * one: a recipient refused by the hub with 550 5.1.1; three: three
 * recipients (SMTP, LMTP, and one failed here); inject: CR, LF and other
 * control bytes in the reply, the remote MTA's name and an address;
 * long-headers: original headers over DSN_HEADERS_MAX, one of them over
 * a line; utf8: SMTPUTF8 with non-ASCII addresses; delayed: a delay
 * warning. Exits 0, or 2 on a bad scenario or a formatting error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"

#define SAMPLE_HEADERS_MAX (100u << 10)

static const char headers_short[] =
    "Received: from client.example.org ([192.0.2.1]:40000)\r\n"
    "\tby mx.example.com (mxring) with ESMTPS id 0123456789ABCDEF;\r\n"
    "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: Quarterly report\r\n"
    "Message-ID: <1234@client.example.org>\r\n"
    "\r\n"
    "The body is not carried.\r\n";

static const char headers_utf8[] = "From: J\xc3\xb6rg <j\xc3\xb6rg@example.org>\r\n"
				   "To: =?utf-8?q?M=C3=BCller?= <m\xc3\xbcller@example.net>\r\n"
				   "Subject: Gr\xc3\xbc\xc3\x9f"
				   "e\r\n"
				   "\r\n";

/* Headers longer than DSN_HEADERS_MAX: a Subject, one field longer than a
 * line may be, then numbered fields until the bound is passed. */
static size_t long_headers(char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "Subject: Quarterly report\r\nX-Long: ");
	for (unsigned i = 0; i < 1500; i++)
		buf[n++] = (char)('a' + i % 26);
	n += (size_t)snprintf(buf + n, cap - n, "\r\n");
	for (unsigned i = 0; n + 100 < cap && n < DSN_HEADERS_MAX + 4096; i++)
		n += (size_t)snprintf(buf + n, cap - n, "X-Filler-%05u: %s\r\n", i,
				      "some text to make the header block long enough");
	n += (size_t)snprintf(buf + n, cap - n, "\r\nbody\r\n");
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: dsn_sample one|three|inject|long-headers|utf8|delayed\n");
		return 2;
	}
	const char *sc = argv[1];
	static char hbuf[SAMPLE_HEADERS_MAX];
	struct dsn_rcpt rc[3] = {{
	    .addr = "bob@example.net",
	    .action = DSN_FAILED,
	    .status = "5.1.1",
	    .remote_mta = "hub.example.net",
	    .diag_type = DSN_DIAG_SMTP,
	    .diag = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in "
		    "local recipient table",
	    .last_attempt_s = 1700000100,
	}};
	struct dsn_report r = {
	    .myhostname = "mx.example.com",
	    .qid = "0123456789ABCDEF",
	    .sender = "alice@example.org",
	    .arrival_s = 1700000000,
	    .now_s = 1700000101,
	    .utc_offset_min = 60,
	    .seed = 0x5eed5eed5eed5eedu,
	    .headers = (const uint8_t *)headers_short,
	    .headers_len = sizeof(headers_short) - 1,
	    .rcpt = rc,
	    .nrcpt = 1,
	};
	if (!strcmp(sc, "one")) {
		/* as above */
	} else if (!strcmp(sc, "three")) {
		rc[1] = rc[0];
		rc[1].addr = "carol@example.net";
		rc[1].orig_addr = "Carol@Example.NET";
		rc[1].status = "5.2.2";
		rc[1].diag = "552 5.2.2 <carol@example.net> Mailbox is full";
		rc[2] = rc[0];
		rc[2].addr = "dave@example.net";
		rc[2].status = "5.3.4";
		rc[2].remote_mta = "";
		rc[2].diag_type = DSN_DIAG_LOCAL;
		rc[2].diag = "message size 20000000 exceeds the hub's limit of 10240000";
		r.nrcpt = 3;
	} else if (!strcmp(sc, "inject")) {
		rc[0].diag =
		    "550 5.1.1 no such user\r\nX-Injected: yes\r\n\r\n--mxring\n.\r\nEOF\x1b"
		    "[31m\x7f";
		rc[0].remote_mta = "hub.example.net\r\nX-Injected-Mta: yes";
		rc[0].addr = "bob@example.net\r\nX-Injected-Rcpt: yes";
	} else if (!strcmp(sc, "long-headers")) {
		r.headers = (const uint8_t *)hbuf;
		r.headers_len = long_headers(hbuf, sizeof(hbuf));
	} else if (!strcmp(sc, "utf8")) {
		r.flags = DSN_F_SMTPUTF8;
		r.sender = "j\xc3\xb6rg@example.org";
		rc[0].addr = "m\xc3\xbcller@example.net";
		rc[0].diag = "550 5.1.1 <m\xc3\xbcller@example.net>: User unknown";
		r.headers = (const uint8_t *)headers_utf8;
		r.headers_len = sizeof(headers_utf8) - 1;
	} else if (!strcmp(sc, "delayed")) {
		rc[0].action = DSN_DELAYED;
		rc[0].status = "4.2.0";
		rc[0].diag = "451 4.2.0 <bob@example.net>: Mailbox temporarily unavailable";
		rc[0].retry_until_s = 1700000000 + 5 * 86400;
	} else {
		fprintf(stderr, "dsn_sample: unknown scenario %s\n", sc);
		return 2;
	}

	struct dsn_result res;
	int err = dsn_format(&r, NULL, 0, &res);
	if (err != -ENOSPC) {
		fprintf(stderr, "dsn_sample: sizing: %s\n", strerror(-err));
		return 2;
	}
	char *out = malloc(res.len);
	if (!out || (err = dsn_format(&r, out, res.len, &res)) != 0) {
		fprintf(stderr, "dsn_sample: %s\n", strerror(out ? -err : ENOMEM));
		return 2;
	}
	fwrite(out, 1, res.len, stdout);
	free(out);
	return fflush(stdout) == 0 ? 0 : 2;
}
