/*
 * config.h - mxring.conf: key = value lines, # comments, -o overrides.
 *
 * The file follows the habit of Postfix main.cf: one "key = value" per line,
 * blank lines and lines starting with '#' ignored, a line starting with
 * whitespace continues the previous value. Unknown keys and bad values are
 * errors that name the file, the line and the key. Lists take commas and/or
 * whitespace as separators; repeating a list key appends (listen).
 *
 * Sizes accept a plain number of bytes or a k/m/g suffix (powers of 1024);
 * times accept a number of seconds or an s/m/h suffix.
 */
#ifndef MXRING_CONFIG_H
#define MXRING_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bounds.h"
#include "relay_dest.h"

enum spool_format { SPOOL_SEGMENT = 0, SPOOL_MAILDIR = 1 };
enum bare_newline { BARE_NEWLINE_NORMALIZE = 0, BARE_NEWLINE_REJECT = 1 };
enum log_level { LOG_LEVEL_INFO = 0, LOG_LEVEL_DEBUG = 1 };
enum tls_level { TLS_LEVEL_NONE = 0, TLS_LEVEL_MAY = 1 };
enum proxy_protocol { PROXY_PROTOCOL_NONE = 0, PROXY_PROTOCOL_HAPROXY = 1 };
enum dnsbl_action { DNSBL_REJECT = 0, DNSBL_IGNORE = 1 };
enum relay_tls { RELAY_TLS_NONE = 0, RELAY_TLS_MAY, RELAY_TLS_ENCRYPT, RELAY_TLS_VERIFY };

struct dnsbl_site; /* dnsbl_sites.h */

struct listen_addr {
	char host[64]; /* as written: "127.0.0.1", "::1", "0.0.0.0", "::" */
	uint16_t port;
};

/* Room for listen_addr_text: brackets, the host, ':', 5 digits, NUL. */
#define LISTEN_TEXT_MAX (64 + 9)

/* "host:port", an IPv6 host in brackets, into buf (LISTEN_TEXT_MAX); returns buf. */
const char *listen_addr_text(const struct listen_addr *a, char *buf, size_t cap);

/* An address prefix: IPv4 (addr[0..3]) or IPv6, and its length in bits. The
 * bits past the length are zero. */
struct cidr {
	uint8_t addr[16];
	uint8_t bits;
	bool v6;
};

