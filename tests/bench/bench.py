#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark deltachat-push against reference commands, side by side.

  bench.py BINARY [--quick] [--update-baseline] [--keep]

Every row runs the measured command and its reference in the same hyperfine
run (several rounds in full mode, the order alternating, times pooled), so
both sides see the same machine state.  Inputs are made in a temp dir:
a 5 KB message with realistic headers (two Received lines with the current
date, DKIM, Autocrypt, Chat-Version), the same headers over a 40 MiB body,
and the 5 KB message with "Auto-Submitted: auto-replied".  The endpoint is
tests/bench/endpoint.c (built here with $CC, default cc) on 127.0.0.1; it
logs one line per request, so every row also checks how many requests
arrived.  Rows:

  https        BINARY -w 0 -u https://127.0.0.1:PORT/notify TOKEN < 5KB
                                                vs  curl -s -o /dev/null -d TOKEN URL
               a push over TLS to a private nginx (tests/tlstest.py) whose
               certificate comes from a test CA, both sides with their
               default trust.  So that both trust the test CA without touching
               the machine, the row runs inside a private mount namespace
               (unshare -m) where a copy of /etc/ssl/certs plus the test CA
               (rehashed, bundle regenerated) is bind-mounted over
               /etc/ssl/certs.  Median wall and mean user+sys CPU, for
               information (true of this machine only), and, in the same
               run, ours with --cacert=/etc/ssl/certs/ca-certificates.crt
               (the whole bundle, what libcurl's default costs).
  instructions the headline: the same two commands under callgrind
               (--trace-children=no), total instructions, ours <= 0.25x
               curl's on Debian 12 and <= 0.6x on Debian 13 (chosen by the
               Debian release, elsewhere by libcurl's version; checked in
               quick mode too, since a count holds on any machine), ours
               with a fresh cache each run and spawning nothing; and one
               skipped run against callgrind-baseline (<= +5 %)
  notify       BINARY -w 0 -u URL TOKEN < 5KB   vs  curl -s -o /dev/null -d TOKEN URL
               (-w 0: the rate limit is off, every run is a "new token"
               push through the same code path, with the state directory
               already there; a fresh-cache variant is reported for info);
               plain http to endpoint.c, for information only
  skipped      BINARY (Auto-Submitted) < 5KB    vs  cat 5KB > /dev/null
  limited      BINARY -w 3600 --no-trailing, state seeded by one run,
               < 5KB                            vs  cat 5KB > /dev/null
  pipe         cat 40MiB | BINARY -w 0          vs  cat 5KB | BINARY -w 0
               budget: the 5 KB run + (cat 40MiB | cat) - (cat 5KB | cat)
  file         BINARY -w 0 < 40MiB              vs  BINARY -w 0 < 5KB

Peak RSS is GNU time's %M of the deltachat-push process alone (median of
several runs).  The skipped and limited rows also check, with LD_DEBUG, that
neither libcurl nor a TLS library is ever loaded.

