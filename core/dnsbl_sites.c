/*
 * dnsbl_sites.c - DNS list sites, query names and answers (see dnsbl_sites.h).
 *
 * Site syntax (Postfix postscreen_dnsbl_sites, postconf(5)):
 *   site    = zone [ "=" filter ] [ "*" weight ]
 *   filter  = pattern *( ";" pattern )            ; ';' outside brackets
 *   pattern = octet "." octet "." octet "." octet
 *   octet   = number / "[" item *( ";" item ) "]"
 *   item    = number / number ".." number          ; low <= high
 *   number  = 1*DIGIT                              ; 0..255
 *   weight  = [ "+" / "-" ] 1*DIGIT                ; -1000..1000
 * The zone is cut at the first '=' or '*', the filter at the first '*'
 * after it; neither character is valid in what comes before it, so the
 * cut is never ambiguous.
 *
 * Query names (RFC 5782 2.1 and 2.4): the address's octets (IPv4) or
 * nibbles (IPv6) in reverse order, each followed by a dot, then the zone.
 *
 * DNS messages (RFC 1035 4.1): a 12-octet header, then the question,
 * answer, authority and additional sections; the additional section is
 * not read. Names (RFC 1035 4.1.4) are labels of 1..63 octets ended by a
 * zero octet or by a compression pointer (two octets, top bits 11). The
 * label types 01 and 10 (RFC 6891 drops the extended ones) are refused.
 * A pointer must point before the part of the name that holds it and
 * after the header: each jump then moves strictly backwards, so a loop
 * is impossible, and the jumps are counted besides. A name is at most 255
 * octets (RFC 1035 2.3.4). TTLs with the top bit set count as 0 (RFC
 * 2181 8).
 *
 * Invariants: no allocation, no system call; every read of the message is
 * checked against its length before it is made; every loop is bounded by
 * the input's length or a constant.
 */
#include "dnsbl_sites.h"

#include <string.h>

#define LABEL_MAX      63  /* RFC 1035 2.3.4 */
#define NAME_WIRE_MAX  255 /* RFC 1035 2.3.4, length octets included */
#define NAME_JUMPS_MAX 64  /* compression pointers followed in one name */
#define DNS_HEADER     12
#define RR_FIXED       10 /* TYPE, CLASS, TTL, RDLENGTH after an RR's name */
#define SOA_FIXED      20 /* SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM */
#define TYPE_A	       1
#define TYPE_SOA       6
#define CLASS_IN       1

static_assert(DNSBL_SITE_TEXT_MAX > 1, "a site's text holds at least one character");
static_assert(DNSBL_QNAME_MAX >= 64 + DNSBL_ZONE_MAX + 1, "an IPv6 query name fits");
static_assert(DNSBL_ZONE_MAX <= DOMAIN_MAX, "a zone fits its field");

static int fail(const char **why, const char *reason)
{
	*why = reason;
	return -1;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Letters, digits, '-', and '_', which some list operators use in zone names. */
static bool is_label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' ||
	       c == '_';
}

/*
 * Checks the zone s[0..n) and stores it lower-cased in out->zone. A
 * trailing dot is the root and names the same zone, so it is dropped
 * before the length is checked.
 */
static int parse_zone(const char *s, size_t n, struct dnsbl_site *out, const char **why)
{
	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0)
		return fail(why, "empty zone");
	/* A query name is at most 253 characters (RFC 1035 2.3.4): 64 of
	 * them are an IPv6 client's nibbles and dots, the rest the zone. */
	if (n > DNSBL_ZONE_MAX)
		return fail(why, "zone longer than 189 characters (its IPv6 query names would pass "
				 "253)");
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return fail(why, "empty label in zone");
			label = 0;
		} else if (is_label_char(c)) {
			if (++label > LABEL_MAX)
				return fail(why, "zone label longer than 63 characters");
		} else {
			return fail(why, "zone has a character other than letters, digits, '-', "
					 "'_' and '.'");
		}
		out->zone[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	if (label == 0)
		return fail(why, "empty label in zone");
	out->zone[n] = '\0';
	return 0;
}

