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
#include <getopt.h>
#include <fcntl.h>
#include <stddef.h>
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

#include "clock.h"
#include "config.h"
#include "dnsbl.h"
#include "log.h"
#include "listen.h"
#include "metrics.h"
#include "notify.h"
#include "priv.h"
#include "relay.h"
#include "sandbox.h"
#include "screen.h"
#include "setup_check.h"
#include "shard.h"
#include "smtp.h"
#include "spool.h"
#include "tls.h"
#include "writer.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: mxring [-c FILE] [-o key=value]... [-n | --check]\n"
		   "  -c FILE        read the configuration (key = value lines)\n"
		   "  -o key=value   override one key (repeatable)\n"
		   "  -n             print the effective configuration and exit\n"
		   "  --check        check the set-up (user, certificates and keys, their\n"
		   "                 modes, the spool) and exit: 0 ready, 1 problems,\n"
		   "                 2 a bad configuration\n"
		   "  -h             this help\n");
}

/* Everything the stats lines report, summed over shards and writers. */
struct totals {
	struct shard_stats s;
	struct shard_gauges g;
	struct writer_stats w;
	struct sesscache_stats cs;
	struct dnsbl_stats d;
};

/* The DNS list resolver, for the totals; NULL without dnsbl_sites. */
static struct dnsbl *dnsbl_live;

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
	if (dnsbl_live)
		dnsbl_stats_get(dnsbl_live, &t->d);
}

/*
 * One number of the totals: its name in the stats lines (and, as
 * mxring_NAME, with _total for a counter, on /metrics), where it is, and
 * what it is. The lines and the page are both made from these tables, so
 * neither can miss one.
 */
struct stat_def {
	const char *name;
	size_t off; /* of its uint64_t in struct totals */
	bool gauge; /* a level now, not a count since start */
	const char *help;
};

#define TS(f) offsetof(struct totals, s.f)
#define TG(f) offsetof(struct totals, g.f)
#define TW(f) offsetof(struct totals, w.f)
#define TC(f) offsetof(struct totals, cs.f)
#define TD(f) offsetof(struct totals, d.f)

/* In the live and the exit line, in this order. */
static const struct stat_def counter_defs[] = {
    {"conns_accepted", TS(conns_accepted), false, "Connections accepted."},
    {"conns_refused", TS(conns_refused), false, "Connections refused at accept (421)."},
    {"conns_closed", TS(conns_closed), false, "Connections closed."},
    {"conns_lingered", TS(conns_lingered), false, "Connections closed with a lingering close."},
    {"msgs_queued", TS(msgs_queued), false, "Messages stored and acknowledged with 250."},
    {"msgs_failed", TS(msgs_failed), false, "Messages refused at the end of data (4xx/5xx)."},
    {"body_bytes", TS(body_bytes), false, "Content bytes handed to writers."},
    {"body_copied", TS(body_copied), false, "Content bytes copied in user space."},
    {"parts", TS(parts), false, "Message parts handed to writers before the end of data."},
    {"enobufs", TS(enobufs), false, "Receives stopped because the buffer ring ran dry."},
    {"recv_paused", TS(recv_paused), false, "Receives paused for a connection with unread input."},
    {"ring_full", TS(ring_full), false, "Ends of data refused because a writer ring was full."},
    {"tls_handshakes", TS(tls_handshakes), false, "TLS handshakes completed."},
    {"tls_resumed", TS(tls_resumed), false, "TLS handshakes that resumed a session."},
    {"tls_failed", TS(tls_failed), false, "TLS handshakes or records that failed."},
    {"tls_plain_bytes", TS(tls_plain_bytes), false, "Bytes decrypted into plaintext buffers."},
    {"tls_in_place", TS(tls_in_place), false, "TLS sessions whose records are opened in place."},
    {"tls_held_bytes", TS(tls_held_bytes), false,
     "Ciphertext bytes copied out of receive buffers."},
    {"tls_cache_hits", TC(hits), false, "TLS session cache lookups that found an entry."},
    {"tls_cache_misses", TC(misses), false, "TLS session cache lookups that found none."},
    {"tls_cache_stores", TC(stores), false, "TLS session cache entries stored."},
    {"tls_cache_evictions", TC(evictions), false, "TLS session cache entries pushed out."},
    {"tls_cache_entries", TC(entries), true, "TLS session cache entries held."},
    {"writer_batches", TW(batches), false, "Writer batches (one sync each)."},
    {"writer_finals", TW(finals), false, "Messages the writers completed."},
    {"writer_errors", TW(errors), false, "Writer errors (a message failed to store)."},
    {"proxy_errors", TS(proxy_errors), false, "Bad, missing or late PROXY protocol headers."},
    {"rcpt_unknown", TS(rcpt_unknown), false, "Recipients refused as unknown (recipient_table)."},
    {"rate_limited_connections", TS(rate_limited_conns), false,
     "Connections refused by client_connection_rate_limit."},
    {"rate_limited_messages", TS(rate_limited_msgs), false,
     "MAIL commands refused by client_message_rate_limit."},
    {"dnsbl_cache_hits", TS(dnsbl_cache_hits), false, "DNS list verdicts found in the cache."},
    {"dnsbl_listed", TS(dnsbl_listed), false,
     "Clients whose DNS list score reached the threshold."},
    {"dnsbl_allowlisted", TS(dnsbl_allowlisted), false,
     "Clients a DNS allowlist (negative weight) matched."},
    {"dnsbl_overflow", TS(dnsbl_overflow), false,
     "Clients not checked: their shard had too many DNS requests out."},
    {"dnsbl_requests", TD(requests), false, "DNS list requests (one per client not cached)."},
    {"dnsbl_queries", TD(queries), false, "DNS list queries sent."},
    {"dnsbl_answers", TD(answers), false, "DNS list queries answered (NOERROR or NXDOMAIN)."},
    {"dnsbl_timeouts", TD(timeouts), false, "DNS list queries not answered within dnsbl_timeout."},
    {"dnsbl_failures", TD(failures), false, "DNS list queries that failed (SERVFAIL, errors)."},
    {"dnsbl_cache_stores", TD(cached), false, "DNS list verdicts stored in the cache."},
    {"dnsbl_cache_evictions", TD(evicted), false, "DNS list cache entries replaced early."},
    {"dnsbl_resolver_overflows", TD(overflows), false,
     "DNS list requests given back unasked: every query slot was in use."},
};

