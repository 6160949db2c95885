//! Revocation from CRLs (issue 12): CRLs made by `openssl ca -gencrl`, signatures made by
//! `openssl cms -sign`, checked by `smime::verify` through `verify_smime`: a good
//! certificate, a revoked signer (reason and time reported), a revoked intermediate, soft
//! and hard fail without a CRL, an out-of-date CRL, a CRL with a forged signature, a delta
//! CRL without its complete CRL (not used), delta CRLs applied on their complete CRL (a
//! revocation listed only on the delta, a hold released by removeFromCRL; `openssl verify
//! -use_deltas` agrees), CRLs partitioned by reason, a CRL carried inside the message, and
//! `off`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use common::process;
use tokenmail_smime::ber::{der_len, Tlv};
use tokenmail_smime::mime::{verify_smime, MessageVerification};
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::revocation::{Crl, RevocationMode};
use tokenmail_smime::verify::{Check, VerifyOptions};

struct RevPki {
    dir: tempfile::TempDir,
}

impl RevPki {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.path(f)).expect("read")
    }
    fn crl(&self, f: &str) -> Vec<Crl> {
        Crl::from_pem_or_der(&self.read(f), f).expect("CRL parses")
    }
    fn anchors(&self) -> Vec<CertEntry> {
        CertEntry::from_pem_or_der(&self.read("root.pem")).expect("root")
    }
}

fn pki() -> &'static RevPki {
    static P: OnceLock<RevPki> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = process::run_with_timeout(
            Command::new("bash")
                .arg("-c")
                .arg(include_str!("revocation-pki.sh"))
                .current_dir(dir.path()),
            None,
            process::long_limit(),
        );
        assert!(
            out.status.success(),
            "revocation PKI script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        RevPki { dir }
    })
}

fn verify(msg: &[u8], crls: &[Crl], mode: RevocationMode) -> MessageVerification {
    let anchors = pki().anchors();
    let opts = VerifyOptions {
        crls,
        revocation: mode,
        ..VerifyOptions::at(&anchors, SystemTime::now())
    };
    verify_smime(msg, None, &opts).expect("verification runs")
}

fn revocation(v: &MessageVerification) -> &Check {
    v.report.signers[0]
        .checks
        .iter()
        .find(|c| c.name == "revocation")
        .unwrap_or_else(|| panic!("no revocation check: {:?}", v.report.signers[0].checks))
}

fn file(name: &str) -> Vec<u8> {
    pki().read(name)
}

#[test]
fn a_good_certificate_is_good_and_a_revoked_signer_fails_with_reason_and_time() {
    let p = pki();
    let mut crls = p.crl("int.crl");
    crls.extend(p.crl("root.crl"));
    let good = verify(&file("good.eml"), &crls, RevocationMode::HardFail);
    assert!(good.report.valid, "{:?}", good.report);
    let r = revocation(&good);
    assert!(r.ok, "{r:?}");
    assert_eq!(
        r.certificates.len(),
        2,
        "the signer and the intermediate: {r:?}"
    );
    assert!(r
        .certificates
        .iter()
        .all(|c| c.status == "good" && c.source == "crl"));

    let bad = verify(&file("revoked.eml"), &crls, RevocationMode::SoftFail);
    assert!(
        !bad.report.valid,
        "a revoked signer fails even under soft-fail"
    );
    let r = revocation(&bad);
    assert!(!r.ok);
    assert!(
        r.reason.contains("'CN=Alice Revoked'") && r.reason.contains("keyCompromise"),
        "{}",
        r.reason
    );
    let ee = &r.certificates[0];
    assert_eq!(ee.status, "revoked");
    assert_eq!(ee.reason.as_deref(), Some("keyCompromise"));
    assert!(ee.revocation_time.is_some(), "{ee:?}");
    // as JSON: the contract's fields
    let j = serde_json::to_value(r).expect("json");
    assert_eq!(j["certificates"][0]["status"], "revoked");
    assert_eq!(j["certificates"][0]["source"], "crl");
    assert_eq!(j["certificates"][0]["reason"], "keyCompromise");
    assert!(j["certificates"][0]["revocation_time"].is_string());
}

