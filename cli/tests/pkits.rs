//! NIST PKITS (Public Key Interoperability Test Suite, the 2011 edition with SHA-256 and
//! 2048-bit RSA) through `tokenmail verify`, in-process (`run_with`), one signed S/MIME
//! message per test case. docs/conformance.md tables the results.
//!
//! * The data: `PKITS_data/` of the `cryptography-vectors` wheel on PyPI, pinned by version
//!   and hash, downloaded once with `pip download` into the target directory and unpacked
//!   there (never committed). `TOKENMAIL_PKITS_DIR=DIR` uses an unpacked `PKITS_data`
//!   instead; `TOKENMAIL_PKITS=skip` skips the test (no network), saying so.
//! * Every case: `tokenmail verify --json --trust TrustAnchorRootCertificate.crt
//!   --revocation hard-fail --at 2026-12-06T12:00:00Z --max-intermediates 8 MESSAGE`. The
//!   messages carry the path's certificates and CRLs (PKITS's S/MIME form); a missing CRL is
//!   a failure, as PKITS expects. `--at` fixes the verification time inside the data's
//!   validity (2010–2030); `--max-intermediates` lifts tokenmail's local default of 3
//!   intermediates, which RFC 5280 does not have (PKITS 4.6.13, 4.6.14, 4.6.17 use 4).
//! * The verdict: every check of the JSON report passes, except `sender_email` and
//!   `extended_key_usage`: PKITS end-entity certificates name no e-mail address and no
//!   emailProtection, and PKITS judges the path, not S/MIME's use of it.
//! * The expected outcome is in the test name (`Valid…`, `Invalid…`; 4.4.1 "Missing CRL"
//!   is invalid), and an `Invalid` case must be rejected by the check PKITS aims at
//!   ([`rejecting_check`]). Each case is applicable (asserted), not applicable (a feature
//!   tokenmail does not have; the outcome is printed, not asserted), or a known failure
//!   (printed, not asserted; to be fixed, then made applicable).

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;
use tokenmail_cli::verify::{run_with, VerifyArgs};

/// The pinned data: this wheel of `cryptography-vectors` (PyPI), by version and hash.
const VECTORS: &str = "cryptography-vectors==50.0.2";
const VECTORS_SHA256: &str = "51641f03a3eb4edbe9fb68e3a3574d25f86aa502d06391fffa886330d02778a0";
const VECTORS_DIR: &str = "pkits-cryptography-vectors-50.0.2";
/// The verification time (inside the data's 2010–2030 validity).
const AT: &str = "2026-12-06T12:00:00Z";
/// Checks that are not PKITS's business (see the module documentation).
const NOT_JUDGED: &[&str] = &["sender_email", "extended_key_usage"];

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

