/*
 * test_writer.c - writer threads end to end (core/writer.c): two shard
 * threads submit msgs (one-part, multi-part and aborted transactions) to
 * two writers, kick them, wait on their eventfds and reap; every result is
 * checked, then the stored messages are read back and compared. A write
 * failure (EFBIG) reaches the shard as the result and the writer goes on.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "log.h"
#include "writer.h"

#define NSHARDS	       2
#define TXNS_PER_SHARD 400
#define PART_BYTES     700

struct txn_state {
	struct t_txn t;
	uint32_t nparts; /* msgs it sends: PARTs then FINAL (or ABORT) */
	uint32_t sent, returned;
	bool aborted;
	struct msg *m[4];
};

struct shard_ctx {
	struct writer_set *ws;
	unsigned id;
	struct txn_state *txn; /* TXNS_PER_SHARD */
	unsigned finals_ok, errors, parts_ok, aborts;
	unsigned max_out;
};

static void wait_returns(struct shard_ctx *s)
{
	struct pollfd p = {.fd = writer_shard_eventfd(s->ws, s->id), .events = POLLIN};
	assert_true(poll(&p, 1, 10000) == 1);
	uint64_t v;
	assert_int_equal(read(p.fd, &v, sizeof(v)), (ssize_t)sizeof(v));
}

static unsigned reap(struct shard_ctx *s)
{
	struct msg *out[64];
	unsigned n, total = 0;
	while ((n = writer_reap(s->ws, s->id, out, 64)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			struct msg *m = out[i];
			struct txn_state *x = &s->txn[m->conn_slot];
			assert_int_equal(m->shard, s->id);
			assert_true(m->done_us > 0);
			if (m->kind == MSG_FINAL) {
				assert_int_equal(m->result, 0);
				s->finals_ok++;
			} else if (m->kind == MSG_PART) {
				assert_int_equal(m->result, 0);
				s->parts_ok++;
			} else {
				s->aborts++;
			}
			x->returned++;
		}
		total += n;
	}
	return total;
}

static void *shard_main(void *arg)
{
	struct shard_ctx *s = arg;
	unsigned ring = writer_ring_size(s->ws), out = 0;
	unsigned seed = s->id * 7919 + 1;
	for (unsigned i = 0; i < TXNS_PER_SHARD; i++) {
		struct txn_state *x = &s->txn[i];
		for (uint32_t k = 0; k < x->nparts; k++) {
			struct msg *m = x->m[k];
			int r;
			while ((r = writer_submit(s->ws, s->id, m)) == -EAGAIN) {
				writer_kick(s->ws, s->id);
				wait_returns(s);
				out -= reap(s);
			}
			assert_int_equal(r, 0);
			out++;
			if (out > s->max_out)
				s->max_out = out;
			assert_true(out <= ring * 2);
		}
		/* Kick sometimes at once, sometimes after a pause, so writers sleep and wake. */
		seed = seed * 1103515245u + 12345u;
		if ((seed >> 16) % 4 == 0) {
			writer_kick(s->ws, s->id);
			if ((seed >> 20) % 8 == 0)
				usleep(200);
		}
		out -= reap(s);
	}
	writer_kick(s->ws, s->id);
	while (out > 0) {
		wait_returns(s);
		out -= reap(s);
	}
	return NULL;
}

static void build(struct shard_ctx *s)
{
	s->txn = calloc(TXNS_PER_SHARD, sizeof(*s->txn));
	assert_non_null(s->txn);
	for (unsigned i = 0; i < TXNS_PER_SHARD; i++) {
		struct txn_state *x = &s->txn[i];
		char qid[QID_LEN + 1];
		snprintf(qid, sizeof(qid), "S%uT%05u", s->id, i);
		unsigned seed = s->id * 100000 + i;
		size_t len = 50 + (seed * 37) % 1500;
		x->nparts = i % 10 == 3 ? 3 : 1;
		x->aborted = i % 50 == 7;
		if (x->aborted)
			x->nparts = 2;
		if (x->nparts > 1)
			len = 3 * PART_BYTES;
		t_txn_init(&x->t, qid, len, seed, 1 + i % 3);
		for (uint32_t k = 0; k < x->nparts; k++) {
			bool last = k + 1 == x->nparts;
			enum msg_kind kind = !last ? MSG_PART : x->aborted ? MSG_ABORT : MSG_FINAL;
			size_t off = x->nparts > 1 ? k * PART_BYTES : 0;
			size_t n = kind == MSG_ABORT	    ? 0
				   : x->nparts > 1 && !last ? PART_BYTES
							    : len - off;
			struct msg *m = t_msg(&x->t, kind, k, off, n, 64 + k);
			m->shard = (uint16_t)s->id;
			m->writer = (uint16_t)((i + s->id) % 2); /* one transaction, one writer */
			m->conn_slot = i;
			x->m[k] = m;
		}
	}
}

