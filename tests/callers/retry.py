#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Owed pushes under real callers: the default --retry=background.

When the notification proxy is down, a run exits 0 at once and a detached
process retries the push.  For getmail --idle that means it never leaves
IDLE (with exit 75 it would exit 127 and need a restart); for Dovecot
sieve, which never retries a delivery agent, that the push is not lost.
The runs here get a shortened schedule (DCP_RETRY_SCHEDULE, through the
harness's wrapper) so the scenarios stay short: DELTACHAT-PUSH is the test
build, deltachat-push-test.

    retry.py getmail-retry|sieve-retry DELTACHAT-PUSH
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (puts tests/ on the path)
import dcpkit  # noqa: E402
import run  # noqa: E402
from harness import wait_until  # noqa: E402
from httpd import Server  # noqa: E402

SCHEDULE = "5,15,25,35"
DOWN = 30  # seconds the proxy is down


def owed_gone(w):
    return not any(b"--trailing-child" in dcpkit.Process(pid).argv
                   for pid in w.leftovers())


def detached_log(w):
    try:
        with open(w.path("detached.log")) as f:
            return f.read()
    except OSError:
        return ""


def proxy_down(w):
    """Stop the endpoint: connections to its port are refused."""
    port = w.server.port
    w.server.stop()
    return port


def proxy_up(w, port):
    w.server = Server(port=port).start()
    return w.server


def scenario_getmail_retry(w, tap):
    import harness as h
    w.set_retry("background", SCHEDULE)
    srv = w.start_server()
    w.start_dovecot()
    sup = run.Supervisor(w, run.getmail_idle(w)).start()
    try:
        _, m = h.message("before the outage")
        w.deliver(m)
        tap.ok(srv.wait_for(1, 20) == 1, "getmail idles: a message gives a push",
               "requests: %d" % len(srv.requests))

        port = proxy_down(w)
        runs_before = len(w.runs())
        _, m = h.message("while the proxy is down")
        t_down = time.time()
        w.deliver(m)
        ran = wait_until(lambda: len(w.runs()) > runs_before, 20)
        new = w.runs()[runs_before:]
        tap.ok(ran and new[0][2] == 0 and new[0][1] - new[0][0] < 2,
               "proxy down: the run exits 0 at once", "runs: %r" % new)
        time.sleep(max(0, t_down + DOWN - time.time()))  # the outage
        tap.ok(sup.exits() == [],
               "getmail stayed in IDLE for the %d s the proxy was down "
               "(no exit 127, no restart)" % DOWN, "exits: %r" % sup.exits())
        srv = proxy_up(w, port)
        t_up = time.time()
        n = srv.wait_for(1, 15)
        tap.ok(n == 1, "the push arrives after the proxy is back",
               "requests since: %d" % n)
        if n:
            tap.info("getmail, proxy down %d s: push %.1f s after recovery, "
                     "%.1f s after delivery (schedule %s)"
                     % (DOWN, srv.requests[0].time - t_up,
                        srv.requests[0].time - t_down, SCHEDULE))
        tap.ok(wait_until(lambda: owed_gone(w), 5), "the owed push's process "
               "ended", "log: %s" % detached_log(w))
        tap.ok(sup.exits() == [] and all(r[2] == 0 for r in w.runs()),
               "getmail never exited; every run exited 0",
               "exits: %r runs: %r" % (sup.exits(), w.runs()))
    finally:
        sup.stop()


def scenario_sieve_retry(w, tap):
    import harness as h
    w.set_retry("background", "2,4,8")
    w.start_server()
    w.start_dovecot()
    os.symlink(w.wrapper, os.path.join(w.sieve_bin, "deltachat-push"))
    w.example("deltachat-push.sieve", [(h.PH_HOME, w.home)],
              dest=os.path.join(w.home, ".dovecot.sieve"))
    port = proxy_down(w)
    before = w.maildir_count()
    _, m = h.message("sieve, proxy down")
    t0, r = w.deliver(m)
    took = time.time() - t0
    tap.ok(r.returncode == 0 and w.maildir_count() == before + 1 and took < 2,
           "proxy down: dovecot-lda delivers and exits 0 at once",
           "%r; took %.2f s" % (r, took))
    tap.ok(w.runs() and w.runs()[-1][2] == 0, "... deltachat-push exited 0",
           "runs: %r" % w.runs())
    time.sleep(3)  # the outage: the proxy stays down 3 s
    srv = proxy_up(w, port)
    t_up = time.time()
    n = srv.wait_for(1, 10)
    tap.ok(n == 1 and srv.requests[0].body == h.TOKEN.encode(),
           "the push arrives after the proxy is back", "requests: %d" % n)
    if n:
        tap.info("sieve, proxy down 3 s: push %.1f s after recovery (schedule "
                 "2,4,8)" % (srv.requests[0].time - t_up))
    tap.ok(wait_until(lambda: owed_gone(w), 5), "the owed push's process ended",
           "log: %s" % detached_log(w))
    tap.ok(detached_log(w).count("settled on try") == 1,
           "its log says how it ended", detached_log(w))


# run.inner() finds a scenario as run.scenario_<name>
for name, base, fn in (("getmail-retry", "getmail", scenario_getmail_retry),
                       ("sieve-retry", "sieve", scenario_sieve_retry)):
    run.TOOLS[name] = run.TOOLS[base]
    run.LIMITS[name] = 120
    setattr(run, "scenario_" + name.replace("-", "_"), fn)


def main(argv):
    if len(argv) >= 5 and argv[1] == "--inner":
        sys.path.insert(0, os.path.join(argv[4], "harness"))
        return run.inner(argv[2], argv[3], argv[4])
    if len(argv) != 3 or argv[1] not in ("getmail-retry", "sieve-retry"):
        print("usage: retry.py getmail-retry|sieve-retry DELTACHAT-PUSH", file=sys.stderr)
        return 2
    if harness.skip_missing_tools(run.TOOLS[argv[1]]):
        return 0
    dcpkit.require_test_hooks(argv[2])
    return run.outer(argv[1], os.path.abspath(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
