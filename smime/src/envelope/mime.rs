//! MIME framing for S/MIME encryption (RFC 8551 §3.3):
//!
//! * encrypting: the original message's non-`Content-*` top-level headers
//!   (From, To, Subject, Date, …) stay outside; the MIME entity (`Content-*`
//!   headers and body, CRLF canonical) is encrypted; the result is an
//!   `application/pkcs7-mime; smime-type=enveloped-data` (CBC) or
//!   `smime-type=authEnveloped-data` (GCM) part, base64, as an attachment
//!   named `smime.p7m`.
//! * decrypting: [`CmsInputDecoder`] turns a MIME message or entity, a PEM
//!   (`CMS` / `PKCS7`) block or bare DER/BER into CMS bytes, streaming.
//!
//! Base64 is the `base64` crate's; nothing here hand-rolls it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{ContentCipher, DecryptError, EncryptError, EncryptRecipient, Encryptor};
use crate::mime::{Base64Lines, Canonicalizer};

/// Largest header block we read.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

// ---------------------------------------------------------------------------
// Encrypting

/// Where the header block of a message ends: `(end_of_headers, body_start)`.
/// `end_of_headers` excludes the empty line. `None` when no empty line was
/// found in `buf`.
pub fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    // an empty header block: the message starts with the empty line
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    while let Some(p) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + p;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some((nl + 1, nl + 3));
        }
        if rest.starts_with(b"\n") {
            return Some((nl + 1, nl + 2));
        }
        i = nl + 1;
    }
    None
}

/// Whether `buf` starts with an RFC 5322 header field (`Name: value`).
pub fn looks_like_headers(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    match line.iter().position(|b| *b == b':') {
        Some(0) | None => false,
        Some(c) => line[..c]
            .iter()
            .all(|b| (33..=126).contains(b) && *b != b':'),
    }
}

/// Header fields of a block, each with its continuation lines, without line
/// endings between the physical lines normalised.
fn fields(block: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in block.split_inclusive(|b| *b == b'\n') {
        let mut l = line.to_vec();
        while l.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            l.pop();
        }
        if l.is_empty() {
            continue;
        }
        if (l[0] == b' ' || l[0] == b'\t') && !out.is_empty() {
            if let Some(last) = out.last_mut() {
                last.extend_from_slice(b"\r\n");
                last.extend_from_slice(&l);
            }
        } else {
            out.push(l);
        }
    }
    out
}

fn field_name(f: &[u8]) -> String {
    let end = f.iter().position(|b| *b == b':').unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end])
        .trim()
        .to_ascii_lowercase()
}

/// A message's header block split for encryption.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitHeaders {
    /// Fields kept outside (CRLF-terminated), without MIME-Version and
    /// `Content-*`.
    pub outer: Vec<u8>,
    /// The `Content-*` fields (CRLF-terminated) that go into the encrypted entity.
    pub inner: Vec<u8>,
}

impl SplitHeaders {
    /// Whether the entity declares `Content-Transfer-Encoding: binary`, whose
    /// body must not be CRLF-canonicalised.
    pub fn body_is_binary(&self) -> bool {
        header_value(&fields(&self.inner), "content-transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("binary"))
    }
}

/// Splits a header block (without the empty line).
pub fn split_headers(block: &[u8]) -> SplitHeaders {
    let mut s = SplitHeaders::default();
    for f in fields(block) {
        let name = field_name(&f);
        if name.starts_with("content-") {
            s.inner.extend_from_slice(&f);
            s.inner.extend_from_slice(b"\r\n");
        } else if name == "mime-version" {
            // ours is written instead
        } else {
            s.outer.extend_from_slice(&f);
            s.outer.extend_from_slice(b"\r\n");
        }
    }
    s
}

/// The S/MIME media type parameters for a cipher.
pub fn smime_type(cipher: ContentCipher) -> &'static str {
    if cipher.is_authenticated() {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    }
}

