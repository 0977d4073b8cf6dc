/*
 * gen.h - the messages mxring-bench sends: sizes, headers, bodies, checksums.
 *
 * A message is a per-message header block followed by a prefix of one
 * body template shared by every message (built once at start-up, cut at a
 * line end). The header block begins
 *
 *   X-Bench-Sum: <CRC-32 of everything after this line, 8 hex digits>
 *   X-Bench-Seq: <run id>-<message number>
 *
 * then Message-ID, Date, From, To, Subject and the blank line. The CRC
 * covers the rest of the headers and the body exactly as the server must
 * store it (after dot-unstuffing), without the end-of-data mark. The
 * template has lines that begin with '.', and a line that is only ".", so
 * DATA exercises dot-stuffing; BDAT sends the unstuffed form.
 *
 * Sizes: --size BYTES gives every message about BYTES (the body is cut at
 * the line end at or below it). --size-dist mix draws from GEN_MIX (see
 * gen.c), deterministically from the message number.
 */
#ifndef MXRING_BENCH_GEN_H
#define MXRING_BENCH_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "bench.h"

#define GEN_HDR_MAX 1200u /* a header block, with both addresses at BENCH_ADDR_MAX */

struct bench_gen;

struct gen_msg {
	uint64_t seq;
	size_t hdr_len;	     /* bytes written to the caller's header buffer */
	const uint8_t *body; /* borrowed from the template: as stored (for BDAT) */
	size_t body_len;
	const uint8_t *body_stuffed; /* borrowed: the same, dot-stuffed (for DATA) */
	size_t body_stuffed_len;
	uint64_t size; /* hdr_len + body_len: the message as the server stores it */
	uint32_t sum;  /* the X-Bench-Sum value */
};

/* Builds the template for cfg's sizes. 0, or -errno with a message in err. */
int gen_new(const struct bench_cfg *cfg, const char *run_id, struct bench_gen **out, char *err,
	    size_t errcap) __attribute__((warn_unused_result));
void gen_free(struct bench_gen *g);

/* The largest message gen_message can make (header block at its largest). */
uint64_t gen_size_max(const struct bench_gen *g);

/* The size message seq should have (before cutting at a line end). */
uint64_t gen_size(const struct bench_gen *g, uint64_t seq);

/*
 * Writes message seq's header block into hdr (GEN_HDR_MAX bytes) and
 * describes the message in m. from and to are the expanded addresses.
 * 0 or -ENOSPC (cannot happen with addresses within BENCH_ADDR_MAX).
 */
int gen_message(const struct bench_gen *g, uint64_t seq, const char *from, const char *to,
		uint8_t *hdr, struct gen_msg *m) __attribute__((warn_unused_result));

/*
 * Expands a --from/--to pattern: %n message number, %r recipient index
 * (0..R-1), %c connection number, %% a '%'. The length, or -ENAMETOOLONG
 * when it does not fit cap (at most BENCH_ADDR_MAX).
 */
int gen_expand(const char *pattern, uint64_t seq, unsigned rcpt, unsigned conn, char *out,
	       size_t cap);

/* 0 if pattern is a usable address pattern, else -EINVAL with the reason in why. */
int gen_pattern_check(const char *pattern, char *why, size_t cap);

/* The --size-dist mix table, for --help and the report. */
const char *gen_mix_description(void);

#endif
