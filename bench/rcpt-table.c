/*
 * rcpt-table.c - what a recipient table (core/rcpt_table.c) costs: load
 * time, memory, and lookups per second on one thread.
 *
 *   rcpt-table --entries N [--lookups M] [--key-len L] [--seed S]
 *
 * Writes N distinct addresses "firstname.lastnameI@domainK.example" (names
 * and domain drawn from I by a hash; with --key-len the local part is
 * padded so that every key is L octets) to a temporary file in $TMPDIR
 * (default /tmp) in Postfix's format with a value ("KEY OK"), loads it with
 * rcpt_table_load, and deletes it. The file has just been written, so the
 * load reads it from the page cache: the figures are parsing and building,
 * not the disk. Then M lookups (default 2000000), each of a listed address
 * or (odds 1/2) of one that is not (I >= N), prepared beforehand and read
 * in order, some in upper case, with "+" as the delimiter: a miss costs
 * two probes (the address, then "@domain").
 *
 * Prints one key=value line:
 *   load_wall_s, load_cpu_s   rcpt_table_load, wall clock and process CPU
 *   table_bytes               rcpt_table_bytes
 *   key_bytes                 rcpt_table_key_bytes (the keys' own octets)
 *   beyond_key_per_entry      (table_bytes - key_bytes) / entries
 *   rss_growth_bytes          resident set after the load minus before it
 *   lookups_per_s, ns_per_lookup
 *   hits                      about M / 2; checked against the listed ones
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bounds.h"
#include "rcpt_table.h"

#define ENTRIES_MAX 200000000ul /* 200 M: about 8 GB of file */
#define LOOKUPS_MAX 500000000ul
#define KEY_LEN_MAX 200u /* with the domain, well under PATH_MAX_OCTETS */
#define ADDR_MAX    (KEY_LEN_MAX + 64)

static const char *const first_names[] = {
    "james", "mary",  "robert", "patricia", "john",    "jennifer", "michael", "linda",
    "david", "sarah", "thomas", "karen",    "daniel",  "nancy",	   "matthew", "lisa",
    "anna",  "mark",  "paul",	"sandra",   "kenneth", "donna",	   "steven",  "emily",
    "bruno", "chloe", "ingrid", "olga",	    "yusuf",   "mei",	   "ravi",    "zoe",
};
static const char *const last_names[] = {
    "smith",  "johnson",  "williams", "brown",	"jones",    "garcia",	"miller",  "davis",
    "wilson", "anderson", "taylor",   "thomas", "moore",    "martin",	"jackson", "white",
    "lopez",  "lee",	  "harris",   "clark",	"lewis",    "walker",	"hall",	   "young",
    "muller", "schmidt",  "rossi",    "dubois", "nakamura", "kowalski", "silva",   "novak",
};

#define NFIRST (sizeof(first_names) / sizeof(first_names[0]))
#define NLAST  (sizeof(last_names) / sizeof(last_names[0]))

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static double now_s(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_bytes(void)
{
	long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * sysconf(_SC_PAGESIZE);
}

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "rcpt-table: %s\n", what);
	exit(1);
}

/*
 * Address number i into buf (ADDR_MAX bytes); *at gets the index of '@'.
 * Distinct for distinct i (i is in the local part). With key_len, the
 * local part is padded with 'x' to make the address key_len octets.
 */
static size_t gen_addr(char *buf, uint64_t i, uint64_t seed, size_t domains, unsigned key_len,
		       size_t *at)
{
	uint64_t h = mix64(i ^ seed);
	int n = snprintf(buf, ADDR_MAX, "%s.%s%llu", first_names[h % NFIRST],
			 last_names[(h >> 8) % NLAST], (unsigned long long)i);
	char dom[64];
	int dn = snprintf(dom, sizeof(dom), "@domain%llu.example",
			  (unsigned long long)((h >> 16) % domains));
	if (n < 0 || dn < 0)
		die("snprintf");
	size_t local = (size_t)n;
	if (key_len && local + (size_t)dn < key_len) {
		memset(buf + local, 'x', key_len - (size_t)dn - local);
		local = key_len - (size_t)dn;
	}
	memcpy(buf + local, dom, (size_t)dn);
	*at = local;
	return local + (size_t)dn;
}

static unsigned long arg_num(const char *s, unsigned long max, const char *name)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max) {
		fprintf(stderr, "rcpt-table: bad %s '%s' (at most %lu)\n", name, s, max);
		exit(2);
	}
	return v;
}

/* Writes the table file; returns its size. */
static size_t write_table(const char *path, int fd, unsigned long entries, uint64_t seed,
			  size_t domains, unsigned key_len)
{
	FILE *f = fdopen(fd, "w");
	if (!f)
		die("fdopen");
	static char iobuf[1 << 20];
	setvbuf(f, iobuf, _IOFBF, sizeof(iobuf));
	char addr[ADDR_MAX];
	size_t at, bytes = 0;
	for (unsigned long i = 0; i < entries; i++) {
		size_t n = gen_addr(addr, i, seed, domains, key_len, &at);
		memcpy(addr + n, " OK\n", 4);
		if (fwrite(addr, 1, n + 4, f) != n + 4) {
			unlink(path);
			die(path);
		}
		bytes += n + 4;
	}
	if (fclose(f) != 0) {
		unlink(path);
		die(path);
	}
	return bytes;
}

