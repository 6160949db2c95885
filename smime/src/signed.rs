//! CMS SignedData construction over a [`DigestSigner`].
//!
//! The caller hashes the content with [`ContentHasher`](crate::alg::ContentHasher) (streaming),
//! then [`sign_detached`] builds the SignedAttributes, hashes their DER, and hands only that
//! digest to the signer (the token). [`sign_encapsulated`] does the same for content held in
//! memory, and [`OpaqueStream`] writes an encapsulated SignedData as indefinite-length BER
//! around content streamed by the caller.

use crate::alg::{oid, HashAlg, KeyKind, SignatureScheme};
use crate::ber::tlv;
use crate::keys::PublicKey;
use crate::SmimeError;
use der::asn1::{GeneralizedTime, ObjectIdentifier, UtcTime};
use der::{DateTime, Encode};
use std::time::SystemTime;
use x509_cert::Certificate;

/// Errors from a [`DigestSigner`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The key cannot do this scheme.
    #[error("signature scheme not supported by this key: {0}")]
    Unsupported(String),
    /// The token / backend failed.
    #[error("{0}")]
    Backend(String),
}

/// A private key that signs precomputed digests (implemented by the agent over the token).
pub trait DigestSigner {
    /// The kind of key.
    fn key_kind(&self) -> KeyKind;
    /// Sign a precomputed digest; returns the signature as CMS wants it
    /// (RSA: raw; ECDSA: DER Ecdsa-Sig-Value — see [`ecdsa_raw_to_der`]).
    fn sign_digest(&self, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>, SignerError>;
}

/// Convert a raw `r || s` ECDSA signature (as PKCS#11 CKM_ECDSA returns) to DER Ecdsa-Sig-Value.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, SignerError> {
    if raw.is_empty() || raw.len() % 2 != 0 || raw.len() > 132 {
        return Err(SignerError::Backend(format!(
            "raw ECDSA signature has odd or bad length {}",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    fn int(v: &[u8]) -> Vec<u8> {
        let skip = v.iter().take_while(|b| **b == 0).count();
        let mut m: Vec<u8> = v[skip..].to_vec();
        if m.is_empty() || m[0] & 0x80 != 0 {
            m.insert(0, 0);
        }
        tlv(0x02, &m)
    }
    let mut body = int(r);
    body.extend_from_slice(&int(s));
    Ok(tlv(0x30, &body))
}

/// DER DigestInfo (RFC 8017 9.2) for `digest`: what `CKM_RSA_PKCS` must be given to make a
/// PKCS#1 v1.5 signature over a precomputed digest.
pub fn digest_info(hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SmimeError> {
    if digest.len() != hash.output_len() {
        return Err(SmimeError::Unsupported(format!(
            "{} digest must have {} bytes",
            hash.name(),
            hash.output_len()
        )));
    }
    // AlgorithmIdentifier with NULL parameters, as RFC 8017 prescribes for DigestInfo
    let mut alg = hash.oid().to_der()?;
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut body = tlv(0x30, &alg);
    body.extend_from_slice(&tlv(0x04, digest));
    Ok(tlv(0x30, &body))
}

/// EMSA-PKCS1-v1_5 encoded message `00 01 FF.. 00 DigestInfo` of `modulus_len` bytes: the input
/// for a raw RSA private-key operation (e.g. a PIV card's GENERAL AUTHENTICATE).
pub fn pkcs1v15_encode(
    hash: HashAlg,
    digest: &[u8],
    modulus_len: usize,
) -> Result<Vec<u8>, SmimeError> {
    let t = digest_info(hash, digest)?;
    if modulus_len < t.len() + 11 {
        return Err(SmimeError::Unsupported("RSA modulus too short".into()));
    }
    let mut em = vec![0x00, 0x01];
    em.resize(modulus_len - t.len() - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(&t);
    Ok(em)
}

/// A software key, for tests and for users without a token.
#[derive(Clone, Debug)]
pub enum SoftwareSigner {
    /// RSA
    Rsa(rsa::RsaPrivateKey),
    /// P-256
    P256(p256::ecdsa::SigningKey),
    /// P-384
    P384(p384::ecdsa::SigningKey),
}

impl SoftwareSigner {
    /// Load a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) of any supported kind.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SignerError> {
        use p256::pkcs8::DecodePrivateKey;
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Ok(SoftwareSigner::Rsa(k));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SoftwareSigner::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SoftwareSigner::P384(k));
        }
        Err(SignerError::Unsupported(
            "not a PKCS#8 RSA, P-256 or P-384 private key".into(),
        ))
    }
}

impl DigestSigner for SoftwareSigner {
    fn key_kind(&self) -> KeyKind {
        use rsa::traits::PublicKeyParts;
        match self {
            SoftwareSigner::Rsa(k) => KeyKind::Rsa { bits: k.size() * 8 },
            SoftwareSigner::P256(_) => KeyKind::P256,
            SoftwareSigner::P384(_) => KeyKind::P384,
        }
    }

    fn sign_digest(&self, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>, SignerError> {
        use rsa::Pkcs1v15Sign;
        use signature::hazmat::PrehashSigner;
        use signature::SignatureEncoding;
        let be = |e: &dyn std::fmt::Display| SignerError::Backend(e.to_string());
        match (self, scheme) {
            (SoftwareSigner::Rsa(k), SignatureScheme::RsaPkcs1v15(h)) => {
                let pad = match h {
                    HashAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
                    HashAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
                    HashAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
                    HashAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
                };
                k.sign(pad, digest).map_err(|e| be(&e))
            }
            (SoftwareSigner::Rsa(k), SignatureScheme::RsaPss(h)) => {
                let salt = h.output_len();
                let sig = match h {
                    HashAlg::Sha1 => {
                        rsa::pss::SigningKey::<sha1::Sha1>::new_with_salt_len(k.clone(), salt)
                            .sign_prehash(digest)
                    }
                    HashAlg::Sha256 => {
                        rsa::pss::SigningKey::<sha2::Sha256>::new_with_salt_len(k.clone(), salt)
                            .sign_prehash(digest)
                    }
                    HashAlg::Sha384 => {
                        rsa::pss::SigningKey::<sha2::Sha384>::new_with_salt_len(k.clone(), salt)
                            .sign_prehash(digest)
                    }
                    HashAlg::Sha512 => {
                        rsa::pss::SigningKey::<sha2::Sha512>::new_with_salt_len(k.clone(), salt)
                            .sign_prehash(digest)
                    }
                }
                .map_err(|e| be(&e))?;
                Ok(sig.to_vec())
            }
            (SoftwareSigner::P256(k), SignatureScheme::Ecdsa(_)) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).map_err(|e| be(&e))?;
                Ok(sig.to_der().to_bytes().to_vec())
            }
            (SoftwareSigner::P384(k), SignatureScheme::Ecdsa(_)) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(digest).map_err(|e| be(&e))?;
                Ok(sig.to_der().to_bytes().to_vec())
            }
            (_, s) => Err(SignerError::Unsupported(s.name())),
        }
    }
}

/// Gets an RFC 3161 TimeStampToken over a SignerInfo's signature value (after the key
/// signed): [`crate::tsp::Tsa`] over a transport, or anything else that returns a token.
pub trait SignatureTimestamper: std::fmt::Debug + Send + Sync {
    /// The TimeStampToken (DER ContentInfo) over `signature`, checked against the request.
    fn timestamp(&self, signature: &[u8]) -> Result<Vec<u8>, String>;
}

/// Options for building a SignerInfo.
#[derive(Clone, Debug)]
pub struct SignOptions {
    /// Signature scheme; `None` picks [`KeyKind::default_scheme`].
    pub scheme: Option<SignatureScheme>,
    /// The signingTime attribute (the caller's clock); `None` omits it.
    pub signing_time: Option<SystemTime>,
    /// Add smimeCapabilities with our preferences (default true).
    pub smime_capabilities: bool,
    /// Add ESS signingCertificateV2 (default true).
    pub signing_certificate_v2: bool,
    /// More signed attributes: (type, DER of the single value), e.g. an ESS receiptRequest
    /// or securityLabel from [`crate::ess`].
    pub extra_signed_attributes: Vec<(ObjectIdentifier, Vec<u8>)>,
    /// Adds id-aa-signatureTimeStampToken (an unsigned attribute) over the signature value.
    pub timestamper: Option<std::sync::Arc<dyn SignatureTimestamper>>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            scheme: None,
            signing_time: None,
            smime_capabilities: true,
            signing_certificate_v2: true,
            extra_signed_attributes: Vec::new(),
            timestamper: None,
        }
    }
}

