/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Message facts: what a header block tells us (and what it must not), and
 * how the header block is read from a pipe (drained) or a regular file
 * (left alone).  See FACTS.md section 3 and tests/hostile/EXPECTED for the
 * rules these follow. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <gmime/gmime.h>

#include "dcp-error.h"
#include "dcp-message.h"

/* ---------------------------------------------------------------- helpers */

/* Log an input on one TAP comment line, whatever bytes it holds. */
static void
note (const gchar *text)
{
  g_autofree gchar *escaped = g_strescape (text, NULL);
  g_test_message ("input: %s", escaped);
}

static DcpMessage *
parse_len (const gchar *text, gsize len)
{
  DcpMessage *m = dcp_message_new_from_bytes ((const guint8 *) text, len);

  g_assert_nonnull (m);
  g_assert_nonnull (m->auto_submitted);
  g_assert_nonnull (m->key);
  g_assert_cmpuint (m->header_length, <=, len);
  return m;
}

static DcpMessage *
parse (const gchar *text)
{
  return parse_len (text, strlen (text));
}

static void
assert_strv (gchar **got, const gchar *const *expected)
{
  guint n = g_strv_length ((gchar **) expected);

  g_assert_nonnull (got);
  for (guint i = 0; i < n; i++)
    {
      g_assert_nonnull (got[i]);
      g_assert_cmpstr (got[i], ==, expected[i]);
    }
  g_assert_null (got[n]);
}

static void
assert_autos (const gchar *text, const gchar *const *expected)
{
  g_autoptr (DcpMessage) m = parse (text);

  note (text);
  assert_strv (m->auto_submitted, expected);
}

static void
assert_from (const gchar *text, const gchar *expected)
{
  g_autoptr (DcpMessage) m = parse (text);

  note (text);
  g_assert_cmpstr (m->from, ==, expected);
}

static gint64
utc (int year, int month, int day, int hour, int minute, int second)
{
  g_autoptr (GDateTime) dt = g_date_time_new_utc (year, month, day, hour, minute, second);
  return g_date_time_to_unix (dt);
}

static gint64
received_of (const gchar *text)
{
  g_autoptr (DcpMessage) m = parse (text);

  note (text);
  return m->received_s;
}

static gboolean
is_hex64 (const gchar *s)
{
  if (strlen (s) != 64)
    return FALSE;
  for (; *s != '\0'; s++)
    if (!g_ascii_isxdigit (*s))
      return FALSE;
  return TRUE;
}

static gchar *
key_of_len (const gchar *text, gsize len)
{
  g_autoptr (DcpMessage) m = parse_len (text, len);

  g_assert_true (is_hex64 (m->key));
  return g_strdup (m->key);
}

static gchar *
key_of (const gchar *text)
{
  return key_of_len (text, strlen (text));
}

#define GETMAIL_RECEIVED                                                                           \
  "Received: from x by y with IMAP4 getmail6 for <u@x>; 22 Nov 2026 04:00:00 -0000\n"
#define FETCHMAIL_RECEIVED                                                                         \
  "Received: from mx.example.org [198.51.100.7]\n"                                                 \
  "\tby laptop with IMAP (fetchmail-6.4.37)\n"                                                     \
  "\tfor <u@localhost> (single-drop); Sun, 22 Nov 2026 04:00:00 +0000 (UTC)\n"
#define SERVER_RECEIVED_0300                                                                       \
  "Received: from mail.example.net (mail.example.net [203.0.113.5])\n"                             \
  "\tby mx.example.org (Postfix) with ESMTPS id 4NgZ0Q1bKz9sXy\n"                                  \
  "\tfor <alice@example.org>; Sun, 22 Nov 2026 03:00:00 +0000 (UTC)\n"

/* ---------------------------------------------------------- Auto-Submitted */

static void
test_auto_single (void)
{
  const gchar *replied[] = { "auto-replied", NULL };
  const gchar *comment[] = { "Auto-Generated (robot)", NULL };
  const gchar *params[] = { "auto-replied; foo=bar", NULL };

  assert_autos ("From: a@example.org\nAuto-Submitted: auto-replied\n\nbody\n", replied);
  assert_autos ("Auto-Submitted: Auto-Generated (robot)\n\n", comment);
  assert_autos ("Auto-Submitted:   auto-replied; foo=bar   \n\n", params);
  /* blanks before the colon */
  assert_autos ("Auto-Submitted : auto-replied\n\n", replied);
  /* encoded-words are not decoded: the raw text is the value */
  assert_autos ("Auto-Submitted: =?us-ascii?q?no?=\n\n",
                (const gchar *const[]){ "=?us-ascii?q?no?=", NULL });
  /* 8-bit junk and NULs in an earlier field hide nothing */
  assert_autos ("Subject: \xc3\x28\xa0\xa1 caf\xe9\nAuto-Submitted: auto-replied\n\n", replied);
}

static void
test_auto_duplicated (void)
{
  const gchar *two[] = { "no", "auto-replied", NULL };
  const gchar *two_rev[] = { "auto-replied", "no", NULL };
  const gchar *three[] = { "no", "no", "no", NULL };

  assert_autos ("Auto-Submitted: no\nFrom: a@example.org\nAuto-Submitted: auto-replied\n\n", two);
  assert_autos ("Auto-Submitted: auto-replied\nAuto-Submitted: no\n\n", two_rev);
  assert_autos ("Auto-Submitted: no\nAuto-Submitted: no\nAuto-Submitted: no\n\n", three);
}

static void
test_auto_folded (void)
{
  const gchar *generated[] = { "auto-generated", NULL };
  const gchar *params[] = { "auto-replied;\tfoo=bar", NULL };
  const gchar *split[] = { "auto- replied", NULL };
  const gchar *split_no[] = { "n o", NULL };

  assert_autos ("Auto-Submitted:\n auto-generated\n\n", generated);
  assert_autos ("Auto-Submitted:\r\n\tauto-generated\r\n\r\n", generated);
  assert_autos ("Auto-Submitted: auto-generated\n \n\n", generated);
  assert_autos ("Auto-Submitted: auto-replied;\n\tfoo=bar\n\n", params);
  /* unfolding removes the line break only */
  assert_autos ("Auto-Submitted: auto-\n replied\n\n", split);
  assert_autos ("Auto-Submitted: n\r\n o\r\n\r\n", split_no);
}

static void
test_auto_case (void)
{
  const gchar *values[] = { "Auto-Replied", "NO", "no", NULL };

  /* field names in any case; values kept as written */
  assert_autos ("auto-submitted: Auto-Replied\nAUTO-SUBMITTED: NO\naUtO-sUbMiTtEd: no\n\n", values);
}