/// The PKITS sections (PKITS.pdf §4) and their test cases in order: case N of section S
/// is test S.N.
const SECTIONS: &[(&str, &str, &[&str])] = &[
    (
        "4.1",
        "Signature Verification",
        &[
            "ValidSignaturesTest1",
            "InvalidCASignatureTest2",
            "InvalidEESignatureTest3",
            "ValidDSASignaturesTest4",
            "ValidDSAParameterInheritanceTest5",
            "InvalidDSASignatureTest6",
        ],
    ),
    (
        "4.2",
        "Validity Periods",
        &[
            "InvalidCAnotBeforeDateTest1",
            "InvalidEEnotBeforeDateTest2",
            "Validpre2000UTCnotBeforeDateTest3",
            "ValidGeneralizedTimenotBeforeDateTest4",
            "InvalidCAnotAfterDateTest5",
            "InvalidEEnotAfterDateTest6",
            "Invalidpre2000UTCEEnotAfterDateTest7",
            "ValidGeneralizedTimenotAfterDateTest8",
        ],
    ),
    (
        "4.3",
        "Verifying Name Chaining",
        &[
            "InvalidNameChainingEETest1",
            "InvalidNameChainingOrderTest2",
            "ValidNameChainingWhitespaceTest3",
            "ValidNameChainingWhitespaceTest4",
            "ValidNameChainingCapitalizationTest5",
            "ValidNameChainingUIDsTest6",
            "ValidRFC3280MandatoryAttributeTypesTest7",
            "ValidRFC3280OptionalAttributeTypesTest8",
            "ValidUTF8StringEncodedNamesTest9",
            "ValidRolloverfromPrintableStringtoUTF8StringTest10",
            "ValidUTF8StringCaseInsensitiveMatchTest11",
        ],
    ),
    (
        "4.4",
        "Basic Certificate Revocation",
        &[
            "MissingCRLTest1",
            "InvalidRevokedCATest2",
            "InvalidRevokedEETest3",
            "InvalidBadCRLSignatureTest4",
            "InvalidBadCRLIssuerNameTest5",
            "InvalidWrongCRLTest6",
            "ValidTwoCRLsTest7",
            "InvalidUnknownCRLEntryExtensionTest8",
            "InvalidUnknownCRLExtensionTest9",
            "InvalidUnknownCRLExtensionTest10",
            "InvalidOldCRLnextUpdateTest11",
            "Invalidpre2000CRLnextUpdateTest12",
            "ValidGeneralizedTimeCRLnextUpdateTest13",
            "ValidNegativeSerialNumberTest14",
            "InvalidNegativeSerialNumberTest15",
            "ValidLongSerialNumberTest16",
            "ValidLongSerialNumberTest17",
            "InvalidLongSerialNumberTest18",
            "ValidSeparateCertificateandCRLKeysTest19",
            "InvalidSeparateCertificateandCRLKeysTest20",
            "InvalidSeparateCertificateandCRLKeysTest21",
        ],
    ),
    (
        "4.5",
        "Verifying Paths with Self-Issued Certificates",
        &[
            "ValidBasicSelfIssuedOldWithNewTest1",
            "InvalidBasicSelfIssuedOldWithNewTest2",
            "ValidBasicSelfIssuedNewWithOldTest3",
            "ValidBasicSelfIssuedNewWithOldTest4",
            "InvalidBasicSelfIssuedNewWithOldTest5",
            "ValidBasicSelfIssuedCRLSigningKeyTest6",
            "InvalidBasicSelfIssuedCRLSigningKeyTest7",
            "InvalidBasicSelfIssuedCRLSigningKeyTest8",
        ],
    ),
    (
        "4.6",
        "Verifying Basic Constraints",
        &[
            "InvalidMissingbasicConstraintsTest1",
            "InvalidcAFalseTest2",
            "InvalidcAFalseTest3",
            "ValidbasicConstraintsNotCriticalTest4",
            "InvalidpathLenConstraintTest5",
            "InvalidpathLenConstraintTest6",
            "ValidpathLenConstraintTest7",
            "ValidpathLenConstraintTest8",
            "InvalidpathLenConstraintTest9",
            "InvalidpathLenConstraintTest10",
            "InvalidpathLenConstraintTest11",
            "InvalidpathLenConstraintTest12",
            "ValidpathLenConstraintTest13",
            "ValidpathLenConstraintTest14",
            "ValidSelfIssuedpathLenConstraintTest15",
            "InvalidSelfIssuedpathLenConstraintTest16",
            "ValidSelfIssuedpathLenConstraintTest17",
        ],
    ),
    (
        "4.7",
        "Key Usage",
        &[
            "InvalidkeyUsageCriticalkeyCertSignFalseTest1",
            "InvalidkeyUsageNotCriticalkeyCertSignFalseTest2",
            "ValidkeyUsageNotCriticalTest3",
            "InvalidkeyUsageCriticalcRLSignFalseTest4",
            "InvalidkeyUsageNotCriticalcRLSignFalseTest5",
        ],
    ),
    (
        "4.8",
        "Certificate Policies",
        &[
            "AllCertificatesSamePolicyTest1",
            "AllCertificatesNoPoliciesTest2",
            "DifferentPoliciesTest3",
            "DifferentPoliciesTest4",
            "DifferentPoliciesTest5",
            "OverlappingPoliciesTest6",
            "DifferentPoliciesTest7",
            "DifferentPoliciesTest8",
            "DifferentPoliciesTest9",
            "AllCertificatesSamePoliciesTest10",
            "AllCertificatesAnyPolicyTest11",
            "DifferentPoliciesTest12",
            "AllCertificatesSamePoliciesTest13",
            "AnyPolicyTest14",
            "UserNoticeQualifierTest15",
            "UserNoticeQualifierTest16",
            "UserNoticeQualifierTest17",
            "UserNoticeQualifierTest18",
            "UserNoticeQualifierTest19",
            "CPSPointerQualifierTest20",
        ],
    ),
    (
        "4.9",
        "Require Explicit Policy",
        &[
            "ValidRequireExplicitPolicyTest1",
            "ValidRequireExplicitPolicyTest2",
            "InvalidRequireExplicitPolicyTest3",
            "ValidRequireExplicitPolicyTest4",
            "InvalidRequireExplicitPolicyTest5",
            "ValidSelfIssuedrequireExplicitPolicyTest6",
            "InvalidSelfIssuedrequireExplicitPolicyTest7",
            "InvalidSelfIssuedrequireExplicitPolicyTest8",
        ],
    ),
    (
        "4.10",
        "Policy Mappings",
        &[
            "ValidPolicyMappingTest1",
            "InvalidPolicyMappingTest2",
            "ValidPolicyMappingTest3",
            "InvalidPolicyMappingTest4",
            "ValidPolicyMappingTest5",
            "ValidPolicyMappingTest6",
            "InvalidMappingFromanyPolicyTest7",
            "InvalidMappingToanyPolicyTest8",
            "ValidPolicyMappingTest9",
            "InvalidPolicyMappingTest10",
            "ValidPolicyMappingTest11",
            "ValidPolicyMappingTest12",
            "ValidPolicyMappingTest13",
            "ValidPolicyMappingTest14",
        ],
    ),
    (
        "4.11",
        "Inhibit Policy Mapping",
        &[
            "InvalidinhibitPolicyMappingTest1",
            "ValidinhibitPolicyMappingTest2",
            "InvalidinhibitPolicyMappingTest3",
            "ValidinhibitPolicyMappingTest4",
            "InvalidinhibitPolicyMappingTest5",
            "InvalidinhibitPolicyMappingTest6",
            "ValidSelfIssuedinhibitPolicyMappingTest7",
            "InvalidSelfIssuedinhibitPolicyMappingTest8",
            "InvalidSelfIssuedinhibitPolicyMappingTest9",
            "InvalidSelfIssuedinhibitPolicyMappingTest10",
            "InvalidSelfIssuedinhibitPolicyMappingTest11",
        ],
    ),
    (
        "4.12",
        "Inhibit Any Policy",
        &[
            "InvalidinhibitAnyPolicyTest1",
            "ValidinhibitAnyPolicyTest2",
            "inhibitAnyPolicyTest3",
            "InvalidinhibitAnyPolicyTest4",
            "InvalidinhibitAnyPolicyTest5",
            "InvalidinhibitAnyPolicyTest6",
            "ValidSelfIssuedinhibitAnyPolicyTest7",
            "InvalidSelfIssuedinhibitAnyPolicyTest8",
            "ValidSelfIssuedinhibitAnyPolicyTest9",
            "InvalidSelfIssuedinhibitAnyPolicyTest10",
        ],
    ),
    (
        "4.13",
        "Name Constraints",
        &[
            "ValidDNnameConstraintsTest1",
            "InvalidDNnameConstraintsTest2",
            "InvalidDNnameConstraintsTest3",
            "ValidDNnameConstraintsTest4",
            "ValidDNnameConstraintsTest5",
            "ValidDNnameConstraintsTest6",
            "InvalidDNnameConstraintsTest7",
            "InvalidDNnameConstraintsTest8",
            "InvalidDNnameConstraintsTest9",
            "InvalidDNnameConstraintsTest10",
            "ValidDNnameConstraintsTest11",
            "InvalidDNnameConstraintsTest12",
            "InvalidDNnameConstraintsTest13",
            "ValidDNnameConstraintsTest14",
            "InvalidDNnameConstraintsTest15",
            "InvalidDNnameConstraintsTest16",
            "InvalidDNnameConstraintsTest17",
            "ValidDNnameConstraintsTest18",
            "ValidSelfIssuedDNnameConstraintsTest19",
            "InvalidSelfIssuedDNnameConstraintsTest20",
            "ValidRFC822nameConstraintsTest21",
            "InvalidRFC822nameConstraintsTest22",
            "ValidRFC822nameConstraintsTest23",
            "InvalidRFC822nameConstraintsTest24",
            "ValidRFC822nameConstraintsTest25",
            "InvalidRFC822nameConstraintsTest26",
            "ValidDNandRFC822nameConstraintsTest27",
            "InvalidDNandRFC822nameConstraintsTest28",
            "InvalidDNandRFC822nameConstraintsTest29",
            "ValidDNSnameConstraintsTest30",
            "InvalidDNSnameConstraintsTest31",
            "ValidDNSnameConstraintsTest32",
            "InvalidDNSnameConstraintsTest33",
            "ValidURInameConstraintsTest34",
            "InvalidURInameConstraintsTest35",
            "ValidURInameConstraintsTest36",
            "InvalidURInameConstraintsTest37",
            "InvalidDNSnameConstraintsTest38",
        ],
    ),
    (
        "4.14",
        "Distribution Points",
        &[
            "ValiddistributionPointTest1",
            "InvaliddistributionPointTest2",
            "InvaliddistributionPointTest3",
            "ValiddistributionPointTest4",
            "ValiddistributionPointTest5",
            "InvaliddistributionPointTest6",
            "ValiddistributionPointTest7",
            "InvaliddistributionPointTest8",
            "InvaliddistributionPointTest9",
            "ValidNoissuingDistributionPointTest10",
            "InvalidonlyContainsUserCertsCRLTest11",
            "InvalidonlyContainsCACertsCRLTest12",
            "ValidonlyContainsCACertsCRLTest13",
            "InvalidonlyContainsAttributeCertsTest14",
            "InvalidonlySomeReasonsTest15",
            "InvalidonlySomeReasonsTest16",
            "InvalidonlySomeReasonsTest17",
            "ValidonlySomeReasonsTest18",
            "ValidonlySomeReasonsTest19",
            "InvalidonlySomeReasonsTest20",
            "InvalidonlySomeReasonsTest21",
            "ValidIDPwithindirectCRLTest22",
            "InvalidIDPwithindirectCRLTest23",
            "ValidIDPwithindirectCRLTest24",
            "ValidIDPwithindirectCRLTest25",
            "InvalidIDPwithindirectCRLTest26",
            "InvalidcRLIssuerTest27",
            "ValidcRLIssuerTest28",
            "ValidcRLIssuerTest29",
            "ValidcRLIssuerTest30",
            "InvalidcRLIssuerTest31",
            "InvalidcRLIssuerTest32",
            "ValidcRLIssuerTest33",
            "InvalidcRLIssuerTest34",
            "InvalidcRLIssuerTest35",
        ],
    ),
    (
        "4.15",
        "Delta-CRLs",
        &[
            "InvaliddeltaCRLIndicatorNoBaseTest1",
            "ValiddeltaCRLTest2",
            "InvaliddeltaCRLTest3",
            "InvaliddeltaCRLTest4",
            "ValiddeltaCRLTest5",
            "InvaliddeltaCRLTest6",
            "ValiddeltaCRLTest7",
            "ValiddeltaCRLTest8",
            "InvaliddeltaCRLTest9",
            "InvaliddeltaCRLTest10",
        ],
    ),
    (
        "4.16",
        "Private Certificate Extensions",
        &[
            "ValidUnknownNotCriticalCertificateExtensionTest1",
            "InvalidUnknownCriticalCertificateExtensionTest2",
        ],
    ),
];

