/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading and understanding the header block.
 *
 * Only the header block matters to the decision, so that is all we keep:
 * reading stops at the first blank line (or at DCP_MESSAGE_HEADER_MAX).
 * A pipe is then drained to EOF through a fixed buffer, because callers
 * (fetchmail, procmail, Dovecot) treat an unread pipe as a failure; a
 * regular file (getmail's temp file) is left alone, so a big message
 * costs what a small one does.
 *
 * The header block is split into fields here (no mbox From_ line, LF
 * line ends, NUL bytes made blanks); GMime parses what needs a parser:
 * the first From and Message-ID and the dates.  Nothing here fails: a
 * message we cannot make sense of yields no facts, and no facts means
 * "notify".  A missed message costs more than a spare wake-up. */
#include "dcp-message.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include "dcp-error.h"

/* GMime 3.2 declares no autoptr cleanups */
G_DEFINE_AUTOPTR_CLEANUP_FUNC (InternetAddressList, g_object_unref)

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

/* Is this line (without its line end) a header field: a name of
 * printable ASCII other than ':', optional blanks, then ':'? */
static gboolean
is_field_line (const guint8 *line, gsize len)
{
  gsize i = 0;

  while (i < len && line[i] > ' ' && line[i] < 0x7f && line[i] != ':')
    i++;
  if (i == 0)
    return FALSE;
  while (i < len && (line[i] == ' ' || line[i] == '\t'))
    i++;
  return i < len && line[i] == ':';
}

/* Where the header block ends, scanning whole lines from *pos (a line
 * start; updated so a later call resumes there).  The block ends after the
 * first blank line, or before the first line that is neither a field nor
 * a continuation of one: whatever follows is body, as lenient mail
 * parsers see it.  An mbox From_ line is allowed first.  Returns 0 while
 * no end is seen yet. */
static gsize
find_header_end (const guint8 *data, gsize len, gsize *pos)
{
  while (*pos < len)
    {
      const guint8 *line = data + *pos;
      const guint8 *nl = memchr (line, '\n', len - *pos);
      gsize n;

      if (nl == NULL)
        return 0;
      n = nl - line;
      if (n > 0 && line[n - 1] == '\r')
        n--;
      if (n == 0)
        return *pos + (nl - line) + 1;
      if (!(*pos == 0 && n >= 5 && memcmp (line, "From ", 5) == 0)
          && !(*pos > 0 && (line[0] == ' ' || line[0] == '\t')) && !is_field_line (line, n))
        return *pos > 0 ? *pos : (gsize) (nl - data) + 1;
      *pos += (nl - line) + 1;
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
dcp_message_read_header_block (int fd, gsize *total_read, GError **error)
{
  g_autoptr (GByteArray) buf = g_byte_array_new ();
  gsize total = 0;
  gsize scan = 0;

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
          g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved),
                       "reading the message: %s", g_strerror (saved));
          return NULL;
        }
      g_byte_array_set_size (buf, old + n);
      total += n;
      if (n == 0)
        break;
      end = find_header_end (buf->data, buf->len, &scan);
      if (end > 0)
        {
          g_byte_array_set_size (buf, end);
          break;
        }
    }
  if (total_read != NULL)
    *total_read = total;
  return g_byte_array_free_to_bytes (g_steal_pointer (&buf));
}

gboolean
dcp_message_drain (int fd, gsize *total_read, GError **error)
{
  guint8 sink[DRAIN_CHUNK];
  struct stat st;
  gsize total = 0;

  if (total_read != NULL)
    *total_read = 0;
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode))
    return TRUE;
  for (;;)
    {
      gssize n = read_some (fd, sink, sizeof sink);
      if (n < 0)
        {
          int saved = errno;
          g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved),
                       "draining the message: %s", g_strerror (saved));
          return FALSE;
        }
      if (n == 0)
        break;
      total += n;
    }
  if (total_read != NULL)
    *total_read = total;
  return TRUE;
}

