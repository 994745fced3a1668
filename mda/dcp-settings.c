/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Command line, environment and config file, merged by precedence.
 *
 * Option values start out "unset" (-1, NULL, FALSE), so we can tell what
 * the command line said from what it left to the config file.  Lists given
 * on the command line replace the config file's; tokens from argv and
 * --token-file are merged with each other and replace the config file's
 * `tokens` and `token-file`. */
#include "config.h"

#include "dcp-settings.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-error.h"
#include "dcp-http.h"
#include "dcp-token.h"

#define GROUP "deltachat-push"
#define TOKEN_FILE_MAX (1024 * 1024)

DcpSettings *
dcp_settings_new (void)
{
  DcpSettings *s = g_new0 (DcpSettings, 1);
  s->tokens = g_ptr_array_new_with_free_func (g_free);
  s->warnings = g_ptr_array_new_with_free_func (g_free);
  s->window = 10;
  s->max_age = 86400;
  s->timeout = 8;
  s->trailing = TRUE;
  s->due = -1;
  return s;
}

void
dcp_settings_free (DcpSettings *s)
{
  if (s == NULL)
    return;
  g_ptr_array_unref (s->tokens);
  g_ptr_array_unref (s->warnings);
  g_free (s->url);
  g_free (s->cacert);
  g_strfreev (s->self);
  g_free (s->cache_root);
  g_free (s->dovecot_metadata);
  g_free (s->help);
  g_free (s);
}

static gchar *
expand_home (const gchar *path)
{
  if (g_str_has_prefix (path, "~/"))
    return g_build_filename (g_get_home_dir (), path + 2, NULL);
  return g_strdup (path);
}

static gboolean
add_token (DcpSettings *s, GHashTable *seen, const gchar *token, const gchar *where, GError **error)
{
  g_autoptr (GError) local = NULL;

  if (!dcp_token_validate (token, strlen (token), &local))
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "%s: %s", where, local->message);
      return FALSE;
    }
  if (g_hash_table_add (seen, g_strdup (token)))
    g_ptr_array_add (s->tokens, g_strdup (token));
  return TRUE;
}

static gboolean
add_token_file (DcpSettings *s, GHashTable *seen, const gchar *file, GError **error)
{
  g_autofree gchar *path = expand_home (file);
  g_autofree gchar *text = NULL;
  g_autoptr (GPtrArray) tokens = NULL;
  g_autoptr (GError) local = NULL;
  gsize len = 0;
  struct stat st;

  if (stat (path, &st) < 0)
    {
      int saved = errno;
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "token file %s: %s", path,
                   g_strerror (saved));
      return FALSE;
    }
  if (!S_ISREG (st.st_mode) || st.st_size > TOKEN_FILE_MAX)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "token file %s is not a regular file of at most 1 MiB", path);
      return FALSE;
    }
  if (!g_file_get_contents (path, &text, &len, &local))
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "token file %s", local->message);
      return FALSE;
    }
  if ((st.st_mode & 077) != 0)
    g_ptr_array_add (s->warnings,
                     g_strdup_printf ("token file %s is readable by others (mode %04o); "
                                      "chmod 600 it",
                                      path, (unsigned) (st.st_mode & 07777)));
  tokens = dcp_token_list_parse (text, len, &local);
  if (tokens == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "token file %s, %s", path, local->message);
      return FALSE;
    }
  if (tokens->len == 0)
    g_ptr_array_add (s->warnings, g_strdup_printf ("token file %s holds no token", path));
  for (guint i = 0; i < tokens->len; i++)
    if (!add_token (s, seen, g_ptr_array_index (tokens, i), path, error))
      return FALSE;
  return TRUE;
}

/* A --cacert FILE must be there and readable now: a run that finds out
 * only when it pushes would count a typo as a failed push. */
