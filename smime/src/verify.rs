//! CMS SignedData verification.
//!
//! 1. [`ParsedSignedData::parse`] takes DER or BER (indefinite lengths, as from
//!    `openssl cms -sign -stream`) and keeps the exact bytes of every SignerInfo's signed
//!    attributes.
//! 2. The caller hashes the content (detached: the external content; encapsulated:
//!    [`ParsedSignedData::encapsulated_content`]) with a [`MultiHasher`](crate::alg::MultiHasher)
//!    over [`ParsedSignedData::digest_algorithms`].
//! 3. [`verify`] checks every SignerInfo and its certificate path, and returns a report with
//!    one entry per check.

use crate::alg::{
    classify_signature_alg, oid, ContentDigests, HashAlg, SigAlgKind, SignatureScheme,
};
use crate::ber::{ber_to_der, Tlv};
use crate::path::{check_signer_certificate, CertEntry, PathInputs, Policy};
use crate::SmimeError;
use cms::signed_data::{SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode};
use serde::Serialize;
use std::time::SystemTime;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

/// One signer as parsed.
#[derive(Clone, Debug)]
pub struct ParsedSigner {
    /// decoded SignerInfo
    pub info: SignerInfo,
    /// the signed attributes exactly as received, re-tagged as SET (0x31): what was signed
    pub signed_attrs_der: Option<Vec<u8>>,
}

/// A parsed SignedData.
#[derive(Clone, Debug)]
pub struct ParsedSignedData {
    /// eContentType
    pub content_type: ObjectIdentifier,
    econtent: Option<Vec<u8>>,
    /// certificates carried in the message
    pub certificates: Vec<CertEntry>,
    /// CRLs carried in the message (unreadable ones are skipped)
    pub crls: Vec<crate::revocation::Crl>,
    /// signers
    pub signers: Vec<ParsedSigner>,
}

fn malformed(s: &str) -> SmimeError {
    SmimeError::Malformed(s.to_string())
}

/// Most SignerInfos one message may carry: each costs a signature check and a bounded path
/// search ([`crate::path::MAX_SIGNATURE_CHECKS`]), so this bounds the work of the message.
pub const MAX_SIGNERS: usize = 8;

impl ParsedSignedData {
    /// Parse a ContentInfo holding SignedData, DER or BER.
    pub fn parse(input: &[u8]) -> Result<Self, SmimeError> {
        let der = ber_to_der(input)?;
        let ci = Tlv::parse_exact(&der)?;
        if ci.tag != 0x30 {
            return Err(malformed("ContentInfo is not a SEQUENCE"));
        }
        let ci_children = ci.children()?;
        let [ct, content] = ci_children.as_slice() else {
            return Err(malformed("ContentInfo must have contentType and content"));
        };
        let ct = ObjectIdentifier::from_der(ct.raw)?;
        if ct.to_string() == "1.2.840.113549.1.7.3"
            || ct.to_string() == "1.2.840.113549.1.9.16.1.23"
        {
            return Err(SmimeError::Unsupported(
                "this is an encrypted message (EnvelopedData): decrypt it first, then verify the result".into(),
            ));
        }
        if ct != oid::ID_SIGNED_DATA {
            return Err(SmimeError::Unsupported(format!(
                "CMS content type {ct} is not signedData"
            )));
        }
        if content.tag != 0xa0 {
            return Err(malformed("ContentInfo content is not [0]"));
        }
        let sd = Tlv::parse_exact(content.content)?;
        let parts = sd.children()?;
        if parts.len() < 4 || parts[0].tag != 0x02 || parts[1].tag != 0x31 || parts[2].tag != 0x30 {
            return Err(malformed("SignedData structure"));
        }
        // encapContentInfo
        let eci = parts[2].children()?;
        let content_type = ObjectIdentifier::from_der(
            eci.first()
                .ok_or_else(|| malformed("empty encapContentInfo"))?
                .raw,
        )?;
        let econtent = match eci.get(1) {
            Some(t) if t.tag == 0xa0 => {
                let os = Tlv::parse_exact(t.content)?;
                if os.tag != 0x04 {
                    return Err(malformed("eContent is not an OCTET STRING"));
                }
                Some(os.content.to_vec())
            }
            Some(_) => return Err(malformed("eContent tag")),
            None => None,
        };
        let mut certificates = Vec::new();
        let mut crls = Vec::new();
        let mut signer_set = None;
        for p in &parts[3..] {
            match p.tag {
                0xa0 => {
                    for c in p.children()? {
                        if c.tag == 0x30 {
                            // other CertificateChoices (attribute certs...) are skipped
                            if let Ok(e) = CertEntry::from_der(c.raw.to_vec()) {
                                certificates.push(e);
                            }
                        }
                    }
                }
                0xa1 => {
                    // RevocationInfoChoices: CertificateLists; other formats are skipped
                    for c in p.children()? {
                        if c.tag == 0x30 && crls.len() < crate::revocation::MAX_CRLS {
                            if let Ok(crl) =
                                crate::revocation::Crl::from_der(c.raw.to_vec(), "the message")
                            {
                                crls.push(crl);
                            }
                        }
                    }
                }
                0x31 => signer_set = Some(*p),
                _ => return Err(malformed("unexpected element in SignedData")),
            }
        }
        let signer_set = signer_set.ok_or_else(|| malformed("SignedData without signerInfos"))?;
        let signer_tlvs = signer_set.children()?;
        if signer_tlvs.len() > MAX_SIGNERS {
            // each signer costs a signature check and a path search: a message cannot buy
            // more than a few (real mail has one, rarely two or three)
            return Err(SmimeError::Unsupported(format!(
                "the message has {} signatures (SignerInfos); at most {MAX_SIGNERS} are verified: refused",
                signer_tlvs.len()
            )));
        }
        let mut signers = Vec::new();
        for si in signer_tlvs {
            let info = SignerInfo::from_der(si.raw)?;
            let signed_attrs_der = si.children()?.iter().find(|c| c.tag == 0xa0).map(|c| {
                let mut v = c.raw.to_vec();
                v[0] = 0x31;
                v
            });
            signers.push(ParsedSigner {
                info,
                signed_attrs_der,
            });
        }
        Ok(Self {
            content_type,
            econtent,
            certificates,
            crls,
            signers,
        })
    }

