/*
 * test_tool.c - runs the built mxring-spool (argv[1]) on spools made with
 * the spool API: verify (exit status and output on an intact, a damaged
 * and a maildir spool), list, cat (with and without --body), export to a
 * maildir and to an mbox (">From " quoting), and usage errors; queue (its
 * exact mailq-style and --json output) on an empty spool, a spool without
 * a journal, one with a journal written by the journal API (delivered,
 * deferred twice, failed, bounced, expired, a done segment), a maildir
 * spool, and a damaged journal file. Times are shown in TZ=UTC0.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "journal.h"
#include "log.h"
#include "trace.h"

static const char *tool;

struct run {
	int status; /* exit status, or -1 */
	uint8_t *out, *err;
	size_t out_len, err_len;
};

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Runs the tool with args (NULL-terminated) and collects stdout, stderr, status. */
static void run_tool(struct run *r, const char *dir, ...)
{
	char outp[600], errp[600];
	snprintf(outp, sizeof(outp), "%s.out", dir);
	snprintf(errp, sizeof(errp), "%s.err", dir);
	const char *argv[16] = {tool};
	int argc = 1;
	va_list ap;
	va_start(ap, dir);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(99);
		execv(tool, (char *const *)argv);
		_exit(98);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	assert_int_equal(t_read_file(outp, &r->out, &r->out_len), 0);
	assert_int_equal(t_read_file(errp, &r->err, &r->err_len), 0);
	r->out = realloc(r->out, r->out_len + 1);
	r->err = realloc(r->err, r->err_len + 1);
	r->out[r->out_len] = 0;
	r->err[r->err_len] = 0;
	unlink(outp);
	unlink(errp);
}

static unsigned count_lines(const char *s, const char *prefix)
{
	unsigned n = 0;
	for (const char *p = s; p && *p;) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return n;
}

/* A spool with three messages (one of three parts) and one aborted transaction. */
static void make_spool(const char *dir, enum spool_format fmt, struct t_txn t[3])
{
	struct config cfg;
	t_config(&cfg, dir, fmt, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn x;
	t_txn_init(&t[0], "AAAA0001", 500, 1, 1);
	t_txn_init(&t[1], "BBBB0002", 3000, 2, 2);
	t_txn_init(&t[2], "CCCC0003", 0, 3, 1);
	t_txn_init(&x, "XXXX0004", 100, 4, 1);
	/* A client address that needs escaping in list output. */
	strcpy(t[0].env.from, "odd sender\"@example.net");
	struct msg *m[] = {
	    t_msg(&t[1], MSG_PART, 0, 0, 1000, 64), t_msg(&x, MSG_PART, 0, 0, 100, 64),
	    t_msg(&t[0], MSG_FINAL, 0, 0, 500, 64), t_msg(&t[1], MSG_PART, 1, 1000, 1000, 64),
	    t_msg(&x, MSG_ABORT, 0, 0, 0, 0),	    t_msg(&t[1], MSG_FINAL, 2, 2000, 1000, 64),
	    t_msg(&t[2], MSG_FINAL, 0, 0, 0, 64),
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		assert_int_equal(spool_write(sp, m[i]), 0);
		t_msg_free(m[i]);
	}
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_close(sp), 0);
	t_txn_free(&x);
}

static void check_cat(const char *dir, const struct t_txn *t)
{
	struct run r;
	run_tool(&r, dir, "cat", dir, t->env.qid, "--body", NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.err_len, 0);
	assert_int_equal(r.out_len, t->body_len);
	if (t->body_len)
		assert_memory_equal(r.out, t->body, t->body_len);
	run_free(&r);
	run_tool(&r, dir, "cat", dir, t->env.qid, NULL);
	assert_int_equal(r.status, 0);
	char trace[SPOOL_TRACE_MAX];
	size_t tl = trace_format(trace, sizeof(trace), &t->env, "");
	assert_int_equal(r.out_len, tl + t->body_len);
	assert_memory_equal(r.out, trace, tl);
	if (t->body_len)
		assert_memory_equal(r.out + tl, t->body, t->body_len);
	run_free(&r);
}

