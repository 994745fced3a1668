/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The per-token state machine (lib/dcp-machine.c), checked against its
 * promises by a simulator: runs that read messages (some slowly, some
 * killed while reading or pushing, some ended by SIGTERM), a proxy that
 * answers late, fails, stays silent or goes down for hours, detached
 * owners that are killed and resumed.  Each schedule is seeded; a broken
 * promise prints the seed and the events, and DCP_MACHINE_SEED=N replays
 * one schedule (DCP_MACHINE_SCHEDULES=N sets how many are run).
 *
 * Plus every interleaving of two and of three runs for small cases. */
#include <stdio.h>
#include <string.h>

#include <glib.h>

#include "dcp-machine.h"

#define SEC G_GINT64_CONSTANT (1000000)
#define MS (SEC / 1000)
#define T0 G_GINT64_CONSTANT (1795320000000000)
#define MAX_RUNS 64
#define MAX_OWNERS 64
#define MAX_PUSHES 512
#define MAX_QUEUE 256
#define MAX_LOG 4096
#define MAX_OUTAGES 3

typedef enum {
  EV_READ_END, /* a run has read its message */
  EV_RUN_ANSWER,
  EV_RUN_KILL, /* SIGKILL: nothing more from it */
  EV_RUN_TERM, /* SIGTERM: unanswered pushes are owed, exit 75 */
  EV_OWNER_TIMER,
  EV_OWNER_ANSWER,
  EV_OWNER_KILL,
  EV_RESUME,
  EV_CACHE_RM, /* the state directory is removed */
} SimKind;

typedef struct {
  gint64 at;
  SimKind kind;
  int who;
  guint gen;
} SimEv;

typedef struct {
  int message;
  gint64 read_at; /* when it finished reading, or -1 */
  gboolean pushing;
  gint64 started;
  int push; /* index into pushes */
  gboolean dead;
  gboolean accepted; /* exit 0, not skipped */
  gboolean retry;    /* exited 75: the caller runs the message again */
  guint attempt;
} SimRun;

typedef struct {
  gboolean alive;
  gboolean pushing;
  gint64 started;
  int push;
  guint gen;
  DcpMachine mine;  /* the state as it last saw it */
  gboolean removed; /* the cache was removed since */
} SimOwner;

typedef struct {
  gint64 start;
  gint64 answered;
  DcpHttpOutcome outcome;
  gboolean by_owner;
} SimPush;

typedef struct {
  guint32 seed;
  GRand *rand;
  DcpMachineConfig c;
  DcpSchedule schedule;
  DcpMachine m;
  gboolean caller_mode;
  SimRun runs[MAX_RUNS];
  int n_runs;
  SimOwner owners[MAX_OWNERS];
  int n_owners;
  int owner; /* the owner the machine means, or -1 */
  SimPush pushes[MAX_PUSHES];
  int n_pushes;
  SimEv queue[MAX_QUEUE];
  int n_queue;
  gint64 outage[MAX_OUTAGES][2];
  gboolean silent[MAX_OUTAGES];
  int n_outages;
  gint64 gone_at; /* the proxy answers 410 from then on, or -1 */
  gint64 now;
  gboolean kills; /* owners were killed, runs were killed or ended */
  gboolean failures;
  gboolean resumed;
  gboolean removed; /* the cache was removed: the bucket starts again */
  GString *log;
  gchar *broken;
} Sim;

static void slog (Sim *s, const gchar *fmt, ...) G_GNUC_PRINTF (2, 3);

static void
slog (Sim *s, const gchar *fmt, ...)
{
  va_list ap;

  if (s->log->len > MAX_LOG * 80)
    return;
  g_string_append_printf (s->log, "  %9.3f ", (double) (s->now - T0) / SEC);
  va_start (ap, fmt);
  g_string_append_vprintf (s->log, fmt, ap);
  va_end (ap);
  g_string_append_c (s->log, '\n');
}

static void broken (Sim *s, const gchar *fmt, ...) G_GNUC_PRINTF (2, 3);

static void
broken (Sim *s, const gchar *fmt, ...)
{
  va_list ap;

  if (s->broken != NULL)
    return;
  va_start (ap, fmt);
  s->broken = g_strdup_vprintf (fmt, ap);
  va_end (ap);
}