/* In the live line, before the counters. */
static const struct stat_def gauge_defs[] = {
    {"conns_open", TG(conns_open), true, "Connections open."},
    {"tls_sessions", TG(tls_sessions), true, "Connections with a TLS session."},
    {"recv_bufs_used", TG(recv_bufs_used), true, "Receive buffers out of the kernel's ring."},
    {"recv_bufs_capacity", TG(recv_bufs_capacity), true, "Receive buffers in all."},
    {"plain_bufs_used", TG(plain_bufs_used), true, "Decrypted-input buffers in use."},
    {"plain_bufs_capacity", TG(plain_bufs_capacity), true, "Decrypted-input buffers in all."},
    {"msgs_at_writers", TG(msgs_at_writers), true, "Messages handed to writers, not yet back."},
    {"writer_queue", TW(queued), true, "Messages in the shard-to-writer rings."},
    {"writer_queue_cap", TW(queue_cap), true, "What the shard-to-writer rings hold at most."},
    {"send_queued_bytes", TG(send_queued_bytes), true,
     "Reply bytes handed to sends, not yet sent."},
};

#define NDEFS(a) (sizeof(a) / sizeof((a)[0]))

/* The uint64_t at d->off of t (a struct totals, or relay_defs' struct relay_stats). */
static uint64_t stat_value(const void *t, const struct stat_def *d)
{
	uint64_t v;
	memcpy(&v, (const char *)t + d->off, sizeof(v));
	return v;
}

/* "name=value ..." of defs, appended at buf + *off (bounded by cap). */
static void stats_text(char *buf, size_t cap, size_t *off, const struct totals *t,
		       const struct stat_def *defs, size_t n)
{
	for (size_t i = 0; i < n && *off < cap; i++) {
		int k = snprintf(buf + *off, cap - *off, "%s%s=%llu", *off ? " " : "", defs[i].name,
				 (unsigned long long)stat_value(t, &defs[i]));
		if (k < 0)
			return;
		*off += (size_t)k < cap - *off ? (size_t)k : cap - *off - 1;
	}
}

