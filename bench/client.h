/*
 * client.h - one mxring-bench client thread: an io_uring and its connections.
 *
 * client_new allocates everything the thread will use (connections, their
 * buffers, histograms); client_run is the thread body: it creates the ring
 * (from the thread itself: DEFER_TASKRUN wants one submitter) and runs until
 * every connection is finished, the run is stopped, or the ring fails.
 */
#ifndef MXRING_BENCH_CLIENT_H
#define MXRING_BENCH_CLIENT_H

#include "bench.h"
#include "hist.h"

struct client;

/* Connections first_conn .. first_conn + nconn - 1 of the run. NULL with err set on failure. */
struct client *client_new(struct bench_run *run, unsigned index, unsigned first_conn,
			  unsigned nconn, char *err, size_t errcap);
void client_free(struct client *c);

/* The thread body. 0, or -errno when the ring could not be set up or failed. */
int client_run(struct client *c);

struct bench_counters *client_counters(struct client *c);
const struct hist *client_hist(const struct client *c, enum bench_lat l);
/* Version and cipher of the thread's first handshake ("" if none); valid after client_run. */
const char *client_tls_desc(const struct client *c);

#endif
