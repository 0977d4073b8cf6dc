/*
 * host.c - the fake shard of the engine fuzz targets (see host.h).
 */
#include <string.h>

#include "fuzz.h"
#include "host.h"
#include "msg.h"

#define OUT_CAP_LARGE 65536
#define FEED_GUARD    100000

/* Two bits of the verdict pattern per hook call, in turn. */
static unsigned vnext(struct fhost *h)
{
	unsigned v = (h->vbits >> (2 * (h->vcalls % 8))) & 3u;
	h->vcalls++;
	return v;
}

static enum smtp_verdict vfail(const struct fhost *h)
{
	static const enum smtp_verdict f[] = {SMTP_V_TEMPFAIL, SMTP_V_NOSPACE, SMTP_V_BUSY};
	return f[h->vcalls % 3];
}

/* helo, mail, rcpt, data_start: mostly OK, a failure on 3. */
static enum smtp_verdict verdict(struct fhost *h)
{
	return vnext(h) == 3 ? vfail(h) : SMTP_V_OK;
}

static void drain(struct fhost *h, int *last)
{
	FUZZ_CHECK(h->out.len <= h->out.cap, "out.len %zu > cap %zu", h->out.len, h->out.cap);
	int code = fuzz_check_replies(h->out.buf, h->out.len);
	if (last)
		*last = code;
	h->out.len = 0;
}

static bool in_feed(const struct fhost *h, const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p, in = (uintptr_t)h->in;
	return h->in && a >= in && len <= h->in_len && a - in <= h->in_len - len;
}

static void hook_common(struct fhost *h)
{
	h->hook_calls++;
	FUZZ_CHECK(!h->defer, "hook called while a message is with the host");
	FUZZ_CHECK(!h->closed, "hook called after the session closed");
}

static enum smtp_verdict hook_helo(void *ctx, const char *name, size_t len, bool esmtp)
{
	struct fhost *h = ctx;
	(void)esmtp;
	hook_common(h);
	FUZZ_CHECK(h->in, "helo outside smtp_feed");
	FUZZ_CHECK(!h->txn, "helo hook with a transaction open");
	FUZZ_CHECK(len > 0 && len <= HELO_MAX, "helo name of %zu octets", len);
	FUZZ_CHECK(in_feed(h, name, len), "helo name outside the input");
	FUZZ_CHECK(name[0] != ' ', "helo name starts with a space");
	return verdict(h);
}

static void check_addr(const struct addr *a)
{
	FUZZ_CHECK(a->len == strlen(a->mailbox) && a->len <= PATH_MAX_OCTETS, "addr len %zu",
		   a->len);
	FUZZ_CHECK(a->is_null == (a->len == 0), "is_null %d len %zu", a->is_null, a->len);
}

static enum smtp_verdict hook_mail(void *ctx, const struct addr *from, uint32_t env_flags)
{
	struct fhost *h = ctx;
	hook_common(h);
	FUZZ_CHECK(!h->txn, "mail hook with a transaction open");
	check_addr(from);
	FUZZ_CHECK((env_flags & ~(ENV_ESMTP | ENV_8BITMIME | ENV_SMTPUTF8)) == 0,
		   "mail env_flags 0x%x", env_flags);
	FUZZ_CHECK(!from->has_8bit || (env_flags & ENV_SMTPUTF8), "8-bit sender without SMTPUTF8");
	enum smtp_verdict v = verdict(h);
	if (v == SMTP_V_OK) {
		h->txn = true;
		h->nrcpt = 0;
		h->msg_bytes = 0;
	}
	return v;
}

