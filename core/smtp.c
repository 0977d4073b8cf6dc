/*
 * smtp.c - the SMTP server engine, sans-I/O (see smtp.h for the contract).
 *
 * Structure: smtp_feed runs a loop over the input; in SMTP_S_CMD it takes one
 * complete line at a time (the line is parsed in place, never copied) and
 * hands it to one guard function per command, looked up in a command table.
 * Each guard checks the session state and either answers with an error or
 * does the command; every reply is appended to the output in order, which
 * is all PIPELINING (RFC 2920) asks of a server. In SMTP_S_DATA and
 * SMTP_S_BDAT the bytes go to the body decoder (body.c), which reports runs
 * of the input to the host's body hook.
 *
 * Bounds: a command line is at most command_line_limit octets including
 * CRLF; a longer one is dropped up to its LF and answered 500 5.5.2 (the
 * engine keeps only a counter, not the bytes). Every 4xx/5xx caused by the
 * client counts toward error_limit, after which the session ends with 421,
 * except 452 for too many recipients: recipients stop at recipient_limit
 * (452 4.5.3), and only the 452s of a transaction past
 * recipient_overshoot_limit count (as Postfix's
 * smtpd_recipient_overshoot_limit), so a client with a long list gets it
 * delivered in several transactions while one that goes on sending
 * thousands is cut off. Likewise past junk_command_limit commands that move
 * no mail (NOOP, VRFY, RSET, HELP, HELO, EHLO) since the last message
 * queued, each counts. Content stops being reported past
 * message_size_limit (552 5.3.4 at its end).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "msg.h"
#include "smtp.h"

/* Session flags. */
#define F_HELO	    0x001u /* HELO or EHLO given */
#define F_ESMTP	    0x002u /* EHLO given */
#define F_TLS	    0x004u /* inside TLS */
#define F_MAIL	    0x008u /* a transaction is open (MAIL accepted) */
#define F_RCPT_TRY  0x010u /* a RCPT was tried in this transaction */
#define F_CONTENT   0x020u /* DATA/BDAT content started (data_start called) */
#define F_DEAD	    0x040u /* transaction failed inside content; abort already called */
#define F_OVERSIZE  0x080u /* content past message_size_limit */
#define F_BDAT_LAST 0x100u /* the current BDAT chunk is the last */
#define F_DISCARD   0x200u /* the current line is being dropped (too long) */

/* Why a BDAT chunk is read and dropped (s->bdat_reply). */
enum { BDAT_OK = 0, BDAT_NEED_MAIL, BDAT_NEED_RCPT, BDAT_NO_RCPT };

#define R_OK	       "250 2.0.0 Ok"
#define R_MAIL_OK      "250 2.1.0 Ok"
#define R_RCPT_OK      "250 2.1.5 Ok"
#define R_DATA	       "354 End data with <CR><LF>.<CR><LF>"
#define R_BYE	       "221 2.0.0 Bye"
#define R_VRFY	       "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
#define R_UNKNOWN      "500 5.5.2 Error: command not recognized"
#define R_TOO_LONG     "500 5.5.2 Error: line too long"
#define R_BAD_CHAR     "500 5.5.2 Error: invalid character in command"
#define R_NEED_HELO    "503 5.5.1 Error: send HELO/EHLO first"
#define R_NESTED       "503 5.5.1 Error: nested MAIL command"
#define R_NEED_MAIL    "503 5.5.1 Error: need MAIL command"
#define R_NEED_RCPT    "503 5.5.1 Error: need RCPT command"
#define R_NO_RCPT      "554 5.5.1 Error: no valid recipients"
#define R_MAIL_SYNTAX  "501 5.5.4 Syntax: MAIL FROM:<address>"
#define R_RCPT_SYNTAX  "501 5.5.4 Syntax: RCPT TO:<address>"
#define R_BAD_SENDER   "501 5.1.7 Bad sender address syntax"
#define R_BAD_RCPT     "501 5.1.3 Bad recipient address syntax"
#define R_NEED_UTF8    "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"
#define R_SIZE	       "552 5.3.4 Message size exceeds fixed limit"
#define R_RELAY	       "550 5.7.1 Relay access denied"
#define R_RCPT_MAX     "452 4.5.3 Error: too many recipients"
#define R_TOO_BIG      "552 5.3.4 Error: message file too big"
#define R_BARE_LF      "550 5.5.2 Error: bare <LF> received"
#define R_TEMPFAIL     "451 4.3.0 Error: queue file write error"
#define R_BUSY	       "451 4.3.0 Error: queue busy, try again later"
#define R_NOSPACE      "452 4.3.1 Insufficient system storage"
#define R_NO_TLS       "502 5.5.1 Error: command not implemented"
#define R_TLS_ACTIVE   "503 5.5.1 Error: TLS already active"
#define R_TLS_TXN      "503 5.5.1 Error: MAIL transaction in progress"
#define R_TLS_GO       "220 2.0.0 Ready to start TLS"
#define R_BDAT_SYNTAX  "501 5.5.4 Syntax: BDAT count [LAST]"
#define R_DATA_BDAT    "503 5.5.1 Error: DATA after BDAT"
#define R_RCPT_BDAT    "503 5.5.1 Error: RCPT after BDAT"
#define R_USER_UNKNOWN "550 5.1.1 <%.*s>: Recipient address rejected: User unknown"
#define R_MAIL_RATE    "450 4.7.1 Error: too much mail from %s"
#define R_BLOCKED      "554 5.7.1 Service unavailable; client [%s] blocked using %s"

