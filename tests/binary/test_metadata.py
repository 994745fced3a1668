#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""--dovecot-metadata without Dovecot: the built binary reads a dictionary
file written the way Dovecot's file dict writes it, remembers every device
token it saw in the cache, pushes each one with its own rate limit, forgets
one on 410 or after 90 days unseen, and sends nothing malformed whatever
the file holds.  (tests/callers/metadata.py does the same with a real
Dovecot and a real IMAP client.)"""

import hashlib
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
from dcptest import TOKEN, message  # noqa: E402

GUID = "5a0c4d1b2e3f40516273000011223344"
A = "openpgp:wcBMA0bX/Zq+Rw==AAAA"
B = "openpgp:hQIMAxyz/AbC+dE=BBBB"
DAY = 86400


def escape(s):
    """str_tabescape() of Dovecot's src/lib/strescape.c."""
    return (s.replace("\001", "\0011").replace("\t", "\001t")
            .replace("\r", "\001r").replace("\n", "\001n"))


def pairs(*kv):
    return "".join(escape(k) + "\n" + escape(v) + "\n" for k, v in kv)


def devkey(guid=GUID):
    return "priv/%s/devicetoken" % guid


class Metadata(dcptest.TestCase):
    def setUp(self):
        super().setUp()
        self.dict = os.path.join(self.home, "dovecot-attributes")

    def put(self, *tokens, extra=()):
        text = pairs(*(list(extra) + [(devkey(), t) for t in tokens[:1]] +
                       [(devkey("%032x" % i), t)
                        for i, t in enumerate(tokens[1:])]))
        with open(self.dict, "w") as f:
            f.write(text)

    def deliver(self, srv, *extra, msg=None, env=None):
        return self.run_bin(["-u", srv.url, "--window=0",
                             "--dovecot-metadata=" + self.dict] + list(extra),
                            msg or message(), env=env)

    def device_file(self, token):
        return os.path.join(self.cache,
                            hashlib.sha256(token.encode()).hexdigest()
                            + ".device")

    def test_one_device_exact_body(self):
        srv = self.server()
        self.put(A, extra=[("priv/%s/comment" % GUID, "hello"),
                           ("shared/%s/other" % GUID, B)])
        self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies(), [A.encode()])
        # remembered: the token in a 0600 file named by its SHA-256, in a
        # 0700 directory; no file name holds the token
        st = os.stat(self.device_file(A))
        self.assertEqual(st.st_mode & 0o7777, 0o600)
        self.assertEqual(os.stat(self.cache).st_mode & 0o7777, 0o700)
        with open(self.device_file(A)) as f:
            self.assertEqual(f.read(), A + "\n" + self.dict + "\n")
        for name in os.listdir(self.cache):
            self.assertNotIn("wcBMA", name)
            self.assertEqual(os.stat(os.path.join(self.cache, name)).st_mode
                             & 0o077, 0)

    def test_every_device_pushed(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        # the second device overwrites the key: Dovecot keeps only it
        self.put(B)
        self.assertDone(self.deliver(srv))
        self.assertEqual(sorted(srv.bodies()), sorted([A.encode(), B.encode(), A.encode()]))
        # and tokens given otherwise too, each once (all at once: in no order)
        self.assertDone(self.deliver(srv, TOKEN, A))
        self.assertEqual(sorted(srv.bodies()[3:]),
                         sorted([TOKEN.encode(), A.encode(), B.encode()]))

    def test_same_ciphertext_again_no_duplicate(self):
        srv = self.server()
        for _ in range(3):
            self.put(A)
            self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies(), [A.encode()] * 3)

    def test_410_forgets_device(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        self.put(B)
        srv.set_body_status(A.encode(), "410")  # both at once, in any order
        self.assertDone(self.deliver(srv))
        srv.set_body_status(A.encode(), None)
        self.assertEqual(sorted(srv.bodies()), sorted([A.encode(), B.encode(), A.encode()]))
        self.assertFalse(os.path.exists(self.device_file(A)))
        self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies()[3:], [B.encode()])
        # a token that is gone and still the one in the file: not pushed,
        # not remembered again
        srv.set_statuses(["410"])
        self.assertDone(self.deliver(srv))
        self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies()[4:], [B.encode()])
        self.assertFalse(os.path.exists(self.device_file(B)))

    def test_rotated_token(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        self.put(B)  # the same device, a new token: the old one until 410
        self.assertDone(self.deliver(srv))
        self.assertEqual(sorted(srv.bodies()[1:]), sorted([B.encode(), A.encode()]))

    def test_forgotten_after_90_days_unseen(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        self.put(B)
        old = time.time() - 89 * DAY
        os.utime(self.device_file(A), (old, old))
        self.assertDone(self.deliver(srv))
        self.assertEqual(sorted(srv.bodies()[1:]), sorted([B.encode(), A.encode()]))
        old = time.time() - 91 * DAY
        os.utime(self.device_file(A), (old, old))
        self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies()[3:], [B.encode()])
        self.assertFalse(os.path.exists(self.device_file(A)))

    def test_seen_refreshed_every_run(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        old = time.time() - 30 * DAY
        os.utime(self.device_file(A), (old, old))
        # even a run that pushes nothing (mail from self) refreshes it
        r = self.deliver(srv, msg=message(from_addr="me@example.org"),
                         env={"USER": "me@example.org"})
        self.assertDone(r)
        self.assertEqual(len(srv.bodies()), 1)
        self.assertGreater(os.stat(self.device_file(A)).st_mtime,
                           time.time() - 60)

    def test_status_lists_devices(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        self.put(B)
        self.assertDone(self.deliver(srv))
        r = self.run_bin(["--status", "--dovecot-metadata=" + self.dict],
                         None)
        self.assertDone(r)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r)
        day = time.strftime("%Y-%m-%dT", time.gmtime())
        for line, tok in zip(lines, (B, A)):
            self.assertTrue(line.startswith(tok[:8] + "… last-push="), line)
            self.assertIn(' result="200 ok" pending=none gone=no owed=no source=%s '
                          'seen=%s' % (self.dict, day), line)
        # --status changes nothing and reads no file
        os.unlink(self.dict)
        r2 = self.run_bin(["--status", "--dovecot-metadata=" + self.dict],
                          None)
        self.assertEqual(r2.stdout, r.stdout)

    def test_accounts_sharing_a_cache_stay_apart(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        other = os.path.join(self.home, "other-attributes")
        with open(other, "w") as f:
            f.write(pairs((devkey(), B)))
        r = self.run_bin(["-u", srv.url, "--window=0",
                          "--dovecot-metadata=" + other], message())
        self.assertDone(r)
        self.assertEqual(sorted(srv.bodies()), sorted([A.encode(), B.encode()]))
        r = self.run_bin(["--status", "--dovecot-metadata=" + other], None)
        self.assertEqual(len(r.stdout.splitlines()), 1, r)
        self.assertTrue(r.stdout.startswith(B[:8]), r)

    def test_own_mail_skipped(self):
        srv = self.server()
        self.put(A)
        for var in ("USER", "RECIPIENT"):
            with self.subTest(var=var):
                r = self.deliver(srv, TOKEN,
                                 msg=message(from_addr="Me@Example.org"),
                                 env={var: "me@example.org"})
                self.assertDone(r)
        # a USER without a domain is no address: pushed
        self.assertDone(self.deliver(srv, msg=message(
            from_addr="me@example.org"), env={"USER": "me"}))
        self.assertEqual(srv.bodies(), [A.encode()])
        # without --dovecot-metadata, $USER means nothing
        r = self.run_bin(["-u", srv.url, "--window=0", TOKEN],
                         message(from_addr="me@example.org"),
                         env={"USER": "me@example.org"})
        self.assertDone(r)
        self.assertEqual(srv.bodies()[1:], [TOKEN.encode()])

    def test_missing_file(self):
        srv = self.server()
        # metadata off, or no device has uploaded yet: exit 0, other
        # tokens still pushed, nothing on stderr
        self.assertDone(self.deliver(srv, TOKEN))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        r = self.deliver(srv)
        self.assertDone(r)
        self.assertEqual(len(srv.bodies()), 1)
        r = self.deliver(srv, "-v")
        self.assertEqual(r.returncode, 0)
        self.assertIn("no device token in %s yet" % self.dict, r.stderr)

    def test_paths_from_home(self):
        srv = self.server()
        self.put(A)
        for arg in ("dovecot-attributes", "~/dovecot-attributes"):
            with self.subTest(arg=arg):
                r = self.run_bin(["-u", srv.url, "--window=0",
                                  "--dovecot-metadata=" + arg], message())
                self.assertDone(r)
        self.assertEqual(srv.bodies(), [A.encode()] * 2)

    def test_config_key(self):
        srv = self.server()
        self.put(A)
        # examples/config with its dovecot-metadata line in use
        with open(os.path.join(dcptest.EXAMPLES, "config")) as f:
            text = f.read()
        line = "#dovecot-metadata=dovecot-attributes\n"
        self.assertIn(line, text)
        conf = self.write("config", text.replace(line, line[1:]))
        r = self.run_bin(["-c", conf, "-u", srv.url, "--window=0"], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [A.encode()])

    def test_dry_run_changes_nothing(self):
        srv = self.server()
        self.put(A)
        r = self.run_bin(["-n", "--dovecot-metadata=" + self.dict], message())
        self.assertDone(r)
        self.assertEqual(r.stdout, "notify %s…\n" % A[:8])
        self.assertFalse(os.path.exists(self.device_file(A)))
        self.assertEqual(srv.bodies(), [])

    def test_rate_limit_per_device(self):
        srv = self.server()
        self.put(A)
        args = ["-u", srv.url, "--window=30", "--burst=1", "--no-trailing",
                "--dovecot-metadata=" + self.dict]
        self.assertDone(self.run_bin(args, message()))
        self.put(B)
        # A is inside its window, B is new: only B
        self.assertDone(self.run_bin(args, message()))
        self.assertEqual(sorted(srv.bodies()), sorted([A.encode(), B.encode()]))

    def test_ping_devices(self):
        srv = self.server()
        self.put(A)
        r = self.run_bin(["-u", srv.url, "--ping",
                          "--dovecot-metadata=" + self.dict], None)
        self.assertDone(r)
        self.assertEqual(r.stdout, "200 ok %s…\n" % A[:8])

    # ------------------------------------------ the login hook's file

    def put_devices(self, *lines):
        """FILE.devices as examples/deltachat-push.lua writes it."""
        with open(self.dict + ".devices", "w") as f:
            f.write("".join("%d %s\n" % (int(t), tok) for t, tok in lines))

    def test_hook_file_tokens_pushed(self):
        # the dict holds only the last device; the hook saw both
        srv = self.server()
        self.put(B)
        seen = time.time() - 3 * DAY
        self.put_devices((seen + 60, B), (seen, A))
        self.assertDone(self.deliver(srv))
        self.assertEqual(sorted(srv.bodies()), sorted([B.encode(), A.encode()]))
        # A is remembered as seen when the hook saw it, B as seen now
        self.assertAlmostEqual(os.stat(self.device_file(A)).st_mtime, seen,
                               delta=1)
        self.assertGreater(os.stat(self.device_file(B)).st_mtime,
                           time.time() - 60)
        with open(self.device_file(A)) as f:
            self.assertEqual(f.read(), A + "\n" + self.dict + "\n")

    def test_hook_file_without_dict(self):
        # no dict file yet (or METADATA off), the hook's file alone
        srv = self.server()
        self.put_devices((time.time(), A))
        self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies(), [A.encode()])

    def test_hook_file_never_moves_seen_back(self):
        srv = self.server()
        self.put(A)
        self.assertDone(self.deliver(srv))
        self.put(B)
        self.put_devices((time.time() - 10 * DAY, A))
        self.assertDone(self.deliver(srv))
        self.assertGreater(os.stat(self.device_file(A)).st_mtime,
                           time.time() - 60)

    def test_hook_file_90_days(self):
        srv = self.server()
        self.put(B)
        self.put_devices((time.time() - 89 * DAY, A))
        self.assertDone(self.deliver(srv))
        self.assertEqual(sorted(srv.bodies()), sorted([B.encode(), A.encode()]))
        # older than 90 days in the hook's file and in the cache: gone
        self.put_devices((time.time() - 91 * DAY, A))
        old = time.time() - 91 * DAY
        os.utime(self.device_file(A), (old, old))
        self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies()[2:], [B.encode()])
        self.assertFalse(os.path.exists(self.device_file(A)))

    def test_hook_file_410(self):
        # a device answered 410 stays in the hook's file (the hook keeps
        # what it saw) but is never pushed again
        srv = self.server()
        self.put(B)
        self.put_devices((time.time(), B), (time.time(), A))
        srv.set_body_status(A.encode(), "410")
        self.assertDone(self.deliver(srv))
        srv.set_body_status(A.encode(), None)
        self.assertEqual(sorted(srv.bodies()), sorted([B.encode(), A.encode()]))
        self.assertFalse(os.path.exists(self.device_file(A)))
        for _ in range(2):
            self.assertDone(self.deliver(srv))
        self.assertEqual(srv.bodies()[2:], [B.encode(), B.encode()])
        self.assertFalse(os.path.exists(self.device_file(A)))

    def test_hook_file_hostile(self):
        srv = self.server()
        lines = ("%d %s\n" % (time.time(), A) + "junk\n"
                 + "%d openpgp:a\"b\n" % time.time()
                 + "".join("%d openpgp:tok%05d\n" % (time.time(), i)
                           for i in range(5000)))
        with open(self.dict + ".devices", "w") as f:
            f.write(lines)
        r = self.hostile(b"", srv, [A.encode()] + [
            b"openpgp:tok%05d" % i for i in range(31)])
        self.assertIn("devices: line 2", r.stderr)
        self.assertIn("more than 32 device tokens", r.stderr)

    # ---------------------------------------------------------- hostile

    def hostile(self, content, srv, expect):
        with open(self.dict, "wb") as f:
            f.write(content)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.monotonic()
        r = self.deliver(srv, TOKEN, "-v")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r)
        self.assertLess(took, 5 * dcptest.SLOW, "took %.2f s" % took)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if not dcptest.WRAPPER:
            self.assertLess(max(rss, before), 64 * 1024, "peak RSS KB")
        bodies = srv.bodies()
        del srv.requests[:]
        # the POSTs go out at once: in no particular order
        self.assertEqual(sorted(bodies), sorted([TOKEN.encode()] + expect), r)
        for b in bodies:
            self.assertRegex(b, rb"^[\x21-\x7e]+$")
            self.assertNotIn(b'"', b)
        return r

    def test_hostile_huge(self):
        srv = self.server()
        big = pairs((devkey(), A)).encode() + b"x" * (2 << 20)
        r = self.hostile(big, srv, [])
        self.assertIn("not a regular file of at most 1 MiB", r.stderr)
        # a huge value line in a file under the limit
        r = self.hostile(pairs((devkey(), "openpgp:" + "Q" * 900000)).encode(),
                         srv, [])
        self.assertIn("not a push token", r.stderr)

    def test_hostile_binary(self):
        srv = self.server()
        junk = bytes(range(256)) * 512
        # a real pair, then bytes Dovecot would never write
        content = pairs((devkey(), A)).encode() + junk
        self.hostile(content, srv, [A.encode()])
        # garbage first: whatever pairs it makes, nothing malformed goes out
        self.hostile(junk + pairs((devkey(), B)).encode(), srv, [A.encode()])
        self.hostile(os.urandom(200000), srv, [A.encode()])  # remembered A

    def test_hostile_values(self):
        srv = self.server()
        bad = ["openpgp:abc\ndef", 'openpgp:abc"def', "openpgp:a\\b",
               "openpgp:a\tb", "openpgp:a\rb", "openpgp:a\001b", "", " ",
               "openpgp:\u00e9"]
        for v in bad:
            with self.subTest(value=v):
                r = self.hostile(pairs((devkey(), v)).encode("utf-8"), srv,
                                 [])
                self.assertIn("(%s): not a push token" % devkey(), r.stderr)
                self.assertFalse([n for n in os.listdir(self.cache) if n.endswith(".device")])
        # raw bytes Dovecot would never write: a NUL, a bare CR
        r = self.hostile(("%s\nopenpgp:ab\0cd\n" % devkey()).encode(), srv, [])
        self.assertIn("NUL byte", r.stderr)
        self.assertFalse(any(n.endswith(".device")
                             for n in os.listdir(self.cache)))

    def test_hostile_10000_keys(self):
        srv = self.server()
        text = "".join("priv/%032x/devicetoken\nopenpgp:tok%05d\n" % (i, i)
                       for i in range(10000))
        text += "".join("k%d\nv\n" % i for i in range(10000))
        self.assertLess(len(text), 1 << 20)
        r = self.hostile(text.encode(), srv,
                         [b"openpgp:tok%05d" % i for i in range(32)])
        self.assertIn("more than 32 device tokens", r.stderr)
        # the next file's 32 add to them; the cache keeps at most 64
        text = "".join("priv/%032x/devicetoken\nopenpgp:new%05d\n" % (i, i)
                       for i in range(10000))
        for _ in range(2):
            with open(self.dict, "w") as f:
                f.write(text)
            r = self.deliver(srv, "--timeout=30")
            self.assertDone(r)
        n = sum(n.endswith(".device") for n in os.listdir(self.cache))
        self.assertEqual(n, 64)
        self.assertEqual(len(srv.bodies()), 64 * 2)


if __name__ == "__main__":
    dcptest.main()
