/*
 * rcpt_table.c - recipient tables (rcpt_table.h): Postfix-format key files
 * read into one immutable hash set of lower-cased addresses.
 *
 * Layout (struct rcpt_table):
 * - arena: every distinct key, lower-cased, each followed by a NUL, one
 *   after the other in the order first seen; then ARENA_PAD bytes more, so
 *   that comparing a lookup key of up to PATH_MAX_OCTETS + 1 bytes with any
 *   key in it never reads past the allocation. Keys are distinct, so
 *   walking the arena from 0 to arena_len visits each entry exactly once
 *   (that is how the index is rebuilt, without storing hashes).
 * - index: a power-of-two number of slots, at most 3/4 of them used,
 *   linear probing. offs[i] is the arena offset of slot i's key, tags[i]
 *   eight high bits of its hash (0 means empty, so a hash whose bits are 0
 *   takes tag 1). A probe reads tags first and the arena only when a tag
 *   matches, so a miss costs about one cache line of tags and rarely any of
 *   the arena. Offsets are 32 bits, hence arena_len <= ARENA_MAX (4 GiB - 1).
 *
 * Building: keys are lower-cased and hashed BATCH at a time, their slots
 * prefetched, then inserted one by one; a key is copied to the arena only
 * when the index does not hold it already, so a duplicate costs no memory.
 * A file is read and parsed a chunk at a time (LOAD_CHUNK), never held
 * whole. Before its first chunk the arena is reserved for the whole file
 * and the index for the keys the first chunk's density of key lines
 * predicts, so a large file is read without rehashing; both reservations
 * are only hints (on failure the arrays grow
 * by doubling), and table_finish trims the arena and rebuilds the index at
 * the smallest size that keeps the load at most 3/4.
 *
 * The hash is keyed by nothing: the keys come from the operator's files,
 * and lookups add nothing to the table, so a client cannot lengthen a probe
 * sequence; it can only probe the ones the files made. The mix follows
 * wyhash (64x64 -> 128-bit multiplies folded), which is fast on keys of
 * 10-40 bytes and spreads both the low bits (slot) and the high bits (tag).
 *
 * Threads: nothing is written after table_finish, so lookups need no lock.
 */
#include "rcpt_table.h"
#include "bounds.h"
#include "check.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARENA_MAX  0xffffffffull	 /* offsets are uint32_t */
#define ARENA_PAD  (PATH_MAX_OCTETS + 1) /* a probe reads this far past a key's start */
#define ARENA_MIN  4096u		 /* first allocation */
#define SLOTS_MIN  8u
#define FILE_MAX   (4ull << 30)			 /* bytes of one table file */
#define LOAD_CHUNK (4u << 20)			 /* bytes of a file read and parsed at a time */
#define QUOTE_MAX  (LOG_CLIENT_TEXT_MAX * 4 + 4) /* log_escape: 4 per byte, "...", NUL */

#define STR_(x) #x
#define STR(x)	STR_(x)

static_assert(SLOTS_MIN >= 2 && (SLOTS_MIN & (SLOTS_MIN - 1)) == 0, "SLOTS_MIN is a power of 2");
static_assert(PATH_MAX_OCTETS < ARENA_MIN, "a key fits the first arena");

struct rcpt_table {
	char *arena;	  /* owned: keys, NUL-terminated, then ARENA_PAD bytes */
	size_t arena_len; /* bytes of keys and their NULs */
	size_t arena_cap; /* bytes allocated: >= arena_len + ARENA_PAD */
	uint32_t *offs;	  /* owned: slot -> arena offset; meaningful where tags[slot] != 0 */
	uint8_t *tags;	  /* owned: slot -> hash fingerprint, 0 = empty */
	size_t mask;	  /* slots - 1 */
	size_t entries;	  /* distinct keys = used slots */
};

/* --- hashing ------------------------------------------------------------- */

__extension__ typedef unsigned __int128 u128;

#define HASH_P0 0xa0761d6478bd642full
#define HASH_P1 0xe7037ed1a0b428dbull
#define HASH_P2 0x8ebc6af09c88c6e3ull
#define HASH_P3 0x589965cc75374cc3ull

