/*
 * gen_spool_seeds.c - writes the seeds of fuzz_spool (corpus/spool/) with
 * the real writer (spool_open, spool_write, spool_sync, spool_close), so
 * that the seeds are what a receiver leaves on disk.
 *
 * Usage: gen_spool_seeds OUTDIR. Writes, each with fuzz_spool's two leading
 * bytes (mode, sink failure):
 *   seg-*.bin   one segment holding a one-part message, a two-part message,
 *               an aborted one (an orphan part) and a TLS/UTF-8 one; as
 *               written (mode 0), CRC fixing on (mode 1), with a copy as
 *               the next segment (mode 4) and in a later run (mode 8)
 *   seg-cut.bin the same segment cut in the middle of a record (torn tail)
 *   md-*.bin    a maildir file (mode 2), and with a tmp/ leftover (mode 6)
 * A scratch spool is made under $TMPDIR (or /tmp) and removed.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "msg.h"
#include "spool.h"

static void die(const char *what, int e)
{
	fprintf(stderr, "gen_spool_seeds: %s: %s\n", what, strerror(e < 0 ? -e : e));
	exit(1);
}

static void env_init(struct envelope *env, char *rcpts, const char *qid, const char *tls,
		     const char *from, const char *const *to, unsigned nto)
{
	memset(env, 0, sizeof(*env));
	snprintf(env->qid, sizeof(env->qid), "%s", qid);
	env->time_us = 1700000000123456ull;
	snprintf(env->client_addr, sizeof(env->client_addr), "192.0.2.7");
	env->client_port = 40000;
	snprintf(env->helo, sizeof(env->helo), "client.example");
	snprintf(env->tls, sizeof(env->tls), "%s", tls);
	snprintf(env->myhostname, sizeof(env->myhostname), "mx.test");
	env->flags = ENV_ESMTP | (tls[0] ? ENV_SMTPUTF8 : 0);
	snprintf(env->from, sizeof(env->from), "%s", from);
	size_t used = 0;
	for (unsigned i = 0; i < nto; i++) {
		size_t n = strlen(to[i]) + 1;
		memcpy(rcpts + used, to[i], n);
		used += n;
	}
	env->nrcpt = nto;
	env->rcpts = rcpts;
	env->rcpts_len = (uint32_t)used;
	env->rcpts_cap = 1024;
}

static void put(struct spool *sp, const struct envelope *env, enum msg_kind kind, uint32_t part,
		uint64_t off, const char *body)
{
	struct slice sl = {.base = (const uint8_t *)body, .len = (uint32_t)strlen(body), .buf = 1};
	struct msg m = {
	    .kind = kind,
	    .part = part,
	    .env = env,
	    .slices = kind == MSG_ABORT ? NULL : &sl,
	    .nslices = kind == MSG_ABORT ? 0 : 1,
	    .slices_cap = 1,
	    .part_bytes = kind == MSG_ABORT ? 0 : sl.len,
	    .body_offset = off,
	};
	int r = spool_write(sp, &m);
	if (r < 0)
		die("spool_write", r);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

/* The first file of dir/sub, read whole. */
static uint8_t *first_file(const char *dir, const char *sub, size_t *len)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", dir, sub);
	DIR *d = opendir(p);
	if (!d)
		die(p, errno);
	struct dirent *e;
	while ((e = readdir(d)) && e->d_name[0] == '.')
		;
	if (!e)
		die("no file", ENOENT);
	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, e->d_name);
	closedir(d);
	FILE *f = fopen(p, "rb");
	if (!f)
		die(p, errno);
	uint8_t *b = malloc(1 << 20);
	*len = fread(b, 1, 1 << 20, f);
	fclose(f);
	return b;
}

static void seed(const char *out, const char *name, uint8_t mode, uint8_t fail_on, const uint8_t *p,
		 size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", out, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		die(path, errno);
	uint8_t hdr[2] = {mode, fail_on};
	fwrite(hdr, 1, 2, f);
	fwrite(p, 1, len, f);
	if (fclose(f) != 0)
		die(path, errno);
}

static void write_spool(const char *dir, enum spool_format fmt)
{
	struct config cfg;
	config_defaults(&cfg);
	snprintf(cfg.spool_dir, sizeof(cfg.spool_dir), "%s", dir);
	snprintf(cfg.myhostname, sizeof(cfg.myhostname), "mx.test");
	cfg.spool_format = fmt;
	struct spool *sp;
	int r = spool_open(&cfg, 0, 64, 64, &sp);
	if (r < 0)
		die("spool_open", r);
	static const char *const to1[] = {"postmaster@example.com"};
	static const char *const to2[] = {"a@example.com", "b@sub.example.org"};
	static const char *const to3[] = {"\xc3\xa9t\xc3\xa9@example.com"};
	char rc1[1024], rc2[1024], rc3[1024], rc4[1024];
	struct envelope e1, e2, e3, e4;
	env_init(&e1, rc1, "Q000000000000001", "", "sender@example.net", to1, 1);
	put(sp, &e1, MSG_FINAL, 0, 0, "Subject: one\r\n\r\nHello.\r\n");
	if (fmt == SPOOL_SEGMENT) {
		env_init(&e2, rc2, "Q000000000000002", "", "", to2, 2);
		static const char first[] = "Subject: two parts\r\n\r\nfirst ";
		put(sp, &e2, MSG_PART, 0, 0, first);
		env_init(&e3, rc3, "Q000000000000003", "", "x@example.net", to1, 1);
		put(sp, &e3, MSG_PART, 0, 0, "aborted\r\n");
		put(sp, &e2, MSG_FINAL, 1, sizeof(first) - 1, "second\r\n.\r\n");
		put(sp, &e3, MSG_ABORT, 1, 9, "");
		env_init(&e4, rc4, "Q000000000000004", "TLSv1.3 TLS_AES_128_GCM_SHA256",
			 "\xc3\xa9@example.net", to3, 1);
		put(sp, &e4, MSG_FINAL, 0, 0, "");
	}
	r = spool_sync(sp);
	if (r < 0)
		die("spool_sync", r);
	r = spool_close(sp);
	if (r < 0)
		die("spool_close", r);
	config_free(&cfg);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_spool_seeds OUTDIR\n");
		return 2;
	}
	const char *t = getenv("TMPDIR");
	char tmpl[4000], dir[4096];
	snprintf(tmpl, sizeof(tmpl), "%s/gen-spool-XXXXXX", t && *t ? t : "/tmp");
	snprintf(dir, sizeof(dir), "%s", tmpl);
	if (!mkdtemp(dir))
		die("mkdtemp", errno);

	size_t len;
	write_spool(dir, SPOOL_SEGMENT);
	uint8_t *seg = first_file(dir, "ready", &len);
	seed(argv[1], "seg-plain.bin", 0, 0, seg, len);
	seed(argv[1], "seg-fixcrc.bin", 1, 1, seg, len);
	seed(argv[1], "seg-next.bin", 4, 0, seg, len);
	seed(argv[1], "seg-runs.bin", 9, 0, seg, len);
	seed(argv[1], "seg-cut.bin", 0, 0, seg, len - 10);
	free(seg);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);

	snprintf(dir, sizeof(dir), "%s", tmpl);
	if (!mkdtemp(dir))
		die("mkdtemp", errno);
	write_spool(dir, SPOOL_MAILDIR);
	uint8_t *md = first_file(dir, "maildir/new", &len);
	seed(argv[1], "md-plain.bin", 2, 0, md, len);
	seed(argv[1], "md-tmp.bin", 6, 1, md, len);
	free(md);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
