/*
 * fuzz_command.c - the command parser of the engine (smtp.c, addr.c): the
 * input is fed as command lines in one smtp_feed.
 *
 * Input: byte 0 holds flags, the rest is the client's bytes.
 *   bit 0  STARTTLS offered
 *   bit 1  "EHLO c.test" was accepted before the input
 *   bit 2  ... and "MAIL FROM:<a@example.com>"
 *   bit 3  ... and "RCPT TO:<b@example.com>"
 *   bit 4  recipient_limit = 2 and error_limit = 3
 *   bit 5  data_start accepts (DATA then takes the rest as content); else it
 *          refuses, so that every line after DATA is a command again
 * The whole input is one feed (an output buffer that fills is drained and
 * the rest fed again, as a shard does). Checked: the invariants of host.h,
 * among them the reply framing and the hook order.
 */
#include <string.h>

#include "fuzz.h"
#include "host.h"

static void pre(struct fhost *h, const char *line)
{
	fhost_feed(h, (const uint8_t *)line, strlen(line));
	FUZZ_CHECK(!h->closed && h->stash_len == 0, "preamble '%s'", line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned f = data[0];
	unsigned flags = (f & 1 ? FH_STARTTLS : 0) | (f & 16 ? FH_FEW_RCPT | FH_FEW_ERRORS : 0);
	struct fhost host;
	fhost_init(&host, flags, 0, 0);
	host.refuse_data = !(f & 32);
	if (f & 14)
		pre(&host, "EHLO c.test\r\n");
	if (f & 12)
		pre(&host, "MAIL FROM:<a@example.com>\r\n");
	if (f & 8)
		pre(&host, "RCPT TO:<b@example.com>\r\n");
	fhost_feed(&host, data + 1, size - 1);
	fhost_end(&host, 0);
	fhost_free(&host);
	return 0;
}