/* The counters as key=value pairs, the same in the live and the exit line. */
static void counters_text(char *buf, size_t cap, const struct totals *t)
{
	size_t off = 0;
	buf[0] = '\0';
	stats_text(buf, cap, &off, t, counter_defs, NDEFS(counter_defs));
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
/* /proc/self/statm, opened at start: the sandbox leaves /proc out of reach. */
static int statm_fd = -1;

static unsigned long long rss_kib(void)
{
	char buf[128];
	unsigned long long size, resident;
	ssize_t n = statm_fd >= 0 ? pread(statm_fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n <= 0)
		return 0;
	buf[n] = 0;
	if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
		return 0;
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
	char gauges[LOG_LINE_MAX], text[LOG_LINE_MAX];
	size_t off = 0;
	totals_get(shards, n, ws, &t);
	gauges[0] = '\0';
	stats_text(gauges, sizeof(gauges), &off, &t, gauge_defs, NDEFS(gauge_defs));
	counters_text(text, sizeof(text), &t);
	log_line("stats live uptime_s=%llu %s rss_kib=%llu %s", (unsigned long long)uptime_s,
		 gauges, rss_kib(), text);
}

/* What the metrics page reads. */
struct page_src {
	struct shard **shards;
	unsigned nshards;
	struct writer_set *ws;
	struct relay *relay; /* NULL: no relay_host */
	uint64_t start_ms;
};

/* The relay's part of the /metrics page: struct relay_stats, as page_defs writes totals. */
#define RS(f) offsetof(struct relay_stats, f)
static const struct stat_def relay_defs[] = {
    {"relay_queue_messages", RS(queue_msgs), true, "Messages waiting for the hub, in memory."},
    {"relay_queue_bytes", RS(queue_bytes), true, "Bytes of the spool's segments not deleted yet."},
    {"relay_oldest_message_age_seconds", RS(oldest_age_s), true,
     "Age of the oldest message waiting."},
    {"relay_sent", RS(sent), false, "Recipients the hub took."},
    {"relay_deferred", RS(deferred), false, "Recipient deliveries deferred."},
    {"relay_bounced", RS(bounced), false, "Recipients failed or expired."},
    {"relay_dsn_sent", RS(dsn_sent), false, "Delivery status notifications the hub took."},
    {"relay_sessions", RS(sessions), false, "Sessions opened to the hub."},
    {"relay_connect_failures", RS(connect_fails), false, "Connections to the hub that failed."},
    {"relay_segments_deleted", RS(segments_done), false, "Segments deleted once all delivered."},
    {"relay_journal_errors", RS(journal_errors), false, "Delivery journal syncs that failed."},
    {"relay_tls_full", RS(tls_sessions), false, "Full STARTTLS handshakes to the hub."},
    {"relay_tls_resumed", RS(tls_resumed), false, "Resumed STARTTLS handshakes to the hub."},
    {"relay_tls_failed", RS(tls_failures), false, "STARTTLS handshakes to the hub that failed."},
};
#undef RS

static void page_defs(char *buf, size_t cap, size_t *off, const void *t,
		      const struct stat_def *defs, size_t n)
{
	for (size_t i = 0; i < n && *off < cap; i++) {
		const struct stat_def *d = &defs[i];
		const char *sfx = d->gauge ? "" : "_total";
		int k =
		    snprintf(buf + *off, cap - *off,
			     "# HELP mxring_%s%s %s\n# TYPE mxring_%s%s %s\nmxring_%s%s %llu\n",
			     d->name, sfx, d->help, d->name, sfx, d->gauge ? "gauge" : "counter",
			     d->name, sfx, (unsigned long long)stat_value(t, d));
		if (k < 0)
			return;
		*off += (size_t)k < cap - *off ? (size_t)k : cap - *off;
	}
}

/* The /metrics page (Prometheus text format): the same numbers as the live line. */
static size_t render_page(void *arg, char *buf, size_t cap)
{
	const struct page_src *src = arg;
	struct totals t;
	size_t off = 0;
	totals_get(src->shards, src->nshards, src->ws, &t);
	int k =
	    snprintf(buf, cap,
		     "# HELP mxring_uptime_seconds Seconds since start.\n"
		     "# TYPE mxring_uptime_seconds gauge\nmxring_uptime_seconds %llu\n"
		     "# HELP mxring_resident_memory_bytes Resident memory of the process.\n"
		     "# TYPE mxring_resident_memory_bytes gauge\n"
		     "mxring_resident_memory_bytes %llu\n",
		     (unsigned long long)((mono_ms() - src->start_ms) / 1000), rss_kib() * 1024);
	if (k < 0)
		return 0;
	off = (size_t)k < cap ? (size_t)k : cap;
	page_defs(buf, cap, &off, &t, gauge_defs, NDEFS(gauge_defs));
	page_defs(buf, cap, &off, &t, counter_defs, NDEFS(counter_defs));
	if (src->relay) {
		struct relay_stats r;
		relay_stats(src->relay, &r);
		page_defs(buf, cap, &off, &r, relay_defs, NDEFS(relay_defs));
	}
	return off;
}

/*
 * Descriptors that are not connections: standard streams, log, the rings,
 * eventfds, listeners and the metrics listener, each writer's spool (lock,
 * directories, segment), certificate and table files read at reload, and
 * the spool tool an operator runs beside it.
 */
static rlim_t fd_reserve(const struct config *cfg)
{
	/* Test hook (tests/integration/test_hostile.py): no reserve, so that
	 * connections alone run the process out of descriptors. */
	const char *test = getenv("MXRING_TEST_NOFILE_RESERVE");
	if (test)
		return (rlim_t)strtoul(test, NULL, 10);
	return NOFILE_RESERVE + (rlim_t)cfg->shards * (cfg->nlisten + cfg->nsmtps_listen + 4) +
	       (rlim_t)cfg->writers * 16 +
	       (cfg->nrelay_host ? (rlim_t)cfg->relay_workers * (cfg->relay_connections + 64) : 0);
}

/*
 * Each connection is a descriptor (two with maildir, whose multi-part
 * messages keep a tmp file open): raises the soft limit as far as the hard
 * one allows, and lowers max_connections to what then fits beside the
 * reserve. The excess is then refused at accept with a 421 (too many
 * connections), instead of every accept failing with EMFILE. -1 when not
 * even one connection per shard fits.
 */
static int fit_nofile(struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	rlim_t per_conn = cfg->spool_format == SPOOL_MAILDIR ? 2 : 1;
	rlim_t reserve = fd_reserve(cfg);
	rlim_t want = (rlim_t)cfg->max_connections * per_conn + reserve;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
			return 0;
	}
	if (rl.rlim_cur >= want)
		return 0;
	rlim_t fit = rl.rlim_cur > reserve ? (rl.rlim_cur - reserve) / per_conn : 0;
	if (fit < cfg->shards) {
		fprintf(stderr,
			"mxring: open files limited to %llu, which leaves no room for connections "
			"(%llu kept for the spool, listeners and reloads): raise the limit "
			"(ulimit -n, LimitNOFILE=)\n",
			(unsigned long long)rl.rlim_cur, (unsigned long long)reserve);
		return -1;
	}
	log_line("warning: open files limited to %llu; max_connections lowered from %u to %llu "
		 "(%llu descriptors kept for the spool, listeners and reloads)",
		 (unsigned long long)rl.rlim_cur, cfg->max_connections, (unsigned long long)fit,
		 (unsigned long long)reserve);
	cfg->max_connections = (unsigned)fit;
	return 0;
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

/*
 * Waits for SIGTERM/SIGINT (returned) or SIGHUP (handled here), writing the
 * live stats line every cfg->stats_interval seconds meanwhile.
 */
static int wait_for_stop(const struct config *cfg, struct shard **shards, unsigned n,
			 struct writer_set *ws, struct relay *relay)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
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
		if (sig == SIGHUP) {
			notify_reloading();
			reload_tls(cfg);
			screen_reload(cfg, shards, n);
			(void)relay_reload(relay);
			notify_send("READY=1");
		} else if (sig == SIGUSR1) {
			relay_retry_now(relay);
		} else if (sig == SIGTERM || sig == SIGINT)
			return sig;
	}
}

