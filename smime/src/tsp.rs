//! RFC 3161 signature timestamps, sans I/O: the request over a SignerInfo's signature
//! value (SHA-256 imprint, a nonce, certReq), the checks of the TSA's answer, and the
//! verification of a TimeStampToken found as the unsigned attribute
//! id-aa-signatureTimeStampToken (RFC 3161 Appendix A).
//!
//! The structures are declared here with `der`'s derive on our der 0.8 generation, as for
//! OCSP: the `x509-tsp` crate is on der 0.7 (docs/dependencies.md). The token itself is a
//! CMS SignedData over a TSTInfo and is verified by [`crate::verify::verify`] with
//! [`Purpose::TimeStamping`]: the TSA certificate must carry id-kp-timeStamping (critical)
//! and chain to a trust anchor, judged at the token's genTime.

use std::time::SystemTime;

use der::asn1::{GeneralizedTime, Int, ObjectIdentifier, OctetString, Uint};
use der::{Any, Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::Extensions;

use crate::alg::{oid, ContentDigests, HashAlg};
use crate::path::{CertEntry, Purpose};
use crate::verify::{format_time, ParsedSignedData, VerifyOptions};

/// Largest TimeStampResp read.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// MessageImprint (RFC 3161 §2.4.1).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct MessageImprint {
    /// hashAlgorithm
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// hashedMessage
    pub hashed_message: OctetString,
}

fn default_false() -> bool {
    false
}

/// TimeStampReq (RFC 3161 §2.4.1).
#[derive(Clone, Debug, Sequence)]
struct TimeStampReq {
    version: u8,
    message_imprint: MessageImprint,
    #[asn1(optional = "true")]
    req_policy: Option<ObjectIdentifier>,
    #[asn1(optional = "true")]
    nonce: Option<Uint>,
    #[asn1(default = "default_false")]
    cert_req: bool,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// PKIStatusInfo (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Sequence)]
struct PkiStatusInfo {
    status: u32,
    #[asn1(optional = "true")]
    status_string: Option<Vec<Any>>,
    #[asn1(optional = "true")]
    fail_info: Option<der::asn1::BitString>,
}

/// TimeStampResp (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<Any>,
}

/// Accuracy (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Sequence)]
struct Accuracy {
    #[asn1(optional = "true")]
    seconds: Option<u64>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    millis: Option<u16>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    micros: Option<u16>,
}

/// TSTInfo (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Sequence)]
struct TstInfo {
    version: u8,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Int,
    gen_time: GeneralizedTime,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "default_false")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Uint>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// A timestamp request ready to send, and what its answer must match.
#[derive(Clone, Debug)]
pub struct TimestampRequest {
    /// the DER TimeStampReq (POST it as `application/timestamp-query`)
    pub der: Vec<u8>,
    imprint: Vec<u8>,
    nonce: Vec<u8>,
}

impl TimestampRequest {
    /// A request over `stamped` (the signature value): SHA-256 imprint, the nonce
    /// `nonce` (random bytes from the caller), certReq true.
    pub fn new(stamped: &[u8], nonce: &[u8; 16]) -> Result<Self, crate::SmimeError> {
        let imprint = HashAlg::Sha256.digest(stamped);
        let mut n = nonce.to_vec();
        n[0] &= 0x7f; // positive, and the same bytes come back
        n[0] |= 0x40; // no leading zero to strip
        let req = TimeStampReq {
            version: 1,
            message_imprint: MessageImprint {
                hash_algorithm: HashAlg::Sha256.algorithm_identifier(),
                hashed_message: OctetString::new(imprint.clone())?,
            },
            req_policy: None,
            nonce: Some(Uint::new(&n)?),
            cert_req: true,
            extensions: None,
        };
        Ok(TimestampRequest {
            der: req.to_der()?,
            imprint,
            nonce: n,
        })
    }

