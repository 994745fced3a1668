/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Command line, environment and config file, merged by precedence.
 *
 * Every option is one row of the table in describe(): its name (on the
 * command line and as a config file key), the variable it lands in, its
 * default, help, and whether a detached run gets it.  GOption's entries,
 * the config file's keys, the defaults, --help's "(default: ...)", the
 * mode and a detached run's command line all come from that table.
 * Strings, lists and flags land in their variable as given (unset: NULL
 * or FALSE), so we can tell what the command line said from what it left
 * to the config file; a number stays text in its row until every source
 * is in, and a mode a flag, so that --help and --version win over a bad
 * value.  Lists given on the command line replace the config file's;
 * tokens from argv and --token-file are merged with each other and
 * replace the config file's `tokens` and `token-file`. */
#include "config.h"

#include "dcp-settings.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-config.h"
#include "dcp-error.h"
#include "dcp-file.h"
#include "dcp-retry.h"
#include "dcp-schedule.h"
#include "dcp-http.h"
#include "dcp-token.h"

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
  g_autofree gchar *path = dcp_config_expand_home (file);
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
  OPT_COUNT,   /* gint64, a whole number from 1 to 1000 */
  OPT_FLAG,    /* gboolean, TRUE when given (on either side) */
  OPT_NO_FLAG, /* gboolean, FALSE when given */
  OPT_MODE,    /* selects the mode */
} OptType;

typedef enum {
  ARGS = 1 << 0,     /* --name on the command line */
  CONFIG = 1 << 1,   /* name = value in the config file */
  DETACHED = 1 << 2, /* passed on to a detached run's command line */
} Where;

typedef struct {
  const gchar *name;
  gchar short_name;
  Where where;
  /* the variable it lands in: one of these, or none for a mode */
  gchar **opt_string;
  gchar ***opt_list;
  gint64 *opt_seconds;
  gint64 *opt_count;
  gboolean *opt_bool;
  gboolean negated; /* opt_bool is FALSE when given */
  DcpMode mode;
  const gchar *def;  /* the default, also shown in --help, or NULL */
  const gchar *help; /* NULL: hidden (a detached run's own options) */
  const gchar *arg;
  gchar *text;    /* a number as given, until every source is in */
  gboolean given; /* a mode: TRUE when given */
} Option;

#define N_OPTIONS 23

typedef struct {
  Option options[N_OPTIONS];
  gchar *config;       /* --config */
  gchar **token_files; /* --token-file, or the config file's */
  gchar **tokens;      /* the config file's */
  gchar **rest;        /* the TOKENs */
} Cli;

/* The options, in --help's order: each row points at where its value
 * lands, in s or in c. */
