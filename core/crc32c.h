/*
 * crc32c.h - CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78).
 *
 * The checksum of the spool records (spool.h). The x86 SSE4.2 crc32
 * instruction is used when the CPU has it (checked once at run time), else a
 * slicing-by-8 table. Both give the same result; crc32c("123456789") is
 * 0xE3069283.
 *
 * Chaining: crc32c(crc32c(0, a, n), b, m) == crc32c(0, a || b, n + m), so a
 * record can be checked piece by piece.
 */
#ifndef MXRING_CRC32C_H
#define MXRING_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over buf[0..len). Thread-safe, never fails. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The table version, whatever the CPU: tests compare the two. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Whether crc32c uses the SSE4.2 instruction on this CPU. */
bool crc32c_hw_available(void);

#endif
