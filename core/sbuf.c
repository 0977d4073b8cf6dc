/*
 * sbuf.c - bounded text building (sbuf.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sbuf.h"

void sbuf_put(struct sbuf *b, const void *s, size_t n)
{
	if (b->over || n >= b->cap - b->len) {
		b->over = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void sbuf_puts(struct sbuf *b, const char *s)
{
	sbuf_put(b, s, strlen(s));
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	if (b->over)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len) {
		b->over = true;
		return;
	}
	b->len += (size_t)n;
}
