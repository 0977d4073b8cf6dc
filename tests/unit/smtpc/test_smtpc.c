/*
 * test_smtpc.c - the SMTP/LMTP client engine (smtpc.c).
 *
 * Usage: test_smtpc DIR. Each .txt file of DIR is a golden transcript: the
 * server's bytes, the messages the host hands over, and the one expected
 * sequence of command lines (C) and events (E). The runner below plays the
 * host (a relay worker) under many feed plans: the server's bytes whole,
 * byte by byte, in chunks of 2, 3, 7 and 64, and cut in two at every offset;
 * each with a large output buffer and with the smallest one allowed
 * (SMTPC_OUT_MIN). With the large buffer the C and E lines must come in the
 * expected order exactly; with the small one each kind in its order (a
 * pipelined group may then go out in pieces between results).
 *
 * Transcript format, one directive per line; blank lines are ignored:
 *   # text                 a comment
 *   #conf lmtp             LMTP (default SMTP)
 *   #conf tls=MODE         off, if_offered or required (default off)
 *   #conf bdat             BDAT when CHUNKING is offered
 *   #conf next             after each DATA, the host offers the next message
 *                          to smtpc_send_next (event "next" when taken)
 *   #msg K=V ...           a message for the host to send at the next READY
 *                          (in order; QUIT when none is left): from=ADDR
 *                          (empty: null sender), size=N, flags=8BITMIME,SMTPUTF8,
 *                          to=ADDR (repeated; to=LONG is a 300-byte address)
 *   #lost WHY              how the host ends the session if the server's bytes
 *                          run out first: closed (default), timeout, tls
 *   S: text                server bytes: text, then CRLF
 *   R: text                server bytes: text only (escapes \r \n \t \\ \xHH)
 *   C: text                an expected command line, without its CRLF
 *   E: event               an expected event:
 *      ready                  smtpc returned READY (the host sends or quits)
 *      tls                    TLS: the host calls smtpc_tls_started
 *      data / bdat            DATA or BDAT: the host calls smtpc_body_sent
 *      rcpt I STAGE CODE ENH TEXT   the result for recipient I of the message
 *                             in flight; STAGE ends in "/local" for the
 *                             engine's own replies; ENH is "-" when empty
 *      lost WHY               the server's bytes ran out: smtpc_lost
 *      close [STAGE CODE ENH TEXT]  CLOSE, with the session's failure if any
 * The server's bytes are one stream: after TLS the runner goes on with the
 * bytes that follow (a real host discards what it had received: tested
 * apart). Each feed gets a fresh allocation of exactly its length.
 *
 * Beside the transcripts: a pipelined group of 300 and of RCPT_LIMIT_MAX
 * recipients through the smallest buffer, STARTTLS injection, the
 * configuration checks, and the dot-stuffing helper against a reference
 * (every string up to 8 bytes over {'.', '\r', '\n', 'a'}, every window) and
 * through mxring's own DATA decoder (body.c), which must give the content back.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "body.h"
#include "msg.h"
#include "smtpc.h"

#define CAP_LARGE  65536
#define T_MSGS_MAX 8

static void *xalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

/* ---- lines ---- */

struct tline {
	char kind; /* 'C' or 'E' */
	char *s;   /* owned */
};

struct tlines {
	struct tline *v; /* owned */
	size_t n, cap;
};

static void tlines_add(struct tlines *l, char kind, const char *s, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			abort();
	}
	char *p = xalloc(len + 1);
	memcpy(p, s, len);
	p[len] = 0;
	l->v[l->n].kind = kind;
	l->v[l->n].s = p;
	l->n++;
}

