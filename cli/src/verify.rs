//! `tokenmail verify [--trust PEM]... [--signature SIG] [--json] [IN] [-o OUT]`
//!
//! Works without an agent: everything happens in `tokenmail-smime`.
//! * The report (one block per signer, one line per failed check) goes to standard output,
//!   or the JSON report with `--json`.
//! * `-o FILE` writes the verified content (the signed MIME entity, the encapsulated content,
//!   or the detached content) through a temporary file and a rename — only when the signature
//!   is valid; `-o -` writes it to standard output (then the report goes to standard error).
//! * Exit code 0 only when valid; 1 when a signature is present but not valid; errors
//!   (unreadable or unsigned input, no trust anchor) are returned as `Err`.

use anyhow::{anyhow, bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokenmail_smime::mime::{verify_smime, MessageVerification};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::verify::VerifyOptions;

/// Arguments of `tokenmail verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Trust anchor certificates (PEM bundle or DER); repeatable. Default: $TOKENMAIL_TRUST
    /// (paths separated by ':').
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
    /// Detached signature (DER or PEM SignedData); IN is then the signed content.
    #[arg(long = "signature", value_name = "SIG")]
    pub signature: Option<PathBuf>,
    /// Print the verification report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Accept anyExtendedKeyUsage in place of emailProtection.
    #[arg(long)]
    pub allow_any_eku: bool,
    /// Input: a MIME message or entity, or a bare CMS in DER or PEM (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Write the verified content here ('-' for standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Where trust anchors come from, in contract order.
fn trust_paths(args: &VerifyArgs) -> anyhow::Result<Vec<PathBuf>> {
    if !args.trust.is_empty() {
        return Ok(args.trust.clone());
    }
    if let Some(v) = std::env::var_os("TOKENMAIL_TRUST") {
        let paths: Vec<PathBuf> = std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Ok(paths);
        }
    }
    bail!("no trust anchor: pass --trust CA.pem or set TOKENMAIL_TRUST")
}

fn load_anchors(paths: &[PathBuf]) -> anyhow::Result<Vec<CertEntry>> {
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(p)
            .with_context(|| format!("cannot read trust anchor {}", p.display()))?;
        let certs = CertEntry::from_pem_or_der(&data).map_err(|e| {
            anyhow!(
                "trust anchor {} is not a PEM or DER certificate: {e}",
                p.display()
            )
        })?;
        out.extend(certs);
    }
    Ok(out)
}

fn read_input(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        }
        _ => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .context("cannot read standard input")?;
            Ok(v)
        }
    }
}

/// Write `data` to `path` via a temporary file in the same directory and a rename.
fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot rename into {}: {}", path.display(), e.error))?;
    Ok(())
}

/// The human-readable report.
pub fn render(v: &MessageVerification) -> String {
    let mut s = String::new();
    if v.report.signers.is_empty() {
        s.push_str("no signer in the SignedData\n");
    }
    for signer in &v.report.signers {
        let who = signer.subject.as_deref().unwrap_or("an unknown signer");
        let emails = if signer.emails.is_empty() {
            String::new()
        } else {
            format!(" <{}>", signer.emails.join(">, <"))
        };
        let verdict = if signer.valid { "Good" } else { "BAD" };
        s.push_str(&format!("{verdict} signature from \"{who}\"{emails}\n"));
        if let (Some(issuer), Some(serial)) = (&signer.issuer, &signer.serial) {
            s.push_str(&format!("  issuer: {issuer}, serial {serial}\n"));
        }
        s.push_str(&format!(
            "  algorithm: {} ({})",
            signer.signature_algorithm, signer.digest_algorithm
        ));
        if let Some(t) = &signer.signing_time {
            s.push_str(&format!(", signed {t}"));
        }
        s.push('\n');
        if !signer.chain.is_empty() {
            s.push_str(&format!("  chain: {}\n", signer.chain.join(" <- ")));
        }
        for c in signer.failures() {
            s.push_str(&format!("  FAILED {}: {}\n", c.name, c.reason));
        }
    }
    if let Some(from) = &v.sender {
        s.push_str(&format!("sender: {from}\n"));
    }
    s.push_str(if v.report.valid {
        "signature valid\n"
    } else {
        "signature NOT valid\n"
    });
    s
}

/// Run `tokenmail verify`; returns the process exit code.
pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let anchors = load_anchors(&trust_paths(&args)?)?;
    let input = read_input(args.input.as_deref())?;
    let signature = match &args.signature {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("cannot read signature {}", p.display()))?,
        ),
        None => None,
    };
    let policy = Policy {
        allow_any_eku: args.allow_any_eku,
        ..Policy::default()
    };
    let opts = VerifyOptions {
        trust_anchors: &anchors,
        extra_certs: &[],
        now: SystemTime::now(),
        sender_email: None,
        policy,
    };
    let v = verify_smime(&input, signature.as_deref(), &opts)
        .map_err(|e| anyhow!("cannot verify: {e}"))?;

    let content_to_stdout = args.output.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let report = if args.json {
        let mut j = serde_json::to_string_pretty(&serde_json::json!({
            "valid": v.report.valid,
            "form": v.form,
            "sender": v.sender,
            "signers": v.report.signers,
        }))?;
        j.push('\n');
        j
    } else {
        render(&v)
    };
    if content_to_stdout {
        eprint!("{report}");
    } else {
        print!("{report}");
        std::io::stdout().flush().ok();
    }

    if v.report.valid {
        match args.output.as_deref() {
            Some(p) if p.as_os_str() == "-" => {
                let mut out = std::io::stdout().lock();
                out.write_all(&v.content)?;
                out.flush()?;
            }
            Some(p) => write_atomically(p, &v.content)?,
            None => {}
        }
        Ok(0)
    } else {
        if args.output.is_some() {
            eprintln!("tokenmail verify: the signature is not valid; no content written");
        }
        Ok(1)
    }
}
