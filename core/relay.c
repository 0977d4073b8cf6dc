/*
 * relay.c - relay workers (relay.h): the spool read as a queue, sessions
 * to the hub through io_uring, results into the delivery journal.
 *
 * One worker, one thread; nothing here is shared between workers but the
 * counters. A worker's loop pass: read new records of its segments into the
 * window (scan), start transactions for the messages that are due
 * (dispatch), wait for completions (at most until the next deadline), drive
 * the sessions they belong to, then make the pass's journal records durable
 * and act on them (apply). Every session has at most one operation in
 * flight: smtpc's conversation is half-duplex (a pipelined group is written
 * whole, then its replies are read).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "dsn.h"
#include "fsutil.h"
#include "journal.h"
#include "log.h"
#include "msg.h"
#include "relay.h"
#include "segment.h"
#include "smtpc.h"
#include "spool.h"
#include "spoolrec.h"
#include "tlsclient.h"
#include "writer.h"

#define IBUF_SIZE    (8u << 10)	  /* replies: several SMTPC_LINE_MAX lines */
#define OBUF_SIZE    (8u << 10)	  /* commands (>= SMTPC_OUT_MIN) */
#define SCANBUF_SIZE (256u << 10) /* segment bytes the scan reads at once */
#define RBUF_SIZE    (64u << 10)  /* body bytes read per step */
/* ... dot-stuffed (at most doubled), with the next message's commands behind */
#define SBUF_SIZE      (2 * RBUF_SIZE + OBUF_SIZE + 16)
#define PEND_MAX       4096u		       /* messages whose parts came, FINAL not yet */
#define UNSYNCED_BYTES (JOURNAL_BUF_BYTES / 2) /* journal bytes between two syncs */
#define IDLE_KEEP_MS   1000u		       /* an idle session waits this for work */
#define QUIT_WAIT_MS   2000u		       /* the 221 to QUIT is awaited this long */
#define TICK_MAX_MS    1000u		       /* the loop looks around at least this often */
/* Results wait at most this long for their fdatasync: one per pass would
 * bound the relay by the disk's sync latency. */
#define SYNC_EVERY_MS 10u

enum ud_kind { UD_SESS = 1, UD_WAKE = 2, UD_TIMEOUT = 3 };

static uint64_t ud_make(enum ud_kind k, uint32_t idx, uint32_t gen)
{
	return (uint64_t)k | ((uint64_t)idx << 8) | ((uint64_t)gen << 32);
}

/* ---- the queue's objects ---- */

/* A segment read by the scan, or still referenced by messages of the window. */
struct rseg {
	struct rseg *next; /* the worker's list */
	char name[SEGMENT_NAME_LEN + 1];
	unsigned writer;
	uint64_t run_us;
	uint32_t seq;
	int fd;
	uint32_t seed;
	uint64_t off;	  /* the next record to read */
	bool scanned;	  /* read to its end, and no record will be added */
	bool done_queued; /* SEGDONE appended, deletion after the sync */
	bool keep;	  /* unreadable: never deleted */
	uint32_t refs;	  /* parts and messages in memory that point into it */
};

/* Stored bytes of a message: a record's trace and body, or a DSN in memory. */
struct rpart {
	struct rseg *seg; /* NULL: mem */
	const uint8_t *mem;
	uint64_t off, len;
};

/* Parts whose FINAL has not been read yet. */
struct pend {
	struct pend *next;
	char qid[QID_LEN + 1];
	uint32_t nparts, cap;
	struct rpart *parts;
	uint64_t seen_ms;
};

enum { R_PENDING = 0, R_TRYING, R_DONE, R_OWES_DSN, R_IN_DSN };

struct rrcpt {
	const char *addr;
	uint8_t state;
	uint8_t outcome; /* the last attempt's (journal_outcome), until applied */
	uint32_t attempts;
	uint64_t last_us; /* last attempt */
	bool remote;	  /* failed: the hub said so (not a reply made here) */
	char *reply;	  /* failed: the reply, for the DSN (owned) */
	char *mta;	  /* failed by a hub reached by name or address: its host (owned) */
	char dsn[JOURNAL_DSN_MAX + 1];
};

struct rmsg {
	struct rmsg *next_apply; /* transaction ended, results in the journal buffer */
	struct rseg *seg;	 /* of the FINAL */
	uint64_t final_off;
	char qid[QID_LEN + 1];
	uint64_t time_us; /* arrival */
	uint32_t flags;	  /* ENV_* */
	uint64_t size;	  /* stored bytes: trace and body */
	char *from;	  /* owned with the strings below */
	uint32_t nrcpt;
	struct rrcpt *r;
	uint32_t nparts;
	struct rpart *parts;
	uint64_t next_us; /* due */
	uint32_t attempts;
	int heap;		/* index in the heap, -1 when not in it */
	struct rmsg *next_fifo; /* in the FIFO of due messages */
	bool in_fifo;
	bool busy;
	/* A DSN to the sender of orig, for orig's recipients in dsn_idx. */
	struct rmsg *orig;
	struct rmsg *dsn; /* this message's DSN under way */
	uint8_t *body;
	uint32_t *dsn_idx;
	uint32_t ndsn;
	uint64_t dsn_made_us;
	int dsn_class; /* the DSN's result: -1 none yet, else smtpc_class */
	char dsn_reply[JOURNAL_REPLY_MAX + 1];
	/* The attempt under way. */
	uint32_t ntry;
	uint32_t *try_idx;
	const char **try_addr;
};

enum sess_phase { SP_CONNECT = 1, SP_TALK, SP_BODY, SP_IDLE, SP_QUIT, SP_CLOSING };
enum sess_op {
	OP_NONE = 0,
	OP_CONNECT,
	OP_SEND,   /* commands (out) */
	OP_RECV,   /* replies (into ibuf) */
	OP_BODY,   /* the body (sbuf) */
	OP_TLS_TX, /* ciphertext of a send under TLS: then the send's own completion */
	OP_TLS_RX, /* ciphertext into cbuf: then replies */
	OP_HS_TX,  /* the handshake's ciphertext out */
	OP_HS_RX,  /* the handshake's ciphertext in */
};

struct worker;

struct sess {
	struct worker *wk;
	bool used;
	uint32_t gen;
	int fd;
	uint8_t phase;
	uint8_t op;	/* enum sess_op: the operation in flight */
	bool cancelled; /* its cancel was asked for */
	bool greeted;	/* the server's greeting came */
	bool failed_connect;
	unsigned dest, addr;
	uint64_t deadline_ms;
	struct smtpc c;
	struct smtpc_out out;
	size_t osent;
	uint8_t obuf[OBUF_SIZE];
	uint8_t ibuf[IBUF_SIZE];
	size_t ilen;
	enum smtpc_next nx; /* what to do once out is sent */
	struct rmsg *job;
	struct rmsg *next_job; /* pipelined behind job's end of data (smtpc_send_next) */
	uint32_t job_results;  /* results of job so far */
	bool body_sent_early;  /* smtpc_body_sent was called when the body was queued */
	struct smtpc_msg sm;
	unsigned nmsgs;
	char relay[JOURNAL_RELAY_MAX + 1];
	/* Body. */
	uint32_t bpart;
	uint64_t boff;
	struct smtpc_dot dot;
	bool bdone;
	uint8_t *sbuf; /* owned: SBUF_SIZE */
	size_t slen, ssent;
	char last_err[JOURNAL_RELAY_MAX + 256];
	/* STARTTLS: the session, and ciphertext received not yet opened. */
	struct tlsc_conn *tls;
	bool tls_up;   /* handshake done: every byte goes through tls */
	uint8_t *cbuf; /* owned while tls: IBUF_SIZE */
	size_t clen;
	const uint8_t *tx_p; /* the plaintext send under way */
	size_t tx_len, tx_done;
	uint8_t tx_op;
};

struct dest_addrs {
	struct sockaddr_storage sa[RELAY_ADDRS_MAX];
	socklen_t salen[RELAY_ADDRS_MAX];
	char text[RELAY_ADDRS_MAX][INET6_ADDRSTRLEN];
	unsigned n;
};

struct worker {
	struct relay *rl;
	unsigned id;
	pthread_t thread;
	bool running;
	struct io_uring ring;
	bool ring_ok;
	int efd;
	uint64_t efd_val;
	int spoolfd, activefd, readyfd;
	struct journal *j;
	struct journal_index *ix; /* the replay at start; freed once the scan passed it */
	struct smtpc_conf sconf[RELAY_HOSTS_MAX];	 /* per relay_host entry */
	struct tlsc_session *tls_saved[RELAY_HOSTS_MAX]; /* the last session, to resume */
	bool scan_due;					 /* a writer published */
	char **lnames[2]; /* ready/ and active/, for this scan (listing) */
	uint32_t ln[2];
	bool listed, list_due;
	uint64_t last_list_ms;
	uint64_t last_scan_ms;
	uint64_t last_sync_ms;
	bool window_full;
	/* Scan. */
	struct rseg *segs;
	char last[WRITERS_MAX][SEGMENT_NAME_LEN + 1]; /* per writer: last segment started */
	struct rseg *cur[WRITERS_MAX];
	struct pend *pend;
	unsigned npend;
	uint8_t *rbuf;	  /* owned: RBUF_SIZE (also record checks) */
	uint8_t *scanbuf; /* owned: SCANBUF_SIZE, bytes [scan_off, +scan_len) of scan_seg */
	struct rseg *scan_seg;
	uint64_t scan_off;
	size_t scan_len;
	uint8_t *envbuf; /* owned: envelopes */
	size_t envcap;
	char *rcptbuf;
	size_t rcptcap;
	struct envelope env;
	/* Queue. */
	uint32_t nmsgs;	    /* messages of the window (DSNs not counted) */
	struct rmsg **heap; /* waiting for a later time (retries), by next_us */
	uint32_t nheap, heapcap;
	struct rmsg *fifo_head, *fifo_tail; /* due now (fresh from the scan), in order */
	uint32_t nfifo;
	struct rmsg *apply_head, **apply_tail;
	struct journal_rec *unsynced;
	uint32_t nunsynced, unsynced_cap;
	size_t unsynced_bytes;
	struct rseg *done_segs[64];
	unsigned ndone_segs;
	bool journal_failing;
	/* Sessions. */
	struct sess *sess;
	unsigned nsess_cap, nsess, nconnecting;
	uint64_t hub_dead_until_us;
	uint32_t hub_dead_count;
	bool timeout_armed;
	struct __kernel_timespec ts;
	bool stopping;
	uint64_t stop_deadline_ms;
	_Atomic bool retry_now;
	/* Counters. */
	_Atomic uint64_t tls_sessions, tls_resumed, tls_failures;
	_Atomic uint64_t sent, deferred, bounced, dsn_sent, dsn_dropped, sessions, connect_fails,
	    queue_msgs, queue_bytes, oldest_us, segments_done, journal_syncs, journal_errors;
	/* Sorted names of the last listing, kept while walking it. */
};

struct addr_set {
	struct dest_addrs dest[RELAY_HOSTS_MAX];
	uint64_t retired_ms; /* when it was replaced */
};

#define RETIRED_MAX 4
#define RETIRED_MS  1000u /* a connect reads its set for microseconds */

struct relay {
	const struct config *cfg;
	struct writer_set *ws;
	unsigned nworkers;
	struct worker *w;
	/* relay_host's addresses: resolved at start and on SIGHUP (relay_reload),
	 * read by the workers as they connect. A replaced set is freed once it
	 * has been out of use for a while (RETIRED_MAX sets are kept). */
	_Atomic(struct addr_set *) addrs;
	struct addr_set *retired[RETIRED_MAX];
	struct tlsc_ctx *tls[RELAY_HOSTS_MAX]; /* per destination; NULL: relay_tls = none */
	char helo[DOMAIN_MAX + 1];
	_Atomic bool stop;
};

_Atomic bool relay_spool_over;

