#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Rate limit, trailing push, locking between concurrent runs."""

import os
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import SLOW, TOKEN, message  # noqa: E402

# long enough that a run under valgrind finishes well inside it
WINDOW = 2 if not dcptest.WRAPPER else 8
# The window counts from when a run claims its push, the gap below from
# when the POSTs arrive: under a wrapper (valgrind) the first POST leaves
# up to seconds after its claim.
LAG = 0 if not dcptest.WRAPPER else 1.0 * SLOW


class RateLimit(dcptest.TestCase):
    # one push per window: these tests are about the window and the
    # trailing push; the bucket has tests of its own (test_promises.py)
    def args(self, srv, *extra):
        return ["-u", srv.url, "-w", str(WINDOW), "--burst", "1"] + list(extra) + [TOKEN]

    def test_leading_then_trailing(self):
        srv = self.server()
        t0 = time.time()
        self.assertDone(self.run_bin(self.args(srv), message()))
        self.assertEqual(srv.wait_for(1, 5), 1)
        # inside the window: the caller is not kept waiting ...
        r = self.run_bin(self.args(srv), message())
        self.assertDone(r)
        self.assertLess(r.elapsed, 1.0 * SLOW)
        self.assertEqual(len(srv.requests), 1)
        # ... a third message is covered by the same trailing push ...
        self.assertDone(self.run_bin(self.args(srv), message()))
        # ... which arrives at the window's end, once
        self.assertEqual(srv.wait_for(2, WINDOW + 5), 2)
        gap = srv.requests[1].time - srv.requests[0].time
        self.assertGreaterEqual(gap, WINDOW - 0.05 - LAG)
        self.assertLess(gap, WINDOW + 1.5 * SLOW)
        self.assertLess(srv.requests[1].time - t0, WINDOW + 2 * SLOW)
        time.sleep(WINDOW + 0.5)
        self.assertEqual(len(srv.requests), 2)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)

    def test_after_window_pushes_at_once(self):
        srv = self.server()
        self.assertDone(self.run_bin(self.args(srv), message()))
        time.sleep(WINDOW + 0.1)
        self.assertDone(self.run_bin(self.args(srv), message()))
        self.assertEqual(len(srv.requests), 2)

    def test_trailing_child_holds_no_caller_fds(self):
        srv = self.server()
        self.assertDone(self.run_bin(self.args(srv), message()))
        # Popen with pipes: communicate() returns only when every holder
        # of the pipes' write ends is gone, so a trailing child that kept
        # stdout or stderr would make this take the whole window.
        t0 = time.monotonic()
        p = subprocess.Popen(self.cmd(self.args(srv)), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.env)
        out, err = p.communicate(message(), timeout=10)
        self.assertEqual((p.returncode, out, err), (0, b"", b""))
        self.assertLess(time.monotonic() - t0, 1.0 * SLOW)
        self.assertEqual(srv.wait_for(2, WINDOW + 5), 2)

    def test_no_trailing(self):
        srv = self.server()
        self.assertDone(self.run_bin(self.args(srv, "--no-trailing"), message()))
        self.assertDone(self.run_bin(self.args(srv, "--no-trailing"), message()))
        time.sleep(WINDOW + 1)
        self.assertEqual(len(srv.requests), 1)

    def test_window_zero(self):
        srv = self.server()
        for _ in range(3):
            self.assertDone(self.run_bin(["-u", srv.url, "-w", "0", TOKEN],
                                         message()))
        self.assertEqual(len(srv.requests), 3)

    def test_twenty_simultaneous_runs(self):
        # twenty runs under valgrind take a while on two cores: they must all
        # start inside one window for the test to mean anything
        window = WINDOW if not dcptest.WRAPPER else 30
        srv = self.server()
        msg = self.write("m.eml", message())
        procs = []
        for _ in range(20):
            f = open(msg, "rb")
            procs.append((subprocess.Popen(
                self.cmd(self.args(srv, "-w", str(window))), stdin=f, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=self.env), f))
        for p, f in procs:
            out, err = p.communicate(timeout=20 * SLOW)
            f.close()
            self.assertEqual((p.returncode, err), (0, b""))
        self.assertEqual(srv.wait_for(2, window + 5), 2)
        time.sleep(window + 0.5)
        self.assertEqual(len(srv.requests), 2, "one leading, one trailing")
        # the window counts from the first push's start, which is before
        # its request reaches the server (twenty runs load the machine)
        gap = srv.requests[1].time - srv.requests[0].time
        self.assertGreaterEqual(gap, window - 0.3 * SLOW - LAG)

    def test_trailing_push_gets_the_config_files_settings(self):
        """A detached push reads no config file: what the file says
        reaches it on its command line."""
        srv = self.server()
        conf = os.path.join(self.env["XDG_CONFIG_HOME"], "deltachat-push", "config")
        os.makedirs(os.path.dirname(conf))
        with open(conf, "w") as f:
            f.write("[deltachat-push]\nurl=%s\nwindow=%d\nburst=1\ntimeout=7\n"
                    "retry=caller\ntokens=%s\n" % (srv.url, WINDOW, TOKEN))
        self.assertDone(self.run_bin([], message()))
        self.assertDone(self.run_bin([], message()))
        self.assertTrue(dcptest.wait_until(lambda: len(self.owed_pids()) == 1, 2 * SLOW))
        with open("/proc/%d/cmdline" % self.owed_pids()[0], "rb") as f:
            argv = f.read().split(b"\0")
        for arg in ("--url=" + srv.url, "--window=%d" % WINDOW, "--burst=1", "--timeout=7",
                    "--retry=caller"):
            self.assertIn(arg.encode(), argv)
        # and the trailing push goes where the file says, at the window's end
        self.assertEqual(srv.wait_for(2, WINDOW + 5), 2)
        gap = srv.requests[1].time - srv.requests[0].time
        self.assertGreaterEqual(gap, WINDOW - 0.05 - LAG)

    def test_trailing_child_killed_is_replaced(self):
        srv = self.server()
        self.assertDone(self.run_bin(self.args(srv), message()))
        self.assertDone(self.run_bin(self.args(srv), message()))
        # kill the detached trailing push before it sends (the run does not
        # wait for its exec: look until it is there)
        self.assertTrue(dcptest.wait_until(lambda: len(self.owed_pids()) == 1, 3 * SLOW),
                        self.owed_pids())
        os.kill(self.owed_pids()[0], 9)
        self.assertTrue(dcptest.wait_until(lambda: not self.owed_pids(), 3 * SLOW))
        st = self.run_bin(["--status", TOKEN])
        self.assertIn("pending=stale", st.stdout)
        # the next message inside the window schedules a new one
        self.assertDone(self.run_bin(self.args(srv), message()))
        self.assertEqual(srv.wait_for(2, WINDOW + 5), 2)

    def test_cache_layout(self):
        token = "webpush:https://push.example/x/../../etc/passwd|p|a"
        srv = self.server()
        self.assertDone(self.run_bin(["-u", srv.url, token], message()))
        st = os.stat(self.cache)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
        names = os.listdir(self.cache)
        self.assertTrue(names)
        for n in names:
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.cache, n)).st_mode), 0o600)
            self.assertNotIn("webpush", n)
            self.assertNotIn("passwd", n)
        self.assertEqual(srv.bodies(), [token.encode()])

    def test_clock_stepped_back(self):
        srv = self.server()
        self.assertDone(self.run_bin(self.args(srv), message()))
        # a last push and a bucket an hour in the future must not block pushes
        for n in os.listdir(self.cache):
            if n.endswith(".last") or n.endswith(".full"):
                future = time.time() + 3600
                os.utime(os.path.join(self.cache, n), (future, future))
        self.assertDone(self.run_bin(self.args(srv), message()))
        self.assertEqual(len(srv.requests), 2)


if __name__ == "__main__":
    dcptest.main()
