#!/usr/bin/env python3
"""A minimal tokenmail-agent client (protocol v1), Python 3 standard library only.

Importable::

    from tokenmail_client import TokenmailClient, TokenmailError

    with TokenmailClient() as c:                    # default socket path
        print(c.hello()["agent"])                   # also sets c.protocol, c.operations
        if not c.supports("sign-digest"):
            raise SystemExit("this agent cannot sign digests")
        digest = hashlib.sha256(data).digest()
        try:
            sig = c.sign_digest("alice@example.com", "rsa-pkcs1-sha256", digest)
        except TokenmailError as e:
            if e.code != "pin-required":
                raise
            c.login(getpass.getpass("Token PIN: "))
            sig = c.sign_digest("alice@example.com", "rsa-pkcs1-sha256", digest)

Command line::

    tokenmail_client.py [--socket PATH] hello [--json]
    tokenmail_client.py [--socket PATH] status
    tokenmail_client.py [--socket PATH] keys [--json]
    tokenmail_client.py [--socket PATH] sign --key KEY [--algorithm ALG] [--out FILE] FILE
    tokenmail_client.py [--socket PATH] sign --key KEY --form FORM [--digest H] [--pss]
                        [--receipt-request] [--security-label OID:CLASS] [--out FILE] FILE
    tokenmail_client.py [--socket PATH] verify --trust PEM [--signature SIG] [--out FILE] FILE
    tokenmail_client.py [--socket PATH] encrypt --recipient PEM [--cipher C] [--out FILE] FILE
    tokenmail_client.py [--socket PATH] decrypt [--out FILE] FILE
    tokenmail_client.py [--socket PATH] login [--token LABEL] [--pin-stdin]
    tokenmail_client.py [--socket PATH] lock

The wire protocol is specified in docs/protocol.md.

Note on PINs: Python strings cannot be wiped from memory. This client keeps the
encoded request in a bytearray and overwrites it after sending, but copies made by
str/json/getpass remain until the garbage collector reuses the memory. Use the Rust
`tokenmail` CLI where that matters.
"""

import argparse
import base64
import getpass
import hashlib
import json
import os
import shutil
import socket
import struct
import sys
import tempfile

__all__ = [
    "TokenmailClient",
    "TokenmailError",
    "ProtocolError",
    "default_socket_path",
    "encode_frame",
    "read_frame",
    "SIGN_ALGORITHMS",
    "DECRYPT_ALGORITHMS",
    "V1_OPERATIONS",
    "STREAM_OPERATIONS",
    "SIGN_FORMS",
]

# ---------------------------------------------------------------- framing

MAGIC = b"TKML"
VERSION_MAJOR = 1
VERSION_MINOR = 0
HEADER = struct.Struct(">4sBBBBI")  # magic, ver_major, ver_minor, kind, flags, length
HEADER_LEN = HEADER.size  # 12
MAX_FRAME = 1 << 20  # largest payload either side may send (1 MiB)
CHUNK = 64 * 1024  # recommended data-chunk size for streams

KIND_MESSAGE = 1  # a JSON request or response
KIND_DATA = 2  # a chunk of a data stream (reserved for stream operations)
KIND_END = 3  # end of a data stream, empty payload

# Signature algorithm -> hashlib name of the digest it signs.
SIGN_ALGORITHMS = {
    "rsa-pkcs1-sha256": "sha256",
    "rsa-pkcs1-sha384": "sha384",
    "rsa-pkcs1-sha512": "sha512",
    "rsa-pss-sha256": "sha256",
    "rsa-pss-sha384": "sha384",
    "rsa-pss-sha512": "sha512",
    "ecdsa-sha256": "sha256",
    "ecdsa-sha384": "sha384",
    "ecdsa-sha512": "sha512",
}

DECRYPT_ALGORITHMS = (
    "rsa-pkcs1",
    "rsa-oaep-sha1",
    "rsa-oaep-sha256",
    "rsa-oaep-sha384",
    "rsa-oaep-sha512",
)

# The operations of protocol 1.0: what to assume of an agent whose hello has no
# "operations" member (agents built before it was added).
V1_OPERATIONS = (
    "hello",
    "status",
    "list-keys",
    "sign-digest",
    "decrypt-key",
    "derive",
    "login",
    "lock",
)


