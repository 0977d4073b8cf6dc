/*
 * journal.c - the delivery journal (journal.h: the format, the merge, the
 * durability argument and the compaction steps are there).
 *
 * Invariants:
 *  - records reach a file only through journal_sync: one pwrite of the
 *    buffer, one fdatasync; durable_seq moves only after that fdatasync
 *    returned 0 (write_batch);
 *  - a file gets no byte after a failed write or sync (fd is closed, the
 *    next batch makes a new file), nor after a restart (journal_open makes
 *    a new file), so a torn record is always the last of its file;
 *  - every file is durable by name (the directory fsynced) before a record
 *    goes into it (jfile_create);
 *  - decoders trust no length: a record is checked against its type's exact
 *    length and JOURNAL_REC_MAX before any field is read, and every decoded
 *    record passes journal_rec_check before anyone sees it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "crc32c.h"
#include "fsutil.h"
#include "journal.h"
#include "le.h"
#include "log.h"
#include "spool.h"
#include "spoolrec.h"

#define JNAME_LEN	  26 /* "j-wNN-" 16 hex ".jrn" */
#define FILE_SEQ_TRIES	  64 /* names tried when one already exists */
#define READ_BUF_BYTES	  (64u << 10)
#define ZERO_TAIL_MAX	  (1u << 20) /* bytes checked for zeros after a bad header */
#define INDEX_BUCKETS_MIN 1024u
#define RCPT_EMIT_RESULT  0x40u /* compaction: this recipient's deciding RESULT is copied */
#define RCPT_EMIT_BOUNCE  0x80u /* compaction: its BOUNCE is copied */
#define PROBLEM_TEXT_MAX  256

static_assert(READ_BUF_BYTES >= JOURNAL_REC_MAX, "a record fits the read buffer");
static_assert(JOURNAL_RESULT_FIXED == 144 && JOURNAL_BOUNCE_LEN == 120, "journal.h's table");

/* Tests only (journal.h). */
unsigned journal_test_compact_stop;

/* ---- names ---- */

struct jname {
	unsigned writer;
	uint64_t seq;
	bool tmp;
};

static bool jname_parse(const char *s, struct jname *n)
{
	if (strlen(s) != JNAME_LEN || memcmp(s, "j-w", 3) != 0 || s[5] != '-')
		return false;
	if (strcmp(s + 22, ".jrn") == 0)
		n->tmp = false;
	else if (strcmp(s + 22, ".tmp") == 0)
		n->tmp = true;
	else
		return false;
	if (s[3] < '0' || s[3] > '9' || s[4] < '0' || s[4] > '9')
		return false;
	n->writer = (unsigned)(s[3] - '0') * 10 + (unsigned)(s[4] - '0');
	n->seq = 0;
	for (int i = 6; i < 22; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		n->seq = n->seq << 4 | d;
	}
	return n->writer < JOURNAL_WRITERS_MAX && n->seq >= 1 && n->seq < JOURNAL_SEQ_MAX;
}

static void jname_make(char *dst, unsigned writer, uint64_t seq, bool tmp)
{
	snprintf(dst, JNAME_LEN + 1, "j-w%02u-%016" PRIx64 ".%s", writer, seq, tmp ? "tmp" : "jrn");
}

const char *journal_seg_name(const char *file)
{
	const char *base = file;
	if (strncmp(file, "ready/", 6) == 0)
		base = file + 6;
	else if (strncmp(file, "active/", 7) == 0)
		base = file + 7;
	unsigned w;
	uint64_t run;
	uint32_t seq;
	return segment_name_parse(base, &w, &run, &seq) ? base : NULL;
}

/* ---- records ---- */

