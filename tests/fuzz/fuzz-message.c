/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer driver for the message facts and the decision.
 *
 * Whatever arrives on stdin ends up in dcp_message_new_from_bytes(), so
 * that is the surface an attacker (any mail sender) controls.  Beyond
 * "no crash, no leak, no hang" the driver checks the promises the headers
 * make, because a wrong verdict is this program's worst bug:
 *   - parsing is deterministic (same bytes, same facts, same key);
 *   - header_length never exceeds the input or the cap;
 *   - key is a non-empty lower-case hex string, From is lower-case;
 *   - with no policy at all the verdict is NOTIFY unless some
 *     Auto-Submitted value is automatic, and then it is SKIP_AUTO;
 *   - a self list holding the message's own From never yields NOTIFY,
 *     nor does chat_only on a message without Chat-Version;
 *   - the input taken as one From value gives the address GMime's own
 *     message parser finds there, or none (never another one).
 * A broken promise aborts, which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>

#include "dcp-decision.h"
#include "dcp-message.h"
#include "fuzz-check.h"

/* The libFuzzer entry points, declared for -Wmissing-prototypes. */
int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* A fixed clock (2026-11-22 04:00:00 UTC), so runs are reproducible. */
#define FUZZ_NOW G_GINT64_CONSTANT (1795320000)

static void
quiet_log (const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer user_data)
{
  /* GMime and GLib warnings about junk are expected here; criticals are
   * programmer errors and must still crash. */
  (void) domain;
  (void) message;
  (void) user_data;
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    abort ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  g_mime_init ();
  g_log_set_default_handler (quiet_log, NULL);
  return 0;
}

static gboolean
is_verdict (DcpVerdict v)
{
  switch (v)
    {
    case DCP_VERDICT_NOTIFY:
    case DCP_VERDICT_SKIP_AUTO:
    case DCP_VERDICT_SKIP_SELF:
    case DCP_VERDICT_SKIP_OLD:
    case DCP_VERDICT_SKIP_NOT_CHAT:
      return TRUE;
    default:
      return FALSE;
    }
}

static gboolean
is_lower_hex (const gchar *s)
{
  if (s == NULL || *s == '\0')
    return FALSE;
  for (; *s != '\0'; s++)
    if (!g_ascii_isdigit (*s) && !(*s >= 'a' && *s <= 'f'))
      return FALSE;
  return TRUE;
}

static gboolean
has_ascii_upper (const gchar *s)
{
  for (; s != NULL && *s != '\0'; s++)
    if (g_ascii_isupper (*s))
      return TRUE;
  return FALSE;
}

static DcpVerdict
decide (const DcpMessage *msg, const DcpPolicy *policy, gint64 now)
{
  DcpVerdict v = dcp_decide (msg, policy, now);
  const gchar *s = dcp_verdict_to_string (v);

  CHECK (is_verdict (v));
  CHECK (s != NULL && *s != '\0');
  return v;
}

static void
check_same_facts (const DcpMessage *a, const DcpMessage *b)
{
  CHECK (g_strv_equal ((const gchar *const *) a->auto_submitted,
                       (const gchar *const *) b->auto_submitted));
  CHECK (g_strcmp0 (a->from, b->from) == 0);
  CHECK (a->chat_version == b->chat_version);
  CHECK (g_strcmp0 (a->message_id, b->message_id) == 0);
  CHECK (a->received_s == b->received_s);
  CHECK (g_strcmp0 (a->key, b->key) == 0);
  CHECK (a->header_length == b->header_length);
  CHECK (a->truncated == b->truncated);
}

/* The first mailbox of LIST, looking into groups (as deep as libdcp). */
static gchar *
first_addr (InternetAddressList *list, guint depth)
{
  for (int i = 0; list != NULL && depth <= 4 && i < internet_address_list_length (list); i++)
    {
      InternetAddress *ia = internet_address_list_get_address (list, i);
      gchar *a = NULL;

      if (INTERNET_ADDRESS_IS_MAILBOX (ia))
        {
          const gchar *addr = internet_address_mailbox_get_addr (INTERNET_ADDRESS_MAILBOX (ia));
          if (addr != NULL && *addr != '\0')
            a = g_ascii_strdown (addr, -1);
        }
      else if (INTERNET_ADDRESS_IS_GROUP (ia))
        a = first_addr (internet_address_group_get_members (INTERNET_ADDRESS_GROUP (ia)),
                        depth + 1);
      if (a != NULL)
        return a;
    }
  return NULL;
}