static inline uint64_t mum(uint64_t a, uint64_t b)
{
	u128 r = (u128)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint64_t rd32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Hash of n bytes; reads only p[0..n). */
static uint64_t hash_key(const char *key, size_t n)
{
	const unsigned char *p = (const unsigned char *)key;
	uint64_t h = HASH_P0 ^ mum((uint64_t)n ^ HASH_P1, HASH_P2);
	uint64_t a = 0, b = 0;
	size_t left = n;

	while (left > 16) {
		h = mum(rd64(p) ^ HASH_P1, rd64(p + 8) ^ h);
		p += 16;
		left -= 16;
	}
	/* 0..16 bytes left; the two reads may overlap, as in wyhash. */
	if (left >= 8) {
		a = rd64(p);
		b = rd64(p + left - 8);
	} else if (left >= 4) {
		a = rd32(p);
		b = rd32(p + left - 4);
	} else if (left > 0) {
		a = (uint64_t)p[0] << 16 | (uint64_t)p[left >> 1] << 8 | p[left - 1];
	}
	return mum(mum(a ^ HASH_P1, b ^ h) ^ HASH_P3, (uint64_t)n ^ HASH_P1);
}

static inline uint8_t hash_tag(uint64_t h)
{
	uint8_t tag = (uint8_t)(h >> 56);
	return tag ? tag : 1;
}

static inline char lower(char c)
{
	return (unsigned char)(c - 'A') < 26u ? (char)(c | 0x20) : c;
}

/*
 * ASCII lower case of n bytes, eight at a time: in each byte, bit 7 of
 * (b & 0x7f) + (0x80 - 'A') is set when b >= 'A', and of (b & 0x7f) +
 * (0x80 - 'Z' - 1) when b > 'Z'; neither sum carries into the next byte
 * (at most 0x7f + 0x3f). A byte >= 0x80 is not a letter and is left.
 */
static void lower_copy(char *dst, const char *src, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x;
		memcpy(&x, src + i, 8);
		uint64_t low7 = x & ~high;
		uint64_t ge_a = low7 + ones * (0x80 - 'A');
		uint64_t gt_z = low7 + ones * (0x80 - 'Z' - 1);
		uint64_t upper = ge_a & ~gt_z & ~x & high;
		x |= upper >> 2;
		memcpy(dst + i, &x, 8);
	}
	for (; i < n; i++)
		dst[i] = lower(src[i]);
}

/* --- the index ----------------------------------------------------------- */

/* The smallest power of two >= SLOTS_MIN with n <= 3/4 of it; 0 when n is
 * beyond any index (the caller reports ENOMEM). */
static size_t slots_for(size_t n)
{
	size_t slots = SLOTS_MIN;
	while (n > slots / 4 * 3) {
		if (slots > SIZE_MAX / 2 / sizeof(uint32_t))
			return 0;
		slots *= 2;
	}
	return slots;
}

/* Slot of key (n bytes + NUL at key[n]) if present, else the empty slot
 * where it belongs. The index always has an empty slot (load <= 3/4). */
static size_t index_find(const struct rcpt_table *t, const char *key, size_t n, uint64_t h,
			 bool *found)
{
	uint8_t tag = hash_tag(h);
	size_t i = (size_t)h & t->mask;

	for (size_t k = 0; k <= t->mask; k++, i = (i + 1) & t->mask) {
		if (t->tags[i] == 0) {
			*found = false;
			return i;
		}
		/* Compares the NUL too: the arena holds ARENA_PAD bytes past its
		 * last key, so n + 1 <= ARENA_PAD bytes from any key are in it. */
		if (t->tags[i] == tag && !memcmp(t->arena + t->offs[i], key, n + 1)) {
			*found = true;
			return i;
		}
	}
	ASSERT(!"index without an empty slot");
	return 0;
}

