/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Command line, environment and config file, merged by precedence.
 *
 * Every option is described once, in `options` below: its names, config
 * key, type, default, help and where it lands in DcpSettings.  The
 * GOptionEntry array, the config file's keys, the defaults, --help's
 * "(default: ...)" and the cleanup all come from that table.  Values are
 * first collected as given (unset: NULL or FALSE), so we can tell what the
 * command line said from what it left to the config file.  Lists given on
 * the command line replace the config file's; tokens from argv and
 * --token-file are merged with each other and replace the config file's
 * `tokens` and `token-file`. */
#include "config.h"

#include "dcp-settings.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-error.h"
#include "dcp-file.h"
#include "dcp-plan.h"
#include "dcp-http.h"
#include "dcp-token.h"

#define GROUP "deltachat-push"

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
  if (!dcp_token_validate (token, strlen (token), error))
    {
      g_prefix_error (error, "%s: ", where);
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

  text = dcp_file_read (AT_FDCWD, path, DCP_FILE_FOLLOW, &len, &st, &local);
  if (text == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "token file %s", local->message);
      return FALSE;
    }
  if ((st.st_mode & 077) != 0)
    g_ptr_array_add (s->warnings,
                     g_strdup_printf ("token file %s is readable by others (mode %04o); "
                                      "chmod 600 it",
                                      path, (unsigned) (st.st_mode & 07777)));
  tokens = dcp_token_list_parse (text, len, error);
  if (tokens == NULL)
    {
      g_prefix_error (error, "token file %s, ", path);
      return FALSE;
    }
  if (tokens->len == 0)
    g_ptr_array_add (s->warnings, g_strdup_printf ("token file %s holds no token", path));
  for (guint i = 0; i < tokens->len; i++)
    if (!add_token (s, seen, g_ptr_array_index (tokens, i), path, error))
      return FALSE;
  return TRUE;
}

static gboolean
parse_seconds (const gchar *what, const gchar *text, gint64 *out, GError **error)
{
  guint64 v = 0;
  g_autoptr (GError) local = NULL;

  if (!g_ascii_string_to_unsigned (text, 10, 0, G_MAXINT32, &v, &local))
    {
      /* a token given here by mistake is not shown whole */
      g_autofree gchar *shown = strlen (text) > 8 ? dcp_token_display (text) : g_strdup (text);
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "%s must be a whole number of seconds, not \"%s\"", what, shown);
      return FALSE;
    }
  *out = (gint64) v;
  return TRUE;
}

/* Takes in. */
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
  g_strfreev (in);
  return (gchar **) g_ptr_array_free (out, FALSE);
}

typedef enum {
  OPT_STRING,  /* gchar *, as given */
  OPT_LIST,    /* gchar **, repeatable; a list in the config file */
  OPT_SECONDS, /* gint64, a whole number of seconds */
  OPT_FLAG,    /* gboolean, TRUE when given (on either side) */
  OPT_NO_FLAG, /* gboolean, FALSE when given */
  OPT_COUNT,   /* gint64, a whole number from 1 */
} OptType;

typedef struct {
  const gchar *name; /* long option, or NULL: config file only */
  gchar short_name;
  const gchar *key; /* config key, or NULL: command line only */
  OptType type;
  const gchar *def;  /* the default, also shown in --help, or NULL */
  const gchar *help; /* NULL: hidden (the detached sender's own options) */
  const gchar *arg;
  goffset field; /* where it lands in DcpSettings, or NONE: see parse */
} Option;

#define FIELD(f) G_STRUCT_OFFSET (DcpSettings, f)
#define NONE (-1)
#define CONFIG_DEFAULT "$XDG_CONFIG_HOME/deltachat-push/config"

