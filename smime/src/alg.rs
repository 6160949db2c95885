//! Algorithms: digests, signature schemes, key kinds, their CMS/X.509 identifiers,
//! and the streaming content hasher.

use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, ObjectIdentifier as Oid};
use der::{Any, Decode, Encode, Sequence};
use serde::Serialize;
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;

/// Object identifiers used by this crate.
pub mod oid {
    use const_oid::ObjectIdentifier as O;

    /// id-data
    pub const ID_DATA: O = O::new_unwrap("1.2.840.113549.1.7.1");
    /// id-signedData
    pub const ID_SIGNED_DATA: O = O::new_unwrap("1.2.840.113549.1.7.2");
    /// contentType attribute
    pub const ATTR_CONTENT_TYPE: O = O::new_unwrap("1.2.840.113549.1.9.3");
    /// messageDigest attribute
    pub const ATTR_MESSAGE_DIGEST: O = O::new_unwrap("1.2.840.113549.1.9.4");
    /// signingTime attribute
    pub const ATTR_SIGNING_TIME: O = O::new_unwrap("1.2.840.113549.1.9.5");
    /// smimeCapabilities attribute
    pub const ATTR_SMIME_CAPABILITIES: O = O::new_unwrap("1.2.840.113549.1.9.15");
    /// ESS signingCertificateV2 attribute (RFC 5035)
    pub const ATTR_SIGNING_CERTIFICATE_V2: O = O::new_unwrap("1.2.840.113549.1.9.16.2.47");
    /// ESS signingCertificate attribute (RFC 2634, SHA-1)
    pub const ATTR_SIGNING_CERTIFICATE: O = O::new_unwrap("1.2.840.113549.1.9.16.2.12");

    /// MD5
    pub const MD5: O = O::new_unwrap("1.2.840.113549.2.5");
    /// SHA-1
    pub const SHA1: O = O::new_unwrap("1.3.14.3.2.26");
    /// SHA-256
    pub const SHA256: O = O::new_unwrap("2.16.840.1.101.3.4.2.1");
    /// SHA-384
    pub const SHA384: O = O::new_unwrap("2.16.840.1.101.3.4.2.2");
    /// SHA-512
    pub const SHA512: O = O::new_unwrap("2.16.840.1.101.3.4.2.3");

    /// rsaEncryption
    pub const RSA_ENCRYPTION: O = O::new_unwrap("1.2.840.113549.1.1.1");
    /// md5WithRSAEncryption
    pub const MD5_WITH_RSA: O = O::new_unwrap("1.2.840.113549.1.1.4");
    /// sha1WithRSAEncryption
    pub const SHA1_WITH_RSA: O = O::new_unwrap("1.2.840.113549.1.1.5");
    /// sha256WithRSAEncryption
    pub const SHA256_WITH_RSA: O = O::new_unwrap("1.2.840.113549.1.1.11");
    /// sha384WithRSAEncryption
    pub const SHA384_WITH_RSA: O = O::new_unwrap("1.2.840.113549.1.1.12");
    /// sha512WithRSAEncryption
    pub const SHA512_WITH_RSA: O = O::new_unwrap("1.2.840.113549.1.1.13");
    /// id-RSASSA-PSS
    pub const RSASSA_PSS: O = O::new_unwrap("1.2.840.113549.1.1.10");
    /// id-mgf1
    pub const MGF1: O = O::new_unwrap("1.2.840.113549.1.1.8");
    /// id-RSAES-OAEP
    pub const RSAES_OAEP: O = O::new_unwrap("1.2.840.113549.1.1.7");

    /// id-ecPublicKey
    pub const EC_PUBLIC_KEY: O = O::new_unwrap("1.2.840.10045.2.1");
    /// secp256r1
    pub const SECP256R1: O = O::new_unwrap("1.2.840.10045.3.1.7");
    /// secp384r1
    pub const SECP384R1: O = O::new_unwrap("1.3.132.0.34");
    /// ecdsa-with-SHA1
    pub const ECDSA_SHA1: O = O::new_unwrap("1.2.840.10045.4.1");
    /// ecdsa-with-SHA256
    pub const ECDSA_SHA256: O = O::new_unwrap("1.2.840.10045.4.3.2");
    /// ecdsa-with-SHA384
    pub const ECDSA_SHA384: O = O::new_unwrap("1.2.840.10045.4.3.3");
    /// ecdsa-with-SHA512
    pub const ECDSA_SHA512: O = O::new_unwrap("1.2.840.10045.4.3.4");

