#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""410, transient failures, retries and their cap, signals, the cache.

The transient failures here are those of --retry=caller (exit 75, the
caller retries, capped per message); test_retry.py has the default,
--retry=background."""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import SLOW, TOKEN, WRAPPER, free_port, message  # noqa: E402


class Failures(dcptest.TestCase):
    def test_gone_then_skip_until_ping(self):
        srv = self.server(statuses=["410"])
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        self.assertEqual(len(srv.requests), 1)
        st = self.run_bin(["--status", TOKEN])
        self.assertDone(st)
        self.assertRegex(st.stdout, r"result=\"410 gone\" .*gone=\d{4}-")
        # later runs skip it without a request
        r = self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        dry = self.run_bin(["-n", "-w", "0", "-u", srv.url, TOKEN], message())
        self.assertEqual(dry.stdout, "gone %s…\n" % TOKEN[:8])
        self.assertEqual(len(srv.requests), 1)
        # a successful --ping clears the mark
        ping = self.run_bin(["--ping", "-u", srv.url, TOKEN], None)
        self.assertDone(ping)
        self.assertEqual(ping.stdout, "200 ok %s…\n" % TOKEN[:8])
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        self.assertEqual(len(srv.requests), 3)

    def test_500_then_success(self):
        srv = self.server(statuses=["500"])
        r = self.run_bin(["--retry=caller", "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)

    def test_transient_statuses_retry_in_budget(self):
        srv = self.server(default="503")
        r = self.run_bin(["--retry=caller", "--timeout", "2", "-u", srv.url, TOKEN], message())
        self.assertTempfail(r)
        self.assertIn("HTTP 503", r.stderr)
        self.assertGreaterEqual(len(srv.requests), 2)
        self.assertLess(r.elapsed, 2 + 1.5 * SLOW)

    def test_redirect_not_followed(self):
        srv = self.server(default="redirect")
        r = self.run_bin(["--retry=caller", "--timeout", "1", "-u", srv.url, TOKEN], message())
        self.assertTempfail(r)
        self.assertEqual({q.path for q in srv.requests}, {"/notify"})

    def test_connection_refused(self):
        url = "http://127.0.0.1:%d/notify" % free_port()
        r = self.run_bin(["--retry=caller", "--timeout", "2", "-u", url, TOKEN], message())
        self.assertTempfail(r)
        self.assertLess(r.elapsed, 2 + 1.5 * SLOW)

    def test_server_never_answers(self):
        srv = self.server(default="hang")
        r = self.run_bin(["--retry=caller", "--timeout", "2", "-u", srv.url, TOKEN], message())
        self.assertTempfail(r)
        # the budget less what settling the answers takes; a wrapper's own
        # start (valgrind: a second or more on a busy machine) comes on top
        self.assertGreaterEqual(r.elapsed, 1.7)
        self.assertLess(r.elapsed, 2 + (1.5 if WRAPPER else 0.2) * SLOW)

    def test_default_budget_under_dovecot_timeout(self):
        srv = self.server(default="hang")
        r = self.run_bin(["--retry=caller", "-u", srv.url, TOKEN], message())
        self.assertTempfail(r)
        self.assertLess(r.elapsed, 9.5 if SLOW == 1 else 30)

    def test_reset_trickle_huge(self):
        for fault, expect in [("reset", 75), ("partial", 75), ("trickle", 0),
                              ("huge", 0)]:
            with self.subTest(fault=fault):
                srv = self.server(default=fault)
                r = self.run_bin(["--retry=caller", "-w", "0", "--timeout", "2", "-u", srv.url,
                                  TOKEN], message())
                # a 200 status line is enough: the body is not awaited
                # beyond the budget nor read without bound
                self.assertEqual(r.returncode, expect, r)
                self.assertLess(r.elapsed, 2 + 1.5 * SLOW)

    def test_retry_cap_five_runs(self):
        srv = self.server(default="503")
        msg = message()
        codes = [self.run_bin(["--retry=caller", "-w", "0", "--timeout", "1", "-u", srv.url,
                               TOKEN], msg).returncode for _ in range(5)]
        self.assertEqual(codes, [75, 75, 75, 75, 0])
        # at the cap the push is owed (exit 0 is never a message lost):
        # another message is covered by it, and pokes it
        self.assertTrue(any(n.endswith(".due") for n in os.listdir(self.cache)))
        self.assertDone(self.run_bin(["--retry=caller", "-w", "0", "--timeout", "1", "-u", srv.url,
                                      TOKEN], message()))

    def test_retry_cap_counts_runs_not_tokens(self):
        srv = self.server(default="503")
        msg = message()
        tokens = [TOKEN + "-a", TOKEN + "-b", TOKEN + "-c"]
        codes = [self.run_bin(["--retry=caller", "-w", "0", "--timeout", "1", "-u", srv.url]
                              + tokens, msg).returncode for _ in range(5)]
        self.assertEqual(codes, [75, 75, 75, 75, 0])

    def test_retry_cap_one_hour(self):
        srv = self.server(default="503")
        msg = message()
        self.assertTempfail(self.run_bin(["--retry=caller", "--timeout", "1", "-u", srv.url, TOKEN], msg))
        retry = [n for n in os.listdir(self.cache) if n.startswith("retry-")]
        self.assertEqual(len(retry), 1)
        path = os.path.join(self.cache, retry[0])
        count, first = open(path).read().split("\n")[0].split()
        with open(path, "w") as f:
            f.write("%s %d\n" % (count, int(first) - 3601))
        r = self.run_bin(["--retry=caller", "--timeout", "1", "-u", srv.url, TOKEN], msg)
        self.assertDone(r)
        self.assertFalse(os.path.exists(path))

    def test_retry_keyed_without_message_id(self):
        srv = self.server(default="503")
        base = b"From: a@example.org\nSubject: no id\n\nbody\n"
        codes = []
        for i in range(5):
            # getmail prepends fresh trace headers on every try
            msg = (b"Return-Path: <a@example.org>\nDelivered-To: b@example.org\n"
                   b"Received: from imap by host with IMAP4 getmail6 for <b@x>; "
                   b"22 Nov 2026 04:0%d:00 -0000\n" % i) + base
            codes.append(self.run_bin(["--retry=caller", "-w", "0", "--timeout", "1", "-u",
                                       srv.url, TOKEN], msg).returncode)
        self.assertEqual(codes, [75, 75, 75, 75, 0])

    def test_best_effort(self):
        url = "http://127.0.0.1:%d/notify" % free_port()
        r = self.run_bin(["--retry=caller", "--best-effort", "--timeout", "1", "-u", url, TOKEN], message())
        self.assertDone(r)

    def test_one_of_two_tokens_fails(self):
        good, bad = "good-token-1", "bad-token-22"
        msg = message()  # the same message, so the same Message-ID, both times
        srv = self.server()
        # one token is accepted, the other fails for the whole budget (the
        # two are posted at once: they arrive in either order)
        srv.set_body_status(bad.encode(), "503")
        r = self.run_bin(["--retry=caller", "--timeout", "1", "-u", srv.url, good, bad], msg)
        self.assertTempfail(r)
        n = len(srv.requests)
        self.assertEqual([q.body for q in srv.requests].count(good.encode()), 1)
        self.assertGreaterEqual([q.body for q in srv.requests].count(bad.encode()), 1)
        # the retry: the token that was notified is not pushed again, not
        # even by a trailing push
        srv.set_body_status(bad.encode(), None)
        r = self.run_bin(["--retry=caller", "-w", "1", "--timeout", "1", "-u", srv.url, good, bad], msg)
        self.assertDone(r)
        time.sleep(1.5)  # a trailing push (window 1 s) would have come by now
        self.assertEqual([q.body for q in srv.requests[n:]], [bad.encode()])

    def test_sigterm_during_request(self):
        srv = self.server(default="hang")
        p = subprocess.Popen(self.cmd(["-u", srv.url, TOKEN]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.env)
        p.stdin.write(message())
        p.stdin.close()
        p.stdin = None
        self.assertEqual(srv.wait_for(1, 5 * SLOW), 1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=5 * SLOW)
        self.assertEqual(p.returncode, 75)
        self.assertEqual(len(err.decode().splitlines()), 1, err)

    def test_sigint_sighup(self):
        for sig in (signal.SIGINT, signal.SIGHUP):
            with self.subTest(sig=sig):
                srv = self.server(default="hang")
                # a token of its own: the first one's push is owed after
                # the signal, and a message for it would only poke that
                p = subprocess.Popen(self.cmd(["-w", "0", "-u", srv.url, TOKEN + str(int(sig))]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env)
                p.stdin.write(message())
                p.stdin.close()
                p.stdin = None
                self.assertEqual(srv.wait_for(1, 5 * SLOW), 1)
                p.send_signal(sig)
                p.communicate(timeout=5 * SLOW)
                self.assertEqual(p.returncode, 75)

    def test_sigpipe_ignored(self):
        # stdout is a pipe nobody reads any more: writing to it must give an
        # error (EPIPE) to handle, not kill us with SIGPIPE
        srv = self.server()
        r, w = os.pipe()
        os.close(r)
        try:
            p = subprocess.run(self.cmd(["--ping", "-u", srv.url, TOKEN]),
                               stdin=subprocess.DEVNULL, stdout=w,
                               stderr=subprocess.PIPE, env=self.env, timeout=10 * SLOW,
                               preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL))
        finally:
            os.close(w)
        self.assertIn(p.returncode, (0, 75), p)
        self.assertEqual(len(srv.requests), 1)


class Cache(dcptest.TestCase):
    def test_unwritable_cache_still_notifies(self):
        blocker = self.write("not-a-dir", "x")
        srv = self.server()
        r = self.run_bin(["-u", srv.url, TOKEN], message(),
                         env={"XDG_CACHE_HOME": os.path.join(blocker, "cache")})
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_foreign_cache_dir_still_notifies(self):
        srv = self.server()
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        # a cache directory we cannot use: someone else's, or read-only
        if os.geteuid() == 0:
            os.chown(self.cache, 65534, 65534)
        else:
            os.chmod(self.cache, 0o500)
        try:
            self.assertDone(self.run_bin(["-u", srv.url, TOKEN], message()))
            self.assertDone(self.run_bin(["-u", srv.url, TOKEN], message()))
        finally:
            os.chmod(self.cache, 0o700)
        # no rate limit without a cache: each message is pushed
        self.assertEqual(len(srv.requests), 3)

    def test_symlinked_cache_dir_not_followed(self):
        target = os.path.join(self.tmp, "elsewhere")
        os.mkdir(target)
        os.makedirs(self.env["XDG_CACHE_HOME"])
        os.symlink(target, self.cache)
        srv = self.server()
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], message()))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        self.assertEqual(os.listdir(target), [])

    def test_no_cache_gives_up_instead_of_retrying_forever(self):
        # without a cache the try can be neither counted nor owed: dropped
        blocker = self.write("not-a-dir", "x")
        url = "http://127.0.0.1:%d/notify" % free_port()
        for mode in ("caller", "background"):
            with self.subTest(mode=mode):
                r = self.run_bin(["--retry=" + mode, "--timeout", "1", "-u", url, TOKEN],
                                 message(), env={"XDG_CACHE_HOME": os.path.join(blocker, "cache")})
                self.assertDone(r)


if __name__ == "__main__":
    dcptest.main()