static void
test_auto_absent (void)
{
  const gchar *none[] = { NULL };

  assert_autos ("From: a@example.org\nSubject: x\n\nbody\n", none);
  /* in the body, after a blank line */
  assert_autos ("From: a@example.org\n\nAuto-Submitted: auto-replied\n", none);
  assert_autos ("From: a@example.org\r\n\r\nAuto-Submitted: auto-replied\r\n", none);
  /* look-alike names */
  assert_autos ("X-Auto-Submitted: auto-replied\nAuto-Submitted-By: x\n\n", none);
}

static void
test_auto_nul (void)
{
  const gchar junk[] = "From: a@example.org\nAuto-Submitted: auto-replied\0junk\n\n";
  const gchar no[] = "From: a@example.org\nAuto-Submitted: no\0auto-replied\n\n";
  const gchar *junk_v[] = { "auto-replied junk", NULL };
  const gchar *no_v[] = { "no auto-replied", NULL };
  g_autoptr (DcpMessage) a = parse_len (junk, sizeof junk - 1);
  g_autoptr (DcpMessage) b = parse_len (no, sizeof no - 1);
  const gchar junk_first[] = "X-Junk: \0\0\0\nAuto-Submitted: auto-replied\n\nbody\n";
  g_autoptr (DcpMessage) c = parse_len (junk_first, sizeof junk_first - 1);
  const gchar *replied[] = { "auto-replied", NULL };

  /* a NUL byte does not end the value */
  assert_strv (a->auto_submitted, junk_v);
  assert_strv (b->auto_submitted, no_v);
  assert_strv (c->auto_submitted, replied);
}

/* ------------------------------------------------------------------- From */

static void
test_from_plain (void)
{
  assert_from ("From: Alice@Example.ORG\n\n", "alice@example.org");
  assert_from ("from: ALICE@EXAMPLE.ORG\n\n", "alice@example.org");
  assert_from ("From: <Alice@Example.ORG>\n\n", "alice@example.org");
  assert_from ("From: Alice@Example.ORG\r\n\r\n", "alice@example.org");
}

static void
test_from_display_name (void)
{
  assert_from ("From: \"Alice Smith\" <Alice@Example.ORG>\n\n", "alice@example.org");
  assert_from ("From: Alice Smith <alice@example.org>\n\n", "alice@example.org");
  assert_from ("From: alice@example.org (Alice Smith)\n\n", "alice@example.org");
  assert_from ("From: (comment) Alice@Example.ORG\n\n", "alice@example.org");
  assert_from ("From: \xff\xfe Bob <Bob@Example.NET>\n\n", "bob@example.net");
  assert_from ("From: \"Smith, Alice\" <alice@example.org>\n\n", "alice@example.org");
  /* the display name never counts, even when it looks like an address */
  assert_from ("From: \"alice@example.org\" <Mallory@Example.NET>\n\n", "mallory@example.net");
  assert_from ("From: alice@example.org <Mallory@Example.NET>\n\n", "mallory@example.net");
  /* folded */
  assert_from ("From: \"Alice Smith\"\n <Alice@Example.ORG>\n\n", "alice@example.org");
}

static void
test_from_encoded_words (void)
{
  g_autoptr (DcpMessage) addr = NULL;
  g_autoptr (DcpMessage) angle = NULL;

  assert_from ("From: =?utf-8?q?J=C3=B6rg?= <Joerg@Example.DE>\n\n", "joerg@example.de");
  assert_from ("From: =?utf-8?b?SsO2cmc=?= <Joerg@Example.DE>\n\n", "joerg@example.de");
  assert_from ("From: \"=?utf-8?q?alice@example.org?=\" <Mallory@Example.NET>\n\n",
               "mallory@example.net");

  /* an encoded-word never forms the address */
  addr = parse ("From: =?utf-8?q?alice=40example.org?=\n\n");
  g_assert_cmpstr (addr->from, !=, "alice@example.org");
  angle = parse ("From: <=?utf-8?q?alice=40example.org?=>\n\n");
  g_assert_cmpstr (angle->from, !=, "alice@example.org");
}

static void
test_from_group (void)
{
  assert_from ("From: team: Alice@Example.ORG, bob@example.net;\n\n", "alice@example.org");
  assert_from ("From: undisclosed-recipients:;\n\n", NULL);
  assert_from ("From: empty:;, Carol@Example.ORG\n\n", "carol@example.org");
  assert_from ("From: \"The Team\": \"Alice\" <Alice@Example.ORG>;\n\n", "alice@example.org");
}

static void
test_from_multiple (void)
{
  assert_from ("From: Alice@Example.ORG, bob@example.net\n\n", "alice@example.org");
  /* several From fields: the first one counts */
  assert_from ("From: Alice@Example.ORG\nFrom: bob@example.net\n\n", "alice@example.org");
}

static void
test_from_none (void)
{
  assert_from ("To: alice@example.org\nSubject: x\n\n", NULL);
  assert_from ("From:\n\n", NULL);
  assert_from ("From:   \n\n", NULL);
  /* only in the body */
  assert_from ("Subject: x\n\nFrom: alice@example.org\n", NULL);
  /* an unterminated comment spoils the whole list: no From, so never
   * "self" (GMime's message parser would keep the address before it) */
  assert_from ("From: <alice@example.org> (Alice\n\n", NULL);
  assert_from ("From: alice@example.org (Alice\n\n", NULL);
}

/* ------------------------------------------------------ Chat-Version, IDs */

static void
test_chat_version (void)
{
  g_autoptr (DcpMessage) yes = parse ("From: a@example.org\nChat-Version: 1.0\n\n");
  g_autoptr (DcpMessage) lower = parse ("chat-version: 1.0\n\n");
  g_autoptr (DcpMessage) empty = parse ("Chat-Version:\nFrom: a@example.org\n\n");
  g_autoptr (DcpMessage) no = parse ("From: a@example.org\n\nChat-Version: 1.0\n");
  g_autoptr (DcpMessage) alike = parse ("X-Chat-Version: 1.0\nChat-Versions: 1\n\n");

  g_assert_true (yes->chat_version);
  g_assert_true (lower->chat_version);
  g_assert_true (empty->chat_version);
  g_assert_false (no->chat_version);
  g_assert_false (alike->chat_version);
}

