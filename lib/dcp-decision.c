/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The decision.  Order matters only for what we report: a message that is
 * both automatic and old is reported as automatic. */
#include "dcp-decision.h"

#include <string.h>

/* RFC 3834 Auto-Submitted: a keyword, optionally followed by parameters
 * (";...") and comments ("(...)") anywhere.  Anything other than "no" is
 * automatic.  A value with no keyword at all (empty, only a comment) is
 * treated as if the field were absent: we would rather wake a phone once
 * too often than miss a message. */
gboolean
dcp_auto_submitted_is_automatic (const gchar *value)
{
  g_autoptr (GString) kw = g_string_new (NULL);
  int depth = 0;

  for (const gchar *p = value; *p != '\0'; p++)
    {
      if (*p == '\\' && depth > 0 && p[1] != '\0')
        {
          p++;
          continue;
        }
      if (*p == '(')
        {
          depth++;
          continue;
        }
      if (*p == ')' && depth > 0)
        {
          depth--;
          continue;
        }
      if (depth > 0)
        continue;
      if (*p == ';')
        break;
      if (g_ascii_isspace (*p))
        {
          if (kw->len > 0)
            break;
          continue;
        }
      g_string_append_c (kw, *p);
    }
  if (kw->len == 0)
    return FALSE;
  return g_ascii_strcasecmp (kw->str, "no") != 0;
}

DcpVerdict
dcp_decide (const DcpMessage *msg, const DcpPolicy *policy, gint64 now_s)
{
  g_return_val_if_fail (msg != NULL, DCP_VERDICT_NOTIFY);
  g_return_val_if_fail (policy != NULL, DCP_VERDICT_NOTIFY);

  for (gchar **v = msg->auto_submitted; v != NULL && *v != NULL; v++)
    if (dcp_auto_submitted_is_automatic (*v))
      return DCP_VERDICT_SKIP_AUTO;

  if (msg->from != NULL && policy->self != NULL)
    for (const gchar *const *s = policy->self; *s != NULL; s++)
      if (g_ascii_strcasecmp (msg->from, *s) == 0)
        return DCP_VERDICT_SKIP_SELF;

  if (policy->max_age_s > 0 && msg->received_s >= 0 && now_s - msg->received_s > policy->max_age_s)
    return DCP_VERDICT_SKIP_OLD;

  if (policy->chat_only && !msg->chat_version)
    return DCP_VERDICT_SKIP_NOT_CHAT;

  return DCP_VERDICT_NOTIFY;
}

const gchar *
dcp_verdict_to_string (DcpVerdict verdict)
{
  switch (verdict)
    {
    case DCP_VERDICT_NOTIFY:
      return "notify";
    case DCP_VERDICT_SKIP_AUTO:
      return "skip auto-submitted";
    case DCP_VERDICT_SKIP_SELF:
      return "skip self";
    case DCP_VERDICT_SKIP_OLD:
      return "skip old";
    case DCP_VERDICT_SKIP_NOT_CHAT:
      return "skip not-chat";
    default:
      return "notify";
    }
}