static void tlines_addf(struct tlines *l, char kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tlines_addf(struct tlines *l, char kind, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	tlines_add(l, kind, buf, n < 0 ? 0 : (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void tlines_free(struct tlines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].s);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* ---- transcripts ---- */

struct tmsg {
	char *from; /* owned */
	uint32_t flags;
	uint64_t size;
	char **rcpt; /* owned, and each address */
	uint32_t nrcpt;
};

struct tscript {
	char name[256];
	struct smtpc_conf conf;
	enum smtpc_lost lost;
	struct tmsg msgs[T_MSGS_MAX];
	unsigned nmsgs;
	uint8_t *in; /* owned: the server's bytes */
	size_t in_len, in_cap;
	struct tlines expect;
	bool by_kind; /* compare C and E lines apart under every plan */
	bool next;    /* the host pipelines the next message (smtpc_send_next) */
};

static void in_add(struct tscript *t, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (t->in_len + n > t->in_cap) {
		t->in_cap = (t->in_len + n) * 2 + 64;
		t->in = realloc(t->in, t->in_cap);
		if (!t->in)
			abort();
	}
	memcpy(t->in + t->in_len, p, n);
	t->in_len += n;
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

/* Unescapes \r \n \t \\ \xHH in place; returns the length. */
static size_t unescape(char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\' || i + 1 == n) {
			s[o++] = s[i];
			continue;
		}
		char e = s[++i];
		if (e == 'r')
			s[o++] = '\r';
		else if (e == 'n')
			s[o++] = '\n';
		else if (e == 't')
			s[o++] = '\t';
		else if (e == 'x' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			s[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else
			s[o++] = e;
	}
	return o;
}

static char *long_address(void)
{
	char *a = xalloc(320);
	memset(a, 'x', 300);
	strcpy(a + 300, "@example.com");
	return a;
}

static void tscript_free(struct tscript *t)
{
	for (unsigned k = 0; k < t->nmsgs; k++) {
		free(t->msgs[k].from);
		for (uint32_t i = 0; i < t->msgs[k].nrcpt; i++)
			free(t->msgs[k].rcpt[i]);
		free(t->msgs[k].rcpt);
	}
	free(t->in);
	tlines_free(&t->expect);
	memset(t, 0, sizeof(*t));
}

static char *xstrndup(const char *s, size_t n)
{
	char *p = xalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

static void msg_add_rcpt(struct tmsg *m, char *addr)
{
	m->rcpt = realloc(m->rcpt, (m->nrcpt + 1) * sizeof(*m->rcpt));
	if (!m->rcpt)
		abort();
	m->rcpt[m->nrcpt++] = addr;
}

static int parse_msg(struct tscript *t, char *line, char *err, size_t errlen)
{
	if (t->nmsgs == T_MSGS_MAX) {
		snprintf(err, errlen, "too many messages");
		return -1;
	}
	struct tmsg *m = &t->msgs[t->nmsgs++];
	m->from = xstrndup("", 0);
	for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) {
		if (strncmp(tok, "from=", 5) == 0) {
			free(m->from);
			m->from = xstrndup(tok + 5, unescape(tok + 5, strlen(tok + 5)));
		} else if (strncmp(tok, "size=", 5) == 0) {
			m->size = strtoull(tok + 5, NULL, 10);
		} else if (strncmp(tok, "flags=", 6) == 0) {
			if (strstr(tok, "8BITMIME"))
				m->flags |= ENV_8BITMIME;
			if (strstr(tok, "SMTPUTF8"))
				m->flags |= ENV_SMTPUTF8;
		} else if (strcmp(tok, "to=LONG") == 0) {
			msg_add_rcpt(m, long_address());
		} else if (strncmp(tok, "to=", 3) == 0) {
			msg_add_rcpt(m, xstrndup(tok + 3, unescape(tok + 3, strlen(tok + 3))));
		} else {
			snprintf(err, errlen, "bad #msg token '%s'", tok);
			return -1;
		}
	}
	if (m->nrcpt == 0) {
		snprintf(err, errlen, "#msg without to=");
		return -1;
	}
	return 0;
}

static int tscript_parse(struct tscript *t, const char *name, char *text, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->conf.helo_name = "relay.test";
	t->lost = SMTPC_LOST_CLOSED;
	unsigned lineno = 0;
	for (char *line = text, *nl; line && *line; line = nl) {
		nl = strchr(line, '\n');
		if (nl)
			*nl++ = 0;
		lineno++;
		size_t n = strlen(line);
		if (n == 0)
			continue;
		if (strncmp(line, "#conf ", 6) == 0) {
			const char *v = line + 6;
			if (strcmp(v, "lmtp") == 0)
				t->conf.proto = SMTPC_LMTP;
			else if (strcmp(v, "bdat") == 0)
				t->conf.bdat = true;
			else if (strcmp(v, "next") == 0)
				t->next = true;
			else if (strcmp(v, "tls=off") == 0)
				t->conf.tls = SMTPC_TLS_OFF;
			else if (strcmp(v, "tls=if_offered") == 0)
				t->conf.tls = SMTPC_TLS_IF_OFFERED;
			else if (strcmp(v, "tls=required") == 0)
				t->conf.tls = SMTPC_TLS_REQUIRED;
			else
				goto bad;
		} else if (strncmp(line, "#msg ", 5) == 0) {
			if (parse_msg(t, line + 5, err, errlen) != 0)
				return -1;
		} else if (strncmp(line, "#lost ", 6) == 0) {
			const char *v = line + 6;
			if (strcmp(v, "closed") == 0)
				t->lost = SMTPC_LOST_CLOSED;
			else if (strcmp(v, "timeout") == 0)
				t->lost = SMTPC_LOST_TIMEOUT;
			else if (strcmp(v, "tls") == 0)
				t->lost = SMTPC_LOST_TLS;
			else
				goto bad;
		} else if (line[0] == '#') {
			continue;
		} else if (n >= 3 && line[1] == ':' && line[2] == ' ' && strchr("SRCE", line[0])) {
			char *s = line + 3;
			size_t len = n - 3;
			if (line[0] == 'S' || line[0] == 'R') {
				len = unescape(s, len);
				in_add(t, s, len);
				if (line[0] == 'S')
					in_add(t, "\r\n", 2);
			} else {
				tlines_add(&t->expect, line[0], s, len);
			}
		} else if (n == 2 && line[1] == ':' && (line[0] == 'S')) {
			in_add(t, "\r\n", 2); /* "S:" alone: an empty line */
		} else {
			goto bad;
		}
		continue;
	bad:
		snprintf(err, errlen, "%s:%u: cannot parse '%s'", name, lineno, line);
		return -1;
	}
	return 0;
}

/* ---- the host ---- */

struct plan {
	size_t first; /* > 0: the first receive takes this many bytes */
	size_t chunk; /* > 0: each (other) receive takes this many; 0: all */
	size_t cap;   /* out->cap */
};

struct host {
	const struct tscript *t;
	struct smtpc c;
	struct smtpc_out out;
	uint8_t *outbuf;
	size_t out_seen; /* bytes of out already logged */
	struct tlines got;
	int cur;	   /* message in flight, or -1 */
	uint8_t *given;	   /* results given to each recipient of cur */
	uint32_t ngiven;   /* its size */
	int pending;	   /* message pipelined behind cur (smtpc_send_next), or -1 */
	uint32_t nresults; /* results of cur so far */
	const char *bad;   /* the first broken invariant */
	char bad_buf[256];
	unsigned writes; /* WRITE returns */
	unsigned feeds;
};

static void host_bad(struct host *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void host_bad(struct host *h, const char *fmt, ...)
{
	if (h->bad)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(h->bad_buf, sizeof(h->bad_buf), fmt, ap);
	va_end(ap);
	h->bad = h->bad_buf;
}

/* Logs the commands written since the last time: whole CRLF lines only. */
static void flush(struct host *h)
{
	if (h->out.len > h->out.cap)
		host_bad(h, "out->len %zu > cap %zu", h->out.len, h->out.cap);
	size_t pos = h->out_seen;
	while (pos < h->out.len) {
		const uint8_t *p = h->out.buf + pos;
		size_t left = h->out.len - pos, n = 0;
		while (n < left && p[n] != '\r' && p[n] != '\n')
			n++;
		if (n + 1 >= left || p[n] != '\r' || p[n + 1] != '\n') {
			host_bad(h, "a command not ended by CRLF: '%.*s'", (int)left,
				 (const char *)p);
			break;
		}
		if (n + 2 > SMTPC_CMD_MAX)
			host_bad(h, "a command of %zu bytes", n + 2);
		tlines_add(&h->got, 'C', (const char *)p, n);
		pos += n + 2;
	}
	h->out_seen = h->out.len;
}

static void drain(struct host *h)
{
	flush(h);
	h->out.len = 0;
	h->out_seen = 0;
}

static void reply_str(const struct smtpc_reply *r, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s%s %u %s %s", smtpc_stage_name((enum smtpc_stage)r->stage),
		 r->local ? "/local" : "", (unsigned)r->code, r->enh[0] ? r->enh : "-", r->text);
}

/* What every reply the engine hands out must be. */
static void check_reply(struct host *h, const struct smtpc_reply *r)
{
	unsigned cls = r->code / 100;
	if (cls != 2 && cls != 4 && cls != 5)
		host_bad(h, "result code %u", (unsigned)r->code);
	if (r->stage >= SMTPC_STAGE_COUNT)
		host_bad(h, "stage %u", (unsigned)r->stage);
	if (strnlen(r->text, SMTPC_TEXT_MAX) >= SMTPC_TEXT_MAX ||
	    strnlen(r->enh, SMTPC_ENH_MAX) >= SMTPC_ENH_MAX)
		host_bad(h, "a reply string without its NUL");
	for (const char *p = r->text; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			host_bad(h, "byte 0x%02x in a reply text", (unsigned char)*p);
	if (r->enh[0] && (r->enh[0] != (char)('0' + cls) || r->enh[1] != '.'))
		host_bad(h, "enhanced code %s with reply %u", r->enh, (unsigned)r->code);
}

static void next_current(struct host *h);

static void on_result(void *ctx, uint32_t rcpt, const struct smtpc_reply *r)
{
	struct host *h = ctx;
	flush(h);
	check_reply(h, r);
	if (h->cur >= 0 && h->nresults == h->ngiven && h->pending >= 0)
		next_current(h); /* cur is complete: these are the next one's */
	if (h->cur < 0 || rcpt >= h->ngiven) {
		host_bad(h, "a result for recipient %u with no such recipient in flight", rcpt);
		return;
	}
	if (h->given[rcpt]++)
		host_bad(h, "a second result for recipient %u", rcpt);
	h->nresults++;
	/* A delivery is only ever the server's word after the content. */
	if (smtpc_classify(r) == SMTPC_DELIVERED &&
	    (r->local || (r->stage != SMTPC_STAGE_DATA && r->stage != SMTPC_STAGE_LMTP_DATA)))
		host_bad(h, "recipient %u delivered at stage %s", rcpt,
			 smtpc_stage_name((enum smtpc_stage)r->stage));
	char buf[SMTPC_TEXT_MAX + 64];
	reply_str(r, buf, sizeof(buf));
	tlines_addf(&h->got, 'E', "rcpt %u %s", rcpt, buf);
}

/* The message in flight ended: each recipient has one result. */
static void msg_done(struct host *h)
{
	if (h->cur < 0)
		return;
	for (uint32_t i = 0; i < h->ngiven; i++)
		if (h->given[i] != 1)
			host_bad(h, "message %d recipient %u: %u results", h->cur, i,
				 (unsigned)h->given[i]);
	free(h->given);
	h->given = NULL;
	h->cur = -1;
}

/* Message k becomes the one in flight. */
static void set_current(struct host *h, unsigned k)
{
	const struct tmsg *m = &h->t->msgs[k];
	h->cur = (int)k;
	h->ngiven = m->nrcpt;
	h->nresults = 0;
	h->given = calloc(m->nrcpt, 1);
	if (!h->given)
		abort();
}

/* The message in flight is complete; the pipelined one takes its place. */
static void next_current(struct host *h)
{
	int k = h->pending;
	msg_done(h);
	h->pending = -1;
	set_current(h, (unsigned)k);
}

static struct smtpc_msg tmsg_of(const struct tmsg *m, const char **ptrs)
{
	for (uint32_t i = 0; i < m->nrcpt; i++)
		ptrs[i] = m->rcpt[i];
	return (struct smtpc_msg){
	    .from = m->from,
	    .env_flags = m->flags,
	    .nrcpt = m->nrcpt,
	    .size = m->size,
	    .rcpt = ptrs,
	};
}

static enum smtpc_next send_msg(struct host *h, unsigned k, const char **ptrs)
{
	set_current(h, k);
	struct smtpc_msg sm = tmsg_of(&h->t->msgs[k], ptrs);
	return smtpc_send(&h->c, &sm, &h->out);
}

static enum smtpc_next feed(struct host *h, const uint8_t *in, size_t len, size_t *used)
{
	uint8_t *b = xalloc(len);
	memcpy(b, in, len);
	h->feeds++;
	enum smtpc_next nx = smtpc_feed(&h->c, b, len, used, &h->out);
	free(b);
	if (*used > len)
		host_bad(h, "used %zu of %zu", *used, len);
	return nx;
}

static const char *const lost_names[] = {
    [SMTPC_LOST_CONNECT] = "connect",
    [SMTPC_LOST_CLOSED] = "closed",
    [SMTPC_LOST_TIMEOUT] = "timeout",
    [SMTPC_LOST_TLS] = "tls",
};

/* Plays the host under plan p; h->got holds what happened. */
static void run(const struct tscript *t, const struct plan *p, struct host *h)
{
	memset(h, 0, sizeof(*h));
	h->t = t;
	h->cur = -1;
	h->pending = -1;
	h->outbuf = xalloc(p->cap);
	h->out.buf = h->outbuf;
	h->out.cap = p->cap;
	if (smtpc_init(&h->c, &t->conf, on_result, h) != 0) {
		host_bad(h, "smtpc_init refused the configuration");
		return;
	}
	uint32_t maxr = 1;
	for (unsigned k = 0; k < t->nmsgs; k++)
		if (t->msgs[k].nrcpt > maxr)
			maxr = t->msgs[k].nrcpt;
	/* Two: a pipelined message's pointers must not overwrite those in flight. */
	const char **ptrs_by[2] = {xalloc(maxr * sizeof(*ptrs_by[0])),
				   xalloc(maxr * sizeof(*ptrs_by[0]))};
	const char **ptrs = ptrs_by[0];
	size_t pos = 0, avail = 0, used;
	unsigned nrecv = 0, nmsg = 0;
	bool fed = true; /* the engine has seen every byte received */
	enum smtpc_next nx = SMTPC_MORE;
	for (size_t guard = 0;; guard++) {
		if (guard > 4 * t->in_len + 64 * (T_MSGS_MAX + 4) + 8 * maxr) {
			host_bad(h, "the session does not end");
			break;
		}
		drain(h);
		if (nx == SMTPC_MORE && fed) {
			if (avail == t->in_len) {
				tlines_addf(&h->got, 'E', "lost %s", lost_names[t->lost]);
				smtpc_lost(&h->c, t->lost);
				if (h->c.state != SMTPC_S_CLOSED)
					host_bad(h, "state %u after smtpc_lost", h->c.state);
				nx = SMTPC_CLOSE;
				continue;
			}
			size_t n = nrecv == 0 && p->first ? p->first : p->chunk;
			if (n == 0 || n > t->in_len - avail)
				n = t->in_len - avail;
			avail += n;
			nrecv++;
		}
		switch (nx) {
		case SMTPC_WRITE:
			h->writes++;
			/* fall through */
		case SMTPC_MORE:
			nx = feed(h, t->in + pos, avail - pos, &used);
			pos += used;
			fed = true;
			continue;
		case SMTPC_TLS:
			tlines_addf(&h->got, 'E', "tls");
			nx = smtpc_tls_started(&h->c, &h->out);
			break;
		case SMTPC_DATA:
		case SMTPC_BDAT:
			tlines_addf(&h->got, 'E', nx == SMTPC_DATA ? "data" : "bdat");
			nx = smtpc_body_sent(&h->c);
			if (t->next && nmsg < t->nmsgs) {
				const char **np = ptrs_by[nmsg % 2];
				struct smtpc_msg sm = tmsg_of(&t->msgs[nmsg], np);
				if (smtpc_send_next(&h->c, &sm, &h->out)) {
					flush(h);
					tlines_addf(&h->got, 'E', "next");
					h->pending = (int)nmsg++;
				}
			}
			break;
		case SMTPC_READY:
			msg_done(h);
			tlines_addf(&h->got, 'E', "ready");
			if (h->pending >= 0)
				host_bad(h, "READY with message %d pipelined", h->pending);
			if (nmsg < t->nmsgs) {
				ptrs = ptrs_by[nmsg % 2];
				nx = send_msg(h, nmsg++, ptrs);
			} else
				nx = smtpc_quit(&h->c, &h->out);
			break;
		case SMTPC_CLOSE:
			msg_done(h);
			if (h->pending >= 0)
				host_bad(h, "message %d pipelined got no result", h->pending);
			if (h->c.failed) {
				char buf[SMTPC_TEXT_MAX + 64];
				check_reply(h, &h->c.fail);
				reply_str(&h->c.fail, buf, sizeof(buf));
				tlines_addf(&h->got, 'E', "close %s", buf);
			} else {
				tlines_addf(&h->got, 'E', "close");
			}
			free(ptrs_by[0]);
			free(ptrs_by[1]);
			drain(h);
			return;
		}
		fed = false;
	}
	free(ptrs_by[0]);
	free(ptrs_by[1]);
}

static void host_free(struct host *h)
{
	free(h->outbuf);
	free(h->given);
	tlines_free(&h->got);
}

static void print_plan(const struct plan *p)
{
	fprintf(stderr, "plan: first %zu, chunk %zu, out cap %zu\n", p->first, p->chunk, p->cap);
}

/* Compares got with the expected lines: all of them in order (interleaved),
 * or each kind in its order. 0, or -1 after printing the first difference. */
static int compare(const struct tscript *t, const struct plan *p, const struct tlines *got,
		   bool interleaved)
{
	const char *kinds = interleaved ? "*" : "CE";
	for (const char *k = kinds; *k; k++) {
		size_t i = 0, j = 0;
		for (;;) {
			while (i < t->expect.n && *k != '*' && t->expect.v[i].kind != *k)
				i++;
			while (j < got->n && *k != '*' && got->v[j].kind != *k)
				j++;
			bool ei = i < t->expect.n, gj = j < got->n;
			if (!ei && !gj)
				break;
			if (ei && gj && t->expect.v[i].kind == got->v[j].kind &&
			    strcmp(t->expect.v[i].s, got->v[j].s) == 0) {
				i++, j++;
				continue;
			}
			fprintf(stderr, "%s: differs (%s)\n", t->name,
				interleaved ? "in order" : "by kind");
			print_plan(p);
			if (ei)
				fprintf(stderr, "  expected %c: %s\n", t->expect.v[i].kind,
					t->expect.v[i].s);
			else
				fprintf(stderr, "  expected nothing more\n");
			if (gj)
				fprintf(stderr, "  got      %c: %s\n", got->v[j].kind, got->v[j].s);
			else
				fprintf(stderr, "  got nothing more\n");
			fprintf(stderr, "  all that happened:\n");
			for (size_t m = 0; m < got->n; m++)
				fprintf(stderr, "    %c: %s\n", got->v[m].kind, got->v[m].s);
			return -1;
		}
	}
	return 0;
}

struct tstats {
	unsigned runs, writes, feeds;
};

static int check_one(const struct tscript *t, const struct plan *p, struct tstats *st)
{
	struct host *h = xalloc(sizeof(*h));
	run(t, p, h);
	int rc = 0;
	if (h->bad) {
		fprintf(stderr, "%s: %s\n", t->name, h->bad);
		print_plan(p);
		rc = -1;
	} else {
		rc = compare(t, p, &h->got, p->cap == CAP_LARGE && !t->by_kind);
	}
	st->runs++;
	st->writes += h->writes;
	st->feeds += h->feeds;
	host_free(h);
	free(h);
	return rc;
}

/* Every plan of the file's header comment. splits = false: only whole and chunks. */
static int check_all(const struct tscript *t, struct tstats *st, bool splits)
{
	static const size_t caps[] = {CAP_LARGE, SMTPC_OUT_MIN};
	static const size_t chunks[] = {0, 1, 2, 3, 7, 64};
	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		struct plan p = {.cap = caps[c]};
		for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
			p.chunk = chunks[k];
			if (check_one(t, &p, st) != 0)
				return -1;
		}
		p.chunk = 0;
		for (size_t s = 1; splits && s < t->in_len; s++) {
			p.first = s;
			if (check_one(t, &p, st) != 0)
				return -1;
		}
	}
	return 0;
}

/* ---- the transcript tests ---- */

static char dir[4096];

static void test_transcript(void **state)
{
	const char *name = *state;
	char path[8192], err[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	char *text = xalloc(1 << 20);
	size_t n = fread(text, 1, (1 << 20) - 1, f);
	fclose(f);
	text[n] = 0;
	struct tscript t;
	int rc = tscript_parse(&t, name, text, err, sizeof(err));
	free(text);
	if (rc != 0)
		fail_msg("%s", err);
	struct tstats st = {0};
	rc = check_all(&t, &st, true);
	tscript_free(&t);
	assert_int_equal(rc, 0);
}

/* ---- a pipelined group larger than the output buffer ---- */

/* A transcript of one message to n recipients through a pipelining server;
 * every 7th recipient is refused (452 at RCPT). */
static void big_group(struct tscript *t, uint32_t n, bool lmtp)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "group of %u%s", n, lmtp ? " (LMTP)" : "");
	t->conf.helo_name = "relay.test";
	t->conf.proto = lmtp ? SMTPC_LMTP : SMTPC_SMTP;
	t->lost = SMTPC_LOST_CLOSED;
	t->nmsgs = 1;
	struct tmsg *m = &t->msgs[0];
	m->from = xstrndup("sender@example.org", 18);
	m->size = 1000;
	char buf[512];
	for (uint32_t i = 0; i < n; i++) {
		snprintf(buf, sizeof(buf), "user%u@example.net", i);
		msg_add_rcpt(m, xstrndup(buf, strlen(buf)));
	}
	const char *hello = "220 hub.test ESMTP\r\n250-hub.test\r\n250-PIPELINING\r\n250 SIZE\r\n";
	in_add(t, hello, strlen(hello));
	tlines_addf(&t->expect, 'C', "%s relay.test", lmtp ? "LHLO" : "EHLO");
	tlines_addf(&t->expect, 'E', "ready");
	tlines_addf(&t->expect, 'C', "MAIL FROM:<sender@example.org> SIZE=1000");
	in_add(t, "250 2.1.0 Ok\r\n", 14);
	for (uint32_t i = 0; i < n; i++)
		tlines_addf(&t->expect, 'C', "RCPT TO:<user%u@example.net>", i);
	tlines_addf(&t->expect, 'C', "DATA");
	for (uint32_t i = 0; i < n; i++) {
		if (i % 7 == 3) {
			int k = snprintf(buf, sizeof(buf),
					 "452 4.5.3 Error: too many recipients %u\r\n", i);
			in_add(t, buf, (size_t)k);
			tlines_addf(&t->expect, 'E',
				    "rcpt %u rcpt 452 4.5.3 Error: too many recipients %u", i, i);
		} else {
			in_add(t, "250 2.1.5 Ok\r\n", 14);
		}
	}
	in_add(t, "354 go\r\n", 8);
	tlines_addf(&t->expect, 'E', "data");
	for (uint32_t i = 0; i < (lmtp ? n : 1); i++) {
		if (lmtp && i % 7 == 3)
			continue;
		int k = snprintf(buf, sizeof(buf), "250 2.0.0 Ok: %u\r\n", i);
		in_add(t, buf, (size_t)k);
	}
	for (uint32_t i = 0; i < n; i++)
		if (i % 7 != 3)
			tlines_addf(&t->expect, 'E', "rcpt %u %s 250 2.0.0 Ok: %u", i,
				    lmtp ? "lmtp-data" : "data", lmtp ? i : 0);
	tlines_addf(&t->expect, 'E', "ready");
	tlines_addf(&t->expect, 'C', "QUIT");
	in_add(t, "221 Bye\r\n", 9);
	tlines_addf(&t->expect, 'E', "close");
}

static void test_big_group(void **state)
{
	(void)state;
	struct tscript t;
	struct tstats st = {0};
	big_group(&t, 300, false);
	assert_int_equal(check_all(&t, &st, false), 0);
	/* 300 RCPTs of ~30 bytes do not fit SMTPC_OUT_MIN: the group went in pieces. */
	assert_true(st.writes > 0);
	tscript_free(&t);
	big_group(&t, 300, true);
	assert_int_equal(check_all(&t, &st, false), 0);
	tscript_free(&t);

	/* The most recipients a message may have, whole and byte by byte, small out. */
	big_group(&t, RCPT_LIMIT_MAX, true);
	t.by_kind = true; /* not even the large out holds this group */
	struct plan plans[] = {
	    {.cap = SMTPC_OUT_MIN}, {.chunk = 1, .cap = SMTPC_OUT_MIN}, {.cap = CAP_LARGE}};
	for (size_t k = 0; k < sizeof(plans) / sizeof(plans[0]); k++)
		assert_int_equal(check_one(&t, &plans[k], &st), 0);
	tscript_free(&t);
}

/* ---- direct calls ---- */

struct sink {
	unsigned results;
	struct smtpc_reply last;
};

static void sink_result(void *ctx, uint32_t rcpt, const struct smtpc_reply *r)
{
	struct sink *s = ctx;
	(void)rcpt;
	s->results++;
	s->last = *r;
}

static enum smtpc_next feed_str(struct smtpc *c, const char *s, size_t *used, struct smtpc_out *out)
{
	return smtpc_feed(c, (const uint8_t *)s, strlen(s), used, out);
}

/* RFC 3207 5: what came with the 220 to STARTTLS is not read (a man in the
 * middle could have put it there); the host drops it. */
static void test_starttls_injection(void **state)
{
	(void)state;
	static uint8_t buf[SMTPC_OUT_MIN];
	struct smtpc_out out = {.buf = buf, .cap = sizeof(buf)};
	struct smtpc_conf conf = {.tls = SMTPC_TLS_REQUIRED, .helo_name = "relay.test"};
	struct sink sink = {0};
	struct smtpc *c = xalloc(sizeof(*c));
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), 0);
	size_t used;
	const char *s1 = "220 hub\r\n250-hub\r\n250 STARTTLS\r\n";
	assert_int_equal(feed_str(c, s1, &used, &out), SMTPC_MORE);
	assert_int_equal(used, strlen(s1));
	const char *s2 = "220 go ahead\r\n250 2.1.0 injected\r\n";
	assert_int_equal(feed_str(c, s2, &used, &out), SMTPC_TLS);
	assert_int_equal(used, strlen("220 go ahead\r\n"));
	assert_int_equal(c->state, SMTPC_S_TLS);
	/* Nothing is read until the handshake is done. */
	assert_int_equal(feed_str(c, s2 + used, &used, &out), SMTPC_TLS);
	assert_int_equal(used, 0);
	out.len = 0;
	assert_int_equal(smtpc_tls_started(c, &out), SMTPC_MORE);
	assert_true(c->tls);
	assert_int_equal(c->caps, 0);
	assert_memory_equal(out.buf, "EHLO relay.test\r\n", out.len);
	/* The session ends while the handshake runs. */
	free(c);
	c = xalloc(sizeof(*c));
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), 0);
	assert_int_equal(feed_str(c, s1, &used, &out), SMTPC_MORE);
	assert_int_equal(feed_str(c, "220 go\r\n", &used, &out), SMTPC_TLS);
	smtpc_lost(c, SMTPC_LOST_TLS);
	assert_int_equal(c->state, SMTPC_S_CLOSED);
	assert_true(c->failed);
	assert_int_equal(c->fail.code, 421);
	assert_string_equal(c->fail.enh, "4.7.5");
	assert_int_equal(c->fail.stage, SMTPC_STAGE_TLS);
	assert_int_equal(sink.results, 0);
	free(c);
}

