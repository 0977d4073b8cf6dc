/*
 * journal.h - the delivery journal: durable per-recipient results of the
 * relay, beside the segments of the spool (spool.h), and the replay that
 * rebuilds them after a crash.
 *
 * Used by the relay, which is being built: a relay worker appends one
 * record per delivery outcome, makes a batch durable with one fdatasync
 * (journal_sync), and only then treats those outcomes as recorded. At
 * start, spool_reader over the segments plus journal_index_load over this
 * journal give the queue: every stored message whose recipients are not
 * all final.
 *
 * FILES. <spool_dir>/journal/ holds, per writer NN (a relay worker; one
 * process writes a writer's files, under the flock(2) of journal/wNN.lock):
 *   j-wNN-SSSSSSSSSSSSSSSS.jrn   NN the writer (2 decimal digits), S the
 *                                file sequence number (16 lower case hex)
 *   j-wNN-SSSSSSSSSSSSSSSS.tmp   a compaction under way (a leftover after
 *                                a crash: never read, removed by journal_open)
 * Names sort by writer, then sequence. A writer appends to one file, its
 * highest; every journal_open starts a new file (it never appends behind a
 * tail a crash may have torn), and a file past file_bytes_max (default
 * JOURNAL_FILE_BYTES) is left for a new one at the end of a journal_sync.
 *
 * A file is a sequence of records, no padding; all integers little-endian.
 * Record header (JOURNAL_HDR_LEN = 32 bytes):
 *   off size
 *    0   4  magic    JOURNAL_MAGIC 0x524a584d (bytes "MXJR")
 *    4   1  type     1 = FILE, 2 = RESULT, 3 = BOUNCE, 4 = SEGDONE
 *    5   1  version  1
 *    6   2  flags    RESULT: JOURNAL_F_REPLY_CUT 0x1, JOURNAL_F_RELAY_CUT 0x2;
 *                    others 0
 *    8   4  rec_len  the whole record, this header included: exactly what
 *                    its type says below, at most JOURNAL_REC_MAX
 *   12   4  crc      CRC-32C (crc32c.h) seeded with the file's seed, over
 *                    bytes [0,12) then [16,rec_len) of the record
 *   16   8  seq      FILE: 0; else the writer's record number, 1 to
 *                    2^60 - 1, strictly increasing within a file and from
 *                    one file of the writer to the next
 *   24   8  time_us  CLOCK_REALTIME microseconds, not 0: when the outcome
 *                    was known (FILE: when the file was made)
 *
 * FILE, the first record of every file and only there (rec_len 80); its
 * crc is seeded with 0, every later record's with CRC-32C of the salt (8
 * bytes), so a record copied or left over from another file never passes:
 *   32   8  salt      random
 *   40   4  writer    NN of the name, < JOURNAL_WRITERS_MAX
 *   44   4  fflags    JOURNAL_FILE_COMPACTED 0x1
 *   48   8  file_seq  S of the name, 1 to 2^60 - 1
 *   56   8  next_seq  every record the writer made before this file has a
 *                     lower seq; a plain file's records have seq >= it, a
 *                     compacted file's records (copies) seq < it
 *   64  16  reserved  0
 *
 * A message reference, at offset 32 of RESULT and BOUNCE (72 bytes):
 *   32  40  seg      the segment's name, "wNN-...-....seg" (SEGMENT_NAME_LEN
 *                    bytes, NUL-padded): the name without active/ or ready/,
 *                    since a segment moves from one to the other while its
 *                    messages are relayed
 *   72   8  seg_off  offset of the message's FINAL record in the segment
 *                    (spool_item.offset), >= SPOOL_SEG_REC_LEN
 *   80  16  qid      NUL-padded, valid as spoolrec_qid_valid says
 *   96   4  rcpt     the recipient's index in the envelope, < nrcpt
 *  100   4  nrcpt    the envelope's recipient count, 1..RCPT_LIMIT_MAX
 * A message is (seg, seg_off); qid and nrcpt must agree across its records.
 *
 * RESULT, one delivery outcome for one recipient (rec_len 144 + reply_len
 * + relay_len):
 *  104   1  outcome    1 delivered, 2 deferred, 3 failed (bounced), 4 expired
 *  105   3  reserved   0
 *  108   4  attempts   delivery attempts so far, this one included
 *                      (>= 1; expired: may be 0)
 *  112   8  next_us    deferred: when to try again (not 0); others: 0
 *  120  16  dsn        RFC 3463 status "C.S.D" (C 2, 4 or 5; S and D 1-3
 *                      digits), NUL-padded; class 2 for delivered, 4 for
 *                      deferred, 5 for failed, 4 or 5 for expired
 *  136   2  reply_len  <= JOURNAL_REPLY_MAX
 *  138   2  relay_len  <= JOURNAL_RELAY_MAX
 *  140   4  reserved   0
 *  144      reply_len bytes of the hub's reply (one line: multi-line replies
 *           joined, control bytes written as spaces, cut at the bound with
 *           JOURNAL_F_REPLY_CUT set), then relay_len bytes of the relay,
 *           "host[addr]:port" (JOURNAL_F_RELAY_CUT when cut). Neither holds
 *           a byte below 0x20 or 0x7f; bytes >= 0x80 (UTF-8) pass as they are.
 *
 * BOUNCE, the recipient owes its sender nothing more: the relay's DSN for
 * it was taken by the hub, refused for good, or could not be made
 * (rec_len 120):
 *  104  16  dsn_qid   what became of the DSN: "sent", "refused", "none"
 *                     (a qid-shaped word, NUL-padded)
 *
 * SEGDONE, every message of the segment is final and every DSN it owes is
 * handed on; the segment (in ready/: never appended to again) may be deleted
 * (rec_len 72):
 *   32  40  seg       as in the message reference
 *
 * MERGE. The state of a recipient is decided by one record of all those
 * read, whatever their order: a final outcome (delivered, failed, expired)
 * beats a deferral; of two finals the earlier (time_us, then outcome, then
 * attempts) wins; of two deferrals the one with more attempts (then the
 * later time_us, then the later next_us). A BOUNCE marks the recipient
 * bounced. A SEGDONE makes its segment done: its messages need nothing
 * more. So replaying the same records twice, or in another order (the
 * files of two writers), gives the same state: records are facts, and
 * writing one again is harmless.
 *
 * DURABILITY.
 *  - journal_append only buffers (at most JOURNAL_BUF_BYTES); journal_sync
 *    writes the buffer with one pwrite and makes it durable with one
 *    fdatasync (the group commit), and only then reports the records'
 *    seqs durable (journal_durable_seq). A new file is durable by name
 *    (the journal directory fsynced) before any record goes into it.
 *  - After a crash, a record written but not synced may be torn: replay
 *    stops a file at its first bad record and reports it. A torn tail (the
 *    file ends inside a record, its last record fails its CRC, or zeros fill
 *    its end, as a power cut leaves a file whose size grew before its data
 *    was written) is JOURNAL_P_TORN, information; damage with other bytes
 *    after it is JOURNAL_P_CORRUPT, an error. The records before it stand.
 *    A writer never appends to a file again after a crash or a failed
 *    sync, so a torn record can only be the last of its file. Records after
 *    a corrupt one (media damage, not a crash) are not read: outcomes they
 *    held are lost, which at worst sends a message again.
 *  - A failed write or sync fails every record of the batch (their seqs
 *    stay above journal_durable_seq; append again what still matters) and
 *    the writer goes on in a new file: after a failed fdatasync the kernel
 *    may have dropped the dirty pages and report the next fdatasync clean,
 *    so the file is not trusted again. What of the batch reached the disk
 *    anyway is true, and harmless when appended again (MERGE).
 *  - SEGDONE before the unlink: the relay writes SEGDONE, syncs, then
 *    deletes the segment (journal_delete_segment: both names, then their
 *    directories fsynced). After a crash anywhere in between, replay says
 *    the segment is done (journal_index_done_segments) and the deletion is
 *    completed; without the SEGDONE, the segment is still queued.
 *  - BOUNCE after the DSN is handed on: the relay (relay.h) does not store
 *    a DSN; it builds it from the stored message, relays it from <>, and
 *    appends BOUNCE once the hub answered it for good. After a crash
 *    before that record was synced, a failed recipient has no BOUNCE and
 *    the DSN is built and sent again: at least once, like messages.
 *
 * COMPACTION (journal_compact). A file of a writer's history keeps every
 * deferral; the journal must stay bounded by the queue. The writer seals
 * its file (starts a new one, so the older files never change again),
 * replays its own files, and writes into j-wNN-A.tmp (A the highest sealed
 * file) only the records that decide a state of a segment still on disk:
 * per recipient the deciding RESULT, per bounced recipient one BOUNCE, per
 * done segment its SEGDONE (a segment that is done carries no message
 * records). Records of segments no longer in active/ or ready/ are dropped
 * (their absence made durable first: both directories fsynced). Finished
 * messages of a live segment are kept: without them, a message already
 * delivered would be queued again. Each step is safe to crash after:
 *   1. seal: a new file for appends; files up to A never change again
 *   2. write the .tmp with a FILE record flagged COMPACTED, next_seq the
 *      writer's next seq; the copies keep their seq and time, in seq order;
 *      fdatasync it              crash: old files valid, .tmp ignored
 *   3. rename it over j-wNN-A.jrn  atomic: either the old A or the new one
 *   4. fsync journal/            the new A is durable
 *   5. unlink the writer's files below A, then fsync journal/
 * Replay reads a writer's files from its highest COMPACTED file up and
 * ignores the lower ones (JOURNAL_P_SUPERSEDED), so after a crash in step 5
 * nothing is counted twice; journal_open finishes the unlinks. What replay
 * skips in the writer's files (a corrupt rest, a bad file: logged) is not
 * copied, and goes with the old files.
 *
 * BOUNDS. A record is at most JOURNAL_REC_MAX bytes; a writer's buffer
 * JOURNAL_BUF_BYTES; replay considers at most JOURNAL_FILES_MAX files in
 * journal/ (-E2BIG past it); writers are 0..JOURNAL_WRITERS_MAX-1; file
 * and record sequence numbers stay below 2^60 (a name past it is no
 * journal file).
 *
 * MEMORY of the index (journal_index): per message with at least one
 * record, one allocation of 56 + 24 * nrcpt bytes, the allocator's header
 * (about 16) and a bucket pointer (8 to 16): about 100 bytes for a message
 * to one recipient, 240 KB at RCPT_LIMIT_MAX. About 80 bytes per segment
 * named. A done segment holds no messages; a message never tried takes
 * nothing. journal_compact builds the same index over the writer's own
 * files, for at most JOURNAL_INDEX_MSGS messages.
 *
 * NOT YET: the files of a writer no longer running (relay workers lowered)
 * are replayed at every start but compacted by no one; the relay should
 * compact them (or keep its worker count).
 */
