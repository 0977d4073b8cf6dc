/*
 * mxring-spool - look into, check and export an mxring spool.
 *
 *   mxring-spool verify DIR [--against ACKLOG]... [--exact]
 *   mxring-spool list DIR
 *   mxring-spool cat DIR QID [--body]
 *   mxring-spool export DIR --maildir OUTDIR
 *   mxring-spool export DIR --mbox FILE          (FILE "-" is standard output)
 *   mxring-spool queue DIR [--json]
 *
 * DIR is a spool_dir (segments in active/ and ready/, and/or maildir/); the
 * formats are described in core/spool.h. The tool only reads the spool; it
 * can run beside a live mxring, whose active segments may then end in a
 * record still being written (reported as an incomplete record).
 *
 * verify prints one line per problem ("error: FILE@OFFSET: ..." or
 * "info: ..."), then "N messages" (complete messages: a FINAL whose parts
 * are all there and add up) and a line of counters. Orphan parts (no FINAL:
 * an aborted or failed transaction, or one cut by a crash) are information,
 * not errors.
 *
 * verify --against ACKLOG (repeatable: several runs in one pass over the
 * spool) also proves that every message mxring-bench saw
 * acknowledged (its --ack-log: a "# mxring-bench ack-log run=RUNID ..."
 * line, then "RUNID-N QUEUEID SIZE" per accepted message) is stored intact:
 * the queue id is in the spool and named by one acknowledgement only, the
 * stored body is SIZE bytes, begins with "X-Bench-Sum: <8 hex>" and
 * "X-Bench-Seq: RUNID-N" (the sequence id acknowledged for that queue id),
 * and the CRC-32 (zlib's, bench/crc32.h) of everything after the
 * X-Bench-Sum line equals that sum. The first ACK_SHOWN problems are
 * printed in full ("error: ack ..."), then one summary line. Messages of the
 * same run stored but never acknowledged are counted (a server may store a
 * message whose 250 was lost); --exact makes them errors.
 *
 * queue lists the relay's queue as Postfix's mailq does (its layout for long
 * queue ids): every stored message with a recipient that still needs
 * something, which is the spool (spool_reader, streamed) less what the
 * delivery journal (core/journal.h: journal_index_load, then a second replay
 * for the deciding records' replies, which the index does not keep) says is
 * final. A recipient is listed when it was never tried, is deferred (with
 * its attempts, next attempt, last reply and relay), or failed or expired
 * with its DSN not yet stored (a message from <> is owed none); delivered
 * recipients, messages with nothing left, and done segments are not. Per
 * message a line "QID SIZE ARRIVAL SENDER" (local time, sender <> as
 * MAILER-DAEMON), then per recipient listed its reason "(...)", where it
 * changes from the recipient before, and its address; a blank line between
 * messages; at the end "-- N Kbytes in M Requests." or "Mail queue is
 * empty". --json: one object per message and line instead, times RFC 3339
 * UTC. Read-only: journal_open (which starts a file) is never called; a
 * compaction by a running relay between the two passes shows as "reply not
 * found". A maildir spool has no journal and no queue.
 *
 * Exit status: 0 success (verify: every record intact), 1 a problem (verify:
 * a damaged record or message; queue: a damaged record of the spool or the
 * journal, listed as far as it could be read; other commands: a failure or
 * a message not found), 2 usage.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crc32.h"
#include "journal.h"
#include "log.h"
#include "spool.h"
#include "spool_reader.h"

#define PROG "mxring-spool"

static const char usage_text[] =
    "usage: " PROG " COMMAND DIR [ARGS]\n"
    "\n"
    "  verify DIR                    check every record and message of the spool\n"
    "    [--against ACKLOG]...       and that every message mxring-bench's --ack-log\n"
    "    [--exact]                   names is stored intact (--exact: and no other\n"
    "                                message of that run)\n"
    "  list DIR                      one line per stored message\n"
    "  cat DIR QID [--body]          the stored message (trace header and body) on\n"
    "                                stdout; --body: the body only, as the client sent it\n"
    "  export DIR --maildir OUTDIR   every message into OUTDIR/{tmp,new,cur}\n"
    "  export DIR --mbox FILE        every message into an mboxrd file (\"-\": stdout)\n"
    "  queue DIR [--json]            the relay's queue, as mailq lists it: each stored\n"
    "                                message with a recipient never tried, deferred\n"
    "                                (attempts, next attempt, last reply and relay), or\n"
    "                                failed with its DSN not yet stored; --json: one JSON\n"
    "                                object per message per line\n"
    "\n"
    "DIR is mxring's spool_dir. Exit status: 0 success, 1 problems found or a\n"
    "failure, 2 usage error.\n";

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, PROG ": ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	va_end(ap);
	return 2;
}

/* ---- problems ---- */

struct report {
	bool verify; /* verify: every problem on stdout; else errors on stderr */
};

static void on_problem(void *ctx, const struct spool_problem *p)
{
	const struct report *rep = ctx;
	FILE *f = rep->verify ? stdout : stderr;
	if (!rep->verify && !p->error)
		return;
	fprintf(f, "%s%s: %s@%" PRIu64 ": %s\n", rep->verify ? "" : PROG ": ",
		p->error ? "error" : "info", p->file, p->offset, p->text);
}

static int open_reader(const char *dir, struct report *rep, struct spool_reader **r)
{
	int e = spool_reader_open(dir, on_problem, rep, r);
	if (e == -EMEDIUMTYPE)
		fprintf(stderr,
			PROG ": %s: not a spool directory (no active/, ready/ or maildir/)\n", dir);
	else if (e < 0)
		fprintf(stderr, PROG ": %s: %s\n", dir, strerror(-e));
	return e;
}

static int next_item(struct spool_reader *r, const char *dir, const struct spool_item **it)
{
	int e = spool_reader_next(r, it);
	if (e < 0)
		fprintf(stderr, PROG ": %s: reading stopped: %s\n", dir, strerror(-e));
	return e;
}

/* ---- sinks ---- */

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int sink_fd(void *ctx, const uint8_t *p, size_t len)
{
	return write_all(*(int *)ctx, p, len);
}

/* mboxrd: CRLF -> LF, and ">*From " at a line start gets one more '>'. */
struct mbox_out {
	FILE *f;
	bool cr;     /* a CR waits to see whether LF follows */
	bool bol;    /* at the start of a line */
	uint64_t gt; /* '>' seen at this line start */
	unsigned ml; /* bytes of "From " matched after them */
	int last;    /* last byte written, -1 none */
};

static void mb_out(struct mbox_out *m, int c)
{
	putc(c, m->f);
	m->last = c;
}

static void mb_prefix(struct mbox_out *m)
{
	for (uint64_t i = 0; i < m->gt; i++)
		mb_out(m, '>');
	for (unsigned i = 0; i < m->ml; i++)
		mb_out(m, "From "[i]);
	m->gt = 0;
	m->ml = 0;
}

static void mb_quote(struct mbox_out *m, int c)
{
	if (m->bol) {
		if (m->ml == 0 && c == '>') {
			m->gt++;
			return;
		}
		if (c == "From "[m->ml]) {
			if (++m->ml == 5) {
				mb_out(m, '>');
				mb_prefix(m);
				m->bol = false;
			}
			return;
		}
		mb_prefix(m);
		m->bol = false;
	}
	mb_out(m, c);
	if (c == '\n')
		m->bol = true;
}

