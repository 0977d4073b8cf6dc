/*
 * fuzz_addr.c - RFC 5321 path parser (addr_parse) and relay control
 * (addr_accepted).
 *
 * Input: byte 0 holds the flags (bit 0: allow_null, bit 1: allow_utf8), the
 * rest is the path text, as it follows "MAIL FROM:" or "RCPT TO:".
 *
 * Checked on ADDR_OK: the mailbox is a NUL-free string of len octets with
 * no control octet, its '@' where `at` says, the RFC 5321 4.5.3.1 lengths,
 * has_8bit exactly when the mailbox holds an octet >= 0x80 (never without
 * allow_utf8), <> only with allow_null; parsing "<mailbox>" again gives the
 * same mailbox; addr_accepted agrees with a plain reimplementation for
 * accept_domains = example.com, .example.org.
 */
#include <string.h>

#include "addr.h"
#include "config.h"
#include "fuzz.h"

static struct config cfg;
static bool cfg_ready;

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

/* The relay rule of addr.h for the two domains of cfg. */
static bool ref_accepted(const struct addr *a)
{
	if (a->is_null || a->is_literal || a->has_routing)
		return false;
	const char *dom = a->mailbox + a->at + 1;
	size_t dlen = a->len - a->at - 1;
	static const char sub[] = ".example.org";
	if (dlen == 11 && ieq(dom, "example.com", 11))
		return true;
	return dlen > sizeof(sub) - 1 && ieq(dom + dlen - (sizeof(sub) - 1), sub, sizeof(sub) - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (!cfg_ready) {
		static const char domains[] = "accept_domains = example.com, .example.org";
		config_defaults(&cfg);
		FUZZ_CHECK(config_set(&cfg, domains, stderr) == 0, "config");
		cfg_ready = true;
	}
	bool allow_null = data[0] & 1, allow_utf8 = data[0] & 2;
	size_t len = size - 1;
	char *s = fuzz_alloc(len); /* exact size: a read past it is caught */
	memcpy(s, data + 1, len);

	struct addr a;
	size_t end = (size_t)-1;
	enum addr_status st = addr_parse(s, len, allow_null, allow_utf8, &a, &end);
	FUZZ_CHECK(st <= ADDR_UTF8, "status %d", (int)st);
	if (st != ADDR_OK) {
		FUZZ_CHECK(st != ADDR_NULL || !allow_null, "ADDR_NULL with allow_null");
		FUZZ_CHECK(st != ADDR_UTF8 || !allow_utf8, "ADDR_UTF8 with allow_utf8");
		free(s);
		return 0;
	}
	FUZZ_CHECK(end <= len, "end %zu > len %zu", end, len);
	FUZZ_CHECK(a.len == strlen(a.mailbox), "len %zu != strlen %zu", a.len, strlen(a.mailbox));
	FUZZ_CHECK(a.len + 2 <= PATH_MAX_OCTETS, "mailbox of %zu octets", a.len);
	FUZZ_CHECK(a.is_null == (a.len == 0), "is_null %d with len %zu", a.is_null, a.len);
	FUZZ_CHECK(!a.is_null || allow_null, "<> without allow_null");
	bool high = false;
	for (size_t i = 0; i < a.len; i++) {
		unsigned char c = (unsigned char)a.mailbox[i];
		FUZZ_CHECK(c >= 0x20 && c != 0x7f, "control octet 0x%02x in mailbox", c);
		high |= c >= 0x80;
	}
	FUZZ_CHECK(high == a.has_8bit, "has_8bit %d, 8-bit octets %d", a.has_8bit, high);
	FUZZ_CHECK(!high || allow_utf8, "8-bit mailbox without allow_utf8");
	if (!a.is_null) {
		FUZZ_CHECK(a.at > 0 && a.at < a.len && a.mailbox[a.at] == '@', "at %zu in '%s'",
			   a.at, a.mailbox);
		FUZZ_CHECK(a.at <= LOCAL_PART_MAX, "local part of %zu octets", a.at);
		FUZZ_CHECK(a.len - a.at - 1 <= DOMAIN_MAX, "domain of %zu octets",
			   a.len - a.at - 1);
		FUZZ_CHECK(a.is_literal == (a.mailbox[a.at + 1] == '['), "is_literal %d in '%s'",
			   a.is_literal, a.mailbox);
		FUZZ_CHECK(addr_accepted(&cfg, &a) == ref_accepted(&a), "addr_accepted '%s'",
			   a.mailbox);

		/* The mailbox is a path of its own. */
		char again[PATH_MAX_OCTETS + 2];
		size_t n = (size_t)snprintf(again, sizeof(again), "<%s>", a.mailbox);
		struct addr b;
		size_t end2;
		FUZZ_CHECK(addr_parse(again, n, false, allow_utf8, &b, &end2) == ADDR_OK &&
			       end2 == n && strcmp(a.mailbox, b.mailbox) == 0 && a.at == b.at &&
			       a.is_literal == b.is_literal && a.has_routing == b.has_routing,
			   "'%s' does not parse again the same", again);
	} else {
		FUZZ_CHECK(!addr_accepted(&cfg, &a), "<> accepted");
	}
	free(s);
	return 0;
}
