/*
 * notify.h - telling a service manager how start-up and reloads go
 * (systemd's Type=notify protocol, notify.c).
 */
#ifndef MXRING_NOTIFY_H
#define MXRING_NOTIFY_H

/*
 * Connects to the datagram socket that $NOTIFY_SOCKET names (a path, or
 * "@name" in the abstract namespace) and takes the variable out of the
 * environment. Called while still root (the socket may be root's). Without
 * the variable, or when the socket cannot be reached (a message to stderr
 * then), every notify_send does nothing.
 */
void notify_open(void);

/* Sends one state message ("READY=1\nSTATUS=...") as one datagram; a lost
 * one is not retried (the manager then times the start out, as it should). */
void notify_send(const char *state);

/* Like notify_send, for RELOADING=1 with the CLOCK_MONOTONIC time in
 * microseconds that systemd 253 and later want beside it. */
void notify_reloading(void);

#endif
