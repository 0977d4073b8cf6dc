/*
 * spool.h - durable storage of accepted messages: the writer's interface,
 * and the on-disk formats, which the reader (spool_reader.h) reads back.
 *
 * One struct spool per writer thread; nothing inside locks. A process holds
 * <spool_dir>/wNN.lock (flock(2)) while it runs writer NN, in both formats
 * (config spool_format):
 *
 * SEGMENT (default). Per-writer append-only files:
 *   <spool_dir>/active/NAME     the segment writer NN is appending to
 *   <spool_dir>/ready/NAME      finished segments, never written again
 *   <spool_dir>/corrupt/NAME@OFF  bytes recovery cut from a segment when a
 *                               valid record followed the bad one (kept for
 *                               an operator; normally never created)
 * NAME is "wNN-SSSSSSSSSSSSSSSS-QQQQQQQQ.seg": NN the writer (2 decimal
 * digits), S the spool_open time in microseconds since the epoch (16 lower
 * case hex digits), Q the segment sequence number of that run (8 hex digits).
 * Names sort by writer, then run, then sequence. A reader processes one
 * writer's segments in name order, ready/ and active/ together, and joins
 * the records of one message by qid; parts never span runs.
 *
 * A segment is a sequence of records, no padding. All integers are
 * little-endian. Record header (SPOOL_REC_HDR_LEN = 64 bytes):
 *   off size
 *    0   4  magic      SPOOL_REC_MAGIC 0x5253584d (bytes "MXSR")
 *    4   1  type       1 = PART, 2 = FINAL, 3 = SEGMENT
 *    5   1  version    1
 *    6   2  flags      0 (reserved)
 *    8   4  hdr_len    64 (readers skip header bytes past the fields they know)
 *   12   4  rec_len    hdr_len + env_len + trace_len + body_len, <= SPOOL_REC_MAX
 *   16   4  crc        CRC-32C (crc32c.h) of the segment's salt (8 bytes),
 *                      then bytes [0,16) and [20,rec_len) of the record
 *   20   4  part       0, 1, ... index of this part within the message
 *   24  16  qid        ASCII, NUL-padded
 *   40   8  body_off   client body bytes stored by the earlier parts
 *   48   4  env_len    FINAL: length of the envelope; PART: 0
 *   52   4  trace_len  part 0: length of the Received: trace header; else 0
 *   56   8  body_len   client body bytes in this record
 * then env_len bytes of envelope, trace_len bytes of trace header, body_len
 * bytes of body.
 *
 * The first record of every segment, and only it, is a SEGMENT record:
 * part 0, qid all zero, body_off, env_len and trace_len 0, body_len 24, its
 * crc over bytes [0,16) and [20,88) alone (no salt); its 24 bytes: salt u64
 * (random), run_us u64, writer u32, sequence u32. The salt is what the crc of
 * every later record starts with (crc32c(crc32c(0, salt, 8), ...)), so a
 * well-formed record planted inside a message body cannot pass for a real
 * one when a reader looks for the next record after a damaged one.
 *
 * A message is its part records 0..n-2 (type PART) and one
 * FINAL with part n-1 (a one-part message is a lone FINAL with part 0). The
 * stored message is the trace header followed by the body bytes of parts
 * 0..n-1 in order. Envelope (FINAL only):
 *    0   8  time_us     MAIL FROM time, microseconds since the epoch
 *    8   8  msg_size    trace_len + body_size: what `mxring-spool cat` outputs
 *   16   8  body_size   client body bytes, all parts
 *   24   4  nparts      part + 1
 *   28   4  flags       ENV_* (msg.h)
 *   32   4  trace_len   of the trace header, which is in part 0
 *   36   4  nrcpt       >= 1
 *   40   2  client_port
 *   42   2  reserved    0
 *   44      strings, each a u16 length then that many bytes (no NUL, none
 *           inside): client_addr, helo, tls, myhostname, from, then nrcpt
 *           recipients. Lengths are bounded by the fields of struct envelope.
 *
 * Durability: a FINAL is acknowledged only after spool_sync returned 0 for
 * its batch (fdatasync of the segment). A record after the last synced one
 * may be torn by a crash; spool_open cuts such a tail (CRC and lengths
 * checked) before it moves the segment into ready/. Parts without a FINAL
 * (the transaction was aborted, failed or cut by a crash) are orphans:
 * never acknowledged, skipped by readers. A clean stop (spool_close) moves
 * the active segment into ready/; after a crash the next spool_open does.
 * A move into ready/ links the file there, fsyncs ready/, then unlinks it
 * from active/ and fsyncs active/, so it has a durable name at every
 * moment; a segment found under both names is one file, read once (as
 * ready/'s).
 *
 * MAILDIR. <spool_dir>/maildir/{tmp,new,cur}. Part 0 creates
 * tmp/QID.wNN (writer NN) and later parts append to it; the FINAL is
 * fdatasync'ed and renamed to new/SEC.MUSECQQID.HOST (SEC.USEC the MAIL FROM
 * time, HOST myhostname with '/' and ':' written as \057 and \072, cut to
 * 200 bytes); new/ is
 * fsync'ed once per batch. The file is CRLF text:
 *   Return-Path: <FROM>
 *   X-Mxring-Envelope: qid=Q time=US client=ADDR port=P helo=H tls=T
 *                      host=MYHOSTNAME flags=0xF rcpts=N trace=TRACELEN
 *   X-Mxring-Rcpt: <RCPT>            (N lines, in RCPT order)
 *   Received: ...                    (TRACELEN bytes)
 *   client body
 * (the envelope field is one line). In FROM and RCPT, bytes below 0x20, 0x7f
 * and '\' are written \xHH; in the values of X-Mxring-Envelope also space,
 * '=' and bytes >= 0x80. An ABORT unlinks the tmp file; spool_open removes
 * this writer's leftovers in tmp/.
 *
 * The trace header, written at the start of every stored body (RFC 5321
 * 4.4, protocol names RFC 3848):
 *   Received: from HELO ([ADDR]:PORT)\r\n
 *   \tby HOST (mxring) with PROTO id QID;\r\n\tDATE\r\n          (plaintext)
 *   \tby HOST (mxring) with PROTO id QID\r\n
 *   \t(using TLSv1.3 with cipher NAME); DATE\r\n                  (TLS)
 * PROTO is SMTP, ESMTP, ESMTPS, UTF8SMTP or UTF8SMTPS; DATE is RFC 5322
 * (UTC, +0000) from env->time_us; bytes of HELO and of the TLS text outside
 * printable ASCII are written as '?'.
 *
 * The code: spool.c (this interface: checks, the in-flight table, the write
 * buffer), segment.c and spoolrec.c (segments and their records), maildir.c,
 * trace.c (the trace header), spool_reader.c (reading a spool back).
 */
