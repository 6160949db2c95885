#!/usr/bin/env bash
# S/MIME throughput benchmark: tokenmail sign/verify/encrypt/decrypt of one big message
# against openssl cms (pkcs11 engine on the same SoftHSM key) and gpgsm, plus the
# per-message latency of signing a small message.
#
#   bench/smime.sh [--size MIB] [--runs N] [--small N] [--keep]
#     --size MIB   size of the big message (default 256)
#     --runs N     runs of each big-message command; the median is shown (default 3)
#     --small N    small-message signatures per tool (default 50)
#     --keep       keep the scratch directory (its path is printed)
#   TOKENMAIL_BENCH_NO_BUILD=1 bench/smime.sh   # reuse target/release binaries
#   TOKENMAIL_BENCH_TM=/path/to/tokenmail bench/smime.sh   # time another tokenmail binary
#                                               # (e.g. an older build, for before/after)
#   TMPDIR=/some/dir bench/smime.sh             # where the scratch directory goes
#                                               # (default: target/, i.e. the repository's disk)
#
# Builds release, provisions a private SoftHSM token (softhsm/provision.sh) in a scratch
# directory, starts tokenmail-agent on a private socket, writes the message (From:
# alice@example.com, text/plain, CRLF lines of ASCII), then times every command with
# /usr/bin/time (wall seconds, max RSS) and prints one table. Outputs are checked (signatures
# valid, decryption byte-identical) so a fast wrong answer cannot pass unnoticed.
# A benchmark, not a test: no thresholds, only figures and ratios (ratio = other / tokenmail,
# so > 1 means tokenmail is faster).
set -euo pipefail

PROG=smime.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

SIZE_MIB=256
RUNS=3
SMALL_N=50
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE_MIB="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --small) SMALL_N="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "$PROG: unknown argument $1" >&2; exit 2 ;;
  esac
done

for t in openssl softhsm2-util python3 /usr/bin/time; do
  command -v "$t" >/dev/null 2>&1 || { echo "$PROG: '$t' not found (softhsm/install-deps.sh; apt-get install time)" >&2; exit 1; }
done
HAVE_GPGSM=0
command -v gpgsm >/dev/null 2>&1 && HAVE_GPGSM=1

if [ "${TOKENMAIL_BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p tokenmail-cli -p tokenmail-agent >&2
fi
TM="${TOKENMAIL_BENCH_TM:-$ROOT/target/release/tokenmail}"
AGENT="$ROOT/target/release/tokenmail-agent"
for b in "$TM" "$AGENT"; do
  [ -x "$b" ] || { echo "$PROG: $b missing (build failed?)" >&2; exit 1; }
done

mkdir -p "${TMPDIR:-$ROOT/target}"
tmp=$(mktemp -d "${TMPDIR:-$ROOT/target}/smime-bench.XXXXXX")
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  if [ -d "$tmp/gnupg" ]; then
    GNUPGHOME="$tmp/gnupg" gpgconf --kill gpg-agent >/dev/null 2>&1 || true
  fi
  if [ "$KEEP" -eq 1 ]; then
    echo "$PROG: kept $tmp" >&2
  else
    rm -rf -- "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash softhsm/provision.sh "$tmp/tok" >/dev/null
# shellcheck disable=SC1091
. "$tmp/tok/env"
export SOFTHSM2_CONF
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

# ---------------------------------------------------------------- the messages
big="$tmp/big.eml"
python3 - "$big" "$SIZE_MIB" <<'EOF'
import sys
path, mib = sys.argv[1], int(sys.argv[2])
hdr = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: benchmark\r\n"
       b"Content-Type: text/plain\r\n\r\n")
line = b"The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmn\r\n"
target = mib << 20
with open(path, "wb") as f:
    f.write(hdr)
    left = (target - len(hdr)) // len(line)
    block = line * 10000
    while left >= 10000:
        f.write(block)
        left -= 10000
    f.write(line * left)
EOF
small="$tmp/small.eml"
printf 'From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nA short message.\r\n' >"$small"

