//! Revocation checking from CRLs (RFC 5280 §5 and §6.3), sans I/O.
//!
//! The caller gathers CRLs (files, the SignedData's own `crls`, a cache, a fetch from the
//! certificate's distribution points) as [`Crl`]s; [`check_chain`] decides, for every
//! certificate of a validated path below the anchor, whether it is revoked, good, or of
//! unknown status, and turns that into the `revocation` check under a [`RevocationMode`].
//!
//! A complete CRL is used for a certificate only when all of these hold (otherwise it is
//! skipped, and the reason is kept for the report):
//! - it covers the certificate ([`crate::crl_scope`]): its issuer is the certificate's
//!   issuer, or the cRLIssuer of one of the certificate's distribution points (then it must
//!   be an indirect CRL); its issuingDistributionPoint names one of those distribution
//!   points (full or relative names) and admits the certificate's kind (user/CA);
//! - its signature verifies with the key of a certificate named as its issuer, whose
//!   keyUsage (if present) allows cRLSign: the issuing CA's, or another one on a path to
//!   the same trust anchor and itself not revoked (RFC 5280 §6.3.3 (f));
//! - it is current: thisUpdate not in the future and nextUpdate not past (with the allowed
//!   clock skew);
//! - it has no critical extension we do not process, and its entries none either.
//!
//! A delta CRL (RFC 5280 §5.2.4, §6.3.3 (c), (j)) is applied on top of a usable complete
//! CRL of the same issuer and scope (the same issuingDistributionPoint, the same
//! authorityKeyIdentifier) whose cRLNumber is at least the delta's BaseCRLNumber and below
//! the delta's own cRLNumber; it must pass the same checks. An entry on the delta decides
//! (removeFromCRL releases a certificateHold of the complete CRL, and nothing else); a delta
//! without a usable complete CRL is not used. With a fetcher, the delta CRLs named in
//! freshestCRL by the certificate or by the complete CRLs fetched from its distribution
//! points are fetched too ([`delta_crl_urls`]).
//!
//! One usable CRL (with its delta) that lists the certificate makes it revoked (with the
//! reason code and revocation time when given). It is good when usable CRLs that do not
//! list it together cover every revocation reason (CRLs partitioned by onlySomeReasons,
//! §6.3.3 (d)); otherwise its status is unknown.

use std::time::{Duration, SystemTime};

use der::Decode;
use serde::Serialize;
use x509_cert::crl::{CertificateList, RevokedCert};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::crl::{CrlDistributionPoints, FreshestCrl};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::KeyUsage;

use crate::crl_scope::{
    entry_reason, find_entry, reasons_text, scope, Scope, ALL_REASONS, OID_IDP,
};
use crate::path::{build_path, names_match, verify_signed_der, CertEntry};
use crate::verify::{format_time, Check};

/// What happens when the revocation status of a certificate cannot be determined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationMode {
    /// Not checked; the report says so.
    Off,
    /// A revoked certificate fails; an unknown status is reported and does not fail.
    #[default]
    SoftFail,
    /// A revoked certificate fails, and so does an unknown status.
    HardFail,
}

impl RevocationMode {
    /// Parses `off`, `soft-fail` or `hard-fail`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "off" => Some(Self::Off),
            "soft-fail" | "soft" => Some(Self::SoftFail),
            "hard-fail" | "hard" => Some(Self::HardFail),
            _ => None,
        }
    }

    /// The spelling [`RevocationMode::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::SoftFail => "soft-fail",
            Self::HardFail => "hard-fail",
        }
    }
}

/// Which network sources are asked, in which order, when the given and carried CRLs do not
/// decide (`[trust] revocation_sources`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationSources {
    /// OCSP at the certificate's responder, then the CRL distribution points (default).
    #[default]
    OcspFirst,
    /// The CRL distribution points, then OCSP.
    CrlFirst,
    /// OCSP only.
    OcspOnly,
    /// CRL distribution points only.
    CrlOnly,
}

impl RevocationSources {
    /// The spelling in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::OcspFirst => "ocsp-first",
            Self::CrlFirst => "crl-first",
            Self::OcspOnly => "ocsp-only",
            Self::CrlOnly => "crl-only",
        }
    }
}

/// Most CRLs considered for one verification (the rest are ignored).
pub const MAX_CRLS: usize = 64;

const OID_DELTA: &str = "2.5.29.27";
const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_AKI: &str = "2.5.29.35";
const OID_ISSUER_ALT_NAME: &str = "2.5.29.18";
const OID_FRESHEST: &str = "2.5.29.46";
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
/// CRLReason certificateHold.
const REASON_HOLD: u8 = 6;
/// CRLReason removeFromCRL.
const REASON_REMOVE: u8 = 8;

