/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The state directory (lib/dcp-state.c): made 0700 with 0600 files, never
 * opened through a symlink, files named by hashes only, symlinks planted
 * in it never followed by any of its files' writers and readers, and a
 * token's lock waited for. */
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "dcp-error.h"
#include "dcp-retry.h"
#include "dcp-token.h"
#include "state-fixture.h"

static void
test_open_permissions (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *tmp = g_dir_make_tmp ("dcp-state-XXXXXX", &error);
  g_autofree gchar *root = g_build_filename (tmp, "a", "b", "cache", NULL);
  g_autofree gchar *expected = g_build_filename (root, "deltachat-push", NULL);
  g_autoptr (DcpState) state = NULL;
  g_autoptr (DcpState) again = NULL;
  g_autoptr (GPtrArray) names = NULL;
  mode_t old = umask (0);
  struct stat st;
  DcpRetry retry = { 0 };
  Fixture f = { 0 };
  int own = -1;
  g_autofree gchar *key = dcp_token_hash ("a message");

  g_assert_no_error (error);
  state = dcp_state_open (root, &error);
  g_assert_no_error (error);
  g_assert_nonnull (state);
  g_assert_cmpstr (dcp_state_get_path (state), ==, expected);
  g_assert_cmpint (stat (expected, &st), ==, 0);
  g_assert_true (S_ISDIR (st.st_mode));
  g_assert_cmpint (st.st_mode & 07777, ==, 0700);

  /* make every kind of file, with a umask that would let anything through */
  f.state = state;
  g_assert_true (read_at (&f, TOKEN, T0, NULL).push);
  g_assert_true (dcp_mark_record (state, TOKEN, T0, "200 ok", &error));
  g_assert_cmpint (read_at (&f, TOKEN, T0 + SEC / 2, &own).why, ==, DCP_WHY_TRAILING);
  g_assert_true (read_at (&f, "other", T0, NULL).push);
  g_assert_true (dcp_mark_set_gone (state, "gone", TRUE, T0, &error));
  retry.failures = 1;
  retry.first_s = T0 / SEC;
  g_assert_true (dcp_retry_save (state, key, &retry, &error));
  g_assert_no_error (error);

  names = list_dir (expected);
  g_assert_cmpuint (names->len, >=, 7);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree gchar *p = g_build_filename (expected, g_ptr_array_index (names, i), NULL);
      g_test_message ("%s", p);
      g_assert_cmpint (lstat (p, &st), ==, 0);
      g_assert_true (S_ISREG (st.st_mode));
      g_assert_cmpint (st.st_mode & 07777, ==, 0600);
    }
  close (own);

  /* a directory left group/world accessible is tightened on open */
  g_assert_cmpint (chmod (expected, 0755), ==, 0);
  again = dcp_state_open (root, &error);
  g_assert_no_error (error);
  g_assert_cmpint (stat (expected, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 07777, ==, 0700);

  umask (old);
  rm_rf (tmp);
}

static gboolean
is_state_name (const gchar *name)
{
  static const gchar *const suffixes[] = { ".last", ".lock", ".due", ".full", ".gone", ".result" };
  gsize n = strlen (name);

  if (g_str_has_prefix (name, "retry-"))
    {
      name += strlen ("retry-");
      n -= strlen ("retry-");
      if (n != 64)
        return FALSE;
    }
  else
    {
      gboolean ok = FALSE;
      for (gsize i = 0; i < G_N_ELEMENTS (suffixes); i++)
        if (n == 64 + strlen (suffixes[i]) && g_str_has_suffix (name, suffixes[i]))
          ok = TRUE;
      if (!ok)
        return FALSE;
    }
  for (gsize i = 0; i < 64; i++)
    if (!g_ascii_isdigit (name[i]) && !(name[i] >= 'a' && name[i] <= 'f'))
      return FALSE;
  return TRUE;
}

