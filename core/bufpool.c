/*
 * bufpool.c - a shard's buffers: the provided-buffer ring the kernel
 * receives into, the plaintext buffers TLS decrypts into, and the queues of
 * buffer ids a connection holds (shard_int.h).
 *
 * A buffer lent by the kernel is referenced by the connection's input queue
 * and by every body slice pointing into it (refs[]); it goes back to the ring
 * when the last reference drops, and only the shard's thread ever re-adds
 * it. The ring sees the returned buffers at bufpool_publish, once per loop
 * pass. Plaintext buffers go back to a free stack the same way.
 */
#include "shard_int.h"
#include "uring_compat.h"

void bufpool_take(struct shard *sh, uint16_t bid)
{
	ASSERT(bid < sh->nbufs && sh->refs[bid] == 0);
	sh->refs[bid] = 1;
	sh->held++;
}

uint16_t bufpool_plain_get(struct shard *sh)
{
	if (sh->nplain_free == 0)
		return BUF_NONE;
	uint16_t b = sh->plain_free[--sh->nplain_free];
	ASSERT(sh->refs[b] == 0);
	sh->refs[b] = 1;
	return b;
}

void bufpool_put(struct shard *sh, uint16_t bid)
{
	ASSERT(bid < sh->nbufs + sh->nplain && sh->refs[bid] > 0);
	if (--sh->refs[bid] > 0)
		return;
	if (bid >= sh->nbufs) {
		sh->plain_free[sh->nplain_free++] = bid;
		return;
	}
	sh->held--;
	io_uring_buf_ring_add(sh->br, bufpool_addr(sh, bid), sh->buf_size, bid,
			      io_uring_buf_ring_mask(sh->nbufs), (int)sh->returned);
	sh->returned++;
}

void bufpool_push(struct shard *sh, struct bufq *q, uint16_t b, uint32_t len)
{
	sh->len[b] = len;
	sh->next[b] = BUF_NONE;
	if (q->tail != BUF_NONE)
		sh->next[q->tail] = b;
	else
		q->head = b;
	q->tail = b;
	q->n++;
}

void bufpool_pop(struct shard *sh, struct bufq *q)
{
	uint16_t b = q->head;
	q->head = sh->next[b];
	if (q->head == BUF_NONE)
		q->tail = BUF_NONE;
	q->n--;
	q->off = 0;
	bufpool_put(sh, b);
}

uint64_t bufpool_drop(struct shard *sh, struct bufq *q)
{
	uint64_t bytes = 0;
	/* A queue holds each buffer once: no more than all of them. */
	for (uint32_t n = 0; q->head != BUF_NONE; n++) {
		ASSERT(n < sh->nbufs + sh->nplain);
		bytes += sh->len[q->head] - q->off;
		bufpool_pop(sh, q);
	}
	q->head = q->tail = BUF_NONE;
	q->n = 0;
	q->off = 0;
	return bytes;
}

void bufpool_publish(struct shard *sh)
{
	if (sh->returned) {
		io_uring_buf_ring_advance(sh->br, (int)sh->returned);
		sh->returned = 0;
	}
}

bool bufpool_low(const struct shard *sh)
{
	return sh->held + sh->nbufs / 8 >= sh->nbufs;
}
