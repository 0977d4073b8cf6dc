/*
 * spoolrec.c - the segment's records: headers, CRC, resync, envelope
 * (spoolrec.h; the byte layout is in spool.h).
 *
 * Decoders trust no length: each is checked against its bound (SPOOL_REC_MAX,
 * SPOOL_ENV_MAX, SPOOL_TRACE_MAX, the fields of struct envelope) before it
 * is used, so a reader given any bytes reads nothing outside its buffers.
 */
#include <errno.h>
#include <string.h>

#include "crc32c.h"
#include "fsutil.h"
#include "le.h"
#include "spoolrec.h"

#define RESYNC_TRIES 4096u	    /* candidate records tried after a bad one */
#define RESYNC_BYTES (256ull << 20) /* bytes those candidates may make us check */

bool spoolrec_qid_valid(const char *qid)
{
	size_t n = strnlen(qid, QID_LEN + 1);
	if (n == 0 || n > QID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)qid[i];
		if (c <= 0x20 || c >= 0x7f || c == '/' || c == '\\')
			return false;
	}
	return true;
}

/* ---- envelope encoding (segment FINAL records) ---- */

uint64_t spoolrec_env_size(const struct envelope *env)
{
	uint64_t n = SPOOL_ENV_FIXED + 5 * 2;
	n += strnlen(env->client_addr, sizeof(env->client_addr));
	n += strnlen(env->helo, sizeof(env->helo));
	n += strnlen(env->tls, sizeof(env->tls));
	n += strnlen(env->myhostname, sizeof(env->myhostname));
	n += strnlen(env->from, sizeof(env->from));
	if (env->nrcpt == 0 || env->nrcpt > RCPT_LIMIT_MAX || !env->rcpts ||
	    env->rcpts_len > env->rcpts_cap)
		return 0;
	const char *r = env->rcpts, *end = env->rcpts + env->rcpts_len;
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		size_t len = strnlen(r, (size_t)(end - r));
		if (r + len >= end || len > PATH_MAX_OCTETS)
			return 0;
		n += 2 + len;
		r += len + 1;
	}
	return n;
}

static uint8_t *env_put_str(uint8_t *p, const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	le_put16(p, (uint16_t)n);
	memcpy(p + 2, s, n);
	return p + 2 + n;
}

void spoolrec_env_encode(uint8_t *p, const struct envelope *env, uint64_t body_size,
			 uint32_t nparts, uint32_t trace_len)
{
	le_put64(p + 0, env->time_us);
	le_put64(p + 8, trace_len + body_size);
	le_put64(p + 16, body_size);
	le_put32(p + 24, nparts);
	le_put32(p + 28, env->flags);
	le_put32(p + 32, trace_len);
	le_put32(p + 36, env->nrcpt);
	le_put16(p + 40, env->client_port);
	le_put16(p + 42, 0);
	p += SPOOL_ENV_FIXED;
	p = env_put_str(p, env->client_addr, sizeof(env->client_addr));
	p = env_put_str(p, env->helo, sizeof(env->helo));
	p = env_put_str(p, env->tls, sizeof(env->tls));
	p = env_put_str(p, env->myhostname, sizeof(env->myhostname));
	p = env_put_str(p, env->from, sizeof(env->from));
	const char *r = env->rcpts;
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		size_t len = strlen(r);
		p = env_put_str(p, r, len);
		r += len + 1;
	}
}

static int env_get_str(const uint8_t **p, const uint8_t *end, char *dst, size_t cap)
{
	if (end - *p < 2)
		return -EBADMSG;
	size_t n = le_get16(*p);
	if ((size_t)(end - *p) - 2 < n || n >= cap || memchr(*p + 2, 0, n))
		return -EBADMSG;
	memcpy(dst, *p + 2, n);
	dst[n] = 0;
	*p += 2 + n;
	return 0;
}

