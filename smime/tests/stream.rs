//! EncapsulatedSplitter: streamed opaque SignedData equals the whole-buffer parse.

mod common;

use common::{pki, run, scratch};
use std::process::Command;
use std::time::SystemTime;
use tokenmail_smime::alg::{ContentHasher, MultiHasher};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::signed::{sign_encapsulated, DigestSigner, OpaqueStream, SignOptions};
use tokenmail_smime::stream::EncapsulatedSplitter;
use tokenmail_smime::verify::{verify, ParsedSignedData, VerifyOptions};

fn content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 253) as u8).collect()
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    let p = pki();
    let c = content();
    let o = SignOptions {
        signing_time: Some(SystemTime::now()),
        ..SignOptions::default()
    };
    let mut v = vec![(
        "ours DER".to_string(),
        sign_encapsulated(
            &p.signer("ee_rsa"),
            &p.cert("ee_rsa"),
            &[p.cert("int")],
            &c,
            &o,
        )
        .expect("sign"),
    )];
    // ours, BER streamed
    let signer = p.signer("ee_p256");
    let hash = o.scheme_for(signer.key_kind()).expect("scheme").hash();
    let st = OpaqueStream::new(hash);
    let mut ber = st.header().expect("header");
    let mut h = ContentHasher::new(hash);
    for chunk in c.chunks(10_000) {
        ber.extend(OpaqueStream::chunk_header(chunk.len()));
        ber.extend_from_slice(chunk);
        h.update(chunk);
    }
    ber.extend(
        st.trailer(
            &signer,
            &p.cert("ee_p256"),
            &[p.cert("int")],
            &h.finalize(),
            &o,
        )
        .expect("trailer"),
    );
    v.push(("ours BER".into(), ber));
    // openssl, DER and -stream BER
    let d = scratch();
    std::fs::write(d.path().join("c"), &c).expect("write");
    for (label, extra) in [("openssl DER", vec![]), ("openssl BER", vec!["-stream"])] {
        let (ok, _, err) = run(Command::new("openssl")
            .current_dir(d.path())
            .args([
                "cms",
                "-sign",
                "-binary",
                "-nodetach",
                "-in",
                "c",
                "-outform",
                "DER",
                "-out",
                "s",
            ])
            .arg("-signer")
            .arg(p.path("ee_p384.pem"))
            .arg("-inkey")
            .arg(p.path("ee_p384.key"))
            .arg("-certfile")
            .arg(p.path("int.pem"))
            .args(extra));
        assert!(ok, "{err}");
        v.push((
            label.into(),
            std::fs::read(d.path().join("s")).expect("read"),
        ));
    }
    v
}

#[test]
fn streamed_equals_whole_and_verifies() {
    let anchors = CertEntry::from_pem_bundle(&std::fs::read(pki().path("root.pem")).expect("read"))
        .expect("pem");
    let c = content();
    for (label, cms) in inputs() {
        let whole = ParsedSignedData::parse(&cms).expect("whole parse");
        assert_eq!(whole.encapsulated_content(), Some(c.as_slice()), "{label}");
        for size in [1usize, 7, 4096, 1 << 20] {
            if size == 1 && cms.len() > 100_000 {
                // byte-by-byte over 300 kB is slow in debug builds: cover the header only
                let mut s = EncapsulatedSplitter::new();
                let mut got = Vec::new();
                for b in cms[..2000].chunks(1) {
                    got.extend(s.update(b).expect("update"));
                }
                got.extend(s.update(&cms[2000..]).expect("update"));
                let parsed = s.finish().expect("finish");
                assert_eq!(got, c, "{label} bytewise head");
                assert_eq!(parsed.signers.len(), 1);
                continue;
            }
            let mut s = EncapsulatedSplitter::new();
            let mut hasher = MultiHasher::new(&whole.digest_algorithms());
            let mut got = 0usize;
            for chunk in cms.chunks(size) {
                let part = s.update(chunk).expect("update");
                if !part.is_empty() {
                    // the digest algorithms are known before the first content byte
                    assert_eq!(
                        s.digest_algorithms().as_deref(),
                        Some(whole.digest_algorithms().as_slice()),
                        "{label}"
                    );
                }
                assert_eq!(&part[..], &c[got..got + part.len()], "{label} chunk {size}");
                got += part.len();
                hasher.update(&part);
            }
            assert_eq!(got, c.len(), "{label} chunk {size}");
            let parsed = s.finish().expect("finish");
            assert!(parsed.encapsulated_content().is_none());
            let r = verify(
                &parsed,
                &hasher.finalize(),
                &VerifyOptions {
                    trust_anchors: &anchors,
                    extra_certs: &[],
                    now: SystemTime::now(),
                    sender_email: Some("alice@example.com"),
                    sender_problem: None,
                    policy: Policy::default(),
                    ..VerifyOptions::at(&anchors, SystemTime::now())
                },
            );
            assert!(r.valid, "{label} chunk {size}: {:?}", r);
        }
    }
}

#[test]
fn truncated_or_foreign_input_is_an_error() {
    for (label, cms) in inputs() {
        for cut in [0, 5, 40, cms.len() / 2, cms.len() - 3] {
            let mut s = EncapsulatedSplitter::new();
            let r = s.update(&cms[..cut]).and_then(|_| s.finish());
            assert!(r.is_err(), "{label} cut at {cut}");
        }
    }
    let mut s = EncapsulatedSplitter::new();
    assert!(s
        .update(&[0x30, 0x80, 0x06, 0x03, 0x2a, 0x03, 0x04])
        .is_err());
}
