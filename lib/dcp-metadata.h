/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Device tokens from Dovecot's metadata dictionary file.
 *
 * Delta Chat stores each device's push token on the server with
 * `SETMETADATA "INBOX" (/private/devicetoken "<token>")` when the server
 * advertises METADATA and XDELTAPUSH.  Dovecot's file dict keeps it as a
 * pair of lines, `priv/<INBOX GUID>/devicetoken` then the value, both
 * tab-escaped (src/lib-dict/dict-file.c, str_tabescape()).  Reading that
 * file is the only way that works as the mail user, which is how Dovecot
 * runs a sieve program: doveadm needs the auth-userdb socket. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* tokens taken from one file, at most: Dovecot keeps one per mailbox */
#define DCP_METADATA_TOKENS_MAX 32

gchar *dcp_metadata_unescape (const gchar *text, gsize len, gsize *out_len);
GPtrArray *dcp_metadata_parse (const gchar *data, gsize len, GPtrArray *warnings);
GPtrArray *dcp_metadata_load (const gchar *path, GPtrArray *warnings, GError **error);

G_END_DECLS
