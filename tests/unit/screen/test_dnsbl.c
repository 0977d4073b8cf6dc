/*
 * test_dnsbl.c - the DNS list resolver thread and verdict cache
 * (core/dnsbl.c) against a tiny UDP name server inside the test.
 *
 * The server (a thread on 127.0.0.1, an ephemeral port) answers by query
 * name from a table: A records with a TTL, NXDOMAIN with or without an SOA
 * in the authority section, SERVFAIL, or nothing at all; names under
 * "rule.test" are listed (127.0.0.2) when the client's last octet is even.
 * It counts the queries of each name. The shards are the test's threads,
 * their wake eventfds plain eventfds. The cache is also driven directly
 * (dnsbl_int.h): CLOCK replacement in one bucket, and one writer against
 * several readers that check every verdict they get for a torn read.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "config.h"
#include "dnsbl.h"
#include "dnsbl_int.h"
#include "dnsbl_sites.h"

#define RULES_MAX   16
#define SHARDS_TEST 2
#define WAIT_MS	    10000 /* the longest any reply is waited for */

/* ---- the name server ---- */

enum ans { ANS_A, ANS_NXDOMAIN, ANS_SERVFAIL, ANS_DROP };

struct rule {
	const char *name; /* the whole query name, lower case */
	enum ans ans;
	unsigned na;
	uint8_t a[2][4];
	uint32_t ttl;	  /* of the A records, or of the SOA (0: NXDOMAIN without one) */
	uint32_t soa_min; /* the SOA's MINIMUM */
};

struct server {
	int fd;
	uint16_t port;
	pthread_t thread;
	_Atomic bool stop;
	const struct rule *rules;
	unsigned nrules;
	_Atomic unsigned hits[RULES_MAX]; /* queries per rule */
	_Atomic unsigned queries;	  /* all queries */
};

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
}

/* The question's name as "a.b.c" (lower case) and where the question ends. */
static size_t query_name(const uint8_t *q, size_t len, char *name, size_t cap)
{
	size_t p = 12, n = 0;
	while (p < len && q[p] != 0) {
		unsigned l = q[p++];
		if (l > 63 || p + l > len || n + l + 2 > cap)
			return 0;
		if (n)
			name[n++] = '.';
		for (unsigned i = 0; i < l; i++) {
			char c = (char)q[p + i];
			name[n++] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
		}
		p += l;
	}
	name[n] = '\0';
	return p + 5 <= len ? p + 5 : 0; /* the root label, QTYPE, QCLASS */
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);
	return n >= t && strcmp(s + n - t, tail) == 0;
}

/* Builds the answer to q (qend: end of its question) in out; 0: no answer. */
static size_t server_answer(struct server *sv, const uint8_t *q, size_t qend, const char *name,
			    uint8_t *out)
{
	struct rule dyn = {.ans = ANS_NXDOMAIN};
	const struct rule *r = &dyn;
	for (unsigned i = 0; i < sv->nrules; i++)
		if (strcmp(sv->rules[i].name, name) == 0) {
			r = &sv->rules[i];
			atomic_fetch_add(&sv->hits[i], 1);
			break;
		}
	if (r == &dyn && ends_with(name, ".rule.test")) {
		unsigned last = (unsigned)atoi(name);
		dyn = (struct rule){.ans = last % 2 ? ANS_NXDOMAIN : ANS_A,
				    .na = 1,
				    .a = {{127, 0, 0, 2}},
				    .ttl = 300,
				    .soa_min = 300};
	} else if (r == &dyn && ends_with(name, "drop.test")) {
		dyn.ans = ANS_DROP;
	}
	if (r->ans == ANS_DROP)
		return 0;

	memcpy(out, q, qend);
	out[2] = 0x81; /* QR, RD */
	out[3] = (uint8_t)(0x80 | (r->ans == ANS_SERVFAIL ? 2 : r->ans == ANS_NXDOMAIN ? 3 : 0));
	put16(out + 4, 1);
	put16(out + 6, r->ans == ANS_A ? r->na : 0);
	put16(out + 8, r->ans == ANS_NXDOMAIN && r->ttl ? 1 : 0);
	put16(out + 10, 0);
	size_t n = qend;
	for (unsigned i = 0; r->ans == ANS_A && i < r->na; i++) {
		put16(out + n, 0xc00c); /* the question's name */
		put16(out + n + 2, 1);	/* A */
		put16(out + n + 4, 1);	/* IN */
		put32(out + n + 6, r->ttl);
		put16(out + n + 10, 4);
		memcpy(out + n + 12, r->a[i], 4);
		n += 16;
	}
	if (r->ans == ANS_NXDOMAIN && r->ttl) {
		put16(out + n, 0xc00c);
		put16(out + n + 2, 6); /* SOA */
		put16(out + n + 4, 1);
		put32(out + n + 6, r->ttl);
		put16(out + n + 10, 22);
		out[n + 12] = 0; /* MNAME: the root */
		out[n + 13] = 0; /* RNAME */
		put32(out + n + 14, 1);
		put32(out + n + 18, 3600);
		put32(out + n + 22, 600);
		put32(out + n + 26, 86400);
		put32(out + n + 30, r->soa_min);
		n += 34;
	}
	return n;
}

