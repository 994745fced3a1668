/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-token state on disk: the state machine's (dcp-machine.h), the gone
 * mark, and per-message retry records.
 *
 * Everything lives in one directory (0700, files 0600), opened once without
 * following symlinks; every file is named after a hash of the token or of
 * the message, never after the token itself.  Per token:
 *   <hash>.full     mtime = when the token's bucket will be full again
 *   <hash>.last     mtime = start of the last push
 *   <hash>.lock     flock()ed while a run reads or changes the token's state
 *   <hash>.due      the rest of the machine's state and the token itself
 *                   (to push it after a reboot), while anything is wanted,
 *                   owed or in flight; flock()ed by the detached process
 *                   that owns the token's next push for as long as it
 *                   lives, so a dead one (kill -9, a reboot) is seen
 *   <hash>.gone     the proxy answered 410 Gone
 *   <hash>.result   time and text of the last attempt, for --status
 *   <hash>.device   a remembered device token (read from Dovecot's metadata):
 *                   the token and where it came from; mtime = last seen.
 * The .due and .device files hold tokens, which must be kept to push them
 * later: they are 0600 like the rest.  Times are microseconds since the
 * Epoch and always passed in, so tests can drive a clock of their own. */
#pragma once

#include <glib.h>

#include "dcp-machine.h"
#include "dcp-plan.h"

G_BEGIN_DECLS

typedef struct _DcpState DcpState;

/* A token's state, read under its lock (dcp_state_hold) or not (peek). */
typedef struct {
  int lock;            /* the token's lock, or -1 */
  int mark;            /* its .due file, or -1 */
  gboolean owner_live; /* the mark is flock()ed: its owner lives */
  gint64 pid;          /* the owner's pid, as the mark says, or -1 */
  DcpMachine m;
} DcpTokenHold;

typedef struct {
  guint failures;  /* failed runs so far */
  gint64 first;    /* time of the first failure, or -1 */
  GPtrArray *done; /* token hashes already notified for this message */
} DcpRetry;

DcpState *dcp_state_open (const gchar *cache_root, GError **error);
const gchar *dcp_state_get_path (DcpState *state);
void dcp_state_free (DcpState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpState, dcp_state_free)

/* Lock the token and read its state; dcp_state_store() writes h->m back
 * (and h->pid), dcp_state_release() unlocks.  dcp_state_own() stores and
 * returns the mark flock()ed, for a new owner to inherit. */
gboolean dcp_state_hold (DcpState *state, const gchar *token, DcpTokenHold *h, GError **error);
void dcp_state_peek (DcpState *state, const gchar *token, DcpTokenHold *h);
gboolean dcp_state_store (DcpState *state, const gchar *token, DcpTokenHold *h, GError **error);
int dcp_state_own (DcpState *state, const gchar *token, DcpTokenHold *h, GError **error);
void dcp_state_release (DcpTokenHold *h);
gboolean dcp_state_mark_missing (int fd);
GPtrArray *dcp_state_marked_tokens (DcpState *state);

gboolean dcp_state_record (DcpState *state, const gchar *token, gint64 now, const gchar *result,
                           GError **error);
void dcp_state_result (DcpState *state, const gchar *token, gint64 *when, gchar **result);
gint64 dcp_state_gone_since (DcpState *state, const gchar *token);
gboolean dcp_state_set_gone (DcpState *state, const gchar *token, gboolean gone, gint64 now,
                             GError **error);

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
