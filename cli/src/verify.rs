//! `tokenmail verify [--trust PEM]... [--signature SIG] [--json] [IN] [-o OUT]`
//!
//! Works without an agent: everything happens in `tokenmail-smime` (the streaming driver is
//! `tokenmail_smime::pipeline::verify_stream`, which the agent's `verify` runs too).
//! * The report (one block per signer, one line per failed check) goes to standard output,
//!   or the JSON report with `--json`.
//! * Detached content, `multipart/signed`, base64 `application/pkcs7-mime` and bare DER/BER
//!   SignedData are streamed: hashed (detached: with the signature's digest algorithms;
//!   opaque: with the SignedData's digestAlgorithms, which precede the content;
//!   multipart/signed: with the algorithms `micalg` names, on a second thread) and
//!   written to the temporary output file chunk by chunk. `micalg` is not trusted: when
//!   the SignerInfos (at the end) use another algorithm, the signed part is hashed again
//!   with it, from the input file or the content written so far; only when neither can be
//!   read again (standard input, no `-o`) is every supported algorithm computed up front.
//! * `-o FILE` writes the verified content (the signed MIME entity, the encapsulated content,
//!   or the detached content) through a temporary file and a rename — only when the signature
//!   is valid; `-o -` writes it to standard output (then the report goes to standard error).
//! * Exit code 0 only when valid; 1 when a signature is present but not valid; errors
//!   (unreadable or unsigned input, no trust anchor) are returned as `Err`.

use anyhow::{anyhow, bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokenmail_smime::mime::MessageVerification;
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::pipeline::{self, verify_stream, ContentSink, PipelineError, VerifyStream};
use tokenmail_smime::revocation::{Crl, RevocationInputs, RevocationMode};
use tokenmail_smime::verify::VerifyOptions;

use crate::output::{EarlySync, Staged};

/// Arguments of `tokenmail verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Trust anchor certificates (PEM bundle or DER); repeatable. Default: $TOKENMAIL_TRUST, then [trust] anchors in the configuration;
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
    /// Extra intermediate CA certificates for building the path (PEM bundle or DER), as
    /// openssl's -untrusted; repeatable.
    #[arg(long = "untrusted", value_name = "PEM")]
    pub untrusted: Vec<PathBuf>,
    /// A CRL (DER or PEM) to check the certificates against; repeatable. CRLs carried in
    /// the message are used too.
    #[arg(long = "crl", value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// What an unknown revocation status does: soft-fail (default: reported, accepted),
    /// hard-fail (fails) or off (not checked). A revoked certificate always fails.
    /// Default: [trust] revocation in the configuration, else soft-fail.
    #[arg(long, value_name = "MODE", value_parser = parse_revocation)]
    pub revocation: Option<RevocationMode>,
    /// Verify as of TIME (UTC, YYYY-MM-DDTHH:MM:SSZ) instead of now: certificate validity,
    /// the signingTime plausibility and CRL freshness are judged at TIME. For old messages
    /// and conformance test data.
    #[arg(long = "at", value_name = "TIME", value_parser = parse_time)]
    pub at: Option<SystemTime>,
    /// Most intermediate CA certificates between the signer and a trust anchor, at most 8.
    /// Default: [trust] max_path_length in the configuration, else 3.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=8))]
    pub max_intermediates: Option<u8>,
    /// Certificate policy requirements (RFC 5280 §6.1).
    #[command(flatten)]
    pub cert_policy: CertPolicyArgs,
    /// Input: a MIME message or entity, or a bare CMS in DER or PEM (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Write the verified content here ('-' for standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// `verify`'s certificate policy flags; each adds to `[trust]` in the configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CertPolicyArgs {
    /// A certificate policy OID the signer's path must be valid for; repeatable (any of
    /// them will do). Implies an explicit policy. Default: [trust] policies, else any policy.
    #[arg(long = "policy", value_name = "OID")]
    pub policies: Vec<String>,
    /// The path must be valid for some certificate policy (RFC 5280 initial-explicit-policy).
    #[arg(long)]
    pub require_explicit_policy: bool,
    /// Do not follow the CAs' policy mappings.
    #[arg(long)]
    pub inhibit_policy_mapping: bool,
    /// anyPolicy in a CA certificate does not stand for every policy.
    #[arg(long)]
    pub inhibit_any_policy: bool,
}

