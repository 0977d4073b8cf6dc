/*
 * spoolrec.h - the records of a segment, as spool.h lays them out byte by
 * byte: the record header, its CRC (seeded with the segment's salt), the
 * search for the next valid record after a damaged one, the envelope of a
 * FINAL, and which queue ids are valid.
 *
 * The writer (segment.c) and the reader (spool_reader.c) use this one
 * encoder and this one checker, so they cannot disagree on the format.
 * Nothing here allocates or keeps state; the check functions read through
 * the caller's buffer.
 */
#ifndef MXRING_SPOOLREC_H
#define MXRING_SPOOLREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "spool.h"

/* The longest envelope for a given recipient count (strings bounded by struct envelope). */
#define SPOOL_ENV_STRINGS_MAX                                                                      \
	(5 * 2 + CLIENT_ADDR_MAX + HELO_MAX + TLS_DESC_MAX + DOMAIN_MAX + PATH_MAX_OCTETS)
#define SPOOL_ENV_MAX_FOR(n)                                                                       \
	(SPOOL_ENV_FIXED + SPOOL_ENV_STRINGS_MAX + (uint64_t)(n) * (2 + PATH_MAX_OCTETS))
#define SPOOL_ENV_MAX SPOOL_ENV_MAX_FOR(RCPT_LIMIT_MAX)

static_assert(SPOOL_ENV_MAX < SPOOL_REC_MAX, "an envelope fits in a record");
static_assert(SPOOL_REC_HDR_LEN + SPOOL_ENV_MAX + SPOOL_TRACE_MAX < UINT32_MAX, "u32 lengths");
static_assert(QID_LEN == 16, "the record header holds a 16-byte qid");

/* A record header, decoded (the fields of spool.h's table but magic and version). */
struct spoolrec_hdr {
	uint8_t type; /* SPOOL_REC_PART, _FINAL or _SEGMENT */
	uint32_t hdr_len;
	uint32_t rec_len;
	uint32_t crc;
	uint32_t part;
	char qid[QID_LEN + 1];
	uint64_t body_off;
	uint32_t env_len;
	uint32_t trace_len;
	uint64_t body_len;
};

/* What the FINAL's envelope says about the whole message. */
struct spoolrec_env_totals {
	uint64_t msg_size;
	uint64_t body_size;
	uint32_t nparts;
	uint32_t trace_len;
};

/* Whether qid is 1..QID_LEN bytes of printable ASCII other than space, '/' and '\'. */
bool spoolrec_qid_valid(const char *qid);

/* Encodes h at p (SPOOL_REC_HDR_LEN bytes), with h->crc as it is: see spoolrec_crc_start. */
void spoolrec_hdr_encode(uint8_t *p, const struct spoolrec_hdr *h);

/*
 * The CRC of a record whose first hdr_len bytes are hdr, before the rest
 * (continue with crc32c over the bytes after the header); seed: see spool.h.
 */
uint32_t spoolrec_crc_start(uint32_t seed, const uint8_t *hdr, size_t hdr_len);

/* The CRC seed of a segment's records: CRC-32C of its salt (8 bytes, little-endian). */
uint32_t spoolrec_seed(uint64_t salt);

/*
 * Checks the record at off of a file of size bytes, its CRC seeded with
 * seed, reading through buf (cap bytes): 0 and *h when it is whole and its
 * CRC matches, -EBADMSG when not, -errno when reading failed. *torn is set
 * when the header is plausible but the file ends inside it; h->rec_len is 0
 * unless the header made sense.
 */
int spoolrec_check(int fd, uint64_t off, uint64_t size, uint32_t seed, struct spoolrec_hdr *h,
		   uint8_t *buf, size_t cap, bool *torn) __attribute__((warn_unused_result));

/*
 * The same check of a record at the start of p[0..len), in memory: 0 and
 * *h when it is whole there and its CRC matches; -EAGAIN when len is too
 * short for it (h->rec_len says how long it is, once the header is read
 * and makes sense; 0 before); -EBADMSG when it is not a valid record.
 */
int spoolrec_check_mem(const uint8_t *p, size_t len, uint32_t seed, struct spoolrec_hdr *h)
    __attribute__((warn_unused_result));

/*
 * Looks for the first valid record (CRC seeded with seed) after a bad one at
 * off: 0 and *found, -ENOENT when there is none, -E2BIG when the search gave
 * up (RESYNC_TRIES candidates or RESYNC_BYTES checked: there may be one), or
 * -errno. A SEGMENT record does not count as one.
 */
int spoolrec_resync(int fd, uint64_t off, uint64_t size, uint32_t seed, uint64_t *found,
		    uint8_t *buf, size_t cap) __attribute__((warn_unused_result));

/*
 * Reads the SEGMENT record at offset 0 of a segment of size bytes: 0 and
 * the CRC seed of the file's later records, or -EBADMSG / -errno.
 */
int spoolrec_seg_header(int fd, uint64_t size, uint8_t *buf, size_t cap, uint32_t *seed)
    __attribute__((warn_unused_result));

/* Bytes the envelope of env takes, or 0 when a field is over its bound. */
uint64_t spoolrec_env_size(const struct envelope *env);

/*
 * Encodes env into p (spoolrec_env_size(env) bytes, which must not be 0),
 * for a message of body_size client bytes in nparts records whose trace
 * header has trace_len bytes.
 */
void spoolrec_env_encode(uint8_t *p, const struct envelope *env, uint64_t body_size,
			 uint32_t nparts, uint32_t trace_len);

/*
 * Decodes the envelope in p[0..len) into *env and *t; the recipients go
 * packed into rcpts (cap bytes), which env->rcpts then borrows. 0 or
 * -EBADMSG (any length or count out of its bound, or len not used up).
 */
int spoolrec_env_decode(const uint8_t *p, size_t len, struct envelope *env, char *rcpts, size_t cap,
			struct spoolrec_env_totals *t) __attribute__((warn_unused_result));

#endif
