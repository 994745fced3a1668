# SPDX-License-Identifier: LGPL-2.1-or-later
"""TLS for the tests: a private test CA, servers that misbehave during the
handshake, and a private nginx.

Why: every push a user sends goes over HTTPS, so the tests need real
certificates and real TLS servers, made at test time and never touching
the machine's trust store.

  Pki(DIR)       openssl makes, under DIR, a test CA and server
                 certificates (ECDSA P-256): "good" (localhost, 127.0.0.1,
                 ::1), "otherhost" (other.example.org only), "expired"
                 (2020), "unknown" (signed by another CA); huge_chain(N).
  context(...)   an ssl.SSLContext for httpd.Server(tls=...)
  RawServer      accepts TCP and then, per mode: "silent" (never answers
                 the ClientHello), "reset" (RST after the ClientHello),
                 "garbage" (bytes that are no TLS), "trickle" (relays a
                 real TLS server, its bytes one at a time)
  Nginx          a private nginx on 127.0.0.1 (own config, pid, logs,
                 temp dirs under a directory of ours), stopped by stop()
"""

import os
import random
import select
import shutil
import socket
import ssl
import subprocess
import time

import dcpkit
from dcpkit import free_port
from httpd import Server

CA_CONF = """\
[ca]
default_ca = test
[test]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
"""

LEAF_EXT = ("basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=%s\n")

GOOD_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


def openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr))
    return p.stdout


class Pki:
    """The test CA and its server certificates, made in dir."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.ca = self.make_ca("ca", "deltachat-push test CA")
        other = self.make_ca("other-ca", "some other CA")
        self.key = self.path("leaf.key")
        openssl(["req", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key,
                 "-out", "leaf.csr", "-subj", "/CN=localhost"], dir)
        self.good = self.sign("good", "ca", GOOD_NAMES, ["-days", "2"])
        self.otherhost = self.sign("otherhost", "ca", "DNS:other.example.org",
                                   ["-days", "2"])
        self.expired = self.sign("expired", "ca", GOOD_NAMES,
                                 ["-startdate", "20200101000000Z",
                                  "-enddate", "20200201000000Z"])
        self.unknown = self.sign("unknown", "other-ca", GOOD_NAMES, ["-days", "2"])
        self.other_ca = other

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def make_ca(self, name, cn):
        pem = self.path(name + ".pem")
        openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-keyout", name + ".key",
                 "-out", pem, "-days", "2", "-subj", "/CN=" + cn,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)
        d = self.path(name + ".db")
        os.makedirs(d)
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(CA_CONF)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("%02x\n" % random.randrange(16, 255))
        return pem

    def sign(self, name, ca, names, dates):
        """A server certificate for the leaf key; returns its PEM path."""
        d = self.path(ca + ".db")
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(LEAF_EXT % names)
        out = self.path(name + ".pem")
        openssl(["ca", "-batch", "-config", "ca.cnf", "-cert", self.path(ca + ".pem"),
                 "-keyfile", self.path(ca + ".key"), "-in", self.path("leaf.csr"),
                 "-out", out, "-extfile", name + ".ext", "-notext"] + dates, d)
        return out

    def huge_chain(self, n):
        """The good certificate followed by n copies of the CA's: a chain
        of about n * 500 bytes on the wire."""
        out = self.path("huge-%d.pem" % n)
        with open(self.good) as f:
            leaf = f.read()
        with open(self.ca) as f:
            ca = f.read()
        with open(out, "w") as f:
            f.write(leaf + ca * n)
        return out


def context(cert, key, version=None):
    """A server context; version pins one ("TLSv1.2" or "TLSv1.3")."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if version:
        v = getattr(ssl.TLSVersion, version.replace("v", "V").replace(".", "_"))
        ctx.minimum_version = ctx.maximum_version = v
    return ctx