static void
push_ev (Sim *s, gint64 at, SimKind kind, int who, guint gen)
{
  if (s->n_queue >= MAX_QUEUE)
    {
      broken (s, "event queue full");
      return;
    }
  s->queue[s->n_queue++] = (SimEv){ at, kind, who, gen };
}

static gboolean
pop_ev (Sim *s, gint64 until, SimEv *ev)
{
  int best = -1;

  for (int i = 0; i < s->n_queue; i++)
    if (best < 0 || s->queue[i].at < s->queue[best].at)
      best = i;
  if (best < 0 || s->queue[best].at > until)
    return FALSE;
  *ev = s->queue[best];
  s->queue[best] = s->queue[--s->n_queue];
  return TRUE;
}

/* The proxy at time t. */
static DcpHttpOutcome
proxy_outcome (Sim *s, gint64 t, gboolean *silent)
{
  *silent = FALSE;
  if (s->gone_at >= 0 && t >= s->gone_at)
    return DCP_HTTP_GONE;
  for (int i = 0; i < s->n_outages; i++)
    if (t >= s->outage[i][0] && t < s->outage[i][1])
      {
        *silent = s->silent[i];
        return DCP_HTTP_FAILED;
      }
  return DCP_HTTP_OK;
}

/* A push starts: when does it end, and how?  */
static int
start_push (Sim *s, gint64 *answer_at)
{
  gboolean silent;
  gint64 latency = g_rand_int_range (s->rand, 20, 3000) * MS;
  int i = s->n_pushes;

  if (i >= MAX_PUSHES)
    {
      broken (s, "too many pushes");
      return -1;
    }
  s->n_pushes++;
  s->pushes[i] = (SimPush){ s->now, -1, DCP_HTTP_FAILED, FALSE };
  (void) proxy_outcome (s, s->now + latency, &silent);
  /* a pusher's budget (--timeout) ends 2 s before flight_max */
  *answer_at
      = s->now + (silent ? s->c.flight_max - 2 * SEC : MIN (latency, s->c.flight_max - 2 * SEC));
  return i;
}

static const gchar *
outcome_name (DcpHttpOutcome o)
{
  return o == DCP_HTTP_OK ? "200" : o == DCP_HTTP_GONE ? "410" : "failed";
}

/* The independent bucket: does the history allow a push now? */
static gboolean
history_allows (Sim *s, gint64 t)
{
  double level = s->c.burst;
  gint64 prev = -1;

  if (s->c.window <= 0)
    return TRUE;
  for (int i = 0; i < s->n_pushes; i++)
    {
      gint64 at = s->pushes[i].start;
      if (prev >= 0)
        level = MIN ((double) s->c.burst, level + (double) (at - prev) / s->c.window);
      level -= 1;
      prev = at;
    }
  if (prev < 0)
    return TRUE;
  level = MIN ((double) s->c.burst, level + (double) (t - prev) / s->c.window);
  return level >= 1 - 1e-9 && t - prev >= DCP_MACHINE_SPACING;
}

/* The mda's part: before acting on the state, a dead owner is noticed. */
static void
notice_dead (Sim *s)
{
  DcpActions a;
  DcpEvent e = { DCP_EVENT_DEAD, s->now, FALSE, -1, DCP_HTTP_OK, FALSE };

  if (s->m.owned && (s->owner < 0 || !s->owners[s->owner].alive))
    {
      dcp_machine_step (&s->c, &s->m, &e, &a);
      slog (s, "owner %d found dead", s->owner);
      s->owner = -1;
    }
}

static void
poke (Sim *s)
{
  SimOwner *o;

  if (s->owner < 0)
    return;
  o = &s->owners[s->owner];
  if (!o->alive)
    return;
  o->gen++;
  push_ev (s, s->now, EV_OWNER_TIMER, s->owner, o->gen);
}

