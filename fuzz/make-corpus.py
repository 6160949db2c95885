#!/usr/bin/env python3
"""The hand-made seeds of fuzz/corpus (called by make-corpus.sh): frames, requests, hostile
MIME, From fields and BER shapes."""
import json
import os
import struct
import sys

c = sys.argv[1]


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(c, target, name), "wb") as f:
        f.write(data)


def frame(kind, payload, magic=b"TKML", ver=(1, 0), flags=0, length=None):
    n = len(payload) if length is None else length
    return magic + bytes([ver[0], ver[1], kind, flags]) + struct.pack(">I", n) + payload


# ------------------------------------------------------------------ requests
requests = {
    "hello": {"op": "hello", "client": "fuzz 0.1", "pin_prompt": True},
    "status": {"op": "status"},
    "list-keys": {"op": "list-keys"},
    "sign-digest": {"op": "sign-digest", "key": "alice@example.org", "algorithm": "ecdsa-sha256",
                    "digest": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
    "sign-digest-cert": {"op": "sign-digest-cert", "key": "sig", "certificate": "00" * 32,
                         "algorithm": "rsa-pss-sha384", "digest": "AA=="},
    "decrypt-key": {"op": "decrypt-key", "key": "01ab", "algorithm": "rsa-oaep-sha256", "wrapped": "AAAA"},
    "derive": {"op": "derive", "key": "k", "peer_point": "BAAA"},
    "login": {"op": "login", "token": "YubiKey", "pin": "123456"},
    "login-pin-number": {"op": "login", "pin": 918273},
    "lock": {"op": "lock"},
    "sign": {"op": "sign", "key": "alice@example.org", "form": "opaque", "digest": "sha384", "pss": True, "crlf": False},
    "verify": {"op": "verify", "trust": ["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"], "signature": "MIIB"},
    "encrypt": {"op": "encrypt", "recipients": ["x"], "cipher": "aes128-cbc"},
    "decrypt": {"op": "decrypt"},
    "wait-token": {"op": "wait-token", "token": "t", "timeout_secs": 18446744073709551615},
    "piv-status": {"op": "piv-status"},
    "piv-keygen": {"op": "piv-keygen", "slot": "9a", "algorithm": "p256", "pin_policy": "once",
                   "touch_policy": "cached", "management_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"},
    "piv-import-cert": {"op": "piv-import-cert", "slot": "9c", "certificate": "MAA="},
    "unknown-op": {"op": "frobnicate"},
    "response-error": {"type": "error", "code": "pin-required", "message": "m", "token": "t", "tries_left": 3},
    "response-verified": {"type": "verified", "valid": False, "report": {"signers": [1.5e300, None, [True]]}},
    "response-hello": {"type": "hello", "operations": ["sign"], "agent": "a", "protocol": "1.0"},
}
for name, req in requests.items():
    put("request", name + ".json", json.dumps(req))
put("request", "deep-array.json", "[" * 200 + "]" * 200)
put("request", "bad-utf8.json", b'{"op":"hello","client":"\xff\xfe"}')

# ------------------------------------------------------------------ frames
hello = json.dumps(requests["hello"]).encode()
put("frame", "hello.bin", frame(1, hello))
put("frame", "stream.bin", frame(1, json.dumps(requests["decrypt"]).encode()) + frame(2, b"chunk one")
    + frame(2, b"") + frame(3, b""))
put("frame", "huge-length.bin", frame(2, b"xx", length=0xFFFFFFFF))
put("frame", "just-over-cap.bin", frame(2, b"xx", length=(1 << 20) + 1))
put("frame", "cap-truncated.bin", frame(2, b"x" * 64, length=1 << 20))
put("frame", "bad-magic.bin", frame(1, b"{}", magic=b"TKMX"))
put("frame", "version-2.bin", frame(1, b"{}", ver=(2, 7)))
put("frame", "minor-9.bin", frame(1, b"{}", ver=(1, 9)))
put("frame", "end-with-payload.bin", frame(3, b"x"))
put("frame", "flags.bin", frame(2, b"x", flags=1))
put("frame", "kind-0.bin", frame(0, b""))
put("frame", "header-truncated.bin", frame(1, hello)[:7])

# ------------------------------------------------------------------ MIME
nest = 40
head = "From: alice@example.org\r\nMIME-Version: 1.0\r\n"
body = ""
for i in range(nest):
    body += f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
body += "Content-Type: text/plain\r\n\r\ndeep \xc3\xa9\r\n"
for i in reversed(range(nest)):
    body += f"--b{i}--\r\n"
put("mime", "deep-nesting.eml", (head + body).encode("latin-1"))
msg_nest = head + "Content-Type: message/rfc822\r\n\r\n" * 40 + "Subject: x\r\n\r\nb\xe9\r\n"
put("mime", "deep-rfc822.eml", msg_nest.encode("latin-1"))
big = "X-Long: " + "a" * 998 + "\r\n"
part_head = big * 270  # ~270 KiB: over the 256 KiB part-header limit
put("mime", "huge-part-header.eml",
    head + "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n" + part_head
    + "Content-Type: text/plain\r\n\r\n\xe9\r\n--zz--\r\n")
put("mime", "long-line.eml", head + "Content-Type: text/plain\r\n\r\n" + "x" * 3000 + "\r\n")
put("mime", "bare-cr-nul.eml", b"Content-Type: text/plain\r\n\r\na\rb\x00c\r\n.dot\r\n-dash \r\n")
put("mime", "unclosed-multipart.eml", head + "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n\xff")
put("mime", "continuation-first.eml", " folded\r\nFrom: a@b\r\n\r\n")
put("mime", "qp.txt", "=C3=A9t=C3=A9 =\r\nsoft break =ZZ bad escape =\n")

# ------------------------------------------------------------------ From fields
froms = {
    "comment-spoof": "alice@example.org (<bob@example.net>)",
    "two-mailboxes": '"A" <alice@example.org>, <bob@example.net>',
    "encoded-word": "=?utf-8?q?bob=40example=2Enet?= <alice@example.org>",
    "encoded-word-b": "=?utf-8?b?Ym9iQGV4YW1wbGUubmV0?= <alice@example.org>",
    "quoted-angle": '"bob@example.net <bob@example.net>" <alice@example.org>',
    "group": "friends: alice@example.org, bob@example.net;",
    "source-route": "<@relay.example:alice@example.org>",
    "quoted-local": '"a@b"@example.org',
    "nested-comment": "alice@example.org (a (b) \\) c)",
    "unclosed-comment": "alice@example.org (<bob@example.net>",
    "display-with-at": "alice@example.org <bob@example.net>",
    "domain-literal": "alice@[192.0.2.1]",
}
for name, v in froms.items():
    put("from_header", name + ".eml", f"From: {v}\r\nSubject: x\r\n\r\nbody\r\n")
put("from_header", "two-from-fields.eml", "From: alice@example.org\r\nfrom: bob@example.net\r\n\r\n")
put("from_header", "folded.eml", "From: Alice\r\n <alice@example.org>\r\n\r\n")
put("from_header", "long.eml", "From: " + "(" * 3000 + "\r\n\r\n")

# ------------------------------------------------------------------ BER shapes
deep = b"\x30\x80" * 2000 + b"\x00\x00" * 2000
put("signed_data", "deep-indefinite.ber", deep)
put("signed_data", "huge-length.ber", b"\x30\x84\xff\xff\xff\xff\x06\x09")
put("signed_data", "long-form-length.ber", b"\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00")
put("enveloped", "deep-indefinite.ber", deep)
put("enveloped", "huge-length.ber", b"\x30\x84\x7f\xff\xff\xff\x06\x0b\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x01\x17")
