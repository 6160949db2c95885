//! RFC 3161 signature timestamps and ESS (RFC 2634) receipts and security labels, with
//! OpenSSL on the other side: `openssl ts -reply` as the TSA, `openssl ts -verify` on the
//! token, `openssl cms -verify` on the timestamped signature, `openssl cms -sign_receipt`
//! and `-verify_receipt` both ways; and the rejections (tampered token, a token for another
//! signature, a replayed answer, a receipt for another message).

mod common;

use common::{pki, run, scratch};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokenmail_smime::alg::{oid, ContentDigests};
use tokenmail_smime::ess::{check_receipt, make_receipt, ReceiptRequest, SecurityLabel};
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::signed::{sign_encapsulated, sign_encapsulated_as, SignOptions};
use tokenmail_smime::tsp::{TimestampRequest, Tsa, TsaTransport};
use tokenmail_smime::verify::{verify, ParsedSignedData, VerificationReport, VerifyOptions};

const CONTENT: &[u8] = b"Content-Type: text/plain\r\n\r\nTimestamped and receipted.\r\n";

/// The TSA's directory (tsa.key, tsa.pem, tsa.cnf), made once.
fn tsa_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch();
        let out = common::process::run_with_timeout(
            Command::new("bash")
                .arg("-c")
                .arg(include_str!("data/tsa-pki.sh"))
                .env("CA_PEM", pki().path("int.pem"))
                .env("CA_KEY", pki().path("int.key"))
                .current_dir(d.path()),
            None,
            common::process::long_limit(),
        );
        assert!(
            out.status.success(),
            "TSA: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    })
    .path()
}

/// `openssl ts -reply` as the transport (the CLI's is http).
#[derive(Debug)]
struct OpensslTsa;

impl TsaTransport for OpensslTsa {
    fn post(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        // One reply at a time: `openssl ts -reply` reads and rewrites the TSA's serial file,
        // and two at once (tests run in parallel) fail with "Error during serial number
        // generation".
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let d = scratch();
        std::fs::write(d.path().join("q.tsq"), request).map_err(|e| e.to_string())?;
        let (ok, _, err) = run(Command::new("openssl")
            .current_dir(tsa_dir())
            .args(["ts", "-reply", "-config", "tsa.cnf", "-queryfile"])
            .arg(d.path().join("q.tsq"))
            .arg("-out")
            .arg(d.path().join("r.tsr")));
        if !ok {
            return Err(err);
        }
        std::fs::read(d.path().join("r.tsr")).map_err(|e| e.to_string())
    }
}

fn tsa() -> Arc<Tsa<OpensslTsa>> {
    Arc::new(Tsa {
        transport: OpensslTsa,
        name: "openssl ts".into(),
    })
}

fn opts() -> SignOptions {
    // the PKI first: its certificates start now
    let _ = pki();
    SignOptions {
        signing_time: Some(SystemTime::now()),
        ..SignOptions::default()
    }
}

fn sign(opts: &SignOptions) -> Vec<u8> {
    let p = pki();
    sign_encapsulated(
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        CONTENT,
        opts,
    )
    .expect("sign")
}

fn anchors() -> Vec<CertEntry> {
    CertEntry::from_pem_bundle(&std::fs::read(pki().path("root.pem")).expect("root")).expect("pem")
}

fn check(sig: &[u8], now: SystemTime) -> VerificationReport {
    let parsed = ParsedSignedData::parse(sig).expect("parse");
    let content = parsed.encapsulated_content().expect("content").to_vec();
    let digests = ContentDigests::of(&parsed.digest_algorithms(), &content);
    let a = anchors();
    let mut o = VerifyOptions::at(&a, now);
    o.sender_email = Some("alice@example.com");
    o.revocation = tokenmail_smime::revocation::RevocationMode::Off;
    verify(&parsed, &digests, &o)
}

fn check_named<'a>(
    r: &'a VerificationReport,
    name: &str,
) -> Option<&'a tokenmail_smime::verify::Check> {
    r.signers[0].checks.iter().find(|c| c.name == name)
}

/// The DER of the first signer's timestamp token.
fn token_of(sig: &[u8]) -> Vec<u8> {
    use der::Encode;
    let parsed = ParsedSignedData::parse(sig).expect("parse");
    let attrs = parsed.signers[0]
        .info
        .unsigned_attrs
        .as_ref()
        .expect("unsigned attributes");
    let a = attrs
        .iter()
        .find(|a| a.oid == oid::ATTR_TIMESTAMP_TOKEN)
        .expect("timestamp attribute");
    a.values
        .iter()
        .next()
        .expect("value")
        .to_der()
        .expect("der")
}

