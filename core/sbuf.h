/*
 * sbuf.h - text built into a caller's fixed buffer, with one overflow flag.
 *
 * Nothing is ever written past cap: a put that does not fit sets over and
 * every later put is a no-op, so a builder checks over once at the end.
 * len < cap after every put, which leaves room for the NUL the caller
 * writes. Used for the trace header (trace.c) and the maildir header lines
 * (maildir.c).
 */
#ifndef MXRING_SBUF_H
#define MXRING_SBUF_H

#include <stdbool.h>
#include <stddef.h>

struct sbuf {
	char *p; /* borrowed: cap bytes */
	size_t len;
	size_t cap;
	bool over;
};

/* Appends n bytes of s. */
void sbuf_put(struct sbuf *b, const void *s, size_t n);

/* Appends the string s. */
void sbuf_puts(struct sbuf *b, const char *s);

/* Appends printf(fmt, ...). */
__attribute__((format(printf, 2, 3))) void sbuf_printf(struct sbuf *b, const char *fmt, ...);

#endif
