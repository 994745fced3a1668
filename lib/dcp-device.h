/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The device registry: device tokens remembered in the state directory
 * (<hash>.device, see dcp-state.h), a source of tokens for a run beside
 * those it is given.  A stock Dovecot keeps only the token written last,
 * so each one seen is kept here and pushed until the proxy answers 410
 * or it has not been seen for a while. */
#pragma once

#include <glib.h>

#include "dcp-state.h"

G_BEGIN_DECLS

/* devices remembered at most; the ones seen longest ago go first */
#define DCP_DEVICE_MAX 64

typedef struct {
  gchar *token;
  gchar *source; /* where it was seen, e.g. the dictionary file */
  gint64 seen;   /* last seen there */
} DcpDevice;

void dcp_device_free (DcpDevice *device);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpDevice, dcp_device_free)

gboolean dcp_device_seen (DcpState *state, const gchar *token, const gchar *source, gint64 now,
                          gboolean *gone, GError **error);
GPtrArray *dcp_device_list (DcpState *state, gint64 now, gint64 max_age, gboolean expire,
                            GError **error);
gboolean dcp_device_forget (DcpState *state, const gchar *token, GError **error);

G_END_DECLS
