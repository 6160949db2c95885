//! The service over software key stores: key resolution, the private-key requests and
//! their error codes, the PIN requests. No SoftHSM, no card.

use std::collections::HashMap;
use std::sync::Arc;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::Generate;
use secrecy::SecretString;
use sha2::Digest as _;
use tokenmail_proto::v1::{
    Bytes, DecryptAlgorithm, ErrorCode, ErrorInfo, Pin, Request, Response, SignAlgorithm,
};

use super::Service;
use crate::token::soft::test_support::{
    keys, leaf, p256_key, p256_pkcs8, p256_spki, rng, rsa_key, store, PIN,
};
use crate::token::soft::{SoftKey, SoftwareStore};
use crate::token::{KeyStore, TokenError};

fn service() -> Service {
    Service::new(vec![Arc::new(store())], HashMap::new())
}

fn login(svc: &Service, pin: &str) -> Response {
    svc.handle(Request::Login {
        token: None,
        pin: Some(Pin::new(pin.to_string())),
    })
}

fn logged_in() -> Service {
    let svc = service();
    assert!(matches!(login(&svc, PIN), Response::Ok));
    svc
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(ErrorInfo { code, .. }) => Some(*code),
        _ => None,
    }
}

fn sign(svc: &Service, key: &str, algorithm: SignAlgorithm, digest: &[u8]) -> Response {
    svc.handle(Request::SignDigest {
        key: key.into(),
        algorithm,
        digest: Bytes(digest.to_vec()),
    })
}

fn signature(r: Response) -> (String, Vec<u8>) {
    match r {
        Response::Signature { key, signature } => (key, signature.0),
        other => panic!("expected a signature, got {other:?}"),
    }
}

fn secret(r: Response) -> Vec<u8> {
    match r {
        Response::Secret { secret } => secret.0.to_vec(),
        other => panic!("expected a secret, got {other:?}"),
    }
}

fn sha256_fingerprint(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

#[test]
fn find_key_by_label_id_fingerprint_and_email() {
    let svc = service();
    let (st, k) = svc.find_key("rsa").expect("by label");
    assert_eq!((st.name(), k.id.as_slice()), ("soft", &[1u8][..]));
    assert_eq!(svc.find_key("02").expect("by hex id").1.label, "p256");
    let p384_cert = svc
        .find_key("p384")
        .expect("p384")
        .1
        .certificate
        .expect("certificate");
    let fp = sha256_fingerprint(&p384_cert);
    assert_eq!(
        svc.find_key(&format!("sha256:{fp}"))
            .expect("by fingerprint")
            .1
            .label,
        "p384"
    );
    assert_eq!(
        svc.find_key(&format!("sha256:{}", fp.to_ascii_uppercase()))
            .expect("fingerprint in upper case")
            .1
            .label,
        "p384"
    );
    assert_eq!(
        svc.find_key("p256@example.org").expect("by email").1.label,
        "p256"
    );
    assert_eq!(
        svc.find_key("RSA@Example.org")
            .expect("email in any case")
            .1
            .label,
        "rsa"
    );
    for unknown in ["nope", "09", "sha256:00", "nobody@example.org"] {
        assert!(
            matches!(svc.find_key(unknown), Err(TokenError::NoSuchKey(_))),
            "{unknown}"
        );
    }
}

#[test]
fn the_same_label_on_two_tokens_is_ambiguous_but_the_fingerprint_is_not() {
    let other = keys().into_iter().fold(
        SoftwareStore::new("other", SecretString::from(PIN.to_string())),
        SoftwareStore::with_key,
    );
    let other_rsa_cert = other.keys().expect("keys")[0]
        .certificate
        .clone()
        .expect("certificate");
    let svc = Service::new(vec![Arc::new(store()), Arc::new(other)], HashMap::new());
    for name in ["rsa", "01"] {
        assert!(
            matches!(
                svc.find_key(name),
                Err(TokenError::KeyMismatch(m)) if m.contains("soft") && m.contains("other")
            ),
            "{name}"
        );
    }
    let (st, k) = svc
        .find_key(&format!("sha256:{}", sha256_fingerprint(&other_rsa_cert)))
        .expect("the fingerprint names one certificate");
    assert_eq!((st.name(), k.label.as_str()), ("other", "rsa"));
}

#[test]
fn an_email_selects_the_latest_expiry_unless_a_preference_says_otherwise() {
    let chain = vec![crate::token::soft::test_support::ca().1.clone()];
    let short = leaf("short", "both@example.org", p256_spki(), 10);
    let long = leaf("long", "both@example.org", p256_spki(), 400);
    let store = || {
        SoftwareStore::new("soft", SecretString::from(PIN.to_string()))
            .with_key(
                SoftKey::from_pkcs8_der("short", [0x0a], &p256_pkcs8(), &short, chain.clone())
                    .expect("key"),
            )
            .with_key(
                SoftKey::from_pkcs8_der("long", [0x0b], &p256_pkcs8(), &long, chain.clone())
                    .expect("key"),
            )
    };
    let svc = Service::new(vec![Arc::new(store())], HashMap::new());
    assert_eq!(
        svc.find_key("both@example.org").expect("email").1.label,
        "long"
    );
    let Response::Status(st) = svc.handle(Request::Status) else {
        panic!("status")
    };
    let sel = st
        .emails
        .iter()
        .find(|e| e.email == "both@example.org")
        .expect("selection");
    assert_eq!(
        (sel.key.as_str(), sel.reason.as_str()),
        ("long", "latest-expiry")
    );

    let prefer = HashMap::from([("Both@Example.org".to_string(), "0a".to_string())]);
    let svc = Service::new(vec![Arc::new(store())], prefer);
    assert_eq!(
        svc.find_key("both@example.org").expect("email").1.label,
        "short"
    );
}

#[test]
fn sign_digest_rsa_pkcs1_pss_and_ecdsa_verify() {
    let svc = logged_in();
    let pk = rsa_key().to_public_key();
    let d256 = sha2::Sha256::digest(b"content").to_vec();
    let d512 = sha2::Sha512::digest(b"content").to_vec();

    let (key, sig) = signature(sign(&svc, "rsa", SignAlgorithm::RsaPkcs1Sha256, &d256));
    assert_eq!(key, "rsa");
    pk.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &d256, &sig)
        .expect("RSA PKCS#1 v1.5 verifies");

    let (_, sig) = signature(sign(&svc, "01", SignAlgorithm::RsaPssSha256, &d256));
    pk.verify(rsa::Pss::<sha2::Sha256>::new_with_salt(32), &d256, &sig)
        .expect("RSA-PSS SHA-256 verifies");
    let (_, sig) = signature(sign(&svc, "rsa", SignAlgorithm::RsaPssSha512, &d512));
    pk.verify(rsa::Pss::<sha2::Sha512>::new_with_salt(64), &d512, &sig)
        .expect("RSA-PSS SHA-512 verifies");

    let (key, sig) = signature(sign(
        &svc,
        "p256@example.org",
        SignAlgorithm::EcdsaSha256,
        &d256,
    ));
    assert_eq!(key, "p256");
    let sig = p256::ecdsa::Signature::from_der(&sig).expect("DER signature");
    p256_key()
        .verifying_key()
        .verify_prehash(&d256, &sig)
        .expect("ECDSA P-256 verifies");
}

