# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers every test program shares: the binary tests (dcptest.py), the
caller tests (callers/harness.py), the TLS fixtures (tlstest.py) and the
benchmark.  Only the standard library, so that a copy of the harness run
as another user can import it."""

import os
import subprocess
import tempfile


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
