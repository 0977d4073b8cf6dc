/*
 * mxring-bench.c - the bundled SMTP load tool: options, threads, schedule, report.
 *
 *   mxring-bench [--server HOST:PORT] --connections N (--messages M | --duration S)
 *                [--msgs-per-conn K] [--size BYTES | --size-dist mix] [--rcpts R]
 *                [--from PATTERN] [--to PATTERN] [--pipelining on|off] [--bdat on|off]
 *                [--starttls | --tls] [--tls-version 1.2|1.3] [--resume tickets|ids|none]
 *                [--rate R] [--threads T] [--source LIST] [--timeout S] [--ack-log FILE]
 *                [--json FILE] ...
 *
 * The main thread parses the options, builds the body template (gen.c) and
 * the TLS context (tls/tlsclient.c), starts the client threads (client.c),
 * prints a progress line a second, and at the end the table (report.c).
 * SIGINT or SIGTERM once: no new messages, transactions finish, sessions
 * QUIT; twice: every connection is closed at once.
 *
 * Exit status: 0 when every message was accepted and nothing failed; 1
 * when a message was not accepted, a connection failed, or the run gave
 * up (--max-errors); 2 for a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "client.h"
#include "gen.h"
#include "report.h"
#include "tlsclient.h"

#define PROGRESS_TICK_NS (100 * 1000000LL)

int64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- usage ---------------------------------------------------------------- */

static const char usage_text[] =
    "usage: " BENCH_NAME " [OPTIONS] --connections N (--messages M | --duration S)\n"
    "\n"
    "An io_uring SMTP load generator: T threads, one io_uring each, drive N\n"
    "connections through EHLO, K transactions and QUIT, then reconnect while\n"
    "messages remain.\n"
    "\n"
    "Load:\n"
    "  --server HOST:PORT      the server (default 127.0.0.1:25; [IPv6]:PORT)\n"
    "  --connections N         parallel connections (1..100000)\n"
    "  --messages M            send M messages, or\n"
    "  --duration S            send for S seconds (fractions allowed)\n"
    "  --msgs-per-conn K       transactions per connection (default 100; 1 = a new\n"
    "                          session per message)\n"
    "  --rate R                open loop: R messages/s in total, each due at a fixed\n"
    "                          time; latency counts from that time (default: closed\n"
    "                          loop, each connection sends as soon as it may)\n"
    "  --threads T             client threads, one io_uring each (default 1)\n"
    "  --cpus LIST             pin thread i to the i-th CPU of LIST (e.g. 2,3 or 4-7),\n"
    "                          round robin; keeps the tool off the server's CPUs\n"
    "  --source LIST           local addresses to connect from, connection c from the\n"
    "                          (c mod count)-th: addresses and FIRST-LAST ranges,\n"
    "                          comma-separated (e.g. 127.0.0.2-127.0.0.9 or ::1; at most\n"
    "                          %u), for more connections than one address has ports,\n"
    "                          or to exercise per-address limits (default: the kernel\n"
    "                          picks)\n"
    "\n"
    "Messages:\n"
    "  --size BYTES            message size as stored (default 1024; k and m suffixes\n"
    "                          are 1024 and 1048576); the body is cut at a line end,\n"
    "                          so a message is up to 78 bytes shorter\n"
    "  --size-dist mix         sizes drawn from an inbound mix:\n"
    "%s"
    "  --rcpts R               recipients per message (1..100, default 1)\n"
    "  --from PATTERN          sender (default bench@example.com)\n"
    "  --to PATTERN            recipients (default rcpt%%r@example.com); patterns\n"
    "                          expand %%n (message number), %%r (recipient index),\n"
    "                          %%c (connection number), %%%% (a percent sign)\n"
    "  --ehlo NAME             EHLO name (default mxring-bench.example)\n"
    "  --pipelining on|off     RFC 2920: MAIL, RCPTs and DATA in one write (default on)\n"
    "  --bdat on|off           RFC 3030 BDAT instead of DATA (default off)\n"
    "  --bdat-chunk BYTES      BDAT chunk size (default: the whole message)\n"
    "\n"
    "TLS (%s):\n"
    "  --starttls              STARTTLS (RFC 3207) on every connection\n"
    "  --tls                   implicit TLS (RFC 8314) from the first byte\n"
    "  --tls-version 1.2|1.3   only this version (default: the server picks)\n"
    "  --resume tickets|ids|none\n"
    "                          offer the previous session of the same connection slot\n"
    "                          on its next connection: by ticket (TLS 1.2 RFC 5077 or\n"
    "                          TLS 1.3 PSK), by TLS 1.2 session ID (needs\n"
    "                          --tls-version 1.2), or not at all (default none)\n"
    "  The server's certificate is not verified (test servers are self-signed).\n"
    "\n"
    "Checks and output:\n"
    "  --timeout S             deadline of every wait: connect, each reply, sending\n"
    "                          (no progress), the handshake (default 30)\n"
    "  --max-errors E          give up after E connection errors (default 100; 0: never)\n"
    "  --ack-log FILE          one line per accepted message: RUNID-N QUEUEID SIZE;\n"
    "                          `mxring-spool verify DIR --against FILE` checks them\n"
    "  --json FILE             the final report as JSON\n"
    "  --quiet                 no progress lines\n"
    "  --help, --version\n"
    "\n"
    "Every body starts with X-Bench-Sum (CRC-32 of the rest of the message, as\n"
    "stored) and X-Bench-Seq (RUNID-N). Exit status: 0 every message accepted and\n"
    "no error; 1 otherwise; 2 usage error.\n";

