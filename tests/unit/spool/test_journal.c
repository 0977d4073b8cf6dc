/*
 * test_journal.c - the delivery journal (core/journal.c) driven directly:
 * a round trip of every record type, group commit (one pwrite and one
 * fdatasync per batch, counted), a torn tail at every byte offset of the
 * last record and of the FILE record, a flipped bit at every byte, rotation,
 * a failed write (EFBIG from RLIMIT_FSIZE) after which the writer goes on
 * in a new file, compaction stopped after each of its steps as a crash
 * would (the state read back is the same every time), the index (deferred,
 * delivered, failed, bounced, segment done, order, conflicts, thousands of
 * messages against a model), bounds, and what journal_open cleans up.
 *
 * With MXRING_JOURNAL_SEEDS=DIR set, the seeds of the fuzz target
 * (tests/fuzz/fuzz_journal.c: a mode byte, then a journal file) are written
 * to DIR as the tests make their files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "journal.h"
#include "log.h"

#define T_RECS_MAX  4096
#define T_PROBS_MAX 64
#define T_RCPTS_MAX 8
#define T_SNAP_MAX  30000

/* ---- scaffolding ---- */

/* A spool dir with ready/ and active/, and segment i's name. */
static void mkspool(char *dir, size_t cap)
{
	t_mkdtemp(dir, cap);
	char p[512];
	snprintf(p, sizeof(p), "%s/ready", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/active", dir);
	assert_int_equal(mkdir(p, 0700), 0);
}

static const char *segname(unsigned i)
{
	static char names[8][SEGMENT_NAME_LEN + 1];
	static unsigned next;
	char *s = names[next++ % 8];
	snprintf(s, SEGMENT_NAME_LEN + 1, "w%02u-%016x-%08x.seg", i % 4, 0x1700000u + i / 4, i);
	return s;
}

/* An empty segment file under dir/sub, so compaction sees the segment live. */
static void touch_segment(const char *dir, const char *sub, const char *seg)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, seg);
	assert_int_equal(t_write_file(p, (const uint8_t *)"", 0), 0);
}

static void result(struct journal_rec *r, const char *seg, uint64_t off, const char *qid,
		   uint32_t rcpt, uint32_t nrcpt, enum journal_outcome o, uint32_t attempts,
		   uint64_t time_us)
{
	static const char *const dsn[] = {"", "2.0.0", "4.4.1", "5.1.1", "4.4.7"};
	memset(r, 0, sizeof(*r));
	r->type = JOURNAL_REC_RESULT;
	snprintf(r->seg, sizeof(r->seg), "%s", seg);
	r->seg_off = off;
	snprintf(r->qid, sizeof(r->qid), "%s", qid);
	r->rcpt = rcpt;
	r->nrcpt = nrcpt;
	r->outcome = (uint8_t)o;
	r->attempts = attempts;
	r->time_us = time_us;
	r->next_us = o == JOURNAL_DEFERRED ? time_us + 60000000ull * attempts : 0;
	snprintf(r->dsn, sizeof(r->dsn), "%s", dsn[o]);
	char reply[64];
	snprintf(reply, sizeof(reply), "%c50 %s reply for %s rcpt %u", dsn[o][0], dsn[o], qid,
		 rcpt);
	journal_rec_reply(r, reply, strlen(reply));
	journal_rec_relay(r, "hub.example.net[192.0.2.10]:25", 30);
}

static void bounce(struct journal_rec *r, const char *seg, uint64_t off, const char *qid,
		   uint32_t rcpt, uint32_t nrcpt, const char *dsn_qid, uint64_t time_us)
{
	memset(r, 0, sizeof(*r));
	r->type = JOURNAL_REC_BOUNCE;
	snprintf(r->seg, sizeof(r->seg), "%s", seg);
	r->seg_off = off;
	snprintf(r->qid, sizeof(r->qid), "%s", qid);
	r->rcpt = rcpt;
	r->nrcpt = nrcpt;
	snprintf(r->dsn_qid, sizeof(r->dsn_qid), "%s", dsn_qid);
	r->time_us = time_us;
}

static void segdone(struct journal_rec *r, const char *seg, uint64_t time_us)
{
	memset(r, 0, sizeof(*r));
	r->type = JOURNAL_REC_SEGDONE;
	snprintf(r->seg, sizeof(r->seg), "%s", seg);
	r->time_us = time_us;
}

static void rec_equal(const struct journal_rec *a, const struct journal_rec *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->outcome, b->outcome);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->seq, b->seq);
	assert_int_equal(a->time_us, b->time_us);
	assert_string_equal(a->seg, b->seg);
	assert_int_equal(a->seg_off, b->seg_off);
	assert_string_equal(a->qid, b->qid);
	assert_int_equal(a->rcpt, b->rcpt);
	assert_int_equal(a->nrcpt, b->nrcpt);
	assert_int_equal(a->attempts, b->attempts);
	assert_int_equal(a->next_us, b->next_us);
	assert_string_equal(a->dsn, b->dsn);
	assert_string_equal(a->dsn_qid, b->dsn_qid);
	assert_string_equal(a->reply, b->reply);
	assert_string_equal(a->relay, b->relay);
}

static void append_ok(struct journal *j, struct journal_rec *r)
{
	uint64_t seq;
	assert_int_equal(journal_append(j, r, &seq), 0);
	assert_int_equal(seq, r->seq);
}

static void sync_ok(struct journal *j)
{
	uint64_t durable;
	assert_int_equal(journal_sync(j, &durable), 0);
	assert_int_equal(durable, journal_durable_seq(j));
}

/* What a replay gave back. */
struct got {
	struct journal_rec rec[T_RECS_MAX];
	struct journal_loc loc[T_RECS_MAX];
	char file[T_RECS_MAX][32];
	unsigned n;
	struct journal_problem prob[T_PROBS_MAX];
	char pfile[T_PROBS_MAX][64];
	unsigned nprob, errors;
	struct journal_replay_counts counts;
};

static int got_rec(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	struct got *g = ctx;
	assert_true(g->n < T_RECS_MAX);
	assert_null(journal_rec_check(r));
	g->rec[g->n] = *r;
	g->loc[g->n] = *loc;
	snprintf(g->file[g->n], sizeof(g->file[0]), "%s", loc->file);
	g->loc[g->n].file = g->file[g->n];
	g->n++;
	return 0;
}

static void got_problem(void *ctx, const struct journal_problem *p)
{
	struct got *g = ctx;
	assert_non_null(p->file);
	assert_non_null(p->text);
	if (getenv("T_VERBOSE"))
		fprintf(stderr, "problem kind=%d error=%d file=%s off=%llu: %s\n", (int)p->kind,
			p->error, p->file, (unsigned long long)p->offset, p->text);
	if (g->nprob < T_PROBS_MAX) {
		g->prob[g->nprob] = *p;
		snprintf(g->pfile[g->nprob], sizeof(g->pfile[0]), "%s", p->file);
		g->prob[g->nprob].file = g->pfile[g->nprob];
		g->prob[g->nprob].text = NULL;
		g->nprob++;
	}
	g->errors += p->error;
}

static struct got *replay(const char *dir)
{
	static struct got g;
	memset(&g, 0, sizeof(g));
	assert_int_equal(journal_replay(dir, got_rec, got_problem, &g, &g.counts), 0);
	assert_int_equal(g.counts.records, g.n);
	assert_int_equal(g.counts.errors, g.errors);
	return &g;
}

/* The journal file of writer w with sequence s. */
static void jpath(char *dst, size_t cap, const char *dir, unsigned w, uint64_t s, const char *ext)
{
	snprintf(dst, cap, "%s/journal/j-w%02u-%016llx.%s", dir, w, (unsigned long long)s, ext);
}