static void tool_on(enum spool_format fmt)
{
	char dir[256];
	struct t_txn t[3];
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, fmt, t);

	run_tool(&r, dir, "verify", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr((char *)r.out, "3 messages\n"));
	assert_int_equal(count_lines((char *)r.out, "error:"), 0);
	if (fmt == SPOOL_SEGMENT) /* the aborted transaction's part */
		assert_int_equal(count_lines((char *)r.out, "info:"), 1);
	run_free(&r);

	run_tool(&r, dir, "list", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(count_lines((char *)r.out, "qid="), 3);
	assert_non_null(strstr((char *)r.out,
			       "qid=AAAA0001 time=2023-11-14T22:13:20.123457Z "
			       "client=[192.0.2.1]:1025 helo=client1.example "
			       "from=<odd\\x20sender\\\"@example.net> rcpts=1 size="));
	assert_non_null(strstr((char *)r.out, "qid=BBBB0002 "));
	assert_non_null(strstr((char *)r.out, " rcpts=2 size="));
	run_free(&r);

	for (int i = 0; i < 3; i++)
		check_cat(dir, &t[i]);
	run_tool(&r, dir, "cat", dir, "NOSUCHQID", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.err, "no complete message with qid NOSUCHQID"));
	run_free(&r);

	/* export --maildir */
	char out[512], path[600];
	snprintf(out, sizeof(out), "%s/exported", dir);
	run_tool(&r, dir, "export", dir, "--maildir", out, NULL);
	assert_int_equal(r.status, 0);
	snprintf(path, sizeof(path), "%s/new", out);
	assert_int_equal(t_count_files(path), 3);
	run_free(&r);

	/* export --mbox: From_ lines, >From quoting, LF line ends. */
	snprintf(out, sizeof(out), "%s/mbox", dir);
	run_tool(&r, dir, "export", dir, "--mbox", out, NULL);
	assert_int_equal(r.status, 0);
	run_free(&r);
	uint8_t *mb;
	size_t mlen;
	assert_int_equal(t_read_file(out, &mb, &mlen), 0);
	mb = realloc(mb, mlen + 1);
	mb[mlen] = 0;
	assert_int_equal(count_lines((char *)mb, "From "), 3);
	assert_true(count_lines((char *)mb, ">From ") > 0);
	assert_null(memchr(mb, '\r', mlen) == NULL ? NULL : strstr((char *)mb, "\r\n"));
	assert_non_null(strstr((char *)mb,
			       "From odd_sender\"@example.net Tue Nov 14 22:13:20 2023\n"
			       "Return-Path: <odd sender\"@example.net>\nReceived: from "));
	free(mb);

	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

static void test_tool_segment(void **state)
{
	(void)state;
	tool_on(SPOOL_SEGMENT);
}

static void test_tool_maildir(void **state)
{
	(void)state;
	tool_on(SPOOL_MAILDIR);
}

static void test_tool_damage(void **state)
{
	(void)state;
	char dir[256], rdy[300], name[256], path[700];
	struct t_txn t[3];
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, SPOOL_SEGMENT, t);
	snprintf(rdy, sizeof(rdy), "%s/ready", dir);
	t_first_file(rdy, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", rdy, name);
	uint8_t *seg;
	size_t len;
	assert_int_equal(t_read_file(path, &seg, &len), 0);
	seg[len - 1] ^= 1; /* the last record: C's FINAL */
	assert_int_equal(t_write_file(path, seg, len), 0);
	free(seg);
	run_tool(&r, dir, "verify", dir, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.out, "\n2 messages\n"));
	assert_int_equal(count_lines((char *)r.out, "error: ready/"), 1);
	run_free(&r);
	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

static void test_tool_usage(void **state)
{
	(void)state;
	struct run r;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	run_tool(&r, dir, NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "frobnicate", dir, NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr((char *)r.err, "unknown command 'frobnicate'"));
	run_free(&r);
	run_tool(&r, dir, "verify", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "export", dir, NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "list", dir, "--json", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr((char *)r.err, "--json goes with queue"));
	run_free(&r);
	run_tool(&r, dir, "queue", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr((char *)r.out, "usage: mxring-spool"));
	assert_non_null(strstr((char *)r.out, "\n  queue DIR [--json] "));
	run_free(&r);
	run_tool(&r, dir, "verify", "/nonexistent/spool", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.err, "/nonexistent/spool: No such file or directory"));
	run_free(&r);
	run_tool(&r, dir, "verify", dir, NULL); /* a directory that is no spool */
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.err, "not a spool directory"));
	run_free(&r);
	t_rmdir(dir);
}

