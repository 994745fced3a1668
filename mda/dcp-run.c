/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The run: read, decide, plan per token, push, settle.
 *
 * Order matters.  stdin is read (and a pipe drained) before any network
 * work, so callers that watch the pipe never see it stall.  What to do per
 * token and what an answer means are decided in lib/ (dcp-plan.h); here
 * they are carried out.  With --retry=background a failed push is owed to
 * a detached process (dcp-sender.c) and the run exits 0; with
 * --retry=caller it exits 75, capped per message, since getmail and
 * fetchmail retry forever without back-off. */
#include "config.h"

#include "dcp-run.h"

#include <stdio.h>
#include <unistd.h>

#include "dcp-decision.h"
#include "dcp-error.h"
#include "dcp-log.h"
#include "dcp-message.h"
#include "dcp-metadata.h"
#include "dcp-plan.h"
#include "dcp-push.h"
#include "dcp-sender.h"
#include "dcp-state.h"
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

/* One device token seen at `seen`: remembered (when write) unless the
 * proxy called it gone, then added to this run's tokens. */
static void
add_seen_token (DcpRun *r, const gchar *token, gboolean write, gint64 seen)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autoptr (GError) error = NULL;
  gboolean gone = FALSE;

  if (write && r->state != NULL
      && !dcp_state_device_seen (r->state, token, r->s->dovecot_metadata, seen, &gone, &error))
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
    devices = dcp_state_devices (r->state, now, DEVICE_MAX_AGE, FALSE);
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
      gint64 seen = MIN (f->seen * G_USEC_PER_SEC, now);

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
 * the other devices remembered in the cache.
 * Only with write are devices remembered, refreshed and expired. */
static void
load_tokens (DcpRun *r, gboolean write)
{
  gint64 now = g_get_real_time ();
  g_autoptr (GPtrArray) devices = NULL;

  r->tokens = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < r->s->tokens->len; i++)
    add_unique (r->tokens, g_ptr_array_index (r->s->tokens, i));
  if (r->s->dovecot_metadata == NULL)
    return;
  add_file_tokens (r, write, now);
  add_hook_tokens (r, write, now);
  if (r->state != NULL)
    devices = dcp_state_devices (r->state, now, DEVICE_MAX_AGE, write);
  for (guint i = 0; devices != NULL && i < devices->len; i++)
    {
      DcpDevice *d = g_ptr_array_index (devices, i);
      /* a cache shared by several accounts never mixes their devices */
      if (g_str_equal (d->source, r->s->dovecot_metadata))
        add_unique (r->tokens, d->token);
    }
}

static gchar *
owed_text (const DcpTokenStatus *st)
{
  g_autofree gchar *since = NULL, *next = NULL;

  if (!st->owed)
    return g_strdup ("no");
  since = dcp_format_time (st->owed_mark.first);
  next = dcp_format_time (st->owed_mark.next);
  return g_strdup_printf ("%s%s next-try=%s tries=%u", st->owed_live ? "" : "stale,", since,
                          st->owed_live ? next : "none", st->owed_mark.tries);
}

static void
print_status (DcpRun *r, const gchar *token, const gchar *extra)
{
  g_autofree gchar *shown = dcp_token_display (token);
  DcpTokenStatus st = { .last = -1, .result_time = -1, .due = -1, .gone = -1 };
  g_autofree gchar *last = NULL, *pending = NULL, *gone = NULL, *owed = NULL;

  if (r->state != NULL)
    dcp_state_get_status (r->state, token, &st);
  last = dcp_format_time (st.last);
  pending = !st.pending       ? g_strdup ("none")
            : st.pending_live ? dcp_format_time (st.due)
                              : g_strdup ("stale");
  gone = st.gone >= 0 ? dcp_format_time (st.gone) : g_strdup ("no");
  owed = owed_text (&st);
  printf ("%s last-push=%s result=\"%s\" pending=%s gone=%s owed=%s%s\n", shown, last,
          st.result ? st.result : "none", pending, gone, owed, extra);
  dcp_token_status_clear (&st);
}