static void
detach (Sim *s, gint64 at, gboolean feeder_may_die)
{
  int i = s->n_owners;

  if (i >= MAX_OWNERS)
    {
      broken (s, "too many owners");
      return;
    }
  s->n_owners++;
  s->owners[i] = (SimOwner){ TRUE, FALSE, -1, -1, 0, s->m, FALSE };
  s->owner = i;
  slog (s, "owner %d started, due %.3f", i, (double) (at - T0) / SEC);
  /* the run that starts it may die first: its mark is then unlocked */
  if (feeder_may_die && s->kills && g_rand_int_range (s->rand, 0, 20) == 0)
    {
      s->owners[i].alive = FALSE;
      slog (s, "owner %d never started", i);
      return;
    }
  push_ev (s, at, EV_OWNER_TIMER, i, 0);
}

/* Common to every step: what the actions ask of the sim. */
static void
common_actions (Sim *s, const DcpActions *a)
{
  if (a->poke)
    poke (s);
  if (a->given_up)
    broken (s, "an owed push was given up within 5 hours of outage");
}

static void
run_read (Sim *s, int r)
{
  SimRun *run = &s->runs[r];
  DcpEvent e = { DCP_EVENT_READ, s->now, FALSE, -1, DCP_HTTP_OK, FALSE };
  gboolean allowed = history_allows (s, s->now);
  DcpMachine before;
  DcpActions a;

  notice_dead (s);
  before = s->m;
  dcp_machine_step (&s->c, &s->m, &e, &a);
  run->read_at = s->now;
  slog (s, "run %d (message %d) read: %s", r, run->message, dcp_why_to_string (a.why));
  if (allowed && !before.gone && before.owed_first < 0 && !a.push && !s->removed)
    broken (s, "run %d: a push was available but the message was not pushed at once", r);
  if (a.push && !allowed && !s->removed)
    broken (s, "run %d pushed, the bucket or the 1 s spacing did not allow it", r);
  common_actions (s, &a);
  if (a.detach_at >= 0)
    detach (s, a.detach_at, TRUE);
  if (a.push)
    {
      gint64 answer_at;
      run->push = start_push (s, &answer_at);
      run->pushing = TRUE;
      run->started = s->now;
      push_ev (s, answer_at, EV_RUN_ANSWER, r, 0);
      return;
    }
  run->accepted = a.why != DCP_WHY_GONE;
}

static void
run_answer (Sim *s, int r, DcpHttpOutcome out, gboolean term)
{
  SimRun *run = &s->runs[r];
  gboolean caller = s->caller_mode && run->attempt < 3 && !term;
  DcpEvent e = { DCP_EVENT_ANSWER, s->now, FALSE, run->started, out, caller };
  DcpActions a;

  if (run->dead || !run->pushing)
    return;
  notice_dead (s);
  run->pushing = FALSE;
  if (!term)
    {
      s->pushes[run->push].answered = s->now;
      s->pushes[run->push].outcome = out;
    }
  dcp_machine_step (&s->c, &s->m, &e, &a);
  slog (s, "run %d answer %s%s", r, term ? "(SIGTERM) " : "", outcome_name (out));
  common_actions (s, &a);
  if (a.detach_at >= 0)
    detach (s, a.detach_at, TRUE);
  if (term)
    {
      run->dead = TRUE;
      return; /* exit 75, marks written: owed, and the caller may retry */
    }
  if (out == DCP_HTTP_FAILED && caller)
    {
      run->retry = TRUE; /* exit 75 */
      return;
    }
  run->accepted = TRUE;
}

static void
owner_actions (Sim *s, int i, const DcpActions *a)
{
  SimOwner *o = &s->owners[i];

  common_actions (s, a);
  if (a->forget)
    {
      o->alive = FALSE;
      s->owner = -1;
      slog (s, "owner %d done", i);
      return;
    }
  if (a->push)
    {
      /* each push of the owner's in a process of its own: the owner
       * goes on (and may push again) before it is answered */
      gint64 answer_at;
      int push = start_push (s, &answer_at);
      if (push < 0)
        return;
      s->pushes[push].by_owner = TRUE;
      slog (s, "owner %d pushes", i);
      push_ev (s, answer_at, EV_OWNER_ANSWER, i, (guint) push);
    }
  if (a->wait_until >= 0)
    {
      o->gen++;
      push_ev (s, a->wait_until, EV_OWNER_TIMER, i, o->gen);
    }
}

/* The owner finds its mark gone (the cache was removed): it makes it
 * again from what it knew, or hands that to a newer live owner and ends.
 * FALSE: it ended. */
