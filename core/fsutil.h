/*
 * fsutil.h - file-system helpers of the spool: whole reads and writes,
 * directory fsync, directory listing, a rename that does not replace.
 *
 * Every function returns 0 (or a descriptor) or -errno, retries EINTR, and
 * keeps no state. Nothing here decides what must be durable when: the
 * callers (spool.c, segment.c, maildir.c) say why at each fsync.
 */
#ifndef MXRING_FSUTIL_H
#define MXRING_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* fsync(fd): 0 or -errno. */
int fsutil_fsync(int fd) __attribute__((warn_unused_result));

/* Closes *fd when it is open (>= 0) and sets it to -1. */
void fsutil_close(int *fd);

/*
 * fsyncs the directory that holds path, so that its entry for path is
 * durable. path is changed during the call and restored. 0 or -errno.
 */
int fsutil_fsync_parent(char *path) __attribute__((warn_unused_result));

/* Opens directory name under dirfd, made first (0750) when create: the fd or -errno. */
int fsutil_open_subdir(int dirfd, const char *name, bool create)
    __attribute__((warn_unused_result));

/*
 * renameat that never replaces an existing file (where the filesystem can
 * tell): -EEXIST when to exists. 0 or -errno.
 */
int fsutil_rename_noreplace(int from_dir, const char *from, int to_dir, const char *to)
    __attribute__((warn_unused_result));

/*
 * Writes iov[0..n) at off, whatever the partial writes, at most IOV_MAX
 * iovecs a call; iov is consumed (changed). 0, -EIO when the kernel wrote
 * nothing, or -errno.
 */
int fsutil_pwritev_all(int fd, struct iovec *iov, unsigned n, uint64_t off)
    __attribute__((warn_unused_result));

/* Reads exactly len bytes at off: 0, -ENODATA at end of file, or -errno. */
int fsutil_pread_all(int fd, void *buf, size_t len, uint64_t off)
    __attribute__((warn_unused_result));

/*
 * Lists the names in dirfd accepted by keep (NULL: all but dot files),
 * sorted, at most DIR_FILES_MAX (-E2BIG past it). 0 and *names, an owned
 * array of *count owned strings (free with fsutil_names_free), or -errno.
 * dirfd is not changed (the listing reads a duplicate).
 */
int fsutil_dir_list(int dirfd, bool (*keep)(const char *name, void *arg), void *arg, char ***names,
		    uint32_t *count) __attribute__((warn_unused_result));

/* Frees what fsutil_dir_list returned; NULL with n == 0 is a no-op. */
void fsutil_names_free(char **v, uint32_t n);

/* Takes the exclusive flock(2) of wNN.lock in dirfd (made 0640 if missing),
 * without waiting: writer NN's files are then this process's. The fd (keep
 * it open to hold the lock), -EBUSY when another holds it, or -errno. */
int fsutil_lock_writer(int dirfd, unsigned n) __attribute__((warn_unused_result));

#endif
