//! tokenmail wire protocol, version 1, and a blocking client.
//!
//! A connection is a sequence of frames ([`frame`]): a 12-byte header (magic `TKML`,
//! version, kind, length) and a payload of at most [`frame::MAX_FRAME`] bytes. Requests
//! and responses are JSON objects ([`v1`]); data streams are raw chunks ended by an
//! `End` frame. The full specification is docs/protocol.md.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
#[cfg(feature = "tokio")]
pub mod codec;
pub mod frame;
pub mod v1;

#[cfg(feature = "smime")]
pub mod smime;

pub use client::{default_socket_path, Client, ClientError};
pub use frame::{FrameKind, Header, MAX_FRAME};

/// Errors of the framing and message layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// Not a tokenmail frame.
    #[error("bad frame magic (not a tokenmail peer)")]
    BadMagic,
    /// Another major version.
    #[error("unsupported protocol version {0}.{1} (this side speaks 1.x)")]
    UnsupportedVersion(u8, u8),
    /// Over the size cap.
    #[error("frame of {0} bytes exceeds the {max} byte limit", max = frame::MAX_FRAME)]
    TooLarge(usize),
    /// Malformed header.
    #[error("malformed frame: {0}")]
    BadFrame(String),
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The JSON did not decode.
    #[error("malformed message: {0}")]
    BadMessage(#[from] serde_json::Error),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes a message (request or response) as a `Message` frame payload.
pub fn encode_message<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let payload = serde_json::to_vec(msg)?;
    if payload.len() > MAX_FRAME {
        return Err(ProtoError::TooLarge(payload.len()));
    }
    Ok(payload)
}

/// Decodes a `Message` frame payload.
pub fn decode_message<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ProtoError> {
    Ok(serde_json::from_slice(payload)?)
}
