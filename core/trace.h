/*
 * trace.h - the Received: trace header written at the start of every
 * stored message (RFC 5321 4.4, protocol names RFC 3848; the exact text is
 * described with the spool's formats in spool.h).
 *
 * Formatting only: no I/O, no allocation, no state.
 */
#ifndef MXRING_TRACE_H
#define MXRING_TRACE_H

#include <stddef.h>

#include "msg.h"

/*
 * Writes the trace header of env into dst (cap >= SPOOL_TRACE_MAX) and
 * returns its length. host is used when env->myhostname is empty.
 */
size_t trace_format(char *dst, size_t cap, const struct envelope *env, const char *host);

#endif
