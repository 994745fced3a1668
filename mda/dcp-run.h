/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One run of the program, for each mode.  Returns a status; main() alone
 * turns it into an exit code. */
#pragma once

#include "dcp-http.h"
#include "dcp-settings.h"
#include "dcp-state.h"

typedef enum {
  DCP_STATUS_DONE,        /* notified, skipped, rate-limited, gone, gave up */
  DCP_STATUS_TRANSIENT,   /* worth a retry by the caller */
  DCP_STATUS_CONFIG,      /* our own configuration or installation is wrong */
  DCP_STATUS_INTERRUPTED, /* ended by a signal, what was claimed settled: exit 75 now */
} DcpStatus;

/* What one run holds, whatever its mode (dcp-push.h: what the modes do
 * with it in common). */
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

DcpStatus dcp_run (DcpSettings *settings, int input_fd);
