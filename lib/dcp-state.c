/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The state directory (see dcp-state.h for its layout) and what the files
 * in it share (dcp-state-private.h).
 *
 * Why files and flock(): runs are separate processes started by whatever
 * delivers mail, often several at once, and none of them may wait long.
 * flock() locks vanish with their holder, so a run killed with SIGKILL
 * never leaves a stale lock behind; the same trick tells a live trailing
 * push from a dead one.  All names are resolved relative to one directory
 * descriptor with O_NOFOLLOW, so a symlink planted in the cache can neither
 * redirect a write nor be followed.
 *
 * Errors: a failed system call is reported in G_FILE_ERROR (from its
 * errno), as dcp-file.c does; a directory that is not ours to use is
 * DCP_ERROR_STATE, a lock not had in time DCP_ERROR_LOCKED. */
#include "dcp-state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-error.h"
#include "dcp-file.h"
#include "dcp-state-private.h"
#include "dcp-token.h"

gboolean
dcp_state_set_errno_error (GError **error, int err, const gchar *what, const gchar *name)
{
  g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (err), "%s %s: %s", what, name,
               g_strerror (err));
  return FALSE;
}

DcpState *
dcp_state_open (const gchar *cache_root, GError **error)
{
  g_autofree gchar *path = NULL;
  struct stat st;
  DcpState *state;
  int fd;

  g_return_val_if_fail (cache_root != NULL, NULL);

  path = g_build_filename (cache_root, "deltachat-push", NULL);
  if (g_mkdir_with_parents (cache_root, 0700) < 0)
    {
      int saved = errno;
      dcp_state_set_errno_error (error, saved, "cannot create", cache_root);
      return NULL;
    }
  if (mkdir (path, 0700) < 0 && errno != EEXIST)
    {
      int saved = errno;
      dcp_state_set_errno_error (error, saved, "cannot create", path);
      return NULL;
    }
  fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    {
      int saved = errno;
      if (saved == ELOOP || saved == ENOTDIR)
        g_set_error (error, DCP_ERROR, DCP_ERROR_STATE, "%s is not a directory (symlink?)", path);
      else
        dcp_state_set_errno_error (error, saved, "cannot open", path);
      return NULL;
    }
  if (fstat (fd, &st) < 0 || st.st_uid != geteuid ())
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_STATE, "%s is not owned by us", path);
      close (fd);
      return NULL;
    }
  if ((st.st_mode & 077) != 0)
    (void) fchmod (fd, 0700);

  state = g_new0 (DcpState, 1);
  state->dirfd = fd;
  state->path = g_steal_pointer (&path);
  return state;
}

const gchar *
dcp_state_get_path (DcpState *state)
{
  return state->path;
}

void
dcp_state_free (DcpState *state)
{
  if (state == NULL)
    return;
  close (state->dirfd);
  g_free (state->path);
  g_free (state);
}

gchar *
dcp_state_token_file (const gchar *token, const gchar *suffix)
{
  g_autofree gchar *hash = dcp_token_hash (token);
  return g_strconcat (hash, suffix, NULL);
}

/* Never blocks: a FIFO, a device or a directory put in place of one of
 * our files is refused (dcp-file.h). */
int
dcp_state_open_file (DcpState *state, const gchar *name, int flags, GError **error)
{
  g_autoptr (GError) local = NULL;
  int fd = dcp_file_open (state->dirfd, name, flags, DCP_FILE_NOFOLLOW, NULL, &local);

  if (fd < 0)
    {
      const gchar *prefix = local->domain == DCP_ERROR ? "" : "cannot open ";
      g_propagate_prefixed_error (error, g_steal_pointer (&local), "%s", prefix);
    }
  return fd;
}

/* The token's lock, held while its state is read or changed; never across
 * a network request.  Bounded: a run never waits more than
 * DCP_STATE_LOCK_WAIT_US. */
int
dcp_state_lock_token (DcpState *state, const gchar *token, GError **error)
{
  g_autofree gchar *name = dcp_state_token_file (token, ".lock");
  gint64 deadline = g_get_monotonic_time () + DCP_STATE_LOCK_WAIT_US;
  int fd = dcp_state_open_file (state, name, O_RDWR | O_CREAT, error);

  if (fd < 0)
    return -1;
  while (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      if (errno != EWOULDBLOCK && errno != EINTR)
        {
          int saved = errno;
          close (fd);
          dcp_state_set_errno_error (error, saved, "cannot lock", name);
          return -1;
        }
      if (g_get_monotonic_time () > deadline)
        {
          close (fd);
          g_set_error (error, DCP_ERROR, DCP_ERROR_LOCKED, "%s stayed locked", name);
          return -1;
        }
      g_usleep (DCP_STATE_LOCK_POLL_US);
    }
  return fd;
}

