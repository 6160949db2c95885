//! Bulk text transforms shared by the signing, verification and envelope paths: LF → CRLF,
//! base64 in 76-character CRLF lines, and base64 decoding of line-broken text.
//!
//! They work on whole slices (memchr to find line ends, SIMD base64 on whole lines) rather
//! than byte by byte: on a 256 MiB message the byte loops they replace cost more than the
//! SHA-256 or AES-GCM of the same data (see docs/performance.md).

use crate::SmimeError;

/// Input bytes per base64 line (76 characters).
pub const B64_LINE_BYTES: usize = 57;
/// Output bytes per full base64 line, CRLF included.
pub const B64_LINE_LEN: usize = 78;

/// Appends `data` to `out` with every LF not preceded by CR turned into CRLF (bare CR kept).
/// `prev_cr` carries whether the byte before `data` was a CR, and is updated.
pub fn crlf_into(prev_cr: &mut bool, data: &[u8], out: &mut Vec<u8>) {
    let Some(&last) = data.last() else {
        return;
    };
    out.reserve(data.len());
    let mut start = 0;
    for lf in memchr::memchr_iter(b'\n', data) {
        let cr_before = if lf == 0 {
            *prev_cr
        } else {
            data[lf - 1] == b'\r'
        };
        if !cr_before {
            out.extend_from_slice(&data[start..lf]);
            out.push(b'\r');
            start = lf;
        }
    }
    out.extend_from_slice(&data[start..]);
    *prev_cr = last == b'\r';
}

/// Whether `data` has a byte that 7-bit text may not carry: 8-bit bytes or NUL.
pub fn has_8bit_or_nul(data: &[u8]) -> bool {
    // b - 1 wraps NUL to 0xff: one comparison finds both; no early exit inside a block, so
    // the fold vectorizes
    data.chunks(4096).any(|c| {
        c.iter()
            .fold(false, |acc, &b| acc | (b.wrapping_sub(1) >= 0x7f))
    })
}

/// Encodes full 57-byte groups of `data` as 76-character base64 lines with CRLF, appended to
/// `out`; returns the bytes left over (fewer than 57).
pub fn b64_lines_into<'a>(data: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
    let full = data.len() / B64_LINE_BYTES;
    let start = out.len();
    out.resize(start + full * B64_LINE_LEN, 0);
    let b64 = base64_simd::STANDARD;
    for (src, dst) in data
        .chunks_exact(B64_LINE_BYTES)
        .zip(out[start..].chunks_exact_mut(B64_LINE_LEN))
    {
        let _ = b64.encode(src, base64_simd::Out::from_slice(&mut dst[..76]));
        dst[76] = b'\r';
        dst[77] = b'\n';
    }
    &data[full * B64_LINE_BYTES..]
}

/// One (final, possibly short) base64 line with CRLF; nothing for empty input.
pub fn b64_last_line_into(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    base64_simd::STANDARD.encode_append(data, out);
    out.extend_from_slice(b"\r\n");
}

/// Decodes standard base64 (with padding, no whitespace) and appends the bytes to `out`.
pub fn b64_decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), SmimeError> {
    base64_simd::STANDARD
        .decode_append(text, out)
        .map_err(|_| SmimeError::Malformed("invalid base64".into()))
}

