//! MIME framing for S/MIME (RFC 8551): `multipart/signed` and `application/pkcs7-mime`
//! output, and detection / extraction for verification.
//!
//! Signing streams: [`MultipartSigned::preamble`] (written, not hashed), then
//! [`MultipartSigned::part_header`] and every chunk from [`BodyEncoder::update`] /
//! [`BodyEncoder::finish`] (written *and* hashed), then [`MultipartSigned::trailer`] with the
//! detached signature. [`sign_multipart`] and [`sign_opaque`] do it all for a message in memory.

use crate::alg::HashAlg;
use crate::reencode::{TreeEncoder, TreePlan};
use crate::signed::{sign_detached, sign_encapsulated, DigestSigner, SignOptions};
use crate::SmimeError;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use x509_cert::Certificate;

const B64: GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn malformed(s: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(s.into())
}

/// Every PEM block in `input` as (label, DER).
pub fn pem_blocks(input: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SmimeError> {
    let text = String::from_utf8_lossy(input);
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            if l.contains(':') {
                continue; // RFC 1421 headers
            }
            b64.push_str(l);
        }
        if !closed {
            return Err(malformed(format!("PEM block {label} not closed")));
        }
        let der = B64_LENIENT
            .decode(b64.as_bytes())
            .map_err(|e| malformed(format!("PEM base64: {e}")))?;
        out.push((label.to_string(), der));
    }
    Ok(out)
}

/// PEM armour (`-----BEGIN {label}-----`, 64-column base64 lines, LF line ends), e.g. label
/// `CMS` for `--detached-pem` output (what `openssl cms -outform PEM` writes).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One header field, as raw bytes (folded lines included, final line ending excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// field name as written
    pub name: String,
    /// the whole field: `Name: value` with any continuation lines, line endings as in the input
    pub raw: Vec<u8>,
}

impl HeaderField {
    /// The unfolded value after the colon, trimmed.
    pub fn value(&self) -> String {
        let s = String::from_utf8_lossy(&self.raw);
        let v = s.split_once(':').map(|(_, v)| v).unwrap_or("");
        v.replace("\r\n", "").replace('\n', "").trim().to_string()
    }

    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Content-* field (stays with the entity when signing).
    pub fn is_content(&self) -> bool {
        self.name
            .as_bytes()
            .get(..8)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"content-"))
    }

    /// The field with CRLF line endings (canonical).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = canonicalize(&self.raw);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The algorithms a `micalg` parameter names (supported ones only), sorted.
pub fn micalg_named(micalg: Option<&str>) -> Vec<HashAlg> {
    let mut v: Vec<HashAlg> = micalg
        .map(|m| m.split(',').filter_map(HashAlg::from_micalg).collect())
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

/// The digests to compute up front for a streamed multipart/signed body whose signature
/// (naming the real algorithm) only comes at the end, when the signed part cannot be read a
/// second time: SHA-256/384/512, plus SHA-1 only when `micalg` names it (policy rejects SHA-1
/// anyway; the report then says so). `micalg` alone is not trusted: some clients mislabel it.
pub fn micalg_hashes(micalg: Option<&str>) -> Vec<HashAlg> {
    let mut v = vec![HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
    v.extend(micalg_named(micalg));
    v.sort();
    v.dedup();
    v
}

/// `algs` plus SHA-256 (the digest to try when a SignedData names none we hash), sorted.
pub fn with_sha256_fallback(mut algs: Vec<HashAlg>) -> Vec<HashAlg> {
    algs.push(HashAlg::Sha256);
    algs.sort();
    algs.dedup();
    algs
}

/// Whether the input can be streamed as opaque SignedData: bare DER/BER, or a MIME header
/// announcing base64 `application/pkcs7-mime` signed-data.
pub fn is_streamable_opaque(header: Option<&(Vec<HeaderField>, usize)>, head: &[u8]) -> bool {
    match header {
        None => head.first() == Some(&0x30),
        Some((h, _)) => {
            let ct = h
                .iter()
                .find(|f| f.is("Content-Type"))
                .map(|f| ContentType::parse(&f.value()));
            let cte = h
                .iter()
                .find(|f| f.is("Content-Transfer-Encoding"))
                .map(|f| f.value().to_ascii_lowercase());
            matches!(&ct, Some(ct)
                if (ct.mime == "application/pkcs7-mime" || ct.mime == "application/x-pkcs7-mime")
                    && ct.param("smime-type").is_none_or(|t| t.eq_ignore_ascii_case("signed-data")))
                && cte.as_deref() == Some("base64")
        }
    }
}

/// The outer header fields of a message (everything but Content-* and MIME-Version),
/// canonical CRLF, from a prefix that holds its header block; empty when there is none.
/// These are the fields that travel outside an encrypted or signed entity.
pub fn outer_header_block(prefix: &[u8]) -> Vec<u8> {
    let Ok(Some((fields, _))) = parse_header(prefix) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in fields {
        if !f.is_content() && !f.is("MIME-Version") {
            out.extend_from_slice(&f.canonical());
        }
    }
    out
}

/// Parse the header block. Returns the fields and the offset of the body, or `None` when the
/// blank line that ends the header is not in `input` yet (read more and retry; at end of input
/// use [`split_message`]).
pub fn parse_header(input: &[u8]) -> Result<Option<(Vec<HeaderField>, usize)>, SmimeError> {
    let mut fields: Vec<HeaderField> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = input[pos..].iter().position(|b| *b == b'\n') else {
            return Ok(None);
        };
        let line_end = pos + nl + 1;
        let line = &input[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(Some((fields, line_end)));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            let last = fields
                .last_mut()
                .ok_or_else(|| malformed("header starts with a continuation line"))?;
            last.raw
                .extend_from_slice(&input[pos - eol_len(input, pos)..pos]);
            last.raw.extend_from_slice(line);
        } else {
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| malformed("header line without a colon"))?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            if name.is_empty() || name.contains(' ') {
                return Err(malformed(format!("bad header field name {name:?}")));
            }
            fields.push(HeaderField {
                name,
                raw: line.to_vec(),
            });
        }
        pos = line_end;
    }
}

