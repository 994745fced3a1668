#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Push for every device on your own Dovecot, with the real Dovecot.

    metadata.py metadata /path/to/deltachat-push

A private Dovecot (2.3 or 2.4, whichever is installed) is configured with
a minimal site part written here and examples/dovecot-2.X-metadata.conf
included as the administrator would (only paths substituted), with the
login hook examples/deltachat-push.lua.  An IMAP client does exactly what
Delta Chat core does at login (core 2.60 and later: GETMETADATA of the
six server keys, then SETMETADATA of its token only if maxsmtprecipients
is a number; core 1.151.4 to 2.57: the literal form, if XDELTAPUSH), then
mail is delivered over LMTP and Sieve's global after-script (the metadata
line of examples/deltachat-push.sieve) runs deltachat-push, whose POSTs
are checked byte for byte at a loopback endpoint.  Several devices of one
account register one after the other, staying logged in (IDLE) as phones
do; the cost of a login with and without the hook is measured.

Root handling, time limits and clean-up are run.py's (this file only adds
its scenario there).
"""

import base64
import os
import re
import smtplib
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import dcpkit  # noqa: E402  (harness put it on the path)
import run  # noqa: E402

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"
# users who never log in before the login-cost measurement
FRESH = ["fresh%d@example.org" % i for i in range(5)]
USERS = [ALICE, BOB, CAROL] + FRESH
PASSWORD = "s3cret-metadata-password"
DICT = "dovecot-attributes"
DEVICES = DICT + ".devices"
LUA = "/etc/dovecot/deltachat-push.lua"
LIMIT = "/shared/vendor/deltachat/maxsmtprecipients"
# what core 2.60+ asks at login (src/imap.rs), byte for byte
CORE_GETMETADATA = (b'GETMETADATA "" (/shared/comment /shared/admin '
                    b'/shared/vendor/deltachat/irohrelay '
                    b'/shared/vendor/deltachat/turn '
                    b'/shared/vendor/deltachat/maxsmtprecipients '
                    b'/shared/vendor/deltachat/appversions)')

# The site part of a private, unprivileged Dovecot, for 2.3 and 2.4; the
# Delta Chat part (the example) is included at the end.
SITE = """\
%(head)s# Written by tests/callers/metadata.py.
%(private)s
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
# no address-space limit on the services (256M by default): the lmtp
# service runs deltachat-push, and AddressSanitizer builds of it reserve
# terabytes of address space
default_vsz_limit = %(unlimited)s
postmaster_address = postmaster@example.org
%(storage)s
service imap-login {
  chroot =
  inet_listener imap {
    %(listen)s = 127.0.0.1
    port = %(imap)d
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    %(listen)s = 127.0.0.1
    port = %(lmtp)d
  }
}
%(services)s
!include %(example)s
"""

VERSIONS = {
    "2.3": {"head": "", "listen": "address", "unlimited": "0",
            "storage": """\
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = %(d)s/passwd
}
userdb {
  driver = passwd-file
  args = %(d)s/passwd
}"""},
    "2.4": {"head": "dovecot_config_version = 2.4.1\n"
            "dovecot_storage_version = 2.4.1\n",
            "listen": "listen", "unlimited": "unlimited",
            "storage": """\
