/*
 * tlsclient_none.c - tlsclient.h for a build without wolfSSL (meson
 * -Dwolfssl=disabled, or no wolfSSL found).
 *
 * Every entry point exists so its users link; tlsc_available() is false and
 * tlsc_ctx_new fails with that reason, so no connection ever reaches the
 * rest (mxring-bench refuses --starttls and --tls up front).
 */
#include <errno.h>
#include <stdio.h>

#include "tlsclient.h"

bool tlsc_available(void)
{
	return false;
}

const char *tlsc_library(void)
{
	return "none (built without wolfSSL)";
}

int tlsc_ctx_new(const struct tlsc_opts *o, struct tlsc_ctx **out, char *err, size_t errcap)
{
	(void)o;
	*out = NULL;
	snprintf(err, errcap, "built without wolfSSL");
	return -ENOTSUP;
}

void tlsc_ctx_free(struct tlsc_ctx *c)
{
	(void)c;
}

struct tlsc_conn *tlsc_conn_new(struct tlsc_ctx *c, struct tlsc_session *resume)
{
	(void)c;
	(void)resume;
	return NULL;
}

void tlsc_conn_free(struct tlsc_conn *t)
{
	(void)t;
}

void tlsc_input(struct tlsc_conn *t, const uint8_t *in, size_t len)
{
	(void)t;
	(void)in;
	(void)len;
}

size_t tlsc_input_used(const struct tlsc_conn *t)
{
	(void)t;
	return 0;
}

const uint8_t *tlsc_output(const struct tlsc_conn *t, size_t *len)
{
	(void)t;
	*len = 0;
	return NULL;
}

void tlsc_output_consumed(struct tlsc_conn *t, size_t len)
{
	(void)t;
	(void)len;
}

enum tlsc_status tlsc_handshake(struct tlsc_conn *t)
{
	(void)t;
	return TLSC_ERROR;
}

bool tlsc_resumed(const struct tlsc_conn *t)
{
	(void)t;
	return false;
}

bool tlsc_verified(const struct tlsc_conn *t)
{
	(void)t;
	return false;
}

enum tlsc_status tlsc_read(struct tlsc_conn *t, uint8_t *buf, size_t cap, size_t *n)
{
	(void)t;
	(void)buf;
	(void)cap;
	*n = 0;
	return TLSC_ERROR;
}

enum tlsc_status tlsc_write(struct tlsc_conn *t, const uint8_t *p, size_t len)
{
	(void)t;
	(void)p;
	(void)len;
	return TLSC_ERROR;
}

const char *tlsc_describe(struct tlsc_conn *t, char *buf, size_t cap)
{
	(void)t;
	snprintf(buf, cap, "none");
	return buf;
}

const char *tlsc_error(struct tlsc_conn *t, char *buf, size_t cap)
{
	(void)t;
	snprintf(buf, cap, "built without wolfSSL");
	return buf;
}

void tlsc_session_save(struct tlsc_conn *t, struct tlsc_session **slot)
{
	(void)t;
	(void)slot;
}

void tlsc_session_free(struct tlsc_session *s)
{
	(void)s;
}
