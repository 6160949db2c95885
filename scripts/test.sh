#!/usr/bin/env bash
# The whole test suite: lint, build, unit + conformance + end-to-end + interop tests.
# Real components only: SoftHSM (private token dirs), openssl, python3. Run as root on a
# fresh Debian machine, it installs what it needs first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
. scripts/deps.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "format"
cargo fmt --all -- --check
step "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "supply chain (cargo deny: licenses, one RustCrypto generation, sources, advisories)"
bash scripts/supply-chain.sh
step "agent without PIV support still builds (--no-default-features: PKCS#11 only)"
cargo check -p tokenmail-agent --no-default-features --locked
step "build"
cargo build --workspace --locked
: > target/test-output.txt
step "virtual PIV card against independent peers (yubico-piv-tool, OpenSC pkcs11-tool)"
bash tests/vpiv/selftest.sh 2>&1 | tee target/vpiv-selftest.txt
step "tests"
# Agents the tests start keep their state (the audit log) under target/, never in $HOME.
export XDG_STATE_HOME="$here/target/test-state"
mkdir -p "$XDG_STATE_HOME"
# --no-fail-fast: every test binary runs, so one failure cannot hide the others. The
# pipeline's status (pipefail: cargo's) is kept for the end instead of stopping here.
# Each external program a test runs has a deadline: TOKENMAIL_TEST_TIMEOUT seconds (60).
tests_rc=0
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 \
    | tee -a target/test-output.txt || tests_rc=$?
passed=$({ grep -Eo '[0-9]+ passed' target/test-output.txt || true; } | awk '{s+=$1} END {print s+0}')
failed=$({ grep -Eo '[0-9]+ failed' target/test-output.txt || true; } | awk '{s+=$1} END {print s+0}')
step "done in $(( $(date +%s) - start )) s"
echo "${passed} passed, ${failed} failed"
if [ "$tests_rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    echo "cargo test failed (exit status ${tests_rc})" >&2
    exit $(( tests_rc != 0 ? tests_rc : 1 ))
fi
