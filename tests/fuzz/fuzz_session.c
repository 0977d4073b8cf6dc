/*
 * fuzz_session.c - a whole SMTP session through the engine (smtp.c, body.c,
 * addr.c), driven by the fake shard of host.c.
 *
 * Input: an 8-byte header, then the client's bytes.
 *   h[0]     FH_* configuration flags (host.h): STARTTLS offered, bare LF
 *            rejected, small limits, a small output buffer, a failing body
 *            hook
 *   h[1..3]  feed sizes, used in turn (0: all that is left), so pipelined
 *            commands, partial lines and content cross feed boundaries
 *   h[4..5]  verdict pattern: 2 bits per hook call (helo/mail/rcpt/
 *            data_start fail on 3; data_end defers on 0-1; resume fails on 2-3)
 *   h[6]     the body hook fails past h[6] * 8 bytes (with FH_BODY_FAIL)
 *   h[7]     bits 0-1: how the session ends when the input does (peer close,
 *            timeout, shutdown); bit 2: a deferred message is resumed only
 *            after the next feed (the client keeps talking while the message
 *            is with the writer); bit 3: the input ending while a message is
 *            deferred ends the session before the host resumes it
 * After SMTP_STARTTLS the rest of the feed is dropped (it came before the
 * handshake) and the session goes on with the next feed, inside "TLS".
 * The invariants checked are listed in host.h.
 */
#include "fuzz.h"
#include "host.h"

#define HDR 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR)
		return 0;
	const uint8_t *h = data;
	struct fhost host;
	fhost_init(&host, h[0], (uint16_t)(h[4] | h[5] << 8), (uint64_t)h[6] * 8);
	host.hold_defer = h[7] & 4;
	bool close_in_wait = h[7] & 8;

	size_t off = HDR;
	for (unsigned k = 0; off < size && !host.closed; k++) {
		size_t n = h[1 + k % 3];
		if (n == 0 || n > size - off)
			n = size - off;
		bool was_deferred = host.defer;
		fhost_feed(&host, data + off, n);
		off += n;
		if (was_deferred)
			fhost_resume(&host); /* after one more feed came in */
	}
	/* The input ended: finish what the host holds, then feed what it kept. */
	for (unsigned i = 0; i < 1000 && !host.closed; i++) {
		if (host.defer) {
			if (close_in_wait)
				break;
			fhost_resume(&host);
		}
		size_t before = host.stash_len;
		if (before == 0)
			break;
		fhost_feed(&host, NULL, 0);
		if (!host.defer && host.stash_len == before)
			break; /* a partial line: the client said no more */
	}
	fhost_end(&host, h[7] & 3);
	fhost_free(&host);
	return 0;
}