static void test_writers_end_to_end(void **state)
{
	(void)state;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 2);
	cfg.ring_size = 16; /* small, so backpressure (-EAGAIN) happens */
	cfg.segment_size = 64 << 10;
	struct writer_set *ws;
	assert_int_equal(writers_start(&cfg, NSHARDS, &ws), 0);
	assert_int_equal(writer_ring_size(ws), 16);
	struct shard_ctx sh[NSHARDS];
	pthread_t th[NSHARDS];
	for (unsigned s = 0; s < NSHARDS; s++) {
		memset(&sh[s], 0, sizeof(sh[s]));
		sh[s].ws = ws;
		sh[s].id = s;
		build(&sh[s]);
	}
	for (unsigned s = 0; s < NSHARDS; s++)
		assert_int_equal(pthread_create(&th[s], NULL, shard_main, &sh[s]), 0);
	for (unsigned s = 0; s < NSHARDS; s++)
		assert_int_equal(pthread_join(th[s], NULL), 0);

	unsigned finals = 0, aborted = 0;
	for (unsigned s = 0; s < NSHARDS; s++) {
		for (unsigned i = 0; i < TXNS_PER_SHARD; i++) {
			assert_int_equal(sh[s].txn[i].returned, sh[s].txn[i].nparts);
			aborted += sh[s].txn[i].aborted;
		}
		finals += sh[s].finals_ok;
		assert_true(sh[s].max_out <= 2 * 16);
	}
	assert_int_equal(finals + aborted, NSHARDS * TXNS_PER_SHARD);
	struct writer_stats st;
	writers_stats(ws, &st);
	assert_int_equal(st.finals, finals);
	assert_int_equal(st.errors, 0);
	assert_true(st.batches >= 1 && st.batches <= finals);
	writers_stop(ws);

	char path[512];
	snprintf(path, sizeof(path), "%s/active", dir);
	assert_int_equal(t_count_files(path), 0); /* stopped writers leave nothing active */
	struct t_read *rd = calloc(1, sizeof(*rd));
	assert_non_null(rd);
	assert_int_equal(t_read_all(dir, rd), 0);
	assert_int_equal(rd->n, finals);
	assert_int_equal(rd->errors, 0);
	assert_int_equal(rd->counts.orphans, aborted); /* each aborted txn left one part */
	for (unsigned s = 0; s < NSHARDS; s++)
		for (unsigned i = 0; i < TXNS_PER_SHARD; i++) {
			struct txn_state *x = &sh[s].txn[i];
			const struct t_got *g = t_find(rd, x->t.env.qid);
			if (x->aborted) {
				assert_null(g);
			} else {
				t_check_msg(g, &x->t, "");
				assert_int_equal(g->nparts, x->nparts);
			}
			for (uint32_t k = 0; k < x->nparts; k++)
				t_msg_free(x->m[k]);
			t_txn_free(&x->t);
		}
	t_read_free(rd);
	free(rd);
	for (unsigned s = 0; s < NSHARDS; s++)
		free(sh[s].txn);
	t_rmdir(dir);
}

