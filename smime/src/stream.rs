//! Streaming verification input: an encapsulated (opaque) SignedData of any size.
//!
//! [`EncapsulatedSplitter`] takes the CMS (DER or indefinite-length BER) in chunks, returns the
//! eContent octets as they pass (hash them, write them to a temporary file), keeps only the
//! small parts (version, digest algorithms, certificates, SignerInfos), and at the end gives a
//! [`ParsedSignedData`] in detached form to verify against the digests the caller computed.

use crate::ber::{header, normalize_element, tlv};
use crate::verify::ParsedSignedData;
use crate::SmimeError;
use der::{Decode, Encode};

/// Bound for everything except the content (certificates, SignerInfos...).
pub const MAX_STRUCTURE: usize = 16 << 20;

fn malformed(s: &str) -> SmimeError {
    SmimeError::Malformed(s.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    ContentInfo,
    ContentType,
    Explicit0,
    SignedData,
    Version,
    DigestAlgorithms,
    Eci,
    EContentType,
    AfterEContentType,
    Content,
    Tail,
}

/// Streaming splitter for encapsulated SignedData; see the module documentation.
#[derive(Clone, Debug)]
pub struct EncapsulatedSplitter {
    buf: Vec<u8>,
    step: Step,
    /// DER pieces kept for the final structure: version, digestAlgorithms, eContentType
    version: Vec<u8>,
    digest_algs: Vec<u8>,
    econtent_type: Vec<u8>,
    /// remaining length of the ECI when definite
    eci_remaining: Option<usize>,
    /// open elements inside the ECI ([0], OCTET STRINGs): remaining length or indefinite
    frames: Vec<Option<usize>>,
    /// bytes left of the current primitive OCTET STRING segment
    segment: usize,
    /// ContentInfo, [0] and SignedData headers with an indefinite length (each needs an EOC)
    open_outer: usize,
}

impl Default for EncapsulatedSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl EncapsulatedSplitter {
    /// A splitter waiting for the first byte of a ContentInfo.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            step: Step::ContentInfo,
            version: Vec::new(),
            digest_algs: Vec::new(),
            econtent_type: Vec::new(),
            eci_remaining: None,
            frames: Vec::new(),
            segment: 0,
            open_outer: 0,
        }
    }

    /// Drop `n` bytes from the buffer, counting them against the open definite frames.
    fn consume(&mut self, n: usize) -> Result<(), SmimeError> {
        self.buf.drain(..n);
        for f in self.frames.iter_mut().flatten() {
            *f = f
                .checked_sub(n)
                .ok_or_else(|| malformed("element longer than its container"))?;
        }
        if let Some(r) = &mut self.eci_remaining {
            *r = r
                .checked_sub(n)
                .ok_or_else(|| malformed("element longer than its container"))?;
        }
        Ok(())
    }

    /// A whole primitive/definite TLV at the front, or `None` if incomplete.
    fn take_definite(&mut self, want_tag: u8, what: &str) -> Result<Option<Vec<u8>>, SmimeError> {
        let Some((tag, len, hl)) = header(&self.buf)? else {
            return Ok(None);
        };
        if tag != want_tag {
            return Err(malformed(&format!("unexpected tag {tag:#04x} for {what}")));
        }
        let len = len.ok_or_else(|| malformed(&format!("{what} has an indefinite length")))?;
        if self.buf.len() < hl + len {
            return Ok(None);
        }
        let v = self.buf[..hl + len].to_vec();
        self.consume(hl + len)?;
        Ok(Some(v))
    }

    /// A constructed header at the front; returns its length (`None` = indefinite).
    fn take_header(
        &mut self,
        want_tag: u8,
        what: &str,
    ) -> Result<Option<Option<usize>>, SmimeError> {
        let Some((tag, len, hl)) = header(&self.buf)? else {
            return Ok(None);
        };
        if tag != want_tag {
            return Err(malformed(&format!("unexpected tag {tag:#04x} for {what}")));
        }
        self.consume(hl)?;
        Ok(Some(len))
    }

    fn outer(&mut self, tag: u8, what: &str) -> Result<bool, SmimeError> {
        Ok(match self.take_header(tag, what)? {
            Some(None) => {
                self.open_outer += 1;
                true
            }
            Some(Some(_)) => true,
            None => false,
        })
    }

    /// Feed CMS bytes; returns eContent bytes.
    pub fn update(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SmimeError> {
        self.buf.extend_from_slice(chunk);
        if self.step != Step::Content && self.buf.len() > MAX_STRUCTURE {
            return Err(malformed("SignedData structure too large"));
        }
        let mut out = Vec::new();
        loop {
            let progressed = match self.step {
                Step::ContentInfo => self
                    .outer(0x30, "ContentInfo")?
                    .then_some(Step::ContentType),
                Step::ContentType => match self.take_definite(0x06, "contentType")? {
                    Some(o) => {
                        if o != crate::alg::oid::ID_SIGNED_DATA.to_der()? {
                            return Err(SmimeError::Unsupported(
                                "the CMS structure is not SignedData".into(),
                            ));
                        }
                        Some(Step::Explicit0)
                    }
                    None => None,
                },
                Step::Explicit0 => self.outer(0xa0, "content [0]")?.then_some(Step::SignedData),
                Step::SignedData => self.outer(0x30, "SignedData")?.then_some(Step::Version),
                Step::Version => match self.take_definite(0x02, "version")? {
                    Some(v) => {
                        self.version = v;
                        Some(Step::DigestAlgorithms)
                    }
                    None => None,
                },
                Step::DigestAlgorithms => match normalize_element(&self.buf) {
                    Ok((der, used)) if der.first() == Some(&0x31) => {
                        self.digest_algs = der;
                        self.consume(used)?;
                        Some(Step::Eci)
                    }
                    Ok(_) => return Err(malformed("digestAlgorithms is not a SET")),
                    Err(e) if self.buf.len() > 65_536 => return Err(e),
                    Err(_) => None,
                },
                Step::Eci => match self.take_header(0x30, "encapContentInfo")? {
                    Some(len) => {
                        self.eci_remaining = len;
                        // an indefinite ECI is tracked as a frame closed by end-of-contents
                        if len.is_none() {
                            self.frames.push(None);
                        }
                        Some(Step::EContentType)
                    }
                    None => None,
                },
                Step::EContentType => match self.take_definite(0x06, "eContentType")? {
                    Some(o) => {
                        self.econtent_type = o;
                        Some(Step::AfterEContentType)
                    }
                    None => None,
                },
                Step::AfterEContentType => {
                    if self.eci_remaining == Some(0) {
                        Some(Step::Tail) // detached
                    } else if self.buf.len() < 2 {
                        None
                    } else if self.buf[0] == 0 && self.buf[1] == 0 && self.eci_remaining.is_none() {
                        self.consume(2)?;
                        self.frames.pop();
                        Some(Step::Tail)
                    } else {
                        match self.take_header(0xa0, "eContent [0]")? {
                            Some(len) => {
                                self.frames.push(len);
                                Some(Step::Content)
                            }
                            None => None,
                        }
                    }
                }
                Step::Content => self.content(&mut out)?,
                Step::Tail => {
                    if self.buf.len() > MAX_STRUCTURE {
                        return Err(malformed("SignedData structure too large"));
                    }
                    return Ok(out);
                }
            };
            match progressed {
                Some(next) => self.step = next,
                None => return Ok(out),
            }
        }
    }

    /// One step inside the eContent; returns the next step or `None` for "need more input".
    fn content(&mut self, out: &mut Vec<u8>) -> Result<Option<Step>, SmimeError> {
        if self.segment > 0 {
            let n = self.segment.min(self.buf.len());
            if n == 0 {
                return Ok(None);
            }
            out.extend_from_slice(&self.buf[..n]);
            self.consume(n)?;
            self.segment -= n;
            return Ok(Some(Step::Content));
        }
        match self.frames.last() {
            None => return Ok(Some(Step::Tail)),
            Some(Some(0)) => {
                self.frames.pop();
                return Ok(Some(self.after_pop()));
            }
            Some(None) => {
                if self.buf.len() < 2 {
                    return Ok(None);
                }
                if self.buf[0] == 0 && self.buf[1] == 0 {
                    self.consume(2)?;
                    self.frames.pop();
                    return Ok(Some(self.after_pop()));
                }
            }
            Some(Some(_)) => {}
        }
        let Some((tag, len, hl)) = header(&self.buf)? else {
            return Ok(None);
        };
        match (tag, len) {
            (0x04, Some(len)) => {
                self.consume(hl)?;
                self.segment = len;
            }
            (0x24, len) => {
                self.consume(hl)?;
                self.frames.push(len);
            }
            _ => return Err(malformed("eContent is not an OCTET STRING")),
        }
        if self.frames.len() > 64 {
            return Err(malformed("nesting too deep"));
        }
        Ok(Some(Step::Content))
    }

    fn after_pop(&self) -> Step {
        if self.frames.is_empty() {
            Step::Tail
        } else {
            Step::Content
        }
    }

    /// The SignedData's digestAlgorithms (supported ones), once they have been read — always
    /// before the first content byte is returned. Hash the content with these.
    pub fn digest_algorithms(&self) -> Option<Vec<crate::alg::HashAlg>> {
        if self.digest_algs.is_empty() {
            return None;
        }
        let set = crate::ber::Tlv::parse_exact(&self.digest_algs).ok()?;
        let mut v: Vec<crate::alg::HashAlg> = set
            .children()
            .ok()?
            .iter()
            .filter_map(|c| spki::AlgorithmIdentifierOwned::from_der(c.raw).ok())
            .filter_map(|a| crate::alg::HashAlg::from_oid(&a.oid))
            .collect();
        v.sort();
        v.dedup();
        Some(v)
    }

    /// End of input: the SignedData without its content (verify it against the digests of
    /// what [`EncapsulatedSplitter::update`] returned).
    pub fn finish(mut self) -> Result<ParsedSignedData, SmimeError> {
        if self.step != Step::Tail {
            // a definite-length ECI ends when its length is used up
            if self.step == Step::Content && self.frames.is_empty() && self.segment == 0 {
                self.step = Step::Tail;
            } else {
                return Err(malformed("the CMS structure is truncated"));
            }
        }
        // what follows the encapsulated content: [0] certificates, [1] crls, signerInfos
        let mut rest = self.buf.as_slice();
        let mut body = self.version.clone();
        body.extend_from_slice(&self.digest_algs);
        body.extend_from_slice(&tlv(0x30, &self.econtent_type));
        while rest.len() >= 2 && !(rest[0] == 0 && rest[1] == 0) {
            let (der, used) = normalize_element(rest)?;
            body.extend_from_slice(&der);
            rest = &rest[used..];
        }
        let eocs = 2 * self.open_outer;
        if rest.len() < eocs || rest[..eocs].iter().any(|b| *b != 0) {
            return Err(malformed(
                "the CMS structure is truncated (end-of-contents missing)",
            ));
        }
        if rest[eocs..].iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(malformed("trailing data after SignedData"));
        }
        let mut ci = crate::alg::oid::ID_SIGNED_DATA.to_der()?;
        ci.extend_from_slice(&tlv(0xa0, &tlv(0x30, &body)));
        ParsedSignedData::parse(&tlv(0x30, &ci))
    }
}
