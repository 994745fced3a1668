/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The project's one error domain, so callers can tell a cache problem from
 * a network problem without parsing messages. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DCP_ERROR (dcp_error_quark ())
GQuark dcp_error_quark (void);

typedef enum {
  DCP_ERROR_FAILED,    /* anything else */
  DCP_ERROR_INVALID,   /* malformed input: a token, a URL, a file */
  DCP_ERROR_STATE,     /* the cache directory or a file in it */
  DCP_ERROR_LOCKED,    /* a lock could not be had in time */
  DCP_ERROR_LIBRARY,   /* libcurl could not be loaded or set up */
  DCP_ERROR_TRANSIENT, /* network or server trouble worth retrying */
  DCP_ERROR_GONE,      /* the proxy answered 410: the token is dead */
  DCP_ERROR_INPUT,     /* the message could not be read */
} DcpError;

G_END_DECLS
