//! Minimal BER/DER tag-length-value handling.
//!
//! * [`ber_to_der`] turns BER with indefinite lengths and constructed OCTET STRINGs (what
//!   `openssl cms -sign -stream` emits) into definite-length DER. Parts that are already DER
//!   come out byte for byte identical, which matters for signed attributes.
//! * [`Tlv`] walks DER and hands out the exact bytes of each element, so the signed
//!   attributes can be hashed as received instead of as re-encoded.

use crate::SmimeError;

const MAX_DEPTH: usize = 64;

/// One DER element borrowed from its encoding.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    /// First identifier octet (class, constructed bit, low tag number).
    pub tag: u8,
    /// The whole element: identifier, length and contents.
    pub raw: &'a [u8],
    /// The contents octets.
    pub content: &'a [u8],
}

fn err(msg: &str) -> SmimeError {
    SmimeError::Malformed(msg.to_string())
}

/// Identifier octets: returns (first octet, identifier length).
fn read_tag(input: &[u8]) -> Result<(u8, usize), SmimeError> {
    let first = *input.first().ok_or_else(|| err("truncated tag"))?;
    if first & 0x1f != 0x1f {
        return Ok((first, 1));
    }
    let mut i = 1;
    loop {
        let b = *input.get(i).ok_or_else(|| err("truncated tag"))?;
        i += 1;
        if b & 0x80 == 0 {
            return Ok((first, i));
        }
        if i > 6 {
            return Err(err("tag number too large"));
        }
    }
}

/// Length octets: returns (Some(len) or None for indefinite, octets used).
fn read_len(input: &[u8]) -> Result<(Option<usize>, usize), SmimeError> {
    let first = *input.first().ok_or_else(|| err("truncated length"))?;
    if first < 0x80 {
        return Ok((Some(first as usize), 1));
    }
    if first == 0x80 {
        return Ok((None, 1));
    }
    let n = (first & 0x7f) as usize;
    if n > 8 {
        return Err(err("length too large"));
    }
    let bytes = input.get(1..1 + n).ok_or_else(|| err("truncated length"))?;
    let mut len: usize = 0;
    for b in bytes {
        len = len
            .checked_mul(256)
            .and_then(|l| l.checked_add(*b as usize))
            .ok_or_else(|| err("length overflow"))?;
    }
    Ok((Some(len), 1 + n))
}

/// DER length octets for `len`.
pub fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let mut out = vec![0x80 | (bytes.len() - skip) as u8];
    out.extend_from_slice(&bytes[skip..]);
    out
}

/// Encode one element with a single-octet tag.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    out.extend_from_slice(&der_len(content.len()));
    out.extend_from_slice(content);
    out
}

impl<'a> Tlv<'a> {
    /// Parse one definite-length element at the start of `input`; returns it and the rest.
    pub fn parse(input: &'a [u8]) -> Result<(Tlv<'a>, &'a [u8]), SmimeError> {
        let (tag, tl) = read_tag(input)?;
        let (len, ll) = read_len(&input[tl..])?;
        let len = len.ok_or_else(|| err("indefinite length in DER"))?;
        let start = tl + ll;
        let end = start
            .checked_add(len)
            .ok_or_else(|| err("length overflow"))?;
        if end > input.len() {
            return Err(err("element longer than its container"));
        }
        Ok((
            Tlv {
                tag,
                raw: &input[..end],
                content: &input[start..end],
            },
            &input[end..],
        ))
    }

    /// Parse exactly one element spanning all of `input`.
    pub fn parse_exact(input: &'a [u8]) -> Result<Tlv<'a>, SmimeError> {
        let (t, rest) = Self::parse(input)?;
        if !rest.is_empty() {
            return Err(err("trailing data after element"));
        }
        Ok(t)
    }

    /// The children of a constructed element.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>, SmimeError> {
        let mut out = Vec::new();
        let mut rest = self.content;
        while !rest.is_empty() {
            let (t, r) = Tlv::parse(rest)?;
            out.push(t);
            rest = r;
        }
        Ok(out)
    }
}

