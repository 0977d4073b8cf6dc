/*
 * fuzz_dnsbl.c - DNS list sites and answers (core/dnsbl_sites.c).
 *
 * Input: one octet that chooses, then the rest. An even first octet: the
 * rest is a site as written in dnsbl_sites ("zone=filter*weight"); an odd
 * one: the rest is a DNS response message.
 *
 * Checked, for a site: a refusal gives a reason; an accepted site has a
 * lower-case zone of valid labels without a trailing dot, a weight in
 * range, at most DNSBL_PATTERNS_MAX patterns, and its text is the start of
 * the input; the site written back from what was parsed (zone, each
 * octet's set as ranges, weight) parses to the same; query names of an
 * IPv4 and an IPv6 address are the reversed address and the zone, and a
 * buffer one short gives 0; dnsbl_site_matches agrees with the patterns'
 * bitmaps for a few answers.
 *
 * For an answer: 0 or -1; on 0, at most DNSBL_ANSWERS_MAX records kept,
 * a 4-bit rcode, a TTL without its top bit, and each record an A record's
 * RDATA from the input; every prefix of the message is refused or parses
 * to the same, and once one parses all longer ones do.
 */
#include <stdio.h>
#include <string.h>

#include "dnsbl_sites.h"
#include "fuzz.h"

static bool same_site(const struct dnsbl_site *a, const struct dnsbl_site *b)
{
	return !strcmp(a->zone, b->zone) && a->weight == b->weight &&
	       a->npatterns == b->npatterns &&
	       !memcmp(a->pattern, b->pattern, a->npatterns * sizeof(a->pattern[0]));
}

static bool in_set(const uint32_t set[8], unsigned v)
{
	return set[v >> 5] >> (v & 31) & 1;
}

/* Writes one octet's set as "[a..b;c]"; false if it is empty. */
static bool write_set(const uint32_t set[8], char *out, size_t cap, size_t *n)
{
	bool any = false;
	*n += (size_t)snprintf(out + *n, cap - *n, "[");
	for (unsigned v = 0; v < 256; v++) {
		if (!in_set(set, v))
			continue;
		unsigned hi = v;
		while (hi < 255 && in_set(set, hi + 1))
			hi++;
		*n += (size_t)snprintf(out + *n, cap - *n, "%s%u..%u", any ? ";" : "", v, hi);
		any = true;
		v = hi;
	}
	*n += (size_t)snprintf(out + *n, cap - *n, "]");
	FUZZ_CHECK(*n < cap, "re-written site too long");
	return any;
}

static void check_query_names(const struct dnsbl_site *site, const uint8_t *rest, size_t len)
{
	uint8_t v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 99};
	uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0x05, 0x67, 0x89, 0xab};
	/* The input's last octets vary the addresses. */
	for (size_t i = 0; i < 4 && i < len; i++)
		v4[12 + i] = rest[len - 1 - i];
	for (size_t i = 0; i < 16 && i < len; i++)
		v6[i] ^= rest[i];
	char want[80], out[DNSBL_QNAME_MAX];
	size_t zl = strlen(site->zone);

	int wl = snprintf(want, sizeof(want), "%u.%u.%u.%u.", v4[15], v4[14], v4[13], v4[12]);
	size_t n = dnsbl_query_name(site, v4, out, sizeof(out));
	FUZZ_CHECK(n == (size_t)wl + zl && !memcmp(out, want, (size_t)wl) &&
		       !strcmp(out + wl, site->zone),
		   "IPv4 query name '%s'", out);
	FUZZ_CHECK(dnsbl_query_name(site, v4, out, n) == 0, "IPv4 name in a buffer one short");

	if ((v6[0] | v6[1] | v6[2] | v6[3] | v6[4] | v6[5] | v6[6] | v6[7] | v6[8] | v6[9]) == 0 &&
	    v6[10] == 0xff && v6[11] == 0xff)
		v6[0] = 1; /* keep it IPv6 */
	wl = 0;
	for (int i = 15; i >= 0; i--)
		wl += snprintf(want + wl, sizeof(want) - (size_t)wl, "%x.%x.", v6[i] & 15,
			       v6[i] >> 4);
	n = dnsbl_query_name(site, v6, out, sizeof(out));
	FUZZ_CHECK(wl == 64 && n == 64 + zl && !memcmp(out, want, 64) &&
		       !strcmp(out + 64, site->zone),
		   "IPv6 query name '%s'", out);
	FUZZ_CHECK(dnsbl_query_name(site, v6, out, n) == 0, "IPv6 name in a buffer one short");
}

