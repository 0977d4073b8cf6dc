/*
 * trace.c - the Received: trace header (trace.h; its format in spool.h).
 *
 * Everything the client sent goes through put_printable, so the header is
 * printable ASCII whatever the client said; every field has a bound
 * (struct envelope), which is why SPOOL_TRACE_MAX always holds the result.
 */
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "sbuf.h"
#include "trace.h"

/* Client text in a trace header: printable ASCII, anything else '?'. */
static void put_printable(struct sbuf *b, const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char o = c >= 0x20 && c < 0x7f ? (char)c : '?';
		sbuf_put(b, &o, 1);
	}
}

/* RFC 5322 3.3 date-time in UTC, e.g. "Tue, 14 Nov 2023 22:13:20 +0000". */
static void put_date(struct sbuf *b, uint64_t time_us)
{
	static const char wday[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t t = (time_t)(time_us / 1000000u);
	struct tm tm;
	if (!gmtime_r(&t, &tm)) {
		memset(&tm, 0, sizeof(tm));
		tm.tm_year = 70;
		tm.tm_mday = 1;
		tm.tm_wday = 4;
	}
	sbuf_printf(b, "%s, %d %s %04d %02d:%02d:%02d +0000", wday[tm.tm_wday % 7], tm.tm_mday,
		    mon[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

size_t trace_format(char *dst, size_t cap, const struct envelope *env, const char *host)
{
	struct sbuf b = {.p = dst, .len = 0, .cap = cap, .over = false};
	bool tls = env->tls[0] != 0;
	const char *proto;
	if (env->flags & ENV_SMTPUTF8)
		proto = tls ? "UTF8SMTPS" : "UTF8SMTP";
	else if (env->flags & ENV_ESMTP)
		proto = tls ? "ESMTPS" : "ESMTP";
	else
		proto = "SMTP";
	if (env->myhostname[0])
		host = env->myhostname;

	sbuf_puts(&b, "Received: from ");
	put_printable(&b, env->helo, sizeof(env->helo));
	sbuf_puts(&b, " ([");
	put_printable(&b, env->client_addr, sizeof(env->client_addr));
	sbuf_printf(&b, "]:%u)\r\n\tby ", (unsigned)env->client_port);
	put_printable(&b, host, DOMAIN_MAX);
	sbuf_printf(&b, " (mxring) with %s id ", proto);
	put_printable(&b, env->qid, sizeof(env->qid));
	if (tls) {
		/* env->tls is "PROTOCOL CIPHER". */
		size_t n = strnlen(env->tls, sizeof(env->tls));
		const char *sp = memchr(env->tls, ' ', n);
		char proto_name[TLS_DESC_MAX];
		size_t pn = sp ? (size_t)(sp - env->tls) : n;
		memcpy(proto_name, env->tls, pn);
		proto_name[pn] = 0;
		sbuf_puts(&b, "\r\n\t(using ");
		put_printable(&b, proto_name, sizeof(proto_name));
		if (sp && sp[1]) {
			sbuf_puts(&b, " with cipher ");
			put_printable(&b, sp + 1, n - pn - 1);
		}
		sbuf_puts(&b, "); ");
	} else {
		sbuf_puts(&b, ";\r\n\t");
	}
	put_date(&b, env->time_us);
	sbuf_puts(&b, "\r\n");
	if (b.over)
		return 0; /* cap < SPOOL_TRACE_MAX: a programmer error the callers check */
	dst[b.len] = 0;
	return b.len;
}