# ---------------------------------------------------------------- timing helpers
# [OUT=FILE] measure NAME CMD...: runs CMD $RUNS times (stdout to $tmp/NAME.out), records
# "wall_s max_rss_kb" per run; sets M_WALL (median wall), M_MIN and M_RSS (max RSS, KiB).
# OUT is deleted before each run (untimed), so no run pays for freeing the previous output.
measure() {
  local name="$1"; shift
  : >"$tmp/$name.times"
  local i
  for i in $(seq 1 "$RUNS"); do
    if [ -n "${OUT:-}" ]; then rm -f -- "$OUT"; sync; fi
    if ! /usr/bin/time -f "%e %M" -o "$tmp/$name.t" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"; then
      echo "$PROG: $name failed:" >&2
      tail -n 5 "$tmp/$name.err" >&2
      exit 1
    fi
    cat "$tmp/$name.t" >>"$tmp/$name.times"
  done
  M_WALL=$(sort -n "$tmp/$name.times" | awk '{w[NR]=$1} END{print w[int((NR+1)/2)]}')
  M_MIN=$(sort -n "$tmp/$name.times" | awk 'NR==1{print $1}')
  M_RSS=$(awk 'BEGIN{m=0} $2>m{m=$2} END{print m}' "$tmp/$name.times")
}

rows=()
# row LABEL TM_WALL TM_MIN TM_RSS OTHER_NAME OTHER_WALL OTHER_MIN OTHER_RSS
row() {
  rows+=("$(awk -v l="$1" -v tw="$2" -v tn="$3" -v tr="$4" -v on="$5" -v ow="$6" -v omn="$7" -v orr="$8" 'BEGIN{
    ratio = (tw > 0) ? ow / tw : 0;
    printf "| %s | %.2f (%.2f) | %.1f | %s | %.2f (%.2f) | %.1f | %.1f× |", l, tw, tn, tr/1024, on, ow, omn, orr/1024, ratio }')")
}

ossl_engine() { OPENSSL_CONF="$TOKENMAIL_OPENSSL_ENGINE_CONF" openssl "$@"; }