void
dcp_state_unlock_token (int fd)
{
  if (fd >= 0)
    close (fd);
}

/* The mtime of name (µs), or -1 when it is not a regular file. */
gint64
dcp_state_mtime (DcpState *state, const gchar *name)
{
  struct stat st;

  if (fstatat (state->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG (st.st_mode))
    return -1;
  return (gint64) st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
}

static void
timespec_of (gint64 t, struct timespec ts[2])
{
  ts[0].tv_sec = ts[1].tv_sec = t / G_USEC_PER_SEC;
  ts[0].tv_nsec = ts[1].tv_nsec = (t % G_USEC_PER_SEC) * 1000;
}

/* Create name (or keep it), with content if not NULL, and set its mtime
 * to t (µs). */
gboolean
dcp_state_touch (DcpState *state, const gchar *name, gint64 t, const gchar *content, GError **error)
{
  struct timespec ts[2];
  int fd = dcp_state_open_file (state, name, O_WRONLY | O_CREAT | (content ? O_TRUNC : 0), error);

  if (fd < 0)
    return FALSE;
  if (content != NULL && write (fd, content, strlen (content)) != (gssize) strlen (content))
    {
      int saved = errno;
      close (fd);
      return dcp_state_set_errno_error (error, saved ? saved : ENOSPC, "cannot write", name);
    }
  timespec_of (t, ts);
  if (futimens (fd, ts) < 0)
    {
      int saved = errno;
      close (fd);
      return dcp_state_set_errno_error (error, saved, "cannot update", name);
    }
  if (close (fd) < 0)
    {
      int saved = errno;
      return dcp_state_set_errno_error (error, saved, "cannot close", name);
    }
  return TRUE;
}

/* Replace name whole (a temporary file renamed over it), so a reader
 * sees the old content or the new, never a part; mtime t (µs) unless
 * t < 0. */
gboolean
dcp_state_replace (DcpState *state, const gchar *name, const gchar *content, gint64 t,
                   GError **error)
{
  g_autofree gchar *tmp = g_strconcat (name, ".tmp", NULL);
  gsize len = strlen (content);
  struct timespec ts[2];
  int fd, saved = 0;

  (void) unlinkat (state->dirfd, tmp, 0);
  fd = dcp_state_open_file (state, tmp, O_WRONLY | O_CREAT | O_EXCL, error);
  if (fd < 0)
    return FALSE;
  timespec_of (t, ts);
  if (write (fd, content, len) != (gssize) len || (t >= 0 && futimens (fd, ts) < 0))
    saved = errno ? errno : ENOSPC;
  if (close (fd) < 0 && saved == 0)
    saved = errno;
  if (saved == 0 && renameat (state->dirfd, tmp, state->dirfd, name) < 0)
    saved = errno;
  if (saved != 0)
    {
      (void) unlinkat (state->dirfd, tmp, 0);
      return dcp_state_set_errno_error (error, saved, "cannot write", tmp);
    }
  return TRUE;
}

/* Remove name; one that is not there is fine. */
gboolean
dcp_state_remove (DcpState *state, const gchar *name, GError **error)
{
  if (unlinkat (state->dirfd, name, 0) < 0 && errno != ENOENT)
    {
      int saved = errno;
      return dcp_state_set_errno_error (error, saved, "cannot remove", name);
    }
  return TRUE;
}

/* The names in the state directory that end in suffix, or NULL with
 * error set when it cannot be listed. */
GPtrArray *
dcp_state_list (DcpState *state, const gchar *suffix, GError **error)
{
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  int fd = dup (state->dirfd);
  DIR *dir = fd >= 0 ? fdopendir (fd) : NULL;
  struct dirent *e;

  if (dir == NULL)
    {
      int saved = errno;
      if (fd >= 0)
        close (fd);
      dcp_state_set_errno_error (error, saved, "cannot list", state->path);
      return NULL;
    }
  rewinddir (dir);
  while ((e = readdir (dir)) != NULL)
    if (g_str_has_suffix (e->d_name, suffix))
      g_ptr_array_add (names, g_strdup (e->d_name));
  closedir (dir);
  return g_steal_pointer (&names);
}