int spoolrec_env_decode(const uint8_t *p, size_t len, struct envelope *env, char *rcpts, size_t cap,
			struct spoolrec_env_totals *t)
{
	const uint8_t *end = p + len;
	if (len < SPOOL_ENV_FIXED)
		return -EBADMSG;
	memset(env, 0, sizeof(*env));
	env->time_us = le_get64(p);
	t->msg_size = le_get64(p + 8);
	t->body_size = le_get64(p + 16);
	t->nparts = le_get32(p + 24);
	env->flags = le_get32(p + 28);
	t->trace_len = le_get32(p + 32);
	env->nrcpt = le_get32(p + 36);
	env->client_port = le_get16(p + 40);
	if (env->nrcpt == 0 || env->nrcpt > RCPT_LIMIT_MAX || t->nparts == 0 ||
	    t->msg_size != t->trace_len + t->body_size)
		return -EBADMSG;
	p += SPOOL_ENV_FIXED;
	if (env_get_str(&p, end, env->client_addr, sizeof(env->client_addr)) ||
	    env_get_str(&p, end, env->helo, sizeof(env->helo)) ||
	    env_get_str(&p, end, env->tls, sizeof(env->tls)) ||
	    env_get_str(&p, end, env->myhostname, sizeof(env->myhostname)) ||
	    env_get_str(&p, end, env->from, sizeof(env->from)))
		return -EBADMSG;
	size_t used = 0;
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		char addr[PATH_MAX_OCTETS + 1];
		if (env_get_str(&p, end, addr, sizeof(addr)))
			return -EBADMSG;
		size_t n = strlen(addr);
		if (n + 1 > cap - used)
			return -EBADMSG;
		memcpy(rcpts + used, addr, n + 1);
		used += n + 1;
	}
	if (p != end)
		return -EBADMSG;
	env->rcpts = rcpts;
	env->rcpts_len = (uint32_t)used;
	env->rcpts_cap = (uint32_t)cap;
	return 0;
}

/* ---- record headers ---- */

void spoolrec_hdr_encode(uint8_t *p, const struct spoolrec_hdr *h)
{
	le_put32(p + 0, SPOOL_REC_MAGIC);
	p[4] = h->type;
	p[5] = SPOOL_REC_VERSION;
	le_put16(p + 6, 0);
	le_put32(p + 8, SPOOL_REC_HDR_LEN);
	le_put32(p + 12, h->rec_len);
	le_put32(p + 16, h->crc);
	le_put32(p + 20, h->part);
	memset(p + 24, 0, QID_LEN);
	memcpy(p + 24, h->qid, strnlen(h->qid, QID_LEN));
	le_put64(p + 40, h->body_off);
	le_put32(p + 48, h->env_len);
	le_put32(p + 52, h->trace_len);
	le_put64(p + 56, h->body_len);
}

uint32_t spoolrec_crc_start(uint32_t seed, const uint8_t *hdr, size_t hdr_len)
{
	uint32_t c = crc32c(seed, hdr, 16);
	return crc32c(c, hdr + 20, hdr_len - 20);
}

uint32_t spoolrec_seed(uint64_t salt)
{
	uint8_t b[8];
	le_put64(b, salt);
	return crc32c(0, b, sizeof(b));
}

/* Decodes and checks the fixed fields (not the CRC). 0 or -EBADMSG. */
static int rec_hdr_decode(const uint8_t *p, struct spoolrec_hdr *h)
{
	if (le_get32(p) != SPOOL_REC_MAGIC || p[5] != SPOOL_REC_VERSION)
		return -EBADMSG;
	h->type = p[4];
	h->hdr_len = le_get32(p + 8);
	h->rec_len = le_get32(p + 12);
	h->crc = le_get32(p + 16);
	h->part = le_get32(p + 20);
	memcpy(h->qid, p + 24, QID_LEN);
	h->qid[QID_LEN] = 0;
	h->body_off = le_get64(p + 40);
	h->env_len = le_get32(p + 48);
	h->trace_len = le_get32(p + 52);
	h->body_len = le_get64(p + 56);
	if (h->type == SPOOL_REC_SEGMENT) {
		static const char zero[QID_LEN + 1];
		bool ok = h->hdr_len == SPOOL_REC_HDR_LEN && h->rec_len == SPOOL_SEG_REC_LEN &&
			  h->part == 0 && h->body_off == 0 && h->env_len == 0 &&
			  h->trace_len == 0 && h->body_len == SPOOL_SEG_PAYLOAD &&
			  memcmp(h->qid, zero, sizeof(zero)) == 0;
		return ok ? 0 : -EBADMSG;
	}
	if (h->type != SPOOL_REC_PART && h->type != SPOOL_REC_FINAL)
		return -EBADMSG;
	if (h->hdr_len < SPOOL_REC_HDR_LEN || h->hdr_len > 4096 || h->rec_len > SPOOL_REC_MAX)
		return -EBADMSG;
	if (h->body_len > SPOOL_REC_MAX ||
	    (uint64_t)h->hdr_len + h->env_len + h->trace_len + h->body_len != h->rec_len)
		return -EBADMSG;
	if (h->type == SPOOL_REC_PART ? h->env_len != 0
				      : h->env_len < SPOOL_ENV_FIXED || h->env_len > SPOOL_ENV_MAX)
		return -EBADMSG;
	if (h->trace_len > SPOOL_TRACE_MAX || (h->part != 0 && h->trace_len != 0))
		return -EBADMSG;
	if (h->body_off > UINT64_MAX / 2)
		return -EBADMSG;
	for (size_t i = strnlen(h->qid, QID_LEN); i < QID_LEN; i++)
		if (h->qid[i] != 0)
			return -EBADMSG;
	return spoolrec_qid_valid(h->qid) ? 0 : -EBADMSG;
}

