//! Our verifier: openssl-made signatures accepted, our own round-trip, and every rejection
//! with its distinct reason.

mod common;

use common::{pki, run, scratch};
use std::process::Command;
use std::time::{Duration, SystemTime};
use tokenmail_smime::alg::{ContentDigests, HashAlg, SignatureScheme};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::signed::{sign_detached, sign_encapsulated, SignOptions};
use tokenmail_smime::verify::{verify, ParsedSignedData, VerificationReport, VerifyOptions};

const CONTENT: &[u8] = b"Content-Type: text/plain\r\n\r\nHello from the verifier tests.\r\n";

fn anchors(names: &[&str]) -> Vec<CertEntry> {
    names
        .iter()
        .flat_map(|n| {
            let pem = std::fs::read(pki().path(&format!("{n}.pem"))).expect("read");
            CertEntry::from_pem_bundle(&pem).expect("pem")
        })
        .collect()
}

struct Run<'a> {
    sig: &'a [u8],
    content: Option<&'a [u8]>,
    anchors: Vec<CertEntry>,
    extra: Vec<CertEntry>,
    now: SystemTime,
    from: Option<&'a str>,
    policy: Policy,
}

impl<'a> Run<'a> {
    fn new(sig: &'a [u8], content: Option<&'a [u8]>) -> Self {
        Run {
            sig,
            content,
            anchors: anchors(&["root"]),
            extra: vec![],
            now: SystemTime::now(),
            from: Some("alice@example.com"),
            policy: Policy::default(),
        }
    }

    fn go(&self) -> VerificationReport {
        let parsed = ParsedSignedData::parse(self.sig).expect("parse SignedData");
        let content = match self.content {
            Some(c) => c.to_vec(),
            None => parsed
                .encapsulated_content()
                .expect("encapsulated content")
                .to_vec(),
        };
        let digests = ContentDigests::of(&parsed.digest_algorithms(), &content);
        verify(
            &parsed,
            &digests,
            &VerifyOptions {
                trust_anchors: &self.anchors,
                extra_certs: &self.extra,
                now: self.now,
                sender_email: self.from,
                sender_problem: None,
                policy: self.policy.clone(),
                ..VerifyOptions::at(&self.anchors, self.now)
            },
        )
    }
}

fn failed(r: &VerificationReport) -> Vec<String> {
    let mut v: Vec<String> = r
        .signers
        .iter()
        .flat_map(|s| s.failures().map(|c| c.name.clone()))
        .collect();
    v.sort();
    v
}

fn assert_valid(r: &VerificationReport, what: &str) {
    assert!(
        r.valid,
        "{what}: expected valid, got {}",
        serde_json::to_string_pretty(r).expect("json")
    );
    assert_eq!(r.signers.len(), 1);
}

fn assert_fails(r: &VerificationReport, expected: &[&str], what: &str) {
    assert!(!r.valid, "{what}: expected invalid");
    let mut e: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    e.sort();
    assert_eq!(
        failed(r),
        e,
        "{what}: {}",
        serde_json::to_string_pretty(r).expect("json")
    );
}

fn ours(name: &str, scheme: Option<SignatureScheme>, detached: bool) -> Vec<u8> {
    let p = pki();
    let opts = SignOptions {
        scheme,
        signing_time: Some(SystemTime::now()),
        ..SignOptions::default()
    };
    let signer = p.signer(name);
    let cert = p.cert(name);
    let chain: Vec<_> = match name {
        "ee_deep" => vec![p.cert("int3"), p.cert("int2"), p.cert("int")],
        "ee_pl" => vec![p.cert("int_below"), p.cert("int_pl0")],
        "ee_other" | "ee_self" => vec![],
        _ => vec![p.cert("int")],
    };
    if detached {
        let hash = opts
            .scheme_for(tokenmail_smime::signed::DigestSigner::key_kind(&signer))
            .expect("scheme")
            .hash();
        sign_detached(&signer, &cert, &chain, &hash.digest(CONTENT), &opts).expect("sign")
    } else {
        sign_encapsulated(&signer, &cert, &chain, CONTENT, &opts).expect("sign")
    }
}