/* clang-format off */
static const Option options[] = {
  { "token-file", 't', "token-file", OPT_LIST, NULL,
    "Read push tokens from FILE, one per line (repeatable)", "FILE", NONE },
  { NULL, 0, "tokens", OPT_LIST, NULL, NULL, NULL, NONE },
  { "config", 'c', NULL, OPT_STRING, CONFIG_DEFAULT,
    "Read settings from FILE", "FILE", NONE },
  { "url", 'u', "url", OPT_STRING, DCP_DEFAULT_URL,
    "Notification proxy URL", "URL", FIELD (url) },
  { "cacert", 0, "cacert", OPT_STRING, NULL,
    "Trust only the CA certificates in FILE, not the system's store", "FILE", FIELD (cacert) },
  { "window", 'w', "window", OPT_SECONDS, "10",
    "A push comes back to a token's bucket after this long; 0 turns rate limiting off", "SECONDS", FIELD (window) },
  { "burst", 0, "burst", OPT_COUNT, "3",
    "Per token, this many pushes at once; then one per window; 1 = one per window", "N",
    FIELD (burst) },
  { "self", 0, "self", OPT_LIST, NULL,
    "Skip mail From this address of the account's own (repeatable)", "ADDRESS", FIELD (self) },
  { "max-age", 0, "max-age", OPT_SECONDS, "86400",
    "Skip mail that reached the server longer ago, 0 = off", "SECONDS", FIELD (max_age) },
  { "chat-only", 0, "chat-only", OPT_FLAG, NULL,
    "Skip mail without Chat-Version", NULL, FIELD (chat_only) },
  { "timeout", 0, "timeout", OPT_SECONDS, "8",
    "Wall-clock budget for the network part of a run", "SECONDS", FIELD (timeout) },
  { "retry", 0, "retry", OPT_STRING, "background",
    "Who retries a failed push: background (a detached process) or caller (exit 75)",
    "MODE", FIELD (retry_name) },
  { "best-effort", 0, "best-effort", OPT_FLAG, NULL,
    "With --retry=caller: never exit 75, log transient failures and exit 0", NULL,
    FIELD (best_effort) },
  { "no-trailing", 0, "no-trailing", OPT_NO_FLAG, NULL,
    "No trailing push for mail that finds no push available", NULL, FIELD (trailing) },
  { "dovecot-metadata", 0, "dovecot-metadata", OPT_STRING, NULL,
    "Also push the device tokens in this Dovecot metadata file and in FILE.devices (the login hook's)", "FILE",
    FIELD (dovecot_metadata) },
  { "dry-run", 'n', NULL, OPT_FLAG, NULL,
    "Read and decide, print the decision per token, send nothing, change nothing", NULL, NONE },
  { "ping", 0, NULL, OPT_FLAG, NULL,
    "Send a push to each token now (no stdin, no rate limit) and print the result", NULL, NONE },
  { "status", 0, NULL, OPT_FLAG, NULL,
    "Print each token's last push, pushes available, pending trailing push, gone mark and owed "
    "push",
    NULL, NONE },
  { "resume", 0, NULL, OPT_FLAG, NULL,
    "Take over every owed or trailing push in the cache whose process is gone (run at boot)",
    NULL, NONE },
  { "verbose", 'v', "verbose", OPT_FLAG, NULL,
    "Also log every decision to stderr", NULL, FIELD (verbose) },
  { "version", 'V', NULL, OPT_FLAG, NULL, "Print the version and exit", NULL, NONE },
  { "help", 'h', NULL, OPT_FLAG, NULL, "Show this help and exit", NULL, NONE },
  { "trailing-child", 0, NULL, OPT_FLAG, NULL, NULL, NULL, NONE },
  { "owed-child", 0, NULL, OPT_FLAG, NULL, NULL, NULL, NONE },
  { "due", 0, NULL, OPT_STRING, NULL, NULL, NULL, NONE },
};
/* clang-format on */

#define N_OPTIONS G_N_ELEMENTS (options)

/* The values as given, one per option, before defaults. */
typedef union {
  gchar *str;
  gchar **strv;
  gboolean flag;
} Value;

typedef struct {
  Value v[N_OPTIONS];
  gchar **rest; /* the TOKENs */
} Cli;

static gboolean
is_pointer (OptType type)
{
  return type == OPT_STRING || type == OPT_LIST || type == OPT_SECONDS || type == OPT_COUNT;
}

static void
free_value (OptType type, gpointer p)
{
  if (type == OPT_LIST)
    g_strfreev (*(gchar ***) p);
  else if (is_pointer (type))
    g_free (*(gchar **) p);
}