#ifndef MXRING_JOURNAL_H
#define MXRING_JOURNAL_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"
#include "segment.h"

#define JOURNAL_MAGIC	       0x524a584du
#define JOURNAL_VERSION	       1
#define JOURNAL_REC_FILE       1
#define JOURNAL_REC_RESULT     2
#define JOURNAL_REC_BOUNCE     3
#define JOURNAL_REC_SEGDONE    4
#define JOURNAL_HDR_LEN	       32u
#define JOURNAL_FILE_REC_LEN   80u
#define JOURNAL_MSGREF_LEN     72u
#define JOURNAL_SEG_FIELD      40u
#define JOURNAL_DSN_FIELD      16u
#define JOURNAL_RESULT_FIXED   (JOURNAL_HDR_LEN + JOURNAL_MSGREF_LEN + 40u) /* 144 */
#define JOURNAL_BOUNCE_LEN     (JOURNAL_HDR_LEN + JOURNAL_MSGREF_LEN + 16u) /* 120 */
#define JOURNAL_SEGDONE_LEN    (JOURNAL_HDR_LEN + JOURNAL_SEG_FIELD)	    /* 72 */
#define JOURNAL_FILE_COMPACTED 0x1u
#define JOURNAL_F_REPLY_CUT    0x1u
#define JOURNAL_F_RELAY_CUT    0x2u

