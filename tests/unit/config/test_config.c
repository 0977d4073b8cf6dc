/*
 * test_config.c - mxring.conf parsing (every key and value type, comments,
 * continuations, repeats), the exact form of each error message (file:line,
 * key, -o), -o overrides, config_check relations, defaults, and a
 * config_print -> config_load round trip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dnsbl_sites.h"

/* A temporary mxring.conf holding text; its path goes in path. */
static void write_conf(char path[64], const char *text)
{
	FILE *f;
	int fd;

	strcpy(path, "/tmp/mxring-test-conf-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

/* Messages written to err, for exact comparison. */
struct errbuf {
	FILE *f;
	char *text;
	size_t len;
};

static void err_open(struct errbuf *e)
{
	e->text = NULL;
	e->len = 0;
	e->f = open_memstream(&e->text, &e->len);
	assert_non_null(e->f);
}

static const char *err_text(struct errbuf *e)
{
	fflush(e->f);
	return e->text;
}

static void err_close(struct errbuf *e)
{
	fclose(e->f);
	free(e->text);
}

/* Loads text over the defaults into cfg; returns config_load's result, messages in e. */
static int load_text(struct config *cfg, const char *text, struct errbuf *e, char path[64])
{
	int rc;

	write_conf(path, text);
	config_defaults(cfg);
	rc = config_load(cfg, path, e->f);
	unlink(path);
	return rc;
}

static void test_defaults(void **state)
{
	struct config cfg;
	struct errbuf e;

	(void)state;
	config_defaults(&cfg);
	assert_int_equal(cfg.nlisten, 1);
	assert_string_equal(cfg.listen[0].host, "127.0.0.1");
	assert_int_equal(cfg.listen[0].port, 2525);
	assert_true(cfg.myhostname[0] != '\0');
	assert_int_equal(cfg.naccept_domains, 1);
	assert_string_equal(cfg.accept_domains[0], "localhost");
	assert_string_equal(cfg.spool_dir, "spool");
	assert_int_equal(cfg.spool_format, SPOOL_SEGMENT);
	assert_int_equal(cfg.segment_size, 64 << 20);
	assert_int_equal(cfg.segment_max_age, 300);
	assert_int_equal(cfg.shards, 0);
	assert_int_equal(cfg.writers, 1);
	assert_int_equal(cfg.message_size_limit, 10240000);
	assert_int_equal(cfg.recipient_limit, 100);
	assert_int_equal(cfg.recipient_overshoot_limit, 1000);
	assert_int_equal(cfg.command_line_limit, 512);
	assert_int_equal(cfg.error_limit, 20);
	assert_int_equal(cfg.junk_command_limit, 100);
	assert_int_equal(cfg.max_connections, 20000);
	assert_int_equal(cfg.command_timeout, 300);
	assert_int_equal(cfg.data_timeout, 180);
	assert_int_equal(cfg.shutdown_timeout, 30);
	assert_int_equal(cfg.bare_newline, BARE_NEWLINE_NORMALIZE);
	assert_int_equal(cfg.recv_buffer_size, 16384);
	assert_int_equal(cfg.recv_buffers, 1024);
	assert_int_equal(cfg.ring_size, 1024);
	assert_int_equal(cfg.body_flush_bytes, 262144);
	assert_true(cfg.pin_shards);
	assert_int_equal(cfg.stats_interval, 60);
	assert_int_equal(cfg.metrics_listen.port, 0);
	err_open(&e);
	assert_int_equal(config_check(&cfg, e.f), 0);
	assert_string_equal(err_text(&e), "");
	err_close(&e);
	config_free(&cfg);
	config_free(&cfg); /* twice is harmless */
}

static const char every_key[] = "# every key, none at its default\n"
				"listen = 0.0.0.0:25, [::]:25\n"
				"myhostname = mx1.example.com\n"
				"accept_domains = Example.COM .Sub.Example.NET\n"
				"spool_dir = /var/spool/mxring\n"
				"spool_format = maildir\n"
				"segment_size = 128m\n"
				"segment_max_age = 1m\n"
				"shards = 4\n"
				"writers = 2\n"
				"message_size_limit = 50m\n"
				"recipient_limit = 500\n"
				"recipient_overshoot_limit = 50\n"
				"connection_limit_exceptions = 192.0.2.0/24, [2001:db8::]/48\n"
				"command_line_limit = 1024\n"
				"error_limit = 5\n"
				"junk_command_limit = 0\n"
				"max_connections = 1000\n"
				"command_timeout = 5m\n"
				"data_timeout = 2m\n"
				"shutdown_timeout = 0\n"
				"bare_newline = reject\n"
				"recv_buffer_size = 32k\n"
				"recv_buffers = 2048\n"
				"ring_size = 4096\n"
				"body_flush_bytes = 1m\n"
				"pin_shards = no\n"
				"stats_interval = 5\n"
				"metrics_listen = [::1]:9125\n";

static void check_every_key(const struct config *cfg)
{
	assert_int_equal(cfg->nlisten, 2);
	assert_string_equal(cfg->listen[0].host, "0.0.0.0");
	assert_int_equal(cfg->listen[0].port, 25);
	assert_string_equal(cfg->listen[1].host, "::");
	assert_int_equal(cfg->listen[1].port, 25);
	assert_string_equal(cfg->myhostname, "mx1.example.com");
	assert_int_equal(cfg->naccept_domains, 2);
	assert_string_equal(cfg->accept_domains[0], "example.com");
	assert_string_equal(cfg->accept_domains[1], ".sub.example.net");
	assert_string_equal(cfg->spool_dir, "/var/spool/mxring");
	assert_int_equal(cfg->spool_format, SPOOL_MAILDIR);
	assert_int_equal(cfg->segment_size, 128ull << 20);
	assert_int_equal(cfg->segment_max_age, 60);
	assert_int_equal(cfg->shards, 4);
	assert_int_equal(cfg->writers, 2);
	assert_int_equal(cfg->message_size_limit, 50ull << 20);
	assert_int_equal(cfg->recipient_limit, 500);
	assert_int_equal(cfg->recipient_overshoot_limit, 50);
	assert_int_equal(cfg->nconnection_limit_exceptions, 2);
	assert_false(cfg->connection_limit_exceptions[0].v6);
	assert_int_equal(cfg->connection_limit_exceptions[0].bits, 24);
	assert_memory_equal(cfg->connection_limit_exceptions[0].addr, "\xc0\x00\x02\x00", 4);
	assert_true(cfg->connection_limit_exceptions[1].v6);
	assert_int_equal(cfg->connection_limit_exceptions[1].bits, 48);
	assert_memory_equal(cfg->connection_limit_exceptions[1].addr,
			    "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	assert_int_equal(cfg->command_line_limit, 1024);
	assert_int_equal(cfg->error_limit, 5);
	assert_int_equal(cfg->junk_command_limit, 0);
	assert_int_equal(cfg->max_connections, 1000);
	assert_int_equal(cfg->command_timeout, 300);
	assert_int_equal(cfg->data_timeout, 120);
	assert_int_equal(cfg->shutdown_timeout, 0);
	assert_int_equal(cfg->bare_newline, BARE_NEWLINE_REJECT);
	assert_int_equal(cfg->recv_buffer_size, 32768);
	assert_int_equal(cfg->recv_buffers, 2048);
	assert_int_equal(cfg->ring_size, 4096);
	assert_int_equal(cfg->body_flush_bytes, 1 << 20);
	assert_false(cfg->pin_shards);
	assert_int_equal(cfg->stats_interval, 5);
	assert_string_equal(cfg->metrics_listen.host, "::1");
	assert_int_equal(cfg->metrics_listen.port, 9125);
}

static void test_every_key(void **state)
{
	struct config cfg;
	struct errbuf e;
	char path[64];

	(void)state;
	err_open(&e);
	assert_int_equal(load_text(&cfg, every_key, &e, path), 0);
	assert_string_equal(err_text(&e), "");
	check_every_key(&cfg);
	assert_int_equal(config_check(&cfg, e.f), 0);
	config_free(&cfg);
	err_close(&e);
}

/* One "key = value" and what the field must then hold (read by get). */
struct value_case {
	const char *line;
	int ok;
	uint64_t want;
};

static uint64_t get_field(const struct config *cfg, const char *line)
{
	if (strncmp(line, "segment_size", 12) == 0)
		return cfg->segment_size;
	if (strncmp(line, "message_size_limit", 18) == 0)
		return cfg->message_size_limit;
	if (strncmp(line, "command_line_limit", 18) == 0)
		return cfg->command_line_limit;
	if (strncmp(line, "recv_buffer_size", 16) == 0)
		return cfg->recv_buffer_size;
	if (strncmp(line, "recv_buffers", 12) == 0)
		return cfg->recv_buffers;
	if (strncmp(line, "ring_size", 9) == 0)
		return cfg->ring_size;
	if (strncmp(line, "body_flush_bytes", 16) == 0)
		return cfg->body_flush_bytes;
	if (strncmp(line, "command_timeout", 15) == 0)
		return cfg->command_timeout;
	if (strncmp(line, "data_timeout", 12) == 0)
		return cfg->data_timeout;
	if (strncmp(line, "shutdown_timeout", 16) == 0)
		return cfg->shutdown_timeout;
	if (strncmp(line, "shards", 6) == 0)
		return cfg->shards;
	if (strncmp(line, "writers", 7) == 0)
		return cfg->writers;
	if (strncmp(line, "recipient_limit", 15) == 0)
		return cfg->recipient_limit;
	if (strncmp(line, "recipient_overshoot_limit", 25) == 0)
		return cfg->recipient_overshoot_limit;
	if (strncmp(line, "error_limit", 11) == 0)
		return cfg->error_limit;
	if (strncmp(line, "junk_command_limit", 18) == 0)
		return cfg->junk_command_limit;
	if (strncmp(line, "max_connections", 15) == 0)
		return cfg->max_connections;
	if (strncmp(line, "spool_format", 12) == 0)
		return cfg->spool_format;
	if (strncmp(line, "bare_newline", 12) == 0)
		return cfg->bare_newline;
	if (strncmp(line, "proxy_protocol", 14) == 0)
		return cfg->proxy_protocol;
	if (strncmp(line, "proxy_timeout", 13) == 0)
		return cfg->proxy_timeout;
	if (strncmp(line, "pin_shards", 10) == 0)
		return cfg->pin_shards;
	if (strncmp(line, "stats_interval", 14) == 0)
		return cfg->stats_interval;
	fail_msg("no field for '%s'", line);
	return 0;
}

static const struct value_case value_cases[] = {
    /* sizes */
    {"message_size_limit = 123", 1, 123},
    {"message_size_limit = 1k", 1, 1024},
    {"message_size_limit = 1K", 1, 1024},
    {"message_size_limit = 10m", 1, 10 << 20},
    {"message_size_limit = 2g", 1, 2ull << 30},
    {"message_size_limit = 0", 0, 0},
    {"message_size_limit = abc", 0, 0},
    {"message_size_limit = 1x", 0, 0},
    {"message_size_limit = 1kb", 0, 0},
    {"message_size_limit = k", 0, 0},
    {"message_size_limit = -1", 0, 0},
    {"message_size_limit = 1 k", 0, 0},
    {"message_size_limit = 99999999999999999999999", 0, 0},
    {"message_size_limit = 2000g", 0, 0},
    {"segment_size = 1m", 1, 1 << 20},
    {"segment_size = 100", 0, 0},
    {"recv_buffer_size = 1k", 1, 1024},
    {"recv_buffer_size = 1m", 1, 1 << 20},
    {"recv_buffer_size = 1023", 0, 0},
    {"recv_buffer_size = 2m", 0, 0},
    {"body_flush_bytes = 64k", 1, 65536},
    {"command_line_limit = 512", 1, 512},
    {"command_line_limit = 4k", 1, 4096},
    {"command_line_limit = 511", 0, 0},
    {"command_line_limit = 4097", 0, 0},
    /* times */
    {"command_timeout = 45", 1, 45},
    {"command_timeout = 45s", 1, 45},
    {"command_timeout = 10m", 1, 600},
    {"command_timeout = 1h", 1, 3600},
    {"command_timeout = 0", 0, 0},
    {"command_timeout = 1d", 1, 86400},
    {"command_timeout = 2d", 0, 0},
    {"command_timeout = 1x", 0, 0},
    {"command_timeout = 25h", 0, 0},
    {"data_timeout = 3M", 1, 180},
    {"shutdown_timeout = 0s", 1, 0},
    {"stats_interval = 0", 1, 0},
    {"stats_interval = 5s", 1, 5},
    {"stats_interval = 10m", 1, 600},
    {"stats_interval = 24h", 1, 86400},
    {"stats_interval = 25h", 0, 0},
    {"stats_interval = -1", 0, 0},
    {"stats_interval = often", 0, 0},
    /* counts */
    {"recipient_limit = 1", 1, 1},
    {"recipient_limit = 10000", 1, 10000},
    {"recipient_limit = 0", 0, 0},
    {"recipient_limit = 10001", 0, 0},
    {"recipient_limit = 1k", 0, 0},
    {"recipient_overshoot_limit = 0", 1, 0},
    {"recipient_overshoot_limit = 100000", 1, 100000},
    {"recipient_overshoot_limit = 100001", 0, 0},
    {"recipient_overshoot_limit = many", 0, 0},
    {"writers = 64", 1, 64},
    {"writers = 0", 0, 0},
    {"writers = 65", 0, 0},
    {"error_limit = 1", 1, 1},
    {"error_limit = 0", 0, 0},
    {"junk_command_limit = 0", 1, 0},
    {"junk_command_limit = 10000", 1, 10000},
    {"junk_command_limit = 10001", 0, 0},
    {"junk_command_limit = -1", 0, 0},
    {"max_connections = 1", 1, 1},
    {"max_connections = 0", 0, 0},
    /* shards */
    {"shards = auto", 1, 0},
    {"shards = AUTO", 1, 0},
    {"shards = 1", 1, 1},
    {"shards = 256", 1, 256},
    {"shards = 0", 0, 0},
    {"shards = 257", 0, 0},
    {"shards = many", 0, 0},
    /* powers of two */
    {"recv_buffers = 1", 1, 1},
    {"recv_buffers = 32768", 1, 32768},
    {"recv_buffers = 65536", 0, 0},
    {"recv_buffers = 1000", 0, 0},
    {"recv_buffers = 0", 0, 0},
    {"ring_size = 65536", 1, 65536},
    {"ring_size = 3", 0, 0},
    {"ring_size = 131072", 0, 0},
    /* enums and booleans */
    {"spool_format = segment", 1, SPOOL_SEGMENT},
    {"spool_format = maildir", 1, SPOOL_MAILDIR},
    {"spool_format = mbox", 0, 0},
    {"bare_newline = normalize", 1, BARE_NEWLINE_NORMALIZE},
    {"bare_newline = reject", 1, BARE_NEWLINE_REJECT},
    {"bare_newline = strip", 0, 0},
    {"proxy_protocol = none", 1, PROXY_PROTOCOL_NONE},
    {"proxy_protocol = haproxy", 1, PROXY_PROTOCOL_HAPROXY},
    {"proxy_protocol = yes", 0, 0},
    {"proxy_timeout = 10", 1, 10},
    {"proxy_timeout = 0", 0, 0},
    {"pin_shards = yes", 1, 1},
    {"pin_shards = no", 1, 0},
    {"pin_shards = Yes", 1, 1},
    {"pin_shards = true", 0, 0},
    /* spacing around '=' */
    {"writers=3", 1, 3},
    {"writers   =\t3   ", 1, 3},
    {"writers =", 0, 0},
};

/* Each value through a file and through -o. */
static void test_values(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(value_cases) / sizeof(value_cases[0]); i++) {
		const struct value_case *c = &value_cases[i];
		struct config cfg;
		struct errbuf e;
		char path[64], text[256];
		int rc;

		snprintf(text, sizeof(text), "%s\n", c->line);
		err_open(&e);
		rc = load_text(&cfg, text, &e, path);
		if ((rc == 0) != c->ok)
			fail_msg("case %zu '%s': load %d: %s", i, c->line, rc, err_text(&e));
		if (c->ok) {
			assert_string_equal(err_text(&e), "");
			if (get_field(&cfg, c->line) != c->want)
				fail_msg("case %zu '%s': got %llu", i, c->line,
					 (unsigned long long)get_field(&cfg, c->line));
		} else {
			assert_non_null(strstr(err_text(&e), path));
		}
		config_free(&cfg);
		err_close(&e);

		err_open(&e);
		config_defaults(&cfg);
		rc = config_set(&cfg, c->line, e.f);
		if ((rc == 0) != c->ok)
			fail_msg("case %zu '%s': set %d", i, c->line, rc);
		if (c->ok)
			assert_int_equal(get_field(&cfg, c->line), c->want);
		else
			assert_true(strncmp(err_text(&e), "mxring: -o ", 11) == 0);
		config_free(&cfg);
		err_close(&e);
	}
}

/* The exact messages: file:line, key, what. */
struct msg_case {
	const char *text;
	const char *want; /* "%s" stands for the path */
};

static const struct msg_case msg_cases[] = {
    {"# size\n\nmessage_size_limit = abc\n",
     "mxring: %s:3: key 'message_size_limit': bad size 'abc'\n"},
    {"foo = bar\n", "mxring: %s:1: unknown key 'foo'\n"},
    {"writers = 1\nMyHostname = x\n", "mxring: %s:2: unknown key 'MyHostname'\n"},
    {"writers 2\n", "mxring: %s:1: expected 'key = value', got 'writers 2'\n"},
    {"= 2\n", "mxring: %s:1: expected 'key = value', got '= 2'\n"},
    {"  writers = 2\n", "mxring: %s:1: continuation line without a key before it\n"},
    {"writers = two\n", "mxring: %s:1: key 'writers': bad number 'two'\n"},
    {"writers = 100\n", "mxring: %s:1: key 'writers': '100' is out of range 1..64\n"},
    {"connection_limit_exceptions = 10.0.0.1/8\n",
     "mxring: %s:1: key 'connection_limit_exceptions': '10.0.0.1/8' has address bits past its "
     "prefix length (the network is 10.0.0.0/8)\n"},
    {"connection_limit_exceptions = 127.0.0.2 ::1/129\n",
     "mxring: %s:1: key 'connection_limit_exceptions': prefix length in '::1/129' is out of "
     "range 0..128\n"},
    {"connection_limit_exceptions = 1.2.3.4/x\n",
     "mxring: %s:1: key 'connection_limit_exceptions': bad prefix length in '1.2.3.4/x'\n"},
    {"connection_limit_exceptions = [1.2.3.4]\n",
     "mxring: %s:1: key 'connection_limit_exceptions': bad address '[1.2.3.4]' (expected IPv4 "
     "or IPv6, optionally /prefix length)\n"},
    {"connection_limit_exceptions = example.com\n",
     "mxring: %s:1: key 'connection_limit_exceptions': bad address 'example.com' (expected "
     "IPv4 or IPv6, optionally /prefix length)\n"},
    {"recipient_overshoot_limit = 100001\n",
     "mxring: %s:1: key 'recipient_overshoot_limit': '100001' is out of range 0..100000\n"},
    {"command_timeout = 5x\n", "mxring: %s:1: key 'command_timeout': bad time '5x'\n"},
    {"stats_interval = 2x\n", "mxring: %s:1: key 'stats_interval': bad time '2x'\n"},
    {"stats_interval = 100000\n",
     "mxring: %s:1: key 'stats_interval': '100000' is out of range 0..86400\n"},
    {"shards = x\n", "mxring: %s:1: key 'shards': bad number 'x' (expected auto or a number)\n"},
    {"recv_buffers = 1000\n", "mxring: %s:1: key 'recv_buffers': '1000' is not a power of two\n"},
    {"spool_format = mbox\n",
     "mxring: %s:1: key 'spool_format': bad value 'mbox' (expected segment|maildir)\n"},
    {"pin_shards = on\n", "mxring: %s:1: key 'pin_shards': bad value 'on' (expected no|yes)\n"},
    {"myhostname = bad_name\n", "mxring: %s:1: key 'myhostname': bad domain 'bad_name'\n"},
    {"myhostname =\n", "mxring: %s:1: key 'myhostname': empty value\n"},
    {"accept_domains = a.example,\n  b..example\n",
     "mxring: %s:1: key 'accept_domains': bad domain 'b..example'\n"},
    {"listen = 1.2.3.4\n", "mxring: %s:1: key 'listen': bad address '1.2.3.4' (expected "
			   "IPv4:port or [IPv6]:port)\n"},
    {"listen = ::1:25\n", "mxring: %s:1: key 'listen': IPv6 address needs brackets: '::1:25'\n"},
    {"listen = 1.2.3.4:0\n", "mxring: %s:1: key 'listen': bad port in '1.2.3.4:0' (1..65535)\n"},
    {"listen = 1.2.3.4:25 1.2.3.4:25\n",
     "mxring: %s:1: key 'listen': address '1.2.3.4:25' given twice\n"},
    {"spool_dir = a\tb\n", "mxring: %s:1: key 'spool_dir': control character in 'a\\x09b'\n"},
    /* every error is reported, each with its own line */
    {"writers = 0\nerror_limit = x\nbar = 1\n",
     "mxring: %s:1: key 'writers': '0' is out of range 1..64\n"
     "mxring: %s:2: key 'error_limit': bad number 'x'\n"
     "mxring: %s:3: unknown key 'bar'\n"},
    /* a logical line is reported at the line where it starts */
    {"accept_domains = a.example\n  b.example\n# note\n  c_d.example\nwriters = 0\n",
     "mxring: %s:1: key 'accept_domains': bad domain 'c_d.example'\n"
     "mxring: %s:5: key 'writers': '0' is out of range 1..64\n"},
    /* client-looking text is escaped and cut */
    {"message_size_limit = \x01\x02\n",
     "mxring: %s:1: key 'message_size_limit': bad size '\\x01\\x02'\n"},
};

/* tmpl with every "%s" replaced by path. */
static void subst(char *out, size_t cap, const char *tmpl, const char *path)
{
	size_t o = 0, plen = strlen(path);

	while (*tmpl && o + plen + 1 < cap) {
		if (tmpl[0] == '%' && tmpl[1] == 's') {
			memcpy(out + o, path, plen);
			o += plen;
			tmpl += 2;
		} else {
			out[o++] = *tmpl++;
		}
	}
	out[o] = '\0';
}

static void test_messages(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(msg_cases) / sizeof(msg_cases[0]); i++) {
		struct config cfg;
		struct errbuf e;
		char path[64], want[1024];

		err_open(&e);
		assert_int_equal(load_text(&cfg, msg_cases[i].text, &e, path), -1);
		subst(want, sizeof(want), msg_cases[i].want, path);
		if (strcmp(err_text(&e), want) != 0)
			fail_msg("case %zu: got\n%s\nwant\n%s", i, err_text(&e), want);
		config_free(&cfg);
		err_close(&e);
	}
}

static void test_missing_file(void **state)
{
	struct config cfg;
	struct errbuf e;

	(void)state;
	config_defaults(&cfg);
	err_open(&e);
	assert_int_equal(config_load(&cfg, "/nonexistent/mxring.conf", e.f), -1);
	assert_string_equal(err_text(&e),
			    "mxring: /nonexistent/mxring.conf: No such file or directory\n");
	err_close(&e);
	err_open(&e);
	assert_int_equal(config_load(&cfg, "/tmp", e.f), -1);
	assert_string_equal(err_text(&e), "mxring: /tmp: Is a directory\n");
	err_close(&e);
	config_free(&cfg);
}

static void test_set_messages(void **state)
{
	struct config cfg;
	struct errbuf e;

	(void)state;
	config_defaults(&cfg);
	err_open(&e);
	assert_int_equal(config_set(&cfg, "message_size_limit=abc", e.f), -1);
	assert_int_equal(config_set(&cfg, "foo=1", e.f), -1);
	assert_int_equal(config_set(&cfg, "writers", e.f), -1);
	assert_int_equal(config_set(&cfg, "writers=1\nfoo=2", e.f), -1);
	assert_string_equal(err_text(&e),
			    "mxring: -o message_size_limit=abc: key 'message_size_limit': "
			    "bad size 'abc'\n"
			    "mxring: -o foo=1: unknown key 'foo'\n"
			    "mxring: -o writers: expected 'key = value', got 'writers'\n"
			    "mxring: -o writers=1\\x0afoo=2: newline in 'writers=1\\x0afoo=2'\n");
	assert_int_equal(cfg.message_size_limit, 10240000);
	err_close(&e);
	config_free(&cfg);
}

static void test_comments_continuations(void **state)
{
	static const char text[] = "# comment\n"
				   "\n"
				   "   \n"
				   "accept_domains = a.example,\n"
				   "\tb.example\n"
				   "   # an indented comment does not end the value\n"
				   "\n"
				   "    c.example , .d.example\n"
				   "spool_dir = /var/spool/mx#1\r\n"
				   "writers = 2\r\n"
				   "writers = 3\n" /* the last wins */
				   "myhostname = mx.example\n"
				   "myhostname = MX2.Example"; /* no final newline */
	struct config cfg;
	struct errbuf e;
	char path[64];

	(void)state;
	err_open(&e);
	assert_int_equal(load_text(&cfg, text, &e, path), 0);
	assert_string_equal(err_text(&e), "");
	assert_int_equal(cfg.naccept_domains, 4);
	assert_string_equal(cfg.accept_domains[0], "a.example");
	assert_string_equal(cfg.accept_domains[1], "b.example");
	assert_string_equal(cfg.accept_domains[2], "c.example");
	assert_string_equal(cfg.accept_domains[3], ".d.example");
	assert_string_equal(cfg.spool_dir, "/var/spool/mx#1");
	assert_int_equal(cfg.writers, 3);
	assert_string_equal(cfg.myhostname, "MX2.Example");
	config_free(&cfg);
	err_close(&e);
}

static void test_domains(void **state)
{
	static const char *const good[] = {
	    "example.com", ".example.com", "a", "a-b.c-d", "1.2.3.4", "xn--bcher-kva.example",
	};
	static const char *const bad[] = {
	    "a..b", "-a.com", "a-.com", "a.com.", "..a", "a_b.com", ".", "a.-b", "a@b",
	};
	struct config cfg;
	char kv[600];
	size_t i;

	(void)state;
	config_defaults(&cfg);
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(kv, sizeof(kv), "accept_domains=%s", good[i]);
		if (config_set(&cfg, kv, NULL) != 0)
			fail_msg("'%s' refused", good[i]);
		assert_int_equal(cfg.naccept_domains, 1);
		assert_string_equal(cfg.accept_domains[0], good[i]);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(kv, sizeof(kv), "accept_domains=%s", bad[i]);
		if (config_set(&cfg, kv, NULL) == 0)
			fail_msg("'%s' accepted", bad[i]);
		/* a failed setting leaves the list as it was */
		assert_string_equal(cfg.accept_domains[0], good[5]);
	}
	/* labels of 63, total of 255 */
	strcpy(kv, "accept_domains=");
	for (i = 0; i < 4; i++) {
		memset(kv + strlen(kv), 'a', 63);
		kv[15 + (i + 1) * 64 - 1] = '\0';
		if (i < 3)
			strcat(kv, ".");
	}
	assert_int_equal(strlen(kv + 15), 255);
	assert_int_equal(config_set(&cfg, kv, NULL), 0);
	strcat(kv, "a");
	assert_int_equal(config_set(&cfg, kv, NULL), -1);
	assert_int_equal(config_set(&cfg, "myhostname=.example.com", NULL), -1);
	/* empty: parses, but config_check refuses a receiver that accepts nothing */
	assert_int_equal(config_set(&cfg, "accept_domains =", NULL), 0);
	assert_int_equal(cfg.naccept_domains, 0);
	assert_int_equal(config_check(&cfg, NULL), -1);
	config_free(&cfg);
}

