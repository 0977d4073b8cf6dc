/*
 * config.c - mxring.conf and -o overrides, in the manner of Postfix main.cf.
 *
 * Syntax: a logical line is "key = value"; it starts at a line that begins
 * with a non-blank character and goes on over the lines that begin with
 * whitespace (joined with one space). Empty lines and lines whose first
 * non-blank character is '#' are ignored anywhere, also between a line and
 * its continuation; a '#' inside a value is part of it. Keys are the field
 * names of struct config. The last setting of a key wins, except listen: the
 * first listen of a file (and the first -o listen) replaces the list it
 * finds, and later ones append to it.
 *
 * Every key is described by one row of config_keys: its type, its field and
 * the range it must fall in. Parsing, config_check and config_print all walk
 * that table, so a key cannot be parsed and then forgotten by print.
 *
 * Errors: "mxring: FILE:LINE: key 'K': what" or "mxring: -o K=V: key 'K':
 * what"; text from the file is escaped and cut (quote()). A failed
 * config_load may leave cfg partly updated, but always consistent: it can
 * be freed with config_free.
 *
 * Ownership: accept_domains is one allocation holding the pointer array and
 * the strings (config_free frees it), except for the defaults, which point
 * at static storage. Nothing else is allocated beyond the file buffer read
 * by config_load, which is freed before it returns.
 */
#include "config.h"
#include "dnsbl_sites.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_FILE_MAX	 (1u << 20)		       /* bytes of mxring.conf */
#define CONFIG_QUOTE_MAX (LOG_CLIENT_TEXT_MAX * 4 + 4) /* quote(): 4 per byte, "...", NUL */
#define LABEL_MAX	 63
#define NUMBER_MAX	 (1ull << 62) /* any number past this is a typo */
#define SIZE_HUGE	 (1ull << 40) /* 1 TiB: sizes are capped here */
#define TIMEOUT_MAX	 86400u	      /* one day */
#define ERROR_LIMIT_MAX	 10000u
#define JUNK_LIMIT_MAX	 10000u /* the session's counter is 16 bits */
#define SEGMENT_SIZE_MIN 4096u
#define RECV_POOL_MAX	 (1ull << 30) /* recv_buffers * recv_buffer_size, per shard */
#define HOSTNAME_BUF	 256

enum key_type {
	K_LISTEN,
	K_LISTEN_TLS, /* smtps_listen: implicit TLS (RFC 8314); may be empty */
	K_HOSTNAME,
	K_DOMAINS,
	K_PATH,
	K_TEXT, /* a string that may be empty (paths of optional files, lists) */
	K_ENUM,
	K_SIZE,
	K_COUNT,
	K_POW2,
	K_SHARDS,
	K_TIME,
	K_BOOL,
	K_CIDRS,       /* address prefixes: a.b.c.d[/n], v6[/n] or [v6][/n]; may be empty */
	K_ADDR,	       /* one host:port, or empty (port 0) */
	K_MS,	       /* a time in milliseconds: "800ms", or seconds as K_TIME */
	K_DNSBL_SITES, /* zone[=filter][*weight], ... (dnsbl_sites.h) */
	K_DNS_SERVERS, /* addresses, each with an optional port (default 53) */
	K_RELAY_HOST,  /* next hops of the relay (relay_dest.h) */
	K_RETRY,       /* relay_retry_schedule: "first, max" times */
};

struct key {
	const char *name;
	enum key_type type;
	size_t off;		  /* offsetof the field */
	size_t size;		  /* sizeof the field */
	uint64_t min, max;	  /* numbers: inclusive range */
	const char *const *names; /* K_ENUM, K_BOOL: value names by enum value */
};

/* Where a setting came from, for messages. */
struct where {
	FILE *err;
	const char *path; /* the file, or NULL for -o */
	unsigned line;
	const char *kv; /* the -o argument */
};

static const char *const spool_names[] = {"segment", "maildir", NULL};
static const char *const newline_names[] = {"normalize", "reject", NULL};
static const char *const bool_names[] = {"no", "yes", NULL};
static const char *const tls_level_names[] = {"none", "may", NULL};
static const char *const proxy_names[] = {"none", "haproxy", NULL};
static const char *const log_level_names[] = {"info", "debug", NULL};
static const char *const dnsbl_action_names[] = {"reject", "ignore", NULL};
static const char *const relay_tls_names[] = {"none", "may", "encrypt", "verify", NULL};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

