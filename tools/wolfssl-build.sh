#!/usr/bin/env bash
# wolfssl-build.sh - builds the wolfSSL that mxring links: Debian's own source
# package, CPU-accelerated and trimmed for an MX server, installed as a static
# library into a cache folder outside the checkout.
#
#   tools/wolfssl-build.sh                 build if needed; print the prefix
#   tools/wolfssl-build.sh --print-prefix  print the prefix; exit 1 if not built
#   tools/wolfssl-build.sh --update        ask the archive for a newer Debian
#                                          revision (a security update) and
#                                          build it if it is not cached yet
#   tools/wolfssl-build.sh --measure       heap per WOLFSSL object, and per
#                                          idle server session after a TLS 1.3
#                                          handshake, of the cached build
#   --profile mx|debian                    which flag set (default mx, below);
#                                          debian = Debian's flags plus the
#                                          acceleration, kept for comparison
#
# The prefix is ${XDG_CACHE_HOME:-$HOME/.cache}/mxring/wolfssl-<Debian
# version>-<hash of the flags and of this recipe>/ with include/ (options.h
# included), lib/libwolfssl.a, lib/pkgconfig/wolfssl.pc, bin/wolfcrypt-benchmark
# and a .complete stamp written last. Stdout carries the prefix and nothing
# else; progress goes to stderr. A complete prefix is never rebuilt, so a
# second run costs a few milliseconds. Two runs at once serialise on a lock.
#
# The source is the newest wolfssl source package Debian ships that can be
# fetched whole: unstable (sid) first, then the next stable (trixie, with
# its updates and security suites), then this system's own release. Each
# comes through a private deb-src list made from the system's own Debian
# entries (same mirrors, components, keys; the suite names changed); the
# system's apt configuration, lists and caches are not touched (but for
# installing missing build tools, the ordinary way). apt checks every file
# against the signed Release file; a package whose files cannot all be
# fetched (the index and the pool briefly disagree after an upload) is
# passed over for the next suite. dpkg-source -x applies Debian's patches
# (the security fixes among them). wolfSSL from Debian 13 and unstable
# builds on Debian 12 with the same flags.
#
# Missing build tools (autoconf automake libtool dpkg-dev make gcc) are
# installed with apt-get, through sudo when not root, non-interactively.
#
# Environment: MXRING_WOLFSSL_CACHE (the cache folder instead of
# ${XDG_CACHE_HOME:-$HOME/.cache}/mxring; debian/rules sets it, since
# debhelper resets HOME and XDG_CACHE_HOME), MXRING_WOLFSSL_JOBS (make -j, default 2),
# MXRING_WOLFSSL_EXTRA_FLAGS (appended to configure; part of the hash, for
# experiments), MXRING_DEBSRC (a one-line "deb-src URI SUITE COMPONENTS" to use
# instead of the system's entries and the suites above), MXRING_WOLFSSL_SUITES
# (the releases to try, in order; default "sid trixie" and then the system's).
#
# Bugs: x86-64 only (the acceleration is intel asm). A Debian revision that
# appears later is picked up by --update only, so that ordinary runs stay offline.
set -euo pipefail

# Bump when the recipe changes in a way the flags do not show.
RECIPE=3