static gboolean
check_cacert (const gchar *file, gchar **out, GError **error)
{
  g_autofree gchar *path = expand_home (file);
  struct stat st;
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

  if (fd < 0 || fstat (fd, &st) < 0 || !S_ISREG (st.st_mode))
    {
      int saved = fd < 0 ? errno : EINVAL;
      if (fd >= 0)
        close (fd);
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "--cacert %s: %s", path,
                   saved == EINVAL ? "not a regular file" : g_strerror (saved));
      return FALSE;
    }
  close (fd);
  *out = g_steal_pointer (&path);
  return TRUE;
}

static gboolean
parse_seconds (const gchar *what, const gchar *text, gint64 *out, GError **error)
{
  guint64 v = 0;
  g_autoptr (GError) local = NULL;

  if (!g_ascii_string_to_unsigned (text, 10, 0, G_MAXINT32, &v, &local))
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "%s must be a whole number of seconds, not \"%s\"", what, text);
      return FALSE;
    }
  *out = (gint64) v;
  return TRUE;
}

static gchar **
lower_addresses (gchar **in)
{
  GPtrArray *out = g_ptr_array_new ();

  for (gchar **p = in; p != NULL && *p != NULL; p++)
    {
      g_autofree gchar *a = g_strstrip (g_strdup (*p));
      gsize n = strlen (a);
      if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
        {
          memmove (a, a + 1, n - 2);
          a[n - 2] = '\0';
        }
      if (*a != '\0')
        g_ptr_array_add (out, g_ascii_strdown (a, -1));
    }
  g_ptr_array_add (out, NULL);
  return (gchar **) g_ptr_array_free (out, FALSE);
}

typedef struct {
  gchar **token_files;
  gchar *config;
  gchar *url;
  gchar *cacert;
  gchar *window;
  gchar **self;
  gchar *max_age;
  gboolean chat_only;
  gchar *timeout;
  gboolean best_effort;
  gboolean no_trailing;
  gboolean dry_run;
  gboolean ping;
  gboolean status;
  gboolean verbose;
  gboolean version;
  gboolean help;
  gboolean trailing_child;
  gchar *due;
  gchar *dovecot_metadata;
  gchar **rest;
} Cli;

static void
cli_clear (Cli *c)
{
  g_strfreev (c->token_files);
  g_free (c->config);
  g_free (c->url);
  g_free (c->cacert);
  g_free (c->window);
  g_strfreev (c->self);
  g_free (c->max_age);
  g_free (c->timeout);
  g_free (c->due);
  g_free (c->dovecot_metadata);
  g_strfreev (c->rest);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Cli, cli_clear)

/* Dovecot runs sieve programs with HOME, USER and RECIPIENT set: the
 * file's ~ and relative paths are taken from HOME, as Dovecot does, and
 * the account's own mail causes no push, as on chatmail relays. */
static void
dovecot_metadata (DcpSettings *s, Cli *c)
{
  const gchar *own[] = { g_getenv ("USER"), g_getenv ("RECIPIENT") };
  GPtrArray *self = g_ptr_array_new ();
  const gchar *file = c->dovecot_metadata;

  s->dovecot_metadata = g_path_is_absolute (file) || g_str_has_prefix (file, "~/")
                            ? expand_home (file)
                            : g_build_filename (g_get_home_dir (), file, NULL);
  for (gchar **p = c->self; p != NULL && *p != NULL; p++)
    g_ptr_array_add (self, *p);
  for (gsize i = 0; i < G_N_ELEMENTS (own); i++)
    if (own[i] != NULL && strchr (own[i], '@') != NULL)
      g_ptr_array_add (self, g_strdup (own[i]));
  g_ptr_array_add (self, NULL);
  g_free (c->self);
  c->self = (gchar **) g_ptr_array_free (self, FALSE);
}

static const gchar *const config_keys[] = {
  "tokens",  "token-file",       "url",     "window",      "self",
  "max-age", "chat-only",        "timeout", "best-effort", "no-trailing",
  "verbose", "dovecot-metadata", "cacert",  NULL,
};

