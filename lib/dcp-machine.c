/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One token's push state machine (see dcp-machine.h).
 *
 * Why "wanted" is cleared only by an answer: a push that started after a
 * message was read covers it only once the proxy took it.  A pusher that
 * dies (kill -9, a reboot) never answers; an owner that finds the latest
 * push unanswered after its pusher's budget pushes itself.
 *
 * Why the bucket is one time ("full at"): it is all a token bucket needs
 * (holding burst - ceil((full_at - now) / window) pushes), and it fits an
 * mtime. */
#include "dcp-machine.h"

/* A clock stepped back must not block pushes until it catches up: times
 * further ahead than they can be are from that clock, and ignored. */
#define FUTURE_SLACK (2 * G_USEC_PER_SEC)

static gint64
clamp_full_at (const DcpMachineConfig *c, const DcpMachine *m, gint64 now)
{
  gint64 emptiest = now + (gint64) c->burst * c->window;

  if (m->full_at < 0 || m->full_at > emptiest + FUTURE_SLACK)
    return -1;
  return MIN (m->full_at, emptiest);
}

static gint64
clamp_last (const DcpMachine *m, gint64 now)
{
  if (m->last < 0 || m->last > now + FUTURE_SLACK)
    return -1;
  return MIN (m->last, now);
}

gint64
dcp_machine_available_at (const DcpMachineConfig *c, const DcpMachine *m, gint64 now)
{
  gint64 t = now;

  if (c->window <= 0)
    return now; /* no rate limit, no spacing */
  if (m->full_at >= 0)
    t = MAX (t, clamp_full_at (c, m, now) - (gint64) (c->burst - 1) * c->window);
  if (clamp_last (m, now) >= 0)
    t = MAX (t, clamp_last (m, now) + DCP_MACHINE_SPACING);
  return t;
}

guint
dcp_machine_bucket (const DcpMachineConfig *c, const DcpMachine *m, gint64 now)
{
  gint64 full = clamp_full_at (c, m, now);
  gint64 missing;

  if (c->window <= 0 || full <= now)
    return c->burst;
  missing = (full - now + c->window - 1) / c->window;
  return missing >= c->burst ? 0 : c->burst - (guint) missing;
}

static void
take_push (const DcpMachineConfig *c, DcpMachine *m, gint64 now, DcpActions *a)
{
  if (c->window > 0)
    m->full_at = MAX (clamp_full_at (c, m, now), now) + c->window;
  m->last = now;
  m->flight = now;
  m->flight_end = now + c->flight_max;
  a->push = TRUE;
}

/* When a poked owed push tries: a window after its last try, once the
 * bucket has a push. */
static gint64
poke_time (const DcpMachineConfig *c, const DcpMachine *m, gint64 now)
{
  gint64 t = dcp_machine_available_at (c, m, now);

  if (clamp_last (m, now) >= 0)
    t = MAX (t, clamp_last (m, now) + c->window);
  return t;
}

static void
owed_reset (DcpMachine *m)
{
  m->owed_first = -1;
  m->tries = 0;
}

/* The live owner has nothing left, or something earlier: wake it. */
static void
move_owner (DcpMachine *m, gint64 due, DcpActions *a)
{
  if (!m->owned)
    return;
  if (m->due < 0 || due < m->due)
    {
      m->due = due;
      a->poke = TRUE;
    }
}

/* A message read while a push is owed.  TRUE: the push is to go at *t
 * (now or later); FALSE: the owner's push covers the message. */
static gboolean
read_owed (const DcpMachineConfig *c, DcpMachine *m, gint64 now, DcpActions *a, gint64 *t)
{
  a->why = DCP_WHY_OWED;
  *t = poke_time (c, m, now);
  if (m->owned)
    {
      /* while the owner pushes (due -1) its answer sees this message */
      if (m->due >= 0)
        move_owner (m, *t, a);
      return FALSE;
    }
  /* an owed push whose process is gone: taken over */
  if (m->due >= 0)
    *t = MAX (MIN (*t, m->due), dcp_machine_available_at (c, m, now));
  return TRUE;
}

/* A message read while nothing is owed.  TRUE: a trailing push is to go
 * at *t; FALSE: decided here (pushed now, covered by the owner's push, or
 * rate-limited with no trailing push, wanted then back to previous). */
