/*
 * report.c - progress line, final table and JSON of mxring-bench (report.h).
 *
 * Rates are over the whole run: accepted messages (and their bytes, and
 * handshakes) divided by the time from the start to the end of the last
 * connection. Latencies are in milliseconds; quantiles come from the
 * log-linear histograms (hist.h), so they are within 0.8% of the truth;
 * max is exact.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "report.h"
#include "tlsclient.h"

const char *const bench_err_names[BENCH_ERR__COUNT] = {
    "refused", "connect-timeout", "connect", "reset", "closed", "timeout", "tls", "protocol", "io",
};

const char *const bench_lat_names[BENCH_LAT__COUNT] = {
    "connect_banner", "handshake_full", "handshake_resumed", "data_end_reply", "message",
};

static const char *const lat_titles[BENCH_LAT__COUNT] = {
    "connect -> banner",    "handshake, full",	      "handshake, resumed",
    "end of data -> reply", "message start -> reply",
};

void report_add(struct bench_totals *t, struct bench_counters *c)
{
	t->accepted += ctr_get(&c->accepted);
	t->tempfail += ctr_get(&c->tempfail);
	t->rejected += ctr_get(&c->rejected);
	t->failed += ctr_get(&c->failed);
	t->bytes += ctr_get(&c->bytes);
	t->hs_full += ctr_get(&c->hs_full);
	t->hs_resumed += ctr_get(&c->hs_resumed);
	t->conns_opened += ctr_get(&c->conns_opened);
	t->conns_open += ctr_get(&c->conns_open);
	t->errors += ctr_get(&c->errors);
	for (unsigned i = 0; i < BENCH_ERR__COUNT; i++)
		t->err[i] += ctr_get(&c->err[i]);
	for (unsigned i = 400; i < BENCH_CODE_MAX; i++)
		t->code[i] += atomic_load_explicit(&c->code[i], memory_order_relaxed);
}

/* "451=3 refused=2", at most max entries; "none" if nothing. */
static void errors_text(char *buf, size_t cap, const struct bench_totals *t, unsigned max)
{
	size_t n = 0;
	unsigned shown = 0;
	buf[0] = 0;
	for (unsigned i = 400; i < BENCH_CODE_MAX && shown < max; i++)
		if (t->code[i] && n < cap) {
			n += (size_t)snprintf(buf + n, cap - n, "%s%u=%llu", shown ? " " : "", i,
					      (unsigned long long)t->code[i]);
			shown++;
		}
	for (unsigned i = 0; i < BENCH_ERR__COUNT && shown < max; i++)
		if (t->err[i] && n < cap) {
			n += (size_t)snprintf(buf + n, cap - n, "%s%s=%llu", shown ? " " : "",
					      bench_err_names[i], (unsigned long long)t->err[i]);
			shown++;
		}
	if (!shown)
		snprintf(buf, cap, "none");
}

void report_progress(FILE *f, double t_s, double dt_s, const struct bench_totals *now,
		     const struct bench_totals *prev)
{
	char errs[256];
	errors_text(errs, sizeof(errs), now, 8);
	double msgs = (double)(now->accepted - prev->accepted) / dt_s;
	double mb = (double)(now->bytes - prev->bytes) / dt_s / 1e6;
	double full = (double)(now->hs_full - prev->hs_full) / dt_s;
	double res = (double)(now->hs_resumed - prev->hs_resumed) / dt_s;
	fprintf(f,
		"[%5.0fs] %9.0f msgs/s %8.2f MB/s  hs/s %6.0f full %6.0f resumed  conns %5llu  "
		"accepted %llu  errors: %s\n",
		t_s, msgs, mb, full, res, (unsigned long long)now->conns_open,
		(unsigned long long)now->accepted, errs);
	fflush(f);
}

static const char *mode_text(const struct bench_cfg *cfg, char *buf, size_t cap)
{
	const char *tls = cfg->tls == BENCH_TLS_STARTTLS   ? "STARTTLS"
			  : cfg->tls == BENCH_TLS_IMPLICIT ? "implicit TLS"
							   : "plaintext";
	const char *resume = cfg->resume == BENCH_RESUME_TICKETS ? ", resume tickets"
			     : cfg->resume == BENCH_RESUME_IDS	 ? ", resume session IDs"
								 : "";
	char ver[16] = "";
	if (cfg->tls && cfg->tls_version)
		snprintf(ver, sizeof(ver), " %d.%d", cfg->tls_version / 10, cfg->tls_version % 10);
	snprintf(buf, cap, "%s%s%s, %s, pipelining %s", tls, ver, cfg->tls ? resume : "",
		 cfg->bdat ? "BDAT" : "DATA", cfg->pipelining ? "on" : "off");
	return buf;
}

