/*
 * tls-limits.c - the crypto limit that mxring's TLS figures are compared to.
 *
 * Runs TLS handshakes and bulk records between a client and a server in the
 * same thread, over memory (no sockets, no io_uring), with the wolfSSL build
 * mxring links and the same server settings (TLS 1.2/1.3, mxring's cipher
 * order, X25519 then P-256). The client offers the groups of --group (both,
 * in that order, by default): the key exchange the server then does is the
 * one printed as group=. Only the time spent inside the server's calls
 * (wolfSSL_accept, wolfSSL_read) is counted, with CLOCK_THREAD_CPUTIME_ID,
 * so the figures are server handshakes and server decryption per CPU-second:
 * the most one core of a server could do with this library. The server's
 * wolfSSL_new/wolfSSL_free are timed apart (a server pays them per session).
 *
 *   tls-limits CERT KEY [--handshakes N] [--tls 1.2|1.3] [--resume none|tickets]
 *              [--bulk-mb M] [--group x25519|p256|both]
 *
 * Prints one key=value line. Bounds: the in-memory pipes hold 64 KiB; a
 * handshake that needs more than 64 rounds is an error.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIPE_MAX   65536
#define ROUNDS_MAX 64
#define RECORD	   16384

#define CIPHERS                                                                                    \
	"TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct pipe {
	uint8_t b[PIPE_MAX];
	size_t len;
};

static struct pipe c2s, s2c;
static double server_cpu; /* inside wolfSSL_accept / wolfSSL_read */
static double server_new; /* inside the server's wolfSSL_new / wolfSSL_free */

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int pipe_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct pipe *p = ctx;
	(void)ssl;
	if (p->len == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = (size_t)sz < p->len ? (size_t)sz : p->len;
	memcpy(buf, p->b, n);
	memmove(p->b, p->b + n, p->len - n);
	p->len -= n;
	return (int)n;
}

static int pipe_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct pipe *p = ctx;
	(void)ssl;
	if (p->len + (size_t)sz > PIPE_MAX)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(p->b + p->len, buf, (size_t)sz);
	p->len += (size_t)sz;
	return sz;
}

static void die(const char *what)
{
	fprintf(stderr, "tls-limits: %s\n", what);
	exit(1);
}

static bool want(WOLFSSL *ssl, int ret)
{
	int e = wolfSSL_get_error(ssl, ret);
	return e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE;
}

/* One handshake; server time is added to server_cpu. */
static void handshake(WOLFSSL *c, WOLFSSL *s)
{
	bool cdone = false, sdone = false;
	for (int r = 0; r < ROUNDS_MAX && !(cdone && sdone); r++) {
		if (!cdone) {
			int ret = wolfSSL_connect(c);
			if (ret == WOLFSSL_SUCCESS)
				cdone = true;
			else if (!want(c, ret))
				die("client handshake failed");
		}
		if (!sdone) {
			double t0 = cpu_now();
			int ret = wolfSSL_accept(s);
			server_cpu += cpu_now() - t0;
			if (ret == WOLFSSL_SUCCESS)
				sdone = true;
			else if (!want(s, ret))
				die("server handshake failed");
		}
	}
	if (!(cdone && sdone))
		die("handshake did not finish");
}

static WOLFSSL *side(WOLFSSL_CTX *ctx, struct pipe *in, struct pipe *out)
{
	WOLFSSL *ssl = wolfSSL_new(ctx);
	if (!ssl)
		die("wolfSSL_new");
	wolfSSL_SetIOReadCtx(ssl, in);
	wolfSSL_SetIOWriteCtx(ssl, out);
	return ssl;
}

