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

per_msg() { # FN -> ms per process over N runs
  local s e
  s=$(date +%s%N)
  for _ in $(seq 1 "$N"); do "$1" >/dev/null 2>&1 || { echo "$PROG: $1 failed" >&2; exit 1; }; done
  e=$(date +%s%N)
  awk -v s="$s" -v e="$e" -v n="$N" 'BEGIN{printf "%.3f", (e - s) / 1e6 / n}'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tools=(tm_version tm_o tm_stdout tm_nocache ossl)
for t in "${tools[@]}"; do : >"$tmp/$t.rounds"; done
: >"$tmp/csign.rounds"
for r in $(seq 1 "$ROUNDS"); do
  echo "$PROG: round $r/$ROUNDS" >&2
  for t in "${tools[@]}"; do per_msg "$t" >>"$tmp/$t.rounds"; echo >>"$tmp/$t.rounds"; done
  # One raw C_Sign (RSA-2048, PKCS#1 v1.5 over a SHA-256 DigestInfo), single thread.
  "$BENCH" sign-digest --socket "$sock" --only raw --keys alice-rsa --concurrency 1 \
    --seconds 1 --rounds 1 --json 2>/dev/null \
    | python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["results"][0]["raw"]["mean_latency_us"] / 1000))' \
    >>"$tmp/csign.rounds"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

median() { sort -n "$1" | awk 'NF{v[++n]=$1} END{print v[int((n+1)/2)]}'; }
range() { sort -n "$1" | awk 'NF{v[++n]=$1} END{printf "%s-%s", v[1], v[n]}'; }
v=$(median "$tmp/tm_version.rounds"); c=$(median "$tmp/csign.rounds")
floor=$(awk -v a="$v" -v b="$c" 'BEGIN{printf "%.3f", a + b}')
ossl_ms=$(median "$tmp/ossl.rounds")

echo "date      : $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine   : nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
echo "load      : $load_before before, $load_after after (1/5/15 min)"
echo "tools     : $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version)"
echo "binary    : $TM; agent $AGENT"
echo "message   : $(wc -c <"$msg") bytes text/plain; signer alice@example.com (alice-rsa, RSA-2048)"
echo "method    : $N processes per tool per round, $ROUNDS rounds, tools alternate; median round (range)"
echo
echo "| what | ms per message | rounds | ÷ floor | openssl ÷ this |"
echo "|---|--:|--:|--:|--:|"
echo "| floor: process start + one raw C_Sign | $floor | | 1.00 | $(awk -v o="$ossl_ms" -v f="$floor" 'BEGIN{printf "%.1f", o / f}') |"
echo "| · process start (tokenmail --version) | $v | $(range "$tmp/tm_version.rounds") | | |"
echo "| · raw C_Sign, RSA-2048 (tokenmail-bench) | $c | $(range "$tmp/csign.rounds") | | |"
for t in tm_o tm_stdout tm_nocache ossl; do
  case $t in
    tm_o) name="tokenmail sign -o FILE (fsync + rename)" ;;
    tm_stdout) name="tokenmail sign > FILE (standard output)" ;;
    tm_nocache) name="tokenmail sign -o FILE, signer cache off (status path)" ;;
    ossl) name="openssl cms -sign (pkcs11 engine) -out FILE" ;;
  esac
  m=$(median "$tmp/$t.rounds")
  awk -v n="$name" -v m="$m" -v rg="$(range "$tmp/$t.rounds")" -v f="$floor" -v o="$ossl_ms" \
    'BEGIN{printf "| %s | %.3f | %s | %.2f | %.1f× |\n", n, m, rg, m / f, o / m}'
done
