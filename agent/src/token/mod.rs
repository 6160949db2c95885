//! The token layer: key stores (a PKCS#11 token, later a PIV card) and their keys.
//!
//! Every private-key operation goes through [`KeyStore`]; the agent never sees key
//! material. Calls block (a token is a device), so the server runs them on a blocking
//! thread pool.

use std::fmt;

use secrecy::SecretString;
use tokenmail_proto::v1::TokenStatus;
use tokenmail_smime::alg::{HashAlg, SignatureScheme};
use tokenmail_smime::envelope::{KeyTransport, OaepHash};
use zeroize::Zeroizing;

pub mod cert;
#[cfg(feature = "piv")]
pub mod hotplug;
pub mod oaep;
#[cfg(feature = "piv")]
pub mod piv;
pub mod pkcs11;
pub mod soft;

/// The public part of a key as a token reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent (big-endian).
    Rsa {
        /// Modulus.
        modulus: Vec<u8>,
        /// Public exponent.
        exponent: Vec<u8>,
    },
    /// EC P-256 point, SEC1 uncompressed.
    P256(Vec<u8>),
    /// EC P-384 point, SEC1 uncompressed.
    P384(Vec<u8>),
    /// Something we cannot use.
    Other(String),
}

impl PublicKey {
    /// `rsa-2048`, `ec-p256`, …
    pub fn algorithm_name(&self) -> String {
        match self {
            PublicKey::Rsa { modulus, .. } => format!("rsa-{}", rsa_bits(modulus)),
            PublicKey::P256(_) => "ec-p256".into(),
            PublicKey::P384(_) => "ec-p384".into(),
            PublicKey::Other(s) => s.clone(),
        }
    }

    /// The public key of a SubjectPublicKeyInfo (a certificate's, a card's).
    pub fn from_spki(spki: &spki::SubjectPublicKeyInfoOwned) -> PublicKey {
        use der::Decode;
        const RSA: const_oid::ObjectIdentifier = const_oid::db::rfc5912::RSA_ENCRYPTION;
        const EC: const_oid::ObjectIdentifier = const_oid::db::rfc5912::ID_EC_PUBLIC_KEY;
        const P256: const_oid::ObjectIdentifier = const_oid::db::rfc5912::SECP_256_R_1;
        const P384: const_oid::ObjectIdentifier = const_oid::db::rfc5912::SECP_384_R_1;
        let bits = spki.subject_public_key.raw_bytes();
        if spki.algorithm.oid == RSA {
            if let Ok(k) = rsa::pkcs1::RsaPublicKey::<der::asn1::UintRef<'_>>::from_der(bits) {
                let modulus: &[u8] = k.modulus.as_bytes();
                let exponent: &[u8] = k.public_exponent.as_bytes();
                return PublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent: exponent.to_vec(),
                };
            }
        } else if spki.algorithm.oid == EC {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
            if curve == Some(P256) {
                return PublicKey::P256(bits.to_vec());
            }
            if curve == Some(P384) {
                return PublicKey::P384(bits.to_vec());
            }
        }
        PublicKey::Other(format!("unsupported key {}", spki.algorithm.oid))
    }

    /// The public key of a certificate (DER); `None` when it does not parse.
    pub fn from_certificate(der_bytes: &[u8]) -> Option<PublicKey> {
        use der::Decode;
        let c = x509_cert::Certificate::from_der(der_bytes).ok()?;
        Some(PublicKey::from_spki(
            c.tbs_certificate().subject_public_key_info(),
        ))
    }

    /// Whether `other` is the same key (RSA integers compared without leading zeros).
    pub fn same_key(&self, other: &PublicKey) -> bool {
        match (self, other) {
            (
                PublicKey::Rsa {
                    modulus: m1,
                    exponent: e1,
                },
                PublicKey::Rsa {
                    modulus: m2,
                    exponent: e2,
                },
            ) => {
                strip_leading_zeros(m1) == strip_leading_zeros(m2)
                    && strip_leading_zeros(e1) == strip_leading_zeros(e2)
            }
            (PublicKey::P256(a), PublicKey::P256(b)) | (PublicKey::P384(a), PublicKey::P384(b)) => {
                !a.is_empty() && a == b
            }
            _ => false,
        }
    }

    /// The SubjectPublicKeyInfo, DER (what a CSR and a certificate carry).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, TokenError> {
        use der::asn1::{Any, BitString, UintRef};
        use der::Encode;
        let bad =
            |e: der::Error| TokenError::KeyMismatch(format!("cannot encode the public key: {e}"));
        let (algorithm, bits) = match self {
            PublicKey::Rsa { modulus, exponent } => {
                let k = rsa::pkcs1::RsaPublicKey {
                    modulus: UintRef::new(strip_leading_zeros(modulus)).map_err(bad)?,
                    public_exponent: UintRef::new(strip_leading_zeros(exponent)).map_err(bad)?,
                };
                (
                    spki::AlgorithmIdentifierOwned {
                        oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
                        parameters: Some(Any::null()),
                    },
                    k.to_der().map_err(bad)?,
                )
            }
            PublicKey::P256(point) | PublicKey::P384(point) => {
                let curve = if matches!(self, PublicKey::P256(_)) {
                    const_oid::db::rfc5912::SECP_256_R_1
                } else {
                    const_oid::db::rfc5912::SECP_384_R_1
                };
                (
                    spki::AlgorithmIdentifierOwned {
                        oid: const_oid::db::rfc5912::ID_EC_PUBLIC_KEY,
                        parameters: Some(Any::encode_from(&curve).map_err(bad)?),
                    },
                    point.clone(),
                )
            }
            PublicKey::Other(what) => {
                return Err(TokenError::KeyMismatch(format!(
                    "cannot use a {what} public key"
                )))
            }
        };
        spki::SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key: BitString::from_bytes(&bits).map_err(bad)?,
        }
        .to_der()
        .map_err(bad)
    }

    /// RSA modulus length in bytes.
    pub fn rsa_len(&self) -> Option<usize> {
        match self {
            PublicKey::Rsa { modulus, .. } => Some(rsa_bits(modulus).div_ceil(8)),
            _ => None,
        }
    }
}