mail_driver = maildir
mail_path = ~/Maildir
passdb passwd-file {
  passwd_file_path = %(d)s/passwd
}
userdb passwd-file {
  passwd_file_path = %(d)s/passwd
}"""},
}


def fake_token(seed):
    """What core uploads: 'openpgp:' + base64 of an OpenPGP message."""
    raw = bytes((seed * 31 + i * 7) % 256 for i in range(660))
    return "openpgp:" + base64.b64encode(raw).decode()


# ---------------------------------------------------------------- IMAP

class Imap:
    """A raw IMAP connection: we send exact bytes and read answers."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), 10)
        self.buf = b""
        self.n = 0
        self.greeting = self.line()

    def line(self):
        deadline = time.monotonic() + 10
        while b"\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise RuntimeError("IMAP: no line in 10 s: %r" % self.buf)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("IMAP: connection closed: %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, n):
        deadline = time.monotonic() + 10
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("IMAP: no literal in 10 s: %r" % self.buf)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("IMAP: connection closed: %r" % self.buf)
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response_line(self):
        """One response line, a literal {N} in it inlined as {N}CRLF<N bytes>."""
        line = self.line()
        while True:
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return line
            line += b"\r\n" + self.exactly(int(m.group(1))) + self.line()

    def command(self, text):
        """Send 'TAG text\\r\\n' as one write; return (untagged, tagged)."""
        self.n += 1
        tag = b"A%04d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        untagged = []
        while True:
            line = self.response_line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    def idle(self):
        """IDLE, as a device waiting for mail; done() ends it."""
        self.n += 1
        self.idle_tag = b"A%04d" % self.n
        self.sock.sendall(self.idle_tag + b" IDLE\r\n")
        while not self.line().startswith(b"+"):
            pass

    def done(self):
        self.sock.sendall(b"DONE\r\n")
        while not self.line().startswith(self.idle_tag + b" "):
            pass

    def close(self):
        try:
            self.command(b"LOGOUT")
        except (OSError, RuntimeError):
            pass
        self.sock.close()


def metadata_value(untagged, key):
    """The value of key in '* METADATA' answers: bytes, or None for NIL
    or when absent."""
    for line in untagged:
        if not line.startswith(b"* METADATA "):
            continue
        m = re.search(re.escape(key.encode()) +
                      rb' (?:NIL|"([^"]*)"|\{(\d+)\}\r\n)', line)
        if not m:
            continue
        if m.group(2) is not None:
            return line[m.end():m.end() + int(m.group(2))]
        return m.group(1)
    return None


