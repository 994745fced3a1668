#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Push for every device on your own Dovecot, with the real Dovecot.

    metadata.py metadata /path/to/deltachat-push

A private Dovecot (2.3 or 2.4, whichever is installed) is configured with
a minimal site part written here and examples/dovecot-2.X-metadata.conf
included as the administrator would (only paths substituted).  An IMAP
client sends exactly the SETMETADATA commands Delta Chat core sends (both
forms), then mail is delivered over LMTP and Sieve's global after-script
(the metadata line of examples/deltachat-push.sieve) runs deltachat-push,
whose POSTs are checked byte for byte at a loopback endpoint.

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
import run  # noqa: E402

ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "s3cret-metadata-password"
DICT = "dovecot-attributes"

# The site part of a private, unprivileged Dovecot, for 2.3 and 2.4; the
# Delta Chat part (the example) is included at the end.
SITE = """\
%(head)s# Written by tests/callers/metadata.py.
base_dir = %(d)s/run
state_dir = %(d)s/state
instance_name = %(instance)s
log_path = %(d)s/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
default_internal_user = %(user)s
default_internal_group = %(group)s
default_login_user = %(user)s
first_valid_uid = %(uid)d
last_valid_uid = 0
first_valid_gid = 0
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
service anvil {
  chroot =
}
service auth {
  unix_listener auth-userdb {
    user = %(user)s
    mode = 0600
  }
}
service stats {
  unix_listener stats-reader {
    user = %(user)s
  }
  unix_listener stats-writer {
    user = %(user)s
  }
}
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

    def command(self, text):
        """Send 'TAG text\\r\\n' as one write; return (untagged, tagged)."""
        self.n += 1
        tag = b"A%04d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    def close(self):
        try:
            self.command(b"LOGOUT")
        except (OSError, RuntimeError):
            pass
        self.sock.close()


def upload(w, token, literal):
    """One Delta Chat device connecting: login, CAPABILITY, the token."""
    c = Imap(w.imap_port)
    try:
        _, ok = c.command(b'LOGIN "%s" "%s"' % (ALICE.encode(),
                                                  PASSWORD.encode()))
        caps, done = c.command(b"CAPABILITY")
        words = b" ".join(caps).split()
        t = token.encode()
        if literal:  # core 1.151.4 to 2.57
            cmd = (b'SETMETADATA "INBOX" (/private/devicetoken {%d+}\r\n'
                   % len(t) + t + b")")
        else:
            cmd = b'SETMETADATA "INBOX" (/private/devicetoken "%s")' % t
        _, set_ok = c.command(cmd)
        return ok, words, set_ok
    finally:
        c.close()


# ---------------------------------------------------------------- world

def start(w, tap):
    _, major = harness.dovecot_version()
    d = w.path("dovecot")
    for sub in ("run", "state", "sieve-pipe", "sieve-after"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    homes = {}
    with open(os.path.join(d, "passwd"), "w") as f:
        for user in (ALICE, BOB):
            home = w.path("homes", user.split("@")[0])
            os.makedirs(home, mode=0o700, exist_ok=True)
            homes[user] = home
            f.write("%s:{PLAIN}%s:%d:%d::%s::\n"
                    % (user, PASSWORD, w.uid, w.gid, home))
    # the admin's steps, as the example says
    os.symlink(w.wrapper, os.path.join(d, "sieve-pipe", "deltachat-push"))
    after = os.path.join(d, "sieve-after")
    script = metadata_script(w, os.path.join(after, "deltachat-push.sieve"))
    example = w.example(
        "dovecot-%s-metadata.conf" % major,
        [("/usr/lib/dovecot/sieve-pipe", os.path.join(d, "sieve-pipe")),
         ("/etc/dovecot/sieve-after", after)],
        dest=os.path.join(d, "deltachat-push.conf"))
    w.imap_port, w.lmtp_port = harness.free_port(), harness.free_port()
    v = dict(VERSIONS[major], d=d, user=w.user, group=w.group, uid=w.uid,
             imap=w.imap_port, lmtp=w.lmtp_port, example=example,
             instance="dcp-metadata-%d" % os.getpid())
    v["storage"] %= v
    conf = SITE % v
    w.dovecot_conf = os.path.join(d, "dovecot.conf")
    with open(w.dovecot_conf, "w") as f:
        f.write(conf)
    r = w.procs.run(["/usr/bin/doveconf", "-n", "-c", w.dovecot_conf],
                    env=w.env(), timeout=30)
    tap.ok(r.rc == 0 and not r.err.strip(),
           "Dovecot %s: doveconf -n accepts the example config" % major,
           repr(r))
    r = w.procs.run(["/usr/bin/sievec", "-c", w.dovecot_conf, script],
                    env=w.env(), timeout=30)
    tap.ok(r.rc == 0, "sievec compiles the after-script", repr(r))
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
    mid = "<metadata-%d-%d@example.net>" % (os.getpid(), _seq[0])
    msg = ("Received: from mx.example.net by mail.example.org with ESMTPS "
           "id M%d; %s\r\nFrom: %s\r\nTo: %s\r\nSubject: [...]\r\n"
           "Message-ID: %s\r\nChat-Version: 1.0\r\nMIME-Version: 1.0\r\n"
           "\r\nhello %d\r\n" % (_seq[0], time.strftime(
               "%a, %d %b %Y %H:%M:%S +0000", time.gmtime()), sender, rcpt,
               mid, _seq[0]))
    t0 = time.time()
    with smtplib.LMTP("127.0.0.1", w.lmtp_port, timeout=30) as c:
        refused = c.sendmail(sender, [rcpt], msg.encode())
    return t0, time.time() - t0, not refused


def dict_pairs(path):
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return []
    return list(zip(lines[0::2], lines[1::2]))


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
        tap.ok(ok and got == [t.encode() for t in expect]
               and len(new_runs) == 1 and new_runs[0][2] == 0,
               "%s: %d POST(s), exact bodies, deltachat-push exits 0"
               % (what, len(expect)),
               "LMTP ok %r; %d requests %r; runs %r"
               % (ok, len(got), [g[:16] for g in got], new_runs))
        if expect and n > base:
            latencies.append(srv.requests[base].time - t0)
        return took

    # the device's side, byte for byte as core does it
    ok, caps, set_ok = upload(w, a, literal=False)
    tap.ok(ok.endswith(b" OK Logged in") or b" OK " in ok, "IMAP login",
           repr(ok))
    tap.ok(b"METADATA" in caps and b"XDELTAPUSH" in caps
           and b"LITERAL+" in caps,
           "CAPABILITY lists METADATA, XDELTAPUSH (and LITERAL+)",
           repr(caps))
    tap.ok(b" OK " in set_ok, 'SETMETADATA "INBOX" (/private/devicetoken '
           '"<token>") answers OK', repr(set_ok))
    pairs = dict_pairs(dict_path)
    keys = [k for k, v in pairs if v == a.encode()]
    tap.ok(len(keys) == 1 and re.match(rb"^priv/[0-9a-f]{32}/devicetoken$",
                                       keys[0]),
           "Dovecot %s keeps it as priv/<INBOX GUID>/devicetoken" % major,
           repr(pairs)[:400])
    deliver("one device", [a])

    ok, caps, set_ok = upload(w, b, literal=True)
    tap.ok(b" OK " in set_ok, 'the literal form {N+}\\r\\n<token> answers '
           'OK', repr(set_ok))
    tap.ok([v for k, v in dict_pairs(dict_path) if k == keys[0]]
           == [b.encode()], "a stock Dovecot keeps only the last device's "
           "token", repr(dict_pairs(dict_path))[:300])
    deliver("a second device uploads: both pushed", [b, a])

    upload(w, a, literal=False)
    deliver("a device re-uploads the same ciphertext: no duplicate", [a, b])

    srv.set_statuses(["200", "410"])
    deliver("the proxy answers 410 for the second device", [a, b])
    deliver("after its 410 only the other device is pushed", [a])

    upload(w, a2, literal=True)
    deliver("a rotated token: the new one and the old one", [a2, a])
    srv.set_statuses(["200", "410"])
    deliver("... until the old one gets 410", [a2, a])
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

    hostile(w, tap, dict_path, deliver, a2)
    kept = w.maildir_count(os.path.join(homes[ALICE], "Maildir"))
    tap.ok(kept == _seq[0] - 1, "every message to alice was kept (pipe :copy)",
           "%d of %d" % (kept, _seq[0] - 1))

    tap.ok(latencies, "latencies measured")
    if latencies:
        tap.info("Dovecot %s, LMTP delivery -> POST: median %.0f ms, max "
                 "%.0f ms over %d messages (no IDLE client in between)"
                 % (major, statistics.median(latencies) * 1000,
                    max(latencies) * 1000, len(latencies)))


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
                         "/usr/bin/sievec", "/usr/lib/dovecot/lmtp",
                         "/usr/lib/dovecot/modules/sieve/"
                         "lib90_sieve_extprograms_plugin.so", "/usr/bin/time"]
run.LIMITS["metadata"] = 120
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
