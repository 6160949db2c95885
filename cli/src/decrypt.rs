//! `tokenmail decrypt`: decrypt with a key on a token, through the agent.
//!
//! The content key is unwrapped (RSA) or agreed (ECDH) on the token; the bulk
//! decryption runs here, streaming. Plaintext is spooled to a private temporary file
//! and released (renamed over `-o`, or copied to standard output) only after the
//! decryption finished: for AES-GCM that is after the tag verified, for CBC after the
//! padding checked. Any failure after the recipient matched is one uniform error.

use std::cell::{OnceCell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_smime::envelope::{DecryptError, ParsedEnvelope};
use tokenmail_smime::pipeline::{decrypt_stream, CipherPolicy, DecryptFailure, DecryptStream};

use crate::agentkey::{self, AgentKey};
use crate::output::{BackgroundFeed, EarlySync, Staged, WriteFeed};

/// Arguments of `tokenmail decrypt`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// The encrypted message (MIME), or a bare CMS structure in DER or PEM (CMS, PKCS7, or gpgsm's ENCRYPTED MESSAGE armor; default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Write the plaintext here (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Print a JSON report (recipient key, cipher kind, authenticated, inner signature) on standard output; needs -o.
    #[arg(long)]
    pub json: bool,
    /// Output only the decrypted MIME entity, without the message's outer headers (From, To, Subject…).
    #[arg(long)]
    pub entity_only: bool,
    /// Trust anchors for verifying a signed-then-encrypted message's inner signature
    /// (default: $TOKENMAIL_TRUST; without any, the signature is reported as not checked).
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
    /// Content-encryption algorithms accepted: `any` (CBC and 3DES decrypt with a warning),
    /// `aes` (3DES refused) or `authenticated` (AES-GCM only). Default: `[decrypt] accept`
    /// in the configuration, else `any`.
    #[arg(long, value_name = "POLICY", value_parser = parse_accept)]
    pub accept: Option<CipherPolicy>,
}

fn parse_accept(s: &str) -> std::result::Result<CipherPolicy, String> {
    CipherPolicy::from_name(s).ok_or_else(|| format!("{s:?}: use any, aes or authenticated"))
}

/// The decrypt policy: `--accept`, else the configuration's `[decrypt] accept`, else `any`.
fn cipher_policy(args: &DecryptArgs) -> Result<CipherPolicy> {
    if let Some(p) = args.accept {
        return Ok(p);
    }
    match crate::store::config_value("decrypt", "accept")? {
        None => Ok(CipherPolicy::default()),
        Some((value, cfg)) => CipherPolicy::from_name(&value).ok_or_else(|| {
            anyhow!(
                "{}: [decrypt] accept = {value:?}: use \"any\", \"aes\" or \"authenticated\"",
                cfg.display()
            )
        }),
    }
}

/// Read size: big reads keep per-call costs (syscalls, thread hand-overs) negligible.
const CHUNK: usize = 1 << 20;

/// A failure of the decryption driver, in the user's terms.
fn decrypt_error(e: DecryptFailure<anyhow::Error>) -> anyhow::Error {
    match e {
        DecryptFailure::Failed => {
            anyhow!("decryption failed (wrong key, or the message was altered)")
        }
        DecryptFailure::Message(DecryptError::NotARecipient) => {
            anyhow!("none of the keys on the tokens is a recipient of this message")
        }
        DecryptFailure::Message(DecryptError::Malformed(m)) => {
            anyhow!("not a readable S/MIME encrypted message: {m}")
        }
        DecryptFailure::Message(DecryptError::Unsupported(m)) => anyhow!("unsupported: {m}"),
        DecryptFailure::Message(other) => anyhow!("{other}"),
        DecryptFailure::Refused(why) => anyhow!("{why}"),
        DecryptFailure::KeyUnavailable(m) => anyhow!("the token could not be used: {m}"),
        DecryptFailure::NoKey(e) => e,
        DecryptFailure::Read(e) => anyhow!("cannot read the input: {e}"),
        DecryptFailure::Write(e) => anyhow!("cannot write the plaintext: {e}"),
    }
}

