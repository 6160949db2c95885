#!/bin/bash
# A time-stamping authority for tests (RFC 3161, `openssl ts -reply`): run in a directory
# with CA_PEM and CA_KEY set to the issuing CA. Writes tsa.key, tsa.pem (extendedKeyUsage
# critical timeStamping), tsa_noncrit.pem (the same key, timeStamping not critical) and
# tsa.cnf for `openssl ts -reply -config tsa.cnf`.
set -e
: "${CA_PEM:?}" "${CA_KEY:?}"
cat > tsa-ext.cnf <<'CNF'
[req]
distinguished_name = dn
[dn]
[tsa]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[tsa_noncrit]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = timeStamping
CNF
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out tsa.key 2>/dev/null
openssl req -new -key tsa.key -subj "/CN=tokenmail Test TSA" -out tsa.csr -config tsa-ext.cnf
openssl x509 -req -in tsa.csr -CA "$CA_PEM" -CAkey "$CA_KEY" -set_serial $RANDOM$RANDOM -days 3650 \
  -sha256 -extfile tsa-ext.cnf -extensions tsa -out tsa.pem 2>/dev/null
openssl x509 -req -in tsa.csr -CA "$CA_PEM" -CAkey "$CA_KEY" -set_serial $RANDOM$RANDOM -days 3650 \
  -sha256 -extfile tsa-ext.cnf -extensions tsa_noncrit -out tsa_noncrit.pem 2>/dev/null
echo 01 > tsaserial
cat > tsa.cnf <<CNF
[tsa]
default_tsa = tsa_config
[tsa_config]
dir = .
serial = ./tsaserial
crypto_device = builtin
signer_cert = ./tsa.pem
signer_key = ./tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.7.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
CNF
