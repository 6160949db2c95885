//! OCSP (RFC 6960), sans I/O: the request for one certificate (SHA-1 CertID, as RFC 5019
//! responders expect, with a nonce), and the checks of a response — status, signature by
//! the CA or by a responder the CA delegated with id-kp-OCSPSigning, the CertID, the nonce,
//! thisUpdate / nextUpdate with clock skew.
//!
//! The structures are declared here with `der`'s derive on our der 0.8 generation: the
//! `x509-ocsp` crate is on der 0.7 (docs/dependencies.md says why we did not mix).

use std::time::{Duration, SystemTime};

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Choice, Decode, Encode, Enumerated, Sequence};
use sha1::{Digest, Sha1};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, ExtendedKeyUsage};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;

use crate::path::{verify_signed_der, CertEntry};
use crate::verify::format_time;

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_PKIX_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const ID_PKIX_OCSP_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const ID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");

/// Largest OCSP response read.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// A response without nextUpdate is accepted only this long after its thisUpdate.
pub const MAX_AGE_WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(24 * 3600);

/// CertID (RFC 6960 §4.1.1).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct CertId {
    /// hashAlgorithm
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// issuerNameHash
    pub issuer_name_hash: OctetString,
    /// issuerKeyHash
    pub issuer_key_hash: OctetString,
    /// serialNumber
    pub serial_number: SerialNumber,
}

#[derive(Clone, Debug, Sequence)]
struct Request {
    req_cert: CertId,
}

#[derive(Clone, Debug, Sequence)]
struct TbsRequest {
    request_list: Vec<Request>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    request_extensions: Option<Extensions>,
}