/*
 * A decimal number 0..255 at s[*i..n), *i moved past it. Digits beyond a
 * value of 255 are refused as they come, so nothing overflows.
 */
static int parse_number(const char *s, size_t n, size_t *i, unsigned *v, const char **why)
{
	if (*i >= n || !is_digit(s[*i]))
		return fail(why, "filter octet is not a number");
	unsigned x = 0;
	while (*i < n && is_digit(s[*i])) {
		x = x * 10 + (unsigned)(s[*i] - '0');
		if (x > 255)
			return fail(why, "octet past 255");
		(*i)++;
	}
	*v = x;
	return 0;
}

static void set_range(uint32_t set[8], unsigned lo, unsigned hi)
{
	for (unsigned v = lo; v <= hi; v++)
		set[v >> 5] |= 1u << (v & 31);
}

/* One octet of a pattern (a number or a bracketed list) at s[*i..n) into set. */
static int parse_octet(const char *s, size_t n, size_t *i, uint32_t set[8], const char **why)
{
	unsigned lo, hi;
	if (*i >= n || s[*i] != '[') {
		if (parse_number(s, n, i, &lo, why))
			return -1;
		set_range(set, lo, lo);
		return 0;
	}
	(*i)++; /* '[' */
	for (;;) {
		if (parse_number(s, n, i, &lo, why))
			return -1;
		hi = lo;
		if (*i + 1 < n && s[*i] == '.' && s[*i + 1] == '.') {
			*i += 2;
			if (parse_number(s, n, i, &hi, why))
				return -1;
			if (hi < lo)
				return fail(why, "range reversed (low..high)");
		}
		set_range(set, lo, hi);
		if (*i >= n)
			return fail(why, "unclosed '[' in filter");
		if (s[*i] == ']') {
			(*i)++;
			return 0;
		}
		if (s[*i] != ';')
			return fail(why, "filter list wants ';' or ']' after a number or range");
		(*i)++;
	}
}

/* The filter s[0..n): patterns separated by ';' outside brackets. */
static int parse_filter(const char *s, size_t n, struct dnsbl_site *out, const char **why)
{
	if (n == 0)
		return fail(why, "empty filter after '='");
	size_t i = 0;
	for (;;) {
		if (out->npatterns == DNSBL_PATTERNS_MAX)
			return fail(why, "more than 8 filter patterns");
		if (i == n || s[i] == ';')
			return fail(why, "empty filter pattern");
		struct dnsbl_pattern *p = &out->pattern[out->npatterns++];
		for (unsigned k = 0; k < 4; k++) {
			if (k > 0) {
				if (i >= n || s[i] != '.')
					return fail(why,
						    "filter pattern wants four octets a.b.c.d");
				i++;
			}
			if (parse_octet(s, n, &i, p->octet[k], why))
				return -1;
		}
		if (i == n)
			return 0;
		if (s[i] == '.')
			return fail(why, "filter pattern has more than four octets");
		if (s[i] != ';')
			return fail(why, "filter wants ';' between patterns");
		i++;
	}
}

/* The weight s[0..n): an optional sign and digits, |w| <= DNSBL_WEIGHT_MAX. */
static int parse_weight(const char *s, size_t n, int *w, const char **why)
{
	size_t i = 0;
	bool neg = false;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	if (i == n)
		return fail(why, "weight is not a number");
	int x = 0;
	for (; i < n; i++) {
		if (!is_digit(s[i]))
			return fail(why, "weight is not a number");
		x = x * 10 + (s[i] - '0');
		if (x > DNSBL_WEIGHT_MAX)
			return fail(why, "weight out of range -1000..1000");
	}
	*w = neg ? -x : x;
	return 0;
}

