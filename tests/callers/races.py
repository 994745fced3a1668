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

And a message that vanishes: expunged by another session (as Delta
Chat does with what it has read) between getmail's IDLE notice and its
FETCH.  Stock getmail dies; patched getmail skips it, hands over the next
message and goes on idling.

getmail talks to Dovecot through a small TLS proxy (ImapProxy) that sees
the commands in clear: it tells when getmail idles, and for race B it holds
getmail's IDLE command, delivers a message, then passes IDLE on.

    races.py {race_a|race_b|vanished} /path/to/deltachat-push

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

SCENARIOS = ("race_a", "race_b", "vanished")
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
        # [(regex, callback)]: the next client line matching the first
        # pattern is held, callback(match) called, then passed on.
        self.holds = []
        self.answers = []           # server lines: BODY[] NIL, EXPUNGEISSUED
        self.strip_nil = False      # drop "* N FETCH (UID U BODY[] NIL)"
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
        with self.cond:
            m = self.holds and self.holds[0][0].match(line)
            step = self.holds.pop(0)[1] if m else None
        if step:
            step(m)
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
                if self.strip_nil:
                    # A server that sends no FETCH data at all for it.
                    chunk = re.sub(rb"\* \d+ FETCH \(UID \d+ BODY\[\] NIL\)"
                                   rb"\r\n", b"", chunk)
                if len(self.answers) < 20:
                    self.answers += re.findall(
                        rb"[^\r\n]*(?:BODY\[\] NIL|EXPUNGEISSUED)[^\r\n]*",
                        chunk)
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
                if self.w.deliver(m)[1].returncode == 0:
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
        if ctx.w.deliver(m)[1].returncode == 0:
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
    time.sleep(0.2)  # the same moment in each round: 0.2 s into IDLE
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
        time.sleep(0.3)  # a third push would have come by now
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
        tap.ok(r.returncode == 1 and b"no copy" in r.stderr, "before the apply "
               "script, --check says there is no patched copy", repr(r))
        # The unit's PYTHONPATH is set, the copy is not there yet.
        phase(ctx, argv, pp, stock_rounds, "stock")
        r = apply_script(w)
        tap.ok(r.returncode == 0 and not r.stderr and b"patched copy of getmail" in
               r.stdout, "getmail6-idle-race-apply makes the patched copy",
               repr(r))
        r = apply_script(w, "--check")
        where = os.path.join(pp, "getmailcore", "_retrieverbases.py")
        tap.ok(r.returncode == 0 and where.encode() in r.stdout, "--check finds it "
               "where the unit's PYTHONPATH points", repr(r))
        tap.info(r.stdout.decode().strip())
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



# ---------------------------------------------------------------- vanished

DONE = re.compile(rb"^DONE\r\n$")
FETCH_BODY = re.compile(rb"^\S+ UID FETCH (\d+) \((?:BODY\.PEEK\[\]|RFC822)\)"
                        rb"\r\n$")


def expunge_uid(w, uid):
    """What Delta Chat does to a message it has read: another IMAP
    session stores \Deleted on it and expunges it."""
    c = w.imap()
    try:
        c.select("INBOX")
        typ, _ = c.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        c.expunge()
        return typ == "OK"
    finally:
        c.logout()


def handed_over(w):
    """Message-IDs of the messages getmail handed to deltachat-push."""
    out = []
    for name in sorted(os.listdir(w.tmp)):
        if name.startswith("capture."):
            with open(w.path(name), "rb") as f:
                m = re.search(rb"^Message-ID: (\S+)", f.read(), re.M)
            out.append(m.group(1).decode() if m else None)
    return out


def vanish_round(w, proxy, tag):
    """getmail idles; message 1 comes in; while getmail's DONE is held,
    message 2 comes in (one pass sees both); while getmail's FETCH of
    message 1 is held, another session expunges it.  Returns (mid1,
    mid2, steps done: 2 when both holds fired)."""
    mid1, m1 = h.message("%s: expunged before getmail fetches it" % tag)
    mid2, m2 = h.message("%s: the next message" % tag)
    steps = []

    def on_done(match):
        if w.deliver(m2)[1].returncode == 0:
            steps.append("delivered 2")

    def on_fetch(match):
        if expunge_uid(w, match.group(1).decode()):
            steps.append("expunged 1")
    with proxy.cond:
        proxy.holds = [(DONE, on_done), (FETCH_BODY, on_fetch)]
    w.deliver(m1)
    wait_until(lambda: len(steps) == 2, 20)
    with proxy.cond:
        proxy.holds = []
    return mid1, mid2, len(steps)


