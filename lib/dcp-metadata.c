/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dovecot's file dict, read the way Dovecot reads it (file_dict_refresh()
 * in src/lib-dict/dict-file.c): lines end at LF, a CR before it is
 * dropped, a last line without LF is not a line, and lines pair up as key
 * then value.  Both are tab-escaped: \001 followed by 1, t, r or n stands
 * for \001, TAB, CR or LF, followed by anything else for that byte.
 *
 * We only take values of `priv/<mailbox GUID>/devicetoken` (what
 * /private/devicetoken becomes) and `shared/<GUID>/devicetoken`, and only
 * values that are valid tokens without a quote or a backslash (core
 * never writes those): whatever else the file holds is never sent.  The work is linear in the file,
 * which is capped in size. */
#include "dcp-metadata.h"

#include <fcntl.h>
#include <string.h>

#include "dcp-error.h"
#include "dcp-file.h"
#include "dcp-token.h"

#define ESCAPE '\001'

gchar *
dcp_metadata_unescape (const gchar *text, gsize len, gsize *out_len)
{
  gchar *out = g_malloc (len + 1);
  gsize n = 0;

  for (gsize i = 0; i < len; i++)
    {
      if (text[i] != ESCAPE)
        {
          out[n++] = text[i];
          continue;
        }
      if (++i == len)
        break;
      switch (text[i])
        {
        case '1':
          out[n++] = ESCAPE;
          break;
        case 't':
          out[n++] = '\t';
          break;
        case 'r':
          out[n++] = '\r';
          break;
        case 'n':
          out[n++] = '\n';
          break;
        default:
          out[n++] = text[i];
          break;
        }
    }
  out[n] = '\0';
  if (out_len != NULL)
    *out_len = n;
  return out;
}

/* priv/<GUID>/devicetoken or shared/<GUID>/devicetoken */
static gboolean
is_token_key (const gchar *key)
{
  const gchar *rest = NULL, *slash;

  if (g_str_has_prefix (key, "priv/"))
    rest = key + strlen ("priv/");
  else if (g_str_has_prefix (key, "shared/"))
    rest = key + strlen ("shared/");
  if (rest == NULL || *rest == '/' || (slash = strchr (rest, '/')) == NULL)
    return FALSE;
  return strcmp (slash, "/devicetoken") == 0;
}

/* The next line of data[*pos..len), without its LF and a CR before it;
 * FALSE when no complete line is left. */
static gboolean
next_line (const gchar *data, gsize len, gsize *pos, const gchar **line, gsize *line_len)
{
  const gchar *start = data + *pos;
  const gchar *nl = memchr (start, '\n', len - *pos);
  gsize n;

  if (nl == NULL)
    return FALSE;
  n = nl - start;
  *pos += n + 1;
  if (n > 0 && start[n - 1] == '\r')
    n--;
  *line = start;
  *line_len = n;
  return TRUE;
}

/* The value as a token, or NULL (and a warning) when it is none. */
static gchar *
token_value (const gchar *key, const gchar *raw, gsize raw_len, guint pair, GPtrArray *warnings)
{
  g_autoptr (GError) local = NULL;
  g_autofree gchar *value = NULL;
  gsize len = 0;

  if (memchr (raw, '\0', raw_len) != NULL)
    {
      if (warnings != NULL)
        g_ptr_array_add (
            warnings,
            g_strdup_printf ("pair %u (%s): the value holds a NUL byte, ignored", pair, key));
      return NULL;
    }
  value = dcp_metadata_unescape (raw, raw_len, &len);
  /* core never stores a quote or a backslash (its IMAP quoting) */
  if (dcp_token_validate (value, len, &local) && strpbrk (value, "\"\\") != NULL)
    g_set_error_literal (&local, DCP_ERROR, DCP_ERROR_INVALID, "a quote or a backslash");
  if (local != NULL)
    {
      if (warnings != NULL)
        g_ptr_array_add (warnings, g_strdup_printf ("pair %u (%s): not a push token (%s), ignored",
                                                    pair, key, local->message));
      return NULL;
    }
  return g_steal_pointer (&value);
}

/* The valid, unique device tokens of the dictionary in data, in file
 * order; one line per problem is added to warnings (if not NULL). */
GPtrArray *
dcp_metadata_parse (const gchar *data, gsize len, GPtrArray *warnings)
{
  g_autoptr (GPtrArray) tokens = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  const gchar *kline, *vline;
  gsize klen, vlen, pos = 0;
  guint pair = 0;

  while (next_line (data, len, &pos, &kline, &klen) && next_line (data, len, &pos, &vline, &vlen))
    {
      g_autofree gchar *key = NULL;
      gchar *value;

      pair++;
      /* a key with a NUL ends there, as in Dovecot's C strings */
      key = dcp_metadata_unescape (kline, strnlen (kline, klen), NULL);
      if (!is_token_key (key))
        continue;
      value = token_value (key, vline, vlen, pair, warnings);
      if (value == NULL || g_hash_table_contains (seen, value))
        {
          g_free (value);
          continue;
        }
      if (tokens->len == DCP_METADATA_TOKENS_MAX)
        {
          g_free (value);
          if (warnings != NULL)
            g_ptr_array_add (warnings, g_strdup_printf ("more than %d device tokens, the rest "
                                                        "are ignored",
                                                        DCP_METADATA_TOKENS_MAX));
          break;
        }
      g_ptr_array_add (tokens, value);
      g_hash_table_add (seen, value);
    }
  return g_steal_pointer (&tokens);
}

/* Read and parse the dictionary at path.  A file that does not exist
 * holds no token (Dovecot creates it on the first SETMETADATA).  Returns
 * NULL with error set when the file cannot be used at all. */
GPtrArray *
dcp_metadata_load (const gchar *path, GPtrArray *warnings, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autofree gchar *buf = NULL;
  gsize len = 0;

  buf = dcp_file_read (AT_FDCWD, path, DCP_FILE_FOLLOW, &len, NULL, &local);
  if (buf == NULL
      && (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT)
          || g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOTDIR)))
    return g_ptr_array_new_with_free_func (g_free);
  if (buf == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "%s%s", local->message,
                   local->domain == DCP_ERROR ? ", ignored" : "");
      return NULL;
    }
  return dcp_metadata_parse (buf, len, warnings);
}