static gboolean
check_config_keys (GKeyFile *kf, const gchar *path, GError **error)
{
  g_auto (GStrv) groups = g_key_file_get_groups (kf, NULL);
  g_auto (GStrv) keys = NULL;

  for (gchar **g = groups; *g != NULL; g++)
    if (strcmp (*g, GROUP) != 0)
      {
        g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                     "config %s: unknown group [%s] (expected [" GROUP "])", path, *g);
        return FALSE;
      }
  keys = g_key_file_get_keys (kf, GROUP, NULL, NULL);
  for (gchar **k = keys; k != NULL && *k != NULL; k++)
    if (!g_strv_contains (config_keys, *k))
      {
        g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: unknown key \"%s\"", path,
                     *k);
        return FALSE;
      }
  return TRUE;
}

static gboolean
config_bool (GKeyFile *kf, const gchar *path, const gchar *key, gboolean *out, GError **error)
{
  g_autoptr (GError) local = NULL;
  gboolean v;

  if (!g_key_file_has_key (kf, GROUP, key, NULL))
    return TRUE;
  v = g_key_file_get_boolean (kf, GROUP, key, &local);
  if (local != NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: %s", path, local->message);
      return FALSE;
    }
  *out = *out || v;
  return TRUE;
}

static gboolean
config_string (GKeyFile *kf, const gchar *path, const gchar *key, gchar **out, GError **error)
{
  g_autoptr (GError) local = NULL;
  gchar *v;

  if (*out != NULL || !g_key_file_has_key (kf, GROUP, key, NULL))
    return TRUE;
  v = g_key_file_get_string (kf, GROUP, key, &local);
  if (v == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: %s", path, local->message);
      return FALSE;
    }
  *out = g_strstrip (v);
  return TRUE;
}

static gboolean
config_list (GKeyFile *kf, const gchar *path, const gchar *key, gchar ***out, GError **error)
{
  g_autoptr (GError) local = NULL;
  gchar **v;

  if (*out != NULL || !g_key_file_has_key (kf, GROUP, key, NULL))
    return TRUE;
  v = g_key_file_get_string_list (kf, GROUP, key, NULL, &local);
  if (v == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: %s", path, local->message);
      return FALSE;
    }
  *out = v;
  return TRUE;
}

static gboolean
config_seconds (GKeyFile *kf, const gchar *path, const gchar *key, gchar **out, GError **error)
{
  g_autofree gchar *what = g_strdup_printf ("config %s: %s", path, key);
  gint64 ignored;

  if (*out != NULL || !g_key_file_has_key (kf, GROUP, key, NULL))
    return TRUE;
  return config_string (kf, path, key, out, error) && parse_seconds (what, *out, &ignored, error);
}

/* Merge the config file into whatever the command line left unset. */
static gboolean
read_config (Cli *c, gchar ***config_tokens, GError **error)
{
  g_autofree gchar *path = NULL;
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local = NULL;
  gboolean explicit = c->config != NULL;

  path = explicit ? expand_home (c->config)
                  : g_build_filename (g_get_user_config_dir (), "deltachat-push", "config", NULL);
  if (!explicit && !g_file_test (path, G_FILE_TEST_EXISTS))
    return TRUE;
  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, &local))
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: %s", path, local->message);
      return FALSE;
    }
  if (!check_config_keys (kf, path, error))
    return FALSE;
  if (c->token_files == NULL && (c->rest == NULL || c->rest[0] == NULL))
    {
      if (!config_list (kf, path, "tokens", config_tokens, error)
          || !config_list (kf, path, "token-file", &c->token_files, error))
        return FALSE;
    }
  return config_string (kf, path, "url", &c->url, error)
         && config_string (kf, path, "cacert", &c->cacert, error)
         && config_seconds (kf, path, "window", &c->window, error)
         && config_list (kf, path, "self", &c->self, error)
         && config_seconds (kf, path, "max-age", &c->max_age, error)
         && config_seconds (kf, path, "timeout", &c->timeout, error)
         && config_string (kf, path, "dovecot-metadata", &c->dovecot_metadata, error)
         && config_bool (kf, path, "chat-only", &c->chat_only, error)
         && config_bool (kf, path, "best-effort", &c->best_effort, error)
         && config_bool (kf, path, "no-trailing", &c->no_trailing, error)
         && config_bool (kf, path, "verbose", &c->verbose, error);
}