pub(crate) fn rsa_bits(modulus: &[u8]) -> usize {
    let m = strip_leading_zeros(modulus);
    match m.first() {
        Some(b) => m.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    }
}

pub(crate) fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count();
    &b[n..]
}

/// Checks a signing request before it reaches a token: the digest has the hash's
/// length and the key's kind can make this family of signatures.
pub(crate) fn check_sign(
    key: &KeyEntry,
    scheme: SignatureScheme,
    digest: &[u8],
) -> Result<(), TokenError> {
    let hash = scheme.hash();
    if hash == HashAlg::Sha1 {
        return Err(TokenError::Mechanism(
            "SHA-1 signatures are not made; use SHA-256 or stronger".into(),
        ));
    }
    if digest.len() != hash.output_len() {
        return Err(TokenError::Invalid(format!(
            "{} needs a {}-byte digest, got {} bytes",
            scheme.name(),
            hash.output_len(),
            digest.len()
        )));
    }
    match (&key.public, scheme) {
        (PublicKey::Rsa { .. }, SignatureScheme::RsaPkcs1v15(_) | SignatureScheme::RsaPss(_)) => {
            Ok(())
        }
        (PublicKey::P256(_) | PublicKey::P384(_), SignatureScheme::Ecdsa(_)) => Ok(()),
        _ => Err(TokenError::KeyMismatch(format!(
            "key {:?} is {}, which cannot make {} signatures",
            key.label,
            key.public.algorithm_name(),
            scheme.name()
        ))),
    }
}

/// Checks that `key` can unwrap an RSA-encrypted key; returns the modulus length.
pub(crate) fn check_rsa_decrypt(key: &KeyEntry) -> Result<usize, TokenError> {
    key.public.rsa_len().ok_or_else(|| {
        TokenError::KeyMismatch(format!(
            "key {:?} is {}, not RSA: it cannot unwrap an RSA-encrypted key",
            key.label,
            key.public.algorithm_name()
        ))
    })
}

