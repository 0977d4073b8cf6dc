/*
 * rate.h - events per client and minute, shared by all shards
 * (client_connection_rate_limit, client_message_rate_limit), as Postfix's
 * anvil counts them: a client is an IPv4 address or an IPv6 /64, and its
 * minute starts at its first event (not at a clock boundary).
 *
 * A fixed table per kind of event, so memory is bounded however many
 * addresses connect: RATE_BUCKETS buckets of RATE_WAYS entries, each one
 * 64-bit word {tag:24, start:24, count:16} changed by compare-and-swap, so
 * no lock is taken. The tag is 24 bits of the address's hash that did not
 * choose the bucket: two clients share an entry only if they also share
 * the bucket, which merges their counts (only ever stricter). A client
 * missing from a full bucket takes the entry whose minute is over, else
 * the one with the lowest count (a quiet client is forgotten before a busy
 * one).
 */
#ifndef MXRING_RATE_H
#define MXRING_RATE_H

#include <stdint.h>

#define RATE_BUCKETS 8192u /* a power of two; 64 KiB per kind of event */
#define RATE_WAYS    8u
#define RATE_WINDOW  60u /* seconds */

enum rate_kind { RATE_CONN = 0, RATE_MSG = 1, RATE_KINDS };

/*
 * Counts one event of kind from addr (16 bytes: IPv6, or IPv4 as
 * ::ffff:a.b.c.d) at now_s (seconds of a monotonic clock) and returns the
 * client's events in its current minute, this one included (at most
 * 65535).
 */
uint32_t rate_count(enum rate_kind kind, const uint8_t addr[16], uint64_t now_s);

/* Forgets every client (the unit tests). */
void rate_reset(void);

#endif
