#!/usr/bin/env bash
# Per-message signing at the floor (issue 10 item 7): the wall time of one whole
# `tokenmail sign` of a 1 KiB message through a warm agent, against
#   * the floor: process start (`tokenmail --version`, same binary, same loop) plus one
#     raw C_Sign with RSA-2048 on the same SoftHSM token (tokenmail-bench, warm session,
#     key handle cached: the token's own time per signature);
#   * `openssl cms -sign` with the pkcs11 engine on the same key.
#
#   bench/sign-small.sh [--n N] [--rounds R] [--keep]
#     --n N        processes per tool and round (default 40)
#     --rounds R   rounds; the tools alternate within a round, the median round is shown
#                  (default 5)
#   TOKENMAIL_BENCH_NO_BUILD=1   reuse target/release binaries
#   TOKENMAIL_BENCH_TM=PATH      time another tokenmail binary (before/after)
#   TOKENMAIL_BENCH_AGENT=PATH   ... and another agent
#
# Rows: `sign -o FILE` (temporary file, fsync, rename: a regular file is never left
# half-written), `sign > FILE` (standard output: no fsync, like openssl -out), and the
# same with the signer cache off (TOKENMAIL_NO_SIGNER_CACHE=1: the status path, i.e. what
# every signature cost before the cache). The first signature of the run fills the cache
# (untimed). A benchmark, not a test: figures and ratios only.
set -euo pipefail

PROG=sign-small.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

N=40
ROUNDS=5
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --n) N="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "$PROG: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "${TOKENMAIL_BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p tokenmail-cli -p tokenmail-agent -p tokenmail-bench >&2
fi
TM="${TOKENMAIL_BENCH_TM:-$ROOT/target/release/tokenmail}"
AGENT="${TOKENMAIL_BENCH_AGENT:-$ROOT/target/release/tokenmail-agent}"
BENCH="$ROOT/target/release/tokenmail-bench"
for b in "$TM" "$AGENT" "$BENCH"; do
  [ -x "$b" ] || { echo "$PROG: $b missing (build failed?)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sign-small.XXXXXX")
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  if [ "$KEEP" -eq 1 ]; then echo "$PROG: kept $tmp" >&2; else rm -rf -- "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash softhsm/provision.sh "$tmp/tok" >/dev/null
# shellcheck disable=SC1091
. "$tmp/tok/env"
export SOFTHSM2_CONF
export XDG_CACHE_HOME="$tmp/cache"   # the signer cache of this run only
PKI="$TOKENMAIL_PKI"
URI="pkcs11:token=$TOKENMAIL_TOKEN_LABEL;object=alice-rsa;type=private?pin-source=file:$TOKENMAIL_PIN_FILE"

sock="$tmp/s"
"$AGENT" --foreground --socket "$sock" --pkcs11-module "$TOKENMAIL_PKCS11_MODULE" \
  --token-label "$TOKENMAIL_TOKEN_LABEL" --pin-file "$TOKENMAIL_PIN_FILE" 2>"$tmp/agent.log" &
agent_pid=$!
for _ in $(seq 1 100); do
  [ -S "$sock" ] && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$tmp/agent.log" >&2; echo "$PROG: the agent exited" >&2; exit 1; }
  sleep 0.1
done
[ -S "$sock" ] || { echo "$PROG: no agent socket after 10 s" >&2; exit 1; }

msg="$tmp/small.eml"
python3 - "$msg" <<'EOF'
import sys
hdr = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n"
       b"Content-Type: text/plain\r\n\r\n")
