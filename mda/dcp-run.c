/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The run: read, decide, rate-limit, notify.
 *
 * Order matters.  stdin is read (and a pipe drained) before any network
 * work, so callers that watch the pipe never see it stall.  The cache is
 * optional: if it cannot be used we push without rate limiting, because a
 * missed message is worse than a spare wake-up.  Retries are capped per
 * message here, since getmail and fetchmail retry forever without back-off. */
#include "config.h"

#include "dcp-run.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dcp-decision.h"
#include "dcp-error.h"
#include "dcp-http.h"
#include "dcp-log.h"
#include "dcp-message.h"
#include "dcp-metadata.h"
#include "dcp-state.h"
#include "dcp-token.h"

#define RETRY_MAX_FAILURES 5
#define RETRY_MAX_SECONDS 3600
#define USER_AGENT PACKAGE_NAME "/" PACKAGE_VERSION
/* a device token not seen in Dovecot's metadata for this long is
 * forgotten, as chatmail relays do */
#define DEVICE_MAX_AGE (G_GINT64_CONSTANT (90 * 24 * 3600) * G_USEC_PER_SEC)

typedef struct {
  DcpSettings *s;
  DcpState *state;   /* NULL when the cache is unusable */
  DcpHttp *http;     /* loaded on first use */
  GPtrArray *tokens; /* this run's: those given, then the devices */
  gint64 deadline;   /* monotonic µs: end of the network budget */
  gboolean http_failed;
} Run;