/// The RSASSA-PKCS1-v1_5 scheme (DigestInfo prefix) for a hash.
#[cfg(feature = "piv")]
pub(crate) fn pkcs1v15_scheme(h: HashAlg) -> rsa::pkcs1v15::Pkcs1v15Sign {
    use rsa::pkcs1v15::Pkcs1v15Sign;
    match h {
        HashAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        HashAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        HashAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        HashAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

/// The OAEP hash of a key transport; `None` for RSA PKCS#1 v1.5.
pub(crate) fn oaep_hash(alg: KeyTransport) -> Result<Option<HashAlg>, TokenError> {
    match alg {
        KeyTransport::RsaPkcs1v15 => Ok(None),
        KeyTransport::RsaOaep { hash } => Ok(Some(match hash {
            OaepHash::Sha1 => HashAlg::Sha1,
            OaepHash::Sha256 => HashAlg::Sha256,
            OaepHash::Sha384 => HashAlg::Sha384,
            OaepHash::Sha512 => HashAlg::Sha512,
            #[allow(unreachable_patterns)]
            other => return Err(TokenError::Mechanism(format!("RSA-OAEP with {other:?}"))),
        })),
        #[allow(unreachable_patterns)]
        other => Err(TokenError::Mechanism(format!("{other:?}"))),
    }
}

/// A raw `r || s` ECDSA signature (what `CKM_ECDSA` returns) as DER, checked to be one of
/// `public`'s curve.
pub(crate) fn ecdsa_der(public: &PublicKey, raw: &[u8]) -> Result<Vec<u8>, TokenError> {
    let field = match public {
        PublicKey::P256(_) => 32,
        PublicKey::P384(_) => 48,
        _ => 0,
    };
    if raw.len() != 2 * field {
        return Err(TokenError::KeyMismatch(
            "the token returned a malformed ECDSA signature".into(),
        ));
    }
    tokenmail_smime::signed::ecdsa_raw_to_der(raw).map_err(|_| {
        TokenError::KeyMismatch("the token returned a malformed ECDSA signature".into())
    })
}

/// Checks an ECDH request before it reaches a token: the key is EC and the peer point
/// is an uncompressed SEC1 point on its curve. Returns the field length in bytes.
pub(crate) fn check_ecdh(key: &KeyEntry, peer_point: &[u8]) -> Result<usize, TokenError> {
    let field = match key.public {
        PublicKey::P256(_) => 32,
        PublicKey::P384(_) => 48,
        _ => {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is {}, not EC: it cannot do ECDH",
                key.label,
                key.public.algorithm_name()
            )))
        }
    };
    let on_curve = match field {
        32 => p256::PublicKey::from_sec1_bytes(peer_point).is_ok(),
        _ => p384::PublicKey::from_sec1_bytes(peer_point).is_ok(),
    };
    if peer_point.len() != 1 + 2 * field || peer_point.first() != Some(&0x04) || !on_curve {
        return Err(TokenError::Invalid(format!(
            "the peer point must be an uncompressed SEC1 point of {} bytes on the key's curve",
            1 + 2 * field
        )));
    }
    Ok(field)
}

/// A key on a token, with the certificate object that shares its CKA_ID.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID.
    pub id: Vec<u8>,
    /// Public key.
    pub public: PublicKey,
    /// CKA_SIGN.
    pub can_sign: bool,
    /// CKA_DECRYPT.
    pub can_decrypt: bool,
    /// CKA_DERIVE.
    pub can_derive: bool,
    /// The certificate's DER, if the token has one with the same CKA_ID.
    pub certificate: Option<Vec<u8>>,
    /// CA certificates on the token that chain the certificate toward its root
    /// (issuer first), for inclusion in signatures.
    pub chain: Vec<Vec<u8>>,
    /// Touch policy (`never`, `always`, `cached`) where the token has one (PIV).
    pub touch: Option<String>,
    /// PIN policy (`never`, `once`, `always`) where the token has one (PIV).
    pub pin_policy: Option<String>,
    /// The token reports the private key extractable or not sensitive (PKCS#11).
    pub exportable: bool,
}