static DcpStatus
run_status (DcpRun *r)
{
  g_autoptr (GPtrArray) devices = NULL;

  dcp_run_open_state (r, FALSE);
  for (guint i = 0; i < r->s->tokens->len; i++)
    print_status (r, g_ptr_array_index (r->s->tokens, i), "");
  if (r->state != NULL && r->s->dovecot_metadata != NULL)
    devices = dcp_state_devices (r->state, g_get_real_time (), DEVICE_MAX_AGE, FALSE);
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
  load_tokens (r, TRUE);
  for (guint i = 0; i < r->tokens->len; i++)
    {
      const gchar *token = g_ptr_array_index (r->tokens, i);
      g_autofree gchar *shown = dcp_token_display (token);
      g_autofree gchar *text = NULL;
      DcpSlot slot = DCP_SLOT_INIT;
      gboolean ok = dcp_run_push (r, token, &slot, 1, &text) == DCP_HTTP_OK;

      if (ok && r->state != NULL)
        (void) dcp_state_set_gone (r->state, token, FALSE, g_get_real_time (), NULL);
      all_ok = all_ok && ok;
      printf ("%s %s\n", text, shown);
      fflush (stdout);
    }
  if (!all_ok)
    dcp_log_fatal_line ("not every token was accepted");
  return all_ok ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

static gboolean
retry_done_contains (const DcpRetry *retry, const gchar *hash)
{
  for (guint i = 0; retry->done != NULL && i < retry->done->len; i++)
    if (g_str_equal (g_ptr_array_index (retry->done, i), hash))
      return TRUE;
  return FALSE;
}

/* --retry=caller, after a transient failure: count it against the
 * message, and give up once the cap is reached so the caller stops
 * retrying. */
static DcpStatus
note_failure (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, gint64 now_s)
{
  g_autoptr (GError) error = NULL;

  if (r->s->best_effort)
    {
      dcp_log (LOG_WARNING, "notification failed; --best-effort: not asking for a retry");
      dcp_state_retry_clear (r->state, msg->key);
      return DCP_STATUS_DONE;
    }
  retry->failures++;
  if (retry->first < 0)
    retry->first = now_s;
  if (dcp_retry_cap_reached (retry->failures, retry->first, now_s))
    {
      dcp_log (LOG_WARNING,
               "giving up on message %s after %u failed tries over %" G_GINT64_FORMAT " s",
               msg->message_id ? msg->message_id : msg->key, retry->failures, now_s - retry->first);
      dcp_state_retry_clear (r->state, msg->key);
      return DCP_STATUS_DONE;
    }
  if (!dcp_state_retry_save (r->state, msg->key, retry, &error))
    {
      dcp_log (LOG_WARNING,
               "cannot record the failed try (%s), so retries cannot be capped: "
               "giving up on this message",
               error->message);
      return DCP_STATUS_DONE;
    }
  return DCP_STATUS_TRANSIENT;
}

/* What a run does for one token. */
typedef struct {
  const gchar *token;
  gchar *shown;
  gchar *hash;
  DcpSlot slot;
  gboolean stateless; /* its state could not be had: push without it */
  gboolean done;      /* already notified for this message on an earlier try */
} Plan;

static void
plan_clear (Plan *p)
{
  g_free (p->shown);
  g_free (p->hash);
  if (p->slot.pending_fd >= 0)
    close (p->slot.pending_fd);
  if (p->slot.owed_fd >= 0)
    close (p->slot.owed_fd);
}

/* Decide per token from its state: claim it (or only look, for a dry
 * run).  Without a usable state the token is pushed regardless. */
static void
plan_token (DcpRun *r, Plan *p, const DcpRetry *retry, gint64 now, gboolean dry)
{
  g_autoptr (GError) error = NULL;
  gint64 window = r->s->window * G_USEC_PER_SEC;

  p->shown = dcp_token_display (p->token);
  p->hash = dcp_token_hash (p->token);
  p->slot = (DcpSlot) DCP_SLOT_INIT;
  p->done = retry_done_contains (retry, p->hash);
  if (p->done || r->state == NULL)
    {
      p->stateless = r->state == NULL;
      return;
    }
  if (dry)
    {
      dcp_state_peek (r->state, p->token, now, window, r->s->trailing, &p->slot);
      return;
    }
  if (!dcp_state_claim (r->state, p->token, now, window, r->s->trailing, &p->slot, &error))
    {
      dcp_log (LOG_WARNING, "%s: rate limit unavailable, pushing anyway: %s", p->shown,
               error->message);
      p->slot = (DcpSlot) DCP_SLOT_INIT;
      p->stateless = TRUE;
    }
}

static const gchar *
settled_text (DcpSlotKind kind)
{
  switch (kind)
    {
    case DCP_SLOT_GONE:
      return "token is marked gone (410); replace it, then run --ping";
    case DCP_SLOT_LIMITED:
      return "rate-limited";
    case DCP_SLOT_COVERED:
      return "rate-limited, a trailing push is already pending";
    case DCP_SLOT_OWED:
      return "a push is owed and covers this message";
    default:
      return NULL;
    }
}

/* Everything but a push: log it, start a trailing push.  Returns TRUE
 * when the token is still to be pushed now. */
static gboolean
settle_token (DcpRun *r, Plan *p)
{
  g_autoptr (GError) error = NULL;
  const gchar *text = settled_text (p->slot.kind);

  if (p->done)
    {
      dcp_log (LOG_INFO, "%s: already notified on an earlier try", p->shown);
      return FALSE;
    }
  if (text != NULL)
    {
      dcp_log (p->slot.kind == DCP_SLOT_GONE ? LOG_WARNING : LOG_INFO, "%s: %s", p->shown, text);
      if (p->slot.kind == DCP_SLOT_OWED)
        dcp_sender_poke_owed (r, p->token);
      return FALSE;
    }
  if (p->slot.kind != DCP_SLOT_TRAILING)
    return TRUE;
  if (dcp_sender_start_trailing (r, p->token, &p->slot, &error))
    {
      dcp_log (LOG_INFO, "%s: rate-limited, trailing push scheduled", p->shown);
      return FALSE;
    }
  dcp_log (LOG_WARNING, "%s: %s; pushing now instead", p->shown, error->message);
  close (p->slot.pending_fd);
  p->slot = (DcpSlot) DCP_SLOT_INIT;
  p->stateless = TRUE;
  return TRUE;
}

/* Push one token and carry out what the answer means.  Returns TRUE when
 * the caller is to be asked for a retry (--retry=caller). */
static gboolean
push_planned (DcpRun *r, Plan *p, DcpRetry *retry, gchar **failure)
{
  g_autofree gchar *text = NULL;
  guint attempts = r->s->retry == DCP_RETRY_CALLER ? 0 : 1;
  DcpHttpOutcome out = dcp_run_push (r, p->token, p->stateless ? NULL : &p->slot, attempts, &text);

  switch (dcp_plan_after (out, r->s->retry, r->state != NULL))
    {
    case DCP_AFTER_OWE:
      dcp_sender_owe (r, p->token, &p->slot, g_get_real_time ());
      return FALSE;
    case DCP_AFTER_DROP:
      dcp_log (LOG_WARNING,
               "%s: the cache is unusable, so the push can be neither owed nor "
               "counted: dropped",
               p->shown);
      return FALSE;
    case DCP_AFTER_CALLER:
      if (*failure == NULL)
        *failure = g_strdup_printf ("%s %s", p->shown, text);
      return TRUE;
    case DCP_AFTER_DONE:
    case DCP_AFTER_GONE:
    default:
      if (p->slot.owed_fd >= 0)
        dcp_state_owed_end (r->state, p->token, g_steal_fd (&p->slot.owed_fd));
      g_ptr_array_add (retry->done, g_strdup (p->hash));
      return FALSE;
    }
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
                        : dcp_slot_kind_to_string (p->slot.kind),
              shown);
    }
  return DCP_STATUS_DONE;
}