echo "date      : $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine   : nproc $(nproc), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "cpu flags : $(grep -m1 -o -w -E 'sha_ni|aes|vaes|pclmulqdq|vpclmulqdq|avx2|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load      : $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
echo "tools     : $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version), $( [ $HAVE_GPGSM -eq 1 ] && gpgsm --version | head -n1 || echo 'no gpgsm')"
echo "message   : $SIZE_MIB MiB text/plain, CRLF, 7-bit; $RUNS runs each (median; min in parentheses)"
echo "binary    : $TM"
echo "scratch   : $tmp"
echo

# ---------------------------------------------------------------- sign
OUT="$tmp/signed.eml" measure tm_sign "$TM" --socket "$sock" sign --signer alice-rsa "$big" -o "$tmp/signed.eml"
t=("$M_WALL" "$M_MIN" "$M_RSS")
OUT="$tmp/ossl-signed.eml" measure ossl_sign env OPENSSL_CONF="$TOKENMAIL_OPENSSL_ENGINE_CONF" openssl cms -sign -stream \
  -in "$big" -signer "$PKI/alice-rsa.pem" -engine pkcs11 -keyform engine -inkey "$URI" \
  -out "$tmp/ossl-signed.eml"
row "sign $SIZE_MIB MiB (multipart/signed)" "${t[@]}" "openssl cms -sign -stream (pkcs11)" "$M_WALL" "$M_MIN" "$M_RSS"

# ---------------------------------------------------------------- verify
measure tm_verify "$TM" verify --trust "$PKI/root.pem" "$tmp/signed.eml"
grep -q '^signature valid' "$tmp/tm_verify.out" || { echo "$PROG: tokenmail verify: not valid" >&2; exit 1; }
t=("$M_WALL" "$M_MIN" "$M_RSS")
measure ossl_verify openssl cms -verify -in "$tmp/signed.eml" -CAfile "$PKI/root.pem" -out /dev/null
row "verify $SIZE_MIB MiB multipart/signed" "${t[@]}" "openssl cms -verify" "$M_WALL" "$M_MIN" "$M_RSS"
OUT="$tmp/verified.eml" measure tm_verify_o "$TM" verify --trust "$PKI/root.pem" "$tmp/signed.eml" -o "$tmp/verified.eml"
t=("$M_WALL" "$M_MIN" "$M_RSS")
OUT="$tmp/ossl-verified.eml" measure ossl_verify_o openssl cms -verify -in "$tmp/signed.eml" -CAfile "$PKI/root.pem" -out "$tmp/ossl-verified.eml"
row "verify $SIZE_MIB MiB, content to -o" "${t[@]}" "openssl cms -verify -out FILE" "$M_WALL" "$M_MIN" "$M_RSS"

if [ "$HAVE_GPGSM" -eq 1 ]; then
  # a detached signature over the exact bytes, checked by both
  "$TM" --socket "$sock" sign --signer alice-rsa --detached-der "$big" -o "$tmp/big.p7s"
  export GNUPGHOME="$tmp/gnupg"
  mkdir -m 700 "$GNUPGHOME"
  gpgsm --batch --import "$PKI/root.pem" "$PKI/intermediate.pem" >/dev/null 2>&1
  fp=$(openssl x509 -noout -fingerprint -sha1 -in "$PKI/root.pem" | cut -d= -f2)
  echo "$fp S relax" >"$GNUPGHOME/trustlist.txt"
  measure tm_verify_det "$TM" verify --trust "$PKI/root.pem" --signature "$tmp/big.p7s" "$big"
  grep -q '^signature valid' "$tmp/tm_verify_det.out" || { echo "$PROG: tokenmail verify --signature: not valid" >&2; exit 1; }
  t=("$M_WALL" "$M_MIN" "$M_RSS")
  measure gpgsm_verify gpgsm --batch --disable-crl-checks --status-fd 1 --verify "$tmp/big.p7s" "$big"
  grep -q GOODSIG "$tmp/gpgsm_verify.out" || { echo "$PROG: gpgsm did not report GOODSIG" >&2; exit 1; }
  row "verify $SIZE_MIB MiB, detached signature" "${t[@]}" "gpgsm --verify" "$M_WALL" "$M_MIN" "$M_RSS"
fi

# ---------------------------------------------------------------- encrypt
OUT="$tmp/enc.eml" measure tm_encrypt "$TM" encrypt --recipient-cert "$PKI/alice-rsa.pem" "$big" -o "$tmp/enc.eml"
t=("$M_WALL" "$M_MIN" "$M_RSS")
OUT="$tmp/ossl-enc.eml" measure ossl_encrypt openssl cms -encrypt -stream -aes-256-gcm -in "$big" -out "$tmp/ossl-enc.eml" "$PKI/alice-rsa.pem"
row "encrypt $SIZE_MIB MiB (AES-256-GCM)" "${t[@]}" "openssl cms -encrypt -stream -aes-256-gcm" "$M_WALL" "$M_MIN" "$M_RSS"

# ---------------------------------------------------------------- decrypt (key on the token)
OUT="$tmp/dec.eml" measure tm_decrypt "$TM" --socket "$sock" decrypt "$tmp/enc.eml" -o "$tmp/dec.eml"
cmp -s "$tmp/dec.eml" "$big" || { echo "$PROG: tokenmail decrypt output differs from the message" >&2; exit 1; }
t=("$M_WALL" "$M_MIN" "$M_RSS")
OUT="$tmp/ossl-dec.eml" measure ossl_decrypt env OPENSSL_CONF="$TOKENMAIL_OPENSSL_ENGINE_CONF" openssl cms -decrypt \
  -engine pkcs11 -keyform engine -inkey "$URI" -recip "$PKI/alice-rsa.pem" \
  -in "$tmp/enc.eml" -out "$tmp/ossl-dec.eml"
# openssl writes the decrypted entity only (no From/To/Subject): compare with that
outer=$(head -n 3 "$big" | wc -c)
cmp -s <(tail -c +$((outer + 1)) "$big") "$tmp/ossl-dec.eml" || { echo "$PROG: openssl's decryption differs from the entity" >&2; exit 1; }
row "decrypt $SIZE_MIB MiB (RSA-OAEP on SoftHSM)" "${t[@]}" "openssl cms -decrypt (pkcs11)" "$M_WALL" "$M_MIN" "$M_RSS"
OUT="$tmp/dec2.eml" measure tm_decrypt_ossl "$TM" --socket "$sock" decrypt "$tmp/ossl-enc.eml" -o "$tmp/dec2.eml"
t=("$M_WALL" "$M_MIN" "$M_RSS")
OUT="$tmp/ossl-dec2.eml" measure ossl_decrypt_ossl env OPENSSL_CONF="$TOKENMAIL_OPENSSL_ENGINE_CONF" openssl cms -decrypt \
  -engine pkcs11 -keyform engine -inkey "$URI" -recip "$PKI/alice-rsa.pem" \
  -in "$tmp/ossl-enc.eml" -out "$tmp/ossl-dec2.eml"
row "decrypt openssl's $SIZE_MIB MiB (PKCS#1 v1.5)" "${t[@]}" "openssl cms -decrypt (pkcs11)" "$M_WALL" "$M_MIN" "$M_RSS"

# ---------------------------------------------------------------- small messages
# per-message latency: N back-to-back signatures of a small message, whole processes
per_msg() { # N CMD... -> prints milliseconds per message
  local n="$1"; shift
  local s e
  s=$(date +%s%N)
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 || { echo "$PROG: failed: $*" >&2; exit 1; }; done
  e=$(date +%s%N)
  awk -v s="$s" -v e="$e" -v n="$n" 'BEGIN{printf "%.2f", (e - s) / 1e6 / n}'
}
tm_small=$(per_msg "$SMALL_N" "$TM" --socket "$sock" sign --signer alice-rsa "$small" -o "$tmp/small-signed.eml")
ossl_small=$(per_msg "$SMALL_N" ossl_engine cms -sign -in "$small" -signer "$PKI/alice-rsa.pem" \
  -engine pkcs11 -keyform engine -inkey "$URI" -out "$tmp/small-ossl.eml")
"$TM" verify --trust "$PKI/root.pem" "$tmp/small-signed.eml" >/dev/null || { echo "$PROG: small signature not valid" >&2; exit 1; }
tm_small_dec_in="$tmp/small-enc.eml"
"$TM" encrypt --recipient-cert "$PKI/alice-rsa.pem" "$small" -o "$tm_small_dec_in" 2>"$tmp/small-enc.err" \
  || { cat "$tmp/small-enc.err" >&2; exit 1; }
tm_sdec=$(per_msg "$SMALL_N" "$TM" --socket "$sock" decrypt "$tm_small_dec_in" -o "$tmp/small-dec.eml")
ossl_sdec=$(per_msg "$SMALL_N" ossl_engine cms -decrypt -engine pkcs11 -keyform engine -inkey "$URI" \
  -recip "$PKI/alice-rsa.pem" -in "$tm_small_dec_in" -out "$tmp/small-ossl-dec.eml")

echo "| operation | tokenmail s (min) | tokenmail MiB | compared with | its s (min) | its MiB | ratio |"
echo "|---|--:|--:|---|--:|--:|--:|"
for r in "${rows[@]}"; do echo "$r"; done
awk -v t="$tm_small" -v o="$ossl_small" -v n="$SMALL_N" 'BEGIN{printf "| sign a small message (warm agent), per message, N=%d | %.2f ms | | openssl cms -sign (pkcs11) | %.2f ms | | %.1f× |\n", n, t, o, o / t}'
awk -v t="$tm_sdec" -v o="$ossl_sdec" -v n="$SMALL_N" 'BEGIN{printf "| decrypt a small message, per message, N=%d | %.2f ms | | openssl cms -decrypt (pkcs11) | %.2f ms | | %.1f× |\n", n, t, o, o / t}'
echo
echo "ratio = the other tool's median time / tokenmail's (> 1: tokenmail is faster). MiB = max RSS."
echo "agent max RSS over the whole run: $(awk '/VmHWM/{printf "%.1f MiB", $2/1024}' "/proc/$agent_pid/status")"
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
