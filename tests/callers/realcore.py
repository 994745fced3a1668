#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""deltachat-push with the real Delta Chat core, end to end.

    realcore.py realcore /path/to/deltachat-push

Two accounts of the real core (deltachat-rpc-server from the npm package
@deltachat/stdio-rpc-server-linux-x64, pinned below, JSON-RPC over stdio)
talk through a private Postfix (own config directory, queue and port,
SMTP AUTH through Dovecot, LMTP into Dovecot) and a private Dovecot 2.3
or 2.4 with examples/dovecot-2.X-metadata.conf included as the
administrator would.  Every delivery runs the global Sieve after-script
(--dovecot-metadata), which pushes the token stored on the server; and
getmail6 --idle, patched the documented way, watches the same mailbox
and pushes the token of its own token file (self= in the user's config
file, as examples/config shows).  Everything listens on 127.0.0.1 in a
network namespace of its own (unshare -n) when that can be made.

The token on the server: core 2.62 has no JSON-RPC call for it, so a
device of core 1.138 (npm deltachat-node, whose prebuilt libdeltachat has
the whole C API, loaded with ctypes) sets it with
dc_accounts_set_push_device_token() and stores it itself; where that
fails, the exact command core 2.62 sends stores one, and the output says
so.

Why: every other test plays Delta Chat with hand-written bytes.  The real
core sends what they do not: encrypted automatic messages (securejoin,
read receipts, sync), copies to itself, and it deletes what it has read
while getmail may still be about to fetch it.

Needs root (Postfix's master runs as root; everything else runs as
nobody, as run.py does).  The npm tarballs are kept in DCP_NPM_CACHE (the
build directory, from meson) or $XDG_CACHE_HOME/deltachat-push-tests, so
that only the first run downloads them; their SHA-1 is checked.

