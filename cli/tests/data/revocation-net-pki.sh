#!/bin/bash
# A PKI whose certificates point at a loopback CRL/OCSP server on 127.0.0.1:$PORT
# (cli/tests/data/revocation_server.py). Run in the server's directory.
#   root -> int -> ee_good, ee_revoked (AIA OCSP /ocsp/int, CDP /crl/int.crl)
#                  ee_crl_only (CDP only; revoked)         ee_delegated (OCSP /ocsp/int-delegated)
#                  ee_wrong (OCSP /ocsp/int-wrong: signed by a responder the CA did not certify)
#                  ee_down (OCSP on a closed port)         ee_unknown (not in the CA's database)
#                  ee_fallback (OCSP /ocsp/fallback, CDP /crl/int.crl; revoked, keyCompromise)
#                  ee_fb_down (OCSP on a closed port, CDP /crl/int.crl; good)
#                  ee_stale_crl (CDP /crl/stale.crl: a CRL whose nextUpdate was a day ago)
#                  ee_stale_ocsp (OCSP /ocsp/stale: answers valid for one minute)
#   int: AIA OCSP /ocsp/root, CDP /crl/root.crl
#   root -> int2 (CDP /crl/root.crl only; revoked on it, cACompromise) -> ee_under_int2
#   root -> int3 (CDP /crl/root.crl only) -> ee_delta_good, ee_delta_revoked (CDP /crl/int3.crl):
#     int3.crl is a complete CRL (number 1) listing nothing, whose freshestCRL names
#     /crl/int3-delta.crl, a delta CRL (number 2, base 1) that lists ee_delta_revoked
#   fallback.ocsp: the int responder; the tests rewrite it (`garbage`, `error`, an empty index)
set -e
: "${PORT:?PORT}"
U="http://127.0.0.1:$PORT"
cat > ext.cnf <<EOT
[req]
distinguished_name = dn
[dn]
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[int]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
authorityInfoAccess = OCSP;URI:$U/ocsp/root
crlDistributionPoints = URI:$U/crl/root.crl
[responder]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = OCSPSigning
[ee_base]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
[ee]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:$U/ocsp/int
crlDistributionPoints = URI:$U/crl/int.crl
[ee_crl_only]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
crlDistributionPoints = URI:$U/crl/int.crl
[ee_delegated]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:$U/ocsp/int-delegated
[ee_wrong]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:$U/ocsp/int-wrong
[ee_unknown]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:$U/ocsp/int
[ee_fallback]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:$U/ocsp/fallback
crlDistributionPoints = URI:$U/crl/int.crl
[ee_fb_down]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:http://127.0.0.1:1/ocsp
crlDistributionPoints = URI:$U/crl/int.crl
[ee_stale_crl]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
crlDistributionPoints = URI:$U/crl/stale.crl
[ee_stale_ocsp]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:$U/ocsp/stale
[int2]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
crlDistributionPoints = URI:$U/crl/root.crl
[ee_under_int2]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
crlDistributionPoints = URI:$U/crl/int2.crl
[ee_delta]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
crlDistributionPoints = URI:$U/crl/int3.crl
[ee_down]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
authorityInfoAccess = OCSP;URI:http://127.0.0.1:1/ocsp
EOT
mkca() {
  mkdir -p $1/newcerts; : > $1/index.txt; echo 1000 > $1/serial; echo 01 > $1/crlnumber
  cat > $1/ca.cnf <<EOT
[ca]
default_ca = myca
[myca]
dir = $1
database = $1/index.txt
new_certs_dir = $1/newcerts
serial = $1/serial
crlnumber = $1/crlnumber
default_md = sha256
default_crl_days = 30
policy = pol
unique_subject = no
[pol]
commonName = supplied
[crl]
authorityKeyIdentifier = keyid
EOT
}
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out $1.key 2>/dev/null; }
sign() { # CA NAME EXT SUBJ
  openssl req -new -key $2.key -subj "$4" -out $2.csr -config ext.cnf
  openssl ca -batch -config $1/ca.cnf -cert $1.pem -keyfile $1.key -in $2.csr -out $2.pem \
    -days 3650 -extfile ext.cnf -extensions $3 -notext 2>/dev/null
}
key root; openssl req -x509 -new -key root.key -subj "/CN=tokenmail Net Root" -days 3650 -sha256 \
  -config ext.cnf -extensions root -out root.pem
