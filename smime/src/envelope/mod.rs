//! S/MIME encryption and decryption: CMS EnvelopedData (AES-CBC) and
//! AuthEnvelopedData (AES-GCM, RFC 5083/5084), streaming and sans-IO.
//!
//! * Private-key operations go through [`RecipientKey`], implemented by the
//!   agent over a token (and by [`SoftwareKey`] for tests). Everything else —
//!   CMS, MIME, content encryption, KDF, key wrap — runs in-process.
//! * Encryption: [`Encryptor`] (push API: header bytes, `update`, trailer;
//!   BER with indefinite lengths like `openssl cms -stream`, or DER with
//!   [`Encryptor::new_with_length`]) or [`encrypt`] for whole buffers (DER).
//!   [`mime::encrypt_message`] and the pieces next to it add the S/MIME
//!   framing. Recipients: RSA key transport (RSAES-OAEP
//!   SHA-256 by default, or PKCS#1 v1.5) and ECDH ephemeral-static key
//!   agreement on P-256/P-384 (RFC 5753), identified by issuerAndSerialNumber.
//! * Decryption: [`EnvelopeParser`] reads the header (DER or BER as
//!   `openssl cms -stream` writes it), [`ParsedEnvelope::decryptor`] recovers the
//!   content key through the [`RecipientKey`], and [`Decryptor`] streams the
//!   content. [`MessageDecryptor`] wraps the three, plus MIME/PEM/DER
//!   detection ([`mime::CmsInputDecoder`]), in one push API.
//!
//! # Unverified plaintext — read this before using [`Decryptor`]
//!
//! [`Decryptor::update`] returns [`Unverified`] plaintext. For an
//! AuthEnvelopedData (AES-GCM) **nothing it returns is authentic until
//! [`Decryptor::finish`] returned `Ok`**: the tag is at the end of the
//! message. For EnvelopedData (CBC) the padding is only checked at the end,
//! and the content is never authenticated at all ([`Decrypted::authenticated`]
//! is `false`). Callers must write the plaintext to a temporary place and
//! release it (rename the file, hand it on) only when `finish` succeeded; on
//! any error, discard everything `update` returned.
//!
//! # Errors
//!
//! After the recipient has been matched, every failure — a wrong key, a bad
//! RSA padding, a failed AES key unwrap, bad CBC padding, a bad GCM tag, a
//! truncated stream — is the one [`DecryptError::Failed`], and for PKCS#1 v1.5
//! key transport a failed RSA decryption is not even reported at that point
//! (a random content key is used instead, RFC 3218 §2.3.2), so that the
//! decrypting agent is not a padding oracle.

mod ber;
mod content;
mod decrypt;
mod encrypt;
pub mod mime;
mod oids;
mod recipients;
mod soft;

use zeroize::Zeroizing;

pub use content::ContentCipher;
pub use decrypt::{
    decrypt, DecryptOutcome, Decrypted, Decryptor, EnvelopeKind, EnvelopeParser, MessageDecryptor,
    ParsedEnvelope, RecipientId, Unverified,
};
pub use encrypt::{encrypt, EncryptRecipient, Encryptor};
pub use soft::SoftwareKey;

/// The hash of RSAES-OAEP (used for both the label hash and MGF1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OaepHash {
    /// SHA-1 (the RFC 4055 default; decryption only in practice).
    Sha1,
    /// SHA-256 (what we produce).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// An RSA key-transport padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyTransport {
    /// RSAES-PKCS1-v1_5 (rsaEncryption).
    RsaPkcs1v15,
    /// RSAES-OAEP with MGF1 over the same hash and an empty label.
    RsaOaep {
        /// The OAEP hash.
        hash: OaepHash,
    },
}

/// Why a private-key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyOpError {
    /// The key cannot be used now (token removed, PIN refused or cancelled,
    /// agent gone). Reported to the user as is: it says nothing about the
    /// ciphertext.
    #[error("key unavailable: {0}")]
    Unavailable(String),
    /// The key does not support this operation or mechanism.
    #[error("unsupported key operation: {0}")]
    Unsupported(String),
    /// The operation ran and failed (e.g. bad RSA padding). Never shown in
    /// detail: it becomes [`DecryptError::Failed`].
    #[error("key operation failed")]
    Failed,
}

/// The private half of a recipient, usually on a token.
///
/// The agent implements it with PKCS#11 / PIV; [`SoftwareKey`] implements it
/// in software for tests.
pub trait RecipientKey {
    /// The recipient's certificate, used to match RecipientInfo identifiers
    /// (issuerAndSerialNumber or subjectKeyIdentifier).
    fn certificate(&self) -> &x509_cert::Certificate;

    /// RSA key transport: decrypt the wrapped content-encryption key
    /// (`CKM_RSA_PKCS` / `CKM_RSA_PKCS_OAEP` with MGF1 over the same hash and
    /// no label).
    ///
    /// Implementations return [`KeyOpError::Failed`] for any failure of the
    /// operation itself (bad padding included) without detail, and
    /// [`KeyOpError::Unsupported`] when the token lacks the mechanism (SoftHSM
    /// 2.6.1 refuses OAEP with SHA-256, see shared/STACK.md).
    fn decrypt_key(
        &self,
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyOpError>;

    /// Raw ECDH shared secret (the x coordinate, field-size bytes) with the
    /// given SEC1-encoded peer point (`CKM_ECDH1_DERIVE` with `CKD_NULL`;
    /// the X9.63 KDF and the key unwrap run in-process). The point comes
    /// from the message: the token, or the implementation, must reject
    /// points not on the curve.
    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyOpError>;
}

impl<T: RecipientKey + ?Sized> RecipientKey for &T {
    fn certificate(&self) -> &x509_cert::Certificate {
        (**self).certificate()
    }
    fn decrypt_key(
        &self,
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        (**self).decrypt_key(alg, wrapped)
    }
    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        (**self).ecdh(peer_point)
    }
}

/// Errors while encrypting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// No recipient was given.
    #[error("no recipients")]
    NoRecipients,
    /// A recipient certificate cannot be used (key type, curve, key usage).
    #[error("recipient certificate {subject}: {reason}")]
    UnsupportedRecipient {
        /// The certificate's subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The content is longer than the cipher allows with one key (AES-GCM: 64 GiB).
    #[error("content too long for this cipher")]
    TooLong,
    /// [`Encryptor::new_with_length`] was given a different number of bytes.
    #[error("the content length differs from the length declared")]
    LengthMismatch,
    /// `update` or `finish` called out of order.
    #[error("encryptor used after finish")]
    Finished,
    /// DER encoding failed.
    #[error("DER encoding: {0}")]
    Der(der::Error),
    /// An internal invariant failed.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Errors while decrypting.
///
/// Only [`DecryptError::Failed`] can happen once the recipient was matched and
/// the key operation started (except [`DecryptError::KeyUnavailable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The input is not a CMS envelope we can read (before any key was used).
    #[error("not a valid S/MIME encrypted message: {0}")]
    Malformed(&'static str),
    /// A well-formed envelope using something we do not implement.
    #[error("unsupported S/MIME encrypted message: {0}")]
    Unsupported(String),
    /// None of the envelope's recipients is this key's certificate.
    #[error("this message is not encrypted to this key's certificate")]
    NotARecipient,
    /// The key could not be used (token absent, PIN refused…).
    #[error("{0}")]
    KeyUnavailable(String),
    /// Decryption failed (one error for every cryptographic failure).
    #[error("decryption failed")]
    Failed,
}
