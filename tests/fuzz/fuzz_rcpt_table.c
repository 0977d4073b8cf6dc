/*
 * fuzz_rcpt_table.c - recipient tables (rcpt_table_parse, rcpt_table_lookup).
 *
 * Input: the text of a table file.
 *
 * Checked: a refused input writes exactly one line "mxring: fuzz.cf:LINE: "
 * and gives no table; an accepted one writes nothing. For an accepted table,
 * a plain model built here from the header's description of the format (a
 * list of keys, compared ASCII case-insensitively) must agree with it: the
 * number of distinct keys, their bytes, and the answer of every lookup of
 * a set of mailboxes taken from the input (each key, altered copies of it,
 * "local+tag@domain", the runs around every '@' of the input) under several
 * delimiter sets.
 */
#include <string.h>

#include "bounds.h"
#include "fuzz.h"
#include "rcpt_table.h"

#define KEYS_MAX   256 /* keys the model holds; more and only lookups are checked */
#define PROBES_MAX 64  /* keys and '@' runs looked up */

struct key {
	const char *s;
	size_t n;
};

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

static bool same(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

static bool model_has(const struct key *k, size_t nk, const char *s, size_t n)
{
	for (size_t i = 0; i < nk; i++)
		if (same(k[i].s, k[i].n, s, n))
			return true;
	return false;
}

/* ASCII case-insensitive equality of n bytes at a with the string b. */
static bool ieq_str(const char *a, size_t n, const char *b)
{
	if (strlen(b) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
		if (c != b[i])
			return false;
	}
	return true;
}

/* The local parts the header says are never split. */
static bool model_unsplit(const char *m, size_t at, const char *delims)
{
	if (ieq_str(m, at, "postmaster") || ieq_str(m, at, "mailer-daemon") ||
	    ieq_str(m, at, "double-bounce"))
		return true;
	return strchr(delims, '-') && ((at >= 6 && ieq_str(m, 6, "owner-")) ||
				       (at > 8 && ieq_str(m + at - 8, 8, "-request")));
}

/* The header's lookup order over the model. A mailbox with a NUL matches
 * nothing (no key holds one). */
static bool model_lookup(const struct key *k, size_t nk, const char *m, size_t len, size_t at,
			 const char *delims)
{
	char buf[2 * PATH_MAX_OCTETS + 64];
	if (memchr(m, '\0', len))
		return false;
	if (model_has(k, nk, m, len))
		return true;
	if (delims && delims[0] && !model_unsplit(m, at, delims)) {
		size_t cut = 0;
		while (cut < at && !strchr(delims, m[cut]))
			cut++;
		if (cut > 0 && cut < at && cut + len - at <= sizeof(buf)) {
			memcpy(buf, m, cut);
			memcpy(buf + cut, m + at, len - at);
			if (model_has(k, nk, buf, cut + len - at))
				return true;
		}
	}
	return model_has(k, nk, m + at, len - at);
}

static const char *const delim_sets[] = {NULL, "", "+", "-+.", "@\"", "-"};

/* Looks m up in the table and the model under every delimiter set. */
static void probe(const struct rcpt_table *t, const struct key *k, size_t nk, bool model,
		  const char *m, size_t len)
{
	const char *p = NULL;
	for (size_t i = 0; i < len; i++)
		if (m[i] == '@')
			p = m + i;
	if (!p)
		return;
	size_t at = (size_t)(p - m);
	for (size_t d = 0; d < sizeof(delim_sets) / sizeof(delim_sets[0]); d++) {
		bool got = rcpt_table_lookup(t, m, len, at, delim_sets[d]);
		if (model)
			FUZZ_CHECK(got == model_lookup(k, nk, m, len, at, delim_sets[d]),
				   "lookup of '%.*s' (delims '%s') gave %d", (int)len, m,
				   delim_sets[d] ? delim_sets[d] : "(null)", got);
	}
}

/* The keys of text as the header describes them, at most cap. */
static size_t model_keys(const char *text, size_t len, struct key *k, size_t cap, size_t *lines)
{
	size_t pos = 0, nk = 0;
	*lines = 0;
	while (pos < len) {
		const char *s = text + pos;
		const char *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		pos += n + (nl != NULL);
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (n == 0 || s[0] == ' ' || s[0] == '\t' || s[0] == '#')
			continue;
		size_t e = 0;
		while (e < n && s[e] != ' ' && s[e] != '\t')
			e++;
		(*lines)++;
		if (nk < cap)
			k[nk++] = (struct key){s, e};
	}
	return nk;
}

static void check_error(const char *msg, size_t len)
{
	static const char prefix[] = "mxring: fuzz.cf:";
	FUZZ_CHECK(len > sizeof(prefix) && !memcmp(msg, prefix, sizeof(prefix) - 1),
		   "error line '%.*s'", (int)len, msg);
	FUZZ_CHECK(msg[sizeof(prefix) - 1] >= '1' && msg[sizeof(prefix) - 1] <= '9',
		   "no line number in '%.*s'", (int)len, msg);
	FUZZ_CHECK(memchr(msg, '\n', len) == msg + len - 1, "not one line: '%.*s'", (int)len, msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_alloc(size); /* exact size: a read past it is caught */
	memcpy(text, data, size);
	char *msg = NULL;
	size_t msg_len = 0;
	FILE *err = open_memstream(&msg, &msg_len);
	FUZZ_CHECK(err != NULL, "open_memstream");
	struct rcpt_table *t = NULL;
	int r = rcpt_table_parse("fuzz.cf", text, size, &t, err);
	FUZZ_CHECK(fclose(err) == 0, "fclose");
	FUZZ_CHECK(r == 0 || r == -1, "result %d", r);
	if (r < 0) {
		FUZZ_CHECK(t == NULL, "a table after an error");
		check_error(msg, msg_len);
		free(msg);
		free(text);
		return 0;
	}
	FUZZ_CHECK(t != NULL && msg_len == 0, "success with '%.*s'", (int)msg_len, msg);
	free(msg);

	static struct key keys[KEYS_MAX];
	size_t lines;
	size_t nk = model_keys(text, size, keys, KEYS_MAX, &lines);
	bool model = lines <= KEYS_MAX;
	size_t entries = rcpt_table_entries(t), key_bytes = rcpt_table_key_bytes(t);
	FUZZ_CHECK(entries <= lines && (entries == 0) == (lines == 0), "%zu entries of %zu lines",
		   entries, lines);
	FUZZ_CHECK(rcpt_table_bytes(t) >= key_bytes + entries, "bytes %zu for %zu keys",
		   rcpt_table_bytes(t), entries);
	if (model) {
		size_t distinct = 0, bytes = 0;
		for (size_t i = 0; i < nk; i++) {
			FUZZ_CHECK(keys[i].n > 0 && keys[i].n <= PATH_MAX_OCTETS,
				   "key of %zu bytes accepted", keys[i].n);
			if (!model_has(keys, i, keys[i].s, keys[i].n)) {
				distinct++;
				bytes += keys[i].n;
			}
		}
		FUZZ_CHECK(distinct == entries && bytes == key_bytes,
			   "%zu entries (%zu bytes), the model has %zu (%zu bytes)", entries,
			   key_bytes, distinct, bytes);
	}

	char m[PATH_MAX_OCTETS + 64];
	for (size_t i = 0; i < nk && i < PROBES_MAX; i++) {
		const char *s = keys[i].s;
		size_t n = keys[i].n;
		FUZZ_CHECK(memchr(s, '@', n) != NULL, "key '%.*s' without '@'", (int)n, s);
		/* A key is found as itself, and so is "local+tag@domain". */
		size_t at = (size_t)((const char *)memrchr(s, '@', n) - s);
		FUZZ_CHECK(rcpt_table_lookup(t, s, n, at, NULL), "key '%.*s' not found", (int)n, s);
		if (!memchr(s, '+', at)) {
			memcpy(m, s, at);
			memcpy(m + at, "+T", 2);
			memcpy(m + at + 2, s + at, n - at);
			FUZZ_CHECK(rcpt_table_lookup(t, m, n + 2, at + 2, "+"),
				   "key '%.*s' not found with a tag", (int)n, s);
		}
		probe(t, keys, nk, model, s, n);
		/* Altered copies: each end changed, one byte longer, upper case. */
		memcpy(m, s, n);
		m[0] ^= 0x20;
		probe(t, keys, nk, model, m, n);
		m[0] = s[0];
		m[n - 1] ^= 0x01;
		probe(t, keys, nk, model, m, n);
		m[n - 1] = s[n - 1];
		m[n] = 'x';
		probe(t, keys, nk, model, m, n + 1);
		memcpy(m + 1, s, n);
		m[0] = 'a';
		probe(t, keys, nk, model, m, n + 1);
		memcpy(m, "user-a+b", 8);
		memcpy(m + 8, s + at, n - at);
		probe(t, keys, nk, model, m, 8 + n - at);
	}
	/* The run of bytes around each '@' of the input (NULs and all). */
	size_t runs = 0;
	for (size_t i = 0; i < size && runs < PROBES_MAX; i++) {
		if (text[i] != '@')
			continue;
		size_t a = i, b = i + 1;
		while (a > 0 && i - a < PATH_MAX_OCTETS + 8 && !strchr(" \t\r\n", text[a - 1]))
			a--;
		while (b < size && b - i < PATH_MAX_OCTETS + 8 && !strchr(" \t\r\n", text[b]))
			b++;
		probe(t, keys, nk, model, text + a, b - a);
		runs++;
	}
	rcpt_table_free(t);
	free(text);
	return 0;
}
