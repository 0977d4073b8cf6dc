/*
 * maildir.c - the Maildir format of the spool (maildir.h; the file's text
 * is described in spool.h).
 *
 * Invariants:
 *  - a message's file is in tmp/ (QID.wNN) until its FINAL is written and
 *    fdatasync'ed; only then is it renamed into new/, never over a file
 *    there; new/ is fsync'ed once per batch (md_sync), and what that fsync
 *    did not make durable is unlinked from new/ again, never acknowledged;
 *  - an in-flight entry owns its open tmp file (e->fd) until the FINAL,
 *    the ABORT, a failure or eviction (md_discard unlinks it);
 *  - header lines are built in the arena (sized by MD_HDR_MAX_FOR for
 *    the configured recipient limit); body bytes go from the msg's slices
 *    to pwritev, never copied.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "maildir.h"
#include "sbuf.h"
#include "spool_int.h"
#include "spoolrec.h"
#include "trace.h"

/* Maildir header lines: every byte may be escaped as \xHH (4 bytes). */
#define MD_LINE_SLACK 64
#define MD_HDR_MAX_FOR(n)                                                                          \
	(MD_LINE_SLACK * 2 + 4 * (uint64_t)SPOOL_ENV_STRINGS_MAX + 128 +                           \
	 (uint64_t)(n) * (4 * PATH_MAX_OCTETS + MD_LINE_SLACK))

/* Escapes a path (value = false) or a key=value value (value = true) as \xHH. */
static void md_put_escaped(struct sbuf *b, const char *s, size_t max, bool value)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strnlen(s, max);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bool esc = c < 0x20 || c == 0x7f || c == '\\';
		if (value)
			esc = esc || c == ' ' || c == '=' || c >= 0x80;
		if (esc) {
			char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
			sbuf_put(b, e, 4);
		} else {
			sbuf_put(b, &s[i], 1);
		}
	}
}

/* The writer a tmp/ file name (QID.wNN) belongs to. */
static bool tmp_writer_of(const char *name, unsigned *n)
{
	const char *dot = strrchr(name, '.');
	if (!dot || dot[1] != 'w' || strlen(dot) != 4 || dot[2] < '0' || dot[2] > '9' ||
	    dot[3] < '0' || dot[3] > '9')
		return false;
	*n = (unsigned)(dot[2] - '0') * 10 + (unsigned)(dot[3] - '0');
	return true;
}

static void md_tmp_name(const struct spool *sp, const char *qid, char *name, size_t cap)
{
	snprintf(name, cap, "%s.w%02u", qid, sp->writer);
}

/* Closes and unlinks the tmp file of e, if it has one. */
static void md_discard(struct spool *sp, struct inflight *e)
{
	if (e->fd < 0)
		return;
	char name[QID_LEN + 8];
	fsutil_close(&e->fd);
	md_tmp_name(sp, e->qid, name, sizeof(name));
	if (unlinkat(sp->tmpfd, name, 0) < 0 && errno != ENOENT)
		log_line("spool=%s writer=%u action=unlink file=tmp/%s error=\"%s\"", sp->dir,
			 sp->writer, name, strerror(errno));
}

static void md_final_name(const struct spool *sp, uint64_t time_us, const char *qid, char *name,
			  size_t cap)
{
	snprintf(name, cap, "%" PRIu64 ".M%06" PRIu64 "Q%s.%s", time_us / 1000000u,
		 time_us % 1000000u, qid, sp->host_enc);
}

