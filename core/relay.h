/*
 * relay.h - relay workers: every message the writers made durable goes on
 * to the site's hub (relay_host) over SMTP or LMTP, and its per-recipient
 * results are kept in the delivery journal (journal.h).
 *
 * The queue is the spool itself. A worker reads the segments of its writers
 * (spool writer w belongs to worker w % relay_workers) in name order, as far
 * as each writer has published its segment durable (writers_position): what
 * it reads was acknowledged with 250 already. So the same code serves a
 * fresh message a millisecond old and the queue a crash left: at start the
 * journal is replayed (journal_index_load) and every recipient with a final
 * outcome is skipped. Memory holds a window of RELAY_WINDOW_MSGS messages
 * (envelopes and part offsets, never bodies); the rest of a long queue stays
 * on disk and is read as the window drains, in arrival order.
 *
 * A worker is one thread with its own io_uring: connects, sends and
 * receives of up to relay_connections sessions at once go through it; the
 * SMTP/LMTP conversation is smtpc.c's. Bodies are read from the segment
 * (pread, page cache) and sent dot-stuffed from a buffer: one copy into the
 * process, one out of it.
 *
 * Results: each recipient's outcome is appended to the journal when its
 * transaction ends and made durable once per loop pass (journal_sync);
 * only then does the worker act on it (forget the message, schedule the
 * retry, send the bounce). A retry follows relay_retry_schedule (first
 * retry after FIRST, doubling up to MAX). A message older than
 * maximal_queue_lifetime is expired: its recipients not yet delivered are
 * bounced. A failed recipient's sender gets a DSN (dsn.h), made from the
 * stored message and relayed to the hub from <> in its own session
 * transaction; once the hub took it (or refused it for good: logged and
 * dropped), a BOUNCE record says the recipient owes nothing more. The DSN
 * is not stored: after a crash before its BOUNCE, the FAILED record without
 * one makes the worker build it again (at-least-once, as for messages).
 * A segment whose messages are all final, scanned to its end and no longer
 * appended to gets a SEGDONE record and is deleted.
 *
 * When no destination answers, the hub is down: the messages due then are
 * deferred (one journal record and log line each), and no connection is
 * tried until the schedule's next retry of the hub.
 *
 * Threads: relay_create (before the sandbox: names are resolved here),
 * relay_start (after writers_start), relay_stop (after the shards stopped:
 * sessions end, the journal is synced), relay_free.
 */
#ifndef MXRING_RELAY_H
#define MXRING_RELAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct writer_set;
struct relay;

/* Messages one worker holds in memory at most; the rest waits on disk. */
#define RELAY_WINDOW_MSGS 20000u
/* Addresses kept per relay_host entry. */
#define RELAY_ADDRS_MAX 8u

/*
 * Resolves relay_host's names (A and AAAA) and sets up cfg->relay_workers
 * workers. 0 and *out; -1 with a line on err (a name that does not
 * resolve, memory). cfg must outlive the relay.
 */
int relay_create(const struct config *cfg, struct relay **out, FILE *err)
    __attribute__((warn_unused_result));

/*
 * Opens each worker's journal, replays it, and starts the threads, which
 * read the writers' positions from ws. 0 or -errno with a line on stderr.
 */
int relay_start(struct relay *rl, struct writer_set *ws) __attribute__((warn_unused_result));

/*
 * SIGHUP (main thread): relay_host's names are resolved again; new
 * connections use the new addresses. A name that does not resolve keeps
 * the addresses in use (logged). 0 or -1.
 */
int relay_reload(struct relay *rl);

/* SIGUSR1: every waiting message and the hub are tried again now. */
void relay_retry_now(struct relay *rl);

/* Ends every session (a transaction under way may finish within
 * shutdown_timeout), syncs and closes the journals, joins the threads. */
void relay_stop(struct relay *rl);

/* Frees rl (stopped or never started). NULL is a no-op. */
void relay_free(struct relay *rl);

struct relay_stats {
	uint64_t sent;		 /* recipients delivered */
	uint64_t deferred;	 /* recipient deferrals */
	uint64_t bounced;	 /* recipients failed or expired */
	uint64_t dsn_sent;	 /* DSNs the hub took */
	uint64_t dsn_dropped;	 /* DSNs not made (null sender) or refused for good */
	uint64_t sessions;	 /* sessions opened */
	uint64_t connect_fails;	 /* connections that failed */
	uint64_t queue_msgs;	 /* messages in the windows now */
	uint64_t queue_bytes;	 /* bytes of the segments in the spool (not deleted yet) */
	uint64_t oldest_age_s;	 /* age of the oldest message waiting (0: none) */
	uint64_t segments_done;	 /* segments deleted */
	uint64_t journal_syncs;	 /* journal fdatasyncs */
	uint64_t journal_errors; /* failed journal syncs */
	uint64_t tls_sessions;	 /* STARTTLS handshakes to the hub, full */
	uint64_t tls_resumed;	 /* ... resumed (a ticket) */
	uint64_t tls_failures;	 /* ... failed (certificate checks among them) */
};

/*
 * Set while the spool's segments (messages not yet delivered, and the
 * delivered ones of segments not yet deleted) take spool_max_bytes or
 * more: the shards answer MAIL with 452 4.3.1 until the relay drained the
 * spool below it. Summed by the relay once a second, so the bound is
 * passed by at most a second of intake.
 */
extern _Atomic bool relay_spool_over;

static inline bool relay_spool_full(void)
{
	return atomic_load_explicit(&relay_spool_over, memory_order_relaxed);
}

/* Sums the workers' counters (any thread). */
void relay_stats(struct relay *rl, struct relay_stats *out);

#endif
