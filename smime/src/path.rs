//! Certificates, path building to trust anchors and the signer-certificate policy.
//!
//! Names chain by the RFC 5280 §7.1 comparison ([`names_match`]), not byte for byte.
//! Revocation is checked by [`crate::revocation`].

use crate::alg::{classify_signature_alg, SigAlgKind, SignatureScheme};
use crate::ber::Tlv;
use crate::keys::PublicKey;
use crate::verify::Check;
use crate::SmimeError;
use der::asn1::Ia5String;
use der::{Decode, Encode};
use std::time::SystemTime;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

/// A certificate together with the exact DER it was read from.
#[derive(Clone, Debug)]
pub struct CertEntry {
    /// parsed
    pub cert: Certificate,
    /// as received
    pub der: Vec<u8>,
}

impl PartialEq for CertEntry {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl CertEntry {
    /// From DER.
    ///
    /// `der` 0.8 represents no time before 1970, so a certificate whose validity starts (or
    /// ends) earlier, which X.509 allows (UTCTime years 50–69), would not parse. Such a time
    /// is read as 1970-01-01T00:00:00Z instead: a later start and an end that has passed
    /// either way, so no verification after 1970 accepts more than the real dates would.
    /// The signature is still checked over the bytes as received ([`Self::der`]).
    pub fn from_der(der: Vec<u8>) -> Result<Self, SmimeError> {
        match Certificate::from_der(&der) {
            Ok(cert) => Ok(Self { cert, der }),
            Err(e) => match validity_from_1970(&der).map(|d| Certificate::from_der(&d)) {
                Some(Ok(cert)) => Ok(Self { cert, der }),
                _ => Err(e.into()),
            },
        }
    }

    /// Every `CERTIFICATE` block of a PEM bundle (other blocks are skipped).
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Vec<Self>, SmimeError> {
        crate::mime::pem_blocks(pem)?
            .into_iter()
            .filter(|(label, _)| label == "CERTIFICATE" || label == "X509 CERTIFICATE")
            .map(|(_, der)| Self::from_der(der))
            .collect()
    }

    /// PEM bundle or a single DER certificate.
    pub fn from_pem_or_der(data: &[u8]) -> Result<Vec<Self>, SmimeError> {
        if data.first() == Some(&0x30) {
            return Ok(vec![Self::from_der(data.to_vec())?]);
        }
        let v = Self::from_pem_bundle(data)?;
        if v.is_empty() {
            return Err(SmimeError::Malformed("no CERTIFICATE in PEM input".into()));
        }
        Ok(v)
    }

    /// Subject as RFC 4514 text.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate().subject().to_string()
    }

    /// Issuer as RFC 4514 text.
    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate().issuer().to_string()
    }

    /// Serial number in hex.
    pub fn serial_hex(&self) -> String {
        self.cert
            .tbs_certificate()
            .serial_number()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// Subject and issuer are the same name (RFC 5280 §7.1 comparison, see [`names_match`]).
    pub fn is_self_issued(&self) -> bool {
        let t = self.cert.tbs_certificate();
        names_match(t.subject(), t.issuer())
    }

    /// Whether `issuer`'s subject name is this certificate's issuer name (name chaining,
    /// RFC 5280 §6.1.3 (a)(4), compared as §7.1 says).
    pub fn issued_by_name(&self, issuer: &CertEntry) -> bool {
        names_match(
            self.cert.tbs_certificate().issuer(),
            issuer.cert.tbs_certificate().subject(),
        )
    }

    /// The public key.
    pub fn public_key(&self) -> Result<PublicKey, String> {
        PublicKey::from_spki(self.cert.tbs_certificate().subject_public_key_info())
    }

    /// E-mail addresses: see [`certificate_emails`].
    pub fn emails(&self) -> Vec<String> {
        certificate_emails(&self.cert)
    }

    /// Verify this certificate's signature with `issuer`'s key. Returns the hash used.
    pub fn verify_signed_by(&self, issuer: &CertEntry) -> Result<SigAlgKind, String> {
        verify_signed_der(
            &self.der,
            self.cert.signature_algorithm(),
            self.cert.signature(),
            issuer,
            "certificate",
        )
    }

    fn validity(&self) -> (SystemTime, SystemTime) {
        let v = self.cert.tbs_certificate().validity();
        (v.not_before.to_system_time(), v.not_after.to_system_time())
    }

    /// Why the certificate is not valid at `t` (`None` if it is).
    pub fn validity_problem(&self, t: SystemTime) -> Option<String> {
        let v = self.cert.tbs_certificate().validity();
        let (nb, na) = self.validity();
        if t < nb {
            Some(format!(
                "'{}' is not yet valid (notBefore {})",
                self.subject(),
                v.not_before
            ))
        } else if t > na {
            Some(format!(
                "'{}' has expired (notAfter {})",
                self.subject(),
                v.not_after
            ))
        } else {
            None
        }
    }
}

/// A copy of a certificate's DER with every validity time before 1970 replaced by
/// 1970-01-01T00:00:00Z (of the same length, so no length changes); `None` when there is none
/// or the structure is not a certificate's.
fn validity_from_1970(der: &[u8]) -> Option<Vec<u8>> {
    use crate::ber::Tlv;
    let cert = Tlv::parse_exact(der).ok()?;
    let tbs = *cert.children().ok()?.first()?;
    let fields = tbs.children().ok()?;
    // [0] version (optional), serialNumber, signature, issuer, validity
    let skip = usize::from(fields.first()?.tag == 0xa0);
    let validity = fields.get(skip + 3)?;
    let mut out = der.to_vec();
    let mut changed = false;
    for t in validity.children().ok()? {
        let year = match (t.tag, t.content.len()) {
            // UTCTime YYMMDDHHMMSSZ: 50-99 are 1950-1999
            (0x17, 13) => std::str::from_utf8(&t.content[..2])
                .ok()?
                .parse::<u32>()
                .ok()
                .map(|y| if y >= 50 { 1900 + y } else { 2000 + y })?,
            // GeneralizedTime YYYYMMDDHHMMSSZ
            (0x18, 15) => std::str::from_utf8(&t.content[..4])
                .ok()?
                .parse::<u32>()
                .ok()?,
            _ => return None,
        };
        if year >= 1970 {
            continue;
        }
        let at = t.content.as_ptr() as usize - der.as_ptr() as usize;
        let epoch: &[u8] = if t.tag == 0x17 {
            b"700101000000Z"
        } else {
            b"19700101000000Z"
        };
        out.get_mut(at..at + epoch.len())?.copy_from_slice(epoch);
        changed = true;
    }
    changed.then_some(out)
}

