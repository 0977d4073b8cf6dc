/*
 * main.c - process start: configuration, writers, shards, signals.
 *
 * mxring runs in the foreground and logs to standard error. Start-up order:
 * configuration (file, then -o overrides, then checks), the spool (writers
 * recover their segments before anything listens), one shard per CPU, then
 * the "ready" line. Signals are blocked in every thread and taken here with
 * sigtimedwait: SIGTERM/SIGINT stop (stop accepting, let transactions end or
 * answer 421, drain the writers, exit 0); SIGHUP reloads the TLS certificate,
 * key and ticket keys. Meanwhile this thread writes the live stats line every
 * stats_interval seconds; the exit stats line comes after the shards end.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "shard.h"
#include "smtp.h"
#include "spool.h"
#include "tls.h"
#include "writer.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: mxring [-c FILE] [-o key=value]... [-n]\n"
		   "  -c FILE        read the configuration (key = value lines)\n"
		   "  -o key=value   override one key (repeatable)\n"
		   "  -n             print the effective configuration and exit\n"
		   "  -h             this help\n");
}

/* Everything the stats lines report, summed over shards and writers. */
struct totals {
	struct shard_stats s;
	struct shard_gauges g;
	struct writer_stats w;
	struct sesscache_stats cs;
};

static void totals_get(struct shard **shards, unsigned n, struct writer_set *ws, struct totals *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < n; i++) {
		struct shard_stats one;
		shard_stats_get(shards[i], &one);
		uint64_t *d = (uint64_t *)&t->s, *s = (uint64_t *)&one;
		for (size_t k = 0; k < sizeof(one) / sizeof(uint64_t); k++)
			d[k] += s[k];
		struct shard_gauges g;
		shard_gauges_get(shards[i], &g);
		d = (uint64_t *)&t->g, s = (uint64_t *)&g;
		for (size_t k = 0; k < sizeof(g) / sizeof(uint64_t); k++)
			d[k] += s[k];
	}
	writers_stats(ws, &t->w);
	tls_session_cache_stats(&t->cs);
}

/* The counters as key=value pairs, the same in the live and the exit line. */
static void counters_text(char *buf, size_t cap, const struct totals *t)
{
	const struct shard_stats *s = &t->s;
	snprintf(buf, cap,
		 "conns_accepted=%llu conns_refused=%llu conns_closed=%llu conns_lingered=%llu "
		 "msgs_queued=%llu "
		 "msgs_failed=%llu body_bytes=%llu body_copied=%llu parts=%llu enobufs=%llu "
		 "recv_paused=%llu ring_full=%llu tls_handshakes=%llu tls_resumed=%llu "
		 "tls_failed=%llu tls_plain_bytes=%llu tls_in_place=%llu tls_held_bytes=%llu "
		 "tls_cache_hits=%llu tls_cache_misses=%llu "
		 "tls_cache_stores=%llu tls_cache_evictions=%llu tls_cache_entries=%llu "
		 "writer_batches=%llu writer_finals=%llu writer_errors=%llu proxy_errors=%llu",
		 (unsigned long long)s->conns_accepted, (unsigned long long)s->conns_refused,
		 (unsigned long long)s->conns_closed, (unsigned long long)s->conns_lingered,
		 (unsigned long long)s->msgs_queued, (unsigned long long)s->msgs_failed,
		 (unsigned long long)s->body_bytes, (unsigned long long)s->body_copied,
		 (unsigned long long)s->parts, (unsigned long long)s->enobufs,
		 (unsigned long long)s->recv_paused, (unsigned long long)s->ring_full,
		 (unsigned long long)s->tls_handshakes, (unsigned long long)s->tls_resumed,
		 (unsigned long long)s->tls_failed, (unsigned long long)s->tls_plain_bytes,
		 (unsigned long long)s->tls_in_place, (unsigned long long)s->tls_held_bytes,
		 (unsigned long long)t->cs.hits, (unsigned long long)t->cs.misses,
		 (unsigned long long)t->cs.stores, (unsigned long long)t->cs.evictions,
		 (unsigned long long)t->cs.entries, (unsigned long long)t->w.batches,
		 (unsigned long long)t->w.finals, (unsigned long long)t->w.errors,
		 (unsigned long long)s->proxy_errors);
}

static void log_stats(struct shard **shards, unsigned n, struct writer_set *ws)
{
	struct totals t;
	char text[LOG_LINE_MAX];
	totals_get(shards, n, ws, &t);
	counters_text(text, sizeof(text), &t);
	log_line("stats %s", text);
}

/* Resident memory from /proc/self/statm (its second field, in pages); 0 if unreadable. */
static unsigned long long rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long long size, resident = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (unsigned long long)sysconf(_SC_PAGESIZE) / 1024;
}

