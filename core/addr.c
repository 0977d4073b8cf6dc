/*
 * addr.c - RFC 5321 4.1.2 paths and relay control.
 *
 * Grammar (RFC 5321 4.1.2, RFC 6531 3.3 for UTF-8):
 *   Path        = "<" [ A-d-l ":" ] Mailbox ">"
 *   A-d-l       = At-domain *( "," At-domain ), At-domain = "@" Domain
 *   Mailbox     = Local-part "@" ( Domain / address-literal )
 *   Local-part  = Dot-string / Quoted-string
 *   Dot-string  = Atom *( "." Atom ), Atom = 1*atext
 *   Quoted-string = DQUOTE *( qtextSMTP / "\" %d32-126 ) DQUOTE
 *   Domain      = sub-domain *( "." sub-domain ), sub-domain = Let-dig [Ldh-str]
 *   address-literal = "[" ( IPv4 / "IPv6:" IPv6 / Ldh-str ":" 1*dcontent ) "]"
 *
 * Invariants and choices:
 * - Lengths (RFC 5321 4.5.3.1): local part <= 64 octets as sent (quotes
 *   included), domain <= 255 (brackets of a literal included), each label
 *   <= 63, and the path <= 256 octets counting "<" and ">" (a bare mailbox
 *   counts as if it had them), so the mailbox always fits struct addr.
 * - Every loop runs over the len bytes given, never past them.
 * - Octets >= 0x80 are ADDR_UTF8 without SMTPUTF8, wherever they appear; with
 *   it they must form well-formed UTF-8 inside atext, qtext or a label.
 * - Control octets (< 0x20, 0x7f) match no rule: ADDR_SYNTAX.
 * - No allocation and no system call (inet_pton works in memory).
 *
 * Relay control (addr_accepted): an entry "example.com" matches only
 * example.com; an entry ".example.com" matches every name below it
 * (a.example.com, b.a.example.com) but not example.com itself, as Postfix's
 * parent_domain_matches_subdomains does not apply here. Write both entries to
 * accept a domain and its subdomains.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define LABEL_MAX 63

/* A cursor over the bytes of one path; fields only move forward. */
struct cur {
	const unsigned char *s;
	size_t i;
	size_t len;
	bool utf8;
	bool has_8bit;
	enum addr_status err; /* the first error seen; ADDR_OK while parsing goes well */
};

static bool cur_more(const struct cur *c)
{
	return c->i < c->len;
}

static unsigned char cur_peek(const struct cur *c)
{
	return c->i < c->len ? c->s[c->i] : 0;
}

static bool cur_fail(struct cur *c, enum addr_status st)
{
	if (c->err == ADDR_OK)
		c->err = st;
	return false;
}

