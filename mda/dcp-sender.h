/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The detached sender: the trailing push and the owed push, each a process
 * of its own per token that outlives the run that started it. */
#pragma once

#include "dcp-push.h"
#include "dcp-run.h"

gboolean dcp_sender_start_trailing (DcpRun *r, const gchar *token, const DcpSlot *slot,
                                    GError **error);
void dcp_sender_owe (DcpRun *r, const gchar *token, DcpSlot *slot, gint64 failed_at);
void dcp_sender_poke_owed (DcpRun *r, const gchar *token);
DcpStatus dcp_sender_run_trailing (DcpRun *r);
DcpStatus dcp_sender_run_owed (DcpRun *r);