/* The hub's reply as kept: one reply of REPLY_MAX, a multi-line one cut. */
#define JOURNAL_REPLY_MAX 512u
/* "host[addr]:port" or "unix:/path": a domain, an address and a port, or a socket path. */
#define JOURNAL_RELAY_MAX 320u
#define JOURNAL_DSN_MAX	  9u /* "5.999.999" */
#define JOURNAL_REC_MAX	  (JOURNAL_RESULT_FIXED + JOURNAL_REPLY_MAX + JOURNAL_RELAY_MAX)
/* A writer's buffer: hundreds of records of any size between two syncs. */
#define JOURNAL_BUF_BYTES (256u << 10)
/* Files rotate past this (journal_open's file_bytes_max: 0 = this). */
#define JOURNAL_FILE_BYTES     (64ull << 20)
#define JOURNAL_FILE_BYTES_MIN (4u << 10) /* the smallest file_bytes_max (tests) */
#define JOURNAL_FILES_MAX      4096u	  /* files in journal/ a replay reads */
#define JOURNAL_WRITERS_MAX    64u	  /* wNN: relay workers */
#define JOURNAL_INDEX_MSGS     (1u << 24) /* messages journal_compact's index holds */
/* File and record sequence numbers stay below this: a crafted one cannot wrap the next. */
#define JOURNAL_SEQ_MAX (1ull << 60)

