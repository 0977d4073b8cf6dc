/*
 * priv.h - giving up root once what needs it is open (priv.c).
 *
 * main() decides first (priv_plan), makes the spool the user's while still
 * root (priv_own_spool), binds the listeners and reads the certificates,
 * then drops everything (priv_drop) before it starts a thread or reads a
 * byte from the network, and checks that what a SIGHUP reads again can be
 * read as the user (priv_check_reload).
 */
#ifndef MXRING_PRIV_H
#define MXRING_PRIV_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "config.h"

struct priv {
	bool change;  /* root now: become uid/gid */
	bool as_root; /* root, allow_root = yes: nothing is dropped */
	uid_t uid;
	gid_t gid;
	char name[64]; /* the user, for messages and the ready line */
};

/*
 * From cfg->user, cfg->group, cfg->allow_root and who runs the process:
 * root with user set changes to it; root without it is refused unless
 * allow_root; anyone else stays who they are (user, if set, must be them).
 * Returns 0, or the exit status (2: root refused; 1: an unknown user or
 * group, or a user the process cannot become) after a message to err.
 */
int priv_plan(const struct config *cfg, struct priv *p, FILE *err)
    __attribute__((warn_unused_result));

/*
 * Root, changing user: spool_dir, what lies directly in it (the lock files,
 * active/, ready/, maildir/), what lies in active/ and maildir/ (its tmp/,
 * new/, cur/) and in maildir/tmp/ (the files a writer opens again) become
 * the user's and group's. Segments in
 * ready/ and messages in new/ are left as they are: nothing writes them
 * again, and moving or removing them needs only the folder. 0, or -1 after a
 * message to err.
 */
int priv_own_spool(const struct priv *p, const char *spool_dir, FILE *err)
    __attribute__((warn_unused_result));

/*
 * Nothing when p->as_root. Else becomes p's user and group (setgroups to
 * that group alone, setgid, setuid) when p->change, and drops every capability
 * (effective, permitted, inheritable, ambient, and the bounding set where
 * the process may) and sets no_new_privs, so that no exec could give any
 * back. Must run while the process has one thread: capabilities and
 * no_new_privs belong to threads. 0, or -1 after a message to err.
 */
int priv_drop(const struct priv *p, FILE *err) __attribute__((warn_unused_result));

/*
 * After priv_drop: every file a SIGHUP reads again (tls_cert_file,
 * tls_key_file, tls_ticket_key_file) opens for reading. 0, or how many do
 * not, after naming each.
 */
int priv_check_reload(const struct config *cfg, const struct priv *p, FILE *err)
    __attribute__((warn_unused_result));

#endif