static enum smtp_verdict hook_rcpt(void *ctx, const struct addr *to)
{
	struct fhost *h = ctx;
	hook_common(h);
	FUZZ_CHECK(h->txn, "rcpt hook without a transaction");
	FUZZ_CHECK(!h->content, "rcpt hook after content started");
	FUZZ_CHECK(h->nrcpt < h->cfg.recipient_limit, "rcpt hook past recipient_limit");
	check_addr(to);
	FUZZ_CHECK(!to->is_null, "null recipient");
	FUZZ_CHECK(addr_accepted(&h->cfg, to), "rcpt hook for a refused domain: %s", to->mailbox);
	enum smtp_verdict v = verdict(h);
	if (v == SMTP_V_OK)
		h->nrcpt++;
	return v;
}

static enum smtp_verdict hook_data_start(void *ctx)
{
	struct fhost *h = ctx;
	hook_common(h);
	FUZZ_CHECK(h->txn && h->nrcpt > 0 && !h->content, "data_start: txn %d nrcpt %u content %d",
		   h->txn, h->nrcpt, h->content);
	enum smtp_verdict v = h->refuse_data ? SMTP_V_TEMPFAIL : verdict(h);
	if (v == SMTP_V_OK) {
		h->content = true;
		h->msg_bytes = 0;
	} else {
		h->txn = false; /* refused: the host dropped the transaction itself */
	}
	return v;
}

static int hook_body(void *ctx, const uint8_t *p, size_t len)
{
	struct fhost *h = ctx;
	hook_common(h);
	h->body_runs++;
	FUZZ_CHECK(h->in, "body hook outside smtp_feed");
	FUZZ_CHECK(h->txn && h->content, "body hook outside content");
	FUZZ_CHECK(len > 0, "empty body run");
	uintptr_t a = (uintptr_t)p, st = (uintptr_t)body_static;
	bool fixed = a >= st && len <= sizeof(body_static) && a - st <= sizeof(body_static) - len;
	FUZZ_CHECK(in_feed(h, p, len) || fixed,
		   "body run %p+%zu outside the input %p+%zu and body_static", (const void *)p, len,
		   (const void *)h->in, h->in_len);
	h->msg_bytes += len;
	FUZZ_CHECK(h->msg_bytes <= h->cfg.message_size_limit,
		   "body hook got %llu bytes, past message_size_limit %llu",
		   (unsigned long long)h->msg_bytes, (unsigned long long)h->cfg.message_size_limit);
	if (h->body_fail_after != UINT64_MAX && h->msg_bytes > h->body_fail_after)
		return -1;
	return 0;
}

static enum smtp_verdict hook_data_end(void *ctx)
{
	struct fhost *h = ctx;
	hook_common(h);
	FUZZ_CHECK(h->txn && h->content, "data_end: txn %d content %d", h->txn, h->content);
	unsigned v = vnext(h);
	if (v < 2) {
		h->defer = true;
		return SMTP_V_DEFER;
	}
	h->txn = h->content = false;
	return v == 2 ? SMTP_V_TEMPFAIL : vfail(h);
}

