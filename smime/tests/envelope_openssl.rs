//! Interoperability of the envelope module with `openssl cms` in both
//! directions, plus tampering, wrong-recipient and truncation checks.

mod envelope_common;

use envelope_common::{
    fixture, openssl, openssl_decrypt, path_str, sample_content, stream_decrypt, Who, ALL,
};
use tokenmail_smime::envelope::{
    decrypt, encrypt, mime, ContentCipher, DecryptError, EncryptRecipient, Encryptor, KeyTransport,
    OaepHash,
};

const CIPHERS: [ContentCipher; 4] = [
    ContentCipher::Aes128Cbc,
    ContentCipher::Aes256Cbc,
    ContentCipher::Aes128Gcm,
    ContentCipher::Aes256Gcm,
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    RsaOaep,
    RsaPkcs1,
    P256,
    P384,
}

fn recipient(kind: Kind) -> (EncryptRecipient, Who) {
    let f = fixture();
    match kind {
        Kind::RsaOaep => (f.recipient(Who::Rsa), Who::Rsa),
        Kind::RsaPkcs1 => (
            f.recipient(Who::Rsa)
                .with_key_transport(KeyTransport::RsaPkcs1v15),
            Who::Rsa,
        ),
        Kind::P256 => (f.recipient(Who::P256), Who::P256),
        Kind::P384 => (f.recipient(Who::P384), Who::P384),
    }
}

/// Our streaming encryptor, fed in small pieces.
fn stream_encrypt(recips: &[EncryptRecipient], cipher: ContentCipher, content: &[u8]) -> Vec<u8> {
    let (mut enc, mut out) = Encryptor::new(recips, cipher).expect("encryptor");
    for piece in content.chunks(1000) {
        out.extend(enc.update(piece).expect("update"));
    }
    out.extend(enc.finish().expect("finish"));
    out
}

// (a) our output → openssl cms -decrypt ------------------------------------

#[test]
fn ours_to_openssl_every_cipher_and_recipient_kind() {
    let f = fixture();
    let content = sample_content(5000);
    for cipher in CIPHERS {
        for kind in [Kind::RsaOaep, Kind::RsaPkcs1, Kind::P256, Kind::P384] {
            let (r, who) = recipient(kind);
            // streaming BER
            let ber = stream_encrypt(std::slice::from_ref(&r), cipher, &content);
            assert_eq!(
                openssl_decrypt(f, who, &ber, "DER"),
                content,
                "{cipher:?} {kind:?} (BER stream)"
            );
            // whole-buffer DER
            let der = encrypt(std::slice::from_ref(&r), cipher, &content).expect("encrypt");
            assert_eq!(der[1], 0x82, "DER definite length for {cipher:?}");
            assert_eq!(
                openssl_decrypt(f, who, &der, "DER"),
                content,
                "{cipher:?} {kind:?} (DER)"
            );
            // and our own decryptor reads both
            let key = f.software_key(who);
            let (pt, auth) = stream_decrypt(&ber, &key, 333).expect("our decrypt of BER");
            assert_eq!(pt, content);
            assert_eq!(auth, cipher.is_authenticated());
            let d = decrypt(&der, &key).expect("our decrypt of DER");
            assert_eq!(&d.content[..], &content[..]);
            assert_eq!(d.authenticated, cipher.is_authenticated());
        }
    }
}

#[test]
fn ours_to_openssl_several_recipients() {
    let f = fixture();
    let content = b"to everybody\r\n".repeat(100);
    let recips: Vec<EncryptRecipient> = ALL.iter().map(|w| f.recipient(*w)).collect();
    for cipher in [ContentCipher::Aes256Gcm, ContentCipher::Aes128Cbc] {
        let ber = stream_encrypt(&recips, cipher, &content);
        for who in ALL {
            assert_eq!(openssl_decrypt(f, who, &ber, "DER"), content, "{who:?}");
            let (pt, _) = stream_decrypt(&ber, &f.software_key(who), 4096).expect("ours");
            assert_eq!(pt, content);
        }
        // the one it is not for
        assert!(matches!(
            stream_decrypt(&ber, &f.software_key(Who::Other), 4096),
            Err(DecryptError::NotARecipient)
        ));
    }
}