static void
describe (Cli *c, DcpSettings *s)
{
  const Option options[] = {
    { .name = "token-file",
      .short_name = 't',
      .where = ARGS | CONFIG,
      .opt_list = &c->token_files,
      .help = "Read push tokens from FILE, one per line (repeatable)",
      .arg = "FILE" },
    { .name = "tokens", .where = CONFIG, .opt_list = &c->tokens },
    { .name = "config",
      .short_name = 'c',
      .where = ARGS,
      .opt_string = &c->config,
      .help = "Read settings from FILE (default: $XDG_CONFIG_HOME/deltachat-push/config)",
      .arg = "FILE" },
    { .name = "url",
      .short_name = 'u',
      .where = ARGS | CONFIG | DETACHED,
      .opt_string = &s->url,
      .def = DCP_DEFAULT_URL,
      .help = "Notification proxy URL",
      .arg = "URL" },
    { .name = "cacert",
      .where = ARGS | CONFIG | DETACHED,
      .opt_string = &s->cacert,
      .help = "Trust only the CA certificates in FILE, not the system's store",
      .arg = "FILE" },
    { .name = "window",
      .short_name = 'w',
      .where = ARGS | CONFIG | DETACHED,
      .opt_seconds = &s->window,
      .def = "10",
      .help = "A push comes back to a token's bucket after this long; 0 turns rate limiting off",
      .arg = "SECONDS" },
    { .name = "burst",
      .where = ARGS | CONFIG | DETACHED,
      .opt_count = &s->burst,
      .def = "3",
      .help = "Per token, this many pushes at once; then one per window; 1 = one per window",
      .arg = "N" },
    { .name = "self",
      .where = ARGS | CONFIG,
      .opt_list = &s->self,
      .help = "Skip mail From this address of the account's own (repeatable)",
      .arg = "ADDRESS" },
    { .name = "max-age",
      .where = ARGS | CONFIG,
      .opt_seconds = &s->max_age,
      .def = "86400",
      .help = "Skip mail that reached the server longer ago, 0 = off",
      .arg = "SECONDS" },
    { .name = "chat-only",
      .where = ARGS | CONFIG,
      .opt_bool = &s->chat_only,
      .help = "Skip mail without Chat-Version" },
    { .name = "timeout",
      .where = ARGS | CONFIG | DETACHED,
      .opt_seconds = &s->timeout,
      .def = "8",
      .help = "Wall-clock budget for the network part of a run",
      .arg = "SECONDS" },
    { .name = "retry",
      .where = ARGS | CONFIG | DETACHED,
      .opt_string = &s->retry_name,
      .def = "background",
      .help = "Who retries a failed push: background (a detached process) or caller (exit 75)",
      .arg = "MODE" },
    { .name = "best-effort",
      .where = ARGS | CONFIG,
      .opt_bool = &s->best_effort,
      .help = "With --retry=caller: never exit 75, log transient failures and exit 0" },
    { .name = "no-trailing",
      .where = ARGS | CONFIG | DETACHED,
      .opt_bool = &s->trailing,
      .negated = TRUE,
      .help = "No trailing push for mail that finds no push available" },
    { .name = "dovecot-metadata",
      .where = ARGS | CONFIG,
      .opt_string = &s->dovecot_metadata,
      .help = "Also push the device tokens in this Dovecot metadata file and in FILE.devices "
              "(the login hook's)",
      .arg = "FILE" },
    { .name = "dry-run",
      .short_name = 'n',
      .where = ARGS,
      .mode = DCP_MODE_DRY_RUN,
      .help = "Read and decide, print the decision per token, send nothing, change nothing" },
    { .name = "ping",
      .where = ARGS,
      .mode = DCP_MODE_PING,
      .help = "Send a push to each token now (no stdin, no rate limit) and print the result" },
    { .name = "status",
      .where = ARGS,
      .mode = DCP_MODE_STATUS,
      .help = "Print each token's last push, pushes available, pending trailing push, gone mark "
              "and owed push" },
    { .name = "resume",
      .where = ARGS,
      .mode = DCP_MODE_RESUME,
      .help = "Take over every owed or trailing push in the cache whose process is gone (run at "
              "boot)" },
    { .name = "verbose",
      .short_name = 'v',
      .where = ARGS | CONFIG,
      .opt_bool = &s->verbose,
      .help = "Also log every decision to stderr" },
    { .name = "version",
      .short_name = 'V',
      .where = ARGS,
      .mode = DCP_MODE_VERSION,
      .help = "Print the version and exit" },
    { .name = "help",
      .short_name = 'h',
      .where = ARGS,
      .mode = DCP_MODE_HELP,
      .help = "Show this help and exit" },
    { .name = "trailing-child", .where = ARGS, .mode = DCP_MODE_TRAILING },
  };

  G_STATIC_ASSERT (G_N_ELEMENTS (options) == N_OPTIONS);
  memcpy (c->options, options, sizeof options);
}

static OptType
type_of (const Option *o)
{
  if (o->opt_string != NULL)
    return OPT_STRING;
  if (o->opt_list != NULL)
    return OPT_LIST;
  if (o->opt_seconds != NULL)
    return OPT_SECONDS;
  if (o->opt_count != NULL)
    return OPT_COUNT;
  if (o->opt_bool != NULL)
    return o->negated ? OPT_NO_FLAG : OPT_FLAG;
  return OPT_MODE;
}

static void
cli_clear (Cli *c)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    g_free (c->options[i].text);
  g_free (c->config);
  g_strfreev (c->token_files);
  g_strfreev (c->tokens);
  g_strfreev (c->rest);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Cli, cli_clear)

DcpSettings *
dcp_settings_new (void)
{
  DcpSettings *s = g_new0 (DcpSettings, 1);
  s->tokens = g_ptr_array_new_with_free_func (g_free);
  s->warnings = g_ptr_array_new_with_free_func (g_free);
  s->trailing = TRUE; /* --no-trailing turns it off */
  dcp_schedule_init (&s->schedule);
  return s;
}

