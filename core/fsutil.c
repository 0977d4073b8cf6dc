/*
 * fsutil.c - file-system helpers of the spool (fsutil.h).
 *
 * Stateless: each call opens and closes what it needs, except the
 * descriptors its caller hands it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bounds.h"
#include "fsutil.h"

int fsutil_fsync(int fd)
{
	return fsync(fd) < 0 ? -errno : 0;
}

void fsutil_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int fsutil_fsync_parent(char *path)
{
	char *slash = strrchr(path, '/');
	const char *parent = slash == NULL ? "." : slash == path ? "/" : path;
	if (slash && slash != path)
		*slash = 0;
	int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = fd < 0 ? -errno : fsutil_fsync(fd);
	if (fd >= 0)
		close(fd);
	if (slash && slash != path)
		*slash = '/';
	return r;
}

int fsutil_open_subdir(int dirfd, const char *name, bool create)
{
	if (create && mkdirat(dirfd, name, 0750) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int fsutil_rename_noreplace(int from_dir, const char *from, int to_dir, const char *to)
{
	if (renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (faccessat(to_dir, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	return renameat(from_dir, from, to_dir, to) < 0 ? -errno : 0;
}

int fsutil_pwritev_all(int fd, struct iovec *iov, unsigned n, uint64_t off)
{
	unsigned i = 0;
	while (i < n) {
		unsigned cnt = n - i < SPOOL_IOV_MAX ? n - i : SPOOL_IOV_MAX;
		ssize_t w = pwritev(fd, iov + i, (int)cnt, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
		size_t left = (size_t)w;
		while (i < n && left >= iov[i].iov_len) {
			left -= iov[i].iov_len;
			i++;
		}
		if (left > 0) {
			iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
			iov[i].iov_len -= left;
		}
	}
	return 0;
}

int fsutil_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ENODATA;
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int fsutil_dir_list(int dirfd, bool (*keep)(const char *name, void *arg), void *arg, char ***names,
		    uint32_t *count)
{
	int fd = dup(dirfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = -errno;
		close(fd);
		return e;
	}
	rewinddir(d);
	char **v = NULL;
	uint32_t n = 0, cap = 0;
	int err = 0;
	struct dirent *de;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || (keep && !keep(de->d_name, arg)))
			continue;
		if (n >= DIR_FILES_MAX) {
			err = -E2BIG;
			break;
		}
		if (n == cap) {
			uint32_t ncap = cap ? cap * 2 : 64;
			char **nv = realloc(v, ncap * sizeof(*nv));
			if (!nv) {
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[n] = strdup(de->d_name);
		if (!v[n]) {
			err = -ENOMEM;
			break;
		}
		n++;
	}
	if (!err && errno)
		err = -errno;
	closedir(d);
	if (err) {
		for (uint32_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return err;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), name_cmp);
	*names = v;
	*count = n;
	return 0;
}

void fsutil_names_free(char **v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int fsutil_lock_writer(int dirfd, unsigned n)
{
	char name[16];
	snprintf(name, sizeof(name), "w%02u.lock", n % 100u);
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return e;
	}
	return fd;
}