static gboolean
owner_remake (Sim *s, int i)
{
  SimOwner *o = &s->owners[i];

  if (!o->removed)
    return TRUE;
  o->removed = FALSE;
  dcp_machine_merge (&s->m, &o->mine);
  /* messages it covered since its last look are known only to the lost
   * state: one more push, after now, covers them */
  s->m.wanted = MAX (s->m.wanted, s->now);
  if (s->owner >= 0 && s->owner != i && s->owners[s->owner].alive)
    {
      slog (s, "owner %d: cache removed, hands over to owner %d", i, s->owner);
      if (o->mine.due >= 0 && (s->m.due < 0 || o->mine.due < s->m.due))
        s->m.due = o->mine.due;
      o->alive = FALSE;
      poke (s);
      return FALSE;
    }
  slog (s, "owner %d: cache removed, mark made again", i);
  s->m.owned = TRUE;
  s->owner = i;
  return TRUE;
}

static void
owner_timer (Sim *s, int i, guint gen)
{
  SimOwner *o = &s->owners[i];
  DcpEvent e = { DCP_EVENT_TIMER, s->now, TRUE, -1, DCP_HTTP_OK, FALSE };
  DcpActions a;

  if (!o->alive || gen != o->gen || !owner_remake (s, i))
    return;
  if (s->owner != i)
    {
      broken (s, "owner %d runs, but the state names another", i);
      return;
    }
  dcp_machine_step (&s->c, &s->m, &e, &a);
  o->mine = s->m;
  if (a.push && !history_allows (s, s->now) && !s->removed)
    broken (s, "owner %d pushed, the bucket or the 1 s spacing did not allow it", i);
  owner_actions (s, i, &a);
}

static void
owner_answer (Sim *s, int i, int push)
{
  SimOwner *o = &s->owners[i];
  gboolean silent;
  DcpHttpOutcome out;
  DcpEvent e;
  DcpActions a;

  /* an owner killed (or ended) meanwhile never learns the answer */
  if (!o->alive)
    return;
  out = proxy_outcome (s, s->now, &silent);
  s->pushes[push].answered = s->now;
  s->pushes[push].outcome = out;
  if (!owner_remake (s, i))
    return; /* it handed over before it could feed its answer */
  e = (DcpEvent){ DCP_EVENT_ANSWER, s->now, TRUE, s->pushes[push].start, out, FALSE };
  dcp_machine_step (&s->c, &s->m, &e, &a);
  o->mine = s->m;
  slog (s, "owner %d answer %s", i, outcome_name (out));
  owner_actions (s, i, &a);
}

static void
resume (Sim *s)
{
  DcpEvent e = { DCP_EVENT_RESUME, s->now, FALSE, -1, DCP_HTTP_OK, FALSE };
  DcpActions a;

  notice_dead (s);
  dcp_machine_step (&s->c, &s->m, &e, &a);
  slog (s, "--resume");
  common_actions (s, &a);
  if (a.detach_at >= 0)
    detach (s, a.detach_at, FALSE);
}

static void
handle (Sim *s, const SimEv *ev)
{
  gboolean silent;

  s->now = MAX (s->now, ev->at);
  switch (ev->kind)
    {
    case EV_READ_END:
      if (!s->runs[ev->who].dead)
        run_read (s, ev->who);
      break;
    case EV_RUN_ANSWER:
      run_answer (s, ev->who, proxy_outcome (s, s->now, &silent), FALSE);
      break;
    case EV_RUN_KILL:
      if (!s->runs[ev->who].dead && !s->runs[ev->who].accepted)
        {
          s->runs[ev->who].dead = TRUE;
          slog (s, "run %d killed", ev->who);
        }
      break;
    case EV_RUN_TERM:
      if (s->runs[ev->who].pushing && !s->runs[ev->who].dead)
        run_answer (s, ev->who, DCP_HTTP_FAILED, TRUE);
      break;
    case EV_OWNER_TIMER:
      owner_timer (s, ev->who, ev->gen);
      break;
    case EV_OWNER_ANSWER:
      owner_answer (s, ev->who, (int) ev->gen);
      break;
    case EV_OWNER_KILL:
      if (s->owners[ev->who].alive)
        {
          s->owners[ev->who].alive = FALSE;
          slog (s, "owner %d killed", ev->who);
        }
      break;
    case EV_RESUME:
      resume (s);
      break;
    case EV_CACHE_RM:
      /* everything on disk is gone; processes keep what they knew */
      slog (s, "cache removed");
      s->m = (DcpMachine) DCP_MACHINE_INIT;
      s->removed = TRUE;
      if (s->owner >= 0)
        s->owners[s->owner].removed = TRUE;
      s->owner = -1;
      break;
    default:
      g_assert_not_reached ();
    }
}