impl SignOptions {
    /// The scheme that will be used with a key of `kind` — hash the content with its hash.
    pub fn scheme_for(&self, kind: KeyKind) -> Result<SignatureScheme, SmimeError> {
        let s = self.scheme.unwrap_or(kind.default_scheme());
        if s.hash() == HashAlg::Sha1 {
            return Err(SmimeError::Unsupported("signing with SHA-1".into()));
        }
        if !kind.supports(s) {
            return Err(SmimeError::Unsupported(format!(
                "{} with a {kind:?} key",
                s.name()
            )));
        }
        Ok(s)
    }
}

fn attribute(oid: ObjectIdentifier, value_der: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let mut body = oid.to_der()?;
    body.extend_from_slice(&tlv(0x31, value_der));
    Ok(tlv(0x30, &body))
}

/// DER SET OF: elements sorted by their encodings.
fn der_set_of(tag: u8, mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    let body: Vec<u8> = elements.concat();
    tlv(tag, &body)
}

fn time_der(t: SystemTime) -> Result<Vec<u8>, SmimeError> {
    let dt = DateTime::from_system_time(t)?;
    if (1950..2050).contains(&dt.year()) {
        Ok(UtcTime::from_date_time(dt)?.to_der()?)
    } else {
        Ok(GeneralizedTime::from_date_time(dt).to_der()?)
    }
}

