#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""getmail6 --idle's two races, with real getmail and a real Dovecot.

Why: getmail (6.18.11 to at least 6.20.01) leaves a message waiting for
the next event on the connection (Dovecot's keepalive, the next message,
or its own 300 s IDLE timeout) when the message comes in
  A. while getmail's retrieval pass is still running (here: while our
     delivery agent runs), or
  B. right after the SELECT that go_idle() makes, before IDLE.
Stock getmail: the delay is measured and printed, never judged.  getmail
patched the documented way (examples/getmail6-idle-race-apply, with the
PYTHONPATH line of examples/deltachat-push@.service): every message is
pushed within 2 s, 20 times in a row.

getmail talks to Dovecot through a small TLS proxy (ImapProxy) that sees
the commands in clear: it tells when getmail idles, and for race B it holds
getmail's IDLE command, delivers a message, then passes IDLE on.

    races.py {race_a|race_b} /path/to/deltachat-push

Root handling, time limits and clean-up are run.py's (this file only adds
its scenarios there).
"""

import os
import re
import socket
import ssl
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import run  # noqa: E402
from harness import wait_until  # noqa: E402

SCENARIOS = ("race_a", "race_b")
ROUNDS = 20          # patched getmail: rounds in a row, each within ...
BOUND = 2.0          # ... this many seconds from delivery to push
STOCK_ROUNDS = 3
# How long to wait for stock getmail before nudging it with one more
# message.  DCP_RACE_STOCK_WAIT overrides it, to watch Dovecot's keepalive
# release the message (when run as a user other than root: run.py starts
# the inner run as nobody with a fresh environment).
STOCK_WAIT = float(os.environ.get("DCP_RACE_STOCK_WAIT") or 15)


# ---------------------------------------------------------------- proxy

class ImapProxy:
    """TLS on both sides, commands in clear.  `idling` is set once
    Dovecot's "+ idling" went back to getmail.  `hold`, when set, is
    called (once) with getmail's next IDLE command held back."""

    IDLE = re.compile(rb"^\S+ IDLE\r\n$")

    def __init__(self, w):
        self.w = w
        self.upstream = w.imaps_port
        self.srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.srv_ctx.load_cert_chain(w.cert, w.path("dovecot", "key.pem"))
        self.cli_ctx = ssl.create_default_context(cafile=w.cert)
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.cond = threading.Condition()
        self.idling = False
        self.idle_sent = False      # IDLE passed on, "+" not back yet
        self.hold = None
        self.held = False           # the IDLE passed on was held
        self.same_packet = []       # per held IDLE: EXISTS came with "+"
        self.keepalives = []        # when Dovecot's "* OK Still here" came
        self.socks = []
        serve(self.lsock, self.connect)

    def connect(self, raw):
        try:
            raw.settimeout(30)
            down = self.srv_ctx.wrap_socket(raw, server_side=True)
            up = self.cli_ctx.wrap_socket(
                socket.create_connection(("127.0.0.1", self.upstream), 30),
                server_hostname="127.0.0.1")
        except OSError:
            raw.close()
            return
        for s in (down, up):
            s.settimeout(None)
        self.socks += [down, up]
        with self.cond:
            self.idling = self.idle_sent = False   # a new session
        threading.Thread(target=self.from_server, args=(up, down),
                         daemon=True).start()
        self.from_client(down, up)

    def from_client(self, down, up):
        buf = b""
        for chunk in chunks(down):
            buf += chunk
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                self.client_line(line + b"\r\n", up)
        shut(up)

    def client_line(self, line, up):
        if self.IDLE.match(line):
            with self.cond:
                hold, self.hold = self.hold, None
            if hold:
                hold()
            with self.cond:
                self.idle_sent = True
                self.held = bool(hold)
        elif line == b"DONE\r\n":
            with self.cond:
                self.idling = False
        try:
            up.sendall(line)
        except OSError:
            pass

    def from_server(self, up, down):
        for chunk in chunks(up):
            with self.cond:
                if b"* OK Still here" in chunk:
                    self.keepalives.append(time.time())
                if self.idle_sent and re.search(rb"(^|\n)\+ ", chunk):
                    self.idle_sent = False
                    self.idling = True
                    if self.held:
                        self.same_packet.append(b" EXISTS" in chunk)
                    self.cond.notify_all()
            try:
                down.sendall(chunk)
            except OSError:
                break
        shut(down)

    def wait_idling(self, timeout=30):
        with self.cond:
            return self.cond.wait_for(lambda: self.idling, timeout)

    def stop(self):
        self.lsock.close()
        for s in self.socks:
            shut(s)


