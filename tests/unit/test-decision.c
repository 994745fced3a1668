/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The decision is a pure function of the facts, the policy and the time, so
 * it is tested here on hand-made facts, exhaustively, plus a few messages
 * parsed end to end. */
#include <string.h>

#include <gmime/gmime.h>

#include "dcp-decision.h"

#define NOW G_GINT64_CONSTANT (1795312800) /* 2026-11-22 04:00:00 UTC, seconds */
#define HOUR G_GINT64_CONSTANT (3600)

typedef struct {
  const gchar *value;
  gboolean automatic;
} AutoCase;

static const AutoCase auto_cases[] = {
  { "no", FALSE },
  { "No", FALSE },
  { "NO", FALSE },
  { "  no  ", FALSE },
  { "no (comment)", FALSE },
  { "no(comment)", FALSE },
  { "(comment) no", FALSE },
  { "(nested (comment)) no", FALSE },
  { "(escaped \\) paren) no", FALSE },
  { "no; x=y", FALSE },
  { "no;x=y", FALSE },
  { "No ; x=\"y\"", FALSE },
  { "auto-replied", TRUE },
  { "Auto-Replied", TRUE },
  { "Auto-Generated (robot)", TRUE },
  { "auto-generated", TRUE },
  { "auto-notified", TRUE },
  { "auto-replied; foo=bar", TRUE },
  { "auto-replied;foo=bar", TRUE },
  { "(c) auto-generated", TRUE },
  { "(no) auto-generated", TRUE },
  { "auto-generated (no)", TRUE },
  { "", FALSE },
  { "   ", FALSE },
  { "(only a comment)", FALSE },
  { "(unclosed comment", FALSE },
  { "; x=y", FALSE },
  { "unknown", TRUE },
  { "yes", TRUE },
  { "x-whatever", TRUE },
  { "nope", TRUE },
  { "no-thanks", TRUE },
  { "none", TRUE },
  { "\"no\"", TRUE },
  /* what unfolding and odd bytes leave behind (tests/hostile/EXPECTED) */
  { "n o", TRUE },
  { "auto- replied", TRUE },
  { "no, auto-replied", TRUE },
  { "no auto-replied", FALSE },
  { "=?us-ascii?q?no?=", TRUE },
  { "n\xf6", TRUE },
  { "auto-replied \xff(\xfe)", TRUE },
  { "(((deep))) no", FALSE },
};

static const DcpPolicy default_policy = { NULL, 0, FALSE };

/* Facts with nothing in them: every policy says notify. */
static DcpMessage
plain_facts (void)
{
  DcpMessage m;

  memset (&m, 0, sizeof m);
  m.received_s = -1;
  return m;
}

static void
test_auto_submitted_table (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (auto_cases); i++)
    {
      const AutoCase *c = &auto_cases[i];
      gchar *values[] = { (gchar *) c->value, NULL };
      DcpMessage m = plain_facts ();

      g_autofree gchar *shown = g_strescape (c->value, NULL); /* TAP wants UTF-8 */
      g_test_message ("Auto-Submitted: \"%s\"", shown);
      g_assert_cmpint (dcp_auto_submitted_is_automatic (c->value), ==, c->automatic);
      m.auto_submitted = values;
      g_assert_cmpint (dcp_decide (&m, &default_policy, NOW), ==,
                       c->automatic ? DCP_VERDICT_SKIP_AUTO : DCP_VERDICT_NOTIFY);
    }
}

/* Every pair of values, in both orders: any automatic one skips. */
static void
test_auto_submitted_several (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (auto_cases); i++)
    for (gsize j = 0; j < G_N_ELEMENTS (auto_cases); j++)
      {
        gchar *values[] = { (gchar *) auto_cases[i].value, (gchar *) auto_cases[j].value, NULL };
        DcpMessage m = plain_facts ();
        gboolean automatic = auto_cases[i].automatic || auto_cases[j].automatic;

        m.auto_submitted = values;
        g_assert_cmpint (dcp_decide (&m, &default_policy, NOW), ==,
                         automatic ? DCP_VERDICT_SKIP_AUTO : DCP_VERDICT_NOTIFY);
      }
}