/* Replaces the index with one of slots slots holding every arena key. */
static int index_rebuild(struct rcpt_table *t, size_t slots)
{
	ASSERT(slots >= SLOTS_MIN && (slots & (slots - 1)) == 0 && t->entries <= slots / 4 * 3);
	uint8_t *tags = calloc(slots, 1);
	uint32_t *offs = malloc(slots * sizeof(*offs));
	if (!tags || !offs) {
		free(tags);
		free(offs);
		return -ENOMEM;
	}
	free(t->tags);
	free(t->offs);
	t->tags = tags;
	t->offs = offs;
	t->mask = slots - 1;

	size_t off = 0, seen = 0;
	while (off < t->arena_len) {
		const char *key = t->arena + off;
		size_t n = strlen(key);
		uint64_t h = hash_key(key, n);
		size_t i = (size_t)h & t->mask;
		/* Arena keys are distinct: no comparison, the first empty slot. */
		for (size_t k = 0; tags[i] != 0; k++, i = (i + 1) & t->mask)
			ASSERT(k < slots);
		tags[i] = hash_tag(h);
		offs[i] = (uint32_t)off;
		off += n + 1;
		seen++;
	}
	ASSERT(seen == t->entries);
	return 0;
}

/* --- building ------------------------------------------------------------ */

static struct rcpt_table *table_new(void)
{
	struct rcpt_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->arena = malloc(ARENA_MIN);
	t->arena_cap = ARENA_MIN;
	if (!t->arena || index_rebuild(t, SLOTS_MIN) < 0) {
		rcpt_table_free(t);
		return NULL;
	}
	return t;
}

/* Makes room for need more arena bytes (plus the pad): doubling, or exactly
 * need when that is more. */
static int arena_reserve(struct rcpt_table *t, size_t need)
{
	size_t want = t->arena_len + need + ARENA_PAD;
	if (want <= t->arena_cap)
		return 0;
	size_t cap = t->arena_cap * 2 > want ? t->arena_cap * 2 : want;
	char *a = realloc(t->arena, cap);
	if (!a)
		return -ENOMEM;
	t->arena = a;
	t->arena_cap = cap;
	return 0;
}

/*
 * A key on its way into the table: lower-cased, NUL-terminated and hashed
 * a few keys ahead of its insertion, with its slot prefetched, so that the
 * cache misses of a batch overlap instead of following one another (on a
 * table larger than the caches they are most of the cost of building).
 */
struct pending {
	uint64_t h;
	size_t line; /* for the error line */
	size_t n;
	char key[PATH_MAX_OCTETS + 1];
};

#define BATCH 16 /* keys in flight; a few KiB on the stack */

static void pending_set(const struct rcpt_table *t, struct pending *p, const char *s, size_t n,
			size_t line)
{
	ASSERT(n <= PATH_MAX_OCTETS);
	lower_copy(p->key, s, n);
	p->key[n] = '\0';
	p->n = n;
	p->line = line;
	p->h = hash_key(p->key, n);
	size_t i = (size_t)p->h & t->mask;
	__builtin_prefetch(&t->tags[i], 1);
	__builtin_prefetch(&t->offs[i], 1);
}

/*
 * Adds a pending key unless it is there already. 0, -EFBIG when the arena
 * would pass ARENA_MAX, or -ENOMEM.
 */
static int table_add(struct rcpt_table *t, const struct pending *p)
{
	if (t->arena_len + p->n + 1 > ARENA_MAX)
		return -EFBIG;
	if (arena_reserve(t, p->n + 1) < 0)
		return -ENOMEM;
	if ((t->entries + 1) > (t->mask + 1) / 4 * 3) {
		size_t slots = slots_for(t->entries + 1);
		if (!slots || index_rebuild(t, slots) < 0)
			return -ENOMEM;
	}
	bool found;
	size_t i = index_find(t, p->key, p->n, p->h, &found);
	if (found)
		return 0;
	memcpy(t->arena + t->arena_len, p->key, p->n + 1);
	t->tags[i] = hash_tag(p->h);
	t->offs[i] = (uint32_t)t->arena_len;
	t->arena_len += p->n + 1;
	t->entries++;
	return 0;
}