# --- flag sets ----------------------------------------------------------
#
# mx: what an inbound MX needs, nothing more. Each flag and why:
mx_flags=(
	--disable-shared --enable-static --with-pic # link statically (two
	#   libwolfssl.so.35 with one SONAME interpose each other); PIC for PIE
	--disable-examples          # no example client/server programs
	--enable-crypttests         # builds wolfcrypt/benchmark (kept in bin/)
	--enable-tls13 --enable-tlsv12 # the only two versions we speak
	--disable-oldtls            # NO_OLD_TLS: no TLS 1.0/1.1 (SSLv3 is off by default)
	--enable-intelasm           # AES-NI, AVX/AVX2 AES-GCM, ChaCha20, Poly1305,
	#   SHA-2; chosen by CPUID at run time, so it runs on any x86-64
	--enable-sp --enable-sp-asm # single-precision math with x86-64 asm:
	#   P-256/384/521, RSA 2048/3072/4096 (ECDSA and RSA sign ~3x)
	--disable-fpecc             # the fixed-point cache costs 1.4 MB of
	#   thread-local memory in every thread
	--enable-curve25519         # X25519, the first group we offer
	--enable-aesgcm --enable-chacha --enable-poly1305 # the AEADs of our suites
	--enable-aesgcm-stream      # AES-GCM over pieces: tls/record.c opens TLS
	                            # records straight from the receive buffers
	--enable-atomicuser         # ATOMIC_USER: the client's TLS 1.2 write key,
	                            # IV and sequence number for tls/record.c
	--enable-session-ticket     # stateless resumption across shards and nodes;
	#   wolfSSL_CTX_set_TicketEncCb for our own key rotation
	--enable-sni                # accept SNI; wolfSSL_CTX_UseSNI/SNI_GetRequest
	--enable-supportedcurves    # negotiate X25519 then P-256
	--disable-dh                # ECDHE only: no FFDHE groups, no DHE suites
	--disable-sessioncerts      # SESSION_CERTS off: no ~37 KB of inline peer
	#   chain per session (we never ask for client certificates)
	--disable-psk               # TLS 1.3 + PSK would turn SESSION_CERTS on
	--disable-secure-renegotiation # no renegotiation; the server still sends
	#   the RFC 5746 renegotiation_info indication
	--disable-earlydata         # no 0-RTT (replay) on a mail server
	--disable-opensslextra      # no OpenSSL compatibility layer: +3.6 KB per
	#   WOLFSSL, +4 KB per idle session (--measure with
	#   MXRING_WOLFSSL_EXTRA_FLAGS=--enable-opensslextra). Without it there is
	#   no wolfSSL_SESSION_get_id, wolfSSL_CTX_set_cert_cb (certificate
	#   choice per ClientHello) nor wolfSSL_CTX_set_servername_callback
	--disable-crl --disable-ocsp --disable-alpn # no client-certificate
	#   checking, no ALPN in SMTP
	--disable-sys-ca-certs      # the server verifies no peer chain
	--enable-harden             # timing and cache side-channel resistance
)
# HAVE_EXT_CACHE: wolfSSL_CTX_sess_set_new_cb/get_cb/remove_cb, the session-ID
# cache the shards share (the built-in one is 33 entries behind one mutex).
# Without --enable-opensslextra only this define gives it.
# HAVE_SECRET_CALLBACK: wolfSSL_set_tls13_secret_cb hands tls.c the client's
# TLS 1.3 traffic secret, so that tls/record.c decrypts application data
# itself (from the receive buffers into the plaintext buffers, no copy).
# Not WOLFSSL_TLS13_TICKET_BEFORE_FINISHED: with the ticket in the server's
# first flight nothing answers the client's Finished, and a client with
# Nagle's algorithm on (Postfix's smtp) held its EHLO for the delayed ACK,
# about 40 ms a session. After the Finished, as OpenSSL servers send it, the
# ticket carries that ACK; it cost no measurable shard CPU (bench/
# tls-handshakes.py, 331 against 329 us per session, medians of 3).
# WOLFSSL_GETRANDOM: every WOLFSSL object seeds its own DRBG; with this flag
# the seed comes from one getrandom() call instead of opening, reading and
# closing /dev/urandom (three system calls and a descriptor a session; and a
# sandbox needs no /dev/urandom in its view of the filesystem). It cut
# wolfSSL_new + wolfSSL_free from 10.2 to 6.5-7.1 us (tls-limits new_free_us).
mx_cflags="-O2 -DHAVE_EXT_CACHE -DHAVE_SECRET_CALLBACK -DWOLFSSL_GETRANDOM"

# debian: Debian's own flags (debian/rules) plus the acceleration, as measured
# in FACTS.md. For comparison only: --enable-distro turns on almost everything
# (opensslall, sessioncerts, DH, PSK, CRL, OCSP, ...) and forces a shared build.
debian_flags=(
	--enable-distro --enable-pkcs11 --disable-examples
	--enable-intelasm --enable-sp --enable-sp-asm --disable-fpecc
)
debian_cflags="-O2"