static void test_init_checks(void **state)
{
	(void)state;
	struct smtpc *c = xalloc(sizeof(*c));
	struct sink sink = {0};
	char name[HELO_MAX + 2];
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	struct smtpc_conf conf = {.helo_name = name};
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), -EINVAL); /* too long */
	name[HELO_MAX] = 0;
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), 0);
	static const char *const bad[] = {"", "a b", "a\r\nMAIL", "caf\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		conf.helo_name = bad[i];
		assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), -EINVAL);
	}
	conf.helo_name = "relay.test";
	conf.proto = 2;
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), -EINVAL);
	conf.proto = SMTPC_LMTP;
	conf.tls = 3;
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), -EINVAL);
	conf.tls = SMTPC_TLS_OFF;
	assert_int_equal(smtpc_init(c, &conf, NULL, &sink), -EINVAL);
	/* A connection that never came up. */
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), 0);
	smtpc_lost(c, SMTPC_LOST_CONNECT);
	assert_true(c->failed);
	assert_int_equal(c->fail.stage, SMTPC_STAGE_CONNECT);
	assert_string_equal(c->fail.enh, "4.4.1");
	assert_int_equal(smtpc_classify(&c->fail), SMTPC_DEFERRED);
	smtpc_lost(c, SMTPC_LOST_CLOSED); /* once closed, nothing changes */
	assert_int_equal(c->fail.stage, SMTPC_STAGE_CONNECT);
	free(c);

	struct smtpc_reply r = {.code = 250};
	assert_int_equal(smtpc_classify(&r), SMTPC_DELIVERED);
	r.code = 451;
	assert_int_equal(smtpc_classify(&r), SMTPC_DEFERRED);
	r.code = 554;
	assert_int_equal(smtpc_classify(&r), SMTPC_FAILED);
	assert_string_equal(smtpc_stage_name(SMTPC_STAGE_LMTP_DATA), "lmtp-data");
	assert_string_equal(smtpc_stage_name(SMTPC_STAGE_COUNT), "?");
}