__attribute__((format(printf, 2, 3))) static int usage_error(const char *arg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, BENCH_NAME ": %s: ", arg);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry '" BENCH_NAME " --help'.\n");
	va_end(ap);
	return 2;
}

/* ---- option values ---------------------------------------------------------- */

static int parse_u64(const char *arg, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || end == text || *end || text[0] == '-' || v < min || v > max)
		return usage_error(arg, "expected a whole number from %llu to %llu, got '%s'",
				   (unsigned long long)min, (unsigned long long)max, text);
	*out = v;
	return 0;
}

static int parse_uint(const char *arg, const char *text, unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;
	int rc = parse_u64(arg, text, min, max, &v);
	if (rc == 0)
		*out = (unsigned)v;
	return rc;
}

static int parse_bytes(const char *arg, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	uint64_t mult = 1;
	if (*end == 'k' || *end == 'K')
		mult = 1024, end++;
	else if (*end == 'm' || *end == 'M')
		mult = 1024 * 1024, end++;
	if (errno || end == text || *end || text[0] == '-' || v > max / mult || v * mult < min ||
	    v * mult > max)
		return usage_error(arg,
				   "expected a size from %llu to %llu bytes (k, m suffixes), "
				   "got '%s'",
				   (unsigned long long)min, (unsigned long long)max, text);
	*out = v * mult;
	return 0;
}

static int parse_double(const char *arg, const char *text, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || *end || !(v >= min && v <= max))
		return usage_error(arg, "expected a number from %g to %g, got '%s'", min, max,
				   text);
	*out = v;
	return 0;
}

static int parse_onoff(const char *arg, const char *text, bool *out)
{
	if (strcmp(text, "on") == 0 || strcmp(text, "yes") == 0)
		*out = true;
	else if (strcmp(text, "off") == 0 || strcmp(text, "no") == 0)
		*out = false;
	else
		return usage_error(arg, "expected on or off, got '%s'", text);
	return 0;
}

static int parse_server(struct bench_cfg *cfg, const char *text)
{
	char host[256];
	const char *colon = strrchr(text, ':');
	size_t hlen = colon ? (size_t)(colon - text) : 0;
	if (!colon || hlen == 0 || hlen >= sizeof(host) || !colon[1] ||
	    strlen(text) >= sizeof(cfg->server))
		return usage_error("--server", "expected HOST:PORT or [IPv6]:PORT, got '%s'", text);
	memcpy(host, text, hlen);
	host[hlen] = 0;
	if (host[0] == '[' && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = 0;
	}
	for (const char *p = text; *p; p++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]%",
			    *p))
			return usage_error("--server", "unexpected character in '%s'", text);
	unsigned port;
	if (parse_uint("--server", colon + 1, 1, 65535, &port))
		return 2;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0)
		return usage_error("--server", "cannot resolve '%s': %s", host, gai_strerror(rc));
	memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
	cfg->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(cfg->server, sizeof(cfg->server), "%s", text);
	return 0;
}

static int parse_tls_version(struct bench_cfg *cfg, const char *text)
{
	if (strcmp(text, "1.2") == 0)
		cfg->tls_version = 12;
	else if (strcmp(text, "1.3") == 0)
		cfg->tls_version = 13;
	else
		return usage_error("--tls-version", "expected 1.2 or 1.3, got '%s'", text);
	return 0;
}

static int parse_resume(struct bench_cfg *cfg, const char *text)
{
	if (strcmp(text, "tickets") == 0)
		cfg->resume = BENCH_RESUME_TICKETS;
	else if (strcmp(text, "ids") == 0)
		cfg->resume = BENCH_RESUME_IDS;
	else if (strcmp(text, "none") == 0)
		cfg->resume = BENCH_RESUME_NONE;
	else
		return usage_error("--resume", "expected tickets, ids or none, got '%s'", text);
	return 0;
}

