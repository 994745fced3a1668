/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-token state on disk, driven by a clock of our own: the rate limit,
 * trailing pushes, rollback, gone marks, retry records, what the files look
 * like, that planted symlinks are never followed, and that N processes
 * claiming at once get exactly one push and one trailing push. */
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
#include "dcp-state.h"
#include "dcp-token.h"

/* 2026-11-22 04:00:00.123456 UTC, in µs: odd microseconds on purpose */
#define T0 G_GINT64_CONSTANT (1795320000123456)
#define SEC G_USEC_PER_SEC
#define W (60 * SEC)

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

static DcpSlot
claim (Fixture *f, const gchar *token, gint64 now, gint64 window, gboolean trailing)
{
  g_autoptr (GError) error = NULL;
  DcpSlot slot;

  memset (&slot, 0x55, sizeof slot);
  g_assert_true (dcp_state_claim (f->state, token, now, window, trailing, &slot, &error));
  g_assert_no_error (error);
  if (slot.kind != DCP_SLOT_TRAILING)
    g_assert_cmpint (slot.pending_fd, ==, -1);
  if (slot.kind != DCP_SLOT_PUSH)
    g_assert_cmpint (slot.claimed, ==, -1);
  return slot;
}

static DcpSlot
peek (Fixture *f, const gchar *token, gint64 now, gint64 window, gboolean trailing)
{
  DcpSlot slot;

  memset (&slot, 0x55, sizeof slot);
  dcp_state_peek (f->state, token, now, window, trailing, &slot);
  g_assert_cmpint (slot.pending_fd, ==, -1);
  g_assert_cmpint (slot.claimed, ==, -1);
  return slot;
}

static void
finish (Fixture *f, const gchar *token, const DcpSlot *slot, gboolean pushed, gint64 now,
        const gchar *result)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (dcp_state_finish (f->state, token, slot, pushed, now, result, &error));
  g_assert_no_error (error);
}

/* A push at `now` that went through. */
static void
push_ok (Fixture *f, const gchar *token, gint64 now)
{
  DcpSlot slot = claim (f, token, now, W, TRUE);

  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  finish (f, token, &slot, TRUE, now, "200 ok");
}

