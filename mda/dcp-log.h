/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Where diagnostics go: syslog (facility mail), and stderr with --verbose.
 * stderr is otherwise reserved for the one line that explains an exit 75,
 * because getmail counts any stderr output as a failed delivery.  A write
 * to stderr never blocks: a line the caller cannot take now is dropped. */
#pragma once

#include <glib.h>
#include <syslog.h>

void dcp_log_init (void);
void dcp_log_set_verbose (gboolean verbose);
void dcp_log (int priority, const gchar *format, ...) G_GNUC_PRINTF (2, 3);
void dcp_log_fatal_line (const gchar *format, ...) G_GNUC_PRINTF (1, 2);
void dcp_log_stderr (const char *line, size_t len);
#ifdef DCP_TEST_HOOKS
void dcp_log_detached (const gchar *test_log);
#endif
