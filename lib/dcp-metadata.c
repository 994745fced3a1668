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
 * never writes those): whatever else the file holds is never sent.  The
 * devices file the Lua login hook keeps beside it (examples/
 * deltachat-push.lua) holds "<unix time> <value>" lines, the value as the
 * dict held it, and is checked the same way.  The work is linear in the
 * file, which is capped in size. */
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

/* The value as a token, or NULL (and a warning, "<what> <n> (<key>)")
 * when it is none. */
static gchar *
token_value (const gchar *key, const gchar *raw, gsize raw_len, const gchar *what, guint pair,
             GPtrArray *warnings)
{
  g_autoptr (GError) local = NULL;
  g_autofree gchar *value = NULL;
  gsize len = 0;

  if (memchr (raw, '\0', raw_len) != NULL)
    {
      if (warnings != NULL)
        g_ptr_array_add (
            warnings,
            g_strdup_printf ("%s %u (%s): the value holds a NUL byte, ignored", what, pair, key));
      return NULL;
    }
  value = dcp_metadata_unescape (raw, raw_len, &len);
  /* core never stores a quote or a backslash (its IMAP quoting) */
  if (dcp_token_validate (value, len, &local) && strpbrk (value, "\"\\") != NULL)
    g_set_error_literal (&local, DCP_ERROR, DCP_ERROR_INVALID, "a quote or a backslash");
  if (local != NULL)
    {
      if (warnings != NULL)
        g_ptr_array_add (warnings, g_strdup_printf ("%s %u (%s): not a push token (%s), ignored",
                                                    what, pair, key, local->message));
      return NULL;
    }
  return g_steal_pointer (&value);
}

/* FALSE (and a warning) when tokens already holds as many as we take */
static gboolean
room_for (GPtrArray *tokens, GPtrArray *warnings)
{
  if (tokens->len < DCP_METADATA_TOKENS_MAX)
    return TRUE;
  if (warnings != NULL)
    g_ptr_array_add (warnings, g_strdup_printf ("more than %d device tokens, the rest are ignored",
                                                DCP_METADATA_TOKENS_MAX));
  return FALSE;
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
      value = token_value (key, vline, vlen, "pair", pair, warnings);
      if (value == NULL || g_hash_table_contains (seen, value))
        {
          g_free (value);
          continue;
        }
      if (!room_for (tokens, warnings))
        {
          g_free (value);
          break;
        }
      g_ptr_array_add (tokens, value);
      g_hash_table_add (seen, value);
    }
  return g_steal_pointer (&tokens);
}

/* The whole file at path (at most DCP_FILE_MAX bytes) in *data.  A file
 * that does not exist is empty.  FALSE with error set when the file
 * cannot be used at all. */
static gboolean
load_file (const gchar *path, gchar **data, gsize *len, GError **error)
{
  g_autoptr (GError) local = NULL;

  *len = 0;
  *data = dcp_file_read (AT_FDCWD, path, DCP_FILE_FOLLOW, len, NULL, &local);
  if (*data == NULL
      && (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT)
          || g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOTDIR)))
    {
      *data = g_strdup ("");
      return TRUE;
    }
  /* the system's reason (G_FILE_ERROR), or DCP_ERROR_INVALID: not a
   * regular file of at most DCP_FILE_MAX bytes */
  if (*data == NULL)
    {
      g_set_error (error, local->domain, local->code, "%s%s", local->message,
                   local->domain == DCP_ERROR ? ", ignored" : "");
      return FALSE;
    }
  return TRUE;
}

/* Read and parse the dictionary at path.  A file that does not exist
 * holds no token (Dovecot creates it on the first SETMETADATA).  Returns
 * NULL with error set when the file cannot be used at all. */
GPtrArray *
dcp_metadata_load (const gchar *path, GPtrArray *warnings, GError **error)
{
  g_autofree gchar *data = NULL;
  gsize len;

  if (!load_file (path, &data, &len, error))
    return NULL;
  return dcp_metadata_parse (data, len, warnings);
}

void
dcp_metadata_seen_free (DcpMetadataSeen *seen)
{
  if (seen == NULL)
    return;
  g_free (seen->token);
  g_free (seen);
}

/* One "<unix time> <value>" line (the n-th) of a devices file: its token,
 * with the time in *when, or NULL (and a warning) when it holds none. */
static gchar *
seen_line (const gchar *line, gsize line_len, guint n, GPtrArray *warnings, gint64 *when)
{
  const gchar *space = memchr (line, ' ', line_len);
  g_autofree gchar *stamp = NULL;
  guint64 t = 0;

  if (space == NULL || space == line || space - line > 20)
    {
      if (warnings != NULL)
        g_ptr_array_add (warnings, g_strdup_printf ("line %u: no \"<time> <token>\", ignored", n));
      return NULL;
    }
  stamp = g_strndup (line, space - line);
  if (!g_ascii_string_to_unsigned (stamp, 10, 0, G_MAXINT64 / G_USEC_PER_SEC, &t, NULL))
    {
      if (warnings != NULL)
        g_ptr_array_add (warnings, g_strdup_printf ("line %u: not a time, ignored", n));
      return NULL;
    }
  *when = (gint64) t;
  return token_value ("devicetoken", space + 1, line_len - (space + 1 - line), "line", n, warnings);
}

/* The valid, unique tokens of a devices file ("<unix time> <value>"
 * lines), each with the time it was last seen (the newest of its lines),
 * in file order; one line per problem is added to warnings (if not
 * NULL).  A line without the time, or a last line without LF, is
 * skipped. */
GPtrArray *
dcp_metadata_parse_seen (const gchar *data, gsize len, GPtrArray *warnings)
{
  g_autoptr (GPtrArray) found
      = g_ptr_array_new_with_free_func ((GDestroyNotify) dcp_metadata_seen_free);
  g_autoptr (GHashTable) index = g_hash_table_new (g_str_hash, g_str_equal);
  const gchar *line;
  gsize line_len, pos = 0;
  guint n = 0;

  while (next_line (data, len, &pos, &line, &line_len))
    {
      DcpMetadataSeen *seen;
      gint64 when = 0;
      gchar *value = seen_line (line, line_len, ++n, warnings, &when);

      if (value == NULL)
        continue;
      if ((seen = g_hash_table_lookup (index, value)) != NULL)
        {
          seen->seen_s = MAX (seen->seen_s, when);
          g_free (value);
          continue;
        }
      if (!room_for (found, warnings))
        {
          g_free (value);
          break;
        }
      seen = g_new0 (DcpMetadataSeen, 1);
      seen->token = value;
      seen->seen_s = when;
      g_ptr_array_add (found, seen);
      g_hash_table_insert (index, seen->token, seen);
    }
  return g_steal_pointer (&found);
}

/* Read and parse the devices file at path; a missing one holds none. */
GPtrArray *
dcp_metadata_load_seen (const gchar *path, GPtrArray *warnings, GError **error)
{
  g_autofree gchar *data = NULL;
  gsize len;

  if (!load_file (path, &data, &len, error))
    return NULL;
  return dcp_metadata_parse_seen (data, len, warnings);
}