static_assert(JOURNAL_SEG_FIELD > SEGMENT_NAME_LEN, "a segment name fits, NUL-padded");
static_assert(JOURNAL_DSN_FIELD > JOURNAL_DSN_MAX, "a DSN status fits, NUL-padded");
static_assert(QID_LEN == 16, "the message reference holds a 16-byte qid");
static_assert(JOURNAL_REPLY_MAX >= REPLY_MAX, "a whole one-line reply is kept");
static_assert(JOURNAL_RELAY_MAX >= DOMAIN_MAX + CLIENT_ADDR_MAX + 8, "host[addr]:port fits");
static_assert(JOURNAL_REC_MAX <= UINT16_MAX, "lengths of a record fit u16 fields");
static_assert(JOURNAL_BUF_BYTES >= 64 * JOURNAL_REC_MAX, "a batch holds many records");
static_assert(JOURNAL_FILE_BYTES_MIN >= 2 * JOURNAL_REC_MAX, "a file holds a record");
static_assert(JOURNAL_WRITERS_MAX <= 100, "wNN: two decimal digits");
static_assert(RCPT_LIMIT_MAX < UINT32_MAX / 32, "recipient indexes fit u32 fields");

enum journal_outcome {
	JOURNAL_DELIVERED = 1, /* the hub took it (2xx) */
	JOURNAL_DEFERRED = 2,  /* 4xx, no connection, a timeout: tried again at next_us */
	JOURNAL_FAILED = 3,    /* 5xx or refused here (SIZE, SMTPUTF8): bounced */
	JOURNAL_EXPIRED = 4,   /* maximal_queue_lifetime passed: bounced */
};

/*
 * One record, decoded (replay) or to be encoded (journal_append). Text
 * fields are NUL-terminated; fields a type does not use are zero when
 * decoded and ignored when encoded.
 */