#[test]
fn sign_digest_errors_have_their_codes() {
    let svc = logged_in();
    let d = [0u8; 32];
    assert_eq!(
        code(&sign(&svc, "rsa", SignAlgorithm::RsaPkcs1Sha384, &d)),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code(&sign(&svc, "p256", SignAlgorithm::RsaPssSha256, &d)),
        Some(ErrorCode::KeyMismatch)
    );
    assert_eq!(
        code(&sign(&svc, "nope", SignAlgorithm::EcdsaSha256, &d)),
        Some(ErrorCode::NoSuchKey)
    );
}

#[test]
fn decrypt_key_oaep_and_pkcs1() {
    let svc = logged_in();
    let pk = rsa_key().to_public_key();
    let cek = [0x17u8; 16];
    let decrypt = |algorithm, wrapped: Vec<u8>| {
        svc.handle(Request::DecryptKey {
            key: "rsa@example.org".into(),
            algorithm,
            wrapped: Bytes(wrapped),
        })
    };
    let oaep = pk
        .encrypt(&mut rng(), rsa::Oaep::<sha2::Sha256>::new(), &cek)
        .expect("wrap");
    assert_eq!(
        secret(decrypt(DecryptAlgorithm::RsaOaepSha256, oaep.clone())),
        cek
    );
    let pkcs1 = pk
        .encrypt(&mut rng(), rsa::Pkcs1v15Encrypt, &cek)
        .expect("wrap");
    assert_eq!(secret(decrypt(DecryptAlgorithm::RsaPkcs1, pkcs1)), cek);

    let r = decrypt(DecryptAlgorithm::RsaOaepSha1, oaep);
    assert_eq!(code(&r), Some(ErrorCode::DecryptFailed));
    let Response::Error(e) = r else {
        unreachable!()
    };
    assert_eq!(e.message, "decryption failed");
    assert_eq!(
        code(&svc.handle(Request::DecryptKey {
            key: "p256".into(),
            algorithm: DecryptAlgorithm::RsaPkcs1,
            wrapped: Bytes(vec![0; 256]),
        })),
        Some(ErrorCode::KeyMismatch)
    );
}

