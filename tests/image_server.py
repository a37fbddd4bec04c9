#!/usr/bin/env python3
"""The image tests' web server (and proxy), on 127.0.0.1 only.

    image_server.py DIR           serves DIR; prints its port on stdout

- GET with Range (`bytes=N-`, `bytes=N-M`), strong ETag and Last-Modified,
  If-Range; 404 for what is not there.
- CONNECT HOST:PORT tunnels to 127.0.0.1:PORT whatever HOST is (so a URL
  whose host does not resolve works only through this proxy); a GET of an
  absolute URL is served as a forward proxy would.
- /_control?rate=BYTES_PER_S&no_range=0|1&ignore_if_range=0|1 changes how
  files are sent (rate 0: as fast as sendfile goes; no_range: Range is
  ignored, the whole file comes with 200, as from a server without Range
  support; ignore_if_range: a range is served even of a changed file, as
  from a server that does not check If-Range).
- /_stats: every request so far as JSON ({"requests": [...]}).
- IMAGE_SERVER_TLS=CERT:KEY in the environment: HTTPS instead of HTTP.
"""
import json
import os
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(sys.argv[1])
STATE = {"rate": 0, "no_range": False, "ignore_if_range": False}
REQUESTS = []
LOCK = threading.Lock()


def record(**kw):
    with LOCK:
        REQUESTS.append(kw)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        record(method="CONNECT", path=self.path, host=host)
        try:
            upstream = socket.create_connection(("127.0.0.1", int(port)))
        except OSError as e:
            self.reply(502, str(e))
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        conns = [self.connection, upstream]
        try:
            while True:
                ready, _, _ = select.select(conns, [], [], 120)
                if not ready:
                    break
                for s in ready:
                    data = s.recv(1 << 16)
                    if not data:
                        raise EOFError
                    (upstream if s is self.connection else self.connection).sendall(data)
        except (EOFError, OSError):
            pass
        finally:
            upstream.close()
            self.close_connection = True

    def do_GET(self):
        path = self.path
        proxied = path.startswith("http://")
        if proxied:
            path = urllib.parse.urlsplit(path).path
        parts = urllib.parse.urlsplit(path)
        if parts.path == "/_stats":
            with LOCK:
                body = json.dumps({"requests": REQUESTS})
            self.reply(200, body, "application/json")
            return
        if parts.path == "/_control":
            for k, v in urllib.parse.parse_qsl(parts.query):
                if k == "rate":
                    STATE["rate"] = int(v)
                elif k == "no_range":
                    STATE["no_range"] = v == "1"
                elif k == "ignore_if_range":
                    STATE["ignore_if_range"] = v == "1"
            self.reply(200, "ok")
            return
        rng = self.headers.get("Range")
        file = os.path.join(ROOT, urllib.parse.unquote(parts.path).lstrip("/"))
        if not os.path.realpath(file).startswith(ROOT + os.sep) or not os.path.isfile(file):
            record(method="GET", path=parts.path, range=rng, status=404, proxied=proxied)
            self.reply(404, "not found\n")
            return
        st = os.stat(file)
        size = st.st_size
        etag = '"%x-%x"' % (size, st.st_mtime_ns)
        start, end, status = 0, size - 1, 200
        if rng and not STATE["no_range"]:
            if_range = self.headers.get("If-Range")
            if STATE["ignore_if_range"] or if_range is None or if_range == etag or if_range == formatdate(st.st_mtime, usegmt=True):
                spec = rng.strip().removeprefix("bytes=")
                a, _, b = spec.partition("-")
                start = int(a)
                end = int(b) if b else size - 1
                if start >= size:
                    record(method="GET", path=parts.path, range=rng, status=416, proxied=proxied)
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        record(method="GET", path=parts.path, range=rng, status=status, proxied=proxied)
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(st.st_mtime, usegmt=True))
        if not STATE["no_range"]:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        self.wfile.flush()
        try:
            with open(file, "rb") as f:
                left = end - start + 1
                if STATE["rate"] <= 0:
                    self.connection.sendfile(f, start, left)
                    return
                f.seek(start)
                chunk = 64 * 1024
                began = time.monotonic()
                sent = 0
                while left > 0:
                    data = f.read(min(chunk, left))
                    self.connection.sendall(data)
                    sent += len(data)
                    left -= len(data)
                    rate = STATE["rate"]
                    if rate > 0:
                        ahead = sent / rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tls = os.environ.get("IMAGE_SERVER_TLS")
    if tls:
        cert, key = tls.split(":")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