#[test]
fn a_revoked_intermediate_fails_the_path() {
    let p = pki();
    let mut crls = p.crl("root.crl");
    crls.extend(p.crl("int_revoked.crl"));
    let v = verify(&file("under_revoked.eml"), &crls, RevocationMode::SoftFail);
    assert!(!v.report.valid);
    let r = revocation(&v);
    assert!(
        r.reason.contains("Rev Revoked Intermediate") && r.reason.contains("cACompromise"),
        "{}",
        r.reason
    );
    assert_eq!(
        r.certificates[0].status, "good",
        "the end entity itself is not listed"
    );
    assert_eq!(r.certificates[1].status, "revoked");
}

#[test]
fn unknown_status_soft_fails_or_hard_fails_and_off_says_so() {
    let soft = verify(&file("revoked.eml"), &[], RevocationMode::SoftFail);
    assert!(soft.report.valid, "no CRL: accepted under soft-fail");
    let r = revocation(&soft);
    assert!(r.ok && r.reason.contains("unknown"), "{}", r.reason);
    assert!(r
        .certificates
        .iter()
        .all(|c| c.status == "unknown" && c.source == "none"));
    let hard = verify(&file("revoked.eml"), &[], RevocationMode::HardFail);
    assert!(!hard.report.valid);
    assert!(revocation(&hard).reason.contains("hard-fail"));
    let off = verify(
        &file("revoked.eml"),
        &pki().crl("int.crl"),
        RevocationMode::Off,
    );
    assert!(off.report.valid, "off: not checked");
    assert!(revocation(&off).reason.contains("not checked"));
}

#[test]
fn stale_forged_and_delta_crls_are_not_used_and_say_why() {
    let p = pki();
    for (crl, why) in [
        ("int_stale.crl", "out of date"),
        ("int_forged.crl", "bad signature"),
        ("int_delta.crl", "delta CRL"),
    ] {
        let mut crls = p.crl(crl);
        crls.extend(p.crl("root.crl"));
        let v = verify(&file("revoked.eml"), &crls, RevocationMode::HardFail);
        assert!(!v.report.valid, "{crl}");
        let r = revocation(&v);
        let ee = &r.certificates[0];
        assert_eq!(ee.status, "unknown", "{crl}: {ee:?}");
        assert!(ee.detail.contains(why), "{crl}: {}", ee.detail);
        // soft-fail: reported, accepted (the revocation cannot be seen)
        let v = verify(&file("revoked.eml"), &crls, RevocationMode::SoftFail);
        assert!(v.report.valid, "{crl}");
    }
    // a DER CRL reads as well as PEM
    let der = Crl::from_pem_or_der(&p.read("int.crl.der"), "der").expect("DER CRL");
    let v = verify(&file("revoked.eml"), &der, RevocationMode::SoftFail);
    assert!(!v.report.valid);
}

/// Puts `crl` into the SignedData's `crls` field ([1], not covered by the signature).
fn with_crl_inside(cms: &[u8], crl: &[u8]) -> Vec<u8> {
    let ci = Tlv::parse_exact(cms).expect("ContentInfo");
    let parts = ci.children().expect("parts");
    let sd_wrap = &parts[1];
    let sd = Tlv::parse_exact(sd_wrap.content).expect("SignedData");
    let mut body = Vec::new();
    for c in sd.children().expect("fields") {
        if c.tag == 0x31 && body.len() > 10 {
            // before signerInfos: [1] { crl }
            body.push(0xa1);
            body.extend(der_len(crl.len()));
            body.extend_from_slice(crl);
        }
        body.extend_from_slice(c.raw);
    }
    let wrap = |tag: u8, inner: &[u8]| {
        let mut v = vec![tag];
        v.extend(der_len(inner.len()));
        v.extend_from_slice(inner);
        v
    };
    let sd = wrap(0x30, &body);
    let mut ci_body = parts[0].raw.to_vec();
    ci_body.extend(wrap(0xa0, &sd));
    wrap(0x30, &ci_body)
}