int dnsbl_site_parse(const char *s, size_t len, struct dnsbl_site *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	*why = NULL;
	size_t zend = 0;
	while (zend < len && s[zend] != '=' && s[zend] != '*')
		zend++;
	size_t fend = zend;
	while (fend < len && s[fend] != '*')
		fend++;

	if (parse_zone(s, zend, out, why))
		return -1;
	if (zend < len && s[zend] == '=' && parse_filter(s + zend + 1, fend - zend - 1, out, why))
		return -1;
	out->weight = 1;
	if (fend < len && parse_weight(s + fend + 1, len - fend - 1, &out->weight, why))
		return -1;

	size_t t = len < sizeof(out->text) - 1 ? len : sizeof(out->text) - 1;
	memcpy(out->text, s, t);
	out->text[t] = '\0';
	return 0;
}

size_t dnsbl_query_name(const struct dnsbl_site *site, const uint8_t addr[16], char *out,
			size_t cap)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const char hex[] = "0123456789abcdef";
	char rev[64]; /* "d.c.b.a." (at most 16) or 32 nibbles with dots */
	size_t n = 0;

	if (!memcmp(addr, v4mapped, sizeof(v4mapped))) {
		for (int i = 15; i >= 12; i--) {
			unsigned v = addr[i];
			if (v >= 100)
				rev[n++] = (char)('0' + v / 100);
			if (v >= 10)
				rev[n++] = (char)('0' + v / 10 % 10);
			rev[n++] = (char)('0' + v % 10);
			rev[n++] = '.';
		}
	} else {
		for (int i = 15; i >= 0; i--) {
			rev[n++] = hex[addr[i] & 0x0f];
			rev[n++] = '.';
			rev[n++] = hex[addr[i] >> 4];
			rev[n++] = '.';
		}
	}
	size_t zl = strnlen(site->zone, sizeof(site->zone));
	if (n + zl + 1 > cap)
		return 0;
	memcpy(out, rev, n);
	memcpy(out + n, site->zone, zl);
	out[n + zl] = '\0';
	return n + zl;
}

static bool in_set(const uint32_t set[8], uint8_t v)
{
	return set[v >> 5] & (1u << (v & 31));
}

