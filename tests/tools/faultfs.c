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
 * ftruncate, rename (also RENAME_NOREPLACE), link, mkdir, rmdir, unlink,
 * readdir, statfs. flock(2) is left to the kernel, which then keeps the
 * locks of this mount itself. No write-back cache: every write(2)
 * reaches this process before it returns, so a fault reaches the caller
 * of that write.
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
 *   powercut=strict|torn cut the power (see POWER CUT) at the next
 *                        operation, or within 20 ms when none comes
 *   powercut_at=OP:N     with powercut: cut instead just before the Nth
 *                        operation of kind OP from now, which then fails
 *                        (EIO) as every later change does. OP: write,
 *                        fsync (a file's fsync or fdatasync), fsyncdir,
 *                        rename, create, link, unlink (also rmdir),
 *                        mkdir, truncate (also open with O_TRUNC)
 *   powercut_seed=N      the seed of torn's random choices (default: from
 *                        the clock; the cut logs the seed it used)
 * SIGUSR1 cuts the power at once (strict), SIGUSR2 too (torn): a test can
 * then SIGKILL the program under test right after.
 * Log lines on stderr: "faultfs: faults ..." when the control file is
 * taken, "faultfs: inject op=OP error=E path=P" for each error injected,
 * "faultfs: lost bytes=N path=P" for each failed file sync and
 * "faultfs: delay op=OP ms=N path=P" for each delay, so a test can see that
 * its fault was met (P: the name the file was opened by).
 *
 * Limits of the fault model: the loss after a failed sync is kept per open
 * file, so bytes written through another descriptor of the same file
 * survive its failed sync; a failed sync loses whole written ranges, never
 * a part of a page.
 *
 * POWER CUT. faultfs always keeps what a power loss would leave: per file
 * (by inode, whatever descriptor wrote), the size at its last good
 * fsync/fdatasync and the old bytes of every synced range overwritten or
 * cut off since (copied into memory before the first change of each byte);
 * per directory (by inode), its entries at its last good fsync, taken
 * before its first change since. The state at mount time counts as synced.
 * A name that such a directory's last sync saw and that goes (unlink,
 * rename) keeps its inode alive as a hard link under BACKING/.faultfs-keep
 * (hidden from the mount, removed at the cut and at exit), so that the cut
 * can link it back. Why this model of file data: appends, nearly all a
 * spool writes, cost nothing to keep (the cut truncates them), and the
 * rare overwrite of synced bytes is put back exactly as it was, where
 * zeroing it would leave a state no disk leaves.
 * At the cut, under the lock every changing operation holds:
 *   strict  every file changed since its last sync gets back its synced
 *           size and content (appended bytes are cut off, overwritten ones
 *           restored); every directory changed since its last sync gets
 *           back its synced entries: a name created since goes (a
 *           directory with all below it), a name removed or renamed away
 *           comes back, a rename is rolled back in each directory not
 *           synced since. A file created and synced in a directory that was
 *           not synced is gone.
 *   torn    as a disk that wrote back some of its cache first: of each file
 *           a random number of 4 KiB pages of the unsynced tail survives
 *           (each of them written or zero at random), each overwritten page
 *           is old or new at random, and each directory changed since its
 *           sync keeps all its changes or none, as one journal commit; so
 *           do together the directories a rename joined since the sync of
 *           either (a journal commits a rename whole).
 * Then every operation that would change anything fails with EIO (a dead
 * disk) until the unmount; reads go on. The cut logs "faultfs: powercut
 * done mode=M seed=S at_ns=T ... untracked=N" (T: CLOCK_MONOTONIC when
 * the cut began), after "faultfs: powercut before op=OP path=P" for
 * powercut_at; the next mount over BACKING starts from what it left.
 * Limits of the power-cut model: stricter than ext4 with data=ordered,
 * which commits a rename or a create together with everything else in its
 * journal transaction (so one fsync often saves more than its own
 * directory). Strict keeps or rolls back the two directories of a rename
 * apart: it may leave the file under both names (the new directory
 * synced, the old not), or under none (the old synced, the new not), as a
 * file system without a journal (ext2) may. Fsyncing the new directory
 * first does not rule out "none" when another thread fsyncs the old one
 * in between; link, fsync of the new directory, then unlink does. Torn
 * keeps a rename whole while both its directories wait for their sync.
 * Metadata other than names and sizes (mode, mtime, link counts) is not
 * modelled; symlinks, the rename of a directory, and the removal of one
 * that its parent's last sync saw are not rolled back (logged as
 * untracked). The kernel's page cache of this mount may still show
 * pre-cut bytes to a reader after the cut: unmount and mount again to see
 * what a reboot would.
 * Every table is bounded (PC_*_MAX): past a bound, or at an operation it
 * cannot roll back, faultfs logs "faultfs: untracked WHAT path=P" and
 * counts it in the cut's untracked=N; a test must treat N > 0 as a
 * failure, since the cut was then not exact.
 *
 * Bounds: the dirty ranges kept per open file (RANGES_MAX; past it a range
 * is not tracked and its loss not simulated, logged), the delay, the
 * control file's size (CONTROL_MAX), the power-cut tables (PC_*_MAX).
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
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define RANGES_MAX   64
#define CONTROL_MAX  4096
#define DELAY_MS_MAX 60000u
#define ZERO_CHUNK   65536

/* The power-cut tables (see POWER CUT). */
#define PC_FILES_MAX	   1024		  /* files changed since their last sync */
#define PC_SAVES_MAX	   64		  /* overwritten ranges kept per file */
#define PC_SAVED_BYTES_MAX (256ull << 20) /* old bytes kept in memory, all files */
#define PC_DIRS_MAX	   1024		  /* directories changed since their last sync */
#define PC_DIR_ENTRIES_MAX 200000	  /* entries kept of one directory */
#define PC_KEEP_MAX	   65536	  /* inodes kept alive under KEEP_DIR */
#define PC_PAIRS_MAX	   4096		  /* directories joined by a rename since their sync */
#define PC_TREE_DEPTH_MAX  32		  /* directories below one removed at the cut */
#define PC_LOG_MAX	   50		  /* lines per kind of event logged */
#define PC_PAGE		   4096u
#define KEEP_DIR	   ".faultfs-keep"

