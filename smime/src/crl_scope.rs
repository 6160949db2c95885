//! Which certificates a CRL speaks for, and what it says about one of them (RFC 5280
//! §4.2.1.13, §5.2.5, §5.3.3, §6.3.3 (b), (d), (i)).
//!
//! - [`scope`]: whether a CRL covers a certificate: its issuer is the certificate's issuer,
//!   or the cRLIssuer of one of the certificate's distribution points (then the CRL must be
//!   an indirect CRL); its issuingDistributionPoint names one of those distribution points
//!   (full names, or names relative to the CRL issuer); and which revocation reasons it
//!   covers for the certificate (onlySomeReasons ∩ the distribution point's reasons).
//! - [`find_entry`]: the certificate's entry, in a direct CRL by serial number, in an
//!   indirect CRL by serial number and certificate issuer (the certificateIssuer entry
//!   extension, carried forward from entry to entry).
//!
//! Anything not understood is an error: the caller does not use the CRL.

use der::{Decode, Encode};
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::crl::dp::{DistributionPoint, IssuingDistributionPoint};
use x509_cert::ext::pkix::crl::CrlDistributionPoints;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName, GeneralNames};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::name::{Name, RelativeDistinguishedName};

use crate::path::{names_match, CertEntry};
use crate::revocation::Crl;

pub(crate) const OID_IDP: &str = "2.5.29.28";
const OID_REASON: &str = "2.5.29.21";
const OID_INVALIDITY_DATE: &str = "2.5.29.24";
const OID_HOLD: &str = "2.5.29.23";
const OID_CERT_ISSUER: &str = "2.5.29.29";

/// Every revocation reason of ReasonFlags (bits 1–8; bit 0 is `unused`).
pub(crate) const ALL_REASONS: u16 = 0x1fe;

/// The ReasonFlags names of the bits of `mask`, for messages.
pub(crate) fn reasons_text(mask: u16) -> String {
    const NAMES: [&str; 9] = [
        "unused",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
        "aACompromise",
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join(", ")
}

/// What a usable CRL covers for one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The CRL is indirect (issuingDistributionPoint indirectCRL): entries may name other
    /// certificate issuers.
    pub indirect: bool,
    /// The CRL's issuer is not the certificate's issuer (it is a distribution point's
    /// cRLIssuer).
    pub other_issuer: bool,
    /// The revocation reasons (ReasonFlags bits) the CRL covers for the certificate.
    pub reasons: u16,
}

fn is_ca(cert: &CertEntry) -> bool {
    matches!(
        cert.cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
}

/// The certificate's CRL distribution points; without the extension, the one RFC 5280
/// implies: the certificate issuer's CRLs, named by the issuer's name. `Err` when the
/// extension is there and unreadable.
fn distribution_points(cert: &CertEntry) -> Result<Vec<DistributionPoint>, String> {
    let tbs = cert.cert.tbs_certificate();
    match tbs.get_extension::<CrlDistributionPoints>() {
        Ok(Some((_, dps))) => Ok(dps.0),
        Ok(None) => Ok(vec![DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![
                GeneralName::DirectoryName(tbs.issuer().clone()),
            ])),
            reasons: None,
            crl_issuer: None,
        }]),
        Err(e) => Err(format!(
            "the certificate's cRLDistributionPoints is unreadable ({e})"
        )),
    }
}

/// `base` with `rdn` appended: the full name of a nameRelativeToCRLIssuer (RFC 5280
/// §4.2.1.13).
fn append_rdn(base: &Name, rdn: &RelativeDistinguishedName) -> Option<Name> {
    let mut body = Vec::new();
    for r in base.iter_rdn() {
        body.extend(r.to_der().ok()?);
    }
    body.extend(rdn.to_der().ok()?);
    let mut der = vec![0x30];
    der.extend(crate::ber::der_len(body.len()));
    der.extend(body);
    Name::from_der(&der).ok()
}