/// The agent's key for `env` (connecting on first use; with `--wait`, waiting for an absent
/// token once).
fn pick_key<'c>(
    client: &'c OnceCell<RefCell<tokenmail_proto::Client>>,
    socket: Option<&Path>,
    env: &ParsedEnvelope,
) -> Result<AgentKey<'c>> {
    if client.get().is_none() {
        let _ = client.set(RefCell::new(agentkey::connect(socket)?));
    }
    let c = client
        .get()
        .ok_or_else(|| anyhow!("cannot reach the agent"))?;
    let mut keys = agentkey::keys_with_certificates(&mut c.borrow_mut())?;
    if !keys.iter().any(|(_, cert)| env.is_recipient(cert)) {
        let mut cl = c.borrow_mut();
        if agentkey::wait_for_absent(&mut cl)? {
            keys = agentkey::keys_with_certificates(&mut cl)?;
        }
    }
    let Some((info, cert)) = keys.iter().find(|(_, cert)| env.is_recipient(cert)) else {
        let labels: Vec<&str> = keys.iter().map(|(k, _)| k.label.as_str()).collect();
        bail!(
            "none of the keys on the tokens ({}) is a recipient of this message",
            if labels.is_empty() {
                "none visible".to_string()
            } else {
                labels.join(", ")
            }
        );
    };
    Ok(AgentKey::new(c, info, cert.clone()))
}

/// Said when the input's line ends were LF and the plaintext's are CRLF.
pub const CRLF_NOTE: &str = "tokenmail: note: the input has LF line ends, the plaintext has CRLF: S/MIME encrypts the canonical CRLF form and decrypt gives back what the sender encrypted (convert with `sed 's/\\r$//'` or dos2unix if you need LF)";

/// Notes whether the first line of what passes through ends in a bare LF.
struct LineEndProbe<R> {
    inner: R,
    bare_lf: Option<bool>,
    last_cr: bool,
}

impl<R: Read> LineEndProbe<R> {
    fn new(inner: R) -> Self {
        LineEndProbe {
            inner,
            bare_lf: None,
            last_cr: false,
        }
    }
    /// `Some(true)`: the first line ended in LF alone; `Some(false)`: in CRLF; `None`: no
    /// line end was read.
    fn bare_lf(&self) -> Option<bool> {
        self.bare_lf
    }
}

impl<R: Read> Read for LineEndProbe<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.bare_lf.is_none() {
            if let Some(i) = memchr_lf(&buf[..n]) {
                let cr = if i == 0 {
                    self.last_cr
                } else {
                    buf[i - 1] == b'\r'
                };
                self.bare_lf = Some(!cr);
            } else if n > 0 {
                self.last_cr = buf[n - 1] == b'\r';
            }
        }
        Ok(n)
    }
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

/// Whether the first line of the file at `path` ends in CRLF.
fn starts_with_crlf(path: &Path) -> bool {
    let mut head = vec![0u8; 8192];
    let Ok(n) = File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    let head = &head[..n];
    memchr_lf(head).is_some_and(|i| i > 0 && head[i - 1] == b'\r')
}