static void *server_main(void *arg)
{
	struct server *sv = arg;
	while (!atomic_load(&sv->stop)) {
		struct pollfd p = {.fd = sv->fd, .events = POLLIN};
		if (poll(&p, 1, 20) <= 0)
			continue;
		uint8_t q[512], out[512];
		char name[300];
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t len = recvfrom(sv->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
		if (len < 12)
			continue;
		atomic_fetch_add(&sv->queries, 1);
		size_t qend = query_name(q, (size_t)len, name, sizeof(name));
		if (qend == 0 || qend + 16 * 2 + 34 > sizeof(out))
			continue;
		size_t n = server_answer(sv, q, qend, name, out);
		if (n > 0)
			sendto(sv->fd, out, n, 0, (struct sockaddr *)&from, fl);
	}
	return NULL;
}

static void server_start(struct server *sv, const struct rule *rules, unsigned nrules)
{
	assert_true(nrules <= RULES_MAX);
	memset(sv, 0, sizeof(*sv));
	sv->rules = rules;
	sv->nrules = nrules;
	sv->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(sv->fd >= 0);
	/* The bursts of the bound tests: past rmem_max where allowed. */
	int big = 8 << 20;
	if (setsockopt(sv->fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) != 0)
		setsockopt(sv->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(sv->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t al = sizeof(a);
	assert_int_equal(getsockname(sv->fd, (struct sockaddr *)&a, &al), 0);
	sv->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&sv->thread, NULL, server_main, sv), 0);
}

static void server_stop(struct server *sv)
{
	atomic_store(&sv->stop, true);
	pthread_join(sv->thread, NULL);
	close(sv->fd);
}

static unsigned hits(struct server *sv, const char *name)
{
	for (unsigned i = 0; i < sv->nrules; i++)
		if (strcmp(sv->rules[i].name, name) == 0)
			return atomic_load(&sv->hits[i]);
	fail_msg("no rule %s", name);
	return 0;
}

/* ---- a resolver with its shards ---- */

struct fixture {
	struct config cfg;
	struct server sv;
	struct dnsbl *d;
	int wake[SHARDS_TEST];
};

static void config_sites(struct config *cfg, const char *const *sites, unsigned n)
{
	cfg->dnsbl_sites = calloc(n, sizeof(*cfg->dnsbl_sites));
	assert_non_null(cfg->dnsbl_sites);
	for (unsigned i = 0; i < n; i++) {
		const char *why = NULL;
		if (dnsbl_site_parse(sites[i], strlen(sites[i]), &cfg->dnsbl_sites[i], &why) != 0)
			fail_msg("site %s: %s", sites[i], why);
	}
	cfg->ndnsbl_sites = n;
}

/* Sets up cfg for the server on port; the caller may change it before fx_open. */
static void fx_config(struct fixture *f, const char *const *sites, unsigned nsites)
{
	config_defaults(&f->cfg);
	config_sites(&f->cfg, sites, nsites);
	f->cfg.dnsbl_timeout_ms = 2000;
	f->cfg.dnsbl_cache_size = 1000;
	f->cfg.dnsbl_min_ttl = 60;
	f->cfg.dnsbl_max_ttl = 3600;
	snprintf(f->cfg.dns_servers[0].host, sizeof(f->cfg.dns_servers[0].host), "127.0.0.1");
	f->cfg.dns_servers[0].port = f->sv.port;
	f->cfg.ndns_servers = 1;
}

static void fx_open(struct fixture *f, bool start)
{
	assert_int_equal(dnsbl_create(&f->cfg, SHARDS_TEST, &f->d, stderr), 0);
	for (unsigned s = 0; s < SHARDS_TEST; s++) {
		f->wake[s] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		assert_true(f->wake[s] >= 0);
		dnsbl_set_wake_fd(f->d, s, f->wake[s]);
	}
	if (start)
		assert_int_equal(dnsbl_start(f->d), 0);
}

static void fx_setup(struct fixture *f, const char *const *sites, unsigned nsites,
		     const struct rule *rules, unsigned nrules)
{
	server_start(&f->sv, rules, nrules);
	fx_config(f, sites, nsites);
	fx_open(f, true);
}

static void fx_close(struct fixture *f)
{
	dnsbl_free(f->d);
	for (unsigned s = 0; s < SHARDS_TEST; s++)
		close(f->wake[s]);
	server_stop(&f->sv);
	config_free(&f->cfg);
}

static void v4(uint8_t addr[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	memset(addr, 0, 16);
	addr[10] = addr[11] = 0xff;
	addr[12] = a;
	addr[13] = b;
	addr[14] = c;
	addr[15] = d;
}

/* Waits for shard's wake eventfd (false after ms) and clears it. */
static bool wake_wait(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) != 1)
		return false;
	uint64_t v;
	return read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v);
}