def login(w, user=ALICE, port=None):
    """A connection logged in as user; (connection, tagged LOGIN answer)."""
    c = Imap(port or w.imap_port)
    _, ok = c.command(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    return c, ok


class Device:
    """One Delta Chat device connecting, byte for byte as core does it.

    core="2.60": CAPABILITY, the GETMETADATA of the six server keys, and
    SETMETADATA "INBOX" (/private/devicetoken "<token>") only if
    maxsmtprecipients is a number.  core="2.57": the token as a literal
    {N+}, only if the server says XDELTAPUSH.  stay=True keeps the
    connection in IDLE (a phone waiting for mail) until close()."""

    def __init__(self, w, token, user=ALICE, core="2.60", stay=False,
                 port=None):
        self.c, self.ok = login(w, user, port)
        caps, _ = self.c.command(b"CAPABILITY")
        self.caps = b" ".join(caps).split()
        self.untagged, self.get_ok = self.c.command(CORE_GETMETADATA)
        self.limit = metadata_value(self.untagged, LIMIT)
        t = token.encode()
        self.set_ok = None
        if core == "2.57":
            if b"XDELTAPUSH" in self.caps:
                _, self.set_ok = self.c.command(
                    b'SETMETADATA "INBOX" (/private/devicetoken {%d+}\r\n'
                    % len(t) + t + b")")
        elif self.limit is not None and self.limit.isdigit():
            _, self.set_ok = self.c.command(
                b'SETMETADATA "INBOX" (/private/devicetoken "%s")' % t)
        if stay:
            self.c.idle()
        else:
            self.close()

    def close(self):
        if getattr(self.c, "idle_tag", None):
            try:
                self.c.done()
            except (OSError, RuntimeError):
                pass
        self.c.close()


# ---------------------------------------------------------------- world

# The one line of each example that loads the login hook, and what it
# becomes to measure a login without it.
HOOK_LINE = {"2.3": ("mail_plugins = $mail_plugins mail_lua",
                     "mail_plugins = $mail_plugins"),
             "2.4": ("mail_lua = yes", "mail_lua = no")}


def start(w, tap, hook=True, name="dovecot"):
    """Dovecot with the example files as the README installs them (hook:
    with the login hook loaded, as the example has it), in the directory
    name, for the users' homes under homes/."""
    _, major = harness.dovecot_version()
    d = w.path(name)
    for sub in ("run", "state", "sieve-pipe", "sieve-after"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    homes = {}
    with open(os.path.join(d, "passwd"), "w") as f:
        for user in USERS:
            home = w.path("homes", user.split("@")[0])
            os.makedirs(home, mode=0o700, exist_ok=True)
            homes[user] = home
            f.write("%s:{PLAIN}%s:%d:%d::%s::\n"
                    % (user, PASSWORD, w.uid, w.gid, home))
    # the admin's steps, as the example says
    link = os.path.join(d, "sieve-pipe", "deltachat-push")
    if not os.path.lexists(link):
        os.symlink(w.wrapper, link)
    after = os.path.join(d, "sieve-after")
    script = metadata_script(w, os.path.join(after, "deltachat-push.sieve"))
    lua = w.example("deltachat-push.lua", [],
                    dest=os.path.join(d, "deltachat-push.lua"), mode=0o644)
    replace = [("/usr/lib/dovecot/sieve-pipe", os.path.join(d, "sieve-pipe")),
               ("/etc/dovecot/sieve-after", after), (LUA, lua)]
    if not hook:
        replace.append(HOOK_LINE[major])
    example = w.example(
        "dovecot-%s-metadata.conf" % major, replace,
        dest=os.path.join(d, "deltachat-push.conf"))
    w.imap_port, w.lmtp_port = harness.free_port(), harness.free_port()
    v = dict(VERSIONS[major], d=d, user=w.user, group=w.group, uid=w.uid,
             imap=w.imap_port, lmtp=w.lmtp_port, example=example,
             instance="dcp-metadata-%s-%d" % (name, os.getpid()))
    v["storage"] %= v
    v.update(private=harness.DOVECOT_PRIVATE % v,
             services=harness.DOVECOT_SERVICES % v)
    conf = SITE % v
    w.dovecot_conf = os.path.join(d, "dovecot.conf")
    with open(w.dovecot_conf, "w") as f:
        f.write(conf)
    r = w.procs.run(["/usr/bin/doveconf", "-n", "-c", w.dovecot_conf],
                    env=w.env(), timeout=30)
    what = "" if hook else " (login hook off)"
    tap.ok(r.returncode == 0 and not r.stderr.strip(),
           "Dovecot %s: doveconf -n accepts the example config%s"
           % (major, what), repr(r))
    r = w.procs.run(["/usr/bin/sievec", "-c", w.dovecot_conf, script],
                    env=w.env(), timeout=30)
    tap.ok(r.returncode == 0, "sievec compiles the after-script%s" % what, repr(r))
    w.dovecot = w.procs.start(["/usr/sbin/dovecot", "-F", "-c",
                               w.dovecot_conf],
                              log=os.path.join(d, "master.out"), env=w.env())
    if not (harness.wait_port(w.imap_port, 20)
            and harness.wait_port(w.lmtp_port, 20)):
        raise RuntimeError("dovecot did not start:\n%s\n%s" % (
            harness.tail(os.path.join(d, "master.out")),
            harness.tail(os.path.join(d, "dovecot.log"))))
    w.dovecot_log = os.path.join(d, "dovecot.log")
    return major, homes


def metadata_script(w, dest):
    """examples/deltachat-push.sieve with its metadata line in use."""
    line = 'pipe :copy :try "deltachat-push" ["--token-file=%s/.config/' \
        'deltachat-push/tokens"];\n' % harness.PH_HOME
    meta = '#pipe :copy :try "deltachat-push" ' \
        '["--dovecot-metadata=dovecot-attributes"];'
    return w.example("deltachat-push.sieve",
                     [(line, ""), (meta, meta[1:])], dest=dest)


_seq = [0]


def lmtp(w, rcpt=ALICE, sender="bob@example.net"):
    """Deliver one message over LMTP; returns (t0, took, ok)."""
    _seq[0] += 1
    msg = dcpkit.message([
        "Received: from mx.example.net by mail.example.org with ESMTPS "
        "id M%d; %s" % (_seq[0], dcpkit.date()),
        "From: " + sender, "To: " + rcpt, "Subject: [...]",
        "Message-ID: " + dcpkit.message_id("metadata", "example.net"),
        "Chat-Version: 1.0", "MIME-Version: 1.0"],
        "hello %d\n" % _seq[0], eol="\r\n")
    t0 = time.time()
    with smtplib.LMTP("127.0.0.1", w.lmtp_port, timeout=30) as c:
        refused = c.sendmail(sender, [rcpt], msg)
    return t0, time.time() - t0, not refused


def dict_pairs(path):
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return []
    return list(zip(lines[0::2], lines[1::2]))


def devices_file(home):
    """[(time, token)] of the login hook's file, or None when absent."""
    try:
        with open(os.path.join(home, DEVICES)) as f:
            return [tuple(line.rstrip("\n").split(" ", 1))
                    for line in f if " " in line]
    except OSError:
        return None


def hook_saw(home, tokens, timeout=5):
    """Wait (bounded) until the devices file holds every token: the
    logout hook runs after the LOGOUT answer."""
    return harness.wait_until(
        lambda: set(tokens) <= {t for _, t in devices_file(home) or []},
        timeout)


# ---------------------------------------------------------------- scenario

def scenario_metadata(w, tap):
    srv = w.start_server()
    major, homes = start(w, tap)
    dict_path = os.path.join(homes[ALICE], DICT)
    a, b, a2 = fake_token(1), fake_token(2), fake_token(3)
    latencies = []

    def deliver(what, expect, rcpt=ALICE, sender="bob@example.net"):
        base = len(srv.requests)
        runs = len(w.runs())
        t0, took, ok = lmtp(w, rcpt, sender)
        n = srv.wait_for(base + len(expect), 10)
        time.sleep(0.3)  # anything extra would arrive by now
        got = [r.body for r in srv.requests[base:]]
        new_runs = w.runs()[runs:]
        # one run POSTs its tokens at once: they arrive in any order
        tap.ok(ok and sorted(got) == sorted(t.encode() for t in expect)
               and len(new_runs) == 1 and new_runs[0][2] == 0,
               "%s: %d POST(s), exact bodies, deltachat-push exits 0"
               % (what, len(expect)),
               "LMTP ok %r; %d requests %r; expected %r; runs %r"
               % (ok, len(got), [g[:24] for g in got],
                  [t[:24] for t in expect], new_runs))
        if expect and n > base:
            latencies.append(srv.requests[base].time - t0)
        return took

    # a user who never logged in: the number is there on the first login
    t0 = time.monotonic()
    dev = Device(w, a)
    first_login = time.monotonic() - t0
    tap.ok(b" OK " in dev.ok, "IMAP login", repr(dev.ok))
    tap.ok(b"METADATA" in dev.caps and b"XDELTAPUSH" in dev.caps
           and b"LITERAL+" in dev.caps,
           "CAPABILITY lists METADATA, XDELTAPUSH (and LITERAL+)",
           repr(dev.caps))
    tap.ok(b" OK " in dev.get_ok and dev.limit == b"1000",
           "first login of a new user: GETMETADATA \"\" answers "
           "maxsmtprecipients 1000", repr(dev.untagged))
    tap.ok(dev.set_ok is not None and b" OK " in dev.set_ok,
           "so core 2.60+ sends SETMETADATA \"INBOX\" (/private/devicetoken "
           '"<token>"), answered OK', repr(dev.set_ok))
    pairs = dict_pairs(dict_path)
    keys = [k for k, v in pairs if v == a.encode()]
    tap.ok(len(keys) == 1 and re.match(rb"^priv/[0-9a-f]{32}/devicetoken$",
                                       keys[0]),
           "Dovecot %s keeps it as priv/<INBOX GUID>/devicetoken" % major,
           repr(pairs)[:400])
    limit_keys = [k for k, v in pairs if k.endswith(
        b"/vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
        b"maxsmtprecipients")]
    tap.ok(len(limit_keys) == 1 and limit_keys[0].startswith(b"shared/")
           and v_of(pairs, limit_keys[0]) == b"1000",
           "... and the number as shared/<INBOX GUID>/vendor/vendor.dovecot/"
           "pvt/server/vendor/deltachat/maxsmtprecipients", repr(pairs)[:400])
    tap.ok(hook_saw(homes[ALICE], [a]),
           "the logout hook recorded the token in %s" % DEVICES,
           repr(devices_file(homes[ALICE])))
    mode = os.stat(os.path.join(homes[ALICE], DEVICES)).st_mode & 0o777
    tap.ok(mode == 0o600, "%s is 0600" % DEVICES, oct(mode))
    deliver("one device", [a])

    dev = Device(w, b, core="2.57")
    tap.ok(dev.set_ok is not None and b" OK " in dev.set_ok,
           "core 1.151.4-2.57: the literal form {N+}\\r\\n<token> answers "
           "OK", repr(dev.set_ok))
    tap.ok([v for k, v in dict_pairs(dict_path) if k == keys[0]]
           == [b.encode()], "a stock Dovecot keeps only the last device's "
           "token", repr(dict_pairs(dict_path))[:300])
    deliver("a second device uploads: both pushed", [b, a])

    Device(w, a)
    deliver("a device re-uploads the same ciphertext: no duplicate", [a, b])

    srv.set_body_status(b.encode(), "410")
    deliver("the proxy answers 410 for the second device", [a, b])
    srv.set_body_status(b.encode(), None)
    deliver("after its 410 only the other device is pushed", [a])

    Device(w, a2, core="2.57")
    deliver("a rotated token: the new one and the old one", [a2, a])
    srv.set_body_status(a.encode(), "410")
    deliver("... until the old one gets 410", [a2, a])
    srv.set_body_status(a.encode(), None)
    deliver("then only the new one", [a2])

    deliver("mail From the account itself: no push", [], sender=ALICE)

    # bob's Dovecot has no metadata file (metadata off, or no upload yet);
    # he has a token of his own in his config
    cfg = os.path.join(homes[BOB], ".config", "deltachat-push")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "config"), "w") as f:
        f.write("[deltachat-push]\ntokens=%s\n" % harness.TOKEN)
    deliver("no metadata file: exit 0, the other tokens pushed",
            [harness.TOKEN], rcpt=BOB)

    every_device(w, tap, homes[CAROL], deliver)
    user_changes_limit(w, tap)
    devices_upkeep(w, tap, homes[CAROL])

    reply_after_automatic(w, tap, srv)
    hostile(w, tap, dict_path, deliver, a2)
    huge_dict_login(w, tap, dict_path)
    kept = w.maildir_count(os.path.join(homes[ALICE], "Maildir"))
    tap.ok(kept == _seq[0] - 1 - CAROL_MESSAGES,
           "every message to alice was kept (pipe :copy)",
           "%d of %d" % (kept, _seq[0] - 1 - CAROL_MESSAGES))

    tap.ok(latencies, "latencies measured")
    if latencies:
        tap.info("Dovecot %s, LMTP delivery -> POST: median %.0f ms, max "
                 "%.0f ms over %d messages (no IDLE client in between)"
                 % (major, statistics.median(latencies) * 1000,
                    max(latencies) * 1000, len(latencies)))
    login_cost(w, tap, major, first_login)
    # the hook reports its problems (a failed doveadm, a file it cannot
    # write) in Dovecot's log
    with open(w.dovecot_log, errors="replace") as f:
        bad = [line for line in f
               if re.search(r"\b(Error|Fatal|Panic)\b|deltachat-push\.lua",
                            line) and HUGE_LINE not in line]
    tap.ok(not bad, "Dovecot's log holds no other error", "".join(bad[:10]))