/// A parsed CRL and where it came from.
#[derive(Clone, Debug)]
pub struct Crl {
    /// The CRL.
    pub list: CertificateList,
    /// Its DER.
    pub der: Vec<u8>,
    /// Where it came from, for the report: `--crl FILE`, `the message`, a URL, the cache.
    pub source: String,
}

impl Crl {
    /// Parses one DER CRL.
    pub fn from_der(der: Vec<u8>, source: impl Into<String>) -> Result<Self, String> {
        let list = CertificateList::from_der(&der)
            .map_err(|e| format!("not an X.509 v2 CRL ({e}); version 1 CRLs are not read"))?;
        Ok(Crl {
            list,
            der,
            source: source.into(),
        })
    }

    /// Every CRL of a PEM file (`X509 CRL` blocks), or the one CRL of a DER file.
    pub fn from_pem_or_der(data: &[u8], source: &str) -> Result<Vec<Self>, String> {
        let text = std::str::from_utf8(data)
            .ok()
            .filter(|t| t.contains("-----BEGIN"));
        let Some(text) = text else {
            return Ok(vec![Crl::from_der(data.to_vec(), source)?]);
        };
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN X509 CRL-----") {
            let block = &rest[start..];
            let end_marker = "-----END X509 CRL-----";
            let end = block
                .find(end_marker)
                .ok_or("PEM CRL without its END line")?
                + end_marker.len();
            let (_, der) = der::pem::decode_vec(&block.as_bytes()[..end])
                .map_err(|e| format!("bad PEM CRL: {e}"))?;
            out.push(Crl::from_der(der, source)?);
            rest = &block[end..];
        }
        if out.is_empty() {
            return Err("no X509 CRL block in the PEM file".into());
        }
        Ok(out)
    }

    pub(crate) fn extension(&self, oid: &str) -> Option<&x509_cert::ext::Extension> {
        self.list
            .tbs_cert_list
            .crl_extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
    }

    /// A delta CRL (deltaCRLIndicator): applied only on top of a complete CRL.
    pub fn is_delta(&self) -> bool {
        self.extension(OID_DELTA).is_some()
    }

    /// Its cRLNumber, without leading zero octets (`None` when absent or unreadable).
    pub fn number(&self) -> Option<Vec<u8>> {
        self.integer_extension(OID_CRL_NUMBER)
    }

    /// A delta CRL's BaseCRLNumber (the deltaCRLIndicator), without leading zero octets.
    pub fn base_number(&self) -> Option<Vec<u8>> {
        self.integer_extension(OID_DELTA)
    }

    fn integer_extension(&self, oid: &str) -> Option<Vec<u8>> {
        let ext = self.extension(oid)?;
        let n = der::asn1::Uint::from_der(ext.extn_value.as_bytes()).ok()?;
        let bytes = n.as_bytes();
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Some(bytes[start..].to_vec())
    }

    /// thisUpdate.
    pub fn this_update(&self) -> SystemTime {
        self.list.tbs_cert_list.this_update.to_system_time()
    }

    /// nextUpdate, when present.
    pub fn next_update(&self) -> Option<SystemTime> {
        self.list
            .tbs_cert_list
            .next_update
            .map(|t| t.to_system_time())
    }

    /// The issuer's name, for messages.
    pub fn issuer(&self) -> String {
        self.list.tbs_cert_list.issuer.to_string()
    }
}

/// The revocation status of one certificate, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertRevocation {
    /// The certificate's subject.
    pub subject: String,
    /// Its serial number (hex).
    pub serial: String,
    /// `crl`, `ocsp` or `none`.
    pub source: String,
    /// `good`, `revoked` or `unknown`.
    pub status: String,
    /// When revoked: the CRL reason (`keyCompromise`, …; `unspecified` when none given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When revoked: the revocation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_time: Option<String>,
    /// Which CRL decided, or why the status is unknown.
    pub detail: String,
}

impl CertRevocation {
    fn new(cert: &CertEntry, source: &str, status: &str, detail: String) -> Self {
        CertRevocation {
            subject: cert.subject(),
            serial: cert.serial_hex(),
            source: source.into(),
            status: status.into(),
            reason: None,
            revocation_time: None,
            detail,
        }
    }

    /// Revoked.
    pub fn is_revoked(&self) -> bool {
        self.status == "revoked"
    }

    /// Unknown.
    pub fn is_unknown(&self) -> bool {
        self.status == "unknown"
    }
}

/// Network access for revocation, given by the caller (the core does no I/O): the CLI
/// fetches over http with timeouts and size caps, and caches on disk.
pub trait RevocationFetcher: std::fmt::Debug {
    /// The CRL (DER or PEM) at a distribution point URL, fresh or from a cache that keeps it
    /// until its nextUpdate.
    fn crl(&self, url: &str) -> Result<Vec<u8>, String>;
    /// The responder's answer (DER) to `query`; `true` with it when it came from a cache
    /// (then its nonce answers an older request).
    fn ocsp(&self, url: &str, query: &crate::ocsp::OcspQuery) -> Result<(Vec<u8>, bool), String>;
}

