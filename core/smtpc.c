/*
 * smtpc.c - the SMTP/LMTP client engine, sans-I/O (see smtpc.h for the
 * contract and the choices).
 *
 * Structure: smtpc_feed takes one complete reply line at a time (parsed in
 * place, never copied whole: the text is joined into a bounded buffer), and
 * a complete reply goes to on_reply with what it answers (enum expect, from
 * the state and the commands in flight). Every state change passes through
 * enter(), which checks it against a table. During a transaction, advance()
 * is the one place that writes commands: the whole group at once with
 * PIPELINING (as room allows), else the next command once nothing is in
 * flight; it also ends the transaction when nothing is in flight and
 * nothing is left to write.
 *
 * Invariants: a reply is read only while a command awaits it (expect() is
 * not X_NONE). Each recipient moves PENDING -> [ACCEPTED ->] DONE, or is
 * LOCAL (refused here before MAIL, never written), and finish() is the only
 * place that gives a result; it asserts the recipient was not final, so a
 * recipient gets one result. A transaction ends only when nfinal == nrcpt.
 *
 * Bounds: a reply line is at most SMTPC_LINE_MAX bytes, a reply at most
 * SMTPC_REPLY_LINES_MAX lines; a command at most SMTPC_CMD_MAX bytes; a
 * reply is consumed only with SMTPC_CMD_MAX free in out (what the answer to
 * it writes), and advance() leaves that much free.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "msg.h"
#include "smtpc.h"

/* What put() relies on: every command fits SMTPC_CMD_MAX. */
#define MAIL_FIXED sizeof("MAIL FROM:<> SIZE=18446744073709551615 BODY=8BITMIME SMTPUTF8\r\n")
static_assert(MAIL_FIXED + PATH_MAX_OCTETS - 2 <= SMTPC_CMD_MAX, "MAIL with every parameter");
static_assert(sizeof("EHLO \r\n") + HELO_MAX <= SMTPC_CMD_MAX, "EHLO/LHLO/HELO and the name");
static_assert(sizeof("BDAT 18446744073709551615 LAST\r\n") <= SMTPC_CMD_MAX, "BDAT");
/* The counters of the reply being read. */
static_assert(SMTPC_REPLY_LINES_MAX < UINT16_MAX && SMTPC_TEXT_MAX <= UINT16_MAX, "rlines, tlen");

/* Where a command of the transaction is. */
enum { C_NONE = 0, C_TODO, C_SENT, C_DONE };

/* What the next reply answers. */
enum expect {
	X_NONE = 0,
	X_GREETING,
	X_HELLO,
	X_HELO,
	X_STARTTLS,
	X_RSET,
	X_MAIL,
	X_RCPT,
	X_DATA,
	X_DOT_ALONE, /* "." after a 354 that no recipient needed */
	X_DOT,	     /* end of data (or BDAT LAST) */
	X_QUIT,
};

static const char *const expect_names[] = {
    [X_NONE] = "nothing",	 [X_GREETING] = "the greeting",
    [X_HELLO] = "EHLO",		 [X_HELO] = "HELO",
    [X_STARTTLS] = "STARTTLS",	 [X_RSET] = "RSET",
    [X_MAIL] = "MAIL",		 [X_RCPT] = "RCPT",
    [X_DATA] = "DATA",		 [X_DOT_ALONE] = "\".\"",
    [X_DOT] = "the end of data", [X_QUIT] = "QUIT",
};

/* Replies the engine makes. */
enum local {
	L_CONNECT = 0,
	L_LOST,
	L_TIMEOUT,
	L_TLS,
	L_TLS_NONE,
	L_TLS_REFUSED,
	L_PROTOCOL,
	L_RSET,
	L_BAD_FROM,
	L_BAD_RCPT,
	L_SIZE,
	L_UTF8,
	L_COUNT,
};

static const struct {
	uint16_t code;
	const char *enh;
	const char *text;
} local_replies[] = {
    [L_CONNECT] = {421, "4.4.1", "connection failed"},
    [L_LOST] = {421, "4.4.2", "lost connection"},
    [L_TIMEOUT] = {421, "4.4.2", "conversation timed out"},
    [L_TLS] = {421, "4.7.5", "TLS failure"},
    [L_TLS_NONE] = {421, "4.7.4", "TLS is required, but was not offered by the server"},
    [L_TLS_REFUSED] = {421, "4.7.4", "TLS is required, but the server refused STARTTLS"},
    [L_PROTOCOL] = {421, "4.5.0", "protocol error"},
    [L_RSET] = {421, "4.5.0", "the server refused RSET"},
    [L_BAD_FROM] = {501, "5.1.7", "sender address too long or not printable"},
    [L_BAD_RCPT] = {501, "5.1.3", "recipient address too long or not printable"},
    [L_SIZE] = {552, "5.3.4", "message size exceeds the server's limit"},
    [L_UTF8] = {550, "5.6.7", "SMTPUTF8 is required, but was not offered by the server"},
};
static_assert(sizeof(local_replies) / sizeof(local_replies[0]) == L_COUNT, "a reply for each");

static const char *const stage_names[] = {
    [SMTPC_STAGE_CONNECT] = "connect", [SMTPC_STAGE_GREETING] = "greeting",
    [SMTPC_STAGE_HELO] = "helo",       [SMTPC_STAGE_TLS] = "tls",
    [SMTPC_STAGE_MAIL] = "mail",       [SMTPC_STAGE_RCPT] = "rcpt",
    [SMTPC_STAGE_DATA] = "data",       [SMTPC_STAGE_LMTP_DATA] = "lmtp-data",
    [SMTPC_STAGE_SIZE] = "size",       [SMTPC_STAGE_SMTPUTF8] = "smtputf8",
};
static_assert(sizeof(stage_names) / sizeof(stage_names[0]) == SMTPC_STAGE_COUNT, "a name each");