/// Token-layer errors. The `op` says what the agent was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Module {
        /// Module path.
        module: String,
        /// Why.
        reason: String,
    },
    /// The token is absent.
    #[error("token {0:?} is not present: insert it (or check the module and label)")]
    NotPresent(String),
    /// The PKCS#11 module has tokens, but none with the configured label or serial: a
    /// wrong `--token-label`, most likely. Lists the labels the module has.
    #[error("token {token:?} is not in the PKCS#11 module {module}, which has {}: check --token-label (or the [[token]] label)", label_list(.labels))]
    NotInModule {
        /// The configured token (label, or `serial:…`).
        token: String,
        /// The module path.
        module: String,
        /// The labels of the initialised tokens the module has.
        labels: Vec<String>,
    },
    /// A smart card is absent (PIV): names the card to insert.
    #[error("insert {0}: it is not in any reader")]
    CardAbsent(String),
    /// PC/SC trouble that is not the card's absence (daemon down, card held elsewhere).
    #[error("{0}")]
    Pcsc(String),
    /// A PIV card operation failed.
    #[error("{op}: {reason}")]
    Piv {
        /// What we were doing.
        op: &'static str,
        /// The card's or the driver's reason.
        reason: String,
    },
    /// Internal: the card was reset under us; the operation is retried once.
    #[error("the card was reset by another program; try again")]
    Retry,
    /// The token needs a PIN and none is cached.
    #[error("{}", tokenmail_proto::pin_required_message(.0))]
    PinRequired(String),
    /// The token needs a PIN: its unattended source (a PIN file, an environment variable)
    /// was refused once and is not used again until `tokenmail login`.
    #[error("{} (the PIN from its {origin} was refused{hint}; it is not tried again until then)", tokenmail_proto::pin_required_message(.token))]
    PinSourceRefused {
        /// Token label.
        token: String,
        /// `PIN file /path` or `environment variable NAME`.
        origin: String,
        /// What the token said about remaining tries (`, one try left ...` or empty).
        hint: String,
        /// Tries left, when the token says.
        tries_left: Option<u32>,
    },
    /// The last PIN was wrong.
    #[error("wrong PIN for token {token:?}{hint}")]
    PinIncorrect {
        /// Token label.
        token: String,
        /// What the token says about remaining tries.
        hint: String,
        /// Tries left, when the token says.
        tries_left: Option<u32>,
    },
    /// The PIN is blocked.
    #[error("the PIN of token {0:?} is blocked: unblock it with the SO PIN / PUK")]
    PinLocked(String),
    /// No such key.
    #[error("no key {0:?} on the token")]
    NoSuchKey(String),
    /// The key cannot do this.
    #[error("{0}")]
    KeyMismatch(String),
    /// The request itself is wrong (digest length, point not on the curve, empty PIN).
    #[error("{0}")]
    Invalid(String),
    /// The unattended PIN source cannot be read.
    #[error("{0}")]
    PinSource(String),
    /// The token lacks the mechanism.
    #[error("the token does not support {0}")]
    Mechanism(String),
    /// The token is write-protected: nothing can be stored on it.
    #[error("token {0:?} is read-only: keys and certificates cannot be stored on it")]
    ReadOnly(String),
    /// Decryption failed. Deliberately uninformative.
    #[error("decryption failed")]
    DecryptFailed,
    /// A PKCS#11 call failed.
    #[error("{op}: {source}")]
    Pkcs11 {
        /// What we were doing.
        op: &'static str,
        /// The cryptoki error.
        #[source]
        source: cryptoki::error::Error,
    },
}

/// The algorithm of a key to generate (`keygen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA with this many bits (2048, 3072, 4096).
    Rsa(u32),
    /// ECDSA/ECDH on P-256.
    P256,
    /// ECDSA/ECDH on P-384.
    P384,
}

