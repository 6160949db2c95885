//! A signer certificate that has expired or is not yet valid signs nothing (issue 13,
//! contract: `sign` refuses it); one within 30 days of its notAfter signs with a warning.

mod common;

use std::time::{Duration, SystemTime};

use common::pki;
use tokenmail_smime::signed::{sign_detached, signer_validity, SignOptions, EXPIRY_WARNING};
use tokenmail_smime::SmimeError;

fn opts(t: SystemTime) -> SignOptions {
    SignOptions {
        signing_time: Some(t),
        ..SignOptions::default()
    }
}

#[test]
fn expired_and_future_certificates_do_not_sign() {
    let p = pki();
    let now = SystemTime::now();
    let digest = [7u8; 32];
    for (name, says) in [("ee_expired", "expired on"), ("ee_future", "not valid yet")] {
        let cert = p.cert(name);
        let e =
            sign_detached(&p.signer(name), &cert, &[], &digest, &opts(now)).expect_err("refused");
        match e {
            SmimeError::SignerCertificate(m) => assert!(m.contains(says), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // a valid one signs, silently
    let cert = p.cert("ee_rsa");
    sign_detached(&p.signer("ee_rsa"), &cert, &[], &digest, &opts(now)).expect("signs");
    assert_eq!(signer_validity(&cert, now), Ok(None));
    // ... and warns in its last 30 days
    let not_after = cert.tbs_certificate().validity().not_after.to_system_time();
    let late = not_after - EXPIRY_WARNING + Duration::from_secs(86400 * 2);
    let w = signer_validity(&cert, late)
        .expect("still valid")
        .expect("a warning");
    assert!(w.contains("expires in 28 day(s)"), "{w}");
    sign_detached(&p.signer("ee_rsa"), &cert, &[], &digest, &opts(late)).expect("signs");
    // past its notAfter: refused
    let after = not_after + Duration::from_secs(1);
    assert!(sign_detached(&p.signer("ee_rsa"), &cert, &[], &digest, &opts(after)).is_err());
}
