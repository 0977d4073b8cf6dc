/*
 * main.c - process start: configuration, writers, shards, signals.
 *
 * mxring runs in the foreground and logs to standard error. Start-up order:
 * configuration (file, then -o overrides, then checks), the spool (writers
 * recover their segments before anything listens), one shard per CPU, then
 * the "ready" line. Signals are blocked in every thread and taken here with
 * sigwaitinfo: SIGTERM/SIGINT stop (stop accepting, let transactions end or
 * answer 421, drain the writers, exit 0); SIGHUP is logged (nothing to reload
 * without TLS).
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

static void log_stats(struct shard **shards, unsigned n, struct writer_set *ws)
{
	struct shard_stats sum = {0}, one;
	for (unsigned i = 0; i < n; i++) {
		shard_stats_get(shards[i], &one);
		uint64_t *d = (uint64_t *)&sum, *s = (uint64_t *)&one;
		for (size_t k = 0; k < sizeof(sum) / sizeof(uint64_t); k++)
			d[k] += s[k];
	}
	struct writer_stats w;
	writers_stats(ws, &w);
	struct sesscache_stats cs;
	tls_session_cache_stats(&cs);
	log_line(
	    "stats conns_accepted=%llu conns_refused=%llu conns_closed=%llu conns_lingered=%llu "
	    "msgs_queued=%llu msgs_failed=%llu body_bytes=%llu body_copied=%llu parts=%llu "
	    "enobufs=%llu recv_paused=%llu ring_full=%llu tls_handshakes=%llu tls_resumed=%llu "
	    "tls_failed=%llu tls_plain_bytes=%llu tls_cache_hits=%llu tls_cache_misses=%llu "
	    "tls_cache_stores=%llu tls_cache_evictions=%llu tls_cache_entries=%llu "
	    "writer_batches=%llu writer_finals=%llu writer_errors=%llu proxy_errors=%llu",
	    (unsigned long long)sum.conns_accepted, (unsigned long long)sum.conns_refused,
	    (unsigned long long)sum.conns_closed, (unsigned long long)sum.conns_lingered,
	    (unsigned long long)sum.msgs_queued, (unsigned long long)sum.msgs_failed,
	    (unsigned long long)sum.body_bytes, (unsigned long long)sum.body_copied,
	    (unsigned long long)sum.parts, (unsigned long long)sum.enobufs,
	    (unsigned long long)sum.recv_paused, (unsigned long long)sum.ring_full,
	    (unsigned long long)sum.tls_handshakes, (unsigned long long)sum.tls_resumed,
	    (unsigned long long)sum.tls_failed, (unsigned long long)sum.tls_plain_bytes,
	    (unsigned long long)cs.hits, (unsigned long long)cs.misses,
	    (unsigned long long)cs.stores, (unsigned long long)cs.evictions,
	    (unsigned long long)cs.entries, (unsigned long long)w.batches,
	    (unsigned long long)w.finals, (unsigned long long)w.errors,
	    (unsigned long long)sum.proxy_errors);
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
	log_line("ready listen=%s%s shards=%u writers=%u spool=%s format=%s starttls=%s pid=%d",
		 where, smtps, cfg->shards, cfg->writers, cfg->spool_dir,
		 cfg->spool_format == SPOOL_MAILDIR ? "maildir" : "segment", tls_on ? "yes" : "no",
		 (int)getpid());

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		int sig = sigwaitinfo(&set, NULL);
		if (sig == SIGHUP) {
			reload_tls(cfg);
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT)
			break;
	}
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
