//! `tokenmail encrypt` checks each recipient's certificate before writing anything
//! (issue 12): expired, signing-only (keyUsage / extendedKeyUsage) and — with trust
//! anchors — unchained certificates are refused, naming the certificate and why;
//! `--allow-untrusted-recipient` overrides only the chain, loudly. (Revoked recipients:
//! cli/tests/revocation_net.rs, with a real OCSP responder.)

use std::path::Path;
use std::process::{Command, Output};

#[path = "../../pkcs11-tests/src/process.rs"]
mod process;

fn encrypt(dir: &Path, extra: &[&str]) -> Output {
    std::fs::write(dir.join("empty.toml"), "").expect("config");
    process::output(
        Command::new(env!("CARGO_BIN_EXE_tokenmail"))
            .args(["encrypt", "--no-self", "-o", "out.eml"])
            .args(extra)
            .arg("msg.txt")
            .current_dir(dir)
            .env("TOKENMAIL_CONFIG", dir.join("empty.toml"))
            .env_remove("TOKENMAIL_TRUST")
            .env("XDG_CACHE_HOME", dir.join("cache")),
    )
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn recipients_are_checked_before_anything_is_encrypted() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let o = process::run_with_timeout(
        Command::new("bash")
            .arg("-c")
            .arg(include_str!("../../smime/tests/pki.sh"))
            .current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(o.status.success(), "{}", err(&o));
    // an RSA certificate for encryption, but for TLS servers only
    let o = process::output(Command::new("bash").current_dir(dir).arg("-c").arg(
        "printf '[tls]\\nbasicConstraints = CA:FALSE\\nkeyUsage = critical,keyEncipherment\\n\
         extendedKeyUsage = serverAuth\\nsubjectAltName = email:alice@example.com\\n' >> ext.cnf && \
         openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ee_tls.key 2>/dev/null && \
         openssl req -new -key ee_tls.key -subj /CN=TLS -out ee_tls.csr -config ext.cnf && \
         openssl x509 -req -in ee_tls.csr -CA int.pem -CAkey int.key -set_serial 99 -days 30 \
         -extfile ext.cnf -extensions tls -out ee_tls.pem 2>/dev/null",
    ));
    assert!(o.status.success(), "{}", err(&o));
    std::fs::write(dir.join("msg.txt"), "Content-Type: text/plain\n\nsecret\n").expect("msg");
    for (a, b, out) in [
        ("ee_rsa.pem", "int.pem", "ee_rsa+int.pem"),
        ("ee_other.pem", "other_root.pem", "ee_other+root.pem"),
    ] {
        let mut bundle = std::fs::read(dir.join(a)).expect("read");
        bundle.extend(std::fs::read(dir.join(b)).expect("read"));
        std::fs::write(dir.join(out), bundle).expect("bundle");
    }

    // without trust anchors: validity and key usage only
    let o = encrypt(dir, &["--recipient-cert", "ee_rsa.pem"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = encrypt(dir, &["--recipient-cert", "ee_other.pem"]);
    assert!(
        o.status.success(),
        "no anchors, no chain required: {}",
        err(&o)
    );
    std::fs::remove_file(dir.join("out.eml")).expect("rm");

    for (cert, says) in [
        ("ee_expired.pem", "has expired"),
        ("ee_future.pem", "not yet valid"),
        (
            "ee_p256.pem",
            "keyUsage does not allow encryption (keyAgreement needed)",
        ),
        (
            "ee_server.pem",
            "keyUsage does not allow encryption (keyEncipherment needed)",
        ),
        (
            "ee_tls.pem",
            "extendedKeyUsage does not include emailProtection",
        ),
    ] {
        let o = encrypt(
            dir,
            &["--recipient-cert", "ee_rsa.pem", "--recipient-cert", cert],
        );
        assert!(!o.status.success(), "{cert}");
        let e = err(&o);
        assert!(
            e.contains("not encrypting: recipient certificate") && e.contains(says),
            "{cert}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(!dir.join("out.eml").exists(), "{cert}: nothing written");
    }

    // with trust anchors: a path is required (the bundle carries the intermediate)
    let o = encrypt(
        dir,
        &["--trust", "root.pem", "--recipient-cert", "ee_rsa+int.pem"],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).is_empty(),
        "an unknown revocation status under soft-fail is silent: {}",
        err(&o)
    );
    std::fs::remove_file(dir.join("out.eml")).expect("rm");
    let o = encrypt(
        dir,
        &[
            "--trust",
            "root.pem",
            "--recipient-cert",
            "ee_other+root.pem",
        ],
    );
    assert!(!o.status.success());
    assert!(
        err(&o).contains("does not chain to a trust anchor")
            && err(&o).contains("--allow-untrusted-recipient"),
        "{}",
        err(&o)
    );
    assert!(!dir.join("out.eml").exists());
    let o = encrypt(
        dir,
        &[
            "--trust",
            "root.pem",
            "--allow-untrusted-recipient",
            "--recipient-cert",
            "ee_other+root.pem",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("WARNING: encrypting to 'CN=Alice Unknown CA'"),
        "{}",
        err(&o)
    );
    // the override is for the chain only
    let o = encrypt(
        dir,
        &[
            "--trust",
            "root.pem",
            "--allow-untrusted-recipient",
            "--recipient-cert",
            "ee_expired.pem",
        ],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("has expired"), "{}", err(&o));
}
