/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading and understanding the header block.
 *
 * Only the header block matters to the decision, so that is all we keep:
 * reading stops at the first blank line (or at DCP_MESSAGE_HEADER_MAX).
 * A pipe is then drained to EOF through a fixed buffer, because callers
 * (fetchmail, procmail, Dovecot) treat an unread pipe as a failure; a
 * regular file (getmail's temp file) is left alone, so a 40 MB message
 * costs what a 4 KB one does.
 *
 * Parsing goes through GMime, on a cleaned copy of the header block (no
 * mbox From_ line, LF line ends, no NUL bytes).  Nothing here fails: a
 * message we cannot make sense of yields no facts, and no facts means
 * "notify".  A missed message costs more than a spare wake-up. */
#include "dcp-message.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-error.h"
#include "dcp-gmime-private.h"

#define READ_CHUNK 16384
#define DRAIN_CHUNK 65536

void
dcp_message_free (DcpMessage *msg)
{
  if (msg == NULL)
    return;
  g_strfreev (msg->auto_submitted);
  g_free (msg->from);
  g_free (msg->message_id);
  g_free (msg->key);
  g_free (msg);
}

/* Offset just past the blank line that ends the header block, searching
 * from `from`; 0 when there is none yet. */
static gsize
find_header_end (const guint8 *data, gsize len, gsize from)
{
  if (from == 0)
    {
      if (len >= 1 && data[0] == '\n')
        return 1;
      if (len >= 2 && data[0] == '\r' && data[1] == '\n')
        return 2;
    }
  for (gsize i = from; i + 1 < len; i++)
    {
      const guint8 *nl = memchr (data + i, '\n', len - i - 1);
      if (nl == NULL)
        break;
      i = nl - data;
      if (nl[1] == '\n')
        return i + 2;
      if (i + 2 < len && nl[1] == '\r' && nl[2] == '\n')
        return i + 3;
    }
  return 0;
}

static gssize
read_some (int fd, guint8 *buf, gsize len)
{
  for (;;)
    {
      gssize n = read (fd, buf, len);
      if (n >= 0)
        return n;
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        {
          struct pollfd p = { .fd = fd, .events = POLLIN };
          (void) poll (&p, 1, -1);
          continue;
        }
      return -1;
    }
}

GBytes *
dcp_message_read_header (int fd, gsize *total_read, GError **error)
{
  g_autoptr (GByteArray) buf = g_byte_array_new ();
  struct stat st;
  gboolean regular = fstat (fd, &st) == 0 && S_ISREG (st.st_mode);
  gboolean eof = FALSE;
  gsize total = 0;

  while (buf->len < DCP_MESSAGE_HEADER_MAX)
    {
      gsize old = buf->len;
      gsize want = MIN ((gsize) READ_CHUNK, DCP_MESSAGE_HEADER_MAX - old);
      gssize n;
      gsize end;

      g_byte_array_set_size (buf, old + want);
      n = read_some (fd, buf->data + old, want);
      if (n < 0)
        {
          int saved = errno;
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "reading the message: %s",
                       g_strerror (saved));
          return NULL;
        }
      g_byte_array_set_size (buf, old + n);
      total += n;
      if (n == 0)
        {
          eof = TRUE;
          break;
        }
      end = find_header_end (buf->data, buf->len, old >= 2 ? old - 2 : 0);
      if (end > 0)
        {
          g_byte_array_set_size (buf, end);
          break;
        }
    }

  if (!regular && !eof)
    {
      guint8 sink[DRAIN_CHUNK];
      for (;;)
        {
          gssize n = read_some (fd, sink, sizeof sink);
          if (n < 0)
            {
              int saved = errno;
              g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                           "draining the message: %s", g_strerror (saved));
              return NULL;
            }
          if (n == 0)
            break;
          total += n;
        }
    }

  if (total_read != NULL)
    *total_read = total;
  return g_byte_array_free_to_bytes (g_steal_pointer (&buf));
}

/* A copy GMime can digest: no mbox From_ line, LF only, no NULs, ending in
 * a blank line so the parser sees an (empty) body. */
static GByteArray *
clean_header_block (const guint8 *data, gsize len)
{
  GByteArray *out = g_byte_array_sized_new (len + 2);
  gsize i = 0;

  if (len >= 5 && memcmp (data, "From ", 5) == 0)
    {
      const guint8 *nl = memchr (data, '\n', len);
      i = nl ? (gsize) (nl - data) + 1 : len;
    }
  for (; i < len; i++)
    {
      guint8 c = data[i];
      if (c == '\r' && i + 1 < len && data[i + 1] == '\n')
        continue;
      if (c == '\0')
        c = ' ';
      g_byte_array_append (out, &c, 1);
    }
  g_byte_array_append (out, (const guint8 *) "\n\n", 2);
  return out;
}

static gchar *
unfold (const gchar *raw)
{
  GString *s = g_string_new (NULL);

  for (const gchar *p = raw; p != NULL && *p != '\0'; p++)
    if (*p != '\r' && *p != '\n')
      g_string_append_c (s, *p);
  return g_strstrip (g_string_free (s, FALSE));
}

/* Fetching programs (getmail, fetchmail) add a Received field with the time
 * they fetched the message, not the time it reached the mail server. */
