/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HTTP client: every token of a run POSTed at once on one libcurl
 * multi handle, whose connections are kept across calls.  libcurl is
 * loaded on first use (dlopen), so runs that send nothing never pay for
 * loading or initialising it, or TLS.  An error is set for the outcome
 * DCP_HTTP_FAILED only. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _DcpHttp DcpHttp;

typedef enum {
  DCP_HTTP_OK,     /* 200 */
  DCP_HTTP_GONE,   /* 410: the token will never work again */
  DCP_HTTP_FAILED, /* anything else, after the retries the budget allowed */
} DcpHttpOutcome;

gboolean dcp_http_check_url (const gchar *url, GError **error);
DcpHttp *dcp_http_new (const gchar *url, const gchar *user_agent, const gchar *cacert,
                       GError **error);
gchar *dcp_http_describe (const gchar *cacert, GError **error);
DcpHttpOutcome dcp_http_notify (DcpHttp *http, const gchar *token, gint64 deadline,
                                guint max_attempts, glong *status, GError **error);

typedef struct {
  const gchar *token;
  DcpHttpOutcome outcome;
  glong status;
  GError *error; /* why, for DCP_HTTP_FAILED only */
} DcpHttpRequest;

/* POSTs every request at once; returns when each is answered (with the
 * same per-request retries dcp_http_notify makes within max_attempts)
 * or at deadline (monotonic µs, as dcp_http_notify's); every request's
 * outcome, status and error are set on return: one not answered by the
 * deadline gets DCP_HTTP_FAILED with an error saying so. */
void dcp_http_notify_all (DcpHttp *http, DcpHttpRequest *requests, guint n, gint64 deadline,
                          guint max_attempts);
void dcp_http_request_clear (DcpHttpRequest *request);
void dcp_http_free (DcpHttp *http);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcpHttp, dcp_http_free)

G_END_DECLS