static void
test_message_id (void)
{
  g_autoptr (DcpMessage) plain = parse ("Message-ID: <Abc.123@Example.ORG>\n\n");
  g_autoptr (DcpMessage) spelled = parse ("message-id:\n <Mr.Xyz@example.org>\n\n");
  g_autoptr (DcpMessage) none = parse ("From: a@example.org\n\n");
  g_autoptr (DcpMessage) body = parse ("From: a@example.org\n\nMessage-ID: <x@y>\n");
  g_autoptr (DcpMessage) broken = parse ("Message-ID: <>\n\n");

  g_assert_cmpstr (plain->message_id, ==, "Abc.123@Example.ORG");
  g_assert_cmpstr (spelled->message_id, ==, "Mr.Xyz@example.org");
  g_assert_null (none->message_id);
  g_assert_null (body->message_id);
  /* whatever a broken one yields, it is never an empty string */
  g_assert_true (broken->message_id == NULL || *broken->message_id != '\0');
}

/* -------------------------------------------------------------- Received */

static void
test_received_newest (void)
{
  const gchar *text = "Received: from a by b; Sun, 22 Nov 2026 02:00:00 +0000\n"
                      "Received: from c by d; Sun, 22 Nov 2026 03:30:00 +0000\n"
                      "Received: from e by f; Sun, 22 Nov 2026 01:00:00 +0000\n"
                      "\n";

  g_assert_cmpint (received_of (text), ==, utc (2026, 11, 22, 3, 30, 0));
  g_assert_cmpint (received_of (SERVER_RECEIVED_0300 "\n"), ==, utc (2026, 11, 22, 3, 0, 0));
  g_assert_cmpint (received_of ("From: a@example.org\n\n"), ==, -1);
}

static void
test_received_timezone (void)
{
  g_assert_cmpint (received_of ("Received: from a by b; Sun, 22 Nov 2026 06:00:00 +0200\n\n"), ==,
                   utc (2026, 11, 22, 4, 0, 0));
  g_assert_cmpint (received_of ("Received: from a by b; Sat, 21 Nov 2026 23:00:00 -0500\n\n"), ==,
                   utc (2026, 11, 22, 4, 0, 0));
  /* no day-of-week, and a comment after the date */
  g_assert_cmpint (received_of ("Received: from a by b; 22 Nov 2026 04:00:00 -0000 (UTC)\n\n"), ==,
                   utc (2026, 11, 22, 4, 0, 0));
}

static void
test_received_getmail_ignored (void)
{
  g_assert_cmpint (received_of (GETMAIL_RECEIVED SERVER_RECEIVED_0300 "\n"), ==,
                   utc (2026, 11, 22, 3, 0, 0));
  g_assert_cmpint (received_of (SERVER_RECEIVED_0300 GETMAIL_RECEIVED "\n"), ==,
                   utc (2026, 11, 22, 3, 0, 0));
  g_assert_cmpint (
      received_of ("Received: from mx by laptop with POP3S (getmail 5.16)\n"
                   "\tfor <u@x>; Sun, 22 Nov 2026 04:00:00 +0000\n" SERVER_RECEIVED_0300 "\n"),
      ==, utc (2026, 11, 22, 3, 0, 0));
  /* only a getmail line: arrival unknown */
  g_assert_cmpint (received_of (GETMAIL_RECEIVED "\n"), ==, -1);
}

static void
test_received_fetchmail_ignored (void)
{
  g_assert_cmpint (received_of (FETCHMAIL_RECEIVED SERVER_RECEIVED_0300 "\n"), ==,
                   utc (2026, 11, 22, 3, 0, 0));
  g_assert_cmpint (received_of (FETCHMAIL_RECEIVED "\n"), ==, -1);
  g_assert_cmpint (received_of ("Received: from mx.example.org [198.51.100.7]\r\n"
                                "\tby laptop with POP3 (fetchmail-6.4.37)\r\n"
                                "\tfor <u@localhost> (single-drop); "
                                "Sun, 22 Nov 2026 04:00:00 +0000 (UTC)\r\n\r\n"),
                   ==, -1);
}

/* A server that happens to be called "getmail" is still a server. */
static void
test_received_fetcher_name_in_host (void)
{
  const gchar *text = "Received: from getmail.example.net (getmail.example.net [198.51.100.9])\n"
                      "\tby mx.example.org (Postfix) with ESMTPS id 4NgZ0Q1bKz9sXy\n"
                      "\tfor <alice@example.org>; Mon, 1 Jan 1990 00:00:00 +0000 (UTC)\n"
                      "\n";
  const gchar *text2 = "Received: from mail.example.net by fetchmail.example.org (Postfix)\n"
                       "\twith ESMTPS; Mon, 1 Jan 1990 00:00:00 +0000\n"
                       "\n";

  g_assert_cmpint (received_of (text), ==, utc (1990, 1, 1, 0, 0, 0));
  g_assert_cmpint (received_of (text2), ==, utc (1990, 1, 1, 0, 0, 0));
}

static void
test_received_date_never_used (void)
{
  g_assert_cmpint (received_of ("Date: Sun, 22 Nov 2026 04:00:00 +0000\nFrom: a@example.org\n\n"),
                   ==, -1);
  /* a Date newer (or older) than the Received date changes nothing */
  g_assert_cmpint (
      received_of ("Date: Sun, 22 Nov 2026 05:00:00 +0000\n" SERVER_RECEIVED_0300 "\n"), ==,
      utc (2026, 11, 22, 3, 0, 0));
  g_assert_cmpint (
      received_of ("Date: Mon, 16 Nov 2026 03:00:00 +0000\n" SERVER_RECEIVED_0300 "\n"), ==,
      utc (2026, 11, 22, 3, 0, 0));
  /* Resent-Date / X-Received are not Received */
  g_assert_cmpint (received_of ("Resent-Date: Sun, 22 Nov 2026 04:00:00 +0000\n"
                                "X-Received: by 1.2.3.4; Sun, 22 Nov 2026 04:00:00 +0000\n\n"),
                   ==, -1);
}

static void
test_received_unparsable (void)
{
  g_assert_cmpint (received_of ("Received: from a by b; not a date at all\n\n"), ==, -1);
  g_assert_cmpint (received_of ("Received: from a by b Sun, 22 Nov 2026 04:00:00 +0000\n\n"), ==,
                   -1);
  g_assert_cmpint (received_of ("Received: ;\n\n"), ==, -1);
  g_assert_cmpint (received_of ("Received:\n\n"), ==, -1);
  /* garbage next to a good one: the good one counts */
  g_assert_cmpint (
      received_of ("Received: from a by b; 99 Foo 12345 99:99:99 +9999\n" SERVER_RECEIVED_0300
                   "Received: from c; \xff\xfe\n\n"),
      ==, utc (2026, 11, 22, 3, 0, 0));
  /* before 1970: unknown, so fresh */
  g_assert_cmpint (received_of ("Received: from a by b; Fri, 1 Jan 1960 00:00:00 +0000\n\n"), ==,
                   -1);
}