fn eol_len(input: &[u8], pos: usize) -> usize {
    if pos >= 2 && &input[pos - 2..pos] == b"\r\n" {
        2
    } else {
        1
    }
}

/// Split a whole message into header fields and body (no blank line: all header, empty body).
pub fn split_message(input: &[u8]) -> Result<(Vec<HeaderField>, &[u8]), SmimeError> {
    match parse_header(input)? {
        Some((h, off)) => Ok((h, &input[off..])),
        None => {
            let mut with_nl = input.to_vec();
            with_nl.extend_from_slice(b"\n\n");
            let (h, _) = parse_header(&with_nl)?.ok_or_else(|| malformed("header"))?;
            Ok((h, &[]))
        }
    }
}

/// A parsed Content-Type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower case
    pub mime: String,
    /// parameters, names lower case, values unquoted
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Parse a Content-Type value.
    pub fn parse(value: &str) -> Self {
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut escaped = false;
        for ch in value.chars() {
            if escaped {
                cur.push(ch);
                escaped = false;
                continue;
            }
            match ch {
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ';' if !quoted => parts.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        parts.push(cur);
        let mime = parts
            .first()
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let params = parts
            .iter()
            .skip(1)
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        Self { mime, params }
    }

    /// A parameter value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn header<'a>(fields: &'a [HeaderField], name: &str) -> Option<&'a HeaderField> {
    fields.iter().find(|f| f.is(name))
}

/// The sender's address, when the message has exactly one From field with exactly one
/// mailbox ([`crate::address::sender_address`]).
pub fn from_address(fields: &[HeaderField]) -> Option<String> {
    crate::address::sender_address(fields).ok().flatten()
}

/// The sender for verification: (the address, or why the From field names none).
pub fn sender_of(fields: &[HeaderField]) -> (Option<String>, Option<String>) {
    match crate::address::sender_address(fields) {
        Ok(a) => (a, None),
        Err(why) => (None, Some(why)),
    }
}

/// LF → CRLF (bare CR left as is).
pub fn canonicalize(data: &[u8]) -> Vec<u8> {
    let mut c = Canonicalizer::default();
    c.update(data)
}

/// Streaming LF → CRLF conversion.
#[derive(Clone, Debug, Default)]
pub struct Canonicalizer {
    prev_cr: bool,
}

impl Canonicalizer {
    /// Convert a chunk.
    pub fn update(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 32);
        self.update_into(chunk, &mut out);
        out
    }

    /// Convert a chunk, appending to `out`.
    pub fn update_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        crate::text::crlf_into(&mut self.prev_cr, chunk, out);
    }
}

/// Streaming check whether a body can travel as 7-bit text (RFC 5322 / 2045): no 8-bit bytes,
/// no NUL, no line longer than 998 octets.
#[derive(Clone, Debug, Default)]
pub struct SevenBitScanner {
    line: usize,
    unsafe_: bool,
}

impl SevenBitScanner {
    /// Scan a chunk. Once the body is known to need encoding, the rest is not looked at.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.unsafe_ || chunk.is_empty() {
            return;
        }
        if crate::text::has_8bit_or_nul(chunk) {
            self.unsafe_ = true;
            return;
        }
        // line length in octets, CRs not counted
        let len_of = |seg: &[u8], so_far: usize| -> usize {
            if so_far + seg.len() <= 998 {
                so_far + seg.len()
            } else {
                so_far + seg.len() - memchr::memchr_iter(b'\r', seg).count()
            }
        };
        let mut start = 0;
        for lf in memchr::memchr_iter(b'\n', chunk) {
            if len_of(&chunk[start..lf], self.line) > 998 {
                self.unsafe_ = true;
                return;
            }
            self.line = 0;
            start = lf + 1;
        }
        self.line = len_of(&chunk[start..], self.line);
        if self.line > 998 {
            self.unsafe_ = true;
        }
    }

    /// True when the body must be re-encoded (base64) before signing.
    pub fn needs_encoding(&self) -> bool {
        self.unsafe_
    }
}

/// Base64 in CRLF-terminated lines of 76 characters, streaming.
#[derive(Clone, Debug, Default)]
pub struct Base64Lines {
    pending: Vec<u8>,
}

impl Base64Lines {
    /// Encode a chunk (output holds only complete 76-character lines).
    pub fn update(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.pending.len() + chunk.len()) / 57 * 78);
        self.update_into(chunk, &mut out);
        out
    }

    /// Encode a chunk, appending complete lines to `out`.
    pub fn update_into(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        use crate::text::{b64_lines_into, B64_LINE_BYTES};
        if !self.pending.is_empty() {
            let n = (B64_LINE_BYTES - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.pending.len() < B64_LINE_BYTES {
                return;
            }
            b64_lines_into(&self.pending, out);
            self.pending.clear();
        }
        let rest = b64_lines_into(chunk, out);
        self.pending.extend_from_slice(rest);
    }

    /// The last line.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        crate::text::b64_last_line_into(&self.pending, &mut out);
        out
    }

    /// Encode everything at once.
    pub fn encode(data: &[u8]) -> Vec<u8> {
        let mut e = Self::default();
        let mut out = e.update(data);
        out.extend_from_slice(&e.finish());
        out
    }
}

/// Streaming base64 decoder (whitespace ignored, padding optional).
#[derive(Clone, Debug, Default)]
pub struct Base64Decoder {
    pending: Vec<u8>,
}

impl Base64Decoder {
    /// Decode a chunk of base64 text.
    pub fn update(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let mut out = Vec::new();
        self.update_into(chunk, &mut out)?;
        Ok(out)
    }

