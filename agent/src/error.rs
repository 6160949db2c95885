//! One error type for everything a request can fail with, and one route to the wire.
//!
//! Each layer keeps its own error ([`TokenError`], the S/MIME drivers' [`PipelineError`],
//! the framing's [`ProtoError`], decryption's [`DecryptError`]); [`AgentError`] gathers them
//! (`#[from]`), and [`AgentError::to_wire`] is the single place where an error becomes the
//! wire's `error` result: a code, a message that says what to do, and structured fields
//! (the token, the PIN tries left, a hint) that clients read instead of the message text.

use tokenmail_proto::v1::{ErrorCode, ErrorInfo, Response};
use tokenmail_proto::ProtoError;
use tokenmail_smime::envelope::DecryptError;
use tokenmail_smime::pipeline::PipelineError;
use tokenmail_smime::SmimeError;
use tracing::{debug, warn};

use crate::token::TokenError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A token backend's error (PIN, presence, key, mechanism, the device itself).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The request, or its input, is wrong: the message says what to send instead.
    #[error("{0}")]
    BadRequest(String),
    /// Framing or protocol version.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A streaming driver (sign, verify, encrypt) failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Before any key was used: what is wrong with an encrypted message.
    #[error(transparent)]
    Message(DecryptError),
    /// Before any key was asked for: the `[decrypt] accept` policy refuses the message's
    /// content-encryption algorithm (the message says which and what to do).
    #[error("{0}")]
    CipherRefused(String),
    /// After a key was used: the one uniform decryption failure (no oracle).
    #[error("decryption failed")]
    DecryptFailed,
    /// The key exists but cannot do this (no certificate, wrong kind, no usage flag).
    #[error("{0}")]
    KeyMismatch(String),
    /// `sign-digest-cert`: the key the name selects has another certificate than the
    /// client's; nothing was signed.
    #[error("{0}")]
    CertificateChanged(String),
    /// No such token is configured, or it did not come (names it, says what to do).
    #[error("{0}")]
    NoToken(String),
    /// The agent is at its limits (connections, workers): try again later.
    #[error("{0}")]
    Busy(String),
    /// The agent's own failure (temporary file, randomness, a worker that stopped).
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// A bad request.
    pub fn bad(msg: impl Into<String>) -> Self {
        AgentError::BadRequest(msg.into())
    }

    /// The one mapping to the wire, logged at the level it deserves.
    pub fn to_wire(&self) -> ErrorInfo {
        let (code, token, tries_left) = match self {
            AgentError::Token(e) => token_fields(e),
            AgentError::BadRequest(_) => (ErrorCode::BadRequest, None, None),
            AgentError::Proto(ProtoError::UnsupportedVersion(..)) => {
                (ErrorCode::UnsupportedVersion, None, None)
            }
            AgentError::Proto(_) => (ErrorCode::BadRequest, None, None),
            AgentError::Pipeline(e) => (pipeline_code(e), None, None),
            AgentError::Message(e) => (message_code(e), None, None),
            AgentError::DecryptFailed => (ErrorCode::DecryptFailed, None, None),
            AgentError::CipherRefused(_) => (ErrorCode::MechanismUnsupported, None, None),
            AgentError::KeyMismatch(_) => (ErrorCode::KeyMismatch, None, None),
            AgentError::NoToken(_) => (ErrorCode::TokenNotPresent, None, None),
            AgentError::CertificateChanged(_) => (ErrorCode::CertificateChanged, None, None),
            AgentError::Busy(_) | AgentError::Internal(_) => (ErrorCode::Internal, None, None),
        };
        match self {
            AgentError::Token(TokenError::Pkcs11 { .. })
            | AgentError::Internal(_)
            | AgentError::Pipeline(PipelineError::Background(_)) => warn!("request failed: {self}"),
            _ => debug!("request failed: {self}"),
        }
        ErrorInfo {
            code,
            message: self.message(),
            token,
            tries_left,
            hint: hint(code).map(str::to_string),
        }
    }

    /// The message for the user (internal details stay in the log).
    fn message(&self) -> String {
        match self {
            AgentError::Pipeline(PipelineError::Background(_)) => {
                "internal error; see the agent's log".into()
            }
            AgentError::Pipeline(PipelineError::TooLargeForMemory { limit }) => format!(
                "this form of signed message is verified in memory, up to {} MiB; send multipart/signed, base64 application/pkcs7-mime or DER CMS",
                limit >> 20
            ),
            AgentError::Pipeline(PipelineError::Read(e)) => format!("input stream: {e}"),
            AgentError::Pipeline(PipelineError::Write(e))
                if e.kind() == std::io::ErrorKind::FileTooLarge =>
            {
                e.to_string()
            }
            AgentError::Pipeline(PipelineError::Write(e)) => {
                format!("the agent's temporary file failed: {e}")
            }
            AgentError::Pipeline(PipelineError::Sign(e)) => {
                format!("cannot sign this message: {e}")
            }
            AgentError::Pipeline(PipelineError::Encrypt(e)) => format!("cannot encrypt: {e}"),
            AgentError::Message(DecryptError::Malformed(m)) => {
                format!("not a readable S/MIME encrypted message: {m}")
            }
            AgentError::Message(DecryptError::NotARecipient) => {
                "none of the keys on the tokens is a recipient of this message".into()
            }
            other => other.to_string(),
        }
    }
}

