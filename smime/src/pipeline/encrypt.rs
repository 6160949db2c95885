//! Encryption: the entity (Content-* fields and body, made CRLF) through the encryptor and
//! base64, chunk by chunk; From, To, Subject… stay outside.

use std::io::Read;

use super::{ChunkSink, PipelineError, CHUNK};
use crate::envelope::mime::{
    find_header_end, looks_like_headers, outer_headers, split_headers, SplitHeaders,
    MAX_HEADER_BLOCK,
};
use crate::envelope::{ContentCipher, EncryptRecipient, Encryptor};
use crate::mime::{Base64Lines, Canonicalizer};

/// The plaintext of a message to encrypt, read from its source chunk by chunk: the MIME
/// entity (Content-* header fields, an empty line, the body), with CRLF line endings unless
/// the body is `Content-Transfer-Encoding: binary`. The header block (bounded by
/// [`MAX_HEADER_BLOCK`]) is read first; the other header fields (From, To, Subject…) stay
/// outside the encryption.
pub struct EntityReader<'a> {
    input: &'a mut dyn Read,
    /// The plaintext from the header block, handed out first.
    first: Option<Vec<u8>>,
    binary: bool,
    canon: Canonicalizer,
    buf: Vec<u8>,
    chunk: usize,
}

impl std::fmt::Debug for EntityReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityReader")
            .field("binary", &self.binary)
            .finish_non_exhaustive()
    }
}

impl<'a> EntityReader<'a> {
    /// Reads the header block; returns the reader and the header fields that stay outside
    /// the encryption (CRLF-terminated).
    pub fn open(input: &'a mut dyn Read) -> Result<(Self, Vec<u8>), PipelineError> {
        Self::open_with(input, CHUNK)
    }

    /// As [`EntityReader::open`], reading `chunk` bytes at a time.
    pub fn open_with(
        input: &'a mut dyn Read,
        chunk: usize,
    ) -> Result<(Self, Vec<u8>), PipelineError> {
        let chunk = chunk.max(4096);
        let mut head = Vec::with_capacity(chunk);
        let (split, body_start) = loop {
            let n = crate::text::read_some(input, &mut head, chunk).map_err(PipelineError::Read)?;
            if !head.is_empty() && !looks_like_headers(&head) {
                break (SplitHeaders::default(), 0);
            }
            if let Some((end, body)) = find_header_end(&head) {
                break (split_headers(&head[..end]), body);
            }
            if n == 0 {
                // headers only (or empty input)
                let s = if head.is_empty() {
                    SplitHeaders::default()
                } else {
                    split_headers(&head)
                };
                let len = head.len();
                break (s, len);
            }
            if head.len() > MAX_HEADER_BLOCK {
                return Err(PipelineError::HeaderTooLarge);
            }
        };
        let mut canon = Canonicalizer::default();
        let mut text = Vec::with_capacity(chunk + chunk / 8);
        canon.update_into(&split.inner, &mut text);
        canon.update_into(b"\r\n", &mut text);
        let binary = split.body_is_binary();
        if binary {
            text.extend_from_slice(&head[body_start..]);
        } else {
            canon.update_into(&head[body_start..], &mut text);
        }
        Ok((
            Self {
                input,
                first: Some(text),
                binary,
                canon,
                buf: Vec::with_capacity(chunk),
                chunk,
            },
            split.outer,
        ))
    }

    /// Appends the next plaintext chunk to `out`; `false` at the end.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, PipelineError> {
        if let Some(first) = self.first.take() {
            out.extend_from_slice(&first);
            return Ok(true);
        }
        self.buf.clear();
        let n = crate::text::read_some(self.input, &mut self.buf, self.chunk)
            .map_err(PipelineError::Read)?;
        if n == 0 {
            return Ok(false);
        }
        if self.binary {
            out.extend_from_slice(&self.buf);
        } else {
            self.canon.update_into(&self.buf, out);
        }
        Ok(true)
    }
}

/// Encrypts a message from `input` into an `application/pkcs7-mime` message, streaming:
/// the header block (bounded) is read first and split (From, To, Subject… stay outside),
/// then the entity goes through CRLF canonicalisation (not for
/// `Content-Transfer-Encoding: binary`), the encryptor and base64, chunk by chunk. Hand
/// `output` a [`BackgroundFeed`] to write on a second thread.
pub fn encrypt_stream(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
    input: &mut dyn Read,
    output: &mut dyn ChunkSink,
) -> Result<(), PipelineError> {
    encrypt_stream_with(recipients, cipher, input, output, CHUNK)
}

/// As [`encrypt_stream`], reading `chunk` bytes at a time (memory is a few chunks).
pub fn encrypt_stream_with(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
    input: &mut dyn Read,
    output: &mut dyn ChunkSink,
    chunk: usize,
) -> Result<(), PipelineError> {
    let enc_err = PipelineError::Encrypt;
    let (mut entity, outer) = EntityReader::open_with(input, chunk)?;
    let chunk = chunk.max(4096);
    let out_chunk = chunk / 57 * 78 + 1024;
    let (mut enc, header) = Encryptor::new(recipients, cipher).map_err(enc_err)?;
    let mut b64 = Base64Lines::default();
    let mut text = Vec::with_capacity(chunk + chunk / 8);
    let mut ct = Vec::with_capacity(chunk + chunk / 8);
    let mut out = output.buffer(out_chunk);
    out.extend_from_slice(&outer_headers(&outer, cipher));
    b64.update_into(&header, &mut out);
    loop {
        text.clear();
        if !entity.next_into(&mut text)? {
            break;
        }
        ct.clear();
        enc.update_into(&text, &mut ct).map_err(enc_err)?;
        b64.update_into(&ct, &mut out);
        output.put(out).map_err(PipelineError::Write)?;
        out = output.buffer(out_chunk);
    }
    b64.update_into(&enc.finish().map_err(enc_err)?, &mut out);
    out.extend_from_slice(&b64.finish());
    output.put(out).map_err(PipelineError::Write)?;
    Ok(())
}
