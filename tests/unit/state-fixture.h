/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the tests of the state directory's files share: a fresh directory
 * per test (Fixture), a clock of our own, and the steps mda/ takes under
 * a token's lock. */
#pragma once

#include <glib.h>

#include "dcp-machine.h"
#include "dcp-mark.h"
#include "dcp-state.h"

/* 2026-11-22 04:00:00.123456 UTC, in µs: odd microseconds on purpose */
#define T0 G_GINT64_CONSTANT (1795320000123456)
#define SEC G_USEC_PER_SEC
#define W (60 * SEC)

/* the relays' schedule */
const DcpSchedule *relays (void);

#define CONFIG(burst)                                                                              \
  {                                                                                                \
    W, burst, 10 * SEC, TRUE, relays ()                                                            \
  }

#define TOKEN "openpgp:v1/Zq+Rw==TOKENtext"

typedef struct {
  gchar *tmp;  /* from g_dir_make_tmp: everything lives below it */
  gchar *root; /* the cache root handed to dcp_state_open */
  DcpState *state;
} Fixture;

void fixture_setup (Fixture *f, gconstpointer data);
void fixture_teardown (Fixture *f, gconstpointer data);
#define ADD_FIXTURE(path, fn) g_test_add (path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

void rm_rf (const gchar *path);

/* Feed one event to the token's machine under its lock, as mda/ does;
 * a new owner's mark is returned locked in *own (or closed). */
DcpActions step (Fixture *f, const gchar *token, guint burst, DcpEvent e, int *own);
/* A message read at now (burst 3). */
DcpActions read_at (Fixture *f, const gchar *token, gint64 now, int *own);
/* The answer to a push started at started (burst 3). */
DcpActions answer (Fixture *f, const gchar *token, gint64 started, gint64 now, DcpHttpOutcome out);
DcpMarkHold peek_state (Fixture *f, const gchar *token);
/* The path of one of token's files: its hash, then suffix. */
gchar *state_file (Fixture *f, const gchar *token, const gchar *suffix);
gboolean exists_nofollow (const gchar *path);
/* The names in a directory, sorted. */
GPtrArray *list_dir (const gchar *path);
gint64 mtime_us (const gchar *path);
