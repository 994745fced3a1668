/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tokens: what is refused, how a token file reads, and the two names we use
 * instead of the token (its hash for files, a short prefix for logs). */
#include <string.h>

#include <glib.h>

#include "dcp-error.h"
#include "dcp-token.h"

/* A realistic token: base64-ish with '/', '+', '=' and letters beyond 'f',
 * so it can never be a substring of a hex digest by chance. */
#define TOKEN_A "openpgp:v1/Zq+Rw==..x7Yk/../pushTOKENzz"
#define TOKEN_B "fcm-ZZ_otherTOKEN/+=.."

static void
assert_valid (const gchar *token, gsize len)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (dcp_token_validate (token, len, &error));
  g_assert_no_error (error);
}

static void
assert_invalid (const gchar *token, gsize len, const gchar *what)
{
  g_autoptr (GError) error = NULL;

  g_assert_false (dcp_token_validate (token, len, &error));
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
  if (what != NULL && error != NULL)
    g_assert_nonnull (strstr (error->message, what));
}

static void
test_validate_empty (void)
{
  assert_invalid ("", 0, "empty");
  /* len 0 wins even if the buffer holds more */
  assert_invalid ("abc", 0, "empty");
}

static void
test_validate_whitespace (void)
{
  static const gchar *const cases[] = {
    "ab cd", " abcd", "abcd ", "ab\tcd", "ab\ncd", "ab\rcd", "ab\fcd",
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    assert_invalid (cases[i], strlen (cases[i]), "whitespace");
  /* a vertical tab is refused too, whatever it is called */
  assert_invalid ("ab\vcd", 5, NULL);
}

static void
test_validate_control (void)
{
  assert_invalid ("ab\x01"
                  "cd",
                  5, "control");
  assert_invalid ("ab\x1b[0m", 6, "control");
  assert_invalid ("abc\x7f", 4, NULL);
  /* an embedded NUL inside the given length */
  assert_invalid ("ab\0cd", 5, NULL);
  /* the position is reported 1-based */
  assert_invalid ("ab\x01"
                  "cd",
                  5, "byte 3");
}

static void
test_validate_non_ascii (void)
{
  assert_invalid ("t\xc3\xb6k\xc3\xa9n", 7, "non-ASCII");
  assert_invalid ("\xff", 1, "non-ASCII");
  assert_invalid ("abc\x80", 4, "non-ASCII");
  /* U+00A0 no-break space, a classic copy-and-paste accident */
  assert_invalid ("abc\xc2\xa0", 5, NULL);
}

static void
test_validate_length (void)
{
  g_autofree gchar *max = g_strnfill (DCP_TOKEN_MAX, 'a');
  g_autofree gchar *over = g_strnfill (DCP_TOKEN_MAX + 1, 'a');

  g_assert_cmpint (DCP_TOKEN_MAX, ==, 4096);
  assert_valid (max, strlen (max));
  assert_invalid (over, strlen (over), "4096");
  assert_valid ("x", 1);
}

static void
test_validate_punctuation (void)
{
  static const gchar *const cases[] = {
    "/",     "+",     "=", "..", "../../etc/passwd", "a/b+c=d..", "~!@#$%^&*()_-{}[]|\\:;\"'<>,.?`",
    TOKEN_A, TOKEN_B,
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    assert_valid (cases[i], strlen (cases[i]));
}

static GPtrArray *
parse_ok (const gchar *text)
{
  g_autoptr (GError) error = NULL;
  GPtrArray *tokens = dcp_token_list_parse (text, strlen (text), &error);

  g_assert_no_error (error);
  g_assert_nonnull (tokens);
  return tokens;
}

static void
assert_tokens (GPtrArray *tokens, const gchar *const *expected)
{
  guint n = g_strv_length ((gchar **) expected);

  g_assert_cmpuint (tokens->len, ==, n);
  for (guint i = 0; i < n; i++)
    g_assert_cmpstr (g_ptr_array_index (tokens, i), ==, expected[i]);
}

static void
test_list_basic (void)
{
  g_autoptr (GPtrArray) tokens = parse_ok ("tok1\ntok2\ntok3\n");
  const gchar *expected[] = { "tok1", "tok2", "tok3", NULL };

  assert_tokens (tokens, expected);
}

static void
test_list_empty (void)
{
  const gchar *expected[] = { NULL };
  g_autoptr (GPtrArray) a = parse_ok ("");
  g_autoptr (GPtrArray) b = parse_ok ("\n\n   \n\t\r\n");
  g_autoptr (GPtrArray) c = parse_ok ("# only a comment\n  # indented comment\n");

  assert_tokens (a, expected);
  assert_tokens (b, expected);
  assert_tokens (c, expected);
}

static void
test_list_comments_blank_trim (void)
{
  const gchar *text = "# my phone\n"
                      "\n"
                      "   tok1   \n"
                      "\ttok2\t\n"
                      "  # an indented comment\n"
                      "\n"
                      "tok#3\n"     /* '#' only starts a comment at the start */
                      "last-no-nl"; /* no final newline */
  const gchar *expected[] = { "tok1", "tok2", "tok#3", "last-no-nl", NULL };
  g_autoptr (GPtrArray) tokens = parse_ok (text);

  assert_tokens (tokens, expected);
}

static void
test_list_crlf (void)
{
  const gchar *expected[] = { "tok1", "tok2", TOKEN_A, NULL };
  g_autoptr (GPtrArray) tokens = parse_ok ("# c\r\ntok1\r\n\r\ntok2\r\n" TOKEN_A "\r\n");

  assert_tokens (tokens, expected);
}

static void
test_list_duplicates_kept_in_order (void)
{
  const gchar *expected[] = { "b", "a", "b", NULL };
  g_autoptr (GPtrArray) tokens = parse_ok ("b\na\nb\n");

  assert_tokens (tokens, expected);
}

static void
assert_list_error (const gchar *text, gsize len, const gchar *line)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) tokens = dcp_token_list_parse (text, len, &error);

  g_assert_null (tokens);
  g_assert_error (error, DCP_ERROR, DCP_ERROR_INVALID);
  if (error != NULL)
    g_assert_nonnull (strstr (error->message, line));
}