static void efd_signal(int fd)
{
	uint64_t one = 1;
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static uint64_t backoff_us(const struct config *cfg, uint32_t attempts)
{
	uint64_t d = cfg->relay_retry_min;
	for (uint32_t i = 1; i < attempts && d < cfg->relay_retry_max; i++)
		d *= 2;
	if (d > cfg->relay_retry_max)
		d = cfg->relay_retry_max;
	return d * 1000000u;
}

/* ---- the heap of messages waiting, by next_us ---- */

static void heap_swap(struct worker *wk, uint32_t a, uint32_t b)
{
	struct rmsg *t = wk->heap[a];
	wk->heap[a] = wk->heap[b];
	wk->heap[b] = t;
	wk->heap[a]->heap = (int)a;
	wk->heap[b]->heap = (int)b;
}

static void heap_up(struct worker *wk, uint32_t i)
{
	while (i > 0 && wk->heap[(i - 1) / 2]->next_us > wk->heap[i]->next_us) {
		heap_swap(wk, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct worker *wk, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < wk->nheap && wk->heap[l]->next_us < wk->heap[m]->next_us)
			m = l;
		if (r < wk->nheap && wk->heap[r]->next_us < wk->heap[m]->next_us)
			m = r;
		if (m == i)
			return;
		heap_swap(wk, i, m);
		i = m;
	}
}

static int heap_push(struct worker *wk, struct rmsg *m)
{
	if (wk->nheap == wk->heapcap) {
		uint32_t cap = wk->heapcap ? 2 * wk->heapcap : 1024;
		struct rmsg **h = realloc(wk->heap, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		wk->heap = h;
		wk->heapcap = cap;
	}
	m->heap = (int)wk->nheap;
	wk->heap[wk->nheap++] = m;
	heap_up(wk, (uint32_t)m->heap);
	return 0;
}

/* How many messages are due at now, counting up to max: the heap's due part only. */
static unsigned heap_due(const struct worker *wk, uint64_t now, unsigned max)
{
	uint32_t stack[64];
	unsigned n = 0, top = 0;
	if (wk->nheap && wk->heap[0]->next_us <= now)
		stack[top++] = 0;
	while (top && n < max) {
		uint32_t i = stack[--top];
		n++;
		for (uint32_t c = 2 * i + 1; c <= 2 * i + 2 && c < wk->nheap; c++)
			if (wk->heap[c]->next_us <= now && top < 64)
				stack[top++] = c;
	}
	return n;
}

static struct rmsg *heap_pop(struct worker *wk)
{
	if (wk->nheap == 0)
		return NULL;
	struct rmsg *m = wk->heap[0];
	wk->nheap--;
	if (wk->nheap > 0) {
		wk->heap[0] = wk->heap[wk->nheap];
		wk->heap[0]->heap = 0;
		heap_down(wk, 0);
	}
	m->heap = -1;
	return m;
}

/*
 * The waiting messages: a FIFO of those due now (what the scan reads is due
 * at once, in arrival order: no heap work for the common case) and the heap
 * of those due later.
 */
static int q_push(struct worker *wk, struct rmsg *m)
{
	if (m->next_us > real_us())
		return heap_push(wk, m);
	m->next_fifo = NULL;
	m->in_fifo = true;
	if (wk->fifo_tail)
		wk->fifo_tail->next_fifo = m;
	else
		wk->fifo_head = m;
	wk->fifo_tail = m;
	wk->nfifo++;
	return 0;
}

static bool q_queued(const struct rmsg *m)
{
	return m->heap >= 0 || m->in_fifo;
}

/* The next message due at now (retries first), taken out; NULL when none. */
static struct rmsg *q_pop_due(struct worker *wk, uint64_t now)
{
	if (wk->nheap && wk->heap[0]->next_us <= now)
		return heap_pop(wk);
	struct rmsg *m = wk->fifo_head;
	if (!m)
		return NULL;
	wk->fifo_head = m->next_fifo;
	if (!wk->fifo_head)
		wk->fifo_tail = NULL;
	m->next_fifo = NULL;
	m->in_fifo = false;
	wk->nfifo--;
	return m;
}

/* When the next message is due (0: one is due now; UINT64_MAX: none waits). */
static uint64_t q_next_us(const struct worker *wk)
{
	if (wk->fifo_head)
		return 0;
	return wk->nheap ? wk->heap[0]->next_us : UINT64_MAX;
}

/* Messages due at now, counted up to max. */
static unsigned q_due(const struct worker *wk, uint64_t now, unsigned max)
{
	unsigned n = wk->nfifo < max ? wk->nfifo : max;
	return n + heap_due(wk, now, max - n);
}

/* ---- the journal: records of a pass, their sync, and what follows ---- */

static int wk_sync(struct worker *wk);

/* Appends r (kept until it is durable: appended again after a failed sync). */
static void wk_record(struct worker *wk, struct journal_rec *r)
{
	size_t est = JOURNAL_RESULT_FIXED + strlen(r->reply) + strlen(r->relay);
	if (wk->nunsynced == wk->unsynced_cap || wk->unsynced_bytes + est > UNSYNCED_BYTES)
		(void)wk_sync(wk);
	if (wk->nunsynced == wk->unsynced_cap) {
		/* The journal fails: this record waits in no buffer; its outcome is
		 * lost (a message delivered again after a crash, at worst). */
		log_line("relay: worker=%u journal full after failures: a record is dropped",
			 wk->id);
		return;
	}
	r->time_us = r->time_us ? r->time_us : real_us();
	uint64_t seq;
	int rc = journal_append(wk->j, r, &seq);
	if (rc < 0 && rc != -ENOBUFS) {
		log_line("relay: worker=%u journal record refused: %s", wk->id, strerror(-rc));
		return;
	}
	wk->unsynced[wk->nunsynced++] = *r;
	wk->unsynced_bytes += est;
}

static void msg_apply(struct worker *wk, struct rmsg *m);
static void seg_maybe_done(struct worker *wk, struct rseg *sg);

/*
 * Makes the pass's records durable, then acts on them. -1 when the sync
 * failed: the records are appended again, and the actions wait.
 */
static int wk_sync(struct worker *wk)
{
	if (wk->nunsynced == 0 && !wk->apply_head && wk->ndone_segs == 0)
		return 0;
	if (wk->nunsynced) {
		int r = journal_sync(wk->j, NULL);
		if (r < 0) {
			atomic_fetch_add_explicit(&wk->journal_errors, 1, memory_order_relaxed);
			if (!wk->journal_failing)
				log_line("relay: worker=%u journal sync failed: %s (retrying)",
					 wk->id, strerror(-r));
			wk->journal_failing = true;
			for (uint32_t i = 0; i < wk->nunsynced; i++) {
				uint64_t seq;
				if (journal_append(wk->j, &wk->unsynced[i], &seq) < 0)
					break; /* appended again at the next failure's turn */
			}
			return -1;
		}
		if (wk->journal_failing)
			log_line("relay: worker=%u journal sync works again", wk->id);
		wk->journal_failing = false;
		atomic_fetch_add_explicit(&wk->journal_syncs, 1, memory_order_relaxed);
		wk->nunsynced = 0;
		wk->unsynced_bytes = 0;
	}
	/* Segments whose SEGDONE is durable go. */
	unsigned nd = wk->ndone_segs;
	wk->ndone_segs = 0;
	for (unsigned i = 0; i < nd; i++) {
		struct rseg *sg = wk->done_segs[i];
		int r = journal_delete_segment(wk->rl->cfg->spool_dir, sg->name);
		if (r < 0)
			log_line("relay: segment=%s delete failed: %s", sg->name, strerror(-r));
		atomic_fetch_add_explicit(&wk->segments_done, 1, memory_order_relaxed);
		struct rseg **pp = &wk->segs;
		while (*pp && *pp != sg)
			pp = &(*pp)->next;
		if (*pp)
			*pp = sg->next;
		if (wk->scan_seg == sg)
			wk->scan_seg = NULL;
		fsutil_close(&sg->fd);
		free(sg);
	}
	struct rmsg *m = wk->apply_head;
	wk->apply_head = NULL;
	wk->apply_tail = &wk->apply_head;
	while (m) {
		struct rmsg *next = m->next_apply;
		m->next_apply = NULL;
		msg_apply(wk, m);
		m = next;
	}
	if (journal_compact_due(wk->j)) {
		int r = journal_compact(wk->j);
		if (r < 0)
			log_line("relay: worker=%u journal compaction failed: %s", wk->id,
				 strerror(-r));
	}
	return 0;
}

static void queue_apply(struct worker *wk, struct rmsg *m)
{
	m->next_apply = NULL;
	*wk->apply_tail = m;
	wk->apply_tail = &m->next_apply;
}

/* ---- segments ---- */

static void seg_unref(struct worker *wk, struct rseg *sg)
{
	if (!sg)
		return;
	sg->refs--;
	seg_maybe_done(wk, sg);
}

/* A segment read to its end, no message of which is waiting: SEGDONE, then deleted. */
static void seg_maybe_done(struct worker *wk, struct rseg *sg)
{
	if (!sg->scanned || sg->refs || sg->done_queued || sg->keep)
		return;
	if (wk->ndone_segs == sizeof(wk->done_segs) / sizeof(wk->done_segs[0]))
		(void)wk_sync(wk);
	if (wk->ndone_segs == sizeof(wk->done_segs) / sizeof(wk->done_segs[0]))
		return; /* the journal fails: the segment stays until a later look */
	struct journal_rec r = {.type = JOURNAL_REC_SEGDONE};
	snprintf(r.seg, sizeof(r.seg), "%s", sg->name);
	sg->done_queued = true;
	wk_record(wk, &r);
	wk->done_segs[wk->ndone_segs++] = sg;
}

static void msg_free(struct worker *wk, struct rmsg *m)
{
	if (!m->orig) {
		for (uint32_t i = 0; i < m->nparts; i++)
			seg_unref(wk, m->parts[i].seg);
		seg_unref(wk, m->seg);
		wk->nmsgs--;
		for (uint32_t i = 0; i < m->nrcpt; i++) {
			free(m->r[i].reply);
			free(m->r[i].mta);
		}
	}
	free(m->parts);
	free(m->r);
	free(m->from);
	free(m->body);
	free(m->dsn_idx);
	free(m->try_idx);
	free(m->try_addr);
	free(m);
}

/* ---- the scan: records of the writers' segments into the window ---- */

static bool my_segment(const char *name, void *arg)
{
	struct worker *wk = arg;
	unsigned writer;
	uint64_t run;
	uint32_t seq;
	return segment_name_parse(name, &writer, &run, &seq) && writer % wk->rl->nworkers == wk->id;
}

/* How far segment sg may be read: its size when whole, else the writer's durable end. */
static uint64_t seg_limit(struct worker *wk, struct rseg *sg, bool *whole)
{
	struct spool_pos p;
	*whole = true;
	if (writers_position(wk->rl->ws, sg->writer, &p) == 0 && p.valid &&
	    p.run_us == sg->run_us) {
		if (sg->seq > p.seq) {
			*whole = false;
			return 0;
		}
		if (sg->seq == p.seq && p.active) {
			*whole = false;
			return p.synced_off;
		}
	}
	struct stat st;
	if (fstat(sg->fd, &st) != 0)
		return 0;
	return (uint64_t)st.st_size;
}

/* Opens the next segment of writer w after wk->last[w], or NULL. */
/*
 * The folders' listing for this scan: made at most once a scan, and only
 * when one is due (at start, once a second, after a segment was read to
 * its end), not at every wake-up of a writer.
 */
static bool listing(struct worker *wk)
{
	if (wk->listed)
		return true;
	if (!wk->list_due)
		return false;
	int dfd[2] = {wk->readyfd, wk->activefd};
	for (int d = 0; d < 2; d++)
		if (fsutil_dir_list(dfd[d], my_segment, wk, &wk->lnames[d], &wk->ln[d]) < 0) {
			wk->lnames[d] = NULL;
			wk->ln[d] = 0;
		}
	wk->listed = true;
	wk->list_due = false;
	wk->last_list_ms = mono_ms();
	return true;
}

static void listing_free(struct worker *wk)
{
	for (int d = 0; d < 2; d++) {
		fsutil_names_free(wk->lnames[d], wk->ln[d]);
		wk->lnames[d] = NULL;
		wk->ln[d] = 0;
	}
	wk->listed = false;
}

static struct rseg *seg_next(struct worker *wk, unsigned w)
{
	if (!listing(wk))
		return NULL;
	char **const *names = wk->lnames;
	const uint32_t *n = wk->ln;
	int dfd[2] = {wk->readyfd, wk->activefd};
	const char *best = NULL;
	int best_dir = -1;
	char prefix[8];
	snprintf(prefix, sizeof(prefix), "w%02u-", w);
	for (int d = 0; d < 2; d++) {
		for (uint32_t i = 0; i < n[d]; i++) {
			const char *nm = names[d][i];
			if (strncmp(nm, prefix, 4) != 0 || strcmp(nm, wk->last[w]) <= 0)
				continue;
			if (!best || strcmp(nm, best) < 0) {
				best = nm;
				best_dir = d;
			}
			break; /* sorted: the first one past last is this folder's */
		}
	}
	struct rseg *sg = NULL;
	if (best) {
		sg = calloc(1, sizeof(*sg));
		if (sg) {
			snprintf(sg->name, sizeof(sg->name), "%s", best);
			segment_name_parse(sg->name, &sg->writer, &sg->run_us, &sg->seq);
			sg->fd = openat(dfd[best_dir], best, O_RDONLY | O_CLOEXEC);
			if (sg->fd < 0 && best_dir == 0)
				sg->fd = openat(wk->activefd, best, O_RDONLY | O_CLOEXEC);
			if (sg->fd < 0 && best_dir == 1) /* moved into ready/ meanwhile */
				sg->fd = openat(wk->readyfd, best, O_RDONLY | O_CLOEXEC);
			if (sg->fd < 0) {
				free(sg);
				sg = NULL;
			}
		}
	}
	return sg;
}

static struct pend *pend_find(struct worker *wk, const char *qid, struct pend ***link)
{
	struct pend **pp = &wk->pend;
	for (; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->qid, qid) == 0) {
			if (link)
				*link = pp;
			return *pp;
		}
	return NULL;
}

static void pend_drop(struct worker *wk, struct pend **link)
{
	struct pend *p = *link;
	*link = p->next;
	for (uint32_t i = 0; i < p->nparts; i++)
		seg_unref(wk, p->parts[i].seg);
	free(p->parts);
	free(p);
	wk->npend--;
}

static int part_add(struct rpart **parts, uint32_t *n, uint32_t *cap, struct rseg *sg, uint64_t off,
		    uint64_t len)
{
	if (*n == *cap) {
		uint32_t c = *cap ? *cap * 2 : 4;
		struct rpart *p = realloc(*parts, c * sizeof(*p));
		if (!p)
			return -ENOMEM;
		*parts = p;
		*cap = c;
	}
	(*parts)[(*n)++] = (struct rpart){.seg = sg, .off = off, .len = len};
	sg->refs++;
	return 0;
}

static void msg_owes_dsn(struct worker *wk, struct rmsg *m);

/* A FINAL record at off: the message joins the window (unless the journal says it is done). */
static void scan_final(struct worker *wk, struct rseg *sg, uint64_t off,
		       const struct spoolrec_hdr *h, const uint8_t *rec)
{
	if (h->env_len > wk->envcap) {
		uint8_t *b = realloc(wk->envbuf, h->env_len);
		if (!b)
			return;
		wk->envbuf = b;
		wk->envcap = h->env_len;
	}
	if (h->env_len > wk->rcptcap) {
		char *b = realloc(wk->rcptbuf, h->env_len);
		if (!b)
			return;
		wk->rcptbuf = b;
		wk->rcptcap = h->env_len;
	}
	struct spoolrec_env_totals t;
	const uint8_t *envp = rec ? rec + h->hdr_len : wk->envbuf;
	if ((!rec && fsutil_pread_all(sg->fd, wk->envbuf, h->env_len, off + h->hdr_len) < 0) ||
	    spoolrec_env_decode(envp, h->env_len, &wk->env, wk->rcptbuf, wk->rcptcap, &t) < 0) {
		log_line("relay: segment=%s offset=%" PRIu64
			 " qid=%s: unreadable envelope, skipped",
			 sg->name, off, h->qid);
		return;
	}
	struct envelope *env = &wk->env;
	struct pend **link = NULL;
	struct pend *p = pend_find(wk, h->qid, &link);
	uint32_t have = p ? p->nparts : 0;
	if (have + 1 != t.nparts) {
		log_line("relay: segment=%s qid=%s: %u parts of %u found, not relayed", sg->name,
			 h->qid, have + 1, t.nparts);
		if (p)
			pend_drop(wk, link);
		return;
	}
	struct journal_msg_state st;
	bool known = wk->ix && journal_index_find(wk->ix, sg->name, off, &st);
	if (known && st.nrcpt != env->nrcpt)
		known = false;
	bool null_sender = env->from[0] == '\0';
	if (known && st.pending == 0) {
		bool owes = false;
		for (uint32_t i = 0; i < st.nrcpt && !null_sender; i++)
			if ((st.rcpt[i].state == JOURNAL_FAILED ||
			     st.rcpt[i].state == JOURNAL_EXPIRED) &&
			    !(st.rcpt[i].flags & JOURNAL_RCPT_BOUNCED))
				owes = true;
		if (!owes) {
			if (p)
				pend_drop(wk, link);
			return;
		}
	}
	struct rmsg *m = calloc(1, sizeof(*m));
	size_t slen = strlen(env->from) + 1 + env->rcpts_len;
	if (m) {
		m->from = malloc(slen);
		m->r = calloc(env->nrcpt, sizeof(*m->r));
		m->try_idx = calloc(env->nrcpt, sizeof(*m->try_idx));
		m->try_addr = calloc(env->nrcpt, sizeof(*m->try_addr));
	}
	if (!m || !m->from || !m->r || !m->try_idx || !m->try_addr) {
		if (m) {
			free(m->from);
			free(m->r);
			free(m->try_idx);
			free(m->try_addr);
			free(m);
		}
		log_line("relay: out of memory for qid=%s", h->qid);
		return;
	}
	memcpy(m->from, env->from, strlen(env->from) + 1);
	char *rs = m->from + strlen(env->from) + 1;
	memcpy(rs, env->rcpts, env->rcpts_len);
	m->nrcpt = env->nrcpt;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		m->r[i].addr = rs;
		rs += strlen(rs) + 1;
	}
	snprintf(m->qid, sizeof(m->qid), "%s", h->qid);
	m->seg = sg;
	sg->refs++;
	m->final_off = off;
	m->time_us = env->time_us;
	m->flags = env->flags;
	m->size = t.msg_size;
	m->heap = -1;
	m->dsn_class = -1;
	/* The parts: those read before, then this record's. */
	if (p) {
		m->parts = p->parts;
		m->nparts = p->nparts;
		uint32_t cap = p->cap;
		p->parts = NULL;
		p->nparts = 0;
		pend_drop(wk, link);
		part_add(&m->parts, &m->nparts, &cap, sg, off + h->hdr_len + h->env_len,
			 (uint64_t)h->trace_len + h->body_len);
	} else {
		uint32_t cap = 0;
		part_add(&m->parts, &m->nparts, &cap, sg, off + h->hdr_len + h->env_len,
			 (uint64_t)h->trace_len + h->body_len);
	}
	wk->nmsgs++;
	uint64_t now = real_us(), due = now;
	bool pending = false, owes = false;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct rrcpt *rr = &m->r[i];
		if (!known || st.rcpt[i].state == 0) {
			pending = true;
			continue;
		}
		const struct journal_rcpt *jr = &st.rcpt[i];
		rr->attempts = jr->attempts;
		rr->last_us = jr->time_us;
		if (jr->attempts > m->attempts)
			m->attempts = jr->attempts;
		if (jr->state == JOURNAL_DEFERRED) {
			/* Tried again now, not at the journal's next_us: a restart is a
			 * retry point, and deferred messages at the head of the window
			 * must not hold fresh mail behind them for hours. */
			pending = true;
		} else if (jr->state == JOURNAL_DELIVERED || null_sender ||
			   (jr->flags & JOURNAL_RCPT_BOUNCED)) {
			rr->state = R_DONE;
		} else {
			rr->state = R_OWES_DSN;
			snprintf(rr->dsn, sizeof(rr->dsn), "%s",
				 jr->state == JOURNAL_EXPIRED ? "4.4.7" : "5.0.0");
			rr->reply = strdup(jr->state == JOURNAL_EXPIRED
					       ? "message expired in the queue"
					       : "delivery failed (the hub's reply was not kept "
						 "across a restart)");
			owes = true;
		}
	}
	if (pending) {
		m->next_us = due;
		q_push(wk, m);
	}
	if (owes)
		msg_owes_dsn(wk, m);
	if (!pending && !owes)
		msg_free(wk, m);
}