/// Most network requests (OCSP and CRL fetches) of one verification.
pub const MAX_FETCHES: usize = 12;

/// What [`check_chain`] needs besides the path.
#[derive(Clone, Copy, Debug)]
pub struct RevocationInputs<'a> {
    /// What an unknown status does.
    pub mode: RevocationMode,
    /// The CRLs gathered by the caller (at most [`MAX_CRLS`] are looked at).
    pub crls: &'a [Crl],
    /// The verification time.
    pub now: SystemTime,
    /// Allowed clock skew for thisUpdate / nextUpdate.
    pub skew: Duration,
    /// Network access: OCSP (the certificate's authorityInfoAccess) and the CRL
    /// distribution points, when the local CRLs do not decide. `None`: offline.
    pub fetcher: Option<&'a dyn RevocationFetcher>,
    /// Which network sources, in which order.
    pub sources: RevocationSources,
    /// The certificates at hand (the message's and the intermediates), to find a CRL's
    /// signer when it is not the certificate's issuer.
    pub pool: &'a [CertEntry],
    /// The trust anchor of the path being checked (set by [`check_chain`]).
    pub anchor: Option<&'a CertEntry>,
    /// Most intermediates on a CRL signer's path.
    pub max_intermediates: usize,
    /// 0 for the path itself; more while checking a CRL signer's path (bounded).
    pub depth: u8,
    /// CRL-signer candidates left to try in this verification (set by [`check_chain`]).
    pub signer_budget: Option<&'a std::cell::Cell<usize>>,
}

/// The CRLReason (RFC 5280 §5.3.1) of a code, as CRL entries and OCSP answers carry it.
pub(crate) fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown reason code",
    }
}

/// The certificate's CRL distribution points (none when absent or unreadable).
fn distribution_points(cert: &CertEntry) -> Vec<x509_cert::ext::pkix::crl::dp::DistributionPoint> {
    match cert
        .cert
        .tbs_certificate()
        .get_extension::<CrlDistributionPoints>()
    {
        Ok(Some((_, dps))) => dps.0,
        _ => Vec::new(),
    }
}

/// The http(s) URLs of the certificate's CRL distribution points, for a caller that fetches.
pub fn crl_urls(cert: &CertEntry) -> Vec<String> {
    let mut out = Vec::new();
    push_urls(&mut out, distribution_points(cert));
    out
}

/// Appends the http(s) full-name URLs of `dps` to `out` (each once).
fn push_urls(out: &mut Vec<String>, dps: Vec<DistributionPoint>) {
    for dp in dps {
        if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
            for n in names {
                if let GeneralName::UniformResourceIdentifier(u) = n {
                    let u = u.to_string();
                    if (u.starts_with("http://") || u.starts_with("https://")) && !out.contains(&u)
                    {
                        out.push(u);
                    }
                }
            }
        }
    }
}

/// Where the delta CRLs are (freshestCRL, RFC 5280 §4.2.1.15 and §5.2.6): the http(s)
/// URLs named by the certificate and by the complete CRLs among `crls`.
pub fn delta_crl_urls(cert: &CertEntry, crls: &[Crl]) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some((_, f))) = cert.cert.tbs_certificate().get_extension::<FreshestCrl>() {
        push_urls(&mut out, f.0);
    }
    for crl in crls.iter().filter(|c| !c.is_delta()) {
        if let Some(f) = crl
            .extension(OID_FRESHEST)
            .and_then(|e| FreshestCrl::from_der(e.extn_value.as_bytes()).ok())
        {
            push_urls(&mut out, f.0);
        }
    }
    out
}

/// Whether `signer` signed `crl`: a keyUsage that allows cRLSign, and the signature.
fn signed_by(crl: &Crl, signer: &CertEntry) -> Result<(), String> {
    let from = &crl.source;
    if let Ok(Some((_, ku))) = signer.cert.tbs_certificate().get_extension::<KeyUsage>() {
        if !ku.crl_sign() {
            return Err(format!(
                "the CRL from {from} is signed by '{}', whose keyUsage does not allow cRLSign",
                signer.subject()
            ));
        }
    }
    verify_signed_der(
        &crl.der,
        &crl.list.signature_algorithm,
        &crl.list.signature,
        signer,
        "CRL",
    )
    .map(|_| ())
    .map_err(|e| format!("the CRL from {from} has a bad signature ({e})"))
}

/// Most other certificates tried as the signer of one CRL.
const MAX_CRL_SIGNERS: usize = 8;
/// Most CRL-signer candidates tried in one verification, all CRLs and levels together.
pub const MAX_CRL_SIGNER_TRIES: usize = 32;
/// How deep the search for CRL signers goes (a CRL signer's own CRL may be signed by a
/// rolled-over key as well, PKITS 4.6.17); each level tries at most [`MAX_CRL_SIGNERS`].
const MAX_CRL_SIGNER_DEPTH: u8 = 2;