    /// The encapsulated content, when the SignedData is not detached.
    pub fn encapsulated_content(&self) -> Option<&[u8]> {
        self.econtent.as_deref()
    }

    /// Digest algorithms the signers use (supported ones only): hash the content with these.
    pub fn digest_algorithms(&self) -> Vec<HashAlg> {
        let mut v: Vec<HashAlg> = self
            .signers
            .iter()
            .filter_map(|s| HashAlg::from_oid(&s.info.digest_alg.oid))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    /// stable name, e.g. `message_digest`, `chain`, `extended_key_usage`
    pub name: String,
    /// passed
    pub ok: bool,
    /// human reason
    pub reason: String,
    /// the `revocation` check: the status of every certificate below the anchor
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<crate::revocation::CertRevocation>,
}

/// Report for one SignerInfo.
#[derive(Clone, Debug, Serialize)]
pub struct SignerReport {
    /// all checks passed
    pub valid: bool,
    /// signer certificate subject, when found
    pub subject: Option<String>,
    /// signer certificate issuer
    pub issuer: Option<String>,
    /// signer certificate serial (hex)
    pub serial: Option<String>,
    /// e-mail addresses in the signer certificate
    pub emails: Vec<String>,
    /// signingTime attribute, RFC 3339-ish
    pub signing_time: Option<String>,
    /// digest algorithm name
    pub digest_algorithm: String,
    /// signature algorithm name
    pub signature_algorithm: String,
    /// path, signer first, anchor last
    pub chain: Vec<String>,
    /// every check in order
    pub checks: Vec<Check>,
    /// the signer's certificate (DER), when found: for keeping it (`tokenmail verify`
    /// harvests valid signers' certificates into the certificate store)
    #[serde(skip)]
    pub certificate: Option<Vec<u8>>,
    /// an RFC 3161 signature timestamp (unsigned attribute), when there is one
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<crate::tsp::TimestampReport>,
    /// an ESS security label (signed attribute), when there is one
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_label: Option<crate::ess::SecurityLabel>,
    /// an ESS receipt request (signed attribute), when there is one
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_request: Option<crate::ess::ReceiptRequestInfo>,
}

impl SignerReport {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// Report for a whole SignedData.
#[derive(Clone, Debug, Serialize)]
pub struct VerificationReport {
    /// valid when there is at least one signer and every signer passed every check
    pub valid: bool,
    /// one per SignerInfo
    pub signers: Vec<SignerReport>,
}

/// What [`verify`] needs besides the message.
#[derive(Clone, Debug)]
pub struct VerifyOptions<'a> {
    /// trust anchors
    pub trust_anchors: &'a [CertEntry],
    /// extra certificates (intermediates) for path building
    pub extra_certs: &'a [CertEntry],
    /// verification time (the caller's clock)
    pub now: SystemTime,
    /// the message's From address, if any
    pub sender_email: Option<&'a str>,
    /// why the message's From field names no single sender (then `sender_email` is `None`
    /// and the `sender_email` check fails with this reason)
    pub sender_problem: Option<&'a str>,
    /// policy
    pub policy: Policy,
    /// what an unknown revocation status does (a revoked certificate always fails)
    pub revocation: crate::revocation::RevocationMode,
    /// CRLs from the caller (files, cache, fetched); the message's own are added
    pub crls: &'a [crate::revocation::Crl],
    /// allowed clock skew for CRL and OCSP times
    pub clock_skew: std::time::Duration,
    /// network access for OCSP and CRL distribution points (`None`: offline)
    pub fetcher: Option<&'a dyn crate::revocation::RevocationFetcher>,
    /// which network sources, in which order
    pub revocation_sources: crate::revocation::RevocationSources,
    /// what the signer certificates must be good for (e-mail, or a timestamp token's TSA)
    pub purpose: crate::path::Purpose,
}

/// Default allowed clock skew for CRL (and later OCSP) times.
pub const DEFAULT_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

impl<'a> VerifyOptions<'a> {
    /// Trust `anchors` at time `now` (the caller's clock), with the default policy, no extra
    /// certificates and no sender to match.
    pub fn at(trust_anchors: &'a [CertEntry], now: SystemTime) -> Self {
        Self {
            trust_anchors,
            extra_certs: &[],
            now,
            sender_email: None,
            sender_problem: None,
            policy: Policy::default(),
            revocation: Default::default(),
            crls: &[],
            clock_skew: DEFAULT_CLOCK_SKEW,
            fetcher: None,
            revocation_sources: Default::default(),
            purpose: Default::default(),
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

fn single_value(info: &SignerInfo, o: ObjectIdentifier) -> Result<Option<&Any>, String> {
    let Some(attrs) = &info.signed_attrs else {
        return Ok(None);
    };
    let found: Vec<_> = attrs.iter().filter(|a| a.oid == o).collect();
    match found.as_slice() {
        [] => Ok(None),
        [a] => {
            let vals: Vec<&Any> = a.values.iter().collect();
            match vals.as_slice() {
                [v] => Ok(Some(*v)),
                _ => Err(format!("attribute {o} must have exactly one value")),
            }
        }
        _ => Err(format!("attribute {o} appears more than once")),
    }
}

fn find_signer_cert<'a>(sid: &SignerIdentifier, pool: &'a [CertEntry]) -> Option<&'a CertEntry> {
    pool.iter().find(|c| {
        let tbs = c.cert.tbs_certificate();
        match sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                tbs.serial_number() == &ias.serial_number
                    && tbs.issuer().to_der().ok() == ias.issuer.to_der().ok()
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                matches!(tbs.get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, s))) if s == *ski)
            }
        }
    })
}

