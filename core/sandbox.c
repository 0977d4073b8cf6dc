/*
 * sandbox.c - Landlock: after start-up, the process may read the files it
 * reloads and write under spool_dir; nothing else in the file system.
 *
 * The rules name folders, not files: an ACME client renews a certificate by
 * writing a new file and renaming it over the old one (or, as certbot does,
 * by pointing a link in live/ at a new file in archive/), and a rule on the
 * old file would not cover the new one. So each reloaded file gives read
 * access to files in its folder, and in the folder its links resolve to.
 *
 * Every access right the kernel knows is handled (so denied unless a rule
 * allows it): execution, device nodes, sockets and links in the file system,
 * and from ABI 4 on TCP bind and connect (but to relay_host's ports). Rename across folders
 * (active/ to ready/) needs LANDLOCK_ACCESS_FS_REFER, which ABI 1 denies to everyone: below ABI 2
 * (Linux 5.19) the sandbox stays off. The system calls are made directly: glibc 2.36 has no
 * wrappers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/landlock.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
#define ACCESS_NET_BIND_TCP    (1ULL << 0)
#define ACCESS_NET_CONNECT_TCP (1ULL << 1)

/* The kernel's struct landlock_ruleset_attr as of ABI 4 (the header of Debian
 * 12 stops at ABI 2); its size tells the kernel which fields are there. */
struct ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
};

/* The folders a reloaded file may be read from: at most CERTS_MAX paths of
 * each of three keys, two folders each. */
#define READ_DIRS_MAX 16

static uint64_t fs_rights(int abi)
{
	uint64_t r = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
		     LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |
		     LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
		     LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
		     LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
		     LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		     LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		r |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		r |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return r;
}

/* Adds "path: access beneath it". 0 or -1 after a message. */
static int allow(int ruleset, const char *path, uint64_t access, FILE *err)
{
	int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(err, "mxring: sandbox: %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct landlock_path_beneath_attr pb = {.allowed_access = access, .parent_fd = fd};
	long rc = syscall(__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
	int e = errno;
	close(fd);
	if (rc != 0) {
		fprintf(err, "mxring: sandbox: a rule for %s: %s\n", path, strerror(e));
		return -1;
	}
	return 0;
}

/* Allows TCP connections to port (Landlock ABI 4: the relay's hub). 0 or -1 after a message. */
static int allow_connect(int ruleset, uint16_t port, FILE *err)
{
	struct {
		uint64_t allowed_access;
		uint64_t port;
	} np = {.allowed_access = ACCESS_NET_CONNECT_TCP, .port = port};
	if (syscall(__NR_landlock_add_rule, ruleset, 2 /* LANDLOCK_RULE_NET_PORT */, &np, 0) != 0) {
		fprintf(err, "mxring: sandbox: a rule for TCP port %u: %s\n", port,
			strerror(errno));
		return -1;
	}
	return 0;
}

/* Allows reading one file (and the file its links resolve to), when it exists. */
static int allow_file(int ruleset, const char *path, FILE *err)
{
	char real[PATH_MAX];
	const char *paths[2] = {path, realpath(path, real) ? real : NULL};
	for (int i = 0; i < 2 && paths[i]; i++) {
		int fd = open(paths[i], O_PATH | O_CLOEXEC);
		if (fd < 0)
			continue; /* not there: nothing to read */
		struct landlock_path_beneath_attr pb = {
		    .allowed_access = LANDLOCK_ACCESS_FS_READ_FILE, .parent_fd = fd};
		long rc =
		    syscall(__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
		int e = errno;
		close(fd);
		if (rc != 0) {
			fprintf(err, "mxring: sandbox: a rule for %s: %s\n", paths[i], strerror(e));
			return -1;
		}
	}
	return 0;
}

/* Whether relay_host names a host (resolved again on SIGHUP), not only addresses. */
static bool relay_names(const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->nrelay_host; i++) {
		const struct relay_dest *d = &cfg->relay_host[i];
		unsigned char bin[16];
		if (!d->unix_path && inet_pton(AF_INET, d->host, bin) != 1 &&
		    inet_pton(AF_INET6, d->host, bin) != 1)
			return true;
	}
	return false;
}

/* The folder of path into dir (PATH_MAX): "." for a bare name. */
static void folder_of(const char *path, char *dir)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		memcpy(dir, path, n);
		dir[n] = 0;
	}
}