mkca $PWD/root
key int; sign root int int "/CN=tokenmail Net Intermediate"
mkca $PWD/int
key responder; sign int responder responder "/CN=tokenmail Net OCSP Responder"
key rogue; sign root rogue responder "/CN=tokenmail Net Rogue Responder"
for e in good revoked; do key ee_$e; sign int ee_$e ee "/CN=Alice $e"; done
for e in crl_only delegated wrong down fallback fb_down stale_crl stale_ocsp; do
  key ee_$e; sign int ee_$e ee_$e "/CN=Alice $e"
done
key int2; sign root int2 int2 "/CN=tokenmail Net Intermediate 2"
mkca $PWD/int2
key ee_under_int2; sign int2 ee_under_int2 ee_under_int2 "/CN=Alice under int2"
openssl ca -config root/ca.cnf -cert root.pem -keyfile root.key -revoke int2.pem \
  -crl_reason cACompromise 2>/dev/null
openssl ca -config int2/ca.cnf -cert int2.pem -keyfile int2.key -gencrl -crlexts crl -out int2.crl 2>/dev/null
key int3; sign root int3 int2 "/CN=tokenmail Net Intermediate 3"
mkca $PWD/int3
cat >> int3/ca.cnf <<EOT
[base]
authorityKeyIdentifier = keyid
freshestCRL = URI:$U/crl/int3-delta.crl
[delta]
authorityKeyIdentifier = keyid
2.5.29.27 = critical,ASN1:INTEGER:1
EOT
for e in good revoked; do key ee_delta_$e; sign int3 ee_delta_$e ee_delta "/CN=Alice delta $e"; done
openssl ca -config int3/ca.cnf -cert int3.pem -keyfile int3.key -gencrl -crlexts base -out int3.crl 2>/dev/null
openssl ca -config int3/ca.cnf -cert int3.pem -keyfile int3.key -revoke ee_delta_revoked.pem \
  -crl_reason keyCompromise 2>/dev/null
openssl ca -config int3/ca.cnf -cert int3.pem -keyfile int3.key -gencrl -crlexts delta \
  -out int3-delta.crl 2>/dev/null
# not in the CA's database: the responder does not know it
key ee_unknown; openssl req -new -key ee_unknown.key -subj "/CN=Alice unknown" -out ee_unknown.csr -config ext.cnf
openssl x509 -req -in ee_unknown.csr -CA int.pem -CAkey int.key -set_serial 424242 -days 3650 \
  -extfile ext.cnf -extensions ee_unknown -out ee_unknown.pem 2>/dev/null
for e in revoked crl_only fallback; do
  openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -revoke ee_$e.pem \
    -crl_reason keyCompromise 2>/dev/null
done
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -gencrl -crlexts crl -out int.crl 2>/dev/null
openssl ca -config root/ca.cnf -cert root.pem -keyfile root.key -gencrl -crlexts crl -out root.crl 2>/dev/null
# issued two days ago, next update one day ago
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -gencrl -crlexts crl \
  -crl_lastupdate "$(date -u -d '2 days ago' +%Y%m%d%H%M%SZ)" \
  -crl_nextupdate "$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)" -out stale.crl 2>/dev/null
: > empty-index.txt
echo "-index int/index.txt -CA int.pem -rsigner int.pem -rkey int.key" > int.ocsp
echo "-index int/index.txt -CA int.pem -rsigner responder.pem -rkey responder.key" > int-delegated.ocsp
echo "-index int/index.txt -CA int.pem -rsigner rogue.pem -rkey rogue.key" > int-wrong.ocsp
echo "-index root/index.txt -CA root.pem -rsigner root.pem -rkey root.key" > root.ocsp
cp int.ocsp fallback.ocsp
# openssl ocsp cannot date an answer in the past (-nmin and -ndays are positive): one minute
echo "-index int/index.txt -CA int.pem -rsigner int.pem -rkey int.key -nmin 1" > stale.ocsp
printf 'Content-Type: text/plain\n\nrevocation over the network\n' > msg.txt
for e in good revoked crl_only delegated wrong down unknown fallback fb_down stale_crl stale_ocsp; do
  openssl cms -sign -in msg.txt -signer ee_$e.pem -inkey ee_$e.key -certfile int.pem \
    -from alice@example.com -out $e.eml
done
openssl cms -sign -in msg.txt -signer ee_under_int2.pem -inkey ee_under_int2.key -certfile int2.pem \
  -from alice@example.com -out under_int2.eml
for e in good revoked; do
  openssl cms -sign -in msg.txt -signer ee_delta_$e.pem -inkey ee_delta_$e.key -certfile int3.pem \
    -from alice@example.com -out delta_$e.eml
done