static void
run_clear (Run *r)
{
  g_clear_pointer (&r->state, dcp_state_free);
  g_clear_pointer (&r->http, dcp_http_free);
  g_clear_pointer (&r->tokens, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Run, run_clear)

/* libcurl is loaded on first use only: runs that send nothing never pay
 * for it.  (Loading it on a second thread while stdin is drained was
 * measured: on two cores it cost more than it saved.) */
static DcpHttp *
get_http (Run *r, GError **error)
{
  if (r->http == NULL && !r->http_failed)
    {
      r->http = dcp_http_new (r->s->url, USER_AGENT, r->s->cacert, error);
      r->http_failed = r->http == NULL;
      return r->http;
    }
  if (r->http == NULL)
    g_set_error_literal (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl is unavailable");
  return r->http;
}

static void
open_state (Run *r, gboolean create)
{
  g_autoptr (GError) error = NULL;

  if (!create)
    {
      g_autofree gchar *path = g_build_filename (r->s->cache_root, "deltachat-push", NULL);
      if (!g_file_test (path, G_FILE_TEST_IS_DIR))
        return;
    }
  r->state = dcp_state_open (r->s->cache_root, &error);
  if (r->state == NULL)
    dcp_log (LOG_WARNING, "cache unusable, pushing without rate limit: %s", error->message);
}

static gchar *
format_time (gint64 us)
{
  g_autoptr (GDateTime) dt = NULL;

  if (us < 0)
    return g_strdup ("never");
  dt = g_date_time_new_from_unix_utc (us / G_USEC_PER_SEC);
  return dt ? g_date_time_format (dt, "%Y-%m-%dT%H:%M:%SZ") : g_strdup ("?");
}

static gchar *
outcome_text (DcpHttpOutcome out, const GError *error)
{
  if (out == DCP_HTTP_OK)
    return g_strdup ("200 ok");
  if (out == DCP_HTTP_GONE)
    return g_strdup ("410 gone");
  return g_strdup_printf ("error: %s", error ? error->message : "failed");
}

/* Send one token within the run's budget and record the result.  Returns
 * TRUE unless the failure is transient. */
static gboolean
push_token (Run *r, const gchar *token, const DcpSlot *slot, guint max_attempts, gchar **text_out)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;
  DcpHttpOutcome out = DCP_HTTP_FAILED;
  DcpHttp *http = get_http (r, &error);
  gint64 now;

  if (http != NULL)
    out = dcp_http_notify (http, token, r->deadline, max_attempts, NULL, &error);
  now = g_get_real_time ();
  text = outcome_text (out, error);
  /* slot NULL: the token's state could not be had; don't wait for it twice */
  if (r->state != NULL && slot != NULL)
    {
      g_autoptr (GError) serr = NULL;
      if (!dcp_state_finish (r->state, token, slot, out == DCP_HTTP_OK, now, text, &serr))
        dcp_log (LOG_WARNING, "%s: cannot record the push: %s", shown, serr->message);
      g_clear_error (&serr);
      if (out == DCP_HTTP_GONE
          && (!dcp_state_set_gone (r->state, token, TRUE, now, &serr)
              || !dcp_state_device_forget (r->state, token, &serr)))
        dcp_log (LOG_WARNING, "%s: cannot mark the token gone: %s", shown, serr->message);
    }
  if (out == DCP_HTTP_OK)
    dcp_log (LOG_INFO, "%s: notified", shown);
  else if (out == DCP_HTTP_GONE)
    dcp_log (LOG_WARNING,
             "%s: the proxy answered 410 Gone; this token will never work again "
             "and must be replaced",
             shown);
  else
    dcp_log (LOG_WARNING, "%s: notification failed: %s", shown, text);
  if (text_out != NULL)
    *text_out = g_steal_pointer (&text);
  return out != DCP_HTTP_FAILED;
}

/* Start the detached trailing push: a fresh exec of ourselves (no thread
 * or library state survives from this process), in its own session,
 * holding nothing of the caller's: stdin is a pipe carrying the token,
 * stdout and stderr are /dev/null, fd 3 is the locked pending mark.  A
 * close-on-exec pipe tells us whether the exec worked. */
static gboolean
spawn_trailing (Run *r, const gchar *token, const DcpSlot *slot, GError **error)
{
  g_autofree gchar *exe = g_file_read_link ("/proc/self/exe", NULL);
  g_autofree gchar *due = g_strdup_printf ("--due=%" G_GINT64_FORMAT, slot->due);
  g_autofree gchar *url = g_strdup_printf ("--url=%s", r->s->url);
  g_autofree gchar *timeout = g_strdup_printf ("--timeout=%" G_GINT64_FORMAT, r->s->timeout);
  g_autofree gchar *window = g_strdup_printf ("--window=%" G_GINT64_FORMAT, r->s->window);
  g_autofree gchar *cacert = r->s->cacert ? g_strdup_printf ("--cacert=%s", r->s->cacert) : NULL;
  gchar *argv[] = {
    (gchar *) PACKAGE_NAME, (gchar *) "--trailing-child", due, url, timeout, window, cacert, NULL
  };
  const gchar *path = exe != NULL ? exe : "/proc/self/exe";
  int tok[2] = { -1, -1 }, st[2] = { -1, -1 };
  int devnull, child_errno = 0, wstatus;
  gsize len = strlen (token);
  gssize n;
  pid_t pid;

  devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0 || pipe2 (tok, O_CLOEXEC) < 0 || pipe2 (st, O_CLOEXEC) < 0)
    {
      int saved = errno;
      for (int *fd = tok; fd < tok + 2; fd++)
        if (*fd >= 0)
          close (*fd);
      if (devnull >= 0)
        close (devnull);
      g_set_error (error, DCP_ERROR, DCP_ERROR_FAILED, "cannot start the trailing push: %s",
                   g_strerror (saved));
      return FALSE;
    }
  pid = fork ();
  if (pid == 0)
    {
      /* only async-signal-safe calls from here to exec */
      pid_t grandchild;
      setsid ();
      grandchild = fork ();
      if (grandchild != 0)
        {
          if (grandchild < 0)
            (void) !write (st[1], &errno, sizeof errno);
          _exit (0);
        }
      if (dup2 (tok[0], 0) < 0 || dup2 (devnull, 1) < 0 || dup2 (devnull, 2) < 0
          || dup2 (slot->pending_fd, 3) < 0 || dup3 (st[1], 4, O_CLOEXEC) < 0)
        _exit (1);
      close_range (5, ~0U, 0);
      execv (path, argv);
      (void) !write (4, &errno, sizeof errno);
      _exit (1);
    }
  close (tok[0]);
  close (st[1]);
  close (devnull);
  if (pid < 0)
    {
      int saved = errno;
      close (tok[1]);
      close (st[0]);
      g_set_error (error, DCP_ERROR, DCP_ERROR_FAILED, "cannot fork: %s", g_strerror (saved));
      return FALSE;
    }
  n = write (tok[1], token, len);
  close (tok[1]);
  while (waitpid (pid, &wstatus, 0) < 0 && errno == EINTR)
    ;
  /* EOF: the exec happened (or the child died before it, see below) */
  if (read (st[0], &child_errno, sizeof child_errno) > 0 && child_errno == 0)
    child_errno = EIO;
  close (st[0]);
  if (child_errno != 0 || n != (gssize) len)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_FAILED, "cannot start the trailing push: %s",
                   child_errno ? g_strerror (child_errno) : "token not handed over");
      return FALSE;
    }
  return TRUE;
}

