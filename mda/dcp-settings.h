/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Settings: the command line, then DELTACHAT_PUSH_URL, then the config
 * file, then the defaults.  Everything the library needs arrives through
 * this struct; the library never reads argv, the environment or files. */
#pragma once

#include <glib.h>

#include "dcp-retry.h"
#include "dcp-schedule.h"

#define DCP_DEFAULT_URL "https://notifications.delta.chat/notify"

typedef enum {
  DCP_MODE_DELIVER, /* one message on stdin */
  DCP_MODE_DRY_RUN,
  DCP_MODE_PING,
  DCP_MODE_STATUS,
  DCP_MODE_HELP,
  DCP_MODE_VERSION,
  DCP_MODE_TRAILING, /* internal: the detached process that owns a token's next push */
  DCP_MODE_RESUME,   /* take over orphaned pushes */
} DcpMode;

typedef struct {
  DcpMode mode;
  GPtrArray *tokens; /* validated, unique, in order */
  gchar *url;
  gchar *cacert;  /* NULL: the system's CA store */
  gint64 window;  /* seconds */
  gint64 burst;   /* pushes the bucket holds */
  gchar **self;   /* lower-case addresses */
  gint64 max_age; /* seconds */
  gboolean chat_only;
  gint64 timeout; /* seconds */
  gboolean best_effort;
  DcpRetryMode retry;
  gchar *retry_name;    /* as given; parsed into retry */
  DcpSchedule schedule; /* of an owed push; tests shorten it */
  gboolean trailing;
  gboolean verbose;
  gchar *cache_root;
  /* Dovecot's metadata dictionary file (absolute), or NULL */
  gchar *dovecot_metadata;
  GPtrArray *warnings; /* to be logged once logging is up */
  gchar *help;
} DcpSettings;

DcpSettings *dcp_settings_new (void);
void dcp_settings_free (DcpSettings *settings);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpSettings, dcp_settings_free)

gboolean dcp_settings_parse (DcpSettings *settings, int argc, char **argv, GError **error);
/* The command line of a detached run in mode that carries on with these
 * settings: the options marked for it, as --name=value. */
GStrv dcp_settings_detached_argv (DcpSettings *settings, DcpMode mode);
