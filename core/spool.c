/*
 * spool.c - segment and maildir spools (writer side) and the spool reader.
 *
 * The formats are described in spool.h. Invariants of the writer side:
 *  - body bytes go from the msg's slices to pwritev; nothing copies them.
 *    Record headers, envelopes and trace headers are built in a bounded
 *    arena and written in the same pwritev as the bodies that follow them;
 *  - synced_off <= flushed_off <= end_off: everything before synced_off is
 *    durable, before flushed_off handed to the kernel, before end_off queued
 *    in the iovec array;
 *  - after a failed batch the segment is cut back to synced_off, and every
 *    message with a record past it is remembered as failed (the in-flight
 *    table) until its FINAL or ABORT;
 *  - every table, buffer and loop has a bound fixed at spool_open.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "crc32c.h"
#include "fsutil.h"
#include "le.h"
#include "log.h"
#include "qidmap.h"
#include "sbuf.h"
#include "spool.h"
#include "spoolrec.h"
#include "trace.h"

/* Maildir header lines: every byte may be escaped as \xHH (4 bytes). */
#define MD_LINE_SLACK 64
#define MD_HDR_MAX_FOR(n)                                                                          \
	(MD_LINE_SLACK * 2 + 4 * (uint64_t)SPOOL_ENV_STRINGS_MAX + 128 +                           \
	 (uint64_t)(n) * (4 * PATH_MAX_OCTETS + MD_LINE_SLACK))
#define SEG_NAME_LEN  33 /* "wNN-" 16 hex "-" 8 hex ".seg" */
#define SEG_SEQ_TRIES 64 /* names tried when one already exists */

static_assert(WRITERS_MAX <= 100, "writer numbers are two digits in names");

/* ---- small helpers ---- */

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

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

/* ---- text building ---- */

/* Escapes a path (value = false) or a key=value value (value = true) as \xHH. */
static void sb_put_escaped(struct sbuf *b, const char *s, size_t max, bool value)
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

/* Parses "wNN-<16 hex>-<8 hex>.seg". */
static bool seg_name_parse(const char *name, unsigned *writer, uint64_t *run_us, uint32_t *seq)
{
	if (strlen(name) != SEG_NAME_LEN || name[0] != 'w' || name[3] != '-' || name[20] != '-' ||
	    strcmp(name + 29, ".seg") != 0)
		return false;
	unsigned w = 0;
	uint64_t run = 0;
	uint32_t s = 0;
	for (int i = 1; i < 29; i++) {
		char c = name[i];
		if (i == 3 || i == 20)
			continue;
		if (i < 3) {
			if (c < '0' || c > '9')
				return false;
			w = w * 10 + (unsigned)(c - '0');
			continue;
		}
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		if (i < 20)
			run = run << 4 | d;
		else
			s = s << 4 | d;
	}
	*writer = w;
	*run_us = run;
	*seq = s;
	return true;
}

/* The writer a segment or tmp/ file name belongs to. */
static bool seg_writer_of(const char *name, unsigned *n)
{
	uint64_t run;
	uint32_t seq;
	return seg_name_parse(name, n, &run, &seq);
}

static bool tmp_writer_of(const char *name, unsigned *n)
{
	const char *dot = strrchr(name, '.');
	if (!dot || dot[1] != 'w' || strlen(dot) != 4 || dot[2] < '0' || dot[2] > '9' ||
	    dot[3] < '0' || dot[3] > '9')
		return false;
	*n = (unsigned)(dot[2] - '0') * 10 + (unsigned)(dot[3] - '0');
	return true;
}

/* ======================= writer side ======================= */

/* A message whose parts were written and whose FINAL or ABORT has not come. */
struct inflight {
	uint64_t next_off;     /* client body bytes stored so far */
	uint64_t file_off;     /* maildir: bytes in the tmp file */
	uint64_t gen;	       /* sp->gen when its last record was queued */
	uint64_t touch;	       /* sp->touch when it was last written: eviction order */
	uint32_t next_part;    /* the part expected next */
	uint32_t trace_len;    /* of the trace header written with part 0 */
	uint32_t next_free;    /* free list link */
	int err;	       /* 0, or why the message failed */
	int fd;		       /* maildir: the tmp file (owned), else -1 */
	char qid[QID_LEN + 1]; /* "" when the entry is free */
};

/* A maildir FINAL renamed into new/ in this batch, until new/ is fsync'ed. */
struct md_done {
	uint64_t time_us;
	char qid[QID_LEN + 1];
};

struct spool {
	enum spool_format format;
	unsigned writer;
	unsigned nwriters;
	uint64_t segment_size;
	uint64_t max_age_ms; /* segment_max_age; 0 = rotate by size only */
	char dir[sizeof(((struct config *)0)->spool_dir)];
	char host[DOMAIN_MAX + 1];
	char host_enc[MAILDIR_HOST_MAX + 1]; /* host as a maildir name part, cut */
	int lockfd;
	int dirfd;
	int activefd, readyfd; /* segment */
	int tmpfd, newfd;      /* maildir */

	/* Segment being appended to. */
	int segfd;
	char segname[SEG_NAME_LEN + 1];
	uint64_t run_us; /* spool_open time: the run part of segment names */
	uint32_t seq;
	uint32_t seed;	       /* CRC seed of the segment's records */
	uint64_t end_off;      /* end of the records queued so far */
	uint64_t first_ms;     /* monotonic ms of its first record (0: none yet) */
	uint64_t flushed_off;  /* end of what pwritev has taken */
	uint64_t synced_off;   /* end of what fdatasync has made durable */
	bool final_pending;    /* a FINAL was queued since the last sync */
	bool need_truncate;    /* cutting back after a failure failed: retry */
	int batch_err;	       /* first failure of this batch */
	int repair_err;	       /* seg_repair failed in this batch: not tried again in it */
	uint64_t repair_fails; /* batches seg_repair failed in since it last worked */

	unsigned batch_n, batch_max;
	uint64_t gen;	/* bumped at each successful sync and each failure */
	uint64_t touch; /* counts writes, for in-flight eviction */
	uint64_t syncs;

	/* Pending pwritev: iov[0..niov) of wb_bytes, to wb_fd at *wb_off. */
	struct iovec *iov; /* owned: SPOOL_IOV_MAX */
	unsigned niov;
	uint64_t wb_bytes;
	int wb_fd;
	uint64_t *wb_off;
	uint8_t *arena; /* owned: record headers, envelopes, traces */
	size_t arena_len, arena_cap;
	uint8_t *scratch; /* owned: SPOOL_SCRATCH_SIZE, recovery reads */

	struct qidmap map;    /* qid -> index in ent */
	struct inflight *ent; /* owned: ent_cap */
	uint32_t ent_cap, free_head, nlive;

	struct md_done *done; /* owned: batch_max */
	unsigned ndone;
};

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

static void md_tmp_name(const struct spool *sp, const char *qid, char *name, size_t cap)
{
	snprintf(name, cap, "%s.w%02u", qid, sp->writer);
}

/* Maildir: closes and unlinks the tmp file of e, if it has one. */
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

/* Forgets e: its tmp file goes; e may be a table entry or a caller's local one. */
static void ent_del(struct spool *sp, struct inflight *e)
{
	md_discard(sp, e);
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
	md_discard(sp, e);
}

/* A batch failed: every message with a record queued since the last sync failed. */
static void ent_fail_dirty(struct spool *sp, int err)
{
	for (uint32_t i = 0; i < sp->ent_cap && sp->nlive > 0; i++) {
		struct inflight *e = &sp->ent[i];
		if (e->qid[0] && e->gen == sp->gen)
			ent_fail(sp, e, err);
	}
	sp->gen++;
}

/* ---- buffered pwritev ---- */

static void wb_drop(struct spool *sp)
{
	sp->niov = 0;
	sp->wb_bytes = 0;
	sp->arena_len = 0;
}

static int wb_flush(struct spool *sp)
{
	if (sp->niov == 0)
		return 0;
	int r = fsutil_pwritev_all(sp->wb_fd, sp->iov, sp->niov, *sp->wb_off);
	if (r == 0)
		*sp->wb_off += sp->wb_bytes;
	else if (sp->format == SPOOL_SEGMENT && !sp->batch_err)
		sp->batch_err = r;
	wb_drop(sp);
	return r;
}

static int wb_add(struct spool *sp, const void *base, size_t len)
{
	if (len == 0)
		return 0;
	if (sp->niov == SPOOL_IOV_MAX) {
		int r = wb_flush(sp);
		if (r < 0)
			return r;
	}
	sp->iov[sp->niov].iov_base = (void *)base;
	sp->iov[sp->niov].iov_len = len;
	sp->niov++;
	sp->wb_bytes += len;
	return 0;
}

/*
 * Room for need bytes of metadata in the arena, and for its iovec, flushing
 * first if needed. A flush empties the arena: the one for a full iovec array
 * must come here, before the metadata is built, not in the wb_add that
 * queues it, which would leave that metadata in arena space the next
 * records are built in.
 */