/*
 * The record at sg->off, below lim: 0 and *h, with *rec its bytes in the
 * scan buffer (NULL for one larger than the buffer, checked from the file).
 * Records are read SCANBUF_SIZE bytes at a time, not one pread each.
 */
static int scan_record(struct worker *wk, struct rseg *sg, uint64_t lim, struct spoolrec_hdr *h,
		       const uint8_t **rec)
{
	*rec = NULL;
	for (int pass = 0; pass < 2; pass++) {
		if (wk->scan_seg == sg && sg->off >= wk->scan_off &&
		    sg->off < wk->scan_off + wk->scan_len) {
			size_t at = (size_t)(sg->off - wk->scan_off);
			int r =
			    spoolrec_check_mem(wk->scanbuf + at, wk->scan_len - at, sg->seed, h);
			if (r == 0) {
				*rec = wk->scanbuf + at;
				return 0;
			}
			if (r != -EAGAIN || h->rec_len > SCANBUF_SIZE || pass == 1)
				break;
		}
		uint64_t want = lim - sg->off;
		if (want > SCANBUF_SIZE)
			want = SCANBUF_SIZE;
		if (want < SPOOL_REC_HDR_LEN ||
		    fsutil_pread_all(sg->fd, wk->scanbuf, (size_t)want, sg->off) < 0) {
			wk->scan_seg = NULL;
			break;
		}
		wk->scan_seg = sg;
		wk->scan_off = sg->off;
		wk->scan_len = (size_t)want;
	}
	bool torn;
	return spoolrec_check(sg->fd, sg->off, lim, sg->seed, h, wk->rbuf, RBUF_SIZE, &torn);
}

/* Reads what is new in writer w's segments, while the window has room. */
static void scan_writer(struct worker *wk, unsigned w)
{
	/* How far the current segment may be read: asked of the writer (a lock,
	 * and fstat for a whole segment) once, and again only when reached. */
	struct rseg *lim_seg = NULL;
	uint64_t lim = 0;
	bool whole = false;
	for (unsigned guard = 0; guard < 100000 && wk->nmsgs < RELAY_WINDOW_MSGS; guard++) {
		struct rseg *sg = wk->cur[w];
		if (!sg) {
			sg = seg_next(wk, w);
			if (!sg)
				return;
			char before[SEGMENT_NAME_LEN + 1];
			memcpy(before, wk->last[w], sizeof(before));
			snprintf(wk->last[w], sizeof(wk->last[w]), "%s", sg->name);
			sg->next = wk->segs;
			wk->segs = sg;
			if (spoolrec_seg_header(sg->fd, UINT64_MAX, wk->rbuf, RBUF_SIZE,
						&sg->seed) < 0) {
				/* Not whole yet (a new segment) or damaged: look again later. */
				bool sg_whole;
				if (seg_limit(wk, sg, &sg_whole) > 0 && sg_whole) {
					/* Kept for the operator (mxring-spool verify), never
					 * deleted. */
					log_line("relay: segment=%s: bad header, not relayed",
						 sg->name);
					sg->scanned = true;
					sg->keep = true;
					continue;
				}
				/* Try again at the next pass. */
				memcpy(wk->last[w], before, sizeof(before));
				struct rseg **pp = &wk->segs;
				while (*pp != sg)
					pp = &(*pp)->next;
				*pp = sg->next;
				if (wk->scan_seg == sg)
					wk->scan_seg = NULL;
				fsutil_close(&sg->fd);
				free(sg);
				return;
			}
			sg->off = SPOOL_SEG_REC_LEN;
			/* Parts never span runs: unfinished messages of an older run never end. */
			for (struct pend **pp = &wk->pend; *pp;) {
				struct rseg *p0 = (*pp)->nparts ? (*pp)->parts[0].seg : NULL;
				if (p0 && p0->writer == sg->writer && p0->run_us != sg->run_us)
					pend_drop(wk, pp);
				else
					pp = &(*pp)->next;
			}
			if (wk->ix && journal_index_segment_done(wk->ix, sg->name)) {
				sg->scanned = true;
				seg_maybe_done(wk, sg);
				continue;
			}
			wk->cur[w] = sg;
		}
		if (sg != lim_seg || sg->off >= lim) {
			lim = seg_limit(wk, sg, &whole);
			lim_seg = sg;
		}
		if (sg->off >= lim) {
			if (!whole)
				return;
			sg->scanned = true;
			wk->cur[w] = NULL;
			wk->list_due = true; /* its successor is in the folders by now */
			seg_maybe_done(wk, sg);
			continue;
		}
		struct spoolrec_hdr h;
		const uint8_t *rec = NULL;
		int r = scan_record(wk, sg, lim, &h, &rec);
		if (r < 0) {
			uint64_t found = lim;
			if (r == -EBADMSG && spoolrec_resync(sg->fd, sg->off, lim, sg->seed, &found,
							     wk->rbuf, RBUF_SIZE) < 0)
				found = lim;
			log_line("relay: segment=%s offset=%" PRIu64 ": %s, skipping to %" PRIu64,
				 sg->name, sg->off, r == -EBADMSG ? "bad record" : strerror(-r),
				 found);
			sg->off = found;
			continue;
		}
		if (h.type == SPOOL_REC_PART) {
			struct pend *p = pend_find(wk, h.qid, NULL);
			if (!p && h.part == 0) {
				if (wk->npend >= PEND_MAX) {
					/* Forget the oldest unfinished message (an aborted one). */
					struct pend **pp = &wk->pend;
					while ((*pp)->next)
						pp = &(*pp)->next;
					pend_drop(wk, pp);
				}
				p = calloc(1, sizeof(*p));
				if (p) {
					snprintf(p->qid, sizeof(p->qid), "%s", h.qid);
					p->next = wk->pend;
					wk->pend = p;
					wk->npend++;
				}
			}
			if (p && h.part == p->nparts) {
				part_add(&p->parts, &p->nparts, &p->cap, sg,
					 sg->off + h.hdr_len + h.env_len,
					 (uint64_t)h.trace_len + h.body_len);
				p->seen_ms = mono_ms();
			}
		} else if (h.type == SPOOL_REC_FINAL) {
			scan_final(wk, sg, sg->off, &h, rec);
		}
		sg->off += h.rec_len;
	}
}

static void scan(struct worker *wk)
{
	if (mono_ms() - wk->last_list_ms >= TICK_MAX_MS)
		wk->list_due = true;
	for (unsigned w = wk->id; w < WRITERS_MAX; w += wk->rl->nworkers)
		scan_writer(wk, w);
	listing_free(wk);
	/* Unfinished messages of an aborted transaction: forgotten after a while. */
	uint64_t keep = 2000ull * (wk->rl->cfg->data_timeout + 60), t = mono_ms();
	struct pend **pp = &wk->pend;
	while (*pp) {
		if ((*pp)->seen_ms && t > keep && (*pp)->seen_ms < t - keep)
			pend_drop(wk, pp);
		else
			pp = &(*pp)->next;
	}
	if (wk->ix) {
		/* Once every segment that existed at start was read, the replay is not needed. */
		bool behind = false;
		for (unsigned w = wk->id; w < WRITERS_MAX; w += wk->rl->nworkers)
			if (wk->cur[w] && !wk->cur[w]->scanned) {
				struct spool_pos p;
				if (writers_position(wk->rl->ws, w, &p) != 0 ||
				    wk->cur[w]->run_us != p.run_us)
					behind = true;
			}
		if (!behind && wk->nmsgs < RELAY_WINDOW_MSGS) {
			journal_index_free(wk->ix);
			wk->ix = NULL;
		}
	}
}

/* ---- results ---- */

static void rec_msg_ref(struct journal_rec *r, const struct rmsg *m, uint32_t i)
{
	snprintf(r->seg, sizeof(r->seg), "%s", m->seg->name);
	r->seg_off = m->final_off;
	snprintf(r->qid, sizeof(r->qid), "%s", m->qid);
	r->rcpt = i;
	r->nrcpt = m->nrcpt;
}

