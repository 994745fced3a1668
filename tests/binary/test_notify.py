#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The built binary notifies, skips, and copes with odd input."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import TOKEN, message  # noqa: E402


class Notify(dcptest.TestCase):
    def test_exact_request(self):
        srv = self.server()
        r = self.run_bin(["-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(r.stdout, "")
        self.assertEqual(srv.wait_for(1, 5), 1)
        req = srv.requests[0]
        self.assertExactRequest(req, srv.port)

    def test_encrypted_token_over_1k_has_no_expect(self):
        token = "openpgp:" + "QUJD" * 300 + "+/=="
        srv = self.server()
        self.assertDone(self.run_bin(["-u", srv.url, token], message()))
        self.assertEqual(srv.wait_for(1, 5), 1)
        self.assertEqual(srv.requests[0].body, token.encode())
        self.assertNotIn("expect", srv.requests[0].headers)

    def test_ipv6_loopback(self):
        try:
            srv = self.server(host="::1")
        except OSError as e:
            self.skipTest("no IPv6 loopback: %s" % e)
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], message()))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_several_tokens_one_handle(self):
        srv = self.server()
        tokens = ["tok-%d-abcdefgh" % i for i in range(3)]
        self.assertDone(self.run_bin(["-u", srv.url] + tokens, message()))
        # all at once: in no particular order
        self.assertEqual(sorted(srv.bodies()), sorted(t.encode() for t in tokens))

    def test_crlf_and_mbox_from_line(self):
        srv = self.server()
        msg = b"From alice@example.org Sun Nov 22 10:00:00 2026\r\n" + \
            message(eol="\r\n")
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], msg))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_regular_file_stdin(self):
        srv = self.server()
        path = self.write("big.eml", message(body="x" * 1000 + "\n") +
                          b"y" * (8 << 20))
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], path))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_large_pipe_is_drained(self):
        srv = self.server()
        msg = message() + b"z" * (20 << 20)
        r = self.run_bin(["-u", srv.url, TOKEN], msg)  # run() would raise on EPIPE
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])


class Skip(dcptest.TestCase):
    def skipped(self, args, msg, reason):
        srv = self.server()
        r = self.run_bin(["-u", srv.url] + args + [TOKEN], msg)
        self.assertDone(r)
        dry = self.run_bin(["-n", "-u", srv.url] + args + [TOKEN], msg)
        self.assertDone(dry)
        self.assertEqual(dry.stdout, "%s %s…\n" % (reason, TOKEN[:8]))
        # a push is recorded before it is answered, so before the run exits
        self.assertEqual(srv.bodies(), [])

    def test_auto_submitted_values(self):
        for v in ["auto-replied", "auto-generated", "auto-notified",
                  "Auto-Generated (robot)", "auto-replied; foo=bar",
                  "AUTO-REPLIED"]:
            with self.subTest(value=v):
                self.skipped([], message(["Auto-Submitted: " + v]),
                             "skip auto-submitted")

    def test_auto_submitted_no_notifies(self):
        srv = self.server()
        for v in ["no", "No", "no (human)", "no; x=y"]:
            self.assertDone(self.run_bin(
                ["-w", "0", "-u", srv.url, TOKEN],
                message(["Auto-Submitted: " + v])))
        self.assertEqual(srv.wait_for(4, 5), 4)

    def test_self(self):
        self.skipped(["--self", "Me@Example.org"],
                     message(from_addr="me@EXAMPLE.org"), "skip self")

    def test_self_other_sender_notifies(self):
        srv = self.server()
        self.assertDone(self.run_bin(
            ["--self", "me@example.org", "-u", srv.url, TOKEN],
            message(from_addr="you@example.org")))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_max_age(self):
        old = message(received=False, headers=[
            "Received: from a by b; Sun, 01 Nov 2026 10:00:00 +0000"])
        self.skipped([], old, "skip old")
        self.skipped(["--max-age", "3600"], message(received=False, headers=[
            "Received: from a by b; %s" % time.strftime(
                "%a, %d %b %Y %H:%M:%S +0000", time.gmtime(time.time() - 7200))]),
            "skip old")

    def test_max_age_ignores_date_and_fetcher(self):
        srv = self.server()
        # a randomised old Date and a getmail Received line don't make it old
        msg = message(received=False, headers=[
            "Received: from imap by host with IMAP4 getmail6 for <b@x>; "
            "01 Jan 2020 00:00:00 -0000"]).replace(
            b"Date: Sun, 22 Nov 2026", b"Date: Sun, 01 Jan 2017")
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], msg))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_max_age_zero_is_off(self):
        srv = self.server()
        old = message(received=False, headers=[
            "Received: from a by b; Sun, 01 Nov 2020 10:00:00 +0000"])
        self.assertDone(self.run_bin(["--max-age", "0", "-u", srv.url, TOKEN], old))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_chat_only(self):
        plain = message().replace(b"Chat-Version: 1.0\n", b"")
        self.skipped(["--chat-only"], plain, "skip not-chat")
        srv = self.server()
        self.assertDone(self.run_bin(["--chat-only", "-u", srv.url, TOKEN],
                                     message()))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])


class MalformedInput(dcptest.TestCase):
    def test_notifies_anyway(self):
        cases = {
            "empty": b"",
            "from line only": b"From x@y Sun Nov 22 10:00:00 2026\n",
            "no blank line": b"From: a@b\nSubject: x\nbody without separator",
            "nul bytes": b"From: a\x00@b\nSub\x00ject: x\n\nbody\x00",
            "binary": bytes(range(256)) * 64,
            "header only": b"Subject: x",
        }
        srv = self.server()
        for name, data in cases.items():
            with self.subTest(case=name):
                r = self.run_bin(["-w", "0", "-u", srv.url, TOKEN], data)
                self.assertDone(r)
        self.assertEqual(srv.wait_for(len(cases), 5), len(cases))

    def test_devnull_stdin(self):
        srv = self.server()
        self.assertDone(self.run_bin(["-u", srv.url, TOKEN], None))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_huge_header_block(self):
        srv = self.server()
        msg = b"Subject: " + b"a" * (3 << 20) + b"\nAuto-Submitted: auto-replied\n\nx"
        r = self.run_bin(["-u", srv.url, TOKEN], msg)
        self.assertDone(r)
        # past 1 MiB we decide on what was read: the Auto-Submitted is unseen
        self.assertEqual(srv.bodies(), [TOKEN.encode()])


if __name__ == "__main__":
    dcptest.main()
