/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the files of the state directory share (dcp-state.c): the
 * directory descriptor, names derived from a token, bounded locking, and
 * writing a file's content or mtime.  For dcp-mark.c, dcp-retry.c and
 * dcp-device.c only: never included outside lib/, and hidden from the
 * library's symbols (G_GNUC_INTERNAL). */
#pragma once

#include <glib.h>

#include "dcp-state.h"

G_BEGIN_DECLS

struct _DcpState {
  int dirfd; /* the directory, opened without following symlinks */
  gchar *path;
};

/* a run never waits longer than this for a token's lock */
#define DCP_STATE_LOCK_WAIT_US (2 * G_USEC_PER_SEC)
#define DCP_STATE_LOCK_POLL_US 2000

G_GNUC_INTERNAL gboolean dcp_state_set_errno_error (GError **error, int err, const gchar *what,
                                                    const gchar *name);
G_GNUC_INTERNAL gchar *dcp_state_token_file (const gchar *token, const gchar *suffix);
G_GNUC_INTERNAL int dcp_state_open_file (DcpState *state, const gchar *name, int flags,
                                         GError **error);
G_GNUC_INTERNAL int dcp_state_lock_token (DcpState *state, const gchar *token, GError **error);
G_GNUC_INTERNAL void dcp_state_unlock_token (int fd);
G_GNUC_INTERNAL gint64 dcp_state_mtime (DcpState *state, const gchar *name);
G_GNUC_INTERNAL gboolean dcp_state_touch (DcpState *state, const gchar *name, gint64 t,
                                          const gchar *content, GError **error);
G_GNUC_INTERNAL gboolean dcp_state_replace (DcpState *state, const gchar *name,
                                            const gchar *content, gint64 t, GError **error);
G_GNUC_INTERNAL gboolean dcp_state_remove (DcpState *state, const gchar *name, GError **error);
G_GNUC_INTERNAL GPtrArray *dcp_state_list (DcpState *state, const gchar *suffix, GError **error);

G_END_DECLS
