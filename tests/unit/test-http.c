/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The URL check: https anywhere, plain http only to this machine, since the
 * request body is the push token itself.  And the client against a real
 * HTTP/1.1 server on 127.0.0.1 (threads of this program): the exact bodies
 * it receives, the answers' mapping, the retries and the deadline. */
#include <gio/gio.h>
#include <string.h>

#include "dcp-error.h"
#include "dcp-http.h"

static void
assert_url_ok (const gchar *url)
{
  g_autoptr (GError) error = NULL;

  g_test_message ("accept %s", url);
  g_assert_true (dcp_http_check_url (url, &error));
  g_assert_no_error (error);
}

static void
assert_url_rejected (const gchar *url)
{
  g_autoptr (GError) error = NULL;

  g_test_message ("reject %s", url);
  g_assert_false (dcp_http_check_url (url, &error));
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
  if (error != NULL)
    g_assert_cmpstr (error->message, !=, "");
}

static void
test_https_any_host (void)
{
  assert_url_ok ("https://notifications.delta.chat/notify");
  assert_url_ok ("https://example.org");
  assert_url_ok ("https://example.org:8443/a/b?c=d");
  assert_url_ok ("https://10.0.0.1/notify");
  assert_url_ok ("https://[2001:db8::1]/notify");
  assert_url_ok ("https://127.0.0.1/");
  assert_url_ok ("HTTPS://Example.ORG/notify");
}

static void
test_http_loopback (void)
{
  assert_url_ok ("http://127.0.0.1");
  assert_url_ok ("http://127.0.0.1:8080/notify");
  assert_url_ok ("http://127.1.2.3/");
  assert_url_ok ("http://127.255.255.254:1/");
  assert_url_ok ("http://[::1]:9000/notify");
  assert_url_ok ("http://[::1]/");
  assert_url_ok ("http://localhost");
  assert_url_ok ("http://localhost:9000/notify");
  assert_url_ok ("http://LOCALHOST/");
  assert_url_ok ("HTTP://127.0.0.1/");
}

static void
test_http_remote_rejected (void)
{
  assert_url_rejected ("http://example.org");
  assert_url_rejected ("http://example.org/notify");
  assert_url_rejected ("http://10.0.0.1/");
  assert_url_rejected ("http://192.168.1.1:8080/");
  assert_url_rejected ("http://0.0.0.0/");
  assert_url_rejected ("http://128.0.0.1/");
  assert_url_rejected ("http://[::2]/");
  assert_url_rejected ("http://[::2]:9000/");
  assert_url_rejected ("http://[2001:db8::1]/");
  /* names that merely start like a loopback host */
  assert_url_rejected ("http://localhost.example.org/");
  assert_url_rejected ("http://127.0.0.1.example.org/");
  assert_url_rejected ("http://localhostx/");
  /* a loopback-looking userinfo, query or fragment is not the host */
  assert_url_rejected ("http://127.0.0.1@example.org/");
  assert_url_rejected ("http://127.0.0.1:80@example.org/");
  assert_url_rejected ("http://localhost@example.org/");
  assert_url_rejected ("http://[::1]@example.org/");
  assert_url_rejected ("http://example.org#@127.0.0.1/");
  assert_url_rejected ("http://example.org?@127.0.0.1/");
  assert_url_rejected ("http://example.org/127.0.0.1");
  /* IPv4-mapped and numeric spellings are not taken for loopback */
  assert_url_rejected ("http://[::ffff:10.0.0.1]/");
}

static void
test_other_schemes_rejected (void)
{
  assert_url_rejected ("ftp://example.org/");
  assert_url_rejected ("ftp://127.0.0.1/");
  assert_url_rejected ("file:///etc/passwd");
  assert_url_rejected ("gopher://localhost/");
  assert_url_rejected ("ws://localhost/");
  assert_url_rejected ("httpx://localhost/");
}

static void
test_garbage_rejected (void)
{
  assert_url_rejected ("");
  assert_url_rejected ("garbage");
  assert_url_rejected ("example.org/notify");
  assert_url_rejected ("//example.org/notify");
  assert_url_rejected ("https//example.org");
  assert_url_rejected ("http://[::1/");
  assert_url_rejected ("http://localhost:99999/");
  assert_url_rejected ("http://127.0.0.1:-1/");
  assert_url_rejected ("https://example.org:notaport/");
  assert_url_rejected ("http://localhost%00.example.org/");
}