#[derive(Clone, Debug, Sequence)]
struct OcspRequest {
    tbs_request: TbsRequest,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[repr(u32)]
enum ResponseStatus {
    Successful = 0,
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    SigRequired = 5,
    Unauthorized = 6,
}

#[derive(Clone, Debug, Sequence)]
struct ResponseBytes {
    response_type: ObjectIdentifier,
    response: OctetString,
}

#[derive(Clone, Debug, Sequence)]
struct OcspResponse {
    response_status: ResponseStatus,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    response_bytes: Option<ResponseBytes>,
}

#[derive(Clone, Debug, Sequence)]
struct BasicOcspResponse {
    tbs_response_data: ResponseData,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    certs: Option<Vec<Certificate>>,
}

#[derive(Clone, Debug, Choice)]
enum ResponderId {
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

#[derive(Clone, Debug, Sequence)]
struct ResponseData {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    version: Option<u8>,
    responder_id: ResponderId,
    produced_at: GeneralizedTime,
    responses: Vec<SingleResponse>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    response_extensions: Option<Extensions>,
}

#[derive(Clone, Debug, Sequence)]
struct RevokedInfo {
    revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    revocation_reason: Option<CrlReasonCode>,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[repr(u32)]
enum CrlReasonCode {
    Unspecified = 0,
    KeyCompromise = 1,
    CaCompromise = 2,
    AffiliationChanged = 3,
    Superseded = 4,
    CessationOfOperation = 5,
    CertificateHold = 6,
    RemoveFromCrl = 8,
    PrivilegeWithdrawn = 9,
    AaCompromise = 10,
}

#[derive(Clone, Debug, Choice)]
enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

#[derive(Clone, Debug, Sequence)]
struct SingleResponse {
    cert_id: CertId,
    cert_status: CertStatus,
    this_update: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    single_extensions: Option<Extensions>,
}

/// The OCSP responder URLs of a certificate's authorityInfoAccess (http only).
pub fn responder_urls(cert: &CertEntry) -> Vec<String> {
    let Ok(Some((_, aia))) = cert
        .cert
        .tbs_certificate()
        .get_extension::<AuthorityInfoAccessSyntax>()
    else {
        return Vec::new();
    };
    aia.0
        .iter()
        .filter(|ad| ad.access_method == ID_AD_OCSP)
        .filter_map(|ad| match &ad.access_location {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
        .filter(|u| u.starts_with("http://"))
        .collect()
}

/// The CertID of `cert` issued by `issuer` (SHA-1, RFC 5019).
pub fn cert_id(cert: &CertEntry, issuer: &CertEntry) -> Result<CertId, String> {
    let name = issuer
        .cert
        .tbs_certificate()
        .subject()
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = issuer
        .cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA1,
            parameters: Some(der::Any::from(Null)),
        },
        issuer_name_hash: OctetString::new(Sha1::digest(&name).to_vec())
            .map_err(|e| e.to_string())?,
        issuer_key_hash: OctetString::new(Sha1::digest(key).to_vec()).map_err(|e| e.to_string())?,
        serial_number: cert.cert.tbs_certificate().serial_number().clone(),
    })
}

/// A request for one certificate, and the nonce extension it carries (compared with the
/// response's).
#[derive(Clone, Debug)]
pub struct OcspQuery {
    /// The DER request, for an HTTP POST (`application/ocsp-request`).
    pub der: Vec<u8>,
    /// The CertID asked about.
    pub cert_id: CertId,
    /// A stable key for caching the answer (hex of the CertID's DER hash).
    pub cache_key: String,
    nonce: Option<Vec<u8>>,
}

/// Builds the request for `cert` (issued by `issuer`) with `nonce` (16 random bytes, say).
pub fn request(
    cert: &CertEntry,
    issuer: &CertEntry,
    nonce: Option<&[u8]>,
) -> Result<OcspQuery, String> {
    let id = cert_id(cert, issuer)?;
    let nonce_ext = match nonce {
        Some(n) => {
            let inner = OctetString::new(n.to_vec())
                .and_then(|o| o.to_der())
                .map_err(|e| e.to_string())?;
            Some(Extension {
                extn_id: ID_PKIX_OCSP_NONCE,
                critical: false,
                extn_value: OctetString::new(inner).map_err(|e| e.to_string())?,
            })
        }
        None => None,
    };
    let req = OcspRequest {
        tbs_request: TbsRequest {
            request_list: vec![Request {
                req_cert: id.clone(),
            }],
            request_extensions: nonce_ext.clone().map(|e| vec![e]),
        },
    };
    let der = req.to_der().map_err(|e| e.to_string())?;
    let id_der = id.to_der().map_err(|e| e.to_string())?;
    let cache_key = hex_lower(&<sha2::Sha256 as sha2::Digest>::digest(&id_der));
    Ok(OcspQuery {
        der,
        cert_id: id,
        cache_key,
        nonce: nonce_ext.map(|e| e.extn_value.as_bytes().to_vec()),
    })
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a response says about the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OcspStatus {
    /// Not revoked.
    Good,
    /// Revoked at the time (DER time text), for the reason.
    Revoked {
        /// revocationTime
        time: String,
        /// the CRL reason, `unspecified` when none is given
        reason: String,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// A checked response.
#[derive(Clone, Debug)]
pub struct OcspAnswer {
    /// The certificate's status.
    pub status: OcspStatus,
    /// Who signed: the CA itself or its delegated responder.
    pub signer: String,
    /// thisUpdate.
    pub this_update: SystemTime,
    /// nextUpdate, when given.
    pub next_update: Option<SystemTime>,
}

fn time(t: &GeneralizedTime) -> SystemTime {
    t.to_system_time()
}

/// nextUpdate of the response to `query` in `der`, without checking it (for a cache
/// deciding how long to keep it; the response is checked in full when used).
pub fn next_update(der: &[u8], query: &OcspQuery) -> Option<SystemTime> {
    let basic = basic_response(der).ok()?;
    basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| r.cert_id == query.cert_id)
        .and_then(|r| r.next_update.as_ref().map(time))
}

fn basic_response(der: &[u8]) -> Result<BasicOcspResponse, String> {
    if der.len() > MAX_RESPONSE {
        return Err(format!(
            "the OCSP response is larger than {MAX_RESPONSE} bytes"
        ));
    }
    let resp = OcspResponse::from_der(der).map_err(|e| format!("not an OCSP response ({e})"))?;
    if resp.response_status != ResponseStatus::Successful {
        return Err(format!(
            "the OCSP responder answered {:?}",
            resp.response_status
        ));
    }
    let bytes = resp
        .response_bytes
        .ok_or("a successful OCSP response without responseBytes")?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "OCSP response type {} is not the basic response",
            bytes.response_type
        ));
    }
    BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("unreadable basic OCSP response ({e})"))
}

fn responder_matches(id: &ResponderId, c: &CertEntry) -> bool {
    match id {
        ResponderId::ByName(n) => n == c.cert.tbs_certificate().subject(),
        ResponderId::ByKey(h) => {
            let key = c
                .cert
                .tbs_certificate()
                .subject_public_key_info()
                .subject_public_key
                .raw_bytes();
            h.as_bytes() == Sha1::digest(key).as_slice()
        }
    }
}

