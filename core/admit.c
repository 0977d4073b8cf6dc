/*
 * admit.c - who may open a session: connections per client address
 * (max_connections_per_ip, shared by all shards), connections and messages
 * per client and minute (client_*_rate_limit, rate.c), refusals at accept,
 * the PROXY protocol header of a balancer (proxy_protocol), the DNS lists
 * asked before the greeting (dnsbl_sites, dnsbl.c), and the wait before the
 * greeting (pregreet_wait, the pre-greeting test of Postfix's postscreen).
 * Every refusal's reply text is the engine's (smtp_end).
 *
 * The greeting is held (PH_PREGREET) while either of two things is pending:
 * pregreet_wait (C_GREET_WAIT; a client that talks meanwhile is refused)
 * and the DNS lists (C_DNS_WAIT; the resolver gives every request back
 * within dnsbl_timeout, and the timer wheel holds a backstop two seconds
 * later). Without pregreet_wait, what a client sends early waits for the
 * greeting and is then read as pipelined commands.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dnsbl.h"
#include "log.h"
#include "proxy.h"
#include "rate.h"
#include "shard_int.h"

/*
 * Connections per client address, shared by all shards: a fixed table of
 * counters indexed by a hash of the IPv4 address or of the IPv6 /64 (one
 * host's usual allocation). Two addresses may share a counter, which only
 * ever makes the limit stricter for both; no lock, no allocation.
 */
static _Atomic uint16_t ip_conns[IP_BUCKETS];

static uint32_t ip_bucket(const struct sockaddr_storage *ss)
{
	const uint8_t *p;
	size_t n;
	if (ss->ss_family == AF_INET) {
		p = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
		n = 4;
	} else if (ss->ss_family == AF_INET6) {
		p = (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
		n = 8;
	} else {
		return IP_BUCKETS;
	}
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return (h ^ (h >> 16)) & (IP_BUCKETS - 1);
}

/* Whether the client is in connection_limit_exceptions. */
static bool limit_exempt(const struct config *cfg, const struct sockaddr_storage *ss)
{
	if (cfg->nconnection_limit_exceptions == 0)
		return false;
	if (ss->ss_family == AF_INET)
		return cidr_list_match(
		    cfg->connection_limit_exceptions, cfg->nconnection_limit_exceptions, false,
		    (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr);
	if (ss->ss_family == AF_INET6)
		return cidr_list_match(
		    cfg->connection_limit_exceptions, cfg->nconnection_limit_exceptions, true,
		    (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return false;
}

/*
 * Counts a connection from ss against max_connections_per_ip (shared by all
 * shards). false: the address is at its limit (nothing counted). *bucket is
 * the slot counted in, or IP_BUCKETS when none (no limit, or exempt).
 */
bool admit_ip(struct shard *sh, const struct sockaddr_storage *ss, uint32_t *bucket)
{
	*bucket = IP_BUCKETS;
	uint32_t b = ip_bucket(ss);
	if (b >= IP_BUCKETS || !sh->cfg->max_connections_per_ip || limit_exempt(sh->cfg, ss))
		return true;
	unsigned n = atomic_fetch_add_explicit(&ip_conns[b], 1, memory_order_relaxed);
	if (n >= sh->cfg->max_connections_per_ip) {
		atomic_fetch_sub_explicit(&ip_conns[b], 1, memory_order_relaxed);
		return false;
	}
	*bucket = b;
	return true;
}

void admit_ip_release(struct conn *c)
{
	if (c->ip_bucket < IP_BUCKETS)
		atomic_fetch_sub_explicit(&ip_conns[c->ip_bucket], 1, memory_order_relaxed);
	c->ip_bucket = IP_BUCKETS;
}

/* The client's address as 16 bytes (IPv4 as ::ffff:a.b.c.d); false for another family. */
static bool addr_bin(const struct sockaddr_storage *ss, uint8_t out[16])
{
	if (ss->ss_family == AF_INET) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
		return true;
	}
	return false;
}

void admit_set_addr(struct conn *c, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, c->addr, sizeof(c->addr));
		c->port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, c->addr, sizeof(c->addr));
		c->port = ntohs(s6->sin6_port);
	}
	c->flags &= (uint16_t) ~(C_HAS_BIN | C_EXEMPT);
	if (addr_bin(ss, c->bin))
		c->flags |= C_HAS_BIN;
	if (limit_exempt(shard_self->cfg, ss))
		c->flags |= C_EXEMPT;
	c->smtp.client = c->addr;
}

/* Logs the first refusal of a client's minute (later ones are only counted). */
static void rate_log(const char *kind, const char *client, uint32_t n, unsigned limit)
{
	if (n == limit + 1)
		log_line("rate limit client=%s kind=%s count=%u limit=%u per=60s", client, kind, n,
			 limit);
}

