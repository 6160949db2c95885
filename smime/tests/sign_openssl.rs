//! Our SignedData, verified by `openssl cms -verify`.

mod common;

use common::{pki, run, scratch};
use std::process::Command;
use std::time::SystemTime;
use tokenmail_smime::alg::{ContentHasher, HashAlg, SignatureScheme};
use tokenmail_smime::signed::{
    sign_detached, sign_encapsulated, DigestSigner, OpaqueStream, SignOptions,
};

const CONTENT: &[u8] = b"Hello, S/MIME.\r\nSecond line with \xc3\xa9 in it.\r\n";

fn cases() -> Vec<(&'static str, Option<SignatureScheme>)> {
    vec![
        ("ee_rsa", None),
        (
            "ee_rsa",
            Some(SignatureScheme::RsaPkcs1v15(HashAlg::Sha384)),
        ),
        (
            "ee_rsa",
            Some(SignatureScheme::RsaPkcs1v15(HashAlg::Sha512)),
        ),
        ("ee_rsa", Some(SignatureScheme::RsaPss(HashAlg::Sha256))),
        ("ee_rsa", Some(SignatureScheme::RsaPss(HashAlg::Sha512))),
        ("ee_p256", None),
        ("ee_p256", Some(SignatureScheme::Ecdsa(HashAlg::Sha384))),
        ("ee_p384", None),
    ]
}

fn opts(scheme: Option<SignatureScheme>) -> SignOptions {
    SignOptions {
        scheme,
        signing_time: Some(SystemTime::now()),
        ..SignOptions::default()
    }
}