enum fault { FAULT_NONE, FAULT_EIO, FAULT_ENOSPC };
enum pc_mode { PC_NONE, PC_STRICT, PC_TORN };
/* Kinds of changing operations, for powercut_at. */
enum pc_op {
	PCO_NONE,
	PCO_WRITE,
	PCO_FSYNC,
	PCO_FSYNCDIR,
	PCO_RENAME,
	PCO_CREATE,
	PCO_UNLINK,
	PCO_MKDIR,
	PCO_TRUNCATE,
	PCO_LINK,
	PCO_COUNT
};
static const char *const pc_op_names[PCO_COUNT] = {
    [PCO_NONE] = "-",
    [PCO_WRITE] = "write",
    [PCO_FSYNC] = "fsync",
    [PCO_FSYNCDIR] = "fsyncdir",
    [PCO_RENAME] = "rename",
    [PCO_CREATE] = "create",
    [PCO_UNLINK] = "unlink",
    [PCO_MKDIR] = "mkdir",
    [PCO_TRUNCATE] = "truncate",
    [PCO_LINK] = "link",
};

struct faults {
	enum fault write;
	enum fault fsync;
	uint64_t count; /* errors left to inject; 0: no limit */
	unsigned write_delay_ms;
	unsigned fsync_delay_ms;
	enum pc_mode powercut; /* asked for by this control file */
	uint64_t powercut_seed;
	enum pc_op powercut_op; /* powercut_at: PCO_NONE for at once */
	uint64_t powercut_n;
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
/* A cut asked for (enum pc_mode), by a signal or the control file, and its seed. */
static _Atomic int pc_request;
static _Atomic uint64_t pc_request_seed;
/* A cut asked for at the pc_armed_left-th next operation of kind pc_armed_op (powercut_at). */
static _Atomic int pc_armed_op, pc_armed_mode;
static _Atomic uint64_t pc_armed_left;

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

/* "OP:N" (N >= 1) of powercut_at into f. */
static int parse_op_count(const char *v, struct faults *f)
{
	const char *colon = strchr(v, ':');
	uint64_t n;
	if (!colon || parse_uint(colon + 1, UINT64_MAX, &n) < 0 || n == 0)
		return -1;
	for (int op = PCO_WRITE; op < PCO_COUNT; op++)
		if (strlen(pc_op_names[op]) == (size_t)(colon - v) &&
		    strncmp(v, pc_op_names[op], (size_t)(colon - v)) == 0) {
			f->powercut_op = (enum pc_op)op;
			f->powercut_n = n;
			return 0;
		}
	return -1;
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
		else if (strcmp(k, "powercut") == 0 && strcmp(v, "strict") == 0)
			f->powercut = PC_STRICT;
		else if (strcmp(k, "powercut") == 0 && strcmp(v, "torn") == 0)
			f->powercut = PC_TORN;
		else if (strcmp(k, "powercut_seed") == 0 && parse_uint(v, UINT64_MAX, &u) == 0)
			f->powercut_seed = u;
		else if (strcmp(k, "powercut_at") == 0 && parse_op_count(v, f) == 0)
			;
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
	if (f.powercut != PC_NONE) {
		atomic_store(&pc_request_seed, f.powercut_seed);
		if (f.powercut_op == PCO_NONE) {
			atomic_store(&pc_request, f.powercut);
		} else {
			atomic_store(&pc_armed_mode, f.powercut);
			atomic_store(&pc_armed_left, f.powercut_n);
			atomic_store(&pc_armed_op, f.powercut_op);
		}
	}
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

static void pc_file_write(int fd, const char *path, uint64_t off, uint64_t len);

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
			pc_file_write(of->fd, of->path, pos, n);
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

/* ---- power cut: what a power loss now would leave (see POWER CUT above) ---- */

/* The old bytes of a synced range overwritten or cut off since the sync. */
struct pc_save {
	uint64_t off, len;
	uint8_t *old; /* owned */
};

/* A regular file written or cut since its last good sync. */
struct pc_file {
	ino_t ino;
	int fd; /* owned: opened again, so the cut reaches it after every other close */
	uint64_t synced_size; /* its size at its last good sync */
	struct pc_save saves[PC_SAVES_MAX];
	unsigned nsaves;
	char *path; /* owned: the name it was first changed by, for logs */
};

struct pc_ent {
	char *name; /* owned */
	ino_t ino;
	unsigned char type; /* DT_* */
	bool seen;	    /* the cut found it in place */
};

/* A directory changed since its last good sync, and its entries at that sync. */
struct pc_dir {
	ino_t ino;
	char *path;	     /* owned: relative to BACKING when first changed */
	struct pc_ent *ents; /* owned: sorted by name */
	uint32_t n;
};

struct pc_tally {
	unsigned files, dirs, dirs_kept, dirs_gone, removed, restored;
	uint64_t cut_bytes, restored_bytes, zeroed_bytes, kept_bytes;
};

/* Held by every operation that changes the file system, and by the cut. */
static pthread_mutex_t pc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pc_file *pc_files[PC_FILES_MAX];
static unsigned pc_nfiles;
static struct pc_dir *pc_dirs[PC_DIRS_MAX];
static unsigned pc_ndirs;
static uint64_t pc_saved_bytes;
static unsigned pc_nkept;
/* Two directories a rename joined since the sync of either: a torn cut keeps both or neither. */
static struct {
	ino_t a, b;
} pc_pairs[PC_PAIRS_MAX];
static unsigned pc_npairs;
static uint64_t pc_untracked;
static bool pc_frozen;
static uint64_t pc_rng;
static int keep_fd = -1; /* BACKING/KEEP_DIR */
static ino_t back_ino;

static void pc_untracked_at(const char *what, const char *path)
{
	if (pc_untracked++ < PC_LOG_MAX)
		fprintf(stderr,
			"faultfs: untracked %s path=%s: a power cut from now on is not exact\n",
			what, path ? path : "?");
}

static uint64_t pc_random(void)
{
	pc_rng ^= pc_rng << 13;
	pc_rng ^= pc_rng >> 7;
	pc_rng ^= pc_rng << 17;
	return pc_rng;
}

static bool is_hidden(const char *path)
{
	size_t n = strlen(KEEP_DIR);
	return path && path[0] == '/' && strncmp(path + 1, KEEP_DIR, n) == 0 &&
	       (path[1 + n] == 0 || path[1 + n] == '/');
}

/* "/a/b/c" -> "a/b" in out (BACKING's "." for "/c"), and returns "c". */
static const char *split_path(const char *path, char *out, size_t cap)
{
	const char *r = rel(path);
	const char *slash = strrchr(r, '/');
	if (!slash) {
		snprintf(out, cap, ".");
		return r;
	}
	snprintf(out, cap, "%.*s", (int)(slash - r), r);
	return slash + 1;
}

static int pwrite_all(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t w = pwrite(fd, p, len > ZERO_CHUNK ? ZERO_CHUNK : (size_t)len, (off_t)off);
		if (w <= 0)
			return -1;
		p += w;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

static int zero_range(int fd, uint64_t off, uint64_t end)
{
	static const uint8_t zero[ZERO_CHUNK];
	for (uint64_t pos = off; pos < end;) {
		uint64_t n = end - pos < ZERO_CHUNK ? end - pos : ZERO_CHUNK;
		if (pwrite_all(fd, zero, n, pos) < 0)
			return -1;
		pos += n;
	}
	return 0;
}

/* ---- files ---- */

static struct pc_file *pc_file_find(ino_t ino, unsigned *idx)
{
	for (unsigned i = 0; i < pc_nfiles; i++)
		if (pc_files[i]->ino == ino) {
			if (idx)
				*idx = i;
			return pc_files[i];
		}
	return NULL;
}

static void pc_file_free(unsigned i)
{
	struct pc_file *f = pc_files[i];
	for (unsigned k = 0; k < f->nsaves; k++) {
		pc_saved_bytes -= f->saves[k].len;
		free(f->saves[k].old);
	}
	close(f->fd);
	free(f->path);
	free(f);
	pc_files[i] = pc_files[--pc_nfiles];
}

/* The tracking of the file open as fd (st: its stat), made at its first change since a sync. */
static struct pc_file *pc_file_get(int fd, const struct stat *st, const char *path)
{
	struct pc_file *f = pc_file_find(st->st_ino, NULL);
	if (f)
		return f;
	if (pc_nfiles == PC_FILES_MAX) {
		pc_untracked_at("file: more than PC_FILES_MAX files changed since their sync",
				path);
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	char *name = strdup(path ? path : "?");
	/* Its own open file, not a dup: O_RDWR, and no O_APPEND from the caller's open. */
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	int dfd = open(proc, O_RDWR | O_CLOEXEC);
	if (!f || !name || dfd < 0) {
		pc_untracked_at(dfd < 0 ? "file: no descriptor left" : "file: out of memory", path);
		free(f);
		free(name);
		if (dfd >= 0)
			close(dfd);
		return NULL;
	}
	f->ino = st->st_ino;
	f->fd = dfd;
	f->synced_size = (uint64_t)st->st_size;
	f->path = name;
	pc_files[pc_nfiles++] = f;
	return f;
}

/* Keeps the bytes [off, end) of f as they are now, the synced ones (none of them is kept yet). */
static void pc_save_range(struct pc_file *f, uint64_t off, uint64_t end)
{
	uint64_t len = end - off;
	if (f->nsaves == PC_SAVES_MAX || pc_saved_bytes + len > PC_SAVED_BYTES_MAX) {
		pc_untracked_at("file: more than PC_SAVES_MAX ranges or PC_SAVED_BYTES_MAX bytes "
				"overwritten since the sync",
				f->path);
		return;
	}
	uint8_t *old = malloc(len ? len : 1);
	if (!old) {
		pc_untracked_at("file: out of memory", f->path);
		return;
	}
	uint64_t got = 0;
	while (got < len) {
		ssize_t n = pread(f->fd, old + got, len - got, (off_t)(off + got));
		if (n < 0) {
			pc_untracked_at("file: cannot read the bytes to keep", f->path);
			free(old);
			return;
		}
		if (n == 0)
			break;
		got += (uint64_t)n;
	}
	memset(old + got, 0, len - got); /* past the end now: cut off and kept already */
	f->saves[f->nsaves++] = (struct pc_save){.off = off, .len = len, .old = old};
	pc_saved_bytes += len;
}

/* Bytes [a, b) of f, all below its synced size, are about to change: keep what is not kept. */
static void pc_save(struct pc_file *f, uint64_t a, uint64_t b)
{
	uint64_t pos = a;
	while (pos < b) {
		uint64_t next = b;
		bool kept = false;
		for (unsigned i = 0; i < f->nsaves && !kept; i++) {
			const struct pc_save *s = &f->saves[i];
			if (s->off <= pos && pos < s->off + s->len) {
				pos = s->off + s->len;
				kept = true;
			} else if (s->off > pos && s->off < next) {
				next = s->off;
			}
		}
		if (!kept) {
			pc_save_range(f, pos, next);
			pos = next;
		}
	}
}

/* Before bytes [off, off + len) of the file open as fd change (pc_lock held). */
static void pc_file_write(int fd, const char *path, uint64_t off, uint64_t len)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		pc_untracked_at("file: fstat failed", path);
		return;
	}
	struct pc_file *f = pc_file_get(fd, &st, path);
	if (f && off < f->synced_size && len > 0)
		pc_save(f, off, off + len < f->synced_size ? off + len : f->synced_size);
}

/* Before the file open as fd is cut or grown to size (pc_lock held). */
static void pc_file_truncate(int fd, const char *path, uint64_t size)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		pc_untracked_at("file: fstat failed", path);
		return;
	}
	if (!pc_file_find(st.st_ino, NULL) && (uint64_t)st.st_size == size)
		return; /* no change */
	struct pc_file *f = pc_file_get(fd, &st, path);
	if (f && size < f->synced_size)
		pc_save(f, size, f->synced_size);
}