static const struct key config_keys[] = {
    {"listen", K_LISTEN, FIELD(listen), 0, 0, NULL},
    {"myhostname", K_HOSTNAME, FIELD(myhostname), 0, 0, NULL},
    {"accept_domains", K_DOMAINS, FIELD(accept_domains), 0, 0, NULL},
    {"spool_dir", K_PATH, FIELD(spool_dir), 0, 0, NULL},
    {"spool_format", K_ENUM, FIELD(spool_format), 0, 1, spool_names},
    {"segment_size", K_SIZE, FIELD(segment_size), SEGMENT_SIZE_MIN, SIZE_HUGE, NULL},
    {"segment_max_age", K_TIME, FIELD(segment_max_age), 0, TIMEOUT_MAX, NULL},
    {"shards", K_SHARDS, FIELD(shards), 1, SHARDS_MAX, NULL},
    {"writers", K_COUNT, FIELD(writers), 1, WRITERS_MAX, NULL},
    {"message_size_limit", K_SIZE, FIELD(message_size_limit), 1, SIZE_HUGE, NULL},
    {"recipient_limit", K_COUNT, FIELD(recipient_limit), 1, RCPT_LIMIT_MAX, NULL},
    {"recipient_overshoot_limit", K_COUNT, FIELD(recipient_overshoot_limit), 0, RCPT_LIMIT_MAX * 10,
     NULL},
    {"command_line_limit", K_SIZE, FIELD(command_line_limit), CMD_LINE_LIMIT_MIN,
     CMD_LINE_LIMIT_MAX, NULL},
    {"error_limit", K_COUNT, FIELD(error_limit), 1, ERROR_LIMIT_MAX, NULL},
    {"junk_command_limit", K_COUNT, FIELD(junk_command_limit), 0, JUNK_LIMIT_MAX, NULL},
    {"max_connections", K_COUNT, FIELD(max_connections), 1, CONNECTIONS_MAX, NULL},
    {"command_timeout", K_TIME, FIELD(command_timeout), 1, TIMEOUT_MAX, NULL},
    {"data_timeout", K_TIME, FIELD(data_timeout), 1, TIMEOUT_MAX, NULL},
    {"shutdown_timeout", K_TIME, FIELD(shutdown_timeout), 0, TIMEOUT_MAX, NULL},
    {"bare_newline", K_ENUM, FIELD(bare_newline), 0, 1, newline_names},
    {"recv_buffer_size", K_SIZE, FIELD(recv_buffer_size), RECV_BUF_SIZE_MIN, RECV_BUF_SIZE_MAX,
     NULL},
    {"recv_buffers", K_POW2, FIELD(recv_buffers), 1, RECV_BUFS_MAX, NULL},
    {"ring_size", K_POW2, FIELD(ring_size), 1, RING_SIZE_MAX, NULL},
    {"body_flush_bytes", K_SIZE, FIELD(body_flush_bytes), RECV_BUF_SIZE_MIN, 1u << 30, NULL},
    {"pin_shards", K_BOOL, FIELD(pin_shards), 0, 1, bool_names},
    {"smtps_listen", K_LISTEN_TLS, FIELD(smtps_listen), 0, 0, NULL},
    {"metrics_listen", K_ADDR, FIELD(metrics_listen), 0, 0, NULL},
    {"pregreet_wait", K_TIME, FIELD(pregreet_wait), 0, 60, NULL},
    {"min_data_rate", K_SIZE, FIELD(min_data_rate), 0, 1u << 30, NULL},
    {"max_connections_per_ip", K_COUNT, FIELD(max_connections_per_ip), 0, 65535, NULL},
    {"tls_security_level", K_ENUM, FIELD(tls_security_level), 0, 1, tls_level_names},
    {"tls_cert_file", K_TEXT, FIELD(tls_cert_file), 0, 0, NULL},
    {"tls_key_file", K_TEXT, FIELD(tls_key_file), 0, 0, NULL},
    {"tls_ticket_key_file", K_TEXT, FIELD(tls_ticket_key_file), 0, 0, NULL},
    {"tls_ciphers", K_TEXT, FIELD(tls_ciphers), 0, 0, NULL},
    {"tls_handshake_timeout", K_TIME, FIELD(tls_handshake_timeout), 1, TIMEOUT_MAX, NULL},
    /* At most SESSCACHE_ENTRIES_MAX (tls/sesscache.h); tickets live no longer than
     * 24 h either (RFC 5246 F.1.4). */
    {"tls_session_cache_size", K_COUNT, FIELD(tls_session_cache_size), 0, 1000000, NULL},
    {"tls_session_timeout", K_TIME, FIELD(tls_session_timeout), 1, 86400, NULL},
    {"connection_limit_exceptions", K_CIDRS, FIELD(connection_limit_exceptions), 0, 0, NULL},
    {"proxy_protocol", K_ENUM, FIELD(proxy_protocol), 0, 1, proxy_names},
    {"proxy_timeout", K_TIME, FIELD(proxy_timeout), 1, TIMEOUT_MAX, NULL},
    {"stats_interval", K_TIME, FIELD(stats_interval), 0, TIMEOUT_MAX, NULL},
    {"log_level", K_ENUM, FIELD(log_level), 0, 1, log_level_names},
    {"user", K_TEXT, FIELD(user), 0, 0, NULL},
    {"group", K_TEXT, FIELD(group), 0, 0, NULL},
    {"allow_root", K_BOOL, FIELD(allow_root), 0, 1, bool_names},
    {"sandbox", K_BOOL, FIELD(sandbox), 0, 1, bool_names},
    {"recipient_table", K_TEXT, FIELD(recipient_table), 0, 0, NULL},
    {"recipient_delimiter", K_TEXT, FIELD(recipient_delimiter), 0, 0, NULL},
    {"dnsbl_sites", K_DNSBL_SITES, FIELD(dnsbl_sites), 0, 0, NULL},
    {"dnsbl_threshold", K_COUNT, FIELD(dnsbl_threshold), 1, DNSBL_WEIGHT_MAX *DNSBL_SITES_MAX,
     NULL},
    {"dnsbl_action", K_ENUM, FIELD(dnsbl_action), 0, 1, dnsbl_action_names},
    {"dnsbl_timeout", K_MS, FIELD(dnsbl_timeout_ms), 100, 60000, NULL},
    {"dnsbl_cache_size", K_COUNT, FIELD(dnsbl_cache_size), 0, DNSBL_CACHE_MAX, NULL},
    {"dnsbl_min_ttl", K_TIME, FIELD(dnsbl_min_ttl), 0, 86400, NULL},
    {"dnsbl_max_ttl", K_TIME, FIELD(dnsbl_max_ttl), 0, 7 * 86400, NULL},
    {"dnsbl_exceptions", K_CIDRS, FIELD(dnsbl_exceptions), 0, 0, NULL},
    {"dns_servers", K_DNS_SERVERS, FIELD(dns_servers), 0, 0, NULL},
    {"client_connection_rate_limit", K_COUNT, FIELD(client_connection_rate_limit), 0,
     RATE_LIMIT_MAX, NULL},
    {"client_message_rate_limit", K_COUNT, FIELD(client_message_rate_limit), 0, RATE_LIMIT_MAX,
     NULL},
    {"relay_host", K_RELAY_HOST, FIELD(relay_host), 0, 0, NULL},
    {"relay_workers", K_COUNT, FIELD(relay_workers), 1, RELAY_WORKERS_MAX, NULL},
    {"relay_connections", K_COUNT, FIELD(relay_connections), 1, RELAY_CONNECTIONS_MAX, NULL},
    {"relay_msgs_per_session", K_COUNT, FIELD(relay_msgs_per_session), 1, 100000, NULL},
    {"relay_tls", K_ENUM, FIELD(relay_tls), 0, 3, relay_tls_names},
    {"relay_tls_ca_file", K_TEXT, FIELD(relay_tls_ca_file), 0, 0, NULL},
    {"relay_tls_server_name", K_TEXT, FIELD(relay_tls_server_name), 0, 0, NULL},
    {"relay_retry_schedule", K_RETRY, FIELD(relay_retry_min), 1, 7 * 86400, NULL},
    {"maximal_queue_lifetime", K_TIME, FIELD(maximal_queue_lifetime), 1, 365 * 86400, NULL},
    {"relay_helo_name", K_TEXT, FIELD(relay_helo_name), 0, 0, NULL},
    {"relay_connect_timeout", K_TIME, FIELD(relay_connect_timeout), 1, TIMEOUT_MAX, NULL},
    {"relay_command_timeout", K_TIME, FIELD(relay_command_timeout), 1, TIMEOUT_MAX, NULL},
    {"spool_max_bytes", K_SIZE, FIELD(spool_max_bytes), 0, SIZE_HUGE, NULL},
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

static_assert(sizeof(((struct config *)0)->spool_format) == sizeof(unsigned), "enum as unsigned");
static_assert(sizeof(((struct config *)0)->bare_newline) == sizeof(unsigned), "enum as unsigned");
static_assert(sizeof(((struct config *)0)->proxy_protocol) == sizeof(unsigned), "enum as unsigned");
static_assert(sizeof(((struct config *)0)->log_level) == sizeof(unsigned), "enum as unsigned");
static_assert(sizeof(((struct config *)0)->dnsbl_action) == sizeof(unsigned), "enum as unsigned");
static_assert(sizeof(((struct config *)0)->relay_tls) == sizeof(unsigned), "enum as unsigned");

static char default_domain[] = "localhost";
static char *default_domains[] = {default_domain};

/* --- messages ------------------------------------------------------------ */

/*
 * Operator text for a message: printable ASCII (space included) as it is,
 * other bytes as \xHH, cut to LOG_CLIENT_TEXT_MAX bytes with "...".
 */
static const char *quote(char buf[CONFIG_QUOTE_MAX], const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0, max = n < LOG_CLIENT_TEXT_MAX ? n : LOG_CLIENT_TEXT_MAX;

	for (i = 0; i < max; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch >= 0x20 && ch < 0x7f) {
			buf[o++] = (char)ch;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 0xf];
		}
	}
	if (n > max) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

