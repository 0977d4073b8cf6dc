/*
 * test_transcripts.c - every golden transcript in a directory, one cmocka test each.
 *
 * Usage: test_transcripts DIR [NAME...]. Each .txt file of DIR (or each NAME given)
 * is replayed under every feed plan of transcript_check (runner.c) and must
 * give its S:/E: sequence exactly. A last test checks that the plans, over
 * all transcripts, went through the paths they exist for: output full,
 * resume after a deferred end of data, partial lines kept between feeds.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runner.h"

static struct tstats totals;
static char dir[4096];

static void test_one(void **state)
{
	const char *name = *state;
	char path[8192], err[512];
	struct transcript t;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (transcript_load(&t, path, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	struct tstats st = {0};
	int rc = transcript_check(&t, &st);
	transcript_free(&t);
	assert_int_equal(rc, 0);
	totals.feeds += st.feeds;
	totals.out_full += st.out_full;
	totals.resumes += st.resumes;
	totals.body_runs += st.body_runs;
	if (st.stash_max > totals.stash_max)
		totals.stash_max = st.stash_max;
	/* PIPELINING: a group answered with the output nearly full must block and go on. */
	if (strcmp(name, "pipelining.txt") == 0)
		assert_true(st.out_full > 0);
}

static void test_paths_covered(void **state)
{
	(void)state;
	print_message("feeds %u, out full %u, resumes %u, body runs %llu, longest stash %zu\n",
		      totals.feeds, totals.out_full, totals.resumes,
		      (unsigned long long)totals.body_runs, totals.stash_max);
	assert_true(totals.out_full > 0);
	assert_true(totals.resumes > 0);
	assert_true(totals.stash_max > 0);
	assert_true(totals.body_runs > 0);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [NAME.txt...]\n", argv[0]);
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s", argv[1]);
	char **names = NULL;
	size_t n = 0;
	if (argc > 2) {
		names = calloc((size_t)argc, sizeof(*names));
		for (int k = 2; k < argc; k++)
			names[n++] = strdup(argv[k]);
	} else {
		DIR *d = opendir(dir);
		if (!d) {
			perror(dir);
			return 2;
		}
		struct dirent *e;
		size_t cap = 0;
		while ((e = readdir(d)) != NULL) {
			size_t len = strlen(e->d_name);
			if (len < 5 || strcmp(e->d_name + len - 4, ".txt") != 0)
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				names = realloc(names, cap * sizeof(*names));
			}
			names[n++] = strdup(e->d_name);
		}
		closedir(d);
		qsort(names, n, sizeof(*names), by_name);
	}
	if (n == 0) {
		fprintf(stderr, "%s: no transcripts\n", dir);
		return 2;
	}
	struct CMUnitTest *tests = calloc(n + 1, sizeof(*tests));
	for (size_t k = 0; k < n; k++) {
		tests[k].name = names[k];
		tests[k].test_func = test_one;
		tests[k].initial_state = names[k];
	}
	size_t ntests = n;
	if (argc == 2) {
		tests[n].name = "paths_covered";
		tests[n].test_func = test_paths_covered;
		ntests++;
	}
	int rc = _cmocka_run_group_tests("smtp_transcripts", tests, ntests, NULL, NULL);
	for (size_t k = 0; k < n; k++)
		free(names[k]);
	free(names);
	free(tests);
	return rc;
}
