/*
 * mxring-spool - look into, check and export an mxring spool.
 *
 *   mxring-spool verify DIR
 *   mxring-spool list DIR
 *   mxring-spool cat DIR QID [--body]
 *   mxring-spool export DIR --maildir OUTDIR
 *   mxring-spool export DIR --mbox FILE          (FILE "-" is standard output)
 *
 * DIR is a spool_dir (segments in active/ and ready/, and/or maildir/); the
 * formats are described in core/spool.h. The tool only reads the spool; it
 * can run beside a live mxring, whose active segments may then end in a
 * record still being written (reported as an incomplete record).
 *
 * verify prints one line per problem ("error: FILE@OFFSET: ..." or
 * "info: ..."), then "N messages" (complete messages: a FINAL whose parts
 * are all there and add up) and a line of counters. Orphan parts (no FINAL:
 * an aborted or failed transaction, or one cut by a crash) are information,
 * not errors.
 *
 * Exit status: 0 success (verify: every record intact), 1 a problem (verify:
 * a damaged record or message; other commands: a failure or a message not
 * found), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "spool.h"

#define PROG "mxring-spool"

static const char usage_text[] =
    "usage: " PROG " COMMAND DIR [ARGS]\n"
    "\n"
    "  verify DIR                    check every record and message of the spool\n"
    "  list DIR                      one line per stored message\n"
    "  cat DIR QID [--body]          the stored message (trace header and body) on\n"
    "                                stdout; --body: the body only, as the client sent it\n"
    "  export DIR --maildir OUTDIR   every message into OUTDIR/{tmp,new,cur}\n"
    "  export DIR --mbox FILE        every message into an mboxrd file (\"-\": stdout)\n"
    "\n"
    "DIR is mxring's spool_dir. Exit status: 0 success, 1 problems found or a\n"
    "failure, 2 usage error.\n";

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, PROG ": ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	va_end(ap);
	return 2;
}

/* ---- problems ---- */

struct report {
	bool verify; /* verify: every problem on stdout; else errors on stderr */
};

static void on_problem(void *ctx, const struct spool_problem *p)
{
	const struct report *rep = ctx;
	FILE *f = rep->verify ? stdout : stderr;
	if (!rep->verify && !p->error)
		return;
	fprintf(f, "%s%s: %s@%" PRIu64 ": %s\n", rep->verify ? "" : PROG ": ",
		p->error ? "error" : "info", p->file, p->offset, p->text);
}

static int open_reader(const char *dir, struct report *rep, struct spool_reader **r)
{
	int e = spool_reader_open(dir, on_problem, rep, r);
	if (e == -EMEDIUMTYPE)
		fprintf(stderr,
			PROG ": %s: not a spool directory (no active/, ready/ or maildir/)\n", dir);
	else if (e < 0)
		fprintf(stderr, PROG ": %s: %s\n", dir, strerror(-e));
	return e;
}

static int next_item(struct spool_reader *r, const char *dir, const struct spool_item **it)
{
	int e = spool_reader_next(r, it);
	if (e < 0)
		fprintf(stderr, PROG ": %s: reading stopped: %s\n", dir, strerror(-e));
	return e;
}

/* ---- sinks ---- */

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int sink_fd(void *ctx, const uint8_t *p, size_t len)
{
	return write_all(*(int *)ctx, p, len);
}

/* mboxrd: CRLF -> LF, and ">*From " at a line start gets one more '>'. */
struct mbox_out {
	FILE *f;
	bool cr;     /* a CR waits to see whether LF follows */
	bool bol;    /* at the start of a line */
	uint64_t gt; /* '>' seen at this line start */
	unsigned ml; /* bytes of "From " matched after them */
	int last;    /* last byte written, -1 none */
};

static void mb_out(struct mbox_out *m, int c)
{
	putc(c, m->f);
	m->last = c;
}

static void mb_prefix(struct mbox_out *m)
{
	for (uint64_t i = 0; i < m->gt; i++)
		mb_out(m, '>');
	for (unsigned i = 0; i < m->ml; i++)
		mb_out(m, "From "[i]);
	m->gt = 0;
	m->ml = 0;
}

