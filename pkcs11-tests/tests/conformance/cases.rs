// The conformance cases, shared by tests/conformance.rs (SoftHSM, or the module named by
// TOKENMAIL_PKCS11_MODULE) and tests/conformance_module.rs (libtokenmail_pkcs11.so in front
// of an agent on SoftHSM). Each includes this file with its own `fixture()`.

use std::process::Command;
use std::sync::Arc;

use der::{Decode, Encode};
use rsa::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokenmail_agent::token::{KeyEntry, KeyStore, PublicKey, TokenError};
use tokenmail_pkcs11_tests::run;

use super::fixture;
use tokenmail_smime::alg::{HashAlg, SignatureScheme};
use tokenmail_smime::envelope::{KeyTransport, OaepHash};

fn key(store: &dyn KeyStore, label: &str) -> KeyEntry {
    store
        .keys()
        .expect("keys")
        .into_iter()
        .find(|k| k.label == label)
        .unwrap_or_else(|| panic!("key {label} on the token"))
}

fn digest(h: HashAlg, data: &[u8]) -> Vec<u8> {
    match h {
        HashAlg::Sha256 => Sha256::digest(data).to_vec(),
        HashAlg::Sha384 => Sha384::digest(data).to_vec(),
        HashAlg::Sha512 => Sha512::digest(data).to_vec(),
        HashAlg::Sha1 => unreachable!("no SHA-1 signatures"),
    }
}

fn spki_der(k: &KeyEntry) -> Vec<u8> {
    let cert = x509_cert::Certificate::from_der(k.certificate.as_deref().expect("certificate"))
        .expect("certificate parses");
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .expect("spki encodes")
}

/// Independent verification with RustCrypto, against the public key in the certificate.
fn verify(k: &KeyEntry, alg: SignatureScheme, dig: &[u8], sig: &[u8]) -> bool {
    use signature::hazmat::PrehashVerifier;
    let spki = spki_der(k);
    match alg {
        SignatureScheme::RsaPkcs1v15(_) | SignatureScheme::RsaPss(_) => {
            let pk = rsa::RsaPublicKey::from_public_key_der(&spki).expect("rsa key");
            let pss = matches!(alg, SignatureScheme::RsaPss(_));
            match (alg.hash(), pss) {
                (HashAlg::Sha256, false) => pk.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), dig, sig),
                (HashAlg::Sha384, false) => pk.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), dig, sig),
                (HashAlg::Sha512, false) => pk.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), dig, sig),
                (HashAlg::Sha256, true) => {
                    pk.verify(rsa::Pss::<Sha256>::new_with_salt(32), dig, sig)
                }
                (HashAlg::Sha384, true) => {
                    pk.verify(rsa::Pss::<Sha384>::new_with_salt(48), dig, sig)
                }
                (HashAlg::Sha512, true) => {
                    pk.verify(rsa::Pss::<Sha512>::new_with_salt(64), dig, sig)
                }
                _ => unreachable!(),
            }
            .is_ok()
        }
        SignatureScheme::Ecdsa(_) => match &k.public {
            PublicKey::P256(point) => {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("p256 point");
                let s = p256::ecdsa::Signature::from_der(sig).expect("DER signature");
                vk.verify_prehash(dig, &s).is_ok()
            }
            PublicKey::P384(point) => {
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("p384 point");
                let s = p384::ecdsa::Signature::from_der(sig).expect("DER signature");
                vk.verify_prehash(dig, &s).is_ok()
            }
            _ => false,
        },
    }
}

