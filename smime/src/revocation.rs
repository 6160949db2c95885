//! Revocation checking from CRLs (RFC 5280 §5 and §6.3), sans I/O.
//!
//! The caller gathers CRLs (files, the SignedData's own `crls`, a cache, a fetch from the
//! certificate's distribution points) as [`Crl`]s; [`check_chain`] decides, for every
//! certificate of a validated path below the anchor, whether it is revoked, good, or of
//! unknown status, and turns that into the `revocation` check under a [`RevocationMode`].
//!
//! A CRL is used for a certificate only when all of these hold (otherwise it is skipped, and
//! the reason is kept for the report):
//! - its issuer name is the certificate's issuer and its signature verifies with the
//!   issuer's key, whose keyUsage (if present) allows cRLSign;
//! - it is current: thisUpdate not in the future and nextUpdate not past (with the allowed
//!   clock skew);
//! - it is a complete CRL for the certificate: not a delta CRL (detected and reported, not
//!   applied), no indirect or partial-reason scope, and an issuingDistributionPoint that
//!   covers the certificate (user/CA scope, distribution point names);
//! - it has no critical extension we do not process, and its entries none either.
//!
//! One usable CRL that lists the serial makes the certificate revoked (with the reason code
//! and revocation time when given); a usable CRL that does not list it makes it good.

use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use serde::Serialize;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::ext::pkix::crl::CrlDistributionPoints;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

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

