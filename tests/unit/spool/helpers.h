/*
 * helpers.h - shared by the spool tests: scratch directories, envelopes and
 * msgs built by hand (slices into the test's own buffers), and reading a
 * spool back into memory through the reader API.
 */
#ifndef MXRING_TEST_SPOOL_HELPERS_H
#define MXRING_TEST_SPOOL_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "msg.h"
#include "spool.h"
#include "spool_reader.h"

#define T_RCPT_BUF 1024
#define T_MSGS_MAX 4096

/* A transaction: envelope plus the body it will send. */
struct t_txn {
	struct envelope env;
	char rcpts[T_RCPT_BUF];
	uint8_t *body; /* owned */
	size_t body_len;
};

/* What the reader gave back for one message. */
struct t_got {
	struct envelope env;
	char rcpts[T_RCPT_BUF];
	uint8_t *trace, *body; /* owned */
	size_t trace_len, body_len;
	uint32_t nparts;
};

struct t_read {
	struct t_got msg[T_MSGS_MAX];
	unsigned n;
	unsigned problems, errors, orphan_reports;
	struct spool_reader_counts counts;
	char last_problem[512];
};

/* A fresh directory under $TMPDIR (or /tmp); t_rmdir removes it and all below. */
void t_mkdtemp(char *dir, size_t cap);
void t_rmdir(const char *dir);

/* Defaults, then the spool settings the tests use. */
void t_config(struct config *cfg, const char *dir, enum spool_format fmt, unsigned writers);

/* Fills a transaction: qid, a deterministic body of len bytes (seed), one or more rcpts. */
void t_txn_init(struct t_txn *t, const char *qid, size_t len, unsigned seed, unsigned nrcpt);
void t_txn_free(struct t_txn *t);

/* A msg over t->body[off, off+len) cut into slices of at most slice bytes. */
struct msg *t_msg(const struct t_txn *t, enum msg_kind kind, uint32_t part, size_t off, size_t len,
		  size_t slice);
void t_msg_free(struct msg *m);

/* Reads every message of dir. Returns 0, or the reader's -errno. */
int t_read_all(const char *dir, struct t_read *out);
void t_read_free(struct t_read *r);
const struct t_got *t_find(const struct t_read *r, const char *qid);

/* Checks that got matches t (envelope fields, trace, body). */
void t_check_msg(const struct t_got *got, const struct t_txn *t, const char *host);

/* Whole-file helpers. */
int t_read_file(const char *path, uint8_t **buf, size_t *len);
int t_write_file(const char *path, const uint8_t *buf, size_t len);
unsigned t_count_files(const char *dir);
/* The first file name in dir (sorted), or "" */
void t_first_file(const char *dir, char *name, size_t cap);

#endif
