# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared machinery for the caller tests (tests/callers/run.py).

Everything here runs as one unprivileged user, in one temporary directory,
on 127.0.0.1 only: a real Dovecot (IMAPS with IDLE, dovecot-lda with
Pigeonhole Sieve) configured from scratch, a notification endpoint
(tests/httpd.py), a wrapper around deltachat-push that records each run,
and helpers to start and reliably stop every process we start.
"""

import imaplib
import os
import pwd
import grp
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# httpd.py and dcpkit.py live in tests/ next to this directory, or were
# copied beside us.
for d in (HERE, os.path.dirname(HERE)):
    if os.path.exists(os.path.join(d, "httpd.py")):
        sys.path.insert(0, d)
        break
import dcpkit  # noqa: E402
from dcpkit import Result, Tap, free_port, wait_port, wait_until  # noqa: E402,F401 (for the scenarios too)
from httpd import Server  # noqa: E402

EXAMPLES = None  # set by run.py: the examples/ directory (or its copy)

# Placeholders in examples/*: plain strings replaced by str.replace().
PH_HOST = "imap.example.org"
PH_USER = "alice@example.org"
PH_BIN = "/usr/local/bin/deltachat-push"
PH_HOME = "/home/alice"
PH_CA = "/etc/ssl/certs/ca-certificates.crt"
PH_PASSWORD_CMD = "/usr/bin/secret-tool"
PH_PASSWORD = "secret-password"
PH_SIEVE_BIN = "/usr/lib/dovecot/sieve-pipe"

USER = "testuser"
PASSWORD = "s3cret-test-password"
TOKEN = "fcm-chat.delta:test-token-for-callers"


# ---------------------------------------------------------------- processes

class Procs:
    """Every process we start gets its own process group; all are killed
    at the end, and their group ids are recorded in a file so the
    privileged outer runner can kill them too if we die first."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.pgfile = os.path.join(tmp, "pgids")
        self.procs = []
        self.groups = []  # groups of run() commands
        self.lock = threading.Lock()

    def start(self, argv, log=None, **kw):
        out = open(log, "ab") if log else subprocess.DEVNULL
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT
                             if log else subprocess.DEVNULL,
                             start_new_session=True, **kw)
        if log:
            out.close()
        with self.lock:
            self.procs.append(p)
            with open(self.pgfile, "a") as f:
                f.write("%d\n" % p.pid)
        return p

    def run(self, argv, input=None, timeout=60, **kw):
        """Run to completion in its own group; kill the group on timeout."""
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None
                             else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, **kw)
        with self.lock:
            with open(self.pgfile, "a") as f:
                f.write("%d\n" % p.pid)
        self.groups.append(p.pid)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            return Result(None, out, err, time.monotonic() - t0, timed_out=True)
        # What it left behind in its group (a trailing push, if it does
        # not leave the group) lives on until stop_all(), as it would
        # under a real caller.
        return Result(p.returncode, out, err, time.monotonic() - t0)

    def stop(self, p, sig=signal.SIGTERM, wait=5):
        if p.poll() is None:
            killpg(p.pid, sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        killpg(p.pid, signal.SIGKILL)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in reversed(procs):
            self.stop(p, wait=3)
        for pgid in self.groups:
            killpg(pgid, signal.SIGKILL)


def killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- tools

def missing_tools(tools):
    """The programs (names on PATH, or absolute paths) not installed."""
    return [t for t in tools
            if not (os.path.exists(t) if os.path.isabs(t) else shutil.which(t))]


def skip_missing_tools(tools):
    """With DCP_MISSING_TOOLS=skip (meson's -Dcaller_tests=auto), print a
    TAP plan that skips the test, naming what is missing, and return True.
    Otherwise the scenario runs, and a missing program is its failure."""
    missing = missing_tools(tools)
    if missing and os.environ.get("DCP_MISSING_TOOLS") == "skip":
        print("1..0 # SKIP %s not installed" % ", ".join(missing), flush=True)
        return True
    return False


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(%s)" % e


# ---------------------------------------------------------------- world

class World:
    """The temporary directory and everything in it."""

    def __init__(self, tmp, binary, procs, tap):
        self.tmp = tmp
        self.real_binary = binary
        self.procs = procs
        self.tap = tap
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.user = pwd.getpwuid(self.uid).pw_name
        self.group = grp.getgrgid(self.gid).gr_name
        self.home = self.path("home")
        self.maildir = os.path.join(self.home, "Maildir")
        self.cache = self.path("cache")
        self.runs_log = self.path("runs.log")
        self.url_file = self.path("url")
        self.token_file = os.path.join(self.home, ".config", "deltachat-push",
                                       "tokens")
        for d in (self.home, self.cache, self.path("bin"),
                  os.path.dirname(self.token_file)):
            os.makedirs(d, mode=0o700, exist_ok=True)
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(self.token_file, 0o600)
        self.wrapper = self.path("bin", "deltachat-push")
        self.write_wrapper()
        self.server = None
        self.dovecot = None

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def env(self, **extra):
        e = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
             "HOME": self.home, "USER": self.user, "LOGNAME": self.user,
             "LANG": "C.UTF-8", "TZ": "UTC", "XDG_CACHE_HOME": self.cache,
             "XDG_CONFIG_HOME": os.path.join(self.home, ".config"),
             "TMPDIR": self.path("tmp")}
        os.makedirs(e["TMPDIR"], exist_ok=True)
        e.update(extra)
        return e

    def write_wrapper(self):
        """A stand-in for /usr/local/bin/deltachat-push: runs the real
        binary under /usr/bin/time (peak RSS) with the endpoint URL (file
        'url'), --window=0 (or the content of the file 'window') and
        --retry=caller added: run.py's scenarios see the exit-75 contract
        with real callers, unless set_retry() says otherwise.  It logs
        one line per run to runs.log:
            start end exitcode maxrss_kb stdin-kind pid user
        (user: $USER, which Dovecot sets to the recipient's login)
        It execs nothing else and adds nothing to stdout or stderr.  If
        the file 'capture' exists, stdin is also copied to capture.N."""
        t = self.tmp
        script = r"""#!/bin/sh
# test wrapper written by tests/callers/harness.py
XDG_CACHE_HOME=%(t)s/cache
DCP_CALLERS_RUN=%(t)s
export XDG_CACHE_HOME DCP_CALLERS_RUN
start=$(/bin/date +%%s.%%N)
kind=file
[ -p /dev/stdin ] && kind=pipe
url=$(/bin/cat %(t)s/url)
window=0
if [ -e %(t)s/window ]; then
    # a state directory of its own, so earlier pushes (window 0) do not
    # count against the window
    window=$(/bin/cat %(t)s/window)
    XDG_CACHE_HOME=%(t)s/cache-window$window
fi
retry=caller
if [ -e %(t)s/retry ]; then
    retry=$(/bin/cat %(t)s/retry)
    DCP_RETRY_SCHEDULE=$(/bin/cat %(t)s/retry-schedule)
    DCP_RETRY_LOG=%(t)s/detached.log
    export DCP_RETRY_SCHEDULE DCP_RETRY_LOG
fi
rss=%(t)s/rss.$$
if [ -e %(t)s/capture ]; then
    /usr/bin/tee %(t)s/capture.$$ | /usr/bin/time -f %%M -o "$rss" \
        %(bin)s --url="$url" --window="$window" --retry="$retry" "$@"
    rc=$?
else
    /usr/bin/time -f %%M -o "$rss" %(bin)s --url="$url" --window="$window" \
        --retry="$retry" "$@"
    rc=$?
fi
end=$(/bin/date +%%s.%%N)
kb=$(/usr/bin/tail -n 1 "$rss" 2>/dev/null)
/bin/rm -f "$rss"
echo "$start $end $rc ${kb:-0} $kind $$ ${USER:--}" >> %(t)s/runs.log
exit $rc
""" % {"t": t, "bin": self.real_binary}
        with open(self.wrapper, "w") as f:
            f.write(script)
        os.chmod(self.wrapper, 0o755)

    def set_retry(self, mode, schedule=""):
        """--retry=MODE for the runs from now on, and DCP_RETRY_SCHEDULE."""
        with open(self.path("retry-schedule"), "w") as f:
            f.write(schedule)
        with open(self.path("retry"), "w") as f:
            f.write(mode)

    def set_window(self, seconds):
        with open(self.path("window"), "w") as f:
            f.write(str(seconds))

    def leftovers(self):
        """PIDs of deltachat-push processes (or our wrapper) still running:
        runs that outlived their caller, e.g. trailing pushes.  Found
        through /proc by our wrapper's environment mark or by the binary's
        path, never by name."""
        mark = ("DCP_CALLERS_RUN=" + self.tmp).encode()
        exe = os.path.realpath(self.real_binary)
        return [p.pid for p in dcpkit.processes() if p.uid == self.uid and
                (p.exe == exe or mark in p.environ)]

    def kill_leftovers(self):
        pids = self.leftovers()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return pids

    def set_url(self, url):
        with open(self.url_file + ".new", "w") as f:
            f.write(url)
        os.rename(self.url_file + ".new", self.url_file)

    def start_server(self, statuses=(), default="200"):
        self.server = Server(statuses=statuses, default=default).start()
        self.set_url(self.server.url)
        return self.server

    def runs(self):
        """[(start, end, rc, maxrss_kb, kind)] of deltachat-push runs."""
        out = []
        try:
            with open(self.runs_log) as f:
                for line in f:
                    p = line.split()
                    if len(p) >= 5:
                        out.append((float(p[0]), float(p[1]), int(p[2]),
                                    int(p[3]) if p[3].isdigit() else 0, p[4]))
        except OSError:
            pass
        return out

    # ------------------------------------------------------------ dovecot

    def start_dovecot(self, sieve_bin=None):
        d = self.path("dovecot")
        os.makedirs(d, mode=0o700, exist_ok=True)
        for sub in ("run", "state"):
            os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
        self.cert = os.path.join(d, "cert.pem")
        key = os.path.join(d, "key.pem")
        r = self.procs.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", self.cert, "-days", "2",
             # fetchmail matches names only (CN and DNS SANs), Python
             # matches an IP address only against IP SANs: give both.
             "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=DNS:127.0.0.1,IP:127.0.0.1"],
            timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl req failed: %r" % r)
        os.chmod(key, 0o600)
        self.imaps_port = free_port()
        with open(os.path.join(d, "passwd"), "w") as f:
            f.write("%s:{PLAIN}%s:%d:%d::%s::\n"
                    % (USER, PASSWORD, self.uid, self.gid, self.home))
        sieve_bin = sieve_bin or os.path.join(d, "sieve-bin")
        os.makedirs(sieve_bin, exist_ok=True)
        self.sieve_bin = sieve_bin
        self.dovecot_log = os.path.join(d, "dovecot.log")
        self.dovecot_conf = self.write_dovecot_conf(d, key)
        self.dovecot = self.procs.start(
            ["/usr/sbin/dovecot", "-F", "-c", self.dovecot_conf],
            log=os.path.join(d, "master.out"), env=self.env())
        if not wait_port(self.imaps_port, 20):
            raise RuntimeError("dovecot did not start:\n%s\n%s" % (
                tail(os.path.join(d, "master.out")), tail(self.dovecot_log)))
        return self.dovecot

    def write_dovecot_conf(self, d, key):
        """dovecot.conf in the syntax of the installed Dovecot, including
        the example for that version (examples/dovecot-2.X-sieve.conf) with
        only its sieve_pipe_bin_dir replaced, as a user would install it."""
        full, version = dovecot_version()
        self.tap.info("Dovecot %s: %s syntax, "
                      "examples/dovecot-%s-sieve.conf" % (full, version, version))
        sieve = self.example(
            "dovecot-%s-sieve.conf" % version,
            [(PH_SIEVE_BIN, self.sieve_bin)],
            dest=os.path.join(d, "deltachat-push.conf"))
        first, syntax = DOVECOT_SYNTAX[version]
        self.dovecot_instance = "dcp-callers-%d" % os.getpid()
        values = {
            "d": d, "port": self.imaps_port, "user": self.user,
            "group": self.group, "uid": self.uid, "cert": self.cert,
            "key": key, "sieve_conf": sieve,
            "instance": self.dovecot_instance}
        values.update(version=first, syntax=syntax % values,
                      private=DOVECOT_PRIVATE % values,
                      services=DOVECOT_SERVICES % values)
        conf = DOVECOT_CONF % values
        path = os.path.join(d, "dovecot.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def imap_idling(self):
        """Whether a client of this Dovecot is in IDLE: with
        verbose_proctitle an imap process's title names the command it
        runs ("dovecot-INSTANCE/imap [testuser 127.0.0.1 IDLE]")."""
        want = ("%s/imap [" % self.dovecot_instance).encode()
        return any(want in p.cmdline and b" IDLE]" in p.cmdline
                   for p in dcpkit.processes())

    def wait_idle(self, timeout=20):
        """Wait until getmail --idle is in IDLE again, so its pass over the
        INBOX (and every run it made) is over; whether it came in time."""
        return wait_until(self.imap_idling, timeout)

    def stop_dovecot(self):
        if self.dovecot is not None:
            self.procs.stop(self.dovecot, wait=5)
            self.dovecot = None

    def deliver(self, msg, timeout=30):
        """Deliver one message with dovecot-lda; returns (t0, Result)."""
        t0 = time.time()
        r = self.procs.run(
            ["/usr/lib/dovecot/dovecot-lda", "-c", self.dovecot_conf,
             "-d", USER, "-f", "sender@example.net"],
            input=msg, timeout=timeout, env=self.env())
        return t0, r

    def imap(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        c = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=ctx,
                              timeout=15)
        c.login(USER, PASSWORD)
        return c

    def flags(self):
        """{Message-ID: set(flags)} of INBOX, read-only (EXAMINE)."""
        c = self.imap()
        try:
            typ, data = c.select("INBOX", readonly=True)
            n = int(data[0])
            out = {}
            if n:
                typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS "
                                    "(MESSAGE-ID)])")
                for item in data:
                    if not isinstance(item, tuple):
                        continue
                    meta = item[0].decode()
                    fl = re.search(r"FLAGS \(([^)]*)\)", meta)
                    mid = item[1].decode().split(":", 1)[-1].strip()
                    out[mid] = set(fl.group(1).split()) if fl else set()
            return out
        finally:
            try:
                c.logout()
            except Exception:
                pass

    def mark_seen(self, message_id):
        c = self.imap()
        try:
            c.select("INBOX")
            typ, data = c.search(None, "HEADER", "Message-ID", message_id)
            for num in data[0].split():
                c.store(num, "+FLAGS", r"(\Seen)")
        finally:
            c.logout()

    def maildir_count(self, maildir=None):
        maildir = maildir or self.maildir
        n = 0
        for sub in ("new", "cur"):
            try:
                n += len(os.listdir(os.path.join(maildir, sub)))
            except OSError:
                pass
        return n

    def example(self, name, replacements, mode=0o600, dest=None,
                prepend=""):
        """Copy examples/NAME with plain-string replacements applied; every
        placeholder given must be present in the example."""
        with open(os.path.join(EXAMPLES, name)) as f:
            text = f.read()
        for old, new in replacements:
            if old not in text:
                raise RuntimeError("placeholder %r not in examples/%s"
                                   % (old, name))
            text = text.replace(old, new)
        dest = dest or self.path(name)
        with open(dest, "w") as f:
            f.write(prepend + text)
        os.chmod(dest, mode)
        return dest