/* "mxring: WHERE: [key 'K': ]message\n" */
static void say(const struct where *w, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(const struct where *w, const char *key, const char *fmt, ...)
{
	char q[CONFIG_QUOTE_MAX];
	va_list ap;

	if (w->err == NULL)
		return;
	if (w->path)
		fprintf(w->err, "mxring: %s:%u: ", w->path, w->line);
	else if (w->kv)
		fprintf(w->err, "mxring: -o %s: ", quote(q, w->kv, strlen(w->kv)));
	else
		fprintf(w->err, "mxring: ");
	if (key)
		fprintf(w->err, "key '%s': ", key);
	va_start(ap, fmt);
	vfprintf(w->err, fmt, ap);
	va_end(ap);
	fputc('\n', w->err);
}

/* --- values -------------------------------------------------------------- */

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

static bool is_sep(char ch)
{
	return ch == ',' || is_space(ch);
}

static bool is_alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static char lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

static bool word_ieq(const char *p, size_t n, const char *word)
{
	size_t k;

	for (k = 0; k < n; k++)
		if (word[k] == '\0' || lower(p[k]) != word[k])
			return false;
	return word[n] == '\0';
}

/*
 * Next token of a list at *pos: skips separators, returns its length (0 at
 * the end) and sets *tok.
 */
static size_t next_token(const char *v, size_t n, size_t *pos, const char **tok)
{
	size_t i = *pos, start;

	while (i < n && is_sep(v[i]))
		i++;
	start = i;
	while (i < n && !is_sep(v[i]))
		i++;
	*pos = i;
	*tok = v + start;
	return i - start;
}

/*
 * A domain name: labels of letters, digits and hyphens (not first or last),
 * 1..63 octets, joined by single dots, no trailing dot, at most DOMAIN_MAX
 * octets. lead_dot allows one leading '.' (accept_domains: subdomains).
 */
static bool domain_ok(const char *p, size_t n, bool lead_dot)
{
	size_t i = 0, label = 0;

	if (n > DOMAIN_MAX)
		return false;
	if (lead_dot && n > 0 && p[0] == '.')
		i = 1;
	if (i == n)
		return false;
	for (; i < n; i++) {
		if (p[i] == '.') {
			if (label == 0 || p[i - 1] == '-')
				return false;
			label = 0;
		} else if (is_alnum(p[i]) || (p[i] == '-' && label > 0)) {
			if (++label > LABEL_MAX)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 && p[n - 1] != '-';
}

/*
 * Decimal number with an optional unit suffix: units lists the letters and
 * mult their factors. Returns 0, or -EINVAL / -ERANGE.
 */
static int parse_number(const char *v, size_t n, const char *units, const uint64_t *mult,
			uint64_t *out)
{
	uint64_t x = 0, m = 1;
	size_t i = 0;

	while (i < n && v[i] >= '0' && v[i] <= '9') {
		x = x * 10 + (uint64_t)(v[i] - '0');
		if (x > NUMBER_MAX)
			return -ERANGE;
		i++;
	}
	if (i == 0)
		return -EINVAL;
	if (i < n) {
		const char *u = units ? strchr(units, lower(v[i])) : NULL;

		if (u == NULL || v[i] == '\0' || i + 1 != n)
			return -EINVAL;
		m = mult[u - units];
	}
	if (x > NUMBER_MAX / m)
		return -ERANGE;
	*out = x * m;
	return 0;
}

static uint64_t field_get(const struct config *cfg, const struct key *k)
{
	const char *f = (const char *)cfg + k->off;

	if (k->size == sizeof(uint64_t)) {
		uint64_t v;

		memcpy(&v, f, sizeof(v));
		return v;
	}
	if (k->size == sizeof(unsigned)) {
		unsigned v;

		memcpy(&v, f, sizeof(v));
		return v;
	}
	return *(const bool *)f;
}

static void field_set(struct config *cfg, const struct key *k, uint64_t v)
{
	char *f = (char *)cfg + k->off;

	if (k->size == sizeof(uint64_t)) {
		memcpy(f, &v, sizeof(v));
	} else if (k->size == sizeof(unsigned)) {
		unsigned u = (unsigned)v;

		memcpy(f, &u, sizeof(u));
	} else {
		*(bool *)f = v != 0;
	}
}

static bool is_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* Numbers of every kind: sizes, counts, powers of two, shards, times. */
static int set_number(struct config *cfg, const struct key *k, const char *v, size_t n,
		      const struct where *w)
{
	static const uint64_t size_mult[] = {1024, 1024 * 1024, 1024 * 1024 * 1024};
	static const uint64_t time_mult[] = {1, 60, 3600, 86400, 7 * 86400};
	const char *units = NULL, *what = "number";
	const uint64_t *mult = NULL;
	char q[CONFIG_QUOTE_MAX];
	uint64_t x;
	int rc;

	if (k->type == K_SHARDS && word_ieq(v, n, "auto")) {
		field_set(cfg, k, 0);
		return 0;
	}
	if (k->type == K_SIZE) {
		units = "kmg";
		mult = size_mult;
		what = "size";
	} else if (k->type == K_TIME) {
		units = "smhdw";
		mult = time_mult;
		what = "time";
	}
	rc = parse_number(v, n, units, mult, &x);
	if (rc == -EINVAL) {
		say(w, k->name, "bad %s '%s'%s", what, quote(q, v, n),
		    k->type == K_SHARDS ? " (expected auto or a number)" : "");
		return -1;
	}
	if (rc < 0 || x < k->min || x > k->max) {
		say(w, k->name, "'%s' is out of range %llu..%llu", quote(q, v, n),
		    (unsigned long long)k->min, (unsigned long long)k->max);
		return -1;
	}
	if (k->type == K_POW2 && !is_pow2(x)) {
		say(w, k->name, "'%s' is not a power of two", quote(q, v, n));
		return -1;
	}
	field_set(cfg, k, x);
	return 0;
}

static int set_enum(struct config *cfg, const struct key *k, const char *v, size_t n,
		    const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	unsigned i;

	for (i = 0; k->names[i]; i++) {
		if (word_ieq(v, n, k->names[i])) {
			field_set(cfg, k, i);
			return 0;
		}
	}
	char names[128];
	size_t off = 0;
	for (i = 0; k->names[i] && off < sizeof(names); i++)
		off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", i ? "|" : "",
					k->names[i]);
	say(w, k->name, "bad value '%s' (expected %s)", quote(q, v, n), names);
	return -1;
}

static int set_hostname(struct config *cfg, const struct key *k, const char *v, size_t n,
			const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];

	if (!domain_ok(v, n, false)) {
		say(w, k->name, "bad domain '%s'", quote(q, v, n));
		return -1;
	}
	memcpy(cfg->myhostname, v, n);
	cfg->myhostname[n] = '\0';
	return 0;
}

static int set_path(struct config *cfg, const struct key *k, const char *v, size_t n,
		    const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	char *dst = (char *)cfg + k->off;
	size_t i;

	if (n >= k->size) {
		say(w, k->name, "value longer than %zu bytes", k->size - 1);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
			say(w, k->name, "control character in '%s'", quote(q, v, n));
			return -1;
		}
	}
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

/* --- listen -------------------------------------------------------------- */

/* "host:port" or "[v6]:port" into a; 0 or -1 with a message. */
static int parse_listen(struct listen_addr *a, const char *t, size_t n, const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *host = t, *colon;
	size_t hlen, plen;
	uint64_t port;
	int af = AF_INET;

	colon = memrchr(t, ':', n);
	if (colon == NULL)
		goto bad;
	hlen = (size_t)(colon - t);
	plen = n - hlen - 1;
	if (t[0] == '[') {
		if (hlen < 2 || t[hlen - 1] != ']')
			goto bad;
		host++;
		hlen -= 2;
		af = AF_INET6;
	} else if (memchr(t, ':', hlen)) {
		say(w, "listen", "IPv6 address needs brackets: '%s'", quote(q, t, n));
		return -1;
	}
	if (hlen == 0 || hlen >= sizeof(a->host))
		goto bad;
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';
	if (inet_pton(af, a->host, bin) != 1)
		goto bad;
	if (parse_number(colon + 1, plen, NULL, NULL, &port) != 0 || port == 0 || port > 65535) {
		say(w, "listen", "bad port in '%s' (1..65535)", quote(q, t, n));
		return -1;
	}
	a->port = (uint16_t)port;
	return 0;
bad:
	say(w, "listen", "bad address '%s' (expected IPv4:port or [IPv6]:port)", quote(q, t, n));
	return -1;
}

/* One optional address (K_ADDR): host:port, or empty for none. */
static int set_addr(struct config *cfg, const struct key *k, const char *v, size_t n,
		    const struct where *w)
{
	struct listen_addr *a = (struct listen_addr *)((char *)cfg + k->off);
	struct listen_addr tmp;
	size_t pos = 0, tlen;
	const char *t;

	memset(&tmp, 0, sizeof(tmp));
	tlen = next_token(v, n, &pos, &t);
	if (tlen > 0) {
		if (parse_listen(&tmp, t, tlen, w) != 0)
			return -1;
		if (next_token(v, n, &pos, &t) > 0) {
			say(w, k->name, "one address only");
			return -1;
		}
	}
	*a = tmp;
	return 0;
}

/*
 * Appends the listed addresses to list/count (replace: the list is emptied
 * first). An empty value is refused unless allow_empty (then the list empties).
 */
static int set_listen_list(struct listen_addr *list, unsigned *count, const char *name,
			   const char *v, size_t n, bool replace, bool allow_empty,
			   const struct where *w)
{
	struct listen_addr tmp[LISTEN_MAX];
	unsigned cnt = replace ? 0 : *count, i;
	char q[CONFIG_QUOTE_MAX];
	size_t pos = 0, tlen;
	const char *t;

	memcpy(tmp, list, sizeof(tmp));
	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		if (cnt == LISTEN_MAX) {
			say(w, name, "more than %d addresses", LISTEN_MAX);
			return -1;
		}
		if (parse_listen(&tmp[cnt], t, tlen, w) != 0)
			return -1;
		for (i = 0; i < cnt; i++) {
			if (tmp[i].port == tmp[cnt].port &&
			    strcmp(tmp[i].host, tmp[cnt].host) == 0) {
				say(w, name, "address '%s' given twice", quote(q, t, tlen));
				return -1;
			}
		}
		cnt++;
	}
	if (cnt == 0 && !allow_empty) {
		say(w, name, "no address");
		return -1;
	}
	memcpy(list, tmp, sizeof(tmp));
	*count = cnt;
	return 0;
}