static void test_domains_max(void **state)
{
	size_t cap = (ACCEPT_DOMAINS_MAX + 1) * 8 + 64, i;
	char *kv = malloc(cap), *p;
	struct config cfg;

	(void)state;
	assert_non_null(kv);
	p = kv + sprintf(kv, "accept_domains=");
	for (i = 0; i < ACCEPT_DOMAINS_MAX; i++)
		p += sprintf(p, "d%u.x ", (unsigned)i);
	config_defaults(&cfg);
	assert_int_equal(config_set(&cfg, kv, NULL), 0);
	assert_int_equal(cfg.naccept_domains, ACCEPT_DOMAINS_MAX);
	assert_string_equal(cfg.accept_domains[ACCEPT_DOMAINS_MAX - 1], "d4095.x");
	sprintf(p, "one.more");
	assert_int_equal(config_set(&cfg, kv, NULL), -1);
	assert_int_equal(cfg.naccept_domains, ACCEPT_DOMAINS_MAX);
	config_free(&cfg);
	free(kv);
}

static void test_listen(void **state)
{
	static const char text[] = "listen = 192.0.2.1:25, [2001:db8::1]:587\n"
				   "listen = 127.0.0.1:2526\n"
				   "listen = [::1]:25 10.0.0.1:65535\n";
	struct config cfg;
	struct errbuf e;
	char path[64], kv[64];
	unsigned i;

	(void)state;
	err_open(&e);
	/* the first listen of the file replaces the default, later ones append */
	assert_int_equal(load_text(&cfg, text, &e, path), 0);
	assert_int_equal(cfg.nlisten, 5);
	assert_string_equal(cfg.listen[0].host, "192.0.2.1");
	assert_int_equal(cfg.listen[0].port, 25);
	assert_string_equal(cfg.listen[1].host, "2001:db8::1");
	assert_int_equal(cfg.listen[1].port, 587);
	assert_string_equal(cfg.listen[2].host, "127.0.0.1");
	assert_string_equal(cfg.listen[3].host, "::1");
	assert_string_equal(cfg.listen[4].host, "10.0.0.1");
	assert_int_equal(cfg.listen[4].port, 65535);
	/* so does the first -o listen; later -o listen append */
	assert_int_equal(config_set(&cfg, "listen=127.0.0.1:10025", e.f), 0);
	assert_int_equal(cfg.nlisten, 1);
	assert_int_equal(cfg.listen[0].port, 10025);
	assert_int_equal(config_set(&cfg, "listen=[::1]:10025", e.f), 0);
	assert_int_equal(cfg.nlisten, 2);
	assert_string_equal(err_text(&e), "");
	config_free(&cfg);
	err_close(&e);

	/* bad ones */
	static const char *const bad[] = {
	    "1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:x",    "localhost:25",
	    "::1:25",  "[::1]",	   "[1.2.3.4]:25",  "1.2.3.256:25", "[::1:25",
	    ":25",     "[]:25",	   "1.2.3.4:-1",    "1.2.3.4:25x",  "[fe80::1%lo]:25",
	};
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(kv, sizeof(kv), "listen=%s", bad[i]);
		config_defaults(&cfg);
		if (config_set(&cfg, kv, NULL) == 0)
			fail_msg("'%s' accepted", bad[i]);
		assert_int_equal(cfg.nlisten, 1);
		assert_int_equal(cfg.listen[0].port, 2525);
		config_free(&cfg);
	}
	/* LISTEN_MAX addresses fit, one more does not */
	config_defaults(&cfg);
	for (i = 0; i < LISTEN_MAX; i++) {
		snprintf(kv, sizeof(kv), "listen=127.0.0.1:%u", 1000 + i);
		assert_int_equal(config_set(&cfg, kv, NULL), 0);
	}
	assert_int_equal(cfg.nlisten, LISTEN_MAX);
	assert_int_equal(config_set(&cfg, "listen=127.0.0.1:999", NULL), -1);
	assert_int_equal(cfg.nlisten, LISTEN_MAX);
	config_free(&cfg);
}

