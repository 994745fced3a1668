/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One token's push state machine: (state, event, time) -> (new state,
 * actions).  Pure: no I/O, no clock; every time, in the state, the events
 * and the actions, is in MICROSECONDS since the Epoch (gint64), -1 for
 * "none".  mda/ reads the state under the token's lock (dcp-mark.h),
 * feeds one event, writes the state back and carries the actions out.
 *
 * The promises it keeps (the man page says them to users):
 *  - every message read is followed by a push that starts after it was
 *    read and is answered 200, unless the token is gone (410) or the
 *    proxy stays down 5 hours after the first failure;
 *  - a push is started at once when the bucket (burst pushes, one back
 *    every window) has one and the last push started 1 s ago or more;
 *    otherwise one detached push is due when it has;
 *  - a failed push is owed: tried on the relays' schedule, and a window
 *    after the last try when a message pokes it. */
#pragma once

#include <glib.h>

#include "dcp-http.h"
#include "dcp-schedule.h"

G_BEGIN_DECLS

#define DCP_MACHINE_SPACING G_USEC_PER_SEC /* the proxy drops a repeat within 1 s */

typedef struct {
  gint64 window;               /* µs one push takes to come back; 0: no rate limit at all */
  guint burst;                 /* pushes the bucket holds, 1 at least */
  gint64 flight_max;           /* µs a push may take: unanswered by then, its pusher is gone */
  gboolean trailing;           /* FALSE (--no-trailing): a rate-limited message is dropped */
  const DcpSchedule *schedule; /* of an owed push */
} DcpMachineConfig;

typedef struct {
  gint64 full_at;    /* when the bucket will be full again (<= now: it is), or -1 */
  gint64 last;       /* start of the last push, or -1 */
  gint64 wanted;     /* read time of the latest message no push answered 200 covers, or -1 */
  gint64 flight;     /* start of the latest push not answered yet, or -1 */
  gint64 flight_end; /* ... when its pusher will have given up on it */
  gboolean owned;    /* a detached process owns the token's next push */
  gint64 due;        /* ... due then (after a push of its own: when that push's budget ends) */
  gint64 owed_first; /* the first failure of an owed push, or -1 */
  guint tries;       /* failed tries of the owed push */
  gboolean gone;     /* the proxy answered 410 */
} DcpMachine;

#define DCP_MACHINE_INIT                                                                           \
  {                                                                                                \
    .full_at = -1, .last = -1, .wanted = -1, .flight = -1, .flight_end = -1, .owned = FALSE,       \
    .due = -1, .owed_first = -1, .tries = 0, .gone = FALSE                                         \
  }

typedef enum {
  DCP_EVENT_READ,   /* a run has read its whole message */
  DCP_EVENT_ANSWER, /* a push was answered (or given up on) */
  DCP_EVENT_TIMER,  /* the owner woke up (its due time, or poked) */
  DCP_EVENT_DEAD,   /* the owner's process is gone (its mark is not locked) */
  DCP_EVENT_RESUME, /* --resume: take over an orphaned push */
} DcpEventKind;

typedef struct {
  DcpEventKind kind;
  gint64 now;
  gboolean by_owner;       /* ANSWER: the owner's push (else a run's) */
  gint64 started;          /* ANSWER: when the push started */
  DcpHttpOutcome outcome;  /* ANSWER */
  gboolean caller_retries; /* ANSWER by a run: it exits 75 and its caller retries */
} DcpEvent;

/* Why a message was handled the way it was (for the log and --dry-run). */
typedef enum {
  DCP_WHY_NONE,
  DCP_WHY_PUSH,     /* pushed at once */
  DCP_WHY_TRAILING, /* a detached push is started, due later */
  DCP_WHY_COVERED,  /* the live owner's next push covers it */
  DCP_WHY_OWED,     /* an owed push covers it (poked) */
  DCP_WHY_LIMITED,  /* rate-limited, and trailing pushes are off */
  DCP_WHY_GONE,     /* the token is gone */
} DcpWhy;

typedef struct {
  DcpWhy why;
  gboolean push;     /* push now (whoever fed the event) */
  gint64 detach_at;  /* start a detached owner, due then; the feeder holds its mark */
  gint64 wait_until; /* the owner: sleep until then (or a poke), then TIMER */
  gboolean poke;     /* the live owner's due moved: wake it */
  gboolean forget;   /* the owner: nothing is left to do, remove the mark and end */
  gboolean gone;     /* 410: mark the token gone, forget the device */
  gboolean owed;     /* the push became (or stays) owed: log it */
  gboolean given_up; /* the owed push is given up: log it */
  guint tries;       /* owed or given up: the failed tries so far */
} DcpActions;

/* nothing to do */
#define DCP_ACTIONS_INIT                                                                           \
  {                                                                                                \
    .why = DCP_WHY_NONE, .detach_at = -1, .wait_until = -1                                         \
  }

void dcp_machine_step (const DcpMachineConfig *config, DcpMachine *m, const DcpEvent *event,
                       DcpActions *actions);

/* When the next push may start (now or later), and how many the bucket
 * holds at now. */
gint64 dcp_machine_available_at (const DcpMachineConfig *config, const DcpMachine *m, gint64 now);
guint dcp_machine_bucket (const DcpMachineConfig *config, const DcpMachine *m, gint64 now);

/* Two views of one token's state (the cache was removed under an owner,
 * which then finds a newer state): the union of what is owed. */
void dcp_machine_merge (DcpMachine *into, const DcpMachine *other);

const gchar *dcp_why_to_string (DcpWhy why);

G_END_DECLS