static void
drain (Sim *s, gint64 until)
{
  SimEv ev;

  for (int n = 0; n < 100000 && s->broken == NULL && pop_ev (s, until, &ev); n++)
    handle (s, &ev);
}

/* A caller that retries what exited 75 (--retry=caller). */
static int
new_run (Sim *s, int message, guint attempt)
{
  int r = s->n_runs;

  if (r >= MAX_RUNS)
    return -1;
  s->n_runs++;
  s->runs[r] = (SimRun){ message, -1, FALSE, -1, -1, FALSE, FALSE, FALSE, attempt };
  return r;
}

static void
sim_init (Sim *s, guint32 seed)
{
  memset (s, 0, sizeof *s);
  s->seed = seed;
  s->rand = g_rand_new_with_seed (seed);
  dcp_schedule_init (&s->schedule);
  s->c.window = 10 * SEC;
  s->c.burst = 3;
  s->c.flight_max = 8 * SEC;
  s->c.trailing = TRUE;
  s->c.schedule = &s->schedule;
  s->m = (DcpMachine) DCP_MACHINE_INIT;
  s->owner = -1;
  s->gone_at = -1;
  s->now = T0;
  s->log = g_string_new (NULL);
}

static void
sim_clear (Sim *s)
{
  g_rand_free (s->rand);
  g_string_free (s->log, TRUE);
  g_free (s->broken);
}

/* The promises, on what happened. */
static void
check (Sim *s, gint64 proxy_back)
{
  gboolean gone = FALSE;

  for (int i = 0; i < s->n_pushes; i++)
    gone = gone || (s->pushes[i].answered >= 0 && s->pushes[i].outcome == DCP_HTTP_GONE);
  for (int i = 1; s->c.window > 0 && !s->removed && i < s->n_pushes; i++)
    {
      if (s->pushes[i].start - s->pushes[i - 1].start < DCP_MACHINE_SPACING)
        broken (s, "pushes %d and %d less than 1 s apart", i - 1, i);
      for (int j = 0; j < i; j++)
        if ((gint64) (i - j + 1 - (int) s->c.burst) * s->c.window
            > s->pushes[i].start - s->pushes[j].start)
          broken (s, "pushes %d to %d: more than burst + t/window", j, i);
    }
  for (int r = 0; r < s->n_runs; r++)
    {
      const SimRun *run = &s->runs[r];
      gint64 first = -1, first_ok = -1;

      if (!run->accepted || run->read_at < 0 || gone)
        continue;
      for (int i = 0; i < s->n_pushes; i++)
        if (s->pushes[i].start >= run->read_at)
          {
            if (first < 0)
              first = s->pushes[i].start;
            if (first_ok < 0 && s->pushes[i].outcome == DCP_HTTP_OK && s->pushes[i].answered >= 0)
              first_ok = s->pushes[i].start;
          }
      if (first_ok < 0)
        {
          broken (s, "message %d (run %d, read at %.3f) was never pushed", run->message, r,
                  (double) (run->read_at - T0) / SEC);
          continue;
        }
      /* with the proxy up and every process alive, a message waits at
       * most for a window, or a window after a try in flight */
      if (!s->kills && run->read_at >= proxy_back
          && first_ok > run->read_at + s->c.window + s->c.flight_max + 2 * SEC)
        broken (s, "message %d read at %.3f pushed only at %.3f", run->message,
                (double) (run->read_at - T0) / SEC, (double) (first_ok - T0) / SEC);
      /* a trailing push comes when the bucket has one: a window at most */
      if (!s->kills && !s->failures && first > run->read_at + s->c.window)
        broken (s, "message %d read at %.3f: first push after it only at %.3f", run->message,
                (double) (run->read_at - T0) / SEC, (double) (first - T0) / SEC);
    }
}