/* A good fsync/fdatasync of the file open as fd: what it holds now is what a cut leaves. */
static void pc_file_synced(int fd)
{
	struct stat st;
	unsigned i;
	if (fstat(fd, &st) == 0 && pc_file_find(st.st_ino, &i))
		pc_file_free(i);
}

/* A file lost a name: with none left it cannot be seen again, and its tracking goes. */
static void pc_file_unlinked(ino_t ino)
{
	unsigned i;
	struct stat st;
	if (pc_file_find(ino, &i) && fstat(pc_files[i]->fd, &st) == 0 && st.st_nlink == 0)
		pc_file_free(i);
}

/* ---- directories ---- */

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pc_ent *)a)->name, ((const struct pc_ent *)b)->name);
}

static void ents_free(struct pc_ent *e, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}

/* The entries of the directory open as fd (not closed), sorted; NULL on failure (logged). */
static struct pc_ent *pc_read_dir(int fd, const char *path, uint32_t *n)
{
	struct stat st;
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
	bool root = fstat(fd, &st) == 0 && st.st_ino == back_ino;
	uint32_t len = 0, cap = 64;
	struct pc_ent *e = malloc(cap * sizeof(*e)); /* not NULL for an empty directory */
	bool bad = !d || !e;
	struct dirent *de;
	while (!bad && (errno = 0, de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0 ||
		    (root && strcmp(nm, KEEP_DIR) == 0))
			continue;
		if (len == PC_DIR_ENTRIES_MAX) {
			pc_untracked_at("dir: more than PC_DIR_ENTRIES_MAX entries", path);
			bad = true;
			break;
		}
		if (len == cap) {
			uint32_t nc = cap * 2;
			struct pc_ent *ne = realloc(e, nc * sizeof(*e));
			if (!ne) {
				bad = true;
				break;
			}
			e = ne;
			cap = nc;
		}
		unsigned char type = de->d_type;
		if (type == DT_UNKNOWN && fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW) == 0)
			type = S_ISDIR(st.st_mode)   ? DT_DIR
			       : S_ISREG(st.st_mode) ? DT_REG
						     : DT_UNKNOWN;
		e[len] = (struct pc_ent){.name = strdup(nm), .ino = de->d_ino, .type = type};
		if (!e[len].name)
			bad = true;
		else
			len++;
	}
	bad = bad || errno != 0;
	if (d)
		closedir(d);
	else if (dfd >= 0)
		close(dfd);
	if (bad) {
		pc_untracked_at("dir: cannot read it", path);
		ents_free(e, len);
		return NULL;
	}
	qsort(e, len, sizeof(*e), ent_cmp);
	*n = len;
	return e;
}

