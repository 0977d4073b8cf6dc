/*
 * metrics.h - the Prometheus text endpoint: GET /metrics over HTTP/1.x on
 * metrics_listen, served by one thread of its own, one request at a time,
 * each within a fixed deadline. The page is made by the caller's render.
 */
#ifndef MXRING_METRICS_H
#define MXRING_METRICS_H

#include <stddef.h>

#include "config.h"

/* Writes the page (Prometheus text format 0.0.4) into buf[0..cap); returns
 * its length, at most cap. Called on the metrics thread. */
typedef size_t (*metrics_render_fn)(void *arg, char *buf, size_t cap);

struct metrics;

/* Starts the thread serving lfd, a listening socket of listen_socket(la,
 * false) bound before the privileges were dropped; it owns lfd from then on,
 * also when it fails. 0, or -errno. */
int metrics_start(int lfd, metrics_render_fn render, void *arg, struct metrics **out)
    __attribute__((warn_unused_result));

/* Stops the thread (a request being served is cut) and frees m; NULL is a no-op. */
void metrics_stop(struct metrics *m);

#endif
