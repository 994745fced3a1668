#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run the built deltachat-push on every seed and hostile message.

    run.py BINARY

For each line of tests/corpus/EXPECTED and tests/hostile/EXPECTED the binary
runs with --dry-run and one token, once with the message on a pipe (as
fetchmail, procmail and Dovecot give it) and once as a regular file (as
getmail does), and must:
  - exit 0 with nothing on stderr (getmail counts stderr as a failure);
  - print exactly "<decision> <first 8 characters of the token>…";
  - read a pipe to EOF, and leave a regular file unread past the header cap;
  - finish within WALL_LIMIT seconds with a peak RSS under RSS_LIMIT.
A few cases then run for real against a loopback endpoint (tests/httpd.py):
exactly one POST whose body is the raw token when the decision is notify,
and no request at all when it is a skip.

Output is TAP.  The big and binary inputs are written by gen.py into a
temporary directory first; nothing is written to the source tree.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)

import gen  # noqa: E402
from httpd import Server  # noqa: E402

# $DCP_SLOW stretches the time bound for slow builds (tests/dcptest.py).
SLOW = float(os.environ.get("DCP_SLOW", "1"))
WALL_LIMIT = 5.0 * SLOW       # seconds, per run (Dovecot kills us at 10)
RSS_LIMIT = 64 * 1024         # KiB of peak RSS, per run; not checked for a
                              # sanitizer build (shadow memory, quarantine)
HEADER_MAX = 1024 * 1024      # DCP_MESSAGE_HEADER_MAX
READ_SLACK = 64 * 1024        # a regular file may be read this far past it
TIME = "/usr/bin/time"
DECISIONS = ("notify", "skip auto-submitted", "skip self", "skip old",
             "skip not-chat")
# An encrypted token as current apps upload it: opaque, ~0.9 KB.
TOKEN = "openpgp:" + "".join(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[
        (i * 37 + 11) % 64] for i in range(880)) + "=="
SHOWN = TOKEN[:8] + "\u2026"

# (directory, file, options or None for the @default): real POSTs.
POST_CASES = [
    ("corpus", "dc-encrypted.eml", "pipe", None),
    ("corpus", "getmail.eml", "file", None),
    ("corpus", "dc-read-receipt.eml", "pipe", None),
    ("corpus", "dc-self-copy.eml", "file",
     ["--max-age=1000000000", "--self=alice@example.org"]),
    ("corpus", "dc-old.eml", "pipe", None),
    ("hostile", "empty.bin", "pipe", None),
    ("hostile", "big-body-40m.bin", "pipe", None),
    ("hostile", "big-body-40m.bin", "file", None),
    ("hostile", "auto-then-one-line-10m.bin", "pipe", None),
    ("hostile", "headers-100k-big.bin", "file", None),
]


class Case:
    def __init__(self, where, name, path, decision, options):
        self.where, self.name, self.path = where, name, path
        self.decision, self.options = decision, options

    def label(self):
        opts = " ".join(self.options)
        return "%s/%s%s" % (self.where, self.name, " " + opts if opts else "")


def read_manifest(path):
    """[(file, decision, options)] from an EXPECTED file."""
    default, lines = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line)
            if words[0] == "@default":
                default = [] if words[1:] == ["-"] else words[1:]
                continue
            if len(words) < 2:
                raise SystemExit("%s:%d: no decision" % (path, n))
            if words[1] == "skip" and len(words) >= 3:
                decision, rest = "skip " + words[2], words[3:]
            else:
                decision, rest = words[1], words[2:]
            if decision not in DECISIONS:
                raise SystemExit("%s:%d: unknown decision %r" % (path, n, decision))
            if rest == ["-"]:
                options = []
            elif rest:
                options = rest
            else:
                options = None
            lines.append((words[0], decision, options))
    return default, lines