static void reply_line(const struct smtpc_reply *r, char *buf, size_t cap)
{
	if (r->enh[0])
		snprintf(buf, cap, "%u %s %s", r->code, r->enh, r->text);
	else
		snprintf(buf, cap, "%u %s", r->code, r->text);
}

static void dsn_of(const struct smtpc_reply *r, char out[JOURNAL_DSN_MAX + 1])
{
	size_t n = strnlen(r->enh, sizeof(r->enh));
	if (n > 0 && n <= JOURNAL_DSN_MAX && r->enh[0] == (char)('0' + r->code / 100))
		memcpy(out, r->enh, n + 1);
	else
		snprintf(out, JOURNAL_DSN_MAX + 1, "%u.0.0", r->code / 100);
}

/* A reply for a log line: in parentheses, as Postfix writes it; bytes
 * outside printable ASCII (never in smtpc's replies) and parentheses as '?'. */
static void printable(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	for (; *src && n + 1 < cap; src++, n++) {
		unsigned char c = (unsigned char)*src;
		dst[n] = c < 0x20 || c > 0x7e ? '?' : (char)c;
	}
	dst[n] = '\0';
}

static const char *outcome_status(int outcome)
{
	switch (outcome) {
	case JOURNAL_DELIVERED:
		return "sent";
	case JOURNAL_DEFERRED:
		return "deferred";
	case JOURNAL_FAILED:
		return "bounced";
	default:
		return "expired";
	}
}

/* One recipient's outcome: journal, log, counters. */
static void rcpt_outcome(struct worker *wk, struct rmsg *m, uint32_t i, int outcome,
			 const char *dsn, const char *reply, const char *relay)
{
	struct rrcpt *rr = &m->r[i];
	uint64_t now = real_us();
	struct journal_rec r = {.type = JOURNAL_REC_RESULT, .outcome = (uint8_t)outcome};
	rec_msg_ref(&r, m, i);
	rr->attempts += outcome == JOURNAL_EXPIRED ? 0 : 1;
	rr->last_us = now;
	r.attempts = rr->attempts;
	if (outcome == JOURNAL_DEFERRED) {
		uint64_t next = now + backoff_us(wk->rl->cfg, m->attempts + 1);
		if (next < wk->hub_dead_until_us)
			next = wk->hub_dead_until_us;
		r.next_us = next;
	}
	snprintf(r.dsn, sizeof(r.dsn), "%s", dsn);
	journal_rec_reply(&r, reply, strlen(reply));
	journal_rec_relay(&r, relay, strlen(relay));
	wk_record(wk, &r);
	rr->outcome = (uint8_t)outcome;
	snprintf(rr->dsn, sizeof(rr->dsn), "%s", dsn);
	if (outcome == JOURNAL_FAILED || outcome == JOURNAL_EXPIRED) {
		/* Kept for the DSN: the reply, and the host of "host[addr]:port". */
		const char *br = strchr(relay, '[');
		free(rr->reply);
		free(rr->mta);
		rr->reply = strdup(reply);
		rr->mta = br ? strndup(relay, (size_t)(br - relay)) : NULL;
		rr->remote = relay[0] != '\0';
	}
	switch (outcome) {
	case JOURNAL_DELIVERED:
		atomic_fetch_add_explicit(&wk->sent, 1, memory_order_relaxed);
		break;
	case JOURNAL_DEFERRED:
		atomic_fetch_add_explicit(&wk->deferred, 1, memory_order_relaxed);
		break;
	default:
		atomic_fetch_add_explicit(&wk->bounced, 1, memory_order_relaxed);
	}
	char to[4 * PATH_MAX_OCTETS], rep[JOURNAL_REPLY_MAX + 1];
	log_escape(to, sizeof(to), rr->addr, strlen(rr->addr), PATH_MAX_OCTETS);
	printable(rep, sizeof(rep), reply);
	uint64_t delay_ms = now > m->time_us ? (now - m->time_us) / 1000 : 0;
	log_line("relayed qid=%s to=<%s> relay=%s delay=%" PRIu64 ".%03" PRIu64
		 " attempts=%u dsn=%s status=%s (%s)",
		 m->qid, to, relay[0] ? relay : "none", delay_ms / 1000, delay_ms % 1000,
		 rr->attempts, dsn, outcome_status(outcome), rep);
}

/* ---- DSNs ---- */

/* The original headers: the stored message up to its first empty line, at most DSN_HEADERS_MAX. */
static size_t read_headers(struct rmsg *m, uint8_t *buf, size_t cap)
{
	size_t n = 0;
	for (uint32_t i = 0; i < m->nparts && n < cap; i++) {
		uint64_t len = m->parts[i].len;
		if (len > cap - n)
			len = cap - n;
		if (fsutil_pread_all(m->parts[i].seg->fd, buf + n, (size_t)len, m->parts[i].off) <
		    0)
			break;
		n += (size_t)len;
	}
	for (size_t k = 0; k + 1 < n; k++) {
		if (buf[k] == '\n' &&
		    (buf[k + 1] == '\n' || (k + 2 < n && buf[k + 1] == '\r' && buf[k + 2] == '\n')))
			return k + 1;
	}
	return n;
}

/* Recipients of m that failed and owe their sender a DSN: one DSN job for them. */
static void msg_owes_dsn(struct worker *wk, struct rmsg *m)
{
	const struct config *cfg = wk->rl->cfg;
	if (m->dsn)
		return; /* after the one under way */
	uint32_t n = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++)
		if (m->r[i].state == R_OWES_DSN)
			n++;
	if (n == 0)
		return;
	struct rmsg *d = calloc(1, sizeof(*d));
	struct dsn_rcpt *dr = calloc(n, sizeof(*dr));
	uint8_t *hdr = malloc(DSN_HEADERS_MAX + 2);
	if (d)
		d->dsn_idx = calloc(n, sizeof(*d->dsn_idx));
	if (!d || !dr || !hdr || !d->dsn_idx) {
		free(dr);
		free(hdr);
		if (d)
			free(d->dsn_idx);
		free(d);
		log_line("relay: qid=%s: out of memory for a DSN (tried again later)", m->qid);
		return;
	}
	uint32_t k = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct rrcpt *rr = &m->r[i];
		if (rr->state != R_OWES_DSN)
			continue;
		d->dsn_idx[k] = i;
		dr[k] = (struct dsn_rcpt){
		    .addr = rr->addr,
		    .action = DSN_FAILED,
		    .status = rr->dsn[0] == '4' || rr->dsn[0] == '5' ? rr->dsn : "5.0.0",
		    .remote_mta = rr->mta,
		    .diag_type = rr->remote ? DSN_DIAG_SMTP : DSN_DIAG_LOCAL,
		    .diag = rr->reply && rr->reply[0] ? rr->reply : "delivery failed",
		    .last_attempt_s = rr->last_us ? (int64_t)(rr->last_us / 1000000) : 0,
		};
		k++;
	}
	size_t hlen = read_headers(m, hdr, DSN_HEADERS_MAX);
	uint64_t now = real_us();
	struct dsn_report rep = {
	    .myhostname = cfg->myhostname,
	    .qid = m->qid,
	    .sender = m->from,
	    .arrival_s = (int64_t)(m->time_us / 1000000),
	    .now_s = (int64_t)(now / 1000000),
	    .utc_offset_min = 0,
	    .seed = now ^ ((uint64_t)(uintptr_t)d << 16),
	    .flags = (m->flags & ENV_SMTPUTF8) ? DSN_F_SMTPUTF8 : 0,
	    .headers = hlen ? hdr : NULL,
	    .headers_len = hlen,
	    .rcpt = dr,
	    .nrcpt = n,
	};
	if (rep.arrival_s < DSN_TIME_MIN)
		rep.arrival_s = rep.now_s;
	size_t cap = dsn_size_max(n);
	struct dsn_result res;
	d->body = malloc(cap);
	int rc = d->body ? dsn_format(&rep, (char *)d->body, cap, &res) : -ENOMEM;
	free(hdr);
	free(dr);
	if (rc < 0) {
		log_line("relay: qid=%s: no DSN made: %s", m->qid,
			 rc == -EPERM ? "null sender" : strerror(-rc));
		atomic_fetch_add_explicit(&wk->dsn_dropped, 1, memory_order_relaxed);
		/* Nothing can be sent: the recipients owe nothing more. */
		for (uint32_t i = 0; i < n; i++) {
			struct journal_rec r = {.type = JOURNAL_REC_BOUNCE};
			rec_msg_ref(&r, m, d->dsn_idx[i]);
			snprintf(r.dsn_qid, sizeof(r.dsn_qid), "%s", "none");
			wk_record(wk, &r);
			m->r[d->dsn_idx[i]].state = R_DONE;
		}
		free(d->body);
		free(d->dsn_idx);
		free(d);
		queue_apply(wk, m);
		return;
	}
	d->ndsn = n;
	d->orig = m;
	m->dsn = d;
	for (uint32_t i = 0; i < n; i++)
		m->r[d->dsn_idx[i]].state = R_IN_DSN;
	d->from = strdup("");
	d->r = calloc(1, sizeof(*d->r));
	d->try_idx = calloc(1, sizeof(*d->try_idx));
	d->try_addr = calloc(1, sizeof(*d->try_addr));
	d->parts = calloc(1, sizeof(*d->parts));
	if (!d->from || !d->r || !d->try_idx || !d->try_addr || !d->parts) {
		/* Leave it owed: tried again when the message is next applied. */
		m->dsn = NULL;
		for (uint32_t i = 0; i < n; i++)
			m->r[d->dsn_idx[i]].state = R_OWES_DSN;
		msg_free(wk, d);
		return;
	}
	d->nrcpt = 1;
	d->r[0].addr = m->from;
	d->nparts = 1;
	d->parts[0] = (struct rpart){.mem = d->body, .len = res.len};
	d->size = res.len;
	d->flags = res.env_flags;
	d->time_us = now;
	d->dsn_made_us = now;
	d->dsn_class = -1;
	d->heap = -1;
	snprintf(d->qid, sizeof(d->qid), "%s", m->qid);
	d->next_us = now;
	q_push(wk, d);
}

/*
 * After the journal sync: what m's last attempt means. A DSN job: its
 * original's recipients are bounced once the hub took it.
 */
static void msg_apply(struct worker *wk, struct rmsg *m)
{
	const struct config *cfg = wk->rl->cfg;
	uint64_t now = real_us();
	if (m->orig) {
		struct rmsg *o = m->orig;
		bool done = m->dsn_class == SMTPC_DELIVERED || m->dsn_class == SMTPC_FAILED ||
			    now > m->dsn_made_us + (uint64_t)cfg->maximal_queue_lifetime * 1000000;
		if (!done) {
			m->attempts++;
			m->r[0].state = R_PENDING;
			m->dsn_class = -1;
			m->ntry = 0;
			m->next_us = now + backoff_us(cfg, m->attempts);
			if (m->next_us < wk->hub_dead_until_us)
				m->next_us = wk->hub_dead_until_us;
			q_push(wk, m);
			return;
		}
		/* The BOUNCE records went into the journal with the result; now durable. */
		for (uint32_t i = 0; i < m->ndsn; i++)
			o->r[m->dsn_idx[i]].state = R_DONE;
		o->dsn = NULL;
		msg_free(wk, m);
		msg_apply(wk, o);
		return;
	}
	bool pending = false, owes = false, busy_dsn = m->dsn != NULL;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct rrcpt *rr = &m->r[i];
		if (rr->state == R_TRYING) {
			switch (rr->outcome) {
			case JOURNAL_DELIVERED:
				rr->state = R_DONE;
				break;
			case 0: /* no result came: tried again */
			case JOURNAL_DEFERRED:
				rr->state = R_PENDING;
				break;
			default:
				rr->state = m->from[0] ? R_OWES_DSN : R_DONE;
				if (!m->from[0])
					atomic_fetch_add_explicit(&wk->dsn_dropped, 1,
								  memory_order_relaxed);
			}
		}
		pending |= rr->state == R_PENDING;
		owes |= rr->state == R_OWES_DSN;
		busy_dsn |= rr->state == R_IN_DSN;
	}
	if (m->ntry) {
		m->attempts++;
		m->ntry = 0;
	}
	if (owes)
		msg_owes_dsn(wk, m);
	if (pending && !q_queued(m) && !m->busy) {
		uint64_t next = now + backoff_us(cfg, m->attempts);
		if (next < wk->hub_dead_until_us)
			next = wk->hub_dead_until_us;
		m->next_us = next;
		q_push(wk, m);
	}
	if (!pending && !owes && !busy_dsn && !m->dsn && !q_queued(m) && !m->busy)
		msg_free(wk, m);
}

/* ---- sessions ---- */

static void sess_submit_recv(struct worker *wk, struct sess *s);
static void sess_step(struct worker *wk, struct sess *s, enum smtpc_next nx);
static void tls_start(struct worker *wk, struct sess *s);
static void retry_all(struct worker *wk, const char *why);
static void sess_close(struct worker *wk, struct sess *s);

static struct io_uring_sqe *get_sqe(struct worker *wk)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&wk->ring);
	if (!sqe) {
		io_uring_submit(&wk->ring);
		sqe = io_uring_get_sqe(&wk->ring);
	}
	return sqe;
}

static uint32_t sess_idx(const struct worker *wk, const struct sess *s)
{
	return (uint32_t)(s - wk->sess);
}

static void sess_arm(struct worker *wk, struct sess *s, unsigned timeout_s)
{
	s->deadline_ms = mono_ms() + (uint64_t)timeout_s * 1000;
	(void)wk;
}

