/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A token's marks (see dcp-mark.h; the layout is in dcp-state.h).
 *
 * The bucket, the last push and the gone mark are mtimes of files of
 * their own; the rest of the machine's state is the .due mark, written in
 * place so that its owner's flock() stays on the file others open. */
#include "dcp-mark.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-file.h"
#include "dcp-state-private.h"
#include "dcp-token.h"

/* how long dcp_mark_own() waits out a probe holding the mark */
#define OWN_WAIT_US (G_USEC_PER_SEC / 5)

static gint64
token_mtime (DcpState *state, const gchar *token, const gchar *suffix)
{
  g_autofree gchar *name = dcp_state_token_file (token, suffix);
  return dcp_state_mtime (state, name);
}

/* A mark: the machine's state but the bucket, the last push and the gone
 * mark (mtimes of their own), the owner's pid, then the token itself, so
 * that --resume can push it:
 *   "wanted flight flight_end owned due owed_first tries pid\ntoken\n" */
#define MARK_MAX (DCP_TOKEN_MAX + 256)

static gboolean
parse_mark (const gchar *buf, DcpMarkHold *h, gchar **token)
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
format_mark (const DcpMarkHold *h, const gchar *token)
{
  return g_strdup_printf ("%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %" G_GINT64_FORMAT
                          " %d %" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %u %" G_GINT64_FORMAT
                          "\n%s\n",
                          h->m.wanted, h->m.flight, h->m.flight_end, h->m.owned ? 1 : 0, h->m.due,
                          h->m.owed_first, h->m.tries, h->pid, token);
}

static gboolean
read_mark_fd (int fd, DcpMarkHold *h, gchar **token)
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

/* The state kept in files of their own: the bucket, the last push, gone. */
static void
read_mtimes (DcpState *state, const gchar *token, DcpMachine *m)
{
  m->full_at = token_mtime (state, token, ".full");
  m->last = token_mtime (state, token, ".last");
  m->gone = token_mtime (state, token, ".gone") >= 0;
}

/* Read the token's state into h (the token's lock held, or not: peek);
 * h->lock is left as it is. */
static void
read_hold (DcpState *state, const gchar *token, DcpMarkHold *h, gboolean keep_mark)
{
  g_autofree gchar *mark = dcp_state_token_file (token, ".due");
  int lock = h->lock;
  int fd;

  *h = (DcpMarkHold) DCP_MARK_HOLD_INIT;
  h->lock = lock;
  read_mtimes (state, token, &h->m);
  fd = dcp_file_open (state->dirfd, mark, O_RDWR, DCP_FILE_NOFOLLOW, NULL, NULL);
  if (fd < 0)
    return;
  /* damaged (a crash mid-write; parse_mark() then sets nothing): what it
   * held is unknown, so a push is wanted now; the machine decides who
   * makes it */
  if (!read_mark_fd (fd, h, NULL))
    h->m.wanted = 0;
  h->owner_live = mark_locked (fd);
  if (keep_mark)
    h->mark = fd;
  else
    close (fd);
}

gboolean
dcp_mark_hold (DcpState *state, const gchar *token, DcpMarkHold *h, GError **error)
{
  g_return_val_if_fail (state != NULL && token != NULL && h != NULL, FALSE);
  h->lock = dcp_state_lock_token (state, token, error);
  h->mark = -1;
  if (h->lock < 0)
    return FALSE;
  read_hold (state, token, h, TRUE);
  return TRUE;
}

void
dcp_mark_peek (DcpState *state, const gchar *token, DcpMarkHold *h)
{
  g_return_if_fail (state != NULL && token != NULL && h != NULL);
  h->lock = -1;
  read_hold (state, token, h, FALSE);
}

static gboolean
set_mtime_file (DcpState *state, const gchar *token, const gchar *suffix, gint64 t, gint64 was,
                GError **error)
{
  g_autofree gchar *name = dcp_state_token_file (token, suffix);

  if (t == was)
    return TRUE;
  if (t < 0)
    {
      (void) unlinkat (state->dirfd, name, 0);
      return TRUE;
    }
  return dcp_state_touch (state, name, t, NULL, error);
}

static gboolean
set_gone_locked (DcpState *state, const gchar *token, gboolean gone, gint64 now, GError **error)
{
  g_autofree gchar *name = dcp_state_token_file (token, ".gone");

  if (gone)
    return dcp_state_touch (state, name, MAX (now, 0), "410\n", error);
  return dcp_state_remove (state, name, error);
}

/* Nothing left that anyone acts on: the mark goes. */
static gboolean
mark_empty (const DcpMachine *m)
{
  return m->wanted < 0 && !m->owned && m->owed_first < 0 && m->flight < 0;
}

