/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The detached sender (see dcp-sender.h).
 *
 * Both kinds are started the same way: a fresh exec of ourselves (no
 * thread or library state survives from the run), in its own session,
 * holding nothing of the caller's: stdin is a pipe carrying the token,
 * stdout and stderr are /dev/null, fd 3 is the token's mark, flock()ed for
 * as long as the process lives, so a run can tell a live one from a dead
 * one (a reboot, kill -9).
 *
 * A trailing push sleeps until the window ends and pushes if no push went
 * out since.  An owed push retries a failed one on the relays' schedule
 * (--retry=background), one try at a time, each claimed like a push so
 * the rate limit and the trailing push keep their promises; while it
 * lives, later messages for the token start nothing new: each only pokes
 * it (SIGUSR1), and it tries at once instead of at its next step, since
 * the proxy may be back. */
#include "config.h"

#include "dcp-sender.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dcp-error.h"
#include "dcp-log.h"
#include "dcp-token.h"

#define MARK_FD 3
/* tries a round of the schedule makes for pokes, at most */
#define POKES_MAX 100

static void
close_pair (int fd[2])
{
  for (int i = 0; i < 2; i++)
    if (fd[i] >= 0)
      close (fd[i]);
}

/* The forked child: a grandchild in a new session execs argv; errno goes
 * back through st when anything fails.  Only async-signal-safe calls.
 * The descriptors are first moved above the ones they become, so that
 * none is overwritten (or kept close-on-exec) by another's dup2(). */
G_GNUC_NORETURN static void
child_exec (const gchar *path, gchar **argv, int tok, int devnull, int mark, int st, int max_fd)
{
  pid_t grandchild;

  tok = fcntl (tok, F_DUPFD, 5);
  devnull = fcntl (devnull, F_DUPFD, 5);
  mark = fcntl (mark, F_DUPFD, 5);
  if (tok < 0 || devnull < 0 || mark < 0 || (st = fcntl (st, F_DUPFD, 5)) < 0)
    {
      (void) !write (st, &errno, sizeof errno);
      _exit (1);
    }
  setsid ();
  grandchild = fork ();
  if (grandchild != 0)
    {
      if (grandchild < 0)
        (void) !write (st, &errno, sizeof errno);
      _exit (0);
    }
  if (dup2 (tok, 0) < 0 || dup2 (devnull, 1) < 0 || dup2 (devnull, 2) < 0
      || dup2 (mark, MARK_FD) < 0 || dup3 (st, 4, O_CLOEXEC) < 0)
    {
      (void) !write (st, &errno, sizeof errno);
      _exit (1);
    }
  /* a kernel before 5.9 has no close_range() */
  if (close_range (5, ~0U, 0) < 0)
    for (int fd = 5; fd < max_fd; fd++)
      close (fd);
  execv (path, argv);
  (void) !write (4, &errno, sizeof errno);
  _exit (1);
}

/* Hand the token over, reap the intermediate child, and learn through the
 * close-on-exec pipe whether the exec worked. */
static gboolean
child_started (pid_t pid, int tok, int st, const gchar *token, GError **error)
{
  gsize len = strlen (token);
  gssize n = write (tok, token, len);
  int child_errno = 0, wstatus;

  close (tok);
  while (waitpid (pid, &wstatus, 0) < 0 && errno == EINTR)
    ;
  /* EOF: the exec happened; every failure before it writes its errno */
  if (read (st, &child_errno, sizeof child_errno) > 0 && child_errno == 0)
    child_errno = EIO;
  close (st);
  if (child_errno == 0 && !(WIFEXITED (wstatus) && WEXITSTATUS (wstatus) == 0))
    child_errno = ECHILD;
  if (child_errno != 0 || n != (gssize) len)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_FAILED, "%s",
                   child_errno ? g_strerror (child_errno) : "token not handed over");
      return FALSE;
    }
  return TRUE;
}

