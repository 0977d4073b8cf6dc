/*
 * tls_none.c - tls.h for a build without wolfSSL (meson -Dwolfssl=disabled,
 * or no wolfSSL found): every request for TLS is refused with a clear
 * message, so a configuration that asks for STARTTLS fails at start-up.
 */
#include <errno.h>
#include <string.h>

#include "tls.h"

int tls_ctx_new(const struct config *cfg, struct tls_ctx **out, FILE *err)
{
	(void)cfg;
	*out = NULL;
	fprintf(err, "mxring: this mxring was built without wolfSSL: tls_security_level must be "
		     "none (rebuild after tools/wolfssl-build.sh, or with -Dwolfssl=system)\n");
	return -1;
}

void tls_ctx_ref(struct tls_ctx *c)
{
	(void)c;
}

void tls_ctx_unref(struct tls_ctx *c)
{
	(void)c;
}

struct tls_ctx *tls_current(void)
{
	return NULL;
}

void tls_set_current(struct tls_ctx *c)
{
	(void)c;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
	(void)ctx;
	return NULL;
}

int tls_conn_new_from_hello(const uint8_t *p, size_t len, struct tls_conn **out)
{
	(void)p, (void)len;
	*out = NULL;
	return -ENOENT;
}

void tls_conn_free(struct tls_conn *t)
{
	(void)t;
}

void tls_input(struct tls_conn *t, const struct tls_seg *seg, unsigned nseg)
{
	(void)t, (void)seg, (void)nseg;
}

size_t tls_input_used(const struct tls_conn *t)
{
	(void)t;
	return 0;
}

int tls_keep_input(struct tls_conn *t)
{
	(void)t;
	return -E2BIG;
}

bool tls_holding(const struct tls_conn *t)
{
	(void)t;
	return false;
}

const char *tls_records_mode(void)
{
	return "none";
}

bool tls_in_place(const struct tls_conn *t)
{
	(void)t;
	return false;
}

uint8_t *tls_output_take(struct tls_conn *t, size_t *len)
{
	(void)t;
	*len = 0;
	return NULL;
}

const uint8_t *tls_output(const struct tls_conn *t, size_t *len)
{
	(void)t;
	*len = 0;
	return NULL;
}

enum tls_status tls_handshake(struct tls_conn *t)
{
	(void)t;
	return TLS_ERROR;
}

enum tls_status tls_read(struct tls_conn *t, uint8_t *buf, size_t cap, size_t *n)
{
	(void)t, (void)buf, (void)cap;
	*n = 0;
	return TLS_ERROR;
}

enum tls_status tls_write(struct tls_conn *t, const uint8_t *p, size_t len)
{
	(void)t, (void)p, (void)len;
	return TLS_ERROR;
}

void tls_close_notify(struct tls_conn *t)
{
	(void)t;
}

const char *tls_describe(struct tls_conn *t, char *buf, size_t cap, int *resumed)
{
	(void)t;
	snprintf(buf, cap, "none");
	if (resumed)
		*resumed = 0;
	return buf;
}

const char *tls_cert_type(const struct tls_conn *t)
{
	(void)t;
	return "none";
}

void tls_session_cache_stats(struct sesscache_stats *out)
{
	memset(out, 0, sizeof(*out));
}

const char *tls_error(struct tls_conn *t)
{
	(void)t;
	return "built without wolfSSL";
}