static void hook_abort(void *ctx)
{
	struct fhost *h = ctx;
	hook_common(h);
	FUZZ_CHECK(h->txn, "abort hook without a transaction");
	h->txn = h->content = false;
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

static void set(struct config *cfg, const char *kv)
{
	FUZZ_CHECK(config_set(cfg, kv, stderr) == 0, "config_set %s", kv);
}

void fhost_init(struct fhost *h, unsigned flags, uint16_t vbits, uint64_t body_fail_after)
{
	memset(h, 0, sizeof(*h));
	config_defaults(&h->cfg);
	set(&h->cfg, "myhostname = mx.test");
	set(&h->cfg, "accept_domains = example.com, .example.org");
	if (flags & FH_BARE_LF)
		set(&h->cfg, "bare_newline = reject");
	if (flags & FH_SMALL_MSG)
		set(&h->cfg, "message_size_limit = 256");
	if (flags & FH_FEW_RCPT)
		set(&h->cfg, "recipient_limit = 2");
	if (flags & FH_FEW_ERRORS)
		set(&h->cfg, "error_limit = 3");
	if (flags & FH_LONG_LINES)
		set(&h->cfg, "command_line_limit = 1000");
	h->body_fail_after = flags & FH_BODY_FAIL ? body_fail_after : UINT64_MAX;
	h->vbits = vbits;
	smtp_conf_init(&h->conf, &h->cfg, flags & FH_STARTTLS);
	h->out.cap = flags & FH_SMALL_OUT ? SMTP_OUT_RESERVE + 32 : OUT_CAP_LARGE;
	h->out.buf = fuzz_alloc(h->out.cap);
	smtp_init(&h->s, &h->conf, &hooks, h);
	smtp_greet(&h->s, &h->out);
	int code;
	drain(h, &code);
	FUZZ_CHECK(code == 220, "greeting %d", code);
}

void fhost_free(struct fhost *h)
{
	free(h->out.buf);
	free(h->stash);
	config_free(&h->cfg);
}

static void resume(struct fhost *h)
{
	FUZZ_CHECK(h->defer && h->s.state == SMTP_S_WAIT, "resume: defer %d state %u", h->defer,
		   h->s.state);
	unsigned v = vnext(h);
	enum smtp_verdict verd = v < 2 ? SMTP_V_OK : v == 2 ? SMTP_V_TEMPFAIL : vfail(h);
	char qid[QID_LEN + 1];
	snprintf(qid, sizeof(qid), "F%015u", ++h->qid % 1000000000u);
	h->defer = false;
	h->txn = h->content = false;
	FUZZ_CHECK(h->out.cap - h->out.len >= REPLY_MAX, "no room left for the resume reply");
	size_t before = h->out.len;
	smtp_resume(&h->s, verd, qid, &h->out);
	FUZZ_CHECK(h->out.len > before, "smtp_resume wrote no reply");
	int code = fuzz_check_replies(h->out.buf + before, h->out.len - before);
	int want = verd == SMTP_V_OK ? 250 : verd == SMTP_V_NOSPACE ? 452 : 451;
	FUZZ_CHECK(code == want, "resume reply %d for verdict %d", code, (int)verd);
	FUZZ_CHECK(h->s.state == SMTP_S_CMD, "state %u after resume", h->s.state);
	FUZZ_CHECK(!smtp_in_transaction(&h->s), "a transaction after resume");
}

void fhost_resume(struct fhost *h)
{
	if (!h->defer || h->closed)
		return;
	resume(h);
	drain(h, NULL);
}

static void keep(struct fhost *h, const uint8_t *p, size_t n)
{
	uint8_t *s = fuzz_alloc(n);
	memcpy(s, p, n);
	free(h->stash);
	h->stash = s;
	h->stash_len = n;
}

enum fhost_end fhost_feed(struct fhost *h, const uint8_t *p, size_t n)
{
	FUZZ_CHECK(!h->closed, "feed after close");
	size_t len = h->stash_len + n;
	uint8_t *buf = fuzz_alloc(len);
	if (h->stash_len)
		memcpy(buf, h->stash, h->stash_len);
	if (n)
		memcpy(buf + h->stash_len, p, n);
	h->stash_len = 0;
	for (unsigned guard = 0;; guard++) {
		FUZZ_CHECK(guard < FEED_GUARD, "no progress");
		size_t used = (size_t)-1;
		int last = 0;
		h->in = buf;
		h->in_len = len;
		enum smtp_result r = smtp_feed(&h->s, buf, len, &used, &h->out);
		h->in = NULL;
		FUZZ_CHECK(used <= len, "used %zu > len %zu", used, len);
		FUZZ_CHECK(h->out.len <= h->out.cap, "out.len %zu > cap %zu", h->out.len,
			   h->out.cap);
		FUZZ_CHECK(!(h->txn || h->defer) || smtp_in_transaction(&h->s),
			   "host has a transaction, smtp_in_transaction says none");
		size_t left = len - used;
		switch (r) {
		case SMTP_MORE:
			if (left > 0) {
				FUZZ_CHECK(h->s.state == SMTP_S_CMD, "unused input in state %u",
					   h->s.state);
				FUZZ_CHECK(!memchr(buf + used, '\n', left),
					   "unused input holds a LF");
				FUZZ_CHECK(left < smtp_line_max(&h->conf),
					   "unused input of %zu octets", left);
			}
			drain(h, NULL);
			keep(h, buf + used, left);
			free(buf);
			return FE_MORE;
		case SMTP_BLOCKED:
			if (h->defer) {
				if (h->hold_defer) {
					FUZZ_CHECK(h->s.state == SMTP_S_WAIT, "state %u",
						   h->s.state);
					drain(h, NULL);
					keep(h, buf + used, left);
					free(buf);
					return FE_MORE;
				}
				resume(h);
			} else {
				FUZZ_CHECK(h->out.cap - h->out.len < SMTP_OUT_RESERVE,
					   "SMTP_BLOCKED with room in out and nothing deferred");
			}
			drain(h, NULL);
			break;
		case SMTP_CLOSE:
			drain(h, &last);
			FUZZ_CHECK(last == 221 || last == 421, "closed after a %d", last);
			FUZZ_CHECK(!h->txn && !h->defer, "closed with a transaction at the host");
			FUZZ_CHECK(!smtp_in_transaction(&h->s), "closed in a transaction");
			h->closed = true;
			free(buf);
			return FE_CLOSED;
		case SMTP_STARTTLS:
			drain(h, &last);
			FUZZ_CHECK(last == 220, "STARTTLS after a %d", last);
			FUZZ_CHECK(h->conf.starttls && !h->tls, "STARTTLS: enabled %d, in TLS %d",
				   h->conf.starttls, h->tls);
			FUZZ_CHECK(!h->txn && !smtp_in_transaction(&h->s),
				   "STARTTLS in a transaction");
			free(buf); /* the rest is dropped: it came before the handshake */
			smtp_tls_started(&h->s);
			h->tls = true;
			FUZZ_CHECK(h->s.state == SMTP_S_CMD, "state %u after TLS", h->s.state);
			return FE_STARTTLS;
		default:
			FUZZ_CHECK(0, "smtp_feed returned %d", (int)r);
		}
		if (left == 0) {
			free(buf);
			return FE_MORE;
		}
		uint8_t *rest = fuzz_alloc(left);
		memcpy(rest, buf + used, left);
		free(buf);
		buf = rest;
		len = left;
	}
}

void fhost_end(struct fhost *h, unsigned how)
{
	if (h->closed)
		return;
	bool waiting = h->defer;
	int last = 0;
	switch (how % 3) {
	case 0:
		smtp_close(&h->s);
		FUZZ_CHECK(h->out.len == 0, "smtp_close wrote a reply");
		break;
	case 1:
		smtp_end(&h->s, SMTP_END_TIMEOUT, &h->out);
		drain(h, &last);
		FUZZ_CHECK(last == 421, "timeout reply %d", last);
		break;
	default:
		smtp_end(&h->s, SMTP_END_SHUTDOWN, &h->out);
		drain(h, &last);
		FUZZ_CHECK(last == 421, "shutdown reply %d", last);
		break;
	}
	FUZZ_CHECK(h->s.state == SMTP_S_CLOSED, "state %u after the end", h->s.state);
	if (waiting) {
		/* The message was with the host: it finishes it, and no reply goes out. */
		h->defer = false;
		h->txn = h->content = false;
		smtp_resume(&h->s, SMTP_V_OK, "F000000000000000", &h->out);
		FUZZ_CHECK(h->out.len == 0, "smtp_resume after the end wrote a reply");
	}
	FUZZ_CHECK(!h->txn, "the session ended with the host's transaction open");
	h->closed = true;
}