# Whole-message operations (docs/protocol.md section 12): a request, the input as Data
# frames, End; the agent answers with Data frames, End, and a final message.
STREAM_OPERATIONS = ("sign", "verify", "encrypt", "decrypt")

SIGN_FORMS = ("multipart", "opaque", "detached-der", "detached-pem")


class TokenmailError(Exception):
    """The agent answered with an error response.

    `code` is the kebab-case code from the wire (e.g. "pin-required"), `message` the
    agent's human-readable text.
    """

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class ProtocolError(Exception):
    """The peer is not a tokenmail v1 agent, or broke the framing."""


def default_socket_path():
    """--socket aside: $TOKENMAIL_SOCK, else $XDG_RUNTIME_DIR/tokenmail/agent.sock,
    else /tmp/tokenmail-$UID/agent.sock (empty variables count as unset)."""
    p = os.environ.get("TOKENMAIL_SOCK")
    if p:
        return p
    d = os.environ.get("XDG_RUNTIME_DIR")
    if d:
        return os.path.join(d, "tokenmail", "agent.sock")
    return "/tmp/tokenmail-%d/agent.sock" % os.getuid()


def encode_frame(kind, payload=b""):
    """Header + payload as a bytearray (so a caller can wipe it after sending)."""
    if len(payload) > MAX_FRAME:
        raise ProtocolError("frame of %d bytes exceeds the %d byte limit" % (len(payload), MAX_FRAME))
    if kind == KIND_END and payload:
        raise ProtocolError("an end frame carries no payload")
    buf = bytearray(HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, kind, 0, len(payload)))
    buf += payload
    return buf


def _recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return bytes(buf[:got])
        got += k
    return bytes(buf)


def read_frame(sock):
    """Reads one frame; returns (kind, payload), or None on a clean close before a header.

    Checks what docs/protocol.md requires of a receiver: magic, major version, kind,
    flags, length <= MAX_FRAME, and an empty End frame.
    """
    h = _recv_exact(sock, HEADER_LEN)
    if not h:
        return None
    if len(h) < HEADER_LEN:
        raise ProtocolError("connection closed in the middle of a frame header")
    magic, major, minor, kind, flags, length = HEADER.unpack(h)
    if magic != MAGIC:
        raise ProtocolError("bad frame magic %r: not a tokenmail agent" % magic)
    if major != VERSION_MAJOR:
        raise ProtocolError("agent speaks protocol %d.%d; this client speaks 1.x" % (major, minor))
    if kind not in (KIND_MESSAGE, KIND_DATA, KIND_END):
        raise ProtocolError("unknown frame kind %d" % kind)
    if flags != 0:
        raise ProtocolError("non-zero frame flags 0x%02x" % flags)
    if length > MAX_FRAME:
        raise ProtocolError("frame of %d bytes exceeds the %d byte limit" % (length, MAX_FRAME))
    if kind == KIND_END and length != 0:
        raise ProtocolError("end frame with a payload")
    payload = _recv_exact(sock, length)
    if len(payload) < length:
        raise ProtocolError("connection closed in the middle of a frame")
    return kind, payload


def _b64(data):
    return base64.b64encode(bytes(data)).decode("ascii")


def _unb64(text):
    return base64.b64decode(text, validate=True)


# ----------------------------------------------------------------- client


