# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers every test program shares: the binary tests (dcptest.py), the
caller tests (callers/harness.py), the TLS fixtures (tlstest.py) and the
benchmark.  Only the standard library, so that a copy of the harness run
as another user can import it."""

import os
import socket
import subprocess
import tempfile
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