/* ---- queue ---- */

#define T_ARRIVAL_US 1700000000123456ull /* t_txn_init's time: Tue Nov 14 22:13:20 2023 UTC */
#define T_HUB	     "hub.example.net[192.0.2.10]:25"
#define T_HEAD	     "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
#define T_INDENT     "                                               " /* 47: under the sender */

/* Where the spool holds a message, and its stored size. */
struct t_loc {
	char qid[QID_LEN + 1];
	char seg[SEGMENT_NAME_LEN + 1];
	uint64_t off, size;
};

/* The location of every message of dir, in reading order; their number. */
static unsigned locate(const char *dir, struct t_loc *loc, unsigned max)
{
	struct spool_reader *r;
	const struct spool_item *it;
	unsigned n = 0;
	assert_int_equal(spool_reader_open(dir, NULL, NULL, &r), 0);
	while (spool_reader_next(r, &it) > 0) {
		assert_true(n < max);
		snprintf(loc[n].qid, sizeof(loc[n].qid), "%s", it->env.qid);
		snprintf(loc[n].seg, sizeof(loc[n].seg), "%s", journal_seg_name(it->file));
		loc[n].off = it->offset;
		loc[n].size = it->trace_len + it->body_size;
		n++;
	}
	spool_reader_close(r);
	return n;
}

static const struct t_loc *loc_of(const struct t_loc *loc, unsigned n, const char *qid)
{
	for (unsigned i = 0; i < n; i++)
		if (strcmp(loc[i].qid, qid) == 0)
			return &loc[i];
	fail_msg("%s not in the spool", qid);
	return NULL;
}

/* One more run of writer 0 that stores t (one FINAL record each): a segment of its own. */
static void add_segment(const char *dir, struct t_txn *t, unsigned n)
{
	struct config cfg;
	struct spool *sp;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	for (unsigned i = 0; i < n; i++) {
		struct msg *m = t_msg(&t[i], MSG_FINAL, 0, 0, t[i].body_len, 64);
		assert_int_equal(spool_write(sp, m), 0);
		t_msg_free(m);
	}
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_close(sp), 0);
}

/* A RESULT of recipient rcpt of message l, at T_ARRIVAL_US + at_s seconds. */
static struct journal_rec t_result(const struct t_loc *l, uint32_t rcpt, uint32_t nrcpt,
				   enum journal_outcome o, uint32_t attempts, uint64_t at_s,
				   uint64_t next_s, const char *dsn, const char *reply,
				   const char *relay)
{
	struct journal_rec r = {.type = JOURNAL_REC_RESULT, .outcome = (uint8_t)o};
	static_assert(sizeof(r.seg) == sizeof(l->seg) && sizeof(r.qid) == sizeof(l->qid), "");
	memcpy(r.seg, l->seg, sizeof(r.seg));
	r.seg_off = l->off;
	memcpy(r.qid, l->qid, sizeof(r.qid));
	r.rcpt = rcpt;
	r.nrcpt = nrcpt;
	r.attempts = attempts;
	r.time_us = T_ARRIVAL_US + at_s * 1000000u;
	r.next_us = next_s ? T_ARRIVAL_US + next_s * 1000000u : 0;
	snprintf(r.dsn, sizeof(r.dsn), "%s", dsn);
	journal_rec_reply(&r, reply, strlen(reply));
	journal_rec_relay(&r, relay, strlen(relay));
	return r;
}

static struct journal_rec t_bounce(const struct t_loc *l, uint32_t rcpt, uint32_t nrcpt,
				   const char *dsn_qid)
{
	struct journal_rec r = {.type = JOURNAL_REC_BOUNCE, .time_us = T_ARRIVAL_US + 500000000u};
	static_assert(sizeof(r.seg) == sizeof(l->seg) && sizeof(r.qid) == sizeof(l->qid), "");
	memcpy(r.seg, l->seg, sizeof(r.seg));
	r.seg_off = l->off;
	memcpy(r.qid, l->qid, sizeof(r.qid));
	r.rcpt = rcpt;
	r.nrcpt = nrcpt;
	snprintf(r.dsn_qid, sizeof(r.dsn_qid), "%s", dsn_qid);
	return r;
}