/// Who signed `crl` for certificates of `issuer`: the issuer's own key, or (RFC 5280
/// §6.3.3 (f)) another certificate with the CRL issuer's name — the same CA's separate
/// CRL-signing key or new key after a rollover, or the CRL issuer of an indirect CRL — with
/// cRLSign, a path to the same trust anchor, and itself not revoked (checked against the
/// given CRLs, two levels deep). The trust anchor itself, when it has the CRL issuer's
/// name, signs without a path; so does `cert`, the certificate whose status is asked, when
/// it is a CRL signer being checked and the CRL's issuer (a CRL issuer's certificate on its
/// own CRL).
fn crl_signer(
    crl: &Crl,
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
) -> Result<(), String> {
    let crl_issuer = &crl.list.tbs_cert_list.issuer;
    let direct = if names_match(crl_issuer, issuer.cert.tbs_certificate().subject()) {
        signed_by(crl, issuer)
    } else {
        Err(format!(
            "the CRL from {} is issued by '{}', and no certificate of that name at hand signed it",
            crl.source,
            crl.issuer()
        ))
    };
    if direct.is_ok() || inp.depth >= MAX_CRL_SIGNER_DEPTH {
        return direct;
    }
    let Some(anchor) = inp.anchor else {
        return direct;
    };
    if anchor != issuer
        && names_match(anchor.cert.tbs_certificate().subject(), crl_issuer)
        && signed_by(crl, anchor).is_ok()
    {
        return Ok(());
    }
    // a CRL signer whose own status is given by a CRL it signed itself (PKITS 4.14.30): its
    // path is the one being checked (depth > 0: a CRL signer's path, never the message's
    // own), so the signature is all there is to check
    if inp.depth > 0
        && cert != issuer
        && names_match(cert.cert.tbs_certificate().subject(), crl_issuer)
        && signed_by(crl, cert).is_ok()
    {
        return Ok(());
    }
    let candidates = inp
        .pool
        .iter()
        .filter(|c| *c != issuer && *c != anchor && *c != cert)
        .filter(|c| names_match(c.cert.tbs_certificate().subject(), crl_issuer))
        .take(MAX_CRL_SIGNERS);
    for c in candidates {
        // every candidate costs a signature check and maybe a path search: a hostile
        // message (many CRLs, many same-name certificates) gets a fixed budget per
        // verification, shared by the nested checks
        let left = inp.signer_budget.map(|b| b.get()).unwrap_or(0);
        if left == 0 {
            return Err(format!(
                "{} (no further CRL signers tried for this message)",
                direct.err().unwrap_or_default()
            ));
        }
        if let Some(b) = inp.signer_budget {
            b.set(left - 1);
        }
        if signed_by(crl, c).is_err() {
            continue;
        }
        let Ok(path) = build_path(
            c,
            inp.pool,
            std::slice::from_ref(anchor),
            inp.max_intermediates,
        ) else {
            continue;
        };
        if let Some(p) = path.iter().find_map(|x| x.validity_problem(inp.now)) {
            return Err(format!(
                "the CRL from {} is signed by '{}' on a path that is not valid now ({p})",
                crl.source,
                c.subject()
            ));
        }
        let nested = RevocationInputs {
            depth: inp.depth + 1,
            fetcher: None,
            ..*inp
        };
        let check = check_chain(&path, &nested);
        if let Some(r) = check.certificates.iter().find(|e| e.is_revoked()) {
            return Err(format!(
                "the CRL from {} is signed by '{}', whose path has a revoked certificate ('{}')",
                crl.source,
                c.subject(),
                r.subject
            ));
        }
        if let Some(u) = check.certificates.iter().find(|e| e.is_unknown()) {
            return Err(format!(
                "the CRL from {} is signed by '{}', whose own revocation status is unknown ({})",
                crl.source,
                c.subject(),
                u.detail
            ));
        }
        return Ok(());
    }
    direct
}

/// Why `crl` cannot decide for `cert` issued by `issuer` (`Err("")`: another issuer's CRL,
/// not reported); what it covers when it can. A delta CRL is checked as a complete one,
/// except that its deltaCRLIndicator is understood.
fn usable(
    crl: &Crl,
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
) -> Result<Scope, String> {
    let scope = scope(crl, cert)?;
    crl_signer(crl, cert, issuer, inp)?;
    if let Some(why) = time_problem(crl, inp) {
        return Err(why);
    }
    if let Some(why) = extension_problem(crl) {
        return Err(why);
    }
    Ok(scope)
}