static unsigned count_journal(const char *dir, const char *suffix)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/journal", dir);
	DIR *d = opendir(p);
	assert_non_null(d);
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name), s = strlen(suffix);
		if (de->d_name[0] == 'j' && l > s && strcmp(de->d_name + l - s, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* Writes a fuzz seed (mode byte, then file) when MXRING_JOURNAL_SEEDS is set. */
static void seed_out(const char *name, uint8_t mode, const uint8_t *file, size_t len)
{
	const char *d = getenv("MXRING_JOURNAL_SEEDS");
	if (!d || !*d)
		return;
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", d, name);
	uint8_t *b = malloc(len + 1);
	assert_non_null(b);
	b[0] = mode;
	memcpy(b + 1, file, len);
	assert_int_equal(t_write_file(p, b, len + 1), 0);
	free(b);
}

static void seed_file(const char *name, uint8_t mode, const char *path)
{
	uint8_t *b;
	size_t n;
	assert_int_equal(t_read_file(path, &b, &n), 0);
	seed_out(name, mode, b, n);
	free(b);
}

/* ---- the state an index holds, in a canonical order ---- */

struct snap_msg {
	char seg[SEGMENT_NAME_LEN + 1];
	uint64_t off;
	char qid[QID_LEN + 1];
	uint32_t nrcpt, pending;
	struct journal_rcpt rcpt[T_RCPTS_MAX];
};

struct snap {
	struct snap_msg msg[T_SNAP_MAX];
	unsigned n;
	char done[64][SEGMENT_NAME_LEN + 1];
	unsigned ndone;
};

static int snap_msg_fn(void *ctx, const struct journal_msg_state *m)
{
	struct snap *s = ctx;
	assert_true(s->n < T_SNAP_MAX && m->nrcpt <= T_RCPTS_MAX && !m->segment_done);
	struct snap_msg *x = &s->msg[s->n++];
	memset(x, 0, sizeof(*x));
	snprintf(x->seg, sizeof(x->seg), "%s", m->seg);
	x->off = m->seg_off;
	snprintf(x->qid, sizeof(x->qid), "%s", m->qid);
	x->nrcpt = m->nrcpt;
	x->pending = m->pending;
	unsigned pending = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		x->rcpt[i].time_us = m->rcpt[i].time_us;
		x->rcpt[i].next_us = m->rcpt[i].next_us;
		x->rcpt[i].attempts = m->rcpt[i].attempts;
		x->rcpt[i].state = m->rcpt[i].state;
		x->rcpt[i].flags = m->rcpt[i].flags & JOURNAL_RCPT_BOUNCED;
		pending += m->rcpt[i].state == 0 || m->rcpt[i].state == JOURNAL_DEFERRED;
	}
	assert_int_equal(pending, m->pending);
	return 0;
}

static int snap_done_fn(void *ctx, const char *seg)
{
	struct snap *s = ctx;
	assert_true(s->ndone < 64);
	snprintf(s->done[s->ndone++], SEGMENT_NAME_LEN + 1, "%s", seg);
	return 0;
}

static int msg_cmp(const void *a, const void *b)
{
	const struct snap_msg *x = a, *y = b;
	int c = strcmp(x->seg, y->seg);
	return c ? c : x->off < y->off ? -1 : x->off > y->off;
}

static int done_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void snap_index(const struct journal_index *ix, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	assert_int_equal(journal_index_foreach(ix, snap_msg_fn, s), 0);
	assert_int_equal(journal_index_done_segments(ix, snap_done_fn, s), 0);
	assert_int_equal(s->n, journal_index_msgs(ix));
	qsort(s->msg, s->n, sizeof(s->msg[0]), msg_cmp);
	qsort(s->done, s->ndone, sizeof(s->done[0]), done_cmp);
}

/* The state of dir's journal; errors: what a load must report at most. */
static void snap_dir(const char *dir, struct snap *s)
{
	struct journal_index *ix;
	assert_int_equal(journal_index_new(1u << 20, &ix), 0);
	struct got *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	struct journal_replay_counts c;
	assert_int_equal(journal_index_load(dir, ix, got_problem, g, &c), 0);
	assert_int_equal(g->errors, 0);
	free(g);
	snap_index(ix, s);
	journal_index_free(ix);
}

static void snap_equal(const struct snap *a, const struct snap *b)
{
	assert_int_equal(a->n, b->n);
	assert_int_equal(a->ndone, b->ndone);
	for (unsigned i = 0; i < a->ndone; i++)
		assert_string_equal(a->done[i], b->done[i]);
	for (unsigned i = 0; i < a->n; i++) {
		const struct snap_msg *x = &a->msg[i], *y = &b->msg[i];
		assert_string_equal(x->seg, y->seg);
		assert_int_equal(x->off, y->off);
		assert_string_equal(x->qid, y->qid);
		assert_int_equal(x->nrcpt, y->nrcpt);
		assert_int_equal(x->pending, y->pending);
		assert_memory_equal(x->rcpt, y->rcpt, sizeof(x->rcpt));
	}
}

/* ---- round trip ---- */

/* One of each kind of record, in r[0..7). */
static unsigned every_kind(struct journal_rec *r, uint64_t t)
{
	const char *s = segname(1);
	result(&r[0], s, 88, "QID00001", 0, 3, JOURNAL_DELIVERED, 1, t + 1);
	result(&r[1], s, 88, "QID00001", 1, 3, JOURNAL_DEFERRED, 1, t + 2);
	result(&r[2], s, 88, "QID00001", 2, 3, JOURNAL_FAILED, 1, t + 3);
	bounce(&r[3], s, 88, "QID00001", 2, 3, "DSN00001", t + 4);
	result(&r[4], s, 4096, "QID00002", 0, 1, JOURNAL_EXPIRED, 0, t + 5);
	r[4].reply[0] = r[4].relay[0] = 0; /* never reached the hub */
	segdone(&r[5], segname(2), t + 6);
	/* The longest record: both texts at their bounds. */
	result(&r[6], s, 1ull << 40, "0123456789ABCDEF", 9999, RCPT_LIMIT_MAX, JOURNAL_DEFERRED,
	       4000000000u, t + 7);
	char big[JOURNAL_REPLY_MAX + JOURNAL_RELAY_MAX + 10];
	memset(big, 'x', sizeof(big));
	journal_rec_reply(&r[6], big, sizeof(big));
	journal_rec_relay(&r[6], big, sizeof(big));
	return 7;
}

static void test_roundtrip(void **state)
{
	(void)state;
	char dir[256], p[512];
	mkspool(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 3, 0, &j), 0);
	struct journal_rec r[8];
	unsigned n = every_kind(r, 1700000000000000ull);
	for (unsigned i = 0; i < n; i++) {
		append_ok(j, &r[i]);
		assert_int_equal(r[i].seq, i + 1);
	}
	assert_int_equal(r[6].flags, JOURNAL_F_REPLY_CUT | JOURNAL_F_RELAY_CUT);
	sync_ok(j);
	assert_int_equal(journal_durable_seq(j), n);
	assert_int_equal(journal_close(j), 0);

	struct got *g = replay(dir);
	assert_int_equal(g->n, n);
	assert_int_equal(g->nprob, 0);
	for (unsigned i = 0; i < n; i++) {
		rec_equal(&g->rec[i], &r[i]);
		assert_int_equal(g->loc[i].writer, 3);
		assert_int_equal(g->loc[i].file_seq, 1);
	}
	assert_int_equal(g->counts.max_seq[3], n);
	jpath(p, sizeof(p), dir, 3, 1, "jrn");
	seed_file("every-kind", 0, p);
	seed_file("every-kind-fixcrc", 1, p);
	seed_file("every-kind-index", 4, p);
	seed_file("every-kind-open", 8, p);
	seed_file("every-kind-all", 15, p);

	/* A new run starts a new file and goes on with the seqs. */
	assert_int_equal(journal_open(dir, 3, 0, &j), 0);
	struct journal_rec x;
	result(&x, segname(1), 88, "QID00001", 1, 3, JOURNAL_DELIVERED, 2, 1700000000000100ull);
	append_ok(j, &x);
	assert_int_equal(x.seq, n + 1);
	assert_int_equal(journal_close(j), 0);
	g = replay(dir);
	assert_int_equal(g->n, n + 1);
	rec_equal(&g->rec[n], &x);
	assert_int_equal(g->loc[n].file_seq, 2);
	assert_int_equal(count_journal(dir, ".jrn"), 2);

	/* journal_seg_name */
	snprintf(p, sizeof(p), "ready/%s", segname(5));
	assert_string_equal(journal_seg_name(p), p + 6);
	snprintf(p, sizeof(p), "active/%s", segname(5));
	assert_string_equal(journal_seg_name(p), p + 7);
	assert_string_equal(journal_seg_name(segname(5)), segname(5));
	assert_null(journal_seg_name("corrupt/w00-0000000000000001-00000001.seg"));
	assert_null(journal_seg_name("ready/w00-0000000000000001-0000001.seg"));
	assert_null(journal_seg_name("ready/../w00-0000000000000001-00000001.seg"));

	/* No journal/ at all: nothing to read. */
	char empty[256];
	t_mkdtemp(empty, sizeof(empty));
	g = replay(empty);
	assert_int_equal(g->n + g->nprob, 0);
	t_rmdir(empty);
	t_rmdir(dir);
}