/// A time for reports and messages: RFC 3339 (`2026-12-06T12:00:00Z`), `?` if out of range.
pub(crate) fn format_time(t: SystemTime) -> String {
    der::DateTime::from_system_time(t)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Check an ESS signingCertificateV2 / signingCertificate attribute against the signer cert.
fn check_ess(info: &SignerInfo, cert: &CertEntry) -> Option<Check> {
    let (v, default_hash) = match single_value(info, oid::ATTR_SIGNING_CERTIFICATE_V2) {
        Ok(Some(v)) => (v, HashAlg::Sha256),
        Ok(None) => match single_value(info, oid::ATTR_SIGNING_CERTIFICATE) {
            Ok(Some(v)) => (v, HashAlg::Sha1),
            Ok(None) => return None,
            Err(e) => return Some(check("ess_signing_certificate", false, e)),
        },
        Err(e) => return Some(check("ess_signing_certificate", false, e)),
    };
    let r = (|| -> Result<bool, SmimeError> {
        let d = v.to_der()?;
        let top = Tlv::parse_exact(&d)?;
        let certs = top.children()?;
        let first_list = certs
            .first()
            .ok_or_else(|| malformed("empty SigningCertificate"))?;
        let ids = first_list.children()?;
        let id = ids.first().ok_or_else(|| malformed("no ESSCertID"))?;
        let fields = id.children()?;
        let (hash, h) = match fields.first() {
            Some(f) if f.tag == 0x30 => {
                let alg = spki::AlgorithmIdentifierOwned::from_der(f.raw)?;
                let h = HashAlg::from_oid(&alg.oid)
                    .ok_or_else(|| SmimeError::Unsupported(format!("ESS hash {}", alg.oid)))?;
                (fields.get(1).ok_or_else(|| malformed("ESSCertIDv2"))?, h)
            }
            Some(f) => (f, default_hash),
            None => return Err(malformed("ESSCertID")),
        };
        Ok(hash.tag == 0x04 && hash.content == h.digest(&cert.der).as_slice())
    })();
    Some(match r {
        Ok(true) => check(
            "ess_signing_certificate",
            true,
            "ESS signingCertificate names the signer certificate",
        ),
        Ok(false) => check(
            "ess_signing_certificate",
            false,
            "ESS signingCertificate names a different certificate than the one used",
        ),
        Err(e) => check("ess_signing_certificate", false, e.to_string()),
    })
}

/// Verify every SignerInfo of `parsed` against the content digests the caller computed.
pub fn verify(
    parsed: &ParsedSignedData,
    digests: &ContentDigests,
    opts: &VerifyOptions<'_>,
) -> VerificationReport {
    let mut pool: Vec<CertEntry> = parsed.certificates.clone();
    for c in opts.extra_certs {
        if !pool.contains(c) {
            pool.push(c.clone());
        }
    }
    let crls: Vec<crate::revocation::Crl> = opts
        .crls
        .iter()
        .chain(parsed.crls.iter())
        .take(crate::revocation::MAX_CRLS)
        .cloned()
        .collect();
    let revocation = crate::revocation::RevocationInputs {
        mode: opts.revocation,
        crls: &crls,
        now: opts.now,
        skew: opts.clock_skew,
        fetcher: opts.fetcher,
        sources: opts.revocation_sources,
        pool: &pool,
        anchor: None,
        max_intermediates: opts.policy.max_intermediates,
        depth: 0,
        signer_budget: None,
    };
    let signers: Vec<SignerReport> = parsed
        .signers
        .iter()
        .map(|s| verify_signer(parsed, s, &pool, digests, opts, &revocation))
        .collect();
    VerificationReport {
        valid: !signers.is_empty() && signers.iter().all(|s| s.valid),
        signers,
    }
}

fn verify_signer(
    parsed: &ParsedSignedData,
    s: &ParsedSigner,
    pool: &[CertEntry],
    digests: &ContentDigests,
    opts: &VerifyOptions<'_>,
    revocation: &crate::revocation::RevocationInputs<'_>,
) -> SignerReport {
    let info = &s.info;
    let mut checks = Vec::new();
    let policy = &opts.policy;

    // digest algorithm
    let hash = HashAlg::from_oid(&info.digest_alg.oid);
    let digest_name = hash.map(|h| h.name().to_string()).unwrap_or_else(|| {
        if info.digest_alg.oid == oid::MD5 {
            "MD5".into()
        } else {
            info.digest_alg.oid.to_string()
        }
    });
    match hash {
        Some(HashAlg::Sha1) if !policy.allow_sha1 => checks.push(check(
            "digest_algorithm",
            false,
            "the signature uses SHA-1, which policy rejects",
        )),
        Some(h) => checks.push(check("digest_algorithm", true, h.name())),
        None => checks.push(check(
            "digest_algorithm",
            false,
            format!("digest algorithm {digest_name} is not supported or not allowed"),
        )),
    }

    // signature algorithm → scheme
    let sig_kind = classify_signature_alg(&info.signature_algorithm);
    let scheme: Result<(SignatureScheme, Option<usize>), String> = match (&sig_kind, hash) {
        (Err(e), _) => Err(e.clone()),
        (_, None) => Err("no usable digest algorithm".into()),
        (Ok(SigAlgKind::RsaPkcs1(h)), Some(d)) => match h {
            Some(h) if *h != d => {
                Err("signature algorithm hash differs from digestAlgorithm".into())
            }
            _ => Ok((SignatureScheme::RsaPkcs1v15(d), None)),
        },
        (Ok(SigAlgKind::RsaPss(p)), Some(d)) => {
            if p.hash != d || p.mgf_hash != d {
                Err("RSA-PSS parameters use a different hash than digestAlgorithm".into())
            } else {
                Ok((SignatureScheme::RsaPss(d), Some(p.salt_len)))
            }
        }
        (Ok(SigAlgKind::Ecdsa(h)), Some(d)) => match h {
            Some(h) if *h != d => {
                Err("signature algorithm hash differs from digestAlgorithm".into())
            }
            _ => Ok((SignatureScheme::Ecdsa(d), None)),
        },
        (Ok(SigAlgKind::Md5Rsa), _) => Err("MD5 signatures are rejected".into()),
    };
    let sig_name = match &scheme {
        Ok((sc, _)) => sc.name(),
        Err(_) => info.signature_algorithm.oid.to_string(),
    };

    // signer certificate
    let cert = find_signer_cert(&info.sid, pool);
    checks.push(match cert {
        Some(c) => check(
            "signer_certificate",
            true,
            format!("found '{}'", c.subject()),
        ),
        None => check(
            "signer_certificate",
            false,
            "the signer's certificate is neither in the message nor among the given certificates",
        ),
    });

    // signed attributes
    let mut signing_time = None;
    let content_digest = hash.and_then(|h| digests.get(h));
    let signed_data: Option<Vec<u8>> = match (&s.signed_attrs_der, hash) {
        (Some(attrs), Some(h)) => {
            // contentType
            match single_value(info, oid::ATTR_CONTENT_TYPE) {
                Ok(Some(v)) => {
                    let ok = v
                        .to_der()
                        .ok()
                        .and_then(|d| ObjectIdentifier::from_der(&d).ok())
                        == Some(parsed.content_type);
                    checks.push(check(
                        "content_type",
                        ok,
                        if ok {
                            "contentType attribute matches eContentType"
                        } else {
                            "contentType attribute differs from eContentType"
                        },
                    ));
                }
                Ok(None) => checks.push(check(
                    "content_type",
                    false,
                    "contentType attribute missing",
                )),
                Err(e) => checks.push(check("content_type", false, e)),
            }
            // messageDigest
            match single_value(info, oid::ATTR_MESSAGE_DIGEST) {
                Ok(Some(v)) => {
                    let md = v.to_der().ok().and_then(|d| OctetString::from_der(&d).ok());
                    match (md, content_digest) {
                        (Some(md), Some(cd)) => {
                            let ok = md.as_bytes() == cd;
                            checks.push(check(
                                "message_digest",
                                ok,
                                if ok {
                                    "the content matches the signed messageDigest"
                                } else {
                                    "the content does not match the signed messageDigest: content was modified"
                                },
                            ));
                        }
                        (None, _) => checks.push(check(
                            "message_digest",
                            false,
                            "messageDigest is not an OCTET STRING",
                        )),
                        (_, None) => checks.push(check(
                            "message_digest",
                            false,
                            format!("no {digest_name} digest of the content was computed"),
                        )),
                    }
                }
                Ok(None) => checks.push(check(
                    "message_digest",
                    false,
                    "messageDigest attribute missing",
                )),
                Err(e) => checks.push(check("message_digest", false, e)),
            }
            // signingTime
            match single_value(info, oid::ATTR_SIGNING_TIME) {
                Ok(Some(v)) => {
                    match v
                        .to_der()
                        .ok()
                        .and_then(|d| x509_cert::time::Time::from_der(&d).ok())
                    {
                        Some(t) => {
                            let st = t.to_system_time();
                            signing_time = Some(st);
                            // a day of clock skew is tolerated
                            if st > opts.now + std::time::Duration::from_secs(86_400) {
                                checks.push(check(
                                    "signing_time",
                                    false,
                                    format!("signingTime {} lies in the future", format_time(st)),
                                ));
                            }
                        }
                        None => {
                            checks.push(check("signing_time", false, "signingTime is not a Time"))
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => checks.push(check("signing_time", false, e)),
            }
            Some(h.digest(attrs))
        }
        (None, Some(_)) => {
            // RFC 5652 §5.3: signed attributes may be absent only when the content is id-data
            if parsed.content_type != oid::ID_DATA {
                checks.push(check(
                    "content_type",
                    false,
                    format!(
                        "no signed attributes, but the content type is {} (only id-data may go without them)",
                        parsed.content_type
                    ),
                ));
            }
            checks.push(check(
                "message_digest",
                content_digest.is_some(),
                if content_digest.is_some() {
                    "no signed attributes: the signature covers the content digest directly"
                } else {
                    "no digest of the content was computed"
                },
            ));
            content_digest.map(|d| d.to_vec())
        }
        (_, None) => None,
    };

    // signature
    let sig_check = match (&scheme, cert, &signed_data) {
        (Err(e), _, _) => check("signature", false, format!("signature algorithm: {e}")),
        (_, None, _) => check(
            "signature",
            false,
            "no certificate to verify the signature with",
        ),
        (_, _, None) => check("signature", false, "nothing to verify (no digest)"),
        (Ok((sc, salt)), Some(c), Some(d)) => match c.public_key() {
            Err(e) => check("signature", false, e),
            Ok(k) => match k.verify_digest(*sc, *salt, d, info.signature.as_bytes()) {
                Ok(()) => check(
                    "signature",
                    true,
                    format!("{} signature verifies with the signer's key", sc.name()),
                ),
                Err(e) => check(
                    "signature",
                    false,
                    if s.signed_attrs_der.is_some() {
                        format!("{e}: the signed attributes or the signature were modified")
                    } else {
                        format!("{e}: the content or the signature was modified")
                    },
                ),
            },
        },
    };
    checks.push(sig_check);

    // signer key size for the message signature
    if let Some(c) = cert {
        if let Some(e) = check_ess(info, c) {
            checks.push(e);
        }
    }

    // an RFC 3161 timestamp over the signature value (never looked for inside a token)
    let timestamp = if opts.purpose == crate::path::Purpose::Email {
        check_timestamp(info, pool, opts)
    } else {
        None
    };
    if let Some(t) = &timestamp {
        checks.push(check("timestamp", t.valid, t.reason.clone()));
    }
    let proven_time = timestamp
        .as_ref()
        .filter(|t| t.valid)
        .and_then(|t| t.gen_time);

    // ESS attributes that are shown
    let security_label = match crate::ess::security_label(s) {
        Ok(l) => l,
        Err(e) => {
            checks.push(check("security_label", false, e.to_string()));
            None
        }
    };
    let receipt_request = match crate::ess::receipt_request(s) {
        Ok(r) => r.map(|r| r.info()),
        Err(e) => {
            checks.push(check("receipt_request", false, e.to_string()));
            None
        }
    };

    // The certificate path only for a signature that verifies: a hostile pool of
    // certificates costs nothing when the message itself is not authentic (RFC 4158 §3.5).
    let authentic = checks
        .iter()
        .filter(|c| c.name == "message_digest" || c.name == "signature")
        .all(|c| c.ok);
    let mut chain = Vec::new();
    if let Some(c) = cert.filter(|_| authentic) {
        let (path_checks, names) = check_signer_certificate(
            c,
            &PathInputs {
                pool,
                anchors: opts.trust_anchors,
                now: opts.now,
                signing_time,
                sender_email: opts.sender_email,
                sender_problem: opts.sender_problem,
                policy,
                revocation: Some(revocation),
                purpose: opts.purpose,
                timestamp: proven_time,
            },
        );
        checks.extend(path_checks);
        chain = names;
    }

    SignerReport {
        valid: checks.iter().all(|c| c.ok),
        subject: cert.map(|c| c.subject()),
        issuer: cert.map(|c| c.issuer()),
        serial: cert.map(|c| c.serial_hex()),
        emails: cert.map(|c| c.emails()).unwrap_or_default(),
        signing_time: signing_time.map(format_time),
        digest_algorithm: digest_name,
        signature_algorithm: sig_name,
        chain,
        checks,
        certificate: cert.map(|c| c.der.clone()),
        timestamp,
        security_label,
        receipt_request,
    }
}

/// The signer's signature timestamp token(s), verified against the signature value and the
/// trust anchors; `None` without one.
fn check_timestamp(
    info: &SignerInfo,
    pool: &[CertEntry],
    opts: &VerifyOptions<'_>,
) -> Option<crate::tsp::TimestampReport> {
    let attrs = info.unsigned_attrs.as_ref()?;
    let found: Vec<_> = attrs
        .iter()
        .filter(|a| a.oid == oid::ATTR_TIMESTAMP_TOKEN)
        .collect();
    let token = match found.as_slice() {
        [] => return None,
        [a] if a.values.len() == 1 => a.values.iter().next()?.to_der(),
        _ => {
            return Some(crate::tsp::TimestampReport::bad_public(
                "more than one signature timestamp: only one is accepted",
            ))
        }
    };
    Some(match token {
        Ok(t) => crate::tsp::verify_token(
            &t,
            info.signature.as_bytes(),
            opts.trust_anchors,
            pool,
            &opts.policy,
            opts.now,
        ),
        Err(e) => crate::tsp::TimestampReport::bad_public(e.to_string()),
    })
}