HUGE_LINE = "is larger than 1 MiB, not read"


def huge_dict_login(w, tap, dict_path):
    """A dict over the hook's 1 MiB limit: the login goes on, the hook
    says why it did nothing, once, in Dovecot's log."""
    guid = b"00112233445566778899aabbccddeeff"
    with open(dict_path, "wb") as f:
        for i in range(24000):
            f.write(b"priv/%s/vendor/x%05d\n%s\n" % (guid, i, b"v" * 64))
    dev = Device(w, fake_token(30))
    tap.ok(b" OK " in dev.ok and b" OK " in dev.get_ok,
           "a 2 MiB dict: the login and GETMETADATA still answer OK",
           repr((dev.ok, dev.get_ok)))

    def said():
        with open(w.dovecot_log, errors="replace") as f:
            return [line for line in f if HUGE_LINE in line]
    lines = harness.wait_until(said, 5)
    tap.ok(lines and len(lines) <= 2 and "Error: deltachat-push.lua: "
           + ALICE in lines[0],
           "... and the hook logs one line why it read nothing (login and "
           "logout)", repr(lines))


def v_of(pairs, key):
    return dict(pairs).get(key)


CAROL_MESSAGES = 4


def every_device(w, tap, home, deliver):
    """Devices registering one after the other, each staying connected in
    IDLE as a phone does: a stock Dovecot keeps only the last token, the
    login hook catches the earlier ones."""
    a, b, c = fake_token(11), fake_token(12), fake_token(13)
    devs = []

    def carol(what, expect):
        deliver(what, expect, rcpt=CAROL)

    try:
        devs.append(Device(w, a, user=CAROL, stay=True))
        devs.append(Device(w, b, user=CAROL, stay=True))
        tap.ok(all(d.set_ok and b" OK " in d.set_ok for d in devs),
               "devices A and B of one account register, one after the "
               "other, and stay in IDLE", repr([d.set_ok for d in devs]))
        tap.ok(hook_saw(home, [a], 1),
               "B's login recorded A's token (the one B overwrites)",
               repr(devices_file(home)))
        carol("then one message: A and B pushed", [b, a])
        devs.append(Device(w, c, user=CAROL, stay=True))
        carol("C registers while A and B idle: the next message pushes all "
              "three", [c, b, a])
        w.server.set_body_status(b.encode(), "410")
        carol("the proxy answers 410 for B", [c, b, a])
        w.server.set_body_status(b.encode(), None)
        tap.ok(hook_saw(home, [b], 1),
               "B's token is still in the hook's file",
               repr(devices_file(home)))
        carol("B is no longer pushed, A and C are", [c, a])
    finally:
        for d in devs:
            d.close()
    tap.ok(hook_saw(home, [a, b, c]), "after the logouts the file holds "
           "each device once", repr(devices_file(home)))
    tap.ok(len(devices_file(home) or []) == 3, "... and nothing else",
           repr(devices_file(home)))


