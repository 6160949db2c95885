//! A software key store: private keys held in memory, so that the agent's service can
//! be tested without SoftHSM or a card.
//!
//! The cryptography is the S/MIME core's software keys ([`SoftwareSigner`] for
//! signatures, [`SoftwareKey`] for RSA key transport and ECDH); this module adds what a
//! token has around them: a label, key entries with certificates, a PIN that must be
//! given before any private-key operation, and the same [`TokenError`]s as the PKCS#11
//! backend. It is not read from the configuration.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use der::{Decode, Encode};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokenmail_proto::v1::TokenStatus;
use tokenmail_smime::alg::SignatureScheme;
use tokenmail_smime::envelope::{KeyTransport, RecipientKey, SoftwareKey};
use tokenmail_smime::keys::PublicKey as CertPublicKey;
use tokenmail_smime::signed::{DigestSigner, SignerError, SoftwareSigner};
use tracing::{info, warn};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::{KeyEntry, KeyStore, PublicKey, TokenError};
use crate::pin::{PinSource, PinState};

/// One key of a [`SoftwareStore`]: its entry (label, id, certificate, chain, usage) and
/// the private key.
pub struct SoftKey {
    entry: KeyEntry,
    signer: SoftwareSigner,
    key: SoftwareKey,
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftKey")
            .field("label", &self.entry.label)
            .field("id", &hex::encode(&self.entry.id))
            .field("algorithm", &self.entry.public.algorithm_name())
            .finish_non_exhaustive()
    }
}

fn bad_key(what: &str, e: impl std::fmt::Display) -> TokenError {
    TokenError::Invalid(format!("software key: {what}: {e}"))
}

impl SoftKey {
    /// A key from a PKCS#8 private key (DER; RSA, P-256 or P-384) and its certificate
    /// (DER), with the CA certificates that chain it (issuer first). The private key must
    /// belong to the certificate. Usage as for a token key found by its certificate: RSA
    /// keys sign and decrypt, EC keys sign and derive.
    pub fn from_pkcs8_der(
        label: impl Into<String>,
        id: impl Into<Vec<u8>>,
        pkcs8: &[u8],
        certificate: &[u8],
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, TokenError> {
        let cert = Certificate::from_der(certificate).map_err(|e| bad_key("certificate", e))?;
        let pem = Zeroizing::new(
            der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, pkcs8)
                .map_err(|e| bad_key("private key", e))?,
        );
        let signer = SoftwareSigner::from_pkcs8_pem(&pem).map_err(|e| bad_key("private key", e))?;
        let key =
            SoftwareKey::from_pkcs8_der(pkcs8, cert).map_err(|e| bad_key("private key", e))?;
        Self::assemble(
            label.into(),
            id.into(),
            signer,
            key,
            certificate.to_vec(),
            chain,
        )
    }