static const char *size_text(const struct bench_cfg *cfg, char *buf, size_t cap)
{
	if (cfg->size_mix)
		snprintf(buf, cap, "size mix");
	else
		snprintf(buf, cap, "%llu-byte messages", (unsigned long long)cfg->size);
	return buf;
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void table_latency(FILE *f, const struct bench_cfg *cfg,
			  const struct hist hist[BENCH_LAT__COUNT])
{
	uint64_t samples = 0;
	for (unsigned l = 0; l < BENCH_LAT__COUNT; l++)
		samples += hist[l].count;
	if (samples == 0) {
		fprintf(f, "  latency                no samples\n");
		return;
	}
	fprintf(f,
		"latency (ms)               count      p50      p90      p99    p99.9      max\n");
	for (unsigned l = 0; l < BENCH_LAT__COUNT; l++) {
		const struct hist *h = &hist[l];
		if (h->count == 0)
			continue;
		const char *title = lat_titles[l];
		if (l == BENCH_LAT_BANNER && cfg->tls == BENCH_TLS_IMPLICIT)
			title = "connect -> TLS, banner";
		fprintf(f, "  %-22s %9llu %8.3f %8.3f %8.3f %8.3f %8.3f\n", title,
			(unsigned long long)h->count, ms(hist_quantile(h, 0.5)),
			ms(hist_quantile(h, 0.9)), ms(hist_quantile(h, 0.99)),
			ms(hist_quantile(h, 0.999)), ms(h->max));
	}
}

void report_table(FILE *f, const struct bench_run *run, double elapsed_s,
		  const struct bench_totals *t, const struct hist hist[BENCH_LAT__COUNT])
{
	const struct bench_cfg *cfg = run->cfg;
	char mode[160], size[64], errs[1024];
	double e = elapsed_s > 0 ? elapsed_s : 1e-9;
	fprintf(f,
		"\n" BENCH_NAME " run %s: %s, %u connections, %u thread%s, %s loop, %s, %u "
		"rcpt%s, %s\n",
		run->run_id, cfg->server, cfg->connections, cfg->threads,
		cfg->threads == 1 ? "" : "s", cfg->rate > 0 ? "open" : "closed",
		size_text(cfg, size, sizeof(size)), cfg->rcpts, cfg->rcpts == 1 ? "" : "s",
		mode_text(cfg, mode, sizeof(mode)));
	if (cfg->nsources) {
		char a[64], b[64];
		fprintf(f, "  source addresses       %u (%s .. %s)\n", cfg->nsources,
			bench_addr_text(&cfg->source[0], a, sizeof(a)),
			bench_addr_text(&cfg->source[cfg->nsources - 1], b, sizeof(b)));
	}
	if (cfg->rate > 0)
		fprintf(f, "  offered rate           %.1f msgs/s\n", cfg->rate);
	fprintf(f, "  elapsed                %.3f s\n", elapsed_s);
	fprintf(f,
		"  messages               accepted %llu  temp-failed %llu  rejected %llu  "
		"failed %llu\n",
		(unsigned long long)t->accepted, (unsigned long long)t->tempfail,
		(unsigned long long)t->rejected, (unsigned long long)t->failed);
	fprintf(f, "  throughput             %.1f msgs/s  %.2f MB/s  (%llu bytes accepted)\n",
		(double)t->accepted / e, (double)t->bytes / e / 1e6, (unsigned long long)t->bytes);
	fprintf(f, "  connections            %llu opened, %.1f/s\n",
		(unsigned long long)t->conns_opened, (double)t->conns_opened / e);
	if (cfg->tls && t->tls_desc[0])
		fprintf(f, "  TLS                    %s (%s)\n", t->tls_desc, tlsc_library());
	if (cfg->tls)
		fprintf(f, "  handshakes             %.1f/s full (%llu), %.1f/s resumed (%llu)\n",
			(double)t->hs_full / e, (unsigned long long)t->hs_full,
			(double)t->hs_resumed / e, (unsigned long long)t->hs_resumed);
	fprintf(f, "  client CPU             %.2f s (%.0f%% of one core), %.1f us per message\n",
		t->cpu_s, 100 * t->cpu_s / e,
		t->accepted ? t->cpu_s * 1e6 / (double)t->accepted : 0.0);
	errors_text(errs, sizeof(errs), t, 64);
	fprintf(f, "  errors                 %s\n", errs);
	table_latency(f, cfg, hist);
	fflush(f);
}

static void json_hist(FILE *f, const struct hist *h)
{
	fprintf(f,
		"{\"count\": %llu, \"mean\": %.6f, \"p50\": %.6f, \"p90\": %.6f, \"p99\": %.6f, "
		"\"p99_9\": %.6f, \"max\": %.6f}",
		(unsigned long long)h->count, h->count ? ms(h->sum / h->count) : 0.0,
		ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.9)), ms(hist_quantile(h, 0.99)),
		ms(hist_quantile(h, 0.999)), ms(h->max));
}