def devices_upkeep(w, tap, home):
    """What the hook does with its file: keeps what is valid and recent,
    drops junk and tokens it has not seen for 90 days."""
    path = os.path.join(home, DEVICES)
    now = int(time.time())
    recent, old, new = fake_token(40), fake_token(41), fake_token(42)
    # replaced whole, as the hook does: the logout hook of the previous
    # session may still be reading it
    with open(path + ".test", "w") as f:
        f.write("junk without a time\n%d %s\n\n%d %s\nx 1\n"
                "99999999999999999999 %s\n"
                % (now - 10 * 86400, recent, now - 100 * 86400, old,
                   fake_token(43)))
    os.rename(path + ".test", path)
    Device(w, new, user=CAROL)
    ok = hook_saw(home, [new])
    got = devices_file(home) or []
    with open(path) as f:
        lines = f.read().splitlines()
    tap.ok(ok and [t for _, t in got][0] == new
           and recent in [t for _, t in got] and old not in
           [t for _, t in got] and len(lines) == len(got) == 3,
           "the hook keeps its file: the new device first, the one seen 10 "
           "days ago, not the one seen 100 days ago, no junk",
           repr([(t, k[:20]) for t, k in got]))
    tap.ok(os.stat(path).st_mode & 0o777 == 0o600
           and not [n for n in os.listdir(home) if ".tmp." in n],
           "... rewritten 0600, no temporary file left",
           repr(os.listdir(home)))


