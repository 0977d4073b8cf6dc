/*
 * msg.h - what travels from a shard to a writer and back.
 *
 * A message body is a chain of slices. A slice points into a receive buffer
 * lent to the shard by the kernel (buf = its id in the shard's buffer ring),
 * or into a copy chunk the msg owns (buf = SLICE_COPY). Content is copied
 * only where the decoder fragments it (a CRLF for each bare LF, a dot
 * dropped at each stuffed line): short fragments are gathered into one
 * chunk, so that a message costs a slice per buffer or per long run, not two
 * per line. Nothing else copies the bytes on the way to disk: the writer
 * hands the chain to writev. While a msg is with a writer, the shard does not touch the
 * buffers it points into; the writer never returns buffers itself, it returns
 * the msg, and the shard (the only owner of its buffer ring) drops its
 * references.
 *
 * A large body travels in parts: every MSG_PART is written (not synced) as
 * soon as the writer gets it, so a message never holds more than
 * body_flush_bytes of receive buffers. The MSG_FINAL carries the last slices
 * and the whole envelope; once the writer has synced it, the shard may send
 * the 250. All msgs of one transaction go to the same writer, in order.
 */
#ifndef MXRING_MSG_H
#define MXRING_MSG_H

#include <stdint.h>
#include <stddef.h>

#include "bounds.h"

#define SLICE_COPY 0xffffu

struct slice {
	const uint8_t *base; /* borrowed: into a receive buffer or a copy chunk */
	uint32_t len;
	uint16_t buf; /* buffer id in the owning shard's ring, or SLICE_COPY */
	uint16_t pad;
};

/* Copied fragments of a body; the shard allocates and frees them. */
struct copy_chunk {
	struct copy_chunk *next; /* owned: the chunk filled before this one */
	uint32_t len;
	uint32_t cap;
	uint8_t data[];
};

/* The envelope of one transaction, owned by the connection until the final
 * msg comes back from the writer. Strings are NUL-terminated. */
struct envelope {
	char qid[QID_LEN + 1];
	uint64_t time_us;		   /* MAIL FROM time, CLOCK_REALTIME */
	char client_addr[CLIENT_ADDR_MAX]; /* "192.0.2.1" or "2001:db8::1" */
	uint16_t client_port;
	char helo[HELO_MAX + 1]; /* as given, escaped on output */
	char tls[TLS_DESC_MAX];	 /* "" when plaintext, else "TLSv1.3 CIPHER" */
	char myhostname[DOMAIN_MAX + 1];
	uint32_t flags;			/* ENV_* */
	char from[PATH_MAX_OCTETS + 1]; /* without <>; "" = null sender */
	uint32_t nrcpt;
	uint32_t rcpts_len; /* bytes used in rcpts */
	uint32_t rcpts_cap;
	char *rcpts; /* owned: nrcpt NUL-terminated addresses, packed */
};

#define ENV_ESMTP      0x1u /* EHLO, not HELO */
#define ENV_8BITMIME   0x2u /* BODY=8BITMIME */
#define ENV_SMTPUTF8   0x4u
#define ENV_BDAT       0x8u /* body came by BDAT */
#define ENV_BINARYMIME 0x10u

enum msg_kind {
	MSG_PART = 1,  /* more of the body follows */
	MSG_FINAL = 2, /* last slices; sync, then report */
	MSG_ABORT = 3, /* the transaction whose parts were sent is abandoned; no slices */
};

struct msg {
	/* Set by the shard. */
	enum msg_kind kind;
	uint16_t shard;
	uint16_t writer;
	uint32_t conn_slot;	    /* connection table index */
	uint32_t conn_gen;	    /* connection generation, to spot reuse */
	uint32_t part;		    /* 0, 1, ... within the transaction */
	const struct envelope *env; /* borrowed from the connection */
	struct slice *slices;	    /* owned by the msg */
	uint32_t nslices;
	uint32_t slices_cap;
	struct copy_chunk *copies; /* owned: newest first; SLICE_COPY slices point in */
	uint32_t nbufs;		   /* pool buffers the slices reference */
	uint16_t last_buf;	   /* the buffer of the newest such slice */
	uint64_t part_bytes;	   /* bytes in these slices */
	uint64_t body_offset;	   /* body bytes written by earlier parts */
	/* Set by the writer before it returns the msg. */
	int result;	  /* 0 = durable (FINAL) / written (PART), or -errno */
	uint64_t done_us; /* when the writer finished it */
};

/* Total body bytes including this part. */
static inline uint64_t msg_total_bytes(const struct msg *m)
{
	return m->body_offset + m->part_bytes;
}

#endif
