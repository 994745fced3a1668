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

  DcpState *state = g_new0 (DcpState, 1);
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

static gboolean
set_last (DcpState *state, const gchar *token, gint64 t, GError **error)
{
  g_autofree gchar *name = token_file (token, ".last");

  if (t < 0)
    {
      if (unlinkat (state->dirfd, name, 0) < 0 && errno != ENOENT)
        {
          int saved = errno;
          return set_errno_error (error, saved, "cannot remove", name);
        }
      return TRUE;
    }
  return touch_file (state, name, t, NULL, error);
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

/* A pending mark holds "previous due": the last push when the trailing
 * push was scheduled, and when it is due.  -1 for what cannot be read. */
static void
read_pending (int fd, gint64 *previous, gint64 *due)
{
  gchar buf[64] = { 0 };

  *previous = *due = -1;
  if (pread (fd, buf, sizeof buf - 1, 0) > 0)
    (void) sscanf (buf, "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT, previous, due);
}

/* Does the mark (pending or owed) exist, and its process live?  A mark
 * whose flock() can be taken belongs to a dead process: the next claim
 * that needs one replaces a pending mark, or takes an owed one over. */
static gboolean
mark_live (DcpState *state, const gchar *name, gint64 *due)
{
  int fd = dcp_file_open (state->dirfd, name, O_RDONLY, DCP_FILE_NOFOLLOW, NULL, NULL);
  gboolean live;

  if (fd < 0)
    return FALSE;
  if (due != NULL)
    {
      gint64 previous;
      read_pending (fd, &previous, due);
    }
  live = flock (fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
  close (fd);
  return live;
}

/* Remove name if it still is the file open as fd (not a newer one). */
static void
unlink_if_ours (DcpState *state, const gchar *name, int fd)
{
  struct stat a, b;

  if (fstat (fd, &a) == 0 && fstatat (state->dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0
      && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
    (void) unlinkat (state->dirfd, name, 0);
}

static void
slot_init (DcpSlot *slot, DcpSlotKind kind)
{
  slot->kind = kind;
  slot->previous = -1;
  slot->claimed = -1;
  slot->due = -1;
  slot->pending_fd = -1;
  slot->owed_fd = -1;
  slot->owed = (DcpOwed){ -1, 0, -1, -1 };
}

/* What the token's state on disk says; last only matters with a window. */
static void
read_facts (DcpState *state, const gchar *token, gint64 window, DcpTokenFacts *f)
{
  g_autofree gchar *pending = token_file (token, ".pending");
  g_autofree gchar *owed = token_file (token, ".owed");

  f->gone = is_gone (state, token);
  f->last = window > 0 ? get_last (state, token) : -1;
  f->pending_live = mark_live (state, pending, NULL);
  f->owed_live = mark_live (state, owed, NULL);
}

/* An owed mark whose process is gone (a reboot, kill -9): this run takes
 * it over, so that its push, if it fails again, keeps the first failure's
 * schedule.  Someone faster may have taken it: then it covers us. */
static void
take_stale_owed (DcpState *state, const gchar *token, DcpSlot *slot)
{
  g_autofree gchar *name = token_file (token, ".owed");
  int fd = dcp_file_open (state->dirfd, name, O_RDWR, DCP_FILE_NOFOLLOW, NULL, NULL);

  if (fd < 0)
    return;
  if (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      close (fd);
      slot->kind = DCP_SLOT_OWED;
      return;
    }
  (void) dcp_state_owed_read (fd, &slot->owed, NULL);
  /* the pid is a dead process's: no run may poke it while we push */
  slot->owed.pid = -1;
  (void) dcp_state_owed_write (fd, &slot->owed, NULL);
  slot->owed_fd = fd;
}

static gboolean
write_pending (DcpState *state, const gchar *token, gint64 last, gint64 window, DcpSlot *slot,
               GError **error)
{
  g_autofree gchar *pending = token_file (token, ".pending");
  g_autofree gchar *content = NULL;
  int fd;

  /* a stale mark (its process died) is replaced */
  (void) unlinkat (state->dirfd, pending, 0);
  fd = open_file (state, pending, O_RDWR | O_CREAT | O_EXCL, error);
  if (fd < 0)
    return FALSE;
  content = g_strdup_printf ("%" G_GINT64_FORMAT " %" G_GINT64_FORMAT "\n", last, last + window);
  if (flock (fd, LOCK_EX | LOCK_NB) < 0
      || write (fd, content, strlen (content)) != (gssize) strlen (content))
    {
      int saved = errno;
      close (fd);
      (void) unlinkat (state->dirfd, pending, 0);
      return set_errno_error (error, saved ? saved : ENOSPC, "cannot write", pending);
    }
  slot->due = last + window;
  slot->pending_fd = fd;
  return TRUE;
}

static gboolean
claim_locked (DcpState *state, const gchar *token, gint64 now, gint64 window, gboolean trailing,
              DcpSlot *slot, GError **error)
{
  DcpTokenFacts f;

  read_facts (state, token, window, &f);
  slot_init (slot, dcp_plan_token (&f, now, window, trailing));
  slot->previous = f.last;
  if (slot->kind == DCP_SLOT_PUSH)
    take_stale_owed (state, token, slot);
  if (slot->kind == DCP_SLOT_PUSH && window > 0)
    {
      if (!set_last (state, token, now, error))
        return FALSE;
      slot->claimed = now;
    }
  if (slot->kind != DCP_SLOT_TRAILING)
    return TRUE;
  return write_pending (state, token, f.last, window, slot, error);
}

void
dcp_state_peek (DcpState *state, const gchar *token, gint64 now, gint64 window, gboolean trailing,
                DcpSlot *slot)
{
  DcpTokenFacts f;

  g_return_if_fail (state != NULL && token != NULL && slot != NULL);
  read_facts (state, token, window, &f);
  slot_init (slot, dcp_plan_token (&f, now, window, trailing));
  slot->previous = f.last;
  if (slot->kind == DCP_SLOT_TRAILING)
    slot->due = f.last + window;
}

gboolean
dcp_state_claim (DcpState *state, const gchar *token, gint64 now, gint64 window, gboolean trailing,
                 DcpSlot *slot, GError **error)
{
  int lock;
  gboolean ok;

  g_return_val_if_fail (state != NULL && token != NULL && slot != NULL, FALSE);
  slot_init (slot, DCP_SLOT_PUSH);
  lock = lock_token (state, token, error);
  if (lock < 0)
    return FALSE;
  ok = claim_locked (state, token, now, window, trailing, slot, error);
  unlock_token (lock);
  if (!ok && slot->owed_fd >= 0)
    {
      close (slot->owed_fd); /* a mark taken over, then no claim */
      slot->owed_fd = -1;
    }
  return ok;
}

gboolean
dcp_state_finish (DcpState *state, const gchar *token, const DcpSlot *slot, gboolean pushed,
                  gint64 now, const gchar *result, GError **error)
{
  g_autofree gchar *rname = token_file (token, ".result");
  g_autofree gchar *content = NULL;
  gboolean ok = TRUE;
  int lock = lock_token (state, token, error);

  if (lock < 0)
    return FALSE;
  if (pushed)
    {
      /* the window runs from the claim, so a trailing push can tell
       * whether a push started after its message; only forwards, so a
       * slow push never undoes a newer one */
      gint64 t = slot->claimed >= 0 ? slot->claimed : now;
      if (t > get_last (state, token))
        ok = set_last (state, token, t, error);
    }
  else if (slot->claimed >= 0 && get_last (state, token) == slot->claimed)
    ok = set_last (state, token, slot->previous, error); /* roll our claim back */
  if (ok && result != NULL)
    {
      content = g_strdup_printf ("%s\n", result);
      ok = touch_file (state, rname, now, content, error);
    }
  unlock_token (lock);
  return ok;
}

gboolean
dcp_state_trailing_begin (DcpState *state, const gchar *token, int pending_fd, gint64 now,
                          DcpSlot *slot, gboolean *owed, GError **error)
{
  g_autofree gchar *pending = token_file (token, ".pending");
  g_autofree gchar *owed_name = token_file (token, ".owed");
  gint64 previous, due;
  gboolean ok = TRUE;
  int lock;

  slot_init (slot, DCP_SLOT_PUSH);
  *owed = FALSE;
  lock = lock_token (state, token, error);
  if (lock < 0)
    return FALSE;
  read_pending (pending_fd, &previous, &due);

  /* owed unless a push started since the pending mark was made (a failed
   * push rolls its claim back, possibly to no last push at all), or an
   * owed push covers the token */
  if (!is_gone (state, token) && get_last (state, token) <= previous
      && !mark_live (state, owed_name, NULL))
    {
      ok = set_last (state, token, now, error);
      if (ok)
        {
          slot->previous = previous;
          slot->claimed = now;
          *owed = TRUE;
        }
    }
  /* From here on, a new message inside the window must schedule a new
   * trailing push: this one may already be on the wire. */
  unlink_if_ours (state, pending, pending_fd);
  unlock_token (lock);
  return ok;
}

/* An owed mark: "first tries next pid". */
gboolean
dcp_state_owed_read (int fd, DcpOwed *owed, GError **error)
{
  gchar buf[128] = { 0 };
  gint64 tries = 0;

  *owed = (DcpOwed){ -1, 0, -1, -1 };
  if (pread (fd, buf, sizeof buf - 1, 0) <= 0
      || sscanf (buf,
                 "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT,
                 &owed->first, &tries, &owed->next, &owed->pid)
             < 2
      || tries < 0 || tries > G_MAXUINT)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_STATE, "unreadable owed mark");
      return FALSE;
    }
  owed->tries = (guint) tries;
  return TRUE;
}

gboolean
dcp_state_owed_write (int fd, const DcpOwed *owed, GError **error)
{
  g_autofree gchar *content
      = g_strdup_printf ("%" G_GINT64_FORMAT " %u %" G_GINT64_FORMAT " %" G_GINT64_FORMAT "\n",
                         owed->first, owed->tries, owed->next, owed->pid);
  gsize len = strlen (content);

  if (pwrite (fd, content, len, 0) != (gssize) len || ftruncate (fd, len) < 0)
    {
      int saved = errno ? errno : ENOSPC;
      return set_errno_error (error, saved, "cannot write", "the owed mark");
    }
  return TRUE;
}

static int
new_owed_mark (DcpState *state, const gchar *name, const DcpOwed *owed, GError **error)
{
  int fd;

  (void) unlinkat (state->dirfd, name, 0);
  fd = open_file (state, name, O_RDWR | O_CREAT | O_EXCL, error);
  if (fd < 0)
    return -1;
  if (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      int saved = errno;
      set_errno_error (error, saved, "cannot lock", name);
    }
  else if (dcp_state_owed_write (fd, owed, error))
    return fd;
  close (fd);
  (void) unlinkat (state->dirfd, name, 0);
  return -1;
}

gboolean
dcp_state_owe (DcpState *state, const gchar *token, const DcpOwed *owed, int *fd, GError **error)
{
  g_autofree gchar *name = token_file (token, ".owed");
  gboolean ok = TRUE;
  int lock;

  *fd = -1;
  lock = lock_token (state, token, error);
  if (lock < 0)
    return FALSE;
  /* a live mark covers the token: *fd stays -1 */
  if (!mark_live (state, name, NULL))
    {
      *fd = new_owed_mark (state, name, owed, error);
      ok = *fd >= 0;
    }
  unlock_token (lock);
  return ok;
}

/* Claim one try of an owed push, as dcp_state_claim() claims a push:
 * inside the window that starts now, new messages get a trailing push. */
gboolean
dcp_state_owed_try (DcpState *state, const gchar *token, gint64 now, DcpSlot *slot, GError **error)
{
  gboolean ok = TRUE;
  int lock;

  slot_init (slot, DCP_SLOT_PUSH);
  lock = lock_token (state, token, error);
  if (lock < 0)
    return FALSE;
  if (is_gone (state, token))
    slot->kind = DCP_SLOT_GONE;
  else
    {
      slot->previous = get_last (state, token);
      ok = set_last (state, token, now, error);
      slot->claimed = ok ? now : -1;
    }
  unlock_token (lock);
  return ok;
}

void
dcp_state_owed_end (DcpState *state, const gchar *token, int fd)
{
  g_autofree gchar *name = token_file (token, ".owed");
  int lock = lock_token (state, token, NULL);

  unlink_if_ours (state, name, fd);
  unlock_token (lock);
  close (fd);
}

gboolean
dcp_state_set_gone (DcpState *state, const gchar *token, gboolean gone, gint64 now, GError **error)
{
  g_autofree gchar *name = token_file (token, ".gone");
  gboolean ok;
  int lock = lock_token (state, token, error);

  if (lock < 0)
    return FALSE;
  if (gone)
    ok = touch_file (state, name, now, "410\n", error);
  else if (unlinkat (state->dirfd, name, 0) < 0 && errno != ENOENT)
    {
      int saved = errno;
      ok = set_errno_error (error, saved, "cannot remove", name);
    }
  else
    ok = TRUE;
  unlock_token (lock);
  return ok;
}

void
dcp_token_status_clear (DcpTokenStatus *status)
{
  g_clear_pointer (&status->result, g_free);
}

void
dcp_state_get_status (DcpState *state, const gchar *token, DcpTokenStatus *status)
{
  g_autofree gchar *rname = token_file (token, ".result");
  g_autofree gchar *pname = token_file (token, ".pending");
  g_autofree gchar *gname = token_file (token, ".gone");
  g_autofree gchar *oname = token_file (token, ".owed");
  gchar *result;
  int fd;

  status->last = get_last (state, token);
  status->result_time = stat_mtime (state, rname);
  result = dcp_file_read (state->dirfd, rname, DCP_FILE_NOFOLLOW, NULL, NULL, NULL);
  status->result = result != NULL && *g_strstrip (result) != '\0' ? result : NULL;
  if (status->result == NULL)
    g_free (result);
  status->pending = stat_mtime (state, pname) >= 0;
  status->pending_live = status->pending && mark_live (state, pname, &status->due);
  if (!status->pending)
    status->due = -1;
  status->gone = stat_mtime (state, gname);
  status->owed_live = mark_live (state, oname, NULL);
  fd = dcp_file_open (state->dirfd, oname, O_RDONLY, DCP_FILE_NOFOLLOW, NULL, NULL);
  status->owed = fd >= 0;
  status->owed_mark = (DcpOwed){ -1, 0, -1, -1 };
  if (fd >= 0)
    {
      (void) dcp_state_owed_read (fd, &status->owed_mark, NULL);
      close (fd);
    }
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
  int fd = dup (state->dirfd);
  DIR *dir = fd >= 0 ? fdopendir (fd) : NULL;
  struct dirent *e;

  if (dir == NULL)
    {
      if (fd >= 0)
        close (fd);
      return devices;
    }
  rewinddir (dir);
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
