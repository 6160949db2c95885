#!/bin/bash
# Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (committed):
# real messages made by openssl from the fixture PKI (fuzz-targets/fixtures), the hostile
# cases of issue 11 (spoofed From fields, deep MIME nesting, huge part headers, frames with
# huge lengths, a SignedData with many self-issued CA certificates sharing a key), and
# truncations. Seeds made by our own code come from
#   cargo test -p fuzz-targets --test corpus -- --ignored write_own_seeds
# Run from anywhere; needs openssl and python3. Rerunning replaces the seeds (openssl's
# signatures and keys are random, so the bytes differ from run to run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fx=$here/../fuzz-targets/fixtures
c=$here/corpus
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for t in frame request signed_data enveloped decrypt_stream mime pem from_header verify; do
  mkdir -p "$c/$t"
done
cd "$work"

# ---------------------------------------------------------------- messages
printf 'From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHello Bob,\r\nthis is a test.\r\n' > plain.eml
cat > mixed.eml <<'EOT'
From: "Doe, John" <alice@example.org>
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus München
--outer
Content-Type: message/rfc822

Subject: fwd
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/html

<p>Grüße</p>
--inner
Content-Type: text/plain

plain
--inner--
--outer
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAECAwQFBgcICQ==
--outer--
epilogue
EOT
cp plain.eml "$c/mime/plain.eml"; cp mixed.eml "$c/mime/mixed-8bit.eml"

# ---------------------------------------------------------------- signed (openssl)
for k in rsa p256; do
  s="-signer $fx/ee_$k.pem -inkey $fx/ee_$k.key -certfile $fx/int.pem"
  openssl cms -sign $s -in plain.eml -outform DER -out "$c/signed_data/openssl-$k-detached.der"
  openssl cms -sign $s -nodetach -in plain.eml -outform DER -out "$c/signed_data/openssl-$k-attached.der"
  openssl cms -sign $s -nodetach -stream -in plain.eml -outform DER -out "$c/signed_data/openssl-$k-attached-ber.der"
  openssl cms -sign $s -in mixed.eml -out "$work/ms-$k.eml"
  { printf 'From: Alice <alice@example.org>\r\n'; cat "$work/ms-$k.eml"; } > "$c/verify/openssl-$k-multipart.eml"
  openssl cms -sign $s -nodetach -in plain.eml -out "$work/op-$k.eml"
  { printf 'From: alice@example.org\r\n'; cat "$work/op-$k.eml"; } > "$c/verify/openssl-$k-opaque.eml"
  cp "$c/signed_data/openssl-$k-attached-ber.der" "$c/verify/openssl-$k-attached-ber.der"
  openssl cms -sign $s -nodetach -in plain.eml -outform PEM -out "$c/verify/openssl-$k-attached.pem"
done
cp "$c/verify/openssl-rsa-multipart.eml" "$c/mime/openssl-multipart-signed.eml"
cp "$c/verify/openssl-p256-attached.pem" "$c/pem/cms.pem"
# a signature that does not verify (content changed after signing)
sed 's/Grüße aus München/Gruesse aus Muenchen/' "$c/verify/openssl-rsa-multipart.eml" > "$c/verify/altered-multipart.eml"
# spoofed senders on a valid signature: comment, two mailboxes, two From fields, encoded word
ms=$work/ms-rsa.eml
{ printf 'From: alice@example.org (<bob@example.net>)\r\n'; cat "$ms"; } > "$c/verify/from-comment.eml"
{ printf 'From: "A" <alice@example.org>, <bob@example.net>\r\n'; cat "$ms"; } > "$c/verify/from-two-mailboxes.eml"
{ printf 'From: alice@example.org\r\nFrom: bob@example.net\r\n'; cat "$ms"; } > "$c/verify/from-two-fields.eml"
{ printf 'From: =?utf-8?q?bob=40example=2Enet?= <alice@example.org>\r\n'; cat "$ms"; } > "$c/verify/from-encoded-word.eml"

# ---------------------------------------------------------------- hostile path building
# N self-issued CA certificates sharing one key and one name, and an end entity issued by
# that name, all in one SignedData: every ordering of the pool is a candidate path
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out x.key
printf '[req]\ndistinguished_name=dn\n[dn]\n[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n[ee]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@example.org\n' > h.cnf
: > pool.pem
for i in $(seq 1 24); do
  openssl req -x509 -new -key x.key -subj "/CN=X" -days 3650 -set_serial $((100 + i)) \
    -config h.cnf -extensions ca -out "x$i.pem" 2>/dev/null
  cat "x$i.pem" >> pool.pem
done
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out victim.key
openssl req -new -key victim.key -subj "/CN=victim" -config h.cnf -out victim.csr
openssl x509 -req -in victim.csr -CA x1.pem -CAkey x.key -set_serial 1 -days 3650 \
  -extfile h.cnf -extensions ee -out victim.pem 2>/dev/null
openssl cms -sign -signer victim.pem -inkey victim.key -certfile pool.pem -nodetach \
  -in plain.eml -outform DER -out "$c/signed_data/hostile-self-issued-pool.der"
openssl cms -sign -signer victim.pem -inkey victim.key -certfile pool.pem -in plain.eml \
  -out hostile.eml
{ printf 'From: alice@example.org\r\n'; cat hostile.eml; } > "$c/verify/hostile-self-issued-pool.eml"

