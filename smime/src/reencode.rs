//! Streaming 7-bit re-encoding of a MIME entity tree, for signing (RFC 8551 §3.1.2–3.1.3).
//!
//! A signature covers the exact bytes of the signed entity, and a transport that is not
//! 8-bit clean (or one that rewraps long lines) would change them. So before signing, every
//! part that is not 7-bit safe — 8-bit or NUL bytes, lines over 998 octets — is re-encoded:
//! quoted-printable for `text/*` parts, base64 otherwise. Multipart and `message/rfc822`
//! entities are walked into (their own encoding must stay 7bit), so a `multipart/mixed`
//! with an 8-bit UTF-8 text part and a base64 attachment keeps its structure, its
//! attachment untouched and its text readable.
//!
//! This needs to know, at the start of each part, whether the part will need encoding: the
//! input is read twice. A first pass ([`TreeEncoder::scan`]) records one bit per text region
//! (part body, preamble, epilogue) in document order — a [`TreePlan`]; the second pass
//! ([`TreeEncoder::encode`]) rewrites. Both run the same walker, so the regions line up.
//! Memory is bounded: one line start (for delimiter detection), one part's header block, the
//! stack of open multiparts and one bit per region, each with a limit.

use crate::mime::{
    canonicalize, content_type_of, header, parse_header, Base64Lines, Canonicalizer, HeaderField,
    SevenBitScanner,
};
use crate::SmimeError;

/// Deepest nesting of multipart / message entities.
pub const MAX_DEPTH: usize = 32;
/// Most text regions (parts, preambles, epilogues) in one message.
pub const MAX_REGIONS: usize = 100_000;
/// Largest header block of a nested part.
pub const MAX_PART_HEADER: usize = 256 * 1024;
/// How much of a line is kept to recognise a delimiter (RFC 2046: boundary ≤ 70 characters,
/// with transport padding after it).
const LINE_PEEK: usize = 1000;

fn malformed(s: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(s.into())
}

/// What the scan found: for each text region in document order, whether it needs encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreePlan {
    unsafe_regions: Vec<bool>,
}

impl TreePlan {
    /// Whether any region needs encoding.
    pub fn needs_encoding(&self) -> bool {
        self.unsafe_regions.iter().any(|b| *b)
    }
}

/// Streaming quoted-printable encoder for text (RFC 2045 §6.7): line breaks (LF or CRLF)
/// become CRLF hard breaks, a bare CR is `=0D`, lines are at most 76 characters, trailing
/// white space is encoded, and no encoded line starts with `-` or `.` (so none can be taken
/// for a MIME delimiter or an SMTP end of data).
#[derive(Clone, Debug, Default)]
pub struct QpEncoder {
    col: usize,
    ws: Option<u8>,
    cr: bool,
}

impl QpEncoder {
    fn put(&mut self, b: u8, mut encode: bool, out: &mut Vec<u8>) {
        if self.col == 0 && (b == b'-' || b == b'.') {
            encode = true;
        }
        let len = if encode { 3 } else { 1 };
        if self.col + len > 75 {
            out.extend_from_slice(b"=\r\n");
            self.col = 0;
            if b == b'-' || b == b'.' {
                encode = true;
            }
        }
        if encode {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            self.col += 3;
        } else {
            out.push(b);
            self.col += 1;
        }
    }

    fn flush_ws(&mut self, at_line_end: bool, out: &mut Vec<u8>) {
        if let Some(w) = self.ws.take() {
            self.put(w, at_line_end, out);
        }
    }

    fn line_break(&mut self, out: &mut Vec<u8>) {
        self.flush_ws(true, out);
        out.extend_from_slice(b"\r\n");
        self.col = 0;
    }

