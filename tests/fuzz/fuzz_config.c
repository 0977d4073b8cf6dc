/*
 * fuzz_config.c - the config file parser (config_load), the -o parser
 * (config_set), config_check and config_print.
 *
 * The input is written to a memfd and loaded through /proc/self/fd/N, as
 * main does with a path. Then each line of the input that is not blank or a
 * comment is also applied with config_set onto fresh defaults.
 *
 * Checked: every error message is one "mxring: " line of printable ASCII
 * (file text is quoted, never echoed raw); a configuration that loaded (or
 * was set) and passes config_check prints a file that loads again, passes
 * config_check and prints the same bytes (what config_print writes, the
 * parser reads back unchanged).
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static int memfd = -1;
static char memfd_path[64];

static void check_errors(char *text, size_t len)
{
	size_t pos = 0;
	while (pos < len) {
		char *nl = memchr(text + pos, '\n', len - pos);
		FUZZ_CHECK(nl, "error message without a newline: '%.*s'", (int)(len - pos),
			   text + pos);
		size_t n = (size_t)(nl - (text + pos));
		FUZZ_CHECK(n >= 8 && memcmp(text + pos, "mxring: ", 8) == 0,
			   "error line without 'mxring: ': '%.*s'", (int)n, text + pos);
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)text[pos + i];
			FUZZ_CHECK(c >= 0x20 && c < 0x7f, "byte 0x%02x in error line '%.*s'", c,
				   (int)n, text + pos);
		}
		pos += n + 1;
	}
}

static void write_memfd(const void *p, size_t n)
{
	FUZZ_CHECK(ftruncate(memfd, 0) == 0, "ftruncate");
	FUZZ_CHECK(pwrite(memfd, p, n, 0) == (ssize_t)n, "pwrite");
}

/* Loads path-less text through the memfd into fresh defaults. */
static int load(struct config *cfg, const void *p, size_t n, FILE *err)
{
	write_memfd(p, n);
	config_defaults(cfg);
	return config_load(cfg, memfd_path, err);
}

static char *print(const struct config *cfg, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);
	FUZZ_CHECK(f, "open_memstream");
	config_print(cfg, f);
	fclose(f);
	return text;
}

/* cfg loaded and passes config_check: its printout must load back to itself. */
static void round_trip(const struct config *cfg)
{
	size_t len, len2;
	char *text = print(cfg, &len);
	struct config again;
	int rc = load(&again, text, len, stderr);
	FUZZ_CHECK(rc == 0, "printed configuration does not load:\n%s", text);
	FUZZ_CHECK(config_check(&again, stderr) == 0, "printed configuration fails check:\n%s",
		   text);
	char *text2 = print(&again, &len2);
	FUZZ_CHECK(len == len2 && memcmp(text, text2, len) == 0,
		   "print, load, print differs:\n%s---\n%s", text, text2);
	config_free(&again);
	free(text);
	free(text2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (memfd < 0) {
		memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
		FUZZ_CHECK(memfd >= 0, "memfd_create");
		snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	}
	char *errtext = NULL;
	size_t errlen = 0;
	FILE *err = open_memstream(&errtext, &errlen);
	FUZZ_CHECK(err, "open_memstream");

	struct config cfg;
	int rc = load(&cfg, data, size, err);
	bool ok = rc == 0 && config_check(&cfg, err) == 0;
	fflush(err);
	check_errors(errtext, errlen);
	if (ok)
		round_trip(&cfg);
	config_free(&cfg);

	/* The same lines as -o overrides, on fresh defaults. */
	config_defaults(&cfg);
	bool all = true;
	for (size_t pos = 0; pos < size;) {
		const uint8_t *nl = memchr(data + pos, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos, b = 0;
		while (b < n && (data[pos + b] == ' ' || data[pos + b] == '\t'))
			b++;
		if (b == n || data[pos + b] == '#') { /* blank or comment: not an -o */
			pos += n + 1;
			continue;
		}
		char *kv = fuzz_alloc(n + 1);
		memcpy(kv, data + pos, n);
		kv[n] = 0;
		if (config_set(&cfg, kv, err) != 0)
			all = false;
		free(kv);
		pos += n + 1;
	}
	fflush(err);
	check_errors(errtext, errlen);
	if (all && config_check(&cfg, err) == 0)
		round_trip(&cfg);
	config_free(&cfg);
	fclose(err);
	free(errtext);
	return 0;
}
