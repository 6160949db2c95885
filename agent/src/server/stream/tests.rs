//! The stream operations over a software key store: no token, no socket.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;
use tokenmail_proto::v1::{ErrorCode, Request, Response, SignForm};
use tokenmail_smime::envelope::mime::encrypt_message;
use tokenmail_smime::envelope::{ContentCipher, EncryptRecipient};
use tokenmail_smime::mime::{signed_entity, verify_smime};
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::verify::VerifyOptions;
use tokio::sync::mpsc;

use super::{run, Chunk, Done, Input};
use crate::error::AgentError;
use crate::service::Service;
use crate::token::soft::test_support::{ca, store, PIN};
use crate::token::KeyStore;

const MIXED: &[u8] = "From: KEY@example.org\n\
To: bob@example.net\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\
Content-Type: multipart/mixed; boundary=\"b1\"\n\
\n\
--b1\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Grüße aus München\n\
--b1\n\
Content-Type: application/octet-stream\n\
Content-Transfer-Encoding: base64\n\
\n\
AAECAw==\n\
--b1--\n"
    .as_bytes();

/// The test message, From the key's address.
fn from(key: &str) -> Vec<u8> {
    let text = String::from_utf8(MIXED.to_vec()).expect("utf-8");
    text.replacen("KEY@", &format!("{key}@"), 1).into_bytes()
}

fn service(logged_in: bool) -> Service {
    let s = store();
    if logged_in {
        s.login(Some(SecretString::from(PIN.to_string())))
            .expect("login");
    }
    Service::new(vec![Arc::new(s)], HashMap::new())
}

/// The client's input, in small chunks, then End.
fn input(data: &[u8]) -> Input {
    input_in(data, 7)
}

fn input_in(data: &[u8], chunk: usize) -> Input {
    let (tx, rx) = mpsc::channel::<Chunk>(data.len() / chunk + 2);
    for c in data.chunks(chunk) {
        tx.try_send(Chunk::Data(c.to_vec())).expect("queue");
    }
    tx.try_send(Chunk::End).expect("queue");
    Input {
        rx,
        cur: Vec::new(),
        pos: 0,
        done: false,
    }
}

fn output(done: Done) -> (Response, Vec<u8>) {
    let (resp, file) = done;
    let mut out = Vec::new();
    if let Some(mut f) = file {
        f.read_to_end(&mut out).expect("read spool");
    }
    (resp, out)
}

fn sign_req(key: &str, form: SignForm) -> Request {
    Request::Sign {
        key: key.into(),
        form,
        digest: None,
        pss: None,
        crlf: None,
        receipt_request: None,
        security_label: None,
    }
}

fn verify(signed: &[u8]) -> tokenmail_smime::mime::MessageVerification {
    let anchors = [CertEntry::from_der(ca().1.clone()).expect("CA")];
    let opts = VerifyOptions::at(&anchors, SystemTime::now());
    verify_smime(signed, None, &opts).expect("verify")
}

fn code(e: AgentError) -> (ErrorCode, Option<String>) {
    let w = e.to_wire();
    (w.code, w.token)
}

#[test]
fn sign_streams_the_entity_the_core_signs_in_memory() {
    let svc = service(true);
    for (key, form) in [
        ("rsa", SignForm::Multipart),
        ("p256", SignForm::Opaque),
        ("p384", SignForm::Multipart),
    ] {
        let msg = from(key);
        let done = run(&svc, sign_req(key, form), input(&msg)).expect("sign");
        let (resp, out) = output(done);
        assert!(matches!(resp, Response::Signed { .. }), "{resp:?}");
        assert!(out.iter().all(|b| *b < 0x80), "7-bit output");
        let v = verify(&out);
        assert!(v.report.valid, "{key}: {:?}", v.report);
        // one engine: the streaming driver and the in-memory API sign the same bytes
        assert_eq!(v.content, signed_entity(&msg).expect("entity"), "{key}");
    }
}

