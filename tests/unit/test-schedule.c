/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* An owed push's schedule (lib/dcp-schedule.c): the relays' steps, when it
 * is given up, and what --retry-schedule accepts. */
#include <glib.h>

#include "dcp-error.h"
#include "dcp-schedule.h"

#define SEC G_GINT64_CONSTANT (1000000)
#define T0 G_GINT64_CONSTANT (1795320000123456)

static void
test_schedule_relays (void)
{
  static const gint64 steps[] = { 8, 64, 512, 4096 };
  DcpSchedule s;

  dcp_schedule_init (&s);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 0), ==, T0);
  for (guint tries = 1; tries <= G_N_ELEMENTS (steps); tries++)
    g_assert_cmpint (dcp_schedule_next (&s, T0, tries), ==, T0 + steps[tries - 1] * SEC);
  /* then every 4096 s, the last try at 5 hours */
  g_assert_cmpint (dcp_schedule_next (&s, T0, 5), ==, T0 + 8192 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 6), ==, T0 + 12288 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 7), ==, T0 + 16384 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 8), ==, T0 + 5 * 3600 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 9), ==, -1);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 100), ==, -1);
  g_assert_false (dcp_schedule_expired (&s, T0, T0 + 5 * 3600 * SEC - 1));
  g_assert_true (dcp_schedule_expired (&s, T0, T0 + 5 * 3600 * SEC));
  g_assert_true (dcp_schedule_expired (&s, -1, T0));
}

static void
test_schedule_parse (void)
{
  static const gchar *const bad[]
      = { "",      "0",   "1,1",    "2,1",   "1,,2",
          "x",     "-1",  "1.5",    "18001", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
          "1,2+1", "1+x", "1+18001" };
  g_autoptr (GError) error = NULL;
  DcpSchedule s;

  g_assert_true (dcp_schedule_parse ("1,2,4", &s, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (s.n, ==, 3);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 3), ==, T0 + 4 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 4), ==, -1);
  g_assert_cmpint (s.give_up_s, ==, 4);
  /* "+END": the last step again until END */
  g_assert_true (dcp_schedule_parse ("1,2,4+14", &s, &error));
  g_assert_cmpint (dcp_schedule_next (&s, T0, 4), ==, T0 + 8 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 5), ==, T0 + 12 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 6), ==, T0 + 14 * SEC);
  g_assert_cmpint (dcp_schedule_next (&s, T0, 7), ==, -1);
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_assert_false (dcp_schedule_parse (bad[i], &s, &error));
      g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
      g_clear_error (&error);
      /* a refused schedule leaves the relays' one */
      g_assert_cmpuint (s.n, ==, 4);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/schedule/relays", test_schedule_relays);
  g_test_add_func ("/schedule/parse", test_schedule_parse);
  return g_test_run ();
}
