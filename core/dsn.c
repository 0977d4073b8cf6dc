/*
 * dsn.c - the delivery status notification (dsn.h).
 *
 * Every octet from outside goes through put_text (addresses, the hub's
 * reply, the remote MTA's name) or put_header_line (the original headers):
 * control bytes are replaced, octets >= 0x80 pass only where they may
 * (valid UTF-8 in a SMTPUTF8 report; the original headers as they came),
 * and each piece is cut at its bound. So every line's length is bounded by
 * construction (the static_asserts below) and dsn_size_max holds; the fuzz
 * target (tests/fuzz/fuzz_dsn.c) checks both on arbitrary input.
 *
 * The output goes through struct out, which counts what it would write
 * past cap instead of stopping: one pass gives the message or the size it
 * needs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "dsn.h"
#include "msg.h"

#define DSN_STATUS_MAX 9u  /* "5.999.999" */
#define DSN_DATE_LEN   31u /* "Tue, 14 Nov 2023 22:13:20 +0100" */
/* A recipient's line in the text part before wrapping: the longest pieces
 * of human_line. */
#define DSN_HUMAN_MAX                                                                              \
	(2 + PATH_MAX_OCTETS + 22 + PATH_MAX_OCTETS + 4 + 5 + DSN_MTA_MAX + 7 + DSN_DIAG_MAX +     \
	 31 + DSN_DATE_LEN + 1)
/* What a recipient adds to the message at most: its wrapped line (a break
 * at least every DSN_WRAP_COLS / 2 - 4 octets, each adding CRLF and an
 * indent of 4) and its fields in the delivery-status part. */
#define DSN_RCPT_OUT_MAX                                                                           \
	(2 + DSN_HUMAN_MAX + 6 * (DSN_HUMAN_MAX / (DSN_WRAP_COLS / 2 - 4) + 1) + 2 + 24 +          \
	 PATH_MAX_OCTETS + 2 + 27 + PATH_MAX_OCTETS + 2 + 17 + 8 + DSN_STATUS_MAX + 2 + 17 +       \
	 DSN_MTA_MAX + 2 + 27 + DSN_DIAG_MAX + 2 + 2 * (19 + DSN_DATE_LEN + 2))
/* The rest: header fields, boilerplate, part headers, per-message fields
 * (about 3.5 KiB with the longest host name and sender). */
#define DSN_FIXED_MAX 8192u
/* The headers part: LF may become CRLF (a line of one octet grows by half),
 * a fold adds CRLF HTAB every 994 octets or more, a last line gets CRLF. */
#define DSN_HEADERS_OUT_MAX (2 * DSN_HEADERS_MAX + 3 * (DSN_HEADERS_MAX / 994 + 1) + 2)

static_assert(DSN_HUMAN_MAX + 6 < 4096, "a recipient's line fits human_line's buffer");
static_assert(40 + DOMAIN_MAX < DSN_LINE_MAX, "From: and the host line fit a line");
static_assert(30 + PATH_MAX_OCTETS < DSN_LINE_MAX, "To:, Final-Recipient: fit a line");
static_assert(30 + DSN_DIAG_MAX < DSN_LINE_MAX, "Diagnostic-Code: fits a line");
static_assert(20 + DSN_MTA_MAX < DSN_LINE_MAX, "Remote-MTA: fits a line");
static_assert(60 + QID_LEN + DOMAIN_MAX < DSN_LINE_MAX, "Message-ID: fits a line");
static_assert(11 + QID_LEN + 1 + 16 <= DSN_BOUNDARY_MAX, "the boundary's length");
static_assert(DSN_WRAP_COLS / 2 > 8, "wrapping makes progress");

/* ---- output ---- */

struct out {
	char *p; /* borrowed: cap bytes, or NULL with cap 0 */
	size_t cap;
	size_t len; /* octets produced, counted on past cap */
};