/// The value of a directory string attribute as text (PrintableString, UTF8String,
/// IA5String, TeletexString read as Latin-1, BMPString, UniversalString); `None` for any
/// other type or a bad encoding.
fn directory_string(v: &der::Any) -> Option<String> {
    let b = v.value();
    // PrintableString, UTF8String, IA5String; TeletexString; BMPString; UniversalString
    let tag = der::Tagged::tag(v);
    if tag.class() != der::Class::Universal || tag.is_constructed() {
        return None;
    }
    match tag.number().value() {
        19 | 12 | 22 => std::str::from_utf8(b).ok().map(str::to_string),
        20 => Some(b.iter().map(|&c| char::from(c)).collect()),
        30 => {
            if b.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        28 => {
            if b.len() % 4 != 0 {
                return None;
            }
            b.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// RFC 5280 §7.1 (after RFC 4518): case folded, leading and trailing white space removed,
/// inner runs of white space made one space. (Unicode normalization and the other
/// stringprep mappings are not done: names that differ only by those do not match.)
fn fold_directory_string(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .flat_map(char::to_lowercase)
        .collect()
}

fn attribute_values_match(a: &der::Any, b: &der::Any) -> bool {
    if a == b {
        return true;
    }
    match (directory_string(a), directory_string(b)) {
        (Some(x), Some(y)) => fold_directory_string(&x) == fold_directory_string(&y),
        _ => false,
    }
}

/// RFC 5280 §7.1 name comparison: the same number of RDNs in the same order, each RDN the
/// same set of attributes (any order), each attribute the same type and a matching value —
/// directory strings (of any of the string types, so a PrintableString matches the same
/// UTF8String) compared case-insensitively with white space folded, other values byte for
/// byte.
pub fn names_match(a: &x509_cert::name::Name, b: &x509_cert::name::Name) -> bool {
    if a == b {
        return true;
    }
    if a.len() != b.len() {
        return false;
    }
    a.iter_rdn()
        .zip(b.iter_rdn())
        .all(|(ra, rb)| rdns_match(ra, rb))
}

/// One RDN of each name: the same set of attributes (any order), each the same type with a
/// matching value (RFC 5280 §7.1, as [`names_match`]).
pub(crate) fn rdns_match(
    ra: &x509_cert::name::RelativeDistinguishedName,
    rb: &x509_cert::name::RelativeDistinguishedName,
) -> bool {
    if ra.len() != rb.len() {
        return false;
    }
    let mut used = vec![false; rb.len()];
    ra.iter().all(|x| {
        let found = rb.iter().enumerate().find(|(j, y)| {
            !used[*j] && x.oid == y.oid && attribute_values_match(&x.value, &y.value)
        });
        match found {
            Some((j, _)) => {
                used[j] = true;
                true
            }
            None => false,
        }
    })
}

/// Verifies a signed X.509 structure (a certificate, a CRL: a SEQUENCE whose first element
/// is the signed part) with `issuer`'s key. Returns the signature algorithm's kind.
pub(crate) fn verify_signed_der(
    der: &[u8],
    alg: &spki::AlgorithmIdentifierOwned,
    signature: &der::asn1::BitString,
    issuer: &CertEntry,
    what: &str,
) -> Result<SigAlgKind, String> {
    let top = Tlv::parse_exact(der).map_err(|e| e.to_string())?;
    let tbs = top
        .children()
        .map_err(|e| e.to_string())?
        .first()
        .map(|t| t.raw)
        .ok_or_else(|| format!("{what} without its signed part"))?;
    let kind = classify_signature_alg(alg)?;
    let sig = signature
        .as_bytes()
        .ok_or("signature bit string has unused bits")?;
    let (scheme, salt) = match kind {
        SigAlgKind::RsaPkcs1(Some(h)) => (SignatureScheme::RsaPkcs1v15(h), None),
        SigAlgKind::RsaPss(p) => {
            if p.mgf_hash != p.hash {
                return Err("RSA-PSS with an MGF1 hash different from the message hash".into());
            }
            (SignatureScheme::RsaPss(p.hash), Some(p.salt_len))
        }
        SigAlgKind::Ecdsa(Some(h)) => (SignatureScheme::Ecdsa(h), None),
        SigAlgKind::Md5Rsa => return Err(format!("{what} signed with MD5")),
        _ => return Err(format!("{what} signature algorithm names no hash")),
    };
    let digest = scheme.hash().digest(tbs);
    issuer
        .public_key()?
        .verify_digest(scheme, salt, &digest, sig)
        .map(|_| kind)
}

/// Extensions whose criticality we honour: basicConstraints, keyUsage, extKeyUsage,
/// subjectAltName, issuerAltName, subjectKeyIdentifier, authorityKeyIdentifier,
/// nameConstraints ([`crate::name_constraints`]), and certificatePolicies, policyMappings,
/// policyConstraints and inhibitAnyPolicy ([`crate::cert_policies`]).
const KNOWN_EXTENSIONS: &[&str] = &[
    "2.5.29.19",
    "2.5.29.15",
    "2.5.29.37",
    "2.5.29.17",
    "2.5.29.18",
    "2.5.29.14",
    "2.5.29.35",
    "2.5.29.30",
    "2.5.29.32",
    "2.5.29.33",
    "2.5.29.36",
    "2.5.29.54",
];

/// Path validation policy (deserializable, so a configuration file can carry it; missing
/// fields take the defaults).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Accept anyExtendedKeyUsage in place of emailProtection.
    pub allow_any_eku: bool,
    /// Maximum number of intermediate CA certificates between the signer and the anchor.
    pub max_intermediates: usize,
    /// Minimum RSA modulus size.
    pub min_rsa_bits: usize,
    /// Accept SHA-1 (message digests and certificate signatures).
    pub allow_sha1: bool,
    /// Certificate policy inputs (RFC 5280 §6.1.1): by default any policy.
    pub cert_policies: crate::cert_policies::PolicyInputs,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_any_eku: false,
            max_intermediates: 3,
            min_rsa_bits: 2048,
            allow_sha1: false,
            cert_policies: Default::default(),
        }
    }
}

/// Most certificates of a message's pool considered when building a path (real mail
/// carries a handful; the rest are ignored).
pub const MAX_POOL: usize = 64;
/// Most certificate signatures verified while building one path (each (certificate, issuer)
/// pair is verified once and the result remembered).
pub const MAX_SIGNATURE_CHECKS: usize = 256;
/// Most candidate steps of one path search (RFC 4158 §3.5: bound the work a hostile set of
/// certificates can cause, as rustls-webpki does).
pub const MAX_PATH_STEPS: usize = 4096;

/// Find a path `[ee, intermediates..., anchor]` through `pool` to one of `anchors`, with at
/// most `max_intermediates + 1` intermediates (so a path one too long is still found and
/// reported as too long). Every link's signature is verified, each (certificate, issuer)
/// pair once; the search gives up past [`MAX_SIGNATURE_CHECKS`] signatures or
/// [`MAX_PATH_STEPS`] steps, and looks at no more than [`MAX_POOL`] certificates.
pub fn build_path<'a>(
    ee: &'a CertEntry,
    pool: &'a [CertEntry],
    anchors: &'a [CertEntry],
    max_intermediates: usize,
) -> Result<Vec<&'a CertEntry>, String> {
    PathSearch::new(pool, anchors, max_intermediates).run(ee)
}

