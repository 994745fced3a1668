/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What every mode of a run shares: the settings, the cache (optional), the
 * HTTP client (loaded on first use), feeding one event to a token's state
 * machine under its lock, and sending one push and recording what came
 * of it. */
#pragma once

#include "dcp-http.h"
#include "dcp-machine.h"
#include "dcp-settings.h"
#include "dcp-mark.h"
#include "dcp-state.h"

typedef struct {
  DcpSettings *s;
  DcpState *state;   /* NULL when the cache is unusable */
  DcpHttp *http;     /* loaded on first use */
  GPtrArray *tokens; /* this run's: those given, then the devices */
  gint64 deadline;   /* monotonic µs: end of the network budget */
  gboolean http_failed;
} DcpRun;

void dcp_run_clear (DcpRun *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DcpRun, dcp_run_clear)

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
gchar *dcp_format_time (gint64 us);
