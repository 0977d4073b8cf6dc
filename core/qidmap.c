/*
 * qidmap.c - queue id -> index map (qidmap.h).
 *
 * The hash is CRC-32C of the NUL-padded qid. Invariant: count <= (mask + 1) / 2,
 * so a probe run always ends at an empty slot within mask + 1 steps; the
 * loops assert that bound rather than trust it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crc32c.h"
#include "qidmap.h"

int qidmap_init(struct qidmap *m, uint32_t max)
{
	uint32_t cap = 16;
	while (cap < 2 * max && cap < (1u << 30))
		cap <<= 1;
	m->slot = calloc(cap, sizeof(*m->slot));
	if (!m->slot)
		return -ENOMEM;
	m->mask = cap - 1;
	m->count = 0;
	return 0;
}

void qidmap_free(struct qidmap *m)
{
	free(m->slot);
	m->slot = NULL;
}

static uint32_t qid_hash(const char key[QID_LEN])
{
	return crc32c(0, key, QID_LEN);
}

static void qid_key(char key[QID_LEN], const char *qid)
{
	memset(key, 0, QID_LEN);
	memcpy(key, qid, strnlen(qid, QID_LEN));
}

/* The slot holding key, or the empty slot where it would go. */
static struct qidmap_slot *qidmap_probe(const struct qidmap *m, const char key[QID_LEN])
{
	uint32_t i = qid_hash(key) & m->mask;
	/* The map is never more than half full: a probe meets an empty slot. */
	for (uint32_t n = 0;; n++, i = (i + 1) & m->mask) {
		ASSERT(n <= m->mask);
		struct qidmap_slot *s = &m->slot[i];
		if (s->qid[0] == 0 || memcmp(s->qid, key, QID_LEN) == 0)
			return s;
	}
}

uint32_t *qidmap_find(const struct qidmap *m, const char *qid)
{
	char key[QID_LEN];
	qid_key(key, qid);
	struct qidmap_slot *s = qidmap_probe(m, key);
	return s->qid[0] ? &s->val : NULL;
}

bool qidmap_full(const struct qidmap *m)
{
	return m->count + 1 > (m->mask + 1) / 2;
}

int qidmap_put(struct qidmap *m, const char *qid, uint32_t val)
{
	if (qidmap_full(m))
		return -ENOSPC;
	char key[QID_LEN];
	qid_key(key, qid);
	struct qidmap_slot *s = qidmap_probe(m, key);
	if (s->qid[0] == 0)
		m->count++;
	memcpy(s->qid, key, QID_LEN);
	s->val = val;
	return 0;
}

void qidmap_del(struct qidmap *m, const char *qid)
{
	char key[QID_LEN];
	qid_key(key, qid);
	struct qidmap_slot *s = qidmap_probe(m, key);
	if (s->qid[0] == 0)
		return;
	uint32_t i = (uint32_t)(s - m->slot);
	m->count--;
	/*
	 * Backward shift: move later entries of the probe run into the hole.
	 * The run ends at an empty slot (the map is at most half full), so
	 * neither loop goes round the table.
	 */
	for (uint32_t n = 0;; n++) {
		ASSERT(n <= m->mask);
		uint32_t j = i;
		for (uint32_t k = 0;; k++) {
			ASSERT(k <= m->mask);
			j = (j + 1) & m->mask;
			if (m->slot[j].qid[0] == 0) {
				m->slot[i].qid[0] = 0;
				return;
			}
			uint32_t home = qid_hash(m->slot[j].qid) & m->mask;
			/* j's entry may move to i when i lies cyclically in [home, j). */
			if (((j - home) & m->mask) >= ((j - i) & m->mask))
				break;
		}
		m->slot[i] = m->slot[j];
		i = j;
	}
}

int qidmap_grow(struct qidmap *m)
{
	struct qidmap g;
	int e = qidmap_init(&g, (m->mask + 1)); /* twice the entries it holds now */
	if (e < 0)
		return e;
	for (uint32_t i = 0; i <= m->mask; i++)
		if (m->slot[i].qid[0]) {
			char q[QID_LEN + 1] = {0};
			memcpy(q, m->slot[i].qid, QID_LEN);
			int put = qidmap_put(&g, q, m->slot[i].val);
			ASSERT(put == 0); /* the new map is twice as large */
		}
	qidmap_free(m);
	*m = g;
	return 0;
}
