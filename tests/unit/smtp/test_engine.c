/*
 * test_engine.c - engine properties that transcripts do not show well.
 *
 *  - zero copy: a message of N body bytes fed in K pieces reaches the body
 *    hook as runs that lie inside the piece being fed and cover exactly the
 *    body's bytes of the input, in order, none copied;
 *  - messages whose terminator meets a 16 KiB receive-buffer boundary at
 *    every position, replayed through the transcript runner;
 *  - smtp_end (timeout, shutdown, the refusals), smtp_close while waiting for the host, and
 *    smtp_feed with too little room in the output buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "runner.h"
#include "smtp.h"

/* ---- a minimal host for direct calls ---- */

struct mini {
	struct config cfg;
	struct smtp_conf conf;
	struct smtp_session s;
	uint8_t outbuf[8192];
	struct smtp_out out;
	/* body run bookkeeping for the zero-copy test */
	const uint8_t *piece;
	size_t piece_len;
	uint64_t piece_abs; /* stream offset of piece[0] */
	uint64_t next_abs;  /* stream offset the next run must start at */
	uint64_t skip_dots; /* stuffed dots skipped so far */
	uint64_t body_bytes;
	unsigned runs, static_runs, aborts, data_ends;
	const char *bad;
	enum smtp_verdict data_end_verdict;
	enum smtp_verdict mail_verdict, rcpt_verdict; /* OK unless a case sets them */
};

static enum smtp_verdict m_helo(void *ctx, const char *name, size_t len, bool esmtp)
{
	(void)ctx, (void)name, (void)len, (void)esmtp;
	return SMTP_V_OK;
}

static enum smtp_verdict m_mail(void *ctx, const struct addr *a, uint32_t f)
{
	struct mini *m = ctx;
	(void)a, (void)f;
	return m->mail_verdict;
}

static enum smtp_verdict m_rcpt(void *ctx, const struct addr *a)
{
	struct mini *m = ctx;
	(void)a;
	return m->rcpt_verdict;
}

static enum smtp_verdict m_data_start(void *ctx)
{
	(void)ctx;
	return SMTP_V_OK;
}

static int m_body(void *ctx, const uint8_t *p, size_t len)
{
	struct mini *m = ctx;
	m->runs++;
	m->body_bytes += len;
	if (body_is_static(p)) {
		m->static_runs++;
		return 0;
	}
	uintptr_t a = (uintptr_t)p, in = (uintptr_t)m->piece;
	if (!m->piece || a < in || len > m->piece_len || a - in > m->piece_len - len) {
		m->bad = m->bad ? m->bad : "run outside the current input";
		return 0;
	}
	uint64_t abs = m->piece_abs + (a - in);
	/* Runs follow each other in the input; only a stuffed dot may be skipped. */
	if (abs != m->next_abs) {
		if (abs == m->next_abs + 1) {
			m->skip_dots++;
		} else if (!m->bad) {
			m->bad = "runs do not cover the input";
		}
	}
	m->next_abs = abs + len;
	return 0;
}

static enum smtp_verdict m_data_end(void *ctx)
{
	struct mini *m = ctx;
	m->data_ends++;
	return m->data_end_verdict;
}

static void m_abort(void *ctx)
{
	struct mini *m = ctx;
	m->aborts++;
}

static const struct smtp_hooks mini_hooks = {
    .helo = m_helo,
    .mail = m_mail,
    .rcpt = m_rcpt,
    .data_start = m_data_start,
    .body = m_body,
    .data_end = m_data_end,
    .abort = m_abort,
};

static void mini_init(struct mini *m)
{
	memset(m, 0, sizeof(*m));
	config_defaults(&m->cfg);
	assert_int_equal(config_set(&m->cfg, "myhostname=mx.test", stderr), 0);
	assert_int_equal(config_set(&m->cfg, "accept_domains=example.com", stderr), 0);
	smtp_conf_init(&m->conf, &m->cfg, false);
	m->out.buf = m->outbuf;
	m->out.cap = sizeof(m->outbuf);
	m->data_end_verdict = SMTP_V_DEFER;
	smtp_init(&m->s, &m->conf, &mini_hooks, m);
	smtp_greet(&m->s, &m->out);
}