/// Why `crl` is not current at the verification time (`None`: it is).
fn time_problem(crl: &Crl, inp: &RevocationInputs<'_>) -> Option<String> {
    let from = &crl.source;
    if crl.this_update() > inp.now + inp.skew {
        return Some(format!(
            "the CRL from {from} is not yet valid (thisUpdate {})",
            format_time(crl.this_update())
        ));
    }
    match crl.next_update() {
        Some(next) if next + inp.skew < inp.now => Some(format!(
            "the CRL from {from} is out of date (nextUpdate {})",
            format_time(next)
        )),
        _ => None,
    }
}

/// A critical CRL extension that is not processed (the deltaCRLIndicator is, on a delta
/// CRL), or an unreadable delta CRL number.
fn extension_problem(crl: &Crl) -> Option<String> {
    let from = &crl.source;
    let known = [
        OID_IDP,
        OID_CRL_NUMBER,
        OID_AKI,
        OID_ISSUER_ALT_NAME,
        OID_FRESHEST,
        OID_AIA,
        OID_DELTA,
    ];
    for ext in crl.list.tbs_cert_list.crl_extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !known.contains(&oid.as_str()) {
            return Some(format!(
                "the CRL from {from} has a critical extension {oid} that is not processed"
            ));
        }
    }
    if crl.is_delta() && (crl.base_number().is_none() || crl.number().is_none()) {
        return Some(format!(
            "the delta CRL from {from} has an unreadable BaseCRLNumber or no cRLNumber"
        ));
    }
    None
}