/// Appends the complete lines of base64 `data` to `acc` without their CR/LF, stopping
/// before the first line with a byte that needs the careful path (space, tab, a CR inside
/// the line, `-`). Returns how many bytes of `data` were consumed (always whole lines) and
/// whether it stopped at such a line; an incomplete last line is left unconsumed.
pub fn strip_lines(data: &[u8], acc: &mut Vec<u8>) -> (usize, bool) {
    let Some(last_lf) = memchr::memrchr(b'\n', data) else {
        return (0, false);
    };
    let region = &data[..=last_lf];
    // Fast path: no space, tab or `-` anywhere, and every CR ends a line. Lines of one
    // length (what encoders write) are found by looking where the next LF should be.
    if memchr::memchr3(b' ', b'\t', b'-', region).is_none() {
        let crs = region.iter().filter(|&&b| b == b'\r').count();
        let before = acc.len();
        acc.reserve(region.len());
        let mut stripped = 0;
        let mut start = 0;
        let mut guess = 0;
        while start < region.len() {
            let lf = match region.get(start + guess) {
                Some(b'\n') => start + guess,
                _ => match memchr::memchr(b'\n', &region[start..]) {
                    Some(i) => start + i,
                    None => break,
                },
            };
            let mut end = lf;
            if end > start && region[end - 1] == b'\r' {
                end -= 1;
                stripped += 1;
            }
            acc.extend_from_slice(&region[start..end]);
            guess = lf - start;
            start = lf + 1;
        }
        if stripped == crs {
            return (region.len(), false);
        }
        acc.truncate(before);
    }
    let mut start = 0;
    for lf in memchr::memchr_iter(b'\n', region) {
        let line = &region[start..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if memchr::memchr3(b' ', b'\t', b'-', line).is_some()
            || memchr::memchr(b'\r', line).is_some()
        {
            return (start, true);
        }
        acc.extend_from_slice(line);
        start = lf + 1;
    }
    (start, false)
}

/// Reads into `buf` until it holds `want` more bytes or the input ends; returns how
/// many bytes were added (0 at the end of the input).
pub fn read_some(
    input: &mut dyn std::io::Read,
    buf: &mut Vec<u8>,
    want: usize,
) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + want, 0);
    let mut got = 0;
    while got < want {
        match input.read(&mut buf[start + got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(start + got);
                return Err(e);
            }
        }
    }
    buf.truncate(start + got);
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn crlf_matches_byte_loop() {
        let cases: [&[u8]; 6] = [
            b"a\nb\r\nc\r\r\nd\n\n",
            b"\n",
            b"\r",
            b"",
            b"no newline",
            b"\r\n\r\n\n\r",
        ];
        for c in cases {
            for split in 0..=c.len() {
                let mut prev = false;
                let mut out = Vec::new();
                crlf_into(&mut prev, &c[..split], &mut out);
                crlf_into(&mut prev, &c[split..], &mut out);
                let mut want = Vec::new();
                let mut p = false;
                for &b in c {
                    if b == b'\n' && !p {
                        want.push(b'\r');
                    }
                    want.push(b);
                    p = b == b'\r';
                }
                assert_eq!(out, want, "{c:?} split at {split}");
            }
        }
    }

    #[test]
    fn eight_bit() {
        assert!(!has_8bit_or_nul(b"plain text\r\n\x7f"));
        assert!(has_8bit_or_nul(b"a\0b"));
        assert!(has_8bit_or_nul(&[b'a', 0x80]));
        let mut big = vec![b'x'; 100_000];
        assert!(!has_8bit_or_nul(&big));
        big[99_999] = 0xff;
        assert!(has_8bit_or_nul(&big));
    }

    #[test]
    fn lines_match_base64_crate() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 7) as u8).collect();
        let mut out = Vec::new();
        let rest = b64_lines_into(&data, &mut out);
        b64_last_line_into(rest, &mut out);
        let mut want = Vec::new();
        for c in data.chunks(57) {
            want.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(c)
                    .as_bytes(),
            );
            want.extend_from_slice(b"\r\n");
        }
        assert_eq!(out, want);
        let mut acc = Vec::new();
        let (used, slow) = strip_lines(&out, &mut acc);
        assert_eq!((used, slow), (out.len(), false));
        let mut dec = Vec::new();
        b64_decode_into(&acc, &mut dec).expect("decodes");
        assert_eq!(dec, data);
        assert!(strip_lines(b"QUFB\nQU FB\n", &mut Vec::new()) == (5, true));
        let mut acc = Vec::new();
        assert_eq!(
            strip_lines(b"QUFB\r\nQUFBQUFB\nQQ\r\nQU", &mut acc),
            (19, false)
        );
        assert_eq!(acc, b"QUFBQUFBQUFBQQ");
        let mut acc = Vec::new();
        assert_eq!(strip_lines(b"QUFB\r\nQU\rFB\nQUFB\n", &mut acc), (6, true));
        assert_eq!(acc, b"QUFB");
    }
}