#[test]
fn lists_keys_paired_with_certificates() {
    let store = fixture().store();
    let keys = store.keys().expect("keys");
    let summary: Vec<(String, String, String)> = keys
        .iter()
        .map(|k| {
            (
                k.label.clone(),
                hex::encode(&k.id),
                k.public.algorithm_name(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("alice-rsa".into(), "01".into(), "rsa-2048".into()),
            ("bob-p256".into(), "02".into(), "ec-p256".into()),
            ("carol-p384".into(), "03".into(), "ec-p384".into()),
        ]
    );
    for (k, email) in keys.iter().zip(["alice", "bob", "carol"]) {
        let der = k
            .certificate
            .as_deref()
            .expect("certificate with the same CKA_ID");
        let on_disk = std::fs::read(fixture().pki(&format!("{}.der", k.label))).expect("pki der");
        assert_eq!(
            der,
            &on_disk[..],
            "the token's certificate is the issued one"
        );
        let intermediate = std::fs::read(fixture().pki("intermediate.der")).expect("intermediate");
        assert_eq!(
            k.chain,
            vec![intermediate],
            "the token's CA certificate chains the key's"
        );
        let facts = tokenmail_agent::token::cert::facts(der).expect("parses");
        assert_eq!(facts.summary.emails, vec![format!("{email}@example.com")]);
        // The public key the token reports is the certificate's.
        if let PublicKey::P256(p) | PublicKey::P384(p) = &k.public {
            let cert = x509_cert::Certificate::from_der(der).expect("cert");
            assert_eq!(
                cert.tbs_certificate()
                    .subject_public_key_info()
                    .subject_public_key
                    .as_bytes()
                    .expect("bit string"),
                &p[..]
            );
        }
    }
    assert!(keys[0].can_sign && keys[0].can_decrypt && !keys[0].can_derive);
    assert!(keys[1].can_sign && keys[1].can_derive && !keys[1].can_decrypt);
}

#[test]
fn every_signature_mechanism_verifies_independently() {
    let store = fixture().store();
    let msg = b"tokenmail conformance message";
    let cases: &[(&str, &[SignatureScheme])] = &[
        (
            "alice-rsa",
            &[
                SignatureScheme::RsaPkcs1v15(HashAlg::Sha256),
                SignatureScheme::RsaPkcs1v15(HashAlg::Sha384),
                SignatureScheme::RsaPkcs1v15(HashAlg::Sha512),
                SignatureScheme::RsaPss(HashAlg::Sha256),
                SignatureScheme::RsaPss(HashAlg::Sha384),
                SignatureScheme::RsaPss(HashAlg::Sha512),
            ],
        ),
        (
            "bob-p256",
            &[
                SignatureScheme::Ecdsa(HashAlg::Sha256),
                SignatureScheme::Ecdsa(HashAlg::Sha384),
            ],
        ),
        (
            "carol-p384",
            &[
                SignatureScheme::Ecdsa(HashAlg::Sha384),
                SignatureScheme::Ecdsa(HashAlg::Sha256),
                SignatureScheme::Ecdsa(HashAlg::Sha512),
            ],
        ),
    ];
    for (label, algs) in cases {
        let k = key(&store, label);
        for alg in *algs {
            let d = digest(alg.hash(), msg);
            let sig = store.sign_digest(&k.id, *alg, &d).expect("token signs");
            assert!(
                verify(&k, *alg, &d, &sig),
                "{label} {} verifies",
                alg.name()
            );
            let mut other = d.clone();
            other[0] ^= 1;
            assert!(
                !verify(&k, *alg, &other, &sig),
                "{label} {} binds the digest",
                alg.name()
            );
        }
    }
}

#[test]
fn openssl_verifies_token_signatures() {
    let f = fixture();
    let store = f.store();
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("msg");
    std::fs::write(&msg, b"signed on the token, checked by openssl").expect("write");
    for (label, alg, md) in [
        (
            "alice-rsa",
            SignatureScheme::RsaPkcs1v15(HashAlg::Sha256),
            "-sha256",
        ),
        (
            "bob-p256",
            SignatureScheme::Ecdsa(HashAlg::Sha256),
            "-sha256",
        ),
        (
            "carol-p384",
            SignatureScheme::Ecdsa(HashAlg::Sha384),
            "-sha384",
        ),
    ] {
        let k = key(&store, label);
        let d = digest(alg.hash(), &std::fs::read(&msg).expect("read"));
        let sig = store.sign_digest(&k.id, alg, &d).expect("sign");
        let sig_path = dir.path().join(format!("{label}.sig"));
        std::fs::write(&sig_path, &sig).expect("write sig");
        let pub_path = dir.path().join(format!("{label}.pub"));
        let pubkey = run(Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(f.pki(&format!("{label}.pem"))));
        std::fs::write(&pub_path, pubkey).expect("write pub");
        let out = run(Command::new("openssl")
            .args(["dgst", md, "-verify"])
            .arg(&pub_path)
            .arg("-signature")
            .arg(&sig_path)
            .arg(&msg));
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "Verified OK",
            "{label}"
        );
    }
}

fn openssl_encrypt(pki_cert: &std::path::Path, plain: &[u8], opts: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let pubk = dir.path().join("pub.pem");
    std::fs::write(
        &pubk,
        run(Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(pki_cert)),
    )
    .expect("write");
    let inp = dir.path().join("in");
    std::fs::write(&inp, plain).expect("write");
    let mut cmd = Command::new("openssl");
    cmd.args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
        .arg(&pubk)
        .arg("-in")
        .arg(&inp);
    for o in opts {
        cmd.args(["-pkeyopt", o]);
    }
    run(&mut cmd)
}

#[test]
fn rsa_decrypts_openssl_ciphertexts_pkcs1_and_oaep() {
    let f = fixture();
    let store = f.store();
    let k = key(&store, "alice-rsa");
    let cek = b"0123456789abcdef0123456789abcdef";
    let cases: &[(KeyTransport, &[&str])] = &[
        (KeyTransport::RsaPkcs1v15, &["rsa_padding_mode:pkcs1"]),
        (
            KeyTransport::RsaOaep {
                hash: OaepHash::Sha1,
            },
            &["rsa_padding_mode:oaep"],
        ),
        (
            KeyTransport::RsaOaep {
                hash: OaepHash::Sha256,
            },
            &[
                "rsa_padding_mode:oaep",
                "rsa_oaep_md:sha256",
                "rsa_mgf1_md:sha256",
            ],
        ),
        (
            KeyTransport::RsaOaep {
                hash: OaepHash::Sha384,
            },
            &[
                "rsa_padding_mode:oaep",
                "rsa_oaep_md:sha384",
                "rsa_mgf1_md:sha384",
            ],
        ),
        (
            KeyTransport::RsaOaep {
                hash: OaepHash::Sha512,
            },
            &[
                "rsa_padding_mode:oaep",
                "rsa_oaep_md:sha512",
                "rsa_mgf1_md:sha512",
            ],
        ),
    ];
    for (alg, opts) in cases {
        let ct = openssl_encrypt(&f.pki("alice-rsa.pem"), cek, opts);
        let pt = store.decrypt(&k.id, *alg, &ct).expect("token decrypts");
        assert_eq!(&pt[..], cek, "{alg:?}");
        // Tampered ciphertext, and the right ciphertext under the wrong padding: one uniform error.
        let mut bad = ct.clone();
        bad[100] ^= 0x40;
        let checks = store.presence_checks();
        assert!(
            matches!(
                store.decrypt(&k.id, *alg, &bad),
                Err(TokenError::DecryptFailed)
            ),
            "{alg:?} tampered"
        );
        // and no more token I/O than a success: no presence check after a padding failure
        assert_eq!(store.presence_checks(), checks, "{alg:?}: extra token call");
    }
    let oaep256 = openssl_encrypt(
        &f.pki("alice-rsa.pem"),
        cek,
        &[
            "rsa_padding_mode:oaep",
            "rsa_oaep_md:sha256",
            "rsa_mgf1_md:sha256",
        ],
    );
    for wrong in [
        KeyTransport::RsaOaep {
            hash: OaepHash::Sha1,
        },
        KeyTransport::RsaPkcs1v15,
        KeyTransport::RsaOaep {
            hash: OaepHash::Sha384,
        },
    ] {
        let e = store
            .decrypt(&k.id, wrong, &oaep256)
            .expect_err("wrong padding fails");
        assert!(matches!(e, TokenError::DecryptFailed), "{wrong:?}: {e:?}");
        assert_eq!(e.to_string(), "decryption failed");
    }
    // OAEP-SHA1 ran on the token; SHA-256 too where the token can, else through CKM_RSA_X_509.
    assert_eq!(store.oaep_path(HashAlg::Sha1), Some(true));
    let softhsm = f.module.to_string_lossy().contains("softhsm");
    if softhsm {
        // SoftHSM 2.6 rejects CKM_RSA_PKCS_OAEP with SHA-256 (CKR_ARGUMENTS_BAD).
        assert_eq!(store.oaep_path(HashAlg::Sha256), Some(false));
    }
    // Wrong length ciphertext: same error, no panic.
    assert!(matches!(
        store.decrypt(
            &k.id,
            KeyTransport::RsaOaep {
                hash: OaepHash::Sha256
            },
            &[1, 2, 3]
        ),
        Err(TokenError::DecryptFailed)
    ));
}

#[test]
fn ecdh_agrees_with_openssl() {
    let f = fixture();
    let store = f.store();
    for (label, curve) in [("bob-p256", "prime256v1"), ("carol-p384", "secp384r1")] {
        let k = key(&store, label);
        let dir = tempfile::tempdir().expect("tempdir");
        let eph = dir.path().join("eph.pem");
        run(Command::new("openssl")
            .args(["ecparam", "-genkey", "-noout", "-name", curve, "-out"])
            .arg(&eph));
        let peer_pub = dir.path().join("peer.pem");
        std::fs::write(
            &peer_pub,
            run(Command::new("openssl")
                .args(["x509", "-pubkey", "-noout", "-in"])
                .arg(f.pki(&format!("{label}.pem")))),
        )
        .expect("write");
        let expected = run(Command::new("openssl")
            .args(["pkeyutl", "-derive", "-inkey"])
            .arg(&eph)
            .arg("-peerkey")
            .arg(&peer_pub));
        let eph_pub_der = run(Command::new("openssl")
            .args([
                "ec",
                "-pubout",
                "-outform",
                "DER",
                "-conv_form",
                "uncompressed",
                "-in",
            ])
            .arg(&eph));
        let spki = spki::SubjectPublicKeyInfoRef::from_der(&eph_pub_der).expect("spki");
        let point = spki.subject_public_key.as_bytes().expect("bits").to_vec();
        let secret = store.derive(&k.id, &point).expect("token derives");
        assert_eq!(&secret[..], &expected[..], "{label}");
        // A point that is not on the curve is refused (by us or by the token), never a panic.
        let mut bad = point.clone();
        bad[5] ^= 1;
        assert!(
            store.derive(&k.id, &bad).is_err(),
            "{label} off-curve point"
        );
    }
}

#[test]
fn mismatched_requests_are_refused_clearly() {
    let store = fixture().store();
    let rsa = key(&store, "alice-rsa");
    let ec = key(&store, "bob-p256");
    let d = digest(HashAlg::Sha256, b"x");
    let e = store
        .sign_digest(&rsa.id, SignatureScheme::Ecdsa(HashAlg::Sha256), &d)
        .expect_err("ecdsa with rsa");
    assert!(matches!(e, TokenError::KeyMismatch(_)), "{e}");
    let e = store
        .sign_digest(&ec.id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
        .expect_err("rsa with ec");
    assert!(matches!(e, TokenError::KeyMismatch(_)), "{e}");
    let e = store
        .sign_digest(&rsa.id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha384), &d)
        .expect_err("short digest");
    assert!(e.to_string().contains("48-byte digest"), "{e}");
    let e = store
        .decrypt(&ec.id, KeyTransport::RsaPkcs1v15, &[0u8; 256])
        .expect_err("decrypt with ec");
    assert!(matches!(e, TokenError::KeyMismatch(_)), "{e}");
    let e = store
        .derive(&rsa.id, &[4u8; 65])
        .expect_err("derive with rsa");
    assert!(matches!(e, TokenError::KeyMismatch(_)), "{e}");
    let e = store
        .sign_digest(&[0x99], SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
        .expect_err("no key");
    assert!(matches!(e, TokenError::NoSuchKey(_)), "{e}");
}

#[test]
fn session_pool_serves_concurrent_requests() {
    let store = Arc::new(fixture().store());
    let rsa = key(store.as_ref(), "alice-rsa");
    let ec = key(store.as_ref(), "bob-p256");
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let (rsa, ec) = (rsa.clone(), ec.clone());
            std::thread::spawn(move || {
                for i in 0..20 {
                    let msg = format!("thread {t} message {i}");
                    let d = digest(HashAlg::Sha256, msg.as_bytes());
                    let (k, alg) = if (t + i) % 2 == 0 {
                        (&rsa, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256))
                    } else {
                        (&ec, SignatureScheme::Ecdsa(HashAlg::Sha256))
                    };
                    let sig = store.sign_digest(&k.id, alg, &d).expect("sign under load");
                    assert!(verify(k, alg, &d, &sig));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let open = store.sessions_open();
    assert!(
        (1..=4).contains(&open),
        "pool bounded by max_sessions=4, got {open}"
    );
}