/// Our smimeCapabilities, most preferred first.
pub fn smime_capabilities_der() -> Result<Vec<u8>, SmimeError> {
    let mut body = Vec::new();
    for o in [
        oid::AES256_GCM,
        oid::AES128_GCM,
        oid::AES256_CBC,
        oid::AES128_CBC,
        oid::RSAES_OAEP,
    ] {
        body.extend_from_slice(&tlv(0x30, &o.to_der()?));
    }
    Ok(tlv(0x30, &body))
}

/// ESS SigningCertificateV2 with one ESSCertIDv2 (SHA-256, so hashAlgorithm is omitted) and
/// the issuerSerial.
fn signing_certificate_v2_der(cert: &Certificate) -> Result<Vec<u8>, SmimeError> {
    let cert_der = cert.to_der()?;
    let hash = HashAlg::Sha256.digest(&cert_der);
    let tbs = cert.tbs_certificate();
    let issuer_gn = tlv(0xa4, &tbs.issuer().to_der()?); // directoryName [4] EXPLICIT
    let mut issuer_serial = tlv(0x30, &issuer_gn);
    issuer_serial.extend_from_slice(&tbs.serial_number().to_der()?);
    let issuer_serial = tlv(0x30, &issuer_serial);
    let mut cert_id = tlv(0x04, &hash);
    cert_id.extend_from_slice(&issuer_serial);
    let cert_id = tlv(0x30, &cert_id);
    let certs = tlv(0x30, &cert_id);
    Ok(tlv(0x30, &certs))
}

/// Whether `o` is one of the attributes [`signed_attributes`] adds itself, or repeated.
fn attrs_have(o: &ObjectIdentifier, opts: &SignOptions) -> bool {
    [
        oid::ATTR_CONTENT_TYPE,
        oid::ATTR_MESSAGE_DIGEST,
        oid::ATTR_SIGNING_TIME,
        oid::ATTR_SMIME_CAPABILITIES,
        oid::ATTR_SIGNING_CERTIFICATE_V2,
    ]
    .contains(o)
        || opts
            .extra_signed_attributes
            .iter()
            .filter(|(x, _)| x == o)
            .count()
            > 1
}

/// Build the signed attributes; returns the DER of the SET (tag 0x31), which is what is hashed.
fn signed_attributes(
    cert: &Certificate,
    content_type: ObjectIdentifier,
    content_digest: &[u8],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    let mut attrs = vec![
        attribute(oid::ATTR_CONTENT_TYPE, &content_type.to_der()?)?,
        attribute(oid::ATTR_MESSAGE_DIGEST, &tlv(0x04, content_digest))?,
    ];
    if let Some(t) = opts.signing_time {
        attrs.push(attribute(oid::ATTR_SIGNING_TIME, &time_der(t)?)?);
    }
    if opts.smime_capabilities {
        attrs.push(attribute(
            oid::ATTR_SMIME_CAPABILITIES,
            &smime_capabilities_der()?,
        )?);
    }
    if opts.signing_certificate_v2 {
        attrs.push(attribute(
            oid::ATTR_SIGNING_CERTIFICATE_V2,
            &signing_certificate_v2_der(cert)?,
        )?);
    }
    for (o, value) in &opts.extra_signed_attributes {
        if attrs_have(o, opts) {
            return Err(SmimeError::Unsupported(format!(
                "signed attribute {o} given twice"
            )));
        }
        attrs.push(attribute(*o, value)?);
    }
    Ok(der_set_of(0x31, attrs))
}