#[test]
fn derive_is_ecdh() {
    let svc = logged_in();
    let eph = p256::SecretKey::generate_from_rng(&mut rng());
    let ours = p256::PublicKey::from_sec1_bytes(&p256_key().verifying_key().to_sec1_bytes())
        .expect("point");
    let want = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), ours.as_affine());
    let got = secret(svc.handle(Request::Derive {
        key: "p256".into(),
        peer_point: Bytes(eph.public_key().to_sec1_bytes().to_vec()),
    }));
    assert_eq!(got, want.raw_secret_bytes().to_vec());
    assert_eq!(
        code(&svc.handle(Request::Derive {
            key: "p256".into(),
            peer_point: Bytes(vec![4; 65]),
        })),
        Some(ErrorCode::BadRequest)
    );
}

#[test]
fn pin_required_before_login_wrong_pin_and_lock() {
    let svc = service();
    let d = [1u8; 32];
    // keys are visible, their use needs the PIN
    assert!(svc.find_key("p256").is_ok());
    assert_eq!(
        code(&sign(&svc, "p256", SignAlgorithm::EcdsaSha256, &d)),
        Some(ErrorCode::PinRequired)
    );
    assert_eq!(
        code(&svc.handle(Request::Login {
            token: None,
            pin: None
        })),
        Some(ErrorCode::PinRequired)
    );
    assert_eq!(code(&login(&svc, "000000")), Some(ErrorCode::PinIncorrect));
    assert_eq!(code(&login(&svc, "")), Some(ErrorCode::BadRequest));
    assert_eq!(
        code(&sign(&svc, "p256", SignAlgorithm::EcdsaSha256, &d)),
        Some(ErrorCode::PinRequired)
    );
    assert!(matches!(
        svc.handle(Request::Login {
            token: Some("soft".into()),
            pin: Some(Pin::new(PIN.into())),
        }),
        Response::Ok
    ));
    signature(sign(&svc, "p256", SignAlgorithm::EcdsaSha256, &d));
    let Response::Status(st) = svc.handle(Request::Status) else {
        panic!("status")
    };
    assert!(st.tokens[0].logged_in && !st.tokens[0].locked);

    assert!(matches!(svc.handle(Request::Lock), Response::Ok));
    assert_eq!(
        code(&sign(&svc, "p256", SignAlgorithm::EcdsaSha256, &d)),
        Some(ErrorCode::PinRequired)
    );
    let Response::Status(st) = svc.handle(Request::Status) else {
        panic!("status")
    };
    assert!(!st.tokens[0].logged_in && st.tokens[0].locked);

    assert_eq!(
        code(&svc.handle(Request::Login {
            token: Some("elsewhere".into()),
            pin: Some(Pin::new(PIN.into())),
        })),
        Some(ErrorCode::TokenNotPresent)
    );
}

#[test]
fn a_blocked_pin_is_pin_locked() {
    let svc = Service::new(vec![Arc::new(store().with_pin_tries(1))], HashMap::new());
    assert_eq!(code(&login(&svc, "1")), Some(ErrorCode::PinLocked));
    assert_eq!(code(&login(&svc, PIN)), Some(ErrorCode::PinLocked));
}

#[test]
fn list_keys_and_status_describe_the_software_keys() {
    let svc = service();
    let Response::Keys { keys } = svc.handle(Request::ListKeys) else {
        panic!("keys")
    };
    let names: Vec<(&str, &str, &str)> = keys
        .iter()
        .map(|k| (k.label.as_str(), k.id.as_str(), k.algorithm.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("rsa", "01", "rsa-2048"),
            ("p256", "02", "ec-p256"),
            ("p384", "03", "ec-p384")
        ]
    );
    assert_eq!(keys[0].usage, ["sign", "decrypt"]);
    assert_eq!(keys[1].usage, ["sign", "derive"]);
    let cert = keys[0].certificate.as_ref().expect("certificate summary");
    assert_eq!(cert.emails, ["rsa@example.org"]);
    assert_eq!(cert.issuer, "CN=tokenmail test CA");
    assert_eq!(keys[0].chain.len(), 1);

    let Response::Status(st) = svc.handle(Request::Status) else {
        panic!("status")
    };
    assert_eq!(st.tokens.len(), 1);
    assert_eq!(st.tokens[0].backend, "software");
    assert!(st.tokens[0].present && !st.tokens[0].logged_in);
    let emails: Vec<&str> = st.emails.iter().map(|e| e.email.as_str()).collect();
    assert_eq!(
        emails,
        ["p256@example.org", "p384@example.org", "rsa@example.org"]
    );
    assert!(st
        .emails
        .iter()
        .all(|e| e.reason == "only" && e.token == "soft"));
}