class TokenmailClient:
    """One connection to tokenmail-agent.

    The `hello` handshake is sent automatically before the first other request (or
    call hello() yourself). Requests on one connection are answered in order. Agent
    error responses raise TokenmailError; the connection stays usable after them.
    Framing failures raise ProtocolError and the connection is closed.

    After hello(), `agent`, `protocol` and `operations` (the `op` values the agent
    serves, a list) describe the agent; supports(op) checks one. An `op` the agent
    does not serve is answered with a "bad-request" TokenmailError and the connection
    stays open.
    """

    def __init__(self, path=None, client_name="tokenmail_client.py/1", timeout=120.0):
        self.path = path or default_socket_path()
        self.client_name = client_name
        self.agent = None
        self.protocol = None
        self.operations = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except OSError as e:
            self._sock.close()
            raise OSError(
                e.errno,
                "no tokenmail agent at %s (%s); start one, or pass --socket / set TOKENMAIL_SOCK"
                % (self.path, e.strerror or e),
            ) from None

    # -- plumbing

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, request):
        """Sends one request (a dict with "op") and returns the response dict.

        Raises TokenmailError for {"type": "error"} responses.
        """
        if self._sock is None:
            raise ProtocolError("connection closed")
        if self.agent is None and request.get("op") != "hello":
            self.hello()
        frame = encode_frame(KIND_MESSAGE, json.dumps(request, separators=(",", ":")).encode("utf-8"))
        try:
            self._sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            # The agent may have answered with an error and closed (e.g. a connection
            # from another user); read that answer below if it is there.
            pass
        finally:
            frame[:] = bytes(len(frame))  # best effort: wipe the encoded request
        try:
            got = read_frame(self._sock)
        except ProtocolError:
            self.close()
            raise
        if got is None:
            self.close()
            raise ProtocolError("the agent closed the connection without answering")
        kind, payload = got
        if kind != KIND_MESSAGE:
            self.close()
            raise ProtocolError("expected a message frame, got kind %d" % kind)
        try:
            resp = json.loads(payload.decode("utf-8"))
        except ValueError as e:
            self.close()
            raise ProtocolError("malformed response: %s" % e) from None
        if not isinstance(resp, dict) or "type" not in resp:
            self.close()
            raise ProtocolError("malformed response: no \"type\"")
        if resp["type"] == "error":
            raise TokenmailError(resp.get("code", "internal"), resp.get("message", ""))
        return resp

    def _expect(self, request, rtype):
        resp = self.call(request)
        if resp["type"] != rtype:
            raise ProtocolError("expected a %r response to %r, got %r" % (rtype, request["op"], resp["type"]))
        return resp

    # -- operations

    def hello(self):
        """Handshake. Returns {"type": "hello", "operations": [...], "agent": ...,
        "protocol": "1.0"} and sets self.agent, self.protocol and self.operations
        (V1_OPERATIONS when the agent sends no "operations")."""
        resp = self._expect({"op": "hello", "client": self.client_name}, "hello")
        self.agent = resp.get("agent", "")
        self.protocol = resp.get("protocol", "")
        ops = resp.get("operations")
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            ops = list(V1_OPERATIONS)
        self.operations = ops
        return resp

    def supports(self, op):
        """Whether the agent serves `op` (as its hello lists it); sends hello if needed."""
        if self.operations is None:
            self.hello()
        return op in self.operations

    def status(self):
        """Agent version, tokens, keys, and which key each email selects (a dict)."""
        return self._expect({"op": "status"}, "status")

    def list_keys(self):
        """The keys on present tokens: a list of dicts (label, id, token, algorithm, usage,
        certificate)."""
        return self._expect({"op": "list-keys"}, "keys")["keys"]

    def sign_digest(self, key, algorithm, digest_bytes):
        """Signs a digest computed by the caller. Returns the signature bytes (RSA: raw,
        ECDSA: DER Ecdsa-Sig-Value)."""
        if algorithm not in SIGN_ALGORITHMS:
            raise ValueError("unknown algorithm %r; use one of %s" % (algorithm, ", ".join(SIGN_ALGORITHMS)))
        resp = self._expect(
            {"op": "sign-digest", "key": key, "algorithm": algorithm, "digest": _b64(digest_bytes)},
            "signature",
        )
        return _unb64(resp["signature"])

    def decrypt_key(self, key, algorithm, wrapped):
        """Unwraps an RSA-encrypted content key. Returns the key bytes."""
        if algorithm not in DECRYPT_ALGORITHMS:
            raise ValueError("unknown algorithm %r; use one of %s" % (algorithm, ", ".join(DECRYPT_ALGORITHMS)))
        resp = self._expect(
            {"op": "decrypt-key", "key": key, "algorithm": algorithm, "wrapped": _b64(wrapped)},
            "secret",
        )
        return _unb64(resp["secret"])

    def derive(self, key, peer_point):
        """ECDH with an EC key: peer_point is SEC1 uncompressed (0x04 || X || Y).
        Returns the raw shared secret (the X coordinate)."""
        resp = self._expect({"op": "derive", "key": key, "peer_point": _b64(peer_point)}, "secret")
        return _unb64(resp["secret"])

    def login(self, pin, token=None):
        """Logs in with `pin`; with pin=None the agent uses the token's configured
        unattended source (PIN file or variable). `token`: label or serial."""
        req = {"op": "login"}
        if token is not None:
            req["token"] = token
        if pin is not None:
            req["pin"] = pin
        self._expect(req, "ok")

    def lock(self):
        """Logs out of every token; the agent forgets cached PINs."""
        self._expect({"op": "lock"}, "ok")

    # -- streams (whole messages, docs/protocol.md section 12)

    def stream(self, request, infile, outfile):
        """Runs a stream operation: sends `request` (a dict with a stream "op"), then the
        bytes of `infile` (a binary file object) as Data frames and an End frame; writes
        the agent's output Data frames to `outfile` (binary) and returns the final
        response dict. Raises TokenmailError for an error result: then discard whatever
        was written to `outfile` (this agent writes nothing then, but do not rely on it).

        Sending everything before reading is safe: the agent sends nothing before it has
        read the End frame (it spools its output)."""
        if self._sock is None:
            raise ProtocolError("connection closed")
        if request.get("op") not in STREAM_OPERATIONS:
            raise ValueError("not a stream operation: %r" % request.get("op"))
        if not self.supports(request["op"]):
            # Never probe a stream op: the Data frames would close the connection.
            raise TokenmailError("bad-request", "this agent does not serve %r" % request["op"])
        try:
            self._sock.sendall(encode_frame(KIND_MESSAGE, json.dumps(request, separators=(",", ":")).encode("utf-8")))
            while True:
                block = infile.read(CHUNK)
                if not block:
                    break
                self._sock.sendall(encode_frame(KIND_DATA, block))
            self._sock.sendall(encode_frame(KIND_END))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent closed after an error: read it below
        while True:
            got = self._read_or_close()
            kind, payload = got
            if kind == KIND_DATA:
                outfile.write(payload)
            elif kind == KIND_END:
                break
            else:
                self._sock_close_after(payload)  # an error before the output ended
        kind, payload = self._read_or_close()
        if kind != KIND_MESSAGE:
            self.close()
            raise ProtocolError("expected the final message frame, got kind %d" % kind)
        resp = self._decode(payload)
        if resp["type"] == "error":
            raise TokenmailError(resp.get("code", "internal"), resp.get("message", ""))
        return resp

    def _read_or_close(self):
        try:
            got = read_frame(self._sock)
        except ProtocolError:
            self.close()
            raise
        if got is None:
            self.close()
            raise ProtocolError("the agent closed the connection inside a stream")
        return got

    def _decode(self, payload):
        try:
            resp = json.loads(payload.decode("utf-8"))
        except ValueError as e:
            self.close()
            raise ProtocolError("malformed response: %s" % e) from None
        if not isinstance(resp, dict) or "type" not in resp:
            self.close()
            raise ProtocolError("malformed response: no \"type\"")
        return resp

    def _sock_close_after(self, payload):
        """A message frame where output was expected: the agent's error before it closes."""
        resp = self._decode(payload)
        self.close()
        if resp.get("type") == "error":
            raise TokenmailError(resp.get("code", "internal"), resp.get("message", ""))
        raise ProtocolError("unexpected %r message inside a stream" % resp.get("type"))

    def sign_message(self, key, infile, outfile, form="multipart", digest=None, pss=False,
                     receipt_request=False, security_label=None):
        """S/MIME-signs the message in `infile` with `key` on a token; the signed message
        (or the detached CMS, for the detached-* forms) goes to `outfile`. `receipt_request`
        asks the recipients for ESS signed receipts; `security_label` is an ESS label
        "POLICY-OID:CLASSIFICATION". Returns {"type": "signed", "key": label, "bytes": n}."""
        if form not in SIGN_FORMS:
            raise ValueError("unknown form %r; use one of %s" % (form, ", ".join(SIGN_FORMS)))
        req = {"op": "sign", "key": key, "form": form}
        if digest:
            req["digest"] = digest
        if pss:
            req["pss"] = True
        if receipt_request:
            req["receipt_request"] = True
        if security_label:
            req["security_label"] = security_label
        return self.stream(req, infile, outfile)

    def verify_message(self, infile, outfile, trust_pems, signature=None):
        """Verifies a signed message (or detached content, with `signature` bytes: a DER or
        PEM CMS). `trust_pems`: PEM texts of the trusted CAs. The signed content goes to
        `outfile` only when valid. Returns {"type": "verified", "valid": bool, "report": {...}}."""
        req = {"op": "verify", "trust": list(trust_pems)}
        if signature is not None:
            req["signature"] = _b64(signature)
        return self.stream(req, infile, outfile)

    def encrypt_message(self, infile, outfile, recipient_pems, cipher=None):
        """S/MIME-encrypts the message to certificates (PEM texts).
        Returns {"type": "encrypted", "bytes": n}."""
        req = {"op": "encrypt", "recipients": list(recipient_pems)}
        if cipher:
            req["cipher"] = cipher
        return self.stream(req, infile, outfile)

    def decrypt_message(self, infile, outfile):
        """Decrypts with whichever key on the tokens is a recipient. The plaintext comes only
        after the decryption completed (AES-GCM: the tag verified). Returns
        {"type": "decrypted", "key": label, "authenticated": bool, "bytes": n}."""
        return self.stream({"op": "decrypt"}, infile, outfile)


