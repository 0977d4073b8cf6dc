/*
 * listen.h - listening TCP sockets (listen.c), for the shards and the
 * metrics endpoint.
 */
#ifndef MXRING_LISTEN_H
#define MXRING_LISTEN_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/*
 * A listening TCP socket on la (its descriptor, or -errno). With reuseport,
 * one of a SO_REUSEPORT group; without, a probe that fails when anything
 * listens on la already.
 */
int listen_socket(const struct listen_addr *la, bool reuseport);

/*
 * For each of nshards shards, a socket on every cfg->listen address, then
 * every cfg->smtps_listen one: fds[shard][index]; unused entries are -1.
 * 0, or -errno after a message to err (nothing is left open then).
 */
int listen_bind(const struct config *cfg, unsigned nshards, int fds[][LISTEN_MAX], FILE *err);

/* Closes what listen_bind left in fds (the entries not -1). */
void listen_close(int fds[][LISTEN_MAX], unsigned nshards);

#endif