static void mb_byte(struct mbox_out *m, int c)
{
	if (m->cr) {
		m->cr = false;
		if (c == '\n') {
			mb_quote(m, '\n');
			return;
		}
		mb_quote(m, '\r');
	}
	if (c == '\r') {
		m->cr = true;
		return;
	}
	mb_quote(m, c);
}

static int sink_mbox(void *ctx, const uint8_t *p, size_t len)
{
	struct mbox_out *m = ctx;
	for (size_t i = 0; i < len; i++)
		mb_byte(m, p[i]);
	return ferror(m->f) ? -EIO : 0;
}

/* ---- commands ---- */

static void fmt_time(char *dst, size_t cap, uint64_t us)
{
	time_t t = (time_t)(us / 1000000u);
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	snprintf(dst, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRIu64 "Z", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us % 1000000u);
}

/* ---- verify --against ACKLOG ... ---- */

#define ACK_SHOWN     20	 /* problems printed in full */
#define ACK_LOGS_MAX  64u	 /* --against options in one call */
#define ACK_MAX	      (1u << 27) /* acknowledgements in all logs together */
#define ACK_LINE_MAX  256u	 /* longer lines are not mxring-bench's */
#define ACK_RUN_LEN   16u	 /* hex digits of a run id */
#define ACK_SEQ_MAX   (ACK_RUN_LEN + 1 + 20)
#define ACK_HEAD_KEEP 128u /* body bytes kept to read the two X-Bench lines */
#define ACK_SUM_PFX   "X-Bench-Sum: "
#define ACK_SEQ_PFX   "X-Bench-Seq: "
#define ACK_SUM_LINE  (sizeof(ACK_SUM_PFX) - 1 + 8 + 2) /* the CRC covers what follows */

static_assert(ACK_SUM_LINE + sizeof(ACK_SEQ_PFX) - 1 + ACK_SEQ_MAX + 2 <= ACK_HEAD_KEEP,
	      "both X-Bench lines fit the kept head");
static_assert(ACK_LOGS_MAX <= 256, "a log index fits struct ack's uint8_t");

enum ack_state { ACK_UNSEEN, ACK_INTACT, ACK_DAMAGED, ACK_TWICE };

struct ack {
	char qid[QID_LEN + 1]; /* cut to QID_LEN: longer ones are no mxring qid */
	bool qid_long;	       /* the log's queue id was longer than QID_LEN */
	uint8_t state;	       /* enum ack_state; ACK_TWICE: its qid is an earlier line's */
	uint8_t log;	       /* index into acks.log */
	uint32_t line;	       /* in its ack log */
	uint64_t seq;	       /* N of RUNID-N */
	uint64_t size;	       /* bytes the client sent, as stored */
};

/* One ack log: one mxring-bench run. */
struct ack_log {
	const char *path; /* borrowed from argv */
	char run[ACK_RUN_LEN + 1];
	uint32_t n;
	uint64_t intact, damaged, missing, twice, unacked;
};

struct acks {
	struct ack_log log[ACK_LOGS_MAX];
	unsigned nlogs;
	struct ack *a; /* owned: n entries, log by log in line order */
	uint32_t n, cap;
	uint32_t *slot; /* owned: open-addressing index by qid, nslot (a power of two) */
	uint32_t nslot;
	uint64_t problems, shown;
};

__attribute__((format(printf, 2, 3))) static void ack_problem(struct acks *k, const char *fmt, ...)
{
	k->problems++;
	if (k->shown >= ACK_SHOWN)
		return;
	k->shown++;
	va_list ap;
	va_start(ap, fmt);
	fputs("error: ack ", stdout);
	vprintf(fmt, ap);
	putchar('\n');
	va_end(ap);
}

static uint32_t ack_hash(const char *qid)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *qid; qid++)
		h = (h ^ (uint8_t)*qid) * 16777619u;
	return h;
}

/* The entry acknowledged for qid, or NULL. */
static struct ack *ack_find(const struct acks *k, const char *qid)
{
	for (uint32_t i = ack_hash(qid) & (k->nslot - 1), probe = 0; probe < k->nslot;
	     i = (i + 1) & (k->nslot - 1), probe++) {
		if (k->slot[i] == UINT32_MAX)
			return NULL;
		struct ack *a = &k->a[k->slot[i]];
		if (!a->qid_long && strcmp(a->qid, qid) == 0)
			return a;
	}
	return NULL;
}

/* "RUNID-N QUEUEID SIZE" of run into *a; false when the line is not one. */
static bool ack_parse(const char *run, char *line, struct ack *a)
{
	char *save, *seq = strtok_r(line, " ", &save), *qid = strtok_r(NULL, " ", &save);
	char *size = strtok_r(NULL, " ", &save), *end;
	if (!seq || !qid || !size || strtok_r(NULL, " ", &save))
		return false;
	if (strncmp(seq, run, ACK_RUN_LEN) != 0 || seq[ACK_RUN_LEN] != '-')
		return false;
	const char *num = seq + ACK_RUN_LEN + 1;
	errno = 0;
	a->seq = strtoull(num, &end, 10);
	if (errno || end == num || *end || *num < '0' || *num > '9')
		return false;
	a->size = strtoull(size, &end, 10);
	if (errno || end == size || *end || *size < '0' || *size > '9')
		return false;
	size_t qlen = strlen(qid);
	a->qid_long = qlen > QID_LEN;
	memcpy(a->qid, qid, a->qid_long ? QID_LEN : qlen);
	a->qid[a->qid_long ? QID_LEN : qlen] = 0;
	return true;
}

/* Reads a log's first line into l->run; 0, or 2 with the reason on stderr. */
static int ack_head(struct ack_log *l, const char *line)
{
	static const char head[] = "# mxring-bench ack-log run=";
	size_t n = sizeof(head) - 1;
	bool ok = strncmp(line, head, n) == 0;
	for (size_t i = 0; ok && i < ACK_RUN_LEN; i++)
		ok = line[n + i] && strchr("0123456789abcdef", line[n + i]);
	ok = ok && (line[n + ACK_RUN_LEN] == 0 || line[n + ACK_RUN_LEN] == ' ');
	if (!ok) {
		fprintf(stderr,
			PROG ": %s: not an mxring-bench ack log (no '%sRUNID' first line)\n",
			l->path, head);
		return 2;
	}
	memcpy(l->run, line + n, ACK_RUN_LEN);
	l->run[ACK_RUN_LEN] = 0;
	return 0;
}

static int ack_push(struct acks *k, const struct ack *a, const char *path)
{
	if (k->n == k->cap) {
		uint32_t cap = k->cap ? 2 * k->cap : 4096;
		struct ack *na = cap <= ACK_MAX ? realloc(k->a, (size_t)cap * sizeof(*na)) : NULL;
		if (!na) {
			fprintf(stderr,
				PROG ": %s: more than %u acknowledgements or out of memory\n", path,
				k->cap);
			return 1;
		}
		k->a = na;
		k->cap = cap;
	}
	k->a[k->n++] = *a;
	return 0;
}