# -------------------------------------------------------------------- CLI


def _default_algorithm(client, key):
    """rsa-pkcs1-sha256 for RSA, ecdsa-sha256 for P-256, ecdsa-sha384 for P-384, resolving
    the key name as the agent does (label, hex id, sha256: fingerprint, email selection)."""
    st = client.status()
    keys = st.get("keys", [])
    hit = [k for k in keys if k.get("label") == key]
    if not hit:
        hit = [k for k in keys if k.get("id") == key.lower()]
    if not hit and key.startswith("sha256:"):
        fp = key[len("sha256:"):].lower()
        hit = [k for k in keys if (k.get("certificate") or {}).get("sha256") == fp]
    if not hit and "@" in key:
        for sel in st.get("emails", []):
            if sel.get("email") == key.lower():
                hit = [
                    k
                    for k in keys
                    if k.get("label") == sel.get("key")
                    and k.get("id") == sel.get("id")
                    and k.get("token") == sel.get("token", k.get("token"))
                ]
    alg = hit[0].get("algorithm") if len(hit) == 1 else None
    return {"ec-p256": "ecdsa-sha256", "ec-p384": "ecdsa-sha384"}.get(alg, "rsa-pkcs1-sha256")


def _hash_file(path, hash_name):
    h = hashlib.new(hash_name)
    f = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    return h.digest()