/// How a case counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Asserted: the outcome must be PKITS's.
    Applicable,
    /// Needs a feature tokenmail does not have; printed, not asserted.
    NotApplicable(Reason),
    /// Should pass and does not yet; printed, not asserted (none today).
    #[allow(dead_code)]
    KnownFailure(Reason),
}

/// Why a case is not applicable or a known failure: a short key for the printed table, and
/// the explanation (printed once, as a legend).
type Reason = (&'static str, &'static str);

const DSA: Reason = (
    "dsa",
    "DSA signatures are not supported (RFC 8551 lists none for S/MIME 4.0); the messages also use SHA-1",
);

fn status(section: &str, name: &str) -> Status {
    use Status::*;
    match (section, name) {
        ("4.1", n) if n.contains("DSA") => NotApplicable(DSA),
        (
            "4.4",
            "ValidSeparateCertificateandCRLKeysTest19"
            | "InvalidSeparateCertificateandCRLKeysTest20"
            | "InvalidSeparateCertificateandCRLKeysTest21",
        ) => Applicable,
        (
            "4.5",
            "ValidBasicSelfIssuedOldWithNewTest1"
            | "InvalidBasicSelfIssuedOldWithNewTest2"
            | "ValidBasicSelfIssuedNewWithOldTest4"
            | "InvalidBasicSelfIssuedNewWithOldTest5"
            | "ValidBasicSelfIssuedCRLSigningKeyTest6"
            | "InvalidBasicSelfIssuedCRLSigningKeyTest7",
        ) => Applicable,
        (
            "4.6",
            "ValidSelfIssuedpathLenConstraintTest15" | "ValidSelfIssuedpathLenConstraintTest17",
        ) => Applicable,
        _ => Applicable,
    }
}