/* "2,3" or "4-7" or "0,2-3": CPU numbers below CPU_SETSIZE, at most BENCH_THREADS_MAX. */
static int parse_cpus(struct bench_cfg *cfg, const char *text)
{
	const char *p = text;
	cfg->ncpus = 0;
	while (*p) {
		char *end;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		if (end == p)
			goto bad;
		if (*end == '-') {
			p = end + 1;
			hi = strtoul(p, &end, 10);
			if (end == p)
				goto bad;
		}
		if (lo > hi || hi >= CPU_SETSIZE)
			goto bad;
		for (unsigned long c = lo; c <= hi; c++) {
			if (cfg->ncpus == BENCH_THREADS_MAX)
				return usage_error("--cpus", "more than %u CPUs in '%s'",
						   BENCH_THREADS_MAX, text);
			cfg->cpus[cfg->ncpus++] = (unsigned short)c;
		}
		p = end;
		if (*p == ',' && p[1])
			p++;
		else if (*p)
			goto bad;
	}
	if (cfg->ncpus)
		return 0;
bad:
	return usage_error("--cpus", "expected CPU numbers like 2,3 or 4-7 (below %d), got '%s'",
			   CPU_SETSIZE, text);
}

/* The text of a source or server address, without the port. */
const char *bench_addr_text(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	const void *a = ss->ss_family == AF_INET6
			    ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
			    : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
	if (!inet_ntop(ss->ss_family, a, buf, (socklen_t)cap))
		snprintf(buf, cap, "?");
	return buf;
}

/* One address of --source ("127.0.0.2", "::1" or "[::1]") as 16 big-endian
 * bytes, IPv4 in the last four. Returns AF_INET, AF_INET6, or 0 if it is none. */
static int source_addr(const char *text, size_t len, uint8_t out[16])
{
	char buf[INET6_ADDRSTRLEN + 2];
	if (len >= 2 && text[0] == '[' && text[len - 1] == ']') {
		text++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return 0;
	memcpy(buf, text, len);
	buf[len] = 0;
	memset(out, 0, 16);
	if (inet_pton(AF_INET, buf, out + 12) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, buf, out) == 1)
		return AF_INET6;
	return 0;
}

static void source_add(struct bench_cfg *cfg, int family, const uint8_t a[16])
{
	struct sockaddr_storage *ss = &cfg->source[cfg->nsources++];
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a + 12, 4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
	}
}

/*
 * "127.0.0.2-127.0.0.9,127.0.1.1" or "::1": addresses and FIRST-LAST ranges,
 * appended to cfg->source (a repeated --source adds to the list). Whether
 * they suit the server and can be bound is checked once all options are read.
 */
static int parse_source(struct bench_cfg *cfg, const char *text)
{
	const char *p = text;
	for (;;) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		int n = (int)(end - p);
		const char *dash = memchr(p, '-', (size_t)n);
		uint8_t first[16], last[16];
		int f1 = source_addr(p, (size_t)((dash ? dash : end) - p), first);
		int f2 = dash ? source_addr(dash + 1, (size_t)(end - dash - 1), last) : f1;
		if (!dash)
			memcpy(last, first, sizeof(last));
		if (!f1 || !f2)
			return usage_error(
			    "--source",
			    "expected addresses or FIRST-LAST ranges, comma-separated "
			    "(e.g. 127.0.0.2-127.0.0.9 or ::1), got '%.*s'",
			    n, p);
		if (f1 != f2)
			return usage_error("--source", "range '%.*s' mixes IPv4 and IPv6", n, p);
		if (memcmp(first, last, sizeof(first)) > 0)
			return usage_error("--source", "range '%.*s' ends before it starts", n, p);
		/* Bounded by BENCH_SOURCES_MAX: one address per pass. */
		for (;;) {
			if (cfg->nsources == BENCH_SOURCES_MAX)
				return usage_error("--source", "more than %u addresses in '%s'",
						   BENCH_SOURCES_MAX, text);
			source_add(cfg, f1, first);
			if (memcmp(first, last, sizeof(first)) == 0)
				break;
			for (int i = 15; i >= 0 && ++first[i] == 0; i--)
				;
		}
		if (!*end)
			return 0;
		p = end + 1;
	}
}

