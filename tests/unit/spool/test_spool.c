/*
 * test_spool.c - the spool (core/spool.c) driven directly: round trips in
 * both formats (multi-part messages, more slices than IOV_MAX), the trace
 * header, aborts and orphans, protocol errors, recovery of a torn or
 * corrupt tail at every offset, rotation with a message spanning segments,
 * a batch that fills the iovec array many times over, a segment with a
 * name in active/ and in ready/ (read once, recovered), and a write failure
 * (EFBIG from RLIMIT_FSIZE) after which the spool goes on.
 */
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

#include "crc32c.h"
#include "helpers.h"
#include "log.h"
#include "trace.h"

static uint64_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

/* The one segment in dir/sub, as a path. */
static void one_segment(const char *dir, const char *sub, char *path, size_t cap)
{
	char d[512], name[256];
	snprintf(d, sizeof(d), "%s/%s", dir, sub);
	t_first_file(d, name, sizeof(name));
	assert_true(name[0] != 0);
	snprintf(path, cap, "%s/%s", d, name);
}

static unsigned count_in(const char *dir, const char *sub)
{
	char d[512];
	snprintf(d, sizeof(d), "%s/%s", dir, sub);
	return t_count_files(d);
}

static void write_ok(struct spool *sp, struct msg *m)
{
	assert_int_equal(spool_write(sp, m), 0);
	t_msg_free(m);
}

/* ---- crc32c ---- */

static void test_crc32c(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		uint32_t crc;
	} v[] = {
	    {"", 0x00000000},
	    {"a", 0xC1D04330},
	    {"123456789", 0xE3069283},
	    {"The quick brown fox jumps over the lazy dog", 0x22620404},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n = strlen(v[i].in);
		assert_int_equal(crc32c(0, v[i].in, n), v[i].crc);
		assert_int_equal(crc32c_sw(0, v[i].in, n), v[i].crc);
	}
	uint8_t zeros[32] = {0}, buf[4096];
	assert_int_equal(crc32c(0, zeros, 32), 0x8A9136AA); /* RFC 3720 B.4 */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	/* Hardware and table agree at every alignment and length; chaining works. */
	for (size_t off = 0; off < 16; off++)
		for (size_t len = 0; len < 600; len += 13) {
			uint32_t a = crc32c(0, buf + off, len);
			assert_int_equal(a, crc32c_sw(0, buf + off, len));
			assert_int_equal(a, crc32c(crc32c(0, buf + off, len / 3),
						   buf + off + len / 3, len - len / 3));
		}
}

/* ---- trace header ---- */

static void test_trace(void **state)
{
	(void)state;
	static const struct {
		uint32_t flags;
		const char *tls;
		const char *want;
	} v[] = {
	    {0, "",
	     "Received: from he?lo? ([192.0.2.7]:4242)\r\n"
	     "\tby mx.example.org (mxring) with SMTP id 0123456789ABCDEF;\r\n"
	     "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"},
	    {ENV_ESMTP, "",
	     "Received: from he?lo? ([192.0.2.7]:4242)\r\n"
	     "\tby mx.example.org (mxring) with ESMTP id 0123456789ABCDEF;\r\n"
	     "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"},
	    {ENV_ESMTP, "TLSv1.3 TLS_AES_128_GCM_SHA256",
	     "Received: from he?lo? ([192.0.2.7]:4242)\r\n"
	     "\tby mx.example.org (mxring) with ESMTPS id 0123456789ABCDEF\r\n"
	     "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256); Tue, 14 Nov 2023 22:13:20 "
	     "+0000\r\n"},
	    {ENV_ESMTP | ENV_SMTPUTF8, "",
	     "Received: from he?lo? ([192.0.2.7]:4242)\r\n"
	     "\tby mx.example.org (mxring) with UTF8SMTP id 0123456789ABCDEF;\r\n"
	     "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"},
	    {ENV_ESMTP | ENV_SMTPUTF8, "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256",
	     "Received: from he?lo? ([192.0.2.7]:4242)\r\n"
	     "\tby mx.example.org (mxring) with UTF8SMTPS id 0123456789ABCDEF\r\n"
	     "\t(using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256); Tue, 14 Nov 2023 "
	     "22:13:20 +0000\r\n"},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct envelope env;
		memset(&env, 0, sizeof(env));
		strcpy(env.qid, "0123456789ABCDEF");
		env.time_us = 1700000000999999ull;
		strcpy(env.client_addr, "192.0.2.7");
		env.client_port = 4242;
		strcpy(env.helo, "he\x01lo\xff");
		strcpy(env.tls, v[i].tls);
		env.flags = v[i].flags;
		char out[SPOOL_TRACE_MAX];
		size_t n = trace_format(out, sizeof(out), &env, "mx.example.org");
		assert_int_equal(n, strlen(v[i].want));
		assert_string_equal(out, v[i].want);
	}
	/* The longest fields still fit. */
	struct envelope env;
	memset(&env, 'x', sizeof(env));
	env.qid[QID_LEN] = env.client_addr[CLIENT_ADDR_MAX - 1] = env.helo[HELO_MAX] = 0;
	env.tls[TLS_DESC_MAX - 1] = env.myhostname[DOMAIN_MAX] = 0;
	env.flags = ENV_SMTPUTF8;
	env.time_us = 0;
	char out[SPOOL_TRACE_MAX];
	assert_true(trace_format(out, sizeof(out), &env, "h") > 700);
}