# --- arguments ----------------------------------------------------------
mode=build
profile=mx
while [ $# -gt 0 ]; do
	case "$1" in
	--print-prefix) mode=print ;;
	--update) mode=update ;;
	--measure) mode=measure ;;
	--profile) profile="${2:?--profile needs mx or debian}"; shift ;;
	--profile=*) profile="${1#--profile=}" ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "wolfssl-build: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
case "$profile" in
mx) flags=("${mx_flags[@]}"); cflags="$mx_cflags" ;;
debian) flags=("${debian_flags[@]}"); cflags="$debian_cflags" ;;
*) echo "wolfssl-build: unknown profile $profile (mx or debian)" >&2; exit 2 ;;
esac
# shellcheck disable=SC2206 # word splitting of the extra flags is the point
[ -n "${MXRING_WOLFSSL_EXTRA_FLAGS:-}" ] && flags+=(${MXRING_WOLFSSL_EXTRA_FLAGS})

cache_root="${MXRING_WOLFSSL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mxring}"
hash=$(printf '%s\n' "recipe=$RECIPE" "cflags=$cflags" "${flags[@]}" | sha256sum | cut -c1-10)

log() { echo "wolfssl-build: $*" >&2; }

# The newest complete prefix built with these flags, or nothing.
find_prefix() {
	local d best=""
	for d in "$cache_root"/wolfssl-*-"$hash"; do
		[ -f "$d/.complete" ] || continue
		best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n1)
	done
	printf '%s' "$best"
}

measure() {
	local prefix="$1" t
	t=$(mktemp -d)
	# shellcheck disable=SC2064 # expand now: t is local
	trap "rm -rf '$t'" EXIT
	write_measure_c >"$t/m.c"
	gcc -O2 -I"$prefix/include" "$t/m.c" "$prefix/lib/libwolfssl.a" -lm -pthread -o "$t/m"
	if command -v openssl >/dev/null; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj /CN=mx.example -keyout "$t/key.pem" -out "$t/cert.pem" 2>/dev/null
	fi
	MALLOC_ARENA_MAX=1 "$t/m" "$t/cert.pem" "$t/key.pem"
}

if [ "$mode" = print ]; then
	p=$(find_prefix)
	[ -n "$p" ] || exit 1
	echo "$p"
	exit 0
fi

# --- build --------------------------------------------------------------

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

install_deps() {
	local p missing=()
	for p in autoconf automake libtool dpkg-dev make gcc xz-utils; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
		log "not root and no sudo: install ${missing[*]} first"
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
		$sudo apt-get update -qq >&2
		$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	fi
}

