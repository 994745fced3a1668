/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What every mode of a run (dcp-run.h) does alike: opening the cache
 * (optional), the HTTP client (loaded on first use), feeding one event to
 * a token's state machine under its lock, and sending one push and
 * recording what came of it. */
#pragma once

#include "dcp-http.h"
#include "dcp-machine.h"
#include "dcp-mark.h"
#include "dcp-run.h"
#include "dcp-settings.h"
#include "dcp-state.h"

void dcp_run_open_state (DcpRun *r, gboolean create);
void dcp_run_start_budget (DcpRun *r);
DcpHttp *dcp_run_http (DcpRun *r, GError **error);
void dcp_run_machine_config (DcpRun *r, DcpMachineConfig *config);

/* One event fed to a token's machine, under its lock. */
typedef struct {
  DcpActions a;
  DcpMachine m;  /* the state after it */
  gint64 pid;    /* the live owner, to poke */
  int own_fd;    /* a.detach_at: the mark, flock()ed, for the new owner */
  gboolean dead; /* an owner was found dead (and taken over) */
} DcpStep;

gboolean dcp_run_step (DcpRun *r, const gchar *token, DcpEvent *event, gboolean store,
                       DcpStep *step, GError **error);
void dcp_run_poke (DcpStep *step);

gchar *dcp_outcome_text (DcpHttpOutcome out, const GError *error);
void dcp_run_log_outcome (const gchar *token, DcpHttpOutcome out, const gchar *text);
void dcp_run_record (DcpRun *r, const gchar *token, DcpHttpOutcome out, const gchar *text);
DcpHttpOutcome dcp_run_post (DcpRun *r, const gchar *token, guint max_attempts, gchar **text_out);
