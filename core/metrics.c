/*
 * metrics.c - the Prometheus text endpoint (see metrics.h).
 *
 * A scrape is rare (every few seconds) and small, so one blocking thread
 * serves it, off the shards: poll for a connection, read the request head
 * (at most REQ_MAX bytes), answer, close. Every wait polls the stop pipe too
 * and the whole exchange has REQ_DEADLINE_MS, so a client that stalls holds
 * the endpoint that long at most and never delays the shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "metrics.h"
#include "shard.h"

#define REQ_MAX		4096	   /* request line and headers */
#define REQ_DEADLINE_MS 2000	   /* for one whole exchange */
#define PAGE_MAX	(64 << 10) /* the rendered page */
#define HEAD_MAX	256
#define DRAIN_MAX	(256 << 10) /* input read and dropped after a response */

struct metrics {
	pthread_t thread;
	int lfd;
	int stop[2]; /* a pipe: written once by metrics_stop */
	metrics_render_fn render;
	void *arg;
	char req[REQ_MAX];
	char page[PAGE_MAX];
};

/* Waits for events on fd until deadline; false on the deadline, stop or error. */
static bool wait_fd(struct metrics *m, int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = mono_ms();
		if (now >= deadline)
			return false;
		struct pollfd p[2] = {{.fd = fd, .events = events},
				      {.fd = m->stop[0], .events = POLLIN}};
		int n = poll(p, 2, (int)(deadline - now));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || p[1].revents)
			return false;
		return (p[0].revents & (events | POLLHUP | POLLERR)) != 0;
	}
}

/* Sends all of buf before the deadline; false otherwise. */
static bool send_all(struct metrics *m, int fd, const char *buf, size_t len, uint64_t deadline)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    wait_fd(m, fd, POLLOUT, deadline))
			continue;
		return false;
	}
	return true;
}

/* One response and its body; the page gets Prometheus's content type. */
static void respond(struct metrics *m, int fd, const char *status, const char *extra,
		    const char *body, size_t len, uint64_t deadline)
{
	char head[HEAD_MAX];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
			 "Connection: close\r\n\r\n",
			 status,
			 body == m->page ? "text/plain; version=0.0.4; charset=utf-8"
					 : "text/plain; charset=utf-8",
			 len, extra);
	if (n < 0 || (size_t)n >= sizeof(head))
		return;
	if (send_all(m, fd, head, (size_t)n, deadline))
		(void)send_all(m, fd, body, len, deadline);
}

/* Reads the request head and answers it, within deadline. */
static void serve_request(struct metrics *m, int fd, uint64_t deadline)
{
	size_t len = 0;
	char *end = NULL;
	while (!end) {
		if (len == sizeof(m->req)) {
			static const char msg[] = "request head too large\n";
			respond(m, fd, "431 Request Header Fields Too Large", "", msg,
				sizeof(msg) - 1, deadline);
			return;
		}
		if (!wait_fd(m, fd, POLLIN, deadline))
			return;
		ssize_t n = recv(fd, m->req + len, sizeof(m->req) - len, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (n <= 0)
			return; /* closed or failed before a whole request */
		size_t from = len > 3 ? len - 3 : 0;
		len += (size_t)n;
		for (size_t i = from; i + 1 < len && !end; i++) {
			if (m->req[i] == '\n' && m->req[i + 1] == '\n')
				end = m->req + i;
			else if (i + 3 < len && memcmp(m->req + i, "\r\n\r\n", 4) == 0)
				end = m->req + i;
		}
	}
	/* The request line: METHOD SP TARGET SP HTTP/1.x */
	const char *line_end = memchr(m->req, '\n', len); /* the head's end has one */
	size_t ll = (size_t)(line_end - m->req);
	if (ll > 0 && m->req[ll - 1] == '\r')
		ll--;
	const char *sp1 = memchr(m->req, ' ', ll);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', ll - (size_t)(sp1 + 1 - m->req)) : NULL;
	if (!sp1 || !sp2 || (size_t)(m->req + ll - (sp2 + 1)) < 8 ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		static const char msg[] = "bad request line\n";
		respond(m, fd, "400 Bad Request", "", msg, sizeof(msg) - 1, deadline);
		return;
	}
	size_t mlen = (size_t)(sp1 - m->req);
	if (mlen != 3 || memcmp(m->req, "GET", 3) != 0) {
		static const char msg[] = "only GET\n";
		respond(m, fd, "405 Method Not Allowed", "Allow: GET\r\n", msg, sizeof(msg) - 1,
			deadline);
		return;
	}
	const char *target = sp1 + 1;
	size_t tlen = (size_t)(sp2 - target);
	const char *q = memchr(target, '?', tlen);
	if (q)
		tlen = (size_t)(q - target); /* Prometheus may add parameters */
	if (tlen != 8 || memcmp(target, "/metrics", 8) != 0) {
		static const char msg[] = "the metrics are at /metrics\n";
		respond(m, fd, "404 Not Found", "", msg, sizeof(msg) - 1, deadline);
		return;
	}
	size_t plen = m->render(m->arg, m->page, sizeof(m->page));
	respond(m, fd, "200 OK", "", m->page, plen, deadline);
}

/*
 * After the response: a FIN, then what the client still sends is read and
 * dropped until its EOF (within the deadline and DRAIN_MAX), since closing
 * with unread input would reset the connection and could destroy the
 * response before the client reads it (an oversized head, a POST body).
 */
static void drain(struct metrics *m, int fd, uint64_t deadline)
{
	size_t dropped = 0;
	shutdown(fd, SHUT_WR);
	while (dropped < DRAIN_MAX && wait_fd(m, fd, POLLIN, deadline)) {
		ssize_t n = recv(fd, m->req, sizeof(m->req), MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (n <= 0)
			return;
		dropped += (size_t)n;
	}
}

/* Reads the request head and answers it. */
static void serve(struct metrics *m, int fd)
{
	uint64_t deadline = mono_ms() + REQ_DEADLINE_MS;
	serve_request(m, fd, deadline);
	drain(m, fd, deadline);
}

static void *metrics_main(void *arg)
{
	struct metrics *m = arg;
	for (;;) {
		struct pollfd p[2] = {{.fd = m->lfd, .events = POLLIN},
				      {.fd = m->stop[0], .events = POLLIN}};
		int n = poll(p, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || p[1].revents)
			break;
		int fd = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			/* Out of files or memory: the connection stays queued, so pause
			 * rather than spin on it (the stop pipe still ends the pause). */
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				(void)poll(&p[1], 1, 100);
			continue;
		}
		serve(m, fd);
		close(fd);
	}
	return NULL;
}

int metrics_start(int lfd, metrics_render_fn render, void *arg, struct metrics **out)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m) {
		close(lfd);
		return -ENOMEM;
	}
	m->render = render;
	m->arg = arg;
	m->stop[0] = m->stop[1] = -1;
	m->lfd = lfd;
	int rc = 0;
	if (fcntl(m->lfd, F_SETFL, O_NONBLOCK) != 0 || pipe2(m->stop, O_CLOEXEC) != 0)
		rc = -errno;
	else
		rc = -pthread_create(&m->thread, NULL, metrics_main, m);
	if (rc) {
		close(m->lfd);
		if (m->stop[0] >= 0) {
			close(m->stop[0]);
			close(m->stop[1]);
		}
		free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	ssize_t n;
	do
		n = write(m->stop[1], "x", 1);
	while (n < 0 && errno == EINTR);
	pthread_join(m->thread, NULL);
	close(m->lfd);
	close(m->stop[0]);
	close(m->stop[1]);
	free(m);
}