static void
cli_clear (Cli *c)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    free_value (options[i].type, &c->v[i]);
  g_strfreev (c->rest);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Cli, cli_clear)

static Value *
value (Cli *c, const gchar *key)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (g_strcmp0 (options[i].name, key) == 0 || g_strcmp0 (options[i].key, key) == 0)
      return &c->v[i];
  g_assert_not_reached (); /* every caller names a row of the table */
}

DcpSettings *
dcp_settings_new (void)
{
  DcpSettings *s = g_new0 (DcpSettings, 1);
  s->tokens = g_ptr_array_new_with_free_func (g_free);
  s->warnings = g_ptr_array_new_with_free_func (g_free);
  s->trailing = TRUE;
  s->due = -1;
  dcp_schedule_init (&s->schedule);
  return s;
}

void
dcp_settings_free (DcpSettings *s)
{
  if (s == NULL)
    return;
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (options[i].field != NONE && options[i].type != OPT_SECONDS && options[i].type != OPT_COUNT)
      free_value (options[i].type, G_STRUCT_MEMBER_P (s, options[i].field));
  g_ptr_array_unref (s->tokens);
  g_ptr_array_unref (s->warnings);
  g_free (s->cache_root);
  g_free (s->help);
  g_free (s);
}

/* Dovecot runs sieve programs with HOME, USER and RECIPIENT set: the
 * file's ~ and relative paths are taken from HOME, as Dovecot does, and
 * the account's own mail causes no push, as on chatmail relays. */
static void
dovecot_metadata (DcpSettings *s)
{
  const gchar *own[] = { g_getenv ("USER"), g_getenv ("RECIPIENT") };
  GPtrArray *self = g_ptr_array_new ();
  g_autofree gchar *file = g_steal_pointer (&s->dovecot_metadata);

  s->dovecot_metadata = g_path_is_absolute (file) || g_str_has_prefix (file, "~/")
                            ? expand_home (file)
                            : g_build_filename (g_get_home_dir (), file, NULL);
  for (gchar **p = s->self; p != NULL && *p != NULL; p++)
    g_ptr_array_add (self, *p);
  for (gsize i = 0; i < G_N_ELEMENTS (own); i++)
    if (own[i] != NULL && strchr (own[i], '@') != NULL)
      g_ptr_array_add (self, g_strdup (own[i]));
  g_ptr_array_add (self, NULL);
  g_free (s->self);
  s->self = (gchar **) g_ptr_array_free (self, FALSE);
}

static gboolean
is_config_key (const gchar *key)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (g_strcmp0 (options[i].key, key) == 0)
      return TRUE;
  return FALSE;
}

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
    if (!is_config_key (*k))
      {
        g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: unknown key \"%s\"", path,
                     *k);
        return FALSE;
      }
  return TRUE;
}

/* GKeyFile's errors, in our domain, with the file named. */
static gboolean
config_error (GError **error, GError *local, const gchar *path)
{
  local->domain = DCP_ERROR;
  local->code = DCP_ERROR_INVALID;
  g_propagate_prefixed_error (error, local, "config %s: ", path);
  return FALSE;
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
    return config_error (error, g_steal_pointer (&local), path);
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
    return config_error (error, g_steal_pointer (&local), path);
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
    return config_error (error, g_steal_pointer (&local), path);
  *out = v;
  return TRUE;
}

/* One option's value from the config file, unless the command line gave
 * it already. */
static gboolean
config_value (GKeyFile *kf, const gchar *path, const Option *o, Value *v, GError **error)
{
  switch (o->type)
    {
    case OPT_LIST:
      return config_list (kf, path, o->key, &v->strv, error);
    case OPT_FLAG:
    case OPT_NO_FLAG:
      return config_bool (kf, path, o->key, &v->flag, error);
    case OPT_SECONDS:
      {
        g_autofree gchar *what = g_strdup_printf ("config %s: %s", path, o->key);
        gint64 ignored;
        gboolean had = v->str != NULL;
        return config_string (kf, path, o->key, &v->str, error)
               && (had || v->str == NULL || parse_seconds (what, v->str, &ignored, error));
      }
    case OPT_STRING:
    case OPT_COUNT:
    default:
      return config_string (kf, path, o->key, &v->str, error);
    }
}

