/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The run: read, decide, feed each token's state machine, push, settle.
 *
 * Order matters.  stdin is read (and a pipe drained) before anything
 * other runs act on changes, so a slow writer killed mid-stream has
 * claimed nothing; the time it finished reading is the message's time.
 * What to do per token and what an answer means are decided in lib/
 * (dcp-machine.h); here they are carried out.  All of a run's POSTs go
 * out at once, so the run ends within --timeout whatever the number of
 * tokens; what is not answered by then, or when SIGTERM ends the run, is
 * owed.  With --retry=background a failed push is owed to a detached
 * process (dcp-sender.c) and the run exits 0; with --retry=caller it
 * exits 75, capped per message (then owed), since getmail and fetchmail
 * retry forever without back-off. */
#include "config.h"

#include "dcp-run.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "dcp-decision.h"
#include "dcp-error.h"
#include "dcp-log.h"
#include "dcp-message.h"
#include "dcp-metadata.h"
#include "dcp-machine.h"
#include "dcp-retry.h"
#include "dcp-push.h"
#include "dcp-sender.h"
#include "dcp-device.h"
#include "dcp-mark.h"
#include "dcp-state.h"
#include "dcp-time.h"
#include "dcp-token.h"

/* a device token not seen in Dovecot's metadata for this long is
 * forgotten, as chatmail relays do */
#define DEVICE_MAX_AGE (G_GINT64_CONSTANT (90 * 24 * 3600) * G_USEC_PER_SEC)

static void
add_unique (GPtrArray *tokens, const gchar *token)
{
  if (!g_ptr_array_find_with_equal_func (tokens, token, g_str_equal, NULL))
    g_ptr_array_add (tokens, g_strdup (token));
}

static void
log_file_warnings (const gchar *path, GPtrArray *found, GPtrArray *warnings, GError *error)
{
  if (found == NULL)
    dcp_log (LOG_WARNING, "Dovecot metadata %s", error->message);
  for (guint i = 0; i < warnings->len; i++)
    dcp_log (LOG_WARNING, "Dovecot metadata %s: %s", path,
             (const gchar *) g_ptr_array_index (warnings, i));
}

/* The devices remembered in the cache (NULL, logged, when it cannot be
 * listed). */
static GPtrArray *
list_devices (DcpRun *r, gint64 now, gboolean expire)
{
  g_autoptr (GError) error = NULL;
  GPtrArray *devices = dcp_device_list (r->state, now, DEVICE_MAX_AGE, expire, &error);

  if (devices == NULL)
    dcp_log (LOG_WARNING, "cannot read the remembered devices: %s", error->message);
  return devices;
}

/* One device token seen at `seen`: remembered (when write) unless the
 * proxy called it gone, then added to this run's tokens. */
static void
add_seen_token (DcpRun *r, const gchar *token, gboolean write, gint64 seen)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autoptr (GError) error = NULL;
  gboolean gone = FALSE;

  if (write && r->state != NULL
      && !dcp_device_seen (r->state, token, r->s->dovecot_metadata, seen, &gone, &error))
    dcp_log (LOG_WARNING, "%s: cannot remember the device: %s", shown, error->message);
  if (gone)
    dcp_log (LOG_INFO, "%s: the proxy called this device token gone; skipped", shown);
  else
    add_unique (r->tokens, token);
}

/* The tokens the login hook recorded beside Dovecot's file (FILE.devices,
 * see examples/deltachat-push.lua), each remembered as seen when the hook
 * last saw it, or when the cache last did if that is later; one the hook
 * has not seen for DEVICE_MAX_AGE is left out. */