/// The check that must reject an applicable `Invalid` case: the one PKITS aims at (a case
/// rejected only by another check does not pass).
fn rejecting_check(section: &str, name: &str) -> &'static str {
    match (section, name) {
        ("4.1" | "4.3", _) => "chain",
        ("4.2", _) => "validity_now",
        ("4.5", "InvalidBasicSelfIssuedCRLSigningKeyTest8") => "ca_constraints",
        ("4.6", _) => "ca_constraints",
        ("4.7", n) if n.contains("keyCertSign") => "ca_constraints",
        ("4.8" | "4.9" | "4.10" | "4.11" | "4.12", _) => "certificate_policies",
        ("4.13", _) => "name_constraints",
        ("4.16", _) => "critical_extensions",
        // 4.4, 4.5, 4.7 cRLSign, 4.14, 4.15: revoked, or no usable CRL
        _ => "revocation",
    }
}

/// PKITS's expected outcome with the default inputs (any policy; no explicit policy
/// required; mapping and anyPolicy not inhibited): in the test's name (`Valid…`,
/// `Invalid…`), else — the policy tests named for what they exercise — as PKITS §4.8 and
/// §4.12 give it for those inputs.
fn expected(name: &str) -> Option<bool> {
    if name.starts_with("Valid") {
        Some(true)
    } else if name.starts_with("Invalid") || name == "MissingCRLTest1" {
        Some(false)
    } else {
        match name {
            "AllCertificatesSamePolicyTest1"
            | "AllCertificatesNoPoliciesTest2"
            | "DifferentPoliciesTest3"
            | "OverlappingPoliciesTest6"
            | "AllCertificatesSamePoliciesTest10"
            | "AllCertificatesAnyPolicyTest11"
            | "AllCertificatesSamePoliciesTest13"
            | "AnyPolicyTest14"
            | "UserNoticeQualifierTest15"
            | "UserNoticeQualifierTest16"
            | "UserNoticeQualifierTest17"
            | "UserNoticeQualifierTest18"
            | "UserNoticeQualifierTest19"
            | "CPSPointerQualifierTest20"
            | "inhibitAnyPolicyTest3" => Some(true),
            "DifferentPoliciesTest4"
            | "DifferentPoliciesTest5"
            | "DifferentPoliciesTest7"
            | "DifferentPoliciesTest8"
            | "DifferentPoliciesTest9"
            | "DifferentPoliciesTest12" => Some(false),
            _ => None,
        }
    }
}