#[test]
fn ours_mime_message_to_openssl_smime() {
    let f = fixture();
    let msg = b"From: alice@example.org\nTo: rsa@example.org\nSubject: secret\nDate: Mon, 23 Nov 2026 12:00:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nhello\nworld\n";
    for cipher in [ContentCipher::Aes256Gcm, ContentCipher::Aes256Cbc] {
        let out = mime::encrypt_message(msg, &[f.recipient(Who::Rsa)], cipher).expect("encrypt");
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert!(text.starts_with(
            "From: alice@example.org\r\nTo: rsa@example.org\r\nSubject: secret\r\nDate: "
        ));
        assert!(text.contains(&format!(
            "Content-Type: application/pkcs7-mime; smime-type={}; name=smime.p7m\r\n",
            if cipher.is_authenticated() {
                "authEnveloped-data"
            } else {
                "enveloped-data"
            }
        )));
        assert!(text.contains("Content-Transfer-Encoding: base64\r\n"));
        assert!(text.contains("Content-Disposition: attachment; filename=smime.p7m\r\n"));
        assert_eq!(text.matches("MIME-Version").count(), 1);
        assert!(!text.contains("hello"));
        let expected_entity = b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n";
        // openssl reads the S/MIME form itself
        let (ok, pt, err) = openssl(
            &[
                "cms",
                "-decrypt",
                "-binary",
                "-inkey",
                path_str(&f.key_path(Who::Rsa)),
                "-recip",
                path_str(&f.cert_path(Who::Rsa)),
            ],
            Some(&out),
        );
        assert!(ok, "openssl cms -decrypt of our S/MIME message: {err}");
        assert_eq!(pt, expected_entity);
        // and so do we
        let (pt, _) = stream_decrypt(&out, &f.software_key(Who::Rsa), 50).expect("ours");
        assert_eq!(pt, expected_entity);
    }
}

// (b) openssl cms -encrypt → our decryptor ---------------------------------

fn openssl_encrypt(extra: &[&str], recips: &[Who], content: &[u8]) -> Vec<u8> {
    let f = fixture();
    let mut args: Vec<String> = vec!["cms".into(), "-encrypt".into(), "-binary".into()];
    for who in recips {
        args.push("-recip".into());
        args.push(path_str(&f.cert_path(*who)).into());
    }
    // after the recipients: `-keyopt` applies to the last `-recip`
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = openssl(&args, Some(content));
    assert!(ok, "openssl {args:?}: {err}");
    out
}

fn check_ours(ct: &[u8], who: Who, content: &[u8], authenticated: bool, what: &str) {
    let key = fixture().software_key(who);
    for chunk in [1usize, 7, 4096, usize::MAX] {
        let (pt, auth) = stream_decrypt(ct, &key, chunk)
            .unwrap_or_else(|e| panic!("{what}, chunk {chunk}: {e}"));
        assert_eq!(pt, content, "{what}");
        assert_eq!(auth, authenticated, "{what}");
    }
}

#[test]
fn openssl_to_ours_ciphers_and_forms() {
    let content = sample_content(3000);
    for (cipher, auth) in [
        ("-aes-128-cbc", false),
        ("-aes-256-cbc", false),
        ("-aes-128-gcm", true),
        ("-aes-256-gcm", true),
        ("-aes-192-cbc", false),
        ("-aes-192-gcm", true),
        ("-des3", false),
    ] {
        for form in [
            vec!["-outform", "DER"],
            vec!["-outform", "DER", "-stream"],
            vec!["-outform", "PEM"],
            vec!["-outform", "SMIME"],
            vec!["-outform", "SMIME", "-stream"],
        ] {
            let mut extra = vec![cipher];
            extra.extend(form.iter().copied());
            let ct = openssl_encrypt(&extra, &[Who::Rsa], &content);
            check_ours(&ct, Who::Rsa, &content, auth, &format!("{extra:?}"));
        }
    }
}

