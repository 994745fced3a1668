/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Times as the log and --status show them (see dcp-time.h). */
#include "dcp-time.h"

gchar *
dcp_format_time (gint64 us)
{
  g_autoptr (GDateTime) dt = NULL;

  if (us < 0)
    return g_strdup ("never");
  dt = g_date_time_new_from_unix_utc (us / G_USEC_PER_SEC);
  return dt ? g_date_time_format (dt, "%Y-%m-%dT%H:%M:%SZ") : g_strdup ("?");
}