/*
 * The live line, every stats_interval seconds: what the process holds now
 * (gauges, as of each shard's last loop pass), then the counters so far.
 */
static void log_live_stats(struct shard **shards, unsigned n, struct writer_set *ws,
			   uint64_t uptime_s)
{
	struct totals t;
	char text[LOG_LINE_MAX];
	totals_get(shards, n, ws, &t);
	counters_text(text, sizeof(text), &t);
	const struct shard_gauges *g = &t.g;
	log_line("stats live uptime_s=%llu conns_open=%llu tls_sessions=%llu recv_bufs_used=%llu "
		 "recv_bufs_total=%llu plain_bufs_used=%llu plain_bufs_total=%llu "
		 "msgs_at_writers=%llu writer_queue=%llu writer_queue_cap=%llu "
		 "send_queued_bytes=%llu rss_kib=%llu %s",
		 (unsigned long long)uptime_s, (unsigned long long)g->conns_open,
		 (unsigned long long)g->tls_sessions, (unsigned long long)g->recv_bufs_used,
		 (unsigned long long)g->recv_bufs_total, (unsigned long long)g->plain_bufs_used,
		 (unsigned long long)g->plain_bufs_total, (unsigned long long)g->msgs_at_writers,
		 (unsigned long long)t.w.queued, (unsigned long long)t.w.queue_cap,
		 (unsigned long long)g->send_queued_bytes, rss_kib(), text);
}