#[test]
fn a_crl_carried_in_the_message_is_used() {
    let p = pki();
    let der = p.read("revoked.der");
    let crl = p.read("int.crl.der");
    let inside = with_crl_inside(&der, &crl);
    // still a valid signature without revocation checking: the crls field is unsigned
    let off = verify(&inside, &[], RevocationMode::Off);
    assert!(off.report.valid, "{:?}", off.report);
    let v = verify(&inside, &[], RevocationMode::SoftFail);
    assert!(!v.report.valid, "the message's own CRL revokes its signer");
    let ee = &revocation(&v).certificates[0];
    assert_eq!(ee.status, "revoked");
    assert!(ee.detail.contains("the message"), "{}", ee.detail);
    // openssl agrees that the CRL inside is found (and the signer revoked)
    let path: &Path = &p.path("inside.der");
    std::fs::write(path, &inside).expect("write");
    // (openssl reads CRLs from its CAfile: the root's certificate and CRL in one file)
    let mut cafile = p.read("root.pem");
    cafile.extend(p.read("root.crl"));
    std::fs::write(p.path("root+crl.pem"), cafile).expect("write");
    let o = process::output(
        Command::new("openssl")
            .args(["cms", "-verify", "-inform", "DER", "-crl_check", "-CAfile"])
            .arg(p.path("root+crl.pem"))
            .arg("-in")
            .arg(path)
            .args(["-out", "/dev/null"]),
    );
    assert!(!o.status.success(), "openssl rejects it too");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A hostile pile of CRLs, each signed by another certificate that takes the CA's name: the
/// search for CRL signers (RFC 5280 §6.3.3 (f)) stops at its budget for the message, and the
/// status is unknown, not a verdict from a forger.
#[test]
fn many_forged_crl_signers_cost_a_bounded_search() {
    let p = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = r#"
set -e
cp "$PKI/ext.cnf" .
for i in $(seq 1 12); do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out f$i.key 2>/dev/null
  openssl req -x509 -new -key f$i.key -subj "/CN=tokenmail Rev Intermediate" -days 30 \
    -config ext.cnf -extensions ca -out f$i.pem
  mkdir -p db$i; : > db$i/index.txt; echo 01 > db$i/crlnumber
  printf '[ca]\ndefault_ca=c\n[c]\ndatabase=db%s/index.txt\ncrlnumber=db%s/crlnumber\ndefault_md=sha256\ndefault_crl_days=30\n' $i $i > ca$i.cnf
  openssl ca -config ca$i.cnf -cert f$i.pem -keyfile f$i.key -gencrl -out f$i.crl 2>/dev/null
done
"#;
    let o = process::output(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PKI", p.dir.path())
            .current_dir(dir.path()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut forgers = Vec::new();
    let mut crls = Vec::new();
    for i in 1..=12 {
        let read = |f: String| std::fs::read(dir.path().join(f)).expect("read");
        forgers.extend(CertEntry::from_pem_or_der(&read(format!("f{i}.pem"))).expect("cert"));
        crls.extend(Crl::from_pem_or_der(&read(format!("f{i}.crl")), "a forger").expect("crl"));
    }
    let anchors = p.anchors();
    let opts = VerifyOptions {
        crls: &crls,
        extra_certs: &forgers,
        revocation: RevocationMode::HardFail,
        ..VerifyOptions::at(&anchors, SystemTime::now())
    };
    let v = verify_smime(&file("revoked.eml"), None, &opts).expect("runs");
    assert!(!v.report.valid);
    let ee = &revocation(&v).certificates[0];
    assert_eq!(ee.status, "unknown", "{ee:?}");
    assert!(
        ee.detail.contains("no further CRL signers tried"),
        "the budget was reached: {}",
        ee.detail
    );
}

/// The revocation entry of the signer (the first certificate).
fn signer_status(msg: &str, crls: &[&str]) -> tokenmail_smime::revocation::CertRevocation {
    let p = pki();
    let mut all = p.crl("root.crl");
    for c in crls {
        all.extend(p.crl(c));
    }
    let v = verify(&file(msg), &all, RevocationMode::HardFail);
    revocation(&v).certificates[0].clone()
}

/// `openssl verify -crl_check -use_deltas -extended_crl` of `ee` with the root's CRL and
/// `crls`: whether it accepts (what it said, when not). Without `-extended_crl`, openssl 3.0
/// may take a delta CRL newer than the complete one for a complete CRL.
fn openssl_verify(ee: &str, crls: &[&str]) -> Result<(), String> {
    let p = pki();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "verify",
        "-crl_check",
        "-use_deltas",
        "-extended_crl",
        "-CAfile",
    ])
    .arg(p.path("root.pem"))
    .arg("-untrusted")
    .arg(p.path("int.pem"))
    .arg("-CRLfile")
    .arg(p.path("root.crl"));
    for c in crls {
        cmd.arg("-CRLfile").arg(p.path(c));
    }
    let o = process::output(cmd.arg(p.path(ee)));
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn a_delta_crl_revokes_a_certificate_listed_only_there() {
    // the complete CRL (number 1) was made before the revocation
    let ee = signer_status("later.eml", &["int.crl"]);
    assert_eq!(ee.status, "good", "{ee:?}");
    if let Err(e) = openssl_verify("ee_later.pem", &["int.crl"]) {
        panic!("openssl rejects {}: {e}", "ee_later.pem");
    }
    // the delta CRL (number 4, base 1) lists it: revoked, and the report says by the delta
    let ee = signer_status("later.eml", &["int.crl", "int_delta2.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
    assert_eq!(ee.reason.as_deref(), Some("keyCompromise"));
    assert!(
        ee.detail.contains("delta CRL") && ee.detail.contains("number 4"),
        "{}",
        ee.detail
    );
    assert!(
        openssl_verify("ee_later.pem", &["int.crl", "int_delta2.crl"]).is_err(),
        "openssl accepts {}",
        "ee_later.pem"
    );
    // with an older delta CRL as well, in either order: the newest decides
    let ee = signer_status("later.eml", &["int_delta2.crl", "int.crl", "int_delta.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
    // a certificate on neither stays good, and the report names the delta that was applied
    let ee = signer_status("good.eml", &["int.crl", "int_delta2.crl"]);
    assert_eq!(ee.status, "good", "{ee:?}");
    assert!(ee.detail.contains("delta CRL"), "{}", ee.detail);
    // revoked on the complete CRL and (still) on the delta
    let ee = signer_status("revoked.eml", &["int.crl", "int_delta2.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
}

#[test]
fn a_delta_crl_releases_a_hold_with_remove_from_crl() {
    let ee = signer_status("hold.eml", &["int.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
    assert_eq!(ee.reason.as_deref(), Some("certificateHold"));
    assert!(
        openssl_verify("ee_hold.pem", &["int.crl"]).is_err(),
        "openssl accepts {}",
        "ee_hold.pem"
    );
    // the delta made right after the complete CRL still has the hold
    let ee = signer_status("hold.eml", &["int.crl", "int_delta.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
    // the later one releases it
    let ee = signer_status("hold.eml", &["int.crl", "int_delta.crl", "int_delta2.crl"]);
    assert_eq!(ee.status, "good", "{ee:?}");
    assert!(ee.detail.contains("delta CRL"), "{}", ee.detail);
    if let Err(e) = openssl_verify("ee_hold.pem", &["int.crl", "int_delta2.crl"]) {
        panic!("openssl rejects {}: {e}", "ee_hold.pem");
    }
}

#[test]
fn a_delta_crl_without_its_complete_crl_is_not_used() {
    // base 99: no complete CRL of that number; the complete CRL alone decides
    let ee = signer_status("later.eml", &["int.crl", "int_delta_nobase.crl"]);
    assert_eq!(ee.status, "good", "{ee:?}");
    if let Err(e) = openssl_verify("ee_later.pem", &["int.crl", "int_delta_nobase.crl"]) {
        panic!("openssl rejects {}: {e}", "ee_later.pem");
    }
    // a delta alone decides nothing, even one that lists the certificate
    let ee = signer_status("later.eml", &["int_delta2.crl"]);
    assert_eq!(ee.status, "unknown", "{ee:?}");
    assert!(
        ee.detail.contains("has no usable complete CRL"),
        "{}",
        ee.detail
    );
    // the complete CRL out of date: its delta is not applied either
    let ee = signer_status("later.eml", &["int_stale.crl", "int_delta2.crl"]);
    assert_eq!(ee.status, "unknown", "{ee:?}");
}

#[test]
fn crls_partitioned_by_reason_decide_together() {
    // keyCompromise and cACompromise only: not enough to call a certificate good
    let ee = signer_status("good.eml", &["int_some_kc.crl"]);
    assert_eq!(ee.status, "unknown", "{ee:?}");
    assert!(
        ee.detail.contains("only some revocation reasons") && ee.detail.contains("superseded"),
        "{}",
        ee.detail
    );
    // with the CRL for the other reasons: good
    let ee = signer_status("good.eml", &["int_some_kc.crl", "int_some_rest.crl"]);
    assert_eq!(ee.status, "good", "{ee:?}");
    // listed on either part: revoked
    let ee = signer_status("revoked.eml", &["int_some_kc.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
    let ee = signer_status("later.eml", &["int_some_rest.crl"]);
    assert_eq!(ee.status, "revoked", "{ee:?}");
}