static const gchar *
slot_word (DcpSlotKind kind)
{
  switch (kind)
    {
    case DCP_SLOT_PUSH:
      return "notify";
    case DCP_SLOT_TRAILING:
      return "trailing";
    case DCP_SLOT_COVERED:
      return "covered";
    case DCP_SLOT_LIMITED:
      return "rate-limited";
    case DCP_SLOT_GONE:
      return "gone";
    default:
      return "notify";
    }
}

static void
add_unique (GPtrArray *tokens, const gchar *token)
{
  if (!g_ptr_array_find_with_equal_func (tokens, token, g_str_equal, NULL))
    g_ptr_array_add (tokens, g_strdup (token));
}

/* The device tokens in Dovecot's metadata file, each remembered (when
 * write) unless the proxy called it gone. */
static void
add_file_tokens (Run *r, gboolean write, gint64 now)
{
  const gchar *path = r->s->dovecot_metadata;
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) found = NULL;
  g_autoptr (GError) error = NULL;

  found = dcp_metadata_load (path, warnings, &error);
  if (found == NULL)
    dcp_log (LOG_WARNING, "Dovecot metadata %s", error->message);
  for (guint i = 0; i < warnings->len; i++)
    dcp_log (LOG_WARNING, "Dovecot metadata %s: %s", path,
             (const gchar *) g_ptr_array_index (warnings, i));
  for (guint i = 0; found != NULL && i < found->len; i++)
    {
      const gchar *token = g_ptr_array_index (found, i);
      g_autofree gchar *shown = dcp_token_display (token);
      gboolean gone = FALSE;

      if (write && r->state != NULL
          && !dcp_state_device_seen (r->state, token, path, now, &gone, &error))
        {
          dcp_log (LOG_WARNING, "%s: cannot remember the device: %s", shown, error->message);
          g_clear_error (&error);
        }
      if (gone)
        dcp_log (LOG_INFO, "%s: the proxy called this device token gone; skipped", shown);
      else
        add_unique (r->tokens, token);
    }
}

/* This run's tokens: those given, then (with --dovecot-metadata) the ones
 * in Dovecot's file, then the other devices remembered in the cache.
 * Only with write are devices remembered, refreshed and expired. */
static void
load_tokens (Run *r, gboolean write)
{
  gint64 now = g_get_real_time ();
  g_autoptr (GPtrArray) devices = NULL;

  r->tokens = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < r->s->tokens->len; i++)
    add_unique (r->tokens, g_ptr_array_index (r->s->tokens, i));
  if (r->s->dovecot_metadata == NULL)
    return;
  add_file_tokens (r, write, now);
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

static void
print_status (Run *r, const gchar *token, const gchar *extra)
{
  g_autofree gchar *shown = dcp_token_display (token);
  DcpTokenStatus st = { .last = -1, .result_time = -1, .due = -1, .gone = -1 };
  g_autofree gchar *last = NULL, *pending = NULL, *gone = NULL;

  if (r->state != NULL)
    (void) dcp_state_get_status (r->state, token, &st, NULL);
  last = format_time (st.last);
  pending = !st.pending       ? g_strdup ("none")
            : st.pending_live ? format_time (st.due)
                              : g_strdup ("stale");
  gone = st.gone >= 0 ? format_time (st.gone) : g_strdup ("no");
  printf ("%s last-push=%s result=\"%s\" pending=%s gone=%s%s\n", shown, last,
          st.result ? st.result : "none", pending, gone, extra);
  dcp_token_status_clear (&st);
}