    /// Decode a chunk of base64 text, appending to `out`.
    pub fn update_into(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
        let keep = |b: &u8| !b.is_ascii_whitespace();
        // whole lines without odd bytes go in as slices; anything else byte by byte
        while !chunk.is_empty() {
            let (used, slow) = crate::text::strip_lines(chunk, &mut self.pending);
            chunk = &chunk[used..];
            let line_end = match memchr::memchr(b'\n', chunk) {
                Some(i) if slow => i + 1,
                _ => chunk.len(),
            };
            self.pending
                .extend(chunk[..line_end].iter().copied().filter(keep));
            chunk = &chunk[line_end..];
        }
        let n = self.pending.len() / 4 * 4;
        if n == 0 || memchr::memchr(b'=', &self.pending[..n]).is_some() {
            // padding: wait for the end (anything after it is an error in finish)
            return Ok(());
        }
        crate::text::b64_decode_into(&self.pending[..n], out)?;
        self.pending.drain(..n);
        Ok(())
    }

    /// Decode what is left.
    pub fn finish(self) -> Result<Vec<u8>, SmimeError> {
        B64_LENIENT
            .decode(&self.pending)
            .map_err(|e| malformed(format!("base64: {e}")))
    }
}

/// Transforms body chunks into the bytes of the signed part's body.
#[derive(Debug)]
pub enum BodyEncoder {
    /// 7-bit safe: canonical CRLF
    Canonical(Canonicalizer),
    /// parts re-encoded where they are not 7-bit safe (see [`crate::reencode`])
    Reencode(Box<TreeEncoder>),
}

impl BodyEncoder {
    /// Transform a chunk.
    pub fn update(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let mut out = Vec::new();
        self.update_into(chunk, &mut out)?;
        Ok(out)
    }

    /// Transform a chunk, appending to `out`.
    pub fn update_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
        match self {
            BodyEncoder::Canonical(c) => {
                c.update_into(chunk, out);
                Ok(())
            }
            BodyEncoder::Reencode(t) => t.update_into(chunk, out),
        }
    }

    /// Flush.
    pub fn finish(self) -> Result<Vec<u8>, SmimeError> {
        match self {
            BodyEncoder::Canonical(_) => Ok(Vec::new()),
            BodyEncoder::Reencode(t) => {
                let mut out = Vec::new();
                t.finish_into(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// How the body of the entity to sign is written: as it is (made CRLF), or with the parts
/// that are not 7-bit safe re-encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BodyPlan {
    /// 7-bit safe as it is
    #[default]
    Clean,
    /// the scan of [`crate::reencode`]
    Reencode(TreePlan),
}

impl BodyPlan {
    /// Plans a body held in memory. `fields`: the entity's (or message's) header fields.
    pub fn of(fields: &[HeaderField], body: &[u8]) -> Result<Self, SmimeError> {
        if is_7bit(body) {
            return Ok(BodyPlan::Clean);
        }
        let mut scan = TreeEncoder::scan(&entity_fields(fields, true))?;
        scan.update_into(body, &mut Vec::new())?;
        Ok(BodyPlan::from_scan(scan.finish_into(&mut Vec::new())?))
    }

    /// The plan from a finished scan.
    pub fn from_scan(plan: Option<TreePlan>) -> Self {
        match plan {
            Some(p) if p.needs_encoding() => BodyPlan::Reencode(p),
            _ => BodyPlan::Clean,
        }
    }
}

pub(crate) fn content_type_of(fields: &[HeaderField]) -> ContentType {
    header(fields, "Content-Type")
        .map(|f| ContentType::parse(&f.value()))
        .unwrap_or_else(|| ContentType::parse("text/plain"))
}

fn is_7bit(data: &[u8]) -> bool {
    let mut s = SevenBitScanner::default();
    s.update(data);
    !s.needs_encoding()
}

/// Plan for a `multipart/signed` message.
#[derive(Clone, Debug)]
pub struct MultipartSigned {
    outer: Vec<HeaderField>,
    /// the entity's fields before re-encoding
    source: Vec<HeaderField>,
    /// as written
    entity: Vec<HeaderField>,
    body: BodyPlan,
    boundary: String,
    micalg: HashAlg,
}

/// A boundary from caller-supplied random bytes (this crate has no RNG).
pub fn boundary_from_random(random: &[u8]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("----tokenmail-{hex}")
}

/// The signed entity's header fields before re-encoding: the Content-* fields, with a
/// Content-Type when there is none (`utf8`: the body is not 7-bit).
pub(crate) fn entity_fields(headers: &[HeaderField], utf8: bool) -> Vec<HeaderField> {
    let mut entity: Vec<HeaderField> = headers.iter().filter(|f| f.is_content()).cloned().collect();
    if header(&entity, "Content-Type").is_none() {
        let v = if utf8 {
            "Content-Type: text/plain; charset=utf-8"
        } else {
            "Content-Type: text/plain; charset=us-ascii"
        };
        entity.insert(
            0,
            HeaderField {
                name: "Content-Type".into(),
                raw: v.as_bytes().to_vec(),
            },
        );
    }
    entity
}

impl MultipartSigned {
    /// `headers`: the message's (or entity's) header fields; `body`: the plan for its body
    /// ([`BodyPlan::of`], or a [`TreeEncoder`] scan); `boundary` e.g. from
    /// [`boundary_from_random`].
    pub fn new(
        headers: &[HeaderField],
        body: &BodyPlan,
        boundary: &str,
        micalg: HashAlg,
    ) -> Result<Self, SmimeError> {
        if boundary.is_empty()
            || boundary.len() > 70
            || boundary
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b)))
        {
            return Err(malformed("bad MIME boundary"));
        }
        let source = entity_fields(headers, *body != BodyPlan::Clean);
        let entity = match body {
            BodyPlan::Clean => source.clone(),
            BodyPlan::Reencode(plan) => TreeEncoder::encode(&source, plan.clone())?.1,
        };
        Ok(Self {
            outer: headers
                .iter()
                .filter(|f| !f.is_content() && !f.is("MIME-Version"))
                .cloned()
                .collect(),
            source,
            entity,
            body: body.clone(),
            boundary: boundary.to_string(),
            micalg,
        })
    }

    /// Outer header, preamble and the first delimiter: written, not hashed.
    pub fn preamble(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.outer {
            out.extend_from_slice(&f.canonical());
        }
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={};\r\n boundary=\"{}\"\r\n\r\n",
                self.micalg.micalg(),
                self.boundary
            )
            .as_bytes(),
        );
        out.extend_from_slice(b"This is an S/MIME signed message\r\n\r\n");
        out.extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
        out
    }

    /// The signed part's header and blank line: written and hashed.
    pub fn part_header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.entity {
            out.extend_from_slice(&f.canonical());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The encoder for the body (its output is written and hashed).
    pub fn body_encoder(&self) -> Result<BodyEncoder, SmimeError> {
        Ok(match &self.body {
            BodyPlan::Clean => BodyEncoder::Canonical(Canonicalizer::default()),
            BodyPlan::Reencode(plan) => {
                BodyEncoder::Reencode(Box::new(TreeEncoder::encode(&self.source, plan.clone())?.0))
            }
        })
    }

    /// Everything after the signed part: the signature part and the closing delimiter.
    pub fn trailer(&self, signature_der: &[u8]) -> Vec<u8> {
        let b = &self.boundary;
        let mut out = format!(
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&Base64Lines::encode(signature_der));
        out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        out
    }

    /// The signed part (header and body) of a body held in memory.
    pub fn signed_part(&self, body: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let mut part = self.part_header();
        let mut enc = self.body_encoder()?;
        enc.update_into(body, &mut part)?;
        part.extend_from_slice(&enc.finish()?);
        Ok(part)
    }
}