static void
report (Sim *s, const gchar *what)
{
  g_printerr ("\nbroken promise (%s, seed %u, DCP_MACHINE_SEED=%u replays it): %s\n"
              "window %.0f s, burst %u, %s mode; events:\n%s",
              what, s->seed, s->seed, s->broken, (double) s->c.window / SEC, s->c.burst,
              s->caller_mode ? "caller" : "background", s->log->str);
}

/* One random schedule. */
static gboolean
random_schedule (guint32 seed)
{
  Sim sim, *s = &sim;
  int messages;
  gint64 t, proxy_back = T0;
  gboolean ok;

  sim_init (s, seed);
  s->c.burst = g_rand_int_range (s->rand, 1, 5);
  s->c.window = g_rand_int_range (s->rand, 0, 8) == 0 ? 0 : g_rand_int_range (s->rand, 2, 15) * SEC;
  s->caller_mode = g_rand_int_range (s->rand, 0, 4) == 0;
  s->kills = g_rand_int_range (s->rand, 0, 3) == 0;
  messages = g_rand_int_range (s->rand, 1, 25);
  s->n_outages = g_rand_int_range (s->rand, 0, 3) == 0 ? g_rand_int_range (s->rand, 1, 4) : 0;
  t = T0;
  for (int i = 0; i < s->n_outages; i++)
    {
      /* mostly short; now and then hours (at most 4.8 h in all) */
      gint64 len = g_rand_int_range (s->rand, 0, 5) == 0
                       ? g_rand_int_range (s->rand, 60, 5700) * SEC
                       : g_rand_int_range (s->rand, 1, 40) * SEC;
      t += g_rand_int_range (s->rand, 0, 30) * SEC;
      s->outage[i][0] = t;
      s->outage[i][1] = t + len;
      s->silent[i] = g_rand_boolean (s->rand);
      t += len;
      proxy_back = t;
      s->failures = TRUE;
    }
  if (g_rand_int_range (s->rand, 0, 30) == 0)
    s->gone_at = T0 + g_rand_int_range (s->rand, 0, 60) * SEC;

  /* arrivals: bursts and gaps */
  t = T0;
  for (int i = 0; i < messages; i++)
    {
      int r = new_run (s, i, 0);
      gint64 read = g_rand_int_range (s->rand, 0, 4) == 0 ? g_rand_int_range (s->rand, 0, 3000) * MS
                                                          : g_rand_int_range (s->rand, 1, 50) * MS;
      t += g_rand_int_range (s->rand, 0, 3) == 0 ? g_rand_int_range (s->rand, 0, 20000) * MS
                                                 : g_rand_int_range (s->rand, 0, 1500) * MS;
      push_ev (s, t + read, EV_READ_END, r, 0);
      if (s->kills && g_rand_int_range (s->rand, 0, 6) == 0)
        push_ev (s, t + g_rand_int_range (s->rand, 0, 4000) * MS,
                 g_rand_boolean (s->rand) ? EV_RUN_KILL : EV_RUN_TERM, r, 0);
    }
  /* the cache removed, with every process alive: a dead owner and a
   * removed cache together leave no trace of what was owed */
  if (!s->kills && g_rand_int_range (s->rand, 0, 6) == 0)
    push_ev (s, T0 + g_rand_int_range (s->rand, 0, 30000) * MS, EV_CACHE_RM, -1, 0);
  if (s->kills)
    for (int i = 0; i < 4; i++)
      {
        gint64 at = T0 + g_rand_int_range (s->rand, 0, 60000) * MS;
        /* an owner killed (reboot, kill -9): which one is alive then is
         * found when the event comes */
        push_ev (s, at, EV_OWNER_KILL, -1, 0);
        if (g_rand_boolean (s->rand))
          push_ev (s, at + g_rand_int_range (s->rand, 1, 30) * SEC, EV_RESUME, -1, 0);
      }

  /* run: caller retries of what exited 75, kills of the live owner */
  for (int n = 0; n < 200000 && s->broken == NULL; n++)
    {
      SimEv ev;
      if (s->n_queue == 0)
        {
          /* at the end, a reboot's --resume takes over what is orphaned */
          notice_dead (s);
          if (s->m.wanted >= 0 && !s->m.owned && !s->m.gone && !s->resumed)
            {
              s->resumed = TRUE;
              push_ev (s, MAX (s->now, proxy_back) + SEC, EV_RESUME, -1, 0);
            }
        }
      if (!pop_ev (s, G_MAXINT64, &ev))
        break;
      if (ev.kind == EV_OWNER_KILL)
        {
          if (s->owner < 0)
            continue;
          ev.who = s->owner;
        }
      handle (s, &ev);
      for (int r = 0; r < s->n_runs; r++)
        if (s->runs[r].retry)
          {
            int again = new_run (s, s->runs[r].message, s->runs[r].attempt + 1);
            s->runs[r].retry = FALSE;
            if (again >= 0)
              push_ev (s, s->now + g_rand_int_range (s->rand, 1, 60) * SEC, EV_READ_END, again, 0);
          }
    }
  if (s->n_queue != 0)
    broken (s, "the schedule did not settle");
  if (s->broken == NULL)
    check (s, proxy_back);
  ok = s->broken == NULL;
  if (!ok)
    report (s, "random schedule");
  sim_clear (s);
  return ok;
}