The report starts with the machine (CPU model, CPU count, Debian release,
libcurl and its TLS library), which the times belong to.  Full mode exits 1
when a target is missed (and names it); --quick runs each row a few times
and checks that everything works (exit codes, request counts, numbers that
parse) and the HTTPS instruction target, but no timing target.
--update-baseline writes the measured instruction count to
callgrind-baseline.  Every wait is bounded; the endpoint and anything left
behind in the temp dir are stopped at exit.
"""

import argparse
import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE = os.path.join(HERE, "callgrind-baseline")
HTTPD_PY = os.path.join(os.path.dirname(HERE), "httpd.py")
sys.path.insert(0, os.path.dirname(HERE))
import dcpkit  # noqa: E402
import tlstest  # noqa: E402

SMALL_SIZE = 5 * 1024
BIG_SIZE = 40 * 1024 * 1024
TOKEN = "fcm-chat.delta:" + hashlib.sha512(b"bench").hexdigest() + \
        "-" + hashlib.sha256(b"token").hexdigest()[:40]
TOKEN_LIMITED = TOKEN + "-limited"
TOKEN_SKIPPED = TOKEN + "-skipped"
TOKEN_FRESH = TOKEN + "-fresh"
TOKEN_TRAILING = TOKEN + "-trailing"
TOKEN_HTTPS = TOKEN + "-https"
# Instructions of one push over HTTPS, ours / curl's (callgrind totals), by
# Debian release.  Unlike wall time these hold on any machine; they differ by
# release because curl's default trust reads the whole CA bundle, which
# OpenSSL 3.5 (Debian 13) parses about four times faster than 3.0 (Debian 12).
HTTPS_IR_TARGETS = {12: 0.25, 13: 0.6}
CALLGRIND_TOLERANCE = 0.05
MIB = 1024


def log(*a):
    print(*a, flush=True)


class Failure(Exception):
    pass


# ---------------------------------------------------------------- inputs

def b64ish(n, seed):
    """n pseudo-random base64 characters, deterministic."""
    out = []
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    h = hashlib.sha256(seed.encode()).digest()
    while sum(len(x) for x in out) < n:
        h = hashlib.sha256(h).digest()
        out.append(bytes(alphabet[b & 63] for b in h))
    return b"".join(out)[:n].decode()


def fold(prefix, data, width=76, indent=" "):
    lines = [prefix]
    for i in range(0, len(data), width):
        lines.append(indent + data[i:i + width])
    return "\n".join(lines)


def headers(now, auto=False):
    date, date_sent = dcpkit.date(now), dcpkit.date(now - 3)
    h = [
        "Return-Path: <alice@example.org>",
        "Delivered-To: bob@example.net",
        "Received: from mail.example.org (mail.example.org [192.0.2.25])\n"
        "\tby mx.example.net (Postfix) with ESMTPS id 4Xb2kQ0zZ3z9sWv\n"
        "\tfor <bob@example.net>; " + date,
        "Received: from [198.51.100.7] (unknown [198.51.100.7])\n"
        "\t(Authenticated sender: alice@example.org)\n"
        "\tby mail.example.org (Postfix) with ESMTPSA id 1A2B3C4D5E\n"
        "\tfor <bob@example.net>; " + date_sent,
        fold("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\n"
             "\ts=2024; t=%d; h=from:to:subject:date:message-id:mime-version:\n"
             "\tcontent-type:chat-version:autocrypt;\n\tbh=%s=;\n\tb=" %
             (int(now), b64ish(43, "bh")), b64ish(344, "dkim"), indent="\t"),
        fold("Autocrypt: addr=alice@example.org; prefer-encrypt=mutual; keydata=",
             b64ish(1200, "autocrypt")),
        "From: Alice <alice@example.org>",
        "To: <bob@example.net>",
        "Subject: [...]",
        "Date: " + date_sent,
        "Message-ID: <Mr.%s@example.org>" % b64ish(22, "mid").replace("/", "x").replace("+", "y"),
        "Chat-Version: 1.0",
        "MIME-Version: 1.0",
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n'
        '\tboundary="4d2b8a1f6c0e3b7a5d9e2f1c8b4a6e3d"',
    ]
    if auto:
        h.insert(6, "Auto-Submitted: auto-replied")
    return dcpkit.message(h, "")


def body_block():
    start = ("--4d2b8a1f6c0e3b7a5d9e2f1c8b4a6e3d\n"
             "Content-Type: application/pgp-encrypted\n"
             "Content-Description: PGP/MIME version identification\n\n"
             "Version: 1\n\n"
             "--4d2b8a1f6c0e3b7a5d9e2f1c8b4a6e3d\n"
             'Content-Type: application/octet-stream; name="encrypted.asc"\n'
             "Content-Disposition: inline; filename=\"encrypted.asc\"\n\n"
             "-----BEGIN PGP MESSAGE-----\n\n").encode()
    end = ("=AbCd\n-----END PGP MESSAGE-----\n\n"
           "--4d2b8a1f6c0e3b7a5d9e2f1c8b4a6e3d--\n").encode()
    line = lambda i: (b64ish(76, "l%d" % i) + "\n").encode()
    return start, end, line


def make_message(path, size, now, auto=False):
    head = headers(now, auto)
    start, end, line = body_block()
    fixed = len(head) + len(start) + len(end)
    if fixed > size:
        raise Failure("headers alone exceed %d bytes" % size)
    block = b"".join(line(i) for i in range(64 * 1024 // 77))  # ~64 KiB
    with open(path, "wb") as f:
        f.write(head)
        f.write(start)
        left = size - fixed
        while left >= len(block):
            f.write(block)
            left -= len(block)
        f.write(block[:left - 1] + b"\n" if left else b"")
        f.write(end)
    assert os.path.getsize(path) == size, (path, os.path.getsize(path), size)


# -------------------------------------------------------------- endpoint

class Endpoint:
    def __init__(self, tmp, max_seconds):
        self.tmp = tmp
        self.log = os.path.join(tmp, "requests.log")
        self.port_file = os.path.join(tmp, "port")
        self.proc = None
        self.kind = None
        open(self.log, "w").close()
        exe = os.path.join(tmp, "endpoint")
        cc = os.environ.get("CC", "cc")
        src = os.path.join(HERE, "endpoint.c")
        built = shutil.which(cc.split()[0]) is not None and subprocess.run(
            shlex.split(cc) + ["-O2", "-std=c11", "-o", exe, src],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120).returncode == 0
        if built:
            cmd = [exe, "--port-file", self.port_file, "--log", self.log,
                   "--max-seconds", str(max_seconds)]
            self.kind = "endpoint.c (C, poll)"
        else:
            # httpd.py logs JSON lines: one per request as well
            cmd = [sys.executable, HTTPD_PY, "--port-file", self.port_file,
                   "--log", self.log, "--max-seconds", str(max_seconds)]
            self.kind = "tests/httpd.py (no C compiler)"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failure("the endpoint did not start")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read().strip())
        self.base = "http://127.0.0.1:%d" % self.port
        self.url = self.base + "/notify"

    def count(self, path=None):
        """Requests so far (to one path only, when given)."""
        n = 0
        with open(self.log, "rb") as f:
            for line in f:
                if path is None:
                    n += 1
                elif line.startswith(b"{"):  # httpd.py's JSON lines
                    n += json.loads(line).get("path") == path
                else:
                    parts = line.split(b" ", 2)
                    n += len(parts) > 1 and parts[1].decode(errors="replace") == path
        return n

    def wait_count(self, n, timeout=5.0):
        """Wait until n requests are logged; how many there are then."""
        dcpkit.wait_until(lambda: self.count() >= n, timeout, step=0.01)
        return self.count()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ----------------------------------------------------------------- bench

class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.quick = opts.quick
        self.binary = os.path.abspath(opts.binary)
        self.rows = []        # (path, ours, ref, ratio, target, ok)
        self.notes = []
        self.failures = []    # targets missed (full mode only)
        self.broken = []      # things that did not work (any mode)
        if self.quick:
            self.rounds, self.runs, self.warmup, self.rss_reps = 1, 3, 1, 1
            self.big_runs, self.https_rounds = 3, 1
        else:
            self.rounds, self.runs, self.warmup, self.rss_reps = 12, 25, 3, 7
            # the HTTPS times are information (the instructions are the
            # figure): fewer rounds pay for the callgrind runs
            self.big_runs, self.https_rounds = 20, 8

    # -- helpers

    def env(self, cache):
        e = dict(os.environ)
        e["XDG_CACHE_HOME"] = cache
        e["XDG_CONFIG_HOME"] = os.path.join(self.tmp, "config")  # no user config
        e.pop("LD_DEBUG", None)
        # meson test sets it (a random byte): glibc's malloc then fills every
        # block, about 2 % more instructions than a user's run
        e.pop("MALLOC_PERTURB_", None)
        return e

    def dcp(self, *args):
        return [self.binary, "-u", self.ep.url] + list(args)

    def cmd(self, argv, stdin=None, pipe_from=None):
        s = "exec " + " ".join(shlex.quote(a) for a in argv)
        if stdin:
            s += " < " + shlex.quote(stdin)
        if pipe_from:
            s = "cat %s | %s" % (shlex.quote(pipe_from), s)
        return s

    def run_once(self, argv, stdin_path, cache, extra_env=None, what="",
                 want_rc=(0,)):
        """Run once outside hyperfine, checking the exit code; returns stderr."""
        env = self.env(cache)
        if extra_env:
            env.update(extra_env)
        with open(stdin_path, "rb") as f:
            p = subprocess.run(argv, stdin=f, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, timeout=60)
        if p.returncode not in want_rc:
            self.broken.append("%s: exit %d: %s" % (
                what or argv, p.returncode, p.stderr.decode(errors="replace")[-500:]))
        return p.stderr.decode(errors="replace")

    def hyperfine(self, name, commands, env, runs=None, prepare=None, wrap=(), cpu=None,
                  rounds=None):
        """Run the commands side by side; returns {name: [seconds...]}.

        Full mode runs several rounds, alternating the order, and pools the
        times, so a slow drift of the machine hits both sides alike.  wrap
        goes before hyperfine; cpu, a dict, gets {name: [user+sys seconds,
        the mean of each round]}."""
        runs = runs or self.runs
        pooled = {n: [] for n, _ in commands}
        cpu = {} if cpu is None else cpu
        for rnd in range(rounds or self.rounds):
            order = commands if rnd % 2 == 0 else list(reversed(commands))
            out = os.path.join(self.tmp, "hf-%s-%d.json" % (name, rnd))
            argv = list(wrap) + ["hyperfine", "--style", "basic", "-w", str(self.warmup),
                    "-r", str(runs), "--export-json", out]
            if prepare:
                argv += ["--prepare", prepare]
            for n, c in order:
                argv += ["-n", n, c]
            p = subprocess.run(argv, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=600)
            text = p.stdout.decode(errors="replace")
            if p.returncode != 0:
                raise Failure("hyperfine %s failed:\n%s" % (name, text[-3000:]))
            if not self.quick and rnd == 0:
                log(text.rstrip())
            with open(out) as f:
                for r in json.load(f)["results"]:
                    pooled[r["command"]].extend(r["times"])
                    cpu.setdefault(r["command"], []).append(r["user"] + r["system"])
        for n, t in pooled.items():
            if not t or any(not isinstance(x, (int, float)) for x in t):
                raise Failure("no times parsed for %s" % n)
        return pooled

    def expected_runs(self, runs=None, rounds=None):
        return (rounds or self.rounds) * (self.warmup + (runs or self.runs))

    def rss(self, argv, stdin_path, cache, pipe=False):
        """Median peak RSS (KiB) of argv alone, stdin a file or a pipe."""
        vals = []
        out = os.path.join(self.tmp, "rss")
        for _ in range(self.rss_reps):
            tcmd = ["/usr/bin/time", "-f", "%M", "-o", out] + argv
            env = self.env(cache)
            if pipe:
                cat = subprocess.Popen(["cat", stdin_path], stdout=subprocess.PIPE)
                p = subprocess.run(tcmd, stdin=cat.stdout, env=env,
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, timeout=120)
                cat.stdout.close()
                cat.wait(30)
            else:
                with open(stdin_path, "rb") as f:
                    p = subprocess.run(tcmd, stdin=f, env=env,
                                       stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, timeout=120)
            if p.returncode != 0:
                self.broken.append("rss run %s: exit %d: %s" % (
                    argv, p.returncode, p.stderr.decode(errors="replace")[-300:]))
            with open(out) as f:
                m = re.search(r"(\d+)\s*$", f.read())
            if not m:
                raise Failure("GNU time printed no %M")
            vals.append(int(m.group(1)))
        return int(statistics.median(vals))

    def check_libs(self, stderr_text, what, want_curl):
        """LD_DEBUG=files output: was libcurl or a TLS library loaded?"""
        loaded = set(re.findall(r"file=(\S+?)\s+\[\d+\];\s+(?:needed|dynamically loaded)",
                                stderr_text))
        curl = sorted(x for x in loaded if "libcurl" in x)
        tls = sorted(x for x in loaded
                     if re.search(r"libssl|libcrypto|libgnutls|libnss3|libmbedtls|libwolfssl", x))
        if not loaded:
            self.broken.append("%s: LD_DEBUG=files printed nothing" % what)
        elif want_curl and not curl:
            self.broken.append("%s: libcurl was not loaded" % what)
        elif not want_curl and (curl or tls):
            self.broken.append("%s: loaded %s" % (what, ", ".join(curl + tls)))
            return "loaded " + ", ".join(curl + tls)
        return "%d libraries, %s" % (len(loaded), "libcurl " + (
            "loaded" if curl else "not loaded") + (", TLS " + ("loaded" if tls else "not loaded")))

    def expect_requests(self, what, before, n, wait=5.0):
        got = self.ep.wait_count(before + n, wait) - before
        if got != n:
            self.broken.append("%s: the endpoint received %d requests, expected %d"
                               % (what, got, n))
        return got

    def ratio_row(self, path, ours, ref, limit):
        """A timing row whose target is ours/ref <= limit."""
        target = "<= %gx" % limit
        if ref <= 0 or ours <= 0:
            # hyperfine subtracts the shell's own time; with very few runs
            # a tiny reference can come out as 0
            msg = "%s: a median of 0 after the shell correction (too few runs?)" % path
            if self.quick:
                self.notes.append(msg)
            else:
                self.broken.append(msg)
            self.row(path, ours, ref, None, target, None)
            return
        self.row(path, ours, ref, ours / ref, target, ours / ref <= limit)

    def row(self, path, ours, ref, ratio, target, ok, unit="ms", strict=False):
        """strict: the target holds on any machine, so quick mode checks it too."""
        self.rows.append((path, ours, ref, ratio, target, ok, unit, strict))
        if ok is False and (strict or not self.quick):
            self.failures.append("%s: ours %s, reference %s, %s, target %s"
                                 % (path, self.fmt(ours, unit), self.fmt(ref, unit),
                                    "ratio %.3fx" % ratio if ratio is not None
                                    else "difference %+d" % (ours - ref), target))

    # -- rows

    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="dcp-bench.")
        now = time.time()
        self.small = os.path.join(self.tmp, "small.eml")
        self.big = os.path.join(self.tmp, "big.eml")
        self.auto = os.path.join(self.tmp, "auto.eml")
        make_message(self.small, SMALL_SIZE, now)
        make_message(self.auto, SMALL_SIZE, now, auto=True)
        make_message(self.big, BIG_SIZE, now)
        self.ep = Endpoint(self.tmp, 300 if self.quick else 1200)
        for d in ("https", "notify", "fresh", "skipped", "limited", "pipe", "file", "rss", "cg",
                  "trailing"):
            os.makedirs(os.path.join(self.tmp, "cache-" + d), exist_ok=True)

    def cache(self, name):
        return os.path.join(self.tmp, "cache-" + name)

    def trust_store(self, pki):
        """A copy of /etc/ssl/certs that also trusts the test CA, the way
        update-ca-certificates would have it: the CA as a .pem, its hash
        link, and the bundle with it appended."""
        store = os.path.join(self.tmp, "etc-ssl-certs")
        shutil.copytree("/etc/ssl/certs", store, symlinks=True)
        shutil.copy(pki.ca, os.path.join(store, "deltachat-push-test-ca.pem"))
        p = subprocess.run(["openssl", "rehash", store], capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise Failure("openssl rehash: " + p.stderr[-500:])
        with open(os.path.join(store, "ca-certificates.crt"), "a") as f, open(pki.ca) as ca:
            f.write(ca.read())
        return store

    def in_store(self, store):
        """argv prefix: a private mount namespace with store over
        /etc/ssl/certs (a user namespace too when we are not root)."""
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
        probe = subprocess.run(unshare + ["true"], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            # In a chroot (whose / is no mount point) unshare cannot make
            # the mounts private; that is safe to skip only where no mount
            # is shared with another namespace, so nothing can leak out.
            with open("/proc/self/mountinfo") as f:
                shared = [ln for ln in f if " shared:" in ln]
            if shared:
                raise Failure("no private mount namespace: " + probe.stderr.strip())
            unshare += ["--propagation", "unchanged"]
        return unshare + [
            "sh", "-c", 'mount --bind "$1" /etc/ssl/certs && shift && exec "$@"', "sh", store]

    def bench_https(self):
        """The headline: a push over TLS, ours against curl, both with
        their default trust (see the top of the file)."""
        pki = tlstest.Pki(os.path.join(self.tmp, "pki"))
        ng = tlstest.Nginx(os.path.join(self.tmp, "nginx"), pki.good, pki.key)
        try:
            wrap = self.in_store(self.trust_store(pki))
            cache = self.cache("https")
            ours = [self.binary, "-w", "0", "-u", ng.url, TOKEN_HTTPS]
            bundle = [self.binary, "-w", "0", "--cacert", "/etc/ssl/certs/ca-certificates.crt",
                      "-u", ng.url, TOKEN_HTTPS]
            ref = ["curl", "-s", "-o", "/dev/null", "-d", TOKEN_HTTPS, ng.url]
            for argv in (ours, ref):
                self.run_once(wrap + argv, self.small, cache, None,
                              "https trial of " + os.path.basename(argv[0]))
            v = subprocess.run(wrap + [self.binary, "--version"], capture_output=True,
                               text=True, timeout=60).stdout.splitlines()
            self.notes.append("https: " + (v[-1] if v else "--version printed nothing"))
            if ng.wait_count(2) != 2:
                raise Failure("https: nginx got %d requests from the trial runs, expected 2"
                              % ng.count())
            cpu = {}
            t = self.hyperfine("https", [("deltachat-push", self.cmd(ours, self.small)),
                                         ("curl", self.cmd(ref)),
                                         ("dcp-bundle", self.cmd(bundle, self.small))],
                               self.env(cache), wrap=wrap, cpu=cpu, rounds=self.https_rounds)
            want = 3 * self.expected_runs(rounds=self.https_rounds)
            got = ng.wait_count(2 + want) - 2
            if got != want:
                self.broken.append("https: nginx got %d requests, expected %d" % (got, want))
            if any(ln[3] not in ("TLSv1.2", "TLSv1.3") for ln in ng.lines()):
                self.broken.append("https: a request did not come over TLS")
            self.https_rows(t, cpu)
        except BaseException:
            ng.stop()
            raise
        self.tls = {"nginx": ng, "wrap": wrap, "ours": ours, "ref": ref}  # for bench_instructions

    def https_rows(self, t, cpu):
        """Wall and CPU time: information, true of this machine only."""
        m = {k: statistics.median(v) for k, v in t.items()}
        c = {k: statistics.mean(v) for k, v in cpu.items()}
        self.row("HTTPS notify, median wall (info)", m["deltachat-push"], m["curl"],
                 m["deltachat-push"] / m["curl"] if m["curl"] > 0 else None, "info", None)
        self.row("HTTPS notify, user+sys CPU (info)", c["deltachat-push"], c["curl"],
                 c["deltachat-push"] / c["curl"] if c["curl"] > 0 else None, "info", None)
        self.row("  HTTPS, --cacert=whole bundle (info)", m["dcp-bundle"], m["curl"],
                 m["dcp-bundle"] / m["curl"] if m["curl"] > 0 else None, "info", None)
        self.row("  HTTPS, --cacert=whole bundle, CPU (info)", c["dcp-bundle"], c["curl"],
                 c["dcp-bundle"] / c["curl"] if c["curl"] > 0 else None, "info", None)

    def bench_notify(self):
        cache = self.cache("notify")
        before = self.ep.count()
        ours = self.dcp("-w", "0", TOKEN)
        err = self.run_once(ours, self.small, cache,
                            {"LD_DEBUG": "files"}, "notify")
        self.notes.append("notify: " + self.check_libs(err, "notify", True))
        ref = ["curl", "-s", "-o", "/dev/null", "-d", TOKEN, self.ep.url]
        t = self.hyperfine("notify", [("deltachat-push", self.cmd(ours, self.small)),
                                      ("curl", self.cmd(ref))], self.env(cache))
        self.expect_requests("notify", before, 1 + 2 * self.expected_runs())
        a, b = statistics.median(t["deltachat-push"]), statistics.median(t["curl"])
        # information: no user's push goes over plain http (see bench_https)
        self.row("notify over plain http (5 KB, -w 0, info)", a, b, a / b if b > 0 else None,
                 "info", None)
        self.t_notify = t

        # For information: a fresh state directory before every run (the
        # cost of creating it, and of the rate limit's bookkeeping).
        cache = self.cache("fresh")
        before = self.ep.count()
        ours = self.dcp(TOKEN_FRESH)
        t = self.hyperfine("fresh", [("deltachat-push", self.cmd(ours, self.small)),
                                     ("curl", self.cmd(ref))], self.env(cache),
                           prepare="rm -rf " + shlex.quote(cache))
        self.expect_requests("notify-fresh", before, 2 * self.expected_runs())
        a, b = statistics.median(t["deltachat-push"]), statistics.median(t["curl"])
        self.row("notify, fresh cache each run (info)", a, b, a / b if b > 0 else None,
                 "info", None)

    def bench_skipped(self):
        cache = self.cache("skipped")
        self.silent_row("skipped", "skipped (Auto-Submitted)", self.dcp(TOKEN_SKIPPED),
                        self.auto, cache)

    def bench_limited(self):
        cache = self.cache("limited")
        before = self.ep.count()
        ours = self.dcp("-w", "3600", "--no-trailing", TOKEN_LIMITED)
        self.run_once(ours, self.small, cache, None, "limited seed")
        self.expect_requests("limited seed", before, 1)
        self.silent_row("limited", "rate-limited (-w 3600 --no-trailing)", ours, self.small,
                        cache)

    def silent_row(self, name, label, ours, message, cache):
        """A run that sends nothing: libcurl and TLS never loaded, no
        request, median within 4x of cat reading the same message."""
        before = self.ep.count()
        err = self.run_once(ours, message, cache, {"LD_DEBUG": "files"}, name)
        self.notes.append(name + ": " + self.check_libs(err, name, False))
        t = self.hyperfine(name, [("deltachat-push", self.cmd(ours, message)),
                                  ("cat", self.cmd(["cat", message]) + " > /dev/null")],
                           self.env(cache))
        self.expect_requests(name, before, 0, wait=0.2)
        a, b = statistics.median(t["deltachat-push"]), statistics.median(t["cat"])
        self.ratio_row(label, a, b, 4)

    def bench_pipe(self):
        cache = self.cache("pipe")
        before = self.ep.count()
        ours = self.dcp("-w", "0", TOKEN)
        drain = "exec cat > /dev/null"
        cmds = [("dcp-40MiB", self.cmd(ours, pipe_from=self.big)),
                ("dcp-5KB", self.cmd(ours, pipe_from=self.small)),
                ("cat-40MiB", "cat %s | %s" % (shlex.quote(self.big), drain)),
                ("cat-5KB", "cat %s | %s" % (shlex.quote(self.small), drain))]
        t = self.hyperfine("pipe", cmds, self.env(cache), runs=self.big_runs)
        self.expect_requests("pipe", before, 2 * self.expected_runs(self.big_runs))
        m = {k: statistics.median(v) for k, v in t.items()}
        budget = m["dcp-5KB"] + m["cat-40MiB"] - m["cat-5KB"]
        self.ratio_row("pipe 40 MiB vs budget", m["dcp-40MiB"], budget, 1)
        self.notes.append("pipe budget = dcp 5 KB %.2f ms + cat|cat 40 MiB %.2f ms"
                          " - cat|cat 5 KB %.2f ms" % (m["dcp-5KB"] * 1e3,
                                                        m["cat-40MiB"] * 1e3,
                                                        m["cat-5KB"] * 1e3))
        self.row("  (pipe 40 MiB vs pipe 5 KB, info)", m["dcp-40MiB"], m["dcp-5KB"],
                 m["dcp-40MiB"] / m["dcp-5KB"] if m["dcp-5KB"] > 0 else None,
                 "info", None)
        before = self.ep.count()
        rb = self.rss(ours, self.big, self.cache("rss"), pipe=True)
        rs = self.rss(ours, self.small, self.cache("rss"), pipe=True)
        self.expect_requests("pipe rss", before, 2 * self.rss_reps)
        self.row("pipe peak RSS 40 MiB vs 5 KB", rb, rs, None, "<= +1 MiB",
                 rb <= rs + MIB, unit="KiB")

    def bench_file(self):
        cache = self.cache("file")
        before = self.ep.count()
        ours = self.dcp("-w", "0", TOKEN)
        t = self.hyperfine("file", [("dcp-40MiB", self.cmd(ours, self.big)),
                                    ("dcp-5KB", self.cmd(ours, self.small))],
                           self.env(cache))
        self.expect_requests("file", before, 2 * self.expected_runs())
        a, b = statistics.median(t["dcp-40MiB"]), statistics.median(t["dcp-5KB"])
        self.ratio_row("file 40 MiB vs file 5 KB", a, b, 1.2)
        before = self.ep.count()
        rb = self.rss(ours, self.big, self.cache("rss"))
        rs = self.rss(ours, self.small, self.cache("rss"))
        self.expect_requests("file rss", before, 2 * self.rss_reps)
        self.row("file peak RSS 40 MiB vs 5 KB", rb, rs, None, "<= +1 MiB",
                 rb <= rs + MIB, unit="KiB")
        # for information: the skipped path's RSS
        self.notes.append("peak RSS, skipped path: %d KiB; cat: %d KiB" % (
            self.rss(self.dcp(TOKEN_SKIPPED), self.auto, self.cache("rss")),
            self.rss(["cat"], self.auto, self.cache("rss"))))

    def bench_trailing(self):
        """For information: rate-limited with trailing pushes on (the
        default).  The first run inside the window starts a trailing push in
        the background; every later one finds it alive and stops (covered).
        Runs last, on a path of its own, since the trailing push arrives
        when the window ends."""
        cache = self.cache("trailing")
        window = 20
        url = self.ep.base + "/trailing"
        ours = [self.binary, "-u", url, "-w", str(window), TOKEN_TRAILING]
        t0 = time.monotonic()
        self.run_once(ours, self.small, cache, None, "trailing seed")
        self.run_once(ours, self.small, cache, None, "trailing start")
        t = self.hyperfine("trailing", [("deltachat-push", self.cmd(ours, self.small)),
                                        ("cat", self.cmd(["cat", self.small]) + " > /dev/null")],
                           self.env(cache))
        inside = time.monotonic() - t0 < window - 2
        n = self.ep.count("/trailing")
        if inside and n != 1:
            self.broken.append("trailing: %d requests inside the window, expected 1" % n)
        a, b = statistics.median(t["deltachat-push"]), statistics.median(t["cat"])
        self.row("rate-limited, trailing push covered (info)", a, b,
                 a / b if b > 0 else None, "info", None)
        if not self.quick:
            # the trailing push itself, when the window ends (bounded wait)
            left = window + 10 - (time.monotonic() - t0)
            got = self.wait_path("/trailing", 2, left)
            self.notes.append("trailing push %s" % ("arrived after the window" if got == 2
                                                     else "did NOT arrive (%d)" % got))
            if got != 2:
                self.broken.append("trailing: the trailing push did not arrive")

    def wait_path(self, path, n, timeout):
        deadline = time.monotonic() + max(timeout, 0)
        while self.ep.count(path) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ep.count(path)

    def callgrind(self, argv, stdin_path, cache, wrap=()):
        """Start argv under callgrind, its children not traced; returns a
        handle for callgrind_wait.  A process that argv forks and that
        exits without exec writes a profile of its own next to argv's."""
        d = tempfile.mkdtemp(prefix="cg.", dir=self.tmp)
        cmd = list(wrap) + ["valgrind", "--tool=callgrind", "--trace-children=no",
                            "--callgrind-out-file=" + os.path.join(d, "callgrind.out.%p")] + argv
        with open(stdin_path, "rb") as f, open(os.path.join(d, "stderr"), "wb") as err:
            p = subprocess.Popen(cmd, stdin=f, stdout=subprocess.DEVNULL, stderr=err,
                                 env=self.env(cache))
        return p, d

    def callgrind_wait(self, run, what):
        """(instructions, [profile files]) of a callgrind run."""
        p, d = run
        try:
            rc = p.wait(300)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            raise Failure("%s: callgrind run still going after 300 s" % what)
        with open(os.path.join(d, "stderr"), errors="replace") as f:
            text = f.read()
        m = re.search(r"Collected\s*:\s*([\d,]+)", text)
        if rc != 0 or not m:
            raise Failure("%s: callgrind run failed (exit %d):\n%s" % (what, rc, text[-2000:]))
        profiles = sorted(os.path.join(d, x) for x in os.listdir(d)
                          if x.startswith("callgrind.out."))
        return int(m.group(1).replace(",", "")), profiles

    def bench_instructions(self):
        """Instructions (callgrind totals) of one push over HTTPS, ours
        against curl's in the namespace of the timed row: the headline
        figure, since it holds on any machine; and of one skipped run
        against callgrind-baseline.  The three runs go at once (a count does
        not depend on load), the pushes with a fresh cache.  One run each:
        a count repeats to within a few hundred instructions.  A push
        that succeeds spawns nothing: a child that exits without exec
        leaves a profile of its own, and a detached grandchild is
        re-parented to this process, a child subreaper meanwhile."""
        tls = getattr(self, "tls", None)
        if tls is None:
            raise Failure("no HTTPS figure: the https row failed")
        try:
            self.https_instructions(tls)
        finally:
            tls["nginx"].stop()

    def https_instructions(self, tls):
        ng = tls["nginx"]
        before = ng.count()
        cache = tempfile.mkdtemp(prefix="cache-cg.", dir=self.tmp)
        subreaper(True)
        try:
            known = children()
            runs = {"deltachat-push": self.callgrind(tls["ours"], self.small, cache, tls["wrap"]),
                    "curl": self.callgrind(tls["ref"], os.devnull, cache, tls["wrap"]),
                    "skipped": self.callgrind(self.dcp(TOKEN_SKIPPED), self.auto,
                                              self.cache("cg"))}
            done, errors = {}, []
            for name, run in runs.items():  # every run waited for before a failure is raised
                try:
                    done[name] = self.callgrind_wait(run, name)
                except Failure as e:
                    errors.append(str(e))
            stray = children() - known
        finally:
            subreaper(False)
        if stray:
            self.broken.append("instructions: a successful push left processes behind: %s"
                               % " ".join(map(str, sorted(stray))))
            reap(stray)
        if errors:
            raise Failure("; ".join(errors))
        for name in ("deltachat-push", "skipped"):
            if len(done[name][1]) != 1:
                self.broken.append("instructions: %s forked (profiles: %s)"
                                   % (name, ", ".join(done[name][1])))
        got = ng.wait_count(before + 2) - before
        if got != 2:
            self.broken.append("instructions: nginx got %d requests, expected 2" % got)
        a, b = done["deltachat-push"][0], done["curl"][0]
        limit, why = https_ir_target(self.system)
        self.row("HTTPS push, instructions (vs curl)", a, b, a / b,
                 "<= %gx (%s)" % (limit, why), a <= limit * b, unit="Ir", strict=True)
        self.notes.append("where a push's instructions go: "
                          + ir_shares(done["deltachat-push"][1][0]))
        self.skipped_row(done["skipped"][0])

    def skipped_row(self, ir):
        """The skipped run's count against this release's line of
        callgrind-baseline ("debian-12 5184432"): most of it is the dynamic
        loader and the start-up of GLib and GMime, so each release has its own."""
        key = self.system["key"]
        base = {}
        if os.path.exists(BASELINE):
            with open(BASELINE) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if not k.startswith("#") and v.strip().isdigit():
                        base[k] = int(v)
        if self.opts.update_baseline:
            with open(BASELINE, "w") as f:
                f.write("# a skipped run's instructions by release (bench.py --update-baseline)\n")
                f.writelines("%s %d\n" % kv for kv in sorted({**base, key: ir}.items()))
            self.notes.append("callgrind-baseline: %s updated to %d" % (key, ir))
        base = base.get(key)
        if base is None:
            self.row("skipped path, instructions", ir, None, None,
                     "no baseline for " + key, None, unit="Ir")
        else:
            lim = base * (1 + CALLGRIND_TOLERANCE)
            self.row("skipped path, instructions", ir, base, ir / base,
                     "<= +%d%%" % round(CALLGRIND_TOLERANCE * 100),
                     ir <= lim if not self.opts.update_baseline else True, unit="Ir")

    # -- output

    @staticmethod
    def fmt(v, unit):
        if v is None:
            return "-"
        if unit == "ms":
            return "%.2f ms" % (v * 1e3)
        if unit == "KiB":
            return "%d KiB" % v
        return "{:,}".format(v)

    def table(self):
        fmt = self.fmt
        hdr = ("path", "ours", "reference", "ratio", "target", "result")
        lines = []
        for path, ours, ref, ratio, target, ok, unit, strict in self.rows:
            if unit == "KiB" and ratio is None and ref is not None:
                r = "%+d KiB" % (ours - ref)
            else:
                r = "-" if ratio is None else "%.3fx" % ratio
            res = "info" if ok is None else ("PASS" if ok else "FAIL")
            if self.quick and ok is not None and not strict:
                res = "(%s)" % res
            lines.append((path, fmt(ours, unit), fmt(ref, unit), r, target, res))
        w = [max(len(x[i]) for x in [hdr] + lines) for i in range(6)]
        log()
        log("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
        log("  ".join("-" * w[i] for i in range(6)))
        for ln in lines:
            log("  ".join(c.ljust(w[i]) for i, c in enumerate(ln)))
        log()
        for n in self.notes:
            log("note: " + n)
        log("load average at the end: %.2f" % os.getloadavg()[0])

    def kill_leftovers(self):
        """Stop processes we started that are still around (a trailing push
        child, say): those whose environment names our temp dir."""
        if not getattr(self, "tmp", None):
            return
        mark = ("XDG_CACHE_HOME=" + self.tmp).encode()
        for p in dcpkit.processes():
            if any(e.startswith(mark) for e in p.environ):
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except OSError:
                    pass

    def main(self):
        if not os.access(self.binary, os.X_OK):
            raise Failure("not an executable: %s" % self.binary)
        for tool in ("hyperfine", "valgrind", "curl", "/usr/bin/time", "openssl", "unshare",
                     "nginx"):
            if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
                raise Failure("%s is required" % tool)
        self.system = system()
        try:
            self.setup()
            log("binary:   %s" % self.binary)
            log("endpoint: %s at %s" % (self.ep.kind, self.ep.url))
            log("mode:     %s (%d round(s) x %d runs, %d warmup)" % (
                "quick" if self.quick else "full", self.rounds, self.runs, self.warmup))
            log("machine:  %s, %d CPUs, %s, %s" % (cpu_model(), os.cpu_count(),
                                                   self.system["name"], self.system["curl"]))
            load = os.getloadavg()[0]
            log("load:     %.2f%s" % (load, "  (busy: timings will be noisy)"
                                       if load > 0.5 * (os.cpu_count() or 1) else ""))
            for step in (self.bench_https, self.bench_instructions, self.bench_notify,
                         self.bench_skipped, self.bench_limited, self.bench_pipe, self.bench_file,
                         self.bench_trailing):
                log("== %s" % step.__name__[6:])
                try:
                    step()
                except (Failure, subprocess.TimeoutExpired) as e:
                    # say what broke, then go on with the other rows
                    self.broken.append("%s: %s" % (step.__name__[6:], e))
            self.table()
        finally:
            self.kill_leftovers()
            if getattr(self, "tls", None):
                self.tls["nginx"].stop()
            if getattr(self, "ep", None):
                self.ep.stop()
            if getattr(self, "tmp", None):
                if self.opts.keep:
                    log("kept %s" % self.tmp)
                else:
                    shutil.rmtree(self.tmp, ignore_errors=True)
        status = 0
        for b in self.broken:
            log("BROKEN: " + b)
            status = 1
        for f in self.failures:
            log("TARGET MISSED: " + f)
            status = 1
        if status == 0:
            log("all %s" % ("checks passed (quick mode: no timing assertion)"
                            if self.quick else "targets met"))
        return status


def system():
    """This system, for the report and for choosing the instruction targets:
    {"name": "Debian 12.11", "debian": 12 (None elsewhere), "key":
    "debian-12" (os-release's ID-VERSION_ID), "curl": "libcurl/7.88.1
    OpenSSL/3.0.22", "libcurl": "7.88.1"}."""
    rel = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                rel[k] = v.strip('"')
    except OSError:
        pass
    debian = None
    name = rel.get("PRETTY_NAME", "unknown system")
    key = "%s-%s" % (rel.get("ID", "unknown"), rel.get("VERSION_ID", "unknown"))
    if rel.get("ID") == "debian":
        try:
            with open("/etc/debian_version") as f:
                name = "Debian " + f.read().strip()
        except OSError:
            pass
        if rel.get("VERSION_ID", "").isdigit():
            debian = int(rel["VERSION_ID"])
    v = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"libcurl/(\S+)(?: (\S+))?", v.stdout)  # libcurl/7.88.1 OpenSSL/3.0.22
    if not m:
        return {"name": name, "debian": debian, "key": key,
                "curl": "curl --version: no libcurl/", "libcurl": ""}
    return {"name": name, "debian": debian, "key": key, "curl": m.group(0),
            "libcurl": m.group(1)}