/// The general names a distribution point name stands for; a relative name is appended to
/// `crl_issuer`.
fn full_names(name: &DistributionPointName, crl_issuer: &Name) -> Vec<GeneralName> {
    match name {
        DistributionPointName::FullName(names) => names.clone(),
        DistributionPointName::NameRelativeToCRLIssuer(rdn) => append_rdn(crl_issuer, rdn)
            .map(GeneralName::DirectoryName)
            .into_iter()
            .collect(),
    }
}

/// Two general names are the same: directory names by the RFC 5280 §7.1 comparison,
/// others byte for byte.
fn general_names_match(a: &GeneralName, b: &GeneralName) -> bool {
    match (a, b) {
        (GeneralName::DirectoryName(x), GeneralName::DirectoryName(y)) => names_match(x, y),
        _ => matches!((a.to_der(), b.to_der()), (Ok(x), Ok(y)) if x == y),
    }
}

fn directory_names(names: &GeneralNames) -> impl Iterator<Item = &Name> {
    names.iter().filter_map(|n| match n {
        GeneralName::DirectoryName(d) => Some(d),
        _ => None,
    })
}

/// RFC 5280 §6.3.3 (b)(2)(i): one of the issuingDistributionPoint's names is one of the
/// distribution point's (its distributionPoint names, or without them its cRLIssuer).
fn idp_names_dp(
    idp_name: &DistributionPointName,
    crl_issuer: &Name,
    dp: &DistributionPoint,
    cert_issuer: &Name,
) -> bool {
    let idp = full_names(idp_name, crl_issuer);
    let dp_names = match (&dp.distribution_point, &dp.crl_issuer) {
        (Some(name), issuers) => {
            // a relative name is relative to the DP's cRLIssuer, else the certificate issuer
            let base = issuers
                .as_ref()
                .and_then(|i| directory_names(i).next())
                .unwrap_or(cert_issuer);
            full_names(name, base)
        }
        (None, Some(issuers)) => issuers.clone(),
        (None, None) => Vec::new(),
    };
    idp.iter()
        .any(|a| dp_names.iter().any(|b| general_names_match(a, b)))
}

/// The issuingDistributionPoint of `crl`, when it has one.
pub(crate) fn idp(crl: &Crl) -> Result<Option<IssuingDistributionPoint>, String> {
    let Some(ext) = crl.extension(OID_IDP) else {
        return Ok(None);
    };
    IssuingDistributionPoint::from_der(ext.extn_value.as_bytes())
        .map(Some)
        .map_err(|e| {
            format!(
                "the CRL from {} has an unreadable issuingDistributionPoint ({e})",
                crl.source
            )
        })
}

/// Whether `crl` covers `cert` (RFC 5280 §6.3.3 (b), (d)): `Err("")` for another issuer's
/// CRL (not reported), `Err(why)` for a CRL of this issuer that does not cover the
/// certificate or cannot be read.
pub(crate) fn scope(crl: &Crl, cert: &CertEntry) -> Result<Scope, String> {
    let from = &crl.source;
    let crl_issuer = &crl.list.tbs_cert_list.issuer;
    let cert_issuer = cert.cert.tbs_certificate().issuer();
    let idp = idp(crl)?;
    let indirect = idp.as_ref().is_some_and(|i| i.indirect_crl);
    let mut named = false;
    let mut why = None;
    let mut reasons = 0u16;
    for dp in distribution_points(cert)? {
        match &dp.crl_issuer {
            Some(names) if directory_names(names).any(|n| names_match(n, crl_issuer)) => {
                named = true;
                if !indirect {
                    why.get_or_insert_with(|| format!("the CRL from {from} is named as the certificate's CRL issuer but is not an indirect CRL"));
                    continue;
                }
            }
            Some(_) => continue,
            None if names_match(crl_issuer, cert_issuer) => named = true,
            None => continue,
        }
        if let Some(name) = idp.as_ref().and_then(|i| i.distribution_point.as_ref()) {
            if !idp_names_dp(name, crl_issuer, &dp, cert_issuer) {
                why.get_or_insert_with(|| {
                    format!("the CRL from {from} is for another distribution point")
                });
                continue;
            }
        }
        let dp_reasons = dp.reasons.map_or(ALL_REASONS, |r| r.bits());
        let idp_reasons = idp
            .as_ref()
            .and_then(|i| i.only_some_reasons)
            .map_or(ALL_REASONS, |r| r.bits());
        reasons |= dp_reasons & idp_reasons & ALL_REASONS;
        if dp_reasons & idp_reasons & ALL_REASONS == 0 {
            why.get_or_insert_with(|| {
                format!("the CRL from {from} covers none of the distribution point's reasons")
            });
        }
    }
    if !named {
        return Err(String::new()); // another issuer's CRL: silently not ours
    }
    if let Some(i) = &idp {
        idp_kind_problem(i, cert, from)?;
    }
    if reasons == 0 {
        return Err(why.unwrap_or_else(|| format!("the CRL from {from} does not cover it")));
    }
    Ok(Scope {
        indirect,
        other_issuer: !names_match(crl_issuer, cert_issuer),
        reasons,
    })
}