/* ---- round trips ---- */

/* Five transactions: empty body, plain, three parts, > IOV_MAX slices, two rcpts. */
static void roundtrip(enum spool_format fmt)
{
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, fmt, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	static struct t_txn t[5];
	t_txn_init(&t[0], "A000000000000000", 0, 1, 1);
	t_txn_init(&t[1], "B000000000000000", 100, 2, 1);
	t_txn_init(&t[2], "C000000000000000", 10000, 3, 3);
	t_txn_init(&t[3], "D000000000000000", 5000, 4, 1);
	t_txn_init(&t[4], "E", 777, 5, 2);

	struct msg *m[8];
	m[0] = t_msg(&t[2], MSG_PART, 0, 0, 3000, 100);
	m[1] = t_msg(&t[0], MSG_FINAL, 0, 0, 0, 1);
	m[2] = t_msg(&t[2], MSG_PART, 1, 3000, 4000, 33);
	m[3] = t_msg(&t[1], MSG_FINAL, 0, 0, 100, 7);
	m[4] = t_msg(&t[3], MSG_FINAL, 0, 0, 5000, 1); /* 5000 slices */
	m[5] = t_msg(&t[2], MSG_FINAL, 2, 7000, 3000, 1000);
	m[6] = t_msg(&t[4], MSG_FINAL, 0, 0, 777, 3);
	for (int i = 0; i < 7; i++)
		write_ok(sp, m[i]);
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_syncs(sp), 1);

	/* Readable while the writer is still open (active segment). */
	static struct t_read rd;
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(t_read_all(dir, &rd), 0);
		assert_int_equal(rd.n, 5);
		assert_int_equal(rd.errors, 0);
		assert_int_equal(rd.counts.orphans, 0);
		for (int i = 0; i < 5; i++)
			t_check_msg(t_find(&rd, t[i].env.qid), &t[i], cfg.myhostname);
		assert_int_equal(t_find(&rd, "C000000000000000")->nparts,
				 fmt == SPOOL_SEGMENT ? 3 : 1);
		t_read_free(&rd);
		if (pass == 0)
			assert_int_equal(spool_close(sp), 0);
	}
	if (fmt == SPOOL_SEGMENT) {
		assert_int_equal(count_in(dir, "active"), 0);
		assert_int_equal(count_in(dir, "ready"), 1);
	} else {
		assert_int_equal(count_in(dir, "maildir/new"), 5);
		assert_int_equal(count_in(dir, "maildir/tmp"), 0);
	}
	for (int i = 0; i < 5; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

static void test_segment_roundtrip(void **state)
{
	(void)state;
	roundtrip(SPOOL_SEGMENT);
}

static void test_maildir_roundtrip(void **state)
{
	(void)state;
	roundtrip(SPOOL_MAILDIR);
}

/* The maildir file: envelope lines, trace, body; abort and recovery clean tmp/. */
static void test_maildir_layout(void **state)
{
	(void)state;
	char dir[256], path[768];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_MAILDIR, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn a, x;
	t_txn_init(&a, "AAAA", 50, 7, 2);
	t_txn_init(&x, "XXXX", 300, 8, 1);
	strcpy(a.env.from, "we\\ird\x01@example.net");
	write_ok(sp, t_msg(&a, MSG_FINAL, 0, 0, 50, 10));
	write_ok(sp, t_msg(&x, MSG_PART, 0, 0, 100, 10));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(count_in(dir, "maildir/tmp"), 1);
	write_ok(sp, t_msg(&x, MSG_ABORT, 0, 0, 0, 0));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(count_in(dir, "maildir/tmp"), 0);

	char name[256];
	snprintf(path, sizeof(path), "%s/maildir/new", dir);
	t_first_file(path, name, sizeof(name));
	assert_non_null(strstr(name, "QAAAA.mx.example.org"));
	assert_true(strncmp(name, "1700000000.M123463QAAAA", 23) == 0);
	snprintf(path, sizeof(path), "%s/maildir/new/%s", dir, name);
	uint8_t *buf;
	size_t len;
	assert_int_equal(t_read_file(path, &buf, &len), 0);
	const char *want =
	    "Return-Path: <we\\x5cird\\x01@example.net>\r\nX-Mxring-Envelope: qid=AAAA "
	    "time=1700000000123463 client=192.0.2.7 port=1031 helo=client7.example "
	    "tls=TLSv1.3\\x20TLS_AES_128_GCM_SHA256 host=mx.example.org flags=0x1 "
	    "rcpts=2 trace=";
	assert_true(len > strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	assert_non_null(strstr((char *)buf,
			       "\r\nX-Mxring-Rcpt: <rcpt0-7@example.org>\r\n"
			       "X-Mxring-Rcpt: <rcpt1-7@example.org>\r\nReceived: from "));
	assert_memory_equal(buf + len - 50, a.body, 50);
	free(buf);

	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	t_check_msg(&rd.msg[0], &a, cfg.myhostname);
	t_read_free(&rd);
	assert_int_equal(spool_close(sp), 0);

	/* Leftovers of this writer in tmp/ go at open; other files stay. */
	const char *left[] = {"QQQ.w00", "RRR.w03", "foreign"};
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/maildir/tmp/%s", dir, left[i]);
		assert_int_equal(t_write_file(path, (const uint8_t *)"x", 1), 0);
	}
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	assert_int_equal(count_in(dir, "maildir/tmp"), 1);
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	assert_int_equal(rd.counts.orphans, 1); /* "foreign" */
	assert_int_equal(rd.errors, 0);
	t_read_free(&rd);
	assert_int_equal(spool_close(sp), 0);
	t_txn_free(&a);
	t_txn_free(&x);
	t_rmdir(dir);
}

/* ---- aborts, orphans and protocol errors ---- */

static void test_abort_orphans(void **state)
{
	(void)state;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn x, y;
	t_txn_init(&x, "XXXX", 300, 1, 1);
	t_txn_init(&y, "YYYY", 300, 2, 1);
	write_ok(sp, t_msg(&x, MSG_PART, 0, 0, 100, 10));
	write_ok(sp, t_msg(&x, MSG_PART, 1, 100, 100, 10));
	write_ok(sp, t_msg(&y, MSG_FINAL, 0, 0, 300, 10));
	write_ok(sp, t_msg(&x, MSG_ABORT, 0, 0, 0, 0));
	assert_int_equal(spool_sync(sp), 0);
	/* Forgotten: a later part of X has nothing to join. */
	struct msg *m = t_msg(&x, MSG_FINAL, 2, 200, 100, 10);
	assert_int_equal(spool_write(sp, m), -ENOBUFS);
	t_msg_free(m);
	assert_int_equal(spool_sync(sp), 0);

	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	t_check_msg(&rd.msg[0], &y, "");
	assert_int_equal(rd.counts.orphans, 2);
	assert_int_equal(rd.orphan_reports, 1);
	assert_int_equal(rd.errors, 0);
	t_read_free(&rd);
	assert_int_equal(spool_close(sp), 0);
	t_txn_free(&x);
	t_txn_free(&y);
	t_rmdir(dir);
}

static void test_protocol_errors(void **state)
{
	(void)state;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 2);
	struct spool *sp, *sp2, *sp1;
	assert_int_equal(spool_open(&cfg, 0, 6, 2, &sp), 0);
	/* One process per writer: the lock says so. */
	assert_int_equal(spool_open(&cfg, 0, 6, 2, &sp2), -EBUSY);
	assert_int_equal(spool_open(&cfg, 1, 6, 2, &sp1), 0);
	assert_int_equal(spool_close(sp1), 0);

	struct t_txn a, b, c;
	t_txn_init(&a, "AAAA", 300, 1, 1);
	t_txn_init(&b, "BBBB", 300, 2, 1);
	t_txn_init(&c, "CCCC", 300, 3, 1);
	struct msg *m;
	write_ok(sp, t_msg(&a, MSG_PART, 0, 0, 100, 10));
	write_ok(sp, t_msg(&b, MSG_PART, 0, 0, 100, 10));
	/* In-flight table full (inflight_max 2): the least recently written (A) goes. */
	write_ok(sp, t_msg(&c, MSG_PART, 0, 0, 100, 10));
	m = t_msg(&a, MSG_PART, 1, 100, 100, 10);
	assert_int_equal(spool_write(sp, m), -ENOBUFS);
	t_msg_free(m);
	/* Part out of order: the message fails, its FINAL too. */
	m = t_msg(&b, MSG_PART, 2, 100, 100, 10);
	assert_int_equal(spool_write(sp, m), -EPROTO);
	t_msg_free(m);
	m = t_msg(&b, MSG_FINAL, 1, 100, 200, 10);
	assert_int_equal(spool_write(sp, m), -EPROTO);
	t_msg_free(m);
	/* Batch bound (batch_max 6): the seventh write of a batch is refused. */
	m = t_msg(&c, MSG_FINAL, 1, 100, 200, 10);
	assert_int_equal(spool_write(sp, m), -ENOBUFS);
	t_msg_free(m);
	assert_int_equal(spool_sync(sp), 0);
	write_ok(sp, t_msg(&c, MSG_FINAL, 1, 100, 200, 10));
	/* Malformed msgs. */
	m = t_msg(&a, MSG_FINAL, 0, 0, 100, 10);
	m->part_bytes = 99;
	assert_int_equal(spool_write(sp, m), -EINVAL);
	m->part_bytes = 100;
	m->env = NULL;
	assert_int_equal(spool_write(sp, m), -EINVAL);
	t_msg_free(m);
	assert_int_equal(spool_sync(sp), 0);

	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	t_check_msg(&rd.msg[0], &c, "");
	assert_int_equal(rd.errors, 0);
	assert_int_equal(rd.counts.orphans, 2); /* the part 0 of A and of B */
	t_read_free(&rd);
	assert_int_equal(spool_close(sp), 0);
	t_txn_free(&a);
	t_txn_free(&b);
	t_txn_free(&c);
	t_rmdir(dir);
}