const OID_IDP: &str = "2.5.29.28";
const OID_DELTA: &str = "2.5.29.27";
const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_AKI: &str = "2.5.29.35";
const OID_ISSUER_ALT_NAME: &str = "2.5.29.18";
const OID_FRESHEST: &str = "2.5.29.46";
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
const OID_REASON: &str = "2.5.29.21";
const OID_INVALIDITY_DATE: &str = "2.5.29.24";
const OID_HOLD: &str = "2.5.29.23";
const OID_CERT_ISSUER: &str = "2.5.29.29";

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

    fn extension(&self, oid: &str) -> Option<&x509_cert::ext::Extension> {
        self.list
            .tbs_cert_list
            .crl_extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
    }

    /// A delta CRL (deltaCRLIndicator): detected and reported, never applied on its own.
    pub fn is_delta(&self) -> bool {
        self.extension(OID_DELTA).is_some()
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

fn is_ca(cert: &CertEntry) -> bool {
    matches!(
        cert.cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
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
    for dp in distribution_points(cert) {
        if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
            for n in names {
                if let GeneralName::UniformResourceIdentifier(u) = n {
                    let u = u.to_string();
                    if u.starts_with("http://") || u.starts_with("https://") {
                        out.push(u);
                    }
                }
            }
        }
    }
    out
}

fn general_names_der(names: &[GeneralName]) -> Vec<Vec<u8>> {
    names.iter().filter_map(|n| n.to_der().ok()).collect()
}

/// RFC 5280 §6.3.3 (b)(2): does the CRL's issuingDistributionPoint name match the
/// certificate's distribution points (or, without any, its issuer)?
fn idp_name_matches(idp_name: &DistributionPointName, cert: &CertEntry) -> bool {
    let DistributionPointName::FullName(idp_names) = idp_name else {
        // nameRelativeToCRLIssuer: not supported; the CRL is not used
        return false;
    };
    let idp = general_names_der(idp_names);
    let dps = distribution_points(cert);
    if dps.is_empty() {
        // no distribution point: the CRL issuer is the certificate issuer
        let issuer = GeneralName::DirectoryName(cert.cert.tbs_certificate().issuer().clone());
        return issuer.to_der().is_ok_and(|d| idp.contains(&d));
    }
    dps.iter()
        .any(|dp| match (&dp.distribution_point, &dp.crl_issuer) {
            (Some(DistributionPointName::FullName(names)), _) => {
                general_names_der(names).iter().any(|n| idp.contains(n))
            }
            (None, Some(issuers)) => general_names_der(issuers).iter().any(|n| idp.contains(n)),
            _ => false,
        })
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
/// §6.3.3 (f)) another certificate of the same CA — same name, cRLSign, a path to the same
/// trust anchor, and itself not revoked (checked against the given CRLs, two levels deep):
/// a separate CRL-signing key, or the CA's new key after a rollover.
fn crl_signer(crl: &Crl, issuer: &CertEntry, inp: &RevocationInputs<'_>) -> Result<(), String> {
    let direct = signed_by(crl, issuer);
    if direct.is_ok() || inp.depth >= MAX_CRL_SIGNER_DEPTH {
        return direct;
    }
    let Some(anchor) = inp.anchor else {
        return direct;
    };
    let candidates = inp
        .pool
        .iter()
        .filter(|c| *c != issuer)
        .filter(|c| {
            names_match(
                c.cert.tbs_certificate().subject(),
                &crl.list.tbs_cert_list.issuer,
            )
        })
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

/// Why `crl` cannot decide for `cert` issued by `issuer` (`None`: it can).
fn unusable(
    crl: &Crl,
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
) -> Option<String> {
    let from = &crl.source;
    if !names_match(
        &crl.list.tbs_cert_list.issuer,
        issuer.cert.tbs_certificate().subject(),
    ) {
        return Some(String::new()); // another issuer's CRL: silently not ours
    }
    if crl.is_delta() {
        return Some(format!(
            "a delta CRL from {from} was found and not applied (delta CRLs are not supported)"
        ));
    }
    if let Err(e) = crl_signer(crl, issuer, inp) {
        return Some(e);
    }
    if crl.this_update() > inp.now + inp.skew {
        return Some(format!(
            "the CRL from {from} is not yet valid (thisUpdate {})",
            format_time(crl.this_update())
        ));
    }
    if let Some(next) = crl.next_update() {
        if next + inp.skew < inp.now {
            return Some(format!(
                "the CRL from {from} is out of date (nextUpdate {})",
                format_time(next)
            ));
        }
    }
    for ext in crl.list.tbs_cert_list.crl_extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        let known = [
            OID_IDP,
            OID_CRL_NUMBER,
            OID_AKI,
            OID_ISSUER_ALT_NAME,
            OID_FRESHEST,
            OID_AIA,
        ];
        if ext.critical && !known.contains(&oid.as_str()) {
            return Some(format!(
                "the CRL from {from} has a critical extension {oid} that is not processed"
            ));
        }
    }
    if let Some(ext) = crl.extension(OID_IDP) {
        let idp = match IssuingDistributionPoint::from_der(ext.extn_value.as_bytes()) {
            Ok(i) => i,
            Err(e) => {
                return Some(format!(
                    "the CRL from {from} has an unreadable issuingDistributionPoint ({e})"
                ))
            }
        };
        if idp.indirect_crl {
            return Some(format!(
                "the CRL from {from} is an indirect CRL (not supported)"
            ));
        }
        if idp.only_some_reasons.is_some() {
            return Some(format!(
                "the CRL from {from} covers only some revocation reasons (partitioned CRLs are not supported)"
            ));
        }
        if idp.only_contains_attribute_certs {
            return Some(format!(
                "the CRL from {from} covers attribute certificates only"
            ));
        }
        let ca = is_ca(cert);
        if idp.only_contains_user_certs && ca {
            return Some(format!(
                "the CRL from {from} covers end-entity certificates only"
            ));
        }
        if idp.only_contains_ca_certs && !ca {
            return Some(format!("the CRL from {from} covers CA certificates only"));
        }
        if let Some(name) = &idp.distribution_point {
            if !idp_name_matches(name, cert) {
                return Some(format!(
                    "the CRL from {from} is for another distribution point"
                ));
            }
        }
    }
    None
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

/// The CRLs at the certificate's distribution points: a decision, or notes on why not.
fn crl_from_network(
    cert: &CertEntry,
    issuer: &CertEntry,
    inp: &RevocationInputs<'_>,
    fetcher: &dyn RevocationFetcher,
    budget: &dyn Fn() -> bool,
    notes: &mut Vec<String>,
) -> Option<CertRevocation> {
    let mut fetched = Vec::new();
    for url in crl_urls(cert)
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
            Err(e) => notes.push(format!("CRL {url}: {e}")),
        }
    }
    if fetched.is_empty() {
        return None;
    }
    let r = crl_status(cert, issuer, &fetched, inp);
    if !r.is_unknown() {
        return Some(r);
    }
    notes.push(r.detail);
    None
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

/// The status of `cert` (issued by `issuer`) according to `crls`.
fn crl_status(
    cert: &CertEntry,
    issuer: &CertEntry,
    crls: &[Crl],
    inp: &RevocationInputs<'_>,
) -> CertRevocation {
    let serial = cert
        .cert
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .to_vec();
    let mut skipped: Vec<String> = Vec::new();
    let mut good: Option<&Crl> = None;
    for crl in crls.iter().take(MAX_CRLS) {
        if let Some(why) = unusable(crl, cert, issuer, inp) {
            if !why.is_empty() && !skipped.contains(&why) {
                skipped.push(why);
            }
            continue;
        }
        let mut entry_problem = None;
        let mut listed = None;
        for rc in crl.list.tbs_cert_list.revoked_certificates.iter().flatten() {
            for ext in rc.crl_entry_extensions.iter().flatten() {
                let oid = ext.extn_id.to_string();
                if ext.critical
                    && ![OID_REASON, OID_INVALIDITY_DATE, OID_HOLD].contains(&oid.as_str())
                {
                    entry_problem = Some(if oid == OID_CERT_ISSUER {
                        format!("the CRL from {} names other issuers in its entries (indirect CRL, not supported)", crl.source)
                    } else {
                        format!("the CRL from {} has an entry with a critical extension {oid} that is not processed", crl.source)
                    });
                }
            }
            if rc.serial_number.as_bytes() == serial.as_slice() {
                listed = Some(rc);
            }
        }
        if let Some(p) = entry_problem {
            if !skipped.contains(&p) {
                skipped.push(p);
            }
            continue;
        }
        if let Some(rc) = listed {
            let reason = rc
                .crl_entry_extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id.to_string() == OID_REASON)
                .and_then(|e| match e.extn_value.as_bytes() {
                    // CRLReason ::= ENUMERATED, one octet for every defined value
                    [0x0a, 0x01, v] => Some(reason_name(*v)),
                    _ => None,
                })
                .unwrap_or("unspecified");
            let mut r = CertRevocation::new(
                cert,
                "crl",
                "revoked",
                format!(
                    "listed in the CRL from {} (issued by '{}')",
                    crl.source,
                    crl.issuer()
                ),
            );
            r.reason = Some(reason.to_string());
            r.revocation_time = Some(format_time(rc.revocation_date.to_system_time()));
            return r;
        }
        if good.is_none() {
            good = Some(crl);
        }
    }
    if let Some(crl) = good {
        let mut detail = format!("not listed in the CRL from {}", crl.source);
        if let Some(next) = crl.next_update() {
            detail.push_str(&format!(" (next update {})", format_time(next)));
        }
        return CertRevocation::new(cert, "crl", "good", detail);
    }
    let detail = if !skipped.is_empty() {
        format!("no usable CRL: {}", skipped.join("; "))
    } else {
        let urls = crl_urls(cert);
        if urls.is_empty() {
            format!(
                "no CRL from '{}' was given, carried in the message or cached, and the certificate names no CRL distribution point",
                issuer.subject()
            )
        } else {
            format!(
                "no CRL from '{}' was given, carried in the message or cached (its distribution point: {})",
                issuer.subject(),
                urls.join(", ")
            )
        }
    };
    CertRevocation::new(cert, "none", "unknown", detail)
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
