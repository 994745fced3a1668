/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The project's one error domain.
 *
 * Every function of lib/ that returns FALSE, NULL or -1 for a failure sets
 * its GError.  A failed system call is reported in G_FILE_ERROR, from its
 * errno (g_file_error_from_errno), so that a caller can tell a missing
 * file (G_FILE_ERROR_NOENT) from one to complain about.  Everything else
 * is in DCP_ERROR, one code per remedy: what the user fixes (the input,
 * the cache, the installation) or what time fixes (a busy lock, the
 * network).  A 410 is no error: it is the outcome DCP_HTTP_GONE
 * (dcp-http.h). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DCP_ERROR (dcp_error_quark ())
GQuark dcp_error_quark (void);

typedef enum {
  DCP_ERROR_FAILED,    /* anything else */
  DCP_ERROR_INVALID,   /* malformed input: a token, a URL, an option, a file */
  DCP_ERROR_STATE,     /* the cache directory is not ours to use (a symlink, another owner) */
  DCP_ERROR_LOCKED,    /* a token's lock could not be had in time */
  DCP_ERROR_LIBRARY,   /* libcurl could not be loaded, set up or driven */
  DCP_ERROR_TRANSIENT, /* network or server trouble worth retrying */
} DcpError;

G_END_DECLS
