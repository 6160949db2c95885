//! A small incremental BER reader for the outer layers of a CMS envelope, and
//! the few BER writing helpers the streaming encryptor needs.
//!
//! `der` 0.8 decodes DER only; `openssl cms -stream` (and our own encryptor)
//! produce indefinite-length constructed encodings for ContentInfo,
//! [0] EXPLICIT, EnvelopedData, EncryptedContentInfo and the chunked
//! encryptedContent OCTET STRING. This reader walks those containers one
//! header at a time over a buffer the caller keeps topping up, so memory stays
//! bounded by the largest *inner* element (RecipientInfos, the MAC), which is
//! capped by [`MAX_ELEMENT`].

/// Largest single non-streamed element we accept (RecipientInfos with many
/// recipients, attributes, …).
pub(crate) const MAX_ELEMENT: usize = 1 << 20;

/// The header of one BER TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The identifier octet (single-byte tags only: CMS needs nothing else).
    pub tag: u8,
    /// `None` for the indefinite form.
    pub len: Option<usize>,
    /// Bytes taken by identifier and length octets.
    pub header_len: usize,
}

impl Header {
    pub fn constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }
}

/// Why a BER read did not give a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BerError {
    /// More input is needed.
    NeedMore,
    /// The bytes are not a BER encoding we accept.
    Malformed(&'static str),
}

pub(crate) type BerResult<T> = Result<T, BerError>;

/// Parses a TLV header at the start of `buf`.
pub(crate) fn parse_header(buf: &[u8]) -> BerResult<Header> {
    let first = *buf.first().ok_or(BerError::NeedMore)?;
    if first & 0x1f == 0x1f {
        return Err(BerError::Malformed(
            "multi-byte tags are not used in CMS envelopes",
        ));
    }
    let l0 = *buf.get(1).ok_or(BerError::NeedMore)?;
    if l0 < 0x80 {
        return Ok(Header {
            tag: first,
            len: Some(l0 as usize),
            header_len: 2,
        });
    }
    if l0 == 0x80 {
        if first & 0x20 == 0 {
            return Err(BerError::Malformed(
                "indefinite length on a primitive encoding",
            ));
        }
        return Ok(Header {
            tag: first,
            len: None,
            header_len: 2,
        });
    }
    let n = (l0 & 0x7f) as usize;
    if n > 8 || n == 0x7f {
        return Err(BerError::Malformed("length too long"));
    }
    if buf.len() < 2 + n {
        return Err(BerError::NeedMore);
    }
    let mut len: u64 = 0;
    for b in &buf[2..2 + n] {
        len = (len << 8) | u64::from(*b);
    }
    let len = usize::try_from(len).map_err(|_| BerError::Malformed("length too long"))?;
    Ok(Header {
        tag: first,
        len: Some(len),
        header_len: 2 + n,
    })
}

/// Total length of the complete element (header + contents, including the
/// end-of-contents octets of indefinite forms) at the start of `buf`.
pub(crate) fn element_len(buf: &[u8]) -> BerResult<usize> {
    element_len_depth(buf, 0)
}

fn element_len_depth(buf: &[u8], depth: usize) -> BerResult<usize> {
    if depth > 32 {
        return Err(BerError::Malformed("nesting too deep"));
    }
    let h = parse_header(buf)?;
    match h.len {
        Some(l) => {
            let total = h
                .header_len
                .checked_add(l)
                .ok_or(BerError::Malformed("length overflow"))?;
            if total > MAX_ELEMENT {
                return Err(BerError::Malformed("element too large"));
            }
            if buf.len() < total {
                return Err(BerError::NeedMore);
            }
            Ok(total)
        }
        None => {
            let mut pos = h.header_len;
            loop {
                if pos > MAX_ELEMENT {
                    return Err(BerError::Malformed("element too large"));
                }
                let rest = &buf[pos..];
                if rest.len() < 2 {
                    return Err(BerError::NeedMore);
                }
                if rest[0] == 0 && rest[1] == 0 {
                    return Ok(pos + 2);
                }
                pos += element_len_depth(rest, depth + 1)?;
            }
        }
    }
}

/// Re-encodes one whole BER element as DER (the crate's one normalizer,
/// [`crate::ber::normalize_element`]): for the small elements (RecipientInfos, algorithm
/// identifiers) that some encoders write in BER; `der` then decodes the result.
pub(crate) fn to_der(buf: &[u8]) -> BerResult<Vec<u8>> {
    let (out, used) = crate::ber::normalize_element(buf)
        .map_err(|_| BerError::Malformed("malformed BER element"))?;
    if used != buf.len() {
        return Err(BerError::Malformed("trailing data in element"));
    }
    Ok(out)
}

/// Appends a DER length.
pub(crate) fn write_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&crate::ber::der_len(len));
}

/// Appends a definite-length TLV.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    write_len(out, value.len());
    out.extend_from_slice(value);
}