def https_ir_target(sys_):
    """(limit, why) for the HTTPS instruction ratio: by Debian release;
    elsewhere by libcurl's major version (7 as in Debian 12, later as in 13)."""
    if sys_["debian"] in HTTPS_IR_TARGETS:
        return HTTPS_IR_TARGETS[sys_["debian"]], "Debian %d" % sys_["debian"]
    m = re.match(r"(\d+)\.", sys_["libcurl"])
    like = 12 if m and int(m.group(1)) < 8 else 13
    return HTTPS_IR_TARGETS[like], "libcurl %s, as Debian %d" % (sys_["libcurl"] or "?", like)


def ir_shares(profile):
    """Where a push's instructions go, from callgrind_annotate's inclusive
    counts: a few functions every Debian's libraries export."""
    parts = [("dlopen()", r":dlopen(@@\S+)? \["),
             ("curl_easy_perform()", r":curl_easy_perform \["),
             ("curl_easy_cleanup()", r":curl_easy_cleanup \["),
             ("exit()", r":exit \[")]
    p = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", profile],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"^\s*([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", p.stdout, re.M)
    if p.returncode != 0 or not m:
        return "callgrind_annotate failed: " + p.stderr[-300:]
    total = int(m.group(1).replace(",", ""))
    out = []
    for label, rx in parts:
        hit = re.search(r"^\s*([\d,]+) .*" + rx, p.stdout, re.M)
        if hit:
            n = int(hit.group(1).replace(",", ""))
            out.append("%s %.1f %% (%.2f M)" % (label, 100.0 * n / total, n / 1e6))
    return "%s of %.1f M instructions" % (", ".join(out) or "no known function", total / 1e6)


def subreaper(on):
    """Make this process the one that orphaned descendants are re-parented
    to (Linux PR_SET_CHILD_SUBREAPER), so none escapes the check."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1 if on else 0, 0, 0, 0) != 0:
        raise Failure("prctl(PR_SET_CHILD_SUBREAPER): " + os.strerror(ctypes.get_errno()))


def children():
    """Pids whose parent is this process, zombies included."""
    me = os.getpid()
    return {p.pid for p in dcpkit.processes() if p.ppid == me}


def reap(pids):
    """Stop and reap children (bounded: SIGKILL after 5 s)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.02)
        except OSError:
            pass


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--quick", action="store_true",
                    help="few runs, functional checks only (for CI)")
    ap.add_argument("--update-baseline", action="store_true",
                    help="write the measured instruction count to callgrind-baseline")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    opts = ap.parse_args()

    def on_term(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_term)
    try:
        sys.exit(Bench(opts).main())
    except (Failure, subprocess.TimeoutExpired) as e:
        log("bench: error: %s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