/* A host no resolver could look up: refused when the settings are read,
 * not at the first push. */
static void
test_bad_host_rejected (void)
{
  assert_url_rejected ("https://exa mple.org/");
  assert_url_rejected ("http://127.0.0.1 /");
}

static void
test_no_host_rejected (void)
{
  assert_url_rejected ("https://");
  assert_url_rejected ("https:///notify");
  assert_url_rejected ("http://");
  assert_url_rejected ("http:///notify");
  assert_url_rejected ("https:notify");
}

/* The server: one thread accepting, one per connection.  Each request's
 * head and body are recorded; the answer depends on the token: "gone-*"
 * 410, "fail-*" 500, "flaky-*" 503 the first time and 200 after, "slow-*"
 * 200 after SLOW_US, else 200.  A silent server reads requests and never
 * answers.  Every wait is bounded:
 * reads wait at most POLL_MS at a time, to look at the stop flag, and a
 * request is waited for at most REQUEST_WAIT_US. */
#define POLL_MS 100
#define REQUEST_WAIT_US (30 * G_USEC_PER_SEC)
#define REQUEST_MAX 65536
#define SLOW_US (G_USEC_PER_SEC)

typedef struct {
  GSocket *listener;
  guint16 port;
  gboolean silent;
  gint stop;
  GMutex lock;
  GPtrArray *bodies;  /* gchar*, in the order they were read */
  GPtrArray *heads;   /* gchar*, the request line and headers of each */
  GHashTable *seen;   /* token -> number of requests */
  GPtrArray *threads; /* GThread* */
  guint connections;
  GThread *acceptor;
} Server;

typedef struct {
  Server *server;
  GSocket *socket;
} Conn;

/* Reads into buf until a whole request is in; returns its total length
 * (head and body), 0 at EOF, stop or error. */
static gsize
read_request (Conn *c, GString *buf, gsize *body_at, gsize *body_len)
{
  gint64 end = g_get_monotonic_time () + REQUEST_WAIT_US;

  for (;;)
    {
      const gchar *head_end = g_strstr_len (buf->str, buf->len, "\r\n\r\n");
      gchar chunk[4096];
      gssize got;
      g_autoptr (GError) error = NULL;

      if (head_end != NULL)
        {
          g_autofree gchar *head = g_ascii_strdown (buf->str, head_end - buf->str);
          const gchar *cl = strstr (head, "\r\ncontent-length:");
          gsize len = cl ? (gsize) g_ascii_strtoull (cl + 17, NULL, 10) : 0;

          *body_at = head_end + 4 - buf->str;
          *body_len = len;
          if (buf->len >= *body_at + len)
            return *body_at + len;
        }
      if (g_atomic_int_get (&c->server->stop) || g_get_monotonic_time () > end
          || buf->len > REQUEST_MAX)
        return 0;
      if (!g_socket_condition_timed_wait (c->socket, G_IO_IN, POLL_MS * 1000, NULL, NULL))
        continue;
      got = g_socket_receive (c->socket, chunk, sizeof chunk, NULL, &error);
      if (got <= 0)
        return 0;
      g_string_append_len (buf, chunk, got);
    }
}

static gboolean
send_all (GSocket *socket, const gchar *data, gsize len)
{
  while (len > 0)
    {
      gssize sent = g_socket_send (socket, data, len, NULL, NULL);

      if (sent <= 0)
        return FALSE;
      data += sent;
      len -= sent;
    }
  return TRUE;
}

static guint
answer_for (Server *s, const gchar *head, const gchar *token)
{
  guint times;

  g_mutex_lock (&s->lock);
  times = GPOINTER_TO_UINT (g_hash_table_lookup (s->seen, token)) + 1;
  g_hash_table_insert (s->seen, g_strdup (token), GUINT_TO_POINTER (times));
  g_ptr_array_add (s->bodies, g_strdup (token));
  g_ptr_array_add (s->heads, g_strdup (head));
  g_mutex_unlock (&s->lock);
  if (g_str_has_prefix (token, "gone-"))
    return 410;
  if (g_str_has_prefix (token, "fail-"))
    return 500;
  if (g_str_has_prefix (token, "flaky-") && times == 1)
    return 503;
  if (g_str_has_prefix (token, "slow-"))
    g_usleep (SLOW_US);
  return 200;
}

