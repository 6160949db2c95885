//! MIME framing for S/MIME.

use crate::SmimeError;
use base64::Engine;

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
            return Err(SmimeError::Malformed(format!(
                "PEM block {label} not closed"
            )));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| SmimeError::Malformed(format!("PEM base64: {e}")))?;
        out.push((label.to_string(), der));
    }
    Ok(out)
}