static void
test_file_names (Fixture *f, gconstpointer data)
{
  static const gchar *const tokens[] = {
    "..", "../../../escape", "a/b/c", "/absolute/path", TOKEN, "tok\\en", "....//....",
  };
  g_autoptr (GPtrArray) names = NULL;
  g_autoptr (GPtrArray) top = NULL;
  g_autoptr (GPtrArray) cache = NULL;
  g_autofree gchar *hash = dcp_token_hash (TOKEN);
  gboolean seen_hash = FALSE;

  (void) data;
  for (gsize i = 0; i < G_N_ELEMENTS (tokens); i++)
    {
      g_autoptr (GError) error = NULL;
      DcpRetry retry = { 0 };
      g_autofree gchar *key = dcp_token_hash (tokens[i]);

      g_assert_true (read_at (f, tokens[i], T0, NULL).push);
      g_assert_true (dcp_mark_record (f->state, tokens[i], T0, "200 ok", &error));
      g_assert_cmpint (read_at (f, tokens[i], T0 + SEC / 2, NULL).why, ==, DCP_WHY_TRAILING);
      g_assert_true (dcp_mark_set_gone (f->state, tokens[i], TRUE, T0, &error));
      retry.done = g_ptr_array_new_with_free_func (g_free);
      g_ptr_array_add (retry.done, g_strdup (key));
      g_assert_true (dcp_retry_save (f->state, key, &retry, &error));
      g_assert_no_error (error);
      dcp_retry_clear (&retry);
    }

  names = list_dir (dcp_state_get_path (f->state));
  g_assert_cmpuint (names->len, >, 0);
  for (guint i = 0; i < names->len; i++)
    {
      const gchar *name = g_ptr_array_index (names, i);
      g_test_message ("%s", name);
      g_assert_true (is_state_name (name));
      for (gsize t = 0; t < G_N_ELEMENTS (tokens); t++)
        if (strlen (tokens[t]) > 2)
          g_assert_null (strstr (name, tokens[t]));
      g_assert_null (strstr (name, "TOKEN"));
      if (g_str_has_prefix (name, hash))
        seen_hash = TRUE;
    }
  g_assert_true (seen_hash);

  /* nothing escaped the state directory */
  top = list_dir (f->tmp);
  g_assert_cmpuint (top->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (top, 0), ==, "cache");
  cache = list_dir (f->root);
  g_assert_cmpuint (cache->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (cache, 0), ==, "deltachat-push");
}

static void
test_open_symlinked_dir (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) error2 = NULL;
  g_autoptr (GError) error3 = NULL;
  g_autofree gchar *tmp = g_dir_make_tmp ("dcp-state-XXXXXX", &error);
  g_autofree gchar *elsewhere = g_build_filename (tmp, "elsewhere", NULL);
  g_autofree gchar *root = g_build_filename (tmp, "cache", NULL);
  g_autofree gchar *link = g_build_filename (root, "deltachat-push", NULL);
  g_autofree gchar *root2 = g_build_filename (tmp, "cache2", NULL);
  g_autofree gchar *dangling = g_build_filename (root2, "deltachat-push", NULL);
  g_autofree gchar *root3 = g_build_filename (tmp, "cache3", NULL);
  g_autofree gchar *file = g_build_filename (root3, "deltachat-push", NULL);
  g_autofree gchar *nowhere = g_build_filename (tmp, "nowhere", NULL);
  g_autoptr (GPtrArray) names = NULL;
  DcpState *state;

  g_assert_no_error (error);
  g_assert_cmpint (g_mkdir (elsewhere, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (root, 0700), ==, 0);
  g_assert_cmpint (symlink (elsewhere, link), ==, 0);
  state = dcp_state_open (root, &error);
  g_assert_null (state);
  g_assert_error (error, DCP_ERROR, DCP_ERROR_STATE);
  names = list_dir (elsewhere);
  g_assert_cmpuint (names->len, ==, 0);

  /* dangling: not created through the link either */
  g_assert_cmpint (g_mkdir (root2, 0700), ==, 0);
  g_assert_cmpint (symlink (nowhere, dangling), ==, 0);
  state = dcp_state_open (root2, &error2);
  g_assert_null (state);
  g_assert_error (error2, DCP_ERROR, DCP_ERROR_STATE);
  g_assert_false (exists_nofollow (nowhere));

  /* a plain file in the way */
  g_assert_cmpint (g_mkdir (root3, 0700), ==, 0);
  g_assert_true (g_file_set_contents (file, "x", 1, NULL));
  state = dcp_state_open (root3, &error3);
  g_assert_null (state);
  g_assert_error (error3, DCP_ERROR, DCP_ERROR_STATE);

  rm_rf (tmp);
}

typedef struct {
  gchar *path;
  gint64 mtime;
} Target;

/* A file outside the state directory that nothing may touch. */
static Target
make_target (Fixture *f, const gchar *name)
{
  Target t;
  struct timespec ts[2] = { { 1000000000, 0 }, { 1000000000, 0 } };

  t.path = g_build_filename (f->tmp, name, NULL);
  g_assert_true (g_file_set_contents (t.path, "precious\n", -1, NULL));
  g_assert_cmpint (utimensat (AT_FDCWD, t.path, ts, 0), ==, 0);
  t.mtime = mtime_us (t.path);
  return t;
}

static void
assert_target_untouched (Target *t)
{
  g_autofree gchar *content = NULL;

  g_assert_true (g_file_get_contents (t->path, &content, NULL, NULL));
  g_assert_cmpstr (content, ==, "precious\n");
  g_assert_cmpint (mtime_us (t->path), ==, t->mtime);
  g_clear_pointer (&t->path, g_free);
}

