/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The run's retry decisions, as pure functions of explicit inputs: the
 * retry mode, the per-message retry cap of `caller` mode and the schedule
 * of an owed push.  What to do per token is dcp-machine.h's. */
#pragma once

#include <glib.h>

#include "dcp-http.h"

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

/* An owed push's schedule: the tries after the first failure, in seconds
 * after it (chatmail relays: 8, 64, 512, 4096), and when it is dropped. */
#define DCP_SCHEDULE_MAX 16
#define DCP_SCHEDULE_GIVE_UP (5 * 3600)

typedef struct {
  guint n;
  gint64 step[DCP_SCHEDULE_MAX]; /* seconds after the first failure, increasing */
  gint64 give_up;                /* seconds after the first failure */
} DcpSchedule;

void dcp_schedule_init (DcpSchedule *schedule);
gboolean dcp_schedule_parse (const gchar *text, DcpSchedule *schedule, GError **error);
gint64 dcp_schedule_next (const DcpSchedule *schedule, gint64 first, guint tries);
gboolean dcp_schedule_expired (const DcpSchedule *schedule, gint64 first, gint64 now);

G_END_DECLS
