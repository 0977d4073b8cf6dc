/*
 * fuzz_journal.c - the delivery journal's replay (journal_replay,
 * journal_index_load) and journal_open's recovery over files made from
 * the input.
 *
 * Input: byte 0 is the mode, the rest is a journal file. Its name is taken
 * from its FILE record (writer at offset 40 when below JOURNAL_WRITERS_MAX,
 * else 0; file sequence at 48 when not 0, else 1), so that real files keep
 * their own name.
 *   bit 0  fix the CRCs: walk the records by their rec_len and write the
 *          CRC each should have (seed 0 for the FILE record, the salt at
 *          offset 32 after it), so that mutations reach the field checks
 *   bit 1  also a copy as the writer's next file (its FILE record's
 *          sequence and CRC made to match), so that two files, and a
 *          compacted one superseding another, are read
 *   bit 2  also load the records into an index and check what it holds
 *   bit 3  also open the writer's journal (recovery: leftovers removed, a
 *          new file) and close it; the replay after must yield the same
 *          records
 * The files go into a scratch spool directory under $TMPDIR (or /tmp),
 * made once and emptied after each input.
 *
 * Checked for every record the replay yields: journal_rec_check passes,
 * and encoding it again with its file's seed gives back exactly the bytes
 * at its offset (so its CRC is valid and every field is within its bound);
 * seqs increase within a file. Every problem has a file, a text and a
 * known kind; the counts agree with what was yielded and reported. The
 * index: each message's pending count is its recipients without a final
 * state, each state known, and the message count what foreach visits.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fuzz.h"
#include "journal.h"
#include "log.h"

#define NAME_LEN 26
#define RECS_MAX 8192

static char base[512];

struct jfile {
	char name[NAME_LEN + 1];
	uint8_t *p; /* owned */
	size_t n;
	uint32_t seed;
};

static struct jfile files[2];
static unsigned nfiles;

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t crc_of(uint32_t seed, const uint8_t *p, size_t len)
{
	return crc32c(crc32c(seed, p, 12), p + 16, len - 16);
}

static uint32_t salt_seed(const uint8_t *p, size_t n)
{
	return n >= 40 ? crc32c(0, p + 32, 8) : 0;
}

static void fix_crcs(uint8_t *p, size_t n)
{
	uint32_t seed = 0;
	for (size_t off = 0; n - off >= JOURNAL_HDR_LEN;) {
		uint32_t len = get32(p + off + 8);
		if (len < JOURNAL_HDR_LEN || len > n - off)
			break;
		put32(p + off + 12, crc_of(seed, p + off, len));
		if (off == 0)
			seed = salt_seed(p, n);
		off += len;
	}
}

static void cleanup(void)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/journal", base);
	DIR *d = opendir(p);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	rmdir(p);
	snprintf(p, sizeof(p), "%s/ready", base);
	rmdir(p);
	snprintf(p, sizeof(p), "%s/active", base);
	rmdir(p);
	rmdir(base);
}

static void setup(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(base, sizeof(base), "%s/fuzz-journal-XXXXXX", t && *t ? t : "/tmp");
	FUZZ_CHECK(mkdtemp(base), "mkdtemp %s", base);
	static const char *const subs[] = {"journal", "ready", "active"};
	for (size_t i = 0; i < 3; i++) {
		char p[1024];
		snprintf(p, sizeof(p), "%s/%s", base, subs[i]);
		FUZZ_CHECK(mkdir(p, 0700) == 0, "mkdir %s", p);
	}
	log_enable(0);
	atexit(cleanup);
}

static void put_file(const struct jfile *f)
{
	char fp[1024];
	snprintf(fp, sizeof(fp), "%s/journal/%s", base, f->name);
	int fd = open(fp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0, "open %s", fp);
	FUZZ_CHECK(f->n == 0 || write(fd, f->p, f->n) == (ssize_t)f->n, "write %s", fp);
	close(fd);
}

/* What one replay gave back. */
struct got {
	struct journal_rec *rec; /* owned, RECS_MAX */
	uint64_t off[RECS_MAX];
	unsigned file[RECS_MAX];
	unsigned n;
	uint64_t errors, problems;
	uint64_t last_seq[2];
};