/* --------------------------------------------------------- odd envelopes */

static void
test_mbox_from_line (void)
{
  const gchar *autos[] = { "auto-replied", NULL };
  const gchar *lf = "From bob@example.net Sun Nov 22 04:00:00 2026\n"
                    "From: Bob@Example.NET\n"
                    "Auto-Submitted: auto-replied\n"
                    "\n"
                    "body\n";
  const gchar *crlf = "From bob@example.net Sun Nov 22 04:00:00 2026\r\n"
                      "From: Bob@Example.NET\r\n"
                      "Auto-Submitted: auto-replied\r\n"
                      "\r\n"
                      "body\r\n";
  g_autoptr (DcpMessage) a = parse (lf);
  g_autoptr (DcpMessage) b = parse (crlf);
  g_autoptr (DcpMessage) only = parse ("From bob@example.net Sun Nov 22 04:00:00 2026\n");
  g_autofree gchar *with = key_of (lf);
  g_autofree gchar *without
      = key_of (lf + strlen ("From bob@example.net Sun Nov 22 04:00:00 2026\n"));

  g_assert_cmpstr (a->from, ==, "bob@example.net");
  assert_strv (a->auto_submitted, autos);
  g_assert_cmpstr (b->from, ==, "bob@example.net");
  assert_strv (b->auto_submitted, autos);
  g_assert_null (only->from);
  /* the From_ line is envelope, not message: the key ignores it */
  g_assert_cmpstr (with, ==, without);
}

static void
test_crlf (void)
{
  const gchar *lf = SERVER_RECEIVED_0300 "From: \"Bob\" <Bob@Example.NET>\n"
                                         "Auto-Submitted: auto-replied;\n foo=bar\n"
                                         "Chat-Version: 1.0\n"
                                         "Subject: hi\n"
                                         "\n"
                                         "body\n";
  g_autoptr (GString) crlf = g_string_new (NULL);
  g_autoptr (DcpMessage) a = NULL;
  g_autoptr (DcpMessage) b = NULL;
  g_autofree gchar *ka = NULL;
  g_autofree gchar *kb = NULL;
  const gchar *autos[] = { "auto-replied; foo=bar", NULL };

  for (const gchar *p = lf; *p != '\0'; p++)
    {
      if (*p == '\n')
        g_string_append_c (crlf, '\r');
      g_string_append_c (crlf, *p);
    }
  a = parse (lf);
  b = parse (crlf->str);

  g_assert_cmpstr (b->from, ==, "bob@example.net");
  assert_strv (b->auto_submitted, autos);
  g_assert_true (b->chat_version);
  g_assert_cmpint (b->received_s, ==, utc (2026, 11, 22, 3, 0, 0));
  g_assert_cmpstr (a->from, ==, b->from);
  assert_strv (a->auto_submitted, autos);
  g_assert_cmpint (a->received_s, ==, b->received_s);
  /* the header block ends after the CRLF CRLF */
  g_assert_cmpuint (a->header_length, ==, strstr (lf, "\n\n") + 2 - lf);
  g_assert_cmpuint (b->header_length, ==, strstr (crlf->str, "\r\n\r\n") + 4 - crlf->str);
  /* line ends are transport, not message */
  ka = key_of (lf);
  kb = key_of (crlf->str);
  g_assert_cmpstr (ka, ==, kb);
}

static void
test_nul_bytes (void)
{
  const gchar text[] = "Subject: a\0b\nFrom: Bob@Example.NET\nChat-Version: 1.0\n"
                       "Message-ID: <m@x>\n\n\0body";
  const gchar lead[] = "\0\0\0From: Bob@Example.NET\n\n";
  g_autoptr (DcpMessage) m = parse_len (text, sizeof text - 1);
  g_autoptr (DcpMessage) n = parse_len (lead, sizeof lead - 1);

  g_assert_cmpstr (m->from, ==, "bob@example.net");
  g_assert_true (m->chat_version);
  g_assert_cmpstr (m->message_id, ==, "m@x");
  g_assert_cmpuint (m->header_length, ==, strstr (text + 13, "\n\n") + 2 - text);
  /* whatever leading NULs do, they do not crash or invent facts */
  g_assert_cmpint (n->received_s, ==, -1);
  g_assert_false (n->chat_version);
}

static void
test_no_blank_line (void)
{
  const gchar *autos[] = { "auto-replied", NULL };
  const gchar *text = "From: Bob@Example.NET\nAuto-Submitted: auto-replied";
  const gchar *text_nl = "From: Bob@Example.NET\nAuto-Submitted: auto-replied\n";
  g_autoptr (DcpMessage) m = parse (text);
  g_autoptr (DcpMessage) n = parse (text_nl);

  g_assert_cmpstr (m->from, ==, "bob@example.net");
  assert_strv (m->auto_submitted, autos);
  g_assert_cmpuint (m->header_length, ==, strlen (text));
  g_assert_false (m->truncated);
  assert_strv (n->auto_submitted, autos);
  g_assert_cmpuint (n->header_length, ==, strlen (text_nl));
  g_assert_false (n->truncated);
}

/* The header block ends at the first line that is not a header field. */
static void
test_non_header_line_ends_block (void)
{
  const gchar *none[] = { NULL };

  const gchar *text
      = "From: Bob@Example.NET\nthis line has no colon\nAuto-Submitted: auto-replied\n\n";
  g_autoptr (DcpMessage) m = parse (text);

  assert_strv (m->auto_submitted, none);
  g_assert_cmpstr (m->from, ==, "bob@example.net");
  g_assert_cmpuint (m->header_length, ==, strlen ("From: Bob@Example.NET\n"));
  g_assert_false (m->truncated);
  /* a continuation line is part of the field, not the end of the block */
  assert_autos ("From: Bob@Example.NET\nSubject: a\n  b\nAuto-Submitted: auto-replied\n\n",
                (const gchar *const[]){ "auto-replied", NULL });
}

static void
test_empty (void)
{
  const gchar *none[] = { NULL };
  g_autoptr (DcpMessage) m = parse_len ("", 0);
  g_autoptr (DcpMessage) lf = parse ("\n");
  g_autoptr (DcpMessage) crlf = parse ("\r\nAuto-Submitted: auto-replied\r\n");

  assert_strv (m->auto_submitted, none);
  g_assert_null (m->from);
  g_assert_false (m->chat_version);
  g_assert_null (m->message_id);
  g_assert_cmpint (m->received_s, ==, -1);
  g_assert_true (is_hex64 (m->key));
  g_assert_cmpuint (m->header_length, ==, 0);
  g_assert_false (m->truncated);

  /* a message that starts with its blank line has an empty header block */
  g_assert_cmpuint (lf->header_length, ==, 1);
  g_assert_cmpuint (crlf->header_length, ==, 2);
  assert_strv (crlf->auto_submitted, none);
}