/// Checks `der`, the answer to `query` about `cert` issued by `issuer`, at `now`.
/// `from_cache`: the response was stored earlier (its nonce is an older request's).
pub fn check_response(
    der: &[u8],
    query: &OcspQuery,
    issuer: &CertEntry,
    now: SystemTime,
    skew: Duration,
    from_cache: bool,
) -> Result<OcspAnswer, String> {
    let basic = basic_response(der)?;
    // The signed part, as received.
    let inner = {
        let outer = crate::ber::Tlv::parse_exact(der).map_err(|e| e.to_string())?;
        let parts = outer.children().map_err(|e| e.to_string())?;
        let rb = parts.get(1).ok_or("OCSP response without responseBytes")?;
        let seq = crate::ber::Tlv::parse_exact(rb.content).map_err(|e| e.to_string())?;
        let fields = seq.children().map_err(|e| e.to_string())?;
        let octets = fields.get(1).ok_or("responseBytes without its response")?;
        octets.content.to_vec()
    };
    let data = &basic.tbs_response_data;
    // Who signed: the CA, or a responder certificate in `certs` issued by the CA with
    // id-kp-OCSPSigning, valid now.
    let signer: CertEntry = if responder_matches(&data.responder_id, issuer) {
        issuer.clone()
    } else {
        let mut found = None;
        for c in basic.certs.iter().flatten().take(8) {
            let Ok(e) = c
                .to_der()
                .map_err(|e| e.to_string())
                .and_then(|d| CertEntry::from_der(d).map_err(|e| e.to_string()))
            else {
                continue;
            };
            if responder_matches(&data.responder_id, &e) {
                found = Some(e);
                break;
            }
        }
        let r = found.ok_or(
            "the OCSP response is signed by neither the CA nor a responder certificate it carries",
        )?;
        r.verify_signed_by(issuer).map_err(|e| {
            format!(
                "the OCSP responder certificate '{}' is not issued by '{}' ({e})",
                r.subject(),
                issuer.subject()
            )
        })?;
        let delegated = matches!(
            r.cert.tbs_certificate().get_extension::<ExtendedKeyUsage>(),
            Ok(Some((_, eku))) if eku.0.contains(&ID_KP_OCSP_SIGNING)
        );
        if !delegated {
            return Err(format!(
                "the OCSP responder certificate '{}' lacks id-kp-OCSPSigning",
                r.subject()
            ));
        }
        if let Some(p) = r.validity_problem(now) {
            return Err(format!("the OCSP responder certificate: {p}"));
        }
        r
    };
    verify_signed_der(
        &inner,
        &basic.signature_algorithm,
        &basic.signature,
        &signer,
        "OCSP response",
    )
    .map_err(|e| format!("the OCSP response signature does not verify ({e})"))?;
    // the nonce, when we sent one and the responder echoes one
    if let (Some(sent), false) = (&query.nonce, from_cache) {
        if let Some(ext) = data
            .response_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
        {
            if ext.extn_value.as_bytes() != sent.as_slice() {
                return Err(
                    "the OCSP response's nonce is not the request's (a replayed answer?)".into(),
                );
            }
        }
    }
    let single = data
        .responses
        .iter()
        .find(|r| r.cert_id == query.cert_id)
        .ok_or("the OCSP response does not answer for this certificate")?;
    let this_update = time(&single.this_update);
    if this_update > now + skew {
        return Err(format!(
            "the OCSP response is not yet valid (thisUpdate {})",
            format_time(this_update)
        ));
    }
    let next_update = single.next_update.as_ref().map(time);
    match next_update {
        Some(n) if n + skew < now => {
            return Err(format!(
                "the OCSP response is out of date (nextUpdate {})",
                format_time(n)
            ))
        }
        None if this_update + MAX_AGE_WITHOUT_NEXT_UPDATE + skew < now => {
            return Err(format!(
                "the OCSP response has no nextUpdate and is older than a day (thisUpdate {})",
                format_time(this_update)
            ))
        }
        _ => {}
    }
    let status = match &single.cert_status {
        CertStatus::Good(_) => OcspStatus::Good,
        CertStatus::Unknown(_) => OcspStatus::Unknown,
        CertStatus::Revoked(info) => OcspStatus::Revoked {
            time: format_time(time(&info.revocation_time)),
            reason: info
                .revocation_reason
                .map(|r| crate::revocation::reason_name(r as u8))
                .unwrap_or("unspecified")
                .to_string(),
        },
    };
    Ok(OcspAnswer {
        status,
        signer: signer.subject(),
        this_update,
        next_update,
    })
}
