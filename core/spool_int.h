/*
 * spool_int.h - what the writer's files share: struct spool, the in-flight
 * table entry, the operations of a spool format, and the helpers of
 * spool.c that the formats call. Private to spool.c, segment.c and
 * maildir.c; nothing else includes it.
 *
 * spool.c is the front: argument checks, the in-flight table, the write
 * buffer, locks, and the choice of format, made once at spool_open by
 * setting sp->ops. Everything that differs between the formats goes
 * through sp->ops; nothing else asks which format a spool has.
 *
 * Invariants (the formats keep their own in their file headers):
 *  - iov[0..niov), wb_bytes in all, is what was queued for wb_fd at
 *    *wb_off since the last flush: metadata built in the arena, body bytes
 *    in the msgs' slices. A flush, written or failed, empties the iovecs
 *    and the arena;
 *  - ent[] holds nlive live entries (qid[0] != 0), each in map under its
 *    qid; the free ones are chained from free_head;
 *  - batch_n <= batch_max: spool_write refuses more before spool_sync.
 */
#ifndef MXRING_SPOOL_INT_H
#define MXRING_SPOOL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "config.h"
#include "msg.h"
#include "qidmap.h"
#include "segment.h"
#include "spool.h"

static_assert(WRITERS_MAX <= 100, "writer numbers are two digits in names");

/* A message whose parts were written and whose FINAL or ABORT has not come. */
struct inflight {
	uint64_t next_off;     /* client body bytes stored so far */
	uint64_t file_off;     /* maildir: bytes in the tmp file */
	uint64_t gen;	       /* sp->gen when its last record was queued */
	uint64_t touch;	       /* sp->touch when it was last written: eviction order */
	uint32_t next_part;    /* the part expected next */
	uint32_t trace_len;    /* of the trace header written with part 0 */
	uint32_t next_free;    /* free list link */
	int err;	       /* 0, or why the message failed */
	int fd;		       /* maildir: the tmp file (owned), else -1 */
	char qid[QID_LEN + 1]; /* "" when the entry is free */
};

/* A maildir FINAL renamed into new/ in this batch, until new/ is fsync'ed. */
struct md_done {
	uint64_t time_us;
	char qid[QID_LEN + 1];
};

struct spool;

/*
 * A spool format: what spool.c calls, through sp->ops, where the formats
 * differ. None is NULL. spool.c has made the spool directory, taken the
 * writer's lock and allocated the tables before open; it checks and books
 * each msg around write (see spool_write).
 */
struct spool_ops {
	/* Arena bytes one message of at most rcpt_max recipients may need. */
	size_t (*arena_cap)(uint32_t rcpt_max);
	/*
	 * Makes the format's directories under sp->dirfd and recovers what this
	 * writer, and writers past cfg->writers, left. 0 or -errno, *what
	 * naming the step for spool_open's error line.
	 */
	int (*open)(struct spool *sp, const char **what);
	/*
	 * Writes m, which spool.c admitted: not an ABORT, e its in-flight entry
	 * (NULL for a one-part message). 0 or the error m fails with; spool.c
	 * books the outcome for e.
	 */
	int (*write)(struct spool *sp, const struct msg *m, struct inflight *e);
	/* Ends the batch: spool_sync's contract. */
	int (*sync)(struct spool *sp);
	/* Syncs and puts the spool's files in their final places for spool_close. */
	int (*close)(struct spool *sp);
	/* spool_idle_ms and spool_idle. */
	int (*idle_ms)(const struct spool *sp);
	void (*idle)(struct spool *sp);
	/* Drops what the format holds for e outside the table (maildir: its tmp file). */
	void (*discard)(struct spool *sp, struct inflight *e);
};

struct spool {
	const struct spool_ops *ops; /* the format: segment_ops or maildir_ops */
	unsigned writer;
	unsigned nwriters;
	uint64_t segment_size;
	uint64_t max_age_ms; /* segment_max_age; 0 = rotate by size only */
	char dir[sizeof(((struct config *)0)->spool_dir)];
	char host[DOMAIN_MAX + 1];
	char host_enc[MAILDIR_HOST_MAX + 1]; /* host as a maildir name part, cut */
	int lockfd;
	int dirfd;
	int activefd, readyfd; /* segment */
	int tmpfd, newfd;      /* maildir */

