/*
 * setup_check.h - mxring --check (setup_check.c): is this set-up ready to
 * run, as `postfix check` asks of Postfix's.
 */
#ifndef MXRING_SETUP_CHECK_H
#define MXRING_SETUP_CHECK_H

#include <stdio.h>

#include "config.h"

/*
 * Checks, without binding or storing anything: the user and group, every
 * certificate and key (each loads; each key matches its certificate), their
 * modes (a key or ticket key file that others may read or anyone may
 * write is a warning), that the user can read what a reload reads again,
 * and that the spool directory is a directory the user can use (or can be
 * made). Writes "mxring: check: ..." lines to out; returns 0 (warnings
 * allowed) or 1 (at least one problem).
 */
int setup_check(const struct config *cfg, FILE *out);

#endif
