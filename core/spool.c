/*
 * spool.c - the writer's front (spool.h): argument checks, the writer's
 * lock, the in-flight table, the write buffer, and the choice of format,
 * whose own work is in segment.c and maildir.c behind sp->ops
 * (spool_int.h).
 *
 * Invariants of the writer side:
 *  - every table, buffer and loop has a bound fixed at spool_open;
 *  - a msg is checked (msg_check), admitted against its in-flight entry
 *    (msg_admit), written by the format, and its outcome booked
 *    (msg_done), in that order and nowhere else: the formats never add or
 *    free in-flight entries themselves;
 *  - a message that failed stays failed: its later parts and FINAL get the
 *    same error until its FINAL, its ABORT or an eviction frees the entry.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "maildir.h"
#include "qidmap.h"
#include "segment.h"
#include "spool.h"
#include "spool_int.h"
#include "spoolrec.h"

int spool_mkdir(const char *dir)
{
	char path[4096];
	size_t len = strlen(dir);
	if (len == 0 || len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != 0)
			continue;
		char c = path[i];
		path[i] = 0;
		if (mkdir(path, 0750) == 0) {
			int r = fsutil_fsync_parent(path);
			if (r < 0)
				return r;
		} else if (errno != EEXIST) {
			return -errno;
		}
		path[i] = c;
	}
	return 0;
}

/* ---- in-flight table ---- */

static struct inflight *ent_get(struct spool *sp, const char *qid)
{
	uint32_t *v = qidmap_find(&sp->map, qid);
	return v ? &sp->ent[*v] : NULL;
}

static void ent_evict(struct spool *sp);

/* A new entry for qid; when the table is full the least recently written one goes. */
static struct inflight *ent_add(struct spool *sp, const char *qid)
{
	if (sp->free_head == UINT32_MAX)
		ent_evict(sp);
	if (sp->free_head == UINT32_MAX)
		return NULL;
	uint32_t i = sp->free_head;
	if (qidmap_put(&sp->map, qid, i) < 0)
		return NULL;
	struct inflight *e = &sp->ent[i];
	sp->free_head = e->next_free;
	memset(e, 0, sizeof(*e));
	e->fd = -1;
	e->next_free = UINT32_MAX;
	memcpy(e->qid, qid, strnlen(qid, QID_LEN));
	e->touch = ++sp->touch;
	sp->nlive++;
	return e;
}

/* Forgets e and what the format holds for it; e may be a table entry or a caller's local one. */
static void ent_del(struct spool *sp, struct inflight *e)
{
	sp->ops->discard(sp, e);
	if (e < sp->ent || e >= sp->ent + sp->ent_cap)
		return;
	qidmap_del(&sp->map, e->qid);
	e->qid[0] = 0;
	e->next_free = sp->free_head;
	sp->free_head = (uint32_t)(e - sp->ent);
	sp->nlive--;
}

/*
 * The table is full: a shard whose ring was full dropped an ABORT, or more
 * transactions are open than inflight_max. Forgetting the oldest one is
 * safe: its parts become orphans, and a later part of it fails (-ENOBUFS).
 */
static void ent_evict(struct spool *sp)
{
	struct inflight *old = NULL;
	for (uint32_t i = 0; i < sp->ent_cap; i++)
		if (sp->ent[i].qid[0] && (!old || sp->ent[i].touch < old->touch))
			old = &sp->ent[i];
	if (!old)
		return;
	log_line("spool=%s writer=%u qid=%s action=evict in_flight=%u", sp->dir, sp->writer,
		 old->qid, sp->nlive);
	ent_del(sp, old);
}

static void ent_fail(struct spool *sp, struct inflight *e, int err)
{
	if (!e->err)
		e->err = err;
	sp->ops->discard(sp, e);
}

void spool_ent_fail_dirty(struct spool *sp, int err)
{
	for (uint32_t i = 0; i < sp->ent_cap && sp->nlive > 0; i++) {
		struct inflight *e = &sp->ent[i];
		if (e->qid[0] && e->gen == sp->gen)
			ent_fail(sp, e, err);
	}
	sp->gen++;
}

/* ---- buffered pwritev ---- */

void spool_wb_drop(struct spool *sp)
{
	sp->niov = 0;
	sp->wb_bytes = 0;
	sp->arena_len = 0;
}

int spool_wb_flush(struct spool *sp)
{
	if (sp->niov == 0)
		return 0;
	int r = fsutil_pwritev_all(sp->wb_fd, sp->iov, sp->niov, *sp->wb_off);
	if (r == 0)
		*sp->wb_off += sp->wb_bytes;
	else if (!sp->batch_err)
		sp->batch_err = r;
	spool_wb_drop(sp);
	return r;
}

