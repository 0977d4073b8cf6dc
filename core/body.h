/*
 * body.h - DATA and BDAT content decoding without moving bytes.
 *
 * The decoder scans received bytes and reports the message content as runs
 * (pointers into the input) plus, where it must insert bytes, pointers into
 * body_static. It never copies content. RFC 5321 4.1.1.4 and 4.5.2:
 *  - only <CR><LF>.<CR><LF> ends DATA; the first CRLF belongs to the
 *    content. A bare LF or a bare CR never ends a line for this purpose
 *    (SMTP smuggling), so a dot after one is content, not a terminator;
 *  - a line that starts (after a real CRLF) with "." loses that dot; so does
 *    one after a bare LF ("..x" keeps one dot, as in Postfix), except "."
 *    alone there, which is content and never a terminator;
 *  - a bare LF is reported as <CR><LF> (normalize) and counted, so the
 *    caller can reject the message instead. A bare CR is left as it is.
 * BDAT content (RFC 3030) has no dot handling and no terminator; bare LFs are
 * treated as in DATA.
 */
#ifndef MXRING_BODY_H
#define MXRING_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ".\r\n": the only bytes the decoder inserts: "." (kept dot), "\r", "\r\n". */
extern const uint8_t body_static[3];

static inline bool body_is_static(const uint8_t *p)
{
	return p >= body_static && p < body_static + sizeof(body_static);
}

/* Called for each run of content, in order. Returns 0 to go on. */
typedef int (*body_emit_fn)(void *ctx, const uint8_t *p, size_t len);

struct body_dec {
	uint8_t state;	  /* private */
	uint8_t last_cr;  /* the last byte scanned was CR */
	uint32_t bare_lf; /* bare LFs seen (each reported as CRLF) */
};

/* Resets d for a new message; DATA starts at the beginning of a line. */
void body_init(struct body_dec *d);

/*
 * DATA: scans in[0..len), reporting content through emit. Returns the bytes
 * used; *done is set when the terminator was found (the bytes used include
 * it, and what follows is the next command). Stops early only when emit
 * returns non-zero (returns the bytes used so far, *done false, and the
 * caller must not feed again).
 */
size_t body_data(struct body_dec *d, const uint8_t *in, size_t len, body_emit_fn emit, void *ctx,
		 bool *done);

/* BDAT: all of in is content; reports it (bare LF normalized). Returns 0 or emit's value. */
int body_bdat(struct body_dec *d, const uint8_t *in, size_t len, body_emit_fn emit, void *ctx);

#endif