    /// AES-128-CBC
    pub const AES128_CBC: O = O::new_unwrap("2.16.840.1.101.3.4.1.2");
    /// AES-256-CBC
    pub const AES256_CBC: O = O::new_unwrap("2.16.840.1.101.3.4.1.42");
    /// AES-128-GCM
    pub const AES128_GCM: O = O::new_unwrap("2.16.840.1.101.3.4.1.6");
    /// AES-256-GCM
    pub const AES256_GCM: O = O::new_unwrap("2.16.840.1.101.3.4.1.46");

    /// id-kp-emailProtection
    pub const KP_EMAIL_PROTECTION: O = O::new_unwrap("1.3.6.1.5.5.7.3.4");
    /// anyExtendedKeyUsage
    pub const ANY_EKU: O = O::new_unwrap("2.5.29.37.0");
    /// id-kp-timeStamping (RFC 3161)
    pub const KP_TIME_STAMPING: O = O::new_unwrap("1.3.6.1.5.5.7.3.8");
    /// id-ct-TSTInfo (RFC 3161)
    pub const ID_CT_TSTINFO: O = O::new_unwrap("1.2.840.113549.1.9.16.1.4");
    /// id-ct-receipt (RFC 2634)
    pub const ID_CT_RECEIPT: O = O::new_unwrap("1.2.840.113549.1.9.16.1.1");
    /// id-aa-receiptRequest (RFC 2634)
    pub const ATTR_RECEIPT_REQUEST: O = O::new_unwrap("1.2.840.113549.1.9.16.2.1");
    /// id-aa-securityLabel (RFC 2634)
    pub const ATTR_SECURITY_LABEL: O = O::new_unwrap("1.2.840.113549.1.9.16.2.2");
    /// id-aa-msgSigDigest (RFC 2634)
    pub const ATTR_MSG_SIG_DIGEST: O = O::new_unwrap("1.2.840.113549.1.9.16.2.5");
    /// id-aa-signatureTimeStampToken (RFC 3161 Appendix A), an unsigned attribute
    pub const ATTR_TIMESTAMP_TOKEN: O = O::new_unwrap("1.2.840.113549.1.9.16.2.14");
    /// PKCS#9 emailAddress (in subject names)
    pub const EMAIL_ADDRESS: O = O::new_unwrap("1.2.840.113549.1.9.1");
}

/// A message digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum HashAlg {
    /// SHA-1: accepted only when verifying, and only when the policy allows it.
    Sha1,
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl HashAlg {
    /// The digest's OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            HashAlg::Sha1 => oid::SHA1,
            HashAlg::Sha256 => oid::SHA256,
            HashAlg::Sha384 => oid::SHA384,
            HashAlg::Sha512 => oid::SHA512,
        }
    }

    /// From a digest OID.
    pub fn from_oid(o: &ObjectIdentifier) -> Option<Self> {
        [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ]
        .into_iter()
        .find(|h| h.oid() == *o)
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The `micalg` name of RFC 5751 (`sha-256`...).
    pub fn micalg(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha-1",
            HashAlg::Sha256 => "sha-256",
            HashAlg::Sha384 => "sha-384",
            HashAlg::Sha512 => "sha-512",
        }
    }

    /// From a `micalg` name (`sha-256`, also `sha256`), case-insensitive.
    pub fn from_micalg(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase().replace('-', "");
        match n.as_str() {
            "sha1" => Some(HashAlg::Sha1),
            "sha256" => Some(HashAlg::Sha256),
            "sha384" => Some(HashAlg::Sha384),
            "sha512" => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    /// AlgorithmIdentifier with absent parameters (RFC 5754).
    pub fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: None,
        }
    }

    /// One-shot digest.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = ContentHasher::new(self);
        h.update(data);
        h.finalize()
    }
}

/// A signature scheme: padding/algorithm plus the digest it signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5
    RsaPkcs1v15(HashAlg),
    /// RSASSA-PSS, MGF1 with the same hash, salt length = hash length, trailer 1 (RFC 4056)
    RsaPss(HashAlg),
    /// ECDSA
    Ecdsa(HashAlg),
}

impl SignatureScheme {
    /// The digest algorithm of this scheme.
    pub fn hash(self) -> HashAlg {
        match self {
            SignatureScheme::RsaPkcs1v15(h)
            | SignatureScheme::RsaPss(h)
            | SignatureScheme::Ecdsa(h) => h,
        }
    }

