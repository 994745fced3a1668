/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A minimal loopback HTTP endpoint for the benchmark.
 *
 * Answers "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" to every request
 * (headers plus a Content-Length body), keeps connections open until the
 * client closes them, and appends one line per request to --log:
 * "<method> <path> <body>\n" (the body with CR/LF replaced by spaces).
 * Single-threaded, poll()-based, no allocation per request, so it adds as
 * little noise as a server can.  Listens on 127.0.0.1 only, on an
 * ephemeral port written to --port-file (atomically), and stops by itself
 * after --max-seconds or on SIGTERM/SIGINT.
 *
 *   endpoint --port-file F [--log F] [--max-seconds N]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 64
#define BUF_SIZE (64 * 1024)

static volatile sig_atomic_t stop;

static void
on_signal (int sig)
{
  (void) sig;
  stop = 1;
}

struct conn {
  int fd;
  size_t len;
  char buf[BUF_SIZE];
};

static struct conn conns[MAX_CONN];
static int log_fd = -1;

static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
conn_close (struct conn *c)
{
  close (c->fd);
  c->fd = -1;
  c->len = 0;
}

/* Length of one complete request at the start of buf, or 0 if incomplete. */
static size_t
request_length (const char *buf, size_t len, size_t *head_len, size_t *body_len)
{
  const char *end = memmem (buf, len, "\r\n\r\n", 4);
  if (!end)
    return 0;
  size_t head = (size_t) (end - buf) + 4;
  size_t body = 0;
  for (const char *p = buf; p < end;)
    {
      const char *nl = memmem (p, (size_t) (end - p), "\r\n", 2);
      if (!nl)
        nl = end;
      if ((size_t) (nl - p) > 15 && strncasecmp (p, "Content-Length:", 15) == 0)
        body = strtoul (p + 15, NULL, 10);
      p = nl + 2;
    }
  if (head + body > BUF_SIZE)
    body = BUF_SIZE - head; /* never expected; do not wedge */
  if (len < head + body)
    return 0;
  *head_len = head;
  *body_len = body;
  return head + body;
}

static void
log_request (const char *buf, size_t head, size_t body)
{
  if (log_fd < 0)
    return;
  char line[BUF_SIZE + 256];
  size_t n = 0;
  /* request line up to the HTTP version: "POST /path" */
  const char *eol = memmem (buf, head, "\r\n", 2);
  size_t rl = eol ? (size_t) (eol - buf) : 0;
  const char *sp = memmem (buf, rl, " HTTP/", 6);
  if (sp)
    rl = (size_t) (sp - buf);
  if (rl > 200)
    rl = 200;
  memcpy (line, buf, rl);
  n = rl;
  line[n++] = ' ';
  for (size_t i = 0; i < body; i++)
    {
      char ch = buf[head + i];
      line[n++] = (ch == '\r' || ch == '\n') ? ' ' : ch;
    }
  line[n++] = '\n';
  /* one write with O_APPEND: lines never interleave */
  if (write (log_fd, line, n) < 0)
    perror ("endpoint: log");
}

/* Handle readable data; returns 0 when the connection is to be closed. */
static int
conn_read (struct conn *c)
{
  ssize_t r = read (c->fd, c->buf + c->len, BUF_SIZE - c->len);
  if (r <= 0)
    return r < 0 && (errno == EINTR || errno == EAGAIN);
  c->len += (size_t) r;
  for (;;)
    {
      size_t head, body;
      size_t req = request_length (c->buf, c->len, &head, &body);
      if (!req)
        return c->len < BUF_SIZE; /* a request larger than the buffer: drop */
      log_request (c->buf, head, body);
      if (write (c->fd, reply, sizeof reply - 1) != (ssize_t) (sizeof reply - 1))
        return 0;
      memmove (c->buf, c->buf + req, c->len - req);
      c->len -= req;
    }
}

int
main (int argc, char **argv)
{
  const char *port_file = NULL, *log_file = NULL;
  double max_seconds = 600;
  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--port-file") == 0 && i + 1 < argc)
        port_file = argv[++i];
      else if (strcmp (argv[i], "--log") == 0 && i + 1 < argc)
        log_file = argv[++i];
      else if (strcmp (argv[i], "--max-seconds") == 0 && i + 1 < argc)
        max_seconds = atof (argv[++i]);
      else
        {
          fprintf (stderr, "usage: endpoint --port-file F [--log F] [--max-seconds N]\n");
          return 2;
        }
    }
  if (!port_file)
    {
      fprintf (stderr, "endpoint: --port-file is required\n");
      return 2;
    }

  struct sigaction sa = { .sa_handler = on_signal };
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);

  if (log_file)
    {
      log_fd = open (log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (log_fd < 0)
        {
          perror ("endpoint: open log");
          return 1;
        }
    }

  int lfd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt (lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t alen = sizeof addr;
  if (bind (lfd, (struct sockaddr *) &addr, sizeof addr) < 0 || listen (lfd, 128) < 0
      || getsockname (lfd, (struct sockaddr *) &addr, &alen) < 0)
    {
      perror ("endpoint: listen");
      return 1;
    }

  char tmp[4096];
  snprintf (tmp, sizeof tmp, "%s.tmp", port_file);
  FILE *pf = fopen (tmp, "w");
  if (!pf || fprintf (pf, "%d\n", ntohs (addr.sin_port)) < 0 || fclose (pf) != 0
      || rename (tmp, port_file) < 0)
    {
      perror ("endpoint: port file");
      return 1;
    }

  for (int i = 0; i < MAX_CONN; i++)
    conns[i].fd = -1;

  double deadline = now () + max_seconds;
  struct pollfd pfds[MAX_CONN + 1];
  int idx[MAX_CONN + 1];
  while (!stop && now () < deadline)
    {
      int n = 0;
      pfds[n] = (struct pollfd) { .fd = lfd, .events = POLLIN };
      idx[n++] = -1;
      for (int i = 0; i < MAX_CONN; i++)
        if (conns[i].fd >= 0)
          {
            pfds[n] = (struct pollfd) { .fd = conns[i].fd, .events = POLLIN };
            idx[n++] = i;
          }
      int r = poll (pfds, (nfds_t) n, 200);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          perror ("endpoint: poll");
          return 1;
        }
      for (int k = 0; k < n; k++)
        {
          if (!pfds[k].revents)
            continue;
          if (idx[k] < 0)
            {
              int cfd = accept4 (lfd, NULL, NULL, SOCK_CLOEXEC);
              if (cfd < 0)
                continue;
              setsockopt (cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
              int slot = -1;
              for (int i = 0; i < MAX_CONN; i++)
                if (conns[i].fd < 0)
                  {
                    slot = i;
                    break;
                  }
              if (slot < 0)
                {
                  close (cfd); /* full: the client will see a reset */
                  continue;
                }
              conns[slot].fd = cfd;
              conns[slot].len = 0;
            }
          else if (!conn_read (&conns[idx[k]]))
            conn_close (&conns[idx[k]]);
        }
    }
  for (int i = 0; i < MAX_CONN; i++)
    if (conns[i].fd >= 0)
      conn_close (&conns[i]);
  close (lfd);
  return 0;
}