/* Adds the batch; on failure writes the error line of the key that failed. */
static int table_add_batch(struct rcpt_table *t, const struct pending *batch, size_t nb,
			   const char *name, FILE *err)
{
	for (size_t i = 0; i < nb; i++) {
		int r = table_add(t, &batch[i]);
		if (r == -EFBIG) {
			fprintf(err, "mxring: %s:%zu: the keys pass 4 GiB\n", name, batch[i].line);
			return -1;
		}
		if (r < 0) {
			fprintf(err, "mxring: %s:%zu: %s\n", name, batch[i].line, strerror(-r));
			return -1;
		}
	}
	return 0;
}

/* Trims the arena to its keys and the pad, and the index to the smallest
 * size for the entries (they shrink below the reservation with duplicates
 * and comment lines). Failing to shrink keeps the larger arrays. */
static void table_finish(struct rcpt_table *t)
{
	size_t cap = t->arena_len + ARENA_PAD;
	if (cap < t->arena_cap) {
		char *a = realloc(t->arena, cap);
		if (a) {
			t->arena = a;
			t->arena_cap = cap;
		}
	}
	/* A failed rebuild leaves the index as it was (it allocates first). */
	size_t slots = slots_for(t->entries);
	if (slots && slots < t->mask + 1)
		(void)index_rebuild(t, slots);
	ASSERT(t->arena_cap >= t->arena_len + ARENA_PAD);
}

/* --- parsing ------------------------------------------------------------- */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_control(char c)
{
	return (unsigned char)c < 0x20 || c == 0x7f;
}

/* Why key (n bytes, no blank in it) is not a valid key, or NULL. */
static const char *key_problem(const char *s, size_t n)
{
	size_t i = 0, at;

	if (n > PATH_MAX_OCTETS)
		return "longer than " STR(PATH_MAX_OCTETS) " octets";
	for (i = 0; i < n; i++)
		if (is_control(s[i]))
			return "control character";
	i = 0;
	if (s[0] == '"') {
		/* RFC 5321 Quoted-string: '\' quotes the next octet, '"' ends it. */
		for (i = 1; i < n && s[i] != '"'; i++)
			if (s[i] == '\\')
				i++;
		if (i >= n)
			return "unterminated quoted local part";
		i++;
		if (i >= n || s[i] != '@')
			return "quoted local part not followed by '@'";
		at = i;
	} else {
		const char *p = memchr(s, '@', n);
		if (!p)
			return "no '@'";
		at = (size_t)(p - s);
	}
	if (memchr(s + at + 1, '@', n - at - 1))
		return "more than one unquoted '@'";
	if (at + 1 == n)
		return "no domain after '@'";
	return NULL;
}

/* Reserves for a file of file_len bytes, of which text[0..len) is the
 * start: the arena for all of it, the index for as many keys as the start
 * holds per byte. Only a hint; failures are ignored. */
static void table_reserve(struct rcpt_table *t, const char *text, size_t len, uint64_t file_len)
{
	size_t keys = 0, pos = 0;
	while (pos < len) {
		char c = text[pos];
		if (c != '#' && c != '\n' && c != '\r' && !is_blank(c))
			keys++;
		const char *nl = memchr(text + pos, '\n', len - pos);
		pos = nl ? (size_t)(nl - text) + 1 : len;
	}
	if (keys == 0 || len == 0)
		return;
	if (file_len > len)
		keys = (size_t)((double)keys * (double)file_len / (double)len) + 1;
	uint64_t need = file_len > len ? file_len + 1 : len + 1;
	(void)arena_reserve(t, need < ARENA_MAX ? (size_t)need : (size_t)ARENA_MAX);
	size_t slots = slots_for(t->entries + keys);
	if (slots > t->mask + 1)
		(void)index_rebuild(t, slots);
}

/* Parses whole lines text[0..len) into t; *line counts the lines of the
 * file so far (in and out), for the error lines. */
