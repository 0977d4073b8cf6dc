/*
 * rcpt_table.h - recipient tables (recipient_table): which local parts of
 * the accepted domains exist, read from files in the text format of
 * Postfix's relay_recipient_maps sources.
 *
 * File format (what postmap reads, so existing files work unchanged): one
 * key per line, "user@example.com" or "@example.com" (any user of that
 * domain); the key ends at the first blank (space or tab), and anything
 * after it (Postfix files carry a value) is ignored; a line whose first
 * non-blank character is '#' is a comment; blank lines are skipped; a line
 * that starts with a blank continues the previous line (its value, so it
 * is ignored too). CRLF line ends are accepted. Keys are compared ASCII
 * case-insensitively (other octets, UTF-8 included, as they are). A key
 * with no '@', or with more than one unquoted '@' (a local part that
 * starts with '"' is quoted up to the next unescaped '"', which must be
 * followed by '@'), or with nothing after the '@', or with a control
 * octet, or longer than PATH_MAX_OCTETS, is an error naming the file and
 * the line.
 *
 * The table is built once and then read-only: lookups take no lock and
 * may run on any number of threads at once. A reload builds a new table
 * beside the old one; the caller swaps a pointer and frees the old table
 * once no reader can hold it.
 *
 * Layout: all keys, lower-cased, NUL-terminated, in one arena; an
 * open-addressing index of 32-bit arena offsets (load at most 3/4, linear
 * probing) beside a one-byte fingerprint per slot, so that a miss rarely
 * touches the arena. Memory beyond the keys' own bytes is about
 * 1 (NUL) + 5 / 0.75 .. 5 / 0.375 bytes per entry. The keys with their
 * NULs may take 4 GiB - 1 at most (a larger table is refused with an
 * error line), a file 4 GiB.
 */
#ifndef MXRING_RCPT_TABLE_H
#define MXRING_RCPT_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct rcpt_table;

/*
 * Builds a table from the comma-separated list of files in paths (blanks
 * around each trimmed, as path_list_next in config.h). Returns 0 with *out
 * set, or -1 after writing one line "mxring: FILE:LINE: what is wrong" (or
 * "mxring: FILE: strerror" when it cannot be read) to err; nothing is
 * leaked. Duplicate keys are kept once. An empty file is a valid empty
 * table.
 */
int rcpt_table_load(const char *paths, struct rcpt_table **out, FILE *err)
    __attribute__((warn_unused_result));

/*
 * Builds a table from one file's text (len bytes, need not be
 * NUL-terminated); name is used in error lines. For the fuzzer and the
 * unit tests; rcpt_table_load runs the same parser over each file, into
 * one table.
 */
int rcpt_table_parse(const char *name, const char *text, size_t len, struct rcpt_table **out,
		     FILE *err) __attribute__((warn_unused_result));

/*
 * Whether the recipient mailbox ("local@domain", len bytes, split at index
 * at: mailbox[at] == '@') is listed. Tried in order, as Postfix does:
 * "local@domain"; then, when delims (a NUL-terminated set of characters,
 * "" or NULL for none) is not empty and the local part holds one of them,
 * the local part cut before the first such character ("user+tag" ->
 * "user"), "user@domain" (not when that character comes first, and never
 * for postmaster, MAILER-DAEMON and double-bounce, nor, with '-' among the
 * delimiters, for owner-* and *-request: as Postfix's split_addr); then
 * "@domain". Case-insensitive; the octets of a quoted local
 * part are taken as they are. A candidate longer than PATH_MAX_OCTETS, or
 * a mailbox holding a NUL, matches nothing. No allocation, no lock.
 */
bool rcpt_table_lookup(const struct rcpt_table *t, const char *mailbox, size_t len, size_t at,
		       const char *delims);

/* Distinct keys in the table. */
size_t rcpt_table_entries(const struct rcpt_table *t);

/* Bytes the table holds (arena, index, fingerprints, the struct). */
size_t rcpt_table_bytes(const struct rcpt_table *t);

/* Sum of the keys' lengths (without NULs): bytes_per_entry beyond the key
 * = (rcpt_table_bytes - rcpt_table_key_bytes) / rcpt_table_entries. */
size_t rcpt_table_key_bytes(const struct rcpt_table *t);

void rcpt_table_free(struct rcpt_table *t);

#endif