#[test]
fn sign_without_a_pin_names_the_token() {
    let svc = service(false);
    let e = run(&svc, sign_req("rsa", SignForm::Multipart), input(MIXED)).expect_err("no PIN");
    assert_eq!(code(e), (ErrorCode::PinRequired, Some("soft".into())));
}

#[test]
fn sign_refuses_what_cannot_be_signed() {
    let svc = service(true);
    let e = run(&svc, sign_req("rsa", SignForm::Multipart), input(b"")).expect_err("empty");
    assert_eq!(code(e).0, ErrorCode::BadRequest);
    let bad = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\n\xff\xfe\n--b--\n";
    let e = run(&svc, sign_req("rsa", SignForm::Multipart), input(bad)).expect_err("corrupt");
    let w = e.to_wire();
    assert_eq!(w.code, ErrorCode::BadRequest);
    assert!(w.message.contains("declared base64"), "{}", w.message);
    assert!(!w.message.contains("sign_multipart"), "no internal names");
    let e = run(
        &svc,
        Request::Sign {
            key: "p256".into(),
            form: SignForm::Multipart,
            digest: None,
            pss: Some(true),
            crlf: None,
            receipt_request: None,
            security_label: None,
        },
        input(MIXED),
    )
    .expect_err("PSS with EC");
    assert_eq!(code(e).0, ErrorCode::BadRequest);
    let e = run(&svc, sign_req("nobody", SignForm::Multipart), input(MIXED)).expect_err("no key");
    assert_eq!(code(e).0, ErrorCode::NoSuchKey);
}

fn encrypted_to(svc: &Service, key: &str, cipher: ContentCipher) -> Vec<u8> {
    let (_, entry) = svc
        .keys()
        .into_iter()
        .find(|(_, k)| k.label == key)
        .expect("key");
    let r = EncryptRecipient::from_pem_or_der(entry.certificate.as_deref().expect("cert"))
        .expect("recipient");
    encrypt_message(MIXED, &[r], cipher).expect("encrypt")
}

#[test]
fn decrypt_on_the_store_releases_the_plaintext() {
    let svc = service(true);
    for (key, cipher) in [
        ("rsa", ContentCipher::Aes256Gcm),
        ("p256", ContentCipher::Aes128Cbc),
        ("p384", ContentCipher::Aes256Gcm),
    ] {
        let msg = encrypted_to(&svc, key, cipher);
        // the whole message in one frame too (the envelope is known at once)
        let whole = run(&svc, Request::Decrypt, input_in(&msg, msg.len())).expect("decrypt");
        assert!(matches!(whole.0, Response::Decrypted { .. }));
        let (resp, out) = output(run(&svc, Request::Decrypt, input(&msg)).expect("decrypt"));
        match resp {
            Response::Decrypted {
                key: k,
                authenticated,
                ..
            } => {
                assert_eq!(k, key);
                assert_eq!(authenticated, cipher == ContentCipher::Aes256Gcm);
            }
            other => panic!("{other:?}"),
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("From: KEY@example.org\r\n"), "{text}");
        assert!(text.contains("Grüße aus München"), "{text}");
    }
}

#[test]
fn decrypt_failures_are_uniform_and_say_nothing_of_the_ciphertext() {
    let svc = service(true);
    // a tampered GCM message: the one uniform error
    let mut msg = encrypted_to(&svc, "rsa", ContentCipher::Aes256Gcm);
    let body = msg.windows(4).position(|w| w == b"\r\n\r\n").expect("body") + 4;
    let i = body + (msg.len() - body) * 2 / 3;
    msg[i] = if msg[i] == b'A' { b'B' } else { b'A' };
    let e = run(&svc, Request::Decrypt, input(&msg)).expect_err("tampered");
    let w = e.to_wire();
    assert_eq!(w.code, ErrorCode::DecryptFailed, "{}", w.message);
    assert_eq!(w.message, "decryption failed");
    // not a message at all
    let e = run(&svc, Request::Decrypt, input(b"hello")).expect_err("garbage");
    assert_eq!(code(e).0, ErrorCode::BadRequest);
    // PIN needed: the token's state, not the ciphertext's
    let svc = service(false);
    let msg = encrypted_to(&svc, "rsa", ContentCipher::Aes256Gcm);
    let e = run(&svc, Request::Decrypt, input(&msg)).expect_err("no PIN");
    assert_eq!(code(e), (ErrorCode::PinRequired, Some("soft".into())));
}