fn signature_value(sig: &[u8]) -> Vec<u8> {
    ParsedSignedData::parse(sig).expect("parse").signers[0]
        .info
        .signature
        .as_bytes()
        .to_vec()
}

#[test]
fn a_timestamped_signature_verifies_here_and_with_openssl() {
    let sig = sign(&SignOptions {
        timestamper: Some(tsa()),
        ..opts()
    });
    let r = check(&sig, SystemTime::now());
    assert!(r.valid, "{:#?}", r.signers[0].checks);
    let ts = r.signers[0].timestamp.as_ref().expect("timestamp report");
    assert!(ts.valid, "{ts:?}");
    assert_eq!(ts.tsa.as_deref(), Some("CN=tokenmail Test TSA"));
    assert_eq!(ts.policy.as_deref(), Some("1.3.6.1.4.1.99999.7.1"));
    let c = check_named(&r, "timestamp").expect("timestamp check");
    assert!(c.reason.contains("CN=tokenmail Test TSA"), "{}", c.reason);
    assert!(check_named(&r, "validity_at_timestamp").is_some_and(|c| c.ok));

    // openssl cms -verify is not disturbed by the unsigned attribute
    let d = scratch();
    std::fs::write(d.path().join("sig.der"), &sig).expect("write");
    let (ok, out, err) = run(Command::new("openssl")
        .current_dir(d.path())
        .args([
            "cms", "-verify", "-inform", "DER", "-in", "sig.der", "-purpose", "any", "-CAfile",
        ])
        .arg(pki().path("root.pem"))
        .arg("-certfile")
        .arg(pki().path("int.pem")));
    assert!(ok, "openssl cms -verify: {err}");
    assert_eq!(out, CONTENT);

    // openssl ts -verify on the token, with the imprint = SHA-256 of the signature value
    std::fs::write(d.path().join("token.der"), token_of(&sig)).expect("write");
    std::fs::write(d.path().join("sigvalue"), signature_value(&sig)).expect("write");
    let (ok, out, err) = run(Command::new("openssl")
        .current_dir(d.path())
        .args([
            "ts",
            "-verify",
            "-token_in",
            "-in",
            "token.der",
            "-data",
            "sigvalue",
            "-CAfile",
        ])
        .arg(pki().path("root.pem"))
        .arg("-untrusted")
        .arg(pki().path("int.pem")));
    assert!(ok, "openssl ts -verify: {err}");
    assert!(String::from_utf8_lossy(&out).contains("Verification: OK"));
}

#[test]
fn a_tampered_token_or_one_for_another_signature_is_rejected() {
    let a = sign(&SignOptions {
        timestamper: Some(tsa()),
        ..opts()
    });
    let b = sign(&SignOptions {
        timestamper: Some(tsa()),
        ..opts()
    });
    let (ta, tb) = (token_of(&a), token_of(&b));
    assert_ne!(ta, tb);
    // b's token on a signature of its own: the imprint is not this signature's
    // (other content: RSA PKCS#1 v1.5 over the same attributes is the same signature)
    let p = pki();
    let swapped = sign_encapsulated(
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        b"other content",
        &SignOptions {
            timestamper: Some(Arc::new(Fixed(tb.clone()))),
            ..opts()
        },
    )
    .expect("sign");
    let r = check(&swapped, SystemTime::now());
    assert!(!r.valid);
    let c = check_named(&r, "timestamp").expect("timestamp check");
    assert!(!c.ok && c.reason.contains("imprint"), "{}", c.reason);

    // a byte of the TSTInfo's genTime changed: the token's signature breaks
    let pos = ta
        .windows(2)
        .rposition(|w| w[0] == 0x18 && w[1] == 0x0f)
        .expect("genTime");
    let mut bad = ta.clone();
    bad[pos + 5] ^= 0x01;
    let r = check(&replace_once(&a, &ta, &bad), SystemTime::now());
    let c = check_named(&r, "timestamp").expect("timestamp check");
    assert!(!c.ok, "{}", c.reason);
    assert!(!r.valid);

    // a TSA that does not chain to the anchors: the timestamp fails
    let parsed = ParsedSignedData::parse(&a).expect("parse");
    let content = parsed.encapsulated_content().expect("c").to_vec();
    let digests = ContentDigests::of(&parsed.digest_algorithms(), &content);
    let other =
        CertEntry::from_pem_bundle(&std::fs::read(pki().path("other_root.pem")).expect("r"))
            .expect("pem");
    let r = verify(
        &parsed,
        &digests,
        &VerifyOptions::at(&other, SystemTime::now()),
    );
    let ts = r.signers[0].timestamp.as_ref().expect("ts");
    assert!(!ts.valid && ts.reason.contains("chain"), "{}", ts.reason);
}

