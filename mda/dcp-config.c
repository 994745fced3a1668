/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The config file (see dcp-config.h). */
#include "config.h"

#include "dcp-config.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dcp-error.h"
#include "dcp-file.h"

#define GROUP "deltachat-push"

gchar *
dcp_config_expand_home (const gchar *path)
{
  if (g_str_has_prefix (path, "~/"))
    return g_build_filename (g_get_home_dir (), path + 2, NULL);
  return g_strdup (path);
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

/* GKeyFile's errors, in our domain, with the file named. */
static gboolean
config_error (GError **error, GError *local, const gchar *path)
{
  local->domain = DCP_ERROR;
  local->code = DCP_ERROR_INVALID;
  g_propagate_prefixed_error (error, local, "config %s: ", path);
  return FALSE;
}

gboolean
dcp_config_bool (DcpConfig *config, const gchar *key, gboolean *out, GError **error)
{
  g_autoptr (GError) local = NULL;
  gboolean v;

  if (!g_key_file_has_key (config->kf, GROUP, key, NULL))
    return TRUE;
  v = g_key_file_get_boolean (config->kf, GROUP, key, &local);
  if (local != NULL)
    return config_error (error, g_steal_pointer (&local), config->path);
  *out = v;
  return TRUE;
}

gboolean
dcp_config_string (DcpConfig *config, const gchar *key, gchar **out, GError **error)
{
  g_autoptr (GError) local = NULL;
  gchar *v;

  if (*out != NULL || !g_key_file_has_key (config->kf, GROUP, key, NULL))
    return TRUE;
  v = g_key_file_get_string (config->kf, GROUP, key, &local);
  if (v == NULL)
    return config_error (error, g_steal_pointer (&local), config->path);
  *out = g_strstrip (v);
  return TRUE;
}

gboolean
dcp_config_list (DcpConfig *config, const gchar *key, gchar ***out, GError **error)
{
  g_autoptr (GError) local = NULL;
  gchar **v;

  if (*out != NULL || !g_key_file_has_key (config->kf, GROUP, key, NULL))
    return TRUE;
  v = g_key_file_get_string_list (config->kf, GROUP, key, NULL, &local);
  if (v == NULL)
    return config_error (error, g_steal_pointer (&local), config->path);
  *out = v;
  return TRUE;
}

/* The file, parsed, with no group but ours. */
static gboolean
parse (DcpConfig *config, const gchar *text, gsize len, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_auto (GStrv) groups = NULL;

  config->kf = g_key_file_new ();
  if (!g_key_file_load_from_data (config->kf, text, len, G_KEY_FILE_NONE, &local))
    return config_error (error, g_steal_pointer (&local), config->path);
  groups = g_key_file_get_groups (config->kf, NULL);
  for (gchar **g = groups; *g != NULL; g++)
    if (strcmp (*g, GROUP) != 0)
      {
        g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID,
                     "config %s: unknown group [%s] (expected [" GROUP "])", config->path, *g);
        return FALSE;
      }
  return TRUE;
}

gboolean
dcp_config_load (const gchar *given, DcpConfig **out, GError **error)
{
  g_autoptr (DcpConfig) config = g_new0 (DcpConfig, 1);
  g_autofree gchar *text = NULL;
  g_autoptr (GError) local = NULL;
  struct stat st;
  gsize len = 0;

  *out = NULL;
  config->path
      = given ? dcp_config_expand_home (given)
              : g_build_filename (g_get_user_config_dir (), "deltachat-push", "config", NULL);
  text = dcp_file_read (AT_FDCWD, config->path, DCP_FILE_FOLLOW, &len, &st, &local);
  if (text == NULL && given == NULL && g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
    return TRUE;
  if (text == NULL)
    {
      g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s", local->message);
      return FALSE;
    }
  if (!check_config_owner (config->path, &st, error) || !parse (config, text, len, error))
    return FALSE;
  *out = g_steal_pointer (&config);
  return TRUE;
}

void
dcp_config_free (DcpConfig *config)
{
  if (config == NULL)
    return;
  if (config->kf != NULL)
    g_key_file_free (config->kf);
  g_free (config->path);
  g_free (config);
}

gboolean
dcp_config_check_keys (DcpConfig *config, const gchar *const *known, GError **error)
{
  g_auto (GStrv) keys = g_key_file_get_keys (config->kf, GROUP, NULL, NULL);

  for (gchar **k = keys; k != NULL && *k != NULL; k++)
    if (!g_strv_contains (known, *k))
      {
        g_set_error (error, DCP_ERROR, DCP_ERROR_INVALID, "config %s: unknown key \"%s\"",
                     config->path, *k);
        return FALSE;
      }
  return TRUE;
}