static bool is_alpha(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(unsigned char ch)
{
	return ch >= '0' && ch <= '9';
}

/* RFC 5322 atext without the ALPHA/DIGIT. */
static bool is_atext(unsigned char ch)
{
	return is_alpha(ch) || is_digit(ch) || (ch != 0 && strchr("!#$%&'*+-/=?^_`{|}~", ch));
}

/*
 * Length of the well-formed UTF-8 sequence at c->i (RFC 3629 4, no
 * surrogates, no overlongs), 0 if malformed.
 */
static size_t utf8_len(const struct cur *c)
{
	const unsigned char *p = c->s + c->i;
	size_t left = c->len - c->i, n, k;
	unsigned char lo = 0x80, hi = 0xbf;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (left < n || p[1] < lo || p[1] > hi)
		return 0;
	for (k = 2; k < n; k++)
		if (p[k] < 0x80 || p[k] > 0xbf)
			return 0;
	return n;
}

/*
 * Consumes one non-ASCII character at c->i. False (with the reason in c->err)
 * without SMTPUTF8 or when the octets are not UTF-8.
 */
static bool take_utf8(struct cur *c)
{
	size_t n;

	if (!c->utf8)
		return cur_fail(c, ADDR_UTF8);
	n = utf8_len(c);
	if (n == 0)
		return cur_fail(c, ADDR_SYNTAX);
	c->i += n;
	c->has_8bit = true;
	return true;
}

/* Dot-string; sets *routing on '%' or '!'. */
static bool parse_dot_string(struct cur *c, bool *routing)
{
	size_t atom = 0; /* octets in the current atom */

	while (cur_more(c)) {
		unsigned char ch = cur_peek(c);

		if (ch >= 0x80) {
			if (!take_utf8(c))
				return false;
			atom++;
			continue;
		}
		if (ch == '.') {
			if (atom == 0)
				return cur_fail(c, ADDR_SYNTAX);
			atom = 0;
		} else if (is_atext(ch)) {
			if (ch == '%' || ch == '!')
				*routing = true;
			atom++;
		} else {
			break;
		}
		c->i++;
	}
	if (atom == 0) /* empty, or a trailing dot */
		return cur_fail(c, ADDR_SYNTAX);
	return true;
}

/* Quoted-string; sets *routing on '%', '!' or '@' in the content. */
static bool parse_quoted(struct cur *c, bool *routing)
{
	c->i++; /* DQUOTE */
	while (cur_more(c)) {
		unsigned char ch = cur_peek(c);

		if (ch == '"') {
			c->i++;
			return true;
		}
		if (ch >= 0x80) {
			if (!take_utf8(c))
				return false;
			continue;
		}
		if (ch == '\\') {
			c->i++;
			if (!cur_more(c))
				break;
			ch = cur_peek(c);
			if (ch >= 0x80)
				return cur_fail(c, c->utf8 ? ADDR_SYNTAX : ADDR_UTF8);
		}
		if (ch < 0x20 || ch > 0x7e)
			return cur_fail(c, ADDR_SYNTAX);
		if (ch == '%' || ch == '!' || ch == '@')
			*routing = true;
		c->i++;
	}
	return cur_fail(c, ADDR_SYNTAX); /* no closing quote */
}

/*
 * Domain = sub-domain *("." sub-domain); with SMTPUTF8 a label may hold
 * UTF-8 (U-labels, RFC 6531 3.3). No trailing dot.
 */
static bool parse_domain(struct cur *c)
{
	size_t label = 0; /* octets in the current label */
	unsigned char last = 0;

	while (cur_more(c)) {
		unsigned char ch = cur_peek(c);
		size_t from = c->i;

		if (ch >= 0x80) {
			if (!take_utf8(c))
				return false;
			last = 'a';
		} else if (is_alpha(ch) || is_digit(ch) || (ch == '-' && label > 0)) {
			c->i++;
			last = ch;
		} else if (ch == '.' && label > 0 && last != '-') {
			c->i++;
			label = 0;
			continue;
		} else if (ch == '.' || ch == '-') {
			return cur_fail(c, ADDR_SYNTAX);
		} else {
			break;
		}
		label += c->i - from;
		if (label > LABEL_MAX)
			return cur_fail(c, ADDR_TOO_LONG);
	}
	if (label == 0 || last == '-')
		return cur_fail(c, ADDR_SYNTAX);
	return true;
}

static bool ascii_ieq(const unsigned char *a, const char *b, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++) {
		unsigned char x = a[k], y = (unsigned char)b[k];

		if (x >= 'A' && x <= 'Z')
			x += 'a' - 'A';
		if (y >= 'A' && y <= 'Z')
			y += 'a' - 'A';
		if (x != y)
			return false;
	}
	return true;
}

/* Validates p[0..n) as an address of family af (copied to be NUL-terminated). */
static bool literal_ip(int af, const unsigned char *p, size_t n)
{
	char txt[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];

	if (n == 0 || n >= sizeof(txt))
		return false;
	memcpy(txt, p, n);
	txt[n] = '\0';
	return inet_pton(af, txt, bin) == 1;
}

/* Standardized-tag = Ldh-str: letters, digits, hyphens, not ending in '-'. */
static bool is_ldh_str(const unsigned char *p, size_t n)
{
	size_t k;

	if (n == 0 || p[n - 1] == '-')
		return false;
	for (k = 0; k < n; k++)
		if (!is_alpha(p[k]) && !is_digit(p[k]) && p[k] != '-')
			return false;
	return true;
}

/* address-literal, c->i at '['. */
static bool parse_literal(struct cur *c)
{
	const unsigned char *body;
	size_t n = 0, colon = 0;
	bool tagged = false;

	c->i++; /* '[' */
	body = c->s + c->i;
	while (cur_more(c) && cur_peek(c) != ']') {
		unsigned char ch = cur_peek(c);

		if (ch >= 0x80)
			return cur_fail(c, c->utf8 ? ADDR_SYNTAX : ADDR_UTF8);
		/* dcontent = %d33-90 / %d94-126 */
		if (ch < 33 || ch > 126 || ch == '[' || ch == '\\')
			return cur_fail(c, ADDR_SYNTAX);
		if (ch == ':' && !tagged) {
			tagged = true;
			colon = n;
		}
		c->i++;
		n++;
	}
	if (!cur_more(c))
		return cur_fail(c, ADDR_SYNTAX);
	c->i++; /* ']' */
	if (!tagged)
		return literal_ip(AF_INET, body, n) || cur_fail(c, ADDR_SYNTAX);
	if (colon == 4 && ascii_ieq(body, "IPv6", 4))
		return literal_ip(AF_INET6, body + 5, n - 5) || cur_fail(c, ADDR_SYNTAX);
	/* General-address-literal: Standardized-tag ":" 1*dcontent */
	if (colon + 1 == n || !is_ldh_str(body, colon))
		return cur_fail(c, ADDR_SYNTAX);
	return true;
}