static void mini_free(struct mini *m)
{
	config_free(&m->cfg);
}

/* Feeds a whole string that must be used up; returns the result. */
static enum smtp_result mini_feed(struct mini *m, const char *str)
{
	size_t len = strlen(str), used = 0;
	uint8_t *b = malloc(len ? len : 1);
	memcpy(b, str, len);
	m->piece = b;
	m->piece_len = len;
	enum smtp_result r = smtp_feed(&m->s, b, len, &used, &m->out);
	m->piece = NULL;
	free(b);
	assert_int_equal(used, len);
	return r;
}

static bool out_has(const struct mini *m, const char *text)
{
	size_t n = strlen(text);
	for (size_t i = 0; i + n <= m->out.len; i++)
		if (memcmp(m->out.buf + i, text, n) == 0)
			return true;
	return false;
}

/* ---- zero copy ---- */

/*
 * A body of n >= 2 bytes ending in CRLF: lines of letters; when dots is set,
 * some lines start with a stuffed dot ("..x" -> ".x"), counted in *ndots.
 */
static void make_body(uint8_t *b, size_t n, bool dots, size_t *ndots)
{
	size_t i = 0, col = 0;
	*ndots = 0;
	while (i < n - 2) {
		if (col == 0 && dots && (i / 7) % 5 == 0 && i + 2 < n - 2) {
			b[i] = '.';
			b[i + 1] = '.';
			i += 2;
			(*ndots)++;
			col = 2;
		} else if (col >= 70 && i + 2 <= n - 2) {
			b[i] = '\r';
			b[i + 1] = '\n';
			i += 2;
			col = 0;
		} else {
			b[i] = (uint8_t)('a' + (i * 7) % 26);
			i++;
			col++;
		}
	}
	b[n - 2] = '\r';
	b[n - 1] = '\n';
}

static void zero_copy_case(size_t n, size_t k, bool dots)
{
	struct mini m;
	mini_init(&m);
	assert_int_equal(mini_feed(&m, "HELO c.example\r\nMAIL FROM:<a@c.example>\r\n"
				       "RCPT TO:<b@example.com>\r\nDATA\r\n"),
			 SMTP_MORE);

	/* The body ends in CRLF so that ".\r\n" follows at a line start. */
	size_t ndots = 0, end = n, total = n + 3;
	uint8_t *stream = malloc(total);
	if (n > 0)
		make_body(stream, n, dots, &ndots);
	memcpy(stream + end, ".\r\n", 3);

	m.next_abs = 0;
	size_t piece = (total + k - 1) / k;
	for (size_t off = 0; off < total;) {
		size_t len = total - off < piece ? total - off : piece;
		uint8_t *b = malloc(len);
		memcpy(b, stream + off, len);
		m.piece = b;
		m.piece_len = len;
		m.piece_abs = off;
		size_t used = 0;
		enum smtp_result r = smtp_feed(&m.s, b, len, &used, &m.out);
		m.piece = NULL;
		free(b);
		assert_int_equal(used, len);
		off += len;
		assert_int_equal(r, off == total ? SMTP_BLOCKED : SMTP_MORE);
	}
	if (m.bad)
		fail_msg("n %zu k %zu dots %d: %s", n, k, dots, m.bad);
	assert_int_equal(m.data_ends, 1);
	assert_int_equal(m.static_runs, 0);
	/* Exactly the body's bytes of the input, less the stuffed dots. */
	assert_int_equal(m.body_bytes, end - ndots);
	assert_int_equal(m.skip_dots, ndots);
	assert_int_equal(m.next_abs, end);
	/* A run is cut only at a piece boundary or a dropped dot. */
	assert_true(m.runs <= k + ndots + 1);
	smtp_resume(&m.s, SMTP_V_OK, "Q000000000000001", &m.out);
	assert_true(out_has(&m, "250 2.0.0 Ok: queued as Q000000000000001\r\n"));
	free(stream);
	mini_free(&m);
}

