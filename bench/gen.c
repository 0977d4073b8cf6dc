/*
 * gen.c - message sizes, header blocks and the shared body template (gen.h).
 *
 * The template is built once: lines of 0 to 76 printable characters from a
 * fixed pseudo-random sequence, CRLF-terminated; lines 3, 14, 25, ... begin
 * with '.', lines 5, 34, ... are "." alone, lines 9, 52, ... are "..",
 * lines 8, 25, ... are empty, so even a 1 KB body needs dot-stuffing. For each line end i
 * the template keeps the offset in the raw form, the offset in the
 * dot-stuffed form, and the CRC-32 of the raw bytes before it, so a message
 * of any size costs a binary search, a CRC of its ~300 header bytes and one
 * CRC combination: no body byte is touched per message.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crc32.h"
#include "gen.h"

#define GEN_LINE_MAX 76u

/*
 * --size-dist mix: a realistic inbound mix for an MX (shares of messages;
 * sizes log-uniform within a row). Mean about 80 KB.
 */
static const struct mix_row {
	double share;
	uint32_t lo, hi;
	const char *what;
} mix[] = {
    {0.100, 1024, 2048, "short notifications, replies"},
    {0.550, 2048, 20480, "text and HTML mail"},
    {0.200, 20480, 51200, "newsletters, HTML with inline parts"},
    {0.120, 51200, 512000, "images, small attachments"},
    {0.025, 512000, 2097152, "documents"},
    {0.005, 2097152, BENCH_MIX_SIZE_MAX, "large attachments"},
};

static char mix_text[1024];

struct bench_gen {
	const struct bench_cfg *cfg; /* borrowed */
	char run_id[17];
	char date[64];
	uint8_t *raw;	       /* owned: the template as stored */
	uint8_t *stuffed;      /* owned: the template dot-stuffed */
	uint32_t nlines;       /* line ends: 0..nlines */
	uint64_t *raw_off;     /* owned: [nlines + 1] */
	uint64_t *stuffed_off; /* owned: [nlines + 1] */
	uint32_t *crc;	       /* owned: [nlines + 1], CRC of raw[0, raw_off[i]) */
	uint64_t size_max;
};

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static double unit(uint64_t x)
{
	return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

const char *gen_mix_description(void)
{
	if (mix_text[0])
		return mix_text;
	size_t n = 0;
	for (size_t i = 0; i < sizeof(mix) / sizeof(mix[0]) && n < sizeof(mix_text); i++)
		n += (size_t)snprintf(mix_text + n, sizeof(mix_text) - n,
				      "  %5.1f%%  %7.1f KB .. %7.1f KB  %s\n", mix[i].share * 100,
				      mix[i].lo / 1024.0, mix[i].hi / 1024.0, mix[i].what);
	return mix_text;
}

uint64_t gen_size(const struct bench_gen *g, uint64_t seq)
{
	if (!g->cfg->size_mix)
		return g->cfg->size;
	uint64_t h = splitmix64(seq);
	double u = unit(h), acc = 0;
	size_t i, rows = sizeof(mix) / sizeof(mix[0]);
	for (i = 0; i < rows - 1; i++) {
		acc += mix[i].share;
		if (u < acc)
			break;
	}
	double v = unit(splitmix64(h));
	double lo = mix[i].lo, hi = mix[i].hi;
	return (uint64_t)(lo * pow(hi / lo, v));
}

/* One template line (without CRLF) into p; its length. */
static size_t gen_line(uint32_t k, uint64_t *rng, uint8_t *p)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				       "0123456789 ,;:-+=/()'!?abcdefghijklmnoprstu     ";
	if (k % 29 == 5) {
		p[0] = '.';
		return 1;
	}
	if (k % 43 == 9) {
		p[0] = p[1] = '.';
		return 2;
	}
	if (k % 17 == 8)
		return 0;
	*rng = splitmix64(*rng);
	size_t len = 20 + (size_t)(*rng % (GEN_LINE_MAX - 19)), i = 0;
	if (k % 11 == 3)
		p[i++] = '.';
	for (; i < len; i++) {
		*rng = splitmix64(*rng);
		p[i] = (uint8_t)alphabet[*rng % (sizeof(alphabet) - 1)];
	}
	return len;
}

static int gen_alloc(struct bench_gen *g, uint64_t body_max)
{
	/* The shortest line is CRLF alone: bound the lines by 2 bytes each. */
	uint64_t lines_max = body_max / 2 + 2;
	g->raw = malloc(body_max + GEN_LINE_MAX + 2);
	g->stuffed = malloc(body_max + body_max / 20 + GEN_LINE_MAX + 4);
	g->raw_off = malloc((lines_max + 1) * sizeof(*g->raw_off));
	g->stuffed_off = malloc((lines_max + 1) * sizeof(*g->stuffed_off));
	g->crc = malloc((lines_max + 1) * sizeof(*g->crc));
	if (!g->raw || !g->stuffed || !g->raw_off || !g->stuffed_off || !g->crc)
		return -ENOMEM;
	return 0;
}

static int gen_template(struct bench_gen *g, uint64_t body_max)
{
	int rc = gen_alloc(g, body_max);
	if (rc)
		return rc;
	uint64_t rng = 0x6d78726e67626e63ull, r = 0, s = 0;
	uint32_t crc = 0, k = 0;
	g->raw_off[0] = g->stuffed_off[0] = 0;
	g->crc[0] = 0;
	while (r < body_max) {
		uint8_t *line = g->raw + r;
		size_t len = gen_line(k, &rng, line);
		line[len] = '\r';
		line[len + 1] = '\n';
		len += 2;
		crc = crc32_update(crc, line, len);
		if (line[0] == '.')
			g->stuffed[s++] = '.';
		memcpy(g->stuffed + s, line, len);
		r += len;
		s += len;
		k++;
		g->raw_off[k] = r;
		g->stuffed_off[k] = s;
		g->crc[k] = crc;
	}
	g->nlines = k;
	return 0;
}