static gboolean
spawn (gchar **argv, const gchar *token, int mark, GError **error)
{
  g_autofree gchar *exe = g_file_read_link ("/proc/self/exe", NULL);
  /* our file's name (what valgrind shows us), unless an upgrade replaced
   * it: the kernel's link still reaches the running binary */
  const gchar *path = exe != NULL && !g_str_has_suffix (exe, " (deleted)") ? exe : "/proc/self/exe";
  long max_fd = sysconf (_SC_OPEN_MAX);
  int tok[2] = { -1, -1 }, st[2] = { -1, -1 };
  int devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
  pid_t pid;

  if (devnull < 0 || pipe2 (tok, O_CLOEXEC) < 0 || pipe2 (st, O_CLOEXEC) < 0)
    {
      int saved = errno;
      close_pair (tok);
      if (devnull >= 0)
        close (devnull);
      g_set_error (error, DCP_ERROR, DCP_ERROR_FAILED, "%s", g_strerror (saved));
      return FALSE;
    }
  pid = fork ();
  if (pid == 0)
    child_exec (path, argv, tok[0], devnull, mark, st[1], (int) CLAMP (max_fd, 5, G_MAXINT));
  close (tok[0]);
  close (st[1]);
  close (devnull);
  if (pid < 0)
    {
      int saved = errno;
      close (tok[1]);
      close (st[0]);
      g_set_error (error, DCP_ERROR, DCP_ERROR_FAILED, "cannot fork: %s", g_strerror (saved));
      return FALSE;
    }
  return child_started (pid, tok[1], st[0], token, error);
}

static gboolean
spawn_sender (DcpRun *r, const gchar *kind, const gchar *due, const gchar *token, int mark,
              GError **error)
{
  g_autofree gchar *url = g_strdup_printf ("--url=%s", r->s->url);
  g_autofree gchar *timeout = g_strdup_printf ("--timeout=%" G_GINT64_FORMAT, r->s->timeout);
  g_autofree gchar *window = g_strdup_printf ("--window=%" G_GINT64_FORMAT, r->s->window);
  g_autofree gchar *cacert = r->s->cacert ? g_strdup_printf ("--cacert=%s", r->s->cacert) : NULL;
  const gchar *retry = r->s->retry == DCP_RETRY_CALLER ? "--retry=caller" : "--retry=background";
  const gchar *argv[] = { PACKAGE_NAME, kind, url, timeout, window, retry, NULL, NULL, NULL };
  gsize n = 6;

  if (cacert != NULL)
    argv[n++] = cacert;
  if (due != NULL)
    argv[n++] = due;

  if (!spawn ((gchar **) argv, token, mark, error))
    {
      g_prefix_error (error, "cannot start the %s push: ", kind + strlen ("--"));
      return FALSE;
    }
  return TRUE;
}

gboolean
dcp_sender_start_trailing (DcpRun *r, const gchar *token, const DcpSlot *slot, GError **error)
{
  g_autofree gchar *due = g_strdup_printf ("--due=%" G_GINT64_FORMAT, slot->due);
  return spawn_sender (r, "--trailing-child", due, token, slot->pending_fd, error);
}

static void
log_owed (const gchar *shown, const DcpOwed *o)
{
  g_autofree gchar *next = dcp_format_time (o->next);
  dcp_log (LOG_INFO, "%s: the push is owed (%u failed tries so far), next try at %s", shown,
           o->tries, next);
}

/* The mark of a push owed from now on: the one taken over (while its
 * schedule lasts), or a fresh one.  -1 when a live owed push already
 * covers the token, or the mark cannot be made. */