static void test_zero_copy(void **state)
{
	(void)state;
	static const size_t sizes[] = {0, 2, 3, 100, 1000, 65536, 1 << 20};
	static const size_t pieces[] = {1, 2, 3, 7, 64, 1000};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (size_t j = 0; j < sizeof(pieces) / sizeof(pieces[0]); j++) {
			if (pieces[j] > sizes[i] + 5 || (sizes[i] > 65536 && pieces[j] < 64))
				continue;
			zero_copy_case(sizes[i], pieces[j], false);
			zero_copy_case(sizes[i], pieces[j], true);
		}
	}
}

/* ---- the terminator at a receive-buffer boundary ---- */

#define RECV_BUF 16384

static void add_line(struct tlines *l, char kind, const char *s)
{
	tlines_add(l, kind, s, strlen(s));
}

/*
 * The body is sized so that the buffer boundary falls `at` bytes into
 * "\r\n.\r\n" (0: the body's last CRLF starts the next buffer; 5: the
 * terminator ends the buffer exactly). Commands and body are fed in
 * RECV_BUF pieces, and a second message follows in the same buffers.
 */
static void boundary_case(size_t at)
{
	static const char head[] = "HELO c.example\r\nMAIL FROM:<a@c.example>\r\n"
				   "RCPT TO:<b@example.com>\r\nDATA\r\n";
	static const char tail[] = "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.com>\r\n"
				   "DATA\r\nsecond\r\n.\r\nQUIT\r\n";
	size_t hlen = sizeof(head) - 1;
	/* head + body (ends in CRLF) + ".\r\n": the CRLF starts at RECV_BUF - at. */
	size_t body_len = 2 * RECV_BUF - at - hlen + 2;
	struct transcript t;
	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "boundary at %zu", at);
	size_t total = hlen + body_len + 3 + sizeof(tail) - 1;
	uint8_t *in = malloc(total);
	memcpy(in, head, hlen);
	uint8_t *body = in + hlen;
	for (size_t i = 0; i < body_len; i++)
		body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (uint8_t)('A' + i % 26);
	body[body_len - 2] = '\r';
	body[body_len - 1] = '\n';
	memcpy(body + body_len, ".\r\n", 3);
	memcpy(body + body_len + 3, tail, sizeof(tail) - 1);
	assert_int_equal(hlen + body_len - 2 + at, 2 * RECV_BUF);
	t.phase[0].in = in;
	t.phase[0].len = total;
	t.nphase = 1;

	struct tlines *e = &t.expect;
	add_line(e, 'S', "220 mx.test ESMTP mxring");
	add_line(e, 'E', "helo c.example");
	add_line(e, 'S', "250 mx.test");
	add_line(e, 'E', "mail <a@c.example> flags=none");
	add_line(e, 'S', "250 2.1.0 Ok");
	add_line(e, 'E', "rcpt <b@example.com>");
	add_line(e, 'S', "250 2.1.5 Ok");
	add_line(e, 'E', "data_start");
	add_line(e, 'S', "354 End data with <CR><LF>.<CR><LF>");
	uint8_t *ev = malloc(5 + body_len);
	memcpy(ev, "body ", 5);
	memcpy(ev + 5, body, body_len);
	tlines_add(e, 'E', ev, 5 + body_len);
	free(ev);
	add_line(e, 'E', "data_end");
	add_line(e, 'S', "250 2.0.0 Ok: queued as Q000000000000001");
	add_line(e, 'E', "mail <a@c.example> flags=none");
	add_line(e, 'S', "250 2.1.0 Ok");
	add_line(e, 'E', "rcpt <b@example.com>");
	add_line(e, 'S', "250 2.1.5 Ok");
	add_line(e, 'E', "data_start");
	add_line(e, 'S', "354 End data with <CR><LF>.<CR><LF>");
	add_line(e, 'E', "body second\r\n");
	add_line(e, 'E', "data_end");
	add_line(e, 'S', "250 2.0.0 Ok: queued as Q000000000000002");
	add_line(e, 'S', "221 2.0.0 Bye");
	add_line(e, 'E', "closed");

	static const struct tplan plans[] = {
	    {.chunk = RECV_BUF, .cap = 65536},
	    {.chunk = RECV_BUF, .cap = SMTP_OUT_RESERVE},
	    {.chunk = RECV_BUF / 4, .cap = 65536},
	    {.chunk = 0, .cap = 65536},
	};
	for (size_t p = 0; p < sizeof(plans) / sizeof(plans[0]); p++) {
		struct tlines got = {0};
		struct tstats st = {0};
		char err[512];
		int rc = transcript_replay(&t, &plans[p], &got, &st, err, sizeof(err));
		if (rc != 0)
			fail_msg("%s, plan %zu: %s", t.name, p, err);
		assert_int_equal(got.n, e->n);
		for (size_t i = 0; i < got.n; i++) {
			assert_int_equal(got.v[i].kind, e->v[i].kind);
			assert_int_equal(got.v[i].len, e->v[i].len);
			assert_memory_equal(got.v[i].p, e->v[i].p, got.v[i].len);
		}
		tlines_free(&got);
	}
	transcript_free(&t);
}