static void
test_junk (void)
{
  static const gchar *const samples[] = {
    ":",
    ":::\n:\n",
    "\n\n\n",
    "\r",
    "\r\r\r\n",
    "From",
    "From ",
    "From:",
    "From: <",
    "From: <<<>>>@@@,,,;;;:::\n\n",
    "Received: ;;;;\n\n",
    "Auto-Submitted\n\n",
    "Content-Type: multipart/mixed; boundary=\n\n--\n",
    "=?utf-8?q?=00?=: =?x?b?====?=\n\n",
    "\xff\xfe\xfd\xfc: \xfb\n\n",
    " leading space: x\n\n",
    "\tFrom: a@b\n\n",
  };
  g_autoptr (GRand) rand = g_rand_new_with_seed (20261122);

  for (gsize i = 0; i < G_N_ELEMENTS (samples); i++)
    {
      g_autoptr (DcpMessage) m = parse (samples[i]);
      g_assert_true (is_hex64 (m->key));
    }

  /* random bytes, and random header-ish text */
  for (guint round = 0; round < 200; round++)
    {
      static const gchar alphabet[] = "ab:; \t\r\n\n\n<>@()\"=?\\From-Auto-Submitted\xff";
      gsize len = g_rand_int_range (rand, 0, 4096);
      g_autofree gchar *buf = g_malloc (len + 1);
      g_autoptr (DcpMessage) m = NULL;

      for (gsize j = 0; j < len; j++)
        buf[j] = (round % 2) ? (gchar) g_rand_int_range (rand, 0, 256)
                             : alphabet[g_rand_int_range (rand, 0, sizeof alphabet - 1)];
      m = parse_len (buf, len);
      g_assert_true (is_hex64 (m->key));
      if (m->from != NULL)
        {
          g_autofree gchar *lower = g_ascii_strdown (m->from, -1);
          g_assert_cmpstr (m->from, ==, lower);
        }
    }
}

/* ------------------------------------------------------------------ key */

#define BASE_NO_ID                                                                                 \
  "From: Bob <bob@example.net>\n"                                                                  \
  "To: alice@example.org\n"                                                                        \
  "Subject: hello\n"                                                                               \
  "Date: Mon, 16 Nov 2026 03:00:00 +0000\n"                                                        \
  "Chat-Version: 1.0\n"                                                                            \
  "\n"                                                                                             \
  "body\n"

static void
test_key_stable_without_message_id (void)
{
  static const gchar *const prefixes[] = {
    "",
    GETMAIL_RECEIVED,
    "Return-Path: <bob@example.net>\nDelivered-To: alice@example.org\n" GETMAIL_RECEIVED,
    "Return-Path: <>\nDelivered-To: other@example.org\n"
    "Received: from x by y with POP3 getmail6 for <v@z>; 23 Nov 2026 05:00:00 -0000\n",
    "Delivered-To: alice@example.org\nX-Original-To: alice@example.org\n"
    "Envelope-To: alice@example.org\n" FETCHMAIL_RECEIVED,
    "From bob@example.net Sun Nov 22 04:00:00 2026\nReturn-Path: "
    "<bob@example.net>\n" GETMAIL_RECEIVED,
  };
  g_autofree gchar *base = key_of (BASE_NO_ID);
  g_autofree gchar *other = key_of ("From: Bob <bob@example.net>\n"
                                    "To: alice@example.org\n"
                                    "Subject: hello again\n"
                                    "Date: Mon, 16 Nov 2026 03:00:00 +0000\n"
                                    "Chat-Version: 1.0\n"
                                    "\n"
                                    "body\n");

  for (gsize i = 0; i < G_N_ELEMENTS (prefixes); i++)
    {
      g_autofree gchar *text = g_strconcat (prefixes[i], BASE_NO_ID, NULL);
      g_autofree gchar *key = key_of (text);
      g_test_message ("prefix %" G_GSIZE_FORMAT, i);
      g_assert_cmpstr (key, ==, base);
    }
  g_assert_cmpstr (other, !=, base);
}

static void
test_key_message_id (void)
{
  const gchar *m1 = "Message-ID: <m1@example.net>\n" BASE_NO_ID;
  g_autofree gchar *k1 = key_of (m1);
  g_autofree gchar *k1_prefixed = NULL;
  g_autofree gchar *k1_other_headers = key_of ("From: somebody@else.example\n"
                                               "Subject: different\n"
                                               "Message-ID:   <m1@example.net>\n"
                                               "\n"
                                               "different body\n");
  g_autofree gchar *k2 = key_of ("Message-ID: <m2@example.net>\n" BASE_NO_ID);
  g_autofree gchar *k_none = key_of (BASE_NO_ID);
  g_autofree gchar *text = g_strconcat ("Return-Path: <bob@example.net>\n"
                                        "Delivered-To: alice@example.org\n" GETMAIL_RECEIVED,
                                        m1, NULL);

  k1_prefixed = key_of (text);
  g_assert_cmpstr (k1, ==, k1_prefixed);
  g_assert_cmpstr (k1, ==, k1_other_headers);
  g_assert_cmpstr (k1, !=, k2);
  g_assert_cmpstr (k1, !=, k_none);
}

/* The key depends on the header block only: the whole message and its
 * header block alone give the same key (dcp_message_read_header returns
 * only the header block). */
static void
test_key_header_only (void)
{
  const gchar *full = BASE_NO_ID "more body\n";
  const gchar *junk = "garbage without any colon at all\n\nbody\n";
  g_autofree gchar *kf = key_of (full);
  g_autofree gchar *kh = key_of_len (full, strstr (full, "\n\n") + 2 - full);
  g_autofree gchar *jf = key_of (junk);
  g_autofree gchar *jh = key_of_len (junk, strstr (junk, "\n\n") + 2 - junk);

  g_assert_cmpstr (kf, ==, kh);
  g_assert_cmpstr (jf, ==, jh);
}

/* ------------------------------------------------------------ truncation */

/* Padding header fields up to exactly `target` bytes. */
static void
pad_to (GString *s, gsize target)
{
  while (s->len < target)
    {
      gsize left = target - s->len;
      gsize line = (left >= 100 + 9 || left == 100) ? 100 : left;

      g_assert_cmpuint (line, >=, 9);
      g_string_append (s, "X-Pad: ");
      for (gsize i = 0; i < line - 8; i++)
        g_string_append_c (s, 'a');
      g_string_append_c (s, '\n');
    }
  g_assert_cmpuint (s->len, ==, target);
}

