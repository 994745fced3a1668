/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The decision: a pure function of the message facts, the policy and the
 * time, in seconds (the resolution of a Received date).  No I/O, no globals, so it can be tested
 * exhaustively and fuzzed. */
#pragma once

#include "dcp-message.h"

G_BEGIN_DECLS

typedef enum {
  DCP_VERDICT_NOTIFY,
  DCP_VERDICT_SKIP_AUTO,     /* Auto-Submitted other than "no" */
  DCP_VERDICT_SKIP_SELF,     /* From is one of the account's own addresses */
  DCP_VERDICT_SKIP_OLD,      /* reached the server longer ago than max_age */
  DCP_VERDICT_SKIP_NOT_CHAT, /* chat_only and no Chat-Version */
} DcpVerdict;

typedef struct {
  const gchar *const *self; /* NULL-terminated, or NULL */
  gint64 max_age_s;         /* 0 = off */
  gboolean chat_only;
} DcpPolicy;

DcpVerdict dcp_decide (const DcpMessage *msg, const DcpPolicy *policy, gint64 now_s);
const gchar *dcp_verdict_to_string (DcpVerdict verdict);
gboolean dcp_auto_submitted_is_automatic (const gchar *value);

G_END_DECLS
