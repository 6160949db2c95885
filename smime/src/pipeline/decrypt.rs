//! Decryption: an `application/pkcs7-mime` enveloped message (or bare DER/PEM CMS) into the
//! plaintext entity, with the message's own header fields put back in front.
//!
//! The key is chosen by the caller, once the envelope's RecipientInfos are known ([`pick`]
//! callback): the CLI asks the agent, the agent looks through its tokens. Everything written
//! to the output is **unverified** until the driver returns `Ok`: the caller spools it and
//! releases it only then (AEAD tag checked, CBC padding checked).
//!
//! [`pick`]: decrypt_stream

use std::io::Read;

use super::{read_chunk, ChunkSink, CHUNK};
use crate::envelope::{DecryptError, EnvelopeKind, MessageDecryptor, ParsedEnvelope, RecipientKey};

/// Of the input's start, this much is kept to copy the outer header fields from.
const HEAD_KEPT: usize = 64 * 1024;

/// Which content-encryption algorithms a decryption accepts. Checked as soon as the
/// envelope is known, before any key is asked for or used: a refused message costs no
/// token operation and tells nothing about the ciphertext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CipherPolicy {
    /// Every supported cipher; the caller warns about CBC (no integrity) and 3DES (legacy).
    #[default]
    Any,
    /// AES only: 3DES is refused; AES-CBC is accepted with a warning.
    Aes,
    /// Authenticated encryption only (AES-GCM): every CBC message is refused.
    Authenticated,
}

impl CipherPolicy {
    /// Parses `any`, `aes` or `authenticated` (also `gcm`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "any" => Some(Self::Any),
            "aes" | "no-3des" => Some(Self::Aes),
            "authenticated" | "gcm" => Some(Self::Authenticated),
            _ => None,
        }
    }

    /// The spelling [`CipherPolicy::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Aes => "aes",
            Self::Authenticated => "authenticated",
        }
    }

    /// Why `env` is refused, if it is.
    pub fn refuses(self, env: &ParsedEnvelope) -> Option<String> {
        let cipher = env.cipher_name();
        match self {
            Self::Any => None,
            Self::Aes if env.legacy_cipher() => Some(format!(
                "the message is encrypted with {cipher}, a legacy cipher the decrypt policy \"{}\" refuses ([decrypt] accept, or --accept): ask the sender to use AES",
                self.name()
            )),
            Self::Authenticated if !env.authenticated() => Some(format!(
                "the message is encrypted with {cipher}, which does not protect its integrity, and the decrypt policy \"{}\" accepts only AES-GCM ([decrypt] accept, or --accept): ask the sender to use AES-GCM",
                self.name()
            )),
            _ => None,
        }
    }
}

/// Options of [`decrypt_stream`].
#[derive(Clone, Debug, Default)]
pub struct DecryptStream {
    /// Only the decrypted entity, without the message's outer header fields.
    pub entity_only: bool,
    /// Read size (0 = [`CHUNK`]).
    pub chunk: usize,
    /// The content-encryption algorithms accepted.
    pub policy: CipherPolicy,
}

/// A successful decryption.
#[derive(Clone, Debug)]
pub struct DecryptOutcome {
    /// EnvelopedData (CBC) or AuthEnvelopedData (GCM).
    pub kind: EnvelopeKind,
    /// `true` when an AEAD tag verified the content.
    pub authenticated: bool,
    /// The content-encryption algorithm: `AES-256-GCM`, `AES-128-CBC`, `3DES-CBC`.
    pub cipher: &'static str,
    /// A legacy 64-bit-block cipher (3DES) was used.
    pub legacy: bool,
}