static GOptionContext *
make_context (Cli *c)
{
  const GOptionEntry entries[] = {
    { "token-file", 't', 0, G_OPTION_ARG_FILENAME_ARRAY, &c->token_files,
      "Read push tokens from FILE, one per line (repeatable)", "FILE" },
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &c->config,
      "Read settings from FILE (default: $XDG_CONFIG_HOME/deltachat-push/config)", "FILE" },
    { "url", 'u', 0, G_OPTION_ARG_FILENAME, &c->url,
      "Notification proxy URL (default: " DCP_DEFAULT_URL ")", "URL" },
    { "cacert", 0, 0, G_OPTION_ARG_FILENAME, &c->cacert,
      "Trust only the CA certificates in FILE (default: the system's)", "FILE" },
    { "window", 'w', 0, G_OPTION_ARG_FILENAME, &c->window,
      "Per-token coalescing window, 0 turns rate limiting off (default: 10)", "SECONDS" },
    { "self", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &c->self,
      "Skip mail From this address of the account's own (repeatable)", "ADDRESS" },
    { "max-age", 0, 0, G_OPTION_ARG_FILENAME, &c->max_age,
      "Skip mail that reached the server longer ago, 0 = off (default: 86400)", "SECONDS" },
    { "chat-only", 0, 0, G_OPTION_ARG_NONE, &c->chat_only, "Skip mail without Chat-Version", NULL },
    { "timeout", 0, 0, G_OPTION_ARG_FILENAME, &c->timeout,
      "Wall-clock budget for the network part of a run (default: 8)", "SECONDS" },
    { "best-effort", 0, 0, G_OPTION_ARG_NONE, &c->best_effort,
      "Never exit 75: log transient failures and exit 0", NULL },
    { "no-trailing", 0, 0, G_OPTION_ARG_NONE, &c->no_trailing,
      "No trailing push for mail that arrives inside the window", NULL },
    { "dovecot-metadata", 0, 0, G_OPTION_ARG_FILENAME, &c->dovecot_metadata,
      "Also push the device tokens Delta Chat stored in this Dovecot metadata file", "FILE" },
    { "dry-run", 'n', 0, G_OPTION_ARG_NONE, &c->dry_run,
      "Read and decide, print the decision per token, send nothing, change nothing", NULL },
    { "ping", 0, 0, G_OPTION_ARG_NONE, &c->ping,
      "Send a push to each token now (no stdin, no rate limit) and print the result", NULL },
    { "status", 0, 0, G_OPTION_ARG_NONE, &c->status,
      "Print each token's last push, pending trailing push and gone mark", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &c->verbose, "Also log every decision to stderr",
      NULL },
    { "version", 'V', 0, G_OPTION_ARG_NONE, &c->version, "Print the version and exit", NULL },
    { "help", 'h', 0, G_OPTION_ARG_NONE, &c->help, "Show this help and exit", NULL },
    { "trailing-child", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &c->trailing_child, NULL,
      NULL },
    { "due", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING, &c->due, NULL, NULL },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &c->rest, NULL, "[TOKEN…]" },
    { NULL },
  };
  GOptionContext *ctx = g_option_context_new ("- push Delta Chat devices when mail arrives");

  g_option_context_set_help_enabled (ctx, FALSE);
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (
      ctx, "Reads one message on stdin and POSTs each push TOKEN to the notification proxy,\n"
           "unless the message is automatic, too old or rate-limited. Exit status 0 or 75.");
  g_option_context_set_description (
      ctx, "Example: deltachat-push --token-file ~/.config/deltachat-push/tokens < message.eml\n");
  return ctx;
}