struct config {
	struct listen_addr listen[LISTEN_MAX];
	unsigned nlisten;		 /* default: 127.0.0.1:2525 */
	char myhostname[DOMAIN_MAX + 1]; /* default: gethostname() */
	char **accept_domains;		 /* owned, lower case; ".example.com" = subdomains */
	unsigned naccept_domains;	 /* default: one entry, "localhost" */
	char spool_dir[4096];		 /* default: "spool" */
	enum spool_format spool_format;	 /* default: segment */
	uint64_t segment_size;		 /* default: 64m; rotate into ready/ past this */
	unsigned segment_max_age;	 /* seconds, default 300: or once this old; 0 = size only */
	unsigned shards;		 /* 0 = auto (online CPUs) */
	unsigned writers;		 /* default 1 */
	uint64_t message_size_limit;	 /* default 10240000 (Postfix's default) */
	unsigned recipient_limit;	 /* default 100 */
	unsigned command_line_limit;	 /* default 512 */
	unsigned error_limit;		 /* default 20: then 421 and close */
	unsigned max_connections;	 /* default 20000, split across shards */
	unsigned command_timeout;	 /* seconds, default 300 (RFC 5321 4.5.3.2.7) */
	unsigned data_timeout;		 /* seconds, default 180 (RFC 5321 4.5.3.2.5) */
	unsigned shutdown_timeout;	 /* seconds, default 30: SIGTERM grace */
	enum bare_newline bare_newline;	 /* default normalize */
	unsigned recv_buffer_size;	 /* default 16k */
	unsigned recv_buffers;		 /* per shard, power of two, default 1024 */
	unsigned ring_size;		 /* shard->writer ring entries, power of two, 1024 */
	uint64_t body_flush_bytes;	 /* default 256k: body held before a part is written */
	bool pin_shards;		 /* default yes */
	enum tls_level tls_security_level;	     /* none (default) or may: offer STARTTLS */
	char tls_cert_file[1024];		     /* PEM chain; needed for may */
	char tls_key_file[1024];		     /* PEM key */
	char tls_ticket_key_file[1024];		     /* "" = a random key per process */
	char tls_ciphers[1024];			     /* "" = the built-in policy */
	unsigned tls_handshake_timeout;		     /* seconds, default 30 */
	struct listen_addr smtps_listen[LISTEN_MAX]; /* implicit TLS (RFC 8314), default none */
	unsigned nsmtps_listen;
	unsigned pregreet_wait; /* seconds; 0 (default) = greet at once; else a client that
				 * talks before the greeting is refused with 554 */
	unsigned min_data_rate; /* bytes/s a DATA/BDAT request must keep up; default 500, 0 = off */
	unsigned max_connections_per_ip; /* across all shards; 0 (default) = no limit */
	/* haproxy: every connection starts with a PROXY header (v1 or v2) naming
	 * the real client; default none */
	enum proxy_protocol proxy_protocol;
	unsigned proxy_timeout; /* seconds, default 5: the header must arrive whole within */
	bool listen_from_o;	/* private to config.c: an -o listen replaced the list */
	unsigned tls_session_cache_size; /* session-ID cache entries, default 20000; 0 = off */
	unsigned tls_session_timeout;	 /* seconds, default 3600: cache entries and tickets */
	/* 452s past recipient_limit in one transaction before each counts toward
	 * error_limit; default 1000 (Postfix's smtpd_recipient_overshoot_limit) */
	unsigned recipient_overshoot_limit;
	/* NOOP, VRFY, RSET, HELP, HELO and EHLO since the last message queued
	 * before each counts toward error_limit; default 100 (Postfix's
	 * smtpd_junk_command_limit), 0 = no limit */
	unsigned junk_command_limit;
	/* Clients max_connections_per_ip does not apply to (Postfix's
	 * smtpd_client_event_limit_exceptions); default none */
	struct cidr connection_limit_exceptions[CIDR_LIST_MAX];
	unsigned nconnection_limit_exceptions;
	unsigned stats_interval;  /* seconds between live stats lines, default 60; 0 = off */
	enum log_level log_level; /* default info; debug adds each connection's phases */
	/* The Prometheus text endpoint (GET /metrics); port 0 (default) = none */
	struct listen_addr metrics_listen;
	/* Started as root, become this user (and group: default the user's own)
	 * once the listeners are bound; "" (default) = stay who started it */
	char user[64];
	char group[64];
	bool allow_root; /* default no: root without user is refused */
	/* default yes: Landlock and io_uring restrictions where the kernel has
	 * them (no = off, for comparing) */
	bool sandbox;
	/* Recipient tables: comma-separated files in the format of Postfix's
	 * relay_recipient_maps sources; "" (default) = every local part of an
	 * accepted domain exists. Read again on SIGHUP. */
	char recipient_table[4096];
	/* Characters that start an address extension ("+"): user+tag@d matches
	 * user@d in the table; "" (default) = none */
	char recipient_delimiter[16];
	/* DNS lists scored before the greeting (postscreen_dnsbl_sites);
	 * owned array, default none */
	struct dnsbl_site *dnsbl_sites;
	unsigned ndnsbl_sites;
	unsigned dnsbl_threshold;	/* default 1: a summed weight from this is listed */
	enum dnsbl_action dnsbl_action; /* default reject */
	unsigned dnsbl_timeout_ms;	/* default 2000: the greeting waits at most this */
	unsigned dnsbl_cache_size;	/* default 100000 verdicts */
	unsigned dnsbl_min_ttl;		/* seconds, default 60 */
	unsigned dnsbl_max_ttl;		/* seconds, default 3600 */
	struct cidr dnsbl_exceptions[CIDR_LIST_MAX]; /* clients not checked */
	unsigned ndnsbl_exceptions;
	/* Name servers (port default 53); none (default) = /etc/resolv.conf */
	struct listen_addr dns_servers[DNS_SERVERS_MAX];
	unsigned ndns_servers;
	/* Per client (IPv4 address, IPv6 /64) and minute, across all shards;
	 * 0 (default) = no limit; connection_limit_exceptions apply */
	unsigned client_connection_rate_limit;
	unsigned client_message_rate_limit;
	/* The relay to the site's hub (relay_dest.h); none (default) = store only */
	struct relay_dest relay_host[RELAY_HOSTS_MAX];
	unsigned nrelay_host;
	unsigned relay_workers;			    /* threads, default 1 */
	unsigned relay_connections;		    /* sessions at once per worker, default 20 */
	unsigned relay_msgs_per_session;	    /* default 100 */
	enum relay_tls relay_tls;		    /* default may: STARTTLS when offered */
	char relay_tls_ca_file[1024];		    /* verify: the CAs of the hub's chain */
	char relay_tls_server_name[DOMAIN_MAX + 1]; /* verify: the name; "" = the host's */
	unsigned relay_retry_min;		    /* seconds, default 60: the first retry */
	unsigned relay_retry_max;		    /* seconds, default 4000: doubling up to */
	unsigned maximal_queue_lifetime;	    /* seconds, default 5d: then bounced */
	char relay_helo_name[DOMAIN_MAX + 1];	    /* "" (default) = myhostname */
	unsigned relay_connect_timeout;		    /* seconds, default 30 */
	unsigned relay_command_timeout;		    /* seconds, default 300: any reply, any send */
	uint64_t spool_max_bytes; /* default 10g: past it MAIL gets 452 4.3.1; 0 = none */
};

/* Fills cfg with the defaults. Never fails; accept_domains gets "localhost". */
void config_defaults(struct config *cfg);

/*
 * Reads path into cfg (which holds defaults or earlier settings). Returns 0,
 * or -1 after writing "mxring: FILE:LINE: key 'K': what is wrong" to err.
 */
int config_load(struct config *cfg, const char *path, FILE *err)
    __attribute__((warn_unused_result));

/* Applies one "key=value" override (-o). Returns 0, or -1 with a message to err. */
int config_set(struct config *cfg, const char *kv, FILE *err) __attribute__((warn_unused_result));

/* Checks relations between keys (e.g. limits vs buffer sizes). 0 or -1 + message. */
int config_check(const struct config *cfg, FILE *err) __attribute__((warn_unused_result));

/* Writes the effective configuration as "key = value" lines, every key. */
void config_print(const struct config *cfg, FILE *out);

/* Whether an address (4 bytes, or 16 when v6) lies in one of the n prefixes of
 * list. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches IPv4 prefixes. */
bool cidr_list_match(const struct cidr *list, unsigned n, bool v6, const uint8_t *addr);

/*
 * The next path of a comma-separated list (tls_cert_file, tls_key_file),
 * blanks around it trimmed, into out (cap bytes). Returns false at the end
 * of the list; else true, with *list moved past the item and out empty for
 * an empty item or one longer than cap - 1.
 */
bool path_list_next(const char **list, char *out, size_t cap);

/* Frees what config_load/config_set allocated. */
void config_free(struct config *cfg);

#endif