#ifndef MXRING_SPOOL_H
#define MXRING_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "msg.h"

#define SPOOL_REC_MAGIC	  0x5253584du
#define SPOOL_REC_VERSION 1
#define SPOOL_REC_PART	  1
#define SPOOL_REC_FINAL	  2
#define SPOOL_REC_SEGMENT 3
#define SPOOL_REC_HDR_LEN 64u
#define SPOOL_SEG_PAYLOAD 24u /* salt, run_us, writer, sequence */
#define SPOOL_SEG_REC_LEN (SPOOL_REC_HDR_LEN + SPOOL_SEG_PAYLOAD)
#define SPOOL_ENV_FIXED	  44u
#define SPOOL_REC_MAX	  (1u << 30) /* a bigger part fails with -EMSGSIZE */

struct spool;

/*
 * Creates dir and its parents (0750); an existing directory is fine. Each
 * directory it creates is fsynced into its parent: without that a power
 * cut may take a new spool directory away, and every message stored in it.
 * 0 or -errno.
 */
int spool_mkdir(const char *dir) __attribute__((warn_unused_result));

/*
 * Opens writer `writer`'s spool under cfg->spool_dir in cfg->spool_format,
 * creating the directories, and takes the writer's lock. Segment: recovers
 * the segments this writer left in active/, then creates a fresh active
 * segment. Maildir: removes this writer's files in tmp/. What writers
 * n >= cfg->writers left (fewer writers than before) is recovered by writer
 * n % cfg->writers under n's lock. batch_max bounds the msgs between two
 * spool_sync calls; inflight_max bounds the messages whose parts were
 * written and whose FINAL or ABORT has not come yet: past it, the one
 * written least recently is forgotten (logged; its later parts fail with
 * -ENOBUFS). cfg is only read during the call. 0 and *out, or -errno
 * (-EBUSY: another process holds this writer's lock) with a line on stderr.
 */
