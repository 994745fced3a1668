/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The detached owner of a token's next push (see dcp-sender.h).
 *
 * It is started through dcp-spawn.h, a fresh exec of ourselves with the
 * token on stdin and the token's mark on fd 3, flock()ed for as long as
 * the process lives, so a run can tell a live one from a dead one (a
 * reboot, kill -9) and take it over.
 *
 * What it does is the state machine's (lib/dcp-machine.h): it sleeps
 * until the push is due (a trailing push: when the bucket has one; an
 * owed one: the schedule's next step), pushes, feeds the answer back, and
 * ends when nothing is left.  A run that moves its due time earlier (a
 * message for an owed push) pokes it with SIGUSR1. */
#include "config.h"

#include "dcp-sender.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dcp-log.h"
#include "dcp-spawn.h"
#include "dcp-time.h"
#include "dcp-token.h"

/* steps an owner takes, at most: each is a push or a sleep until one
 * is due, and the schedule ends 5 hours after the first failure */
#define OWNER_STEPS_MAX 100000

/* The detached process reads no config file: the settings it needs are
 * on its command line, written from the options table. */
static gboolean
spawn_sender (DcpRun *r, const gchar *token, int mark, GError **error)
{
  g_auto (GStrv) argv = dcp_settings_detached_argv (r->s, DCP_MODE_TRAILING);

  if (!dcp_spawn_detached (argv, token, mark, error))
    {
      g_prefix_error (error, "cannot start the detached push: ");
      return FALSE;
    }
  return TRUE;
}

/* A step said: start an owner, due at step->a.detach_at.  Without one the
 * mark stays, unlocked: the next run for the token or --resume takes it
 * over. */
void
dcp_sender_start (DcpRun *r, const gchar *token, DcpStep *step)
{
  g_autofree gchar *shown = dcp_token_display (token);
  g_autofree gchar *due = dcp_format_time (step->a.detach_at);
  g_autoptr (GError) error = NULL;

  if (step->own_fd < 0)
    return;
  if (!spawn_sender (r, token, step->own_fd, &error))
    dcp_log (LOG_WARNING, "%s: %s; the next run or --resume takes the push over", shown,
             error->message);
  else if (step->a.owed)
    dcp_log (LOG_INFO, "%s: the push is owed (%u failed tries so far), next try at %s", shown,
             step->m.tries, due);
  else
    dcp_log (LOG_INFO, "%s: trailing push due at %s", shown, due);
  close (step->own_fd);
  step->own_fd = -1;
}

/* The token a run handed over on stdin, or NULL. */
static gchar *
read_token (void)
{
  gchar buf[DCP_TOKEN_MAX + 2];
  gssize n = 0, got;

  while (n < (gssize) sizeof buf - 1 && (got = read (0, buf + n, sizeof buf - 1 - n)) > 0)
    n += got;
  buf[MAX (n, 0)] = '\0';
  if (!dcp_token_validate (buf, MAX (n, 0), NULL))
    return NULL;
  return g_strdup (buf);
}

static volatile sig_atomic_t poked;

static void
on_poke (int sig)
{
  (void) sig;
  poked = 1;
}

/* SIGUSR1 is blocked but while we sleep, so no poke is lost between the
 * look at the flag and the sleep. */
static void
accept_pokes (sigset_t *while_asleep)
{
  struct sigaction sa = { 0 };
  sigset_t usr1;

  sa.sa_handler = on_poke;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGUSR1, &sa, NULL);
  sigemptyset (&usr1);
  sigaddset (&usr1, SIGUSR1);
  sigprocmask (SIG_BLOCK, &usr1, while_asleep);
  sigdelset (while_asleep, SIGUSR1);
}

/* Sleep until t, or a poke. */
static void
sleep_or_poke (gint64 t, const sigset_t *while_asleep)
{
  gint64 left = CLAMP (t - g_get_real_time (), 0, G_GINT64_CONSTANT (3600) * G_USEC_PER_SEC);
  struct timespec ts = { left / G_USEC_PER_SEC, (left % G_USEC_PER_SEC) * 1000 };

  if (!poked)
    (void) ppoll (NULL, 0, &ts, while_asleep);
  poked = 0;
}