gboolean
dcp_settings_parse (DcpSettings *s, int argc, char **argv, GError **error)
{
  g_auto (Cli) c = { 0 };
  g_autoptr (GOptionContext) ctx = make_context (&c);
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_auto (GStrv) args = g_new0 (gchar *, argc + 1);
  g_auto (GStrv) config_tokens = NULL;
  g_autoptr (GError) local = NULL;
  gchar **argp = args;
  int n = argc;
  const gchar *env_url;
  int modes;

  for (int i = 0; i < argc; i++)
    args[i] = g_strdup (argv[i]);
  if (!g_option_context_parse_strv (ctx, &argp, &local))
    {
      (void) n;
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "%s (see --help)", local->message);
      return FALSE;
    }
  if (c.help)
    {
      s->mode = DCP_MODE_HELP;
      s->help = g_option_context_get_help (ctx, TRUE, NULL);
      return TRUE;
    }
  if (c.version)
    {
      s->mode = DCP_MODE_VERSION;
      return TRUE;
    }
  modes = !!c.dry_run + !!c.ping + !!c.status + !!c.trailing_child;
  if (modes > 1)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID,
                           "--dry-run, --ping and --status exclude each other");
      return FALSE;
    }
  s->mode = c.dry_run          ? DCP_MODE_DRY_RUN
            : c.ping           ? DCP_MODE_PING
            : c.status         ? DCP_MODE_STATUS
            : c.trailing_child ? DCP_MODE_TRAILING
                               : DCP_MODE_DELIVER;

  /* the environment sits between the command line and the config file */
  env_url = g_getenv ("DELTACHAT_PUSH_URL");
  if (c.url == NULL && env_url != NULL && *env_url != '\0')
    c.url = g_strdup (env_url);
  if (s->mode != DCP_MODE_TRAILING && !read_config (&c, &config_tokens, error))
    return FALSE;

  for (gchar **t = c.rest; t != NULL && *t != NULL; t++)
    {
      g_autofree gchar *where
          = g_strdup_printf ("token %d on the command line", (int) (t - c.rest) + 1);
      if (!add_token (s, seen, *t, where, error))
        return FALSE;
    }
  for (gchar **t = config_tokens; t != NULL && *t != NULL; t++)
    {
      g_autofree gchar *tok = g_strstrip (g_strdup (*t));
      if (*tok != '\0' && !add_token (s, seen, tok, "config tokens", error))
        return FALSE;
    }
  for (gchar **f = c.token_files; f != NULL && *f != NULL; f++)
    if (!add_token_file (s, seen, *f, error))
      return FALSE;

  s->url = g_strdup (c.url ? c.url : DCP_DEFAULT_URL);
  if (!dcp_url_check (s->url, error)
      || (c.cacert != NULL && !check_cacert (c.cacert, &s->cacert, error)))
    return FALSE;
  if ((c.window && !parse_seconds ("--window", c.window, &s->window, error))
      || (c.max_age && !parse_seconds ("--max-age", c.max_age, &s->max_age, error))
      || (c.timeout && !parse_seconds ("--timeout", c.timeout, &s->timeout, error)))
    return FALSE;
  if (s->timeout == 0)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID, "--timeout must be at least 1");
      return FALSE;
    }
  if (c.due != NULL && !g_ascii_string_to_signed (c.due, 10, 0, G_MAXINT64, &s->due, NULL))
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID, "bad --due");
      return FALSE;
    }
  if (c.dovecot_metadata != NULL)
    dovecot_metadata (s, &c);
  s->self = lower_addresses (c.self);
  s->chat_only = c.chat_only;
  s->best_effort = c.best_effort;
  s->trailing = !c.no_trailing;
  s->verbose = c.verbose;
  s->cache_root = g_strdup (g_get_user_cache_dir ());

  if (s->tokens->len == 0 && s->mode != DCP_MODE_TRAILING && s->dovecot_metadata == NULL)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID,
                           "no push token given (TOKEN, --token-file or the config file)");
      return FALSE;
    }
  return TRUE;
}