#[test]
fn openssl_to_ours_key_transports_and_agreements() {
    let content = sample_content(1234);
    let cases: Vec<(Vec<&str>, Who)> = vec![
        (vec![], Who::Rsa), // PKCS#1 v1.5
        (
            vec![
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
            Who::Rsa,
        ),
        (vec!["-keyopt", "rsa_padding_mode:oaep"], Who::Rsa), // OAEP SHA-1
        (vec!["-keyid"], Who::Rsa),                           // SubjectKeyIdentifier
        (vec![], Who::P256),                                  // sha1kdf (openssl default)
        (vec!["-keyopt", "ecdh_kdf_md:sha256"], Who::P256),
        (vec!["-keyopt", "ecdh_kdf_md:sha384"], Who::P384),
        (vec![], Who::P384),
        (vec!["-keyid"], Who::P256), // rKeyId
    ];
    for cipher in ["-aes-256-gcm", "-aes-128-cbc"] {
        for (opts, who) in &cases {
            let mut extra = vec![cipher, "-outform", "DER"];
            extra.extend(opts.iter().copied());
            let ct = openssl_encrypt(&extra, &[*who], &content);
            check_ours(
                &ct,
                *who,
                &content,
                cipher.ends_with("gcm"),
                &format!("{extra:?} {who:?}"),
            );
        }
    }
}

#[test]
fn openssl_to_ours_several_recipients_streamed() {
    let content = sample_content(70_000);
    let ct = openssl_encrypt(
        &["-aes-256-gcm", "-outform", "DER", "-stream"],
        &[Who::Rsa, Who::P256, Who::P384],
        &content,
    );
    for who in ALL {
        check_ours(&ct, who, &content, true, &format!("{who:?}"));
    }
    assert!(matches!(
        stream_decrypt(&ct, &fixture().software_key(Who::Other), 4096),
        Err(DecryptError::NotARecipient)
    ));
}

// (c) failures ---------------------------------------------------------------

#[test]
fn wrong_recipient_is_a_clean_error() {
    let f = fixture();
    let der = encrypt(&[f.recipient(Who::Rsa)], ContentCipher::Aes256Gcm, b"x").expect("enc");
    for who in [Who::Other, Who::P256, Who::P384] {
        let e = decrypt(&der, &f.software_key(who)).expect_err("not for this key");
        assert!(matches!(e, DecryptError::NotARecipient), "{who:?}: {e:?}");
    }
}

fn flip(mut v: Vec<u8>, at: usize, mask: u8) -> Vec<u8> {
    v[at] ^= mask;
    v
}

#[test]
fn tampered_gcm_ciphertext_and_tag_fail_uniformly() {
    let f = fixture();
    let content = sample_content(100);
    for who in ALL {
        let der = encrypt(&[f.recipient(who)], ContentCipher::Aes256Gcm, &content).expect("enc");
        let n = der.len();
        // DER layout ends with: ... [0] ciphertext, OCTET STRING (16) mac
        assert_eq!(&der[n - 18..n - 16], &[0x04, 0x10]);
        let key = f.software_key(who);
        for bad in [
            flip(der.clone(), n - 1, 1),
            flip(der.clone(), n - 19, 0x40),
            flip(der.clone(), n - 60, 1),
        ] {
            match decrypt(&bad, &key) {
                Err(DecryptError::Failed) => {}
                other => panic!("{who:?}: expected Failed, got {other:?}"),
            }
            match stream_decrypt(&bad, &key, 10) {
                Err(DecryptError::Failed) => {}
                other => panic!("{who:?}: expected Failed, got {:?}", other.map(|_| ())),
            }
        }
        assert_eq!(
            &decrypt(&der, &key).expect("intact").content[..],
            &content[..]
        );
    }
}

#[test]
fn tampered_cbc_padding_fails_uniformly() {
    let f = fixture();
    let content = sample_content(100); // 7 blocks of ciphertext
    for who in ALL {
        let der = encrypt(&[f.recipient(who)], ContentCipher::Aes128Cbc, &content).expect("enc");
        let n = der.len();
        // flipping bit 7 of the next-to-last block's last byte turns the
        // padding byte (1..=16) into 129..=144: always invalid.
        let bad = flip(der, n - 17, 0x80);
        assert!(matches!(
            decrypt(&bad, &f.software_key(who)),
            Err(DecryptError::Failed)
        ));
    }
}

#[test]
fn tampered_wrapped_keys_fail_uniformly() {
    let f = fixture();
    // RSA-OAEP (CBC and GCM), RSA PKCS#1 v1.5 (GCM: a random key then fails the tag), ECDH (unwrap)
    let cases = [
        (f.recipient(Who::Rsa), Who::Rsa, ContentCipher::Aes128Cbc),
        (f.recipient(Who::Rsa), Who::Rsa, ContentCipher::Aes256Gcm),
        (
            f.recipient(Who::Rsa)
                .with_key_transport(KeyTransport::RsaPkcs1v15),
            Who::Rsa,
            ContentCipher::Aes256Gcm,
        ),
        (f.recipient(Who::P256), Who::P256, ContentCipher::Aes128Cbc),
        (f.recipient(Who::P384), Who::P384, ContentCipher::Aes256Gcm),
    ];
    for (r, who, cipher) in cases {
        let der = encrypt(&[r], cipher, b"attack at dawn").expect("enc");
        // find the encrypted key: the last OCTET STRING of the RecipientInfo is
        // long (RSA: 256 bytes; KW: 24/40 bytes); locate it via openssl-like scan
        let parsed = openssl(&["asn1parse", "-inform", "DER"], Some(&der)).1;
        let text = String::from_utf8_lossy(&parsed);
        let line = text
            .lines()
            .find(|l| {
                l.contains("OCTET STRING")
                    && (l.contains("l= 256") || l.contains("l=  24") || l.contains("l=  40"))
            })
            .expect("encrypted key in asn1parse output");
        let off: usize = line
            .split(':')
            .next()
            .expect("offset")
            .trim()
            .parse()
            .expect("num");
        let bad = flip(der, off + 10, 0x01);
        match decrypt(&bad, &f.software_key(who)) {
            Err(DecryptError::Failed) => {}
            other => panic!("{who:?} {cipher:?}: expected Failed, got {other:?}"),
        }
    }
}

#[test]
fn truncated_input_never_succeeds_or_panics() {
    let f = fixture();
    let content = sample_content(200);
    for (cipher, who) in [
        (ContentCipher::Aes256Gcm, Who::P256),
        (ContentCipher::Aes128Cbc, Who::P256),
    ] {
        let key = f.software_key(who);
        let (mut enc, header) = Encryptor::new(&[f.recipient(who)], cipher).expect("enc");
        let mut ber = header.clone();
        ber.extend(enc.update(&content).expect("update"));
        ber.extend(enc.finish().expect("finish"));
        let der = encrypt(&[f.recipient(who)], cipher, &content).expect("enc");
        for (full, header_len) in [(ber, header.len()), (der, usize::MAX)] {
            for cut in 0..full.len() {
                match stream_decrypt(&full[..cut], &key, 64) {
                    Ok(_) => panic!(
                        "{cipher:?}: a {cut}-byte prefix of {} decrypted",
                        full.len()
                    ),
                    // once the header is complete, only the uniform error
                    Err(DecryptError::Failed) => {}
                    Err(DecryptError::Malformed(_)) if cut < header_len => {}
                    Err(e) => panic!("{cipher:?} cut {cut}: unexpected {e:?}"),
                }
            }
            // trailing garbage is rejected too
            let mut long = full.clone();
            long.extend_from_slice(b"\x30\x00");
            assert!(stream_decrypt(&long, &key, 64).is_err());
        }
    }
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let key = fixture().software_key(Who::Rsa);
    for input in [
        &b""[..],
        b"\x30",
        b"\x30\x80\x06\x03\x2a\x03\x04",
        b"hello world",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"Content-Type: text/plain\r\n\r\nhi",
        b"\x30\x84\xff\xff\xff\xff",
    ] {
        assert!(decrypt(input, &key).is_err());
        assert!(stream_decrypt(input, &key, 1).is_err());
    }
}

#[test]
fn oaep_sha256_parameters_as_rfc4055() {
    let f = fixture();
    let der = encrypt(&[f.recipient(Who::Rsa)], ContentCipher::Aes128Cbc, b"x").expect("enc");
    let (ok, out, _) = openssl(&["cms", "-cmsout", "-print", "-inform", "DER"], Some(&der));
    assert!(ok);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("rsaesOaep"), "{text}");
    assert!(text.contains("sha256"), "{text}");
    assert!(text.contains("mgf1"), "{text}");
    let _ = OaepHash::Sha256;
}

