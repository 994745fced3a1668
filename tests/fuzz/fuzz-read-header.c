/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer driver for dcp_message_read_header(): the one piece of our own
 * byte-level parsing that GMime does not do for us, with a search for the
 * blank line that has to work across read() chunks.
 *
 * The input goes through a regular file (memfd, as getmail hands it over)
 * and through a pipe (as everybody else does), and the header block read
 * back must equal what a plain reference scan of the whole input finds
 * (reference_end() below, written from the rule, not from the code).  The pipe must be drained to
 * EOF.  The first input byte picks a padding header that moves the rest of the input onto a
 * read-chunk boundary (16 KiB in dcp-message.c; other sizes are harmless, just less sharp), so
 * blank lines split across two read() calls get tried. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dcp-message.h"
#include "fuzz-check.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define CHUNK 16384
#define PIPE_MAX 65536 /* stay within the default pipe capacity */

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  return 0;
}

/* A header field line: a name of printable ASCII other than ':', optional
 * blanks, then ':'. */
static gboolean
ref_is_field (const uint8_t *line, size_t len)
{
  size_t i = 0;

  while (i < len && line[i] != ':' && line[i] >= 0x21 && line[i] <= 0x7e)
    i++;
  if (i == 0)
    return FALSE;
  while (i < len && (line[i] == ' ' || line[i] == '\t'))
    i++;
  return i < len && line[i] == ':';
}

/* Length of the header block, as dcp-message.c documents it: it ends after
 * the first blank line (LF or CRLF), or before the first line that is
 * neither a field nor a continuation line (a first line that is neither a
 * field nor an mbox From_ line is kept alone), or at the end of the input
 * or the 1 MiB cap when neither is seen. */
static size_t
reference_end (const uint8_t *d, size_t n)
{
  size_t pos = 0;

  if (n > DCP_MESSAGE_HEADER_MAX)
    n = DCP_MESSAGE_HEADER_MAX;
  while (pos < n)
    {
      const uint8_t *nl = memchr (d + pos, '\n', n - pos);
      size_t next, len;
      gboolean ok;

      if (nl == NULL)
        return n;
      next = (size_t) (nl - d) + 1;
      len = (size_t) (nl - d) - pos;
      if (len > 0 && d[pos + len - 1] == '\r')
        len--;
      if (len == 0)
        return next;
      if (pos == 0)
        ok = (len >= 5 && memcmp (d, "From ", 5) == 0) || ref_is_field (d, len);
      else
        ok = d[pos] == ' ' || d[pos] == '\t' || ref_is_field (d + pos, len);
      if (!ok)
        return pos == 0 ? next : pos;
      pos = next;
    }
  return n;
}

static void
write_all (int fd, const uint8_t *d, size_t n)
{
  while (n > 0)
    {
      ssize_t w = write (fd, d, n);
      if (w < 0 && errno == EINTR)
        continue;
      CHECK (w > 0);
      d += w;
      n -= (size_t) w;
    }
}

static void
check_read (int fd, const uint8_t *d, size_t n, gboolean pipe_end)
{
  g_autoptr (GError) error = NULL;
  gsize total = 0;
  g_autoptr (GBytes) got = dcp_message_read_header (fd, &total, &error);
  size_t want = reference_end (d, n);
  gsize len = 0;
  const guint8 *p;

  CHECK (got != NULL && error == NULL);
  p = g_bytes_get_data (got, &len);
  CHECK (len == want);
  CHECK (len == 0 || memcmp (p, d, len) == 0);
  CHECK (total >= len);
  if (pipe_end)
    CHECK (total == n); /* drained */
  else
    CHECK (total <= n);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t *buf;
  size_t pad = 0, n;
  int fd, pfd[2];

  if (size > 0)
    {
      /* data[0] & 0x80: pad so the rest starts (data[0] & 0x3f) bytes
       * before the end of the first chunk; otherwise no padding. */
      if (data[0] & 0x80)
        pad = CHUNK - (data[0] & 0x3f);
      data++;
      size--;
    }
  if (pad + size > PIPE_MAX)
    size = PIPE_MAX - pad;

  n = pad + size;
  buf = malloc (n + 1);
  CHECK (buf != NULL);
  if (pad > 0)
    {
      /* "X:aaaa...a\n", a header field exactly pad bytes long */
      buf[0] = 'X';
      buf[1] = ':';
      memset (buf + 2, 'a', pad - 3);
      buf[pad - 1] = '\n';
    }
  if (size > 0)
    memcpy (buf + pad, data, size);

  /* A regular file: read from its start, not past what is needed. */
  fd = memfd_create ("fuzz-read-header", MFD_CLOEXEC);
  CHECK (fd >= 0);
  write_all (fd, buf, n);
  CHECK (lseek (fd, 0, SEEK_SET) == 0);
  check_read (fd, buf, n, FALSE);
  close (fd);

  /* A pipe holding the whole input, writer already closed. */
  CHECK (pipe2 (pfd, O_CLOEXEC) == 0);
  (void) fcntl (pfd[1], F_SETPIPE_SZ, PIPE_MAX);
  write_all (pfd[1], buf, n);
  close (pfd[1]);
  check_read (pfd[0], buf, n, TRUE);
  close (pfd[0]);

  free (buf);
  return 0;
}
