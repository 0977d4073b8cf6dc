/*
 * fuzz_dsn.c - the delivery status notification (dsn_format) made from
 * untrusted text: the hub's reply, the remote MTA's name, the addresses,
 * the original headers.
 *
 * Input: a flags octet (0x01 SMTPUTF8, 0x02 delayed, 0x0c recipients - 1,
 * 0x10 a local diagnostic, 0x20 original recipients, 0x40 each recipient's
 * status from the input, not "5.1.1" / "4.2.0"), an octet for the zone
 * offset (some out of range), then NUL-separated fields: the sender, then
 * per recipient its address, reply, remote MTA (and status, original
 * recipient when the flags say so); the rest, NULs and all, is the header
 * block. Missing fields are empty.
 *
 * Checked: dsn_format refuses (-EINVAL, -EPERM, -EEXIST) or sizes the
 * message within dsn_size_max and then writes exactly that into a buffer
 * of exactly that size (and refuses one octet less); lines end in CRLF
 * and hold at most 998 octets, no other CR or LF, no control byte but
 * HTAB; octets >= 0x80 only when env_flags say 8BITMIME; the header is
 * fields and continuations; the boundary occurs only in the Content-Type
 * and the four delimiter lines, the last one ending the message; the text
 * part is wrapped at 78 columns; the delivery-status part has one
 * Final-Recipient, Action and Status line per recipient, no more.
 */
#include <errno.h>
#include <string.h>

#include "dsn.h"
#include "fuzz.h"
#include "msg.h"

#define FIELDS_MAX (1 + 4 * 5)

static size_t line_count(const char *s, size_t n, const char *prefix)
{
	size_t k = 0, pl = strlen(prefix);
	for (size_t i = 0; i + pl <= n; i++)
		if ((i == 0 || s[i - 1] == '\n') && !memcmp(s + i, prefix, pl))
			k++;
	return k;
}

/* Offsets of the delimiter lines "--B" (at line starts) in m; returns how many. */
static size_t delimiters(const char *m, size_t n, const char *b, size_t *at, size_t max)
{
	size_t bl = strlen(b), k = 0;
	for (size_t i = 0; i + 2 + bl <= n; i++) {
		if ((i == 0 || m[i - 1] == '\n') && m[i] == '-' && m[i + 1] == '-' &&
		    !memcmp(m + i + 2, b, bl)) {
			FUZZ_CHECK(k < max, "more than %zu delimiters", max);
			at[k++] = i;
		}
	}
	return k;
}

static void check_message(const char *m, size_t n, const struct dsn_result *res, uint32_t nrcpt)
{
	size_t line = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)m[i];
		if (c == '\r') {
			FUZZ_CHECK(i + 1 < n && m[i + 1] == '\n', "bare CR at %zu", i);
			FUZZ_CHECK(line <= DSN_LINE_MAX, "line of %zu octets at %zu", line, i);
			line = 0;
			i++;
			continue;
		}
		FUZZ_CHECK(c != '\n', "bare LF at %zu", i);
		FUZZ_CHECK((c >= 0x20 && c != 0x7f) || c == '\t', "control 0x%02x at %zu", c, i);
		FUZZ_CHECK(c < 0x80 || (res->env_flags & ENV_8BITMIME), "8-bit octet at %zu", i);
		line++;
	}
	FUZZ_CHECK(line == 0, "no CRLF at the end");

	const char *hend = memmem(m, n, "\r\n\r\n", 4);
	FUZZ_CHECK(hend, "no end of header");
	for (const char *l = m; l < hend + 2;) {
		const char *e = memmem(l, n - (size_t)(l - m), "\r\n", 2);
		const char *colon = memchr(l, ':', (size_t)(e - l));
		FUZZ_CHECK(*l == '\t' || *l == ' ' || colon, "header line '%.*s'", (int)(e - l), l);
		l = e + 2;
	}
	/* The parameter's own line: the sender in To: may say boundary=" too. */
	const char *bp = memmem(m, (size_t)(hend - m), "\r\n\tboundary=\"", 13);
	FUZZ_CHECK(bp, "no boundary");
	bp += 13;
	const char *bq = memchr(bp, '"', (size_t)(hend - bp));
	FUZZ_CHECK(bq && bq > bp && bq - bp <= (long)DSN_BOUNDARY_MAX, "boundary length");
	char b[DSN_BOUNDARY_MAX + 1];
	memcpy(b, bp, (size_t)(bq - bp));
	b[bq - bp] = 0;
	size_t bl = strlen(b), seen = 0;
	for (const char *p = m; (p = memmem(p, n - (size_t)(p - m), b, bl)); p++)
		seen++;
	FUZZ_CHECK(seen == 5, "the boundary occurs %zu times", seen);
	size_t at[5];
	FUZZ_CHECK(delimiters(m, n, b, at, 5) == 4, "not four delimiter lines");
	FUZZ_CHECK(n - at[3] == bl + 6 && !memcmp(m + at[3] + 2 + bl, "--\r\n", 4),
		   "the last delimiter does not close the message");

	/* Part 1: text wrapped at 78 columns (the host is short). */
	size_t l1 = 0;
	for (size_t i = at[0]; i < at[1]; i++) {
		if (m[i] == '\r') {
			FUZZ_CHECK(l1 <= DSN_WRAP_COLS, "text line of %zu octets", l1);
			l1 = 0;
			i++;
		} else {
			l1++;
		}
	}
	/* Part 2: one block per recipient, no field added. */
	const char *ds = m + at[1];
	size_t dn = at[2] - at[1];
	FUZZ_CHECK(line_count(ds, dn, "Final-Recipient: ") == nrcpt, "Final-Recipient lines");
	FUZZ_CHECK(line_count(ds, dn, "Action: ") == nrcpt, "Action lines");
	FUZZ_CHECK(line_count(ds, dn, "Status: ") == nrcpt, "Status lines");
	FUZZ_CHECK(line_count(ds, dn, "Diagnostic-Code: ") == nrcpt, "Diagnostic-Code lines");
	FUZZ_CHECK(line_count(ds, dn, "Reporting-MTA: ") == 1, "Reporting-MTA lines");
}