/// A timestamper that returns a token made earlier.
#[derive(Debug)]
struct Fixed(Vec<u8>);

impl tokenmail_smime::signed::SignatureTimestamper for Fixed {
    fn timestamp(&self, _signature: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.0.clone())
    }
}

fn replace_once(hay: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    assert_eq!(old.len(), new.len());
    let at = hay
        .windows(old.len())
        .position(|w| w == old)
        .expect("present");
    let mut v = hay.to_vec();
    v[at..at + old.len()].copy_from_slice(new);
    v
}

#[test]
fn the_answer_must_match_the_request() {
    let q1 = TimestampRequest::new(b"one signature", &[7; 16]).expect("q1");
    let q2 = TimestampRequest::new(b"one signature", &[8; 16]).expect("q2");
    let r1 = OpensslTsa.post(&q1.der).expect("answer");
    let (token, gen) = q1.check_response(&r1).expect("granted and matching");
    assert!(!token.is_empty());
    assert!(gen <= SystemTime::now() + Duration::from_secs(5));
    // the same answer for another request (another nonce): a replay
    let e = q2.check_response(&r1).expect_err("replay");
    assert!(e.contains("nonce"), "{e}");
    // another imprint
    let q3 = TimestampRequest::new(b"another signature", &[7; 16]).expect("q3");
    let e = q3.check_response(&r1).expect_err("imprint");
    assert!(e.contains("imprint"), "{e}");
    // a broken token signature
    let mut bad = r1.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x20;
    assert!(q1.check_response(&bad).is_err());
}

/// The rule: a signature whose certificate expired since stays valid when a verified
/// timestamp proves it was made while the certificate was valid; without the timestamp the
/// same signature fails at that verification time.
#[test]
fn a_timestamp_keeps_a_signature_valid_after_the_certificate_expired() {
    let stamped = sign(&SignOptions {
        timestamper: Some(tsa()),
        ..opts()
    });
    let plain = sign(&opts());
    // after every certificate in the test PKI has expired (3650 days)
    let later = SystemTime::now() + Duration::from_secs(3660 * 86_400);
    let r = check(&plain, later);
    assert!(!r.valid);
    assert!(check_named(&r, "validity_now").is_some_and(|c| !c.ok));
    let r = check(&stamped, later);
    assert!(r.valid, "{:#?}", r.signers[0].checks);
    let c = check_named(&r, "validity_at_timestamp").expect("check");
    assert!(c.ok && c.reason.contains("since"), "{}", c.reason);
    assert!(check_named(&r, "validity_now").is_none());
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    run(Command::new("openssl").current_dir(dir).args(args))
}

fn copy_pki(dir: &Path) {
    for f in [
        "root.pem",
        "int.pem",
        "ee_rsa.pem",
        "ee_rsa.key",
        "ee_p256.pem",
        "ee_p256.key",
    ] {
        std::fs::copy(pki().path(f), dir.join(f)).expect("copy");
    }
}

fn parse_any(data: &[u8]) -> ParsedSignedData {
    let cms = match tokenmail_smime::mime::parse_smime(data).expect("S/MIME") {
        tokenmail_smime::mime::SmimeInput::Opaque { cms, .. } => cms,
        tokenmail_smime::mime::SmimeInput::Cms(c) => c,
        tokenmail_smime::mime::SmimeInput::MultipartSigned { signature, .. } => signature,
    };
    ParsedSignedData::parse(&cms).expect("SignedData")
}