const POLICY_1: &str = "2.16.840.1.101.3.2.1.48.1";
const POLICY_2: &str = "2.16.840.1.101.3.2.1.48.2";
const POLICY_3: &str = "2.16.840.1.101.3.2.1.48.3";
const POLICY_6: &str = "2.16.840.1.101.3.2.1.48.6";

/// PKITS cases run again with other policy inputs (PKITS §4.8–§4.12 give the outcome for
/// each): (id, test, extra `verify` arguments, valid?). `--policy` implies an explicit
/// policy, which every outcome PKITS gives for a policy set other than anyPolicy agrees with.
const POLICY_VARIANTS: &[(&str, &str, &[&str], bool)] = &[
    (
        "4.8.1.1",
        "AllCertificatesSamePolicyTest1",
        &["--require-explicit-policy"],
        true,
    ),
    (
        "4.8.1.2",
        "AllCertificatesSamePolicyTest1",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.8.1.3",
        "AllCertificatesSamePolicyTest1",
        &["--policy", POLICY_2],
        false,
    ),
    (
        "4.8.1.4",
        "AllCertificatesSamePolicyTest1",
        &["--policy", POLICY_1, "--policy", POLICY_2],
        true,
    ),
    (
        "4.8.2.2",
        "AllCertificatesNoPoliciesTest2",
        &["--require-explicit-policy"],
        false,
    ),
    (
        "4.8.3.2",
        "DifferentPoliciesTest3",
        &["--require-explicit-policy"],
        false,
    ),
    (
        "4.8.3.3",
        "DifferentPoliciesTest3",
        &["--policy", POLICY_1, "--policy", POLICY_2],
        false,
    ),
    (
        "4.8.6.2",
        "OverlappingPoliciesTest6",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.8.6.3",
        "OverlappingPoliciesTest6",
        &["--policy", POLICY_2],
        false,
    ),
    (
        "4.8.10.2",
        "AllCertificatesSamePoliciesTest10",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.8.10.3",
        "AllCertificatesSamePoliciesTest10",
        &["--policy", POLICY_2],
        true,
    ),
    (
        "4.8.11.2",
        "AllCertificatesAnyPolicyTest11",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.8.13.1",
        "AllCertificatesSamePoliciesTest13",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.8.13.2",
        "AllCertificatesSamePoliciesTest13",
        &["--policy", POLICY_2],
        true,
    ),
    (
        "4.8.13.3",
        "AllCertificatesSamePoliciesTest13",
        &["--policy", POLICY_3],
        true,
    ),
    ("4.8.14.1", "AnyPolicyTest14", &["--policy", POLICY_1], true),
    (
        "4.8.14.2",
        "AnyPolicyTest14",
        &["--policy", POLICY_2],
        false,
    ),
    (
        "4.8.18.1",
        "UserNoticeQualifierTest18",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.8.18.2",
        "UserNoticeQualifierTest18",
        &["--policy", POLICY_2],
        true,
    ),
    (
        "4.10.1.1",
        "ValidPolicyMappingTest1",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.10.1.2",
        "ValidPolicyMappingTest1",
        &["--policy", POLICY_2],
        false,
    ),
    (
        "4.10.1.3",
        "ValidPolicyMappingTest1",
        &["--inhibit-policy-mapping"],
        false,
    ),
    (
        "4.10.2.2",
        "InvalidPolicyMappingTest2",
        &["--inhibit-policy-mapping"],
        false,
    ),
    (
        "4.10.3.1",
        "ValidPolicyMappingTest3",
        &["--policy", POLICY_1],
        false,
    ),
    (
        "4.10.3.2",
        "ValidPolicyMappingTest3",
        &["--policy", POLICY_2],
        true,
    ),
    (
        "4.10.5.1",
        "ValidPolicyMappingTest5",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.10.5.2",
        "ValidPolicyMappingTest5",
        &["--policy", POLICY_6],
        false,
    ),
    (
        "4.10.6.1",
        "ValidPolicyMappingTest6",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.10.6.2",
        "ValidPolicyMappingTest6",
        &["--policy", POLICY_6],
        false,
    ),
    (
        "4.10.12.1",
        "ValidPolicyMappingTest12",
        &["--policy", POLICY_1],
        true,
    ),
    (
        "4.10.12.2",
        "ValidPolicyMappingTest12",
        &["--policy", POLICY_2],
        true,
    ),
    (
        "4.12.3.2",
        "inhibitAnyPolicyTest3",
        &["--inhibit-any-policy"],
        false,
    ),
];