const char *smtpc_stage_name(enum smtpc_stage stage)
{
	return stage < SMTPC_STAGE_COUNT ? stage_names[stage] : "?";
}

/* The transitions enter() allows, by state. */
#define B(s) (1u << (s))
static const uint16_t transitions[] = {
    [SMTPC_S_GREETING] = B(SMTPC_S_HELLO) | B(SMTPC_S_QUIT) | B(SMTPC_S_CLOSED),
    [SMTPC_S_HELLO] = B(SMTPC_S_STARTTLS) | B(SMTPC_S_HELO) | B(SMTPC_S_READY) | B(SMTPC_S_QUIT) |
		      B(SMTPC_S_CLOSED),
    [SMTPC_S_HELO] = B(SMTPC_S_READY) | B(SMTPC_S_QUIT) | B(SMTPC_S_CLOSED),
    [SMTPC_S_STARTTLS] = B(SMTPC_S_TLS) | B(SMTPC_S_READY) | B(SMTPC_S_QUIT) | B(SMTPC_S_CLOSED),
    [SMTPC_S_TLS] = B(SMTPC_S_HELLO) | B(SMTPC_S_CLOSED),
    [SMTPC_S_READY] = B(SMTPC_S_READY) | B(SMTPC_S_ENVELOPE) | B(SMTPC_S_QUIT) | B(SMTPC_S_CLOSED),
    [SMTPC_S_ENVELOPE] = B(SMTPC_S_BODY) | B(SMTPC_S_READY) | B(SMTPC_S_QUIT) | B(SMTPC_S_CLOSED),
    [SMTPC_S_BODY] = B(SMTPC_S_DOT) | B(SMTPC_S_CLOSED),
    [SMTPC_S_DOT] = B(SMTPC_S_READY) | B(SMTPC_S_CLOSED),
    [SMTPC_S_QUIT] = B(SMTPC_S_CLOSED),
    [SMTPC_S_CLOSED] = 0,
};
#undef B

static void enter(struct smtpc *c, enum smtpc_state st)
{
	ASSERT(c->state <= SMTPC_S_CLOSED && (transitions[c->state] & (1u << st)));
	c->state = (uint8_t)st;
}

/* Appends s to dst[0..len), cut to cap with its NUL; returns the new length. */
static size_t cat(char *dst, size_t cap, size_t len, const char *s)
{
	size_t n = strnlen(s, cap - 1 - len);
	memcpy(dst + len, s, n);
	dst[len + n] = 0;
	return len + n;
}

static void local_reply(struct smtpc_reply *r, enum local why, enum smtpc_stage stage,
			const char *detail)
{
	r->code = local_replies[why].code;
	r->stage = (uint8_t)stage;
	r->local = true;
	cat(r->enh, sizeof(r->enh), 0, local_replies[why].enh);
	size_t n = cat(r->text, sizeof(r->text), 0, local_replies[why].text);
	if (detail)
		cat(r->text, sizeof(r->text), cat(r->text, sizeof(r->text), n, ": "), detail);
}

/* ---- writing commands ---- */

static size_t room(const struct smtpc_out *out)
{
	return out->cap - out->len;
}

