#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/, libFuzzer) for SECONDS each (default 60), one after
# the other, and prints each one's final figures. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly
#   cargo install cargo-fuzz --locked
# CI does not run this (it runs the stable replay: cargo test -p fuzz-targets). What a run
# finds goes to fuzz/artifacts/<target>/ (a reproducer: cargo +nightly fuzz run <target> FILE);
# new inputs go to target/fuzz-corpus/<target>/, not into the committed fuzz/corpus.
# See docs/reliability.md, "Fuzzing".
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds="${1:-60}"
case "$seconds" in
    ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS per target]" >&2; exit 2 ;;
esac
targets=(frame request signed_data enveloped decrypt_stream mime pem from_header verify crl ocsp path_checks)
# one target: TOKENMAIL_FUZZ_TARGETS="crl ocsp" scripts/fuzz.sh 120
if [ -n "${TOKENMAIL_FUZZ_TARGETS:-}" ]; then read -r -a targets <<< "$TOKENMAIL_FUZZ_TARGETS"; fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: no nightly toolchain; install one with" >&2
    echo "    rustup toolchain install nightly" >&2
    echo "(the stable replay of the corpus is: cargo test -p fuzz-targets)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: cargo-fuzz is not installed; install it with" >&2
    echo "    cargo install cargo-fuzz --locked" >&2
    echo "(the stable replay of the corpus is: cargo test -p fuzz-targets)" >&2
    exit 1
fi

cd "$here/fuzz"
work="${CARGO_TARGET_DIR:-$here/target}/fuzz-corpus"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "artifacts/$t"
    echo "==> $t: ${seconds} s"
    log="$work/$t.log"
    # mime: libFuzzer would otherwise grow inputs to the largest seed (the 270 KB part
    # header) and run at a few dozen inputs a second; the stable replay runs that seed whole
    extra=()
    [ "$t" = mime ] && extra=(-max_len=16384)
    if cargo +nightly fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "${extra[@]}" \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        # "#N DONE cov: ... ft: ... corp: ..." and "Done N runs in S second(s)"
        grep -E '(DONE|^Done) ' "$log" | sed 's/^/    /' || true
    else
        failed+=("$t")
        echo "    FAILED: see $log and fuzz/artifacts/$t/" >&2
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -n 5 >&2 || true
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "findings in: ${failed[*]}" >&2
    exit 1
fi
echo "no findings"