static struct pc_dir *pc_dir_find(ino_t ino, unsigned *idx)
{
	for (unsigned i = 0; i < pc_ndirs; i++)
		if (pc_dirs[i]->ino == ino) {
			if (idx)
				*idx = i;
			return pc_dirs[i];
		}
	return NULL;
}

static void pc_dir_free(unsigned i)
{
	struct pc_dir *d = pc_dirs[i];
	ents_free(d->ents, d->n);
	free(d->path);
	free(d);
	pc_dirs[i] = pc_dirs[--pc_ndirs];
}

/*
 * Before an operation changes the entries of dir (relative to BACKING):
 * its tracking, with its entries as they are now (= at its last sync) when
 * this is its first change since. NULL when dir is not there (the
 * operation fails as well) or cannot be tracked (logged).
 */
static struct pc_dir *pc_dir_touch(const char *dir)
{
	int fd = openat(back_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	struct pc_dir *d = NULL;
	if (fstat(fd, &st) < 0)
		pc_untracked_at("dir: fstat failed", dir);
	else if ((d = pc_dir_find(st.st_ino, NULL)) != NULL)
		;
	else if (pc_ndirs == PC_DIRS_MAX)
		pc_untracked_at("dir: more than PC_DIRS_MAX directories changed since their sync",
				dir);
	else if ((d = calloc(1, sizeof(*d))) == NULL || (d->path = strdup(dir)) == NULL ||
		 (d->ents = pc_read_dir(fd, dir, &d->n)) == NULL) {
		if (d)
			free(d->path);
		free(d);
		d = NULL;
		pc_untracked_at("dir: cannot keep its entries", dir);
	} else {
		d->ino = st.st_ino;
		pc_dirs[pc_ndirs++] = d;
	}
	close(fd);
	return d;
}

static struct pc_ent *pc_dir_synced_entry(const struct pc_dir *d, const char *name)
{
	struct pc_ent key = {.name = (char *)name};
	return d ? bsearch(&key, d->ents, d->n, sizeof(key), ent_cmp) : NULL;
}

/* The name path (in directory d, tracked) is about to go: if d's last sync saw it, keep it. */
static void pc_dir_losing(const struct pc_dir *d, const char *path, const char *name)
{
	struct stat st;
	const struct pc_ent *e = pc_dir_synced_entry(d, name);
	if (!e || fstatat(back_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino != e->ino)
		return;
	if (!S_ISREG(st.st_mode)) {
		pc_untracked_at("dir: a synced name of a directory or special file goes", path);
		return;
	}
	char kname[32];
	snprintf(kname, sizeof(kname), "%ju", (uintmax_t)st.st_ino);
	if (pc_nkept == PC_KEEP_MAX)
		pc_untracked_at("dir: more than PC_KEEP_MAX files kept for a roll back", path);
	else if (linkat(back_fd, rel(path), keep_fd, kname, 0) == 0)
		pc_nkept++;
	else if (errno != EEXIST)
		pc_untracked_at("dir: cannot keep a file for a roll back", path);
}

/* A rename from directory x to directory y (both tracked, or NULL). */
static void pc_dir_pair(const struct pc_dir *x, const struct pc_dir *y, const char *path)
{
	if (!x || !y || x == y)
		return;
	for (unsigned i = 0; i < pc_npairs; i++)
		if ((pc_pairs[i].a == x->ino && pc_pairs[i].b == y->ino) ||
		    (pc_pairs[i].a == y->ino && pc_pairs[i].b == x->ino))
			return;
	if (pc_npairs == PC_PAIRS_MAX) {
		pc_untracked_at("dir: more than PC_PAIRS_MAX renames between directories", path);
		return;
	}
	pc_pairs[pc_npairs].a = x->ino;
	pc_pairs[pc_npairs].b = y->ino;
	pc_npairs++;
}

/* A good fsync of the directory open as fd: its entries now are what a cut leaves. */
static void pc_dir_synced(int fd)
{
	struct stat st;
	unsigned i;
	if (fstat(fd, &st) < 0 || !pc_dir_find(st.st_ino, &i))
		return;
	pc_dir_free(i);
	/* A journal commits a rename whole: its other half is no longer tied to this one. */
	for (unsigned k = 0; k < pc_npairs;)
		if (pc_pairs[k].a == st.st_ino || pc_pairs[k].b == st.st_ino)
			pc_pairs[k] = pc_pairs[--pc_npairs];
		else
			k++;
}

/* Torn: which directories keep their changes, one coin per group joined by renames. */
static void pc_dirs_torn(bool *keep)
{
	unsigned root[PC_DIRS_MAX];
	for (unsigned i = 0; i < pc_ndirs; i++)
		root[i] = i;
	for (unsigned k = 0; k < pc_npairs; k++) {
		unsigned ia, ib;
		if (!pc_dir_find(pc_pairs[k].a, &ia) || !pc_dir_find(pc_pairs[k].b, &ib))
			continue;
		while (root[ia] != ia)
			ia = root[ia];
		while (root[ib] != ib)
			ib = root[ib];
		root[ia > ib ? ia : ib] = ia < ib ? ia : ib;
	}
	for (unsigned i = 0; i < pc_ndirs; i++) {
		unsigned r = i;
		while (root[r] != r)
			r = root[r];
		keep[i] = r == i ? pc_random() % 2 : keep[r]; /* r < i: decided already */
	}
}

/* Removes name (a directory, and everything below it) from the directory open as fd. */
static int remove_tree(int fd, const char *name, unsigned depth)
{
	if (depth > PC_TREE_DEPTH_MAX)
		return -1;
	int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = sub < 0 ? NULL : fdopendir(sub);
	if (!d) {
		if (sub >= 0)
			close(sub);
		return -1;
	}
	int r = 0;
	struct dirent *de;
	/* Removing while reading may skip names: read again until a pass finds none. */
	for (bool again = true; again && r == 0;) {
		again = false;
		rewinddir(d);
		while (r == 0 && (de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			again = true;
			if (unlinkat(dirfd(d), de->d_name, 0) < 0 &&
			    (errno != EISDIR || remove_tree(dirfd(d), de->d_name, depth + 1) < 0))
				r = -1;
		}
	}
	closedir(d);
	return r == 0 && unlinkat(fd, name, AT_REMOVEDIR) == 0 ? 0 : -1;
}

/* ---- the cut ---- */

/* Puts back the synced size and bytes of f (torn: only some of them). */
static void pc_file_revert(struct pc_file *f, enum pc_mode mode, struct pc_tally *t)
{
	struct stat st;
	if (fstat(f->fd, &st) < 0) {
		pc_untracked_at("cut: fstat failed", f->path);
		return;
	}
	uint64_t now = (uint64_t)st.st_size, synced = f->synced_size, end = synced;
	bool strict = mode == PC_STRICT || (now < synced && pc_random() % 2);
	if (!strict && now > synced) {
		/* A random count of the tail's pages reached the disk, each written or not. */
		uint64_t pages = (now - synced + PC_PAGE - 1) / PC_PAGE;
		end = synced + pc_random() % (pages + 1) * PC_PAGE;
		end = end < now ? end : now;
	} else if (!strict) {
		end = now; /* the cut off reached the disk */
	}
	int bad = end != now && ftruncate(f->fd, (off_t)end) < 0;
	t->cut_bytes += now > end ? now - end : 0;
	for (uint64_t pos = synced; !bad && pos < end;) {
		uint64_t pend = (pos / PC_PAGE + 1) * PC_PAGE;
		pend = pend < end ? pend : end;
		bool zero = pc_random() % 2;
		bad = zero && zero_range(f->fd, pos, pend) < 0;
		t->zeroed_bytes += zero ? pend - pos : 0;
		t->kept_bytes += zero ? 0 : pend - pos;
		pos = pend;
	}
	for (unsigned i = 0; !bad && i < f->nsaves; i++) {
		const struct pc_save *s = &f->saves[i];
		for (uint64_t pos = s->off; !bad && pos < s->off + s->len && pos < end;) {
			uint64_t pend = (pos / PC_PAGE + 1) * PC_PAGE;
			pend = pend < s->off + s->len ? pend : s->off + s->len;
			pend = pend < end ? pend : end;
			if (strict || pc_random() % 2) {
				bad =
				    pwrite_all(f->fd, s->old + (pos - s->off), pend - pos, pos) < 0;
				t->restored_bytes += pend - pos;
			}
			pos = pend;
		}
	}
	if (bad)
		pc_untracked_at("cut: cannot put a file back", f->path);
	if (t->files++ < PC_LOG_MAX)
		fprintf(stderr,
			"faultfs: powercut file=%s size=%" PRIu64 " synced=%" PRIu64 " now=%" PRIu64
			" overwritten_ranges=%u\n",
			f->path, now, synced, end, f->nsaves);
}

/* Puts back the synced entries of d, unless keep (torn: its changes reached the disk). */
static void pc_dir_revert(struct pc_dir *d, bool keep, struct pc_tally *t)
{
	t->dirs++;
	if (keep) {
		t->dirs_kept++;
		return;
	}
	int fd = openat(back_fd, d->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 && errno == ENOENT) {
		t->dirs_gone++; /* went with a directory above it */
		return;
	}
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_ino != d->ino) {
		pc_untracked_at("cut: the directory moved", d->path);
		if (fd >= 0)
			close(fd);
		return;
	}
	uint32_t n;
	unsigned removed = 0, restored = 0;
	struct pc_ent *now = pc_read_dir(fd, d->path, &n);
	for (uint32_t i = 0; now && i < n; i++) {
		struct pc_ent *e = pc_dir_synced_entry(d, now[i].name);
		if (e && e->ino == now[i].ino) {
			e->seen = true;
			continue;
		}
		int r = now[i].type == DT_DIR ? remove_tree(fd, now[i].name, 0)
					      : unlinkat(fd, now[i].name, 0);
		if (r < 0)
			pc_untracked_at("cut: cannot remove a name created since the sync",
					d->path);
		removed++;
	}
	for (uint32_t i = 0; now && i < d->n; i++) {
		char kname[32];
		snprintf(kname, sizeof(kname), "%ju", (uintmax_t)d->ents[i].ino);
		if (d->ents[i].seen)
			continue;
		if (d->ents[i].type == DT_DIR || linkat(keep_fd, kname, fd, d->ents[i].name, 0) < 0)
			pc_untracked_at("cut: cannot bring back a name removed since the sync",
					d->path);
		else
			restored++;
	}
	ents_free(now, now ? n : 0);
	close(fd);
	t->removed += removed;
	t->restored += restored;
	if (t->dirs <= PC_LOG_MAX)
		fprintf(stderr,
			"faultfs: powercut dir=%s synced_entries=%u removed=%u restored=%u\n",
			d->path, d->n, removed, restored);
}

/* The power goes: the file system as a reboot would find it, then no more changes. */
static void pc_cut(enum pc_mode mode, uint64_t seed)
{
	struct pc_tally t = {0};
	struct timespec at;
	clock_gettime(CLOCK_MONOTONIC, &at);
	pc_frozen = true;
	pc_rng = (seed + 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull; /* splitmix, roughly */
	pc_rng = (pc_rng ^ pc_rng >> 31) | 1;
	for (unsigned i = 0; i < pc_nfiles; i++)
		pc_file_revert(pc_files[i], mode, &t);
	while (pc_nfiles > 0)
		pc_file_free(pc_nfiles - 1);
	bool keep[PC_DIRS_MAX] = {false};
	if (mode == PC_TORN)
		pc_dirs_torn(keep);
	for (unsigned i = 0; i < pc_ndirs; i++)
		pc_dir_revert(pc_dirs[i], keep[i], &t);
	while (pc_ndirs > 0)
		pc_dir_free(pc_ndirs - 1);
	pc_npairs = 0;
	close(keep_fd);
	keep_fd = -1;
	if (remove_tree(back_fd, KEEP_DIR, 0) < 0)
		fprintf(stderr, "faultfs: cannot remove %s\n", KEEP_DIR);
	fprintf(stderr,
		"faultfs: powercut done mode=%s seed=%" PRIu64 " at_ns=%" PRIu64
		" files=%u cut_bytes=%" PRIu64 " restored_bytes=%" PRIu64 " zeroed_bytes=%" PRIu64
		" kept_bytes=%" PRIu64
		" dirs=%u dirs_kept=%u dirs_gone=%u removed=%u restored=%u untracked=%" PRIu64 "\n",
		mode == PC_TORN ? "torn" : "strict", seed,
		(uint64_t)at.tv_sec * 1000000000u + (uint64_t)at.tv_nsec, t.files, t.cut_bytes,
		t.restored_bytes, t.zeroed_bytes, t.kept_bytes, t.dirs, t.dirs_kept, t.dirs_gone,
		t.removed, t.restored, pc_untracked);
}

/*
 * Every operation that changes the file system runs between pc_enter and
 * pc_leave, so that the cut falls between two operations. A cut asked for
 * happens here. 0, or -EIO once the power is cut (nothing held then).
 */
static int pc_enter(enum pc_op op, const char *path)
{
	pthread_mutex_lock(&pc_lock);
	if (op != PCO_NONE && atomic_load(&pc_armed_op) == (int)op &&
	    atomic_fetch_sub(&pc_armed_left, 1) == 1) {
		atomic_store(&pc_armed_op, PCO_NONE);
		atomic_store(&pc_request, atomic_load(&pc_armed_mode));
		fprintf(stderr, "faultfs: powercut before op=%s path=%s\n", pc_op_names[op],
			path ? path : "?");
	}
	int m = atomic_exchange(&pc_request, PC_NONE);
	if (m != PC_NONE && !pc_frozen) {
		uint64_t seed = atomic_load(&pc_request_seed);
		pc_cut((enum pc_mode)m,
		       seed ? seed : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 20);
	}
	if (pc_frozen) {
		pthread_mutex_unlock(&pc_lock);
		return -EIO;
	}
	return 0;
}

static void pc_leave(void)
{
	pthread_mutex_unlock(&pc_lock);
}

/* Signals and the control file, for a cut asked for while no operation comes. */
static void *pc_watch(void *arg)
{
	(void)arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
		int s = sigtimedwait(&set, NULL, &ts);
		if (s == SIGUSR1 || s == SIGUSR2)
			atomic_store(&pc_request, s == SIGUSR1 ? PC_STRICT : PC_TORN);
		(void)faults_now();
		if (atomic_load(&pc_request) != PC_NONE && pc_enter(PCO_NONE, NULL) == 0)
			pc_leave();
	}
	return NULL;
}

/*
 * Before any other thread starts: makes BACKING/KEEP_DIR afresh (a faultfs
 * killed before its exit may have left one), leaves SIGUSR1 and SIGUSR2 to
 * the watching thread, and raises the descriptor limit for the dups kept
 * of changed files. 0, or -1 (logged).
 */
static int pc_start(void)
{
	struct stat st;
	const char *what = "stat BACKING";
	int r = fstat(back_fd, &st);
	if (r == 0) {
		back_ino = st.st_ino;
		what = "remove an old " KEEP_DIR;
		if (fstatat(back_fd, KEEP_DIR, &st, AT_SYMLINK_NOFOLLOW) == 0)
			r = remove_tree(back_fd, KEEP_DIR, 0);
	}
	if (r == 0) {
		what = "make " KEEP_DIR;
		r = mkdirat(back_fd, KEEP_DIR, 0700);
	}
	if (r == 0) {
		keep_fd = openat(back_fd, KEEP_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = keep_fd < 0 ? -1 : 0;
	}
	struct rlimit rl;
	if (r == 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_t t;
	if (r == 0) {
		what = "start the power-cut thread";
		r = pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ? -1 : 0;
	}
	if (r == 0 && pthread_create(&t, NULL, pc_watch, NULL) != 0)
		r = -1;
	if (r == 0)
		pthread_detach(t);
	else
		fprintf(stderr, "faultfs: cannot %s: %s\n", what, strerror(errno));
	return r;
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
	if (!fi && is_hidden(path))
		return -ENOENT;
	int r =
	    fi ? fstat(ofile_of(fi)->fd, st) : fstatat(back_fd, rel(path), st, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? -errno : 0;
}

static int ffs_mkdir(const char *path, mode_t mode)
{
	if (is_hidden(path))
		return -EPERM;
	if (take_error("mkdir", false, FAULT_ENOSPC, path) != FAULT_NONE)
		return -ENOSPC;
	char dir[PATH_MAX];
	split_path(path, dir, sizeof(dir));
	int r = pc_enter(PCO_MKDIR, path);
	if (r < 0)
		return r;
	pc_dir_touch(dir);
	r = mkdirat(back_fd, rel(path), mode) < 0 ? -errno : 0;
	pc_leave();
	return r;
}

static int ffs_unlink(const char *path)
{
	if (is_hidden(path))
		return -ENOENT;
	char dir[PATH_MAX];
	const char *name = split_path(path, dir, sizeof(dir));
	int r = pc_enter(PCO_UNLINK, path);
	if (r < 0)
		return r;
	struct stat st;
	bool had = fstatat(back_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0;
	pc_dir_losing(pc_dir_touch(dir), path, name);
	r = unlinkat(back_fd, rel(path), 0) < 0 ? -errno : 0;
	if (r == 0 && had)
		pc_file_unlinked(st.st_ino);
	pc_leave();
	return r;
}

static int ffs_rmdir(const char *path)
{
	if (is_hidden(path))
		return -ENOENT;
	char dir[PATH_MAX];
	const char *name = split_path(path, dir, sizeof(dir));
	int r = pc_enter(PCO_UNLINK, path);
	if (r < 0)
		return r;
	struct stat st;
	bool had = fstatat(back_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0;
	const struct pc_ent *e = pc_dir_synced_entry(pc_dir_touch(dir), name);
	r = unlinkat(back_fd, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
	unsigned i;
	if (r == 0 && had && e && e->ino == st.st_ino)
		pc_untracked_at("rmdir of a directory its parent's last sync saw", path);
	if (r == 0 && had && pc_dir_find(st.st_ino, &i))
		pc_dir_free(i); /* it is gone: nothing of it to roll back */
	pc_leave();
	return r;
}

static int ffs_rename(const char *from, const char *to, unsigned int flags)
{
	if (is_hidden(from) || is_hidden(to))
		return -ENOENT;
	char fdir[PATH_MAX], tdir[PATH_MAX];
	const char *fname = split_path(from, fdir, sizeof(fdir));
	const char *tname = split_path(to, tdir, sizeof(tdir));
	int r = pc_enter(PCO_RENAME, from);
	if (r < 0)
		return r;
	struct stat fst, tst;
	bool src = fstatat(back_fd, rel(from), &fst, AT_SYMLINK_NOFOLLOW) == 0;
	bool dst = fstatat(back_fd, rel(to), &tst, AT_SYMLINK_NOFOLLOW) == 0;
	if ((flags & RENAME_EXCHANGE) || (src && S_ISDIR(fst.st_mode)))
		pc_untracked_at("rename of a directory, or an exchange", from);
	struct pc_dir *from_dir = pc_dir_touch(fdir), *to_dir = pc_dir_touch(tdir);
	pc_dir_pair(from_dir, to_dir, from);
	pc_dir_losing(from_dir, from, fname);
	if (dst && !(flags & RENAME_NOREPLACE))
		pc_dir_losing(to_dir, to, tname);
	r = renameat2(back_fd, rel(from), back_fd, rel(to), flags) < 0 ? -errno : 0;
	if (r == 0 && dst && !(flags & RENAME_EXCHANGE))
		pc_file_unlinked(tst.st_ino);
	pc_leave();
	return r;
}

/* A second name for a file: a new entry in the directory of to, as a create makes. */
static int ffs_link(const char *from, const char *to)
{
	if (is_hidden(from) || is_hidden(to))
		return -ENOENT;
	char dir[PATH_MAX];
	split_path(to, dir, sizeof(dir));
	int r = pc_enter(PCO_LINK, to);
	if (r < 0)
		return r;
	pc_dir_touch(dir);
	r = linkat(back_fd, rel(from), back_fd, rel(to), 0) < 0 ? -errno : 0;
	pc_leave();
	return r;
}

/* Cuts or grows the file open as fd (of: its open file, or NULL) to size. */
static int truncate_fd(int fd, struct ofile *of, const char *path, off_t size)
{
	if (of)
		pthread_mutex_lock(&of->lock);
	pc_file_truncate(fd, path, (uint64_t)size);
	int r = ftruncate(fd, size) < 0 ? -errno : 0;
	if (r == 0 && of)
		dirty_clip(of, (uint64_t)size);
	if (of)
		pthread_mutex_unlock(&of->lock);
	return r;
}

static int ffs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (!fi && is_hidden(path))
		return -ENOENT;
	int r = pc_enter(PCO_TRUNCATE, path);
	if (r < 0)
		return r;
	if (fi) {
		r = truncate_fd(ofile_of(fi)->fd, ofile_of(fi), ofile_of(fi)->path, size);
	} else {
		int fd = openat(back_fd, rel(path), O_WRONLY | O_CLOEXEC);
		r = fd < 0 ? -errno : truncate_fd(fd, NULL, path, size);
		if (fd >= 0)
			close(fd);
	}
	pc_leave();
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

/*
 * open and create: the O_TRUNC is done apart, so that the bytes it cuts
 * are kept for a power cut; create also changes the directory.
 */
static int open_tracked(const char *path, int flags, mode_t mode, struct fuse_file_info *fi)
{
	bool trunc = (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY;
	char dir[PATH_MAX];
	split_path(path, dir, sizeof(dir));
	int r = pc_enter((flags & O_CREAT) ? PCO_CREATE : PCO_TRUNCATE, path);
	if (r < 0)
		return r;
	if (flags & O_CREAT)
		pc_dir_touch(dir);
	int fd = openat(back_fd, rel(path), (flags & ~O_TRUNC) | O_CLOEXEC, mode);
	r = fd < 0 ? -errno : 0;
	if (r == 0 && trunc)
		r = truncate_fd(fd, NULL, path, 0);
	pc_leave();
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	return ofile_open(fd, path, fi);
}

static int ffs_open(const char *path, struct fuse_file_info *fi)
{
	if (is_hidden(path))
		return -ENOENT;
	int flags = fi->flags & ~O_NOFOLLOW;
	if (!(flags & (O_TRUNC | O_CREAT))) {
		int fd = openat(back_fd, rel(path), flags | O_CLOEXEC);
		return fd < 0 ? -errno : ofile_open(fd, path, fi);
	}
	return open_tracked(path, flags, 0, fi);
}

static int ffs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (is_hidden(path))
		return -EPERM;
	if (take_error("create", false, FAULT_ENOSPC, path) != FAULT_NONE)
		return -ENOSPC;
	return open_tracked(path, fi->flags | O_CREAT, mode, fi);
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
	int r = pc_enter(PCO_WRITE, of->path);
	if (r < 0)
		return r;
	pthread_mutex_lock(&of->lock);
	pc_file_write(of->fd, of->path, (uint64_t)off, size);
	ssize_t n = pwrite(of->fd, buf, size, off);
	r = n < 0 ? -errno : (int)n;
	if (n > 0)
		dirty_add(of, (uint64_t)off, (uint64_t)n);
	pthread_mutex_unlock(&of->lock);
	pc_leave();
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
	int r = pc_enter(PCO_FSYNC, of->path);
	if (r < 0)
		return r;
	pthread_mutex_lock(&of->lock);
	if (take_error(op, true, FAULT_NONE, of->path) != FAULT_NONE)
		r = -EIO;
	else if ((datasync ? fdatasync(of->fd) : fsync(of->fd)) < 0)
		r = -errno;
	if (r < 0) {
		dirty_lose(of);
	} else {
		of->ndirty = 0;
		pc_file_synced(of->fd);
	}
	pthread_mutex_unlock(&of->lock);
	pc_leave();
	return r;
}

static int ffs_opendir(const char *path, struct fuse_file_info *fi)
{
	if (is_hidden(path))
		return -ENOENT;
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
	(void)off;
	(void)flags;
	(void)path;
	DIR *d = odir_of(fi)->d;
	struct stat dst;
	bool root = fstat(dirfd(d), &dst) == 0 && dst.st_ino == back_ino;
	rewinddir(d);
	struct dirent *de;
	/* Offset 0 for every entry: libfuse gathers the whole listing itself. */
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (root && strcmp(de->d_name, KEEP_DIR) == 0)
			continue;
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
	int r = pc_enter(PCO_FSYNCDIR, od->path);
	if (r < 0)
		return r;
	int fd = dirfd(od->d);
	if (take_error("fsyncdir", true, FAULT_NONE, od->path) != FAULT_NONE)
		r = -EIO;
	else if ((datasync ? fdatasync(fd) : fsync(fd)) < 0)
		r = -errno;
	if (r == 0)
		pc_dir_synced(fd);
	pc_leave();
	return r;
}

static const struct fuse_operations ops = {
    .init = ffs_init,
    .getattr = ffs_getattr,
    .mkdir = ffs_mkdir,
    .unlink = ffs_unlink,
    .rmdir = ffs_rmdir,
    .rename = ffs_rename,
    .link = ffs_link,
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
	if (pc_start() < 0)
		return 1;

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
	pthread_mutex_lock(&pc_lock);
	if (keep_fd >= 0 && (close(keep_fd), remove_tree(back_fd, KEEP_DIR, 0) < 0))
		fprintf(stderr, "faultfs: cannot remove %s\n", KEEP_DIR);
	keep_fd = -1;
	pthread_mutex_unlock(&pc_lock);
	close(back_fd);
	fprintf(stderr, "faultfs: unmounted %s, exit %d\n", argv[2], rc);
	return rc;
}