/* Reads ack log li. 0, 1 (cannot read it) or 2 (not an ack log). */
static int ack_read(struct acks *k, unsigned li)
{
	struct ack_log *l = &k->log[li];
	FILE *f = fopen(l->path, "re");
	if (!f) {
		fprintf(stderr, PROG ": %s: %s\n", l->path, strerror(errno));
		return 1;
	}
	char line[ACK_LINE_MAX + 2];
	uint32_t lineno = 0;
	int rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		lineno++;
		size_t len = strlen(line);
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = 0;
		else if (!feof(f))
			len = ACK_LINE_MAX + 1; /* too long */
		if (lineno == 1) {
			rc = ack_head(l, line);
			continue;
		}
		struct ack a = {.line = lineno, .log = (uint8_t)li};
		if (len > ACK_LINE_MAX || !ack_parse(l->run, line, &a)) {
			fprintf(stderr,
				PROG ": %s:%" PRIu32 ": not 'RUNID-N QUEUEID SIZE' of run %s\n",
				l->path, lineno, l->run);
			rc = 2;
		} else if ((rc = ack_push(k, &a, l->path)) == 0) {
			l->n++;
		}
	}
	if (rc == 0 && ferror(f)) {
		fprintf(stderr, PROG ": %s: %s\n", l->path, strerror(errno));
		rc = 1;
	}
	if (rc == 0 && lineno == 0) {
		fprintf(stderr, PROG ": %s: empty, not an ack log\n", l->path);
		rc = 2;
	}
	fclose(f);
	return rc;
}