static void test_terminator_at_buffer_boundary(void **state)
{
	(void)state;
	for (size_t at = 0; at <= 5; at++)
		boundary_case(at);
}

/* ---- calls outside smtp_feed ---- */

static void start_txn(struct mini *m)
{
	assert_int_equal(mini_feed(m, "HELO c.example\r\nMAIL FROM:<a@c.example>\r\n"
				      "RCPT TO:<b@example.com>\r\n"),
			 SMTP_MORE);
	m->out.len = 0;
}

static void test_timeout(void **state)
{
	(void)state;
	struct mini m;
	mini_init(&m);
	start_txn(&m);
	assert_int_equal(mini_feed(&m, "DATA\r\npart of a bo"), SMTP_MORE);
	m.out.len = 0;
	smtp_end(&m.s, SMTP_END_TIMEOUT, &m.out);
	assert_int_equal(m.out.len, strlen("421 4.4.2 mx.test Error: timeout exceeded\r\n"));
	assert_true(out_has(&m, "421 4.4.2 mx.test Error: timeout exceeded\r\n"));
	assert_int_equal(m.aborts, 1);
	/* Closed: nothing more is read, no second abort at close. */
	size_t used = 99;
	uint8_t b[] = "NOOP\r\n";
	assert_int_equal(smtp_feed(&m.s, b, 6, &used, &m.out), SMTP_CLOSE);
	assert_int_equal(used, 0);
	smtp_close(&m.s);
	assert_int_equal(m.aborts, 1);
	mini_free(&m);
}

static void test_shutdown(void **state)
{
	(void)state;
	struct mini m;
	mini_init(&m);
	m.out.len = 0;
	smtp_end(&m.s, SMTP_END_SHUTDOWN, &m.out);
	assert_int_equal(m.out.len, strlen("421 4.3.2 mx.test Service shutting down\r\n"));
	assert_true(out_has(&m, "421 4.3.2 mx.test Service shutting down\r\n"));
	assert_int_equal(m.aborts, 0); /* no transaction */
	mini_free(&m);
}

/* Every end of a session the server decides has its reply, with and
 * without a session; the silent one has none but still closes. */