static void
test_random (void)
{
  const gchar *one = g_getenv ("DCP_MACHINE_SEED");
  const gchar *count = g_getenv ("DCP_MACHINE_SCHEDULES");
  guint n = count ? (guint) g_ascii_strtoull (count, NULL, 10) : 20000;
  guint32 base = g_test_rand_int ();
  gint64 t0 = g_get_monotonic_time ();
  guint failed = 0;

  if (one != NULL)
    {
      g_assert_true (random_schedule ((guint32) g_ascii_strtoull (one, NULL, 10)));
      return;
    }
  for (guint i = 0; i < n && failed < 3; i++)
    if (!random_schedule (base + i))
      failed++;
  g_test_message ("%u schedules in %.2f s", n,
                  (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC);
  g_assert_cmpuint (failed, ==, 0);
}

/* Every interleaving of k runs: each reads, then (if it pushes) is
 * answered; steps are gap apart; each answer 200 or failed. */
typedef struct {
  Sim sim;
  int step[3]; /* 0: to read, 1: to be answered, 2: done */
  gint64 gap;
  guint schedules;
  guint failed;
} Inter;

static void
interleave (Inter *in, int k, guint32 outcomes, int depth)
{
  Sim *s = &in->sim;
  gboolean any = FALSE;

  for (int r = 0; r < k; r++)
    {
      Inter next;
      if (in->step[r] == 2)
        continue;
      any = TRUE;
      next = *in;
      next.sim.log = g_string_new (in->sim.log->str);
      next.sim.broken = NULL;
      next.sim.rand = g_rand_copy (in->sim.rand);
      drain (&next.sim, s->now + in->gap);
      next.sim.now = s->now + in->gap;
      if (next.step[r] == 0)
        {
          run_read (&next.sim, r);
          /* its answer is the interleaving's to place */
          for (int i = 0; i < next.sim.n_queue; i++)
            if (next.sim.queue[i].kind == EV_RUN_ANSWER && next.sim.queue[i].who == r)
              next.sim.queue[i] = next.sim.queue[--next.sim.n_queue];
          next.step[r] = next.sim.runs[r].pushing ? 1 : 2;
        }
      else
        {
          DcpHttpOutcome out = (outcomes >> r) & 1 ? DCP_HTTP_FAILED : DCP_HTTP_OK;
          run_answer (&next.sim, r, out, FALSE);
          next.step[r] = 2;
        }
      interleave (&next, k, outcomes, depth + 1);
      in->schedules = next.schedules;
      in->failed = next.failed;
      g_string_free (next.sim.log, TRUE);
      g_free (next.sim.broken);
      g_rand_free (next.sim.rand);
    }
  if (any)
    return;
  /* the proxy answers from now on: everything settles, the caller
   * retries what exited 75 */
  s->n_outages = 0;
  drain (s, G_MAXINT64);
  for (int r = 0; r < s->n_runs && s->broken == NULL; r++)
    if (s->runs[r].retry)
      {
        int again = new_run (s, s->runs[r].message, s->runs[r].attempt + 1);
        s->runs[r].retry = FALSE;
        s->now += 30 * SEC;
        if (again >= 0)
          run_read (s, again);
        drain (s, G_MAXINT64);
      }
  if (s->n_queue != 0 || (s->m.wanted >= 0 && !s->m.gone))
    broken (s, "did not settle");
  if (s->broken == NULL)
    check (s, s->now);
  in->schedules++;
  if (s->broken != NULL && in->failed++ < 3)
    report (s, "interleaving");
}

static void
run_interleavings (int k)
{
  static const gint64 gaps[] = { 100 * MS, 700 * MS, 1500 * MS, 4 * SEC, 11 * SEC };
  static const guint bursts[] = { 1, 2, 3 };
  guint schedules = 0, failed = 0;

  for (guint g = 0; g < G_N_ELEMENTS (gaps); g++)
    for (guint b = 0; b < G_N_ELEMENTS (bursts); b++)
      for (guint32 outcomes = 0; outcomes < (1u << k); outcomes++)
        for (int mode = 0; mode < 2; mode++)
          {
            Inter in;
            memset (&in, 0, sizeof in);
            sim_init (&in.sim, outcomes);
            in.sim.c.burst = bursts[b];
            in.sim.caller_mode = mode;
            in.sim.failures = outcomes != 0;
            in.gap = gaps[g];
            for (int r = 0; r < k; r++)
              new_run (&in.sim, r, 0);
            /* a failed answer: the proxy stays down a while */
            if (outcomes != 0)
              {
                in.sim.n_outages = 1;
                in.sim.outage[0][0] = T0;
                in.sim.outage[0][1] = T0 + (k * 2 + 1) * gaps[g] + 1;
              }
            interleave (&in, k, outcomes, 0);
            schedules += in.schedules;
            failed += in.failed;
            sim_clear (&in.sim);
          }
  g_test_message ("%u interleavings of %d runs", schedules, k);
  g_assert_cmpuint (failed, ==, 0);
}

static void
test_interleavings_two (void)
{
  run_interleavings (2);
}

static void
test_interleavings_three (void)
{
  run_interleavings (3);
}

/* The cases the man page names, by hand. */
static void
test_reply_after_receipt (void)
{
  DcpSchedule sch;
  DcpMachineConfig c = { 10 * SEC, 3, 8 * SEC, TRUE, &sch };
  DcpMachine m = DCP_MACHINE_INIT;
  DcpEvent e = { DCP_EVENT_READ, T0, FALSE, -1, DCP_HTTP_OK, FALSE };
  DcpActions a;

  dcp_schedule_init (&sch);
  dcp_machine_step (&c, &m, &e, &a);
  g_assert_true (a.push);
  e = (DcpEvent){ DCP_EVENT_ANSWER, T0 + 500 * MS, FALSE, T0, DCP_HTTP_OK, FALSE };
  dcp_machine_step (&c, &m, &e, &a);
  g_assert_cmpint (m.wanted, ==, -1);
  /* the reply 2 s later: at once */
  e = (DcpEvent){ DCP_EVENT_READ, T0 + 2 * SEC, FALSE, -1, DCP_HTTP_OK, FALSE };
  dcp_machine_step (&c, &m, &e, &a);
  g_assert_true (a.push);
  g_assert_cmpuint (dcp_machine_bucket (&c, &m, T0 + 2 * SEC), ==, 1);
  /* within the second: a trailing push at its end */
  e = (DcpEvent){ DCP_EVENT_READ, T0 + 2500 * MS, FALSE, -1, DCP_HTTP_OK, FALSE };
  dcp_machine_step (&c, &m, &e, &a);
  g_assert_false (a.push);
  g_assert_cmpint (a.detach_at, ==, T0 + 3 * SEC);
  g_assert_cmpint (a.why, ==, DCP_WHY_TRAILING);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/machine/reply-after-receipt", test_reply_after_receipt);
  g_test_add_func ("/machine/interleavings/two", test_interleavings_two);
  g_test_add_func ("/machine/interleavings/three", test_interleavings_three);
  g_test_add_func ("/machine/random", test_random);
  return g_test_run ();
}