static int on_rec(void *ctx, const struct journal_rec *r, const struct journal_loc *loc)
{
	struct got *g = ctx;
	const char *why = journal_rec_check(r);
	FUZZ_CHECK(why == NULL, "yielded a record that fails its check: %s", why);
	FUZZ_CHECK(loc->file, "no file");
	unsigned k = 0;
	while (k < nfiles && strcmp(files[k].name, loc->file) != 0)
		k++;
	FUZZ_CHECK(k < nfiles, "a record from %s, which the input did not make", loc->file);
	const struct jfile *f = &files[k];
	uint8_t b[JOURNAL_REC_MAX];
	size_t len = journal_rec_encode(b, sizeof(b), r, f->seed);
	FUZZ_CHECK(len >= JOURNAL_SEGDONE_LEN && len <= JOURNAL_REC_MAX, "encoded length %zu", len);
	FUZZ_CHECK(loc->offset >= JOURNAL_FILE_REC_LEN && loc->offset <= f->n &&
		       len <= f->n - loc->offset,
		   "record at %llu of %zu bytes past the file's %zu",
		   (unsigned long long)loc->offset, len, f->n);
	FUZZ_CHECK(memcmp(b, f->p + loc->offset, len) == 0,
		   "record at %llu does not encode back to its bytes",
		   (unsigned long long)loc->offset);
	FUZZ_CHECK(r->seq > g->last_seq[k], "seq %llu after %llu", (unsigned long long)r->seq,
		   (unsigned long long)g->last_seq[k]);
	g->last_seq[k] = r->seq;
	if (g->n < RECS_MAX) {
		g->rec[g->n] = *r;
		g->off[g->n] = loc->offset;
		g->file[g->n] = k;
		g->n++;
	}
	return 0;
}

static void on_problem(void *ctx, const struct journal_problem *p)
{
	struct got *g = ctx;
	FUZZ_CHECK(p->file && p->text && strlen(p->text) < 1024, "problem without file or text");
	FUZZ_CHECK(p->kind >= JOURNAL_P_TORN && p->kind <= JOURNAL_P_IO, "problem kind %d",
		   (int)p->kind);
	FUZZ_CHECK(p->kind != JOURNAL_P_IO, "an I/O problem on a scratch file: %s", p->text);
	g->problems++;
	g->errors += p->error;
}

static void replay(struct got *g)
{
	memset(g->last_seq, 0, sizeof(g->last_seq));
	g->n = 0;
	g->errors = g->problems = 0;
	struct journal_replay_counts c;
	int rc = journal_replay(base, on_rec, on_problem, g, &c);
	FUZZ_CHECK(rc == 0, "journal_replay: %d", rc);
	FUZZ_CHECK(c.records == g->n || g->n == RECS_MAX, "counts.records %llu, yielded %u",
		   (unsigned long long)c.records, g->n);
	FUZZ_CHECK(c.errors == g->errors, "counts.errors %llu, reported %llu",
		   (unsigned long long)c.errors, (unsigned long long)g->errors);
}

static int check_msg(void *ctx, const struct journal_msg_state *m)
{
	uint64_t *count = ctx;
	FUZZ_CHECK(!m->segment_done && m->nrcpt >= 1 && m->nrcpt <= RCPT_LIMIT_MAX && m->rcpt,
		   "message with %u recipients", m->nrcpt);
	uint32_t pending = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct journal_rcpt *r = &m->rcpt[i];
		FUZZ_CHECK(r->state <= JOURNAL_EXPIRED, "state %u", r->state);
		FUZZ_CHECK((r->state == 0) == (r->time_us == 0), "state %u at time %llu", r->state,
			   (unsigned long long)r->time_us);
		pending += r->state == 0 || r->state == JOURNAL_DEFERRED;
	}
	FUZZ_CHECK(pending == m->pending, "pending %u, counted %u", m->pending, pending);
	(*count)++;
	return 0;
}

static int count_seg(void *ctx, const char *seg)
{
	FUZZ_CHECK(journal_seg_name(seg) == seg, "done segment '%s'", seg);
	(*(uint64_t *)ctx)++;
	return 0;
}

