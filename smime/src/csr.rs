//! Certificate requests (PKCS#10) for S/MIME keys, built with `x509-cert`'s
//! [`RequestBuilder`] over a key that signs somewhere else (a token, through the agent):
//! the request is hashed here and only the digest goes to the key.
//!
//! What a CA issuing an S/MIME certificate needs is requested: the subject (default
//! `CN=<email>`), subjectAltName rfc822Name, keyUsage digitalSignature plus
//! keyEncipherment (RSA) or keyAgreement (EC), and extendedKeyUsage emailProtection.
//! The finished request is verified with the public key before it is returned, so a key
//! that signed with something else is caught here rather than at the CA.

use std::str::FromStr;

use der::asn1::{BitString, Ia5String};
use der::{Decode, Encode, EncodePem};
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SubjectPublicKeyInfoOwned,
};
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::request::CertReq;

use crate::alg::{HashAlg, KeyKind, SignatureScheme};
use crate::keys::PublicKey;

/// What went wrong making a request.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The subject is not an RFC 4514 distinguished name.
    #[error("subject {0:?} is not a distinguished name such as \"CN=Alice,O=Example\"")]
    Subject(String),
    /// The email address cannot be an rfc822Name.
    #[error("{0:?} is not an email address (an ASCII local@domain)")]
    Email(String),
    /// The key cannot make this signature, or its public key is unusable.
    #[error("{0}")]
    Key(String),
    /// The key refused or failed to sign.
    #[error("{0}")]
    Sign(String),
    /// Encoding failed.
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

/// The X.509 signatureAlgorithm of a scheme: `shaNNNWithRSAEncryption`, RSASSA-PSS with
/// RFC 4055 parameters, or `ecdsa-with-SHANNN`.
pub fn x509_signature_algorithm(
    scheme: SignatureScheme,
) -> Result<AlgorithmIdentifierOwned, der::Error> {
    use const_oid::db::rfc5912;
    match scheme {
        SignatureScheme::RsaPkcs1v15(h) => Ok(AlgorithmIdentifierOwned {
            oid: match h {
                HashAlg::Sha1 => rfc5912::SHA_1_WITH_RSA_ENCRYPTION,
                HashAlg::Sha256 => rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
                HashAlg::Sha384 => rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
                HashAlg::Sha512 => rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
            },
            parameters: Some(der::asn1::Any::null()),
        }),
        other => other.signer_info_algorithm(),
    }
}

/// The public key as the builder wants it.
#[derive(Clone, Debug)]
pub struct Spki(pub SubjectPublicKeyInfoOwned);

impl EncodePublicKey for Spki {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&self.0)?)
    }
}

/// A signature as raw bytes (RSA) or DER `Ecdsa-Sig-Value` (ECDSA).
#[derive(Clone, Debug)]
pub struct RawSignature(pub Vec<u8>);

impl spki::SignatureBitStringEncoding for RawSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

/// A key whose private half is elsewhere: `sign` gets the scheme and the digest of what
/// is to be signed, and returns the signature (ECDSA as DER).
pub struct DigestSigner<F> {
    spki: SubjectPublicKeyInfoOwned,
    scheme: SignatureScheme,
    sign: F,
}

impl<F> std::fmt::Debug for DigestSigner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestSigner")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl<F> DigestSigner<F>
where
    F: Fn(SignatureScheme, &[u8]) -> Result<Vec<u8>, String>,
{
    /// A signer for `spki` (DER) making `scheme` signatures through `sign`.
    pub fn new(spki_der: &[u8], scheme: SignatureScheme, sign: F) -> Result<Self, CsrError> {
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
            .map_err(|e| CsrError::Key(format!("the key's public key does not parse: {e}")))?;
        let kind = PublicKey::from_spki(&spki).map_err(CsrError::Key)?.kind();
        if !kind.supports(scheme) {
            return Err(CsrError::Key(format!(
                "a {kind:?} key cannot make {} signatures",
                scheme.name()
            )));
        }
        Ok(DigestSigner { spki, scheme, sign })
    }
}

impl<F> signature::Keypair for DigestSigner<F> {
    type VerifyingKey = Spki;
    fn verifying_key(&self) -> Spki {
        Spki(self.spki.clone())
    }
}

impl<F> DynSignatureAlgorithmIdentifier for DigestSigner<F> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(x509_signature_algorithm(self.scheme)?)
    }
}

impl<F> signature::Signer<RawSignature> for DigestSigner<F>
where
    F: Fn(SignatureScheme, &[u8]) -> Result<Vec<u8>, String>,
{
    fn try_sign(&self, msg: &[u8]) -> Result<RawSignature, signature::Error> {
        let digest = self.scheme.hash().digest(msg);
        (self.sign)(self.scheme, &digest)
            .map(RawSignature)
            .map_err(signature::Error::from_source)
    }
}

/// The request's subject: `subject` (RFC 4514) or `CN=<email>`.
fn subject_name(subject: Option<&str>, email: &str) -> Result<Name, CsrError> {
    match subject {
        Some(s) => Name::from_str(s).map_err(|_| CsrError::Subject(s.to_string())),
        None => Name::from_str(&format!("CN={}", escape_rdn_value(email)))
            .map_err(|_| CsrError::Email(email.to_string())),
    }
}