/* Into m, the state of a token whose cache was removed under us: what
 * the removed mark said (still readable through our fd 3: an owed push's
 * first failure and tries, say) and what we know.  Messages it covered
 * since our last look were known only to the lost state: one more push,
 * from now on, covers them; and as only the lost state knew when the
 * last push left, that is taken as now, so the next one still comes a
 * second after any push before. */
static void
merge_lost (DcpMachine *m, const DcpMachine *mine)
{
  DcpMachine was = DCP_MACHINE_INIT;

  if (dcp_mark_read_fd (DCP_SPAWN_MARK_FD, &was))
    dcp_machine_merge (m, &was);
  dcp_machine_merge (m, mine);
  m->wanted = MAX (m->wanted, g_get_real_time ());
  m->last = MAX (m->last, m->wanted);
}

/* The cache was removed under us: make our mark again from what we knew,
 * unless a newer one has a live owner of its own (which then learns what
 * we owe).  FALSE: we are done. */
static gboolean
remake_mark (DcpRun *r, const gchar *token, const gchar *shown, const DcpMachine *mine)
{
  g_autoptr (GError) error = NULL;
  DcpMarkHold h;
  int fd;

  g_clear_pointer (&r->state, dcp_state_free);
  dcp_run_open_state (r, TRUE);
  if (r->state == NULL || !dcp_mark_hold (r->state, token, &h, &error))
    {
      dcp_log (LOG_WARNING,
               "%s: the cache was removed and cannot be made again (%s); "
               "pushing on without it",
               shown, error ? error->message : "unusable");
      return TRUE;
    }
  merge_lost (&h.m, mine);
  if (h.owner_live)
    {
      DcpStep step = { .pid = h.pid };
      step.a.poke = TRUE;
      h.m.due = MIN (h.m.due, mine->due);
      if (!dcp_mark_store (r->state, token, &h, &error))
        dcp_log (LOG_WARNING, "%s: cannot store the merged state: %s", shown, error->message);
      dcp_mark_release (&h);
      dcp_run_poke (&step);
      dcp_log (LOG_INFO, "%s: the cache was removed; a newer push took ours over", shown);
      return FALSE;
    }
  h.m.owned = TRUE;
  h.pid = getpid ();
  fd = dcp_mark_own (r->state, token, &h, &error);
  dcp_mark_release (&h);
  if (fd < 0 || dup2 (fd, DCP_SPAWN_MARK_FD) < 0)
    dcp_log (LOG_WARNING, "%s: cannot make the mark again: %s", shown,
             error ? error->message : g_strerror (errno));
  else
    dcp_log (LOG_INFO, "%s: the cache was removed; its mark is made again", shown);
  if (fd >= 0)
    close (fd);
  return TRUE;
}

/* Feed one event under the token's lock, with our pid in the mark. */
static gboolean
owner_step (DcpRun *r, const gchar *token, DcpEvent *e, DcpStep *step, DcpMachine *mine)
{
  g_autoptr (GError) error = NULL;
  DcpMachineConfig c;
  DcpMarkHold h;

  dcp_run_machine_config (r, &c);
  if (r->state == NULL)
    {
      /* no cache at all: the machine runs in memory */
      dcp_machine_step (&c, mine, e, &step->a);
      step->m = *mine;
      return TRUE;
    }
  if (!dcp_mark_hold (r->state, token, &h, &error))
    {
      g_autofree gchar *shown = dcp_token_display (token);
      if (!dcp_mark_missing (DCP_SPAWN_MARK_FD))
        dcp_log (LOG_WARNING, "%s: %s", shown, error->message);
      return FALSE;
    }
  if (dcp_mark_missing (DCP_SPAWN_MARK_FD))
    {
      /* removed since the loop looked (the cache was removed): what was
       * read is not our state, and a step on it could forget what we
       * owe; the next turn makes the mark again */
      dcp_mark_release (&h);
      return FALSE;
    }
  h.pid = getpid ();
  dcp_machine_step (&c, &h.m, e, &step->a);
  if (!dcp_mark_store (r->state, token, &h, &error))
    {
      g_autofree gchar *shown = dcp_token_display (token);
      dcp_log (LOG_WARNING, "%s: %s", shown, error->message);
    }
  dcp_mark_release (&h);
  step->m = *mine = h.m;
  return TRUE;
}