def scenario_vanished(w, tap):
    srv = w.start_server()
    w.start_dovecot()
    proxy = ImapProxy(w)
    open(w.path("capture"), "w").close()
    try:
        argv = run.getmail_idle(w, proxy.port)
        pp = unit_pythonpath(w)
        log = w.path("getmail.log")

        # Stock getmail: documented, asserted as it is.
        g = start_getmail(w, argv, pp)
        try:
            tap.ok(proxy.wait_idling(30), "stock getmail idles",
                   h.tail(log))
            mid1, mid2, steps = vanish_round(w, proxy, "stock")
            tap.ok(steps == 2, "stock getmail: message 2 came in during "
                   "DONE, message 1 was expunged during its FETCH",
                   "steps %d" % steps)
            wait_until(lambda: g.poll() is not None, 20)
            rc = g.poll()
            text = h.tail(log, 60)
            tap.ok(rc is not None and rc != 0 and "AttributeError" in text,
                   "stock getmail dies on the vanished message "
                   "(AttributeError), --idle ends", "rc %r\n%s" % (rc, text))
            tap.ok(mid2 not in handed_over(w), "stock getmail did not hand "
                   "over the message after it", repr(handed_over(w)))
            tap.info("stock getmail exit status %r; Dovecot answered: %s"
                     % (rc, b" | ".join(proxy.answers[:2]).decode()))
        finally:
            w.procs.stop(g)

        r = apply_script(w)
        tap.ok(r.returncode == 0 and b"vanished 1" in r.stdout, "getmail6-idle-race-"
               "apply makes the patched copy (with the vanished fix)",
               repr(r))

        # Patched getmail: its first pass hands over what stock left.
        g = start_getmail(w, argv, pp)
        try:
            tap.ok(proxy.wait_idling(30), "patched getmail idles",
                   h.tail(log))
            for tag, strip in (("BODY[] NIL", False), ("no FETCH data", True)):
                proxy.strip_nil = strip
                patched_vanish(w, tap, srv, proxy, g, tag)
            proxy.strip_nil = False
        finally:
            proxy.wait_idling(10)
            w.procs.stop(g)
    finally:
        proxy.stop()


def vanished_logged(log):
    with open(log, errors="replace") as f:
        return f.read().count("vanished before it could be fetched")


def patched_vanish(w, tap, srv, proxy, g, tag):
    """One vanish_round with patched getmail, the server answering the
    FETCH of the expunged message as tag says."""
    log = w.path("getmail.log")
    proxy.wait_idling(10)  # getmail's last pass, and what it handed over, are done
    before = handed_over(w)
    logged = vanished_logged(log)
    base = len(srv.requests)
    mid1, mid2, steps = vanish_round(w, proxy, "patched, " + tag)
    tap.ok(steps == 2, "patched getmail, %s: message 2 came in during DONE, "
           "message 1 was expunged during its FETCH" % tag, "steps %d" % steps)
    srv.wait_for(base + 1, 15)
    time.sleep(1)  # another hand-over or push would have come by now
    now = handed_over(w)[len(before):]
    tap.ok(now == [mid2] and len(srv.requests) == base + 1,
           "patched getmail, %s: skips the vanished message and hands over "
           "the next one: one push" % tag,
           "handed over %r (expected [%r]), pushes %d" % (
               now, mid2, len(srv.requests) - base))
    text = h.tail(log, 60)
    tap.ok(vanished_logged(log) == logged + 1, "patched getmail, %s: logs "
           "the vanished message" % tag, text)
    ok = proxy.wait_idling(20) and g.poll() is None
    tap.ok(ok, "patched getmail, %s: still running and idling" % tag, text)
    base = len(srv.requests)
    t0, _ = w.deliver(h.message("patched, %s: the message after" % tag)[1])
    n = srv.wait_for(base + 1, 10)
    tap.ok(n == base + 1 and srv.requests[base].time - t0 < BOUND,
           "patched getmail, %s: pushes the message after within %.0f s"
           % (tag, BOUND), "pushes %d" % (n - base))
    proxy.wait_idling(10)


# ---------------------------------------------------------------- main

for _s in SCENARIOS:
    run.TOOLS[_s] = ["getmail", "/usr/sbin/dovecot",
                     "/usr/lib/dovecot/dovecot-lda", "openssl",
                     "/usr/bin/time", "patch"]
    run.LIMITS[_s] = 240
run.scenario_race_a = scenario_race_a
run.scenario_race_b = scenario_race_b
run.scenario_vanished = scenario_vanished


def main(argv):
    if len(argv) >= 5 and argv[1] == "--inner":
        sys.path.insert(0, os.path.join(argv[4], "harness"))
        return run.inner(argv[2], argv[3], argv[4])
    if len(argv) != 3 or argv[1] not in SCENARIOS:
        print("usage: races.py {race_a|race_b|vanished} DELTACHAT-PUSH",
              file=sys.stderr)
        return 2
    if h.skip_missing_tools(run.TOOLS[argv[1]]):
        return 0
    return run.outer(argv[1], os.path.abspath(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