/// Where an open container ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Ends at this absolute stream offset.
    At(u64),
    /// Ends with end-of-contents octets.
    Eoc,
}

/// An incremental reader: bytes are appended with [`Reader::feed`], consumed
/// from the front, and the stack of open containers is tracked with absolute
/// offsets so that definite and indefinite forms can be mixed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    start: usize,
    /// Absolute stream offset of `buf[start]`.
    pos: u64,
    stack: Vec<End>,
}

impl Reader {
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.start > 1 << 16) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Capacity of the internal buffer (for bounded-memory assertions).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    fn check_fits(&self, h: &Header) -> BerResult<()> {
        if let (Some(len), Some(End::At(end))) = (h.len, self.stack.last()) {
            let elem_end = self.pos + h.header_len as u64 + len as u64;
            if elem_end > *end {
                return Err(BerError::Malformed("element overruns its container"));
            }
        }
        Ok(())
    }

    /// Peeks at the next header.
    pub fn peek(&self) -> BerResult<Header> {
        let h = parse_header(self.available())?;
        self.check_fits(&h)?;
        Ok(h)
    }

    /// Enters a constructed element with the given tag, pushing it on the stack.
    pub fn enter(&mut self, tag: u8) -> BerResult<Header> {
        let h = self.peek()?;
        if h.tag != tag {
            return Err(BerError::Malformed("unexpected tag"));
        }
        if !h.constructed() {
            return Err(BerError::Malformed("expected a constructed encoding"));
        }
        self.consume(h.header_len);
        self.stack.push(match h.len {
            Some(l) => End::At(self.pos + l as u64),
            None => End::Eoc,
        });
        Ok(h)
    }

    /// Enters any header (used for primitive encryptedContent and its chunks):
    /// consumes only the header. Constructed ones are pushed on the stack.
    pub fn take_header(&mut self) -> BerResult<Header> {
        let h = self.peek()?;
        self.consume(h.header_len);
        if h.constructed() {
            self.stack.push(match h.len {
                Some(l) => End::At(self.pos + l as u64),
                None => End::Eoc,
            });
        }
        Ok(h)
    }

    /// Takes a whole element (any encoding) and returns its bytes.
    pub fn take_element(&mut self) -> BerResult<Vec<u8>> {
        let h = self.peek()?;
        let total = element_len(self.available())?;
        if total > MAX_ELEMENT {
            return Err(BerError::Malformed("element too large"));
        }
        if let Some(End::At(end)) = self.stack.last() {
            if self.pos + total as u64 > *end {
                return Err(BerError::Malformed("element overruns its container"));
            }
        }
        let _ = h;
        let v = self.available()[..total].to_vec();
        self.consume(total);
        Ok(v)
    }

    /// Whether the innermost container ends here. For the indefinite form
    /// this needs two bytes of lookahead. Does not pop.
    pub fn at_end(&self) -> BerResult<bool> {
        match self.stack.last() {
            None => Ok(true),
            Some(End::At(end)) => {
                if self.pos > *end {
                    Err(BerError::Malformed("container overrun"))
                } else {
                    Ok(self.pos == *end)
                }
            }
            Some(End::Eoc) => {
                let a = self.available();
                match a {
                    [0, 0, ..] => Ok(true),
                    [0] => Err(BerError::NeedMore),
                    [] => Err(BerError::NeedMore),
                    _ => Ok(false),
                }
            }
        }
    }

    /// Leaves the innermost container, which must end here.
    pub fn leave(&mut self) -> BerResult<()> {
        if !self.at_end()? {
            return Err(BerError::Malformed(
                "unexpected data at the end of a structure",
            ));
        }
        if let Some(End::Eoc) = self.stack.pop() {
            self.consume(2);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        assert_eq!(
            parse_header(&[0x30, 0x80]),
            Ok(Header {
                tag: 0x30,
                len: None,
                header_len: 2
            })
        );
        assert_eq!(
            parse_header(&[0x04, 0x82, 0x01, 0x00]),
            Ok(Header {
                tag: 4,
                len: Some(256),
                header_len: 4
            })
        );
        assert_eq!(parse_header(&[0x04, 0x82, 0x01]), Err(BerError::NeedMore));
        assert!(matches!(
            parse_header(&[0x04, 0x80]),
            Err(BerError::Malformed(_))
        ));
    }

    #[test]
    fn ber_to_der() {
        // SEQUENCE(indef) { OCTET STRING constructed(indef) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0,
        ];
        assert_eq!(element_len(&ber), Ok(ber.len()));
        assert_eq!(
            to_der(&ber),
            Ok(vec![0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c'])
        );
        assert_eq!(element_len(&ber[..10]), Err(BerError::NeedMore));
    }

    #[test]
    fn long_lengths() {
        let mut v = Vec::new();
        write_len(&mut v, 300);
        assert_eq!(v, vec![0x82, 0x01, 0x2c]);
    }
}