struct check_case {
	const char *kv[3];
	const char *want;
};

static const struct check_case check_cases[] = {
    {{"command_line_limit=4096", NULL}, ""},
    {{"command_line_limit=4096", "recv_buffer_size=4k", NULL},
     "mxring: key 'recv_buffer_size': 4096 is less than command_line_limit + 2 (4098)\n"},
    {{"command_line_limit=4096", "recv_buffer_size=4098", NULL}, ""},
    {{"recv_buffer_size=512k", NULL},
     "mxring: key 'body_flush_bytes': 262144 is less than recv_buffer_size (524288)\n"},
    {{"shards=8", "max_connections=4", NULL},
     "mxring: key 'max_connections': 4 is less than shards (8)\n"},
    {{"recv_buffers=32768", "recv_buffer_size=64k", "body_flush_bytes=64k"},
     "mxring: key 'recv_buffers': recv_buffers * recv_buffer_size is 2147483648 bytes per "
     "shard (at most 1073741824)\n"},
    {{"recv_buffers=32768", "recv_buffer_size=32k", "body_flush_bytes=32k"}, ""},
};

static void test_check(void **state)
{
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		const struct check_case *c = &check_cases[i];
		struct config cfg;
		struct errbuf e;
		int rc;

		config_defaults(&cfg);
		for (k = 0; k < 3 && c->kv[k]; k++)
			assert_int_equal(config_set(&cfg, c->kv[k], NULL), 0);
		err_open(&e);
		rc = config_check(&cfg, e.f);
		if (c->want[0] == '\0') {
			assert_int_equal(rc, 0);
			assert_string_equal(err_text(&e), "");
		} else {
			assert_int_equal(rc, -1);
			assert_string_equal(err_text(&e), c->want);
		}
		err_close(&e);
		config_free(&cfg);
	}
}