static struct journal_rec t_segdone(const char *seg)
{
	struct journal_rec r = {.type = JOURNAL_REC_SEGDONE, .time_us = T_ARRIVAL_US + 600000000u};
	snprintf(r.seg, sizeof(r.seg), "%s", seg);
	return r;
}

/* Writes recs as relay worker `writer` would: appended, then one sync. */
static void write_journal(const char *dir, unsigned writer, struct journal_rec *recs, unsigned n)
{
	struct journal *j;
	uint64_t seq;
	assert_int_equal(journal_open(dir, writer, 0, &j), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_null(journal_rec_check(&recs[i]));
		assert_int_equal(journal_append(j, &recs[i], &seq), 0);
	}
	assert_int_equal(journal_sync(j, NULL), 0);
	assert_int_equal(journal_close(j), 0);
}

/* A buffer to build expected output in. */
struct t_buf {
	char s[16384];
	size_t n;
};

__attribute__((format(printf, 2, 3))) static void tb(struct t_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->s + b->n, sizeof(b->s) - b->n, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(b->s) - b->n);
	b->n += (size_t)n;
}

static void test_queue_empty(void **state)
{
	(void)state;
	char dir[256];
	struct config cfg;
	struct spool *sp;
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	assert_int_equal(spool_close(sp), 0);
	run_tool(&r, dir, "queue", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal((char *)r.out, "Mail queue is empty\n");
	assert_string_equal((char *)r.err, "");
	run_free(&r);
	run_tool(&r, dir, "queue", dir, "--json", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal((char *)r.out, "");
	run_free(&r);
	t_rmdir(dir);
}

/* No journal: every stored message is queued, every recipient never tried. */
static void test_queue_no_journal(void **state)
{
	(void)state;
	char dir[256];
	struct t_txn t[3];
	struct t_loc loc[8];
	struct run r;
	struct t_buf want = {.n = 0};
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, SPOOL_SEGMENT, t);
	assert_int_equal(locate(dir, loc, 8), 3);
	const struct t_loc *a = loc_of(loc, 3, "AAAA0001"), *b = loc_of(loc, 3, "BBBB0002");
	const struct t_loc *c = loc_of(loc, 3, "CCCC0003");
	tb(&want, T_HEAD);
	tb(&want, "AAAA0001          %8" PRIu64 " Tue Nov 14 22:13:20 odd sender\"@example.net\n",
	   a->size);
	tb(&want, T_INDENT "rcpt0-1@example.org\n\n");
	tb(&want, "BBBB0002          %8" PRIu64 " Tue Nov 14 22:13:20 sender2@example.net\n",
	   b->size);
	tb(&want, T_INDENT "rcpt0-2@example.org\n" T_INDENT "rcpt1-2@example.org\n\n");
	tb(&want, "CCCC0003          %8" PRIu64 " Tue Nov 14 22:13:20 sender3@example.net\n",
	   c->size);
	tb(&want, T_INDENT "rcpt0-3@example.org\n\n");
	tb(&want, "-- %" PRIu64 " Kbytes in 3 Requests.\n", (a->size + b->size + c->size) / 1024);
	run_tool(&r, dir, "queue", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal((char *)r.out, want.s);
	assert_string_equal((char *)r.err, ""); /* the aborted part is information only */
	run_free(&r);

	want.n = 0;
	tb(&want,
	   "{\"qid\":\"AAAA0001\",\"segment\":\"%s\",\"offset\":%" PRIu64 ",\"size\":%" PRIu64
	   ",\"arrival\":\"2023-11-14T22:13:20.123457Z\",\"sender\":\"odd sender\\\"@example.net\","
	   "\"recipients\":[{\"address\":\"rcpt0-1@example.org\",\"state\":\"pending\","
	   "\"attempts\":0,\"next_attempt\":null,\"dsn\":null,\"reply\":null,\"relay\":null}]}\n",
	   a->seg, a->off, a->size);
	run_tool(&r, dir, "queue", dir, "--json", NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(count_lines((char *)r.out, "{\"qid\":"), 3);
	assert_memory_equal(r.out, want.s, want.n);
	assert_non_null(strstr((char *)r.out, "{\"qid\":\"BBBB0002\","));
	assert_non_null(strstr((char *)r.out, "\"address\":\"rcpt1-2@example.org\""));
	run_free(&r);
	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

/*
 * The spool of make_spool, a second segment (DDDD0005, four recipients), a
 * third (EEEE0006) done; the journal of two relay workers says: A delivered,
 * B's first recipient delivered and its second deferred twice (the second
 * attempt in worker 1's file), C failed (no DSN yet), D's recipients never
 * tried, failed with its DSN stored, expired, never tried.
 */
static void journal_spool(const char *dir, struct t_txn t[3], struct t_loc loc[8])
{
	struct t_txn d[2];
	make_spool(dir, SPOOL_SEGMENT, t);
	t_txn_init(&d[0], "DDDD0005", 200, 5, 4);
	add_segment(dir, &d[0], 1);
	t_txn_init(&d[1], "EEEE0006", 300, 6, 1);
	add_segment(dir, &d[1], 1);
	assert_int_equal(locate(dir, loc, 8), 5);
	const struct t_loc *a = loc_of(loc, 5, "AAAA0001"), *b = loc_of(loc, 5, "BBBB0002");
	const struct t_loc *c = loc_of(loc, 5, "CCCC0003"), *dd = loc_of(loc, 5, "DDDD0005");
	const struct t_loc *e = loc_of(loc, 5, "EEEE0006");
	assert_string_not_equal(dd->seg, b->seg);
	assert_string_not_equal(e->seg, dd->seg);
	struct journal_rec w0[] = {
	    t_result(a, 0, 1, JOURNAL_DELIVERED, 1, 5, 0, "2.0.0", "250 2.0.0 Ok: queued as X1",
		     T_HUB),
	    t_result(b, 0, 2, JOURNAL_DELIVERED, 1, 5, 0, "2.0.0", "250 2.0.0 Ok", T_HUB),
	    t_result(b, 1, 2, JOURNAL_DEFERRED, 1, 5, 65, "4.7.1", "451 4.7.1 Greylisted, first",
		     T_HUB),
	    t_result(c, 0, 1, JOURNAL_FAILED, 1, 5, 0, "5.1.1",
		     "550 5.1.1 <rcpt0-3@example.org>: no such user", T_HUB),
	    t_result(dd, 1, 4, JOURNAL_FAILED, 1, 5, 0, "5.7.1", "554 5.7.1 refused", T_HUB),
	    t_bounce(dd, 1, 4, "DSNQID00000001"),
	    t_result(dd, 2, 4, JOURNAL_EXPIRED, 3, 400, 0, "4.4.7",
		     "451 4.4.1 connect to hub.example.net: Connection refused", ""),
	    t_result(e, 0, 1, JOURNAL_DEFERRED, 1, 5, 65, "4.4.1", "421 4.4.1 later", T_HUB),
	    t_segdone(e->seg),
	};
	write_journal(dir, 0, w0, sizeof(w0) / sizeof(w0[0]));
	struct journal_rec w1[] = {
	    t_result(b, 1, 2, JOURNAL_DEFERRED, 2, 80, 200, "4.7.1",
		     "451 4.7.1 Greylisted, try again later", T_HUB),
	};
	write_journal(dir, 1, w1, 1);
	for (int i = 0; i < 2; i++)
		t_txn_free(&d[i]);
}

static void test_queue_journal(void **state)
{
	(void)state;
	char dir[256];
	struct t_txn t[3];
	struct t_loc loc[8];
	struct run r;
	struct t_buf want = {.n = 0};
	t_mkdtemp(dir, sizeof(dir));
	journal_spool(dir, t, loc);
	const struct t_loc *b = loc_of(loc, 5, "BBBB0002"), *c = loc_of(loc, 5, "CCCC0003");
	const struct t_loc *d = loc_of(loc, 5, "DDDD0005");

	tb(&want, T_HEAD);
	tb(&want, "BBBB0002          %8" PRIu64 " Tue Nov 14 22:13:20 sender2@example.net\n",
	   b->size);
	tb(&want, "(deferred after 2 attempts, next attempt Tue Nov 14 22:16:40: 451 4.7.1 "
		  "Greylisted, try again later (relay " T_HUB "))\n");
	tb(&want, T_INDENT "rcpt1-2@example.org\n\n");
	tb(&want, "CCCC0003          %8" PRIu64 " Tue Nov 14 22:13:20 sender3@example.net\n",
	   c->size);
	tb(&want, "(failed after 1 attempt, DSN not yet stored: 550 5.1.1 <rcpt0-3@example.org>: "
		  "no such user (relay " T_HUB "))\n");
	tb(&want, T_INDENT "rcpt0-3@example.org\n\n");
	tb(&want, "DDDD0005          %8" PRIu64 " Tue Nov 14 22:13:20 sender5@example.net\n",
	   d->size);
	tb(&want, T_INDENT "rcpt0-5@example.org\n");
	tb(&want, "(expired after 3 attempts, DSN not yet stored: 451 4.4.1 connect to "
		  "hub.example.net: Connection refused)\n");
	tb(&want, T_INDENT "rcpt2-5@example.org\n");
	tb(&want, "%63s(not yet tried)\n", "");
	tb(&want, T_INDENT "rcpt3-5@example.org\n\n");
	tb(&want, "-- %" PRIu64 " Kbytes in 3 Requests.\n", (b->size + c->size + d->size) / 1024);
	run_tool(&r, dir, "queue", dir, NULL);
	assert_string_equal((char *)r.err, "");
	assert_int_equal(r.status, 0);
	assert_string_equal((char *)r.out, want.s);
	run_free(&r);

	want.n = 0;
	tb(&want,
	   "{\"qid\":\"BBBB0002\",\"segment\":\"%s\",\"offset\":%" PRIu64 ",\"size\":%" PRIu64
	   ",\"arrival\":\"2023-11-14T22:13:20.123458Z\",\"sender\":\"sender2@example.net\","
	   "\"recipients\":[{\"address\":\"rcpt1-2@example.org\",\"state\":\"deferred\","
	   "\"attempts\":2,\"next_attempt\":\"2023-11-14T22:16:40.123456Z\",\"dsn\":\"4.7.1\","
	   "\"reply\":\"451 4.7.1 Greylisted, try again later\",\"relay\":\"" T_HUB "\"}]}\n",
	   b->seg, b->off, b->size);
	tb(&want,
	   "{\"qid\":\"CCCC0003\",\"segment\":\"%s\",\"offset\":%" PRIu64 ",\"size\":%" PRIu64
	   ",\"arrival\":\"2023-11-14T22:13:20.123459Z\",\"sender\":\"sender3@example.net\","
	   "\"recipients\":[{\"address\":\"rcpt0-3@example.org\",\"state\":\"failed\","
	   "\"attempts\":1,\"next_attempt\":null,\"dsn\":\"5.1.1\",\"reply\":\"550 5.1.1 "
	   "<rcpt0-3@example.org>: no such user\",\"relay\":\"" T_HUB "\"}]}\n",
	   c->seg, c->off, c->size);
	tb(&want,
	   "{\"qid\":\"DDDD0005\",\"segment\":\"%s\",\"offset\":%" PRIu64 ",\"size\":%" PRIu64
	   ",\"arrival\":\"2023-11-14T22:13:20.123461Z\",\"sender\":\"sender5@example.net\","
	   "\"recipients\":[{\"address\":\"rcpt0-5@example.org\",\"state\":\"pending\","
	   "\"attempts\":0,\"next_attempt\":null,\"dsn\":null,\"reply\":null,\"relay\":null},"
	   "{\"address\":\"rcpt2-5@example.org\",\"state\":\"expired\",\"attempts\":3,"
	   "\"next_attempt\":null,\"dsn\":\"4.4.7\",\"reply\":\"451 4.4.1 connect to "
	   "hub.example.net: Connection refused\",\"relay\":\"\"},"
	   "{\"address\":\"rcpt3-5@example.org\",\"state\":\"pending\",\"attempts\":0,"
	   "\"next_attempt\":null,\"dsn\":null,\"reply\":null,\"relay\":null}]}\n",
	   d->seg, d->off, d->size);
	run_tool(&r, dir, "queue", dir, "--json", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal((char *)r.out, want.s);
	run_free(&r);
	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

static void test_queue_maildir(void **state)
{
	(void)state;
	char dir[256];
	struct t_txn t[3];
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, SPOOL_MAILDIR, t);
	run_tool(&r, dir, "queue", dir, NULL);
	assert_int_equal(r.status, 1);
	assert_string_equal((char *)r.out, "");
	assert_non_null(strstr((char *)r.err, "not supported: the relay reads the segment spool"));
	run_free(&r);
	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

/* A damaged journal file: reported, its records from the damage on unread, the queue listed. */
static void test_queue_corrupt_journal(void **state)
{
	(void)state;
	char dir[256], jdir[300], name[256], path[600];
	struct t_txn t[3];
	struct t_loc loc[8];
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, SPOOL_SEGMENT, t);
	assert_int_equal(locate(dir, loc, 8), 3);
	const struct t_loc *a = loc_of(loc, 3, "AAAA0001"), *b = loc_of(loc, 3, "BBBB0002");
	const struct t_loc *c = loc_of(loc, 3, "CCCC0003");
	struct journal_rec w0[] = {
	    t_result(a, 0, 1, JOURNAL_DELIVERED, 1, 5, 0, "2.0.0", "250 ok", T_HUB),
	    t_result(b, 0, 2, JOURNAL_DELIVERED, 1, 5, 0, "2.0.0", "250 ok", T_HUB),
	    t_result(b, 1, 2, JOURNAL_DELIVERED, 1, 5, 0, "2.0.0", "250 ok", T_HUB),
	};
	write_journal(dir, 0, w0, 3);
	struct journal_rec w1[] = {
	    t_result(c, 0, 1, JOURNAL_DELIVERED, 1, 5, 0, "2.0.0", "250 ok", T_HUB),
	};
	write_journal(dir, 1, w1, 1);
	snprintf(jdir, sizeof(jdir), "%s/journal", dir);
	t_first_file(jdir, name, sizeof(name)); /* j-w00-...: worker 0's file */
	assert_int_equal(strncmp(name, "j-w00-", 6), 0);
	snprintf(path, sizeof(path), "%s/%s", jdir, name);
	uint8_t *buf;
	size_t len;
	assert_int_equal(t_read_file(path, &buf, &len), 0);
	buf[JOURNAL_FILE_REC_LEN + 40] ^= 0x20; /* A's RESULT: the records after it go too */
	assert_int_equal(t_write_file(path, buf, len), 0);
	free(buf);

	run_tool(&r, dir, "queue", dir, NULL);
	assert_int_equal(r.status, 1);
	char want[400];
	snprintf(want, sizeof(want), "mxring-spool: error: journal/%s@%u: ", name,
		 JOURNAL_FILE_REC_LEN);
	assert_int_equal(count_lines((char *)r.err, want), 1);
	assert_int_equal(count_lines((char *)r.err, "mxring-spool: error:"), 1);
	assert_int_equal(count_lines((char *)r.out, "AAAA0001 "), 1);
	assert_int_equal(count_lines((char *)r.out, "BBBB0002 "), 1);
	assert_int_equal(count_lines((char *)r.out, "CCCC0003 "), 0);
	assert_int_equal(count_lines((char *)r.out, T_INDENT "rcpt"), 3);
	snprintf(want, sizeof(want), "\n-- %" PRIu64 " Kbytes in 2 Requests.\n",
		 (a->size + b->size) / 1024);
	assert_non_null(strstr((char *)r.out, want));
	run_free(&r);
	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test_tool PATH-TO-mxring-spool\n");
		return 77;
	}
	tool = argv[1];
	log_enable(0);
	setenv("TZ", "UTC0", 1); /* queue shows local times, as mailq */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tool_segment),	  cmocka_unit_test(test_tool_maildir),
	    cmocka_unit_test(test_tool_damage),		  cmocka_unit_test(test_tool_usage),
	    cmocka_unit_test(test_queue_empty),		  cmocka_unit_test(test_queue_no_journal),
	    cmocka_unit_test(test_queue_journal),	  cmocka_unit_test(test_queue_maildir),
	    cmocka_unit_test(test_queue_corrupt_journal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
