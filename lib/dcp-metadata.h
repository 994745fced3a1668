/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Device tokens from Dovecot's metadata dictionary file.
 *
 * Delta Chat stores each device's push token on the server with
 * `SETMETADATA "INBOX" (/private/devicetoken "<token>")` when the server
 * offers METADATA and answers /shared/vendor/deltachat/maxsmtprecipients
 * with a number (core 2.58 and later; XDELTAPUSH before 2.60).  Dovecot's
 * file dict keeps it as a pair of lines, `priv/<INBOX GUID>/devicetoken`
 * then the value, both tab-escaped (src/lib-dict/dict-file.c,
 * str_tabescape()).  Reading that file is the only way that works as the
 * mail user, which is how Dovecot runs a sieve program: doveadm needs the
 * auth-userdb socket.
 *
 * That file keeps only the token written last; the login hook
 * (examples/deltachat-push.lua) records every token it sees there at
 * each IMAP login and logout in a devices file beside it, one
 * "<unix time> <token>" line per token, the token as the dict holds it. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* tokens taken from one file, at most: Dovecot keeps one per mailbox */
#define DCP_METADATA_TOKENS_MAX 32

/* a token from the devices file, and when the login hook last saw it */
typedef struct {
  gchar *token;
  gint64 seen_s; /* seconds since the Epoch */
} DcpMetadataSeen;

void dcp_metadata_seen_free (DcpMetadataSeen *seen);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpMetadataSeen, dcp_metadata_seen_free)

gchar *dcp_metadata_unescape (const gchar *text, gsize len, gsize *out_len);
GPtrArray *dcp_metadata_parse (const gchar *data, gsize len, GPtrArray *warnings);
GPtrArray *dcp_metadata_load (const gchar *path, GPtrArray *warnings, GError **error);
GPtrArray *dcp_metadata_parse_seen (const gchar *data, gsize len, GPtrArray *warnings);
GPtrArray *dcp_metadata_load_seen (const gchar *path, GPtrArray *warnings, GError **error);

G_END_DECLS