void
dcp_settings_free (DcpSettings *s)
{
  if (s == NULL)
    return;
  g_ptr_array_unref (s->tokens);
  g_free (s->url);
  g_free (s->cacert);
  g_strfreev (s->self);
  g_free (s->retry_name);
  g_free (s->cache_root);
  g_free (s->dovecot_metadata);
  g_ptr_array_unref (s->warnings);
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
                            ? dcp_config_expand_home (file)
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

/* A number of seconds is checked here, to name the file in the error. */
static gboolean
config_seconds (DcpConfig *config, Option *o, GError **error)
{
  g_autofree gchar *what = g_strdup_printf ("config %s: %s", config->path, o->name);
  gboolean had = o->text != NULL;
  gint64 ignored;

  return dcp_config_string (config, o->name, &o->text, error)
         && (had || o->text == NULL || parse_seconds (what, o->text, &ignored, error));
}

/* One option's value from the config file, unless the command line gave
 * it already; a flag is on when either side turns it on. */
static gboolean
config_value (DcpConfig *config, Option *o, GError **error)
{
  gboolean on = FALSE;

  switch (type_of (o))
    {
    case OPT_LIST:
      return dcp_config_list (config, o->name, o->opt_list, error);
    case OPT_FLAG:
    case OPT_NO_FLAG:
      if (!dcp_config_bool (config, o->name, &on, error))
        return FALSE;
      if (on)
        *o->opt_bool = !o->negated;
      return TRUE;
    case OPT_SECONDS:
      return config_seconds (config, o, error);
    case OPT_COUNT:
      return dcp_config_string (config, o->name, &o->text, error);
    case OPT_STRING:
      return dcp_config_string (config, o->name, o->opt_string, error);
    case OPT_MODE:
    default:
      return TRUE;
    }
}

/* The config file's tokens and token files count only when the command
 * line gives none. */
static gboolean
is_token_source (const Cli *c, const Option *o)
{
  return o->opt_list == &c->token_files || o->opt_list == &c->tokens;
}

/* Merge the config file into whatever the command line left unset. */
static gboolean
read_config (Cli *c, GError **error)
{
  g_autoptr (DcpConfig) config = NULL;
  gboolean cli_tokens = c->token_files != NULL || (c->rest && c->rest[0]);
  const gchar *keys[N_OPTIONS + 1];
  guint n = 0;

  if (!dcp_config_load (c->config, &config, error))
    return FALSE;
  if (config == NULL)
    return TRUE;
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (c->options[i].where & CONFIG)
      keys[n++] = c->options[i].name;
  keys[n] = NULL;
  if (!dcp_config_check_keys (config, keys, error))
    return FALSE;
  for (gsize i = 0; i < N_OPTIONS; i++)
    {
      Option *o = &c->options[i];
      if (!(o->where & CONFIG) || (cli_tokens && is_token_source (c, o)))
        continue;
      if (!config_value (config, o, error))
        return FALSE;
    }
  return TRUE;
}

/* Where GOption puts what it is given, and as what. */
static GOptionArg
option_arg (Option *o, gpointer *data)
{
  switch (type_of (o))
    {
    case OPT_LIST:
      *data = o->opt_list;
      return G_OPTION_ARG_FILENAME_ARRAY;
    case OPT_FLAG:
    case OPT_NO_FLAG:
      *data = o->opt_bool;
      return G_OPTION_ARG_NONE;
    case OPT_MODE:
      *data = &o->given;
      return G_OPTION_ARG_NONE;
    case OPT_SECONDS:
    case OPT_COUNT:
      *data = &o->text;
      return G_OPTION_ARG_FILENAME;
    case OPT_STRING:
    default:
      *data = o->opt_string;
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
      Option *o = &c->options[i];
      gchar *help = NULL;
      if (!(o->where & ARGS))
        continue;
      if (o->help != NULL)
        g_ptr_array_add (strings, help = o->def
                                             ? g_strdup_printf ("%s (default: %s)", o->help, o->def)
                                             : g_strdup (o->help));
      e[n] = (GOptionEntry){ o->name, o->short_name, 0, G_OPTION_ARG_NONE, NULL, help, o->arg };
      e[n].flags = (o->help ? 0 : G_OPTION_FLAG_HIDDEN) | (o->negated ? G_OPTION_FLAG_REVERSE : 0);
      e[n].arg = option_arg (o, &e[n].arg_data);
      n++;
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

/* One option's default, or its number parsed, once every source is in. */
static gboolean
apply (Option *o, GError **error)
{
  const gchar *text = o->text != NULL ? o->text : o->def;
  g_autofree gchar *what = g_strconcat ("--", o->name, NULL);

  switch (type_of (o))
    {
    case OPT_STRING:
      if (*o->opt_string == NULL)
        *o->opt_string = g_strdup (o->def);
      return TRUE;
    case OPT_SECONDS:
      return parse_seconds (what, text, o->opt_seconds, error);
    case OPT_COUNT:
      if (!parse_seconds (what, text, o->opt_count, NULL) || *o->opt_count < 1
          || *o->opt_count > 1000)
        {
          g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                       "%s must be a whole number from 1 to 1000, not \"%s\"", what, text);
          return FALSE;
        }
      return TRUE;
    case OPT_LIST:
    case OPT_FLAG:
    case OPT_NO_FLAG:
    case OPT_MODE:
    default:
      return TRUE;
    }
}

static gboolean
mode_given (const Cli *c, DcpMode mode)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (type_of (&c->options[i]) == OPT_MODE && c->options[i].mode == mode && c->options[i].given)
      return TRUE;
  return FALSE;
}

/* --help, then --version, win over everything; the other modes exclude
 * each other. */
static gboolean
parse_mode (DcpSettings *s, const Cli *c, GError **error)
{
  guint n = 0;

  s->mode = DCP_MODE_DELIVER;
  if (mode_given (c, DCP_MODE_HELP) || mode_given (c, DCP_MODE_VERSION))
    {
      s->mode = mode_given (c, DCP_MODE_HELP) ? DCP_MODE_HELP : DCP_MODE_VERSION;
      return TRUE;
    }
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (type_of (&c->options[i]) == OPT_MODE && c->options[i].given)
      {
        s->mode = c->options[i].mode;
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
collect_tokens (DcpSettings *s, Cli *c, GError **error)
{
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);

  for (gchar **t = c->rest; t != NULL && *t != NULL; t++)
    {
      g_autofree gchar *where
          = g_strdup_printf ("token %d on the command line", (int) (t - c->rest) + 1);
      if (!add_token (s, seen, *t, where, error))
        return FALSE;
    }
  for (gchar **t = c->tokens; t != NULL && *t != NULL; t++)
    {
      g_autofree gchar *tok = g_strstrip (g_strdup (*t));
      if (*tok != '\0' && !add_token (s, seen, tok, "config tokens", error))
        return FALSE;
    }
  for (gchar **f = c->token_files; f != NULL && *f != NULL; f++)
    if (!add_token_file (s, seen, *f, error))
      return FALSE;
  return TRUE;
}

/* A --cacert FILE must be there and readable now: a run that finds out
 * only when it pushes would count a typo as a failed push. */
static gboolean
check_cacert (DcpSettings *s, GError **error)
{
  g_autofree gchar *path = dcp_config_expand_home (s->cacert);
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
check_settings (DcpSettings *s, GError **error)
{
#ifdef DCP_TEST_HOOKS
  const gchar *schedule = g_getenv ("DCP_RETRY_SCHEDULE");
#else
  const gchar *schedule = NULL;
#endif

  if (!dcp_http_check_url (s->url, error) || !dcp_retry_mode_parse (s->retry_name, &s->retry, error)
      || (s->cacert != NULL && !check_cacert (s, error)))
    return FALSE;
  if (s->timeout == 0)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID, "--timeout must be at least 1");
      return FALSE;
    }
  if (schedule != NULL && *schedule != '\0' && !dcp_schedule_parse (schedule, &s->schedule, error))
    {
      g_prefix_error (error, "DCP_RETRY_SCHEDULE: ");
      return FALSE;
    }
  if (s->tokens->len == 0 && s->mode != DCP_MODE_TRAILING && s->mode != DCP_MODE_RESUME
      && s->dovecot_metadata == NULL)
    {
      g_set_error_literal (error, DCP_ERROR, DCP_ERROR_INVALID,
                           "no push token given (TOKEN, --token-file or the config file)");
      return FALSE;
    }
  return TRUE;
}

static const Option *
find_option (const Cli *c, const gchar *name, gchar short_name)
{
  for (gsize i = 0; i < N_OPTIONS; i++)
    {
      const Option *o = &c->options[i];
      if ((o->where & ARGS)
          && (name != NULL ? strcmp (o->name, name) == 0
                           : o->short_name == short_name && short_name != 0))
        return o;
    }
  return NULL;
}

static gboolean
takes_value (const Option *o)
{
  OptType type = o != NULL ? type_of (o) : OPT_FLAG;
  return type != OPT_FLAG && type != OPT_NO_FLAG && type != OPT_MODE;
}

/* In a cluster of short options (-nw10): where the value of the first one
 * that takes a value starts, or 0 when it is not attached (then
 * *value_next says whether it is the next argument). */
static gsize
attached_value (const Cli *c, const gchar *a, gboolean *value_next)
{
  for (gsize j = 1; a[j] != '\0'; j++)
    {
      const Option *o = find_option (c, NULL, a[j]);
      if (o == NULL)
        return 0;
      if (!takes_value (o))
        continue;
      *value_next = a[j + 1] == '\0';
      return *value_next ? 0 : j + 1;
    }
  return 0;
}

/* GOption takes a short option's value only from the next argument;
 * getopt(3) also takes it attached (-w10, -nw10), and so do we: such an
 * argument is split in two before GOption sees it.  A value given as the
 * next argument is copied untouched, whatever it looks like. */
static GStrv
split_attached_values (const Cli *c, int argc, char **argv)
{
  GPtrArray *out = g_ptr_array_new ();
  int i = 0;

  if (argc > 0)
    g_ptr_array_add (out, g_strdup (argv[i++]));
  for (; i < argc; i++)
    {
      const gchar *a = argv[i];
      gboolean value_next = FALSE;
      gsize cut;

      if (strcmp (a, "--") == 0)
        break;
      if (g_str_has_prefix (a, "--"))
        value_next = strchr (a, '=') == NULL && takes_value (find_option (c, a + 2, 0));
      else if (a[0] == '-' && (cut = attached_value (c, a, &value_next)) > 0)
        {
          g_ptr_array_add (out, g_strndup (a, cut));
          a += cut;
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
  g_auto (GStrv) args = split_attached_values (c, argc, argv);
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
  g_autoptr (GOptionContext) ctx = NULL;
  const gchar *env_url = g_getenv ("DELTACHAT_PUSH_URL");

  describe (&c, s);
  ctx = make_context (&c, strings);
  if (!parse_args (&c, ctx, argc, argv, error) || !parse_mode (s, &c, error))
    return FALSE;
  if (s->mode == DCP_MODE_HELP)
    s->help = g_option_context_get_help (ctx, TRUE, NULL);
  if (s->mode == DCP_MODE_HELP || s->mode == DCP_MODE_VERSION)
    return TRUE;

  /* the environment sits between the command line and the config file */
  if (s->url == NULL && env_url != NULL && *env_url != '\0')
    s->url = g_strdup (env_url);
  if (s->mode != DCP_MODE_TRAILING && !read_config (&c, error))
    return FALSE;
  if (!collect_tokens (s, &c, error))
    return FALSE;
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (!apply (&c.options[i], error))
      return FALSE;
  if (s->dovecot_metadata != NULL)
    dovecot_metadata (s);
  s->self = lower_addresses (g_steal_pointer (&s->self));
  s->cache_root = g_strdup (g_get_user_cache_dir ());
  return check_settings (s, error);
}

/* One row on a detached run's command line: --name=value, or --name for
 * a flag that is on. */
static void
add_detached_arg (GPtrArray *argv, const Option *o)
{
  switch (type_of (o))
    {
    case OPT_STRING:
      if (*o->opt_string != NULL)
        g_ptr_array_add (argv, g_strdup_printf ("--%s=%s", o->name, *o->opt_string));
      break;
    case OPT_LIST:
      for (gchar **p = *o->opt_list; p != NULL && *p != NULL; p++)
        g_ptr_array_add (argv, g_strdup_printf ("--%s=%s", o->name, *p));
      break;
    case OPT_SECONDS:
      g_ptr_array_add (argv, g_strdup_printf ("--%s=%" G_GINT64_FORMAT, o->name, *o->opt_seconds));
      break;
    case OPT_COUNT:
      g_ptr_array_add (argv, g_strdup_printf ("--%s=%" G_GINT64_FORMAT, o->name, *o->opt_count));
      break;
    case OPT_FLAG:
    case OPT_NO_FLAG:
      if (*o->opt_bool != o->negated)
        g_ptr_array_add (argv, g_strconcat ("--", o->name, NULL));
      break;
    case OPT_MODE:
    default:
      break;
    }
}

GStrv
dcp_settings_detached_argv (DcpSettings *s, DcpMode mode)
{
  g_auto (Cli) c = { 0 };
  GPtrArray *argv = g_ptr_array_new ();

  describe (&c, s);
  g_ptr_array_add (argv, g_strdup (PACKAGE_NAME));
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (type_of (&c.options[i]) == OPT_MODE && c.options[i].mode == mode)
      g_ptr_array_add (argv, g_strconcat ("--", c.options[i].name, NULL));
  for (gsize i = 0; i < N_OPTIONS; i++)
    if (c.options[i].where & DETACHED)
      add_detached_arg (argv, &c.options[i]);
  g_ptr_array_add (argv, NULL);
  return (GStrv) g_ptr_array_free (argv, FALSE);
}
