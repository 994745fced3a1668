/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Who retries a failed push (--retry), and in `caller` mode the record
 * that caps the caller's retries of one message: how often it failed,
 * since when, and which tokens were already notified for it (kept in the
 * state directory as retry-<key>, see dcp-state.h).  A push owed to a
 * detached process follows its schedule (dcp-schedule.h) instead. */
#pragma once

#include <glib.h>

#include "dcp-state.h"

G_BEGIN_DECLS

typedef enum {
  DCP_RETRY_BACKGROUND, /* a failed push is owed: retried by a detached process */
  DCP_RETRY_CALLER,     /* a failed push asks the caller to retry (exit 75) */
} DcpRetryMode;

gboolean dcp_retry_mode_parse (const gchar *text, DcpRetryMode *mode, GError **error);

/* `caller` mode: a message is retried by its caller at most this often,
 * or for this long after its first failure, then given up with 0. */
#define DCP_RETRY_CAP_RUNS 5
#define DCP_RETRY_CAP_SECONDS 3600

gboolean dcp_retry_cap_reached (guint failures, gint64 first_s, gint64 now_s);

/* One message's record. */
typedef struct {
  guint failures;  /* failed runs so far */
  gint64 first_s;  /* time of the first failure (seconds since the Epoch), or -1 */
  GPtrArray *done; /* token hashes already notified for this message */
} DcpRetry;

/* Read the record of message key into retry (none: no failures yet);
 * FALSE with error set when it is there but cannot be read. */
gboolean dcp_retry_load (DcpState *state, const gchar *key, DcpRetry *retry, GError **error);
gboolean dcp_retry_save (DcpState *state, const gchar *key, const DcpRetry *retry, GError **error);
/* Delete the record of message key from the state directory. */
gboolean dcp_retry_delete (DcpState *state, const gchar *key, GError **error);
/* Free what retry holds in memory (the record on disk stays). */
void dcp_retry_clear (DcpRetry *retry);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DcpRetry, dcp_retry_clear)

G_END_DECLS