/* ---- recovery ---- */

struct torn {
	uint8_t *seg; /* the segment as written: 4 FINAL records */
	size_t len;
	size_t rec[5]; /* record starts, rec[4] = len */
	struct t_txn t[4];
};

static void torn_setup(struct torn *tn)
{
	char dir[256], path[768];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	for (int i = 0; i < 4; i++) {
		char qid[8];
		snprintf(qid, sizeof(qid), "T%d", i);
		t_txn_init(&tn->t[i], qid, 40 + 10 * (size_t)i, 10 + (unsigned)i, 1);
		write_ok(sp, t_msg(&tn->t[i], MSG_FINAL, 0, 0, tn->t[i].body_len, 16));
		assert_int_equal(spool_sync(sp), 0);
	}
	one_segment(dir, "active", path, sizeof(path));
	assert_int_equal(t_read_file(path, &tn->seg, &tn->len), 0);
	assert_int_equal(spool_close(sp), 0);
	t_rmdir(dir);
	assert_int_equal(tn->seg[4], SPOOL_REC_SEGMENT);
	size_t off = SPOOL_SEG_REC_LEN;
	for (int i = 0; i < 4; i++) {
		tn->rec[i] = off;
		const uint8_t *p = tn->seg + off + 12;
		off += (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
	}
	tn->rec[4] = off;
	assert_int_equal(off, tn->len);
}

/*
 * A crashed writer left seg (len bytes) in active/: spool_open must keep
 * exactly want_len bytes, move the segment into ready/ and leave want_msgs.
 */
static void recover_case(struct torn *tn, const uint8_t *seg, size_t len, size_t want_len,
			 unsigned want_msgs, unsigned want_corrupt)
{
	char dir[256], path[768];
	t_mkdtemp(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/active", dir);
	assert_int_equal(mkdir(path, 0750), 0);
	snprintf(path, sizeof(path), "%s/active/w00-0000000000000001-00000000.seg", dir);
	assert_int_equal(t_write_file(path, seg, len), 0);
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	assert_int_equal(count_in(dir, "active"), 1); /* the new segment */
	if (want_len == 0) {
		assert_int_equal(count_in(dir, "ready"), 0);
	} else {
		snprintf(path, sizeof(path), "%s/ready/w00-0000000000000001-00000000.seg", dir);
		assert_int_equal(file_size(path), want_len);
	}
	assert_int_equal(count_in(dir, "corrupt"), want_corrupt);
	assert_int_equal(spool_close(sp), 0);
	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, want_msgs);
	assert_int_equal(rd.errors, 0);
	for (unsigned i = 0; i < want_msgs; i++)
		t_check_msg(&rd.msg[i], &tn->t[i], "");
	t_read_free(&rd);
	t_rmdir(dir);
}

static void test_recover_torn_tail(void **state)
{
	(void)state;
	struct torn tn;
	torn_setup(&tn);
	/* Cut at every offset inside the last record (and at its start). */
	for (size_t cut = tn.rec[3]; cut < tn.len; cut++)
		recover_case(&tn, tn.seg, cut, tn.rec[3], 3, 0);
	/* Nothing to cut. */
	recover_case(&tn, tn.seg, tn.len, tn.len, 4, 0);
	/* Cut inside the segment header or the first record: nothing left, the segment goes. */
	recover_case(&tn, tn.seg, 10, 0, 0, 0);
	recover_case(&tn, tn.seg, SPOOL_SEG_REC_LEN, 0, 0, 0);
	recover_case(&tn, tn.seg, tn.rec[0] + 100, 0, 0, 0);
	/* A flipped byte anywhere in the last record (header, crc, envelope, body). */
	uint8_t *copy = malloc(tn.len);
	assert_non_null(copy);
	for (size_t at = tn.rec[3]; at < tn.len; at += 3) {
		memcpy(copy, tn.seg, tn.len);
		copy[at] ^= 0x20;
		recover_case(&tn, copy, tn.len, tn.rec[3], 3, 0);
	}
	/* Zeros after the last record (a crash after the size grew). */
	uint8_t *big = calloc(1, tn.len + 4096);
	assert_non_null(big);
	memcpy(big, tn.seg, tn.len);
	recover_case(&tn, big, tn.len + 4096, tn.len, 4, 0);
	free(big);
	/* A flip in record 1 with good records after it: cut there, the rest kept aside. */
	memcpy(copy, tn.seg, tn.len);
	copy[tn.rec[1] + 70] ^= 0x01;
	recover_case(&tn, copy, tn.len, tn.rec[1], 1, 1);
	/* A flip in the segment header: nothing can be checked, the whole file is kept aside. */
	memcpy(copy, tn.seg, tn.len);
	copy[SPOOL_REC_HDR_LEN + 3] ^= 0x01;
	recover_case(&tn, copy, tn.len, 0, 0, 1);
	free(copy);
	free(tn.seg);
	for (int i = 0; i < 4; i++)
		t_txn_free(&tn.t[i]);
}

/* A spool that once had three writers, now one: writer 0 takes over writer 2's segment. */
static void test_recover_strays(void **state)
{
	(void)state;
	char dir[256], path[768], name[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 3);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 2, 64, 16, &sp), 0);
	struct t_txn a;
	t_txn_init(&a, "AAAA", 100, 1, 1);
	write_ok(sp, t_msg(&a, MSG_FINAL, 0, 0, 100, 10));
	assert_int_equal(spool_sync(sp), 0);
	one_segment(dir, "active", path, sizeof(path));
	uint8_t *seg;
	size_t len;
	assert_int_equal(t_read_file(path, &seg, &len), 0);
	char act[300];
	snprintf(act, sizeof(act), "%s/active", dir);
	t_first_file(act, name, sizeof(name));
	assert_int_equal(spool_close(sp), 0);
	t_rmdir(dir);

	t_mkdtemp(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/active", dir);
	assert_int_equal(mkdir(path, 0750), 0);
	snprintf(path, sizeof(path), "%s/active/%s", dir, name);
	assert_int_equal(t_write_file(path, seg, len), 0);
	free(seg);
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	assert_int_equal(count_in(dir, "ready"), 1);
	assert_int_equal(count_in(dir, "active"), 1); /* writer 0's new segment */
	assert_int_equal(t_count_files(dir), 4);      /* active, ready, w00.lock, w02.lock */
	assert_int_equal(spool_close(sp), 0);
	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	t_check_msg(&rd.msg[0], &a, "");
	t_read_free(&rd);
	t_txn_free(&a);
	t_rmdir(dir);
}