static void
plan_all (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, GArray *plans, gboolean dry)
{
  gint64 now = g_get_real_time ();

  if (r->state != NULL)
    (void) dcp_state_retry_load (r->state, msg->key, retry, NULL);
  g_array_set_size (plans, r->tokens->len);
  for (guint i = 0; i < r->tokens->len; i++)
    {
      Plan *p = &g_array_index (plans, Plan, i);
      p->token = g_ptr_array_index (r->tokens, i);
      plan_token (r, p, retry, now, dry);
    }
}

static DcpStatus
push_all (DcpRun *r, const DcpMessage *msg, DcpRetry *retry, GArray *plans)
{
  g_autofree gchar *failure = NULL;
  gboolean transient = FALSE;

  dcp_run_start_budget (r);
  for (guint i = 0; i < plans->len; i++)
    {
      Plan *p = &g_array_index (plans, Plan, i);
      if (settle_token (r, p) && push_planned (r, p, retry, &failure))
        transient = TRUE;
    }
  if (!transient)
    {
      if (r->state != NULL && retry->failures > 0)
        dcp_state_retry_clear (r->state, msg->key);
      return DCP_STATUS_DONE;
    }
  if (note_failure (r, msg, retry, g_get_real_time () / G_USEC_PER_SEC) == DCP_STATUS_DONE)
    return DCP_STATUS_DONE;
  dcp_log_fatal_line ("notification failed, will retry: %s", failure);
  return DCP_STATUS_TRANSIENT;
}