#[test]
fn key_usage_is_enforced_when_encrypting() {
    let f = fixture();
    let dir = f.dir.path();
    let key = dir.join("sigonly.key");
    let cert = dir.join("sigonly.pem");
    let (ok, _, err) = openssl(
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=signing only",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&cert),
            "-addext",
            "keyUsage=critical,digitalSignature",
        ],
        None,
    );
    assert!(ok, "{err}");
    let pem = std::fs::read(&cert).expect("cert");
    let e = EncryptRecipient::from_pem_or_der(&pem).expect_err("signing-only certificate");
    assert!(e.to_string().contains("keyAgreement"), "{e}");
}

#[test]
fn envelope_types_are_send() {
    fn is_send<T: Send>() {}
    is_send::<tokenmail_smime::envelope::Encryptor>();
    is_send::<tokenmail_smime::envelope::Decryptor>();
    is_send::<tokenmail_smime::envelope::ParsedEnvelope>();
}

#[test]
fn gcm_plaintext_is_only_released_as_unverified_before_the_tag() {
    use tokenmail_smime::envelope::EnvelopeParser;
    let f = fixture();
    let content = sample_content(1000);
    let der = encrypt(
        &[f.recipient(Who::P256)],
        ContentCipher::Aes256Gcm,
        &content,
    )
    .expect("enc");
    let n = der.len();
    let bad = flip(der, n - 1, 0x01); // last byte of the tag
    let key = f.software_key(Who::P256);
    let parsed = EnvelopeParser::new()
        .push(&bad)
        .expect("header")
        .expect("complete");
    let mut d = parsed.decryptor(&key).expect("key recovered");
    let unverified = d.update(&[]).expect("update");
    // the decryptor streams: the (correct) plaintext came out, but marked unverified …
    assert_eq!(unverified.as_unverified_bytes(), &content[..]);
    // … and finish refuses it
    assert!(matches!(d.finish(), Err(DecryptError::Failed)));
}