static gboolean
read_fresh (const DcpMachineConfig *c, DcpMachine *m, gint64 now, gint64 previous, DcpActions *a,
            gint64 *t)
{
  *t = dcp_machine_available_at (c, m, now);
  if (*t <= now)
    {
      a->why = DCP_WHY_PUSH;
      take_push (c, m, now, a);
      return FALSE;
    }
  if (m->owned)
    {
      a->why = DCP_WHY_COVERED;
      if (m->due >= 0)
        move_owner (m, *t, a);
      return FALSE;
    }
  if (!c->trailing)
    {
      a->why = DCP_WHY_LIMITED;
      m->wanted = previous;
      return FALSE;
    }
  a->why = DCP_WHY_TRAILING;
  return TRUE;
}

static void
on_read (const DcpMachineConfig *c, DcpMachine *m, gint64 now, DcpActions *a)
{
  gint64 previous = m->wanted;
  gint64 t;

  if (m->gone)
    {
      a->why = DCP_WHY_GONE;
      return;
    }
  m->wanted = MAX (m->wanted, now);
  if (m->owed_first >= 0 && !m->owned && dcp_schedule_expired (c->schedule, m->owed_first, now))
    owed_reset (m); /* its schedule ended while nobody held it */
  if (m->owed_first >= 0 ? !read_owed (c, m, now, a, &t) : !read_fresh (c, m, now, previous, a, &t))
    return;
  if (t <= now)
    {
      take_push (c, m, now, a);
      return;
    }
  m->owned = TRUE;
  m->due = t;
  a->detach_at = t;
}

/* The owner after its push, or woken: what is left for it. */
static void
owner_next (const DcpMachineConfig *c, DcpMachine *m, gint64 now, DcpActions *a)
{
  gint64 t;

  if (m->gone || m->wanted < 0)
    {
      m->owned = FALSE;
      m->due = -1;
      a->forget = TRUE;
      return;
    }
  /* a run's push in flight covers every message: wait for its answer, or
   * for its pusher's budget to run out */
  if (m->flight >= m->wanted && now < m->flight_end)
    {
      m->due = m->flight_end;
      a->wait_until = m->due;
      return;
    }
  t = MAX (m->due >= 0 ? m->due : now, dcp_machine_available_at (c, m, now));
  if (t <= now)
    {
      /* the owner does not wait for the answer to push again: until it
       * comes (or the push's budget is out) its push covers what came
       * before, and a later message moves its due time to when the
       * bucket has the next push */
      take_push (c, m, now, a);
      m->due = m->flight_end;
      a->wait_until = m->due;
      return;
    }
  m->due = t;
  a->wait_until = t;
}

/* The schedule's next step after now: failures of several pushes at
 * once (runs and the owner) count as one step, not several. */
static gint64
schedule_after (const DcpSchedule *schedule, gint64 first, gint64 now)
{
  for (guint k = 1; k < 64 * DCP_SCHEDULE_MAX; k++)
    {
      gint64 t = dcp_schedule_next (schedule, first, k);
      if (t < 0 || t > now)
        return t;
    }
  return -1;
}

/* Is a failed push owed?  Not when the caller retries it, nor when a
 * later push covered what it was for. */
static gboolean
failure_owed (DcpMachine *m, const DcpEvent *e)
{
  if (e->caller_retries && !e->by_owner)
    return FALSE; /* the caller retries */
  if (m->wanted < 0)
    {
      /* nothing wanted: a later push covered what this one was for (it
       * was answered 200), unless the state was lost meanwhile (the cache
       * removed): then what it was for is wanted again */
      if (m->last > e->started)
        return FALSE;
      m->wanted = e->started;
    }
  return TRUE;
}

/* One more failed try of the owed push, or the first of a new one. */
static void
count_failure (const DcpMachineConfig *c, DcpMachine *m, const DcpEvent *e)
{
  /* an owed push that outlived its schedule (found after a reboot): a
   * new failure starts a schedule of its own */
  if (m->owed_first >= 0 && !e->by_owner && !m->owned
      && dcp_schedule_expired (c->schedule, m->owed_first, e->now))
    owed_reset (m);
  if (m->owed_first < 0)
    {
      m->owed_first = e->now;
      m->tries = 1;
    }
  else
    m->tries++;
}