/// Compares two CRL numbers (big-endian, without leading zero octets).
fn cmp_number(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether `delta` applies to the complete CRL `base` (RFC 5280 §5.2.4, §6.3.3 (c)): the
/// same issuer, the same issuingDistributionPoint and authorityKeyIdentifier (both absent,
/// or the same value), BaseCRLNumber ≤ the complete CRL's number < the delta's number. A
/// delta of the same scope whose numbers cannot be read applies (and is not understood).
fn delta_applies(delta: &Crl, base: &Crl) -> bool {
    let same_ext = |oid: &str| match (delta.extension(oid), base.extension(oid)) {
        (None, None) => true,
        (Some(a), Some(b)) => a.extn_value == b.extn_value,
        _ => false,
    };
    let same_scope = names_match(
        &delta.list.tbs_cert_list.issuer,
        &base.list.tbs_cert_list.issuer,
    ) && same_ext(OID_IDP)
        && same_ext(OID_AKI);
    let (Some(base_number), Some(delta_number)) = (delta.base_number(), delta.number()) else {
        return same_scope;
    };
    let Some(number) = base.number() else {
        return false; // a complete CRL without a number has no deltas
    };
    same_scope
        && cmp_number(&base_number, &number).is_le()
        && cmp_number(&number, &delta_number).is_lt()
}

/// The number of a CRL for messages (hex when long).
fn number_text(n: &[u8]) -> String {
    match n {
        [] => "0".into(),
        [a] => a.to_string(),
        _ => n.iter().map(|b| format!("{b:02X}")).collect(),
    }
}

/// The status of `cert` (issued by `issuer`): the given CRLs first; then, with a fetcher,
/// OCSP at the certificate's responder and the CRLs at its distribution points.
pub fn status(
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
    fetches: &std::cell::Cell<usize>,
) -> CertRevocation {
    let local = crl_status(cert, issuer, inp.crls, inp);
    let Some(fetcher) = inp.fetcher else {
        return local;
    };
    if !local.is_unknown() {
        return local;
    }
    let mut notes = vec![local.detail.clone()];
    let budget = || {
        let n = fetches.get();
        fetches.set(n + 1);
        n < MAX_FETCHES
    };
    let order: &[bool] = match inp.sources {
        RevocationSources::OcspFirst => &[true, false],
        RevocationSources::CrlFirst => &[false, true],
        RevocationSources::OcspOnly => &[true],
        RevocationSources::CrlOnly => &[false],
    };
    for &ocsp in order {
        let decided = if ocsp {
            ocsp_from_network(cert, issuer, inp, fetcher, &budget, &mut notes)
        } else {
            crl_from_network(cert, issuer, inp, fetcher, &budget, &mut notes)
        };
        if let Some(r) = decided {
            return r;
        }
    }
    notes.retain(|n| !n.is_empty());
    notes.dedup();
    CertRevocation::new(cert, "none", "unknown", notes.join("; "))
}

/// OCSP at the certificate's first responder: a decision, or notes on why not.
fn ocsp_from_network(
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
    fetcher: &dyn RevocationFetcher,
    budget: &dyn Fn() -> bool,
    notes: &mut Vec<String>,
) -> Option<CertRevocation> {
    let url = crate::ocsp::responder_urls(cert).into_iter().next()?;
    if !budget() {
        notes.push("no more network requests for this message".into());
        return None;
    }
    match ocsp_status(cert, issuer, inp, fetcher, &url) {
        Ok(r) if !r.is_unknown() => return Some(r),
        Ok(r) => notes.push(r.detail),
        Err(e) => notes.push(format!("OCSP {url}: {e}")),
    }
    None
}

/// The CRLs at the certificate's distribution points, with the delta CRLs they name: a
/// decision, or notes on why not.
fn crl_from_network(
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
    fetcher: &dyn RevocationFetcher,
    budget: &dyn Fn() -> bool,
    notes: &mut Vec<String>,
) -> Option<CertRevocation> {
    let mut fetched = fetch_crls(crl_urls(cert), "CRL", fetcher, budget, notes);
    if fetched.is_empty() {
        return None;
    }
    // The delta CRLs the certificate or those CRLs point at (freshestCRL), applied on top:
    // a revocation since the complete CRL was issued is on them. Without them (not
    // reachable), the complete CRL decides until its nextUpdate.
    let deltas = fetch_crls(
        delta_crl_urls(cert, &fetched),
        "delta CRL",
        fetcher,
        budget,
        notes,
    );
    fetched.extend(deltas.into_iter().filter(Crl::is_delta));
    let r = crl_status(cert, issuer, &fetched, inp);
    if !r.is_unknown() {
        return Some(r);
    }
    notes.push(r.detail);
    None
}

/// The CRLs at the first two http `urls`, each fetch within the budget; why one did not
/// come goes to `notes` (`what` names it).
fn fetch_crls(
    urls: Vec<String>,
    what: &str,
    fetcher: &dyn RevocationFetcher,
    budget: &dyn Fn() -> bool,
    notes: &mut Vec<String>,
) -> Vec<Crl> {
    let mut fetched = Vec::new();
    for url in urls
        .into_iter()
        .filter(|u| u.starts_with("http://"))
        .take(2)
    {
        if !budget() {
            notes.push("no more network requests for this message".into());
            break;
        }
        match fetcher
            .crl(&url)
            .and_then(|data| Crl::from_pem_or_der(&data, &url))
        {
            Ok(c) => fetched.extend(c),
            Err(e) => notes.push(format!("{what} {url}: {e}")),
        }
    }
    fetched
}

/// One OCSP exchange: the status, or why there is none.
fn ocsp_status(
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
    fetcher: &dyn RevocationFetcher,
    url: &str,
) -> Result<CertRevocation, String> {
    let mut nonce = [0u8; 16];
    let nonce = getrandom::fill(&mut nonce).ok().map(|_| &nonce[..]);
    let query = crate::ocsp::request(cert, issuer, nonce)?;
    let (der, cached) = fetcher.ocsp(url, &query)?;
    let a = crate::ocsp::check_response(&der, &query, issuer, inp.now, inp.skew, cached)?;
    let from = format!(
        "OCSP responder {url}{} (signed by '{}')",
        if cached { ", cached answer" } else { "" },
        a.signer
    );
    Ok(match a.status {
        crate::ocsp::OcspStatus::Good => CertRevocation::new(cert, "ocsp", "good", from),
        crate::ocsp::OcspStatus::Unknown => CertRevocation::new(
            cert,
            "ocsp",
            "unknown",
            format!("the {from} does not know the certificate"),
        ),
        crate::ocsp::OcspStatus::Revoked { time, reason } => {
            let mut r = CertRevocation::new(cert, "ocsp", "revoked", from);
            r.reason = Some(reason);
            r.revocation_time = Some(time);
            r
        }
    })
}

/// What one complete CRL, with the delta CRL applied to it, says about a certificate.
enum Listing<'c> {
    /// Not listed (or released from hold by the delta).
    NotListed,
    /// Listed: the entry, and the CRL it is on.
    Revoked(&'c RevokedCert, &'c Crl),
}

/// The certificate's entry in `complete` with `delta` applied (RFC 5280 §6.3.3 (i), (j)):
/// an entry on the delta decides, except that removeFromCRL releases only a
/// certificateHold (or nothing) of the complete CRL. `Err` when either cannot be read.
fn listing<'c>(
    complete: &'c Crl,
    delta: Option<&'c Crl>,
    cert: &CertEntry,
    scope: &Scope,
) -> Result<Listing<'c>, String> {
    let on_complete = find_entry(complete, cert, scope.indirect)?;
    let on_delta = match delta {
        Some(d) => find_entry(d, cert, scope.indirect)?.map(|e| (e, d)),
        None => None,
    };
    Ok(match (on_delta, on_complete) {
        (Some((d, _)), c) if entry_reason(d) == Some(REASON_REMOVE) => match c {
            Some(c) if entry_reason(c) != Some(REASON_HOLD) => Listing::Revoked(c, complete),
            _ => Listing::NotListed,
        },
        (Some((d, dcrl)), _) => Listing::Revoked(d, dcrl),
        (None, Some(c)) => Listing::Revoked(c, complete),
        (None, None) => Listing::NotListed,
    })
}

