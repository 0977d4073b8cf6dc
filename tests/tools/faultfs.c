/*
 * faultfs.c - a FUSE pass-through file system that injects disk faults, for tests.
 *
 *   faultfs [-d] BACKING MOUNTPOINT CONTROL
 *
 * Mirrors the directory BACKING at MOUNTPOINT and runs in the foreground
 * until the mount goes (fusermount3 -u, umount) or SIGTERM/SIGINT/SIGHUP,
 * which it also gets when the process that started it dies; then it
 * unmounts and exits 0. Exit 77: the mount itself failed (no
 * /dev/fuse, no permission), which tests treat as "skip"; 1 any other error.
 * -d prints every FUSE request (libfuse's debug output).
 *
 * It supports what the mxring spool and its reader use: lookup and stat,
 * create/open/read/write, fsync and fdatasync of files and of directories,
 * ftruncate, rename (also RENAME_NOREPLACE), mkdir, rmdir, unlink, readdir,
 * statfs. flock(2) is left to the kernel, which then keeps the locks of
 * this mount itself. No write-back cache: every write(2) reaches this
 * process before it returns, so a fault reaches the caller of that write.
 *
 * CONTROL is a file of "key=value" lines ('#' starts a comment). It is
 * looked at (stat: inode, size, mtime) before every operation and re-read
 * when it changed, so a test that replaces it (write a new file, rename it
 * over CONTROL) has the next operation see the new faults. A missing or
 * empty file means no faults; a file with a bad line is refused whole
 * (logged; the faults in force stay). Keys:
 *   write=ok|eio|enospc  each write fails with EIO / ENOSPC and writes
 *                        nothing; enospc (a full disk) also fails create
 *                        and mkdir with ENOSPC
 *   fsync=ok|eio         each fsync/fdatasync of a file or a directory
 *                        fails with EIO. A failed file sync also loses
 *                        the bytes written through that open file since
 *                        its last good sync: they are overwritten with
 *                        zeros in BACKING and forgotten, so a later sync
 *                        succeeds without them, as on Linux, where a
 *                        write-back error leaves the pages marked clean
 *   count=N              inject only the next N errors, then none (0 or
 *                        absent: no limit); delays do not count
 *   write_delay_ms=N     each write waits N ms first (a slow disk)
 *   fsync_delay_ms=N     each fsync/fdatasync waits N ms first; N <= 60000
 * Log lines on stderr: "faultfs: faults ..." when the control file is
 * taken, "faultfs: inject op=OP error=E path=P" for each error injected,
 * "faultfs: lost bytes=N path=P" for each failed file sync and
 * "faultfs: delay op=OP ms=N path=P" for each delay, so a test can see that
 * its fault was met (P: the name the file was opened by).
 *
 * Limits of the model: the loss is kept per open file, so bytes written
 * through another descriptor of the same file survive its failed sync; a
 * failed sync loses whole written ranges, never a part of a page.
 *
 * Bounds: the dirty ranges kept per open file (RANGES_MAX; past it a range
 * is not tracked and its loss not simulated, logged), the delay, the
 * control file's size (CONTROL_MAX).
 *
 * A test tool: it trusts its caller, and it is not built into mxring.
 */
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define RANGES_MAX   64
#define CONTROL_MAX  4096
#define DELAY_MS_MAX 60000u
#define ZERO_CHUNK   65536

enum fault { FAULT_NONE, FAULT_EIO, FAULT_ENOSPC };

struct faults {
	enum fault write;
	enum fault fsync;
	uint64_t count; /* errors left to inject; 0: no limit */
	unsigned write_delay_ms;
	unsigned fsync_delay_ms;
};

/* An open regular file: the backing fd and what was written since its last good sync. */
struct ofile {
	int fd;	    /* owned */
	char *path; /* owned: the name it was opened by (for logs; a rename does not change it) */
	pthread_mutex_t lock;
	struct {
		uint64_t off, end;
	} dirty[RANGES_MAX];
	unsigned ndirty;
	bool untracked_logged;
};

/* An open directory. */
struct odir {
	DIR *d;	    /* owned */
	char *path; /* owned: the name it was opened by, for logs */
};

static int back_fd = -1;
static const char *control_path;