static void add_dir(char dirs[][PATH_MAX], unsigned *n, const char *dir)
{
	for (unsigned i = 0; i < *n; i++)
		if (!strcmp(dirs[i], dir))
			return;
	if (*n < READ_DIRS_MAX)
		snprintf(dirs[(*n)++], PATH_MAX, "%s", dir);
}

/* The folders of each comma-separated path of list, as written and as its
 * links resolve. */
static void reload_dirs(const char *list, char dirs[][PATH_MAX], unsigned *n)
{
	char path[PATH_MAX], dir[PATH_MAX], real[PATH_MAX];
	while (path_list_next(&list, path, sizeof(path))) {
		if (!path[0])
			continue;
		folder_of(path, dir);
		add_dir(dirs, n, dir);
		if (realpath(path, real)) {
			folder_of(real, dir);
			add_dir(dirs, n, dir);
		}
	}
}

int sandbox_enter(const struct config *cfg, char *what, size_t cap, FILE *err)
{
	if (!cfg->sandbox) {
		snprintf(what, cap, "off");
		return 0;
	}
	long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 0) {
		snprintf(what, cap, "unavailable:%s",
			 errno == EOPNOTSUPP ? "disabled-at-boot" : "no-landlock");
		return 0;
	}
	if (abi < 2) {
		snprintf(what, cap, "unavailable:abi%ld", abi);
		return 0;
	}
	struct ruleset_attr attr = {
	    .handled_access_fs = fs_rights((int)abi),
	    .handled_access_net = abi >= 4 ? ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP : 0};
	size_t size = abi >= 4 ? sizeof(attr) : sizeof(attr.handled_access_fs);
	int rs = (int)syscall(__NR_landlock_create_ruleset, &attr, size, 0);
	if (rs < 0) {
		fprintf(err, "mxring: sandbox: landlock_create_ruleset: %s\n", strerror(errno));
		return -1;
	}
	uint64_t spool = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
			 LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |
			 LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_DIR |
			 LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		spool |= LANDLOCK_ACCESS_FS_TRUNCATE;
	int rc = allow(rs, cfg->spool_dir, spool, err);
	static char dirs[READ_DIRS_MAX][PATH_MAX];
	unsigned ndirs = 0;
	if (cfg->tls_security_level != TLS_LEVEL_NONE || cfg->nsmtps_listen) {
		reload_dirs(cfg->tls_cert_file, dirs, &ndirs);
		reload_dirs(cfg->tls_key_file, dirs, &ndirs);
		reload_dirs(cfg->tls_ticket_key_file, dirs, &ndirs);
	}
	reload_dirs(cfg->recipient_table, dirs, &ndirs);
	for (unsigned i = 0; rc == 0 && i < ndirs; i++)
		rc = allow(rs, dirs[i], LANDLOCK_ACCESS_FS_READ_FILE, err);
	/* The resolver's files, for relay_host's names on SIGHUP. */
	static const char *const resolver_files[] = {"/etc/hosts", "/etc/resolv.conf",
						     "/etc/nsswitch.conf", "/etc/host.conf",
						     "/etc/gai.conf"};
	for (unsigned i = 0; rc == 0 && relay_names(cfg) && i < 5; i++)
		rc = allow_file(rs, resolver_files[i], err);
	/* The relay connects to its hub's ports, and to no other. */
	for (unsigned i = 0; rc == 0 && abi >= 4 && i < cfg->nrelay_host; i++)
		if (!cfg->relay_host[i].unix_path)
			rc = allow_connect(rs, cfg->relay_host[i].port, err);
#ifdef __SANITIZE_ADDRESS__
	/* A sanitizer build (tests only): LeakSanitizer lists /proc/self/task
	 * and reads /proc/self/maps at exit. */
	if (rc == 0)
		rc = allow(rs, "/proc", LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR,
			   err);
#endif
	if (rc == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		fprintf(err, "mxring: sandbox: no_new_privs: %s\n", strerror(errno));
		rc = -1;
	}
	if (rc == 0 && syscall(__NR_landlock_restrict_self, rs, 0) != 0) {
		fprintf(err, "mxring: sandbox: landlock_restrict_self: %s\n", strerror(errno));
		rc = -1;
	}
	close(rs);
	if (rc == 0)
		snprintf(what, cap, "landlock-abi%ld%s", abi, abi >= 4 ? "+net" : "");
	return rc;
}