static gpointer
serve_connection (gpointer data)
{
  g_autofree Conn *c = data;
  g_autoptr (GString) buf = g_string_new (NULL);
  gsize total, body_at = 0, body_len = 0;

  g_socket_set_blocking (c->socket, TRUE);
  while ((total = read_request (c, buf, &body_at, &body_len)) > 0)
    {
      g_autofree gchar *head = g_strndup (buf->str, body_at);
      g_autofree gchar *body = g_strndup (buf->str + body_at, body_len);
      guint code = answer_for (c->server, head, body);

      g_string_erase (buf, 0, total);
      if (!c->server->silent)
        {
          g_autofree gchar *reply = g_strdup_printf (
              "HTTP/1.1 %u X\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok", code);
          if (!send_all (c->socket, reply, strlen (reply)))
            break;
        }
    }
  g_socket_close (c->socket, NULL);
  g_object_unref (c->socket);
  return NULL;
}

static gpointer
serve (gpointer data)
{
  Server *s = data;

  while (!g_atomic_int_get (&s->stop))
    {
      GSocket *sock;
      Conn *c;

      if (!g_socket_condition_timed_wait (s->listener, G_IO_IN, POLL_MS * 1000, NULL, NULL))
        continue;
      sock = g_socket_accept (s->listener, NULL, NULL);
      if (sock == NULL)
        continue;
      c = g_new0 (Conn, 1);
      c->server = s;
      c->socket = sock;
      g_mutex_lock (&s->lock);
      s->connections++;
      g_mutex_unlock (&s->lock);
      g_ptr_array_add (s->threads, g_thread_new ("conn", serve_connection, c));
    }
  return NULL;
}

static Server *
server_start (gboolean silent)
{
  Server *s = g_new0 (Server, 1);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) any = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GError) error = NULL;

  s->silent = silent;
  g_mutex_init (&s->lock);
  s->bodies = g_ptr_array_new_with_free_func (g_free);
  s->heads = g_ptr_array_new_with_free_func (g_free);
  s->seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  s->threads = g_ptr_array_new ();
  s->listener
      = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, &error);
  g_assert_no_error (error);
  g_socket_bind (s->listener, any, TRUE, &error);
  g_assert_no_error (error);
  g_socket_set_listen_backlog (s->listener, 128);
  g_socket_listen (s->listener, &error);
  g_assert_no_error (error);
  bound = g_socket_get_local_address (s->listener, &error);
  g_assert_no_error (error);
  s->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  s->acceptor = g_thread_new ("accept", serve, s);
  return s;
}

static void
server_stop (Server *s)
{
  g_atomic_int_set (&s->stop, 1);
  g_thread_join (s->acceptor);
  /* the acceptor is done: nobody adds threads any more */
  for (guint i = 0; i < s->threads->len; i++)
    g_thread_join (s->threads->pdata[i]);
  g_ptr_array_unref (s->threads);
  g_socket_close (s->listener, NULL);
  g_object_unref (s->listener);
  g_ptr_array_unref (s->bodies);
  g_ptr_array_unref (s->heads);
  g_hash_table_unref (s->seen);
  g_mutex_clear (&s->lock);
  g_free (s);
}

static guint
server_count (Server *s, const gchar *token)
{
  guint n;

  g_mutex_lock (&s->lock);
  n = GPOINTER_TO_UINT (g_hash_table_lookup (s->seen, token));
  g_mutex_unlock (&s->lock);
  return n;
}

static DcpHttp *
client_for (Server *s)
{
  g_autofree gchar *url = g_strdup_printf ("http://127.0.0.1:%u/notify", s->port);
  g_autoptr (GError) error = NULL;
  DcpHttp *http = dcp_http_new (url, "dcp-test", NULL, &error);

  g_assert_no_error (error);
  g_assert_nonnull (http);
  return http;
}

static DcpHttpRequest *
requests_new (guint n, const gchar *const *prefixes)
{
  DcpHttpRequest *r = g_new0 (DcpHttpRequest, n);

  for (guint i = 0; i < n; i++)
    {
      r[i].token = g_strdup_printf ("%s%u-%s", prefixes[i % g_strv_length ((gchar **) prefixes)], i,
                                    "0123456789abcdef");
      r[i].outcome = DCP_HTTP_OK; /* to see that it is set */
      r[i].status = -1;
    }
  return r;
}