static int parse_into(struct rcpt_table *t, const char *name, const char *text, size_t len,
		      size_t *lines, FILE *err)
{
	struct pending batch[BATCH];
	size_t pos = 0, line = *lines, nb = 0;

	while (pos < len) {
		const char *s = text + pos;
		const char *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		pos += n + (nl != NULL);
		line++;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		/* Blank lines, comments, and continuations (a value goes on). */
		if (n == 0 || is_blank(s[0]) || s[0] == '#')
			continue;
		size_t k = 0;
		while (k < n && !is_blank(s[k]))
			k++;
		const char *why = key_problem(s, k);
		if (why) {
			char q[QUOTE_MAX];
			log_escape(q, sizeof(q), s, k, LOG_CLIENT_TEXT_MAX);
			fprintf(err, "mxring: %s:%zu: key '%s': %s\n", name, line, q, why);
			return -1;
		}
		pending_set(t, &batch[nb++], s, k, line);
		if (nb == BATCH) {
			if (table_add_batch(t, batch, nb, name, err) < 0)
				return -1;
			nb = 0;
		}
	}
	*lines = line;
	return table_add_batch(t, batch, nb, name, err);
}

int rcpt_table_parse(const char *name, const char *text, size_t len, struct rcpt_table **out,
		     FILE *err)
{
	struct rcpt_table *t = table_new();
	if (!t) {
		fprintf(err, "mxring: %s: %s\n", name, strerror(ENOMEM));
		return -1;
	}
	size_t lines = 0;
	table_reserve(t, text, len, len);
	if (parse_into(t, name, text, len, &lines, err) < 0) {
		rcpt_table_free(t);
		return -1;
	}
	table_finish(t);
	*out = t;
	return 0;
}

/* --- files --------------------------------------------------------------- */

/*
 * Parses the file at path into t, LOAD_CHUNK bytes at a time: whole lines
 * are parsed as they come, a partial one waits for the next read, so the
 * file is never held whole (a reload then holds the old table, the new one
 * and one chunk). At most FILE_MAX bytes; a line longer than a chunk (a key
 * is at most PATH_MAX_OCTETS, so it would be a value or a comment) is an
 * error. 0, or -1 after a line to err.
 */
static int load_file(struct rcpt_table *t, const char *path, FILE *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(err, "mxring: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char *buf = malloc(LOAD_CHUNK);
	if (!buf) {
		fprintf(err, "mxring: %s: %s\n", path, strerror(ENOMEM));
		close(fd);
		return -1;
	}
	size_t have = 0, lines = 0;
	uint64_t total = 0;
	bool first = true;
	int rc = 0;
	for (;;) {
		ssize_t got = read(fd, buf + have, LOAD_CHUNK - have);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			fprintf(err, "mxring: %s: %s\n", path, strerror(errno));
			rc = -1;
			break;
		}
		total += (uint64_t)got;
		if (total > FILE_MAX) {
			fprintf(err, "mxring: %s: %s\n", path, strerror(EFBIG));
			rc = -1;
			break;
		}
		have += (size_t)got;
		bool eof = got == 0;
		size_t end = have;
		if (!eof) {
			const char *nl = memrchr(buf, '\n', have);
			if (!nl && have == LOAD_CHUNK) {
				fprintf(err, "mxring: %s:%zu: line longer than %u bytes\n", path,
					lines + 1, LOAD_CHUNK);
				rc = -1;
				break;
			}
			end = nl ? (size_t)(nl - buf) + 1 : 0;
		}
		if (end) {
			if (first)
				table_reserve(t, buf, end,
					      st.st_size > 0 ? (uint64_t)st.st_size : end);
			first = false;
			if (parse_into(t, path, buf, end, &lines, err) < 0) {
				rc = -1;
				break;
			}
			memmove(buf, buf + end, have - end);
			have -= end;
		}
		if (eof)
			break;
	}
	free(buf);
	close(fd);
	return rc;
}