impl CertPolicyArgs {
    /// Applies the flags to `p`; an OID that is not one is an error.
    pub fn apply(
        &self,
        p: &mut tokenmail_smime::cert_policies::PolicyInputs,
    ) -> anyhow::Result<()> {
        if !self.policies.is_empty() {
            p.policies = self.policies.clone();
            p.require_explicit_policy = true;
        }
        p.require_explicit_policy |= self.require_explicit_policy;
        p.inhibit_policy_mapping |= self.inhibit_policy_mapping;
        p.inhibit_any_policy |= self.inhibit_any_policy;
        p.validate().map_err(|e| anyhow!("--policy: {e}"))
    }
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    s.trim()
        .parse::<der::DateTime>()
        .map(|t| t.to_system_time())
        .map_err(|_| format!("{s:?}: use UTC as YYYY-MM-DDTHH:MM:SSZ (from 1970 on)"))
}

fn parse_revocation(s: &str) -> Result<RevocationMode, String> {
    RevocationMode::from_name(s).ok_or_else(|| format!("{s:?}: use soft-fail, hard-fail or off"))
}

/// The configuration's trust policy ready for a verification: the path policy, the
/// `[trust] intermediates`, the revocation mode and the http fetcher with its cache. Shared
/// by `verify`, `decrypt`'s inner signature (through `verify`) and `tokenmail-gpgsm`.
#[derive(Debug)]
pub struct TrustSetup {
    /// `[trust]` as configured.
    pub trust: tokenmail_smime::trust::TrustConfig,
    /// The path validation policy.
    pub policy: tokenmail_smime::path::Policy,
    /// Intermediates offered for path building.
    pub intermediates: Vec<CertEntry>,
    /// The revocation mode in force.
    pub revocation: RevocationMode,
    fetcher: Option<crate::netfetch::HttpFetcher>,
}

impl TrustSetup {
    /// From the configuration; `revocation` overrides `[trust] revocation`.
    pub fn load(revocation: Option<RevocationMode>) -> anyhow::Result<Self> {
        let (trust, _) = crate::store::trust_config()?;
        let intermediates =
            crate::store::load_certs(&trust.intermediates, "[trust] intermediate certificate")?;
        let revocation = revocation.unwrap_or(trust.revocation());
        let fetcher = match revocation {
            RevocationMode::Off => None,
            _ => Some(crate::netfetch::HttpFetcher::new(
                trust
                    .crl_cache
                    .clone()
                    .or_else(crate::netfetch::default_cache_dir),
            )),
        };
        Ok(TrustSetup {
            policy: trust.policy(),
            trust,
            intermediates,
            revocation,
            fetcher,
        })
    }

    /// The revocation inputs (mode, fetcher, skew) with `crls` from the caller, now.
    pub fn revocation_inputs<'a>(&'a self, crls: &'a [Crl]) -> RevocationInputs<'a> {
        RevocationInputs {
            mode: self.revocation,
            fetcher: self
                .fetcher
                .as_ref()
                .map(|f| f as &dyn tokenmail_smime::revocation::RevocationFetcher),
            max_intermediates: self.policy.max_intermediates,
            ..self
                .trust
                .revocation_inputs(crls, &self.intermediates, SystemTime::now())
        }
    }

    /// Verification options over `anchors`, with `crls` from the caller, now.
    pub fn options<'a>(&'a self, anchors: &'a [CertEntry], crls: &'a [Crl]) -> VerifyOptions<'a> {
        VerifyOptions {
            policy: self.policy.clone(),
            extra_certs: &self.intermediates,
            crls,
            revocation: self.revocation,
            clock_skew: self.trust.clock_skew(),
            revocation_sources: self.trust.revocation_sources(),
            fetcher: self
                .fetcher
                .as_ref()
                .map(|f| f as &dyn tokenmail_smime::revocation::RevocationFetcher),
            ..VerifyOptions::at(anchors, SystemTime::now())
        }
    }
}

