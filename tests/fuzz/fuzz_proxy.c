/*
 * fuzz_proxy.c - PROXY protocol header parser (proxy_parse).
 *
 * Input: the first octets a load balancer sends on a connection.
 *
 * Checked: the result is NEED_MORE, INVALID (with a reason) or a length
 * within the input and PROXY_HEADER_MAX; INVALID and NEED_MORE only for
 * inputs shorter than the longest header when NEED_MORE; every proper prefix
 * of an accepted header needs more, and the header alone parses to the same
 * result (the client's bytes after it are not looked at); no prefix of an
 * input is refused if a longer one is accepted; a v1 header with addresses
 * re-formatted with inet_ntop parses to the same addresses and ports; a v2
 * header's family and addresses are those of its address block.
 */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "proxy.h"

static bool same(const struct proxy_info *a, const struct proxy_info *b)
{
	return a->version == b->version && a->has_addr == b->has_addr && a->family == b->family &&
	       !memcmp(a->src, b->src, sizeof(a->src)) && !memcmp(a->dst, b->dst, sizeof(a->dst)) &&
	       a->src_port == b->src_port && a->dst_port == b->dst_port;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = fuzz_alloc(size); /* exact size: a read past it is caught */
	memcpy(buf, data, size);
	struct proxy_info pi;
	const char *why = NULL;
	int r = proxy_parse(buf, size, &pi, &why);
	FUZZ_CHECK(r == PROXY_NEED_MORE || r == PROXY_INVALID || r > 0, "result %d", r);
	FUZZ_CHECK((r == PROXY_INVALID) == (why != NULL), "result %d with reason %s", r,
		   why ? why : "(none)");
	if (r == PROXY_NEED_MORE)
		FUZZ_CHECK(size < PROXY_HEADER_MAX, "needs more after %zu octets", size);
	if (r <= 0) {
		free(buf);
		return 0;
	}
	size_t n = (size_t)r;
	FUZZ_CHECK(n <= size && n <= PROXY_HEADER_MAX, "length %zu of %zu", n, size);
	FUZZ_CHECK(pi.version == 1 || pi.version == 2, "version %d", pi.version);
	FUZZ_CHECK(!pi.has_addr || pi.family == AF_INET || pi.family == AF_INET6, "family %d",
		   pi.family);

	/* The header alone gives the same; each proper prefix needs more. */
	struct proxy_info again;
	FUZZ_CHECK(proxy_parse(buf, n, &again, &why) == r && same(&pi, &again),
		   "the header alone parses differently");
	for (size_t k = 0; k < n; k++)
		FUZZ_CHECK(proxy_parse(buf, k, &again, &why) == PROXY_NEED_MORE,
			   "a prefix of %zu of %zu octets does not ask for more", k, n);

	if (pi.version == 1) {
		FUZZ_CHECK(n <= PROXY_V1_MAX && buf[n - 2] == '\r' && buf[n - 1] == '\n',
			   "v1 header of %zu octets not ending in CRLF", n);
		if (pi.has_addr) {
			char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN], line[PROXY_V1_MAX + 1];
			FUZZ_CHECK(inet_ntop(pi.family, pi.src, s, sizeof(s)) &&
				       inet_ntop(pi.family, pi.dst, d, sizeof(d)),
				   "inet_ntop");
			int len = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
					   pi.family == AF_INET ? "TCP4" : "TCP6", s, d,
					   pi.src_port, pi.dst_port);
			FUZZ_CHECK(len > 0 && (size_t)len < sizeof(line), "re-formatted line");
			FUZZ_CHECK(proxy_parse((const uint8_t *)line, (size_t)len, &again, &why) ==
					   len &&
				       same(&pi, &again),
				   "re-formatted '%s' parses differently", line);
		}
	} else {
		FUZZ_CHECK(n >= 16 && n == 16 + ((size_t)buf[14] << 8 | buf[15]), "v2 length %zu",
			   n);
		if (pi.has_addr) {
			size_t al = pi.family == AF_INET ? 4 : 16;
			FUZZ_CHECK((buf[12] & 0x0f) == 1, "addresses from a LOCAL header");
			FUZZ_CHECK(!memcmp(pi.src, buf + 16, al) &&
				       !memcmp(pi.dst, buf + 16 + al, al),
				   "v2 addresses");
			const uint8_t *p = buf + 16 + 2 * al;
			FUZZ_CHECK(pi.src_port == (p[0] << 8 | p[1]) &&
				       pi.dst_port == (p[2] << 8 | p[3]),
				   "v2 ports");
		}
	}
	free(buf);
	return 0;
}