def reply_after_automatic(w, tap, srv):
    """With the default rate limit (--window 10, --burst 3, a cache of its
    own): an automatic message (core's read receipts look like chat from
    outside) and a reply 2 s later are each pushed at once."""
    w.set_window(10)
    try:
        pushed = []
        for i in range(2):
            if i:
                time.sleep(max(0.0, t0 + 2 - time.time()))
            base = len(srv.requests)
            t0, _, ok = lmtp(w)
            want = len(pushed[0][1]) if pushed else 1
            srv.wait_for(base + want, 10)
            time.sleep(0.3)  # every token of the run is in by now
            pushed.append((t0, srv.requests[base:], ok))
    finally:
        os.unlink(w.path("window"))
    lat = [max(r.time for r in got) - t0 if got else -1 for t0, got, _ in pushed]
    tap.ok(all(ok for _, _, ok in pushed) and pushed[0][1]
           and len(pushed[1][1]) == len(pushed[0][1])
           and all(0 <= x < 1.0 for x in lat),
           "defaults: an automatic message and a reply 2 s later are each "
           "pushed within 1 s of delivery",
           "POSTs %r, latencies %r" % ([len(g) for _, g, _ in pushed], lat))
    tap.info("defaults, delivery -> last POST of the run: automatic message "
             "%.0f ms, the reply 2 s later %.0f ms" % (lat[0] * 1000, lat[1] * 1000))