bool dnsbl_site_matches(const struct dnsbl_site *site, const uint8_t a[4])
{
	if (site->npatterns == 0)
		return true;
	for (unsigned i = 0; i < site->npatterns && i < DNSBL_PATTERNS_MAX; i++) {
		const struct dnsbl_pattern *p = &site->pattern[i];
		if (in_set(p->octet[0], a[0]) && in_set(p->octet[1], a[1]) &&
		    in_set(p->octet[2], a[2]) && in_set(p->octet[3], a[3]))
			return true;
	}
	return false;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* A TTL as RFC 2181 8 reads it: the top bit set means 0. */
static uint32_t get_ttl(const uint8_t *p)
{
	uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return v & 0x80000000u ? 0 : v;
}

/*
 * Checks the name at *pos of buf[0..len) and moves *pos past it (past its
 * first pointer when it has one). 0, or -1 when the name is malformed or
 * runs past the message.
 */
static int skip_name(const uint8_t *buf, size_t len, size_t *pos)
{
	size_t p = *pos, seg = *pos, end = 0, wire = 0;
	unsigned jumps = 0;
	/* Bounded: labels only move forward through the message, and each of
	 * at most NAME_JUMPS_MAX jumps lands before where it left. */
	for (;;) {
		if (p >= len)
			return -1;
		uint8_t c = buf[p];
		if ((c & 0xc0) == 0xc0) {
			if (p + 1 >= len)
				return -1;
			size_t target = (size_t)(c & 0x3f) << 8 | buf[p + 1];
			if (jumps == 0)
				end = p + 2;
			if (target < DNS_HEADER || target >= seg || ++jumps > NAME_JUMPS_MAX)
				return -1;
			p = seg = target;
			continue;
		}
		if (c > LABEL_MAX)
			return -1; /* label types 01 and 10 */
		wire += 1 + (size_t)c;
		if (wire > NAME_WIRE_MAX)
			return -1;
		if (c == 0) {
			if (jumps == 0)
				end = p + 1;
			break;
		}
		p += 1 + (size_t)c;
	}
	*pos = end;
	return 0;
}

/* One resource record at *pos: its name and fixed fields, its RDATA bounds. */
struct rr {
	uint16_t type;
	uint16_t class;
	uint32_t ttl;
	size_t rdata; /* offset of the RDATA */
	size_t rdlen;
};

static int read_rr(const uint8_t *buf, size_t len, size_t *pos, struct rr *rr)
{
	if (skip_name(buf, len, pos))
		return -1;
	if (len - *pos < RR_FIXED)
		return -1;
	const uint8_t *f = buf + *pos;
	rr->type = get16(f);
	rr->class = get16(f + 2);
	rr->ttl = get_ttl(f + 4);
	rr->rdlen = get16(f + 8);
	rr->rdata = *pos + RR_FIXED;
	if (len - rr->rdata < rr->rdlen)
		return -1;
	*pos = rr->rdata + rr->rdlen;
	return 0;
}

/*
 * The negative-caching TTL of an SOA record (RFC 2308 5): the lesser of
 * its own TTL and its MINIMUM field. MNAME and RNAME must end inside the
 * RDATA and leave exactly the five 32-bit fields.
 */
static int soa_ttl(const uint8_t *buf, const struct rr *rr, uint32_t *ttl)
{
	size_t end = rr->rdata + rr->rdlen, q = rr->rdata;
	/* The names may point back anywhere before, but must end inside the RDATA. */
	if (skip_name(buf, end, &q) || skip_name(buf, end, &q))
		return -1;
	if (end - q != SOA_FIXED)
		return -1;
	uint32_t minimum = get_ttl(buf + q + 16);
	*ttl = rr->ttl < minimum ? rr->ttl : minimum;
	return 0;
}

int dnsbl_parse_answer(const uint8_t *buf, size_t len, struct dnsbl_answer *out)
{
	memset(out, 0, sizeof(*out));
	if (len < DNS_HEADER || !(buf[2] & 0x80))
		return -1; /* too short, or a query rather than a response */
	out->rcode = buf[3] & 0x0f;
	unsigned qd = get16(buf + 4), an = get16(buf + 6), ns = get16(buf + 8);
	size_t pos = DNS_HEADER;

	/* Each entry of each loop takes at least one octet or fails, so the
	 * 16-bit counts and len bound them all. */
	for (unsigned i = 0; i < qd; i++) {
		if (skip_name(buf, len, &pos) || len - pos < 4)
			return -1;
		pos += 4; /* QTYPE, QCLASS */
	}
	uint32_t a_ttl = UINT32_MAX, neg_ttl = UINT32_MAX;
	bool any_a = false, any_soa = false;
	struct rr rr;
	for (unsigned i = 0; i < an; i++) {
		if (read_rr(buf, len, &pos, &rr))
			return -1;
		if (rr.type != TYPE_A || rr.class != CLASS_IN)
			continue; /* CNAME, DNAME, RRSIG and the like */
		if (rr.rdlen != 4)
			return -1;
		/* The TTL is that of every A record, also those past the array:
		 * a cached verdict must not outlive any of them. */
		any_a = true;
		if (rr.ttl < a_ttl)
			a_ttl = rr.ttl;
		if (out->na < DNSBL_ANSWERS_MAX)
			memcpy(out->a[out->na++], buf + rr.rdata, 4);
	}
	for (unsigned i = 0; i < ns; i++) {
		if (read_rr(buf, len, &pos, &rr))
			return -1;
		if (rr.type != TYPE_SOA || rr.class != CLASS_IN)
			continue;
		uint32_t t;
		if (soa_ttl(buf, &rr, &t))
			return -1;
		any_soa = true;
		if (t < neg_ttl)
			neg_ttl = t;
	}
	if (any_a) {
		out->ttl = a_ttl;
		out->has_ttl = true;
	} else if (any_soa) {
		out->ttl = neg_ttl;
		out->has_ttl = true;
	}
	return 0;
}