static void
test_auto_submitted_absent (void)
{
  gchar *none[] = { NULL };
  DcpMessage m = plain_facts ();

  g_assert_cmpint (dcp_decide (&m, &default_policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.auto_submitted = none;
  g_assert_cmpint (dcp_decide (&m, &default_policy, NOW), ==, DCP_VERDICT_NOTIFY);
}

static void
test_self (void)
{
  const gchar *self[] = { "bob@example.net", "Alice@Example.ORG", NULL };
  const gchar *empty[] = { NULL };
  DcpPolicy policy = { self, 0, FALSE };
  DcpPolicy no_self = { NULL, 0, FALSE };
  DcpPolicy empty_self = { empty, 0, FALSE };
  DcpMessage m = plain_facts ();

  m.from = (gchar *) "alice@example.org";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_SELF);
  m.from = (gchar *) "ALICE@EXAMPLE.ORG";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_SELF);
  m.from = (gchar *) "bob@example.net";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_SELF);

  /* near misses */
  m.from = (gchar *) "alice@example.org.evil";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.from = (gchar *) "xalice@example.org";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.from = (gchar *) "alice@example";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.from = (gchar *) "";
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);

  /* no From, no self list, an empty self list */
  m.from = NULL;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.from = (gchar *) "alice@example.org";
  g_assert_cmpint (dcp_decide (&m, &no_self, NOW), ==, DCP_VERDICT_NOTIFY);
  g_assert_cmpint (dcp_decide (&m, &empty_self, NOW), ==, DCP_VERDICT_NOTIFY);
}

static void
test_max_age (void)
{
  DcpPolicy policy = { NULL, HOUR, FALSE };
  DcpMessage m = plain_facts ();

  m.received_s = NOW;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.received_s = NOW - HOUR + 1;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  /* exactly max_age old is still fresh; one second more is old */
  m.received_s = NOW - HOUR;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.received_s = NOW - HOUR - 1;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_OLD);
  m.received_s = 0; /* the Epoch is a date like any other */
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_OLD);

  /* unknown arrival time: fresh */
  m.received_s = -1;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);

  /* a date in the future (skewed server clock): fresh */
  m.received_s = NOW + 1;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.received_s = NOW + 365 * 24 * HOUR;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.received_s = G_MAXINT64;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);

  /* max_age 0 is off, however old */
  policy.max_age_s = 0;
  m.received_s = 0;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.received_s = NOW - 100 * 365 * 24 * HOUR;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);

  /* max_age of one second */
  policy.max_age_s = 1;
  m.received_s = NOW - 1;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  m.received_s = NOW - 2;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_OLD);
}

static void
test_chat_only (void)
{
  DcpPolicy policy = { NULL, 0, TRUE };
  DcpMessage m = plain_facts ();

  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_SKIP_NOT_CHAT);
  m.chat_version = TRUE;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  policy.chat_only = FALSE;
  m.chat_version = FALSE;
  g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
}

/* Each reason applies alone; when several apply, the first in the order
 * auto, self, old, not-chat is reported. */
static void
test_precedence (void)
{
  const gchar *self[] = { "me@example.org", NULL };
  DcpPolicy policy = { self, HOUR, TRUE };

  for (guint mask = 0; mask < 16; mask++)
    {
      gchar *automatic[] = { (gchar *) "auto-generated", NULL };
      gchar *not_automatic[] = { (gchar *) "no", NULL };
      DcpMessage m = plain_facts ();
      DcpVerdict expected;

      m.auto_submitted = (mask & 1) ? automatic : not_automatic;
      m.from = (gchar *) ((mask & 2) ? "me@example.org" : "you@example.org");
      m.received_s = (mask & 4) ? NOW - 2 * HOUR : NOW - 60;
      m.chat_version = !(mask & 8);

      if (mask & 1)
        expected = DCP_VERDICT_SKIP_AUTO;
      else if (mask & 2)
        expected = DCP_VERDICT_SKIP_SELF;
      else if (mask & 4)
        expected = DCP_VERDICT_SKIP_OLD;
      else if (mask & 8)
        expected = DCP_VERDICT_SKIP_NOT_CHAT;
      else
        expected = DCP_VERDICT_NOTIFY;
      g_test_message ("reasons mask %u", mask);
      g_assert_cmpint (dcp_decide (&m, &policy, NOW), ==, expected);
    }
}

