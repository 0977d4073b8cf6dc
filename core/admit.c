/*
 * admit.c - who may open a session: connections per client address
 * (max_connections_per_ip, shared by all shards), refusals at accept, the
 * PROXY protocol header of a balancer (proxy_protocol), and the wait before
 * the greeting (pregreet_wait, the pre-greeting test of Postfix's
 * postscreen). Every refusal's reply text is the engine's (smtp_end).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "proxy.h"
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
}

void admit_refuse(struct shard *sh, int fd, enum smtp_end why)
{
	char msg[REPLY_MAX];
	size_t n = smtp_end_reply(sh->sconf, why, msg, sizeof(msg));
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
	conn_enter(sh, c, PH_SESSION);
	struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
	smtp_greet(&c->smtp, &out);
	c->out_len = (uint32_t)out.len;
	conn_set_deadline(sh, c);
	conn_mark_dirty(sh, c);
}

/* The client talked before the greeting: refused; nothing it sent is read. */
void admit_pregreet_talker(struct shard *sh, struct conn *c)
{
	conn_end(sh, c, SMTP_END_PREGREET, "pregreet");
}
