//! OCSP requests and responses (smime::ocsp) against `openssl ocsp` as the responder (run
//! on files, no server): our request is read by openssl; its answers are checked — good,
//! revoked with reason, out of date, a replayed nonce, an answer about another certificate,
//! and a responder the CA did not certify.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use common::process;
use tokenmail_smime::ocsp::{check_response, request, OcspStatus};
use tokenmail_smime::path::CertEntry;

fn cert(dir: &std::path::Path, name: &str) -> CertEntry {
    CertEntry::from_pem_or_der(&std::fs::read(dir.join(name)).expect("read"))
        .expect("certificate")
        .remove(0)
}

/// openssl's answer to `req` (DER), signed by `signer`.
fn answer(dir: &std::path::Path, req: &[u8], signer: &str) -> Vec<u8> {
    std::fs::write(dir.join("req.der"), req).expect("write");
    let o = process::output(
        Command::new("openssl")
            .args([
                "ocsp",
                "-index",
                "int/index.txt",
                "-CA",
                "int.pem",
                "-rsigner",
            ])
            .arg(format!("{signer}.pem"))
            .arg("-rkey")
            .arg(format!("{signer}.key"))
            .args(["-reqin", "req.der", "-respout", "resp.der", "-ndays", "1"])
            .current_dir(dir),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(dir.join("resp.der")).expect("response")
}

#[test]
fn openssl_answers_are_checked() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let o = process::run_with_timeout(
        Command::new("bash")
            .arg("-c")
            .arg(include_str!("revocation-pki.sh"))
            .current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let int = cert(dir, "int.pem");
    let now = SystemTime::now();
    let skew = Duration::from_secs(300);

    // openssl reads our request (with its nonce) and answers about the revoked certificate
    let q = request(&cert(dir, "ee_revoked.pem"), &int, Some(&[7u8; 16])).expect("request");
    let r = answer(dir, &q.der, "int");
    let a = check_response(&r, &q, &int, now, skew, false).expect("valid answer");
    match a.status {
        OcspStatus::Revoked { reason, time } => {
            assert_eq!(reason, "keyCompromise");
            assert!(!time.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.signer, "CN=tokenmail Rev Intermediate");

    // three days later the one-day answer is out of date
    let later = now + Duration::from_secs(3 * 86400);
    let e = check_response(&r, &q, &int, later, skew, false).expect_err("stale");
    assert!(e.contains("out of date"), "{e}");

    // the answer to another request (another nonce) is refused as a replay, unless it is
    // our own cached answer
    let q2 = request(&cert(dir, "ee_revoked.pem"), &int, Some(&[8u8; 16])).expect("request");
    let e = check_response(&r, &q2, &int, now, skew, false).expect_err("replay");
    assert!(e.contains("nonce"), "{e}");
    check_response(&r, &q2, &int, now, skew, true).expect("a cached answer has an older nonce");

    // an answer about another certificate does not answer this one
    let good = request(&cert(dir, "ee_good.pem"), &int, None).expect("request");
    let e = check_response(&r, &good, &int, now, skew, false).expect_err("other cert");
    assert!(e.contains("does not answer"), "{e}");
    let r = answer(dir, &good.der, "int");
    let a = check_response(&r, &good, &int, now, skew, false).expect("good");
    assert_eq!(a.status, OcspStatus::Good);

    // signed by a key the CA did not certify (the forger has the CA's name)
    let r = answer(dir, &good.der, "forger");
    let e = check_response(&r, &good, &int, now, skew, false).expect_err("forged");
    assert!(
        e.contains("signature does not verify") || e.contains("not issued by"),
        "{e}"
    );

    // garbage and oversize input are refused in words
    assert!(
        check_response(b"\x30\x03\x0a\x01\x01", &good, &int, now, skew, false)
            .expect_err("malformedRequest")
            .contains("MalformedRequest")
    );
    assert!(
        check_response(&vec![0u8; 70_000], &good, &int, now, skew, false)
            .expect_err("big")
            .contains("larger than")
    );
}