static void
plant (Fixture *f, const gchar *token, const gchar *suffix, const Target *t)
{
  g_autofree gchar *link = state_file (f, token, suffix);
  g_assert_cmpint (symlink (t->path, link), ==, 0);
}

static void
test_symlink_others (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;
  g_autoptr (GError) e3 = NULL;
  g_autoptr (GError) e4 = NULL;
  g_autoptr (GError) e5 = NULL;
  Target lock = make_target (f, "target-lock");
  Target result = make_target (f, "target-result");
  Target gone = make_target (f, "target-gone");
  Target pending = make_target (f, "target-pending");
  Target retry = make_target (f, "target-retry");
  g_autofree gchar *key = dcp_token_hash ("a message");
  g_autofree gchar *retry_link = g_build_filename (dcp_state_get_path (f->state), "retry-", NULL);
  g_autofree gchar *retry_path = g_strconcat (retry_link, key, NULL);
  Target last = make_target (f, "target-last");
  Target full = make_target (f, "target-full");
  DcpRetry r = { 0 }, loaded = { 0 };
  DcpMarkHold h;

  (void) data;
  /* the lock */
  plant (f, "t-lock", ".lock", &lock);
  g_assert_false (dcp_mark_hold (f->state, "t-lock", &h, &e1));
  g_assert_nonnull (e1);
  assert_target_untouched (&lock);

  /* the result */
  plant (f, "t-result", ".result", &result);
  (void) dcp_mark_record (f->state, "t-result", T0, "200 ok", &e2);
  assert_target_untouched (&result);

  /* the gone mark: a symlink does not mark a token gone, and is not
   * written through */
  plant (f, "t-gone", ".gone", &gone);
  h = peek_state (f, "t-gone");
  g_assert_false (h.m.gone);
  (void) dcp_mark_set_gone (f->state, "t-gone", TRUE, T0, &e3);
  assert_target_untouched (&gone);

  /* the mark, the bucket and the last push: never read or written
   * through a symlink */
  plant (f, "t-due", ".due", &pending);
  plant (f, "t-due", ".last", &last);
  plant (f, "t-due", ".full", &full);
  h = peek_state (f, "t-due");
  g_assert_cmpint (h.m.last, ==, -1);
  g_assert_cmpint (h.m.full_at, ==, -1);
  g_assert_cmpint (h.m.wanted, ==, -1);
  if (dcp_mark_hold (f->state, "t-due", &h, &e4))
    {
      DcpMachineConfig c = CONFIG (3);
      DcpEvent e = { DCP_EVENT_READ, T0, FALSE, -1, DCP_HTTP_OK, FALSE };
      DcpActions a;
      dcp_machine_step (&c, &h.m, &e, &a);
      (void) dcp_mark_store (f->state, "t-due", &h, NULL);
      dcp_mark_release (&h);
    }
  assert_target_untouched (&pending);
  assert_target_untouched (&last);
  assert_target_untouched (&full);

  /* a retry record */
  g_assert_cmpint (symlink (retry.path, retry_path), ==, 0);
  (void) dcp_retry_load (f->state, key, &loaded, &e5);
  g_assert_cmpuint (loaded.failures, ==, 0);
  r.failures = 2;
  r.first_s = T0 / SEC;
  (void) dcp_retry_save (f->state, key, &r, NULL);
  assert_target_untouched (&retry);
  dcp_retry_clear (&loaded);
  dcp_retry_clear (&r);
}

typedef struct {
  int fd;
  guint ms;
} Holder;

static gpointer
release_later (gpointer user)
{
  Holder *h = user;

  g_usleep (h->ms * 1000);
  close (h->fd);
  return NULL;
}

static void
test_lock_waits (Fixture *f, gconstpointer data)
{
  g_autofree gchar *lock = state_file (f, TOKEN, ".lock");
  Holder h = { .ms = 30 };
  GThread *thread;
  gint64 start;

  (void) data;
  h.fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  g_assert_cmpint (h.fd, >=, 0);
  g_assert_cmpint (flock (h.fd, LOCK_EX), ==, 0);
  start = g_get_monotonic_time ();
  thread = g_thread_new ("holder", release_later, &h);
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 20 * 1000);
  g_thread_join (thread);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  g_test_add_func ("/state/open/permissions", test_open_permissions);
  g_test_add_func ("/state/open/symlinked-dir", test_open_symlinked_dir);
  ADD_FIXTURE ("/state/file-names", test_file_names);
  ADD_FIXTURE ("/state/symlink/others", test_symlink_others);
  ADD_FIXTURE ("/state/lock/waits", test_lock_waits);
  return g_test_run ();
}
