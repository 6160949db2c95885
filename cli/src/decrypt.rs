//! `tokenmail decrypt`: decrypt with a key on a token, through the agent.
//!
//! The content key is unwrapped (RSA) or agreed (ECDH) on the token; the bulk
//! decryption runs here, streaming. Plaintext is spooled to a private temporary file
//! and released (renamed over `-o`, or copied to standard output) only after the
//! decryption finished: for AES-GCM that is after the tag verified, for CBC after the
//! padding checked. Any failure after the recipient matched is one uniform error.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_smime::envelope::{DecryptError, MessageDecryptor};

use crate::agentkey::{self, AgentKey};

/// Arguments of `tokenmail decrypt`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// The encrypted message (MIME), or a bare CMS structure in DER or PEM (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Write the plaintext here (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Print a JSON report (recipient key, cipher kind, authenticated) on standard output; needs -o.
    #[arg(long)]
    pub json: bool,
}

const CHUNK: usize = 64 * 1024;

fn describe(e: &DecryptError) -> String {
    match e {
        DecryptError::Failed => "decryption failed (wrong key, or the message was altered)".into(),
        DecryptError::NotARecipient => {
            "none of the keys on the tokens is a recipient of this message".into()
        }
        DecryptError::Malformed(m) => format!("not a readable S/MIME encrypted message: {m}"),
        DecryptError::Unsupported(m) => format!("unsupported: {m}"),
        DecryptError::KeyUnavailable(m) => format!("the token could not be used: {m}"),
        other => other.to_string(),
    }
}

/// Runs `tokenmail decrypt`.
pub fn run(args: DecryptArgs, socket: Option<&Path>) -> Result<i32> {
    if args.json && args.output.is_none() {
        bail!("--json prints the report on standard output: give -o FILE for the plaintext");
    }
    let mut input: Box<dyn Read> = match &args.input {
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
        None => Box::new(io::stdin().lock()),
    };
    // The spool: beside the output (so the final rename is atomic), else in $TMPDIR; 0600.
    let spool_dir = match &args.output {
        Some(p) => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        None => std::env::temp_dir(),
    };
    let mut spool = tempfile::NamedTempFile::new_in(&spool_dir)
        .with_context(|| format!("cannot create a temporary file in {}", spool_dir.display()))?;

    let mut md = MessageDecryptor::new();
    let mut client: Option<RefCell<tokenmail_proto::Client>> = None;
    let mut keys = Vec::new();
    let mut used: Option<String> = None;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buf).context("cannot read the input")?;
        if n == 0 {
            break;
        }
        let out = md.push(&buf[..n]).map_err(|e| anyhow!(describe(&e)))?;
        spool.write_all(out.as_unverified_bytes())?;
        if used.is_none() {
            if let Some(env) = md.envelope() {
                if client.is_none() {
                    let mut c = agentkey::connect(socket)?;
                    keys = agentkey::keys_with_certificates(&mut c)?;
                    client = Some(RefCell::new(c));
                }
                let Some(c) = client.as_ref() else {
                    unreachable!()
                };
                let Some((info, cert)) = keys.iter().find(|(_, cert)| env.is_recipient(cert))
                else {
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
                let key = AgentKey::new(c, info, cert.clone());
                let out = md.unlock(&key).map_err(|e| anyhow!(describe(&e)))?;
                spool.write_all(out.as_unverified_bytes())?;
                used = Some(key.label.clone());
            }
        }
    }
    let outcome = md.finish().map_err(|e| anyhow!(describe(&e)))?;
    spool.write_all(&outcome.final_plaintext)?;
    spool.as_file().sync_all()?;
    // Verified: release.
    match &args.output {
        Some(p) => {
            spool
                .persist(p)
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => {
            let mut f = spool.reopen()?;
            f.rewind()?;
            let stdout = io::stdout();
            let mut out = stdout.lock();
            io::copy(&mut f, &mut out).context("cannot write to standard output")?;
            out.flush()?;
        }
    }
    if args.json {
        let report = serde_json::json!({
            "recipient": used,
            "kind": format!("{:?}", outcome.kind),
            "authenticated": outcome.authenticated,
        });
        println!("{report}");
    } else if !outcome.authenticated {
        eprintln!(
            "tokenmail: note: AES-CBC content has no integrity protection (authenticated: false)"
        );
    }
    Ok(0)
}
