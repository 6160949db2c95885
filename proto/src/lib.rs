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

#[cfg(feature = "autostart")]
pub mod autostart;

pub use client::{cache_dir, crl_cache_dir, default_socket_path, state_dir, Client, ClientError};
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
    /// The JSON did not decode. The message never repeats a value of the request (a PIN
    /// sent as a number must not come back in an error or a log line).
    #[error("malformed message: {}", redacted(.0))]
    BadMessage(#[from] serde_json::Error),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A JSON error without the values it may quote: serde names the offending value in
/// "invalid type: integer `1234`" — which may be a PIN.
fn redacted(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if ["invalid type", "invalid value", "invalid length"]
        .iter()
        .any(|k| text.contains(k))
    {
        format!(
            "a member has the wrong type or value (line {}, column {})",
            e.line(),
            e.column()
        )
    } else {
        text
    }
}

/// The one wording for "this token needs its PIN", wherever it is said: the agent's
/// `pin-required` error, `tokenmail status`, `tokenmail doctor`.
pub fn pin_required_message(token: &str) -> String {
    format!("token {token:?} needs its PIN: run `tokenmail login`")
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

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn a_pin_sent_as_a_number_is_not_repeated() {
        let e = decode_message::<v1::Request>(br#"{"op":"login","pin":918273}"#)
            .expect_err("a number is not a PIN string");
        let text = e.to_string();
        assert!(!text.contains("918273"), "{text}");
        assert!(text.contains("wrong type"), "{text}");
        // other errors keep their help
        let e = decode_message::<v1::Request>(br#"{"op":"sign-digest"}"#).expect_err("missing");
        assert!(e.to_string().contains("missing field"), "{e}");
    }
}
