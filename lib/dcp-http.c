/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HTTP client.
 *
 * libcurl (and through it OpenSSL, nghttp2, libssh2, LDAP, Kerberos...) is
 * loaded with dlopen() the first time something is to be sent.  Linking it
 * would make every run load it before main(), also a run that skips or
 * rate-limits and sends nothing (tests/bench/README.md has the figures).
 *
 * The contract with the proxy: POST the raw token, nothing else.  200 is
 * done, 410 means the token is dead, anything else is worth a retry.  We
 * never follow redirects (a redirect is "anything else") and read at most
 * RESPONSE_MAX bytes of an answer.
 *
 * All the tokens of a run go out at once, on one multi handle, so that a
 * run ends by its deadline however many tokens it has: a silent proxy costs
 * the deadline once, not once per token.  Each request in flight has an
 * easy handle of its own, copied from one template that carries every
 * option; at most REQUESTS_MAX are in flight, the rest wait for one to
 * finish.  The multi handle owns the connections, at most CONNECTIONS_MAX:
 * HTTP/1.1 keep-alive across requests and calls, and one connection for
 * all when the proxy speaks HTTP/2.  Retries are per token, with a backoff
 * of their own; a token waiting for its retry holds no handle.
 *
 * Trust: --cacert names the only CA file to trust.  Otherwise the system
 * store is looked up in libcurl's default CA directory (Debian's
 * /etc/ssl/certs, hashed by update-ca-certificates) when the TLS backend
 * is OpenSSL: OpenSSL then reads only the one issuer certificate it needs,
 * where the bundle (ca-certificates.crt) would cost parsing some 140
 * certificates on every run, most of a push's CPU time.  Same store, same
 * verification.  Other backends keep libcurl's default (the bundle). */
#include "dcp-http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>

#include <curl/curl.h>

#include "dcp-error.h"

/* the soname Debian's libcurl4-openssl-dev links against */
#define DCP_LIBCURL_SONAME "libcurl.so.4"

#define RESPONSE_MAX 65536
#define BACKOFF_FIRST_US (250 * 1000)
#define BACKOFF_MAX_US (2 * G_USEC_PER_SEC)
/* don't start an attempt that cannot possibly complete */
#define ATTEMPT_MIN_US (100 * 1000)
/* Requests in flight at once: all of an address's devices (Delta Chat
 * keeps at most 64) in one round.  Connections: at most CONNECTIONS_MAX to
 * the proxy, and as many kept for the next call; over HTTP/1.1 the
 * requests beyond them wait in libcurl for a connection to come free, over
 * HTTP/2 they are streams of one connection. */
#define REQUESTS_MAX 64
#define CONNECTIONS_MAX 16
/* the longest poll() between looks at the clock */
#define POLL_MAX_MS 1000

/* The functions we use, typed by libcurl's own prototypes, so the compiler
 * checks every call through these pointers against <curl/curl.h>.  (The
 * slots have names of their own: curl.h may define curl_easy_setopt() and
 * friends as type-checking macros.) */
#define DCP_CURL_FUNCS(X)                                                                          \
  X (global_init, curl_global_init)                                                                \
  X (easy_init, curl_easy_init)                                                                    \
  X (easy_setopt, curl_easy_setopt)                                                                \
  X (easy_duphandle, curl_easy_duphandle)                                                          \
  X (easy_getinfo, curl_easy_getinfo)                                                              \
  X (easy_cleanup, curl_easy_cleanup)                                                              \
  X (easy_strerror, curl_easy_strerror)                                                            \
  X (version_info, curl_version_info)                                                              \
  X (slist_append, curl_slist_append)                                                              \
  X (slist_free_all, curl_slist_free_all)                                                          \
  X (multi_init, curl_multi_init)                                                                  \
  X (multi_setopt, curl_multi_setopt)                                                              \
  X (multi_add_handle, curl_multi_add_handle)                                                      \
  X (multi_remove_handle, curl_multi_remove_handle)                                                \
  X (multi_perform, curl_multi_perform)                                                            \
  X (multi_poll, curl_multi_poll)                                                                  \
  X (multi_info_read, curl_multi_info_read)                                                        \
  X (multi_strerror, curl_multi_strerror)                                                          \
  X (multi_cleanup, curl_multi_cleanup)

