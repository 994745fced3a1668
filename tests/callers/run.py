#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run deltachat-push under the real programs that call it.

    run.py SCENARIO /path/to/deltachat-push

SCENARIO is one of: getmail fetchmail procmail maildrop sieve systemd.
Output is TAP.  Each scenario works in a fresh temporary directory, talks
only to 127.0.0.1, uses the files in examples/ (placeholders replaced by
plain string substitution), and starts its own Dovecot from a config file
of its own (never /etc/dovecot).

When started as root, it copies what it needs into the temporary
directory, hands that to the unprivileged user "nobody" and runs itself
again as nobody (setpriv): getmail refuses to run commands as root, and
no caller should run as root.  Started as any other user, it runs as that
user.  Every process started gets its own process group and is killed at
the end; the outer (root) process kills them too if the inner one dies.

Set DCP_CALLERS_KEEP=1 to keep the temporary directory for inspection.
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import harness
from harness import wait_until

SCENARIOS = ("getmail", "fetchmail", "procmail", "maildrop", "sieve",
             "systemd", "getmail-tls")
TOOLS = {
    "getmail": ["getmail", "/usr/sbin/dovecot", "/usr/lib/dovecot/dovecot-lda",
                "openssl", "/usr/bin/time"],
    "fetchmail": ["fetchmail", "/usr/sbin/dovecot",
                  "/usr/lib/dovecot/dovecot-lda", "openssl", "/usr/bin/time"],
    "procmail": ["procmail", "/usr/bin/time"],
    "maildrop": ["maildrop", "/usr/bin/time"],
    "sieve": ["/usr/sbin/dovecot", "/usr/lib/dovecot/dovecot-lda",
              "/usr/lib/dovecot/modules/sieve/lib90_sieve_extprograms_plugin.so",
              "openssl", "/usr/bin/time"],
    "systemd": ["systemd-analyze", "getmail"],
    "getmail-tls": ["getmail", "/usr/sbin/dovecot", "/usr/lib/dovecot/dovecot-lda",
                    "openssl"],
}
# Whole-scenario time limits (seconds); meson's own timeout is larger.
LIMITS = {"getmail": 270, "fetchmail": 90, "procmail": 60, "maildrop": 60,
          "sieve": 60, "systemd": 60, "getmail-tls": 120}

HERE = os.path.dirname(os.path.abspath(__file__))


def find_examples():
    for d in (os.path.join(HERE, "examples"),
              os.path.join(os.path.dirname(os.path.dirname(HERE)),
                           "examples")):
        if os.path.isfile(os.path.join(d, "getmailrc")):
            return d
    raise SystemExit("Bail out! examples/ not found from %s" % HERE)


# ================================================================ outer