static void
add_hook_tokens (DcpRun *r, gboolean write, gint64 now)
{
  g_autofree gchar *path = g_strconcat (r->s->dovecot_metadata, ".devices", NULL);
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GHashTable) cached = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GPtrArray) devices = NULL;
  g_autoptr (GPtrArray) found = NULL;
  g_autoptr (GError) error = NULL;

  found = dcp_metadata_load_seen (path, warnings, &error);
  log_file_warnings (path, found, warnings, error);
  if (found == NULL || found->len == 0)
    return;
  if (write && r->state != NULL)
    devices = list_devices (r, now, FALSE);
  for (guint i = 0; devices != NULL && i < devices->len; i++)
    {
      DcpDevice *d = g_ptr_array_index (devices, i);
      if (g_str_equal (d->source, r->s->dovecot_metadata))
        g_hash_table_insert (cached, d->token, d);
    }
  for (guint i = 0; i < found->len; i++)
    {
      DcpMetadataSeen *f = g_ptr_array_index (found, i);
      DcpDevice *d = g_hash_table_lookup (cached, f->token);
      gint64 seen = MIN (f->seen_s * G_USEC_PER_SEC, now);

      if (d != NULL)
        seen = MAX (seen, d->seen);
      if (now - seen <= DEVICE_MAX_AGE)
        add_seen_token (r, f->token, write, seen);
    }
}

/* The device tokens in Dovecot's metadata file, each remembered (when
 * write) unless the proxy called it gone. */
static void
add_file_tokens (DcpRun *r, gboolean write, gint64 now)
{
  const gchar *path = r->s->dovecot_metadata;
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) found = NULL;
  g_autoptr (GError) error = NULL;

  found = dcp_metadata_load (path, warnings, &error);
  log_file_warnings (path, found, warnings, error);
  for (guint i = 0; found != NULL && i < found->len; i++)
    add_seen_token (r, g_ptr_array_index (found, i), write, now);
}

/* This run's tokens: those given, then (with --dovecot-metadata) the ones
 * in Dovecot's file, then those the login hook recorded beside it, then
 * the other devices remembered in the cache, as of now.
 * Only with write are devices remembered, refreshed and expired. */
static void
load_tokens (DcpRun *r, gboolean write, gint64 now)
{
  g_autoptr (GPtrArray) devices = NULL;

  r->tokens = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < r->s->tokens->len; i++)
    add_unique (r->tokens, g_ptr_array_index (r->s->tokens, i));
  if (r->s->dovecot_metadata == NULL)
    return;
  add_file_tokens (r, write, now);
  add_hook_tokens (r, write, now);
  if (r->state != NULL)
    devices = list_devices (r, now, write);
  for (guint i = 0; devices != NULL && i < devices->len; i++)
    {
      DcpDevice *d = g_ptr_array_index (devices, i);
      /* a cache shared by several accounts never mixes their devices */
      if (g_str_equal (d->source, r->s->dovecot_metadata))
        add_unique (r->tokens, d->token);
    }
}

static gchar *
owed_text (const DcpMarkHold *h)
{
  g_autofree gchar *since = NULL, *next = NULL;

  if (h->m.owed_first < 0)
    return g_strdup ("no");
  since = dcp_format_time (h->m.owed_first);
  next = h->m.due >= 0 ? dcp_format_time (h->m.due) : g_strdup ("now");
  return g_strdup_printf ("%s%s next-try=%s tries=%u", h->owner_live ? "" : "stale,", since,
                          h->owner_live ? next : "none", h->m.tries);
}

static gchar *
pending_text (const DcpMarkHold *h)
{
  if (!h->m.owned || h->m.owed_first >= 0)
    return g_strdup (h->m.owned && !h->owner_live ? "stale" : "none");
  if (!h->owner_live)
    return g_strdup ("stale");
  return h->m.due >= 0 ? dcp_format_time (h->m.due) : g_strdup ("now");
}

static void
print_status (DcpRun *r, const gchar *token, const gchar *extra)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autofree gchar *last = NULL, *pending = NULL, *gone = NULL, *owed = NULL, *next = NULL;
  g_autofree gchar *result = NULL;
  DcpMarkHold h = DCP_MARK_HOLD_INIT;
  DcpMachineConfig c;
  gint64 when = -1, now = g_get_real_time (), at;
  gint64 gone_since = -1;
  guint available;

  dcp_run_machine_config (r, &c);
  if (r->state != NULL)
    {
      dcp_mark_peek (r->state, token, &h);
      dcp_mark_result (r->state, token, &when, &result);
      gone_since = dcp_mark_gone_since (r->state, token);
    }
  last = dcp_format_time (h.m.last);
  pending = pending_text (&h);
  gone = gone_since >= 0 ? dcp_format_time (gone_since) : g_strdup ("no");
  owed = owed_text (&h);
  available = dcp_machine_bucket (&c, &h.m, now);
  at = dcp_machine_available_at (&c, &h.m, now);
  next = at <= now ? g_strdup ("now") : dcp_format_time (at);
  printf ("%s last-push=%s available=%u/%u next-push=%s result=\"%s\" pending=%s gone=%s "
          "owed=%s%s\n",
          shown, last, available, c.burst, next, result ? result : "none", pending, gone, owed,
          extra);
}