int spool_open(const struct config *cfg, unsigned writer, unsigned batch_max, unsigned inflight_max,
	       struct spool **out) __attribute__((warn_unused_result));

/*
 * Stores m (borrowed, together with m->env and the bytes its slices point
 * to, until the next spool_sync returns). Body bytes are handed to pwritev
 * from the slices, never copied. MSG_PART: written, not synced. MSG_FINAL:
 * written; durable after spool_sync. MSG_ABORT: forgets the message (maildir:
 * unlinks its tmp file); writes nothing. Returns 0, or -errno for this
 * message: the write failed, an earlier part of the message failed, the
 * batch already failed, -ENOBUFS when part 0 of a later part was refused
 * or forgotten (or past batch_max), -EMSGSIZE for a part over
 * SPOOL_REC_MAX, -EPROTO for parts out of order, -EINVAL for a malformed msg,
 * or the error of the repair an earlier failure left pending (spool_sync).
 * Once a part of a message failed, its later parts and FINAL fail with the
 * same error. At most batch_max calls between two spool_sync calls.
 */
int spool_write(struct spool *sp, const struct msg *m) __attribute__((warn_unused_result));

/*
 * Ends the batch: writes what is buffered, then (when a FINAL was written
 * since the last sync) one fdatasync (segment) / one fsync of new/
 * (maildir). Then, for segments past cfg->segment_size, rotates into ready/.
 * Returns 0, or -errno: every msg of the batch that spool_write accepted
 * (returned 0 for) has failed with that error, and so will the later parts
 * of those messages; the segment is cut back to its last synced record
 * (ftruncate, fdatasync) and the spool serves the next batch. Segment: when
 * that cut, or creating a segment, fails, spool_write tries it again once
 * per batch and fails every msg of the batch with its error until it
 * works; then appending goes on in the same segment (logged).
 */
int spool_sync(struct spool *sp) __attribute__((warn_unused_result));

/*
 * How far a segment writer's records are durable, for the relay: the
 * segment being appended to (writer, run_us, seq as in its name) and the
 * end of its last synced record. active false: no segment is open (a
 * rotation's create failed): segment seq and every earlier one is whole.
 * Maildir: valid false.
 */
struct spool_pos {
	bool valid;
	bool active;
	uint64_t run_us;
	uint32_t seq;
	uint64_t synced_off;
};
void spool_position(const struct spool *sp, struct spool_pos *out);

/* fdatasync calls (segment) or new/ fsyncs (maildir) that succeeded so far. */
uint64_t spool_syncs(const struct spool *sp);

/*
 * segment_max_age: a segment whose first record is that old moves into
 * ready/ at the next spool_sync, or, on a quiet spool, at spool_idle.
 * spool_idle_ms is how long an idle writer may sleep before calling
 * spool_idle (0: now), or -1 when no rotation is due (none pending, or the
 * segment is not durable to its end).
 */
int spool_idle_ms(const struct spool *sp);
void spool_idle(struct spool *sp);

/*
 * Syncs what was written, moves a non-empty active segment into ready/
 * (an empty one is removed), drops in-flight messages (maildir: unlinks
 * their tmp files) and frees sp. Returns 0 or the first -errno met; sp is
 * freed either way. NULL is a no-op.
 */
int spool_close(struct spool *sp);

#endif
