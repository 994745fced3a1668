/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A token's marks in the state directory (dcp-state.h has the layout):
 * its state machine's state (dcp-machine.h) read and written under the
 * token's lock, the gone mark, and the result of its last push.  An owed
 * push and a trailing one are both held in the token's .due mark, with the
 * pid of the detached process that owns them. */
#pragma once

#include <glib.h>

#include "dcp-machine.h"
#include "dcp-state.h"

G_BEGIN_DECLS

/* A token's state, read under its lock (dcp_mark_hold) or not (peek). */
typedef struct {
  int lock;            /* the token's lock, or -1 */
  int mark;            /* its .due file, or -1 */
  gboolean owner_live; /* the mark is flock()ed: its owner lives */
  gint64 pid;          /* the owner's pid, as the mark says, or -1 */
  DcpMachine m;
} DcpMarkHold;

#define DCP_MARK_HOLD_INIT                                                                         \
  {                                                                                                \
    .lock = -1, .mark = -1, .owner_live = FALSE, .pid = -1, .m = DCP_MACHINE_INIT                  \
  }

/* Lock the token and read its state; dcp_mark_store() writes h->m back
 * (and h->pid), dcp_mark_release() unlocks.  dcp_mark_own() stores and
 * returns the mark flock()ed, for a new owner to inherit. */
gboolean dcp_mark_hold (DcpState *state, const gchar *token, DcpMarkHold *h, GError **error);
void dcp_mark_peek (DcpState *state, const gchar *token, DcpMarkHold *h);
gboolean dcp_mark_store (DcpState *state, const gchar *token, DcpMarkHold *h, GError **error);
int dcp_mark_own (DcpState *state, const gchar *token, DcpMarkHold *h, GError **error);
void dcp_mark_release (DcpMarkHold *h);
/* What an open mark says (its file may be gone from the directory); the
 * bucket and the last push are kept elsewhere and not in it. */
gboolean dcp_mark_read_fd (int fd, DcpMachine *m);
gboolean dcp_mark_missing (int fd);
GPtrArray *dcp_mark_tokens (DcpState *state, GError **error);

gboolean dcp_mark_record (DcpState *state, const gchar *token, gint64 now, const gchar *result,
                          GError **error);
void dcp_mark_result (DcpState *state, const gchar *token, gint64 *when, gchar **result);
gint64 dcp_mark_gone_since (DcpState *state, const gchar *token);
gboolean dcp_mark_set_gone (DcpState *state, const gchar *token, gboolean gone, gint64 now,
                            GError **error);

G_END_DECLS
