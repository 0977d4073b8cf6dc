/*
 * segment.c - the segment format of the spool (segment.h; the format in
 * spool.h, its records in spoolrec.c).
 *
 * Invariants:
 *  - body bytes go from the msg's slices to pwritev; nothing copies them.
 *    Record headers, envelopes and trace headers are built in the arena and
 *    written in the same pwritev as the bodies that follow them;
 *  - synced_off <= flushed_off <= end_off: everything before synced_off is
 *    durable, before flushed_off handed to the kernel, before end_off queued
 *    in the iovec array (seg_check_offsets, wherever one of them moves);
 *  - after a failed batch the segment is cut back to synced_off, and every
 *    message with a record past it is remembered as failed (the in-flight
 *    table) until its FINAL or ABORT;
 *  - a segment has a durable name at every moment: created and fsynced into
 *    active/ before its first record is acknowledged, linked into ready/
 *    and ready/ fsynced before its name in active/ goes (seg_link_ready).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "crc32c.h"
#include "fsutil.h"
#include "le.h"
#include "log.h"
#include "segment.h"
#include "spool_int.h"
#include "spoolrec.h"
#include "trace.h"

#define SEG_SEQ_TRIES 64 /* names tried when one already exists */

static uint64_t random_salt(void)
{
	uint64_t v;
	if (getrandom(&v, sizeof(v), 0) == (ssize_t)sizeof(v))
		return v;
	/* No getrandom: still differs per segment, which is what matters most. */
	return real_us() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&v;
}

/* The order of the segment offsets (file header); checked where they move. */
static void seg_check_offsets(const struct spool *sp)
{
	ASSERT(sp->synced_off <= sp->flushed_off && sp->flushed_off <= sp->end_off);
}

bool segment_name_parse(const char *name, unsigned *writer, uint64_t *run_us, uint32_t *seq)
{
	if (strlen(name) != SEGMENT_NAME_LEN || name[0] != 'w' || name[3] != '-' ||
	    name[20] != '-' || strcmp(name + 29, ".seg") != 0)
		return false;
	unsigned w = 0;
	uint64_t run = 0;
	uint32_t s = 0;
	for (int i = 1; i < 29; i++) {
		char c = name[i];
		if (i == 3 || i == 20)
			continue;
		if (i < 3) {
			if (c < '0' || c > '9')
				return false;
			w = w * 10 + (unsigned)(c - '0');
			continue;
		}
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		if (i < 20)
			run = run << 4 | d;
		else
			s = s << 4 | d;
	}
	*writer = w;
	*run_us = run;
	*seq = s;
	return true;
}

/* The writer a segment name belongs to. */
static bool seg_writer_of(const char *name, unsigned *n)
{
	uint64_t run;
	uint32_t seq;
	return segment_name_parse(name, n, &run, &seq);
}

