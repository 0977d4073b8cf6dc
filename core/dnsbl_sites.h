/*
 * dnsbl_sites.h - the pure parts of DNS list scoring (dnsbl_sites): the
 * site syntax of Postfix's postscreen_dnsbl_sites, the query name of a
 * client address (RFC 5782), whether an answer matches a site's filter,
 * and the parse of a DNS answer (A records with their TTL, the negative
 * TTL of an NXDOMAIN/NODATA answer). No system call, no allocation, no
 * c-ares: the unit tests and a fuzzer drive it directly.
 *
 * Site syntax: zone[=filter][*weight]
 *   zone    a domain name, lower-cased, a trailing dot dropped;
 *   filter  one or more patterns separated by ';'; a pattern is four
 *           octets separated by '.', each a number 0..255 or a bracketed
 *           list of numbers and ranges separated by ';' ([2..11],
 *           [1;3;5..7]). An answer matches when it matches one pattern.
 *           No filter: any A answer matches (as postscreen);
 *   weight  an integer, negative for allowlists, default 1
 *           (-1000..1000).
 * Examples: "zen.example*3", "bl.example=127.0.0.[2..11]*2",
 *           "wl.example=127.0.[0..255].[1..3]*-2", "x.example=127.0.0.2;127.0.0.4".
 *
 * Client addresses are 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d.
 */
#ifndef MXRING_DNSBL_SITES_H
#define MXRING_DNSBL_SITES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"

#define DNSBL_SITES_MAX	    32	/* sites in dnsbl_sites */
#define DNSBL_PATTERNS_MAX  8	/* ';'-separated patterns of one filter */
#define DNSBL_ANSWERS_MAX   16	/* A records of one answer looked at */
#define DNSBL_SITE_TEXT_MAX 256 /* a site as written, for logs */
#define DNSBL_WEIGHT_MAX    1000
/* The longest zone: its IPv6 query names (64 characters of nibbles and dots
 * before it) stay within a DNS name's 253. */
#define DNSBL_ZONE_MAX 189
/* The longest query name: 32 nibbles and dots (64) + the longest zone + NUL. */
#define DNSBL_QNAME_MAX (64 + DNSBL_ZONE_MAX + 1)

/* One pattern: per octet, the set of values allowed (a 256-bit map). */
struct dnsbl_pattern {
	uint32_t octet[4][8];
};

struct dnsbl_site {
	char zone[DOMAIN_MAX + 1];	/* lower case, no trailing dot */
	char text[DNSBL_SITE_TEXT_MAX]; /* as written (trimmed), for logs */
	int weight;			/* default 1 */
	unsigned npatterns;		/* 0 = any answer matches */
	struct dnsbl_pattern pattern[DNSBL_PATTERNS_MAX];
};

/*
 * Parses one site (len bytes at s, no surrounding blanks, not
 * NUL-terminated). 0 with *out filled (text cut to DNSBL_SITE_TEXT_MAX - 1
 * characters), or -1 with *why set to a static text saying what is wrong
 * ("empty zone", "octet past 255", "weight is not a number", ...).
 */
int dnsbl_site_parse(const char *s, size_t len, struct dnsbl_site *out, const char **why);

/*
 * The query name of addr (16 bytes, see above) in site's zone:
 * "4.3.2.1.zone" for IPv4 1.2.3.4, 32 reversed nibbles for IPv6
 * ("b.a.9.8....zone"). Returns its length, or 0 when cap is too small.
 */
size_t dnsbl_query_name(const struct dnsbl_site *site, const uint8_t addr[16], char *out,
			size_t cap);

/* Whether the A record a (4 bytes) counts as a listing by site (its filter). */
bool dnsbl_site_matches(const struct dnsbl_site *site, const uint8_t a[4]);

/* What a DNS answer says, for scoring and caching. */
struct dnsbl_answer {
	int rcode;			 /* header RCODE: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN */
	unsigned na;			 /* A records kept (at most DNSBL_ANSWERS_MAX) */
	uint8_t a[DNSBL_ANSWERS_MAX][4]; /* their addresses */
	/* With A records: the lowest TTL of all of them (those not kept too).
	 * Without (NXDOMAIN, NODATA): the lowest min(SOA TTL, SOA MINIMUM) of
	 * the authority section's SOAs. A TTL with its top bit set counts as
	 * 0 (RFC 2181 8). */
	uint32_t ttl;
	bool has_ttl; /* ttl was found */
};

/*
 * Parses a whole DNS response message (len bytes): the header, the question
 * section skipped, the answer section's A records (class IN; CNAMEs
 * followed by name are not checked, their A records are taken), the
 * authority section's SOA. Compressed names are followed with a bound on
 * jumps. 0, or -1 for a malformed message (truncated, a bad name, counts
 * past the message, QR clear, an IN A record whose RDATA is not 4 octets,
 * an SOA whose RDATA is not two names and five 32-bit fields). The
 * additional section is not read. On -1, *out holds nothing useful.
 */
int dnsbl_parse_answer(const uint8_t *buf, size_t len, struct dnsbl_answer *out);

#endif
