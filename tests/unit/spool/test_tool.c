/*
 * test_tool.c - runs the built mxring-spool (argv[1]) on spools made with
 * the spool API: verify (exit status and output on an intact, a damaged
 * and a maildir spool), list, cat (with and without --body), export to a
 * maildir and to an mbox (">From " quoting), and usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "log.h"
#include "trace.h"

static const char *tool;

struct run {
	int status; /* exit status, or -1 */
	uint8_t *out, *err;
	size_t out_len, err_len;
};

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Runs the tool with args (NULL-terminated) and collects stdout, stderr, status. */
static void run_tool(struct run *r, const char *dir, ...)
{
	char outp[600], errp[600];
	snprintf(outp, sizeof(outp), "%s.out", dir);
	snprintf(errp, sizeof(errp), "%s.err", dir);
	const char *argv[16] = {tool};
	int argc = 1;
	va_list ap;
	va_start(ap, dir);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(99);
		execv(tool, (char *const *)argv);
		_exit(98);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	assert_int_equal(t_read_file(outp, &r->out, &r->out_len), 0);
	assert_int_equal(t_read_file(errp, &r->err, &r->err_len), 0);
	r->out = realloc(r->out, r->out_len + 1);
	r->err = realloc(r->err, r->err_len + 1);
	r->out[r->out_len] = 0;
	r->err[r->err_len] = 0;
	unlink(outp);
	unlink(errp);
}

static unsigned count_lines(const char *s, const char *prefix)
{
	unsigned n = 0;
	for (const char *p = s; p && *p;) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return n;
}

/* A spool with three messages (one of three parts) and one aborted transaction. */
static void make_spool(const char *dir, enum spool_format fmt, struct t_txn t[3])
{
	struct config cfg;
	t_config(&cfg, dir, fmt, 1);
	struct spool *sp;
	assert_int_equal(spool_open(&cfg, 0, 64, 16, &sp), 0);
	struct t_txn x;
	t_txn_init(&t[0], "AAAA0001", 500, 1, 1);
	t_txn_init(&t[1], "BBBB0002", 3000, 2, 2);
	t_txn_init(&t[2], "CCCC0003", 0, 3, 1);
	t_txn_init(&x, "XXXX0004", 100, 4, 1);
	/* A client address that needs escaping in list output. */
	strcpy(t[0].env.from, "odd sender\"@example.net");
	struct msg *m[] = {
	    t_msg(&t[1], MSG_PART, 0, 0, 1000, 64), t_msg(&x, MSG_PART, 0, 0, 100, 64),
	    t_msg(&t[0], MSG_FINAL, 0, 0, 500, 64), t_msg(&t[1], MSG_PART, 1, 1000, 1000, 64),
	    t_msg(&x, MSG_ABORT, 0, 0, 0, 0),	    t_msg(&t[1], MSG_FINAL, 2, 2000, 1000, 64),
	    t_msg(&t[2], MSG_FINAL, 0, 0, 0, 64),
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		assert_int_equal(spool_write(sp, m[i]), 0);
		t_msg_free(m[i]);
	}
	assert_int_equal(spool_sync(sp), 0);
	assert_int_equal(spool_close(sp), 0);
	t_txn_free(&x);
}

static void check_cat(const char *dir, const struct t_txn *t)
{
	struct run r;
	run_tool(&r, dir, "cat", dir, t->env.qid, "--body", NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.err_len, 0);
	assert_int_equal(r.out_len, t->body_len);
	if (t->body_len)
		assert_memory_equal(r.out, t->body, t->body_len);
	run_free(&r);
	run_tool(&r, dir, "cat", dir, t->env.qid, NULL);
	assert_int_equal(r.status, 0);
	char trace[SPOOL_TRACE_MAX];
	size_t tl = trace_format(trace, sizeof(trace), &t->env, "");
	assert_int_equal(r.out_len, tl + t->body_len);
	assert_memory_equal(r.out, trace, tl);
	if (t->body_len)
		assert_memory_equal(r.out + tl, t->body, t->body_len);
	run_free(&r);
}