static void
on_failed (const DcpMachineConfig *c, DcpMachine *m, const DcpEvent *e, DcpActions *a)
{
  gint64 next;

  if (!failure_owed (m, e))
    return;
  count_failure (c, m, e);
  next = schedule_after (c->schedule, m->owed_first, e->now);
  a->tries = m->tries;
  if (next < 0)
    {
      a->given_up = TRUE;
      m->wanted = -1;
      owed_reset (m);
      return;
    }
  /* a message came during the try: it poked; honoured a window later */
  if (m->wanted > e->started)
    next = MIN (next, MAX (e->now, e->started + MAX (c->window, DCP_MACHINE_SPACING)));
  a->owed = TRUE;
  if (e->by_owner)
    {
      m->due = next;
      return;
    }
  if (m->owned)
    {
      move_owner (m, next, a);
      return;
    }
  m->owned = TRUE;
  m->due = next;
  a->detach_at = next;
}

static void
on_answer (const DcpMachineConfig *c, DcpMachine *m, const DcpEvent *e, DcpActions *a)
{
  if (e->started == m->flight)
    m->flight = m->flight_end = -1;
  if (e->by_owner)
    m->due = -1;
  if (m->gone)
    ;
  else if (e->outcome == DCP_HTTP_GONE)
    {
      m->gone = TRUE;
      m->wanted = -1;
      owed_reset (m);
      a->gone = TRUE;
    }
  else if (e->outcome == DCP_HTTP_OK)
    {
      if (m->wanted >= 0 && m->wanted <= e->started)
        m->wanted = -1;
      owed_reset (m);
    }
  else
    on_failed (c, m, e, a);

  if (e->by_owner)
    {
      owner_next (c, m, e->now, a);
      return;
    }
  /* a run's answer: the owner may have nothing left, or be owed no more */
  if (m->owned && m->due >= 0)
    {
      if (m->gone || m->wanted < 0)
        move_owner (m, e->now, a);
      else if (m->owed_first < 0)
        move_owner (m, dcp_machine_available_at (c, m, e->now), a);
    }
}

void
dcp_machine_step (const DcpMachineConfig *c, DcpMachine *m, const DcpEvent *e, DcpActions *a)
{
  g_return_if_fail (c != NULL && m != NULL && e != NULL && a != NULL && c->burst >= 1);

  *a = (DcpActions) DCP_ACTIONS_INIT;
  switch (e->kind)
    {
    case DCP_EVENT_READ:
      on_read (c, m, e->now, a);
      break;
    case DCP_EVENT_ANSWER:
      on_answer (c, m, e, a);
      break;
    case DCP_EVENT_TIMER:
      owner_next (c, m, e->now, a);
      break;
    case DCP_EVENT_DEAD:
      m->owned = FALSE;
      break;
    case DCP_EVENT_RESUME:
      if (m->owned || m->gone || m->wanted < 0)
        break;
      if (m->owed_first >= 0 && dcp_schedule_expired (c->schedule, m->owed_first, e->now))
        {
          a->tries = m->tries;
          a->given_up = TRUE;
          m->wanted = -1;
          owed_reset (m);
          break;
        }
      m->owned = TRUE;
      m->due = MAX (m->due, e->now);
      a->detach_at = m->due;
      break;
    default:
      g_return_if_reached ();
    }
}

void
dcp_machine_merge (DcpMachine *into, const DcpMachine *o)
{
  into->full_at = MAX (into->full_at, o->full_at);
  into->last = MAX (into->last, o->last);
  into->wanted = MAX (into->wanted, o->wanted);
  if (o->flight > into->flight)
    {
      into->flight = o->flight;
      into->flight_end = o->flight_end;
    }
  if (into->owed_first < 0 || (o->owed_first >= 0 && o->owed_first < into->owed_first))
    {
      into->owed_first = o->owed_first;
      into->tries = MAX (into->tries, o->tries);
    }
  if (into->due < 0 || (o->due >= 0 && o->due < into->due))
    into->due = o->due;
  into->gone = into->gone || o->gone;
}

const gchar *
dcp_why_to_string (DcpWhy why)
{
  switch (why)
    {
    case DCP_WHY_PUSH:
      return "notify";
    case DCP_WHY_TRAILING:
      return "trailing";
    case DCP_WHY_COVERED:
      return "covered";
    case DCP_WHY_OWED:
      return "owed";
    case DCP_WHY_LIMITED:
      return "rate-limited";
    case DCP_WHY_GONE:
      return "gone";
    case DCP_WHY_NONE:
    default:
      return "none";
    }
}
