/*
 * test_rcpt_table.c - recipient tables (core/rcpt_table.c): lookups (known,
 * unknown, catch-all, case, address extensions), the Postfix text format
 * (values, comments, blank lines, CRLF, continuation lines, duplicates),
 * error lines with FILE:LINE, files merged by rcpt_table_load (read in
 * chunks: keys and line numbers across their boundaries), and a large
 * generated table with its memory accounting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bounds.h"
#include "rcpt_table.h"

/* Messages written to err, for exact comparison. */
struct errbuf {
	FILE *f;
	char *text;
	size_t len;
};

static void err_open(struct errbuf *e)
{
	e->text = NULL;
	e->len = 0;
	e->f = open_memstream(&e->text, &e->len);
	assert_non_null(e->f);
}

static const char *err_text(struct errbuf *e)
{
	fflush(e->f);
	return e->text;
}

static void err_close(struct errbuf *e)
{
	fclose(e->f);
	free(e->text);
}

/* A table from text, which must parse; nothing may be written to err. */
static struct rcpt_table *table(const char *text)
{
	struct errbuf e;
	struct rcpt_table *t = NULL;
	err_open(&e);
	int r = rcpt_table_parse("t.cf", text, strlen(text), &t, e.f);
	if (r != 0 || e.len != 0 || !t)
		fail_msg("parse failed (%d): %s", r, err_text(&e));
	err_close(&e);
	return t;
}

static bool find(const struct rcpt_table *t, const char *mailbox, const char *delims)
{
	const char *at = strrchr(mailbox, '@');
	assert_non_null(at);
	return rcpt_table_lookup(t, mailbox, strlen(mailbox), (size_t)(at - mailbox), delims);
}

struct want {
	const char *mailbox;
	const char *delims;
	bool found;
};

static void check_lookups(const struct rcpt_table *t, const struct want *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (find(t, w[i].mailbox, w[i].delims) != w[i].found)
			fail_msg("%s (delims '%s'): want %s", w[i].mailbox,
				 w[i].delims ? w[i].delims : "(null)",
				 w[i].found ? "found" : "not found");
}

/* Room for a temporary file's path: meson's TMPDIR is the build folder,
 * which can be deep. */
#define TPATH 1024

