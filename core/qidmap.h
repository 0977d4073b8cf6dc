/*
 * qidmap.h - a map from queue id to a 32-bit index: open addressing,
 * linear probing, backward-shift delete.
 *
 * The writer's in-flight table (spool.c) and the reader's pending parts
 * (spool_reader.c) find their entries by qid with it. Invariant: the map is
 * never more than half full (qidmap_put refuses past that), so every probe
 * meets an empty slot and no loop goes round the table. A qid is compared
 * on its first QID_LEN bytes; "" is not a key (qid[0] == 0 marks an empty
 * slot). Not thread-safe; allocates only in qidmap_init and qidmap_grow.
 */
#ifndef MXRING_QIDMAP_H
#define MXRING_QIDMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "bounds.h"

struct qidmap_slot {
	char qid[QID_LEN]; /* NUL-padded; qid[0] == 0: empty */
	uint32_t val;
};

struct qidmap {
	struct qidmap_slot *slot; /* owned: mask + 1 entries */
	uint32_t mask;
	uint32_t count; /* entries held */
};

/* Room for max entries (at least 16 slots, twice max). 0 or -ENOMEM. */
int qidmap_init(struct qidmap *m, uint32_t max) __attribute__((warn_unused_result));

/* Frees the slots; m may be initialised again. */
void qidmap_free(struct qidmap *m);

/* The value of qid (changeable in place), or NULL when qid is not in m. */
uint32_t *qidmap_find(const struct qidmap *m, const char *qid);

/* Whether m is half full: a qidmap_put of a new qid would fail. */
bool qidmap_full(const struct qidmap *m);

/*
 * Adds qid with val, or sets the value of qid when it is there already.
 * 0, or -ENOSPC when the map is half full (whether qid is there or not).
 */
int qidmap_put(struct qidmap *m, const char *qid, uint32_t val) __attribute__((warn_unused_result));

/* Removes qid; a qid that is not there is a no-op. */
void qidmap_del(struct qidmap *m, const char *qid);

/* Doubles the room of m, keeping its entries. 0, or -ENOMEM (m unchanged). */
int qidmap_grow(struct qidmap *m) __attribute__((warn_unused_result));

#endif
