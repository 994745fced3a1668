/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The run's decisions, as pure functions of explicit inputs (what the
 * token's state says, the settings, the clock): what to do per token, what
 * an answer means for the state and the exit code, the per-message retry
 * cap of `caller` mode and the schedule of an owed push.  dcp-state.c
 * gathers the facts from disk; mda/ does what is decided. */
#pragma once

#include <glib.h>

#include "dcp-http.h"

G_BEGIN_DECLS

typedef enum {
  DCP_SLOT_PUSH,     /* claimed: push now, then dcp_state_finish() */
  DCP_SLOT_TRAILING, /* inside the window: start a trailing push with pending_fd */
  DCP_SLOT_COVERED,  /* inside the window: a live trailing push covers us */
  DCP_SLOT_LIMITED,  /* inside the window and trailing pushes are off */
  DCP_SLOT_GONE,     /* the token is marked gone */
  DCP_SLOT_OWED,     /* a live owed push covers us */
} DcpSlotKind;

/* What a token's state on disk says, read under its lock. */
typedef struct {
  gboolean gone;
  gint64 last; /* start of the last push (or the one in flight), or -1 */
  gboolean pending_live;
  gboolean owed_live;
} DcpTokenFacts;

DcpSlotKind dcp_plan_token (const DcpTokenFacts *facts, gint64 now, gint64 window,
                            gboolean trailing);
const gchar *dcp_slot_kind_to_string (DcpSlotKind kind);

typedef enum {
  DCP_RETRY_BACKGROUND, /* a failed push is owed: retried by a detached process */
  DCP_RETRY_CALLER,     /* a failed push asks the caller to retry (exit 75) */
} DcpRetryMode;

gboolean dcp_retry_mode_parse (const gchar *text, DcpRetryMode *mode, GError **error);

/* What the answer to one push means. */
typedef enum {
  DCP_AFTER_DONE,   /* notified: nothing more to do */
  DCP_AFTER_GONE,   /* 410: mark the token gone, forget the device */
  DCP_AFTER_OWE,    /* transient: start (or keep) the owed push */
  DCP_AFTER_DROP,   /* transient, nowhere to keep it: logged and dropped */
  DCP_AFTER_CALLER, /* transient: count it against the message, maybe exit 75 */
} DcpAfter;

DcpAfter dcp_plan_after (DcpHttpOutcome outcome, DcpRetryMode mode, gboolean have_state);

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
