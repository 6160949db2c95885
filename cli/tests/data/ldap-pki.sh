#!/bin/bash
# Certificates and LDIF for cli/tests/ldap_dir.rs (a throwaway slapd on loopback).
# Run in the test's directory; writes:
#   ca.pem                      the test CA (basicConstraints CA)
#   bob.pem/.key                bob@example.org      -> entry uid=bob,   userCertificate;binary
#   carol.pem/.key              carol@example.org    -> entry uid=carol, userSMIMECertificate
#                                                       (certs-only SignedData with carol + CA)
#   mallory.pem                 mallory@evil.example -> in entry uid=dave (mail=dave@example.org)
#   old.pem                     old@example.org, expired 2021 -> entry uid=old (expired.ldif only)
#   erin.pem/.key               erin@corp.example    -> entry in the bind-only database
#   server.pem/.key             slapd's TLS certificate (IP:127.0.0.1)
#   people.ldif (with 25 entries for crowd@example.org), expired.ldif, corp.ldif
set -e
cat > ext.cnf <<'EOT'
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[ee]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:${ENV::EMAIL}
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
EOT
export EMAIL=unused
openssl req -x509 -nodes -newkey rsa:2048 -keyout ca.key -out ca.pem -days 30 \
  -subj "/CN=ldap test CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name email
  EMAIL=$2 openssl req -new -nodes -newkey rsa:2048 -keyout "$1.key" -out "$1.csr" \
    -subj "/CN=$1" 2>/dev/null
  EMAIL=$2 openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 20 -extfile ext.cnf -extensions ee -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
issue bob bob@example.org
issue carol carol@example.org
issue mallory mallory@evil.example
issue erin erin@corp.example
# slapd's TLS certificate (ldaps:// and StartTLS), for 127.0.0.1
openssl req -new -nodes -newkey rsa:2048 -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 20 \
  -extfile ext.cnf -extensions server -out server.pem 2>/dev/null
rm -f server.csr

# expired: openssl 3.0's x509 cannot back-date; openssl ca can
mkdir -p db; : > db/index.txt; echo 01 > db/serial
cat > ca.cnf <<'EOT'
[ca]
default_ca = c
[c]
database = db/index.txt
serial = db/serial
new_certs_dir = db
default_md = sha256
policy = p
[p]
commonName = supplied
[e]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
subjectAltName = email:old@example.org
EOT
openssl req -new -nodes -newkey rsa:2048 -keyout old.key -out old.csr -subj /CN=old 2>/dev/null
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in old.csr -notext \
  -startdate 20200101000000Z -enddate 20210101000000Z -extensions e -out old.pem 2>/dev/null
rm -rf db old.csr

der() { openssl x509 -in "$1" -outform DER | base64 -w0; }
openssl crl2pkcs7 -nocrl -certfile carol.pem -certfile ca.pem -outform DER -out carol.p7b

cat > people.ldif <<EOT
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Bob
mail: bob@example.org
userCertificate;binary:: $(der bob.pem)

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Carol
mail: carol@example.org
userSMIMECertificate:: $(base64 -w0 carol.p7b)

dn: uid=dave,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dave
cn: Dave
sn: Dave
mail: dave@example.org
userCertificate;binary:: $(der mallory.pem)

EOT

cat > expired.ldif <<EOT
dn: uid=old,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: old
cn: Old
sn: Old
mail: old@example.org
userCertificate;binary:: $(der old.pem)

EOT

cat > corp.ldif <<EOT
dn: dc=corp,dc=example
objectClass: dcObject
objectClass: organization
o: corp
dc: corp

dn: cn=reader,dc=corp,dc=example
objectClass: person
cn: reader
sn: reader
userPassword: s3cret-reader

dn: uid=erin,dc=corp,dc=example
objectClass: inetOrgPerson
uid: erin
cn: Erin
sn: Erin
mail: erin@corp.example
userCertificate;binary:: $(der erin.pem)

EOT
# 25 entries for one address (more than the 20 a lookup takes), each with bob's certificate
for i in $(seq 1 25); do
  printf 'dn: uid=crowd%s,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: crowd%s\ncn: Crowd\nsn: Crowd\nmail: crowd@example.org\nuserCertificate;binary:: %s\n\n' \
    "$i" "$i" "$(der bob.pem)" >> people.ldif
done
