/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dovecot's metadata dictionary: the file format exactly as dict-file.c
 * reads it, which keys count, and that nothing but a valid token ever
 * comes out of it, whatever the file holds. */
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "dcp-error.h"
#include "dcp-file.h"
#include "dcp-metadata.h"

#define GUID "8a2a3b2f1c1d4e6620a90000b1c2d3e4"
#define KEY "priv/" GUID "/devicetoken\n"
#define TOKEN_A "openpgp:wcBMA0bX/Zq+Rw=="
#define TOKEN_B "openpgp:hQIMAxyz/AbC+dE="

static GPtrArray *
parse (const gchar *data, gsize len, GPtrArray *warnings)
{
  return dcp_metadata_parse (data, len == (gsize) -1 ? strlen (data) : len, warnings);
}

static void
assert_tokens (GPtrArray *got, const gchar *const *want)
{
  guint n = want ? g_strv_length ((gchar **) want) : 0;

  g_assert_cmpuint (got->len, ==, n);
  for (guint i = 0; i < MIN (n, got->len); i++)
    g_assert_cmpstr (g_ptr_array_index (got, i), ==, want[i]);
}

static void
test_unescape (void)
{
  /* str_tabunescape(): \001 then 1 t r n, any other byte stands for
   * itself, a lone \001 at the end is dropped */
  static const struct {
    const gchar *in;
    gsize len;
    const gchar *out;
    gsize out_len;
  } cases[] = {
    { "plain", 5, "plain", 5 },       { "a\0011b", 4, "a\001b", 3 }, { "a\001tb", 4, "a\tb", 3 },
    { "a\001rb", 4, "a\rb", 3 },      { "a\001nb", 4, "a\nb", 3 },   { "a\001xb", 4, "axb", 3 },
    { "a\001", 2, "a", 1 },           { "\001\001", 2, "\001", 1 },  { "", 0, "", 0 },
    { "x\001\0011", 4, "x\0011", 3 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      gsize len = 99;
      g_autofree gchar *out = dcp_metadata_unescape (cases[i].in, cases[i].len, &len);
      g_assert_cmpmem (out, len, cases[i].out, cases[i].out_len);
      g_assert_cmpint (out[len], ==, '\0');
    }
}

static void
test_one_device (void)
{
  const gchar *want[] = { TOKEN_A, NULL };
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) got = parse (KEY TOKEN_A "\n", -1, warnings);

  assert_tokens (got, want);
  g_assert_cmpuint (warnings->len, ==, 0);
}

static void
test_other_keys_any_order (void)
{
  const gchar *want[] = { TOKEN_B, TOKEN_A, NULL };
  /* what Dovecot also keeps there: other attributes, server metadata,
   * the shared form; and the key of another mailbox */
  const gchar *text = "priv/" GUID "/comment\nhello\n"
                      "shared/" GUID "/devicetoken\n" TOKEN_B "\n"
                      "priv/" GUID "/vendor/vendor.dovecot/pvt/server/x\n" TOKEN_B "x\n"
                      "priv/" GUID "/devicetokens\n" TOKEN_B "y\n"
                      "priv//devicetoken\n" TOKEN_B "z\n"
                      "priv/devicetoken\n" TOKEN_B "w\n"
                      "priv/otherguid/devicetoken\n" TOKEN_A "\n"
                      "devicetoken\n" TOKEN_B "v\n";
  g_autoptr (GPtrArray) got = parse (text, -1, NULL);

  assert_tokens (got, want);
}

static void
test_lines (void)
{
  const gchar *want[] = { TOKEN_A, NULL };
  g_autoptr (GPtrArray) crlf = parse ("priv/" GUID "/devicetoken\r\n" TOKEN_A "\r\n", -1, NULL);
  /* a last line without LF is no line (i_stream_read_next_line()) */
  g_autoptr (GPtrArray) nolf = parse (KEY TOKEN_A, -1, NULL);
  /* a key without its value ends the file */
  g_autoptr (GPtrArray) odd = parse (KEY TOKEN_A "\n" KEY, -1, NULL);
  /* a pair out of step: the value line read as a key */
  g_autoptr (GPtrArray) shifted = parse ("\n" KEY TOKEN_B "\n", -1, NULL);
  g_autoptr (GPtrArray) empty = parse ("", 0, NULL);

  assert_tokens (crlf, want);
  assert_tokens (nolf, NULL);
  assert_tokens (odd, want);
  assert_tokens (shifted, NULL);
  assert_tokens (empty, NULL);
}