/* Replies that break the protocol, each where it comes: the session closes
 * (no QUIT) with a local 421 4.5.0 at the stage of what was awaited, and
 * every recipient in flight gets it. Each runs whole, byte by byte and in
 * chunks of 7, with both output buffers. */
static const char hello[] = "220 hub\r\n250-hub\r\n250 PIPELINING\r\n";

static const struct {
	const char *pre;  /* the good replies before it */
	const char *bad;  /* the reply */
	const char *last; /* the event that must end the run */
} bad_replies[] = {
    {"", "HTTP/1.1 400 Bad Request\r\n",
     "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "2500 hello\r\n", "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "199 too small\r\n", "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "600 too big\r\n", "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "25\r\n", "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "2x0 x\r\n", "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "\r\n", "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"",
     "2\x00"
     "0 nul\r\n",
     "greeting/local 421 4.5.0 protocol error: malformed reply"},
    {"", "250 hello\r\n",
     "greeting/local 421 4.5.0 protocol error: unexpected reply 250 to the greeting"},
    {"", "354 hello\r\n",
     "greeting/local 421 4.5.0 protocol error: unexpected reply 354 to the greeting"},
    {"", "220-a\r\n221 b\r\n",
     "greeting/local 421 4.5.0 protocol error: reply code changes within a reply"},
    {"220 hub\r\n", "354 what\r\n",
     "helo/local 421 4.5.0 protocol error: unexpected reply 354 to EHLO"},
    {"220 hub\r\n", "250-hub\r\n250-PIPE\x0aLINING\r\n250 x\r\n",
     "helo/local 421 4.5.0 protocol error: malformed reply"},
    {"220 hub\r\n250-hub\r\n250 STARTTLS\r\n", "250 sure\r\n",
     "tls/local 421 4.5.0 protocol error: unexpected reply 250 to STARTTLS"},
    {hello, "354 go\r\n", "mail/local 421 4.5.0 protocol error: unexpected reply 354 to MAIL"},
    {"220 hub\r\n250 hub\r\n250 ok\r\n", "354 go\r\n",
     "rcpt/local 421 4.5.0 protocol error: unexpected reply 354 to RCPT"},
    {"220 hub\r\n250 hub\r\n250 ok\r\n250 ok\r\n", "334 what\r\n",
     "rcpt/local 421 4.5.0 protocol error: unexpected reply 334 to RCPT"},
    {"220 hub\r\n250 hub\r\n250 ok\r\n250 ok\r\n250 ok\r\n", "250 ok\r\n",
     "data/local 421 4.5.0 protocol error: unexpected reply 250 to DATA"},
    {"220 hub\r\n250 hub\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "354 again\r\n",
     "data/local 421 4.5.0 protocol error: unexpected reply 354 to the end of data"},
    {"220 hub\r\n502 no\r\n", "354 what\r\n",
     "helo/local 421 4.5.0 protocol error: unexpected reply 354 to HELO"},
    {"220 hub\r\n250-hub\r\n250 PIPELINING\r\n250 ok\r\n550 no\r\n550 no\r\n",
     "354 go\r\n354 go\r\n", "data/local 421 4.5.0 protocol error: unexpected reply 354 to \".\""},
};

