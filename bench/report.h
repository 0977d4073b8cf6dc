/*
 * report.h - what mxring-bench prints: the progress line, the final table,
 * and the same as JSON (--json FILE).
 *
 * The main thread sums the threads' counters into a bench_totals (a plain
 * snapshot: no atomics) once a second and at the end; histograms are merged
 * only at the end, when the threads are gone.
 */
#ifndef MXRING_BENCH_REPORT_H
#define MXRING_BENCH_REPORT_H

#include <stdio.h>

#include "bench.h"
#include "hist.h"

struct bench_totals {
	uint64_t accepted, tempfail, rejected, failed, bytes;
	uint64_t hs_full, hs_resumed, conns_opened, conns_open, errors;
	uint64_t err[BENCH_ERR__COUNT];
	uint64_t code[BENCH_CODE_MAX];
	double cpu_s; /* the tool's own CPU time (user + system, all threads); set at the end */
	char tls_desc[80]; /* what a handshake negotiated ("TLSv1.3 TLS13-AES128-GCM-SHA256") */
};

/* Adds one thread's counters into t. */
void report_add(struct bench_totals *t, struct bench_counters *c);

/* One progress line on f: rates from the difference between now and prev over dt_s. */
void report_progress(FILE *f, double t_s, double dt_s, const struct bench_totals *now,
		     const struct bench_totals *prev);

/* The final table on f. */
void report_table(FILE *f, const struct bench_run *run, double elapsed_s,
		  const struct bench_totals *t, const struct hist hist[BENCH_LAT__COUNT]);

/* The same as a JSON object. 0 or -errno. */
int report_json(const char *path, const struct bench_run *run, double elapsed_s,
		const struct bench_totals *t, const struct hist hist[BENCH_LAT__COUNT])
    __attribute__((warn_unused_result));

#endif