/// The outer headers of the encrypted message, ending with the empty line.
pub fn outer_headers(kept: &[u8], cipher: ContentCipher) -> Vec<u8> {
    let mut h = kept.to_vec();
    h.extend_from_slice(b"MIME-Version: 1.0\r\n");
    h.extend_from_slice(
        format!(
            "Content-Type: application/pkcs7-mime; smime-type={}; name=smime.p7m\r\n",
            smime_type(cipher)
        )
        .as_bytes(),
    );
    h.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
    h.extend_from_slice(b"Content-Disposition: attachment; filename=smime.p7m\r\n");
    h.extend_from_slice(b"Content-Description: S/MIME Encrypted Message\r\n\r\n");
    h
}

/// Encrypts a whole RFC 5322 message (or MIME entity) into an S/MIME
/// message. Streaming callers use the pieces: [`find_header_end`],
/// [`split_headers`], [`outer_headers`], [`Canonicalizer`],
/// [`Encryptor`] and [`Base64Lines`], as `tokenmail encrypt` does.
pub fn encrypt_message(
    message: &[u8],
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
) -> Result<Vec<u8>, EncryptError> {
    let (split, body) = if looks_like_headers(message) {
        match find_header_end(message) {
            Some((end, body)) => (split_headers(&message[..end]), &message[body..]),
            None => (split_headers(message), &message[message.len()..]),
        }
    } else {
        (SplitHeaders::default(), message)
    };
    let mut entity = Vec::with_capacity(message.len() + 64);
    let mut canon = Canonicalizer::default();
    canon.update_into(&split.inner, &mut entity);
    canon.update_into(b"\r\n", &mut entity);
    if split.body_is_binary() {
        entity.extend_from_slice(body);
    } else {
        canon.update_into(body, &mut entity);
    }

    let (mut enc, header) = Encryptor::new(recipients, cipher)?;
    let mut out = outer_headers(&split.outer, cipher);
    let mut b64 = Base64Lines::default();
    b64.update_into(&header, &mut out);
    let ct = enc.update(&entity)?;
    b64.update_into(&ct, &mut out);
    b64.update_into(&enc.finish()?, &mut out);
    out.extend_from_slice(&b64.finish());
    Ok(out)
}

// ---------------------------------------------------------------------------
// Decrypting

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InState {
    Detect,
    Headers,
    Base64,
    Binary,
    PemBegin,
    PemBody,
    Done,
}

/// Streaming decoder from what a user hands to `decrypt` — a MIME message or
/// entity (`application/pkcs7-mime`, base64 or binary), a PEM block
/// (`-----BEGIN CMS-----`, `PKCS7`, `PKCS #7 SIGNED DATA`, gpgsm's `ENCRYPTED MESSAGE`)
/// or bare DER/BER —
/// to CMS bytes.
#[derive(Debug)]
pub struct CmsInputDecoder {
    state: InState,
    buf: Vec<u8>,
    b64: Vec<u8>,
}

impl Default for CmsInputDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn header_value(fields: &[Vec<u8>], name: &str) -> Option<String> {
    fields.iter().find(|f| field_name(f) == name).map(|f| {
        let c = f.iter().position(|b| *b == b':').unwrap_or(f.len());
        String::from_utf8_lossy(&f[(c + 1).min(f.len())..])
            .replace("\r\n", "")
            .trim()
            .to_string()
    })
}

impl CmsInputDecoder {
    /// A decoder that detects the input form from the first bytes.
    pub fn new() -> Self {
        Self {
            state: InState::Detect,
            buf: Vec::new(),
            b64: Vec::new(),
        }
    }