static DcpStatus
run_status (DcpRun *r)
{
  g_autoptr (GPtrArray) devices = NULL;

  dcp_run_open_state (r, FALSE);
  for (guint i = 0; i < r->s->tokens->len; i++)
    print_status (r, g_ptr_array_index (r->s->tokens, i), "");
  if (r->state != NULL && r->s->dovecot_metadata != NULL)
    devices = list_devices (r, g_get_real_time (), FALSE);
  for (guint i = 0; devices != NULL && i < devices->len; i++)
    {
      DcpDevice *d = g_ptr_array_index (devices, i);
      g_autofree gchar *seen = dcp_format_time (d->seen);
      g_autofree gchar *extra = g_strdup_printf (" source=%s seen=%s", d->source, seen);
      if (g_str_equal (d->source, r->s->dovecot_metadata)
          && !g_ptr_array_find_with_equal_func (r->s->tokens, d->token, g_str_equal, NULL))
        print_status (r, d->token, extra);
    }
  return fflush (stdout) == 0 ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

static DcpStatus
run_ping (DcpRun *r)
{
  gboolean all_ok = TRUE;

  dcp_run_open_state (r, TRUE);
  load_tokens (r, TRUE, g_get_real_time ());
  for (guint i = 0; i < r->tokens->len; i++)
    {
      const gchar *token = g_ptr_array_index (r->tokens, i);
      g_autofree gchar *shown = dcp_token_display (token);
      g_autofree gchar *text = NULL;
      gboolean ok = dcp_run_post (r, token, 1, &text) == DCP_HTTP_OK;

      g_autoptr (GError) error = NULL;

      if (ok && r->state != NULL
          && !dcp_mark_set_gone (r->state, token, FALSE, g_get_real_time (), &error))
        dcp_log (LOG_WARNING, "%s: cannot clear the gone mark: %s", shown, error->message);
      all_ok = all_ok && ok;
      printf ("%s %s\n", text, shown);
      fflush (stdout);
    }
  if (!all_ok)
    dcp_log_fatal_line ("not every token was accepted");
  return all_ok ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

/* Every owed or trailing push in the cache whose process is gone (a
 * reboot): a new owner for each. */
static DcpStatus
run_resume (DcpRun *r)
{
  g_autoptr (GPtrArray) tokens = NULL;
  g_autoptr (GError) list_error = NULL;
  guint resumed = 0;

  dcp_run_open_state (r, FALSE);
  if (r->state == NULL)
    return DCP_STATUS_DONE;
  tokens = dcp_mark_tokens (r->state, &list_error);
  if (tokens == NULL)
    {
      dcp_log (LOG_WARNING, "cannot resume: %s", list_error->message);
      return DCP_STATUS_TRANSIENT;
    }
  for (guint i = 0; i < tokens->len; i++)
    {
      const gchar *token = g_ptr_array_index (tokens, i);
      g_autofree gchar *shown = dcp_token_display (token);
      g_autoptr (GError) error = NULL;
      DcpEvent e = { .kind = DCP_EVENT_RESUME, .now = g_get_real_time (), .started = -1 };
      DcpStep step;

      if (!dcp_run_step (r, token, &e, TRUE, &step, &error))
        {
          dcp_log (LOG_WARNING, "%s: cannot resume: %s", shown, error->message);
          continue;
        }
      if (step.a.given_up)
        dcp_log (LOG_WARNING, "%s: owed push given up after %u failed tries: its schedule ended",
                 shown, step.a.tries);
      if (step.a.detach_at < 0)
        continue;
      dcp_sender_start (r, token, &step);
      printf ("resumed %s\n", shown);
      fflush (stdout);
      resumed++;
    }
  dcp_log (LOG_INFO, "%u detached pushes resumed", resumed);
  return fflush (stdout) == 0 ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

static gboolean
retry_done_contains (const DcpRetry *retry, const gchar *hash)
{
  for (guint i = 0; retry->done != NULL && i < retry->done->len; i++)
    if (g_str_equal (g_ptr_array_index (retry->done, i), hash))
      return TRUE;
  return FALSE;
}

/* What a run does for one token. */
typedef struct {
  const gchar *token;
  gchar *shown;
  gchar *hash;
  DcpStep step;
  gboolean stateless; /* its state could not be had: pushed without it */
  gboolean done;      /* already notified for this message on an earlier try */
  gboolean push;
  gint64 started;
  DcpHttpOutcome outcome;
  gchar *text;
} Plan;

static void
plan_clear (Plan *p)
{
  g_free (p->shown);
  g_free (p->hash);
  g_free (p->text);
  if (p->step.own_fd >= 0)
    close (p->step.own_fd);
}

static const gchar *
why_text (DcpWhy why)
{
  switch (why)
    {
    case DCP_WHY_GONE:
      return "token is marked gone (410); replace it, then run --ping";
    case DCP_WHY_LIMITED:
      return "rate-limited";
    case DCP_WHY_COVERED:
      return "rate-limited, the trailing push already scheduled covers this message";
    case DCP_WHY_OWED:
      return "a push is owed and covers this message";
    case DCP_WHY_NONE:
    case DCP_WHY_PUSH:
    case DCP_WHY_TRAILING:
    default:
      return NULL;
    }
}

/* The message is read: feed it to the token's machine (or, dry, to a
 * copy of it). */
static void
read_token_message (DcpRun *r, Plan *p, const DcpRetry *retry, gint64 now, gboolean dry)
{
  g_autoptr (GError) error = NULL;
  DcpEvent e = { .kind = DCP_EVENT_READ, .now = now, .started = -1 };
  const gchar *text;

  p->shown = dcp_token_display (p->token);
  p->hash = dcp_token_hash (p->token);
  p->step.own_fd = -1;
  p->step.a.why = DCP_WHY_PUSH;
  p->done = retry_done_contains (retry, p->hash);
  if (p->done)
    return;
  if (r->state == NULL)
    {
      p->stateless = p->push = TRUE;
      return;
    }
  if (!dcp_run_step (r, p->token, &e, !dry, &p->step, &error))
    {
      dcp_log (LOG_WARNING, "%s: rate limit unavailable, pushing anyway: %s", p->shown,
               error->message);
      p->step.a = (DcpActions) DCP_ACTIONS_INIT;
      p->step.a.why = DCP_WHY_PUSH;
      p->stateless = TRUE;
    }
  p->push = p->step.a.push || p->stateless;
  p->started = now;
  if (dry)
    return;
  if (p->step.dead)
    dcp_log (LOG_INFO, "%s: the detached push's process is gone; taken over", p->shown);
  text = why_text (p->step.a.why);
  if (text != NULL)
    dcp_log (p->step.a.why == DCP_WHY_GONE ? LOG_WARNING : LOG_INFO, "%s: %s", p->shown, text);
  dcp_run_poke (&p->step);
  dcp_sender_start (r, p->token, &p->step);
}

static DcpMessage *
read_message (int fd)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) header = dcp_message_read_header_block (fd, NULL, &error);
  DcpMessage *msg;

  if (header == NULL)
    {
      dcp_log (LOG_WARNING, "%s; notifying anyway", error->message);
      header = g_bytes_new (NULL, 0);
    }
  msg = dcp_message_new_from_bytes (g_bytes_get_data (header, NULL), g_bytes_get_size (header));
  if (msg->truncated)
    dcp_log (LOG_WARNING, "header block longer than %d bytes; deciding on its start",
             DCP_MESSAGE_HEADER_MAX);
  return msg;
}

/* A run that pushes nothing: say why (and, dry, what would be done). */
static DcpStatus
report_only (DcpRun *r, const DcpMessage *msg, DcpVerdict verdict, GArray *plans)
{
  gboolean dry = r->s->mode == DCP_MODE_DRY_RUN;

  if (verdict != DCP_VERDICT_NOTIFY)
    dcp_log (LOG_INFO, "message %s: %s", msg->message_id ? msg->message_id : "(no Message-ID)",
             dcp_verdict_to_string (verdict));
  for (guint i = 0; dry && i < r->tokens->len; i++)
    {
      g_autofree gchar *shown = dcp_token_display (g_ptr_array_index (r->tokens, i));
      const Plan *p = verdict == DCP_VERDICT_NOTIFY ? &g_array_index (plans, Plan, i) : NULL;
      printf ("%s %s\n",
              p == NULL ? dcp_verdict_to_string (verdict)
              : p->done ? "already-notified"
                        : dcp_why_to_string (p->step.a.why),
              shown);
    }
  return DCP_STATUS_DONE;
}

/* The POSTs, all at once, in a thread of their own, while this one waits
 * for them or for the signal that ends the run (then nothing was
 * answered, as far as we know).  TRUE unless a signal came.
 *
 * The thread may outlive an interrupted run, which then settles, frees
 * what it has and exits while libcurl is still at work: so the thread
 * owns everything it touches, the HTTP client (taken from the run) and
 * copies of the tokens, and a run that was interrupted leaves them to
 * it.  Only when the thread is done are the answers copied back. */
typedef struct {
  DcpHttp *http;
  DcpHttpRequest *requests;
  guint n;
  gint64 deadline;
  guint attempts;
  int done;
} PostJob;

static gpointer
post_thread (gpointer data)
{
  PostJob *job = data;

  dcp_http_notify_all (job->http, job->requests, job->n, job->deadline, job->attempts);
  (void) !write (job->done, "", 1);
  return NULL;
}

/* After the thread is done: its answers into requests, its copies freed,
 * the HTTP client back to the run. */
static void
post_job_finish (DcpRun *r, PostJob *job, DcpHttpRequest *requests)
{
  for (guint i = 0; i < job->n; i++)
    {
      requests[i].outcome = job->requests[i].outcome;
      requests[i].status = job->requests[i].status;
      requests[i].error = g_steal_pointer (&job->requests[i].error);
      g_free ((gchar *) job->requests[i].token);
    }
  g_free (job->requests);
  r->http = job->http;
  close (job->done);
  g_free (job);
}

/* No HTTP client: every request failed, for the same reason. */
static void
fail_all (DcpHttpRequest *requests, guint n, const GError *error)
{
  for (guint i = 0; i < n; i++)
    {
      requests[i].outcome = DCP_HTTP_FAILED;
      requests[i].error = g_error_copy (error);
    }
}

/* The thread's job: the run's HTTP client and copies of the tokens. */
static PostJob *
post_job_new (DcpRun *r, const DcpHttpRequest *requests, guint n, gint64 deadline, guint attempts,
              int done)
{
  PostJob *job = g_new0 (PostJob, 1);

  *job = (PostJob){ .http = g_steal_pointer (&r->http),
                    .requests = g_new0 (DcpHttpRequest, n),
                    .n = n,
                    .deadline = deadline,
                    .attempts = attempts,
                    .done = done };
  for (guint i = 0; i < n; i++)
    job->requests[i] = (DcpHttpRequest){ g_strdup (requests[i].token), DCP_HTTP_FAILED, 0, NULL };
  return job;
}

/* Wait until the thread is done (TRUE) or a signal ends the run
 * (FALSE). */
static gboolean
wait_posts (int done, int sigfd)
{
  struct pollfd fds[2] = { { done, POLLIN, 0 }, { sigfd, POLLIN, 0 } };

  for (;;)
    {
      int k = poll (fds, sigfd >= 0 ? 2 : 1, -1);
      if (k < 0 && errno == EINTR)
        continue;
      return k < 0 || (fds[0].revents & POLLIN) || !(fds[1].revents & POLLIN);
    }
}

static gboolean
post_all (DcpRun *r, DcpHttpRequest *requests, guint n, int sigfd)
{
  g_autoptr (GError) error = NULL;
  DcpHttp *http = dcp_run_http (r, &error);
  /* the run's end leaves time to settle what was not answered: a mark
   * and a detached process per token */
  gint64 margin
      = MIN (G_USEC_PER_SEC / 5 + n * (G_USEC_PER_SEC / 80), r->s->timeout * G_USEC_PER_SEC / 2);
  gint64 deadline = r->deadline - margin;
  guint attempts = r->s->retry == DCP_RETRY_CALLER ? 0 : 1;
  PostJob *job;
  GThread *thread;
  int done[2];

  if (http == NULL)
    {
      fail_all (requests, n, error);
      return TRUE;
    }
  if (pipe2 (done, O_CLOEXEC) < 0)
    {
      dcp_http_notify_all (http, requests, n, deadline, attempts);
      return TRUE;
    }
  job = post_job_new (r, requests, n, deadline, attempts, done[1]);
  thread = g_thread_new ("post", post_thread, job);
  if (!wait_posts (done[0], sigfd))
    {
      /* ended by a signal: the thread keeps its job (see above) */
      dcp_log (LOG_WARNING, "interrupted by a signal: what is not answered yet is owed");
      return FALSE;
    }
  g_thread_join (thread);
  close (done[0]);
  post_job_finish (r, job, requests);
  return TRUE;
}

/* The signals that end a run are held from the first change to the
 * state on, so that what it claimed is settled before it exits 75. */
static int
hold_signals (void)
{
  sigset_t set;

  sigemptyset (&set);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGHUP);
  if (pthread_sigmask (SIG_BLOCK, &set, NULL) != 0)
    return -1;
  return signalfd (-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* The message's retry record is no longer needed. */
static void
delete_retry (DcpRun *r, const DcpMessage *msg)
{
  g_autoptr (GError) error = NULL;

  if (!dcp_retry_delete (r->state, msg->key, &error))
    dcp_log (LOG_WARNING, "cannot remove the message's retry record: %s", error->message);
}

/* --retry=caller, after a transient failure: will the caller retry?
 * Only until the cap; then, or when the failure cannot be counted, the
 * push is owed as in background mode. */
static gboolean
caller_retries (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, gint64 now_s)
{
  g_autoptr (GError) error = NULL;
  DcpRetry next = *retry;

  if (r->s->retry != DCP_RETRY_CALLER || r->state == NULL)
    return FALSE;
  if (r->s->best_effort)
    {
      dcp_log (LOG_WARNING, "notification failed; --best-effort: not asking for a retry");
      return FALSE;
    }
  next.failures++;
  if (next.first_s < 0)
    next.first_s = now_s;
  if (dcp_retry_cap_reached (next.failures, next.first_s, now_s))
    {
      dcp_log (LOG_WARNING,
               "message %s failed %u times over %" G_GINT64_FORMAT " s: no more retries "
               "asked for, the push is owed",
               msg->message_id ? msg->message_id : msg->key, next.failures, now_s - next.first_s);
      delete_retry (r, msg);
      return FALSE;
    }
  if (!dcp_retry_save (r->state, msg->key, &next, &error))
    {
      dcp_log (LOG_WARNING,
               "cannot record the failed try (%s), so retries cannot be capped: "
               "the push is owed instead",
               error->message);
      return FALSE;
    }
  retry->failures = next.failures;
  retry->first_s = next.first_s;
  return TRUE;
}

/* One token's answer (or none: interrupted) fed to its machine. */
static void
settle (DcpRun *r, Plan *p, gboolean caller_retry, gboolean interrupted)
{
  g_autoptr (GError) error = NULL;
  DcpEvent e = { .kind = DCP_EVENT_ANSWER,
                 .now = g_get_real_time (),
                 .started = p->started,
                 .outcome = p->outcome,
                 .caller_retries = caller_retry && !interrupted };

  if (!interrupted)
    {
      dcp_run_record (r, p->token, p->outcome, p->text);
      dcp_run_log_outcome (p->token, p->outcome, p->text);
    }
  /* a push made without its state (the cache unusable, or its lock
   * busy) that failed is owed all the same if the state can be had now */
  if (p->stateless && (p->outcome != DCP_HTTP_FAILED || r->state == NULL))
    {
      if (p->outcome == DCP_HTTP_FAILED)
        dcp_log (LOG_WARNING,
                 "%s: the cache is unusable, so the push can be neither owed nor "
                 "counted: dropped",
                 p->shown);
      return;
    }
  if (!dcp_run_step (r, p->token, &e, TRUE, &p->step, &error))
    {
      dcp_log (LOG_WARNING, "%s: cannot record the answer: %s", p->shown, error->message);
      return;
    }
  if (p->step.a.given_up)
    dcp_log (LOG_WARNING, "%s: owed push given up after %u failed tries", p->shown,
             p->step.a.tries);
  dcp_run_poke (&p->step);
  dcp_sender_start (r, p->token, &p->step);
}

/* The requests of the tokens to push; index maps each to its plan. */
static void
gather_requests (GArray *plans, GArray *requests, GArray *index)
{
  for (guint i = 0; i < plans->len; i++)
    {
      Plan *p = &g_array_index (plans, Plan, i);
      DcpHttpRequest req = { p->token, DCP_HTTP_FAILED, 0, NULL };

      if (p->done)
        dcp_log (LOG_INFO, "%s: already notified on an earlier try", p->shown);
      if (!p->push || p->done)
        continue;
      g_array_append_val (requests, req);
      g_array_append_val (index, i);
    }
}

/* One token's answer (none when !answered: interrupted) into its plan,
 * then settled.  TRUE: the caller is to retry it.  One failed run counts
 * once against the message, whatever the number of its tokens that
 * failed: *decided is whether the caller retries (caller mode), -1 until
 * that is asked. */
static gboolean
take_answer (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, Plan *p, DcpHttpRequest *req,
             gboolean answered, int *decided)
{
  gboolean again = FALSE;

  p->outcome = answered ? req->outcome : DCP_HTTP_FAILED;
  p->text = answered ? dcp_outcome_text (p->outcome, req->error)
                     : g_strdup ("error: interrupted by a signal");
  if (answered)
    dcp_http_request_clear (req);
  if (p->outcome == DCP_HTTP_FAILED && answered && !p->stateless)
    {
      if (*decided < 0)
        *decided = caller_retries (r, msg, retry, g_get_real_time () / G_USEC_PER_SEC);
      again = *decided;
    }
  settle (r, p, again, !answered);
  if (!again && p->outcome != DCP_HTTP_FAILED)
    g_ptr_array_add (retry->done, g_strdup (p->hash));
  return again;
}

/* The run's status once every answer is settled.  failure: the first
 * token the caller is to retry, with its answer, or NULL. */
static DcpStatus
conclude (DcpRun *r, const DcpMessage *msg, const DcpRetry *retry, gboolean answered,
          const gchar *failure)
{
  g_autoptr (GError) error = NULL;

  if (!answered)
    {
      dcp_log_fatal_line ("interrupted by a signal, exiting 75 for a retry");
      return DCP_STATUS_INTERRUPTED;
    }
  if (failure == NULL)
    {
      if (r->state != NULL && retry->failures > 0)
        delete_retry (r, msg);
      return DCP_STATUS_DONE;
    }
  if (r->state != NULL && !dcp_retry_save (r->state, msg->key, retry, &error))
    dcp_log (LOG_WARNING, "cannot record the tokens notified: %s", error->message);
  dcp_log_fatal_line ("notification failed, will retry: %s", failure);
  return DCP_STATUS_TRANSIENT;
}

static DcpStatus
push_all (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, GArray *plans, int sigfd)
{
  g_autofree gchar *failure = NULL;
  g_autoptr (GArray) requests = g_array_new (FALSE, TRUE, sizeof (DcpHttpRequest));
  g_autoptr (GArray) index = g_array_new (FALSE, FALSE, sizeof (guint));
  gboolean answered;
  int decided = -1;

  gather_requests (plans, requests, index);
  dcp_run_start_budget (r);
  answered = requests->len == 0
             || post_all (r, (DcpHttpRequest *) (gpointer) requests->data, requests->len, sigfd);
  for (guint k = 0; k < requests->len; k++)
    {
      Plan *p = &g_array_index (plans, Plan, g_array_index (index, guint, k));
      DcpHttpRequest *req = &g_array_index (requests, DcpHttpRequest, k);

      if (take_answer (r, msg, retry, p, req, answered, &decided) && failure == NULL)
        failure = g_strdup_printf ("%s %s", p->shown, p->text);
    }
  return conclude (r, msg, retry, answered, failure);
}

/* The rest of the caller's pipe, read to EOF before anything else:
 * nothing is claimed for a message not read.  Returns the time the
 * message counts from. */
static gint64
drain_message (int fd)
{
  g_autoptr (GError) error = NULL;

  if (!dcp_message_drain (fd, NULL, &error))
    dcp_log (LOG_WARNING, "%s", error->message);
  return g_get_real_time ();
}

/* Every token's plan for a message read at now (skipping the tokens its
 * retry record says were notified). */
static void
plan_tokens (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, GArray *plans, gint64 now,
             gboolean dry)
{
  g_autoptr (GError) error = NULL;

  if (r->state != NULL && !dcp_retry_load (r->state, msg->key, retry, &error))
    dcp_log (LOG_WARNING, "cannot read the message's retry record: %s", error->message);
  g_array_set_size (plans, r->tokens->len);
  for (guint i = 0; i < r->tokens->len; i++)
    {
      Plan *p = &g_array_index (plans, Plan, i);
      p->token = g_ptr_array_index (r->tokens, i);
      read_token_message (r, p, retry, now, dry);
    }
}

static DcpStatus
run_deliver (DcpRun *r, int fd)
{
  gboolean dry = r->s->mode == DCP_MODE_DRY_RUN;
  g_autoptr (DcpMessage) msg = read_message (fd);
  g_autoptr (GArray) plans = g_array_new (FALSE, TRUE, sizeof (Plan));
  g_auto (DcpRetry) retry
      = { .failures = 0, .first_s = -1, .done = g_ptr_array_new_with_free_func (g_free) };
  DcpPolicy policy = { .self = (const gchar *const *) r->s->self,
                       .max_age_s = r->s->max_age,
                       .chat_only = r->s->chat_only };
  DcpVerdict verdict;
  gint64 now;
  int sigfd = -1;
  DcpStatus status;

  g_array_set_clear_func (plans, (GDestroyNotify) plan_clear);
  /* the decision, the devices and every token's machine see this one
   * time */
  now = drain_message (fd);
  verdict = dcp_decide (msg, &policy, now / G_USEC_PER_SEC);

  /* devices are refreshed on every run, whatever the message */
  if (verdict == DCP_VERDICT_NOTIFY || r->s->dovecot_metadata != NULL)
    dcp_run_open_state (r, !dry);
  load_tokens (r, !dry, now);
  if (r->tokens->len == 0)
    dcp_log (LOG_INFO, "no device token in %s yet", r->s->dovecot_metadata);
  if (verdict == DCP_VERDICT_NOTIFY)
    {
      if (!dry)
        sigfd = hold_signals ();
      plan_tokens (r, msg, &retry, plans, now, dry);
    }
  if (verdict != DCP_VERDICT_NOTIFY || dry)
    return report_only (r, msg, verdict, plans);
  status = push_all (r, msg, &retry, plans, sigfd);
  if (sigfd >= 0)
    close (sigfd);
  return status;
}

void
dcp_run_clear (DcpRun *r)
{
  g_clear_pointer (&r->state, dcp_state_free);
  g_clear_pointer (&r->http, dcp_http_free);
  g_clear_pointer (&r->tokens, g_ptr_array_unref);
}

DcpStatus
dcp_run (DcpSettings *s, int input_fd)
{
  g_auto (DcpRun) r = { .s = s };

  switch (s->mode)
    {
    case DCP_MODE_STATUS:
      return run_status (&r);
    case DCP_MODE_PING:
      dcp_run_start_budget (&r);
      return run_ping (&r);
    case DCP_MODE_RESUME:
      return run_resume (&r);
    case DCP_MODE_TRAILING:
      return dcp_sender_run_owner (&r);
    case DCP_MODE_DELIVER:
    case DCP_MODE_DRY_RUN:
    case DCP_MODE_HELP: /* main() answers these two itself */
    case DCP_MODE_VERSION:
    default:
      return run_deliver (&r, input_fd);
    }
}