static void
test_truncation_beyond_max (void)
{
  const gchar *none[] = { NULL };
  g_autoptr (GString) s = g_string_new ("From: Bob@Example.NET\n");
  g_autoptr (DcpMessage) m = NULL;

  pad_to (s, DCP_MESSAGE_HEADER_MAX + 10);
  g_string_append (s, "Auto-Submitted: auto-replied\n\nbody\n");
  m = parse_len (s->str, s->len);

  g_assert_true (m->truncated);
  g_assert_cmpuint (m->header_length, ==, DCP_MESSAGE_HEADER_MAX);
  g_assert_cmpstr (m->from, ==, "bob@example.net");
  /* a header that starts beyond the limit is not seen */
  assert_strv (m->auto_submitted, none);
}

static void
test_truncation_field_before_max (void)
{
  const gchar *autos[] = { "auto-replied", NULL };
  const gchar *field = "Auto-Submitted: auto-replied\n";
  g_autoptr (GString) s = g_string_new ("From: Bob@Example.NET\n");
  g_autoptr (DcpMessage) m = NULL;

  /* the field ends exactly at the limit */
  pad_to (s, DCP_MESSAGE_HEADER_MAX - strlen (field));
  g_string_append (s, field);
  g_assert_cmpuint (s->len, ==, DCP_MESSAGE_HEADER_MAX);
  pad_to (s, DCP_MESSAGE_HEADER_MAX + 5000);
  g_string_append (s, "\nbody\n");
  m = parse_len (s->str, s->len);

  g_assert_true (m->truncated);
  g_assert_cmpuint (m->header_length, ==, DCP_MESSAGE_HEADER_MAX);
  assert_strv (m->auto_submitted, autos);
}

static void
test_truncation_sizes (void)
{
  g_autoptr (GString) s = g_string_new ("From: Bob@Example.NET\n");
  g_autoptr (DcpMessage) below = NULL;
  g_autoptr (DcpMessage) exact = NULL;
  g_autoptr (DcpMessage) exact_blank = NULL;

  /* no blank line, one byte under the limit: all of it, not truncated */
  pad_to (s, DCP_MESSAGE_HEADER_MAX - 1);
  below = parse_len (s->str, s->len);
  g_assert_false (below->truncated);
  g_assert_cmpuint (below->header_length, ==, DCP_MESSAGE_HEADER_MAX - 1);

  /* exactly the limit and no blank line: we cannot know, so truncated */
  g_string_truncate (s, 0);
  g_string_append (s, "From: Bob@Example.NET\n");
  pad_to (s, DCP_MESSAGE_HEADER_MAX);
  exact = parse_len (s->str, s->len);
  g_assert_true (exact->truncated);
  g_assert_cmpuint (exact->header_length, ==, DCP_MESSAGE_HEADER_MAX);

  /* exactly the limit including the blank line: complete */
  g_string_truncate (s, 0);
  g_string_append (s, "From: Bob@Example.NET\n");
  pad_to (s, DCP_MESSAGE_HEADER_MAX - 1);
  g_string_append_c (s, '\n');
  exact_blank = parse_len (s->str, s->len);
  g_assert_false (exact_blank->truncated);
  g_assert_cmpuint (exact_blank->header_length, ==, DCP_MESSAGE_HEADER_MAX);
  g_assert_cmpstr (exact_blank->from, ==, "bob@example.net");
}

/* A small header block followed by a big body is not a truncated header
 * block, whoever passes the whole message in. */
static void
test_truncation_big_body (void)
{
  const gchar *head = "From: Bob@Example.NET\nAuto-Submitted: auto-replied\n\n";
  const gchar *autos[] = { "auto-replied", NULL };
  g_autoptr (GString) s = g_string_new (head);
  g_autoptr (DcpMessage) m = NULL;

  while (s->len < 2 * DCP_MESSAGE_HEADER_MAX)
    g_string_append (s, "body body body body body body body body body body body body body\n");
  m = parse_len (s->str, s->len);

  assert_strv (m->auto_submitted, autos);
  g_assert_cmpuint (m->header_length, ==, strlen (head));
  g_assert_false (m->truncated);
}

/* ------------------------------------------------ dcp_message_read_header */

typedef struct {
  int fd;
  const guint8 *data;
  gsize len;
  gsize chunk;
  gsize written;
  int error; /* errno of the write that failed, or 0 */
} Writer;

static gpointer
writer_thread (gpointer user)
{
  Writer *w = user;

  while (w->written < w->len)
    {
      gssize n = write (w->fd, w->data + w->written, MIN (w->chunk, w->len - w->written));
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          w->error = errno;
          break;
        }
      w->written += n;
    }
  close (w->fd);
  return NULL;
}

/* Feed `data` through a pipe `chunk` bytes per write() and read the header
 * block from the other end.  Returns the bytes; *total gets total_read. */
static GBytes *
read_through_pipe (const guint8 *data, gsize len, gsize chunk, gboolean nonblock, gsize *total,
                   Writer *w)
{
  int fds[2];
  GThread *thread;
  GBytes *bytes;
  g_autoptr (GError) error = NULL;

  g_assert_cmpint (pipe (fds), ==, 0);
  if (nonblock)
    g_assert_cmpint (fcntl (fds[0], F_SETFL, O_NONBLOCK), ==, 0);
  *w = (Writer){ .fd = fds[1], .data = data, .len = len, .chunk = chunk };
  thread = g_thread_new ("writer", writer_thread, w);

  *total = 0;
  bytes = dcp_message_read_header (fds[0], total, &error);
  g_assert_no_error (error);
  g_assert_nonnull (bytes);
  /* had it not drained the pipe, the writer now gets EPIPE instead of
   * blocking forever */
  close (fds[0]);
  g_thread_join (thread);
  return bytes;
}

static GString *
message_with_body (const gchar *head, gsize body_len)
{
  GString *s = g_string_new (head);

  while (s->len < strlen (head) + body_len)
    g_string_append (s, "The quick brown fox jumps over the lazy dog, again and again.\n");
  return s;
}

static void
assert_bytes_eq (GBytes *bytes, const gchar *expected, gsize len)
{
  gsize n;
  const guint8 *data = g_bytes_get_data (bytes, &n);

  g_assert_cmpuint (n, ==, len);
  if (len > 0)
    g_assert_cmpmem (data, n, expected, len);
}