def outer(scenario, binary, prepare=None):
    """prepare(tmp), when given, runs as root before tmp is handed over
    and returns a function run at the very end (after every process of
    the inner run is killed)."""
    if os.geteuid() != 0:
        return inner(scenario, binary, tempfile.mkdtemp(prefix="dcp-callers-"),
                     own_tmp=True)
    # Root: prepare a directory nobody can use, then become nobody.
    import pwd
    nobody = pwd.getpwnam("nobody")
    tmp = tempfile.mkdtemp(prefix="dcp-callers-")
    finish = None
    try:
        os.makedirs(os.path.join(tmp, "harness", "examples"))
        # run.py, harness.py and the scenario files that import them
        for name in (n for n in os.listdir(HERE) if n.endswith(".py")):
            shutil.copy(os.path.join(HERE, name),
                        os.path.join(tmp, "harness", name))
        for name in ("dcpkit.py", "httpd.py", "tlstest.py"):
            shutil.copy(os.path.join(os.path.dirname(HERE), name),
                        os.path.join(tmp, "harness", name))
        ex = find_examples()
        for name in os.listdir(ex):
            shutil.copy(os.path.join(ex, name),
                        os.path.join(tmp, "harness", "examples", name))
        real = os.path.join(tmp, "deltachat-push.real")
        if scenario != "systemd":
            shutil.copy(binary, real)
            os.chmod(real, 0o755)
        if prepare is not None:
            finish = prepare(tmp)
        for root, dirs, files in os.walk(tmp):
            for n in dirs + files:
                os.lchown(os.path.join(root, n), nobody.pw_uid,
                          nobody.pw_gid)
        os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
        argv = ["setpriv", "--reuid", str(nobody.pw_uid), "--regid",
                str(nobody.pw_gid), "--clear-groups", "--",
                "/usr/bin/python3",
                os.path.join(tmp, "harness", os.path.basename(sys.argv[0])),
                "--inner", scenario, real, tmp]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
               "HOME": tmp, "LANG": "C.UTF-8", "TZ": "UTC"}
        if os.environ.get("DCP_CALLERS_KEEP"):
            env["DCP_CALLERS_KEEP"] = "1"
        p = subprocess.Popen(argv, env=env, cwd=tmp, start_new_session=True)

        def on_term(signum, frame):
            kill_recorded(tmp)
            harness.killpg(p.pid, signal.SIGKILL)
            raise SystemExit(1)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        try:
            rc = p.wait(LIMITS[scenario] + 30)
        except subprocess.TimeoutExpired:
            print("not ok - scenario %s did not finish in %d s"
                  % (scenario, LIMITS[scenario] + 30), flush=True)
            rc = 1
        harness.killpg(p.pid, signal.SIGKILL)
        kill_recorded(tmp)
        return rc
    finally:
        if finish is not None:
            finish()
        if os.environ.get("DCP_CALLERS_KEEP"):
            print("# kept %s" % tmp, flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def kill_recorded(tmp):
    """Kill the process groups the inner run recorded (leaders only are
    recorded; each was started with its own session)."""
    try:
        with open(os.path.join(tmp, "pgids")) as f:
            for line in f:
                if line.strip().isdigit():
                    harness.killpg(int(line), signal.SIGKILL)
    except OSError:
        pass


# ================================================================ inner

def inner(scenario, binary, tmp, own_tmp=False):
    harness.EXAMPLES = find_examples()
    tap = harness.Tap()
    procs = harness.Procs(tmp)
    world = None
    holder = []  # the World, once there is one

    def kill_everything():
        procs.stop_all()
        for w in holder:
            w.kill_leftovers()

    def watchdog():
        # The scenario's own time bound: kill everything we started.
        if not done.wait(LIMITS[scenario]):
            tap.ok(False, "scenario %s finished within %d s"
                   % (scenario, LIMITS[scenario]))
            kill_everything()
            os._exit(tap.finish() or 1)
    done = threading.Event()
    threading.Thread(target=watchdog, daemon=True).start()

    def on_term(signum, frame):
        kill_everything()
        os._exit(1)
    signal.signal(signal.SIGTERM, on_term)

    try:
        missing = harness.missing_tools(TOOLS[scenario])
        if not tap.ok(not missing, "tools for %s are installed" % scenario,
                      "missing: %s (CI must install them)" % missing):
            return tap.finish()
        if scenario != "systemd" and not tap.ok(
                os.access(binary, os.X_OK),
                "deltachat-push binary %s is executable" % binary):
            return tap.finish()
        world = harness.World(tmp, binary, procs, tap)
        holder.append(world)
        globals()["scenario_" + scenario.replace("-", "_")](world, tap)
    except Exception:
        import traceback
        tap.ok(False, "scenario %s raised an exception" % scenario,
               traceback.format_exc())
    finally:
        done.set()
        procs.stop_all()
        if world is not None:
            left = world.kill_leftovers()
            if left:
                tap.diag("killed %d deltachat-push process(es) still running "
                         "at the end: %r" % (len(left), left))
            if world.server is not None:
                world.server.stop()
        if tap.failed and world is not None:
            dump_logs(world, tap)
        if own_tmp and not os.environ.get("DCP_CALLERS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        elif own_tmp:
            tap.diag("kept %s" % tmp)
    return tap.finish()


def dump_logs(world, tap):
    for name in ("runs.log", "getmail.log", "supervisor.log",
                 "fetchmail.log", "procmail.log", "dovecot/dovecot.log"):
        p = world.path(name)
        if os.path.exists(p):
            tap.diag("---- %s (tail)" % name)
            tap.diag(harness.tail(p, 30))


# ================================================================ trailing

def trailing_check(w, tap, srv, name, deliver):
    """The default rate limit (a bucket of 3 pushes, one back every 10 s):
    a reply 2 s after a push (an automatic message, say a read receipt,
    then the answer) is pushed at once, and so is a third message a second
    later; a fourth finds the bucket empty and starts a trailing push that
    outlives the run, due when the bucket has a push again, 10 s after the
    first.
    The caller must not wait for it.  deliver(subject) delivers one
    message through the caller and returns how long the caller took, or
    None when that cannot be seen."""
    w.set_window(10)
    try:
        base = len(srv.requests)
        deliver("trailing A")
        ok1 = srv.wait_for(base + 1, 5) > base
        tap.ok(ok1, "%s, window 10 s: the first message is pushed at once"
               % name, "pushes: %d" % (len(srv.requests) - base))
        t_a = srv.requests[base].time if ok1 else time.time()
        for i, subject in enumerate(("trailing B", "trailing C"), 2):
            time.sleep(max(0, t_a + i - time.time()))
            t = time.time()
            deliver(subject)
            n = srv.wait_for(base + i, 5)
            delay = srv.requests[base + i - 1].time - t if n >= base + i else -1
            tap.ok(n >= base + i and delay < 3,
                   "%s: message %d, %d s after the first: pushed at once"
                   % (name, i, i),
                   "pushes %d, delivery->push %.2f s" % (n - base, delay))
            tap.info("%s: message %d, %d s after the first: delivery->push %.2f s"
                     % (name, i, i, delay))
        time.sleep(max(0, t_a + 4 - time.time()))
        runs_before = len(w.runs())
        took = deliver("trailing D")
        wait_until(lambda: len(w.runs()) > runs_before, 15)
        run_d = w.runs()[runs_before] if len(w.runs()) > runs_before else None
        tap.ok(run_d is not None and run_d[2] == 0 and
               run_d[1] - run_d[0] < 3 and len(srv.requests) == base + 3,
               "%s: a fourth message, the bucket empty: deltachat-push "
               "exits 0 at once, no push yet" % name,
               "run: %r, pushes: %d" % (run_d, len(srv.requests) - base))
        if took is not None:
            tap.ok(took < 3, "%s: the caller is not held up by the "
                   "trailing push left behind" % name,
                   "the caller took %.2f s" % took)
            tap.info("%s: caller took %.2f s for the message that found "
                     "the bucket empty" % (name, took))
        n = srv.wait_for(base + 4, 15)
        delay = srv.requests[base + 3].time - t_a if n >= base + 4 else -1
        tap.ok(n >= base + 4 and 8 <= delay <= 13,
               "%s: the trailing push arrives about 10 s after the first"
               % name, "pushes %d, delay %.1f s" % (n - base, delay))
        time.sleep(0.5)  # a fifth push would have come by now
        tap.ok(len(srv.requests) == base + 4, "%s: four pushes in all" % name,
               "pushes %d" % (len(srv.requests) - base))
        gone = wait_until(lambda: not w.leftovers(), 5)
        tap.ok(gone, "%s: no deltachat-push process left once the trailing "
               "push went out" % name, "left: %r" % w.leftovers())
    finally:
        os.unlink(w.path("window"))


def into_inbox(w):
    """deliver() for trailing_check when the caller fetches over IMAP:
    deliver into the INBOX it idles on; how long it took is not seen."""
    def deliver(subject):
        _, m = harness.message(subject)
        w.deliver(m)
        return None
    return deliver


def deliver_existing_mail(w):
    """Mail in the INBOX before the caller's first start: one read, one
    unread but 2 days old, one recent and unread.  Returns the read one's
    Message-ID."""
    mid_seen, m = harness.message("old, already read")
    w.deliver(m)
    w.mark_seen(mid_seen)
    _, m = harness.message("old, unread, 2 days", received_ago=2 * 86400)
    w.deliver(m)
    _, m = harness.message("recent, unread")
    w.deliver(m)
    return mid_seen


# ================================================================ getmail

class Supervisor:
    """Restart getmail like systemd does with Restart=always (RestartSec
    shortened to 1 s to keep the test short; the unit uses 10 s)."""

    def __init__(self, world, argv, restart_sec=1.0, max_starts=60):
        self.world = world
        self.argv = argv
        self.restart_sec = restart_sec
        self.max_starts = max_starts
        self.starts = []   # (start time, exit code or None)
        self.stopping = threading.Event()
        self.proc = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def loop(self):
        log = self.world.path("getmail.log")
        for _ in range(self.max_starts):
            if self.stopping.is_set():
                return
            with self.lock:
                if self.stopping.is_set():
                    return
                self.proc = self.world.procs.start(
                    self.argv, log=log,
                    env=self.world.env(PYTHONUNBUFFERED="1"),
                    cwd=self.world.home)
                self.starts.append([time.time(), None])
            rc = self.proc.wait()
            self.starts[-1][1] = rc
            with open(self.world.path("supervisor.log"), "a") as f:
                f.write("%.3f getmail exited %s\n" % (time.time(), rc))
            if self.stopping.wait(self.restart_sec):
                return

    def exits(self):
        return [rc for (_, rc) in self.starts if rc is not None]

    def stop(self):
        with self.lock:
            self.stopping.set()
            p = self.proc
        if p is not None:
            self.world.procs.stop(p, wait=5)
        self.thread.join(10)


def getmail_idle(w, port=None, mda=None):
    """examples/getmailrc for our Dovecot (or whatever listens on port),
    delivering to mda (default: our wrapper); returns the command line
    that runs getmail with it."""
    import harness as h
    gdir = w.path("getmaildir")
    os.makedirs(gdir, mode=0o700)
    pwcmd = w.path("bin", "password")
    with open(pwcmd, "w") as f:
        f.write("#!/bin/sh\necho '%s'\n" % h.PASSWORD)
    os.chmod(pwcmd, 0o700)
    w.example("getmailrc", [
        ("server = " + h.PH_HOST, "server = 127.0.0.1"),
        ("port = 993", "port = %d" % (port or w.imaps_port)),
        ("username = " + h.PH_USER, "username = " + h.USER),
        (h.PH_CA, w.cert),
        (h.PH_PASSWORD_CMD, pwcmd),
        (h.PH_BIN, mda or w.wrapper),
    ], dest=os.path.join(gdir, "deltachat-push"))
    # As the unit does: getmail --rcfile %i --idle INBOX (plus --getmaildir,
    # since HOME's ~/.config/getmail is the default we replace).
    return ["getmail", "--getmaildir", gdir, "--rcfile", "deltachat-push",
            "--idle", "INBOX"]


def scenario_getmail(w, tap):
    srv = w.start_server()
    w.start_dovecot()
    argv = getmail_idle(w)

    # --- mail that is already there before the first start
    mid_seen = deliver_existing_mail(w)

    sup = Supervisor(w, argv).start()
    try:
        getmail_first_pass(w, tap, srv, sup)
        getmail_while_idling(w, tap, srv, mid_seen)
        # the default window: a trailing push outlives its run
        trailing_check(w, tap, srv, "getmail", into_inbox(w))
        tap.ok(sup.exits() == [], "getmail still running, no errors",
               "exits: %r" % sup.exits())

        getmail_endpoint_recovers(w, tap, srv, sup)
        getmail_retry_cap(w, tap, srv)
        getmail_large_message(w, tap, srv)
        getmail_latency(w, tap, srv)
        getmail_bursts(w, tap, srv, sup, mid_seen)
    finally:
        sup.stop()



def getmail_first_pass(w, tap, srv, sup):
    """getmail's first start, with mail already in the INBOX: it hands over
    the unread messages it has not seen, then idles."""
    # getmail's first pass hands over unread mail it has not seen yet.
    wait_until(lambda: len(w.runs()) >= 2, 20)
    tap.ok(w.wait_idle(20), "getmail's first pass is over: it idles")
    runs = w.runs()
    tap.ok(len(runs) == 2,
           "first start: only the 2 unread messages are handed over "
           "(imap_search = UNSEEN skips the read one)",
           "runs: %r" % runs)
    tap.ok(len(srv.requests) == 1,
           "first start: 1 push (recent unread); the unread one with a "
           "2-day-old Received is skipped by --max-age",
           "requests: %d" % len(srv.requests))
    tap.info("first run with pre-existing mail: read mail is not handed "
             "over; unread mail is (%d runs), and pushed only if younger "
             "than --max-age (%d push)" % (len(runs), len(srv.requests)))
    if srv.requests:
        tap.ok(srv.requests[0].body == harness.TOKEN.encode(),
               "push body is exactly the token",
               "body: %r" % srv.requests[0].body)
    tap.ok(all(r[2] == 0 for r in runs), "all runs exit 0",
           "runs: %r" % runs)
    tap.ok(all(r[4] == "file" for r in runs),
           "getmail gives deltachat-push a regular file on stdin",
           "runs: %r" % runs)
    tap.ok(sup.exits() == [], "getmail still running (in IDLE)",
           "exits: %r" % sup.exits())


def getmail_while_idling(w, tap, srv, mid_seen):
    """One message delivered while getmail idles: one push; what getmail
    handed over stays unseen on the server."""
    base = len(srv.requests)
    mid1, m = harness.message("idle 1")
    t0, r = w.deliver(m)
    tap.ok(r.returncode == 0, "dovecot-lda delivered", repr(r))
    n = srv.wait_for(base + 1, 15)
    tap.ok(n == base + 1, "a message delivered while idling gives one "
           "push", "requests: %d, expected %d" % (n, base + 1))
    w.wait_idle(20)  # the pass, and the run in it, are over
    tap.ok(len(srv.requests) == base + 1, "and only one",
           "requests: %d" % len(srv.requests))
    fl = w.flags()
    seen = [k for k, v in fl.items() if "\\Seen" in v and k != mid_seen]
    tap.ok(not seen and mid1 in fl,
           "messages handed to deltachat-push stay unseen on the server",
           "flags: %r" % fl)


def getmail_endpoint_recovers(w, tap, srv, sup):
    """The endpoint answers 503 for a while (longer than one run keeps
    trying: --timeout, 8 s), then recovers: the run exits 75, getmail
    exits and is restarted, the message is pushed."""
    base = len(srv.requests)
    base_exits = len(sup.exits())
    runs_before = len(w.runs())
    srv.set_statuses([], default="503")
    _, m = harness.message("503 then ok")
    t0, r = w.deliver(m)
    failed = wait_until(lambda: any(x[2] == 75 for x in
                                    w.runs()[runs_before:]), 20)
    tap.ok(failed, "endpoint 503: the run exits 75",
           "runs: %r" % w.runs()[runs_before:])
    srv.set_statuses([], default="200")
    t_up = time.time()
    ok = wait_until(lambda: any(q.time > t_up for q in
                                srv.requests[base:]), 30)
    w.wait_idle(20)  # the restarted getmail's pass, and its run, are over
    ex = sup.exits()[base_exits:]
    tap.ok(len(ex) >= 1 and ex[0] != 0,
           "getmail --idle exited after the delivery error and was "
           "restarted", "getmail exits since: %r" % ex)
    tap.ok(ok, "the push arrives once the endpoint recovers",
           "requests since: %d" % (len(srv.requests) - base))
    if ok:
        ok_req = [q for q in srv.requests[base:] if q.time > t_up][0]
        tap.info("503 recovery: %d tries answered 503 in the failed run; "
                 "push %.1f s after the endpoint recovered, %.1f s after "
                 "delivery (getmail restarted after %.0f s here; the "
                 "unit uses 10 s)"
                 % (len([q for q in srv.requests[base:]
                         if q.time <= t_up]),
                    ok_req.time - t_up, ok_req.time - t0,
                    sup.restart_sec))
    rcs = [x[2] for x in w.runs()[runs_before:]]
    tap.ok(rcs == [75, 0], "deltachat-push exits 75, then 0",
           "exit codes: %r" % rcs)


def getmail_retry_cap(w, tap, srv):
    """The endpoint down for good: getmail's tries stop after the cap, and
    the next message is pushed once the endpoint is back."""
    srv.set_statuses([], default="503")
    base = len(srv.requests)
    runs_before = len(w.runs())
    _, m = harness.message("503 forever")
    t0, r = w.deliver(m)
    wait_until(lambda: len(w.runs()) - runs_before >= 5, 80)
    w.wait_idle(20)  # no run after the 5th
    rcs = [x[2] for x in w.runs()[runs_before:]]
    tap.ok(rcs == [75, 75, 75, 75, 0],
           "503 forever: 5 runs, the 5th gives up with exit 0",
           "exit codes: %r" % rcs)
    tap.info("retry cap with getmail: %d runs over %.1f s, then given up"
             % (len(rcs), time.time() - t0))
    srv.set_statuses([], default="200")
    base = len(srv.requests)
    runs_before = len(w.runs())
    _, m = harness.message("after the outage")
    w.deliver(m)
    n = srv.wait_for(base + 1, 20)
    w.wait_idle(20)
    rcs = [x[2] for x in w.runs()[runs_before:]]
    tap.ok(n == base + 1 and len(srv.requests) == base + 1,
           "getmail carried on: the next message is pushed once, the "
           "given-up one is not retried",
           "requests since: %d, runs since: %r"
           % (len(srv.requests) - base, rcs))


def getmail_large_message(w, tap, srv):
    """A 40 MB message, and a small one that arrives while getmail is still
    busy fetching it: peak RSS bounded, each pushed exactly once."""
    small_rss = max(x[3] for x in w.runs())
    base = len(srv.requests)
    runs_before = len(w.runs())
    _, m = harness.message("40 MB", size=40 * 1024 * 1024)
    t0, r = w.deliver(m, timeout=60)
    tap.ok(r.returncode == 0, "dovecot-lda delivered a 40 MB message", repr(r))
    # Dovecot tells IDLE clients about new mail 0.5 s after it came;
    # at 1 s getmail is busy downloading the 40 MB.
    time.sleep(max(0, t0 + 1.0 - time.time()))
    _, m = harness.message("arrives during getmail's pass")
    t1, r = w.deliver(m)
    n = srv.wait_for(base + 1, 60)
    tap.ok(n >= base + 1, "the 40 MB message gives a push",
           "requests: %d" % (n - base))
    wait_until(lambda: len(w.runs()) > runs_before, 10)
    big = w.runs()[runs_before:runs_before + 1]
    big_rss = max((x[3] for x in big), default=0)
    tap.ok(big and big[0][2] == 0, "deltachat-push exits 0 on it",
           "runs: %r" % big)
    tap.ok(0 < big_rss < 32 * 1024,
           "peak RSS on the 40 MB message stays bounded (< 32 MB)",
           "peak RSS %d KB (small messages: %d KB)" % (big_rss,
                                                      small_rss))
    tap.info("40 MB message: peak RSS %d KB (small messages: %d KB), "
             "run took %.3f s, push %.1f s after delivery"
             % (big_rss, small_rss, big[0][1] - big[0][0] if big else -1,
                srv.requests[base].time - t0 if n > base else -1))
    n = srv.wait_for(base + 2, 20)
    if n >= base + 2:
        tap.info("message delivered during getmail's pass: pushed "
                 "%.1f s after delivery" % (srv.requests[base + 1].time
                                            - t1))
    else:
        # getmail 6.18 re-SELECTs and IDLEs without looking for mail
        # that came in during its own pass: that mail waits for the
        # next change in the mailbox or the 300 s IDLE timeout.
        tn = time.time()
        _, m = harness.message("nudge after the 40 MB")
        w.deliver(m)
        n = srv.wait_for(base + 3, 15)
        tap.info("message delivered during getmail's pass: NOT pushed "
                 "within %.0f s (getmail idles without looking for it); "
                 "pushed %.1f s after the next delivery came in"
                 % (tn - t1, srv.requests[base + 1].time - tn
                    if n >= base + 2 else -1))
    tap.ok(wait_until(lambda: len(srv.requests) == n, 1) and
           n in (base + 2, base + 3),
           "every message around the 40 MB one pushed exactly once",
           "requests since: %d" % (len(srv.requests) - base))


def getmail_latency(w, tap, srv):
    """Latency from delivery to push over 20 messages, one at a time."""
    w.wait_idle(20)
    lat = []
    to_run = []
    in_run = []
    for i in range(20):
        base = len(srv.requests)
        runs_before = len(w.runs())
        _, m = harness.message("latency %d" % i)
        t0, r = w.deliver(m)
        if srv.wait_for(base + 1, 15) > base:
            lat.append(srv.requests[base].time - t0)
            if wait_until(lambda: len(w.runs()) > runs_before, 5):
                start = w.runs()[runs_before][0]
                to_run.append(start - t0)
                in_run.append(srv.requests[base].time - start)
        time.sleep(1.0)  # messages 1 s apart: one at a time, as measured
    tap.ok(len(lat) == 20, "20 messages one by one give 20 pushes",
           "pushes: %d" % len(lat))
    if lat:
        tap.info("latency delivery->push over %d messages: median "
                 "%.0f ms, min %.0f ms, max %.0f ms"
                 % (len(lat), statistics.median(lat) * 1000,
                    min(lat) * 1000, max(lat) * 1000))
    if to_run:
        tap.info("of which: delivery->deltachat-push started (Dovecot "
                 "IDLE notice + getmail fetch) median %.0f ms; "
                 "deltachat-push start->push median %.0f ms"
                 % (statistics.median(to_run) * 1000,
                    statistics.median(in_run) * 1000))
        tap.ok(statistics.median(lat) < 5,
               "median latency under 5 s",
               "median %.2f s" % statistics.median(lat))


def getmail_bursts(w, tap, srv, sup, mid_seen):
    """Bursts of 10 messages 100 ms apart, twice; at the end, still no
    message marked \\Seen by getmail."""
    for burst in (1, 2):
        burst_once(w, tap, srv, burst)
        w.wait_idle(20)  # every pass over, getmail idles again
    fl = w.flags()
    seen = [k for k, v in fl.items() if "\\Seen" in v and k != mid_seen]
    tap.ok(not seen, "still no message marked \\Seen by getmail",
           "seen: %r" % seen)
    restarts = [e for e in sup.exits()]
    tap.info("getmail exits over the whole run: %r" % restarts)


def scenario_getmail_tls(w, tap):
    """getmail --idle, the push over HTTPS: tests/httpd.py over TLS with a
    certificate from a test CA made here, trusted by deltachat-push through
    cacert= in its config file.  An untrusted certificate is a delivery
    error getmail retries, with nothing sent until the trust is fixed."""
    import harness as h
    import tlstest
    pki = tlstest.Pki(w.path("pki"))
    srv = w.server = h.Server(tls=tlstest.context(pki.good, pki.key)).start()
    w.set_url(srv.url)
    config = os.path.join(w.home, ".config", "deltachat-push", "config")

    def trust(ca):
        with open(config, "w") as f:
            f.write("[deltachat-push]\ncacert=%s\n" % ca)
    trust(pki.ca)
    w.start_dovecot()
    sup = Supervisor(w, getmail_idle(w)).start()
    try:
        tap.ok(w.wait_idle(20), "getmail idles after its first pass (an empty INBOX)")
        lat = []
        for i in range(5):
            base = len(srv.requests)
            t0, r = w.deliver(h.message("tls %d" % i)[1])
            if srv.wait_for(base + 1, 15) > base:
                lat.append(srv.requests[base].time - t0)
            w.wait_idle(15)
        tap.ok(len(lat) == 5 and len(srv.requests) == 5,
               "getmail over HTTPS: 5 messages, 5 pushes", "pushes: %d" % len(srv.requests))
        tap.ok(all(q.body == h.TOKEN.encode() and q.tls in ("TLSv1.2", "TLSv1.3")
                   for q in srv.requests), "each push is the token, over TLS",
               "requests: %r" % [(q.tls, q.body) for q in srv.requests])
        tap.ok([x[2] for x in w.runs()] == [0] * 5 and sup.exits() == [],
               "every run exits 0, getmail keeps idling",
               "runs: %r, getmail exits: %r" % (w.runs(), sup.exits()))
        if lat:
            tap.info("getmail over HTTPS: delivery to push median %.0f ms, max %.0f ms"
                     % (statistics.median(lat) * 1000, max(lat) * 1000))

        # the proxy's certificate is not trusted (another CA's file)
        trust(pki.other_ca)
        base, runs_before = len(srv.requests), len(w.runs())
        w.deliver(h.message("untrusted")[1])
        failed = wait_until(lambda: any(x[2] == 75 for x in w.runs()[runs_before:]), 20)
        tap.ok(failed and len(srv.requests) == base,
               "an untrusted certificate: the run exits 75, nothing is sent",
               "runs: %r, requests since: %d" % (w.runs()[runs_before:],
                                                 len(srv.requests) - base))
        trust(pki.ca)
        n = srv.wait_for(base + 1, 30)
        w.wait_idle(15)  # getmail's pass, and every run in it, are over
        tap.ok(n == base + 1 and len(srv.requests) == base + 1,
               "trust fixed: getmail delivers the message again, pushed once",
               "requests since: %d, runs: %r" % (len(srv.requests) - base,
                                                 w.runs()[runs_before:]))
    finally:
        sup.stop()


def burst_once(w, tap, srv, burst):
    import harness as h
    base = len(srv.requests)
    t_del = []
    for i in range(10):
        _, m = h.message("burst %d" % i)
        t0, r = w.deliver(m)
        t_del.append(t0)
        time.sleep(max(0, t0 + 0.1 - time.time()))
    srv.wait_for(base + 10, t_del[-1] + 5 - time.time())
    within = [q for q in srv.requests[base:] if q.time <= t_del[-1] + 5]
    pushed = len(srv.requests) - base
    delays = [srv.requests[base + k].time - t_del[k]
              for k in range(min(pushed, 10))]
    tap.info("burst %d: 10 messages 100 ms apart: %d pushed within 5 s "
             "of the last delivery; worst delay %.2f s (pushes are "
             "matched to messages in order)"
             % (burst, len(within), max(delays) if delays else -1))
    if pushed < 10:
        # getmail 6.18 re-SELECTs and IDLEs without looking for mail
        # that came in during its own pass: the rest waits for the next
        # change in the mailbox or the 300 s IDLE timeout.
        srv.wait_for(base + 10, 25)
        tap.info("burst %d: %d of 10 pushed 30 s after the last delivery "
                 "(getmail did not notice the rest)"
                 % (burst, len(srv.requests) - base))
        tn = time.time()
        _, m = h.message("nudge")
        w.deliver(m)
        srv.wait_for(base + 11, 15)
        tap.info("burst %d: after one more delivery, %d of 11 pushed, "
                 "%.2f s after that delivery"
                 % (burst, len(srv.requests) - base,
                    srv.requests[-1].time - tn
                    if len(srv.requests) > base else -1))
        expect = 11
    else:
        expect = 10
    tap.ok(len(srv.requests) - base == expect,
           "burst %d sanity: every message eventually pushed exactly once"
           % burst,
           "pushes %d, expected %d" % (len(srv.requests) - base, expect))


# ================================================================ fetchmail

def scenario_fetchmail(w, tap):
    import harness as h
    srv = w.start_server()
    w.start_dovecot()
    fmhome = w.path("fetchmailhome")
    os.makedirs(fmhome, mode=0o700)
    rc = w.example("fetchmailrc", [
        ("poll " + h.PH_HOST, "poll 127.0.0.1"),
        ("port 993", "port %d" % w.imaps_port),
        ('user "%s"' % h.PH_USER, 'user "%s"' % h.USER),
        ('password "%s"' % h.PH_PASSWORD, 'password "%s"' % h.PASSWORD),
        (h.PH_BIN, w.wrapper),
        (h.PH_HOME, w.home),
        # the interval after a failed delivery, shortened for the test
        ("set daemon 60", "set daemon 5"),
    ], dest=os.path.join(fmhome, "fetchmailrc"))
    env = w.env(FETCHMAILHOME=fmhome, SSL_CERT_FILE=w.cert)
    argv = ["fetchmail", "-f", rc, "--nodetach", "--nosyslog", "-v",
            "--pidfile", os.path.join(fmhome, "pid"),
            "--idfile", os.path.join(fmhome, "fetchids")]
    deliver_existing_mail(w)
    p = w.procs.start(argv, log=w.path("fetchmail.log"), env=env,
                      cwd=w.home)
    try:
        # Wait until fetchmail is logged in and idling.
        ok = wait_until(lambda: b"IDLE" in read(w.path("fetchmail.log")), 20)
        tap.ok(ok and p.poll() is None, "fetchmail logged in and idles",
               h.tail(w.path("fetchmail.log")))
        wait_until(lambda: len(w.runs()) >= 2, 10)
        time.sleep(1)  # a third run or a second push would have come by now
        runs = w.runs()
        tap.ok(len(runs) == 2 and len(srv.requests) == 1,
               "first start: the 2 unread messages are handed over, only "
               "the recent one is pushed (--max-age sees through "
               "fetchmail's Received)",
               "runs %r, pushes %d" % (runs, len(srv.requests)))
        tap.info("fetchmail first start with pre-existing mail: %d runs "
                 "(read mail skipped), %d push" % (len(runs),
                                                   len(srv.requests)))
        srv.requests.clear()
        open(w.runs_log, "w").close()
        mids = []
        for i in range(3):
            base = len(srv.requests)
            mid, m = h.message("fetchmail %d" % i)
            mids.append(mid)
            t0, r = w.deliver(m)
            n = srv.wait_for(base + 1, 15)
            tap.ok(n == base + 1, "message %d gives a push" % (i + 1),
                   "requests: %d" % (n - base))
            if n > base:
                tap.info("fetchmail latency delivery->push: %.0f ms"
                         % ((srv.requests[base].time - t0) * 1000))
            time.sleep(1)  # messages 1 s apart
        time.sleep(1)  # a push too many would have come by now
        tap.ok(len(srv.requests) == 3, "one push per message, 3 in all",
               "requests: %d" % len(srv.requests))
        runs = w.runs()
        tap.ok(len(runs) == 3 and all(r[2] == 0 for r in runs),
               "3 runs, all exit 0", "runs: %r" % runs)
        tap.ok(all(r[4] == "pipe" for r in runs),
               "fetchmail gives deltachat-push a pipe", "runs: %r" % runs)
        fl = w.flags()
        seen = [m for m in mids if "\\Seen" in fl.get(m, set())]
        tap.ok(len(seen) == 3,
               "as documented: fetchmail (keep) marks every handed-over "
               "message \\Seen on the server", "flags: %r" % fl)
        tap.info("fetchmail \\Seen: %d of 3 messages marked \\Seen after "
                 "delivery" % len(seen))
        tap.ok(p.poll() is None, "fetchmail still running",
               h.tail(w.path("fetchmail.log")))

        trailing_check(w, tap, srv, "fetchmail", into_inbox(w))
        tap.ok(p.poll() is None, "fetchmail still running",
               h.tail(w.path("fetchmail.log")))

        # A failing endpoint: what does fetchmail do with exit 75?
        srv.set_statuses([], default="503")
        runs_before = len(w.runs())
        base = len(srv.requests)
        mid, m = h.message("fetchmail 503")
        t0, r = w.deliver(m)
        wait_until(lambda: len(w.runs()) > runs_before, 20)
        rcs = [x[2] for x in w.runs()[runs_before:]]
        tap.ok(rcs[:1] == [75], "endpoint 503: deltachat-push exits 75",
               "exit codes: %r" % rcs)
        fl = w.flags().get(mid, set())
        tap.ok("\\Seen" not in fl, "a message whose run exited 75 is not "
               "marked \\Seen", "flags: %r" % fl)
        srv.set_statuses([], default="200")
        t_up = time.time()
        ok = wait_until(lambda: any(q.time > t_up for q in
                                    srv.requests[base:]), 20)
        tap.ok(ok, "the message is tried again after the daemon interval "
               "and pushed once the endpoint is back",
               h.tail(w.path("fetchmail.log"), 15))
        if ok:
            q = [q for q in srv.requests[base:] if q.time > t_up][0]
            tap.info("fetchmail, endpoint 503 then 200: first run exit %r; "
                     "retried and pushed %.1f s after delivery (daemon "
                     "interval 5 s here, 60 s in the example)"
                     % (rcs[:1], q.time - t0))
        wait_until(lambda: "\\Seen" in w.flags().get(mid, set()), 5)
        fl = w.flags().get(mid, set())
        tap.ok("\\Seen" in fl, "... and then marked \\Seen",
               "flags: %r" % fl)
        tap.ok(p.poll() is None, "fetchmail still running")
        log = read(w.path("fetchmail.log")).decode("utf-8", "replace")
        tap.ok("Broken pipe" not in log, "no broken pipe in fetchmail's log")
    finally:
        w.procs.stop(p)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def through_filter(w, tap, name, argv):
    """deliver() for a mail filter (procmail, maildrop) the way an MTA runs
    it: one message on a pipe into argv, which must exit 0.  Returns how
    long the filter took."""
    def deliver(subject, what=None):
        _, m = harness.message(subject)
        t = time.time()
        r = w.procs.run(argv, input=m, env=w.env(), timeout=30)
        tap.ok(r.returncode == 0, "%s exits 0 (%s)" % (name, what or subject),
               repr(r))
        return time.time() - t
    return deliver


def three_messages(w, tap, srv, name, deliver):
    """Three messages through a filter into the Maildir: three pushes."""
    for i in range(3):
        deliver("%s %d" % (name, i), "message %d" % (i + 1))
    srv.wait_for(3, 10)
    time.sleep(0.5)  # a push too many would have come by now
    tap.ok(len(srv.requests) == 3, "one push per message",
           "requests: %d" % len(srv.requests))
    tap.ok(w.maildir_count() == 3, "the 3 messages are in the mailbox",
           "in maildir: %d" % w.maildir_count())


# ================================================================ procmail

def scenario_procmail(w, tap):
    import harness as h
    srv = w.start_server()
    maildir = w.maildir + "/"
    # Test-only lines in front of the example: nobody's passwd entry has
    # HOME=/nonexistent and SHELL=/usr/sbin/nologin.
    pre = ("SHELL=/bin/sh\nHOME=%s\nMAILDIR=%s\nDEFAULT=%s\n"
           "LOGFILE=%s\nVERBOSE=off\n\n"
           % (w.home, w.home, maildir, w.path("procmail.log")))
    # procmail -m (mail filter mode) with the rc file: plain "procmail"
    # would create the system mailbox /var/mail/$USER at start.
    rc = w.example("procmailrc", [(h.PH_BIN, w.wrapper)],
                   dest=os.path.join(w.home, ".procmailrc"), prepend=pre)
    via_procmail = through_filter(w, tap, "procmail", ["procmail", "-m", rc])
    three_messages(w, tap, srv, "procmail", via_procmail)
    runs = w.runs()
    tap.ok(all(r[4] == "pipe" for r in runs) and len(runs) == 3,
           "procmail gives deltachat-push a pipe; 3 runs", "runs: %r" % runs)
    trailing_check(w, tap, srv, "procmail", via_procmail)

    # failing endpoint: 503, then connection refused
    srv.set_statuses([], default="503")
    for what, url in (("503", srv.url),
                      ("connection refused",
                       "http://127.0.0.1:%d/notify" % h.free_port())):
        w.set_url(url)
        before = w.maildir_count()
        nruns = len(w.runs())
        _, m = h.message("procmail failing endpoint " + what)
        t0 = time.time()
        r = w.procs.run(["procmail", "-m", rc], input=m, env=w.env(), timeout=30)
        took = time.time() - t0
        tap.ok(r.returncode == 0 and w.maildir_count() == before + 1,
               "endpoint %s: procmail exits 0 and still delivers the "
               "message" % what,
               "%r; maildir %d -> %d" % (r, before, w.maildir_count()))
        new = w.runs()[nruns:]
        tap.ok(len(new) == 1 and new[0][2] == 75,
               "endpoint %s: deltachat-push ran once and exited 75 "
               "(logged by procmail as a program failure)" % what,
               "runs: %r" % new)
        tap.info("procmail with endpoint %s: delivery took %.2f s" %
                 (what, took))
    log = read(w.path("procmail.log")).decode("utf-8", "replace")
    tap.ok("Program failure (75)" in log,
           "procmail logged the failure (the w flag)", log[-1500:])


# ================================================================ maildrop

def scenario_maildrop(w, tap):
    import harness as h
    srv = w.start_server()
    os.makedirs(w.maildir, exist_ok=True)
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(w.maildir, sub), exist_ok=True)
    # Test-only lines in front of the example: nobody's passwd entry has
    # HOME=/nonexistent and SHELL=/usr/sbin/nologin, which maildrop uses.
    pre = ('SHELL="/bin/sh"\nHOME="%s"\nDEFAULT="%s/"\n\n'
           % (w.home, w.maildir))
    rc = w.example("maildroprc", [(h.PH_BIN, w.wrapper)],
                   dest=os.path.join(w.home, ".mailfilter"), prepend=pre)
    via_maildrop = through_filter(w, tap, "maildrop", ["maildrop", rc])
    three_messages(w, tap, srv, "maildrop", via_maildrop)
    trailing_check(w, tap, srv, "maildrop", via_maildrop)

    srv.set_statuses([], default="503")
    before = w.maildir_count()
    _, m = h.message("maildrop 503")
    r = w.procs.run(["maildrop", rc], input=m, env=w.env(), timeout=30)
    tap.ok(r.returncode == 0 and w.maildir_count() == before + 1,
           "endpoint 503: maildrop still exits 0 (EXITCODE=0) and delivers",
           "%r; maildir %d -> %d" % (r, before, w.maildir_count()))
    last = w.runs()[-1]
    tap.ok(last[2] == 75, "... although deltachat-push exited 75",
           "last run: %r" % (last,))
    # Control: the same filter without EXITCODE=0 leaks the 75.
    rc2 = w.example("maildroprc", [(h.PH_BIN, w.wrapper),
                                   ("\nEXITCODE=0\n", "\n")],
                    dest=os.path.join(w.home, ".mailfilter-noexitcode"),
                    prepend=pre)
    before = w.maildir_count()
    _, m = h.message("maildrop 503 without EXITCODE")
    r = w.procs.run(["maildrop", rc2], input=m, env=w.env(), timeout=30)
    tap.ok(r.returncode == 75 and w.maildir_count() == before + 1,
           "control: without EXITCODE=0 maildrop delivers but exits 75 "
           "(the MTA would deliver the message again)",
           "%r; maildir %d -> %d" % (r, before, w.maildir_count()))


# ================================================================ sieve

def scenario_sieve(w, tap):
    import harness as h
    srv = w.start_server()
    w.start_dovecot()
    # As the example says: a link named deltachat-push in sieve_pipe_bin_dir.
    os.symlink(w.wrapper, os.path.join(w.sieve_bin, "deltachat-push"))
    w.example("deltachat-push.sieve", [(h.PH_HOME, w.home)],
              dest=os.path.join(w.home, ".dovecot.sieve"))
    open(w.path("capture"), "w").close()
    for i in range(3):
        base = len(srv.requests)
        mid, m = h.message("sieve %d" % i)
        t0, r = w.deliver(m)
        took = time.time() - t0
        tap.ok(r.returncode == 0, "dovecot-lda exits 0 (message %d)" % (i + 1),
               repr(r))
        n = srv.wait_for(base + 1, 10)
        tap.ok(n == base + 1 and srv.requests[base].time - t0 < 10,
               "message %d: one push, within 10 s" % (i + 1),
               "requests: %d" % (n - base))
        tap.info("sieve: dovecot-lda took %.0f ms; push %.0f ms after the "
                 "start of delivery" % (took * 1000,
                                        (srv.requests[base].time - t0) * 1000
                                        if n > base else -1))
    time.sleep(0.5)  # a push too many would have come by now
    tap.ok(len(srv.requests) == 3, "3 pushes in all",
           "requests: %d" % len(srv.requests))
    tap.ok(w.maildir_count() == 3, "the 3 messages were kept (pipe :copy)",
           "in maildir: %d" % w.maildir_count())
    caps = [f for f in os.listdir(w.tmp) if f.startswith("capture.")]
    data = read(w.path(caps[0])) if caps else b""
    tap.ok(caps and b"\r\n" in data and data.count(b"\n") ==
           data.count(b"\r\n"),
           "deltachat-push got the message with CRLF line ends",
           "captured %d files, %d bytes" % (len(caps), len(data)))
    runs = w.runs()
    tap.ok(len(runs) == 3 and all(r[2] == 0 for r in runs) and
           all(r[4] == "pipe" for r in runs),
           "3 runs, all exit 0, stdin a pipe", "runs: %r" % runs)
    os.unlink(w.path("capture"))

    # a 40 MB message through a pipe (CRLF): read to EOF, memory bounded
    base = len(srv.requests)
    runs_before = len(w.runs())
    _, m = h.message("sieve 40 MB", size=40 * 1024 * 1024)
    t0, r = w.deliver(m, timeout=60)
    took = time.time() - t0
    n = srv.wait_for(base + 1, 10)
    big = w.runs()[runs_before:]
    rss = max((x[3] for x in big), default=0)
    tap.ok(r.returncode == 0 and n == base + 1 and big and big[0][2] == 0,
           "a 40 MB message through sieve: kept, one push, exit 0",
           "%r; pushes %d; runs %r" % (r, n - base, big))
    tap.ok(0 < rss < 32 * 1024, "40 MB through a pipe: peak RSS bounded "
           "(< 32 MB)", "peak RSS %d KB" % rss)
    tap.info("sieve, 40 MB message on a pipe: peak RSS %d KB, run took "
             "%.2f s, dovecot-lda took %.2f s" % (
                 rss, big[0][1] - big[0][0] if big else -1, took))

    def via_sieve(subject):
        _, m = h.message(subject)
        t0, r = w.deliver(m)
        tap.ok(r.returncode == 0, "dovecot-lda exits 0 (%s)" % subject, repr(r))
        return time.time() - t0
    trailing_check(w, tap, srv, "sieve", via_sieve)

    srv.set_statuses([], default="503")
    before = w.maildir_count()
    _, m = h.message("sieve 503")
    t0, r = w.deliver(m)
    took = time.time() - t0
    tap.info("sieve with endpoint 503: dovecot-lda took %.2f s (Dovecot "
             "kills the program after 10 s)" % took)
    tap.ok(took < 10, "endpoint 503: delivery still finishes within "
           "Dovecot's 10 s program timeout", "took %.2f s" % took)
    tap.ok(r.returncode == 0 and w.maildir_count() == before + 1,
           "endpoint 503: dovecot-lda exits 0 and keeps the message (:try)",
           "%r; maildir %d -> %d" % (r, before, w.maildir_count()))
    tap.ok(w.runs()[-1][2] == 75, "... deltachat-push exited 75",
           "runs: %r" % w.runs()[-1:])


# ================================================================ systemd

def scenario_systemd(w, tap):
    d = w.path("units")
    os.makedirs(d)
    import harness as h
    unit = os.path.join(d, "deltachat-push@deltachat-push.service")
    shutil.copy(os.path.join(h.EXAMPLES, "deltachat-push@.service"), unit)
    text = read(unit).decode()
    tap.ok("Restart=always" in text, "unit restarts getmail always")
    tap.ok("ExecStart=/usr/bin/getmail --rcfile %i --idle INBOX" in text,
           "unit runs getmail --rcfile %i --idle INBOX")
    tap.ok("ExecStartPre=-/usr/bin/deltachat-push --resume" in text,
           "unit resumes orphaned pushes before it starts getmail")
    # --man=no: the Documentation= man pages need not be installed here.
    r = w.procs.run(["systemd-analyze", "verify", "--man=no", unit],
                    env=w.env(), timeout=50)
    tap.ok(r.returncode == 0 and not r.stderr.strip(), "systemd-analyze verify is happy",
           repr(r))


# ================================================================ main

def main(argv):
    if len(argv) >= 5 and argv[1] == "--inner":
        scenario, binary, tmp = argv[2], argv[3], argv[4]
        sys.path.insert(0, os.path.join(tmp, "harness"))
        return inner(scenario, binary, tmp)
    if len(argv) != 3 or argv[1] not in SCENARIOS:
        print("usage: run.py {%s} DELTACHAT-PUSH" % "|".join(SCENARIOS),
              file=sys.stderr)
        return 2
    sys.path.insert(0, HERE)
    if harness.skip_missing_tools(TOOLS[argv[1]]):
        return 0
    return outer(argv[1], os.path.abspath(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