/* Appends one command if it fits with keep bytes left free; false if not. */
static bool put(struct smtpc_out *out, size_t keep, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool put(struct smtpc_out *out, size_t keep, const char *fmt, ...)
{
	char line[SMTPC_CMD_MAX + 1];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* Every argument was bounded before (HELO name, paths): see the static_asserts above. */
	ASSERT(n > 0 && (size_t)n <= SMTPC_CMD_MAX);
	if ((size_t)n + keep > room(out))
		return false;
	memcpy(out->buf + out->len, line, (size_t)n);
	out->len += (size_t)n;
	return true;
}

/* A command answering a reply: the feed loop kept SMTPC_CMD_MAX free for it. */
static void put_now(struct smtpc_out *out, const char *cmd, const char *arg)
{
	bool ok = put(out, 0, "%s%s%s\r\n", cmd, arg ? " " : "", arg ? arg : "");
	ASSERT(ok);
}

static void send_hello(struct smtpc *c, struct smtpc_out *out)
{
	c->caps = 0;
	c->size_max = 0;
	c->esmtp = false;
	put_now(out, c->conf->proto == SMTPC_LMTP ? "LHLO" : "EHLO", c->conf->helo_name);
	enter(c, SMTPC_S_HELLO);
}

/* ---- results ---- */

static void finish(struct smtpc *c, uint32_t i, const struct smtpc_reply *r)
{
	ASSERT(i < c->msg.nrcpt);
	ASSERT(c->rstate[i] == SMTPC_R_PENDING || c->rstate[i] == SMTPC_R_ACCEPTED);
	c->rstate[i] = SMTPC_R_DONE;
	c->nfinal++;
	c->result(c->ctx, i, r);
}

/* Gives r to every recipient of the transaction in the states of mask. */
static void finish_all(struct smtpc *c, unsigned mask, const struct smtpc_reply *r)
{
	for (uint32_t i = 0; i < c->msg.nrcpt; i++)
		if (mask & (1u << c->rstate[i]))
			finish(c, i, r);
}

#define NOT_FINAL ((1u << SMTPC_R_PENDING) | (1u << SMTPC_R_ACCEPTED))

static bool in_transaction(const struct smtpc *c)
{
	return c->state == SMTPC_S_ENVELOPE || c->state == SMTPC_S_BODY || c->state == SMTPC_S_DOT;
}

/* The session ends early with r: QUIT (not after a 421, a protocol error or
 * a lost connection) or closed. */
static void fail_session(struct smtpc *c, const struct smtpc_reply *r, bool quit,
			 struct smtpc_out *out)
{
	c->fail = *r;
	c->failed = true;
	if (in_transaction(c))
		finish_all(c, NOT_FINAL, r);
	if (c->has_next) {
		/* The transaction written behind this one gets the same end. */
		c->has_next = false;
		c->msg = c->next;
		c->nfinal = 0;
		memset(c->rstate, SMTPC_R_PENDING, c->msg.nrcpt);
		finish_all(c, NOT_FINAL, r);
	}
	if (quit) {
		put_now(out, "QUIT", NULL);
		enter(c, SMTPC_S_QUIT);
	} else {
		enter(c, SMTPC_S_CLOSED);
	}
}

/* ---- the transaction ---- */

/* The first recipient from i on that is to be written (not refused here). */
static uint32_t skip_local(const struct smtpc *c, uint32_t i)
{
	while (i < c->msg.nrcpt && c->rstate[i] == SMTPC_R_LOCAL)
		i++;
	return i;
}

static uint32_t in_flight(const struct smtpc *c)
{
	return (c->rset == C_SENT) + (c->mail == C_SENT) + c->rcpt_out + (c->data == C_SENT) +
	       (c->dot == C_SENT);
}

static void txn_end(struct smtpc *c, bool need_rset)
{
	ASSERT(c->nfinal == c->msg.nrcpt);
	c->need_rset = need_rset;
	c->msg.rcpt = NULL;
	c->msg.from = NULL;
	enter(c, SMTPC_S_READY);
	if (!c->has_next)
		return;
	/* The next transaction's MAIL, RCPTs and DATA went behind the end of
	 * data (smtpc_send_next): their replies come now. */
	ASSERT(!need_rset);
	c->has_next = false;
	c->msgs++;
	c->msg = c->next;
	c->bdat = c->eager = false;
	c->dead = c->dot_bad = false;
	c->rset = C_NONE;
	c->mail = C_SENT;
	c->data = C_SENT;
	c->dot = C_NONE;
	c->utf8 = c->next_utf8;
	c->rcpt_send = c->msg.nrcpt;
	c->rcpt_reply = 0;
	c->rcpt_out = c->msg.nrcpt;
	c->nacc = c->nfinal = c->lmtp_next = 0;
	memset(c->rstate, SMTPC_R_PENDING, c->msg.nrcpt);
	enter(c, SMTPC_S_ENVELOPE);
}

enum cmd { CMD_NONE = 0, CMD_RSET, CMD_MAIL, CMD_RCPT, CMD_DATA, CMD_BDAT };

/* The next command of the transaction to write, if one may be written now. */
static enum cmd next_command(const struct smtpc *c)
{
	if (c->rset == C_TODO)
		return CMD_RSET;
	if (c->pipe) {
		/* The group is written whole whatever the replies say (smtpc.h). */
		if (c->mail == C_TODO)
			return CMD_MAIL;
		if (c->rcpt_send < c->msg.nrcpt)
			return CMD_RCPT;
		if (!c->bdat && c->data == C_NONE)
			return CMD_DATA;
		/* SMTP with PIPELINING: BDAT goes in the group too (RFC 3030 4.2), and
		 * the body right behind it: one round trip a message. */
		if (c->bdat && c->data == C_NONE &&
		    (c->eager || (in_flight(c) == 0 && !c->dead && c->nacc > 0)))
			return CMD_BDAT;
		return CMD_NONE;
	}
	if (in_flight(c) > 0)
		return CMD_NONE;
	if (c->mail == C_TODO)
		return CMD_MAIL;
	if (c->dead)
		return CMD_NONE;
	if (c->rcpt_send < c->msg.nrcpt)
		return CMD_RCPT;
	if (c->nacc == 0 || c->data != C_NONE)
		return CMD_NONE;
	return c->bdat ? CMD_BDAT : CMD_DATA;
}

/* m's MAIL command, with the parameters the server offers, into line
 * (SMTPC_CMD_MAX + 1 bytes: the path was bounded by smtpc_send); its length. */
static size_t mail_line(const struct smtpc *c, const struct smtpc_msg *m, bool utf8, char *line)
{
	char size[32] = "";
	if (c->caps & SMTPC_CAP_SIZE)
		snprintf(size, sizeof(size), " SIZE=%" PRIu64, m->size);
	bool body8 = (m->env_flags & ENV_8BITMIME) && (c->caps & SMTPC_CAP_8BITMIME);
	int n = snprintf(line, SMTPC_CMD_MAX + 1, "MAIL FROM:<%s>%s%s%s\r\n", m->from, size,
			 body8 ? " BODY=8BITMIME" : "",
			 utf8 && (c->caps & SMTPC_CAP_SMTPUTF8) ? " SMTPUTF8" : "");
	ASSERT(n > 0 && (size_t)n <= SMTPC_CMD_MAX);
	return (size_t)n;
}

static bool write_command(struct smtpc *c, enum cmd cmd, struct smtpc_out *out)
{
	const size_t keep = SMTPC_CMD_MAX; /* for the answer to a reply (the feed loop) */
	switch (cmd) {
	case CMD_RSET:
		if (!put(out, keep, "RSET\r\n"))
			return false;
		c->rset = C_SENT;
		return true;
	case CMD_MAIL: {
		char line[SMTPC_CMD_MAX + 1];
		mail_line(c, &c->msg, c->utf8, line);
		if (!put(out, keep, "%s", line))
			return false;
		c->mail = C_SENT;
		return true;
	}
	case CMD_RCPT:
		if (!put(out, keep, "RCPT TO:<%s>\r\n", c->msg.rcpt[c->rcpt_send]))
			return false;
		c->rcpt_out++;
		c->rcpt_send = skip_local(c, c->rcpt_send + 1);
		return true;
	case CMD_DATA:
		if (!put(out, keep, "DATA\r\n"))
			return false;
		c->data = C_SENT;
		return true;
	case CMD_BDAT:
		if (!put(out, keep, "BDAT %" PRIu64 " LAST\r\n", c->msg.size))
			return false;
		c->data = C_SENT;
		enter(c, SMTPC_S_BODY);
		return true;
	case CMD_NONE:
		break;
	}
	return true;
}

/* Writes what the transaction may write now; ends it when nothing is in
 * flight and nothing is left to write. false: stopped for room in out. */
static bool advance(struct smtpc *c, struct smtpc_out *out)
{
	if (c->state != SMTPC_S_ENVELOPE)
		return true;
	/* Each turn writes one command, and a message has at most nrcpt + 3. */
	for (uint32_t guard = 0;; guard++) {
		ASSERT(guard <= c->msg.nrcpt + 4);
		enum cmd cmd = next_command(c);
		if (cmd == CMD_NONE)
			break;
		if (!write_command(c, cmd, out))
			return false;
		if (c->state != SMTPC_S_ENVELOPE)
			return true; /* BDAT: the body is next */
	}
	if (in_flight(c) == 0)
		txn_end(c, true); /* stopped before the content: see RSET in smtpc.h */
	return true;
}

/* ---- replies ---- */

static bool is_digit(uint8_t b)
{
	return b >= '0' && b <= '9';
}

/* Length of an enhanced status code of class cls at the start of t (RFC 3463:
 * class "." 1*3digit "." 1*3digit, then a space or the end), or 0. */
static size_t enh_len(const uint8_t *t, size_t n, uint8_t cls)
{
	if (n < 5 || t[0] != cls || (cls != '2' && cls != '4' && cls != '5') || t[1] != '.')
		return 0;
	size_t i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < n && is_digit(t[i]) && d < 4)
			i++, d++;
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= n || t[i] != '.')
				return 0;
			i++;
		}
	}
	return i == n || t[i] == ' ' ? i : 0;
}