static void json_config(FILE *f, const struct bench_cfg *cfg)
{
	static const char *const tls[] = {"none", "starttls", "implicit"};
	static const char *const resume[] = {"none", "tickets", "ids"};
	fprintf(
	    f,
	    "  \"config\": {\"server\": \"%s\", \"connections\": %u, \"threads\": %u, "
	    "\"messages\": %llu, \"duration_s\": %g, \"msgs_per_conn\": %u, \"size\": %llu, "
	    "\"size_dist\": \"%s\", \"rcpts\": %u, \"pipelining\": %s, \"bdat\": %s, "
	    "\"bdat_chunk\": %llu, \"tls\": \"%s\", \"tls_version\": \"%s\", \"resume\": \"%s\", "
	    "\"rate\": %g, \"timeout_s\": %g, \"sources\": %u},\n",
	    cfg->server, cfg->connections, cfg->threads, (unsigned long long)cfg->messages,
	    cfg->duration_s, cfg->msgs_per_conn, (unsigned long long)cfg->size,
	    cfg->size_mix ? "mix" : "fixed", cfg->rcpts, cfg->pipelining ? "true" : "false",
	    cfg->bdat ? "true" : "false", (unsigned long long)cfg->bdat_chunk, tls[cfg->tls],
	    cfg->tls_version == 12   ? "1.2"
	    : cfg->tls_version == 13 ? "1.3"
				     : "any",
	    resume[cfg->resume], cfg->rate, cfg->timeout_s, cfg->nsources);
}

static void json_errors(FILE *f, const struct bench_totals *t)
{
	fprintf(f, "  \"errors\": {");
	for (unsigned i = 0; i < BENCH_ERR__COUNT; i++)
		fprintf(f, "%s\"%s\": %llu", i ? ", " : "", bench_err_names[i],
			(unsigned long long)t->err[i]);
	fprintf(f, "},\n  \"reply_codes\": {");
	bool first = true;
	for (unsigned i = 400; i < BENCH_CODE_MAX; i++)
		if (t->code[i]) {
			fprintf(f, "%s\"%u\": %llu", first ? "" : ", ", i,
				(unsigned long long)t->code[i]);
			first = false;
		}
	fprintf(f, "},\n");
}

int report_json(const char *path, const struct bench_run *run, double elapsed_s,
		const struct bench_totals *t, const struct hist hist[BENCH_LAT__COUNT])
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	double e = elapsed_s > 0 ? elapsed_s : 1e-9;
	fprintf(f,
		"{\n  \"tool\": \"" BENCH_NAME "\",\n  \"run_id\": \"%s\",\n  \"tls_library\": "
		"\"%s\",\n",
		run->run_id, tlsc_library());
	json_config(f, run->cfg);
	fprintf(
	    f,
	    "  \"elapsed_s\": %.6f,\n  \"messages\": {\"accepted\": %llu, \"tempfail\": %llu, "
	    "\"rejected\": %llu, \"failed\": %llu},\n  \"bytes\": %llu,\n  \"msgs_per_s\": "
	    "%.3f,\n  \"mb_per_s\": %.3f,\n  \"connections_opened\": %llu,\n  \"client_cpu_s\": "
	    "%.3f,\n",
	    elapsed_s, (unsigned long long)t->accepted, (unsigned long long)t->tempfail,
	    (unsigned long long)t->rejected, (unsigned long long)t->failed,
	    (unsigned long long)t->bytes, (double)t->accepted / e, (double)t->bytes / e / 1e6,
	    (unsigned long long)t->conns_opened, t->cpu_s);
	fprintf(f,
		"  \"handshakes\": {\"full\": %llu, \"resumed\": %llu, \"full_per_s\": %.3f, "
		"\"resumed_per_s\": %.3f, \"negotiated\": \"%s\"},\n",
		(unsigned long long)t->hs_full, (unsigned long long)t->hs_resumed,
		(double)t->hs_full / e, (double)t->hs_resumed / e, t->tls_desc);
	json_errors(f, t);
	fprintf(f, "  \"latency_ms\": {");
	for (unsigned l = 0; l < BENCH_LAT__COUNT; l++) {
		fprintf(f, "%s\n    \"%s\": ", l ? "," : "", bench_lat_names[l]);
		json_hist(f, &hist[l]);
	}
	fprintf(f, "\n  }\n}\n");
	int rc = ferror(f) ? -EIO : 0;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	return rc;
}