/// Sign a whole message as `multipart/signed`.
pub fn sign_multipart(
    message: &[u8],
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    opts: &SignOptions,
    boundary: &str,
) -> Result<Vec<u8>, SmimeError> {
    let (headers, body) = split_message(message)?;
    let hash = opts.scheme_for(signer.key_kind())?.hash();
    let plan = MultipartSigned::new(&headers, &BodyPlan::of(&headers, body)?, boundary, hash)?;
    let part = plan.signed_part(body)?;
    let sig = sign_detached(signer, cert, chain, &hash.digest(&part), opts)?;
    let mut out = plan.preamble();
    out.extend_from_slice(&part);
    out.extend_from_slice(&plan.trailer(&sig));
    Ok(out)
}

/// Outer header for `application/pkcs7-mime; smime-type=signed-data` (the base64 CMS follows).
pub fn opaque_header(headers: &[HeaderField]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in headers
        .iter()
        .filter(|f| !f.is_content() && !f.is("MIME-Version"))
    {
        out.extend_from_slice(&f.canonical());
    }
    out.extend_from_slice(
        b"MIME-Version: 1.0\r\n\
          Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=smime.p7m\r\n\r\n",
    );
    out
}

/// The canonical inner entity for a message (Content-* headers + body; parts re-encoded
/// where not 7-bit safe), as signed in both the multipart and the opaque form.
pub fn signed_entity(message: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let (headers, body) = split_message(message)?;
    let plan = MultipartSigned::new(
        &headers,
        &BodyPlan::of(&headers, body)?,
        "x",
        HashAlg::Sha256,
    )?;
    plan.signed_part(body)
}

/// Sign a whole message as opaque `application/pkcs7-mime; smime-type=signed-data`.
pub fn sign_opaque(
    message: &[u8],
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    opts: &SignOptions,
) -> Result<Vec<u8>, SmimeError> {
    let (headers, _) = split_message(message)?;
    let entity = signed_entity(message)?;
    let cms = sign_encapsulated(signer, cert, chain, &entity, opts)?;
    let mut out = opaque_header(&headers);
    out.extend_from_slice(&Base64Lines::encode(&cms));
    Ok(out)
}

/// Streaming writer for `multipart/signed`: hashes what must be hashed, so the caller only
/// moves bytes. `new` returns the first output bytes; feed the body (the bytes after the
/// header block) to `update`; `finish` signs and returns the last bytes.
#[derive(Debug)]
pub struct MultipartSignedWriter {
    plan: MultipartSigned,
    encoder: BodyEncoder,
    hasher: crate::alg::ContentHasher,
}

impl MultipartSignedWriter {
    /// `body`: the body's plan ([`BodyPlan`]).
    pub fn new(
        headers: &[HeaderField],
        body: &BodyPlan,
        boundary: &str,
        hash: HashAlg,
    ) -> Result<(Self, Vec<u8>), SmimeError> {
        let plan = MultipartSigned::new(headers, body, boundary, hash)?;
        let mut hasher = crate::alg::ContentHasher::new(hash);
        let mut out = plan.preamble();
        let ph = plan.part_header();
        hasher.update(&ph);
        out.extend_from_slice(&ph);
        let encoder = plan.body_encoder()?;
        Ok((
            Self {
                plan,
                encoder,
                hasher,
            },
            out,
        ))
    }

    /// Body bytes in, output bytes out.
    pub fn update(&mut self, body: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let out = self.encoder.update(body)?;
        self.hasher.update(&out);
        Ok(out)
    }

    /// Sign (the digest only goes to `signer`) and return the remaining output.
    pub fn finish(
        self,
        signer: &dyn DigestSigner,
        cert: &Certificate,
        chain: &[Certificate],
        opts: &SignOptions,
    ) -> Result<Vec<u8>, SmimeError> {
        if opts.scheme_for(signer.key_kind())?.hash() != self.hasher.alg() {
            return Err(SmimeError::Unsupported(
                "the signing scheme's hash differs from the writer's micalg".into(),
            ));
        }
        let mut out = self.encoder.finish()?;
        let mut hasher = self.hasher;
        hasher.update(&out);
        let sig = sign_detached(signer, cert, chain, &hasher.finalize(), opts)?;
        out.extend_from_slice(&self.plan.trailer(&sig));
        Ok(out)
    }
}

/// Streaming writer for opaque `application/pkcs7-mime; smime-type=signed-data`: the signed
/// entity is wrapped in indefinite-length BER SignedData and base64 lines as it goes.
#[derive(Debug)]
pub struct OpaqueWriter {
    encoder: BodyEncoder,
    hasher: crate::alg::ContentHasher,
    stream: crate::signed::OpaqueStream,
    b64: Base64Lines,
    /// the encoded body of the current chunk (reused)
    scratch: Vec<u8>,
}