/// The revoked status from an entry of `crl`.
fn revoked(cert: &CertEntry, rc: &RevokedCert, crl: &Crl) -> CertRevocation {
    let reason = entry_reason(rc).map_or("unspecified", reason_name);
    let what = if crl.is_delta() { "delta CRL" } else { "CRL" };
    let mut r = CertRevocation::new(
        cert,
        "crl",
        "revoked",
        format!(
            "listed in the {what} from {} (issued by '{}'{})",
            crl.source,
            crl.issuer(),
            crl.number()
                .map(|n| format!(", number {}", number_text(&n)))
                .unwrap_or_default()
        ),
    );
    r.reason = Some(reason.to_string());
    r.revocation_time = Some(format_time(rc.revocation_date.to_system_time()));
    r
}

/// Notes on why CRLs were not used, each once.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn push(&mut self, why: String) {
        if !why.is_empty() && !self.0.contains(&why) {
            self.0.push(why);
        }
    }
}

/// A delta CRL of the certificate's CRL issuer whose signature verifies, with what keeps
/// it from being applied (an extension or entry not understood): a complete CRL it applies
/// to is then not used either.
struct Delta<'c> {
    crl: &'c Crl,
    problem: Option<String>,
}

/// The delta CRLs among `crls` that cover `cert` and are signed by its CRL issuer (checked
/// once each); why the others are not used goes to `notes` (a delta that is not current or
/// not authentic is ignored: the complete CRL alone decides).
fn signed_deltas<'c>(
    crls: &'c [Crl],
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
    notes: &mut Notes,
) -> Vec<Delta<'c>> {
    let mut out = Vec::new();
    for d in crls.iter().filter(|c| c.is_delta()) {
        let checked = scope(d, cert)
            .and_then(|scope| crl_signer(d, cert, issuer, inp).map(|_| scope))
            .and_then(|scope| time_problem(d, inp).map_or(Ok(scope), Err));
        match checked {
            Ok(scope) => {
                let problem =
                    extension_problem(d).or_else(|| find_entry(d, cert, scope.indirect).err());
                out.push(Delta { crl: d, problem });
            }
            Err(why) => notes.push(why),
        }
    }
    out
}

/// The status of `cert` (issued by `issuer`) according to `crls`.
fn crl_status(
    cert: &CertEntry,
    issuer: &CertEntry,
    crls: &[Crl],
    inp: &RevocationInputs<'_>,
) -> CertRevocation {
    let crls = &crls[..crls.len().min(MAX_CRLS)];
    let mut notes = Notes::default();
    let deltas = signed_deltas(crls, cert, issuer, inp, &mut notes);
    let mut applied = vec![false; deltas.len()];
    let mut covered = 0u16;
    let mut good: Option<(&Crl, Option<&Crl>)> = None;
    for crl in crls.iter().filter(|c| !c.is_delta()) {
        let scope = match usable(crl, cert, issuer, inp) {
            Ok(s) => s,
            Err(why) => {
                notes.push(why);
                continue;
            }
        };
        // the newest delta CRL that applies
        let delta = deltas
            .iter()
            .enumerate()
            .filter(|(_, d)| delta_applies(d.crl, crl))
            .max_by(|(_, a), (_, b)| {
                cmp_number(
                    &a.crl.number().unwrap_or_default(),
                    &b.crl.number().unwrap_or_default(),
                )
            });
        if let Some((i, d)) = delta {
            applied[i] = true;
            if let Some(p) = &d.problem {
                notes.push(format!(
                    "the CRL from {} is not used: its delta CRL cannot be applied ({p})",
                    crl.source
                ));
                continue;
            }
        }
        let delta = delta.map(|(_, d)| d.crl);
        match listing(crl, delta, cert, &scope) {
            Err(why) => notes.push(why),
            Ok(Listing::Revoked(rc, on)) => return revoked(cert, rc, on),
            Ok(Listing::NotListed) => {
                covered |= scope.reasons;
                if good.is_none() || (delta.is_some() && good.is_some_and(|g| g.1.is_none())) {
                    good = Some((crl, delta));
                }
            }
        }
    }
    for (d, _) in deltas.iter().zip(&applied).filter(|(_, a)| !**a) {
        notes.push(match &d.problem {
            Some(p) => p.clone(),
            None => format!(
                "the delta CRL from {} has no usable complete CRL (its base CRL number is {})",
                d.crl.source,
                number_text(&d.crl.base_number().unwrap_or_default())
            ),
        });
    }
    match good {
        Some((crl, delta)) if covered == ALL_REASONS => good_status(cert, crl, delta),
        Some(_) => {
            notes.push(format!(
                "the usable CRLs cover only some revocation reasons (not: {})",
                reasons_text(ALL_REASONS & !covered)
            ));
            CertRevocation::new(
                cert,
                "none",
                "unknown",
                format!("no usable CRL for every reason: {}", notes.0.join("; ")),
            )
        }
        None => no_crl_status(cert, issuer, notes),
    }
}