/* Fields set by hand are checked against the same ranges as parsed ones. */
static void test_check_by_hand(void **state)
{
	struct config cfg;
	struct errbuf e;

	(void)state;
	config_defaults(&cfg);
	cfg.message_size_limit = 0;
	cfg.recv_buffers = 1000;
	cfg.writers = WRITERS_MAX + 1;
	cfg.nlisten = 0;
	cfg.myhostname[0] = '\0';
	err_open(&e);
	assert_int_equal(config_check(&cfg, e.f), -1);
	assert_string_equal(err_text(&e),
			    "mxring: key 'listen': 0 addresses (1..16)\n"
			    "mxring: key 'myhostname': not a domain name\n"
			    "mxring: key 'writers': 65 is out of range 1..64\n"
			    "mxring: key 'message_size_limit': 0 is out of range "
			    "1..1099511627776\n"
			    "mxring: key 'recv_buffers': 1000 is not a power of two\n");
	err_close(&e);
	config_free(&cfg);
}

/* connection_limit_exceptions: the list's bound, emptying it, and matching. */
static void test_cidrs(void **state)
{
	static const uint8_t v4[][4] = {{10, 1, 2, 3},	  {11, 0, 0, 1},  {192, 168, 1, 255},
					{192, 168, 2, 0}, {127, 0, 0, 2}, {127, 0, 0, 3}};
	static const bool v4_in[] = {true, false, true, false, true, false};
	struct config cfg;
	struct errbuf e;
	char kv[4096];
	size_t i, n;
	uint8_t a6[16];

	(void)state;
	config_defaults(&cfg);
	assert_int_equal(cfg.nconnection_limit_exceptions, 0);
	err_open(&e);
	assert_int_equal(config_set(&cfg,
				    "connection_limit_exceptions=10.0.0.0/8, 192.168.0.0/23 "
				    "127.0.0.2,::1 2001:db8:1::/48",
				    e.f),
			 0);
	assert_string_equal(err_text(&e), "");
	assert_int_equal(cfg.nconnection_limit_exceptions, 5);
	for (i = 0; i < sizeof(v4) / sizeof(v4[0]); i++)
		if (cidr_list_match(cfg.connection_limit_exceptions,
				    cfg.nconnection_limit_exceptions, false, v4[i]) != v4_in[i])
			fail_msg("IPv4 case %zu", i);
	/* ::1 and 2001:db8:1:ffff::1 are in, ::2 and 2001:db8:2::1 are not */
	memset(a6, 0, sizeof(a6));
	a6[15] = 1;
	assert_true(cidr_list_match(cfg.connection_limit_exceptions, 5, true, a6));
	a6[15] = 2;
	assert_false(cidr_list_match(cfg.connection_limit_exceptions, 5, true, a6));
	memcpy(a6, "\x20\x01\x0d\xb8\x00\x01\xff\xff\0\0\0\0\0\0\0\x01", 16);
	assert_true(cidr_list_match(cfg.connection_limit_exceptions, 5, true, a6));
	a6[5] = 2;
	assert_false(cidr_list_match(cfg.connection_limit_exceptions, 5, true, a6));
	/* IPv4-mapped IPv6 matches the IPv4 prefixes; IPv4 never an IPv6 one */
	memcpy(a6, "\0\0\0\0\0\0\0\0\0\0\xff\xff\x0a\x09\x09\x09", 16);
	assert_true(cidr_list_match(cfg.connection_limit_exceptions, 5, true, a6));
	a6[12] = 11;
	assert_false(cidr_list_match(cfg.connection_limit_exceptions, 5, true, a6));
	assert_false(cidr_list_match(cfg.connection_limit_exceptions, 5, false,
				     (const uint8_t *)"\0\0\0\x01"));
	/* /0 matches every address of its family (IPv4-mapped ones too) */
	assert_int_equal(config_set(&cfg, "connection_limit_exceptions=0.0.0.0/0", e.f), 0);
	assert_true(cidr_list_match(cfg.connection_limit_exceptions, 1, false, v4[1]));
	assert_true(cidr_list_match(cfg.connection_limit_exceptions, 1, true, a6)); /* 11.9.9.9 */
	a6[10] = 0;
	assert_false(cidr_list_match(cfg.connection_limit_exceptions, 1, true, a6));
	/* an empty value empties the list */
	assert_int_equal(config_set(&cfg, "connection_limit_exceptions=", e.f), 0);
	assert_int_equal(cfg.nconnection_limit_exceptions, 0);
	assert_false(cidr_list_match(cfg.connection_limit_exceptions, 0, false, v4[0]));
	/* CIDR_LIST_MAX prefixes fit, one more does not (and the list is kept) */
	for (n = 0, i = 0; i < CIDR_LIST_MAX; i++)
		n += (size_t)snprintf(kv + n, sizeof(kv) - n, "%s10.0.%zu.0/24",
				      i ? "," : "connection_limit_exceptions=", i);
	assert_int_equal(config_set(&cfg, kv, e.f), 0);
	assert_int_equal(cfg.nconnection_limit_exceptions, CIDR_LIST_MAX);
	assert_string_equal(err_text(&e), "");
	snprintf(kv + n, sizeof(kv) - n, ",10.1.0.0/16");
	assert_int_equal(config_set(&cfg, kv, e.f), -1);
	assert_non_null(strstr(err_text(&e), "key 'connection_limit_exceptions': more than 64 "
					     "prefixes\n"));
	assert_int_equal(cfg.nconnection_limit_exceptions, CIDR_LIST_MAX);
	assert_int_equal(config_check(&cfg, NULL), 0);
	err_close(&e);
	config_free(&cfg);
}

