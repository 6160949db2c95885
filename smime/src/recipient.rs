//! Checks of a recipient's certificate before anything is encrypted to it (issue 12):
//! valid now, a key usage that allows encryption (keyEncipherment for RSA, keyAgreement for
//! EC), emailProtection when extendedKeyUsage is present, not revoked when that can be
//! determined, and — when trust anchors are configured — a path to one of them.
//!
//! A refusal names the certificate and the reason; a path that does not hold can be
//! overridden by the caller (`--allow-untrusted-recipient`), the other reasons cannot.

use std::time::SystemTime;

use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

use crate::keys::PublicKey;
use crate::path::{build_path, CertEntry, Policy};
use crate::revocation::{check_chain, RevocationInputs};

/// What the checks need besides the certificate.
#[derive(Clone, Copy, Debug)]
pub struct RecipientChecks<'a> {
    /// Trust anchors; empty: no path is required.
    pub anchors: &'a [CertEntry],
    /// Intermediates for building the path.
    pub intermediates: &'a [CertEntry],
    /// Path length, EKU policy.
    pub policy: &'a Policy,
    /// Revocation sources and mode (used when a path to an anchor exists).
    pub revocation: &'a RevocationInputs<'a>,
    /// Accept a certificate without a path to the anchors (the caller warns loudly).
    pub allow_untrusted: bool,
    /// The time.
    pub now: SystemTime,
}

/// Why a recipient is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("recipient certificate '{subject}' (serial {serial}): {reason}")]
pub struct RecipientRefused {
    /// The certificate's subject.
    pub subject: String,
    /// Its serial.
    pub serial: String,
    /// Why.
    pub reason: String,
    /// Only the path failed: `--allow-untrusted-recipient` would accept it.
    pub untrusted_only: bool,
}

/// Checks `cert`. `Ok` carries warnings to show (an accepted untrusted certificate).
pub fn check_recipient(
    cert: &CertEntry,
    c: &RecipientChecks<'_>,
) -> Result<Vec<String>, RecipientRefused> {
    let refuse = |reason: String, untrusted_only: bool| RecipientRefused {
        subject: cert.subject(),
        serial: cert.serial_hex(),
        reason,
        untrusted_only,
    };
    if let Some(p) = cert.validity_problem(c.now) {
        return Err(refuse(p, false));
    }
    let tbs = cert.cert.tbs_certificate();
    let is_rsa = matches!(cert.public_key(), Ok(PublicKey::Rsa(_)));
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) => {
            let ok = if is_rsa {
                ku.key_encipherment()
            } else {
                ku.key_agreement()
            };
            if !ok {
                return Err(refuse(
                    format!(
                        "its keyUsage does not allow encryption ({} needed)",
                        if is_rsa {
                            "keyEncipherment"
                        } else {
                            "keyAgreement"
                        }
                    ),
                    false,
                ));
            }
        }
        Ok(None) => {}
        Err(e) => return Err(refuse(format!("unreadable keyUsage ({e})"), false)),
    }
    if let Ok(Some((_, eku))) = tbs.get_extension::<ExtendedKeyUsage>() {
        let email = eku.0.contains(&crate::alg::oid::KP_EMAIL_PROTECTION);
        let any = eku.0.contains(&crate::alg::oid::ANY_EKU);
        if !(email || (any && c.policy.allow_any_eku)) {
            return Err(refuse(
                "its extendedKeyUsage does not include emailProtection".into(),
                false,
            ));
        }
    }
    let mut warnings = Vec::new();
    if c.anchors.is_empty() {
        return Ok(warnings);
    }
    match build_path(cert, c.intermediates, c.anchors, c.policy.max_intermediates) {
        Ok(path) => {
            let intermediates = path.len().saturating_sub(2);
            if intermediates > c.policy.max_intermediates {
                return Err(refuse(
                    format!(
                        "its path has {intermediates} intermediate CAs, the policy allows {}",
                        c.policy.max_intermediates
                    ),
                    true,
                ));
            }
            if let Some(p) = path.iter().skip(1).find_map(|x| x.validity_problem(c.now)) {
                return Err(refuse(format!("its CA {p}"), true));
            }
            if let Some(o) = crate::name_constraints::check_path(&path) {
                if !o.problems.is_empty() {
                    return Err(refuse(o.problems.join("; "), true));
                }
            }
            if crate::cert_policies::path_has_policies(&path)
                || !c.policy.cert_policies.is_default()
            {
                let o = crate::cert_policies::check_path(&path, &c.policy.cert_policies);
                if let Some(p) = o.problem {
                    return Err(refuse(p, true));
                }
            }
            let rev = check_chain(&path, c.revocation);
            if rev.certificates.iter().any(|e| e.is_revoked()) {
                return Err(refuse(rev.reason, false));
            }
            // (an unknown status under soft-fail is accepted silently: encrypting says
            // nothing about the recipient's key to anyone, and a line on every message
            // would stop mail clients that show standard error)
            if !rev.ok {
                return Err(refuse(rev.reason, false));
            }
        }
        Err(e) if c.allow_untrusted => warnings.push(format!(
            "WARNING: encrypting to '{}', which does not chain to a trust anchor ({e}); anyone could have made it",
            cert.subject()
        )),
        Err(e) => {
            return Err(refuse(
                format!("it does not chain to a trust anchor ({e}); check it, then --allow-untrusted-recipient to use it anyway"),
                true,
            ))
        }
    }
    Ok(warnings)
}
