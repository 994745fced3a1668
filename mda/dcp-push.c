/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Sending one push and recording it (see dcp-push.h).  The cache is
 * optional: if it cannot be used we push without rate limiting, because a
 * missed message is worse than a spare wake-up. */
#include "config.h"

#include "dcp-push.h"

#include "dcp-device.h"
#include "dcp-error.h"
#include "dcp-log.h"
#include "dcp-token.h"

#include <signal.h>
#include <unistd.h>

#define USER_AGENT PACKAGE_NAME "/" PACKAGE_VERSION

/* libcurl is loaded on first use only: runs that send nothing never pay
 * for it. */
DcpHttp *
dcp_run_http (DcpRun *r, GError **error)
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

void
dcp_run_machine_config (DcpRun *r, DcpMachineConfig *c)
{
  c->window = r->s->window * G_USEC_PER_SEC;
  c->burst = (guint) MAX (r->s->burst, 1);
  /* a push's pusher gives up on it within its budget, plus a margin for
   * recording the answer */
  c->flight_max = (r->s->timeout + 2) * G_USEC_PER_SEC;
  c->trailing = r->s->trailing;
  c->schedule = &r->s->schedule;
}

/* Lock the token, notice a dead owner, feed the event, store the state
 * (unless only looking), and for a new owner lock its mark. */
gboolean
dcp_run_step (DcpRun *r, const gchar *token, DcpEvent *e, gboolean store, DcpStep *step,
              GError **error)
{
  DcpMachineConfig c;
  DcpMarkHold h;
  gboolean ok = TRUE;

  dcp_run_machine_config (r, &c);
  step->own_fd = -1;
  step->pid = -1;
  step->dead = FALSE;
  if (store ? !dcp_mark_hold (r->state, token, &h, error)
            : (dcp_mark_peek (r->state, token, &h), FALSE))
    return FALSE;
  if (h.m.owned && !h.owner_live)
    {
      DcpEvent dead = { .kind = DCP_EVENT_DEAD, .now = e->now, .started = -1 };
      DcpActions ignored;
      dcp_machine_step (&c, &h.m, &dead, &ignored);
      step->dead = TRUE;
      h.pid = -1;
    }
  dcp_machine_step (&c, &h.m, e, &step->a);
  step->m = h.m;
  step->pid = h.owner_live ? h.pid : -1;
  if (store)
    {
      if (step->a.detach_at >= 0)
        {
          h.pid = -1; /* the new owner writes its own */
          step->own_fd = dcp_mark_own (r->state, token, &h, error);
          ok = step->own_fd >= 0;
        }
      else
        ok = dcp_mark_store (r->state, token, &h, error);
      dcp_mark_release (&h);
    }
  return ok;
}

/* The owner handles SIGUSR1 before it writes its pid in the mark. */
void
dcp_run_poke (DcpStep *step)
{
  if (step->a.poke && step->pid > 1 && step->pid <= G_MAXINT32 && step->pid != getpid ())
    (void) kill ((pid_t) step->pid, SIGUSR1);
}

void
dcp_run_open_state (DcpRun *r, gboolean create)
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

void
dcp_run_start_budget (DcpRun *r)
{
  r->deadline = g_get_monotonic_time () + r->s->timeout * G_USEC_PER_SEC;
}

gchar *
dcp_outcome_text (DcpHttpOutcome out, const GError *error)
{
  if (out == DCP_HTTP_OK)
    return g_strdup ("200 ok");
  if (out == DCP_HTTP_GONE)
    return g_strdup ("410 gone");
  return g_strdup_printf ("error: %s", error ? error->message : "failed");
}

void
dcp_run_log_outcome (const gchar *token, DcpHttpOutcome out, const gchar *text)
{
  g_autofree gchar *shown = dcp_token_display (token);

  if (out == DCP_HTTP_OK)
    dcp_log (LOG_INFO, "%s: notified", shown);
  else if (out == DCP_HTTP_GONE)
    dcp_log (LOG_WARNING,
             "%s: the proxy answered 410 Gone; this token will never work again "
             "and must be replaced",
             shown);
  else
    dcp_log (LOG_WARNING, "%s: notification failed: %s", shown, text);
}

/* The result for --status; a 410 also forgets the device. */
void
dcp_run_record (DcpRun *r, const gchar *token, DcpHttpOutcome out, const gchar *text)
{
  g_autofree gchar *shown = NULL;
  g_autoptr (GError) error = NULL;
  gint64 now = g_get_real_time ();

  if (r->state == NULL)
    return;
  shown = dcp_token_display (token);
  if (!dcp_mark_record (r->state, token, now, text, &error))
    dcp_log (LOG_WARNING, "%s: cannot record the push: %s", shown, error->message);
  g_clear_error (&error);
  if (out == DCP_HTTP_GONE && !dcp_device_forget (r->state, token, &error))
    dcp_log (LOG_WARNING, "%s: cannot forget the device: %s", shown, error->message);
}

/* Send one token within the run's budget (at most max_attempts tries, 0:
 * as many as it allows), record the result and log it. */
DcpHttpOutcome
dcp_run_post (DcpRun *r, const gchar *token, guint max_attempts, gchar **text_out)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;
  DcpHttpOutcome out = DCP_HTTP_FAILED;
  DcpHttp *http = dcp_run_http (r, &error);

  if (http != NULL)
    out = dcp_http_notify (http, token, r->deadline, max_attempts, NULL, &error);
  text = dcp_outcome_text (out, error);
  dcp_run_record (r, token, out, text);
  dcp_run_log_outcome (token, out, text);
  if (text_out != NULL)
    *text_out = g_steal_pointer (&text);
  return out;
}