static void
test_escaped_key (void)
{
  const gchar *want[] = { TOKEN_A, NULL };
  /* \001x stands for x: the key unescapes to the real one */
  g_autoptr (GPtrArray) got = parse ("priv/" GUID "/devic\001etoken\n" TOKEN_A "\n", -1, NULL);

  assert_tokens (got, want);
}

static void
test_bad_values (void)
{
  static const gchar *const values[] = {
    "openpgp:abc\001ndef", /* an escaped newline */
    "openpgp:abc\001tdef", /* an escaped tab */
    "openpgp:abc\001rdef", /* an escaped CR */
    "openpgp:abc\0011def", /* an escaped \001 */
    "openpgp:a\"b",        /* a quote */
    "openpgp:a\\b",        /* a backslash */
    "openpgp:a b",         /* a space */
    "openpgp:\xc3\xa9",    /* non-ASCII */
    "",                    /* empty */
  };

  for (gsize i = 0; i < G_N_ELEMENTS (values); i++)
    {
      g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
      g_autofree gchar *text = g_strconcat (KEY, values[i], "\n", KEY, TOKEN_B, "\n", NULL);
      g_autoptr (GPtrArray) got = parse (text, -1, warnings);
      const gchar *want[] = { TOKEN_B, NULL };

      assert_tokens (got, want);
      g_assert_cmpuint (warnings->len, ==, 1);
      if (warnings->len == 1)
        {
          const gchar *w = g_ptr_array_index (warnings, 0);
          g_assert_true (g_str_has_prefix (w, "pair 1 (priv/" GUID "/devicetoken): "));
          /* never the value itself */
          g_assert_null (strstr (w, "openpgp:"));
        }
    }
}

static void
test_nul_bytes (void)
{
  const gchar text[] = KEY "openpgp:ab\0cd\n" KEY TOKEN_A "\n"
                           "priv/" GUID "/devicetoken\0junk\n" TOKEN_B "\n";
  const gchar *want[] = { TOKEN_A, TOKEN_B, NULL };
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) got = parse (text, sizeof text - 1, warnings);

  /* a value with a NUL is refused; a key ends at its NUL, as Dovecot's */
  assert_tokens (got, want);
  g_assert_cmpuint (warnings->len, ==, 1);
}

static void
test_duplicates (void)
{
  const gchar *want[] = { TOKEN_A, NULL };
  g_autoptr (GPtrArray) got = parse (KEY TOKEN_A "\n"
                                                 "shared/" GUID "/devicetoken\n" TOKEN_A "\n",
                                     -1, NULL);

  assert_tokens (got, want);
}

static void
test_many_keys (void)
{
  g_autoptr (GString) text = g_string_new (NULL);
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) got = NULL;
  gint64 t0;

  /* 10 000 device keys, all different: the first ones are taken */
  for (guint i = 0; i < 10000; i++)
    g_string_append_printf (text, "priv/%08x/devicetoken\nopenpgp:token%u\n", i, i);
  t0 = g_get_monotonic_time ();
  got = parse (text->str, text->len, warnings);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 2 * G_USEC_PER_SEC);
  g_assert_cmpuint (got->len, ==, DCP_METADATA_TOKENS_MAX);
  g_assert_cmpstr (g_ptr_array_index (got, 0), ==, "openpgp:token0");
  g_assert_cmpuint (warnings->len, ==, 1);
}

static void
test_binary_garbage (void)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (11);
  g_autofree gchar *buf = g_malloc (256 * 1024);

  /* random bytes with the key sprinkled in: every token out is valid */
  for (gsize i = 0; i < 256 * 1024; i++)
    buf[i] = (gchar) g_rand_int_range (rand, 0, 256);
  for (gsize at = 0; at + 64 < 256 * 1024; at += 997)
    memcpy (buf + at, "\n" KEY, strlen ("\n" KEY));
  {
    g_autoptr (GPtrArray) got = parse (buf, 256 * 1024, NULL);
    for (guint i = 0; i < got->len; i++)
      {
        const gchar *t = g_ptr_array_index (got, i);
        for (const gchar *p = t; *p; p++)
          g_assert_true (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '\\');
      }
  }
}

