/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Push tokens: validation, token-file syntax, and the two derived names we
 * ever use instead of the token itself (a hash for file names, a short
 * prefix for logs). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DCP_TOKEN_MAX 4096

gboolean dcp_token_validate (const gchar *token, gsize len, GError **error);
GPtrArray *dcp_token_list_parse (const gchar *text, gsize len, GError **error);
gchar *dcp_token_hash (const gchar *token);
gchar *dcp_token_display (const gchar *token);

G_END_DECLS
