#!/bin/bash
# A PKI with revocations, made by `openssl ca` (run in an empty directory):
#   root -> int -> ee_good, ee_revoked (revoked: keyCompromise)
#   root -> int_revoked (revoked by the root: cACompromise) -> ee_under_revoked
#   int -> ee_hold (on hold: certificateHold, in int.crl), ee_later (revoked after int.crl)
# CRLs: root.crl, int.crl (current, number 1), int_stale.crl (nextUpdate in 2020),
#   int_forged.crl (same issuer name, another key), int_delta.crl (a delta CRL on base 1,
#   made right after int.crl), int_delta2.crl (a later delta on base 1: ee_later revoked,
#   ee_hold removeFromCRL), int_delta_nobase.crl (a delta on base 99, lists ee_later),
#   int_some_kc.crl (onlySomeReasons keyCompromise, cACompromise), int_some_rest.crl (the
#   other reasons)
# Messages (openssl cms -sign, multipart/signed, From alice@example.com): good.eml,
#   revoked.eml, under_revoked.eml, hold.eml, later.eml; opaque DER: good.der
set -e
cat > ext.cnf <<'EOT'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ee]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOT
mkca() { # DIR
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
copy_extensions = none
[pol]
commonName = supplied
[crl]
authorityKeyIdentifier = keyid
freshestCRL = URI:http://crl.example.invalid/delta.crl
[delta]
authorityKeyIdentifier = keyid
2.5.29.27 = critical,ASN1:INTEGER:1
[some_kc]
authorityKeyIdentifier = keyid
issuingDistributionPoint = critical,@some_kc_idp
[some_kc_idp]
onlysomereasons = keyCompromise,CACompromise
[some_rest]
authorityKeyIdentifier = keyid
issuingDistributionPoint = critical,@some_rest_idp
[some_rest_idp]
onlysomereasons = affiliationChanged,superseded,cessationOfOperation,certificateHold,privilegeWithdrawn,AACompromise
EOT
}
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $1.key 2>/dev/null; }
# sign CA NAME EXT SUBJ
sign() {
  openssl req -new -key $2.key -subj "$4" -out $2.csr -config ext.cnf
  openssl ca -batch -config $1/ca.cnf -cert $1.pem -keyfile $1.key -in $2.csr -out $2.pem \
    -days 3650 -extfile ext.cnf -extensions $3 -notext 2>/dev/null
}
key root; openssl req -x509 -new -key root.key -subj "/CN=tokenmail Rev Root" -days 3650 -sha256 \
  -config ext.cnf -extensions ca -out root.pem
mkca $PWD/root
ln -s ../root.pem root/root.pem 2>/dev/null || true
key int; sign root int ca "/CN=tokenmail Rev Intermediate"
key int_revoked; sign root int_revoked ca "/CN=tokenmail Rev Revoked Intermediate"
mkca $PWD/int; mkca $PWD/int_revoked
key ee_good; sign int ee_good ee "/CN=Alice Good"
key ee_revoked; sign int ee_revoked ee "/CN=Alice Revoked"
key ee_under_revoked; sign int_revoked ee_under_revoked ee "/CN=Alice Under Revoked CA"
key ee_hold; sign int ee_hold ee "/CN=Alice On Hold"
key ee_later; sign int ee_later ee "/CN=Alice Revoked Later"

openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -revoke ee_revoked.pem \
  -crl_compromise 20260101000000Z 2>/dev/null
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -revoke ee_hold.pem \
  -crl_hold holdInstructionNone 2>/dev/null
openssl ca -config root/ca.cnf -cert root.pem -keyfile root.key -revoke int_revoked.pem \
  -crl_CA_compromise 20260102000000Z 2>/dev/null
gencrl() { # CA OUT [args]
  local ca=$1 out=$2; shift 2
  openssl ca -config $ca/ca.cnf -cert $ca.pem -keyfile $ca.key -gencrl -crlexts crl \
    -out $out "$@" 2>/dev/null
}
gencrl root root.crl
gencrl int int.crl
gencrl int_revoked int_revoked.crl
gencrl int int_stale.crl -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -gencrl -crlexts delta \
  -out int_delta.crl 2>/dev/null
# after the complete CRL (a second later, so the deltas' thisUpdate is later): ee_later
# revoked, ee_hold released (removeFromCRL, which `openssl ca -revoke` does not write: the
# database entry is edited)
sleep 1
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -revoke ee_later.pem \
  -crl_reason keyCompromise 2>/dev/null
hold_serial=$(openssl x509 -in ee_hold.pem -noout -serial | cut -d= -f2)
sed -i "/\t${hold_serial}\t/s/,holdInstruction[^\t]*/,removeFromCRL/" int/index.txt
grep -q removeFromCRL int/index.txt
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -gencrl -crlexts delta \
  -out int_delta2.crl 2>/dev/null
sed -i 's/^2.5.29.27 = critical,ASN1:INTEGER:1$/2.5.29.27 = critical,ASN1:INTEGER:99/' int/ca.cnf
openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -gencrl -crlexts delta \
  -out int_delta_nobase.crl 2>/dev/null
# CRLs partitioned by reason (issuingDistributionPoint onlySomeReasons)
for part in some_kc some_rest; do
  openssl ca -config int/ca.cnf -cert int.pem -keyfile int.key -gencrl -crlexts $part \
    -out int_$part.crl 2>/dev/null
done
# a forger: the intermediate's name, another key, a CRL that lists nothing
key forger; openssl req -x509 -new -key forger.key -subj "/CN=tokenmail Rev Intermediate" -days 3650 \
  -sha256 -config ext.cnf -extensions ca -out forger.pem
mkca $PWD/forger
gencrl forger int_forged.crl
openssl crl -in int.crl -outform DER -out int.crl.der

printf 'From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: revocation\n\nsigned text\n' > msg.txt
cat int.pem root.pem > chain.pem
cat int_revoked.pem root.pem > chain_revoked.pem
msign() { # EE CHAIN OUT [args]
  openssl cms -sign -in msg.txt -signer $1.pem -inkey $1.key -certfile $2 -from alice@example.com \
    -to bob@example.net -subject revocation -out $3 "${@:4}"
}
msign ee_good chain.pem good.eml
msign ee_revoked chain.pem revoked.eml
msign ee_under_revoked chain_revoked.pem under_revoked.eml
msign ee_hold chain.pem hold.eml
msign ee_later chain.pem later.eml
msign ee_revoked chain.pem revoked.der -nodetach -outform DER