int spool_wb_add(struct spool *sp, const void *base, size_t len)
{
	if (len == 0)
		return 0;
	if (sp->niov == SPOOL_IOV_MAX) {
		int r = spool_wb_flush(sp);
		if (r < 0)
			return r;
	}
	sp->iov[sp->niov].iov_base = (void *)base;
	sp->iov[sp->niov].iov_len = len;
	sp->niov++;
	sp->wb_bytes += len;
	return 0;
}

int spool_wb_arena(struct spool *sp, size_t need, uint8_t **p)
{
	if (need > sp->arena_cap)
		return -EMSGSIZE;
	if (need > sp->arena_cap - sp->arena_len || sp->niov == SPOOL_IOV_MAX) {
		int r = spool_wb_flush(sp);
		if (r < 0)
			return r;
	}
	*p = sp->arena + sp->arena_len;
	return 0;
}

/* ---- checks common to both formats ---- */

/*
 * Decides whether m may be written: 0 (then *ep is its table entry, NULL for
 * a one-part message), or the error the message fails with.
 */
static int msg_admit(struct spool *sp, const struct msg *m, struct inflight **ep)
{
	struct inflight *e = *ep;
	uint64_t sum = 0;

	for (uint32_t i = 0; i < m->nslices; i++)
		sum += m->slices[i].len;
	if (sum != m->part_bytes || (m->nslices && !m->slices))
		return -EINVAL;
	if (m->part == 0) {
		if (e) {
			log_line(
			    "spool=%s writer=%u qid=%s error=\"part 0 again without an abort\"",
			    sp->dir, sp->writer, e->qid);
			ent_del(sp, e);
			*ep = e = NULL;
		}
		if (m->body_offset != 0)
			return -EPROTO;
		if (m->kind == MSG_PART) {
			e = ent_add(sp, m->env->qid);
			if (!e)
				return -ENOBUFS;
			*ep = e;
		}
		return 0;
	}
	if (!e)
		return -ENOBUFS; /* its part 0 was refused: nothing to add to */
	if (e->err)
		return e->err;
	if (m->part != e->next_part || m->body_offset != e->next_off)
		return -EPROTO;
	return 0;
}

/* Books the outcome r of m for its entry e. Returns r. */
static int msg_done(struct spool *sp, const struct msg *m, struct inflight *e, int r)
{
	if (r < 0) {
		if (e && m->kind == MSG_FINAL)
			ent_del(sp, e);
		else if (e)
			ent_fail(sp, e, r);
		return r;
	}
	if (m->kind == MSG_FINAL) {
		sp->final_pending = true;
		if (e)
			ent_del(sp, e);
		return 0;
	}
	e->next_part++;
	e->next_off += m->part_bytes;
	e->gen = sp->gen;
	e->touch = ++sp->touch;
	return 0;
}

static int msg_check(const struct msg *m)
{
	if (!m || !m->env || !spoolrec_qid_valid(m->env->qid))
		return -EINVAL;
	if (m->kind != MSG_PART && m->kind != MSG_FINAL && m->kind != MSG_ABORT)
		return -EINVAL;
	return 0;
}

/* ---- public ---- */

static void spool_free(struct spool *sp)
{
	for (uint32_t i = 0; sp->ent && i < sp->ent_cap; i++)
		if (sp->ent[i].qid[0])
			sp->ops->discard(sp, &sp->ent[i]);
	fsutil_close(&sp->segfd);
	fsutil_close(&sp->activefd);
	fsutil_close(&sp->readyfd);
	fsutil_close(&sp->tmpfd);
	fsutil_close(&sp->newfd);
	fsutil_close(&sp->dirfd);
	fsutil_close(&sp->lockfd); /* releases the flock */
	qidmap_free(&sp->map);
	free(sp->ent);
	free(sp->done);
	free(sp->iov);
	free(sp->arena);
	free(sp->scratch);
	free(sp);
}

static int spool_alloc(struct spool *sp, const struct config *cfg, unsigned batch_max,
		       unsigned inflight_max)
{
	uint32_t rcpt_max = cfg->recipient_limit;
	if (rcpt_max == 0 || rcpt_max > RCPT_LIMIT_MAX)
		rcpt_max = RCPT_LIMIT_MAX;
	sp->arena_cap = sp->ops->arena_cap(rcpt_max);
	sp->iov = calloc(SPOOL_IOV_MAX, sizeof(*sp->iov));
	sp->arena = malloc(sp->arena_cap);
	sp->scratch = malloc(SPOOL_SCRATCH_SIZE);
	sp->ent = calloc(inflight_max, sizeof(*sp->ent));
	sp->done = calloc(batch_max, sizeof(*sp->done));
	if (!sp->iov || !sp->arena || !sp->scratch || !sp->ent || !sp->done ||
	    qidmap_init(&sp->map, inflight_max) < 0)
		return -ENOMEM;
	sp->ent_cap = inflight_max;
	for (uint32_t i = 0; i < inflight_max; i++) {
		sp->ent[i].fd = -1;
		sp->ent[i].next_free = i + 1 < inflight_max ? i + 1 : UINT32_MAX;
	}
	sp->free_head = 0;
	sp->batch_max = batch_max;
	return 0;
}

