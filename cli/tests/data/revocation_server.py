#!/usr/bin/python3
"""A loopback CRL and OCSP server for tokenmail's revocation tests.

    revocation_server.py DIR

Listens on 127.0.0.1 on a free port and prints the port on its first line of standard
output. Serves, from DIR (read at each request, so the PKI may be made after start):

  GET  /crl/NAME          the file DIR/NAME
  POST /ocsp/NAME         an OCSP answer made by `openssl ocsp` with the responder settings
                          in DIR/NAME.ocsp (one line: the openssl arguments, e.g.
                          `-index int/index.txt -CA int.pem -rsigner int.pem -rkey int.key`;
                          valid for a day unless they give -nmin or -ndays), or, when that
                          line is `garbage`, 200 with bytes that are no OCSP response, and
                          when it is `error`, 500
  anything else           404

A request in absolute form (`GET http://host:port/crl/NAME`, as sent to a proxy) is
answered the same way: the server is its own proxy, and the request log shows the form.
Every request is appended to DIR/requests.log (method and request target). `openssl ocsp
-port` is not used: in 3.0 it listens on every interface and spins after an empty
connection (shared/STACK.md).
"""

import http.server
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        with open(os.path.join(ROOT, "requests.log"), "a") as f:
            f.write("%s %s\n" % (self.command, self.path))

    def answer(self, code, body, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def target(self):
        """The path of the request target (absolute form: its path)."""
        p = self.path
        if p.startswith("http://"):
            rest = p[len("http://"):]
            p = rest[rest.find("/"):] if "/" in rest else "/"
        return p

    def do_GET(self):
        path = self.target()
        if path.startswith("/crl/"):
            name = os.path.basename(path[5:])
            try:
                with open(os.path.join(ROOT, name), "rb") as f:
                    return self.answer(200, f.read(), "application/pkix-crl")
            except OSError:
                pass
        self.answer(404, b"not found\n", "text/plain")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = self.rfile.read(min(n, 65536))
        path = self.target()
        if not path.startswith("/ocsp/"):
            return self.answer(404, b"not found\n", "text/plain")
        name = os.path.basename(path[6:])
        try:
            with open(os.path.join(ROOT, name + ".ocsp")) as f:
                args = shlex.split(f.read().strip())
        except OSError:
            return self.answer(404, b"no such responder\n", "text/plain")
        if args == ["garbage"]:
            return self.answer(200, b"this is no OCSP response", "application/ocsp-response")
        if args == ["error"]:
            return self.answer(500, b"responder failure\n", "text/plain")
        if "-nmin" not in args and "-ndays" not in args:
            args = ["-ndays", "1"] + args
        with tempfile.TemporaryDirectory() as tmp:
            reqf = os.path.join(tmp, "req.der")
            respf = os.path.join(tmp, "resp.der")
            with open(reqf, "wb") as f:
                f.write(req)
            r = subprocess.run(
                ["openssl", "ocsp", "-reqin", reqf, "-respout", respf] + args,
                cwd=ROOT,
                capture_output=True,
                timeout=20,
            )
            if r.returncode != 0 or not os.path.exists(respf):
                return self.answer(500, r.stderr, "text/plain")
            with open(respf, "rb") as f:
                return self.answer(200, f.read(), "application/ocsp-response")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