/// The state of one bounded path search.
struct PathSearch<'a> {
    pool: &'a [CertEntry],
    anchors: &'a [CertEntry],
    /// longest path: ee + intermediates + anchor
    max_len: usize,
    /// (certificate, issuer) by address -> the signature verifies (or why not)
    verified: std::collections::HashMap<(usize, usize), Result<(), String>>,
    steps: usize,
    gave_up: bool,
    best_err: Option<String>,
}

impl<'a> PathSearch<'a> {
    fn new(pool: &'a [CertEntry], anchors: &'a [CertEntry], max_intermediates: usize) -> Self {
        const HARD_LIMIT: usize = 12;
        Self {
            pool: &pool[..pool.len().min(MAX_POOL)],
            anchors,
            max_len: (max_intermediates + 3).min(HARD_LIMIT),
            verified: std::collections::HashMap::new(),
            steps: 0,
            gave_up: false,
            best_err: None,
        }
    }

    /// Whether `issuer` signed `cur`, verified once per pair within the budget.
    fn signed_by(&mut self, cur: &CertEntry, issuer: &CertEntry) -> Result<(), String> {
        let key = (
            cur as *const CertEntry as usize,
            issuer as *const CertEntry as usize,
        );
        if let Some(r) = self.verified.get(&key) {
            return r.clone();
        }
        if self.verified.len() >= MAX_SIGNATURE_CHECKS {
            self.gave_up = true;
            return Err("signature budget spent".into());
        }
        let r = cur.verify_signed_by(issuer).map(|_| ());
        self.verified.insert(key, r.clone());
        r
    }

    fn dfs(&mut self, path: &mut Vec<&'a CertEntry>) -> bool {
        let Some(cur) = path.last().copied() else {
            return false;
        };
        self.steps += 1;
        if self.steps > MAX_PATH_STEPS {
            self.gave_up = true;
        }
        if self.gave_up {
            return false;
        }
        if self.anchors.iter().any(|a| a == cur) {
            return true;
        }
        let anchors = self.anchors;
        for a in anchors {
            if cur.issued_by_name(a) {
                match self.signed_by(cur, a) {
                    Ok(()) => {
                        path.push(a);
                        return true;
                    }
                    Err(e) => {
                        self.best_err = Some(format!(
                            "signature of '{}' does not verify with trust anchor '{}': {e}",
                            cur.subject(),
                            a.subject()
                        ))
                    }
                }
            }
        }
        if path.len() + 1 >= self.max_len {
            return false;
        }
        let pool = self.pool;
        for c in pool {
            if !cur.issued_by_name(c) || path.contains(&c) {
                continue;
            }
            match self.signed_by(cur, c) {
                Ok(()) => {
                    path.push(c);
                    if self.dfs(path) {
                        return true;
                    }
                    path.pop();
                }
                Err(e) => {
                    self.best_err = Some(format!(
                        "signature of '{}' does not verify with '{}': {e}",
                        cur.subject(),
                        c.subject()
                    ))
                }
            }
            if self.gave_up {
                return false;
            }
        }
        if self.best_err.is_none() {
            self.best_err = Some(format!(
                "no chain to a trust anchor: issuer '{}' of '{}' is neither a trust anchor nor an included certificate",
                cur.issuer(),
                cur.subject()
            ));
        }
        false
    }

    fn run(mut self, ee: &'a CertEntry) -> Result<Vec<&'a CertEntry>, String> {
        if ee.is_self_issued() && ee.verify_signed_by(ee).is_ok() && !self.anchors.contains(ee) {
            return Err(format!(
                "'{}' is a self-signed certificate and not a trust anchor",
                ee.subject()
            ));
        }
        let mut path = vec![ee];
        if self.dfs(&mut path) {
            Ok(path)
        } else if self.gave_up {
            Err(format!(
                "no chain to a trust anchor found within the path-building budget ({} signatures, {} steps): the message carries too many candidate CA certificates",
                self.verified.len(),
                self.steps.min(MAX_PATH_STEPS)
            ))
        } else {
            Err(self
                .best_err
                .unwrap_or_else(|| "no chain to a trust anchor".into()))
        }
    }
}

fn check(name: &str, ok: bool, reason: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        ok,
        reason: reason.into(),
        certificates: Vec::new(),
    }
}

/// The e-mail addresses of a certificate — rfc822Name SANs, then subject emailAddress
/// attributes (IA5String or UTF8String) — as written, each once (compared without case).
/// The one extraction used by verification, recipient lookup and the agent's key listing;
/// compare with [`email_matches`] (the local part is case-sensitive).
pub fn certificate_emails(cert: &Certificate) -> Vec<String> {
    let mut out = Vec::new();
    let tbs = cert.tbs_certificate();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for gn in san.0.iter() {
            if let GeneralName::Rfc822Name(s) = gn {
                out.push(s.as_str().to_string());
            }
        }
    }
    for atv in tbs.subject().iter() {
        if atv.oid == crate::alg::oid::EMAIL_ADDRESS {
            if let Ok(d) = atv.value.to_der() {
                if let Ok(s) = Ia5String::from_der(&d) {
                    out.push(s.to_string());
                } else if let Ok(s) = der::asn1::Utf8StringRef::from_der(&d) {
                    out.push(s.as_str().to_string());
                }
            }
        }
    }
    // the same address often stands in both places: list it once
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(e.to_ascii_lowercase()));
    out
}

/// Does `email` match one of `cert_emails`: local part exact, domain case-insensitive.
pub fn email_matches(email: &str, cert_emails: &[String]) -> bool {
    let Some((l, d)) = email.trim().rsplit_once('@') else {
        return false;
    };
    cert_emails.iter().any(|c| {
        c.rsplit_once('@')
            .is_some_and(|(cl, cd)| cl == l && cd.eq_ignore_ascii_case(d))
    })
}