static void put(struct out *o, const void *s, size_t n)
{
	if (n > 0 && o->len <= o->cap && n <= o->cap - o->len)
		memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void putc_(struct out *o, char c)
{
	put(o, &c, 1);
}

__attribute__((format(printf, 2, 3))) static void putf(struct out *o, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	ASSERT(n >= 0 && (size_t)n < sizeof(tmp)); /* only short, fixed formats */
	put(o, tmp, (size_t)n);
}

/* ---- text from outside ---- */

/* Length of the valid UTF-8 sequence (2..4 octets, no C1 control, no
 * overlong form, no surrogate, <= U+10FFFF) at s[0..n), or 0. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	size_t need = c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
	if (need == 0 || n < need)
		return 0;
	for (size_t i = 1; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((c == 0xc2 && s[1] < 0xa0) || (c == 0xe0 && s[1] < 0xa0) ||
	    (c == 0xed && s[1] >= 0xa0) || (c == 0xf0 && s[1] < 0x90) ||
	    (c == 0xf4 && s[1] >= 0x90))
		return 0;
	return need;
}

/* n, or less so as not to cut a UTF-8 sequence before s[n] (s[n] exists). */
static size_t utf8_cut(const uint8_t *s, size_t n)
{
	size_t k = n;
	while (k > 0 && n - k < 3 && (s[k] & 0xc0) == 0x80)
		k--;
	return k > 0 ? k : n;
}

/* The first octets of the string s, at most max, cut on a UTF-8 boundary. */
static size_t text_len(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	return n == max && s[n] ? utf8_cut((const uint8_t *)s, n) : n;
}

static bool is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

#define TEXT_UTF8	0x1u /* valid UTF-8 passes; otherwise octets >= 0x80 are '?' */
#define TEXT_CTRL_SPACE 0x2u /* control bytes as spaces (a reply); otherwise '?' */

/* s[0..n) as text within one line. */
static void put_text(struct out *o, const char *str, size_t n, unsigned how)
{
	const uint8_t *s = (const uint8_t *)str;
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t k = c >= 0x80 && (how & TEXT_UTF8) ? utf8_len(s + i, n - i) : 0;
		if (c >= 0x20 && c < 0x7f) {
			putc_(o, (char)c);
			i++;
		} else if (k > 0) {
			put(o, s + i, k);
			i += k;
		} else {
			putc_(o, c < 0x80 && (how & TEXT_CTRL_SPACE) ? ' ' : '?');
			i++;
		}
	}
}

/* An address (already checked to be at most PATH_MAX_OCTETS). */
static void put_addr(struct out *o, const char *a, bool global)
{
	put_text(o, a, strlen(a), global ? TEXT_UTF8 : 0);
}

/* RFC 3464 2.1.2 address with its type; RFC 6533 3 for "utf-8". */
static void put_typed_addr(struct out *o, const char *a, bool global)
{
	bool utf8 = global && !is_ascii(a);
	puts_(o, utf8 ? "utf-8; " : "rfc822; ");
	put_addr(o, a, utf8);
}

/* ---- dates ---- */

/* Year, month (1-12), day of the days since 1970-01-01 (>= 0): the
 * proleptic Gregorian calendar counted in 400-year eras from 0000-03-01. */
