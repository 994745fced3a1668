/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The state directory tests share (see state-fixture.h). */
#include "state-fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-token.h"

const DcpSchedule *
relays (void)
{
  static DcpSchedule schedule;
  dcp_schedule_init (&schedule);
  return &schedule;
}

static int
rm_one (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void) st;
  (void) flag;
  (void) ftw;
  return remove (path);
}

void
rm_rf (const gchar *path)
{
  (void) nftw (path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  (void) data;
  f->tmp = g_dir_make_tmp ("dcp-state-XXXXXX", &error);
  g_assert_no_error (error);
  f->root = g_build_filename (f->tmp, "cache", NULL);
  f->state = dcp_state_open (f->root, &error);
  g_assert_no_error (error);
  g_assert_nonnull (f->state);
}

void
fixture_teardown (Fixture *f, gconstpointer data)
{
  (void) data;
  g_clear_pointer (&f->state, dcp_state_free);
  rm_rf (f->tmp);
  g_free (f->root);
  g_free (f->tmp);
}

DcpActions
step (Fixture *f, const gchar *token, guint burst, DcpEvent e, int *own)
{
  g_autoptr (GError) error = NULL;
  DcpMachineConfig c = CONFIG (burst);
  DcpMarkHold h;
  DcpActions a;

  g_assert_true (dcp_mark_hold (f->state, token, &h, &error));
  g_assert_no_error (error);
  if (h.m.owned && !h.owner_live)
    {
      DcpEvent dead = { DCP_EVENT_DEAD, e.now, FALSE, -1, DCP_HTTP_OK, FALSE };
      dcp_machine_step (&c, &h.m, &dead, &a);
    }
  dcp_machine_step (&c, &h.m, &e, &a);
  if (a.detach_at >= 0)
    {
      int fd = dcp_mark_own (f->state, token, &h, &error);
      g_assert_no_error (error);
      g_assert_cmpint (fd, >=, 0);
      if (own != NULL)
        *own = fd;
      else
        close (fd);
    }
  else
    g_assert_true (dcp_mark_store (f->state, token, &h, &error));
  g_assert_no_error (error);
  dcp_mark_release (&h);
  return a;
}

DcpActions
read_at (Fixture *f, const gchar *token, gint64 now, int *own)
{
  DcpEvent e = { DCP_EVENT_READ, now, FALSE, -1, DCP_HTTP_OK, FALSE };
  return step (f, token, 3, e, own);
}

DcpActions
answer (Fixture *f, const gchar *token, gint64 started, gint64 now, DcpHttpOutcome out)
{
  DcpEvent e = { DCP_EVENT_ANSWER, now, FALSE, started, out, FALSE };
  return step (f, token, 3, e, NULL);
}

DcpMarkHold
peek_state (Fixture *f, const gchar *token)
{
  DcpMarkHold h;
  dcp_mark_peek (f->state, token, &h);
  return h;
}

gchar *
state_file (Fixture *f, const gchar *token, const gchar *suffix)
{
  g_autofree gchar *hash = dcp_token_hash (token);
  g_autofree gchar *name = g_strconcat (hash, suffix, NULL);

  return g_build_filename (dcp_state_get_path (f->state), name, NULL);
}

gboolean
exists_nofollow (const gchar *path)
{
  struct stat st;
  return lstat (path, &st) == 0;
}

static gint
cmp_str (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const gchar *const *) a, *(const gchar *const *) b);
}

GPtrArray *
list_dir (const gchar *path)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDir) dir = g_dir_open (path, 0, &error);
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  const gchar *name;

  g_assert_no_error (error);
  while ((name = g_dir_read_name (dir)) != NULL)
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, cmp_str);
  return names;
}

gint64
mtime_us (const gchar *path)
{
  struct stat st;

  g_assert_cmpint (lstat (path, &st), ==, 0);
  return (gint64) st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
}
