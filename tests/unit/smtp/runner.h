/*
 * runner.h - golden SMTP transcripts replayed through the sans-I/O engine.
 *
 * A transcript holds the client's bytes, the configuration, the verdicts the
 * test host gives its hooks, and the one expected sequence of reply lines
 * (S) and hook events (E), in the order they happen. transcript_replay feeds
 * the input the way a shard does (keeping unused input, resuming after a
 * deferred end of data, draining the output after each feed) under one feed
 * plan, and returns what happened; every plan must give the expected
 * sequence. The file format is described at the top of runner.c.
 */
#ifndef MXRING_TEST_RUNNER_H
#define MXRING_TEST_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp.h"

/* One expected or observed line: kind 'S' (reply line, CRLF stripped) or 'E' (event). */
struct tline {
	char kind;
	uint8_t *p; /* owned */
	size_t len;
};

struct tlines {
	struct tline *v; /* owned */
	size_t n, cap;
};

enum thook { H_HELO, H_MAIL, H_RCPT, H_DATA_START, H_DATA_END, H_RESUME, H_COUNT };

#define T_CONF_MAX     16
#define T_VERDICTS_MAX 16
#define T_PHASES_MAX   4

struct tphase {
	uint8_t *in; /* owned */
	size_t len;
};

struct transcript {
	char name[128];
	char conf[T_CONF_MAX][256]; /* "key=value" for config_set, after the defaults */
	unsigned nconf;
	bool starttls;		  /* smtp_conf_init(..., starttls) */
	uint64_t body_fail_after; /* body hook fails past this many bytes; 0 = never */
	enum smtp_verdict verdict[H_COUNT][T_VERDICTS_MAX];
	unsigned nverdict[H_COUNT];
	struct tphase phase[T_PHASES_MAX]; /* input, split by T: (TLS handshake) lines */
	unsigned nphase;
	struct tlines expect;
};

/* How the input is cut into feeds. */
struct tplan {
	size_t split; /* > 0: two pieces, cut at this offset (clipped to each phase) */
	size_t chunk; /* > 0: pieces of this size (1 = byte by byte); 0 and split 0 = whole */
	size_t cap;   /* output buffer size */
};

struct tstats {
	unsigned feeds;
	unsigned out_full;  /* SMTP_BLOCKED because the output was full */
	unsigned resumes;   /* smtp_resume calls */
	size_t stash_max;   /* longest partial line kept between feeds */
	uint64_t body_runs; /* body hook calls */
};

void tlines_add(struct tlines *l, char kind, const void *p, size_t len);
void tlines_free(struct tlines *l);

/* Parses transcript text. 0, or -1 with a message in err. */
int transcript_parse(struct transcript *t, const char *name, const char *text, size_t len,
		     char *err, size_t errlen);
int transcript_load(struct transcript *t, const char *path, char *err, size_t errlen);
void transcript_free(struct transcript *t);

/*
 * Replays t under plan into got. Returns 0, or -1 with the first violation of
 * the host's invariants (hook order, zero copy, leftover input, reply
 * framing) in err. got holds the lines observed either way.
 */
int transcript_replay(const struct transcript *t, const struct tplan *plan, struct tlines *got,
		      struct tstats *st, char *err, size_t errlen);

/*
 * Replays t under the standard set of plans (whole, byte by byte, fixed
 * chunks, every two-piece split, each with a large and a near-minimal output
 * buffer) and compares each with t->expect. 0, or -1 after printing the
 * first difference to stderr. stats (may be NULL) accumulates over plans.
 */
int transcript_check(const struct transcript *t, struct tstats *stats);

/* Writes bytes escaped as in transcripts (\r \n \t \\ \xHH). */
void tescape(char *dst, size_t cap, const uint8_t *p, size_t len);

#endif
