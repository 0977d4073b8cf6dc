/*
 * segment.h - the segment format of the spool: per-writer append-only
 * files of records, in active/ while written and in ready/ after (the
 * format, byte by byte, is in spool.h; the records in spoolrec.h).
 */
#ifndef MXRING_SEGMENT_H
#define MXRING_SEGMENT_H

#include <stdbool.h>
#include <stdint.h>

#define SEGMENT_NAME_LEN 33 /* "wNN-" 16 hex "-" 8 hex ".seg" */

struct spool_ops;

/* The segment format's operations, for spool.c (spool_int.h). */
extern const struct spool_ops segment_ops;

/*
 * Parses a segment name, "wNN-<16 hex>-<8 hex>.seg" (lower case hex): true
 * and its writer, run and sequence, or false when name is not one.
 */
bool segment_name_parse(const char *name, unsigned *writer, uint64_t *run_us, uint32_t *seq);

#endif
