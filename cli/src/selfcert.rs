//! Encrypt-to-self: the sender's own certificate is added to the recipients, so that the
//! sender can read what they sent. The sender is the message's From address; its
//! certificate is the one of the key that address selects on the agent's tokens.
//! With no agent running, encryption still works, without the self copy (and says so).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokenmail_proto::v1::{Request, Response};

/// The From address of the message in `path`, if it has one.
fn from_address(path: &Path) -> Result<Option<String>> {
    let mut head = vec![0u8; 64 * 1024];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut n = 0;
    while n < head.len() {
        let got = f.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    head.truncate(n);
    let Ok(Some((fields, _))) = tokenmail_smime::mime::parse_header(&head) else {
        return Ok(None);
    };
    Ok(tokenmail_smime::mime::from_address(&fields).map(|a| a.to_ascii_lowercase()))
}

/// Adds the sender's certificate (written to a file in `dir`) to `recipients`, unless one
/// of them already is that certificate. Returns a note for the user when no self copy is made.
pub fn add_self(
    input: &Path,
    recipients: &mut Vec<PathBuf>,
    socket: Option<&Path>,
    dir: &Path,
) -> Result<Option<String>> {
    let Some(from) = from_address(input)? else {
        return Ok(Some(
            "not encrypted to self: the message has no From address (--no-self silences this)"
                .into(),
        ));
    };
    let mut client = match crate::agentkey::connect(socket) {
        Ok(c) => c,
        Err(_) => {
            return Ok(Some(format!(
                "not encrypted to self: no agent to find {from}'s certificate (--no-self silences this)"
            )))
        }
    };
    let Response::Status(st) = client.call(&Request::Status)? else {
        return Ok(None);
    };
    let Some(sel) = st.emails.iter().find(|e| e.email == from) else {
        return Ok(Some(format!(
            "not encrypted to self: no key on the tokens has a certificate for {from} (--no-self silences this)"
        )));
    };
    let Some(cert) = st
        .keys
        .iter()
        .find(|k| k.token == sel.token && k.label == sel.key && k.id == sel.id)
        .and_then(|k| k.certificate.as_ref())
    else {
        return Ok(None);
    };
    for r in recipients.iter() {
        if let Ok(data) = std::fs::read(r) {
            if data == cert.der.0 || pem_contains(&data, &cert.der.0) {
                return Ok(None);
            }
        }
    }
    let path = dir.join("self.der");
    std::fs::write(&path, &cert.der.0)?;
    recipients.push(path);
    Ok(None)
}

fn pem_contains(pem: &[u8], der: &[u8]) -> bool {
    tokenmail_smime::mime::pem_blocks(pem)
        .map(|blocks| blocks.iter().any(|(_, d)| d == der))
        .unwrap_or(false)
}