static void
requests_free (DcpHttpRequest *r, guint n)
{
  for (guint i = 0; i < n; i++)
    {
      dcp_http_request_clear (&r[i]);
      g_free ((gchar *) r[i].token);
    }
  g_free (r);
}

static guint
server_requests (Server *s)
{
  guint n;

  g_mutex_lock (&s->lock);
  n = s->bodies->len;
  g_mutex_unlock (&s->lock);
  return n;
}

static guint
server_connections (Server *s)
{
  guint n;

  g_mutex_lock (&s->lock);
  n = s->connections;
  g_mutex_unlock (&s->lock);
  return n;
}

/* Every token is posted once, its body the token's bytes exactly (no
 * newline, nothing else) under the same headers as ever, and each one is
 * answered 200; more tokens than go in flight at once (64) wait their
 * turn.  The connections are kept: never more than 16, and a second call
 * opens none. */
static void
test_all_posted (void)
{
  static const gchar *const plain[] = { "tok-", NULL };
  const guint n = 100;
  Server *s = server_start (FALSE);
  DcpHttp *http = client_for (s);
  DcpHttpRequest *r = requests_new (n, plain);
  gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;
  guint connections;

  dcp_http_notify_all (http, r, n, deadline, 0);
  for (guint i = 0; i < n; i++)
    {
      g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
      g_assert_cmpint (r[i].status, ==, 200);
      g_assert_no_error (r[i].error);
      g_assert_cmpuint (server_count (s, r[i].token), ==, 1);
    }
  g_assert_cmpuint (server_requests (s), ==, n);
  g_mutex_lock (&s->lock);
  for (guint i = 0; i < s->heads->len; i++)
    {
      g_autofree gchar *head = g_ascii_strdown (s->heads->pdata[i], -1);
      g_autofree gchar *length
          = g_strdup_printf ("\r\ncontent-length: %zu\r\n", strlen (s->bodies->pdata[i]));

      g_assert_true (g_str_has_prefix (head, "post /notify http/1.1\r\n"));
      g_assert_nonnull (strstr (head, length));
      g_assert_nonnull (strstr (head, "\r\ncontent-type: application/octet-stream\r\n"));
      g_assert_nonnull (strstr (head, "\r\nuser-agent: dcp-test\r\n"));
      g_assert_null (strstr (head, "\r\nexpect:"));
    }
  g_mutex_unlock (&s->lock);
  connections = server_connections (s);
  g_test_message ("%u requests on %u connections", n, connections);
  g_assert_cmpuint (connections, >=, 1);
  g_assert_cmpuint (connections, <=, 16);

  /* the same client again: the connections are still open */
  dcp_http_notify_all (http, r, n, g_get_monotonic_time () + 30 * G_USEC_PER_SEC, 0);
  for (guint i = 0; i < n; i++)
    {
      g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
      g_assert_cmpuint (server_count (s, r[i].token), ==, 2);
    }
  g_assert_cmpuint (server_connections (s), ==, connections);
  dcp_http_free (http);
  server_stop (s);
  requests_free (r, n);
}

/* A server that takes SLOW_US (1 s) to answer each request: 48 tokens are
 * all answered within a 12 s deadline, which one after the other (48 s)
 * could not be. */
static void
test_in_parallel (void)
{
  static const gchar *const slow[] = { "slow-", NULL };
  const guint n = 48;
  Server *s = server_start (FALSE);
  DcpHttp *http = client_for (s);
  DcpHttpRequest *r = requests_new (n, slow);
  gint64 start = g_get_monotonic_time ();

  dcp_http_notify_all (http, r, n, start + 12 * G_USEC_PER_SEC, 1);
  g_test_message ("%u slow answers in %.3f s", n,
                  (g_get_monotonic_time () - start) / (double) G_USEC_PER_SEC);
  for (guint i = 0; i < n; i++)
    {
      g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
      g_assert_no_error (r[i].error);
      g_assert_cmpuint (server_count (s, r[i].token), ==, 1);
    }
  dcp_http_free (http);
  server_stop (s);
  requests_free (r, n);
}

