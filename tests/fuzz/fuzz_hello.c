/*
 * fuzz_hello.c - the ClientHello scanner (tls/hello.c).
 *
 * Input: the first bytes a client sends after STARTTLS (seeds: real
 * ClientHellos from openssl s_client and Python's ssl, see
 * capture_hellos.py). Checked, besides memory safety under the sanitizers:
 *  - the verdict is one of OK, MORE, BAD, and the same on a second run;
 *  - MORE only while the input is shorter than HELLO_INPUT_MAX;
 *  - on OK the ClientHello took at most the input; every shorter prefix of
 *    those bytes answers MORE (feeding in pieces reaches the same verdict),
 *    and bytes after it change nothing;
 *  - the fields are consistent (ECDSA suites are among the suites).
 */
#include <string.h>

#include "hello.h"
#include "fuzz.h"

static void same_info(const struct hello_info *a, const struct hello_info *b)
{
	FUZZ_CHECK(memcmp(a, b, sizeof(*a)) == 0, "hello_info differs between two scans");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hello_info h, h2;
	enum hello_result r = hello_scan(data, size, &h);
	FUZZ_CHECK(r == HELLO_OK || r == HELLO_MORE || r == HELLO_BAD, "verdict %d", (int)r);
	FUZZ_CHECK(hello_scan(data, size, &h2) == r, "a second scan disagrees");
	if (r == HELLO_MORE)
		FUZZ_CHECK(size < HELLO_INPUT_MAX, "MORE with %zu bytes", size);
	bool ecdsa = hello_accepts_ecdsa(&h, HELLO_P256);
	(void)ecdsa;
	if (r != HELLO_OK)
		return 0;
	same_info(&h, &h2);
	FUZZ_CHECK(h.bytes <= size && h.bytes <= HELLO_INPUT_MAX && h.bytes > 9, "bytes %u of %zu",
		   h.bytes, size);
	FUZZ_CHECK(h.ecdsa_suites + h.rsa_suites <= h.nsuites, "suites %u+%u of %u", h.ecdsa_suites,
		   h.rsa_suites, h.nsuites);
	/* Prefixes: every one of a short hello, a spread of a long one. */
	size_t step = h.bytes <= 512 ? 1 : h.bytes / 257;
	for (size_t n = 0; n < h.bytes; n += step) {
		enum hello_result p = hello_scan(data, n, &h2);
		FUZZ_CHECK(p == HELLO_MORE, "prefix of %zu of %u bytes: verdict %d", n, h.bytes,
			   (int)p);
	}
	/* Bytes after the ClientHello are not read. */
	if (h.bytes < HELLO_INPUT_MAX) {
		uint8_t *more = fuzz_alloc(h.bytes + 64);
		memcpy(more, data, h.bytes);
		memset(more + h.bytes, 0xa5, 64);
		FUZZ_CHECK(hello_scan(more, h.bytes + 64, &h2) == HELLO_OK,
			   "extra bytes change it");
		same_info(&h, &h2);
		free(more);
	}
	return 0;
}