impl KeyAlgorithm {
    /// `rsa2048`, `rsa3072`, `rsa4096`, `p256`, `p384` (also `rsa-2048`, `ec-p256`).
    pub fn parse(s: &str) -> Result<KeyAlgorithm, TokenError> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "rsa2048" => Ok(KeyAlgorithm::Rsa(2048)),
            "rsa3072" => Ok(KeyAlgorithm::Rsa(3072)),
            "rsa4096" => Ok(KeyAlgorithm::Rsa(4096)),
            "p256" | "ecp256" | "eccp256" => Ok(KeyAlgorithm::P256),
            "p384" | "ecp384" | "eccp384" => Ok(KeyAlgorithm::P384),
            _ => Err(TokenError::Invalid(format!(
                "algorithm {s:?}: use rsa2048, rsa3072, rsa4096, p256 or p384"
            ))),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> String {
        match self {
            KeyAlgorithm::Rsa(bits) => format!("rsa{bits}"),
            KeyAlgorithm::P256 => "p256".into(),
            KeyAlgorithm::P384 => "p384".into(),
        }
    }
}

/// A private key to create on a token (`import-key`). The secret parts are wiped on drop.
pub enum PrivateKeyParts {
    /// RSA: the PKCS#1 integers, big-endian without leading zeros.
    Rsa {
        /// n.
        modulus: Vec<u8>,
        /// e.
        public_exponent: Vec<u8>,
        /// d.
        private_exponent: Zeroizing<Vec<u8>>,
        /// p.
        prime1: Zeroizing<Vec<u8>>,
        /// q.
        prime2: Zeroizing<Vec<u8>>,
        /// d mod (p-1).
        exponent1: Zeroizing<Vec<u8>>,
        /// d mod (q-1).
        exponent2: Zeroizing<Vec<u8>>,
        /// q^-1 mod p.
        coefficient: Zeroizing<Vec<u8>>,
    },
    /// EC: the curve, the scalar and the public point (SEC1 uncompressed).
    Ec {
        /// P256 or P384.
        curve: KeyAlgorithm,
        /// The private scalar, big-endian, field length.
        scalar: Zeroizing<Vec<u8>>,
        /// The public point.
        point: Vec<u8>,
    },
}

/// Never prints key material.
impl fmt::Debug for PrivateKeyParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivateKeyParts::Rsa { modulus, .. } => {
                write!(f, "PrivateKeyParts::Rsa({} bits)", rsa_bits(modulus))
            }
            PrivateKeyParts::Ec { curve, .. } => write!(f, "PrivateKeyParts::Ec({curve:?})"),
        }
    }
}