/* The reader on a damaged segment in ready/: reports, resyncs, counts. */
static void test_reader_damage(void **state)
{
	(void)state;
	struct torn tn;
	torn_setup(&tn);
	char dir[256], path[768];
	t_mkdtemp(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/ready", dir);
	assert_int_equal(mkdir(path, 0750), 0);
	snprintf(path, sizeof(path), "%s/ready/w00-0000000000000001-00000000.seg", dir);
	tn.seg[tn.rec[1] + 80] ^= 0x40;				     /* corrupt record 1 */
	assert_int_equal(t_write_file(path, tn.seg, tn.len - 5), 0); /* torn record 3 */
	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 2); /* records 0 and 2 */
	t_check_msg(&rd.msg[0], &tn.t[0], "");
	t_check_msg(&rd.msg[1], &tn.t[2], "");
	assert_int_equal(rd.errors, 2);
	assert_non_null(strstr(rd.last_problem, "incomplete record at the end"));
	t_read_free(&rd);
	t_rmdir(dir);
	free(tn.seg);
	for (int i = 0; i < 4; i++)
		t_txn_free(&tn.t[i]);
}

/* ---- a record planted in a message body ---- */

static void le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A well-formed FINAL record (qid EVIL) whose crc starts from seed. */
static size_t forge(uint8_t *p, uint32_t seed)
{
	static const char *str[] = {"198.51.100.1",	 "evil", "", "mx", "evil@example.com",
				    "victim@example.org"};
	static const char body[] = "Subject: planted\r\n\r\nhello\r\n";
	size_t bl = sizeof(body) - 1, el = SPOOL_ENV_FIXED;
	uint8_t *env = p + SPOOL_REC_HDR_LEN;
	memset(p, 0, SPOOL_REC_HDR_LEN + SPOOL_ENV_FIXED);
	le(env + 8, bl, 8);
	le(env + 16, bl, 8);
	le(env + 24, 1, 4);
	le(env + 36, 1, 4);
	for (int i = 0; i < 6; i++) {
		size_t n = strlen(str[i]);
		le(env + el, n, 2);
		memcpy(env + el + 2, str[i], n);
		el += 2 + n;
	}
	memcpy(env + el, body, bl);
	size_t len = SPOOL_REC_HDR_LEN + el + bl;
	le(p, SPOOL_REC_MAGIC, 4);
	p[4] = SPOOL_REC_FINAL;
	p[5] = SPOOL_REC_VERSION;
	le(p + 8, SPOOL_REC_HDR_LEN, 4);
	le(p + 12, len, 4);
	memcpy(p + 24, "EVIL", 4);
	le(p + 48, el, 4);
	le(p + 56, bl, 8);
	uint32_t c = crc32c(seed, p, 16);
	le(p + 16, crc32c(c, p + 20, len - 20), 4);
	return len;
}