# Writes deb-src entries for the system's Debian entries of this release,
# renamed for release $3 (<codename> -> $3, <codename>-X -> $3-X; sid has no
# -updates or -security suites): one-line ones to $1, deb822 stanzas to $2.
# Suites other than <codename> and <codename>-* (third-party repositories)
# are left out.
write_sources() {
	local list="$1" parts="$2" target="$3" codename f
	# shellcheck disable=SC1091
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	if [ -n "${MXRING_DEBSRC:-}" ]; then
		printf '%s\n' "$MXRING_DEBSRC" >"$list"
		return
	fi
	: >"$list"
	: >"$parts"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v cn="$codename" -v t="$target" '
			{ sub(/#.*/, "") }
			$1 != "deb" { next }
			{
				line = $0; sub(/^[ \t]*deb[ \t]+/, "", line); opts = ""
				if (line ~ /^\[/) {
					opts = substr(line, 1, index(line, "]")); line = substr(line, index(line, "]") + 1)
				}
				n = split(line, w, /[ \t]+/); i = (w[1] == "") ? 2 : 1
				uri = w[i]; suite = w[i + 1]; comps = ""
				for (j = i + 2; j <= n; j++) comps = comps " " w[j]
				if (suite != cn && index(suite, cn "-") != 1)
					next
				suite = t substr(suite, length(cn) + 1)
				if (t == "sid" && suite != "sid")
					next
				print "deb-src " (opts == "" ? "" : opts " ") uri " " suite comps
			}' "$f" >>"$list"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		# deb822: paragraphs; a field continues on lines that start with
		# a blank (Signed-By may hold a whole key). Comments are dropped.
		awk -v cn="$codename" -v t="$target" '
			BEGIN { RS = ""; FS = "\n" }
			{
				out = ""; types = ""; keep = 1; suites = ""; field = ""
				for (i = 1; i <= NF; i++) {
					l = $i
					if (l ~ /^#/) continue
					if (l ~ /^[ \t]/) { if (field != "drop") out = out l "\n"; continue }
					field = tolower(substr(l, 1, index(l, ":") - 1))
					val = substr(l, index(l, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
					if (field == "types") { types = val; field = "drop"; continue }
					if (field == "enabled" && tolower(val) == "no") keep = 0
					if (field == "suites") {
						n = split(val, s, /[ \t]+/)
						for (j = 1; j <= n; j++) {
							if (s[j] != cn && index(s[j], cn "-") != 1) continue
							r = t substr(s[j], length(cn) + 1)
							if (t != "sid" || r == "sid") suites = suites " " r
						}
						field = "drop"; continue
					}
					out = out l "\n"
				}
				if (!keep || suites == "" || (" " types " ") !~ / deb /) next
				printf "Types: deb-src\nSuites:%s\n%s\n", suites, out
			}' "$f" >>"$parts"
	done
	if ! grep -q . "$list" "$parts" 2>/dev/null; then
		log "no Debian entries for '$codename' in /etc/apt; using deb.debian.org"
		echo "deb-src http://deb.debian.org/debian $target main" >"$list"
	fi
}

# Downloads the wolfssl source package of release $3 into $1 through a
# private list; fails when any of its files cannot be fetched.
fetch_suite() {
	local dir="$1" tmp="$2" target="$3"
	rm -rf "$tmp/apt" "$dir"
	mkdir -p "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/apt/parts" "$dir"
	write_sources "$tmp/apt/sources.list" "$tmp/apt/parts/mxring-src.sources" "$target"
	[ -s "$tmp/apt/parts/mxring-src.sources" ] || rm -f "$tmp/apt/parts/mxring-src.sources"
	local apt_opts=(
		-o Dir::Etc::SourceList="$tmp/apt/sources.list"
		-o Dir::Etc::SourceParts="$tmp/apt/parts"
		-o Dir::State::Lists="$tmp/apt/lists"
		-o Dir::Cache="$tmp/apt/cache"
	)
	# As root apt would hand the download to the _apt user, who cannot
	# write into our private directories; the files are still checked
	# against the signed Release file.
	[ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
	# A third-party repository named after the release may have no
	# sources: its errors do not matter if Debian's index came in.
	apt-get "${apt_opts[@]}" -qq update >"$tmp/apt-update.log" 2>&1 ||
		log "$target: apt-get update reported errors; trying the download anyway"
	(cd "$dir" && apt-get "${apt_opts[@]}" -qq source --download-only wolfssl \
		>"$tmp/apt-source.log" 2>&1) && ls "$dir"/wolfssl_*.dsc >/dev/null 2>&1
}

# The newest wolfssl source package that comes whole, into $1.
fetch_source() {
	local dir="$1" tmp="$2" codename suite
	# shellcheck disable=SC1091
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	local suites="${MXRING_WOLFSSL_SUITES:-sid trixie} $codename"
	[ -n "${MXRING_DEBSRC:-}" ] && suites="$codename"
	for suite in $suites; do
		log "fetching the wolfssl source package of $suite (private deb-src list)"
		if fetch_suite "$dir" "$tmp" "$suite"; then
			return 0
		fi
		log "$suite: the source package did not come whole: $(grep -h -m1 -E '^(E|W):' \
			"$tmp/apt-update.log" "$tmp/apt-source.log" 2>/dev/null | cut -c1-200)"
	done
	log "no wolfssl source package could be fetched"
	return 1
}

build() {
	local prefix="$1" src="$2" tmp="$3" jobs="${MXRING_WOLFSSL_JOBS:-2}" t0
	t0=$(date +%s)
	log "building $(basename "$prefix") (profile $profile, make -j$jobs)"
	(
		cd "$src"
		./autogen.sh >"$tmp/autogen.log" 2>&1 || { tail -n 30 "$tmp/autogen.log" >&2; exit 1; }
		./configure --prefix="$prefix" "${flags[@]}" CFLAGS="$cflags" \
			>"$tmp/configure.log" 2>&1 || { tail -n 30 "$tmp/configure.log" >&2; exit 1; }
		make -j"$jobs" >"$tmp/make.log" 2>&1 || { tail -n 40 "$tmp/make.log" >&2; exit 1; }
		make install DESTDIR="$tmp/stage" >"$tmp/install.log" 2>&1 ||
			{ tail -n 30 "$tmp/install.log" >&2; exit 1; }
	)
	local stage="$tmp/stage$prefix"
	# --enable-distro does not install options.h; the headers are useless
	# without it (they would silently take the system's).
	cp "$src/wolfssl/options.h" "$stage/include/wolfssl/options.h"
	mkdir -p "$stage/bin"
	# The benchmark of a static build is a program; a shared build leaves a
	# libtool wrapper script in its place, which is of no use outside the tree.
	local b="$src/wolfcrypt/benchmark/benchmark"
	if [ -f "$b" ] && [ "$(head -c4 "$b")" = "$(printf '\177ELF')" ]; then
		cp "$b" "$stage/bin/wolfcrypt-benchmark"
	fi
	cp "$tmp/configure.log" "$stage/configure.log"
	{
		echo "debian_version=$version"
		echo "profile=$profile"
		echo "cflags=$cflags"
		echo "flags=${flags[*]}"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - t0)) s"
	} >"$stage/build-info"
	check_api "$stage" "$tmp"
	date -u +%Y-%m-%dT%H:%M:%SZ >"$stage/.complete"
	rm -rf "$prefix"
	mkdir -p "$(dirname "$prefix")"
	mv "$stage" "$prefix"
	log "built in $(($(date +%s) - t0)) s"
}

# Compiles and links a program that takes the address of every function the
# TLS layer uses, against the prefix's headers only.
check_api() {
	local stage="$1" tmp="$2"
	[ "$profile" = mx ] || return 0
	cat >"$tmp/api.c" <<'EOF'
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <stdio.h>
#if defined(SESSION_CERTS) || !defined(NO_OLD_TLS) || !defined(HAVE_EXT_CACHE) || \
	!defined(HAVE_SESSION_TICKET) || !defined(WOLFSSL_TLS13) || !defined(WOLFSSL_AESNI) || \
	!defined(WOLFSSL_SP_X86_64_ASM) || !defined(HAVE_CURVE25519) || !defined(HAVE_SNI) || \
	defined(FP_ECC) || !defined(HAVE_SERVER_RENEGOTIATION_INFO) || defined(HAVE_SECURE_RENEGOTIATION) || \
	!defined(WOLFSSL_AESGCM_STREAM) || !defined(HAVE_SECRET_CALLBACK) || !defined(HAVE_HKDF) || \
	!defined(ATOMIC_USER)
#error "options.h does not match the mx profile"
#endif
int main(void)
{
	void *fns[] = {
		(void *)wolfSSL_CTX_SetIORecv, (void *)wolfSSL_CTX_SetIOSend,
		(void *)wolfSSL_SetIOReadCtx, (void *)wolfSSL_SetIOWriteCtx,
		(void *)wolfSSL_CTX_set_TicketEncCb, (void *)wolfSSL_CTX_set_tlsext_ticket_keys,
		(void *)wolfSSL_CTX_sess_set_new_cb, (void *)wolfSSL_CTX_sess_set_get_cb,
		(void *)wolfSSL_CTX_sess_set_remove_cb, (void *)wolfSSL_i2d_SSL_SESSION,
		(void *)wolfSSL_d2i_SSL_SESSION,
		(void *)wolfSSL_CTX_use_certificate_chain_file,
		(void *)wolfSSL_CTX_use_PrivateKey_file, (void *)wolfSSL_CTX_set_cipher_list,
		(void *)wolfSSL_CTX_UseSNI, (void *)wolfSSL_CTX_SNI_SetOptions,
		(void *)wolfSSL_SNI_GetRequest, (void *)wolfSSL_get_version,
		(void *)wolfSSL_get_cipher_name, (void *)wolfSSL_session_reused,
		(void *)wolfSSL_CTX_set_groups, (void *)wolfSSL_CTX_UseSupportedCurve,
		(void *)wolfSSL_CTX_set_options, (void *)wolfSSL_CTX_UseClientSuites,
		(void *)wolfSSL_CTX_SetMinVersion, (void *)wolfSSL_CTX_NoTicketTLSv12,
		(void *)wolfTLS_server_method, (void *)wolfSSL_set_tls13_secret_cb,
		(void *)wolfSSL_update_keys, (void *)wc_AesGcmInit,
		(void *)wc_AesGcmDecryptUpdate, (void *)wc_AesGcmDecryptFinal,
		(void *)wc_ChaCha20Poly1305_Init, (void *)wc_ChaCha20Poly1305_UpdateData,
		(void *)wc_HKDF_Expand, (void *)wolfSSL_GetClientWriteKey,
		(void *)wolfSSL_GetClientWriteIV, (void *)wolfSSL_GetPeerSequenceNumber,
		(void *)wolfSSL_GetBulkCipher, (void *)wolfSSL_GetKeySize, (void *)wolfSSL_GetIVSize,
	};
	/* Server order is wolfSSL's default; the option is accepted too. */
	long opt = WOLFSSL_OP_CIPHER_SERVER_PREFERENCE;
	printf("%zu %ld %s\n", sizeof fns / sizeof fns[0], opt, wolfSSL_lib_version());
	return 0;
}
EOF
	gcc -Wall -Werror -I"$stage/include" "$tmp/api.c" "$stage/lib/libwolfssl.a" -lm -pthread \
		-o "$tmp/api" >&2 || { log "API check failed"; exit 1; }
	"$tmp/api" >/dev/null
}

write_measure_c() {
	cat <<'EOF'
/* Heap per WOLFSSL object (1000 x wolfSSL_new on a server context, glibc
 * mallinfo2 before and after) and per idle server session after an
 * in-memory TLS 1.3 handshake (200 sessions; clients freed). */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OBJS = 1000, SESS = 200, QCAP = 16384 };
struct q { unsigned char b[QCAP]; int len; };
struct pair { struct q c2s, s2c; };

static size_t heap(void)
{
	struct mallinfo2 m = mallinfo2();
	return m.uordblks + m.hblkhd;
}
static int rx(WOLFSSL *s, char *buf, int sz, void *ctx)
{
	struct q *q = ctx;
	(void)s;
	if (q->len == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	int n = sz < q->len ? sz : q->len;
	memcpy(buf, q->b, n);
	memmove(q->b, q->b + n, q->len - n);
	q->len -= n;
	return n;
}
static int tx(WOLFSSL *s, char *buf, int sz, void *ctx)
{
	struct q *q = ctx;
	(void)s;
	if (q->len + sz > QCAP)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(q->b + q->len, buf, sz);
	q->len += sz;
	return sz;
}
int main(int argc, char **argv)
{
	wolfSSL_Init();
	WOLFSSL_CTX *sctx = wolfSSL_CTX_new(wolfTLS_server_method());
	/* A server context without a key makes no WOLFSSL objects. */
	if (argc < 3 || wolfSSL_CTX_use_certificate_file(sctx, argv[1], WOLFSSL_FILETYPE_PEM) != 1 ||
	    wolfSSL_CTX_use_PrivateKey_file(sctx, argv[2], WOLFSSL_FILETYPE_PEM) != 1) {
		printf("no certificate (is openssl installed?): nothing measured\n");
		return 1;
	}
	static WOLFSSL *objs[OBJS];
	size_t h0 = heap();
	for (int i = 0; i < OBJS; i++)
		if (!(objs[i] = wolfSSL_new(sctx)))
			return printf("wolfSSL_new failed\n"), 1;
	size_t h1 = heap();
	for (int i = 0; i < OBJS; i++)
		wolfSSL_free(objs[i]);
	printf("heap per WOLFSSL after wolfSSL_new: %zu bytes (%d objects)\n", (h1 - h0) / OBJS, OBJS);
	WOLFSSL_CTX *cctx = wolfSSL_CTX_new(wolfTLS_client_method());
	wolfSSL_CTX_set_verify(cctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_SetIORecv(sctx, rx);
	wolfSSL_CTX_SetIOSend(sctx, tx);
	wolfSSL_CTX_SetIORecv(cctx, rx);
	wolfSSL_CTX_SetIOSend(cctx, tx);
	static WOLFSSL *srv[SESS];
	struct pair *pairs = calloc(SESS, sizeof *pairs);
	size_t s0 = heap();
	for (int i = 0; i < SESS; i++) {
		WOLFSSL *s = srv[i] = wolfSSL_new(sctx), *c = wolfSSL_new(cctx);
		wolfSSL_SetIOReadCtx(s, &pairs[i].c2s);
		wolfSSL_SetIOWriteCtx(s, &pairs[i].s2c);
		wolfSSL_SetIOReadCtx(c, &pairs[i].s2c);
		wolfSSL_SetIOWriteCtx(c, &pairs[i].c2s);
		int cs = 0, ss = 0;
		for (int k = 0; k < 20 && !(cs == 1 && ss == 1); k++) {
			if (cs != 1)
				cs = wolfSSL_connect(c);
			if (ss != 1)
				ss = wolfSSL_accept(s);
		}
		if (cs != 1 || ss != 1) {
			printf("handshake failed: client %d server %d\n", wolfSSL_get_error(c, cs),
			       wolfSSL_get_error(s, ss));
			return 1;
		}
		char byte;
		wolfSSL_write(c, "x", 1); /* the server reads it: tickets flushed */
		wolfSSL_read(s, &byte, 1);
		if (i == 0)
			printf("negotiated %s %s\n", wolfSSL_get_version(s), wolfSSL_get_cipher_name(s));
		wolfSSL_free(c);
	}
	size_t s1 = heap();
	printf("heap per idle server session after a TLS 1.3 handshake: %zu bytes (%d sessions)\n",
	       (s1 - s0) / SESS, SESS);
	return 0;
}
EOF
}

prefix=$(find_prefix)
if [ "$mode" = measure ]; then
	[ -n "$prefix" ] || { log "not built yet: run without --measure first"; exit 1; }
	measure "$prefix"
	exit 0
fi
if [ "$mode" = build ] && [ -n "$prefix" ]; then
	echo "$prefix"
	exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.wolfssl-build.lock"
flock 9
# Another run may have built it while we waited.
prefix=$(find_prefix)
if [ "$mode" = build ] && [ -n "$prefix" ]; then
	echo "$prefix"
	exit 0
fi

install_deps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wolfssl-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fetch_source "$tmp/dl" "$tmp"
dsc=$(ls "$tmp"/dl/wolfssl_*.dsc)
version=$(sed -n 's/^Version: //p' "$dsc")
prefix="$cache_root/wolfssl-$version-$hash"
if [ -f "$prefix/.complete" ]; then
	log "wolfssl $version is current"
	echo "$prefix"
	exit 0
fi
dpkg-source -x "$dsc" "$tmp/src" >"$tmp/dpkg-source.log" 2>&1 ||
	{ tail -n 20 "$tmp/dpkg-source.log" >&2; exit 1; }
build "$prefix" "$tmp/src" "$tmp"
echo "$prefix"