/* Each source has the server's family and is an address of this host. */
static int check_sources(const struct bench_cfg *cfg)
{
	for (unsigned i = 0; i < cfg->nsources; i++) {
		const struct sockaddr_storage *ss = &cfg->source[i];
		char a[INET6_ADDRSTRLEN];
		bench_addr_text(ss, a, sizeof(a));
		if (ss->ss_family != cfg->addr.ss_family)
			return usage_error("--source", "%s is %s but --server %s is %s", a,
					   ss->ss_family == AF_INET ? "IPv4" : "IPv6", cfg->server,
					   cfg->addr.ss_family == AF_INET ? "IPv4" : "IPv6");
		/* A bind with no port takes none: this only asks whether the
		 * address is one of ours. */
		int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int one = 1, e = 0;
		if (fd < 0)
			e = errno;
		else if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) !=
			     0 ||
			 bind(fd, (const struct sockaddr *)ss,
			      ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						       : sizeof(struct sockaddr_in6)) != 0)
			e = errno;
		if (fd >= 0)
			close(fd);
		if (e)
			return usage_error("--source", "cannot bind to %s: %s", a, strerror(e));
	}
	return 0;
}

static int parse_pattern(char *dst, size_t cap, const char *arg, const char *text)
{
	char why[128];
	if (gen_pattern_check(text, why, sizeof(why)) != 0)
		return usage_error(arg, "'%s' %s", text, why);
	snprintf(dst, cap, "%s", text);
	return 0;
}

static int parse_ehlo(struct bench_cfg *cfg, const char *text)
{
	size_t n = strlen(text);
	if (n == 0 || n >= sizeof(cfg->ehlo))
		return usage_error("--ehlo", "expected a name of 1 to %zu characters",
				   sizeof(cfg->ehlo) - 1);
	for (const char *p = text; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return usage_error("--ehlo", "'%s' has a space or control character", text);
	snprintf(cfg->ehlo, sizeof(cfg->ehlo), "%s", text);
	return 0;
}

/* ---- options ------------------------------------------------------------------ */

enum {
	O_SERVER = 256,
	O_CONNECTIONS,
	O_MESSAGES,
	O_DURATION,
	O_MSGS_PER_CONN,
	O_SIZE,
	O_SIZE_DIST,
	O_RCPTS,
	O_FROM,
	O_TO,
	O_EHLO,
	O_PIPELINING,
	O_BDAT,
	O_BDAT_CHUNK,
	O_STARTTLS,
	O_TLS,
	O_TLS_VERSION,
	O_RESUME,
	O_RATE,
	O_THREADS,
	O_CPUS,
	O_SOURCE,
	O_TIMEOUT,
	O_MAX_ERRORS,
	O_ACK_LOG,
	O_JSON,
	O_QUIET,
	O_HELP,
	O_VERSION,
};

static const struct option options[] = {
    {"server", required_argument, NULL, O_SERVER},
    {"connections", required_argument, NULL, O_CONNECTIONS},
    {"messages", required_argument, NULL, O_MESSAGES},
    {"duration", required_argument, NULL, O_DURATION},
    {"msgs-per-conn", required_argument, NULL, O_MSGS_PER_CONN},
    {"size", required_argument, NULL, O_SIZE},
    {"size-dist", required_argument, NULL, O_SIZE_DIST},
    {"rcpts", required_argument, NULL, O_RCPTS},
    {"from", required_argument, NULL, O_FROM},
    {"to", required_argument, NULL, O_TO},
    {"ehlo", required_argument, NULL, O_EHLO},
    {"pipelining", required_argument, NULL, O_PIPELINING},
    {"bdat", required_argument, NULL, O_BDAT},
    {"bdat-chunk", required_argument, NULL, O_BDAT_CHUNK},
    {"starttls", no_argument, NULL, O_STARTTLS},
    {"tls", no_argument, NULL, O_TLS},
    {"tls-version", required_argument, NULL, O_TLS_VERSION},
    {"resume", required_argument, NULL, O_RESUME},
    {"rate", required_argument, NULL, O_RATE},
    {"threads", required_argument, NULL, O_THREADS},
    {"cpus", required_argument, NULL, O_CPUS},
    {"source", required_argument, NULL, O_SOURCE},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"max-errors", required_argument, NULL, O_MAX_ERRORS},
    {"ack-log", required_argument, NULL, O_ACK_LOG},
    {"json", required_argument, NULL, O_JSON},
    {"quiet", no_argument, NULL, O_QUIET},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    {NULL, 0, NULL, 0},
};

/* What was given, for the checks across options. */
struct seen {
	bool connections, size, size_dist, tls_version, resume, bdat_chunk;
};