    /// Feeds input; returns decoded CMS bytes.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let mut out = Vec::with_capacity(data.len());
        self.push_into(data, &mut out)?;
        Ok(out)
    }

    /// Feeds input; appends decoded CMS bytes to `out`.
    pub fn push_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        match self.state {
            InState::Binary => {
                out.extend_from_slice(data);
                return Ok(());
            }
            InState::Base64 | InState::PemBody => {
                self.base64_text(data, out)?;
                return Ok(());
            }
            InState::Done => return Ok(()),
            _ => {}
        }
        self.buf.extend_from_slice(data);
        loop {
            match self.state {
                InState::Detect => {
                    let start = self.buf.iter().position(|b| !b.is_ascii_whitespace());
                    let Some(start) = start else {
                        self.buf.clear();
                        return Ok(());
                    };
                    let rest = &self.buf[start..];
                    if rest[0] == 0x30 {
                        self.state = InState::Binary;
                        out.extend_from_slice(rest);
                        self.buf = Vec::new();
                        return Ok(());
                    }
                    if rest.len() < 11 && b"-----BEGIN ".starts_with(rest) {
                        return Ok(());
                    }
                    if rest.starts_with(b"-----BEGIN ") {
                        self.buf.drain(..start);
                        self.state = InState::PemBegin;
                    } else {
                        self.state = InState::Headers;
                    }
                }
                InState::PemBegin => {
                    let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                        if self.buf.len() > 256 {
                            return Err(DecryptError::Malformed("bad PEM header line"));
                        }
                        return Ok(());
                    };
                    let line = String::from_utf8_lossy(&self.buf[..nl]).to_string();
                    let label = line
                        .trim()
                        .trim_start_matches("-----BEGIN ")
                        .trim_end_matches("-----");
                    if !matches!(
                        label,
                        "CMS" | "PKCS7" | "PKCS #7 SIGNED DATA" | "ENCRYPTED MESSAGE"
                    ) {
                        return Err(DecryptError::Unsupported(format!(
                            "PEM block {label:?} is not CMS"
                        )));
                    }
                    let rest = self.buf.split_off(nl + 1);
                    self.buf = Vec::new();
                    self.state = InState::PemBody;
                    self.base64_text(&rest, out)?;
                    return Ok(());
                }
                InState::Headers => {
                    if !looks_like_headers(&self.buf) && self.buf.contains(&b'\n') {
                        return Err(DecryptError::Malformed(
                            "neither a MIME message, PEM nor DER",
                        ));
                    }
                    let Some((end, body)) = find_header_end(&self.buf) else {
                        if self.buf.len() > MAX_HEADER_BLOCK {
                            return Err(DecryptError::Malformed("header block too large"));
                        }
                        return Ok(());
                    };
                    let fs = fields(&self.buf[..end]);
                    let ct = header_value(&fs, "content-type").unwrap_or_default();
                    let media = ct
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase();
                    if media != "application/pkcs7-mime" && media != "application/x-pkcs7-mime" {
                        return Err(DecryptError::Unsupported(format!(
                            "not an S/MIME encrypted message (Content-Type: {})",
                            if ct.is_empty() { "none" } else { &ct }
                        )));
                    }
                    let lower = ct.to_ascii_lowercase();
                    if lower.contains("smime-type=signed-data")
                        || lower.contains("smime-type=certs-only")
                        || lower.contains("smime-type=compressed-data")
                    {
                        return Err(DecryptError::Unsupported(format!(
                            "not an encrypted S/MIME message (Content-Type: {ct})"
                        )));
                    }
                    let cte = header_value(&fs, "content-transfer-encoding")
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    let rest = self.buf.split_off(body);
                    self.buf = Vec::new();
                    match cte.as_str() {
                        "base64" => {
                            self.state = InState::Base64;
                            self.base64_text(&rest, out)?;
                        }
                        "" | "binary" | "8bit" | "7bit" => {
                            self.state = InState::Binary;
                            out.extend_from_slice(&rest);
                        }
                        other => {
                            return Err(DecryptError::Unsupported(format!(
                                "Content-Transfer-Encoding {other}"
                            )));
                        }
                    }
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    }

    fn base64_text(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        // whole lines of plain base64 go in as slices; others, and the incomplete last
        // line, byte by byte
        while !data.is_empty() && self.state != InState::Done {
            let (used, slow) = crate::text::strip_lines(data, &mut self.b64);
            data = &data[used..];
            if self.b64.len() >= 64 * 1024 {
                self.flush_b64(out, false)?;
            }
            let end = match memchr::memchr(b'\n', data) {
                Some(i) if slow => i + 1,
                _ => data.len(),
            };
            self.base64_bytes(&data[..end], out)?;
            data = &data[end..];
        }
        self.flush_b64(out, false)
    }

    fn base64_bytes(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        for &b in data {
            if self.state == InState::Done {
                break;
            }
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {
                    self.b64.push(b);
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'-' if self.state == InState::PemBody => {
                    // the END line: stop
                    self.state = InState::Done;
                }
                _ => return Err(DecryptError::Malformed("invalid base64 in the body")),
            }
            if self.b64.len() >= 4096 {
                self.flush_b64(out, false)?;
            }
        }
        Ok(())
    }

    fn flush_b64(&mut self, out: &mut Vec<u8>, last: bool) -> Result<(), DecryptError> {
        let n = if last {
            self.b64.len()
        } else {
            self.b64.len() / 4 * 4
        };
        if n == 0 {
            return Ok(());
        }
        let text = &self.b64[..n];
        if last || memchr::memchr(b'=', text).is_some() {
            let start = out.len();
            out.resize(start + n / 4 * 3 + 3, 0);
            let written = STANDARD
                .decode_slice(text, &mut out[start..])
                .map_err(|_| DecryptError::Malformed("invalid base64 in the body"))?;
            out.truncate(start + written);
        } else {
            crate::text::b64_decode_into(text, out)
                .map_err(|_| DecryptError::Malformed("invalid base64 in the body"))?;
        }
        self.b64.drain(..n);
        Ok(())
    }

    /// Ends the input; returns the last decoded bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, DecryptError> {
        let mut out = Vec::new();
        match self.state {
            InState::Detect => Err(DecryptError::Malformed("empty input")),
            InState::Headers | InState::PemBegin => Err(DecryptError::Malformed("truncated input")),
            _ => {
                self.flush_b64(&mut out, true)?;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_addressing_headers_outside() {
        let block = b"From: a@example.org\nTo: b@example.org\nSubject: hi\n there\nMIME-Version: 1.0\nContent-Type: text/plain;\n charset=utf-8\n";
        let s = split_headers(block);
        assert_eq!(
            s.outer,
            b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n there\r\n".to_vec()
        );
        assert_eq!(
            s.inner,
            b"Content-Type: text/plain;\r\n charset=utf-8\r\n".to_vec()
        );
    }

    #[test]
    fn binary_transfer_encoding_detected() {
        let s = split_headers(
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: Binary\n",
        );
        assert!(s.body_is_binary());
        assert!(!split_headers(b"Content-Type: text/plain\n").body_is_binary());
    }

    #[test]
    fn header_end_detection() {
        assert_eq!(find_header_end(b"A: b\r\n\r\nbody"), Some((6, 8)));
        assert_eq!(find_header_end(b"A: b\n\nbody"), Some((5, 6)));
        assert_eq!(find_header_end(b"A: b\nC: d"), None);
        assert!(looks_like_headers(b"From: x\n"));
        assert!(!looks_like_headers(b"hello world\n"));
    }

    #[test]
    fn crlf() {
        let mut c = Canonicalizer::default();
        let mut out = Vec::new();
        c.update_into(b"a\nb\r", &mut out);
        c.update_into(b"\nc\n", &mut out);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn base64_lines_round_trip_through_decoder() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31) as u8).collect();
        let mut enc = Base64Lines::default();
        let mut text = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        for c in data.chunks(13) {
            enc.update_into(c, &mut text);
        }
        text.extend_from_slice(&enc.finish());
        assert!(text.split(|b| *b == b'\n').all(|l| l.len() <= 77));
        let mut dec = CmsInputDecoder::new();
        let mut out = Vec::new();
        for c in text.chunks(7) {
            out.extend(dec.push(c).expect("push"));
        }
        out.extend(dec.finish().expect("finish"));
        // the decoder does not know it is not CMS: it only decodes
        assert_eq!(out, data);
    }

    #[test]
    fn pem_and_der_detection() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x00];
        let pem = format!(
            "-----BEGIN CMS-----\n{}\n-----END CMS-----\n",
            STANDARD.encode(&der)
        );
        let mut d = CmsInputDecoder::new();
        let mut out = d.push(pem.as_bytes()).expect("pem");
        out.extend(d.finish().expect("finish"));
        assert_eq!(out, der);
        let mut d = CmsInputDecoder::new();
        let mut out = d.push(&der).expect("der");
        out.extend(d.finish().expect("finish"));
        assert_eq!(out, der);
        let mut d = CmsInputDecoder::new();
        assert!(d.push(b"Content-Type: text/plain\r\n\r\nhello").is_err());
    }
}