static DcpTokenStatus
status_of (Fixture *f, const gchar *token)
{
  DcpTokenStatus st;

  memset (&st, 0x55, sizeof st);
  dcp_state_get_status (f->state, token, &st);
  return st;
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
static gchar *
snapshot (Fixture *f)
{
  const gchar *path = dcp_state_get_path (f->state);
  g_autoptr (GPtrArray) names = list_dir (path);
  GString *s = g_string_new (NULL);
  struct stat st;

  g_assert_cmpint (stat (path, &st), ==, 0);
  g_string_append_printf (s, ". %ld.%09ld\n", (long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree gchar *p = g_build_filename (path, g_ptr_array_index (names, i), NULL);
      g_assert_cmpint (lstat (p, &st), ==, 0);
      g_string_append_printf (s, "%s ino=%lu mode=%o size=%ld mtime=%ld.%09ld ctime=%ld.%09ld\n",
                              (const gchar *) g_ptr_array_index (names, i),
                              (unsigned long) st.st_ino, st.st_mode, (long) st.st_size,
                              (long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                              (long) st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
    }
  return g_string_free (s, FALSE);
}

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
  DcpSlot slot, trailing;
  DcpRetry retry = { 0 };
  gboolean owed;
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
  g_assert_true (dcp_state_claim (state, TOKEN, T0, W, TRUE, &slot, &error));
  g_assert_true (dcp_state_finish (state, TOKEN, &slot, TRUE, T0, "200 ok", &error));
  g_assert_true (dcp_state_claim (state, TOKEN, T0 + SEC, W, TRUE, &trailing, &error));
  g_assert_cmpint (trailing.kind, ==, DCP_SLOT_TRAILING);
  g_assert_true (dcp_state_claim (state, "other", T0, W, TRUE, &slot, &error));
  g_assert_true (dcp_state_set_gone (state, "gone", TRUE, T0, &error));
  retry.failures = 1;
  retry.first = T0;
  g_assert_true (dcp_state_retry_save (state, key, &retry, &error));
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
  g_assert_true (
      dcp_state_trailing_begin (state, TOKEN, trailing.pending_fd, T0 + W, &slot, &owed, &error));
  g_assert_no_error (error);
  close (trailing.pending_fd);

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
  static const gchar *const suffixes[] = { ".last", ".lock", ".pending", ".gone", ".result" };
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
      DcpSlot slot = claim (f, tokens[i], T0, W, TRUE);
      DcpSlot trailing;
      DcpRetry retry = { 0 };
      g_autofree gchar *key = dcp_token_hash (tokens[i]);

      finish (f, tokens[i], &slot, TRUE, T0, "200 ok");
      trailing = claim (f, tokens[i], T0 + SEC, W, TRUE);
      g_assert_cmpint (trailing.kind, ==, DCP_SLOT_TRAILING);
      close (trailing.pending_fd);
      g_assert_true (dcp_state_set_gone (f->state, tokens[i], TRUE, T0, &error));
      retry.done = g_ptr_array_new_with_free_func (g_free);
      g_ptr_array_add (retry.done, g_strdup (key));
      g_assert_true (dcp_state_retry_save (f->state, key, &retry, &error));
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

/* ------------------------------------------------------------------ claim */

static void
test_claim_first (Fixture *f, gconstpointer data)
{
  DcpSlot slot = claim (f, TOKEN, T0, W, TRUE);
  DcpTokenStatus st;

  (void) data;
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (slot.claimed, ==, T0);
  g_assert_cmpint (slot.previous, ==, -1);
  g_assert_cmpint (slot.pending_fd, ==, -1);
  /* the claim itself is recorded (an in-flight push counts) */
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0);
  dcp_token_status_clear (&st);
}

static void
test_claim_sequence (Fixture *f, gconstpointer data)
{
  DcpSlot first, second, third, limited, again, covered;
  struct stat a, b;
  g_autofree gchar *pending = state_file (f, TOKEN, ".pending");

  (void) data;
  first = claim (f, TOKEN, T0, W, TRUE);
  g_assert_cmpint (first.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (first.claimed, ==, T0);
  finish (f, TOKEN, &first, TRUE, T0 + SEC, "200 ok");

  /* second inside the window: a trailing push, due when the window ends */
  second = claim (f, TOKEN, T0 + 10 * SEC, W, TRUE);
  g_assert_cmpint (second.kind, ==, DCP_SLOT_TRAILING);
  g_assert_cmpint (second.due, ==, T0 + W);
  g_assert_cmpint (second.previous, ==, T0);
  g_assert_cmpint (second.claimed, ==, -1);
  g_assert_cmpint (second.pending_fd, >=, 0);
  g_assert_true (exists_nofollow (pending));
  g_assert_cmpint (fstat (second.pending_fd, &a), ==, 0);
  g_assert_cmpuint (a.st_nlink, ==, 1);

  /* third: the live trailing push covers it */
  third = claim (f, TOKEN, T0 + 20 * SEC, W, TRUE);
  g_assert_cmpint (third.kind, ==, DCP_SLOT_COVERED);
  g_assert_cmpint (third.previous, ==, T0);

  /* trailing pushes off: limited, pending or not */
  limited = claim (f, TOKEN, T0 + 25 * SEC, W, FALSE);
  g_assert_cmpint (limited.kind, ==, DCP_SLOT_LIMITED);

  /* the trailing process dies: its mark is stale and is replaced */
  close (second.pending_fd);
  again = claim (f, TOKEN, T0 + 30 * SEC, W, TRUE);
  g_assert_cmpint (again.kind, ==, DCP_SLOT_TRAILING);
  g_assert_cmpint (again.due, ==, T0 + W);
  g_assert_cmpint (again.pending_fd, >=, 0);
  g_assert_cmpint (fstat (again.pending_fd, &b), ==, 0);
  g_assert_cmpuint (b.st_nlink, ==, 1);

  covered = claim (f, TOKEN, T0 + 31 * SEC, W, TRUE);
  g_assert_cmpint (covered.kind, ==, DCP_SLOT_COVERED);
  close (again.pending_fd);
}

static void
test_claim_window_boundary (Fixture *f, gconstpointer data)
{
  DcpSlot just_inside, trailing, at;

  (void) data;
  push_ok (f, TOKEN, T0);

  just_inside = claim (f, TOKEN, T0 + W - 1, W, FALSE);
  g_assert_cmpint (just_inside.kind, ==, DCP_SLOT_LIMITED);
  trailing = claim (f, TOKEN, T0 + W - 1, W, TRUE);
  g_assert_cmpint (trailing.kind, ==, DCP_SLOT_TRAILING);
  g_assert_cmpint (trailing.due, ==, T0 + W);
  close (trailing.pending_fd);

  /* now - last == window: the window is over */
  at = claim (f, TOKEN, T0 + W, W, FALSE);
  g_assert_cmpint (at.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (at.previous, ==, T0);
  g_assert_cmpint (at.claimed, ==, T0 + W);
}

static void
test_claim_window_zero (Fixture *f, gconstpointer data)
{
  g_autofree gchar *last = state_file (f, TOKEN, ".last");
  g_autofree gchar *pending = state_file (f, TOKEN, ".pending");
  g_autofree gchar *other_last = state_file (f, "other", ".last");
  g_autoptr (GPtrArray) names = NULL;
  g_autofree gchar *hash = dcp_token_hash (TOKEN);
  g_autofree gchar *lock_name = g_strconcat (hash, ".lock", NULL);

  (void) data;
  for (int i = 0; i < 5; i++)
    {
      DcpSlot slot = claim (f, TOKEN, T0 + i, 0, TRUE);
      g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
      g_assert_cmpint (slot.claimed, ==, -1);
      g_assert_cmpint (slot.previous, ==, -1);
    }
  g_assert_false (exists_nofollow (last));
  g_assert_false (exists_nofollow (pending));
  /* at most the (empty) lock file */
  names = list_dir (dcp_state_get_path (f->state));
  for (guint i = 0; i < names->len; i++)
    g_assert_cmpstr (g_ptr_array_index (names, i), ==, lock_name);

  /* an earlier push recorded with a window is neither in the way nor
   * overwritten */
  push_ok (f, "other", T0);
  for (int i = 1; i < 5; i++)
    {
      DcpSlot slot = claim (f, "other", T0 + i, 0, FALSE);
      g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
      g_assert_cmpint (slot.claimed, ==, -1);
    }
  g_assert_cmpint (mtime_us (other_last), ==, T0);
}

static void
test_claim_clock_stepped_back (Fixture *f, gconstpointer data)
{
  DcpSlot slight, stepped;
  DcpTokenStatus st;

  (void) data;
  push_ok (f, TOKEN, T0);

  /* a last push a second in the future: clocks of two runs, tolerated */
  slight = claim (f, TOKEN, T0 - SEC, W, FALSE);
  g_assert_cmpint (slight.kind, ==, DCP_SLOT_LIMITED);

  /* ten minutes in the future: the clock was stepped back */
  stepped = claim (f, TOKEN, T0 - 600 * SEC, W, FALSE);
  g_assert_cmpint (stepped.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (stepped.previous, ==, T0);
  g_assert_cmpint (stepped.claimed, ==, T0 - 600 * SEC);
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 - 600 * SEC);
  dcp_token_status_clear (&st);
}

static void
test_claim_tokens_independent (Fixture *f, gconstpointer data)
{
  DcpSlot a, b;

  (void) data;
  a = claim (f, "token-a", T0, W, TRUE);
  b = claim (f, "token-b", T0, W, TRUE);
  g_assert_cmpint (a.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (b.kind, ==, DCP_SLOT_PUSH);
}

/* ----------------------------------------------------------------- finish */

static void
test_finish_rollback (Fixture *f, gconstpointer data)
{
  DcpSlot first, next, later;
  DcpTokenStatus st;

  (void) data;
  first = claim (f, TOKEN, T0, W, TRUE);
  g_assert_cmpint (first.kind, ==, DCP_SLOT_PUSH);
  finish (f, TOKEN, &first, FALSE, T0 + SEC, "error: connection refused");

  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, -1);
  g_assert_cmpstr (st.result, ==, "error: connection refused");
  g_assert_cmpint (st.result_time, ==, T0 + SEC);
  dcp_token_status_clear (&st);

  /* the failed push does not hold the window */
  next = claim (f, TOKEN, T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (next.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (next.previous, ==, -1);
  finish (f, TOKEN, &next, TRUE, T0 + 2 * SEC, "200 ok");

  /* a rollback restores the push before it */
  later = claim (f, TOKEN, T0 + 2 * SEC + W, W, TRUE);
  g_assert_cmpint (later.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (later.previous, ==, T0 + 2 * SEC);
  finish (f, TOKEN, &later, FALSE, T0 + 3 * SEC + W, "HTTP 502");
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 + 2 * SEC);
  g_assert_cmpstr (st.result, ==, "HTTP 502");
  dcp_token_status_clear (&st);
}

/* A rollback never erases a newer claim by someone else. */
static void
test_finish_rollback_keeps_newer (Fixture *f, gconstpointer data)
{
  DcpSlot a, b;
  DcpTokenStatus st;

  (void) data;
  a = claim (f, TOKEN, T0, W, TRUE);
  g_assert_cmpint (a.kind, ==, DCP_SLOT_PUSH);
  /* A's request hangs past the window; B claims */
  b = claim (f, TOKEN, T0 + W, W, TRUE);
  g_assert_cmpint (b.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (b.previous, ==, T0);
  finish (f, TOKEN, &a, FALSE, T0 + W + SEC, "error: timeout");
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 + W);
  dcp_token_status_clear (&st);
  finish (f, TOKEN, &b, TRUE, T0 + W + 2 * SEC, "200 ok");
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 + W);
  dcp_token_status_clear (&st);
}

/* A slow push that completes after a newer one never moves the last push
 * back in time (which would let a third push through inside the window). */
static void
test_finish_late_push_keeps_newer (Fixture *f, gconstpointer data)
{
  DcpSlot a, b, c;
  DcpTokenStatus st;

  (void) data;
  a = claim (f, TOKEN, T0, W, TRUE);
  g_assert_cmpint (a.kind, ==, DCP_SLOT_PUSH);
  b = claim (f, TOKEN, T0 + W, W, TRUE);
  g_assert_cmpint (b.kind, ==, DCP_SLOT_PUSH);
  finish (f, TOKEN, &b, TRUE, T0 + W + SEC, "200 ok");
  /* A's request finally comes back */
  finish (f, TOKEN, &a, TRUE, T0 + W + 2 * SEC, "200 ok");
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 + W);
  dcp_token_status_clear (&st);
  c = claim (f, TOKEN, T0 + W + 3 * SEC, W, FALSE);
  g_assert_cmpint (c.kind, ==, DCP_SLOT_LIMITED);
}

static void
test_finish_pushed (Fixture *f, gconstpointer data)
{
  DcpSlot slot, unlimited;
  DcpTokenStatus st;

  (void) data;
  slot = claim (f, TOKEN, T0, W, TRUE);
  finish (f, TOKEN, &slot, TRUE, T0 + 2 * SEC, "200 ok");
  st = status_of (f, TOKEN);
  /* the window counts from when the push started */
  g_assert_cmpint (st.last, ==, T0);
  g_assert_cmpint (st.result_time, ==, T0 + 2 * SEC);
  g_assert_cmpstr (st.result, ==, "200 ok");
  dcp_token_status_clear (&st);

  /* no result text: the previous one stays */
  slot = claim (f, TOKEN, T0 + W, W, TRUE);
  finish (f, TOKEN, &slot, TRUE, T0 + W + SEC, NULL);
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 + W);
  g_assert_cmpstr (st.result, ==, "200 ok");
  dcp_token_status_clear (&st);

  /* a push made without a window (nothing claimed) is still recorded */
  unlimited = claim (f, "other", T0, 0, TRUE);
  g_assert_cmpint (unlimited.claimed, ==, -1);
  finish (f, "other", &unlimited, TRUE, T0 + 5 * SEC, "200 ok");
  st = status_of (f, "other");
  g_assert_cmpint (st.last, ==, T0 + 5 * SEC);
  dcp_token_status_clear (&st);
}

/* --------------------------------------------------------- trailing push */

static void
trailing_begin (Fixture *f, const gchar *token, int fd, gint64 now, DcpSlot *slot, gboolean *owed)
{
  g_autoptr (GError) error = NULL;

  memset (slot, 0x55, sizeof *slot);
  *owed = 42;
  g_assert_true (dcp_state_trailing_begin (f->state, token, fd, now, slot, owed, &error));
  g_assert_no_error (error);
  g_assert_true (*owed == TRUE || *owed == FALSE);
}

static void
test_trailing_owed (Fixture *f, gconstpointer data)
{
  DcpSlot t, slot, next;
  DcpTokenStatus st;
  gboolean owed;

  (void) data;
  push_ok (f, TOKEN, T0);
  t = claim (f, TOKEN, T0 + 10 * SEC, W, TRUE);
  g_assert_cmpint (t.kind, ==, DCP_SLOT_TRAILING);

  trailing_begin (f, TOKEN, t.pending_fd, T0 + W, &slot, &owed);
  g_assert_true (owed);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (slot.claimed, ==, T0 + W);
  g_assert_cmpint (slot.previous, ==, T0);
  st = status_of (f, TOKEN);
  g_assert_false (st.pending);
  g_assert_cmpint (st.last, ==, T0 + W);
  dcp_token_status_clear (&st);

  /* from here on a new message in the window schedules a new trailing push */
  next = claim (f, TOKEN, T0 + W + SEC, W, TRUE);
  g_assert_cmpint (next.kind, ==, DCP_SLOT_TRAILING);
  g_assert_cmpint (next.due, ==, T0 + 2 * W);
  close (next.pending_fd);

  finish (f, TOKEN, &slot, TRUE, T0 + W + 2 * SEC, "200 ok");
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0 + W);
  g_assert_cmpstr (st.result, ==, "200 ok");
  dcp_token_status_clear (&st);
  close (t.pending_fd);
}

static void
test_trailing_not_owed (Fixture *f, gconstpointer data)
{
  DcpSlot t, slot;
  DcpTokenStatus st;
  gboolean owed;

  (void) data;
  push_ok (f, TOKEN, T0);
  t = claim (f, TOKEN, T0 + 10 * SEC, W, TRUE);
  g_assert_cmpint (t.kind, ==, DCP_SLOT_TRAILING);

  /* somebody else pushed after the mark was made (the window was over) */
  push_ok (f, TOKEN, T0 + W);

  trailing_begin (f, TOKEN, t.pending_fd, T0 + W + 5 * SEC, &slot, &owed);
  g_assert_false (owed);
  g_assert_cmpint (slot.claimed, ==, -1);
  st = status_of (f, TOKEN);
  g_assert_false (st.pending);
  g_assert_cmpint (st.last, ==, T0 + W);
  dcp_token_status_clear (&st);
  close (t.pending_fd);
}

static void
test_trailing_gone (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpSlot t, slot;
  gboolean owed;

  (void) data;
  push_ok (f, TOKEN, T0);
  t = claim (f, TOKEN, T0 + 10 * SEC, W, TRUE);
  g_assert_cmpint (t.kind, ==, DCP_SLOT_TRAILING);
  g_assert_true (dcp_state_set_gone (f->state, TOKEN, TRUE, T0 + 20 * SEC, &error));
  trailing_begin (f, TOKEN, t.pending_fd, T0 + W, &slot, &owed);
  g_assert_false (owed);
  close (t.pending_fd);
}

/* The push that started the window failed and was rolled back: no push
 * happened since the pending mark, so the trailing push is still owed. */
static void
test_trailing_owed_after_rollback (Fixture *f, gconstpointer data)
{
  DcpSlot first, t, slot;
  gboolean owed;

  (void) data;
  first = claim (f, TOKEN, T0, W, TRUE);
  g_assert_cmpint (first.kind, ==, DCP_SLOT_PUSH);
  t = claim (f, TOKEN, T0 + SEC, W, TRUE);
  g_assert_cmpint (t.kind, ==, DCP_SLOT_TRAILING);
  finish (f, TOKEN, &first, FALSE, T0 + 2 * SEC, "error: connection refused");

  trailing_begin (f, TOKEN, t.pending_fd, T0 + W, &slot, &owed);
  g_assert_true (owed);
  close (t.pending_fd);
}

/* ------------------------------------------------------------------- gone */

static void
test_gone (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpSlot slot;
  DcpTokenStatus st;

  (void) data;
  g_assert_true (dcp_state_set_gone (f->state, TOKEN, TRUE, T0, &error));
  g_assert_no_error (error);

  slot = claim (f, TOKEN, T0 + SEC, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_GONE);
  slot = claim (f, TOKEN, T0 + SEC, 0, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_GONE);
  slot = peek (f, TOKEN, T0 + SEC, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_GONE);
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.gone, ==, T0);
  g_assert_cmpint (st.last, ==, -1);
  dcp_token_status_clear (&st);
  /* other tokens are not affected */
  slot = claim (f, "other", T0 + SEC, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);

  g_assert_true (dcp_state_set_gone (f->state, TOKEN, FALSE, T0 + 2 * SEC, &error));
  g_assert_no_error (error);
  slot = claim (f, TOKEN, T0 + 3 * SEC, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.gone, ==, -1);
  dcp_token_status_clear (&st);

  /* clearing a mark that is not there is fine */
  g_assert_true (dcp_state_set_gone (f->state, "never", FALSE, T0, &error));
  g_assert_no_error (error);
}

/* ----------------------------------------------------------------- status */

static void
test_status (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpTokenStatus st;
  DcpSlot slot, t;

  (void) data;
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, -1);
  g_assert_cmpint (st.result_time, ==, -1);
  g_assert_null (st.result);
  g_assert_false (st.pending);
  g_assert_false (st.pending_live);
  g_assert_cmpint (st.due, ==, -1);
  g_assert_cmpint (st.gone, ==, -1);
  dcp_token_status_clear (&st);

  slot = claim (f, TOKEN, T0, W, TRUE);
  finish (f, TOKEN, &slot, TRUE, T0 + SEC, "200 ok");
  t = claim (f, TOKEN, T0 + 10 * SEC, W, TRUE);
  g_assert_cmpint (t.kind, ==, DCP_SLOT_TRAILING);
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0);
  g_assert_cmpint (st.result_time, ==, T0 + SEC);
  g_assert_cmpstr (st.result, ==, "200 ok");
  g_assert_true (st.pending);
  g_assert_true (st.pending_live);
  g_assert_cmpint (st.due, ==, T0 + W);
  g_assert_cmpint (st.gone, ==, -1);
  dcp_token_status_clear (&st);
  g_assert_null (st.result);

  close (t.pending_fd);
  g_assert_true (dcp_state_set_gone (f->state, TOKEN, TRUE, T0 + 20 * SEC, &error));
  st = status_of (f, TOKEN);
  g_assert_true (st.pending);
  g_assert_false (st.pending_live);
  g_assert_cmpint (st.gone, ==, T0 + 20 * SEC);
  dcp_token_status_clear (&st);
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
  g_assert_true (dcp_state_retry_load (f->state, key, &loaded, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (loaded.failures, ==, 0);
  g_assert_cmpint (loaded.first, ==, -1);
  g_assert_nonnull (loaded.done);
  g_assert_cmpuint (loaded.done->len, ==, 0);
  dcp_retry_clear (&loaded);
  g_assert_null (loaded.done);

  r.failures = 3;
  r.first = T0;
  r.done = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (r.done, g_strdup (h1));
  g_ptr_array_add (r.done, g_strdup (h2));
  g_assert_true (dcp_state_retry_save (f->state, key, &r, &error));
  g_assert_no_error (error);

  g_assert_true (dcp_state_retry_load (f->state, key, &loaded, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (loaded.failures, ==, 3);
  g_assert_cmpint (loaded.first, ==, T0);
  g_assert_cmpuint (loaded.done->len, ==, 2);
  g_assert_cmpstr (g_ptr_array_index (loaded.done, 0), ==, h1);
  g_assert_cmpstr (g_ptr_array_index (loaded.done, 1), ==, h2);

  /* records are per message */
  g_assert_true (dcp_state_retry_load (f->state, key2, &other, &error));
  g_assert_cmpuint (other.failures, ==, 0);
  g_assert_cmpuint (other.done->len, ==, 0);

  /* saving again replaces */
  r.failures = 4;
  g_ptr_array_set_size (r.done, 0);
  g_assert_true (dcp_state_retry_save (f->state, key, &r, &error));
  dcp_retry_clear (&loaded);
  g_assert_true (dcp_state_retry_load (f->state, key, &loaded, &error));
  g_assert_cmpuint (loaded.failures, ==, 4);
  g_assert_cmpint (loaded.first, ==, T0);
  g_assert_cmpuint (loaded.done->len, ==, 0);

  /* no temp file is left behind */
  {
    g_autoptr (GPtrArray) names = list_dir (dcp_state_get_path (f->state));
    g_assert_cmpuint (names->len, ==, 1);
  }

  dcp_state_retry_clear (f->state, key);
  g_assert_true (dcp_state_retry_load (f->state, key, &cleared, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (cleared.failures, ==, 0);
  g_assert_cmpint (cleared.first, ==, -1);
  g_assert_cmpuint (cleared.done->len, ==, 0);
  /* clearing twice is harmless */
  dcp_state_retry_clear (f->state, key);

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
  r.first = T0;
  r.done = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < n; i++)
    {
      g_autofree gchar *token = g_strdup_printf ("token-%u", i);
      g_ptr_array_add (r.done, dcp_token_hash (token));
    }
  g_assert_true (dcp_state_retry_save (f->state, key, &r, &error));
  g_assert_no_error (error);
  g_assert_true (dcp_state_retry_load (f->state, key, &loaded, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (loaded.failures, ==, 1);
  for (guint i = 0; i < loaded.done->len; i++)
    g_assert_cmpuint (strlen (g_ptr_array_index (loaded.done, i)), ==, 64);
  g_assert_cmpuint (loaded.done->len, ==, n);
  dcp_retry_clear (&r);
  dcp_retry_clear (&loaded);
}

/* ------------------------------------------------------------------- peek */

static void
test_peek_never_writes (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *before = NULL;
  g_autofree gchar *after = NULL;
  DcpSlot live, stale, s;

  (void) data;
  /* tokens in every state */
  push_ok (f, "limited", T0);
  push_ok (f, "covered", T0);
  live = claim (f, "covered", T0 + SEC, W, TRUE);
  g_assert_cmpint (live.kind, ==, DCP_SLOT_TRAILING);
  push_ok (f, "stale", T0);
  stale = claim (f, "stale", T0 + SEC, W, TRUE);
  g_assert_cmpint (stale.kind, ==, DCP_SLOT_TRAILING);
  close (stale.pending_fd);
  g_assert_true (dcp_state_set_gone (f->state, "gone", TRUE, T0, &error));
  g_assert_no_error (error);

  before = snapshot (f);

  s = peek (f, "fresh", T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (s.previous, ==, -1);
  s = peek (f, "fresh", T0 + 2 * SEC, 0, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_PUSH);

  s = peek (f, "limited", T0 + 2 * SEC, W, FALSE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_LIMITED);
  g_assert_cmpint (s.previous, ==, T0);
  s = peek (f, "limited", T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_TRAILING);
  g_assert_cmpint (s.due, ==, T0 + W);
  s = peek (f, "limited", T0 + W, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (s.previous, ==, T0);
  s = peek (f, "limited", T0 - 600 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_PUSH);

  s = peek (f, "covered", T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_COVERED);
  s = peek (f, "stale", T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_TRAILING);
  s = peek (f, "gone", T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_GONE);

  /* and again: peeking twice gives the same answer */
  s = peek (f, "limited", T0 + 2 * SEC, W, FALSE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_LIMITED);
  s = peek (f, "stale", T0 + 2 * SEC, W, TRUE);
  g_assert_cmpint (s.kind, ==, DCP_SLOT_TRAILING);

  after = snapshot (f);
  g_assert_cmpstr (before, ==, after);
  close (live.pending_fd);
}

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
test_symlink_last (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  Target t = make_target (f, "target-last");
  DcpSlot slot;
  gboolean ok;

  (void) data;
  plant (f, TOKEN, ".last", &t);
  ok = dcp_state_claim (f->state, TOKEN, T0, W, TRUE, &slot, &error);
  g_test_message ("claim over a planted .last: %s", ok      ? "ok"
                                                    : error ? error->message
                                                            : "(no error set)");
  if (ok)
    {
      g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
      finish (f, TOKEN, &slot, TRUE, T0, "200 ok");
    }
  else
    g_assert_error (error, DCP_ERROR, DCP_ERROR_STATE);
  /* a symlink is never taken for a last push */
  {
    DcpSlot p = peek (f, TOKEN, T0 + SEC, W, FALSE);
    g_assert_true (p.kind == DCP_SLOT_PUSH || p.kind == DCP_SLOT_LIMITED);
    if (p.kind == DCP_SLOT_LIMITED)
      g_assert_cmpint (p.previous, ==, T0);
  }
  assert_target_untouched (&t);
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
  DcpRetry r = { 0 }, loaded = { 0 };
  DcpSlot slot;

  (void) data;
  /* the lock */
  plant (f, "t-lock", ".lock", &lock);
  g_assert_false (dcp_state_claim (f->state, "t-lock", T0, W, TRUE, &slot, &e1));
  g_assert_nonnull (e1);
  assert_target_untouched (&lock);

  /* the result, written by finish */
  plant (f, "t-result", ".result", &result);
  slot = claim (f, "t-result", T0, W, TRUE);
  (void) dcp_state_finish (f->state, "t-result", &slot, TRUE, T0, "200 ok", &e2);
  assert_target_untouched (&result);

  /* the gone mark: a symlink does not mark a token gone, and is not
   * written through */
  plant (f, "t-gone", ".gone", &gone);
  slot = peek (f, "t-gone", T0, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  (void) dcp_state_set_gone (f->state, "t-gone", TRUE, T0, &e3);
  assert_target_untouched (&gone);

  /* the pending mark */
  push_ok (f, "t-pending", T0);
  plant (f, "t-pending", ".pending", &pending);
  if (dcp_state_claim (f->state, "t-pending", T0 + SEC, W, TRUE, &slot, &e4)
      && slot.pending_fd >= 0)
    close (slot.pending_fd);
  assert_target_untouched (&pending);

  /* a retry record */
  g_assert_cmpint (symlink (retry.path, retry_path), ==, 0);
  (void) dcp_state_retry_load (f->state, key, &loaded, &e5);
  g_assert_cmpuint (loaded.failures, ==, 0);
  r.failures = 2;
  r.first = T0;
  (void) dcp_state_retry_save (f->state, key, &r, NULL);
  assert_target_untouched (&retry);
  dcp_retry_clear (&loaded);
  dcp_retry_clear (&r);
}

/* -------------------------------------------------------- the lock, races */

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
  DcpSlot slot;
  gint64 start;

  (void) data;
  h.fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  g_assert_cmpint (h.fd, >=, 0);
  g_assert_cmpint (flock (h.fd, LOCK_EX), ==, 0);
  start = g_get_monotonic_time ();
  thread = g_thread_new ("holder", release_later, &h);
  slot = claim (f, TOKEN, T0, W, TRUE);
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 20 * 1000);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  g_thread_join (thread);
}

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

/* RACERS processes claim the same token at the same instant (all released
 * by one close()); each reports its slot kind as one character. */
static void
race (Fixture *f, gint64 now, gboolean trailing, guint expected[5])
{
  int barrier[2], results[2], release[2];
  pid_t pids[RACERS];
  gchar kinds[RACERS];
  guint counts[5] = { 0 };

  g_assert_cmpint (pipe (barrier), ==, 0);
  g_assert_cmpint (pipe (results), ==, 0);
  g_assert_cmpint (pipe (release), ==, 0);

  for (int i = 0; i < RACERS; i++)
    {
      pids[i] = fork ();
      g_assert_cmpint (pids[i], >=, 0);
      if (pids[i] == 0)
        {
          DcpState *state;
          DcpSlot slot;
          gchar c;

          close (barrier[1]);
          close (results[0]);
          close (release[1]);
          state = dcp_state_open (f->root, NULL);
          wait_eof (barrier[0]);
          if (state == NULL || !dcp_state_claim (state, TOKEN, now, W, trailing, &slot, NULL))
            c = 'E';
          else
            c = '0' + slot.kind;
          if (write (results[1], &c, 1) != 1)
            _exit (2);
          /* a trailing push lives (and holds its mark) until all are done */
          wait_eof (release[0]);
          _exit (c == 'E' ? 1 : 0);
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
    }
  for (int i = 0; i < RACERS; i++)
    {
      g_assert_cmpint (kinds[i], >=, '0');
      g_assert_cmpint (kinds[i], <=, '4');
      counts[kinds[i] - '0']++;
    }
  g_test_message ("push %u trailing %u covered %u limited %u gone %u", counts[0], counts[1],
                  counts[2], counts[3], counts[4]);
  for (int k = 0; k < 5; k++)
    g_assert_cmpuint (counts[k], ==, expected[k]);
}

static void
test_race_fresh (Fixture *f, gconstpointer data)
{
  guint expected[5] = { 1, 1, RACERS - 2, 0, 0 };
  DcpTokenStatus st;

  (void) data;
  race (f, T0, TRUE, expected);
  st = status_of (f, TOKEN);
  g_assert_cmpint (st.last, ==, T0);
  g_assert_true (st.pending);
  g_assert_false (st.pending_live); /* its process is gone */
  g_assert_cmpint (st.due, ==, T0 + W);
  dcp_token_status_clear (&st);
}

static void
test_race_inside_window (Fixture *f, gconstpointer data)
{
  guint expected[5] = { 0, 1, RACERS - 1, 0, 0 };

  (void) data;
  push_ok (f, TOKEN, T0);
  race (f, T0 + 10 * SEC, TRUE, expected);
}

static void
test_race_no_trailing (Fixture *f, gconstpointer data)
{
  guint expected[5] = { 1, 0, 0, RACERS - 1, 0 };

  (void) data;
  race (f, T0, FALSE, expected);
}

/* ---------------------------------------------------------------- devices */

#define DAY (G_GINT64_CONSTANT (86400) * SEC)
#define SOURCE "/home/alice/dovecot-attributes"

static void
device_seen (Fixture *f, const gchar *token, gint64 now)
{
  g_autoptr (GError) error = NULL;
  gboolean gone = TRUE;

  g_assert_true (dcp_state_device_seen (f->state, token, SOURCE, now, &gone, &error));
  g_assert_no_error (error);
  g_assert_false (gone);
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
  devices = dcp_state_devices (f->state, T0 + SEC, 90 * DAY, TRUE);
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
  kept = dcp_state_devices (f->state, T0 + 90 * DAY, 90 * DAY, TRUE);
  g_assert_cmpuint (kept->len, ==, 2);
  g_assert_cmpstr (((DcpDevice *) g_ptr_array_index (kept, 0))->token, ==, "new-token-bbbb");
  peeked = dcp_state_devices (f->state, T0 + 90 * DAY + 1, 90 * DAY, FALSE);
  g_assert_cmpuint (peeked->len, ==, 2);
  g_clear_pointer (&kept, g_ptr_array_unref);
  kept = dcp_state_devices (f->state, T0 + 90 * DAY + 1, 90 * DAY, TRUE);
  g_assert_cmpuint (kept->len, ==, 1);
  g_assert_cmpstr (((DcpDevice *) g_ptr_array_index (kept, 0))->token, ==, "new-token-bbbb");
  /* seen again: refreshed */
  device_seen (f, "new-token-bbbb", T0 + 200 * DAY);
  after = dcp_state_devices (f->state, T0 + 250 * DAY, 90 * DAY, TRUE);
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
  g_assert_true (dcp_state_set_gone (f->state, TOKEN, TRUE, T0, NULL));
  g_assert_true (dcp_state_device_forget (f->state, TOKEN, &error));
  g_assert_no_error (error);
  g_assert_true (dcp_state_device_forget (f->state, TOKEN, &error)); /* twice is fine */
  /* still in Dovecot's file: not remembered again */
  g_assert_true (dcp_state_device_seen (f->state, TOKEN, SOURCE, T0 + SEC, &gone, &error));
  g_assert_true (gone);
  devices = dcp_state_devices (f->state, T0 + 2 * SEC, 90 * DAY, TRUE);
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
  for (gint i = 0; i < DCP_STATE_DEVICES_MAX + 5; i++)
    {
      g_autofree gchar *token = g_strdup_printf ("device-token-%03d", i);
      device_seen (f, token, T0 + i * SEC);
    }
  /* a file whose name is not its token's hash, and one that holds no
   * token, are not devices */
  g_assert_true (g_file_set_contents (wrong, "another-token\nx\n", -1, NULL));
  g_assert_true (g_file_set_contents (garbage, "a b\n\n", -1, NULL));
  devices = dcp_state_devices (f->state, T0 + DAY, 90 * DAY, TRUE);
  g_assert_cmpuint (devices->len, ==, DCP_STATE_DEVICES_MAX);
  /* the oldest went */
  g_assert_cmpstr (((DcpDevice *) g_ptr_array_index (devices, devices->len - 1))->token, ==,
                   "device-token-005");
  g_clear_pointer (&devices, g_ptr_array_unref);
  devices = dcp_state_devices (f->state, T0 + DAY, 90 * DAY, FALSE);
  g_assert_cmpuint (devices->len, ==, DCP_STATE_DEVICES_MAX);
}

/* ---------------------------------------------------------------- owed */

static int
owe (Fixture *f, gint64 first, guint tries)
{
  g_autoptr (GError) error = NULL;
  DcpOwed o = { first, tries, first + 8 * SEC, 4242 };
  int fd = -2;

  g_assert_true (dcp_state_owe (f->state, TOKEN, &o, &fd, &error));
  g_assert_no_error (error);
  return fd;
}

static void
test_owed_covers (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpTokenStatus st = { 0 };
  DcpOwed o;
  DcpSlot slot;
  int fd;

  (void) data;
  fd = owe (f, T0, 1);
  g_assert_cmpint (fd, >=, 0);
  g_assert_true (dcp_state_owed_read (fd, &o, &error));
  g_assert_cmpint (o.first, ==, T0);
  g_assert_cmpuint (o.tries, ==, 1);
  g_assert_cmpint (o.next, ==, T0 + 8 * SEC);
  g_assert_cmpint (o.pid, ==, 4242);
  /* while it lives, messages are covered, and no second mark is made */
  slot = claim (f, TOKEN, T0 + SEC, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_OWED);
  g_assert_cmpint (owe (f, T0 + SEC, 1), ==, -1);
  dcp_state_get_status (f->state, TOKEN, &st);
  g_assert_true (st.owed && st.owed_live);
  g_assert_cmpuint (st.owed_mark.tries, ==, 1);
  dcp_token_status_clear (&st);
  /* its try is claimed like a push: a message now gets a trailing push */
  g_assert_true (dcp_state_owed_try (f->state, TOKEN, T0 + 8 * SEC, &slot, &error));
  g_assert_cmpint (slot.claimed, ==, T0 + 8 * SEC);
  g_assert_cmpint (claim (f, TOKEN, T0 + 9 * SEC, W, TRUE).kind, ==, DCP_SLOT_TRAILING);
  dcp_state_owed_end (f->state, TOKEN, fd);
  dcp_state_get_status (f->state, TOKEN, &st);
  g_assert_false (st.owed);
  dcp_token_status_clear (&st);
}

static void
test_owed_stale_taken_over (Fixture *f, gconstpointer data)
{
  DcpTokenStatus st = { 0 };
  DcpSlot slot, again;
  int fd;

  (void) data;
  fd = owe (f, T0, 2);
  close (fd); /* its process died */
  slot = claim (f, TOKEN, T0 + 100 * SEC, W, TRUE);
  g_assert_cmpint (slot.kind, ==, DCP_SLOT_PUSH);
  g_assert_cmpint (slot.owed_fd, >=, 0);
  g_assert_cmpint (slot.owed.first, ==, T0);
  g_assert_cmpuint (slot.owed.tries, ==, 2);
  /* the dead process's pid is gone from the mark: no run may signal
   * whatever process has that pid now */
  g_assert_cmpint (slot.owed.pid, ==, -1);
  dcp_state_get_status (f->state, TOKEN, &st);
  g_assert_true (st.owed_live);
  g_assert_cmpint (st.owed_mark.pid, ==, -1);
  dcp_token_status_clear (&st);
  /* the run that took it over holds it: the next one is covered */
  again = claim (f, TOKEN, T0 + 200 * SEC, 0, TRUE);
  g_assert_cmpint (again.kind, ==, DCP_SLOT_OWED);
  dcp_state_owed_end (f->state, TOKEN, slot.owed_fd);
  g_assert_cmpint (claim (f, TOKEN, T0 + 300 * SEC, 0, TRUE).kind, ==, DCP_SLOT_PUSH);
}

static void
test_owed_covers_trailing (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpSlot slot, trailing;
  gboolean owed = TRUE;
  int fd;

  (void) data;
  slot = claim (f, TOKEN, T0, W, TRUE);
  trailing = claim (f, TOKEN, T0 + SEC, W, TRUE);
  g_assert_cmpint (trailing.kind, ==, DCP_SLOT_TRAILING);
  /* the push fails and is owed; the trailing push then defers to it */
  g_assert_true (dcp_state_finish (f->state, TOKEN, &slot, FALSE, T0 + SEC, "error", &error));
  fd = owe (f, T0, 1);
  g_assert_true (dcp_state_trailing_begin (f->state, TOKEN, trailing.pending_fd, T0 + W, &slot,
                                           &owed, &error));
  g_assert_false (owed);
  close (trailing.pending_fd);
  dcp_state_owed_end (f->state, TOKEN, fd);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

#define ADD(path, fn) g_test_add (path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  g_test_add_func ("/state/open/permissions", test_open_permissions);
  ADD ("/state/owed/covers", test_owed_covers);
  ADD ("/state/owed/stale-taken-over", test_owed_stale_taken_over);
  ADD ("/state/owed/covers-trailing", test_owed_covers_trailing);
  g_test_add_func ("/state/open/symlinked-dir", test_open_symlinked_dir);
  ADD ("/state/file-names", test_file_names);
  ADD ("/state/claim/first", test_claim_first);
  ADD ("/state/claim/sequence", test_claim_sequence);
  ADD ("/state/claim/window-boundary", test_claim_window_boundary);
  ADD ("/state/claim/window-zero", test_claim_window_zero);
  ADD ("/state/claim/clock-stepped-back", test_claim_clock_stepped_back);
  ADD ("/state/claim/tokens-independent", test_claim_tokens_independent);
  ADD ("/state/finish/rollback", test_finish_rollback);
  ADD ("/state/finish/rollback-keeps-newer", test_finish_rollback_keeps_newer);
  ADD ("/state/finish/pushed", test_finish_pushed);
  ADD ("/state/finish/late-push-keeps-newer", test_finish_late_push_keeps_newer);
  ADD ("/state/trailing-begin/owed", test_trailing_owed);
  ADD ("/state/trailing-begin/not-owed", test_trailing_not_owed);
  ADD ("/state/trailing-begin/gone", test_trailing_gone);
  ADD ("/state/trailing-begin/owed-after-rollback", test_trailing_owed_after_rollback);
  ADD ("/state/gone", test_gone);
  ADD ("/state/status", test_status);
  ADD ("/state/retry/round-trip", test_retry_round_trip);
  ADD ("/state/retry/many-tokens", test_retry_many_tokens);
  ADD ("/state/peek/never-writes", test_peek_never_writes);
  ADD ("/state/symlink/last", test_symlink_last);
  ADD ("/state/symlink/others", test_symlink_others);
  ADD ("/state/lock/waits", test_lock_waits);
  ADD ("/state/race/fresh", test_race_fresh);
  ADD ("/state/race/inside-window", test_race_inside_window);
  ADD ("/state/race/no-trailing", test_race_no_trailing);
  ADD ("/state/device/remembered", test_device_remembered);
  ADD ("/state/device/expiry", test_device_expiry);
  ADD ("/state/device/forget-and-gone", test_device_forget_and_gone);
  ADD ("/state/device/cap-and-damage", test_device_cap_and_damage);
#undef ADD

  return g_test_run ();
}