static void test_end_replies(void **state)
{
	(void)state;
	static const struct {
		enum smtp_end why;
		const char *line;
	} t[] = {
	    {SMTP_END_TIMEOUT, "421 4.4.2 mx.test Error: timeout exceeded\r\n"},
	    {SMTP_END_SHUTDOWN, "421 4.3.2 mx.test Service shutting down\r\n"},
	    {SMTP_END_CONN_LIMIT, "421 4.7.0 mx.test Error: too many connections\r\n"},
	    {SMTP_END_IP_LIMIT,
	     "421 4.7.0 mx.test Error: too many connections from your address\r\n"},
	    {SMTP_END_PROXY, "421 4.7.0 mx.test Error: bad or missing PROXY protocol header\r\n"},
	    {SMTP_END_PREGREET, "554 5.5.1 mx.test Error: talking before the greeting\r\n"},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct mini m;
		mini_init(&m);
		m.out.len = 0;
		smtp_end(&m.s, t[i].why, &m.out);
		assert_int_equal(m.out.len, strlen(t[i].line));
		assert_true(out_has(&m, t[i].line));
		assert_int_equal(m.s.state, SMTP_S_CLOSED);
		char buf[REPLY_MAX];
		size_t n = smtp_end_reply(m.s.conf, t[i].why, NULL, buf, sizeof(buf));
		assert_int_equal(n, strlen(t[i].line));
		assert_memory_equal(buf, t[i].line, n);
		assert_int_equal(smtp_end_reply(m.s.conf, t[i].why, NULL, buf, 8),
				 0); /* too small */
		mini_free(&m);
	}
	struct mini m;
	mini_init(&m);
	start_txn(&m);
	m.out.len = 0;
	smtp_end(&m.s, SMTP_END_SILENT, NULL);
	assert_int_equal(m.out.len, 0);
	assert_int_equal(m.s.state, SMTP_S_CLOSED);
	assert_int_equal(m.aborts, 1);
	char buf[REPLY_MAX];
	assert_int_equal(smtp_end_reply(m.s.conf, SMTP_END_SILENT, NULL, buf, sizeof(buf)), 0);
	mini_free(&m);
}

/* Screening: an unknown recipient, the message rate, a client a DNS list
 * listed, and the connection rate refusal, each with its exact reply. */
static void test_screening_replies(void **state)
{
	(void)state;
	struct mini m;
	mini_init(&m);
	m.s.client = "192.0.2.1";
	assert_int_equal(config_set(&m.cfg, "error_limit=3", stderr), 0);
	mini_feed(&m, "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n");
	m.rcpt_verdict = SMTP_V_UNKNOWN;
	m.out.len = 0;
	mini_feed(&m, "RCPT TO:<Bob+x@Example.com>\r\n");
	assert_true(out_has(
	    &m, "550 5.1.1 <Bob+x@Example.com>: Recipient address rejected: User unknown\r\n"));
	assert_int_equal(m.s.errors, 1);
	assert_int_equal(m.s.nrcpt, 0);
	mini_feed(&m, "RCPT TO:<c@example.com>\r\n");
	/* The third error ends the session, as a dictionary attack should. */
	assert_int_equal(mini_feed(&m, "RCPT TO:<d@example.com>\r\n"), SMTP_CLOSE);
	assert_true(out_has(&m, "421 4.7.0 mx.test Error: too many errors\r\n"));
	mini_free(&m);

	mini_init(&m);
	m.s.client = "192.0.2.1";
	m.mail_verdict = SMTP_V_RATE;
	m.out.len = 0;
	mini_feed(&m, "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n");
	assert_true(out_has(&m, "450 4.7.1 Error: too much mail from 192.0.2.1\r\n"));
	assert_int_equal(m.s.errors, 1);
	m.out.len = 0;
	mini_feed(&m, "RCPT TO:<c@example.com>\r\n");
	assert_true(out_has(&m, "503 5.5.1 Error: need MAIL command\r\n"));
	mini_free(&m);

	mini_init(&m);
	m.s.client = "192.0.2.1";
	m.s.blocked = "bl.example";
	m.out.len = 0;
	/* The first command is answered 554 and nothing after it is read. */
	uint8_t two[] = "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n";
	size_t used = 0;
	assert_int_equal(smtp_feed(&m.s, two, sizeof(two) - 1, &used, &m.out), SMTP_CLOSE);
	assert_int_equal(used, strlen("EHLO c.example\r\n"));
	assert_int_equal((int)m.out.len,
			 (int)strlen("554 5.7.1 Service unavailable; client [192.0.2.1] blocked "
				     "using bl.example\r\n"));
	assert_true(out_has(&m, "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using "
				"bl.example\r\n"));
	mini_free(&m);

	mini_init(&m);
	m.s.blocked = "bl.example";
	m.out.len = 0;
	assert_int_equal(mini_feed(&m, "QUIT\r\n"), SMTP_CLOSE);
	assert_true(out_has(&m, "221 2.0.0 Bye\r\n"));
	mini_free(&m);

	mini_init(&m);
	m.s.client = "2001:db8::7";
	m.out.len = 0;
	smtp_end(&m.s, SMTP_END_CONN_RATE, &m.out);
	assert_true(
	    out_has(&m, "421 4.7.0 mx.test Error: too many connections from 2001:db8::7\r\n"));
	char buf[REPLY_MAX];
	size_t n = smtp_end_reply(m.s.conf, SMTP_END_CONN_RATE, "192.0.2.9", buf, sizeof(buf));
	const char *want = "421 4.7.0 mx.test Error: too many connections from 192.0.2.9\r\n";
	assert_int_equal(n, strlen(want));
	assert_memory_equal(buf, want, n);
	mini_free(&m);
}

