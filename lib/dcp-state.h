/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-token state on disk: the rate limit, the trailing push, the gone
 * mark, and per-message retry records.
 *
 * Everything lives in one directory (0700, files 0600), opened once without
 * following symlinks; every file is named after a hash of the token or of
 * the message, never after the token itself.  Per token:
 *   <hash>.last     mtime = start of the last successful (or in-flight) push
 *   <hash>.lock     flock()ed while a run reads or changes the token's state
 *   <hash>.pending  a scheduled trailing push; flock()ed by its process for
 *                   as long as it lives, so a dead one is seen as stale
 *   <hash>.owed     an owed push: one that failed and is retried by a detached
 *                   process, which holds it flock()ed like a pending mark;
 *                   "first tries next pid" (see DcpOwed)
 *   <hash>.gone     the proxy answered 410 Gone
 *   <hash>.result   time and text of the last attempt, for --status
 *   <hash>.device   a remembered device token (read from Dovecot's metadata):
 *                   the token and where it came from; mtime = last seen.
 *                   It holds the token itself, which must be kept to push
 *                   it later: the file is 0600 like the rest.
 * Times are microseconds since the Epoch and always passed in, so tests can
 * drive a clock of their own. */
#pragma once

#include <glib.h>

#include "dcp-plan.h"

G_BEGIN_DECLS

typedef struct _DcpState DcpState;

/* An owed push, as its mark holds it. */
typedef struct {
  gint64 first; /* the first failed try, µs since the Epoch */
  guint tries;  /* failed tries so far, the first one included */
  gint64 next;  /* when the next try is due, or -1 */
  gint64 pid;   /* the process that owns it, or -1 */
} DcpOwed;

typedef struct {
  DcpSlotKind kind;
  gint64 previous; /* last push before the claim, or -1 */
  gint64 claimed;  /* the time written by the claim, or -1 when none was */
  gint64 due;      /* TRAILING: when the trailing push is due */
  int pending_fd;  /* TRAILING: the locked pending mark, or -1 */
  int owed_fd;     /* PUSH: a stale owed mark taken over (locked), or -1 */
  DcpOwed owed;    /* ... and what it held */
} DcpSlot;

/* a slot that pushes without any state: no claim, no pending mark */
#define DCP_SLOT_INIT                                                                              \
  {                                                                                                \
    .kind = DCP_SLOT_PUSH, .previous = -1, .claimed = -1, .due = -1, .pending_fd = -1,             \
    .owed_fd = -1,                                                                                 \
    .owed                                                                                          \
        = { -1,                                                                                    \
            0,                                                                                     \
            -1,                                                                                    \
            -1 }                                                                                   \
  }

typedef struct {
  gint64 last;           /* last successful push, or -1 */
  gint64 result_time;    /* time of the last attempt, or -1 */
  gchar *result;         /* its outcome ("200 ok", "410 gone", "error: ..."), or NULL */
  gboolean pending;      /* a pending mark exists */
  gboolean pending_live; /* ... and its process is alive */
  gint64 due;            /* when the pending push is due, or -1 */
  gint64 gone;           /* when the token was marked gone, or -1 */
  gboolean owed;         /* an owed mark exists */
  gboolean owed_live;    /* ... and its process is alive */
  DcpOwed owed_mark;     /* ... and what it holds */
} DcpTokenStatus;

typedef struct {
  guint failures;  /* failed runs so far */
  gint64 first;    /* time of the first failure, or -1 */
  GPtrArray *done; /* token hashes already notified for this message */
} DcpRetry;

DcpState *dcp_state_open (const gchar *cache_root, GError **error);
const gchar *dcp_state_get_path (DcpState *state);
void dcp_state_free (DcpState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpState, dcp_state_free)

gboolean dcp_state_claim (DcpState *state, const gchar *token, gint64 now, gint64 window,
                          gboolean trailing, DcpSlot *slot, GError **error);
void dcp_state_peek (DcpState *state, const gchar *token, gint64 now, gint64 window,
                     gboolean trailing, DcpSlot *slot);
gboolean dcp_state_finish (DcpState *state, const gchar *token, const DcpSlot *slot,
                           gboolean pushed, gint64 now, const gchar *result, GError **error);
gboolean dcp_state_trailing_begin (DcpState *state, const gchar *token, int pending_fd, gint64 now,
                                   DcpSlot *slot, gboolean *owed, GError **error);
/* Owed pushes.  dcp_state_owe() makes a fresh mark (locked, in *fd)
 * unless a live one covers the token; the owner keeps it current with
 * dcp_state_owed_write(), claims each try with dcp_state_owed_try() (then
 * dcp_state_finish()) and removes it with dcp_state_owed_end(). */
gboolean dcp_state_owe (DcpState *state, const gchar *token, const DcpOwed *owed, int *fd,
                        GError **error);
gboolean dcp_state_owed_read (int fd, DcpOwed *owed, GError **error);
gboolean dcp_state_owed_write (int fd, const DcpOwed *owed, GError **error);
gboolean dcp_state_owed_try (DcpState *state, const gchar *token, gint64 now, DcpSlot *slot,
                             GError **error);
void dcp_state_owed_end (DcpState *state, const gchar *token, int fd);
gboolean dcp_state_set_gone (DcpState *state, const gchar *token, gboolean gone, gint64 now,
                             GError **error);
void dcp_state_get_status (DcpState *state, const gchar *token, DcpTokenStatus *status);
void dcp_token_status_clear (DcpTokenStatus *status);

/* Remembered device tokens: forgotten on 410 and when not seen for a while. */
#define DCP_STATE_DEVICES_MAX 64

typedef struct {
  gchar *token;
  gchar *source; /* where it was seen, e.g. the dictionary file */
  gint64 seen;   /* last seen there */
} DcpDevice;

void dcp_device_free (DcpDevice *device);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpDevice, dcp_device_free)

gboolean dcp_state_device_seen (DcpState *state, const gchar *token, const gchar *source,
                                gint64 now, gboolean *gone, GError **error);
GPtrArray *dcp_state_devices (DcpState *state, gint64 now, gint64 max_age, gboolean expire);
gboolean dcp_state_device_forget (DcpState *state, const gchar *token, GError **error);

gboolean dcp_state_retry_load (DcpState *state, const gchar *key, DcpRetry *retry, GError **error);
gboolean dcp_state_retry_save (DcpState *state, const gchar *key, const DcpRetry *retry,
                               GError **error);
void dcp_state_retry_clear (DcpState *state, const gchar *key);
void dcp_retry_clear (DcpRetry *retry);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DcpRetry, dcp_retry_clear)

G_END_DECLS