/* Asks about addr on shard 0 and waits for the answer. */
static struct dnsbl_req ask(struct fixture *f, const uint8_t addr[16])
{
	struct dnsbl_req r = {.cookie = 42};
	memcpy(r.addr, addr, 16);
	assert_int_equal(dnsbl_request(f->d, 0, &r), 0);
	struct dnsbl_req *back;
	uint64_t until = mono_ms() + WAIT_MS;
	while ((back = dnsbl_reap(f->d, 0)) == NULL) {
		assert_true(mono_ms() < until);
		wake_wait(f->wake[0], 100);
	}
	assert_ptr_equal(back, &r);
	assert_int_equal(r.cookie, 42);
	assert_true(r.done_us >= r.start_us);
	assert_null(dnsbl_reap(f->d, 0));
	return r;
}

static void verdict_equal(const struct dnsbl_verdict *v, int score, uint32_t matched,
			  uint32_t timeouts, uint32_t failed)
{
	assert_int_equal(v->score, score);
	assert_int_equal(v->matched, matched);
	assert_int_equal(v->timeouts, timeouts);
	assert_int_equal(v->failed, failed);
}

static uint64_t now_s(void)
{
	return mono_coarse_ms() / 1000;
}

/* ---- answers and scores ---- */

static const char *const two_sites[] = {"a.test*2", "b.test=127.0.0.[2..11]*3"};