static void
test_read_pipe_drained (void)
{
  const gchar *head = "From: Bob@Example.NET\nAuto-Submitted: auto-replied\n\n";
  g_autoptr (GString) s = message_with_body (head, 8 * 1024 * 1024);
  g_autoptr (GBytes) bytes = NULL;
  Writer w;
  gsize total;

  bytes = read_through_pipe ((const guint8 *) s->str, s->len, 65536, FALSE, &total, &w);
  g_assert_cmpint (w.error, ==, 0);
  g_assert_cmpuint (w.written, ==, s->len);
  g_assert_cmpuint (total, ==, s->len);
  assert_bytes_eq (bytes, head, strlen (head));
}

static void
test_read_pipe_nonblocking (void)
{
  const gchar *head = "From: Bob@Example.NET\r\nSubject: x\r\n\r\n";
  g_autoptr (GString) s = message_with_body (head, 300 * 1000);
  g_autoptr (GBytes) bytes = NULL;
  Writer w;
  gsize total;

  bytes = read_through_pipe ((const guint8 *) s->str, s->len, 777, TRUE, &total, &w);
  g_assert_cmpint (w.error, ==, 0);
  g_assert_cmpuint (w.written, ==, s->len);
  g_assert_cmpuint (total, ==, s->len);
  assert_bytes_eq (bytes, head, strlen (head));
}

static void
test_read_pipe_byte_by_byte (void)
{
  const gchar *text = "From: Bob@Example.NET\r\nAuto-Submitted: no\r\n\r\nbody\r\nmore\r\n";
  const gchar *end = strstr (text, "\r\n\r\n") + 4;
  g_autoptr (GBytes) bytes = NULL;
  Writer w;
  gsize total;

  bytes = read_through_pipe ((const guint8 *) text, strlen (text), 1, FALSE, &total, &w);
  g_assert_cmpint (w.error, ==, 0);
  g_assert_cmpuint (total, ==, strlen (text));
  assert_bytes_eq (bytes, text, end - text);
}

static void
test_read_pipe_no_blank_line (void)
{
  const gchar *text = "From: Bob@Example.NET\nAuto-Submitted: no";
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GBytes) empty = NULL;
  Writer w;
  gsize total;

  bytes = read_through_pipe ((const guint8 *) text, strlen (text), 5, FALSE, &total, &w);
  g_assert_cmpuint (total, ==, strlen (text));
  assert_bytes_eq (bytes, text, strlen (text));

  empty = read_through_pipe ((const guint8 *) "", 0, 1, FALSE, &total, &w);
  g_assert_cmpuint (total, ==, 0);
  assert_bytes_eq (empty, "", 0);
}

static void
test_read_pipe_huge_header (void)
{
  g_autoptr (GString) s = g_string_new ("From: Bob@Example.NET\n");
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (DcpMessage) m = NULL;
  Writer w;
  gsize total;

  pad_to (s, 3 * DCP_MESSAGE_HEADER_MAX);
  g_string_append (s, "Auto-Submitted: auto-replied\n\nbody\n");
  bytes = read_through_pipe ((const guint8 *) s->str, s->len, 65536, FALSE, &total, &w);
  g_assert_cmpint (w.error, ==, 0);
  g_assert_cmpuint (w.written, ==, s->len);
  g_assert_cmpuint (total, ==, s->len);
  assert_bytes_eq (bytes, s->str, DCP_MESSAGE_HEADER_MAX);

  m = parse_len (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
  g_assert_true (m->truncated);
  g_assert_cmpstr (m->from, ==, "bob@example.net");
}

/* A line that is not a field ends the header block: what follows is body,
 * and a pipe is still drained. */
static void
test_read_pipe_non_field_line (void)
{
  const gchar *head = "From: Bob@Example.NET\nSubject: x\n";
  g_autofree gchar *start = g_strconcat (head, "This is body text without a blank line\n", NULL);
  g_autoptr (GString) s = message_with_body (start, 1024 * 1024);
  g_autoptr (GBytes) bytes = NULL;
  Writer w;
  gsize total;

  bytes = read_through_pipe ((const guint8 *) s->str, s->len, 4096, FALSE, &total, &w);
  g_assert_cmpint (w.error, ==, 0);
  g_assert_cmpuint (w.written, ==, s->len);
  g_assert_cmpuint (total, ==, s->len);
  assert_bytes_eq (bytes, head, strlen (head));
}

static int
temp_file_with (const gchar *data, gsize len)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *path = NULL;
  int fd = g_file_open_tmp ("dcp-message-XXXXXX", &path, &error);

  g_assert_no_error (error);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (g_unlink (path), ==, 0);
  g_assert_cmpint (write (fd, data, len), ==, (gssize) len);
  g_assert_cmpint (lseek (fd, 0, SEEK_SET), ==, 0);
  return fd;
}

static void
test_read_file_not_drained (void)
{
  const gchar *head = "From: Bob@Example.NET\nAuto-Submitted: auto-replied\n\n";
  g_autoptr (GString) s = message_with_body (head, 4 * 1024 * 1024);
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GError) error = NULL;
  int fd = temp_file_with (s->str, s->len);
  gsize total = 0;
  off_t offset;

  bytes = dcp_message_read_header (fd, &total, &error);
  g_assert_no_error (error);
  assert_bytes_eq (bytes, head, strlen (head));
  offset = lseek (fd, 0, SEEK_CUR);
  g_assert_cmpint (offset, >=, (off_t) strlen (head));
  g_assert_cmpint (offset, <, 256 * 1024);
  g_assert_cmpint (offset, <, (off_t) s->len / 16);
  g_assert_cmpuint (total, ==, (gsize) offset);
  close (fd);
}

static void
test_read_file_huge_header (void)
{
  g_autoptr (GString) s = g_string_new ("From: Bob@Example.NET\n");
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GError) error = NULL;
  int fd;
  gsize total = 0;

  pad_to (s, 2 * DCP_MESSAGE_HEADER_MAX);
  g_string_append (s, "\nbody\n");
  fd = temp_file_with (s->str, s->len);
  bytes = dcp_message_read_header (fd, &total, &error);
  g_assert_no_error (error);
  assert_bytes_eq (bytes, s->str, DCP_MESSAGE_HEADER_MAX);
  g_assert_cmpint (lseek (fd, 0, SEEK_CUR), ==, DCP_MESSAGE_HEADER_MAX);
  g_assert_cmpuint (total, ==, DCP_MESSAGE_HEADER_MAX);
  close (fd);
}

/* The blank line straddling any read boundary is still found, in LF,
 * CRLF and mixed form. */
