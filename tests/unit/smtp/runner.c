/*
 * runner.c - golden SMTP transcripts replayed through the engine (see runner.h).
 *
 * Transcript format, one directive per line; blank lines are ignored:
 *
 *   # text               a comment
 *   #conf key=value      config_set after config_defaults(), myhostname=mx.test
 *                        and accept_domains=example.com (repeat for more keys)
 *   #starttls            smtp_conf_init(..., starttls = true)
 *   #verdict HOOK=V,...  what the host answers: HOOK is helo, mail, rcpt,
 *                        data_start, data_end or resume; V is OK, DEFER,
 *                        TEMPFAIL, NOSPACE or BUSY. The list is used in order,
 *                        its last entry repeats. Default: data_end=DEFER,
 *                        resume=OK, the others OK.
 *   #body_fail_after N   the body hook returns -1 once a message passes N bytes
 *   C: text              client bytes: text, then CRLF (added by the runner)
 *   R: text              client bytes: text only, nothing added (bare LF/CR,
 *                        partial lines, BDAT chunks)
 *   S: text              one expected reply line (without its CRLF)
 *   E: event             one expected event (below)
 *   T:                   the TLS handshake: the client bytes so far form one
 *                        phase; after SMTP_STARTTLS the rest of that phase is
 *                        discarded, smtp_tls_started is called, and the
 *                        following C:/R: lines are fed
 *
 * The text of C:, R:, S: and E: starts after "X: " (one space; everything
 * after it counts, trailing spaces too) and takes the escapes \r \n \t \\
 * and \xHH (\x00 is NUL).
 *
 * S: and E: lines together are the single ordered sequence of what the
 * engine did: a reply is observed as soon as it is in the output buffer (at
 * the next hook call or the end of the feed), so their order is checked too.
 * C:/R: lines only make the input; their place among S:/E: is for reading.
 *
 * Events:
 *   helo NAME [esmtp]          hook helo (esmtp for EHLO)
 *   mail <MAILBOX> flags=F     hook mail; F is none or ESMTP|8BITMIME|SMTPUTF8|BDAT
 *   rcpt <MAILBOX>             hook rcpt
 *   data_start                 hook data_start
 *   body BYTES                 the concatenated body runs since the last
 *                              event or reply (so feed splits do not matter);
 *                              runs not yet shown when abort comes are
 *                              dropped, since how much of a failing message
 *                              the host saw depends on the splits
 *   data_end                   hook data_end; with DEFER the runner then
 *                              calls smtp_resume (resume verdict) with the
 *                              queue id Q000000000000001, ...002, ... in turn
 *   abort                      hook abort
 *   closed                     smtp_feed returned SMTP_CLOSE: replay stops
 *   starttls used=N            smtp_feed returned SMTP_STARTTLS having used N
 *                              bytes of the phase's input
 *   eof                        the input ended with the session open: the
 *                              runner calls smtp_close (an abort may follow)
 *
 * The host acts as a shard does: it keeps the unused input (a partial command
 * line) and feeds it again joined with the next bytes; on SMTP_BLOCKED after
 * a deferred data_end it calls smtp_resume, otherwise (output full) it
 * drains; after each feed it drains the output. Each feed's input is a fresh
 * allocation of exactly its length, so a sanitizer catches reads past it, and
 * every body run must lie inside it or in body_static (nothing copied).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "msg.h"
#include "runner.h"

#define OUT_CAP_LARGE 65536

static const char *const hook_names[H_COUNT] = {
    [H_HELO] = "helo",	       [H_MAIL] = "mail",
    [H_RCPT] = "rcpt",	       [H_DATA_START] = "data_start",
    [H_DATA_END] = "data_end", [H_RESUME] = "resume",
};

static const char *const verdict_names[] = {
    [SMTP_V_OK] = "OK",		  [SMTP_V_DEFER] = "DEFER", [SMTP_V_TEMPFAIL] = "TEMPFAIL",
    [SMTP_V_NOSPACE] = "NOSPACE", [SMTP_V_BUSY] = "BUSY",
};

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fprintf(stderr, "out of memory\n");
		abort();
	}
	return q;
}

void tlines_add(struct tlines *l, char kind, const void *p, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	struct tline *t = &l->v[l->n++];
	t->kind = kind;
	t->p = xrealloc(NULL, len);
	if (len)
		memcpy(t->p, p, len);
	t->len = len;
}

void tlines_free(struct tlines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].p);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

void tescape(char *dst, size_t cap, const uint8_t *p, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len && n + 5 < cap; i++) {
		uint8_t c = p[i];
		if (c == '\r')
			n += (size_t)snprintf(dst + n, cap - n, "\\r");
		else if (c == '\n')
			n += (size_t)snprintf(dst + n, cap - n, "\\n");
		else if (c == '\t')
			n += (size_t)snprintf(dst + n, cap - n, "\\t");
		else if (c == '\\')
			n += (size_t)snprintf(dst + n, cap - n, "\\\\");
		else if (c < 0x20 || c >= 0x7f)
			n += (size_t)snprintf(dst + n, cap - n, "\\x%02x", c);
		else
			dst[n++] = (char)c;
	}
	dst[n < cap ? n : cap - 1] = 0;
}

/* ---- parsing ---- */

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Appends the unescaped text to b. 0 or -1 on a bad escape. */
static int unescape(struct buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)s[i];
		if (c == '\\') {
			if (++i == n)
				return -1;
			switch (s[i]) {
			case 'r':
				c = '\r';
				break;
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case '\\':
				c = '\\';
				break;
			case 'x': {
				if (i + 2 >= n)
					return -1;
				int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
				if (hi < 0 || lo < 0)
					return -1;
				c = (uint8_t)(hi * 16 + lo);
				i += 2;
				break;
			}
			default:
				return -1;
			}
		}
		buf_add(b, &c, 1);
	}
	return 0;
}

