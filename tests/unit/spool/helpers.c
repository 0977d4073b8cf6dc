/*
 * helpers.c - see helpers.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "trace.h"

void t_mkdtemp(char *dir, size_t cap)
{
	const char *base = getenv("TMPDIR");
	assert_true((size_t)snprintf(dir, cap, "%s/mxspool-test-XXXXXX",
				     base && *base ? base : "/tmp") < cap);
	assert_non_null(mkdtemp(dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void t_rmdir(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void t_config(struct config *cfg, const char *dir, enum spool_format fmt, unsigned writers)
{
	config_defaults(cfg);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", dir);
	snprintf(cfg->myhostname, sizeof(cfg->myhostname), "mx.example.org");
	cfg->spool_format = fmt;
	cfg->writers = writers;
	cfg->max_connections = 64;
	cfg->ring_size = 64;
}

void t_txn_init(struct t_txn *t, const char *qid, size_t len, unsigned seed, unsigned nrcpt)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->env.qid, sizeof(t->env.qid), "%s", qid);
	t->env.time_us = 1700000000123456ull + seed;
	snprintf(t->env.client_addr, sizeof(t->env.client_addr), "192.0.2.%u", seed % 250);
	t->env.client_port = (uint16_t)(1024 + seed);
	snprintf(t->env.helo, sizeof(t->env.helo), "client%u.example", seed);
	if (seed % 2)
		snprintf(t->env.tls, sizeof(t->env.tls), "TLSv1.3 TLS_AES_128_GCM_SHA256");
	snprintf(t->env.myhostname, sizeof(t->env.myhostname), "mx.example.org");
	t->env.flags = ENV_ESMTP | (seed % 3 == 0 ? ENV_8BITMIME : 0);
	snprintf(t->env.from, sizeof(t->env.from), "sender%u@example.net", seed);
	size_t used = 0;
	for (unsigned i = 0; i < nrcpt; i++) {
		int n = snprintf(t->rcpts + used, sizeof(t->rcpts) - used, "rcpt%u-%u@example.org",
				 i, seed);
		assert_true(n > 0 && used + (size_t)n + 1 < sizeof(t->rcpts));
		used += (size_t)n + 1;
	}
	t->env.nrcpt = nrcpt;
	t->env.rcpts = t->rcpts;
	t->env.rcpts_len = (uint32_t)used;
	t->env.rcpts_cap = sizeof(t->rcpts);
	t->body = malloc(len ? len : 1);
	assert_non_null(t->body);
	t->body_len = len;
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		/* Text lines with CRLF, some starting with "From " or ".", some 8-bit bytes. */
		if (i % 61 == 59)
			t->body[i] = '\r';
		else if (i % 61 == 60)
			t->body[i] = '\n';
		else if (i % 61 < 5 && (i / 61) % 7 == 3)
			t->body[i] = (uint8_t) "From "[i % 61];
		else {
			x = x * 1103515245u + 12345u;
			t->body[i] = (uint8_t)(' ' + (x >> 16) % 95);
			if ((x >> 8) % 97 == 0)
				t->body[i] = (uint8_t)(0x80 | (x & 0x7f));
		}
	}
}

void t_txn_free(struct t_txn *t)
{
	free(t->body);
	t->body = NULL;
}

struct msg *t_msg(const struct t_txn *t, enum msg_kind kind, uint32_t part, size_t off, size_t len,
		  size_t slice)
{
	struct msg *m = calloc(1, sizeof(*m));
	assert_non_null(m);
	size_t n = slice ? (len + slice - 1) / slice : 0;
	m->kind = kind;
	m->part = part;
	m->env = &t->env;
	m->slices = calloc(n ? n : 1, sizeof(*m->slices));
	assert_non_null(m->slices);
	m->slices_cap = (uint32_t)(n ? n : 1);
	for (size_t i = 0; i < n; i++) {
		size_t o = i * slice, l = len - o < slice ? len - o : slice;
		m->slices[i].base = t->body + off + o;
		m->slices[i].len = (uint32_t)l;
		m->slices[i].buf = (uint16_t)(i % 1000);
	}
	m->nslices = (uint32_t)n;
	m->part_bytes = len;
	m->body_offset = off;
	m->result = 12345;
	return m;
}

void t_msg_free(struct msg *m)
{
	if (!m)
		return;
	free(m->slices);
	free(m);
}

struct grow {
	uint8_t **p;
	size_t *len;
};

