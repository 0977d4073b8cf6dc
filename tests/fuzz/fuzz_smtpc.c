/*
 * fuzz_smtpc.c - a whole outbound session through the client engine
 * (smtpc.c): the input is what the server says.
 *
 * Input: a 4-byte header, then the server's bytes.
 *   h[0]  bit 0: LMTP; bits 1-2: TLS (0 off, 1 if offered, 2-3 required);
 *         bit 3: BDAT allowed; bit 4: the smallest output buffer;
 *         bit 5: ENV_8BITMIME; bit 6: ENV_SMTPUTF8; bit 7: a large message
 *   h[1]  the size of each receive (0: all that is left)
 *   h[2]  bits 0-1: how the host ends the session when the bytes run out
 *         (closed, timed out, TLS failure); bits 2-3: messages to send (1-3,
 *         0 = none: QUIT at once); bit 4: the second message is from <>
 *   h[3]  recipients of each message: bits 0-2 how many (1-6); bit 3: one
 *         is too long to send; bit 4: one is not ASCII
 * The host plays a relay worker: it sends what the engine writes, runs no
 * body (it says the body went), treats the bytes after a STARTTLS 220 as the
 * first ones inside TLS, and sends the next message at each READY.
 *
 * Checked: every recipient of every message handed over gets exactly one
 * result before the READY or CLOSE that ends its transaction; each result
 * (and the session's failure) has a code of class 2, 4 or 5, a stage, a
 * printable NUL-terminated text and an enhanced code of its class; a 2xx
 * comes only from the server, after the content; the output never passes
 * its capacity and holds whole command lines of known verbs, each within
 * SMTPC_CMD_MAX; the session ends; and the same bytes received one at a time
 * give the same results (and, with the large buffer, the same commands).
 */
#include <string.h>

#include "fuzz.h"
#include "msg.h"
#include "smtpc.h"

#define HDR	    4
#define CAP_LARGE   65536
#define RCPTS_MAX   6
#define LOG_MAX	    (64u << 10) /* results of 3 messages of 6 recipients, and commands */
#define STEPS_SLACK 4096

struct log {
	char p[LOG_MAX];
	size_t len;
};

static void log_add(struct log *l, const char *s, size_t n)
{
	if (l->len + n + 1 > LOG_MAX)
		return; /* the same cut for both runs: compared as it is */
	memcpy(l->p + l->len, s, n);
	l->len += n;
	l->p[l->len++] = '\n';
}

struct fhost {
	struct smtpc c;
	struct smtpc_out out;
	uint8_t *outbuf;
	struct log results, commands;
	uint32_t nrcpt; /* recipients of the message in flight (0: none) */
	uint8_t given[RCPTS_MAX];
};

static void check_reply(const struct smtpc_reply *r)
{
	unsigned cls = r->code / 100;
	FUZZ_CHECK(cls == 2 || cls == 4 || cls == 5, "code %u", (unsigned)r->code);
	FUZZ_CHECK(r->stage < SMTPC_STAGE_COUNT, "stage %u", (unsigned)r->stage);
	FUZZ_CHECK(memchr(r->text, 0, sizeof(r->text)) && memchr(r->enh, 0, sizeof(r->enh)),
		   "a string without its NUL");
	for (const char *p = r->text; *p; p++)
		FUZZ_CHECK(*p >= 0x20 && *p < 0x7f, "byte 0x%02x in a text", (unsigned char)*p);
	if (r->enh[0])
		FUZZ_CHECK(r->enh[0] == (char)('0' + cls) && r->enh[1] == '.',
			   "enhanced code %s for %u", r->enh, (unsigned)r->code);
}

