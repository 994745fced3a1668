/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The config file: found, refused when anyone but the user (or root) may
 * change it, read whole through dcp-file.h (never blocks, at most 1 MiB),
 * parsed from memory, and its values taken with the file named in every
 * error.  What the keys mean is dcp-settings.c's. */
#pragma once

#include <glib.h>

typedef struct {
  GKeyFile *kf;
  gchar *path;
} DcpConfig;

/* A path as settings give it: ~/ is the home directory. */
gchar *dcp_config_expand_home (const gchar *path);

/* given: the file --config names, or NULL for the default one, which may
 * be missing (then *config is NULL). */
gboolean dcp_config_load (const gchar *given, DcpConfig **config, GError **error);
void dcp_config_free (DcpConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpConfig, dcp_config_free)

/* Every key must be one of known (NULL-terminated). */
gboolean dcp_config_check_keys (DcpConfig *config, const gchar *const *known, GError **error);

/* A string or list: the file's value, unless *out is set already (the
 * command line gave it); a boolean: the file's value, when it has one. */
gboolean dcp_config_string (DcpConfig *config, const gchar *key, gchar **out, GError **error);
gboolean dcp_config_list (DcpConfig *config, const gchar *key, gchar ***out, GError **error);
gboolean dcp_config_bool (DcpConfig *config, const gchar *key, gboolean *out, GError **error);
