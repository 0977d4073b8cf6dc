/*
 * setup_check.c - mxring --check. Each problem is one line that names the
 * file or key and says what to do; the last line counts them. What needs the
 * unprivileged user (reading the reloaded files, using the spool) is tried as
 * that user, in a child process that drops its privileges as mxring would.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "priv.h"
#include "rcpt_table.h"
#include "setup_check.h"
#include "tls.h"

struct tally {
	FILE *out;
	unsigned problems, warnings;
};

/* A key file's mode: others may read it, or anyone but its owner write it. */
static void check_secret_mode(struct tally *t, const char *key, const char *list)
{
	char path[1024];
	struct stat st;
	while (path_list_next(&list, path, sizeof(path))) {
		if (!path[0])
			continue;
		if (stat(path, &st) != 0) {
			fprintf(t->out, "mxring: check: %s %s: %s\n", key, path, strerror(errno));
			t->problems++;
		} else if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
			fprintf(
			    t->out,
			    "mxring: check: warning: %s %s has mode %04o: a secret should be "
			    "readable by its owner and the group of the user alone (chmod 0640)\n",
			    key, path, (unsigned)(st.st_mode & 07777));
			t->warnings++;
		}
	}
}

/* The spool as the user: an existing spool_dir must be a directory the user
 * may enter, list and write (one root owns is given to the user at start);
 * a missing one needs a parent that exists. Returns the problems found. */
static unsigned check_spool(const struct config *cfg, const struct priv *p, FILE *out)
{
	struct stat st;
	if (stat(cfg->spool_dir, &st) != 0) {
		if (errno != ENOENT) {
			fprintf(out, "mxring: check: spool_dir %s: %s\n", cfg->spool_dir,
				strerror(errno));
			return 1;
		}
		fprintf(out, "mxring: check: spool_dir %s does not exist; it is made at start\n",
			cfg->spool_dir);
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(out, "mxring: check: spool_dir %s is not a directory\n", cfg->spool_dir);
		return 1;
	}
	if (p->change && st.st_uid != p->uid) {
		fprintf(out,
			"mxring: check: spool_dir %s belongs to uid %u; it is given to user "
			"%s at start\n",
			cfg->spool_dir, (unsigned)st.st_uid, p->name);
		return 0;
	}
	if (access(cfg->spool_dir, R_OK | W_OK | X_OK) != 0) {
		fprintf(out, "mxring: check: spool_dir %s: user %s cannot use it (%s)\n",
			cfg->spool_dir, p->name, strerror(errno));
		return 1;
	}
	return 0;
}

/* In a child that becomes the user: the reloaded files and the spool. */
static unsigned check_as_user(const struct config *cfg, const struct priv *p, FILE *out)
{
	fflush(out);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(out, "mxring: check: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		unsigned n = 0;
		if (priv_drop(p, out) != 0)
			n++;
		else
			n += (unsigned)priv_check_reload(cfg, p, out) + check_spool(cfg, p, out);
		fflush(out);
		_exit(n > 100 ? 100 : (int)n);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? (unsigned)WEXITSTATUS(status) : 1;
}

int setup_check(const struct config *cfg, FILE *out)
{
	struct tally t = {.out = out};
	struct priv p;
	int rc = priv_plan(cfg, &p, out);
	if (rc != 0) {
		t.problems++;
	} else {
		if (p.as_root) {
			fprintf(out, "mxring: check: warning: runs as root with every privilege "
				     "(allow_root = yes): set user for a server that faces the "
				     "internet\n");
			t.warnings++;
		}
		t.problems += check_as_user(cfg, &p, out);
	}
	if (cfg->tls_security_level != TLS_LEVEL_NONE || cfg->nsmtps_listen) {
		struct tls_ctx *ctx;
		if (tls_ctx_new(cfg, &ctx, out) != 0)
			t.problems++;
		else
			tls_ctx_unref(ctx);
		check_secret_mode(&t, "tls_key_file", cfg->tls_key_file);
		if (cfg->tls_ticket_key_file[0])
			check_secret_mode(&t, "tls_ticket_key_file", cfg->tls_ticket_key_file);
	}
	if (cfg->recipient_table[0]) {
		struct rcpt_table *rt;
		if (rcpt_table_load(cfg->recipient_table, &rt, out) != 0)
			t.problems++;
		else
			rcpt_table_free(rt);
	}
	fprintf(out, "mxring: check: %u problem%s, %u warning%s\n", t.problems,
		t.problems == 1 ? "" : "s", t.warnings, t.warnings == 1 ? "" : "s");
	return t.problems ? 1 : 0;
}
