/*
 * sandbox.h - what the running receiver may still reach in the file system
 * and the network (Landlock, sandbox.c).
 */
#ifndef MXRING_SANDBOX_H
#define MXRING_SANDBOX_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/*
 * Confines the calling thread and every thread it starts later (so: call it
 * before the first one, after the privileges are dropped): it may read files
 * only in the folders of the files a SIGHUP reads again (tls_cert_file,
 * tls_key_file, tls_ticket_key_file, as named and as their links resolve), and
 * read, write, create, rename and remove only under spool_dir; nothing else
 * in the file system, and (Landlock ABI 4, Linux 6.7) no TCP bind or connect
 * at all. Writes what it did into what ("abi6", "off", "unavailable: ...")
 * for the ready line. 0, or -1 after a message to err (a kernel that has no
 * Landlock is not an error).
 */
int sandbox_enter(const struct config *cfg, char *what, size_t cap, FILE *err)
    __attribute__((warn_unused_result));

#endif