static void test_planted_record(void **state)
{
	(void)state;
	char dir[256], path[768];
	uint8_t rec[512];
	static struct t_read rd;

	/* Control: with the segment's salt known, the forged record reads as a message. */
	t_mkdtemp(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/ready", dir);
	assert_int_equal(mkdir(path, 0750), 0);
	uint8_t seg[1024] = {0};
	le(seg, SPOOL_REC_MAGIC, 4);
	seg[4] = SPOOL_REC_SEGMENT;
	seg[5] = SPOOL_REC_VERSION;
	le(seg + 8, SPOOL_REC_HDR_LEN, 4);
	le(seg + 12, SPOOL_SEG_REC_LEN, 4);
	le(seg + 56, SPOOL_SEG_PAYLOAD, 8);
	le(seg + 64, 0x0123456789abcdefull, 8); /* salt */
	le(seg + 16, crc32c(crc32c(0, seg, 16), seg + 20, SPOOL_SEG_REC_LEN - 20), 4);
	uint32_t seed = crc32c(0, seg + 64, 8);
	size_t n = forge(seg + SPOOL_SEG_REC_LEN, seed);
	snprintf(path, sizeof(path), "%s/ready/w00-0000000000000001-00000000.seg", dir);
	assert_int_equal(t_write_file(path, seg, SPOOL_SEG_REC_LEN + n), 0);
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	assert_string_equal(rd.msg[0].env.qid, "EVIL");
	assert_string_equal(rd.msg[0].env.from, "evil@example.com");
	t_read_free(&rd);
	t_rmdir(dir);

	/* A client plants it in a body (it cannot know the salt); the record before it breaks. */
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn a, f, c;
	t_txn_init(&a, "AAAA", 100, 1, 1);
	t_txn_init(&f, "FFFF", 0, 2, 1);
	t_txn_init(&c, "CCCC", 100, 3, 1);
	free(f.body);
	f.body = rec;
	f.body_len = forge(rec, 0);
	write_ok(sp, t_msg(&a, MSG_FINAL, 0, 0, a.body_len, 50));
	write_ok(sp, t_msg(&f, MSG_FINAL, 0, 0, f.body_len, 50));
	write_ok(sp, t_msg(&c, MSG_FINAL, 0, 0, c.body_len, 50));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_close(sp), 0);
	one_segment(dir, "ready", path, sizeof(path));
	uint8_t *buf;
	size_t len;
	assert_int_equal(t_read_file(path, &buf, &len), 0);
	size_t frec = SPOOL_SEG_REC_LEN;
	frec += (size_t)buf[frec + 12] | (size_t)buf[frec + 13] << 8; /* skip A */
	assert_memory_equal(buf + frec + 24, "FFFF", 4);
	buf[frec + 30] = 'x'; /* F's header no longer decodes */
	assert_int_equal(t_write_file(path, buf, len), 0);
	free(buf);
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 2);
	assert_string_equal(rd.msg[0].env.qid, "AAAA");
	assert_string_equal(rd.msg[1].env.qid, "CCCC");
	assert_int_equal(rd.errors, 1);
	t_read_free(&rd);
	f.body = NULL;
	t_txn_free(&a);
	t_txn_free(&f);
	t_txn_free(&c);
	t_rmdir(dir);
}