class Runner:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp
        self.n = 0
        self.failed = 0
        self.worst_rss = (0, "")
        self.worst_wall = (0.0, "")
        self.rss = []  # (KiB, label) of every run
        self.serial = 0
        with open(binary, "rb") as f:
            self.sanitized = b"__asan_init" in f.read()

    def env(self):
        """A fresh HOME and cache for every run: no state leaks between runs."""
        self.serial += 1
        home = os.path.join(self.tmp, "home-%d" % self.serial)
        os.makedirs(home)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_CACHE_HOME": os.path.join(home, "cache"),
            "XDG_CONFIG_HOME": os.path.join(home, "config"),
            "LC_ALL": "C.UTF-8",
        }
        for k, v in os.environ.items():
            if k.startswith(("ASAN_", "UBSAN_", "LSAN_", "MSAN_", "G_DEBUG", "G_SLICE")):
                env[k] = v
        return env

    def ok(self, good, what, diag=()):
        self.n += 1
        if not good:
            self.failed += 1
        print("%s %d - %s" % ("ok" if good else "not ok", self.n, what))
        for d in diag:
            for line in str(d).splitlines() or [""]:
                print("#   " + line)
        sys.stdout.flush()

    def run(self, args, path, mode, env):
        """Run BINARY ARGS with PATH on stdin; returns a dict of facts."""
        tfile = os.path.join(self.tmp, "time-%d" % self.serial)
        out = tempfile.TemporaryFile(dir=self.tmp)
        err = tempfile.TemporaryFile(dir=self.tmp)
        cmd = [TIME, "-f", "%M", "-o", tfile, self.binary] + args
        res = {"drained": True, "offset": None, "timeout": False}
        size = os.path.getsize(path)
        start = time.monotonic()

        def wait_bounded(p):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                res["timeout"] = True
                p.kill()
                p.wait()

        if mode == "file":
            with open(path, "rb") as f:
                p = subprocess.Popen(cmd, stdin=f, stdout=out, stderr=err, env=env)
                wait_bounded(p)
                res["offset"] = os.lseek(f.fileno(), 0, os.SEEK_CUR)
        else:
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env)

            def feed():
                try:
                    with open(path, "rb") as f:
                        while True:
                            chunk = f.read(1 << 16)
                            if not chunk:
                                break
                            p.stdin.write(chunk)
                except BrokenPipeError:
                    res["drained"] = False
                finally:
                    try:
                        p.stdin.close()
                    except BrokenPipeError:
                        res["drained"] = False

            t = threading.Thread(target=feed, daemon=True)
            t.start()
            wait_bounded(p)
            t.join(5)
        res["wall"] = time.monotonic() - start
        res["rc"] = p.returncode
        out.seek(0)
        err.seek(0)
        res["stdout"] = out.read()
        res["stderr"] = err.read()
        res["size"] = size
        try:
            with open(tfile) as f:
                # the last line; "Command exited with non-zero status" may precede it
                res["rss"] = int(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            res["rss"] = None
        return res

    def common_checks(self, res, mode, label):
        """Problems every run must be free of; also tracks the worst case."""
        problems = []
        if res["timeout"]:
            problems.append("did not finish within 60 s")
        if res["rc"] != 0:
            problems.append("exit status %s, want 0" % res["rc"])
        if res["stderr"]:
            problems.append("stderr not empty: %r" % res["stderr"][:500])
        if res["wall"] > WALL_LIMIT:
            problems.append("took %.2f s, limit %.1f s" % (res["wall"], WALL_LIMIT))
        if res["rss"] is None:
            problems.append("no peak RSS from %s" % TIME)
        else:
            if res["rss"] > RSS_LIMIT and not self.sanitized:
                problems.append("peak RSS %d KiB, limit %d KiB" % (res["rss"], RSS_LIMIT))
            self.rss.append((res["rss"], "%s (%s)" % (label, mode)))
            if res["rss"] > self.worst_rss[0]:
                self.worst_rss = (res["rss"], "%s (%s)" % (label, mode))
        if res["wall"] > self.worst_wall[0]:
            self.worst_wall = (res["wall"], "%s (%s)" % (label, mode))
        if mode == "pipe" and not res["drained"]:
            problems.append("did not read the pipe to EOF (writer got EPIPE)")
        if mode == "file" and res["offset"] is not None \
                and res["offset"] > HEADER_MAX + READ_SLACK:
            problems.append("read %d bytes of a %d-byte regular file"
                            % (res["offset"], res["size"]))
        return problems

    def dry_run(self, case, mode):
        args = ["--dry-run"] + case.options + [TOKEN]
        res = self.run(args, case.path, mode, self.env())
        label = case.label()
        problems = self.common_checks(res, mode, label)
        want = "%s %s\n" % (case.decision, SHOWN)
        got = res["stdout"].decode("utf-8", "replace")
        if got != want:
            problems.append("stdout %r, want %r" % (got, want))
        self.ok(not problems, "%s [%s]: %s" % (label, mode, case.decision),
                problems + (["wall %.3f s, peak RSS %s KiB" % (res["wall"], res["rss"])]
                            if problems else []))

    def post(self, case, mode):
        want = 1 if case.decision == "notify" else 0
        label = case.label()
        with Server() as srv:
            args = ["--url=" + srv.url] + case.options + [TOKEN]
            res = self.run(args, case.path, mode, self.env())
            time.sleep(0.3)  # anything late would still be counted
            reqs = list(srv.requests)
        problems = self.common_checks(res, mode, "POST " + label)
        if len(reqs) != want:
            problems.append("%d requests, want %d" % (len(reqs), want))
        for r in reqs:
            if r.method != "POST":
                problems.append("method %s, want POST" % r.method)
            if r.body != TOKEN.encode():
                problems.append("body %r, want the raw token" % r.body[:80])
        self.ok(not problems, "POST %s [%s]: %s -> %d request%s"
                % (label, mode, case.decision, want, "" if want == 1 else "s"), problems)


def load_cases(gendir):
    cases = []
    missing = []
    for where in ("corpus", "hostile"):
        d = os.path.join(TESTS, where)
        default, lines = read_manifest(os.path.join(d, "EXPECTED"))
        seen = set()
        for name, decision, options in lines:
            path = os.path.join(d, name)
            if not os.path.exists(path) and where == "hostile":
                path = os.path.join(gendir, name)
            cases.append(Case(where, name, path, decision,
                              default if options is None else options))
            seen.add(name)
        present = [f for f in os.listdir(d) if f.endswith(".eml")]
        if where == "hostile":
            present += list(gen.CASES)
        missing += ["%s/%s" % (where, f) for f in sorted(present) if f not in seen]
    return cases, missing


def main():
    if len(sys.argv) != 2:
        print("usage: run.py BINARY", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.access(TIME, os.X_OK):
        print("1..0 # SKIP %s is missing (apt-get install time)" % TIME)
        return 0
    tmp = tempfile.mkdtemp(prefix="dcp-hostile-")
    try:
        gendir = os.path.join(tmp, "gen")
        os.makedirs(gendir)
        for name in gen.CASES:
            gen.write_case(gendir, name)
        cases, missing = load_cases(gendir)
        posts = []
        for where, name, mode, options in POST_CASES:
            match = [c for c in cases if c.where == where and c.name == name
                     and (options is None or c.options == options)]
            posts.append((match[0] if match else None, where, name, mode))
        r = Runner(binary, tmp)
        print("1..%d" % (1 + 2 * len(cases) + len(posts)))
        if r.sanitized:
            print("# AddressSanitizer build: peak RSS reported, not bounded")
        r.ok(not missing, "every input has an expected decision",
             ["no line in EXPECTED for " + m for m in missing])
        for c in cases:
            if not os.path.exists(c.path):
                for mode in ("pipe", "file"):
                    r.ok(False, "%s [%s]" % (c.label(), mode), ["no such input: " + c.path])
                continue
            for mode in ("pipe", "file"):
                r.dry_run(c, mode)
        for c, where, name, mode in posts:
            if c is None:
                r.ok(False, "POST %s/%s [%s]" % (where, name, mode), ["not in EXPECTED"])
            else:
                r.post(c, mode)
        print("# worst peak RSS: %d KiB, %s" % r.worst_rss)
        for kib, what in sorted(r.rss, reverse=True)[:8]:
            print("#   %6d KiB  %s" % (kib, what))
        if r.rss:
            print("# median peak RSS: %d KiB" % sorted(r.rss)[len(r.rss) // 2][0])
        print("# slowest run: %.3f s, %s" % r.worst_wall)
        if r.failed:
            print("# %d of %d failed" % (r.failed, r.n))
        return 1 if r.failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