static int
owed_mark (DcpRun *r, const gchar *shown, const gchar *token, DcpSlot *slot, gint64 now, DcpOwed *o)
{
  g_autoptr (GError) error = NULL;
  int fd = -1;

  if (slot->owed_fd >= 0 && !dcp_schedule_expired (&r->s->schedule, slot->owed.first, now))
    {
      *o = slot->owed;
      o->tries++;
      o->pid = -1; /* a dead process's: nobody is to poke it */
      fd = g_steal_fd (&slot->owed_fd);
      return fd;
    }
  if (slot->owed_fd >= 0)
    close (g_steal_fd (&slot->owed_fd));
  *o = (DcpOwed){ now, 1, -1, -1 };
  if (!dcp_state_owe (r->state, token, o, &fd, &error))
    dcp_log (LOG_WARNING, "%s: the push cannot be owed, dropped: %s", shown, error->message);
  else if (fd < 0)
    dcp_log (LOG_INFO, "%s: an owed push already covers this message", shown);
  return fd;
}

/* After a failed push with --retry=background: make it owed and start
 * its process, or give it up when the schedule is used up. */
void
dcp_sender_owe (DcpRun *r, const gchar *token, DcpSlot *slot, gint64 now)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autoptr (GError) error = NULL;
  DcpOwed o;
  int fd = owed_mark (r, shown, token, slot, now, &o);

  if (fd < 0)
    return;
  o.next = dcp_schedule_next (&r->s->schedule, o.first, o.tries);
  if (o.next < 0)
    {
      dcp_log (LOG_WARNING, "%s: owed push given up after %u failed tries", shown, o.tries);
      dcp_state_owed_end (r->state, token, fd);
      return;
    }
  if (!dcp_state_owed_write (fd, &o, &error)
      || !spawn_sender (r, "--owed-child", NULL, token, fd, &error))
    {
      dcp_log (LOG_WARNING, "%s: %s; the push is dropped", shown, error->message);
      dcp_state_owed_end (r->state, token, fd);
      return;
    }
  close (fd);
  log_owed (shown, &o);
}

/* The token a run handed over on stdin, or NULL. */
static gchar *
read_token (void)
{
  gchar buf[DCP_TOKEN_MAX + 2];
  gssize n = 0, got;

  while (n < (gssize) sizeof buf - 1 && (got = read (0, buf + n, sizeof buf - 1 - n)) > 0)
    n += got;
  buf[MAX (n, 0)] = '\0';
  if (!dcp_token_validate (buf, MAX (n, 0), NULL))
    return NULL;
  return g_strdup (buf);
}

static void
sleep_until (gint64 t, gint64 at_most)
{
  g_usleep (CLAMP (t - g_get_real_time (), 0, at_most));
}

/* Pushes stay a window apart: wait until a window has passed since the
 * last push started (or, for a trailing push, since the last attempt
 * ended: the push that opened the window may have gone out later than it
 * was claimed), never longer than three windows. */
static void
wait_window (DcpRun *r, const gchar *token, gboolean after_result)
{
  gint64 window = r->s->window * G_USEC_PER_SEC;

  for (int i = 0; i < 3; i++)
    {
      DcpTokenStatus st = { 0 };
      gint64 left;
      dcp_state_get_status (r->state, token, &st);
      dcp_token_status_clear (&st);
      left = (after_result ? MAX (st.last, st.result_time) : st.last) + window - g_get_real_time ();
      if (left <= 0)
        break;
      g_usleep (MIN (left, window));
    }
}

