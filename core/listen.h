/*
 * listen.h - listening TCP sockets (listen.c), for the shards and the
 * metrics endpoint.
 */
#ifndef MXRING_LISTEN_H
#define MXRING_LISTEN_H

#include <stdbool.h>

#include "config.h"

/*
 * A listening TCP socket on la (its descriptor, or -errno). With reuseport,
 * one of a SO_REUSEPORT group; without, a probe that fails when anything
 * listens on la already.
 */
int listen_socket(const struct listen_addr *la, bool reuseport);

#endif