/// Build one SignerInfo (DER) over `content_digest` of id-data content.
pub fn signer_info(
    signer: &dyn DigestSigner,
    cert: &Certificate,
    content_digest: &[u8],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    signer_info_for(signer, cert, oid::ID_DATA, content_digest, opts)
}

/// Build one SignerInfo (DER) over `content_digest` of content of type `content_type`.
/// With [`SignOptions::timestamper`], the signature value is timestamped and the token
/// added as the unsigned attribute id-aa-signatureTimeStampToken.
pub fn signer_info_for(
    signer: &dyn DigestSigner,
    cert: &Certificate,
    content_type: ObjectIdentifier,
    content_digest: &[u8],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    let scheme = opts.scheme_for(signer.key_kind())?;
    let hash = scheme.hash();
    if content_digest.len() != hash.output_len() {
        return Err(SmimeError::Unsupported(format!(
            "content digest has {} bytes, {} needs {}",
            content_digest.len(),
            hash.name(),
            hash.output_len()
        )));
    }
    let attrs = signed_attributes(cert, content_type, content_digest, opts)?;
    let attrs_digest = hash.digest(&attrs);
    let sig = signer.sign_digest(scheme, &attrs_digest)?;

    // self-check: catches a key paired with the wrong certificate before anything leaves
    let pk = PublicKey::from_spki(cert.tbs_certificate().subject_public_key_info())
        .map_err(SmimeError::SelfCheck)?;
    pk.verify_digest(scheme, None, &attrs_digest, &sig)
        .map_err(SmimeError::SelfCheck)?;

    let tbs = cert.tbs_certificate();
    let mut ias = tbs.issuer().to_der()?;
    ias.extend_from_slice(&tbs.serial_number().to_der()?);
    let mut body = tlv(0x02, &[1]);
    body.extend_from_slice(&tlv(0x30, &ias));
    body.extend_from_slice(&hash.algorithm_identifier().to_der()?);
    // [0] IMPLICIT: same contents, context tag
    let mut implicit = attrs.clone();
    implicit[0] = 0xa0;
    body.extend_from_slice(&implicit);
    body.extend_from_slice(&scheme.signer_info_algorithm()?.to_der()?);
    body.extend_from_slice(&tlv(0x04, &sig));
    if let Some(tsa) = &opts.timestamper {
        let token = tsa.timestamp(&sig).map_err(SmimeError::Timestamp)?;
        // unsignedAttrs [1] IMPLICIT SET OF Attribute
        let attr = attribute(oid::ATTR_TIMESTAMP_TOKEN, &token)?;
        body.extend_from_slice(&tlv(0xa1, &attr));
    }
    Ok(tlv(0x30, &body))
}

fn certificates_der(cert: &Certificate, chain: &[Certificate]) -> Result<Vec<u8>, SmimeError> {
    let mut certs = vec![cert.to_der()?];
    for c in chain {
        let d = c.to_der()?;
        if !certs.contains(&d) {
            certs.push(d);
        }
    }
    Ok(der_set_of(0xa0, certs))
}

fn content_info(signed_data_body: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let mut ci = oid::ID_SIGNED_DATA.to_der()?;
    ci.extend_from_slice(&tlv(0xa0, &tlv(0x30, signed_data_body)));
    Ok(tlv(0x30, &ci))
}

/// A signer certificate this close to its notAfter signs with a warning.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 86400);

/// Whether `cert` may sign at `t`: `Err` (why, and what to do) when it has expired or is not
/// yet valid; `Ok(Some(warning))` within [`EXPIRY_WARNING`] of its notAfter.
pub fn signer_validity(cert: &Certificate, t: SystemTime) -> Result<Option<String>, String> {
    let v = cert.tbs_certificate().validity();
    let (nb, na) = (v.not_before.to_system_time(), v.not_after.to_system_time());
    let subject = cert.tbs_certificate().subject().to_string();
    if t < nb {
        return Err(format!(
            "the signing certificate '{subject}' is not valid yet (notBefore {}): check the clock, or wait",
            v.not_before
        ));
    }
    if t > na {
        return Err(format!(
            "the signing certificate '{subject}' expired on {}: mail signed with it would not verify; renew it (a new CSR, then tokenmail import-cert) and sign again",
            v.not_after
        ));
    }
    let left = na.duration_since(t).unwrap_or_default();
    if left < EXPIRY_WARNING {
        return Ok(Some(format!(
            "the signing certificate '{subject}' expires in {} day(s) ({}): renew it soon",
            left.as_secs() / 86400,
            v.not_after
        )));
    }
    Ok(None)
}