/// Runs `tokenmail decrypt`.
pub fn run(args: DecryptArgs, socket: Option<&Path>) -> Result<i32> {
    if args.json && args.output.is_none() {
        bail!("--json prints the report on standard output: give -o FILE for the plaintext");
    }
    // A triple-wrapped message (signed, encrypted, signed): check the outer signature,
    // then decrypt what it signed, with the message's headers kept.
    if let Some(p) = args.input.as_deref() {
        if is_signed(p)? {
            return outer_signed(args.clone(), p, socket);
        }
    }
    let input: Box<dyn Read> = match &args.input {
        Some(p) => Box::new(crate::term::Progress::file(
            File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            "decrypting",
        )),
        None => Box::new(io::stdin().lock()),
    };
    let mut input = LineEndProbe::new(input);
    // The spool (0600): beside a regular output file, which it becomes by a rename; for a
    // device, a FIFO or standard output a scratch file in $TMPDIR, copied through once the
    // plaintext is authentic and never synced to disk.
    let spool = Staged::new(args.output.as_deref())?;
    let durable = spool.durable();
    let spool_writer = if durable {
        EarlySync::new(spool.file())?
    } else {
        EarlySync::scratch(spool.file())?
    };
    let mut writer = BackgroundFeed::new(WriteFeed(spool_writer));
    // the agent is asked only once the envelope is known (a broken message is said so
    // first, agent or not)
    let client: OnceCell<RefCell<tokenmail_proto::Client>> = OnceCell::new();
    let mut used: Option<String> = None;
    let stream = DecryptStream {
        entity_only: args.entity_only,
        chunk: CHUNK,
        policy: cipher_policy(&args)?,
    };
    let result = decrypt_stream(&mut input, &mut writer, &stream, |env| {
        let key = pick_key(&client, socket, env)?;
        used = Some(key.label.clone());
        Ok::<_, anyhow::Error>(key)
    });
    let written = writer.finish();
    let outcome = result.map_err(decrypt_error)?;
    let written = written?.0;
    if durable {
        written.finish()?;
    } else {
        written.finish_unsynced()?;
    }
    let inner = inner_signature(&spool.path(), &args.trust)?;
    let crlf_out = input.bare_lf() == Some(true) && starts_with_crlf(&spool.path());
    // Authentic: release.
    spool.release()?;
    if crlf_out {
        eprintln!("{CRLF_NOTE}");
    }
    if args.json {
        let report = serde_json::json!({
            "recipient": used,
            "kind": format!("{:?}", outcome.kind),
            "authenticated": outcome.authenticated,
            "cipher": outcome.cipher,
            "legacy_cipher": outcome.legacy,
            "signature": inner.as_ref().map(|i| &i.json),
        });
        println!("{report}");
    } else if outcome.legacy {
        eprintln!(
            "tokenmail: warning: {} is a legacy cipher with no integrity protection (authenticated: false); `--accept aes` refuses it",
            outcome.cipher
        );
    } else if !outcome.authenticated {
        eprintln!(
            "tokenmail: note: {} content has no integrity protection (authenticated: false); `--accept authenticated` refuses it",
            outcome.cipher
        );
    }
    if let Some(i) = inner {
        eprint!("{}", i.text);
    }
    Ok(0)
}