/// Why [`decrypt_stream`] failed. Once a key was used, every failure is the one
/// [`DecryptFailure::Failed`]: no padding or unwrap oracle.
#[derive(Debug, thiserror::Error)]
pub enum DecryptFailure<E> {
    /// Reading the input failed.
    #[error("cannot read the input")]
    Read(#[source] std::io::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    /// Before a key was used: what is wrong with the message.
    #[error("{0}")]
    Message(DecryptError),
    /// Before a key was asked for: the cipher policy refuses the message's algorithm.
    #[error("{0}")]
    Refused(String),
    /// The caller found no key for the envelope (its own error).
    #[error("{0}")]
    NoKey(E),
    /// The key could not be used (token absent, PIN refused): says nothing about the
    /// ciphertext.
    #[error("the key could not be used: {0}")]
    KeyUnavailable(String),
    /// After the key was used: decryption failed (wrong key, altered message, or the key
    /// operation failed — the caller's key keeps the reason if it is about the token).
    #[error("decryption failed")]
    Failed,
}

/// Decrypts `input` into `output`. `pick` is called once, with the envelope, and returns
/// the key to unlock it with (or the caller's reason why there is none).
pub fn decrypt_stream<K: RecipientKey, E>(
    input: &mut dyn Read,
    output: &mut dyn ChunkSink,
    stream: &DecryptStream,
    pick: impl FnOnce(&ParsedEnvelope) -> Result<K, E>,
) -> Result<DecryptOutcome, DecryptFailure<E>> {
    let chunk = if stream.chunk == 0 {
        CHUNK
    } else {
        stream.chunk
    };
    let w = DecryptFailure::Write;
    let mut md = MessageDecryptor::new();
    let mut prefix: Vec<u8> = Vec::new();
    let mut header_written = stream.entity_only;
    let mut pick = Some(pick);
    let mut key: Option<K> = None;
    let mut cipher: Option<(&'static str, bool)> = None;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = read_chunk(input, &mut buf).map_err(|e| match e {
            super::PipelineError::Read(e) => DecryptFailure::Read(e),
            other => DecryptFailure::Read(std::io::Error::other(other.to_string())),
        })?;
        if n == 0 {
            break;
        }
        if !header_written && prefix.len() < HEAD_KEPT {
            let take = n.min(HEAD_KEPT - prefix.len());
            prefix.extend_from_slice(&buf[..take]);
        }
        let mut out = output.buffer(chunk);
        md.push_unverified_into(&buf[..n], &mut out)
            .map_err(|e| failure(key.is_some(), e))?;
        if !header_written && md.envelope().is_some() {
            // the message's own header fields travel outside the encryption: put them back
            let mut head = crate::mime::outer_header_block(&prefix);
            head.extend_from_slice(&out);
            out = head;
            header_written = true;
            prefix = Vec::new();
        }
        output.put(out).map_err(w)?;
        if key.is_some() {
            continue;
        }
        // (the callback is taken only once the envelope is known)
        let Some(env) = md.envelope() else {
            continue;
        };
        let Some(p) = pick.take() else {
            continue;
        };
        if let Some(why) = stream.policy.refuses(env) {
            return Err(DecryptFailure::Refused(why));
        }
        cipher = Some((env.cipher_name(), env.legacy_cipher()));
        let k = key.insert(p(env).map_err(DecryptFailure::NoKey)?);
        let first = md.unlock(k).map_err(|e| match e {
            DecryptError::NotARecipient | DecryptError::Unsupported(_) => {
                DecryptFailure::Message(e)
            }
            DecryptError::KeyUnavailable(m) => DecryptFailure::KeyUnavailable(m),
            _ => DecryptFailure::Failed,
        })?;
        output.put(first.into_unverified_bytes()).map_err(w)?;
    }
    if key.is_none() {
        return Err(DecryptFailure::Message(match md.finish() {
            Err(e) => e,
            Ok(_) => DecryptError::Malformed("no recipient information"),
        }));
    }
    let outcome = md.finish().map_err(|_| DecryptFailure::Failed)?;
    output.put(outcome.final_plaintext).map_err(w)?;
    let (cipher, legacy) = cipher.unwrap_or(("unknown", false));
    Ok(DecryptOutcome {
        kind: outcome.kind,
        authenticated: outcome.authenticated,
        cipher,
        legacy,
    })
}

/// A failure while pushing input: before the key, the message's fault; after, uniform.
fn failure<E>(key_used: bool, e: DecryptError) -> DecryptFailure<E> {
    if key_used {
        DecryptFailure::Failed
    } else {
        DecryptFailure::Message(e)
    }
}
