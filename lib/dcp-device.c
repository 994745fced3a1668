/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The device registry (see dcp-device.h): "<hash>.device" holds the token,
 * then its source; its mtime is when it was last seen.  A file is
 * replaced whole, so a reader never sees half of one. */
#include "dcp-device.h"

#include <string.h>
#include <unistd.h>

#include "dcp-file.h"
#include "dcp-mark.h"
#include "dcp-state-private.h"
#include "dcp-token.h"

#define DEVICE_SUFFIX ".device"

void
dcp_device_free (DcpDevice *device)
{
  if (device == NULL)
    return;
  g_free (device->token);
  g_free (device->source);
  g_free (device);
}

gboolean
dcp_device_seen (DcpState *state, const gchar *token, const gchar *source, gint64 now,
                 gboolean *gone, GError **error)
{
  g_autofree gchar *name = dcp_state_token_file (token, DEVICE_SUFFIX);
  g_autofree gchar *content = g_strdup_printf ("%s\n%s\n", token, source);
  gboolean ok = TRUE;
  int lock = dcp_state_lock_token (state, token, error);

  if (lock < 0)
    return FALSE;
  /* a token the proxy called gone stays forgotten while Dovecot still
   * holds it (the device has not uploaded a new one yet) */
  *gone = dcp_mark_gone_since (state, token) >= 0;
  if (!*gone)
    ok = dcp_state_replace (state, name, content, now, error);
  dcp_state_unlock_token (lock);
  return ok;
}

gboolean
dcp_device_forget (DcpState *state, const gchar *token, GError **error)
{
  g_autofree gchar *name = dcp_state_token_file (token, DEVICE_SUFFIX);
  return dcp_state_remove (state, name, error);
}

/* One device file, or NULL when it is not one of ours (or damaged). */
static DcpDevice *
read_device (DcpState *state, const gchar *name)
{
  g_autofree gchar *buf = dcp_file_read (state->dirfd, name, DCP_FILE_NOFOLLOW, NULL, NULL, NULL);
  g_autofree gchar *expected = NULL;
  g_auto (GStrv) lines = NULL;
  DcpDevice *device;

  if (buf == NULL || *buf == '\0')
    return NULL;
  lines = g_strsplit (buf, "\n", 3);
  if (lines[0] == NULL || lines[1] == NULL
      || !dcp_token_validate (lines[0], strlen (lines[0]), NULL))
    return NULL;
  expected = dcp_state_token_file (lines[0], DEVICE_SUFFIX);
  if (strcmp (expected, name) != 0)
    return NULL;
  device = g_new0 (DcpDevice, 1);
  device->token = g_strdup (lines[0]);
  device->source = g_strdup (lines[1]);
  device->seen = dcp_state_mtime (state, name);
  return device;
}

static gint
device_newer_first (gconstpointer a, gconstpointer b)
{
  const DcpDevice *x = *(DcpDevice *const *) a, *y = *(DcpDevice *const *) b;
  return x->seen > y->seen ? -1 : x->seen < y->seen ? 1 : strcmp (x->token, y->token);
}

/* The remembered devices, last seen first, or NULL with error set when
 * the directory cannot be listed.  With expire, those not seen for
 * max_age and those beyond DCP_DEVICE_MAX are forgotten (as best we can:
 * one that cannot be removed is tried again on the next run). */
GPtrArray *
dcp_device_list (DcpState *state, gint64 now, gint64 max_age, gboolean expire, GError **error)
{
  g_autoptr (GPtrArray) names = dcp_state_list (state, DEVICE_SUFFIX, error);
  g_autoptr (GPtrArray) devices = NULL;

  if (names == NULL)
    return NULL;
  devices = g_ptr_array_new_with_free_func ((GDestroyNotify) dcp_device_free);
  for (guint i = 0; i < names->len; i++)
    {
      const gchar *name = g_ptr_array_index (names, i);
      DcpDevice *d = read_device (state, name);

      if (d == NULL)
        continue;
      if (expire && now - d->seen > max_age)
        {
          (void) unlinkat (state->dirfd, name, 0);
          dcp_device_free (d);
          continue;
        }
      g_ptr_array_add (devices, d);
    }
  g_ptr_array_sort (devices, device_newer_first);
  while (expire && devices->len > DCP_DEVICE_MAX)
    {
      DcpDevice *d = g_ptr_array_index (devices, devices->len - 1);
      g_autofree gchar *name = dcp_state_token_file (d->token, DEVICE_SUFFIX);
      (void) unlinkat (state->dirfd, name, 0);
      g_ptr_array_remove_index (devices, devices->len - 1);
    }
  return g_steal_pointer (&devices);
}