struct journal_rec {
	uint8_t type;	 /* JOURNAL_REC_RESULT, _BOUNCE, _SEGDONE */
	uint8_t outcome; /* RESULT: enum journal_outcome */
	uint16_t flags;	 /* RESULT: JOURNAL_F_* */
	uint64_t seq;	 /* set by journal_append; read back by replay */
	uint64_t time_us;
	char seg[SEGMENT_NAME_LEN + 1]; /* the segment's name, no directory */
	uint64_t seg_off;		/* RESULT, BOUNCE: the FINAL record's offset */
	char qid[QID_LEN + 1];
	uint32_t rcpt, nrcpt;
	uint32_t attempts;
	uint64_t next_us;
	char dsn[JOURNAL_DSN_MAX + 1];
	char dsn_qid[QID_LEN + 1]; /* BOUNCE */
	char reply[JOURNAL_REPLY_MAX + 1];
	char relay[JOURNAL_RELAY_MAX + 1];
};

/*
 * The segment name in a spool_reader file ("ready/NAME", "active/NAME") or
 * a bare NAME: a pointer into file, or NULL when it names no segment.
 */
const char *journal_seg_name(const char *file);

/*
 * Sets r->reply (r->relay) from text[0..len): one line, control bytes as
 * spaces, cut at JOURNAL_REPLY_MAX (JOURNAL_RELAY_MAX) bytes on a UTF-8
 * boundary with JOURNAL_F_REPLY_CUT (JOURNAL_F_RELAY_CUT) set in r->flags.
 */
void journal_rec_reply(struct journal_rec *r, const char *text, size_t len);
void journal_rec_relay(struct journal_rec *r, const char *text, size_t len);

/*
 * Whether r may be written as it is: NULL, or what is wrong with it
 * (a constant string). Replay yields only records that pass.
 */
const char *journal_rec_check(const struct journal_rec *r);

/*
 * Encodes r (which passes journal_rec_check) with its seq and time_us into
 * p (cap bytes), CRC seeded with seed: its length, or 0 when cap is short.
 * The one encoder of the writer, compaction, the tests and the fuzzer.
 */
size_t journal_rec_encode(uint8_t *p, size_t cap, const struct journal_rec *r, uint32_t seed);

/* ---- the writer ---- */

struct journal;

struct journal_counts {
	uint64_t appends;     /* records accepted by journal_append */
	uint64_t writes;      /* pwrite calls of journal_sync (one per batch) */
	uint64_t syncs;	      /* fdatasync calls of journal_sync that succeeded */
	uint64_t files;	      /* files this journal created (open, rotation, failure) */
	uint64_t compactions; /* journal_compact runs that finished */
	uint64_t bytes;	      /* size of the writer's files now */
};

/*
 * Opens writer `writer`'s journal under spool_dir/journal (made and fsynced
 * into spool_dir when missing) and takes journal/wNN.lock. Finishes what a
 * crash left of this writer's compaction (the .tmp, superseded files, a
 * last file torn before its FILE record was durable), finds the next seq
 * from its last file, and starts a new file. file_bytes_max: rotation
 * bound, 0 for JOURNAL_FILE_BYTES, else at least JOURNAL_FILE_BYTES_MIN.
 * 0 and *out, or -errno (-EBUSY: another process holds the writer; -EINVAL:
 * writer or bound out of range) with a line on stderr.
 */
int journal_open(const char *spool_dir, unsigned writer, uint64_t file_bytes_max,
		 struct journal **out) __attribute__((warn_unused_result));

/*
 * Buffers r (r->time_us 0: now), giving it the next seq (*seq and r->seq).
 * Not durable: only once journal_sync returned 0 and a durable seq >= *seq.
 * 0, -EINVAL (journal_rec_check says why), -ENOBUFS (the buffer is full:
 * journal_sync, then append again), or -EOVERFLOW (JOURNAL_SEQ_MAX seqs).
 */
int journal_append(struct journal *j, struct journal_rec *r, uint64_t *seq)
    __attribute__((warn_unused_result));