static DcpStatus
run_status (Run *r)
{
  g_autoptr (GPtrArray) devices = NULL;

  open_state (r, FALSE);
  for (guint i = 0; i < r->s->tokens->len; i++)
    print_status (r, g_ptr_array_index (r->s->tokens, i), "");
  if (r->state != NULL && r->s->dovecot_metadata != NULL)
    devices = dcp_state_devices (r->state, g_get_real_time (), DEVICE_MAX_AGE, FALSE);
  for (guint i = 0; devices != NULL && i < devices->len; i++)
    {
      DcpDevice *d = g_ptr_array_index (devices, i);
      g_autofree gchar *seen = format_time (d->seen);
      g_autofree gchar *extra = g_strdup_printf (" source=%s seen=%s", d->source, seen);
      if (g_str_equal (d->source, r->s->dovecot_metadata)
          && !g_ptr_array_find_with_equal_func (r->s->tokens, d->token, g_str_equal, NULL))
        print_status (r, d->token, extra);
    }
  return fflush (stdout) == 0 ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

static DcpStatus
run_ping (Run *r)
{
  gboolean all_ok = TRUE;

  open_state (r, TRUE);
  load_tokens (r, TRUE);
  for (guint i = 0; i < r->tokens->len; i++)
    {
      const gchar *token = g_ptr_array_index (r->tokens, i);
      g_autofree gchar *shown = dcp_token_display (token);
      g_autofree gchar *text = NULL;
      DcpSlot slot = DCP_SLOT_INIT;

      (void) push_token (r, token, &slot, 1, &text);
      if (g_str_equal (text, "200 ok") && r->state != NULL)
        (void) dcp_state_set_gone (r->state, token, FALSE, g_get_real_time (), NULL);
      all_ok = all_ok && g_str_equal (text, "200 ok");
      printf ("%s %s\n", text, shown);
      fflush (stdout);
    }
  if (!all_ok)
    dcp_log_fatal_line ("not every token was accepted");
  return all_ok ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

static DcpStatus
run_trailing (Run *r)
{
  gchar buf[DCP_TOKEN_MAX + 2];
  g_autoptr (GError) error = NULL;
  g_autofree gchar *shown = NULL;
  DcpSlot slot;
  gboolean owed = FALSE;
  gssize n = 0, got;
  gint64 wait;

  while (n < (gssize) sizeof buf - 1 && (got = read (0, buf + n, sizeof buf - 1 - n)) > 0)
    n += got;
  buf[MAX (n, 0)] = '\0';
  if (!dcp_token_validate (buf, MAX (n, 0), NULL))
    return DCP_STATUS_CONFIG;
  shown = dcp_token_display (buf);

  /* sleep until the window ends, never longer than one window */
  wait = CLAMP (r->s->due - g_get_real_time (), 0, r->s->window * G_USEC_PER_SEC);
  g_usleep (wait);

  open_state (r, TRUE);
  if (r->state == NULL)
    return DCP_STATUS_TRANSIENT;
  /* the push that opened the window may have gone out later than it was
   * claimed (a slow start, retries): keep a window after its end too */
  for (int i = 0; i < 3; i++)
    {
      DcpTokenStatus st = { 0 };
      gint64 left;
      (void) dcp_state_get_status (r->state, buf, &st, NULL);
      dcp_token_status_clear (&st);
      left = MAX (st.last, st.result_time) + r->s->window * G_USEC_PER_SEC - g_get_real_time ();
      if (left <= 0)
        break;
      g_usleep (MIN (left, r->s->window * G_USEC_PER_SEC));
    }
  if (!dcp_state_trailing_begin (r->state, buf, 3, g_get_real_time (), &slot, &owed, &error))
    {
      dcp_log (LOG_WARNING, "%s: trailing push: %s", shown, error->message);
      return DCP_STATUS_TRANSIENT;
    }
  close (3);
  if (!owed)
    {
      dcp_log (LOG_INFO, "%s: trailing push not needed, a push went out since", shown);
      return DCP_STATUS_DONE;
    }
  r->deadline = g_get_monotonic_time () + r->s->timeout * G_USEC_PER_SEC;
  dcp_log (LOG_INFO, "%s: trailing push", shown);
  return push_token (r, buf, &slot, 0, NULL) ? DCP_STATUS_DONE : DCP_STATUS_TRANSIENT;
}

static gboolean
retry_done_contains (const DcpRetry *retry, const gchar *hash)
{
  for (guint i = 0; retry->done != NULL && i < retry->done->len; i++)
    if (g_str_equal (g_ptr_array_index (retry->done, i), hash))
      return TRUE;
  return FALSE;
}

/* After a transient failure: count it against the message, and give up
 * once the cap is reached so the caller stops retrying. */
static DcpStatus
note_failure (Run *r, const DcpMessage *msg, DcpRetry *retry, gint64 now_s)
{
  g_autoptr (GError) error = NULL;

  if (r->s->best_effort)
    {
      dcp_log (LOG_WARNING, "notification failed; --best-effort: not asking for a retry");
      if (r->state != NULL)
        dcp_state_retry_clear (r->state, msg->key);
      return DCP_STATUS_DONE;
    }
  if (r->state == NULL)
    {
      /* without the cache we cannot count tries, and the callers that
       * retry (getmail, fetchmail) would do so forever */
      dcp_log (LOG_WARNING, "notification failed and the cache is unusable, so retries cannot "
                            "be capped: giving up on this message");
      return DCP_STATUS_DONE;
    }
  retry->failures++;
  if (retry->first < 0)
    retry->first = now_s;
  if (retry->failures >= RETRY_MAX_FAILURES || now_s - retry->first >= RETRY_MAX_SECONDS)
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
}

/* Decide per token from its state: claim it (or only look, for a dry
 * run).  Without a usable state the token is pushed regardless. */
static void
plan_token (Run *r, Plan *p, const DcpRetry *retry, gint64 now, gboolean dry)
{
  g_autoptr (GError) error = NULL;
  gint64 window = r->s->window * G_USEC_PER_SEC;
  gboolean ok;

  p->shown = dcp_token_display (p->token);
  p->hash = dcp_token_hash (p->token);
  p->slot = (DcpSlot) DCP_SLOT_INIT;
  p->done = retry_done_contains (retry, p->hash);
  if (p->done || r->state == NULL)
    {
      p->stateless = r->state == NULL;
      return;
    }
  ok = dry ? dcp_state_peek (r->state, p->token, now, window, r->s->trailing, &p->slot, &error)
           : dcp_state_claim (r->state, p->token, now, window, r->s->trailing, &p->slot, &error);
  if (!ok)
    {
      dcp_log (LOG_WARNING, "%s: rate limit unavailable, pushing anyway: %s", p->shown,
               error->message);
      p->slot = (DcpSlot) DCP_SLOT_INIT;
      p->stateless = TRUE;
    }
}

/* Everything but a push: log it, start a trailing push.  Returns TRUE
 * when the token is still to be pushed now. */
static gboolean
settle_token (Run *r, Plan *p)
{
  g_autoptr (GError) error = NULL;

  if (p->done)
    {
      dcp_log (LOG_INFO, "%s: already notified on an earlier try", p->shown);
      return FALSE;
    }
  switch (p->slot.kind)
    {
    case DCP_SLOT_GONE:
      dcp_log (LOG_WARNING, "%s: token is marked gone (410); replace it, then run --ping",
               p->shown);
      return FALSE;
    case DCP_SLOT_LIMITED:
      dcp_log (LOG_INFO, "%s: rate-limited", p->shown);
      return FALSE;
    case DCP_SLOT_COVERED:
      dcp_log (LOG_INFO, "%s: rate-limited, a trailing push is already pending", p->shown);
      return FALSE;
    case DCP_SLOT_TRAILING:
      if (spawn_trailing (r, p->token, &p->slot, &error))
        {
          dcp_log (LOG_INFO, "%s: rate-limited, trailing push scheduled", p->shown);
          return FALSE;
        }
      dcp_log (LOG_WARNING, "%s: %s; pushing now instead", p->shown, error->message);
      close (p->slot.pending_fd);
      p->slot = (DcpSlot) DCP_SLOT_INIT;
      p->stateless = TRUE;
      return TRUE;
    case DCP_SLOT_PUSH:
    default:
      return TRUE;
    }
}

static DcpStatus
run_deliver (Run *r, int fd)
{
  gboolean dry = r->s->mode == DCP_MODE_DRY_RUN;
  guint n;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) header = NULL;
  g_autoptr (DcpMessage) msg = NULL;
  g_autoptr (GArray) plans = g_array_new (FALSE, TRUE, sizeof (Plan));
  g_auto (DcpRetry) retry
      = { .failures = 0, .first = -1, .done = g_ptr_array_new_with_free_func (g_free) };
  DcpPolicy policy = { (const gchar *const *) r->s->self, r->s->max_age, r->s->chat_only };
  gboolean transient = FALSE;
  g_autofree gchar *failure = NULL;
  gint64 now = g_get_real_time ();
  DcpVerdict verdict;

  g_array_set_clear_func (plans, (GDestroyNotify) plan_clear);
  header = dcp_message_read_header_block (fd, NULL, &error);
  if (header == NULL)
    {
      dcp_log (LOG_WARNING, "%s; notifying anyway", error->message);
      g_clear_error (&error);
      header = g_bytes_new (NULL, 0);
    }
  msg = dcp_message_new_from_bytes (g_bytes_get_data (header, NULL), g_bytes_get_size (header));
  if (msg->truncated)
    dcp_log (LOG_WARNING, "header block longer than %d bytes; deciding on its start",
             DCP_MESSAGE_HEADER_MAX);
  verdict = dcp_decide (msg, &policy, now / G_USEC_PER_SEC);

  /* devices are refreshed on every run, whatever the message */
  if (verdict == DCP_VERDICT_NOTIFY || r->s->dovecot_metadata != NULL)
    open_state (r, !dry);
  load_tokens (r, !dry);
  n = r->tokens->len;
  if (n == 0)
    dcp_log (LOG_INFO, "no device token in %s yet", r->s->dovecot_metadata);
  if (verdict == DCP_VERDICT_NOTIFY)
    {
      if (r->state != NULL)
        (void) dcp_state_retry_load (r->state, msg->key, &retry, NULL);
      g_array_set_size (plans, n);
      for (guint i = 0; i < n; i++)
        {
          Plan *p = &g_array_index (plans, Plan, i);
          p->token = g_ptr_array_index (r->tokens, i);
          plan_token (r, p, &retry, now, dry);
        }
    }

  /* the caller's pipe is read to EOF before any network work */
  if (!dcp_message_drain (fd, NULL, &error))
    dcp_log (LOG_WARNING, "%s", error->message);

  if (verdict != DCP_VERDICT_NOTIFY)
    {
      dcp_log (LOG_INFO, "message %s: %s", msg->message_id ? msg->message_id : "(no Message-ID)",
               dcp_verdict_to_string (verdict));
      for (guint i = 0; dry && i < n; i++)
        {
          g_autofree gchar *shown = dcp_token_display (g_ptr_array_index (r->tokens, i));
          printf ("%s %s\n", dcp_verdict_to_string (verdict), shown);
        }
      return DCP_STATUS_DONE;
    }
  if (dry)
    {
      for (guint i = 0; i < n; i++)
        {
          Plan *p = &g_array_index (plans, Plan, i);
          printf ("%s %s\n", p->done ? "already-notified" : slot_word (p->slot.kind), p->shown);
        }
      return DCP_STATUS_DONE;
    }

  r->deadline = g_get_monotonic_time () + r->s->timeout * G_USEC_PER_SEC;
  for (guint i = 0; i < n; i++)
    {
      Plan *p = &g_array_index (plans, Plan, i);
      g_autofree gchar *text = NULL;

      if (!settle_token (r, p))
        continue;
      if (push_token (r, p->token, p->stateless ? NULL : &p->slot, 0, &text))
        g_ptr_array_add (retry.done, g_strdup (p->hash));
      else
        {
          transient = TRUE;
          if (failure == NULL)
            failure = g_strdup_printf ("%s %s", p->shown, text);
        }
    }

  if (!transient)
    {
      if (r->state != NULL && retry.failures > 0)
        dcp_state_retry_clear (r->state, msg->key);
      return DCP_STATUS_DONE;
    }
  if (note_failure (r, msg, &retry, now / G_USEC_PER_SEC) == DCP_STATUS_DONE)
    return DCP_STATUS_DONE;
  dcp_log_fatal_line ("notification failed, will retry: %s", failure);
  return DCP_STATUS_TRANSIENT;
}

DcpStatus
dcp_run (DcpSettings *s, int input_fd)
{
  g_auto (Run) r = { .s = s };

  switch (s->mode)
    {
    case DCP_MODE_STATUS:
      return run_status (&r);
    case DCP_MODE_PING:
      r.deadline = g_get_monotonic_time () + s->timeout * G_USEC_PER_SEC;
      return run_ping (&r);
    case DCP_MODE_TRAILING:
      return run_trailing (&r);
    case DCP_MODE_DELIVER:
    case DCP_MODE_DRY_RUN:
    default:
      return run_deliver (&r, input_fd);
    }
}