static void text_set(char *dst, size_t max, const char *src, size_t len, uint16_t *flags,
		     uint16_t cut_flag)
{
	while (len > 0 && (src[len - 1] == '\n' || src[len - 1] == '\r'))
		len--;
	size_t n = len;
	*flags &= (uint16_t)~cut_flag;
	if (n > max) {
		n = max;
		*flags |= cut_flag;
		/* Not inside a UTF-8 sequence: back to its lead byte, which goes too. */
		for (int k = 0; k < 3 && n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80; k++)
			n--;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	dst[n] = 0;
}

void journal_rec_reply(struct journal_rec *r, const char *text, size_t len)
{
	text_set(r->reply, JOURNAL_REPLY_MAX, text, len, &r->flags, JOURNAL_F_REPLY_CUT);
}

void journal_rec_relay(struct journal_rec *r, const char *text, size_t len)
{
	text_set(r->relay, JOURNAL_RELAY_MAX, text, len, &r->flags, JOURNAL_F_RELAY_CUT);
}

/* Within its bound, and no byte below 0x20 or 0x7f. */
static bool text_ok(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	if (n == cap)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* "C.S.D", RFC 3463 2: its class digit, or 0 when it is not one. */
static char dsn_class(const char *d)
{
	size_t n = strnlen(d, JOURNAL_DSN_MAX + 1);
	if (n > JOURNAL_DSN_MAX || n < 5 || (d[0] != '2' && d[0] != '4' && d[0] != '5') ||
	    d[1] != '.')
		return 0;
	size_t i = 2;
	for (int part = 0; part < 2; part++) {
		size_t digits = 0;
		while (i < n && d[i] >= '0' && d[i] <= '9' && digits < 4) {
			i++;
			digits++;
		}
		if (digits < 1 || digits > 3)
			return 0;
		if (part == 0 && (i >= n || d[i++] != '.'))
			return 0;
	}
	return i == n ? d[0] : 0;
}

static bool is_final(uint8_t state)
{
	return state == JOURNAL_DELIVERED || state == JOURNAL_FAILED || state == JOURNAL_EXPIRED;
}

static const char *result_check(const struct journal_rec *r)
{
	if (r->outcome < JOURNAL_DELIVERED || r->outcome > JOURNAL_EXPIRED)
		return "unknown outcome";
	if (r->flags & ~(JOURNAL_F_REPLY_CUT | JOURNAL_F_RELAY_CUT))
		return "unknown flags";
	char c = dsn_class(r->dsn);
	if (c == 0)
		return "not a DSN status (C.S.D)";
	static const char want[] = {0, '2', '4', '5', 0};
	if (r->outcome == JOURNAL_EXPIRED ? c == '2' : c != want[r->outcome])
		return "DSN class does not fit the outcome";
	if (r->attempts == 0 && r->outcome != JOURNAL_EXPIRED)
		return "no attempt counted";
	if ((r->outcome == JOURNAL_DEFERRED) != (r->next_us != 0))
		return "next attempt time on a record that is not deferred, or missing";
	if (!text_ok(r->reply, sizeof(r->reply)))
		return "reply text too long or with control bytes";
	if (!text_ok(r->relay, sizeof(r->relay)))
		return "relay text too long or with control bytes";
	return NULL;
}

const char *journal_rec_check(const struct journal_rec *r)
{
	if (r->type != JOURNAL_REC_RESULT && r->type != JOURNAL_REC_BOUNCE &&
	    r->type != JOURNAL_REC_SEGDONE)
		return "unknown record type";
	if (r->time_us == 0)
		return "no time";
	unsigned w;
	uint64_t run;
	uint32_t seq;
	if (strnlen(r->seg, sizeof(r->seg)) != SEGMENT_NAME_LEN ||
	    !segment_name_parse(r->seg, &w, &run, &seq))
		return "not a segment name";
	if (r->type == JOURNAL_REC_SEGDONE)
		return NULL;
	if (r->seg_off < SPOOL_SEG_REC_LEN || r->seg_off > UINT64_MAX / 4)
		return "segment offset out of range";
	if (!spoolrec_qid_valid(r->qid))
		return "not a valid qid";
	if (r->nrcpt == 0 || r->nrcpt > RCPT_LIMIT_MAX)
		return "recipient count not in 1..RCPT_LIMIT_MAX";
	if (r->rcpt >= r->nrcpt)
		return "recipient index not below the recipient count";
	if (r->type == JOURNAL_REC_BOUNCE)
		return spoolrec_qid_valid(r->dsn_qid) ? NULL : "not a valid DSN qid";
	return result_check(r);
}

static void field_put(uint8_t *p, const char *s, size_t field)
{
	memset(p, 0, field);
	memcpy(p, s, strnlen(s, field));
}

/* The CRC of a record of len bytes at p (journal.h: the crc field left out). */
static uint32_t rec_crc(uint32_t seed, const uint8_t *p, size_t len)
{
	uint32_t c = crc32c(seed, p, 12);
	return crc32c(c, p + 16, len - 16);
}

static uint32_t seed_of(uint64_t salt)
{
	uint8_t b[8];
	le_put64(b, salt);
	return crc32c(0, b, sizeof(b));
}

static void hdr_put(uint8_t *p, uint8_t type, uint16_t flags, uint32_t len, uint64_t seq,
		    uint64_t time_us)
{
	le_put32(p, JOURNAL_MAGIC);
	p[4] = type;
	p[5] = JOURNAL_VERSION;
	le_put16(p + 6, flags);
	le_put32(p + 8, len);
	le_put32(p + 12, 0);
	le_put64(p + 16, seq);
	le_put64(p + 24, time_us);
}

size_t journal_rec_encode(uint8_t *p, size_t cap, const struct journal_rec *r, uint32_t seed)
{
	ASSERT(journal_rec_check(r) == NULL); /* callers check first: a programmer's error */
	size_t reply = strlen(r->reply), relay = strlen(r->relay), len;
	if (r->type == JOURNAL_REC_RESULT)
		len = JOURNAL_RESULT_FIXED + reply + relay;
	else if (r->type == JOURNAL_REC_BOUNCE)
		len = JOURNAL_BOUNCE_LEN;
	else
		len = JOURNAL_SEGDONE_LEN;
	if (cap < len)
		return 0;
	memset(p, 0, len);
	hdr_put(p, r->type, r->type == JOURNAL_REC_RESULT ? r->flags : 0, (uint32_t)len, r->seq,
		r->time_us);
	field_put(p + 32, r->seg, JOURNAL_SEG_FIELD);
	if (r->type != JOURNAL_REC_SEGDONE) {
		le_put64(p + 72, r->seg_off);
		field_put(p + 80, r->qid, QID_LEN);
		le_put32(p + 96, r->rcpt);
		le_put32(p + 100, r->nrcpt);
	}
	if (r->type == JOURNAL_REC_RESULT) {
		p[104] = r->outcome;
		le_put32(p + 108, r->attempts);
		le_put64(p + 112, r->next_us);
		field_put(p + 120, r->dsn, JOURNAL_DSN_FIELD);
		le_put16(p + 136, (uint16_t)reply);
		le_put16(p + 138, (uint16_t)relay);
		memcpy(p + JOURNAL_RESULT_FIXED, r->reply, reply);
		memcpy(p + JOURNAL_RESULT_FIXED + reply, r->relay, relay);
	} else if (r->type == JOURNAL_REC_BOUNCE) {
		field_put(p + 104, r->dsn_qid, QID_LEN);
	}
	le_put32(p + 12, rec_crc(seed, p, len));
	return len;
}

/* The header's own checks: NULL and *len, or why it is no record header. */
static const char *hdr_check(const uint8_t *p, uint32_t *len)
{
	if (le_get32(p) != JOURNAL_MAGIC)
		return "bad magic";
	if (p[5] != JOURNAL_VERSION)
		return "unknown version";
	uint32_t n = le_get32(p + 8);
	bool ok;
	switch (p[4]) {
	case JOURNAL_REC_FILE:
		ok = n == JOURNAL_FILE_REC_LEN;
		break;
	case JOURNAL_REC_RESULT:
		ok = n >= JOURNAL_RESULT_FIXED && n <= JOURNAL_REC_MAX;
		break;
	case JOURNAL_REC_BOUNCE:
		ok = n == JOURNAL_BOUNCE_LEN;
		break;
	case JOURNAL_REC_SEGDONE:
		ok = n == JOURNAL_SEGDONE_LEN;
		break;
	default:
		return "unknown record type";
	}
	if (!ok)
		return "record length does not fit its type";
	*len = n;
	return NULL;
}

/* A NUL-padded field of p into dst (cap bytes): false when it does not fit or is not padded. */
static bool field_get(char *dst, size_t cap, const uint8_t *p, size_t field)
{
	size_t n = strnlen((const char *)p, field);
	if (n >= cap)
		return false;
	for (size_t i = n; i < field; i++)
		if (p[i] != 0)
			return false;
	memcpy(dst, p, n);
	dst[n] = 0;
	return true;
}

static bool zeros(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static const char *result_decode(const uint8_t *p, size_t len, struct journal_rec *r)
{
	r->outcome = p[104];
	r->attempts = le_get32(p + 108);
	r->next_us = le_get64(p + 112);
	size_t reply = le_get16(p + 136), relay = le_get16(p + 138);
	if (!zeros(p + 105, 3) || !zeros(p + 140, 4))
		return "reserved bytes not zero";
	if (!field_get(r->dsn, sizeof(r->dsn), p + 120, JOURNAL_DSN_FIELD))
		return "bad DSN field";
	if (reply > JOURNAL_REPLY_MAX || relay > JOURNAL_RELAY_MAX ||
	    JOURNAL_RESULT_FIXED + reply + relay != len)
		return "text lengths do not add up to the record length";
	const uint8_t *t = p + JOURNAL_RESULT_FIXED;
	if (memchr(t, 0, reply + relay))
		return "NUL byte in a text";
	memcpy(r->reply, t, reply);
	r->reply[reply] = 0;
	memcpy(r->relay, t + reply, relay);
	r->relay[relay] = 0;
	return NULL;
}

/* Decodes a whole record (CRC already checked): NULL, or why it is not a valid one. */
static const char *rec_decode(const uint8_t *p, size_t len, struct journal_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->type = p[4];
	r->flags = le_get16(p + 6);
	r->seq = le_get64(p + 16);
	r->time_us = le_get64(p + 24);
	if (r->type == JOURNAL_REC_FILE)
		return "a FILE record after the first";
	if (r->seq == 0 || r->seq >= JOURNAL_SEQ_MAX)
		return "seq out of range";
	if (r->type != JOURNAL_REC_RESULT && r->flags != 0)
		return "flags on a record that has none";
	if (!field_get(r->seg, sizeof(r->seg), p + 32, JOURNAL_SEG_FIELD))
		return "bad segment field";
	const char *why = NULL;
	if (r->type != JOURNAL_REC_SEGDONE) {
		r->seg_off = le_get64(p + 72);
		r->rcpt = le_get32(p + 96);
		r->nrcpt = le_get32(p + 100);
		if (!field_get(r->qid, sizeof(r->qid), p + 80, QID_LEN))
			return "bad qid field";
	}
	if (r->type == JOURNAL_REC_RESULT)
		why = result_decode(p, len, r);
	else if (r->type == JOURNAL_REC_BOUNCE &&
		 !field_get(r->dsn_qid, sizeof(r->dsn_qid), p + 104, QID_LEN))
		why = "bad DSN qid field";
	return why ? why : journal_rec_check(r);
}

/* ---- the FILE record ---- */

struct jfile_hdr {
	uint64_t salt;
	uint32_t writer;
	uint32_t fflags;
	uint64_t file_seq;
	uint64_t next_seq;
	uint64_t time_us;
};

static void file_rec_encode(uint8_t *p, const struct jfile_hdr *h)
{
	memset(p, 0, JOURNAL_FILE_REC_LEN);
	hdr_put(p, JOURNAL_REC_FILE, 0, JOURNAL_FILE_REC_LEN, 0, h->time_us);
	le_put64(p + 32, h->salt);
	le_put32(p + 40, h->writer);
	le_put32(p + 44, h->fflags);
	le_put64(p + 48, h->file_seq);
	le_put64(p + 56, h->next_seq);
	le_put32(p + 12, rec_crc(0, p, JOURNAL_FILE_REC_LEN));
}

static const char *file_rec_decode(const uint8_t *p, const struct jname *n, struct jfile_hdr *h)
{
	uint32_t len;
	const char *why = hdr_check(p, &len);
	if (why)
		return why;
	if (p[4] != JOURNAL_REC_FILE)
		return "the first record is not a FILE record";
	if (le_get32(p + 12) != rec_crc(0, p, JOURNAL_FILE_REC_LEN))
		return "CRC mismatch in the FILE record";
	h->salt = le_get64(p + 32);
	h->writer = le_get32(p + 40);
	h->fflags = le_get32(p + 44);
	h->file_seq = le_get64(p + 48);
	h->next_seq = le_get64(p + 56);
	h->time_us = le_get64(p + 24);
	if (le_get16(p + 6) != 0 || le_get64(p + 16) != 0 || !zeros(p + 64, 16) ||
	    (h->fflags & ~JOURNAL_FILE_COMPACTED) || h->time_us == 0 || h->next_seq == 0 ||
	    h->next_seq > JOURNAL_SEQ_MAX)
		return "bad FILE record fields";
	if (h->writer != n->writer || h->file_seq != n->seq)
		return "the FILE record does not match the file name";
	return NULL;
}

/* ---- reading files ---- */

enum jfile_state {
	JF_OK,
	JF_TORN,       /* shorter than its FILE record: a crash as it was made */
	JF_BAD,	       /* no valid FILE record */
	JF_SUPERSEDED, /* below its writer's compacted file */
	JF_UNREADABLE, /* open or read failed */
};

struct jfile {
	char name[JNAME_LEN + 1];
	struct jname n;
	enum jfile_state state;
	uint64_t size;
	struct jfile_hdr h;
};

typedef int (*visit_fn)(void *ctx, const struct journal_rec *r, const struct journal_loc *loc);

/* One pass over journal files: the listing, then each file's records. */
struct scan {
	int dirfd;
	int writer; /* -1: every writer; else only this one's files */
	uint64_t max_file_seq;
	journal_problem_fn problem;
	void *pctx;
	visit_fn visit;
	void *vctx;
	struct jfile *files; /* owned */
	uint32_t nfiles;
	uint8_t *buf; /* owned, READ_BUF_BYTES */
	struct journal_replay_counts counts;
	/* The file being read: a window of it in buf. */
	int fd;
	uint64_t size, at;
	size_t len;
};

static void scan_problem(struct scan *sc, enum journal_problem_kind kind, bool error,
			 const char *file, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void scan_problem(struct scan *sc, enum journal_problem_kind kind, bool error,
			 const char *file, uint64_t off, const char *fmt, ...)
{
	char text[PROBLEM_TEXT_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (error)
		sc->counts.errors++;
	if (sc->problem) {
		struct journal_problem p = {kind, error, file, off, text};
		sc->problem(sc->pctx, &p);
	}
}

/* Makes [off, off + n) of the file readable in buf: a pointer, or NULL and *err. */
static const uint8_t *scan_get(struct scan *sc, uint64_t off, size_t n, int *err)
{
	ASSERT(n <= READ_BUF_BYTES && off + n <= sc->size);
	if (off >= sc->at && off + n <= sc->at + sc->len)
		return sc->buf + (off - sc->at);
	size_t want = sc->size - off < READ_BUF_BYTES ? (size_t)(sc->size - off) : READ_BUF_BYTES;
	int r = fsutil_pread_all(sc->fd, sc->buf, want, off);
	if (r < 0) {
		sc->len = 0;
		*err = r == -ENODATA ? -EIO : r; /* the file shrank under us */
		return NULL;
	}
	sc->at = off;
	sc->len = want;
	return sc->buf;
}

/* Whether the file holds only zeros from off on (checked up to ZERO_TAIL_MAX bytes). */
static bool scan_zero_tail(struct scan *sc, uint64_t off)
{
	if (sc->size - off > ZERO_TAIL_MAX)
		return false;
	int err;
	while (off < sc->size) {
		size_t n =
		    sc->size - off < READ_BUF_BYTES ? (size_t)(sc->size - off) : READ_BUF_BYTES;
		const uint8_t *p = scan_get(sc, off, n, &err);
		if (!p || !zeros(p, n))
			return false;
		off += n;
	}
	return true;
}

/* Reports the bad record at off, after which the file is not read. */
static void scan_bad(struct scan *sc, const struct jfile *f, uint64_t off, bool torn,
		     const char *why)
{
	if (torn)
		scan_problem(sc, JOURNAL_P_TORN, false, f->name, off,
			     "%s: the file ends in a record cut by a crash; the records before it "
			     "stand",
			     why);
	else
		scan_problem(sc, JOURNAL_P_CORRUPT, true, f->name, off,
			     "%s; the rest of the file (%" PRIu64 " bytes) is not read", why,
			     sc->size - off);
}

/* Checks the record at off: 0 and *r, 1 when the file stops here (reported), or -errno. */
static int scan_record(struct scan *sc, const struct jfile *f, uint64_t off, uint32_t seed,
		       struct journal_rec *r, uint32_t *len)
{
	uint64_t left = sc->size - off;
	int err = 0;
	const uint8_t *p =
	    scan_get(sc, off, left < JOURNAL_HDR_LEN ? (size_t)left : JOURNAL_HDR_LEN, &err);
	if (!p)
		return err;
	if (left < JOURNAL_HDR_LEN) {
		uint8_t magic[4];
		le_put32(magic, JOURNAL_MAGIC);
		bool torn =
		    memcmp(p, magic, left < 4 ? (size_t)left : 4) == 0 || zeros(p, (size_t)left);
		scan_bad(sc, f, off, torn, torn ? "a partial record header" : "trailing bytes");
		return 1;
	}
	const char *why = hdr_check(p, len);
	if (why) {
		scan_bad(sc, f, off, scan_zero_tail(sc, off), why);
		return 1;
	}
	if (*len > left) {
		scan_bad(sc, f, off, true, "a partial record");
		return 1;
	}
	p = scan_get(sc, off, *len, &err);
	if (!p)
		return err;
	if (le_get32(p + 12) != rec_crc(seed, p, *len)) {
		scan_bad(sc, f, off, off + *len == sc->size, "CRC mismatch");
		return 1;
	}
	why = rec_decode(p, *len, r);
	if (why) {
		scan_bad(sc, f, off, false, why);
		return 1;
	}
	return 0;
}

/* Reads the records of f in order, each to sc->visit. 0, the visitor's non-zero, or -errno. */
static int scan_file(struct scan *sc, struct jfile *f)
{
	sc->fd = openat(sc->dirfd, f->name, O_RDONLY | O_CLOEXEC);
	if (sc->fd < 0) {
		scan_problem(sc, JOURNAL_P_IO, true, f->name, 0, "open: %s", strerror(errno));
		return 0;
	}
	struct stat st;
	int rc = 0;
	if (fstat(sc->fd, &st) < 0) {
		scan_problem(sc, JOURNAL_P_IO, true, f->name, 0, "fstat: %s", strerror(errno));
		goto out;
	}
	sc->size = (uint64_t)st.st_size;
	sc->at = sc->len = 0;
	sc->counts.files++;
	uint32_t seed = seed_of(f->h.salt);
	bool compacted = f->h.fflags & JOURNAL_FILE_COMPACTED;
	uint64_t last = 0, off = JOURNAL_FILE_REC_LEN;
	struct journal_rec r;
	struct journal_loc loc = {f->name, f->n.writer, f->n.seq, 0};
	/* Each record is at least JOURNAL_SEGDONE_LEN bytes: the loop ends. */
	for (uint64_t i = 0; off < sc->size; i++) {
		ASSERT(i <= sc->size / JOURNAL_SEGDONE_LEN);
		uint32_t len;
		int r1 = scan_record(sc, f, off, seed, &r, &len);
		if (r1 < 0) {
			scan_problem(sc, JOURNAL_P_IO, true, f->name, off, "read: %s",
				     strerror(-r1));
			break;
		}
		if (r1 > 0)
			break;
		if (r.seq <= last || (compacted ? r.seq >= f->h.next_seq : r.seq < f->h.next_seq)) {
			scan_bad(sc, f, off, false, "record seq out of order");
			break;
		}
		last = r.seq;
		if (r.seq > sc->counts.max_seq[f->n.writer])
			sc->counts.max_seq[f->n.writer] = r.seq;
		sc->counts.records++;
		loc.offset = off;
		rc = sc->visit ? sc->visit(sc->vctx, &r, &loc) : 0;
		if (rc)
			break;
		off += len;
	}
out:
	fsutil_close(&sc->fd);
	return rc;
}

/* Reads f's FILE record into f->h and sets f->state. */
static void scan_header(struct scan *sc, struct jfile *f)
{
	f->state = JF_UNREADABLE;
	int fd = openat(sc->dirfd, f->name, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		scan_problem(sc, JOURNAL_P_IO, true, f->name, 0, "open: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	f->size = (uint64_t)st.st_size;
	uint8_t b[JOURNAL_FILE_REC_LEN];
	int r = f->size < sizeof(b) ? -ENODATA : fsutil_pread_all(fd, b, sizeof(b), 0);
	close(fd);
	const char *why = NULL;
	if (r == -ENODATA) {
		f->state = JF_TORN;
		scan_problem(sc, JOURNAL_P_TORN, false, f->name, 0,
			     "the file ends inside its FILE record (a crash as it was made)");
	} else if (r < 0) {
		scan_problem(sc, JOURNAL_P_IO, true, f->name, 0, "read: %s", strerror(-r));
	} else if ((why = file_rec_decode(b, &f->n, &f->h)) != NULL) {
		f->state = JF_BAD;
		scan_problem(sc, JOURNAL_P_BADFILE, true, f->name, 0, "%s: the file is not read",
			     why);
	} else {
		f->state = JF_OK;
	}
}

static bool scan_wanted(const struct scan *sc, const struct jname *n)
{
	return (sc->writer < 0 || n->writer == (unsigned)sc->writer) && n->seq <= sc->max_file_seq;
}

/* "wNN.lock": a writer's lock (journal_open), no stray. */
static bool lock_name(const char *s)
{
	return s[0] == 'w' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' &&
	       strcmp(s + 3, ".lock") == 0;
}

/* Lists journal/ into sc->files (sorted: writer, then seq), .tmp files included. */
static int scan_list(struct scan *sc)
{
	char **names;
	uint32_t count;
	int r = fsutil_dir_list(sc->dirfd, NULL, NULL, &names, &count);
	if (r < 0)
		return r;
	uint32_t cap = count < JOURNAL_FILES_MAX ? count : JOURNAL_FILES_MAX;
	sc->files = calloc(cap ? cap : 1, sizeof(*sc->files));
	if (!sc->files) {
		fsutil_names_free(names, count);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < count && r == 0; i++) {
		struct jname n;
		if (!jname_parse(names[i], &n)) {
			if (!lock_name(names[i]) && sc->writer < 0)
				scan_problem(sc, JOURNAL_P_STRAY, false, names[i], 0,
					     "not a journal file: ignored");
			continue;
		}
		if (!scan_wanted(sc, &n))
			continue;
		if (n.tmp && sc->writer < 0)
			scan_problem(sc, JOURNAL_P_STRAY, false, names[i], 0,
				     "what a crash left of a compaction: ignored");
		if (sc->nfiles >= cap) {
			scan_problem(sc, JOURNAL_P_IO, true, names[i], 0,
				     "more than %u journal files: not read", JOURNAL_FILES_MAX);
			r = -E2BIG;
			break;
		}
		struct jfile *f = &sc->files[sc->nfiles++];
		f->n = n;
		memcpy(f->name, names[i], JNAME_LEN + 1);
	}
	fsutil_names_free(names, count);
	return r;
}

/* Reads every header, then marks what each writer's highest compacted file supersedes. */
static void scan_headers(struct scan *sc)
{
	uint64_t compacted[JOURNAL_WRITERS_MAX] = {0};
	for (uint32_t i = 0; i < sc->nfiles; i++) {
		struct jfile *f = &sc->files[i];
		if (f->n.tmp)
			continue;
		scan_header(sc, f);
		if (f->state == JF_OK && (f->h.fflags & JOURNAL_FILE_COMPACTED) &&
		    f->n.seq > compacted[f->n.writer])
			compacted[f->n.writer] = f->n.seq;
	}
	for (uint32_t i = 0; i < sc->nfiles; i++) {
		struct jfile *f = &sc->files[i];
		if (f->n.tmp || f->n.seq >= compacted[f->n.writer])
			continue;
		if (f->state == JF_OK)
			scan_problem(sc, JOURNAL_P_SUPERSEDED, false, f->name, 0,
				     "below the compacted file of sequence %016" PRIx64
				     ": not read",
				     compacted[f->n.writer]);
		f->state = JF_SUPERSEDED;
	}
}

static int scan_init(struct scan *sc, int dirfd, int writer, uint64_t max_file_seq)
{
	memset(sc, 0, sizeof(*sc));
	sc->dirfd = dirfd;
	sc->writer = writer;
	sc->max_file_seq = max_file_seq;
	sc->fd = -1;
	sc->buf = malloc(READ_BUF_BYTES);
	return sc->buf ? 0 : -ENOMEM;
}

static void scan_free(struct scan *sc)
{
	free(sc->files);
	free(sc->buf);
	sc->files = NULL;
	sc->buf = NULL;
}

/* Lists, reads the headers, then the records of every file that is read. */
static int scan_run(struct scan *sc)
{
	int r = scan_list(sc);
	if (r < 0)
		return r;
	scan_headers(sc);
	for (uint32_t i = 0; i < sc->nfiles && r == 0; i++)
		if (!sc->files[i].n.tmp && sc->files[i].state == JF_OK)
			r = scan_file(sc, &sc->files[i]);
	return r;
}

int journal_replay(const char *spool_dir, journal_rec_fn rec, journal_problem_fn problem, void *ctx,
		   struct journal_replay_counts *counts)
{
	if (counts)
		memset(counts, 0, sizeof(*counts));
	int sfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return -errno;
	int dirfd = fsutil_open_subdir(sfd, "journal", false);
	close(sfd);
	if (dirfd == -ENOENT)
		return 0;
	if (dirfd < 0)
		return dirfd;
	struct scan sc;
	int r = scan_init(&sc, dirfd, -1, UINT64_MAX);
	if (r == 0) {
		sc.problem = problem;
		sc.pctx = ctx;
		sc.visit = rec;
		sc.vctx = ctx;
		r = scan_run(&sc);
		if (counts)
			*counts = sc.counts;
	}
	scan_free(&sc);
	close(dirfd);
	return r;
}

/* ---- the index ---- */

struct jseg {
	struct jseg *hnext; /* owned by the index: the bucket's chain */
	struct jmsg *msgs;  /* owned: its messages, through jmsg.snext */
	bool done;
	bool live;    /* compaction: still in active/ or ready/ */
	bool emitted; /* compaction: its SEGDONE is copied */
	char name[SEGMENT_NAME_LEN + 1];
};

struct jmsg {
	struct jmsg *hnext; /* borrowed: the bucket's chain (owned through the segment) */
	struct jmsg *snext; /* owned: the segment's next message */
	struct jseg *seg;   /* borrowed */
	uint64_t seg_off;
	uint32_t nrcpt;
	uint32_t pending;
	char qid[QID_LEN];
	struct journal_rcpt rcpt[];
};

struct journal_index {
	struct jmsg **mb; /* owned: message buckets */
	uint64_t nmb, nmsgs;
	struct jseg **sb; /* owned: segment buckets */
	uint64_t nsb, nsegs;
	uint64_t msgs_max;
};

static_assert(sizeof(struct jmsg) == 56 && sizeof(struct journal_rcpt) == 24,
	      "journal.h's MEMORY figures");

static uint64_t mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ h >> 33;
}

static uint64_t seg_hash(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; name[i]; i++)
		h = (h ^ (unsigned char)name[i]) * 0x100000001b3ull;
	return mix64(h);
}

static uint64_t msg_hash(const struct jseg *s, uint64_t off)
{
	return mix64((uint64_t)(uintptr_t)s ^ mix64(off));
}

int journal_index_new(uint64_t msgs_max, struct journal_index **out)
{
	struct journal_index *ix = calloc(1, sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	ix->mb = calloc(INDEX_BUCKETS_MIN, sizeof(*ix->mb));
	ix->sb = calloc(INDEX_BUCKETS_MIN, sizeof(*ix->sb));
	if (!ix->mb || !ix->sb) {
		journal_index_free(ix);
		return -ENOMEM;
	}
	ix->nmb = ix->nsb = INDEX_BUCKETS_MIN;
	ix->msgs_max = msgs_max;
	*out = ix;
	return 0;
}

static struct jseg *seg_find(const struct journal_index *ix, const char *name)
{
	struct jseg *s = ix->sb[seg_hash(name) & (ix->nsb - 1)];
	while (s && strcmp(s->name, name) != 0)
		s = s->hnext;
	return s;
}

static struct jmsg *msg_find(const struct journal_index *ix, const struct jseg *s, uint64_t off)
{
	struct jmsg *m = ix->mb[msg_hash(s, off) & (ix->nmb - 1)];
	while (m && (m->seg != s || m->seg_off != off))
		m = m->hnext;
	return m;
}

/* Doubles the message buckets when their chains average more than one message. */
static int grow_msgs(struct journal_index *ix)
{
	if (ix->nmsgs < ix->nmb)
		return 0;
	uint64_t n = ix->nmb * 2;
	struct jmsg **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	for (uint64_t i = 0; i < ix->nmb; i++)
		for (struct jmsg *m = ix->mb[i], *next; m; m = next) {
			next = m->hnext;
			uint64_t b = msg_hash(m->seg, m->seg_off) & (n - 1);
			m->hnext = nb[b];
			nb[b] = m;
		}
	free(ix->mb);
	ix->mb = nb;
	ix->nmb = n;
	return 0;
}

static int grow_segs(struct journal_index *ix)
{
	if (ix->nsegs < ix->nsb)
		return 0;
	uint64_t n = ix->nsb * 2;
	struct jseg **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	for (uint64_t i = 0; i < ix->nsb; i++)
		for (struct jseg *s = ix->sb[i], *next; s; s = next) {
			next = s->hnext;
			uint64_t b = seg_hash(s->name) & (n - 1);
			s->hnext = nb[b];
			nb[b] = s;
		}
	free(ix->sb);
	ix->sb = nb;
	ix->nsb = n;
	return 0;
}

static int seg_get(struct journal_index *ix, const char *name, struct jseg **out)
{
	struct jseg *s = seg_find(ix, name);
	if (s) {
		*out = s;
		return 0;
	}
	if (ix->nsegs >= ix->msgs_max)
		return -ENOSPC;
	int r = grow_segs(ix);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	memcpy(s->name, name, sizeof(s->name));
	uint64_t b = seg_hash(name) & (ix->nsb - 1);
	s->hnext = ix->sb[b];
	ix->sb[b] = s;
	ix->nsegs++;
	*out = s;
	return 0;
}

static int msg_get(struct journal_index *ix, struct jseg *s, const struct journal_rec *r,
		   struct jmsg **out)
{
	struct jmsg *m = msg_find(ix, s, r->seg_off);
	if (m) {
		if (m->nrcpt != r->nrcpt || strncmp(m->qid, r->qid, QID_LEN) != 0)
			return -EINVAL;
		*out = m;
		return 0;
	}
	if (ix->nmsgs >= ix->msgs_max)
		return -ENOSPC;
	int rc = grow_msgs(ix);
	if (rc < 0)
		return rc;
	m = calloc(1, sizeof(*m) + (size_t)r->nrcpt * sizeof(m->rcpt[0]));
	if (!m)
		return -ENOMEM;
	m->seg = s;
	m->seg_off = r->seg_off;
	m->nrcpt = m->pending = r->nrcpt;
	memcpy(m->qid, r->qid, strnlen(r->qid, QID_LEN));
	uint64_t b = msg_hash(s, r->seg_off) & (ix->nmb - 1);
	m->hnext = ix->mb[b];
	ix->mb[b] = m;
	m->snext = s->msgs;
	s->msgs = m;
	ix->nmsgs++;
	*out = m;
	return 0;
}

/* Frees the messages of s. */
static void seg_drop_msgs(struct journal_index *ix, struct jseg *s)
{
	for (struct jmsg *m = s->msgs, *next; m; m = next) {
		next = m->snext;
		struct jmsg **pp = &ix->mb[msg_hash(s, m->seg_off) & (ix->nmb - 1)];
		while (*pp != m)
			pp = &(*pp)->hnext;
		*pp = m->hnext;
		free(m);
		ix->nmsgs--;
	}
	s->msgs = NULL;
}

/* Whether r decides the recipient's state over what cur says (journal.h: MERGE). */
static bool rcpt_wins(const struct journal_rcpt *cur, const struct journal_rec *r)
{
	if (cur->state == 0)
		return true;
	bool fr = is_final(r->outcome), fc = is_final(cur->state);
	if (fr != fc)
		return fr;
	if (fr) {
		if (r->time_us != cur->time_us)
			return r->time_us < cur->time_us;
		if (r->outcome != cur->state)
			return r->outcome < cur->state;
		return r->attempts < cur->attempts;
	}
	if (r->attempts != cur->attempts)
		return r->attempts > cur->attempts;
	if (r->time_us != cur->time_us)
		return r->time_us > cur->time_us;
	return r->next_us > cur->next_us;
}

/* Whether r is the record that decided rc. */
static bool rcpt_is(const struct journal_rcpt *rc, const struct journal_rec *r)
{
	return rc->state == r->outcome && rc->time_us == r->time_us &&
	       rc->attempts == r->attempts && rc->next_us == r->next_us;
}

int journal_index_add(struct journal_index *ix, const struct journal_rec *r)
{
	ASSERT(journal_rec_check(r) == NULL);
	struct jseg *s;
	int rc = seg_get(ix, r->seg, &s);
	if (rc < 0)
		return rc;
	if (r->type == JOURNAL_REC_SEGDONE) {
		seg_drop_msgs(ix, s);
		s->done = true;
		return 0;
	}
	if (s->done)
		return 0; /* nothing of a done segment matters any more */
	struct jmsg *m;
	rc = msg_get(ix, s, r, &m);
	if (rc < 0)
		return rc;
	struct journal_rcpt *p = &m->rcpt[r->rcpt];
	if (r->type == JOURNAL_REC_BOUNCE) {
		p->flags |= JOURNAL_RCPT_BOUNCED;
		return 0;
	}
	if (!rcpt_wins(p, r))
		return 0;
	if (!is_final(p->state) && is_final(r->outcome))
		m->pending--;
	p->state = r->outcome;
	p->time_us = r->time_us;
	p->attempts = r->attempts;
	p->next_us = r->next_us;
	return 0;
}

static void msg_state(const struct jmsg *m, struct journal_msg_state *out)
{
	memset(out, 0, sizeof(*out));
	out->seg = m->seg->name;
	out->seg_off = m->seg_off;
	memcpy(out->qid, m->qid, QID_LEN);
	out->nrcpt = m->nrcpt;
	out->pending = m->pending;
	out->rcpt = m->rcpt;
}

bool journal_index_find(const struct journal_index *ix, const char *seg, uint64_t seg_off,
			struct journal_msg_state *out)
{
	const struct jseg *s = seg_find(ix, seg);
	if (!s)
		return false;
	if (s->done) {
		memset(out, 0, sizeof(*out));
		out->seg = s->name;
		out->seg_off = seg_off;
		out->segment_done = true;
		return true;
	}
	const struct jmsg *m = msg_find(ix, s, seg_off);
	if (!m)
		return false;
	msg_state(m, out);
	return true;
}

bool journal_index_segment_done(const struct journal_index *ix, const char *seg)
{
	const struct jseg *s = seg_find(ix, seg);
	return s && s->done;
}

int journal_index_done_segments(const struct journal_index *ix,
				int (*fn)(void *ctx, const char *seg), void *ctx)
{
	for (uint64_t i = 0; i < ix->nsb; i++)
		for (const struct jseg *s = ix->sb[i]; s; s = s->hnext) {
			int r = s->done ? fn(ctx, s->name) : 0;
			if (r)
				return r;
		}
	return 0;
}

int journal_index_foreach(const struct journal_index *ix,
			  int (*fn)(void *ctx, const struct journal_msg_state *m), void *ctx)
{
	struct journal_msg_state st;
	for (uint64_t i = 0; i < ix->nmb; i++)
		for (const struct jmsg *m = ix->mb[i]; m; m = m->hnext) {
			msg_state(m, &st);
			int r = fn(ctx, &st);
			if (r)
				return r;
		}
	return 0;
}

void journal_index_forget_segment(struct journal_index *ix, const char *seg)
{
	struct jseg **pp = &ix->sb[seg_hash(seg) & (ix->nsb - 1)];
	while (*pp && strcmp((*pp)->name, seg) != 0)
		pp = &(*pp)->hnext;
	struct jseg *s = *pp;
	if (!s)
		return;
	seg_drop_msgs(ix, s);
	*pp = s->hnext;
	free(s);
	ix->nsegs--;
}

uint64_t journal_index_msgs(const struct journal_index *ix)
{
	return ix->nmsgs;
}

void journal_index_free(struct journal_index *ix)
{
	if (!ix)
		return;
	for (uint64_t i = 0; ix->sb && i < ix->nsb; i++)
		for (struct jseg *s = ix->sb[i], *next; s; s = next) {
			next = s->hnext;
			for (struct jmsg *m = s->msgs, *mn; m; m = mn) {
				mn = m->snext;
				free(m);
			}
			free(s);
		}
	free(ix->sb);
	free(ix->mb);
	free(ix);
}

struct load {
	struct journal_index *ix;
	journal_problem_fn problem;
	void *ctx;
	uint64_t conflicts;
};

static int load_visit(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	struct load *l = ctx;
	int rc = journal_index_add(l->ix, r);
	if (rc != -EINVAL)
		return rc;
	l->conflicts++;
	if (l->problem) {
		struct journal_problem p = {
		    JOURNAL_P_CONFLICT, true, loc->file, loc->offset,
		    "the record's qid or recipient count disagrees with earlier records of "
		    "its message: skipped"};
		l->problem(l->ctx, &p);
	}
	return 0;
}

static void load_problem(void *ctx, const struct journal_problem *p)
{
	struct load *l = ctx;
	if (l->problem)
		l->problem(l->ctx, p);
}

int journal_index_load(const char *spool_dir, struct journal_index *ix, journal_problem_fn problem,
		       void *ctx, struct journal_replay_counts *counts)
{
	struct load l = {ix, problem, ctx, 0};
	int r = journal_replay(spool_dir, load_visit, load_problem, &l, counts);
	if (counts)
		counts->errors += l.conflicts;
	return r;
}

/* ---- the writer ---- */

struct journal {
	char *dir;   /* owned: the spool dir, for log lines */
	int spoolfd; /* the spool dir */
	int dirfd;   /* journal/ */
	int lockfd;  /* journal/wNN.lock, flock'ed */
	int fd;	     /* the file appended to; -1 after a failure until the next batch */
	unsigned writer;
	uint64_t file_bytes_max;
	uint64_t file_seq; /* the current (or last) file's sequence number */
	uint64_t size;	   /* of the current file: what was written to it */
	uint32_t seed;	   /* of the current file's records */
	uint64_t next_seq; /* the seq the next append gets */
	uint64_t durable_seq;
	uint8_t *buf;		 /* owned: JOURNAL_BUF_BYTES of encoded records */
	size_t len;		 /* bytes of buf in use */
	uint32_t buf_seed;	 /* the seed buf's records were encoded with */
	uint64_t buf_first;	 /* the seq of buf's first record */
	uint64_t bytes_other;	 /* of the writer's files but the current one */
	uint64_t compacted_size; /* what the last compaction left */
	struct journal_counts counts;
};

static uint64_t random_salt(void)
{
	uint64_t v;
	if (getrandom(&v, sizeof(v), 0) == (ssize_t)sizeof(v))
		return v;
	/* No getrandom: still differs per file, which is what matters most. */
	return real_us() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&v;
}

/* Problems met by the writer's own scans go to the log when they are errors. */
static void log_problem(void *ctx, const struct journal_problem *p)
{
	const struct journal *j = ctx;
	if (p->error)
		log_line("journal=%s/journal writer=%u file=%s offset=%" PRIu64 " problem=\"%s\"",
			 j->dir, j->writer, p->file, p->offset, p->text);
}

/*
 * Makes a new file and moves to it: named past the last one, its FILE record
 * written and fdatasync'ed, then journal/ fsynced, so that the name is
 * durable before any record in the file is reported durable.
 */
static int jfile_create(struct journal *j)
{
	char name[JNAME_LEN + 1];
	int fd = -1;
	uint64_t seq = j->file_seq;
	for (int i = 0; i < FILE_SEQ_TRIES && fd < 0; i++) {
		if (seq + 1 >= JOURNAL_SEQ_MAX)
			return -EOVERFLOW;
		jname_make(name, j->writer, ++seq, false);
		fd = openat(j->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (fd < 0 && errno != EEXIST)
			return -errno;
	}
	if (fd < 0)
		return -EEXIST;
	struct jfile_hdr h = {
	    .salt = random_salt(),
	    .writer = j->writer,
	    .file_seq = seq,
	    .next_seq = j->len ? j->buf_first : j->next_seq,
	    .time_us = real_us(),
	};
	uint8_t b[JOURNAL_FILE_REC_LEN];
	file_rec_encode(b, &h);
	struct iovec iov = {.iov_base = b, .iov_len = sizeof(b)};
	int r = fsutil_pwritev_all(fd, &iov, 1, 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (r == 0)
		r = fsutil_fsync(j->dirfd);
	if (r < 0) {
		close(fd);
		unlinkat(j->dirfd, name, 0);
		return r;
	}
	if (j->fd >= 0) {
		struct stat st;
		j->bytes_other += fstat(j->fd, &st) == 0 ? (uint64_t)st.st_size : j->size;
		close(j->fd);
	}
	j->fd = fd;
	j->file_seq = seq;
	j->size = JOURNAL_FILE_REC_LEN;
	j->seed = seed_of(h.salt);
	j->counts.files++;
	return 0;
}

/* The buffer was encoded for a file that failed: its CRCs again, with the new file's seed. */
static void buf_reseed(struct journal *j)
{
	for (size_t off = 0; off < j->len;) {
		uint8_t *p = j->buf + off;
		uint32_t len = le_get32(p + 8);
		ASSERT(len >= JOURNAL_SEGDONE_LEN && len <= j->len - off);
		le_put32(p + 12, rec_crc(j->seed, p, len));
		off += len;
	}
	j->buf_seed = j->seed;
}

/* The group commit: one pwrite, one fdatasync, then the batch is durable. */
static int write_batch(struct journal *j)
{
	struct iovec iov = {.iov_base = j->buf, .iov_len = j->len};
	j->counts.writes++;
	int r = fsutil_pwritev_all(j->fd, &iov, 1, j->size);
	if (r < 0)
		return r;
	if (fdatasync(j->fd) < 0)
		return -errno;
	j->counts.syncs++;
	j->size += j->len;
	j->len = 0;
	j->durable_seq = j->next_seq - 1;
	return 0;
}

int journal_sync(struct journal *j, uint64_t *durable_seq)
{
	int r = 0;
	if (j->len > 0) {
		const char *op = "create";
		if (j->fd < 0)
			r = jfile_create(j);
		if (r == 0) {
			op = "write";
			if (j->buf_seed != j->seed)
				buf_reseed(j);
			r = write_batch(j);
		}
		if (r < 0) {
			log_line("journal=%s/journal writer=%u action=%s records=%" PRIu64
				 " error=\"%s\" next=new_file",
				 j->dir, j->writer, op, j->next_seq - j->buf_first, strerror(-r));
			j->len = 0;
			if (j->fd >= 0) {
				struct stat st;
				j->bytes_other += fstat(j->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
				fsutil_close(&j->fd); /* never written again: journal.h */
			}
		}
	}
	if (r == 0 && j->fd >= 0 && j->size >= j->file_bytes_max) {
		int r2 = jfile_create(j);
		if (r2 < 0) /* appending goes on in this file; tried again next time */
			log_line("journal=%s/journal writer=%u action=rotate error=\"%s\"", j->dir,
				 j->writer, strerror(-r2));
	}
	if (durable_seq)
		*durable_seq = j->durable_seq;
	return r;
}

int journal_append(struct journal *j, struct journal_rec *r, uint64_t *seq)
{
	if (r->time_us == 0)
		r->time_us = real_us();
	if (journal_rec_check(r))
		return -EINVAL;
	if (j->next_seq >= JOURNAL_SEQ_MAX)
		return -EOVERFLOW;
	r->seq = j->next_seq;
	if (j->len == 0) {
		j->buf_seed = j->seed;
		j->buf_first = r->seq;
	}
	size_t n = journal_rec_encode(j->buf + j->len, JOURNAL_BUF_BYTES - j->len, r, j->buf_seed);
	if (n == 0)
		return -ENOBUFS;
	j->len += n;
	j->next_seq++;
	j->counts.appends++;
	*seq = r->seq;
	return 0;
}

uint64_t journal_durable_seq(const struct journal *j)
{
	return j->durable_seq;
}

void journal_counts(const struct journal *j, struct journal_counts *out)
{
	*out = j->counts;
	out->bytes = j->bytes_other + (j->fd >= 0 ? j->size : 0);
}

bool journal_compact_due(const struct journal *j)
{
	uint64_t bytes = j->bytes_other + (j->fd >= 0 ? j->size : 0);
	return bytes >= 2 * j->file_bytes_max && bytes >= 2 * j->compacted_size;
}

static int seq_visit(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	(void)loc;
	uint64_t *next = ctx;
	if (r->seq >= *next)
		*next = r->seq + 1;
	return 0;
}

/*
 * What a crash left of this writer: its .tmp, the files below its highest
 * compacted file, a last file torn before its FILE record was durable. Then
 * the next file and record sequence numbers, and the bytes of its files.
 */
static int open_recover(struct journal *j)
{
	struct scan sc;
	int r = scan_init(&sc, j->dirfd, (int)j->writer, UINT64_MAX);
	if (r == 0) {
		sc.problem = log_problem;
		sc.pctx = j;
		r = scan_list(&sc);
	}
	if (r == 0)
		scan_headers(&sc);
	bool removed = false, seen = false;
	struct jfile *last = NULL;
	for (uint32_t i = sc.nfiles; r == 0 && i-- > 0;) {
		struct jfile *f = &sc.files[i];
		bool torn_last = f->state == JF_TORN && !seen;
		seen |= !f->n.tmp;
		if (f->n.seq > j->file_seq)
			j->file_seq = f->n.seq;
		if (f->n.tmp || f->state == JF_SUPERSEDED || torn_last) {
			if (unlinkat(j->dirfd, f->name, 0) < 0 && errno != ENOENT)
				r = -errno;
			log_line("journal=%s/journal writer=%u action=recover removed=%s", j->dir,
				 j->writer, f->name);
			removed = true;
			continue;
		}
		j->bytes_other += f->size;
		if (!last && f->state == JF_OK)
			last = f;
		if ((f->h.fflags & JOURNAL_FILE_COMPACTED) && !j->compacted_size)
			j->compacted_size = f->size;
	}
	if (r == 0 && removed)
		r = fsutil_fsync(j->dirfd);
	j->next_seq = 1;
	if (r == 0 && last) {
		j->next_seq = last->h.next_seq;
		sc.visit = seq_visit;
		sc.vctx = &j->next_seq;
		if (!(last->h.fflags & JOURNAL_FILE_COMPACTED))
			r = scan_file(&sc, last);
	}
	scan_free(&sc);
	return r;
}

static void journal_free(struct journal *j)
{
	fsutil_close(&j->fd);
	fsutil_close(&j->lockfd);
	fsutil_close(&j->dirfd);
	fsutil_close(&j->spoolfd);
	free(j->buf);
	free(j->dir);
	free(j);
}

int journal_open(const char *spool_dir, unsigned writer, uint64_t file_bytes_max,
		 struct journal **out)
{
	if (writer >= JOURNAL_WRITERS_MAX ||
	    (file_bytes_max && file_bytes_max < JOURNAL_FILE_BYTES_MIN)) {
		log_line("journal=%s/journal writer=%u error=\"writer past %u or file bound under "
			 "%u bytes\"",
			 spool_dir, writer, JOURNAL_WRITERS_MAX - 1, JOURNAL_FILE_BYTES_MIN);
		return -EINVAL;
	}
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/journal", spool_dir) >= sizeof(path))
		return -ENAMETOOLONG;
	struct journal *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = j->lockfd = j->dirfd = j->spoolfd = -1;
	j->writer = writer;
	j->file_bytes_max = file_bytes_max ? file_bytes_max : JOURNAL_FILE_BYTES;
	j->dir = strdup(spool_dir);
	j->buf = malloc(JOURNAL_BUF_BYTES);
	const char *step = "memory";
	int r = j->dir && j->buf ? 0 : -ENOMEM;
	if (r == 0) {
		step = "mkdir";
		r = spool_mkdir(path);
	}
	if (r == 0) {
		step = "open";
		j->spoolfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		j->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = j->spoolfd < 0 || j->dirfd < 0 ? -errno : 0;
	}
	if (r == 0) {
		step = "lock";
		r = j->lockfd = fsutil_lock_writer(j->dirfd, writer);
	}
	if (r >= 0) {
		step = "recover";
		r = open_recover(j);
	}
	if (r == 0) {
		step = "create";
		r = jfile_create(j);
	}
	if (r < 0) {
		log_line("journal=%s/journal writer=%u action=open step=%s error=\"%s\"", spool_dir,
			 writer, step, strerror(-r));
		journal_free(j);
		return r;
	}
	j->durable_seq = j->next_seq - 1; /* what was read back is durable */
	*out = j;
	return 0;
}

int journal_close(struct journal *j)
{
	if (!j)
		return 0;
	int r = journal_sync(j, NULL);
	journal_free(j);
	return r;
}

int journal_delete_segment(const char *spool_dir, const char *seg)
{
	unsigned w;
	uint64_t run;
	uint32_t seq;
	if (strlen(seg) != SEGMENT_NAME_LEN || !segment_name_parse(seg, &w, &run, &seq))
		return -EINVAL;
	int sfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return -errno;
	static const char *const subs[] = {"ready", "active"};
	int r = 0;
	for (size_t i = 0; i < 2 && r == 0; i++) {
		int d = fsutil_open_subdir(sfd, subs[i], false);
		if (d == -ENOENT)
			continue;
		if (d < 0) {
			r = d;
			break;
		}
		if (unlinkat(d, seg, 0) < 0 && errno != ENOENT)
			r = -errno;
		/* Its absence durable, even when an earlier try unlinked it: journal.h. */
		if (r == 0)
			r = fsutil_fsync(d);
		close(d);
	}
	close(sfd);
	return r;
}

/* ---- compaction ---- */

struct compact {
	struct journal *j;
	struct journal_index *ix;
	int fd; /* the .tmp */
	uint32_t seed;
	uint64_t off; /* of the .tmp: bytes written */
	size_t len;   /* of j->buf in use */
	uint64_t kept;
	int err;
};

static int compact_flush(struct compact *c)
{
	struct iovec iov = {.iov_base = c->j->buf, .iov_len = c->len};
	int r = c->len ? fsutil_pwritev_all(c->fd, &iov, 1, c->off) : 0;
	c->off += c->len;
	c->len = 0;
	return r;
}

static int compact_emit(struct compact *c, const struct journal_rec *r)
{
	size_t n = journal_rec_encode(c->j->buf + c->len, JOURNAL_BUF_BYTES - c->len, r, c->seed);
	if (n == 0) {
		int e = compact_flush(c);
		if (e < 0)
			return e;
		n = journal_rec_encode(c->j->buf, JOURNAL_BUF_BYTES, r, c->seed);
		ASSERT(n > 0);
	}
	c->len += n;
	c->kept++;
	return 0;
}

static int compact_index(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	(void)loc;
	struct compact *c = ctx;
	int rc = journal_index_add(c->ix, r);
	return rc == -EINVAL ? 0 : rc; /* a conflicting record is dropped, as replay skips it */
}

/* Copies r when it decides a state of a live segment (journal.h: COMPACTION). */
static int compact_copy(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	(void)loc;
	struct compact *c = ctx;
	struct jseg *s = seg_find(c->ix, r->seg);
	if (!s || !s->live)
		return 0;
	if (r->type == JOURNAL_REC_SEGDONE) {
		if (s->emitted)
			return 0;
		s->emitted = true;
		return compact_emit(c, r);
	}
	struct jmsg *m = s->done ? NULL : msg_find(c->ix, s, r->seg_off);
	if (!m || m->nrcpt != r->nrcpt || strncmp(m->qid, r->qid, QID_LEN) != 0)
		return 0;
	struct journal_rcpt *p = &m->rcpt[r->rcpt];
	uint8_t bit = r->type == JOURNAL_REC_BOUNCE ? RCPT_EMIT_BOUNCE : RCPT_EMIT_RESULT;
	if ((p->flags & bit) || (r->type == JOURNAL_REC_RESULT && !rcpt_is(p, r)))
		return 0;
	p->flags |= bit;
	return compact_emit(c, r);
}

/* Whether segment name is in directory dfd: 1, 0, or -errno (not knowing is no answer). */
static int seg_present(int dfd, const char *name)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

/*
 * Which segments of the index are still on disk. Before a record is dropped
 * for a segment that is gone, its absence is made durable (ready/ and
 * active/ fsynced): a deletion not yet durable could come back after a power
 * cut, with its SEGDONE compacted away. Without ready/ or active/ the spool
 * dir is not what the journal was written for, and nothing is dropped.
 */
static int compact_live(struct compact *c)
{
	int rdy = fsutil_open_subdir(c->j->spoolfd, "ready", false);
	int act = fsutil_open_subdir(c->j->spoolfd, "active", false);
	int r = rdy < 0 ? rdy : act < 0 ? act : 0;
	bool gone = false;
	struct journal_index *ix = c->ix;
	for (uint64_t i = 0; r == 0 && i < ix->nsb; i++)
		for (struct jseg *s = ix->sb[i]; r == 0 && s; s = s->hnext) {
			int a = seg_present(rdy, s->name),
			    b = a == 1 ? 1 : seg_present(act, s->name);
			r = a < 0 ? a : b < 0 ? b : 0;
			s->live = a == 1 || b == 1;
			gone |= !s->live;
		}
	if (r == 0 && gone)
		r = fsutil_fsync(rdy);
	if (r == 0 && gone)
		r = fsutil_fsync(act);
	if (rdy >= 0)
		close(rdy);
	if (act >= 0)
		close(act);
	return r;
}

/* Writes the .tmp: a COMPACTED FILE record, then the records that decide. */
static int compact_write(struct compact *c, struct scan *sc, const char *tmp, uint64_t a)
{
	struct journal *j = c->j;
	c->fd = openat(j->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (c->fd < 0)
		return -errno;
	struct jfile_hdr h = {
	    .salt = random_salt(),
	    .writer = j->writer,
	    .fflags = JOURNAL_FILE_COMPACTED,
	    .file_seq = a,
	    .next_seq = j->next_seq,
	    .time_us = real_us(),
	};
	file_rec_encode(j->buf, &h);
	c->seed = seed_of(h.salt);
	c->len = JOURNAL_FILE_REC_LEN;
	sc->visit = compact_copy;
	int r = 0;
	for (uint32_t i = 0; i < sc->nfiles && r == 0; i++)
		if (!sc->files[i].n.tmp && sc->files[i].state == JF_OK)
			r = scan_file(sc, &sc->files[i]);
	if (r == 0)
		r = compact_flush(c);
	if (r == 0 && fdatasync(c->fd) < 0)
		r = -errno;
	fsutil_close(&c->fd);
	return r;
}

/* A test may stop compaction after step n (journal.h), leaving the files as a crash would. */
static bool compact_stop(unsigned n)
{
	return journal_test_compact_stop && journal_test_compact_stop == n;
}

/* Steps 2 to 4 of journal.h's COMPACTION, once the .tmp is durable. */
static int compact_switch(struct journal *j, struct scan *sc, const char *tmp, uint64_t a)
{
	char name[JNAME_LEN + 1];
	jname_make(name, j->writer, a, false);
	if (renameat(j->dirfd, tmp, j->dirfd, name) < 0)
		return -errno;
	if (compact_stop(3))
		return -ECANCELED;
	int r = fsutil_fsync(j->dirfd);
	if (r < 0 || compact_stop(4))
		return r < 0 ? r : -ECANCELED;
	unsigned unlinked = 0;
	for (uint32_t i = 0; i < sc->nfiles; i++) {
		const struct jfile *f = &sc->files[i];
		if (f->n.tmp || f->n.seq >= a)
			continue;
		if (unlinkat(j->dirfd, f->name, 0) < 0 && errno != ENOENT)
			return -errno;
		if (compact_stop(5 + unlinked++))
			return -ECANCELED;
	}
	return fsutil_fsync(j->dirfd);
}

int journal_compact(struct journal *j)
{
	int r = journal_sync(j, NULL);
	if (r < 0)
		return r;
	/* Step 0: seal. From here on the files up to seq a never change. */
	uint64_t a = j->file_seq;
	const char *step = "seal";
	r = jfile_create(j);
	if (r == 0 && compact_stop(1))
		return -ECANCELED;
	struct compact c = {.j = j, .fd = -1};
	struct scan sc;
	char tmp[JNAME_LEN + 1];
	jname_make(tmp, j->writer, a, true);
	if (r == 0)
		r = scan_init(&sc, j->dirfd, (int)j->writer, a);
	else
		memset(&sc, 0, sizeof(sc));
	if (r == 0) {
		step = "index";
		sc.problem = log_problem;
		sc.pctx = j;
		r = journal_index_new(JOURNAL_INDEX_MSGS, &c.ix);
	}
	if (r == 0) {
		sc.visit = compact_index;
		sc.vctx = &c;
		r = scan_run(&sc);
	}
	if (r == 0) {
		step = "live";
		r = compact_live(&c);
	}
	if (r == 0) {
		step = "write";
		r = compact_write(&c, &sc, tmp, a);
		if (r < 0)
			unlinkat(j->dirfd, tmp, 0);
	}
	if (r == 0 && compact_stop(2))
		r = -ECANCELED;
	else if (r == 0) {
		step = "switch";
		r = compact_switch(j, &sc, tmp, a);
	}
	if (r == 0) {
		j->bytes_other = j->compacted_size = c.off;
		j->counts.compactions++;
		log_line("journal=%s/journal writer=%u action=compact file_seq=%" PRIu64
			 " records=%" PRIu64 " bytes=%" PRIu64,
			 j->dir, j->writer, a, c.kept, c.off);
	} else if (r != -ECANCELED) {
		log_line("journal=%s/journal writer=%u action=compact step=%s error=\"%s\"", j->dir,
			 j->writer, step, strerror(-r));
	}
	journal_index_free(c.ix);
	scan_free(&sc);
	return r;
}
