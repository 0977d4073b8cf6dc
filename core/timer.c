/*
 * timer.c - the per-shard timer wheel (see timer.h).
 */
#include <errno.h>
#include <stdlib.h>

#include "timer.h"

int timer_init(struct timer_wheel *w, uint32_t cap, uint64_t now)
{
	w->nodes = calloc(cap, sizeof(*w->nodes));
	if (!w->nodes)
		return -ENOMEM;
	for (uint32_t i = 0; i < cap; i++)
		w->nodes[i].slot = TIMER_NONE;
	for (uint32_t i = 0; i < TIMER_SLOTS; i++)
		w->head[i] = TIMER_NONE;
	w->cap = cap;
	w->now = now;
	return 0;
}

void timer_free(struct timer_wheel *w)
{
	free(w->nodes);
	w->nodes = NULL;
}

static void unlink_node(struct timer_wheel *w, uint32_t idx)
{
	struct timer_node *n = &w->nodes[idx];
	if (n->prev != TIMER_NONE)
		w->nodes[n->prev].next = n->next;
	else
		w->head[n->slot] = n->next;
	if (n->next != TIMER_NONE)
		w->nodes[n->next].prev = n->prev;
	n->slot = TIMER_NONE;
}

/* Files idx in the slot of its deadline, or of the farthest second the wheel covers. */
static void file_node(struct timer_wheel *w, uint32_t idx)
{
	struct timer_node *n = &w->nodes[idx];
	uint64_t when = n->deadline;
	if (when <= w->now)
		when = w->now + 1;
	if (when - w->now >= TIMER_SLOTS)
		when = w->now + TIMER_SLOTS - 1;
	uint32_t slot = (uint32_t)(when % TIMER_SLOTS);
	n->slot = slot;
	n->prev = TIMER_NONE;
	n->next = w->head[slot];
	if (n->next != TIMER_NONE)
		w->nodes[n->next].prev = idx;
	w->head[slot] = idx;
}

void timer_set(struct timer_wheel *w, uint32_t idx, uint64_t deadline)
{
	struct timer_node *n = &w->nodes[idx];
	if (n->slot != TIMER_NONE && deadline >= n->deadline) {
		n->deadline = deadline; /* later: re-filed when its slot comes round */
		return;
	}
	if (n->slot != TIMER_NONE)
		unlink_node(w, idx);
	n->deadline = deadline;
	file_node(w, idx);
}

void timer_cancel(struct timer_wheel *w, uint32_t idx)
{
	if (w->nodes[idx].slot != TIMER_NONE)
		unlink_node(w, idx);
}

unsigned timer_expire(struct timer_wheel *w, uint64_t now, uint32_t *out, unsigned max)
{
	unsigned n = 0;
	/* Catch up at most one turn: every slot is visited once. */
	if (now > w->now + TIMER_SLOTS)
		w->now = now - TIMER_SLOTS;
	while (w->now < now && n < max) {
		uint64_t sec = w->now + 1;
		uint32_t slot = (uint32_t)(sec % TIMER_SLOTS);
		uint32_t idx = w->head[slot];
		while (idx != TIMER_NONE && n < max) {
			uint32_t next = w->nodes[idx].next;
			unlink_node(w, idx);
			if (w->nodes[idx].deadline <= now)
				out[n++] = idx;
			else
				file_node(w, idx); /* a later slot (never this one) */
			idx = next;
		}
		if (idx != TIMER_NONE)
			break; /* out is full: this second again on the next call */
		w->now = sec;
	}
	return n;
}