/* A group-writable file is fine when the group is the user's own private
 * group (Debian's default with a umask of 002), as OpenSSH on Debian
 * accepts it for ~/.ssh/config. */
static gboolean
is_private_group (gid_t gid)
{
  struct passwd *pw = getpwuid (geteuid ());
  g_autofree gchar *user = pw != NULL ? g_strdup (pw->pw_name) : NULL;
  gid_t primary = pw != NULL ? pw->pw_gid : (gid_t) -1;
  struct group *gr = user != NULL && primary == gid ? getgrgid (gid) : NULL;

  if (gr == NULL || g_strcmp0 (gr->gr_name, user) != 0)
    return FALSE;
  for (gchar **m = gr->gr_mem; m != NULL && *m != NULL; m++)
    if (strcmp (*m, user) != 0)
      return FALSE;
  return TRUE;
}

/* Whoever can write the configuration can point url= at a server of
 * theirs and collect the tokens: a file that anyone but us (or root)
 * owns or may write is refused, not merely warned about, since a warning
 * lands in a log nobody reads while every push goes astray.  A file
 * replaced by someone else belongs to them, so the owner check also
 * covers a directory others may write to. */
static gboolean
check_config_owner (const gchar *path, const struct stat *st, GError **error)
{
  if (st->st_uid != geteuid () && st->st_uid != 0)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "config %s belongs to uid %u, not to this user or root: refused", path,
                   (unsigned) st->st_uid);
      return FALSE;
    }
  if ((st->st_mode & S_IWOTH) || ((st->st_mode & S_IWGRP) && !is_private_group (st->st_gid)))
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                   "config %s is writable by %s (mode %04o): refused; chmod go-w it", path,
                   (st->st_mode & S_IWOTH) ? "others" : "its group",
                   (unsigned) (st->st_mode & 07777));
      return FALSE;
    }
  return TRUE;
}

/* Merge the config file into whatever the command line left unset.  It
 * is read whole through dcp-file.h (never blocks, at most 1 MiB), then
 * parsed from memory. */
