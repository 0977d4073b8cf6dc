/*
 * body.c - DATA and BDAT content decoding without moving bytes (see body.h).
 *
 * The DATA decoder is a small state machine over "where in a line are we".
 * Content is reported in runs as long as possible: a run is cut only where a
 * byte must be dropped (a leading dot), inserted (CR before a bare LF) or
 * where the input ends. The line scan uses memchr for LF, so the cost per
 * byte is that of memchr on ordinary text.
 *
 * Invariants: a line start for the terminator is only ever entered after a
 * real <CR><LF> or at the start of DATA. A bare LF starts a line for
 * dot-unstuffing only (ST_LS_LF): "..x" after it loses a dot, as it does in
 * Postfix, which takes the LF for a line end, but "." there never ends the
 * data. A dot or a CR seen at a line start is held back (not yet reported)
 * until the next byte says what it was, and then reported from body_static
 * if it was content.
 */
#include <string.h>

#include "body.h"

const uint8_t body_static[3] = {'.', '\r', '\n'};

#define DOT  (body_static + 0)
#define CR   (body_static + 1)
#define CRLF (body_static + 1)

enum {
	ST_LS = 0, /* at a line start (after CRLF) */
	ST_DOT,	   /* line start, then ".": dot held back */
	ST_DOT_CR, /* line start, ".", CR: both held back */
	ST_MID,	   /* inside a line */
	ST_LS_LF,  /* after a bare LF: a line start for dot-unstuffing only */
	ST_DOT_LF, /* after a bare LF, then ".": dot held back */
};

void body_init(struct body_dec *d)
{
	d->state = ST_LS;
	d->last_cr = 0;
	d->bare_lf = 0;
}

/* Reports in[*start..end) if not empty. */
static int flush(const uint8_t *in, size_t *start, size_t end, body_emit_fn emit, void *ctx)
{
	int rc = 0;
	if (end > *start)
		rc = emit(ctx, in + *start, end - *start);
	*start = end;
	return rc;
}

/*
 * Scans a line body from pos for the next LF. Returns the index after the
 * LF, or len when none. On a bare LF reports the run before it plus CRLF.
 * *ls is set to the state that follows the LF: ST_LS after a real CRLF,
 * ST_LS_LF after a bare LF, else ST_MID.
 */
static size_t scan_mid(struct body_dec *d, const uint8_t *in, size_t pos, size_t len, size_t *run,
		       body_emit_fn emit, void *ctx, int *rc, int *ls)
{
	const uint8_t *lf = memchr(in + pos, '\n', len - pos);
	*ls = ST_MID;
	if (!lf) {
		d->last_cr = in[len - 1] == '\r';
		return len;
	}
	size_t i = (size_t)(lf - in);
	int cr = i > pos ? in[i - 1] == '\r' : d->last_cr;
	d->last_cr = 0;
	if (cr) {
		*ls = ST_LS;
		return i + 1;
	}
	*ls = ST_LS_LF;
	d->bare_lf++;
	*rc = flush(in, run, i, emit, ctx);
	if (*rc == 0)
		*rc = emit(ctx, CRLF, 2);
	*run = i + 1;
	return i + 1;
}

size_t body_data(struct body_dec *d, const uint8_t *in, size_t len, body_emit_fn emit, void *ctx,
		 bool *done)
{
	size_t pos = 0, run = 0;
	int rc = 0, ls;

	*done = false;
	while (pos < len && rc == 0) {
		switch (d->state) {
		case ST_LS:
		case ST_LS_LF:
			if (in[pos] == '.') {
				/* Held back until the next byte says what it is. */
				rc = flush(in, &run, pos, emit, ctx);
				d->state = d->state == ST_LS ? ST_DOT : ST_DOT_LF;
				run = ++pos;
			} else {
				d->state = ST_MID;
				d->last_cr = 0;
			}
			break;
		case ST_DOT:
			if (in[pos] == '\r') {
				d->state = ST_DOT_CR;
				run = ++pos;
			} else if (in[pos] == '\n') {
				/* "." ended by a bare LF: not a terminator; keep the dot. */
				rc = emit(ctx, DOT, 1);
				d->state = ST_MID;
				d->last_cr = 0;
			} else {
				/* A stuffed dot: dropped, the line goes on. */
				d->state = ST_MID;
				d->last_cr = 0;
			}
			break;
		case ST_DOT_CR:
			if (in[pos] == '\n') {
				d->state = ST_LS;
				*done = true;
				return pos + 1;
			}
			/* Dot dropped; the CR was content after all. */
			rc = emit(ctx, CR, 1);
			d->state = ST_MID;
			d->last_cr = 1;
			break;
		case ST_MID:
			pos = scan_mid(d, in, pos, len, &run, emit, ctx, &rc, &ls);
			d->state = (uint8_t)ls;
			break;
		case ST_DOT_LF:
			/* "." alone on its line is content here: kept. Before anything
			 * else it was a stuffed dot: dropped. Either way the byte after
			 * it is read as inside a line (ST_MID). */
			if (in[pos] == '\r' || in[pos] == '\n')
				rc = emit(ctx, DOT, 1);
			d->state = ST_MID;
			d->last_cr = 0;
			break;
		}
	}
	if (rc == 0)
		rc = flush(in, &run, pos, emit, ctx);
	return rc == 0 ? pos : run;
}

int body_bdat(struct body_dec *d, const uint8_t *in, size_t len, body_emit_fn emit, void *ctx)
{
	size_t pos = 0, run = 0;
	int rc = 0, ls;

	while (pos < len && rc == 0)
		pos = scan_mid(d, in, pos, len, &run, emit, ctx, &rc, &ls);
	if (rc == 0)
		rc = flush(in, &run, len, emit, ctx);
	return rc;
}