typedef struct {
#define DCP_CURL_SLOT(slot, fn) __typeof__ (fn) *slot;
  DCP_CURL_FUNCS (DCP_CURL_SLOT)
#undef DCP_CURL_SLOT
} CurlApi;

/* The ELF dlopen metadata note (the freedesktop.org "ELF dlopen metadata"
 * format, as systemd writes it): packaging tools read from it that the
 * program loads libcurl, so a package built from it depends on libcurl
 * as if it were linked. */
#define DCP_NOTE_DLOPEN_OWNER "FDO"
#define DCP_NOTE_DLOPEN_TYPE 0x407c0c0au
#define DCP_NOTE_DLOPEN_JSON                                                                       \
  "[{\"feature\":\"curl\",\"description\":\"HTTP(S) client for sending pushes\","                  \
  "\"priority\":\"required\",\"soname\":[\"" DCP_LIBCURL_SONAME "\"]}]"

__attribute__ ((used, section (".note.dlopen"), aligned (4))) static const struct {
  guint32 n_namesz, n_descsz, n_type;
  char name[sizeof DCP_NOTE_DLOPEN_OWNER];
  _Alignas(4) char desc[sizeof DCP_NOTE_DLOPEN_JSON];
} dcp_note_dlopen = {
  sizeof DCP_NOTE_DLOPEN_OWNER, sizeof DCP_NOTE_DLOPEN_JSON, DCP_NOTE_DLOPEN_TYPE,
  DCP_NOTE_DLOPEN_OWNER,        DCP_NOTE_DLOPEN_JSON,
};

/* One easy handle and what its callbacks keep of the current attempt. */
typedef struct {
  CurlApi *api;
  CURL *easy;
  guint request; /* the index of the request it carries */
  gboolean busy; /* added to the multi handle */
  gsize received;
  gboolean headers_done; /* the final status line and headers are in */
  char errbuf[CURL_ERROR_SIZE];
} Transfer;

struct _DcpHttp {
  CurlApi api;
  CURL *curl; /* the template: every option, never performed */
  CURLM *multi;
  struct curl_slist *headers;
  gchar *trust; /* what certificates are checked against, in words */
  Transfer *transfers[REQUESTS_MAX];
  guint n_transfers;
};

static gboolean
is_loopback (const gchar *host)
{
  g_autofree gchar *inner = NULL;
  struct in6_addr a6;
  struct in_addr a4;
  gsize len = strlen (host);

  if (g_ascii_strcasecmp (host, "localhost") == 0)
    return TRUE;
  /* GUri gives IPv6 literals without their brackets */
  if (len > 2 && host[0] == '[' && host[len - 1] == ']')
    host = inner = g_strndup (host + 1, len - 2);
  if (strchr (host, ':') != NULL)
    return inet_pton (AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK (&a6);
  /* 127.0.0.0/8, written the one way inet_pton accepts (no 127.1) */
  return inet_pton (AF_INET, host, &a4) == 1 && (ntohl (a4.s_addr) >> 24) == 127;
}

gboolean
dcp_http_check_url (const gchar *url, GError **error)
{
  g_autoptr (GUri) uri = NULL;
  g_autoptr (GError) local = NULL;
  const gchar *scheme, *host;

  uri = g_uri_parse (url, G_URI_FLAGS_NONE, &local);
  if (uri == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "invalid URL \"%s\": %s", url,
                   local->message);
      return FALSE;
    }
  scheme = g_uri_get_scheme (uri);
  host = g_uri_get_host (uri);
  if (host == NULL || *host == '\0')
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "URL \"%s\" has no host", url);
      return FALSE;
    }
  for (const gchar *p = host; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || (guchar) *p >= 0x7f)
      {
        g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "URL \"%s\" has a malformed host", url);
        return FALSE;
      }
  if (g_ascii_strcasecmp (scheme, "https") == 0)
    return TRUE;
  if (g_ascii_strcasecmp (scheme, "http") == 0)
    {
      if (is_loopback (host))
        return TRUE;
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "plain http:// is allowed only for loopback hosts, not \"%s\"", host);
      return FALSE;
    }
  g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "URL \"%s\" is neither https:// nor http://",
               url);
  return FALSE;
}

