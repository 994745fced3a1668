#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The built binary over HTTPS, the path every real push takes.

Certificates come from a test CA made at test time (tests/tlstest.py);
the program trusts it through --cacert, never through the machine's
store.  Scripted answers come from tests/httpd.py wrapped in TLS, protocol
versions and connection reuse from a private nginx, handshake faults from
servers that stall, reset, trickle or send garbage.  Every failure must
be exit 75 with one stderr line, within the --timeout budget, and send
nothing; every success must send the token exactly once."""

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcptest  # noqa: E402
import tlstest  # noqa: E402
from dcptest import SLOW, TOKEN, WRAPPER, message  # noqa: E402
from httpd import Server  # noqa: E402

PKI_DIR = tempfile.mkdtemp(prefix="dcp-pki-")
atexit.register(shutil.rmtree, PKI_DIR, True)
PKI = None


def pki():
    global PKI
    if PKI is None:
        PKI = tlstest.Pki(PKI_DIR)
    return PKI


class TlsCase(dcptest.TestCase):
    # openssl makes the test CA; nginx is the real server.  Where one is
    # not installed (a build with only the -dev packages) its tests are
    # skipped, naming it; CI installs both and fails on any skip.
    NEEDS = ("openssl",)

    def setUp(self):
        for tool in self.NEEDS:
            if not (shutil.which(tool) or os.path.exists("/usr/sbin/" + tool)):
                self.skipTest("%s not installed" % tool)
        super().setUp()

    def tls_server(self, cert=None, statuses=(), default="200", version=None,
                   url_host=None):
        ctx = tlstest.context(cert or pki().good, pki().key, version)
        s = Server(statuses=statuses, default=default, tls=ctx, url_host=url_host).start()
        self.servers.append(s)
        return s

    def raw_server(self, mode, backend=None, delay=0.0):
        s = tlstest.RawServer(mode, backend, delay)
        self.servers.append(s)
        return s

    def push(self, url, *args, timeout="8", cacert=True, retry="caller"):
        """With --retry=caller (the exit-75 contract) unless told otherwise."""
        extra = ["--cacert", pki().ca] if cacert else []
        return self.run_bin(extra + ["--retry=" + retry, "--timeout", timeout, "-w", "0",
                                     "-u", url] + list(args) + [TOKEN], message())

    def assertCertRefused(self, r, srv, meaning):
        """75, one line naming the certificate problem, nothing sent, one
        try (a certificate does not get better within seconds)."""
        self.assertTempfail(r)
        line = r.stderr.lower()
        self.assertIn("certificate", line, r)
        self.assertRegex(line, meaning, r)
        self.assertLess(r.elapsed, 3 * SLOW, r)
        time.sleep(0.2)  # the server has handled all the binary sent by now
        self.assertEqual(srv.requests, [])
        self.assertEqual(srv.connections, 1, srv.handshake_failures)


class Https(TlsCase):
    def test_exact_request(self):
        srv = self.tls_server()
        r = self.push(srv.url)
        self.assertDone(r)
        self.assertEqual(srv.wait_for(1, 5), 1)
        req = srv.requests[0]
        self.assertIn(req.tls, ("TLSv1.2", "TLSv1.3"))
        self.assertExactRequest(req, srv.port)

    def test_host_name_and_sni(self):
        srv = self.tls_server(url_host="localhost")
        self.assertDone(self.push(srv.url))
        self.assertEqual(srv.wait_for(1, 5), 1)
        self.assertEqual(srv.requests[0].sni, "localhost")
        self.assertEqual(srv.requests[0].headers["host"], "localhost:%d" % srv.port)

    def test_410_gone(self):
        srv = self.tls_server(default="410")
        self.assertDone(self.push(srv.url))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])
        self.assertRegex(self.run_bin(["--status", TOKEN]).stdout, r"gone=\d{4}-")

    def test_500_then_200(self):
        srv = self.tls_server(statuses=["500"])
        r = self.push(srv.url)
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)

    def test_500_for_good_is_75(self):
        srv = self.tls_server(default="500")
        r = self.push(srv.url, timeout="2")
        self.assertTempfail(r)
        self.assertIn("HTTP 500", r.stderr)

    def test_trailing_push_trusts_cacert_too(self):
        srv = self.tls_server()
        args = ["--cacert", pki().ca, "-w", "2", "--burst", "1", "-u", srv.url, TOKEN]
        self.assertDone(self.run_bin(args, message()))
        self.assertDone(self.run_bin(args, message()))
        self.assertEqual(srv.wait_for(2, 6 * SLOW), 2)
        self.assertEqual(srv.bodies(), [TOKEN.encode()] * 2)
        self.assertGreater(srv.requests[1].time - srv.requests[0].time, 1.5)

    def test_cacert_from_config(self):
        srv = self.tls_server()
        conf = self.write("push.conf", "[deltachat-push]\ncacert=%s\n" % pki().ca)
        r = self.run_bin(["-c", conf, "-w", "0", "-u", srv.url, TOKEN], message())
        self.assertDone(r)
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_sample_config_cacert_line(self):
        srv = self.tls_server()
        with open(os.path.join(dcptest.EXAMPLES, "config")) as f:
            line = [ln for ln in f if ln.startswith("#cacert=")][0]
        path = line[len("#cacert="):].strip()
        conf = self.write("sample.conf", "[deltachat-push]\n" + line[1:].replace(path, pki().ca))
        self.assertDone(self.run_bin(["-c", conf, "-w", "0", "-u", srv.url, TOKEN], message()))
        self.assertEqual(srv.bodies(), [TOKEN.encode()])

    def test_cacert_missing_or_unreadable(self):
        srv = self.tls_server()
        bad = [os.path.join(self.tmp, "none.pem"), self.tmp]
        if os.geteuid() != 0:
            bad.append(self.write("secret.pem", "x", mode=0))
        for path in bad:
            with self.subTest(path=path):
                r = self.run_bin(["--cacert", path, "-u", srv.url, TOKEN], message())
                self.assertTempfail(r)
                self.assertIn("--cacert " + path, r.stderr)
                conf = self.write("bad.conf", "[deltachat-push]\ncacert=%s\n" % path)
                r = self.run_bin(["-c", conf, "-u", srv.url, TOKEN], message())
                self.assertTempfail(r)
        time.sleep(0.2)  # the server has handled all the binary sent by now
        self.assertEqual(srv.requests, [])
        self.assertEqual(srv.handshake_failures, [])

    def test_cacert_of_another_ca(self):
        srv = self.tls_server()
        r = self.run_bin(["--retry=caller", "--cacert", pki().other_ca, "-u", srv.url, TOKEN],
                         message())
        self.assertCertRefused(r, srv, r"issuer|unknown|verify")

    def test_unknown_ca_in_background_mode_is_owed(self):
        # the default: the caller sees 0 and nothing on stderr, the push
        # is owed (a certificate may be fixed within the retry schedule)
        srv = self.tls_server(cert=pki().unknown)
        r = self.push(srv.url, retry="background")
        self.assertDone(r)
        self.assertEqual(r.stderr, "")
        status = self.run_bin(["--status", TOKEN], None)
        self.assertDone(status)
        self.assertRegex(status.stdout, r"owed=\d{4}-\d\d-\d\dT[^ ]* next-try=\d{4}-.* tries=1")
        time.sleep(0.2)  # the server has handled all the binary sent by now
        self.assertEqual(srv.requests, [])

    def test_unknown_ca_default_trust(self):
        # no --cacert: the system store, which does not hold the test CA
        srv = self.tls_server()
        self.assertCertRefused(self.push(srv.url, cacert=False), srv, r"issuer|unknown|verify")

    def test_unknown_ca(self):
        srv = self.tls_server(cert=pki().unknown)
        self.assertCertRefused(self.push(srv.url), srv, r"issuer|unknown|verify")

    def test_wrong_host_name(self):
        srv = self.tls_server(cert=pki().otherhost)
        self.assertCertRefused(self.push(srv.url), srv, r"name")

    def test_expired(self):
        srv = self.tls_server(cert=pki().expired)
        self.assertCertRefused(self.push(srv.url), srv, r"expired")

    def test_version_names_the_ca_lookup(self):
        r = self.run_bin(["--version"], None)
        self.assertDone(r)
        first, tls = r.stdout.splitlines()
        self.assertEqual(first, "deltachat-push 1.0.0")
        if re.search(r" (OpenSSL|LibreSSL)/", tls):
            self.assertIn("hashed directory /etc/ssl/certs", tls)
        else:
            self.assertIn("bundle", tls)


class HandshakeFaults(TlsCase):
    """Budget 2 s: every fault ends in 75 within it (plus start-up slack)."""

    def faulty(self, srv, budget=2):
        r = self.push(srv.url, timeout=str(budget))
        self.assertTempfail(r)
        self.assertLess(r.elapsed, budget + 1.5 * SLOW, r)
        return r

    def test_never_finishes(self):
        srv = self.raw_server("silent")
        r = self.faulty(srv)
        self.assertRegex(r.stderr.lower(), r"time|out")
        self.assertGreaterEqual(len(srv.received), 1)

    def test_reset_during_handshake(self):
        srv = self.raw_server("reset")
        self.faulty(srv)
        self.assertGreaterEqual(len(srv.received), 1)

    def test_garbage_instead_of_server_hello(self):
        srv = self.raw_server("garbage")
        self.faulty(srv)
        self.assertGreaterEqual(len(srv.received), 1)

    def test_trickle_past_the_budget(self):
        backend = self.tls_server()
        srv = self.raw_server("trickle", backend, delay=0.05)
        self.faulty(srv)
        time.sleep(0.3)  # anything relayed to the backend is in by now
        self.assertEqual(backend.requests, [])

    def test_trickle_within_the_budget_sends_once(self):
        backend = self.tls_server()
        srv = self.raw_server("trickle", backend, delay=0.002)
        r = self.push(srv.url, timeout="30")
        self.assertDone(r)
        time.sleep(0.3)  # a second request would be relayed by now
        self.assertEqual(backend.bodies(), [TOKEN.encode()])
        self.assertEqual(len(srv.received), 1)
        self.assertGreater(r.elapsed, 0.3)  # it did trickle

    def peak_rss(self, url, budget):
        out = os.path.join(self.tmp, "rss")
        cmd = ["/usr/bin/time", "-f", "%M", "-o", out] + self.cmd(
            ["--retry=caller", "--cacert", pki().ca, "--timeout", budget, "-w", "0", "-u", url, TOKEN],
            wrap=False)
        t0 = time.monotonic()
        p = subprocess.run(cmd, input=message(), capture_output=True, env=self.env,
                           timeout=30 * SLOW)
        with open(out) as f:
            return p, time.monotonic() - t0, int(f.read().split()[-1])

    def test_huge_certificate_chain(self):
        if WRAPPER:
            self.skipTest("peak RSS means nothing under a wrapper")
        if not os.path.exists("/usr/bin/time"):
            self.fail("GNU time (/usr/bin/time) is needed")
        good = self.tls_server()
        p, _, small = self.peak_rss(good.url, "8")
        self.assertEqual(p.returncode, 0, p)
        huge = self.tls_server(cert=pki().huge_chain(2500))  # about 1 MB
        p, elapsed, rss = self.peak_rss(huge.url, "2")
        self.assertEqual(p.returncode, 75, p)
        self.assertEqual(len(p.stderr.splitlines()), 1, p)
        self.assertLess(elapsed, 2 + 1.5 * SLOW)
        self.assertLess(rss, small + 4096, "peak RSS %d KiB, a good push %d KiB" % (rss, small))
        self.assertEqual(huge.requests, [])


class Nginx(TlsCase):
    """A real TLS server: protocol versions, one connection for several
    tokens."""
    NEEDS = ("openssl", "nginx")

    def nginx(self, protocols="TLSv1.2 TLSv1.3"):
        d = os.path.join(self.tmp, "nginx-" + protocols.replace(" ", "-"))
        n = tlstest.Nginx(d, pki().good, pki().key, protocols)
        self.servers.append(n)
        return n

    def test_200(self):
        n = self.nginx()
        r = self.push(n.url)
        self.assertDone(r)
        self.assertLess(r.elapsed, 3 * SLOW)
        self.assertEqual(n.wait_count(1), 1)
        ln = n.lines()[0]
        self.assertEqual(ln[:3], ["POST", "/notify", "200"])
        self.assertEqual(ln[5:7], [str(len(TOKEN)), '"deltachat-push/1.0.0"'])

    def test_410(self):
        n = self.nginx()
        self.assertDone(self.push(n.base + "/gone"))
        self.assertEqual(n.wait_count(1), 1)
        self.assertEqual(n.lines()[0][:3], ["POST", "/gone", "410"])

    def test_tls12_only(self):
        n = self.nginx("TLSv1.2")
        self.assertDone(self.push(n.url))
        self.assertEqual(n.wait_count(1), 1)
        self.assertEqual(n.lines()[0][3], "TLSv1.2")

    def test_tls13_only(self):
        n = self.nginx("TLSv1.3")
        self.assertDone(self.push(n.url))
        self.assertEqual(n.wait_count(1), 1)
        self.assertEqual(n.lines()[0][3], "TLSv1.3")

    def test_several_tokens_at_once(self):
        n = self.nginx()
        tokens = ["tok-%d-abcdefgh" % i for i in range(3)]
        r = self.run_bin(["--cacert", pki().ca, "-w", "0", "-u", n.url] + tokens, message())
        self.assertDone(r)
        self.assertEqual(n.wait_count(3), 3)
        # a run's POSTs go out at once: over HTTP/1.1 on up to three
        # connections (one answered first may carry the next)
        self.assertEqual(len(n.lines()), 3)
        self.assertLessEqual(sum(ln[-1] == "1" for ln in n.lines()), 3)
        self.assertGreaterEqual(sum(ln[-1] == "1" for ln in n.lines()), 1)


if __name__ == "__main__":
    dcptest.main()