/* ---- rotation ---- */

static void test_rotation(void **state)
{
	(void)state;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	cfg.segment_size = 1; /* rotate after every sync */
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn a, b, m, c;
	t_txn_init(&a, "AAAA", 100, 1, 1);
	t_txn_init(&b, "BBBB", 100, 2, 1);
	t_txn_init(&m, "MMMM", 3000, 3, 2);
	t_txn_init(&c, "CCCC", 100, 4, 1);
	write_ok(sp, t_msg(&m, MSG_PART, 0, 0, 1000, 100));
	write_ok(sp, t_msg(&a, MSG_FINAL, 0, 0, 100, 100));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(count_in(dir, "ready"), 1);
	assert_int_equal(count_in(dir, "active"), 1);
	write_ok(sp, t_msg(&m, MSG_PART, 1, 1000, 1000, 100));
	assert_int_equal(spool_sync(sp), 0); /* no FINAL: no fdatasync, no rotation */
	assert_int_equal(spool_syncs(sp), 1);
	assert_int_equal(count_in(dir, "ready"), 1);
	write_ok(sp, t_msg(&m, MSG_FINAL, 2, 2000, 1000, 100));
	write_ok(sp, t_msg(&b, MSG_FINAL, 0, 0, 100, 100));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_syncs(sp), 2);
	assert_int_equal(count_in(dir, "ready"), 2);
	assert_int_equal(count_in(dir, "active"), 1);
	assert_int_equal(spool_close(sp), 0);
	assert_int_equal(count_in(dir, "active"), 0); /* the empty one is dropped */
	assert_int_equal(count_in(dir, "ready"), 2);

	/* A second run appends new segments after the first run's. */
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	write_ok(sp, t_msg(&c, MSG_FINAL, 0, 0, 100, 100));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_close(sp), 0);
	assert_int_equal(count_in(dir, "ready"), 3);

	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 4);
	assert_int_equal(rd.errors, 0);
	assert_int_equal(rd.counts.files, 3);
	assert_string_equal(rd.msg[0].env.qid, "AAAA");
	assert_string_equal(rd.msg[1].env.qid, "MMMM");
	assert_string_equal(rd.msg[3].env.qid, "CCCC");
	t_check_msg(t_find(&rd, "MMMM"), &m, "");
	assert_int_equal(t_find(&rd, "MMMM")->nparts, 3);
	t_check_msg(t_find(&rd, "AAAA"), &a, "");
	t_check_msg(t_find(&rd, "BBBB"), &b, "");
	t_check_msg(t_find(&rd, "CCCC"), &c, "");
	t_read_free(&rd);
	t_txn_free(&a);
	t_txn_free(&b);
	t_txn_free(&m);
	t_txn_free(&c);
	t_rmdir(dir);
}