static int parse_one(struct bench_cfg *cfg, struct seen *seen, int opt, const char *v)
{
	switch (opt) {
	case O_SERVER:
		return parse_server(cfg, v);
	case O_CONNECTIONS:
		seen->connections = true;
		return parse_uint("--connections", v, 1, BENCH_CONN_MAX, &cfg->connections);
	case O_MESSAGES:
		return parse_u64("--messages", v, 1, UINT64_C(1) << 48, &cfg->messages);
	case O_DURATION:
		return parse_double("--duration", v, 0.001, BENCH_DURATION_MAX_S, &cfg->duration_s);
	case O_MSGS_PER_CONN:
		return parse_uint("--msgs-per-conn", v, 1, 1u << 30, &cfg->msgs_per_conn);
	case O_SIZE:
		seen->size = true;
		return parse_bytes("--size", v, 0, BENCH_SIZE_MAX, &cfg->size);
	case O_SIZE_DIST:
		seen->size_dist = true;
		if (strcmp(v, "mix") != 0)
			return usage_error("--size-dist",
					   "the only distribution is 'mix', got '%s'", v);
		cfg->size_mix = true;
		return 0;
	case O_RCPTS:
		return parse_uint("--rcpts", v, 1, BENCH_RCPTS_MAX, &cfg->rcpts);
	case O_FROM:
		return parse_pattern(cfg->from, sizeof(cfg->from), "--from", v);
	case O_TO:
		return parse_pattern(cfg->to, sizeof(cfg->to), "--to", v);
	case O_EHLO:
		return parse_ehlo(cfg, v);
	case O_PIPELINING:
		return parse_onoff("--pipelining", v, &cfg->pipelining);
	case O_BDAT:
		return parse_onoff("--bdat", v, &cfg->bdat);
	case O_BDAT_CHUNK:
		seen->bdat_chunk = true;
		return parse_bytes("--bdat-chunk", v, BENCH_BDAT_CHUNK_MIN, BENCH_SIZE_MAX,
				   &cfg->bdat_chunk);
	default:
		break;
	}
	return -1;
}

static int parse_two(struct bench_cfg *cfg, struct seen *seen, int opt, const char *v)
{
	switch (opt) {
	case O_STARTTLS:
	case O_TLS:
		if (cfg->tls != BENCH_TLS_NONE)
			return usage_error(opt == O_TLS ? "--tls" : "--starttls",
					   "give one of --starttls and --tls");
		cfg->tls = opt == O_TLS ? BENCH_TLS_IMPLICIT : BENCH_TLS_STARTTLS;
		return 0;
	case O_TLS_VERSION:
		seen->tls_version = true;
		return parse_tls_version(cfg, v);
	case O_RESUME:
		seen->resume = true;
		return parse_resume(cfg, v);
	case O_RATE:
		return parse_double("--rate", v, 0.001, BENCH_RATE_MAX, &cfg->rate);
	case O_THREADS:
		return parse_uint("--threads", v, 1, BENCH_THREADS_MAX, &cfg->threads);
	case O_CPUS:
		return parse_cpus(cfg, v);
	case O_SOURCE:
		return parse_source(cfg, v);
	case O_TIMEOUT:
		return parse_double("--timeout", v, 0.01, 3600, &cfg->timeout_s);
	case O_MAX_ERRORS:
		return parse_u64("--max-errors", v, 0, UINT64_MAX, &cfg->max_errors);
	case O_ACK_LOG:
		cfg->ack_log = v;
		return 0;
	case O_JSON:
		cfg->json = v;
		return 0;
	case O_QUIET:
		cfg->quiet = true;
		return 0;
	default:
		return usage_error("option", "unknown");
	}
}

static void cfg_defaults(struct bench_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->threads = 1;
	cfg->msgs_per_conn = BENCH_MSGS_PER_CONN;
	cfg->size = 1024;
	cfg->rcpts = 1;
	snprintf(cfg->from, sizeof(cfg->from), "bench@example.com");
	snprintf(cfg->to, sizeof(cfg->to), "rcpt%%r@example.com");
	snprintf(cfg->ehlo, sizeof(cfg->ehlo), "mxring-bench.example");
	cfg->pipelining = true;
	cfg->timeout_s = BENCH_TIMEOUT_S;
	cfg->max_errors = BENCH_MAX_ERRORS;
}

/* Raises the open-files limit for the connections (one descriptor each). */
static int check_nofile(const struct bench_cfg *cfg)
{
	rlim_t need = (rlim_t)cfg->connections + 64;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return 0;
	rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
	(void)setrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need)
		return 0;
	return usage_error(
	    "--connections", "%u connections need %llu open files; the limit is %llu (ulimit -n)",
	    cfg->connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
}

