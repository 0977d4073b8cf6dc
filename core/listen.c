/*
 * listen.c - listening sockets and the multishot accept of a shard.
 *
 * Each shard has its own listening socket per address (SO_REUSEPORT): the
 * kernel spreads new connections over the shards. One multishot accept per
 * socket; when accept(2) fails for want of descriptors or memory, that
 * listener pauses for ACCEPT_PAUSE_MS rather than retrying the same failure
 * at once. A stopping or failed shard shuts its listeners down (shard.c),
 * which takes them out of the SO_REUSEPORT group.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"
#include "shard_int.h"

/*
 * A listening socket for la. With reuseport, each shard gets its own on the
 * same address (SO_REUSEPORT); without, it is a probe: it fails with
 * EADDRINUSE when anything listens there already, even another mxring whose
 * sockets would otherwise share the port and take half of its connections.
 */
int listen_socket(const struct listen_addr *la, bool reuseport)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, la->host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(la->port);
		sl = sizeof(*s4);
	} else if (inet_pton(AF_INET6, la->host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(la->port);
		sl = sizeof(*s6);
	} else {
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* Replies are batched by the shard; accepted sockets inherit this. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 4096) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/*
 * Every shard's listening sockets, made at once before the privileges are
 * dropped (port 25 needs root or CAP_NET_BIND_SERVICE; and the kernel admits
 * to a SO_REUSEPORT group only sockets of the same user). The first address
 * is probed first: nothing else may listen there.
 */
int listen_bind(const struct config *cfg, unsigned nshards, int fds[][LISTEN_MAX], FILE *err)
{
	unsigned n = cfg->nlisten + cfg->nsmtps_listen;
	for (unsigned s = 0; s < nshards; s++)
		for (unsigned i = 0; i < LISTEN_MAX; i++)
			fds[s][i] = -1;
	for (unsigned i = 0; i < n; i++) {
		const struct listen_addr *la =
		    i < cfg->nlisten ? &cfg->listen[i] : &cfg->smtps_listen[i - cfg->nlisten];
		int fd = listen_socket(la, false);
		if (fd >= 0)
			close(fd); /* the probe: nobody else listens here */
		for (unsigned s = 0; fd >= 0 && s < nshards; s++)
			fd = fds[s][i] = listen_socket(la, true);
		if (fd < 0) {
			fprintf(err, "mxring: listen %s port %u: %s\n", la->host, la->port,
				strerror(-fd));
			listen_close(fds, nshards);
			return fd;
		}
	}
	return 0;
}

void listen_close(int fds[][LISTEN_MAX], unsigned nshards)
{
	for (unsigned s = 0; s < nshards; s++)
		for (unsigned i = 0; i < LISTEN_MAX; i++)
			if (fds[s][i] >= 0) {
				close(fds[s][i]);
				fds[s][i] = -1;
			}
}

void listen_arm(struct shard *sh, unsigned li)
{
	struct io_uring_sqe *sqe = shard_sqe(sh);
	io_uring_prep_multishot_accept(sqe, sh->listen_fd[li], NULL, NULL,
				       SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_ACCEPT, li, 0));
	sh->accept_armed |= 1u << li;
}

/*
 * accept(2) failed. Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM, or anything unexpected), the connection stays in the backlog and
 * the next try fails the same way at once: the listener stops for
 * ACCEPT_PAUSE_MS (its multishot accept is cancelled), as nginx disables
 * accept for 500 ms. A failure of one connection alone (ECONNABORTED, a
 * firewall's EPERM, a network error) lets the accept go on. Either way the
 * errors are logged at most once per ACCEPT_LOG_MS, with their count.
 */
