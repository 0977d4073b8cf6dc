/*
 * addr.h - RFC 5321 4.1.2 paths (MAIL FROM / RCPT TO arguments) and relay control.
 *
 * Grammar accepted: "<" [ A-d-l ":" ] Mailbox ">" with Mailbox = Local-part "@"
 * ( Domain / address-literal ), Local-part = Dot-string / Quoted-string.
 * The source route (A-d-l) is parsed and ignored (RFC 5321 4.1.1.3, C.).
 * "<>" is the null reverse-path (MAIL only). UTF-8 in local part and domain
 * is accepted only when utf8 is allowed (SMTPUTF8, RFC 6531). No system call,
 * no allocation.
 */
#ifndef MXRING_ADDR_H
#define MXRING_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "bounds.h"

enum addr_status {
	ADDR_OK = 0,
	ADDR_SYNTAX,   /* 501 5.1.3 bad address syntax (or 501 5.1.7 for MAIL) */
	ADDR_TOO_LONG, /* 501 5.1.3 path, local part or domain past RFC 5321 4.5.3.1 */
	ADDR_NULL,     /* "<>" where the caller did not allow it */
	ADDR_UTF8,     /* 8-bit octets without SMTPUTF8: 553 5.6.7 */
};

struct addr {
	char mailbox[PATH_MAX_OCTETS + 1]; /* "local@domain", quotes kept as sent, "" for <> */
	size_t len;			   /* strlen(mailbox) */
	size_t at;			   /* index of the '@' that splits local part and domain */
	bool is_null;			   /* "<>" */
	bool is_literal;		   /* domain is an address literal "[...]" */
	bool has_routing; /* local part holds '%', '!' or '@' (quoted): a relay trick */
	bool has_8bit;	  /* octets >= 0x80 */
};

/*
 * Parses a path at s (len bytes; s need not be NUL-terminated). Leading
 * spaces are skipped, and a missing "<...>" is accepted from sloppy clients
 * only as a single token without spaces (as Postfix does). On ADDR_OK, out
 * is filled and *end is the index just past the path (parameters follow).
 */
enum addr_status addr_parse(const char *s, size_t len, bool allow_null, bool allow_utf8,
			    struct addr *out, size_t *end);

/*
 * Relay control. True when the mailbox's domain is one we accept mail for:
 * equal (ASCII case-insensitive) to an entry of cfg->accept_domains, or a
 * subdomain of an entry written with a leading dot. Address literals and
 * mailboxes with routing (has_routing) are never accepted.
 */
bool addr_accepted(const struct config *cfg, const struct addr *a);

#endif