/// Inputs to [`check_signer_certificate`].
#[derive(Debug)]
pub struct PathInputs<'a> {
    /// certificates from the message and any extra intermediates
    pub pool: &'a [CertEntry],
    /// trust anchors
    pub anchors: &'a [CertEntry],
    /// the verification time
    pub now: SystemTime,
    /// signingTime from the signed attributes
    pub signing_time: Option<SystemTime>,
    /// the From address to match
    pub sender_email: Option<&'a str>,
    /// why the From field names no single sender
    pub sender_problem: Option<&'a str>,
    /// policy
    pub policy: &'a Policy,
    /// revocation sources and mode (`None`: no `revocation` check)
    pub revocation: Option<&'a crate::revocation::RevocationInputs<'a>>,
    /// what the certificate must be good for (its extendedKeyUsage)
    pub purpose: Purpose,
    /// the genTime of a verified RFC 3161 timestamp over the signature: the path is then
    /// judged valid at that time instead of now (`validity_at_timestamp` replaces
    /// `validity_now`), because the timestamp proves the signature existed then
    pub timestamp: Option<SystemTime>,
}

/// What a certificate is checked for: its extendedKeyUsage, and that of the CAs above it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// S/MIME: id-kp-emailProtection (or anyExtendedKeyUsage when the policy allows it)
    #[default]
    Email,
    /// an RFC 3161 time-stamping authority: id-kp-timeStamping, in a critical extension
    TimeStamping,
}

impl Purpose {
    fn oid(self) -> der::asn1::ObjectIdentifier {
        match self {
            Purpose::Email => crate::alg::oid::KP_EMAIL_PROTECTION,
            Purpose::TimeStamping => crate::alg::oid::KP_TIME_STAMPING,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Purpose::Email => "emailProtection",
            Purpose::TimeStamping => "timeStamping",
        }
    }
}

