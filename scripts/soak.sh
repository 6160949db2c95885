#!/usr/bin/env bash
# Soak and fault run (issue 11 item 16), one command:
#
#   scripts/soak.sh [--minutes N] [--clients 64] [--short] [--json] [--json-file FILE]
#                   [--release|--debug]
#     scripts/soak.sh --minutes 5 --clients 64     # the full run (release build)
#     scripts/soak.sh --short                      # the CI variant (~30-40 s, debug build)
#   TOKENMAIL_SOAK_NO_BUILD=1 scripts/soak.sh ...  # reuse the binaries already built
#
# Builds, provisions a private SoftHSM token in a temporary directory (its own
# SOFTHSM2_CONF and token directory: never the system's tokens) and runs
# `tokenmail-bench soak` (bench/src/soak.rs), which starts the agent on a private socket,
# drives N mixed clients (sign, decrypt, verify, status) with the fault phases (token
# removed and restored, slow and never-reading clients, agent killed mid-request and
# restarted), stops everything and prints the figures. Cleans up on exit. Every external
# program runs under `timeout`. Figures: docs/reliability.md, "Soak and faults".
set -euo pipefail

PROG=soak.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmdline="scripts/soak.sh $*"
minutes=""
clients=64
short=0
json=0
json_file=""
profile=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) [ $# -ge 2 ] || usage; minutes="$2"; shift 2 ;;
    --minutes=*) minutes="${1#--minutes=}"; shift ;;
    --clients) [ $# -ge 2 ] || usage; clients="$2"; shift 2 ;;
    --clients=*) clients="${1#--clients=}"; shift ;;
    --short) short=1; shift ;;
    --json) json=1; shift ;;
    --json-file) [ $# -ge 2 ] || usage; json_file="$2"; shift 2 ;;
    --release) profile=release; shift ;;
    --debug) profile=debug; shift ;;
    -h|--help) usage ;;
    *) echo "$PROG: unknown argument: $1" >&2; usage ;;
  esac
done
case "$clients" in ''|*[!0-9]*) echo "$PROG: --clients must be a number" >&2; exit 2 ;; esac
if [ -n "$minutes" ]; then
  case "$minutes" in ''|*[!0-9.]*) echo "$PROG: --minutes must be a number" >&2; exit 2 ;; esac
fi
[ "$short" -eq 1 ] || [ -n "$minutes" ] || minutes=5
# The full run is measured in release; the CI variant uses the debug build CI has anyway.
[ -n "$profile" ] || { [ "$short" -eq 1 ] && profile=debug || profile=release; }

if [ "${TOKENMAIL_SOAK_NO_BUILD:-0}" != 1 ]; then
  flag=(); [ "$profile" = release ] && flag=(--release)
  timeout 3600 cargo build "${flag[@]}" --locked -p tokenmail-agent -p tokenmail-cli -p tokenmail-bench >&2
fi
bin="${CARGO_TARGET_DIR:-$ROOT/target}/$profile"
for b in tokenmail-agent tokenmail tokenmail-bench; do
  [ -x "$bin/$b" ] || { echo "$PROG: $bin/$b missing (build failed?)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokenmail-soak.XXXXXX")
cleanup() {
  # An agent the driver left behind (the driver killed by the timeout): only ours.
  if [ -f "$tmp/work/agent.pid" ]; then
    pid=$(cat "$tmp/work/agent.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$tmp/work/run/agent.sock"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

timeout 300 bash softhsm/provision.sh "$tmp/token" --label tokenmail-soak >&2
# shellcheck disable=SC1091
. "$tmp/token/env"
export SOFTHSM2_CONF   # the agent, softhsm2-util and the driver use the private token only

args=(--agent "$bin/tokenmail-agent" --cli "$bin/tokenmail" --work "$tmp/work" --clients "$clients")
[ "$short" -eq 1 ] && args+=(--short)
[ -n "$minutes" ] && args+=(--minutes "$minutes")
[ "$json" -eq 1 ] && args+=(--json)
[ -n "$json_file" ] && args+=(--json-file "$json_file")

# The driver's own limit: the load, plus preparation, phases and shutdown.
if [ -n "$minutes" ]; then
  limit=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 * 1.5 + 600 }')
else
  limit=600
fi

if [ "$json" -eq 0 ]; then
  echo "date      : $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command   : $cmdline"
  echo "build     : $profile"
  echo "nproc     : $(nproc)"
  echo "cpu       : $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "softhsm   : $(timeout 10 softhsm2-util --version 2>/dev/null || echo unknown)"
  echo
fi

status=0
timeout --kill-after=10 "$limit" "$bin/tokenmail-bench" soak "${args[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "$PROG: the soak failed (status $status); agent logs follow" >&2
  for l in "$tmp"/work/agent-*.log; do
    [ -f "$l" ] && { echo "--- $l" >&2; tail -n 20 "$l" >&2; }
  done
fi
exit "$status"
