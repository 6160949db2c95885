#!/usr/bin/python3
"""A fake pinentry for tokenmail-agent's tests (agent/tests/pinentry.rs).

It speaks (sometimes broken) Assuan on stdin/stdout. The behaviour comes from its
own file name, since the agent passes no arguments: the tests copy this script to
a temporary directory as `fake-pinentry-<mode>`. Every line received is appended
to `<program>.log`, and the environment's variable names are written to
`<program>.env` and its process id to `<program>.pid`, for the tests to inspect.

Modes (what happens at GETPIN, or MESSAGE, unless said otherwise):
  ok            D 1234, OK
  multi         S, #, an INQUIRE (expects END), then the PIN "1 2%3\\n4" in 3 D lines
  empty         OK without data
  cancel        ERR 83886179 (GPG_ERR_CANCELED)
  failure       ERR 83886081 General error
  garbage       an unknown reply line
  bad-escape    D 12%ZZ34
  long-line     10000 bytes without a newline, then hangs
  exit          exits without answering
  hang          never answers
  bad-greeting  greets with something other than OK
  silent        never greets
  refuse-opt    ERR to SETKEYINFO and SETTIMEOUT (unknown command); then like ok
"""

import os
import sys
import time

program = sys.argv[0]
mode = os.path.basename(program).removeprefix("fake-pinentry-")
out = sys.stdout.buffer
inp = sys.stdin.buffer

with open(program + ".env", "w") as f:
    f.write("\n".join(sorted(os.environ)) + "\n")
with open(program + ".pid", "w") as f:
    f.write(f"{os.getpid()}\n")
log = open(program + ".log", "ab")


def send(line: bytes) -> None:
    out.write(line + b"\n")
    out.flush()


def receive() -> bytes:
    line = inp.readline()
    if not line:
        sys.exit(0)
    line = line.rstrip(b"\n")
    log.write(line + b"\n")
    log.flush()
    return line


def answer(verb: bytes) -> None:
    if mode in ("ok", "refuse-opt"):
        if verb == b"GETPIN":
            send(b"D 1234")
        send(b"OK")
    elif mode == "multi":
        send(b"S PROGRESS 1")
        send(b"# thinking")
        send(b"INQUIRE QUALITY 1")
        reply = receive()
        if reply != b"END":
            send(b"ERR 83886081 expected END to the inquiry")
            return
        send(b"D 1 2")
        send(b"D %25")
        send(b"D 3%0A4")
        send(b"OK")
    elif mode == "empty":
        send(b"OK")
    elif mode == "cancel":
        send(b"ERR 83886179 Operation cancelled <Pinentry>")
    elif mode == "failure":
        send(b"ERR 83886081 General error <Pinentry>")
    elif mode == "garbage":
        send(b"1234 HELLO")
    elif mode == "bad-escape":
        send(b"D 12%ZZ34")
        send(b"OK")
    elif mode == "long-line":
        out.write(b"D " + b"7" * 10000)
        out.flush()
        time.sleep(60)
    elif mode == "exit":
        sys.exit(3)
    elif mode == "hang":
        time.sleep(60)
    else:
        send(b"ERR 83886081 unknown fake mode")


if mode == "silent":
    time.sleep(60)
    sys.exit(0)
if mode == "bad-greeting":
    send(b"HELLO I am not a pinentry")
    time.sleep(60)
    sys.exit(0)

send(b"# fake pinentry for tests")
send(b"OK Pleased to meet you")
while True:
    line = receive()
    verb = line.split(b" ", 1)[0]
    if verb == b"BYE":
        send(b"OK closing connection")
        break
    if verb in (b"GETPIN", b"MESSAGE"):
        answer(verb)
    elif mode == "refuse-opt" and verb in (b"SETKEYINFO", b"SETTIMEOUT"):
        send(b"ERR 536871187 Unknown IPC command <User defined source 1>")
    else:
        send(b"OK")