static gboolean
load_curl (CurlApi *api, GError **error)
{
  /* lazy: most of the symbols of libcurl's ~30 dependencies are never
   * called; local: they stay out of the global scope */
  void *h = dlopen (DCP_LIBCURL_SONAME, RTLD_LAZY | RTLD_LOCAL);

  if (h == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "cannot load libcurl: %s", dlerror ());
      return FALSE;
    }
#define DCP_CURL_LOAD(slot, fn)                                                                    \
  if ((*(void **) &api->slot = dlsym (h, #fn)) == NULL)                                            \
    {                                                                                              \
      g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl lacks %s", #fn);                  \
      return FALSE;                                                                                \
    }
  DCP_CURL_FUNCS (DCP_CURL_LOAD)
#undef DCP_CURL_LOAD
  return TRUE; /* never dlclose(): libcurl and OpenSSL don't like being unloaded */
}

/* We only need the status.  A body that is announced as large (or not
 * announced at all) is not waited for; a small one is read so the
 * connection can serve the next token. */
static size_t
on_header (char *data, size_t size, size_t nmemb, void *user)
{
  Transfer *t = user;
  gsize len = size * nmemb;
  long code = 0;
  curl_off_t length = -1;

  if (len > 2 || (len > 0 && data[0] != '\r' && data[0] != '\n'))
    return len;
  t->api->easy_getinfo (t->easy, CURLINFO_RESPONSE_CODE, &code);
  if (code < 200)
    return len; /* an interim 1xx answer */
  t->headers_done = TRUE;
  t->api->easy_getinfo (t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  return length < 0 || length > RESPONSE_MAX ? 0 : len;
}

static size_t
on_body (char *data, size_t size, size_t nmemb, void *user)
{
  Transfer *t = user;
  (void) data;

  t->received += size * nmemb;
  return t->received > RESPONSE_MAX ? 0 : size * nmemb;
}

/* A copy of libcurl's default CA directory, if the TLS backend looks
 * certificates up in it lazily (OpenSSL and its forks); else NULL. */
static gchar *
lazy_ca_dir (DcpHttp *http)
{
  const curl_version_info_data *v = http->api.version_info (CURLVERSION_NOW);
  const char *dir = NULL;

  if (v == NULL || v->ssl_version == NULL
      || !(g_str_has_prefix (v->ssl_version, "OpenSSL/")
           || g_str_has_prefix (v->ssl_version, "LibreSSL/")))
    return NULL;
  if (http->api.easy_getinfo (http->curl, CURLINFO_CAPATH, &dir) != CURLE_OK || dir == NULL
      || *dir == '\0')
    return NULL;
  return g_strdup (dir);
}

/* Load libcurl, initialise it (TLS only for https://), make the template
 * and the multi handle. */
static gboolean
curl_start (DcpHttp *http, const gchar *url, GError **error)
{
  CURLcode rc;

  if (!load_curl (&http->api, error))
    return FALSE;
  rc = http->api.global_init (g_str_has_prefix (url, "https:") ? CURL_GLOBAL_DEFAULT
                                                               : CURL_GLOBAL_NOTHING);
  if (rc != CURLE_OK)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "curl_global_init: %s",
                   http->api.easy_strerror (rc));
      return FALSE;
    }
  http->curl = http->api.easy_init ();
  http->multi = http->api.multi_init ();
  if (http->curl == NULL || http->multi == NULL)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_LIBRARY,
                           http->curl == NULL ? "curl_easy_init failed" : "curl_multi_init failed");
      return FALSE;
    }
  return TRUE;
}