static void
test_load (void)
{
  g_autofree gchar *dir = g_dir_make_tmp ("dcp-metadata-XXXXXX", NULL);
  g_autofree gchar *path = g_build_filename (dir, "dovecot-attributes", NULL);
  g_autofree gchar *missing = g_build_filename (dir, "none", "dovecot-attributes", NULL);
  g_autofree gchar *big = g_malloc0 (DCP_FILE_MAX + 1);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) got = NULL;

  /* a missing file holds no token and is no error */
  got = dcp_metadata_load (missing, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (got->len, ==, 0);
  g_clear_pointer (&got, g_ptr_array_unref);

  g_assert_true (g_file_set_contents (path, KEY TOKEN_A "\n", -1, NULL));
  got = dcp_metadata_load (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (got->len, ==, 1);
  g_clear_pointer (&got, g_ptr_array_unref);

  /* a file over the limit is refused whole */
  memcpy (big, KEY TOKEN_A "\n", strlen (KEY TOKEN_A "\n"));
  g_assert_true (g_file_set_contents (path, big, DCP_FILE_MAX + 1, NULL));
  got = dcp_metadata_load (path, NULL, &error);
  g_assert_null (got);
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
  g_clear_error (&error);

  /* a directory is no file */
  got = dcp_metadata_load (dir, NULL, &error);
  g_assert_null (got);
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);

  g_unlink (path);
  g_rmdir (dir);
}

/* The login hook's devices file: "<unix time> <token>" lines; the time a
 * token was seen is the newest of its lines; nothing that is not a valid
 * token comes out, and at most DCP_METADATA_TOKENS_MAX tokens. */
static void
test_seen (void)
{
  static const gchar data[] = "1700000000 " TOKEN_A "\n"
                              "1800000000 " TOKEN_B "\n"
                              "1750000000 " TOKEN_A "\n"
                              "no-time-here\n"
                              " " TOKEN_A "\n"
                              "17x " TOKEN_A "\n"
                              "99999999999999999999999 " TOKEN_A "\n"
                              "1700000000 openpgp:a\"b\n"
                              "1700000000 openpgp:a\001nb\n"
                              "1700000000 \n"
                              "1900000000 " TOKEN_B; /* no LF: no line */
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) got = dcp_metadata_parse_seen (data, strlen (data), warnings);
  DcpMetadataSeen *a, *b;

  g_assert_cmpuint (got->len, ==, 2);
  if (got->len != 2)
    return;
  a = g_ptr_array_index (got, 0);
  b = g_ptr_array_index (got, 1);
  g_assert_cmpstr (a->token, ==, TOKEN_A);
  g_assert_cmpint (a->seen_s, ==, 1750000000);
  g_assert_cmpstr (b->token, ==, TOKEN_B);
  g_assert_cmpint (b->seen_s, ==, 1800000000);
  /* one warning per bad line */
  g_assert_cmpuint (warnings->len, ==, 7);
}

static void
test_seen_many (void)
{
  g_autoptr (GString) data = g_string_new (NULL);
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) got = NULL;

  for (guint i = 0; i < 1000; i++)
    g_string_append_printf (data, "%u openpgp:tok%04u\n", 1700000000 + i, i);
  got = dcp_metadata_parse_seen (data->str, data->len, warnings);
  g_assert_cmpuint (got->len, ==, DCP_METADATA_TOKENS_MAX);
  g_assert_cmpuint (warnings->len, ==, 1);
}

static void
test_load_seen (void)
{
  g_autofree gchar *dir = g_dir_make_tmp ("dcp-metadata-XXXXXX", NULL);
  g_autofree gchar *path = g_build_filename (dir, "dovecot-attributes.devices", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) got = NULL;

  /* a missing file holds no token and is no error */
  got = dcp_metadata_load_seen (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (got->len, ==, 0);
  g_clear_pointer (&got, g_ptr_array_unref);

  g_assert_true (g_file_set_contents (path, "1700000000 " TOKEN_A "\n", -1, NULL));
  got = dcp_metadata_load_seen (path, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (got->len, ==, 1);
  g_clear_pointer (&got, g_ptr_array_unref);

  /* a directory is no file */
  got = dcp_metadata_load_seen (dir, NULL, &error);
  g_assert_null (got);
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);

  g_unlink (path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_set_nonfatal_assertions ();

  g_test_add_func ("/metadata/unescape", test_unescape);
  g_test_add_func ("/metadata/one-device", test_one_device);
  g_test_add_func ("/metadata/other-keys-any-order", test_other_keys_any_order);
  g_test_add_func ("/metadata/lines", test_lines);
  g_test_add_func ("/metadata/escaped-key", test_escaped_key);
  g_test_add_func ("/metadata/bad-values", test_bad_values);
  g_test_add_func ("/metadata/nul-bytes", test_nul_bytes);
  g_test_add_func ("/metadata/duplicates", test_duplicates);
  g_test_add_func ("/metadata/many-keys", test_many_keys);
  g_test_add_func ("/metadata/binary-garbage", test_binary_garbage);
  g_test_add_func ("/metadata/load", test_load);
  g_test_add_func ("/metadata/seen", test_seen);
  g_test_add_func ("/metadata/seen-many", test_seen_many);
  g_test_add_func ("/metadata/load-seen", test_load_seen);
  return g_test_run ();
}