fn openssl_verify(args: &[&str], dir: &std::path::Path) -> (bool, Vec<u8>, String) {
    let p = pki();
    let root = p.path("root.pem");
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir)
        .args(["cms", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(&root)
        .args(args);
    run(&mut cmd)
}

#[test]
fn detached_verifies_with_openssl() {
    let p = pki();
    let int = p.cert("int");
    for (name, scheme) in cases() {
        let signer = p.signer(name);
        let cert = p.cert(name);
        let o = opts(scheme);
        let hash = o
            .scheme_for(signer.key_kind())
            .expect("scheme fits key")
            .hash();
        let mut h = ContentHasher::new(hash);
        for chunk in CONTENT.chunks(7) {
            h.update(chunk);
        }
        let sig = sign_detached(
            &signer,
            &cert,
            std::slice::from_ref(&int),
            &h.finalize(),
            &o,
        )
        .expect("sign");
        let d = scratch();
        std::fs::write(d.path().join("sig.der"), &sig).expect("write");
        std::fs::write(d.path().join("content"), CONTENT).expect("write");
        let (ok, out, err) = openssl_verify(
            &[
                "-binary",
                "-inform",
                "DER",
                "-in",
                "sig.der",
                "-content",
                "content",
                "-out",
                "/dev/stdout",
            ],
            d.path(),
        );
        assert!(ok, "{name} {scheme:?}: openssl rejected: {err}");
        assert_eq!(out, CONTENT, "{name} {scheme:?}");
        // openssl sees our attributes
        let (ok, out, _) = run(Command::new("openssl").current_dir(d.path()).args([
            "cms", "-cmsout", "-print", "-inform", "DER", "-in", "sig.der",
        ]));
        assert!(ok);
        let printed = String::from_utf8_lossy(&out);
        for attr in [
            "signingTime",
            "messageDigest",
            "contentType",
            "S/MIME Capabilities",
            "1.2.840.113549.1.9.16.2.47",
        ] {
            assert!(
                printed.contains(attr),
                "{name}: attribute {attr} missing:\n{printed}"
            );
        }
    }
}

#[test]
fn tampered_detached_rejected_by_openssl() {
    let p = pki();
    let signer = p.signer("ee_rsa");
    let o = opts(None);
    let sig = sign_detached(
        &signer,
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &HashAlg::Sha256.digest(CONTENT),
        &o,
    )
    .expect("sign");
    let d = scratch();
    std::fs::write(d.path().join("sig.der"), &sig).expect("write");
    std::fs::write(d.path().join("content"), b"Hello, S/MIME!").expect("write");
    let (ok, _, _) = openssl_verify(
        &[
            "-binary", "-inform", "DER", "-in", "sig.der", "-content", "content",
        ],
        d.path(),
    );
    assert!(!ok, "openssl accepted tampered content");
}

#[test]
fn encapsulated_verifies_with_openssl() {
    let p = pki();
    let int = p.cert("int");
    for (name, scheme) in cases() {
        let signer = p.signer(name);
        let sig = sign_encapsulated(
            &signer,
            &p.cert(name),
            std::slice::from_ref(&int),
            CONTENT,
            &opts(scheme),
        )
        .expect("sign");
        let d = scratch();
        std::fs::write(d.path().join("sig.der"), &sig).expect("write");
        let (ok, out, err) = openssl_verify(
            &[
                "-binary",
                "-inform",
                "DER",
                "-in",
                "sig.der",
                "-out",
                "/dev/stdout",
            ],
            d.path(),
        );
        assert!(ok, "{name} {scheme:?}: openssl rejected: {err}");
        assert_eq!(out, CONTENT);
    }
}

#[test]
fn streamed_ber_opaque_verifies_with_openssl() {
    let p = pki();
    let signer = p.signer("ee_p256");
    let o = opts(None);
    let hash = o.scheme_for(signer.key_kind()).expect("scheme").hash();
    let stream = OpaqueStream::new(hash);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = stream.header().expect("header");
    let mut h = ContentHasher::new(hash);
    for chunk in big.chunks(65_536) {
        out.extend_from_slice(&OpaqueStream::chunk_header(chunk.len()));
        out.extend_from_slice(chunk);
        h.update(chunk);
    }
    out.extend_from_slice(
        &stream
            .trailer(
                &signer,
                &p.cert("ee_p256"),
                &[p.cert("int")],
                &h.finalize(),
                &o,
            )
            .expect("trailer"),
    );
    let d = scratch();
    std::fs::write(d.path().join("sig.ber"), &out).expect("write");
    let (ok, got, err) = openssl_verify(
        &[
            "-binary",
            "-inform",
            "DER",
            "-in",
            "sig.ber",
            "-out",
            "/dev/stdout",
        ],
        d.path(),
    );
    assert!(ok, "openssl rejected streamed BER: {err}");
    assert_eq!(got, big);
}

#[test]
fn wrong_key_for_certificate_is_caught() {
    let p = pki();
    let err = sign_detached(
        &p.signer("ee_rsa"),
        &p.cert("ee_subj"),
        &[],
        &HashAlg::Sha256.digest(CONTENT),
        &opts(None),
    );
    assert!(
        err.is_err(),
        "a key/certificate mismatch must not produce a signature"
    );
}

#[test]
fn sha1_and_mismatched_schemes_refused() {
    let p = pki();
    let rsa = p.signer("ee_rsa");
    let o = opts(Some(SignatureScheme::RsaPkcs1v15(HashAlg::Sha1)));
    assert!(o.scheme_for(rsa.key_kind()).is_err());
    let o = opts(Some(SignatureScheme::Ecdsa(HashAlg::Sha256)));
    assert!(o.scheme_for(rsa.key_kind()).is_err());
}

#[test]
fn detached_pem_verifies_with_openssl() {
    let p = pki();
    let signer = p.signer("ee_rsa");
    let sig = sign_detached(
        &signer,
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &HashAlg::Sha256.digest(CONTENT),
        &opts(None),
    )
    .expect("sign");
    let pem = tokenmail_smime::mime::pem_encode("CMS", &sig);
    assert!(pem.lines().all(|l| l.len() <= 64));
    let d = scratch();
    std::fs::write(d.path().join("sig.pem"), &pem).expect("write");
    std::fs::write(d.path().join("content"), CONTENT).expect("write");
    let (ok, out, err) = openssl_verify(
        &[
            "-binary",
            "-inform",
            "PEM",
            "-in",
            "sig.pem",
            "-content",
            "content",
            "-out",
            "/dev/stdout",
        ],
        d.path(),
    );
    assert!(ok, "{err}");
    assert_eq!(out, CONTENT);
    let back = tokenmail_smime::mime::pem_blocks(pem.as_bytes()).expect("pem");
    assert_eq!(back, vec![("CMS".to_string(), sig)]);
}