/// An element header at the start of `input`: (first identifier octet, length or `None` for
/// indefinite, header length), or `Ok(None)` when `input` is too short to tell.
pub fn header(input: &[u8]) -> Result<Option<(u8, Option<usize>, usize)>, SmimeError> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    let mut tl = 1;
    if first & 0x1f == 0x1f {
        loop {
            let Some(&b) = input.get(tl) else {
                return Ok(None);
            };
            tl += 1;
            if b & 0x80 == 0 {
                break;
            }
            if tl > 6 {
                return Err(err("tag number too large"));
            }
        }
    }
    let Some(&l0) = input.get(tl) else {
        return Ok(None);
    };
    if l0 > 0x80 && input.len() < tl + 1 + (l0 & 0x7f) as usize {
        return Ok(None);
    }
    let (len, ll) = read_len(&input[tl..])?;
    Ok(Some((first, len, tl + ll)))
}

/// Normalize the first BER element of `input` to DER; returns it and the octets consumed.
pub fn normalize_element(input: &[u8]) -> Result<(Vec<u8>, usize), SmimeError> {
    let mut out = Vec::new();
    let used = normalize(input, &mut out, 0)?;
    Ok((out, used))
}

/// Normalize BER (indefinite lengths, constructed OCTET STRINGs, long-form lengths) to DER.
/// Elements already in DER are copied unchanged. SET ordering is not touched.
pub fn ber_to_der(input: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let mut out = Vec::with_capacity(input.len());
    let used = normalize(input, &mut out, 0)?;
    if input[used..]
        .iter()
        .any(|b| !b.is_ascii_whitespace() && *b != 0)
    {
        return Err(err("trailing data after the CMS structure"));
    }
    Ok(out)
}

/// Normalize one element from `input` into `out`; returns the octets consumed.
fn normalize(input: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<usize, SmimeError> {
    if depth > MAX_DEPTH {
        return Err(err("nesting too deep"));
    }
    let (tag, tl) = read_tag(input)?;
    let (len, ll) = read_len(&input[tl..])?;
    let start = tl + ll;
    let constructed = tag & 0x20 != 0;
    if !constructed {
        let len = len.ok_or_else(|| err("indefinite length on a primitive element"))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| err("length overflow"))?;
        let content = input
            .get(start..end)
            .ok_or_else(|| err("truncated element"))?;
        out.extend_from_slice(&input[..tl]);
        out.extend_from_slice(&der_len(len));
        out.extend_from_slice(content);
        return Ok(end);
    }
    // constructed: normalize the children into a buffer
    let mut body = Vec::new();
    let mut pos = start;
    let mut children_offsets = Vec::new();
    match len {
        Some(len) => {
            let end = start
                .checked_add(len)
                .ok_or_else(|| err("length overflow"))?;
            if end > input.len() {
                return Err(err("truncated element"));
            }
            while pos < end {
                children_offsets.push(body.len());
                pos += normalize(&input[pos..end], &mut body, depth + 1)?;
            }
        }
        None => loop {
            let rest = input.get(pos..).ok_or_else(|| err("truncated element"))?;
            if rest.len() < 2 {
                return Err(err("missing end-of-contents"));
            }
            if rest[0] == 0 && rest[1] == 0 {
                pos += 2;
                break;
            }
            children_offsets.push(body.len());
            pos += normalize(rest, &mut body, depth + 1)?;
        },
    }
    if tag == 0x24 {
        // constructed OCTET STRING: concatenate the (now primitive) segments
        let mut data = Vec::with_capacity(body.len());
        let mut rest = body.as_slice();
        while !rest.is_empty() {
            let (t, r) = Tlv::parse(rest)?;
            if t.tag != 0x04 {
                return Err(err(
                    "constructed OCTET STRING with a non-OCTET STRING segment",
                ));
            }
            data.extend_from_slice(t.content);
            rest = r;
        }
        out.extend_from_slice(&tlv(0x04, &data));
    } else {
        out.extend_from_slice(&input[..tl]);
        out.extend_from_slice(&der_len(body.len()));
        out.extend_from_slice(&body);
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_and_constructed_octets() {
        // SEQUENCE(indef) { OCTET STRING constructed(indef) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x00,
            0x00,
        ];
        let der = ber_to_der(&ber).expect("normalizes");
        assert_eq!(der, vec![0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c']);
        // DER is a fixed point
        assert_eq!(ber_to_der(&der).expect("normalizes"), der);
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let t = tlv(0x04, &content);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (p, rest) = Tlv::parse(&t).expect("parses");
        assert!(rest.is_empty());
        assert_eq!(p.content.len(), 300);
    }

    #[test]
    fn truncated_rejected() {
        assert!(ber_to_der(&[0x30, 0x05, 0x04]).is_err());
        assert!(ber_to_der(&[0x30, 0x80, 0x04, 0x00]).is_err());
    }
}
