#!/usr/bin/env bash
# The demo: build, provision an embedded SoftHSM token (private directory), start the
# agent, and use the keys on the token with visible output.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
. scripts/deps.sh
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "building (release)"
cargo build --release --workspace --locked
bin="$here/target/release"
demo="$here/target/demo"

say "provisioning a private SoftHSM token in $demo (keys generated on the token)"
bash softhsm/provision.sh "$demo" --force >/dev/null
. "$demo/env"      # SOFTHSM2_CONF (private), module, label, PIN file, PKI dir

say "starting tokenmail-agent"
export TOKENMAIL_SOCK="$demo/run/agent.sock"
agent_out=$("$bin/tokenmail-agent" --pkcs11-module "$TOKENMAIL_PKCS11_MODULE" \
        --token-label "$TOKENMAIL_TOKEN_LABEL" --pin-file "$TOKENMAIL_PIN_FILE" \
        --socket "$TOKENMAIL_SOCK" --log-file "$demo/agent.log")
eval "$agent_out"      # exports TOKENMAIL_SOCK, like ssh-agent's output
agent_pid=$(printf '%s\n' "$agent_out" | sed -n 's/.*Agent pid \([0-9]*\).*/\1/p')
trap '[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true' EXIT

say "tokenmail status"
"$bin/tokenmail" status

msg="$demo/message.txt"
printf 'From: alice@example.com\r\nTo: bob@example.com\r\nSubject: tokenmail demo\r\n\r\nHello Bob, this digest was signed on the token.\r\n' > "$msg"
for key in alice-rsa bob-p256 carol-p384; do
  md=sha256; [ "$key" = carol-p384 ] && md=sha384
  say "sign-digest with $key (key never leaves the token), verified by openssl"
  "$bin/tokenmail" sign-digest --key "$key" "$msg" -o "$demo/$key.sig"
  openssl x509 -in "$TOKENMAIL_PKI/$key.pem" -pubkey -noout > "$demo/$key.pub"
  echo "signature: $(wc -c < "$demo/$key.sig") bytes, $(openssl dgst -$md -verify "$demo/$key.pub" -signature "$demo/$key.sig" "$msg")"
done

tm="$bin/tokenmail"
say "sign the message as alice (multipart/signed; the signed attributes' digest is signed on the token)"
"$tm" sign --signer alice@example.com "$msg" -o "$demo/signed.eml"
sed -n '1,12p' "$demo/signed.eml"; echo "  [...]"

say "verify it (no agent needed): chain to the test root, validity, KU/EKU, From = signer"
"$tm" verify --trust "$TOKENMAIL_PKI/root.pem" "$demo/signed.eml"
echo "openssl agrees: $(openssl cms -verify -in "$demo/signed.eml" -CAfile "$TOKENMAIL_PKI/root.pem" -purpose smimesign -out /dev/null 2>&1 | tail -1)"

say "sign real mail: multipart/mixed with an 8-bit UTF-8 part and an attachment (re-encoded part by part)"
mixed="$demo/mixed.eml"
printf 'From: alice@example.com\nTo: bob@example.com\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\303\274\303\237e aus M\303\274nchen\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAECAwQFBgc=\n--b1--\n' > "$mixed"
"$tm" sign --signer alice@example.com "$mixed" -o "$demo/mixed-signed.eml"
grep -A3 'charset=utf-8' "$demo/mixed-signed.eml" | head -4
echo "openssl agrees: $(openssl cms -verify -in "$demo/mixed-signed.eml" -CAfile "$TOKENMAIL_PKI/root.pem" -purpose smimesign -out /dev/null 2>&1 | tail -1)"

say "encrypt to alice (RSA-OAEP) and carol (ECDH P-384), AES-256-GCM (no agent needed)"
"$tm" encrypt --recipient-cert "$TOKENMAIL_PKI/alice-rsa.pem" --recipient-cert "$TOKENMAIL_PKI/carol-p384.pem" \
      "$demo/signed.eml" -o "$demo/encrypted.eml"
sed -n '1,9p' "$demo/encrypted.eml"; echo "  [...]"

say "decrypt on the token (content key unwrapped by the token; plaintext released after the GCM tag verified)"
"$tm" decrypt --json --trust "$TOKENMAIL_PKI/root.pem" "$demo/encrypted.eml" -o "$demo/decrypted.eml"
"$tm" verify --trust "$TOKENMAIL_PKI/root.pem" "$demo/decrypted.eml" | tail -2

say "done; the agent stops now (log: $demo/agent.log)"