/* ---- group commit ---- */

static void test_batching(void **state)
{
	(void)state;
	char dir[256];
	mkspool(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	struct journal_counts c0, c;
	journal_counts(j, &c0);
	assert_int_equal(c0.files, 1);
	struct journal_rec r;
	uint64_t seq = 0, durable = 99;
	for (unsigned i = 0; i < 200; i++) {
		result(&r, segname(i % 3), 88 + i, "QBATCH", 0, 1, JOURNAL_DELIVERED, 1,
		       1700000000000000ull + i);
		assert_int_equal(journal_append(j, &r, &seq), 0);
	}
	/* Buffered is not durable, and not on disk. */
	assert_int_equal(journal_durable_seq(j), 0);
	assert_int_equal(replay(dir)->n, 0);
	assert_int_equal(journal_sync(j, &durable), 0);
	assert_int_equal(durable, seq);
	journal_counts(j, &c);
	assert_int_equal(c.appends, 200);
	assert_int_equal(c.writes - c0.writes, 1);
	assert_int_equal(c.syncs - c0.syncs, 1);
	assert_int_equal(replay(dir)->n, 200);

	/* Nothing buffered: no write, no fdatasync. */
	assert_int_equal(journal_sync(j, &durable), 0);
	assert_int_equal(durable, seq);
	journal_counts(j, &c);
	assert_int_equal(c.syncs - c0.syncs, 1);

	/* A full buffer refuses, then takes the record after a sync. */
	unsigned taken = 0;
	int rc;
	for (;;) {
		result(&r, segname(1), 88, "QFULL", 0, 1, JOURNAL_DEFERRED, 1, 1700000000000000ull);
		char reply[JOURNAL_REPLY_MAX];
		memset(reply, 'r', sizeof(reply));
		journal_rec_reply(&r, reply, sizeof(reply));
		if ((rc = journal_append(j, &r, &seq)) != 0)
			break;
		taken++;
	}
	assert_int_equal(rc, -ENOBUFS);
	assert_true(taken >= JOURNAL_BUF_BYTES / JOURNAL_REC_MAX);
	assert_int_equal(journal_durable_seq(j), 200);
	sync_ok(j);
	assert_int_equal(journal_durable_seq(j), 200 + taken);
	append_ok(j, &r);
	assert_int_equal(r.seq, 201 + taken);
	journal_counts(j, &c);
	assert_int_equal(c.syncs - c0.syncs, 2);
	assert_int_equal(c.writes - c0.writes, 2);
	assert_int_equal(journal_close(j), 0);
	assert_int_equal(replay(dir)->n, 201 + taken);
	t_rmdir(dir);
}

/* ---- crash damage ---- */

/* A journal of writer 0 holding recs[0..n) in one file: its path and bytes. */
static void write_file(const char *dir, struct journal_rec *recs, unsigned n, char *path,
		       size_t cap, uint8_t **bytes, size_t *len)
{
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	for (unsigned i = 0; i < n; i++)
		append_ok(j, &recs[i]);
	assert_int_equal(journal_close(j), 0);
	jpath(path, cap, dir, 0, 1, "jrn");
	assert_int_equal(t_read_file(path, bytes, len), 0);
}

static void test_torn_tail(void **state)
{
	(void)state;
	char dir[256], path[512];
	mkspool(dir, sizeof(dir));
	struct journal_rec r[8];
	unsigned n = every_kind(r, 1700000000000000ull);
	uint8_t *b;
	size_t len;
	write_file(dir, r, n, path, sizeof(path), &b, &len);
	struct got *g = replay(dir);
	assert_int_equal(g->n, n);
	uint64_t end[8];
	for (unsigned i = 0; i < n; i++)
		end[i] = i + 1 < n ? g->loc[i + 1].offset : len;
	uint64_t last = g->loc[n - 1].offset;
	for (size_t cut = JOURNAL_FILE_REC_LEN; cut < len; cut++) {
		assert_int_equal(t_write_file(path, b, cut), 0);
		g = replay(dir);
		unsigned want = 0; /* the records wholly before the cut, exactly */
		while (want < n && end[want] <= cut)
			want++;
		assert_int_equal(g->n, want);
		for (unsigned i = 0; i < want; i++)
			rec_equal(&g->rec[i], &r[i]);
		assert_int_equal(g->errors, 0);
		bool at_boundary =
		    cut == JOURNAL_FILE_REC_LEN || (want > 0 && end[want - 1] == cut);
		assert_int_equal(g->nprob, at_boundary ? 0 : 1);
		if (!at_boundary) {
			assert_int_equal(g->prob[0].kind, JOURNAL_P_TORN);
			assert_int_equal(g->prob[0].offset,
					 want ? end[want - 1] : JOURNAL_FILE_REC_LEN);
		}
		if (cut == last + 40)
			seed_out("torn-tail", 0, b, cut);
	}
	/* The FILE record itself torn (a crash as the file was made). */
	for (size_t cut = 0; cut < JOURNAL_FILE_REC_LEN; cut++) {
		assert_int_equal(t_write_file(path, b, cut), 0);
		g = replay(dir);
		assert_int_equal(g->n, 0);
		assert_int_equal(g->nprob, 1);
		assert_int_equal(g->prob[0].kind, JOURNAL_P_TORN);
		assert_false(g->prob[0].error);
	}
	/* Zeros where the last record should be: a power cut after the size grew. */
	uint8_t *z = calloc(1, len);
	assert_non_null(z);
	memcpy(z, b, last);
	assert_int_equal(t_write_file(path, z, len), 0);
	g = replay(dir);
	assert_int_equal(g->n, n - 1);
	assert_int_equal(g->nprob, 1);
	assert_int_equal(g->prob[0].kind, JOURNAL_P_TORN);
	free(z);
	assert_int_equal(t_write_file(path, b, len), 0);
	assert_int_equal(replay(dir)->n, n);
	free(b);
	t_rmdir(dir);
}

static void test_bitflip(void **state)
{
	(void)state;
	char dir[256], path[512];
	mkspool(dir, sizeof(dir));
	struct journal_rec r[8];
	unsigned n = every_kind(r, 1700000000000000ull);
	uint8_t *b;
	size_t len;
	write_file(dir, r, n, path, sizeof(path), &b, &len);
	struct got *g = replay(dir);
	uint64_t off[8];
	for (unsigned i = 0; i < n; i++)
		off[i] = g->loc[i].offset;
	off[n] = len;
	uint8_t *x = malloc(len);
	assert_non_null(x);
	for (size_t at = 0; at < len; at++) {
		for (unsigned bit = 0; bit < 8; bit += at < 200 ? 1 : 3) {
			memcpy(x, b, len);
			x[at] ^= (uint8_t)(1u << ((bit + at) % 8));
			assert_int_equal(t_write_file(path, x, len), 0);
			g = replay(dir);
			if (at < JOURNAL_FILE_REC_LEN) {
				assert_int_equal(g->n, 0);
				assert_int_equal(g->nprob, 1);
				assert_int_equal(g->prob[0].kind, JOURNAL_P_BADFILE);
				assert_true(g->prob[0].error);
				continue;
			}
			unsigned k = 0; /* the damaged record */
			while (off[k + 1] <= at)
				k++;
			assert_int_equal(g->n, k);
			for (unsigned i = 0; i < k; i++)
				rec_equal(&g->rec[i], &r[i]);
			assert_int_equal(g->nprob, 1);
			assert_int_equal(g->prob[0].offset, off[k]);
			assert_true(g->prob[0].kind == JOURNAL_P_CORRUPT ||
				    g->prob[0].kind == JOURNAL_P_TORN);
			/* Damage with intact bytes after it is an error, unless the
			 * length grew past the end (that reads as a torn tail). */
			if (k + 1 < n && g->prob[0].kind == JOURNAL_P_TORN)
				assert_true(at >= off[k] + 8 && at < off[k] + 12);
		}
	}
	memcpy(x, b, len);
	x[off[2] + 40] ^= 4;
	seed_out("bitflip", 0, x, len);
	free(x);
	free(b);
	t_rmdir(dir);
}

/* ---- rotation and a failed write ---- */

static void test_rotation(void **state)
{
	(void)state;
	char dir[256], p[512];
	mkspool(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 1, JOURNAL_FILE_BYTES_MIN - 1, &j), -EINVAL);
	assert_int_equal(journal_open(dir, JOURNAL_WRITERS_MAX, 0, &j), -EINVAL);
	assert_int_equal(journal_open(dir, 1, JOURNAL_FILE_BYTES_MIN, &j), 0);
	struct journal_rec r;
	char reply[400];
	memset(reply, 'z', sizeof(reply));
	for (unsigned i = 0; i < 100; i++) {
		result(&r, segname(i % 5), 88 + 100 * i, "QROT", 0, 1, JOURNAL_DEFERRED, i + 1,
		       1700000000000000ull + i);
		journal_rec_reply(&r, reply, sizeof(reply));
		append_ok(j, &r);
		if (i % 3 == 2)
			sync_ok(j);
	}
	assert_int_equal(journal_close(j), 0);
	unsigned files = count_journal(dir, ".jrn");
	assert_true(files >= 100 * 500 / JOURNAL_FILE_BYTES_MIN);
	for (unsigned s = 1; s <= files; s++) {
		struct stat st;
		jpath(p, sizeof(p), dir, 1, s, "jrn");
		assert_int_equal(stat(p, &st), 0);
		/* A file rotates at the first sync past the bound: three records at most over. */
		assert_true((uint64_t)st.st_size < JOURNAL_FILE_BYTES_MIN + 3 * JOURNAL_REC_MAX);
	}
	struct got *g = replay(dir);
	assert_int_equal(g->n, 100);
	assert_int_equal(g->nprob, 0);
	assert_int_equal(g->counts.files, files);
	for (unsigned i = 0; i < 100; i++) {
		assert_int_equal(g->rec[i].seq, i + 1);
		assert_int_equal(g->rec[i].attempts, i + 1);
	}
	jpath(p, sizeof(p), dir, 1, 2, "jrn");
	seed_file("rotated-second", 0, p);
	t_rmdir(dir);
}