/// `openssl cms -sign` with extra args; returns DER (or BER with -stream).
fn openssl_sign(name: &str, args: &[&str], detached: bool) -> Vec<u8> {
    let p = pki();
    let d = scratch();
    std::fs::write(d.path().join("content"), CONTENT).expect("write");
    let mut cmd = Command::new("openssl");
    cmd.current_dir(d.path())
        .args([
            "cms", "-sign", "-binary", "-in", "content", "-outform", "DER", "-out", "sig",
        ])
        .arg("-signer")
        .arg(p.path(&format!("{name}.pem")))
        .arg("-inkey")
        .arg(p.path(&format!("{name}.key")))
        .arg("-certfile")
        .arg(p.path("int.pem"))
        .args(args);
    if !detached {
        cmd.arg("-nodetach");
    }
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "openssl cms -sign {args:?}: {err}");
    std::fs::read(d.path().join("sig")).expect("read sig")
}

#[test]
fn our_signatures_verify() {
    for (name, scheme) in [
        ("ee_rsa", None),
        ("ee_rsa", Some(SignatureScheme::RsaPss(HashAlg::Sha384))),
        ("ee_p256", None),
        ("ee_p384", None),
    ] {
        for detached in [true, false] {
            let sig = ours(name, scheme, detached);
            let r = Run::new(&sig, detached.then_some(CONTENT)).go();
            assert_valid(&r, &format!("{name} {scheme:?} detached={detached}"));
            let s = &r.signers[0];
            assert!(s.signing_time.is_some());
            assert_eq!(s.chain.len(), 3, "EE, intermediate, root");
            assert!(s
                .checks
                .iter()
                .any(|c| c.name == "ess_signing_certificate" && c.ok));
        }
    }
}

#[test]
fn openssl_signatures_verify() {
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("ee_rsa", vec![]),
        ("ee_rsa", vec!["-noattr"]),
        ("ee_rsa", vec!["-md", "sha384"]),
        ("ee_rsa", vec!["-md", "sha512"]),
        ("ee_rsa", vec!["-keyopt", "rsa_padding_mode:pss"]),
        (
            "ee_rsa",
            vec!["-keyopt", "rsa_padding_mode:pss", "-md", "sha512"],
        ),
        ("ee_rsa", vec!["-stream"]),
        ("ee_rsa", vec!["-stream", "-noattr"]),
        ("ee_p256", vec![]),
        ("ee_p256", vec!["-noattr"]),
        ("ee_p256", vec!["-md", "sha384", "-stream"]),
        ("ee_p384", vec!["-md", "sha384"]),
        ("ee_p384", vec!["-md", "sha512", "-noattr"]),
    ];
    for (name, args) in &variants {
        for detached in [true, false] {
            let sig = openssl_sign(name, args, detached);
            if args.contains(&"-stream") && !detached {
                // indefinite-length BER really is what we parse here
                assert_eq!(&sig[..2], &[0x30, 0x80], "expected BER from -stream");
            }
            let r = Run::new(&sig, detached.then_some(CONTENT)).go();
            assert_valid(&r, &format!("openssl {name} {args:?} detached={detached}"));
            if !detached {
                let parsed = ParsedSignedData::parse(&sig).expect("parse");
                assert_eq!(parsed.encapsulated_content(), Some(CONTENT));
            }
        }
    }
}

#[test]
fn pem_signature_parses_like_der() {
    let d = scratch();
    let der = openssl_sign("ee_p256", &[], true);
    std::fs::write(d.path().join("sig.der"), &der).expect("write");
    let (ok, pem, err) = run(Command::new("openssl").current_dir(d.path()).args([
        "cms", "-cmsout", "-inform", "DER", "-in", "sig.der", "-outform", "PEM",
    ]));
    assert!(ok, "{err}");
    let blocks = tokenmail_smime::mime::pem_blocks(&pem).expect("pem");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].1, der);
}

#[test]
fn tampered_content_rejected() {
    for sig in [
        ours("ee_rsa", None, true),
        openssl_sign("ee_p256", &[], true),
    ] {
        let r = Run::new(
            &sig,
            Some(b"Content-Type: text/plain\r\n\r\nHello from the verifier tests!\r\n"),
        )
        .go();
        assert_fails(&r, &["message_digest"], "tampered content");
        assert!(r.signers[0]
            .checks
            .iter()
            .any(|c| c.reason.contains("content was modified")));
    }
    // without signed attributes the signature itself covers the content
    let sig = openssl_sign("ee_rsa", &["-noattr"], true);
    let r = Run::new(&sig, Some(b"other")).go();
    assert_fails(&r, &["signature"], "tampered content, no attributes");
}