static void check_site(const uint8_t *in, size_t len)
{
	char *s = fuzz_alloc(len); /* exact size: a read past it is caught */
	memcpy(s, in, len);
	struct dnsbl_site site;
	const char *why = NULL;
	int r = dnsbl_site_parse(s, len, &site, &why);
	FUZZ_CHECK(r == 0 || r == -1, "result %d", r);
	FUZZ_CHECK((r == -1) == (why != NULL), "result %d with reason %s", r, why ? why : "(none)");
	if (r) {
		free(s);
		return;
	}

	size_t zl = strnlen(site.zone, sizeof(site.zone));
	FUZZ_CHECK(zl > 0 && zl <= DOMAIN_MAX && site.zone[zl - 1] != '.' && site.zone[0] != '.',
		   "zone '%s'", site.zone);
	for (size_t i = 0; i < zl; i++) {
		char c = site.zone[i];
		FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			       c == '_' || (c == '.' && site.zone[i + 1] != '.'),
			   "zone '%s'", site.zone);
	}
	FUZZ_CHECK(site.weight >= -DNSBL_WEIGHT_MAX && site.weight <= DNSBL_WEIGHT_MAX, "weight %d",
		   site.weight);
	FUZZ_CHECK(site.npatterns <= DNSBL_PATTERNS_MAX, "%u patterns", site.npatterns);
	/* The text: the input, cut to fit with its NUL. */
	size_t tl = strnlen(site.text, sizeof(site.text));
	size_t want_tl = len < sizeof(site.text) - 1 ? len : sizeof(site.text) - 1;
	FUZZ_CHECK(tl == want_tl && !memcmp(site.text, s, tl), "text '%s'", site.text);

	/* Written back and parsed again: the same site. */
	static char again[64 * 1024];
	size_t n = (size_t)snprintf(again, sizeof(again), "%s", site.zone);
	for (unsigned p = 0; p < site.npatterns; p++) {
		n += (size_t)snprintf(again + n, sizeof(again) - n, p ? ";" : "=");
		for (unsigned k = 0; k < 4; k++) {
			if (k)
				n += (size_t)snprintf(again + n, sizeof(again) - n, ".");
			FUZZ_CHECK(write_set(site.pattern[p].octet[k], again, sizeof(again), &n),
				   "pattern %u octet %u is empty", p, k);
		}
	}
	n += (size_t)snprintf(again + n, sizeof(again) - n, "*%d", site.weight);
	FUZZ_CHECK(n < sizeof(again), "re-written site too long");
	struct dnsbl_site site2;
	FUZZ_CHECK(dnsbl_site_parse(again, n, &site2, &why) == 0 && same_site(&site, &site2),
		   "'%.*s' re-written as '%s' parses differently", (int)len, s, again);

	check_query_names(&site, in, len);

	/* Matching agrees with the bitmaps. */
	const uint8_t answers[][4] = {
	    {127, 0, 0, 2}, {127, 0, 0, 255}, {0, 0, 0, 0}, {255, 255, 255, 255}, {127, 1, 2, 3}};
	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]) + 1; i++) {
		uint8_t a[4];
		if (i < sizeof(answers) / sizeof(answers[0]))
			memcpy(a, answers[i], 4);
		else
			for (size_t k = 0; k < 4; k++)
				a[k] = k < len ? (uint8_t)in[k] : 0;
		bool want = site.npatterns == 0;
		for (unsigned p = 0; p < site.npatterns; p++) {
			bool all = true;
			for (unsigned k = 0; k < 4; k++)
				all = all && in_set(site.pattern[p].octet[k], a[k]);
			want = want || all;
		}
		FUZZ_CHECK(dnsbl_site_matches(&site, a) == want, "match of %u.%u.%u.%u", a[0], a[1],
			   a[2], a[3]);
	}
	free(s);
}

static bool same_answer(const struct dnsbl_answer *x, const struct dnsbl_answer *y)
{
	return x->rcode == y->rcode && x->na == y->na && !memcmp(x->a, y->a, sizeof(x->a)) &&
	       x->ttl == y->ttl && x->has_ttl == y->has_ttl;
}

static int parse_copy(const uint8_t *in, size_t len, struct dnsbl_answer *out)
{
	uint8_t *buf = fuzz_alloc(len); /* exact size */
	memcpy(buf, in, len);
	int r = dnsbl_parse_answer(buf, len, out);
	free(buf);
	FUZZ_CHECK(r == 0 || r == -1, "result %d", r);
	return r;
}

static void check_answer(const uint8_t *in, size_t len)
{
	struct dnsbl_answer ans;
	int r = parse_copy(in, len, &ans);
	if (r == 0) {
		FUZZ_CHECK(ans.na <= DNSBL_ANSWERS_MAX, "%u records", ans.na);
		FUZZ_CHECK(ans.rcode >= 0 && ans.rcode <= 15 && ans.rcode == (in[3] & 15),
			   "rcode %d", ans.rcode);
		FUZZ_CHECK(!(ans.ttl & 0x80000000u), "TTL %u", ans.ttl);
		FUZZ_CHECK(ans.has_ttl || ans.na == 0, "A records without a TTL");
		/* Each kept address is 4 octets of the input (an A record's RDATA). */
		for (unsigned i = 0; i < ans.na; i++) {
			bool found = false;
			for (size_t k = 12; k + 4 <= len && !found; k++)
				found = !memcmp(in + k, ans.a[i], 4);
			FUZZ_CHECK(found, "record %u is not from the message", i);
		}
	}
	/* Prefixes: refused or the same; once one parses, longer ones do. */
	if (len > 1024)
		return;
	bool ok = false;
	for (size_t k = 0; k < len; k++) {
		struct dnsbl_answer cut;
		int rk = parse_copy(in, k, &cut);
		FUZZ_CHECK(rk != 0 || (r == 0 && same_answer(&cut, &ans)),
			   "the first %zu of %zu octets parse differently", k, len);
		FUZZ_CHECK(!ok || rk == 0,
			   "the first %zu of %zu octets are refused, fewer were not", k, len);
		ok = rk == 0;
	}
	FUZZ_CHECK(!ok || r == 0, "the whole message is refused, a prefix was not");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		check_answer(data + 1, size - 1);
	else
		check_site(data + 1, size - 1);
	return 0;
}