fn outer_signed(args: DecryptArgs, input: &Path, socket: Option<&Path>) -> Result<i32> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let content = dir.path().join("content");
    let vargs = crate::verify::VerifyArgs {
        trust: args.trust.clone(),
        signature: None,
        json: false,
        allow_any_eku: false,
        untrusted: vec![],
        crl: vec![],
        revocation: None,
        at: None,
        max_intermediates: None,
        cert_policy: Default::default(),
        input: Some(input.to_path_buf()),
        output: Some(content.clone()),
    };
    let have_trust = !args.trust.is_empty() || !crate::store::default_anchor_paths()?.0.is_empty();
    if !have_trust {
        bail!("the message is signed outside the encryption (triple wrap): pass --trust CA.pem (or set TOKENMAIL_TRUST) to check it");
    }
    let mut report = Vec::new();
    let mut notes = Vec::new();
    let code = crate::verify::run_with(vargs, &mut report, &mut notes)?;
    if code != 0 {
        bail!(
            "the outer signature is not valid; not decrypting: {}",
            String::from_utf8_lossy(&report)
                .lines()
                .filter(|l| l.contains("FAILED"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    eprintln!("tokenmail: outer signature valid");
    // Headers of the message + the signed entity (an encrypted one).
    let mut head = vec![0u8; 64 * 1024];
    let n = File::open(input)?.read(&mut head)?;
    head.truncate(n);
    let wrapped = dir.path().join("wrapped");
    let mut w = File::create(&wrapped)?;
    w.write_all(&tokenmail_smime::mime::outer_header_block(&head))?;
    io::copy(&mut File::open(&content)?, &mut w)?;
    drop(w);
    if is_signed(&wrapped)? {
        bail!("a signed message with no encryption inside: use `tokenmail verify`");
    }
    let mut inner = args;
    inner.input = Some(wrapped);
    run(inner, socket)
}

/// The inner signature of a signed-then-encrypted message, checked.
struct InnerSignature {
    json: serde_json::Value,
    text: String,
}

fn is_signed(path: &Path) -> Result<bool> {
    let mut head = vec![0u8; 64 * 1024];
    let mut f = File::open(path)?;
    let n = f.read(&mut head)?;
    head.truncate(n);
    let Ok(Some((fields, _))) = tokenmail_smime::mime::parse_header(&head) else {
        return Ok(false);
    };
    Ok(fields.iter().any(|f| {
        f.is("Content-Type") && {
            let v = f.value().to_ascii_lowercase();
            v.starts_with("multipart/signed")
                || (v.contains("pkcs7-mime") && v.contains("signed-data"))
        }
    }))
}

fn inner_signature(plain: &Path, trust: &[PathBuf]) -> Result<Option<InnerSignature>> {
    if !is_signed(plain)? {
        return Ok(None);
    }
    let have_env = !crate::store::default_anchor_paths()?.0.is_empty();
    if trust.is_empty() && !have_env {
        return Ok(Some(InnerSignature {
            json: serde_json::json!({"checked": false, "reason": "no trust anchor (--trust or TOKENMAIL_TRUST)"}),
            text: "tokenmail: the message is signed inside; signature not checked: no trust anchor (pass --trust or set TOKENMAIL_TRUST)\n".into(),
        }));
    }
    let args = crate::verify::VerifyArgs {
        trust: trust.to_vec(),
        signature: None,
        json: true,
        allow_any_eku: false,
        untrusted: vec![],
        crl: vec![],
        revocation: None,
        at: None,
        max_intermediates: None,
        cert_policy: Default::default(),
        input: Some(plain.to_path_buf()),
        output: None,
    };
    let mut report = Vec::new();
    let mut notes = Vec::new();
    let code = crate::verify::run_with(args, &mut report, &mut notes)?;
    let json: serde_json::Value =
        serde_json::from_slice(&report).unwrap_or(serde_json::Value::Null);
    let signer = json["signers"][0]["subject"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let text = if code == 0 {
        format!("tokenmail: inner signature valid: {signer}\n")
    } else {
        let failed: Vec<String> = json["signers"][0]["checks"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| c["ok"] == false)
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["name"].as_str().unwrap_or("?"),
                            c["reason"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "tokenmail: inner signature NOT valid ({signer}): {}\n",
            failed.join("; ")
        )
    };
    Ok(Some(InnerSignature {
        json: serde_json::json!({"checked": true, "valid": code == 0, "report": json}),
        text,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(chunks: &[&[u8]]) -> Option<bool> {
        let data: Vec<u8> = chunks.concat();
        // read in the given pieces: a CR at the end of one read, LF at the start of the next
        let mut sizes = chunks
            .iter()
            .map(|c| c.len())
            .collect::<Vec<_>>()
            .into_iter();
        let mut p = LineEndProbe::new(&data[..]);
        loop {
            let size = sizes.next().unwrap_or(64);
            let mut buf = vec![0u8; size.max(1)];
            if p.read(&mut buf).expect("read") == 0 {
                return p.bare_lf();
            }
        }
    }

    #[test]
    fn the_probe_tells_lf_from_crlf_across_reads() {
        assert_eq!(probe(&[b"From: a\nTo: b\r\n"]), Some(true));
        assert_eq!(probe(&[b"From: a\r\nTo: b\n"]), Some(false));
        assert_eq!(probe(&[b"From: a\r", b"\nTo: b\n"]), Some(false));
        assert_eq!(probe(&[b"From: a", b"\nTo: b\n"]), Some(true));
        assert_eq!(probe(&[b"no line end"]), None);
    }
}
