#!/bin/bash
# Test PKI for tokenmail-smime tests: run in an empty directory.
set -e
cat > ext.cnf <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca_pl0]
basicConstraints = critical,CA:TRUE,pathlen:0
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
[ee_ec]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ee_subject_email]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
[ee_server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = email:alice@example.com
[ee_any]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = anyExtendedKeyUsage
subjectAltName = email:alice@example.com
[ee_noku]
basicConstraints = CA:FALSE
keyUsage = critical,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
EOF
cat > ca.cnf <<'EOF'
[ca]
default_ca = myca
[myca]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
default_md = sha256
policy = pol
unique_subject = no
[pol]
commonName = supplied
emailAddress = optional
EOF
mkdir -p newcerts; : > index.txt; echo 1000 > serial

rsa() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:${2:-2048} -out $1.key 2>/dev/null; }
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:$2 -out $1.key 2>/dev/null; }
# issue NAME ISSUER EXT SUBJ [MD]
issue() {
  openssl req -new -key $1.key -subj "$4" -out $1.csr -config ext.cnf
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -set_serial $RANDOM$RANDOM -days 3650 \
     -${5:-sha256} -extfile ext.cnf -extensions $3 -out $1.pem 2>/dev/null
}

rsa root; openssl req -x509 -new -key root.key -subj "/CN=tokenmail Test Root" -days 3650 -sha256 \
  -config ext.cnf -extensions ca -out root.pem
rsa other_root; openssl req -x509 -new -key other_root.key -subj "/CN=Other Root" -days 3650 -sha256 \
  -config ext.cnf -extensions ca -out other_root.pem
ec int prime256v1; issue int root ca "/CN=tokenmail Test Intermediate"

rsa ee_rsa; issue ee_rsa int ee "/CN=Alice RSA"
ec ee_p256 prime256v1; issue ee_p256 int ee_ec "/CN=Alice P-256"
ec ee_p384 secp384r1; issue ee_p384 int ee_ec "/CN=Alice P-384"
rsa ee_subj; issue ee_subj int ee_subject_email "/CN=Alice Subject/emailAddress=Alice@EXAMPLE.com"
rsa ee_server; issue ee_server int ee_server "/CN=Alice Server EKU"
rsa ee_any; issue ee_any int ee_any "/CN=Alice Any EKU"
rsa ee_noku; issue ee_noku int ee_noku "/CN=Alice No digitalSignature"
rsa ee_1024 1024; issue ee_1024 int ee "/CN=Alice RSA-1024"
rsa ee_sha1; issue ee_sha1 int ee "/CN=Alice SHA-1 cert" sha1
rsa ee_other; issue ee_other other_root ee "/CN=Alice Unknown CA"

# self-signed end entity
rsa ee_self; openssl req -x509 -new -key ee_self.key -subj "/CN=Alice Self" -days 3650 -sha256 \
  -config ext.cnf -extensions ee -out ee_self.pem

# expired and not-yet-valid, through openssl ca
rsa ee_expired; openssl req -new -key ee_expired.key -subj "/CN=Alice Expired" -out ee_expired.csr -config ext.cnf
openssl ca -batch -config ca.cnf -cert int.pem -keyfile int.key -in ee_expired.csr -out ee_expired.pem \
  -startdate 20200101000000Z -enddate 20210101000000Z -extfile ext.cnf -extensions ee -notext 2>/dev/null
rsa ee_future; openssl req -new -key ee_future.key -subj "/CN=Alice Future" -out ee_future.csr -config ext.cnf
openssl ca -batch -config ca.cnf -cert int.pem -keyfile int.key -in ee_future.csr -out ee_future.pem \
  -startdate 20400101000000Z -enddate 20410101000000Z -extfile ext.cnf -extensions ee -notext 2>/dev/null

# a longer chain: root -> int (P-256) -> int2 -> int3 -> ee_deep
rsa int2; issue int2 int ca "/CN=tokenmail Test Intermediate 2"
rsa int3; issue int3 int2 ca "/CN=tokenmail Test Intermediate 3"
rsa ee_deep; issue ee_deep int3 ee "/CN=Alice Deep"
# pathlen:0 intermediate with another CA below it
rsa int_pl0; issue int_pl0 root ca_pl0 "/CN=tokenmail pathlen0"
rsa int_below; issue int_below int_pl0 ca "/CN=tokenmail below pathlen0"
rsa ee_pl; issue ee_pl int_below ee "/CN=Alice pathlen"

# PKCS#8 for every key (genpkey already writes PKCS#8)
# an end entity with a critical extension we do not process (nameConstraints is CA-only, but
# any unknown critical OID will do: a private one)
cat >> ext.cnf <<'EOT'
[ee_crit]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
1.3.6.1.4.1.99999.1 = critical,ASN1:NULL
EOT
rsa ee_crit; issue ee_crit int ee_crit "/CN=Alice Critical"
# an intermediate whose certificate is signed by the root with RSA-PSS, issuing an EE
rsa int_pss
openssl req -new -key int_pss.key -subj "/CN=tokenmail PSS Intermediate" -out int_pss.csr -config ext.cnf
openssl x509 -req -in int_pss.csr -CA root.pem -CAkey root.key -set_serial 777 -days 3650 -sha384 \
  -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:-1 -extfile ext.cnf -extensions ca -out int_pss.pem 2>/dev/null
rsa ee_pss; issue ee_pss int_pss ee "/CN=Alice under PSS CA"