/* Guards the faults in force and what is known about the control file. */
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static struct faults cur;
static bool control_seen; /* a stat of the control file is in control_st */
static struct stat control_st;

static const char *fault_name(enum fault f)
{
	return f == FAULT_EIO ? "eio" : f == FAULT_ENOSPC ? "enospc" : "ok";
}

/* "/a/b" -> "a/b", "/" -> "." (relative to back_fd). */
static const char *rel(const char *path)
{
	if (!path || path[0] != '/' || path[1] == 0)
		return ".";
	return path + 1;
}

static int parse_uint(const char *v, uint64_t max, uint64_t *out)
{
	char *end;
	if (!*v || *v == '-')
		return -1;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || *end || n > max)
		return -1;
	*out = n;
	return 0;
}

/* Parses the control text into f: 0, or -1 with the bad line in *bad. */
static int parse_control(char *text, struct faults *f, const char **bad)
{
	memset(f, 0, sizeof(*f));
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		while (*line == ' ' || *line == '\t')
			line++;
		size_t n = strlen(line);
		while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
			line[--n] = 0;
		if (n == 0)
			continue;
		*bad = line;
		char *eq = strchr(line, '=');
		if (!eq)
			return -1;
		*eq = 0;
		const char *k = line, *v = eq + 1;
		uint64_t u;
		if (strcmp(k, "write") == 0 && strcmp(v, "ok") == 0)
			f->write = FAULT_NONE;
		else if (strcmp(k, "write") == 0 && strcmp(v, "eio") == 0)
			f->write = FAULT_EIO;
		else if (strcmp(k, "write") == 0 && strcmp(v, "enospc") == 0)
			f->write = FAULT_ENOSPC;
		else if (strcmp(k, "fsync") == 0 && strcmp(v, "ok") == 0)
			f->fsync = FAULT_NONE;
		else if (strcmp(k, "fsync") == 0 && strcmp(v, "eio") == 0)
			f->fsync = FAULT_EIO;
		else if (strcmp(k, "count") == 0 && parse_uint(v, UINT64_MAX, &u) == 0)
			f->count = u;
		else if (strcmp(k, "write_delay_ms") == 0 && parse_uint(v, DELAY_MS_MAX, &u) == 0)
			f->write_delay_ms = (unsigned)u;
		else if (strcmp(k, "fsync_delay_ms") == 0 && parse_uint(v, DELAY_MS_MAX, &u) == 0)
			f->fsync_delay_ms = (unsigned)u;
		else {
			*eq = '=';
			return -1;
		}
	}
	return 0;
}

static void log_faults(const struct faults *f)
{
	fprintf(stderr,
		"faultfs: faults write=%s fsync=%s count=%" PRIu64
		" write_delay_ms=%u fsync_delay_ms=%u\n",
		fault_name(f->write), fault_name(f->fsync), f->count, f->write_delay_ms,
		f->fsync_delay_ms);
}

/* Re-reads the control file if it changed. Called with fault_lock held. */
static void control_refresh(void)
{
	struct stat st;
	if (stat(control_path, &st) < 0) {
		if (control_seen) {
			control_seen = false;
			memset(&cur, 0, sizeof(cur));
			log_faults(&cur);
		}
		return;
	}
	if (control_seen && st.st_ino == control_st.st_ino && st.st_dev == control_st.st_dev &&
	    st.st_size == control_st.st_size && st.st_mtim.tv_sec == control_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == control_st.st_mtim.tv_nsec)
		return;
	control_seen = true;
	control_st = st;
	char text[CONTROL_MAX + 1];
	int fd = open(control_path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, text, CONTROL_MAX + 1);
	if (fd >= 0)
		close(fd);
	if (n < 0 || n > CONTROL_MAX) {
		fprintf(stderr, "faultfs: control %s: %s; faults unchanged\n", control_path,
			n < 0 ? strerror(errno) : "too long");
		return;
	}
	text[n] = 0;
	struct faults f;
	const char *bad = "";
	if (parse_control(text, &f, &bad) < 0) {
		fprintf(stderr, "faultfs: control %s: bad line \"%.100s\"; faults unchanged\n",
			control_path, bad);
		return;
	}
	cur = f;
	log_faults(&cur);
}