    /// A key from PEM texts: a `PRIVATE KEY` (PKCS#8) block and a `CERTIFICATE`; `chain`
    /// as for [`SoftKey::from_pkcs8_der`].
    pub fn from_pem(
        label: impl Into<String>,
        id: impl Into<Vec<u8>>,
        key_pem: &str,
        cert_pem: &str,
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, TokenError> {
        let key = SoftwareKey::from_pem(key_pem, cert_pem).map_err(|e| bad_key("PEM", e))?;
        let signer =
            SoftwareSigner::from_pkcs8_pem(key_pem).map_err(|e| bad_key("private key", e))?;
        let der = key
            .certificate()
            .to_der()
            .map_err(|e| bad_key("certificate", e))?;
        Self::assemble(label.into(), id.into(), signer, key, der, chain)
    }

    fn assemble(
        label: String,
        id: Vec<u8>,
        signer: SoftwareSigner,
        key: SoftwareKey,
        certificate: Vec<u8>,
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, TokenError> {
        use rsa::traits::PublicKeyParts;
        let spki = key
            .certificate()
            .tbs_certificate()
            .subject_public_key_info();
        let cert_key = CertPublicKey::from_spki(spki).map_err(|e| bad_key("certificate", e))?;
        let public = match (&cert_key, &signer) {
            (CertPublicKey::Rsa(c), SoftwareSigner::Rsa(k)) if *c == k.to_public_key() => {
                PublicKey::Rsa {
                    modulus: c.n().to_be_bytes().to_vec(),
                    exponent: c.e().to_be_bytes().to_vec(),
                }
            }
            (CertPublicKey::P256(c), SoftwareSigner::P256(k)) if c == k.verifying_key() => {
                PublicKey::P256(c.to_sec1_point(false).as_bytes().to_vec())
            }
            (CertPublicKey::P384(c), SoftwareSigner::P384(k)) if c == k.verifying_key() => {
                PublicKey::P384(c.to_sec1_point(false).as_bytes().to_vec())
            }
            _ => {
                return Err(TokenError::KeyMismatch(format!(
                    "software key {label:?}: the private key does not belong to the certificate"
                )))
            }
        };
        let is_rsa = matches!(public, PublicKey::Rsa { .. });
        Ok(SoftKey {
            entry: KeyEntry {
                label,
                id,
                public,
                can_sign: true,
                can_decrypt: is_rsa,
                can_derive: !is_rsa,
                certificate: Some(certificate),
                chain,
                touch: None,
                pin_policy: None,
                exportable: false,
            },
            signer,
            key,
        })
    }

    /// Sets what the key is allowed to do (CKA_SIGN, CKA_DECRYPT, CKA_DERIVE).
    pub fn with_usage(mut self, sign: bool, decrypt: bool, derive: bool) -> Self {
        self.entry.can_sign = sign;
        self.entry.can_decrypt = decrypt;
        self.entry.can_derive = derive;
        self
    }

    /// The entry the store lists for this key.
    pub fn entry(&self) -> &KeyEntry {
        &self.entry
    }
}

#[derive(Debug)]
struct Inner {
    pin: PinState,
    logged_in: bool,
    /// Wrong PINs since the last correct one.
    failures: u32,
}

/// A key store whose keys are in memory. It behaves like a token that is always
/// present, shows its keys (certificates) without a login, and needs its PIN for every
/// private-key operation.
pub struct SoftwareStore {
    name: String,
    pin: SecretString,
    max_tries: Option<u32>,
    keys: Vec<SoftKey>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SoftwareStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareStore")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl SoftwareStore {
    /// An empty store named `name` that logs in with `pin` (PINs come from clients only,
    /// cached until `lock`; no limit on wrong PINs).
    pub fn new(name: impl Into<String>, pin: SecretString) -> Self {
        SoftwareStore {
            name: name.into(),
            pin,
            max_tries: None,
            keys: Vec::new(),
            inner: Mutex::new(Inner {
                pin: PinState::new(PinSource::None, None),
                logged_in: false,
                failures: 0,
            }),
        }
    }

    /// Adds a key. Keys are found by id; give each a different one.
    pub fn with_key(mut self, key: SoftKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Sets where the PIN comes from when no client gives one, and how long a client's
    /// PIN is cached (`None`: until `lock`), as the token options do.
    pub fn with_pin_source(mut self, source: PinSource, ttl: Option<Duration>) -> Self {
        self.inner_mut().pin = PinState::new(source, ttl);
        self
    }

    /// Blocks the PIN after `tries` wrong PINs in a row (then every login is refused with
    /// [`TokenError::PinLocked`]).
    pub fn with_pin_tries(mut self, tries: u32) -> Self {
        self.max_tries = Some(tries);
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blocked(&self, inner: &Inner) -> bool {
        self.max_tries.is_some_and(|m| inner.failures >= m)
    }

    /// Logs in with whatever PIN may be used now. Returns Ok(false) when none is available.
    fn try_login(&self, inner: &mut Inner) -> Result<bool, TokenError> {
        if inner.logged_in {
            return Ok(true);
        }
        let Some(pin) = inner.pin.usable(&self.name) else {
            return Ok(false);
        };
        self.login_with(inner, pin, false).map(|_| true)
    }

    fn login_with(
        &self,
        inner: &mut Inner,
        pin: SecretString,
        from_client: bool,
    ) -> Result<(), TokenError> {
        if self.blocked(inner) {
            inner.pin.reject();
            return Err(TokenError::PinLocked(self.name.clone()));
        }
        let right: bool = pin
            .expose_secret()
            .as_bytes()
            .ct_eq(self.pin.expose_secret().as_bytes())
            .into();
        if right {
            inner.logged_in = true;
            inner.failures = 0;
            inner.pin.remember(pin, from_client);
            info!(token = %self.name, "logged in");
            return Ok(());
        }
        inner.failures = inner.failures.saturating_add(1);
        inner.pin.reject();
        warn!(token = %self.name, "login refused: wrong PIN");
        let left = self.max_tries.map(|m| m.saturating_sub(inner.failures));
        let hint = match left {
            Some(0) => return Err(TokenError::PinLocked(self.name.clone())),
            Some(1) => " (one try left before the PIN is blocked)".to_string(),
            Some(n) => format!(" ({n} tries left)"),
            None => " (software key store: no limit on tries)".to_string(),
        };
        Err(TokenError::PinIncorrect {
            token: self.name.clone(),
            hint,
            tries_left: left,
        })
    }

    /// A key for a private-key operation: logs in first (if a PIN may be used), so that
    /// a missing PIN is reported as such rather than as a missing key.
    fn find_key(&self, id: &[u8]) -> Result<&SoftKey, TokenError> {
        {
            let mut inner = self.lock_inner();
            if !self.try_login(&mut inner)? {
                return Err(TokenError::PinRequired(self.name.clone()));
            }
        }
        self.keys
            .iter()
            .find(|k| k.entry.id == id)
            .ok_or_else(|| TokenError::NoSuchKey(hex::encode(id)))
    }
}

fn signer_error(label: &str, e: SignerError) -> TokenError {
    match e {
        SignerError::Unsupported(s) => TokenError::Mechanism(s),
        e => TokenError::KeyMismatch(format!("key {label:?} cannot make this signature: {e}")),
    }
}

impl KeyStore for SoftwareStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn status(&self) -> TokenStatus {
        let mut inner = self.lock_inner();
        if inner.pin.expire() {
            inner.logged_in = false;
        }
        let mut pin_warnings = Vec::new();
        if let Some(m) = self.max_tries {
            if inner.failures >= m {
                pin_warnings.push("locked".to_string());
            } else if inner.failures + 1 == m {
                pin_warnings.push("final-try".to_string());
            } else if inner.failures > 0 {
                pin_warnings.push("count-low".to_string());
            }
        }
        TokenStatus {
            name: String::new(),
            label: self.name.clone(),
            serial: String::new(),
            model: "software key store".into(),
            backend: "software".into(),
            present: true,
            logged_in: inner.logged_in,
            pin_source: inner.pin.source_kind().to_string(),
            locked: inner.pin.locked,
            pin_warnings,
        }
    }

    fn keys(&self) -> Result<Vec<KeyEntry>, TokenError> {
        self.try_login(&mut self.lock_inner())?;
        Ok(self.keys.iter().map(|k| k.entry.clone()).collect())
    }

    fn login(&self, pin: Option<SecretString>) -> Result<(), TokenError> {
        if pin.as_ref().is_some_and(|p| p.expose_secret().is_empty()) {
            return Err(TokenError::Invalid(
                "empty PIN; nothing was sent to the token".into(),
            ));
        }
        let mut inner = self.lock_inner();
        inner.logged_in = false;
        let (pin, from_client) = inner.pin.for_login(pin, &self.name)?;
        self.login_with(&mut inner, pin, from_client)
    }

    fn lock(&self) {
        let mut inner = self.lock_inner();
        inner.logged_in = false;
        inner.pin.lock();
        info!(token = %self.name, "locked: logged out and PIN forgotten");
    }

    fn release(&self) {
        let mut inner = self.lock_inner();
        inner.logged_in = false;
        inner.pin.forget();
        info!(token = %self.name, "released, cached PIN forgotten");
    }

    fn expire_pin(&self) {
        let mut inner = self.lock_inner();
        if inner.pin.expire() {
            inner.logged_in = false;
            info!(token = %self.name, "PIN cache time ran out: logged out");
        }
    }

    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let key = self.find_key(id)?;
        super::check_sign(&key.entry, scheme, digest)?;
        if !key.entry.can_sign {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is not allowed to sign (CKA_SIGN false)",
                key.entry.label
            )));
        }
        key.signer
            .sign_digest(scheme, digest)
            .map_err(|e| signer_error(&key.entry.label, e))
    }

    fn decrypt(
        &self,
        id: &[u8],
        transport: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = self.find_key(id)?;
        super::check_rsa_decrypt(&key.entry)?;
        if !key.entry.can_decrypt {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is not allowed to decrypt (CKA_DECRYPT false)",
                key.entry.label
            )));
        }
        // Every failure of the decryption itself is the same error: no padding oracle.
        key.key
            .decrypt_key(transport, wrapped)
            .map_err(|_| TokenError::DecryptFailed)
    }

    fn derive(&self, id: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = self.find_key(id)?;
        let field = super::check_ecdh(&key.entry, peer_point)?;
        if !key.entry.can_derive {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is not allowed to derive (CKA_DERIVE false)",
                key.entry.label
            )));
        }
        // The point was checked above; what is left to fail is the key agreement of a
        // decryption, reported like any other decryption failure.
        let secret = key
            .key
            .ecdh(peer_point)
            .map_err(|_| TokenError::DecryptFailed)?;
        if secret.len() != field {
            return Err(TokenError::KeyMismatch(
                "the ECDH secret has the wrong length".into(),
            ));
        }
        Ok(secret)
    }
}