/* The checks that involve more than one option. */
static int check_cfg(struct bench_cfg *cfg, const struct seen *seen)
{
	if (!seen->connections)
		return usage_error("--connections", "is required");
	if (!cfg->messages == !(cfg->duration_s > 0))
		return usage_error("--messages", "give exactly one of --messages and --duration");
	if (seen->size && seen->size_dist)
		return usage_error("--size", "give one of --size and --size-dist");
	cpu_set_t allowed;
	if (cfg->ncpus && sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
		for (unsigned i = 0; i < cfg->ncpus; i++)
			if (!CPU_ISSET(cfg->cpus[i], &allowed))
				return usage_error("--cpus",
						   "CPU %u is not one this process may run on",
						   cfg->cpus[i]);
	if (cfg->threads > cfg->connections)
		return usage_error("--threads",
				   "%u threads for %u connections (at most one "
				   "thread per connection)",
				   cfg->threads, cfg->connections);
	if (cfg->tls == BENCH_TLS_NONE && (seen->tls_version || seen->resume))
		return usage_error(seen->resume ? "--resume" : "--tls-version",
				   "needs --starttls or --tls");
	if (cfg->tls != BENCH_TLS_NONE && !tlsc_available())
		return usage_error(cfg->tls == BENCH_TLS_IMPLICIT ? "--tls" : "--starttls",
				   "this " BENCH_NAME " was built without wolfSSL");
	if (cfg->resume == BENCH_RESUME_IDS && cfg->tls_version != 12)
		return usage_error("--resume", "ids needs --tls-version 1.2 (TLS 1.3 resumes by "
					       "tickets only)");
	if (seen->bdat_chunk && !cfg->bdat)
		return usage_error("--bdat-chunk", "needs --bdat on");
	uint64_t largest = (cfg->size_mix ? BENCH_MIX_SIZE_MAX : cfg->size) + GEN_HDR_MAX;
	if (cfg->bdat_chunk &&
	    (largest + cfg->bdat_chunk - 1) / cfg->bdat_chunk > BENCH_BDAT_CHUNKS_MAX)
		return usage_error("--bdat-chunk",
				   "%llu bytes cut the largest message (%llu bytes) into more than "
				   "%u chunks",
				   (unsigned long long)cfg->bdat_chunk, (unsigned long long)largest,
				   BENCH_BDAT_CHUNKS_MAX);
	int rc = check_sources(cfg);
	return rc ? rc : check_nofile(cfg);
}

int bench_parse_args(struct bench_cfg *cfg, int argc, char **argv)
{
	struct seen seen = {0};
	cfg_defaults(cfg);
	if (parse_server(cfg, "127.0.0.1:25"))
		return 2;
	opterr = 0;
	int opt;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		if (opt == '?') {
			const char *a = argv[optind - 1];
			if (optopt)
				return usage_error(a, "needs a value");
			return usage_error(a, "unknown option");
		}
		if (opt == O_HELP) {
			printf(usage_text, BENCH_SOURCES_MAX, gen_mix_description(),
			       tlsc_library());
			return 1;
		}
		if (opt == O_VERSION) {
			printf(BENCH_NAME " 0.1.0 (TLS: %s)\n", tlsc_library());
			return 1;
		}
		int rc = parse_one(cfg, &seen, opt, optarg);
		if (rc < 0)
			rc = parse_two(cfg, &seen, opt, optarg);
		if (rc)
			return rc;
	}
	if (optind < argc)
		return usage_error(argv[optind], "unexpected argument");
	return check_cfg(cfg, &seen);
}

/* ---- the schedule ------------------------------------------------------------- */

enum bench_claim bench_claim(struct bench_run *run, int64_t now_ns, uint64_t *seq, int64_t *due_ns)
{
	const struct bench_cfg *cfg = run->cfg;
	if (cfg->rate <= 0) {
		if (run->end_ns && now_ns >= run->end_ns)
			return BENCH_CLAIM_DONE;
		uint64_t n = atomic_fetch_add_explicit(&run->next, 1, memory_order_relaxed);
		if (cfg->messages && n >= cfg->messages)
			return BENCH_CLAIM_DONE;
		*seq = n;
		*due_ns = now_ns;
		return BENCH_CLAIM_GOT;
	}
	uint64_t n = atomic_load_explicit(&run->next, memory_order_relaxed);
	for (unsigned tries = 0; tries < 64; tries++) {
		if (cfg->messages && n >= cfg->messages)
			return BENCH_CLAIM_DONE;
		int64_t t = run->t0_ns + (int64_t)((double)n * 1e9 / cfg->rate);
		if (run->end_ns && t >= run->end_ns)
			return BENCH_CLAIM_DONE;
		if (t > now_ns) {
			*due_ns = t;
			return BENCH_CLAIM_WAIT;
		}
		if (atomic_compare_exchange_weak(&run->next, &n, n + 1)) {
			*seq = n;
			*due_ns = t;
			return BENCH_CLAIM_GOT;
		}
	}
	*due_ns = now_ns + 1000;
	return BENCH_CLAIM_WAIT;
}

#define ERRORS_PRINTED_MAX 3