static gboolean
read_config (Cli *c, GError **error)
{
  g_autofree gchar *path = NULL;
  g_autofree gchar *text = NULL;
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local = NULL;
  const gchar *given = value (c, "config")->str;
  gboolean cli_tokens = value (c, "token-file")->strv != NULL || (c->rest && c->rest[0]);
  struct stat st;
  gsize len = 0;

  path = given ? expand_home (given)
               : g_build_filename (g_get_user_config_dir (), "deltachat-push", "config", NULL);
  text = dcp_file_read (AT_FDCWD, path, DCP_FILE_FOLLOW, &len, &st, &local);
  if (text == NULL && given == NULL && g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
    return TRUE;
  if (text == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s", local->message);
      return FALSE;
    }
  if (!check_config_owner (path, &st, error))
    return FALSE;
  if (!g_key_file_load_from_data (kf, text, len, G_KEY_FILE_NONE, &local))
    return config_error (error, g_steal_pointer (&local), path);
  if (!check_config_keys (kf, path, error))
    return FALSE;
  for (gsize i = 0; i < N_OPTIONS; i++)
    {
      const Option *o = &options[i];
      gboolean token_source
          = g_strcmp0 (o->key, "tokens") == 0 || g_strcmp0 (o->key, "token-file") == 0;
      if (o->key == NULL || (token_source && cli_tokens))
        continue;
      if (!config_value (kf, path, o, &c->v[i], error))
        return FALSE;
    }
  return TRUE;
}

static GOptionArg
option_arg (OptType type)
{
  switch (type)
    {
    case OPT_LIST:
      return G_OPTION_ARG_FILENAME_ARRAY;
    case OPT_FLAG:
    case OPT_NO_FLAG:
      return G_OPTION_ARG_NONE;
    case OPT_STRING:
    case OPT_SECONDS:
    case OPT_COUNT:
    default:
      return G_OPTION_ARG_FILENAME;
    }
}

/* The GOptionEntry array, from the table; help texts (with the default)
 * are kept in strings. */
static GOptionEntry *
make_entries (Cli *c, GPtrArray *strings)
{
  GOptionEntry *e = g_new0 (GOptionEntry, N_OPTIONS + 2);
  guint n = 0;

  for (gsize i = 0; i < N_OPTIONS; i++)
    {
      const Option *o = &options[i];
      gchar *help = NULL;
      if (o->name == NULL)
        continue;
      if (o->help != NULL)
        g_ptr_array_add (strings, help = o->def
                                             ? g_strdup_printf ("%s (default: %s)", o->help, o->def)
                                             : g_strdup (o->help));
      e[n++] = (GOptionEntry){
        o->name, o->short_name, o->help ? 0 : G_OPTION_FLAG_HIDDEN, option_arg (o->type), &c->v[i],
        help,    o->arg
      };
    }
  e[n++] = (GOptionEntry){ G_OPTION_REMAINING, 0,    0,         G_OPTION_ARG_FILENAME_ARRAY,
                           &c->rest,           NULL, "[TOKEN…]" };
  return e;
}

static GOptionContext *
make_context (Cli *c, GPtrArray *strings)
{
  g_autofree GOptionEntry *entries = make_entries (c, strings);
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

/* One option into DcpSettings: its value, or else its default. */
static gboolean
apply (DcpSettings *s, const Option *o, const Value *v, GError **error)
{
  gpointer field = G_STRUCT_MEMBER_P (s, o->field);
  const gchar *text = is_pointer (o->type) && v->str != NULL ? v->str : o->def;
  g_autofree gchar *what = g_strconcat ("--", o->name, NULL);

  switch (o->type)
    {
    case OPT_SECONDS:
      return parse_seconds (what, text, field, error);
    case OPT_COUNT:
      if (!parse_seconds (what, text, field, NULL) || *(gint64 *) field < 1
          || *(gint64 *) field > 1000)
        {
          g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                       "%s must be a whole number from 1 to 1000, not \"%s\"", what, text);
          return FALSE;
        }
      return TRUE;
    case OPT_LIST:
      *(gchar ***) field = g_strdupv (v->strv);
      return TRUE;
    case OPT_FLAG:
      *(gboolean *) field = v->flag;
      return TRUE;
    case OPT_NO_FLAG:
      *(gboolean *) field = !v->flag;
      return TRUE;
    case OPT_STRING:
    default:
      *(gchar **) field = g_strdup (text);
      return TRUE;
    }
}

static gboolean
parse_mode (DcpSettings *s, Cli *c, GError **error)
{
  static const struct {
    const gchar *name;
    DcpMode mode;
  } modes[] = {
    { "help", DCP_MODE_HELP },       { "version", DCP_MODE_VERSION },
    { "dry-run", DCP_MODE_DRY_RUN }, { "ping", DCP_MODE_PING },
    { "status", DCP_MODE_STATUS },   { "trailing-child", DCP_MODE_TRAILING },
    { "owed-child", DCP_MODE_OWED }, { "resume", DCP_MODE_RESUME },
  };
  guint n = 0;

  s->mode = DCP_MODE_DELIVER;
  for (gsize i = 0; i < G_N_ELEMENTS (modes); i++)
    if (value (c, modes[i].name)->flag)
      {
        /* --help and --version win over everything */
        if (i < 2)
          return (s->mode = modes[i].mode, TRUE);
        s->mode = modes[i].mode;
        n++;
      }
  if (n > 1)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID,
                           "--dry-run, --ping, --status and --resume exclude each other");
      return FALSE;
    }
  return TRUE;
}

static gboolean
collect_tokens (DcpSettings *s, Cli *c, gchar **config_tokens, GError **error)
{
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  gchar **files = value (c, "token-file")->strv;

  for (gchar **t = c->rest; t != NULL && *t != NULL; t++)
    {
      g_autofree gchar *where
          = g_strdup_printf ("token %d on the command line", (int) (t - c->rest) + 1);
      if (!add_token (s, seen, *t, where, error))
        return FALSE;
    }
  for (gchar **t = config_tokens; t != NULL && *t != NULL; t++)
    {
      g_autofree gchar *tok = g_strstrip (g_strdup (*t));
      if (*tok != '\0' && !add_token (s, seen, tok, "config tokens", error))
        return FALSE;
    }
  for (gchar **f = files; f != NULL && *f != NULL; f++)
    if (!add_token_file (s, seen, *f, error))
      return FALSE;
  return TRUE;
}