/* While the host holds the message (after a deferred data_end), input waits. */
static void test_wait_state(void **state)
{
	(void)state;
	struct mini m;
	mini_init(&m);
	start_txn(&m);
	size_t used = 0;
	static const char in[] = "DATA\r\nhi\r\n.\r\nNOOP\r\n";
	uint8_t b[sizeof(in)];
	memcpy(b, in, sizeof(in));
	m.piece = b;
	m.piece_len = sizeof(in) - 1;
	assert_int_equal(smtp_feed(&m.s, b, sizeof(in) - 1, &used, &m.out), SMTP_BLOCKED);
	assert_int_equal(used, sizeof(in) - 1 - strlen("NOOP\r\n"));
	assert_int_equal(m.data_ends, 1);
	/* Fed again before the outcome: nothing is taken. */
	size_t used2 = 99;
	assert_int_equal(smtp_feed(&m.s, b + used, 6, &used2, &m.out), SMTP_BLOCKED);
	assert_int_equal(used2, 0);
	assert_false(out_has(&m, "250 2.0.0 Ok\r\n"));
	/* The peer goes away while the writer has the message: no abort. */
	smtp_close(&m.s);
	assert_int_equal(m.aborts, 0);
	mini_free(&m);
}

/* s.lines counts the command lines that ended (a host's command clock):
 * not part of a line, not content lines; an overlong line once, at its LF. */
static void test_lines(void **state)
{
	(void)state;
	struct mini m;
	mini_init(&m);
	uint32_t l0 = m.s.lines;
	size_t used = 99;
	uint8_t part[] = "NOOP\r\nNO";
	assert_int_equal(smtp_feed(&m.s, part, 8, &used, &m.out), SMTP_MORE);
	assert_int_equal(used, 6);
	assert_int_equal(m.s.lines, l0 + 1);
	uint8_t overlong[600];
	memset(overlong, 'x', sizeof(overlong));
	assert_int_equal(smtp_feed(&m.s, overlong, sizeof(overlong), &used, &m.out), SMTP_MORE);
	assert_int_equal(used, sizeof(overlong));
	assert_int_equal(m.s.lines, l0 + 1);
	m.out.len = 0;
	assert_int_equal(mini_feed(&m, "\r\n"), SMTP_MORE);
	assert_true(out_has(&m, "500 5.5.2 Error: line too long\r\n"));
	assert_int_equal(m.s.lines, l0 + 2);
	start_txn(&m);
	uint32_t l1 = m.s.lines;
	assert_int_equal(l1, l0 + 5); /* HELO, MAIL, RCPT */
	assert_int_equal(mini_feed(&m, "DATA\r\nline one\r\nline two\r\n.\r\n"), SMTP_BLOCKED);
	assert_int_equal(m.s.lines, l1 + 1); /* DATA only */
	mini_free(&m);
}