/* A push of the owner's, in a process of its own, so that the owner can
 * push again before it is answered (a message that finds the bucket
 * empty while the owner's last push waits for its answer gets its push
 * when the bucket has one, not when that answer comes).  The child posts,
 * records and logs the result, and writes the outcome as one byte. */
typedef struct {
  int fd;
  pid_t pid;
  gint64 started;
  guint tries; /* of the owed push before this one, 0 for a trailing push */
} Flight;

#define FLIGHTS_MAX 8

static gboolean
start_flight (DcpRun *r, const gchar *token, const gchar *shown, gint64 started, guint tries,
              Flight *f)
{
  int p[2];
  pid_t pid;

  if (pipe2 (p, O_CLOEXEC) < 0)
    return FALSE;
  (void) fflush (NULL);
  pid = fork ();
  if (pid < 0)
    {
      close (p[0]);
      close (p[1]);
      return FALSE;
    }
  if (pid == 0)
    {
      g_autofree gchar *text = NULL;
      gchar out;

      /* the mark's lock is the owner's: a push that outlives it must not
       * make a dead owner look alive */
      close (DCP_SPAWN_MARK_FD);
      close (p[0]);
      /* connections the owner opened for a push of its own stay its
       * own: sharing them with the child would mix two requests on one */
      r->http = NULL;
      r->http_failed = FALSE;
      dcp_run_start_budget (r);
      out = (gchar) dcp_run_post (r, token, 1, &text);
      if (tries > 0 && out != DCP_HTTP_FAILED)
        dcp_log (LOG_INFO, "%s: owed push settled on try %u: %s", shown, tries + 1, text);
      (void) !write (p[1], &out, 1);
      _exit (0);
    }
  close (p[1]);
  *f = (Flight){ p[0], pid, started, tries };
  return TRUE;
}

/* Sleep until t, a poke, or a push's answer: its index, or -1. */
static int
wait_any (Flight *flights, guint n, gint64 t, const sigset_t *while_asleep)
{
  gint64 left = CLAMP (t - g_get_real_time (), 0, G_GINT64_CONSTANT (3600) * G_USEC_PER_SEC);
  struct timespec ts = { left / G_USEC_PER_SEC, (left % G_USEC_PER_SEC) * 1000 };
  struct pollfd fds[FLIGHTS_MAX];

  for (guint i = 0; i < n; i++)
    fds[i] = (struct pollfd){ flights[i].fd, POLLIN, 0 };
  if (!poked && ppoll (fds, n, &ts, while_asleep) > 0)
    for (guint i = 0; i < n; i++)
      if (fds[i].revents != 0)
        return (int) i;
  poked = 0;
  return -1;
}

/* The answer of flight i, which is then gone from the list. */
static DcpHttpOutcome
land (Flight *flights, guint *n, guint i, Flight *landed)
{
  gchar out = DCP_HTTP_FAILED;

  *landed = flights[i];
  if (read (flights[i].fd, &out, 1) != 1 || out < DCP_HTTP_OK || out > DCP_HTTP_FAILED)
    out = DCP_HTTP_FAILED;
  close (flights[i].fd);
  while (waitpid (flights[i].pid, NULL, 0) < 0 && errno == EINTR)
    ;
  flights[i] = flights[--*n];
  return (DcpHttpOutcome) out;
}

