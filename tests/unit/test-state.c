/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-token state on disk, driven by a clock of our own: the machine's
 * state round-tripped through the files, a live owner told from a dead
 * one, gone marks, retry records, what the files look like, that planted
 * symlinks are never followed, and that N processes reading a message at
 * once get exactly the bucket's pushes and one trailing push. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "dcp-error.h"
#include "dcp-machine.h"
#include "dcp-device.h"
#include "dcp-mark.h"
#include "dcp-retry.h"
#include "dcp-state.h"
#include "dcp-token.h"

/* 2026-11-22 04:00:00.123456 UTC, in µs: odd microseconds on purpose */
#define T0 G_GINT64_CONSTANT (1795320000123456)
#define SEC G_USEC_PER_SEC
#define W (60 * SEC)

static const DcpSchedule *
relays (void)
{
  static DcpSchedule schedule;
  dcp_schedule_init (&schedule);
  return &schedule;
}

#define CONFIG(burst)                                                                              \
  {                                                                                                \
    W, burst, 10 * SEC, TRUE, relays ()                                                            \
  }

#define TOKEN "openpgp:v1/Zq+Rw==TOKENtext"

typedef struct {
  gchar *tmp;  /* from g_dir_make_tmp: everything lives below it */
  gchar *root; /* the cache root handed to dcp_state_open */
  DcpState *state;
} Fixture;

static int
rm_one (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void) st;
  (void) flag;
  (void) ftw;
  return remove (path);
}

static void
rm_rf (const gchar *path)
{
  (void) nftw (path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
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

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  (void) data;
  g_clear_pointer (&f->state, dcp_state_free);
  rm_rf (f->tmp);
  g_free (f->root);
  g_free (f->tmp);
}

/* ---------------------------------------------------------------- helpers */

/* A push at `now` that went through. */

/* Feed one event to the token's machine under its lock, as mda/ does;
 * a new owner's mark is returned locked in *own (or closed). */
static DcpActions
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

static DcpActions
read_at (Fixture *f, const gchar *token, gint64 now, int *own)
{
  DcpEvent e = { DCP_EVENT_READ, now, FALSE, -1, DCP_HTTP_OK, FALSE };
  return step (f, token, 3, e, own);
}

static DcpActions
answer (Fixture *f, const gchar *token, gint64 started, gint64 now, DcpHttpOutcome out)
{
  DcpEvent e = { DCP_EVENT_ANSWER, now, FALSE, started, out, FALSE };
  return step (f, token, 3, e, NULL);
}

static DcpMarkHold
peek_state (Fixture *f, const gchar *token)
{
  DcpMarkHold h;
  dcp_mark_peek (f->state, token, &h);
  return h;
}

static gchar *
state_file (Fixture *f, const gchar *token, const gchar *suffix)
{
  g_autofree gchar *hash = dcp_token_hash (token);
  g_autofree gchar *name = g_strconcat (hash, suffix, NULL);

  return g_build_filename (dcp_state_get_path (f->state), name, NULL);
}

static gboolean
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

static GPtrArray *
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

/* Everything about the state directory that a write would change. */

static gint64
mtime_us (const gchar *path)
{
  struct stat st;

  g_assert_cmpint (lstat (path, &st), ==, 0);
  return (gint64) st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
}

/* ------------------------------------------------------- directory, files */

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

/* ------------------------------------------------------------------ retry */

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

/* ------------------------------------------------------------------- peek */

/* --------------------------------------------------------------- symlinks */

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

/* ------------------------------------------------------ machine on disk */

static void
test_round_trip (Fixture *f, gconstpointer data)
{
  g_autofree gchar *due = NULL;
  DcpMarkHold h;
  DcpActions a;
  int own = -1;

  (void) data;
  /* a push, then one within the second: a trailing push due at its end */
  a = read_at (f, TOKEN, T0, NULL);
  g_assert_true (a.push);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.last, ==, T0);
  g_assert_cmpint (h.m.full_at, ==, T0 + W);
  g_assert_cmpint (h.m.wanted, ==, T0);
  g_assert_cmpint (h.m.flight, ==, T0);
  a = read_at (f, TOKEN, T0 + SEC / 2, &own);
  g_assert_cmpint (a.detach_at, ==, T0 + SEC);
  h = peek_state (f, TOKEN);
  g_assert_true (h.m.owned);
  g_assert_true (h.owner_live); /* we hold its mark */
  g_assert_cmpint (h.m.due, ==, T0 + SEC);
  g_assert_cmpint (h.m.wanted, ==, T0 + SEC / 2);
  /* the owner dies: seen as such, and the next message takes it over */
  close (own);
  h = peek_state (f, TOKEN);
  g_assert_true (h.m.owned);
  g_assert_false (h.owner_live);
  a = read_at (f, TOKEN, T0 + 2 * SEC, NULL);
  g_assert_true (a.push);
  h = peek_state (f, TOKEN);
  g_assert_false (h.m.owned);
  /* answered: nothing is left, and the mark is gone */
  a = answer (f, TOKEN, T0 + 2 * SEC, T0 + 3 * SEC, DCP_HTTP_OK);
  a = answer (f, TOKEN, T0, T0 + 3 * SEC, DCP_HTTP_OK);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.wanted, ==, -1);
  g_assert_cmpint (h.m.flight, ==, -1);
  due = state_file (f, TOKEN, ".due");
  g_assert_false (exists_nofollow (due));
  g_assert_cmpint (h.m.full_at, ==, T0 + 2 * W);
}

