//! PKCS#12 files made by openssl (OpenSSL 3 defaults, `-legacy`, other MAC and PBE
//! choices, RSA and EC keys) read back: the key is the certificate's, the chain comes
//! along, a wrong password is one error, and damaged files fail cleanly.

mod common;

use common::{pki, run, scratch};
use std::path::Path;
use std::process::Command;
use tokenmail_smime::pkcs12::{parse, Pkcs12Error};
use x509_cert::der::Decode;

fn pem_to_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("read");
    let (_, der) = x509_cert::der::pem::decode_vec(text.as_bytes()).expect("pem");
    der
}

/// `openssl pkcs12 -export` of `name` (key + certificate) with the intermediate as chain.
fn export(dir: &Path, name: &str, password: &str, extra: &[&str]) -> Vec<u8> {
    let p = pki();
    let out = dir.join(format!("{name}.p12"));
    let (ok, _, err) = run(Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(p.path(&format!("{name}.key")))
        .arg("-in")
        .arg(p.path(&format!("{name}.pem")))
        .arg("-certfile")
        .arg(p.path("int.pem"))
        .args(["-name", "escrowed key", "-passout"])
        .arg(format!("pass:{password}"))
        .args(extra)
        .arg("-out")
        .arg(&out));
    assert!(ok, "openssl pkcs12 -export {extra:?}: {err}");
    std::fs::read(&out).expect("p12")
}

fn check(name: &str, p12: &[u8], password: &str) {
    let p = pki();
    let got = parse(p12, password).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        got.certificate,
        pem_to_der(&p.path(&format!("{name}.pem"))),
        "{name}: the key's certificate"
    );
    assert_eq!(
        got.chain,
        vec![pem_to_der(&p.path("int.pem"))],
        "{name}: chain"
    );
    assert_eq!(got.friendly_name.as_deref(), Some("escrowed key"));
    // the key is the one openssl was given (compare PKCS#8 public parts through openssl)
    let key_der = std::fs::read(p.path(&format!("{name}.key"))).expect("key");
    let (_, want) = x509_cert::der::pem::decode_vec(&key_der).expect("pem");
    let want = pkcs8::PrivateKeyInfoRef::from_der(&want).expect("pkcs8");
    let have = pkcs8::PrivateKeyInfoRef::from_der(&got.private_key).expect("pkcs8");
    assert_eq!(
        have.private_key.as_bytes(),
        want.private_key.as_bytes(),
        "{name}: the same private key"
    );
    assert!(
        matches!(parse(p12, "wrong password"), Err(Pkcs12Error::Password)),
        "{name}: wrong password"
    );
}

#[test]
fn openssl_files_of_every_kind_are_read() {
    let dir = scratch();
    let cases: &[(&str, &[&str])] = &[
        ("openssl 3 defaults (PBES2 AES-256, MAC SHA-256)", &[]),
        (
            "-legacy (RC2-40 certificates, 3DES key, MAC SHA-1)",
            &["-legacy"],
        ),
        (
            "3DES both, MAC SHA-1 (what gpgsm reads)",
            &[
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        ),
        (
            "AES-128 PBES2, MAC SHA-512",
            &[
                "-keypbe",
                "AES-128-CBC",
                "-certpbe",
                "AES-128-CBC",
                "-macalg",
                "sha512",
            ],
        ),
        ("unencrypted certificates", &["-certpbe", "NONE"]),
    ];
    for (what, extra) in cases {
        for name in ["ee_rsa", "ee_p256", "ee_p384"] {
            let p12 = export(dir.path(), name, "s3cret pässword", extra);
            check(name, &p12, "s3cret pässword");
            eprintln!("ok: {what}, {name}");
        }
    }
    // an empty password (OpenSSL writes the MAC over the BMP form of "")
    let p12 = export(dir.path(), "ee_rsa", "", &[]);
    parse(&p12, "").expect("empty password");
    let p12 = export(dir.path(), "ee_rsa", "", &["-legacy"]);
    parse(&p12, "").expect("empty password, legacy");
}

#[test]
fn damaged_costly_and_keyless_files_fail_cleanly() {
    let dir = scratch();
    let p12 = export(dir.path(), "ee_rsa", "pw", &[]);
    // every truncation and many single-byte changes: an error, never a panic
    for n in (0..p12.len()).step_by(97) {
        assert!(parse(&p12[..n], "pw").is_err());
    }
    for i in (0..p12.len()).step_by(31) {
        let mut m = p12.clone();
        m[i] ^= 0x41;
        let _ = parse(&m, "pw");
    }
    // a file asking for more iterations than we do
    let costly = export(dir.path(), "ee_rsa", "pw", &["-iter", "2000000"]);
    assert!(
        matches!(parse(&costly, "pw"), Err(Pkcs12Error::TooCostly(_))),
        "costly"
    );
    // certificates only
    let out = dir.path().join("nokey.p12");
    let (ok, _, err) = run(Command::new("openssl")
        .args(["pkcs12", "-export", "-nokeys", "-in"])
        .arg(pki().path("ee_rsa.pem"))
        .args(["-passout", "pass:pw", "-out"])
        .arg(&out));
    assert!(ok, "{err}");
    let e = parse(&std::fs::read(&out).expect("read"), "pw").expect_err("no key");
    assert!(e.to_string().contains("no private key"), "{e}");
}
