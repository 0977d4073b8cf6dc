/*
 * notify.c - systemd's Type=notify protocol without libsystemd: one
 * AF_UNIX datagram per state change, to the socket in $NOTIFY_SOCKET
 * (sd_notify(3) documents the protocol; the messages are text lines).
 * mxring sends READY=1 once every shard listens, RELOADING=1 and READY=1
 * around a SIGHUP, STOPPING=1 when it stops.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"

static int notify_fd = -1;

void notify_open(void)
{
	const char *name = getenv("NOTIFY_SOCKET");
	if (!name || !*name)
		return;
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	size_t len = strlen(name);
	if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sa.sun_path)) {
		fprintf(stderr, "mxring: NOTIFY_SOCKET %s: not a socket path; no notifications\n",
			name);
		unsetenv("NOTIFY_SOCKET");
		return;
	}
	memcpy(sa.sun_path, name, len);
	if (name[0] == '@')
		sa.sun_path[0] = 0; /* the abstract namespace */
	socklen_t sl =
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '@' ? 0 : 1));
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sl) != 0) {
		fprintf(stderr, "mxring: NOTIFY_SOCKET %s: %s; no notifications\n", name,
			strerror(errno));
		if (fd >= 0)
			close(fd);
	} else {
		notify_fd = fd;
	}
	/* Nothing started from here must talk to the manager in our name. */
	unsetenv("NOTIFY_SOCKET");
}

void notify_send(const char *state)
{
	if (notify_fd < 0)
		return;
	ssize_t n;
	do
		n = send(notify_fd, state, strlen(state), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
}

void notify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	char msg[96];
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
		     (unsigned long long)ts.tv_nsec / 1000);
	notify_send(msg);
}
