#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Owed pushes (--retry=background, the default) and --retry=caller.

A failed push costs the caller one attempt and exit 0; a detached process
per token retries it on the relays' schedule (8, 64, 512, 4096 s after the
first failure).  These tests shorten the schedule with DCP_RETRY_SCHEDULE
(documented as for tests) and read the detached processes' log lines from
DCP_RETRY_LOG, except one that waits for the real first step of 8 s.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import SLOW, TOKEN, WRAPPER, message, free_port, wait_until  # noqa: E402
from httpd import Server  # noqa: E402

# DCP_RETRY_SCHEDULE, DCP_RETRY_LOG: the test build (dcptest.main checks)
NEEDS_TEST_HOOKS = True


class Retry(dcptest.TestCase):
    def setUp(self):
        super().setUp()
        self.log = os.path.join(self.tmp, "detached.log")
        self.env["DCP_RETRY_LOG"] = self.log
        self.env["DCP_RETRY_SCHEDULE"] = "1,2,3"

    def log_lines(self, word):
        try:
            with open(self.log) as f:
                return [line for line in f if word in line]
        except OSError:
            return []

    def owed_mark(self):
        """The token's mark while its push is owed, or None."""
        marks = [n for n in os.listdir(self.cache) if n.endswith(".due")]
        if not marks:
            return None
        with open(os.path.join(self.cache, marks[0])) as f:
            fields = f.read().split("\n")[0].split()
        _, _, _, _, nxt, first, tries, pid = (int(x) for x in fields)
        if first < 0:
            return None
        return {"first": first, "tries": tries, "next": nxt, "pid": pid,
                "path": os.path.join(self.cache, marks[0])}

    def status(self):
        r = self.run_bin(["--status", TOKEN], None)
        self.assertDone(r)
        return r.stdout

    def test_down_then_up_at_the_real_first_step(self):
        del self.env["DCP_RETRY_SCHEDULE"]
        port = free_port()
        url = "http://127.0.0.1:%d/notify" % port
        path = self.write("msg.eml", message())
        # a getmail-like caller: the message in a regular file, and exit 0
        # with nothing on stderr counts as delivered
        t0 = time.time()
        r = self.run_bin(["-u", url, TOKEN], path)
        self.assertDone(r)
        self.assertLess(r.elapsed, 2 * SLOW)
        self.assertRegex(self.status(), r"owed=\d{4}-\S+Z next-try=\d{4}-\S+Z tries=1\n")
        # the detached process is started, not awaited
        self.assertTrue(wait_until(lambda: len(self.owed_pids()) == 1, 2 * SLOW))
        time.sleep(2)  # the endpoint stays down 2 s more
        srv = Server(port=port).start()
        self.servers.append(srv)
        self.assertEqual(srv.wait_for(1, 8 + 4 * SLOW), 1)
        # at the schedule's next step: 8 s after the failure
        self.assertGreaterEqual(srv.requests[0].time - t0, 7.9)
        self.assertLess(srv.requests[0].time - t0, 8 + 2 * SLOW)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        self.assertTrue(wait_until(lambda: not self.owed_pids(), 3 * SLOW))
        self.assertRegex(self.status(), r'result="200 ok" pending=none gone=no owed=no\n')
        self.assertEqual(len(self.log_lines("settled on try 2: 200 ok")), 1)

    def test_down_for_good(self):
        srv = self.server(default="503")
        # a window of 1 s: the bucket never holds up the shortened schedule
        r = self.run_bin(["-w", "1", "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        # one attempt in the run: no back-off inside it
        self.assertEqual(len(srv.requests), 1)
        self.assertEqual(srv.wait_for(4, 3 + 3 * SLOW), 4)
        first = srv.requests[0].time
        for i, step in enumerate((1, 2, 3), 1):
            offset = srv.requests[i].time - first
            self.assertGreaterEqual(offset, step - 0.1, (i, offset))
            self.assertLess(offset, step + 0.6 * SLOW, (i, offset))
        self.assertTrue(wait_until(lambda: self.log_lines("given up"), 3 * SLOW))
        self.assertTrue(wait_until(lambda: not self.owed_pids(), 3 * SLOW))
        time.sleep(1.5)  # a fifth try would have come by now
        self.assertEqual(len(srv.requests), 4)
        self.assertEqual(len(self.log_lines("given up")), 1)
        self.assertEqual(len(self.log_lines("owed push, try")), 3)
        self.assertIn("after 4 failed tries", self.log_lines("given up")[0])
        self.assertRegex(self.status(), r'result="error: HTTP 503" .* owed=no\n')

    def test_twenty_messages_while_owed(self):
        step = 10 if SLOW == 1 else 40  # 20 runs under valgrind take ~17 s
        self.env["DCP_RETRY_SCHEDULE"] = str(step)
        srv = self.server(default="503")
        t0 = time.time()
        self.assertDone(self.run_bin(["-w", "1", "-u", srv.url, TOKEN], message()))
        self.assertTrue(wait_until(lambda: len(self.owed_pids()) == 1, 2 * SLOW))
        pids = self.owed_pids()
        for _ in range(20):
            r = self.run_bin(["-w", "1", "-u", srv.url, TOKEN], message())
            self.assertDone(r)
        # nothing new was started: the owed push covers them; the messages
        # only poke it, and it tries once for all that came before a try,
        # a window (1 s) after its last one
        spent = time.time() - t0
        self.assertLess(spent, step - 3, "too slow to test coverage")
        self.assertEqual(self.owed_pids(), pids)
        self.assertGreaterEqual(srv.wait_for(2, 1 + 3 * SLOW), 2)
        time.sleep(2.5)  # a poke sent during the last try gets one more
        tries = len(srv.requests)
        time.sleep(1.5)  # a try too many would have come by now
        times = [q.time - t0 for q in srv.requests]
        self.assertEqual(len(times), tries, times)
        self.assertLessEqual(tries, 2 + spent, times)
        # 1 s apart when claimed; the first POST, a run's own, may leave
        # late under a wrapper (valgrind), so the gap seen here is shorter
        for a, b in zip(times, times[1:]):
            self.assertGreaterEqual(b - a, 0.8 if WRAPPER else 0.95, times)
        self.assertEqual(self.owed_pids(), pids)
        # pokes leave the schedule: its next step is still the first one
        mark = self.owed_mark()
        self.assertAlmostEqual((mark["next"] - mark["first"]) / 1e6, step, delta=0.01)
        # the proxy is back (a while after the last try): one push, at the
        # schedule's step at the latest
        time.sleep(1.2)
        srv.set_statuses([], default="200")
        before = len(srv.requests)
        self.assertEqual(srv.wait_for(before + 1, step + 3 * SLOW), before + 1)
        self.assertTrue(wait_until(lambda: self.log_lines("settled on try"), 3 * SLOW))
        time.sleep(2.5)  # a push too many would have come by now
        self.assertEqual(len(srv.requests), before + 1)
        self.assertEqual(self.owed_pids(), [])

    def test_a_message_after_recovery_is_pushed_at_once(self):
        # the next step is far: a message once the proxy is back pokes the
        # owed push, which tries at once
        self.env["DCP_RETRY_SCHEDULE"] = "60,120"
        srv = self.server(statuses=["503"], default="200")
        self.assertDone(self.run_bin(["-w", "2", "-u", srv.url, TOKEN], message()))
        self.assertTrue(wait_until(lambda: (self.owed_mark() or {}).get("pid", -1) > 0,
                                   3 * SLOW))
        pids = self.owed_pids()
        time.sleep(2.2)  # a window after the failed push
        t0 = time.time()
        self.assertDone(self.run_bin(["-w", "2", "-u", srv.url, TOKEN], message()))
        self.assertEqual(srv.wait_for(2, 3 * SLOW), 2)
        self.assertLess(srv.requests[1].time - t0, 1 + SLOW)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)
        self.assertTrue(wait_until(lambda: not self.owed_pids(), 3 * SLOW), pids)
        self.assertIsNone(self.owed_mark())
        self.assertEqual(len(self.log_lines("settled on try 2: 200 ok")), 1)
        time.sleep(2.5)  # a trailing or owed push would have come by now
        self.assertEqual(len(srv.requests), 2)  # nothing else owed or trailing

    def test_killed_owed_push_is_taken_over(self):
        self.env["DCP_RETRY_SCHEDULE"] = "60,120"
        srv = self.server(statuses=["503", "503"], default="200")
        args = ["-w", "1", "-u", srv.url, TOKEN]
        self.assertDone(self.run_bin(args, message()))
        self.assertTrue(wait_until(lambda: (self.owed_mark() or {}).get("pid", -1) > 0,
                                   3 * SLOW))
        mark = self.owed_mark()
        os.kill(mark["pid"], signal.SIGKILL)
        self.assertTrue(wait_until(lambda: not self.owed_pids(), 3 * SLOW))
        self.assertIn("owed=stale,", self.status())
        # the next message (a window after the failed try) takes it over:
        # it pushes at once, and as the proxy still fails, the owed push
        # keeps its first failure
        time.sleep(1.1)
        self.assertDone(self.run_bin(args, message()))
        self.assertEqual(len(srv.requests), 2)
        again = self.owed_mark()
        self.assertEqual((again["first"], again["tries"]), (mark["first"], 2))
        self.assertTrue(wait_until(lambda: len(self.owed_pids()) == 1, 2 * SLOW))
        os.kill(self.owed_pids()[0], signal.SIGKILL)
        self.assertTrue(wait_until(lambda: not self.owed_pids(), 3 * SLOW))
        # taken over again, and delivered: the mark is gone
        time.sleep(1.1)
        r = self.run_bin(args, message())
        self.assertDone(r)
        self.assertEqual(len(srv.requests), 3)
        self.assertIsNone(self.owed_mark())
        self.assertEqual(self.owed_pids(), [])

    def test_stale_mark_after_a_reboot(self):
        srv = self.server(default="200")
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        lock = [n for n in os.listdir(self.cache) if n.endswith(".lock")][0]
        path = os.path.join(self.cache, lock[:-5] + ".due")
        now = int(time.time() * 1e6)
        # a mark nobody holds, as a reboot leaves it
        with open(path, "w") as f:
            f.write("%d -1 -1 1 %d %d 2 999999999\n%s\n"
                    % (now - 100 * 10**6, now - 50 * 10**6, now - 100 * 10**6, TOKEN))
        self.assertIn("owed=stale,", self.status())
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        self.assertEqual(len(srv.requests), 2)
        self.assertFalse(os.path.exists(path))
        # a mark older than the 5 hours an owed push lives: a new failure
        # starts a schedule of its own
        with open(path, "w") as f:
            f.write("%d -1 -1 1 -1 %d 5 999999999\n%s\n"
                    % (now, now - 5 * 3600 * 10**6 - 10**6, TOKEN))
        srv.set_statuses([], default="503")
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        mark = self.owed_mark()
        self.assertEqual(mark["tries"], 1)
        self.assertGreater(mark["first"], now)

    def test_caller_mode_as_before(self):
        srv = self.server(default="503")
        msg = message()
        codes = []
        # no window: each of the caller's tries pushes
        for _ in range(5):
            r = self.run_bin(["--retry=caller", "-w", "0", "--timeout", "1", "-u", srv.url, TOKEN],
                             msg)
            if r.returncode == 75:
                self.assertTempfail(r)
            codes.append(r.returncode)
        self.assertEqual(codes, [75, 75, 75, 75, 0])
        # the caller gives up at the cap, so the push is owed from then on:
        # exit 0 never loses a message
        self.assertTrue(wait_until(lambda: self.owed_mark() is not None, 3 * SLOW))
        self.assertTrue(wait_until(lambda: len(self.owed_pids()) == 1, 2 * SLOW))
        # --best-effort keeps its meaning there: never 75
        other = TOKEN + "2"
        r = self.run_bin(["--retry=caller", "--best-effort", "--timeout", "1", "-u", srv.url,
                          other], message())
        self.assertDone(r)
        # and the config file can say so too
        conf = self.write("conf", "[deltachat-push]\nretry=caller\n")
        r = self.run_bin(["-c", conf, "--timeout", "1", "-u", srv.url, TOKEN + "3"], message())
        self.assertTempfail(r)
        self.assertTempfail(self.run_bin(["--retry=later", TOKEN], message()))

    def test_failed_trailing_push_is_owed(self):
        srv = self.server(statuses=["200", "503"], default="200")
        self.assertDone(self.run_bin(["-w", "1", "-u", srv.url, TOKEN], message()))
        self.assertDone(self.run_bin(["-w", "1", "-u", srv.url, TOKEN], message()))
        # the trailing push fails at the window's end, then is owed
        self.assertEqual(srv.wait_for(3, 4 + 3 * SLOW), 3)
        self.assertGreaterEqual(srv.requests[2].time - srv.requests[1].time, 0.9)
        self.assertTrue(wait_until(lambda: self.log_lines("settled on try 2: 200 ok"), 3 * SLOW))
        self.assertTrue(wait_until(lambda: not self.owed_pids(), 3 * SLOW))


if __name__ == "__main__":
    dcptest.main()