static void dest_relay_text(struct worker *wk, struct sess *s, const struct addr_set *set)
{
	const struct relay_dest *d = &wk->rl->cfg->relay_host[s->dest];
	if (d->unix_path)
		snprintf(s->relay, sizeof(s->relay), "unix:%s", d->host);
	else
		snprintf(s->relay, sizeof(s->relay), "%s[%s]:%u", d->host,
			 set->dest[s->dest].text[s->addr], d->port);
}

/* Asks for the operation in flight to end now (it completes with -ECANCELED or its result). */
static void sess_cancel(struct worker *wk, struct sess *s)
{
	if (!s->op || s->cancelled)
		return;
	struct io_uring_sqe *sqe = get_sqe(wk);
	io_uring_prep_cancel64(sqe, ud_make(UD_SESS, sess_idx(wk, s), s->gen), 0);
	io_uring_sqe_set_data64(sqe, ud_make(UD_TIMEOUT, 0, 0));
	s->cancelled = true;
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
}

static void sess_release(struct worker *wk, struct sess *s)
{
	/* Saved at the end, not after the handshake: a TLS 1.3 ticket comes later. */
	if (s->tls_up)
		tlsc_session_save(s->tls, &wk->tls_saved[s->dest]);
	tlsc_conn_free(s->tls);
	s->tls = NULL;
	s->tls_up = false;
	free(s->cbuf);
	s->cbuf = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	free(s->sbuf);
	s->sbuf = NULL;
	s->used = false;
	s->gen++;
	wk->nsess--;
}

/* Starts connecting to destination s->dest, address s->addr. -1 when there is none left. */
static int sess_connect(struct worker *wk, struct sess *s)
{
	const struct config *cfg = wk->rl->cfg;
	const struct addr_set *set = atomic_load_explicit(&wk->rl->addrs, memory_order_acquire);
	for (; s->dest < cfg->nrelay_host; s->dest++, s->addr = 0) {
		const struct relay_dest *d = &cfg->relay_host[s->dest];
		const struct dest_addrs *da = &set->dest[s->dest];
		struct sockaddr_storage ss;
		socklen_t len;
		if (d->unix_path) {
			if (s->addr > 0)
				continue;
			struct sockaddr_un *un = (struct sockaddr_un *)&ss;
			memset(un, 0, sizeof(*un));
			un->sun_family = AF_UNIX;
			memcpy(un->sun_path, d->host, strlen(d->host));
			len = (socklen_t)sizeof(*un);
		} else {
			if (s->addr >= da->n)
				continue;
			memcpy(&ss, &da->sa[s->addr], da->salen[s->addr]);
			len = da->salen[s->addr];
		}
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			snprintf(s->last_err, sizeof(s->last_err), "socket: %s", strerror(errno));
			continue;
		}
		if (ss.ss_family != AF_UNIX) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		/* The address must outlive the submission: kept in the session's input buffer. */
		memcpy(s->ibuf, &ss, sizeof(ss));
		s->fd = fd;
		s->phase = SP_CONNECT;
		dest_relay_text(wk, s, set);
		struct io_uring_sqe *sqe = get_sqe(wk);
		io_uring_prep_connect(sqe, fd, (struct sockaddr *)s->ibuf, len);
		io_uring_sqe_set_data64(sqe, ud_make(UD_SESS, sess_idx(wk, s), s->gen));
		s->op = OP_CONNECT;
		s->cancelled = false;
		sess_arm(wk, s, cfg->relay_connect_timeout);
		return 0;
	}
	return -1;
}

static struct sess *sess_new(struct worker *wk)
{
	for (unsigned i = 0; i < wk->nsess_cap; i++) {
		struct sess *s = &wk->sess[i];
		if (s->used)
			continue;
		uint32_t gen = s->gen + 1;
		memset(s, 0, offsetof(struct sess, obuf));
		s->sbuf = malloc(SBUF_SIZE);
		if (!s->sbuf)
			return NULL;
		s->wk = wk;
		s->used = true;
		s->gen = gen;
		s->fd = -1;
		s->ilen = 0;
		s->out = (struct smtpc_out){.buf = s->obuf, .len = 0, .cap = OBUF_SIZE};
		s->osent = 0;
		s->job = NULL;
		s->next_job = NULL;
		s->job_results = 0;
		s->body_sent_early = false;
		s->tls = NULL;
		s->tls_up = false;
		s->cbuf = NULL;
		s->clen = 0;
		s->nmsgs = 0;
		s->relay[0] = '\0';
		s->last_err[0] = '\0';
		wk->nsess++;
		wk->nconnecting++;
		atomic_fetch_add_explicit(&wk->sessions, 1, memory_order_relaxed);
		if (sess_connect(wk, s) < 0) {
			wk->nconnecting--;
			sess_release(wk, s);
			return NULL;
		}
		return s;
	}
	return NULL;
}

/* Defers every due message: the hub is down (no destination answered). */
/* Gives each recipient of m still waiting the same outcome; how many. */
static uint32_t pending_outcome(struct worker *wk, struct rmsg *m, int outcome, const char *dsn,
				const char *reply)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		if (m->r[i].state != R_PENDING)
			continue;
		m->r[i].state = R_TRYING;
		rcpt_outcome(wk, m, i, outcome, dsn, reply, "");
		n++;
	}
	return n;
}

static void hub_down(struct worker *wk, const char *why, const char *dsn)
{
	const struct config *cfg = wk->rl->cfg;
	uint64_t now = real_us();
	if (now >= wk->hub_dead_until_us) { /* sessions failing together count once */
		wk->hub_dead_count++;
		wk->hub_dead_until_us = now + backoff_us(cfg, wk->hub_dead_count);
		log_line("relay: worker=%u hub unreachable (%s), next try in %" PRIu64 "s", wk->id,
			 why, (wk->hub_dead_until_us - now) / 1000000);
	}
	char reply[256];
	snprintf(reply, sizeof(reply), "421 %s %s", dsn, why);
	struct rmsg *m;
	while ((m = q_pop_due(wk, now)) != NULL) {
		if (m->orig) {
			m->dsn_class = SMTPC_DEFERRED;
			queue_apply(wk, m);
			continue;
		}
		m->ntry = pending_outcome(wk, m, JOURNAL_DEFERRED, dsn, reply); /* an attempt */
		queue_apply(wk, m);
	}
}

/* The session's transaction ended (READY or CLOSE): its results are all in. */
static void job_end(struct worker *wk, struct sess *s)
{
	struct rmsg *m = s->job;
	if (!m)
		return;
	s->job = NULL;
	m->busy = false;
	if (m->orig) {
		struct rmsg *o = m->orig;
		char rep[JOURNAL_REPLY_MAX + 1];
		snprintf(rep, sizeof(rep), "%s", m->dsn_reply);
		if (m->dsn_class == SMTPC_DELIVERED || m->dsn_class == SMTPC_FAILED) {
			for (uint32_t i = 0; i < m->ndsn; i++) {
				struct journal_rec r = {.type = JOURNAL_REC_BOUNCE};
				rec_msg_ref(&r, o, m->dsn_idx[i]);
				snprintf(r.dsn_qid, sizeof(r.dsn_qid), "%s",
					 m->dsn_class == SMTPC_DELIVERED ? "sent" : "refused");
				wk_record(wk, &r);
			}
			atomic_fetch_add_explicit(
			    m->dsn_class == SMTPC_DELIVERED ? &wk->dsn_sent : &wk->dsn_dropped, 1,
			    memory_order_relaxed);
		}
		char to[4 * PATH_MAX_OCTETS], esc[JOURNAL_REPLY_MAX + 1];
		log_escape(to, sizeof(to), o->from, strlen(o->from), PATH_MAX_OCTETS);
		printable(esc, sizeof(esc), rep);
		log_line("bounce qid=%s to=<%s> relay=%s recipients=%u status=%s (%s)", o->qid, to,
			 s->relay, m->ndsn,
			 m->dsn_class == SMTPC_DELIVERED ? "sent"
			 : m->dsn_class == SMTPC_FAILED	 ? "dropped"
							 : "deferred",
			 esc);
	}
	queue_apply(wk, m);
}

/* The job's last result came with a message pipelined behind it: that one
 * is the session's job now (its body is the next to go). */
static void job_next(struct worker *wk, struct sess *s)
{
	if (!s->job || !s->next_job || s->job_results < s->job->ntry)
		return;
	job_end(wk, s);
	s->job = s->next_job;
	s->next_job = NULL;
	s->job_results = 0;
}

static void sess_result(struct worker *wk, struct sess *s, uint32_t i, const struct smtpc_reply *r)
{
	struct rmsg *m = s->job;
	s->job_results++;
	if (!m || i >= m->ntry)
		return;
	char reply[SMTPC_TEXT_MAX + SMTPC_ENH_MAX + 8];
	reply_line(r, reply, sizeof(reply));
	enum smtpc_class cls = smtpc_classify(r);
	if (m->orig) {
		m->dsn_class = (int)cls;
		size_t n = strnlen(reply, sizeof(m->dsn_reply) - 1);
		memcpy(m->dsn_reply, reply, n);
		m->dsn_reply[n] = '\0';
		return;
	}
	char dsn[JOURNAL_DSN_MAX + 1];
	dsn_of(r, dsn);
	int outcome = cls == SMTPC_DELIVERED  ? JOURNAL_DELIVERED
		      : cls == SMTPC_DEFERRED ? JOURNAL_DEFERRED
					      : JOURNAL_FAILED;
	rcpt_outcome(wk, m, m->try_idx[i], outcome, dsn, reply,
		     r->local && r->stage == SMTPC_STAGE_CONNECT ? "" : s->relay);
}

/* smtpc's result hook: recipient i of the session's transaction. */
static void on_result(void *ctx, uint32_t i, const struct smtpc_reply *r)
{
	struct sess *s = ctx;
	sess_result(s->wk, s, i, r);
	job_next(s->wk, s);
}

/* Expires m when its queue lifetime is over: true when it did. */
static bool msg_expire(struct worker *wk, struct rmsg *m, uint64_t now)
{
	const struct config *cfg = wk->rl->cfg;
	if (m->orig || now < m->time_us + (uint64_t)cfg->maximal_queue_lifetime * 1000000)
		return false;
	char reply[128];
	snprintf(reply, sizeof(reply), "message expired after %us in the queue",
		 cfg->maximal_queue_lifetime);
	(void)pending_outcome(wk, m, JOURNAL_EXPIRED, "4.4.7", reply);
	m->ntry = 0; /* not an attempt */
	queue_apply(wk, m);
	return true;
}

/* Gives session s (READY) the next due message: true when it took one. */
/* The next due message with recipients to try, marked as tried (R_TRYING),
 * with sm set for smtpc; NULL when none is due. */
static struct rmsg *take_due(struct worker *wk, struct smtpc_msg *sm)
{
	uint64_t now = real_us();
	struct rmsg *m;
	while (!wk->stopping && (m = q_pop_due(wk, now)) != NULL) {
		if (msg_expire(wk, m, now))
			continue;
		uint32_t n = 0;
		for (uint32_t i = 0; i < m->nrcpt; i++) {
			if (m->r[i].state != R_PENDING)
				continue;
			m->r[i].state = R_TRYING;
			m->r[i].outcome = 0;
			m->try_idx[n] = i;
			m->try_addr[n] = m->r[i].addr;
			n++;
		}
		if (n == 0) {
			queue_apply(wk, m);
			continue;
		}
		m->ntry = n;
		m->busy = true;
		*sm = (struct smtpc_msg){.from = m->from,
					 .env_flags = m->flags,
					 .nrcpt = n,
					 .size = m->size,
					 .rcpt = m->try_addr};
		return m;
	}
	return NULL;
}

/* take_due undone: m waits again (smtpc would not take it now). */
static void untake(struct worker *wk, struct rmsg *m)
{
	for (uint32_t k = 0; k < m->ntry; k++)
		m->r[m->try_idx[k]].state = R_PENDING;
	m->ntry = 0;
	m->busy = false;
	m->next_us = 0;
	q_push(wk, m);
}

static bool sess_take(struct worker *wk, struct sess *s)
{
	struct rmsg *m = take_due(wk, &s->sm);
	if (!m)
		return false;
	s->job = m;
	s->job_results = 0;
	s->nmsgs++;
	s->phase = SP_TALK;
	sess_step(wk, s, smtpc_send(&s->c, &s->sm, &s->out));
	return true;
}

/*
 * The body and its end are queued in sbuf: the next due message goes right
 * behind them (smtpc_send_next), so that one write and one round trip
 * serve the end of this message and the start of the next.
 */
static void pipeline_next(struct worker *wk, struct sess *s)
{
	if (s->next_job || s->nmsgs >= wk->rl->cfg->relay_msgs_per_session || wk->stopping ||
	    s->c.state != SMTPC_S_BODY || !(s->c.caps & SMTPC_CAP_PIPELINING) || s->c.bdat ||
	    s->c.conf->proto != SMTPC_SMTP || q_next_us(wk) > real_us())
		return;
	(void)smtpc_body_sent(&s->c);
	s->body_sent_early = true;
	struct smtpc_msg sm;
	struct rmsg *m = take_due(wk, &sm);
	if (!m)
		return;
	if (!smtpc_send_next(&s->c, &sm, &s->out)) {
		untake(wk, m);
		return;
	}
	memcpy(s->sbuf + s->slen, s->out.buf, s->out.len);
	s->slen += s->out.len;
	s->out.len = 0;
	s->next_job = m;
	s->nmsgs++;
}

