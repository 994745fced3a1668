/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Starting a detached process: a fresh exec of ourselves (no thread or
 * library state survives from the run), in its own session, holding
 * nothing of the caller's: stdin is a pipe carrying the token, stdout and
 * stderr are /dev/null, and the mark is on DCP_SPAWN_MARK_FD, so that its
 * flock() is the new process's for as long as it lives. */
#pragma once

#include <glib.h>

#define DCP_SPAWN_MARK_FD 3

/* Returns once the process is on its way: its exec is not awaited.  A
 * failed system call is reported in G_FILE_ERROR, from its errno. */
gboolean dcp_spawn_detached (gchar **argv, const gchar *token, int mark, GError **error);
