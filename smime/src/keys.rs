//! Public keys: parse a SubjectPublicKeyInfo and verify a signature over a precomputed digest.

use crate::alg::{oid, HashAlg, KeyKind, SignatureScheme};
use der::{Decode, Encode};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};
use signature::hazmat::PrehashVerifier;
use spki::SubjectPublicKeyInfoOwned;

/// A parsed public key.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// RSA
    Rsa(RsaPublicKey),
    /// P-256
    P256(p256::ecdsa::VerifyingKey),
    /// P-384
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Parse a SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, String> {
        if spki.algorithm.oid == oid::RSA_ENCRYPTION || spki.algorithm.oid == oid::RSASSA_PSS {
            // decode PKCS#1 from the bit string (works for rsaEncryption and id-RSASSA-PSS keys)
            let bits = spki
                .subject_public_key
                .as_bytes()
                .ok_or("RSA key bit string has unused bits")?;
            let k = <RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(bits)
                .map_err(|e| format!("bad RSA public key: {e}"))?;
            return Ok(PublicKey::Rsa(k));
        }
        if spki.algorithm.oid == oid::EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .ok_or("EC key without curve parameter")?
                .to_der()
                .map_err(|e| e.to_string())?;
            let curve = der::asn1::ObjectIdentifier::from_der(&curve)
                .map_err(|_| "EC key with explicit curve parameters is not supported")?;
            let point = spki
                .subject_public_key
                .as_bytes()
                .ok_or("EC point bit string has unused bits")?;
            if curve == oid::SECP256R1 {
                return p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map(PublicKey::P256)
                    .map_err(|e| format!("bad P-256 point: {e}"));
            }
            if curve == oid::SECP384R1 {
                return p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map(PublicKey::P384)
                    .map_err(|e| format!("bad P-384 point: {e}"));
            }
            return Err(format!("EC curve {curve} is not supported"));
        }
        Err(format!(
            "public key algorithm {} is not supported",
            spki.algorithm.oid
        ))
    }

    /// The key kind.
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa(k) => KeyKind::Rsa { bits: k.size() * 8 },
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::P384(_) => KeyKind::P384,
        }
    }

    /// RSA modulus bits (exact), if RSA.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            PublicKey::Rsa(k) => Some(k.n().bit_width() as usize),
            _ => None,
        }
    }

    /// Verify `sig` over the precomputed `digest` with `scheme`; for PSS, `salt_len` overrides
    /// the default (hash length).
    pub fn verify_digest(
        &self,
        scheme: SignatureScheme,
        salt_len: Option<usize>,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<(), String> {
        if digest.len() != scheme.hash().output_len() {
            return Err("digest length does not match its algorithm".into());
        }
        fn bad<E>(_: E) -> String {
            "signature does not verify".to_string()
        }
        match (self, scheme) {
            (PublicKey::Rsa(k), SignatureScheme::RsaPkcs1v15(h)) => {
                let pad = match h {
                    HashAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
                    HashAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
                    HashAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
                    HashAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
                };
                k.verify(pad, digest, sig).map_err(bad)
            }
            (PublicKey::Rsa(k), SignatureScheme::RsaPss(h)) => {
                let s = salt_len.unwrap_or(h.output_len());
                match h {
                    HashAlg::Sha1 => k.verify(Pss::<sha1::Sha1>::new_with_salt(s), digest, sig),
                    HashAlg::Sha256 => k.verify(Pss::<sha2::Sha256>::new_with_salt(s), digest, sig),
                    HashAlg::Sha384 => k.verify(Pss::<sha2::Sha384>::new_with_salt(s), digest, sig),
                    HashAlg::Sha512 => k.verify(Pss::<sha2::Sha512>::new_with_salt(s), digest, sig),
                }
                .map_err(bad)
            }
            (PublicKey::P256(k), SignatureScheme::Ecdsa(_)) => {
                let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| {
                    "ECDSA signature is not a valid DER Ecdsa-Sig-Value".to_string()
                })?;
                k.verify_prehash(digest, &s).map_err(bad)
            }
            (PublicKey::P384(k), SignatureScheme::Ecdsa(_)) => {
                let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| {
                    "ECDSA signature is not a valid DER Ecdsa-Sig-Value".to_string()
                })?;
                k.verify_prehash(digest, &s).map_err(bad)
            }
            (k, s) => Err(format!(
                "signature scheme {} does not fit a {:?} key",
                s.name(),
                k.kind()
            )),
        }
    }
}