    /// Human name such as `RSA-PSS/SHA-256`.
    pub fn name(self) -> String {
        match self {
            SignatureScheme::RsaPkcs1v15(h) => format!("RSA-PKCS1v1.5/{}", h.name()),
            SignatureScheme::RsaPss(h) => format!("RSA-PSS/{}", h.name()),
            SignatureScheme::Ecdsa(h) => format!("ECDSA/{}", h.name()),
        }
    }

    /// The signatureAlgorithm identifier written into a SignerInfo.
    ///
    /// RSA PKCS#1 v1.5 uses `rsaEncryption` (as OpenSSL and most S/MIME agents do);
    /// PSS carries RFC 4055 parameters; ECDSA uses `ecdsa-with-SHAxxx`.
    pub fn signer_info_algorithm(self) -> Result<AlgorithmIdentifierOwned, der::Error> {
        Ok(match self {
            SignatureScheme::RsaPkcs1v15(_) => AlgorithmIdentifierOwned {
                oid: oid::RSA_ENCRYPTION,
                parameters: Some(Any::from(AnyRef::NULL)),
            },
            SignatureScheme::RsaPss(h) => AlgorithmIdentifierOwned {
                oid: oid::RSASSA_PSS,
                parameters: Some(Any::from_der(&pss_params_der(h)?)?),
            },
            SignatureScheme::Ecdsa(h) => AlgorithmIdentifierOwned {
                oid: match h {
                    HashAlg::Sha1 => oid::ECDSA_SHA1,
                    HashAlg::Sha256 => oid::ECDSA_SHA256,
                    HashAlg::Sha384 => oid::ECDSA_SHA384,
                    HashAlg::Sha512 => oid::ECDSA_SHA512,
                },
                parameters: None,
            },
        })
    }
}

/// RSASSA-PSS-params (RFC 4055) as used with CMS.
#[derive(Clone, Debug, Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

fn pss_params_der(h: HashAlg) -> Result<Vec<u8>, der::Error> {
    let mgf_hash = Any::from_der(&h.algorithm_identifier().to_der()?)?;
    PssParams {
        hash: Some(h.algorithm_identifier()),
        mgf: Some(AlgorithmIdentifierOwned {
            oid: oid::MGF1,
            parameters: Some(mgf_hash),
        }),
        salt_len: Some(h.output_len() as u32),
        trailer: None,
    }
    .to_der()
}

/// Parsed RSASSA-PSS parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PssParameters {
    /// message hash
    pub hash: HashAlg,
    /// MGF1 hash
    pub mgf_hash: HashAlg,
    /// salt length
    pub salt_len: usize,
}

/// Parse RSASSA-PSS-params; defaults (SHA-1, MGF1-SHA-1, salt 20) apply to absent fields.
pub fn parse_pss_params(params: Option<&Any>) -> Result<PssParameters, String> {
    let Some(params) = params else {
        return Ok(PssParameters {
            hash: HashAlg::Sha1,
            mgf_hash: HashAlg::Sha1,
            salt_len: 20,
        });
    };
    let der = params.to_der().map_err(|e| e.to_string())?;
    let p = PssParams::from_der(&der).map_err(|e| format!("bad RSASSA-PSS parameters: {e}"))?;
    let hash = match &p.hash {
        None => HashAlg::Sha1,
        Some(a) => {
            HashAlg::from_oid(&a.oid).ok_or_else(|| format!("PSS hash {} unsupported", a.oid))?
        }
    };
    let mgf_hash = match &p.mgf {
        None => HashAlg::Sha1,
        Some(a) => {
            if a.oid != oid::MGF1 {
                return Err(format!("PSS mask generation {} unsupported", a.oid));
            }
            let inner = a
                .parameters
                .as_ref()
                .ok_or("MGF1 without hash parameter")?
                .to_der()
                .map_err(|e| e.to_string())?;
            let inner = AlgorithmIdentifierOwned::from_der(&inner).map_err(|e| e.to_string())?;
            HashAlg::from_oid(&inner.oid)
                .ok_or_else(|| format!("MGF1 hash {} unsupported", inner.oid))?
        }
    };
    if let Some(t) = p.trailer {
        if t != 1 {
            return Err(format!("PSS trailer field {t} unsupported"));
        }
    }
    Ok(PssParameters {
        hash,
        mgf_hash,
        salt_len: p.salt_len.unwrap_or(20) as usize,
    })
}