/// Keys and certificates made in-process for the tests of this module and of the
/// service: one throw-away CA (P-256) issuing leaf certificates with an email address.
#[cfg(test)]
pub(crate) mod test_support {
    use std::str::FromStr;
    use std::sync::OnceLock;
    use std::time::{Duration, SystemTime};

    use der::Encode;
    use p256::elliptic_curve::Generate;
    use secrecy::SecretString;
    use x509_cert::builder::profile::BuilderProfile;
    use x509_cert::builder::{Builder, CertificateBuilder};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::{Time, Validity};

    use super::{SoftKey, SoftwareStore};

    /// The PIN of [`store`].
    pub const PIN: &str = "123456";

    pub fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
        rand_core::UnwrapErr(getrandom::SysRng)
    }

    /// One RSA-2048 key per test binary (key generation is the slow part).
    pub fn rsa_key() -> &'static rsa::RsaPrivateKey {
        static K: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| rsa::RsaPrivateKey::new(&mut rng(), 2048).expect("RSA keygen"))
    }

    pub fn p256_key() -> &'static p256::ecdsa::SigningKey {
        static K: OnceLock<p256::ecdsa::SigningKey> = OnceLock::new();
        K.get_or_init(|| p256::ecdsa::SigningKey::generate_from_rng(&mut rng()))
    }

    pub fn p384_key() -> &'static p384::ecdsa::SigningKey {
        static K: OnceLock<p384::ecdsa::SigningKey> = OnceLock::new();
        K.get_or_init(|| p384::ecdsa::SigningKey::generate_from_rng(&mut rng()))
    }

    struct Profile {
        subject: Name,
        issuer: Name,
    }

    impl BuilderProfile for Profile {
        fn get_issuer(&self, _subject: &Name) -> Name {
            self.issuer.clone()
        }
        fn get_subject(&self) -> Name {
            self.subject.clone()
        }
        fn build_extensions(
            &self,
            _spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
            _issuer_spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
            _tbs: &x509_cert::TbsCertificate,
        ) -> x509_cert::builder::Result<Vec<x509_cert::ext::Extension>> {
            Ok(Vec::new())
        }
    }

    /// The test CA: its key and self-signed certificate (DER).
    pub fn ca() -> &'static (p256::ecdsa::SigningKey, Vec<u8>) {
        static CA: OnceLock<(p256::ecdsa::SigningKey, Vec<u8>)> = OnceLock::new();
        CA.get_or_init(|| {
            let key = p256::ecdsa::SigningKey::generate_from_rng(&mut rng());
            let name = Name::from_str("CN=tokenmail test CA").expect("name");
            let spki = SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).expect("spki");
            let mut b = CertificateBuilder::new(
                Profile {
                    subject: name.clone(),
                    issuer: name,
                },
                SerialNumber::from(1u32),
                validity(-3600, 30),
                spki,
            )
            .expect("builder");
            b.add_extension(&BasicConstraints {
                ca: true,
                path_len_constraint: None,
            })
            .expect("basicConstraints");
            let cert = b
                .build::<_, p256::ecdsa::DerSignature>(&key)
                .expect("CA certificate");
            (key, cert.to_der().expect("DER"))
        })
    }

    /// From `start` seconds from now (negative: in the past) for `days` days.
    pub fn validity(start: i64, days: u64) -> Validity {
        let now = SystemTime::now();
        let nb = if start < 0 {
            now - Duration::from_secs(start.unsigned_abs())
        } else {
            now + Duration::from_secs(start.unsigned_abs())
        };
        let na = nb + Duration::from_secs(days * 86_400);
        Validity::new(
            Time::try_from(nb).expect("time"),
            Time::try_from(na).expect("time"),
        )
    }

    /// A leaf certificate (DER) issued by [`ca`] for `spki`, with `email` as an
    /// rfc822Name SAN, valid from an hour ago for `days` days.
    pub fn leaf(cn: &str, email: &str, spki: SubjectPublicKeyInfoOwned, days: u64) -> Vec<u8> {
        let (ca_key, ca_der) = ca();
        use der::Decode;
        let ca_cert = x509_cert::Certificate::from_der(ca_der).expect("CA");
        let serial: u32 = rand_core::Rng::next_u32(&mut rng()) & 0x7fff_ffff;
        let mut b = CertificateBuilder::new(
            Profile {
                subject: Name::from_str(&format!("CN={cn}")).expect("name"),
                issuer: ca_cert.tbs_certificate().subject().clone(),
            },
            SerialNumber::from(serial.max(2)),
            validity(-3600, days),
            spki,
        )
        .expect("builder");
        let email = der::asn1::Ia5String::new(email).expect("email");
        b.add_extension(&SubjectAltName(vec![GeneralName::Rfc822Name(email)]))
            .expect("SAN");
        b.build::<_, p256::ecdsa::DerSignature>(ca_key)
            .expect("leaf certificate")
            .to_der()
            .expect("DER")
    }

    pub fn rsa_spki() -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_key(&rsa_key().to_public_key()).expect("spki")
    }

    pub fn p256_spki() -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_key(p256_key().verifying_key()).expect("spki")
    }

    pub fn p384_spki() -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_key(p384_key().verifying_key()).expect("spki")
    }

    pub fn rsa_pkcs8() -> Vec<u8> {
        use rsa::pkcs8::EncodePrivateKey;
        rsa_key()
            .to_pkcs8_der()
            .expect("PKCS#8")
            .as_bytes()
            .to_vec()
    }

    pub fn p256_pkcs8() -> Vec<u8> {
        use p256::pkcs8::EncodePrivateKey;
        p256_key()
            .to_pkcs8_der()
            .expect("PKCS#8")
            .as_bytes()
            .to_vec()
    }

    pub fn p384_pkcs8() -> Vec<u8> {
        use p384::pkcs8::EncodePrivateKey;
        p384_key()
            .to_pkcs8_der()
            .expect("PKCS#8")
            .as_bytes()
            .to_vec()
    }

    /// RSA key `rsa` (id 01, rsa@example.org), P-256 key `p256` (id 02,
    /// p256@example.org), P-384 key `p384` (id 03, p384@example.org), all issued by
    /// the test CA (the chain).
    pub fn keys() -> Vec<SoftKey> {
        let chain = vec![ca().1.clone()];
        let rsa_cert = leaf("rsa", "rsa@example.org", rsa_spki(), 30);
        let p256_cert = leaf("p256", "p256@example.org", p256_spki(), 30);
        let p384_cert = leaf("p384", "p384@example.org", p384_spki(), 30);
        vec![
            SoftKey::from_pkcs8_der("rsa", [1u8], &rsa_pkcs8(), &rsa_cert, chain.clone())
                .expect("rsa key"),
            SoftKey::from_pkcs8_der("p256", [2u8], &p256_pkcs8(), &p256_cert, chain.clone())
                .expect("p256 key"),
            SoftKey::from_pkcs8_der("p384", [3u8], &p384_pkcs8(), &p384_cert, chain)
                .expect("p384 key"),
        ]
    }

    /// A store `soft` with [`keys`] and the PIN [`PIN`].
    pub fn store() -> SoftwareStore {
        keys().into_iter().fold(
            SoftwareStore::new("soft", SecretString::from(PIN.to_string())),
            SoftwareStore::with_key,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use p256::elliptic_curve::Generate;
    use sha2::Digest as _;
    use tokenmail_smime::alg::HashAlg;
    use tokenmail_smime::envelope::OaepHash;

    fn pin(s: &str) -> Option<SecretString> {
        Some(SecretString::from(s.to_string()))
    }

    fn logged_in() -> SoftwareStore {
        let s = store();
        s.login(pin(PIN)).expect("login");
        s
    }

    #[test]
    fn keys_are_listed_without_login_with_certificate_and_chain() {
        let s = store();
        let keys = s.keys().expect("keys");
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].label, "rsa");
        assert_eq!(keys[0].public.algorithm_name(), "rsa-2048");
        assert!(keys[0].can_decrypt && !keys[0].can_derive);
        assert_eq!(keys[1].public.algorithm_name(), "ec-p256");
        assert_eq!(keys[2].public.algorithm_name(), "ec-p384");
        assert!(keys[1].can_derive && !keys[1].can_decrypt);
        for k in &keys {
            assert!(k.certificate.is_some());
            assert_eq!(k.chain, vec![ca().1.clone()]);
        }
        let st = s.status();
        assert!(st.present && !st.logged_in && !st.locked);
        assert_eq!(st.label, "soft");
        assert_eq!(st.pin_source, "none");
    }

    #[test]
    fn private_key_operations_need_the_pin() {
        let s = store();
        let d = [0u8; 32];
        assert!(matches!(
            s.sign_digest(&[1], SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d),
            Err(TokenError::PinRequired(n)) if n == "soft"
        ));
        assert!(matches!(
            s.decrypt(
                &[1],
                KeyTransport::RsaOaep {
                    hash: OaepHash::Sha256
                },
                &[0; 256]
            ),
            Err(TokenError::PinRequired(_))
        ));
        assert!(matches!(
            s.derive(&[2], &[4; 65]),
            Err(TokenError::PinRequired(_))
        ));
        // no unattended source: a login without a PIN cannot happen
        assert!(matches!(s.login(None), Err(TokenError::PinRequired(_))));
        assert!(matches!(s.login(pin("")), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn wrong_pin_then_right_pin_then_lock() {
        let s = store();
        match s.login(pin("000000")) {
            Err(TokenError::PinIncorrect { token, .. }) => assert_eq!(token, "soft"),
            other => panic!("expected PinIncorrect, got {other:?}"),
        }
        assert!(!s.status().logged_in);
        let d = [7u8; 32];
        assert!(matches!(
            s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &d),
            Err(TokenError::PinRequired(_))
        ));
        s.login(pin(PIN)).expect("right PIN");
        let st = s.status();
        assert!(st.logged_in);
        assert_eq!(st.pin_source, "client");
        s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &d)
            .expect("signs once logged in");
        s.lock();
        let st = s.status();
        assert!(!st.logged_in && st.locked);
        assert!(matches!(
            s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &d),
            Err(TokenError::PinRequired(_))
        ));
        // a wrong PIN logs out a logged-in store
        s.login(pin(PIN)).expect("login");
        assert!(s.login(pin("1")).is_err());
        assert!(!s.status().logged_in);
    }

    #[test]
    fn release_forgets_a_client_pin() {
        let s = logged_in();
        s.release();
        assert!(!s.status().logged_in);
        assert!(matches!(
            s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &[0; 32]),
            Err(TokenError::PinRequired(_))
        ));
    }

    #[test]
    fn unattended_pin_source_logs_in_by_itself() {
        let s = store().with_pin_source(
            PinSource::Env("TEST".into(), SecretString::from(PIN.to_string())),
            None,
        );
        s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &[1; 32])
            .expect("logs in from the source");
        assert_eq!(s.status().pin_source, "env");
        s.lock();
        // locked: the source is not read again until an explicit login
        assert!(matches!(
            s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &[1; 32]),
            Err(TokenError::PinRequired(_))
        ));
        s.login(None).expect("explicit login reads the source");
        assert!(s.status().logged_in);

        let wrong = store().with_pin_source(
            PinSource::Env("TEST".into(), SecretString::from("999".to_string())),
            None,
        );
        assert!(matches!(wrong.keys(), Err(TokenError::PinIncorrect { .. })));
        // rejected: not tried again by itself
        assert!(wrong.keys().is_ok());
    }

    #[test]
    fn client_pin_expires() {
        let s = store().with_pin_source(PinSource::None, Some(Duration::from_millis(1)));
        s.login(pin(PIN)).expect("login");
        std::thread::sleep(Duration::from_millis(5));
        s.expire_pin();
        assert!(!s.status().logged_in);
        assert!(matches!(
            s.sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &[1; 32]),
            Err(TokenError::PinRequired(_))
        ));
    }

    #[test]
    fn pin_blocks_after_the_tries() {
        let s = store().with_pin_tries(2);
        match s.login(pin("1")) {
            Err(TokenError::PinIncorrect { hint, .. }) => assert!(hint.contains("one try")),
            other => panic!("expected PinIncorrect, got {other:?}"),
        }
        assert_eq!(s.status().pin_warnings, vec!["final-try".to_string()]);
        assert!(matches!(s.login(pin("2")), Err(TokenError::PinLocked(_))));
        assert!(matches!(s.login(pin(PIN)), Err(TokenError::PinLocked(_))));
        assert_eq!(s.status().pin_warnings, vec!["locked".to_string()]);
    }

    #[test]
    fn signatures_verify() {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use rsa::traits::PublicKeyParts;
        let s = logged_in();
        let rsa_pub = rsa_key().to_public_key();
        let d256 = sha2::Sha256::digest(b"message").to_vec();
        let d384 = sha2::Sha384::digest(b"message").to_vec();
        let d512 = sha2::Sha512::digest(b"message").to_vec();

        let sig = s
            .sign_digest(&[1], SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d256)
            .expect("pkcs1");
        assert_eq!(sig.len(), rsa_pub.size());
        rsa_pub
            .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &d256, &sig)
            .expect("PKCS#1 v1.5 SHA-256 verifies");
        let sig = s
            .sign_digest(&[1], SignatureScheme::RsaPkcs1v15(HashAlg::Sha512), &d512)
            .expect("pkcs1");
        rsa_pub
            .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), &d512, &sig)
            .expect("PKCS#1 v1.5 SHA-512 verifies");
        let sig = s
            .sign_digest(&[1], SignatureScheme::RsaPss(HashAlg::Sha256), &d256)
            .expect("pss");
        rsa_pub
            .verify(rsa::Pss::<sha2::Sha256>::new_with_salt(32), &d256, &sig)
            .expect("PSS SHA-256 verifies (salt = hash length)");
        let sig = s
            .sign_digest(&[1], SignatureScheme::RsaPss(HashAlg::Sha384), &d384)
            .expect("pss");
        rsa_pub
            .verify(rsa::Pss::<sha2::Sha384>::new_with_salt(48), &d384, &sig)
            .expect("PSS SHA-384 verifies");

        let sig = s
            .sign_digest(&[2], SignatureScheme::Ecdsa(HashAlg::Sha256), &d256)
            .expect("ecdsa");
        let sig = p256::ecdsa::Signature::from_der(&sig).expect("DER Ecdsa-Sig-Value");
        p256_key()
            .verifying_key()
            .verify_prehash(&d256, &sig)
            .expect("ECDSA P-256 verifies");
        let sig = s
            .sign_digest(&[3], SignatureScheme::Ecdsa(HashAlg::Sha384), &d384)
            .expect("ecdsa");
        let sig = p384::ecdsa::Signature::from_der(&sig).expect("DER Ecdsa-Sig-Value");
        p384_key()
            .verifying_key()
            .verify_prehash(&d384, &sig)
            .expect("ECDSA P-384 verifies");
    }

    #[test]
    fn sign_errors_are_the_token_errors() {
        let s = logged_in();
        assert!(matches!(
            s.sign_digest(
                &[1],
                SignatureScheme::RsaPkcs1v15(HashAlg::Sha256),
                &[0; 20]
            ),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            s.sign_digest(&[1], SignatureScheme::Ecdsa(HashAlg::Sha256), &[0; 32]),
            Err(TokenError::KeyMismatch(_))
        ));
        assert!(matches!(
            s.sign_digest(&[2], SignatureScheme::RsaPss(HashAlg::Sha256), &[0; 32]),
            Err(TokenError::KeyMismatch(_))
        ));
        assert!(matches!(
            s.sign_digest(&[9], SignatureScheme::Ecdsa(HashAlg::Sha256), &[0; 32]),
            Err(TokenError::NoSuchKey(id)) if id == "09"
        ));
    }

    #[test]
    fn decrypts_oaep_and_pkcs1_wrapped_keys_and_fails_uniformly() {
        let s = logged_in();
        let pk = rsa_key().to_public_key();
        let cek = [0x42u8; 32];
        let cases: [(KeyTransport, Vec<u8>); 4] = [
            (
                KeyTransport::RsaOaep {
                    hash: OaepHash::Sha256,
                },
                pk.encrypt(&mut rng(), rsa::Oaep::<sha2::Sha256>::new(), &cek)
                    .expect("wrap"),
            ),
            (
                KeyTransport::RsaOaep {
                    hash: OaepHash::Sha1,
                },
                pk.encrypt(&mut rng(), rsa::Oaep::<sha1::Sha1>::new(), &cek)
                    .expect("wrap"),
            ),
            (
                KeyTransport::RsaOaep {
                    hash: OaepHash::Sha512,
                },
                pk.encrypt(&mut rng(), rsa::Oaep::<sha2::Sha512>::new(), &cek)
                    .expect("wrap"),
            ),
            (
                KeyTransport::RsaPkcs1v15,
                pk.encrypt(&mut rng(), rsa::Pkcs1v15Encrypt, &cek)
                    .expect("wrap"),
            ),
        ];
        for (alg, wrapped) in &cases {
            let out = s.decrypt(&[1], *alg, wrapped).expect("unwraps");
            assert_eq!(&out[..], &cek, "{alg:?}");
        }
        // wrong hash, corrupted ciphertext, wrong length: all the one error
        let (_, oaep256) = &cases[0];
        assert!(matches!(
            s.decrypt(
                &[1],
                KeyTransport::RsaOaep {
                    hash: OaepHash::Sha384
                },
                oaep256
            ),
            Err(TokenError::DecryptFailed)
        ));
        let mut bad = oaep256.clone();
        bad[10] ^= 1;
        assert!(matches!(
            s.decrypt(
                &[1],
                KeyTransport::RsaOaep {
                    hash: OaepHash::Sha256
                },
                &bad
            ),
            Err(TokenError::DecryptFailed)
        ));
        assert!(matches!(
            s.decrypt(&[1], KeyTransport::RsaPkcs1v15, &[1, 2, 3]),
            Err(TokenError::DecryptFailed)
        ));
        assert!(matches!(
            s.decrypt(&[2], KeyTransport::RsaPkcs1v15, &cases[3].1),
            Err(TokenError::KeyMismatch(_))
        ));
    }

    #[test]
    fn ecdh_matches_the_peer_side() {
        let s = logged_in();
        for (id, ours) in [(2u8, true), (3u8, false)] {
            let secret = if ours {
                let eph = p256::SecretKey::generate_from_rng(&mut rng());
                let point = eph.public_key().to_sec1_bytes();
                let mine =
                    p256::PublicKey::from_sec1_bytes(&p256_key().verifying_key().to_sec1_bytes())
                        .expect("point");
                let want = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), mine.as_affine());
                let got = s.derive(&[id], &point).expect("derive");
                assert_eq!(&got[..], want.raw_secret_bytes().as_slice());
                got
            } else {
                let eph = p384::SecretKey::generate_from_rng(&mut rng());
                let point = eph.public_key().to_sec1_bytes();
                let mine =
                    p384::PublicKey::from_sec1_bytes(&p384_key().verifying_key().to_sec1_bytes())
                        .expect("point");
                let want = p384::ecdh::diffie_hellman(eph.to_nonzero_scalar(), mine.as_affine());
                let got = s.derive(&[id], &point).expect("derive");
                assert_eq!(&got[..], want.raw_secret_bytes().as_slice());
                got
            };
            assert_eq!(secret.len(), if ours { 32 } else { 48 });
        }
        // a point that is not on the curve, and an RSA key
        let mut off = vec![4u8; 65];
        off[64] = 5;
        assert!(matches!(s.derive(&[2], &off), Err(TokenError::Invalid(_))));
        assert!(matches!(
            s.derive(&[1], &[4; 65]),
            Err(TokenError::KeyMismatch(_))
        ));
    }

    #[test]
    fn usage_flags_are_enforced() {
        let mut keys = keys().into_iter();
        let rsa = keys.next().expect("rsa").with_usage(false, false, false);
        let ec = keys.next().expect("p256").with_usage(true, false, false);
        let s = SoftwareStore::new("soft", SecretString::from(PIN.to_string()))
            .with_key(rsa)
            .with_key(ec);
        s.login(pin(PIN)).expect("login");
        assert!(matches!(
            s.sign_digest(&[1], SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &[0; 32]),
            Err(TokenError::KeyMismatch(m)) if m.contains("CKA_SIGN")
        ));
        assert!(matches!(
            s.decrypt(&[1], KeyTransport::RsaPkcs1v15, &[0; 256]),
            Err(TokenError::KeyMismatch(m)) if m.contains("CKA_DECRYPT")
        ));
        let point = p256::SecretKey::generate_from_rng(&mut rng())
            .public_key()
            .to_sec1_bytes();
        assert!(matches!(
            s.derive(&[2], &point),
            Err(TokenError::KeyMismatch(m)) if m.contains("CKA_DERIVE")
        ));
    }

    #[test]
    fn key_construction_checks_the_certificate() {
        let p256_cert = leaf("p256", "p256@example.org", p256_spki(), 30);
        // the RSA private key with the P-256 certificate
        assert!(matches!(
            SoftKey::from_pkcs8_der("x", [1u8], &rsa_pkcs8(), &p256_cert, Vec::new()),
            Err(TokenError::KeyMismatch(_))
        ));
        assert!(matches!(
            SoftKey::from_pkcs8_der("x", [1u8], &[1, 2, 3], &p256_cert, Vec::new()),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            SoftKey::from_pkcs8_der("x", [1u8], &p256_pkcs8(), &[0x30, 0], Vec::new()),
            Err(TokenError::Invalid(_))
        ));
        // PEM
        use der::EncodePem;
        use p256::pkcs8::EncodePrivateKey;
        let key_pem = p256_key()
            .to_pkcs8_pem(der::pem::LineEnding::LF)
            .expect("PEM");
        let cert = x509_cert::Certificate::from_der(&p256_cert).expect("cert");
        let cert_pem = cert.to_pem(der::pem::LineEnding::LF).expect("PEM");
        let k = SoftKey::from_pem("pem", [5u8], &key_pem, &cert_pem, Vec::new()).expect("PEM key");
        assert_eq!(k.entry().certificate.as_deref(), Some(&p256_cert[..]));
        assert_eq!(k.entry().public.algorithm_name(), "ec-p256");
    }
}
