//! Name constraints (RFC 5280 §4.2.1.10) on certificates `openssl` makes, judged by
//! tokenmail's path checks and by `openssl verify`, which must agree: what openssl accepts we
//! accept, what it refuses as a name-constraint violation we refuse by the
//! `name_constraints` check.

mod common;

use common::process;
use std::process::Command;
use std::time::SystemTime;
use tokenmail_smime::path::{check_signer_certificate, CertEntry, PathInputs, Policy, Purpose};

const SCRIPT: &str = r#"
set -e
cat > ext.cnf <<'EOF'
[req]
distinguished_name = dn
[dn]
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[root_nc]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
nameConstraints = critical,permitted;email:.corp.example
[int]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[int_nc]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
nameConstraints = critical,permitted;email:example.com,permitted;email:.example.com,excluded;email:bad@example.com,permitted;IP:10.0.0.0/255.0.0.0,permitted;dirName:dir_sect,excluded;DNS:secret.example.com
[dir_sect]
O = Example
[ee_alice]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
[ee_sub]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:carol@mail.example.com,IP:10.1.2.3,DNS:www.example.com
[ee_evil]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:mallory@evil.org
[ee_bad]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:bad@example.com
[ee_ip]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com,IP:192.168.1.1
[ee_dns]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com,DNS:secret.example.com
[ee_plain]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
EOF
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key 2>/dev/null; }
# issue NAME ISSUER EXT SUBJ
issue() {
  key $1
  openssl req -new -key $1.key -subj "$4" -out $1.csr -config ext.cnf
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -set_serial $RANDOM$RANDOM -days 30 \
     -sha256 -extfile ext.cnf -extensions $3 -out $1.pem 2>/dev/null
}
key root; openssl req -x509 -new -key root.key -subj "/CN=NC Root" -days 30 -sha256 \
  -config ext.cnf -extensions root -out root.pem
issue int root int_nc "/O=Example/CN=Constrained CA"
issue alice int ee_alice "/O=Example/CN=alice"
issue sub int ee_sub "/O=Example/OU=Mail/CN=carol"
issue evil int ee_evil "/O=Example/CN=mallory"
issue bad int ee_bad "/O=Example/CN=bad"
issue ip int ee_ip "/O=Example/CN=alice ip"
issue dns int ee_dns "/O=Example/CN=alice dns"
issue otherorg int ee_alice "/O=Other/CN=alice"
issue subjmail int ee_plain "/O=Example/CN=eve/emailAddress=eve@evil.org"
# a constraint on the trust anchor, an intermediate without one
key root2; openssl req -x509 -new -key root2.key -subj "/CN=NC Anchor" -days 30 -sha256 \
  -config ext.cnf -extensions root_nc -out root2.pem
issue int2 root2 int "/CN=Plain CA"
issue dave int2 ee_alice "/CN=dave"
key frank; openssl req -new -key frank.key -subj "/CN=frank" -out frank.csr -config ext.cnf
printf '[e]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nsubjectAltName = email:frank@hq.corp.example\n' > frank.cnf
openssl x509 -req -in frank.csr -CA int2.pem -CAkey int2.key -set_serial 77 -days 30 -sha256 \
  -extfile frank.cnf -extensions e -out frank.pem 2>/dev/null
"#;

fn load(dir: &std::path::Path, name: &str) -> CertEntry {
    let pem = std::fs::read(dir.join(format!("{name}.pem"))).expect("read certificate");
    CertEntry::from_pem_bundle(&pem)
        .expect("parse certificate")
        .remove(0)
}

/// tokenmail's verdict: `None` when no name_constraints check was made (none on the path),
/// else whether it passed, with its reason.
fn ours(dir: &std::path::Path, ee: &str, int: &str, root: &str) -> Option<(bool, String)> {
    let ee = load(dir, ee);
    let pool = [load(dir, int)];
    let anchors = [load(dir, root)];
    let policy = Policy::default();
    let inputs = PathInputs {
        pool: &pool,
        anchors: &anchors,
        now: SystemTime::now(),
        signing_time: None,
        sender_email: None,
        sender_problem: None,
        policy: &policy,
        revocation: None,
        purpose: Purpose::Email,
        timestamp: None,
    };
    let (checks, _) = check_signer_certificate(&ee, &inputs);
    let chain = checks.iter().find(|c| c.name == "chain").expect("chain");
    assert!(chain.ok, "{}: {}", chain.name, chain.reason);
    checks
        .iter()
        .find(|c| c.name == "name_constraints")
        .map(|c| (c.ok, c.reason.clone()))
}

/// openssl's verdict: accepted, or the error line.
fn openssl(dir: &std::path::Path, ee: &str, int: &str, root: &str) -> Result<(), String> {
    let out = process::output(
        Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", "smimesign", "-CAfile"])
            .arg(dir.join(format!("{root}.pem")))
            .arg("-untrusted")
            .arg(dir.join(format!("{int}.pem")))
            .arg(dir.join(format!("{ee}.pem"))),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn name_constraints_agree_with_openssl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let out = process::run_with_timeout(
        Command::new("bash").arg("-c").arg(SCRIPT).current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "PKI script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (end entity, intermediate, anchor, within the constraints?, words the refusal must have)
    let cases: &[(&str, &str, &str, bool, &str)] = &[
        ("alice", "int", "root", true, ""),
        // a host below .example.com, an IP inside 10/8, a DNS name not excluded
        ("sub", "int", "root", true, ""),
        (
            "evil",
            "int",
            "root",
            false,
            "e-mail mallory@evil.org is outside",
        ),
        (
            "bad",
            "int",
            "root",
            false,
            "e-mail bad@example.com is excluded",
        ),
        (
            "ip",
            "int",
            "root",
            false,
            "IP address 192.168.1.1 is outside",
        ),
        (
            "dns",
            "int",
            "root",
            false,
            "DNS name secret.example.com is excluded",
        ),
        (
            "otherorg",
            "int",
            "root",
            false,
            "directory name 'CN=alice,O=Other' is outside",
        ),
        // no subjectAltName: the subject's emailAddress is checked as an rfc822Name
        (
            "subjmail",
            "int",
            "root",
            false,
            "e-mail eve@evil.org is outside",
        ),
        // the trust anchor's own constraints bind the whole path
        (
            "dave",
            "int2",
            "root2",
            false,
            "e-mail alice@example.com is outside",
        ),
        ("frank", "int2", "root2", true, ""),
    ];
    for &(ee, int, root, within, words) in cases {
        let (ok, reason) = ours(dir, ee, int, root)
            .unwrap_or_else(|| panic!("{ee}: no name_constraints check on a constrained path"));
        let theirs = openssl(dir, ee, int, root);
        assert_eq!(ok, within, "{ee}: tokenmail says {ok} ({reason})");
        match &theirs {
            Ok(()) => assert!(within, "{ee}: openssl accepts what we refuse: {reason}"),
            Err(e) => {
                assert!(!within, "{ee}: openssl refuses what we accept: {e}");
                assert!(
                    e.contains("subtree violation") || e.contains("name constraint"),
                    "{ee}: openssl refuses for another reason: {e}"
                );
                assert!(
                    reason.contains(words),
                    "{ee}: reason {reason:?} lacks {words:?}"
                );
            }
        }
    }
}
