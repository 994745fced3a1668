/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* deltachat-push: wake Delta Chat devices when mail arrives.
 *
 * main() is short and linear: make sure fds 0-2 exist, take GLib's log
 * output (before anything can log), set up signals, parse the settings,
 * run, and turn the result into one of the two exit codes a mail system
 * understands.  Every caller we know treats 0 as
 * "delivered" and 75 (EX_TEMPFAIL) as "try again later"; almost any other
 * code makes Postfix or Exim bounce the user's mail, so none is ever used. */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include "dcp-http.h"
#include "dcp-log.h"
#include "dcp-run.h"
#include "dcp-settings.h"

/* LeakSanitizer checks at exit(): gcc and clang say whether it is in */
#if defined(__SANITIZE_ADDRESS__)
#define DCP_LEAK_CHECK_AT_EXIT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define DCP_LEAK_CHECK_AT_EXIT 1
#endif
#endif
#ifndef DCP_LEAK_CHECK_AT_EXIT
#define DCP_LEAK_CHECK_AT_EXIT 0
#endif

static int
status_to_exit (DcpStatus status, gboolean best_effort)
{
  switch (status)
    {
    case DCP_STATUS_DONE:
      return EX_OK;
    case DCP_STATUS_TRANSIENT:
      return best_effort ? EX_OK : EX_TEMPFAIL;
    case DCP_STATUS_CONFIG:
    case DCP_STATUS_INTERRUPTED:
    default:
      return EX_TEMPFAIL;
    }
}

/* A caller that gives up on us (Dovecot's timeout, systemd stopping
 * getmail) sends SIGTERM: say so and ask for a retry, never die by the
 * signal (Exim bounces mail whose agent was killed).  The line is
 * written without blocking (dropped if stderr is full), so the signal
 * always ends the run at once. */
G_NORETURN static void
on_signal (int sig)
{
  static const char msg[] = "deltachat-push: interrupted by a signal, exiting 75 for a retry\n";
  (void) sig;
  dcp_log_stderr (msg, sizeof msg - 1);
  _exit (EX_TEMPFAIL);
}

static void
ensure_std_fds (void)
{
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl (fd, F_GETFD) < 0)
      {
        int n = open ("/dev/null", O_RDWR);
        if (n >= 0 && n != fd)
          close (n);
      }
}

static void
setup_signals (void)
{
  struct sigaction sa;

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sigaction (SIGPIPE, &sa, NULL);
  /* a file size limit (ulimit -f) makes a write fail with EFBIG, an
   * error like a full disk, instead of killing the run */
  sigaction (SIGXFSZ, &sa, NULL);
  /* a run pokes an owed push with SIGUSR1 (which installs its own
   * handler): a stray one must never kill anything of ours */
  sigaction (SIGUSR1, &sa, NULL);
}

/* --help and --version: all they do is print. */
static int
print_help_or_version (const DcpSettings *settings)
{
  if (settings->mode == DCP_MODE_HELP)
    fputs (settings->help, stdout);
  else
    {
      g_autoptr (GError) error = NULL;
      g_autofree gchar *tls = dcp_http_describe (NULL, &error);
      printf (PACKAGE_NAME " " PACKAGE_VERSION "\n%s\n", tls ? tls : error->message);
    }
  return fflush (stdout) == 0 ? EX_OK : EX_TEMPFAIL;
}

int
main (int argc, char **argv)
{
  g_autoptr (DcpSettings) settings = dcp_settings_new ();
  g_autoptr (GError) error = NULL;
  DcpStatus status;
  int code;

  ensure_std_fds ();
  dcp_log_init ();
  setup_signals ();
  g_mime_init (); /* before any GMime call, as GMime requires */

  if (!dcp_settings_parse (settings, argc, argv, &error))
    {
      dcp_log_fatal_line ("configuration error: %s", error->message);
      return status_to_exit (DCP_STATUS_CONFIG, FALSE);
    }
  if (settings->mode == DCP_MODE_HELP || settings->mode == DCP_MODE_VERSION)
    return print_help_or_version (settings);

  dcp_log_set_verbose (settings->verbose);
#ifdef DCP_TEST_HOOKS
  if (settings->mode == DCP_MODE_TRAILING)
    dcp_log_detached (g_getenv ("DCP_RETRY_LOG"));
#endif
  for (guint i = 0; i < settings->warnings->len; i++)
    dcp_log (LOG_WARNING, "%s", (const gchar *) g_ptr_array_index (settings->warnings, i));

  status = dcp_run (settings, STDIN_FILENO);
  code = status_to_exit (status, settings->best_effort);
  if (fflush (NULL) != 0)
    code = EX_TEMPFAIL;
  /* The run has made its pushes and closed its state files, and stdio is
   * flushed: what exit() would add is the libraries' teardown (libcurl,
   * OpenSSL, GMime, GLib), a few percent of a push's instructions; and a
   * run ended by a signal may leave its POSTs' thread behind, with no
   * teardown to be done under it.  A build whose leak checker runs at
   * exit returns. */
  if (status == DCP_STATUS_INTERRUPTED || !DCP_LEAK_CHECK_AT_EXIT)
    _exit (code);
  return code;
}
