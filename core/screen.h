/*
 * screen.h - the recipient table in force (recipient_table), shared by all
 * shards, and its reload.
 *
 * The table is read by the shards' RCPT hook with one acquire load of a
 * pointer and no lock. A reload (SIGHUP, the main thread) builds the new
 * table beside the old one, swaps the pointer, and frees the old table
 * only after every shard has ended a loop pass since the swap
 * (shard_quiesce): a shard reads the pointer inside a pass and keeps
 * nothing past it, so none can still hold the old one.
 */
#ifndef MXRING_SCREEN_H
#define MXRING_SCREEN_H

#include <stdbool.h>
#include <stdio.h>

#include "addr.h"
#include "config.h"

struct shard;

/* Loads cfg->recipient_table (if set) at start. 0, or -1 with a message to err. */
int screen_start(const struct config *cfg, FILE *err) __attribute__((warn_unused_result));

/* SIGHUP: loads the table again; a file that fails keeps the old table. Logs either way. */
void screen_reload(const struct config *cfg, struct shard **shards, unsigned nshards);

/* Whether the recipient a (in an accepted domain) exists: listed in the
 * table in force, or no table is set. Any thread, no lock. */
bool screen_rcpt_known(const struct config *cfg, const struct addr *a);

/* Frees the table (at exit, once the shards are gone). */
void screen_stop(void);

#endif
