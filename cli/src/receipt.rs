//! `tokenmail receipt` and `tokenmail verify-receipt`: ESS signed receipts (RFC 2634).
//!
//! `receipt --signer KEY IN [-o OUT]` answers a signed message that requests a receipt:
//! the message's signature must verify (its content and signed attributes; the signer's
//! certificate path is judged against the trust anchors when some are configured), then the
//! Receipt (version, contentType, signedContentIdentifier, originatorSignatureValue) is
//! signed on the token with a msgSigDigest attribute and written as an S/MIME entity
//! (`application/pkcs7-mime; smime-type=signed-receipt`) addressed to the request's
//! receiptsTo. `verify-receipt --original SIGNED RECEIPT` checks a receipt: its signature
//! and certificate, and that it answers SIGNED (originatorSignatureValue, msgSigDigest,
//! signedContentIdentifier). The ESS work is in `tokenmail_smime::ess`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_smime::alg::oid;
use tokenmail_smime::ess;
use tokenmail_smime::mime::{parse_smime, verify_smime, SmimeInput};
use tokenmail_smime::verify::{Check, ParsedSignedData, VerifyOptions};

/// Largest message read by `receipt` and `verify-receipt` (they work in memory).
const MAX_INPUT: u64 = 64 << 20;

/// Arguments of `tokenmail receipt`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiptArgs {
    /// The signing key for the receipt: label, hex id, `sha256:`fingerprint, or an email in
    /// its certificate.
    #[arg(long, value_name = "KEY")]
    pub signer: String,
    /// Trust anchors for checking the received message's signer (default: $TOKENMAIL_TRUST,
    /// then [trust] anchors; without any, only the signature itself is checked).
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
    /// The received signed message that requests a receipt (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Where to write the receipt (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Arguments of `tokenmail verify-receipt`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyReceiptArgs {
    /// Trust anchor certificates (PEM bundle or DER); repeatable. Default: $TOKENMAIL_TRUST,
    /// then [trust] anchors in the configuration.
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
    /// The signed message that was sent (and requested the receipt).
    #[arg(long, value_name = "SIGNED")]
    pub original: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The signed receipt (S/MIME, or a bare CMS in DER or PEM).
    #[arg(value_name = "RECEIPT")]
    pub receipt: PathBuf,
}

fn read_capped(path: Option<&Path>) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    let what = path.map_or("standard input".to_string(), |p| p.display().to_string());
    let reader: Box<dyn Read> = match path {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(std::fs::File::open(p).with_context(|| format!("cannot read {what}"))?)
        }
        _ => Box::new(std::io::stdin()),
    };
    reader
        .take(MAX_INPUT + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {what}"))?;
    if data.len() as u64 > MAX_INPUT {
        bail!("{what} is larger than {} MiB", MAX_INPUT >> 20);
    }
    Ok(data)
}

/// The SignedData of a message (multipart/signed, pkcs7-mime, or bare CMS).
fn signed_data_of(data: &[u8], what: &str) -> Result<ParsedSignedData> {
    let cms = match parse_smime(data).map_err(|e| anyhow!("{what}: {e}"))? {
        SmimeInput::MultipartSigned { signature, .. } => signature,
        SmimeInput::Opaque { cms, .. } => cms,
        SmimeInput::Cms(cms) => cms,
    };
    ParsedSignedData::parse(&cms).map_err(|e| anyhow!("{what}: {e}"))
}

/// Runs `tokenmail receipt`.
pub fn receipt(args: ReceiptArgs, socket: Option<&Path>) -> Result<i32> {
    let data = read_capped(args.input.as_deref())?;
    let original = signed_data_of(&data, "the message")?;
    let todo = ess::make_receipt(&original).map_err(|e| anyhow!("{e}"))?;

    // RFC 2634 §2.3: a receipt only for a signature that verifies
    let paths = crate::verify::trust_paths_or_default(&args.trust).unwrap_or_default();
    let anchors = crate::verify::load_anchors(&paths)?;
    let setup = crate::verify::TrustSetup::load(None)?;
    let v = verify_smime(&data, None, &setup.options(&anchors, &[]))
        .map_err(|e| anyhow!("the message: {e}"))?;
    for s in &v.report.signers {
        let must: Vec<&Check> = s
            .checks
            .iter()
            .filter(|c| !c.ok)
            .filter(|c| {
                !anchors.is_empty()
                    || matches!(
                        c.name.as_str(),
                        "message_digest" | "signature" | "content_type"
                    )
            })
            .collect();
        if let Some(c) = must.first() {
            bail!(
                "the message's signature does not verify ({}: {}): no receipt is made for it",
                c.name,
                c.reason
            );
        }
    }
    let der = crate::sign::sign_encapsulated_with_agent(
        socket,
        &args.signer,
        oid::ID_CT_RECEIPT,
        &todo.receipt,
        vec![todo.msg_sig_digest.clone()],
    )?;
    let to = todo.receipts_to.first().map(String::as_str);
    crate::output::write_output(args.output.as_deref(), &ess::receipt_entity(&der, to))?;
    if let Some(t) = to {
        eprintln!("tokenmail: receipt made; send it to {t}");
    }
    Ok(0)
}

/// Runs `tokenmail verify-receipt`; 0 when the receipt is valid and answers the original,
/// 1 when not.
pub fn verify_receipt(args: VerifyReceiptArgs, stdout: &mut dyn Write) -> Result<i32> {
    let anchors =
        crate::verify::load_anchors(&crate::verify::trust_paths_or_default(&args.trust)?)?;
    let setup = crate::verify::TrustSetup::load(None)?;
    let receipt_data = read_capped(Some(&args.receipt))?;
    let original_data = read_capped(Some(&args.original))?;
    let original = signed_data_of(&original_data, "the original message")?;
    let receipt = signed_data_of(&receipt_data, "the receipt")?;
    let opts: VerifyOptions<'_> = setup.options(&anchors, &[]);
    let v = verify_smime(&receipt_data, None, &opts).map_err(|e| anyhow!("the receipt: {e}"))?;
    let ess_checks = ess::check_receipt(&receipt, &original);
    let valid = v.report.valid && ess_checks.iter().all(|c| c.ok);
    if args.json {
        let mut j = serde_json::to_string_pretty(&serde_json::json!({
            "valid": valid,
            "signers": v.report.signers,
            "receipt_checks": ess_checks,
        }))?;
        j.push('\n');
        stdout.write_all(j.as_bytes())?;
    } else {
        let mut s = crate::verify::render(&v);
        // the verdict line of `render` is for the signature; the receipt's comes last
        for c in &ess_checks {
            s.push_str(&format!(
                "{} {}: {}\n",
                if c.ok { "ok" } else { "FAILED" },
                c.name,
                c.reason
            ));
        }
        s.push_str(if valid {
            "receipt valid: it answers the original message\n"
        } else {
            "receipt NOT valid\n"
        });
        stdout.write_all(s.as_bytes())?;
    }
    Ok(if valid { 0 } else { 1 })
}