impl OpaqueWriter {
    /// Like [`MultipartSignedWriter::new`].
    pub fn new(
        headers: &[HeaderField],
        body: &BodyPlan,
        hash: HashAlg,
    ) -> Result<(Self, Vec<u8>), SmimeError> {
        let plan = MultipartSigned::new(headers, body, "unused", hash)?;
        let stream = crate::signed::OpaqueStream::new(hash);
        let mut w = Self {
            encoder: plan.body_encoder()?,
            hasher: crate::alg::ContentHasher::new(hash),
            stream,
            b64: Base64Lines::default(),
            scratch: Vec::new(),
        };
        let mut out = opaque_header(headers);
        out.extend_from_slice(&w.b64.update(&stream.header()?));
        out.extend_from_slice(&w.content(&plan.part_header()));
        Ok((w, out))
    }

    fn content(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.content_into(bytes, &mut out);
        out
    }

    fn content_into(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.hasher.update(bytes);
        self.b64
            .update_into(&crate::signed::OpaqueStream::chunk_header(bytes.len()), out);
        self.b64.update_into(bytes, out);
    }

    /// Body bytes in, output bytes out.
    pub fn update(&mut self, body: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let mut out = Vec::new();
        self.update_into(body, &mut out)?;
        Ok(out)
    }

    /// Body bytes in, output bytes appended to `out` (no allocation per chunk).
    pub fn update_into(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
        let mut e = std::mem::take(&mut self.scratch);
        e.clear();
        self.encoder.update_into(body, &mut e)?;
        self.content_into(&e, out);
        self.scratch = e;
        Ok(())
    }

    /// Sign and return the remaining output.
    pub fn finish(
        mut self,
        signer: &dyn DigestSigner,
        cert: &Certificate,
        chain: &[Certificate],
        opts: &SignOptions,
    ) -> Result<Vec<u8>, SmimeError> {
        let encoder = std::mem::replace(
            &mut self.encoder,
            BodyEncoder::Canonical(Canonicalizer::default()),
        );
        let tail = encoder.finish()?;
        let mut out = self.content(&tail);
        let digest = self.hasher.finalize();
        let trailer = self.stream.trailer(signer, cert, chain, &digest, opts)?;
        out.extend_from_slice(&self.b64.update(&trailer));
        out.extend_from_slice(&self.b64.finish());
        Ok(out)
    }
}

/// What a verify input turned out to be.
#[derive(Clone, Debug)]
pub enum SmimeInput {
    /// `multipart/signed`: the first part's exact bytes (CRLF-canonical) and the signature
    MultipartSigned {
        /// top-level header fields
        headers: Vec<HeaderField>,
        /// the signed entity, canonical
        signed_part: Vec<u8>,
        /// the detached CMS (DER or BER)
        signature: Vec<u8>,
    },
    /// `application/pkcs7-mime` signed-data
    Opaque {
        /// top-level header fields
        headers: Vec<HeaderField>,
        /// the CMS (DER or BER)
        cms: Vec<u8>,
    },
    /// a bare CMS structure (DER, BER or PEM)
    Cms(Vec<u8>),
}

impl SmimeInput {
    /// The From address, if there is a MIME header with one.
    pub fn from_address(&self) -> Option<String> {
        match self {
            SmimeInput::MultipartSigned { headers, .. } | SmimeInput::Opaque { headers, .. } => {
                from_address(headers)
            }
            SmimeInput::Cms(_) => None,
        }
    }
}

/// The PEM labels a CMS structure goes by: openssl's (`PKCS7`, `CMS`), RFC 7468's
/// `PKCS #7 SIGNED DATA`, and gpgsm's armor `SIGNED MESSAGE` (git's `gpgsig` header).
pub const CMS_PEM_LABELS: [&str; 4] = ["PKCS7", "CMS", "PKCS #7 SIGNED DATA", "SIGNED MESSAGE"];

/// A bare CMS in DER/BER or PEM (the first block, labelled as in [`CMS_PEM_LABELS`]), or
/// `None` when `input` looks like neither.
pub fn bare_cms(input: &[u8]) -> Result<Option<Vec<u8>>, SmimeError> {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let t = &input[start..];
    if t.first() == Some(&0x30) {
        return Ok(Some(t.to_vec()));
    }
    if t.starts_with(b"-----BEGIN ") {
        let blocks = pem_blocks(t)?;
        let (label, der) = blocks
            .into_iter()
            .next()
            .ok_or_else(|| malformed("empty PEM"))?;
        if !CMS_PEM_LABELS.contains(&label.as_str()) {
            return Err(malformed(format!(
                "PEM block {label} is not a CMS structure"
            )));
        }
        return Ok(Some(der));
    }
    Ok(None)
}

fn decode_body(fields: &[HeaderField], body: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let cte = header(fields, "Content-Transfer-Encoding")
        .map(|f| f.value().to_ascii_lowercase())
        .unwrap_or_default();
    match cte.as_str() {
        "base64" => {
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            B64_LENIENT
                .decode(&clean)
                .map_err(|e| malformed(format!("base64 body: {e}")))
        }
        "" | "binary" | "7bit" | "8bit" => Ok(body.to_vec()),
        other => Err(SmimeError::Unsupported(format!(
            "Content-Transfer-Encoding {other} for a CMS part"
        ))),
    }
}

/// Maximum size of the signature part of a `multipart/signed` message.
pub const MAX_SIGNATURE_PART: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanState {
    Preamble,
    Signed,
    Signature,
    Epilogue,
}

/// Streaming splitter for the body of a `multipart/signed` message: feed the body (after the
/// top-level header) in chunks; [`SignedPartScanner::update`] returns the next bytes of the
/// signed part, CRLF-canonical, to hash (and write, for `-o`); [`SignedPartScanner::finish`]
/// returns the decoded signature. Memory stays bounded whatever the size of the signed part.
#[derive(Clone, Debug)]
pub struct SignedPartScanner {
    delim: Vec<u8>,
    /// LF + delimiter: where the fast path stops
    nl_delim: Vec<u8>,
    /// tests: line by line only (the reference for the fast path)
    careful: bool,
    state: ScanState,
    line: Vec<u8>,
    line_flushed: bool,
    pending_eol: bool,
    signature_part: Vec<u8>,
}