static void mb_quote(struct mbox_out *m, int c)
{
	if (m->bol) {
		if (m->ml == 0 && c == '>') {
			m->gt++;
			return;
		}
		if (c == "From "[m->ml]) {
			if (++m->ml == 5) {
				mb_out(m, '>');
				mb_prefix(m);
				m->bol = false;
			}
			return;
		}
		mb_prefix(m);
		m->bol = false;
	}
	mb_out(m, c);
	if (c == '\n')
		m->bol = true;
}

static void mb_byte(struct mbox_out *m, int c)
{
	if (m->cr) {
		m->cr = false;
		if (c == '\n') {
			mb_quote(m, '\n');
			return;
		}
		mb_quote(m, '\r');
	}
	if (c == '\r') {
		m->cr = true;
		return;
	}
	mb_quote(m, c);
}

static int sink_mbox(void *ctx, const uint8_t *p, size_t len)
{
	struct mbox_out *m = ctx;
	for (size_t i = 0; i < len; i++)
		mb_byte(m, p[i]);
	return ferror(m->f) ? -EIO : 0;
}

/* ---- commands ---- */

static void fmt_time(char *dst, size_t cap, uint64_t us)
{
	time_t t = (time_t)(us / 1000000u);
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	snprintf(dst, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRIu64 "Z", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us % 1000000u);
}

static int cmd_verify(const char *dir)
{
	struct report rep = {.verify = true};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	const struct spool_item *it;
	int e;
	while ((e = next_item(r, dir, &it)) > 0)
		;
	struct spool_reader_counts c;
	spool_reader_counts(r, &c);
	spool_reader_close(r);
	printf("%" PRIu64 " messages\n", c.messages);
	printf("files=%" PRIu64 " records=%" PRIu64 " orphan_parts=%" PRIu64 " errors=%" PRIu64
	       "\n",
	       c.files, c.records, c.orphans, c.errors);
	fflush(stdout);
	return e < 0 || c.errors > 0 ? 1 : 0;
}

static int cmd_list(const char *dir)
{
	struct report rep = {.verify = false};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	const struct spool_item *it;
	int e;
	while ((e = next_item(r, dir, &it)) > 0) {
		const struct envelope *env = &it->env;
		char when[96], qid[4 * QID_LEN + 8], addr[4 * CLIENT_ADDR_MAX + 8];
		char helo[4 * HELO_MAX + 8], from[4 * PATH_MAX_OCTETS + 8];
		fmt_time(when, sizeof(when), env->time_us);
		log_escape(qid, sizeof(qid), env->qid, strlen(env->qid), QID_LEN);
		log_escape(addr, sizeof(addr), env->client_addr, strlen(env->client_addr),
			   CLIENT_ADDR_MAX);
		log_escape(helo, sizeof(helo), env->helo, strlen(env->helo), HELO_MAX);
		log_escape(from, sizeof(from), env->from, strlen(env->from), PATH_MAX_OCTETS);
		printf("qid=%s time=%s client=[%s]:%u helo=%s from=<%s> rcpts=%" PRIu32
		       " size=%" PRIu64 "\n",
		       qid, when, addr, (unsigned)env->client_port, helo, from, env->nrcpt,
		       it->trace_len + it->body_size);
	}
	spool_reader_close(r);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		return 1;
	}
	return e < 0 ? 1 : 0;
}

static int cmd_cat(const char *dir, const char *qid, bool body_only)
{
	struct report rep = {.verify = false};
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0)
		return 1;
	const struct spool_item *it;
	int e, fd = STDOUT_FILENO;
	while ((e = next_item(r, dir, &it)) > 0)
		if (strcmp(it->env.qid, qid) == 0)
			break;
	if (e > 0) {
		unsigned what = SPOOL_READ_BODY | (body_only ? 0 : SPOOL_READ_TRACE);
		e = spool_reader_read(r, what, sink_fd, &fd);
		if (e != 0)
			fprintf(stderr, PROG ": %s: reading %s: %s\n", dir, qid, strerror(-e));
		e = e == 0 ? 0 : -1;
	} else if (e == 0) {
		fprintf(stderr, PROG ": %s: no complete message with qid %s\n", dir, qid);
		e = -1;
	}
	spool_reader_close(r);
	return e == 0 ? 0 : 1;
}