/* Joins a line's text to the reply's, printable ASCII only, cut. */
static void add_text(struct smtpc *c, const uint8_t *t, size_t n)
{
	if (n == 0)
		return;
	size_t cap = sizeof(c->r.text) - 1;
	if (c->tlen > 0 && c->tlen < cap)
		c->r.text[c->tlen++] = ' ';
	for (size_t i = 0; i < n && c->tlen < cap; i++)
		c->r.text[c->tlen++] = t[i] >= 0x20 && t[i] < 0x7f ? (char)t[i] : '?';
	c->r.text[c->tlen] = 0;
}

/* ASCII case-insensitive: t[0..n) starts with the keyword kw, then ends or has a space. */
static bool keyword(const uint8_t *t, size_t n, const char *kw, size_t *after)
{
	size_t k = strlen(kw);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++) {
		uint8_t b = t[i];
		if (b >= 'a' && b <= 'z')
			b = (uint8_t)(b - 32);
		if (b != (uint8_t)kw[i])
			return false;
	}
	if (n > k && t[k] != ' ')
		return false;
	*after = k;
	return true;
}

/* One capability line of a 2xx EHLO/LHLO reply (not the first line). */
static void capability(struct smtpc *c, const uint8_t *t, size_t n)
{
	static const struct {
		const char *kw;
		uint32_t cap;
	} caps[] = {
	    {"PIPELINING", SMTPC_CAP_PIPELINING},
	    {"SIZE", SMTPC_CAP_SIZE},
	    {"8BITMIME", SMTPC_CAP_8BITMIME},
	    {"SMTPUTF8", SMTPC_CAP_SMTPUTF8},
	    {"CHUNKING", SMTPC_CAP_CHUNKING},
	    {"STARTTLS", SMTPC_CAP_STARTTLS},
	    {"ENHANCEDSTATUSCODES", SMTPC_CAP_ENHANCEDSTATUSCODES},
	    {"DSN", SMTPC_CAP_DSN},
	};
	size_t after;
	for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
		if (!keyword(t, n, caps[k].kw, &after))
			continue;
		c->caps |= caps[k].cap;
		if (caps[k].cap != SMTPC_CAP_SIZE)
			return;
		/* "SIZE n"; no number, 0 or one too long: no fixed limit (RFC 1870). */
		uint64_t v = 0;
		size_t i = after;
		while (i < n && t[i] == ' ')
			i++;
		size_t d = 0;
		while (i < n && is_digit(t[i]) && d < 19)
			v = v * 10 + (uint64_t)(t[i++] - '0'), d++;
		c->size_max = i == n ? v : 0;
		return;
	}
}

/* Parses one reply line (its line end stripped) into c->r. 1: the reply is
 * complete; 0: more lines follow; -1: a protocol error (*why says which). */
