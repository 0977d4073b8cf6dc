/*
 * priv.c - giving up root once what needs it is open.
 *
 * Binding port 25 needs root or CAP_NET_BIND_SERVICE; parsing what the
 * internet sends needs neither. As Postfix's smtpd runs as an unprivileged
 * user, mxring started as root becomes `user` before its first thread and its
 * first client, and keeps no capability at all: not in the bounding set
 * either, and with no_new_privs, so that nothing it could exec gets one back.
 * The capability calls are the raw system calls (capset, prctl): four of
 * them do not justify libcap.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "priv.h"

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT		 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* The most capability numbers any kernel has had room for (two 32-bit words). */
#define CAP_NUMBERS_MAX 64

int priv_plan(const struct config *cfg, struct priv *p, FILE *err)
{
	memset(p, 0, sizeof(*p));
	p->uid = getuid();
	p->gid = getgid();
	bool root = geteuid() == 0;
	if (!cfg->user[0]) {
		if (root && !cfg->allow_root) {
			fprintf(err, "mxring: refusing to run as root: set user (an unprivileged "
				     "account of its own, e.g. user = mxring), or allow_root = yes "
				     "on a test machine\n");
			return 2;
		}
		struct passwd *pw = getpwuid(geteuid());
		snprintf(p->name, sizeof(p->name), "%s", pw ? pw->pw_name : "?");
		p->as_root = root;
		return 0;
	}
	errno = 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (!pw) {
		fprintf(err, "mxring: user %s: %s\n", cfg->user,
			errno ? strerror(errno) : "no such user");
		return 1;
	}
	if (pw->pw_uid == 0) {
		fprintf(err,
			"mxring: user %s is root: name an unprivileged account, or leave "
			"user empty and set allow_root = yes on a test machine\n",
			cfg->user);
		return 1;
	}
	snprintf(p->name, sizeof(p->name), "%s", pw->pw_name);
	gid_t gid = pw->pw_gid;
	if (cfg->group[0]) {
		errno = 0;
		struct group *gr = getgrnam(cfg->group);
		if (!gr) {
			fprintf(err, "mxring: group %s: %s\n", cfg->group,
				errno ? strerror(errno) : "no such group");
			return 1;
		}
		gid = gr->gr_gid;
	}
	if (!root) {
		if (geteuid() != pw->pw_uid || getegid() != gid) {
			fprintf(err,
				"mxring: user %s: becoming another user needs root (this "
				"process runs as uid %u gid %u)\n",
				cfg->user, (unsigned)geteuid(), (unsigned)getegid());
			return 1;
		}
		return 0;
	}
	p->change = true;
	p->uid = pw->pw_uid;
	p->gid = gid;
	return 0;
}

/* fd (an entry of dirfd named name, or dirfd itself when name is NULL)
 * becomes p's, unless it already is. 0 or -1 after a message. */
static int own(const struct priv *p, int dirfd, const char *name, const char *path, FILE *err)
{
	struct stat st;
	int flags = AT_SYMLINK_NOFOLLOW | (name ? 0 : AT_EMPTY_PATH);
	const char *n = name ? name : "";
	if (fstatat(dirfd, n, &st, flags) != 0) {
		if (errno == ENOENT)
			return 0; /* gone meanwhile */
		fprintf(err, "mxring: %s%s%s: %s\n", path, name ? "/" : "", n, strerror(errno));
		return -1;
	}
	if (S_ISLNK(st.st_mode))
		return 0; /* the spool makes none; never follow one */
	if (st.st_uid == p->uid && st.st_gid == p->gid)
		return 0;
	if (fchownat(dirfd, n, p->uid, p->gid, flags) != 0) {
		fprintf(err, "mxring: %s%s%s: cannot give it to user %s: %s\n", path,
			name ? "/" : "", n, p->name, strerror(errno));
		return -1;
	}
	return 0;
}

/* Whether own_entries goes into the folder name found at depth (0: directly
 * in spool_dir): active/ and maildir/ there, maildir/tmp/ below. */
static bool descend(const char *name, unsigned depth, bool in_maildir)
{
	if (depth == 0)
		return !strcmp(name, "active") || !strcmp(name, "maildir");
	return depth == 1 && in_maildir && !strcmp(name, "tmp");
}

/* Every entry of the folder dirfd (path, for messages) becomes p's, and
 * those of the subfolders descend names. */