static struct tscript *script_of(const char *pre, const char *bad, size_t bad_len, bool tls)
{
	struct tscript *t = xalloc(sizeof(*t));
	char text[] = "from=s@example.org size=10 to=a@example.net to=b@example.net";
	char err[256];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "bad reply");
	t->conf.helo_name = "relay.test";
	t->conf.tls = tls ? SMTPC_TLS_IF_OFFERED : SMTPC_TLS_OFF;
	t->lost = SMTPC_LOST_CLOSED;
	assert_int_equal(parse_msg(t, text, err, sizeof(err)), 0);
	in_add(t, pre, strlen(pre));
	in_add(t, bad, bad_len);
	return t;
}

/* Runs t under a few plans; the last event must be want. */
static void check_last(const struct tscript *t, const char *want)
{
	static const struct plan plans[] = {
	    {.cap = CAP_LARGE}, {.chunk = 1, .cap = CAP_LARGE}, {.chunk = 7, .cap = SMTPC_OUT_MIN}};
	for (size_t k = 0; k < sizeof(plans) / sizeof(plans[0]); k++) {
		struct host *h = xalloc(sizeof(*h));
		run(t, &plans[k], h);
		if (h->bad)
			fail_msg("%s", h->bad);
		assert_true(h->got.n > 0);
		const struct tline *l = &h->got.v[h->got.n - 1];
		if (l->kind != 'E' || strcmp(l->s, want) != 0)
			fail_msg("expected '%s', got '%c: %s'", want, l->kind, l->s);
		/* No QUIT after a protocol error. */
		for (size_t i = 0; strstr(want, "protocol error") && i < h->got.n; i++)
			assert_false(h->got.v[i].kind == 'C' && strcmp(h->got.v[i].s, "QUIT") == 0);
		host_free(h);
		free(h);
	}
}