/* With less than SMTP_OUT_RESERVE free, nothing is started. */
static void test_out_reserve(void **state)
{
	(void)state;
	struct mini m;
	mini_init(&m);
	m.out.len = m.out.cap - SMTP_OUT_RESERVE + 1;
	size_t used = 99;
	uint8_t b[] = "HELO c.example\r\n";
	assert_int_equal(smtp_feed(&m.s, b, sizeof(b) - 1, &used, &m.out), SMTP_BLOCKED);
	assert_int_equal(used, 0);
	assert_int_equal(m.out.len, m.out.cap - SMTP_OUT_RESERVE + 1);
	m.out.len = m.out.cap - SMTP_OUT_RESERVE;
	assert_int_equal(smtp_feed(&m.s, b, sizeof(b) - 1, &used, &m.out), SMTP_MORE);
	assert_int_equal(used, sizeof(b) - 1);
	mini_free(&m);
}

/* The replies built from the configuration fit their buffers with the longest hostname. */
static void test_conf_replies_fit(void **state)
{
	(void)state;
	struct config cfg;
	config_defaults(&cfg);
	char kv[300];
	char label[64];
	memset(label, 'h', 63);
	label[63] = 0;
	snprintf(kv, sizeof(kv), "myhostname=%s.%s.%s.%.61s", label, label, label, label);
	assert_int_equal(config_set(&cfg, kv, stderr), 0);
	assert_int_equal(strlen(cfg.myhostname), 253);
	assert_int_equal(config_set(&cfg, "message_size_limit=1g", stderr), 0);
	struct smtp_conf conf;
	smtp_conf_init(&conf, &cfg, true);
	assert_int_equal(conf.ehlo_len, strlen(conf.ehlo));
	assert_int_equal(conf.ehlo_tls_len, strlen(conf.ehlo_tls));
	assert_int_equal(conf.greeting_len, strlen(conf.greeting));
	assert_true(conf.ehlo_len < REPLY_MAX);
	assert_memory_equal(conf.ehlo + conf.ehlo_len - 25, "250 ENHANCEDSTATUSCODES\r\n", 25);
	config_free(&cfg);
}

/* ---- random sessions: every feed plan gives what the whole input gives ---- */

static uint64_t rng = 0x736d7470ULL;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static const char *const tokens[] = {
    "HELO c.example\r\n",
    "EHLO c.example\r\n",
    "MAIL FROM:<a@c.example>\r\n",
    "MAIL FROM:<>\r\n",
    "RCPT TO:<b@example.com>\r\n",
    "RCPT TO:<x@other.example>\r\n",
    "DATA\r\n",
    "BDAT 5\r\n",
    "BDAT 3 LAST\r\n",
    "BDAT 0 LAST\r\n",
    "BDAT x\r\n",
    "RSET\r\n",
    "NOOP\r\n",
    ".\r\n",
    "..\r\n",
    "\r\n",
    "\n",
    "\r",
    ".",
    "abc",
    "\x00",
    "STARTTLS\r\n",
    "VRFY x\r\n",
    "HELP\r\n",
    "MAIL FROM:<a@c.example> BODY=8BITMIME SIZE=40\r\n",
    "QUIT\r\n",
    "\r\n.\r\n",
    "\n.\n",
    "\r\n.\n",
    "x\r\n.\r\nNOOP\r\n",
    "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
    "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
    "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.com>\r\nBDAT 4 LAST\r\n",
    "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.com>\r\nBDAT 6\r\n",
};

static bool same_lines(const struct tlines *a, const struct tlines *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].kind != b->v[i].kind || a->v[i].len != b->v[i].len ||
		    memcmp(a->v[i].p, b->v[i].p, a->v[i].len) != 0)
			return false;
	return true;
}