impl PrivateKeyParts {
    /// Reads a PKCS#8 PrivateKeyInfo (RSA, or EC on P-256 / P-384), checking it.
    pub fn from_pkcs8(der_bytes: &[u8]) -> Result<PrivateKeyParts, TokenError> {
        use der::Decode;
        use rsa::pkcs8::DecodePrivateKey;
        let bad = |what: String| TokenError::Invalid(format!("the private key: {what}"));
        let info = rsa::pkcs8::PrivateKeyInfoRef::from_der(der_bytes)
            .map_err(|e| bad(format!("not PKCS#8 ({e})")))?;
        let oid = info.algorithm.oid;
        if oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
            // checked as a whole (n = p·q, exponents consistent) before any part is used
            rsa::RsaPrivateKey::from_pkcs8_der(der_bytes)
                .map_err(|e| bad(format!("not a valid RSA key ({e})")))?;
            let k = rsa::pkcs1::RsaPrivateKey::<der::asn1::UintRef<'_>>::from_der(
                info.private_key.as_bytes(),
            )
            .map_err(|e| bad(format!("RSA key ({e})")))?;
            let z = |u: der::asn1::UintRef<'_>| Zeroizing::new(u.as_bytes().to_vec());
            return Ok(PrivateKeyParts::Rsa {
                modulus: k.modulus.as_bytes().to_vec(),
                public_exponent: k.public_exponent.as_bytes().to_vec(),
                private_exponent: z(k.private_exponent),
                prime1: z(k.prime1),
                prime2: z(k.prime2),
                exponent1: z(k.exponent1),
                exponent2: z(k.exponent2),
                coefficient: z(k.coefficient),
            });
        }
        if oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
            if let Ok(k) = p256::SecretKey::from_pkcs8_der(der_bytes) {
                use p256::elliptic_curve::sec1::ToSec1Point;
                return Ok(PrivateKeyParts::Ec {
                    curve: KeyAlgorithm::P256,
                    scalar: Zeroizing::new(k.to_bytes().to_vec()),
                    point: k.public_key().to_sec1_point(false).as_bytes().to_vec(),
                });
            }
            if let Ok(k) = p384::SecretKey::from_pkcs8_der(der_bytes) {
                use p384::elliptic_curve::sec1::ToSec1Point;
                return Ok(PrivateKeyParts::Ec {
                    curve: KeyAlgorithm::P384,
                    scalar: Zeroizing::new(k.to_bytes().to_vec()),
                    point: k.public_key().to_sec1_point(false).as_bytes().to_vec(),
                });
            }
            return Err(bad("an EC key on a curve other than P-256 or P-384".into()));
        }
        Err(bad(format!("unsupported algorithm {oid}")))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKeyParts::Rsa {
                modulus,
                public_exponent,
                ..
            } => PublicKey::Rsa {
                modulus: modulus.clone(),
                exponent: public_exponent.clone(),
            },
            PrivateKeyParts::Ec {
                curve: KeyAlgorithm::P384,
                point,
                ..
            } => PublicKey::P384(point.clone()),
            PrivateKeyParts::Ec { point, .. } => PublicKey::P256(point.clone()),
        }
    }
}