/* The next NUL-separated field of data as a string of its own (exact size). */
static char *next_field(const uint8_t **p, const uint8_t *end, char **owned, size_t *nowned)
{
	const uint8_t *z = *p < end ? memchr(*p, 0, (size_t)(end - *p)) : NULL;
	size_t n = *p < end ? (z ? (size_t)(z - *p) : (size_t)(end - *p)) : 0;
	char *s = fuzz_alloc(n + 1);
	if (n)
		memcpy(s, *p, n);
	s[n] = 0;
	*p = z ? z + 1 : end;
	owned[(*nowned)++] = s;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t f = data[0];
	const uint8_t *p = data + 2, *end = data + size;
	char *owned[FIELDS_MAX];
	size_t nowned = 0;
	struct dsn_rcpt rc[4];
	uint32_t nrcpt = 1 + ((f >> 2) & 3);
	bool delayed = f & 0x02;
	const char *sender = next_field(&p, end, owned, &nowned);
	for (uint32_t i = 0; i < nrcpt; i++) {
		rc[i] = (struct dsn_rcpt){
		    .action = delayed ? DSN_DELAYED : DSN_FAILED,
		    .status = delayed ? "4.2.0" : "5.1.1",
		    .diag_type = (f & 0x10) ? DSN_DIAG_LOCAL : DSN_DIAG_SMTP,
		    .last_attempt_s = 1700000100,
		    .retry_until_s = delayed ? 1700432000 : 0,
		};
		rc[i].addr = next_field(&p, end, owned, &nowned);
		rc[i].diag = next_field(&p, end, owned, &nowned);
		rc[i].remote_mta = next_field(&p, end, owned, &nowned);
		if (f & 0x40)
			rc[i].status = next_field(&p, end, owned, &nowned);
		if (f & 0x20)
			rc[i].orig_addr = next_field(&p, end, owned, &nowned);
	}
	size_t hlen = (size_t)(end - p);
	uint8_t *headers = fuzz_alloc(hlen);
	if (hlen)
		memcpy(headers, p, hlen);
	struct dsn_report r = {
	    .myhostname = "mx.example.com",
	    .qid = "0123456789ABCDEF",
	    .sender = sender,
	    .arrival_s = 1700000000,
	    .now_s = 1700000101,
	    .utc_offset_min = (int32_t)data[1] * 12 - 1500,
	    .seed = 0x5eed5eed5eed5eedu ^ size,
	    .flags = (f & 0x01) ? DSN_F_SMTPUTF8 : 0,
	    .headers = hlen ? headers : NULL,
	    .headers_len = hlen,
	    .rcpt = rc,
	    .nrcpt = nrcpt,
	};

	struct dsn_result res;
	int err = dsn_format(&r, NULL, 0, &res);
	if (err == -ENOSPC) {
		size_t need = res.len;
		FUZZ_CHECK(need > 0 && need <= dsn_size_max(nrcpt), "size %zu", need);
		char *m = fuzz_alloc(need); /* exact size: a write past it is caught */
		FUZZ_CHECK(dsn_format(&r, m, need - 1, &res) == -ENOSPC && res.len == need,
			   "one octet less");
		FUZZ_CHECK(dsn_format(&r, m, need, &res) == 0 && res.len == need, "format");
		check_message(m, need, &res, nrcpt);
		free(m);
	} else {
		FUZZ_CHECK(err == -EINVAL || err == -EPERM || err == -EEXIST, "result %d", err);
		FUZZ_CHECK(err != -EPERM || !sender[0], "-EPERM with a sender");
	}
	FUZZ_CHECK(sender[0] || err == -EPERM, "a DSN for the null sender");
	free(headers);
	for (size_t i = 0; i < nowned; i++)
		free(owned[i]);
	return 0;
}