static void accept_failed(struct shard *sh, unsigned li, int err, bool more)
{
	sh->accept_errors++;
	uint64_t now = mono_coarse_ms();
	if (now - sh->accept_err_log_ms >= ACCEPT_LOG_MS) {
		log_line("accept error shard=%u error=%s count=%llu%s", sh->id, strerror(-err),
			 (unsigned long long)sh->accept_errors,
			 err == -EMFILE || err == -ENFILE ? " (out of descriptors: paused)" : "");
		sh->accept_errors = 0;
		sh->accept_err_log_ms = now;
	}
	switch (err) {
	case -ECONNABORTED:
	case -EPERM:
	case -EPROTO:
	case -ENETDOWN:
	case -ENETUNREACH:
	case -EHOSTDOWN:
	case -EHOSTUNREACH:
	case -ENONET:
	case -ETIMEDOUT:
		return; /* the next connection may be fine */
	default:
		break;
	}
	if (sh->accept_paused & (1u << li))
		return;
	sh->accept_paused |= 1u << li;
	if (more) {
		struct io_uring_sqe *sqe = shard_sqe(sh);
		io_uring_prep_cancel64(sqe, ud_encode(OP_ACCEPT, li, 0), 0);
		io_uring_sqe_set_data64(sqe, ud_encode(OP_CANCEL, UD_SLOT_NONE, 0));
	}
	struct io_uring_sqe *sqe = shard_sqe(sh);
	sh->accept_pause.tv_sec = 0;
	sh->accept_pause.tv_nsec = (long long)ACCEPT_PAUSE_MS * 1000000;
	io_uring_prep_timeout(sqe, &sh->accept_pause, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_ACCEPT_RESUME, li, 0));
}

/* The pause is over: accepting again (the multishot accept ended by now). */
void listen_on_resume(struct shard *sh, unsigned li)
{
	sh->accept_paused &= ~(1u << li);
	if (!sh->stopping && !(sh->accept_armed & (1u << li)))
		listen_arm(sh, li);
}

void listen_on_accept(struct shard *sh, struct io_uring_cqe *cqe, unsigned li)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more)
		sh->accept_armed &= ~(1u << li);
	if (cqe->res < 0 && cqe->res != -ECANCELED && !sh->stopping)
		accept_failed(sh, li, cqe->res, more);
	if (!more && !sh->stopping && !(sh->accept_paused & (1u << li)))
		listen_arm(sh, li);
	if (cqe->res < 0)
		return;
	int fd = cqe->res;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	bool peer = getpeername(fd, (struct sockaddr *)&ss, &sl) == 0;
	if (sh->stopping || sh->free_head == NONE32) {
		admit_refuse(sh, fd, SMTP_END_CONN_LIMIT, NULL);
		return;
	}
	bool proxied = sh->cfg->proxy_protocol != PROXY_PROTOCOL_NONE;
	/* Behind a balancer the per-address limit waits for the real address. */
	uint32_t bucket = IP_BUCKETS;
	if (!proxied && peer && !admit_rate(sh, &ss)) {
		char text[CLIENT_ADDR_MAX] = "";
		const void *a = ss.ss_family == AF_INET
				    ? (const void *)&((const struct sockaddr_in *)&ss)->sin_addr
				    : (const void *)&((const struct sockaddr_in6 *)&ss)->sin6_addr;
		inet_ntop(ss.ss_family, a, text, sizeof(text));
		admit_refuse(sh, fd, SMTP_END_CONN_RATE, text);
		return;
	}
	if (!proxied && peer && !admit_ip(sh, &ss, &bucket)) {
		admit_refuse(sh, fd, SMTP_END_IP_LIMIT, NULL);
		return;
	}
	struct conn *c = conn_open(sh, fd, li, &ss, peer, bucket);
	if (conn_ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return;
	}
	if (proxied) {
		/* Nothing is sent before the balancer's header has named the client. */
		conn_enter(sh, c, PH_PROXY);
		conn_arm_recv(sh, c);
		timer_set(&sh->wheel, conn_slot(sh, c), sh->now_s + sh->cfg->proxy_timeout + 1);
		return;
	}
	conn_session_start(sh, c);
}