/* The faults in force now (the control file looked at first). */
static struct faults faults_now(void)
{
	pthread_mutex_lock(&fault_lock);
	control_refresh();
	struct faults f = cur;
	pthread_mutex_unlock(&fault_lock);
	return f;
}

/*
 * The error to inject now into an operation of kind write (write, create,
 * mkdir) or sync (fsync, fsyncdir), FAULT_NONE for none; takes it from the budget.
 * only: the one error this operation can fail with (FAULT_ENOSPC for create and
 * mkdir), FAULT_NONE for any.
 */
static enum fault take_error(const char *op, bool sync, enum fault only, const char *path)
{
	pthread_mutex_lock(&fault_lock);
	control_refresh();
	enum fault e = sync ? cur.fsync : cur.write;
	if (only != FAULT_NONE && e != only)
		e = FAULT_NONE;
	if (e != FAULT_NONE)
		fprintf(stderr, "faultfs: inject op=%s error=%s path=%s\n", op,
			e == FAULT_EIO ? "EIO" : "ENOSPC", path ? path : "?");
	if (e != FAULT_NONE && cur.count > 0 && --cur.count == 0) {
		memset(&cur, 0, sizeof(cur)); /* the budget is spent: no faults from now on */
		fprintf(stderr, "faultfs: error budget spent; no faults from now on\n");
	}
	pthread_mutex_unlock(&fault_lock);
	return e;
}