static int set_listen(struct config *cfg, const char *v, size_t n, bool replace,
		      const struct where *w)
{
	return set_listen_list(cfg->listen, &cfg->nlisten, "listen", v, n, replace, false, w);
}

/* --- accept_domains ------------------------------------------------------ */

static void domains_free(struct config *cfg)
{
	if (cfg->accept_domains != default_domains)
		free(cfg->accept_domains);
	cfg->accept_domains = NULL;
	cfg->naccept_domains = 0;
}

/* Replaces the list; one allocation holds the pointers and the strings. */
static int set_domains(struct config *cfg, const char *v, size_t n, const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	size_t pos = 0, tlen, bytes = 0, k;
	unsigned cnt = 0, i;
	const char *t;
	char **list, *s;

	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		if (!domain_ok(t, tlen, true)) {
			say(w, "accept_domains", "bad domain '%s'", quote(q, t, tlen));
			return -1;
		}
		if (++cnt > ACCEPT_DOMAINS_MAX) {
			say(w, "accept_domains", "more than %d domains", ACCEPT_DOMAINS_MAX);
			return -1;
		}
		bytes += tlen + 1;
	}
	list = malloc(cnt * sizeof(char *) + bytes + 1);
	if (list == NULL) {
		say(w, "accept_domains", "out of memory");
		return -1;
	}
	s = (char *)(list + cnt);
	pos = 0;
	for (i = 0; i < cnt; i++) {
		tlen = next_token(v, n, &pos, &t);
		list[i] = s;
		for (k = 0; k < tlen; k++)
			*s++ = lower(t[k]);
		*s++ = '\0';
	}
	domains_free(cfg);
	cfg->accept_domains = list;
	cfg->naccept_domains = cnt;
	return 0;
}

/* --- address prefixes --------------------------------------------------- */

/* Whether the first bits of a and b are equal. */
static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	return rest == 0 || ((a[whole] ^ b[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* Clears the bits of c past its length; returns whether any was set. */
static bool cidr_mask(struct cidr *c)
{
	unsigned len = c->v6 ? 16 : 4, i;
	bool set = false;

	for (i = 0; i < len; i++) {
		unsigned keep = c->bits >= 8 * (i + 1) ? 8 : c->bits > 8 * i ? c->bits - 8 * i : 0;
		uint8_t m = (uint8_t)(0xff00 >> keep);

		set |= (c->addr[i] & (uint8_t)~m) != 0;
		c->addr[i] &= m;
	}
	return set;
}

/* "a.b.c.d[/n]", "v6[/n]" or "[v6][/n]" into c; 0 or -1 with a message. */
static int parse_cidr(struct cidr *c, const char *name, const char *t, size_t n,
		      const struct where *w)
{
	char q[CONFIG_QUOTE_MAX], host[INET6_ADDRSTRLEN + 1], net[INET6_ADDRSTRLEN];
	const char *slash = memchr(t, '/', n), *hp = t;
	size_t hlen = slash ? (size_t)(slash - t) : n;
	bool bracket = hlen >= 2 && t[0] == '[' && t[hlen - 1] == ']';
	uint64_t bits;
	unsigned max;

	if (bracket) {
		hp++;
		hlen -= 2;
	}
	memset(c, 0, sizeof(*c));
	if (hlen == 0 || hlen >= sizeof(host))
		goto bad;
	memcpy(host, hp, hlen);
	host[hlen] = '\0';
	if (!bracket && inet_pton(AF_INET, host, c->addr) == 1) {
		max = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->v6 = true;
		max = 128;
	} else {
		goto bad;
	}
	bits = max;
	if (slash &&
	    parse_number(slash + 1, n - hlen - (bracket ? 2 : 0) - 1, NULL, NULL, &bits) != 0) {
		say(w, name, "bad prefix length in '%s'", quote(q, t, n));
		return -1;
	}
	if (bits > max) {
		say(w, name, "prefix length in '%s' is out of range 0..%u", quote(q, t, n), max);
		return -1;
	}
	c->bits = (uint8_t)bits;
	if (cidr_mask(c)) {
		inet_ntop(c->v6 ? AF_INET6 : AF_INET, c->addr, net, sizeof(net));
		say(w, name, "'%s' has address bits past its prefix length (the network is %s/%u)",
		    quote(q, t, n), net, c->bits);
		return -1;
	}
	return 0;
bad:
	say(w, name, "bad address '%s' (expected IPv4 or IPv6, optionally /prefix length)",
	    quote(q, t, n));
	return -1;
}

/* The prefix list of a K_CIDRS key and its count. */
static struct cidr *cidr_field(const struct config *cfg, const struct key *k, unsigned **count)
{
	struct config *c = (struct config *)cfg;
	*count = k->off == offsetof(struct config, dnsbl_exceptions)
		     ? &c->ndnsbl_exceptions
		     : &c->nconnection_limit_exceptions;
	return (struct cidr *)((char *)c + k->off);
}

/* Replaces a list of prefixes (connection_limit_exceptions, dnsbl_exceptions);
 * an empty value empties it. */
static int set_cidrs(struct config *cfg, const struct key *k, const char *v, size_t n,
		     const struct where *w)
{
	unsigned *count;
	struct cidr *list = cidr_field(cfg, k, &count);
	struct cidr tmp[CIDR_LIST_MAX];
	unsigned cnt = 0;
	size_t pos = 0, tlen;
	const char *t;

	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		if (cnt == CIDR_LIST_MAX) {
			say(w, k->name, "more than %d prefixes", CIDR_LIST_MAX);
			return -1;
		}
		if (parse_cidr(&tmp[cnt], k->name, t, tlen, w) != 0)
			return -1;
		cnt++;
	}
	memcpy(list, tmp, cnt * sizeof(tmp[0]));
	*count = cnt;
	return 0;
}

bool cidr_list_match(const struct cidr *list, unsigned n, bool v6, const uint8_t *addr)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	bool v4_in_v6 = v6 && memcmp(addr, mapped, sizeof(mapped)) == 0;
	unsigned i;

	for (i = 0; i < n && i < CIDR_LIST_MAX; i++) {
		if (list[i].v6 == v6 && prefix_eq(list[i].addr, addr, list[i].bits))
			return true;
		if (v4_in_v6 && !list[i].v6 && prefix_eq(list[i].addr, addr + 12, list[i].bits))
			return true;
	}
	return false;
}

/* --- screening ----------------------------------------------------------- */

/* A time in milliseconds: "800ms", or a time in seconds ("2", "2s", "1m"). */
static int set_ms(struct config *cfg, const struct key *k, const char *v, size_t n,
		  const struct where *w)
{
	static const uint64_t time_mult[] = {1, 60, 3600};
	char q[CONFIG_QUOTE_MAX];
	uint64_t x;
	int rc;

	if (n > 2 && lower(v[n - 2]) == 'm' && lower(v[n - 1]) == 's')
		rc = parse_number(v, n - 2, NULL, NULL, &x);
	else if ((rc = parse_number(v, n, "smh", time_mult, &x)) == 0 && x > NUMBER_MAX / 1000)
		rc = -ERANGE;
	else if (rc == 0)
		x *= 1000;
	if (rc == -EINVAL) {
		say(w, k->name, "bad time '%s' (seconds, or milliseconds with ms)", quote(q, v, n));
		return -1;
	}
	if (rc < 0 || x < k->min || x > k->max) {
		say(w, k->name, "'%s' is out of range %llums..%llums", quote(q, v, n),
		    (unsigned long long)k->min, (unsigned long long)k->max);
		return -1;
	}
	field_set(cfg, k, x);
	return 0;
}

/* Replaces the list of DNS list sites; an empty value empties it. */
static int set_dnsbl_sites(struct config *cfg, const struct key *k, const char *v, size_t n,
			   const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	size_t pos = 0, tlen;
	unsigned cnt = 0;
	const char *t;
	struct dnsbl_site *list = calloc(DNSBL_SITES_MAX, sizeof(*list));

	if (!list) {
		say(w, k->name, "out of memory");
		return -1;
	}
	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		const char *why = NULL;
		if (cnt == DNSBL_SITES_MAX) {
			say(w, k->name, "more than %d sites", DNSBL_SITES_MAX);
			goto fail;
		}
		if (dnsbl_site_parse(t, tlen, &list[cnt], &why) != 0) {
			say(w, k->name, "bad site '%s': %s", quote(q, t, tlen), why);
			goto fail;
		}
		cnt++;
	}
	free(cfg->dnsbl_sites);
	cfg->dnsbl_sites = cnt ? list : NULL;
	cfg->ndnsbl_sites = cnt;
	if (!cnt)
		free(list);
	return 0;
fail:
	free(list);
	return -1;
}