/* After the shards: the requests they never reaped are freed here, then the resolver. */
static void dnsbl_release(struct dnsbl *d)
{
	struct dnsbl_req *r;
	if (!d)
		return;
	dnsbl_stop(d);
	while ((r = dnsbl_take_back(d)) != NULL)
		free(r);
	dnsbl_free(d);
}

static int run(struct config *cfg)
{
	struct smtp_conf sconf;
	struct writer_set *ws = NULL;
	struct shard *shards[SHARDS_MAX];
	static int lfds[SHARDS_MAX][LISTEN_MAX];
	unsigned nshards = 0, started = 0;
	struct priv priv;
	struct dnsbl *dnsbl = NULL;
	struct relay *relay = NULL;
	int rc, mfd = -1;

	rc = priv_plan(cfg, &priv, stderr);
	if (rc)
		return rc;
	notify_open();
	rc = spool_mkdir(cfg->spool_dir);
	if (rc) {
		fprintf(stderr, "mxring: spool_dir %s: %s\n", cfg->spool_dir, strerror(-rc));
		return 1;
	}
	if (priv_own_spool(&priv, cfg->spool_dir, stderr) != 0)
		return 1;
	if (fit_nofile(cfg) != 0)
		return 1;
	log_set_debug(cfg->log_level == LOG_LEVEL_DEBUG);
	bool tls_on = cfg->tls_security_level != TLS_LEVEL_NONE;
	if (tls_on || cfg->nsmtps_listen) {
		struct tls_ctx *ctx;
		if (tls_ctx_new(cfg, &ctx, stderr) != 0)
			return 1;
		tls_set_current(ctx);
	}
	smtp_conf_init(&sconf, cfg, tls_on);
	if (screen_start(cfg, stderr) != 0)
		return 1;
	/* The resolver reads /etc/resolv.conf now; its thread starts later. */
	if (cfg->ndnsbl_sites && dnsbl_create(cfg, cfg->shards, &dnsbl, stderr) != 0)
		return 1;
	/* relay_host's names are resolved now, before the sandbox. */
	if (cfg->nrelay_host && relay_create(cfg, &relay, stderr) != 0) {
		dnsbl_release(dnsbl);
		return 1;
	}
	/* What needs root is done (the certificates and keys are read), but for
	 * the listeners: then root goes, before any thread or client. */
	char at[LISTEN_TEXT_MAX], mtext[LISTEN_TEXT_MAX + 16] = "";
	if (listen_bind(cfg, cfg->shards, lfds, stderr) != 0)
		return 1;
	if (cfg->metrics_listen.port) {
		listen_addr_text(&cfg->metrics_listen, at, sizeof(at));
		mfd = listen_socket(&cfg->metrics_listen, false);
		if (mfd < 0) {
			fprintf(stderr, "mxring: metrics_listen %s: %s\n", at, strerror(-mfd));
			goto fail;
		}
		snprintf(mtext, sizeof(mtext), " metrics=%s", at);
	}
	statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	char sandbox[64];
	if (priv_drop(&priv, stderr) != 0 || priv_check_reload(cfg, &priv, stderr) != 0 ||
	    sandbox_enter(cfg, sandbox, sizeof(sandbox), stderr) != 0)
		goto fail;
	rc = writers_start(cfg, cfg->shards, &ws);
	if (rc)
		goto fail;
	if (relay && relay_start(relay, ws) != 0)
		goto fail;
	for (; nshards < cfg->shards; nshards++) {
		rc = shard_create(nshards, cfg, &sconf, ws, lfds[nshards], &shards[nshards]);
		if (rc)
			goto fail;
		shard_set_dnsbl(shards[nshards], dnsbl);
		if (dnsbl)
			dnsbl_set_wake_fd(dnsbl, nshards, writer_shard_eventfd(ws, nshards));
	}
	dnsbl_live = dnsbl;
	if (dnsbl) {
		rc = dnsbl_start(dnsbl);
		if (rc) {
			fprintf(stderr, "mxring: dns resolver: %s\n", strerror(-rc));
			goto fail;
		}
	}
	for (; started < nshards; started++) {
		rc = shard_start(shards[started]);
		if (rc) {
			fprintf(stderr, "mxring: shard %u: %s\n", started, strerror(-rc));
			goto fail;
		}
	}
	struct page_src src = {
	    .shards = shards, .nshards = nshards, .ws = ws, .relay = relay, .start_ms = mono_ms()};
	struct metrics *metrics = NULL;
	if (mfd >= 0) {
		rc = metrics_start(mfd, render_page, &src, &metrics);
		mfd = -1; /* the metrics' now, closed there also on failure */
		if (rc) {
			fprintf(stderr, "mxring: metrics_listen %s: %s\n", at, strerror(-rc));
			goto fail;
		}
	}
	char where[LISTEN_MAX * (LISTEN_TEXT_MAX + 1)] = "";
	size_t off = 0;
	for (unsigned i = 0; i < cfg->nlisten && off < sizeof(where); i++)
		off += (size_t)snprintf(where + off, sizeof(where) - off, "%s%s", i ? "," : "",
					listen_addr_text(&cfg->listen[i], at, sizeof(at)));
	char smtps[LISTEN_MAX * (LISTEN_TEXT_MAX + 1) + 16] = "";
	off = 0;
	for (unsigned i = 0; i < cfg->nsmtps_listen && off < sizeof(smtps); i++)
		off += (size_t)snprintf(smtps + off, sizeof(smtps) - off, "%s%s",
					i ? "," : " smtps_listen=",
					listen_addr_text(&cfg->smtps_listen[i], at, sizeof(at)));
	log_line("ready listen=%s%s%s shards=%u writers=%u spool=%s format=%s starttls=%s "
		 "tls_records=%s user=%s sandbox=%s uring_restricted=%s pid=%d",
		 where, smtps, mtext, cfg->shards, cfg->writers, cfg->spool_dir,
		 cfg->spool_format == SPOOL_MAILDIR ? "maildir" : "segment", tls_on ? "yes" : "no",
		 tls_on ? tls_records_mode() : "none", priv.name, sandbox,
		 shard_uring_restricted(shards[0]) ? "yes" : "no", (int)getpid());
	notify_send("READY=1\nSTATUS=accepting mail");

	if (relay) {
		char t[RELAY_DEST_TEXT_MAX];
		log_line("relay to=%s workers=%u connections=%u",
			 relay_dest_text(&cfg->relay_host[0], t, sizeof(t)), cfg->relay_workers,
			 cfg->relay_connections);
	}
	wait_for_stop(cfg, shards, nshards, ws, relay);
	notify_send("STOPPING=1");
	unsigned bad = 0;
	while (bad < nshards && !shard_failed(shards[bad]))
		bad++;
	if (bad < nshards)
		log_line("stopping: shard %u failed; no new connections, the other shards' "
			 "transactions may finish (up to %us)",
			 bad, cfg->shutdown_timeout);
	else
		log_line("stopping: no new connections, transactions may finish (up to %us)",
			 cfg->shutdown_timeout);
	for (unsigned i = 0; i < nshards; i++)
		shard_stop(shards[i]);
	int failed = 0;
	for (unsigned i = 0; i < nshards; i++) {
		shard_join(shards[i]);
		failed |= shard_failed(shards[i]);
	}
	/* Served through the shutdown; stopped before the shards are freed. */
	metrics_stop(metrics);
	log_stats(shards, nshards, ws);
	for (unsigned i = 0; i < nshards; i++)
		shard_free(shards[i]);
	dnsbl_live = NULL;
	dnsbl_release(dnsbl);
	screen_stop();
	/* The relay reads what the writers publish: it stops first. */
	relay_stop(relay);
	writers_stop(ws);
	relay_free(relay);
	tls_set_current(NULL);
	log_line(failed ? "stopped after a shard failed" : "stopped");
	return failed ? 1 : 0;
fail:
	for (unsigned k = 0; k < started; k++)
		shard_stop(shards[k]);
	for (unsigned k = 0; k < started; k++)
		shard_join(shards[k]);
	for (unsigned i = 0; i < nshards; i++)
		shard_free(shards[i]);
	dnsbl_live = NULL;
	dnsbl_release(dnsbl);
	screen_stop();
	relay_stop(relay);
	writers_stop(ws);
	relay_free(relay);
	listen_close(lfds, cfg->shards); /* those no shard took */
	if (mfd >= 0)
		close(mfd);
	return 1;
}