static int parse_verdict(const char *s, size_t n, enum smtp_verdict *v)
{
	for (size_t k = 0; k < sizeof(verdict_names) / sizeof(verdict_names[0]); k++) {
		if (strlen(verdict_names[k]) == n && memcmp(verdict_names[k], s, n) == 0) {
			*v = (enum smtp_verdict)k;
			return 0;
		}
	}
	return -1;
}

/* "#verdict hook=V,V,..." */
static int parse_verdicts(struct transcript *t, const char *s, size_t n)
{
	const char *eq = memchr(s, '=', n);
	if (!eq)
		return -1;
	size_t hn = (size_t)(eq - s);
	int h = -1;
	for (int k = 0; k < H_COUNT; k++)
		if (strlen(hook_names[k]) == hn && memcmp(hook_names[k], s, hn) == 0)
			h = k;
	if (h < 0)
		return -1;
	t->nverdict[h] = 0;
	const char *p = eq + 1, *end = s + n;
	while (p < end) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		if (!c)
			c = end;
		if (t->nverdict[h] == T_VERDICTS_MAX ||
		    parse_verdict(p, (size_t)(c - p), &t->verdict[h][t->nverdict[h]]) != 0)
			return -1;
		t->nverdict[h]++;
		p = c + 1;
	}
	return t->nverdict[h] ? 0 : -1;
}

static bool starts(const char *s, size_t n, const char *word)
{
	size_t k = strlen(word);
	return n >= k && memcmp(s, word, k) == 0;
}

