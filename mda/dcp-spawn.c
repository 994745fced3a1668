/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Starting a detached process (see dcp-spawn.h).
 *
 * The run forks a child that starts a new session and forks again: the
 * grandchild execs, the child exits at once and is reaped here, so the
 * new process is nobody's child in the run.  Whatever fails before the
 * exec comes back as an errno through a close-on-exec pipe. */
#include "config.h"

#include "dcp-spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dcp-error.h"

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
  {
    /* a run holds SIGTERM and friends while it settles its pushes: the
     * detached process must not inherit that */
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
  }
  grandchild = fork ();
  if (grandchild != 0)
    {
      if (grandchild < 0)
        (void) !write (st, &errno, sizeof errno);
      _exit (0);
    }
  if (dup2 (tok, 0) < 0 || dup2 (devnull, 1) < 0 || dup2 (devnull, 2) < 0
      || dup2 (mark, DCP_SPAWN_MARK_FD) < 0 || dup3 (st, 4, O_CLOEXEC) < 0)
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
 * close-on-exec pipe whether anything failed so far. */
static gboolean
child_started (pid_t pid, int tok, int st, const gchar *token, GError **error)
{
  gsize len = strlen (token);
  gssize n = write (tok, token, len);
  int child_errno = 0, wstatus;

  close (tok);
  while (waitpid (pid, &wstatus, 0) < 0 && errno == EINTR)
    ;
  /* Every failure before the exec writes its errno, and EOF means the
   * exec happened; neither is awaited: the mark's flock() is the
   * process's from the fork on, and one that dies before its exec leaves
   * the push to the next run or --resume.  A run starting 64 of them
   * stays within its --timeout this way. */
  (void) fcntl (st, F_SETFL, O_NONBLOCK);
  if (read (st, &child_errno, sizeof child_errno) > 0 && child_errno == 0)
    child_errno = EIO;
  close (st);
  if (child_errno == 0 && !(WIFEXITED (wstatus) && WEXITSTATUS (wstatus) == 0))
    child_errno = ECHILD;
  if (child_errno != 0)
    {
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (child_errno), "%s",
                   g_strerror (child_errno));
      return FALSE;
    }
  if (n != (gssize) len)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_FAILED, "token not handed over");
      return FALSE;
    }
  return TRUE;
}

gboolean
dcp_spawn_detached (gchar **argv, const gchar *token, int mark, GError **error)
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
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "%s", g_strerror (saved));
      return FALSE;
    }
  /* nothing buffered may be written twice, by a child too */
  (void) fflush (NULL);
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
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "cannot fork: %s",
                   g_strerror (saved));
      return FALSE;
    }
  return child_started (pid, tok[1], st[0], token, error);
}