static const struct option long_options[] = {
    {"check", no_argument, NULL, 'C'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};

/*
 * Reads the file (-c), then the overrides (-o) whatever their order on the
 * line, then checks. Returns -1 to go on, or the exit code (0 after -h or
 * -n, 1 for a bad configuration, 2 for bad usage; after --check, 0 or 1 as
 * setup_check says and 2 for a bad configuration).
 */
static int configure(struct config *cfg, int argc, char **argv)
{
	const char *file = NULL;
	int print = 0, check = 0;
	int opt;

	while ((opt = getopt_long(argc, argv, "c:o:nh", long_options, NULL)) != -1) {
		switch (opt) {
		case 'C':
			check = 1;
			break;
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
	int bad = check ? 2 : 1;
	if (file && config_load(cfg, file, stderr) != 0)
		return bad;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:o:nh", long_options, NULL)) != -1)
		if (opt == 'o' && config_set(cfg, optarg, stderr) != 0)
			return bad;
	if (cfg->shards == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->shards = n < 1 ? 1 : n > SHARDS_MAX ? SHARDS_MAX : (unsigned)n;
	}
	if (config_check(cfg, stderr) != 0)
		return bad;
	if (check)
		return setup_check(cfg, stdout);
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
		sigaddset(&set, SIGUSR1);
		sigaddset(&set, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
		rc = run(&cfg);
	}
	config_free(&cfg);
	return rc;
}
