/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Who retries (lib/dcp-retry.c), exhaustively where the inputs are few:
 * the retry mode and the caller-mode cap; and a message's retry record on
 * disk, round-tripped, replaced and deleted. */
#include <string.h>

#include <glib.h>

#include "dcp-error.h"
#include "dcp-retry.h"
#include "dcp-token.h"
#include "state-fixture.h"

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

/* ---------------------------------------------------------- records */

static void
test_retry_round_trip (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *key = dcp_token_hash ("Message-ID:m1@example.net");
  g_autofree gchar *key2 = dcp_token_hash ("Message-ID:m2@example.net");
  g_autofree gchar *h1 = dcp_token_hash ("token one");
  g_autofree gchar *h2 = dcp_token_hash ("token two");
  DcpRetry r = { 0 }, loaded = { 0 }, other = { 0 }, cleared = { 0 };

  (void) data;
  /* nothing saved: zero failures, no first, an empty list */
  g_assert_true (dcp_retry_load (f->state, key, &loaded, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (loaded.failures, ==, 0);
  g_assert_cmpint (loaded.first_s, ==, -1);
  g_assert_nonnull (loaded.done);
  g_assert_cmpuint (loaded.done->len, ==, 0);
  dcp_retry_clear (&loaded);
  g_assert_null (loaded.done);

  r.failures = 3;
  r.first_s = T0 / SEC;
  r.done = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (r.done, g_strdup (h1));
  g_ptr_array_add (r.done, g_strdup (h2));
  g_assert_true (dcp_retry_save (f->state, key, &r, &error));
  g_assert_no_error (error);

  g_assert_true (dcp_retry_load (f->state, key, &loaded, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (loaded.failures, ==, 3);
  g_assert_cmpint (loaded.first_s, ==, T0 / SEC);
  g_assert_cmpuint (loaded.done->len, ==, 2);
  g_assert_cmpstr (g_ptr_array_index (loaded.done, 0), ==, h1);
  g_assert_cmpstr (g_ptr_array_index (loaded.done, 1), ==, h2);

  /* records are per message */
  g_assert_true (dcp_retry_load (f->state, key2, &other, &error));
  g_assert_cmpuint (other.failures, ==, 0);
  g_assert_cmpuint (other.done->len, ==, 0);

  /* saving again replaces */
  r.failures = 4;
  g_ptr_array_set_size (r.done, 0);
  g_assert_true (dcp_retry_save (f->state, key, &r, &error));
  dcp_retry_clear (&loaded);
  g_assert_true (dcp_retry_load (f->state, key, &loaded, &error));
  g_assert_cmpuint (loaded.failures, ==, 4);
  g_assert_cmpint (loaded.first_s, ==, T0 / SEC);
  g_assert_cmpuint (loaded.done->len, ==, 0);

  /* no temp file is left behind */
  {
    g_autoptr (GPtrArray) names = list_dir (dcp_state_get_path (f->state));
    g_assert_cmpuint (names->len, ==, 1);
  }

  g_assert_true (dcp_retry_delete (f->state, key, &error));
  g_assert_no_error (error);
  g_assert_true (dcp_retry_load (f->state, key, &cleared, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (cleared.failures, ==, 0);
  g_assert_cmpint (cleared.first_s, ==, -1);
  g_assert_cmpuint (cleared.done->len, ==, 0);
  /* deleting twice is harmless */
  g_assert_true (dcp_retry_delete (f->state, key, &error));
  g_assert_no_error (error);

  dcp_retry_clear (&r);
  dcp_retry_clear (&loaded);
  dcp_retry_clear (&other);
  dcp_retry_clear (&cleared);
}

/* An account with many devices: every done hash comes back whole. */
static void
test_retry_many_tokens (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *key = dcp_token_hash ("Message-ID:many@example.net");
  DcpRetry r = { 0 }, loaded = { 0 };
  const guint n = 200;

  (void) data;
  r.failures = 1;
  r.first_s = T0 / SEC;
  r.done = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < n; i++)
    {
      g_autofree gchar *token = g_strdup_printf ("token-%u", i);
      g_ptr_array_add (r.done, dcp_token_hash (token));
    }
  g_assert_true (dcp_retry_save (f->state, key, &r, &error));
  g_assert_no_error (error);
  g_assert_true (dcp_retry_load (f->state, key, &loaded, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (loaded.failures, ==, 1);
  for (guint i = 0; i < loaded.done->len; i++)
    g_assert_cmpuint (strlen (g_ptr_array_index (loaded.done, i)), ==, 64);
  g_assert_cmpuint (loaded.done->len, ==, n);
  dcp_retry_clear (&r);
  dcp_retry_clear (&loaded);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  g_test_add_func ("/retry/mode", test_retry_mode);
  g_test_add_func ("/retry/cap", test_cap);
  ADD_FIXTURE ("/retry/record/round-trip", test_retry_round_trip);
  ADD_FIXTURE ("/retry/record/many-tokens", test_retry_many_tokens);
  return g_test_run ();
}
