/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "dcp-log.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static gboolean log_verbose;

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

void
dcp_log_init (gboolean verbose)
{
  log_verbose = verbose;
  openlog ("deltachat-push", LOG_PID | LOG_ODELAY, LOG_MAIL);
  g_log_set_default_handler (glib_log_handler, NULL);
}

static void log_va (int priority, gboolean to_stderr, const gchar *format, va_list ap)
    G_GNUC_PRINTF (3, 0);

static void
log_va (int priority, gboolean to_stderr, const gchar *format, va_list ap)
{
  g_autofree gchar *line = g_strdup_vprintf (format, ap);

  syslog (priority, "%s", line);
  if (to_stderr)
    fprintf (stderr, "deltachat-push: %s\n", line);
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

/* For tests (DCP_RETRY_LOG): a detached sender, whose stderr is
 * /dev/null, also appends its log lines to this file. */
void
dcp_log_detached (const gchar *test_log)
{
  int fd;

  if (test_log == NULL || *test_log == '\0')
    return;
  fd = open (test_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return;
  if (dup2 (fd, STDERR_FILENO) >= 0)
    log_verbose = TRUE;
  close (fd);
}
