/*
 * writer.h - writer threads: take msgs from the shards, store them, hand them back.
 *
 * Each writer owns one spool (segment files or maildir, see spool.h) and one
 * inbound ring per shard (shard -> writer) plus one outbound ring per shard
 * (writer -> shard). A writer sleeps on an eventfd when all its inbound rings
 * are empty; a shard wakes it only when a ring goes from empty to non-empty
 * (writer_kick). Group commit: the writer pops every msg waiting in all its
 * rings (bounded by the ring sizes), writes them all, calls one fdatasync if
 * any of them is a MSG_FINAL, then sets msg->result on each and pushes it to
 * the outbound ring of its shard, and writes the shard's eventfd once per
 * batch. Outbound rings have the same capacity as inbound ones, and a shard
 * never has more msgs out than that, so the return push cannot fail.
 *
 * Errors: a failed write or sync gives every FINAL of the batch result
 * -errno (-ENOSPC for a full disk); the spool cuts the segment back to the
 * last synced record, and the writer keeps serving.
 */
#ifndef MXRING_WRITER_H
#define MXRING_WRITER_H

#include <stdint.h>

#include "config.h"
#include "msg.h"
#include "spool.h"

struct writer_set;

/*
 * Opens the spool of each writer (recovering its segments first) and starts
 * cfg->writers threads serving nshards shards. On success *out is set and 0
 * is returned; else -errno and a message on stderr.
 */
int writers_start(const struct config *cfg, unsigned nshards, struct writer_set **out)
    __attribute__((warn_unused_result));

/*
 * Shard side. Queues m for writer m->writer. 0, or -EAGAIN when that ring is
 * full (the caller answers 451 4.3.0 for a FINAL, or keeps a PART for later).
 * Does not wake the writer: call writer_kick once per event-loop pass.
 */
int writer_submit(struct writer_set *ws, unsigned shard, struct msg *m)
    __attribute__((warn_unused_result));

/* Shard side: wakes every writer that shard queued to since its last kick and
 * that may be asleep. Cheap when nothing is pending. */
void writer_kick(struct writer_set *ws, unsigned shard);

/* Shard side: pops up to max returned msgs (results set). Returns the count. */
unsigned writer_reap(struct writer_set *ws, unsigned shard, struct msg **out, unsigned max);

/* Shard side: the eventfd the writers signal after pushing returns to shard. */
int writer_shard_eventfd(struct writer_set *ws, unsigned shard);

/*
 * Relay side: how far writer `writer`'s segment is durable (spool_position,
 * published after each sync and rotation). 0, or -ENOENT for a writer that
 * does not run (its segments are all whole).
 */
int writers_position(struct writer_set *ws, unsigned writer, struct spool_pos *out);

/* Relay side: efd is signalled each time writer `writer` publishes a new position. */
void writers_set_relay_wake(struct writer_set *ws, unsigned writer, int efd);

/* Capacity of one shard->writer ring (the most msgs a shard keeps out per writer). */
unsigned writer_ring_size(const struct writer_set *ws);

/* Stops the writers after they have drained every ring, joins them and frees
 * everything. The shards must have stopped submitting. */
void writers_stop(struct writer_set *ws);

/* Counters summed over writers: batches (fdatasync calls) and msgs stored;
 * and the gauge of msgs waiting in the shard->writer rings (any thread). */
struct writer_stats {
	uint64_t batches;
	uint64_t finals;
	uint64_t parts;
	uint64_t errors;
	uint64_t bytes;
	uint64_t queued;    /* msgs in the shard->writer rings now */
	uint64_t queue_cap; /* what those rings hold at most */
};
void writers_stats(struct writer_set *ws, struct writer_stats *out);

#endif