/* "Return-Path: <from>" with anything that could break the line as '?'. */
static void return_path(char *dst, size_t cap, const char *from, const char *eol)
{
	char clean[PATH_MAX_OCTETS + 1];
	size_t n = strnlen(from, PATH_MAX_OCTETS);
	for (size_t i = 0; i < n; i++)
		clean[i] = (unsigned char)from[i] < 0x20 || from[i] == 0x7f ? '?' : from[i];
	clean[n] = 0;
	snprintf(dst, cap, "Return-Path: <%s>%s", clean, eol);
}

static int mkdir_one(const char *path)
{
	return mkdir(path, 0750) < 0 && errno != EEXIST ? -errno : 0;
}

struct md_out {
	const char *dir;
	char host[256];
	int tmpfd, newfd;
};

static int md_out_open(struct md_out *o, const char *dir)
{
	char path[4096];
	const char *sub[] = {"", "/tmp", "/new", "/cur"};
	for (int i = 0; i < 4; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s", dir, sub[i]) >= sizeof(path))
			return -ENAMETOOLONG;
		int e = mkdir_one(path);
		if (e < 0)
			return e;
	}
	o->dir = dir;
	snprintf(path, sizeof(path), "%s/tmp", dir);
	o->tmpfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/new", dir);
	o->newfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (o->tmpfd < 0 || o->newfd < 0)
		return -errno;
	if (gethostname(o->host, sizeof(o->host) - 1) < 0)
		snprintf(o->host, sizeof(o->host), "localhost");
	for (char *h = o->host; *h; h++)
		if (*h == '/' || *h == ':' || *h == '.')
			*h = '_';
	return 0;
}

static int md_out_one(struct md_out *o, struct spool_reader *r, const struct spool_item *it,
		      unsigned n)
{
	char name[512], hdr[PATH_MAX_OCTETS + 32];
	uint64_t us = it->env.time_us;
	snprintf(name, sizeof(name), "%" PRIu64 ".M%06" PRIu64 "P%dQ%sN%u.%s", us / 1000000u,
		 us % 1000000u, (int)getpid(), it->env.qid, n, o->host);
	int fd = openat(o->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	return_path(hdr, sizeof(hdr), it->env.from, "\r\n");
	int e = write_all(fd, (const uint8_t *)hdr, strlen(hdr));
	if (e == 0)
		e = spool_reader_read(r, SPOOL_READ_TRACE | SPOOL_READ_BODY, sink_fd, &fd);
	if (e == 0 && fdatasync(fd) < 0)
		e = -errno;
	if (close(fd) < 0 && e == 0)
		e = -errno;
	if (e == 0 && renameat(o->tmpfd, name, o->newfd, name) < 0)
		e = -errno;
	if (e != 0)
		unlinkat(o->tmpfd, name, 0);
	return e;
}

static int mbox_one(FILE *f, struct spool_reader *r, const struct spool_item *it)
{
	char sender[PATH_MAX_OCTETS + 1], date[32], hdr[PATH_MAX_OCTETS + 32];
	size_t n = strnlen(it->env.from, PATH_MAX_OCTETS);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)it->env.from[i];
		sender[i] = c <= 0x20 || c == 0x7f ? '_' : (char)c;
	}
	sender[n] = 0;
	time_t t = (time_t)(it->env.time_us / 1000000u);
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
	fprintf(f, "From %s %s\n", n ? sender : "MAILER-DAEMON", date);
	return_path(hdr, sizeof(hdr), it->env.from, "\n");
	fputs(hdr, f);
	struct mbox_out m = {.f = f, .bol = true, .last = -1};
	int e = spool_reader_read(r, SPOOL_READ_TRACE | SPOOL_READ_BODY, sink_mbox, &m);
	if (e != 0)
		return e;
	if (m.cr)
		mb_quote(&m, '\r');
	if (m.bol)
		mb_prefix(&m);
	if (m.last != '\n')
		mb_out(&m, '\n');
	putc('\n', f);
	return ferror(f) ? -EIO : 0;
}

