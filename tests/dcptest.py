# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared helpers for the tests that run the built deltachat-push binary.

Each test gets its own HOME, XDG_CACHE_HOME and XDG_CONFIG_HOME under a
temporary directory, and usually a loopback endpoint (httpd.Server).  The
binary comes from $DCP_BINARY or argv[1] (deltachat-push-test for a module
that sets NEEDS_TEST_HOOKS); $DCP_WRAPPER (e.g. "valgrind
--error-exitcode=1 --leak-check=full") is put in front of every run.
Results are reported as TAP, one line per test method, for meson.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dcpkit  # noqa: E402
from dcpkit import Result, free_port, wait_until  # noqa: E402,F401 (for the tests)
from httpd import Server  # noqa: E402

SOURCE_ROOT = os.path.dirname(HERE)
EXAMPLES = os.path.join(SOURCE_ROOT, "examples")
BINARY = os.environ.get("DCP_BINARY")
WRAPPER = shlex.split(os.environ.get("DCP_WRAPPER", ""))
# valgrind makes everything slower; timing bounds scale with this
SLOW = float(os.environ.get("DCP_SLOW", "4" if WRAPPER else "1"))

TOKEN = "fcm-chat.delta:dGVzdC10b2tlbi0x/Zm9v+YmFy=="


def message(headers=None, body="Hello.\n", from_addr="alice@example.org",
            received=True, eol="\n"):
    """A small plain message; `headers` are extra "Name: value" lines."""
    fields = []
    if received:
        fields.append("Received: from mx.example.org by imap.example.org "
                      "with ESMTPS id 1; " + dcpkit.date())
    fields += ["From: Alice <%s>" % from_addr,
               "To: bob@example.org",
               "Subject: test",
               "Message-ID: " + dcpkit.message_id("dcptest"),
               "Date: Sun, 22 Nov 2026 10:00:00 +0000",
               "Chat-Version: 1.0"]
    return dcpkit.message(fields + list(headers or []), body, eol)


class TestCase(unittest.TestCase):
    """A private home for the binary, and helpers to run it."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dcp-test-")
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.home)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("XDG_", "DELTACHAT_PUSH"))}
        self.env.update(HOME=self.home,
                        XDG_CACHE_HOME=os.path.join(self.home, ".cache"),
                        XDG_CONFIG_HOME=os.path.join(self.home, ".config"),
                        LC_ALL="C.UTF-8")
        self.servers = []

    def tearDown(self):
        # a trailing or owed push still waiting would outlive the test
        for pid in self.owed_pids(every=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for s in self.servers:
            s.stop()
        # trailing pushes may still sleep: let them see the server gone
        shutil.rmtree(self.tmp, ignore_errors=True)

    def owed_pids(self, kind=b"--trailing-child", every=False):
        """The detached processes (trailing or owed pushes) of this test's cache,
        found through /proc by their argument and environment, never by
        name.  Each pushes in a short-lived child of its own, left out
        unless every."""
        mark = ("XDG_CACHE_HOME=" + self.env["XDG_CACHE_HOME"]).encode()
        pids = [p.pid for p in dcpkit.processes()
                if kind in p.argv and mark in p.environ]
        if every:
            return pids
        return [p for p in pids if dcpkit.Process(p).ppid not in pids]

    @property
    def cache(self):
        return os.path.join(self.env["XDG_CACHE_HOME"], "deltachat-push")

    def server(self, statuses=(), default="200", host="127.0.0.1"):
        s = Server(host=host, statuses=statuses, default=default).start()
        self.servers.append(s)
        return s

    def cmd(self, args, wrap=True):
        return (WRAPPER if wrap else []) + [BINARY] + list(args)

    def run_bin(self, args, stdin=b"", timeout=30, env=None, wrap=True):
        """Run the binary; stdin is bytes (sent through a pipe), a path
        (opened as a regular file) or None (/dev/null)."""
        cmd = self.cmd(args, wrap)
        e = dict(self.env)
        e.update(env or {})
        t0 = time.monotonic()
        if isinstance(stdin, str):
            with open(stdin, "rb") as f:
                p = subprocess.run(cmd, stdin=f, capture_output=True,
                                   env=e, timeout=timeout * SLOW)
        elif stdin is None:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                               capture_output=True, env=e,
                               timeout=timeout * SLOW)
        else:
            p = subprocess.run(cmd, input=stdin, capture_output=True, env=e,
                               timeout=timeout * SLOW)
        r = Result.decoded(p, time.monotonic() - t0)
        self.assertIn(r.returncode, (0, 75), "exit code not 0/75: %r" % r)
        return r

    def assertDone(self, r):
        """Exit 0 with nothing on stderr: what getmail counts as delivered."""
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stderr, "", r)

    def assertExactRequest(self, req, port, token=TOKEN):
        """The exact bytes of a push: POST /notify, these headers, the token."""
        head, _, body = req.raw.partition(b"\r\n\r\n")
        self.assertEqual(body, token.encode())
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"POST /notify HTTP/1.1")
        self.assertEqual(sorted(lines[1:]), sorted([
            b"Host: 127.0.0.1:%d" % port,
            b"User-Agent: deltachat-push/1.0.0",
            b"Accept: */*",
            b"Content-Type: application/octet-stream",
            b"Content-Length: %d" % len(token)]))

    def assertTempfail(self, r):
        """Exit 75 with exactly one line on stderr that says why."""
        self.assertEqual(r.returncode, 75, r)
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r)
        self.assertTrue(lines[0].startswith("deltachat-push: "), r)

    def write(self, name, content, mode=0o600):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.chmod(path, mode)
        return path


class TapResult(unittest.TextTestResult):
    """One TAP point per test method; failures of subTests count for it."""

    tap = None  # the dcpkit.Tap that main() gives the run

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.diag = []

    def startTest(self, test):
        super().startTest(test)
        self.diag = []

    def _note(self, test, err):
        self.diag += self._exc_info_to_string(err, test).splitlines()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.diag.append("in %s:" % subtest.id().split(".", 1)[-1])
            self._note(subtest, err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.diag.append("SKIP " + reason)

    def stopTest(self, test):
        super().stopTest(test)
        name = test.id().split(".", 1)[-1]
        if self.diag[:1] and self.diag[0].startswith("SKIP "):
            self.tap.skip(name, self.diag[0][len("SKIP "):])
        else:
            self.tap.ok(not self.diag, name, "\n".join(self.diag))


def main():
    """Run the calling module's tests as TAP: `prog BINARY [-k PATTERN]`."""
    global BINARY
    args = sys.argv[1:]
    if args and not args[0].startswith("-"):
        BINARY = os.path.abspath(args.pop(0))
    if not BINARY or not os.access(BINARY, os.X_OK):
        print("Bail out! no deltachat-push binary given (argv[1] or DCP_BINARY)")
        sys.exit(1)
    if getattr(sys.modules["__main__"], "NEEDS_TEST_HOOKS", False):
        dcpkit.require_test_hooks(BINARY)
    loader = unittest.TestLoader()
    if "-k" in args:
        loader.testNamePatterns = ["*%s*" % args[args.index("-k") + 1]]
    suite = loader.loadTestsFromModule(sys.modules["__main__"])
    TapResult.tap = dcpkit.Tap()
    TapResult.tap.plan(suite.countTestCases())
    with open(os.devnull, "w") as devnull:
        result = unittest.TextTestRunner(stream=devnull,
                                         resultclass=TapResult).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