static int cmp_seq(const void *x, const void *y)
{
	const struct ack *a = *(const struct ack *const *)x, *b = *(const struct ack *const *)y;
	if (a->log != b->log)
		return a->log < b->log ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Reports the same RUNID-N acknowledged twice; 0, or 1 when out of memory. */
static int ack_twice_seq(struct acks *k)
{
	struct ack **by_seq = malloc(((size_t)k->n + 1) * sizeof(*by_seq));
	if (!by_seq) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	for (uint32_t j = 0; j < k->n; j++)
		by_seq[j] = &k->a[j];
	qsort(by_seq, k->n, sizeof(*by_seq), cmp_seq);
	for (uint32_t j = 1; j < k->n; j++) {
		const struct ack *a = by_seq[j - 1], *b = by_seq[j];
		if (a->log != b->log || a->seq != b->seq)
			continue;
		struct ack_log *l = &k->log[b->log];
		l->twice++;
		ack_problem(
		    k, "%s-%" PRIu64 " acknowledged twice (%s lines %" PRIu32 " and %" PRIu32 ")",
		    l->run, b->seq, l->path, a->line, b->line);
	}
	free(by_seq);
	return 0;
}

/*
 * Indexes k->a by queue id and reports what is acknowledged twice (a
 * queue id, in one log or two, or a sequence id). 0, or 1 when out of memory.
 */
static int ack_index(struct acks *k)
{
	k->nslot = 16;
	while (k->nslot < 2 * (uint64_t)k->n)
		k->nslot *= 2;
	k->slot = malloc((size_t)k->nslot * sizeof(*k->slot));
	if (!k->slot) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	memset(k->slot, 0xff, (size_t)k->nslot * sizeof(*k->slot));
	for (uint32_t j = 0; j < k->n; j++) {
		struct ack *a = &k->a[j], *old = a->qid_long ? NULL : ack_find(k, a->qid);
		if (old) {
			struct ack_log *l = &k->log[a->log], *ol = &k->log[old->log];
			a->state = ACK_TWICE;
			l->twice++;
			ack_problem(k,
				    "%s acknowledged twice (%s-%" PRIu64 " at %s:%" PRIu32
				    " and %s-%" PRIu64 " at %s:%" PRIu32 ")",
				    a->qid, ol->run, old->seq, ol->path, old->line, l->run, a->seq,
				    l->path, a->line);
			continue;
		}
		uint32_t i = ack_hash(a->qid) & (k->nslot - 1);
		while (k->slot[i] != UINT32_MAX)
			i = (i + 1) & (k->nslot - 1);
		k->slot[i] = j;
	}
	return ack_twice_seq(k);
}

/* What a sink saw of a stored body: its first bytes, its length, its CRC. */
struct body_check {
	uint8_t head[ACK_HEAD_KEEP];
	size_t head_len;
	uint64_t len;
	uint32_t crc;	/* CRC-32 of the bytes from ACK_SUM_LINE on */
	bool head_only; /* stop once the head is kept (no CRC) */
};

static int sink_check(void *ctx, const uint8_t *p, size_t n)
{
	struct body_check *b = ctx;
	if (b->head_len < sizeof(b->head)) {
		size_t k = sizeof(b->head) - b->head_len < n ? sizeof(b->head) - b->head_len : n;
		memcpy(b->head + b->head_len, p, k);
		b->head_len += k;
	}
	if (!b->head_only && b->len + n > ACK_SUM_LINE) {
		size_t skip = b->len >= ACK_SUM_LINE ? 0 : (size_t)(ACK_SUM_LINE - b->len);
		b->crc = crc32_update(b->crc, p + skip, n - skip);
	}
	b->len += n;
	return b->head_only && b->head_len == sizeof(b->head) ? 1 : 0;
}

/*
 * The X-Bench-Sum value and the X-Bench-Seq id ("RUNID-N", NUL-terminated
 * in seq) at the start of a kept head. 0, -1 no X-Bench-Sum line, -2 no
 * X-Bench-Seq line after it.
 */
static int bench_lines(const struct body_check *b, uint32_t *sum, char *seq)
{
	const char *h = (const char *)b->head;
	size_t sp = sizeof(ACK_SUM_PFX) - 1, qp = sizeof(ACK_SEQ_PFX) - 1;
	if (b->head_len < ACK_SUM_LINE || memcmp(h, ACK_SUM_PFX, sp) != 0 ||
	    memcmp(h + ACK_SUM_LINE - 2, "\r\n", 2) != 0)
		return -1;
	*sum = 0;
	for (size_t i = sp; i < sp + 8; i++) {
		const char *d = strchr("0123456789abcdef", h[i] | 0x20);
		if (!d || !h[i])
			return -1;
		*sum = *sum << 4 | (uint32_t)(d - "0123456789abcdef");
	}
	const char *s = h + ACK_SUM_LINE, *end = h + b->head_len;
	if (end - s < (ptrdiff_t)qp || memcmp(s, ACK_SEQ_PFX, qp) != 0)
		return -2;
	s += qp;
	size_t n = 0;
	while (s + n + 1 < end && n < ACK_SEQ_MAX && !(s[n] == '\r' && s[n + 1] == '\n'))
		n++;
	if (s + n + 1 >= end || s[n] != '\r')
		return -2;
	for (size_t i = 0; i < n; i++)
		seq[i] = s[i] >= 0x21 && s[i] < 0x7f ? s[i] : '?';
	seq[n] = 0;
	return 0;
}

/* Checks the message the reader just yielded against its acknowledgement a. */
static void ack_check(struct acks *k, struct spool_reader *r, struct ack *a)
{
	struct ack_log *l = &k->log[a->log];
	char want[ACK_SEQ_MAX + 1], got[ACK_SEQ_MAX + 1];
	snprintf(want, sizeof(want), "%s-%" PRIu64, l->run, a->seq);
	if (a->state != ACK_UNSEEN) {
		ack_problem(k, "%s (%s): stored twice", a->qid, want);
		return;
	}
	struct body_check b = {0};
	uint32_t sum;
	int e = spool_reader_read(r, SPOOL_READ_BODY, sink_check, &b);
	int h = e < 0 ? 0 : bench_lines(&b, &sum, got);
	if (e < 0)
		ack_problem(k, "%s (%s): reading the body failed: %s", a->qid, want, strerror(-e));
	else if (h == -1)
		ack_problem(k, "%s (%s): the body does not begin with X-Bench-Sum", a->qid, want);
	else if (h == -2 || strcmp(got, want) != 0)
		ack_problem(k, "%s: acknowledged as %s but stores %s", a->qid, want,
			    h == -2 ? "no X-Bench-Seq line" : got);
	else if (b.len != a->size)
		ack_problem(k, "%s (%s): %" PRIu64 " bytes stored, %" PRIu64 " sent", a->qid, want,
			    b.len, a->size);
	else if (b.crc != sum)
		ack_problem(k, "%s (%s): checksum %08" PRIx32 ", X-Bench-Sum says %08" PRIx32,
			    a->qid, want, b.crc, sum);
	else {
		a->state = ACK_INTACT;
		l->intact++;
		return;
	}
	a->state = ACK_DAMAGED;
	l->damaged++;
}

/* A stored message no acknowledgement names: counts it when it is of a run checked. */
static void ack_unnamed(struct acks *k, struct spool_reader *r, const struct spool_item *it,
			bool exact)
{
	struct body_check b = {.head_only = true};
	uint32_t sum;
	char got[ACK_SEQ_MAX + 1];
	if (spool_reader_read(r, SPOOL_READ_BODY, sink_check, &b) < 0 ||
	    bench_lines(&b, &sum, got) != 0 || got[ACK_RUN_LEN] != '-')
		return;
	for (unsigned li = 0; li < k->nlogs; li++) {
		if (strncmp(got, k->log[li].run, ACK_RUN_LEN) != 0)
			continue;
		k->log[li].unacked++;
		if (exact)
			ack_problem(k, "%s stores %s, which was never acknowledged", it->env.qid,
				    got);
		return;
	}
}

/* Reports what was never found, then a summary line per log; 1 if any problem. */
static int ack_report(struct acks *k)
{
	uint64_t n = 0;
	for (uint32_t j = 0; j < k->n; j++) {
		struct ack *a = &k->a[j];
		struct ack_log *l = &k->log[a->log];
		if (a->state != ACK_UNSEEN)
			continue;
		l->missing++;
		ack_problem(k, "%s%s (%s-%" PRIu64 "): acknowledged but not in the spool", a->qid,
			    a->qid_long ? "..." : "", l->run, a->seq);
	}
	if (k->problems > k->shown)
		printf("error: ack ... and %" PRIu64 " more\n", k->problems - k->shown);
	for (unsigned li = 0; li < k->nlogs; li++) {
		const struct ack_log *l = &k->log[li];
		printf(
		    "against=%s run=%s acknowledged=%" PRIu32 " intact=%" PRIu64 " damaged=%" PRIu64
		    " missing=%" PRIu64 " twice=%" PRIu64 " unacknowledged=%" PRIu64 "\n",
		    l->path, l->run, l->n, l->intact, l->damaged, l->missing, l->twice, l->unacked);
		n += l->n;
	}
	if (k->problems == 0)
		printf("all %" PRIu64 " acknowledged messages stored intact\n", n);
	else
		printf("%" PRIu64 " problems with acknowledged messages\n", k->problems);
	return k->problems ? 1 : 0;
}

/* Reads and indexes every log; 0, 1 (a failure) or 2 (not an ack log). */
static int ack_load(struct acks *k)
{
	for (unsigned li = 0; li < k->nlogs; li++) {
		int rc = ack_read(k, li);
		if (rc != 0)
			return rc;
		for (unsigned lj = 0; lj < li; lj++)
			if (strcmp(k->log[lj].run, k->log[li].run) == 0) {
				fprintf(stderr, PROG ": %s and %s: the same run %s\n",
					k->log[lj].path, k->log[li].path, k->log[li].run);
				return 2;
			}
	}
	return ack_index(k);
}

static void ack_free(struct acks *k)
{
	free(k->a);
	free(k->slot);
}

static int cmd_verify(const char *dir, struct acks *k, bool exact)
{
	if (k->nlogs) {
		int rc = ack_load(k);
		if (rc != 0)
			return rc;
	}
	struct report rep = {.verify = true};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	const struct spool_item *it;
	int e;
	while ((e = next_item(r, dir, &it)) > 0) {
		if (!k->nlogs)
			continue;
		struct ack *a = ack_find(k, it->env.qid);
		if (a)
			ack_check(k, r, a);
		else
			ack_unnamed(k, r, it, exact);
	}
	struct spool_reader_counts c;
	spool_reader_counts(r, &c);
	spool_reader_close(r);
	printf("%" PRIu64 " messages\n", c.messages);
	printf("files=%" PRIu64 " records=%" PRIu64 " orphan_parts=%" PRIu64 " errors=%" PRIu64
	       "\n",
	       c.files, c.records, c.orphans, c.errors);
	int bad = e < 0 || c.errors > 0;
	if (k->nlogs)
		bad |= ack_report(k);
	fflush(stdout);
	return bad ? 1 : 0;
}

static int cmd_list(const char *dir)
{
	struct report rep = {.verify = false};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	const struct spool_item *it;
	int e;
	while ((e = next_item(r, dir, &it)) > 0) {
		const struct envelope *env = &it->env;
		char when[96], qid[4 * QID_LEN + 8], addr[4 * CLIENT_ADDR_MAX + 8];
		char helo[4 * HELO_MAX + 8], from[4 * PATH_MAX_OCTETS + 8];
		fmt_time(when, sizeof(when), env->time_us);
		log_escape(qid, sizeof(qid), env->qid, strlen(env->qid), QID_LEN);
		log_escape(addr, sizeof(addr), env->client_addr, strlen(env->client_addr),
			   CLIENT_ADDR_MAX);
		log_escape(helo, sizeof(helo), env->helo, strlen(env->helo), HELO_MAX);
		log_escape(from, sizeof(from), env->from, strlen(env->from), PATH_MAX_OCTETS);
		printf("qid=%s time=%s client=[%s]:%u helo=%s from=<%s> rcpts=%" PRIu32
		       " size=%" PRIu64 "\n",
		       qid, when, addr, (unsigned)env->client_port, helo, from, env->nrcpt,
		       it->trace_len + it->body_size);
	}
	spool_reader_close(r);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		return 1;
	}
	return e < 0 ? 1 : 0;
}