The deltachat-push runs get --window=0 (the harness wrapper): the rate
limit is not what is checked here, and the reply after a read receipt is
judged by its own delivery->POST time.
"""

import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
import metadata  # noqa: E402
import races  # noqa: E402
import run  # noqa: E402
from harness import wait_until  # noqa: E402

CORE_PACKAGE = "@deltachat/stdio-rpc-server-linux-x64"
CORE_VERSION = "2.62.0"
CORE_TARBALL = "deltachat-stdio-rpc-server-linux-x64-%s.tgz" % CORE_VERSION
CORE_SHA1 = "5ffe4492efc76f113bfc82532fad2cd7fc6327ff"
# Core 1.138 for the push token: its prebuilt libdeltachat has the C API.
OLD_PACKAGE = "deltachat-node"
OLD_VERSION = "1.138.0"
OLD_TARBALL = "deltachat-node-%s.tgz" % OLD_VERSION
OLD_SHA1 = "99213a8afde12b5811751f920755894172687845"
OLD_LIB = "package/node/prebuilds/linux-x64/node.napi.node"
# What node.napi.node needs from Node.js (N-API and libuv), as no-ops:
# the C API below never calls them.
NAPI_STUBS = """
napi_call_function napi_call_threadsafe_function
napi_create_array_with_length napi_create_async_work
napi_create_buffer_copy napi_create_double napi_create_external
napi_create_function napi_create_int32 napi_create_int64
napi_create_reference napi_create_string_utf8
napi_create_threadsafe_function napi_create_uint32
napi_delete_async_work napi_delete_reference napi_get_array_length
napi_get_cb_info napi_get_element napi_get_global
napi_get_last_error_info napi_get_null napi_get_reference_value
napi_get_value_double napi_get_value_external napi_get_value_int32
napi_get_value_string_utf8 napi_get_value_uint32 napi_module_register
napi_queue_async_work napi_release_threadsafe_function napi_set_element
napi_set_named_property napi_throw_error napi_throw_type_error
uv_thread_create uv_thread_join
""".split()

ALICE, BOB, PASSWORD = metadata.ALICE, metadata.BOB, metadata.PASSWORD
TOOLS = ["/usr/sbin/dovecot", "/usr/bin/doveconf", "/usr/bin/sievec",
         "/usr/lib/dovecot/lmtp",
         "/usr/lib/dovecot/modules/sieve/lib90_sieve_extprograms_plugin.so",
         "/usr/sbin/postfix", "getmail", "patch", "npm", "unshare",
         "setpriv", "cc", "/usr/bin/time"]
LIMIT = 170


# ================================================================ outside

def cache_dir():
    d = os.environ.get("DCP_NPM_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "deltachat-push-tests")
    os.makedirs(d, exist_ok=True)
    return d


def sha1(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def fetch(package, version, tarball, digest, offline=False):
    """A pinned npm tarball: from the cache, else with `npm pack` (the
    README's test line installs npm where Node.js brings none); either
    way its SHA-1 is checked.  Returns (path, how)."""
    d = cache_dir()
    path = os.path.join(d, tarball)
    how = "cached in %s" % d
    if not (os.path.exists(path) and sha1(path) == digest):
        if offline:
            raise RuntimeError("%s is not in %s" % (tarball, d))
        t0 = time.time()
        how = "npm pack"
        argv = ["npm", "pack", "--loglevel=error", "--pack-destination", d,
                "%s@%s" % (package, version)]
        r = subprocess.run(argv, capture_output=True, timeout=300,
                           env=dict(os.environ, npm_config_cache=os.path.join(
                               d, "npm")))
        if r.returncode != 0 or not os.path.exists(path):
            raise RuntimeError("%s failed: %r" % (" ".join(argv), r))
        how += " (%.1f s)" % (time.time() - t0)
    if sha1(path) != digest:
        raise RuntimeError("%s: SHA-1 %s, expected %s"
                           % (path, sha1(path), digest))
    return path, how


def fetch_core(offline=False):
    return fetch(CORE_PACKAGE, CORE_VERSION, CORE_TARBALL, CORE_SHA1,
                 offline)


def fetch_old(offline=False):
    return fetch(OLD_PACKAGE, OLD_VERSION, OLD_TARBALL, OLD_SHA1, offline)


POSTFIX_MAIN = """\
# Written by tests/callers/realcore.py: a private Postfix.
compatibility_level = 3.6
queue_directory = %(d)s/queue
data_directory = %(d)s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.example.org
mydomain = example.org
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file_prefixes = %(d)s
maillog_file = %(d)s/maillog
alias_maps =
alias_database =
biff = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
virtual_mailbox_domains = example.org
virtual_transport = lmtp:inet:127.0.0.1:%(lmtp)d
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:%(auth)d
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
"""

POSTFIX_MASTER = """\
127.0.0.1:%(smtp)d inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def alive(pid):
    """Whether we can signal the process pid (root: whether it exists)."""
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def start_postfix(ports):
    """A private Postfix as root (its master must be); returns (directory,
    stop function)."""
    import pwd
    d = tempfile.mkdtemp(prefix="dcp-postfix-")
    os.chmod(d, 0o755)
    for sub in ("etc", "queue", "data"):
        os.makedirs(os.path.join(d, sub))
    pf = pwd.getpwnam("postfix")
    os.chown(os.path.join(d, "data"), pf.pw_uid, pf.pw_gid)
    v = dict(ports, d=d)
    with open(os.path.join(d, "etc", "main.cf"), "w") as f:
        f.write(POSTFIX_MAIN % v)
    with open(os.path.join(d, "etc", "master.cf"), "w") as f:
        f.write(POSTFIX_MASTER % v)
    cmd = ["postfix", "-c", os.path.join(d, "etc")]
    r = subprocess.run(cmd + ["start"], capture_output=True, timeout=60)

    def stop():
        pid = None
        try:
            with open(os.path.join(d, "queue", "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        subprocess.run(cmd + ["abort"], capture_output=True, timeout=30)
        if pid and not wait_until(lambda: not alive(pid), 5):
            h.killpg(pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)
    if r.returncode != 0:
        log = h.tail(os.path.join(d, "maillog"))
        stop()
        raise RuntimeError("postfix start failed: %r\n%s" % (r, log))
    return d, stop


def prepare(tmp, core_tgz):
    """Root, before run.py hands tmp to nobody: the core binary, the ports,
    and Postfix (started here, stopped by the returned function)."""
    core = os.path.join(tmp, "core")
    os.makedirs(core)
    with tarfile.open(core_tgz) as t:
        member = t.getmember("package/deltachat-rpc-server")
        with t.extractfile(member) as src, \
                open(os.path.join(core, "deltachat-rpc-server"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.chmod(os.path.join(core, "deltachat-rpc-server"), 0o755)
    try:
        with tarfile.open(fetch_old(offline=True)[0]) as t:
            with t.extractfile(t.getmember(OLD_LIB)) as src, \
                    open(os.path.join(core, "libdeltachat-1.138.so"),
                         "wb") as dst:
                shutil.copyfileobj(src, dst)
    except (RuntimeError, OSError, KeyError, subprocess.SubprocessError) as e:
        with open(os.path.join(core, "libdeltachat-1.138.error"), "w") as f:
            f.write(str(e))
    ports = {k: h.free_port() for k in ("smtp", "imap", "lmtp", "auth")}
    d, stop = start_postfix(ports)
    ports["postfix_dir"] = d
    with open(os.path.join(tmp, "realcore.json"), "w") as f:
        json.dump(ports, f)
    return stop


def loopback_up():
    """ip link set lo up, without iproute2 (not in a minimal Debian)."""
    import fcntl
    import socket
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))
        flags = struct.unpack("16sH", ifr[:18])[1]       # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))


def in_namespace():
    """Are we alone on a loopback of our own?"""
    try:
        with open("/proc/net/dev") as f:
            return [ln.split(":")[0].strip() for ln in f.readlines()[2:]] \
                == ["lo"]
    except OSError:
        return False


# ================================================================ inside

class Rpc:
    """deltachat-rpc-server: JSON-RPC requests on stdin, answers and
    events on stdout.  Events are collected with their arrival time."""

    def __init__(self, w, binary, accounts):
        env = w.env(DC_ACCOUNTS_PATH=accounts, RUST_LOG="warn")
        self.p = subprocess.Popen([binary], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE,
                                  stderr=open(w.path("core.log"), "ab"),
                                  start_new_session=True, env=env)
        with w.procs.lock:
            w.procs.procs.append(self.p)
            with open(w.procs.pgfile, "a") as f:
                f.write("%d\n" % self.p.pid)
        self.n = 0
        self.lock = threading.Lock()
        self.waiting = {}
        self.events = []            # (time, account, event dict)
        self.cond = threading.Condition()
        threading.Thread(target=self.reader, daemon=True).start()
        threading.Thread(target=self.event_loop, daemon=True).start()

    def reader(self):
        for line in self.p.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            q = self.waiting.pop(msg.get("id"), None)
            if q is not None:
                q.put(msg)

    def call(self, method, *params, timeout=30):
        with self.lock:
            self.n += 1
            n = self.n
            q = self.waiting[n] = queue.Queue()
            self.p.stdin.write((json.dumps({
                "jsonrpc": "2.0", "id": n, "method": method,
                "params": list(params)}) + "\n").encode())
            self.p.stdin.flush()
        try:
            msg = q.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("core: no answer to %s in %d s"
                               % (method, timeout))
        if "error" in msg:
            raise RuntimeError("core: %s: %r" % (method, msg["error"]))
        return msg.get("result")

    def event_loop(self):
        while self.p.poll() is None:
            try:
                ev = self.call("get_next_event", timeout=LIMIT)
            except (RuntimeError, OSError, ValueError):
                return
            with self.cond:
                self.events.append((time.time(), ev.get("contextId"),
                                    ev.get("event", {})))
                self.cond.notify_all()

    def wait_event(self, pred, timeout, since=0):
        """The first event (index >= since) for which pred(account,
        event) holds, or None after timeout."""
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.events):
                    t, acc, ev = self.events[i]
                    i += 1
                    if pred(acc, ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def stop(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            h.killpg(self.p.pid, signal.SIGKILL)


def start_dovecot(w, tap, ports):
    """The metadata scenario's private Dovecot (examples/dovecot-2.X-
    metadata.conf and the Sieve after-script), on the ports Postfix was
    given, plus SMTP AUTH for Postfix (an auth listener on 127.0.0.1)
    and cleartext logins (loopback only, no TLS)."""
    services = h.DOVECOT_SERVICES.replace(
        "service auth {\n",
        "service auth {\n  inet_listener auth-smtp {\n    %(listen)s = 127.0.0.1\n"
        "    port = %(auth)d\n  }\n")
    site = metadata.SITE.replace(
        "auth_mechanisms = plain\n",
        "auth_mechanisms = plain login\n%(cleartext)s\n")
    if services == h.DOVECOT_SERVICES or site == metadata.SITE:
        raise RuntimeError("the metadata scenario's Dovecot configuration changed")
    metadata.VERSIONS["2.3"]["cleartext"] = "disable_plaintext_auth = no"
    metadata.VERSIONS["2.4"]["cleartext"] = "auth_allow_cleartext = yes"
    for v in metadata.VERSIONS.values():
        v["auth"] = ports["auth"]
    given = [ports["imap"], ports["lmtp"]]
    saved = metadata.SITE, h.DOVECOT_SERVICES, h.free_port
    metadata.SITE, h.DOVECOT_SERVICES, h.free_port = site, services, lambda: given.pop(0)
    try:
        major, homes = metadata.start(w, tap)
    finally:
        metadata.SITE, h.DOVECOT_SERVICES, h.free_port = saved
    if not h.wait_port(ports["auth"], 20):
        raise RuntimeError("Dovecot's auth listener did not start")
    return major, homes


def setup_account(rpc, addr, ports):
    acc = rpc.call("add_account")
    # bcc_self: a copy of what she sends comes back to her mailbox, as
    # with a second device; mdns_enabled: read receipts
    rpc.call("batch_set_config", acc, {
        "displayname": addr.split("@")[0], "bcc_self": "1",
        "mdns_enabled": "1"})
    t0 = time.time()
    rpc.call("add_or_update_transport", acc, {
        "addr": addr, "password": PASSWORD,
        "imapServer": "127.0.0.1", "imapPort": ports["imap"],
        "imapSecurity": "plain", "imapUser": addr,
        "smtpServer": "127.0.0.1", "smtpPort": ports["smtp"],
        "smtpSecurity": "plain", "smtpUser": addr}, timeout=60)
    rpc.call("start_io", acc)
    return acc, time.time() - t0


# ---------------------------------------------------------------- what ran

class Run:
    """One deltachat-push run: who called it (Dovecot's Sieve: CRLF;
    getmail: LF), the message's headers, start, end, exit code."""

    def __init__(self, start, end, rc, user, text):
        self.start, self.end, self.rc, self.user = start, end, rc, user
        self.caller = "sieve" if b"\r\n" in text[:2000] else "getmail"
        head = text.split(b"\r\n\r\n" if self.caller == "sieve"
                          else b"\n\n", 1)[0].decode("utf-8", "replace")

        def field(name):
            m = re.search(r"^%s:[ \t]*(.*)$" % name, head, re.M | re.I)
            return m.group(1).strip() if m else ""
        self.sender = re.sub(r".*<|>.*", "", field("From"))
        self.mid = field("Message-ID")
        self.encrypted = b"-----BEGIN PGP MESSAGE-----" in text
        self.securejoin = bool(field("Secure-Join"))

    def posts(self, srv, body):
        return [r for r in srv.requests if r.body == body.encode()
                and self.start - 0.05 <= r.time <= self.end + 0.05]


def runs(w):
    """Every finished run, in order of start."""
    out = []
    try:
        with open(w.runs_log) as f:
            lines = f.read().split("\n")
    except OSError:
        return out
    for line in lines:
        p = line.split()
        if len(p) < 7:
            continue
        try:
            with open(w.path("capture." + p[5]), "rb") as f:
                text = f.read()
        except OSError:
            continue
        out.append(Run(float(p[0]), float(p[1]), int(p[2]), p[6], text))
    return sorted(out, key=lambda r: r.start)


def to_alice(w, caller, since=0.0, until=None):
    """alice's runs by caller (Dovecot runs Sieve as the recipient's
    login; getmail reads only her mailbox) started in [since, until)."""
    return [r for r in runs(w) if r.caller == caller and r.start >= since
            and (until is None or r.start < until)
            and (caller == "getmail" or r.user == ALICE)]


def settle(w, quiet=1.5, limit=20):
    """Wait until no run has started or ended for `quiet` seconds (at most
    `limit` seconds); returns the time it became quiet."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            st = os.stat(w.runs_log).st_mtime
        except OSError:
            st = 0
        if st != last:
            last, since = st, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.1)
    return time.time()


# ---------------------------------------------------------------- scenario

def scenario_realcore(w, tap):
    t_begin = time.time()
    with open(w.path("realcore.json")) as f:
        ports = json.load(f)
    tap.info("network: %s" % (
        "a namespace of its own (unshare -n), loopback only"
        if in_namespace() else "the host's loopback, free ports"))
    tap.info("deltachat-push runs with --window=0: the rate limit is not "
             "what is checked here")
    srv = w.start_server()
    open(w.path("capture"), "w").close()
    major, homes = start_dovecot(w, tap, ports)
    tap.ok(h.wait_port(ports["smtp"], 20), "the private Postfix listens",
           h.tail(os.path.join(ports["postfix_dir"], "maillog")))

    # The device token: see the module's docstring of token().
    token, how = store_token(w, tap, ports, homes)

    # getmail --idle on alice's mailbox, patched as the README says, with
    # the user's config file naming her own address (--self).
    g = start_getmail(w, tap, ports)
    rpc = Rpc(w, w.path("core", "deltachat-rpc-server"),
              w.path("core", "accounts"))
    try:
        info = rpc.call("get_system_info")
        tap.info("core %s (%s@%s)" % (info.get("deltachat_core_version"),
                                      CORE_PACKAGE, CORE_VERSION))
        a, ta = setup_account(rpc, ALICE, ports)
        b, tb = setup_account(rpc, BOB, ports)
        tap.ok(rpc.call("is_configured", a) and rpc.call("is_configured", b),
               "two accounts configured over JSON-RPC (%.1f s, %.1f s)"
               % (ta, tb))
        conversation(w, tap, srv, rpc, a, b, token, g)
    finally:
        rpc.stop()
        w.procs.stop(g)
        tap.info("wall time of the scenario: %.1f s" % (time.time() - t_begin))
        tap.info("token: %s" % how)


OLD_TOKEN = "fcm-chat.delta:realcore-token-of-core-1.138"


def store_token(w, tap, ports, homes):
    """Core 2.62 has no JSON-RPC call for the push token (only the C API's
    dc_accounts_set_push_device_token).  A device of core 1.138 (its C API
    through ctypes) logs in as alice and stores a plain token the way it
    does where the server says XDELTAPUSH; if that cannot be done here,
    the token is stored with the exact command core 2.62 sends, from an
    IMAP login of its own."""
    path = os.path.join(homes[ALICE], metadata.DICT)
    why = "libdeltachat 1.138 not unpacked"
    lib = w.path("core", "libdeltachat-1.138.so")
    if os.path.exists(lib):
        t0 = time.time()
        stub = w.path("core", "napi-stub.so")
        with open(stub[:-3] + ".c", "w") as f:
            f.write("".join("int %s(void) { return 0; }\n" % n
                            for n in NAPI_STUBS))
        r = w.procs.run(["cc", "-shared", "-fPIC", "-o", stub,
                         stub[:-3] + ".c"], env=w.env(), timeout=60)
        if r.returncode == 0:
            dev = w.procs.start(
                [sys.executable, os.path.abspath(__file__), "--device",
                 lib, stub, w.path("core", "accounts-1.138"), ALICE,
                 PASSWORD, str(ports["imap"]), str(ports["smtp"]),
                 OLD_TOKEN], log=w.path("core-1.138.log"), env=w.env())
            wait_until(lambda: [v for k, v in metadata.dict_pairs(path)
                                if v == OLD_TOKEN.encode()]
                       or dev.poll() is not None, 60)
            w.procs.stop(dev)
            stored = [k for k, v in metadata.dict_pairs(path)
                      if v == OLD_TOKEN.encode()]
            if stored:
                tap.ok(True, "core 1.138 (C API, dc_accounts_set_push_"
                       "device_token) stores its plain token in Dovecot's "
                       "metadata (%.1f s)" % (time.time() - t0))
                return OLD_TOKEN, ("stored by core 1.138 through its C API "
                                   "(dc_accounts_set_push_device_token, "
                                   "libdeltachat from npm %s@%s)"
                                   % (OLD_PACKAGE, OLD_VERSION))
            why = "core 1.138 stored nothing: %s" % h.tail(
                w.path("core-1.138.log"), 8)
        else:
            why = "no stub library: %r" % r
    elif os.path.exists(lib[:-3] + ".error"):
        with open(lib[:-3] + ".error") as f:
            why = f.read()
    token = metadata.fake_token(62)
    ok, caps, set_ok = metadata.upload(w, token, literal=False)
    tap.ok(b" OK " in set_ok, "the device token is stored with "
           "SETMETADATA \"INBOX\" (/private/devicetoken \"...\"), as core "
           "2.62 sends it, from a separate IMAP login", repr(set_ok))
    return token, ("stored with core 2.62's exact SETMETADATA command from "
                   "a separate IMAP login, since core 1.138's C API could "
                   "not be used here: %s" % why)


def device(lib, stub, d, addr, password, imap, smtp, token):
    """Child process: one device of core 1.138 through its C API; sets
    the push token, configures, starts IO, and runs until killed (at most
    90 s)."""
    import ctypes
    ctypes.CDLL(stub, mode=os.RTLD_GLOBAL)
    dc = ctypes.CDLL(lib)
    P, S, U = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32
    for name, res, args in (
            ("dc_accounts_new", P, [S, ctypes.c_int]),
            ("dc_accounts_add_account", U, [P]),
            ("dc_accounts_get_account", P, [P, U]),
            ("dc_set_config", ctypes.c_int, [P, S, S]),
            ("dc_configure", None, [P]),
            ("dc_accounts_get_event_emitter", P, [P]),
            ("dc_get_next_event", P, [P]),
            ("dc_event_get_id", ctypes.c_int, [P]),
            ("dc_event_get_data1_int", ctypes.c_int, [P]),
            ("dc_event_get_data2_str", P, [P]),
            ("dc_event_unref", None, [P]),
            ("dc_accounts_set_push_device_token", None, [P, S]),
            ("dc_accounts_start_io", None, [P])):
        f = getattr(dc, name)
        f.restype, f.argtypes = res, args
    accounts = dc.dc_accounts_new(d.encode(), 1)
    ctx = dc.dc_accounts_get_account(accounts,
                                     dc.dc_accounts_add_account(accounts))
    for key, value in (("addr", addr), ("mail_pw", password),
                       ("mail_server", "127.0.0.1"), ("mail_port", imap),
                       ("mail_security", "3"), ("mail_user", addr),
                       ("send_server", "127.0.0.1"), ("send_port", smtp),
                       ("send_security", "3"), ("send_user", addr),
                       ("send_pw", password), ("mvbox_move", "0"),
                       ("bcc_self", "0")):
        dc.dc_set_config(ctx, key.encode(), value.encode())
    emitter = dc.dc_accounts_get_event_emitter(accounts)
    dc.dc_accounts_set_push_device_token(accounts, token.encode())
    dc.dc_configure(ctx)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ev = dc.dc_get_next_event(emitter)
        if not ev:
            return 1
        kind = dc.dc_event_get_id(ev)
        data1 = dc.dc_event_get_data1_int(ev)
        if kind in (300, 400) or (kind == 2041 and data1 in (0, 1000)):
            text = dc.dc_event_get_data2_str(ev)
            print("event %d %d %s" % (kind, data1, ctypes.string_at(text)
                                       .decode("utf-8", "replace")
                                       if text else ""), flush=True)
        if kind == 2041 and data1 == 1000:
            dc.dc_accounts_start_io(accounts)
        elif kind == 2041 and data1 == 0:
            return 1
        dc.dc_event_unref(ev)
    return 0


def start_getmail(w, tap, ports):
    gdir = w.path("getmaildir")
    os.makedirs(gdir, mode=0o700)
    pwcmd = w.path("bin", "password")
    with open(pwcmd, "w") as f:
        f.write("#!/bin/sh\necho '%s'\n" % PASSWORD)
    os.chmod(pwcmd, 0o700)
    # Plain IMAP on loopback: the private Dovecot has no TLS.
    w.example("getmailrc", [
        ("type = SimpleIMAPSSLRetriever", "type = SimpleIMAPRetriever"),
        ("server = " + h.PH_HOST, "server = 127.0.0.1"),
        ("port = 993", "port = %d" % ports["imap"]),
        ("ca_certs = " + h.PH_CA + "\n", ""),
        (h.PH_PASSWORD_CMD, pwcmd),
        (h.PH_BIN, w.wrapper),
    ], dest=os.path.join(gdir, "deltachat-push"))
    w.example("config", [("#self=alice@example.org;alice@example.net",
                          "self=" + ALICE)],
              dest=os.path.join(w.home, ".config", "deltachat-push",
                                "config"))
    r = races.apply_script(w)
    tap.ok(r.returncode == 0 and b"vanished 1" in r.stdout, "getmail6-idle-race-apply "
           "makes the patched copy", repr(r))
    argv = ["getmail", "--getmaildir", gdir, "--rcfile", "deltachat-push",
            "--idle", "INBOX"]
    return races.start_getmail(w, argv, races.unit_pythonpath(w))


def wait_new(w, caller, since, timeout, sender):
    """Wait for alice's first run by caller of a message from sender
    started after since; returns it or None."""
    found = []

    def got():
        found[:] = [r for r in to_alice(w, caller, since)
                    if r.sender == sender]
        return found
    wait_until(got, timeout)
    return found[0] if found else None


class Phases:
    """Each step of the conversation is a phase [t0, t1): between two
    quiet moments.  In each, every message to alice from someone else is
    followed by exactly one POST of the stored token (Sieve) and, when
    getmail handed it over, one of getmail's token; her own messages by
    none.  Counted per phase, since runs overlap in time."""

    def __init__(self, w, tap, srv, token):
        self.w, self.tap, self.srv, self.token = w, tap, srv, token
        self.latency = {"sieve": [], "getmail": []}
        self.own = {"sieve": 0, "getmail": 0}
        self.t0 = settle(w)

    def posts(self, body, t0, t1):
        return [r for r in self.srv.requests if r.body == body.encode()
                and t0 <= r.time < t1]

    def end(self, what, expect_theirs=True):
        t1 = settle(self.w)
        t0, self.t0 = self.t0, t1
        out = {}
        for caller, body in (("sieve", self.token), ("getmail", h.TOKEN)):
            rs = to_alice(self.w, caller, t0, t1)
            theirs = [r for r in rs if r.sender != ALICE]
            own = [r for r in rs if r.sender == ALICE]
            posts = self.posts(body, t0, t1)
            lat = []
            for r in theirs:
                p = [x for x in posts if r.start - 0.01 <= x.time
                     <= r.end + 0.05]
                lat.append(p[0].time - r.start if p else None)
            ok = (len(posts) == len(theirs) and None not in lat
                  and all(r.rc == 0 for r in rs))
            if caller == "sieve" and expect_theirs:
                ok = ok and theirs
            self.tap.ok(ok, "%s, %s: %d message(s) to alice from bob, %d "
                        "push(es) of %s; %d of her own" % (
                            what, caller, len(theirs), len(posts),
                            "the stored token" if caller == "sieve" else
                            "getmail's token", len(own)),
                        "latencies %r, exit codes %r" % (
                            lat, [r.rc for r in rs]))
            self.latency[caller] += [x for x in lat if x is not None]
            self.own[caller] += len(own)
            out[caller] = theirs
        return out


def conversation(w, tap, srv, rpc, a, b, token, g):
    getmail_log = w.path("getmail.log")
    ph = Phases(w, tap, srv, token)

    # ---- securejoin: alice's QR, bob scans it
    t = time.time()
    qr = rpc.call("get_chat_securejoin_qr_code", a, None)
    chat_b = rpc.call("secure_join", b, qr)
    done = rpc.wait_event(lambda acc, ev: acc == b and ev.get("kind") ==
                          "SecurejoinJoinerProgress" and
                          ev.get("progress") == 1000, 40)
    tap.ok(done is not None, "securejoin completes (%.1f s)"
           % (time.time() - t))
    ph.end("securejoin")

    # ---- a chat message from bob
    t = time.time()
    rpc.call("misc_send_text_message", b, chat_b, "hello alice")
    msg = wait_new(w, "sieve", t, 20, BOB)
    got = ph.end("bob's chat message")
    tap.ok(msg is not None and msg.encrypted and len(got["sieve"]) == 1
           and len(ph.posts(token, t, time.time())) == 1,
           "bob's chat message is encrypted and pushed once with exactly "
           "the stored token")

    # ---- alice writes (her own copy: bcc_self) and changes her status
    # (a sync message to herself); bob reads it: his read receipt
    t = time.time()
    contact = rpc.call("lookup_contact_id_by_addr", a, BOB)
    chat_a = rpc.call("create_chat_by_contact_id", a, contact)
    rpc.call("misc_send_text_message", a, chat_a, "hello bob")
    rpc.call("set_config", a, "selfstatus", "set by the test")
    ev = rpc.wait_event(lambda acc, ev: acc == b and ev.get("kind") ==
                        "IncomingMsg", 20)
    ph.end("alice writes to bob", expect_theirs=False)
    t_read = time.time()
    if ev:
        rpc.call("markseen_msgs", b, [ev["msgId"]])
    receipt = wait_new(w, "sieve", t_read, 20, BOB)
    read = rpc.wait_event(lambda acc, ev: acc == a and ev.get("kind") ==
                          "MsgRead", 10)
    tap.ok(ev is not None and receipt is not None and read is not None,
           "bob reads alice's message; his read receipt reaches her core "
           "(MsgRead)", "incoming %r, receipt %r, read %r"
           % (ev, receipt, read))
    if receipt:
        tap.info("read receipt: encrypted %s" % receipt.encrypted)
    # ---- and replies right after it (not waiting for quiet)
    t_reply = time.time()
    rpc.call("misc_send_text_message", b, chat_b, "a reply after reading")
    reply = wait_new(w, "sieve", t_reply, 20, BOB)
    ph.end("read receipt and the reply after it")
    p = [x for x in ph.posts(token, t_reply, time.time())
         if reply and x.time >= reply.start - 0.01]
    tap.ok(reply is not None and len(p) == 1 and
           p[0].time - reply.start <= 1.0,
           "the reply after the read receipt: one push within 1 s of its "
           "delivery (%s)" % ("%.3f s" % (p[0].time - reply.start)
                              if p and reply else "none"))
    gm = [r for r in to_alice(w, "getmail", t_reply)
          if reply and r.mid == reply.mid]
    gp = [x for x in ph.posts(h.TOKEN, t_reply, time.time())
          if gm and gm[0].start - 0.01 <= x.time <= gm[0].end + 0.05]
    tap.ok(len(gm) == 1 and len(gp) == 1 and
           gp[0].time - reply.end <= races.BOUND,
           "getmail --idle pushes the reply once, within %.0f s of Dovecot "
           "storing it (%s)" % (races.BOUND, "%.3f s" % (
               gp[0].time - reply.end) if gp else "none"),
           h.tail(getmail_log))

    # ---- two more securejoins (groups): core deletes what it has read
    for i in (1, 2):
        t = time.time()
        gid = rpc.call("create_group_chat", a, "group %d" % i, True)
        qr = rpc.call("get_chat_securejoin_qr_code", a, gid)
        since = len(rpc.events)
        rpc.call("secure_join", b, qr)
        done = rpc.wait_event(lambda acc, ev: acc == b and ev.get("kind") ==
                              "SecurejoinJoinerProgress" and
                              ev.get("progress") == 1000, 40, since)
        tap.ok(done is not None, "group securejoin %d completes (%.1f s)"
               % (i, time.time() - t))
        ph.end("group securejoin %d" % i)
    tap.ok(g.poll() is None, "getmail --idle still running after three "
           "securejoins", h.tail(getmail_log))
    with open(getmail_log, errors="replace") as f:
        vanished = f.read().count("vanished before it could be fetched")
    tap.info("getmail: %d message(s) were deleted by core before getmail "
             "could fetch them, each skipped with a warning" % vanished)

    # ---- ... and still pushes
    t = time.time()
    rpc.call("misc_send_text_message", b, chat_b, "after the securejoins")
    wait_new(w, "getmail", t, 15, BOB)
    got = ph.end("a message after the securejoins")
    tap.ok(len(got["getmail"]) == 1, "getmail --idle pushes a real message "
           "after them", h.tail(getmail_log))
    tap.ok(ph.own["sieve"] > 0 and ph.own["getmail"] > 0,
           "alice's own copies and sync messages came in (%d via Sieve, %d "
           "via getmail) and none was pushed" % (ph.own["sieve"],
                                                 ph.own["getmail"]))

    counts = {}
    for r in srv.requests:
        k = "stored token" if r.body == token.encode() else \
            "getmail's token" if r.body == h.TOKEN.encode() else "other"
        counts[k] = counts.get(k, 0) + 1
    tap.ok("other" not in counts, "POSTs: %r, no other body" % counts)
    for caller, what in (("sieve", "Sieve (LMTP delivery)"),
                         ("getmail", "getmail (its delivery-agent run)")):
        lat = ph.latency[caller]
        if lat:
            tap.info("%s -> POST: median %.0f ms, max %.0f ms over %d "
                     "messages" % (what, statistics.median(lat) * 1000,
                                   max(lat) * 1000, len(lat)))
    stored = {}
    for r in to_alice(w, "sieve"):
        gm = [x for x in to_alice(w, "getmail") if x.mid == r.mid]
        if gm and r.sender != ALICE:
            p = [x for x in srv.requests if x.body == h.TOKEN.encode()
                 and gm[0].start - 0.01 <= x.time <= gm[0].end + 0.05]
            if p:
                stored[r.mid] = p[0].time - r.end
    if stored:
        v = list(stored.values())
        tap.info("stored in Dovecot -> getmail's POST: median %.0f ms, max "
                 "%.0f ms over %d messages" % (statistics.median(v) * 1000,
                                               max(v) * 1000, len(v)))


# ---------------------------------------------------------------- main

run.TOOLS["realcore"] = TOOLS
run.LIMITS["realcore"] = LIMIT
run.scenario_realcore = scenario_realcore


def main(argv):
    if len(argv) >= 5 and argv[1] == "--inner":
        sys.path.insert(0, os.path.join(argv[4], "harness"))
        return run.inner(argv[2], argv[3], argv[4])
    if len(argv) == 10 and argv[1] == "--device":
        return device(*argv[2:])
    if len(argv) == 4 and argv[1] == "--netns":
        # inside unshare -n: bring loopback up, then as run.py does
        loopback_up()
        return outer(argv[2], argv[3])
    if len(argv) != 3 or argv[1] != "realcore":
        print("usage: realcore.py realcore DELTACHAT-PUSH", file=sys.stderr)
        return 2
    if h.skip_missing_tools(TOOLS):
        return 0
    if os.geteuid() != 0:
        if os.environ.get("DCP_MISSING_TOOLS") == "fail":
            print("1..1\nnot ok 1 - realcore needs root (Postfix's master "
                  "runs as root)")
            return 1
        print("1..0 # SKIP needs root (Postfix's master runs as root)")
        return 0
    binary = os.path.abspath(argv[2])
    try:
        path, how = fetch_core()
        print("# core %s@%s: %s" % (CORE_PACKAGE, CORE_VERSION, how),
              flush=True)
        try:
            how = fetch_old()[1]
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            how = "failed, the token will be stored without it: %s" % e
        print("# core %s@%s: %s" % (OLD_PACKAGE, OLD_VERSION, how),
              flush=True)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("1..1\nnot ok 1 - the core from npm\n# %s"
              % str(e).replace("\n", "\n# "))
        return 1
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True,
                       timeout=20)
    if r.returncode == 0:
        return subprocess.run(["unshare", "-n", "--", sys.executable,
                               os.path.abspath(__file__), "--netns",
                               "realcore", binary],
                              timeout=LIMIT + 60).returncode
    return outer("realcore", binary)


def outer(scenario, binary):
    core = fetch_core(offline=True)[0]
    return run.outer(scenario, binary,
                     prepare=lambda tmp: prepare(tmp, core))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
