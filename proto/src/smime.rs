//! Conversions between wire algorithms and the S/MIME core's types (feature `smime`),
//! so the agent and the CLI map them the same way.

use tokenmail_smime::alg::{HashAlg, SignatureScheme};
use tokenmail_smime::envelope::{KeyTransport, OaepHash};

use crate::v1::{DecryptAlgorithm, SignAlgorithm};

impl SignAlgorithm {
    /// The wire algorithm for a signature scheme (`None` for SHA-1, which is never signed).
    pub fn from_scheme(s: SignatureScheme) -> Option<Self> {
        use SignatureScheme::*;
        Some(match s {
            RsaPkcs1v15(HashAlg::Sha256) => SignAlgorithm::RsaPkcs1Sha256,
            RsaPkcs1v15(HashAlg::Sha384) => SignAlgorithm::RsaPkcs1Sha384,
            RsaPkcs1v15(HashAlg::Sha512) => SignAlgorithm::RsaPkcs1Sha512,
            RsaPss(HashAlg::Sha256) => SignAlgorithm::RsaPssSha256,
            RsaPss(HashAlg::Sha384) => SignAlgorithm::RsaPssSha384,
            RsaPss(HashAlg::Sha512) => SignAlgorithm::RsaPssSha512,
            Ecdsa(HashAlg::Sha256) => SignAlgorithm::EcdsaSha256,
            Ecdsa(HashAlg::Sha384) => SignAlgorithm::EcdsaSha384,
            Ecdsa(HashAlg::Sha512) => SignAlgorithm::EcdsaSha512,
            _ => return None,
        })
    }
}

impl SignAlgorithm {
    /// The S/MIME core's scheme for this wire algorithm (the token layer speaks only the
    /// core's types: this is the edge).
    pub fn to_scheme(self) -> Option<SignatureScheme> {
        use SignatureScheme::*;
        Some(match self {
            SignAlgorithm::RsaPkcs1Sha256 => RsaPkcs1v15(HashAlg::Sha256),
            SignAlgorithm::RsaPkcs1Sha384 => RsaPkcs1v15(HashAlg::Sha384),
            SignAlgorithm::RsaPkcs1Sha512 => RsaPkcs1v15(HashAlg::Sha512),
            SignAlgorithm::RsaPssSha256 => RsaPss(HashAlg::Sha256),
            SignAlgorithm::RsaPssSha384 => RsaPss(HashAlg::Sha384),
            SignAlgorithm::RsaPssSha512 => RsaPss(HashAlg::Sha512),
            SignAlgorithm::EcdsaSha256 => Ecdsa(HashAlg::Sha256),
            SignAlgorithm::EcdsaSha384 => Ecdsa(HashAlg::Sha384),
            SignAlgorithm::EcdsaSha512 => Ecdsa(HashAlg::Sha512),
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }
}

impl DecryptAlgorithm {
    /// The S/MIME core's key transport for this wire algorithm.
    pub fn to_key_transport(self) -> Option<KeyTransport> {
        Some(match self {
            DecryptAlgorithm::RsaPkcs1 => KeyTransport::RsaPkcs1v15,
            DecryptAlgorithm::RsaOaepSha1 => KeyTransport::RsaOaep {
                hash: OaepHash::Sha1,
            },
            DecryptAlgorithm::RsaOaepSha256 => KeyTransport::RsaOaep {
                hash: OaepHash::Sha256,
            },
            DecryptAlgorithm::RsaOaepSha384 => KeyTransport::RsaOaep {
                hash: OaepHash::Sha384,
            },
            DecryptAlgorithm::RsaOaepSha512 => KeyTransport::RsaOaep {
                hash: OaepHash::Sha512,
            },
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }
}

impl DecryptAlgorithm {
    /// The wire algorithm for an RSA key transport (`None` for what the wire cannot name).
    pub fn from_key_transport(t: KeyTransport) -> Option<Self> {
        Some(match t {
            KeyTransport::RsaPkcs1v15 => DecryptAlgorithm::RsaPkcs1,
            KeyTransport::RsaOaep { hash } => match hash {
                OaepHash::Sha1 => DecryptAlgorithm::RsaOaepSha1,
                OaepHash::Sha256 => DecryptAlgorithm::RsaOaepSha256,
                OaepHash::Sha384 => DecryptAlgorithm::RsaOaepSha384,
                OaepHash::Sha512 => DecryptAlgorithm::RsaOaepSha512,
                _ => return None,
            },
            _ => return None,
        })
    }
}

impl crate::v1::SignForm {
    /// The signing driver's form.
    pub fn to_pipeline(self) -> tokenmail_smime::pipeline::SignForm {
        use tokenmail_smime::pipeline::SignForm as P;
        match self {
            crate::v1::SignForm::Multipart => P::Multipart,
            crate::v1::SignForm::Opaque => P::Opaque,
            crate::v1::SignForm::DetachedDer => P::DetachedDer,
            crate::v1::SignForm::DetachedPem => P::DetachedPem,
        }
    }
}

impl crate::v1::HashAlgorithm {
    /// The S/MIME core's hash (`None` for SHA-1, which is never used to sign).
    pub fn to_signing_hash(self) -> Option<HashAlg> {
        match self {
            crate::v1::HashAlgorithm::Sha256 => Some(HashAlg::Sha256),
            crate::v1::HashAlgorithm::Sha384 => Some(HashAlg::Sha384),
            crate::v1::HashAlgorithm::Sha512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signing_scheme_has_a_wire_name_and_sha1_none() {
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            for s in [
                SignatureScheme::RsaPkcs1v15(h),
                SignatureScheme::RsaPss(h),
                SignatureScheme::Ecdsa(h),
            ] {
                let a = SignAlgorithm::from_scheme(s).expect("named");
                assert_eq!(a.hash().digest_len(), h.output_len(), "{s:?}");
                assert_eq!(a.to_scheme(), Some(s), "one mapping, both ways");
            }
        }
        assert!(SignAlgorithm::from_scheme(SignatureScheme::Ecdsa(HashAlg::Sha1)).is_none());
        assert_eq!(
            DecryptAlgorithm::from_key_transport(KeyTransport::RsaOaep {
                hash: OaepHash::Sha256
            }),
            Some(DecryptAlgorithm::RsaOaepSha256)
        );
        for hash in [
            OaepHash::Sha1,
            OaepHash::Sha256,
            OaepHash::Sha384,
            OaepHash::Sha512,
        ] {
            let t = KeyTransport::RsaOaep { hash };
            let w = DecryptAlgorithm::from_key_transport(t).expect("named");
            assert_eq!(w.to_key_transport(), Some(t));
        }
        let w = DecryptAlgorithm::from_key_transport(KeyTransport::RsaPkcs1v15).expect("named");
        assert_eq!(w.to_key_transport(), Some(KeyTransport::RsaPkcs1v15));
    }
}