gboolean
dcp_mark_store (DcpState *state, const gchar *token, DcpMarkHold *h, GError **error)
{
  g_autofree gchar *mark = dcp_state_token_file (token, ".due");
  g_autofree gchar *content = NULL;
  DcpMarkHold was = DCP_MARK_HOLD_INIT;
  gsize len;

  g_return_val_if_fail (state != NULL && h != NULL && h->lock >= 0, FALSE);
  read_hold (state, token, &was, FALSE);
  if (!set_mtime_file (state, token, ".full", h->m.full_at, was.m.full_at, error)
      || !set_mtime_file (state, token, ".last", h->m.last, was.m.last, error))
    return FALSE;
  if (h->m.gone && !was.m.gone && !set_gone_locked (state, token, TRUE, h->m.last, error))
    return FALSE;
  if (mark_empty (&h->m))
    {
      (void) unlinkat (state->dirfd, mark, 0);
      return TRUE;
    }
  if (h->mark < 0)
    {
      h->mark = dcp_state_open_file (state, mark, O_RDWR | O_CREAT, error);
      if (h->mark < 0)
        return FALSE;
    }
  /* in place, so an owner's flock() stays on the file others open */
  content = format_mark (h, token);
  len = strlen (content);
  if (pwrite (h->mark, content, len, 0) != (gssize) len || ftruncate (h->mark, len) < 0)
    {
      int saved = errno ? errno : ENOSPC;
      return dcp_state_set_errno_error (error, saved, "cannot write", mark);
    }
  return TRUE;
}

int
dcp_mark_own (DcpState *state, const gchar *token, DcpMarkHold *h, GError **error)
{
  g_autofree gchar *mark = dcp_state_token_file (token, ".due");
  int fd;

  g_return_val_if_fail (h->lock >= 0, -1);
  if (!dcp_mark_store (state, token, h, error))
    return -1;
  fd = dcp_state_open_file (state, mark, O_RDWR, error);
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
          dcp_state_set_errno_error (error, saved, "cannot lock", mark);
          return -1;
        }
      g_usleep (DCP_STATE_LOCK_POLL_US);
    }
}

void
dcp_mark_release (DcpMarkHold *h)
{
  if (h->mark >= 0)
    close (h->mark);
  h->mark = -1;
  dcp_state_unlock_token (h->lock);
  h->lock = -1;
}

/* The owner's mark, re-made when the cache was removed under it: FALSE
 * when a newer mark has a live owner of its own (it was poked). */
gboolean
dcp_mark_read_fd (int fd, DcpMachine *m)
{
  DcpMarkHold h = DCP_MARK_HOLD_INIT;

  g_return_val_if_fail (m != NULL, FALSE);
  if (!read_mark_fd (fd, &h, NULL))
    return FALSE;
  *m = h.m;
  return TRUE;
}

gboolean
dcp_mark_missing (int fd)
{
  struct stat st;
  return fstat (fd, &st) < 0 || st.st_nlink == 0;
}

/* The token a .due entry of the directory holds, or NULL when it is not
 * one of ours (or damaged). */
static gchar *
marked_token (DcpState *state, const gchar *name)
{
  g_autofree gchar *token = NULL;
  g_autofree gchar *expected = NULL;
  DcpMarkHold h;
  gboolean ok;
  int fd = dcp_file_open (state->dirfd, name, O_RDONLY, DCP_FILE_NOFOLLOW, NULL, NULL);

  if (fd < 0)
    return NULL;
  ok = read_mark_fd (fd, &h, &token) && token != NULL
       && dcp_token_validate (token, strlen (token), NULL)
       && g_str_equal ((expected = dcp_state_token_file (token, ".due")), name);
  close (fd);
  return ok ? g_steal_pointer (&token) : NULL;
}

/* The tokens of every mark in the cache, or NULL with error set when the
 * directory cannot be listed. */
GPtrArray *
dcp_mark_tokens (DcpState *state, GError **error)
{
  g_autoptr (GPtrArray) names = dcp_state_list (state, ".due", error);
  GPtrArray *tokens;

  if (names == NULL)
    return NULL;
  tokens = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < names->len; i++)
    {
      gchar *token = marked_token (state, g_ptr_array_index (names, i));
      if (token != NULL)
        g_ptr_array_add (tokens, token);
    }
  return tokens;
}

gboolean
dcp_mark_record (DcpState *state, const gchar *token, gint64 now, const gchar *result,
                 GError **error)
{
  g_autofree gchar *name = dcp_state_token_file (token, ".result");
  g_autofree gchar *content = g_strdup_printf ("%s\n", result);

  return dcp_state_touch (state, name, now, content, error);
}

void
dcp_mark_result (DcpState *state, const gchar *token, gint64 *when, gchar **result)
{
  g_autofree gchar *rname = dcp_state_token_file (token, ".result");
  gchar *text;

  *when = dcp_state_mtime (state, rname);
  text = dcp_file_read (state->dirfd, rname, DCP_FILE_NOFOLLOW, NULL, NULL, NULL);
  *result = text != NULL && *g_strstrip (text) != '\0' ? text : NULL;
  if (*result == NULL)
    g_free (text);
}

gint64
dcp_mark_gone_since (DcpState *state, const gchar *token)
{
  return token_mtime (state, token, ".gone");
}

gboolean
dcp_mark_set_gone (DcpState *state, const gchar *token, gboolean gone, gint64 now, GError **error)
{
  gboolean ok;
  int lock = dcp_state_lock_token (state, token, error);

  if (lock < 0)
    return FALSE;
  ok = set_gone_locked (state, token, gone, now, error);
  dcp_state_unlock_token (lock);
  return ok;
}
