# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers every test program shares: the binary tests (dcptest.py), the
caller tests (callers/harness.py), the TLS fixtures (tlstest.py) and the
benchmark: ports and waits, messages, the result of a command, the
processes in /proc, TAP output.  Only the standard library, so that a copy
of the harness run as another user can import it."""

import datetime
import email.utils
import os
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    """A loopback port nothing listens on now (a connection is refused
    until something binds it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, step=0.05):
    """Call pred until it returns a true value or timeout seconds have
    passed; return its last value (true: the condition came in time)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def wait_port(port, timeout=15):
    """Wait until something accepts connections on the loopback port;
    whether it did in time."""
    def accepts():
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False
    return wait_until(accepts, timeout)


def has_test_hooks(binary):
    """Whether binary is the test build (deltachat-push-test), which reads
    DCP_RETRY_SCHEDULE: a schedule it cannot parse is then a configuration
    error, while the installed program ignores the variable."""
    with tempfile.TemporaryDirectory(prefix="dcp-hooks-") as tmp:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "XDG_CACHE_HOME": tmp, "XDG_CONFIG_HOME": tmp,
               "DCP_RETRY_SCHEDULE": "not-a-schedule"}
        p = subprocess.run([binary, "--dry-run", "-u", "http://127.0.0.1:9/notify",
                            "hooks-probe-token"],
                           input=b"From: a@example.org\n\nx\n", capture_output=True,
                           env=env, timeout=60)
    return p.returncode == 75 and b"DCP_RETRY_SCHEDULE" in p.stderr


def require_test_hooks(binary):
    """A TAP "Bail out!" unless binary is the test build."""
    if not has_test_hooks(binary):
        raise SystemExit("Bail out! %s ignores DCP_RETRY_SCHEDULE: these tests need the "
                         "test build, deltachat-push-test (meson builds it beside "
                         "deltachat-push)" % binary)


# ---------------------------------------------------------------- messages

def date(t=None):
    """An RFC 5322 date in UTC ("Sun, 22 Nov 2026 10:00:00 +0000") for the
    time t (default now), as a Date: or Received: field carries it."""
    t = time.time() if t is None else t
    return email.utils.format_datetime(
        datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc))


def message_id(tag, domain="example.org"):
    """A Message-ID no other message has: <TAG-RANDOM@DOMAIN>."""
    return "<%s-%s@%s>" % (tag, os.urandom(6).hex(), domain)


def message(fields, body, eol="\n"):
    """A message as bytes: the header fields ("Name: value", a folded one
    with "\n" inside), an empty line, the body; every line ends in eol."""
    head = "".join(f.replace("\n", eol) + eol for f in fields)
    return (head + eol + body.replace("\n", eol)).encode()


# ---------------------------------------------------------------- results

class Result:
    """How a command ended: returncode (None if it was killed at its time
    limit: timed_out), stdout and stderr (bytes, or str if decoded) and
    the seconds it took."""

    def __init__(self, returncode, stdout, stderr, elapsed=0.0,
                 timed_out=False):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.elapsed, self.timed_out = elapsed, timed_out

    @classmethod
    def decoded(cls, proc, elapsed):
        """From a subprocess.CompletedProcess, its output decoded as UTF-8."""
        return cls(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                   proc.stderr.decode("utf-8", "replace"), elapsed)

    def __repr__(self):
        return "rc=%r%s stdout=%r stderr=%r elapsed=%.2fs" % (
            self.returncode, " (timed out)" if self.timed_out else "",
            self.stdout[-2000:], self.stderr[-2000:], self.elapsed)


# ---------------------------------------------------------------- processes

class Process:
    """One process in /proc, its files read when asked.  What cannot be
    read (the process is gone, or is not ours to look into) is empty or
    None: a process is never found by its name, only by what these say."""

    def __init__(self, pid):
        self.pid = pid

    def _read(self, name):
        try:
            with open("/proc/%d/%s" % (self.pid, name), "rb") as f:
                return f.read()
        except OSError:
            return b""

    @staticmethod
    def _split(data):
        parts = data.split(b"\0")
        if parts[-1] == b"":
            parts.pop()
        return parts

    @property
    def cmdline(self):
        """The raw command line (a process may have rewritten it as a title)."""
        return self._read("cmdline")

    @property
    def argv(self):
        return self._split(self.cmdline)

    @property
    def environ(self):
        """["NAME=value", ...] as bytes."""
        return self._split(self._read("environ"))

    @property
    def ppid(self):
        try:
            return int(self._read("stat").rsplit(b")", 1)[1].split()[1])
        except (ValueError, IndexError):
            return None

    @property
    def uid(self):
        try:
            return os.stat("/proc/%d" % self.pid).st_uid
        except OSError:
            return None

    @property
    def exe(self):
        try:
            return os.readlink("/proc/%d/exe" % self.pid)
        except OSError:
            return None


def processes():
    """Every process but this one, as Process."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            yield Process(int(d))


# ---------------------------------------------------------------- TAP

class Tap:
    """TAP output: numbered ok/not ok lines with "# " diagnostics; the
    plan printed first (plan()) or at the end (finish())."""

    def __init__(self):
        self.n = 0
        self.failed = 0
        self.planned = False
        self.lock = threading.Lock()

    def plan(self, count):
        print("1..%d" % count, flush=True)
        self.planned = True

    def ok(self, cond, desc, diag=None):
        """One test point: ok when cond is true, else not ok followed by
        diag.  Returns cond."""
        with self.lock:
            self.n += 1
            if cond:
                print("ok %d - %s" % (self.n, desc), flush=True)
            else:
                self.failed += 1
                print("not ok %d - %s" % (self.n, desc), flush=True)
                if diag:
                    self.diag(diag)
        return cond

    def skip(self, desc, reason):
        with self.lock:
            self.n += 1
            print("ok %d - %s # SKIP %s" % (self.n, desc, reason), flush=True)

    def diag(self, text):
        for line in str(text).splitlines() or [""]:
            print("# " + line, flush=True)

    def info(self, text):
        """A measured figure, printed as a TAP comment."""
        self.diag(text)

    def finish(self):
        """The plan, unless printed first; the exit code: 1 if a point
        failed or there was none."""
        if not self.planned:
            print("1..%d" % self.n, flush=True)
        return 1 if self.failed or self.n == 0 else 0