/* A temporary file holding text; its path goes in path. */
static void write_file(char path[TPATH], const char *text, size_t len)
{
	const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	assert_true((size_t)snprintf(path, TPATH, "%s/mxring-rcpt-XXXXXX", dir) < TPATH);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void known_unknown_catch_all(void **state)
{
	(void)state;
	struct rcpt_table *t = table("alice@example.com\n"
				     "Bob@Example.COM OK\n"
				     "@catchall.example\n");
	static const struct want w[] = {
	    {"alice@example.com", NULL, true},	     {"ALICE@EXAMPLE.COM", NULL, true},
	    {"AlIcE@eXaMpLe.CoM", "", true},	     {"bob@example.com", NULL, true},
	    {"BOB@EXAMPLE.COM", NULL, true},	     {"carol@example.com", NULL, false},
	    {"alice@example.org", NULL, false},	     {"alic@example.com", NULL, false},
	    {"alicee@example.com", NULL, false},     {"alice@example.co", NULL, false},
	    {"anyone@catchall.example", NULL, true}, {"ANYONE@CATCHALL.EXAMPLE", NULL, true},
	    {"x@sub.catchall.example", NULL, false}, {"@example.com", NULL, false},
	    {"@catchall.example", NULL, true},
	};
	check_lookups(t, w, sizeof(w) / sizeof(w[0]));
	assert_int_equal(rcpt_table_entries(t), 3);
	assert_int_equal(rcpt_table_key_bytes(t), strlen("alice@example.com") +
						      strlen("bob@example.com") +
						      strlen("@catchall.example"));
	rcpt_table_free(t);
}

/* Every octet at every position of a 16-octet local part (but '#' first,
 * a comment): a letter matches its other case, any other octet only itself. */
static void case_every_octet(void **state)
{
	(void)state;
	char text[64];
	for (unsigned c = 0x21; c < 0x100; c++) {
		if (c == '@' || c == '"' || c == 0x7f)
			continue;
		bool letter = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
		for (size_t pos = c == '#' ? 1 : 0; pos < 16; pos++) {
			char key[32];
			memcpy(key, "abcdefghijklmnop@d.example", 27);
			key[pos] = (char)c;
			snprintf(text, sizeof(text), "%s OK\n", key);
			struct rcpt_table *t = table(text);
			char m[32];
			memcpy(m, key, 27);
			for (size_t i = 0; i < 26; i++)
				if (i != pos && m[i] >= 'a' && m[i] <= 'z')
					m[i] = (char)(m[i] - 32);
			if (!rcpt_table_lookup(t, m, 26, 16, NULL))
				fail_msg("octet 0x%02x at %zu: upper-case rest not found", c, pos);
			m[pos] = (char)(c ^ 0x20);
			if (rcpt_table_lookup(t, m, 26, 16, NULL) != letter)
				fail_msg("octet 0x%02x at %zu: other case %s", c, pos,
					 letter ? "not found" : "found");
			rcpt_table_free(t);
		}
	}
}

static void delimiters(void **state)
{
	(void)state;
	struct rcpt_table *t = table("user@d.example\n"
				     "user+exact@d.example\n"
				     "owner@d.example\n"
				     "list@d.example\n"
				     "postmaster@d.example\n"
				     "mailer@d.example\n"
				     "double@d.example\n"
				     "@all.example\n");
	static const struct want w[] = {
	    /* The full address first, with or without delimiters. */
	    {"user+exact@d.example", NULL, true},
	    {"user+exact@d.example", "+", true},
	    /* Stripped only when delimiters are set and present. */
	    {"user+tag@d.example", NULL, false},
	    {"user+tag@d.example", "", false},
	    {"user+tag@d.example", "+", true},
	    {"USER+TAG@D.EXAMPLE", "+", true},
	    {"user-tag@d.example", "+", false},
	    {"user-tag@d.example", "+-", true},
	    {"user+tag@d.example", "+-", true},
	    /* Cut before the first delimiter of the set. */
	    {"user-a+b@d.example", "+-", true},
	    {"user+a-b@d.example", "-+", true},
	    /* As Postfix's split_addr: with '-' a delimiter, owner-* and
	     * *-request are mailing-list addresses, not extensions. */
	    {"owner-list@d.example", "-", false},
	    {"owner-list@d.example", "+-", false},
	    {"Owner-list@d.example", "-", false},
	    {"list-request@d.example", "-", false},
	    {"list-request@d.example", "+", false},
	    {"list+x-request@d.example", "+", true},
	    {"list-x@d.example", "-", true},
	    {"-request@d.example", "-", false},
	    /* The local parts Postfix never splits. */
	    {"postmaster+x@d.example", "+", true}, /* no exception: not exactly postmaster */
	    {"postmaster@d.example", "+", true},
	    {"mailer-daemon@d.example", "-", false}, /* not mailer@ */
	    {"MAILER-DAEMON@d.example", "-", false},
	    {"double-bounce@d.example", "-", false},
	    {"double-x@d.example", "-", true},
	    {"users+x@d.example", "+", false},
	    {"use+r@d.example", "+", false},
	    /* A delimiter first does not split; nothing matches then. */
	    {"+user@d.example", "+", false},
	    /* Delimiters in the domain are not looked at. */
	    {"user@d+x.example", "+", false},
	    /* The catch-all after the stripped form. */
	    {"a+b@all.example", "+", true},
	    {"+@all.example", "+", true},
	};
	check_lookups(t, w, sizeof(w) / sizeof(w[0]));
	rcpt_table_free(t);
}

static void postfix_format(void **state)
{
	(void)state;
	struct rcpt_table *t = table("# relay_recipient_maps source\n"
				     "\n"
				     "alice@example.com OK\r\n"
				     "bob@example.com\tOK\n"
				     "carol@example.com    some long value\n"
				     "    that goes on here\n"
				     "\tnotakey@example.com\n"
				     "  # an indented comment\n"
				     "#dave@example.com\n"
				     "\r\n"
				     "   \n"
				     "erin@example.com\r\n"
				     "frank@example.com  \r\n"
				     "grace@example.com");
	static const struct want w[] = {
	    {"alice@example.com", NULL, true}, {"bob@example.com", NULL, true},
	    {"carol@example.com", NULL, true}, {"notakey@example.com", NULL, false},
	    {"dave@example.com", NULL, false}, {"erin@example.com", NULL, true},
	    {"frank@example.com", NULL, true}, {"grace@example.com", NULL, true},
	    {"that@example.com", NULL, false},
	};
	check_lookups(t, w, sizeof(w) / sizeof(w[0]));
	assert_int_equal(rcpt_table_entries(t), 6);
	rcpt_table_free(t);
}

static void duplicates(void **state)
{
	(void)state;
	struct rcpt_table *t = table("a@d\nA@D\na@d OK\n@d\n@D x\nb@d\na@D\n");
	assert_int_equal(rcpt_table_entries(t), 3);
	assert_int_equal(rcpt_table_key_bytes(t), 3 + 2 + 3);
	assert_true(find(t, "a@d", NULL));
	assert_true(find(t, "b@d", NULL));
	assert_true(find(t, "c@d", NULL));
	rcpt_table_free(t);
}

static void quoted_and_odd(void **state)
{
	(void)state;
	char key[PATH_MAX_OCTETS + 2];
	memset(key, 'a', PATH_MAX_OCTETS);
	key[PATH_MAX_OCTETS - 2] = '@';
	key[PATH_MAX_OCTETS] = '\0';
	char text[1024];
	snprintf(text, sizeof(text), "\"a@b\"@example.com\n\"x\\\"y\"@example.com\n%s\n@z\n", key);
	struct rcpt_table *t = table(text);
	assert_int_equal(rcpt_table_entries(t), 4);
	const char *q = "\"a@b\"@example.com";
	assert_true(rcpt_table_lookup(t, q, strlen(q), 5, NULL));
	assert_true(find(t, "\"x\\\"y\"@example.com", NULL));
	assert_false(find(t, "b\"@example.com", NULL));
	/* A key of exactly PATH_MAX_OCTETS. */
	assert_true(find(t, key, NULL));
	/* A mailbox past PATH_MAX_OCTETS can still match its catch-all. */
	char lng[PATH_MAX_OCTETS + 16];
	memset(lng, 'l', sizeof(lng));
	memcpy(lng + sizeof(lng) - 2, "@z", 2);
	assert_true(rcpt_table_lookup(t, lng, sizeof(lng), sizeof(lng) - 2, "+"));
	memcpy(lng + sizeof(lng) - 2, "@y", 2);
	assert_false(rcpt_table_lookup(t, lng, sizeof(lng), sizeof(lng) - 2, "+"));
	/* An embedded NUL never matches. */
	assert_false(rcpt_table_lookup(t, "a\0@z", 4, 2, NULL));
	assert_false(rcpt_table_lookup(t, "@z\0", 3, 0, NULL));
	rcpt_table_free(t);
}

static void errors(void **state)
{
	(void)state;
	char longkey[PATH_MAX_OCTETS + 8];
	memset(longkey, 'k', PATH_MAX_OCTETS + 1);
	memcpy(longkey, "a@", 2);
	longkey[PATH_MAX_OCTETS + 1] = '\n';
	longkey[PATH_MAX_OCTETS + 2] = '\0';
	static const struct {
		const char *text, *err;
	} cases[] = {
	    {"nouser\n", "mxring: t.cf:1: key 'nouser': no '@'\n"},
	    {"# c\n\nok@d\na@b@c OK\n",
	     "mxring: t.cf:4: key 'a@b@c': more than one unquoted '@'\n"},
	    {"ok@d\r\nbad\r\n", "mxring: t.cf:2: key 'bad': no '@'\n"},
	    {"ok@d x\n  cont\nuser@\n", "mxring: t.cf:3: key 'user@': no domain after '@'\n"},
	    {"\"abc@d\n", "mxring: t.cf:1: key '\\\"abc@d': unterminated quoted local part\n"},
	    {"\"a\"b@d\n",
	     "mxring: t.cf:1: key '\\\"a\\\"b@d': quoted local part not followed by '@'\n"},
	    {"\"a@b\"@c@d\n",
	     "mxring: t.cf:1: key '\\\"a@b\\\"@c@d': more than one unquoted '@'\n"},
	    {"a\x01@d\n", "mxring: t.cf:1: key 'a\\x01@d': control character\n"},
	    {"a@d\rx\n", "mxring: t.cf:1: key 'a@d\\x0dx': control character\n"},
	    {"a\n", "mxring: t.cf:1: key 'a': no '@'\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct errbuf e;
		struct rcpt_table *t = NULL;
		err_open(&e);
		assert_int_equal(
		    rcpt_table_parse("t.cf", cases[i].text, strlen(cases[i].text), &t, e.f), -1);
		assert_null(t);
		if (strcmp(err_text(&e), cases[i].err))
			fail_msg("case %zu: got '%s' want '%s'", i, e.text, cases[i].err);
		err_close(&e);
	}

	/* Too long: the key is cut in the message. */
	struct errbuf e;
	struct rcpt_table *t = NULL;
	err_open(&e);
	assert_int_equal(rcpt_table_parse("t.cf", longkey, strlen(longkey), &t, e.f), -1);
	const char *m = err_text(&e);
	assert_non_null(strstr(m, "mxring: t.cf:1: key 'a@kkk"));
	assert_non_null(strstr(m, "...': longer than 256 octets\n"));
	assert_true(strlen(m) < 200);
	err_close(&e);

	/* An embedded NUL byte is a control character. */
	err_open(&e);
	assert_int_equal(rcpt_table_parse("t.cf", "ok@d\na\0@d\n", 10, &t, e.f), -1);
	assert_string_equal(err_text(&e), "mxring: t.cf:2: key 'a\\x00@d': control character\n");
	err_close(&e);
}

static void empty(void **state)
{
	(void)state;
	static const char *texts[] = {"", "\n", "# only a comment\n\n", "  continued\n", "\r\n"};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct rcpt_table *t = table(texts[i]);
		assert_int_equal(rcpt_table_entries(t), 0);
		assert_int_equal(rcpt_table_key_bytes(t), 0);
		assert_true(rcpt_table_bytes(t) > 0);
		assert_false(find(t, "a@d", "+"));
		assert_false(find(t, "@d", NULL));
		rcpt_table_free(t);
	}
}

static void load_files(void **state)
{
	(void)state;
	char p1[TPATH], p2[TPATH], p3[TPATH], list[3 * TPATH + 16];
	const char *a = "alice@example.com OK\nshared@example.com\n";
	const char *b = "# second\nbob@example.org\r\nSHARED@example.com\n";
	const char *c = "ok@example.net\n\nbroken\n";
	write_file(p1, a, strlen(a));
	write_file(p2, b, strlen(b));
	write_file(p3, c, strlen(c));

	struct errbuf e;
	struct rcpt_table *t = NULL;
	err_open(&e);
	snprintf(list, sizeof(list), " %s ,\t%s, ,", p1, p2);
	assert_int_equal(rcpt_table_load(list, &t, e.f), 0);
	assert_int_equal(e.len, 0);
	assert_int_equal(rcpt_table_entries(t), 3);
	assert_true(find(t, "alice@example.com", NULL));
	assert_true(find(t, "bob@example.org", NULL));
	assert_true(find(t, "Shared@Example.com", NULL));
	assert_false(find(t, "carol@example.com", NULL));
	rcpt_table_free(t);
	err_close(&e);

	/* An error names the file and its line. */
	err_open(&e);
	t = NULL;
	snprintf(list, sizeof(list), "%s,%s", p1, p3);
	assert_int_equal(rcpt_table_load(list, &t, e.f), -1);
	assert_null(t);
	char want[TPATH + 128];
	snprintf(want, sizeof(want), "mxring: %s:3: key 'broken': no '@'\n", p3);
	assert_string_equal(err_text(&e), want);
	err_close(&e);

	/* A missing file. */
	err_open(&e);
	snprintf(list, sizeof(list), "%s, %s.missing", p1, p1);
	assert_int_equal(rcpt_table_load(list, &t, e.f), -1);
	snprintf(want, sizeof(want), "mxring: %s.missing: No such file or directory\n", p1);
	assert_string_equal(err_text(&e), want);
	err_close(&e);

	/* A directory. */
	err_open(&e);
	assert_int_equal(rcpt_table_load("/", &t, e.f), -1);
	assert_string_equal(err_text(&e), "mxring: /: Is a directory\n");
	err_close(&e);

	/* No files: an empty table. */
	err_open(&e);
	assert_int_equal(rcpt_table_load("", &t, e.f), 0);
	assert_int_equal(rcpt_table_entries(t), 0);
	rcpt_table_free(t);
	err_close(&e);

	unlink(p1);
	unlink(p2);
	unlink(p3);
}

/* "user<i>.name@dom<i % 97>.example" */
static size_t gen_key(char *buf, size_t cap, unsigned i, bool upper)
{
	int n = snprintf(
	    buf, cap, upper ? "User%u.Name@DOM%u.example" : "user%u.name@dom%u.example", i, i % 97);
	assert_true(n > 0 && (size_t)n < cap);
	return (size_t)n;
}

/* Builds a text of keys first..first+count (each repeated reps times, with
 * a value and a comment line every 10). */
static char *gen_text(unsigned first, unsigned count, unsigned reps, size_t *len)
{
	size_t cap = (size_t)count * reps * 64 + 64, n = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	for (unsigned r = 0; r < reps; r++)
		for (unsigned i = first; i < first + count; i++) {
			n += gen_key(text + n, cap - n, i, r % 2 == 1);
			n += (size_t)snprintf(text + n, cap - n, i % 10 ? " OK\n" : "\n# c\n");
		}
	*len = n;
	return text;
}

static void many(void **state)
{
	(void)state;
	const unsigned count = 200000;
	size_t len, key_bytes = 0;
	char *text = gen_text(0, count, 1, &len);
	struct rcpt_table *t = NULL;
	struct errbuf e;
	err_open(&e);
	assert_int_equal(rcpt_table_parse("big.cf", text, len, &t, e.f), 0);
	err_close(&e);
	free(text);
	assert_int_equal(rcpt_table_entries(t), count);

	char buf[128];
	for (unsigned i = 0; i < count; i++) {
		size_t n = gen_key(buf, sizeof(buf), i, i % 3 == 0);
		key_bytes += n;
		if (!rcpt_table_lookup(t, buf, n, (size_t)(strchr(buf, '@') - buf), "+"))
			fail_msg("key %u (%s) not found", i, buf);
	}
	for (unsigned i = count; i < 2 * count; i++) {
		size_t n = gen_key(buf, sizeof(buf), i, false);
		if (rcpt_table_lookup(t, buf, n, (size_t)(strchr(buf, '@') - buf), "+"))
			fail_msg("non-key %u (%s) found", i, buf);
	}
	assert_int_equal(rcpt_table_key_bytes(t), key_bytes);

	/* Beyond the keys: a NUL and 5 / load bytes per entry, the load
	 * between 3/8 and 3/4, plus the struct and the arena's pad. */
	size_t bytes = rcpt_table_bytes(t);
	double beyond = (double)(bytes - key_bytes) / count;
	if (beyond < 1 + 5 / 0.75 || beyond > 1 + 5 / 0.375 + 0.01)
		fail_msg("%.2f bytes per entry beyond the keys", beyond);
	rcpt_table_free(t);
}

/* Duplicates and comments shrink the table below the reservation, and a
 * second file grows it: every key stays findable. */
static void many_files_and_duplicates(void **state)
{
	(void)state;
	const unsigned count = 50000;
	size_t l1, l2;
	char *t1 = gen_text(0, count, 3, &l1);
	char *t2 = gen_text(count / 2, count, 1, &l2);
	char p1[TPATH], p2[TPATH], list[2 * TPATH + 8];
	write_file(p1, t1, l1);
	write_file(p2, t2, l2);
	free(t1);
	free(t2);
	snprintf(list, sizeof(list), "%s,%s", p1, p2);
	struct rcpt_table *t = NULL;
	struct errbuf e;
	err_open(&e);
	assert_int_equal(rcpt_table_load(list, &t, e.f), 0);
	err_close(&e);
	unlink(p1);
	unlink(p2);

	const unsigned total = count + count / 2;
	assert_int_equal(rcpt_table_entries(t), total);
	char buf[128];
	size_t key_bytes = 0;
	for (unsigned i = 0; i < total + 1000; i++) {
		size_t n = gen_key(buf, sizeof(buf), i, i % 2 == 0);
		if (i < total)
			key_bytes += n;
		if (rcpt_table_lookup(t, buf, n, (size_t)(strchr(buf, '@') - buf), NULL) !=
		    (i < total))
			fail_msg("key %u (%s): wrong answer", i, buf);
	}
	assert_int_equal(rcpt_table_key_bytes(t), key_bytes);
	double beyond = (double)(rcpt_table_bytes(t) - key_bytes) / total;
	if (beyond < 1 + 5 / 0.75 || beyond > 1 + 5 / 0.375 + 0.02)
		fail_msg("%.2f bytes per entry beyond the keys", beyond);
	rcpt_table_free(t);
}

/*
 * A file is read 4 MiB at a time: keys across every chunk boundary are
 * found, the line number of an error past a boundary is right, and a line
 * longer than a chunk is refused with its number.
 */
static void chunks(void **state)
{
	(void)state;
	const size_t chunk = 4u << 20, len = 3 * chunk + 12345;
	char *text = malloc(len + 64);
	assert_non_null(text);
	size_t n = 0, lines = 0;
	unsigned keys = 0;
	while (n < len) {
		/* Lines of varying length, so that boundaries fall in every position. */
		int w = snprintf(text + n, 64, "u%u@d.example%.*s\n", keys, (int)(keys % 23),
				 " value value value value");
		n += (size_t)w;
		keys++;
		lines++;
	}
	char p[TPATH];
	write_file(p, text, n);
	struct rcpt_table *t = NULL;
	struct errbuf e;
	err_open(&e);
	assert_int_equal(rcpt_table_load(p, &t, e.f), 0);
	assert_string_equal(err_text(&e), "");
	err_close(&e);
	unlink(p);
	assert_int_equal(rcpt_table_entries(t), keys);
	char buf[64];
	for (unsigned i = 0; i < keys + 100; i++) {
		int k = snprintf(buf, sizeof(buf), "u%u@d.example", i);
		if (rcpt_table_lookup(t, buf, (size_t)k, (size_t)(strchr(buf, '@') - buf), NULL) !=
		    (i < keys))
			fail_msg("key %u: wrong answer", i);
	}
	rcpt_table_free(t);

	/* A bad key on the last line: its number counts the lines of every chunk. */
	memcpy(text + n, "nokey\n", 6);
	write_file(p, text, n + 6);
	err_open(&e);
	assert_int_equal(rcpt_table_load(p, &t, e.f), -1);
	char want[TPATH + 128];
	snprintf(want, sizeof(want), "mxring: %s:%zu: key 'nokey': ", p, lines + 1);
	if (strncmp(err_text(&e), want, strlen(want)) != 0)
		fail_msg("got '%s', want '%s...'", err_text(&e), want);
	err_close(&e);
	unlink(p);

	/* A value line longer than a chunk. */
	memset(text, 'x', len);
	memcpy(text, "a@d.example\n  ", 14);
	text[len - 1] = '\n';
	write_file(p, text, len);
	err_open(&e);
	assert_int_equal(rcpt_table_load(p, &t, e.f), -1);
	snprintf(want, sizeof(want), "mxring: %s:2: line longer than 4194304 bytes\n", p);
	assert_string_equal(err_text(&e), want);
	err_close(&e);
	unlink(p);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(chunks),
	    cmocka_unit_test(known_unknown_catch_all),
	    cmocka_unit_test(case_every_octet),
	    cmocka_unit_test(delimiters),
	    cmocka_unit_test(postfix_format),
	    cmocka_unit_test(duplicates),
	    cmocka_unit_test(quoted_and_odd),
	    cmocka_unit_test(errors),
	    cmocka_unit_test(empty),
	    cmocka_unit_test(load_files),
	    cmocka_unit_test(many),
	    cmocka_unit_test(many_files_and_duplicates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
