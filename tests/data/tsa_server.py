#!/usr/bin/python3
"""A loopback RFC 3161 time-stamping authority for tokenmail's timestamp tests.

    tsa_server.py DIR

Listens on 127.0.0.1 on a free port and prints the port on its first line of standard
output. DIR holds tsa.cnf, tsa.key, tsa.pem (smime/tests/data/tsa-pki.sh makes them).

  POST /tsa       the answer of `openssl ts -reply -config tsa.cnf` to the query
  POST /garbage   200 with a body that is no TimeStampResp
  anything else   404

Every request is appended to DIR/requests.log.
"""

import http.server
import os
import subprocess
import sys
import tempfile
import threading

ROOT = sys.argv[1]
# `openssl ts -reply` rewrites the serial file: one reply at a time
ONE_AT_A_TIME = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        with open(os.path.join(ROOT, "requests.log"), "a") as f:
            f.write("%s %s %s\n" % (self.command, self.path, self.headers.get("Content-Type")))

    def answer(self, code, body, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = self.rfile.read(min(n, 65536))
        if self.path == "/garbage":
            return self.answer(200, b"\x30\x03\x02\x01", "application/timestamp-reply")
        if self.path != "/tsa":
            return self.answer(404, b"not found\n", "text/plain")
        with tempfile.TemporaryDirectory() as tmp:
            q = os.path.join(tmp, "q.tsq")
            r = os.path.join(tmp, "r.tsr")
            with open(q, "wb") as f:
                f.write(req)
            with ONE_AT_A_TIME:
                p = subprocess.run(
                    ["openssl", "ts", "-reply", "-config", "tsa.cnf", "-queryfile", q, "-out", r],
                    cwd=ROOT,
                    capture_output=True,
                    timeout=20,
                )
            if p.returncode != 0 or not os.path.exists(r):
                return self.answer(500, p.stderr, "text/plain")
            with open(r, "rb") as f:
                return self.answer(200, f.read(), "application/timestamp-reply")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