static gboolean
received_by_fetcher (const gchar *value)
{
  g_autofree gchar *lower = g_ascii_strdown (value, -1);
  const gchar *semi = strrchr (lower, ';');

  if (semi != NULL)
    lower[semi - lower] = '\0';
  return strstr (lower, "getmail") != NULL || strstr (lower, "fetchmail") != NULL;
}

static gint64
received_date (const gchar *value)
{
  const gchar *semi = strrchr (value, ';');
  g_autoptr (GDateTime) dt = NULL;

  if (semi == NULL)
    return -1;
  dt = g_mime_utils_header_decode_date (semi + 1);
  return dt ? g_date_time_to_unix (dt) : -1;
}

static gchar *
first_mailbox (InternetAddressList *list, guint depth)
{
  if (list == NULL || depth > 4)
    return NULL;
  for (int i = 0; i < internet_address_list_length (list); i++)
    {
      InternetAddress *ia = internet_address_list_get_address (list, i);
      if (INTERNET_ADDRESS_IS_MAILBOX (ia))
        {
          const gchar *addr = internet_address_mailbox_get_addr (INTERNET_ADDRESS_MAILBOX (ia));
          if (addr != NULL && *addr != '\0')
            return g_ascii_strdown (addr, -1);
        }
      else if (INTERNET_ADDRESS_IS_GROUP (ia))
        {
          gchar *a = first_mailbox (
              internet_address_group_get_members (INTERNET_ADDRESS_GROUP (ia)), depth + 1);
          if (a != NULL)
            return a;
        }
    }
  return NULL;
}

static gboolean
is_trace_header (const gchar *name, const gchar *value)
{
  if (g_ascii_strcasecmp (name, "Received") == 0)
    return received_by_fetcher (value);
  return g_ascii_strcasecmp (name, "Return-Path") == 0
         || g_ascii_strcasecmp (name, "Delivered-To") == 0
         || g_ascii_strcasecmp (name, "X-Original-To") == 0
         || g_ascii_strcasecmp (name, "Envelope-To") == 0;
}

static void
collect_facts (DcpMessage *msg, GMimeMessage *gm, GChecksum *sum)
{
  GMimeHeaderList *headers = g_mime_object_get_header_list (GMIME_OBJECT (gm));
  g_autoptr (GPtrArray) autos = g_ptr_array_new ();
  int count = headers ? g_mime_header_list_get_count (headers) : 0;
  const gchar *mid;

  for (int i = 0; i < count; i++)
    {
      GMimeHeader *h = g_mime_header_list_get_header_at (headers, i);
      const gchar *name = g_mime_header_get_name (h);
      const gchar *raw = g_mime_header_get_raw_value (h);

      if (name == NULL)
        continue;
      if (raw == NULL)
        raw = "";
      if (g_ascii_strcasecmp (name, "Auto-Submitted") == 0)
        g_ptr_array_add (autos, unfold (raw));
      else if (g_ascii_strcasecmp (name, "Chat-Version") == 0)
        msg->chat_version = TRUE;
      else if (g_ascii_strcasecmp (name, "Received") == 0 && !received_by_fetcher (raw))
        msg->received = MAX (msg->received, received_date (raw));

      if (!is_trace_header (name, raw))
        {
          g_checksum_update (sum, (const guchar *) name, -1);
          g_checksum_update (sum, (const guchar *) ":", 1);
          g_checksum_update (sum, (const guchar *) raw, -1);
        }
    }
  g_ptr_array_add (autos, NULL);
  msg->auto_submitted = (gchar **) g_ptr_array_steal (autos, NULL);

  msg->from = first_mailbox (g_mime_message_get_from (gm), 0);
  mid = g_mime_message_get_message_id (gm);
  if (mid != NULL && *mid != '\0')
    msg->message_id = g_strdup (mid);
}

DcpMessage *
dcp_message_new_from_bytes (const guint8 *data, gsize len)
{
  DcpMessage *msg = g_new0 (DcpMessage, 1);
  g_autoptr (GByteArray) clean = NULL;
  g_autoptr (GMimeStream) stream = NULL;
  g_autoptr (GMimeParser) parser = NULL;
  g_autoptr (GMimeMessage) gm = NULL;
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  gsize end;

  msg->received = -1;
  if (len > DCP_MESSAGE_HEADER_MAX)
    {
      len = DCP_MESSAGE_HEADER_MAX;
      msg->truncated = TRUE;
    }
  end = find_header_end (data, len, 0);
  if (end > 0)
    len = end;
  else if (len == DCP_MESSAGE_HEADER_MAX)
    msg->truncated = TRUE;
  msg->header_length = len;

  clean = clean_header_block (data, len);
  stream = g_mime_stream_mem_new_with_buffer ((const char *) clean->data, clean->len);
  parser = g_mime_parser_new_with_stream (stream);
  gm = g_mime_parser_construct_message (parser, NULL);
  if (gm != NULL)
    collect_facts (msg, gm, sum);
  else
    msg->auto_submitted = g_new0 (gchar *, 1);

  if (msg->message_id != NULL)
    {
      g_checksum_reset (sum);
      g_checksum_update (sum, (const guchar *) "Message-ID:", -1);
      g_checksum_update (sum, (const guchar *) msg->message_id, -1);
    }
  else if (gm == NULL)
    g_checksum_update (sum, data, len);
  msg->key = g_strdup (g_checksum_get_string (sum));
  return msg;
}