/* One line of a transcript. */
static int parse_line(struct transcript *t, struct buf *in, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (starts(s, n, "#conf ")) {
		if (t->nconf == T_CONF_MAX || n - 6 >= sizeof(t->conf[0]))
			return -1;
		memcpy(t->conf[t->nconf], s + 6, n - 6);
		t->conf[t->nconf++][n - 6] = 0;
		return 0;
	}
	if (n == 9 && starts(s, n, "#starttls")) {
		t->starttls = true;
		return 0;
	}
	if (starts(s, n, "#verdict "))
		return parse_verdicts(t, s + 9, n - 9);
	if (starts(s, n, "#body_fail_after ")) {
		char num[32];
		if (n - 17 >= sizeof(num))
			return -1;
		memcpy(num, s + 17, n - 17);
		num[n - 17] = 0;
		t->body_fail_after = strtoull(num, NULL, 10);
		return t->body_fail_after ? 0 : -1;
	}
	if (s[0] == '#')
		return 0;
	if (n == 2 && s[1] == ':' && s[0] == 'T') {
		if (t->nphase + 1 == T_PHASES_MAX)
			return -1;
		t->phase[t->nphase].in = in->p;
		t->phase[t->nphase].len = in->len;
		t->nphase++;
		memset(in, 0, sizeof(*in));
		return 0;
	}
	if (n < 2 || s[1] != ':' || (n > 2 && s[2] != ' '))
		return -1;
	const char *text = n > 2 ? s + 3 : s + 2;
	size_t tn = n > 2 ? n - 3 : 0;
	struct buf b = {0};
	int rc = unescape(&b, text, tn);
	switch (rc == 0 ? s[0] : 0) {
	case 'C':
		buf_add(in, b.p, b.len);
		buf_add(in, "\r\n", 2);
		break;
	case 'R':
		buf_add(in, b.p, b.len);
		break;
	case 'S':
	case 'E':
		tlines_add(&t->expect, s[0], b.p, b.len);
		break;
	default:
		rc = -1;
	}
	free(b.p);
	return rc;
}

int transcript_parse(struct transcript *t, const char *name, const char *text, size_t len,
		     char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	struct buf in = {0};
	size_t lineno = 0;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t e = nl ? (size_t)(nl - text) : len;
		size_t n = e - i;
		lineno++;
		if (n > 0 && text[i + n - 1] == '\r')
			n--;
		if (parse_line(t, &in, text + i, n) != 0) {
			snprintf(err, errlen, "%s:%zu: bad line '%.*s'", name, lineno,
				 (int)(n > 80 ? 80 : n), text + i);
			free(in.p);
			transcript_free(t);
			return -1;
		}
		i = e + 1;
	}
	t->phase[t->nphase].in = in.p;
	t->phase[t->nphase].len = in.len;
	t->nphase++;
	return 0;
}

int transcript_load(struct transcript *t, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open", path);
		return -1;
	}
	struct buf b = {0};
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_add(&b, chunk, n);
	fclose(f);
	const char *base = strrchr(path, '/');
	int rc = transcript_parse(t, base ? base + 1 : path, (const char *)b.p, b.len, err, errlen);
	free(b.p);
	return rc;
}

void transcript_free(struct transcript *t)
{
	for (unsigned k = 0; k < T_PHASES_MAX; k++)
		free(t->phase[k].in);
	tlines_free(&t->expect);
	memset(t, 0, sizeof(*t));
}

/* ---- the test host ---- */

struct host {
	const struct transcript *t;
	const struct config *cfg;
	struct smtp_session s;
	struct smtp_out out;
	size_t seen; /* reply bytes of out already turned into lines */
	struct tlines *got;
	struct tstats *st;
	struct buf body;   /* body runs not yet shown */
	const uint8_t *in; /* the current feed's input (borrowed) */
	size_t in_len;
	bool txn, content, defer; /* what the host believes of the transaction */
	unsigned nrcpt;
	uint64_t msg_bytes;
	unsigned vidx[H_COUNT];
	unsigned qid;
	char *err; /* the first violation */
	size_t errlen;
};

