#!/usr/bin/env bash
# Supply-chain checks of the dependency graph (Cargo.lock), run by scripts/test.sh:
#
#   licenses  every crate's licence is on the list in deny.toml
#   bans      no RustCrypto crate in two generations (der, x509-cert, rsa, … would not
#             interoperate), no OpenSSL bindings, no wildcard versions
#   sources   crates.io only (no git or unknown registries)
#   advisories  the RustSec database: fetched when the network allows; else a local clone
#             named by TOKENMAIL_ADVISORY_DB; else skipped, and said so
#   pinned    the release candidates pinned with `=` in Cargo.toml, against the newest
#             versions on crates.io (information: what to re-evaluate, never a failure)
#
#   scripts/supply-chain.sh                       # all of the above
#   TOKENMAIL_ADVISORY_DB=~/advisory-db scripts/supply-chain.sh
#
# cargo-deny comes from $PATH, else target/tools/bin, else it is built there from crates.io
# (`cargo install --locked`, a few minutes once). Why each rule: docs/dependencies.md.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
DENY_VERSION=0.20.2
PROG=supply-chain.sh

deny=""
if command -v cargo-deny >/dev/null 2>&1 && cargo-deny --version 2>/dev/null | grep -q "^cargo-deny "; then
  deny=$(command -v cargo-deny)
elif [ -x target/tools/bin/cargo-deny ]; then
  deny=$here/target/tools/bin/cargo-deny
else
  echo "$PROG: building cargo-deny $DENY_VERSION from crates.io into target/tools (once)"
  CARGO_TARGET_DIR=$here/target/tools-build timeout 1800 \
    cargo install --quiet --locked --root "$here/target/tools" "cargo-deny@$DENY_VERSION"
  rm -rf "$here/target/tools-build"
  deny=$here/target/tools/bin/cargo-deny
fi
echo "$PROG: $("$deny" --version)"

# licenses, bans, sources: need only Cargo.lock and the registry's index
timeout 600 "$deny" deny --log-level error check --hide-inclusion-graph licenses bans sources

# advisories
adv_log=$(mktemp)
tmp_db=""
cleanup() { rm -f "$adv_log"; [ -z "$tmp_db" ] || rm -rf "$tmp_db"; }
trap cleanup EXIT
if [ -n "${TOKENMAIL_ADVISORY_DB:-}" ]; then
  [ -d "$TOKENMAIL_ADVISORY_DB/crates" ] || {
    echo "$PROG: TOKENMAIL_ADVISORY_DB=$TOKENMAIL_ADVISORY_DB is not a clone of RustSec/advisory-db (no crates/ directory)" >&2
    exit 1
  }
  # cargo-deny keeps the database under db-path, in a directory named after its URL
  tmp_db=$(mktemp -d)
  cp -a "$TOKENMAIL_ADVISORY_DB" "$tmp_db/advisory-db-3157b0e258782691"
  sed "s|^\[advisories\]|[advisories]\ndb-path = \"$tmp_db\"|" deny.toml > "$tmp_db/deny.toml"
  when=$(git -C "$TOKENMAIL_ADVISORY_DB" log -1 --format=%cs 2>/dev/null || echo "unknown date")
  echo "$PROG: advisories from the local database $TOKENMAIL_ADVISORY_DB ($when)"
  timeout 600 "$deny" deny --offline --log-level error --config "$tmp_db/deny.toml" \
    check --hide-inclusion-graph advisories
elif timeout 300 "$deny" deny --log-level error check --hide-inclusion-graph advisories 2> "$adv_log"; then
  echo "$PROG: advisories ok (RustSec database fetched now)"
elif grep -q "failed to fetch advisory database" "$adv_log"; then
  echo "$PROG: advisories SKIPPED: the RustSec database cannot be fetched from here (no network to github.com);"
  echo "$PROG:   set TOKENMAIL_ADVISORY_DB to a clone of https://github.com/RustSec/advisory-db to check offline"
else
  cat "$adv_log" >&2
  exit 1
fi

# pinned release candidates: newest versions on crates.io (sparse index), information only
index_path() {
  local n=$1
  case ${#n} in
    1) echo "1/$n" ;;
    2) echo "2/$n" ;;
    3) echo "3/${n:0:1}/$n" ;;
    *) echo "${n:0:2}/${n:2:2}/$n" ;;
  esac
}
sed -nE 's/^([a-z0-9_-]+) = (\{ version = )?"=([^"]+)".*/\1 \3/p' Cargo.toml |
  while read -r name pinned; do
    newest=$(timeout 20 curl -fsS "https://index.crates.io/$(index_path "$name")" 2>/dev/null |
      python3 -c 'import sys, json; v=[json.loads(l) for l in sys.stdin if l.strip()]; print(v[-1]["vers"] if v else "")' 2>/dev/null || true)
    if [ -z "$newest" ]; then
      echo "$PROG: pinned $name =$pinned (crates.io index not reachable)"
    elif [ "$newest" = "$pinned" ]; then
      echo "$PROG: pinned $name =$pinned (the newest release)"
    else
      echo "$PROG: pinned $name =$pinned; crates.io has $newest: see docs/dependencies.md before moving"
    fi
  done
echo "$PROG: ok"