#define SETOPT(opt, val)                                                                           \
  G_STMT_START                                                                                     \
  {                                                                                                \
    CURLcode _rc = http->api.easy_setopt (http->curl, opt, val);                                   \
    if (_rc != CURLE_OK)                                                                           \
      {                                                                                            \
        g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl option %s: %s", #opt,           \
                     http->api.easy_strerror (_rc));                                               \
        return FALSE;                                                                              \
      }                                                                                            \
  }                                                                                                \
  G_STMT_END

/* What to trust: cacert alone, or the system store, lazily if we can. */
static gboolean
set_trust (DcpHttp *http, const gchar *cacert, GError **error)
{
  g_autofree gchar *dir = cacert == NULL ? lazy_ca_dir (http) : NULL;
  const char *bundle = NULL;

  if (cacert != NULL)
    {
      http->trust = g_strdup_printf ("the CA file %s (--cacert)", cacert);
      SETOPT (CURLOPT_CAINFO, cacert);
      SETOPT (CURLOPT_CAPATH, (char *) NULL);
    }
  else if (dir != NULL)
    {
      http->trust = g_strdup_printf ("the system store, looked up in the hashed directory %s", dir);
      SETOPT (CURLOPT_CAPATH, dir);
      SETOPT (CURLOPT_CAINFO, (char *) NULL);
    }
  else
    {
      (void) http->api.easy_getinfo (http->curl, CURLINFO_CAINFO, &bundle);
      http->trust = g_strdup_printf ("the system store, read from the bundle %s",
                                     bundle ? bundle : "(libcurl's default)");
    }
  return TRUE;
}

/* The options of every request: see the top of the file. */
static gboolean
set_options (DcpHttp *http, const gchar *url, const gchar *user_agent, GError **error)
{
  /* no "Expect: 100-continue" (curl adds it for bodies over 1 KiB: a
   * second's wait for nothing); the body is opaque bytes */
  http->headers = http->api.slist_append (NULL, "Expect:");
  http->headers = http->api.slist_append (http->headers, "Content-Type: application/octet-stream");
  if (http->headers == NULL)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_LIBRARY, "curl_slist_append failed");
      return FALSE;
    }

  SETOPT (CURLOPT_URL, url);
  SETOPT (CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT (CURLOPT_NOSIGNAL, 1L);
  SETOPT (CURLOPT_FOLLOWLOCATION, 0L);
  SETOPT (CURLOPT_SSL_VERIFYPEER, 1L);
  SETOPT (CURLOPT_SSL_VERIFYHOST, 2L);
  SETOPT (CURLOPT_USERAGENT, user_agent);
  SETOPT (CURLOPT_HTTPHEADER, http->headers);
  SETOPT (CURLOPT_POST, 1L);
  SETOPT (CURLOPT_HEADERFUNCTION, on_header);
  SETOPT (CURLOPT_WRITEFUNCTION, on_body);
  SETOPT (CURLOPT_TCP_NODELAY, 1L);
  SETOPT (CURLOPT_NETRC, (long) CURL_NETRC_IGNORED);
  /* no proxy from http_proxy, https_proxy, ALL_PROXY: the token goes to
   * the URL's host and nowhere else */
  SETOPT (CURLOPT_PROXY, "");
  /* over TLS the handshake tells whether the connection multiplexes
   * (HTTP/2): the other requests wait for it rather than each opening its
   * own.  Plain http:// is HTTP/1.1, known only once an answer is in:
   * waiting would hold every other request behind the first answer. */
  if (g_ascii_strncasecmp (url, "https:", 6) == 0)
    SETOPT (CURLOPT_PIPEWAIT, 1L);
  return TRUE;
}

#define MSETOPT(opt, val)                                                                          \
  G_STMT_START                                                                                     \
  {                                                                                                \
    CURLMcode _rc = http->api.multi_setopt (http->multi, opt, val);                                \
    if (_rc != CURLM_OK)                                                                           \
      {                                                                                            \
        g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl option %s: %s", #opt,           \
                     http->api.multi_strerror (_rc));                                              \
        return FALSE;                                                                              \
      }                                                                                            \
  }                                                                                                \
  G_STMT_END

static gboolean
set_multi_options (DcpHttp *http, GError **error)
{
  MSETOPT (CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
  MSETOPT (CURLMOPT_MAX_HOST_CONNECTIONS, (long) CONNECTIONS_MAX);
  MSETOPT (CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) CONNECTIONS_MAX);
  MSETOPT (CURLMOPT_MAXCONNECTS, (long) CONNECTIONS_MAX);
  return TRUE;
}

#undef MSETOPT

DcpHttp *
dcp_http_new (const gchar *url, const gchar *user_agent, const gchar *cacert, GError **error)
{
  g_autoptr (DcpHttp) http = g_new0 (DcpHttp, 1);

  if (!curl_start (http, url, error) || !set_trust (http, cacert, error)
      || !set_options (http, url, user_agent, error) || !set_multi_options (http, error))
    return NULL;
  return g_steal_pointer (&http);
}

#undef SETOPT

void
dcp_http_free (DcpHttp *http)
{
  if (http == NULL)
    return;
  /* no transfer is left in the multi handle between calls */
  for (guint i = 0; i < http->n_transfers; i++)
    {
      http->api.easy_cleanup (http->transfers[i]->easy);
      g_free (http->transfers[i]);
    }
  if (http->multi != NULL)
    http->api.multi_cleanup (http->multi);
  if (http->curl != NULL)
    http->api.easy_cleanup (http->curl);
  if (http->headers != NULL)
    http->api.slist_free_all (http->headers);
  g_free (http->trust);
  g_free (http);
}

/* For --version: the libcurl and TLS library a push would use, and what
 * it checks certificates against. */
gchar *
dcp_http_describe (const gchar *cacert, GError **error)
{
  g_autoptr (DcpHttp) http = dcp_http_new ("https://localhost/", "", cacert, error);
  const curl_version_info_data *v;

  if (http == NULL)
    return NULL;
  v = http->api.version_info (CURLVERSION_NOW);
  return g_strdup_printf ("libcurl/%s %s; certificates checked against %s", v->version,
                          v->ssl_version ? v->ssl_version : "(no TLS)", http->trust);
}

/* Where a request stands during a call. */
typedef struct {
  guint attempts;
  gint64 backoff;  /* before the next retry */
  gint64 retry_at; /* it may go (again) from then on */
  gboolean in_flight, done;
} Progress;

/* A free transfer: an idle one, else a new copy of the template (the
 * caller makes sure that fewer than REQUESTS_MAX are busy). */
static Transfer *
transfer_get (DcpHttp *http, GError **error)
{
  Transfer *t;
  CURLcode rc;

  for (guint i = 0; i < http->n_transfers; i++)
    if (!http->transfers[i]->busy)
      return http->transfers[i];
  g_assert (http->n_transfers < REQUESTS_MAX);
  t = g_new0 (Transfer, 1);
  t->api = &http->api;
  t->easy = http->api.easy_duphandle (http->curl);
  if (t->easy == NULL)
    {
      g_free (t);
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_LIBRARY, "curl_easy_duphandle failed");
      return NULL;
    }
  if ((rc = http->api.easy_setopt (t->easy, CURLOPT_ERRORBUFFER, t->errbuf)) != CURLE_OK
      || (rc = http->api.easy_setopt (t->easy, CURLOPT_HEADERDATA, t)) != CURLE_OK
      || (rc = http->api.easy_setopt (t->easy, CURLOPT_WRITEDATA, t)) != CURLE_OK
      || (rc = http->api.easy_setopt (t->easy, CURLOPT_PRIVATE, t)) != CURLE_OK)
    {
      http->api.easy_cleanup (t->easy);
      g_free (t);
      g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl: %s",
                   http->api.easy_strerror (rc));
      return NULL;
    }
  http->transfers[http->n_transfers++] = t;
  return t;
}

/* Start an attempt at request i, to end by end at the latest. */
static gboolean
attempt_start (DcpHttp *http, const DcpHttpRequest *r, guint i, gint64 end, gint64 now,
               GError **error)
{
  long ms = (long) MAX ((end - now) / 1000, 1);
  Transfer *t = transfer_get (http, error);
  CURLMcode mc;
  CURLcode rc;

  if (t == NULL)
    return FALSE;
  t->request = i;
  t->received = 0;
  t->headers_done = FALSE;
  t->errbuf[0] = '\0';
  /* the body is the token's bytes, exactly */
  if ((rc = http->api.easy_setopt (t->easy, CURLOPT_POSTFIELDS, r->token)) != CURLE_OK
      || (rc = http->api.easy_setopt (t->easy, CURLOPT_POSTFIELDSIZE, (long) strlen (r->token)))
             != CURLE_OK
      || (rc = http->api.easy_setopt (t->easy, CURLOPT_TIMEOUT_MS, ms)) != CURLE_OK
      || (rc = http->api.easy_setopt (t->easy, CURLOPT_CONNECTTIMEOUT_MS, ms)) != CURLE_OK)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl: %s",
                   http->api.easy_strerror (rc));
      return FALSE;
    }
  if ((mc = http->api.multi_add_handle (http->multi, t->easy)) != CURLM_OK)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl: %s",
                   http->api.multi_strerror (mc));
      return FALSE;
    }
  t->busy = TRUE;
  return TRUE;
}

