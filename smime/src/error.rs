//! Errors of the signing / verification core.

/// Errors from building or parsing S/MIME and CMS structures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmimeError {
    /// Input is not well-formed (BER/DER, CMS or MIME).
    #[error("malformed input: {0}")]
    Malformed(String),
    /// DER encoding/decoding error.
    #[error("DER error: {0}")]
    Der(#[from] der::Error),
    /// Something valid but not supported here.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The private-key operation failed.
    #[error("signer failed: {0}")]
    Signer(#[from] crate::signed::SignerError),
    /// The signer's certificate is not valid at the signing time: nothing is signed.
    #[error("{0}")]
    SignerCertificate(String),
    /// The signature timestamp could not be had (the TSA, or its answer).
    #[error("{0}")]
    Timestamp(String),
    /// The signature produced does not verify with the given certificate (wrong key/cert pairing?).
    #[error("the signature made by the key does not verify with the signer certificate: {0}")]
    SelfCheck(String),
}