def _read_pin(args):
    if args.pin_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
    else:
        prompt = "PIN for token %r: " % args.token if args.token else "Token PIN: "
        line = getpass.getpass(prompt)
    if not line:
        raise ValueError("empty PIN; nothing sent")
    return line


def _cmd_hello(c, args):
    resp = c.hello()
    if args.json:
        json.dump(resp, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print("agent:      %s" % c.agent)
    print("protocol:   %s" % c.protocol)
    print("operations: %s" % " ".join(c.operations))


def _cmd_status(c, args):
    json.dump(c.status(), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _cmd_keys(c, args):
    keys = c.list_keys()
    if args.json:
        json.dump(keys, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for k in keys:
        cert = k.get("certificate") or {}
        print(
            "%-24s id=%-8s %-9s %-22s %s"
            % (
                k.get("label", ""),
                k.get("id", ""),
                k.get("algorithm", ""),
                ",".join(k.get("usage", [])),
                " ".join(cert.get("emails", [])),
            )
        )


class _Output:
    """Output of a stream command: spooled to a private temporary file, released (renamed
    over --out, or copied to standard output) only on success."""

    def __init__(self, path):
        self.path = path
        d = os.path.dirname(os.path.abspath(path)) if path else None
        self.tmp = tempfile.NamedTemporaryFile(dir=d, prefix=".tokenmail-", delete=False)

    def commit(self):
        self.tmp.close()
        if self.path:
            os.replace(self.tmp.name, self.path)
        else:
            with open(self.tmp.name, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            os.unlink(self.tmp.name)

    def discard(self):
        self.tmp.close()
        try:
            os.unlink(self.tmp.name)
        except OSError:
            pass


def _open_in(path):
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def _run_stream(c, args, fn):
    """Runs fn(infile, outfile) -> response with the spooled output; returns the response."""
    infile = _open_in(args.file)
    out = _Output(args.out)
    try:
        resp = fn(infile, out.tmp)
    except BaseException:
        out.discard()
        raise
    finally:
        if infile is not sys.stdin.buffer:
            infile.close()
    return resp, out


def _read_text(path):
    with open(path, "r", encoding="ascii") as f:
        return f.read()


def _cmd_smime_sign(c, args):
    resp, out = _run_stream(
        c,
        args,
        lambda i, o: c.sign_message(
            args.key, i, o, form=args.form, digest=args.digest, pss=args.pss,
            receipt_request=args.receipt_request, security_label=args.security_label,
        ),
    )
    out.commit()
    print("signed with %s (%d bytes)" % (resp["key"], resp["bytes"]), file=sys.stderr)


def _cmd_verify(c, args):
    sig = None
    if args.signature:
        with open(args.signature, "rb") as f:
            sig = f.read()
    trust = [_read_text(p) for p in args.trust]
    resp, out = _run_stream(c, args, lambda i, o: c.verify_message(i, o, trust, signature=sig))
    if args.json:
        json.dump(resp, sys.stderr if args.out is None else sys.stdout, indent=2)
        (sys.stderr if args.out is None else sys.stdout).write("\n")
    if not resp.get("valid"):
        out.discard()
        for s in resp.get("report", {}).get("signers", []):
            for ch in s.get("checks", []):
                if not ch.get("ok", True):
                    print("FAILED %s: %s" % (ch.get("name"), ch.get("reason")), file=sys.stderr)
        print("signature NOT valid; no content written", file=sys.stderr)
        return 1
    out.commit()
    print("signature valid", file=sys.stderr)
    return 0


def _cmd_encrypt(c, args):
    pems = [_read_text(p) for p in args.recipient]
    resp, out = _run_stream(c, args, lambda i, o: c.encrypt_message(i, o, pems, cipher=args.cipher))
    out.commit()


def _cmd_decrypt(c, args):
    resp, out = _run_stream(c, args, lambda i, o: c.decrypt_message(i, o))
    out.commit()
    print(
        "decrypted with %s (authenticated: %s)" % (resp["key"], "yes" if resp["authenticated"] else "no"),
        file=sys.stderr,
    )


def _cmd_sign(c, args):
    if args.form:
        if args.algorithm:
            raise ValueError("--algorithm is for digest signatures; with --form use --digest and --pss")
        return _cmd_smime_sign(c, args)
    if args.digest or args.pss or args.receipt_request or args.security_label:
        raise ValueError("--digest, --pss, --receipt-request and --security-label need --form (S/MIME signing)")
    alg = args.algorithm or _default_algorithm(c, args.key)
    if alg not in SIGN_ALGORITHMS:
        raise ValueError("unknown algorithm %r; use one of %s" % (alg, ", ".join(SIGN_ALGORITHMS)))
    digest = _hash_file(args.file, SIGN_ALGORITHMS[alg])
    try:
        sig = c.sign_digest(args.key, alg, digest)
    except TokenmailError as e:
        # Like the tokenmail CLI: ask for the PIN once if there is a terminal to ask on.
        if e.code != "pin-required" or not sys.stdin.isatty():
            raise
        pin = getpass.getpass("Token PIN: ")
        if not pin:
            raise ValueError("empty PIN; nothing sent") from None
        c.login(pin)
        sig = c.sign_digest(args.key, alg, digest)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(sig)
    else:
        print(base64.b64encode(sig).decode("ascii"))


def _cmd_login(c, args):
    c.login(_read_pin(args), token=args.token)
    print("logged in", file=sys.stderr)


def _cmd_lock(c, args):
    c.lock()
    print("locked: tokens logged out, cached PINs forgotten", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """Usage errors, too, end with one `error: ...` line and exit status 1."""

    def error(self, message):
        print("error: %s (see --help)" % message, file=sys.stderr)
        sys.exit(1)


def main(argv=None):
    p = _Parser(
        prog="tokenmail_client.py",
        description="Talk to tokenmail-agent over its socket (protocol v1).",
        epilog="The socket is --socket, else $TOKENMAIL_SOCK, else "
        "$XDG_RUNTIME_DIR/tokenmail/agent.sock, else /tmp/tokenmail-$UID/agent.sock.",
    )
    p.add_argument("--socket", metavar="PATH", help="agent socket (default: %s)" % default_socket_path())
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("hello", help="the agent's name, protocol version and operations")
    s.add_argument("--json", action="store_true", help="print the agent's JSON answer")
    s.set_defaults(func=_cmd_hello)

    s = sub.add_parser("status", help="agent, tokens, keys and email selections, as JSON")
    s.set_defaults(func=_cmd_status)

    s = sub.add_parser("keys", help="the keys on the tokens")
    s.add_argument("--json", action="store_true", help="print the agent's JSON list")
    s.set_defaults(func=_cmd_keys)

    s = sub.add_parser(
        "sign",
        help="without --form: hash FILE here and sign the digest on the token; "
        "with --form: S/MIME-sign the message in the agent (stream)",
    )
    s.add_argument(
        "--key",
        required=True,
        help="CKA_LABEL, hex CKA_ID, sha256:FINGERPRINT of its certificate, or an email in its certificate",
    )
    s.add_argument(
        "--algorithm",
        choices=list(SIGN_ALGORITHMS),
        metavar="ALG",
        help="one of %s (default: rsa-pkcs1-sha256 for RSA keys, ecdsa-sha256 for P-256, "
        "ecdsa-sha384 for P-384)" % ", ".join(SIGN_ALGORITHMS),
    )
    s.add_argument(
        "--out",
        metavar="FILE",
        help="write the raw signature (with --form: the signed message) to FILE instead of "
        "printing base64 (with --form: standard output)",
    )
    s.add_argument("--form", choices=SIGN_FORMS, help="S/MIME output form: %s" % ", ".join(SIGN_FORMS))
    s.add_argument("--digest", choices=("sha256", "sha384", "sha512"), help="with --form: the digest (default: matched to the key)")
    s.add_argument("--pss", action="store_true", help="with --form and an RSA key: RSASSA-PSS")
    s.add_argument("--receipt-request", action="store_true", help="with --form: ask for ESS signed receipts")
    s.add_argument("--security-label", metavar="OID:CLASS", help="with --form: an ESS security label")
    s.add_argument("file", metavar="FILE", help="file to sign ('-' for standard input)")
    s.set_defaults(func=_cmd_sign)

    s = sub.add_parser("verify", help="verify a signed message in the agent; the content goes to --out (or stdout) only when valid")
    s.add_argument("--trust", metavar="PEM", action="append", required=True, help="trusted CA certificate(s), PEM; repeatable")
    s.add_argument("--signature", metavar="SIG", help="detached signature (DER or PEM CMS); FILE is then the content")
    s.add_argument("--out", metavar="FILE", help="write the verified content here (default: standard output)")
    s.add_argument("--json", action="store_true", help="print the agent's result with the report (stderr without --out)")
    s.add_argument("file", metavar="FILE", help="signed message ('-' for standard input)")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("encrypt", help="S/MIME-encrypt a message to certificates in the agent")
    s.add_argument("--recipient", metavar="PEM", action="append", required=True, help="recipient certificate, PEM; repeatable")
    s.add_argument("--cipher", choices=("aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc"), help="default aes256-gcm")
    s.add_argument("--out", metavar="FILE", help="write the encrypted message here (default: standard output)")
    s.add_argument("file", metavar="FILE", help="message ('-' for standard input)")
    s.set_defaults(func=_cmd_encrypt)

    s = sub.add_parser("decrypt", help="decrypt an S/MIME message with a key on the tokens")
    s.add_argument("--out", metavar="FILE", help="write the plaintext here (default: standard output)")
    s.add_argument("file", metavar="FILE", help="encrypted message ('-' for standard input)")
    s.set_defaults(func=_cmd_decrypt)

    s = sub.add_parser("login", help="log in to a token (PIN from the terminal, no echo)")
    s.add_argument("--token", metavar="LABEL", help="token label or serial (needed only with several tokens)")
    s.add_argument("--pin-stdin", action="store_true", help="read the PIN from the first line of standard input")
    s.set_defaults(func=_cmd_login)

    s = sub.add_parser("lock", help="log out of every token and forget cached PINs")
    s.set_defaults(func=_cmd_lock)

    args = p.parse_args(argv)
    try:
        with TokenmailClient(args.socket) as c:
            rc = args.func(c, args)
    except TokenmailError as e:
        msg = "%s: %s" % (e.code, e.message)
    except (ProtocolError, OSError, ValueError) as e:
        msg = str(e)
    except KeyboardInterrupt:
        msg = "interrupted"
    else:
        return rc or 0
    print("error: %s" % (msg.splitlines()[0] if msg else "failed"), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