static void
test_list_invalid_line (void)
{
  g_autofree gchar *long_line = NULL;
  g_autofree gchar *long_text = NULL;
  const gchar nul_text[] = "good\nbad\0token\n";

  assert_list_error ("good\n# comment\nbad token\n", strlen ("good\n# comment\nbad token\n"),
                     "line 3");
  assert_list_error ("t\xc3\xb6ken\n", strlen ("t\xc3\xb6ken\n"), "line 1");
  assert_list_error ("a\r\nb\r\n\r\nc\x01\r\n", strlen ("a\r\nb\r\n\r\nc\x01\r\n"), "line 4");
  /* a NUL byte inside the text is not the end of the file */
  assert_list_error (nul_text, sizeof nul_text - 1, "line 2");

  long_line = g_strnfill (DCP_TOKEN_MAX + 1, 'x');
  long_text = g_strconcat ("ok\n", long_line, "\n", NULL);
  assert_list_error (long_text, strlen (long_text), "line 2");
}

static gboolean
is_lower_hex (const gchar *s)
{
  for (; *s != '\0'; s++)
    if (!g_ascii_isdigit (*s) && !(*s >= 'a' && *s <= 'f'))
      return FALSE;
  return TRUE;
}

static void
test_hash (void)
{
  g_autofree gchar *abc = dcp_token_hash ("abc");
  g_autofree gchar *a = dcp_token_hash (TOKEN_A);
  g_autofree gchar *a2 = dcp_token_hash (TOKEN_A);
  g_autofree gchar *b = dcp_token_hash (TOKEN_B);

  /* FIPS 180-2 test vector: it is plain SHA-256 of the token bytes */
  g_assert_cmpstr (abc, ==, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  g_assert_cmpuint (strlen (a), ==, 64);
  g_assert_true (is_lower_hex (a));
  g_assert_cmpstr (a, ==, a2);
  g_assert_cmpstr (a, !=, b);
  g_assert_null (strstr (a, TOKEN_A));
  g_assert_null (strstr (a, "/"));
  g_assert_null (strstr (a, ".."));
  g_assert_null (strstr (a, "TOKEN"));
}

static void
test_display (void)
{
  g_autofree gchar *long_ = dcp_token_display (TOKEN_A);
  g_autofree gchar *eight = dcp_token_display ("abcdefgh");
  g_autofree gchar *nine = dcp_token_display ("abcdefghi");
  g_autofree gchar *shorter = dcp_token_display ("abc");
  g_autofree gchar *non_ascii = dcp_token_display ("ab\xc3\xa9"
                                                   "cdefgh");

  g_assert_cmpstr (long_, ==, "openpgp:…");
  g_assert_cmpstr (eight, ==, "abcdefgh…");
  g_assert_cmpstr (nine, ==, "abcdefgh…");
  g_assert_cmpstr (shorter, ==, "abc…");
  g_assert_null (strstr (long_, TOKEN_A));
  /* never cuts a UTF-8 sequence, whatever reaches it */
  g_assert_true (g_utf8_validate (non_ascii, -1, NULL));
  g_assert_true (g_str_has_suffix (non_ascii, "…"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  g_test_add_func ("/token/validate/empty", test_validate_empty);
  g_test_add_func ("/token/validate/whitespace", test_validate_whitespace);
  g_test_add_func ("/token/validate/control", test_validate_control);
  g_test_add_func ("/token/validate/non-ascii", test_validate_non_ascii);
  g_test_add_func ("/token/validate/length", test_validate_length);
  g_test_add_func ("/token/validate/punctuation", test_validate_punctuation);
  g_test_add_func ("/token/list/basic", test_list_basic);
  g_test_add_func ("/token/list/empty", test_list_empty);
  g_test_add_func ("/token/list/comments-blank-trim", test_list_comments_blank_trim);
  g_test_add_func ("/token/list/crlf", test_list_crlf);
  g_test_add_func ("/token/list/duplicates", test_list_duplicates_kept_in_order);
  g_test_add_func ("/token/list/invalid-line", test_list_invalid_line);
  g_test_add_func ("/token/hash", test_hash);
  g_test_add_func ("/token/display", test_display);

  return g_test_run ();
}