static void set_fsize(rlim_t limit, struct rlimit *old)
{
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
	if (old)
		*old = rl;
	rl.rlim_cur = limit;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void test_write_error(void **state)
{
	(void)state;
	signal(SIGXFSZ, SIG_IGN);
	char dir[256], p[512];
	mkspool(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	struct journal_rec r;
	for (unsigned i = 0; i < 3; i++) {
		result(&r, segname(1), 88 + i, "QERR", 0, 1, JOURNAL_DELIVERED, 1,
		       1700000000000000ull + i);
		append_ok(j, &r);
	}
	sync_ok(j);
	struct stat st;
	jpath(p, sizeof(p), dir, 0, 1, "jrn");
	assert_int_equal(stat(p, &st), 0);

	struct rlimit old;
	set_fsize((rlim_t)st.st_size + 100, &old);
	for (unsigned i = 3; i < 6; i++) {
		result(&r, segname(1), 88 + i, "QERR", 0, 1, JOURNAL_DELIVERED, 1,
		       1700000000000000ull + i);
		append_ok(j, &r);
	}
	uint64_t durable;
	assert_int_equal(journal_sync(j, &durable), -EFBIG);
	assert_int_equal(durable, 3);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);

	/* The lost records are appended again; they go into a new file. */
	for (unsigned i = 3; i < 6; i++) {
		result(&r, segname(1), 88 + i, "QERR", 0, 1, JOURNAL_DELIVERED, 1,
		       1700000000000000ull + i);
		append_ok(j, &r);
	}
	assert_int_equal(journal_sync(j, &durable), 0);
	assert_int_equal(durable, 9);
	struct journal_counts c;
	journal_counts(j, &c);
	assert_int_equal(c.files, 2);
	assert_int_equal(journal_close(j), 0);
	struct got *g = replay(dir);
	assert_int_equal(g->n, 6);
	assert_int_equal(g->errors, 0);
	assert_int_equal(g->nprob, 1); /* the cut write, a torn tail in the first file */
	assert_int_equal(g->prob[0].kind, JOURNAL_P_TORN);
	for (unsigned i = 0; i < 6; i++) {
		assert_int_equal(g->rec[i].seg_off, 88 + i);
		assert_int_equal(g->rec[i].seq, i < 3 ? i + 1 : i + 4);
	}
	t_rmdir(dir);
}

/* ---- the index ---- */

static struct journal_index *load(const char *dir, struct got *g)
{
	struct journal_index *ix;
	assert_int_equal(journal_index_new(1u << 20, &ix), 0);
	memset(g, 0, sizeof(*g));
	assert_int_equal(journal_index_load(dir, ix, got_problem, g, &g->counts), 0);
	return ix;
}

static void test_index_states(void **state)
{
	(void)state;
	char dir[256];
	mkspool(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	const char *s1 = segname(1), *s2 = segname(2), *s3 = segname(3);
	uint64_t t = 1700000000000000ull;
	struct journal_rec r;
	/* A: deferred, then delivered. */
	result(&r, s1, 88, "QA", 0, 1, JOURNAL_DEFERRED, 1, t + 10);
	append_ok(j, &r);
	result(&r, s1, 88, "QA", 0, 1, JOURNAL_DELIVERED, 2, t + 70);
	append_ok(j, &r);
	/* B: deferred twice; the second's next time stands. */
	result(&r, s1, 200, "QB", 0, 2, JOURNAL_DEFERRED, 1, t + 10);
	append_ok(j, &r);
	result(&r, s1, 200, "QB", 0, 2, JOURNAL_DEFERRED, 2, t + 70);
	append_ok(j, &r);
	uint64_t b_next = r.next_us;
	/* C: failed and bounced; its other recipient delivered. */
	result(&r, s2, 88, "QC", 1, 2, JOURNAL_FAILED, 1, t + 20);
	append_ok(j, &r);
	bounce(&r, s2, 88, "QC", 1, 2, "QDSN", t + 21);
	append_ok(j, &r);
	result(&r, s2, 88, "QC", 0, 2, JOURNAL_DELIVERED, 1, t + 20);
	append_ok(j, &r);
	/* D: in s3, which is done, and records after the SEGDONE change nothing. */
	result(&r, s3, 88, "QD", 0, 1, JOURNAL_DELIVERED, 1, t + 5);
	append_ok(j, &r);
	segdone(&r, s3, t + 30);
	append_ok(j, &r);
	result(&r, s3, 300, "QE", 0, 1, JOURNAL_DEFERRED, 1, t + 40);
	append_ok(j, &r);
	/* A conflicting record: QB again with another recipient count. */
	result(&r, s1, 200, "QB", 0, 3, JOURNAL_DELIVERED, 3, t + 90);
	append_ok(j, &r);
	assert_int_equal(journal_close(j), 0);

	struct got *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	struct journal_index *ix = load(dir, g);
	assert_int_equal(g->nprob, 1);
	assert_int_equal(g->prob[0].kind, JOURNAL_P_CONFLICT);
	assert_int_equal(g->counts.errors, 1);
	struct journal_msg_state m;
	assert_true(journal_index_find(ix, s1, 88, &m));
	assert_string_equal(m.qid, "QA");
	assert_int_equal(m.pending, 0);
	assert_int_equal(m.rcpt[0].state, JOURNAL_DELIVERED);
	assert_int_equal(m.rcpt[0].attempts, 2);
	assert_true(journal_index_find(ix, s1, 200, &m));
	assert_int_equal(m.nrcpt, 2);
	assert_int_equal(m.pending, 2);
	assert_int_equal(m.rcpt[0].state, JOURNAL_DEFERRED);
	assert_int_equal(m.rcpt[0].attempts, 2);
	assert_int_equal(m.rcpt[0].next_us, b_next);
	assert_int_equal(m.rcpt[1].state, 0); /* never tried */
	assert_true(journal_index_find(ix, s2, 88, &m));
	assert_int_equal(m.pending, 0);
	assert_int_equal(m.rcpt[1].state, JOURNAL_FAILED);
	assert_int_equal(m.rcpt[1].flags & JOURNAL_RCPT_BOUNCED, JOURNAL_RCPT_BOUNCED);
	assert_int_equal(m.rcpt[0].flags & JOURNAL_RCPT_BOUNCED, 0);
	assert_true(journal_index_find(ix, s3, 88, &m));
	assert_true(m.segment_done);
	assert_int_equal(m.nrcpt, 0);
	assert_true(journal_index_find(ix, s3, 300, &m));
	assert_true(m.segment_done);
	assert_true(journal_index_segment_done(ix, s3));
	assert_false(journal_index_segment_done(ix, s1));
	assert_false(journal_index_find(ix, s1, 999, &m));
	assert_false(journal_index_find(ix, segname(7), 88, &m));
	assert_int_equal(journal_index_msgs(ix), 3);
	struct snap *sn = calloc(1, sizeof(*sn));
	assert_non_null(sn);
	snap_index(ix, sn);
	assert_int_equal(sn->ndone, 1);
	assert_string_equal(sn->done[0], s3);

	/* The caller deletes the done segment, then forgets it. */
	touch_segment(dir, "ready", s3);
	touch_segment(dir, "active", s3);
	assert_int_equal(journal_delete_segment(dir, s3), 0);
	char p[512];
	snprintf(p, sizeof(p), "%s/ready/%s", dir, s3);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), "%s/active/%s", dir, s3);
	assert_int_equal(access(p, F_OK), -1);
	assert_int_equal(journal_delete_segment(dir, s3), 0);
	assert_int_equal(journal_delete_segment(dir, "ready/x.seg"), -EINVAL);
	journal_index_forget_segment(ix, s3);
	assert_false(journal_index_find(ix, s3, 88, &m));
	journal_index_forget_segment(ix, s1);
	assert_int_equal(journal_index_msgs(ix), 1);
	journal_index_free(ix);

	free(sn);
	free(g);
	t_rmdir(dir);
}