def user_changes_limit(w, tap):
    """A user may set or clear the server's value for itself; the next
    login sets it back."""
    for value, shown in ((b'"5"', "5"), (b"NIL", "NIL")):
        c, _ = login(w, CAROL)
        try:
            _, ok = c.command(b'SETMETADATA "" (%s %s)' % (LIMIT.encode(),
                                                          value))
            untagged, _ = c.command(CORE_GETMETADATA)
            now = metadata_value(untagged, LIMIT)
        finally:
            c.close()
        tap.ok(b" OK " in ok and now == (None if shown == "NIL" else b"5"),
               "the user sets maxsmtprecipients to %s for itself" % shown,
               repr((ok, untagged)))
        dev = Device(w, fake_token(13), user=CAROL)
        tap.ok(dev.limit == b"1000", "the next login sets it back to 1000",
               repr(dev.untagged))


def login_cost(w, tap, major, first_login, n=50):
    """Connect, greeting, LOGIN answered: n logins of a user whose value
    is set and whose devices are recorded (the common login), alternating
    between this Dovecot and a second one on the same homes without the
    hook loaded; and the first login of users who never logged in (the
    hook runs doveadm)."""
    def one(port, user):
        t0 = time.monotonic()
        c, ok = login(w, user, port)
        took = time.monotonic() - t0
        c.close()
        if b" OK " not in ok:
            raise RuntimeError("login failed: %r" % ok)
        return took

    firsts = [first_login] + [one(w.imap_port, u) for u in FRESH]
    fresh_ok = all(Device(w, fake_token(20), user=u).limit == b"1000"
                   for u in FRESH)
    tap.ok(fresh_ok, "%d more new users: each has 1000 on its first login"
           % len(FRESH))
    saved = (w.imap_port, w.lmtp_port, w.dovecot_log, w.dovecot_conf)
    start(w, tap, hook=False, name="dovecot-nohook")
    port, without_port = saved[0], w.imap_port
    w.imap_port, w.lmtp_port, w.dovecot_log, w.dovecot_conf = saved
    with_hook, without = [], []
    home = w.path("homes", CAROL.split("@")[0])

    def files():
        out = []
        for name in (DICT, DEVICES):
            st = os.stat(os.path.join(home, name))
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return out
    before = files()
    for _ in range(n):
        with_hook.append(one(port, CAROL))
        without.append(one(without_port, CAROL))
    tap.ok(files() == before, "the common login only reads: %d logins "
           "changed neither the dict (no doveadm) nor the devices file" % n,
           repr((before, files())))
    dev = Device(w, fake_token(21), user=FRESH[0], port=without_port)
    tap.ok(dev.limit == b"1000", "without the hook the value set before "
           "stays (it is the user's metadata)", repr(dev.untagged))
    med_with = statistics.median(with_hook) * 1000
    med_without = statistics.median(without) * 1000
    tap.ok(len(with_hook) == n and len(without) == n,
           "login cost measured over %d logins each" % n)
    tap.info("Dovecot %s, IMAP connect to LOGIN answered, median of %d "
             "(alternating): %.1f ms with the login hook, %.1f ms without "
             "(added %.1f ms); 90th percentile %.1f / %.1f ms"
             % (major, n, med_with, med_without, med_with - med_without,
                sorted(with_hook)[n * 9 // 10] * 1000,
                sorted(without)[n * 9 // 10] * 1000))
    tap.info("Dovecot %s, first login of a new user (the hook runs doveadm): "
             "median %.0f ms, max %.0f ms over %d users"
             % (major, statistics.median(firsts) * 1000,
                max(firsts) * 1000, len(firsts)))


def hostile(w, tap, dict_path, deliver, known):
    """Dictionary files Dovecot would never write: bounded, nothing
    malformed sent, the remembered device still pushed."""
    key = b"priv/00112233445566778899aabbccddeeff/devicetoken\n"
    cases = [
        ("a 2 MiB file", key + known.encode() + b"x\n" + b"y" * (2 << 20)),
        ("binary junk", bytes(range(256)) * 2048),
        ("a value with an escaped newline", key + b"openpgp:ab\001ncd\n"),
        ("a value with a quote", key + b'openpgp:ab"cd\n'),
        ("a value with a NUL", key + b"openpgp:ab\0cd\n"),
    ]
    many = b"".join(b"priv/%032x/devicetoken\nopenpgp:tok%05d\n" % (i, i)
                    for i in range(10000))
    cases.append(("10 000 device keys", many))
    for what, content in cases:
        with open(dict_path, "wb") as f:
            f.write(content)
        expect = [known]
        if what.startswith("10 000"):
            expect = ["openpgp:tok%05d" % i for i in range(32)] + [known]
        runs = len(w.runs())
        took = deliver("hostile dictionary (%s)" % what, expect)
        r = w.runs()[runs:]
        tap.ok(took < 10 and r and r[0][3] < 32 * 1024,
               "... bounded: delivery %.2f s, peak RSS %d KB"
               % (took, r[0][3] if r else -1))


# ---------------------------------------------------------------- main

run.TOOLS["metadata"] = ["/usr/sbin/dovecot", "/usr/bin/doveconf",
                         "/usr/bin/doveadm",
                         "/usr/lib/dovecot/modules/lib01_mail_lua_plugin.so",
                         "/usr/bin/sievec", "/usr/lib/dovecot/lmtp",
                         "/usr/lib/dovecot/modules/sieve/"
                         "lib90_sieve_extprograms_plugin.so", "/usr/bin/time"]
run.LIMITS["metadata"] = 150
run.scenario_metadata = scenario_metadata


def main(argv):
    if len(argv) >= 5 and argv[1] == "--inner":
        sys.path.insert(0, os.path.join(argv[4], "harness"))
        return run.inner(argv[2], argv[3], argv[4])
    if len(argv) != 3 or argv[1] != "metadata":
        print("usage: metadata.py metadata DELTACHAT-PUSH", file=sys.stderr)
        return 2
    if harness.skip_missing_tools(run.TOOLS["metadata"]):
        return 0
    return run.outer(argv[1], os.path.abspath(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