static void civil(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t z = days + 719468;
	int64_t era = z / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* RFC 5322 3.3 date-time of t in the zone off_min east of UTC. */
static void put_date(struct out *o, int64_t t, int32_t off_min)
{
	static const char wday[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
	static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	int64_t lt = t + (int64_t)off_min * 60; /* >= 0: DSN_TIME_MIN is a day */
	int64_t days = lt / 86400, secs = lt % 86400, y;
	unsigned m, d, a = (unsigned)(off_min < 0 ? -off_min : off_min);
	civil(days, &y, &m, &d);
	putf(o, "%s, %u %s %04" PRId64 " %02u:%02u:%02u %c%02u%02u", wday[days % 7], d, mon[m - 1],
	     y, (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60), (unsigned)(secs % 60),
	     off_min < 0 ? '-' : '+', a / 60, a % 60);
}

/* "YYYYMMDDhhmmss" in UTC, for the Message-ID. */
static void put_stamp(struct out *o, int64_t t)
{
	int64_t y;
	unsigned m, d;
	civil(t / 86400, &y, &m, &d);
	putf(o, "%04" PRId64 "%02u%02u%02u%02u%02u", y, m, d, (unsigned)(t % 86400 / 3600),
	     (unsigned)(t % 3600 / 60), (unsigned)(t % 60));
}

/* ---- checks ---- */

static bool time_ok(int64_t t)
{
	return t >= DSN_TIME_MIN && t <= DSN_TIME_MAX;
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Letters, digits, '-' and '.': what a boundary and a Message-ID may hold. */
static bool word_ok(const char *s, size_t max, bool dots)
{
	size_t n = strnlen(s, max + 1);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(s[i]) && !(dots && (s[i] == '-' || s[i] == '.')))
			return false;
	return true;
}

/* RFC 3463 2: class "." subject "." detail, subject and detail 1-3 digits. */
static bool status_ok(const char *s, enum dsn_action action)
{
	if (strnlen(s, DSN_STATUS_MAX + 1) > DSN_STATUS_MAX)
		return false;
	if (!(s[0] == '4' || (s[0] == '5' && action == DSN_FAILED)) || s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		size_t k = 0;
		while (k < 4 && s[k] >= '0' && s[k] <= '9')
			k++;
		if (k < 1 || k > 3 || s[k] != (part == 0 ? '.' : '\0'))
			return false;
		s += k + 1;
	}
	return true;
}

static bool addr_ok(const char *a, bool may_be_empty)
{
	size_t n = a ? strnlen(a, PATH_MAX_OCTETS + 1) : 0;
	return (may_be_empty || n > 0) && n <= PATH_MAX_OCTETS;
}

static int check_rcpt(const struct dsn_rcpt *x, enum dsn_action action)
{
	if (x->action != action || !addr_ok(x->addr, false) ||
	    (x->orig_addr && !addr_ok(x->orig_addr, true)) || !x->status ||
	    !status_ok(x->status, action))
		return -EINVAL;
	if ((x->diag_type != DSN_DIAG_SMTP && x->diag_type != DSN_DIAG_LOCAL) || !x->diag ||
	    !x->diag[0])
		return -EINVAL;
	if (x->last_attempt_s != 0 && !time_ok(x->last_attempt_s))
		return -EINVAL;
	if (x->retry_until_s != 0 && (action != DSN_DELAYED || !time_ok(x->retry_until_s)))
		return -EINVAL;
	return 0;
}

static int check_report(const struct dsn_report *r)
{
	if (!r->sender)
		return -EINVAL;
	if (!r->sender[0])
		return -EPERM; /* a DSN is never made for a DSN (RFC 5321 4.5.5) */
	if (!addr_ok(r->sender, false) || !r->myhostname ||
	    !word_ok(r->myhostname, DOMAIN_MAX, true) || !r->qid ||
	    !word_ok(r->qid, QID_LEN, false))
		return -EINVAL;
	if (!time_ok(r->arrival_s) || !time_ok(r->now_s) ||
	    r->utc_offset_min < -DSN_UTC_OFFSET_MAX || r->utc_offset_min > DSN_UTC_OFFSET_MAX)
		return -EINVAL;
	if ((r->headers_len > 0 && !r->headers) || !r->rcpt || r->nrcpt < 1 ||
	    r->nrcpt > RCPT_LIMIT_MAX)
		return -EINVAL;
	enum dsn_action action = r->rcpt[0].action;
	if (action != DSN_FAILED && action != DSN_DELAYED)
		return -EINVAL;
	for (uint32_t i = 0; i < r->nrcpt; i++) {
		int err = check_rcpt(&r->rcpt[i], action);
		if (err)
			return err;
	}
	return 0;
}

/* ---- the original headers ---- */

struct headers {
	const uint8_t *p; /* borrowed: the report's */
	size_t len;	  /* carried: whole lines, unless the first is over the bound */
	bool cut;
	bool eight; /* an octet >= 0x80 among them */
};

/* The header block up to its first empty line, cut to DSN_HEADERS_MAX
 * before a header field, or else before a line, or else in the first. */
static void headers_take(const uint8_t *p, size_t n, struct headers *h)
{
	size_t end = n, i = 0, last_line = 0, last_field = 0;
	while (i < n) {
		if (i > DSN_HEADERS_MAX) {
			end = i;
			break;
		}
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		size_t next = lf ? (size_t)(lf - p) + 1 : n;
		size_t body = (lf ? next - 1 : next) - i;
		if (body == 0 || (body == 1 && p[i] == '\r')) {
			end = i;
			break;
		}
		if (i > 0) {
			last_line = i;
			if (p[i] != ' ' && p[i] != '\t')
				last_field = i;
		}
		i = next;
	}
	*h = (struct headers){.p = p, .len = end};
	if (end > DSN_HEADERS_MAX) {
		h->cut = true;
		h->len = last_field  ? last_field
			 : last_line ? last_line
				     : utf8_cut(p, DSN_HEADERS_MAX);
	}
	for (size_t k = 0; k < h->len; k++)
		h->eight |= p[k] >= 0x80;
}

/* One line of the original headers: control bytes but HTAB as '?', folded
 * with CRLF HTAB where it is longer than a line may be. */
static void put_header_line(struct out *o, const uint8_t *s, size_t n)
{
	size_t room = DSN_LINE_MAX;
	for (;;) {
		size_t k = n <= room ? n : utf8_cut(s, room);
		for (size_t i = 0; i < k; i++) {
			uint8_t c = s[i];
			putc_(o, (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c);
		}
		puts_(o, "\r\n");
		s += k;
		n -= k;
		if (n == 0)
			return;
		putc_(o, '\t');
		room = DSN_LINE_MAX - 1;
	}
}

static void put_headers(struct out *o, const struct headers *h)
{
	size_t i = 0;
	while (i < h->len) {
		const uint8_t *lf = memchr(h->p + i, '\n', h->len - i);
		size_t next = lf ? (size_t)(lf - h->p) + 1 : h->len;
		size_t e = lf ? next - 1 : next;
		if (e > i && h->p[e - 1] == '\r')
			e--;
		put_header_line(o, h->p + i, e - i);
		i = next;
	}
}

/* ---- the report ---- */

struct dsn_ctx {
	const struct dsn_report *r;
	enum dsn_action action;
	bool global; /* RFC 6533 types: SMTPUTF8 and an address not ASCII */
	struct headers h;
	char boundary[DSN_BOUNDARY_MAX + 1];
};

static bool has(const void *s, size_t n, const char *b, size_t bn)
{
	return n > 0 && memmem(s, n, b, bn) != NULL;
}

/* Whether any text from outside holds b. The boundary's octets are
 * letters, digits, '-' and '.', which put_text and put_header_line pass
 * as they are and never make: b can appear in the message only where it
 * appears, unbroken, in what they were given. */
static bool outside_has(const struct dsn_ctx *c, const char *b, size_t bn)
{
	const struct dsn_report *r = c->r;
	if (has(c->h.p, c->h.len, b, bn) || has(r->myhostname, strlen(r->myhostname), b, bn) ||
	    has(r->sender, strlen(r->sender), b, bn))
		return true;
	for (uint32_t i = 0; i < r->nrcpt; i++) {
		const struct dsn_rcpt *x = &r->rcpt[i];
		if (has(x->addr, strlen(x->addr), b, bn) ||
		    (x->orig_addr && has(x->orig_addr, strlen(x->orig_addr), b, bn)) ||
		    (x->remote_mta &&
		     has(x->remote_mta, text_len(x->remote_mta, DSN_MTA_MAX), b, bn)) ||
		    has(x->diag, text_len(x->diag, DSN_DIAG_MAX), b, bn))
			return true;
	}
	return false;
}

/* A boundary that occurs nowhere in the message but in its delimiters
 * (RFC 2046 5.1.1): the first of 8 made from the seed that no text from
 * outside holds; 0, or -EEXIST. */
static int pick_boundary(struct dsn_ctx *c)
{
	for (uint64_t k = 0; k < 8; k++) {
		uint64_t v = c->r->seed ^ (k * 0x9e3779b97f4a7c15u);
		int n = snprintf(c->boundary, sizeof(c->boundary), "mxring-dsn.%s.%016" PRIx64,
				 c->r->qid, v);
		ASSERT(n > 0 && (size_t)n < sizeof(c->boundary));
		if (!outside_has(c, c->boundary, (size_t)n))
			return 0;
	}
	return -EEXIST;
}

static bool any_utf8_addr(const struct dsn_report *r)
{
	if (!is_ascii(r->sender))
		return true;
	for (uint32_t i = 0; i < r->nrcpt; i++) {
		const struct dsn_rcpt *x = &r->rcpt[i];
		if (!is_ascii(x->addr) || (x->orig_addr && !is_ascii(x->orig_addr)))
			return true;
	}
	return false;
}

static void put_top(struct out *o, const struct dsn_ctx *c)
{
	const struct dsn_report *r = c->r;
	puts_(o, "From: Mail Delivery System <MAILER-DAEMON@");
	puts_(o, r->myhostname);
	puts_(o, ">\r\nTo: <");
	put_addr(o, r->sender, c->global);
	puts_(o, c->action == DSN_FAILED ? ">\r\nSubject: Undelivered Mail Returned to Sender\r\n"
					 : ">\r\nSubject: Delayed Mail (still being retried)\r\n");
	puts_(o, "Date: ");
	put_date(o, r->now_s, r->utc_offset_min);
	puts_(o, "\r\nMessage-ID: <");
	put_stamp(o, r->now_s);
	putf(o, ".%s.%016" PRIx64 "@", r->qid, r->seed);
	puts_(o, r->myhostname);
	puts_(o, ">\r\nAuto-Submitted: auto-replied\r\n"
		 "MIME-Version: 1.0\r\n"
		 "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		 "\tboundary=\"");
	puts_(o, c->boundary);
	puts_(o, "\"\r\n");
	if (c->global || c->h.eight)
		puts_(o, "Content-Transfer-Encoding: 8bit\r\n");
	puts_(o, "\r\nThis is a MIME-encapsulated message.\r\n");
}

/* The delimiter line and the part's header, up to its empty line. */
static void put_part(struct out *o, const struct dsn_ctx *c, const char *desc, const char *type,
		     bool eight)
{
	puts_(o, "\r\n--");
	puts_(o, c->boundary);
	puts_(o, "\r\nContent-Description: ");
	puts_(o, desc);
	puts_(o, "\r\nContent-Type: ");
	puts_(o, type);
	puts_(o, eight ? "\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" : "\r\n\r\n");
}

/* s[0..n) as lines of at most DSN_WRAP_COLS, broken at a space in the
 * second half of a line, or else anywhere between UTF-8 sequences; lines
 * after the first are indented by 4. */
static void put_wrapped(struct out *o, const char *str, size_t n)
{
	const uint8_t *s = (const uint8_t *)str;
	size_t room = DSN_WRAP_COLS;
	while (n > room) {
		size_t cut = room;
		while (cut > room / 2 && s[cut] != ' ')
			cut--;
		size_t take = s[cut] == ' ' ? cut : utf8_cut(s, room);
		put(o, s, take);
		puts_(o, "\r\n    ");
		s += take;
		n -= take;
		while (n > 0 && *s == ' ') {
			s++;
			n--;
		}
		room = DSN_WRAP_COLS - 4;
	}
	put(o, s, n);
	puts_(o, "\r\n");
}

/* A recipient's line of the text part, before wrapping, into buf. */
static size_t human_line(char *buf, size_t cap, const struct dsn_ctx *c, const struct dsn_rcpt *x)
{
	struct out h = {.p = buf, .cap = cap};
	unsigned how = c->global ? TEXT_UTF8 : 0;
	putc_(&h, '<');
	put_addr(&h, x->addr, c->global);
	putc_(&h, '>');
	if (x->orig_addr && x->orig_addr[0]) {
		puts_(&h, " (original recipient <");
		put_addr(&h, x->orig_addr, c->global);
		putc_(&h, '>');
		putc_(&h, ')');
	}
	puts_(&h, ": ");
	if (x->diag_type == DSN_DIAG_SMTP && x->remote_mta && x->remote_mta[0]) {
		puts_(&h, "host ");
		put_text(&h, x->remote_mta, text_len(x->remote_mta, DSN_MTA_MAX), 0);
		puts_(&h, " said: ");
	}
	put_text(&h, x->diag, text_len(x->diag, DSN_DIAG_MAX), how | TEXT_CTRL_SPACE);
	if (x->retry_until_s) {
		puts_(&h, " (delivery will be tried until ");
		put_date(&h, x->retry_until_s, c->r->utc_offset_min);
		putc_(&h, ')');
	}
	ASSERT(h.len <= cap); /* DSN_HUMAN_MAX */
	return h.len;
}

static const char text_failed[] =
    "I'm sorry to report that your message could not be delivered to one or\r\n"
    "more of its recipients. Each of them is listed below with the reason\r\n"
    "given. There will be no further attempts for them.\r\n";
static const char text_delayed[] =
    "This is a warning only: you do not need to send your message again.\r\n"
    "\r\n"
    "Your message could not be delivered yet to the recipients listed\r\n"
    "below. The mail system will go on trying, and will tell you again if\r\n"
    "it has to give up.\r\n";
static const char text_help[] =
    "\r\n"
    "For help, please write to the postmaster of this site and include this\r\n"
    "report; the headers of your message are attached to it.\r\n"
    "\r\n"
    "                   The mail system\r\n";

static void put_human(struct out *o, const struct dsn_ctx *c)
{
	const struct dsn_report *r = c->r;
	put_part(o, c, "Notification",
		 c->global ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii",
		 c->global);
	puts_(o, "This is the mail system at host ");
	puts_(o, r->myhostname);
	puts_(o, ".\r\n\r\n");
	puts_(o, c->action == DSN_FAILED ? text_failed : text_delayed);
	puts_(o, text_help);
	if (c->h.cut) {
		char note[160];
		int n = snprintf(note, sizeof(note),
				 "The headers of your message are longer than %u octets: only the "
				 "first %zu octets of them are attached.",
				 DSN_HEADERS_MAX, c->h.len);
		ASSERT(n > 0 && (size_t)n < sizeof(note));
		puts_(o, "\r\n");
		put_wrapped(o, note, (size_t)n);
	}
	char line[4096];
	for (uint32_t i = 0; i < r->nrcpt; i++) {
		puts_(o, "\r\n");
		put_wrapped(o, line, human_line(line, sizeof(line), c, &r->rcpt[i]));
	}
}

static void put_field_date(struct out *o, const char *name, int64_t t, int32_t off_min)
{
	puts_(o, name);
	put_date(o, t, off_min);
	puts_(o, "\r\n");
}

/* RFC 3464 2.3: one recipient's fields, after an empty line. */
static void put_rcpt_fields(struct out *o, const struct dsn_ctx *c, const struct dsn_rcpt *x)
{
	unsigned how = c->global ? TEXT_UTF8 : 0;
	puts_(o, "\r\nFinal-Recipient: ");
	put_typed_addr(o, x->addr, c->global);
	if (x->orig_addr && x->orig_addr[0]) {
		puts_(o, "\r\nOriginal-Recipient: ");
		put_typed_addr(o, x->orig_addr, c->global);
	}
	puts_(o, c->action == DSN_FAILED ? "\r\nAction: failed\r\nStatus: "
					 : "\r\nAction: delayed\r\nStatus: ");
	puts_(o, x->status);
	if (x->remote_mta && x->remote_mta[0]) {
		puts_(o, "\r\nRemote-MTA: dns; ");
		put_text(o, x->remote_mta, text_len(x->remote_mta, DSN_MTA_MAX), 0);
	}
	puts_(o, x->diag_type == DSN_DIAG_SMTP ? "\r\nDiagnostic-Code: smtp; "
					       : "\r\nDiagnostic-Code: X-mxring; ");
	put_text(o, x->diag, text_len(x->diag, DSN_DIAG_MAX), how | TEXT_CTRL_SPACE);
	puts_(o, "\r\n");
	if (x->last_attempt_s)
		put_field_date(o, "Last-Attempt-Date: ", x->last_attempt_s, c->r->utc_offset_min);
	if (x->retry_until_s)
		put_field_date(o, "Will-Retry-Until: ", x->retry_until_s, c->r->utc_offset_min);
}

/* RFC 3464 2.2 then 2.3. */
static void put_status(struct out *o, const struct dsn_ctx *c)
{
	const struct dsn_report *r = c->r;
	put_part(o, c, "Delivery report",
		 c->global ? "message/global-delivery-status" : "message/delivery-status",
		 c->global);
	puts_(o, "Reporting-MTA: dns; ");
	puts_(o, r->myhostname);
	puts_(o, "\r\nX-Mxring-Queue-ID: ");
	puts_(o, r->qid);
	puts_(o, "\r\nX-Mxring-Sender: ");
	put_typed_addr(o, r->sender, c->global);
	puts_(o, "\r\n");
	put_field_date(o, "Arrival-Date: ", r->arrival_s, r->utc_offset_min);
	for (uint32_t i = 0; i < r->nrcpt; i++)
		put_rcpt_fields(o, c, &r->rcpt[i]);
}

int dsn_format(const struct dsn_report *r, char *dst, size_t cap, struct dsn_result *res)
{
	*res = (struct dsn_result){0};
	int err = check_report(r);
	if (err)
		return err;
	struct dsn_ctx c = {.r = r, .action = r->rcpt[0].action};
	c.global = (r->flags & DSN_F_SMTPUTF8) && any_utf8_addr(r);
	headers_take(r->headers, r->headers_len, &c.h);
	err = pick_boundary(&c);
	if (err)
		return err;

	struct out o = {.p = dst, .cap = dst ? cap : 0};
	put_top(&o, &c);
	put_human(&o, &c);
	put_status(&o, &c);
	put_part(&o, &c, "Undelivered Message Headers",
		 c.global ? "message/global-headers" : "text/rfc822-headers",
		 c.global || c.h.eight);
	put_headers(&o, &c.h);
	puts_(&o, "\r\n--");
	puts_(&o, c.boundary);
	puts_(&o, "--\r\n");

	ASSERT(o.len <= dsn_size_max(r->nrcpt));
	res->len = o.len;
	res->headers_cut = c.h.cut;
	if (c.global)
		res->env_flags = ENV_SMTPUTF8 | ENV_8BITMIME;
	else if (c.h.eight)
		res->env_flags = ENV_8BITMIME;
	return o.len <= o.cap ? 0 : -ENOSPC;
}

size_t dsn_size_max(uint32_t nrcpt)
{
	ASSERT(nrcpt <= RCPT_LIMIT_MAX);
	return DSN_FIXED_MAX + DSN_HEADERS_OUT_MAX + (size_t)nrcpt * DSN_RCPT_OUT_MAX;
}