/* A bounded index refuses past its bound. */
static void test_index_bounded(void **state)
{
	(void)state;
	struct journal_index *ix;
	struct journal_rec r;
	assert_int_equal(journal_index_new(2, &ix), 0);
	result(&r, segname(1), 88, "QA", 0, 1, JOURNAL_DEFERRED, 1, 1700000000000000ull);
	r.seq = 1;
	assert_int_equal(journal_index_add(ix, &r), 0);
	r.seg_off = 100;
	assert_int_equal(journal_index_add(ix, &r), 0);
	r.seg_off = 200;
	assert_int_equal(journal_index_add(ix, &r), -ENOSPC);
	r.seg_off = 100; /* one it holds still takes results */
	r.outcome = JOURNAL_DELIVERED;
	r.next_us = 0;
	snprintf(r.dsn, sizeof(r.dsn), "2.0.0");
	assert_int_equal(journal_index_add(ix, &r), 0);
	struct journal_msg_state m;
	assert_true(journal_index_find(ix, segname(1), 100, &m));
	assert_int_equal(m.pending, 0);
	journal_index_free(ix);
}

/* The same records in any order, from any writer, add up to the same state. */
static void test_index_order(void **state)
{
	(void)state;
	char d1[256], d2[256];
	mkspool(d1, sizeof(d1));
	mkspool(d2, sizeof(d2));
	struct journal_rec r[12];
	uint64_t t = 1700000000000000ull;
	const char *s = segname(4);
	result(&r[0], s, 88, "QO", 0, 2, JOURNAL_DEFERRED, 1, t + 1);
	result(&r[1], s, 88, "QO", 0, 2, JOURNAL_DEFERRED, 3, t + 3);
	result(&r[2], s, 88, "QO", 0, 2, JOURNAL_DEFERRED, 2, t + 2);
	result(&r[3], s, 88, "QO", 1, 2, JOURNAL_DEFERRED, 1, t + 1);
	result(&r[4], s, 88, "QO", 1, 2, JOURNAL_DELIVERED, 2, t + 9);
	result(&r[5], s, 88, "QO", 1, 2, JOURNAL_FAILED, 3, t + 12); /* a second final: later */
	result(&r[6], s, 88, "QO", 1, 2, JOURNAL_DEFERRED, 5, t + 20);
	bounce(&r[7], s, 88, "QO", 0, 2, "QDSN1", t + 30);
	bounce(&r[8], s, 88, "QO", 0, 2, "QDSN1", t + 30); /* appended twice */
	result(&r[9], s, 400, "QP", 0, 1, JOURNAL_DELIVERED, 1, t + 4);
	result(&r[10], s, 400, "QP", 0, 1, JOURNAL_DELIVERED, 1, t + 4);
	unsigned n = 11;
	/* d1: one writer, in order; d2: two writers, reversed and interleaved. */
	struct journal *a, *b;
	assert_int_equal(journal_open(d1, 0, 0, &a), 0);
	for (unsigned i = 0; i < n; i++)
		append_ok(a, &r[i]);
	assert_int_equal(journal_close(a), 0);
	assert_int_equal(journal_open(d2, 5, 0, &a), 0);
	assert_int_equal(journal_open(d2, 2, 0, &b), 0);
	for (unsigned i = n; i-- > 0;)
		append_ok(i % 2 ? a : b, &r[i]);
	assert_int_equal(journal_close(a), 0);
	assert_int_equal(journal_close(b), 0);
	struct snap *x = calloc(2, sizeof(*x));
	assert_non_null(x);
	snap_dir(d1, &x[0]);
	snap_dir(d2, &x[1]);
	snap_equal(&x[0], &x[1]);
	assert_int_equal(x[0].n, 2);
	const struct snap_msg *m = &x[0].msg[0];
	assert_int_equal(m->off, 88);
	assert_int_equal(m->pending, 1);
	assert_int_equal(m->rcpt[0].state, JOURNAL_DEFERRED);
	assert_int_equal(m->rcpt[0].attempts, 3);
	assert_int_equal(m->rcpt[0].flags, JOURNAL_RCPT_BOUNCED);
	assert_int_equal(m->rcpt[1].state, JOURNAL_DELIVERED); /* the first final */
	assert_int_equal(m->rcpt[1].time_us, t + 9);
	free(x);
	t_rmdir(d1);
	t_rmdir(d2);
}