/* The first record of a segment: its salt, seeding the CRC of every later record. */
static int seg_write_header(struct spool *sp, int fd)
{
	uint8_t b[SPOOL_SEG_REC_LEN];
	uint64_t salt = random_salt();
	struct spoolrec_hdr h = {
	    .type = SPOOL_REC_SEGMENT,
	    .rec_len = SPOOL_SEG_REC_LEN,
	    .body_len = SPOOL_SEG_PAYLOAD,
	};
	spoolrec_hdr_encode(b, &h);
	uint8_t *pl = b + SPOOL_REC_HDR_LEN;
	le_put64(pl, salt);
	le_put64(pl + 8, sp->run_us);
	le_put32(pl + 16, sp->writer);
	le_put32(pl + 20, sp->seq - 1);
	uint32_t c = spoolrec_crc_start(0, b, SPOOL_REC_HDR_LEN);
	le_put32(b + 16, crc32c(c, pl, SPOOL_SEG_PAYLOAD));
	struct iovec iov = {.iov_base = b, .iov_len = sizeof(b)};
	int r = fsutil_pwritev_all(fd, &iov, 1, 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	sp->seed = spoolrec_seed(salt);
	return r;
}

static int seg_create(struct spool *sp)
{
	int fd = -1;
	for (int i = 0; i < SEG_SEQ_TRIES && fd < 0; i++) {
		snprintf(sp->segname, sizeof(sp->segname), "w%02u-%016" PRIx64 "-%08" PRIx32 ".seg",
			 sp->writer, sp->run_us, sp->seq++);
		fd = openat(sp->activefd, sp->segname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			    0640);
		if (fd < 0 && errno != EEXIST)
			return -errno;
	}
	if (fd < 0)
		return -EEXIST;
	/* The name must be durable before any record in the file is acknowledged. */
	int r = seg_write_header(sp, fd);
	if (r == 0)
		r = fsutil_fsync(sp->activefd);
	if (r < 0) {
		close(fd);
		unlinkat(sp->activefd, sp->segname, 0);
		return r;
	}
	sp->segfd = fd;
	sp->first_ms = 0;
	sp->end_off = sp->flushed_off = sp->synced_off = SPOOL_SEG_REC_LEN;
	seg_check_offsets(sp);
	sp->wb_fd = fd;
	sp->wb_off = &sp->flushed_off;
	return 0;
}

/* Queues the record of m (see the format in spool.h). */
static int seg_queue(struct spool *sp, const struct msg *m, struct inflight *e)
{
	const struct envelope *env = m->env;
	bool first = m->part == 0;
	uint64_t env_len = 0;
	if (m->kind == MSG_FINAL) {
		env_len = spoolrec_env_size(env);
		if (env_len == 0)
			return -EINVAL;
	}
	if (SPOOL_REC_HDR_LEN + env_len + SPOOL_TRACE_MAX + m->part_bytes > SPOOL_REC_MAX)
		return -EMSGSIZE;

	uint8_t *p;
	size_t meta_max = SPOOL_REC_HDR_LEN + env_len + (first ? SPOOL_TRACE_MAX : 0);
	int r = spool_wb_arena(sp, meta_max, &p);
	if (r < 0)
		return r;
	uint32_t trace_len = 0;
	if (first) {
		trace_len = (uint32_t)trace_format((char *)p + SPOOL_REC_HDR_LEN + env_len,
						   SPOOL_TRACE_MAX, env, sp->host);
		if (trace_len == 0)
			return -EINVAL;
	}
	uint32_t msg_trace = first ? trace_len : e->trace_len;
	if (m->kind == MSG_FINAL)
		spoolrec_env_encode(p + SPOOL_REC_HDR_LEN, env, msg_total_bytes(m), m->part + 1,
				    msg_trace);

	struct spoolrec_hdr h = {
	    .type = m->kind == MSG_FINAL ? SPOOL_REC_FINAL : SPOOL_REC_PART,
	    .rec_len = (uint32_t)(SPOOL_REC_HDR_LEN + env_len + trace_len + m->part_bytes),
	    .crc = 0,
	    .part = m->part,
	    .body_off = m->body_offset,
	    .env_len = (uint32_t)env_len,
	    .trace_len = trace_len,
	    .body_len = m->part_bytes,
	};
	memcpy(h.qid, env->qid, sizeof(h.qid));
	spoolrec_hdr_encode(p, &h);
	size_t meta = SPOOL_REC_HDR_LEN + env_len + trace_len;
	uint32_t c = spoolrec_crc_start(sp->seed, p, SPOOL_REC_HDR_LEN);
	c = crc32c(c, p + SPOOL_REC_HDR_LEN, meta - SPOOL_REC_HDR_LEN);
	for (uint32_t i = 0; i < m->nslices; i++)
		c = crc32c(c, m->slices[i].base, m->slices[i].len);
	le_put32(p + 16, c);

	sp->arena_len += meta;
	if (e && first)
		e->trace_len = trace_len;
	sp->end_off += h.rec_len;
	/* spool_wb_arena made room: this spool_wb_add must not flush (and empty the arena). */
	ASSERT(sp->niov < SPOOL_IOV_MAX);
	r = spool_wb_add(sp, p, meta);
	for (uint32_t i = 0; r == 0 && i < m->nslices; i++)
		r = spool_wb_add(sp, m->slices[i].base, m->slices[i].len);
	seg_check_offsets(sp);
	return r;
}

/* Cuts the segment back to its last synced record. */
static int seg_truncate(struct spool *sp)
{
	if (ftruncate(sp->segfd, (off_t)sp->synced_off) < 0 || fdatasync(sp->segfd) < 0) {
		sp->need_truncate = true;
		return -errno;
	}
	sp->need_truncate = false;
	return 0;
}

/*
 * The batch failed in op (write, fdatasync): everything after synced_off is
 * cut. On Linux a failed fdatasync leaves the pages it could not write
 * marked clean, so a later one succeeds without them: those bytes are never
 * counted as stored. The cut (ftruncate, fdatasync) also takes them out of
 * the page cache, where a reader would otherwise see records that a reboot
 * loses, and has the block that holds synced_off written again (truncation
 * zeroes its tail). Appending goes on in the same segment once the cut is
 * durable (seg_repair).
 */
static void seg_fail(struct spool *sp, const char *op, int err)
{
	spool_wb_drop(sp);
	spool_ent_fail_dirty(sp, err);
	sp->final_pending = false;
	sp->batch_err = 0;
	sp->end_off = sp->flushed_off = sp->synced_off;
	seg_check_offsets(sp);
	int r = sp->segfd >= 0 ? seg_truncate(sp) : 0;
	if (r < 0)
		log_line("spool=%s writer=%u segment=%s op=%s error=\"%s\" cut_to=%" PRIu64
			 " cut=failed cut_error=\"%s\"",
			 sp->dir, sp->writer, sp->segname, op, strerror(-err), sp->synced_off,
			 strerror(-r));
	else
		log_line("spool=%s writer=%u segment=%s op=%s error=\"%s\" cut_to=%" PRIu64
			 " cut=done",
			 sp->dir, sp->writer, sp->segname, op, strerror(-err), sp->synced_off);
}

/*
 * Makes the segment writable again after a failure: the cut that did not
 * become durable, or a new segment when creating one failed. Tried at most
 * once per batch: a failing disk may take long to answer each try, and every
 * msg of the batch would fail alike. 0 when the spool may append.
 */
static int seg_repair(struct spool *sp)
{
	if (sp->repair_err)
		return sp->repair_err;
	bool cut = sp->need_truncate;
	int r = cut ? seg_truncate(sp) : 0;
	if (r == 0 && sp->segfd < 0)
		r = seg_create(sp);
	if (r < 0) {
		sp->repair_err = r;
		sp->repair_fails++;
		return r;
	}
	/* The disk works again: say so, and for how many batches it did not. */
	if (cut)
		log_line("spool=%s writer=%u segment=%s action=cut cut_to=%" PRIu64
			 " result=ok batches_failed=%" PRIu64,
			 sp->dir, sp->writer, sp->segname, sp->synced_off, sp->repair_fails);
	else
		log_line(
		    "spool=%s writer=%u segment=%s action=create result=ok batches_failed=%" PRIu64,
		    sp->dir, sp->writer, sp->segname, sp->repair_fails);
	sp->repair_fails = 0;
	return 0;
}

static int seg_write(struct spool *sp, const struct msg *m, struct inflight *e)
{
	int r = sp->batch_err;
	if (r == 0 && (sp->need_truncate || sp->segfd < 0))
		r = seg_repair(sp);
	if (r == 0)
		r = seg_queue(sp, m, e);
	if (r == 0 && sp->first_ms == 0)
		sp->first_ms = mono_ms();
	return r;
}

/* Whether the segment may move into ready/: durable to its end, as
 * recovery (which reads only active/) would find it. */
static bool seg_durable(const struct spool *sp)
{
	return sp->segfd >= 0 && !sp->need_truncate && sp->synced_off == sp->end_off;
}

/* Whether its first record is segment_max_age old. */
static bool seg_aged(const struct spool *sp, uint64_t now)
{
	return sp->max_age_ms && sp->first_ms && now - sp->first_ms >= sp->max_age_ms;
}

static bool seg_same_file(const struct spool *sp, const char *name)
{
	struct stat a, b;
	return fstatat(sp->activefd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	       fstatat(sp->readyfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/*
 * First half of moving segment name from active/ into ready/: a second
 * name in ready/ for the same file. The name in active/ may go only once
 * ready/ is synced (seg_unlink_active): a rename would take it out of
 * active/ at once, and where a file system does not commit both halves of
 * a rename together, an fsync of active/ by another writer before ours of
 * ready/ could leave the segment, acknowledged messages and all, under no
 * name after a power cut. Without hard links (vfat) it is a rename.
 */
static int seg_link_ready(struct spool *sp, const char *name)
{
	if (linkat(sp->activefd, name, sp->readyfd, name, 0) == 0)
		return 0;
	if (errno == EEXIST && seg_same_file(sp, name)) {
		/* Linked before a crash: the one file has both names already. */
		log_line("spool=%s writer=%u action=recover segment=%s second_name=found", sp->dir,
			 sp->writer, name);
		return 0;
	}
	if (errno == EPERM || errno == ENOSYS || errno == EOPNOTSUPP)
		return fsutil_rename_noreplace(sp->activefd, name, sp->readyfd, name);
	return -errno;
}

/* Second half: ready/ is synced with the segment in it; its name in active/ goes. */
static int seg_unlink_active(struct spool *sp, const char *name)
{
	if (!seg_same_file(sp, name))
		return 0; /* moved by a rename, or gone: nothing to take away */
	return unlinkat(sp->activefd, name, 0) < 0 ? -errno : 0;
}

/* Moves a finished, synced segment into ready/. */
static int seg_retire(struct spool *sp)
{
	int r = seg_link_ready(sp, sp->segname);
	if (r < 0)
		return r;
	r = fsutil_fsync(sp->readyfd);
	if (r == 0)
		r = seg_unlink_active(sp, sp->segname);
	/* A failed sync of ready/ leaves both names: recovery or a reader takes ready/'s. */
	int r2 = fsutil_fsync(sp->activefd);
	fsutil_close(&sp->segfd);
	return r < 0 ? r : r2;
}

static void seg_rotate(struct spool *sp)
{
	char old[SEGMENT_NAME_LEN + 1];
	memcpy(old, sp->segname, sizeof(old));
	int r = seg_retire(sp);
	if (r < 0 && sp->segfd >= 0) {
		/* Still in active/: append on; the next sync tries again. */
		log_line("spool=%s writer=%u action=rotate segment=%s error=\"%s\"", sp->dir,
			 sp->writer, old, strerror(-r));
		return;
	}
	if (r < 0)
		log_line("spool=%s writer=%u action=rotate segment=%s fsync_error=\"%s\"", sp->dir,
			 sp->writer, old, strerror(-r));
	r = seg_create(sp);
	if (r < 0) /* seg_repair tries again, once per batch */
		log_line("spool=%s writer=%u action=create error=\"%s\"", sp->dir, sp->writer,
			 strerror(-r));
}

static int seg_sync(struct spool *sp)
{
	const char *op = "write";
	sp->repair_err = 0; /* the batch ends: the next one may try to repair again */
	int r = sp->batch_err;
	if (r == 0)
		r = spool_wb_flush(sp);
	if (r == 0 && sp->final_pending) {
		op = "fdatasync";
		if (fdatasync(sp->segfd) < 0) {
			r = -errno;
		} else {
			sp->synced_off = sp->flushed_off;
			seg_check_offsets(sp);
			sp->final_pending = false;
			sp->syncs++;
			sp->gen++;
		}
	}
	if (r < 0) {
		seg_fail(sp, op, r);
		return r;
	}
	if (seg_durable(sp) && (sp->end_off >= sp->segment_size || seg_aged(sp, mono_ms())))
		seg_rotate(sp);
	return 0;
}

/* Copies bytes [off, size) of a segment into corrupt/NAME@OFF before they are cut. */
static int seg_quarantine(struct spool *sp, int fd, const char *name, uint64_t off, uint64_t size)
{
	char qname[SEGMENT_NAME_LEN + 32];
	snprintf(qname, sizeof(qname), "%s@%" PRIu64, name, off);
	int dfd = fsutil_open_subdir(sp->dirfd, "corrupt", true);
	if (dfd < 0)
		return dfd;
	int out = openat(dfd, qname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	int r = out < 0 ? -errno : 0;
	for (uint64_t pos = off; r == 0 && pos < size;) {
		size_t n =
		    size - pos < SPOOL_SCRATCH_SIZE ? (size_t)(size - pos) : SPOOL_SCRATCH_SIZE;
		r = fsutil_pread_all(fd, sp->scratch, n, pos);
		struct iovec iov = {.iov_base = sp->scratch, .iov_len = n};
		if (r == 0)
			r = fsutil_pwritev_all(out, &iov, 1, pos - off);
		pos += n;
	}
	if (r == 0 && fdatasync(out) < 0)
		r = -errno;
	if (r == 0)
		r = fsutil_fsync(dfd);
	if (r == 0) /* corrupt/ itself, made at its first use, before the segment is cut */
		r = fsutil_fsync(sp->dirfd);
	if (out >= 0)
		close(out);
	close(dfd);
	if (r == 0)
		log_line(
		    "spool=%s writer=%u action=recover segment=%s saved=corrupt/%s bytes=%" PRIu64,
		    sp->dir, sp->writer, name, qname, size - off);
	return r;
}

/* Checks one segment left in active/, cuts a bad tail, moves it into ready/. */
static int seg_recover_one(struct spool *sp, const char *name)
{
	int fd = openat(sp->activefd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	uint64_t size = r == 0 ? (uint64_t)st.st_size : 0, off = 0, nrec = 0;
	uint32_t seed = 0;
	if (r == 0 && size > 0) {
		r = spoolrec_seg_header(fd, size, sp->scratch, SPOOL_SCRATCH_SIZE, &seed);
		off = r == 0 ? SPOOL_SEG_REC_LEN : 0;
	}
	while (r == 0 && off < size) {
		struct spoolrec_hdr h;
		bool torn;
		r = spoolrec_check(fd, off, size, seed, &h, sp->scratch, SPOOL_SCRATCH_SIZE, &torn);
		if (r == 0 && h.type == SPOOL_REC_SEGMENT)
			r = -EBADMSG;
		if (r == 0) {
			off += h.rec_len;
			nrec++;
		}
	}
	if (r == -EBADMSG) {
		uint64_t next = 0;
		/* Without its header nothing in the file can be checked: keep it all aside. */
		if (off == 0)
			r = size > SPOOL_SEG_REC_LEN ? -E2BIG : -ENOENT;
		else
			r = spoolrec_resync(fd, off, size, seed, &next, sp->scratch,
					    SPOOL_SCRATCH_SIZE);
		if (r == 0 || r == -E2BIG) /* not a torn tail: valid records may follow */
			r = seg_quarantine(sp, fd, name, off, size);
		else if (r == -ENOENT)
			r = 0;
		if (r == 0 && ftruncate(fd, (off_t)off) < 0)
			r = -errno;
		if (r == 0)
			log_line("spool=%s writer=%u action=recover segment=%s records=%" PRIu64
				 " cut_at=%" PRIu64 " cut_bytes=%" PRIu64,
				 sp->dir, sp->writer, name, nrec, off, size - off);
	}
	/* What goes into ready/ must be durable as it is read now. */
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return r;
	if (nrec == 0)
		return unlinkat(sp->activefd, name, 0) < 0 ? -errno : 0;
	return seg_link_ready(sp, name); /* seg_recover takes the name in active/ away */
}

static bool keep_owned_seg(const char *name, void *arg)
{
	const struct spool *sp = arg;
	unsigned w;
	return seg_writer_of(name, &w) && w == sp->writer;
}

static int seg_recover(struct spool *sp)
{
	char **names;
	uint32_t n;
	int r = fsutil_dir_list(sp->activefd, keep_owned_seg, sp, &names, &n);
	if (r < 0)
		return r;
	for (uint32_t i = 0; r == 0 && i < n; i++) {
		r = seg_recover_one(sp, names[i]);
		if (r < 0)
			fprintf(stderr, "mxring: spool %s: recovering active/%s: %s\n", sp->dir,
				names[i], strerror(-r));
	}
	if (r == 0 && n > 0) {
		r = fsutil_fsync(sp->readyfd);
		for (uint32_t i = 0; r == 0 && i < n; i++)
			r = seg_unlink_active(sp, names[i]);
		if (r == 0)
			r = fsutil_fsync(sp->activefd);
		log_line("spool=%s writer=%u action=recover segments=%u", sp->dir, sp->writer, n);
	}
	fsutil_names_free(names, n);
	return r;
}

/* Syncs what is queued and moves the active segment into ready/ (or drops it if empty). */
static int seg_close(struct spool *sp)
{
	if (sp->segfd < 0)
		return 0;
	const char *op = "write";
	int r = sp->batch_err;
	if (r == 0)
		r = spool_wb_flush(sp);
	if (r == 0 && sp->end_off > sp->synced_off) {
		op = "fdatasync";
		if (fdatasync(sp->segfd) < 0)
			r = -errno;
		else
			sp->synced_off = sp->end_off; /* all flushed: flushed_off == end_off */
		seg_check_offsets(sp);
	}
	if (r < 0)
		seg_fail(sp, op, r);
	if (sp->need_truncate) {
		/* Unknown bytes past synced_off: leave it to recovery. No error of the
		 * close (nothing acknowledged is at stake), so spool_close says
		 * nothing of it: say it here. */
		log_line("spool=%s writer=%u segment=%s action=close cut=pending "
			 "result=left_in_active",
			 sp->dir, sp->writer, sp->segname);
		return r;
	}
	if (sp->synced_off <= SPOOL_SEG_REC_LEN) { /* no record: drop it */
		fsutil_close(&sp->segfd);
		if (unlinkat(sp->activefd, sp->segname, 0) < 0)
			return r < 0 ? r : -errno;
		int r2 = fsutil_fsync(sp->activefd);
		return r < 0 ? r : r2;
	}
	int r2 = seg_retire(sp);
	return r < 0 ? r : r2;
}

static int seg_open(struct spool *sp, const char **what)
{
	*what = "segment dirs";
	int r = sp->activefd = fsutil_open_subdir(sp->dirfd, "active", true);
	if (r >= 0)
		r = sp->readyfd = fsutil_open_subdir(sp->dirfd, "ready", true);
	if (r >= 0)
		r = fsutil_fsync(sp->dirfd);
	if (r < 0)
		return r;
	*what = "recover";
	r = seg_recover(sp);
	if (r == 0)
		r = spool_recover_strays(sp, sp->activefd, seg_writer_of, seg_recover);
	if (r < 0)
		return r;
	*what = "new segment";
	sp->run_us = real_us();
	return seg_create(sp);
}

static size_t seg_arena_cap(uint32_t rcpt_max)
{
	return SPOOL_REC_HDR_LEN + (size_t)SPOOL_ENV_MAX_FOR(rcpt_max) + SPOOL_TRACE_MAX +
	       SPOOL_ARENA_SLACK;
}

static int seg_idle_ms(const struct spool *sp)
{
	if (!sp->max_age_ms || !sp->first_ms || !seg_durable(sp))
		return -1;
	uint64_t now = mono_ms(), due = sp->first_ms + sp->max_age_ms;
	if (now >= due)
		return 0;
	return due - now > INT32_MAX ? INT32_MAX : (int)(due - now);
}

static void seg_idle(struct spool *sp)
{
	uint64_t now = mono_ms();
	if (!seg_durable(sp) || !seg_aged(sp, now))
		return;
	/* If the rotation fails the segment stays active: try again one age later. */
	sp->first_ms = now;
	seg_rotate(sp);
}

/* A segment keeps nothing for a message outside its records: those stay, as orphans. */
static void seg_discard(struct spool *sp, struct inflight *e)
{
	(void)sp;
	(void)e;
}

const struct spool_ops segment_ops = {
    .arena_cap = seg_arena_cap,
    .open = seg_open,
    .write = seg_write,
    .sync = seg_sync,
    .close = seg_close,
    .idle_ms = seg_idle_ms,
    .idle = seg_idle,
    .discard = seg_discard,
};
