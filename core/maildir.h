/*
 * maildir.h - the Maildir format of the spool: one file per message in
 * maildir/new/, written in maildir/tmp/ first (the file's text is
 * described in spool.h).
 */
#ifndef MXRING_MAILDIR_H
#define MXRING_MAILDIR_H

struct spool_ops;

/* The Maildir format's operations, for spool.c (spool_int.h). */
extern const struct spool_ops maildir_ops;

#endif