/* A model of thousands of messages, written in batches, read back whole. */
struct model_msg {
	uint32_t nrcpt;
	uint8_t state[T_RCPTS_MAX];
	uint32_t attempts[T_RCPTS_MAX];
	bool bounced[T_RCPTS_MAX];
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void test_index_many(void **state)
{
	(void)state;
	enum { MSGS = 20000, SEGS = 40 };
	char dir[256];
	mkspool(dir, sizeof(dir));
	struct model_msg *mm = calloc(MSGS, sizeof(*mm));
	assert_non_null(mm);
	uint64_t rng = 0x9e3779b97f4a7c15ull, t = 1700000000000000ull;
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 1u << 20, &j), 0);
	struct journal_rec r;
	char qid[QID_LEN + 1];
	for (unsigned i = 0; i < MSGS; i++)
		mm[i].nrcpt = 1 + (unsigned)(rng_next(&rng) % 4);
	unsigned appended = 0, batches = 0;
	for (unsigned round = 0; round < 4; round++) {
		for (unsigned i = 0; i < MSGS; i++) {
			struct model_msg *m = &mm[i];
			snprintf(qid, sizeof(qid), "Q%08u", i);
			for (uint32_t k = 0; k < m->nrcpt; k++) {
				if (m->state[k] && m->state[k] != JOURNAL_DEFERRED)
					continue;
				uint64_t x = rng_next(&rng) % 10;
				if (x >= 7)
					continue; /* not tried this round */
				enum journal_outcome o = x < 3	 ? JOURNAL_DEFERRED
							 : x < 6 ? JOURNAL_DELIVERED
								 : JOURNAL_FAILED;
				m->attempts[k]++;
				m->state[k] = (uint8_t)o;
				result(&r, segname(i % SEGS), 88 + 1000ull * (i / SEGS), qid, k,
				       m->nrcpt, o, m->attempts[k], t + round * 1000000ull + i);
				int rc = journal_append(j, &r, &r.seq);
				if (rc == -ENOBUFS) {
					sync_ok(j);
					batches++;
					rc = journal_append(j, &r, &r.seq);
				}
				assert_int_equal(rc, 0);
				appended++;
				if (o == JOURNAL_FAILED && x % 2 == 0) {
					bounce(&r, segname(i % SEGS), 88 + 1000ull * (i / SEGS),
					       qid, k, m->nrcpt, "QDSN", t + round);
					if (journal_append(j, &r, &r.seq) == -ENOBUFS) {
						sync_ok(j);
						batches++;
						assert_int_equal(journal_append(j, &r, &r.seq), 0);
					}
					m->bounced[k] = true;
					appended++;
				}
			}
		}
	}
	assert_int_equal(journal_close(j), 0);
	struct got *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	struct journal_index *ix = load(dir, g);
	assert_int_equal(g->nprob, 0);
	assert_int_equal(g->counts.records, appended);
	assert_true(batches > 10);
	unsigned tried = 0;
	for (unsigned i = 0; i < MSGS; i++) {
		const struct model_msg *m = &mm[i];
		struct journal_msg_state st;
		bool any = false;
		for (uint32_t k = 0; k < m->nrcpt; k++)
			any |= m->state[k] != 0;
		bool found =
		    journal_index_find(ix, segname(i % SEGS), 88 + 1000ull * (i / SEGS), &st);
		assert_int_equal(found, any);
		if (!found)
			continue;
		tried++;
		uint32_t pending = 0;
		for (uint32_t k = 0; k < m->nrcpt; k++) {
			assert_int_equal(st.rcpt[k].state, m->state[k]);
			assert_int_equal(st.rcpt[k].attempts, m->state[k] ? m->attempts[k] : 0);
			assert_int_equal(!!(st.rcpt[k].flags & JOURNAL_RCPT_BOUNCED),
					 m->bounced[k]);
			pending += m->state[k] == 0 || m->state[k] == JOURNAL_DEFERRED;
		}
		assert_int_equal(st.pending, pending);
	}
	assert_int_equal(journal_index_msgs(ix), tried);
	journal_index_free(ix);
	free(g);
	free(mm);
	t_rmdir(dir);
}

/* ---- compaction ---- */

/* A history over several files of writer 0: deferrals, finals, bounces, a done segment. */
static void write_history(const char *dir, unsigned runs)
{
	uint64_t t = 1700000000000000ull, rng = 12345;
	struct journal_rec r;
	char qid[QID_LEN + 1];
	for (unsigned s = 0; s < 5; s++)
		touch_segment(dir, s % 2 ? "active" : "ready", segname(10 + s));
	for (unsigned run = 0; run < runs; run++) {
		struct journal *j;
		assert_int_equal(journal_open(dir, 0, JOURNAL_FILE_BYTES_MIN, &j), 0);
		for (unsigned i = 0; i < 60; i++) {
			snprintf(qid, sizeof(qid), "QH%04u", i);
			const char *seg = segname(10 + i % 5);
			uint64_t off = 88 + 500ull * (i / 5);
			uint32_t nrcpt = 1 + i % 3;
			for (uint32_t k = 0; k < nrcpt; k++) {
				uint64_t x = rng_next(&rng) % 8;
				enum journal_outcome o = run + 1 < runs || x < 4 ? JOURNAL_DEFERRED
							 : x < 6		 ? JOURNAL_DELIVERED
										 : JOURNAL_FAILED;
				result(&r, seg, off, qid, k, nrcpt, o, run + 1,
				       t + run * 1000ull + i);
				append_ok(j, &r);
				if (o == JOURNAL_FAILED) {
					bounce(&r, seg, off, qid, k, nrcpt, "QDSN", t + run);
					append_ok(j, &r);
				}
			}
			if (i % 7 == 0)
				sync_ok(j);
		}
		if (run == runs - 1) {
			segdone(&r, segname(14), t + 99999);
			append_ok(j, &r);
		}
		assert_int_equal(journal_close(j), 0);
	}
}

/* Copies dir's ready/, active/ and journal/ into a fresh spool dir. */
static void copy_spool(const char *from, char *to, size_t cap)
{
	t_mkdtemp(to, cap);
	static const char *const subs[] = {"ready", "active", "journal"};
	for (size_t i = 0; i < 3; i++) {
		char a[512], b[512];
		snprintf(a, sizeof(a), "%s/%s", from, subs[i]);
		snprintf(b, sizeof(b), "%s/%s", to, subs[i]);
		assert_int_equal(mkdir(b, 0700), 0);
		DIR *d = opendir(a);
		assert_non_null(d);
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			char fa[800], fb[800];
			snprintf(fa, sizeof(fa), "%s/%s", a, de->d_name);
			snprintf(fb, sizeof(fb), "%s/%s", b, de->d_name);
			uint8_t *buf;
			size_t n;
			assert_int_equal(t_read_file(fa, &buf, &n), 0);
			assert_int_equal(t_write_file(fb, buf, n), 0);
			free(buf);
		}
		closedir(d);
	}
}

/* The records a replay reads after a whole compaction of a copy of dir. */
static uint64_t compacted_records(const char *dir)
{
	char c[256];
	struct journal *j;
	copy_spool(dir, c, sizeof(c));
	assert_int_equal(journal_open(c, 0, JOURNAL_FILE_BYTES_MIN, &j), 0);
	assert_int_equal(journal_compact(j), 0);
	assert_int_equal(journal_close(j), 0);
	uint64_t n = replay(c)->n;
	t_rmdir(c);
	return n;
}

/*
 * A copy of dir compacted up to step stop, as a crash there leaves it: the
 * state read back is ref, before and after the next journal_open finishes
 * the job; the records read are the old files' (total) or the compacted
 * file's (kept), never both.
 */