_seq = [0]


def message(subject="test", received_ago=0, size=0, body=None, chat=True):
    """A small message as a receiving MTA would hand it to dovecot-lda:
    with a Received field (the server's clock) of its own.  Returns
    (Message-ID, bytes)."""
    _seq[0] += 1
    mid = dcpkit.message_id("callers", "example.net")
    when = dcpkit.date(time.time() - received_ago)
    fields = ["Received: from mx.example.net (mx.example.net [192.0.2.1])\n"
              "\tby mail.example.org (Postfix) with ESMTPS id 4ABCD%d\n"
              "\tfor <%s@example.org>; %s" % (_seq[0], USER, when),
              "From: bob@example.net",
              "To: %s@example.org" % USER,
              "Subject: " + subject,
              "Date: " + when,
              "Message-ID: " + mid,
              "MIME-Version: 1.0"]
    if chat:
        fields.append("Chat-Version: 1.0")
    fields.append("Content-Type: text/plain; charset=utf-8")
    if body is None:
        body = "hello %d\n" % _seq[0]
    if size:
        line = ("x" * 75) + "\n"
        body = line * (size // len(line) + 1)
    return mid, dcpkit.message(fields, body)


def dovecot_version():
    """(version, syntax): `dovecot --version` and which configuration
    syntax that Dovecot reads, "2.3" or "2.4" ("2.4.1-4 (7d8c0e5759)" ->
    "2.4"); 2.4 refuses 2.3's."""
    out = subprocess.run(["/usr/sbin/dovecot", "--version"], check=True,
                         capture_output=True, text=True,
                         timeout=20).stdout.strip()
    m = re.match(r"(\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError("dovecot --version: %r" % out)
    old = (int(m.group(1)), int(m.group(2))) < (2, 4)
    return out, "2.3" if old else "2.4"


# What every private Dovecot of the tests has: its files under %(d)s, run
# as one unprivileged user (%(user)s), its services not chrooted and their
# sockets owned by that user.
DOVECOT_PRIVATE = """\
base_dir = %(d)s/run
state_dir = %(d)s/state
instance_name = %(instance)s
log_path = %(d)s/dovecot.log
default_internal_user = %(user)s
default_internal_group = %(group)s
default_login_user = %(user)s
first_valid_uid = %(uid)d
last_valid_uid = 0
first_valid_gid = 0"""
DOVECOT_SERVICES = """\
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
}"""

# A private, unprivileged Dovecot: IMAPS on 127.0.0.1 for one passwd-file
# user with a Maildir, and dovecot-lda with Sieve.  %(syntax)s is what 2.3
# and 2.4 spell differently (DOVECOT_SYNTAX).
DOVECOT_CONF = """\
%(version)s# Written by tests/callers/harness.py: a private, unprivileged Dovecot.
%(private)s
protocols = imap
listen = 127.0.0.1
ssl = required
auth_mechanisms = plain login
mailbox_idle_check_interval = 30 secs
verbose_proctitle = yes
%(syntax)s
service imap-login {
  chroot =
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = %(port)d
    ssl = yes
  }
}
%(services)s
protocol lda {
  postmaster_address = postmaster@example.org
}
!include %(sieve_conf)s
"""

# 2.4 wants dovecot_config_version first; its ssl_server_*_file take paths
# (no "<"); auth_allow_cleartext replaces disable_plaintext_auth,
# mail_driver and mail_path replace mail_location, passdb and userdb are
# named blocks with passwd_file_path, and %u is %{user}.
DOVECOT_SYNTAX = {
    "2.3": ("", """\
ssl_cert = <%(cert)s
ssl_key = <%(key)s
disable_plaintext_auth = yes
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %(d)s/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%%u %(d)s/passwd
}"""),
    "2.4": ("""\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
""", """\
ssl_server_cert_file = %(cert)s
ssl_server_key_file = %(key)s
auth_allow_cleartext = no
mail_driver = maildir
mail_path = ~/Maildir
passdb passwd-file {
  default_password_scheme = PLAIN
  auth_username_format = %%{user}
  passwd_file_path = %(d)s/passwd
}
userdb passwd-file {
  auth_username_format = %%{user}
  passwd_file_path = %(d)s/passwd
}"""),
}