DcpStatus
dcp_sender_run_trailing (DcpRun *r)
{
  g_autofree gchar *token = read_token ();
  g_autofree gchar *shown = NULL;
  g_autoptr (GError) error = NULL;
  DcpSlot slot;
  gboolean owed = FALSE;

  if (token == NULL)
    return DCP_STATUS_CONFIG;
  shown = dcp_token_display (token);
  sleep_until (r->s->due, r->s->window * G_USEC_PER_SEC);
  dcp_run_open_state (r, TRUE);
  if (r->state == NULL)
    return DCP_STATUS_TRANSIENT;
  wait_window (r, token, TRUE);
  if (!dcp_state_trailing_begin (r->state, token, MARK_FD, g_get_real_time (), &slot, &owed,
                                 &error))
    {
      dcp_log (LOG_WARNING, "%s: trailing push: %s", shown, error->message);
      return DCP_STATUS_TRANSIENT;
    }
  close (MARK_FD);
  if (!owed)
    {
      dcp_log (LOG_INFO, "%s: trailing push not needed, a push went out since", shown);
      return DCP_STATUS_DONE;
    }
  dcp_run_start_budget (r);
  dcp_log (LOG_INFO, "%s: trailing push", shown);
  if (dcp_run_push (r, token, &slot, r->s->retry == DCP_RETRY_CALLER ? 0 : 1, NULL)
      != DCP_HTTP_FAILED)
    return DCP_STATUS_DONE;
  if (r->s->retry == DCP_RETRY_CALLER)
    return DCP_STATUS_TRANSIENT;
  dcp_sender_owe (r, token, &slot, g_get_real_time ());
  return DCP_STATUS_DONE;
}

/* A message for a token whose push is owed: poke the owed process, which
 * then tries at once.  Its mark holds its pid only while it lives (the
 * lock tells), and it handles the signal before it writes the pid. */
void
dcp_sender_poke_owed (DcpRun *r, const gchar *token)
{
  DcpTokenStatus st = { 0 };

  dcp_state_get_status (r->state, token, &st);
  if (st.owed_live && st.owed_mark.pid > 1 && st.owed_mark.pid <= G_MAXINT32
      && st.owed_mark.pid != getpid ())
    (void) kill ((pid_t) st.owed_mark.pid, SIGUSR1);
  dcp_token_status_clear (&st);
}

static volatile sig_atomic_t poked;

static void
on_poke (int sig)
{
  (void) sig;
  poked = 1;
}

/* SIGUSR1 is blocked but while we sleep, so no poke is lost between the
 * look at the flag and the sleep. */
static void
accept_pokes (sigset_t *while_asleep)
{
  struct sigaction sa = { 0 };
  sigset_t usr1;

  sa.sa_handler = on_poke;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGUSR1, &sa, NULL);
  sigemptyset (&usr1);
  sigaddset (&usr1, SIGUSR1);
  sigprocmask (SIG_BLOCK, &usr1, while_asleep);
  sigdelset (while_asleep, SIGUSR1);
}

/* Sleep until t (at most at_most µs); TRUE when a poke ended the sleep. */
static gboolean
sleep_or_poke (gint64 t, gint64 at_most, const sigset_t *while_asleep)
{
  gint64 left = CLAMP (t - g_get_real_time (), 0, at_most);
  struct timespec ts = { left / G_USEC_PER_SEC, (left % G_USEC_PER_SEC) * 1000 };

  if (!poked)
    (void) ppoll (NULL, 0, &ts, while_asleep);
  if (!poked)
    return FALSE;
  poked = 0;
  return TRUE;
}

/* One try of the owed push.  TRUE when it is settled (delivered, gone,
 * or its mark was removed under it). */
static gboolean
owed_try (DcpRun *r, const gchar *token, const gchar *shown, const DcpOwed *o)
{
  g_autofree gchar *text = NULL;
  struct stat st;
  DcpSlot slot;
  g_autoptr (GError) error = NULL;

  if (fstat (MARK_FD, &st) < 0 || st.st_nlink == 0)
    {
      dcp_log (LOG_WARNING, "%s: the owed mark was removed; the push is dropped", shown);
      return TRUE;
    }
  if (!dcp_state_owed_try (r->state, token, g_get_real_time (), &slot, &error))
    {
      dcp_log (LOG_WARNING, "%s: owed push, try %u: %s", shown, o->tries + 1, error->message);
      return FALSE;
    }
  if (slot.kind == DCP_SLOT_GONE)
    {
      dcp_log (LOG_INFO, "%s: owed push dropped: the token is marked gone", shown);
      return TRUE;
    }
  dcp_log (LOG_INFO, "%s: owed push, try %u", shown, o->tries + 1);
  dcp_run_start_budget (r);
  if (dcp_run_push (r, token, &slot, 1, &text) == DCP_HTTP_FAILED)
    return FALSE;
  dcp_log (LOG_INFO, "%s: owed push settled on try %u: %s", shown, o->tries + 1, text);
  return TRUE;
}