/// RFC 4514 escaping of an attribute value.
fn escape_rdn_value(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, '#' | ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Checks an address enough for an rfc822Name: ASCII, one `@`, both sides non-empty,
/// no spaces or control characters.
fn check_email(email: &str) -> Result<(), CsrError> {
    let ok = email.is_ascii()
        && email.chars().all(|c| c.is_ascii_graphic())
        && matches!(email.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(CsrError::Email(email.to_string()))
    }
}

/// Builds and signs a PKCS#10 request for an S/MIME certificate for `email`; returns
/// its DER, checked against the public key.
pub fn build<F>(
    signer: &DigestSigner<F>,
    email: &str,
    subject: Option<&str>,
) -> Result<Vec<u8>, CsrError>
where
    F: Fn(SignatureScheme, &[u8]) -> Result<Vec<u8>, String>,
{
    check_email(email)?;
    let enc = |e: &dyn std::fmt::Display| CsrError::Encode(e.to_string());
    let mut b = RequestBuilder::new(subject_name(subject, email)?).map_err(|e| enc(&e))?;
    let ia5 = Ia5String::new(email).map_err(|_| CsrError::Email(email.to_string()))?;
    b.add_extension(&SubjectAltName(vec![GeneralName::Rfc822Name(ia5)]))
        .map_err(|e| enc(&e))?;
    let kind = PublicKey::from_spki(&signer.spki)
        .map_err(CsrError::Key)?
        .kind();
    let usage = match kind {
        KeyKind::Rsa { .. } => KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
        _ => KeyUsages::DigitalSignature | KeyUsages::KeyAgreement,
    };
    b.add_extension(&KeyUsage(usage)).map_err(|e| enc(&e))?;
    b.add_extension(&ExtendedKeyUsage(vec![
        const_oid::db::rfc5280::ID_KP_EMAIL_PROTECTION,
    ]))
    .map_err(|e| enc(&e))?;
    let req: CertReq = b
        .build::<_, RawSignature>(signer)
        .map_err(|e| CsrError::Sign(format!("signing the request failed: {e}")))?;
    let der_bytes = req.to_der().map_err(|e| enc(&e))?;
    verify(&der_bytes)?;
    Ok(der_bytes)
}

/// Checks a request's signature with its own public key.
pub fn verify(der_bytes: &[u8]) -> Result<(), CsrError> {
    let req = CertReq::from_der(der_bytes).map_err(|e| CsrError::Encode(e.to_string()))?;
    let info = req
        .info
        .to_der()
        .map_err(|e| CsrError::Encode(e.to_string()))?;
    let key = PublicKey::from_spki(&req.info.public_key).map_err(CsrError::Key)?;
    let kind = crate::alg::classify_signature_alg(&req.algorithm).map_err(CsrError::Key)?;
    let (scheme, salt) = match kind {
        crate::alg::SigAlgKind::RsaPkcs1(Some(h)) => (SignatureScheme::RsaPkcs1v15(h), None),
        crate::alg::SigAlgKind::RsaPss(p) => (SignatureScheme::RsaPss(p.hash), Some(p.salt_len)),
        crate::alg::SigAlgKind::Ecdsa(Some(h)) => (SignatureScheme::Ecdsa(h), None),
        other => {
            return Err(CsrError::Key(format!(
                "unexpected signature algorithm {other:?}"
            )))
        }
    };
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| CsrError::Sign("the request's signature has unused bits".into()))?;
    key.verify_digest(scheme, salt, &scheme.hash().digest(&info), sig)
        .map_err(|_| {
            CsrError::Sign(
                "the token's signature does not verify with the key's public key: the request was not written"
                    .into(),
            )
        })
}

/// PEM (`CERTIFICATE REQUEST`) of a request's DER.
pub fn to_pem(der_bytes: &[u8]) -> Result<String, CsrError> {
    let req = CertReq::from_der(der_bytes).map_err(|e| CsrError::Encode(e.to_string()))?;
    req.to_pem(der::pem::LineEnding::LF)
        .map_err(|e| CsrError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_request_verifies_and_carries_the_email() {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .expect("spki")
            .into_vec();
        let signer = DigestSigner::new(&spki, SignatureScheme::Ecdsa(HashAlg::Sha256), |_, d| {
            let sig: p256::ecdsa::Signature = key.sign_prehash(d).map_err(|e| e.to_string())?;
            Ok(sig.to_der().as_bytes().to_vec())
        })
        .expect("signer");
        let der_bytes = build(&signer, "alice@example.com", None).expect("csr");
        verify(&der_bytes).expect("verifies");
        let pem = to_pem(&der_bytes).expect("pem");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let req = CertReq::from_der(&der_bytes).expect("parse");
        assert_eq!(req.info.subject.to_string(), "CN=alice@example.com");
        // a signer that signs with another key is caught
        let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).expect("key");
        let wrong = DigestSigner::new(&spki, SignatureScheme::Ecdsa(HashAlg::Sha256), |_, d| {
            let sig: p256::ecdsa::Signature = other.sign_prehash(d).map_err(|e| e.to_string())?;
            Ok(sig.to_der().as_bytes().to_vec())
        })
        .expect("signer");
        assert!(matches!(
            build(&wrong, "alice@example.com", None),
            Err(CsrError::Sign(_))
        ));
        assert!(matches!(
            build(&signer, "not an address", None),
            Err(CsrError::Email(_))
        ));
        assert!(matches!(
            build(&signer, "a@b", Some("no equals sign")),
            Err(CsrError::Subject(_))
        ));
    }
}