static void
test_verdict_to_string (void)
{
  g_assert_cmpstr (dcp_verdict_to_string (DCP_VERDICT_NOTIFY), ==, "notify");
  g_assert_cmpstr (dcp_verdict_to_string (DCP_VERDICT_SKIP_AUTO), ==, "skip auto-submitted");
  g_assert_cmpstr (dcp_verdict_to_string (DCP_VERDICT_SKIP_SELF), ==, "skip self");
  g_assert_cmpstr (dcp_verdict_to_string (DCP_VERDICT_SKIP_OLD), ==, "skip old");
  g_assert_cmpstr (dcp_verdict_to_string (DCP_VERDICT_SKIP_NOT_CHAT), ==, "skip not-chat");
  /* never NULL, whatever it is given */
  g_assert_nonnull (dcp_verdict_to_string ((DcpVerdict) 99));
  g_assert_nonnull (dcp_verdict_to_string ((DcpVerdict) -1));
}

/* The decision on facts parsed from real header blocks. */
static DcpVerdict
decide_text (const gchar *text, const DcpPolicy *policy, gint64 now)
{
  g_autoptr (DcpMessage) m = dcp_message_new_from_bytes ((const guint8 *) text, strlen (text));
  return dcp_decide (m, policy, now);
}

static void
test_end_to_end (void)
{
  const gchar *self[] = { "alice@example.org", NULL };
  DcpPolicy policy = { self, 7 * 24 * HOUR, FALSE };
  DcpPolicy chat = { NULL, 0, TRUE };
  /* the server received it at NOW - 1 h; getmail fetched it at NOW; the
   * Date is randomised 6 days into the past, and must not matter */
  const gchar *fresh = "Received: from b by c with IMAP4 getmail6 for <u@x>; "
                       "Sun, 22 Nov 2026 04:00:00 +0000\n"
                       "Received: from mx by relay; Sun, 22 Nov 2026 03:00:00 +0000\n"
                       "Date: Mon, 16 Nov 2026 03:00:00 +0000\n"
                       "From: <Bob@Example.NET>\n"
                       "Chat-Version: 1.0\n"
                       "\n"
                       "body\n";
  const gchar *old = "Received: from b by c with IMAP4 getmail6 for <u@x>; "
                     "Sun, 22 Nov 2026 04:00:00 +0000\n"
                     "Received: from mx by relay; Sat, 07 Nov 2026 03:00:00 +0000\n"
                     "Date: Sun, 22 Nov 2026 03:59:00 +0000\n"
                     "From: bob@example.net\n"
                     "\n";
  const gchar *receipt = "From: bob@example.net\n"
                         "Auto-Submitted: Auto-Replied (read receipt)\n"
                         "Chat-Version: 1.0\n"
                         "\n";
  const gchar *from_self = "From: Alice <ALICE@example.org>\nChat-Version: 1.0\n\n";

  g_assert_cmpint (decide_text (fresh, &policy, NOW), ==, DCP_VERDICT_NOTIFY);
  g_assert_cmpint (decide_text (fresh, &chat, NOW), ==, DCP_VERDICT_NOTIFY);
  g_assert_cmpint (decide_text (old, &policy, NOW), ==, DCP_VERDICT_SKIP_OLD);
  g_assert_cmpint (decide_text (old, &chat, NOW), ==, DCP_VERDICT_SKIP_NOT_CHAT);
  g_assert_cmpint (decide_text (receipt, &policy, NOW), ==, DCP_VERDICT_SKIP_AUTO);
  g_assert_cmpint (decide_text (from_self, &policy, NOW), ==, DCP_VERDICT_SKIP_SELF);
  /* no facts at all: notify */
  g_assert_cmpint (decide_text ("", &policy, NOW), ==, DCP_VERDICT_NOTIFY);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  g_test_add_func ("/decision/auto-submitted/table", test_auto_submitted_table);
  g_test_add_func ("/decision/auto-submitted/several", test_auto_submitted_several);
  g_test_add_func ("/decision/auto-submitted/absent", test_auto_submitted_absent);
  g_test_add_func ("/decision/self", test_self);
  g_test_add_func ("/decision/max-age", test_max_age);
  g_test_add_func ("/decision/chat-only", test_chat_only);
  g_test_add_func ("/decision/precedence", test_precedence);
  g_test_add_func ("/decision/verdict-to-string", test_verdict_to_string);
  g_test_add_func ("/decision/end-to-end", test_end_to_end);

  return g_test_run ();
}