/// A token that can be pulled out: the software store while present, `NotPresent` after.
#[derive(Debug)]
struct Removable {
    inner: crate::token::soft::SoftwareStore,
    present: std::sync::atomic::AtomicBool,
}

impl Removable {
    fn here(&self) -> Result<(), crate::token::TokenError> {
        if self.present.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(crate::token::TokenError::NotPresent(
                self.name().to_string(),
            ))
        }
    }
}

impl KeyStore for Removable {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn status(&self) -> tokenmail_proto::v1::TokenStatus {
        self.inner.status()
    }
    fn keys(&self) -> Result<Vec<crate::token::KeyEntry>, crate::token::TokenError> {
        self.here()?;
        self.inner.keys()
    }
    fn login(&self, pin: Option<SecretString>) -> Result<(), crate::token::TokenError> {
        self.here()?;
        self.inner.login(pin)
    }
    fn lock(&self) {
        self.inner.lock()
    }
    fn release(&self) {
        self.inner.release()
    }
    fn expire_pin(&self) {
        self.inner.expire_pin()
    }
    fn sign_digest(
        &self,
        id: &[u8],
        scheme: tokenmail_smime::alg::SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, crate::token::TokenError> {
        self.here()?;
        self.inner.sign_digest(id, scheme, digest)
    }
    fn decrypt(
        &self,
        id: &[u8],
        alg: tokenmail_smime::envelope::KeyTransport,
        wrapped: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::token::TokenError> {
        self.here()?;
        self.inner.decrypt(id, alg, wrapped)
    }
    fn derive(
        &self,
        id: &[u8],
        peer_point: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::token::TokenError> {
        self.here()?;
        self.inner.derive(id, peer_point)
    }
}

/// Found by the soak (docs/reliability.md): with the token pulled out, a decrypt answered
/// `no-such-key` ("none of the keys on the tokens is a recipient"), telling the user the
/// message is not for them. It must say the token is absent, as sign does.
#[test]
fn decrypt_with_the_token_absent_says_not_present() {
    let s = store();
    s.login(Some(SecretString::from(PIN.to_string())))
        .expect("login");
    let token = Arc::new(Removable {
        inner: s,
        present: std::sync::atomic::AtomicBool::new(true),
    });
    let svc = Service::new(vec![token.clone() as Arc<dyn KeyStore>], HashMap::new());
    let msg = encrypted_to(&svc, "rsa", ContentCipher::Aes256Gcm);
    assert!(matches!(
        run(&svc, Request::Decrypt, input(&msg)).expect("present").0,
        Response::Decrypted { .. }
    ));
    token
        .present
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let e = run(&svc, Request::Decrypt, input(&msg)).expect_err("absent");
    assert_eq!(code(e), (ErrorCode::TokenNotPresent, Some("soft".into())));
    let e = run(
        &svc,
        sign_req("rsa", SignForm::Multipart),
        input(&from("rsa")),
    )
    .expect_err("absent");
    assert_eq!(code(e).0, ErrorCode::TokenNotPresent);
    // back: decrypts again
    token
        .present
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        run(&svc, Request::Decrypt, input(&msg)).expect("back").0,
        Response::Decrypted { .. }
    ));
    // a message for nobody on a present token is still no-such-key
    let other = {
        let der = crate::token::soft::test_support::leaf(
            "Other",
            "other@example.org",
            crate::token::soft::test_support::p256_spki(),
            30,
        );
        let r = EncryptRecipient::from_pem_or_der(&der).expect("recipient");
        encrypt_message(MIXED, &[r], ContentCipher::Aes256Gcm).expect("encrypt")
    };
    let e = run(&svc, Request::Decrypt, input(&other)).expect_err("not ours");
    assert_eq!(code(e).0, ErrorCode::NoSuchKey);
}