/* The envelope header lines (see spool.h) followed by the trace header. */
static int md_header(struct spool *sp, const struct envelope *env, uint8_t *p, size_t cap,
		     size_t *len, uint32_t *trace_len)
{
	char trace[SPOOL_TRACE_MAX];
	size_t tl = trace_format(trace, sizeof(trace), env, sp->host);
	if (tl == 0 || spoolrec_env_size(env) == 0)
		return -EINVAL;
	struct sbuf b = {.p = (char *)p, .len = 0, .cap = cap, .over = false};
	sbuf_puts(&b, "Return-Path: <");
	md_put_escaped(&b, env->from, sizeof(env->from), false);
	sbuf_puts(&b, ">\r\nX-Mxring-Envelope: qid=");
	md_put_escaped(&b, env->qid, sizeof(env->qid), true);
	sbuf_printf(&b, " time=%" PRIu64 " client=", env->time_us);
	md_put_escaped(&b, env->client_addr, sizeof(env->client_addr), true);
	sbuf_printf(&b, " port=%u helo=", (unsigned)env->client_port);
	md_put_escaped(&b, env->helo, sizeof(env->helo), true);
	sbuf_puts(&b, " tls=");
	md_put_escaped(&b, env->tls, sizeof(env->tls), true);
	sbuf_puts(&b, " host=");
	md_put_escaped(&b, env->myhostname[0] ? env->myhostname : sp->host, DOMAIN_MAX + 1, true);
	sbuf_printf(&b, " flags=0x%" PRIx32 " rcpts=%" PRIu32 " trace=%zu\r\n", env->flags,
		    env->nrcpt, tl);
	const char *r = env->rcpts;
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		size_t n = strlen(r);
		sbuf_puts(&b, "X-Mxring-Rcpt: <");
		md_put_escaped(&b, r, n, false);
		sbuf_puts(&b, ">\r\n");
		r += n + 1;
	}
	sbuf_put(&b, trace, tl);
	if (b.over)
		return -EMSGSIZE;
	*len = b.len;
	*trace_len = (uint32_t)tl;
	return 0;
}

/*
 * Appends m to its tmp file (created at part 0); a FINAL is synced and
 * renamed into new/. On a failed system call *op names it (else NULL).
 */
