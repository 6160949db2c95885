//! Requests to the agent: one connection per request (the agent keeps no per-connection
//! state other than the handshake, docs/protocol.md §5.5), so threads and forked children
//! never share a socket.

use std::path::Path;

use cryptoki_sys::*;
use tokenmail_proto::v1::{ErrorCode, KeyInfo, Request, Response, TokenStatus};
use tokenmail_proto::{Client, ClientError};

/// The name the agent logs for this client.
const CLIENT: &str = concat!("tokenmail-pkcs11/", env!("CARGO_PKG_VERSION"));

/// Sends one request. `Client::connect` checks that the agent runs as this user before
/// anything (a PIN) is sent.
/// With no agent there, one is started from the configuration as the CLI does it (once
/// per process; `auto_start = false` turns it off; docs/everyday.md).
pub(crate) fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let mut c = match Client::connect(socket, CLIENT) {
        Err(ClientError::NoAgent { .. })
            if matches!(
                tokenmail_proto::autostart::start_for(socket, false, "tokenmail-pkcs11"),
                Ok(true)
            ) =>
        {
            Client::connect(socket, CLIENT)?
        }
        r => r?,
    };
    c.call(req)
}

/// The agent's tokens, or `None` when no agent answers.
pub(crate) fn tokens(socket: &Path) -> Option<Vec<TokenStatus>> {
    match call(socket, &Request::Status) {
        Ok(Response::Status(s)) => Some(s.tokens),
        _ => None,
    }
}

/// The agent's view of one token, by label.
pub(crate) fn token(socket: &Path, label: &str) -> Option<TokenStatus> {
    tokens(socket)?.into_iter().find(|t| t.label == label)
}

/// The keys of the present tokens.
pub(crate) fn keys(socket: &Path) -> Result<Vec<KeyInfo>, CK_RV> {
    match call(socket, &Request::ListKeys) {
        Ok(Response::Keys { keys }) => Ok(keys),
        Ok(_) => Err(CKR_DEVICE_ERROR),
        Err(e) => Err(rv(&e)),
    }
}

/// The PKCS#11 return value for an agent answer.
pub(crate) fn rv(e: &ClientError) -> CK_RV {
    match e.code() {
        Some(ErrorCode::PinRequired) => CKR_USER_NOT_LOGGED_IN,
        Some(ErrorCode::PinIncorrect) => CKR_PIN_INCORRECT,
        Some(ErrorCode::PinLocked) => CKR_PIN_LOCKED,
        Some(ErrorCode::TokenNotPresent) => CKR_TOKEN_NOT_PRESENT,
        Some(ErrorCode::MechanismUnsupported) => CKR_MECHANISM_INVALID,
        Some(ErrorCode::DecryptFailed) => CKR_ENCRYPTED_DATA_INVALID,
        Some(ErrorCode::KeyMismatch) => CKR_KEY_FUNCTION_NOT_PERMITTED,
        Some(ErrorCode::NoSuchKey) | Some(ErrorCode::CertificateChanged) => CKR_KEY_HANDLE_INVALID,
        Some(ErrorCode::BadRequest) => CKR_DATA_INVALID,
        Some(_) => CKR_FUNCTION_FAILED,
        // no agent, a lost connection, a protocol failure
        None => CKR_DEVICE_ERROR,
    }
}
