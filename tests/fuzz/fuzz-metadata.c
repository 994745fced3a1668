/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer driver for dcp_metadata_parse() and dcp_metadata_parse_seen():
 * Dovecot's metadata dictionary is written by Dovecot, and the devices
 * file beside it by the login hook, but whoever can write the mail user's
 * home can write them too.  Whatever the bytes, every token that comes
 * out must be one we would send (valid, no quote or backslash), unique,
 * and at most DCP_METADATA_TOKENS_MAX of them; and the unescaping never
 * grows a string. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcp-metadata.h"
#include "dcp-token.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) tokens = dcp_metadata_parse ((const gchar *) data, size, warnings);
  g_autoptr (GPtrArray) seen = dcp_metadata_parse_seen ((const gchar *) data, size, warnings);
  g_autofree gchar *unescaped = NULL;
  gsize len = 0;

  CHECK (tokens->len <= DCP_METADATA_TOKENS_MAX);
  for (guint i = 0; i < tokens->len; i++)
    {
      const gchar *t = g_ptr_array_index (tokens, i);
      CHECK (dcp_token_validate (t, strlen (t), NULL));
      CHECK (strpbrk (t, "\"\\") == NULL);
      for (guint j = 0; j < i; j++)
        CHECK (strcmp (t, g_ptr_array_index (tokens, j)) != 0);
    }
  CHECK (seen->len <= DCP_METADATA_TOKENS_MAX);
  for (guint i = 0; i < seen->len; i++)
    {
      const DcpMetadataSeen *t = g_ptr_array_index (seen, i);
      CHECK (dcp_token_validate (t->token, strlen (t->token), NULL));
      CHECK (strpbrk (t->token, "\"\\") == NULL);
      CHECK (t->seen_s >= 0);
      for (guint j = 0; j < i; j++)
        CHECK (strcmp (t->token, ((const DcpMetadataSeen *) g_ptr_array_index (seen, j))->token)
               != 0);
    }
  unescaped = dcp_metadata_unescape ((const gchar *) data, size, &len);
  CHECK (len <= size);
  CHECK (unescaped[len] == '\0');
  return 0;
}
