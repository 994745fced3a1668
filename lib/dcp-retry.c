/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Retries by the caller (see dcp-retry.h).  A record is replaced whole, so
 * a run killed while writing it leaves the old one or the new. */
#include "dcp-retry.h"

#include <stdio.h>
#include <string.h>

#include "dcp-error.h"
#include "dcp-file.h"
#include "dcp-state-private.h"

gboolean
dcp_retry_mode_parse (const gchar *text, DcpRetryMode *mode, GError **error)
{
  if (g_strcmp0 (text, "background") == 0)
    *mode = DCP_RETRY_BACKGROUND;
  else if (g_strcmp0 (text, "caller") == 0)
    *mode = DCP_RETRY_CALLER;
  else
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "retry must be \"background\" or \"caller\", not \"%s\"", text);
      return FALSE;
    }
  return TRUE;
}

gboolean
dcp_retry_cap_reached (guint failures, gint64 first_s, gint64 now_s)
{
  return failures >= DCP_RETRY_CAP_RUNS
         || (first_s >= 0 && now_s - first_s >= DCP_RETRY_CAP_SECONDS);
}

/* "failures first_s\n" followed by the hashes of the tokens already
 * notified for the message, one a line. */
static gchar *
retry_name (const gchar *key)
{
  return g_strconcat ("retry-", key, NULL);
}

void
dcp_retry_clear (DcpRetry *retry)
{
  g_clear_pointer (&retry->done, g_ptr_array_unref);
}

gboolean
dcp_retry_load (DcpState *state, const gchar *key, DcpRetry *retry, GError **error)
{
  g_autofree gchar *name = retry_name (key);
  g_autofree gchar *text = NULL;
  g_autoptr (GError) local = NULL;
  g_auto (GStrv) lines = NULL;

  retry->failures = 0;
  retry->first_s = -1;
  if (retry->done == NULL)
    retry->done = g_ptr_array_new_with_free_func (g_free);
  text = dcp_file_read (state->dirfd, name, DCP_FILE_NOFOLLOW, NULL, NULL, &local);
  if (text == NULL)
    {
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return TRUE;
      g_propagate_error (error, g_steal_pointer (&local));
      return FALSE;
    }
  lines = g_strsplit (text, "\n", -1);
  if (lines[0] != NULL)
    {
      guint failures = 0;
      gint64 first_s = -1;
      if (sscanf (lines[0], "%u %" G_GINT64_FORMAT, &failures, &first_s) == 2)
        {
          retry->failures = failures;
          retry->first_s = first_s;
        }
      for (guint i = 1; lines[i] != NULL; i++)
        if (*lines[i] != '\0')
          g_ptr_array_add (retry->done, g_strdup (lines[i]));
    }
  return TRUE;
}

gboolean
dcp_retry_save (DcpState *state, const gchar *key, const DcpRetry *retry, GError **error)
{
  g_autofree gchar *name = retry_name (key);
  g_autoptr (GString) s = g_string_new (NULL);

  g_string_printf (s, "%u %" G_GINT64_FORMAT "\n", retry->failures, retry->first_s);
  for (guint i = 0; retry->done != NULL && i < retry->done->len; i++)
    g_string_append_printf (s, "%s\n", (const gchar *) g_ptr_array_index (retry->done, i));
  return dcp_state_replace (state, name, s->str, -1, error);
}

gboolean
dcp_retry_delete (DcpState *state, const gchar *key, GError **error)
{
  g_autofree gchar *name = retry_name (key);
  return dcp_state_remove (state, name, error);
}