bool admit_rate(struct shard *sh, const struct sockaddr_storage *ss)
{
	unsigned limit = sh->cfg->client_connection_rate_limit;
	uint8_t bin[16];
	if (!limit || !addr_bin(ss, bin) || limit_exempt(sh->cfg, ss))
		return true;
	uint32_t n = rate_count(RATE_CONN, bin, sh->now_s);
	if (n <= limit)
		return true;
	char text[CLIENT_ADDR_MAX];
	const void *a = ss->ss_family == AF_INET
			    ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
			    : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
	inet_ntop(ss->ss_family, a, text, sizeof(text));
	rate_log("connection", text, n, limit);
	stat_add(&sh->stats.rate_limited_conns, 1);
	return false;
}

bool admit_mail_rate(struct shard *sh, struct conn *c)
{
	unsigned limit = sh->cfg->client_message_rate_limit;
	if (!limit || !(c->flags & C_HAS_BIN) || (c->flags & C_EXEMPT))
		return true;
	uint32_t n = rate_count(RATE_MSG, c->bin, sh->now_s);
	if (n <= limit)
		return true;
	rate_log("message", c->addr, n, limit);
	stat_add(&sh->stats.rate_limited_msgs, 1);
	return false;
}

void admit_refuse(struct shard *sh, int fd, enum smtp_end why, const char *client)
{
	char msg[REPLY_MAX];
	size_t n = smtp_end_reply(sh->sconf, why, client, msg, sizeof(msg));
	ssize_t w = send(fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	/* No slot, so no lingering: but what the client sent already is read,
	 * so that the close sends a FIN after the reply rather than a reset. */
	shutdown(fd, SHUT_WR);
	char sink[4096];
	for (int i = 0; i < 4 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
	stat_add(&sh->stats.conns_refused, 1);
}

/* The client's address from a PROXY header, as a socket address. */
static void proxy_addr(const struct proxy_info *pi, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (pi->family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, pi->src, 4);
		s4->sin_port = htons(pi->src_port);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, pi->src, 16);
		s6->sin6_port = htons(pi->src_port);
	}
}

/*
 * PH_PROXY: looks for the PROXY header at the start of the input (it is at
 * most PROXY_HEADER_MAX bytes, copied once to parse it). A whole header
 * gives the connection the client's address, then the session starts; a bad
 * one ends the connection with 421 and a log line saying why.
 */
void admit_proxy_input(struct shard *sh, struct conn *c)
{
	uint8_t hdr[PROXY_HEADER_MAX];
	size_t n = 0;
	uint32_t off = c->in.off;
	for (uint16_t b = c->in.head; b != BUF_NONE && n < sizeof(hdr); b = sh->next[b]) {
		size_t take = sh->len[b] - off;
		if (take > sizeof(hdr) - n)
			take = sizeof(hdr) - n;
		memcpy(hdr + n, bufpool_addr(sh, b) + off, take);
		n += take;
		off = 0;
	}
	struct proxy_info pi;
	const char *why;
	int r = proxy_parse(hdr, n, &pi, &why);
	if (r == PROXY_NEED_MORE)
		return;
	if (r == PROXY_INVALID) {
		char esc[LOG_CLIENT_TEXT_MAX * 4 + 8];
		log_escape(esc, sizeof(esc), (const char *)hdr, n < 64 ? n : 64, 64);
		log_line("proxy error balancer=%s port=%u error=\"%s\" start=\"%s\"", c->addr,
			 c->port, why, esc);
		stat_add(&sh->stats.proxy_errors, 1);
		conn_end(sh, c, SMTP_END_PROXY, "proxy-error");
		return;
	}
	/* Consume the header's bytes. */
	for (size_t left = (size_t)r; left > 0 && c->in.head != BUF_NONE;) {
		size_t avail = sh->len[c->in.head] - c->in.off;
		if (avail > left) {
			c->in.off += (uint32_t)left;
			break;
		}
		left -= avail;
		bufpool_pop(sh, &c->in);
	}
	if (pi.has_addr) {
		struct sockaddr_storage ss;
		proxy_addr(&pi, &ss);
		admit_set_addr(c, &ss);
		uint32_t bucket;
		if (!admit_rate(sh, &ss)) {
			stat_add(&sh->stats.conns_refused, 1);
			conn_end(sh, c, SMTP_END_CONN_RATE, "rate-limit");
			return;
		}
		if (!admit_ip(sh, &ss, &bucket)) {
			stat_add(&sh->stats.conns_refused, 1);
			conn_end(sh, c, SMTP_END_IP_LIMIT, "per-ip-limit");
			return;
		}
		c->ip_bucket = bucket;
	}
	conn_session_start(sh, c);
}

void admit_pregreet_done(struct shard *sh, struct conn *c)
{
	if (conn_ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return;
	}
	c->flags &= (uint16_t) ~(C_DNS_WAIT | C_GREET_WAIT);
	conn_enter(sh, c, PH_SESSION);
	struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
	smtp_greet(&c->smtp, &out);
	c->out_len = (uint32_t)out.len;
	conn_set_deadline(sh, c);
	conn_mark_dirty(sh, c);
	if (c->in.n || c->ct.n)
		conn_process(sh, c); /* commands sent before the greeting (no pregreet_wait) */
}