class RawServer(Server):
    """A TCP server on 127.0.0.1 (httpd.Server's accept loop) that
    misbehaves at the TLS level.  It records, per connection, how many
    bytes the client sent."""

    def __init__(self, mode, backend=None, delay=0.0):
        super().__init__()
        self.mode, self.backend, self.delay = mode, backend, delay
        self.received = []  # bytes from the client, per connection
        self.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d/notify" % self.port

    def recv(self, conn, i):
        data = conn.recv(65536)  # socket.timeout passes through
        self.received[i] += len(data)
        return data

    def handle(self, conn):
        with self.lock:
            self.received.append(0)
            i = len(self.received) - 1
        conn.settimeout(0.2)
        deadline = time.monotonic() + 60
        try:
            if self.mode == "trickle":
                return self.relay(conn, i, deadline)
            first = b""
            while not first and time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    first = self.recv(conn, i)
                except socket.timeout:
                    continue
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                b"\x01\x00\x00\x00\x00\x00\x00\x00")
            elif self.mode == "garbage":
                conn.sendall(random.Random(1).randbytes(4096))
            while self.mode != "reset" and time.monotonic() < deadline \
                    and not self.stopping.is_set():
                try:
                    if not self.recv(conn, i):
                        break
                except socket.timeout:
                    pass
        except OSError:
            pass
        finally:
            conn.close()

    def relay(self, conn, i, deadline):
        """Client bytes go to the backend at once; the backend's come back
        one byte every self.delay seconds."""
        up = socket.create_connection(("127.0.0.1", self.backend.port), 5)
        pending = b""
        try:
            while time.monotonic() < deadline and not self.stopping.is_set():
                ready, _, _ = select.select([conn, up], [], [], 0 if pending else 0.05)
                if conn in ready:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self.received[i] += len(data)
                    up.sendall(data)
                if up in ready:
                    data = up.recv(65536)
                    if not data and not pending:
                        return
                    pending += data
                if pending:
                    conn.sendall(pending[:1])
                    pending = pending[1:]
                    time.sleep(self.delay)
        except OSError:
            pass
        finally:
            up.close()


NGINX_CONF = """\
# written by tests/tlstest.py: a private nginx under %(dir)s
daemon off;
master_process on;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 64; }
http {
  log_format dcp '$request_method $uri $status $ssl_protocol $server_name '
                 '$content_length "$http_user_agent" $connection_requests';
  access_log %(dir)s/access.log dcp;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
  server {
    listen 127.0.0.1:%(port)d ssl;
    server_name localhost;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    ssl_protocols %(protocols)s;
    location = /notify { return 200; }
    location = /gone { return 410; }
    location = /trailing { return 200; }
  }
}
"""


class Nginx:
    """A private nginx serving HTTPS on 127.0.0.1: /notify and /trailing
    answer 200, /gone 410; the access log has one line per request:
    METHOD PATH STATUS TLS-VERSION SERVER-NAME LENGTH "UA" NTH-ON-CONNECTION."""

    def __init__(self, dir, cert, key, protocols="TLSv1.2 TLSv1.3"):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.log = os.path.join(dir, "access.log")
        self.proc = None
        for _ in range(3):  # a free port can be taken before nginx binds it
            self.port = free_port()
            conf = os.path.join(dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF % {"dir": dir, "port": self.port, "cert": cert,
                                      "key": key, "protocols": protocols})
            open(self.log, "a").close()
            self.proc = subprocess.Popen(
                [shutil.which("nginx") or "/usr/sbin/nginx", "-p", dir, "-c", conf,
                 "-e", os.path.join(dir, "error.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            if self.wait_listening(10):
                break
            self.stop()
        else:
            with open(os.path.join(dir, "error.log"), errors="replace") as f:
                raise RuntimeError("nginx did not start: " + f.read()[-2000:])
        self.base = "https://127.0.0.1:%d" % self.port
        self.url = self.base + "/notify"

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def lines(self):
        with open(self.log, errors="replace") as f:
            return [ln.split() for ln in f if ln.strip()]

    def count(self, path=None):
        return sum(1 for ln in self.lines() if path is None or ln[1] == path)

    def wait_count(self, n, timeout=5.0):
        """Wait until n requests are logged; how many there are then."""
        dcpkit.wait_until(lambda: self.count() >= n, timeout, step=0.01)
        return self.count()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # fast shutdown of the master and its worker
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