/* Fills sbuf with the next body bytes (dot-stuffed for DATA). 0, or -errno. */
static int body_fill(struct worker *wk, struct sess *s, bool stuff)
{
	struct rmsg *m = s->job;
	s->ssent = 0;
	while (s->bpart < m->nparts && s->slen < RBUF_SIZE) {
		struct rpart *p = &m->parts[s->bpart];
		if (s->boff >= p->len) {
			s->bpart++;
			s->boff = 0;
			continue;
		}
		uint64_t want = p->len - s->boff;
		if (want > RBUF_SIZE - s->slen)
			want = RBUF_SIZE - s->slen;
		const uint8_t *src;
		uint64_t at = p->off + s->boff;
		if (p->seg && wk->scan_seg == p->seg && at >= wk->scan_off &&
		    at + want <= wk->scan_off + wk->scan_len) {
			src = wk->scanbuf + (at - wk->scan_off); /* read by the scan a moment ago */
		} else if (p->seg) {
			int r = fsutil_pread_all(p->seg->fd, wk->rbuf, (size_t)want, at);
			if (r < 0)
				return r;
			src = wk->rbuf;
		} else {
			src = p->mem + s->boff;
		}
		if (!stuff) {
			memcpy(s->sbuf + s->slen, src, (size_t)want);
			s->slen += (size_t)want;
		} else {
			size_t k = 0;
			while (k < want) {
				bool dot = false;
				size_t run =
				    smtpc_dot_next(&s->dot, src + k, (size_t)want - k, &dot);
				if (dot)
					s->sbuf[s->slen++] = '.';
				memcpy(s->sbuf + s->slen, src + k, run);
				s->slen += run;
				k += run;
			}
		}
		s->boff += want;
	}
	if (s->bpart >= m->nparts && !s->bdone) {
		if (stuff) {
			size_t elen;
			const char *end = smtpc_dot_end(&s->dot, &elen);
			memcpy(s->sbuf + s->slen, end, elen);
			s->slen += elen;
		}
		s->bdone = true;
		if (stuff)
			pipeline_next(wk, s);
	}
	return 0;
}

static void raw_send(struct worker *wk, struct sess *s, const uint8_t *p, size_t len,
		     enum sess_op op)
{
	struct io_uring_sqe *sqe = get_sqe(wk);
	io_uring_prep_send(sqe, s->fd, p, len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_make(UD_SESS, sess_idx(wk, s), s->gen));
	s->op = (uint8_t)op;
	sess_arm(wk, s, wk->rl->cfg->relay_command_timeout);
}

/* Under TLS: encrypts what of the send under way fits, and sends the ciphertext. */
static bool tls_tx(struct worker *wk, struct sess *s)
{
	size_t olen;
	tlsc_output(s->tls, &olen);
	while (s->tx_done < s->tx_len && olen + TLSC_PLAIN_STEP + 1024 <= TLSC_OUT_MAX) {
		size_t n = s->tx_len - s->tx_done;
		if (n > TLSC_PLAIN_STEP)
			n = TLSC_PLAIN_STEP;
		if (tlsc_write(s->tls, s->tx_p + s->tx_done, n) != TLSC_OK)
			return false;
		s->tx_done += n;
		tlsc_output(s->tls, &olen);
	}
	const uint8_t *o = tlsc_output(s->tls, &olen);
	raw_send(wk, s, o, olen, OP_TLS_TX);
	return true;
}

static void sess_submit_send(struct worker *wk, struct sess *s, const uint8_t *p, size_t len,
			     enum sess_op op)
{
	if (!s->tls_up) {
		raw_send(wk, s, p, len, op);
		return;
	}
	s->tx_p = p;
	s->tx_len = len;
	s->tx_done = 0;
	s->tx_op = (uint8_t)op;
	if (!tls_tx(wk, s)) {
		smtpc_lost(&s->c, SMTPC_LOST_TLS);
		sess_close(wk, s);
	}
}

/*
 * A receive: replies into ibuf (OP_RECV), or ciphertext into cbuf (OP_TLS_RX,
 * OP_HS_RX). A full buffer means the peer sent what no sane hub sends (a
 * reply line or a TLS record longer than the buffer): the session is lost.
 */
static void raw_recv(struct worker *wk, struct sess *s, enum sess_op op)
{
	bool plain = op == OP_RECV;
	uint8_t *buf = plain ? s->ibuf : s->cbuf;
	size_t len = plain ? s->ilen : s->clen;
	if (len >= IBUF_SIZE) {
		smtpc_lost(&s->c, plain ? SMTPC_LOST_CLOSED : SMTPC_LOST_TLS);
		sess_close(wk, s);
		return;
	}
	struct io_uring_sqe *sqe = get_sqe(wk);
	io_uring_prep_recv(sqe, s->fd, buf + len, IBUF_SIZE - len, 0);
	io_uring_sqe_set_data64(sqe, ud_make(UD_SESS, sess_idx(wk, s), s->gen));
	s->op = (uint8_t)op;
	sess_arm(wk, s,
		 s->c.state == SMTPC_S_QUIT ? QUIT_WAIT_MS / 1000 + 1
					    : wk->rl->cfg->relay_command_timeout);
}

static void sess_feed(struct worker *wk, struct sess *s);

/* Under TLS: replies from the ciphertext received so far, else more of it. */
static void tls_rx(struct worker *wk, struct sess *s)
{
	size_t n = 0;
	enum tlsc_status st = TLSC_AGAIN;
	if (s->clen) {
		tlsc_input(s->tls, s->cbuf, s->clen);
		st = tlsc_read(s->tls, s->ibuf + s->ilen, IBUF_SIZE - s->ilen, &n);
		size_t used = tlsc_input_used(s->tls);
		memmove(s->cbuf, s->cbuf + used, s->clen - used);
		s->clen -= used;
	}
	if (n > 0) {
		s->ilen += n;
		sess_feed(wk, s);
		return;
	}
	if (st == TLSC_CLOSED || st == TLSC_ERROR) {
		smtpc_lost(&s->c, st == TLSC_ERROR ? SMTPC_LOST_TLS : SMTPC_LOST_CLOSED);
		sess_close(wk, s);
		return;
	}
	raw_recv(wk, s, OP_TLS_RX);
}

static void sess_submit_recv(struct worker *wk, struct sess *s)
{
	if (s->tls_up)
		tls_rx(wk, s);
	else
		raw_recv(wk, s, OP_RECV);
}

static void sess_feed(struct worker *wk, struct sess *s)
{
	size_t used = 0;
	enum smtpc_next nx = smtpc_feed(&s->c, s->ibuf, s->ilen, &used, &s->out);
	if (used) {
		memmove(s->ibuf, s->ibuf + used, s->ilen - used);
		s->ilen -= used;
	}
	sess_step(wk, s, nx);
}

/* The handshake as far as it goes: sends its output, or reads the server's. */
static void hs_step(struct worker *wk, struct sess *s)
{
	tlsc_input(s->tls, s->cbuf, s->clen);
	enum tlsc_status st = tlsc_handshake(s->tls);
	size_t used = tlsc_input_used(s->tls);
	memmove(s->cbuf, s->cbuf + used, s->clen - used);
	s->clen -= used;
	size_t olen;
	const uint8_t *o = tlsc_output(s->tls, &olen);
	if (olen) {
		raw_send(wk, s, o, olen, OP_HS_TX); /* then the handshake goes on */
		return;
	}
	if (st == TLSC_AGAIN) {
		raw_recv(wk, s, OP_HS_RX);
		return;
	}
	if (st != TLSC_OK) {
		char why[256];
		tlsc_error(s->tls, why, sizeof(why));
		log_line("relay: tls to=%s failed: %s", s->relay, why);
		atomic_fetch_add_explicit(&wk->tls_failures, 1, memory_order_relaxed);
		smtpc_lost(&s->c, SMTPC_LOST_TLS);
		sess_close(wk, s);
		return;
	}
	char desc[128];
	bool resumed = tlsc_resumed(s->tls);
	tlsc_describe(s->tls, desc, sizeof(desc));
	log_line("relay: tls to=%s %s resumed=%s verified=%s", s->relay, desc,
		 resumed ? "yes" : "no", tlsc_verified(s->tls) ? "yes" : "no");
	atomic_fetch_add_explicit(resumed ? &wk->tls_resumed : &wk->tls_sessions, 1,
				  memory_order_relaxed);
	s->tls_up = true;
	sess_step(wk, s, smtpc_tls_started(&s->c, &s->out));
}

/* STARTTLS was answered 220: bytes received before the handshake are dropped
 * (RFC 3207 5), and the handshake starts. */
static void tls_start(struct worker *wk, struct sess *s)
{
	struct tlsc_ctx *ctx = wk->rl->tls[s->dest];
	s->ilen = 0;
	s->clen = 0;
	s->cbuf = ctx ? malloc(IBUF_SIZE) : NULL;
	s->tls = s->cbuf ? tlsc_conn_new(ctx, wk->tls_saved[s->dest]) : NULL;
	if (!s->tls) {
		smtpc_lost(&s->c, SMTPC_LOST_TLS);
		sess_close(wk, s);
		return;
	}
	hs_step(wk, s);
}

/* Does what smtpc asks, once out's bytes are sent. */
static void sess_step(struct worker *wk, struct sess *s, enum smtpc_next nx)
{
	s->nx = nx;
	if (s->out.len > s->osent && s->fd >= 0 && nx != SMTPC_BDAT) {
		sess_submit_send(wk, s, s->out.buf + s->osent, s->out.len - s->osent, OP_SEND);
		return;
	}
	/* BDAT: the commands and the body go out in one send. */
	size_t pre = nx == SMTPC_BDAT ? s->out.len - s->osent : 0;
	if (pre)
		memcpy(s->sbuf, s->out.buf + s->osent, pre);
	s->out.len = s->osent = 0;
	switch (nx) {
	case SMTPC_MORE:
		sess_submit_recv(wk, s);
		return;
	case SMTPC_WRITE:
		sess_feed(wk, s);
		return;
	case SMTPC_DATA:
	case SMTPC_BDAT:
		s->phase = SP_BODY;
		s->bpart = 0;
		s->boff = 0;
		s->bdone = false;
		s->slen = pre;
		smtpc_dot_init(&s->dot);
		if (body_fill(wk, s, nx == SMTPC_DATA) < 0) {
			smtpc_lost(&s->c, SMTPC_LOST_CLOSED);
			sess_step(wk, s, SMTPC_CLOSE);
			return;
		}
		sess_submit_send(wk, s, s->sbuf, s->slen, OP_BODY);
		return;
	case SMTPC_TLS:
		tls_start(wk, s);
		return;
	case SMTPC_READY:
		if (!s->greeted) {
			s->greeted = true;
			wk->nconnecting--;
			/* Messages deferred only because the hub was away go now. */
			if (wk->hub_dead_count)
				retry_all(wk,
					  "the hub answers again: retrying every waiting message");
		}
		job_end(wk, s);
		s->phase = SP_IDLE;
		if (s->nmsgs < wk->rl->cfg->relay_msgs_per_session && sess_take(wk, s))
			return;
		if (s->nmsgs >= wk->rl->cfg->relay_msgs_per_session || wk->stopping) {
			s->phase = SP_QUIT;
			sess_step(wk, s, smtpc_quit(&s->c, &s->out));
			return;
		}
		s->deadline_ms = mono_ms() + IDLE_KEEP_MS; /* idle: no operation */
		return;
	case SMTPC_CLOSE:
		sess_close(wk, s);
		return;
	}
}

/* The session ends: its socket closes; a connection that never got going fails over. */
static void sess_close(struct worker *wk, struct sess *s)
{
	if (s->op) {
		/* An operation is in flight: cancel it, finish when it completes. */
		sess_cancel(wk, s);
		s->phase = SP_CLOSING;
		return;
	}
	bool never = !s->greeted;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (never && s->c.failed && !s->job) {
		/* The greeting never came, or HELO failed: the next address or destination. */
		snprintf(s->last_err, sizeof(s->last_err), "%.*s: %u %.200s",
			 (int)(JOURNAL_RELAY_MAX), s->relay, s->c.fail.code, s->c.fail.text);
		atomic_fetch_add_explicit(&wk->connect_fails, 1, memory_order_relaxed);
		s->addr++;
		if (!wk->stopping && sess_connect(wk, s) == 0)
			return;
		if (!wk->stopping)
			hub_down(wk, s->last_err,
				 s->c.fail.stage == SMTPC_STAGE_TLS && s->c.fail.enh[0] == '4'
				     ? s->c.fail.enh
				     : "4.4.1");
	}
	job_end(wk, s);
	if (s->next_job) { /* never: its results come before the session ends */
		s->job = s->next_job;
		s->next_job = NULL;
		job_end(wk, s);
	}
	if (never)
		wk->nconnecting--;
	sess_release(wk, s);
}

