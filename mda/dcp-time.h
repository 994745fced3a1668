/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Times as the log and --status show them: UTC, to the second. */
#pragma once

#include <glib.h>

/* us (µs since the Epoch) as "2026-11-22T04:00:00Z", or "never" if < 0 */
gchar *dcp_format_time (gint64 us);
