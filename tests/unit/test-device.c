/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The device registry (lib/dcp-device.c): a device remembered in a 0600
 * file named by its hash, expired after its maximum age only when asked
 * to, forgotten when gone, capped, and files that are no device skipped. */
#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "dcp-device.h"
#include "dcp-token.h"
#include "state-fixture.h"

#define DAY (G_GINT64_CONSTANT (86400) * SEC)
#define SOURCE "/home/alice/dovecot-attributes"

static void
device_seen (Fixture *f, const gchar *token, gint64 now)
{
  g_autoptr (GError) error = NULL;
  gboolean gone = TRUE;

  g_assert_true (dcp_device_seen (f->state, token, SOURCE, now, &gone, &error));
  g_assert_no_error (error);
  g_assert_false (gone);
}

/* The remembered devices (the directory can always be listed here). */
static GPtrArray *
device_list (Fixture *f, gint64 now, gint64 max_age, gboolean expire)
{
  g_autoptr (GError) error = NULL;
  GPtrArray *devices = dcp_device_list (f->state, now, max_age, expire, &error);

  g_assert_no_error (error);
  g_assert_nonnull (devices);
  return devices;
}

static void
test_device_remembered (Fixture *f, gconstpointer data)
{
  g_autofree gchar *hash = dcp_token_hash (TOKEN);
  g_autofree gchar *name = g_strconcat (hash, ".device", NULL);
  g_autofree gchar *path = g_build_filename (dcp_state_get_path (f->state), name, NULL);
  g_autofree gchar *content = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  DcpDevice *d;
  struct stat st;

  (void) data;
  device_seen (f, TOKEN, T0);
  /* the token itself is kept (it must be pushed later), in a 0600 file
   * named by its hash */
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 07777, ==, 0600);
  g_assert_true (g_file_get_contents (path, &content, NULL, NULL));
  g_assert_cmpstr (content, ==, TOKEN "\n" SOURCE "\n");
  devices = device_list (f, T0 + SEC, 90 * DAY, TRUE);
  g_assert_cmpuint (devices->len, ==, 1);
  d = g_ptr_array_index (devices, 0);
  g_assert_cmpstr (d->token, ==, TOKEN);
  g_assert_cmpstr (d->source, ==, SOURCE);
  g_assert_cmpint (d->seen, ==, T0);
}

static void
test_device_expiry (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) kept = NULL;
  g_autoptr (GPtrArray) peeked = NULL;
  g_autoptr (GPtrArray) after = NULL;

  (void) data;
  device_seen (f, "old-token-aaaa", T0);
  device_seen (f, "new-token-bbbb", T0 + 10 * DAY);
  /* 90 days exactly: still kept; one µs more: forgotten, but only when
   * expiring (--status looks without changing) */
  kept = device_list (f, T0 + 90 * DAY, 90 * DAY, TRUE);
  g_assert_cmpuint (kept->len, ==, 2);
  g_assert_cmpstr (((DcpDevice *) g_ptr_array_index (kept, 0))->token, ==, "new-token-bbbb");
  peeked = device_list (f, T0 + 90 * DAY + 1, 90 * DAY, FALSE);
  g_assert_cmpuint (peeked->len, ==, 2);
  g_clear_pointer (&kept, g_ptr_array_unref);
  kept = device_list (f, T0 + 90 * DAY + 1, 90 * DAY, TRUE);
  g_assert_cmpuint (kept->len, ==, 1);
  g_assert_cmpstr (((DcpDevice *) g_ptr_array_index (kept, 0))->token, ==, "new-token-bbbb");
  /* seen again: refreshed */
  device_seen (f, "new-token-bbbb", T0 + 200 * DAY);
  after = device_list (f, T0 + 250 * DAY, 90 * DAY, TRUE);
  g_assert_cmpuint (after->len, ==, 1);
}

static void
test_device_forget_and_gone (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = NULL;
  gboolean gone = FALSE;

  (void) data;
  device_seen (f, TOKEN, T0);
  g_assert_true (dcp_mark_set_gone (f->state, TOKEN, TRUE, T0, NULL));
  g_assert_true (dcp_device_forget (f->state, TOKEN, &error));
  g_assert_no_error (error);
  g_assert_true (dcp_device_forget (f->state, TOKEN, &error)); /* twice is fine */
  /* still in Dovecot's file: not remembered again */
  g_assert_true (dcp_device_seen (f->state, TOKEN, SOURCE, T0 + SEC, &gone, &error));
  g_assert_true (gone);
  devices = device_list (f, T0 + 2 * SEC, 90 * DAY, TRUE);
  g_assert_cmpuint (devices->len, ==, 0);
}

static void
test_device_cap_and_damage (Fixture *f, gconstpointer data)
{
  g_autofree gchar *hash = dcp_token_hash ("planted-token");
  g_autofree gchar *wrong = g_strconcat (dcp_state_get_path (f->state), "/", hash, ".device", NULL);
  g_autofree gchar *garbage = g_build_filename (dcp_state_get_path (f->state), "x.device", NULL);
  g_autoptr (GPtrArray) devices = NULL;

  (void) data;
  for (gint i = 0; i < DCP_DEVICE_MAX + 5; i++)
    {
      g_autofree gchar *token = g_strdup_printf ("device-token-%03d", i);
      device_seen (f, token, T0 + i * SEC);
    }
  /* a file whose name is not its token's hash, and one that holds no
   * token, are not devices */
  g_assert_true (g_file_set_contents (wrong, "another-token\nx\n", -1, NULL));
  g_assert_true (g_file_set_contents (garbage, "a b\n\n", -1, NULL));
  devices = device_list (f, T0 + DAY, 90 * DAY, TRUE);
  g_assert_cmpuint (devices->len, ==, DCP_DEVICE_MAX);
  /* the oldest went */
  g_assert_cmpstr (((DcpDevice *) g_ptr_array_index (devices, devices->len - 1))->token, ==,
                   "device-token-005");
  g_clear_pointer (&devices, g_ptr_array_unref);
  devices = device_list (f, T0 + DAY, 90 * DAY, FALSE);
  g_assert_cmpuint (devices->len, ==, DCP_DEVICE_MAX);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  ADD_FIXTURE ("/device/remembered", test_device_remembered);
  ADD_FIXTURE ("/device/expiry", test_device_expiry);
  ADD_FIXTURE ("/device/forget-and-gone", test_device_forget_and_gone);
  ADD_FIXTURE ("/device/cap-and-damage", test_device_cap_and_damage);
  return g_test_run ();
}