/// Reads CRL files (DER or PEM, several per PEM file).
pub fn load_crls(paths: &[PathBuf]) -> anyhow::Result<Vec<Crl>> {
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(p).with_context(|| format!("cannot read CRL {}", p.display()))?;
        let source = format!("--crl {}", p.display());
        out.extend(
            Crl::from_pem_or_der(&data, &source)
                .map_err(|e| anyhow!("CRL {}: {e}", p.display()))?,
        );
    }
    Ok(out)
}

/// Where trust anchors come from, in contract order: `--trust`, `$TOKENMAIL_TRUST`, the
/// configuration's `[trust] anchors`.
fn trust_paths(args: &VerifyArgs) -> anyhow::Result<Vec<PathBuf>> {
    trust_paths_or_default(&args.trust)
}

/// `trust` when given, else `$TOKENMAIL_TRUST`, else `[trust] anchors`; an error saying
/// what to do when there is none.
pub fn trust_paths_or_default(trust: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if !trust.is_empty() {
        return Ok(trust.to_vec());
    }
    let (paths, _) = crate::store::default_anchor_paths()?;
    if !paths.is_empty() {
        return Ok(paths);
    }
    bail!("no trust anchor: pass --trust CA.pem, set TOKENMAIL_TRUST, or list anchors under [trust] in the configuration")
}

/// Reads trust anchor files.
pub fn load_anchors(paths: &[PathBuf]) -> anyhow::Result<Vec<CertEntry>> {
    crate::store::load_certs(paths, "trust anchor")
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
        if let Some(t) = &signer.timestamp {
            s.push_str(&format!(
                "  timestamp: {} by {}{}\n",
                t.time.as_deref().unwrap_or("?"),
                t.tsa.as_deref().unwrap_or("an unknown TSA"),
                if t.valid { "" } else { " (NOT valid)" }
            ));
        }
        if let Some(l) = &signer.security_label {
            s.push_str(&format!("  security label: {}\n", l.text()));
        }
        if let Some(r) = &signer.receipt_request {
            s.push_str(&format!(
                "  signed receipt requested from {}, to {}\n",
                r.receipts_from,
                r.receipts_to.join(", ")
            ));
        }
        for c in signer
            .checks
            .iter()
            .filter(|c| c.name == "revocation" && c.ok)
        {
            s.push_str(&format!("  revocation: {}\n", c.reason));
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

/// Content for `-o -` is kept in memory up to this size, then in an unnamed temporary file:
/// it cannot go to standard output before the signature is known to be valid, and a large
/// message must not be held in memory.
const HOLD_IN_MEMORY: usize = 4 << 20;

/// Content held back for standard output until the signature is valid.
struct Held {
    mem: Vec<u8>,
    file: Option<(std::io::BufWriter<std::fs::File>, Staged)>,
}

impl Held {
    fn new() -> Self {
        Held {
            mem: Vec::new(),
            file: None,
        }
    }

    /// Whether the content went to the temporary file.
    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.file.is_some()
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() && self.mem.len() + data.len() > HOLD_IN_MEMORY {
            let staged = Staged::new(None).map_err(std::io::Error::other)?;
            let mut w =
                std::io::BufWriter::with_capacity(pipeline::CHUNK, staged.file().try_clone()?);
            w.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some((w, staged));
        }
        match &mut self.file {
            Some((w, _)) => w.write_all(data),
            None => {
                self.mem.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn reread(&mut self) -> std::io::Result<Box<dyn Read + '_>> {
        match &mut self.file {
            Some((w, staged)) => {
                w.flush()?;
                Ok(Box::new(staged.reopen()?))
            }
            None => Ok(Box::new(&self.mem[..])),
        }
    }

    fn copy_to(mut self, out: &mut dyn Write) -> std::io::Result<()> {
        match self.file.take() {
            Some((mut w, staged)) => {
                w.flush()?;
                std::io::copy(&mut staged.reopen()?, out)?;
            }
            None => out.write_all(&self.mem)?,
        }
        out.flush()
    }
}

/// Where the verified content ends up.
enum Sink {
    None,
    Stdout(Held),
    File(std::io::BufWriter<EarlySync>, Staged, PathBuf),
}

impl Sink {
    fn new(output: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match output {
            None => Sink::None,
            Some(p) if p.as_os_str() == "-" => Sink::Stdout(Held::new()),
            Some(p) => {
                // a regular file: renamed over it; a device or FIFO: copied through
                let staged = Staged::new(Some(p))?;
                // flushed to disk in the background as it is written: the fsync before
                // the rename then has little left to do
                let early = if staged.durable() {
                    EarlySync::new(staged.file())
                } else {
                    EarlySync::scratch(staged.file())
                }
                .with_context(|| format!("cannot write {}", p.display()))?;
                Sink::File(
                    std::io::BufWriter::with_capacity(pipeline::CHUNK, early),
                    staged,
                    p.to_path_buf(),
                )
            }
        })
    }

    /// Release the content (only called when the signature is valid).
    fn commit(self, stdout: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Sink::None => {}
            Sink::Stdout(held) => held
                .copy_to(stdout)
                .context("cannot write to standard output")?,
            Sink::File(w, f, p) => {
                let w = w
                    .into_inner()
                    .map_err(|e| anyhow!("cannot write {}: {}", p.display(), e.error()))?;
                if f.durable() {
                    w.finish()
                } else {
                    w.finish_unsynced()
                }
                .with_context(|| format!("cannot write {}", p.display()))?;
                f.release()?;
            }
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::None => Ok(data.len()),
            Sink::Stdout(held) => {
                held.write(data)?;
                Ok(data.len())
            }
            Sink::File(f, _, _) => f.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f, _, _) => f.flush(),
            _ => Ok(()),
        }
    }
}