/// What a signature algorithm identifier (in a SignerInfo or a certificate) denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigAlgKind {
    /// RSA PKCS#1 v1.5; the hash is `Some` when the OID names it (`sha256WithRSAEncryption`),
    /// `None` for bare `rsaEncryption` (hash taken from the SignerInfo digestAlgorithm).
    RsaPkcs1(Option<HashAlg>),
    /// RSA-PSS with its parameters
    RsaPss(PssParameters),
    /// ECDSA; hash is `None` for bare `id-ecPublicKey`
    Ecdsa(Option<HashAlg>),
    /// A known-weak algorithm (MD5-based)
    Md5Rsa,
}

/// Interpret a signature AlgorithmIdentifier.
pub fn classify_signature_alg(alg: &AlgorithmIdentifierOwned) -> Result<SigAlgKind, String> {
    let o: Oid = alg.oid;
    Ok(match o {
        x if x == oid::RSA_ENCRYPTION => SigAlgKind::RsaPkcs1(None),
        x if x == oid::MD5_WITH_RSA => SigAlgKind::Md5Rsa,
        x if x == oid::SHA1_WITH_RSA => SigAlgKind::RsaPkcs1(Some(HashAlg::Sha1)),
        x if x == oid::SHA256_WITH_RSA => SigAlgKind::RsaPkcs1(Some(HashAlg::Sha256)),
        x if x == oid::SHA384_WITH_RSA => SigAlgKind::RsaPkcs1(Some(HashAlg::Sha384)),
        x if x == oid::SHA512_WITH_RSA => SigAlgKind::RsaPkcs1(Some(HashAlg::Sha512)),
        x if x == oid::RSASSA_PSS => SigAlgKind::RsaPss(parse_pss_params(alg.parameters.as_ref())?),
        x if x == oid::EC_PUBLIC_KEY => SigAlgKind::Ecdsa(None),
        x if x == oid::ECDSA_SHA1 => SigAlgKind::Ecdsa(Some(HashAlg::Sha1)),
        x if x == oid::ECDSA_SHA256 => SigAlgKind::Ecdsa(Some(HashAlg::Sha256)),
        x if x == oid::ECDSA_SHA384 => SigAlgKind::Ecdsa(Some(HashAlg::Sha384)),
        x if x == oid::ECDSA_SHA512 => SigAlgKind::Ecdsa(Some(HashAlg::Sha512)),
        other => return Err(format!("signature algorithm {other} is not supported")),
    })
}

/// The kind of a signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KeyKind {
    /// RSA with modulus size in bits
    Rsa {
        /// modulus bits
        bits: usize,
    },
    /// NIST P-256
    P256,
    /// NIST P-384
    P384,
}

impl KeyKind {
    /// Default digest matched to the key: P-384 → SHA-384, everything else SHA-256.
    pub fn default_hash(self) -> HashAlg {
        match self {
            KeyKind::P384 => HashAlg::Sha384,
            _ => HashAlg::Sha256,
        }
    }

    /// Default signature scheme: RSA PKCS#1 v1.5 (widest interoperability) or ECDSA.
    pub fn default_scheme(self) -> SignatureScheme {
        match self {
            KeyKind::Rsa { .. } => SignatureScheme::RsaPkcs1v15(self.default_hash()),
            _ => SignatureScheme::Ecdsa(self.default_hash()),
        }
    }

    /// The scheme for a signing request: `hash` (default: [`KeyKind::default_hash`]) and,
    /// for RSA, PSS or PKCS#1 v1.5. `pss` for an EC key is an error that says so.
    pub fn scheme(self, hash: Option<HashAlg>, pss: bool) -> Result<SignatureScheme, String> {
        let hash = hash.unwrap_or(self.default_hash());
        match self {
            KeyKind::Rsa { .. } if pss => Ok(SignatureScheme::RsaPss(hash)),
            KeyKind::Rsa { .. } => Ok(SignatureScheme::RsaPkcs1v15(hash)),
            _ if pss => Err("PSS is for RSA keys; this key is an EC key".into()),
            _ => Ok(SignatureScheme::Ecdsa(hash)),
        }
    }

    /// Whether `scheme` can be used with this key.
    pub fn supports(self, scheme: SignatureScheme) -> bool {
        matches!(
            (self, scheme),
            (KeyKind::Rsa { .. }, SignatureScheme::RsaPkcs1v15(_))
                | (KeyKind::Rsa { .. }, SignatureScheme::RsaPss(_))
                | (KeyKind::P256 | KeyKind::P384, SignatureScheme::Ecdsa(_))
        )
    }
}