/* The outcome of a finished attempt; for FAILED (only), error says why. */
static DcpHttpOutcome
attempt_outcome (DcpHttp *http, Transfer *t, CURLcode rc, glong *status, GError **error)
{
  long code = 0;

  http->api.easy_getinfo (t->easy, CURLINFO_RESPONSE_CODE, &code);
  *status = code;
  if (rc == CURLE_OPERATION_TIMEDOUT && !t->headers_done)
    {
      const char *ip = NULL;

      /* a request that waited for a connection to come free would say
       * it failed to resolve the host */
      http->api.easy_getinfo (t->easy, CURLINFO_PRIMARY_IP, &ip);
      if (ip == NULL || *ip == '\0')
        g_set_error_literal (
            error, DCP_ERROR, DCP_ERROR_TRANSIENT,
            "timed out: not connected to the proxy (TCP and TLS) before the deadline");
      else
        g_set_error (error, DCP_ERROR, DCP_ERROR_TRANSIENT,
                     "timed out: no answer before the deadline: %s",
                     t->errbuf[0] ? t->errbuf : http->api.easy_strerror (rc));
      return DCP_HTTP_FAILED;
    }
  /* once the headers are in, the answer is known, whatever the body does */
  if (rc != CURLE_OK && !(t->headers_done && (code == 200 || code == 410)))
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_TRANSIENT, "%s",
                   t->errbuf[0] ? t->errbuf : http->api.easy_strerror (rc));
      return DCP_HTTP_FAILED;
    }
  if (code == 200)
    return DCP_HTTP_OK;
  if (code == 410)
    return DCP_HTTP_GONE;
  g_set_error (error, DCP_ERROR, DCP_ERROR_TRANSIENT, "HTTP %ld", code);
  return DCP_HTTP_FAILED;
}

