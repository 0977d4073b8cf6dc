/*
 * shard.h - one shard: a thread pinned to a CPU with its own io_uring,
 * listening sockets (SO_REUSEPORT), provided-buffer ring, connection table,
 * timer wheel and counters. Nothing here is shared with other shards; the
 * only cross-thread traffic is msgs to and from the writers (writer.h) and
 * the stop request.
 */
#ifndef MXRING_SHARD_H
#define MXRING_SHARD_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "smtp.h"
#include "writer.h"

struct shard;

/* Counters of one shard; read by other threads without locks (relaxed). */
struct shard_stats {
	uint64_t conns_accepted;
	uint64_t conns_refused; /* past max_connections: 421 at accept */
	uint64_t conns_closed;
	uint64_t conns_lingered;  /* closed with a lingering close (their input read, dropped) */
	uint64_t msgs_queued;	  /* 250 sent after the writer stored it */
	uint64_t msgs_failed;	  /* 4xx/5xx at end of data */
	uint64_t body_bytes;	  /* content bytes handed to writers */
	uint64_t body_copied;	  /* content bytes copied in user space */
	uint64_t parts;		  /* MSG_PART handoffs */
	uint64_t enobufs;	  /* recv stopped because the buffer ring ran dry */
	uint64_t recv_paused;	  /* recv paused for a connection with too much unread input */
	uint64_t ring_full;	  /* handoff ring full at end of data (451) */
	uint64_t tls_handshakes;  /* completed (full and resumed) */
	uint64_t tls_resumed;	  /* of which resumed */
	uint64_t tls_failed;	  /* handshakes or records that failed */
	uint64_t tls_plain_bytes; /* decrypted into plaintext buffers */
	uint64_t tls_in_place;	  /* TLS sessions whose records tls/record.c opens in place */
	uint64_t tls_held_bytes; /* ciphertext moved out of receive buffers (a copy) to free them */
	uint64_t proxy_errors;	 /* bad, missing or late PROXY protocol headers */
	uint64_t rcpt_unknown;	 /* RCPTs refused: not in recipient_table (550 5.1.1) */
	uint64_t rate_limited_conns; /* connections refused: client_connection_rate_limit */
	uint64_t rate_limited_msgs;  /* MAILs refused: client_message_rate_limit */
	uint64_t dnsbl_cache_hits;   /* DNS list verdicts found in the cache */
	uint64_t dnsbl_listed;	     /* clients whose score reached dnsbl_threshold */
	uint64_t dnsbl_allowlisted;  /* clients an allowlist (negative weight) matched */
	uint64_t dnsbl_overflow;     /* clients not checked: the shard had too many queries out */
};

/*
 * What a shard holds right now, published by its thread once per loop pass
 * (relaxed stores to a line of its own) and read by any thread without locks.
 */
struct shard_gauges {
	uint64_t conns_open;
	uint64_t tls_sessions;	      /* connections with a TLS session (handshake or up) */
	uint64_t recv_bufs_used;      /* receive buffers out of the kernel's ring */
	uint64_t recv_bufs_capacity;  /* recv_buffers */
	uint64_t plain_bufs_used;     /* decrypted-input buffers in use (TLS) */
	uint64_t plain_bufs_capacity; /* 0 without TLS */
	uint64_t msgs_at_writers;     /* msgs handed to writers, not yet back */
	uint64_t send_queued_bytes;   /* reply bytes handed to sends, not yet sent */
};

/*
 * Creates shard id: its ring, buffer ring and connection table. listen_fds
 * are its sockets of listen_bind (cfg->listen, then cfg->smtps_listen): the
 * shard takes them when it is created (each is set to -1 then), and closes
 * them when it is freed. 0 or -errno with a message on stderr.
 */
int shard_create(unsigned id, const struct config *cfg, const struct smtp_conf *sconf,
		 struct writer_set *ws, int *listen_fds, struct shard **out)
    __attribute__((warn_unused_result));

/* Whether the shard's ring allows only the shard's own operations
 * (IORING_REGISTER_RESTRICTIONS; not on kernels without it). */
bool shard_uring_restricted(const struct shard *sh);

/* Starts the shard's thread (pinned to CPU id when cfg->pin_shards). */
int shard_start(struct shard *sh) __attribute__((warn_unused_result));

/* From any thread: stop accepting, let transactions finish (at most
 * cfg->shutdown_timeout seconds), answer 421 to the rest, then end the thread. */
void shard_stop(struct shard *sh);

/* Whether the shard's loop ended on an error (it then sent SIGTERM to the
 * process so that the others stop too). */
int shard_failed(struct shard *sh);

struct dnsbl;
/* The DNS list resolver the shard asks (before shard_start); NULL = none. */
void shard_set_dnsbl(struct shard *sh, struct dnsbl *d);

/*
 * Waits until every shard has ended a loop pass that began after the call
 * (at most timeout_ms): what a shard read from shared state before the call
 * it holds no longer. Returns false on time out. A shard ends a pass at
 * least once a second (its tick).
 */
bool shard_quiesce(struct shard **shards, unsigned n, unsigned timeout_ms);

/* Waits for the thread to end. */
void shard_join(struct shard *sh);

/* Frees a shard that was joined or never started. */
void shard_free(struct shard *sh);

/* Snapshot of the shard's counters (any thread). */
void shard_stats_get(struct shard *sh, struct shard_stats *out);

/* Snapshot of the shard's gauges as of its last loop pass (any thread). */
void shard_gauges_get(struct shard *sh, struct shard_gauges *out);

#endif