/* When the timer wheel gives up on the DNS lists: the resolver answers
 * within dnsbl_timeout of the request, which came at most proxy_timeout
 * after the accept; two seconds more for the wheel's granularity. */
static uint64_t dnsbl_backstop_s(const struct shard *sh, const struct conn *c)
{
	uint64_t s = c->start_ms / 1000 + (sh->cfg->dnsbl_timeout_ms + 999) / 1000 + 2;
	if (sh->cfg->proxy_protocol != PROXY_PROTOCOL_NONE)
		s += sh->cfg->proxy_timeout;
	return s;
}

void admit_pregreet_expire(struct shard *sh, struct conn *c)
{
	if (c->flags & C_GREET_WAIT) {
		c->flags &= (uint16_t)~C_GREET_WAIT;
		if (c->flags & C_DNS_WAIT) {
			uint64_t at = dnsbl_backstop_s(sh, c);
			timer_set(&sh->wheel, conn_slot(sh, c),
				  at > sh->now_s ? at : sh->now_s + 1);
			return;
		}
	} else if (c->flags & C_DNS_WAIT) {
		log_line("dnsbl error client=%s error=\"no answer from the resolver\"", c->addr);
	}
	admit_pregreet_done(sh, c);
}

/* Applies a verdict: counts, logs a listed client, and blocks it under dnsbl_action reject. */
static void dnsbl_apply(struct shard *sh, struct conn *c, const struct dnsbl_verdict *v)
{
	const struct config *cfg = sh->cfg;
	const struct dnsbl_site *top = NULL;
	char sites[512];
	size_t off = 0;
	bool allow = false;
	sites[0] = 0;
	for (unsigned i = 0; i < cfg->ndnsbl_sites && i < 32; i++) {
		if (!(v->matched & (1u << i)))
			continue;
		const struct dnsbl_site *s = &cfg->dnsbl_sites[i];
		if (s->weight < 0)
			allow = true;
		else if (!top || s->weight > top->weight)
			top = s;
		if (off < sizeof(sites)) {
			int n = snprintf(sites + off, sizeof(sites) - off, "%s%s*%d",
					 off ? "," : "", s->zone, s->weight);
			off += n > 0 ? (size_t)n : 0;
		}
	}
	if (allow)
		stat_add(&sh->stats.dnsbl_allowlisted, 1);
	if (v->score < (int32_t)cfg->dnsbl_threshold || !top)
		return;
	stat_add(&sh->stats.dnsbl_listed, 1);
	bool reject = cfg->dnsbl_action == DNSBL_REJECT;
	log_line("dnsbl listed client=%s score=%d sites=%s action=%s", c->addr, v->score, sites,
		 reject ? "reject" : "ignore");
	if (reject)
		c->smtp.blocked = top->zone;
}

/* Whether the client is in dnsbl_exceptions. */
static bool dnsbl_exempt(const struct config *cfg, const uint8_t bin[16])
{
	return cfg->ndnsbl_exceptions &&
	       cidr_list_match(cfg->dnsbl_exceptions, cfg->ndnsbl_exceptions, true, bin);
}

bool admit_dnsbl_begin(struct shard *sh, struct conn *c)
{
	if (!sh->dnsbl || !(c->flags & C_HAS_BIN) || dnsbl_exempt(sh->cfg, c->bin))
		return false;
	struct dnsbl_verdict v;
	if (dnsbl_cache_get(sh->dnsbl, c->bin, sh->now_s, &v)) {
		stat_add(&sh->stats.dnsbl_cache_hits, 1);
		dnsbl_apply(sh, c, &v);
		return false;
	}
	struct dnsbl_req *r = malloc(sizeof(*r));
	if (!r)
		return false;
	memcpy(r->addr, c->bin, sizeof(r->addr));
	r->cookie = (uint64_t)conn_slot(sh, c) << 32 | c->gen;
	if (dnsbl_request(sh->dnsbl, sh->id, r) != 0) {
		free(r);
		stat_add(&sh->stats.dnsbl_overflow, 1);
		return false;
	}
	c->flags |= C_DNS_WAIT;
	return true;
}

void admit_dnsbl_reap(struct shard *sh)
{
	struct dnsbl_req *r;
	if (!sh->dnsbl)
		return;
	while ((r = dnsbl_reap(sh->dnsbl, sh->id)) != NULL) {
		uint32_t slot = (uint32_t)(r->cookie >> 32), gen = (uint32_t)r->cookie;
		struct conn *c = slot < sh->cap ? &sh->conns[slot] : NULL;
		if (c && c->gen == gen && c->phase == PH_PREGREET && (c->flags & C_DNS_WAIT)) {
			c->flags &= (uint16_t)~C_DNS_WAIT;
			dnsbl_apply(sh, c, &r->v);
			if (!(c->flags & C_GREET_WAIT))
				admit_pregreet_done(sh, c);
		}
		free(r);
	}
}

/* The client talked before the greeting: refused; nothing it sent is read. */
void admit_pregreet_talker(struct shard *sh, struct conn *c)
{
	conn_end(sh, c, SMTP_END_PREGREET, "pregreet");
}