static void delay(const char *op, unsigned ms, const char *path)
{
	if (ms == 0)
		return;
	fprintf(stderr, "faultfs: delay op=%s ms=%u path=%s\n", op, ms, path ? path : "?");
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static struct ofile *ofile_of(const struct fuse_file_info *fi)
{
	return (struct ofile *)(uintptr_t)fi->fh;
}

static struct odir *odir_of(const struct fuse_file_info *fi)
{
	return (struct odir *)(uintptr_t)fi->fh;
}

/* ---- dirty ranges (called with the file's lock held) ---- */

static void dirty_add(struct ofile *of, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	for (unsigned i = 0; i < of->ndirty; i++) {
		if (off <= of->dirty[i].end && end >= of->dirty[i].off) {
			if (off < of->dirty[i].off)
				of->dirty[i].off = off;
			if (end > of->dirty[i].end)
				of->dirty[i].end = end;
			return;
		}
	}
	if (of->ndirty == RANGES_MAX) {
		if (!of->untracked_logged)
			fprintf(stderr,
				"faultfs: %s: more than %d dirty ranges; loss not simulated "
				"for the rest\n",
				of->path, RANGES_MAX);
		of->untracked_logged = true;
		return;
	}
	of->dirty[of->ndirty].off = off;
	of->dirty[of->ndirty].end = end;
	of->ndirty++;
}

static void dirty_clip(struct ofile *of, uint64_t size)
{
	unsigned k = 0;
	for (unsigned i = 0; i < of->ndirty; i++) {
		if (of->dirty[i].off >= size)
			continue;
		if (of->dirty[i].end > size)
			of->dirty[i].end = size;
		of->dirty[k++] = of->dirty[i];
	}
	of->ndirty = k;
}

/* A failed sync: what was written since the last good one never reached the disk. */
static void dirty_lose(struct ofile *of)
{
	static const uint8_t zero[ZERO_CHUNK];
	struct stat st;
	uint64_t size = fstat(of->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	uint64_t lost = 0;
	for (unsigned i = 0; i < of->ndirty; i++) {
		uint64_t end = of->dirty[i].end < size ? of->dirty[i].end : size;
		for (uint64_t pos = of->dirty[i].off; pos < end;) {
			size_t n = end - pos < ZERO_CHUNK ? (size_t)(end - pos) : ZERO_CHUNK;
			ssize_t w = pwrite(of->fd, zero, n, (off_t)pos);
			if (w <= 0)
				break;
			pos += (uint64_t)w;
			lost += (uint64_t)w;
		}
	}
	of->ndirty = 0;
	fprintf(stderr, "faultfs: lost bytes=%" PRIu64 " path=%s\n", lost, of->path);
}

/* ---- operations ---- */

static void *ffs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	cfg->use_ino = 1;
	cfg->nullpath_ok = 1;
	cfg->hard_remove = 1; /* no .fuse_hidden files: open files are used by fd only */
	/* No caching of names or attributes: what BACKING holds is what is seen. */
	cfg->entry_timeout = 0;
	cfg->attr_timeout = 0;
	cfg->negative_timeout = 0;
	return NULL;
}

static int ffs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	int r =
	    fi ? fstat(ofile_of(fi)->fd, st) : fstatat(back_fd, rel(path), st, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? -errno : 0;
}

static int ffs_mkdir(const char *path, mode_t mode)
{
	if (take_error("mkdir", false, FAULT_ENOSPC, path) != FAULT_NONE)
		return -ENOSPC;
	return mkdirat(back_fd, rel(path), mode) < 0 ? -errno : 0;
}

static int ffs_unlink(const char *path)
{
	return unlinkat(back_fd, rel(path), 0) < 0 ? -errno : 0;
}

static int ffs_rmdir(const char *path)
{
	return unlinkat(back_fd, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int ffs_rename(const char *from, const char *to, unsigned int flags)
{
	return renameat2(back_fd, rel(from), back_fd, rel(to), flags) < 0 ? -errno : 0;
}

static int ffs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (!fi) {
		int fd = openat(back_fd, rel(path), O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		int r = ftruncate(fd, size) < 0 ? -errno : 0;
		close(fd);
		return r;
	}
	struct ofile *of = ofile_of(fi);
	pthread_mutex_lock(&of->lock);
	int r = ftruncate(of->fd, size) < 0 ? -errno : 0;
	if (r == 0)
		dirty_clip(of, (uint64_t)size);
	pthread_mutex_unlock(&of->lock);
	return r;
}

static int ofile_open(int fd, const char *path, struct fuse_file_info *fi)
{
	struct ofile *of = calloc(1, sizeof(*of));
	char *name = strdup(path ? path : "?");
	if (!of || !name) {
		free(of);
		free(name);
		close(fd);
		return -ENOMEM;
	}
	of->fd = fd;
	of->path = name;
	pthread_mutex_init(&of->lock, NULL);
	fi->fh = (uint64_t)(uintptr_t)of;
	return 0;
}

static int ffs_open(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(back_fd, rel(path), (fi->flags & ~O_NOFOLLOW) | O_CLOEXEC);
	return fd < 0 ? -errno : ofile_open(fd, path, fi);
}

static int ffs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (take_error("create", false, FAULT_ENOSPC, path) != FAULT_NONE)
		return -ENOSPC;
	int fd = openat(back_fd, rel(path), fi->flags | O_CREAT | O_CLOEXEC, mode);
	return fd < 0 ? -errno : ofile_open(fd, path, fi);
}

static int ffs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path;
	ssize_t n = pread(ofile_of(fi)->fd, buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int ffs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)path;
	struct ofile *of = ofile_of(fi);
	struct faults f = faults_now();
	delay("write", f.write_delay_ms, of->path);
	enum fault e = take_error("write", false, FAULT_NONE, of->path);
	if (e != FAULT_NONE)
		return e == FAULT_EIO ? -EIO : -ENOSPC;
	pthread_mutex_lock(&of->lock);
	ssize_t n = pwrite(of->fd, buf, size, off);
	int r = n < 0 ? -errno : (int)n;
	if (n > 0)
		dirty_add(of, (uint64_t)off, (uint64_t)n);
	pthread_mutex_unlock(&of->lock);
	return r;
}

static int ffs_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return fstatvfs(back_fd, st) < 0 ? -errno : 0;
}

static int ffs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	struct ofile *of = ofile_of(fi);
	close(of->fd);
	pthread_mutex_destroy(&of->lock);
	free(of->path);
	free(of);
	return 0;
}

static int ffs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	struct ofile *of = ofile_of(fi);
	const char *op = datasync ? "fdatasync" : "fsync";
	struct faults f = faults_now();
	delay(op, f.fsync_delay_ms, of->path);
	pthread_mutex_lock(&of->lock);
	int r = 0;
	if (take_error(op, true, FAULT_NONE, of->path) != FAULT_NONE)
		r = -EIO;
	else if ((datasync ? fdatasync(of->fd) : fsync(of->fd)) < 0)
		r = -errno;
	if (r < 0)
		dirty_lose(of);
	else
		of->ndirty = 0;
	pthread_mutex_unlock(&of->lock);
	return r;
}

