#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every option, token files, the config file and precedence."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import TOKEN, message  # noqa: E402


class Tokens(dcptest.TestCase):
    def test_token_file(self):
        srv = self.server()
        tf = self.write("tokens", "# phone\n\n  tok-one-abcdef  \r\n#tablet\ntok-two-abcdef\n"
                        "tok-one-abcdef\n")
        r = self.run_bin(["-t", tf, "--token-file", tf, "-u", srv.url, "tok-two-abcdef",
                          "tok-three-abc"], message())
        self.assertDone(r)
        self.assertEqual(sorted(srv.bodies()), sorted(
            [b"tok-one-abcdef", b"tok-two-abcdef", b"tok-three-abc"]))

    def test_token_file_missing_or_unreadable(self):
        srv = self.server()
        r = self.run_bin(["-t", os.path.join(self.tmp, "nope"), "-u", srv.url], message())
        self.assertTempfail(r)
        self.assertIn("nope", r.stderr)
        self.assertEqual(srv.bodies(), [])

    def test_token_file_readable_by_others_warns_but_works(self):
        srv = self.server()
        tf = self.write("tokens", TOKEN + "\n", mode=0o644)
        r = self.run_bin(["-t", tf, "-u", srv.url], message())
        self.assertDone(r)
        v = self.run_bin(["-v", "-w", "0", "-t", tf, "-u", srv.url], message())
        self.assertIn("readable by others", v.stderr)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)

    def test_malformed_tokens(self):
        srv = self.server()
        bad = {"space inside": "abc def", "control": "abc\x01def",
               "tab": "abc\tdef", "too long": "a" * 4097, "non-ascii": "abcé"}
        for name, tok in bad.items():
            with self.subTest(case=name):
                r = self.run_bin(["-u", srv.url, "good-token-1", tok], message())
                self.assertTempfail(r)
                self.assertIn("token", r.stderr)
                tf = self.write("bad", "good-token-1\n" + tok + "\n")
                r = self.run_bin(["-t", tf, "-u", srv.url], message())
                self.assertTempfail(r)
                self.assertIn("line 2", r.stderr)
        self.assertEqual(srv.bodies(), [])

    def test_legitimate_odd_tokens(self):
        srv = self.server()
        toks = ["openpgp:a/b+c==", "../../x", "webpush:https://e/x|p|a", "a" * 4096]
        self.assertDone(self.run_bin(["-u", srv.url] + toks, message()))
        self.assertEqual(sorted(srv.bodies()), sorted(t.encode() for t in toks))
        for n in os.listdir(self.cache):
            self.assertRegex(n, r"^[0-9a-f]{64}\.(last|full|lock|result)$")

    def test_no_token(self):
        r = self.run_bin([], message())
        self.assertTempfail(r)
        self.assertIn("no push token", r.stderr)