static const struct rule score_rules[] = {
    /* 1.2.3.4: both list it */
    {"4.3.2.1.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 300, 0},
    {"4.3.2.1.b.test", ANS_A, 1, {{127, 0, 0, 4}}, 200, 0},
    /* 1.2.3.5: neither (NXDOMAIN with an SOA) */
    {"5.3.2.1.a.test", ANS_NXDOMAIN, 0, {{0}}, 600, 300},
    {"5.3.2.1.b.test", ANS_NXDOMAIN, 0, {{0}}, 600, 300},
    /* 1.2.3.6: b answers outside its filter */
    {"6.3.2.1.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 300, 0},
    {"6.3.2.1.b.test", ANS_A, 1, {{127, 0, 0, 20}}, 300, 0},
    /* 1.2.3.7: b answers twice, the second inside */
    {"7.3.2.1.a.test", ANS_NXDOMAIN, 0, {{0}}, 0, 0},
    {"7.3.2.1.b.test", ANS_A, 2, {{127, 0, 0, 20}, {127, 0, 0, 5}}, 300, 0},
};

static void test_listed(void **state)
{
	(void)state;
	struct fixture f;
	fx_setup(&f, two_sites, 2, score_rules, 8);
	uint8_t addr[16];
	struct dnsbl_verdict v;

	v4(addr, 1, 2, 3, 4);
	struct dnsbl_req r = ask(&f, addr);
	verdict_equal(&r.v, 5, 3, 0, 0);
	assert_true(dnsbl_cache_get(f.d, addr, now_s(), &v));
	verdict_equal(&v, 5, 3, 0, 0);

	v4(addr, 1, 2, 3, 5);
	r = ask(&f, addr);
	verdict_equal(&r.v, 0, 0, 0, 0);
	assert_true(dnsbl_cache_get(f.d, addr, now_s(), &v));
	verdict_equal(&v, 0, 0, 0, 0);

	v4(addr, 1, 2, 3, 6);
	r = ask(&f, addr);
	verdict_equal(&r.v, 2, 1, 0, 0);

	v4(addr, 1, 2, 3, 7);
	r = ask(&f, addr);
	verdict_equal(&r.v, 3, 2, 0, 0);

	struct dnsbl_stats st;
	dnsbl_stats_get(f.d, &st);
	assert_int_equal(st.requests, 4);
	assert_int_equal(st.queries, 8);
	assert_int_equal(st.answers, 8);
	assert_int_equal(st.timeouts, 0);
	assert_int_equal(st.failures, 0);
	assert_int_equal(st.cached, 4);
	assert_int_equal(st.overflows, 0);
	fx_close(&f);
}

static void test_allowlist(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test*2", "wl.test=127.0.[0..255].[1..3]*-5"};
	static const struct rule rules[] = {
	    {"4.3.2.1.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 300, 0},
	    {"4.3.2.1.wl.test", ANS_A, 1, {{127, 0, 10, 2}}, 300, 0},
	    {"5.3.2.1.wl.test", ANS_A, 1, {{127, 0, 10, 4}}, 300, 0}, /* outside */
	};
	struct fixture f;
	fx_setup(&f, sites, 2, rules, 3);
	uint8_t addr[16];
	v4(addr, 1, 2, 3, 4);
	struct dnsbl_req r = ask(&f, addr);
	verdict_equal(&r.v, -3, 3, 0, 0);
	v4(addr, 1, 2, 3, 5);
	r = ask(&f, addr);
	verdict_equal(&r.v, 0, 0, 0, 0);
	fx_close(&f);
}

/* An IPv6 client's name is its 32 nibbles, reversed. */
static void test_ipv6_name(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test"};
#define V6_NAME "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.a.test"
	static const struct rule rules[] = {{V6_NAME, ANS_A, 1, {{127, 0, 0, 2}}, 300, 0}};
	struct fixture f;
	fx_setup(&f, sites, 1, rules, 1);
	uint8_t addr[16];
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", addr), 1);
	struct dnsbl_req r = ask(&f, addr);
	verdict_equal(&r.v, 1, 1, 0, 0);
	assert_int_equal(hits(&f.sv, rules[0].name), 1);
	fx_close(&f);
}

/* ---- failures ---- */

/* A site that never answers: the request comes back at dnsbl_timeout with
 * its timeouts bit and the other site's answer, and is not cached. */
static void test_timeout(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test", "drop.test"};
	static const struct rule rules[] = {
	    {"4.3.2.1.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 300, 0},
	    {"4.3.2.1.drop.test", ANS_DROP, 0, {{0}}, 0, 0},
	};
	struct fixture f;
	server_start(&f.sv, rules, 2);
	fx_config(&f, sites, 2);
	f.cfg.dnsbl_timeout_ms = 500;
	fx_open(&f, true);
	uint8_t addr[16];
	v4(addr, 1, 2, 3, 4);
	uint64_t t0 = mono_ms();
	struct dnsbl_req r = ask(&f, addr);
	uint64_t wall_ms = mono_ms() - t0, took_ms = (r.done_us - r.start_us) / 1000;
	verdict_equal(&r.v, 1, 1, 2, 0);
	print_message("timeout 500 ms: given back after %llu ms (seen after %llu ms)\n",
		      (unsigned long long)took_ms, (unsigned long long)wall_ms);
	assert_true(took_ms >= 495 && took_ms < 650);
	assert_true(wall_ms < 1000);
	struct dnsbl_verdict v;
	assert_false(dnsbl_cache_get(f.d, addr, now_s(), &v));
	/* One server: the query went out twice (a retry at a third). */
	assert_int_equal(hits(&f.sv, rules[1].name), 2);
	struct dnsbl_stats st;
	dnsbl_stats_get(f.d, &st);
	assert_int_equal(st.timeouts, 1);
	assert_int_equal(st.answers, 1);
	assert_int_equal(st.cached, 0);
	fx_close(&f);
}

static void test_servfail(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test", "sf.test"};
	static const struct rule rules[] = {
	    {"4.3.2.1.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 300, 0},
	    {"4.3.2.1.sf.test", ANS_SERVFAIL, 0, {{0}}, 0, 0},
	};
	struct fixture f;
	fx_setup(&f, sites, 2, rules, 2);
	uint8_t addr[16];
	v4(addr, 1, 2, 3, 4);
	struct dnsbl_req r = ask(&f, addr);
	verdict_equal(&r.v, 1, 1, 0, 2);
	assert_true(r.done_us - r.start_us < 1000 * 1000); /* well before the timeout */
	struct dnsbl_verdict v;
	assert_false(dnsbl_cache_get(f.d, addr, now_s(), &v));
	/* c-ares asks again after a SERVFAIL (the one server, its second try). */
	assert_int_equal(hits(&f.sv, rules[1].name), 2);
	struct dnsbl_stats st;
	dnsbl_stats_get(f.d, &st);
	assert_int_equal(st.failures, 1);
	assert_int_equal(st.cached, 0);
	fx_close(&f);
}

/* No server listens: c-ares's errors (connection refused) count as failed. */
static void test_no_server(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test"};
	struct fixture f;
	server_start(&f.sv, NULL, 0);
	fx_config(&f, sites, 1);
	/* A port just used and closed: nothing listens there. */
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
	close(s);
	f.cfg.dns_servers[0].port = ntohs(a.sin_port);
	fx_open(&f, true);
	uint8_t addr[16];
	v4(addr, 1, 2, 3, 4);
	struct dnsbl_req r = ask(&f, addr);
	assert_int_equal(r.v.score, 0);
	assert_int_equal(r.v.matched, 0);
	assert_int_equal(r.v.failed | r.v.timeouts, 1);
	fx_close(&f);
}

/* ---- the cache ---- */

/* A complete answer is cached: a second request costs no query. */
static void test_cache_hit(void **state)
{
	(void)state;
	struct fixture f;
	fx_setup(&f, two_sites, 2, score_rules, 8);
	uint8_t addr[16];
	v4(addr, 1, 2, 3, 4);
	struct dnsbl_req r = ask(&f, addr);
	verdict_equal(&r.v, 5, 3, 0, 0);
	struct dnsbl_verdict v;
	assert_true(dnsbl_cache_get(f.d, addr, now_s(), &v));
	verdict_equal(&v, 5, 3, 0, 0);
	/* Asked again anyway (two connections at once): the resolver looks first. */
	r = ask(&f, addr);
	verdict_equal(&r.v, 5, 3, 0, 0);
	assert_int_equal(hits(&f.sv, "4.3.2.1.a.test"), 1);
	assert_int_equal(hits(&f.sv, "4.3.2.1.b.test"), 1);
	struct dnsbl_stats st;
	dnsbl_stats_get(f.d, &st);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.queries, 2);
	assert_int_equal(st.cached, 1);
	fx_close(&f);
}

/* The lowest TTL of the answers, clamped to [min_ttl, max_ttl]; a cache
 * entry past its expiry is a miss. */
static void test_ttl(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test", "b.test"};
	static const struct rule rules[] = {
	    {"1.0.0.10.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 5, 0}, /* below min */
	    {"1.0.0.10.b.test", ANS_A, 1, {{127, 0, 0, 2}}, 5, 0},
	    {"2.0.0.10.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 100000, 0}, /* above max */
	    {"2.0.0.10.b.test", ANS_NXDOMAIN, 0, {{0}}, 200000, 100000},
	    {"3.0.0.10.a.test", ANS_A, 1, {{127, 0, 0, 2}}, 900, 0}, /* the lower */
	    {"3.0.0.10.b.test", ANS_NXDOMAIN, 0, {{0}}, 600, 120},   /* SOA: min(600, 120) */
	    {"4.0.0.10.a.test", ANS_NXDOMAIN, 0, {{0}}, 0, 0},	     /* no SOA: min_ttl */
	    {"4.0.0.10.b.test", ANS_NXDOMAIN, 0, {{0}}, 0, 0},
	};
	static const uint32_t want[] = {60, 3600, 120, 60};
	struct fixture f;
	fx_setup(&f, sites, 2, rules, 8);
	for (unsigned i = 0; i < 4; i++) {
		uint8_t addr[16];
		struct dnsbl_verdict v;
		v4(addr, 10, 0, 0, (uint8_t)(i + 1));
		struct dnsbl_req r = ask(&f, addr);
		assert_int_equal(r.v.timeouts | r.v.failed, 0);
		uint64_t now = now_s();
		/* The resolver read the clock within a second of now. */
		assert_true(dnsbl_cache_get(f.d, addr, now, &v));
		assert_true(dnsbl_cache_get(f.d, addr, now + want[i] - 2, &v));
		assert_int_equal(v.matched, r.v.matched);
		assert_false(dnsbl_cache_get(f.d, addr, now + want[i] + 2, &v));
	}
	fx_close(&f);
}

/* An empty cache (size 0) never hits; capacity rounds up to 8 ways times a
 * power of two. */
static void test_cache_sizes(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test"};
	static const struct size_cap {
		unsigned size, cap;
	} t[] = {
	    {0, 0}, {1, 8}, {8, 8}, {9, 16}, {1000, 1024}, {100000, 131072},
	};
	for (unsigned i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct fixture f;
		f.sv.port = 53;
		fx_config(&f, sites, 1);
		f.cfg.dnsbl_cache_size = t[i].size;
		struct dnsbl *d;
		assert_int_equal(dnsbl_create(&f.cfg, 1, &d, stderr), 0);
		assert_int_equal(dnsbl_cache_capacity(d), t[i].cap);
		uint8_t addr[16];
		struct dnsbl_verdict v = {.score = 1, .matched = 1};
		v4(addr, 1, 2, 3, 4);
		dnsbl_cache_put(d, addr, &v, 100, 10);
		assert_int_equal(dnsbl_cache_get(d, addr, 10, &v), t[i].size > 0);
		dnsbl_free(d);
		config_free(&f.cfg);
	}
}

/* dns_servers as addresses of either family, or /etc/resolv.conf's; what
 * cannot work is refused with one "mxring: " line. */
static void test_create(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test"};
	static const struct {
		const char *host; /* NULL: no dns_servers */
		unsigned nsites;
		bool ok;
	} t[] = {
	    {"127.0.0.1", 1, true}, {"::1", 1, true},	     {NULL, 1, true},
	    {"dns.test", 1, false}, {"127.0.0.1", 0, false},
	};
	for (unsigned i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct fixture f;
		f.sv.port = 53;
		fx_config(&f, sites, 1);
		f.cfg.ndnsbl_sites = t[i].nsites;
		if (t[i].host)
			snprintf(f.cfg.dns_servers[0].host, sizeof(f.cfg.dns_servers[0].host), "%s",
				 t[i].host);
		else
			f.cfg.ndns_servers = 0;
		char *msg = NULL;
		size_t len = 0;
		FILE *err = open_memstream(&msg, &len);
		assert_non_null(err);
		struct dnsbl *d = NULL;
		int r = dnsbl_create(&f.cfg, 1, &d, err);
		fclose(err);
		if (t[i].ok) {
			assert_int_equal(r, 0);
			assert_int_equal(len, 0);
		} else {
			assert_int_equal(r, -1);
			assert_true(strncmp(msg, "mxring: dnsbl: ", 15) == 0);
			assert_non_null(strchr(msg, '\n'));
		}
		dnsbl_free(d);
		free(msg);
		f.cfg.ndnsbl_sites = 1;
		config_free(&f.cfg);
	}
}

/* One bucket: CLOCK evicts the one entry no reader has touched, then goes
 * round. */
static void test_cache_clock(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test"};
	struct fixture f;
	f.sv.port = 53;
	fx_config(&f, sites, 1);
	f.cfg.dnsbl_cache_size = 8;
	struct dnsbl *d;
	assert_int_equal(dnsbl_create(&f.cfg, 1, &d, stderr), 0);
	uint8_t addr[10][16];
	struct dnsbl_verdict v;
	for (unsigned i = 0; i < 10; i++)
		v4(addr[i], 10, 0, 0, (uint8_t)i);
	for (unsigned i = 0; i < 8; i++) {
		v = (struct dnsbl_verdict){.score = (int32_t)i};
		dnsbl_cache_put(d, addr[i], &v, 100, 10);
	}
	for (unsigned i = 0; i < 7; i++)
		assert_true(dnsbl_cache_get(d, addr[i], 10, &v));
	dnsbl_cache_put(d, addr[8], &v, 100, 10);
	assert_false(dnsbl_cache_get(d, addr[7], 10, &v));
	/* The hand cleared every bit on its way round: the next victim is the
	 * way after the last one, the oldest. */
	dnsbl_cache_put(d, addr[9], &v, 100, 10);
	assert_false(dnsbl_cache_get(d, addr[0], 10, &v));
	for (unsigned i = 1; i < 7; i++) {
		assert_true(dnsbl_cache_get(d, addr[i], 10, &v));
		assert_int_equal(v.score, i);
	}
	assert_true(dnsbl_cache_get(d, addr[8], 10, &v));
	assert_true(dnsbl_cache_get(d, addr[9], 10, &v));
	/* Once all have expired, a dead way is taken: no eviction. */
	dnsbl_cache_put(d, addr[7], &v, 300, 200);
	assert_true(dnsbl_cache_get(d, addr[7], 200, &v));
	assert_false(dnsbl_cache_get(d, addr[1], 200, &v));
	struct dnsbl_stats st;
	dnsbl_stats_get(d, &st);
	assert_int_equal(st.evicted, 2);
	assert_int_equal(st.cached, 11);
	dnsbl_free(d);
	config_free(&f.cfg);
}

/* One writer, two readers, one bucket: each stored verdict has
 * score - matched == the address's low 32 bits, so a verdict put together
 * from two writes (of one key or of two) shows. (Without the sequence
 * check, this finds torn verdicts within the run.) */
#define STRESS_KEYS    12
#define STRESS_READERS 2
#define STRESS_MS      400

struct stress {
	struct dnsbl *d;
	uint8_t addr[STRESS_KEYS][16];
	_Atomic bool stop;
	_Atomic uint64_t writes, reads, hits, torn;
};

static uint32_t low32(const uint8_t addr[16])
{
	return (uint32_t)addr[12] << 24 | (uint32_t)addr[13] << 16 | (uint32_t)addr[14] << 8 |
	       addr[15];
}

static void *stress_writer(void *arg)
{
	struct stress *s = arg;
	uint32_t gen = 0;
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
		const uint8_t *a = s->addr[(gen * 7919u) % STRESS_KEYS];
		gen++;
		struct dnsbl_verdict v = {.score = (int32_t)(low32(a) + gen), .matched = gen};
		dnsbl_cache_put(s->d, a, &v, 1000, 10);
		atomic_fetch_add_explicit(&s->writes, 1, memory_order_relaxed);
	}
	return NULL;
}

static void *stress_reader(void *arg)
{
	struct stress *s = arg;
	uint32_t x = (uint32_t)(uintptr_t)&x | 1;
	uint64_t reads = 0, hit = 0, torn = 0;
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		const uint8_t *a = s->addr[x % STRESS_KEYS];
		struct dnsbl_verdict v;
		reads++;
		if (!dnsbl_cache_get(s->d, a, 10, &v))
			continue;
		hit++;
		if ((uint32_t)v.score - v.matched != low32(a) || v.timeouts || v.failed)
			torn++;
	}
	atomic_fetch_add(&s->reads, reads);
	atomic_fetch_add(&s->hits, hit);
	atomic_fetch_add(&s->torn, torn);
	return NULL;
}

static void test_cache_stress(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.test"};
	struct fixture f;
	f.sv.port = 53;
	fx_config(&f, sites, 1);
	f.cfg.dnsbl_cache_size = 8; /* one bucket for 12 keys: every write lands beside the reads */
	struct stress *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	assert_int_equal(dnsbl_create(&f.cfg, 1, &s->d, stderr), 0);
	for (unsigned i = 0; i < STRESS_KEYS; i++)
		v4(s->addr[i], 10, (uint8_t)(i * 37), (uint8_t)(i >> 8), (uint8_t)i);
	pthread_t w, r[STRESS_READERS];
	assert_int_equal(pthread_create(&w, NULL, stress_writer, s), 0);
	for (unsigned i = 0; i < STRESS_READERS; i++)
		assert_int_equal(pthread_create(&r[i], NULL, stress_reader, s), 0);
	usleep(STRESS_MS * 1000);
	atomic_store(&s->stop, true);
	pthread_join(w, NULL);
	for (unsigned i = 0; i < STRESS_READERS; i++)
		pthread_join(r[i], NULL);
	print_message("cache stress: %llu writes, %llu reads, %llu hits, %llu torn\n",
		      (unsigned long long)s->writes, (unsigned long long)s->reads,
		      (unsigned long long)s->hits, (unsigned long long)s->torn);
	assert_int_equal(s->torn, 0);
	assert_true(s->hits > 0);
	dnsbl_free(s->d);
	free(s);
	config_free(&f.cfg);
}

/* ---- bounds and concurrency ---- */

/* DNSBL_INFLIGHT_MAX out, the next one is refused; all come back, and
 * reaping makes room again. Asked before the thread starts. */
static void test_inflight_bound(void **state)
{
	(void)state;
	static const char *const sites[] = {"rule.test"};
	struct fixture f;
	server_start(&f.sv, NULL, 0);
	fx_config(&f, sites, 1);
	fx_open(&f, false);
	struct dnsbl_req *req = calloc(DNSBL_INFLIGHT_MAX + 1, sizeof(*req));
	assert_non_null(req);
	for (unsigned i = 0; i <= DNSBL_INFLIGHT_MAX; i++) {
		v4(req[i].addr, 10, 1, (uint8_t)(i >> 8), (uint8_t)i);
		req[i].cookie = i;
	}
	for (unsigned i = 0; i < DNSBL_INFLIGHT_MAX; i++)
		assert_int_equal(dnsbl_request(f.d, 0, &req[i]), 0);
	assert_int_equal(dnsbl_request(f.d, 0, &req[DNSBL_INFLIGHT_MAX]), -EAGAIN);
	assert_int_equal(dnsbl_start(f.d), 0);
	unsigned back = 0, answered = 0, wrong = 0;
	uint64_t until = mono_ms() + WAIT_MS;
	while (back < DNSBL_INFLIGHT_MAX) {
		assert_true(mono_ms() < until);
		struct dnsbl_req *r;
		while ((r = dnsbl_reap(f.d, 0)) != NULL) {
			back++;
			/* An answer must be right; a timeout is a UDP drop in the burst. */
			if (r->v.timeouts == 0) {
				answered++;
				wrong += r->v.matched != ((r->addr[15] & 1) == 0) || r->v.failed;
			}
		}
		wake_wait(f.wake[0], 100);
	}
	print_message("inflight bound: %u of %u answered in time\n", answered, back);
	assert_int_equal(wrong, 0);
	assert_true(answered > 0);
	assert_int_equal(dnsbl_request(f.d, 0, &req[DNSBL_INFLIGHT_MAX]), 0);
	fx_close(&f); /* the last one is dropped, unanswered */
	free(req);
}

/* More requests than jobs (32 sites: DNSBL_QUERIES_MAX / 32 jobs): the
 * excess comes back at once, every site in timeouts, without a query. */
static void test_overflow(void **state)
{
	(void)state;
	enum { N = 1100 };
	static char zone[32][16];
	const char *sites[32];
	for (unsigned i = 0; i < 32; i++) {
		snprintf(zone[i], sizeof(zone[i]), "s%u.drop.test", i);
		sites[i] = zone[i];
	}
	struct fixture f;
	server_start(&f.sv, NULL, 0);
	fx_config(&f, sites, 32);
	f.cfg.dnsbl_timeout_ms = 1000;
	fx_open(&f, false);
	struct dnsbl_req *req = calloc(N, sizeof(*req));
	assert_non_null(req);
	for (unsigned i = 0; i < N; i++) {
		v4(req[i].addr, 10, 2, (uint8_t)(i >> 8), (uint8_t)i);
		assert_int_equal(dnsbl_request(f.d, 0, &req[i]), 0);
	}
	uint64_t t0 = mono_ms();
	assert_int_equal(dnsbl_start(f.d), 0);
	unsigned back = 0;
	uint64_t until = t0 + WAIT_MS, taken_ms = 0;
	while (back < N) {
		struct dnsbl_stats now;
		dnsbl_stats_get(f.d, &now);
		if (!taken_ms && now.requests == N)
			taken_ms = mono_ms() - t0;
		assert_true(mono_ms() < until);
		struct dnsbl_req *r;
		while ((r = dnsbl_reap(f.d, 0)) != NULL) {
			/* Unanswered; a send the kernel refused counts as failed. */
			assert_int_equal(r->v.score, 0);
			assert_int_equal(r->v.matched, 0);
			assert_int_equal(r->v.timeouts | r->v.failed, UINT32_MAX);
			back++;
		}
		wake_wait(f.wake[0], 100);
	}
	struct dnsbl_stats st;
	dnsbl_stats_get(f.d, &st);
	print_message("overflow: %u requests (%llu queries) taken in %llu ms\n", N,
		      (unsigned long long)st.queries, (unsigned long long)taken_ms);
	/* Usually N - 1024 overflow; on a slow machine a job may come back
	 * (at its deadline) before the last requests are taken, and serve one. */
	assert_int_equal(st.requests, N);
	assert_true(st.overflows > 0 && st.overflows <= N - 32768 / 32);
	assert_int_equal(st.queries, (N - st.overflows) * 32);
	fx_close(&f);
	free(req);
}

/* Two shard threads at once, each with its own wake eventfd: every request
 * comes back once, to its shard, with the verdict its address calls for. */
#define SHARD_REQS 3000
#define SHARD_OUT  200

struct shard_ctx {
	struct fixture *f;
	unsigned id;
	struct dnsbl_req *req; /* SHARD_REQS */
	uint8_t *seen;
	unsigned wrong, twice, wakes, eagain, timeouts;
};

static void *shard_main(void *arg)
{
	struct shard_ctx *s = arg;
	unsigned sent = 0, back = 0, out = 0;
	uint64_t until = mono_ms() + 4 * WAIT_MS;
	while (back < SHARD_REQS && mono_ms() < until) {
		/* Bursts of varying size, so the resolver is caught asleep and awake. */
		unsigned burst = 1 + (sent * 13) % 17;
		while (burst-- > 0 && sent < SHARD_REQS && out < SHARD_OUT) {
			int r = dnsbl_request(s->f->d, s->id, &s->req[sent]);
			if (r == -EAGAIN) {
				s->eagain++;
				break;
			}
			sent++;
			out++;
		}
		if (wake_wait(s->f->wake[s->id], 50))
			s->wakes++;
		struct dnsbl_req *r;
		while ((r = dnsbl_reap(s->f->d, s->id)) != NULL) {
			unsigned i = (unsigned)(r->cookie & 0xffff);
			if ((r->cookie >> 16) != s->id || i >= SHARD_REQS || r != &s->req[i]) {
				s->wrong++;
				continue;
			}
			if (s->seen[i]++)
				s->twice++;
			/* A timeout: a UDP drop on a loaded machine, twice (c-ares
			 * sent again at a third of dnsbl_timeout). An answer must be right. */
			bool listed = (r->addr[15] & 1) == 0;
			if (r->v.timeouts == 1 && r->v.matched == 0 && r->v.failed == 0)
				s->timeouts++;
			else if (r->v.matched != listed || r->v.score != (listed ? 2 : 0) ||
				 r->v.timeouts || r->v.failed)
				s->wrong++;
			back++;
			out--;
		}
	}
	return NULL;
}

static void test_two_shards(void **state)
{
	(void)state;
	static const char *const sites[] = {"rule.test*2"};
	struct fixture f;
	fx_setup(&f, sites, 1, NULL, 0);
	struct shard_ctx sc[SHARDS_TEST];
	pthread_t th[SHARDS_TEST];
	for (unsigned s = 0; s < SHARDS_TEST; s++) {
		sc[s] = (struct shard_ctx){.f = &f, .id = s};
		sc[s].req = calloc(SHARD_REQS, sizeof(*sc[s].req));
		sc[s].seen = calloc(SHARD_REQS, 1);
		assert_non_null(sc[s].req);
		assert_non_null(sc[s].seen);
		for (unsigned i = 0; i < SHARD_REQS; i++) {
			/* Some addresses twice (in both shards): cache hits on the way. */
			unsigned k = i % 2500;
			v4(sc[s].req[i].addr, 10, 3, (uint8_t)(k >> 8), (uint8_t)k);
			sc[s].req[i].cookie = (uint64_t)s << 16 | i;
		}
	}
	for (unsigned s = 0; s < SHARDS_TEST; s++)
		assert_int_equal(pthread_create(&th[s], NULL, shard_main, &sc[s]), 0);
	for (unsigned s = 0; s < SHARDS_TEST; s++)
		pthread_join(th[s], NULL);
	struct dnsbl_stats st;
	dnsbl_stats_get(f.d, &st);
	print_message("two shards: %llu requests, %llu queries, %llu cached; wakes %u and %u; "
		      "timeouts %u and %u\n",
		      (unsigned long long)st.requests, (unsigned long long)st.queries,
		      (unsigned long long)st.cached, sc[0].wakes, sc[1].wakes, sc[0].timeouts,
		      sc[1].timeouts);
	for (unsigned s = 0; s < SHARDS_TEST; s++) {
		unsigned n = 0;
		for (unsigned i = 0; i < SHARD_REQS; i++)
			n += sc[s].seen[i] == 1;
		assert_int_equal(n, SHARD_REQS);
		assert_int_equal(sc[s].wrong, 0);
		assert_int_equal(sc[s].twice, 0);
		assert_int_equal(sc[s].eagain, 0);
		assert_true(sc[s].timeouts < SHARD_REQS / 10);
		free(sc[s].req);
		free(sc[s].seen);
	}
	assert_int_equal(st.requests, 2 * SHARD_REQS);
	assert_true(st.queries < 2 * SHARD_REQS); /* the repeated addresses hit the cache */
	fx_close(&f);
}

/* Freed with requests out and answers unreaped: nothing leaks, nothing runs on. */
static void test_free_busy(void **state)
{
	(void)state;
	static const char *const sites[] = {"a.drop.test", "rule.test"};
	struct fixture f;
	fx_setup(&f, sites, 2, NULL, 0);
	struct dnsbl_req req[64];
	memset(req, 0, sizeof(req));
	for (unsigned i = 0; i < 64; i++) {
		v4(req[i].addr, 10, 4, 0, (uint8_t)i);
		assert_int_equal(dnsbl_request(f.d, i % 2, &req[i]), 0);
	}
	usleep(50 * 1000);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_listed),	   cmocka_unit_test(test_allowlist),
	    cmocka_unit_test(test_ipv6_name),	   cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_servfail),	   cmocka_unit_test(test_no_server),
	    cmocka_unit_test(test_cache_hit),	   cmocka_unit_test(test_ttl),
	    cmocka_unit_test(test_create),	   cmocka_unit_test(test_cache_sizes),
	    cmocka_unit_test(test_cache_clock),	   cmocka_unit_test(test_cache_stress),
	    cmocka_unit_test(test_inflight_bound), cmocka_unit_test(test_overflow),
	    cmocka_unit_test(test_two_shards),	   cmocka_unit_test(test_free_busy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