static void test_bad_replies(void **state)
{
	(void)state;
	char want[256];
	for (size_t i = 0; i < sizeof(bad_replies) / sizeof(bad_replies[0]); i++) {
		const char *bad = bad_replies[i].bad;
		size_t n = strlen(bad);
		if (strncmp(bad, "2\0", 2) == 0)
			n = 10; /* "2\0" "0 nul\r\n" */
		struct tscript *t =
		    script_of(bad_replies[i].pre, bad, n, strstr(bad_replies[i].pre, "STARTTLS"));
		snprintf(want, sizeof(want), "close %s", bad_replies[i].last);
		check_last(t, want);
		tscript_free(t);
		free(t);
	}

	/* A reply of SMTPC_REPLY_LINES_MAX lines is read; one more line is too many. */
	for (int extra = 0; extra < 2; extra++) {
		struct tscript *t = script_of("", "", 0, false);
		for (int i = 0; i < SMTPC_REPLY_LINES_MAX - 1 + extra; i++)
			in_add(t, "220-x\r\n", 7);
		in_add(t, "220 y\r\n", 7);
		check_last(t, extra
				  ? "close greeting/local 421 4.5.0 protocol error: too many reply "
				    "lines"
				  : "close helo/local 421 4.4.2 lost connection");
		tscript_free(t);
		free(t);
	}
	/* A line of SMTPC_LINE_MAX bytes with its CRLF is read; one byte more is too long. */
	for (int extra = 0; extra < 2; extra++) {
		struct tscript *t = script_of("", "", 0, false);
		in_add(t, "220 ", 4);
		for (int i = 0; i < SMTPC_LINE_MAX - 6 + extra; i++)
			in_add(t, "x", 1);
		in_add(t, "\r\n", 2);
		check_last(t, extra
				  ? "close greeting/local 421 4.5.0 protocol error: reply line too "
				    "long"
				  : "close helo/local 421 4.4.2 lost connection");
		tscript_free(t);
		free(t);
	}
	/* Garbage after QUIT ends the session, and it is no failure. */
	struct tscript *t = script_of("220 hub\r\n250 hub\r\n", "\x01\x02garbage\r\n", 11, false);
	t->nmsgs = 0;
	check_last(t, "close");
	free(t->msgs[0].from);
	for (uint32_t i = 0; i < t->msgs[0].nrcpt; i++)
		free(t->msgs[0].rcpt[i]);
	free(t->msgs[0].rcpt);
	memset(&t->msgs[0], 0, sizeof(t->msgs[0]));
	tscript_free(t);
	free(t);

	/* Texts are joined and cut to SMTPC_TEXT_MAX - 1 bytes. */
	static uint8_t buf[SMTPC_OUT_MIN];
	struct smtpc_out out = {.buf = buf, .cap = sizeof(buf)};
	struct smtpc_conf conf = {.helo_name = "relay.test"};
	struct sink sink = {0};
	struct smtpc *c = xalloc(sizeof(*c));
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), 0);
	char line[400];
	for (int k = 0; k < 3; k++) {
		int len =
		    snprintf(line, sizeof(line), "554%c5.7.1 %0300d\r\n", k < 2 ? '-' : ' ', k);
		size_t used;
		enum smtpc_next nx = smtpc_feed(c, (uint8_t *)line, (size_t)len, &used, &out);
		assert_int_equal(used, (size_t)len);
		assert_int_equal(nx, SMTPC_MORE);
	}
	assert_true(c->failed);
	assert_int_equal(c->state, SMTPC_S_QUIT);
	assert_int_equal(strlen(c->fail.text), SMTPC_TEXT_MAX - 1);
	assert_string_equal(c->fail.enh, "5.7.1");
	assert_int_equal(c->fail.text[300], ' ');
	assert_int_equal(c->fail.text[299], '0');
	assert_int_equal(c->fail.text[301], '0');
	free(c);
}

