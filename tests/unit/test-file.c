/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bounded, non-blocking reads: what a regular file gives, and that a
 * FIFO, a device, a directory, a symbolic link (when refused) and a file
 * over the cap are refused at once, never waited for. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "dcp-error.h"
#include "dcp-file.h"

typedef struct {
  gchar *dir;
  int dirfd;
} Fixture;

static void
setup (Fixture *f, gconstpointer data)
{
  (void) data;
  f->dir = g_dir_make_tmp ("dcp-file-XXXXXX", NULL);
  g_assert_nonnull (f->dir);
  f->dirfd = open (f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint (f->dirfd, >=, 0);
}

static void
teardown (Fixture *f, gconstpointer data)
{
  g_autoptr (GDir) dir = g_dir_open (f->dir, 0, NULL);
  const gchar *name;

  (void) data;
  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree gchar *path = g_build_filename (f->dir, name, NULL);
      if (g_remove (path) < 0)
        g_rmdir (path);
    }
  close (f->dirfd);
  g_rmdir (f->dir);
  g_free (f->dir);
}

static void
put (Fixture *f, const gchar *name, const gchar *data, gssize len)
{
  g_autofree gchar *path = g_build_filename (f->dir, name, NULL);
  g_assert_true (g_file_set_contents (path, data, len, NULL));
}

static void
test_regular (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;
  g_autofree gchar *empty = NULL;
  struct stat st;
  gsize len = 0;

  (void) data;
  put (f, "a", "one\ntwo\n", -1);
  text = dcp_file_read (f->dirfd, "a", DCP_FILE_NOFOLLOW, &len, &st, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (text, ==, "one\ntwo\n");
  g_assert_cmpuint (len, ==, 8);
  g_assert_true (S_ISREG (st.st_mode));

  put (f, "empty", "", 0);
  empty = dcp_file_read (f->dirfd, "empty", DCP_FILE_NOFOLLOW, &len, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (empty, ==, "");
  g_assert_cmpuint (len, ==, 0);
}

static void
test_missing (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  (void) data;
  g_assert_null (dcp_file_read (f->dirfd, "none", DCP_FILE_NOFOLLOW, NULL, NULL, &error));
  g_assert_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
}

static void
test_size_cap (Fixture *f, gconstpointer data)
{
  g_autofree gchar *big = g_malloc0 (DCP_FILE_MAX + 1);
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;
  gsize len = 0;

  (void) data;
  put (f, "max", big, DCP_FILE_MAX);
  text = dcp_file_read (f->dirfd, "max", DCP_FILE_NOFOLLOW, &len, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (len, ==, DCP_FILE_MAX);

  put (f, "over", big, DCP_FILE_MAX + 1);
  g_assert_null (dcp_file_read (f->dirfd, "over", DCP_FILE_NOFOLLOW, NULL, NULL, &error));
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
}

/* A FIFO nobody writes: reading would block forever, opening it for
 * writing would block until a reader comes.  Both are refused at once. */
static void
test_fifo (Fixture *f, gconstpointer data)
{
  g_autofree gchar *path = g_build_filename (f->dir, "fifo", NULL);
  gint64 t0 = g_get_monotonic_time ();
  const int modes[] = { O_RDONLY, O_WRONLY, O_RDWR, O_WRONLY | O_TRUNC };

  (void) data;
  g_assert_cmpint (mkfifo (path, 0600), ==, 0);
  g_assert_null (dcp_file_read (f->dirfd, "fifo", DCP_FILE_NOFOLLOW, NULL, NULL, NULL));
  for (gsize i = 0; i < G_N_ELEMENTS (modes); i++)
    {
      g_autoptr (GError) error = NULL;
      g_assert_cmpint (dcp_file_open (f->dirfd, "fifo", modes[i], DCP_FILE_NOFOLLOW, NULL, &error),
                       ==, -1);
      g_assert_nonnull (error);
    }
  /* the test itself would hang otherwise; a bound for a loaded machine */
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 5 * G_USEC_PER_SEC);
}

static void
test_device_and_directory (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  (void) data;
  g_assert_null (dcp_file_read (AT_FDCWD, "/dev/zero", DCP_FILE_FOLLOW, NULL, NULL, &error));
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (dcp_file_read (AT_FDCWD, f->dir, DCP_FILE_FOLLOW, NULL, NULL, &error));
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
}

static void
test_symlink (Fixture *f, gconstpointer data)
{
  g_autofree gchar *link = g_build_filename (f->dir, "link", NULL);
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;

  (void) data;
  put (f, "target", "x", -1);
  g_assert_cmpint (symlink ("target", link), ==, 0);
  g_assert_null (dcp_file_read (f->dirfd, "link", DCP_FILE_NOFOLLOW, NULL, NULL, &error));
  g_assert_error (error, G_FILE_ERROR, G_FILE_ERROR_LOOP);
  text = dcp_file_read (f->dirfd, "link", DCP_FILE_FOLLOW, NULL, NULL, NULL);
  g_assert_cmpstr (text, ==, "x");
}

/* A file that grows between fstat() and the read is read as it is: a
 * /proc file is one, its size is 0 for fstat(). */
static void
test_size_unknown (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree gchar *text = NULL;
  gsize len = 0;

  (void) data;
  text = dcp_file_read (AT_FDCWD, "/proc/self/status", DCP_FILE_FOLLOW, &len, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (len, >, 0);
  g_assert_cmpuint (strlen (text), ==, len);
  g_assert_nonnull (strstr (text, "Pid:"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_set_nonfatal_assertions ();

#define ADD(path, fn) g_test_add (path, Fixture, NULL, setup, fn, teardown)
  ADD ("/file/regular", test_regular);
  ADD ("/file/missing", test_missing);
  ADD ("/file/size-cap", test_size_cap);
  ADD ("/file/fifo", test_fifo);
  ADD ("/file/device-and-directory", test_device_and_directory);
  ADD ("/file/symlink", test_symlink);
  ADD ("/file/size-unknown", test_size_unknown);
#undef ADD
  return g_test_run ();
}