#[test]
fn tampered_signed_attributes_rejected() {
    let sig = ours("ee_rsa", None, true);
    // rewrite AES-256-GCM (2.16.840.1.101.3.4.1.46) in smimeCapabilities to AES-256-CBC (.42):
    // the attributes still parse, and only the signature can notice
    let gcm = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e,
    ];
    let at = sig
        .windows(gcm.len())
        .position(|w| w == gcm)
        .expect("smimeCapabilities");
    let mut bad = sig.clone();
    bad[at + gcm.len() - 1] = 0x2a;
    let r = Run::new(&bad, Some(CONTENT)).go();
    assert_fails(&r, &["signature"], "tampered signed attributes");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("signed attributes")));
}

#[test]
fn self_signed_end_entity_rejected() {
    let sig = ours("ee_self", None, true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["chain", "not_self_signed"], "self-signed");
}

#[test]
fn unknown_ca_rejected() {
    let sig = ours("ee_other", None, true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["chain"], "unknown CA");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("Other Root")));
    // and with the right anchor it is fine
    let mut run = Run::new(&sig, Some(CONTENT));
    run.anchors = anchors(&["other_root"]);
    assert_valid(&run.go(), "other root trusted");
}

#[test]
fn expired_and_not_yet_valid_rejected() {
    // (made by openssl: our own signer refuses such a certificate, tests/signer_validity.rs)
    let sig = openssl_sign("ee_expired", &[], true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["validity_at_signing_time", "validity_now"], "expired");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("has expired")));

    let sig = openssl_sign("ee_future", &[], true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(
        &r,
        &["validity_at_signing_time", "validity_now"],
        "not yet valid",
    );
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("not yet valid")));

    // a valid certificate checked far in the future: only "now" fails
    let sig = ours("ee_rsa", None, true);
    let mut run = Run::new(&sig, Some(CONTENT));
    run.now = SystemTime::now() + Duration::from_secs(20 * 365 * 86400);
    assert_fails(&run.go(), &["validity_now"], "checked in 20 years");
}

#[test]
fn wrong_eku_and_key_usage_rejected() {
    let sig = ours("ee_server", None, true);
    assert_fails(
        &Run::new(&sig, Some(CONTENT)).go(),
        &["extended_key_usage"],
        "serverAuth",
    );

    let sig = ours("ee_any", None, true);
    let mut run = Run::new(&sig, Some(CONTENT));
    assert_fails(&run.go(), &["extended_key_usage"], "anyEKU by default");
    run.policy.allow_any_eku = true;
    assert_valid(&run.go(), "anyEKU allowed by policy");

    let sig = ours("ee_noku", None, true);
    assert_fails(
        &Run::new(&sig, Some(CONTENT)).go(),
        &["key_usage"],
        "no digitalSignature",
    );
}

#[test]
fn path_length_and_path_len_constraint() {
    let sig = ours("ee_deep", None, true);
    let mut run = Run::new(&sig, Some(CONTENT));
    let r = run.go();
    assert_valid(&r, "3 intermediates within the default limit");
    assert_eq!(r.signers[0].chain.len(), 5);
    run.policy.max_intermediates = 2;
    assert_fails(&run.go(), &["path_length"], "3 intermediates, limit 2");

    let sig = ours("ee_pl", None, true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["ca_constraints"], "pathlen:0 violated");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("pathLen 0")));
}

#[test]
fn intermediates_from_outside_the_message() {
    let p = pki();
    let opts = SignOptions::default();
    let sig = sign_detached(
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[],
        &HashAlg::Sha256.digest(CONTENT),
        &opts,
    )
    .expect("sign");
    let mut run = Run::new(&sig, Some(CONTENT));
    assert_fails(&run.go(), &["chain"], "no intermediate");
    run.extra = anchors(&["int"]);
    let r = run.go();
    assert_valid(&r, "intermediate given separately");
    assert!(r.signers[0].signing_time.is_none());
}

#[test]
fn weak_algorithms_rejected() {
    let sig = openssl_sign("ee_rsa", &["-md", "sha1"], true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["digest_algorithm"], "SHA-1 digest");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("SHA-1")));

    let sig = ours("ee_sha1", None, true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["certificate_algorithms"], "SHA-1 certificate");

    let sig = ours("ee_1024", None, true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["certificate_algorithms"], "RSA-1024");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("1024-bit")));
}