static int cmd_cat(const char *dir, const char *qid, bool body_only)
{
	struct report rep = {.verify = false};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	const struct spool_item *it;
	int e, fd = STDOUT_FILENO;
	while ((e = next_item(r, dir, &it)) > 0)
		if (strcmp(it->env.qid, qid) == 0)
			break;
	if (e > 0) {
		unsigned what = SPOOL_READ_BODY | (body_only ? 0 : SPOOL_READ_TRACE);
		e = spool_reader_read(r, what, sink_fd, &fd);
		if (e != 0)
			fprintf(stderr, PROG ": %s: reading %s: %s\n", dir, qid, strerror(-e));
		e = e == 0 ? 0 : -1;
	} else if (e == 0) {
		fprintf(stderr, PROG ": %s: no complete message with qid %s\n", dir, qid);
		e = -1;
	}
	spool_reader_close(r);
	return e == 0 ? 0 : 1;
}

/* "Return-Path: <from>" with anything that could break the line as '?'. */
static void return_path(char *dst, size_t cap, const char *from, const char *eol)
{
	char clean[PATH_MAX_OCTETS + 1];
	size_t n = strnlen(from, PATH_MAX_OCTETS);
	for (size_t i = 0; i < n; i++)
		clean[i] = (unsigned char)from[i] < 0x20 || from[i] == 0x7f ? '?' : from[i];
	clean[n] = 0;
	snprintf(dst, cap, "Return-Path: <%s>%s", clean, eol);
}

static int mkdir_one(const char *path)
{
	return mkdir(path, 0750) < 0 && errno != EEXIST ? -errno : 0;
}

struct md_out {
	const char *dir;
	char host[256];
	int tmpfd, newfd;
};

static int md_out_open(struct md_out *o, const char *dir)
{
	char path[4096];
	const char *sub[] = {"", "/tmp", "/new", "/cur"};
	for (int i = 0; i < 4; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s", dir, sub[i]) >= sizeof(path))
			return -ENAMETOOLONG;
		int e = mkdir_one(path);
		if (e < 0)
			return e;
	}
	o->dir = dir;
	snprintf(path, sizeof(path), "%s/tmp", dir);
	o->tmpfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/new", dir);
	o->newfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (o->tmpfd < 0 || o->newfd < 0)
		return -errno;
	if (gethostname(o->host, sizeof(o->host) - 1) < 0)
		snprintf(o->host, sizeof(o->host), "localhost");
	for (char *h = o->host; *h; h++)
		if (*h == '/' || *h == ':' || *h == '.')
			*h = '_';
	return 0;
}

static int md_out_one(struct md_out *o, struct spool_reader *r, const struct spool_item *it,
		      unsigned n)
{
	char name[512], hdr[PATH_MAX_OCTETS + 32];
	uint64_t us = it->env.time_us;
	snprintf(name, sizeof(name), "%" PRIu64 ".M%06" PRIu64 "P%dQ%sN%u.%s", us / 1000000u,
		 us % 1000000u, (int)getpid(), it->env.qid, n, o->host);
	int fd = openat(o->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	return_path(hdr, sizeof(hdr), it->env.from, "\r\n");
	int e = write_all(fd, (const uint8_t *)hdr, strlen(hdr));
	if (e == 0)
		e = spool_reader_read(r, SPOOL_READ_TRACE | SPOOL_READ_BODY, sink_fd, &fd);
	if (e == 0 && fdatasync(fd) < 0)
		e = -errno;
	if (close(fd) < 0 && e == 0)
		e = -errno;
	if (e == 0 && renameat(o->tmpfd, name, o->newfd, name) < 0)
		e = -errno;
	if (e != 0)
		unlinkat(o->tmpfd, name, 0);
	return e;
}

static int mbox_one(FILE *f, struct spool_reader *r, const struct spool_item *it)
{
	char sender[PATH_MAX_OCTETS + 1], date[32], hdr[PATH_MAX_OCTETS + 32];
	size_t n = strnlen(it->env.from, PATH_MAX_OCTETS);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)it->env.from[i];
		sender[i] = c <= 0x20 || c == 0x7f ? '_' : (char)c;
	}
	sender[n] = 0;
	time_t t = (time_t)(it->env.time_us / 1000000u);
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
	fprintf(f, "From %s %s\n", n ? sender : "MAILER-DAEMON", date);
	return_path(hdr, sizeof(hdr), it->env.from, "\n");
	fputs(hdr, f);
	struct mbox_out m = {.f = f, .bol = true, .last = -1};
	int e = spool_reader_read(r, SPOOL_READ_TRACE | SPOOL_READ_BODY, sink_mbox, &m);
	if (e != 0)
		return e;
	if (m.cr)
		mb_quote(&m, '\r');
	if (m.bol)
		mb_prefix(&m);
	if (m.last != '\n')
		mb_out(&m, '\n');
	putc('\n', f);
	return ferror(f) ? -EIO : 0;
}

static int cmd_export(const char *dir, const char *mode, const char *dest)
{
	struct report rep = {.verify = false};
	struct md_out md = {.tmpfd = -1, .newfd = -1};
	FILE *mbox = NULL;
	bool to_maildir = strcmp(mode, "--maildir") == 0;
	int e = 0;
	if (to_maildir) {
		e = md_out_open(&md, dest);
	} else if (strcmp(dest, "-") == 0) {
		mbox = stdout;
	} else {
		mbox = fopen(dest, "ae");
		e = mbox ? 0 : -errno;
	}
	if (e < 0) {
		fprintf(stderr, PROG ": %s: %s\n", dest, strerror(-e));
		return 1;
	}
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0) {
		e = -1;
		goto out;
	}
	const struct spool_item *it;
	unsigned n = 0;
	while ((e = next_item(r, dir, &it)) > 0) {
		e = to_maildir ? md_out_one(&md, r, it, n) : mbox_one(mbox, r, it);
		if (e != 0) {
			fprintf(stderr, PROG ": %s: exporting %s: %s\n", dest, it->env.qid,
				strerror(-e));
			break;
		}
		n++;
	}
	spool_reader_close(r);
	if (e == 0 && to_maildir && fsync(md.newfd) < 0)
		e = -errno;
	if (e == 0 && mbox && (fflush(mbox) != 0 || (mbox != stdout && fsync(fileno(mbox)) < 0)))
		e = -errno;
	if (e == 0)
		fprintf(stderr, PROG ": %u messages exported to %s\n", n, dest);
	else if (e < -1)
		fprintf(stderr, PROG ": %s: %s\n", dest, strerror(-e));
out:
	if (mbox && mbox != stdout)
		fclose(mbox);
	if (md.tmpfd >= 0)
		close(md.tmpfd);
	if (md.newfd >= 0)
		close(md.newfd);
	return e == 0 ? 0 : 1;
}

/* ---- queue: the relay's queue, as mailq shows it ---- */

/*
 * The journal's index keeps each recipient's state, not the reply that
 * decided it; a second replay picks the deciding records' texts up. Each
 * distinct reply and relay is kept once (a hub that is down gives every
 * deferral the same reply), up to QUEUE_TEXT_BYTES_MAX: past it, replies are
 * shown as not kept.
 */
#define QUEUE_TEXT_BYTES_MAX (64u << 20)
#define QUEUE_TEXT_OVERHEAD  32u   /* per text: its slots and the allocator's header */
#define QUEUE_SLOTS_MIN	     1024u /* a power of two */
#define QUEUE_REASON_MAX     (JOURNAL_REPLY_MAX + JOURNAL_RELAY_MAX + 160)
/* Postfix's mailq layout for long queue ids (enable_long_queue_ids): a qid is 16 characters. */
#define QUEUE_HEAD_FMT "%-17s %8s %-19s %s\n"
#define QUEUE_HEADINGS                                                                             \
	"----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------"