static int reply_line(struct smtpc *c, const uint8_t *p, size_t n, bool hello, const char **why)
{
	if (n < 3 || p[0] < '2' || p[0] > '5' || !is_digit(p[1]) || !is_digit(p[2]) ||
	    (n > 3 && p[3] != ' ' && p[3] != '-')) {
		*why = "malformed reply";
		return -1;
	}
	uint16_t code = (uint16_t)((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0'));
	if (c->rlines == 0) {
		memset(&c->r, 0, sizeof(c->r));
		c->r.code = code;
		c->tlen = 0;
	} else if (code != c->r.code) {
		*why = "reply code changes within a reply";
		return -1;
	}
	if (++c->rlines > SMTPC_REPLY_LINES_MAX) {
		*why = "too many reply lines";
		return -1;
	}
	bool last = n == 3 || p[3] == ' ';
	const uint8_t *t = p + (n > 3 ? 4 : 3);
	size_t tn = n > 3 ? n - 4 : 0;
	if (hello && p[0] == '2' && c->rlines > 1)
		capability(c, t, tn);
	size_t e = enh_len(t, tn, p[0]);
	if (e > 0) {
		if (c->rlines == 1)
			memcpy(c->r.enh, t, e); /* e <= 9 < SMTPC_ENH_MAX, zeroed above */
		t += e, tn -= e;
		if (tn > 0)
			t++, tn--; /* the space after it */
	}
	add_text(c, t, tn);
	if (last)
		c->rlines = 0;
	return last;
}

static enum expect expect(const struct smtpc *c)
{
	switch (c->state) {
	case SMTPC_S_GREETING:
		return X_GREETING;
	case SMTPC_S_HELLO:
		return X_HELLO;
	case SMTPC_S_HELO:
		return X_HELO;
	case SMTPC_S_STARTTLS:
		return X_STARTTLS;
	case SMTPC_S_ENVELOPE:
		/* Replies come in the order the commands went. */
		if (c->rset == C_SENT)
			return X_RSET;
		if (c->mail == C_SENT)
			return X_MAIL;
		if (c->rcpt_out > 0)
			return X_RCPT;
		if (c->data == C_SENT)
			return X_DATA;
		return c->dot == C_SENT ? X_DOT_ALONE : X_NONE;
	case SMTPC_S_DOT:
		/* BDAT pipelined: the group's replies come before its own. */
		if (c->eager && c->rset == C_SENT)
			return X_RSET;
		if (c->eager && c->mail == C_SENT)
			return X_MAIL;
		if (c->eager && c->rcpt_out > 0)
			return X_RCPT;
		return X_DOT;
	case SMTPC_S_QUIT:
		return X_QUIT;
	default:
		return X_NONE;
	}
}

static enum smtpc_stage stage_of(const struct smtpc *c, enum expect x)
{
	switch (x) {
	case X_GREETING:
		return SMTPC_STAGE_GREETING;
	case X_HELLO:
	case X_HELO:
		return SMTPC_STAGE_HELO;
	case X_STARTTLS:
		return SMTPC_STAGE_TLS;
	case X_RCPT:
		return SMTPC_STAGE_RCPT;
	case X_DATA:
	case X_DOT_ALONE:
		return SMTPC_STAGE_DATA;
	case X_DOT:
		return c->conf->proto == SMTPC_LMTP ? SMTPC_STAGE_LMTP_DATA : SMTPC_STAGE_DATA;
	default:
		break;
	}
	switch (c->state) {
	case SMTPC_S_TLS:
		return SMTPC_STAGE_TLS;
	case SMTPC_S_BODY:
		return SMTPC_STAGE_DATA;
	default:
		return SMTPC_STAGE_MAIL; /* RSET, MAIL, idle, between commands */
	}
}

/* The server broke the protocol while x was awaited. */
static void protocol_error(struct smtpc *c, enum expect x, const char *why)
{
	if (c->state == SMTPC_S_QUIT) {
		enter(c, SMTPC_S_CLOSED); /* nothing is left to fail */
		return;
	}
	struct smtpc_reply r;
	local_reply(&r, L_PROTOCOL, stage_of(c, x), why);
	fail_session(c, &r, false, NULL);
}

/* A reply that makes no sense where it came. */
static void unexpected(struct smtpc *c, enum expect x)
{
	char why[64];
	snprintf(why, sizeof(why), "unexpected reply %u to %s", (unsigned)c->r.code,
		 expect_names[x]);
	protocol_error(c, x, why);
}

/* The server's reply as a detail of a local one: "454 4.7.0 text". */
static void reply_detail(const struct smtpc_reply *r, char *buf, size_t cap)
{
	char code[8];
	snprintf(code, sizeof(code), "%u ", (unsigned)r->code);
	size_t n = cat(buf, cap, 0, code);
	if (r->enh[0])
		n = cat(buf, cap, cat(buf, cap, n, r->enh), " ");
	cat(buf, cap, n, r->text);
}

static void on_hello(struct smtpc *c, struct smtpc_out *out)
{
	struct smtpc_reply r;
	bool want = c->conf->tls != SMTPC_TLS_OFF && !c->tls;
	if (want && (c->caps & SMTPC_CAP_STARTTLS)) {
		put_now(out, "STARTTLS", NULL);
		enter(c, SMTPC_S_STARTTLS);
	} else if (c->conf->tls == SMTPC_TLS_REQUIRED && !c->tls) {
		local_reply(&r, L_TLS_NONE, SMTPC_STAGE_TLS, NULL);
		fail_session(c, &r, true, out);
	} else {
		enter(c, SMTPC_S_READY);
	}
}

static void on_rcpt_reply(struct smtpc *c)
{
	uint32_t i = c->rcpt_reply;
	ASSERT(c->rcpt_out > 0 && i < c->msg.nrcpt);
	c->rcpt_out--;
	c->rcpt_reply = skip_local(c, i + 1);
	if (c->dead)
		return; /* final since MAIL was refused */
	if (c->r.code / 100 == 2) {
		c->rstate[i] = SMTPC_R_ACCEPTED;
		c->nacc++;
	} else {
		finish(c, i, &c->r);
	}
}

static void on_dot_reply(struct smtpc *c)
{
	if (c->r.code / 100 != 2)
		c->dot_bad = true;
	if (c->conf->proto == SMTPC_LMTP) {
		uint32_t i = c->lmtp_next;
		while (i < c->msg.nrcpt && c->rstate[i] != SMTPC_R_ACCEPTED)
			i++;
		finish(c, i, &c->r); /* asserts i < nrcpt: one reply per accepted recipient */
		c->lmtp_next = i + 1;
	} else {
		finish_all(c, 1u << SMTPC_R_ACCEPTED, &c->r);
	}
	if (--c->dot_left == 0)
		txn_end(c, c->bdat && c->dot_bad);
}

static void on_data_reply(struct smtpc *c, struct smtpc_out *out)
{
	c->data = C_DONE;
	if (c->r.code != 354) {
		/* 503/554 when no recipient was accepted: nobody is left to tell. */
		finish_all(c, 1u << SMTPC_R_ACCEPTED, &c->r);
		return;
	}
	if (!c->dead && c->nacc > 0) {
		enter(c, SMTPC_S_BODY);
		return;
	}
	/* 354 with no recipient: an empty message ends it (RFC 2920 3.1); an LMTP
	 * server must refuse DATA then (RFC 2033 4.2), so it is broken. */
	if (c->conf->proto == SMTPC_LMTP) {
		unexpected(c, X_DATA);
		return;
	}
	put_now(out, ".", NULL);
	c->dot = C_SENT;
}

/* Whether a reply with this code may answer x at all (else a protocol error). */
static bool sensible(enum expect x, uint16_t code)
{
	unsigned cls = code / 100;
	if (cls == 4 || cls == 5)
		return true;
	switch (x) {
	case X_GREETING:
	case X_STARTTLS:
		return code == 220;
	case X_DATA:
		return code == 354;
	default:
		return cls == 2;
	}
}

/* The session's setup: the greeting, EHLO/LHLO, HELO, STARTTLS. */
static void on_setup_reply(struct smtpc *c, enum expect x, struct smtpc_out *out)
{
	struct smtpc_reply *r = &c->r;
	bool ok = r->code / 100 == 2;
	if (x == X_GREETING && ok) {
		send_hello(c, out);
	} else if (x == X_HELLO && ok) {
		c->esmtp = true;
		on_hello(c, out);
	} else if (x == X_HELLO && r->code / 100 == 5 && c->conf->proto == SMTPC_SMTP) {
		c->caps = 0;
		c->size_max = 0;
		put_now(out, "HELO", c->conf->helo_name);
		enter(c, SMTPC_S_HELO);
	} else if (x == X_HELO && ok) {
		on_hello(c, out); /* no capabilities: no STARTTLS */
	} else if (x == X_STARTTLS && ok) {
		enter(c, SMTPC_S_TLS);
	} else if (x == X_STARTTLS && c->conf->tls == SMTPC_TLS_REQUIRED) {
		char detail[SMTPC_TEXT_MAX];
		struct smtpc_reply l;
		reply_detail(r, detail, sizeof(detail));
		local_reply(&l, L_TLS_REFUSED, SMTPC_STAGE_TLS, detail);
		fail_session(c, &l, true, out);
	} else if (x == X_STARTTLS) {
		enter(c, SMTPC_S_READY); /* opportunistic: plain text */
	} else {
		fail_session(c, r, true, out);
	}
}

/* The transaction's commands, then what they let go next. */
static void on_txn_reply(struct smtpc *c, enum expect x, struct smtpc_out *out)
{
	struct smtpc_reply *r = &c->r;
	bool ok = r->code / 100 == 2;
	switch (x) {
	case X_RSET:
		if (!ok) {
			char detail[SMTPC_TEXT_MAX];
			struct smtpc_reply l;
			reply_detail(r, detail, sizeof(detail));
			local_reply(&l, L_RSET, SMTPC_STAGE_MAIL, detail);
			fail_session(c, &l, true, out);
			return;
		}
		c->rset = C_DONE;
		break;
	case X_MAIL:
		c->mail = C_DONE;
		if (!ok) {
			c->dead = true;
			finish_all(c, 1u << SMTPC_R_PENDING, r);
		}
		break;
	case X_RCPT:
		on_rcpt_reply(c);
		break;
	case X_DATA:
		on_data_reply(c, out);
		break;
	case X_DOT_ALONE:
		c->dot = C_DONE;
		break;
	case X_DOT:
		on_dot_reply(c);
		return;
	default:
		ASSERT(!"not a transaction's reply");
	}
	advance(c, out); /* ENVELOPE: a reply may let the next command go, or end it */
}

/* A complete reply c->r, answering x. */
static void on_reply(struct smtpc *c, enum expect x, struct smtpc_out *out)
{
	ASSERT(x != X_NONE); /* a reply is read only while one is awaited */
	c->r.stage = (uint8_t)stage_of(c, x);
	if (x == X_QUIT)
		enter(c, SMTPC_S_CLOSED); /* 221 or not, the session is over */
	else if (!sensible(x, c->r.code))
		unexpected(c, x);
	else if (c->r.code == 421)
		fail_session(c, &c->r, false, out); /* the server is closing */
	else if (x == X_GREETING || x == X_HELLO || x == X_HELO || x == X_STARTTLS)
		on_setup_reply(c, x, out);
	else
		on_txn_reply(c, x, out);
}

/* One reply line, or a partial one. Returns the bytes used (0: need more). */
static size_t feed_line(struct smtpc *c, const uint8_t *in, size_t len, struct smtpc_out *out)
{
	const uint8_t *lf = memchr(in, '\n', len < SMTPC_LINE_MAX ? len : SMTPC_LINE_MAX);
	const char *why = NULL;
	enum expect x = expect(c);
	if (!lf) {
		if (len < SMTPC_LINE_MAX)
			return 0;
		protocol_error(c, x, "reply line too long");
		return len; /* nothing after it means anything */
	}
	size_t n = (size_t)(lf - in);
	size_t used = n + 1;
	if (n > 0 && in[n - 1] == '\r')
		n--;
	int r = reply_line(c, in, n, x == X_HELLO, &why);
	if (r < 0) {
		protocol_error(c, x, why);
		return len;
	}
	if (r > 0)
		on_reply(c, x, out);
	return used;
}

static enum smtpc_next next(const struct smtpc *c, bool full)
{
	switch (c->state) {
	case SMTPC_S_CLOSED:
		return SMTPC_CLOSE;
	case SMTPC_S_TLS:
		return SMTPC_TLS;
	case SMTPC_S_BODY:
		return c->bdat ? SMTPC_BDAT : SMTPC_DATA;
	case SMTPC_S_READY:
		return SMTPC_READY;
	default:
		return full ? SMTPC_WRITE : SMTPC_MORE;
	}
}

enum smtpc_next smtpc_feed(struct smtpc *c, const uint8_t *in, size_t len, size_t *used,
			   struct smtpc_out *out)
{
	ASSERT(out->cap >= SMTPC_OUT_MIN && out->len <= out->cap);
	size_t pos = 0;
	bool full = false;
	/* Each turn uses at least one byte of input, or leaves. */
	for (size_t guard = 0;; guard++) {
		ASSERT(guard <= len);
		full = !advance(c, out);
		if (pos == len || expect(c) == X_NONE)
			break; /* READY, TLS, BODY, CLOSED, or nothing in flight yet */
		if (room(out) < SMTPC_CMD_MAX) {
			full = true; /* the answer to this reply may need it */
			break;
		}
		size_t n = feed_line(c, in + pos, len - pos, out);
		if (n == 0)
			break;
		pos += n;
	}
	/* WRITE with nothing to send would spin: room is kept out of an empty out. */
	ASSERT(!full || out->len > 0);
	*used = pos;
	return next(c, full);
}

/* ---- the host's calls ---- */

static bool name_ok(const char *name)
{
	size_t n = strnlen(name, HELO_MAX + 1);
	if (n == 0 || n > HELO_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (name[i] < '!' || name[i] > '~')
			return false;
	return true;
}

int smtpc_init(struct smtpc *c, const struct smtpc_conf *conf, smtpc_result_fn result, void *ctx)
{
	if (conf->proto > SMTPC_LMTP || conf->tls > SMTPC_TLS_REQUIRED || !conf->helo_name ||
	    !name_ok(conf->helo_name) || !result)
		return -EINVAL;
	/* rstate is written per message, for its recipients only. */
	memset(c, 0, offsetof(struct smtpc, rstate));
	c->conf = conf;
	c->result = result;
	c->ctx = ctx;
	c->state = SMTPC_S_GREETING;
	return 0;
}

enum smtpc_next smtpc_tls_started(struct smtpc *c, struct smtpc_out *out)
{
	ASSERT(c->state == SMTPC_S_TLS && room(out) >= SMTPC_CMD_MAX);
	c->tls = true;
	send_hello(c, out); /* RFC 3207 4.2: what was learnt before is forgotten */
	return SMTPC_MORE;
}

/* An address that can go between <> in a command: bounded, no control byte. */
static bool path_ok(const char *a, bool empty_ok, bool *non_ascii)
{
	size_t n = strnlen(a, PATH_MAX_OCTETS);
	if (n + 2 > PATH_MAX_OCTETS || (n == 0 && !empty_ok))
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t b = (uint8_t)a[i];
		if (b < 0x20 || b == 0x7f)
			return false;
		if (b >= 0x80)
			*non_ascii = true;
	}
	return true;
}

enum smtpc_next smtpc_send(struct smtpc *c, const struct smtpc_msg *m, struct smtpc_out *out)
{
	ASSERT(c->state == SMTPC_S_READY);
	ASSERT(m->nrcpt >= 1 && m->nrcpt <= RCPT_LIMIT_MAX && m->from && m->rcpt);
	ASSERT(out->cap >= SMTPC_OUT_MIN && room(out) >= SMTPC_CMD_MAX);
	c->msgs++;
	c->msg = *m;
	c->pipe = c->caps & SMTPC_CAP_PIPELINING;
	c->bdat = c->conf->bdat && (c->caps & SMTPC_CAP_CHUNKING);
	c->eager = c->bdat && c->pipe && c->conf->proto == SMTPC_SMTP;
	c->dead = c->dot_bad = false;
	c->rset = c->need_rset ? C_TODO : C_NONE;
	c->mail = C_TODO;
	c->data = c->dot = C_NONE;
	c->rcpt_out = c->nacc = c->nfinal = c->lmtp_next = 0;
	memset(c->rstate, SMTPC_R_PENDING, m->nrcpt);

	bool utf8 = m->env_flags & ENV_SMTPUTF8;
	bool from_ok = path_ok(m->from, true, &utf8);
	struct smtpc_reply r;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		if (path_ok(m->rcpt[i], false, &utf8))
			continue;
		local_reply(&r, L_BAD_RCPT, SMTPC_STAGE_RCPT, NULL);
		finish(c, i, &r);
		c->rstate[i] = SMTPC_R_LOCAL;
	}
	c->utf8 = utf8;
	enter(c, SMTPC_S_ENVELOPE);
	if (!from_ok) {
		local_reply(&r, L_BAD_FROM, SMTPC_STAGE_MAIL, NULL);
		finish_all(c, NOT_FINAL, &r);
	} else if ((c->caps & SMTPC_CAP_SIZE) && c->size_max > 0 && m->size > c->size_max) {
		char detail[64];
		snprintf(detail, sizeof(detail), "%" PRIu64 " > %" PRIu64 " bytes", m->size,
			 c->size_max);
		local_reply(&r, L_SIZE, SMTPC_STAGE_SIZE, detail);
		finish_all(c, NOT_FINAL, &r);
	} else if (utf8 && !(c->caps & SMTPC_CAP_SMTPUTF8)) {
		local_reply(&r, L_UTF8, SMTPC_STAGE_SMTPUTF8, NULL);
		finish_all(c, NOT_FINAL, &r);
	}
	if (c->nfinal == m->nrcpt) {
		/* Nothing was written: the server's state is as it was. */
		txn_end(c, c->need_rset);
		return SMTPC_READY;
	}
	c->rcpt_send = c->rcpt_reply = skip_local(c, 0);
	bool full = !advance(c, out);
	return next(c, full);
}

enum smtpc_next smtpc_body_sent(struct smtpc *c)
{
	ASSERT(c->state == SMTPC_S_BODY);
	c->data = C_DONE;
	c->dot_left = c->conf->proto == SMTPC_LMTP ? c->nacc : 1;
	enter(c, SMTPC_S_DOT);
	return SMTPC_MORE;
}

bool smtpc_send_next(struct smtpc *c, const struct smtpc_msg *m, struct smtpc_out *out)
{
	ASSERT(m->nrcpt >= 1 && m->nrcpt <= RCPT_LIMIT_MAX && m->from && m->rcpt);
	/* Only behind an SMTP DATA (a BDAT may need RSET after it; LMTP's
	 * replies after the data are counted by its recipients). */
	if (c->state != SMTPC_S_DOT || c->has_next || !c->pipe || c->bdat ||
	    c->conf->proto != SMTPC_SMTP)
		return false;
	if (c->conf->bdat && (c->caps & SMTPC_CAP_CHUNKING))
		return false; /* it would go as BDAT: one round trip already */
	bool utf8 = m->env_flags & ENV_SMTPUTF8;
	if (!path_ok(m->from, true, &utf8))
		return false;
	size_t need = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		if (!path_ok(m->rcpt[i], false, &utf8))
			return false; /* refused here: it goes the usual way */
		need += sizeof("RCPT TO:<>\r\n") - 1 + strlen(m->rcpt[i]);
	}
	if ((c->caps & SMTPC_CAP_SIZE) && c->size_max > 0 && m->size > c->size_max)
		return false;
	if (utf8 && !(c->caps & SMTPC_CAP_SMTPUTF8))
		return false;
	char line[SMTPC_CMD_MAX + 1];
	need += mail_line(c, m, utf8, line) + sizeof("DATA\r\n") - 1;
	if (need > room(out))
		return false;
	bool ok = put(out, 0, "%s", line);
	for (uint32_t i = 0; ok && i < m->nrcpt; i++)
		ok = put(out, 0, "RCPT TO:<%s>\r\n", m->rcpt[i]);
	ok = ok && put(out, 0, "DATA\r\n");
	ASSERT(ok); /* room was counted */
	c->next = *m;
	c->next_utf8 = utf8;
	c->has_next = true;
	return true;
}