	/* Segment being appended to. */
	int segfd;
	char segname[SEGMENT_NAME_LEN + 1];
	uint64_t run_us; /* spool_open time: the run part of segment names */
	uint32_t seq;
	uint32_t seed;	       /* CRC seed of the segment's records */
	uint64_t end_off;      /* end of the records queued so far */
	uint64_t first_ms;     /* monotonic ms of its first record (0: none yet) */
	uint64_t flushed_off;  /* end of what pwritev has taken */
	uint64_t synced_off;   /* end of what fdatasync has made durable */
	bool final_pending;    /* a FINAL was queued since the last sync */
	bool need_truncate;    /* cutting back after a failure failed: retry */
	int batch_err;	       /* first failed flush of this batch (segment: fails the rest) */
	int repair_err;	       /* seg_repair failed in this batch: not tried again in it */
	uint64_t repair_fails; /* batches seg_repair failed in since it last worked */

	unsigned batch_n, batch_max;
	uint64_t gen;	/* bumped at each successful sync and each failure */
	uint64_t touch; /* counts writes, for in-flight eviction */
	uint64_t syncs;

	/* Pending pwritev: iov[0..niov) of wb_bytes, to wb_fd at *wb_off. */
	struct iovec *iov; /* owned: SPOOL_IOV_MAX */
	unsigned niov;
	uint64_t wb_bytes;
	int wb_fd;
	uint64_t *wb_off; /* borrowed: &flushed_off (segment) or &e->file_off (maildir) */
	uint8_t *arena;	  /* owned: record headers, envelopes, traces */
	size_t arena_len, arena_cap;
	uint8_t *scratch; /* owned: SPOOL_SCRATCH_SIZE, recovery reads */

	struct qidmap map;    /* qid -> index in ent */
	struct inflight *ent; /* owned: ent_cap */
	uint32_t ent_cap, free_head, nlive;

	struct md_done *done; /* owned: batch_max */
	unsigned ndone;
};

/* Empties the write buffer without writing it (the arena too). */
void spool_wb_drop(struct spool *sp);

/*
 * Writes the buffer to wb_fd at *wb_off (which then moves past it) and
 * empties it, written or not. 0 or -errno; a failure also becomes
 * sp->batch_err when that is 0.
 */
int spool_wb_flush(struct spool *sp) __attribute__((warn_unused_result));

/* Queues len bytes at base (borrowed until the flush), flushing first when iov is full. */
int spool_wb_add(struct spool *sp, const void *base, size_t len)
    __attribute__((warn_unused_result));

/*
 * Room for need bytes of metadata in the arena, and for its iovec,
 * flushing first if needed: 0 and *p, where the caller builds them, or
 * -EMSGSIZE (need > arena_cap) or the flush's error. A flush empties the
 * arena: the one for a full iovec array must come here, before the
 * metadata is built, not in the spool_wb_add that queues it, which would
 * leave that metadata in arena space the next records are built in.
 */
int spool_wb_arena(struct spool *sp, size_t need, uint8_t **p) __attribute__((warn_unused_result));

/* A batch failed with err: every message with a record queued since the last sync failed. */
void spool_ent_fail_dirty(struct spool *sp, int err);

/*
 * Recovers what writers >= cfg->writers left in dirfd (the spool once had
 * more writers): writer n, named so by writer_of, is taken over by writer
 * n % cfg->writers, under n's lock, so a process still running writer n is
 * left alone. recover runs with sp->writer set to n. 0 or -errno.
 */
int spool_recover_strays(struct spool *sp, int dirfd,
			 bool (*writer_of)(const char *name, unsigned *n),
			 int (*recover)(struct spool *sp)) __attribute__((warn_unused_result));

#endif