#define QUEUE_RCPT_INDENT 47 /* 17 + 1 + 8 + 1 + 19 + 1: under the sender */
#define QUEUE_REASON_COL  76 /* a reason ends in column 78, as mailq's */

static_assert(QID_LEN < 17, "a qid fits the Queue ID column");

/* Texts interned: open addressing, never more than half full, so a probe meets a NULL. */
struct qstrs {
	char **slot; /* owned: nslot entries (a power of two), each owned or NULL */
	uint64_t nslot, n, bytes;
	bool over; /* QUEUE_TEXT_BYTES_MAX or memory ran out: later texts not kept */
};

/* The deciding result of a listed recipient, keyed by its entry in the index. */
struct qres {
	const struct journal_rcpt *key; /* borrowed from the index, which does not change
					   once loaded; NULL: an empty slot */
	const char *reply, *relay;	/* borrowed from qstrs; NULL: not kept */
	char dsn[JOURNAL_DSN_MAX + 1];
};

struct qres_map {
	struct qres *slot; /* owned: nslot entries (a power of two), at most half used */
	uint64_t nslot, n;
};

enum qshow {
	Q_HIDE,	     /* delivered, or final with nothing owed */
	Q_PENDING,   /* no result yet: never tried */
	Q_DEFERRED,  /* tried again at next_us */
	Q_UNBOUNCED, /* failed or expired, its DSN not yet stored */
};

struct queue {
	const char *dir; /* borrowed from argv */
	bool json;
	struct journal_index *ix; /* owned */
	struct qstrs strs;
	struct qres_map res;
	uint64_t listed, bytes; /* messages listed and their size */
	uint64_t maildir;	/* messages of maildir/ passed over */
	uint64_t errors;	/* journal problems, disagreements with the spool */
};

static uint64_t q_mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static uint64_t q_str_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return q_mix(h);
}

static uint64_t q_ptr_hash(const void *p)
{
	return q_mix((uint64_t)(uintptr_t)p);
}

static int qstrs_grow(struct qstrs *t)
{
	uint64_t n = t->nslot ? 2 * t->nslot : QUEUE_SLOTS_MIN;
	char **ns = calloc(n, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (uint64_t i = 0; i < t->nslot; i++) {
		if (!t->slot[i])
			continue;
		uint64_t j = q_str_hash(t->slot[i]) & (n - 1);
		while (ns[j])
			j = (j + 1) & (n - 1);
		ns[j] = t->slot[i];
	}
	free(t->slot);
	t->slot = ns;
	t->nslot = n;
	return 0;
}

/* The kept copy of s, or NULL: past the bound or out of memory (shown as not kept). */
static const char *qstrs_intern(struct qstrs *t, const char *s)
{
	if (2 * (t->n + 1) > t->nslot && qstrs_grow(t) < 0) {
		t->over = true;
		return NULL;
	}
	uint64_t i = q_str_hash(s) & (t->nslot - 1);
	for (; t->slot[i]; i = (i + 1) & (t->nslot - 1))
		if (strcmp(t->slot[i], s) == 0)
			return t->slot[i];
	size_t len = strlen(s) + 1;
	char *c = t->bytes + len + QUEUE_TEXT_OVERHEAD <= QUEUE_TEXT_BYTES_MAX ? malloc(len) : NULL;
	if (!c) {
		t->over = true;
		return NULL;
	}
	memcpy(c, s, len);
	t->slot[i] = c;
	t->n++;
	t->bytes += len + QUEUE_TEXT_OVERHEAD;
	return c;
}

static void qstrs_free(struct qstrs *t)
{
	for (uint64_t i = 0; i < t->nslot; i++)
		free(t->slot[i]);
	free(t->slot);
}

static int qres_grow(struct qres_map *m)
{
	uint64_t n = m->nslot ? 2 * m->nslot : QUEUE_SLOTS_MIN;
	struct qres *ns = calloc(n, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (uint64_t i = 0; i < m->nslot; i++) {
		if (!m->slot[i].key)
			continue;
		uint64_t j = q_ptr_hash(m->slot[i].key) & (n - 1);
		while (ns[j].key)
			j = (j + 1) & (n - 1);
		ns[j] = m->slot[i];
	}
	free(m->slot);
	m->slot = ns;
	m->nslot = n;
	return 0;
}

/* The slot of key: its entry, or the empty slot where it goes. The map is never full. */
static struct qres *qres_slot(const struct qres_map *m, const struct journal_rcpt *key)
{
	uint64_t i = q_ptr_hash(key) & (m->nslot - 1);
	while (m->slot[i].key && m->slot[i].key != key)
		i = (i + 1) & (m->nslot - 1);
	return &m->slot[i];
}

static const struct qres *qres_find(const struct qres_map *m, const struct journal_rcpt *key)
{
	if (m->n == 0)
		return NULL;
	const struct qres *e = qres_slot(m, key);
	return e->key ? e : NULL;
}

/* What a recipient shows: rc NULL when the journal names no result of its message. */
static enum qshow queue_show(const struct journal_rcpt *rc, bool null_sender)
{
	if (!rc || rc->state == 0)
		return Q_PENDING;
	if (rc->state == JOURNAL_DEFERRED)
		return Q_DEFERRED;
	if (rc->state == JOURNAL_DELIVERED)
		return Q_HIDE;
	/* Failed or expired: queued until its DSN is stored; a message from <> gets none. */
	return (rc->flags & JOURNAL_RCPT_BOUNCED) || null_sender ? Q_HIDE : Q_UNBOUNCED;
}

/* Replay, second pass: keeps the texts of each deciding RESULT of a recipient listed. */
static int queue_visit(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	(void)loc;
	struct queue *q = ctx;
	struct journal_msg_state m;
	if (r->type != JOURNAL_REC_RESULT || r->outcome == JOURNAL_DELIVERED)
		return 0;
	if (!journal_index_find(q->ix, r->seg, r->seg_off, &m) || m.segment_done ||
	    m.nrcpt != r->nrcpt || strcmp(m.qid, r->qid) != 0)
		return 0; /* a conflicting record: the first pass reported it */
	const struct journal_rcpt *rc = &m.rcpt[r->rcpt];
	if (rc->state != r->outcome || rc->time_us != r->time_us || rc->attempts != r->attempts ||
	    rc->next_us != r->next_us || queue_show(rc, false) == Q_HIDE)
		return 0;
	if (2 * (q->res.n + 1) > q->res.nslot && qres_grow(&q->res) < 0)
		return -ENOMEM;
	struct qres *e = qres_slot(&q->res, rc);
	if (e->key)
		return 0; /* the same fact written twice */
	e->key = rc;
	e->reply = qstrs_intern(&q->strs, r->reply);
	e->relay = qstrs_intern(&q->strs, r->relay);
	snprintf(e->dsn, sizeof(e->dsn), "%s", r->dsn);
	q->res.n++;
	return 0;
}

static void on_journal_problem(void *ctx, const struct journal_problem *p)
{
	(void)ctx;
	if (p->error)
		fprintf(stderr, PROG ": error: journal/%s@%" PRIu64 ": %s\n", p->file, p->offset,
			p->text);
}

/* The journal's index, then the texts of the results listed. 0 or -errno, said on stderr. */
static int queue_load(struct queue *q)
{
	struct journal_replay_counts c;
	int e = journal_index_new(JOURNAL_INDEX_MSGS, &q->ix);
	if (e == 0)
		e = journal_index_load(q->dir, q->ix, on_journal_problem, q, &c);
	if (e == 0) {
		q->errors += c.errors;
		/* Read-only, as the first pass; what it finds wrong, the first reported. */
		e = journal_replay(q->dir, queue_visit, NULL, q, NULL);
	}
	if (e == -ENOSPC)
		fprintf(stderr, PROG ": %s/journal: more than %u messages\n", q->dir,
			JOURNAL_INDEX_MSGS);
	else if (e < 0)
		fprintf(stderr, PROG ": %s/journal: %s\n", q->dir, strerror(-e));
	return e;
}

/* Whether dir holds a segment spool (active/ or ready/): the journal refers to segments. */
static bool has_segments(const char *dir)
{
	static const char *const sub[] = {"active", "ready"};
	for (int i = 0; i < 2; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, sub[i]);
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return true;
	}
	return false;
}

/* "Tue Nov 14 22:13:20", local time, as mailq's asctime. */
static void local_time(char *dst, size_t cap, uint64_t us)
{
	time_t t = (time_t)(us / 1000000u);
	struct tm tm;
	if (!localtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	if (strftime(dst, cap, "%a %b %e %H:%M:%S", &tm) == 0)
		snprintf(dst, cap, "??");
}

/* s on stdout with control bytes as '?' (as mailq's printable()); UTF-8 passes. */
static void put_printable(const char *s)
{
	for (; *s; s++)
		putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

/* The length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf; /* the second byte's range (RFC 3629 4) */
	size_t n;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0; /* no overlong form */
	else if (c == 0xed)
		hi = 0x9f; /* no surrogate */
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f; /* nothing past U+10FFFF */
	for (size_t i = 1; i < n; i++)
		if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf))
			return 0;
	return n;
}

