//! A software [`RecipientKey`] (PKCS#8 private key + certificate), for tests
//! and for the agent's software key store.

use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::{KeyOpError, KeyTransport, OaepHash, RecipientKey};

enum Private {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

/// A private key held in memory, with its certificate.
pub struct SoftwareKey {
    cert: Certificate,
    key: Private,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.key {
            Private::Rsa(_) => "RSA",
            Private::P256(_) => "P-256",
            Private::P384(_) => "P-384",
        };
        f.debug_struct("SoftwareKey")
            .field("kind", &kind)
            .field(
                "subject",
                &self.cert.tbs_certificate().subject().to_string(),
            )
            .finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// From a PKCS#8 private key (DER) and its certificate. RSA, P-256 and P-384.
    pub fn from_pkcs8_der(pkcs8: &[u8], cert: Certificate) -> Result<Self, KeyOpError> {
        use p256::pkcs8::DecodePrivateKey as _;
        let key = if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8) {
            Private::Rsa(Box::new(k))
        } else if let Ok(k) = p256::SecretKey::from_pkcs8_der(pkcs8) {
            Private::P256(k)
        } else if let Ok(k) = p384::SecretKey::from_pkcs8_der(pkcs8) {
            Private::P384(k)
        } else {
            return Err(KeyOpError::Unsupported(
                "not an RSA, P-256 or P-384 PKCS#8 private key".into(),
            ));
        };
        Ok(Self { cert, key })
    }

    /// From PEM texts: a `PRIVATE KEY` (PKCS#8) block and a `CERTIFICATE`.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, KeyOpError> {
        use der::DecodePem;
        let cert = Certificate::from_pem(cert_pem.as_bytes())
            .map_err(|e| KeyOpError::Unsupported(format!("certificate: {e}")))?;
        let (label, der) = der::pem::decode_vec(key_pem.as_bytes())
            .map_err(|e| KeyOpError::Unsupported(format!("private key PEM: {e}")))?;
        if label != "PRIVATE KEY" {
            return Err(KeyOpError::Unsupported(format!(
                "private key PEM label {label:?}; expected PRIVATE KEY (PKCS#8)"
            )));
        }
        let der = Zeroizing::new(der);
        Self::from_pkcs8_der(&der, cert)
    }
}

impl RecipientKey for SoftwareKey {
    fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn decrypt_key(
        &self,
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        let Private::Rsa(k) = &self.key else {
            return Err(KeyOpError::Unsupported(
                "key transport with an EC key".into(),
            ));
        };
        let r = match alg {
            KeyTransport::RsaPkcs1v15 => k.decrypt(rsa::Pkcs1v15Encrypt, wrapped),
            KeyTransport::RsaOaep { hash } => match hash {
                OaepHash::Sha1 => k.decrypt(rsa::Oaep::<sha1::Sha1>::new(), wrapped),
                OaepHash::Sha256 => k.decrypt(rsa::Oaep::<sha2::Sha256>::new(), wrapped),
                OaepHash::Sha384 => k.decrypt(rsa::Oaep::<sha2::Sha384>::new(), wrapped),
                OaepHash::Sha512 => k.decrypt(rsa::Oaep::<sha2::Sha512>::new(), wrapped),
            },
        };
        r.map(Zeroizing::new).map_err(|_| KeyOpError::Failed)
    }

    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        match &self.key {
            Private::P256(k) => {
                let peer =
                    p256::PublicKey::from_sec1_bytes(peer_point).map_err(|_| KeyOpError::Failed)?;
                let s = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), peer.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            Private::P384(k) => {
                let peer =
                    p384::PublicKey::from_sec1_bytes(peer_point).map_err(|_| KeyOpError::Failed)?;
                let s = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), peer.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            Private::Rsa(_) => Err(KeyOpError::Unsupported("ECDH with an RSA key".into())),
        }
    }
}