/// Code, token and tries left of a token error.
fn token_fields(e: &TokenError) -> (ErrorCode, Option<String>, Option<u32>) {
    match e {
        TokenError::Module { .. } | TokenError::Pkcs11 { .. } => {
            (ErrorCode::TokenError, None, None)
        }
        TokenError::NotPresent(t) => (ErrorCode::TokenNotPresent, Some(t.clone()), None),
        TokenError::NotInModule { token, .. } => {
            (ErrorCode::TokenNotPresent, Some(token.clone()), None)
        }
        TokenError::CardAbsent(t) => (ErrorCode::TokenNotPresent, Some(t.clone()), None),
        TokenError::Pcsc(_) | TokenError::Piv { .. } | TokenError::Retry => {
            (ErrorCode::TokenError, None, None)
        }
        TokenError::PinRequired(t) => (ErrorCode::PinRequired, Some(t.clone()), None),
        TokenError::PinSourceRefused {
            token, tries_left, ..
        } => (ErrorCode::PinRequired, Some(token.clone()), *tries_left),
        TokenError::PinIncorrect {
            token, tries_left, ..
        } => (ErrorCode::PinIncorrect, Some(token.clone()), *tries_left),
        TokenError::PinLocked(t) => (ErrorCode::PinLocked, Some(t.clone()), Some(0)),
        TokenError::NoSuchKey(_) => (ErrorCode::NoSuchKey, None, None),
        TokenError::KeyMismatch(_) => (ErrorCode::KeyMismatch, None, None),
        TokenError::Invalid(_) => (ErrorCode::BadRequest, None, None),
        TokenError::PinSource(_) => (ErrorCode::PinRequired, None, None),
        TokenError::Mechanism(_) => (ErrorCode::MechanismUnsupported, None, None),
        TokenError::DecryptFailed => (ErrorCode::DecryptFailed, None, None),
        TokenError::ReadOnly(t) => (ErrorCode::TokenReadOnly, Some(t.clone()), None),
    }
}

fn pipeline_code(e: &PipelineError) -> ErrorCode {
    match e {
        PipelineError::Write(w) if w.kind() == std::io::ErrorKind::FileTooLarge => {
            ErrorCode::BadRequest
        }
        PipelineError::Write(_) | PipelineError::Reread(_) | PipelineError::Reopen(_) => {
            ErrorCode::Internal
        }
        PipelineError::Background(_) => ErrorCode::Internal,
        PipelineError::Signer(SmimeError::Malformed(_) | SmimeError::Der(_)) => {
            ErrorCode::BadRequest
        }
        PipelineError::Signer(_) => ErrorCode::KeyMismatch,
        _ => ErrorCode::BadRequest,
    }
}

fn message_code(e: &DecryptError) -> ErrorCode {
    match e {
        DecryptError::Malformed(_) => ErrorCode::BadRequest,
        DecryptError::Unsupported(_) => ErrorCode::MechanismUnsupported,
        DecryptError::NotARecipient => ErrorCode::NoSuchKey,
        _ => ErrorCode::DecryptFailed,
    }
}

/// What to do, per code, for clients that show a hint of their own.
fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::PinRequired => {
            "log in: `tokenmail login` (or let the agent ask through pinentry)"
        }
        ErrorCode::PinIncorrect => "type the PIN again; a PIN blocks after its last try",
        ErrorCode::PinLocked => {
            "unblock the PIN with the SO PIN / PUK (e.g. `yubico-piv-tool -a unblock-pin`)"
        }
        ErrorCode::TokenNotPresent => "insert the token or card (or pass --wait SECONDS)",
        ErrorCode::NoSuchKey => "see `tokenmail keys` for the keys the agent can use",
        _ => return None,
    })
}

impl From<AgentError> for Response {
    fn from(e: AgentError) -> Self {
        Response::Error(e.to_wire())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Needs its PIN" is said one way, by the agent and by the CLI (proto's function).
    #[test]
    fn pin_required_has_the_one_wording() {
        let e = AgentError::from(TokenError::PinRequired("work".into())).to_wire();
        assert_eq!(e.message, tokenmail_proto::pin_required_message("work"));
        assert_eq!(
            e.message,
            "token \"work\" needs its PIN: run `tokenmail login`"
        );
    }

    #[test]
    fn the_wire_error_carries_the_fields_clients_read() {
        let w = AgentError::from(TokenError::PinIncorrect {
            token: "card".into(),
            hint: " (2 tries left before the PIN is blocked)".into(),
            tries_left: Some(2),
        })
        .to_wire();
        assert_eq!(w.code, ErrorCode::PinIncorrect);
        assert_eq!(w.token.as_deref(), Some("card"));
        assert_eq!(w.tries_left, Some(2));
        assert!(w.hint.is_some());
        let w = AgentError::from(TokenError::PinLocked("card".into())).to_wire();
        assert_eq!((w.code, w.tries_left), (ErrorCode::PinLocked, Some(0)));
        let w = AgentError::from(TokenError::PinRequired("t".into())).to_wire();
        assert_eq!(
            (w.code, w.token.as_deref()),
            (ErrorCode::PinRequired, Some("t"))
        );
    }

    #[test]
    fn decryption_failures_are_one_message_and_internals_stay_in_the_log() {
        let w = AgentError::DecryptFailed.to_wire();
        assert_eq!(
            (w.code, w.message.as_str()),
            (ErrorCode::DecryptFailed, "decryption failed")
        );
        let w = AgentError::from(TokenError::DecryptFailed).to_wire();
        assert_eq!(
            (w.code, w.message.as_str()),
            (ErrorCode::DecryptFailed, "decryption failed")
        );
        let w = AgentError::Pipeline(PipelineError::Background(std::io::Error::other(
            "thread 7 panicked at src/x.rs:1",
        )))
        .to_wire();
        assert_eq!(w.code, ErrorCode::Internal);
        assert!(!w.message.contains("src/"), "{}", w.message);
    }
}