int rcpt_table_load(const char *paths, struct rcpt_table **out, FILE *err)
{
	/* recipient_table is at most 4095 characters, so no item of the list
	 * is cut: an empty name here is an empty item (", ,"), skipped. */
	char path[PATH_MAX];
	const char *list = paths;
	struct rcpt_table *t = table_new();
	if (!t) {
		fprintf(err, "mxring: %s: %s\n", paths, strerror(ENOMEM));
		return -1;
	}
	while (path_list_next(&list, path, sizeof(path))) {
		if (!path[0])
			continue;
		if (load_file(t, path, err) < 0) {
			rcpt_table_free(t);
			return -1;
		}
	}
	table_finish(t);
	*out = t;
	return 0;
}

/* --- lookups ------------------------------------------------------------- */

/* Whether the lower-cased key (n bytes, key[n] == NUL) is in the table. */
static bool probe(const struct rcpt_table *t, const char *key, size_t n)
{
	bool found;
	(void)index_find(t, key, n, hash_key(key, n), &found);
	return found;
}

/* Whether the n bytes at p equal word (lower case), ASCII case-insensitively. */
static bool word_ieq(const char *p, size_t n, const char *word)
{
	if (strlen(word) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower(p[i]) != word[i])
			return false;
	return true;
}

/*
 * Local parts Postfix never splits at a delimiter (its split_addr):
 * postmaster, MAILER-DAEMON and double-bounce whatever the delimiters, and,
 * when '-' is one of them, owner-* and *-request (mailing-list addresses).
 */
static bool unsplit(const char *local, size_t n, const char *delims)
{
	if (word_ieq(local, n, "postmaster") || word_ieq(local, n, "mailer-daemon") ||
	    word_ieq(local, n, "double-bounce"))
		return true;
	if (!strchr(delims, '-'))
		return false;
	return (n >= 6 && word_ieq(local, 6, "owner-")) ||
	       (n > 8 && word_ieq(local + n - 8, 8, "-request"));
}

bool rcpt_table_lookup(const struct rcpt_table *t, const char *mailbox, size_t len, size_t at,
		       const char *delims)
{
	char buf[PATH_MAX_OCTETS + 1];
	size_t dlen = len - at;

	ASSERT(at < len && mailbox[at] == '@');
	/* A NUL inside would let a key match a longer lookup. No key holds
	 * one, nor a domain longer than this. */
	if (dlen > PATH_MAX_OCTETS || memchr(mailbox, '\0', len))
		return false;
	if (len <= PATH_MAX_OCTETS) {
		lower_copy(buf, mailbox, len);
		buf[len] = '\0';
		if (probe(t, buf, len))
			return true;
	}
	if (delims && delims[0] && !unsplit(mailbox, at, delims)) {
		/* As Postfix's split_addr: a delimiter first in the local part
		 * does not split (the key would be "@domain", tried next). */
		uint64_t set[4] = {0, 0, 0, 0};
		for (size_t i = 0; delims[i]; i++) {
			unsigned char c = (unsigned char)delims[i];
			set[c >> 6] |= 1ull << (c & 63);
		}
		size_t cut = 0;
		for (; cut < at; cut++) {
			unsigned char c = (unsigned char)mailbox[cut];
			if ((set[c >> 6] >> (c & 63)) & 1)
				break;
		}
		if (cut > 0 && cut < at && cut + dlen <= PATH_MAX_OCTETS) {
			lower_copy(buf, mailbox, cut);
			lower_copy(buf + cut, mailbox + at, dlen);
			buf[cut + dlen] = '\0';
			if (probe(t, buf, cut + dlen))
				return true;
		}
	}
	lower_copy(buf, mailbox + at, dlen);
	buf[dlen] = '\0';
	return probe(t, buf, dlen);
}

size_t rcpt_table_entries(const struct rcpt_table *t)
{
	return t->entries;
}

size_t rcpt_table_bytes(const struct rcpt_table *t)
{
	return sizeof(*t) + t->arena_cap + (t->mask + 1) * (sizeof(*t->offs) + sizeof(*t->tags));
}

size_t rcpt_table_key_bytes(const struct rcpt_table *t)
{
	return t->arena_len - t->entries;
}

void rcpt_table_free(struct rcpt_table *t)
{
	if (!t)
		return;
	free(t->arena);
	free(t->offs);
	free(t->tags);
	free(t);
}