/* Each connection is a descriptor: raise the soft limit as far as the hard one allows. */
static void raise_nofile(const struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rlim_t want = (rlim_t)cfg->max_connections + 1024;
	if (rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		log_line("warning: open files limited to %llu; max_connections=%u wants %llu",
			 (unsigned long long)rl.rlim_cur, cfg->max_connections,
			 (unsigned long long)want);
}

/*
 * SIGHUP: certificate, key and ticket keys are read again. New sessions use
 * the new context; running ones keep theirs. A bad file keeps the old one.
 */
static void reload_tls(const struct config *cfg)
{
	if (cfg->tls_security_level == TLS_LEVEL_NONE && !cfg->nsmtps_listen) {
		log_line("reload: tls is off, nothing to reload");
		return;
	}
	char *why = NULL;
	size_t why_len = 0;
	FILE *err = open_memstream(&why, &why_len);
	struct tls_ctx *ctx;
	int rc = err ? tls_ctx_new(cfg, &ctx, err) : -1;
	if (err)
		fclose(err);
	if (rc == 0) {
		tls_set_current(ctx);
		log_line("reload: tls certificate and keys loaded cert=%s", cfg->tls_cert_file);
	} else {
		if (why_len && why[why_len - 1] == '\n')
			why[why_len - 1] = 0;
		char esc[LOG_CLIENT_TEXT_MAX * 4 + 8];
		log_escape(esc, sizeof(esc), why ? why : "", why ? strlen(why) : 0, 200);
		log_line("reload: failed, keeping the old tls context: \"%s\"", esc);
	}
	free(why);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Waits for SIGTERM/SIGINT (returned) or SIGHUP (handled here), writing the
 * live stats line every cfg->stats_interval seconds meanwhile.
 */
static int wait_for_stop(const struct config *cfg, struct shard **shards, unsigned n,
			 struct writer_set *ws)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	uint64_t start = mono_ms(), every = (uint64_t)cfg->stats_interval * 1000;
	uint64_t next = start + every;
	for (;;) {
		int sig;
		if (every) {
			uint64_t now = mono_ms();
			if (now >= next) {
				log_live_stats(shards, n, ws, (now - start) / 1000);
				/* A late wake-up (a stopped process) skips lines, never bunches
				 * them. */
				next += every;
				if (next <= now)
					next = now + every;
				continue;
			}
			struct timespec ts = {.tv_sec = (time_t)((next - now) / 1000),
					      .tv_nsec = (long)((next - now) % 1000) * 1000000};
			sig = sigtimedwait(&set, NULL, &ts);
		} else {
			sig = sigwaitinfo(&set, NULL);
		}
		if (sig == SIGHUP)
			reload_tls(cfg);
		else if (sig == SIGTERM || sig == SIGINT)
			return sig;
	}
}

static int run(struct config *cfg)
{
	struct smtp_conf sconf;
	struct writer_set *ws = NULL;
	struct shard *shards[SHARDS_MAX];
	unsigned nshards = 0;
	int rc;

	rc = spool_mkdir(cfg->spool_dir);
	if (rc) {
		fprintf(stderr, "mxring: spool_dir %s: %s\n", cfg->spool_dir, strerror(-rc));
		return 1;
	}
	raise_nofile(cfg);
	bool tls_on = cfg->tls_security_level != TLS_LEVEL_NONE;
	if (tls_on || cfg->nsmtps_listen) {
		struct tls_ctx *ctx;
		if (tls_ctx_new(cfg, &ctx, stderr) != 0)
			return 1;
		tls_set_current(ctx);
	}
	smtp_conf_init(&sconf, cfg, tls_on);
	rc = writers_start(cfg, cfg->shards, &ws);
	if (rc)
		return 1;
	for (; nshards < cfg->shards; nshards++) {
		rc = shard_create(nshards, cfg, &sconf, ws, &shards[nshards]);
		if (rc)
			goto fail;
	}
	for (unsigned i = 0; i < nshards; i++) {
		rc = shard_start(shards[i]);
		if (rc) {
			fprintf(stderr, "mxring: shard %u: %s\n", i, strerror(-rc));
			for (unsigned k = 0; k < i; k++)
				shard_stop(shards[k]);
			for (unsigned k = 0; k < i; k++)
				shard_join(shards[k]);
			for (unsigned k = 0; k < nshards; k++)
				shard_free(shards[k]);
			writers_stop(ws);
			return 1;
		}
	}
	char where[LISTEN_MAX * 72] = "";
	size_t off = 0;
	for (unsigned i = 0; i < cfg->nlisten && off < sizeof(where); i++)
		off += (size_t)snprintf(
		    where + off, sizeof(where) - off, "%s%s%s%s:%u", i ? "," : "",
		    strchr(cfg->listen[i].host, ':') ? "[" : "", cfg->listen[i].host,
		    strchr(cfg->listen[i].host, ':') ? "]" : "", cfg->listen[i].port);
	char smtps[LISTEN_MAX * 72] = "";
	off = 0;
	for (unsigned i = 0; i < cfg->nsmtps_listen && off < sizeof(smtps); i++) {
		const struct listen_addr *a = &cfg->smtps_listen[i];
		bool v6 = strchr(a->host, ':') != NULL;
		off += (size_t)snprintf(smtps + off, sizeof(smtps) - off, " %s%s%s%s:%u",
					i ? "," : "smtps_listen=", v6 ? "[" : "", a->host,
					v6 ? "]" : "", a->port);
	}
	log_line("ready listen=%s%s shards=%u writers=%u spool=%s format=%s starttls=%s "
		 "tls_records=%s pid=%d",
		 where, smtps, cfg->shards, cfg->writers, cfg->spool_dir,
		 cfg->spool_format == SPOOL_MAILDIR ? "maildir" : "segment", tls_on ? "yes" : "no",
		 tls_on ? tls_records_mode() : "none", (int)getpid());

	wait_for_stop(cfg, shards, nshards, ws);
	log_line("stopping: no new connections, transactions may finish (up to %us)",
		 cfg->shutdown_timeout);
	for (unsigned i = 0; i < nshards; i++)
		shard_stop(shards[i]);
	int failed = 0;
	for (unsigned i = 0; i < nshards; i++) {
		shard_join(shards[i]);
		failed |= shard_failed(shards[i]);
	}
	log_stats(shards, nshards, ws);
	for (unsigned i = 0; i < nshards; i++)
		shard_free(shards[i]);
	writers_stop(ws);
	tls_set_current(NULL);
	log_line(failed ? "stopped after a shard failed" : "stopped");
	return failed ? 1 : 0;
fail:
	for (unsigned i = 0; i < nshards; i++)
		shard_free(shards[i]);
	writers_stop(ws);
	return 1;
}

/*
 * Reads the file (-c), then the overrides (-o) whatever their order on the
 * line, then checks. Returns -1 to go on, or the exit code (0 after -h or
 * -n, 1 for a bad configuration, 2 for bad usage).
 */
static int configure(struct config *cfg, int argc, char **argv)
{
	const char *file = NULL;
	int print = 0;
	int opt;

	while ((opt = getopt(argc, argv, "c:o:nh")) != -1) {
		switch (opt) {
		case 'c':
			file = optarg;
			break;
		case 'o':
			break;
		case 'n':
			print = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (file && config_load(cfg, file, stderr) != 0)
		return 1;
	optind = 1;
	while ((opt = getopt(argc, argv, "c:o:nh")) != -1)
		if (opt == 'o' && config_set(cfg, optarg, stderr) != 0)
			return 1;
	if (cfg->shards == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->shards = n < 1 ? 1 : n > SHARDS_MAX ? SHARDS_MAX : (unsigned)n;
	}
	if (config_check(cfg, stderr) != 0)
		return 1;
	if (print) {
		config_print(cfg, stdout);
		return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct config cfg;

	config_defaults(&cfg);
	int rc = configure(&cfg, argc, argv);
	if (rc < 0) {
		/* Every thread inherits this mask; signals are taken in run(). */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigaddset(&set, SIGINT);
		sigaddset(&set, SIGHUP);
		sigaddset(&set, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
		rc = run(&cfg);
	}
	config_free(&cfg);
	return rc;
}