static void tool_on(enum spool_format fmt)
{
	char dir[256];
	struct t_txn t[3];
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, fmt, t);

	run_tool(&r, dir, "verify", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr((char *)r.out, "3 messages\n"));
	assert_int_equal(count_lines((char *)r.out, "error:"), 0);
	if (fmt == SPOOL_SEGMENT) /* the aborted transaction's part */
		assert_int_equal(count_lines((char *)r.out, "info:"), 1);
	run_free(&r);

	run_tool(&r, dir, "list", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(count_lines((char *)r.out, "qid="), 3);
	assert_non_null(strstr((char *)r.out,
			       "qid=AAAA0001 time=2023-11-14T22:13:20.123457Z "
			       "client=[192.0.2.1]:1025 helo=client1.example "
			       "from=<odd\\x20sender\\\"@example.net> rcpts=1 size="));
	assert_non_null(strstr((char *)r.out, "qid=BBBB0002 "));
	assert_non_null(strstr((char *)r.out, " rcpts=2 size="));
	run_free(&r);

	for (int i = 0; i < 3; i++)
		check_cat(dir, &t[i]);
	run_tool(&r, dir, "cat", dir, "NOSUCHQID", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.err, "no complete message with qid NOSUCHQID"));
	run_free(&r);

	/* export --maildir */
	char out[512], path[600];
	snprintf(out, sizeof(out), "%s/exported", dir);
	run_tool(&r, dir, "export", dir, "--maildir", out, NULL);
	assert_int_equal(r.status, 0);
	snprintf(path, sizeof(path), "%s/new", out);
	assert_int_equal(t_count_files(path), 3);
	run_free(&r);

	/* export --mbox: From_ lines, >From quoting, LF line ends. */
	snprintf(out, sizeof(out), "%s/mbox", dir);
	run_tool(&r, dir, "export", dir, "--mbox", out, NULL);
	assert_int_equal(r.status, 0);
	run_free(&r);
	uint8_t *mb;
	size_t mlen;
	assert_int_equal(t_read_file(out, &mb, &mlen), 0);
	mb = realloc(mb, mlen + 1);
	mb[mlen] = 0;
	assert_int_equal(count_lines((char *)mb, "From "), 3);
	assert_true(count_lines((char *)mb, ">From ") > 0);
	assert_null(memchr(mb, '\r', mlen) == NULL ? NULL : strstr((char *)mb, "\r\n"));
	assert_non_null(strstr((char *)mb,
			       "From odd_sender\"@example.net Tue Nov 14 22:13:20 2023\n"
			       "Return-Path: <odd sender\"@example.net>\nReceived: from "));
	free(mb);

	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

static void test_tool_segment(void **state)
{
	(void)state;
	tool_on(SPOOL_SEGMENT);
}

static void test_tool_maildir(void **state)
{
	(void)state;
	tool_on(SPOOL_MAILDIR);
}

static void test_tool_damage(void **state)
{
	(void)state;
	char dir[256], rdy[300], name[256], path[700];
	struct t_txn t[3];
	struct run r;
	t_mkdtemp(dir, sizeof(dir));
	make_spool(dir, SPOOL_SEGMENT, t);
	snprintf(rdy, sizeof(rdy), "%s/ready", dir);
	t_first_file(rdy, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", rdy, name);
	uint8_t *seg;
	size_t len;
	assert_int_equal(t_read_file(path, &seg, &len), 0);
	seg[len - 1] ^= 1; /* the last record: C's FINAL */
	assert_int_equal(t_write_file(path, seg, len), 0);
	free(seg);
	run_tool(&r, dir, "verify", dir, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.out, "\n2 messages\n"));
	assert_int_equal(count_lines((char *)r.out, "error: ready/"), 1);
	run_free(&r);
	for (int i = 0; i < 3; i++)
		t_txn_free(&t[i]);
	t_rmdir(dir);
}

static void test_tool_usage(void **state)
{
	(void)state;
	struct run r;
	char dir[256];
	t_mkdtemp(dir, sizeof(dir));
	run_tool(&r, dir, NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "frobnicate", dir, NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr((char *)r.err, "unknown command 'frobnicate'"));
	run_free(&r);
	run_tool(&r, dir, "verify", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "export", dir, NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run_tool(&r, dir, "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr((char *)r.out, "usage: mxring-spool"));
	run_free(&r);
	run_tool(&r, dir, "verify", "/nonexistent/spool", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.err, "/nonexistent/spool: No such file or directory"));
	run_free(&r);
	run_tool(&r, dir, "verify", dir, NULL); /* a directory that is no spool */
	assert_int_equal(r.status, 1);
	assert_non_null(strstr((char *)r.err, "not a spool directory"));
	run_free(&r);
	t_rmdir(dir);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test_tool PATH-TO-mxring-spool\n");
		return 77;
	}
	tool = argv[1];
	log_enable(0);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tool_segment),
	    cmocka_unit_test(test_tool_maildir),
	    cmocka_unit_test(test_tool_damage),
	    cmocka_unit_test(test_tool_usage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