/* A JSON string (RFC 8259), or null; bytes that are not UTF-8 become U+FFFD. */
static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t n = utf8_len(p);
		if (n == 0) {
			fputs("\\ufffd", stdout);
			p++;
		} else if (*p == '"' || *p == '\\') {
			printf("\\%c", *p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			printf("\\u%04x", *p++);
		} else {
			fwrite(p, 1, n, stdout);
			p += n;
		}
	}
	putchar('"');
}

static const char *const qshow_name[] = {"", "pending", "deferred", "failed"};

/* The reason line of a recipient ("" for one never tried), mailq's "(...)". */
static void queue_reason(const struct queue *q, char *dst, size_t cap, enum qshow s,
			 const struct journal_rcpt *rc)
{
	char when[64], head[128];
	if (s == Q_PENDING) {
		dst[0] = 0;
		return;
	}
	const char *pl = rc->attempts == 1 ? "" : "s";
	if (s == Q_DEFERRED) {
		local_time(when, sizeof(when), rc->next_us);
		snprintf(head, sizeof(head),
			 "deferred after %" PRIu32 " attempt%s, next attempt %s", rc->attempts, pl,
			 when);
	} else {
		snprintf(head, sizeof(head), "%s after %" PRIu32 " attempt%s, DSN not yet stored",
			 rc->state == JOURNAL_EXPIRED ? "expired" : "failed", rc->attempts, pl);
	}
	const struct qres *e = qres_find(&q->res, rc);
	if (!e) /* its record went between the two passes: a compaction meanwhile */
		snprintf(dst, cap, "%s: reply not found", head);
	else if (!e->reply)
		snprintf(dst, cap, "%s: reply not kept", head);
	else if (e->relay && e->relay[0])
		snprintf(dst, cap, "%s: %s (relay %s)", head, e->reply[0] ? e->reply : e->dsn,
			 e->relay);
	else
		snprintf(dst, cap, "%s: %s", head, e->reply[0] ? e->reply : e->dsn);
}

/* The next packed recipient address after a (which is in env->rcpts). */
static const char *next_rcpt(const struct envelope *env, const char *a)
{
	a += strlen(a) + 1;
	ASSERT(a <= env->rcpts + env->rcpts_len);
	return a;
}

static void queue_text(struct queue *q, const struct spool_item *it, const struct journal_rcpt *rc)
{
	const struct envelope *env = &it->env;
	char when[64], reason[QUEUE_REASON_MAX], saved[QUEUE_REASON_MAX] = "";
	if (q->listed == 0)
		printf(QUEUE_HEAD_FMT, QUEUE_HEADINGS);
	else
		putchar('\n');
	local_time(when, sizeof(when), env->time_us);
	printf("%-17s %8" PRIu64 " %19.19s ", env->qid, it->trace_len + it->body_size, when);
	put_printable(env->from[0] ? env->from : "MAILER-DAEMON");
	putchar('\n');
	const char *a = env->rcpts;
	for (uint32_t i = 0; i < env->nrcpt; i++, a = next_rcpt(env, a)) {
		const struct journal_rcpt *r = rc ? &rc[i] : NULL;
		enum qshow s = queue_show(r, env->from[0] == 0);
		if (s == Q_HIDE)
			continue;
		/* As mailq: a reason only where it changes from the recipient before. */
		queue_reason(q, reason, sizeof(reason), s, r);
		if (strcmp(reason, saved) != 0) {
			const char *show = reason[0] ? reason : "not yet tried";
			int pad = QUEUE_REASON_COL - (int)strlen(show);
			printf("%*s(%s)\n", pad > 0 ? pad : 0, "", show);
			memcpy(saved, reason, strlen(reason) + 1);
		}
		printf("%*s", QUEUE_RCPT_INDENT, "");
		put_printable(a);
		putchar('\n');
	}
}

static void json_rcpt(const struct queue *q, const char *addr, enum qshow s,
		      const struct journal_rcpt *rc)
{
	char when[96];
	const struct qres *e = s == Q_PENDING ? NULL : qres_find(&q->res, rc);
	fputs("{\"address\":", stdout);
	json_str(addr);
	printf(",\"state\":\"%s\",\"attempts\":%" PRIu32 ",\"next_attempt\":",
	       s == Q_UNBOUNCED && rc->state == JOURNAL_EXPIRED ? "expired" : qshow_name[s],
	       s == Q_PENDING ? 0 : rc->attempts);
	if (s == Q_DEFERRED)
		fmt_time(when, sizeof(when), rc->next_us);
	json_str(s == Q_DEFERRED ? when : NULL);
	fputs(",\"dsn\":", stdout);
	json_str(e ? e->dsn : NULL);
	fputs(",\"reply\":", stdout);
	json_str(e ? e->reply : NULL);
	fputs(",\"relay\":", stdout);
	json_str(e ? e->relay : NULL);
	putchar('}');
}