    /// Checks a TimeStampResp: status granted, a token whose imprint and nonce are ours,
    /// whose signature verifies with the TSA certificate it carries, which has the
    /// timeStamping extended key usage. Returns the token (DER ContentInfo) and its
    /// genTime. The TSA's chain is not judged here (no trust anchors at signing time):
    /// `verify` does it.
    pub fn check_response(&self, resp: &[u8]) -> Result<(Vec<u8>, SystemTime), String> {
        if resp.len() > MAX_RESPONSE {
            return Err(format!("the answer is larger than {MAX_RESPONSE} bytes"));
        }
        let r = TimeStampResp::from_der(resp)
            .map_err(|e| format!("the answer is not an RFC 3161 TimeStampResp ({e})"))?;
        if r.status.status > 1 {
            let text: Vec<String> = r
                .status
                .status_string
                .iter()
                .flatten()
                .filter_map(|a| a.decode_as::<String>().ok())
                .collect();
            return Err(format!(
                "the TSA refused the request (status {}{})",
                r.status.status,
                if text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", text.join("; "))
                }
            ));
        }
        let token = r
            .time_stamp_token
            .ok_or("the TSA granted the request but sent no token")?
            .to_der()
            .map_err(|e| e.to_string())?;
        let tst = parse_token(&token)?;
        if tst.info.message_imprint.hash_algorithm.oid != oid::SHA256
            || tst.info.message_imprint.hashed_message.as_bytes() != self.imprint.as_slice()
        {
            return Err("the token is for another message imprint than the one asked for".into());
        }
        if tst.info.nonce.as_ref().map(|n| n.as_bytes()) != Some(self.nonce.as_slice()) {
            return Err("the token's nonce is not the request's (a replayed answer?)".into());
        }
        // the signature, with the TSA certificate in the token (certReq), anchored on itself
        // only to run the signature checks: the chain is the verifier's business
        let report = token_report(&tst.parsed, &[], &[], tst.gen_time, None);
        let signer = report.signers.first().ok_or("the token has no signer")?;
        for c in &signer.checks {
            if !c.ok
                && matches!(
                    c.name.as_str(),
                    "content_type"
                        | "message_digest"
                        | "signature"
                        | "signer_certificate"
                        | "ess_signing_certificate"
                        | "digest_algorithm"
                )
            {
                return Err(format!("the token does not verify: {}", c.reason));
            }
        }
        let eku = tsa_eku(&tst.parsed, &signer.subject);
        if let Some(problem) = eku {
            return Err(problem);
        }
        Ok((token, tst.gen_time))
    }
}

/// The EKU problem of the token's signer certificate, if any.
fn tsa_eku(parsed: &ParsedSignedData, subject: &Option<String>) -> Option<String> {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    let cert = parsed
        .certificates
        .iter()
        .find(|c| Some(c.subject()) == *subject)?;
    match cert.cert.tbs_certificate().get_extension::<ExtendedKeyUsage>() {
        Ok(Some((true, eku))) if eku.0.contains(&oid::KP_TIME_STAMPING) => None,
        Ok(Some((false, eku))) if eku.0.contains(&oid::KP_TIME_STAMPING) => Some(format!(
            "the TSA certificate '{}' has timeStamping in a non-critical extendedKeyUsage (RFC 3161 §2.3 wants it critical)",
            cert.subject()
        )),
        _ => Some(format!(
            "the TSA certificate '{}' does not have the timeStamping extended key usage",
            cert.subject()
        )),
    }
}

struct ParsedToken {
    parsed: ParsedSignedData,
    info: TstInfo,
    gen_time: SystemTime,
}

fn parse_token(token: &[u8]) -> Result<ParsedToken, String> {
    let parsed =
        ParsedSignedData::parse(token).map_err(|e| format!("the token is not CMS: {e}"))?;
    if parsed.content_type != oid::ID_CT_TSTINFO {
        return Err(format!(
            "the token's content is {}, not a TSTInfo",
            parsed.content_type
        ));
    }
    let econtent = parsed
        .encapsulated_content()
        .ok_or("the token has no TSTInfo inside")?;
    let info = TstInfo::from_der(econtent).map_err(|e| format!("the TSTInfo: {e}"))?;
    if info.version != 1 {
        return Err(format!("TSTInfo version {}", info.version));
    }
    if parsed.signers.len() != 1 {
        return Err("a timestamp token must have exactly one signer".into());
    }
    let gen_time = info.gen_time.to_system_time();
    Ok(ParsedToken {
        parsed,
        info,
        gen_time,
    })
}

fn token_report(
    parsed: &ParsedSignedData,
    anchors: &[CertEntry],
    extra: &[CertEntry],
    gen_time: SystemTime,
    policy: Option<&crate::path::Policy>,
) -> crate::verify::VerificationReport {
    let content = parsed.encapsulated_content().unwrap_or_default();
    let digests = ContentDigests::of(&parsed.digest_algorithms(), content);
    let mut opts = VerifyOptions::at(anchors, gen_time);
    opts.extra_certs = extra;
    opts.purpose = Purpose::TimeStamping;
    // the TSA certificate's revocation is not checked (docs/smime.md, "Timestamps")
    opts.revocation = crate::revocation::RevocationMode::Off;
    if let Some(p) = policy {
        opts.policy = p.clone();
    }
    opts.policy.allow_any_eku = false;
    crate::verify::verify(parsed, &digests, &opts)
}

/// A verified (or not) signature timestamp, as `verify` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TimestampReport {
    /// the token verified: imprint, signature, TSA certificate and its path
    pub valid: bool,
    /// genTime, RFC 3339
    pub time: Option<String>,
    /// genTime
    #[serde(skip)]
    pub gen_time: Option<SystemTime>,
    /// the TSA certificate's subject
    pub tsa: Option<String>,
    /// the TSA's policy OID
    pub policy: Option<String>,
    /// the token's serial number (hex)
    pub serial: Option<String>,
    /// why it is valid or not
    pub reason: String,
}

