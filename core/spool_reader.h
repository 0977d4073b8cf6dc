/*
 * spool_reader.h - reads a spool back: every stored message, in order, with
 * its envelope, and every problem found on the way.
 *
 * For mxring-spool, the tests and the fuzzers; the receiver itself never
 * reads its spool, and the mxring executable does not link this module
 * (libspoolread). It reads both formats of spool.h, segments (active/,
 * ready/) and maildir/, as they are on disk, changing nothing; a writer
 * may be at work in the same spool. Memory is bounded: parts of at most
 * SPOOL_READER_PENDING_MAX unfinished messages, SPOOL_READER_PARTS_MAX
 * parts each, and data is streamed through a SPOOL_SCRATCH_SIZE buffer.
 */
#ifndef MXRING_SPOOL_READER_H
#define MXRING_SPOOL_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

enum spool_problem_kind {
	SPOOL_P_ORPHAN = 1, /* info: parts with no FINAL (aborted, failed, crash) */
	SPOOL_P_CORRUPT,    /* bad magic, lengths or CRC inside a segment */
	SPOOL_P_TRUNCATED,  /* incomplete record at the end of a segment */
	SPOOL_P_INCOMPLETE, /* a FINAL whose parts are missing or do not add up */
	SPOOL_P_BADFILE,    /* a file that is not what its place says it is */
	SPOOL_P_STRAY,	    /* info: a file the reader does not know, or a corrupt/ file */
	SPOOL_P_IO,	    /* a read failed */
};

struct spool_problem {
	enum spool_problem_kind kind;
	bool error;	  /* false: information only (orphans, stray files) */
	const char *file; /* relative to the spool dir: "ready/w00-...seg" */
	uint64_t offset;  /* in file, where it applies; 0 for whole files */
	const char *text; /* what is wrong, human readable */
};

/* Called for each problem found, in file order. */
typedef void (*spool_problem_fn)(void *ctx, const struct spool_problem *p);

/* One stored message, as spool_reader_next yields it. */
struct spool_item {
	struct envelope env; /* env.rcpts: borrowed from the reader until the next call */
	uint64_t trace_len;  /* bytes of the Received: header at the start */
	uint64_t body_size;  /* client body bytes after it */
	uint32_t nparts;     /* records the message was stored in (maildir: 1) */
	const char *file;    /* relative: the FINAL's segment or the maildir file */
	uint64_t offset;     /* of the FINAL record (maildir: 0) */
};

struct spool_reader_counts {
	uint64_t files;	   /* segments or maildir files read */
	uint64_t records;  /* intact records (segment) */
	uint64_t messages; /* complete messages yielded */
	uint64_t orphans;  /* orphan parts (records) */
	uint64_t errors;   /* problems with error set */
};

struct spool_reader;

/*
 * Opens the spool at dir for reading: segments (active/, ready/) and/or
 * maildir/, whichever exist. problem (may be NULL) gets every problem.
 * 0 and *out, or -ENOENT (no dir), -ENOTDIR, -EMEDIUMTYPE (a directory
 * without active/, ready/ or maildir/), -ENOMEM, -errno.
 */
int spool_reader_open(const char *dir, spool_problem_fn problem, void *ctx,
		      struct spool_reader **out) __attribute__((warn_unused_result));

/*
 * Yields the next complete message: 1 and *out (valid until the next call),
 * 0 at the end, -errno on a failure that stops the reading (memory, the
 * directory unreadable). Problems along the way go to the callback and the
 * reading goes on.
 */
int spool_reader_next(struct spool_reader *r, const struct spool_item **out)
    __attribute__((warn_unused_result));

#define SPOOL_READ_TRACE 0x1u
#define SPOOL_READ_BODY	 0x2u

/* Receives stored bytes in order; non-zero stops the read and is returned. */
typedef int (*spool_sink_fn)(void *ctx, const uint8_t *p, size_t len);

/*
 * Streams the last yielded message to sink: its trace header
 * (SPOOL_READ_TRACE) and/or client body (SPOOL_READ_BODY), through a bounded
 * buffer. Returns 0, the sink's non-zero value, or -errno (-EIO / -EBADMSG
 * when the data changed since it was checked).
 */
int spool_reader_read(struct spool_reader *r, unsigned what, spool_sink_fn sink, void *ctx)
    __attribute__((warn_unused_result));

void spool_reader_counts(const struct spool_reader *r, struct spool_reader_counts *out);

/* Frees r. NULL is a no-op. */
void spool_reader_close(struct spool_reader *r);

#endif
