#!/usr/bin/env bash
# Agent overhead benchmark: sign-digest through tokenmail-agent vs raw PKCS#11.
#
#   bench/run.sh [tokenmail-bench sign-digest options...]
#     e.g. bench/run.sh --seconds 5 --probes
#          bench/run.sh --json > result.json
#   TOKENMAIL_BENCH_NO_BUILD=1 bench/run.sh   # reuse target/release binaries
#
# Builds release, provisions a private SoftHSM token in a temporary directory
# (never the system's tokens), starts the agent on a private socket, runs
# `tokenmail-bench sign-digest`, stops the agent and prints the figures.
# A benchmark, not a test: no thresholds, only figures and ratios.
set -euo pipefail

PROG=run.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

# TOKENMAIL_BENCH_NO_BUILD=1 reuses the binaries already in target/release.
if [ "${TOKENMAIL_BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p tokenmail-agent -p tokenmail-bench >&2
fi
for b in tokenmail-agent tokenmail-bench; do
  [ -x "target/release/$b" ] || { echo "$PROG: target/release/$b missing (build failed?)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokenmail-bench.XXXXXX")
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash softhsm/provision.sh "$tmp" >&2
# shellcheck disable=SC1091
. "$tmp/env"
export SOFTHSM2_CONF   # the agent and the bench both use the private token only

sock="$tmp/s"
target/release/tokenmail-agent --foreground --socket "$sock" \
  --pkcs11-module "$TOKENMAIL_PKCS11_MODULE" --token-label "$TOKENMAIL_TOKEN_LABEL" \
  --pin-file "$TOKENMAIL_PIN_FILE" 2>"$tmp/agent.log" &
agent_pid=$!

for _ in $(seq 1 100); do
  [ -S "$sock" ] && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$tmp/agent.log" >&2; echo "$PROG: the agent exited" >&2; exit 1; }
  sleep 0.1
done
[ -S "$sock" ] || { cat "$tmp/agent.log" >&2; echo "$PROG: no socket at $sock after 10 s" >&2; exit 1; }

json=0
for arg in "$@"; do [ "$arg" = --json ] && json=1; done

if [ "$json" -eq 0 ]; then
  echo "date      : $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "nproc     : $(nproc)"
  echo "cpu       : $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "softhsm   : $(softhsm2-util --version 2>/dev/null || echo unknown)"
  echo "module    : $TOKENMAIL_PKCS11_MODULE"
  echo
fi

status=0
target/release/tokenmail-bench sign-digest --socket "$sock" \
  --module "$TOKENMAIL_PKCS11_MODULE" --token-label "$TOKENMAIL_TOKEN_LABEL" \
  --pin-file "$TOKENMAIL_PIN_FILE" --agent-pid "$agent_pid" "$@" || status=$?

kill -TERM "$agent_pid" 2>/dev/null || true
wait "$agent_pid" 2>/dev/null || true
agent_pid=""
if [ "$status" -ne 0 ]; then
  echo "$PROG: the benchmark failed (agent log follows)" >&2
  tail -n 20 "$tmp/agent.log" >&2
fi
exit "$status"
