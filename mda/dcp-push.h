/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What every mode of a run shares: the settings, the cache (optional), the
 * HTTP client (loaded on first use), and sending one push and recording
 * what came of it. */
#pragma once

#include "dcp-http.h"
#include "dcp-settings.h"
#include "dcp-state.h"

typedef struct {
  DcpSettings *s;
  DcpState *state;   /* NULL when the cache is unusable */
  DcpHttp *http;     /* loaded on first use */
  GPtrArray *tokens; /* this run's: those given, then the devices */
  gint64 deadline;   /* monotonic µs: end of the network budget */
  gboolean http_failed;
} DcpRun;

void dcp_run_clear (DcpRun *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DcpRun, dcp_run_clear)

void dcp_run_open_state (DcpRun *r, gboolean create);
void dcp_run_start_budget (DcpRun *r);
DcpHttpOutcome dcp_run_push (DcpRun *r, const gchar *token, const DcpSlot *slot, guint max_attempts,
                             gchar **text_out);
gchar *dcp_format_time (gint64 us);