/// Good, according to `crl` and the delta CRL applied to it.
fn good_status(cert: &CertEntry, crl: &Crl, delta: Option<&Crl>) -> CertRevocation {
    let mut detail = format!("not listed in the CRL from {}", crl.source);
    if let Some(next) = crl.next_update() {
        detail.push_str(&format!(" (next update {})", format_time(next)));
    }
    if let Some(d) = delta {
        detail.push_str(&format!(
            ", with the delta CRL from {} (number {}) applied",
            d.source,
            number_text(&d.number().unwrap_or_default())
        ));
    }
    CertRevocation::new(cert, "crl", "good", detail)
}

/// Unknown: no CRL could be used (why, or where one would be).
fn no_crl_status(cert: &CertEntry, issuer: &CertEntry, notes: Notes) -> CertRevocation {
    let detail = if !notes.0.is_empty() {
        format!("no usable CRL: {}", notes.0.join("; "))
    } else {
        let from = crl_issuers(cert, issuer).join("' or '");
        let urls = crl_urls(cert);
        if urls.is_empty() {
            format!(
                "no CRL from '{from}' was given, carried in the message or cached, and the certificate names no CRL distribution point URL"
            )
        } else {
            format!(
                "no CRL from '{from}' was given, carried in the message or cached (its distribution point: {})",
                urls.join(", ")
            )
        }
    };
    CertRevocation::new(cert, "none", "unknown", detail)
}

/// Who issues CRLs for `cert`, for messages: the cRLIssuers of its distribution points, and
/// its issuer unless every distribution point names a cRLIssuer.
fn crl_issuers(cert: &CertEntry, issuer: &CertEntry) -> Vec<String> {
    let dps = distribution_points(cert);
    let mut out: Vec<String> = Vec::new();
    if dps.iter().any(|dp| dp.crl_issuer.is_none()) || dps.is_empty() {
        out.push(issuer.subject());
    }
    for name in dps.iter().flat_map(|dp| dp.crl_issuer.iter().flatten()) {
        if let GeneralName::DirectoryName(n) = name {
            let n = n.to_string();
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// The `revocation` check for a validated path `[ee, intermediates..., anchor]`: every
/// certificate below the anchor, each against its issuer's CRLs.
pub fn check_chain(chain: &[&CertEntry], inp: &RevocationInputs<'_>) -> Check {
    if inp.mode == RevocationMode::Off {
        return Check {
            name: "revocation".into(),
            ok: true,
            reason: "revocation not checked (revocation = off)".into(),
            certificates: Vec::new(),
        };
    }
    let fetches = std::cell::Cell::new(0);
    let budget = std::cell::Cell::new(MAX_CRL_SIGNER_TRIES);
    let inp = &RevocationInputs {
        anchor: chain.last().copied(),
        signer_budget: inp.signer_budget.or(Some(&budget)),
        ..*inp
    };
    let entries: Vec<CertRevocation> = chain
        .windows(2)
        .map(|w| status(w[0], w[1], inp, &fetches))
        .collect();
    let revoked: Vec<&CertRevocation> = entries.iter().filter(|e| e.is_revoked()).collect();
    let unknown: Vec<&CertRevocation> = entries.iter().filter(|e| e.is_unknown()).collect();
    let (ok, reason) = if !revoked.is_empty() {
        let r = revoked
            .iter()
            .map(|e| {
                format!(
                    "'{}' (serial {}) was revoked at {} (reason {})",
                    e.subject,
                    e.serial,
                    e.revocation_time.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("unspecified")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        (false, format!("REVOKED: {r}"))
    } else if !unknown.is_empty() {
        // one line: the first certificate's reason, the count of the others (the JSON
        // report has an entry per certificate)
        let first = unknown[0];
        let u = if unknown.len() == 1 {
            format!("'{}': {}", first.subject, first.detail)
        } else {
            format!(
                "'{}': {} (and {} more certificate(s) of the path; --json lists each)",
                first.subject,
                first.detail,
                unknown.len() - 1
            )
        };
        match inp.mode {
            RevocationMode::HardFail => (
                false,
                format!("revocation status unknown (revocation = hard-fail): {u}"),
            ),
            _ => (
                true,
                format!("revocation status unknown, accepted (revocation = soft-fail): {u}"),
            ),
        }
    } else {
        (
            true,
            format!("not revoked: {} certificate(s) checked", entries.len()),
        )
    };
    Check {
        name: "revocation".into(),
        ok,
        reason,
        certificates: entries,
    }
}