static void
test_owed_on_disk (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) tokens = NULL;
  DcpMarkHold h;
  DcpActions a;
  int own = -1;

  (void) data;
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  a = answer (f, TOKEN, T0, T0 + SEC, DCP_HTTP_FAILED);
  g_assert_true (a.owed);
  g_assert_cmpint (a.detach_at, ==, T0 + SEC + 8 * SEC);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.owed_first, ==, T0 + SEC);
  g_assert_cmpuint (h.m.tries, ==, 1);
  /* the mark holds the token, for --resume */
  tokens = dcp_mark_tokens (f->state, NULL);
  g_assert_nonnull (tokens);
  g_assert_cmpuint (tokens->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (tokens, 0), ==, TOKEN);
  /* its owner was never started: a run takes it over */
  a = read_at (f, TOKEN, T0 + 30 * SEC, &own);
  g_assert_cmpint (a.why, ==, DCP_WHY_OWED);
  g_assert_true (a.push || a.detach_at >= 0);
  if (own >= 0)
    close (own);
}

static void
test_gone (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpMarkHold h;

  (void) data;
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  answer (f, TOKEN, T0, T0 + SEC, DCP_HTTP_GONE);
  h = peek_state (f, TOKEN);
  g_assert_true (h.m.gone);
  g_assert_cmpint (dcp_mark_gone_since (f->state, TOKEN), >=, 0);
  g_assert_cmpint (read_at (f, TOKEN, T0 + 2 * SEC, NULL).why, ==, DCP_WHY_GONE);
  /* other tokens are not affected */
  g_assert_true (read_at (f, "other", T0 + SEC, NULL).push);
  g_assert_true (dcp_mark_set_gone (f->state, TOKEN, FALSE, T0 + 2 * SEC, &error));
  g_assert_no_error (error);
  g_assert_cmpint (dcp_mark_gone_since (f->state, TOKEN), ==, -1);
  g_assert_true (read_at (f, TOKEN, T0 + 3 * SEC, NULL).push);
  /* clearing a mark that is not there is fine */
  g_assert_true (dcp_mark_set_gone (f->state, "never", FALSE, T0, &error));
  g_assert_no_error (error);
}

/* A mark written by a crash mid-write: a push is wanted, nothing lost. */
static void
test_damaged_mark (Fixture *f, gconstpointer data)
{
  g_autofree gchar *mark = state_file (f, TOKEN, ".due");
  DcpMarkHold h;

  (void) data;
  g_assert_true (g_file_set_contents (mark, "12 x", -1, NULL));
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.wanted, >=, 0);
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
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

/* ----------------------------------------------------------------- races */

