/*
 * proxy.c - PROXY protocol header parser (see proxy.h).
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

static int invalid(const char **why, const char *reason)
{
	*why = reason;
	return PROXY_INVALID;
}

/* "0".."65535", no sign, no leading zero. */
static bool parse_port(const char *s, size_t n, uint16_t *port)
{
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	uint32_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

static bool parse_ip(int family, const char *s, size_t n, uint8_t out[16])
{
	char tmp[INET6_ADDRSTRLEN];
	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return inet_pton(family, tmp, out) == 1;
}

/* Splits s[0..n) at single spaces into at most max fields; false on an empty field. */
static bool split(const char *s, size_t n, const char **f, size_t *fl, unsigned max,
		  unsigned *count)
{
	unsigned k = 0;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != ' ')
			continue;
		if (i == start || k == max)
			return false;
		f[k] = s + start;
		fl[k++] = i - start;
		start = i + 1;
	}
	*count = k;
	return true;
}

static int parse_v1(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why)
{
	size_t scan = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	size_t end = 0;
	bool found = false;
	for (size_t i = 0; i < scan; i++) {
		uint8_t c = buf[i];
		if (c == '\r') {
			if (i + 2 > PROXY_V1_MAX)
				return invalid(why, "v1: no CRLF within 107 octets");
			if (i + 1 == len)
				return PROXY_NEED_MORE;
			if (buf[i + 1] != '\n')
				return invalid(why, "v1: CR not followed by LF");
			end = i;
			found = true;
			break;
		}
		if (c < 0x20 || c > 0x7e)
			return invalid(why, "v1: a control or 8-bit octet in the line");
	}
	if (!found)
		return len < PROXY_V1_MAX ? PROXY_NEED_MORE
					  : invalid(why, "v1: no CRLF within 107 octets");

	const char *line = (const char *)buf + (sizeof(v1_sig) - 1);
	size_t n = end - (sizeof(v1_sig) - 1);
	memset(out, 0, sizeof(*out));
	out->version = 1;
	if (n >= 7 && !memcmp(line, "UNKNOWN", 7) && (n == 7 || line[7] == ' '))
		return (int)end + 2; /* the rest of the line is ignored (spec 2.1) */

	const char *f[6];
	size_t fl[6];
	unsigned count;
	if (!split(line, n, f, fl, 6, &count) || count != 5)
		return invalid(why, "v1: want PROTO SRC DST SPORT DPORT, single spaces");
	if (fl[0] == 4 && !memcmp(f[0], "TCP4", 4))
		out->family = AF_INET;
	else if (fl[0] == 4 && !memcmp(f[0], "TCP6", 4))
		out->family = AF_INET6;
	else
		return invalid(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	if (!parse_ip(out->family, f[1], fl[1], out->src) ||
	    !parse_ip(out->family, f[2], fl[2], out->dst))
		return invalid(why, "v1: an address does not match the protocol");
	if (!parse_port(f[3], fl[3], &out->src_port) || !parse_port(f[4], fl[4], &out->dst_port))
		return invalid(why, "v1: a port is not a number 0..65535");
	out->has_addr = true;
	return (int)end + 2;
}

static int parse_v2(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why)
{
	if (len < 16)
		return PROXY_NEED_MORE;
	uint8_t ver = buf[12] >> 4, cmd = buf[12] & 0x0f;
	uint8_t fam = buf[13] >> 4, proto = buf[13] & 0x0f;
	size_t body = (size_t)buf[14] << 8 | buf[15];
	if (ver != 2)
		return invalid(why, "v2: version is not 2");
	if (cmd > 1)
		return invalid(why, "v2: command is neither LOCAL nor PROXY");
	if (16 + body > PROXY_V2_MAX)
		return invalid(why, "v2: address block and TLVs longer than 1024 octets");
	if (len < 16 + body)
		return PROXY_NEED_MORE;

	memset(out, 0, sizeof(*out));
	out->version = 2;
	if (cmd == 0 || (fam == 0 && proto == 0))
		return (int)(16 + body); /* LOCAL or UNSPEC: the connection's own addresses */
	if (proto != 1)
		return invalid(why, "v2: transport is not STREAM");
	const uint8_t *a = buf + 16;
	if (fam == 1) {
		if (body < 12)
			return invalid(why, "v2: INET address block shorter than 12 octets");
		out->family = AF_INET;
		memcpy(out->src, a, 4);
		memcpy(out->dst, a + 4, 4);
		a += 8;
	} else if (fam == 2) {
		if (body < 36)
			return invalid(why, "v2: INET6 address block shorter than 36 octets");
		out->family = AF_INET6;
		memcpy(out->src, a, 16);
		memcpy(out->dst, a + 16, 16);
		a += 32;
	} else {
		return invalid(why, "v2: family is not INET or INET6");
	}
	out->src_port = (uint16_t)(a[0] << 8 | a[1]);
	out->dst_port = (uint16_t)(a[2] << 8 | a[3]);
	out->has_addr = true;
	return (int)(16 + body);
}

int proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why)
{
	*why = NULL;
	if (len == 0)
		return PROXY_NEED_MORE;
	if (buf[0] == v2_sig[0]) {
		size_t k = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
		if (memcmp(buf, v2_sig, k))
			return invalid(why, "not a PROXY protocol header");
		return len < sizeof(v2_sig) ? PROXY_NEED_MORE : parse_v2(buf, len, out, why);
	}
	size_t k = len < sizeof(v1_sig) - 1 ? len : sizeof(v1_sig) - 1;
	if (memcmp(buf, v1_sig, k))
		return invalid(why, "not a PROXY protocol header");
	return len < sizeof(v1_sig) - 1 ? PROXY_NEED_MORE : parse_v1(buf, len, out, why);
}