enum smtpc_next smtpc_quit(struct smtpc *c, struct smtpc_out *out)
{
	ASSERT(c->state == SMTPC_S_READY && room(out) >= SMTPC_CMD_MAX);
	put_now(out, "QUIT", NULL);
	enter(c, SMTPC_S_QUIT);
	return SMTPC_MORE;
}

void smtpc_lost(struct smtpc *c, enum smtpc_lost why)
{
	static const enum local map[] = {
	    [SMTPC_LOST_CONNECT] = L_CONNECT,
	    [SMTPC_LOST_CLOSED] = L_LOST,
	    [SMTPC_LOST_TIMEOUT] = L_TIMEOUT,
	    [SMTPC_LOST_TLS] = L_TLS,
	};
	ASSERT(why <= SMTPC_LOST_TLS);
	if (c->state == SMTPC_S_CLOSED)
		return;
	if (c->state == SMTPC_S_QUIT) {
		enter(c, SMTPC_S_CLOSED); /* the usual end after QUIT */
		return;
	}
	struct smtpc_reply r;
	enum smtpc_stage stage =
	    why == SMTPC_LOST_CONNECT ? SMTPC_STAGE_CONNECT : stage_of(c, expect(c));
	local_reply(&r, map[why], stage, NULL);
	fail_session(c, &r, false, NULL);
}

/* ---- dot stuffing ---- */

void smtpc_dot_init(struct smtpc_dot *d)
{
	d->prev[0] = '\r';
	d->prev[1] = '\n';
}

size_t smtpc_dot_next(struct smtpc_dot *d, const uint8_t *p, size_t len, bool *dot)
{
	ASSERT(len > 0);
	*dot = d->prev[1] == '\n' && p[0] == '.';
	size_t n = len;
	/* The run ends just before the next dot that starts a line in the window. */
	const uint8_t *q = p, *end = p + len;
	while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL && q + 1 < end) {
		if (q[1] == '.') {
			n = (size_t)(q + 1 - p);
			break;
		}
		q++;
	}
	if (n >= 2) {
		d->prev[0] = p[n - 2];
		d->prev[1] = p[n - 1];
	} else {
		d->prev[0] = d->prev[1];
		d->prev[1] = p[0];
	}
	return n;
}

const char *smtpc_dot_end(const struct smtpc_dot *d, size_t *len)
{
	static const char end[] = "\r\n.\r\n";
	bool crlf = d->prev[0] == '\r' && d->prev[1] == '\n';
	*len = crlf ? 3 : 5;
	return crlf ? end + 2 : end;
}