/// A source of keys: one token.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The token's label as configured (stable even while the token is absent).
    fn name(&self) -> &str;
    /// Presence, login state, PIN source.
    fn status(&self) -> TokenStatus;
    /// The keys with their certificates. Connects (and logs in, if a PIN is cached) as needed.
    fn keys(&self) -> Result<Vec<KeyEntry>, TokenError>;
    /// Logs in with `pin`, or with the configured unattended source when `None`.
    fn login(&self, pin: Option<SecretString>) -> Result<(), TokenError>;
    /// Logs out and forgets the cached PIN; unattended sources are not read again until `login`.
    fn lock(&self);
    /// SIGHUP (suspend): closes sessions / releases the card and forgets a PIN typed by
    /// the user; an unattended source (file, variable) is read again at the next use.
    fn release(&self);
    /// Forgets a PIN whose cache time ran out (logs out). Called periodically.
    fn expire_pin(&self);
    /// Signs a digest with the key `id`. ECDSA signatures come back DER-encoded.
    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError>;
    /// Decrypts a wrapped content key with the RSA key `id`.
    fn decrypt(
        &self,
        id: &[u8],
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TokenError>;
    /// ECDH with the EC key `id`: the raw shared secret.
    fn derive(&self, id: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError>;
    /// Checks that the token is really there, beyond what is cached: `NotPresent` when it
    /// went away. Either way the cached key list is dropped, so the next `keys` reads the
    /// token again. For failure paths only (a key that is not in the key list): some
    /// modules keep sessions valid and answer from stale state after their token is
    /// deleted (SoftHSM). Default: nothing to check.
    fn check_present(&self) -> Result<(), TokenError> {
        Ok(())
    }
    /// The PIV administration of this token, if it is a PIV card.
    fn piv(&self) -> Option<&dyn PivAdmin> {
        None
    }
    /// Records a change made to this token outside the operations of this trait (PIV card
    /// administration through [`KeyStore::piv`]) in the audit log, where one is kept.
    /// Default: nothing (only the audited view of a connection keeps a log).
    fn audit_admin(&self, op: &str, id: &[u8], label: Option<&str>, result: Result<(), String>) {
        let _ = (op, id, label, result);
    }
    /// Generates a key pair on the token under `label` (and `id`, else a fresh one):
    /// private half sensitive, never extractable, private; refuses a label or id in use.
    fn generate_key(
        &self,
        label: &str,
        alg: KeyAlgorithm,
        id: Option<&[u8]>,
    ) -> Result<KeyEntry, TokenError> {
        let _ = (label, alg, id);
        Err(TokenError::Mechanism(format!(
            "key generation on {} through this command",
            self.name()
        )))
    }
    /// Stores `certificate` beside `key` (same id; the caller checked the public key) and
    /// the CA certificates of `chain`. Returns notes for the user.
    fn store_certificate(
        &self,
        key: &KeyEntry,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<Vec<String>, TokenError> {
        let _ = (key, certificate, chain);
        Err(TokenError::Mechanism(format!(
            "certificate import on {} through this command",
            self.name()
        )))
    }
    /// Creates a private key (with its public half, certificate and chain) on the token:
    /// sensitive and never extractable there. Refuses a label or id in use.
    fn create_key(
        &self,
        label: &str,
        id: Option<&[u8]>,
        key: &PrivateKeyParts,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<KeyEntry, TokenError> {
        let _ = (label, id, key, certificate, chain);
        Err(TokenError::Mechanism(format!(
            "key import on {} through this command",
            self.name()
        )))
    }
}

/// A `piv keygen` request.
pub struct PivKeygen {
    /// Slot byte (9a, 9c, 9d, 9e, 82..95).
    pub slot: u8,
    /// `rsa2048`, `p256`, `p384`.
    pub algorithm: String,
    /// `default`, `never`, `once`, `always`.
    pub pin_policy: Option<String>,
    /// `default`, `never`, `always`, `cached`.
    pub touch_policy: Option<String>,
    /// The management key; `None` = PIN-protected key, else the factory default (warned).
    pub management_key: Option<Zeroizing<Vec<u8>>>,
}

/// Never prints the management key (a secret), only whether one was given.
impl fmt::Debug for PivKeygen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PivKeygen")
            .field("slot", &self.slot)
            .field("algorithm", &self.algorithm)
            .field("pin_policy", &self.pin_policy)
            .field("touch_policy", &self.touch_policy)
            .field(
                "management_key",
                &self.management_key.as_ref().map(|_| "(given)"),
            )
            .finish()
    }
}

/// Card administration of a PIV token (`tokenmail piv …`).
pub trait PivAdmin {
    /// Serial, version, reader, tries left, default credentials, slots.
    fn piv_status(&self) -> Result<tokenmail_proto::v1::PivStatus, TokenError>;
    /// Generates a key in a slot on the card; returns its SubjectPublicKeyInfo (DER)
    /// and warnings for the user.
    fn piv_keygen(&self, req: &PivKeygen) -> Result<(Vec<u8>, Vec<String>), TokenError>;
    /// Writes a certificate into a slot (checked against the slot's key when the card
    /// tells it); returns warnings.
    fn piv_import_cert(
        &self,
        slot: u8,
        der: &[u8],
        management_key: Option<&[u8]>,
    ) -> Result<Vec<String>, TokenError>;
    /// Imports an escrowed private key and its certificate into a retired key-management
    /// slot (82..95); returns warnings.
    fn piv_import_key(
        &self,
        slot: u8,
        key: &PrivateKeyParts,
        certificate: &[u8],
        management_key: Option<&[u8]>,
    ) -> Result<Vec<String>, TokenError>;
}

/// `"a", "b"` for [`TokenError::NotInModule`].
fn label_list(labels: &[String]) -> String {
    let quoted: Vec<String> = labels.iter().map(|l| format!("{l:?}")).collect();
    match quoted.len() {
        1 => format!("one token, {}", quoted[0]),
        n => format!("{n} tokens: {}", quoted.join(", ")),
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn piv_keygen_debug_never_prints_the_management_key() {
        let req = PivKeygen {
            slot: 0x9c,
            algorithm: "p256".into(),
            pin_policy: None,
            touch_policy: None,
            management_key: Some(Zeroizing::new(vec![0xAB; 24])),
        };
        let text = format!("{req:?}");
        assert!(text.contains("(given)"), "{text}");
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("ab, "),
            "{text}"
        );
    }
}
