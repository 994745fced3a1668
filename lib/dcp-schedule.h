/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* An owed push's schedule: the tries after the first failure, and when
 * the push is given up.  A pure function of explicit inputs; the machine
 * (dcp-machine.h) follows it.  The schedule itself is in seconds (as
 * --retry-schedule is written), the times it answers in µs like the
 * machine's. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* the tries after the first failure, in seconds after it (chatmail
 * relays: 8, 64, 512, 4096), and when the push is dropped */
#define DCP_SCHEDULE_MAX 16
#define DCP_SCHEDULE_GIVE_UP_S (5 * 3600)

typedef struct {
  guint n;
  gint64 step_s[DCP_SCHEDULE_MAX]; /* seconds after the first failure, increasing */
  gint64 give_up_s;                /* seconds after the first failure */
} DcpSchedule;

void dcp_schedule_init (DcpSchedule *schedule);
gboolean dcp_schedule_parse (const gchar *text, DcpSchedule *schedule, GError **error);
gint64 dcp_schedule_next (const DcpSchedule *schedule, gint64 first, guint tries);
gboolean dcp_schedule_expired (const DcpSchedule *schedule, gint64 first, gint64 now);

G_END_DECLS