struct cmd {
	const char *name;
	uint8_t len;
	void (*fn)(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out);
};

static void append(struct smtp_out *out, const char *p, size_t n)
{
	if (n > out->cap - out->len)
		n = out->cap - out->len; /* cannot happen: see SMTP_OUT_RESERVE */
	memcpy(out->buf + out->len, p, n);
	out->len += n;
}

static void reply(struct smtp_out *out, const char *text)
{
	append(out, text, strlen(text));
	append(out, "\r\n", 2);
}

static void replyf(struct smtp_out *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void replyf(struct smtp_out *out, const char *fmt, ...)
{
	char line[REPLY_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	append(out, line, (size_t)n);
	append(out, "\r\n", 2);
}

static const char *host(const struct smtp_session *s)
{
	return s->conf->cfg->myhostname;
}

static const char *client(const struct smtp_session *s)
{
	return s->client ? s->client : "";
}

/* Ends the session with 421 (already-written replies go first). */
static void close_421(struct smtp_session *s, struct smtp_out *out, const char *code,
		      const char *text);
static void txn_reset(struct smtp_session *s, bool tell_host);

/* Counts a client-caused error (its reply is out already); the last one
 * ends the session. */
static void count_error(struct smtp_session *s, struct smtp_out *out)
{
	if (++s->errors >= s->conf->cfg->error_limit)
		close_421(s, out, "4.7.0", "Error: too many errors");
}

/* Every client-caused error goes through here. */
static void error(struct smtp_session *s, struct smtp_out *out, const char *text)
{
	reply(out, text);
	count_error(s, out);
}

/* After the reply to a command that moves no mail (NOOP, VRFY, RSET, HELP,
 * HELO, EHLO): past junk_command_limit of them since the last message
 * queued, each also counts as an error (as Postfix's
 * smtpd_junk_command_limit), so a client that never sends mail is cut off. */
static void junk(struct smtp_session *s, struct smtp_out *out)
{
	unsigned limit = s->conf->cfg->junk_command_limit;
	if (limit == 0)
		return;
	if (s->junk < limit)
		s->junk++;
	else
		count_error(s, out);
}

/* Drops the transaction. Calls the abort hook unless the host already knows. */
static void txn_reset(struct smtp_session *s, bool tell_host)
{
	if (tell_host && (s->flags & F_MAIL) && !(s->flags & F_DEAD))
		s->hooks->abort(s->ctx);
	s->flags &= ~(F_MAIL | F_RCPT_TRY | F_CONTENT | F_DEAD | F_OVERSIZE | F_BDAT_LAST);
	s->nrcpt = 0;
	s->overshoot = 0;
	s->env_flags = 0;
	s->body_bytes = 0;
	s->bdat_left = 0;
	s->bdat_chunk = 0;
	s->bdat_reply = BDAT_OK;
}

static void close_421(struct smtp_session *s, struct smtp_out *out, const char *code,
		      const char *text)
{
	replyf(out, "421 %s %s %s", code, host(s), text);
	/* A message with the host (WAIT) is the host's to finish: no abort. */
	txn_reset(s, s->state != SMTP_S_WAIT);
	s->state = SMTP_S_CLOSED;
}

static const char *verdict_reply(enum smtp_verdict v)
{
	switch (v) {
	case SMTP_V_NOSPACE:
		return R_NOSPACE;
	case SMTP_V_BUSY:
		return R_BUSY;
	default:
		return R_TEMPFAIL;
	}
}

void smtp_conf_init(struct smtp_conf *conf, const struct config *cfg, bool starttls)
{
	conf->cfg = cfg;
	conf->starttls = starttls;
	int n = snprintf(conf->greeting, sizeof(conf->greeting), "220 %s ESMTP mxring\r\n",
			 cfg->myhostname);
	conf->greeting_len = (size_t)n;
	for (int tls = 0; tls < 2; tls++) {
		char *p = tls ? conf->ehlo_tls : conf->ehlo;
		n = snprintf(p, REPLY_MAX,
			     "250-%s\r\n250-PIPELINING\r\n250-SIZE %" PRIu64 "\r\n250-8BITMIME\r\n"
			     "250-SMTPUTF8\r\n250-CHUNKING\r\n%s250 ENHANCEDSTATUSCODES\r\n",
			     cfg->myhostname, cfg->message_size_limit,
			     starttls && !tls ? "250-STARTTLS\r\n" : "");
		*(tls ? &conf->ehlo_tls_len : &conf->ehlo_len) = (size_t)n;
	}
}

void smtp_init(struct smtp_session *s, const struct smtp_conf *conf, const struct smtp_hooks *hooks,
	       void *ctx)
{
	memset(s, 0, sizeof(*s));
	s->conf = conf;
	s->hooks = hooks;
	s->ctx = ctx;
	s->state = SMTP_S_INIT;
}

void smtp_greet(struct smtp_session *s, struct smtp_out *out)
{
	append(out, s->conf->greeting, s->conf->greeting_len);
	s->state = SMTP_S_CMD;
}

/* ASCII case-insensitive prefix match. */
static bool prefix(const char *p, size_t len, const char *word)
{
	size_t n = strlen(word);
	if (len < n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 32);
		if (c != word[i])
			return false;
	}
	return true;
}

static size_t skip_spaces(const char *p, size_t len, size_t i)
{
	while (i < len && p[i] == ' ')
		i++;
	return i;
}

static void cmd_helo_common(struct smtp_session *s, const char *arg, size_t len,
			    struct smtp_out *out, bool esmtp)
{
	size_t i = skip_spaces(arg, len, 0);
	size_t end = len;
	while (end > i && arg[end - 1] == ' ')
		end--;
	if (i == end) {
		error(s, out,
		      esmtp ? "501 5.5.4 Syntax: EHLO hostname"
			    : "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	txn_reset(s, true);
	size_t n = end - i > HELO_MAX ? HELO_MAX : end - i;
	enum smtp_verdict v = s->hooks->helo(s->ctx, arg + i, n, esmtp);
	if (v != SMTP_V_OK) {
		reply(out, verdict_reply(v));
		return;
	}
	s->flags |= F_HELO;
	if (esmtp) {
		s->flags |= F_ESMTP;
		if (s->flags & F_TLS)
			append(out, s->conf->ehlo_tls, s->conf->ehlo_tls_len);
		else
			append(out, s->conf->ehlo, s->conf->ehlo_len);
	} else {
		s->flags &= ~F_ESMTP;
		replyf(out, "250 %s", host(s));
	}
	junk(s, out);
}

static void cmd_ehlo(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	cmd_helo_common(s, arg, len, out, true);
}

static void cmd_helo(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	cmd_helo_common(s, arg, len, out, false);
}

/* Copies a parameter name for a 555 reply: printable ASCII only, cut. */
static void param_name(char *dst, size_t cap, const char *p, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len && p[i] != '=' && n + 1 < cap && n < 64; i++)
		dst[n++] = p[i] > ' ' && p[i] < 0x7f ? p[i] : '?';
	dst[n] = 0;
}

/* 555 for an unknown MAIL/RCPT parameter (RFC 5321 4.1.1.11). */
static void unsupported(struct smtp_session *s, struct smtp_out *out, const char *p, size_t len)
{
	char name[80], text[REPLY_MAX];
	param_name(name, sizeof(name), p, len);
	snprintf(text, sizeof(text), "555 5.5.4 Unsupported option: %s", name);
	error(s, out, text);
}

/* Parses MAIL parameters (RFC 5321 4.1.2 Mail-parameters). 0 or an error reply written. */
static int mail_params(struct smtp_session *s, const char *p, size_t len, uint32_t *flags,
		       struct smtp_out *out)
{
	size_t i = 0;
	while ((i = skip_spaces(p, len, i)) < len) {
		size_t j = i;
		while (j < len && p[j] != ' ')
			j++;
		const char *t = p + i;
		size_t n = j - i;
		if (prefix(t, n, "SIZE=") && n > 5 && n <= 5 + 20) {
			uint64_t v = 0;
			for (size_t k = 5; k < n; k++) {
				if (t[k] < '0' || t[k] > '9' || v > (UINT64_MAX - 9) / 10)
					goto bad;
				v = v * 10 + (uint64_t)(t[k] - '0');
			}
			if (v > s->conf->cfg->message_size_limit) {
				error(s, out, R_SIZE);
				return -1;
			}
		} else if (n == 13 && prefix(t, n, "BODY=8BITMIME")) {
			*flags |= ENV_8BITMIME;
		} else if (n == 9 && prefix(t, n, "BODY=7BIT")) {
			*flags &= ~ENV_8BITMIME;
		} else if (n == 8 && prefix(t, n, "SMTPUTF8")) {
			*flags |= ENV_SMTPUTF8;
		} else {
		bad:;
			unsupported(s, out, t, n);
			return -1;
		}
		i = j;
	}
	return 0;
}

static void cmd_mail(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	if (!(s->flags & F_HELO)) {
		error(s, out, R_NEED_HELO);
		return;
	}
	if (s->flags & F_MAIL) {
		error(s, out, R_NESTED);
		return;
	}
	if (!prefix(arg, len, "FROM:")) {
		error(s, out, R_MAIL_SYNTAX);
		return;
	}
	struct addr a;
	size_t end;
	enum addr_status st = addr_parse(arg + 5, len - 5, true, true, &a, &end);
	if (st != ADDR_OK) {
		error(s, out, R_BAD_SENDER);
		return;
	}
	uint32_t flags = s->flags & F_ESMTP ? ENV_ESMTP : 0;
	if (end < len - 5 && arg[5 + end] != ' ') {
		error(s, out, R_BAD_SENDER);
		return;
	}
	if (mail_params(s, arg + 5 + end, len - 5 - end, &flags, out) != 0)
		return;
	if (a.has_8bit && !(flags & ENV_SMTPUTF8)) {
		error(s, out, R_NEED_UTF8);
		return;
	}
	enum smtp_verdict v = s->hooks->mail(s->ctx, &a, flags);
	if (v == SMTP_V_RATE) {
		replyf(out, R_MAIL_RATE, client(s));
		count_error(s, out);
		return;
	}
	if (v != SMTP_V_OK) {
		reply(out, verdict_reply(v));
		return;
	}
	s->flags |= F_MAIL;
	s->env_flags = flags;
	s->nrcpt = 0;
	reply(out, R_MAIL_OK);
}

static void cmd_rcpt(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	if (!(s->flags & F_MAIL)) {
		error(s, out, R_NEED_MAIL);
		return;
	}
	if (s->flags & F_CONTENT) { /* the envelope may be with a writer already */
		error(s, out, R_RCPT_BDAT);
		return;
	}
	if (!prefix(arg, len, "TO:")) {
		error(s, out, R_RCPT_SYNTAX);
		return;
	}
	s->flags |= F_RCPT_TRY;
	struct addr a;
	size_t end;
	enum addr_status st = addr_parse(arg + 3, len - 3, false, true, &a, &end);
	if (st != ADDR_OK) {
		error(s, out, R_BAD_RCPT);
		return;
	}
	size_t i = skip_spaces(arg + 3, len - 3, end);
	if (i < len - 3) {
		if (end == i) { /* junk glued to the path */
			error(s, out, R_BAD_RCPT);
			return;
		}
		unsupported(s, out, arg + 3 + i, len - 3 - i);
		return;
	}
	if (a.has_8bit && !(s->env_flags & ENV_SMTPUTF8)) {
		error(s, out, R_NEED_UTF8);
		return;
	}
	if (!addr_accepted(s->conf->cfg, &a)) {
		error(s, out, R_RELAY);
		return;
	}
	if (s->nrcpt >= s->conf->cfg->recipient_limit) {
		if (s->overshoot < s->conf->cfg->recipient_overshoot_limit) {
			s->overshoot++;
			reply(out, R_RCPT_MAX);
			return;
		}
		error(s, out, R_RCPT_MAX);
		return;
	}
	enum smtp_verdict v = s->hooks->rcpt(s->ctx, &a);
	if (v == SMTP_V_UNKNOWN) {
		/* As Postfix's relay_recipient_maps: the mailbox as the client wrote it. */
		replyf(out, R_USER_UNKNOWN, (int)a.len, a.mailbox);
		count_error(s, out);
		return;
	}
	if (v != SMTP_V_OK) {
		reply(out, verdict_reply(v));
		return;
	}
	s->nrcpt++;
	reply(out, R_RCPT_OK);
}

/* The checks DATA and the first BDAT share. NULL = the transaction may take content. */
static const char *content_check(const struct smtp_session *s)
{
	if (!(s->flags & F_MAIL))
		return R_NEED_MAIL;
	if (s->nrcpt == 0)
		return s->flags & F_RCPT_TRY ? R_NO_RCPT : R_NEED_RCPT;
	return NULL;
}

static void cmd_data(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	(void)arg;
	if (len != 0) {
		error(s, out, "501 5.5.4 Syntax: DATA");
		return;
	}
	const char *e = content_check(s);
	if (e) {
		error(s, out, e);
		return;
	}
	if (s->flags & F_CONTENT) {
		error(s, out, R_DATA_BDAT);
		return;
	}
	enum smtp_verdict v = s->hooks->data_start(s->ctx);
	if (v != SMTP_V_OK) {
		txn_reset(s, false);
		reply(out, verdict_reply(v));
		return;
	}
	s->flags |= F_CONTENT;
	s->body_bytes = 0;
	body_init(&s->dec);
	s->state = SMTP_S_DATA;
	reply(out, R_DATA);
}

static void cmd_bdat(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	size_t i = 0;
	uint64_t n = 0;
	while (i < len && arg[i] >= '0' && arg[i] <= '9' && i < 20) {
		n = n * 10 + (uint64_t)(arg[i] - '0');
		i++;
	}
	size_t j = skip_spaces(arg, len, i);
	bool last = false;
	if (j < len && j > i && len - j == 4 && prefix(arg + j, 4, "LAST"))
		last = true, j = len;
	if (i == 0 || i == 20 || j != len) {
		error(s, out, R_BDAT_SYNTAX);
		return;
	}

	s->state = SMTP_S_BDAT;
	s->bdat_left = n;
	s->bdat_chunk = n;
	s->flags = last ? s->flags | F_BDAT_LAST : s->flags & ~F_BDAT_LAST;
	s->bdat_reply = BDAT_OK;
	if (!(s->flags & F_MAIL)) {
		s->bdat_reply = BDAT_NEED_MAIL;
	} else if (s->nrcpt == 0) {
		s->bdat_reply = s->flags & F_RCPT_TRY ? BDAT_NO_RCPT : BDAT_NEED_RCPT;
	} else if (!(s->flags & F_CONTENT)) {
		s->flags |= F_CONTENT;
		s->env_flags |= ENV_BDAT;
		s->body_bytes = 0;
		body_init(&s->dec);
		/* Refused: the host dropped the transaction; the chunk is read and dropped. */
		if (s->hooks->data_start(s->ctx) != SMTP_V_OK)
			s->flags |= F_DEAD;
	}
}

static void cmd_rset(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	(void)arg;
	if (len != 0) {
		error(s, out, "501 5.5.4 Syntax: RSET");
		return;
	}
	txn_reset(s, true);
	reply(out, R_OK);
	junk(s, out);
}

static void cmd_noop(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	(void)arg, (void)len;
	reply(out, R_OK);
	junk(s, out);
}

static void cmd_quit(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	(void)arg, (void)len;
	reply(out, R_BYE);
	txn_reset(s, true);
	s->state = SMTP_S_CLOSED;
}

static void cmd_vrfy(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	if (skip_spaces(arg, len, 0) == len) {
		error(s, out, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	reply(out, R_VRFY);
	junk(s, out);
}

static void cmd_help(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	(void)arg, (void)len;
	replyf(out, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP%s",
	       s->conf->starttls ? " STARTTLS" : "");
	junk(s, out);
}

static void cmd_starttls(struct smtp_session *s, const char *arg, size_t len, struct smtp_out *out)
{
	(void)arg;
	if (!s->conf->starttls) {
		error(s, out, R_NO_TLS);
		return;
	}
	if (s->flags & F_TLS) {
		error(s, out, R_TLS_ACTIVE);
		return;
	}
	if (len != 0) {
		error(s, out, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (!(s->flags & F_HELO)) {
		error(s, out, R_NEED_HELO);
		return;
	}
	if (s->flags & F_MAIL) {
		error(s, out, R_TLS_TXN);
		return;
	}
	reply(out, R_TLS_GO);
	s->state = SMTP_S_STARTTLS;
}

static const struct cmd commands[] = {
    {"EHLO", 4, cmd_ehlo}, {"HELO", 4, cmd_helo}, {"MAIL", 4, cmd_mail},
    {"RCPT", 4, cmd_rcpt}, {"DATA", 4, cmd_data}, {"BDAT", 4, cmd_bdat},
    {"RSET", 4, cmd_rset}, {"NOOP", 4, cmd_noop}, {"QUIT", 4, cmd_quit},
    {"VRFY", 4, cmd_vrfy}, {"HELP", 4, cmd_help}, {"STARTTLS", 8, cmd_starttls},
};

/* One complete command line, CR/LF stripped. */
static void command(struct smtp_session *s, const char *line, size_t len, struct smtp_out *out)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			error(s, out, R_BAD_CHAR);
			return;
		}
	}
	size_t v = 0;
	while (v < len && line[v] != ' ')
		v++;
	if (s->blocked && !(v == 4 && prefix(line, v, "QUIT"))) {
		/* Listed by a DNS list (postscreen's answer): nothing is served. */
		replyf(out, R_BLOCKED, client(s), s->blocked);
		txn_reset(s, true);
		s->state = SMTP_S_CLOSED;
		return;
	}
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		const struct cmd *c = &commands[k];
		if (v != c->len || !prefix(line, v, c->name))
			continue;
		/* One space separates verb and argument; MAIL/RCPT take "FROM:" glued. */
		size_t a = v < len ? v + 1 : v;
		c->fn(s, line + a, len - a, out);
		return;
	}
	error(s, out, R_UNKNOWN);
}

/* SMTP_S_CMD: one line, or a partial one. Returns bytes used (0 = need more). */
static size_t feed_cmd(struct smtp_session *s, const uint8_t *in, size_t len, struct smtp_out *out)
{
	size_t limit = s->conf->cfg->command_line_limit;
	if (s->flags & F_DISCARD) {
		const uint8_t *lf = memchr(in, '\n', len);
		if (!lf)
			return len;
		s->flags &= ~F_DISCARD;
		s->lines++;
		error(s, out, R_TOO_LONG);
		return (size_t)(lf - in) + 1;
	}
	const uint8_t *lf = memchr(in, '\n', len < limit ? len : limit);
	if (!lf) {
		if (len < limit)
			return 0;
		s->flags |= F_DISCARD;
		return limit;
	}
	size_t n = (size_t)(lf - in);
	size_t used = n + 1;
	if (n > 0 && in[n - 1] == '\r')
		n--;
	s->lines++;
	command(s, (const char *)in, n, out);
	return used;
}

/* The engine's side of the body hook: counts, enforces the size limit. */
static int emit(void *ctx, const uint8_t *p, size_t len)
{
	struct smtp_session *s = ctx;
	s->body_bytes += len;
	if (s->flags & F_DEAD)
		return 0;
	if (s->body_bytes > s->conf->cfg->message_size_limit) {
		s->hooks->abort(s->ctx);
		s->flags |= F_DEAD | F_OVERSIZE;
		return 0;
	}
	if (s->hooks->body(s->ctx, p, len) != 0) {
		s->hooks->abort(s->ctx);
		s->flags |= F_DEAD;
	}
	return 0;
}

/* End of content (DATA terminator or BDAT LAST). */
static void content_end(struct smtp_session *s, struct smtp_out *out)
{
	s->state = SMTP_S_CMD;
	if (s->flags & F_DEAD) {
		reply(out, s->flags & F_OVERSIZE ? R_TOO_BIG : R_TEMPFAIL);
		txn_reset(s, false);
		return;
	}
	if (s->dec.bare_lf && s->conf->cfg->bare_newline == BARE_NEWLINE_REJECT) {
		txn_reset(s, true);
		error(s, out, R_BARE_LF);
		return;
	}
	enum smtp_verdict v = s->hooks->data_end(s->ctx);
	if (v == SMTP_V_DEFER) {
		s->state = SMTP_S_WAIT;
		return;
	}
	reply(out, verdict_reply(v));
	txn_reset(s, false);
}

static size_t feed_data(struct smtp_session *s, const uint8_t *in, size_t len, struct smtp_out *out)
{
	bool done;
	size_t n = body_data(&s->dec, in, len, emit, s, &done);
	if (done)
		content_end(s, out);
	return n;
}

/* End of one BDAT chunk. */
static void bdat_end(struct smtp_session *s, struct smtp_out *out)
{
	static const char *const why[] = {
	    [BDAT_NEED_MAIL] = R_NEED_MAIL,
	    [BDAT_NEED_RCPT] = R_NEED_RCPT,
	    [BDAT_NO_RCPT] = R_NO_RCPT,
	};
	s->state = SMTP_S_CMD;
	if (s->bdat_reply != BDAT_OK) {
		error(s, out, why[s->bdat_reply]);
		return;
	}
	if (s->flags & F_DEAD) {
		/* Failed (size, storage): answer at the end of this chunk, drop the transaction. */
		reply(out, s->flags & F_OVERSIZE ? R_TOO_BIG : R_TEMPFAIL);
		txn_reset(s, false);
		return;
	}
	if (s->flags & F_BDAT_LAST) {
		content_end(s, out);
		return;
	}
	replyf(out, "250 2.0.0 Ok: %" PRIu64 " octets received", s->bdat_chunk);
}

static size_t feed_bdat(struct smtp_session *s, const uint8_t *in, size_t len, struct smtp_out *out)
{
	size_t n = len < s->bdat_left ? len : (size_t)s->bdat_left;
	if (s->bdat_reply == BDAT_OK)
		(void)body_bdat(&s->dec, in, n, emit, s);
	s->bdat_left -= n;
	if (s->bdat_left == 0)
		bdat_end(s, out);
	return n;
}

enum smtp_result smtp_feed(struct smtp_session *s, const uint8_t *in, size_t len, size_t *used,
			   struct smtp_out *out)
{
	size_t pos = 0;
	for (;;) {
		if (s->state == SMTP_S_BDAT && s->bdat_left == 0) {
			bdat_end(s, out); /* "BDAT 0 [LAST]" */
			continue;
		}
		if (s->state == SMTP_S_WAIT)
			break;
		if (s->state != SMTP_S_CMD && s->state != SMTP_S_DATA && s->state != SMTP_S_BDAT)
			break;
		if (pos == len)
			break;
		if (out->cap - out->len < SMTP_OUT_RESERVE) {
			*used = pos;
			return SMTP_BLOCKED;
		}
		size_t n;
		if (s->state == SMTP_S_CMD) {
			n = feed_cmd(s, in + pos, len - pos, out);
			if (n == 0)
				break; /* partial line */
		} else if (s->state == SMTP_S_DATA) {
			n = feed_data(s, in + pos, len - pos, out);
		} else {
			n = feed_bdat(s, in + pos, len - pos, out);
		}
		pos += n;
	}
	*used = pos;
	switch (s->state) {
	case SMTP_S_WAIT:
		return SMTP_BLOCKED;
	case SMTP_S_STARTTLS:
		return SMTP_STARTTLS;
	case SMTP_S_CLOSED:
	case SMTP_S_INIT:
		return SMTP_CLOSE;
	default:
		return SMTP_MORE;
	}
}

void smtp_resume(struct smtp_session *s, enum smtp_verdict v, const char *qid, struct smtp_out *out)
{
	if (s->state != SMTP_S_WAIT)
		return;
	if (v == SMTP_V_OK) {
		replyf(out, "250 2.0.0 Ok: queued as %s", qid);
		s->junk = 0;
	} else
		reply(out, verdict_reply(v));
	s->state = SMTP_S_CMD;
	txn_reset(s, false);
}

void smtp_tls_started(struct smtp_session *s)
{
	txn_reset(s, true);
	s->flags = F_TLS;
	s->state = SMTP_S_CMD;
}

/* The replies of smtp_end, by enum smtp_end: code, enhanced code, text. */
static const struct {
	const char *code;
	const char *text;
} end_replies[] = {
    [SMTP_END_TIMEOUT] = {"421 4.4.2", "Error: timeout exceeded"},
    [SMTP_END_SHUTDOWN] = {"421 4.3.2", "Service shutting down"},
    [SMTP_END_CONN_LIMIT] = {"421 4.7.0", "Error: too many connections"},
    [SMTP_END_IP_LIMIT] = {"421 4.7.0", "Error: too many connections from your address"},
    [SMTP_END_PROXY] = {"421 4.7.0", "Error: bad or missing PROXY protocol header"},
    [SMTP_END_PREGREET] = {"554 5.5.1", "Error: talking before the greeting"},
    [SMTP_END_CONN_RATE] = {"421 4.7.0", "Error: too many connections from"},
};
static_assert(sizeof(end_replies) / sizeof(end_replies[0]) == SMTP_END_SILENT,
	      "a reply for every end but the silent one");

size_t smtp_end_reply(const struct smtp_conf *conf, enum smtp_end why, const char *client,
		      char *buf, size_t cap)
{
	if (why >= SMTP_END_SILENT || cap == 0)
		return 0;
	bool named = why == SMTP_END_CONN_RATE;
	int n = snprintf(buf, cap, "%s %s %s%s%s\r\n", end_replies[why].code, conf->cfg->myhostname,
			 end_replies[why].text, named ? " " : "", named && client ? client : "");
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : 0;
}

void smtp_end(struct smtp_session *s, enum smtp_end why, struct smtp_out *out)
{
	if (why < SMTP_END_SILENT)
		replyf(out, "%s %s %s%s%s", end_replies[why].code, host(s), end_replies[why].text,
		       why == SMTP_END_CONN_RATE ? " " : "",
		       why == SMTP_END_CONN_RATE ? client(s) : "");
	/* A message with the host (WAIT) is the host's to finish: no abort. */
	txn_reset(s, s->state != SMTP_S_WAIT);
	s->state = SMTP_S_CLOSED;
}

void smtp_close(struct smtp_session *s)
{
	if (s->state != SMTP_S_WAIT)
		txn_reset(s, true);
	s->state = SMTP_S_CLOSED;
}

bool smtp_in_transaction(const struct smtp_session *s)
{
	return (s->flags & F_MAIL) || s->state == SMTP_S_WAIT || s->state == SMTP_S_DATA ||
	       s->state == SMTP_S_BDAT;
}
