/*
 * fuzz_spool.c - the spool reader (spool_reader_open/next/read) over files
 * made from the input.
 *
 * Input: byte 0 is the mode, byte 1 the failing call of the second read's
 * sink (0: no second read), the rest is the file content.
 *   bit 0  fix the CRCs: walk the records by their rec_len and write the
 *          CRC each should have (seed: 0 for the first, the salt at offset
 *          64 after it), so that mutations reach past the CRC check into
 *          the header, envelope and part logic
 *   bit 1  the content is a maildir file (maildir/new/) instead of a
 *          segment (active/)
 *   bit 2  also a copy as the next segment of the same run (ready/), or a
 *          maildir/tmp/ leftover
 *   bit 3  also a copy as a segment of a later run (ready/)
 * The files go into a scratch spool directory under $TMPDIR (or /tmp),
 * made once and emptied after each input.
 *
 * Checked for every message the reader yields: a qid, 1..RCPT_LIMIT_MAX
 * recipients packed in rcpts_len bytes, a trace no longer than
 * SPOOL_TRACE_MAX, and that spool_reader_read streams exactly trace_len +
 * body_size bytes (trace, then body; body alone body_size), or returns the
 * sink's own value when the sink stops it. The counts agree with what was
 * yielded and reported; every problem has a file and a text.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fuzz.h"
#include "spool.h"
#include "spool_reader.h"

#define SEG1 "w00-0000000000000001-00000001.seg"
#define SEG2 "w00-0000000000000001-00000002.seg"
#define SEG3 "w00-0000000000000002-00000001.seg"
#define MD1  "1700000000.M1P1Q.mx.test"

static char base[512];
static const char *const files[] = {
    "active/" SEG1, "ready/" SEG2, "ready/" SEG3, "maildir/new/" MD1, "maildir/tmp/Q.w00",
};
static const char *const dirs[] = {"active",	  "ready",	 "maildir/new",
				   "maildir/cur", "maildir/tmp", "maildir"};

static void path(char *dst, size_t cap, const char *rel)
{
	snprintf(dst, cap, "%s/%s", base, rel);
}

static void cleanup(void)
{
	char p[1024];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path(p, sizeof(p), files[i]);
		unlink(p);
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		path(p, sizeof(p), dirs[i]);
		rmdir(p);
	}
	rmdir(base);
}

static void setup(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(base, sizeof(base), "%s/fuzz-spool-XXXXXX", t && *t ? t : "/tmp");
	FUZZ_CHECK(mkdtemp(base), "mkdtemp %s", base);
	char p[1024];
	static const char *const make[] = {"active",	  "ready",	 "maildir",
					   "maildir/new", "maildir/cur", "maildir/tmp"};
	for (size_t i = 0; i < sizeof(make) / sizeof(make[0]); i++) {
		path(p, sizeof(p), make[i]);
		FUZZ_CHECK(mkdir(p, 0700) == 0, "mkdir %s", p);
	}
	atexit(cleanup);
}

static void put_file(const char *rel, const uint8_t *p, size_t n)
{
	char fp[1024];
	path(fp, sizeof(fp), rel);
	int fd = open(fp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0, "open %s", fp);
	FUZZ_CHECK(n == 0 || write(fd, p, n) == (ssize_t)n, "write %s", fp);
	close(fd);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_crcs(uint8_t *p, size_t n)
{
	uint32_t seed = 0;
	for (size_t off = 0; n - off >= SPOOL_REC_HDR_LEN;) {
		uint32_t len = get32(p + off + 12);
		if (len < SPOOL_REC_HDR_LEN || len > n - off)
			break;
		uint32_t c = crc32c(seed, p + off, 16);
		put32(p + off + 16, crc32c(c, p + off + 20, len - 20));
		if (off == 0 && n >= SPOOL_REC_HDR_LEN + 8)
			seed = crc32c(0, p + SPOOL_REC_HDR_LEN, 8);
		off += len;
	}
}

struct counter {
	unsigned problems, errors;
};

static void on_problem(void *ctx, const struct spool_problem *p)
{
	struct counter *c = ctx;
	FUZZ_CHECK(p->file && p->text && strlen(p->text) < 1024, "problem without file or text");
	FUZZ_CHECK(p->kind >= SPOOL_P_ORPHAN && p->kind <= SPOOL_P_IO, "problem kind %d",
		   (int)p->kind);
	c->problems++;
	c->errors += p->error;
}

struct sink {
	uint64_t bytes;
	unsigned calls, fail_on;
};

static int sink_fn(void *ctx, const uint8_t *p, size_t len)
{
	struct sink *k = ctx;
	FUZZ_CHECK(p && len > 0, "empty sink call");
	k->bytes += len;
	if (++k->calls == k->fail_on)
		return 7;
	return 0;
}

static void check_item(struct spool_reader *r, const struct spool_item *it, unsigned fail_on)
{
	const struct envelope *e = &it->env;
	size_t q = strnlen(e->qid, sizeof(e->qid));
	FUZZ_CHECK(q > 0 && q <= QID_LEN, "qid of %zu octets", q);
	FUZZ_CHECK(it->file && it->nparts >= 1, "item file %p nparts %u", (const void *)it->file,
		   it->nparts);
	FUZZ_CHECK(e->nrcpt >= 1 && e->nrcpt <= RCPT_LIMIT_MAX, "nrcpt %u", e->nrcpt);
	FUZZ_CHECK(e->rcpts && e->rcpts_len <= e->rcpts_cap, "rcpts %u of %u", e->rcpts_len,
		   e->rcpts_cap);
	size_t used = 0;
	for (uint32_t i = 0; i < e->nrcpt; i++) {
		FUZZ_CHECK(used < e->rcpts_len, "recipient %u past rcpts_len", i);
		const char *z = memchr(e->rcpts + used, 0, e->rcpts_len - used);
		FUZZ_CHECK(z, "recipient %u not terminated", i);
		used = (size_t)(z - e->rcpts) + 1;
	}
	FUZZ_CHECK(used == e->rcpts_len, "rcpts_len %u, recipients take %zu", e->rcpts_len, used);
	FUZZ_CHECK(it->trace_len <= SPOOL_TRACE_MAX, "trace of %llu bytes",
		   (unsigned long long)it->trace_len);

	struct sink k = {0};
	int rc = spool_reader_read(r, SPOOL_READ_TRACE | SPOOL_READ_BODY, sink_fn, &k);
	FUZZ_CHECK(rc == 0, "spool_reader_read: %d", rc);
	FUZZ_CHECK(k.bytes == it->trace_len + it->body_size,
		   "read %llu bytes, the item says trace %llu + body %llu",
		   (unsigned long long)k.bytes, (unsigned long long)it->trace_len,
		   (unsigned long long)it->body_size);
	k = (struct sink){0};
	rc = spool_reader_read(r, SPOOL_READ_BODY, sink_fn, &k);
	FUZZ_CHECK(rc == 0 && k.bytes == it->body_size, "body read %d, %llu of %llu bytes", rc,
		   (unsigned long long)k.bytes, (unsigned long long)it->body_size);
	if (fail_on) {
		unsigned calls = k.calls;
		k = (struct sink){.fail_on = fail_on};
		rc = spool_reader_read(r, SPOOL_READ_BODY, sink_fn, &k);
		FUZZ_CHECK(rc == (fail_on <= calls ? 7 : 0), "read with a failing sink: %d", rc);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	if (!base[0])
		setup();
	unsigned mode = data[0], fail_on = data[1];
	size_t n = size - 2;
	uint8_t *p = fuzz_alloc(n);
	memcpy(p, data + 2, n);
	if (mode & 1)
		fix_crcs(p, n);
	if (mode & 2) {
		put_file(files[3], p, n);
		if (mode & 4)
			put_file(files[4], p, n);
	} else {
		put_file(files[0], p, n);
		if (mode & 4)
			put_file(files[1], p, n);
	}
	if (mode & 8)
		put_file(files[2], p, n);
	free(p);

	struct counter c = {0};
	struct spool_reader *r;
	int rc = spool_reader_open(base, on_problem, &c, &r);
	FUZZ_CHECK(rc == 0, "spool_reader_open: %d", rc);
	const struct spool_item *it;
	uint64_t yielded = 0;
	while ((rc = spool_reader_next(r, &it)) > 0) {
		yielded++;
		check_item(r, it, fail_on);
	}
	FUZZ_CHECK(rc == 0, "spool_reader_next: %d", rc);
	struct spool_reader_counts counts;
	spool_reader_counts(r, &counts);
	FUZZ_CHECK(counts.messages == yielded, "counts.messages %llu, yielded %llu",
		   (unsigned long long)counts.messages, (unsigned long long)yielded);
	FUZZ_CHECK(counts.errors == c.errors, "counts.errors %llu, reported %u",
		   (unsigned long long)counts.errors, c.errors);
	spool_reader_close(r);

	char fp[1024];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path(fp, sizeof(fp), files[i]);
		unlink(fp);
	}
	return 0;
}