/* Replaces relay_host's list; an empty value empties it (no relay). */
static int set_relay_host(struct config *cfg, const struct key *k, const char *v, size_t n,
			  const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	struct relay_dest tmp[RELAY_HOSTS_MAX];
	size_t pos = 0, tlen;
	unsigned cnt = 0;
	const char *t;

	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		const char *why = NULL;
		if (cnt == RELAY_HOSTS_MAX) {
			say(w, k->name, "more than %d destinations", RELAY_HOSTS_MAX);
			return -1;
		}
		if (relay_dest_parse(t, tlen, &tmp[cnt], &why) != 0) {
			say(w, k->name, "bad destination '%s': %s", quote(q, t, tlen), why);
			return -1;
		}
		cnt++;
	}
	memcpy(cfg->relay_host, tmp, cnt * sizeof(tmp[0]));
	cfg->nrelay_host = cnt;
	return 0;
}

/* relay_retry_schedule = FIRST, MAX: the first retry after FIRST, doubling up to MAX. */
static int set_retry(struct config *cfg, const struct key *k, const char *v, size_t n,
		     const struct where *w)
{
	static const uint64_t time_mult[] = {1, 60, 3600, 86400, 7 * 86400};
	char q[CONFIG_QUOTE_MAX];
	uint64_t x[2];
	size_t pos = 0, tlen;
	unsigned cnt = 0;
	const char *t;

	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		if (cnt == 2 || parse_number(t, tlen, "smhdw", time_mult, &x[cnt]) != 0 ||
		    x[cnt] < k->min || x[cnt] > k->max)
			goto bad;
		cnt++;
	}
	if (cnt != 2 || x[0] > x[1])
		goto bad;
	cfg->relay_retry_min = (unsigned)x[0];
	cfg->relay_retry_max = (unsigned)x[1];
	return 0;
bad:
	say(w, k->name,
	    "bad schedule '%s' (expected FIRST, MAX: two times from 1s to 7d, FIRST <= MAX)",
	    quote(q, v, n));
	return -1;
}

/* One name server: "a.b.c.d", "a.b.c.d:port", "v6", "[v6]" or "[v6]:port". */
static int parse_dns_server(struct listen_addr *a, const char *t, size_t n, const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	uint8_t bin[16];
	const char *colon = memchr(t, ':', n), *host = t, *port = NULL;
	size_t hlen = n, plen = 0;
	uint64_t p = 53;

	memset(a, 0, sizeof(*a));
	if (n > 0 && t[0] == '[') {
		const char *close = memchr(t, ']', n);
		if (!close)
			goto bad;
		host = t + 1;
		hlen = (size_t)(close - host);
		if (close + 1 < t + n) {
			if (close[1] != ':')
				goto bad;
			port = close + 2;
			plen = (size_t)(t + n - port);
		}
	} else if (colon && !memchr(colon + 1, ':', (size_t)(t + n - colon - 1))) {
		hlen = (size_t)(colon - t); /* IPv4 with a port; more colons: bare IPv6 */
		port = colon + 1;
		plen = (size_t)(t + n - port);
	}
	if (hlen == 0 || hlen >= sizeof(a->host))
		goto bad;
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';
	if (inet_pton(AF_INET, a->host, bin) != 1 && inet_pton(AF_INET6, a->host, bin) != 1)
		goto bad;
	if (port && (parse_number(port, plen, NULL, NULL, &p) != 0 || p == 0 || p > 65535))
		goto bad;
	a->port = (uint16_t)p;
	return 0;
bad:
	say(w, "dns_servers", "bad address '%s' (expected IPv4[:port], IPv6 or [IPv6]:port)",
	    quote(q, t, n));
	return -1;
}

/* Replaces the list of name servers; an empty value empties it (resolv.conf). */
static int set_dns_servers(struct config *cfg, const struct key *k, const char *v, size_t n,
			   const struct where *w)
{
	struct listen_addr tmp[DNS_SERVERS_MAX];
	unsigned cnt = 0;
	size_t pos = 0, tlen;
	const char *t;

	while ((tlen = next_token(v, n, &pos, &t)) > 0) {
		if (cnt == DNS_SERVERS_MAX) {
			say(w, k->name, "more than %d servers", DNS_SERVERS_MAX);
			return -1;
		}
		if (parse_dns_server(&tmp[cnt], t, tlen, w) != 0)
			return -1;
		cnt++;
	}
	memcpy(cfg->dns_servers, tmp, cnt * sizeof(tmp[0]));
	cfg->ndns_servers = cnt;
	return 0;
}

/* --- one setting --------------------------------------------------------- */

static const struct key *key_find(const char *name, size_t n)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strlen(config_keys[i].name) == n && memcmp(config_keys[i].name, name, n) == 0)
			return &config_keys[i];
	return NULL;
}

/* Applies "value" (v, n: trimmed) to key k. */
static int set_value(struct config *cfg, const struct key *k, const char *v, size_t n,
		     bool listen_replace, const struct where *w)
{
	if (n == 0 && k->type != K_DOMAINS && k->type != K_TEXT && k->type != K_LISTEN_TLS &&
	    k->type != K_CIDRS && k->type != K_ADDR && k->type != K_DNSBL_SITES &&
	    k->type != K_DNS_SERVERS && k->type != K_RELAY_HOST) {
		say(w, k->name, "empty value");
		return -1;
	}
	if (memchr(v, '\0', n)) {
		say(w, k->name, "NUL byte in value");
		return -1;
	}
	switch (k->type) {
	case K_LISTEN:
		return set_listen(cfg, v, n, listen_replace, w);
	case K_LISTEN_TLS:
		return set_listen_list(cfg->smtps_listen, &cfg->nsmtps_listen, k->name, v, n, true,
				       true, w);
	case K_ADDR:
		return set_addr(cfg, k, v, n, w);
	case K_MS:
		return set_ms(cfg, k, v, n, w);
	case K_DNSBL_SITES:
		return set_dnsbl_sites(cfg, k, v, n, w);
	case K_DNS_SERVERS:
		return set_dns_servers(cfg, k, v, n, w);
	case K_RELAY_HOST:
		return set_relay_host(cfg, k, v, n, w);
	case K_RETRY:
		return set_retry(cfg, k, v, n, w);
	case K_HOSTNAME:
		return set_hostname(cfg, k, v, n, w);
	case K_CIDRS:
		return set_cidrs(cfg, k, v, n, w);
	case K_DOMAINS:
		return set_domains(cfg, v, n, w);
	case K_PATH:
	case K_TEXT:
		return set_path(cfg, k, v, n, w);
	case K_ENUM:
	case K_BOOL:
		return set_enum(cfg, k, v, n, w);
	case K_SIZE:
	case K_COUNT:
	case K_POW2:
	case K_SHARDS:
	case K_TIME:
		return set_number(cfg, k, v, n, w);
	}
	return -1;
}