/* When an owed push tries: at its schedule's steps, and when poked. */
typedef struct {
  gint64 give_up;  /* µs: the longest sleep */
  gint64 spacing;  /* µs between a try and a poked one: a window, 1 s at least */
  gint64 last_try; /* µs since the Epoch */
  sigset_t asleep; /* the signal mask while asleep: pokes let in */
} Pace;

/* A try covers the messages that came before it: the pokes they sent
 * (pending, while blocked) are spent. */
static void
spend_pokes (void)
{
  const struct timespec now = { 0, 0 };
  sigset_t usr1;

  sigemptyset (&usr1);
  sigaddset (&usr1, SIGUSR1);
  while (sigtimedwait (&usr1, NULL, &now) == SIGUSR1)
    ;
  poked = 0;
}

static gboolean
paced_try (DcpRun *r, const gchar *token, const gchar *shown, const DcpOwed *o, Pace *pace)
{
  wait_window (r, token, FALSE);
  spend_pokes ();
  pace->last_try = g_get_real_time ();
  return owed_try (r, token, shown, o);
}

/* One step of the schedule: the tries pokes ask for until it is due (a
 * failed one leaves the schedule as it was; failed tries hold no claim,
 * so they are spaced here), then the step's own.  TRUE once settled. */
static gboolean
owed_round (DcpRun *r, const gchar *token, const gchar *shown, const DcpOwed *o, Pace *pace)
{
  for (guint pokes = 0; pokes < POKES_MAX && sleep_or_poke (o->next, pace->give_up, &pace->asleep);
       pokes++)
    {
      sleep_until (pace->last_try + pace->spacing, pace->spacing);
      if (paced_try (r, token, shown, o, pace))
        return TRUE;
    }
  sleep_until (o->next, pace->give_up);
  return paced_try (r, token, shown, o, pace);
}

/* Retry until the push is settled or the schedule is used up.  Every
 * round makes one scheduled try (or gives up), so the loop is bounded by
 * the schedule's length. */
DcpStatus
dcp_sender_run_owed (DcpRun *r)
{
  g_autofree gchar *token = read_token ();
  g_autofree gchar *shown = NULL;
  Pace pace = { r->s->schedule.give_up * G_USEC_PER_SEC, MAX (r->s->window, 1) * G_USEC_PER_SEC,
                g_get_real_time () };
  DcpOwed o;

  if (token == NULL)
    return DCP_STATUS_CONFIG;
  shown = dcp_token_display (token);
  dcp_run_open_state (r, FALSE);
  if (r->state == NULL || !dcp_state_owed_read (MARK_FD, &o, NULL))
    {
      dcp_log (LOG_WARNING, "%s: no usable cache or owed mark; the push is dropped", shown);
      return DCP_STATUS_DONE;
    }
  accept_pokes (&pace.asleep);
  o.pid = getpid ();
  for (guint round = 0; round <= DCP_SCHEDULE_MAX; round++)
    {
      o.next = dcp_schedule_next (&r->s->schedule, o.first, o.tries);
      if (o.next < 0)
        break;
      (void) dcp_state_owed_write (MARK_FD, &o, NULL);
      if (owed_round (r, token, shown, &o, &pace))
        {
          dcp_state_owed_end (r->state, token, MARK_FD);
          return DCP_STATUS_DONE;
        }
      o.tries++;
    }
  dcp_log (LOG_WARNING, "%s: owed push given up after %u failed tries over %" G_GINT64_FORMAT " s",
           shown, o.tries, (g_get_real_time () - o.first) / G_USEC_PER_SEC);
  dcp_state_owed_end (r->state, token, MARK_FD);
  return DCP_STATUS_DONE;
}
