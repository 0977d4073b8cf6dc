/*
 * spool_reader.c - the spool reader (spool_reader.h).
 *
 * Segments are read writer by writer, in name order (ready/ and active/
 * together, a name found in both read once, as ready/'s); the records of
 * one message are joined by qid in the pending table until its FINAL, and
 * parts still waiting when a writer's run ends are orphans. Every record
 * is checked (spoolrec_check) before anything in it is believed, and a
 * FINAL is yielded only when its parts add up to what its envelope says.
 * Maildir files are read after the segments, cur/ then new/, each checked
 * for the envelope lines at its top.
 *
 * The problem callback hears of everything that is not a whole message;
 * only memory or an unreadable spool directory stops the reading.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "qidmap.h"
#include "segment.h"
#include "spool_reader.h"
#include "spoolrec.h"

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

/* Undoes md_put_escaped (maildir.c) into dst (cap bytes, NUL-terminated). */
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
		char rel[SEGMENT_NAME_LEN + 16];
		if (!segment_name_parse(names[i], &f->writer, &f->run_us, &seq)) {
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
