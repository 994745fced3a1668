/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bounded, non-blocking file access (see dcp-file.h).
 *
 * Errors that come from the system (the file is missing, not ours...)
 * are reported in G_FILE_ERROR, so a caller can tell a missing file
 * (G_FILE_ERROR_NOENT) from one it must complain about; a file that is
 * not a regular one, or larger than DCP_FILE_MAX, is DCP_ERROR_INVALID. */
#include "dcp-file.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "dcp-error.h"

static void
set_errno (GError **error, int err, const gchar *name)
{
  g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (err), "%s: %s", name,
               g_strerror (err));
}

static void
set_not_regular (GError **error, const gchar *name)
{
  g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "%s is not a regular file of at most 1 MiB",
               name);
}

/* Open name (relative to dirfd, or AT_FDCWD) with oflags plus O_NONBLOCK:
 * a FIFO without a peer then fails with ENXIO (write) or opens at once
 * (read) instead of blocking, and is refused by the regular-file check
 * that follows, as are devices and directories.  O_NONBLOCK has no effect
 * on a regular file, so it is left set.  st (if not NULL) gets the file's
 * status.  Returns the descriptor, or -1 with error set. */
int
dcp_file_open (int dirfd, const gchar *name, int oflags, DcpFileFlags flags, struct stat *st,
               GError **error)
{
  struct stat local;
  int fd;

  if (st == NULL)
    st = &local;
  oflags |= O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  if (flags & DCP_FILE_NOFOLLOW)
    oflags |= O_NOFOLLOW;
  do
    fd = openat (dirfd, name, oflags, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    {
      set_errno (error, errno, name);
      return -1;
    }
  if (fstat (fd, st) < 0)
    {
      int saved = errno;
      close (fd);
      set_errno (error, saved, name);
      return -1;
    }
  if (!S_ISREG (st->st_mode))
    {
      close (fd);
      set_not_regular (error, name);
      return -1;
    }
  return fd;
}

/* Read fd from its start into *buf (of size + 1 bytes, size from
 * fstat() plus one), on while the file grows, up to one byte past the
 * cap.  Returns how many bytes were read, or -1 with error set. */
static gssize
pread_bounded (int fd, const gchar *name, gchar **buf, gsize size, GError **error)
{
  gsize got = 0;

  for (;;)
    {
      gssize n = pread (fd, *buf + got, size - got, (off_t) got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          set_errno (error, errno, name);
          return -1;
        }
      if (n == 0)
        return (gssize) got;
      got += n;
      if (got > DCP_FILE_MAX)
        {
          set_not_regular (error, name);
          return -1;
        }
      if (got == size)
        {
          /* it grew since fstat(): read on, up to one byte past the cap */
          size = MIN (size * 2, (gsize) DCP_FILE_MAX + 1);
          *buf = g_realloc (*buf, size + 1);
        }
    }
}

/* The whole content of the open regular file fd (from its start), NUL
 * terminated, or NULL with error set when it cannot be read or holds more
 * than DCP_FILE_MAX bytes.  name is only for messages.  The buffer is
 * sized by fstat(); one byte more than the cap is asked for, to notice a
 * file that grew past it since. */
gchar *
dcp_file_read_fd (int fd, const gchar *name, gsize *len, GError **error)
{
  g_autofree gchar *buf = NULL;
  struct stat st;
  gssize got;

  if (fstat (fd, &st) < 0)
    {
      set_errno (error, errno, name);
      return NULL;
    }
  if (!S_ISREG (st.st_mode) || st.st_size > DCP_FILE_MAX)
    {
      set_not_regular (error, name);
      return NULL;
    }
  buf = g_malloc ((gsize) st.st_size + 2);
  got = pread_bounded (fd, name, &buf, (gsize) st.st_size + 1, error);
  if (got < 0)
    return NULL;
  buf[got] = '\0';
  if (len != NULL)
    *len = (gsize) got;
  return g_steal_pointer (&buf);
}

/* dcp_file_open() for reading, then dcp_file_read_fd(). */
gchar *
dcp_file_read (int dirfd, const gchar *name, DcpFileFlags flags, gsize *len, struct stat *st,
               GError **error)
{
  gchar *text;
  int fd = dcp_file_open (dirfd, name, O_RDONLY, flags, st, error);

  if (fd < 0)
    return NULL;
  text = dcp_file_read_fd (fd, name, len, error);
  close (fd);
  return text;
}