def serve(lsock, handle):
    """Accept on lsock until it is closed, each connection in a thread."""
    def loop():
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def chunks(sock):
    """What sock receives, read by read, until EOF or an error."""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        yield chunk


def shut(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


# ---------------------------------------------------------------- race A

MDA = """#!/usr/bin/python3
# Test delivery agent (tests/callers/races.py): when armed, has one more
# message delivered into the mailbox, then becomes deltachat-push.
import os, socket, sys
try:
    os.unlink(%(arm)r)
except FileNotFoundError:
    pass
else:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(%(sock)r)
    s.sendall(b"deliver\\n")
    s.recv(16)
    s.close()
os.execv(%(next)r, [%(next)r] + sys.argv[1:])
"""


class DuringRun:
    """Race A: our delivery agent, when armed, has a second message
    delivered (by this process, through harness.World.deliver) while
    getmail waits for it, then execs the harness wrapper."""

    def __init__(self, w):
        self.w = w
        self.arm_file = w.path("race-a-arm")
        self.sock_path = w.path("race-a.sock")
        self.delivered = []          # end time of each second delivery
        self.lsock = socket.socket(socket.AF_UNIX)
        self.lsock.bind(self.sock_path)
        self.lsock.listen(4)
        self.mda = w.path("bin", "race-a-mda")
        with open(self.mda, "w") as f:
            f.write(MDA % {"arm": self.arm_file, "sock": self.sock_path,
                           "next": w.wrapper})
        os.chmod(self.mda, 0o755)
        serve(self.lsock, self.handle)

    def handle(self, c):
        with c:
            c.settimeout(30)
            try:
                c.recv(16)
                _, m = h.message("race A: arrives during the run")
                if self.w.deliver(m)[1].rc == 0:
                    self.delivered.append(time.time())
                c.sendall(b"done\n")
            except OSError:
                pass

    def arm(self):
        open(self.arm_file, "w").close()

    def stop(self):
        self.lsock.close()


def trigger_a(ctx):
    """Deliver the trigger; the agent delivers the second message.
    Returns when that second message is in the mailbox (or None)."""
    n = len(ctx.during.delivered)
    ctx.during.arm()
    _, m = h.message("race A: trigger")
    ctx.w.deliver(m)
    if not wait_until(lambda: len(ctx.during.delivered) > n, 20):
        return None
    return ctx.during.delivered[n]


def trigger_b(ctx):
    """Deliver the trigger; the proxy delivers the second message when
    getmail sends IDLE after its pass.  Returns when that message is in
    the mailbox (or None)."""
    done = []

    def hold():
        _, m = h.message("race B: arrives after SELECT, before IDLE")
        if ctx.w.deliver(m)[1].rc == 0:
            done.append(time.time())
    ctx.proxy.hold = hold
    _, m = h.message("race B: trigger")
    ctx.w.deliver(m)
    if not wait_until(lambda: done, 20):
        ctx.proxy.hold = None
        return None
    return done[0]


# ---------------------------------------------------------------- rounds

class Ctx:
    def __init__(self, w, tap, srv, proxy, during, trigger, name):
        self.w, self.tap, self.srv = w, tap, srv
        self.proxy, self.during = proxy, during
        self.trigger, self.name = trigger, name


def one_round(ctx, wait):
    """One trigger and one racing message, once getmail idles.  Returns
    (delay of the racing message's push or None, pushes before the round;
    None when the round could not be set up)."""
    srv = ctx.srv
    if not ctx.proxy.wait_idling(30):
        return None, None
    time.sleep(0.2)
    base = len(srv.requests)
    t2 = ctx.trigger(ctx)
    if t2 is None:
        return None, None
    n = srv.wait_for(base + 2, max(0.0, t2 + wait - time.time()))
    delay = srv.requests[base + 1].time - t2 if n >= base + 2 else None
    return delay, base


def stock_rounds(ctx):
    """Stock getmail: measure, print, never judge.  A message not pushed
    within STOCK_WAIT is released by one more delivery."""
    tap, srv = ctx.tap, ctx.srv
    for i in range(STOCK_ROUNDS):
        delay, base = one_round(ctx, STOCK_WAIT)
        if base is None:
            tap.ok(False, "stock getmail, race %s round %d: set up"
                   % (ctx.name, i + 1), h.tail(ctx.w.path("getmail.log")))
            return
        if delay is not None:
            push = srv.requests[base + 1].time
            woke = [k for k in ctx.proxy.keepalives if push - 2 < k < push]
            tap.info("stock getmail, race %s round %d: pushed %.2f s after "
                     "delivery%s" % (ctx.name, i + 1, delay, woke and
                                     ", right after Dovecot's keepalive"
                                     or ""))
            continue
        n, took = nudge(ctx, base)
        tap.info("stock getmail, race %s round %d: not pushed within %.0f s "
                 "(getmail idles); released by the next delivery, %.2f s "
                 "after it" % (ctx.name, i + 1, STOCK_WAIT, took))
        tap.ok(n > 0, "stock getmail, race %s round %d: the next delivery "
               "releases the waiting message" % (ctx.name, i + 1),
               "pushes in the round: %d" % (len(srv.requests) - base))


def nudge(ctx, base):
    """Deliver one more message so that stock getmail looks again; a
    nudge can itself fall into race B, so up to 3.  Returns (nudges
    needed or 0 if every message was not pushed even then, seconds from
    the last nudge to its push)."""
    srv = ctx.srv
    for k in range(1, 4):
        ctx.proxy.wait_idling(5)
        tn = time.time()
        _, m = h.message("nudge %d" % k)
        ctx.w.deliver(m)
        if srv.wait_for(base + 2 + k, 15) >= base + 2 + k:
            return k, srv.requests[-1].time - tn
    return 0, -1


def patched_rounds(ctx):
    tap, srv = ctx.tap, ctx.srv
    delays = []
    for i in range(ROUNDS):
        delay, base = one_round(ctx, BOUND + 3)
        time.sleep(0.3)
        pushed = len(srv.requests) - base if base is not None else -1
        ok = delay is not None and delay <= BOUND and pushed == 2
        tap.ok(ok, "patched getmail, race %s round %d: the racing message "
               "is pushed within %.0f s, once" % (ctx.name, i + 1, BOUND),
               "delay %s, pushes %d (expected 2)\n%s" % (
                   "%.2f s" % delay if delay is not None else "none",
                   pushed, h.tail(ctx.w.path("getmail.log"), 10)))
        if delay is not None:
            delays.append(delay)
        if not ok:
            break
    if delays:
        tap.info("patched getmail, race %s: %d rounds, delivery->push "
                 "median %.2f s, max %.2f s"
                 % (ctx.name, len(delays), statistics.median(delays),
                    max(delays)))


# ---------------------------------------------------------------- setup

def unit_pythonpath(w):
    """PYTHONPATH as examples/deltachat-push@.service sets it, for w.home."""
    with open(os.path.join(h.EXAMPLES, "deltachat-push@.service")) as f:
        m = re.search(r"^Environment=PYTHONPATH=(\S+)$", f.read(), re.M)
    if not m:
        raise RuntimeError("no Environment=PYTHONPATH= line in the unit")
    return m.group(1).replace("%h", w.home)


def apply_script(w, *args):
    """examples/getmail6-idle-race-apply, as documented, for w.home."""
    return w.procs.run(["sh", os.path.join(h.EXAMPLES,
                                           "getmail6-idle-race-apply")]
                       + list(args), env=w.env(), timeout=60)


def start_getmail(w, argv, pythonpath):
    return w.procs.start(argv, log=w.path("getmail.log"), cwd=w.home,
                         env=w.env(PYTHONUNBUFFERED="1",
                                   PYTHONPATH=pythonpath))


def pyc_in(d):
    """Compiled modules under d: Python wrote them when it imported from d."""
    cache = os.path.join(d, "getmailcore", "__pycache__")
    try:
        return [n for n in os.listdir(cache) if n.startswith("_retriever")]
    except OSError:
        return []


# ---------------------------------------------------------------- scenarios

def scenario_race_a(w, tap):
    race(w, tap, "A (mail during our run)", trigger_a)


def scenario_race_b(w, tap):
    race(w, tap, "B (mail between SELECT and IDLE)", trigger_b)


def race(w, tap, name, trigger):
    srv = w.start_server()
    w.start_dovecot()
    proxy = ImapProxy(w)
    during = DuringRun(w)
    ctx = Ctx(w, tap, srv, proxy, during, trigger, name)
    try:
        argv = run.getmail_idle(w, proxy.port, during.mda)
        pp = unit_pythonpath(w)
        r = apply_script(w, "--check")
        tap.ok(r.rc == 1 and b"no copy" in r.err, "before the apply "
               "script, --check says there is no patched copy", repr(r))
        # The unit's PYTHONPATH is set, the copy is not there yet.
        phase(ctx, argv, pp, stock_rounds, "stock")
        r = apply_script(w)
        tap.ok(r.rc == 0 and not r.err and b"patched copy of getmail" in
               r.out, "getmail6-idle-race-apply makes the patched copy",
               repr(r))
        r = apply_script(w, "--check")
        where = os.path.join(pp, "getmailcore", "_retrieverbases.py")
        tap.ok(r.rc == 0 and where.encode() in r.out, "--check finds it "
               "where the unit's PYTHONPATH points", repr(r))
        tap.info(r.out.decode().strip())
        phase(ctx, argv, pp, patched_rounds, "patched")
        tap.ok(pyc_in(pp), "getmail imported _retrieverbases from the copy",
               "nothing compiled under %s" % pp)
        if trigger is trigger_b:
            tap.info("race B: Dovecot sent the EXISTS in the same packet "
                     "as \"+ idling\" for %d of %d held IDLE commands"
                     % (sum(proxy.same_packet), len(proxy.same_packet)))
    finally:
        proxy.stop()
        during.stop()


def phase(ctx, argv, pythonpath, rounds, what):
    g = start_getmail(ctx.w, argv, pythonpath)
    try:
        rounds(ctx)
        # Stop it only once it idles: killed during a pass, it would hand
        # the same message over again after the restart.
        ok = ctx.proxy.wait_idling(20)
        ctx.tap.ok(ok and g.poll() is None, "%s getmail still running and "
                   "idling, no errors" % what,
                   h.tail(ctx.w.path("getmail.log")))
    finally:
        ctx.w.procs.stop(g)


# ---------------------------------------------------------------- main

for _s in SCENARIOS:
    run.TOOLS[_s] = ["getmail", "/usr/sbin/dovecot",
                     "/usr/lib/dovecot/dovecot-lda", "openssl",
                     "/usr/bin/time", "patch"]
    run.LIMITS[_s] = 240
run.scenario_race_a = scenario_race_a
run.scenario_race_b = scenario_race_b


def main(argv):
    if len(argv) >= 5 and argv[1] == "--inner":
        sys.path.insert(0, os.path.join(argv[4], "harness"))
        return run.inner(argv[2], argv[3], argv[4])
    if len(argv) != 3 or argv[1] not in SCENARIOS:
        print("usage: races.py {race_a|race_b} DELTACHAT-PUSH",
              file=sys.stderr)
        return 2
    if h.skip_missing_tools(run.TOOLS[argv[1]]):
        return 0
    return run.outer(argv[1], os.path.abspath(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
