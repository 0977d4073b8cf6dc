/*
 * relay_dest.c - parsing relay_host entries (relay_dest.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "relay_dest.h"

static bool prefix(const char *t, size_t n, const char *p)
{
	size_t k = strlen(p);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if ((t[i] | 0x20) != p[i])
			return false;
	return true;
}

/* A host name: letters, digits, '-', '.', '_'; labels of 1..63 bytes. */
static bool host_name_ok(const char *h, size_t n)
{
	size_t label = 0;
	if (n == 0 || n > DOMAIN_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return true;
}

int relay_dest_parse(const char *t, size_t n, struct relay_dest *d, const char **why)
{
	memset(d, 0, sizeof(*d));
	d->proto = RELAY_SMTP;
	if (prefix(t, n, "smtp:")) {
		t += 5;
		n -= 5;
	} else if (prefix(t, n, "lmtp:")) {
		d->proto = RELAY_LMTP;
		t += 5;
		n -= 5;
	}
	if (prefix(t, n, "unix:")) {
		t += 5;
		n -= 5;
		if (n == 0 || t[0] != '/') {
			*why = "a socket path must be absolute (unix:/run/...)";
			return -1;
		}
		if (n > RELAY_UNIX_PATH_MAX) {
			*why = "socket path longer than 107 bytes";
			return -1;
		}
		d->unix_path = true;
		memcpy(d->host, t, n);
		return 0;
	}
	const char *host = t, *port = NULL;
	size_t hlen = n, plen = 0;
	bool bracket = n > 0 && t[0] == '[';
	if (bracket) {
		const char *close = memchr(t, ']', n);
		if (!close) {
			*why = "'[' without ']'";
			return -1;
		}
		host = t + 1;
		hlen = (size_t)(close - host);
		size_t rest = n - (size_t)(close + 1 - t);
		if (rest > 0) {
			if (close[1] != ':') {
				*why = "expected ':port' after ']'";
				return -1;
			}
			port = close + 2;
			plen = rest - 1;
		}
	} else {
		const char *colon = memchr(t, ':', n);
		if (colon) {
			if (memchr(colon + 1, ':', n - (size_t)(colon + 1 - t))) {
				*why = "an IPv6 address needs brackets: [2001:db8::1]:25";
				return -1;
			}
			hlen = (size_t)(colon - t);
			port = colon + 1;
			plen = n - hlen - 1;
		}
	}
	if (hlen == 0 || hlen > DOMAIN_MAX) {
		*why = "no host, or a host longer than 253 bytes";
		return -1;
	}
	char h[DOMAIN_MAX + 1];
	memcpy(h, host, hlen);
	h[hlen] = '\0';
	unsigned char bin[16];
	if (memchr(h, ':', hlen)) {
		if (!bracket || inet_pton(AF_INET6, h, bin) != 1) {
			*why = "bad IPv6 address";
			return -1;
		}
	} else if (!host_name_ok(h, hlen)) {
		*why = "bad host name";
		return -1;
	}
	memcpy(d->host, h, hlen + 1);
	d->port = d->proto == RELAY_LMTP ? 24 : 25;
	if (port) {
		unsigned long v = 0;
		if (plen == 0 || plen > 5) {
			*why = "bad port";
			return -1;
		}
		for (size_t i = 0; i < plen; i++) {
			if (port[i] < '0' || port[i] > '9') {
				*why = "bad port";
				return -1;
			}
			v = v * 10 + (unsigned long)(port[i] - '0');
		}
		if (v == 0 || v > 65535) {
			*why = "port out of range 1..65535";
			return -1;
		}
		d->port = (uint16_t)v;
	}
	return 0;
}

const char *relay_dest_text(const struct relay_dest *d, char *buf, size_t cap)
{
	const char *proto = d->proto == RELAY_LMTP ? "lmtp" : "smtp";
	if (d->unix_path)
		snprintf(buf, cap, "%s:unix:%s", proto, d->host);
	else
		snprintf(buf, cap, "%s:[%s]:%u", proto, d->host, d->port);
	return buf;
}