static void random_session(struct transcript *t)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "random");
	static const char *const confs[] = {"message_size_limit=40", "recipient_limit=2",
					    "bare_newline=reject", "error_limit=5"};
	for (size_t k = 0; k < sizeof(confs) / sizeof(confs[0]); k++)
		if (rnd() % 3 == 0)
			snprintf(t->conf[t->nconf++], sizeof(t->conf[0]), "%s", confs[k]);
	t->starttls = rnd() % 2;
	if (rnd() % 4 == 0) {
		t->verdict[H_DATA_END][0] = SMTP_V_BUSY;
		t->verdict[H_DATA_END][1] = SMTP_V_DEFER;
		t->nverdict[H_DATA_END] = 2;
	}
	if (rnd() % 4 == 0) {
		t->verdict[H_RESUME][0] = SMTP_V_NOSPACE;
		t->verdict[H_RESUME][1] = SMTP_V_OK;
		t->nverdict[H_RESUME] = 2;
	}
	size_t cap = 40 * 700 + 64, len = 0;
	uint8_t *in = malloc(cap);
	size_t ntok = 1 + rnd() % 40;
	if (rnd() % 8 != 0) {
		memcpy(in, "EHLO c.example\r\n", 16);
		len = 16;
	}
	for (size_t k = 0; k < ntok; k++) {
		const char *tok = tokens[rnd() % (sizeof(tokens) / sizeof(tokens[0]))];
		size_t n = strcmp(tok, "\x00") == 0 ? 1 : strlen(tok);
		if (rnd() % 50 == 0) { /* an overlong line */
			memset(in + len, 'L', 600);
			len += 600;
			tok = "\r\n";
			n = 2;
		}
		memcpy(in + len, tok, n);
		len += n;
	}
	t->phase[0].in = in;
	t->phase[0].len = len;
	t->nphase = 1;
}

static void test_random_sessions(void **state)
{
	(void)state;
	unsigned messages = 0;
	for (int iter = 0; iter < 3000; iter++) {
		struct transcript t;
		random_session(&t);
		struct tlines want = {0};
		struct tstats st = {0};
		char err[512];
		struct tplan whole = {.cap = 65536};
		if (transcript_replay(&t, &whole, &want, &st, err, sizeof(err)) != 0)
			fail_msg("iteration %d, whole: %s", iter, err);
		messages += st.resumes;
		size_t len = t.phase[0].len;
		struct tplan plans[16];
		size_t np = 0;
		plans[np++] = (struct tplan){.chunk = 1, .cap = 65536};
		plans[np++] = (struct tplan){.chunk = 1, .cap = SMTP_OUT_RESERVE};
		plans[np++] = (struct tplan){.cap = SMTP_OUT_RESERVE};
		plans[np++] = (struct tplan){.chunk = 7, .cap = SMTP_OUT_RESERVE + 100};
		for (int r = 0; r < 8 && len > 1; r++)
			plans[np++] = (struct tplan){.split = 1 + rnd() % (len - 1), .cap = 65536};
		for (size_t p = 0; p < np; p++) {
			struct tlines got = {0};
			if (transcript_replay(&t, &plans[p], &got, &st, err, sizeof(err)) != 0)
				fail_msg("iteration %d, plan %zu: %s", iter, p, err);
			if (!same_lines(&want, &got)) {
				char esc[4096];
				tescape(esc, sizeof(esc), t.phase[0].in, len);
				fail_msg(
				    "iteration %d: plan %zu (split %zu chunk %zu cap %zu) differs "
				    "from the whole input: %s",
				    iter, p, plans[p].split, plans[p].chunk, plans[p].cap, esc);
			}
			tlines_free(&got);
		}
		tlines_free(&want);
		transcript_free(&t);
	}
	print_message("%u messages queued\n", messages);
	assert_true(messages > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_zero_copy),
	    cmocka_unit_test(test_terminator_at_buffer_boundary),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_shutdown),
	    cmocka_unit_test(test_end_replies),
	    cmocka_unit_test(test_wait_state),
	    cmocka_unit_test(test_out_reserve),
	    cmocka_unit_test(test_lines),
	    cmocka_unit_test(test_conf_replies_fit),
	    cmocka_unit_test(test_random_sessions),
	    cmocka_unit_test(test_screening_replies),
	};
	return cmocka_run_group_tests_name("smtp_engine", tests, NULL, NULL);
}