static DcpStatus
run_deliver (DcpRun *r, int fd)
{
  gboolean dry = r->s->mode == DCP_MODE_DRY_RUN;
  g_autoptr (GError) error = NULL;
  g_autoptr (DcpMessage) msg = read_message (fd);
  g_autoptr (GArray) plans = g_array_new (FALSE, TRUE, sizeof (Plan));
  g_auto (DcpRetry) retry
      = { .failures = 0, .first = -1, .done = g_ptr_array_new_with_free_func (g_free) };
  DcpPolicy policy = { (const gchar *const *) r->s->self, r->s->max_age, r->s->chat_only };
  DcpVerdict verdict = dcp_decide (msg, &policy, g_get_real_time () / G_USEC_PER_SEC);

  g_array_set_clear_func (plans, (GDestroyNotify) plan_clear);
  /* devices are refreshed on every run, whatever the message */
  if (verdict == DCP_VERDICT_NOTIFY || r->s->dovecot_metadata != NULL)
    dcp_run_open_state (r, !dry);
  load_tokens (r, !dry);
  if (r->tokens->len == 0)
    dcp_log (LOG_INFO, "no device token in %s yet", r->s->dovecot_metadata);
  if (verdict == DCP_VERDICT_NOTIFY)
    plan_all (r, msg, &retry, plans, dry);

  /* the caller's pipe is read to EOF before any network work */
  if (!dcp_message_drain (fd, NULL, &error))
    dcp_log (LOG_WARNING, "%s", error->message);
  if (verdict != DCP_VERDICT_NOTIFY || dry)
    return report_only (r, msg, verdict, plans);
  return push_all (r, msg, &retry, plans);
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
    case DCP_MODE_TRAILING:
      return dcp_sender_run_trailing (&r);
    case DCP_MODE_OWED:
      return dcp_sender_run_owed (&r);
    case DCP_MODE_DELIVER:
    case DCP_MODE_DRY_RUN:
    default:
      return run_deliver (&r, input_fd);
    }
}
