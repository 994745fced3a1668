/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Who retries (lib/dcp-retry.c), exhaustively where the inputs are few:
 * the retry mode and the caller-mode cap.  The records on disk are
 * test-state's. */
#include <glib.h>

#include "dcp-error.h"
#include "dcp-retry.h"

static void
test_retry_mode (void)
{
  g_autoptr (GError) error = NULL;
  DcpRetryMode mode = DCP_RETRY_CALLER;

  g_assert_true (dcp_retry_mode_parse ("background", &mode, &error));
  g_assert_cmpint (mode, ==, DCP_RETRY_BACKGROUND);
  g_assert_true (dcp_retry_mode_parse ("caller", &mode, &error));
  g_assert_cmpint (mode, ==, DCP_RETRY_CALLER);
  g_assert_false (dcp_retry_mode_parse ("Caller", &mode, &error));
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
}

static void
test_cap (void)
{
  gint64 first_s = 1000;

  for (guint failures = 1; failures < DCP_RETRY_CAP_RUNS; failures++)
    g_assert_false (dcp_retry_cap_reached (failures, first_s, first_s + 60));
  g_assert_true (dcp_retry_cap_reached (DCP_RETRY_CAP_RUNS, first_s, first_s + 60));
  g_assert_false (dcp_retry_cap_reached (2, first_s, first_s + DCP_RETRY_CAP_SECONDS - 1));
  g_assert_true (dcp_retry_cap_reached (2, first_s, first_s + DCP_RETRY_CAP_SECONDS));
  g_assert_false (dcp_retry_cap_reached (1, -1, first_s));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/retry/mode", test_retry_mode);
  g_test_add_func ("/retry/cap", test_cap);
  return g_test_run ();
}