static int cmd_export(const char *dir, const char *mode, const char *dest)
{
	struct report rep = {.verify = false};
	struct md_out md = {.tmpfd = -1, .newfd = -1};
	FILE *mbox = NULL;
	bool to_maildir = strcmp(mode, "--maildir") == 0;
	int e = 0;
	if (to_maildir) {
		e = md_out_open(&md, dest);
	} else if (strcmp(dest, "-") == 0) {
		mbox = stdout;
	} else {
		mbox = fopen(dest, "ae");
		e = mbox ? 0 : -errno;
	}
	if (e < 0) {
		fprintf(stderr, PROG ": %s: %s\n", dest, strerror(-e));
		return 1;
	}
	struct spool_reader *r;
	if (open_reader(dir, &rep, &r) < 0) {
		e = -1;
		goto out;
	}
	const struct spool_item *it;
	unsigned n = 0;
	while ((e = next_item(r, dir, &it)) > 0) {
		e = to_maildir ? md_out_one(&md, r, it, n) : mbox_one(mbox, r, it);
		if (e != 0) {
			fprintf(stderr, PROG ": %s: exporting %s: %s\n", dest, it->env.qid,
				strerror(-e));
			break;
		}
		n++;
	}
	spool_reader_close(r);
	if (e == 0 && to_maildir && fsync(md.newfd) < 0)
		e = -errno;
	if (e == 0 && mbox && (fflush(mbox) != 0 || (mbox != stdout && fsync(fileno(mbox)) < 0)))
		e = -errno;
	if (e == 0)
		fprintf(stderr, PROG ": %u messages exported to %s\n", n, dest);
	else if (e < -1)
		fprintf(stderr, PROG ": %s: %s\n", dest, strerror(-e));
out:
	if (mbox && mbox != stdout)
		fclose(mbox);
	if (md.tmpfd >= 0)
		close(md.tmpfd);
	if (md.newfd >= 0)
		close(md.newfd);
	return e == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *pos[3] = {0};
	int npos = 0;
	bool body = false;
	const char *mode = NULL, *dest = NULL;

	if (argc < 2)
		return usage_error("%s", "a command is needed");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage_text, stdout);
			return 0;
		}
		if (strcmp(a, "--body") == 0) {
			body = true;
		} else if (strcmp(a, "--maildir") == 0 || strcmp(a, "--mbox") == 0) {
			if (mode)
				return usage_error("%s", "one of --maildir and --mbox, once");
			if (i + 1 >= argc)
				return usage_error("%s needs an argument", a);
			mode = a;
			dest = argv[++i];
		} else if (a[0] == '-' && a[1] != 0) {
			return usage_error("unknown option '%s'", a);
		} else if (npos < 3) {
			pos[npos++] = a;
		} else {
			return usage_error("unexpected argument '%s'", a);
		}
	}
	const char *cmd = pos[0];
	if (!cmd)
		return usage_error("%s", "a command is needed");
	bool is_cat = strcmp(cmd, "cat") == 0, is_export = strcmp(cmd, "export") == 0;
	if (!is_cat && !is_export && strcmp(cmd, "verify") && strcmp(cmd, "list"))
		return usage_error("unknown command '%s'", cmd);
	if (npos < 2)
		return usage_error("%s: the spool directory is missing", cmd);
	if (npos != (is_cat ? 3 : 2))
		return usage_error("%s: %s", cmd,
				   is_cat ? "DIR and QID are needed" : "too many arguments");
	if (body && !is_cat)
		return usage_error("%s", "--body goes with cat");
	if (mode && !is_export)
		return usage_error("%s goes with export", mode);
	if (is_export && !mode)
		return usage_error("%s", "export: --maildir OUTDIR or --mbox FILE is needed");

	if (is_cat)
		return cmd_cat(pos[1], pos[2], body);
	if (is_export)
		return cmd_export(pos[1], mode, dest);
	if (strcmp(cmd, "list") == 0)
		return cmd_list(pos[1]);
	return cmd_verify(pos[1]);
}