static void check_index(void)
{
	struct journal_index *ix;
	FUZZ_CHECK(journal_index_new(1u << 16, &ix) == 0, "journal_index_new");
	struct got g = {.rec = fuzz_alloc(RECS_MAX * sizeof(struct journal_rec))};
	int rc = journal_index_load(base, ix, on_problem, &g, NULL);
	FUZZ_CHECK(rc == 0 || rc == -ENOSPC, "journal_index_load: %d", rc);
	uint64_t msgs = 0, done = 0;
	FUZZ_CHECK(journal_index_foreach(ix, check_msg, &msgs) == 0, "foreach");
	FUZZ_CHECK(msgs == journal_index_msgs(ix), "visited %llu of %llu messages",
		   (unsigned long long)msgs, (unsigned long long)journal_index_msgs(ix));
	FUZZ_CHECK(journal_index_done_segments(ix, count_seg, &done) == 0, "done segments");
	free(g.rec);
	journal_index_free(ix);
}

/* journal_open's recovery keeps every record a replay reads. */
static void check_open(const struct got *before)
{
	unsigned writer = 0;
	sscanf(files[0].name, "j-w%2u-", &writer);
	struct journal *j;
	int rc = journal_open(base, writer, 0, &j);
	FUZZ_CHECK(rc == 0, "journal_open: %d", rc);
	FUZZ_CHECK(journal_close(j) == 0, "journal_close");
	struct got g = {.rec = fuzz_alloc(RECS_MAX * sizeof(struct journal_rec))};
	replay(&g);
	FUZZ_CHECK(g.n == before->n, "%u records after journal_open, %u before", g.n, before->n);
	for (unsigned i = 0; i < g.n; i++)
		FUZZ_CHECK(g.rec[i].seq == before->rec[i].seq && g.off[i] == before->off[i],
			   "record %u changed after journal_open", i);
	free(g.rec);
}

static void name_files(unsigned mode)
{
	struct jfile *f = &files[0];
	unsigned writer = 0;
	uint64_t seq = 1;
	if (f->n >= 56) {
		uint32_t w = get32(f->p + 40);
		uint64_t s = get64(f->p + 48);
		writer = w < JOURNAL_WRITERS_MAX ? w : 0;
		seq = s != 0 && s < UINT64_MAX ? s : 1;
	}
	snprintf(f->name, sizeof(f->name), "j-w%02u-%016llx.jrn", writer, (unsigned long long)seq);
	f->seed = salt_seed(f->p, f->n);
	nfiles = 1;
	if (!(mode & 2))
		return;
	struct jfile *c = &files[1];
	c->n = f->n;
	c->p = fuzz_alloc(c->n);
	memcpy(c->p, f->p, c->n);
	if (c->n >= JOURNAL_FILE_REC_LEN) {
		put64(c->p + 48, seq + 1);
		put32(c->p + 12, crc_of(0, c->p, JOURNAL_FILE_REC_LEN));
	}
	snprintf(c->name, sizeof(c->name), "j-w%02u-%016llx.jrn", writer,
		 (unsigned long long)seq + 1);
	c->seed = f->seed;
	nfiles = 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (!base[0])
		setup();
	unsigned mode = data[0];
	files[0].n = size - 1;
	files[0].p = fuzz_alloc(files[0].n);
	memcpy(files[0].p, data + 1, files[0].n);
	if (mode & 1)
		fix_crcs(files[0].p, files[0].n);
	name_files(mode);
	for (unsigned i = 0; i < nfiles; i++)
		put_file(&files[i]);

	struct got g = {.rec = fuzz_alloc(RECS_MAX * sizeof(struct journal_rec))};
	replay(&g);
	if (mode & 4)
		check_index();
	if (mode & 8)
		check_open(&g);
	free(g.rec);

	char p[1024];
	snprintf(p, sizeof(p), "%s/journal", base);
	DIR *d = opendir(p);
	FUZZ_CHECK(d, "opendir %s", p);
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	for (unsigned i = 0; i < nfiles; i++) {
		free(files[i].p);
		files[i].p = NULL;
	}
	return 0;
}
