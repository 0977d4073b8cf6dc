/*
 * log.h - key=value log lines on standard error.
 *
 * One line per session end and one per accepted message (STYLE.md). Text
 * that came from a client is escaped (bytes outside printable ASCII, space,
 * '"' and '\\' as \xHH or \" \\) and cut to LOG_CLIENT_TEXT_MAX characters.
 * A line is written with one write(2) so lines from shards never interleave.
 */
#ifndef MXRING_LOG_H
#define MXRING_LOG_H

#include <stddef.h>

#define LOG_CLIENT_TEXT_MAX 100
#define LOG_LINE_MAX	    2048

/*
 * Writes src (len bytes) escaped into dst (cap bytes, NUL-terminated), at
 * most max source bytes; a cut is marked by a trailing "...". Returns the
 * length written (without the NUL).
 */
size_t log_escape(char *dst, size_t cap, const char *src, size_t len, size_t max);

/* Formats one line (printf-style, no newline needed), prefixed with an ISO
 * 8601 UTC time and "mxring:", and writes it to stderr in one write. */
void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Batching for the calling thread (a shard's event loop): with on, log_line
 * only appends to a per-thread buffer of at most PIPE_BUF bytes, written
 * when full and by log_flush, which the loop calls once per pass. Turning it
 * off flushes.
 */
void log_batch(int on);
void log_flush(void);

/* Sets whether log_line writes at all (tests silence it). Default on. */
void log_enable(int on);

/* log_level = debug: lines that follow one connection step by step (its
 * phases). Callers test log_debugging() before formatting one. Default off. */
void log_set_debug(int on);
int log_debugging(void);

#endif
