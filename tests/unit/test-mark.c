/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A token's marks (lib/dcp-mark.c), driven by a clock of our own: the
 * machine's state round-tripped through the files, a live owner told
 * from a dead one, owed pushes, gone marks, a damaged mark, and N
 * processes reading a message at once getting exactly the bucket's
 * pushes and one trailing push. */
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

#include "state-fixture.h"

static void
test_round_trip (Fixture *f, gconstpointer data)
{
  g_autofree gchar *due = NULL;
  DcpMarkHold h;
  DcpActions a;
  int own = -1;

  (void) data;
  /* a push, then one within the second: a trailing push due at its end */
  a = read_at (f, TOKEN, T0, NULL);
  g_assert_true (a.push);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.last, ==, T0);
  g_assert_cmpint (h.m.full_at, ==, T0 + W);
  g_assert_cmpint (h.m.wanted, ==, T0);
  g_assert_cmpint (h.m.flight, ==, T0);
  a = read_at (f, TOKEN, T0 + SEC / 2, &own);
  g_assert_cmpint (a.detach_at, ==, T0 + SEC);
  h = peek_state (f, TOKEN);
  g_assert_true (h.m.owned);
  g_assert_true (h.owner_live); /* we hold its mark */
  g_assert_cmpint (h.m.due, ==, T0 + SEC);
  g_assert_cmpint (h.m.wanted, ==, T0 + SEC / 2);
  /* the owner dies: seen as such, and the next message takes it over */
  close (own);
  h = peek_state (f, TOKEN);
  g_assert_true (h.m.owned);
  g_assert_false (h.owner_live);
  a = read_at (f, TOKEN, T0 + 2 * SEC, NULL);
  g_assert_true (a.push);
  h = peek_state (f, TOKEN);
  g_assert_false (h.m.owned);
  /* answered: nothing is left, and the mark is gone */
  a = answer (f, TOKEN, T0 + 2 * SEC, T0 + 3 * SEC, DCP_HTTP_OK);
  a = answer (f, TOKEN, T0, T0 + 3 * SEC, DCP_HTTP_OK);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.wanted, ==, -1);
  g_assert_cmpint (h.m.flight, ==, -1);
  due = state_file (f, TOKEN, ".due");
  g_assert_false (exists_nofollow (due));
  g_assert_cmpint (h.m.full_at, ==, T0 + 2 * W);
}

static void
test_owed_on_disk (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) tokens = NULL;
  DcpMarkHold h;
  DcpActions a;
  int own = -1;

  (void) data;
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  a = answer (f, TOKEN, T0, T0 + SEC, DCP_HTTP_FAILED);
  g_assert_true (a.owed);
  g_assert_cmpint (a.detach_at, ==, T0 + SEC + 8 * SEC);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.owed_first, ==, T0 + SEC);
  g_assert_cmpuint (h.m.tries, ==, 1);
  /* the mark holds the token, for --resume */
  tokens = dcp_mark_tokens (f->state, NULL);
  g_assert_nonnull (tokens);
  g_assert_cmpuint (tokens->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (tokens, 0), ==, TOKEN);
  /* its owner was never started: a run takes it over */
  a = read_at (f, TOKEN, T0 + 30 * SEC, &own);
  g_assert_cmpint (a.why, ==, DCP_WHY_OWED);
  g_assert_true (a.push || a.detach_at >= 0);
  if (own >= 0)
    close (own);
}

static void
test_gone (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  DcpMarkHold h;

  (void) data;
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  answer (f, TOKEN, T0, T0 + SEC, DCP_HTTP_GONE);
  h = peek_state (f, TOKEN);
  g_assert_true (h.m.gone);
  g_assert_cmpint (dcp_mark_gone_since (f->state, TOKEN), >=, 0);
  g_assert_cmpint (read_at (f, TOKEN, T0 + 2 * SEC, NULL).why, ==, DCP_WHY_GONE);
  /* other tokens are not affected */
  g_assert_true (read_at (f, "other", T0 + SEC, NULL).push);
  g_assert_true (dcp_mark_set_gone (f->state, TOKEN, FALSE, T0 + 2 * SEC, &error));
  g_assert_no_error (error);
  g_assert_cmpint (dcp_mark_gone_since (f->state, TOKEN), ==, -1);
  g_assert_true (read_at (f, TOKEN, T0 + 3 * SEC, NULL).push);
  /* clearing a mark that is not there is fine */
  g_assert_true (dcp_mark_set_gone (f->state, "never", FALSE, T0, &error));
  g_assert_no_error (error);
}

/* A mark written by a crash mid-write: a push is wanted, nothing lost. */
static void
test_damaged_mark (Fixture *f, gconstpointer data)
{
  g_autofree gchar *mark = state_file (f, TOKEN, ".due");
  DcpMarkHold h;

  (void) data;
  g_assert_true (g_file_set_contents (mark, "12 x", -1, NULL));
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.wanted, >=, 0);
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
}