/* A completion for session s. */
static void sess_done(struct worker *wk, struct sess *s, int res)
{
	enum sess_op op = (enum sess_op)s->op;
	s->op = OP_NONE;
	if (s->phase == SP_CLOSING) {
		sess_close(wk, s);
		return;
	}
	/* A send that failed, a receive that failed or met the end: the
	 * connection is gone (a connect is judged below). */
	bool recv = op == OP_RECV || op == OP_TLS_RX || op == OP_HS_RX;
	if (op != OP_CONNECT && op != OP_NONE && (res < 0 || (recv && res == 0))) {
		smtpc_lost(&s->c, SMTPC_LOST_CLOSED);
		sess_close(wk, s);
		return;
	}
	switch (op) {
	case OP_NONE:
		return;
	case OP_CONNECT:
		if (res < 0) {
			if (!s->cancelled)
				snprintf(s->last_err, sizeof(s->last_err), "connect to %s: %s",
					 s->relay, strerror(-res));
			atomic_fetch_add_explicit(&wk->connect_fails, 1, memory_order_relaxed);
			close(s->fd);
			s->fd = -1;
			s->addr++;
			if (!wk->stopping && sess_connect(wk, s) == 0)
				return;
			if (!wk->stopping)
				hub_down(wk, s->last_err, "4.4.1");
			wk->nconnecting--;
			sess_release(wk, s);
			return;
		}
		s->phase = SP_TALK;
		s->ilen = 0;
		if (smtpc_init(&s->c, &wk->sconf[s->dest], on_result, s) != 0) {
			s->c.state = SMTPC_S_CLOSED;
			sess_close(wk, s);
			return;
		}
		sess_submit_recv(wk, s);
		return;
	case OP_TLS_TX:
		tlsc_output_consumed(s->tls, (size_t)res);
		{
			size_t left;
			const uint8_t *o = tlsc_output(s->tls, &left);
			if (left) {
				raw_send(wk, s, o, left, OP_TLS_TX);
				return;
			}
		}
		if (s->tx_done < s->tx_len) {
			if (!tls_tx(wk, s)) {
				smtpc_lost(&s->c, SMTPC_LOST_TLS);
				sess_close(wk, s);
			}
			return;
		}
		/* The whole plaintext went: the send's own completion. */
		s->op = s->tx_op;
		sess_done(wk, s, (int)s->tx_len);
		return;
	case OP_TLS_RX:
		s->clen += (size_t)res;
		tls_rx(wk, s);
		return;
	case OP_HS_TX:
		tlsc_output_consumed(s->tls, (size_t)res);
		hs_step(wk, s);
		return;
	case OP_HS_RX:
		s->clen += (size_t)res;
		hs_step(wk, s);
		return;
	case OP_RECV:
		s->ilen += (size_t)res;
		sess_feed(wk, s);
		return;
	case OP_SEND:
		s->osent += (size_t)res;
		sess_step(wk, s, s->nx);
		return;
	case OP_BODY:
		s->ssent += (size_t)res;
		if (s->ssent < s->slen) {
			sess_submit_send(wk, s, s->sbuf + s->ssent, s->slen - s->ssent, OP_BODY);
			return;
		}
		if (!s->bdone) {
			s->slen = 0;
			if (body_fill(wk, s, s->nx == SMTPC_DATA) < 0) {
				smtpc_lost(&s->c, SMTPC_LOST_CLOSED);
				sess_close(wk, s);
				return;
			}
			if (s->slen) {
				sess_submit_send(wk, s, s->sbuf, s->slen, OP_BODY);
				return;
			}
		}
		s->phase = SP_TALK;
		if (s->body_sent_early) {
			s->body_sent_early = false;
			sess_step(wk, s, SMTPC_MORE);
			return;
		}
		sess_step(wk, s, smtpc_body_sent(&s->c));
		return;
	}
}

/* Deadlines: a session past its own is timed out (idle ones quit). */
static void sess_timeouts(struct worker *wk)
{
	uint64_t now = mono_ms();
	for (unsigned i = 0; i < wk->nsess_cap; i++) {
		struct sess *s = &wk->sess[i];
		if (!s->used || s->deadline_ms == 0 || now < s->deadline_ms)
			continue;
		if (s->phase == SP_IDLE && !s->op) {
			s->deadline_ms = 0;
			if (sess_take(wk, s))
				continue;
			s->phase = SP_QUIT;
			sess_step(wk, s, smtpc_quit(&s->c, &s->out));
			continue;
		}
		s->deadline_ms = 0;
		if (s->phase == SP_CONNECT) {
			snprintf(s->last_err, sizeof(s->last_err), "connect to %s: timed out",
				 s->relay);
			/* The connect completes with an error: failover there. */
			sess_cancel(wk, s);
			continue;
		}
		if (s->c.state == SMTPC_S_QUIT) {
			s->c.state = SMTPC_S_CLOSED;
			sess_close(wk, s);
			continue;
		}
		smtpc_lost(&s->c, SMTPC_LOST_TIMEOUT);
		sess_close(wk, s);
	}
}

/* Every waiting message is due now, and the hub is tried at once. */
static void retry_all(struct worker *wk, const char *why)
{
	uint64_t now = real_us();
	wk->hub_dead_until_us = 0;
	wk->hub_dead_count = 0;
	for (uint32_t i = 0; i < wk->nheap; i++)
		wk->heap[i]->next_us = now;
	log_line("relay: worker=%u %s (%u)", wk->id, why, wk->nheap + wk->nfifo);
}

static void dispatch(struct worker *wk)
{
	uint64_t now = real_us();
	for (unsigned i = 0; i < wk->nsess_cap && q_next_us(wk) <= now; i++) {
		struct sess *s = &wk->sess[i];
		if (s->used && s->phase == SP_IDLE && !s->op)
			sess_take(wk, s);
	}
	if (wk->stopping || now < wk->hub_dead_until_us)
		return;
	unsigned due = q_due(wk, now, wk->nsess_cap + 1);
	while (due > wk->nconnecting && wk->nsess < wk->nsess_cap) {
		if (!sess_new(wk))
			break;
	}
}

/* ---- the worker ---- */

static void arm_wake(struct worker *wk)
{
	struct io_uring_sqe *sqe = get_sqe(wk);
	io_uring_prep_read(sqe, wk->efd, &wk->efd_val, sizeof(wk->efd_val), 0);
	io_uring_sqe_set_data64(sqe, ud_make(UD_WAKE, 0, 0));
}

static uint64_t next_wait_ms(struct worker *wk)
{
	uint64_t now = mono_ms(), wait = TICK_MAX_MS;
	for (unsigned i = 0; i < wk->nsess_cap; i++) {
		struct sess *s = &wk->sess[i];
		if (s->used && s->deadline_ms)
			wait = s->deadline_ms <= now	     ? 0
			       : wait < s->deadline_ms - now ? wait
							     : s->deadline_ms - now;
	}
	bool room = wk->nsess < wk->nsess_cap;
	for (unsigned i = 0; i < wk->nsess_cap && !room; i++)
		room = wk->sess[i].used && wk->sess[i].phase == SP_IDLE && !wk->sess[i].op;
	if (q_next_us(wk) != UINT64_MAX && room && !wk->stopping) {
		uint64_t rnow = real_us(), due = q_next_us(wk);
		if (due < wk->hub_dead_until_us)
			due = wk->hub_dead_until_us;
		uint64_t d = due <= rnow ? 0 : (due - rnow) / 1000 + 1;
		if (d < wait)
			wait = d;
	}
	return wait;
}

static bool seg_file(const char *name, void *arg)
{
	return my_segment(name, arg);
}

/* Bytes of this worker's segments on disk (both folders; a segment moving counts once). */
static uint64_t spool_bytes(struct worker *wk)
{
	uint64_t sum = 0;
	int dfd[2] = {wk->readyfd, wk->activefd};
	char **names[2] = {NULL, NULL};
	uint32_t n[2] = {0, 0};
	for (int d = 0; d < 2; d++) {
		if (fsutil_dir_list(dfd[d], seg_file, wk, &names[d], &n[d]) < 0)
			continue;
		for (uint32_t i = 0; i < n[d]; i++) {
			struct stat st;
			bool dup = false;
			for (uint32_t k = 0; d == 1 && k < n[0] && !dup; k++)
				dup = strcmp(names[0][k], names[1][i]) == 0;
			if (!dup && fstatat(dfd[d], names[d][i], &st, 0) == 0)
				sum += (uint64_t)st.st_size;
		}
	}
	for (int d = 0; d < 2; d++)
		fsutil_names_free(names[d], n[d]);
	return sum;
}

static void worker_stats(struct worker *wk)
{
	uint64_t oldest = 0;
	for (uint32_t i = 0; i < wk->nheap; i++) {
		struct rmsg *m = wk->heap[i];
		if (!m->orig && (!oldest || m->time_us < oldest))
			oldest = m->time_us;
	}
	for (struct rmsg *m = wk->fifo_head; m; m = m->next_fifo)
		if (!m->orig && (!oldest || m->time_us < oldest))
			oldest = m->time_us;
	atomic_store_explicit(&wk->queue_msgs, wk->nmsgs, memory_order_relaxed);
	atomic_store_explicit(&wk->queue_bytes, spool_bytes(wk), memory_order_relaxed);
	atomic_store_explicit(&wk->oldest_us, oldest, memory_order_relaxed);
	if (wk->id != 0)
		return;
	/* Worker 0 decides for all: the sum against spool_max_bytes. */
	struct relay *rl = wk->rl;
	uint64_t max = rl->cfg->spool_max_bytes, total = 0;
	for (unsigned i = 0; i < rl->nworkers; i++)
		total += atomic_load_explicit(&rl->w[i].queue_bytes, memory_order_relaxed);
	bool over = max && total >= max;
	if (over != atomic_load_explicit(&relay_spool_over, memory_order_relaxed)) {
		atomic_store_explicit(&relay_spool_over, over, memory_order_relaxed);
		log_line("relay: spool %s spool_max_bytes (%" PRIu64 " of %" PRIu64
			 " bytes): MAIL %s",
			 over ? "reached" : "below", total, max,
			 over ? "gets 452 4.3.1 until the relay drains it" : "is accepted again");
	}
}

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	char name[16];
	snprintf(name, sizeof(name), "relay%u", wk->id);
	pthread_setname_np(pthread_self(), name);
	arm_wake(wk);
	wk->scan_due = true;
	wk->list_due = true;
	uint64_t last_stats = 0;
	for (;;) {
		if (atomic_exchange_explicit(&wk->retry_now, false, memory_order_acq_rel))
			retry_all(wk, "retrying every waiting message now");
		if (!wk->stopping && atomic_load_explicit(&wk->rl->stop, memory_order_acquire)) {
			wk->stopping = true;
			wk->stop_deadline_ms =
			    mono_ms() + (uint64_t)wk->rl->cfg->shutdown_timeout * 1000;
			for (unsigned i = 0; i < wk->nsess_cap; i++) {
				struct sess *s = &wk->sess[i];
				if (s->used && s->phase == SP_IDLE && !s->op) {
					s->phase = SP_QUIT;
					sess_step(wk, s, smtpc_quit(&s->c, &s->out));
				}
			}
		}
		if (wk->stopping) {
			if (wk->nsess == 0)
				break;
			if (mono_ms() >= wk->stop_deadline_ms)
				for (unsigned i = 0; i < wk->nsess_cap; i++)
					if (wk->sess[i].used && wk->sess[i].deadline_ms)
						wk->sess[i].deadline_ms = 1;
		} else {
			uint64_t t = mono_ms();
			if (wk->scan_due || t - wk->last_scan_ms >= TICK_MAX_MS ||
			    (wk->window_full && wk->nmsgs < RELAY_WINDOW_MSGS)) {
				wk->scan_due = false;
				wk->last_scan_ms = t;
				scan(wk);
				wk->window_full = wk->nmsgs >= RELAY_WINDOW_MSGS;
			}
			dispatch(wk);
		}
		uint64_t now_ms = mono_ms();
		if (!wk->nunsynced || wk->stopping || now_ms - wk->last_sync_ms >= SYNC_EVERY_MS ||
		    wk->unsynced_bytes >= UNSYNCED_BYTES / 2) {
			if (wk->nunsynced)
				wk->last_sync_ms = now_ms;
			(void)wk_sync(wk);
		}
		uint64_t wait = next_wait_ms(wk);
		if (wk->nunsynced) {
			uint64_t left = wk->last_sync_ms + SYNC_EVERY_MS - now_ms;
			if (now_ms >= wk->last_sync_ms + SYNC_EVERY_MS)
				left = 0;
			if (left < wait)
				wait = left;
		}
		struct io_uring_cqe *cqe;
		wk->ts.tv_sec = (long long)(wait / 1000);
		wk->ts.tv_nsec = (long long)(wait % 1000) * 1000000;
		io_uring_submit_and_wait_timeout(&wk->ring, &cqe, 1, &wk->ts, NULL);
		unsigned head, n = 0;
		io_uring_for_each_cqe(&wk->ring, head, cqe)
		{
			n++;
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			enum ud_kind k = (enum ud_kind)(ud & 0xff);
			if (k == UD_WAKE) {
				wk->scan_due = true;
				arm_wake(wk);
				continue;
			}
			if (k != UD_SESS)
				continue;
			uint32_t idx = (uint32_t)((ud >> 8) & 0xffffff), gen = (uint32_t)(ud >> 32);
			if (idx >= wk->nsess_cap)
				continue;
			struct sess *s = &wk->sess[idx];
			if (!s->used || s->gen != gen)
				continue;
			sess_done(wk, s, cqe->res);
		}
		io_uring_cq_advance(&wk->ring, n);
		sess_timeouts(wk);
		uint64_t t = mono_ms();
		if (t - last_stats >= 1000) {
			worker_stats(wk);
			last_stats = t;
		}
	}
	(void)wk_sync(wk);
	worker_stats(wk);
	return NULL;
}

/* ---- set-up ---- */

/*
 * relay_host's names resolved (A and AAAA; addresses as they are): a new
 * set, or NULL after a line on err. Blocking: the main thread calls it, at
 * start and on SIGHUP, never a worker.
 */