void bench_report_error(struct bench_run *run, enum bench_err e, const char *fmt, ...)
{
	unsigned n = atomic_fetch_add(&run->err_printed[e], 1);
	if (n >= ERRORS_PRINTED_MAX)
		return;
	char text[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fprintf(stderr, BENCH_NAME ": %s%s\n", text,
		n + 1 == ERRORS_PRINTED_MAX ? " (further errors of this kind are only counted)"
					    : "");
}

/* ---- threads and the main loop ------------------------------------------------- */

static _Atomic int signals_seen;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&signals_seen, 1);
}

struct worker {
	pthread_t tid;
	bool started; /* tid is a thread to join */
	struct client *cl;
	_Atomic int finished;
	int64_t end_ns; /* when client_run returned */
	int rc;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	w->rc = client_run(w->cl);
	w->end_ns = bench_now_ns();
	atomic_store(&w->finished, 1);
	return NULL;
}

static void totals(struct worker *w, unsigned n, struct bench_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < n; i++)
		report_add(t, client_counters(w[i].cl));
}

/* Waits for the threads, one progress line a second; returns the elapsed seconds. */
static double supervise(struct bench_run *run, struct worker *w, unsigned n)
{
	struct bench_totals prev = {0}, now;
	int64_t last = run->t0_ns, next_line = run->t0_ns + 1000000000LL;
	for (;;) {
		struct timespec ts = {0, PROGRESS_TICK_NS};
		nanosleep(&ts, NULL);
		unsigned running = 0;
		for (unsigned i = 0; i < n; i++)
			running += !atomic_load(&w[i].finished);
		if (!running)
			break;
		int sigs = atomic_load(&signals_seen);
		if (sigs && atomic_load(&run->stop) < (sigs > 1 ? 2 : 1)) {
			atomic_store(&run->stop, sigs > 1 ? 2 : 1);
			fprintf(stderr, BENCH_NAME ": %s\n",
				sigs > 1 ? "stopping now"
					 : "stopping: no new messages (again: now)");
		}
		int64_t t = bench_now_ns();
		if (t < next_line)
			continue;
		totals(w, n, &now);
		if (!run->cfg->quiet)
			report_progress(stderr, (double)(t - run->t0_ns) / 1e9,
					(double)(t - last) / 1e9, &now, &prev);
		prev = now;
		last = t;
		next_line += 1000000000LL;
		if (next_line < t)
			next_line = t + 1000000000LL;
	}
	int64_t end = run->t0_ns;
	for (unsigned i = 0; i < n; i++) {
		if (w[i].started)
			pthread_join(w[i].tid, NULL);
		if (w[i].end_ns > end)
			end = w[i].end_ns;
	}
	return (double)(end - run->t0_ns) / 1e9;
}

