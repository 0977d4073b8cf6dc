/*
 * bounds.h - every compile-time bound of the receiver in one place.
 *
 * Run-time limits (message size, recipients, timeouts) live in struct config
 * with their defaults; the constants here size fixed arrays and say how the
 * bounds relate. Each static_assert states one such relation.
 */
#ifndef MXRING_BOUNDS_H
#define MXRING_BOUNDS_H

#include <assert.h>
#include <limits.h>

#define LISTEN_MAX  16	/* listen addresses */
#define SHARDS_MAX  256 /* shard threads */
#define WRITERS_MAX 64	/* writer threads */
/* Relay worker threads, and the outbound sessions one drives at once. */
#define RELAY_WORKERS_MAX     16
#define RELAY_CONNECTIONS_MAX 1000
#define DOMAIN_MAX	      255   /* RFC 5321 4.5.3.1.2 */
#define LOCAL_PART_MAX	      64    /* RFC 5321 4.5.3.1.1 */
#define PATH_MAX_OCTETS	      256   /* RFC 5321 4.5.3.1.3 (incl. brackets) */
#define HELO_MAX	      255   /* HELO/EHLO argument kept */
#define QID_LEN		      16    /* queue id characters */
#define TLS_DESC_MAX	      64    /* "TLSv1.3 TLS_AES_128_GCM_SHA256" */
#define CLIENT_ADDR_MAX	      48    /* textual IPv4/IPv6 address */
#define CMD_LINE_LIMIT_MIN    512   /* RFC 5321 4.5.3.1.4 */
#define CMD_LINE_LIMIT_MAX    4096  /* what command_line_limit may be set to */
#define REPLY_MAX	      512   /* one reply, multi-line EHLO included */
#define RCPT_LIMIT_MAX	      10000 /* what recipient_limit may be set to */
#define RECV_BUF_SIZE_MIN     1024  /* recv_buffer_size range */
#define RECV_BUF_SIZE_MAX     (1 << 20)
#define RECV_BUFS_MAX	      32768 /* provided-buffer ring entries (kernel limit) */
#define RING_SIZE_MAX	      65536 /* shard -> writer ring entries */
#define ACCEPT_DOMAINS_MAX    4096
#define CIDR_LIST_MAX	      64 /* prefixes of an address list (connection_limit_exceptions) */
#define DNS_SERVERS_MAX	      8	 /* dns_servers */
#define DNSBL_CACHE_MAX	      (1u << 24) /* dnsbl_cache_size */
#define RATE_LIMIT_MAX	      65535	 /* client_*_rate_limit, per minute */
#define NOFILE_RESERVE	      256 /* descriptors kept beside connections, plus per shard and writer */
#define CONNECTIONS_MAX	      (1u << 20) /* what max_connections may be set to */
#define PLAIN_BUFS_MAX	      4096 /* decrypted-input buffers of a shard (a quarter of the ring's) */
#define IP_BUCKETS	      65536u /* counters of max_connections_per_ip (power of two) */

/* A shard's connections. */
#define OUT_CAP		4096u	    /* reply buffer: >= SMTP_OUT_RESERVE + the longest reply */
#define IN_PAUSE_BUFS	8u	    /* unread input buffers before recv is paused */
#define REAP_MAX	256u	    /* msgs taken back from the writers per batch */
#define EXPIRE_MAX	256u	    /* deadlines handled per batch of the timer wheel */
#define CLOSE_WAIT_S	5u	    /* a closing session's replies go out within this */
#define LINGER_S	2u	    /* a closed session's input is read this long at most */
#define LINGER_BYTES	(64u << 10) /* and this much */
#define ACCEPT_PAUSE_MS 500u	    /* accepting stops this long after EMFILE and the like */
#define ACCEPT_LOG_MS	1000u	    /* accept errors are logged at most this often */
/* A message's body (txn.c). */
#define PART_BUFS_MAX	 64u   /* receive buffers a message pins before a part */
#define PART_SLICES_MAX	 1024u /* slices a message gathers before a part */
#define COPY_RUN_MAX	 1024u /* a run shorter than this may be copied */
#define FRAG_SLICES_FREE 8u    /* slices beyond 2 per buffer before fragments are copied */
/* A copy chunk with its header is 12 KiB: a small size class of jemalloc,
 * kept in its thread cache. At 16 KiB (a large class) each chunk came back
 * as fresh pages: page faults and zeroing on the shard, about a tenth of its
 * time on bodies with many fragments. */
#define COPY_CHUNK_BYTES ((12u << 10) - 16u)

/* The spool (spool.h) and its reader (spool_reader.h). */
#define SPOOL_TRACE_MAX		 1024u		     /* the longest trace header */
#define SPOOL_INFLIGHT_MAX	 (1u << 22)	     /* bound on spool_open's inflight_max */
#define SPOOL_BATCH_MAX		 (1u << 16)	     /* bound on spool_open's batch_max */
#define SPOOL_ARENA_SLACK	 (256u * 1024)	     /* to coalesce small records in a pwritev */
#define SPOOL_IOV_MAX		 ((unsigned)IOV_MAX) /* iovecs per pwritev */
#define SPOOL_SCRATCH_SIZE	 (64u * 1024)	     /* read buffer of recovery and the reader */
#define SPOOL_READER_PENDING_MAX (1u << 22)	     /* messages with parts, no FINAL yet */
#define SPOOL_READER_PARTS_MAX	 (1u << 20)	     /* parts of one message (reader) */
#define DIR_FILES_MAX		 (1u << 20)	     /* directory entries a scan considers */
#define MAILDIR_HOST_MAX	 200		     /* host in a maildir name (NAME_MAX 255) */
#define MAILDIR_NAME_MAX	 (40 + QID_LEN + MAILDIR_HOST_MAX)

static_assert(CMD_LINE_LIMIT_MIN <= CMD_LINE_LIMIT_MAX, "line limits");
static_assert(QID_LEN + 64 < REPLY_MAX, "a queued reply fits in one reply");
static_assert(PATH_MAX_OCTETS > LOCAL_PART_MAX + DOMAIN_MAX - 64, "path holds local@domain");
static_assert(RECV_BUF_SIZE_MIN >= CMD_LINE_LIMIT_MIN + 2, "a minimum line fits one buffer");
static_assert((RECV_BUFS_MAX & (RECV_BUFS_MAX - 1)) == 0, "buffer ring size is a power of two");
static_assert((IP_BUCKETS & (IP_BUCKETS - 1)) == 0, "IP_BUCKETS masks a hash");
static_assert(PART_BUFS_MAX <= RECV_BUFS_MAX / 4, "a message pins a small share of the ring");
static_assert(COPY_RUN_MAX <= COPY_CHUNK_BYTES, "a copied run fits a chunk");
static_assert(REPLY_MAX <= OUT_CAP / 4, "replies fit the reply buffer with room to spare");

#endif
