/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading files that someone else could replace.
 *
 * The configuration, token files, Dovecot's metadata file and the entries
 * of the state directory are all files that another program (or another
 * user, or a mistake) could turn into a FIFO, a device, a directory or a
 * huge file.  Opening a FIFO blocks until a writer shows up, reading a
 * device may never end, and reading a huge file whole costs its size in
 * memory.  So every such file is opened here: without blocking, checked to
 * be a regular file, and read whole only up to DCP_FILE_MAX. */
#pragma once

#include <glib.h>
#include <sys/stat.h>

G_BEGIN_DECLS

/* the largest file read whole: the real ones hold a few lines */
#define DCP_FILE_MAX (1024 * 1024)

typedef enum {
  DCP_FILE_FOLLOW = 0,        /* a symbolic link is followed */
  DCP_FILE_NOFOLLOW = 1 << 0, /* a symbolic link is refused (ELOOP) */
} DcpFileFlags;

int dcp_file_open (int dirfd, const gchar *name, int oflags, DcpFileFlags flags, struct stat *st,
                   GError **error);
gchar *dcp_file_read_fd (int fd, const gchar *name, gsize *len, GError **error);
gchar *dcp_file_read (int dirfd, const gchar *name, DcpFileFlags flags, gsize *len, struct stat *st,
                      GError **error);

G_END_DECLS