static int md_queue(struct spool *sp, const struct msg *m, struct inflight *e, const char **op)
{
	const struct envelope *env = m->env;
	char tmp[QID_LEN + 8];
	md_tmp_name(sp, env->qid, tmp, sizeof(tmp));
	sp->wb_off = &e->file_off;
	*op = "write";
	if (m->part == 0) {
		e->fd = openat(sp->tmpfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		if (e->fd < 0) {
			*op = "create";
			return -errno;
		}
		e->file_off = 0;
		size_t len;
		int r = md_header(sp, env, sp->arena, sp->arena_cap, &len, &e->trace_len);
		if (r < 0) {
			*op = NULL;
			return r;
		}
		sp->wb_fd = e->fd;
		r = spool_wb_add(sp, sp->arena, len);
		if (r < 0)
			return r;
	}
	if (e->fd < 0) {
		*op = NULL;
		return -EIO;
	}
	sp->wb_fd = e->fd;
	int r = 0;
	for (uint32_t i = 0; r == 0 && i < m->nslices; i++)
		r = spool_wb_add(sp, m->slices[i].base, m->slices[i].len);
	if (r == 0)
		r = spool_wb_flush(sp);
	spool_wb_drop(sp);
	if (r < 0 || m->kind != MSG_FINAL)
		return r;
	*op = "fdatasync";
	if (fdatasync(e->fd) < 0)
		return -errno;
	fsutil_close(&e->fd);
	if (sp->ndone >= sp->batch_max) {
		unlinkat(sp->tmpfd, tmp, 0);
		*op = NULL;
		return -ENOBUFS;
	}
	char name[MAILDIR_NAME_MAX + 1];
	md_final_name(sp, env->time_us, env->qid, name, sizeof(name));
	*op = "rename";
	r = fsutil_rename_noreplace(sp->tmpfd, tmp, sp->newfd, name);
	if (r < 0) {
		unlinkat(sp->tmpfd, tmp, 0);
		return r;
	}
	struct md_done *d = &sp->done[sp->ndone++];
	d->time_us = env->time_us;
	memcpy(d->qid, env->qid, sizeof(d->qid));
	return 0;
}

/* Says which system call failed for qid (the shard's store-failed line does not). */
static void md_log_fail(const struct spool *sp, const char *qid, const char *op, int r)
{
	if (r < 0 && op)
		log_line("spool=%s writer=%u qid=%s op=%s file=tmp/%s.w%02u error=\"%s\"", sp->dir,
			 sp->writer, qid, op, qid, sp->writer, strerror(-r));
}

static int md_write(struct spool *sp, const struct msg *m, struct inflight *e)
{
	const char *op = NULL;
	int r;
	if (!e) {
		/* A one-part message needs no table entry: it is done within this call. */
		struct inflight local = {.fd = -1};
		memcpy(local.qid, m->env->qid, sizeof(local.qid));
		r = md_queue(sp, m, &local, &op);
		md_log_fail(sp, m->env->qid, op, r);
		md_discard(sp, &local);
		return r;
	}
	r = md_queue(sp, m, e, &op);
	md_log_fail(sp, m->env->qid, op, r);
	return r;
}

static int md_sync(struct spool *sp)
{
	int r = 0;
	if (sp->ndone > 0) {
		r = fsutil_fsync(sp->newfd);
		if (r == 0)
			sp->syncs++;
	}
	if (r < 0) {
		/* Not acknowledged, so not delivered: take them back out of new/. */
		for (unsigned i = 0; i < sp->ndone; i++) {
			char name[MAILDIR_NAME_MAX + 1];
			md_final_name(sp, sp->done[i].time_us, sp->done[i].qid, name, sizeof(name));
			unlinkat(sp->newfd, name, 0);
		}
		spool_ent_fail_dirty(sp, r);
		log_line("spool=%s writer=%u action=fsync dir=maildir/new error=\"%s\" failed=%u",
			 sp->dir, sp->writer, strerror(-r), sp->ndone);
	} else {
		sp->gen++;
	}
	sp->ndone = 0;
	sp->final_pending = false;
	sp->batch_err = 0; /* one file per message: a failed write fails only its own */
	return r;
}

static bool keep_owned_tmp(const char *name, void *arg)
{
	const struct spool *sp = arg;
	unsigned n;
	return tmp_writer_of(name, &n) && n == sp->writer;
}

/* Removes this writer's unfinished deliveries: never acknowledged. */
static int md_recover(struct spool *sp)
{
	char **names;
	uint32_t n;
	int r = fsutil_dir_list(sp->tmpfd, keep_owned_tmp, sp, &names, &n);
	if (r < 0)
		return r;
	for (uint32_t i = 0; r == 0 && i < n; i++)
		if (unlinkat(sp->tmpfd, names[i], 0) < 0 && errno != ENOENT)
			r = -errno;
	if (n > 0)
		log_line("spool=%s writer=%u action=recover removed_tmp=%u", sp->dir, sp->writer,
			 n);
	fsutil_names_free(names, n);
	return r;
}

/* The host part of maildir names: '/' and ':' escaped as maildir readers expect, cut to fit. */
static void md_host_enc(struct spool *sp)
{
	struct sbuf hb = {.p = sp->host_enc, .len = 0, .cap = sizeof(sp->host_enc), .over = false};
	for (const char *h = sp->host; *h && !hb.over; h++) {
		size_t before = hb.len;
		sbuf_puts(&hb, *h == '/' ? "\\057" : *h == ':' ? "\\072" : (char[2]){*h, 0});
		if (hb.over)
			hb.len = before;
	}
	sp->host_enc[hb.len] = 0;
}

static int md_open(struct spool *sp, const char **what)
{
	md_host_enc(sp);
	*what = "maildir";
	int md = fsutil_open_subdir(sp->dirfd, "maildir", true);
	if (md < 0)
		return md;
	int r = sp->tmpfd = fsutil_open_subdir(md, "tmp", true);
	if (r >= 0)
		r = sp->newfd = fsutil_open_subdir(md, "new", true);
	if (r >= 0) {
		int cur = fsutil_open_subdir(md, "cur", true);
		if (cur >= 0)
			close(cur);
		r = cur;
	}
	if (r >= 0)
		r = fsutil_fsync(md);
	close(md);
	/* maildir/ itself, when it was just made: else a power cut may take it away. */
	if (r >= 0)
		r = fsutil_fsync(sp->dirfd);
	if (r < 0)
		return r;
	*what = "recover";
	r = md_recover(sp);
	return r == 0 ? spool_recover_strays(sp, sp->tmpfd, tmp_writer_of, md_recover) : r;
}

static size_t md_arena_cap(uint32_t rcpt_max)
{
	return (size_t)MD_HDR_MAX_FOR(rcpt_max) + SPOOL_TRACE_MAX;
}

/* A Maildir is not rotated: nothing to do when the writer is idle. */
static int md_idle_ms(const struct spool *sp)
{
	(void)sp;
	return -1;
}

static void md_idle(struct spool *sp)
{
	(void)sp;
}

const struct spool_ops maildir_ops = {
    .arena_cap = md_arena_cap,
    .open = md_open,
    .write = md_write,
    .sync = md_sync,
    .close = md_sync,
    .idle_ms = md_idle_ms,
    .idle = md_idle,
    .discard = md_discard,
};