static void compact_crash(const char *dir, unsigned stop, unsigned files, const struct snap *ref,
			  uint64_t total, uint64_t kept)
{
	static struct snap s;
	char c[256];
	copy_spool(dir, c, sizeof(c));
	struct journal *j;
	assert_int_equal(journal_open(c, 0, JOURNAL_FILE_BYTES_MIN, &j), 0);
	journal_test_compact_stop = stop;
	int rc = journal_compact(j);
	journal_test_compact_stop = 0;
	assert_int_equal(rc, stop <= 4 + files ? -ECANCELED : 0);
	assert_int_equal(journal_close(j), 0);
	snap_dir(c, &s);
	snap_equal(ref, &s);
	struct got *g = replay(c);
	assert_int_equal(g->n, stop < 3 ? total : kept);
	assert_int_equal(g->errors, 0);
	assert_int_equal(count_journal(c, ".tmp"), stop == 2);

	assert_int_equal(journal_open(c, 0, JOURNAL_FILE_BYTES_MIN, &j), 0);
	assert_int_equal(journal_close(j), 0);
	assert_int_equal(count_journal(c, ".tmp"), 0);
	snap_dir(c, &s);
	snap_equal(ref, &s);
	assert_int_equal(replay(c)->n, stop < 3 ? total : kept);
	/* Once renamed, open leaves the compacted file, the one sealed into, its own. */
	if (stop >= 3)
		assert_int_equal(count_journal(c, ".jrn"), 3);
	t_rmdir(c);
}

static void test_compaction(void **state)
{
	(void)state;
	char dir[256];
	mkspool(dir, sizeof(dir));
	write_history(dir, 4);
	unsigned files = count_journal(dir, ".jrn");
	assert_true(files >= 8);
	struct snap *ref = calloc(1, sizeof(*ref)), *s = calloc(1, sizeof(*s));
	assert_non_null(ref);
	assert_non_null(s);
	snap_dir(dir, ref);
	assert_int_equal(ref->n, 48); /* 60 messages, 12 of them in the done segment */
	assert_int_equal(ref->ndone, 1);

	/* What a whole compaction keeps, read from a copy. */
	uint64_t total = replay(dir)->n, kept = compacted_records(dir);
	assert_true(kept < total / 2);

	/* Stopped after each step, as a crash there: the same state, before and after
	 * the next journal_open finishes the job; and the records read are the old
	 * files' or the compacted file's, never both. */
	for (unsigned stop = 1; stop <= 5 + files + 1; stop++)
		compact_crash(dir, stop, files, ref, total, kept);

	/* The real thing: fewer bytes, the same state, appending goes on. */
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, JOURNAL_FILE_BYTES_MIN, &j), 0);
	struct journal_counts c0, c1;
	journal_counts(j, &c0);
	assert_true(journal_compact_due(j));
	assert_int_equal(journal_compact(j), 0);
	journal_counts(j, &c1);
	assert_int_equal(c1.compactions, 1);
	assert_true(c1.bytes < c0.bytes / 2);
	assert_false(journal_compact_due(j));
	struct journal_rec r;
	result(&r, segname(10), 88, "QH0000", 0, 1, JOURNAL_DELIVERED, 9, 1800000000000000ull);
	append_ok(j, &r);
	assert_int_equal(journal_close(j), 0);
	assert_int_equal(count_journal(dir, ".jrn"),
			 2); /* the compacted file, the one sealed into */
	snap_dir(dir, s);
	assert_int_equal(s->n, ref->n);
	struct got *g = replay(dir);
	assert_int_equal(g->errors, 0);
	char p[512];
	for (unsigned i = 1; i < 64; i++) {
		jpath(p, sizeof(p), dir, 0, i, "jrn");
		if (access(p, F_OK) == 0) {
			seed_file("compacted", 0, p);
			seed_file("compacted-index", 4, p);
			seed_file("compacted-twice", 2, p);
			break;
		}
	}

	/* A deleted segment's records go at the next compaction; so does the done
	 * segment's SEGDONE once that segment is deleted. */
	assert_int_equal(journal_delete_segment(dir, segname(11)), 0);
	assert_int_equal(journal_delete_segment(dir, segname(14)), 0);
	assert_int_equal(journal_open(dir, 0, JOURNAL_FILE_BYTES_MIN, &j), 0);
	assert_int_equal(journal_compact(j), 0);
	assert_int_equal(journal_close(j), 0);
	snap_dir(dir, s);
	assert_int_equal(s->ndone, 0);
	unsigned in11 = 0;
	for (unsigned i = 0; i < ref->n; i++)
		in11 += strcmp(ref->msg[i].seg, segname(11)) == 0;
	assert_int_equal(s->n, ref->n - in11);
	for (unsigned i = 0, k = 0; i < ref->n; i++) {
		if (strcmp(ref->msg[i].seg, segname(11)) == 0)
			continue;
		assert_int_equal(memcmp(&ref->msg[i], &s->msg[k], sizeof(s->msg[k])), 0);
		k++;
	}
	free(ref);
	free(s);
	t_rmdir(dir);
}

/* Without ready/ and active/ the spool is not the journal's: nothing is dropped. */
static void test_compaction_wrong_dir(void **state)
{
	(void)state;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	struct journal_rec r;
	result(&r, segname(1), 88, "QW", 0, 1, JOURNAL_DEFERRED, 1, 1700000000000000ull);
	append_ok(j, &r);
	assert_int_equal(journal_compact(j), -ENOENT);
	assert_int_equal(journal_close(j), 0);
	assert_int_equal(replay(dir)->n, 1);
	t_rmdir(dir);
}

/* ---- bounds ---- */

/* Records spoiled one way each (spoil), and what journal_rec_check says of them. */
static const char *const spoiled[] = {
    "recipient count not in 1..RCPT_LIMIT_MAX",
    "recipient index not below the recipient count",
    "recipient count not in 1..RCPT_LIMIT_MAX",
    "not a DSN status (C.S.D)",
    "DSN class does not fit the outcome",
    "next attempt time on a record that is not deferred, or missing",
    "next attempt time on a record that is not deferred, or missing",
    "not a segment name",
    "not a valid qid",
    "unknown outcome",
    "unknown flags",
    "unknown record type",
    "no attempt counted",
    "reply text too long or with control bytes",
    "segment offset out of range",
    "not a valid DSN qid",
    "not a DSN status (C.S.D)",
    "no time",
};

static void spoil(struct journal_rec *r, unsigned k)
{
	switch (k) {
	case 0:
		r->nrcpt = RCPT_LIMIT_MAX + 1;
		break;
	case 1:
		r->rcpt = r->nrcpt;
		break;
	case 2:
		r->nrcpt = 0;
		break;
	case 3:
		snprintf(r->dsn, sizeof(r->dsn), "4.4");
		break;
	case 4:
		snprintf(r->dsn, sizeof(r->dsn), "2.0.0");
		break;
	case 5:
		r->outcome = JOURNAL_DELIVERED;
		snprintf(r->dsn, sizeof(r->dsn), "2.0.0");
		break;
	case 6:
		r->next_us = 0;
		break;
	case 7:
		snprintf(r->seg, sizeof(r->seg), "ready/w00-00000000000001-0001.seg");
		break;
	case 8:
		snprintf(r->qid, sizeof(r->qid), "Q B");
		break;
	case 9:
		r->outcome = 7;
		break;
	case 10:
		r->flags = 0x100;
		break;
	case 11:
		r->type = JOURNAL_REC_FILE;
		break;
	case 12:
		r->attempts = 0;
		break;
	case 13:
		r->reply[3] = '\n';
		break;
	case 14:
		r->seg_off = 10;
		break;
	case 15:
		r->type = JOURNAL_REC_BOUNCE;
		r->dsn_qid[0] = 0;
		break;
	case 16:
		snprintf(r->dsn, sizeof(r->dsn), "4.1234.1");
		break;
	default:
		r->time_us = 0;
		break;
	}
}