static char *print_to_string(const struct config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	config_print(cfg, f);
	fclose(f);
	return text;
}

static void test_round_trip(void **state)
{
	struct config a, b;
	struct errbuf e;
	char path[64], *t1, *t2;

	(void)state;
	err_open(&e);
	assert_int_equal(load_text(&a, every_key, &e, path), 0);
	t1 = print_to_string(&a);
	/* every key is printed */
	assert_non_null(strstr(t1, "listen = 0.0.0.0:25, [::]:25\n"));
	assert_non_null(strstr(t1, "accept_domains = example.com, .sub.example.net\n"));
	assert_non_null(strstr(t1, "shards = 4\n"));
	assert_non_null(strstr(t1, "command_timeout = 300s\n"));
	assert_non_null(strstr(t1, "pin_shards = no\n"));
	assert_non_null(strstr(t1, "spool_format = maildir\n"));
	assert_non_null(strstr(t1, "connection_limit_exceptions = 192.0.2.0/24, 2001:db8::/48\n"));
	assert_int_equal(load_text(&b, t1, &e, path), 0);
	assert_string_equal(err_text(&e), "");
	check_every_key(&b);
	t2 = print_to_string(&b);
	assert_string_equal(t1, t2);
	free(t1);
	free(t2);
	config_free(&a);
	config_free(&b);

	/* the defaults too, and the "auto" and empty forms */
	config_defaults(&a);
	t1 = print_to_string(&a);
	assert_non_null(strstr(t1, "shards = auto\n"));
	assert_non_null(strstr(t1, "listen = 127.0.0.1:2525\n"));
	assert_int_equal(load_text(&b, t1, &e, path), 0);
	t2 = print_to_string(&b);
	assert_string_equal(t1, t2);
	free(t1);
	free(t2);
	config_free(&b);
	assert_int_equal(config_set(&a, "accept_domains=", e.f), 0);
	t1 = print_to_string(&a);
	assert_non_null(strstr(t1, "\naccept_domains =\n"));
	assert_int_equal(load_text(&b, t1, &e, path), 0);
	assert_int_equal(b.naccept_domains, 0);
	free(t1);
	config_free(&a);
	config_free(&b);
	assert_string_equal(err_text(&e), "");
	err_close(&e);
}