/*
 * Writes every buffered record (one pwrite) and fdatasyncs the file once;
 * then rotates a file past its bound. 0 and *durable_seq (may be NULL):
 * every record with seq <= it is durable. Nothing buffered: 0 at once, no
 * fdatasync. -errno: the buffered records are dropped and not durable
 * (their seqs stay above journal_durable_seq); the next batch goes into a
 * new file (when making it fails, so does that journal_sync).
 */
int journal_sync(struct journal *j, uint64_t *durable_seq) __attribute__((warn_unused_result));

/* The highest seq known durable (0: none yet in this run). */
uint64_t journal_durable_seq(const struct journal *j);

void journal_counts(const struct journal *j, struct journal_counts *out);

/*
 * Whether the writer's files are worth compacting: together at least two
 * files' worth (2 * file_bytes_max) and twice what the last compaction left.
 */
bool journal_compact_due(const struct journal *j);

/*
 * Compacts this writer's files (see COMPACTION above), syncing what is
 * buffered first. Blocks for the time it takes to read the writer's files
 * twice: call it between batches. 0 or -errno (a line on stderr; the old
 * files stay valid, and appending goes on).
 */
int journal_compact(struct journal *j) __attribute__((warn_unused_result));

/*
 * Tests only: journal_compact returns -ECANCELED right after step n (1 the
 * seal, 2 the .tmp durable, 3 the rename, 4 the fsync, 5 + k the unlink of
 * the k-th old file), leaving the files as a crash there would. 0: never.
 */
extern unsigned journal_test_compact_stop;

/* Syncs what is buffered, closes, unlocks, frees j. 0 or the first -errno. NULL: no-op. */
int journal_close(struct journal *j);

/*
 * Deletes segment seg (a name, no directory) from spool_dir's ready/ and
 * active/ and fsyncs them, so that its absence is durable: call it only
 * after a SEGDONE for it was synced. A segment already gone is fine.
 * 0 or -errno.
 */
int journal_delete_segment(const char *spool_dir, const char *seg)
    __attribute__((warn_unused_result));

/* ---- the replay ---- */

enum journal_problem_kind {
	JOURNAL_P_TORN = 1, /* info: a file ends inside a record (a crash mid-write) */
	JOURNAL_P_CORRUPT,  /* a bad record with bytes after it: the rest of the file is skipped */
	JOURNAL_P_BADFILE,  /* a journal file without a valid FILE record: skipped */
	JOURNAL_P_STRAY,    /* info: a name that is no journal file, or a .tmp leftover */
	JOURNAL_P_SUPERSEDED, /* info: a file below its writer's compacted file: skipped */
	JOURNAL_P_CONFLICT,   /* a record that disagrees with its message (qid, nrcpt): skipped */
	JOURNAL_P_IO,	      /* a read failed: the rest of the file is skipped */
};

struct journal_problem {
	enum journal_problem_kind kind;
	bool error;	  /* false: information only */
	const char *file; /* the name in journal/ */
	uint64_t offset;  /* in file; 0 for whole files */
	const char *text; /* what is wrong, human readable */
};

typedef void (*journal_problem_fn)(void *ctx, const struct journal_problem *p);

/* Where a record was read. */
struct journal_loc {
	const char *file; /* the name in journal/ */
	unsigned writer;
	uint64_t file_seq;
	uint64_t offset;
};

/* Gets each intact record; non-zero stops the replay and is returned. */
typedef int (*journal_rec_fn)(void *ctx, const struct journal_rec *r,
			      const struct journal_loc *loc);

struct journal_replay_counts {
	uint64_t files;			       /* files read */
	uint64_t records;		       /* records yielded */
	uint64_t errors;		       /* problems with error set */
	uint64_t max_seq[JOURNAL_WRITERS_MAX]; /* per writer: the highest seq read */
};