/* A certificate that failed verification will fail it again a second
 * later: the call gives up on the request at once (its push is then owed,
 * or with --retry=caller the caller retries). */
static gboolean
worth_retrying (CURLcode rc)
{
  return rc != CURLE_PEER_FAILED_VERIFICATION && rc != CURLE_SSL_CACERT_BADFILE
         && rc != CURLE_SSL_CERTPROBLEM;
}

/* Take in every finished attempt: an answer or a final failure settles
 * its request, a failure worth retrying sends it back to wait.  Returns
 * how many requests were settled. */
static guint
collect (DcpHttp *http, DcpHttpRequest *requests, Progress *p, guint max_attempts, gint64 end,
         guint *busy)
{
  CURLMsg *msg;
  int queued;
  guint settled = 0;

  while ((msg = http->api.multi_info_read (http->multi, &queued)) != NULL)
    {
      Transfer *t = NULL;
      DcpHttpRequest *r;
      Progress *q;
      gint64 now;

      if (msg->msg != CURLMSG_DONE)
        continue;
      http->api.easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
      r = &requests[t->request];
      q = &p[t->request];
      g_clear_error (&r->error);
      r->outcome = attempt_outcome (http, t, msg->data.result, &r->status, &r->error);
      /* msg is gone once the handle is removed */
      http->api.multi_remove_handle (http->multi, t->easy);
      t->busy = FALSE;
      (*busy)--;
      q->in_flight = FALSE;
      now = g_get_monotonic_time ();
      if (r->outcome == DCP_HTTP_FAILED && !(max_attempts > 0 && q->attempts >= max_attempts)
          && end - now >= q->backoff + ATTEMPT_MIN_US && worth_retrying (msg->data.result))
        {
          q->retry_at = now + q->backoff;
          q->backoff = MIN (q->backoff * 2, BACKOFF_MAX_US);
          continue;
        }
      q->done = TRUE;
      settled++;
    }
  return settled;
}