fn build(
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    (content_type, content_digest): (ObjectIdentifier, &[u8]),
    content: Option<&[u8]>,
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    // never sign with a certificate that is not valid at the signing time
    if let Some(t) = opts.signing_time {
        signer_validity(cert, t).map_err(SmimeError::SignerCertificate)?;
    }
    let scheme = opts.scheme_for(signer.key_kind())?;
    let si = signer_info_for(signer, cert, content_type, content_digest, opts)?;
    // RFC 5652 §5.1: version 3 when the content is not id-data
    let version = if content_type == oid::ID_DATA { 1 } else { 3 };
    let mut body = tlv(0x02, &[version]);
    body.extend_from_slice(&tlv(0x31, &scheme.hash().algorithm_identifier().to_der()?));
    let mut eci = content_type.to_der()?;
    if let Some(c) = content {
        eci.extend_from_slice(&tlv(0xa0, &tlv(0x04, c)));
    }
    body.extend_from_slice(&tlv(0x30, &eci));
    body.extend_from_slice(&certificates_der(cert, chain)?);
    body.extend_from_slice(&tlv(0x31, &si));
    content_info(&body)
}

/// Detached SignedData (DER ContentInfo) over content whose digest the caller computed with
/// `opts.scheme_for(signer.key_kind())?.hash()`.
pub fn sign_detached(
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    content_digest: &[u8],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    build(
        signer,
        cert,
        chain,
        (oid::ID_DATA, content_digest),
        None,
        opts,
    )
}

/// Encapsulated (opaque) SignedData (DER ContentInfo) with the content inside.
pub fn sign_encapsulated(
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    content: &[u8],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    sign_encapsulated_as(signer, cert, chain, oid::ID_DATA, content, opts)
}

/// Encapsulated SignedData (DER ContentInfo) whose content has type `content_type` (e.g.
/// id-ct-receipt for an ESS signed receipt).
pub fn sign_encapsulated_as(
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    content_type: ObjectIdentifier,
    content: &[u8],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    let hash = opts.scheme_for(signer.key_kind())?.hash();
    let digest = hash.digest(content);
    build(
        signer,
        cert,
        chain,
        (content_type, &digest),
        Some(content),
        opts,
    )
}

/// Streaming encoder for encapsulated SignedData in indefinite-length BER:
/// write [`OpaqueStream::header`], then for each content chunk [`OpaqueStream::chunk_header`]
/// followed by the chunk (also fed to a `ContentHasher` of [`OpaqueStream::hash`]), then
/// [`OpaqueStream::trailer`] with the digest.
#[derive(Clone, Copy, Debug)]
pub struct OpaqueStream {
    hash: HashAlg,
}

impl OpaqueStream {
    /// A stream for content hashed with `hash`.
    pub fn new(hash: HashAlg) -> Self {
        Self { hash }
    }

    /// The content hash algorithm.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// Everything up to the first content octet.
    pub fn header(&self) -> Result<Vec<u8>, SmimeError> {
        let mut out = vec![0x30, 0x80];
        out.extend_from_slice(&oid::ID_SIGNED_DATA.to_der()?);
        out.extend_from_slice(&[0xa0, 0x80, 0x30, 0x80]);
        out.extend_from_slice(&tlv(0x02, &[1]));
        out.extend_from_slice(&tlv(0x31, &self.hash.algorithm_identifier().to_der()?));
        out.extend_from_slice(&[0x30, 0x80]);
        out.extend_from_slice(&oid::ID_DATA.to_der()?);
        out.extend_from_slice(&[0xa0, 0x80, 0x24, 0x80]);
        Ok(out)
    }

    /// The OCTET STRING header that precedes a chunk of `len` bytes (empty for `len == 0`).
    pub fn chunk_header(len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let mut h = vec![0x04];
        h.extend_from_slice(&crate::ber::der_len(len));
        h
    }

