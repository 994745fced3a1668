#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Faults around the run: a full disk, runs killed with SIGKILL, stale
locks, odd token files.  No fault may lose the notification silently,
crash, or hang the caller."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import SLOW, TOKEN, message  # noqa: E402


class Faults(dcptest.TestCase):
    def in_full_tmpfs(self, args, stdin):
        """Run with the cache on a tiny tmpfs that is full, in a private
        mount namespace so nothing outside sees it."""
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1) to mount a private tmpfs")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            # e.g. inside a chroot, whose / is no mount point
            self.skipTest("no private mount namespace here: " + probe.stderr.strip())
        cache = os.path.join(self.tmp, "full")
        os.makedirs(cache, exist_ok=True)
        script = ('mount -t tmpfs -o size=64k,nr_inodes=64 tmpfs "$1" && '
                  'mkdir -p "$1/deltachat-push" && '
                  '(dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null; true) && '
                  'shift && exec "$@"')
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", cache] + self.cmd(args)
        env = dict(self.env, XDG_CACHE_HOME=cache)
        p = subprocess.run(cmd, input=stdin, capture_output=True, env=env,
                           timeout=30 * SLOW)
        return dcptest.Result.decoded(p, 0)

    def test_full_filesystem_still_notifies(self):
        srv = self.server()
        r = self.in_full_tmpfs(["-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_full_filesystem_failure_is_bounded(self):
        # the try can be neither counted (--retry=caller) nor owed (the
        # default) on a full disk, so it is not retried forever either:
        # logged and given up
        for mode in ("caller", "background"):
            with self.subTest(mode=mode):
                srv = self.server(default="503")
                r = self.in_full_tmpfs(["--retry=" + mode, "--timeout", "1", "-u", srv.url,
                                        TOKEN], message())
                self.assertDone(r)
                self.assertGreaterEqual(len(srv.requests), 1)

    def test_killed_mid_request_is_not_lost(self):
        srv = self.server(statuses=["hang"])
        msg = message()
        p = subprocess.Popen(self.cmd(["-w", "2", "-u", srv.url, TOKEN]),
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=self.env)
        p.stdin.write(msg)
        p.stdin.close()
        self.assertEqual(srv.wait_for(1, 5 * SLOW), 1)
        p.kill()
        p.wait(5)
        # the caller (getmail, an MTA) runs us again for the same message
        t0 = time.time()
        r = self.run_bin(["-w", "2", "-u", srv.url, TOKEN], msg)
        self.assertDone(r)
        self.assertEqual(srv.wait_for(2, 2 + 5 * SLOW), 2)
        self.assertLess(srv.requests[1].time - t0, 2 + 2 * SLOW)

    def test_lock_of_a_killed_run_is_not_stale(self):
        srv = self.server()
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        lock = [n for n in os.listdir(self.cache) if n.endswith(".lock")][0]
        # a process takes the token's lock and dies by SIGKILL holding it
        holder = subprocess.Popen([sys.executable, "-c", (
            "import fcntl,sys,time\n"
            "f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True); time.sleep(60)"),
            os.path.join(self.cache, lock)], stdout=subprocess.PIPE)
        self.assertEqual(holder.stdout.readline(), b"locked\n")
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        r = self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertLess(r.elapsed, 1.5 * SLOW)
        self.assertEqual(len(srv.requests), 2)

    def test_lock_held_by_a_hung_run_does_not_hang_us(self):
        srv = self.server()
        self.assertDone(self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message()))
        lock = [n for n in os.listdir(self.cache) if n.endswith(".lock")][0]
        with open(os.path.join(self.cache, lock), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            r = self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message())
        # bounded wait for the lock, then push without the rate limit
        self.assertDone(r)
        self.assertLess(r.elapsed, 8 * SLOW)
        self.assertEqual(len(srv.requests), 2)

    def test_pending_mark_of_a_killed_child(self):
        srv = self.server()
        self.assertDone(self.run_bin(["-w", "60", "-u", srv.url, TOKEN], message()))
        # a mark nobody holds: its trailing push was killed
        name = [n for n in os.listdir(self.cache) if n.endswith(".last")][0]
        pending = os.path.join(self.cache, name[:-5] + ".due")
        due = int(time.time() * 1e6) + 60 * 10**6
        with open(pending, "w") as f:
            f.write("%d -1 -1 1 %d -1 0 -1\n%s\n" % (due - 10**7, due, TOKEN))
        st = self.run_bin(["--status", TOKEN])
        self.assertIn("pending=stale", st.stdout)
        dry = self.run_bin(["-n", "-w", "60", "--burst", "1", "-u", srv.url, TOKEN], message())
        self.assertEqual(dry.stdout, "trailing %s…\n" % TOKEN[:8])

    def test_token_file_is_a_directory(self):
        r = self.run_bin(["-t", self.tmp, TOKEN], message())
        self.assertTempfail(r)
        self.assertIn("regular file", r.stderr)

    def test_token_file_unreadable(self):
        if os.geteuid() == 0:
            path = "/proc/1/mem"  # exists, and even root cannot read it so
        else:
            path = self.write("secret", TOKEN + "\n", mode=0)
        r = self.run_bin(["-t", path], message())
        self.assertTempfail(r)

    def test_stdin_closed(self):
        srv = self.server()
        p = subprocess.run(self.cmd(["-w", "0", "-u", srv.url, TOKEN]), stdin=subprocess.DEVNULL,
                           capture_output=True, env=self.env, timeout=20 * SLOW,
                           close_fds=True, pass_fds=())
        self.assertEqual(p.returncode, 0)
        # fds 0-2 closed entirely: the program opens /dev/null for them
        # (not under a wrapper: valgrind itself needs its stderr)
        p = subprocess.run(["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh"] +
                           self.cmd(["-w", "0", "-u", srv.url, TOKEN], wrap=False), env=self.env,
                           timeout=20 * SLOW)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(srv.wait_for(2, 5), 2)


if __name__ == "__main__":
    dcptest.main()
