#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A notification endpoint for tests and the README demo.

It speaks just enough HTTP/1.1 to stand in for the notification proxy on
127.0.0.1 or ::1, and keeps the exact bytes of every request, so tests can
assert what deltachat-push really sent.  Answers are scripted: a list of
statuses consumed one per request, then a default.  Special "statuses"
simulate faults:

  hang      accept, read the request, never answer (until stopped)
  reset     read the request, then reset the connection (RST)
  partial   send half a status line, then reset
  trickle   answer 200 one byte per 0.2 s, forever (until stopped)
  huge      answer 200 with an endless body
  redirect  answer 302 to another path
  NNN       answer status NNN with a short body
  NNN:S     the same with a "Retry-After: S" header
  NNN@S     the same, S seconds (a decimal) after the request came

Server(tls=SSL_CONTEXT) speaks HTTPS instead (tests/tlstest.py makes the
context): each request then records the TLS version and the SNI name the
client sent, and failed handshakes are counted.

Used as a module (Server) or as a program:
  httpd.py [--host H] [--port P] [--port-file F] [--log F] [--status S[,S...]]
           [--default S] [--status-file F] [--once]
--log writes one JSON object per request (time, method, path, headers,
body, raw bytes base64).  --status-file is re-read on every request and,
when it holds a status, overrides the default.  --once prints the first
request to stdout exactly as received and exits.
"""

import argparse
import base64
import json
import os
import socket
import sys
import threading
import time

REASONS = {200: "OK", 302: "Found", 404: "Not Found", 410: "Gone",
           429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


class Request:
    def __init__(self, raw, t):
        self.raw = raw
        self.time = t
        self.tls = None  # "TLSv1.3"... over HTTPS
        self.answer = None  # the scripted answer it got
        self.sni = None
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        self.method = parts[0]
        self.path = parts[1] if len(parts) > 1 else ""
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def to_json(self):
        return {"time": self.time, "method": self.method, "path": self.path,
                "headers": self.headers,
                "body": self.body.decode("latin-1"),
                "raw": base64.b64encode(self.raw).decode("ascii")}


def read_request(conn, limit=1 << 20):
    """Read one request (headers + Content-Length body); None on EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > limit:
            return None
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


class Server:
    def __init__(self, host="127.0.0.1", port=0, statuses=(), default="200",
                 status_file=None, log=None, tls=None, url_host=None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.statuses = [str(s) for s in statuses]
        self.default = str(default)
        self.by_body = {}  # body -> status, before the list and the default
        self.status_file = status_file
        self.log = log
        self.requests = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.thread = None
        self.tls = tls
        self.url_host = url_host
        self.handshake_failures = []  # the server side's words, in order
        self.connections = 0
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: setattr(sock, "dcp_sni", name)

    @property
    def url(self):
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d/notify" % ("https" if self.tls else "http",
                                      self.url_host or h, self.port)

    def set_statuses(self, statuses, default=None):
        with self.lock:
            self.statuses = [str(s) for s in statuses]
            if default is not None:
                self.default = str(default)

    def start(self):
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        if self.thread:
            self.thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_for(self, n, timeout):
        """Wait until n requests arrived or timeout passed; return the count."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.requests)

    def bodies(self):
        with self.lock:
            return [r.body for r in self.requests]

    def set_body_status(self, body, status):
        """Answer every request with this body (bytes) with status (None:
        as the others again): the tokens of one run arrive in any order."""
        with self.lock:
            if status is None:
                self.by_body.pop(body, None)
            else:
                self.by_body[body] = str(status)

    def next_status(self, body=None):
        with self.lock:
            if body in self.by_body:
                return self.by_body[body]
            if self.statuses:
                return self.statuses.pop(0)
            status = self.default
        if self.status_file:
            try:
                with open(self.status_file) as f:
                    s = f.read().strip()
                if s:
                    status = s
            except OSError:
                pass
        return status

    def serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.handle, args=(conn,),
                             daemon=True).start()

    def record(self, raw, conn):
        req = Request(raw, time.time())
        if self.tls is not None:
            req.tls, req.sni = conn.version(), getattr(conn, "dcp_sni", None)
        with self.cond:
            self.requests.append(req)
            self.cond.notify_all()
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(req.to_json()) + "\n")
        return req

    def handle(self, conn):
        conn.settimeout(30)
        try:
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError as e:  # ssl.SSLError is one
                    with self.lock:
                        self.handshake_failures.append(str(e))
                    raise
            while not self.stopping.is_set():
                raw = read_request(conn)
                if raw is None:
                    return
                req = self.record(raw, conn)
                req.answer = self.next_status(req.body)
                if not self.answer(conn, req.answer):
                    return
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def answer(self, conn, status):
        """Send the scripted answer; False when the connection is done."""
        if status == "hang":
            self.stopping.wait(60)
            return False
        if status in ("reset", "partial"):
            if status == "partial":
                conn.sendall(b"HTTP/1.1 2")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False
        if status == "trickle":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
            conn.sendall(head)
            deadline = time.monotonic() + 60
            while not self.stopping.is_set() and time.monotonic() < deadline:
                conn.sendall(b"x")
                self.stopping.wait(0.2)
            return False
        if status == "huge":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            chunk = b"x" * 65536
            deadline = time.monotonic() + 60
            while not self.stopping.is_set() and time.monotonic() < deadline:
                conn.sendall(chunk)
            return False
        if "@" in status:
            status, delay = status.split("@", 1)
            if self.stopping.wait(float(delay)):
                return False
        if status == "redirect":
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n"
                         b"Content-Length: 0\r\n\r\n")
            return True
        status, _, retry_after = status.partition(":")
        code = int(status)
        body = b"%d %s\n" % (code, REASONS.get(code, "Status").encode())
        extra = b"Retry-After: %s\r\n" % retry_after.encode() if retry_after else b""
        conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n%s"
                     b"Content-Length: %d\r\n\r\n%s"
                     % (code, REASONS.get(code, "Status").encode(), extra,
                        len(body), body))
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--log")
    ap.add_argument("--status", default="")
    ap.add_argument("--default", default="200")
    ap.add_argument("--status-file")
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=3600,
                    help="stop by itself after this long")
    a = ap.parse_args()
    statuses = [s for s in a.status.split(",") if s]
    srv = Server(a.host, a.port, statuses, a.default, a.status_file, a.log)
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.port)
        os.rename(tmp, a.port_file)
    srv.start()
    try:
        if a.once:
            if srv.wait_for(1, a.max_seconds):
                time.sleep(0.1)  # let the answer go out before we stop
                sys.stdout.buffer.write(srv.requests[0].raw)
                sys.stdout.buffer.write(b"\n")
                sys.stdout.flush()
        else:
            srv.stopping.wait(a.max_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