static int own_entries(const struct priv *p, int dirfd, const char *path, unsigned depth,
		       bool in_maildir, FILE *err)
{
	int dup_fd = dup(dirfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		fprintf(err, "mxring: %s: %s\n", path, strerror(errno));
		if (dup_fd >= 0)
			close(dup_fd);
		return -1;
	}
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		rc = own(p, dirfd, e->d_name, path, err);
		if (rc == 0 && descend(e->d_name, depth, in_maildir)) {
			int sub = openat(dirfd, e->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				fprintf(err, "mxring: %s/%s: %s\n", path, e->d_name,
					strerror(errno));
				rc = -1;
				break;
			}
			char subpath[4200];
			snprintf(subpath, sizeof(subpath), "%s/%s", path, e->d_name);
			rc = own_entries(p, sub, subpath, depth + 1,
					 depth == 0 && !strcmp(e->d_name, "maildir"), err);
			close(sub);
		}
	}
	closedir(d);
	return rc;
}

int priv_own_spool(const struct priv *p, const char *spool_dir, FILE *err)
{
	if (!p->change)
		return 0;
	int fd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(err, "mxring: spool_dir %s: %s\n", spool_dir, strerror(errno));
		return -1;
	}
	int rc = own(p, fd, NULL, spool_dir, err);
	if (rc == 0)
		rc = own_entries(p, fd, spool_dir, 0, false, err);
	close(fd);
	return rc;
}

static int cap_clear(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	return (int)syscall(SYS_capset, &hdr, data);
}

int priv_drop(const struct priv *p, FILE *err)
{
	if (p->as_root)
		return 0;
	/* The bounding set first: dropping from it needs CAP_SETPCAP, which
	 * root has now and nobody has after setuid. Without it (not root),
	 * the set stays as the parent gave it (systemd:
	 * CapabilityBoundingSet=), and nothing can raise a capability anyway. */
	for (int cap = 0; cap < CAP_NUMBERS_MAX; cap++) {
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1)
			continue; /* not in the set, or past the kernel's last */
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
			if (errno == EPERM && !p->change)
				break;
			fprintf(err, "mxring: dropping capability %d from the bounding set: %s\n",
				cap, strerror(errno));
			return -1;
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
		fprintf(err, "mxring: clearing the ambient capabilities: %s\n", strerror(errno));
		return -1;
	}
	if (p->change) {
		if (setgroups(1, &p->gid) != 0 || setresgid(p->gid, p->gid, p->gid) != 0 ||
		    setresuid(p->uid, p->uid, p->uid) != 0) {
			fprintf(err, "mxring: becoming user %s (uid %u gid %u): %s\n", p->name,
				(unsigned)p->uid, (unsigned)p->gid, strerror(errno));
			return -1;
		}
		/* As OpenSSH checks after its own: root must be out of reach. */
		if (setuid(0) == 0 || getuid() != p->uid || geteuid() != p->uid ||
		    getegid() != p->gid) {
			fprintf(err, "mxring: becoming user %s did not stick\n", p->name);
			return -1;
		}
	}
	/* setuid cleared the permitted and effective sets; not the inheritable
	 * one, and a process that was not root may hold some: all go. */
	if (cap_clear() != 0) {
		fprintf(err, "mxring: clearing the capabilities: %s\n", strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		fprintf(err, "mxring: no_new_privs: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* Each comma-separated path of list (blanks around it trimmed) opens for
 * reading; names those that do not, and returns their count. */
static int check_list(const char *key, const char *list, const struct priv *p, FILE *err)
{
	int rc = 0;
	char path[1024];
	while (path_list_next(&list, path, sizeof(path))) {
		if (!path[0])
			continue;
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0) {
			fprintf(err,
				"mxring: %s %s: user %s cannot read it (%s), so a reload (SIGHUP) "
				"would fail: make it readable by the user or its group\n",
				key, path, p->name, strerror(errno));
			rc++;
		} else {
			close(fd);
		}
	}
	return rc;
}

int priv_check_reload(const struct config *cfg, const struct priv *p, FILE *err)
{
	int rc = check_list("recipient_table", cfg->recipient_table, p, err);
	if (cfg->tls_security_level == TLS_LEVEL_NONE && !cfg->nsmtps_listen)
		return rc;
	return rc + check_list("tls_cert_file", cfg->tls_cert_file, p, err) +
	       check_list("tls_key_file", cfg->tls_key_file, p, err) +
	       check_list("tls_ticket_key_file", cfg->tls_ticket_key_file, p, err);
}
