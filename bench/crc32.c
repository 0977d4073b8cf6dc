/*
 * crc32.c - CRC-32, reflected polynomial 0xedb88320 (see crc32.h).
 *
 * The combination works in GF(2) modulo the CRC polynomial, as zlib's
 * crc32_combine does since 1.2.12: CRC(A B) = CRC(A) * x^(8|B|) + CRC(B),
 * with x^(2^k) taken from a table of 32 squares. Byte-wise table lookup is
 * enough here: the only long inputs are the body templates, once at start-up.
 */
#include <pthread.h>

#include "crc32.h"

#define POLY 0xedb88320u

static uint32_t table[256];
static uint32_t x2n[32]; /* x^(2^k) mod p */
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* a * b mod p, both reflected. */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;
	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
	}
	return p;
}

static void crc32_setup(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[i] = c;
	}
	uint32_t p = 1u << 30; /* x^1 */
	x2n[0] = p;
	for (int k = 1; k < 32; k++)
		x2n[k] = p = multmodp(p, p);
}

uint32_t crc32_update(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&once, crc32_setup);
	const uint8_t *p = data;
	crc = ~crc;
	while (len--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* x^(n * 2^k) mod p */
static uint32_t x2nmodp(uint64_t n, unsigned k)
{
	uint32_t p = 1u << 31; /* x^0 */
	while (n) {
		if (n & 1)
			p = multmodp(x2n[k & 31], p);
		n >>= 1;
		k++;
	}
	return p;
}

uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
	pthread_once(&once, crc32_setup);
	return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}