    /// Everything after the content: end-of-contents, certificates, SignerInfo.
    pub fn trailer(
        &self,
        signer: &dyn DigestSigner,
        cert: &Certificate,
        chain: &[Certificate],
        content_digest: &[u8],
        opts: &SignOptions,
    ) -> Result<Vec<u8>, SmimeError> {
        if opts.scheme_for(signer.key_kind())?.hash() != self.hash {
            return Err(SmimeError::Unsupported(
                "the scheme's hash differs from the stream's".into(),
            ));
        }
        let si = signer_info(signer, cert, content_digest, opts)?;
        let mut out = vec![0, 0, 0, 0, 0, 0]; // OCTET STRING, [0], EncapsulatedContentInfo
        out.extend_from_slice(&certificates_der(cert, chain)?);
        out.extend_from_slice(&tlv(0x31, &si));
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // SignedData, [0], ContentInfo
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// throw-away 1024-bit test key (`openssl genpkey`)
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBALfzugyUOswCc30s
55oMF9EV9el7w4GW/vbmz0hShH61KNmZM013bZ3S2B5YQVt5BAky0KAUGjVmG940
/hdTRdzrzYgH8Zyk+LsjLdv1hZytsL0SZklDW4IUL5w4C2pP9XmN6UrmU7hcDR5S
3DYzDttjQOlHKPShSgBzhnMHJEJvAgMBAAECgYEAmbd8uDhB7er6cRbOLsd+O4Wb
alG27Rqt0srLWkdCWtOt4DAKU+jB3Amt+aWMcBDvU3R4K9zAjfDWxtgHoJxAmtCG
YzU8ra7PgPv6+DGPt9RVT7Zo3nsC4pZ3uD4HwzapV5TbkHF3HsEfiXl2KOzDt+q+
tSc6rSM9tjz/Lv19gRkCQQDwcPKb4HYBgZ41QxNB81y8QapZcAl0GtzCmgSrEo0E
uIzOYYKbwmQPEhpMFRT6GlNYVfZk+OfcVrRvMnpxP6JNAkEAw9sAqqxgxyUfdyIW
YBzjtb6KK/nIoO0kXaN0C1CjACwGeJpuq9ixs3yXMI5EYnKpJ57+NJ1BF3OfzxtN
ShC9qwJABsa4H6qAyOQVSFz+kvI/39Jd8a1Vpt8G77kVfpjEPqjQ1xQqcSdWWJJj
CVfiwnWxeaDak9fr+Oq8pRGgH8byVQJAX1jhtTUgFDMlY1kL7ZSC4rq1B32dx4JL
Pu7REqUaBX5pVBNSp4Rh1lBkRjYsYoURhoFnnfOkeadHeIsBEHqf6wJBAIEMzqbM
xFIxR6bUIvfDwDFcqcWWPscMPry0owF/bBq/WjdG7hIwCJnYsQAPxl1TlG5rIxVr
idoB0WG/BucOqgc=
-----END PRIVATE KEY-----
";

    #[test]
    fn digest_info_matches_rsa_crate() {
        // a PKCS#1 v1.5 signature made over our DigestInfo with the unprefixed scheme equals
        // the rsa crate's prefixed signature, for every hash
        let signer = SoftwareSigner::from_pkcs8_pem(TEST_KEY).expect("key");
        let SoftwareSigner::Rsa(key) = signer.clone() else {
            panic!("RSA key expected")
        };
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            let d = h.digest(b"abc");
            let ours = key
                .sign(
                    rsa::Pkcs1v15Sign::new_unprefixed(),
                    &digest_info(h, &d).expect("di"),
                )
                .expect("sign");
            let theirs = signer
                .sign_digest(SignatureScheme::RsaPkcs1v15(h), &d)
                .expect("sign");
            assert_eq!(ours, theirs, "{h:?}");
            let em = pkcs1v15_encode(h, &d, 128).expect("em");
            assert_eq!(em.len(), 128);
            assert_eq!(&em[..2], &[0, 1]);
        }
        assert!(digest_info(HashAlg::Sha256, &[0; 20]).is_err());
    }

    #[test]
    fn raw_to_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[32] = 0x00;
        raw[33] = 0x01; // s has a leading zero to strip
        let d = ecdsa_raw_to_der(&raw).expect("converts");
        assert_eq!(d[0], 0x30);
        assert_eq!(&d[2..5], &[0x02, 33, 0x00]);
        let s_off = 2 + 2 + 33;
        assert_eq!(&d[s_off..s_off + 3], &[0x02, 31, 0x01]);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }
}
