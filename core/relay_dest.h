/*
 * relay_dest.h - where the relay delivers: the entries of relay_host.
 *
 * Postfix's syntax of a next hop, with the transport in front:
 *   smtp:[hub.example.net]:25   smtp:192.0.2.10:2525   smtp:[2001:db8::1]:25
 *   lmtp:[127.0.0.1]:24         lmtp:unix:/run/dovecot/lmtp
 *   [hub.example.net]           (no transport: smtp; no port: 25, LMTP 24)
 * Brackets are optional around a name or an IPv4 address and needed around
 * an IPv6 one. mxring never looks up MX records: a name is resolved to its
 * addresses (A and AAAA), with or without brackets.
 */
#ifndef MXRING_RELAY_DEST_H
#define MXRING_RELAY_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"

#define RELAY_HOSTS_MAX	    8	/* entries of relay_host: tried in order */
#define RELAY_UNIX_PATH_MAX 107 /* sun_path without its NUL */
#define RELAY_DEST_TEXT_MAX (8 + DOMAIN_MAX + 8)

enum relay_proto { RELAY_SMTP = 0, RELAY_LMTP = 1 };

struct relay_dest {
	uint8_t proto;		   /* enum relay_proto */
	bool unix_path;		   /* host is a socket path */
	uint16_t port;		   /* TCP port (0 for a socket path) */
	char host[DOMAIN_MAX + 1]; /* a name, an address (IPv6 without brackets), or a path */
};

/*
 * Parses one entry (t, n bytes): 0 and *d, or -1 and *why (a constant
 * string saying what is wrong).
 */
int relay_dest_parse(const char *t, size_t n, struct relay_dest *d, const char **why);

/* The entry as written back ("smtp:[host]:port", "lmtp:unix:/path") into buf; buf. */
const char *relay_dest_text(const struct relay_dest *d, char *buf, size_t cap);

#endif