/*
 * One batch of many small one-part messages, so that the iovec array fills
 * (IOV_MAX) many times over, at the metadata of a record as well as at its
 * body: every message must come back intact. (The flush at a full iovec
 * array once emptied the metadata arena while the record being queued still
 * had its header there; the next records' headers then overwrote it, and a
 * soak lost about one message in 100,000 to a zeroed magic byte.)
 */
static void test_iov_full_batch(void **state)
{
	(void)state;
	enum { N = 2100 };
	static struct t_txn t[N];
	static struct t_read rd;
	/* 1, 2 and 3 body slices: records of 2, 3 and 4 iovecs. */
	static const size_t slice[] = {100, 50, 34};
	for (unsigned k = 0; k < sizeof(slice) / sizeof(slice[0]); k++) {
		char dir[256];
		t_mkdtemp(dir, sizeof(dir));
		struct config cfg;
		t_config(&cfg, dir, SPOOL_SEGMENT, 1);
		struct spool *sp;
		assert_int_equal(spool_open(&cfg, 0, N, 16, &sp), 0);
		for (unsigned i = 0; i < N; i++) {
			char qid[QID_LEN + 1];
			snprintf(qid, sizeof(qid), "Q%015u", i);
			t_txn_init(&t[i], qid, 100, i, 1);
			write_ok(sp, t_msg(&t[i], MSG_FINAL, 0, 0, 100, slice[k]));
		}
		assert_int_equal(spool_sync(sp), 0);
		assert_int_equal(spool_close(sp), 0);
		assert_int_equal(t_read_all(dir, &rd), 0);
		if (rd.errors || rd.n != N)
			fail_msg("%zu-byte slices: %u of %u messages read back, %u errors (%s)",
				 slice[k], rd.n, (unsigned)N, rd.errors, rd.last_problem);
		for (unsigned i = 0; i < N; i++) {
			t_check_msg(t_find(&rd, t[i].env.qid), &t[i], cfg.myhostname);
			t_txn_free(&t[i]);
		}
		t_read_free(&rd);
		t_rmdir(dir);
	}
}

/* Reads dir: one message, qid, from one segment file, no error. */
static void read_one(const char *dir, const char *qid)
{
	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	assert_int_equal(rd.errors, 0);
	assert_int_equal(rd.counts.files, 1);
	assert_string_equal(rd.msg[0].env.qid, qid);
	t_read_free(&rd);
}

/*
 * A segment moving into ready/ is linked there, ready/ synced, then its
 * name in active/ goes: for a moment, and after a power cut in between
 * until recovery, the one file has both names. Readers read it once; the
 * move and recovery finish it.
 */