    /// Encodes a chunk, appending to `out`.
    pub fn update_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.reserve(data.len() + data.len() / 8);
        for &b in data {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    self.line_break(out);
                    continue;
                }
                self.flush_ws(false, out);
                self.put(b'\r', true, out);
            }
            match b {
                b'\r' => self.cr = true,
                b'\n' => self.line_break(out),
                b' ' | b'\t' => {
                    self.flush_ws(false, out);
                    self.ws = Some(b);
                }
                _ => {
                    self.flush_ws(false, out);
                    let literal = (33..=126).contains(&b) && b != b'=';
                    self.put(b, !literal, out);
                }
            }
        }
    }

    /// The end of the text (a delimiter follows: trailing white space is encoded).
    pub fn finish_into(mut self, out: &mut Vec<u8>) {
        if self.cr {
            self.flush_ws(false, out);
            self.put(b'\r', true, out);
        }
        self.flush_ws(true, out);
    }
}

/// Decodes quoted-printable text (RFC 2045 §6.7): soft line breaks removed, `=XX` decoded;
/// a malformed escape is kept as it is (lenient, as readers are). The inverse of
/// [`QpEncoder`], for tools and tests that read what it wrote.
pub fn qp_decode(data: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'=' {
            if data[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if let (Some(h), Some(l)) = (
                data.get(i + 1).copied().and_then(hex),
                data.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// What the bytes of the current region turn into.
#[derive(Debug)]
enum RegionOut {
    /// first pass: only looked at
    Scan(SevenBitScanner),
    /// 7-bit safe: line breaks made CRLF
    Keep(Canonicalizer),
    /// a preamble or epilogue that is not 7-bit safe (no reader shows them): left out
    Drop,
    /// a text part re-encoded as quoted-printable
    Qp(QpEncoder),
    /// any other part re-encoded as base64
    Base64(Base64Lines),
}

#[derive(Debug)]
struct Region {
    out: RegionOut,
    /// the part's declared Content-Transfer-Encoding (lower case), for the error message
    declared: String,
    /// a line break that may belong to the next delimiter
    held_eol: &'static [u8],
    /// some content went in
    wrote: bool,
}

#[derive(Debug)]
enum Frame {
    Multipart {
        boundary: Vec<u8>,
        /// multipart/digest: parts default to message/rfc822
        digest: bool,
        /// a delimiter was seen (preamble over)
        started: bool,
        /// the close delimiter was seen (epilogue)
        closed: bool,
    },
    /// message/rfc822: one nested entity
    Message,
}

#[derive(Debug)]
enum State {
    /// reading a nested entity's header block
    Header(Vec<u8>),
    /// in a text region (or between entities)
    Body,
}

/// The walker: scans (first pass) or re-encodes (second pass) a MIME entity's body.
#[derive(Debug)]
pub struct TreeEncoder {
    /// `Some` in the second pass
    plan: Option<TreePlan>,
    /// regions seen so far (first pass: their bits; second: the next index)
    seen: Vec<bool>,
    next: usize,
    stack: Vec<Frame>,
    state: State,
    region: Option<Region>,
    /// the start of the current line (up to [`LINE_PEEK`] bytes)
    line: Vec<u8>,
    /// inside a line longer than [`LINE_PEEK`]: not a delimiter
    mid_line: bool,
    /// mid-line: the last byte seen was a CR (held until we know whether LF follows)
    carry_cr: bool,
}

fn cte_of(fields: &[HeaderField]) -> String {
    header(fields, "Content-Transfer-Encoding")
        .map(|f| f.value().to_ascii_lowercase())
        .unwrap_or_default()
}

fn cte_field(value: &str) -> HeaderField {
    HeaderField {
        name: "Content-Transfer-Encoding".into(),
        raw: format!("Content-Transfer-Encoding: {value}").into_bytes(),
    }
}

/// The entity's fields with an 8bit/binary transfer encoding removed (its content is 7-bit
/// after the walk).
fn composite_fields(fields: &[HeaderField]) -> Vec<HeaderField> {
    fields
        .iter()
        .filter(|f| {
            !(f.is("Content-Transfer-Encoding") && {
                let v = f.value().to_ascii_lowercase();
                v == "8bit" || v == "binary"
            })
        })
        .cloned()
        .collect()
}

impl TreeEncoder {
    /// First pass over the body of an entity with header `fields` (only its Content-*
    /// fields matter). Feed the body with [`TreeEncoder::update_into`] (nothing is written),
    /// then take the plan with [`TreeEncoder::finish_scan`].
    pub fn scan(fields: &[HeaderField]) -> Result<Self, SmimeError> {
        let mut t = Self::empty(None);
        t.enter_entity(fields, true, &mut Vec::new())?;
        Ok(t)
    }

    /// Second pass, with the first pass's plan. Returns the walker and the entity's header
    /// fields as they must be written (transfer encoding replaced where it changed).
    pub fn encode(
        fields: &[HeaderField],
        plan: TreePlan,
    ) -> Result<(Self, Vec<HeaderField>), SmimeError> {
        let mut t = Self::empty(Some(plan));
        let mut head = Vec::new();
        let top = t.enter_entity(fields, true, &mut head)?;
        Ok((t, top))
    }

    fn empty(plan: Option<TreePlan>) -> Self {
        Self {
            plan,
            seen: Vec::new(),
            next: 0,
            stack: Vec::new(),
            state: State::Body,
            region: None,
            line: Vec::new(),
            mid_line: false,
            carry_cr: false,
        }
    }

    fn scanning(&self) -> bool {
        self.plan.is_none()
    }

    /// Starts a text region: a part body (`declared` = its transfer encoding, `text` = a
    /// text/* part) or a preamble / epilogue (`declared` = None).
    fn start_region(&mut self, part: Option<(&str, bool)>) -> Result<bool, SmimeError> {
        let idx = self.next;
        self.next += 1;
        if idx >= MAX_REGIONS {
            return Err(malformed(format!(
                "more than {MAX_REGIONS} MIME parts; split the message"
            )));
        }
        let (out, needs) = match &self.plan {
            None => (RegionOut::Scan(SevenBitScanner::default()), false),
            Some(plan) => {
                let needs = *plan
                    .unsafe_regions
                    .get(idx)
                    .ok_or_else(|| malformed("the message changed while it was being signed"))?;
                let out = match (needs, part) {
                    (false, _) => RegionOut::Keep(Canonicalizer::default()),
                    (true, None) => RegionOut::Drop,
                    (true, Some((_, true))) => RegionOut::Qp(QpEncoder::default()),
                    (true, Some((_, false))) => RegionOut::Base64(Base64Lines::default()),
                };
                (out, needs)
            }
        };
        self.region = Some(Region {
            out,
            declared: part.map(|(d, _)| d.to_string()).unwrap_or_default(),
            held_eol: b"",
            wrote: false,
        });
        Ok(needs)
    }

    fn content(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(r) = self.region.as_mut() else {
            return;
        };
        if !r.held_eol.is_empty() {
            let eol = std::mem::take(&mut r.held_eol);
            region_write(&mut r.out, eol, out);
            r.wrote = true;
        }
        if !data.is_empty() {
            region_write(&mut r.out, data, out);
            r.wrote = true;
        }
    }

    fn hold_eol(&mut self, eol: &'static [u8]) {
        if let Some(r) = self.region.as_mut() {
            r.held_eol = eol;
        }
    }

    /// Ends the current region; `at_eof`: its held line break is content.
    fn end_region(&mut self, at_eof: bool, out: &mut Vec<u8>) -> Result<(), SmimeError> {
        let Some(mut r) = self.region.take() else {
            return Ok(());
        };
        if at_eof && !r.held_eol.is_empty() {
            region_write(&mut r.out, r.held_eol, out);
        }
        match r.out {
            RegionOut::Scan(s) => {
                let needs = s.needs_encoding();
                if needs && (r.declared == "base64" || r.declared == "quoted-printable") {
                    return Err(malformed(format!(
                        "a part declared {} contains 8-bit bytes or lines over 998 octets: it is corrupt; fix or remove that part",
                        r.declared
                    )));
                }
                self.seen.push(needs);
            }
            RegionOut::Keep(_) | RegionOut::Drop => {}
            RegionOut::Qp(q) => q.finish_into(out),
            RegionOut::Base64(b) => out.extend_from_slice(&b.finish()),
        }
        Ok(())
    }

    /// An entity's header is complete: writes it (second pass) and sets up its body.
    /// Returns the fields as written.
    fn enter_entity(
        &mut self,
        fields: &[HeaderField],
        top: bool,
        out: &mut Vec<u8>,
    ) -> Result<Vec<HeaderField>, SmimeError> {
        let digest_parent = matches!(
            self.stack.last(),
            Some(Frame::Multipart { digest: true, .. })
        );
        let ct = if header(fields, "Content-Type").is_none() && digest_parent {
            crate::mime::ContentType::parse("message/rfc822")
        } else {
            content_type_of(fields)
        };
        let boundary = ct
            .mime
            .starts_with("multipart/")
            .then(|| ct.param("boundary"))
            .flatten()
            .filter(|b| !b.is_empty() && b.len() <= 200);
        // a delimiter line is 7-bit text (RFC 2046 §5.1.1): a boundary with control or 8-bit
        // characters would come out as a delimiter line that is not 7-bit safe
        if boundary.is_some_and(|b| b.bytes().any(|c| !(b' '..=b'~').contains(&c))) {
            return Err(malformed(
                "a multipart boundary holds control or 8-bit characters: the message is corrupt",
            ));
        }
        let composite = boundary.is_some() || ct.mime == "message/rfc822";
        if composite && self.stack.len() >= MAX_DEPTH {
            return Err(malformed(format!(
                "MIME parts nested more than {MAX_DEPTH} deep"
            )));
        }
        let written = if let Some(b) = boundary {
            self.stack.push(Frame::Multipart {
                boundary: b.as_bytes().to_vec(),
                digest: ct.mime == "multipart/digest",
                started: false,
                closed: false,
            });
            self.start_region(None)?;
            composite_fields(fields)
        } else if composite {
            self.stack.push(Frame::Message);
            self.state = State::Header(Vec::new());
            composite_fields(fields)
        } else {
            let declared = cte_of(fields);
            let text = ct.mime.starts_with("text/");
            if self.start_region(Some((&declared, text)))? {
                let mut f: Vec<HeaderField> = fields
                    .iter()
                    .filter(|f| !f.is("Content-Transfer-Encoding"))
                    .cloned()
                    .collect();
                f.push(cte_field(if text { "quoted-printable" } else { "base64" }));
                f
            } else {
                fields.to_vec()
            }
        };
        if !top && !self.scanning() {
            for f in &written {
                out.extend_from_slice(&f.canonical());
            }
            out.extend_from_slice(b"\r\n");
        }
        Ok(written)
    }

    /// Feeds body bytes; in the second pass the re-encoded bytes are appended to `out`.
    pub fn update_into(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
        while !data.is_empty() {
            if self.mid_line {
                let (seg, rest, ends) = match memchr::memchr(b'\n', data) {
                    Some(i) => (&data[..=i], &data[i + 1..], true),
                    None => (data, &data[data.len()..], false),
                };
                data = rest;
                self.long_line_segment(seg, ends, out)?;
                continue;
            }
            let take = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
            let room = LINE_PEEK - self.line.len();
            let n = take.min(room);
            self.line.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.line.last() == Some(&b'\n') {
                let line = std::mem::take(&mut self.line);
                self.complete_line(&line, out)?;
                self.line = line;
                self.line.clear();
            } else if self.line.len() >= LINE_PEEK {
                // longer than any delimiter: content (or a long header line)
                let line = std::mem::take(&mut self.line);
                self.mid_line = true;
                self.long_line_segment(&line, false, out)?;
                self.line = line;
                self.line.clear();
            }
        }
        Ok(())
    }

    /// A piece of a line that cannot be a delimiter; `ends`: it ends with the line's LF.
    fn long_line_segment(
        &mut self,
        seg: &[u8],
        ends: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), SmimeError> {
        if let State::Header(buf) = &mut self.state {
            if buf.len() + seg.len() > MAX_PART_HEADER {
                return Err(malformed(format!(
                    "a MIME part's header is over {MAX_PART_HEADER} bytes"
                )));
            }
            buf.extend_from_slice(seg);
            if ends {
                self.mid_line = false;
            }
            return Ok(());
        }
        if std::mem::take(&mut self.carry_cr) {
            if seg.first() == Some(&b'\n') {
                // (a mid-line segment ends at its first LF: this one is just the LF)
                self.mid_line = false;
                self.hold_eol(b"\r\n");
                return Ok(());
            }
            self.content(b"\r", out);
        }
        if ends {
            self.mid_line = false;
            let body = &seg[..seg.len() - 1];
            match body.strip_suffix(b"\r") {
                Some(b) => {
                    self.content(b, out);
                    self.hold_eol(b"\r\n");
                }
                None => {
                    self.content(body, out);
                    self.hold_eol(b"\n");
                }
            }
        } else {
            match seg.strip_suffix(b"\r") {
                Some(b) => {
                    self.content(b, out);
                    self.carry_cr = true;
                }
                None => self.content(seg, out),
            }
        }
        Ok(())
    }

    /// Which open multipart a line delimits: (stack index, close delimiter).
    fn delimiter(&self, line: &[u8]) -> Option<(usize, bool)> {
        let rest = line.strip_prefix(b"--")?;
        let end = rest
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t'))
            .map_or(0, |i| i + 1);
        let rest = &rest[..end];
        self.stack.iter().enumerate().rev().find_map(|(i, f)| {
            // a closed multipart's epilogue goes on to the enclosing delimiter
            let Frame::Multipart {
                boundary,
                closed: false,
                ..
            } = f
            else {
                return None;
            };
            let tail = rest.strip_prefix(boundary.as_slice())?;
            match tail {
                b"" => Some((i, false)),
                b"--" => Some((i, true)),
                _ => None,
            }
        })
    }

    fn complete_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
        let (text, eol): (&[u8], &'static [u8]) = match line.strip_suffix(b"\r\n") {
            Some(t) => (t, b"\r\n"),
            None => (line.strip_suffix(b"\n").unwrap_or(line), b"\n"),
        };
        if let Some((at, close)) = self.delimiter(text) {
            return self.on_delimiter(at, close, out);
        }
        if let State::Header(buf) = &mut self.state {
            if buf.len() + line.len() > MAX_PART_HEADER {
                return Err(malformed(format!(
                    "a MIME part's header is over {MAX_PART_HEADER} bytes"
                )));
            }
            buf.extend_from_slice(line);
            if text.is_empty() {
                let block = std::mem::take(buf);
                self.state = State::Body;
                let fields = match parse_header(&block)? {
                    Some((f, _)) => f,
                    None => Vec::new(),
                };
                self.enter_entity(&fields, false, out)?;
            }
            return Ok(());
        }
        self.content(text, out);
        self.hold_eol(eol);
        Ok(())
    }

    /// Closes frames above `at` (parts left open by a missing close delimiter).
    fn unwind_to(&mut self, at: usize, out: &mut Vec<u8>) -> Result<(), SmimeError> {
        while self.stack.len() > at + 1 {
            self.end_region(false, out)?;
            self.finish_header_at_boundary(out)?;
            self.pop_frame(out);
        }
        Ok(())
    }

    /// Closes the innermost frame; a multipart left open gets its close delimiter.
    fn pop_frame(&mut self, out: &mut Vec<u8>) {
        if let Some(Frame::Multipart {
            boundary, closed, ..
        }) = self.stack.pop()
        {
            if !closed && !self.scanning() {
                out.extend_from_slice(b"\r\n--");
                out.extend_from_slice(&boundary);
                out.extend_from_slice(b"--\r\n");
            }
        }
    }

    /// A header block cut short by a delimiter: the part had no body.
    fn finish_header_at_boundary(&mut self, out: &mut Vec<u8>) -> Result<(), SmimeError> {
        if let State::Header(buf) = &mut self.state {
            let mut block = std::mem::take(buf);
            self.state = State::Body;
            block.extend_from_slice(b"\r\n\r\n");
            let fields = parse_header(&block)?.map(|(f, _)| f).unwrap_or_default();
            self.enter_entity(&fields, false, out)?;
            self.end_region(false, out)?;
        }
        Ok(())
    }

    fn on_delimiter(
        &mut self,
        at: usize,
        close: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), SmimeError> {
        self.unwind_to(at, out)?;
        self.finish_header_at_boundary(out)?;
        // the region before the delimiter: its last line break belongs to the delimiter
        let had_content = self
            .region
            .as_ref()
            .is_some_and(|r| r.wrote && matches!(r.out, RegionOut::Keep(_)));
        self.end_region(false, out)?;
        let scanning = self.scanning();
        let Some(Frame::Multipart {
            boundary,
            started,
            closed,
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if !scanning {
            if *started || had_content {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary);
            out.extend_from_slice(if close { b"--\r\n" } else { b"\r\n" });
        }
        *started = true;
        if close {
            *closed = true;
            self.start_region(None)?;
        } else {
            self.state = State::Header(Vec::new());
        }
        Ok(())
    }

    /// The end of the body: closes what is open. First pass: returns the plan.
    pub fn finish_into(mut self, out: &mut Vec<u8>) -> Result<Option<TreePlan>, SmimeError> {
        if self.mid_line {
            if std::mem::take(&mut self.carry_cr) {
                self.content(b"\r", out);
            }
        } else if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            if let Some((at, close)) = self.delimiter(&line) {
                self.on_delimiter(at, close, out)?;
            } else if let State::Header(buf) = &mut self.state {
                buf.extend_from_slice(&line);
            } else {
                self.content(&line, out);
            }
        }
        self.finish_header_at_boundary(out)?;
        self.end_region(true, out)?;
        if !self.stack.is_empty() {
            self.unwind_to(0, out)?;
            self.pop_frame(out);
        }
        Ok(match self.plan {
            None => Some(TreePlan {
                unsafe_regions: self.seen,
            }),
            Some(_) => None,
        })
    }
}

fn region_write(r: &mut RegionOut, data: &[u8], out: &mut Vec<u8>) {
    match r {
        RegionOut::Scan(s) => s.update(data),
        RegionOut::Keep(c) => c.update_into(data, out),
        RegionOut::Drop => {}
        RegionOut::Qp(q) => q.update_into(data, out),
        RegionOut::Base64(b) => b.update_into(data, out),
    }
}

/// Re-encodes a whole entity held in memory (`fields` + `body`): the plan and the rewrite in
/// one call. Returns the fields to write and the canonical 7-bit body.
pub fn reencode(
    fields: &[HeaderField],
    body: &[u8],
) -> Result<(Vec<HeaderField>, Vec<u8>), SmimeError> {
    let mut scan = TreeEncoder::scan(fields)?;
    scan.update_into(body, &mut Vec::new())?;
    let plan = scan
        .finish_into(&mut Vec::new())?
        .ok_or_else(|| malformed("no plan"))?;
    if !plan.needs_encoding() {
        return Ok((fields.to_vec(), canonicalize(body)));
    }
    let (mut enc, written) = TreeEncoder::encode(fields, plan)?;
    let mut out = Vec::with_capacity(body.len() + body.len() / 3);
    enc.update_into(body, &mut out)?;
    enc.finish_into(&mut out)?;
    Ok((written, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::split_message;

    fn qp(data: &[u8], split: usize) -> Vec<u8> {
        let mut q = QpEncoder::default();
        let mut out = Vec::new();
        let (a, b) = data.split_at(split.min(data.len()));
        q.update_into(a, &mut out);
        q.update_into(b, &mut out);
        q.finish_into(&mut out);
        out
    }

    #[test]
    fn quoted_printable_round_trips_and_is_7bit() {
        let long = "é".repeat(200);
        let cases: [&[u8]; 7] = [
            "Grüße aus München\nzweite Zeile  \n".as_bytes(),
            b"bare\rcr and nul \0 and tab\t",
            b"--looks like a delimiter\n.dot\n",
            long.as_bytes(),
            b"trailing space ",
            b"a = b\r\n\r\n",
            b"",
        ];
        for c in cases {
            for split in [0, 1, 3, c.len() / 2, c.len()] {
                let enc = qp(c, split);
                assert!(enc.iter().all(|b| *b < 0x80 && *b != 0), "{enc:?}");
                for line in enc.split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    assert!(line.len() <= 76, "{}", String::from_utf8_lossy(line));
                    assert!(!line.starts_with(b"-") && !line.starts_with(b"."));
                    assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
                }
                // line breaks come back as CRLF
                let mut want = Vec::new();
                crate::text::crlf_into(&mut false, c, &mut want);
                assert_eq!(qp_decode(&enc), want, "{c:?} split {split}");
            }
        }
    }

    const MIXED: &str = "From: a@example.org\n\
Content-Type: multipart/mixed; boundary=\"outer\"\n\
\n\
preamble\n\
--outer\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Grüße aus München\n\
--outer\n\
Content-Type: message/rfc822\n\
\n\
Subject: fwd\n\
Content-Type: multipart/alternative; boundary=inner\n\
\n\
--inner\n\
Content-Type: text/html\n\
\n\
<p>Grüße</p>\n\
--inner\n\
Content-Type: text/plain\n\
\n\
7-bit alternative\n\
--inner--\n\
--outer\n\
Content-Type: application/octet-stream\n\
Content-Transfer-Encoding: base64\n\
\n\
AAECAwQ=\n\
--outer\n\
Content-Type: application/x-raw\n\
Content-Transfer-Encoding: binary\n\
\n\
RAW\n\
--outer--\n\
epilogue\n";

    fn mixed() -> Vec<u8> {
        let (a, b) = MIXED.split_once("RAW").unwrap_or((MIXED, ""));
        [a.as_bytes(), b"\0\x01\xff raw", b.as_bytes()].concat()
    }

    fn run(fields: &[HeaderField], body: &[u8], chunk: usize) -> (Vec<HeaderField>, Vec<u8>) {
        let mut scan = TreeEncoder::scan(fields).expect("scan");
        for c in body.chunks(chunk) {
            scan.update_into(c, &mut Vec::new()).expect("scan");
        }
        let plan = scan
            .finish_into(&mut Vec::new())
            .expect("scan")
            .expect("plan");
        let (mut enc, top) = TreeEncoder::encode(fields, plan).expect("encode");
        let mut out = Vec::new();
        for c in body.chunks(chunk) {
            enc.update_into(c, &mut out).expect("encode");
        }
        assert!(enc.finish_into(&mut out).expect("finish").is_none());
        (top, out)
    }

    #[test]
    fn a_mixed_tree_is_reencoded_part_by_part_whatever_the_chunks() {
        let msg = mixed();
        let (fields, body) = split_message(&msg).expect("split");
        let (top, whole) = run(&fields, body, body.len());
        assert!(!top.iter().any(|f| f.is("Content-Transfer-Encoding")));
        for chunk in [1, 2, 7, 64] {
            assert_eq!(run(&fields, body, chunk).1, whole, "chunk {chunk}");
        }
        assert!(whole.iter().all(|b| *b < 0x80 && *b != 0));
        let text = String::from_utf8(whole).expect("ascii");
        // structure kept, untouched where 7-bit
        assert!(text.starts_with("preamble\r\n--outer\r\n"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus M=C3=BCnchen\r\n--outer\r\n"), "{text}");
        assert!(
            text.contains("<p>Gr=C3=BC=C3=9Fe</p>\r\n--inner\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\n\r\n7-bit alternative\r\n--inner--\r\n"),
            "{text}"
        );
        assert!(
            text.contains("base64\r\n\r\nAAECAwQ=\r\n--outer\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: application/x-raw\r\nContent-Transfer-Encoding: base64\r\n\r\nAAH/IHJhdw==\r\n\r\n--outer--\r\n"), "{text}");
        assert!(text.ends_with("--outer--\r\nepilogue\r\n"), "{text}");
        assert!(!text.contains("8bit") && !text.contains("binary"));
    }

    #[test]
    fn long_lines_and_parts_declared_base64_with_8bit() {
        let fields = vec![HeaderField {
            name: "Content-Type".into(),
            raw: b"Content-Type: text/plain".to_vec(),
        }];
        let long = vec![b'x'; 5000];
        let (top, out) = run(&fields, &long, 333);
        assert!(top.iter().any(|f| f.value() == "quoted-printable"));
        assert_eq!(qp_decode(&out), long);
        // a long line ending in CRLF, the CR and the LF in different chunks
        let mut text = vec![b'y'; 3000];
        text.extend_from_slice(b"\r\nnext\r\n");
        let whole = run(&fields, &text, text.len()).1;
        for chunk in [1, 2, 3, 7, 1000, 3001] {
            assert!(run(&fields, &text, chunk).1 == whole, "chunk {chunk}");
        }
        // (a leaf at the top: its last line break is content, no delimiter follows)
        let want = [&vec![b'y'; 3000][..], b"\r\nnext\r\n"].concat();
        assert!(qp_decode(&whole) == want, "the long line decodes back");
        let bad = b"--b\nContent-Transfer-Encoding: base64\n\n\xff\xfe\n--b--\n";
        let fields = vec![HeaderField {
            name: "Content-Type".into(),
            raw: b"Content-Type: multipart/mixed; boundary=b".to_vec(),
        }];
        let mut scan = TreeEncoder::scan(&fields).expect("scan");
        let err = match scan.update_into(bad, &mut Vec::new()) {
            Err(e) => e,
            Ok(()) => scan.finish_into(&mut Vec::new()).expect_err("corrupt part"),
        };
        assert!(err.to_string().contains("declared base64"), "{err}");
    }

    #[test]
    fn nesting_and_part_counts_are_bounded() {
        let mut body = Vec::new();
        for i in 0..40 {
            body.extend_from_slice(
                format!(
                    "--b{i}\nContent-Type: multipart/mixed; boundary=b{}\n\n",
                    i + 1
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice("é\n".as_bytes());
        let fields = vec![HeaderField {
            name: "Content-Type".into(),
            raw: b"Content-Type: multipart/mixed; boundary=b0".to_vec(),
        }];
        let mut scan = TreeEncoder::scan(&fields).expect("scan");
        let err = scan
            .update_into(&body, &mut Vec::new())
            .expect_err("too deep");
        assert!(err.to_string().contains("nested"), "{err}");
    }

    /// Found by fuzzing (docs/reliability.md): a boundary with a bare CR and 8-bit bytes was
    /// taken as it was, and the closing delimiter written with it was not 7-bit.
    #[test]
    fn a_boundary_with_control_or_8bit_characters_is_refused() {
        for ct in [
            &b"Content-Type: multipart/mixed;boundary=q\r\xc3\x9b"[..],
            b"Content-Type: multipart/mixed; boundary=\"a\x01b\"",
            b"Content-Type: multipart/mixed; boundary=\"\xc3\xa9t\xc3\xa9\"",
        ] {
            let fields = vec![HeaderField {
                name: "Content-Type".into(),
                raw: ct.to_vec(),
            }];
            let e = reencode(&fields, b"--q\r\n\r\n\xc3\xbf").expect_err("refused");
            assert!(e.to_string().contains("boundary"), "{e}");
        }
        // printable ASCII outside RFC 2046's bchars is still taken (real mail has it)
        let fields = vec![HeaderField {
            name: "Content-Type".into(),
            raw: b"Content-Type: multipart/mixed; boundary=\"a[b]{c}\"".to_vec(),
        }];
        let (_, out) =
            reencode(&fields, b"--a[b]{c}\r\n\r\n\xc3\xa9\r\n--a[b]{c}--\r\n").expect("re-encoded");
        assert!(
            out.iter().all(|b| *b < 0x80),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