/// Incremental hash over content chunks, so that large content never sits in memory.
#[derive(Clone, Debug)]
pub enum ContentHasher {
    /// SHA-1 (verification only)
    Sha1(sha1::Sha1),
    /// SHA-256
    Sha256(sha2::Sha256),
    /// SHA-384
    Sha384(sha2::Sha384),
    /// SHA-512
    Sha512(sha2::Sha512),
}

impl ContentHasher {
    /// A fresh hasher.
    pub fn new(alg: HashAlg) -> Self {
        match alg {
            HashAlg::Sha1 => ContentHasher::Sha1(sha1::Sha1::new()),
            HashAlg::Sha256 => ContentHasher::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => ContentHasher::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => ContentHasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        match self {
            ContentHasher::Sha1(_) => HashAlg::Sha1,
            ContentHasher::Sha256(_) => HashAlg::Sha256,
            ContentHasher::Sha384(_) => HashAlg::Sha384,
            ContentHasher::Sha512(_) => HashAlg::Sha512,
        }
    }

    /// Feed a chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        match self {
            ContentHasher::Sha1(h) => h.update(chunk),
            ContentHasher::Sha256(h) => h.update(chunk),
            ContentHasher::Sha384(h) => h.update(chunk),
            ContentHasher::Sha512(h) => h.update(chunk),
        }
    }

    /// The digest.
    pub fn finalize(self) -> Vec<u8> {
        match self {
            ContentHasher::Sha1(h) => h.finalize().to_vec(),
            ContentHasher::Sha256(h) => h.finalize().to_vec(),
            ContentHasher::Sha384(h) => h.finalize().to_vec(),
            ContentHasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Several hashers fed at once (verification: one per digest algorithm the SignerInfos name).
#[derive(Clone, Debug, Default)]
pub struct MultiHasher {
    hashers: Vec<ContentHasher>,
}

impl MultiHasher {
    /// Hashers for each distinct algorithm.
    pub fn new(algs: &[HashAlg]) -> Self {
        let mut v: Vec<HashAlg> = algs.to_vec();
        v.sort();
        v.dedup();
        Self {
            hashers: v.into_iter().map(ContentHasher::new).collect(),
        }
    }

    /// Feed a chunk to every hasher.
    pub fn update(&mut self, chunk: &[u8]) {
        for h in &mut self.hashers {
            h.update(chunk);
        }
    }

    /// The digests.
    pub fn finalize(self) -> ContentDigests {
        ContentDigests(
            self.hashers
                .into_iter()
                .map(|h| (h.alg(), h.finalize()))
                .collect(),
        )
    }
}

/// Content digests per algorithm, as computed by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentDigests(pub Vec<(HashAlg, Vec<u8>)>);

impl ContentDigests {
    /// Digest of `data` under every algorithm in `algs`.
    pub fn of(algs: &[HashAlg], data: &[u8]) -> Self {
        let mut m = MultiHasher::new(algs);
        m.update(data);
        m.finalize()
    }

    /// The digest for `alg`, if computed.
    pub fn get(&self, alg: HashAlg) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micalg_names() {
        assert_eq!(HashAlg::from_micalg("SHA-256"), Some(HashAlg::Sha256));
        assert_eq!(HashAlg::from_micalg(" sha384"), Some(HashAlg::Sha384));
        assert_eq!(HashAlg::from_micalg("sha-1"), Some(HashAlg::Sha1));
        assert_eq!(HashAlg::from_micalg("md5"), None);
        for h in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(HashAlg::from_micalg(h.micalg()), Some(h));
            assert_eq!(HashAlg::from_oid(&h.oid()), Some(h));
            assert_eq!(h.digest(b"x").len(), h.output_len());
        }
    }

    #[test]
    fn pss_parameters_round_trip() {
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            let alg = SignatureScheme::RsaPss(h)
                .signer_info_algorithm()
                .expect("encodes");
            match classify_signature_alg(&alg).expect("classifies") {
                SigAlgKind::RsaPss(p) => {
                    assert_eq!(p.hash, h);
                    assert_eq!(p.mgf_hash, h);
                    assert_eq!(p.salt_len, h.output_len());
                }
                other => panic!("{other:?}"),
            }
        }
        // absent parameters mean SHA-1 / MGF1-SHA-1 / salt 20 (RFC 4055)
        let d = parse_pss_params(None).expect("defaults");
        assert_eq!(
            (d.hash, d.mgf_hash, d.salt_len),
            (HashAlg::Sha1, HashAlg::Sha1, 20)
        );
    }
}