/*
 * "key = value" (line, n bytes; no newline inside). *listen_first says
 * whether a listen setting replaces the list; it is cleared once one has.
 * 0 or -1 with a message.
 */
static int set_line(struct config *cfg, const char *line, size_t n, bool *listen_first,
		    const struct where *w)
{
	char q[CONFIG_QUOTE_MAX];
	const struct key *k;
	size_t i = 0, klen;
	bool replace;
	int rc;

	while (i < n && !is_space(line[i]) && line[i] != '=')
		i++;
	klen = i;
	while (i < n && is_space(line[i]))
		i++;
	if (klen == 0 || i == n || line[i] != '=') {
		say(w, NULL, "expected 'key = value', got '%s'", quote(q, line, n));
		return -1;
	}
	i++;
	while (i < n && is_space(line[i]))
		i++;
	while (n > i && is_space(line[n - 1]))
		n--;
	k = key_find(line, klen);
	if (k == NULL) {
		say(w, NULL, "unknown key '%s'", quote(q, line, klen));
		return -1;
	}
	replace = k->type == K_LISTEN && *listen_first;
	rc = set_value(cfg, k, line + i, n - i, replace, w);
	if (rc == 0 && k->type == K_LISTEN)
		*listen_first = false;
	return rc;
}

/* --- public -------------------------------------------------------------- */

void config_defaults(struct config *cfg)
{
	char host[HOSTNAME_BUF];

	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->listen[0].host, "127.0.0.1");
	cfg->listen[0].port = 2525;
	cfg->nlisten = 1;
	cfg->sandbox = true;
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		if (domain_ok(host, strlen(host), false))
			strcpy(cfg->myhostname, host);
	}
	if (cfg->myhostname[0] == '\0')
		strcpy(cfg->myhostname, "localhost");
	cfg->accept_domains = default_domains;
	cfg->naccept_domains = 1;
	strcpy(cfg->spool_dir, "spool");
	cfg->spool_format = SPOOL_SEGMENT;
	cfg->segment_size = 64ull << 20;
	cfg->segment_max_age = 300;
	cfg->shards = 0;
	cfg->writers = 1;
	cfg->message_size_limit = 10240000;
	cfg->recipient_limit = 100;
	cfg->recipient_overshoot_limit = 1000;
	cfg->command_line_limit = 512;
	cfg->error_limit = 20;
	cfg->junk_command_limit = 100;
	cfg->max_connections = 20000;
	cfg->command_timeout = 300;
	cfg->data_timeout = 180;
	cfg->shutdown_timeout = 30;
	cfg->bare_newline = BARE_NEWLINE_NORMALIZE;
	cfg->recv_buffer_size = 16u << 10;
	cfg->recv_buffers = 1024;
	cfg->ring_size = 1024;
	cfg->body_flush_bytes = 256u << 10;
	cfg->pin_shards = true;
	cfg->tls_security_level = TLS_LEVEL_NONE;
	cfg->tls_handshake_timeout = 30;
	cfg->min_data_rate = 500;
	cfg->proxy_protocol = PROXY_PROTOCOL_NONE;
	cfg->proxy_timeout = 5;
	cfg->listen_from_o = false;
	cfg->tls_session_cache_size = 20000;
	cfg->tls_session_timeout = 3600;
	cfg->stats_interval = 60;
	cfg->dnsbl_threshold = 1;
	cfg->dnsbl_action = DNSBL_REJECT;
	cfg->dnsbl_timeout_ms = 2000;
	cfg->dnsbl_cache_size = 100000;
	cfg->dnsbl_min_ttl = 60;
	cfg->dnsbl_max_ttl = 3600;
	cfg->relay_workers = 1;
	cfg->relay_connections = 20;
	cfg->relay_msgs_per_session = 100;
	cfg->relay_tls = RELAY_TLS_MAY;
	cfg->relay_retry_min = 60;
	cfg->relay_retry_max = 4000;
	cfg->maximal_queue_lifetime = 5 * 86400;
	cfg->relay_connect_timeout = 30;
	cfg->relay_command_timeout = 300;
	cfg->spool_max_bytes = 10ull << 30;
}

