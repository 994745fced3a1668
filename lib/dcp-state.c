/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-token state on disk (see dcp-state.h for the layout).
 *
 * Why files and flock(): runs are separate processes started by whatever
 * delivers mail, often several at once, and none of them may wait long.
 * flock() locks vanish with their holder, so a run killed with SIGKILL
 * never leaves a stale lock behind; the same trick tells a live trailing
 * push from a dead one.  All names are resolved relative to one directory
 * descriptor with O_NOFOLLOW, so a symlink planted in the cache can neither
 * redirect a write nor be followed. */
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
#include "dcp-token.h"

#define LOCK_WAIT_US (2 * G_USEC_PER_SEC)
#define LOCK_POLL_US 2000
#define OWN_WAIT_US (G_USEC_PER_SEC / 5)

struct _DcpState {
  int dirfd;
  gchar *path;
};

static gboolean
set_errno_error (GError **error, int err, const gchar *what, const gchar *name)
{
  g_set_error (error, DCP_ERROR, DCP_ERROR_STATE, "%s %s: %s", what, name, g_strerror (err));
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
      set_errno_error (error, saved, "cannot create", cache_root);
      return NULL;
    }
  if (mkdir (path, 0700) < 0 && errno != EEXIST)
    {
      int saved = errno;
      set_errno_error (error, saved, "cannot create", path);
      return NULL;
    }
  fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    {
      int saved = errno;
      if (saved == ELOOP || saved == ENOTDIR)
        g_set_error (error, DCP_ERROR, DCP_ERROR_STATE, "%s is not a directory (symlink?)", path);
      else
        set_errno_error (error, saved, "cannot open", path);
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

static gchar *
token_file (const gchar *token, const gchar *suffix)
{
  g_autofree gchar *hash = dcp_token_hash (token);
  return g_strconcat (hash, suffix, NULL);
}

/* Never blocks: a FIFO, a device or a directory put in place of one of
 * our files is refused (dcp-file.h). */
static int
open_file (DcpState *state, const gchar *name, int flags, GError **error)
{
  g_autoptr (GError) local = NULL;
  int fd = dcp_file_open (state->dirfd, name, flags, DCP_FILE_NOFOLLOW, NULL, &local);

  if (fd < 0)
    g_set_error (error, DCP_ERROR, DCP_ERROR_STATE, "%s%s",
                 local->domain == DCP_ERROR ? "" : "cannot open ", local->message);
  return fd;
}

/* The token's lock, held while its state is read or changed; never across
 * a network request.  Bounded: a run never waits more than LOCK_WAIT_US. */
static int
lock_token (DcpState *state, const gchar *token, GError **error)
{
  g_autofree gchar *name = token_file (token, ".lock");
  gint64 deadline = g_get_monotonic_time () + LOCK_WAIT_US;
  int fd = open_file (state, name, O_RDWR | O_CREAT, error);

  if (fd < 0)
    return -1;
  while (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      if (errno != EWOULDBLOCK && errno != EINTR)
        {
          int saved = errno;
          close (fd);
          set_errno_error (error, saved, "cannot lock", name);
          return -1;
        }
      if (g_get_monotonic_time () > deadline)
        {
          close (fd);
          g_set_error (error, DCP_ERROR, DCP_ERROR_LOCKED, "%s stayed locked", name);
          return -1;
        }
      g_usleep (LOCK_POLL_US);
    }
  return fd;
}

static void
unlock_token (int fd)
{
  if (fd >= 0)
    close (fd);
}

static gint64
stat_mtime (DcpState *state, const gchar *name)
{
  struct stat st;

  if (fstatat (state->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG (st.st_mode))
    return -1;
  return (gint64) st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
}

static gboolean
touch_file (DcpState *state, const gchar *name, gint64 t, const gchar *content, GError **error)
{
  struct timespec ts[2];
  int fd = open_file (state, name, O_WRONLY | O_CREAT | (content ? O_TRUNC : 0), error);

  if (fd < 0)
    return FALSE;
  if (content != NULL && write (fd, content, strlen (content)) != (gssize) strlen (content))
    {
      int saved = errno;
      close (fd);
      return set_errno_error (error, saved ? saved : ENOSPC, "cannot write", name);
    }
  ts[0].tv_sec = ts[1].tv_sec = t / G_USEC_PER_SEC;
  ts[0].tv_nsec = ts[1].tv_nsec = (t % G_USEC_PER_SEC) * 1000;
  if (futimens (fd, ts) < 0)
    {
      int saved = errno;
      close (fd);
      return set_errno_error (error, saved, "cannot update", name);
    }
  if (close (fd) < 0)
    {
      int saved = errno;
      return set_errno_error (error, saved, "cannot close", name);
    }
  return TRUE;
}

static gint64
get_last (DcpState *state, const gchar *token)
{
  g_autofree gchar *name = token_file (token, ".last");
  return stat_mtime (state, name);
}

static gboolean
is_gone (DcpState *state, const gchar *token)
{
  g_autofree gchar *name = token_file (token, ".gone");
  return stat_mtime (state, name) >= 0;
}

static gboolean dcp_state_set_gone_locked (DcpState *state, const gchar *token, gboolean gone,
                                           gint64 now, GError **error);

/* A mark: the machine's state but the bucket, the last push and the gone
 * mark (mtimes of their own), the owner's pid, then the token itself, so
 * that --resume can push it:
 *   "wanted flight flight_end owned due owed_first tries pid\ntoken\n" */
#define MARK_MAX (DCP_TOKEN_MAX + 256)

static gboolean
parse_mark (const gchar *buf, DcpTokenHold *h, gchar **token)
{
  gint64 v[8];
  const gchar *nl = strchr (buf, '\n');

  if (nl == NULL
      || sscanf (buf,
                 "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT
                 " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT
                 " %" G_GINT64_FORMAT,
                 &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7])
             != 8
      || v[6] < 0 || v[6] > G_MAXUINT)
    return FALSE;
  h->m.wanted = v[0];
  h->m.flight = v[1];
  h->m.flight_end = v[2];
  h->m.owned = v[3] != 0;
  h->m.due = v[4];
  h->m.owed_first = v[5];
  h->m.tries = (guint) v[6];
  h->pid = v[7];
  if (token != NULL)
    {
      const gchar *end = strchr (nl + 1, '\n');
      *token = end ? g_strndup (nl + 1, end - nl - 1) : NULL;
    }
  return TRUE;
}

static gchar *
format_mark (const DcpTokenHold *h, const gchar *token)
{
  return g_strdup_printf ("%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT
                          " %d %" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %u %" G_GINT64_FORMAT
                          "\n%s\n",
                          h->m.wanted, h->m.flight, h->m.flight_end, h->m.owned ? 1 : 0, h->m.due,
                          h->m.owed_first, h->m.tries, h->pid, token);
}

static gboolean
read_mark_fd (int fd, DcpTokenHold *h, gchar **token)
{
  g_autofree gchar *buf = g_malloc0 (MARK_MAX + 1);
  gssize n = pread (fd, buf, MARK_MAX, 0);

  return n > 0 && parse_mark (buf, h, token);
}

/* Is the mark flock()ed by someone (its owner, or a run starting one)? */
static gboolean
mark_locked (int fd)
{
  if (flock (fd, LOCK_SH | LOCK_NB) == 0)
    {
      (void) flock (fd, LOCK_UN);
      return FALSE;
    }
  return errno == EWOULDBLOCK;
}

/* Read the token's state into h (the token's lock held, or not: peek). */
static void
read_hold (DcpState *state, const gchar *token, DcpTokenHold *h, gboolean keep_mark)
{
  g_autofree gchar *full = token_file (token, ".full");
  g_autofree gchar *mark = token_file (token, ".due");
  int fd;

  h->m = (DcpMachine) DCP_MACHINE_INIT;
  h->pid = -1;
  h->mark = -1;
  h->owner_live = FALSE;
  h->m.full_at = stat_mtime (state, full);
  h->m.last = get_last (state, token);
  h->m.gone = is_gone (state, token);
  fd = dcp_file_open (state->dirfd, mark, O_RDWR, DCP_FILE_NOFOLLOW, NULL, NULL);
  if (fd < 0)
    return;
  if (!read_mark_fd (fd, h, NULL))
    {
      /* damaged (a crash mid-write): what it held is unknown, so a push
       * is wanted now; the machine decides who makes it */
      h->m = (DcpMachine) DCP_MACHINE_INIT;
      h->m.full_at = stat_mtime (state, full);
      h->m.last = get_last (state, token);
      h->m.gone = is_gone (state, token);
      h->m.wanted = 0;
      h->pid = -1;
    }
  h->owner_live = mark_locked (fd);
  if (keep_mark)
    h->mark = fd;
  else
    close (fd);
}

gboolean
dcp_state_hold (DcpState *state, const gchar *token, DcpTokenHold *h, GError **error)
{
  g_return_val_if_fail (state != NULL && token != NULL && h != NULL, FALSE);
  h->lock = lock_token (state, token, error);
  h->mark = -1;
  if (h->lock < 0)
    return FALSE;
  read_hold (state, token, h, TRUE);
  return TRUE;
}

void
dcp_state_peek (DcpState *state, const gchar *token, DcpTokenHold *h)
{
  g_return_if_fail (state != NULL && token != NULL && h != NULL);
  h->lock = -1;
  read_hold (state, token, h, FALSE);
}

static gboolean
set_mtime_file (DcpState *state, const gchar *token, const gchar *suffix, gint64 t, gint64 was,
                GError **error)
{
  g_autofree gchar *name = token_file (token, suffix);

  if (t == was)
    return TRUE;
  if (t < 0)
    {
      (void) unlinkat (state->dirfd, name, 0);
      return TRUE;
    }
  return touch_file (state, name, t, NULL, error);
}

/* Nothing left that anyone acts on: the mark goes. */
static gboolean
mark_empty (const DcpMachine *m)
{
  return m->wanted < 0 && !m->owned && m->owed_first < 0 && m->flight < 0;
}

gboolean
dcp_state_store (DcpState *state, const gchar *token, DcpTokenHold *h, GError **error)
{
  g_autofree gchar *mark = token_file (token, ".due");
  g_autofree gchar *content = NULL;
  DcpTokenHold was;
  gsize len;

  g_return_val_if_fail (state != NULL && h != NULL && h->lock >= 0, FALSE);
  read_hold (state, token, &was, FALSE);
  if (!set_mtime_file (state, token, ".full", h->m.full_at, was.m.full_at, error)
      || !set_mtime_file (state, token, ".last", h->m.last, was.m.last, error))
    return FALSE;
  if (h->m.gone && !was.m.gone && !dcp_state_set_gone_locked (state, token, TRUE, h->m.last, error))
    return FALSE;
  if (mark_empty (&h->m))
    {
      (void) unlinkat (state->dirfd, mark, 0);
      return TRUE;
    }
  if (h->mark < 0)
    {
      h->mark = open_file (state, mark, O_RDWR | O_CREAT, error);
      if (h->mark < 0)
        return FALSE;
    }
  /* in place, so an owner's flock() stays on the file others open */
  content = format_mark (h, token);
  len = strlen (content);
  if (pwrite (h->mark, content, len, 0) != (gssize) len || ftruncate (h->mark, len) < 0)
    {
      int saved = errno ? errno : ENOSPC;
      return set_errno_error (error, saved, "cannot write", mark);
    }
  return TRUE;
}

int
dcp_state_own (DcpState *state, const gchar *token, DcpTokenHold *h, GError **error)
{
  g_autofree gchar *mark = token_file (token, ".due");
  int fd;

  g_return_val_if_fail (h->lock >= 0, -1);
  if (!dcp_state_store (state, token, h, error))
    return -1;
  fd = open_file (state, mark, O_RDWR, error);
  if (fd < 0)
    return -1;
  /* Under the token's lock only a probe (--status, a peek: a shared lock
   * taken and dropped at once) can hold the mark: wait it out, briefly. */
  for (gint64 until = g_get_monotonic_time () + OWN_WAIT_US;;)
    {
      int saved;

      if (flock (fd, LOCK_EX | LOCK_NB) == 0)
        return fd;
      saved = errno;
      if (saved != EWOULDBLOCK || g_get_monotonic_time () >= until)
        {
          close (fd);
          set_errno_error (error, saved, "cannot lock", mark);
          return -1;
        }
      g_usleep (LOCK_POLL_US);
    }
}

void
dcp_state_release (DcpTokenHold *h)
{
  if (h->mark >= 0)
    close (h->mark);
  h->mark = -1;
  unlock_token (h->lock);
  h->lock = -1;
}

gboolean
dcp_state_record (DcpState *state, const gchar *token, gint64 now, const gchar *result,
                  GError **error)
{
  g_autofree gchar *name = token_file (token, ".result");
  g_autofree gchar *content = g_strdup_printf ("%s\n", result);

  return touch_file (state, name, now, content, error);
}

/* The owner's mark, re-made when the cache was removed under it: FALSE
 * when a newer mark has a live owner of its own (it was poked). */
gboolean
dcp_state_mark_missing (int fd)
{
  struct stat st;
  return fstat (fd, &st) < 0 || st.st_nlink == 0;
}

/* The state directory's entries, from the start (NULL: none to be had). */
static DIR *
open_listing (DcpState *state)
{
  int fd = dup (state->dirfd);
  DIR *dir = fd >= 0 ? fdopendir (fd) : NULL;

  if (dir == NULL && fd >= 0)
    close (fd);
  if (dir != NULL)
    rewinddir (dir);
  return dir;
}

/* The tokens of every mark in the cache. */
GPtrArray *
dcp_state_marked_tokens (DcpState *state)
{
  GPtrArray *tokens = g_ptr_array_new_with_free_func (g_free);
  DIR *dir = open_listing (state);
  struct dirent *e;

  if (dir == NULL)
    return tokens;
  while ((e = readdir (dir)) != NULL)
    {
      g_autofree gchar *token = NULL;
      g_autofree gchar *expected = NULL;
      DcpTokenHold h;
      int mfd;

      if (!g_str_has_suffix (e->d_name, ".due"))
        continue;
      mfd = dcp_file_open (state->dirfd, e->d_name, O_RDONLY, DCP_FILE_NOFOLLOW, NULL, NULL);
      if (mfd < 0)
        continue;
      if (read_mark_fd (mfd, &h, &token) && token != NULL
          && dcp_token_validate (token, strlen (token), NULL)
          && g_str_equal ((expected = token_file (token, ".due")), e->d_name))
        g_ptr_array_add (tokens, g_steal_pointer (&token));
      close (mfd);
    }
  closedir (dir);
  return tokens;
}

static gboolean
dcp_state_set_gone_locked (DcpState *state, const gchar *token, gboolean gone, gint64 now,
                           GError **error)
{
  g_autofree gchar *name = token_file (token, ".gone");

  if (gone)
    return touch_file (state, name, MAX (now, 0), "410\n", error);
  if (unlinkat (state->dirfd, name, 0) < 0 && errno != ENOENT)
    {
      int saved = errno;
      return set_errno_error (error, saved, "cannot remove", name);
    }
  return TRUE;
}

gboolean
dcp_state_set_gone (DcpState *state, const gchar *token, gboolean gone, gint64 now, GError **error)
{
  gboolean ok;
  int lock = lock_token (state, token, error);

  if (lock < 0)
    return FALSE;
  ok = dcp_state_set_gone_locked (state, token, gone, now, error);
  unlock_token (lock);
  return ok;
}

void
dcp_state_result (DcpState *state, const gchar *token, gint64 *when, gchar **result)
{
  g_autofree gchar *rname = token_file (token, ".result");
  gchar *text;

  *when = stat_mtime (state, rname);
  text = dcp_file_read (state->dirfd, rname, DCP_FILE_NOFOLLOW, NULL, NULL, NULL);
  *result = text != NULL && *g_strstrip (text) != '\0' ? text : NULL;
  if (*result == NULL)
    g_free (text);
}

gint64
dcp_state_gone_since (DcpState *state, const gchar *token)
{
  g_autofree gchar *name = token_file (token, ".gone");
  return stat_mtime (state, name);
}

/* Replace name whole (a temporary file renamed over it), so a reader
 * sees the old content or the new, never a part; mtime t unless t < 0. */
static gboolean
write_replace (DcpState *state, const gchar *name, const gchar *content, gint64 t, GError **error)
{
  g_autofree gchar *tmp = g_strconcat (name, ".tmp", NULL);
  gsize len = strlen (content);
  struct timespec ts[2];
  int fd, saved = 0;

  (void) unlinkat (state->dirfd, tmp, 0);
  fd = open_file (state, tmp, O_WRONLY | O_CREAT | O_EXCL, error);
  if (fd < 0)
    return FALSE;
  ts[0].tv_sec = ts[1].tv_sec = t / G_USEC_PER_SEC;
  ts[0].tv_nsec = ts[1].tv_nsec = (t % G_USEC_PER_SEC) * 1000;
  if (write (fd, content, len) != (gssize) len || (t >= 0 && futimens (fd, ts) < 0))
    saved = errno ? errno : ENOSPC;
  if (close (fd) < 0 && saved == 0)
    saved = errno;
  if (saved == 0 && renameat (state->dirfd, tmp, state->dirfd, name) < 0)
    saved = errno;
  if (saved != 0)
    {
      (void) unlinkat (state->dirfd, tmp, 0);
      return set_errno_error (error, saved, "cannot write", tmp);
    }
  return TRUE;
}

/* Retry records, one per message that failed: "failures first\n" followed
 * by the hashes of the tokens already notified for it. */
static gchar *
retry_name (const gchar *key)
{
  return g_strconcat ("retry-", key, NULL);
}

void
dcp_retry_clear (DcpRetry *retry)
{
  g_clear_pointer (&retry->done, g_ptr_array_unref);
}

gboolean
dcp_state_retry_load (DcpState *state, const gchar *key, DcpRetry *retry, GError **error)
{
  g_autofree gchar *name = retry_name (key);
  g_autofree gchar *text = NULL;
  g_autoptr (GError) local = NULL;
  g_auto (GStrv) lines = NULL;

  retry->failures = 0;
  retry->first = -1;
  if (retry->done == NULL)
    retry->done = g_ptr_array_new_with_free_func (g_free);
  text = dcp_file_read (state->dirfd, name, DCP_FILE_NOFOLLOW, NULL, NULL, &local);
  if (text == NULL)
    {
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return TRUE;
      g_set_error (error, DCP_ERROR, DCP_ERROR_STATE, "%s", local->message);
      return FALSE;
    }
  lines = g_strsplit (text, "\n", -1);
  if (lines[0] != NULL)
    {
      guint failures = 0;
      gint64 first = -1;
      if (sscanf (lines[0], "%u %" G_GINT64_FORMAT, &failures, &first) == 2)
        {
          retry->failures = failures;
          retry->first = first;
        }
      for (guint i = 1; lines[i] != NULL; i++)
        if (*lines[i] != '\0')
          g_ptr_array_add (retry->done, g_strdup (lines[i]));
    }
  return TRUE;
}

gboolean
dcp_state_retry_save (DcpState *state, const gchar *key, const DcpRetry *retry, GError **error)
{
  g_autofree gchar *name = retry_name (key);
  g_autoptr (GString) s = g_string_new (NULL);

  g_string_printf (s, "%u %" G_GINT64_FORMAT "\n", retry->failures, retry->first);
  for (guint i = 0; retry->done != NULL && i < retry->done->len; i++)
    g_string_append_printf (s, "%s\n", (const gchar *) g_ptr_array_index (retry->done, i));
  return write_replace (state, name, s->str, -1, error);
}

void
dcp_state_retry_clear (DcpState *state, const gchar *key)
{
  g_autofree gchar *name = retry_name (key);
  (void) unlinkat (state->dirfd, name, 0);
}

/* Remembered devices.  A stock Dovecot keeps only the token written last,
 * so each one seen is kept here ("<hash>.device": the token, then its
 * source; mtime = last seen) and pushed until the proxy answers 410 or it
 * has not been seen for max_age. */
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
dcp_state_device_seen (DcpState *state, const gchar *token, const gchar *source, gint64 now,
                       gboolean *gone, GError **error)
{
  g_autofree gchar *name = token_file (token, DEVICE_SUFFIX);
  g_autofree gchar *content = g_strdup_printf ("%s\n%s\n", token, source);
  gboolean ok = TRUE;
  int lock = lock_token (state, token, error);

  if (lock < 0)
    return FALSE;
  /* a token the proxy called gone stays forgotten while Dovecot still
   * holds it (the device has not uploaded a new one yet) */
  *gone = is_gone (state, token);
  if (!*gone)
    ok = write_replace (state, name, content, now, error);
  unlock_token (lock);
  return ok;
}

gboolean
dcp_state_device_forget (DcpState *state, const gchar *token, GError **error)
{
  g_autofree gchar *name = token_file (token, DEVICE_SUFFIX);

  if (unlinkat (state->dirfd, name, 0) < 0 && errno != ENOENT)
    {
      int saved = errno;
      return set_errno_error (error, saved, "cannot remove", name);
    }
  return TRUE;
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
  expected = token_file (lines[0], DEVICE_SUFFIX);
  if (strcmp (expected, name) != 0)
    return NULL;
  device = g_new0 (DcpDevice, 1);
  device->token = g_strdup (lines[0]);
  device->source = g_strdup (lines[1]);
  device->seen = stat_mtime (state, name);
  return device;
}

static gint
device_newer_first (gconstpointer a, gconstpointer b)
{
  const DcpDevice *x = *(DcpDevice *const *) a, *y = *(DcpDevice *const *) b;
  return x->seen > y->seen ? -1 : x->seen < y->seen ? 1 : strcmp (x->token, y->token);
}

/* The remembered devices, last seen first.  With expire, those not seen
 * for max_age and those beyond DCP_STATE_DEVICES_MAX are forgotten. */
GPtrArray *
dcp_state_devices (DcpState *state, gint64 now, gint64 max_age, gboolean expire)
{
  GPtrArray *devices = g_ptr_array_new_with_free_func ((GDestroyNotify) dcp_device_free);
  DIR *dir = open_listing (state);
  struct dirent *e;

  if (dir == NULL)
    return devices;
  while ((e = readdir (dir)) != NULL)
    {
      DcpDevice *d;
      if (!g_str_has_suffix (e->d_name, DEVICE_SUFFIX)
          || (d = read_device (state, e->d_name)) == NULL)
        continue;
      if (expire && now - d->seen > max_age)
        {
          (void) unlinkat (state->dirfd, e->d_name, 0);
          dcp_device_free (d);
          continue;
        }
      g_ptr_array_add (devices, d);
    }
  closedir (dir);
  g_ptr_array_sort (devices, device_newer_first);
  while (expire && devices->len > DCP_STATE_DEVICES_MAX)
    {
      DcpDevice *d = g_ptr_array_index (devices, devices->len - 1);
      (void) dcp_state_device_forget (state, d->token, NULL);
      g_ptr_array_remove_index (devices, devices->len - 1);
    }
  return devices;
}