int spool_recover_strays(struct spool *sp, int dirfd, bool (*writer_of)(const char *, unsigned *),
			 int (*recover)(struct spool *sp))
{
	char **names;
	uint32_t count;
	uint64_t mask = 0;
	int r = fsutil_dir_list(dirfd, NULL, NULL, &names, &count);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < count; i++) {
		unsigned n;
		if (writer_of(names[i], &n) && n >= sp->nwriters && n < WRITERS_MAX &&
		    n % sp->nwriters == sp->writer)
			mask |= 1ull << n;
	}
	fsutil_names_free(names, count);
	unsigned self = sp->writer;
	for (unsigned n = 0; r == 0 && n < WRITERS_MAX; n++) {
		if (!(mask & 1ull << n))
			continue;
		int fd = fsutil_lock_writer(sp->dirfd, n);
		if (fd == -EBUSY)
			continue;
		if (fd < 0)
			return fd;
		sp->writer = n; /* the file names and log lines are n's */
		r = recover(sp);
		sp->writer = self;
		close(fd);
	}
	return r;
}

static void spool_init(struct spool *sp, const struct config *cfg, unsigned writer)
{
	sp->lockfd = sp->dirfd = sp->activefd = sp->readyfd = sp->tmpfd = sp->newfd = -1;
	sp->segfd = -1;
	sp->ops = cfg->spool_format == SPOOL_MAILDIR ? &maildir_ops : &segment_ops;
	sp->writer = writer;
	sp->nwriters = cfg->writers;
	sp->segment_size = cfg->segment_size;
	sp->max_age_ms = (uint64_t)cfg->segment_max_age * 1000;
	snprintf(sp->dir, sizeof(sp->dir), "%s", cfg->spool_dir);
	snprintf(sp->host, sizeof(sp->host), "%s",
		 cfg->myhostname[0] ? cfg->myhostname : "localhost");
}

int spool_open(const struct config *cfg, unsigned writer, unsigned batch_max, unsigned inflight_max,
	       struct spool **out)
{
	if (cfg->writers == 0 || cfg->writers > WRITERS_MAX || writer >= cfg->writers ||
	    batch_max == 0 || batch_max > SPOOL_BATCH_MAX || inflight_max == 0 ||
	    inflight_max > SPOOL_INFLIGHT_MAX || cfg->spool_dir[0] == 0)
		return -EINVAL;
	struct spool *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	spool_init(sp, cfg, writer);
	const char *what = "memory";
	int r = spool_alloc(sp, cfg, batch_max, inflight_max);
	if (r == 0) {
		what = "create";
		r = spool_mkdir(sp->dir);
	}
	if (r == 0) {
		sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = sp->dirfd < 0 ? -errno : 0;
	}
	if (r == 0) {
		what = "lock (is another mxring using it?)";
		r = sp->lockfd = fsutil_lock_writer(sp->dirfd, writer);
	}
	if (r >= 0)
		r = sp->ops->open(sp, &what);
	if (r < 0) {
		fprintf(stderr, "mxring: spool %s writer %u: %s: %s\n", sp->dir, writer, what,
			strerror(-r));
		spool_free(sp);
		return r;
	}
	*out = sp;
	return 0;
}

int spool_write(struct spool *sp, const struct msg *m)
{
	int r = msg_check(m);
	if (r < 0)
		return r;
	if (sp->batch_n >= sp->batch_max)
		return -ENOBUFS;
	sp->batch_n++;
	struct inflight *e = ent_get(sp, m->env->qid);
	if (m->kind == MSG_ABORT) {
		if (e)
			ent_del(sp, e);
		return 0;
	}
	r = msg_admit(sp, m, &e);
	if (r == 0)
		r = sp->ops->write(sp, m, e);
	return msg_done(sp, m, e, r);
}

int spool_sync(struct spool *sp)
{
	sp->batch_n = 0;
	return sp->ops->sync(sp);
}

int spool_idle_ms(const struct spool *sp)
{
	return sp->ops->idle_ms(sp);
}

void spool_idle(struct spool *sp)
{
	sp->ops->idle(sp);
}

uint64_t spool_syncs(const struct spool *sp)
{
	return sp->syncs;
}

int spool_close(struct spool *sp)
{
	if (!sp)
		return 0;
	int r = sp->ops->close(sp);
	if (r < 0)
		fprintf(stderr, "mxring: spool %s writer %u: close: %s\n", sp->dir, sp->writer,
			strerror(-r));
	spool_free(sp);
	return r;
}

void spool_position(const struct spool *sp, struct spool_pos *out)
{
	unsigned writer;
	memset(out, 0, sizeof(*out));
	if (sp->ops != &segment_ops ||
	    !segment_name_parse(sp->segname, &writer, &out->run_us, &out->seq))
		return;
	out->valid = true;
	out->active = sp->segfd >= 0;
	out->synced_off = sp->synced_off;
}