/// The content written to `-o` (the temporary file, or what is kept for `-o -`) can be
/// hashed again when `micalg` named the wrong algorithm.
impl ContentSink for Sink {
    fn rereadable(&self) -> bool {
        !matches!(self, Sink::None)
    }

    fn reread(&mut self) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            Sink::None => Err(std::io::Error::other("no content kept")),
            Sink::Stdout(held) => held.reread(),
            Sink::File(_, f, _) => Ok(Box::new(f.reopen()?)),
        }
    }
}

fn open_input(path: Option<&Path>) -> anyhow::Result<Box<dyn Read>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => Box::new(crate::term::Progress::file(
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
            "verifying",
        )),
        _ => Box::new(std::io::stdin()),
    })
}

/// Run `tokenmail verify` on the process's standard output and error; returns the exit code.
pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let colours = Colours {
        stdout: crate::term::colour_stdout(),
        stderr: crate::term::colour_stderr(),
    };
    run_coloured(args, &mut stdout.lock(), &mut stderr.lock(), colours)
}

/// Whether the result line may be coloured on each stream (terminals, no NO_COLOR).
#[derive(Debug, Clone, Copy, Default)]
struct Colours {
    stdout: bool,
    stderr: bool,
}

/// The report with its verdict words coloured: `Good` green, `BAD` red.
fn colour_verdicts(report: &str, on: bool) -> String {
    use crate::term::{paint, Tone};
    if !on {
        return report.to_string();
    }
    report
        .split_inclusive('\n')
        .map(|l| {
            if let Some(rest) = l.strip_prefix("Good signature") {
                format!("{}{rest}", paint("Good signature", Tone::Good, true))
            } else if let Some(rest) = l.strip_prefix("BAD signature") {
                format!("{}{rest}", paint("BAD signature", Tone::Bad, true))
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// [`run`] with explicit output streams (for tests and embedding).
///
/// Detached content, `multipart/signed` and base64 `pkcs7-mime` / DER messages are streamed
/// (hashed, and written to the temporary output file, chunk by chunk); other forms are read
/// whole.
pub fn run_with(
    args: VerifyArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<i32> {
    run_coloured(args, stdout, stderr, Colours::default())
}

fn run_coloured(
    args: VerifyArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    colours: Colours,
) -> anyhow::Result<i32> {
    let anchors = load_anchors(&trust_paths(&args)?)?;
    let signature = match &args.signature {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("cannot read signature {}", p.display()))?,
        ),
        None => None,
    };
    let mut setup = TrustSetup::load(args.revocation)?;
    setup.policy.allow_any_eku |= args.allow_any_eku;
    if let Some(n) = args.max_intermediates {
        setup.policy.max_intermediates = usize::from(n);
    }
    args.cert_policy.apply(&mut setup.policy.cert_policies)?;
    setup.intermediates.extend(crate::store::load_certs(
        &args.untrusted,
        "intermediate certificate",
    )?);
    let crls = load_crls(&args.crl)?;
    let opts = VerifyOptions {
        now: args.at.unwrap_or_else(SystemTime::now),
        ..setup.options(&anchors, &crls)
    };
    let mut input = open_input(args.input.as_deref())?;
    let mut sink = Sink::new(args.output.as_deref())?;
    // a file can be read a second time (should micalg name the wrong algorithm)
    let input_file = args.input.as_deref().filter(|p| p.as_os_str() != "-");
    let stream = VerifyStream {
        detached_signature: signature.as_deref(),
        max_in_memory: None,
        reopen_input: input_file.map(|p| {
            Box::new(move || std::fs::File::open(p).map(|f| Box::new(f) as Box<dyn Read>))
                as pipeline::Reopen<'_>
        }),
        chunk: pipeline::CHUNK,
    };
    let v = verify_stream(&mut *input, &mut sink, &opts, stream).map_err(|e| match e {
        PipelineError::SignatureNotCms => {
            anyhow!("the --signature file is neither DER nor PEM CMS")
        }
        PipelineError::Write(e) => match &args.output {
            Some(p) => anyhow::Error::new(e).context(format!("cannot write {}", p.display())),
            None => e.into(),
        },
        PipelineError::Reopen(e) => match input_file {
            Some(p) => anyhow::Error::new(e).context(format!("cannot read {}", p.display())),
            None => e.into(),
        },
        other => other.into(),
    })?;

    let content_to_stdout = matches!(sink, Sink::Stdout(_));
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
        let on = if content_to_stdout {
            colours.stderr
        } else {
            colours.stdout
        };
        colour_verdicts(&render(&v), on)
    };
    if content_to_stdout {
        stderr.write_all(report.as_bytes())?;
    } else {
        stdout.write_all(report.as_bytes())?;
        stdout.flush()?;
    }

    if v.report.valid {
        // as mail clients do: the certificates of signers whose signature verified and
        // whose path reached a trust anchor are kept for encrypting to them ([certs] harvest)
        let signers: Vec<Vec<u8>> = v
            .report
            .signers
            .iter()
            .filter(|s| s.valid)
            .filter_map(|s| s.certificate.clone())
            .collect();
        for note in crate::certs::harvest(&signers) {
            writeln!(stderr, "tokenmail: note: {note}")?;
        }
        sink.commit(stdout)?;
        Ok(0)
    } else {
        if args.output.is_some() {
            writeln!(
                stderr,
                "tokenmail verify: the signature is not valid; no content written"
            )?;
        }
        // dropping the sink deletes the temporary file
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_verdict_words_are_coloured_and_only_when_asked() {
        let report = "Good signature from \"A\"\n  chain: x\nBAD signature from \"B\"\n";
        assert_eq!(colour_verdicts(report, false), report);
        let c = colour_verdicts(report, true);
        assert!(c.starts_with("\x1b[32mGood signature\x1b[0m from"), "{c:?}");
        assert!(
            c.contains("\n  chain: x\n\x1b[1;31mBAD signature\x1b[0m from"),
            "{c:?}"
        );
    }

    fn sh(dir: &Path, script: &str) {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn verify_file(dir: &Path, input: &str, output: Option<&str>) -> i32 {
        let args = VerifyArgs {
            trust: vec![dir.join("root.pem")],
            signature: None,
            json: false,
            allow_any_eku: false,
            untrusted: vec![],
            crl: vec![],
            revocation: None,
            at: None,
            max_intermediates: None,
            cert_policy: Default::default(),
            input: Some(dir.join(input)),
            output: output.map(|o| dir.join(o)),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(args, &mut out, &mut err).expect("runs");
        if code != 0 {
            eprintln!("{}", String::from_utf8_lossy(&out));
        }
        code
    }

    /// Only the micalg algorithm is hashed up front; a mislabelled micalg costs a second
    /// pass (from the input file, or from the content written to -o), not a false result.
    #[test]
    fn mislabelled_micalg_is_hashed_again() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        sh(dir, include_str!("../../smime/tests/pki.sh"));
        std::fs::write(
            dir.join("msg.txt"),
            "Content-Type: text/plain\n\nsigned with SHA-384\n",
        )
        .expect("write");
        sh(
            dir,
            "openssl cms -sign -md sha384 -in msg.txt -signer ee_rsa.pem -inkey ee_rsa.key \
             -certfile int.pem -from 'Alice <alice@example.com>' -out good.eml",
        );
        let good = std::fs::read_to_string(dir.join("good.eml")).expect("read");
        assert!(good.contains("micalg=\"sha-384\""), "{good}");
        for (name, micalg) in [("sha256.eml", "sha-256"), ("bogus.eml", "x-unknown")] {
            std::fs::write(
                dir.join(name),
                good.replace("micalg=\"sha-384\"", &format!("micalg=\"{micalg}\"")),
            )
            .expect("write");
        }
        for input in ["good.eml", "sha256.eml", "bogus.eml"] {
            assert_eq!(verify_file(dir, input, None), 0, "{input}");
            assert_eq!(verify_file(dir, input, Some("out.txt")), 0, "{input} -o");
            let content = std::fs::read_to_string(dir.join("out.txt")).expect("content");
            assert!(content.contains("signed with SHA-384"), "{content}");
            std::fs::remove_file(dir.join("out.txt")).expect("rm");
        }
        // a modified body still fails, whichever micalg is named
        let bad = std::fs::read_to_string(dir.join("sha256.eml"))
            .expect("read")
            .replace("signed with SHA-384", "signed with SHA-385");
        std::fs::write(dir.join("bad.eml"), bad).expect("write");
        assert_eq!(verify_file(dir, "bad.eml", None), 1);
    }

    /// `-o -` holds the content back until the signature is valid, in memory only up to
    /// HOLD_IN_MEMORY: a larger message goes to an unnamed temporary file (it was held whole
    /// in memory before).
    #[test]
    fn content_for_stdout_spills_to_a_file_past_the_memory_hold() {
        let piece: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut held = Held::new();
        let mut want = Vec::new();
        for _ in 0..(HOLD_IN_MEMORY / piece.len() - 1) {
            held.write(&piece).expect("write");
            want.extend_from_slice(&piece);
        }
        assert!(!held.spilled(), "small content stays in memory");
        for _ in 0..16 {
            held.write(&piece).expect("write");
            want.extend_from_slice(&piece);
        }
        assert!(held.spilled(), "large content goes to the file");
        assert!(held.mem.capacity() == 0, "memory released");
        let mut again = Vec::new();
        held.reread()
            .expect("reread")
            .read_to_end(&mut again)
            .expect("read");
        assert!(again == want, "reread gives the content back");
        let mut out = Vec::new();
        held.copy_to(&mut out).expect("copy");
        assert!(out == want, "released content is the content");
    }

    /// A 6 MiB message signed by openssl, verified with `-o -`: the content reaches
    /// standard output whole, the report goes to standard error.
    #[test]
    fn a_large_message_verifies_to_stdout() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        sh(dir, include_str!("../../smime/tests/pki.sh"));
        let mut body = String::from("Content-Type: text/plain\n\n");
        let mut n = 0u64;
        while body.len() < 6 << 20 {
            body.push_str(&format!("line {n} of a large signed message\n"));
            n += 1;
        }
        std::fs::write(dir.join("big.txt"), &body).expect("write");
        sh(
            dir,
            "openssl cms -sign -in big.txt -signer ee_rsa.pem -inkey ee_rsa.key \
             -certfile int.pem -from 'Alice <alice@example.com>' -out big.eml",
        );
        let args = VerifyArgs {
            trust: vec![dir.join("root.pem")],
            signature: None,
            json: false,
            allow_any_eku: false,
            untrusted: vec![],
            crl: vec![],
            revocation: None,
            at: None,
            max_intermediates: None,
            cert_policy: Default::default(),
            input: Some(dir.join("big.eml")),
            output: Some(PathBuf::from("-")),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(args, &mut out, &mut err).expect("runs"), 0);
        let err = String::from_utf8_lossy(&err);
        assert!(err.contains("signature valid"), "{err}");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(out.len() > 6 << 20, "{}", out.len());
        assert!(out.contains(&format!("line {} of a large signed message", n - 1)));
    }
}