static void test_bounds(void **state)
{
	(void)state;
	char dir[256];
	mkspool(dir, sizeof(dir));
	struct journal *j, *j2;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	assert_int_equal(journal_open(dir, 0, 0, &j2), -EBUSY);
	struct journal_rec r, ok;
	uint64_t seq;
	result(&ok, segname(1), 88, "QB", 0, 1, JOURNAL_DEFERRED, 1, 1700000000000000ull);
	assert_null(journal_rec_check(&ok));

	/* Reply text: cut at the bound, on a UTF-8 boundary, control bytes as spaces. */
	char text[JOURNAL_REPLY_MAX + 64];
	memset(text, 'a', sizeof(text));
	memcpy(text + JOURNAL_REPLY_MAX - 1, "\xc3\xa9", 2); /* é across the bound */
	r = ok;
	journal_rec_reply(&r, text, sizeof(text));
	assert_int_equal(strlen(r.reply), JOURNAL_REPLY_MAX - 1);
	assert_true(r.flags & JOURNAL_F_REPLY_CUT);
	journal_rec_reply(&r, "451-4.4.1 one\r\n451 4.4.1 two\r\n", 30);
	assert_string_equal(r.reply, "451-4.4.1 one  451 4.4.1 two");
	assert_false(r.flags & JOURNAL_F_REPLY_CUT);
	journal_rec_reply(&r, "a\0b\tc\x7f", 6);
	assert_string_equal(r.reply, "a b c ");
	memset(text, 'h', sizeof(text));
	journal_rec_relay(&r, text, JOURNAL_RELAY_MAX + 1);
	memset(text, 'a', sizeof(text));
	memcpy(text + JOURNAL_REPLY_MAX - 1, "\xc3\xa9", 2);
	journal_rec_reply(&r, text, sizeof(text));
	assert_int_equal(strlen(r.relay), JOURNAL_RELAY_MAX);
	assert_true(r.flags & JOURNAL_F_RELAY_CUT);
	append_ok(j, &r);

	/* What append refuses, and the reason journal_rec_check gives. */
	for (unsigned i = 0; i < sizeof(spoiled) / sizeof(spoiled[0]); i++) {
		r = ok;
		spoil(&r, i);
		const char *why = journal_rec_check(&r);
		if (!why || strcmp(why, spoiled[i]) != 0)
			fail_msg("spoiled record %u: '%s', not '%s'", i, why ? why : "accepted",
				 spoiled[i]);
		if (r.time_us) /* journal_append gives a record without one the time now */
			assert_int_equal(journal_append(j, &r, &seq), -EINVAL);
	}
	/* The bounds themselves pass. */
	r = ok;
	r.nrcpt = RCPT_LIMIT_MAX;
	r.rcpt = RCPT_LIMIT_MAX - 1;
	snprintf(r.dsn, sizeof(r.dsn), "4.999.999");
	append_ok(j, &r);
	r = ok;
	r.outcome = JOURNAL_EXPIRED;
	r.attempts = 0;
	r.next_us = 0;
	snprintf(r.dsn, sizeof(r.dsn), "5.4.7");
	append_ok(j, &r);
	r.time_us = 0; /* now */
	append_ok(j, &r);
	assert_true(r.time_us > 1700000000000000ull);
	assert_int_equal(journal_close(j), 0);
	struct got *g = replay(dir);
	assert_int_equal(g->n, 4);
	assert_int_equal(strlen(g->rec[0].reply), JOURNAL_REPLY_MAX - 1);
	assert_int_equal(g->rec[0].flags, JOURNAL_F_REPLY_CUT | JOURNAL_F_RELAY_CUT);
	assert_int_equal(g->rec[1].nrcpt, RCPT_LIMIT_MAX);
	t_rmdir(dir);
}

/* ---- what journal_open and replay make of what a crash or an operator left ---- */

static void test_open_cleanup(void **state)
{
	(void)state;
	char dir[256], p[512];
	mkspool(dir, sizeof(dir));
	struct journal *j;
	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	struct journal_rec r;
	result(&r, segname(1), 88, "QC", 0, 1, JOURNAL_DEFERRED, 1, 1700000000000000ull);
	append_ok(j, &r);
	assert_int_equal(journal_close(j), 0);
	/* A crash as the next file was made; a compaction's .tmp of writer 0 and of
	 * writer 1; a file of no journal; a bad file of writer 2. */
	jpath(p, sizeof(p), dir, 0, 2, "jrn");
	assert_int_equal(t_write_file(p, (const uint8_t *)"MXJR\x01", 5), 0);
	jpath(p, sizeof(p), dir, 0, 1, "tmp");
	assert_int_equal(t_write_file(p, (const uint8_t *)"junk", 4), 0);
	jpath(p, sizeof(p), dir, 1, 7, "tmp");
	assert_int_equal(t_write_file(p, (const uint8_t *)"junk", 4), 0);
	snprintf(p, sizeof(p), "%s/journal/notes.txt", dir);
	assert_int_equal(t_write_file(p, (const uint8_t *)"x", 1), 0);
	uint8_t junk[200];
	memset(junk, 0x5a, sizeof(junk));
	jpath(p, sizeof(p), dir, 2, 1, "jrn");
	assert_int_equal(t_write_file(p, junk, sizeof(junk)), 0);
	struct got *g = replay(dir);
	assert_int_equal(g->n, 1);
	unsigned kinds[8] = {0};
	for (unsigned i = 0; i < g->nprob; i++)
		kinds[g->prob[i].kind]++;
	assert_int_equal(kinds[JOURNAL_P_STRAY], 3);
	assert_int_equal(kinds[JOURNAL_P_TORN], 1);
	assert_int_equal(kinds[JOURNAL_P_BADFILE], 1);
	assert_int_equal(g->errors, 1);

	assert_int_equal(journal_open(dir, 0, 0, &j), 0);
	jpath(p, sizeof(p), dir, 0, 2, "jrn");
	assert_int_equal(access(p, F_OK), -1); /* torn at creation: removed */
	jpath(p, sizeof(p), dir, 0, 1, "tmp");
	assert_int_equal(access(p, F_OK), -1);
	jpath(p, sizeof(p), dir, 1, 7, "tmp");
	assert_int_equal(access(p, F_OK), 0); /* writer 1's: not ours */
	jpath(p, sizeof(p), dir, 0, 3, "jrn");
	assert_int_equal(access(p, F_OK), 0); /* past the torn one */
	result(&r, segname(1), 88, "QC", 0, 1, JOURNAL_DELIVERED, 2, 1700000000000001ull);
	append_ok(j, &r);
	assert_int_equal(r.seq, 2);
	assert_int_equal(journal_close(j), 0);
	g = replay(dir);
	assert_int_equal(g->n, 2);
	t_rmdir(dir);
}

/* Past JOURNAL_FILES_MAX journal files, replay refuses with a clear problem. */
static void test_too_many_files(void **state)
{
	(void)state;
	char dir[256], p[512];
	t_mkdtemp(dir, sizeof(dir));
	snprintf(p, sizeof(p), "%s/journal", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	for (unsigned i = 1; i <= JOURNAL_FILES_MAX; i++) {
		jpath(p, sizeof(p), dir, i % 4, i, "jrn");
		assert_int_equal(t_write_file(p, (const uint8_t *)"", 0), 0);
	}
	struct got *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	assert_int_equal(journal_replay(dir, got_rec, got_problem, g, NULL), 0);
	assert_int_equal(g->errors, 0); /* each a file torn as it was made */
	jpath(p, sizeof(p), dir, 9, 1, "jrn");
	assert_int_equal(t_write_file(p, (const uint8_t *)"", 0), 0);
	memset(g, 0, sizeof(*g));
	assert_int_equal(journal_replay(dir, got_rec, got_problem, g, NULL), -E2BIG);
	assert_int_equal(g->errors, 1);
	assert_int_equal(g->n, 0);
	free(g);
	t_rmdir(dir);
}

int main(void)
{
	log_enable(getenv("T_VERBOSE") != NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),	   cmocka_unit_test(test_batching),
	    cmocka_unit_test(test_torn_tail),	   cmocka_unit_test(test_bitflip),
	    cmocka_unit_test(test_rotation),	   cmocka_unit_test(test_write_error),
	    cmocka_unit_test(test_index_states),   cmocka_unit_test(test_index_bounded),
	    cmocka_unit_test(test_index_order),	   cmocka_unit_test(test_index_many),
	    cmocka_unit_test(test_compaction),	   cmocka_unit_test(test_compaction_wrong_dir),
	    cmocka_unit_test(test_bounds),	   cmocka_unit_test(test_open_cleanup),
	    cmocka_unit_test(test_too_many_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