static int ffs_opendir(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(back_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct odir *od = calloc(1, sizeof(*od));
	if (od)
		od->path = strdup(path ? path : "?");
	if (od && od->path)
		od->d = fdopendir(fd);
	if (!od || !od->d) {
		int e = od && od->path ? -errno : -ENOMEM;
		if (od)
			free(od->path);
		free(od);
		close(fd);
		return e;
	}
	fi->fh = (uint64_t)(uintptr_t)od;
	return 0;
}

static int ffs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)path;
	(void)off;
	(void)flags;
	DIR *d = odir_of(fi)->d;
	rewinddir(d);
	struct dirent *de;
	/* Offset 0 for every entry: libfuse gathers the whole listing itself. */
	while ((errno = 0, de = readdir(d)) != NULL) {
		struct stat st = {.st_ino = de->d_ino, .st_mode = (mode_t)DTTOIF(de->d_type)};
		if (fill(buf, de->d_name, &st, 0, 0))
			break;
	}
	return errno ? -errno : 0;
}

static int ffs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	struct odir *od = odir_of(fi);
	closedir(od->d);
	free(od->path);
	free(od);
	return 0;
}

static int ffs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	struct odir *od = odir_of(fi);
	struct faults f = faults_now();
	delay("fsyncdir", f.fsync_delay_ms, od->path);
	if (take_error("fsyncdir", true, FAULT_NONE, od->path) != FAULT_NONE)
		return -EIO;
	int fd = dirfd(od->d);
	return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
    .init = ffs_init,
    .getattr = ffs_getattr,
    .mkdir = ffs_mkdir,
    .unlink = ffs_unlink,
    .rmdir = ffs_rmdir,
    .rename = ffs_rename,
    .truncate = ffs_truncate,
    .open = ffs_open,
    .create = ffs_create,
    .read = ffs_read,
    .write = ffs_write,
    .statfs = ffs_statfs,
    .release = ffs_release,
    .fsync = ffs_fsync,
    .opendir = ffs_opendir,
    .readdir = ffs_readdir,
    .releasedir = ffs_releasedir,
    .fsyncdir = ffs_fsyncdir,
};

int main(int argc, char **argv)
{
	bool debug = argc > 1 && strcmp(argv[1], "-d") == 0;
	if (debug) {
		argv++;
		argc--;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: faultfs [-d] BACKING MOUNTPOINT CONTROL\n");
		return 1;
	}
	back_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (back_fd < 0) {
		fprintf(stderr, "faultfs: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* A test runner killed before it could unmount: go too, which unmounts (lazily as root). */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() == 1) {
		fprintf(stderr, "faultfs: cannot follow the parent process\n");
		return 1;
	}
	control_path = argv[3];
	pthread_mutex_lock(&fault_lock);
	control_refresh();
	pthread_mutex_unlock(&fault_lock);

	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, "fsname=faultfs,subtype=faultfs") ||
	    (debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, "faultfs: out of memory\n");
		return 1;
	}
	struct fuse *f = fuse_new(&args, &ops, sizeof(ops), NULL);
	if (!f) {
		fuse_opt_free_args(&args);
		return 1;
	}
	if (fuse_mount(f, argv[2]) != 0) {
		fprintf(stderr, "faultfs: cannot mount on %s\n", argv[2]);
		fuse_destroy(f);
		fuse_opt_free_args(&args);
		return 77;
	}
	int rc = 1;
	if (fuse_set_signal_handlers(fuse_get_session(f)) == 0) {
		fprintf(stderr, "faultfs: mounted %s on %s\n", argv[1], argv[2]);
		rc = fuse_loop_mt(f, 0) < 0 ? 1 : 0;
		fuse_remove_signal_handlers(fuse_get_session(f));
	}
	fuse_unmount(f);
	fuse_destroy(f);
	fuse_opt_free_args(&args);
	close(back_fd);
	fprintf(stderr, "faultfs: unmounted %s, exit %d\n", argv[2], rc);
	return rc;
}
