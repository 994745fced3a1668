/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Sending one push and recording it (see dcp-push.h).  The cache is
 * optional: if it cannot be used we push without rate limiting, because a
 * missed message is worse than a spare wake-up. */
#include "config.h"

#include "dcp-push.h"

#include "dcp-error.h"
#include "dcp-log.h"
#include "dcp-token.h"

#define USER_AGENT PACKAGE_NAME "/" PACKAGE_VERSION

void
dcp_run_clear (DcpRun *r)
{
  g_clear_pointer (&r->state, dcp_state_free);
  g_clear_pointer (&r->http, dcp_http_free);
  g_clear_pointer (&r->tokens, g_ptr_array_unref);
}

/* libcurl is loaded on first use only: runs that send nothing never pay
 * for it. */
static DcpHttp *
get_http (DcpRun *r, GError **error)
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
dcp_format_time (gint64 us)
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

static void
record (DcpRun *r, const gchar *token, const DcpSlot *slot, DcpHttpOutcome out, gint64 now,
        const gchar *text)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autoptr (GError) error = NULL;

  if (!dcp_state_finish (r->state, token, slot, out == DCP_HTTP_OK, now, text, &error))
    dcp_log (LOG_WARNING, "%s: cannot record the push: %s", shown, error->message);
  g_clear_error (&error);
  if (out == DCP_HTTP_GONE
      && (!dcp_state_set_gone (r->state, token, TRUE, now, &error)
          || !dcp_state_device_forget (r->state, token, &error)))
    dcp_log (LOG_WARNING, "%s: cannot mark the token gone: %s", shown, error->message);
}

/* Send one token within the run's budget (at most max_attempts tries, 0:
 * as many as it allows), record the result and log it. */
DcpHttpOutcome
dcp_run_push (DcpRun *r, const gchar *token, const DcpSlot *slot, guint max_attempts,
              gchar **text_out)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;
  DcpHttpOutcome out = DCP_HTTP_FAILED;
  DcpHttp *http = get_http (r, &error);

  if (http != NULL)
    out = dcp_http_notify (http, token, r->deadline, max_attempts, NULL, &error);
  text = outcome_text (out, error);
  /* slot NULL: the token's state could not be had; don't wait for it twice */
  if (r->state != NULL && slot != NULL)
    record (r, token, slot, out, g_get_real_time (), text);
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
  return out;
}