impl SignedPartScanner {
    /// A scanner for `boundary` (the Content-Type parameter).
    pub fn new(boundary: &str) -> Self {
        Self {
            delim: format!("--{boundary}").into_bytes(),
            nl_delim: format!("\n--{boundary}").into_bytes(),
            careful: false,
            state: ScanState::Preamble,
            line: Vec::new(),
            line_flushed: false,
            pending_eol: false,
            signature_part: Vec::new(),
        }
    }

    /// Feed body bytes; returns signed-part bytes.
    pub fn update(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let mut out = Vec::new();
        self.update_into(chunk, &mut out)?;
        Ok(out)
    }

    /// Feed body bytes; appends signed-part bytes to `out`.
    pub fn update_into(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
        while !chunk.is_empty() {
            if self.state == ScanState::Signed
                && self.line.is_empty()
                && !self.line_flushed
                && !self.careful
            {
                let used = self.signed_run(chunk, out);
                chunk = &chunk[used..];
                if chunk.is_empty() {
                    break;
                }
            }
            // one line (or the incomplete end of the chunk), the careful way
            let end = memchr::memchr(b'\n', chunk).map_or(chunk.len(), |i| i + 1);
            let piece = &chunk[..end];
            chunk = &chunk[end..];
            self.line.extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                self.complete_line(out)?;
            } else if self.line.len() > 65_536 {
                match self.state {
                    ScanState::Signed => self.flush_partial(out),
                    ScanState::Preamble | ScanState::Epilogue => {
                        // an over-long line here is no delimiter: drop it, remember that
                        self.line.clear();
                        self.line_flushed = true;
                    }
                    ScanState::Signature => {
                        if self.signature_part.len() + self.line.len() > MAX_SIGNATURE_PART {
                            return Err(malformed("signature part too large"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Signed part, at the start of a line: the complete lines of `chunk` up to the first one
    /// that starts with the delimiter go out in one piece (line ends made CRLF, the last one
    /// held back: it belongs to the delimiter if one follows). Returns the bytes consumed.
    fn signed_run(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> usize {
        let Some(last_lf) = memchr::memrchr(b'\n', chunk) else {
            return 0;
        };
        let complete = &chunk[..=last_lf];
        let stop = if complete.starts_with(&self.delim) {
            0
        } else {
            memchr::memmem::find(complete, &self.nl_delim).map_or(complete.len(), |i| i + 1)
        };
        let run = &complete[..stop];
        let Some(body) = run.strip_suffix(b"\n") else {
            return 0;
        };
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if self.pending_eol {
            out.extend_from_slice(b"\r\n");
        }
        crate::text::crlf_into(&mut false, body, out);
        self.pending_eol = true;
        stop
    }

    fn flush_partial(&mut self, out: &mut Vec<u8>) {
        if !self.line_flushed && self.line.starts_with(&self.delim) {
            let rest = &self.line[self.delim.len()..];
            let rest = rest.strip_prefix(b"--").unwrap_or(rest);
            if rest.iter().all(|b| b.is_ascii_whitespace()) {
                return; // could still be a delimiter with trailing whitespace
            }
        }
        if self.pending_eol {
            out.extend_from_slice(b"\r\n");
            self.pending_eol = false;
        }
        // keep the last byte: it may be the CR of a CRLF
        let keep = self.line.len() - 1;
        out.extend_from_slice(&self.line[..keep]);
        self.line.drain(..keep);
        self.line_flushed = true;
    }

    fn complete_line(&mut self, out: &mut Vec<u8>) -> Result<(), SmimeError> {
        let line = std::mem::take(&mut self.line);
        let flushed = std::mem::replace(&mut self.line_flushed, false);
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let mut delim = None;
        if !flushed && content.starts_with(&self.delim) {
            let rest = &content[self.delim.len()..];
            let closing = rest.starts_with(b"--");
            let tail = if closing { &rest[2..] } else { rest };
            if tail.iter().all(|b| *b == b' ' || *b == b'\t') {
                delim = Some(closing);
            }
        }
        match (self.state, delim) {
            (ScanState::Preamble, Some(false)) => self.state = ScanState::Signed,
            (ScanState::Preamble, Some(true)) => {
                return Err(malformed("multipart/signed closes before its first part"))
            }
            (ScanState::Preamble, None) | (ScanState::Epilogue, _) => {}
            (ScanState::Signed, Some(false)) => {
                self.pending_eol = false; // the line break belongs to the delimiter
                self.state = ScanState::Signature;
            }
            (ScanState::Signed, Some(true)) => {
                return Err(malformed("multipart/signed has no signature part"))
            }
            (ScanState::Signed, None) => {
                if self.pending_eol {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(content);
                self.pending_eol = true;
            }
            (ScanState::Signature, Some(true)) => self.state = ScanState::Epilogue,
            (ScanState::Signature, Some(false)) => {
                return Err(malformed("multipart/signed has more than two parts"))
            }
            (ScanState::Signature, None) => {
                if self.signature_part.len() + line.len() > MAX_SIGNATURE_PART {
                    return Err(malformed("signature part too large"));
                }
                self.signature_part.extend_from_slice(&line);
            }
        }
        Ok(())
    }

    /// End of input: the signature (DER/BER) from the second part.
    pub fn finish(mut self) -> Result<Vec<u8>, SmimeError> {
        if !self.line.is_empty() {
            self.line.push(b'\n');
            let mut sink = Vec::new();
            self.complete_line(&mut sink)?;
            if !sink.is_empty() {
                return Err(malformed("multipart/signed is truncated"));
            }
        }
        match self.state {
            ScanState::Epilogue => {}
            ScanState::Signature => {
                return Err(malformed("multipart/signed without closing delimiter"))
            }
            _ => return Err(malformed("multipart/signed needs two parts")),
        }
        let (sig_headers, sig_body) = split_message(&self.signature_part)?;
        let sig_ct = header(&sig_headers, "Content-Type")
            .map(|f| ContentType::parse(&f.value()).mime)
            .unwrap_or_default();
        if sig_ct != "application/pkcs7-signature" && sig_ct != "application/x-pkcs7-signature" {
            return Err(malformed(format!(
                "second part of multipart/signed is {sig_ct}, not application/pkcs7-signature"
            )));
        }
        decode_body(&sig_headers, sig_body)
    }
}

/// Tell a verify input apart: multipart/signed, opaque pkcs7-mime, or a bare CMS.
pub fn parse_smime(input: &[u8]) -> Result<SmimeInput, SmimeError> {
    if let Some(cms) = bare_cms(input)? {
        return Ok(SmimeInput::Cms(cms));
    }
    let (headers, body) = split_message(input)?;
    let ct = header(&headers, "Content-Type")
        .map(|f| ContentType::parse(&f.value()))
        .ok_or_else(|| {
            malformed("not a CMS structure and no MIME Content-Type: nothing signed here")
        })?;
    match ct.mime.as_str() {
        "multipart/signed" => {
            let boundary = ct
                .param("boundary")
                .ok_or_else(|| malformed("multipart/signed without boundary"))?;
            let mut scanner = SignedPartScanner::new(boundary);
            let signed_part = scanner.update(body)?;
            let signature = scanner.finish()?;
            Ok(SmimeInput::MultipartSigned {
                headers,
                signed_part,
                signature,
            })
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            if let Some(t) = ct.param("smime-type") {
                // a signed receipt (RFC 2634) is SignedData too
                if !t.eq_ignore_ascii_case("signed-data")
                    && !t.eq_ignore_ascii_case("signed-receipt")
                {
                    return Err(SmimeError::Unsupported(format!(
                        "smime-type={t}: not a signed message (decrypt it first)"
                    )));
                }
            }
            let cms = decode_body(&headers, body)?;
            Ok(SmimeInput::Opaque { headers, cms })
        }
        other => Err(malformed(format!(
            "Content-Type {other} is not an S/MIME signed message"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing_and_folding() {
        let msg = b"From: Alice <alice@example.com>\nSubject: hi\n  there\nContent-Type: text/plain;\n charset=utf-8\n\nbody\n";
        let (h, body) = split_message(msg).expect("parses");
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].value(), "hi  there");
        assert_eq!(body, b"body\n");
        assert_eq!(from_address(&h).as_deref(), Some("alice@example.com"));
        let ct = ContentType::parse(&h[2].value());
        assert_eq!(ct.mime, "text/plain");
        assert_eq!(ct.param("charset"), Some("utf-8"));
        assert_eq!(
            h[2].canonical(),
            b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
        );
        assert!(parse_header(b"From: a\nSubj").expect("ok").is_none());
    }

    #[test]
    fn non_ascii_header_names_do_not_panic() {
        let (h, _) = split_message("Cont\u{e9}nt-Type: x\n\nbody".as_bytes()).expect("parses");
        assert!(!h[0].is_content());
    }

    #[test]
    fn content_type_quotes() {
        let ct = ContentType::parse(r#"multipart/signed; boundary="a;b=c"; micalg=SHA-256"#);
        assert_eq!(ct.param("boundary"), Some("a;b=c"));
        assert_eq!(ct.param("micalg"), Some("SHA-256"));
    }

    #[test]
    fn canonical_streaming() {
        let mut c = Canonicalizer::default();
        let mut out = c.update(b"a\r");
        out.extend(c.update(b"\nb\nc"));
        assert_eq!(out, b"a\r\nb\r\nc");
    }

    #[test]
    fn seven_bit() {
        let mut s = SevenBitScanner::default();
        s.update(b"plain\r\ntext\n");
        assert!(!s.needs_encoding());
        s.update("é".as_bytes());
        assert!(s.needs_encoding());
        let mut s = SevenBitScanner::default();
        s.update(&vec![b'a'; 999]);
        assert!(s.needs_encoding());
    }

    #[test]
    fn scanner_chunking_is_irrelevant() {
        let long = "x".repeat(200_000);
        let body = format!(
            "preamble\n--b\nContent-Type: text/plain\n\nline1\r\n--bnot\n{long}\n\n--b  \r\n\
             Content-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nMAA=\n--b--\nepilogue"
        );
        let body = body.as_bytes();
        let mut whole = SignedPartScanner::new("b");
        let expect = whole.update(body).expect("scan");
        assert_eq!(whole.finish().expect("sig"), vec![0x30, 0x00]);
        let want = format!("Content-Type: text/plain\r\n\r\nline1\r\n--bnot\r\n{long}\r\n");
        assert_eq!(String::from_utf8(expect.clone()).expect("utf8"), want);
        for size in [1, 2, 3, 7, 64, 65_537] {
            let mut sc = SignedPartScanner::new("b");
            let mut got = Vec::new();
            for c in body.chunks(size) {
                got.extend(sc.update(c).expect("scan"));
            }
            assert_eq!(sc.finish().expect("sig"), vec![0x30, 0x00], "chunk {size}");
            assert_eq!(got, expect, "chunk {size}");
        }
    }

    #[test]
    fn scanner_fast_path_matches_line_by_line() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize
        };
        let pieces: [&[u8]; 9] = [
            b"a", b"xyz", b"\r", b"\n", b"\r\n", b"--b", b"--b--", b" ", b"-",
        ];
        for round in 0..400 {
            let mut body = b"pre\n--b\nContent-Type: text/plain\n\n".to_vec();
            for _ in 0..next() % 200 {
                body.extend_from_slice(pieces[next() % pieces.len()]);
            }
            if round % 3 != 0 {
                body.extend_from_slice(
                    b"\n--b\nContent-Type: application/pkcs7-signature\n\nMAA=\n--b--\n",
                );
            }
            let run = |careful: bool, size: usize| {
                let mut sc = SignedPartScanner::new("b");
                sc.careful = careful;
                let mut out = Vec::new();
                let mut err = None;
                for c in body.chunks(size) {
                    if let Err(e) = sc.update_into(c, &mut out) {
                        err = Some(e.to_string());
                        break;
                    }
                }
                let fin = match err {
                    Some(e) => Err(e),
                    None => sc.finish().map_err(|e| e.to_string()),
                };
                (out, fin)
            };
            let want = run(true, body.len().max(1));
            for size in [1, 2, 5, 13, 64, 4096] {
                assert_eq!(run(false, size), want, "round {round} chunk {size}");
                assert_eq!(run(true, size).1, want.1, "round {round} chunk {size}");
            }
        }
    }

    #[test]
    fn scanner_bounded_on_long_preamble_lines() {
        let mut sc = SignedPartScanner::new("b");
        let junk = vec![b'x'; 300_000];
        for c in junk.chunks(4096) {
            assert!(sc.update(c).expect("scan").is_empty());
            assert!(sc.line.len() <= 65_536 + 4096);
        }
        let tail: &[u8] = b"--b\n--b\n\nfollows\n--b\nContent-Type: application/pkcs7-signature\n\
            Content-Transfer-Encoding: base64\n\nMAA=\n--b--\n";
        let part = sc.update(tail).expect("scan");
        // the "--b" that ends the over-long line is no delimiter; the next line is
        assert_eq!(part, b"\r\nfollows");
        assert_eq!(sc.finish().expect("signature"), vec![0x30, 0x00]);
    }

    #[test]
    fn scanner_rejects_bad_structure() {
        for body in [
            "--b\nx\n--b--\n",
            "--b\nx\n--b\nContent-Type: application/pkcs7-signature\n\nMAA=\n",
            "--b\nx\n--b\nContent-Type: text/plain\n\nMAA=\n--b--\n",
            "no delimiter at all\n",
            "--b\nx\n--b\nContent-Type: application/pkcs7-signature\n\nMAA=\n--b\n",
        ] {
            let mut sc = SignedPartScanner::new("b");
            let r = sc.update(body.as_bytes()).and_then(|_| sc.finish());
            assert!(r.is_err(), "{body:?}");
        }
    }

    #[test]
    fn base64_decoder_streams() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let text = Base64Lines::encode(&data);
        for size in [1, 3, 5, 77, 4096] {
            let mut d = Base64Decoder::default();
            let mut out = Vec::new();
            for c in text.chunks(size) {
                out.extend(d.update(c).expect("decode"));
            }
            out.extend(d.finish().expect("finish"));
            assert_eq!(out, data, "chunk {size}");
        }
        let mut d = Base64Decoder::default();
        assert!(d.update(b"QQ==QUFB").and_then(|_| d.finish()).is_err());
    }

    #[test]
    fn base64_lines() {
        let data: Vec<u8> = (0..=255u8).collect();
        let mut e = Base64Lines::default();
        let mut out = Vec::new();
        for c in data.chunks(10) {
            out.extend(e.update(c));
        }
        out.extend(e.finish());
        assert_eq!(out, Base64Lines::encode(&data));
        for line in out.split(|b| *b == b'\n') {
            assert!(line.len() <= 77);
        }
        let clean: Vec<u8> = out
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        assert_eq!(B64.decode(clean).expect("decodes"), data);
    }
}

/// The result of [`verify_smime`].
#[derive(Clone, Debug)]
pub struct MessageVerification {
    /// the per-signer report
    pub report: crate::verify::VerificationReport,
    /// the content that was verified (signed entity, encapsulated content or the detached
    /// content as given)
    pub content: Vec<u8>,
    /// the From address compared with the certificate, if any
    pub sender: Option<String>,
    /// which form the input had: `multipart/signed`, `pkcs7-mime`, `cms`, `detached`
    pub form: &'static str,
}

/// Verify any supported input: a MIME message/entity (multipart/signed or opaque), a bare CMS,
/// or — with `detached_signature` — content plus a detached DER/PEM SignedData.
/// `options.sender_email` is ignored: the From address of the message is used.
pub fn verify_smime(
    input: &[u8],
    detached_signature: Option<&[u8]>,
    options: &crate::verify::VerifyOptions<'_>,
) -> Result<MessageVerification, SmimeError> {
    use crate::alg::ContentDigests;
    use crate::verify::{verify, ParsedSignedData};
    type Sender = (Option<String>, Option<String>);
    let (cms, content, (sender, problem), form): (Vec<u8>, Option<Vec<u8>>, Sender, &'static str) =
        match detached_signature {
            Some(sig) => {
                let cms = bare_cms(sig)?
                    .ok_or_else(|| malformed("the signature is neither DER nor PEM CMS"))?;
                let sender = parse_header(input)
                    .ok()
                    .flatten()
                    .map(|(h, _)| sender_of(&h))
                    .unwrap_or_default();
                (cms, Some(input.to_vec()), sender, "detached")
            }
            None => match parse_smime(input)? {
                SmimeInput::MultipartSigned {
                    headers,
                    signed_part,
                    signature,
                } => (
                    signature,
                    Some(signed_part),
                    sender_of(&headers),
                    "multipart/signed",
                ),
                SmimeInput::Opaque { headers, cms } => {
                    (cms, None, sender_of(&headers), "pkcs7-mime")
                }
                SmimeInput::Cms(cms) => (cms, None, (None, None), "cms"),
            },
        };
    let parsed = ParsedSignedData::parse(&cms)?;
    let content = match content {
        Some(c) => c,
        None => parsed
            .encapsulated_content()
            .ok_or_else(|| {
                malformed("detached signature without content: pass the content and --signature")
            })?
            .to_vec(),
    };
    let digests = ContentDigests::of(&parsed.digest_algorithms(), &content);
    let mut opts = options.clone();
    opts.sender_email = sender.as_deref();
    opts.sender_problem = problem.as_deref();
    let report = verify(&parsed, &digests, &opts);
    Ok(MessageVerification {
        report,
        content,
        sender,
        form,
    })
}