static int start_threads(struct bench_run *run, struct worker *w)
{
	const struct bench_cfg *cfg = run->cfg;
	char err[256];
	for (unsigned i = 0; i < cfg->threads; i++) {
		unsigned first = (unsigned)((uint64_t)cfg->connections * i / cfg->threads);
		unsigned end = (unsigned)((uint64_t)cfg->connections * (i + 1) / cfg->threads);
		w[i].cl = client_new(run, i, first, end - first, err, sizeof(err));
		if (!w[i].cl) {
			fprintf(stderr, BENCH_NAME ": %s\n", err);
			return -ENOMEM;
		}
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	run->t0_ns = bench_now_ns();
	if (cfg->duration_s > 0)
		run->end_ns = run->t0_ns + (int64_t)(cfg->duration_s * 1e9);
	int rc = 0;
	for (unsigned i = 0; i < cfg->threads && rc == 0; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		if (cfg->ncpus) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cfg->cpus[i % cfg->ncpus], &set);
			pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
		}
		rc = -pthread_create(&w[i].tid, &attr, worker_main, &w[i]);
		pthread_attr_destroy(&attr);
		w[i].started = rc == 0;
		if (rc) {
			fprintf(stderr, BENCH_NAME ": pthread_create: %s\n", strerror(-rc));
			/* The threads already started stop at once; supervise() joins them. */
			atomic_store(&run->stop, 2);
			for (unsigned j = i; j < cfg->threads; j++)
				atomic_store(&w[j].finished, 1);
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* The TLS client's context: a load tool talks to test servers with
 * self-signed certificates, so it verifies nothing and sends no SNI. */
static int tls_setup(const struct bench_cfg *cfg, struct tlsc_ctx **out, char *err, size_t cap)
{
	static const enum tlsc_resume resume[] = {
	    [BENCH_RESUME_NONE] = TLSC_RESUME_NONE,
	    [BENCH_RESUME_TICKETS] = TLSC_RESUME_TICKETS,
	    [BENCH_RESUME_IDS] = TLSC_RESUME_IDS,
	};
	struct tlsc_opts o = {.version = cfg->tls_version, .resume = resume[cfg->resume]};
	return tlsc_ctx_new(&o, out, err, cap);
}

static int setup(struct bench_run *run)
{
	const struct bench_cfg *cfg = run->cfg;
	char err[256];
	uint64_t id;
	if (getrandom(&id, sizeof(id), 0) != sizeof(id))
		id = (uint64_t)bench_now_ns() ^ ((uint64_t)getpid() << 32);
	snprintf(run->run_id, sizeof(run->run_id), "%016llx", (unsigned long long)id);
	run->ack_fd = -1;
	if (gen_new(cfg, run->run_id, &run->gen, err, sizeof(err)) != 0) {
		fprintf(stderr, BENCH_NAME ": %s\n", err);
		return 1;
	}
	if (cfg->tls && tls_setup(cfg, &run->tls, err, sizeof(err)) != 0) {
		fprintf(stderr, BENCH_NAME ": TLS: %s\n", err);
		return 1;
	}
	if (cfg->ack_log) {
		run->ack_fd =
		    open(cfg->ack_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
		if (run->ack_fd < 0)
			return usage_error("--ack-log", "cannot open %s: %s", cfg->ack_log,
					   strerror(errno));
		char head[400];
		int n = snprintf(head, sizeof(head), "# " BENCH_NAME " ack-log run=%s server=%s\n",
				 run->run_id, cfg->server);
		if (write(run->ack_fd, head, (size_t)n) != n)
			return usage_error("--ack-log", "cannot write %s", cfg->ack_log);
	}
	if (cfg->json) {
		FILE *f = fopen(cfg->json, "w");
		if (!f)
			return usage_error("--json", "cannot open %s: %s", cfg->json,
					   strerror(errno));
		fclose(f);
	}
	return 0;
}

static int finish(struct bench_run *run, struct worker *w, double elapsed)
{
	const struct bench_cfg *cfg = run->cfg;
	struct bench_totals t;
	static struct hist hist[BENCH_LAT__COUNT];
	totals(w, cfg->threads, &t);
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		t.cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	for (unsigned i = 0; i < cfg->threads && !t.tls_desc[0]; i++)
		snprintf(t.tls_desc, sizeof(t.tls_desc), "%s", client_tls_desc(w[i].cl));
	for (unsigned l = 0; l < BENCH_LAT__COUNT; l++) {
		hist_init(&hist[l]);
		for (unsigned i = 0; i < cfg->threads; i++)
			hist_merge(&hist[l], client_hist(w[i].cl, (enum bench_lat)l));
	}
	report_table(stdout, run, elapsed, &t, hist);
	int status = 0;
	if (cfg->json) {
		int rc = report_json(cfg->json, run, elapsed, &t, hist);
		if (rc) {
			fprintf(stderr, BENCH_NAME ": --json %s: %s\n", cfg->json, strerror(-rc));
			status = 1;
		}
	}
	if (t.accepted == 0 && t.err[BENCH_ERR_REFUSED])
		fprintf(stderr,
			BENCH_NAME ": no message accepted: %s refused %llu connections "
				   "(is the server running?)\n",
			cfg->server, (unsigned long long)t.err[BENCH_ERR_REFUSED]);
	bool all = cfg->messages ? t.accepted == cfg->messages : true;
	if (t.errors || t.tempfail || t.rejected || t.failed || !all || atomic_load(&run->gave_up))
		status = 1;
	return status;
}

int main(int argc, char **argv)
{
	static struct bench_cfg cfg;
	int rc = bench_parse_args(&cfg, argc, argv);
	if (rc)
		return rc == 1 ? 0 : rc;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	static struct bench_run run;
	run.cfg = &cfg;
	rc = setup(&run);
	struct worker *w = calloc(cfg.threads, sizeof(*w));
	if (rc == 0 && !w)
		rc = 1;
	if (rc == 0 && start_threads(&run, w) != 0)
		rc = 1;
	if (w && w[0].started) {
		double elapsed = supervise(&run, w, cfg.threads);
		int status = finish(&run, w, elapsed);
		rc = rc ? rc : status;
	}
	for (unsigned i = 0; w && i < cfg.threads; i++)
		client_free(w[i].cl);
	free(w);
	if (run.ack_fd >= 0 && close(run.ack_fd) != 0) {
		fprintf(stderr, BENCH_NAME ": --ack-log: %s\n", strerror(errno));
		rc = rc ? rc : 1;
	}
	tlsc_ctx_free(run.tls);
	gen_free(run.gen);
	return rc;
}