static void on_result(void *ctx, uint32_t rcpt, const struct smtpc_reply *r)
{
	struct fhost *h = ctx;
	check_reply(r);
	FUZZ_CHECK(rcpt < h->nrcpt, "result for recipient %u of %u", rcpt, h->nrcpt);
	FUZZ_CHECK(h->given[rcpt] == 0, "a second result for recipient %u", rcpt);
	h->given[rcpt] = 1;
	if (smtpc_classify(r) == SMTPC_DELIVERED)
		FUZZ_CHECK(!r->local &&
			       (r->stage == SMTPC_STAGE_DATA || r->stage == SMTPC_STAGE_LMTP_DATA),
			   "delivered at stage %u", (unsigned)r->stage);
	char line[SMTPC_TEXT_MAX + 64];
	int n = snprintf(line, sizeof(line), "%u %u %u %d %s %s", rcpt, (unsigned)r->code,
			 (unsigned)r->stage, r->local, r->enh, r->text);
	log_add(&h->results, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* Sends out: whole command lines of known verbs. */
static void drain(struct fhost *h)
{
	static const char *const verbs[] = {"EHLO ", "LHLO ",	    "HELO ",	 "STARTTLS",
					    "RSET",  "MAIL FROM:<", "RCPT TO:<", "DATA",
					    "BDAT ", "QUIT",	    "."};
	FUZZ_CHECK(h->out.len <= h->out.cap, "out %zu > cap %zu", h->out.len, h->out.cap);
	size_t pos = 0;
	while (pos < h->out.len) {
		const uint8_t *p = h->out.buf + pos;
		size_t left = h->out.len - pos, n = 0;
		while (n < left && p[n] != '\r' && p[n] != '\n')
			n++;
		FUZZ_CHECK(n + 1 < left && p[n] == '\r' && p[n + 1] == '\n',
			   "a command not ended by CRLF");
		FUZZ_CHECK(n + 2 <= SMTPC_CMD_MAX, "a command of %zu bytes", n + 2);
		bool known = false;
		for (size_t k = 0; k < sizeof(verbs) / sizeof(verbs[0]); k++)
			known |= strncmp((const char *)p, verbs[k], strlen(verbs[k])) == 0;
		FUZZ_CHECK(known, "command '%.*s'", (int)n, (const char *)p);
		log_add(&h->commands, (const char *)p, n);
		pos += n + 2;
	}
	h->out.len = 0;
}

static void msg_done(struct fhost *h)
{
	for (uint32_t i = 0; i < h->nrcpt; i++)
		FUZZ_CHECK(h->given[i] == 1, "recipient %u has no result", i);
	h->nrcpt = 0;
	log_add(&h->results, "end", 3);
}

struct fmsg {
	char long_addr[PATH_MAX_OCTETS + 40];
	const char *rcpt[RCPTS_MAX];
	struct smtpc_msg m;
};

static void make_msg(struct fmsg *f, const uint8_t *h, unsigned k)
{
	static const char *const addrs[] = {"a@example.net", "b@example.net", "c@example.net",
					    "d@example.net", "e@example.net", "f@example.net"};
	memset(f->long_addr, 'x', PATH_MAX_OCTETS);
	strcpy(f->long_addr + PATH_MAX_OCTETS, "@example.net");
	uint32_t n = 1 + (h[3] & 7) % RCPTS_MAX;
	for (uint32_t i = 0; i < n; i++)
		f->rcpt[i] = addrs[i];
	if ((h[3] & 8) && n > 1)
		f->rcpt[1] = f->long_addr;
	if (h[3] & 16)
		f->rcpt[n - 1] = "j\xc3\xbcrgen@example.net";
	f->m = (struct smtpc_msg){
	    .from = k == 1 && (h[2] & 16) ? "" : "sender@example.org",
	    .env_flags = (h[0] & 32 ? ENV_8BITMIME : 0) | (h[0] & 64 ? ENV_SMTPUTF8 : 0),
	    .nrcpt = n,
	    .size = h[0] & 128 ? 50000000 : 1234,
	    .rcpt = f->rcpt,
	};
}

/* One session over the server's bytes in[0..len), received chunk bytes at a time. */
static void session(const uint8_t *h, const uint8_t *in, size_t len, size_t chunk, size_t cap,
		    struct fhost *fh)
{
	static const enum smtpc_lost lost[] = {SMTPC_LOST_CLOSED, SMTPC_LOST_TIMEOUT,
					       SMTPC_LOST_TLS, SMTPC_LOST_CLOSED};
	struct smtpc_conf conf = {
	    .proto = h[0] & 1 ? SMTPC_LMTP : SMTPC_SMTP,
	    .tls = (h[0] >> 1 & 3) == 0	  ? SMTPC_TLS_OFF
		   : (h[0] >> 1 & 3) == 1 ? SMTPC_TLS_IF_OFFERED
					  : SMTPC_TLS_REQUIRED,
	    .bdat = h[0] & 8,
	    .helo_name = "relay.example.org",
	};
	unsigned nmsgs = h[2] >> 2 & 3;
	FUZZ_CHECK(smtpc_init(&fh->c, &conf, on_result, fh) == 0, "init");
	fh->outbuf = fuzz_alloc(cap);
	fh->out = (struct smtpc_out){.buf = fh->outbuf, .cap = cap};
	struct fmsg msg;
	size_t pos = 0, avail = 0, used;
	unsigned sent = 0;
	bool fed = true;
	enum smtpc_next nx = SMTPC_MORE;
	for (size_t steps = 0;; steps++) {
		FUZZ_CHECK(steps < 4 * len + STEPS_SLACK, "the session does not end");
		drain(fh);
		if (nx == SMTPC_MORE && fed) {
			if (avail == len) {
				smtpc_lost(&fh->c, lost[h[2] & 3]);
				FUZZ_CHECK(fh->c.state == SMTPC_S_CLOSED, "open after smtpc_lost");
				nx = SMTPC_CLOSE;
				continue;
			}
			avail += chunk == 0 || chunk > len - avail ? len - avail : chunk;
		}
		switch (nx) {
		case SMTPC_MORE:
		case SMTPC_WRITE: {
			/* Exactly the bytes not used yet: a read past them is caught. */
			uint8_t *b = fuzz_alloc(avail - pos);
			memcpy(b, in + pos, avail - pos);
			nx = smtpc_feed(&fh->c, b, avail - pos, &used, &fh->out);
			free(b);
			FUZZ_CHECK(used <= avail - pos, "used %zu of %zu", used, avail - pos);
			pos += used;
			fed = true;
			continue;
		}
		case SMTPC_TLS:
			nx = smtpc_tls_started(&fh->c, &fh->out);
			break;
		case SMTPC_DATA:
		case SMTPC_BDAT:
			FUZZ_CHECK(fh->nrcpt > 0, "a body with no message");
			nx = smtpc_body_sent(&fh->c);
			break;
		case SMTPC_READY:
			if (fh->nrcpt > 0)
				msg_done(fh);
			if (sent < nmsgs) {
				make_msg(&msg, h, sent++);
				fh->nrcpt = msg.m.nrcpt;
				memset(fh->given, 0, sizeof(fh->given));
				nx = smtpc_send(&fh->c, &msg.m, &fh->out);
			} else {
				nx = smtpc_quit(&fh->c, &fh->out);
			}
			break;
		case SMTPC_CLOSE:
			if (fh->nrcpt > 0)
				msg_done(fh);
			if (fh->c.failed) {
				check_reply(&fh->c.fail);
				char line[SMTPC_TEXT_MAX + 32];
				int n = snprintf(line, sizeof(line), "fail %u %u %s",
						 (unsigned)fh->c.fail.code,
						 (unsigned)fh->c.fail.stage, fh->c.fail.text);
				log_add(&fh->results, line,
					(size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
			}
			free(fh->outbuf);
			return;
		}
		fed = false;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fhost a, b;
	if (size < HDR)
		return 0;
	const uint8_t *h = data;
	size_t cap = h[0] & 16 ? SMTPC_OUT_MIN : CAP_LARGE;
	a.nrcpt = b.nrcpt = 0;
	a.results.len = a.commands.len = b.results.len = b.commands.len = 0;
	session(h, data + HDR, size - HDR, h[1], cap, &a);
	session(h, data + HDR, size - HDR, 1, cap, &b);
	FUZZ_CHECK(a.results.len == b.results.len &&
		       !memcmp(a.results.p, b.results.p, a.results.len),
		   "results differ when the bytes come one at a time:\n%.*s\n---\n%.*s",
		   (int)a.results.len, a.results.p, (int)b.results.len, b.results.p);
	if (cap == CAP_LARGE)
		FUZZ_CHECK(a.commands.len == b.commands.len &&
			       !memcmp(a.commands.p, b.commands.p, a.commands.len),
			   "commands differ when the bytes come one at a time");
	return 0;
}
