/*
 * screen.c - the recipient table in force and its reload (screen.h).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "rcpt_table.h"
#include "screen.h"
#include "shard.h"

static _Atomic(struct rcpt_table *) current;

/* A message written to a memory stream, its last newline dropped, escaped for the log. */
static void log_why(const char *prefix, char *why, size_t len)
{
	if (len && why[len - 1] == '\n')
		why[--len] = 0;
	char esc[LOG_CLIENT_TEXT_MAX * 4 + 8];
	log_escape(esc, sizeof(esc), why ? why : "", why ? len : 0, 400);
	log_line("%s: \"%s\"", prefix, esc);
}

int screen_start(const struct config *cfg, FILE *err)
{
	if (!cfg->recipient_table[0])
		return 0;
	struct rcpt_table *t;
	uint64_t t0 = mono_ms();
	if (rcpt_table_load(cfg->recipient_table, &t, err) != 0)
		return -1;
	atomic_store_explicit(&current, t, memory_order_release);
	log_line("recipient table loaded entries=%zu bytes=%zu load_ms=%llu files=%s",
		 rcpt_table_entries(t), rcpt_table_bytes(t), (unsigned long long)(mono_ms() - t0),
		 cfg->recipient_table);
	return 0;
}

void screen_reload(const struct config *cfg, struct shard **shards, unsigned nshards)
{
	if (!cfg->recipient_table[0])
		return;
	char *why = NULL;
	size_t why_len = 0;
	FILE *err = open_memstream(&why, &why_len);
	struct rcpt_table *t = NULL;
	uint64_t t0 = mono_ms();
	int rc = err ? rcpt_table_load(cfg->recipient_table, &t, err) : -1;
	if (err)
		fclose(err);
	if (rc != 0) {
		log_why("reload: failed, keeping the old recipient table", why, why_len);
		free(why);
		return;
	}
	free(why);
	struct rcpt_table *old = atomic_exchange_explicit(&current, t, memory_order_acq_rel);
	log_line("reload: recipient table loaded entries=%zu bytes=%zu load_ms=%llu files=%s",
		 rcpt_table_entries(t), rcpt_table_bytes(t), (unsigned long long)(mono_ms() - t0),
		 cfg->recipient_table);
	/* Every shard passes its tick at least once a second. */
	if (shard_quiesce(shards, nshards, 5000))
		rcpt_table_free(old);
	else
		log_line("reload: a shard did not end a pass within 5 s; the old recipient table "
			 "is kept in memory");
}

bool screen_rcpt_known(const struct config *cfg, const struct addr *a)
{
	const struct rcpt_table *t = atomic_load_explicit(&current, memory_order_acquire);
	if (!t)
		return true;
	return rcpt_table_lookup(t, a->mailbox, a->len, a->at, cfg->recipient_delimiter);
}

void screen_stop(void)
{
	rcpt_table_free(atomic_exchange(&current, NULL));
}