static int sink_grow(void *ctx, const uint8_t *p, size_t n)
{
	struct grow *g = ctx;
	uint8_t *np = realloc(*g->p, *g->len + n + 1);
	if (!np)
		return -ENOMEM;
	memcpy(np + *g->len, p, n);
	*g->p = np;
	*g->len += n;
	return 0;
}

static void on_problem(void *ctx, const struct spool_problem *p)
{
	struct t_read *r = ctx;
	r->problems++;
	if (p->error)
		r->errors++;
	if (p->kind == SPOOL_P_ORPHAN)
		r->orphan_reports++;
	snprintf(r->last_problem, sizeof(r->last_problem), "%s@%llu: %s", p->file,
		 (unsigned long long)p->offset, p->text);
	if (getenv("T_VERBOSE"))
		fprintf(stderr, "problem: %s %s\n", p->error ? "error" : "info", r->last_problem);
}

int t_read_all(const char *dir, struct t_read *out)
{
	struct spool_reader *r;
	memset(out, 0, sizeof(*out));
	int e = spool_reader_open(dir, on_problem, out, &r);
	if (e < 0)
		return e;
	const struct spool_item *it;
	while ((e = spool_reader_next(r, &it)) > 0) {
		assert_true(out->n < T_MSGS_MAX);
		struct t_got *g = &out->msg[out->n++];
		g->env = it->env;
		assert_true(it->env.rcpts_len <= sizeof(g->rcpts));
		memcpy(g->rcpts, it->env.rcpts, it->env.rcpts_len);
		g->env.rcpts = g->rcpts;
		g->nparts = it->nparts;
		struct grow gt = {&g->trace, &g->trace_len}, gb = {&g->body, &g->body_len};
		assert_int_equal(spool_reader_read(r, SPOOL_READ_TRACE, sink_grow, &gt), 0);
		assert_int_equal(spool_reader_read(r, SPOOL_READ_BODY, sink_grow, &gb), 0);
		assert_int_equal(g->trace_len, it->trace_len);
		assert_int_equal(g->body_len, it->body_size);
	}
	spool_reader_counts(r, &out->counts);
	spool_reader_close(r);
	return e;
}

void t_read_free(struct t_read *r)
{
	for (unsigned i = 0; i < r->n; i++) {
		free(r->msg[i].trace);
		free(r->msg[i].body);
	}
	r->n = 0;
}

const struct t_got *t_find(const struct t_read *r, const char *qid)
{
	for (unsigned i = 0; i < r->n; i++)
		if (strcmp(r->msg[i].env.qid, qid) == 0)
			return &r->msg[i];
	return NULL;
}

void t_check_msg(const struct t_got *got, const struct t_txn *t, const char *host)
{
	assert_non_null(got);
	const struct envelope *a = &got->env, *b = &t->env;
	assert_string_equal(a->qid, b->qid);
	assert_true(a->time_us == b->time_us);
	assert_string_equal(a->client_addr, b->client_addr);
	assert_int_equal(a->client_port, b->client_port);
	assert_string_equal(a->helo, b->helo);
	assert_string_equal(a->tls, b->tls);
	assert_string_equal(a->from, b->from);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->nrcpt, b->nrcpt);
	assert_int_equal(a->rcpts_len, b->rcpts_len);
	assert_memory_equal(a->rcpts, b->rcpts, b->rcpts_len);
	char trace[SPOOL_TRACE_MAX];
	size_t tl = trace_format(trace, sizeof(trace), b, host);
	assert_int_equal(got->trace_len, tl);
	assert_memory_equal(got->trace, trace, tl);
	assert_int_equal(got->body_len, t->body_len);
	if (t->body_len)
		assert_memory_equal(got->body, t->body, t->body_len);
}

int t_read_file(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	*buf = NULL;
	*len = 0;
	struct grow g = {buf, len};
	uint8_t tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		if (sink_grow(&g, tmp, n) < 0)
			break;
	fclose(f);
	if (!*buf)
		*buf = calloc(1, 1);
	return 0;
}

int t_write_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -errno;
	size_t w = len ? fwrite(buf, 1, len, f) : 0;
	int e = fclose(f);
	return w == len && e == 0 ? 0 : -EIO;
}

unsigned t_count_files(const char *dir)
{
	DIR *d = opendir(dir);
	unsigned n = 0;
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

void t_first_file(const char *dir, char *name, size_t cap)
{
	DIR *d = opendir(dir);
	name[0] = 0;
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && (name[0] == 0 || strcmp(de->d_name, name) < 0))
			snprintf(name, cap, "%s", de->d_name);
	closedir(d);
}