static struct addr_set *resolve(const struct config *cfg, FILE *err)
{
	struct addr_set *set = calloc(1, sizeof(*set));
	if (!set) {
		fprintf(err, "mxring: relay_host: out of memory\n");
		return NULL;
	}
	for (unsigned i = 0; i < cfg->nrelay_host; i++) {
		const struct relay_dest *d = &cfg->relay_host[i];
		struct dest_addrs *da = &set->dest[i];
		if (d->unix_path)
			continue;
		struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM},
				*res = NULL;
		char port[8];
		snprintf(port, sizeof(port), "%u", d->port);
		int r = getaddrinfo(d->host, port, &hints, &res);
		if (r != 0) {
			fprintf(err, "mxring: relay_host %s: %s\n", d->host,
				r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
			free(set);
			return NULL;
		}
		for (struct addrinfo *a = res; a && da->n < RELAY_ADDRS_MAX; a = a->ai_next) {
			memcpy(&da->sa[da->n], a->ai_addr, a->ai_addrlen);
			da->salen[da->n] = a->ai_addrlen;
			const void *bin =
			    a->ai_family == AF_INET6
				? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
				: (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
			inet_ntop(a->ai_family, bin, da->text[da->n], sizeof(da->text[0]));
			da->n++;
		}
		freeaddrinfo(res);
		if (da->n == 0) {
			fprintf(err, "mxring: relay_host %s: no address\n", d->host);
			free(set);
			return NULL;
		}
	}
	return set;
}

int relay_reload(struct relay *rl)
{
	if (!rl)
		return 0;
	char *text = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&text, &len);
	struct addr_set *set = err ? resolve(rl->cfg, err) : NULL;
	if (err)
		fclose(err);
	if (!set) {
		log_line("reload: relay_host not resolved, keeping the addresses in use: \"%s\"",
			 text ? strtok(text, "\n") : "out of memory");
		free(text);
		return -1;
	}
	free(text);
	/* Room for the set being replaced: the oldest retired one goes when its
	 * last reader is surely done. */
	uint64_t now = mono_ms();
	unsigned k = 0;
	while (k < RETIRED_MAX && rl->retired[k])
		k++;
	if (k == RETIRED_MAX) {
		if (now - rl->retired[0]->retired_ms < RETIRED_MS) {
			log_line(
			    "reload: relay_host resolved again too soon; keeping the addresses "
			    "in use");
			free(set);
			return -1;
		}
		free(rl->retired[0]);
		memmove(rl->retired, rl->retired + 1, (RETIRED_MAX - 1) * sizeof(rl->retired[0]));
		k = RETIRED_MAX - 1;
	}
	struct addr_set *old = atomic_exchange_explicit(&rl->addrs, set, memory_order_acq_rel);
	old->retired_ms = now;
	rl->retired[k] = old;
	for (unsigned i = 0; i < rl->cfg->nrelay_host; i++) {
		char t[RELAY_DEST_TEXT_MAX], list[RELAY_ADDRS_MAX * (INET6_ADDRSTRLEN + 1)] = "";
		size_t off = 0;
		for (unsigned a = 0; a < set->dest[i].n && off < sizeof(list); a++)
			off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
						a ? "," : "", set->dest[i].text[a]);
		log_line("reload: relay_host %s addresses=%s",
			 relay_dest_text(&rl->cfg->relay_host[i], t, sizeof(t)),
			 rl->cfg->relay_host[i].unix_path ? "(socket)" : list);
	}
	return 0;
}

/*
 * A TLS client context per destination (relay_tls may, encrypt, verify):
 * the CA file is read now, before the sandbox. The name checked and sent
 * as SNI is relay_tls_server_name, else the destination's host name.
 */
static int tls_contexts(struct relay *rl, FILE *err)
{
	const struct config *cfg = rl->cfg;
	if (cfg->relay_tls == RELAY_TLS_NONE)
		return 0;
	for (unsigned i = 0; i < cfg->nrelay_host; i++) {
		const struct relay_dest *d = &cfg->relay_host[i];
		const char *name = cfg->relay_tls_server_name[0] ? cfg->relay_tls_server_name
				   : d->unix_path		 ? NULL
								 : d->host;
		struct tlsc_opts o = {
		    .version = 0,
		    .resume = TLSC_RESUME_TICKETS,
		    .verify = cfg->relay_tls == RELAY_TLS_VERIFY,
		    .ca_file = cfg->relay_tls_ca_file[0] ? cfg->relay_tls_ca_file : NULL,
		    .server_name = name,
		};
		char why[256];
		if (tlsc_ctx_new(&o, &rl->tls[i], why, sizeof(why)) < 0) {
			char t[RELAY_DEST_TEXT_MAX];
			fprintf(err, "mxring: relay_tls for %s: %s\n",
				relay_dest_text(d, t, sizeof(t)), why);
			return -1;
		}
	}
	return 0;
}

int relay_create(const struct config *cfg, struct relay **out, FILE *err)
{
	struct relay *rl = calloc(1, sizeof(*rl));
	if (!rl) {
		fprintf(err, "mxring: relay: out of memory\n");
		return -1;
	}
	rl->cfg = cfg;
	rl->nworkers = cfg->relay_workers;
	snprintf(rl->helo, sizeof(rl->helo), "%s",
		 cfg->relay_helo_name[0] ? cfg->relay_helo_name : cfg->myhostname);
	struct addr_set *set = resolve(cfg, err);
	atomic_init(&rl->addrs, set);
	if (!set || tls_contexts(rl, err) != 0) {
		relay_free(rl);
		return -1;
	}
	rl->w = calloc(rl->nworkers, sizeof(*rl->w));
	if (!rl->w) {
		relay_free(rl);
		fprintf(err, "mxring: relay: out of memory\n");
		return -1;
	}
	for (unsigned i = 0; i < rl->nworkers; i++) {
		struct worker *wk = &rl->w[i];
		wk->rl = rl;
		wk->id = i;
		wk->efd = wk->spoolfd = wk->activefd = wk->readyfd = -1;
	}
	*out = rl;
	return 0;
}

static void problem_log(void *ctx, const struct journal_problem *p)
{
	(void)ctx;
	if (p->error)
		log_line("relay: journal %s offset=%" PRIu64 ": %s", p->file, p->offset, p->text);
}

static int worker_open(struct worker *wk)
{
	const struct config *cfg = wk->rl->cfg;
	int r;
	wk->apply_tail = &wk->apply_head;
	wk->nsess_cap = cfg->relay_connections;
	wk->sess = calloc(wk->nsess_cap, sizeof(*wk->sess));
	wk->rbuf = malloc(RBUF_SIZE);
	wk->scanbuf = malloc(SCANBUF_SIZE);
	wk->unsynced_cap = 4096;
	wk->unsynced = calloc(wk->unsynced_cap, sizeof(*wk->unsynced));
	if (!wk->sess || !wk->rbuf || !wk->scanbuf || !wk->unsynced)
		return -ENOMEM;
	for (unsigned i = 0; i < wk->nsess_cap; i++)
		wk->sess[i].fd = -1;
	for (unsigned i = 0; i < cfg->nrelay_host; i++)
		wk->sconf[i] = (struct smtpc_conf){
		    .proto = cfg->relay_host[i].proto == RELAY_LMTP ? SMTPC_LMTP : SMTPC_SMTP,
		    .tls = cfg->relay_tls == RELAY_TLS_NONE  ? SMTPC_TLS_OFF
			   : cfg->relay_tls == RELAY_TLS_MAY ? SMTPC_TLS_IF_OFFERED
							     : SMTPC_TLS_REQUIRED,
		    .bdat = true,
		    .helo_name = wk->rl->helo,
		};
	wk->efd = eventfd(0, EFD_CLOEXEC);
	if (wk->efd < 0)
		return -errno;
	wk->spoolfd = open(cfg->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (wk->spoolfd < 0)
		return -errno;
	wk->activefd = fsutil_open_subdir(wk->spoolfd, "active", false);
	wk->readyfd = fsutil_open_subdir(wk->spoolfd, "ready", false);
	if (wk->activefd < 0 || wk->readyfd < 0)
		return wk->activefd < 0 ? wk->activefd : wk->readyfd;
	r = io_uring_queue_init(256, &wk->ring, 0);
	if (r < 0)
		return r;
	wk->ring_ok = true;
	r = journal_open(cfg->spool_dir, wk->id, 0, &wk->j);
	if (r < 0)
		return r;
	r = journal_index_new(JOURNAL_INDEX_MSGS, &wk->ix);
	if (r < 0)
		return r;
	struct journal_replay_counts counts;
	r = journal_index_load(cfg->spool_dir, wk->ix, problem_log, wk, &counts);
	if (r < 0)
		return r;
	log_line("relay: worker=%u journal replayed: files=%" PRIu64 " records=%" PRIu64
		 " messages=%" PRIu64,
		 wk->id, counts.files, counts.records, journal_index_msgs(wk->ix));
	return 0;
}

int relay_start(struct relay *rl, struct writer_set *ws)
{
	rl->ws = ws;
	for (unsigned i = 0; i < rl->nworkers; i++) {
		struct worker *wk = &rl->w[i];
		int r = worker_open(wk);
		if (r < 0) {
			fprintf(stderr, "mxring: relay worker %u: %s\n", i, strerror(-r));
			return r;
		}
		for (unsigned w = i; w < WRITERS_MAX; w += rl->nworkers)
			writers_set_relay_wake(ws, w, wk->efd);
	}
	for (unsigned i = 0; i < rl->nworkers; i++) {
		struct worker *wk = &rl->w[i];
		int r = pthread_create(&wk->thread, NULL, worker_main, wk);
		if (r != 0) {
			fprintf(stderr, "mxring: relay worker %u: %s\n", i, strerror(r));
			relay_stop(rl);
			return -r;
		}
		wk->running = true;
	}
	return 0;
}

void relay_retry_now(struct relay *rl)
{
	for (unsigned i = 0; rl && i < rl->nworkers; i++) {
		atomic_store_explicit(&rl->w[i].retry_now, true, memory_order_release);
		if (rl->w[i].efd >= 0)
			efd_signal(rl->w[i].efd);
	}
}

void relay_stop(struct relay *rl)
{
	if (!rl)
		return;
	atomic_store_explicit(&rl->stop, true, memory_order_release);
	for (unsigned i = 0; i < rl->nworkers; i++)
		if (rl->w[i].running)
			efd_signal(rl->w[i].efd);
	for (unsigned i = 0; i < rl->nworkers; i++) {
		struct worker *wk = &rl->w[i];
		if (wk->running) {
			pthread_join(wk->thread, NULL);
			wk->running = false;
		}
		if (rl->ws)
			for (unsigned w = i; w < WRITERS_MAX; w += rl->nworkers)
				writers_set_relay_wake(rl->ws, w, -1);
	}
}

void relay_free(struct relay *rl)
{
	if (!rl)
		return;
	for (unsigned i = 0; i < rl->nworkers; i++) {
		struct worker *wk = &rl->w[i];
		if (wk->j) {
			(void)wk_sync(wk);
			int r = journal_close(wk->j);
			if (r < 0)
				log_line("relay: worker=%u journal close: %s", i, strerror(-r));
		}
		journal_index_free(wk->ix);
		struct rmsg *m;
		while ((m = q_pop_due(wk, UINT64_MAX)) != NULL)
			msg_free(wk, m);
		while (wk->pend) {
			struct pend **pp = &wk->pend;
			pend_drop(wk, pp);
		}
		while (wk->segs) {
			struct rseg *sg = wk->segs;
			wk->segs = sg->next;
			if (wk->scan_seg == sg)
				wk->scan_seg = NULL;
			fsutil_close(&sg->fd);
			free(sg);
		}
		for (unsigned k = 0; wk->sess && k < wk->nsess_cap; k++) {
			if (wk->sess[k].fd >= 0)
				close(wk->sess[k].fd);
			free(wk->sess[k].sbuf);
		}
		free(wk->sess);
		free(wk->heap);
		free(wk->unsynced);
		for (unsigned d = 0; d < RELAY_HOSTS_MAX; d++)
			tlsc_session_free(wk->tls_saved[d]);
		free(wk->rbuf);
		free(wk->scanbuf);
		free(wk->envbuf);
		free(wk->rcptbuf);
		if (wk->ring_ok)
			io_uring_queue_exit(&wk->ring);
		if (wk->efd >= 0)
			close(wk->efd);
		if (wk->activefd >= 0)
			close(wk->activefd);
		if (wk->readyfd >= 0)
			close(wk->readyfd);
		if (wk->spoolfd >= 0)
			close(wk->spoolfd);
	}
	free(rl->w);
	for (unsigned d = 0; d < RELAY_HOSTS_MAX; d++)
		tlsc_ctx_free(rl->tls[d]);
	free(atomic_load_explicit(&rl->addrs, memory_order_relaxed));
	for (unsigned k = 0; k < RETIRED_MAX; k++)
		free(rl->retired[k]);
	free(rl);
}

void relay_stats(struct relay *rl, struct relay_stats *out)
{
	uint64_t oldest = 0, now = real_us();
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; rl && i < rl->nworkers; i++) {
		struct worker *wk = &rl->w[i];
#define ADD(f) out->f += atomic_load_explicit(&wk->f, memory_order_relaxed)
		ADD(sent);
		ADD(deferred);
		ADD(bounced);
		ADD(dsn_sent);
		ADD(dsn_dropped);
		ADD(sessions);
		ADD(connect_fails);
		ADD(queue_msgs);
		ADD(queue_bytes);
		ADD(segments_done);
		ADD(journal_syncs);
		ADD(journal_errors);
		ADD(tls_sessions);
		ADD(tls_resumed);
		ADD(tls_failures);
#undef ADD
		uint64_t o = atomic_load_explicit(&wk->oldest_us, memory_order_relaxed);
		if (o && (!oldest || o < oldest))
			oldest = o;
	}
	out->oldest_age_s = oldest && now > oldest ? (now - oldest) / 1000000 : 0;
}