#[test]
fn random_mutations_never_panic_and_gcm_never_accepts() {
    let f = fixture();
    let key = f.software_key(Who::P256);
    let content = sample_content(300);
    let mut seed: u64 = 0x1234_5678_9abc_def0;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for cipher in [ContentCipher::Aes256Gcm, ContentCipher::Aes128Cbc] {
        let ber = stream_encrypt(&[f.recipient(Who::P256)], cipher, &content);
        for _ in 0..300 {
            let mut m = ber.clone();
            let flips = 1 + next() % 3;
            for _ in 0..flips {
                let at = (next() % m.len() as u64) as usize;
                m[at] ^= 1 << (next() % 8);
            }
            if m == ber {
                continue;
            }
            let r = stream_decrypt(&m, &key, 1 + (next() % 100) as usize);
            if cipher.is_authenticated() {
                // a mutation may only succeed if it left content and tag intact
                // (e.g. a length re-encoding cannot happen here): with GCM any
                // success must give the exact content.
                if let Ok((pt, _)) = r {
                    assert_eq!(pt, content);
                }
            }
        }
    }
}

#[test]
fn recipient_certificate_files_in_several_forms() {
    let f = fixture();
    let pem = std::fs::read(f.cert_path(Who::P256)).expect("pem");
    let (ok, der, err) = openssl(
        &[
            "x509",
            "-outform",
            "DER",
            "-in",
            path_str(&f.cert_path(Who::P256)),
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut noisy = b"Bag Attributes\n    localKeyID: 01\nsubject=CN = x\n".to_vec();
    noisy.extend_from_slice(&pem);
    noisy.extend_from_slice(&std::fs::read(f.cert_path(Who::Rsa)).expect("pem"));
    for bytes in [pem, der, noisy] {
        let r = EncryptRecipient::from_pem_or_der(&bytes).expect("certificate");
        let ct = encrypt(&[r], ContentCipher::Aes128Gcm, b"hi").expect("enc");
        assert_eq!(
            &decrypt(&ct, &f.software_key(Who::P256))
                .expect("dec")
                .content[..],
            b"hi"
        );
    }
    assert!(EncryptRecipient::from_pem_or_der(b"not a certificate").is_err());
}

#[test]
fn message_decryptor_lets_the_caller_try_several_keys() {
    use tokenmail_smime::envelope::MessageDecryptor;
    let f = fixture();
    let content = sample_content(5000);
    let msg = openssl_encrypt(
        &["-aes-256-gcm", "-outform", "SMIME", "-stream"],
        &[Who::P384],
        &content,
    );
    let mut md = MessageDecryptor::new();
    let mut pt = Vec::new();
    let (head, rest) = msg.split_at(msg.len() / 2);
    pt.extend(md.push(head).expect("push").into_unverified_bytes());
    assert!(pt.is_empty(), "nothing before a key is chosen");
    let env = md.envelope().expect("header parsed from the first half");
    assert!(env.authenticated());
    assert_eq!(env.recipient_ids().len(), 1);
    for wrong in [Who::Rsa, Who::P256, Who::Other] {
        assert!(matches!(
            md.unlock(&f.software_key(wrong)),
            Err(DecryptError::NotARecipient)
        ));
    }
    pt.extend(
        md.unlock(&f.software_key(Who::P384))
            .expect("unlock")
            .into_unverified_bytes(),
    );
    pt.extend(md.push(rest).expect("push").into_unverified_bytes());
    let outcome = md.finish().expect("verified");
    pt.extend(outcome.final_plaintext);
    assert!(outcome.authenticated);
    assert_eq!(pt, content);
}

/// A key whose token is "removed" on the first attempt.
struct FlakyKey {
    inner: tokenmail_smime::envelope::SoftwareKey,
    tries: std::cell::Cell<u32>,
}

impl tokenmail_smime::envelope::RecipientKey for FlakyKey {
    fn certificate(&self) -> &x509_cert::Certificate {
        self.inner.certificate()
    }
    fn decrypt_key(
        &self,
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, tokenmail_smime::envelope::KeyOpError> {
        self.tries.set(self.tries.get() + 1);
        if self.tries.get() == 1 {
            return Err(tokenmail_smime::envelope::KeyOpError::Unavailable(
                "token not present".into(),
            ));
        }
        self.inner.decrypt_key(alg, wrapped)
    }
    fn ecdh(
        &self,
        peer: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, tokenmail_smime::envelope::KeyOpError> {
        self.inner.ecdh(peer)
    }
}

#[test]
fn unavailable_key_is_reported_and_can_be_retried() {
    use tokenmail_smime::envelope::{MessageDecryptor, RecipientKey};
    let f = fixture();
    let der = encrypt(
        &[f.recipient(Who::Rsa)],
        ContentCipher::Aes256Gcm,
        b"retry me",
    )
    .expect("enc");
    let key = FlakyKey {
        inner: f.software_key(Who::Rsa),
        tries: std::cell::Cell::new(0),
    };
    let _ = key.certificate();
    let mut md = MessageDecryptor::new();
    assert!(md.push(&der).expect("push").is_empty());
    match md.unlock(&key) {
        Err(DecryptError::KeyUnavailable(m)) => assert_eq!(m, "token not present"),
        other => panic!("expected KeyUnavailable, got {other:?}"),
    }
    let mut pt = md.unlock(&key).expect("second try").into_unverified_bytes();
    let outcome = md.finish().expect("finish");
    pt.extend(outcome.final_plaintext);
    assert_eq!(pt, b"retry me");
}

#[test]
fn known_length_streaming_output_is_der() {
    let f = fixture();
    for cipher in CIPHERS {
        for len in [0usize, 15, 16, 1000, 70_000] {
            let content = sample_content(len);
            let recips = [f.recipient(Who::Rsa), f.recipient(Who::P256)];
            let (mut enc, mut out) =
                Encryptor::new_with_length(&recips, cipher, len as u64).expect("enc");
            for piece in content.chunks(777) {
                out.extend(enc.update(piece).expect("update"));
            }
            out.extend(enc.finish().expect("finish"));
            // strict DER: openssl re-encodes it byte for byte
            let (ok, reenc, err) = openssl(
                &["cms", "-cmsout", "-inform", "DER", "-outform", "DER"],
                Some(&out),
            );
            assert!(ok, "{err}");
            assert_eq!(reenc, out, "{cipher:?} {len}: not DER");
            assert_eq!(openssl_decrypt(f, Who::P256, &out, "DER"), content);
            let (pt, _) = stream_decrypt(&out, &f.software_key(Who::Rsa), 1000).expect("ours");
            assert_eq!(pt, content);
        }
    }
    // a wrong length is refused
    let (mut enc, _) =
        Encryptor::new_with_length(&[f.recipient(Who::P256)], ContentCipher::Aes256Gcm, 10)
            .expect("enc");
    assert!(enc.update(b"12345").is_ok());
    assert!(enc.finish().is_err());
    let (mut enc, _) =
        Encryptor::new_with_length(&[f.recipient(Who::P256)], ContentCipher::Aes256Gcm, 2)
            .expect("enc");
    assert!(enc.update(b"12345").is_err());
}

/// The decrypt cipher policy: `any` accepts and names every cipher, `aes` refuses 3DES,
/// `authenticated` refuses every CBC message; a refusal comes before the key is asked
/// for (no token operation, nothing about the ciphertext learnt).
#[test]
fn cipher_policy_refuses_3des_and_cbc_before_any_key_is_used() {
    use tokenmail_smime::pipeline::{
        decrypt_stream, CipherPolicy, DecryptFailure, DecryptStream, WriteChunks,
    };
    let content = sample_content(2000);
    let cases = [
        ("-des3", "3DES-CBC", true, false),
        ("-aes-128-cbc", "AES-128-CBC", false, false),
        ("-aes-256-gcm", "AES-256-GCM", false, true),
    ];
    for (arg, name, legacy, authenticated) in cases {
        let ct = openssl_encrypt(&[arg, "-outform", "DER"], &[Who::Rsa], &content);
        for policy in [
            CipherPolicy::Any,
            CipherPolicy::Aes,
            CipherPolicy::Authenticated,
        ] {
            let refused = match policy {
                CipherPolicy::Any => false,
                CipherPolicy::Aes => legacy,
                CipherPolicy::Authenticated => !authenticated,
            };
            let stream = DecryptStream {
                entity_only: true,
                chunk: 512,
                policy,
            };
            let mut asked = 0;
            let mut out = WriteChunks::new(Vec::new());
            let r = decrypt_stream(&mut &ct[..], &mut out, &stream, |_| {
                asked += 1;
                Ok::<_, String>(fixture().software_key(Who::Rsa))
            });
            let what = format!("{arg} under {policy:?}");
            if refused {
                match r {
                    Err(DecryptFailure::Refused(why)) => {
                        assert!(
                            why.contains(name) && why.contains("--accept"),
                            "{what}: {why}"
                        )
                    }
                    other => panic!("{what}: expected a refusal, got {other:?}"),
                }
                assert_eq!(asked, 0, "{what}: no key asked for");
            } else {
                let o = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    (o.cipher, o.legacy, o.authenticated),
                    (name, legacy, authenticated)
                );
                assert_eq!(out.into_inner(), content, "{what}");
            }
        }
    }
    assert_eq!(
        CipherPolicy::from_name("gcm"),
        Some(CipherPolicy::Authenticated)
    );
    assert_eq!(CipherPolicy::from_name("AES"), Some(CipherPolicy::Aes));
    assert_eq!(CipherPolicy::from_name("des"), None);
}