static int wb_arena(struct spool *sp, size_t need, uint8_t **p)
{
	if (need > sp->arena_cap)
		return -EMSGSIZE;
	if (need > sp->arena_cap - sp->arena_len || sp->niov == SPOOL_IOV_MAX) {
		int r = wb_flush(sp);
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

/* ---- segment format ---- */

/* The order of the segment offsets (file header); checked where they move. */
static void seg_check_offsets(const struct spool *sp)
{
	ASSERT(sp->synced_off <= sp->flushed_off && sp->flushed_off <= sp->end_off);
}

static uint64_t random_salt(void)
{
	uint64_t v;
	if (getrandom(&v, sizeof(v), 0) == (ssize_t)sizeof(v))
		return v;
	/* No getrandom: still differs per segment, which is what matters most. */
	return now_us() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&v;
}

/* The first record of a segment: its salt, seeding the CRC of every later record. */
static int seg_write_header(struct spool *sp, int fd)
{
	uint8_t b[SPOOL_SEG_REC_LEN];
	uint64_t salt = random_salt();
	struct spoolrec_hdr h = {
	    .type = SPOOL_REC_SEGMENT,
	    .rec_len = SPOOL_SEG_REC_LEN,
	    .body_len = SPOOL_SEG_PAYLOAD,
	};
	spoolrec_hdr_encode(b, &h);
	uint8_t *pl = b + SPOOL_REC_HDR_LEN;
	le_put64(pl, salt);
	le_put64(pl + 8, sp->run_us);
	le_put32(pl + 16, sp->writer);
	le_put32(pl + 20, sp->seq - 1);
	uint32_t c = spoolrec_crc_start(0, b, SPOOL_REC_HDR_LEN);
	le_put32(b + 16, crc32c(c, pl, SPOOL_SEG_PAYLOAD));
	struct iovec iov = {.iov_base = b, .iov_len = sizeof(b)};
	int r = fsutil_pwritev_all(fd, &iov, 1, 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	sp->seed = spoolrec_seed(salt);
	return r;
}

static int seg_create(struct spool *sp)
{
	int fd = -1;
	for (int i = 0; i < SEG_SEQ_TRIES && fd < 0; i++) {
		snprintf(sp->segname, sizeof(sp->segname), "w%02u-%016" PRIx64 "-%08" PRIx32 ".seg",
			 sp->writer, sp->run_us, sp->seq++);
		fd = openat(sp->activefd, sp->segname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			    0640);
		if (fd < 0 && errno != EEXIST)
			return -errno;
	}
	if (fd < 0)
		return -EEXIST;
	/* The name must be durable before any record in the file is acknowledged. */
	int r = seg_write_header(sp, fd);
	if (r == 0)
		r = fsutil_fsync(sp->activefd);
	if (r < 0) {
		close(fd);
		unlinkat(sp->activefd, sp->segname, 0);
		return r;
	}
	sp->segfd = fd;
	sp->first_ms = 0;
	sp->end_off = sp->flushed_off = sp->synced_off = SPOOL_SEG_REC_LEN;
	seg_check_offsets(sp);
	sp->wb_fd = fd;
	sp->wb_off = &sp->flushed_off;
	return 0;
}

/* Queues the record of m (see the format in spool.h). */
static int seg_queue(struct spool *sp, const struct msg *m, struct inflight *e)
{
	const struct envelope *env = m->env;
	bool first = m->part == 0;
	uint64_t env_len = 0;
	if (m->kind == MSG_FINAL) {
		env_len = spoolrec_env_size(env);
		if (env_len == 0)
			return -EINVAL;
	}
	if (SPOOL_REC_HDR_LEN + env_len + SPOOL_TRACE_MAX + m->part_bytes > SPOOL_REC_MAX)
		return -EMSGSIZE;

	uint8_t *p;
	size_t meta_max = SPOOL_REC_HDR_LEN + env_len + (first ? SPOOL_TRACE_MAX : 0);
	int r = wb_arena(sp, meta_max, &p);
	if (r < 0)
		return r;
	uint32_t trace_len = 0;
	if (first) {
		trace_len = (uint32_t)trace_format((char *)p + SPOOL_REC_HDR_LEN + env_len,
						   SPOOL_TRACE_MAX, env, sp->host);
		if (trace_len == 0)
			return -EINVAL;
	}
	uint32_t msg_trace = first ? trace_len : e->trace_len;
	if (m->kind == MSG_FINAL)
		spoolrec_env_encode(p + SPOOL_REC_HDR_LEN, env, msg_total_bytes(m), m->part + 1,
				    msg_trace);

	struct spoolrec_hdr h = {
	    .type = m->kind == MSG_FINAL ? SPOOL_REC_FINAL : SPOOL_REC_PART,
	    .rec_len = (uint32_t)(SPOOL_REC_HDR_LEN + env_len + trace_len + m->part_bytes),
	    .crc = 0,
	    .part = m->part,
	    .body_off = m->body_offset,
	    .env_len = (uint32_t)env_len,
	    .trace_len = trace_len,
	    .body_len = m->part_bytes,
	};
	memcpy(h.qid, env->qid, sizeof(h.qid));
	spoolrec_hdr_encode(p, &h);
	size_t meta = SPOOL_REC_HDR_LEN + env_len + trace_len;
	uint32_t c = spoolrec_crc_start(sp->seed, p, SPOOL_REC_HDR_LEN);
	c = crc32c(c, p + SPOOL_REC_HDR_LEN, meta - SPOOL_REC_HDR_LEN);
	for (uint32_t i = 0; i < m->nslices; i++)
		c = crc32c(c, m->slices[i].base, m->slices[i].len);
	le_put32(p + 16, c);

	sp->arena_len += meta;
	if (e && first)
		e->trace_len = trace_len;
	sp->end_off += h.rec_len;
	/* wb_arena made room: this wb_add must not flush (and empty the arena). */
	ASSERT(sp->niov < SPOOL_IOV_MAX);
	r = wb_add(sp, p, meta);
	for (uint32_t i = 0; r == 0 && i < m->nslices; i++)
		r = wb_add(sp, m->slices[i].base, m->slices[i].len);
	seg_check_offsets(sp);
	return r;
}

/* Cuts the segment back to its last synced record. */
static int seg_truncate(struct spool *sp)
{
	if (ftruncate(sp->segfd, (off_t)sp->synced_off) < 0 || fdatasync(sp->segfd) < 0) {
		sp->need_truncate = true;
		return -errno;
	}
	sp->need_truncate = false;
	return 0;
}

/*
 * The batch failed in op (write, fdatasync): everything after synced_off is
 * cut. On Linux a failed fdatasync leaves the pages it could not write
 * marked clean, so a later one succeeds without them: those bytes are never
 * counted as stored. The cut (ftruncate, fdatasync) also takes them out of
 * the page cache, where a reader would otherwise see records that a reboot
 * loses, and has the block that holds synced_off written again (truncation
 * zeroes its tail). Appending goes on in the same segment once the cut is
 * durable (seg_repair).
 */
static void seg_fail(struct spool *sp, const char *op, int err)
{
	wb_drop(sp);
	ent_fail_dirty(sp, err);
	sp->final_pending = false;
	sp->batch_err = 0;
	sp->end_off = sp->flushed_off = sp->synced_off;
	seg_check_offsets(sp);
	int r = sp->segfd >= 0 ? seg_truncate(sp) : 0;
	if (r < 0)
		log_line("spool=%s writer=%u segment=%s op=%s error=\"%s\" cut_to=%" PRIu64
			 " cut=failed cut_error=\"%s\"",
			 sp->dir, sp->writer, sp->segname, op, strerror(-err), sp->synced_off,
			 strerror(-r));
	else
		log_line("spool=%s writer=%u segment=%s op=%s error=\"%s\" cut_to=%" PRIu64
			 " cut=done",
			 sp->dir, sp->writer, sp->segname, op, strerror(-err), sp->synced_off);
}

/*
 * Makes the segment writable again after a failure: the cut that did not
 * become durable, or a new segment when creating one failed. Tried at most
 * once per batch: a failing disk may take long to answer each try, and every
 * msg of the batch would fail alike. 0 when the spool may append.
 */
static int seg_repair(struct spool *sp)
{
	if (sp->repair_err)
		return sp->repair_err;
	bool cut = sp->need_truncate;
	int r = cut ? seg_truncate(sp) : 0;
	if (r == 0 && sp->segfd < 0)
		r = seg_create(sp);
	if (r < 0) {
		sp->repair_err = r;
		sp->repair_fails++;
		return r;
	}
	/* The disk works again: say so, and for how many batches it did not. */
	if (cut)
		log_line("spool=%s writer=%u segment=%s action=cut cut_to=%" PRIu64
			 " result=ok batches_failed=%" PRIu64,
			 sp->dir, sp->writer, sp->segname, sp->synced_off, sp->repair_fails);
	else
		log_line(
		    "spool=%s writer=%u segment=%s action=create result=ok batches_failed=%" PRIu64,
		    sp->dir, sp->writer, sp->segname, sp->repair_fails);
	sp->repair_fails = 0;
	return 0;
}

static int seg_write(struct spool *sp, const struct msg *m)
{
	struct inflight *e = ent_get(sp, m->env->qid);
	if (m->kind == MSG_ABORT) {
		if (e)
			ent_del(sp, e);
		return 0;
	}
	int r = msg_admit(sp, m, &e);
	if (r == 0 && sp->batch_err)
		r = sp->batch_err;
	if (r == 0 && (sp->need_truncate || sp->segfd < 0))
		r = seg_repair(sp);
	if (r == 0)
		r = seg_queue(sp, m, e);
	if (r == 0 && sp->first_ms == 0)
		sp->first_ms = mono_ms();
	return msg_done(sp, m, e, r);
}

/* Whether the segment may move into ready/: durable to its end, as
 * recovery (which reads only active/) would find it. */
static bool seg_durable(const struct spool *sp)
{
	return sp->segfd >= 0 && !sp->need_truncate && sp->synced_off == sp->end_off;
}

/* Whether its first record is segment_max_age old. */
static bool seg_aged(const struct spool *sp, uint64_t now)
{
	return sp->max_age_ms && sp->first_ms && now - sp->first_ms >= sp->max_age_ms;
}

static bool seg_same_file(const struct spool *sp, const char *name)
{
	struct stat a, b;
	return fstatat(sp->activefd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	       fstatat(sp->readyfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/*
 * First half of moving segment name from active/ into ready/: a second
 * name in ready/ for the same file. The name in active/ may go only once
 * ready/ is synced (seg_unlink_active): a rename would take it out of
 * active/ at once, and where a file system does not commit both halves of
 * a rename together, an fsync of active/ by another writer before ours of
 * ready/ could leave the segment, acknowledged messages and all, under no
 * name after a power cut. Without hard links (vfat) it is a rename.
 */
static int seg_link_ready(struct spool *sp, const char *name)
{
	if (linkat(sp->activefd, name, sp->readyfd, name, 0) == 0)
		return 0;
	if (errno == EEXIST && seg_same_file(sp, name)) {
		/* Linked before a crash: the one file has both names already. */
		log_line("spool=%s writer=%u action=recover segment=%s second_name=found", sp->dir,
			 sp->writer, name);
		return 0;
	}
	if (errno == EPERM || errno == ENOSYS || errno == EOPNOTSUPP)
		return fsutil_rename_noreplace(sp->activefd, name, sp->readyfd, name);
	return -errno;
}

/* Second half: ready/ is synced with the segment in it; its name in active/ goes. */
static int seg_unlink_active(struct spool *sp, const char *name)
{
	if (!seg_same_file(sp, name))
		return 0; /* moved by a rename, or gone: nothing to take away */
	return unlinkat(sp->activefd, name, 0) < 0 ? -errno : 0;
}

/* Moves a finished, synced segment into ready/. */
static int seg_retire(struct spool *sp)
{
	int r = seg_link_ready(sp, sp->segname);
	if (r < 0)
		return r;
	r = fsutil_fsync(sp->readyfd);
	if (r == 0)
		r = seg_unlink_active(sp, sp->segname);
	/* A failed sync of ready/ leaves both names: recovery or a reader takes ready/'s. */
	int r2 = fsutil_fsync(sp->activefd);
	fsutil_close(&sp->segfd);
	return r < 0 ? r : r2;
}

static void seg_rotate(struct spool *sp)
{
	char old[SEG_NAME_LEN + 1];
	memcpy(old, sp->segname, sizeof(old));
	int r = seg_retire(sp);
	if (r < 0 && sp->segfd >= 0) {
		/* Still in active/: append on; the next sync tries again. */
		log_line("spool=%s writer=%u action=rotate segment=%s error=\"%s\"", sp->dir,
			 sp->writer, old, strerror(-r));
		return;
	}
	if (r < 0)
		log_line("spool=%s writer=%u action=rotate segment=%s fsync_error=\"%s\"", sp->dir,
			 sp->writer, old, strerror(-r));
	r = seg_create(sp);
	if (r < 0) /* seg_repair tries again, once per batch */
		log_line("spool=%s writer=%u action=create error=\"%s\"", sp->dir, sp->writer,
			 strerror(-r));
}

static int seg_sync(struct spool *sp)
{
	const char *op = "write";
	sp->repair_err = 0; /* the batch ends: the next one may try to repair again */
	int r = sp->batch_err;
	if (r == 0)
		r = wb_flush(sp);
	if (r == 0 && sp->final_pending) {
		op = "fdatasync";
		if (fdatasync(sp->segfd) < 0) {
			r = -errno;
		} else {
			sp->synced_off = sp->flushed_off;
			seg_check_offsets(sp);
			sp->final_pending = false;
			sp->syncs++;
			sp->gen++;
		}
	}
	if (r < 0) {
		seg_fail(sp, op, r);
		return r;
	}
	if (seg_durable(sp) && (sp->end_off >= sp->segment_size || seg_aged(sp, mono_ms())))
		seg_rotate(sp);
	return 0;
}

/* Copies bytes [off, size) of a segment into corrupt/NAME@OFF before they are cut. */
static int seg_quarantine(struct spool *sp, int fd, const char *name, uint64_t off, uint64_t size)
{
	char qname[SEG_NAME_LEN + 32];
	snprintf(qname, sizeof(qname), "%s@%" PRIu64, name, off);
	int dfd = fsutil_open_subdir(sp->dirfd, "corrupt", true);
	if (dfd < 0)
		return dfd;
	int out = openat(dfd, qname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	int r = out < 0 ? -errno : 0;
	for (uint64_t pos = off; r == 0 && pos < size;) {
		size_t n =
		    size - pos < SPOOL_SCRATCH_SIZE ? (size_t)(size - pos) : SPOOL_SCRATCH_SIZE;
		r = fsutil_pread_all(fd, sp->scratch, n, pos);
		struct iovec iov = {.iov_base = sp->scratch, .iov_len = n};
		if (r == 0)
			r = fsutil_pwritev_all(out, &iov, 1, pos - off);
		pos += n;
	}
	if (r == 0 && fdatasync(out) < 0)
		r = -errno;
	if (r == 0)
		r = fsutil_fsync(dfd);
	if (r == 0) /* corrupt/ itself, made at its first use, before the segment is cut */
		r = fsutil_fsync(sp->dirfd);
	if (out >= 0)
		close(out);
	close(dfd);
	if (r == 0)
		log_line(
		    "spool=%s writer=%u action=recover segment=%s saved=corrupt/%s bytes=%" PRIu64,
		    sp->dir, sp->writer, name, qname, size - off);
	return r;
}

/* Checks one segment left in active/, cuts a bad tail, moves it into ready/. */
static int seg_recover_one(struct spool *sp, const char *name)
{
	int fd = openat(sp->activefd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	uint64_t size = r == 0 ? (uint64_t)st.st_size : 0, off = 0, nrec = 0;
	uint32_t seed = 0;
	if (r == 0 && size > 0) {
		r = spoolrec_seg_header(fd, size, sp->scratch, SPOOL_SCRATCH_SIZE, &seed);
		off = r == 0 ? SPOOL_SEG_REC_LEN : 0;
	}
	while (r == 0 && off < size) {
		struct spoolrec_hdr h;
		bool torn;
		r = spoolrec_check(fd, off, size, seed, &h, sp->scratch, SPOOL_SCRATCH_SIZE, &torn);
		if (r == 0 && h.type == SPOOL_REC_SEGMENT)
			r = -EBADMSG;
		if (r == 0) {
			off += h.rec_len;
			nrec++;
		}
	}
	if (r == -EBADMSG) {
		uint64_t next = 0;
		/* Without its header nothing in the file can be checked: keep it all aside. */
		if (off == 0)
			r = size > SPOOL_SEG_REC_LEN ? -E2BIG : -ENOENT;
		else
			r = spoolrec_resync(fd, off, size, seed, &next, sp->scratch,
					    SPOOL_SCRATCH_SIZE);
		if (r == 0 || r == -E2BIG) /* not a torn tail: valid records may follow */
			r = seg_quarantine(sp, fd, name, off, size);
		else if (r == -ENOENT)
			r = 0;
		if (r == 0 && ftruncate(fd, (off_t)off) < 0)
			r = -errno;
		if (r == 0)
			log_line("spool=%s writer=%u action=recover segment=%s records=%" PRIu64
				 " cut_at=%" PRIu64 " cut_bytes=%" PRIu64,
				 sp->dir, sp->writer, name, nrec, off, size - off);
	}
	/* What goes into ready/ must be durable as it is read now. */
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return r;
	if (nrec == 0)
		return unlinkat(sp->activefd, name, 0) < 0 ? -errno : 0;
	return seg_link_ready(sp, name); /* seg_recover takes the name in active/ away */
}

static bool keep_owned_seg(const char *name, void *arg)
{
	const struct spool *sp = arg;
	unsigned w;
	return seg_writer_of(name, &w) && w == sp->writer;
}

static int seg_recover(struct spool *sp)
{
	char **names;
	uint32_t n;
	int r = fsutil_dir_list(sp->activefd, keep_owned_seg, sp, &names, &n);
	if (r < 0)
		return r;
	for (uint32_t i = 0; r == 0 && i < n; i++) {
		r = seg_recover_one(sp, names[i]);
		if (r < 0)
			fprintf(stderr, "mxring: spool %s: recovering active/%s: %s\n", sp->dir,
				names[i], strerror(-r));
	}
	if (r == 0 && n > 0) {
		r = fsutil_fsync(sp->readyfd);
		for (uint32_t i = 0; r == 0 && i < n; i++)
			r = seg_unlink_active(sp, names[i]);
		if (r == 0)
			r = fsutil_fsync(sp->activefd);
		log_line("spool=%s writer=%u action=recover segments=%u", sp->dir, sp->writer, n);
	}
	fsutil_names_free(names, n);
	return r;
}

/* Syncs what is queued and moves the active segment into ready/ (or drops it if empty). */
static int seg_close(struct spool *sp)
{
	if (sp->segfd < 0)
		return 0;
	const char *op = "write";
	int r = sp->batch_err;
	if (r == 0)
		r = wb_flush(sp);
	if (r == 0 && sp->end_off > sp->synced_off) {
		op = "fdatasync";
		if (fdatasync(sp->segfd) < 0)
			r = -errno;
		else
			sp->synced_off = sp->end_off; /* all flushed: flushed_off == end_off */
		seg_check_offsets(sp);
	}
	if (r < 0)
		seg_fail(sp, op, r);
	if (sp->need_truncate) {
		/* Unknown bytes past synced_off: leave it to recovery. No error of the
		 * close (nothing acknowledged is at stake), so spool_close says
		 * nothing of it: say it here. */
		log_line("spool=%s writer=%u segment=%s action=close cut=pending "
			 "result=left_in_active",
			 sp->dir, sp->writer, sp->segname);
		return r;
	}
	if (sp->synced_off <= SPOOL_SEG_REC_LEN) { /* no record: drop it */
		fsutil_close(&sp->segfd);
		if (unlinkat(sp->activefd, sp->segname, 0) < 0)
			return r < 0 ? r : -errno;
		int r2 = fsutil_fsync(sp->activefd);
		return r < 0 ? r : r2;
	}
	int r2 = seg_retire(sp);
	return r < 0 ? r : r2;
}

/* ---- maildir format ---- */

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
	sb_put_escaped(&b, env->from, sizeof(env->from), false);
	sbuf_puts(&b, ">\r\nX-Mxring-Envelope: qid=");
	sb_put_escaped(&b, env->qid, sizeof(env->qid), true);
	sbuf_printf(&b, " time=%" PRIu64 " client=", env->time_us);
	sb_put_escaped(&b, env->client_addr, sizeof(env->client_addr), true);
	sbuf_printf(&b, " port=%u helo=", (unsigned)env->client_port);
	sb_put_escaped(&b, env->helo, sizeof(env->helo), true);
	sbuf_puts(&b, " tls=");
	sb_put_escaped(&b, env->tls, sizeof(env->tls), true);
	sbuf_puts(&b, " host=");
	sb_put_escaped(&b, env->myhostname[0] ? env->myhostname : sp->host, DOMAIN_MAX + 1, true);
	sbuf_printf(&b, " flags=0x%" PRIx32 " rcpts=%" PRIu32 " trace=%zu\r\n", env->flags,
		    env->nrcpt, tl);
	const char *r = env->rcpts;
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		size_t n = strlen(r);
		sbuf_puts(&b, "X-Mxring-Rcpt: <");
		sb_put_escaped(&b, r, n, false);
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
		r = wb_add(sp, sp->arena, len);
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
		r = wb_add(sp, m->slices[i].base, m->slices[i].len);
	if (r == 0)
		r = wb_flush(sp);
	wb_drop(sp);
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

static int md_write(struct spool *sp, const struct msg *m)
{
	struct inflight *e = ent_get(sp, m->env->qid);
	if (m->kind == MSG_ABORT) {
		if (e)
			ent_del(sp, e);
		return 0;
	}
	const char *op = NULL;
	int r = msg_admit(sp, m, &e);
	/* A one-part message needs no table entry: it is done within this call. */
	struct inflight local = {.fd = -1};
	if (r == 0 && !e) {
		memcpy(local.qid, m->env->qid, sizeof(local.qid));
		r = md_queue(sp, m, &local, &op);
		md_log_fail(sp, m->env->qid, op, r);
		md_discard(sp, &local);
		return msg_done(sp, m, NULL, r);
	}
	if (r == 0) {
		r = md_queue(sp, m, e, &op);
		md_log_fail(sp, m->env->qid, op, r);
	}
	return msg_done(sp, m, e, r);
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
		ent_fail_dirty(sp, r);
		log_line("spool=%s writer=%u action=fsync dir=maildir/new error=\"%s\" failed=%u",
			 sp->dir, sp->writer, strerror(-r), sp->ndone);
	} else {
		sp->gen++;
	}
	sp->ndone = 0;
	sp->final_pending = false;
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

/* ---- public: writer side ---- */

static void spool_free(struct spool *sp)
{
	for (uint32_t i = 0; sp->ent && i < sp->ent_cap; i++)
		if (sp->ent[i].qid[0])
			md_discard(sp, &sp->ent[i]);
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

/* Takes wNN.lock in the spool dir: 0 and the fd, -EBUSY, or -errno. */
static int lock_writer(int dirfd, unsigned n)
{
	char name[16];
	snprintf(name, sizeof(name), "w%02u.lock", n);
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int spool_alloc(struct spool *sp, const struct config *cfg, unsigned batch_max,
		       unsigned inflight_max)
{
	uint32_t rcpt_max = cfg->recipient_limit;
	if (rcpt_max == 0 || rcpt_max > RCPT_LIMIT_MAX)
		rcpt_max = RCPT_LIMIT_MAX;
	if (sp->format == SPOOL_MAILDIR)
		sp->arena_cap = (size_t)MD_HDR_MAX_FOR(rcpt_max) + SPOOL_TRACE_MAX;
	else
		sp->arena_cap = SPOOL_REC_HDR_LEN + (size_t)SPOOL_ENV_MAX_FOR(rcpt_max) +
				SPOOL_TRACE_MAX + SPOOL_ARENA_SLACK;
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

/*
 * Recovers what writers >= cfg->writers left in dirfd (the spool once had
 * more writers): writer n is taken over by writer n % cfg->writers, under
 * n's lock, so a process still running writer n is left alone.
 */
static int recover_strays(struct spool *sp, int dirfd, bool (*writer_of)(const char *, unsigned *),
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
		int fd = lock_writer(sp->dirfd, n);
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
	sp->format = cfg->spool_format;
	sp->writer = writer;
	sp->nwriters = cfg->writers;
	sp->segment_size = cfg->segment_size;
	sp->max_age_ms = (uint64_t)cfg->segment_max_age * 1000;
	snprintf(sp->dir, sizeof(sp->dir), "%s", cfg->spool_dir);
	snprintf(sp->host, sizeof(sp->host), "%s",
		 cfg->myhostname[0] ? cfg->myhostname : "localhost");
	/* Maildir name part: '/' and ':' escaped as maildir readers expect, cut to fit. */
	struct sbuf hb = {.p = sp->host_enc, .len = 0, .cap = sizeof(sp->host_enc), .over = false};
	for (const char *h = sp->host; *h && !hb.over; h++) {
		size_t before = hb.len;
		sbuf_puts(&hb, *h == '/' ? "\\057" : *h == ':' ? "\\072" : (char[2]){*h, 0});
		if (hb.over)
			hb.len = before;
	}
	sp->host_enc[hb.len] = 0;
}

static int spool_open_segment(struct spool *sp, const char **what)
{
	*what = "segment dirs";
	int r = sp->activefd = fsutil_open_subdir(sp->dirfd, "active", true);
	if (r >= 0)
		r = sp->readyfd = fsutil_open_subdir(sp->dirfd, "ready", true);
	if (r >= 0)
		r = fsutil_fsync(sp->dirfd);
	if (r < 0)
		return r;
	*what = "recover";
	r = seg_recover(sp);
	if (r == 0)
		r = recover_strays(sp, sp->activefd, seg_writer_of, seg_recover);
	if (r < 0)
		return r;
	*what = "new segment";
	sp->run_us = now_us();
	return seg_create(sp);
}

static int spool_open_maildir(struct spool *sp, const char **what)
{
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
	return r == 0 ? recover_strays(sp, sp->tmpfd, tmp_writer_of, md_recover) : r;
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
		r = sp->lockfd = lock_writer(sp->dirfd, writer);
	}
	if (r >= 0)
		r = sp->format == SPOOL_MAILDIR ? spool_open_maildir(sp, &what)
						: spool_open_segment(sp, &what);
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
	return sp->format == SPOOL_MAILDIR ? md_write(sp, m) : seg_write(sp, m);
}

int spool_sync(struct spool *sp)
{
	sp->batch_n = 0;
	return sp->format == SPOOL_MAILDIR ? md_sync(sp) : seg_sync(sp);
}

int spool_idle_ms(const struct spool *sp)
{
	if (sp->format != SPOOL_SEGMENT || !sp->max_age_ms || !sp->first_ms || !seg_durable(sp))
		return -1;
	uint64_t now = mono_ms(), due = sp->first_ms + sp->max_age_ms;
	if (now >= due)
		return 0;
	return due - now > INT32_MAX ? INT32_MAX : (int)(due - now);
}

void spool_idle(struct spool *sp)
{
	uint64_t now = mono_ms();
	if (sp->format != SPOOL_SEGMENT || !seg_durable(sp) || !seg_aged(sp, now))
		return;
	/* If the rotation fails the segment stays active: try again one age later. */
	sp->first_ms = now;
	seg_rotate(sp);
}

uint64_t spool_syncs(const struct spool *sp)
{
	return sp->syncs;
}

int spool_close(struct spool *sp)
{
	if (!sp)
		return 0;
	int r = sp->format == SPOOL_MAILDIR ? md_sync(sp) : seg_close(sp);
	if (r < 0)
		fprintf(stderr, "mxring: spool %s writer %u: close: %s\n", sp->dir, sp->writer,
			strerror(-r));
	spool_free(sp);
	return r;
}

/* ======================= reader ======================= */

struct rd_file {
	char *rel; /* owned: "ready/NAME" or "active/NAME" */
	const char *name;
	unsigned writer;
	uint64_t run_us;
};

/* Where one part of a message is. */
struct rd_part {
	uint32_t file;
	uint32_t part;
	uint64_t rec_off;
	uint64_t data_off; /* the trace (part 0), then the body */
	uint64_t trace_len;
	uint64_t body_off;
	uint64_t body_len;
};

/* A message whose parts were seen and whose FINAL was not, yet. */
struct rd_pending {
	char qid[QID_LEN + 1]; /* "" when free */
	struct rd_part *parts; /* owned */
	uint32_t nparts, cap;
	uint32_t next_free;
};

enum rd_phase { RD_SEGMENTS = 0, RD_MAILDIR, RD_END };

struct spool_reader {
	int dirfd;
	spool_problem_fn problem;
	void *ctx;
	enum rd_phase phase;
	struct spool_reader_counts counts;

	struct rd_file *files; /* owned: segments in reading order */
	uint32_t nfiles, fi;
	int fd; /* files[fi] being scanned, or -1 */
	uint64_t off, size;
	uint32_t seed;	   /* CRC seed of files[fi] */
	struct qidmap map; /* qid -> index in pend */
	struct rd_pending *pend;
	uint32_t pend_cap, pend_free;

	int mdfd;	 /* maildir/, or -1 */
	char **md_names; /* owned: "new/NAME", "cur/NAME" */
	uint32_t nmd, mdi;
	bool md_started;
	int mdf; /* the maildir file last yielded, or -1 */
	uint64_t md_hdr_len;
	int item_src; /* RD_SEGMENTS or RD_MAILDIR: where item came from */

	/* The message last yielded. */
	struct spool_item item;
	struct rd_part *cur; /* owned: its parts */
	uint32_t ncur, cur_cap;
	char item_file[600];
	char *rcpts;	 /* owned: SPOOL_ENV_MAX */
	uint8_t *envbuf; /* owned: SPOOL_ENV_MAX */
	uint8_t *buf;	 /* owned: SPOOL_SCRATCH_SIZE */
	int rfd;	 /* read cache: files[rfile] */
	uint32_t rfile;
	char text[768];
};

__attribute__((format(printf, 6, 7))) static void rd_problem(struct spool_reader *r,
							     enum spool_problem_kind kind,
							     bool error, const char *file,
							     uint64_t off, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof(r->text), fmt, ap);
	va_end(ap);
	if (error)
		r->counts.errors++;
	if (!r->problem)
		return;
	struct spool_problem p = {
	    .kind = kind, .error = error, .file = file, .offset = off, .text = r->text};
	r->problem(r->ctx, &p);
}

/* ---- pending parts ---- */

static struct rd_pending *rd_pend_get(struct spool_reader *r, const char *qid)
{
	uint32_t *v = qidmap_find(&r->map, qid);
	return v ? &r->pend[*v] : NULL;
}

/* A new pending entry for qid, NULL when out of memory or past SPOOL_READER_PENDING_MAX. */
static struct rd_pending *rd_pend_add(struct spool_reader *r, const char *qid)
{
	if (r->pend_free == UINT32_MAX) {
		uint32_t ncap = r->pend_cap ? r->pend_cap * 2 : 256;
		if (ncap > SPOOL_READER_PENDING_MAX)
			return NULL;
		struct rd_pending *np = realloc(r->pend, ncap * sizeof(*np));
		if (!np)
			return NULL;
		memset(np + r->pend_cap, 0, (ncap - r->pend_cap) * sizeof(*np));
		for (uint32_t i = r->pend_cap; i < ncap; i++)
			np[i].next_free = i + 1 < ncap ? i + 1 : UINT32_MAX;
		r->pend = np;
		r->pend_free = r->pend_cap;
		r->pend_cap = ncap;
	}
	if (qidmap_full(&r->map) && qidmap_grow(&r->map) < 0)
		return NULL;
	uint32_t i = r->pend_free;
	if (qidmap_put(&r->map, qid, i) < 0)
		return NULL;
	struct rd_pending *p = &r->pend[i];
	r->pend_free = p->next_free;
	memset(p->qid, 0, sizeof(p->qid));
	memcpy(p->qid, qid, strnlen(qid, QID_LEN));
	p->nparts = 0;
	return p;
}

static void rd_pend_del(struct spool_reader *r, struct rd_pending *p)
{
	qidmap_del(&r->map, p->qid);
	p->qid[0] = 0;
	p->nparts = 0;
	p->next_free = r->pend_free;
	r->pend_free = (uint32_t)(p - r->pend);
}

static int parts_push(struct rd_part **v, uint32_t *n, uint32_t *cap, const struct rd_part *pt)
{
	if (*n == *cap) {
		uint32_t ncap = *cap ? *cap * 2 : 4;
		if (ncap > SPOOL_READER_PARTS_MAX)
			return -E2BIG;
		struct rd_part *nv = realloc(*v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	(*v)[(*n)++] = *pt;
	return 0;
}

static void rd_orphan(struct spool_reader *r, struct rd_pending *p, const char *why)
{
	const struct rd_part *first = &p->parts[0];
	r->counts.orphans += p->nparts;
	rd_problem(r, SPOOL_P_ORPHAN, false, r->files[first->file].rel, first->rec_off,
		   "qid=%s: %u part(s) without a FINAL (%s)", p->qid, p->nparts, why);
	rd_pend_del(r, p);
}

/* End of a writer's run: the parts still waiting will never see their FINAL. */
static void rd_flush_pending(struct spool_reader *r)
{
	for (uint32_t i = 0; i < r->pend_cap && r->map.count > 0; i++)
		if (r->pend[i].qid[0])
			rd_orphan(r, &r->pend[i], "aborted, failed or cut by a crash");
}

/* ---- segments ---- */

static void rd_seg_part(struct spool_reader *r, const struct spoolrec_hdr *h,
			const struct rd_part *pt)
{
	const char *file = r->files[pt->file].rel;
	if (h->part == 0 && h->body_off != 0) {
		/* The body starts in part 0: a CRC-valid record claiming otherwise would make
		 * body_size count bytes that are stored nowhere. */
		rd_problem(r, SPOOL_P_INCOMPLETE, true, file, pt->rec_off,
			   "qid=%s: part 0 at body offset %" PRIu64 ", not 0", h->qid, h->body_off);
		return;
	}
	struct rd_pending *p = rd_pend_get(r, h->qid);
	if (h->part == 0 && p) {
		rd_orphan(r, p, "part 0 written again");
		p = NULL;
	}
	if (h->part == 0 || !p) {
		if (h->part != 0) {
			rd_problem(r, SPOOL_P_INCOMPLETE, true, file, pt->rec_off,
				   "qid=%s: part %u without the parts before it", h->qid, h->part);
			return;
		}
		p = rd_pend_add(r, h->qid);
		if (!p) {
			rd_problem(r, SPOOL_P_IO, true, file, pt->rec_off,
				   "qid=%s: too many messages in flight to follow", h->qid);
			return;
		}
	} else if (p->nparts != h->part ||
		   p->parts[p->nparts - 1].body_off + p->parts[p->nparts - 1].body_len !=
		       h->body_off) {
		rd_problem(r, SPOOL_P_INCOMPLETE, true, file, pt->rec_off,
			   "qid=%s: part %u (body offset %" PRIu64 ") does not follow part %u",
			   h->qid, h->part, h->body_off, p->nparts - 1);
		r->counts.orphans += p->nparts;
		rd_pend_del(r, p);
		return;
	}
	if (parts_push(&p->parts, &p->nparts, &p->cap, pt) < 0) {
		rd_problem(r, SPOOL_P_IO, true, file, pt->rec_off, "qid=%s: too many parts",
			   h->qid);
		r->counts.orphans += p->nparts;
		rd_pend_del(r, p);
	}
}

/* A FINAL: 1 when its message is whole (r->item set), 0 when not (reported). */
static int rd_seg_final(struct spool_reader *r, const struct spoolrec_hdr *h,
			const struct rd_part *pt)
{
	const char *file = r->files[pt->file].rel;
	struct spoolrec_env_totals t = {0};
	int e = fsutil_pread_all(r->fd, r->envbuf, h->env_len, pt->rec_off + h->hdr_len);
	if (e == 0)
		e = spoolrec_env_decode(r->envbuf, h->env_len, &r->item.env, r->rcpts,
					SPOOL_ENV_MAX, &t);
	struct rd_pending *p = rd_pend_get(r, h->qid);
	const char *why = NULL;
	uint32_t n = p ? p->nparts : 0;
	if (e < 0)
		why = "unreadable envelope";
	else if (h->part != n)
		why = n == 0 ? "parts before it missing" : "parts missing in between";
	else if (t.nparts != h->part + 1 || t.body_size != h->body_off + h->body_len)
		why = "envelope sizes do not match the record";
	else if (n == 0 && h->body_off != 0)
		why = "part 0 at a body offset other than 0";
	else if (n > 0 && (p->parts[n - 1].body_off + p->parts[n - 1].body_len != h->body_off ||
			   p->parts[0].trace_len != t.trace_len))
		why = "parts do not add up";
	else if (n == 0 && h->trace_len != t.trace_len)
		why = "trace length does not match";
	if (why) {
		rd_problem(r, SPOOL_P_INCOMPLETE, true, file, pt->rec_off,
			   "qid=%s: FINAL of part %u with %u part(s) before it: %s", h->qid,
			   h->part, n, why);
		if (p) {
			r->counts.orphans += p->nparts;
			rd_pend_del(r, p);
		}
		return 0;
	}
	r->ncur = 0;
	for (uint32_t i = 0; i < n; i++)
		if (parts_push(&r->cur, &r->ncur, &r->cur_cap, &p->parts[i]) < 0)
			return -ENOMEM;
	if (parts_push(&r->cur, &r->ncur, &r->cur_cap, pt) < 0)
		return -ENOMEM;
	if (p)
		rd_pend_del(r, p);
	memcpy(r->item.env.qid, h->qid, sizeof(r->item.env.qid));
	r->item.trace_len = t.trace_len;
	r->item.body_size = t.body_size;
	r->item.nparts = t.nparts;
	r->item.file = file;
	r->item.offset = pt->rec_off;
	r->counts.messages++;
	return 1;
}

/* A bad record at r->off: report it, go on after it if a valid record follows. */
static void rd_seg_bad(struct spool_reader *r, bool torn)
{
	const char *file = r->files[r->fi].rel;
	uint64_t next = 0;
	int e = spoolrec_resync(r->fd, r->off, r->size, r->seed, &next, r->buf, SPOOL_SCRATCH_SIZE);
	if (e == 0) {
		rd_problem(r, SPOOL_P_CORRUPT, true, file, r->off,
			   "bad record (magic, lengths or CRC): %" PRIu64 " bytes skipped",
			   next - r->off);
		r->off = next;
		return;
	}
	if (e == -E2BIG)
		rd_problem(r, SPOOL_P_CORRUPT, true, file, r->off,
			   "bad record; no valid one found within the search bounds: %" PRIu64
			   " bytes not read",
			   r->size - r->off);
	else if (e != -ENOENT)
		rd_problem(r, SPOOL_P_IO, true, file, r->off, "read: %s", strerror(-e));
	else if (torn)
		rd_problem(r, SPOOL_P_TRUNCATED, true, file, r->off,
			   "incomplete record at the end: %" PRIu64
			   " bytes (a crash, or a writer still at work; recovery cuts it)",
			   r->size - r->off);
	else
		rd_problem(r, SPOOL_P_CORRUPT, true, file, r->off,
			   "bad record at the end: %" PRIu64 " bytes (magic, lengths or CRC)",
			   r->size - r->off);
	r->off = r->size;
}

static int rd_seg_open_file(struct spool_reader *r)
{
	const struct rd_file *f = &r->files[r->fi];
	if (r->fi > 0 &&
	    (f->writer != r->files[r->fi - 1].writer || f->run_us != r->files[r->fi - 1].run_us))
		rd_flush_pending(r);
	r->fd = openat(r->dirfd, f->rel, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (r->fd < 0 || fstat(r->fd, &st) < 0) {
		rd_problem(r, SPOOL_P_IO, true, f->rel, 0, "open: %s", strerror(errno));
		fsutil_close(&r->fd);
		return -1;
	}
	r->counts.files++;
	r->off = 0;
	r->size = (uint64_t)st.st_size;
	if (r->size == 0)
		return 0; /* just created: nothing in it yet */
	int e = spoolrec_seg_header(r->fd, r->size, r->buf, SPOOL_SCRATCH_SIZE, &r->seed);
	if (e == 0) {
		r->off = SPOOL_SEG_REC_LEN;
		return 0;
	}
	if (e == -EBADMSG)
		rd_problem(r, SPOOL_P_CORRUPT, true, f->rel, 0,
			   "bad segment header: %" PRIu64 " bytes not read", r->size);
	else
		rd_problem(r, SPOOL_P_IO, true, f->rel, 0, "read: %s", strerror(-e));
	fsutil_close(&r->fd);
	return -1;
}

static int rd_seg_next(struct spool_reader *r)
{
	for (;;) {
		if (r->fd < 0) {
			if (r->fi >= r->nfiles) {
				rd_flush_pending(r);
				return 0;
			}
			if (rd_seg_open_file(r) < 0) {
				r->fi++;
				continue;
			}
		}
		if (r->off >= r->size) {
			fsutil_close(&r->fd);
			r->fi++;
			continue;
		}
		struct spoolrec_hdr h;
		bool torn;
		int e = spoolrec_check(r->fd, r->off, r->size, r->seed, &h, r->buf,
				       SPOOL_SCRATCH_SIZE, &torn);
		if (e == 0 && h.type == SPOOL_REC_SEGMENT)
			e = -EBADMSG;
		if (e == -EBADMSG) {
			rd_seg_bad(r, torn);
			continue;
		}
		if (e < 0) {
			rd_problem(r, SPOOL_P_IO, true, r->files[r->fi].rel, r->off, "read: %s",
				   strerror(-e));
			r->off = r->size;
			continue;
		}
		r->counts.records++;
		struct rd_part pt = {
		    .file = r->fi,
		    .part = h.part,
		    .rec_off = r->off,
		    .data_off = r->off + h.hdr_len + h.env_len,
		    .trace_len = h.trace_len,
		    .body_off = h.body_off,
		    .body_len = h.body_len,
		};
		r->off += h.rec_len;
		if (h.type == SPOOL_REC_PART) {
			rd_seg_part(r, &h, &pt);
			continue;
		}
		e = rd_seg_final(r, &h, &pt);
		if (e != 0)
			return e;
	}
}

/* Streams len bytes at off of an open file to sink. */
static int rd_stream(struct spool_reader *r, int fd, uint64_t off, uint64_t len, spool_sink_fn sink,
		     void *ctx)
{
	while (len > 0) {
		size_t n = len < SPOOL_SCRATCH_SIZE ? (size_t)len : SPOOL_SCRATCH_SIZE;
		int e = fsutil_pread_all(fd, r->buf, n, off);
		if (e < 0)
			return e == -ENODATA ? -EIO : e;
		e = sink(ctx, r->buf, n);
		if (e != 0)
			return e;
		off += n;
		len -= n;
	}
	return 0;
}

static int rd_seg_read(struct spool_reader *r, unsigned what, spool_sink_fn sink, void *ctx)
{
	for (uint32_t i = 0; i < r->ncur; i++) {
		const struct rd_part *pt = &r->cur[i];
		if (r->rfd < 0 || r->rfile != pt->file) {
			fsutil_close(&r->rfd);
			r->rfd = openat(r->dirfd, r->files[pt->file].rel, O_RDONLY | O_CLOEXEC);
			if (r->rfd < 0)
				return -errno;
			r->rfile = pt->file;
		}
		int e = 0;
		if (what & SPOOL_READ_TRACE)
			e = rd_stream(r, r->rfd, pt->data_off, pt->trace_len, sink, ctx);
		if (e == 0 && (what & SPOOL_READ_BODY))
			e = rd_stream(r, r->rfd, pt->data_off + pt->trace_len, pt->body_len, sink,
				      ctx);
		if (e != 0)
			return e;
	}
	return 0;
}

/* ---- maildir ---- */

/* Reads CRLF lines from a file through a bounded buffer. */
struct lreader {
	int fd;
	uint8_t *buf;
	size_t cap, len, pos;
	uint64_t base; /* file offset of buf[0] */
};

/* 1 and the next line (without CRLF), 0 at the end, -EBADMSG, or -errno. */
static int lr_line(struct lreader *l, const char **line, size_t *n)
{
	for (int rounds = 0; rounds < 4; rounds++) {
		uint8_t *nl = memchr(l->buf + l->pos, '\n', l->len - l->pos);
		if (nl) {
			size_t end = (size_t)(nl - l->buf);
			if (end == l->pos || l->buf[end - 1] != '\r')
				return -EBADMSG;
			*line = (const char *)l->buf + l->pos;
			*n = end - 1 - l->pos;
			l->pos = end + 1;
			return 1;
		}
		memmove(l->buf, l->buf + l->pos, l->len - l->pos);
		l->base += l->pos;
		l->len -= l->pos;
		l->pos = 0;
		if (l->len == l->cap)
			return -EBADMSG; /* longer than any line we write */
		ssize_t got;
		do
			got = pread(l->fd, l->buf + l->len, l->cap - l->len,
				    (off_t)(l->base + l->len));
		while (got < 0 && errno == EINTR);
		if (got < 0)
			return -errno;
		if (got == 0)
			return l->len ? -EBADMSG : 0;
		l->len += (size_t)got;
	}
	return -EBADMSG;
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

/* Undoes sb_put_escaped into dst (cap bytes, NUL-terminated). */
static int unescape(const char *s, size_t n, char *dst, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\\') {
			if (n - i < 4 || s[i + 1] != 'x' || hexval(s[i + 2]) < 0 ||
			    hexval(s[i + 3]) < 0)
				return -EBADMSG;
			c = (char)(hexval(s[i + 2]) << 4 | hexval(s[i + 3]));
			i += 3;
		}
		if (c == 0 || o + 1 >= cap)
			return -EBADMSG;
		dst[o++] = c;
	}
	dst[o] = 0;
	return 0;
}

static int parse_u64(const char *s, size_t n, int base, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0 || n > 20)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		int d = hexval(s[i]);
		if (d < 0 || d >= base || v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return -EBADMSG;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	if (v > max)
		return -EBADMSG;
	*out = v;
	return 0;
}

/* "PREFIX<ADDR>" -> ADDR unescaped. */
static int md_angle(const char *line, size_t n, const char *prefix, char *dst, size_t cap)
{
	size_t pl = strlen(prefix);
	if (n < pl + 1 || memcmp(line, prefix, pl) != 0 || line[n - 1] != '>')
		return -EBADMSG;
	return unescape(line + pl, n - pl - 1, dst, cap);
}

/* The X-Mxring-Envelope value: key=value words. */
static int md_env_line(const char *s, size_t n, struct envelope *env, uint64_t *trace_len)
{
	unsigned seen = 0;
	uint64_t v;
	for (size_t i = 0; i < n;) {
		const char *w = s + i, *sp = memchr(w, ' ', n - i);
		size_t wl = sp ? (size_t)(sp - w) : n - i;
		i += wl + 1;
		const char *eq = memchr(w, '=', wl);
		if (!eq)
			return -EBADMSG;
		size_t kl = (size_t)(eq - w), vl = wl - kl - 1;
		const char *val = eq + 1;
		int e = 0;
#define KEY(k) (kl == sizeof(k) - 1 && memcmp(w, k, kl) == 0)
		if (KEY("qid"))
			e = unescape(val, vl, env->qid, sizeof(env->qid)), seen |= 1;
		else if (KEY("time"))
			e = parse_u64(val, vl, 10, UINT64_MAX, &env->time_us), seen |= 2;
		else if (KEY("client"))
			e = unescape(val, vl, env->client_addr, sizeof(env->client_addr)),
			seen |= 4;
		else if (KEY("port")) {
			e = parse_u64(val, vl, 10, 65535, &v), seen |= 8;
			env->client_port = (uint16_t)v;
		} else if (KEY("helo"))
			e = unescape(val, vl, env->helo, sizeof(env->helo)), seen |= 16;
		else if (KEY("tls"))
			e = unescape(val, vl, env->tls, sizeof(env->tls));
		else if (KEY("host"))
			e = unescape(val, vl, env->myhostname, sizeof(env->myhostname));
		else if (KEY("flags")) {
			if (vl < 3 || val[0] != '0' || val[1] != 'x')
				return -EBADMSG;
			e = parse_u64(val + 2, vl - 2, 16, UINT32_MAX, &v), seen |= 32;
			env->flags = (uint32_t)v;
		} else if (KEY("rcpts")) {
			e = parse_u64(val, vl, 10, RCPT_LIMIT_MAX, &v), seen |= 64;
			env->nrcpt = (uint32_t)v;
		} else if (KEY("trace"))
			e = parse_u64(val, vl, 10, SPOOL_TRACE_MAX, trace_len), seen |= 128;
#undef KEY
		if (e < 0)
			return e;
	}
	return seen == 255 && env->nrcpt > 0 && spoolrec_qid_valid(env->qid) ? 0 : -EBADMSG;
}

/* Parses the envelope lines at the top of an open maildir file. */
static int md_parse(struct spool_reader *r, int fd, uint64_t size)
{
	struct lreader l = {.fd = fd, .buf = r->buf, .cap = SPOOL_SCRATCH_SIZE};
	struct envelope *env = &r->item.env;
	const char *line;
	size_t n;
	uint64_t trace_len = 0;
	memset(env, 0, sizeof(*env));
	int e = lr_line(&l, &line, &n);
	if (e == 1)
		e = md_angle(line, n, "Return-Path: <", env->from, sizeof(env->from));
	if (e == 0)
		e = lr_line(&l, &line, &n);
	if (e == 1) {
		static const char key[] = "X-Mxring-Envelope: ";
		e = n > sizeof(key) - 1 && memcmp(line, key, sizeof(key) - 1) == 0
			? md_env_line(line + sizeof(key) - 1, n - (sizeof(key) - 1), env,
				      &trace_len)
			: -EBADMSG;
	}
	size_t used = 0;
	for (uint32_t i = 0; e == 0 && i < env->nrcpt; i++) {
		e = lr_line(&l, &line, &n);
		if (e == 1)
			e = md_angle(line, n, "X-Mxring-Rcpt: <", r->rcpts + used,
				     SPOOL_ENV_MAX - used);
		if (e == 0)
			used += strlen(r->rcpts + used) + 1;
	}
	if (e != 0)
		return e < 0 ? e : -EBADMSG;
	env->rcpts = r->rcpts;
	env->rcpts_len = (uint32_t)used;
	env->rcpts_cap = SPOOL_ENV_MAX;
	r->md_hdr_len = l.base + l.pos;
	if (r->md_hdr_len + trace_len > size)
		return -EBADMSG;
	char recv[10];
	if (trace_len < sizeof(recv) ||
	    fsutil_pread_all(fd, recv, sizeof(recv), r->md_hdr_len) < 0 ||
	    memcmp(recv, "Received: ", sizeof(recv)) != 0)
		return -EBADMSG;
	r->item.trace_len = trace_len;
	r->item.body_size = size - r->md_hdr_len - trace_len;
	r->item.nparts = 1;
	return 0;
}

static int rd_md_next(struct spool_reader *r)
{
	if (!r->md_started) {
		char **names;
		uint32_t n;
		r->md_started = true;
		int tmp = fsutil_open_subdir(r->mdfd, "tmp", false);
		if (tmp >= 0 && fsutil_dir_list(tmp, NULL, NULL, &names, &n) == 0) {
			for (uint32_t i = 0; i < n; i++) {
				r->counts.orphans++;
				snprintf(r->item_file, sizeof(r->item_file), "maildir/tmp/%s",
					 names[i]);
				rd_problem(
				    r, SPOOL_P_ORPHAN, false, r->item_file, 0,
				    "unfinished delivery (aborted, failed or cut by a crash)");
			}
			fsutil_names_free(names, n);
		}
		if (tmp >= 0)
			close(tmp);
	}
	fsutil_close(&r->mdf);
	while (r->mdi < r->nmd) {
		const char *rel = r->md_names[r->mdi++];
		snprintf(r->item_file, sizeof(r->item_file), "maildir/%s", rel);
		int fd = openat(r->mdfd, rel, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			rd_problem(r, SPOOL_P_IO, true, r->item_file, 0, "open: %s",
				   strerror(errno));
			if (fd >= 0)
				close(fd);
			continue;
		}
		r->counts.files++;
		int e = S_ISREG(st.st_mode) ? md_parse(r, fd, (uint64_t)st.st_size) : -EBADMSG;
		if (e < 0) {
			rd_problem(r, SPOOL_P_BADFILE, true, r->item_file, 0,
				   e == -EBADMSG ? "no valid mxring envelope at the top"
						 : "read: %s",
				   strerror(-e));
			close(fd);
			continue;
		}
		r->mdf = fd;
		r->item.file = r->item_file;
		r->item.offset = 0;
		r->counts.messages++;
		return 1;
	}
	return 0;
}

static int rd_md_read(struct spool_reader *r, unsigned what, spool_sink_fn sink, void *ctx)
{
	int e = 0;
	if (r->mdf < 0)
		return -EBADF;
	if (what & SPOOL_READ_TRACE)
		e = rd_stream(r, r->mdf, r->md_hdr_len, r->item.trace_len, sink, ctx);
	if (e == 0 && (what & SPOOL_READ_BODY))
		e = rd_stream(r, r->mdf, r->md_hdr_len + r->item.trace_len, r->item.body_size, sink,
			      ctx);
	return e;
}

/* ---- public: reader ---- */

static int rd_file_cmp(const void *a, const void *b)
{
	const struct rd_file *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(y->rel, x->rel); /* "ready/" before "active/" */
}

/* Adds the segments of sub/ (an open fd) to r->files; reports what is not one. */
static int rd_list_segments(struct spool_reader *r, int fd, const char *sub)
{
	char **names;
	uint32_t n;
	int e = fsutil_dir_list(fd, NULL, NULL, &names, &n);
	if (e < 0)
		return e;
	struct rd_file *nf = realloc(r->files, (r->nfiles + n + 1) * sizeof(*nf));
	if (!nf) {
		fsutil_names_free(names, n);
		return -ENOMEM;
	}
	r->files = nf;
	for (uint32_t i = 0; i < n; i++) {
		struct rd_file *f = &r->files[r->nfiles];
		uint32_t seq;
		char rel[SEG_NAME_LEN + 16];
		if (!seg_name_parse(names[i], &f->writer, &f->run_us, &seq)) {
			snprintf(r->item_file, sizeof(r->item_file), "%s/%s", sub, names[i]);
			rd_problem(r, SPOOL_P_STRAY, false, r->item_file, 0,
				   "not a segment name; ignored");
			continue;
		}
		snprintf(rel, sizeof(rel), "%s/%s", sub, names[i]);
		f->rel = strdup(rel);
		if (!f->rel) {
			fsutil_names_free(names, n);
			return -ENOMEM;
		}
		f->name = f->rel + strlen(sub) + 1;
		r->nfiles++;
	}
	fsutil_names_free(names, n);
	return 0;
}

/*
 * A segment being moved into ready/ has a name in active/ and one in ready/
 * for a moment, and after a crash until recovery: the same file, read once
 * (as ready/, sorted first). Segment names are unique, so nothing else
 * shares a name.
 */
static void rd_drop_second_names(struct spool_reader *r)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < r->nfiles; i++) {
		if (k > 0 && strcmp(r->files[k - 1].name, r->files[i].name) == 0) {
			free(r->files[i].rel);
			continue;
		}
		r->files[k++] = r->files[i];
	}
	r->nfiles = k;
}

static int rd_list_maildir(struct spool_reader *r)
{
	char **a = NULL, **b = NULL;
	uint32_t na = 0, nb = 0;
	int fa = fsutil_open_subdir(r->mdfd, "cur", false),
	    fb = fsutil_open_subdir(r->mdfd, "new", false);
	int e = fa >= 0 ? fsutil_dir_list(fa, NULL, NULL, &a, &na) : 0;
	if (e == 0 && fb >= 0)
		e = fsutil_dir_list(fb, NULL, NULL, &b, &nb);
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	if (e == 0) {
		r->md_names = calloc((size_t)na + nb + 1, sizeof(char *));
		e = r->md_names ? 0 : -ENOMEM;
	}
	for (uint32_t i = 0; e == 0 && i < na + nb; i++) {
		const char *name = i < na ? a[i] : b[i - na];
		size_t len = strlen(name) + 5;
		char *s = malloc(len);
		if (!s) {
			e = -ENOMEM;
			break;
		}
		snprintf(s, len, "%s/%s", i < na ? "cur" : "new", name);
		r->md_names[r->nmd++] = s;
	}
	fsutil_names_free(a, na);
	fsutil_names_free(b, nb);
	return e;
}

static void rd_report_corrupt_dir(struct spool_reader *r)
{
	int fd = fsutil_open_subdir(r->dirfd, "corrupt", false);
	char **names;
	uint32_t n;
	if (fd < 0)
		return;
	if (fsutil_dir_list(fd, NULL, NULL, &names, &n) == 0) {
		for (uint32_t i = 0; i < n; i++) {
			snprintf(r->item_file, sizeof(r->item_file), "corrupt/%s", names[i]);
			rd_problem(r, SPOOL_P_STRAY, false, r->item_file, 0,
				   "bytes recovery cut from a segment (valid records followed a "
				   "bad one); not read");
		}
		fsutil_names_free(names, n);
	}
	close(fd);
}

int spool_reader_open(const char *dir, spool_problem_fn problem, void *ctx,
		      struct spool_reader **out)
{
	struct spool_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->problem = problem;
	r->ctx = ctx;
	r->fd = r->mdfd = r->mdf = r->rfd = -1;
	r->pend_free = UINT32_MAX;
	int e = 0;
	r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0)
		e = -errno;
	if (e == 0) {
		r->buf = malloc(SPOOL_SCRATCH_SIZE);
		r->envbuf = malloc(SPOOL_ENV_MAX);
		r->rcpts = malloc(SPOOL_ENV_MAX);
		e = r->buf && r->envbuf && r->rcpts ? qidmap_init(&r->map, 128) : -ENOMEM;
	}
	int act = -1, rdy = -1;
	if (e == 0) {
		act = fsutil_open_subdir(r->dirfd, "active", false);
		rdy = fsutil_open_subdir(r->dirfd, "ready", false);
		r->mdfd = fsutil_open_subdir(r->dirfd, "maildir", false);
		if (act < 0 && rdy < 0 && r->mdfd < 0)
			e = -EMEDIUMTYPE;
	}
	if (e == 0 && rdy >= 0)
		e = rd_list_segments(r, rdy, "ready");
	if (e == 0 && act >= 0)
		e = rd_list_segments(r, act, "active");
	if (e == 0 && r->nfiles > 1) {
		qsort(r->files, r->nfiles, sizeof(*r->files), rd_file_cmp);
		rd_drop_second_names(r);
	}
	if (e == 0 && r->mdfd >= 0)
		e = rd_list_maildir(r);
	if (act >= 0)
		close(act);
	if (rdy >= 0)
		close(rdy);
	if (e < 0) {
		spool_reader_close(r);
		return e;
	}
	rd_report_corrupt_dir(r);
	r->phase = RD_SEGMENTS;
	*out = r;
	return 0;
}

int spool_reader_next(struct spool_reader *r, const struct spool_item **out)
{
	r->item_src = RD_END;
	fsutil_close(&r->rfd);
	if (r->phase == RD_SEGMENTS) {
		int e = rd_seg_next(r);
		if (e != 0) {
			if (e > 0) {
				r->item_src = RD_SEGMENTS;
				*out = &r->item;
			}
			return e;
		}
		r->phase = r->mdfd >= 0 ? RD_MAILDIR : RD_END;
	}
	if (r->phase == RD_MAILDIR) {
		int e = rd_md_next(r);
		if (e != 0) {
			if (e > 0) {
				r->item_src = RD_MAILDIR;
				*out = &r->item;
			}
			return e;
		}
		r->phase = RD_END;
	}
	return 0;
}

int spool_reader_read(struct spool_reader *r, unsigned what, spool_sink_fn sink, void *ctx)
{
	if (r->item_src == RD_SEGMENTS)
		return rd_seg_read(r, what, sink, ctx);
	if (r->item_src == RD_MAILDIR)
		return rd_md_read(r, what, sink, ctx);
	return -EINVAL;
}

void spool_reader_counts(const struct spool_reader *r, struct spool_reader_counts *out)
{
	*out = r->counts;
}

void spool_reader_close(struct spool_reader *r)
{
	if (!r)
		return;
	fsutil_close(&r->fd);
	fsutil_close(&r->rfd);
	fsutil_close(&r->mdf);
	fsutil_close(&r->mdfd);
	fsutil_close(&r->dirfd);
	for (uint32_t i = 0; i < r->nfiles; i++)
		free(r->files[i].rel);
	free(r->files);
	for (uint32_t i = 0; i < r->pend_cap; i++)
		free(r->pend[i].parts);
	free(r->pend);
	qidmap_free(&r->map);
	fsutil_names_free(r->md_names, r->nmd);
	free(r->cur);
	free(r->rcpts);
	free(r->envbuf);
	free(r->buf);
	free(r);
}