int gen_new(const struct bench_cfg *cfg, const char *run_id, struct bench_gen **out, char *err,
	    size_t errcap)
{
	struct bench_gen *g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errcap, "out of memory");
		return -ENOMEM;
	}
	g->cfg = cfg;
	snprintf(g->run_id, sizeof(g->run_id), "%s", run_id);
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(g->date, sizeof(g->date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	g->size_max = cfg->size_mix ? BENCH_MIX_SIZE_MAX : cfg->size;
	int rc = gen_template(g, g->size_max);
	if (rc) {
		snprintf(err, errcap, "cannot allocate a %llu-byte body template: %s",
			 (unsigned long long)g->size_max, strerror(-rc));
		gen_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

void gen_free(struct bench_gen *g)
{
	if (!g)
		return;
	free(g->raw);
	free(g->stuffed);
	free(g->raw_off);
	free(g->stuffed_off);
	free(g->crc);
	free(g);
}

uint64_t gen_size_max(const struct bench_gen *g)
{
	return g->size_max + GEN_HDR_MAX;
}

/* The last line end at or below len. */
static uint32_t gen_cut(const struct bench_gen *g, uint64_t len)
{
	uint32_t lo = 0, hi = g->nlines;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;
		if (g->raw_off[mid] <= len)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

#define SUM_LINE_LEN (sizeof("X-Bench-Sum: 01234567\r\n") - 1)

int gen_message(const struct bench_gen *g, uint64_t seq, const char *from, const char *to,
		uint8_t *hdr, struct gen_msg *m)
{
	int n = snprintf((char *)hdr, GEN_HDR_MAX,
			 "X-Bench-Sum: 00000000\r\n"
			 "X-Bench-Seq: %s-%llu\r\n"
			 "Message-ID: <%s.%llu@mxring-bench>\r\n"
			 "Date: %s\r\n"
			 "From: <%s>\r\n"
			 "To: <%s>\r\n"
			 "Subject: mxring-bench %s message %llu\r\n"
			 "\r\n",
			 g->run_id, (unsigned long long)seq, g->run_id, (unsigned long long)seq,
			 g->date, from, to, g->run_id, (unsigned long long)seq);
	if (n < 0 || (size_t)n >= GEN_HDR_MAX)
		return -ENOSPC;
	uint64_t want = gen_size(g, seq);
	uint32_t lines = gen_cut(g, want > (uint64_t)n ? want - (uint64_t)n : 0);
	m->seq = seq;
	m->hdr_len = (size_t)n;
	m->body = g->raw;
	m->body_len = g->raw_off[lines];
	m->body_stuffed = g->stuffed;
	m->body_stuffed_len = g->stuffed_off[lines];
	m->size = m->hdr_len + m->body_len;
	uint32_t crc = crc32_update(0, hdr + SUM_LINE_LEN, m->hdr_len - SUM_LINE_LEN);
	m->sum = crc32_combine(crc, g->crc[lines], m->body_len);
	char sum[9];
	snprintf(sum, sizeof(sum), "%08x", m->sum);
	memcpy(hdr + sizeof("X-Bench-Sum: ") - 1, sum, 8);
	return 0;
}

int gen_expand(const char *pattern, uint64_t seq, unsigned rcpt, unsigned conn, char *out,
	       size_t cap)
{
	size_t n = 0;
	for (const char *p = pattern; *p; p++) {
		char num[24];
		const char *piece = num;
		size_t len;
		if (p[0] == '%' && p[1]) {
			p++;
			if (*p == 'n')
				snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
			else if (*p == 'r')
				snprintf(num, sizeof(num), "%u", rcpt);
			else if (*p == 'c')
				snprintf(num, sizeof(num), "%u", conn);
			else
				snprintf(num, sizeof(num), "%c", *p);
		} else {
			num[0] = *p;
			num[1] = 0;
		}
		len = strlen(piece);
		if (n + len >= cap)
			return -ENAMETOOLONG;
		memcpy(out + n, piece, len);
		n += len;
	}
	out[n] = 0;
	return (int)n;
}

int gen_pattern_check(const char *pattern, char *why, size_t cap)
{
	size_t len = strlen(pattern), grows = 0;
	if (len > BENCH_PATTERN_MAX) {
		snprintf(why, cap, "longer than %u characters", BENCH_PATTERN_MAX);
		return -EINVAL;
	}
	for (const char *p = pattern; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= ' ' || c >= 0x7f || c == '<' || c == '>') {
			snprintf(why, cap, "character 0x%02x is not allowed in an address", c);
			return -EINVAL;
		}
		if (c != '%')
			continue;
		if (p[1] != 'n' && p[1] != 'r' && p[1] != 'c' && p[1] != '%') {
			snprintf(why, cap, "unknown %%%c (use %%n, %%r, %%c or %%%%)",
				 p[1] ? p[1] : ' ');
			return -EINVAL;
		}
		p++;
		grows += 20;
	}
	if (len + grows >= BENCH_ADDR_MAX) {
		snprintf(why, cap, "may expand beyond %u characters", BENCH_ADDR_MAX - 1);
		return -EINVAL;
	}
	if (!strchr(pattern, '@')) {
		snprintf(why, cap, "has no '@'");
		return -EINVAL;
	}
	return 0;
}