/* 200, 410 and 500 map to OK, GONE and FAILED, each with its status; with
 * one attempt allowed a 500 is tried once. */
static void
test_mixed_answers (void)
{
  static const gchar *const mixed[] = { "ok-", "gone-", "fail-", NULL };
  const guint n = 12;
  Server *s = server_start (FALSE);
  DcpHttp *http = client_for (s);
  DcpHttpRequest *r = requests_new (n, mixed);
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  dcp_http_notify_all (http, r, n, deadline, 1);
  for (guint i = 0; i < n; i++)
    {
      g_test_message ("%s", r[i].token);
      g_assert_cmpuint (server_count (s, r[i].token), ==, 1);
      switch (i % 3)
        {
        case 0:
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
          g_assert_cmpint (r[i].status, ==, 200);
          g_assert_no_error (r[i].error);
          break;
        case 1:
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_GONE);
          g_assert_cmpint (r[i].status, ==, 410);
          g_assert_no_error (r[i].error); /* the outcome says it */
          break;
        default:
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_FAILED);
          g_assert_cmpint (r[i].status, ==, 500);
          g_assert_error (r[i].error, DCP_ERROR, DCP_ERROR_TRANSIENT);
          if (r[i].error != NULL)
            g_assert_nonnull (strstr (r[i].error->message, "500"));
          break;
        }
    }
  dcp_http_free (http);
  server_stop (s);
  requests_free (r, n);
}

/* A transient answer is retried per token, within max_attempts: a token
 * answered 503 once is posted again and ends OK; one answered 500 every
 * time is posted exactly max_attempts times. */
static void
test_retries (void)
{
  static const gchar *const kinds[] = { "flaky-", "fail-", "ok-", NULL };
  const guint n = 9;
  Server *s = server_start (FALSE);
  DcpHttp *http = client_for (s);
  DcpHttpRequest *r = requests_new (n, kinds);
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  dcp_http_notify_all (http, r, n, deadline, 3);
  for (guint i = 0; i < n; i++)
    {
      g_test_message ("%s", r[i].token);
      switch (i % 3)
        {
        case 0:
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
          g_assert_cmpuint (server_count (s, r[i].token), ==, 2);
          break;
        case 1:
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_FAILED);
          g_assert_cmpint (r[i].status, ==, 500);
          g_assert_cmpuint (server_count (s, r[i].token), ==, 3);
          break;
        default:
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
          g_assert_cmpuint (server_count (s, r[i].token), ==, 1);
          break;
        }
    }
  dcp_http_free (http);
  server_stop (s);
  requests_free (r, n);
}

/* With no limit on attempts, a token answered 500 every time is retried
 * until the deadline leaves no room for another attempt, and keeps the
 * last answer. */
static void
test_retry_until_deadline (void)
{
  static const gchar *const kinds[] = { "fail-", "ok-", NULL };
  const guint n = 6;
  const gint64 budget = 2 * G_USEC_PER_SEC, slack = 1500 * 1000;
  Server *s = server_start (FALSE);
  DcpHttp *http = client_for (s);
  DcpHttpRequest *r = requests_new (n, kinds);
  gint64 start = g_get_monotonic_time ();

  dcp_http_notify_all (http, r, n, start + budget, 0);
  g_assert_cmpint (g_get_monotonic_time (), <, start + budget + slack);
  for (guint i = 0; i < n; i++)
    {
      g_test_message ("%s: %u requests", r[i].token, server_count (s, r[i].token));
      if (i % 2 == 1)
        {
          g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_OK);
          g_assert_cmpuint (server_count (s, r[i].token), ==, 1);
          continue;
        }
      g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_FAILED);
      g_assert_cmpint (r[i].status, ==, 500);
      g_assert_error (r[i].error, DCP_ERROR, DCP_ERROR_TRANSIENT);
      /* 0, 0.25, 0.75 s: the next (1.75 s) would end too close */
      g_assert_cmpuint (server_count (s, r[i].token), >=, 3);
    }
  dcp_http_free (http);
  server_stop (s);
  requests_free (r, n);
}