/*
 * Reads spool_dir/journal: each writer's files in sequence order (writer
 * 00 first), from its highest compacted file up, checking every record
 * (CRC, lengths, journal_rec_check), and hands each intact one to rec. A
 * file stops at its first bad record (problem). Changes nothing on disk; a
 * writer may be appending meanwhile (what it has not synced may show as a
 * torn tail), but not compacting: replay at start, before the writers. No journal/ directory: 0,
 * nothing read. 0, rec's non-zero value, or -errno (-E2BIG: over JOURNAL_FILES_MAX files, -ENOMEM,
 * the directory unreadable). counts may be NULL.
 */
int journal_replay(const char *spool_dir, journal_rec_fn rec, journal_problem_fn problem, void *ctx,
		   struct journal_replay_counts *counts) __attribute__((warn_unused_result));

/* ---- the index: the state the records add up to (see MERGE) ---- */

#define JOURNAL_RCPT_BOUNCED 0x1u /* the recipient's DSN was handed on (BOUNCE) */

struct journal_rcpt {
	uint64_t time_us;  /* of the deciding record (0: no result yet) */
	uint64_t next_us;  /* deferred: when to try again */
	uint32_t attempts; /* of the deciding record */
	uint8_t state;	   /* 0 (no result yet) or enum journal_outcome */
	uint8_t flags;	   /* JOURNAL_RCPT_BOUNCED; other bits internal */
	uint16_t reserved;
};

/* A message as the index knows it; borrowed from the index until it changes. */
struct journal_msg_state {
	const char *seg; /* the segment's name */
	uint64_t seg_off;
	char qid[QID_LEN + 1];
	bool segment_done;		 /* the segment is done: nothing below is kept */
	uint32_t nrcpt;			 /* 0 when segment_done */
	uint32_t pending;		 /* recipients without a final outcome */
	const struct journal_rcpt *rcpt; /* nrcpt entries, by recipient index */
};

struct journal_index;

/* An empty index of at most msgs_max messages (and as many segments). 0 or -ENOMEM. */
int journal_index_new(uint64_t msgs_max, struct journal_index **out)
    __attribute__((warn_unused_result));

/*
 * Adds one record (which passes journal_rec_check). 0; -EINVAL (why: its
 * qid or nrcpt disagrees with earlier records of the message; the record
 * is not used), -ENOSPC (msgs_max reached), -ENOMEM.
 */
int journal_index_add(struct journal_index *ix, const struct journal_rec *r)
    __attribute__((warn_unused_result));

/*
 * journal_replay into ix. Records that conflict are reported
 * (JOURNAL_P_CONFLICT) and skipped. 0 or -errno as journal_replay, or
 * -ENOSPC / -ENOMEM from journal_index_add.
 */
int journal_index_load(const char *spool_dir, struct journal_index *ix, journal_problem_fn problem,
		       void *ctx, struct journal_replay_counts *counts)
    __attribute__((warn_unused_result));

/*
 * What ix knows of message (seg, seg_off): true and *out, false when no
 * record named it (no outcome yet: every recipient pending). A message of a
 * done segment is found with segment_done set.
 */
bool journal_index_find(const struct journal_index *ix, const char *seg, uint64_t seg_off,
			struct journal_msg_state *out);

bool journal_index_segment_done(const struct journal_index *ix, const char *seg);

/*
 * Calls fn for each done segment (to delete: journal_delete_segment, then
 * journal_index_forget_segment), or for each message held, in no set order;
 * non-zero from fn stops and is returned. Do not change ix meanwhile.
 */
int journal_index_done_segments(const struct journal_index *ix,
				int (*fn)(void *ctx, const char *seg), void *ctx);
int journal_index_foreach(const struct journal_index *ix,
			  int (*fn)(void *ctx, const struct journal_msg_state *m), void *ctx);

/* Drops segment seg and its messages (it was deleted). */
void journal_index_forget_segment(struct journal_index *ix, const char *seg);

/* Messages held (done segments' not counted). */
uint64_t journal_index_msgs(const struct journal_index *ix);

/* Frees ix. NULL is a no-op. */
void journal_index_free(struct journal_index *ix);

#endif