static gboolean
read_all (int fd, gchar *buf, gsize len)
{
  gsize got = 0;

  while (got < len)
    {
      gssize n = read (fd, buf + got, len - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      got += n;
    }
  return TRUE;
}

static void
wait_eof (int fd)
{
  gchar c;

  for (;;)
    {
      gssize n = read (fd, &c, 1);
      if (n == 0 || (n < 0 && errno != EINTR))
        return;
    }
}

#define RACERS 20

/* RACERS processes read a message for the same token at the same instant
 * (all released by one close()); each reports what its machine said as
 * one character: P push, T trailing (it then holds the mark until all
 * are done), C covered. */
static void
race (Fixture *f, gint64 now, guint burst, guint expected[3])
{
  int barrier[2], results[2], release[2];
  pid_t pids[RACERS];
  gchar kinds[RACERS];
  guint counts[3] = { 0 };

  g_assert_cmpint (pipe (barrier), ==, 0);
  g_assert_cmpint (pipe (results), ==, 0);
  g_assert_cmpint (pipe (release), ==, 0);

  for (int i = 0; i < RACERS; i++)
    {
      pids[i] = fork ();
      g_assert_cmpint (pids[i], >=, 0);
      if (pids[i] == 0)
        {
          DcpMachineConfig c = CONFIG (burst);
          DcpEvent e = { DCP_EVENT_READ, now, FALSE, -1, DCP_HTTP_OK, FALSE };
          DcpState *state;
          DcpMarkHold h;
          DcpActions a;
          gchar ch = 'E';
          int own = -1;

          close (barrier[1]);
          close (results[0]);
          close (release[1]);
          state = dcp_state_open (f->root, NULL);
          wait_eof (barrier[0]);
          if (state != NULL && dcp_mark_hold (state, TOKEN, &h, NULL))
            {
              if (h.m.owned && !h.owner_live)
                {
                  DcpEvent dead = { DCP_EVENT_DEAD, now, FALSE, -1, DCP_HTTP_OK, FALSE };
                  dcp_machine_step (&c, &h.m, &dead, &a);
                }
              dcp_machine_step (&c, &h.m, &e, &a);
              if (a.detach_at >= 0)
                own = dcp_mark_own (state, TOKEN, &h, NULL);
              else
                (void) dcp_mark_store (state, TOKEN, &h, NULL);
              dcp_mark_release (&h);
              ch = a.push                         ? 'P'
                   : a.detach_at >= 0 && own >= 0 ? 'T'
                   : a.why == DCP_WHY_COVERED     ? 'C'
                                                  : 'E';
            }
          if (write (results[1], &ch, 1) != 1)
            _exit (2);
          /* an owner lives (and holds its mark) until all are done */
          wait_eof (release[0]);
          _exit (ch == 'E' ? 1 : 0);
        }
    }
  close (barrier[0]);
  close (results[1]);
  close (release[0]);

  close (barrier[1]); /* go */
  g_assert_true (read_all (results[0], kinds, RACERS));
  close (release[1]);
  close (results[0]);

  for (int i = 0; i < RACERS; i++)
    {
      int status;
      g_assert_cmpint (waitpid (pids[i], &status, 0), ==, pids[i]);
      g_assert_true (WIFEXITED (status));
      g_assert_cmpint (WEXITSTATUS (status), ==, 0);
      counts[kinds[i] == 'P' ? 0 : kinds[i] == 'T' ? 1 : 2]++;
    }
  g_test_message ("push %u trailing %u covered %u", counts[0], counts[1], counts[2]);
  for (int k = 0; k < 3; k++)
    g_assert_cmpuint (counts[k], ==, expected[k]);
}

/* One instant: one push (the next is a second away), one trailing push. */
static void
test_race_fresh (Fixture *f, gconstpointer data)
{
  guint expected[3] = { 1, 1, RACERS - 2 };
  DcpMarkHold h;

  (void) data;
  race (f, T0, 3, expected);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.last, ==, T0);
  g_assert_true (h.m.owned);
  g_assert_false (h.owner_live); /* its process is gone */
  g_assert_cmpint (h.m.due, ==, T0 + SEC);
}

/* The bucket empty: no push, one trailing push when it has one. */
static void
test_race_bucket_empty (Fixture *f, gconstpointer data)
{
  guint expected[3] = { 0, 1, RACERS - 1 };
  DcpMarkHold h;

  (void) data;
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  g_assert_true (read_at (f, TOKEN, T0 + 2 * SEC, NULL).push);
  g_assert_true (read_at (f, TOKEN, T0 + 4 * SEC, NULL).push);
  race (f, T0 + 10 * SEC, 3, expected);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.due, ==, T0 + W);
}

/* ---------------------------------------------------------------- devices */

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

/* ---------------------------------------------------------------- owed */

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

#define ADD(path, fn) g_test_add (path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  g_test_add_func ("/state/open/permissions", test_open_permissions);
  g_test_add_func ("/state/open/symlinked-dir", test_open_symlinked_dir);
  ADD ("/state/file-names", test_file_names);
  ADD ("/state/machine/round-trip", test_round_trip);
  ADD ("/state/machine/owed", test_owed_on_disk);
  ADD ("/state/machine/damaged-mark", test_damaged_mark);
  ADD ("/state/gone", test_gone);
  ADD ("/state/retry/round-trip", test_retry_round_trip);
  ADD ("/state/retry/many-tokens", test_retry_many_tokens);
  ADD ("/state/symlink/others", test_symlink_others);
  ADD ("/state/lock/waits", test_lock_waits);
  ADD ("/state/race/fresh", test_race_fresh);
  ADD ("/state/race/bucket-empty", test_race_bucket_empty);
  ADD ("/state/device/remembered", test_device_remembered);
  ADD ("/state/device/expiry", test_device_expiry);
  ADD ("/state/device/forget-and-gone", test_device_forget_and_gone);
  ADD ("/state/device/cap-and-damage", test_device_cap_and_damage);
#undef ADD

  return g_test_run ();
}