/// The kind of certificates an issuingDistributionPoint admits (RFC 5280 §6.3.3 (b)(2)
/// (ii)–(iv)).
fn idp_kind_problem(
    idp: &IssuingDistributionPoint,
    cert: &CertEntry,
    from: &str,
) -> Result<(), String> {
    if idp.only_contains_attribute_certs {
        return Err(format!(
            "the CRL from {from} covers attribute certificates only"
        ));
    }
    let ca = is_ca(cert);
    if idp.only_contains_user_certs && ca {
        return Err(format!(
            "the CRL from {from} covers end-entity certificates only"
        ));
    }
    if idp.only_contains_ca_certs && !ca {
        return Err(format!("the CRL from {from} covers CA certificates only"));
    }
    Ok(())
}

/// The entry of `cert` in `crl` (RFC 5280 §5.3.3, §6.3.3 (i)): by serial number, and in an
/// indirect CRL also by certificate issuer — each entry's is named by its certificateIssuer
/// extension or is the previous entry's, the CRL issuer for the first. `Err` when an entry
/// has a critical extension that is not processed, or names another issuer in a CRL that
/// is not indirect: the CRL is not used.
pub(crate) fn find_entry<'c>(
    crl: &'c Crl,
    cert: &CertEntry,
    indirect: bool,
) -> Result<Option<&'c RevokedCert>, String> {
    let from = &crl.source;
    let tbs = cert.cert.tbs_certificate();
    let serial = tbs.serial_number().as_bytes();
    let mut entry_issuer: Option<Name> = None; // None: the CRL issuer
    let mut found = None;
    for rc in crl.list.tbs_cert_list.revoked_certificates.iter().flatten() {
        for ext in rc.crl_entry_extensions.iter().flatten() {
            let oid = ext.extn_id.to_string();
            if oid == OID_CERT_ISSUER {
                if !indirect {
                    return Err(format!("the CRL from {from} names other certificate issuers in its entries but is not an indirect CRL"));
                }
                let names = GeneralNames::from_der(ext.extn_value.as_bytes()).map_err(|e| {
                    format!("the CRL from {from} has an unreadable certificateIssuer ({e})")
                })?;
                let name = directory_names(&names).next().ok_or_else(|| {
                    format!("the CRL from {from} has a certificateIssuer without a directory name")
                })?;
                entry_issuer = Some(name.clone());
            } else if ext.critical
                && ![OID_REASON, OID_INVALIDITY_DATE, OID_HOLD].contains(&oid.as_str())
            {
                return Err(format!("the CRL from {from} has an entry with a critical extension {oid} that is not processed"));
            }
        }
        if found.is_none() && rc.serial_number.as_bytes() == serial {
            let issuer = entry_issuer
                .as_ref()
                .unwrap_or(&crl.list.tbs_cert_list.issuer);
            if names_match(issuer, tbs.issuer()) {
                found = Some(rc);
            }
        }
    }
    Ok(found)
}

/// The CRLReason code of an entry, when it has one.
pub(crate) fn entry_reason(rc: &RevokedCert) -> Option<u8> {
    rc.crl_entry_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == OID_REASON)
        .and_then(|e| match e.extn_value.as_bytes() {
            // CRLReason ::= ENUMERATED, one octet for every defined value
            [0x0a, 0x01, v] => Some(*v),
            _ => None,
        })
}