static gboolean
read_all (int fd, gchar *buf, gsize len)
{
  gsize got = 0;

  while (got < len)
    {
      gssize n = read (fd, buf + got, len - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      got += n;
    }
  return TRUE;
}

static void
wait_eof (int fd)
{
  gchar c;

  for (;;)
    {
      gssize n = read (fd, &c, 1);
      if (n == 0 || (n < 0 && errno != EINTR))
        return;
    }
}

#define RACERS 20

/* RACERS processes read a message for the same token at the same instant
 * (all released by one close()); each reports what its machine said as
 * one character: P push, T trailing (it then holds the mark until all
 * are done), C covered. */
static void
race (Fixture *f, gint64 now, guint burst, guint expected[3])
{
  int barrier[2], results[2], release[2];
  pid_t pids[RACERS];
  gchar kinds[RACERS];
  guint counts[3] = { 0 };

  g_assert_cmpint (pipe (barrier), ==, 0);
  g_assert_cmpint (pipe (results), ==, 0);
  g_assert_cmpint (pipe (release), ==, 0);

  for (int i = 0; i < RACERS; i++)
    {
      pids[i] = fork ();
      g_assert_cmpint (pids[i], >=, 0);
      if (pids[i] == 0)
        {
          DcpMachineConfig c = CONFIG (burst);
          DcpEvent e = { DCP_EVENT_READ, now, FALSE, -1, DCP_HTTP_OK, FALSE };
          DcpState *state;
          DcpMarkHold h;
          DcpActions a;
          gchar ch = 'E';
          int own = -1;

          close (barrier[1]);
          close (results[0]);
          close (release[1]);
          state = dcp_state_open (f->root, NULL);
          wait_eof (barrier[0]);
          if (state != NULL && dcp_mark_hold (state, TOKEN, &h, NULL))
            {
              if (h.m.owned && !h.owner_live)
                {
                  DcpEvent dead = { DCP_EVENT_DEAD, now, FALSE, -1, DCP_HTTP_OK, FALSE };
                  dcp_machine_step (&c, &h.m, &dead, &a);
                }
              dcp_machine_step (&c, &h.m, &e, &a);
              if (a.detach_at >= 0)
                own = dcp_mark_own (state, TOKEN, &h, NULL);
              else
                (void) dcp_mark_store (state, TOKEN, &h, NULL);
              dcp_mark_release (&h);
              ch = a.push                         ? 'P'
                   : a.detach_at >= 0 && own >= 0 ? 'T'
                   : a.why == DCP_WHY_COVERED     ? 'C'
                                                  : 'E';
            }
          if (write (results[1], &ch, 1) != 1)
            _exit (2);
          /* an owner lives (and holds its mark) until all are done */
          wait_eof (release[0]);
          _exit (ch == 'E' ? 1 : 0);
        }
    }
  close (barrier[0]);
  close (results[1]);
  close (release[0]);

  close (barrier[1]); /* go */
  g_assert_true (read_all (results[0], kinds, RACERS));
  close (release[1]);
  close (results[0]);

  for (int i = 0; i < RACERS; i++)
    {
      int status;
      g_assert_cmpint (waitpid (pids[i], &status, 0), ==, pids[i]);
      g_assert_true (WIFEXITED (status));
      g_assert_cmpint (WEXITSTATUS (status), ==, 0);
      counts[kinds[i] == 'P' ? 0 : kinds[i] == 'T' ? 1 : 2]++;
    }
  g_test_message ("push %u trailing %u covered %u", counts[0], counts[1], counts[2]);
  for (int k = 0; k < 3; k++)
    g_assert_cmpuint (counts[k], ==, expected[k]);
}

/* One instant: one push (the next is a second away), one trailing push. */
static void
test_race_fresh (Fixture *f, gconstpointer data)
{
  guint expected[3] = { 1, 1, RACERS - 2 };
  DcpMarkHold h;

  (void) data;
  race (f, T0, 3, expected);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.last, ==, T0);
  g_assert_true (h.m.owned);
  g_assert_false (h.owner_live); /* its process is gone */
  g_assert_cmpint (h.m.due, ==, T0 + SEC);
}

/* The bucket empty: no push, one trailing push when it has one. */
static void
test_race_bucket_empty (Fixture *f, gconstpointer data)
{
  guint expected[3] = { 0, 1, RACERS - 1 };
  DcpMarkHold h;

  (void) data;
  g_assert_true (read_at (f, TOKEN, T0, NULL).push);
  g_assert_true (read_at (f, TOKEN, T0 + 2 * SEC, NULL).push);
  g_assert_true (read_at (f, TOKEN, T0 + 4 * SEC, NULL).push);
  race (f, T0 + 10 * SEC, 3, expected);
  h = peek_state (f, TOKEN);
  g_assert_cmpint (h.m.due, ==, T0 + W);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* one failing check fails its test, not the whole program: every
   * test is reported */
  g_test_set_nonfatal_assertions ();

  ADD_FIXTURE ("/mark/round-trip", test_round_trip);
  ADD_FIXTURE ("/mark/owed", test_owed_on_disk);
  ADD_FIXTURE ("/mark/damaged", test_damaged_mark);
  ADD_FIXTURE ("/mark/gone", test_gone);
  ADD_FIXTURE ("/mark/race/fresh", test_race_fresh);
  ADD_FIXTURE ("/mark/race/bucket-empty", test_race_bucket_empty);
  return g_test_run ();
}
