/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The URL check: https anywhere, plain http only to this machine, since the
 * request body is the push token itself. */
#include <glib.h>

#include "dcp-error.h"
#include "dcp-http.h"

static void
assert_url_ok (const gchar *url)
{
  g_autoptr (GError) error = NULL;

  g_test_message ("accept %s", url);
  g_assert_true (dcp_url_check (url, &error));
  g_assert_no_error (error);
}

static void
assert_url_rejected (const gchar *url)
{
  g_autoptr (GError) error = NULL;

  g_test_message ("reject %s", url);
  g_assert_false (dcp_url_check (url, &error));
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

  return g_test_run ();
}