static void queue_json(struct queue *q, const struct spool_item *it, const char *seg,
		       const struct journal_rcpt *rc)
{
	const struct envelope *env = &it->env;
	char when[96];
	fmt_time(when, sizeof(when), env->time_us);
	fputs("{\"qid\":", stdout);
	json_str(env->qid);
	fputs(",\"segment\":", stdout);
	json_str(seg);
	printf(",\"offset\":%" PRIu64 ",\"size\":%" PRIu64 ",\"arrival\":\"%s\",\"sender\":",
	       it->offset, it->trace_len + it->body_size, when);
	json_str(env->from);
	fputs(",\"recipients\":[", stdout);
	const char *a = env->rcpts;
	unsigned n = 0;
	for (uint32_t i = 0; i < env->nrcpt; i++, a = next_rcpt(env, a)) {
		const struct journal_rcpt *r = rc ? &rc[i] : NULL;
		enum qshow s = queue_show(r, env->from[0] == 0);
		if (s == Q_HIDE)
			continue;
		if (n++)
			putchar(',');
		json_rcpt(q, a, s, r);
	}
	fputs("]}\n", stdout);
}

/* Lists the message the reader yielded when a recipient of it is still queued. */
static void queue_item(struct queue *q, const struct spool_item *it)
{
	const struct envelope *env = &it->env;
	const char *seg = journal_seg_name(it->file);
	if (!seg) {
		q->maildir++;
		return;
	}
	struct journal_msg_state m;
	const struct journal_rcpt *rc = NULL;
	if (journal_index_find(q->ix, seg, it->offset, &m)) {
		if (m.segment_done)
			return;
		if (m.nrcpt == env->nrcpt && strcmp(m.qid, env->qid) == 0) {
			rc = m.rcpt;
		} else {
			fprintf(stderr,
				PROG ": error: %s@%" PRIu64
				     ": the journal names qid %s with %" PRIu32
				     " recipients here, the spool %s with %" PRIu32
				     ": listed as never tried\n",
				it->file, it->offset, m.qid, m.nrcpt, env->qid, env->nrcpt);
			q->errors++;
		}
	}
	bool queued = false;
	for (uint32_t i = 0; i < env->nrcpt && !queued; i++)
		queued = queue_show(rc ? &rc[i] : NULL, env->from[0] == 0) != Q_HIDE;
	if (!queued)
		return;
	if (q->json)
		queue_json(q, it, seg, rc);
	else
		queue_text(q, it, rc);
	q->listed++;
	q->bytes += it->trace_len + it->body_size;
}

static void queue_free(struct queue *q)
{
	journal_index_free(q->ix);
	qstrs_free(&q->strs);
	free(q->res.slot);
}

static int cmd_queue(const char *dir, bool json)
{
	struct report rep = {.verify = false};
	struct queue q = {.dir = dir, .json = json};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	if (!has_segments(dir)) {
		fprintf(stderr,
			PROG ": %s: the queue of a maildir spool: not supported: the relay reads "
			     "the segment spool\n",
			dir);
		spool_reader_close(r);
		return 1;
	}
	tzset();
	int e = queue_load(&q);
	const struct spool_item *it;
	if (e == 0)
		while ((e = next_item(r, dir, &it)) > 0)
			queue_item(&q, it);
	struct spool_reader_counts c;
	spool_reader_counts(r, &c);
	spool_reader_close(r);
	if (!json && q.listed == 0 && e == 0)
		printf("Mail queue is empty\n");
	else if (!json && q.listed > 0)
		printf("\n-- %" PRIu64 " Kbytes in %" PRIu64 " Request%s.\n", q.bytes / 1024,
		       q.listed, q.listed == 1 ? "" : "s");
	if (q.maildir)
		fprintf(stderr,
			PROG ": %s: %" PRIu64 " messages in maildir/ not listed: the relay "
			     "reads the segment spool\n",
			dir, q.maildir);
	if (q.strs.over)
		fprintf(stderr, PROG ": %s: replies past %u MiB of distinct texts not kept\n", dir,
			QUEUE_TEXT_BYTES_MAX >> 20);
	queue_free(&q);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		return 1;
	}
	return e < 0 || c.errors > 0 || q.errors > 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *pos[3] = {0};
	int npos = 0;
	bool body = false, exact = false, json = false;
	const char *mode = NULL, *dest = NULL;
	static struct acks acks; /* static: ACK_LOGS_MAX log records */

	if (argc < 2)
		return usage_error("%s", "a command is needed");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage_text, stdout);
			return 0;
		}
		if (strcmp(a, "--body") == 0) {
			body = true;
		} else if (strcmp(a, "--json") == 0) {
			json = true;
		} else if (strcmp(a, "--exact") == 0) {
			exact = true;
		} else if (strcmp(a, "--against") == 0) {
			if (acks.nlogs == ACK_LOGS_MAX)
				return usage_error("at most %u --against", ACK_LOGS_MAX);
			if (i + 1 >= argc)
				return usage_error("%s needs an argument", a);
			acks.log[acks.nlogs++].path = argv[++i];
		} else if (strcmp(a, "--maildir") == 0 || strcmp(a, "--mbox") == 0) {
			if (mode)
				return usage_error("%s", "one of --maildir and --mbox, once");
			if (i + 1 >= argc)
				return usage_error("%s needs an argument", a);
			mode = a;
			dest = argv[++i];
		} else if (a[0] == '-' && a[1] != 0) {
			return usage_error("unknown option '%s'", a);
		} else if (npos < 3) {
			pos[npos++] = a;
		} else {
			return usage_error("unexpected argument '%s'", a);
		}
	}
	const char *cmd = pos[0];
	if (!cmd)
		return usage_error("%s", "a command is needed");
	bool is_cat = strcmp(cmd, "cat") == 0, is_export = strcmp(cmd, "export") == 0;
	bool is_queue = strcmp(cmd, "queue") == 0;
	if (!is_cat && !is_export && !is_queue && strcmp(cmd, "verify") && strcmp(cmd, "list"))
		return usage_error("unknown command '%s'", cmd);
	if (npos < 2)
		return usage_error("%s: the spool directory is missing", cmd);
	if (npos != (is_cat ? 3 : 2))
		return usage_error("%s: %s", cmd,
				   is_cat ? "DIR and QID are needed" : "too many arguments");
	if (body && !is_cat)
		return usage_error("%s", "--body goes with cat");
	if (json && !is_queue)
		return usage_error("%s", "--json goes with queue");
	if (mode && !is_export)
		return usage_error("%s goes with export", mode);
	if (acks.nlogs && strcmp(cmd, "verify") != 0)
		return usage_error("%s", "--against goes with verify");
	if (exact && !acks.nlogs)
		return usage_error("%s", "--exact goes with verify --against ACKLOG");
	if (is_export && !mode)
		return usage_error("%s", "export: --maildir OUTDIR or --mbox FILE is needed");

	if (is_cat)
		return cmd_cat(pos[1], pos[2], body);
	if (is_export)
		return cmd_export(pos[1], mode, dest);
	if (strcmp(cmd, "list") == 0)
		return cmd_list(pos[1]);
	if (is_queue)
		return cmd_queue(pos[1], json);
	int rc = cmd_verify(pos[1], &acks, exact);
	ack_free(&acks);
	return rc;
}