/* The screening keys: values, defaults, refusals, and a printed round trip. */
static void test_screening_keys(void **state)
{
	static const char text[] =
	    "recipient_table = /etc/mxring/rcpt, /etc/mxring/more\n"
	    "recipient_delimiter = +-\n"
	    "dnsbl_sites = zen.example*3, bl.example=127.0.0.[2..11]*2\n"
	    "  wl.example=127.0.[0..255].[1..3]*-2\n"
	    "dnsbl_threshold = 3\n"
	    "dnsbl_action = ignore\n"
	    "dnsbl_timeout = 800ms\n"
	    "dnsbl_cache_size = 5000\n"
	    "dnsbl_min_ttl = 30\n"
	    "dnsbl_max_ttl = 2h\n"
	    "dnsbl_exceptions = 192.0.2.0/24\n"
	    "dns_servers = 127.0.0.1:5353, [::1], 192.0.2.53, 2001:db8::53, [2001:db8::54]:54\n"
	    "client_connection_rate_limit = 60\n"
	    "client_message_rate_limit = 100\n";
	struct config a, b;
	struct errbuf e;
	char path[64];

	(void)state;
	config_defaults(&a);
	assert_int_equal(a.dnsbl_threshold, 1);
	assert_int_equal(a.dnsbl_action, DNSBL_REJECT);
	assert_int_equal(a.dnsbl_timeout_ms, 2000);
	assert_int_equal(a.dnsbl_cache_size, 100000);
	assert_int_equal(a.dnsbl_min_ttl, 60);
	assert_int_equal(a.dnsbl_max_ttl, 3600);
	assert_int_equal(a.ndnsbl_sites, 0);
	assert_int_equal(a.ndns_servers, 0);
	assert_int_equal(a.client_connection_rate_limit, 0);
	config_free(&a);

	err_open(&e);
	assert_int_equal(load_text(&a, text, &e, path), 0);
	assert_string_equal(err_text(&e), "");
	assert_string_equal(a.recipient_table, "/etc/mxring/rcpt, /etc/mxring/more");
	assert_string_equal(a.recipient_delimiter, "+-");
	assert_int_equal(a.ndnsbl_sites, 3);
	assert_string_equal(a.dnsbl_sites[0].zone, "zen.example");
	assert_int_equal(a.dnsbl_sites[0].weight, 3);
	assert_int_equal(a.dnsbl_sites[1].npatterns, 1);
	assert_int_equal(a.dnsbl_sites[2].weight, -2);
	assert_int_equal(a.dnsbl_threshold, 3);
	assert_int_equal(a.dnsbl_action, DNSBL_IGNORE);
	assert_int_equal(a.dnsbl_timeout_ms, 800);
	assert_int_equal(a.dnsbl_cache_size, 5000);
	assert_int_equal(a.dnsbl_min_ttl, 30);
	assert_int_equal(a.dnsbl_max_ttl, 7200);
	assert_int_equal(a.ndnsbl_exceptions, 1);
	assert_int_equal(a.dnsbl_exceptions[0].bits, 24);
	assert_int_equal(a.nconnection_limit_exceptions, 0);
	assert_int_equal(a.ndns_servers, 5);
	assert_string_equal(a.dns_servers[0].host, "127.0.0.1");
	assert_int_equal(a.dns_servers[0].port, 5353);
	assert_string_equal(a.dns_servers[1].host, "::1");
	assert_int_equal(a.dns_servers[1].port, 53);
	assert_int_equal(a.dns_servers[2].port, 53);
	assert_string_equal(a.dns_servers[3].host, "2001:db8::53");
	assert_int_equal(a.dns_servers[3].port, 53);
	assert_int_equal(a.dns_servers[4].port, 54);
	assert_int_equal(a.client_connection_rate_limit, 60);
	assert_int_equal(a.client_message_rate_limit, 100);
	assert_int_equal(config_check(&a, e.f), 0);
	char *t1 = print_to_string(&a);
	assert_non_null(strstr(t1, "dnsbl_timeout = 800ms\n"));
	assert_non_null(strstr(t1, "dnsbl_sites = zen.example*3, bl.example=127.0.0.[2..11]*2, "
				   "wl.example=127.0.[0..255].[1..3]*-2\n"));
	assert_non_null(strstr(t1, "dns_servers = 127.0.0.1:5353, [::1]:53, 192.0.2.53:53, "
				   "[2001:db8::53]:53, [2001:db8::54]:54\n"));
	assert_int_equal(load_text(&b, t1, &e, path), 0);
	char *t2 = print_to_string(&b);
	assert_string_equal(t1, t2);
	free(t1);
	free(t2);
	config_free(&b);
	/* An empty value empties the lists. */
	assert_int_equal(config_set(&a, "dnsbl_sites=", e.f), 0);
	assert_int_equal(a.ndnsbl_sites, 0);
	assert_null(a.dnsbl_sites);
	assert_int_equal(config_set(&a, "dns_servers=", e.f), 0);
	assert_int_equal(a.ndns_servers, 0);
	assert_string_equal(err_text(&e), "");
	config_free(&a);
	err_close(&e);

	/* Refusals name the key and what is wrong. */
	static const char *const bad[] = {
	    "dnsbl_sites=bl..example",
	    "dnsbl_sites=bl.example=127.0.0.256",
	    "dnsbl_sites=bl.example*x",
	    "dnsbl_timeout=50ms",
	    "dnsbl_timeout=2x",
	    "dns_servers=example.net",
	    "dns_servers=127.0.0.1:0",
	    "dns_servers=[::1",
	    "client_message_rate_limit=70000",
	    "dnsbl_action=drop",
	    "dnsbl_threshold=0",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		config_defaults(&a);
		err_open(&e);
		assert_int_equal(config_set(&a, bad[i], e.f), -1);
		const char *key_end = strchr(bad[i], '=');
		char want[64];
		snprintf(want, sizeof(want), "key '%.*s'", (int)(key_end - bad[i]), bad[i]);
		assert_non_null(strstr(err_text(&e), want));
		config_free(&a);
		err_close(&e);
	}
	config_defaults(&a);
	err_open(&e);
	assert_int_equal(config_set(&a, "dnsbl_min_ttl=2h", e.f), 0);
	assert_int_equal(config_set(&a, "recipient_delimiter=+@", e.f), 0);
	assert_int_equal(config_check(&a, e.f), -1);
	assert_non_null(
	    strstr(err_text(&e), "key 'dnsbl_min_ttl': 7200s is more than dnsbl_max_ttl"));
	assert_non_null(
	    strstr(err_text(&e), "key 'recipient_delimiter': '@' cannot be a delimiter"));
	config_free(&a);
	err_close(&e);
}

