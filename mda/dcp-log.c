/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Logging (see dcp-log.h).
 *
 * stderr belongs to the caller, and a caller may stop reading it (a full
 * pipe) or stop the terminal (^S): a blocking write would then hang the
 * run, and the SIGTERM meant to end it too.  So every line to stderr is
 * written without blocking, and dropped when it cannot be written now.
 * O_NONBLOCK cannot simply be set on descriptor 2: its open file
 * description is shared with the caller, who would then see EAGAIN in
 * its own writes.  Instead a pipe is reopened through /proc (a new open
 * file description of the same pipe, non-blocking for us alone), a
 * socket is written with MSG_DONTWAIT, and anything else is written only
 * when poll() says it can take a line now. */
#include "dcp-log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* a line longer than this is cut: it still fits a pipe in one write */
#define LINE_MAX_BYTES 1024

static gboolean log_verbose;
static int stderr_pipe = -1; /* descriptor 2's pipe, reopened non-blocking */
static gboolean stderr_socket;

/* How descriptor 2 can be written without blocking. */
static void
probe_stderr (void)
{
  struct stat st;

  if (stderr_pipe >= 0)
    close (stderr_pipe);
  stderr_pipe = -1;
  stderr_socket = FALSE;
  if (fstat (STDERR_FILENO, &st) < 0)
    return;
  stderr_socket = S_ISSOCK (st.st_mode);
  /* may fail (no /proc, a pipe of another user's): then poll() below */
  if (S_ISFIFO (st.st_mode))
    stderr_pipe = open ("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
}

/* Async-signal-safe: only poll(), write() and send(). */
void
dcp_log_stderr (const char *line, size_t len)
{
  struct pollfd p = { STDERR_FILENO, POLLOUT, 0 };
  ssize_t n;

  if (stderr_pipe >= 0)
    n = write (stderr_pipe, line, len);
  else if (stderr_socket)
    n = send (STDERR_FILENO, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  else if (poll (&p, 1, 0) == 1 && p.revents == POLLOUT)
    n = write (STDERR_FILENO, line, len);
  else
    n = -1;
  (void) n; /* a line that cannot be written now is dropped */
}

/* GLib and GMime warnings would otherwise land on stderr, which getmail
 * reads as a failed delivery. */
static void
glib_log_handler (const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer user)
{
  int prio = (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) ? LOG_ERR
             : (level & G_LOG_LEVEL_WARNING)                      ? LOG_WARNING
                                                                  : LOG_DEBUG;
  (void) user;
  if (prio == LOG_DEBUG && !log_verbose)
    return;
  dcp_log (prio, "%s%s%s", domain ? domain : "", domain ? ": " : "", message);
}

/* The same for structured logging (g_log_structured(), and g_warning()
 * in code built with G_LOG_USE_STRUCTURED), which bypasses the handler
 * above. */
static GLogWriterOutput
glib_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user)
{
  g_autofree gchar *domain = NULL, *message = NULL;

  for (gsize i = 0; i < n_fields; i++)
    {
      gchar **slot = g_strcmp0 (fields[i].key, "GLIB_DOMAIN") == 0 ? &domain
                     : g_strcmp0 (fields[i].key, "MESSAGE") == 0   ? &message
                                                                   : NULL;
      if (slot != NULL && *slot == NULL && fields[i].value != NULL)
        *slot = fields[i].length < 0 ? g_strdup (fields[i].value)
                                     : g_strndup (fields[i].value, fields[i].length);
    }
  glib_log_handler (domain, level, message ? message : "", user);
  return G_LOG_WRITER_HANDLED;
}

/* From the first line of main(): nothing GLib says may reach stderr
 * before the settings are known (a missing HOME, a uid without a passwd
 * entry). */
void
dcp_log_init (void)
{
  openlog ("deltachat-push", LOG_PID | LOG_ODELAY, LOG_MAIL);
  probe_stderr ();
  g_log_set_writer_func (glib_log_writer, NULL, NULL);
  g_log_set_default_handler (glib_log_handler, NULL);
}

void
dcp_log_set_verbose (gboolean verbose)
{
  log_verbose = verbose;
}

static void log_va (int priority, gboolean to_stderr, const gchar *format, va_list ap)
    G_GNUC_PRINTF (3, 0);

static void
log_va (int priority, gboolean to_stderr, const gchar *format, va_list ap)
{
  g_autofree gchar *line = g_strdup_vprintf (format, ap);
  gchar out[LINE_MAX_BYTES];
  int n;

  syslog (priority, "%s", line);
  if (!to_stderr)
    return;
  n = g_snprintf (out, sizeof out, "deltachat-push: %s\n", line);
  if (n >= (int) sizeof out)
    {
      n = sizeof out - 1;
      out[n - 1] = '\n';
    }
  dcp_log_stderr (out, n);
}

void
dcp_log (int priority, const gchar *format, ...)
{
  va_list ap;

  va_start (ap, format);
  log_va (priority, log_verbose, format, ap);
  va_end (ap);
}

/* The one stderr line of a run that exits 75. */
void
dcp_log_fatal_line (const gchar *format, ...)
{
  va_list ap;

  va_start (ap, format);
  log_va (LOG_ERR, TRUE, format, ap);
  va_end (ap);
}

#ifdef DCP_TEST_HOOKS
/* For tests (DCP_RETRY_LOG): a detached sender, whose stderr is
 * /dev/null, also appends its log lines to this file. */
void
dcp_log_detached (const gchar *test_log)
{
  int fd;

  if (test_log == NULL || *test_log == '\0')
    return;
  fd = open (test_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0)
    return;
  if (dup2 (fd, STDERR_FILENO) >= 0)
    {
      log_verbose = TRUE;
      probe_stderr ();
    }
  close (fd);
}
#endif
