/*
 * log.c - key=value log lines on standard error.
 *
 * Contract (log.h): log_escape turns client text into something safe to put
 * in a key=value line: printable ASCII other than space, '"' and '\\' is kept;
 * '"' and '\\' become \" and \\; every other byte (space, controls, DEL and
 * 8-bit octets) becomes \xHH, so a client can neither forge a key nor break
 * a line. At most max source bytes are shown, and a cut (by max or by the
 * room in dst) ends with "...". dst is always NUL-terminated when cap > 0.
 *
 * log_line builds the whole line in a LOG_LINE_MAX stack buffer and writes
 * it with one write(2): writes of at most PIPE_BUF bytes to a pipe are
 * atomic, so lines from shards and writers never interleave and no lock is
 * taken. A line longer than the buffer is cut and still ends in "\n".
 */
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <limits.h>

static_assert(LOG_LINE_MAX <= PIPE_BUF, "a log line is written atomically");

#define LOG_CUT_MARK	 "..."
#define LOG_CUT_MARK_LEN 3
#define LOG_WRITE_TRIES	 8

static atomic_int log_on = 1;

/* Bytes that stand for themselves. */
static bool log_plain(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* Length of the escaped form of c. */
static size_t log_esc_len(unsigned char c)
{
	if (log_plain(c))
		return 1;
	if (c == '"' || c == '\\')
		return 2;
	return 4;
}

static size_t log_put(char *dst, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";

	if (log_plain(c)) {
		dst[0] = (char)c;
		return 1;
	}
	if (c == '"' || c == '\\') {
		dst[0] = '\\';
		dst[1] = (char)c;
		return 2;
	}
	dst[0] = '\\';
	dst[1] = 'x';
	dst[2] = hex[c >> 4];
	dst[3] = hex[c & 0xf];
	return 4;
}

size_t log_escape(char *dst, size_t cap, const char *src, size_t len, size_t max)
{
	const unsigned char *p = (const unsigned char *)src;
	size_t n = len < max ? len : max;
	size_t room, need = 0, out = 0, i;
	bool cut = len > max;

	if (cap == 0)
		return 0;
	room = cap - 1;
	for (i = 0; i < n && need <= room; i++)
		need += log_esc_len(p[i]);
	if (need > room)
		cut = true;
	if (cut)
		room = room > LOG_CUT_MARK_LEN ? room - LOG_CUT_MARK_LEN : 0;
	for (i = 0; i < n; i++) {
		if (out + log_esc_len(p[i]) > room)
			break;
		out += log_put(dst + out, p[i]);
	}
	if (cut) {
		/* Even the mark may not fit a tiny dst: keep what does. */
		for (i = 0; i < LOG_CUT_MARK_LEN && out < cap - 1; i++)
			dst[out++] = '.';
	}
	dst[out] = '\0';
	return out;
}

/* Lines of a thread that batches (log_batch): whole lines, at most PIPE_BUF
 * bytes, so one write(2) of the batch is still atomic. */
static _Thread_local char batch[PIPE_BUF];
static _Thread_local size_t batch_len;
static _Thread_local bool batch_on;

static void write_all(const char *p, size_t n)
{
	size_t off = 0;
	for (int tries = 0; off < n && tries < LOG_WRITE_TRIES; tries++) {
		ssize_t w = write(STDERR_FILENO, p + off, n - off);

		if (w < 0 && errno != EINTR)
			break;
		if (w > 0)
			off += (size_t)w;
	}
}

/* "2026-11-28T04:30:00.123Z"; returns its length, or 0 if the clock fails. */
static size_t log_stamp(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	size_t n;
	int m;

	static _Thread_local time_t cached_sec = -1;
	static _Thread_local char cached[32];
	static _Thread_local size_t cached_len;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	if (ts.tv_sec != cached_sec) {
		if (gmtime_r(&ts.tv_sec, &tm) == NULL)
			return 0;
		cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
		if (cached_len == 0)
			return 0;
		cached_sec = ts.tv_sec;
	}
	if (cached_len >= cap)
		return 0;
	memcpy(buf, cached, cached_len);
	n = cached_len;
	m = snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
	if (m < 0 || (size_t)m >= cap - n)
		return 0;
	return n + (size_t)m;
}

void log_line(const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	size_t n;
	va_list ap;
	int m, saved = errno;

	if (!atomic_load_explicit(&log_on, memory_order_relaxed))
		return;
	n = log_stamp(line, sizeof(line));
	m = snprintf(line + n, sizeof(line) - n, "%smxring: ", n ? " " : "");
	if (m < 0)
		return;
	n += (size_t)m;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	/* vsnprintf left room for a NUL: the newline takes its place. */
	n += (size_t)m < sizeof(line) - n ? (size_t)m : sizeof(line) - n - 1;
	line[n++] = '\n';

	if (batch_on) {
		if (batch_len + n > sizeof(batch))
			log_flush();
		memcpy(batch + batch_len, line, n);
		batch_len += n;
		errno = saved;
		return;
	}
	write_all(line, n);
	errno = saved;
}

void log_batch(int on)
{
	if (!on)
		log_flush();
	batch_on = on != 0;
}

void log_flush(void)
{
	int saved = errno;
	if (batch_len)
		write_all(batch, batch_len);
	batch_len = 0;
	errno = saved;
}

void log_enable(int on)
{
	atomic_store_explicit(&log_on, on != 0, memory_order_relaxed);
}

static _Atomic int debug_on;

void log_set_debug(int on)
{
	atomic_store_explicit(&debug_on, on != 0, memory_order_relaxed);
}

int log_debugging(void)
{
	return atomic_load_explicit(&debug_on, memory_order_relaxed);
}