static void
test_read_file_boundaries (void)
{
  static const gchar *const blanks[] = { "\n\n", "\r\n\r\n", "\n\r\n", "\r\n\n" };
  static const gsize bases[] = { 4096, 8192, 16384, 32768, 65536 };

  for (gsize b = 0; b < G_N_ELEMENTS (bases); b++)
    for (gsize k = 0; k < G_N_ELEMENTS (blanks); k++)
      for (gsize at = bases[b] - 4; at <= bases[b] + 4; at++)
        {
          g_autoptr (GString) s = g_string_new ("From: Bob@Example.NET");
          g_autoptr (GBytes) bytes = NULL;
          g_autoptr (GError) error = NULL;
          gsize end, total;
          int fd;

          /* the blank line's first byte at offset `at` */
          g_string_append (s, "\nX-Pad: ");
          while (s->len < at)
            g_string_append_c (s, 'p');
          g_string_append (s, blanks[k]);
          end = s->len;
          g_string_append (s, "body\n\nmore body\n");
          fd = temp_file_with (s->str, s->len);
          bytes = dcp_message_read_header (fd, &total, &error);
          g_assert_no_error (error);
          assert_bytes_eq (bytes, s->str, end);
          close (fd);
        }
}

static void
test_read_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) error2 = NULL;
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GBytes) bytes2 = NULL;
  int dir = open ("/", O_RDONLY | O_DIRECTORY);

  g_assert_cmpint (dir, >=, 0);
  bytes = dcp_message_read_header (dir, NULL, &error);
  g_assert_null (bytes);
  g_assert_error (error, G_FILE_ERROR, G_FILE_ERROR_ISDIR);
  g_assert_nonnull (strstr (error->message, g_strerror (EISDIR)));
  close (dir);

  bytes2 = dcp_message_read_header (-1, NULL, &error2);
  g_assert_null (bytes2);
  g_assert_nonnull (error2);
}

/* What read_header returns gives the same facts as the whole message. */
static void
test_read_then_parse (void)
{
  const gchar *text = "From x Sun Nov 22 04:00:00 2026\r\n" SERVER_RECEIVED_0300
                      "From: Bob <Bob@Example.NET>\r\nAuto-Submitted: auto-replied\r\n"
                      "Chat-Version: 1.0\r\n\r\nbody\r\n";
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (DcpMessage) whole = parse (text);
  g_autoptr (DcpMessage) read = NULL;
  int fd = temp_file_with (text, strlen (text));

  bytes = dcp_message_read_header (fd, NULL, &error);
  g_assert_no_error (error);
  close (fd);
  read = parse_len (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
  g_assert_cmpstr (read->from, ==, "bob@example.net");
  g_assert_cmpstr (read->from, ==, whole->from);
  assert_strv (read->auto_submitted, (const gchar *const *) whole->auto_submitted);
  g_assert_cmpint (read->received_s, ==, whole->received_s);
  g_assert_cmpint (read->chat_version, ==, whole->chat_version);
  g_assert_cmpstr (read->key, ==, whole->key);
  g_assert_cmpuint (read->header_length, ==, whole->header_length);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();
  /* a pipe test that failed to drain must see EPIPE, not die of SIGPIPE */
  signal (SIGPIPE, SIG_IGN);

  g_test_add_func ("/message/auto-submitted/single", test_auto_single);
  g_test_add_func ("/message/auto-submitted/duplicated", test_auto_duplicated);
  g_test_add_func ("/message/auto-submitted/folded", test_auto_folded);
  g_test_add_func ("/message/auto-submitted/case", test_auto_case);
  g_test_add_func ("/message/auto-submitted/absent", test_auto_absent);
  g_test_add_func ("/message/auto-submitted/nul", test_auto_nul);
  g_test_add_func ("/message/from/plain", test_from_plain);
  g_test_add_func ("/message/from/display-name", test_from_display_name);
  g_test_add_func ("/message/from/encoded-words", test_from_encoded_words);
  g_test_add_func ("/message/from/group", test_from_group);
  g_test_add_func ("/message/from/multiple", test_from_multiple);
  g_test_add_func ("/message/from/none", test_from_none);
  g_test_add_func ("/message/chat-version", test_chat_version);
  g_test_add_func ("/message/message-id", test_message_id);
  g_test_add_func ("/message/received/newest", test_received_newest);
  g_test_add_func ("/message/received/timezone", test_received_timezone);
  g_test_add_func ("/message/received/getmail-ignored", test_received_getmail_ignored);
  g_test_add_func ("/message/received/fetchmail-ignored", test_received_fetchmail_ignored);
  g_test_add_func ("/message/received/fetcher-name-in-host", test_received_fetcher_name_in_host);
  g_test_add_func ("/message/received/date-never-used", test_received_date_never_used);
  g_test_add_func ("/message/received/unparsable", test_received_unparsable);
  g_test_add_func ("/message/mbox-from-line", test_mbox_from_line);
  g_test_add_func ("/message/crlf", test_crlf);
  g_test_add_func ("/message/nul-bytes", test_nul_bytes);
  g_test_add_func ("/message/no-blank-line", test_no_blank_line);
  g_test_add_func ("/message/non-header-line", test_non_header_line_ends_block);
  g_test_add_func ("/message/empty", test_empty);
  g_test_add_func ("/message/junk", test_junk);
  g_test_add_func ("/message/key/stable-without-message-id", test_key_stable_without_message_id);
  g_test_add_func ("/message/key/message-id", test_key_message_id);
  g_test_add_func ("/message/key/header-only", test_key_header_only);
  g_test_add_func ("/message/truncation/beyond-max", test_truncation_beyond_max);
  g_test_add_func ("/message/truncation/field-before-max", test_truncation_field_before_max);
  g_test_add_func ("/message/truncation/sizes", test_truncation_sizes);
  g_test_add_func ("/message/truncation/big-body", test_truncation_big_body);
  g_test_add_func ("/message/read-header/pipe-drained", test_read_pipe_drained);
  g_test_add_func ("/message/read-header/pipe-nonblocking", test_read_pipe_nonblocking);
  g_test_add_func ("/message/read-header/pipe-byte-by-byte", test_read_pipe_byte_by_byte);
  g_test_add_func ("/message/read-header/pipe-no-blank-line", test_read_pipe_no_blank_line);
  g_test_add_func ("/message/read-header/pipe-huge-header", test_read_pipe_huge_header);
  g_test_add_func ("/message/read-header/pipe-non-field-line", test_read_pipe_non_field_line);
  g_test_add_func ("/message/read-header/file-not-drained", test_read_file_not_drained);
  g_test_add_func ("/message/read-header/file-huge-header", test_read_file_huge_header);
  g_test_add_func ("/message/read-header/file-boundaries", test_read_file_boundaries);
  g_test_add_func ("/message/read-header/errors", test_read_errors);
  g_test_add_func ("/message/read-header/then-parse", test_read_then_parse);

  return g_test_run ();
}