# ---------------------------------------------------------------- enveloped (openssl)
for k in rsa p256; do
  for ci in aes-256-cbc aes-128-gcm; do
    openssl cms -encrypt -$ci -in plain.eml -outform DER -out "$c/enveloped/openssl-$k-$ci.der" "$fx/ee_$k.pem"
    openssl cms -encrypt -$ci -stream -in plain.eml -outform DER -out "$c/decrypt_stream/openssl-$k-$ci-ber.der" "$fx/ee_$k.pem"
    openssl cms -encrypt -$ci -in mixed.eml -out "$c/decrypt_stream/openssl-$k-$ci.eml" "$fx/ee_$k.pem"
  done
done
openssl cms -encrypt -aes-256-cbc -recip "$fx/ee_rsa.pem" -keyopt rsa_padding_mode:oaep \
  -keyopt rsa_oaep_md:sha256 -in plain.eml -outform PEM -out "$c/decrypt_stream/openssl-rsa-oaep.pem"
openssl cms -encrypt -aes-256-gcm -in plain.eml -outform DER -out "$c/enveloped/openssl-two-recipients.der" \
  "$fx/ee_rsa.pem" "$fx/ee_p256.pem"
cp "$c/enveloped/openssl-two-recipients.der" "$c/decrypt_stream/"

# ---------------------------------------------------------------- PEM
cp "$fx/root.pem" "$c/pem/root.pem"
cat "$fx/ee_rsa.pem" "$fx/int.pem" "$fx/root.pem" > "$c/pem/bundle.pem"
cp "$fx/ee_p256.key" "$c/pem/p256-pkcs8.pem"
openssl x509 -in "$fx/ee_rsa.pem" -outform DER -out "$c/pem/ee_rsa.der"
printf -- '-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nMIIB\n-----END CERTIFICATE-----\n' > "$c/pem/rfc1421-headers.pem"
printf -- '-----BEGIN CMS-----\nMIIB\n' > "$c/pem/unclosed.pem"
printf -- '-----BEGIN -----\n-----END -----\n-----BEGIN X-----\n====\n-----END X-----\n' > "$c/pem/odd-labels.pem"

# ---------------------------------------------------------------- path_checks
# DER certificates one after another, end entity first, anchor last: name constraints
# (every form) and certificate policies (mappings, policyConstraints, inhibitAnyPolicy)
mkdir -p "$c/path_checks"
cat > pc.cnf <<'EOT'
[req]
distinguished_name = dn
[dn]
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
certificatePolicies = 2.5.29.32.0
nameConstraints = critical,permitted;email:.example.org,excluded;DNS:bad.example.org
[int]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
certificatePolicies = 2.16.840.1.101.3.2.1.48.1,2.16.840.1.101.3.2.1.48.2
policyMappings = 2.16.840.1.101.3.2.1.48.1:2.16.840.1.101.3.2.1.48.3
policyConstraints = requireExplicitPolicy:0,inhibitPolicyMapping:1
inhibitAnyPolicy = 0
nameConstraints = critical,permitted;dirName:nc_dn,permitted;IP:10.0.0.0/255.0.0.0,permitted;URI:.example.org,excluded;email:bad@example.org
[nc_dn]
O = Example
[ee]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
certificatePolicies = 2.16.840.1.101.3.2.1.48.3
subjectAltName = email:alice@mail.example.org,DNS:www.example.org,IP:10.1.2.3,URI:http://www.example.org/
EOT
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out pc.key 2>/dev/null
openssl req -x509 -new -key pc.key -subj "/CN=PC Root" -days 3650 -config pc.cnf -extensions root -out pcroot.pem
openssl req -new -key pc.key -subj "/O=Example/CN=PC Int" -config pc.cnf -out pcint.csr
openssl x509 -req -in pcint.csr -CA pcroot.pem -CAkey pc.key -set_serial 2 -days 3650 -extfile pc.cnf -extensions int -out pcint.pem 2>/dev/null
openssl req -new -key pc.key -subj "/O=Example/CN=alice/emailAddress=alice@example.org" -config pc.cnf -out pcee.csr
openssl x509 -req -in pcee.csr -CA pcint.pem -CAkey pc.key -set_serial 3 -days 3650 -extfile pc.cnf -extensions ee -out pcee.pem 2>/dev/null
for n in pcroot pcint pcee; do openssl x509 -in $n.pem -outform DER -out $n.der; done
cat pcee.der pcint.der pcroot.der > "$c/path_checks/openssl-ee-int-root.der"
cat pcint.der pcroot.der > "$c/path_checks/openssl-int-root.der"
cat pcee.der pcint.der pcint.der pcint.der pcroot.der > "$c/path_checks/openssl-repeated-int.der"
for n in int ee_rsa root; do openssl x509 -in "$fx/$n.pem" -outform DER -out "fx_$n.der"; done
cat fx_ee_rsa.der fx_int.der fx_root.der > "$c/path_checks/fixture-no-extensions.der"

# ---------------------------------------------------------------- generated with python
python3 "$here/make-corpus.py" "$c"

# ---------------------------------------------------------------- truncations
for f in "$c"/signed_data/openssl-rsa-attached-ber.der "$c"/enveloped/openssl-rsa-aes-128-gcm.der \
         "$c"/decrypt_stream/openssl-p256-aes-256-cbc.eml "$c"/verify/openssl-p256-multipart.eml; do
  n=$(stat -c %s "$f")
  head -c $((n / 2)) "$f" > "${f%.*}-truncated-half.${f##*.}"
  head -c $((n - 3)) "$f" > "${f%.*}-truncated-end.${f##*.}"
done
du -sh "$c"; for t in "$c"/*; do echo "$(ls "$t" | wc -l) $(du -sh "$t")"; done
