/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tokens are opaque: we never look inside one to decide anything.  We only
 * refuse bytes that cannot be part of any token shape (whitespace, control
 * characters, non-ASCII) so a typo never reaches the proxy, and we never
 * use the token itself as a file name or log it whole. */
#include "dcp-token.h"

#include <string.h>

#include "dcp-error.h"

gboolean
dcp_token_validate (const gchar *token, gsize len, GError **error)
{
  if (len == 0)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID, "empty token");
      return FALSE;
    }
  if (len > DCP_TOKEN_MAX)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "token of %" G_GSIZE_FORMAT " bytes is longer than %d", len, DCP_TOKEN_MAX);
      return FALSE;
    }
  for (gsize i = 0; i < len; i++)
    {
      guchar c = (guchar) token[i];
      if (c <= 0x20 || c >= 0x7f)
        {
          g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                       "token contains %s at byte %" G_GSIZE_FORMAT,
                       g_ascii_isspace (c) ? "whitespace"
                       : c >= 0x80         ? "a non-ASCII byte"
                                           : "a control character",
                       i + 1);
          return FALSE;
        }
    }
  return TRUE;
}

/* One token per line; blank lines and lines starting with '#' are ignored;
 * surrounding whitespace (including a CR) is trimmed. */
GPtrArray *
dcp_token_list_parse (const gchar *text, gsize len, GError **error)
{
  g_autoptr (GPtrArray) tokens = g_ptr_array_new_with_free_func (g_free);
  gsize line = 0;
  const gchar *p = text;
  const gchar *end = text + len;

  while (p < end)
    {
      const gchar *nl = memchr (p, '\n', end - p);
      const gchar *e = nl ? nl : end;
      const gchar *s = p;

      line++;
      p = nl ? nl + 1 : end;
      while (s < e && g_ascii_isspace (*s))
        s++;
      while (e > s && g_ascii_isspace (e[-1]))
        e--;
      if (s == e || *s == '#')
        continue;
      if (!dcp_token_validate (s, e - s, error))
        {
          g_prefix_error (error, "line %" G_GSIZE_FORMAT ": ", line);
          return NULL;
        }
      g_ptr_array_add (tokens, g_strndup (s, e - s));
    }
  return g_steal_pointer (&tokens);
}

gchar *
dcp_token_hash (const gchar *token)
{
  return g_compute_checksum_for_string (G_CHECKSUM_SHA256, token, -1);
}

gchar *
dcp_token_display (const gchar *token)
{
  gsize n = 0;

  /* tokens are ASCII once validated; stay on a UTF-8 boundary regardless */
  while (token[n] != '\0' && n < 8 && (guchar) token[n] < 0x80)
    n++;
  return g_strdup_printf ("%.*s…", (int) n, token);
}