/// The unpacked `PKITS_data` directory: `TOKENMAIL_PKITS_DIR`, else the pinned wheel
/// downloaded and unpacked under the target directory (once).
fn pkits_data() -> PathBuf {
    if let Some(d) = std::env::var_os("TOKENMAIL_PKITS_DIR") {
        let d = PathBuf::from(d);
        assert!(
            d.join("smime").is_dir(),
            "TOKENMAIL_PKITS_DIR={} has no smime/ directory",
            d.display()
        );
        return d;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(VECTORS_DIR);
    let data = dir.join("PKITS_data");
    if data.join("smime").is_dir() {
        return data;
    }
    // download and unpack next to it, then rename into place (a concurrent run or a
    // killed one leaves no half-unpacked data under the final name)
    let work = tempfile::tempdir_in(tmp).expect("temporary directory");
    let req = work.path().join("requirements.txt");
    std::fs::write(&req, format!("{VECTORS} --hash=sha256:{VECTORS_SHA256}\n"))
        .expect("requirements");
    let dl = work.path().join("dl");
    let started = Instant::now();
    let out = process::run_with_timeout(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "-r",
            ])
            .arg(&req)
            .arg("-d")
            .arg(&dl),
        None,
        process::long_limit() * 2,
    );
    assert!(
        out.status.success(),
        "pip download {VECTORS} failed (set TOKENMAIL_PKITS=skip to skip this test offline): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = std::fs::read_dir(&dl)
        .expect("download directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("the wheel");
    let unpacked = work.path().join("x");
    let out = process::run_with_timeout(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 for n in z.namelist():\n\
                 \x20   if n.startswith('cryptography_vectors/x509/PKITS_data/'):\n\
                 \x20       z.extract(n, sys.argv[2])\n",
            )
            .arg(&wheel)
            .arg(&unpacked),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "unpacking {}: {}",
        wheel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let staged = work.path().join(VECTORS_DIR);
    std::fs::create_dir(&staged).expect("mkdir");
    std::fs::rename(
        unpacked.join("cryptography_vectors/x509/PKITS_data"),
        staged.join("PKITS_data"),
    )
    .expect("PKITS_data in the wheel");
    if std::fs::rename(&staged, &dir).is_err() {
        // another run put it there first
        assert!(data.join("smime").is_dir(), "cannot move {}", dir.display());
    }
    eprintln!(
        "PKITS data: {VECTORS} downloaded and unpacked in {:?}",
        started.elapsed()
    );
    data
}

/// The outcome of one case.
struct Outcome {
    /// tokenmail's verdict on the path (the judged checks all pass)
    valid: bool,
    /// the failed judged checks, `name: reason`
    failures: Vec<String>,
}

fn run_case(data: &Path, name: &str) -> Outcome {
    run_case_with(data, name, &[])
}

fn run_case_with(data: &Path, name: &str, extra: &[&str]) -> Outcome {
    let msg = data.join("smime").join(format!("Signed{name}.eml"));
    let anchor = data.join("certs/TrustAnchorRootCertificate.crt");
    let mut argv = vec![
        "tokenmail-verify".to_string(),
        "--json".into(),
        "--trust".into(),
        anchor.display().to_string(),
        "--revocation".into(),
        "hard-fail".into(),
        "--at".into(),
        AT.into(),
        "--max-intermediates".into(),
        "8".into(),
    ];
    argv.extend(extra.iter().map(|a| a.to_string()));
    argv.push(msg.display().to_string());
    let args = Cli::try_parse_from(argv).expect("arguments parse").args;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    match run_with(args, &mut out, &mut err) {
        Err(e) => Outcome {
            valid: false,
            failures: vec![format!("error: {e:#}")],
        },
        Ok(_) => {
            let j: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
            let signers = j["signers"].as_array().cloned().unwrap_or_default();
            let mut failures = Vec::new();
            for s in &signers {
                for c in s["checks"].as_array().into_iter().flatten() {
                    let check = c["name"].as_str().unwrap_or("?");
                    if c["ok"] != true && !NOT_JUDGED.contains(&check) {
                        failures.push(format!(
                            "{check}: {}",
                            c["reason"].as_str().unwrap_or_default()
                        ));
                    }
                }
            }
            Outcome {
                valid: !signers.is_empty() && failures.is_empty(),
                failures,
            }
        }
    }
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

#[test]
fn pkits() {
    if std::env::var("TOKENMAIL_PKITS").is_ok_and(|v| v == "skip") {
        eprintln!("PKITS skipped (TOKENMAIL_PKITS=skip)");
        return;
    }
    let data = pkits_data();
    // no configuration file of the user's ([trust] anchors, revocation, crl_cache): the
    // command line says everything (the only test of this binary, so the environment is ours)
    std::env::set_var("TOKENMAIL_CONFIG", data.join("no-such-config.toml"));
    let started = Instant::now();

    // the table and the data agree
    let mut on_disk: Vec<String> = std::fs::read_dir(data.join("smime"))
        .expect("smime/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_prefix("Signed")
                .and_then(|n| n.strip_suffix(".eml"))
                .map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SECTIONS
        .iter()
        .flat_map(|(_, _, t)| t.iter().map(|n| n.to_string()))
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "the PKITS messages are the listed cases");

    let mut mismatches = Vec::new();
    let mut summary = String::from(
        "| section | title | cases | passed | failed | not applicable | known failures |\n|---|---|---|---|---|---|---|\n",
    );
    let mut notes = String::new();
    let mut legend: Vec<Reason> = Vec::new();
    let mut totals = [0usize; 5];
    for (sec, title, tests) in SECTIONS {
        let mut counts = [tests.len(), 0, 0, 0, 0];
        for (i, name) in tests.iter().enumerate() {
            let id = format!("{sec}.{}", i + 1);
            let exp = expected(name);
            let got = run_case(&data, name);
            let matches = exp == Some(got.valid);
            let pkits = exp.map_or("depends on the policy inputs", verdict);
            let why = if got.valid {
                String::new()
            } else {
                format!(": {}", got.failures.join(" | "))
            };
            let status = status(sec, name);
            if let Status::NotApplicable(r) | Status::KnownFailure(r) = status {
                if !legend.contains(&r) {
                    legend.push(r);
                }
            }
            match status {
                Status::Applicable
                    if matches
                        && (got.valid
                            || got.failures.iter().any(|f| {
                                f.starts_with(&format!("{}:", rejecting_check(sec, name)))
                            })) =>
                {
                    counts[1] += 1;
                    notes.push_str(&format!("{id} {name}: pass, {}{why}\n", verdict(got.valid)));
                }
                Status::Applicable => {
                    counts[2] += 1;
                    let line = if matches {
                        format!(
                            "{id} {name}: FAIL, rejected, but not by {}{why}",
                            rejecting_check(sec, name)
                        )
                    } else {
                        format!(
                            "{id} {name}: FAIL, PKITS {pkits}, tokenmail {}{why}",
                            verdict(got.valid)
                        )
                    };
                    notes.push_str(&line);
                    notes.push('\n');
                    mismatches.push(line);
                }
                Status::NotApplicable((key, _)) => {
                    counts[3] += 1;
                    notes.push_str(&format!(
                        "{id} {name}: n/a [{key}], PKITS {pkits}, tokenmail {}{}{why}\n",
                        verdict(got.valid),
                        if got.valid && exp == Some(false) {
                            " (ACCEPTED although PKITS rejects)"
                        } else {
                            ""
                        }
                    ));
                }
                Status::KnownFailure((key, _)) => {
                    counts[4] += 1;
                    notes.push_str(&format!(
                        "{id} {name}: known failure [{key}], PKITS {pkits}, tokenmail {}{}{why}\n",
                        verdict(got.valid),
                        if matches {
                            " (the outcome matches, not for PKITS's reason)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        summary.push_str(&format!(
            "| {sec} | {title} | {} | {} | {} | {} | {} |\n",
            counts[0], counts[1], counts[2], counts[3], counts[4]
        ));
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    summary.push_str(&format!(
        "| | total | {} | {} | {} | {} | {} |\n",
        totals[0], totals[1], totals[2], totals[3], totals[4]
    ));
    for (key, text) in legend {
        notes.push_str(&format!("[{key}] {text}\n"));
    }
    // the policy tests again with the other inputs PKITS gives outcomes for
    let mut variants_passed = 0;
    for &(id, name, extra, want) in POLICY_VARIANTS {
        let got = run_case_with(&data, name, extra);
        let why = if got.valid {
            String::new()
        } else {
            format!(": {}", got.failures.join(" | "))
        };
        let ok = got.valid == want
            && (want
                || got
                    .failures
                    .iter()
                    .any(|f| f.starts_with("certificate_policies:")));
        let line = format!(
            "{id} {name} {}: {}, PKITS {}, tokenmail {}{why}",
            extra.join(" "),
            if ok { "pass" } else { "FAIL" },
            verdict(want),
            verdict(got.valid)
        );
        if ok {
            variants_passed += 1;
        } else {
            mismatches.push(line.clone());
        }
        notes.push_str(&line);
        notes.push('\n');
    }
    summary.push_str(&format!(
        "\npolicy input variants: {variants_passed} of {} pass\n",
        POLICY_VARIANTS.len()
    ));
    eprintln!(
        "PKITS ({VECTORS}, verified at {AT}) in {:?}:\n{summary}\n{notes}",
        started.elapsed()
    );
    assert!(
        mismatches.is_empty(),
        "{} applicable PKITS case(s) do not match:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