impl TimestampReport {
    /// A report for a token that could not even be read.
    pub fn bad_public(reason: impl Into<String>) -> Self {
        Self::bad(reason)
    }

    fn bad(reason: impl Into<String>) -> Self {
        TimestampReport {
            valid: false,
            time: None,
            gen_time: None,
            tsa: None,
            policy: None,
            serial: None,
            reason: reason.into(),
        }
    }
}

/// Verify `token` (a TimeStampToken, DER) as a timestamp over `signature` (the
/// SignerInfo's signature value): the imprint, the token's signature, the TSA
/// certificate (timeStamping, critical) and its path to one of `anchors` at genTime.
pub fn verify_token(
    token: &[u8],
    signature: &[u8],
    anchors: &[CertEntry],
    extra: &[CertEntry],
    policy: &crate::path::Policy,
    now: SystemTime,
) -> TimestampReport {
    let tst = match parse_token(token) {
        Ok(t) => t,
        Err(e) => return TimestampReport::bad(e),
    };
    let mut out = TimestampReport::bad(String::new());
    out.time = Some(format_time(tst.gen_time));
    out.gen_time = Some(tst.gen_time);
    out.policy = Some(tst.info.policy.to_string());
    out.serial = Some(hex_upper(tst.info.serial_number.as_bytes()));
    let mi = &tst.info.message_imprint;
    let Some(h) = HashAlg::from_oid(&mi.hash_algorithm.oid).filter(|h| *h != HashAlg::Sha1) else {
        out.reason = format!(
            "the token's imprint uses hash {}, which is not accepted",
            mi.hash_algorithm.oid
        );
        return out;
    };
    if mi.hashed_message.as_bytes() != h.digest(signature).as_slice() {
        out.reason =
            "the token's imprint is not the hash of this signature: the timestamp is for something else"
                .into();
        return out;
    }
    // a day of clock skew is tolerated, as for signingTime
    if tst.gen_time > now + std::time::Duration::from_secs(86_400) {
        out.reason = format!(
            "the timestamp's time {} lies in the future",
            format_time(tst.gen_time)
        );
        return out;
    }
    let report = token_report(&tst.parsed, anchors, extra, tst.gen_time, Some(policy));
    let Some(signer) = report.signers.first() else {
        out.reason = "the token has no signer".into();
        return out;
    };
    out.tsa = signer.subject.clone();
    match signer.failures().next() {
        Some(f) => {
            out.reason = format!(
                "the timestamp token does not verify: {}: {}",
                f.name, f.reason
            );
        }
        None => {
            out.valid = true;
            out.reason = format!(
                "RFC 3161 timestamp of {} by '{}', over this signature",
                format_time(tst.gen_time),
                signer.subject.as_deref().unwrap_or("?")
            );
        }
    }
    out
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The transport for [`Tsa`]: POST a request, return the answer's body (the CLI does it
/// over http with deadlines and a size cap).
pub trait TsaTransport: std::fmt::Debug + Send + Sync {
    /// POST `request` (`application/timestamp-query`) and return the body of the answer.
    fn post(&self, request: &[u8]) -> Result<Vec<u8>, String>;
}

/// A time-stamping authority reached through a [`TsaTransport`]: implements
/// [`SignatureTimestamper`](crate::signed::SignatureTimestamper).
#[derive(Debug)]
pub struct Tsa<T: TsaTransport> {
    /// how requests are sent
    pub transport: T,
    /// where (for messages)
    pub name: String,
}

impl<T: TsaTransport> crate::signed::SignatureTimestamper for Tsa<T> {
    fn timestamp(&self, signature: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
        let req = TimestampRequest::new(signature, &nonce).map_err(|e| e.to_string())?;
        let resp = self
            .transport
            .post(&req.der)
            .map_err(|e| format!("timestamp from {}: {e}", self.name))?;
        req.check_response(&resp)
            .map(|(token, _)| token)
            .map_err(|e| format!("timestamp from {}: {e}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_keeps_the_nonce() {
        let r = TimestampRequest::new(b"signature", &[0xff; 16]).expect("request");
        let back = TimeStampReq::from_der(&r.der).expect("decodes");
        assert_eq!(back.version, 1);
        assert!(back.cert_req);
        assert_eq!(
            back.nonce.as_ref().map(|n| n.as_bytes().to_vec()),
            Some(r.nonce.clone())
        );
        assert_eq!(r.nonce.len(), 16);
        assert_eq!(
            back.message_imprint.hashed_message.as_bytes(),
            HashAlg::Sha256.digest(b"signature").as_slice()
        );
        assert!(r.check_response(b"\x30\x03\x02\x01\x00").is_err());
        // a rejection (status 2) is reported as such
        let rejected = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02];
        let e = r.check_response(&rejected).expect_err("rejection");
        assert!(e.contains("refused"), "{e}");
    }
}