/* The relay's keys: relay_host's forms, the schedule, and what config_check refuses. */
static void test_relay_keys(void **state)
{
	(void)state;
	struct config a;
	struct errbuf e;
	config_defaults(&a);
	assert_int_equal(a.nrelay_host, 0);
	assert_int_equal(a.relay_workers, 1);
	assert_int_equal(a.relay_connections, 20);
	assert_int_equal(a.relay_msgs_per_session, 100);
	assert_int_equal(a.relay_retry_min, 60);
	assert_int_equal(a.relay_retry_max, 4000);
	assert_int_equal(a.maximal_queue_lifetime, 5 * 86400);
	assert_int_equal(a.spool_max_bytes, 10ull << 30);
	assert_int_equal(a.relay_tls, RELAY_TLS_MAY);
	err_open(&e);
	assert_int_equal(config_set(&a,
				    "relay_host=smtp:[hub.example.net]:25, smtp:192.0.2.10:2525 "
				    "lmtp:[127.0.0.1]:24,lmtp:unix:/run/dovecot/lmtp [2001:db8::1] "
				    "Hub2.example.org lmtp:[::1]",
				    e.f),
			 0);
	assert_string_equal(err_text(&e), "");
	assert_int_equal(a.nrelay_host, 7);
	static const struct {
		uint8_t proto;
		bool unix_path;
		const char *host;
		uint16_t port;
	} want[] = {
	    {RELAY_SMTP, false, "hub.example.net", 25},
	    {RELAY_SMTP, false, "192.0.2.10", 2525},
	    {RELAY_LMTP, false, "127.0.0.1", 24},
	    {RELAY_LMTP, true, "/run/dovecot/lmtp", 0},
	    {RELAY_SMTP, false, "2001:db8::1", 25},
	    {RELAY_SMTP, false, "Hub2.example.org", 25},
	    {RELAY_LMTP, false, "::1", 24},
	};
	for (unsigned i = 0; i < 7; i++) {
		assert_int_equal(a.relay_host[i].proto, want[i].proto);
		assert_int_equal(a.relay_host[i].unix_path, want[i].unix_path);
		assert_string_equal(a.relay_host[i].host, want[i].host);
		assert_int_equal(a.relay_host[i].port, want[i].port);
	}
	assert_int_equal(config_set(&a, "relay_retry_schedule=1s, 1m", e.f), 0);
	assert_int_equal(a.relay_retry_min, 1);
	assert_int_equal(a.relay_retry_max, 60);
	assert_int_equal(config_set(&a, "maximal_queue_lifetime=2d", e.f), 0);
	assert_int_equal(a.maximal_queue_lifetime, 2 * 86400);
	assert_int_equal(config_check(&a, e.f), 0);
	/* Written back as read again. */
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	config_print(&a, f);
	fclose(f);
	assert_non_null(
	    strstr(text, "relay_host = smtp:[hub.example.net]:25, smtp:[192.0.2.10]:2525, "
			 "lmtp:[127.0.0.1]:24, lmtp:unix:/run/dovecot/lmtp, "
			 "smtp:[2001:db8::1]:25, smtp:[Hub2.example.org]:25, lmtp:[::1]:24\n"));
	assert_non_null(strstr(text, "relay_retry_schedule = 1s, 60s\n"));
	free(text);
	/* An empty value: no relay. */
	assert_int_equal(config_set(&a, "relay_host=", e.f), 0);
	assert_int_equal(a.nrelay_host, 0);
	config_free(&a);
	err_close(&e);

	static const char *const bad[] = {
	    "relay_host=smtp:2001:db8::1",
	    "relay_host=smtp:[hub.example.net",
	    "relay_host=smtp:[hub.example.net]x",
	    "relay_host=smtp:hub.example.net:0",
	    "relay_host=smtp:hub.example.net:65536",
	    "relay_host=smtp:hub..example.net",
	    "relay_host=lmtp:unix:relative/path",
	    "relay_host=a,b,c,d,e,f,g,h,i",
	    "relay_retry_schedule=60s",
	    "relay_retry_schedule=10s, 5s",
	    "relay_retry_schedule=0s, 5s",
	    "relay_retry_schedule=1s, 8d",
	    "relay_retry_schedule=1s, 2s, 3s",
	    "relay_tls=sometimes",
	    "relay_workers=0",
	    "relay_workers=17",
	    "relay_connections=0",
	    "maximal_queue_lifetime=0",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		config_defaults(&a);
		err_open(&e);
		if (config_set(&a, bad[i], e.f) != -1)
			fail_msg("accepted: %s", bad[i]);
		const char *key_end = strchr(bad[i], '=');
		char want_key[64];
		snprintf(want_key, sizeof(want_key), "key '%.*s'", (int)(key_end - bad[i]), bad[i]);
		assert_non_null(strstr(err_text(&e), want_key));
		config_free(&a);
		err_close(&e);
	}
	/* Relations: the relay reads segments; verify needs the CAs. */
	config_defaults(&a);
	err_open(&e);
	assert_int_equal(config_set(&a, "relay_host=[127.0.0.1]:2525", e.f), 0);
	assert_int_equal(config_set(&a, "spool_format=maildir", e.f), 0);
	assert_int_equal(config_set(&a, "relay_tls=verify", e.f), 0);
	assert_int_equal(config_set(&a, "relay_helo_name=bad name", e.f), 0);
	assert_int_equal(config_check(&a, e.f), -1);
	assert_non_null(
	    strstr(err_text(&e), "key 'relay_host': the relay reads the segment spool"));
	assert_non_null(strstr(err_text(&e), "key 'relay_tls_ca_file': relay_tls = verify needs"));
	assert_non_null(strstr(err_text(&e), "key 'relay_helo_name'"));
	config_free(&a);
	err_close(&e);
}