/* The first mailbox GMime's message parser finds in From: VALUE. */
static gchar *
gmime_message_from (const gchar *value)
{
  g_autofree gchar *text = g_strdup_printf ("From:%s\n\n", value);
  GMimeStream *stream = g_mime_stream_mem_new_with_buffer (text, strlen (text));
  GMimeParser *parser = g_mime_parser_new_with_stream (stream);
  GMimeMessage *gm = g_mime_parser_construct_message (parser, NULL);
  gchar *from = gm != NULL ? first_addr (g_mime_message_get_from (gm), 0) : NULL;

  g_clear_object (&gm);
  g_object_unref (parser);
  g_object_unref (stream);
  return from;
}

/* libdcp hands the first From value to internet_address_list_parse();
 * compare with GMime's message parser.  GMime's
 * message keeps what it parsed before an unterminated comment, the list
 * parser gives up: there libdcp finds no From (not self: notify). */
static void
check_from_as_gmime (const uint8_t *data, size_t size)
{
  g_autofree gchar *value = NULL;
  g_autofree gchar *expect = NULL;
  g_autofree gchar *field = NULL;
  DcpMessage *msg;

  if (size > 4096)
    return;
  value = g_strndup ((const gchar *) data, size);
  for (gchar *p = value; *p != '\0'; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  if (strlen (value) != size)
    return; /* a NUL: the scan makes it a blank, GMime would stop */
  expect = gmime_message_from (value);
  field = g_strdup_printf ("From:%s\n\n", value);
  msg = dcp_message_new_from_bytes ((const guint8 *) field, strlen (field));
  CHECK (msg->from == NULL || g_strcmp0 (msg->from, expect) == 0);
  if (msg->from == NULL && expect != NULL)
    CHECK (strchr (value, '(') != NULL);
  dcp_message_free (msg);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const gchar *const self_fixed[] = { "alice@example.org", "ALICE@EXAMPLE.NET", NULL };
  const gchar *self_from[] = { NULL, NULL };
  DcpMessage *msg = dcp_message_new_from_bytes (data, size);
  DcpMessage *again = dcp_message_new_from_bytes (data, size);
  gboolean automatic = FALSE;
  DcpVerdict v;

  CHECK (msg != NULL && again != NULL);
  check_same_facts (msg, again);
  dcp_message_free (again);

  CHECK (msg->auto_submitted != NULL);
  CHECK (msg->header_length <= size);
  CHECK (msg->header_length <= DCP_MESSAGE_HEADER_MAX);
  CHECK (!msg->truncated || size >= DCP_MESSAGE_HEADER_MAX);
  CHECK (is_lower_hex (msg->key));
  CHECK (msg->from == NULL || (*msg->from != '\0' && !has_ascii_upper (msg->from)));
  CHECK (msg->received_s >= -1);

  for (gchar **a = msg->auto_submitted; *a != NULL; a++)
    automatic |= dcp_auto_submitted_is_automatic (*a);

  /* No policy: only Auto-Submitted can stop a notification. */
  {
    DcpPolicy none = { .self = NULL, .max_age_s = 0, .chat_only = FALSE };
    v = decide (msg, &none, FUZZ_NOW);
    CHECK (v == (automatic ? DCP_VERDICT_SKIP_AUTO : DCP_VERDICT_NOTIFY));
  }

  /* The defaults of the program: a day, a fixed self list. */
  {
    DcpPolicy daily = { .self = self_fixed, .max_age_s = 86400, .chat_only = FALSE };
    v = decide (msg, &daily, FUZZ_NOW);
    CHECK (v != DCP_VERDICT_SKIP_NOT_CHAT);
    if (automatic)
      CHECK (v == DCP_VERDICT_SKIP_AUTO);
    if (v == DCP_VERDICT_SKIP_OLD)
      CHECK (msg->received_s >= 0 && FUZZ_NOW - msg->received_s > 86400);
    /* A clock far before any parsed date: nothing is old. */
    v = decide (msg, &daily, G_GINT64_CONSTANT (0));
    CHECK (v != DCP_VERDICT_SKIP_OLD || msg->received_s < 0);
  }

  /* Chat only, and the message's own From as the self address. */
  {
    DcpPolicy strict = { .self = NULL, .max_age_s = 3600, .chat_only = TRUE };
    self_from[0] = msg->from;
    strict.self = msg->from != NULL ? self_from : NULL;
    v = decide (msg, &strict, FUZZ_NOW);
    if (msg->from != NULL)
      CHECK (v != DCP_VERDICT_NOTIFY);
    if (!msg->chat_version)
      CHECK (v != DCP_VERDICT_NOTIFY);
  }

  dcp_message_free (msg);
  check_from_as_gmime (data, size);
  return 0;
}