/* A-d-l ":" with c->i at the first '@'; the route is checked and dropped. */
static bool parse_adl(struct cur *c)
{
	for (;;) {
		c->i++; /* '@' */
		if (!parse_domain(c))
			return false;
		if (cur_peek(c) == ':') {
			c->i++;
			return true;
		}
		if (cur_peek(c) != ',')
			return cur_fail(c, ADDR_SYNTAX);
		c->i++;
		if (cur_peek(c) != '@')
			return cur_fail(c, ADDR_SYNTAX);
	}
}

/* Mailbox at c->i: fills the parts of out that describe it. */
static bool parse_mailbox(struct cur *c, struct addr *out)
{
	size_t start = c->i, at, dstart;
	bool ok;

	if (cur_peek(c) == '"')
		ok = parse_quoted(c, &out->has_routing);
	else
		ok = parse_dot_string(c, &out->has_routing);
	if (!ok)
		return false;
	if (cur_peek(c) != '@' || !cur_more(c))
		return cur_fail(c, ADDR_SYNTAX);
	at = c->i - start;
	dstart = ++c->i;
	if (cur_peek(c) == '[') {
		out->is_literal = true;
		ok = parse_literal(c);
	} else {
		ok = parse_domain(c);
	}
	if (!ok)
		return false;
	if (at > LOCAL_PART_MAX || c->i - dstart > DOMAIN_MAX)
		return cur_fail(c, ADDR_TOO_LONG);
	out->at = at;
	out->len = c->i - start;
	return true;
}

static void addr_clear(struct addr *out)
{
	out->mailbox[0] = '\0';
	out->len = 0;
	out->at = 0;
	out->is_null = false;
	out->is_literal = false;
	out->has_routing = false;
	out->has_8bit = false;
}

enum addr_status addr_parse(const char *s, size_t len, bool allow_null, bool allow_utf8,
			    struct addr *out, size_t *end)
{
	struct cur c = {.s = (const unsigned char *)s, .len = len, .utf8 = allow_utf8};
	size_t first, mstart, path_len;
	bool bracket;

	addr_clear(out);
	while (cur_more(&c) && (cur_peek(&c) == ' ' || cur_peek(&c) == '\t'))
		c.i++;
	if (!cur_more(&c))
		return ADDR_SYNTAX;
	first = c.i;
	bracket = cur_peek(&c) == '<';
	if (bracket) {
		c.i++;
		if (cur_peek(&c) == '>' && cur_more(&c)) {
			if (!allow_null)
				return ADDR_NULL;
			out->is_null = true;
			*end = c.i + 1;
			return ADDR_OK;
		}
		if (cur_peek(&c) == '@' && !parse_adl(&c))
			return c.err;
		c.has_8bit = false; /* what the ignored route held does not count */
	} else {
		/* A bare token ends at the first space; the mailbox must fill it. */
		size_t k = c.i;

		while (k < len && s[k] != ' ' && s[k] != '\t')
			k++;
		c.len = k;
	}
	mstart = c.i;
	if (!parse_mailbox(&c, out))
		return c.err;
	if (bracket) {
		if (cur_peek(&c) != '>' || !cur_more(&c))
			return c.err != ADDR_OK ? c.err : ADDR_SYNTAX;
		c.i++;
		path_len = c.i - first;
	} else {
		if (cur_more(&c))
			return ADDR_SYNTAX;
		path_len = c.i - first + 2;
	}
	if (path_len > PATH_MAX_OCTETS)
		return ADDR_TOO_LONG;
	memcpy(out->mailbox, s + mstart, out->len);
	out->mailbox[out->len] = '\0';
	out->has_8bit = c.has_8bit;
	*end = c.i;
	return ADDR_OK;
}

bool addr_accepted(const struct config *cfg, const struct addr *a)
{
	const unsigned char *dom;
	size_t dlen;
	unsigned k;

	if (a->is_null || a->is_literal || a->has_routing || a->at >= a->len)
		return false;
	dom = (const unsigned char *)a->mailbox + a->at + 1;
	dlen = a->len - a->at - 1;
	for (k = 0; k < cfg->naccept_domains; k++) {
		const char *e = cfg->accept_domains[k];
		size_t elen = strlen(e);

		if (elen == 0)
			continue;
		if (e[0] == '.') {
			/* ".example.com": a.example.com, not example.com */
			if (dlen > elen && ascii_ieq(dom + dlen - elen, e, elen))
				return true;
		} else if (dlen == elen && ascii_ieq(dom, e, elen)) {
			return true;
		}
	}
	return false;
}