/* -o after the file: each -o wins over the file, the last -o over earlier ones. */
static void test_override(void **state)
{
	struct config cfg;
	struct errbuf e;
	char path[64];

	(void)state;
	err_open(&e);
	assert_int_equal(load_text(&cfg, every_key, &e, path), 0);
	assert_int_equal(config_set(&cfg, "writers=7", e.f), 0);
	assert_int_equal(config_set(&cfg, "writers = 8", e.f), 0);
	assert_int_equal(config_set(&cfg, "accept_domains=Other.Example", e.f), 0);
	assert_int_equal(config_set(&cfg, "pin_shards=yes", e.f), 0);
	assert_int_equal(cfg.writers, 8);
	assert_int_equal(cfg.naccept_domains, 1);
	assert_string_equal(cfg.accept_domains[0], "other.example");
	assert_true(cfg.pin_shards);
	assert_string_equal(err_text(&e), "");
	config_free(&cfg);
	err_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_every_key),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_messages),
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_set_messages),
	    cmocka_unit_test(test_comments_continuations),
	    cmocka_unit_test(test_domains),
	    cmocka_unit_test(test_domains_max),
	    cmocka_unit_test(test_listen),
	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_check_by_hand),
	    cmocka_unit_test(test_cidrs),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_override),
	    cmocka_unit_test(test_screening_keys),
	    cmocka_unit_test(test_relay_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