/* Reads the whole file (at most CONFIG_FILE_MAX bytes) into *buf, NUL-terminated. */
static int read_file(const char *path, char **buf, size_t *len, FILE *err)
{
	struct where w = {.err = err};
	size_t cap = CONFIG_FILE_MAX, n;
	struct stat st;
	FILE *f;
	char *b;

	f = fopen(path, "r");
	if (f == NULL) {
		say(&w, NULL, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) != 0)
		st.st_mode = 0;
	if (S_ISDIR(st.st_mode)) {
		say(&w, NULL, "%s: %s", path, strerror(EISDIR));
		fclose(f);
		return -1;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < (uint64_t)cap)
		cap = (size_t)st.st_size;
	b = malloc(cap + 2);
	if (b == NULL) {
		say(&w, NULL, "%s: out of memory", path);
		fclose(f);
		return -1;
	}
	errno = 0;
	n = fread(b, 1, cap + 1, f);
	if (ferror(f) || n > CONFIG_FILE_MAX) {
		say(&w, NULL, "%s: %s", path,
		    ferror(f) ? strerror(errno ? errno : EIO) : "file larger than 1 MiB");
		fclose(f);
		free(b);
		return -1;
	}
	fclose(f);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

/*
 * Walks the physical lines of buf, joining continuations in place (the
 * joined text is never longer than what it was made from), and applies
 * each logical line.
 */
static int apply_lines(struct config *cfg, char *buf, size_t len, const char *path, FILE *err)
{
	struct where w = {.err = err, .path = path};
	char *acc = NULL; /* the logical line being joined */
	size_t acc_len = 0, pos = 0;
	unsigned lineno = 0, acc_line = 0;
	bool listen_first = true;
	int rc = 0;

	while (pos <= len) {
		char *line = buf + pos, *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos, b = 0, e = n;

		lineno++;
		pos += n + 1;
		while (b < n && is_space(line[b]))
			b++;
		while (e > b && is_space(line[e - 1]))
			e--;
		if (b == e || line[b] == '#')
			continue;
		if (memchr(line, '\0', n)) {
			w.line = lineno;
			say(&w, NULL, "NUL byte in line");
			return -1;
		}
		if (b > 0) {
			if (acc == NULL) {
				w.line = lineno;
				say(&w, NULL, "continuation line without a key before it");
				return -1;
			}
			acc[acc_len++] = ' ';
			memmove(acc + acc_len, line + b, e - b);
			acc_len += e - b;
			continue;
		}
		if (acc) {
			w.line = acc_line;
			if (set_line(cfg, acc, acc_len, &listen_first, &w) != 0)
				rc = -1;
		}
		acc = line;
		acc_len = e;
		acc_line = lineno;
	}
	if (acc) {
		w.line = acc_line;
		if (set_line(cfg, acc, acc_len, &listen_first, &w) != 0)
			rc = -1;
	}
	return rc;
}

int config_load(struct config *cfg, const char *path, FILE *err)
{
	size_t len;
	char *buf;
	int rc;

	if (read_file(path, &buf, &len, err) != 0)
		return -1;
	rc = apply_lines(cfg, buf, len, path, err);
	free(buf);
	return rc;
}

int config_set(struct config *cfg, const char *kv, FILE *err)
{
	struct where w = {.err = err, .kv = kv};
	bool first = !cfg->listen_from_o;
	size_t n = strlen(kv);
	char q[CONFIG_QUOTE_MAX];

	if (memchr(kv, '\n', n)) {
		say(&w, NULL, "newline in '%s'", quote(q, kv, n));
		return -1;
	}
	if (set_line(cfg, kv, n, &first, &w) != 0)
		return -1;
	if (!first)
		cfg->listen_from_o = true;
	return 0;
}

/* Whether a is one of list[0..n). */
static bool addr_listed(const struct listen_addr *a, const struct listen_addr *list, unsigned n)
{
	for (unsigned i = 0; i < n && i < LISTEN_MAX; i++)
		if (list[i].port == a->port && strcmp(list[i].host, a->host) == 0)
			return true;
	return false;
}

/* Ranges of the numeric keys and validity of the others, as set_value checks them. */
static int check_key(const struct config *cfg, const struct key *k, const struct where *w)
{
	uint64_t v;
	unsigned i;

	switch (k->type) {
	case K_LISTEN:
		if (cfg->nlisten == 0 || cfg->nlisten > LISTEN_MAX) {
			say(w, k->name, "%u addresses (1..%d)", cfg->nlisten, LISTEN_MAX);
			return -1;
		}
		for (i = 0; i < cfg->nlisten; i++) {
			if (cfg->listen[i].port == 0 || cfg->listen[i].host[0] == '\0') {
				say(w, k->name, "address %u has no host or port", i + 1);
				return -1;
			}
		}
		return 0;
	case K_LISTEN_TLS:
		if (cfg->nsmtps_listen > LISTEN_MAX ||
		    cfg->nlisten + cfg->nsmtps_listen > LISTEN_MAX) {
			say(w, k->name, "listen and smtps_listen hold more than %d addresses",
			    LISTEN_MAX);
			return -1;
		}
		return 0;
	case K_ADDR: {
		const struct listen_addr *a = (const void *)((const char *)cfg + k->off);
		char t[LISTEN_TEXT_MAX];
		if (a->port && (addr_listed(a, cfg->listen, cfg->nlisten) ||
				addr_listed(a, cfg->smtps_listen, cfg->nsmtps_listen))) {
			say(w, k->name, "%s is an SMTP address too",
			    listen_addr_text(a, t, sizeof(t)));
			return -1;
		}
		return 0;
	}
	case K_HOSTNAME:
		if (!domain_ok(cfg->myhostname, strnlen(cfg->myhostname, DOMAIN_MAX + 1), false)) {
			say(w, k->name, "not a domain name");
			return -1;
		}
		return 0;
	case K_DOMAINS:
		if (cfg->naccept_domains == 0 || cfg->accept_domains == NULL) {
			say(w, k->name, "empty: every recipient would be refused");
			return -1;
		}
		if (cfg->naccept_domains > ACCEPT_DOMAINS_MAX) {
			say(w, k->name, "more than %d domains", ACCEPT_DOMAINS_MAX);
			return -1;
		}
		return 0;
	case K_PATH:
		if (((const char *)cfg + k->off)[0] == '\0') {
			say(w, k->name, "empty value");
			return -1;
		}
		return 0;
	case K_TEXT:
		return 0;
	case K_CIDRS: {
		unsigned *count;
		const struct cidr *list = cidr_field(cfg, k, &count);
		if (*count > CIDR_LIST_MAX) {
			say(w, k->name, "%u prefixes (at most %d)", *count, CIDR_LIST_MAX);
			return -1;
		}
		for (i = 0; i < *count; i++) {
			const struct cidr *c = &list[i];
			struct cidr m = *c;

			if (c->bits > (c->v6 ? 128 : 32) || cidr_mask(&m)) {
				say(w, k->name, "prefix %u is not a network (length %u)", i + 1,
				    c->bits);
				return -1;
			}
		}
		return 0;
	}
	case K_MS:
		break;
	case K_DNSBL_SITES:
		if (cfg->ndnsbl_sites > DNSBL_SITES_MAX) {
			say(w, k->name, "%u sites (at most %d)", cfg->ndnsbl_sites,
			    DNSBL_SITES_MAX);
			return -1;
		}
		return 0;
	case K_DNS_SERVERS:
		if (cfg->ndns_servers > DNS_SERVERS_MAX) {
			say(w, k->name, "%u servers (at most %d)", cfg->ndns_servers,
			    DNS_SERVERS_MAX);
			return -1;
		}
		return 0;
	case K_RELAY_HOST:
		if (cfg->nrelay_host > RELAY_HOSTS_MAX) {
			say(w, k->name, "%u destinations (at most %d)", cfg->nrelay_host,
			    RELAY_HOSTS_MAX);
			return -1;
		}
		return 0;
	case K_RETRY:
		if (cfg->relay_retry_min < k->min || cfg->relay_retry_max > k->max ||
		    cfg->relay_retry_min > cfg->relay_retry_max) {
			say(w, k->name, "%us, %us: expected 1s <= FIRST <= MAX <= 7d",
			    cfg->relay_retry_min, cfg->relay_retry_max);
			return -1;
		}
		return 0;
	case K_SHARDS:
		if (field_get(cfg, k) == 0)
			return 0;
		break;
	case K_ENUM:
	case K_BOOL:
	case K_SIZE:
	case K_COUNT:
	case K_POW2:
	case K_TIME:
		break;
	}
	v = field_get(cfg, k);
	if (v < k->min || v > k->max) {
		say(w, k->name, "%llu is out of range %llu..%llu", (unsigned long long)v,
		    (unsigned long long)k->min, (unsigned long long)k->max);
		return -1;
	}
	if (k->type == K_POW2 && !is_pow2(v)) {
		say(w, k->name, "%llu is not a power of two", (unsigned long long)v);
		return -1;
	}
	return 0;
}

/*
 * Entries of a comma-separated file list; *blank is set when one is empty.
 * Bounded by the field's size.
 */
static unsigned file_list_count(const char *s, bool *blank)
{
	unsigned n = 0;
	bool empty = true;
	*blank = false;
	for (;; s++) {
		if (*s == ',' || *s == '\0') {
			*blank |= empty;
			n++;
			empty = true;
			if (*s == '\0')
				return n;
		} else if (*s != ' ' && *s != '\t') {
			empty = false;
		}
	}
}

/* tls_cert_file and tls_key_file: one or two files each (ECDSA and RSA), as many certificates
 * as keys, in the same order. Whether each pair matches is checked when they are loaded. */
static int tls_files_check(const struct config *cfg, const struct where *w)
{
	if (!cfg->tls_cert_file[0] || !cfg->tls_key_file[0])
		return 0;
	bool cblank, kblank;
	unsigned nc = file_list_count(cfg->tls_cert_file, &cblank);
	unsigned nk = file_list_count(cfg->tls_key_file, &kblank);
	if (cblank || kblank || nc > 2 || nk > 2) {
		say(w, cblank || nc > 2 ? "tls_cert_file" : "tls_key_file",
		    "one or two files (an ECDSA and an RSA one), comma-separated");
		return -1;
	}
	if (nc != nk) {
		say(w, "tls_key_file",
		    "%u files for %u in tls_cert_file (the same order: a key "
		    "for each certificate)",
		    nk, nc);
		return -1;
	}
	return 0;
}

int config_check(const struct config *cfg, FILE *err)
{
	struct where w = {.err = err};
	uint64_t pool = (uint64_t)cfg->recv_buffers * cfg->recv_buffer_size;
	int rc = 0;
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (check_key(cfg, &config_keys[i], &w) != 0)
			rc = -1;
	if (rc != 0)
		return rc;
	/* A command line of the maximum length and its CRLF fit one receive buffer. */
	if (cfg->recv_buffer_size < cfg->command_line_limit + 2u) {
		say(&w, "recv_buffer_size", "%u is less than command_line_limit + 2 (%u)",
		    cfg->recv_buffer_size, cfg->command_line_limit + 2u);
		rc = -1;
	}
	/* A body part is flushed only once it holds at least one full buffer. */
	if (cfg->body_flush_bytes < cfg->recv_buffer_size) {
		say(&w, "body_flush_bytes", "%llu is less than recv_buffer_size (%u)",
		    (unsigned long long)cfg->body_flush_bytes, cfg->recv_buffer_size);
		rc = -1;
	}
	if (cfg->nrelay_host && cfg->spool_format == SPOOL_MAILDIR) {
		say(&w, "relay_host",
		    "the relay reads the segment spool: spool_format = maildir "
		    "cannot relay (use spool_format = segment)");
		rc = -1;
	}
	if (cfg->nrelay_host && cfg->relay_tls == RELAY_TLS_VERIFY && !cfg->relay_tls_ca_file[0]) {
		say(&w, "relay_tls_ca_file", "relay_tls = verify needs the CAs of the hub's chain");
		rc = -1;
	}
	for (i = 0; cfg->relay_helo_name[i]; i++) {
		unsigned char ch = (unsigned char)cfg->relay_helo_name[i];
		if (ch < 0x21 || ch > 0x7e || i >= HELO_MAX) {
			say(&w, "relay_helo_name", "1..%d printable bytes, no spaces", HELO_MAX);
			rc = -1;
			break;
		}
	}
	if (cfg->dnsbl_min_ttl > cfg->dnsbl_max_ttl) {
		say(&w, "dnsbl_min_ttl", "%us is more than dnsbl_max_ttl (%us)", cfg->dnsbl_min_ttl,
		    cfg->dnsbl_max_ttl);
		rc = -1;
	}
	for (i = 0; cfg->recipient_delimiter[i]; i++) {
		char ch = cfg->recipient_delimiter[i];
		if (ch == '@' || is_space(ch) || (unsigned char)ch < 0x21 ||
		    (unsigned char)ch > 0x7e) {
			say(&w, "recipient_delimiter", "'%c' cannot be a delimiter", ch);
			rc = -1;
		}
	}
	/* STARTTLS is offered only with a certificate and its key. */
	if (cfg->tls_security_level != TLS_LEVEL_NONE &&
	    (!cfg->tls_cert_file[0] || !cfg->tls_key_file[0])) {
		say(&w, "tls_security_level", "'may' needs tls_cert_file and tls_key_file");
		rc = -1;
	}
	if (cfg->nsmtps_listen && (!cfg->tls_cert_file[0] || !cfg->tls_key_file[0])) {
		say(&w, "smtps_listen", "implicit TLS needs tls_cert_file and tls_key_file");
		rc = -1;
	}
	/* max_connections is split across shards: each needs at least one. */
	if (cfg->shards != 0 && cfg->max_connections < cfg->shards) {
		say(&w, "max_connections", "%u is less than shards (%u)", cfg->max_connections,
		    cfg->shards);
		rc = -1;
	}
	if (pool > RECV_POOL_MAX) {
		say(&w, "recv_buffers",
		    "recv_buffers * recv_buffer_size is %llu bytes per shard "
		    "(at most %llu)",
		    (unsigned long long)pool, (unsigned long long)RECV_POOL_MAX);
		rc = -1;
	}
	if (tls_files_check(cfg, &w) != 0)
		rc = -1;
	return rc;
}

const char *listen_addr_text(const struct listen_addr *a, char *buf, size_t cap)
{
	bool v6 = strchr(a->host, ':') != NULL;

	snprintf(buf, cap, "%s%s%s:%u", v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
	return buf;
}

/* " host:port", after a comma unless first. */
static void print_addr(const struct listen_addr *a, bool first, FILE *out)
{
	char t[LISTEN_TEXT_MAX];

	fprintf(out, "%s %s", first ? "" : ",", listen_addr_text(a, t, sizeof(t)));
}

static void print_key(const struct config *cfg, const struct key *k, FILE *out)
{
	uint64_t v;
	unsigned i;

	fprintf(out, "%s =", k->name);
	switch (k->type) {
	case K_LISTEN:
		for (i = 0; i < cfg->nlisten && i < LISTEN_MAX; i++)
			print_addr(&cfg->listen[i], i == 0, out);
		break;
	case K_LISTEN_TLS:
		for (i = 0; i < cfg->nsmtps_listen && i < LISTEN_MAX; i++)
			print_addr(&cfg->smtps_listen[i], i == 0, out);
		break;
	case K_ADDR: {
		const struct listen_addr *a = (const void *)((const char *)cfg + k->off);
		if (a->port)
			print_addr(a, true, out);
		break;
	}
	case K_HOSTNAME:
		fprintf(out, " %s", cfg->myhostname);
		break;
	case K_CIDRS: {
		unsigned *count;
		const struct cidr *list = cidr_field(cfg, k, &count);
		for (i = 0; i < *count && i < CIDR_LIST_MAX; i++) {
			const struct cidr *c = &list[i];
			char a[INET6_ADDRSTRLEN];

			inet_ntop(c->v6 ? AF_INET6 : AF_INET, c->addr, a, sizeof(a));
			fprintf(out, "%s %s/%u", i ? "," : "", a, c->bits);
		}
		break;
	}
	case K_MS:
		fprintf(out, " %llums", (unsigned long long)field_get(cfg, k));
		break;
	case K_DNSBL_SITES:
		for (i = 0; i < cfg->ndnsbl_sites && cfg->dnsbl_sites; i++)
			fprintf(out, "%s %s", i ? "," : "", cfg->dnsbl_sites[i].text);
		break;
	case K_DNS_SERVERS:
		for (i = 0; i < cfg->ndns_servers && i < DNS_SERVERS_MAX; i++)
			print_addr(&cfg->dns_servers[i], i == 0, out);
		break;
	case K_RELAY_HOST:
		for (i = 0; i < cfg->nrelay_host && i < RELAY_HOSTS_MAX; i++) {
			char t[RELAY_DEST_TEXT_MAX];
			fprintf(out, "%s %s", i ? "," : "",
				relay_dest_text(&cfg->relay_host[i], t, sizeof(t)));
		}
		break;
	case K_RETRY:
		fprintf(out, " %us, %us", cfg->relay_retry_min, cfg->relay_retry_max);
		break;
	case K_DOMAINS:
		for (i = 0; i < cfg->naccept_domains && cfg->accept_domains; i++)
			fprintf(out, "%s %s", i ? "," : "", cfg->accept_domains[i]);
		break;
	case K_PATH:
	case K_TEXT:
		if (((const char *)cfg + k->off)[0])
			fprintf(out, " %s", (const char *)cfg + k->off);
		break;
	case K_ENUM:
	case K_BOOL:
		v = field_get(cfg, k);
		fprintf(out, " %s", v <= k->max ? k->names[v] : "?");
		break;
	case K_SHARDS:
		v = field_get(cfg, k);
		if (v == 0)
			fprintf(out, " auto");
		else
			fprintf(out, " %llu", (unsigned long long)v);
		break;
	case K_TIME:
		fprintf(out, " %llus", (unsigned long long)field_get(cfg, k));
		break;
	case K_SIZE:
	case K_COUNT:
	case K_POW2:
		fprintf(out, " %llu", (unsigned long long)field_get(cfg, k));
		break;
	}
	fputc('\n', out);
}

void config_print(const struct config *cfg, FILE *out)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		print_key(cfg, &config_keys[i], out);
}

void config_free(struct config *cfg)
{
	domains_free(cfg);
	free(cfg->dnsbl_sites);
	cfg->dnsbl_sites = NULL;
	cfg->ndnsbl_sites = 0;
}

bool path_list_next(const char **list, char *out, size_t cap)
{
	const char *s = *list;
	if (!s || !*s)
		return false;
	const char *comma = strchr(s, ',');
	size_t len = comma ? (size_t)(comma - s) : strlen(s);
	*list = comma ? comma + 1 : s + len;
	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len >= cap)
		len = 0;
	memcpy(out, s, len);
	out[len] = 0;
	return true;
}