/// All certificate checks for the signer: path, validity (now and at signing time),
/// key usage, EKU, CA constraints, path length, algorithms, e-mail. Returns the checks and
/// the path (EE first) as subjects.
pub fn check_signer_certificate(ee: &CertEntry, inp: &PathInputs<'_>) -> (Vec<Check>, Vec<String>) {
    let mut checks = Vec::new();
    let policy = inp.policy;

    let self_signed = ee.is_self_issued() && ee.verify_signed_by(ee).is_ok();
    checks.push(check(
        "not_self_signed",
        !self_signed,
        if self_signed {
            format!("the signer certificate '{}' is self-signed", ee.subject())
        } else {
            "the signer certificate is issued by a CA".to_string()
        },
    ));

    let path = build_path(ee, inp.pool, inp.anchors, policy.max_intermediates);
    let chain: Vec<&CertEntry> = match &path {
        Ok(p) => {
            checks.push(check(
                "chain",
                true,
                format!(
                    "chains to trust anchor '{}'",
                    p.last().map(|c| c.subject()).unwrap_or_default()
                ),
            ));
            p.clone()
        }
        Err(e) => {
            checks.push(check("chain", false, e.clone()));
            vec![ee]
        }
    };
    let chain_names: Vec<String> = chain.iter().map(|c| c.subject()).collect();

    // path length
    let intermediates = chain.len().saturating_sub(2);
    if path.is_ok() {
        checks.push(check(
            "path_length",
            intermediates <= policy.max_intermediates,
            if intermediates <= policy.max_intermediates {
                format!(
                    "{intermediates} intermediate CA(s), limit {}",
                    policy.max_intermediates
                )
            } else {
                format!(
                    "path too long: {intermediates} intermediate CAs, policy allows {}",
                    policy.max_intermediates
                )
            },
        ));
    }

    // validity of every certificate in the path: now, or at the time a verified timestamp
    // proves the signature was made (a certificate that expired since does not matter then)
    let now_problems: Vec<String> = chain
        .iter()
        .filter_map(|c| c.validity_problem(inp.now))
        .collect();
    match inp.timestamp {
        Some(ts) => {
            let p: Vec<String> = chain
                .iter()
                .filter_map(|c| c.validity_problem(ts))
                .collect();
            let reason = if !p.is_empty() {
                format!(
                    "at the timestamp's time {}: {}",
                    crate::verify::format_time(ts),
                    p.join("; ")
                )
            } else if now_problems.is_empty() {
                format!(
                    "all certificates were valid at the timestamp's time {} and are valid now",
                    crate::verify::format_time(ts)
                )
            } else {
                format!(
                    "all certificates were valid at the timestamp's time {}, which proves the signature was made then; since: {}",
                    crate::verify::format_time(ts),
                    now_problems.join("; ")
                )
            };
            checks.push(check("validity_at_timestamp", p.is_empty(), reason));
        }
        None => checks.push(check(
            "validity_now",
            now_problems.is_empty(),
            if now_problems.is_empty() {
                "all certificates are valid now".to_string()
            } else {
                now_problems.join("; ")
            },
        )),
    }
    match inp.signing_time {
        Some(t) => {
            let p: Vec<String> = chain.iter().filter_map(|c| c.validity_problem(t)).collect();
            checks.push(check(
                "validity_at_signing_time",
                p.is_empty(),
                if p.is_empty() {
                    "all certificates were valid at the signing time".to_string()
                } else {
                    format!("at the signing time: {}", p.join("; "))
                },
            ));
        }
        None => checks.push(check(
            "validity_at_signing_time",
            true,
            "no signingTime attribute; checked at the verification time only",
        )),
    }

    // key usage of the signer
    let tbs = ee.cert.tbs_certificate();
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) => {
            let ok = ku.digital_signature() || ku.non_repudiation();
            checks.push(check(
                "key_usage",
                ok,
                if ok {
                    "keyUsage allows digitalSignature/nonRepudiation"
                } else {
                    "keyUsage allows neither digitalSignature nor nonRepudiation"
                },
            ));
        }
        Ok(None) => checks.push(check("key_usage", true, "no keyUsage extension")),
        Err(e) => checks.push(check("key_usage", false, format!("bad keyUsage: {e}"))),
    }

    // extended key usage
    let want = inp.purpose.oid();
    let want_name = inp.purpose.name();
    // anyExtendedKeyUsage stands in for emailProtection only (RFC 3161 §2.3: a TSA
    // certificate has timeStamping alone, in a critical extension)
    let any_ok = inp.purpose == Purpose::Email && policy.allow_any_eku;
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((critical, eku))) => {
            let has = eku.0.contains(&want);
            let any = eku.0.contains(&crate::alg::oid::ANY_EKU);
            let ok = (has || (any && any_ok))
                && (inp.purpose != Purpose::TimeStamping || critical);
            checks.push(check(
                "extended_key_usage",
                ok,
                if has && !ok {
                    format!("extendedKeyUsage includes {want_name} but is not critical (RFC 3161 §2.3)")
                } else if has {
                    format!("extendedKeyUsage includes {want_name}")
                } else if any && any_ok {
                    "extendedKeyUsage anyExtendedKeyUsage (allowed by policy)".to_string()
                } else if any {
                    format!("extendedKeyUsage is anyExtendedKeyUsage without {want_name} (not allowed by policy)")
                } else {
                    format!(
                        "extendedKeyUsage does not include {want_name} ({})",
                        eku.0.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
                    )
                },
            ));
        }
        Ok(None) if inp.purpose == Purpose::TimeStamping => checks.push(check(
            "extended_key_usage",
            false,
            "no extendedKeyUsage extension: a time-stamping authority's certificate must have timeStamping",
        )),
        Ok(None) => checks.push(check(
            "extended_key_usage",
            true,
            "no extendedKeyUsage extension (any use)",
        )),
        Err(e) => checks.push(check(
            "extended_key_usage",
            false,
            format!("bad extendedKeyUsage: {e}"),
        )),
    }

    // extendedKeyUsage up the chain: an intermediate CA that restricts it must allow
    // the purpose (what browsers and the CA/B forum rules do for TLS)
    if path.is_ok() && chain.len() > 2 {
        for c in &chain[1..chain.len() - 1] {
            if let Ok(Some((_, eku))) = c.cert.tbs_certificate().get_extension::<ExtendedKeyUsage>()
            {
                let has = eku.0.contains(&want);
                let any = eku.0.contains(&crate::alg::oid::ANY_EKU);
                if !(has || (any && (any_ok || inp.purpose == Purpose::TimeStamping))) {
                    checks.push(check(
                        "extended_key_usage",
                        false,
                        format!(
                            "CA '{}' restricts extendedKeyUsage to {} (no {want_name}): it may not certify {}",
                            c.subject(),
                            eku.0.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", "),
                            if inp.purpose == Purpose::Email { "S/MIME signers" } else { "time-stamping authorities" }
                        ),
                    ));
                }
            }
        }
    }

    // name constraints of the anchor and the CAs (RFC 5280 §4.2.1.10), reported when some
    // certificate of the path carries them
    if path.is_ok() {
        if let Some(o) = crate::name_constraints::check_path(&chain) {
            checks.push(check(
                "name_constraints",
                o.problems.is_empty(),
                if o.problems.is_empty() {
                    format!(
                        "every name is within the name constraints of {}",
                        o.constrained_by
                            .iter()
                            .map(|s| format!("'{s}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    o.problems.join("; ")
                },
            ));
        }
    }

    // certificate policies (RFC 5280 §6.1), reported when the path carries policy
    // extensions or the policy asks for particular policies
    if path.is_ok()
        && (crate::cert_policies::path_has_policies(&chain) || !policy.cert_policies.is_default())
    {
        let o = crate::cert_policies::check_path(&chain, &policy.cert_policies);
        let ok = o.problem.is_none();
        let reason = match o.problem {
            Some(p) => p,
            None if o.policies.is_empty() => {
                "the path is valid for no particular certificate policy (none is required)"
                    .to_string()
            }
            None if o.policies == [crate::cert_policies::ANY_POLICY.to_string()] => {
                "the path is valid for any certificate policy".to_string()
            }
            None => format!(
                "the path is valid for certificate policies {}",
                o.policies.join(", ")
            ),
        };
        checks.push(check("certificate_policies", ok, reason));
    }

    // CA certificates: basicConstraints, pathLen, keyCertSign
    let mut ca_problems = Vec::new();
    if path.is_ok() {
        for (i, c) in chain.iter().enumerate().skip(1) {
            let is_anchor = i == chain.len() - 1;
            let t = c.cert.tbs_certificate();
            match t.get_extension::<BasicConstraints>() {
                Ok(Some((_, bc))) => {
                    if !bc.ca {
                        ca_problems.push(format!(
                            "'{}' is not a CA (basicConstraints CA:FALSE)",
                            c.subject()
                        ));
                    }
                    if let Some(pl) = bc.path_len_constraint {
                        // intermediates below this one (not counting the end entity);
                        // self-issued ones do not count (RFC 5280 §6.1.4 (l))
                        let below = chain[1..i].iter().filter(|c| !c.is_self_issued()).count();
                        if below > pl as usize {
                            ca_problems.push(format!(
                                "'{}' has pathLen {pl} but {below} CA(s) below it (self-issued ones not counted)",
                                c.subject()
                            ));
                        }
                    }
                }
                Ok(None) if is_anchor => {}
                Ok(None) => ca_problems.push(format!("'{}' has no basicConstraints", c.subject())),
                Err(e) => ca_problems.push(format!("'{}': bad basicConstraints: {e}", c.subject())),
            }
            if let Ok(Some((_, ku))) = t.get_extension::<KeyUsage>() {
                if !ku.key_cert_sign() {
                    ca_problems.push(format!("'{}' keyUsage lacks keyCertSign", c.subject()));
                }
            }
        }
        checks.push(check(
            "ca_constraints",
            ca_problems.is_empty(),
            if ca_problems.is_empty() {
                "issuing CAs have CA:TRUE, keyCertSign and respect pathLen".to_string()
            } else {
                ca_problems.join("; ")
            },
        ));
    }

    // RFC 5280 4.2: a certificate with a critical extension we do not process is rejected
    // (the anchor is exempt: it is trusted as configured).
    let mut crit = Vec::new();
    for (i, c) in chain.iter().enumerate() {
        if path.is_ok() && i == chain.len() - 1 {
            continue;
        }
        for ext in c.cert.tbs_certificate().extensions().into_iter().flatten() {
            if ext.critical
                && !KNOWN_EXTENSIONS
                    .iter()
                    .any(|k| ext.extn_id.to_string() == *k)
            {
                crit.push(format!(
                    "'{}' has an unsupported critical extension {}",
                    c.subject(),
                    ext.extn_id
                ));
            }
        }
    }
    checks.push(check(
        "critical_extensions",
        crit.is_empty(),
        if crit.is_empty() {
            "no unsupported critical extension".to_string()
        } else {
            crit.join("; ")
        },
    ));

    // algorithms: signer key size, certificate signature hashes
    let mut alg_problems = Vec::new();
    for (i, c) in chain.iter().enumerate() {
        let is_anchor = path.is_ok() && i == chain.len() - 1;
        match c.public_key() {
            Ok(k) => {
                if let Some(bits) = k.rsa_bits() {
                    if bits < policy.min_rsa_bits {
                        alg_problems.push(format!(
                            "'{}' has a {bits}-bit RSA key (policy minimum {})",
                            c.subject(),
                            policy.min_rsa_bits
                        ));
                    }
                }
            }
            Err(e) => alg_problems.push(format!("'{}': {e}", c.subject())),
        }
        if is_anchor {
            continue; // the anchor's self-signature is not relied upon
        }
        match classify_signature_alg(c.cert.signature_algorithm()) {
            Ok(SigAlgKind::Md5Rsa) => {
                alg_problems.push(format!("'{}' is signed with MD5", c.subject()))
            }
            Ok(SigAlgKind::RsaPkcs1(Some(crate::alg::HashAlg::Sha1)))
            | Ok(SigAlgKind::Ecdsa(Some(crate::alg::HashAlg::Sha1)))
                if !policy.allow_sha1 =>
            {
                alg_problems.push(format!("'{}' is signed with SHA-1", c.subject()))
            }
            Ok(SigAlgKind::RsaPss(p))
                if p.hash == crate::alg::HashAlg::Sha1 && !policy.allow_sha1 =>
            {
                alg_problems.push(format!("'{}' is signed with SHA-1", c.subject()))
            }
            Ok(_) => {}
            Err(e) => alg_problems.push(format!("'{}': {e}", c.subject())),
        }
    }
    checks.push(check(
        "certificate_algorithms",
        alg_problems.is_empty(),
        if alg_problems.is_empty() {
            "certificate keys and signatures meet the algorithm policy".to_string()
        } else {
            alg_problems.join("; ")
        },
    ));

    // sender e-mail
    let emails = ee.emails();
    match inp.sender_email {
        None if inp.sender_problem.is_some() => checks.push(check(
            "sender_email",
            false,
            format!(
                "no single sender to compare: {} (RFC 5322: one From field, one mailbox)",
                inp.sender_problem.unwrap_or_default()
            ),
        )),
        Some(from) => {
            let ok = email_matches(from, &emails);
            checks.push(check(
                "sender_email",
                ok,
                if ok {
                    format!("certificate is issued to the sender {from}")
                } else if emails.is_empty() {
                    format!("certificate names no e-mail address; the sender is {from}")
                } else {
                    format!(
                        "sender {from} does not match the certificate's address(es) {}",
                        emails.join(", ")
                    )
                },
            ));
        }
        None => checks.push(check(
            "sender_email",
            true,
            "no sender address to compare (no From header)",
        )),
    }

    // revocation of every certificate below the anchor (only for a path that holds)
    if let (Ok(_), Some(rev)) = (&path, inp.revocation) {
        checks.push(crate::revocation::check_chain(&chain, rev));
    }
    (checks, chain_names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_from_partial_config() {
        let p: Policy = serde_json::from_str(r#"{"allow_any_eku": true}"#).expect("parses");
        assert!(p.allow_any_eku);
        assert_eq!(p.max_intermediates, 3);
        assert_eq!(p.min_rsa_bits, 2048);
        assert!(serde_json::from_str::<Policy>(r#"{"allow_md5": true}"#).is_err());
    }

    #[test]
    fn email_comparison() {
        let c = vec!["Alice@Example.COM".to_string()];
        assert!(email_matches("Alice@example.com", &c));
        assert!(!email_matches("alice@example.com", &c));
        assert!(!email_matches("Alice@example.org", &c));
        assert!(!email_matches("no-at-sign", &c));
    }
}

#[cfg(test)]
mod path_budget_tests {
    use super::*;
    use std::str::FromStr;
    use std::time::Duration;
    use x509_cert::builder::profile::BuilderProfile;
    use x509_cert::builder::{Builder, CertificateBuilder};
    use x509_cert::ext::pkix::BasicConstraints;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::{Time, Validity};

    struct Profile {
        subject: Name,
        issuer: Name,
        ca: bool,
        /// extendedKeyUsage of a CA, if any
        eku: Option<Vec<der::asn1::ObjectIdentifier>>,
        /// a nameConstraints extension
        name_constraints: bool,
        /// a critical certificatePolicies extension
        critical_policies: bool,
        /// basicConstraints pathLenConstraint of a CA
        path_len: Option<u8>,
    }

    impl BuilderProfile for Profile {
        fn get_issuer(&self, _subject: &Name) -> Name {
            self.issuer.clone()
        }
        fn get_subject(&self) -> Name {
            self.subject.clone()
        }
        fn build_extensions(
            &self,
            _spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
            _issuer_spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
            tbs: &x509_cert::TbsCertificate,
        ) -> x509_cert::builder::Result<Vec<x509_cert::ext::Extension>> {
            if !self.ca {
                return Ok(Vec::new());
            }
            use x509_cert::ext::ToExtension;
            let mut out = vec![BasicConstraints {
                ca: true,
                path_len_constraint: self.path_len,
            }
            .to_extension(tbs.subject(), &[])?];
            if let Some(eku) = &self.eku {
                out.push(
                    x509_cert::ext::pkix::ExtendedKeyUsage(eku.clone())
                        .to_extension(tbs.subject(), &[])?,
                );
            }
            if self.critical_policies {
                use der::Encode;
                use x509_cert::ext::pkix::certpolicy::PolicyInformation;
                let policies = x509_cert::ext::pkix::CertificatePolicies(vec![PolicyInformation {
                    policy_identifier: der::asn1::ObjectIdentifier::new_unwrap("1.2.3.4.5"),
                    policy_qualifiers: None,
                }]);
                out.push(x509_cert::ext::Extension {
                    extn_id: der::asn1::ObjectIdentifier::new_unwrap("2.5.29.32"),
                    critical: true,
                    extn_value: der::asn1::OctetString::new(policies.to_der()?)?,
                });
            }
            if self.name_constraints {
                use x509_cert::ext::pkix::constraints::name::GeneralSubtree;
                out.push(
                    x509_cert::ext::pkix::NameConstraints {
                        permitted_subtrees: Some(vec![GeneralSubtree {
                            base: x509_cert::ext::pkix::name::GeneralName::Rfc822Name(
                                der::asn1::Ia5String::new("example.com").expect("ia5"),
                            ),
                            minimum: 0,
                            maximum: None,
                        }]),
                        excluded_subtrees: None,
                    }
                    .to_extension(tbs.subject(), &[])?,
                );
            }
            Ok(out)
        }
    }

    fn key(seed: u8) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("key")
    }

    /// A certificate for `subject_key`'s public key, named `subject`, signed by `issuer_key`
    /// as `issuer`.
    fn cert(
        subject: &str,
        issuer: &str,
        serial: u32,
        subject_key: &p256::ecdsa::SigningKey,
        issuer_key: &p256::ecdsa::SigningKey,
        ca: bool,
    ) -> CertEntry {
        cert_with(
            subject,
            issuer,
            serial,
            subject_key,
            issuer_key,
            ca,
            None,
            false,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn cert_with(
        subject: &str,
        issuer: &str,
        serial: u32,
        subject_key: &p256::ecdsa::SigningKey,
        issuer_key: &p256::ecdsa::SigningKey,
        ca: bool,
        eku: Option<Vec<der::asn1::ObjectIdentifier>>,
        name_constraints: bool,
        critical_policies: bool,
    ) -> CertEntry {
        cert_full(
            subject,
            issuer,
            serial,
            subject_key,
            issuer_key,
            ca,
            eku,
            name_constraints,
            critical_policies,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn cert_full(
        subject: &str,
        issuer: &str,
        serial: u32,
        subject_key: &p256::ecdsa::SigningKey,
        issuer_key: &p256::ecdsa::SigningKey,
        ca: bool,
        eku: Option<Vec<der::asn1::ObjectIdentifier>>,
        name_constraints: bool,
        critical_policies: bool,
        path_len: Option<u8>,
    ) -> CertEntry {
        let now = SystemTime::now();
        let validity = Validity::new(
            Time::try_from(now - Duration::from_secs(3600)).expect("time"),
            Time::try_from(now + Duration::from_secs(86_400)).expect("time"),
        );
        let spki = SubjectPublicKeyInfoOwned::from_key(subject_key.verifying_key()).expect("spki");
        let b = CertificateBuilder::new(
            Profile {
                subject: Name::from_str(subject).expect("name"),
                issuer: Name::from_str(issuer).expect("name"),
                ca,
                eku,
                name_constraints,
                critical_policies,
                path_len,
            },
            SerialNumber::from(serial),
            validity,
            spki,
        )
        .expect("builder");
        let c = b
            .build::<_, p256::ecdsa::DerSignature>(issuer_key)
            .expect("certificate");
        CertEntry::from_der(der::Encode::to_der(&c).expect("DER")).expect("entry")
    }

    /// N self-issued CA certificates sharing one key and one name, and an end-entity
    /// certificate issued by that name: every ordering of the pool is a candidate path.
    fn hostile(n: u32) -> (CertEntry, Vec<CertEntry>, Vec<CertEntry>) {
        let k = key(7);
        let pool: Vec<CertEntry> = (0..n)
            .map(|i| cert("CN=X", "CN=X", 100 + i, &k, &k, true))
            .collect();
        let ee = cert("CN=victim", "CN=X", 1, &key(8), &k, false);
        let root = key(9);
        let anchors = vec![cert("CN=Root", "CN=Root", 1, &root, &root, true)];
        (ee, pool, anchors)
    }

    #[test]
    fn a_pool_of_self_issued_twins_costs_bounded_work() {
        for n in [8, 12, 100] {
            let (ee, pool, anchors) = hostile(n);
            let started = std::time::Instant::now();
            let mut s = PathSearch::new(&pool, &anchors, 3);
            let mut path = vec![&ee];
            assert!(!s.dfs(&mut path), "n = {n}: no path to the unrelated root");
            // each (certificate, issuer) pair verified at most once, within the budgets
            assert!(s.verified.len() <= MAX_SIGNATURE_CHECKS, "n = {n}");
            assert!(s.steps <= MAX_PATH_STEPS + 1, "n = {n}: {} steps", s.steps);
            let pairs = (n.min(MAX_POOL as u32) as usize + 1) * n.min(MAX_POOL as u32) as usize;
            assert!(s.verified.len() <= pairs, "n = {n}");
            // a figure for docs/performance.md (--nocapture), not an assertion
            eprintln!(
                "hostile pool n = {n}: {:?}, {} signatures, {} steps",
                started.elapsed(),
                s.verified.len(),
                s.steps
            );
            let err = build_path(&ee, &pool, &anchors, 3).expect_err("no path");
            assert!(err.contains("no chain"), "n = {n}: {err}");
        }
    }

    #[test]
    fn a_real_chain_is_still_found_among_distractors() {
        let (root, int) = (key(1), key(2));
        let anchor = cert("CN=Root", "CN=Root", 1, &root, &root, true);
        let mut pool: Vec<CertEntry> = (0..20)
            .map(|i| cert("CN=Int", "CN=Int", 50 + i, &key(3), &key(3), true))
            .collect();
        pool.push(cert("CN=Int", "CN=Root", 2, &int, &root, true));
        let ee = cert("CN=alice", "CN=Int", 3, &key(4), &int, false);
        let anchors = [anchor];
        let path = build_path(&ee, &pool, &anchors, 3).expect("path");
        let names: Vec<String> = path.iter().map(|c| c.subject()).collect();
        assert_eq!(names, ["CN=alice", "CN=Int", "CN=Root"]);
    }

    fn failed_checks(ee: &CertEntry, pool: &[CertEntry], anchors: &[CertEntry]) -> Vec<String> {
        let policy = Policy::default();
        let (checks, _) = check_signer_certificate(
            ee,
            &PathInputs {
                pool,
                anchors,
                now: SystemTime::now(),
                signing_time: None,
                sender_email: None,
                sender_problem: None,
                policy: &policy,
                revocation: None,
                purpose: Purpose::Email,
                timestamp: None,
            },
        );
        checks
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn an_intermediate_that_restricts_eku_is_refused_and_name_constraints_are_processed() {
        let (root, int, ee_key) = (key(21), key(22), key(23));
        let anchors = [cert("CN=Root", "CN=Root", 1, &root, &root, true)];
        let ee = cert("CN=alice", "CN=Int", 3, &ee_key, &int, false);
        let server_auth = der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
        let email = crate::alg::oid::KP_EMAIL_PROTECTION;
        for (eku, nc, cp, want) in [
            (None, false, false, vec![]),
            (Some(vec![email]), false, false, vec![]),
            (
                Some(vec![server_auth]),
                false,
                false,
                vec!["extended_key_usage"],
            ),
            // processed: the end entity has no e-mail address for the rfc822Name
            // constraint to refuse (smime/tests/name_constraints.rs has the real cases)
            (None, true, false, vec![]),
            // critical certificatePolicies are processed: the end entity asserts none, and
            // no explicit policy is required
            (None, false, true, vec![]),
        ] {
            let pool = [cert_with(
                "CN=Int",
                "CN=Root",
                2,
                &int,
                &root,
                true,
                eku.clone(),
                nc,
                cp,
            )];
            let got = failed_checks(&ee, &pool, &anchors);
            assert_eq!(
                got, want,
                "eku {eku:?}, name constraints {nc}, policies {cp}"
            );
        }
    }

    fn ca_with_path_len(
        subject: &str,
        issuer: &str,
        serial: u32,
        subject_key: &p256::ecdsa::SigningKey,
        issuer_key: &p256::ecdsa::SigningKey,
        path_len: u8,
    ) -> CertEntry {
        cert_full(
            subject,
            issuer,
            serial,
            subject_key,
            issuer_key,
            true,
            None,
            false,
            false,
            Some(path_len),
        )
    }

    /// RFC 5280 §6.1.4 (l), PKITS 4.6.15–4.6.17: a self-issued CA certificate (key
    /// rollover) does not count against an upper CA's pathLenConstraint; a CA with another
    /// name does.
    #[test]
    fn a_validity_before_1970_reads_as_1970() {
        let k = key(40);
        let c = cert("CN=Old", "CN=Old", 9, &k, &k, false);
        let t = der::Encode::to_der(&c.cert.tbs_certificate().validity().not_before).expect("DER");
        assert_eq!(t[0], 0x17, "a UTCTime");
        let at = c
            .der
            .windows(t.len())
            .position(|w| w == t.as_slice())
            .expect("notBefore in the DER");
        let mut old = c.der.clone();
        old[at + 2..at + 15].copy_from_slice(b"500101120100Z");
        assert!(
            Certificate::from_der(&old).is_err(),
            "der 0.8 cannot hold 1950"
        );
        let e = CertEntry::from_der(old.clone()).expect("read with 1970 for 1950");
        assert_eq!(e.der, old, "the bytes as received are kept");
        assert_eq!(e.validity().0, std::time::UNIX_EPOCH);
        assert_eq!(e.validity().1, c.validity().1);
    }

    #[test]
    fn self_issued_certificates_do_not_count_against_path_len() {
        let (root, old, new, sub, ee_key) = (key(31), key(32), key(33), key(34), key(35));
        let anchors = [cert("CN=Root", "CN=Root", 1, &root, &root, true)];
        let int_old = ca_with_path_len("CN=Int", "CN=Root", 2, &old, &root, 0);
        // the new key certified by the old one: self-issued
        let int_new = ca_with_path_len("CN=Int", "CN=Int", 3, &new, &old, 0);
        let ee = cert("CN=alice", "CN=Int", 4, &ee_key, &new, false);
        let pool = [int_old.clone(), int_new];
        assert!(pool[1].is_self_issued());
        assert_eq!(
            failed_checks(&ee, &pool, &anchors),
            Vec::<String>::new(),
            "a self-issued CA below pathLen 0"
        );
        // a subordinate CA with its own name below pathLen 0 is one CA too many
        let sub_ca = cert("CN=Sub", "CN=Int", 5, &sub, &old, true);
        let ee2 = cert("CN=bob", "CN=Sub", 6, &key(36), &sub, false);
        let pool = [int_old, sub_ca];
        assert_eq!(failed_checks(&ee2, &pool, &anchors), ["ca_constraints"]);
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const PRINTABLE: u8 = 0x13;
    const UTF8: u8 = 0x0c;
    const BMP: u8 = 0x1e;
    const OCTETS: u8 = 0x04;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        let mut v = vec![tag, content.len() as u8];
        v.extend_from_slice(content);
        v
    }

    /// One attribute: (type OID bytes, value tag, value bytes).
    type Attr<'a> = (&'a [u8], u8, &'a [u8]);

    /// A Name from RDNs of attributes.
    fn name(rdns: &[&[Attr<'_>]]) -> x509_cert::name::Name {
        let mut seq = Vec::new();
        for rdn in rdns {
            let mut set = Vec::new();
            for (oid, tag, value) in rdn.iter() {
                let mut atv = tlv(0x06, oid);
                atv.extend(tlv(*tag, value));
                set.extend(tlv(0x30, &atv));
            }
            seq.extend(tlv(0x31, &set));
        }
        x509_cert::name::Name::from_der(&tlv(0x30, &seq)).expect("name")
    }

    fn cn(tag: u8, v: &[u8]) -> x509_cert::name::Name {
        name(&[&[(O, PRINTABLE, b"Test Certificates")], &[(CN, tag, v)]])
    }

    /// PKITS 4.3.3–4.3.5, 4.3.10, 4.3.11: white space and case are insignificant, and a
    /// PrintableString matches the same UTF8String (or BMPString).
    #[test]
    fn names_compare_as_rfc5280_section_7_1_says() {
        let good = cn(PRINTABLE, b"Good CA");
        for (tag, v) in [
            (PRINTABLE, &b"Good CA"[..]),
            (PRINTABLE, b"Good     CA"),
            (PRINTABLE, b"  Good CA "),
            (PRINTABLE, b"GOOD CA"),
            (UTF8, b"good ca"),
            (UTF8, b"Good\t CA"),
            (
                BMP,
                &[
                    0, b'G', 0, b'o', 0, b'o', 0, b'd', 0, b' ', 0, b'C', 0, b'A',
                ],
            ),
        ] {
            assert!(
                names_match(&good, &cn(tag, v)),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        // a non-ASCII UTF8String folds its case too
        assert!(names_match(
            &cn(UTF8, "Ärger CA".as_bytes()),
            &cn(UTF8, "ärger  ca".as_bytes())
        ));
        for (tag, v) in [
            (PRINTABLE, &b"Good CB"[..]),
            (PRINTABLE, b"GoodCA"),
            (PRINTABLE, b"Good CA 2"),
            // not a directory string: compared byte for byte
            (OCTETS, b"Good CA"),
        ] {
            assert!(
                !names_match(&good, &cn(tag, v)),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        assert!(!names_match(
            &cn(OCTETS, b"Good CA"),
            &cn(OCTETS, b"good ca")
        ));
    }

    /// PKITS 4.3.2: the RDNs' order matters; within a multi-valued RDN it does not.
    #[test]
    fn rdn_order_matters_attribute_order_within_an_rdn_does_not() {
        let a = name(&[&[(O, PRINTABLE, b"X")], &[(CN, PRINTABLE, b"Y")]]);
        let b = name(&[&[(CN, PRINTABLE, b"Y")], &[(O, PRINTABLE, b"X")]]);
        assert!(!names_match(&a, &b));
        let m1 = name(&[&[(O, PRINTABLE, b"X"), (CN, PRINTABLE, b"Y")]]);
        let m2 = name(&[&[(CN, UTF8, b"y"), (O, PRINTABLE, b"x")]]);
        assert!(names_match(&m1, &m2));
        // one attribute more or less is another name
        let short = name(&[&[(O, PRINTABLE, b"X")]]);
        assert!(!names_match(&a, &short));
        let m3 = name(&[&[(O, PRINTABLE, b"X"), (O, PRINTABLE, b"X")]]);
        assert!(!names_match(&m1, &m3));
    }
}