int spoolrec_check(int fd, uint64_t off, uint64_t size, uint32_t seed, struct spoolrec_hdr *h,
		   uint8_t *buf, size_t cap, bool *torn)
{
	uint8_t hb[SPOOL_REC_HDR_LEN];
	*torn = false;
	h->rec_len = 0;
	if (size - off < SPOOL_REC_HDR_LEN) {
		size_t n = (size_t)(size - off);
		int r = fsutil_pread_all(fd, hb, n, off);
		if (r < 0)
			return r == -ENODATA ? -EBADMSG : r;
		uint8_t magic[4];
		le_put32(magic, SPOOL_REC_MAGIC);
		*torn = memcmp(hb, magic, n < 4 ? n : 4) == 0;
		return -EBADMSG;
	}
	int r = fsutil_pread_all(fd, hb, sizeof(hb), off);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	if (rec_hdr_decode(hb, h) < 0) {
		h->rec_len = 0;
		return -EBADMSG;
	}
	if (h->rec_len > size - off) {
		*torn = true;
		return -EBADMSG;
	}
	uint32_t c = spoolrec_crc_start(seed, hb, SPOOL_REC_HDR_LEN);
	uint64_t pos = off + SPOOL_REC_HDR_LEN, end = off + h->rec_len;
	while (pos < end) {
		size_t n = end - pos < cap ? (size_t)(end - pos) : cap;
		r = fsutil_pread_all(fd, buf, n, pos);
		if (r < 0)
			return r == -ENODATA ? -EBADMSG : r;
		c = crc32c(c, buf, n);
		pos += n;
	}
	return c == h->crc ? 0 : -EBADMSG;
}

int spoolrec_check_mem(const uint8_t *p, size_t len, uint32_t seed, struct spoolrec_hdr *h)
{
	h->rec_len = 0;
	if (len < SPOOL_REC_HDR_LEN)
		return -EAGAIN;
	if (rec_hdr_decode(p, h) < 0) {
		h->rec_len = 0;
		return -EBADMSG;
	}
	if (h->rec_len > len)
		return -EAGAIN;
	uint32_t c = spoolrec_crc_start(seed, p, SPOOL_REC_HDR_LEN);
	c = crc32c(c, p + SPOOL_REC_HDR_LEN, h->rec_len - SPOOL_REC_HDR_LEN);
	return c == h->crc ? 0 : -EBADMSG;
}

int spoolrec_resync(int fd, uint64_t off, uint64_t size, uint32_t seed, uint64_t *found,
		    uint8_t *buf, size_t cap)
{
	uint8_t win[4096], magic[4];
	unsigned tries = 0;
	uint64_t checked = 0;
	le_put32(magic, SPOOL_REC_MAGIC);
	for (uint64_t pos = off + 1; pos + SPOOL_REC_HDR_LEN <= size;) {
		size_t n = size - pos < sizeof(win) ? (size_t)(size - pos) : sizeof(win);
		int r = fsutil_pread_all(fd, win, n, pos);
		if (r < 0)
			return r == -ENODATA ? -ENOENT : r;
		for (size_t i = 0; i + 4 <= n; i++) {
			if (memcmp(win + i, magic, 4) != 0)
				continue;
			struct spoolrec_hdr h;
			bool torn;
			r = spoolrec_check(fd, pos + i, size, seed, &h, buf, cap, &torn);
			if (r == 0 && h.type != SPOOL_REC_SEGMENT) {
				*found = pos + i;
				return 0;
			}
			if (r != 0 && r != -EBADMSG)
				return r;
			checked += h.rec_len;
			if (++tries >= RESYNC_TRIES || checked > RESYNC_BYTES)
				return -E2BIG;
		}
		if (n < 4)
			break;
		pos += n - 3;
	}
	return -ENOENT;
}

int spoolrec_seg_header(int fd, uint64_t size, uint8_t *buf, size_t cap, uint32_t *seed)
{
	struct spoolrec_hdr h;
	bool torn;
	uint8_t salt[8];
	int r = spoolrec_check(fd, 0, size, 0, &h, buf, cap, &torn);
	if (r == 0 && h.type != SPOOL_REC_SEGMENT)
		r = -EBADMSG;
	if (r == 0)
		r = fsutil_pread_all(fd, salt, sizeof(salt), SPOOL_REC_HDR_LEN);
	if (r == -ENODATA)
		r = -EBADMSG;
	if (r == 0)
		*seed = spoolrec_seed(le_get64(salt));
	return r;
}