struct probe {
	uint32_t off, len, at;
};

int main(int argc, char **argv)
{
	unsigned long entries = 0, lookups = 2000000, seed = 1;
	unsigned key_len = 0;
	for (int i = 1; i < argc; i += 2) {
		if (i + 1 >= argc)
			die("usage: rcpt-table --entries N [--lookups M] [--key-len L] [--seed S]");
		if (!strcmp(argv[i], "--entries"))
			entries = arg_num(argv[i + 1], ENTRIES_MAX, "--entries");
		else if (!strcmp(argv[i], "--lookups"))
			lookups = arg_num(argv[i + 1], LOOKUPS_MAX, "--lookups");
		else if (!strcmp(argv[i], "--key-len"))
			key_len = (unsigned)arg_num(argv[i + 1], KEY_LEN_MAX, "--key-len");
		else if (!strcmp(argv[i], "--seed"))
			seed = arg_num(argv[i + 1], ~0ul, "--seed");
		else
			die("usage: rcpt-table --entries N [--lookups M] [--key-len L] [--seed S]");
	}
	if (entries == 0)
		die("usage: rcpt-table --entries N [--lookups M] [--key-len L] [--seed S]");
	/* About a thousand users per domain, as a hosting provider's table. */
	size_t domains = entries / 1000 + 1;

	const char *tmp = getenv("TMPDIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/rcpt-table-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		die("mkstemp");
	double t0 = now_s(CLOCK_MONOTONIC);
	size_t file_bytes = write_table(path, fd, entries, seed, domains, key_len);
	double write_s = now_s(CLOCK_MONOTONIC) - t0;

	long rss0 = rss_bytes();
	struct rcpt_table *t = NULL;
	double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	int r = rcpt_table_load(path, &t, stderr);
	double load_wall = now_s(CLOCK_MONOTONIC) - w0;
	double load_cpu = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
	long rss1 = rss_bytes();
	unlink(path);
	if (r != 0)
		die("load failed");
	if (rcpt_table_entries(t) != entries)
		die("entries differ from what was written");

	/* Lookups, prepared: each listed (i < entries) or not with odds 1/2,
	 * laid out in the order they are made, so that the loop reads them
	 * sequentially and only the table is accessed at random. */
	size_t cap = (size_t)lookups * (ADDR_MAX / 4) + ADDR_MAX, used = 0;
	char *text = malloc(cap);
	struct probe *p = malloc((size_t)lookups * sizeof(*p));
	if (!text || (!p && lookups))
		die("out of memory for the lookups");
	uint64_t x = mix64(seed + 12345);
	unsigned long listed = 0;
	for (unsigned long k = 0; k < lookups; k++) {
		x = mix64(x + k);
		bool hit = x & 1;
		uint64_t i = hit ? (x >> 1) % entries : entries + (x >> 1) % entries;
		size_t at;
		if (used > UINT32_MAX - ADDR_MAX)
			die("too many lookups for 32-bit offsets");
		if (used + ADDR_MAX > cap) {
			cap *= 2;
			text = realloc(text, cap);
			if (!text)
				die("out of memory for the lookups");
		}
		size_t n = gen_addr(text + used, i, seed, domains, key_len, &at);
		if (x >> 63) /* some arrive in upper case */
			text[used] = (char)(text[used] - 32);
		p[k] = (struct probe){(uint32_t)used, (uint32_t)n, (uint32_t)at};
		used += n;
		listed += hit;
	}
	unsigned long hits = 0;
	double l0 = now_s(CLOCK_MONOTONIC);
	for (unsigned long k = 0; k < lookups; k++)
		hits += rcpt_table_lookup(t, text + p[k].off, p[k].len, p[k].at, "+");
	double lookup_s = now_s(CLOCK_MONOTONIC) - l0;
	if (hits != listed)
		die("hits differ from the listed addresses looked up");

	size_t bytes = rcpt_table_bytes(t), key_bytes = rcpt_table_key_bytes(t);
	printf("entries=%lu file_bytes=%zu write_s=%.3f load_wall_s=%.3f load_cpu_s=%.3f "
	       "load_entries_per_s=%.0f table_bytes=%zu key_bytes=%zu avg_key_len=%.1f "
	       "beyond_key_per_entry=%.2f table_per_entry=%.2f rss_growth_bytes=%ld "
	       "rss_per_entry=%.2f lookups=%lu lookups_per_s=%.0f ns_per_lookup=%.1f hits=%lu\n",
	       entries, file_bytes, write_s, load_wall, load_cpu, (double)entries / load_wall,
	       bytes, key_bytes, (double)key_bytes / (double)entries,
	       (double)(bytes - key_bytes) / (double)entries, (double)bytes / (double)entries,
	       rss1 - rss0, (double)(rss1 - rss0) / (double)entries, lookups,
	       lookup_s > 0 ? (double)lookups / lookup_s : 0.0,
	       lookups ? lookup_s * 1e9 / (double)lookups : 0.0, hits);
	rcpt_table_free(t);
	free(text);
	free(p);
	return 0;
}