/* Maildir under the same threads, and writers_stop with nothing queued. */
static void test_writers_maildir(void **state)
{
	(void)state;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_MAILDIR, 2);
	struct writer_set *ws;
	assert_int_equal(writers_start(&cfg, 1, &ws), 0);
	struct shard_ctx s = {.ws = ws, .id = 0};
	s.txn = calloc(TXNS_PER_SHARD, sizeof(*s.txn));
	assert_non_null(s.txn);
	struct t_txn t[20];
	struct msg *m[20];
	for (unsigned i = 0; i < 20; i++) {
		char qid[QID_LEN + 1];
		snprintf(qid, sizeof(qid), "M%02u", i);
		t_txn_init(&t[i], qid, 100 + i, i, 1);
		m[i] = t_msg(&t[i], MSG_FINAL, 0, 0, 100 + i, 10);
		m[i]->writer = (uint16_t)(i % 2);
		m[i]->conn_slot = i;
		assert_int_equal(writer_submit(ws, 0, m[i]), 0);
	}
	writer_kick(ws, 0);
	unsigned got = 0;
	while (got < 20) {
		wait_returns(&s);
		got += reap(&s);
	}
	assert_int_equal(s.finals_ok, 20);
	writers_stop(ws);
	struct t_read *rd = calloc(1, sizeof(*rd));
	assert_non_null(rd);
	assert_int_equal(t_read_all(dir, rd), 0);
	assert_int_equal(rd->n, 20);
	for (unsigned i = 0; i < 20; i++) {
		t_check_msg(t_find(rd, t[i].env.qid), &t[i], "");
		t_msg_free(m[i]);
		t_txn_free(&t[i]);
	}
	t_read_free(rd);
	free(rd);
	free(s.txn);

	/* Bad settings are refused. */
	cfg.ring_size = 3;
	assert_int_equal(writers_start(&cfg, 1, &ws), -EINVAL);
	t_rmdir(dir);
}

/* A failed write reaches the shard as the msg's result, and the writer goes on. */
static int submit_wait(struct writer_set *ws, struct msg *m)
{
	struct shard_ctx s = {.ws = ws, .id = 0};
	struct txn_state dummy[1];
	memset(dummy, 0, sizeof(dummy));
	s.txn = dummy;
	m->conn_slot = 0;
	assert_int_equal(writer_submit(ws, 0, m), 0);
	writer_kick(ws, 0);
	struct msg *out[1];
	unsigned n = 0;
	while (n == 0) {
		wait_returns(&s);
		n = writer_reap(ws, 0, out, 1);
	}
	assert_ptr_equal(out[0], m);
	return m->result;
}

static void test_writers_write_error(void **state)
{
	(void)state;
	signal(SIGXFSZ, SIG_IGN);
	char dir[256], act[300], name[256], path[600];
	t_mkdtemp(dir, sizeof(dir));
	struct config cfg;
	t_config(&cfg, dir, SPOOL_SEGMENT, 1);
	struct writer_set *ws;
	assert_int_equal(writers_start(&cfg, 1, &ws), 0);
	struct t_txn a, b, c;
	t_txn_init(&a, "AAAA", 100, 1, 1);
	t_txn_init(&b, "BBBB", 5000, 2, 1);
	t_txn_init(&c, "CCCC", 100, 3, 1);
	struct msg *ma = t_msg(&a, MSG_FINAL, 0, 0, 100, 10);
	struct msg *mb = t_msg(&b, MSG_FINAL, 0, 0, 5000, 10);
	struct msg *mc = t_msg(&c, MSG_FINAL, 0, 0, 100, 10);
	assert_int_equal(submit_wait(ws, ma), 0);
	snprintf(act, sizeof(act), "%s/active", dir);
	t_first_file(act, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", act, name);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	struct rlimit old, rl;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	rl = old;
	rl.rlim_cur = (rlim_t)st.st_size + 100;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
	int r = submit_wait(ws, mb);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(r, -EFBIG);
	assert_int_equal(submit_wait(ws, mc), 0);
	struct writer_stats wst;
	writers_stats(ws, &wst);
	assert_int_equal(wst.finals, 2);
	assert_int_equal(wst.errors, 1);
	writers_stop(ws);
	struct t_read *rd = calloc(1, sizeof(*rd));
	assert_non_null(rd);
	assert_int_equal(t_read_all(dir, rd), 0);
	assert_int_equal(rd->n, 2);
	t_check_msg(t_find(rd, "AAAA"), &a, "");
	t_check_msg(t_find(rd, "CCCC"), &c, "");
	assert_int_equal(rd->errors, 0);
	t_read_free(rd);
	free(rd);
	t_msg_free(ma);
	t_msg_free(mb);
	t_msg_free(mc);
	t_txn_free(&a);
	t_txn_free(&b);
	t_txn_free(&c);
	t_rmdir(dir);
}

int main(void)
{
	log_enable(getenv("T_VERBOSE") != NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_writers_end_to_end),
	    cmocka_unit_test(test_writers_maildir),
	    cmocka_unit_test(test_writers_write_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