/* dcp_http_notify() is the same for one token. */
static void
test_notify_one (void)
{
  Server *s = server_start (FALSE);
  DcpHttp *http = client_for (s);
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
  g_autoptr (GError) error = NULL;
  glong status = -1;

  g_assert_cmpint (dcp_http_notify (http, "ok-one", deadline, 1, &status, &error), ==, DCP_HTTP_OK);
  g_assert_no_error (error);
  g_assert_cmpint (status, ==, 200);
  g_assert_cmpint (dcp_http_notify (http, "gone-one", deadline, 1, &status, &error), ==,
                   DCP_HTTP_GONE);
  g_assert_no_error (error);
  g_assert_cmpint (status, ==, 410);
  g_assert_cmpint (dcp_http_notify (http, "flaky-one", deadline, 2, &status, &error), ==,
                   DCP_HTTP_OK);
  g_assert_no_error (error);
  g_assert_cmpuint (server_count (s, "flaky-one"), ==, 2);
  g_assert_cmpint (dcp_http_notify (http, "fail-one", deadline, 1, &status, &error), ==,
                   DCP_HTTP_FAILED);
  g_assert_error (error, DCP_ERROR, DCP_ERROR_TRANSIENT);
  g_assert_cmpint (status, ==, 500);
  /* one connection served them all */
  g_assert_cmpuint (server_connections (s), ==, 1);
  dcp_http_free (http);
  server_stop (s);
}

/* A server that accepts and never answers: the call returns by the
 * deadline (plus a slack generous for a loaded machine), every request
 * FAILED with an error that says so. */
static void
test_silent_deadline (void)
{
  static const gchar *const plain[] = { "tok-", NULL };
  const guint n = 64;
  const gint64 budget = 2 * G_USEC_PER_SEC, slack = 1500 * 1000;
  Server *s = server_start (TRUE);
  DcpHttp *http = client_for (s);
  DcpHttpRequest *r = requests_new (n, plain);
  gint64 start = g_get_monotonic_time (), deadline = start + budget, end;

  dcp_http_notify_all (http, r, n, deadline, 0);
  end = g_get_monotonic_time ();
  g_test_message ("returned %.3f s after the start, deadline %.3f s",
                  (end - start) / (double) G_USEC_PER_SEC, budget / (double) G_USEC_PER_SEC);
  g_assert_cmpint (end, <, deadline + slack);
  for (guint i = 0; i < n; i++)
    {
      g_assert_cmpint (r[i].outcome, ==, DCP_HTTP_FAILED);
      g_assert_cmpint (r[i].status, ==, 0);
      g_assert_error (r[i].error, DCP_ERROR, DCP_ERROR_TRANSIENT);
      if (r[i].error != NULL)
        g_test_message ("%s: %s", r[i].token, r[i].error->message);
      if (r[i].error != NULL)
        g_assert_true (strstr (r[i].error->message, "deadline") != NULL
                       || strstr (r[i].error->message, "timed out") != NULL);
    }
  /* they went out together: as many as there are connections (16), where
   * one after the other only the first would have */
  g_test_message ("%u requests reached the server", server_requests (s));
  g_assert_cmpuint (server_requests (s), >=, 16);
  dcp_http_free (http);
  server_stop (s);
  requests_free (r, n);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  g_test_add_func ("/http/url-check/https-any-host", test_https_any_host);
  g_test_add_func ("/http/url-check/http-loopback", test_http_loopback);
  g_test_add_func ("/http/url-check/http-remote", test_http_remote_rejected);
  g_test_add_func ("/http/url-check/other-schemes", test_other_schemes_rejected);
  g_test_add_func ("/http/url-check/garbage", test_garbage_rejected);
  g_test_add_func ("/http/url-check/no-host", test_no_host_rejected);
  g_test_add_func ("/http/url-check/bad-host", test_bad_host_rejected);
  g_test_add_func ("/http/notify-all/all-posted", test_all_posted);
  g_test_add_func ("/http/notify-all/in-parallel", test_in_parallel);
  g_test_add_func ("/http/notify-all/mixed-answers", test_mixed_answers);
  g_test_add_func ("/http/notify-all/retries", test_retries);
  g_test_add_func ("/http/notify-all/retry-until-deadline", test_retry_until_deadline);
  g_test_add_func ("/http/notify/one", test_notify_one);
  g_test_add_func ("/http/notify-all/silent-deadline", test_silent_deadline);

  return g_test_run ();
}