/* What the owner keeps from one step to the next. */
typedef struct {
  DcpRun *r;
  const gchar *token;
  const gchar *shown;
  DcpMachine mine;
  Flight flights[FLIGHTS_MAX];
  guint n;
  sigset_t asleep;
} Owner;

/* The push a step asks for, in a process of its own: TRUE.  Without one
 * it is sent here, and its answer is the next event. */
static gboolean
push (Owner *o, DcpEvent *e)
{
  guint tries = o->mine.owed_first >= 0 ? o->mine.tries : 0;
  DcpHttpOutcome out;

  if (tries > 0)
    dcp_log (LOG_INFO, "%s: owed push, try %u", o->shown, tries + 1);
  else
    dcp_log (LOG_INFO, "%s: trailing push", o->shown);
  if (o->n < FLIGHTS_MAX
      && start_flight (o->r, o->token, o->shown, e->now, tries, &o->flights[o->n]))
    {
      o->n++;
      return TRUE;
    }
  dcp_run_start_budget (o->r);
  out = dcp_run_post (o->r, o->token, 1, NULL);
  *e = (DcpEvent){ DCP_EVENT_ANSWER, 0, TRUE, e->now, out, FALSE };
  return FALSE;
}

/* Sleep until the step's time, a poke or a push's answer: the next
 * event. */
static DcpEvent
next_event (Owner *o, const DcpStep *step, gint64 now)
{
  gint64 until = step->a.wait_until >= 0 ? step->a.wait_until : now + G_USEC_PER_SEC;
  int done = wait_any (o->flights, o->n, until, &o->asleep);
  Flight landed;
  DcpHttpOutcome out;

  if (done < 0)
    return (DcpEvent){ DCP_EVENT_TIMER, 0, TRUE, -1, DCP_HTTP_OK, FALSE };
  out = land (o->flights, &o->n, (guint) done, &landed);
  return (DcpEvent){ DCP_EVENT_ANSWER, 0, TRUE, landed.started, out, FALSE };
}

DcpStatus
dcp_sender_run_owner (DcpRun *r)
{
  g_autofree gchar *token = read_token ();
  g_autofree gchar *shown = token ? dcp_token_display (token) : NULL;
  Owner o = { .r = r, .token = token, .shown = shown, .mine = DCP_MACHINE_INIT };
  DcpEvent e = { DCP_EVENT_TIMER, 0, TRUE, -1, DCP_HTTP_OK, FALSE };

  if (token == NULL)
    return DCP_STATUS_CONFIG;
  accept_pokes (&o.asleep);
  dcp_run_open_state (r, TRUE);
  o.mine.owned = TRUE;
  for (guint i = 0; i < OWNER_STEPS_MAX; i++)
    {
      DcpStep step;

      if (r->state != NULL && dcp_mark_missing (DCP_SPAWN_MARK_FD)
          && !remake_mark (r, token, shown, &o.mine))
        return DCP_STATUS_DONE;
      e.now = g_get_real_time ();
      if (!owner_step (r, token, &e, &step, &o.mine))
        {
          /* the lock stayed taken: try again in a second; the mark
           * removed: make it again at once */
          if (!dcp_mark_missing (DCP_SPAWN_MARK_FD))
            sleep_or_poke (e.now + G_USEC_PER_SEC, &o.asleep);
          continue;
        }
      if (step.a.given_up)
        dcp_log (LOG_WARNING, "%s: owed push given up after %u failed tries", shown, step.a.tries);
      if (step.a.forget)
        {
          /* pushes still in flight end by themselves */
          dcp_log (LOG_INFO, "%s: detached push done", shown);
          return DCP_STATUS_DONE;
        }
      if (!step.a.push || push (&o, &e))
        e = next_event (&o, &step, e.now);
    }
  dcp_log (LOG_WARNING, "%s: detached push ended after %d steps", shown, OWNER_STEPS_MAX);
  return DCP_STATUS_DONE;
}