/* A host that has not sent out yet (it may hold it while a send is in
 * flight): a reply is left unread, and a group is not started, until
 * SMTPC_CMD_MAX bytes are free; WRITE says to send and call again. Then the
 * body is being sent when the connection goes. */
static void test_out_full(void **state)
{
	(void)state;
	static uint8_t buf[SMTPC_OUT_MIN];
	struct smtpc_out out = {.buf = buf, .cap = sizeof(buf)};
	struct smtpc_conf conf = {.helo_name = "relay.test"};
	struct sink sink = {0};
	struct smtpc *c = xalloc(sizeof(*c));
	assert_int_equal(smtpc_init(c, &conf, sink_result, &sink), 0);
	size_t used;
	out.len = sizeof(buf) - SMTPC_CMD_MAX + 1; /* bytes the host has not sent */
	assert_int_equal(feed_str(c, "220 hub\r\n", &used, &out), SMTPC_WRITE);
	assert_int_equal(used, 0);
	out.len = 0;
	assert_int_equal(feed_str(c, "220 hub\r\n", &used, &out), SMTPC_MORE);
	assert_int_equal(used, 9);
	assert_memory_equal(out.buf, "EHLO relay.test\r\n", out.len);
	out.len = 0;
	assert_int_equal(feed_str(c, "250-hub\r\n250 PIPELINING\r\n", &used, &out), SMTPC_READY);

	/* Room for one command only: nothing of the group is written yet. */
	const char *rcpt[] = {"a@example.net"};
	struct smtpc_msg m = {.from = "s@example.org", .nrcpt = 1, .size = 5, .rcpt = rcpt};
	out.len = sizeof(buf) - SMTPC_CMD_MAX;
	assert_int_equal(smtpc_send(c, &m, &out), SMTPC_WRITE);
	assert_int_equal(out.len, sizeof(buf) - SMTPC_CMD_MAX);
	out.len = 0;
	assert_int_equal(smtpc_feed(c, NULL, 0, &used, &out), SMTPC_MORE);
	const char group[] = "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n";
	assert_int_equal(out.len, strlen(group));
	assert_memory_equal(out.buf, group, out.len);
	out.len = 0;
	assert_int_equal(feed_str(c, "250 ok\r\n250 ok\r\n354 go\r\n", &used, &out), SMTPC_DATA);
	/* Nothing is read while the body goes. */
	assert_int_equal(feed_str(c, "250 early\r\n", &used, &out), SMTPC_DATA);
	assert_int_equal(used, 0);
	assert_int_equal(sink.results, 0);
	smtpc_lost(c, SMTPC_LOST_CLOSED);
	assert_int_equal(sink.results, 1);
	assert_int_equal(sink.last.stage, SMTPC_STAGE_DATA);
	assert_true(sink.last.local);
	assert_string_equal(sink.last.text, "lost connection");
	assert_int_equal(smtpc_feed(c, (const uint8_t *)"x", 1, &used, &out), SMTPC_CLOSE);
	assert_int_equal(used, 0);
	free(c);
}

/* ---- dot stuffing ---- */

#define DOT_LEN_MAX 8

/* The plainest stuffing: a dot before every '.' at the start or after a LF;
 * then CRLF unless the body is empty or ends in CRLF; then ".\r\n". */
