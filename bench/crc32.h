/*
 * crc32.h - CRC-32 (IEEE 802.3, the one of zlib and Python's zlib.crc32)
 * and the combination of two CRCs, so a message's checksum is computed from
 * its few per-message header bytes and a precomputed CRC of the shared body.
 */
#ifndef MXRING_BENCH_CRC32_H
#define MXRING_BENCH_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* crc32(0, NULL, 0) is 0; crc32(crc32(0, a, n), b, m) is the CRC of a then b. */
uint32_t crc32_update(uint32_t crc, const void *p, size_t len);

/* The CRC of A then B, from crc_a = CRC(A), crc_b = CRC(B) and len_b = |B|. */
uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

#endif