/* What is left at the deadline, or when libcurl fails: every request in
 * flight is abandoned, and any not settled is FAILED (keeping the error of
 * its last attempt, if it waits for a retry). */
static void
give_up (DcpHttp *http, DcpHttpRequest *requests, Progress *p, guint n, const GError *why)
{
  for (guint i = 0; i < http->n_transfers; i++)
    {
      Transfer *t = http->transfers[i];
      DcpHttpRequest *r = &requests[t->request];

      if (!t->busy)
        continue;
      http->api.multi_remove_handle (http->multi, t->easy);
      t->busy = FALSE;
      p[t->request].in_flight = FALSE;
      g_clear_error (&r->error);
      r->status = 0;
      if (why != NULL)
        r->error = g_error_copy (why);
      else
        g_set_error_literal (&r->error, DCP_ERROR, DCP_ERROR_TRANSIENT,
                             "timed out: no answer before the deadline");
    }
  for (guint i = 0; i < n; i++)
    {
      DcpHttpRequest *r = &requests[i];

      if (p[i].done)
        continue;
      p[i].done = TRUE;
      r->outcome = DCP_HTTP_FAILED;
      if (r->error != NULL)
        continue;
      if (why != NULL)
        r->error = g_error_copy (why);
      else
        g_set_error (&r->error, DCP_ERROR, DCP_ERROR_TRANSIENT,
                     "timed out: not sent before the deadline (at most %d requests in flight)",
                     REQUESTS_MAX);
    }
}

void
dcp_http_request_clear (DcpHttpRequest *request)
{
  g_return_if_fail (request != NULL);
  g_clear_error (&request->error);
  request->outcome = DCP_HTTP_FAILED;
  request->status = 0;
}

/* Start whatever may go, in order, on the transfers free.  A request
 * that cannot be started is settled, with the reason.  Returns how many
 * were settled. */