GBytes *
dcp_message_read_header (int fd, gsize *total_read, GError **error)
{
  g_autoptr (GBytes) header = NULL;
  gsize head = 0, rest = 0;

  header = dcp_message_read_header_block (fd, &head, error);
  if (header == NULL || !dcp_message_drain (fd, &rest, error))
    return NULL;
  if (total_read != NULL)
    *total_read = head + rest;
  return g_steal_pointer (&header);
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

/* Fetching programs add a Received field with the time they fetched the
 * message, not the time it reached the mail server: getmail 6 writes
 * "... with IMAP4 getmail6 ...", older getmail "(getmail 5.x)", fetchmail
 * "(fetchmail-6.4.37)".  A host merely named getmail.example is no sign. */
static gboolean
received_by_fetcher (const gchar *value)
{
  g_autofree gchar *lower = g_ascii_strdown (value, -1);
  g_auto (GStrv) words = NULL;
  gchar *semi = strrchr (lower, ';');

  if (semi != NULL)
    *semi = '\0';
  words = g_strsplit_set (lower, " \t\r\n", -1);
  for (gchar **w = words; *w != NULL; w++)
    if (g_str_equal (*w, "getmail6") || g_str_equal (*w, "(getmail")
        || g_str_has_prefix (*w, "(fetchmail-"))
      return TRUE;
  return FALSE;
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

/* Of a From field, GMime sees this much: the first mailbox is all we use,
 * and GMime's memory grows with the length of an address list. */
#define FROM_VALUE_MAX 8192

/* What one pass over the header block collects. */
typedef struct {
  DcpMessage *msg;
  GPtrArray *autos;  /* Auto-Submitted values */
  GChecksum *sum;    /* the retry key without a Message-ID */
  gchar *from;       /* the first From value, for GMime */
  gchar *message_id; /* the first Message-ID value, for GMime */
} Scan;

/* One field of the header block: name, then the raw value after ':'. */
static void
take_field (Scan *scan, const gchar *name, const gchar *value, const GString *field)
{
  if (!is_trace_header (name, value))
    g_checksum_update (scan->sum, (const guchar *) field->str, field->len);

  if (g_ascii_strcasecmp (name, "Auto-Submitted") == 0)
    g_ptr_array_add (scan->autos, unfold (value));
  else if (g_ascii_strcasecmp (name, "Chat-Version") == 0)
    scan->msg->chat_version = TRUE;
  else if (g_ascii_strcasecmp (name, "Received") == 0)
    {
      if (!received_by_fetcher (value))
        scan->msg->received_s = MAX (scan->msg->received_s, received_date (value));
    }
  /* address and Message-ID syntax is GMime's business; only the first
   * of each counts */
  else if (g_ascii_strcasecmp (name, "From") == 0 && scan->from == NULL)
    scan->from = g_strndup (value, FROM_VALUE_MAX);
  else if (g_ascii_strcasecmp (name, "Message-ID") == 0 && scan->message_id == NULL)
    scan->message_id = g_strdup (value);
}

/* Split the header block into fields (a first line and its continuation
 * lines, LF line ends, NULs made blanks) and take the facts from each. */
static void
scan_fields (Scan *scan, const guint8 *data, gsize len)
{
  g_autoptr (GString) field = g_string_new (NULL);
  gsize pos = 0;

  if (len >= 5 && memcmp (data, "From ", 5) == 0)
    {
      const guint8 *nl = memchr (data, '\n', len);
      pos = nl ? (gsize) (nl - data) + 1 : len;
    }
  while (pos < len)
    {
      gsize colon, nlen;

      g_string_truncate (field, 0);
      do
        {
          const guint8 *nl = memchr (data + pos, '\n', len - pos);
          gsize end = nl ? (gsize) (nl - data) : len;
          gsize n = end - pos;
          if (n > 0 && data[pos + n - 1] == '\r')
            n--;
          for (gsize i = 0; i < n; i++)
            g_string_append_c (field, data[pos + i] ? (gchar) data[pos + i] : ' ');
          g_string_append_c (field, '\n');
          pos = nl ? end + 1 : len;
        }
      while (pos < len && (data[pos] == ' ' || data[pos] == '\t'));

      colon = strcspn (field->str, ":\n");
      if (field->str[colon] != ':')
        continue;
      nlen = colon;
      while (nlen > 0 && (field->str[nlen - 1] == ' ' || field->str[nlen - 1] == '\t'))
        nlen--;
      field->str[nlen] = '\0'; /* the name, for now */
      take_field (scan, field->str, field->str + colon + 1, field);
    }
}

DcpMessage *
dcp_message_new_from_bytes (const guint8 *data, gsize len)
{
  DcpMessage *msg = g_new0 (DcpMessage, 1);
  g_autoptr (GPtrArray) autos = g_ptr_array_new ();
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  Scan s = { msg, autos, sum, NULL, NULL };
  gsize end, scan = 0;

  msg->received_s = -1;
  end = find_header_end (data, MIN (len, DCP_MESSAGE_HEADER_MAX), &scan);
  if (end > 0)
    len = end;
  else if (len >= DCP_MESSAGE_HEADER_MAX)
    {
      len = DCP_MESSAGE_HEADER_MAX;
      msg->truncated = TRUE;
    }
  msg->header_length = len;

  scan_fields (&s, data, len);
  g_ptr_array_add (autos, NULL);
  msg->auto_submitted = (gchar **) g_ptr_array_steal (autos, NULL);
  if (s.from != NULL)
    {
      /* what GMime's message parser would find, but for a From cut
       * short by an unterminated comment: no From then (not self) */
      g_autoptr (InternetAddressList) list = internet_address_list_parse (NULL, s.from);
      msg->from = first_mailbox (list, 0);
      g_free (s.from);
    }
  if (s.message_id != NULL)
    {
      g_autofree gchar *mid = g_mime_utils_decode_message_id (s.message_id);
      if (mid != NULL && *mid != '\0')
        {
          msg->message_id = g_steal_pointer (&mid);
          g_checksum_reset (sum);
          g_checksum_update (sum, (const guchar *) "Message-ID:", -1);
          g_checksum_update (sum, (const guchar *) msg->message_id, -1);
        }
      g_free (s.message_id);
    }
  msg->key = g_strdup (g_checksum_get_string (sum));
  return msg;
}