class Config(dcptest.TestCase):
    def config(self, text, name="config"):
        path = os.path.join(self.env["XDG_CONFIG_HOME"], "deltachat-push", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_default_config_file(self):
        srv = self.server()
        tf = self.write("tokens", "cfg-token-abc\n")
        self.config("[deltachat-push]\nurl=%s\ntoken-file=%s\ntokens=cfg-token-2;\n"
                    "window=0\n" % (srv.url, tf))
        for _ in range(2):
            self.assertDone(self.run_bin([], message()))
        self.assertEqual(sorted(srv.bodies()), sorted([b"cfg-token-abc", b"cfg-token-2"] * 2))

    def test_explicit_config(self):
        srv = self.server()
        path = self.write("my.conf", "[deltachat-push]\nurl=%s\ntokens=x-token-1\n"
                          "self=me@example.org\n" % srv.url)
        self.assertDone(self.run_bin(["-c", path], message(from_addr="me@example.org")))
        self.assertDone(self.run_bin(["--config", path], message()))
        self.assertEqual(srv.bodies(), [b"x-token-1"])

    def test_command_line_tokens_replace_config_tokens(self):
        srv = self.server()
        self.config("[deltachat-push]\nurl=%s\ntokens=cfg-token-1\n" % srv.url)
        self.assertDone(self.run_bin(["cli-token-1"], message()))
        self.assertEqual(srv.bodies(), [b"cli-token-1"])

    def test_precedence_url(self):
        cfg, env, cli = self.server(), self.server(), self.server()
        self.config("[deltachat-push]\nurl=%s\nwindow=0\n" % cfg.url)
        self.assertDone(self.run_bin([TOKEN], message()))
        self.assertDone(self.run_bin([TOKEN], message(),
                                     env={"DELTACHAT_PUSH_URL": env.url}))
        self.assertDone(self.run_bin(["-u", cli.url, TOKEN], message(),
                                     env={"DELTACHAT_PUSH_URL": env.url}))
        self.assertEqual([len(s.requests) for s in (cfg, env, cli)], [1, 1, 1])

    def test_precedence_window(self):
        srv = self.server()
        self.config("[deltachat-push]\nurl=%s\nwindow=0\n" % srv.url)
        # the command line's window wins over the config's 0
        # (--burst 1: one push per window, however slow the runs are)
        for _ in range(2):
            self.assertDone(self.run_bin(["-w", "3600", "--burst", "1", "--no-trailing", TOKEN],
                                         message()))
        self.assertEqual(len(srv.requests), 1)

    def test_bad_configs(self):
        cases = {
            "garbage": "\x00\x01 this is not a key file\n[[[",
            "unknown key": "[deltachat-push]\nwindw=3\n",
            "unknown group": "[other]\nurl=https://x/\n",
            "bad number": "[deltachat-push]\nwindow=ten\n",
            "bad bool": "[deltachat-push]\nchat-only=perhaps\n",
            "http url": "[deltachat-push]\nurl=http://example.org/notify\n",
        }
        for name, text in cases.items():
            with self.subTest(case=name):
                path = self.write("bad.conf", text)
                r = self.run_bin(["-c", path, TOKEN], message())
                self.assertTempfail(r)
                self.assertIn("bad.conf" if name != "http url" else "loopback", r.stderr)

    def test_missing_explicit_config(self):
        r = self.run_bin(["-c", os.path.join(self.tmp, "none.conf"), TOKEN], message())
        self.assertTempfail(r)


class Options(dcptest.TestCase):
    def test_help(self):
        r = self.run_bin(["--help"], None)
        self.assertDone(r)
        for opt in ["--token-file", "--config", "--url", "--window", "--self", "--max-age",
                    "--chat-only", "--timeout", "--best-effort", "--no-trailing", "--dry-run",
                    "--ping", "--status", "--verbose", "--version", "--help"]:
            self.assertIn(opt, r.stdout)
        self.assertNotIn("trailing-child", r.stdout)
        last = r.stdout.rstrip("\n").splitlines()[-1]
        self.assertTrue(last.startswith("Example: deltachat-push "), last)
        self.assertEqual(self.run_bin(["-h"], None).stdout, r.stdout)

    def test_version(self):
        r = self.run_bin(["--version"], None)
        self.assertDone(r)
        self.assertEqual(r.stdout.splitlines()[0], "deltachat-push 1.0.0")
        self.assertRegex(r.stdout.splitlines()[1], r"^libcurl/\S+ .*certificates checked against ")
        self.assertEqual(self.run_bin(["-V"], None).stdout, r.stdout)

    def test_unknown_option(self):
        r = self.run_bin(["--frobnicate", TOKEN], message())
        self.assertTempfail(r)
        self.assertIn("frobnicate", r.stderr)

    def test_bad_values(self):
        for args in (["-w", "-1"], ["--window", "x"], ["--max-age", "1.5"],
                     ["--timeout", "0"], ["--dry-run", "--ping"], ["--burst", "0"],
                     ["--burst", "x"], ["--burst", "1001"], ["--resume", "--status"]):
            with self.subTest(args=args):
                self.assertTempfail(self.run_bin(args + [TOKEN], message()))

    def test_burst(self):
        # the bucket: --burst pushes at once, a second apart, then a trailing
        # push; from the config file too
        srv = self.server()
        for i in range(2):
            self.assertDone(self.run_bin(["-u", srv.url, "--burst", "2", TOKEN], message()))
            time.sleep(1.05)
        self.assertDone(self.run_bin(["-u", srv.url, "--burst", "2", "-n", TOKEN], message()))
        r = self.run_bin(["-u", srv.url, "--burst", "2", "-n", TOKEN], message())
        self.assertEqual(r.stdout, "trailing %s…\n" % TOKEN[:8])
        conf = self.write("c3", "[deltachat-push]\nburst=3\n")
        r = self.run_bin(["-c", conf, "-u", srv.url, "-n", TOKEN], message())
        self.assertEqual(r.stdout, "notify %s…\n" % TOKEN[:8])
        self.assertEqual(len(srv.requests), 2)
        conf = self.write("c0", "[deltachat-push]\nburst=0\n")
        self.assertTempfail(self.run_bin(["-c", conf, "-u", srv.url, TOKEN], message()))

    def test_urls(self):
        for url in ["http://example.org/notify", "http://10.0.0.1/notify",
                    "ftp://127.0.0.1/", "not a url", "http:///nohost"]:
            with self.subTest(url=url):
                r = self.run_bin(["-u", url, TOKEN], message())
                self.assertTempfail(r)
        ok = self.run_bin(["-n", "-u", "https://push.example.org/notify", TOKEN], message())
        self.assertDone(ok)

    def test_dry_run_changes_nothing(self):
        srv = self.server()
        r = self.run_bin(["-n", "-u", srv.url, TOKEN, "second-token"], message())
        self.assertDone(r)
        self.assertEqual(r.stdout, "notify %s…\nnotify second-t…\n" % TOKEN[:8])
        self.assertFalse(os.path.exists(self.cache))
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], message()))
        before = {n: os.stat(os.path.join(self.cache, n)).st_mtime_ns
                  for n in os.listdir(self.cache)}
        # --burst 1: the bucket is empty after that push, however slow the runs
        r = self.run_bin(["--dry-run", "--burst", "1", "-u", srv.url, TOKEN], message())
        self.assertEqual(r.stdout, "trailing %s…\n" % TOKEN[:8])
        r = self.run_bin(["-n", "--burst", "1", "--no-trailing", "-u", srv.url, TOKEN], message())
        self.assertEqual(r.stdout, "rate-limited %s…\n" % TOKEN[:8])
        after = {n: os.stat(os.path.join(self.cache, n)).st_mtime_ns
                 for n in os.listdir(self.cache)}
        self.assertEqual(before, after)
        self.assertEqual(len(srv.requests), 1)

    def test_ping(self):
        srv = self.server()
        srv.set_body_status(b"ping-token-2", "410")
        r = self.run_bin(["--ping", "-u", srv.url, "ping-token-1", "ping-token-2"], None)
        self.assertTempfail(r)
        self.assertEqual(r.stdout, "200 ok ping-tok…\n410 gone ping-tok…\n")
        # no rate limit for --ping, and stdin is never read
        r = self.run_bin(["--ping", "-u", srv.url, "ping-token-1"], b"x" * 100)
        self.assertDone(r)
        self.assertEqual(len(srv.requests), 3)

    def test_ping_error(self):
        srv = self.server(default="503")
        r = self.run_bin(["--ping", "--timeout", "2", "-u", srv.url, TOKEN], None)
        self.assertTempfail(r)
        self.assertEqual(r.stdout, "error: HTTP 503 %s…\n" % TOKEN[:8])

    def test_status(self):
        r = self.run_bin(["--status", TOKEN], None)
        self.assertDone(r)
        self.assertEqual(r.stdout, '%s… last-push=never available=3/3 next-push=now result="none" '
                         'pending=none gone=no owed=no\n' % TOKEN[:8])
        srv = self.server()
        args = ["-u", srv.url, "-w", "60", "--burst", "1", TOKEN]
        self.assertDone(self.run_bin(args, message()))
        self.assertDone(self.run_bin(args, message()))
        r = self.run_bin(["--status", "--burst", "1", "-w", "60", TOKEN], None)
        self.assertRegex(r.stdout, r'^%s… last-push=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ '
                         r'available=0/1 next-push=\d{4}-\S+Z '
                         r'result="200 ok" pending=\d{4}-\S+Z gone=no owed=no\n$' % TOKEN[:8])
        self.assertEqual(len(srv.requests), 1)
        # the bucket: three pushes at once, the next a window after the first
        r = self.run_bin(["--status", "-w", "60", TOKEN], None)
        self.assertIn(" available=2/3 next-push=", r.stdout)

    def test_verbose(self):
        srv = self.server()
        r = self.run_bin(["-v", "-u", srv.url, TOKEN], message(["Auto-Submitted: auto-replied"]))
        self.assertEqual(r.returncode, 0)
        self.assertIn("skip auto-submitted", r.stderr)
        r = self.run_bin(["--verbose", "-u", srv.url, TOKEN], message())
        self.assertIn("notified", r.stderr)
        self.assertNotIn(TOKEN, r.stderr)

    def test_token_never_logged_whole(self):
        srv = self.server(default="410")
        r = self.run_bin(["-v", "-u", srv.url, TOKEN], message())
        self.assertNotIn(TOKEN[:9], r.stderr)
        self.assertIn(TOKEN[:8] + "…", r.stderr)

    def test_timeout_option(self):
        srv = self.server(default="hang")
        t0 = time.monotonic()
        r = self.run_bin(["--retry=caller", "--timeout", "1", "-u", srv.url, TOKEN], message())
        self.assertTempfail(r)
        self.assertLess(time.monotonic() - t0, 1 + 1.5 * dcptest.SLOW)


class Environment(dcptest.TestCase):
    def test_test_variables_are_not_read(self):
        # the installed program reads neither variable of the test build
        # (deltachat-push-test): a schedule it could not parse is no error,
        # and the trailing push's process writes no log file
        srv = self.server()
        log = os.path.join(self.tmp, "detached.log")
        env = {"DCP_RETRY_SCHEDULE": "not-a-schedule", "DCP_RETRY_LOG": log}
        for _ in range(2):
            self.assertDone(self.run_bin(["-w", "2", "--burst", "1", "-u", srv.url, TOKEN],
                                         message(), env=env))
        self.assertEqual(srv.wait_for(2, 30 * dcptest.SLOW), 2)
        self.assertTrue(dcptest.wait_until(lambda: not self.owed_pids(), 10 * dcptest.SLOW))
        self.assertFalse(os.path.exists(log))


if __name__ == "__main__":
    dcptest.main()