static guint
start_ready (DcpHttp *http, DcpHttpRequest *requests, Progress *p, guint n, gint64 end, gint64 now,
             guint *busy)
{
  guint settled = 0;

  for (guint i = 0; i < n && *busy < REQUESTS_MAX && end - now >= ATTEMPT_MIN_US; i++)
    {
      g_autoptr (GError) local = NULL;

      if (p[i].done || p[i].in_flight || p[i].retry_at > now)
        continue;
      if (attempt_start (http, &requests[i], i, end, now, &local))
        {
          p[i].attempts++;
          p[i].in_flight = TRUE;
          (*busy)++;
          continue;
        }
      g_clear_error (&requests[i].error);
      requests[i].error = g_steal_pointer (&local);
      p[i].done = TRUE;
      settled++;
    }
  return settled;
}

/* How long to sleep, in ms, until a retry is due or the deadline (libcurl
 * wakes earlier when it has work). */
static int
sleep_ms (const Progress *p, guint n, gint64 now, gint64 end)
{
  gint64 wake = end;

  for (guint i = 0; i < n; i++)
    if (!p[i].done && !p[i].in_flight && p[i].retry_at > now)
      wake = MIN (wake, p[i].retry_at);
  return (int) CLAMP ((wake - now + 999) / 1000, 0, POLL_MAX_MS);
}

/* FALSE, with error set, when libcurl failed. */
static gboolean
multi_ok (DcpHttp *http, CURLMcode mc, GError **error)
{
  if (mc == CURLM_OK)
    return TRUE;
  g_set_error (error, DCP_ERROR, DCP_ERROR_LIBRARY, "libcurl: %s", http->api.multi_strerror (mc));
  return FALSE;
}

void
dcp_http_notify_all (DcpHttp *http, DcpHttpRequest *requests, guint n, gint64 deadline,
                     guint max_attempts)
{
  g_autofree Progress *p = NULL;
  g_autoptr (GError) failure = NULL;
  gint64 now = g_get_monotonic_time ();
  /* an attempt shorter than that could not complete: the first ones get
   * it even when the deadline is closer */
  gint64 end = MAX (deadline, now + ATTEMPT_MIN_US);
  guint pending = n, busy = 0;

  g_return_if_fail (http != NULL && (requests != NULL || n == 0));
  p = g_new0 (Progress, n);
  for (guint i = 0; i < n; i++)
    {
      dcp_http_request_clear (&requests[i]);
      p[i].backoff = BACKOFF_FIRST_US;
      p[i].retry_at = now;
    }

  while (pending > 0)
    {
      CURLMcode mc;
      int running;

      pending -= start_ready (http, requests, p, n, end, now, &busy);
      if (pending == 0)
        break;
      mc = http->api.multi_perform (http->multi, &running);
      if (mc == CURLM_OK)
        pending -= collect (http, requests, p, max_attempts, end, &busy);
      now = g_get_monotonic_time ();
      if (!multi_ok (http, mc, &failure) || pending == 0 || now >= end)
        break;
      mc = http->api.multi_poll (http->multi, NULL, 0, sleep_ms (p, n, now, end), NULL);
      now = g_get_monotonic_time ();
      if (!multi_ok (http, mc, &failure))
        break;
    }
  give_up (http, requests, p, n, failure);
}

DcpHttpOutcome
dcp_http_notify (DcpHttp *http, const gchar *token, gint64 deadline, guint max_attempts,
                 glong *status, GError **error)
{
  DcpHttpRequest r = { .token = token };
  DcpHttpOutcome out;

  g_return_val_if_fail (http != NULL && token != NULL, DCP_HTTP_FAILED);
  dcp_http_notify_all (http, &r, 1, deadline, max_attempts);
  out = r.outcome;
  if (status != NULL)
    *status = r.status;
  if (out == DCP_HTTP_FAILED)
    g_propagate_error (error, g_steal_pointer (&r.error));
  dcp_http_request_clear (&r);
  return out;
}