static size_t ref_stuff(const uint8_t *s, size_t n, uint8_t *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.' && (i == 0 || s[i - 1] == '\n'))
			out[o++] = '.';
		out[o++] = s[i];
	}
	if (n > 0 && !(n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n')) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

/* What the decoder (body.c) must give back: the body with each bare LF as
 * CRLF (it normalizes them), after the CRLF the stuffing added. */
static size_t ref_content(const uint8_t *s, size_t n, uint8_t *out)
{
	uint8_t tmp[DOT_LEN_MAX + 2];
	memcpy(tmp, s, n);
	size_t m = n;
	if (n > 0 && !(n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n')) {
		tmp[m++] = '\r';
		tmp[m++] = '\n';
	}
	size_t o = 0;
	for (size_t i = 0; i < m; i++) {
		if (tmp[i] == '\n' && (i == 0 || tmp[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = tmp[i];
	}
	return o;
}

struct dstuff {
	uint8_t out[4 * DOT_LEN_MAX + 16];
	size_t len;
	unsigned runs;
};

/* The helper over windows of w bytes (0: the whole body in one window). */
static void helper_stuff(const uint8_t *s, size_t n, size_t w, struct dstuff *d)
{
	struct smtpc_dot st;
	smtpc_dot_init(&st);
	d->len = 0;
	d->runs = 0;
	size_t pos = 0;
	while (pos < n) {
		size_t win = w == 0 || w > n - pos ? n - pos : w;
		bool dot;
		size_t k = smtpc_dot_next(&st, s + pos, win, &dot);
		assert_true(k >= 1 && k <= win);
		/* A run stops early only before a dot that starts a line. */
		if (k < win)
			assert_true(s[pos + k] == '.' && s[pos + k - 1] == '\n');
		if (dot)
			d->out[d->len++] = '.';
		memcpy(d->out + d->len, s + pos, k);
		d->len += k;
		d->runs++;
		pos += k;
	}
	size_t el;
	const char *e = smtpc_dot_end(&st, &el);
	memcpy(d->out + d->len, e, el);
	d->len += el;
}

struct dec {
	uint8_t out[4 * DOT_LEN_MAX + 16];
	size_t len;
};

static int dec_emit(void *ctx, const uint8_t *p, size_t len)
{
	struct dec *d = ctx;
	assert_true(d->len + len <= sizeof(d->out));
	memcpy(d->out + d->len, p, len);
	d->len += len;
	return 0;
}

static void check_dot_string(const uint8_t *s, size_t n)
{
	uint8_t ref[4 * DOT_LEN_MAX + 16];
	size_t rlen = ref_stuff(s, n, ref);
	static const size_t windows[] = {0, 1, 2, 3};
	for (size_t k = 0; k < sizeof(windows) / sizeof(windows[0]); k++) {
		struct dstuff d;
		helper_stuff(s, n, windows[k], &d);
		if (d.len != rlen || memcmp(d.out, ref, rlen) != 0) {
			char a[64], b[128];
			size_t i;
			for (i = 0; i < n; i++)
				a[i] = s[i] == '\r' ? 'R' : s[i] == '\n' ? 'N' : (char)s[i];
			a[i] = 0;
			for (i = 0; i < d.len && i < sizeof(b) - 1; i++)
				b[i] = d.out[i] == '\r'	  ? 'R'
				       : d.out[i] == '\n' ? 'N'
							  : (char)d.out[i];
			b[i] = 0;
			fail_msg("body '%s' window %zu: got '%s'", a, windows[k], b);
		}
		/* Whole, the runs are as long as they can be: one per line-start dot. */
		if (windows[k] == 0) {
			unsigned dots = 0;
			for (size_t i = 1; i < n; i++)
				dots += s[i] == '.' && s[i - 1] == '\n';
			assert_int_equal(d.runs, n == 0 ? 0 : dots + 1);
		}
	}
	/* Only the terminator is a lone dot line on any reading of line ends: in
	 * "\n" + output, every "\n." but the last is followed by a second dot. */
	uint8_t w[4 * DOT_LEN_MAX + 20];
	w[0] = '\n';
	memcpy(w + 1, ref, rlen);
	size_t wl = rlen + 1;
	for (size_t i = 0; i + 1 < wl - 3; i++)
		if (w[i] == '\n' && w[i + 1] == '.')
			assert_true(w[i + 2] == '.');
	assert_memory_equal(w + wl - 5 + (rlen == 3 ? 2 : 0), rlen == 3 ? ".\r\n" : "\r\n.\r\n",
			    rlen == 3 ? 3 : 5);

	/* mxring's own receiver reads back the content, ending where it ends. */
	struct body_dec bd;
	struct dec dd = {.len = 0};
	bool done = false;
	body_init(&bd);
	size_t used = body_data(&bd, ref, rlen, dec_emit, &dd, &done);
	assert_true(done);
	assert_int_equal(used, rlen);
	uint8_t want[4 * DOT_LEN_MAX + 16];
	size_t wlen = ref_content(s, n, want);
	assert_int_equal(dd.len, wlen);
	assert_memory_equal(dd.out, want, wlen);
}

static void test_dot_exhaustive(void **state)
{
	(void)state;
	static const uint8_t alpha[] = {'.', '\r', '\n', 'a'};
	uint8_t s[DOT_LEN_MAX];
	unsigned count = 0;
	for (size_t n = 0; n <= DOT_LEN_MAX; n++) {
		size_t total = 1;
		for (size_t i = 0; i < n; i++)
			total *= 4;
		for (size_t code = 0; code < total; code++) {
			size_t v = code;
			for (size_t i = 0; i < n; i++, v /= 4)
				s[i] = alpha[v % 4];
			check_dot_string(s, n);
			count++;
		}
	}
	assert_int_equal(count, 87381); /* 4^0 + ... + 4^8 */
}

/* A larger body through windows of every size: runs lie in the window, the
 * output is the reference's. */
static void test_dot_windows(void **state)
{
	(void)state;
	static const char body[] = ".start\r\nline\r\n.\r\n..two\r\nbare\n.dot\rcr.\r\n.";
	size_t n = sizeof(body) - 1;
	uint8_t ref[2 * sizeof(body) + 8];
	size_t rlen = ref_stuff((const uint8_t *)body, n, ref);
	for (size_t w = 1; w <= n; w++) {
		struct smtpc_dot st;
		smtpc_dot_init(&st);
		uint8_t out[sizeof(ref)];
		size_t o = 0, pos = 0;
		while (pos < n) {
			size_t win = w < n - pos ? w : n - pos;
			uint8_t *copy = xalloc(win); /* exactly the window: ASan sees past it */
			memcpy(copy, body + pos, win);
			bool dot;
			size_t k = smtpc_dot_next(&st, copy, win, &dot);
			assert_true(k >= 1 && k <= win);
			if (dot)
				out[o++] = '.';
			memcpy(out + o, copy, k);
			o += k;
			pos += k;
			free(copy);
		}
		size_t el;
		const char *e = smtpc_dot_end(&st, &el);
		memcpy(out + o, e, el);
		o += el;
		assert_int_equal(o, rlen);
		assert_memory_equal(out, ref, rlen);
	}
	/* The body's end decides the terminator. */
	struct smtpc_dot st;
	size_t el;
	smtpc_dot_init(&st);
	assert_string_equal(smtpc_dot_end(&st, &el), ".\r\n");
	assert_int_equal(el, 3);
	bool dot;
	assert_int_equal(smtpc_dot_next(&st, (const uint8_t *)"x\r", 2, &dot), 2);
	assert_false(dot);
	assert_memory_equal(smtpc_dot_end(&st, &el), "\r\n.\r\n", 5);
	assert_int_equal(el, 5);
	assert_int_equal(smtpc_dot_next(&st, (const uint8_t *)"\n", 1, &dot), 1);
	assert_memory_equal(smtpc_dot_end(&st, &el), ".\r\n", 3);
	assert_int_equal(el, 3);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s TRANSCRIPT_DIR\n", argv[0]);
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	DIR *d = opendir(dir);
	if (!d) {
		perror(dir);
		return 2;
	}
	char **names = NULL;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		size_t l = strlen(e->d_name);
		if (l < 5 || strcmp(e->d_name + l - 4, ".txt") != 0)
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		if (!names)
			abort();
		names[n++] = xstrndup(e->d_name, l);
	}
	closedir(d);
	if (n == 0) {
		fprintf(stderr, "no transcripts in %s\n", dir);
		return 1;
	}
	qsort(names, n, sizeof(*names), by_name);
	struct CMUnitTest *tests = xalloc((n + 7) * sizeof(*tests));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		tests[k++] = (struct CMUnitTest){
		    .name = names[i], .test_func = test_transcript, .initial_state = names[i]};
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_big_group);
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_starttls_injection);
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_init_checks);
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_bad_replies);
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_out_full);
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_dot_exhaustive);
	tests[k++] = (struct CMUnitTest)cmocka_unit_test(test_dot_windows);
	int rc = _cmocka_run_group_tests("smtpc", tests, k, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(tests);
	return rc;
}
