/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One run of the program, for each mode.  Returns a status; main() alone
 * turns it into an exit code. */
#pragma once

#include "dcp-settings.h"

typedef enum {
  DCP_STATUS_DONE,        /* notified, skipped, rate-limited, gone, gave up */
  DCP_STATUS_TRANSIENT,   /* worth a retry by the caller */
  DCP_STATUS_CONFIG,      /* our own configuration or installation is wrong */
  DCP_STATUS_INTERRUPTED, /* ended by a signal, what was claimed settled: exit 75 now */
} DcpStatus;

DcpStatus dcp_run (DcpSettings *settings, int input_fd);