/// Our receipt request → openssl signs the receipt → we check it against our message;
/// openssl's request → our receipt → `openssl cms -verify_receipt` accepts it.
#[test]
fn receipts_interoperate_with_openssl_both_ways() {
    let d = scratch();
    let dir = d.path();
    copy_pki(dir);
    let p = pki();

    // 1. we request; openssl receipts; we check
    let rr = ReceiptRequest::all_to(&[0x42; 20], &["alice@example.com".into()]).expect("rr");
    let label = SecurityLabel::from_arg("1.3.6.1.4.1.99999.1:confidential").expect("label");
    let ours = sign(&SignOptions {
        extra_signed_attributes: vec![rr.attribute().expect("a"), label.attribute().expect("a")],
        ..opts()
    });
    std::fs::write(dir.join("ours.der"), &ours).expect("write");
    let (ok, out, err) = openssl(
        dir,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "ours.der",
            "-CAfile",
            "root.pem",
            "-certfile",
            "int.pem",
            "-purpose",
            "any",
            "-receipt_request_print",
            "-out",
            "/dev/null",
        ],
    );
    assert!(ok, "{err}");
    // openssl prints the request on standard error
    let printed = format!("{}{err}", String::from_utf8_lossy(&out));
    assert!(printed.contains("email:alice@example.com"), "{printed}");
    assert!(printed.contains("Receipts From: All"), "{printed}");
    let r = check(&ours, SystemTime::now());
    assert!(r.valid, "{:#?}", r.signers[0].checks);
    assert_eq!(r.signers[0].security_label.as_ref(), Some(&label));
    let req = r.signers[0]
        .receipt_request
        .as_ref()
        .expect("request shown");
    assert_eq!(req.receipts_to, vec!["alice@example.com".to_string()]);

    let (ok, _, err) = openssl(
        dir,
        &[
            "cms",
            "-sign_receipt",
            "-inform",
            "DER",
            "-in",
            "ours.der",
            "-signer",
            "ee_p256.pem",
            "-inkey",
            "ee_p256.key",
            "-certfile",
            "int.pem",
            "-outform",
            "DER",
            "-out",
            "receipt.der",
        ],
    );
    assert!(ok, "openssl -sign_receipt: {err}");
    let receipt = std::fs::read(dir.join("receipt.der")).expect("receipt");
    let original = ParsedSignedData::parse(&ours).expect("parse");
    let parsed_receipt = ParsedSignedData::parse(&receipt).expect("receipt parses");
    let checks = check_receipt(&parsed_receipt, &original);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert_eq!(checks.len(), 4, "{checks:#?}");
    // the receipt's signature itself, like any signed message (content type id-ct-receipt)
    let rr_report = check(&receipt, SystemTime::now());
    assert!(rr_report.valid, "{:#?}", rr_report.signers[0].checks);

    // the same receipt against another message (same request, another signature): refused
    let other = sign(&SignOptions {
        extra_signed_attributes: vec![rr.attribute().expect("a")],
        ..opts()
    });
    let checks = check_receipt(
        &parsed_receipt,
        &ParsedSignedData::parse(&other).expect("p"),
    );
    assert!(
        checks
            .iter()
            .any(|c| !c.ok && c.name == "originator_signature"),
        "{checks:#?}"
    );

    // 2. openssl requests; we receipt; openssl verifies the receipt
    std::fs::write(dir.join("msg.txt"), CONTENT).expect("write");
    let (ok, _, err) = openssl(
        dir,
        &[
            "cms",
            "-sign",
            "-in",
            "msg.txt",
            "-signer",
            "ee_rsa.pem",
            "-inkey",
            "ee_rsa.key",
            "-receipt_request_all",
            "-receipt_request_to",
            "alice@example.com",
            "-out",
            "theirs.eml",
        ],
    );
    assert!(ok, "openssl -sign -receipt_request_all: {err}");
    let theirs = parse_any(&std::fs::read(dir.join("theirs.eml")).expect("read"));
    let make = make_receipt(&theirs).expect("a receipt is requested");
    assert_eq!(make.receipts_to, vec!["alice@example.com".to_string()]);
    let ours_receipt = sign_encapsulated_as(
        &p.signer("ee_p256"),
        &p.cert("ee_p256"),
        &[p.cert("int")],
        oid::ID_CT_RECEIPT,
        &make.receipt,
        &SignOptions {
            extra_signed_attributes: vec![make.msg_sig_digest.clone()],
            ..opts()
        },
    )
    .expect("receipt signed");
    std::fs::write(
        dir.join("receipt.eml"),
        tokenmail_smime::ess::receipt_entity(&ours_receipt, Some("alice@example.com")),
    )
    .expect("write");
    let (ok, out, err) = openssl(
        dir,
        &[
            "cms",
            "-verify_receipt",
            "receipt.eml",
            "-in",
            "theirs.eml",
            "-CAfile",
            "root.pem",
            "-certfile",
            "int.pem",
            "-purpose",
            "any",
        ],
    );
    assert!(ok, "openssl -verify_receipt: {err}");
    assert!(
        err.contains("Verification successful"),
        "{err:?} {:?}",
        String::from_utf8_lossy(&out)
    );
    // and we agree
    let checks = check_receipt(&ParsedSignedData::parse(&ours_receipt).expect("p"), &theirs);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");

    // a message without a request gets no receipt
    let plain = ParsedSignedData::parse(&sign(&opts())).expect("p");
    assert!(make_receipt(&plain).is_err());
    // nor does a receipt
    assert!(make_receipt(&ParsedSignedData::parse(&ours_receipt).expect("p")).is_err());
}