int main(int argc, char **argv)
{
	long n = 2000, bulk_mb = 0;
	const char *version = "1.3", *resume = "none", *group = "both";
	if (argc < 3)
		die("usage: tls-limits CERT KEY [--handshakes N] [--tls 1.2|1.3] "
		    "[--resume none|tickets] [--bulk-mb M] [--group x25519|p256|both]");
	for (int i = 3; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--handshakes"))
			n = strtol(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--tls"))
			version = argv[i + 1];
		else if (!strcmp(argv[i], "--resume"))
			resume = argv[i + 1];
		else if (!strcmp(argv[i], "--bulk-mb"))
			bulk_mb = strtol(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--group"))
			group = argv[i + 1];
		else
			die("unknown option");
	}
	if (n < 1 || n > 10000000 || bulk_mb < 0 || bulk_mb > 100000)
		die("--handshakes 1..10000000, --bulk-mb 0..100000");
	bool v12 = !strcmp(version, "1.2");
	bool tickets = !strcmp(resume, "tickets");

	wolfSSL_Init();
	WOLFSSL_CTX *sctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	WOLFSSL_CTX *cctx =
	    wolfSSL_CTX_new(v12 ? wolfTLSv1_2_client_method() : wolfTLSv1_3_client_method());
	if (!sctx || !cctx)
		die("wolfSSL_CTX_new");
	wolfSSL_CTX_SetMinVersion(sctx, WOLFSSL_TLSV1_2);
	if (wolfSSL_CTX_use_certificate_chain_file(sctx, argv[1]) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_PrivateKey_file(sctx, argv[2], WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
		die("cannot load the certificate or key");
	wolfSSL_CTX_set_cipher_list(sctx, CIPHERS);
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	wolfSSL_CTX_set_groups(sctx, groups, 2);
	wolfSSL_CTX_set_verify(cctx, WOLFSSL_VERIFY_NONE, NULL);
	int *offer = groups, noffer = 2;
	if (!strcmp(group, "p256"))
		offer = groups + 1, noffer = 1;
	else if (!strcmp(group, "x25519"))
		noffer = 1;
	else if (strcmp(group, "both") != 0)
		die("--group x25519, p256 or both");
	if (wolfSSL_CTX_set_groups(cctx, offer, noffer) != WOLFSSL_SUCCESS) {
		/* A TLS 1.2 client of wolfSSL 5.5 takes the groups this way only. */
		for (int g = 0; g < noffer; g++)
			if (wolfSSL_CTX_UseSupportedCurve(cctx, (word16)offer[g]) !=
			    WOLFSSL_SUCCESS)
				die("wolfSSL_CTX_set_groups");
	}
	wolfSSL_CTX_SetIORecv(sctx, pipe_recv);
	wolfSSL_CTX_SetIOSend(sctx, pipe_send);
	wolfSSL_CTX_SetIORecv(cctx, pipe_recv);
	wolfSSL_CTX_SetIOSend(cctx, pipe_send);

	WOLFSSL_SESSION *sess = NULL;
	long resumed = 0;
	char kx[32] = "none";
	for (long i = 0; i < n; i++) {
		c2s.len = s2c.len = 0;
		WOLFSSL *c = side(cctx, &s2c, &c2s);
		double tn = cpu_now();
		WOLFSSL *s = side(sctx, &c2s, &s2c);
		server_new += cpu_now() - tn;
		if (tickets) {
			wolfSSL_UseSessionTicket(c);
			if (sess)
				wolfSSL_set_session(c, sess);
		}
		handshake(c, s);
		if (!v12) {
			/* TLS 1.3 tickets come after the handshake: let the client read them. */
			char b[1];
			double t0 = cpu_now();
			(void)wolfSSL_read(s, b, 0);
			server_cpu += cpu_now() - t0;
			(void)wolfSSL_read(c, b, 1);
		}
		resumed += wolfSSL_session_reused(s);
		if (i == 0) {
			const char *g = wolfSSL_get_curve_name(s);
			snprintf(kx, sizeof(kx), "%s", g ? g : "none");
		}
		/* Every resumption uses the first session's ticket. Chaining each
		 * newest ticket would count wolfSSL's one-byte ticket nonce up, and
		 * wolfSSL's default ticket handling (this program's, unlike mxring's
		 * callback, which restarts a chain at 200) fails past 255 since 5.9. */
		if (tickets && !sess)
			sess = wolfSSL_get1_session(c);
		if (i == n - 1 && bulk_mb > 0) {
			/* Bulk: the client seals 16 KiB records, the server opens them. */
			static uint8_t buf[RECORD];
			double open_cpu = 0;
			long records = bulk_mb * 1024 * 1024 / RECORD;
			for (long r = 0; r < records; r++) {
				if (wolfSSL_write(c, buf, RECORD) != RECORD)
					die("client write");
				size_t got = 0;
				while (got < RECORD) {
					double t0 = cpu_now();
					int k = wolfSSL_read(s, buf, RECORD);
					open_cpu += cpu_now() - t0;
					if (k <= 0)
						die("server read");
					got += (size_t)k;
				}
			}
			printf("bulk_mb=%ld server_decrypt_cpu_s=%.3f server_decrypt_mb_per_s=%.0f "
			       "cipher=%s\n",
			       bulk_mb, open_cpu, (double)bulk_mb / open_cpu,
			       wolfSSL_get_cipher_name(s));
		}
		wolfSSL_free(c);
		tn = cpu_now();
		wolfSSL_free(s);
		server_new += cpu_now() - tn;
	}
	if (sess)
		wolfSSL_SESSION_free(sess);
	printf("tls=%s resume=%s group=%s handshakes=%ld resumed=%ld server_cpu_s=%.3f "
	       "server_handshakes_per_cpu_s=%.0f new_free_us=%.1f "
	       "with_new_free_handshakes_per_cpu_s=%.0f\n",
	       version, resume, kx, n, resumed, server_cpu, (double)n / server_cpu,
	       server_new * 1e6 / (double)n, (double)n / (server_cpu + server_new));
	wolfSSL_CTX_free(sctx);
	wolfSSL_CTX_free(cctx);
	wolfSSL_Cleanup();
	return 0;
}
