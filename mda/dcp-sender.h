/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The detached owner of a token's next push: a trailing push, or an owed
 * one; a process of its own per token that outlives the run that started
 * it. */
#pragma once

#include "dcp-push.h"
#include "dcp-run.h"

void dcp_sender_start (DcpRun *r, const gchar *token, DcpStep *step);
DcpStatus dcp_sender_run_owner (DcpRun *r);