/* A --cacert FILE must be there and readable now: a run that finds out
 * only when it pushes would count a typo as a failed push. */
static gboolean
check_cacert (DcpSettings *s, GError **error)
{
  g_autofree gchar *path = expand_home (s->cacert);
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
  g_free (s->cacert);
  s->cacert = g_steal_pointer (&path);
  return TRUE;
}

/* The settings only code can check, once every option is in place. */
static gboolean
check_settings (DcpSettings *s, Cli *c, GError **error)
{
  const gchar *due = value (c, "due")->str;
#ifdef DCP_TEST_HOOKS
  const gchar *schedule = g_getenv ("DCP_RETRY_SCHEDULE");
#else
  const gchar *schedule = NULL;
#endif

  if (!dcp_url_check (s->url, error) || !dcp_retry_mode_parse (s->retry_name, &s->retry, error)
      || (s->cacert != NULL && !check_cacert (s, error)))
    return FALSE;
  if (s->timeout == 0)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID, "--timeout must be at least 1");
      return FALSE;
    }
  if (due != NULL && !g_ascii_string_to_signed (due, 10, 0, G_MAXINT64, &s->due, NULL))
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID, "bad --due");
      return FALSE;
    }
  if (schedule != NULL && *schedule != '\0' && !dcp_schedule_parse (schedule, &s->schedule, error))
    {
      g_prefix_error (error, "DCP_RETRY_SCHEDULE: ");
      return FALSE;
    }
  if (s->tokens->len == 0 && s->mode != DCP_MODE_TRAILING && s->mode != DCP_MODE_OWED
      && s->mode != DCP_MODE_RESUME && s->dovecot_metadata == NULL)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID,
                           "no push token given (TOKEN, --token-file or the config file)");
      return FALSE;
    }
  return TRUE;
}

static const Option *
find_option (const gchar *name, gchar short_name)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (options[i].name != NULL
        && (name != NULL ? strcmp (options[i].name, name) == 0
                         : options[i].short_name == short_name && short_name != 0))
      return &options[i];
  return NULL;
}

static gboolean
takes_value (const Option *o)
{
  return o != NULL && o->type != OPT_FLAG && o->type != OPT_NO_FLAG;
}

/* GOption takes a short option's value only from the next argument;
 * getopt(3) also takes it attached (-w10, -nw10), and so do we: such an
 * argument is split in two before GOption sees it.  A value given as the
 * next argument is copied untouched, whatever it looks like. */
static GStrv
split_attached_values (int argc, char **argv)
{
  GPtrArray *out = g_ptr_array_new ();
  int i = 0;

  if (argc > 0)
    g_ptr_array_add (out, g_strdup (argv[i++]));
  for (; i < argc; i++)
    {
      const gchar *a = argv[i];
      gboolean value_next = FALSE;

      if (strcmp (a, "--") == 0)
        break;
      if (g_str_has_prefix (a, "--"))
        value_next = strchr (a, '=') == NULL && takes_value (find_option (a + 2, 0));
      else if (a[0] == '-')
        for (gsize j = 1; a[j] != '\0'; j++)
          {
            const Option *o = find_option (NULL, a[j]);
            if (o == NULL)
              break;
            if (!takes_value (o))
              continue;
            if (a[j + 1] == '\0')
              value_next = TRUE;
            else
              {
                g_ptr_array_add (out, g_strndup (a, j + 1));
                a = a + j + 1;
              }
            break;
          }
      g_ptr_array_add (out, g_strdup (a));
      if (value_next && i + 1 < argc)
        g_ptr_array_add (out, g_strdup (argv[++i]));
    }
  for (; i < argc; i++)
    g_ptr_array_add (out, g_strdup (argv[i]));
  g_ptr_array_add (out, NULL);
  return (GStrv) g_ptr_array_free (out, FALSE);
}