#[test]
fn sender_email_matching() {
    let sig = ours("ee_rsa", None, true);
    let mut run = Run::new(&sig, Some(CONTENT));
    run.from = Some("alice@EXAMPLE.com");
    assert_valid(&run.go(), "domain case-insensitive");
    run.from = Some("Alice@example.com");
    assert_fails(&run.go(), &["sender_email"], "local part is exact");
    run.from = Some("bob@example.com");
    assert_fails(&run.go(), &["sender_email"], "other sender");

    let sig = ours("ee_subj", None, true);
    let mut run = Run::new(&sig, Some(CONTENT));
    run.from = Some("Alice@example.COM");
    assert_valid(&run.go(), "subject emailAddress");
}

#[test]
fn no_trust_anchor_matches() {
    let sig = ours("ee_rsa", None, false);
    let mut run = Run::new(&sig, None);
    run.anchors = anchors(&["other_root"]);
    assert_fails(&run.go(), &["chain"], "wrong anchor");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(ParsedSignedData::parse(b"").is_err());
    assert!(ParsedSignedData::parse(&[0x30, 0x80]).is_err());
    assert!(ParsedSignedData::parse(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    let sig = ours("ee_rsa", None, true);
    for cut in [1, 10, sig.len() / 2, sig.len() - 1] {
        assert!(ParsedSignedData::parse(&sig[..cut]).is_err());
    }
}

#[test]
fn unknown_critical_extension_rejected() {
    let sig = ours("ee_crit", None, true);
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["critical_extensions"], "unknown critical extension");
    assert!(r.signers[0]
        .checks
        .iter()
        .any(|c| c.reason.contains("1.3.6.1.4.1.99999.1")));
}

fn find(hay: &[u8], needle: &[u8]) -> std::ops::Range<usize> {
    let i = hay
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("present");
    i..i + needle.len()
}

#[test]
fn mutated_signatures_never_panic_and_protected_bytes_matter() {
    let sig = ours("ee_p256", None, false);
    let orig = ParsedSignedData::parse(&sig).expect("parse");
    // the regions the signature protects
    let attrs = orig.signers[0].signed_attrs_der.clone().expect("attrs");
    let protected = [
        find(&sig, CONTENT),
        find(&sig, &attrs[1..]),
        find(&sig, orig.signers[0].info.signature.as_bytes()),
    ];
    let a = anchors(&["root"]);
    let mut parsed_ok = 0;
    for i in 0..sig.len() {
        // both flips in the protected regions, one elsewhere (the test runs in debug builds)
        let flips: &[u8] = if protected.iter().any(|p| p.contains(&i)) || i % 2 == 0 {
            &[0x01, 0x80]
        } else {
            &[]
        };
        for &flip in flips {
            let mut m = sig.clone();
            m[i] ^= flip;
            let Ok(parsed) = ParsedSignedData::parse(&m) else {
                continue;
            };
            parsed_ok += 1;
            let content = parsed.encapsulated_content().unwrap_or_default().to_vec();
            let digests = ContentDigests::of(&parsed.digest_algorithms(), &content);
            let r = verify(
                &parsed,
                &digests,
                &VerifyOptions {
                    trust_anchors: &a,
                    extra_certs: &[],
                    now: SystemTime::now(),
                    sender_email: Some("alice@example.com"),
                    sender_problem: None,
                    policy: Policy::default(),
                    ..VerifyOptions::at(&a, SystemTime::now())
                },
            );
            if protected.iter().any(|p| p.contains(&i)) {
                assert!(!r.valid, "mutation at byte {i} ^ {flip:#x} still valid");
            }
        }
    }
    assert!(parsed_ok > 100, "{parsed_ok}");
}

#[test]
fn subject_key_identifier_signer_and_external_certificates() {
    // -keyid: the SignerInfo names the signer by subjectKeyIdentifier (version 3)
    let sig = openssl_sign("ee_rsa", &["-keyid"], true);
    assert_valid(&Run::new(&sig, Some(CONTENT)).go(), "-keyid");

    // -nocerts: the signer certificate is supplied from outside
    let sig = openssl_sign("ee_p256", &["-nocerts"], true);
    let mut run = Run::new(&sig, Some(CONTENT));
    let r = run.go();
    assert!(failed(&r).contains(&"signer_certificate".to_string()));
    run.extra = anchors(&["ee_p256"]);
    assert_valid(&run.go(), "signer certificate given separately");
}

#[test]
fn two_signers_must_both_pass() {
    let p = pki();
    let d = scratch();
    std::fs::write(d.path().join("content"), CONTENT).expect("write");
    let two = |second: &str| {
        let (ok, _, err) = run(Command::new("openssl")
            .current_dir(d.path())
            .args([
                "cms", "-sign", "-binary", "-in", "content", "-outform", "DER", "-out", "sig",
            ])
            .arg("-signer")
            .arg(p.path("ee_rsa.pem"))
            .arg("-inkey")
            .arg(p.path("ee_rsa.key"))
            .arg("-signer")
            .arg(p.path(&format!("{second}.pem")))
            .arg("-inkey")
            .arg(p.path(&format!("{second}.key")))
            .arg("-certfile")
            .arg(p.path("int.pem")));
        assert!(ok, "{err}");
        std::fs::read(d.path().join("sig")).expect("read")
    };
    let sig = two("ee_p384");
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_eq!(r.signers.len(), 2);
    assert!(
        r.valid,
        "{}",
        serde_json::to_string_pretty(&r).expect("json")
    );

    let sig = two("ee_server");
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_eq!(r.signers.len(), 2);
    assert!(!r.valid);
    assert_eq!(r.signers.iter().filter(|s| s.valid).count(), 1);
    assert_eq!(failed(&r), vec!["extended_key_usage"]);
}

#[test]
fn pss_signed_certificate_chain() {
    let p = pki();
    let sig = sign_detached(
        &p.signer("ee_pss"),
        &p.cert("ee_pss"),
        &[p.cert("int_pss")],
        &HashAlg::Sha256.digest(CONTENT),
        &SignOptions::default(),
    )
    .expect("sign");
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_valid(&r, "intermediate signed with RSA-PSS/SHA-384");
}

#[test]
fn sha1_allowed_only_by_policy() {
    let sig = openssl_sign("ee_rsa", &["-md", "sha1"], true);
    let mut run = Run::new(&sig, Some(CONTENT));
    run.policy.allow_sha1 = true;
    assert_valid(&run.go(), "SHA-1 with allow_sha1");
}

#[test]
fn signing_time_in_the_future_rejected() {
    let p = pki();
    let opts = SignOptions {
        signing_time: Some(SystemTime::now() + Duration::from_secs(3 * 86_400)),
        ..SignOptions::default()
    };
    let sig = sign_detached(
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &HashAlg::Sha256.digest(CONTENT),
        &opts,
    )
    .expect("sign");
    let r = Run::new(&sig, Some(CONTENT)).go();
    assert_fails(&r, &["signing_time"], "signingTime in 3 days");
}

/// RFC 5652 §5.3: a SignerInfo may go without signed attributes only for id-data content;
/// anything else would let the signature be moved to another content type.
#[test]
fn no_signed_attributes_only_for_id_data() {
    // id-ct-TSTInfo as the encapsulated content type, no signed attributes
    let sig = openssl_sign(
        "ee_rsa",
        &["-noattr", "-econtent_type", "1.2.840.113549.1.9.16.1.4"],
        false,
    );
    let r = Run::new(&sig, None).go();
    assert!(!r.valid, "accepted without signed attributes");
    assert_eq!(failed(&r), ["content_type"], "{r:?}");
    // id-data without signed attributes stays valid
    let sig = openssl_sign("ee_rsa", &["-noattr"], false);
    assert_valid(&Run::new(&sig, None).go(), "id-data, no signed attributes");
}

/// Each SignerInfo costs a signature check and a path search: more than
/// `MAX_SIGNERS` (8) are refused before any of that work, fewer are each verified.
#[test]
fn the_number_of_signers_is_bounded() {
    let p = pki();
    let others = [
        "ee_p256",
        "ee_p384",
        "ee_subj",
        "ee_server",
        "ee_any",
        "ee_noku",
        "ee_deep",
        "ee_pl",
    ];
    let again = |n: usize| -> Vec<String> {
        let mut a = Vec::new();
        for name in &others[..n] {
            a.push("-signer".to_string());
            a.push(p.path(&format!("{name}.pem")).display().to_string());
            a.push("-inkey".to_string());
            a.push(p.path(&format!("{name}.key")).display().to_string());
        }
        a
    };
    let two = again(1);
    let two: Vec<&str> = two.iter().map(String::as_str).collect();
    let sig = openssl_sign("ee_rsa", &two, false);
    let parsed = ParsedSignedData::parse(&sig).expect("two signers parse");
    assert_eq!(parsed.signers.len(), 2);
    let nine = again(8);
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    let sig = openssl_sign("ee_rsa", &nine, false);
    let e = ParsedSignedData::parse(&sig).expect_err("nine signers");
    assert!(e.to_string().contains("9 signatures"), "{e}");
}