line = b"The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOP\r\n"
body = line * ((1024 - len(hdr)) // len(line) + 1)
open(sys.argv[1], "wb").write((hdr + body)[:1024 - 2] + b"\r\n")
EOF

ossl_engine() { OPENSSL_CONF="$TOKENMAIL_OPENSSL_ENGINE_CONF" openssl "$@"; }
tm_o() { "$TM" --socket "$sock" sign --signer alice@example.com "$msg" -o "$tmp/o.eml"; }
tm_stdout() { "$TM" --socket "$sock" sign --signer alice@example.com "$msg" >"$tmp/s.eml"; }
tm_nocache() { TOKENMAIL_NO_SIGNER_CACHE=1 "$TM" --socket "$sock" sign --signer alice@example.com "$msg" -o "$tmp/n.eml"; }
tm_version() { "$TM" --version >/dev/null; }
ossl() {
  ossl_engine cms -sign -in "$msg" -signer "$PKI/alice-rsa.pem" -engine pkcs11 -keyform engine \
    -inkey "$URI" -out "$tmp/ossl.eml"
}

# Untimed: fill the cache, check every output once.
tm_o; tm_stdout; tm_nocache; ossl 2>/dev/null
for f in o s n; do
  "$TM" verify --trust "$PKI/root.pem" "$tmp/$f.eml" >/dev/null \
    || { echo "$PROG: tokenmail's signature ($f) does not verify" >&2; exit 1; }
done
openssl cms -verify -CAfile "$PKI/chain.pem" -in "$tmp/ossl.eml" -out /dev/null 2>/dev/null \
  || { echo "$PROG: openssl's signature does not verify" >&2; exit 1; }

# Timing: N processes per tool and round, tools alternating, in Python (wall time, and
# CPU time of the processes from getrusage, plus the agent's from /proc: CPU time is much
# less moved by other load on the machine than wall time).
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
export TM sock msg tmp PKI URI N ROUNDS agent_pid BENCH
python3 - <<'PY' >"$tmp/table"
import json, os, resource, statistics, subprocess, time
e = os.environ
tm, sock, msg, tmp, n, rounds = e["TM"], e["sock"], e["msg"], e["tmp"], int(e["N"]), int(e["ROUNDS"])
ossl_env = dict(e, OPENSSL_CONF=e["TOKENMAIL_OPENSSL_ENGINE_CONF"])
nocache_env = dict(e, TOKENMAIL_NO_SIGNER_CACHE="1")
sign = [tm, "--socket", sock, "sign", "--signer", "alice@example.com", msg]
tools = [
    ("version", "· process start (tokenmail --version)", [tm, "--version"], None, None, False),
    ("o", "tokenmail sign -o FILE (fsync + rename)", sign + ["-o", tmp + "/o.eml"], None, None, True),
    ("stdout", "tokenmail sign > FILE (standard output)", sign, tmp + "/s.eml", None, True),
    ("nocache", "tokenmail sign -o FILE, signer cache off (status path)", sign + ["-o", tmp + "/n.eml"], None, nocache_env, True),
    ("ossl", "openssl cms -sign (pkcs11 engine) -out FILE",
     ["openssl", "cms", "-sign", "-in", msg, "-signer", e["PKI"] + "/alice-rsa.pem", "-engine", "pkcs11",
      "-keyform", "engine", "-inkey", e["URI"], "-out", tmp + "/ossl.eml"], None, ossl_env, False),
]
def agent_cpu():
    # Sum over the agent's threads of their run time (ns, /proc/PID/task/TID/schedstat):
    # /proc/PID/stat counts in 10 ms ticks, too coarse for ~1 ms per message. A thread
    # that exits between two readings takes its time with it (tokio keeps idle threads
    # for 10 s, longer than a round).
    total = 0
    d = "/proc/%s/task" % e["agent_pid"]
    for t in os.listdir(d):
        try:
            total += int(open("%s/%s/schedstat" % (d, t)).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9
def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
wall = {t[0]: [] for t in tools}
cpu = {t[0]: 0.0 for t in tools}
agent = {t[0]: 0.0 for t in tools}
csign, csign_cpu = [], []
null = open(os.devnull, "wb")
for r in range(rounds):
    for key, _, argv, out, env, _ in tools:
        c0, a0, t0 = children_cpu(), agent_cpu(), time.perf_counter()
        for _ in range(n):
            if out:
                with open(out, "wb") as so:
                    subprocess.run(argv, stdout=so, stderr=null, env=env, check=True)
            else:
                subprocess.run(argv, stdout=null, stderr=null, env=env, check=True)
        wall[key].append((time.perf_counter() - t0) * 1000 / n)
        cpu[key] += children_cpu() - c0
        agent[key] += agent_cpu() - a0
    j = json.loads(subprocess.run([e["BENCH"], "sign-digest", "--socket", sock, "--only", "raw", "--keys", "alice-rsa",
        "--concurrency", "1", "--seconds", "1", "--rounds", "1", "--json"], capture_output=True, check=True).stdout)
    raw = j["results"][0]["raw"]
    csign.append(raw["mean_latency_us"] / 1000)
    csign_cpu.append(raw["cpu_us_per_op"] / 1000)
med = {k: statistics.median(v) for k, v in wall.items()}
cpu_ms = {k: cpu[k] * 1000 / (n * rounds) for k in cpu}
agent_ms = {k: agent[k] * 1000 / (n * rounds) for k in agent}
floor = med["version"] + statistics.median(csign)
floor_cpu = cpu_ms["version"] + statistics.median(csign_cpu)
rng = lambda v: "%.2f-%.2f" % (min(v), max(v))
print("| what | ms per message, median round | rounds (min-max) | ÷ floor | openssl ÷ this | CPU ms per message (+ agent) | CPU ÷ floor CPU |")
print("|---|--:|--:|--:|--:|--:|--:|")
print("| floor: process start + one raw C_Sign | %.2f | | 1.00 | %.1f× | %.2f | 1.00 |" % (floor, med["ossl"] / floor, floor_cpu))
print("| · process start (tokenmail --version) | %.2f | %s | | | %.2f | |" % (med["version"], rng(wall["version"]), cpu_ms["version"]))
print("| · raw C_Sign, RSA-2048 (tokenmail-bench, 1 thread) | %.2f | %s | | | %.2f | |" % (statistics.median(csign), rng(csign), statistics.median(csign_cpu)))
for key, name, _, _, _, uses_agent in tools[1:]:
    total = cpu_ms[key] + agent_ms[key]
    cpu_s = "%.2f (%.2f + %.2f)" % (total, cpu_ms[key], agent_ms[key]) if uses_agent else "%.2f" % total
    print("| %s | %.2f | %s | %.2f | %.1f× | %s | %.2f |" % (name, med[key], rng(wall[key]), med[key] / floor, med["ossl"] / med[key], cpu_s, total / floor_cpu))
PY
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "date      : $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine   : nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
echo "load      : $load_before before, $load_after after (1/5/15 min)"
echo "tools     : $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version)"
echo "binary    : $TM; agent $AGENT"
echo "message   : $(wc -c <"$msg") bytes text/plain; signer alice@example.com (alice-rsa, RSA-2048)"
echo "method    : $N processes per tool per round, $ROUNDS rounds, tools alternate; wall: median round"
echo "            (range of rounds); CPU: all rounds, the process (+ the agent's threads)"
echo
cat "$tmp/table"