/* An argument as an error may show it: an option's name whole, anything
 * else longer than 8 characters (a token given with a leading '-', or
 * as an option's value) only by its start, as the logs show tokens. */
static gchar *
shown_arg (const gchar *arg)
{
  const gchar *eq = strchr (arg, '=');
  gsize name_len = eq ? (gsize) (eq - arg) : strlen (arg);

  if (g_str_has_prefix (arg, "--") && name_len > 2
      && strspn (arg + 2, "abcdefghijklmnopqrstuvwxyz0123456789-") == name_len - 2)
    {
      g_autofree gchar *value = eq ? shown_arg (eq + 1) : NULL;
      return value ? g_strdup_printf ("%.*s=%s", (int) name_len, arg, value) : g_strdup (arg);
    }
  return strlen (arg) > 8 ? dcp_token_display (arg) : g_strdup (arg);
}

static gint
longer_first (gconstpointer a, gconstpointer b)
{
  gsize x = strlen (*(const gchar *const *) a), y = strlen (*(const gchar *const *) b);
  return x > y ? -1 : x < y ? 1 : 0;
}

/* GOption's error, with every argument it quotes shown as shown_arg()
 * says, longest first (one argument may hold another). */
static gchar *
hide_args (const gchar *message, char **argv, int argc)
{
  g_autoptr (GString) text = g_string_new (message);
  g_autoptr (GPtrArray) args = g_ptr_array_new ();

  for (int i = 1; i < argc; i++)
    g_ptr_array_add (args, argv[i]);
  g_ptr_array_sort (args, longer_first);
  for (guint i = 0; i < args->len; i++)
    {
      const gchar *arg = g_ptr_array_index (args, i);
      g_autofree gchar *shown = shown_arg (arg);
      if (*arg != '\0' && strcmp (shown, arg) != 0)
        g_string_replace (text, arg, shown, 0);
    }
  return g_string_free (g_steal_pointer (&text), FALSE);
}

static gboolean
parse_args (Cli *c, GOptionContext *ctx, int argc, char **argv, GError **error)
{
  g_auto (GStrv) args = split_attached_values (argc, argv);
  g_autoptr (GError) local = NULL;
  gchar **argp = args;

  if (!g_option_context_parse_strv (ctx, &argp, &local))
    {
      g_autofree gchar *text = hide_args (local->message, argv, argc);
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "%s (see --help%s)", text,
                   g_error_matches (local, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION)
                       ? "; a token that starts with - goes after --"
                       : "");
      return FALSE;
    }
  return TRUE;
}

gboolean
dcp_settings_parse (DcpSettings *s, int argc, char **argv, GError **error)
{
  g_auto (Cli) c = { 0 };
  g_autoptr (GPtrArray) strings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GOptionContext) ctx = make_context (&c, strings);
  gboolean detached;
  Value *url = value (&c, "url");
  const gchar *env_url = g_getenv ("DELTACHAT_PUSH_URL");

  if (!parse_args (&c, ctx, argc, argv, error) || !parse_mode (s, &c, error))
    return FALSE;
  if (s->mode == DCP_MODE_HELP)
    s->help = g_option_context_get_help (ctx, TRUE, NULL);
  if (s->mode == DCP_MODE_HELP || s->mode == DCP_MODE_VERSION)
    return TRUE;
  detached = s->mode == DCP_MODE_TRAILING || s->mode == DCP_MODE_OWED;

  /* the environment sits between the command line and the config file */
  if (url->str == NULL && env_url != NULL && *env_url != '\0')
    url->str = g_strdup (env_url);
  if (!detached && !read_config (&c, error))
    return FALSE;
  if (!collect_tokens (s, &c, value (&c, "tokens")->strv, error))
    return FALSE;
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (options[i].field != NONE && !apply (s, &options[i], &c.v[i], error))
      return FALSE;
  if (s->dovecot_metadata != NULL)
    dovecot_metadata (s);
  s->self = lower_addresses (g_steal_pointer (&s->self));
  s->cache_root = g_strdup (g_get_user_cache_dir ());
  return check_settings (s, &c, error);
}