static void test_both_names(void **state)
{
	(void)state;
	char dir[256], act[512], rdy[1024], name[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn a;
	t_txn_init(&a, "AAAA", 100, 1, 1);
	write_ok(sp, t_msg(&a, MSG_FINAL, 0, 0, 100, 100));
	assert_int_equal(spool_sync(sp), 0);

	/* Linked into ready/ while still active: read once, then closed whole. */
	one_segment(dir, "active", act, sizeof(act));
	snprintf(name, sizeof(name), "%s", strrchr(act, '/') + 1);
	snprintf(rdy, sizeof(rdy), "%s/ready/%s", dir, name);
	assert_int_equal(link(act, rdy), 0);
	read_one(dir, "AAAA");
	assert_int_equal(spool_close(sp), 0);
	assert_int_equal(count_in(dir, "active"), 0);
	assert_int_equal(count_in(dir, "ready"), 1);

	/* Both names again, as a power cut after the link left them: recovery
	 * keeps the file in ready/ and takes the name in active/ away. */
	assert_int_equal(link(rdy, act), 0);
	read_one(dir, "AAAA");
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct stat st;
	assert_int_equal(stat(act, &st), -1);
	assert_int_equal(stat(rdy, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(spool_close(sp), 0);
	read_one(dir, "AAAA");
	t_txn_free(&a);
	t_rmdir(dir);
}

/* ---- write failure: EFBIG from RLIMIT_FSIZE stands in for ENOSPC ---- */

static void set_fsize(rlim_t limit, struct rlimit *old)
{
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
	if (old)
		*old = rl;
	rl.rlim_cur = limit;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void test_segment_write_error(void **state)
{
	(void)state;
	signal(SIGXFSZ, SIG_IGN);
	char dir[256], path[768];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	one_segment(dir, "active", path, sizeof(path));
	struct t_txn a, b, c, d, m, n;
	t_txn_init(&a, "AAAA", 100, 1, 1);
	t_txn_init(&b, "BBBB", 1000, 2, 1);
	t_txn_init(&c, "CCCC", 10, 3, 1);
	t_txn_init(&d, "DDDD", 100, 4, 1);
	t_txn_init(&m, "MMMM", 1000, 5, 1);
	t_txn_init(&n, "NNNN", 1000, 6, 1);
	write_ok(sp, t_msg(&a, MSG_FINAL, 0, 0, 100, 10));
	assert_int_equal(spool_sync(sp), 0);
	/* N's part 0 is written but not synced (no FINAL in its batch). */
	write_ok(sp, t_msg(&n, MSG_PART, 0, 0, 500, 10));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_syncs(sp), 1);
	uint64_t synced = file_size(path);

	struct rlimit old;
	set_fsize(synced + 300, &old);
	struct msg *mm[3] = {t_msg(&m, MSG_PART, 0, 0, 500, 10),
			     t_msg(&b, MSG_FINAL, 0, 0, 1000, 10),
			     t_msg(&c, MSG_FINAL, 0, 0, 10, 10)};
	int res[3];
	for (int i = 0; i < 3; i++)
		res[i] = spool_write(sp, mm[i]);
	int r = spool_sync(sp);
	assert_int_equal(r, -EFBIG);
	for (int i = 0; i < 3; i++) {
		assert_true(res[i] == 0 || res[i] == -EFBIG);
		t_msg_free(mm[i]);
	}
	assert_true(file_size(path) < synced); /* cut back to A, N's unsynced part too */
	assert_true(setrlimit(RLIMIT_FSIZE, &old) == 0);

	/* The spool goes on; the messages whose parts were cut fail to the end. */
	write_ok(sp, t_msg(&d, MSG_FINAL, 0, 0, 100, 10));
	struct msg *x = t_msg(&m, MSG_FINAL, 1, 500, 500, 10);
	assert_int_equal(spool_write(sp, x), -EFBIG);
	t_msg_free(x);
	x = t_msg(&n, MSG_FINAL, 1, 500, 500, 10);
	assert_int_equal(spool_write(sp, x), -EFBIG);
	t_msg_free(x);
	assert_int_equal(spool_sync(sp), 0);

	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 2);
	t_check_msg(&rd.msg[0], &a, "");
	t_check_msg(&rd.msg[1], &d, "");
	assert_int_equal(rd.errors, 0);
	assert_int_equal(rd.counts.orphans, 0);
	t_read_free(&rd);
	assert_int_equal(spool_close(sp), 0);
	struct t_txn *all[] = {&a, &b, &c, &d, &m, &n};
	for (int i = 0; i < 6; i++)
		t_txn_free(all[i]);
	t_rmdir(dir);
}

static void test_maildir_write_error(void **state)
{
	(void)state;
	signal(SIGXFSZ, SIG_IGN);
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_MAILDIR, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn a, b, m;
	t_txn_init(&a, "AAAA", 5000, 1, 1);
	t_txn_init(&b, "BBBB", 100, 2, 1);
	t_txn_init(&m, "MMMM", 3000, 3, 1);
	struct rlimit old;
	set_fsize(2000, &old);
	struct msg *x = t_msg(&a, MSG_FINAL, 0, 0, 5000, 100);
	assert_int_equal(spool_write(sp, x), -EFBIG);
	t_msg_free(x);
	write_ok(sp, t_msg(&m, MSG_PART, 0, 0, 1000, 100));
	x = t_msg(&m, MSG_PART, 1, 1000, 1500, 100);
	assert_int_equal(spool_write(sp, x), -EFBIG);
	t_msg_free(x);
	assert_int_equal(spool_sync(sp), 0);
	assert_true(setrlimit(RLIMIT_FSIZE, &old) == 0);
	x = t_msg(&m, MSG_FINAL, 2, 2500, 500, 100);
	assert_int_equal(spool_write(sp, x), -EFBIG);
	t_msg_free(x);
	write_ok(sp, t_msg(&b, MSG_FINAL, 0, 0, 100, 100));
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(count_in(dir, "maildir/tmp"), 0);
	assert_int_equal(count_in(dir, "maildir/new"), 1);
	static struct t_read rd;
	assert_int_equal(t_read_all(dir, &rd), 0);
	assert_int_equal(rd.n, 1);
	t_check_msg(&rd.msg[0], &b, "");
	t_read_free(&rd);
	assert_int_equal(spool_close(sp), 0);
	t_txn_free(&a);
	t_txn_free(&b);
	t_txn_free(&m);
	t_rmdir(dir);
}

static void test_reader_errors(void **state)
{
	(void)state;
	struct spool_reader *r;
	char dir[256];
	assert_int_equal(spool_reader_open("/nonexistent/mxring", NULL, NULL, &r), -ENOENT);
	t_mkdtemp(dir, sizeof(dir));
	assert_int_equal(spool_reader_open(dir, NULL, NULL, &r), -EMEDIUMTYPE);
	t_rmdir(dir);
}

int main(void)
{
	log_enable(getenv("T_VERBOSE") != NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32c),
	    cmocka_unit_test(test_trace),
	    cmocka_unit_test(test_segment_roundtrip),
	    cmocka_unit_test(test_maildir_roundtrip),
	    cmocka_unit_test(test_maildir_layout),
	    cmocka_unit_test(test_abort_orphans),
	    cmocka_unit_test(test_protocol_errors),
	    cmocka_unit_test(test_recover_torn_tail),
	    cmocka_unit_test(test_recover_strays),
	    cmocka_unit_test(test_reader_damage),
	    cmocka_unit_test(test_planted_record),
	    cmocka_unit_test(test_rotation),
	    cmocka_unit_test(test_iov_full_batch),
	    cmocka_unit_test(test_both_names),
	    cmocka_unit_test(test_segment_write_error),
	    cmocka_unit_test(test_maildir_write_error),
	    cmocka_unit_test(test_reader_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
