#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A hostile environment around the run: proxies named in the
environment, FIFOs and devices where files should be, a stderr pipe
nobody reads, a file size limit, a uid without a passwd entry and no
HOME, a configuration file others may write, tokens that look like
options.  None of it may leak a token, hang the run, kill it, or put
noise on stderr at exit 0."""

import grp
import hashlib
import os
import pwd
import resource
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import SLOW, TOKEN, message  # noqa: E402

# DCP_RETRY_SCHEDULE, DCP_RETRY_LOG: the test build (dcptest.main checks)
NEEDS_TEST_HOOKS = True

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
              "ALL_PROXY", "all_proxy")


def token_hash(token=TOKEN):
    return hashlib.sha256(token.encode()).hexdigest()


def free_uid():
    """A uid (and gid) that no passwd or group entry names."""
    for uid in range(61000, 65000):
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            return uid
    raise RuntimeError("no free uid")


def full_pipe():
    """A pipe whose buffer is full and that nobody reads: (read end,
    write end), both blocking, as a caller that stopped reading leaves
    them."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        for _ in range(1 << 16):  # bounded: a pipe holds at most 1 MiB here
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


class Hostile(dcptest.TestCase):
    def popen(self, args, stderr, env=None, **kw):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.Popen(self.cmd(args), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=stderr, env=e, **kw)

    def reap(self, p):
        """Never leave a run behind, whatever the test found."""
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)

    def fifo(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkfifo(path, 0o600)
        return path

    def need_root(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (to run as another uid)")


class Proxies(Hostile):
    """libcurl reads proxies from the environment unless told not to."""

    def test_env_proxies_never_see_a_push(self):
        srv = self.server()
        proxy = self.server()
        env = {k: proxy.url for k in PROXY_VARS}
        env.update(NO_PROXY="", no_proxy="")
        for args in (["-w", "0"], ["--ping"]):
            with self.subTest(args=args):
                r = self.run_bin(args + ["-u", srv.url, TOKEN], message(), env=env)
                self.assertEqual(r.returncode, 0, r)
        self.assertEqual(srv.wait_for(2, 5 * SLOW), 2)
        self.assertExactRequest(srv.requests[0], srv.port)
        time.sleep(0.2)  # a connection made to the proxy is counted by now
        self.assertEqual(proxy.connections, 0)
        self.assertEqual(proxy.requests, [])

    def test_env_proxies_never_see_an_https_push(self):
        try:
            import tlstest
            from httpd import Server
        except ImportError as e:
            self.skipTest(str(e))
        import shutil
        import tempfile
        if not shutil.which("openssl"):
            self.skipTest("openssl not installed")
        pki_dir = tempfile.mkdtemp(dir=self.tmp)
        pki = tlstest.Pki(pki_dir)
        srv = Server(tls=tlstest.context(pki.good, pki.key)).start()
        self.servers.append(srv)
        proxy = self.server()
        env = {k: proxy.url for k in PROXY_VARS}
        r = self.run_bin(["--cacert", pki.ca, "-w", "0", "-u", srv.url, TOKEN], message(),
                         env=env)
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        time.sleep(0.2)  # a connection made to the proxy is counted by now
        self.assertEqual(proxy.connections, 0)


class Fifos(Hostile):
    """A FIFO (or a device) where a file should be never blocks a run."""

    def push_despite(self, path, args=(), timeout=10):
        srv = self.server()
        r = self.run_bin(list(args) + ["-u", srv.url, TOKEN], message(), timeout=timeout)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stderr, "", r)
        self.assertEqual(srv.wait_for(1, 5 * SLOW), 1, path)
        return srv

    def test_fifo_in_place_of_each_cache_file(self):
        for suffix in (".last", ".full", ".due", ".result", ".lock", ".gone"):
            with self.subTest(suffix=suffix):
                path = self.fifo(os.path.join(self.cache, token_hash() + suffix))
                self.push_despite(path, ["-w", "10"])
                # and --status, which reads .result and .due
                st = self.run_bin(["--status", TOKEN], None, timeout=10)
                self.assertDone(st)
                self.assertTrue(st.stdout.startswith(TOKEN[:8] + "…"), st)
                for n in os.listdir(self.cache):
                    os.unlink(os.path.join(self.cache, n))

    def test_fifo_in_place_of_a_retry_record(self):
        srv = self.server(default="503")
        msg = message()
        r = self.run_bin(["--retry=caller", "--timeout", "1", "-w", "0", "-u", srv.url, TOKEN],
                         msg)
        self.assertTempfail(r)
        records = [n for n in os.listdir(self.cache) if n.startswith("retry-")]
        self.assertEqual(len(records), 1)
        path = os.path.join(self.cache, records[0])
        os.unlink(path)
        self.fifo(path)
        srv.set_statuses([], default="200")
        n = len(srv.requests)
        r = self.run_bin(["--retry=caller", "-w", "0", "-u", srv.url, TOKEN], msg, timeout=10)
        self.assertDone(r)
        self.assertEqual(srv.wait_for(n + 1, 5 * SLOW), n + 1)

    def test_fifo_in_place_of_a_device_file(self):
        meta = self.write("dovecot-attributes",
                          "priv/0123456789abcdef/devicetoken\n%s\n" % TOKEN)
        other = "fcm-other:remembered-device-token"
        self.fifo(os.path.join(self.cache, token_hash(other) + ".device"))
        srv = self.push_despite(meta, ["-w", "0", "--dovecot-metadata", meta])
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        st = self.run_bin(["--status", "--dovecot-metadata", meta, TOKEN], None, timeout=10)
        self.assertDone(st)

    def test_fifo_or_device_as_config_or_token_file(self):
        srv = self.server()
        conf_fifo = self.fifo(os.path.join(self.tmp, "conf.fifo"))
        tok_fifo = self.fifo(os.path.join(self.tmp, "tokens.fifo"))
        zero = os.path.join(self.tmp, "zero")
        os.symlink("/dev/zero", zero)
        default = os.path.join(self.env["XDG_CONFIG_HOME"], "deltachat-push", "config")
        self.fifo(default)
        cases = {"config fifo": ["-c", conf_fifo, TOKEN],
                 "config device": ["-c", zero, TOKEN],
                 "default config fifo": [TOKEN],
                 "token file fifo": ["-t", tok_fifo],
                 "token file device": ["-t", zero]}
        for name, args in cases.items():
            with self.subTest(case=name):
                r = self.run_bin(args + ["-u", srv.url], message(), timeout=10)
                self.assertTempfail(r)
                self.assertIn("not a regular file", r.stderr)
                self.assertLess(r.elapsed, 5 * SLOW, r)
        self.assertEqual(srv.requests, [])

    def test_fifo_or_device_as_dovecot_metadata(self):
        zero = os.path.join(self.tmp, "zero")
        os.symlink("/dev/zero", zero)
        for path in (self.fifo(os.path.join(self.tmp, "attrs.fifo")), zero):
            with self.subTest(path=path):
                srv = self.push_despite(path, ["-w", "0", "--dovecot-metadata", path])
                self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def max_rss_kib(self, args):
        """The peak RSS of one run, measured by a fresh interpreter that
        runs nothing else."""
        code = ("import resource, subprocess, sys\n"
                "subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL,"
                " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
        p = subprocess.run([sys.executable, "-c", code] + self.cmd(args), env=self.env,
                           capture_output=True, text=True, timeout=60 * SLOW)
        return int(p.stdout)

    def test_huge_config_is_not_read(self):
        small = self.write("small.conf", "[deltachat-push]\nwindow=0\n")
        huge = self.write("huge.conf", "[deltachat-push]\nwindow=0\n")
        with open(huge, "r+b") as f:
            f.truncate(300 * 1024 * 1024)  # sparse: costs no disk
        r = self.run_bin(["-c", huge, TOKEN], message())
        self.assertTempfail(r)
        self.assertIn("not a regular file of at most 1 MiB", r.stderr)
        base = self.max_rss_kib(["-n", "-c", small, TOKEN])
        big = self.max_rss_kib(["-n", "-c", huge, TOKEN])
        # a whole read would be 300 MB more; the cap allows 1 MiB
        self.assertLess(big, base + 16 * 1024, (base, big))


class Stderr(Hostile):
    """A caller that stopped reading stderr never blocks the run."""

    def test_exit_75_line_into_a_full_pipe(self):
        r, w = full_pipe()
        p = None
        try:
            p = self.popen(["--no-such-option", TOKEN], stderr=w)
            p.stdin.close()
            self.assertEqual(p.wait(10 * SLOW), 75)
        finally:
            self.reap(p)
            os.close(r)
            os.close(w)

    def test_verbose_run_into_a_full_pipe(self):
        srv = self.server()
        r, w = full_pipe()
        p = None
        try:
            p = self.popen(["-v", "-w", "0", "-u", srv.url, TOKEN], stderr=w)
            p.stdin.write(message())
            p.stdin.close()
            self.assertEqual(p.wait(10 * SLOW), 0)
        finally:
            self.reap(p)
            os.close(r)
            os.close(w)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_sigterm_ends_a_run_whose_stderr_is_full(self):
        srv = self.server(statuses=["hang"])
        r, w = full_pipe()
        p = None
        try:
            p = self.popen(["--retry=caller", "--timeout", "30", "-w", "0", "-u", srv.url,
                            TOKEN], stderr=w)
            p.stdin.write(message())
            p.stdin.close()
            self.assertEqual(srv.wait_for(1, 10 * SLOW), 1)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(5 * SLOW), 75)
            self.assertLess(time.monotonic() - t0, 2 * SLOW)
        finally:
            self.reap(p)
            os.close(r)
            os.close(w)

    def test_sigterm_line_still_reaches_a_reader(self):
        srv = self.server(statuses=["hang"])
        p = self.popen(["--retry=caller", "--timeout", "30", "-w", "0", "-u", srv.url, TOKEN],
                       stderr=subprocess.PIPE)
        self.addCleanup(self.reap, p)
        p.stdin.write(message())
        p.stdin.close()
        self.assertEqual(srv.wait_for(1, 10 * SLOW), 1)
        p.send_signal(signal.SIGTERM)
        err = p.stderr.read().decode()
        p.stderr.close()
        self.assertEqual(p.wait(5 * SLOW), 75)
        self.assertEqual(err, "deltachat-push: interrupted by a signal, exiting 75 for a retry\n")

    def test_stderr_a_socket_nobody_reads(self):
        srv = self.server()
        a, b = socket.socketpair()
        p = None
        try:
            a.setblocking(False)
            try:
                for _ in range(1 << 16):
                    a.send(b"x" * 4096)
            except BlockingIOError:
                pass
            a.setblocking(True)
            p = self.popen(["-v", "-w", "0", "-u", srv.url, TOKEN], stderr=a.fileno())
            p.stdin.write(message())
            p.stdin.close()
            self.assertEqual(p.wait(10 * SLOW), 0)
        finally:
            self.reap(p)
            a.close()
            b.close()
        self.assertEqual(srv.bodies(), [TOKEN.encode()])


class Limits(Hostile):
    def test_file_size_limit_zero(self):
        if dcptest.WRAPPER:
            # valgrind writes files of its own and dies of the limit
            self.skipTest("meaningless under a wrapper")

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

        srv = self.server()
        for i, args in enumerate((["-w", "10"], ["-w", "10"], ["-w", "0"])):
            with self.subTest(run=i):
                p = subprocess.run(self.cmd(args + ["-u", srv.url, TOKEN]), input=message(),
                                   capture_output=True, env=self.env, preexec_fn=limit,
                                   timeout=30 * SLOW)
                self.assertEqual(p.returncode, 0, p)
                self.assertEqual(p.stderr, b"", p)
        # the second run is inside the window: its trailing push cannot be
        # scheduled (no file can grow), so it is pushed at once instead
        self.assertEqual(srv.wait_for(3, 5 * SLOW), 3)

    def test_uid_without_passwd_entry_and_no_home(self):
        self.need_root()
        uid = free_uid()
        srv = self.server()

        def become():
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        for args in (["-w", "0"], ["-w", "10"]):
            with self.subTest(args=args):
                p = subprocess.run(self.cmd(args + ["-u", srv.url, TOKEN]),
                                   input=message(), capture_output=True, env=env,
                                   preexec_fn=become, cwd="/", timeout=30 * SLOW)
                self.assertEqual(p.returncode, 0, p)
                self.assertEqual(p.stderr, b"", p)
        self.assertEqual(srv.wait_for(2, 5 * SLOW), 2)

    def test_full_stderr_pipe_of_another_user(self):
        # a pipe made by root cannot be reopened through /proc by another
        # uid (as under Postfix's pipe(8)): the line is dropped all the same
        self.need_root()
        uid = free_uid()
        r, w = full_pipe()

        def become():
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

        p = None
        try:
            p = subprocess.Popen(self.cmd(["--no-such-option", TOKEN]), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=w, preexec_fn=become,
                                 cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            self.assertEqual(p.wait(10 * SLOW), 75)
        finally:
            self.reap(p)
            os.close(r)
            os.close(w)


class ConfigOwner(Hostile):
    """Whoever can write the config can redirect url=: refused."""

    def conf(self, mode, uid=None, gid=None):
        path = self.write("config", "[deltachat-push]\nwindow=0\n", mode=mode)
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        return path

    def test_writable_by_others_is_refused(self):
        srv = self.server()
        for mode in (0o666, 0o602, 0o646):
            with self.subTest(mode=oct(mode)):
                r = self.run_bin(["-c", self.conf(mode), "-u", srv.url, TOKEN], message())
                self.assertTempfail(r)
                self.assertIn("writable by others", r.stderr)
        self.assertEqual(srv.requests, [])

    def test_writable_by_a_shared_group_is_refused(self):
        self.need_root()
        srv = self.server()
        shared = next((g for g in grp.getgrall() if g.gr_gid != 0 and g.gr_name != "root"),
                      None)
        if shared is None:
            self.skipTest("no group other than root")
        r = self.run_bin(["-c", self.conf(0o660, gid=shared.gr_gid), "-u", srv.url, TOKEN],
                         message())
        self.assertTempfail(r)
        self.assertIn("writable by its group", r.stderr)
        self.assertEqual(srv.requests, [])

    def test_writable_by_the_private_group_is_fine(self):
        # root's group is named root and has no other member (Debian)
        self.need_root()
        if grp.getgrgid(0).gr_mem not in ([], ["root"]):
            self.skipTest("root's group has members here")
        srv = self.server()
        r = self.run_bin(["-c", self.conf(0o660, gid=0), "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_owned_by_another_user_is_refused(self):
        self.need_root()
        srv = self.server()
        r = self.run_bin(["-c", self.conf(0o600, uid=free_uid()), "-u", srv.url, TOKEN],
                         message())
        self.assertTempfail(r)
        self.assertIn("belongs to uid", r.stderr)
        self.assertEqual(srv.requests, [])

    def test_own_private_config_is_read(self):
        srv = self.server()
        r = self.run_bin(["-c", self.conf(0o644), "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        r = self.run_bin(["-c", self.conf(0o600), "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)


class Arguments(Hostile):
    LONG = "-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef"

    def test_token_with_a_leading_dash_is_not_echoed(self):
        srv = self.server()
        for args in ([self.LONG], ["--url=" + srv.url, self.LONG],
                     ["-w", self.LONG, TOKEN], ["--tokne=" + self.LONG[1:]]):
            with self.subTest(args=args):
                r = self.run_bin(args + ["-u", srv.url], message())
                self.assertTempfail(r)
                self.assertNotIn(self.LONG[1:12], r.stderr)
                self.assertIn(self.LONG[1:8], r.stderr)
        self.assertEqual(srv.requests, [])
        r = self.run_bin(["--nope", TOKEN], message())
        self.assertIn("Unknown option --nope", r.stderr)
        self.assertIn("goes after --", r.stderr)

    def test_token_with_a_leading_dash_after_double_dash(self):
        srv = self.server()
        r = self.run_bin(["-w", "0", "-u", srv.url, "--", self.LONG], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [self.LONG.encode()])

    def test_attached_short_option_values(self):
        srv = self.server()
        self.assertDone(self.run_bin(["-w10", "-u", srv.url, TOKEN], message()))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        cases = {("-w10",): "trailing", ("-nw10",): "trailing", ("-vnw10",): "trailing",
                 ("-w0",): "notify", ("-w", "10"): "trailing"}
        for args, decision in cases.items():
            with self.subTest(args=args):
                # --burst 1: the bucket is empty after the push above,
                # however slow the runs (a wrapper) are
                extra = ["--burst", "1"] + ([] if "n" in args[0] else ["-n"])
                r = self.run_bin(extra + list(args) + ["-u" + srv.url, TOKEN], message())
                self.assertEqual(r.returncode, 0, r)
                self.assertEqual(r.stdout, "%s %s…\n" % (decision, TOKEN[:8]))
        self.assertEqual(len(srv.requests), 1)
        # the next argument is a value, whatever it looks like
        r = self.run_bin(["-n", "-c", "-w5", TOKEN], message())
        self.assertTempfail(r)
        self.assertIn("config -w5: ", r.stderr)


class RetryAfter(Hostile):
    """429 and Retry-After: the header is ignored (documented)."""

    def test_owed_push_keeps_its_schedule(self):
        srv = self.server(statuses=["429:3600"])
        self.env["DCP_RETRY_SCHEDULE"] = "1,2"
        r = self.run_bin(["-w", "0", "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(srv.wait_for(2, 10 * SLOW), 2)
        self.assertLess(srv.requests[1].time - srv.requests[0].time, 5 * SLOW)

    def test_caller_mode_sees_a_transient_failure(self):
        srv = self.server(default="429:3600")
        # a budget that an answer fits in, even with a wrapper's slow start
        budget = "%d" % SLOW
        r = self.run_bin(["--retry=caller", "--timeout", budget, "-w", "0", "-u", srv.url, TOKEN],
                         message())
        self.assertTempfail(r)
        self.assertIn("429", r.stderr)


if __name__ == "__main__":
    dcptest.main()
