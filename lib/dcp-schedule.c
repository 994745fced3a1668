/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* An owed push's schedule (see dcp-schedule.h).  No I/O, no clock of its
 * own. */
#include "dcp-schedule.h"

#include <string.h>

#include "dcp-error.h"

void
dcp_schedule_init (DcpSchedule *s)
{
  static const gint64 relay[] = { 8, 64, 512, 4096 };

  memset (s, 0, sizeof *s);
  s->n = G_N_ELEMENTS (relay);
  memcpy (s->step_s, relay, sizeof relay);
  s->give_up_s = DCP_SCHEDULE_GIVE_UP_S;
}

/* "1,2,4": the steps, in seconds after the first failure; given up after
 * the last.  "1,2,4+20": then every 4 s until 20 s after it. */
gboolean
dcp_schedule_parse (const gchar *text, DcpSchedule *s, GError **error)
{
  g_auto (GStrv) halves = g_strsplit (text, "+", 2);
  g_auto (GStrv) parts = g_strsplit (halves[0] ? halves[0] : "", ",", -1);
  guint n = g_strv_length (parts);
  guint64 give_up_s = 0;
  DcpSchedule parsed;

  dcp_schedule_init (s);
  dcp_schedule_init (&parsed);
  if (n == 0 || n > DCP_SCHEDULE_MAX)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "a retry schedule has 1 to %d steps, not \"%s\"", DCP_SCHEDULE_MAX, text);
      return FALSE;
    }
  for (guint i = 0; i < n; i++)
    {
      guint64 v;
      if (!g_ascii_string_to_unsigned (parts[i], 10, 1, DCP_SCHEDULE_GIVE_UP_S, &v, NULL)
          || (i > 0 && (gint64) v <= parsed.step_s[i - 1]))
        {
          g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                       "a retry schedule is increasing seconds, 1 to %d, not \"%s\"",
                       DCP_SCHEDULE_GIVE_UP_S, text);
          return FALSE;
        }
      parsed.step_s[i] = (gint64) v;
    }
  parsed.n = n;
  parsed.give_up_s = parsed.step_s[n - 1];
  if (halves[0] != NULL && halves[1] != NULL)
    {
      if (!g_ascii_string_to_unsigned (halves[1], 10, (guint64) parsed.give_up_s,
                                       DCP_SCHEDULE_GIVE_UP_S, &give_up_s, NULL))
        {
          g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                       "a retry schedule's end is seconds after its last step, not \"%s\"", text);
          return FALSE;
        }
      parsed.give_up_s = (gint64) give_up_s;
    }
  *s = parsed;
  return TRUE;
}

/* When the try after `tries` failed ones is due (µs, like first), or -1
 * when the push is to be given up.  After the steps, the last step's
 * length again and again; the last try is at the give-up time itself, so
 * an outage shorter than that loses nothing. */
gint64
dcp_schedule_next (const DcpSchedule *s, gint64 first, guint tries)
{
  gint64 at;

  if (tries == 0)
    return first;
  if (s->n == 0)
    return -1;
  if (tries <= s->n)
    at = s->step_s[tries - 1];
  else
    at = s->step_s[s->n - 1] * (gint64) MIN (tries - s->n + 1, (guint) DCP_SCHEDULE_GIVE_UP_S);
  if (at > s->give_up_s)
    {
      gint64 before = tries == 1      ? 0
                      : tries <= s->n ? s->step_s[tries - 2]
                                      : s->step_s[s->n - 1] * (gint64) (tries - s->n);
      if (before >= s->give_up_s)
        return -1;
      at = s->give_up_s;
    }
  return first + at * G_USEC_PER_SEC;
}

/* An owed push found without its process (a reboot) is taken over only
 * while it would still be tried. */
gboolean
dcp_schedule_expired (const DcpSchedule *s, gint64 first, gint64 now)
{
  return first < 0 || now - first >= s->give_up_s * G_USEC_PER_SEC;
}
