//! tokenmail-smime: the sans-IO S/MIME core.
//!
//! CMS SignedData / EnvelopedData / AuthEnvelopedData, MIME framing and certificate
//! path validation, written over small traits for the private-key operations so that
//! the same code runs with a key on a PKCS#11 token, a PIV card, or in software (tests).
//! Nothing here opens a file, a socket or a token; the clock is passed in. The streaming
//! drivers ([`pipeline`]) take readers and writers from the caller.
#![forbid(unsafe_code)]

pub mod address;
pub mod alg;
pub mod ber;
pub mod cert_policies;
mod crl_scope;
pub mod csr;
pub mod envelope;
pub mod error;
pub mod ess;
pub mod expiry;
pub mod keys;
pub mod mime;
pub mod name_constraints;
pub mod ocsp;
pub mod path;
pub mod pipeline;
pub mod pkcs12;
pub mod policy;
pub mod recipient;
pub mod reencode;
pub mod revcache;
pub mod revocation;
pub mod signed;
pub mod stream;
pub mod text;
pub mod trust;
pub mod tsp;
pub mod verify;

pub use error::SmimeError;
