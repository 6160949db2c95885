#!/usr/bin/env bash
# Installs what tokenmail needs to build, demo and test on Debian (as root), and checks
# for the Rust toolchain. Idempotent and quiet when everything is there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/softhsm/install-deps.sh"
if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
    if [ -x "$c" ]; then export PATH="$(dirname "$c"):$PATH"; break; fi
  done
fi
command -v cargo >/dev/null 2>&1 || {
  echo "deps.sh: cargo not found: install Rust >= 1.85 (https://rustup.rs), then run this again" >&2
  exit 1
}
