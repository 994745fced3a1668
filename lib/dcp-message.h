/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Message facts: what the header block of one message tells us, and nothing
 * about what to do with it.  Reading stops at the end of the header block
 * (or 1 MiB); a pipe is then drained with a fixed buffer, a regular file is
 * left alone.  Parsing never fails: junk just yields fewer facts. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DCP_MESSAGE_HEADER_MAX (1024 * 1024)

typedef struct {
  gchar **auto_submitted; /* raw unfolded value of every Auto-Submitted field */
  gchar *from;            /* lower-cased addr-spec of the first From mailbox */
  gboolean chat_version;  /* a Chat-Version field is present */
  gchar *message_id;      /* Message-ID without brackets, or NULL */
  gint64 received_s;      /* newest Received date (seconds since the Epoch)
                           * not added by a fetching program, or -1 */
  gchar *key;             /* stable hex id: hash of Message-ID or headers */
  gsize header_length;    /* bytes of header block that were looked at */
  gboolean truncated;     /* header block was cut at DCP_MESSAGE_HEADER_MAX */
} DcpMessage;

DcpMessage *dcp_message_new_from_bytes (const guint8 *data, gsize len);
GBytes *dcp_message_read_header_block (int fd, gsize *total_read, GError **error);
gboolean dcp_message_drain (int fd, gsize *total_read, GError **error);
GBytes *dcp_message_read_header (int fd, gsize *total_read, GError **error);
void dcp_message_free (DcpMessage *msg);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpMessage, dcp_message_free)

G_END_DECLS