static void fail(struct host *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct host *h, const char *fmt, ...)
{
	if (h->err[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(h->err, h->errlen, fmt, ap);
	va_end(ap);
}

static enum smtp_verdict next_verdict(struct host *h, enum thook k)
{
	unsigned n = h->t->nverdict[k];
	if (n == 0)
		return k == H_DATA_END ? SMTP_V_DEFER : SMTP_V_OK;
	unsigned i = h->vidx[k] < n ? h->vidx[k] : n - 1;
	h->vidx[k]++;
	return h->t->verdict[k][i];
}

static void flush_body(struct host *h)
{
	if (h->body.len == 0)
		return;
	struct buf b = {0};
	buf_add(&b, "body ", 5);
	buf_add(&b, h->body.p, h->body.len);
	tlines_add(h->got, 'E', b.p, b.len);
	free(b.p);
	h->body.len = 0;
}

/* Turns new reply bytes into S lines; every reply must be whole. */
static void sync_out(struct host *h)
{
	if (h->out.len > h->out.cap)
		fail(h, "out.len %zu > cap %zu", h->out.len, h->out.cap);
	while (h->seen < h->out.len) {
		const uint8_t *p = h->out.buf + h->seen;
		size_t left = h->out.len - h->seen, n = 0;
		while (n + 1 < left && !(p[n] == '\r' && p[n + 1] == '\n'))
			n++;
		if (n + 1 >= left) {
			fail(h, "reply without CRLF (truncated?): '%.*s'", (int)left, p);
			h->seen = h->out.len;
			return;
		}
		if (n + 2 > REPLY_MAX)
			fail(h, "reply line of %zu octets", n + 2);
		flush_body(h);
		tlines_add(h->got, 'S', p, n);
		h->seen += n + 2;
	}
}

static void drain(struct host *h)
{
	sync_out(h);
	h->out.len = 0;
	h->seen = 0;
}

static void event(struct host *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(struct host *h, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	flush_body(h);
	tlines_add(h->got, 'E', line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void check_addr(struct host *h, const struct addr *a)
{
	if (a->len != strlen(a->mailbox) || a->len > PATH_MAX_OCTETS)
		fail(h, "addr len %zu != strlen '%s'", a->len, a->mailbox);
}

static enum smtp_verdict hook_helo(void *ctx, const char *name, size_t len, bool esmtp)
{
	struct host *h = ctx;
	sync_out(h);
	if (h->txn)
		fail(h, "helo hook with a transaction open");
	if (len == 0 || len > HELO_MAX)
		fail(h, "helo name of %zu octets", len);
	struct buf b = {0};
	buf_add(&b, "helo ", 5);
	buf_add(&b, name, len);
	if (esmtp)
		buf_add(&b, " esmtp", 6);
	flush_body(h);
	tlines_add(h->got, 'E', b.p, b.len);
	free(b.p);
	return next_verdict(h, H_HELO);
}

static enum smtp_verdict hook_mail(void *ctx, const struct addr *from, uint32_t env_flags)
{
	struct host *h = ctx;
	sync_out(h);
	if (h->txn)
		fail(h, "mail hook with a transaction open");
	check_addr(h, from);
	if (from->is_null != (from->len == 0))
		fail(h, "null sender with mailbox '%s'", from->mailbox);
	char flags[64] = "";
	static const struct {
		uint32_t bit;
		const char *name;
	} names[] = {{ENV_ESMTP, "ESMTP"},
		     {ENV_8BITMIME, "8BITMIME"},
		     {ENV_SMTPUTF8, "SMTPUTF8"},
		     {ENV_BDAT, "BDAT"},
		     {ENV_BINARYMIME, "BINARYMIME"}};
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		if (env_flags & names[k].bit) {
			if (flags[0])
				strcat(flags, "|");
			strcat(flags, names[k].name);
		}
	}
	event(h, "mail <%s> flags=%s", from->mailbox, flags[0] ? flags : "none");
	enum smtp_verdict v = next_verdict(h, H_MAIL);
	if (v == SMTP_V_OK) {
		h->txn = true;
		h->nrcpt = 0;
		h->msg_bytes = 0;
	}
	return v;
}

static enum smtp_verdict hook_rcpt(void *ctx, const struct addr *to)
{
	struct host *h = ctx;
	sync_out(h);
	if (!h->txn)
		fail(h, "rcpt hook without a transaction");
	if (h->content)
		fail(h, "rcpt hook after content started");
	if (h->nrcpt >= h->cfg->recipient_limit)
		fail(h, "rcpt hook past recipient_limit");
	check_addr(h, to);
	if (to->is_null)
		fail(h, "null recipient");
	event(h, "rcpt <%s>", to->mailbox);
	enum smtp_verdict v = next_verdict(h, H_RCPT);
	if (v == SMTP_V_OK)
		h->nrcpt++;
	return v;
}

static enum smtp_verdict hook_data_start(void *ctx)
{
	struct host *h = ctx;
	sync_out(h);
	if (!h->txn || h->nrcpt == 0 || h->content)
		fail(h, "data_start hook: txn %d nrcpt %u content %d", h->txn, h->nrcpt,
		     h->content);
	event(h, "data_start");
	enum smtp_verdict v = next_verdict(h, H_DATA_START);
	if (v == SMTP_V_OK)
		h->content = true;
	else
		h->txn = false; /* refused: the host drops the transaction itself */
	return v;
}

static int hook_body(void *ctx, const uint8_t *p, size_t len)
{
	struct host *h = ctx;
	sync_out(h);
	h->st->body_runs++;
	if (!h->content)
		fail(h, "body hook outside content");
	if (len == 0)
		fail(h, "empty body run");
	uintptr_t a = (uintptr_t)p, in = (uintptr_t)h->in, st = (uintptr_t)body_static;
	bool inside = h->in && a >= in && len <= h->in_len && a - in <= h->in_len - len;
	bool fixed = a >= st && len <= sizeof(body_static) && a - st <= sizeof(body_static) - len;
	if (!inside && !fixed)
		fail(h, "body run %p+%zu outside the input %p+%zu and body_static", (const void *)p,
		     len, (const void *)h->in, h->in_len);
	h->msg_bytes += len;
	if (h->msg_bytes > h->cfg->message_size_limit)
		fail(h, "body hook got %llu bytes, past message_size_limit",
		     (unsigned long long)h->msg_bytes);
	if (h->t->body_fail_after && h->msg_bytes > h->t->body_fail_after)
		return -1;
	if (inside || fixed)
		buf_add(&h->body, p, len);
	return 0;
}

static enum smtp_verdict hook_data_end(void *ctx)
{
	struct host *h = ctx;
	sync_out(h);
	if (!h->txn || !h->content)
		fail(h, "data_end hook: txn %d content %d", h->txn, h->content);
	event(h, "data_end");
	enum smtp_verdict v = next_verdict(h, H_DATA_END);
	if (v == SMTP_V_OK)
		fail(h, "transcript error: data_end must not answer OK");
	if (v == SMTP_V_DEFER) {
		h->defer = true;
	} else {
		h->txn = false;
		h->content = false;
	}
	return v;
}

static void hook_abort(void *ctx)
{
	struct host *h = ctx;
	sync_out(h);
	if (!h->txn || h->defer)
		fail(h, "abort hook: txn %d defer %d", h->txn, h->defer);
	h->body.len = 0; /* how much of it was shown depends on the splits */
	event(h, "abort");
	h->txn = false;
	h->content = false;
}

static const struct smtp_hooks hooks = {
    .helo = hook_helo,
    .mail = hook_mail,
    .rcpt = hook_rcpt,
    .data_start = hook_data_start,
    .body = hook_body,
    .data_end = hook_data_end,
    .abort = hook_abort,
};

static void resume(struct host *h)
{
	char qid[QID_LEN + 1];
	snprintf(qid, sizeof(qid), "Q%015u", ++h->qid);
	enum smtp_verdict v = next_verdict(h, H_RESUME);
	h->defer = false;
	h->txn = false;
	h->content = false;
	h->st->resumes++;
	size_t before = h->out.len;
	smtp_resume(&h->s, v, qid, &h->out);
	if (h->out.len == before)
		fail(h, "smtp_resume wrote no reply");
	sync_out(h);
}

enum feed_end { FE_MORE, FE_CLOSE, FE_STARTTLS };

/*
 * Feeds buf (stash + piece, len bytes, owned: freed here). Returns what
 * ended it; *stash gets the unused tail when the engine needs more.
 */
static enum feed_end feed(struct host *h, uint8_t *buf, size_t len, struct buf *stash,
			  size_t *abs_used)
{
	unsigned guard = 0;
	for (;;) {
		size_t used = (size_t)-1;
		h->in = buf;
		h->in_len = len;
		h->st->feeds++;
		enum smtp_result r = smtp_feed(&h->s, buf, len, &used, &h->out);
		h->in = NULL;
		sync_out(h);
		if (used > len) {
			fail(h, "used %zu > len %zu", used, len);
			used = len;
		}
		*abs_used += used;
		/* The shard spares sessions in a transaction at shutdown: never one the host holds.
		 */
		if ((h->txn || h->defer) && !smtp_in_transaction(&h->s))
			fail(h, "host has a transaction, smtp_in_transaction says none");
		size_t left = len - used;
		switch (r) {
		case SMTP_MORE:
			if (left > 0) {
				if (h->s.state != SMTP_S_CMD)
					fail(h, "unused input outside command state %u",
					     h->s.state);
				if (memchr(buf + used, '\n', left))
					fail(h, "unused input holds a LF");
				if (left >= smtp_line_max(h->s.conf))
					fail(h, "unused input of %zu octets >= line max", left);
				if (left > h->st->stash_max)
					h->st->stash_max = left;
			}
			drain(h);
			stash->len = 0;
			buf_add(stash, buf + used, left);
			free(buf);
			return FE_MORE;
		case SMTP_BLOCKED:
			if (h->defer) {
				resume(h);
			} else {
				if (h->out.cap - h->out.len >= SMTP_OUT_RESERVE)
					fail(h,
					     "SMTP_BLOCKED with room in out and nothing deferred");
				h->st->out_full++;
			}
			drain(h);
			break;
		case SMTP_CLOSE:
			drain(h);
			event(h, "closed");
			free(buf);
			return FE_CLOSE;
		case SMTP_STARTTLS:
			drain(h);
			event(h, "starttls used=%zu", *abs_used);
			free(buf);
			return FE_STARTTLS;
		default:
			fail(h, "smtp_feed returned %d", (int)r);
			free(buf);
			return FE_CLOSE;
		}
		if (h->err[0] || ++guard > 100000) {
			fail(h, "no progress after SMTP_BLOCKED");
			free(buf);
			return FE_CLOSE;
		}
		/* Blocked: feed what is left (possibly nothing more until the next piece). */
		if (left == 0) {
			free(buf);
			stash->len = 0;
			return FE_MORE;
		}
		uint8_t *rest = xrealloc(NULL, left);
		memcpy(rest, buf + used, left);
		free(buf);
		buf = rest;
		len = left;
	}
}

/* The pieces of one phase under a plan. */
static size_t piece_len(const struct tplan *plan, size_t off, size_t total)
{
	size_t left = total - off;
	if (plan->split > 0)
		return off < plan->split && plan->split < total ? plan->split - off : left;
	if (plan->chunk > 0)
		return left < plan->chunk ? left : plan->chunk;
	return left;
}

static enum feed_end run_phase(struct host *h, const struct tphase *ph, const struct tplan *plan)
{
	struct buf stash = {0};
	size_t abs_used = 0;
	enum feed_end e = FE_MORE;
	for (size_t off = 0; off < ph->len && e == FE_MORE && !h->err[0];) {
		size_t n = piece_len(plan, off, ph->len);
		uint8_t *b = xrealloc(NULL, stash.len + n);
		if (stash.len)
			memcpy(b, stash.p, stash.len);
		memcpy(b + stash.len, ph->in + off, n);
		off += n;
		e = feed(h, b, stash.len + n, &stash, &abs_used);
	}
	free(stash.p);
	return e;
}

static int make_config(const struct transcript *t, struct config *cfg, char *err, size_t errlen)
{
	config_defaults(cfg);
	const char *base[] = {"myhostname=mx.test", "accept_domains=example.com"};
	for (size_t k = 0; k < 2 + t->nconf; k++) {
		const char *kv = k < 2 ? base[k] : t->conf[k - 2];
		if (config_set(cfg, kv, stderr) != 0) {
			snprintf(err, errlen, "config_set '%s' failed", kv);
			config_free(cfg);
			return -1;
		}
	}
	return 0;
}

int transcript_replay(const struct transcript *t, const struct tplan *plan, struct tlines *got,
		      struct tstats *st, char *err, size_t errlen)
{
	struct config cfg;
	err[0] = 0;
	if (make_config(t, &cfg, err, errlen) != 0)
		return -1;
	struct smtp_conf conf;
	smtp_conf_init(&conf, &cfg, t->starttls);
	struct host h = {.t = t, .cfg = &cfg, .got = got, .st = st, .err = err, .errlen = errlen};
	h.out.buf = xrealloc(NULL, plan->cap);
	h.out.cap = plan->cap;
	smtp_init(&h.s, &conf, &hooks, &h);
	smtp_greet(&h.s, &h.out);
	drain(&h);

	enum feed_end e = FE_MORE;
	for (unsigned k = 0; k < t->nphase && !err[0]; k++) {
		if (k > 0) {
			if (e != FE_STARTTLS) {
				fail(&h, "T: but the engine did not return SMTP_STARTTLS");
				break;
			}
			smtp_tls_started(&h.s);
		}
		e = run_phase(&h, &t->phase[k], plan);
		if (e == FE_CLOSE)
			break;
	}
	if (e == FE_MORE && !err[0]) {
		event(&h, "eof");
		smtp_close(&h.s);
		drain(&h);
	}
	flush_body(&h);
	free(h.out.buf);
	free(h.body.p);
	config_free(&cfg);
	return err[0] ? -1 : 0;
}

/* ---- comparing ---- */

static void print_line(FILE *f, const char *prefix, const struct tline *l)
{
	static char esc[1 << 16];
	if (!l) {
		fprintf(f, "%s(nothing)\n", prefix);
		return;
	}
	tescape(esc, sizeof(esc), l->p, l->len);
	fprintf(f, "%s%c: %s\n", prefix, l->kind, esc);
}

static void plan_desc(char *d, size_t n, const struct tplan *p)
{
	if (p->split)
		snprintf(d, n, "split at %zu, out cap %zu", p->split, p->cap);
	else if (p->chunk)
		snprintf(d, n, "pieces of %zu, out cap %zu", p->chunk, p->cap);
	else
		snprintf(d, n, "whole, out cap %zu", p->cap);
}

/* Index of the first difference, or (size_t)-1. */
static size_t first_diff(const struct tlines *a, const struct tlines *b)
{
	size_t n = a->n < b->n ? a->n : b->n;
	for (size_t i = 0; i < n; i++) {
		if (a->v[i].kind != b->v[i].kind || a->v[i].len != b->v[i].len ||
		    memcmp(a->v[i].p, b->v[i].p, a->v[i].len) != 0)
			return i;
	}
	return a->n == b->n ? (size_t)-1 : n;
}

static int check_one(const struct transcript *t, const struct tplan *plan, struct tstats *acc)
{
	struct tlines got = {0};
	struct tstats st = {0};
	char err[512], desc[128];
	int rc = transcript_replay(t, plan, &got, &st, err, sizeof(err));
	size_t d = first_diff(&t->expect, &got);
	plan_desc(desc, sizeof(desc), plan);
	if (rc != 0 || d != (size_t)-1) {
		fprintf(stderr, "%s (%s): %s\n", t->name, desc, rc ? err : "differs");
		if (d != (size_t)-1) {
			fprintf(stderr, "  first difference at line %zu of the expected sequence\n",
				d + 1);
			print_line(stderr, "  want ", d < t->expect.n ? &t->expect.v[d] : NULL);
			print_line(stderr, "  got  ", d < got.n ? &got.v[d] : NULL);
		}
		fprintf(stderr, "  observed sequence:\n");
		for (size_t i = 0; i < got.n; i++)
			print_line(stderr, "    ", &got.v[i]);
		tlines_free(&got);
		return -1;
	}
	if (acc) {
		acc->feeds += st.feeds;
		acc->out_full += st.out_full;
		acc->resumes += st.resumes;
		acc->body_runs += st.body_runs;
		if (st.stash_max > acc->stash_max)
			acc->stash_max = st.stash_max;
	}
	tlines_free(&got);
	return 0;
}

int transcript_check(const struct transcript *t, struct tstats *stats)
{
	size_t maxlen = 0;
	for (unsigned k = 0; k < t->nphase; k++)
		if (t->phase[k].len > maxlen)
			maxlen = t->phase[k].len;
	static const size_t caps[] = {OUT_CAP_LARGE, SMTP_OUT_RESERVE, SMTP_OUT_RESERVE + 37};
	static const size_t chunks[] = {1, 2, 3, 7, 64, 512};
	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		struct tplan p = {.cap = caps[c]};
		if (check_one(t, &p, stats) != 0)
			return -1;
		for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
			p.chunk = chunks[k];
			if (check_one(t, &p, stats) != 0)
				return -1;
		}
		p.chunk = 0;
		if (c == 2)
			continue; /* every split twice is enough */
		for (size_t s = 1; s < maxlen; s++) {
			p.split = s;
			if (check_one(t, &p, stats) != 0)
				return -1;
		}
	}
	return 0;
}
