/*
 * proxy.h - the PROXY protocol header (HAProxy, versions 1 and 2) that a load
 * balancer in front of the receiver sends before the client's first byte, so
 * that logs, Received: headers and per-address limits see the real client.
 *
 * Sans-I/O: proxy_parse looks at the bytes received so far and says whether
 * they hold a whole header (its length), need more bytes, or cannot be one.
 * No system call, no allocation; inputs are bounded by PROXY_HEADER_MAX.
 *
 * Version 1: "PROXY TCP4 SRC DST SPORT DPORT\r\n", "PROXY TCP6 ...", or
 * "PROXY UNKNOWN[ anything]\r\n"; at most 107 octets with the CRLF. Addresses
 * must be canonical dotted quads / RFC 4291 text, ports 0..65535 without
 * leading zeros.
 * Version 2: the 12-octet signature, version 2, command LOCAL (health checks
 * of the balancer: the connection's own addresses are kept) or PROXY, family
 * INET/INET6 over STREAM (or UNSPEC, kept like LOCAL), the address block and
 * any TLVs (skipped, not interpreted) within PROXY_V2_MAX octets.
 */
#ifndef MXRING_PROXY_H
#define MXRING_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXY_V1_MAX	 107	     /* the longest v1 line, CRLF included */
#define PROXY_V2_MAX	 (16 + 1024) /* fixed part + the longest address block and TLVs */
#define PROXY_HEADER_MAX PROXY_V2_MAX

enum {
	PROXY_NEED_MORE = 0, /* a prefix of a valid header: wait for more bytes */
	PROXY_INVALID = -1,  /* not a PROXY header, or a malformed one: *why says which */
};

struct proxy_info {
	int version;	   /* 1 or 2 */
	bool has_addr;	   /* false: LOCAL, UNKNOWN or UNSPEC (keep the socket's addresses) */
	int family;	   /* AF_INET or AF_INET6 when has_addr */
	uint8_t src[16];   /* client address, network order (4 octets for AF_INET) */
	uint8_t dst[16];   /* address the client connected to */
	uint16_t src_port; /* host order */
	uint16_t dst_port;
};

/*
 * Looks at the first len octets received on a connection. Returns the
 * header's length (> 0, at most PROXY_HEADER_MAX) and fills *out when they
 * start with a whole valid header; PROXY_NEED_MORE when they are a proper
 * prefix of one; PROXY_INVALID, with *why set to a static reason, otherwise.
 * Bytes after the header are the client's and are not looked at.
 */
int proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why);

#endif
