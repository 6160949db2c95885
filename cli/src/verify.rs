//! `tokenmail verify [--trust PEM]... [--signature SIG] [--json] [IN] [-o OUT]`
//!
//! Works without an agent: everything happens in `tokenmail-smime`.
//! * The report (one block per signer, one line per failed check) goes to standard output,
//!   or the JSON report with `--json`.
//! * Detached content, `multipart/signed`, base64 `application/pkcs7-mime` and bare DER/BER
//!   SignedData are streamed: hashed (detached: with the signature's digest algorithms;
//!   opaque: with the SignedData's digestAlgorithms, which precede the content;
//!   multipart/signed: SHA-256/384/512, plus SHA-1 when `micalg` names it) and
//!   written to the temporary output file chunk by chunk.
//! * `-o FILE` writes the verified content (the signed MIME entity, the encapsulated content,
//!   or the detached content) through a temporary file and a rename — only when the signature
//!   is valid; `-o -` writes it to standard output (then the report goes to standard error).
//! * Exit code 0 only when valid; 1 when a signature is present but not valid; errors
//!   (unreadable or unsigned input, no trust anchor) are returned as `Err`.

use anyhow::{anyhow, bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokenmail_smime::alg::{ContentDigests, HashAlg, MultiHasher};
use tokenmail_smime::mime::{
    bare_cms, from_address, parse_header, verify_smime, Base64Decoder, ContentType, HeaderField,
    MessageVerification, SignedPartScanner,
};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::stream::EncapsulatedSplitter;
use tokenmail_smime::verify::{verify, ParsedSignedData, VerifyOptions};

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

/// Where the verified content ends up.
enum Sink {
    None,
    Stdout(Vec<u8>),
    File(tempfile::NamedTempFile, PathBuf),
}

impl Sink {
    fn new(output: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match output {
            None => Sink::None,
            Some(p) if p.as_os_str() == "-" => Sink::Stdout(Vec::new()),
            Some(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let tmp = tempfile::NamedTempFile::new_in(&dir).with_context(|| {
                    format!("cannot create a temporary file in {}", dir.display())
                })?;
                Sink::File(tmp, p.to_path_buf())
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::None => {}
            Sink::Stdout(v) => v.extend_from_slice(data),
            Sink::File(f, p) => f
                .write_all(data)
                .with_context(|| format!("cannot write {}", p.display()))?,
        }
        Ok(())
    }

    /// Release the content (only called when the signature is valid).
    fn commit(self, stdout: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Sink::None => {}
            Sink::Stdout(v) => {
                stdout.write_all(&v)?;
                stdout.flush()?;
            }
            Sink::File(f, p) => {
                f.as_file()
                    .sync_all()
                    .with_context(|| format!("cannot write {}", p.display()))?;
                f.persist(&p)
                    .map_err(|e| anyhow!("cannot rename into {}: {}", p.display(), e.error))?;
            }
        }
        Ok(())
    }
}

/// The digests to compute for a streamed multipart/signed body, whose signature (naming the
/// real algorithm) only comes at the end: SHA-256/384/512, plus SHA-1 only when `micalg` names
/// it (policy rejects SHA-1 anyway; the report then says so). `micalg` alone is not trusted:
/// some clients mislabel it.
fn micalg_hashes(micalg: Option<&str>) -> Vec<HashAlg> {
    let mut v = vec![HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
    if let Some(m) = micalg {
        v.extend(m.split(',').filter_map(HashAlg::from_micalg));
    }
    v.sort();
    v.dedup();
    v
}

fn with_fallback(mut algs: Vec<HashAlg>) -> Vec<HashAlg> {
    algs.push(HashAlg::Sha256);
    algs.sort();
    algs.dedup();
    algs
}
const CHUNK: usize = 1 << 16;

fn open_input(path: Option<&Path>) -> anyhow::Result<Box<dyn Read>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        _ => Box::new(std::io::stdin()),
    })
}

fn read_chunk(r: &mut dyn Read, buf: &mut [u8]) -> anyhow::Result<usize> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read the input"),
        }
    }
}

/// Verify a detached signature (already parsed) against content digests computed while
/// streaming.
fn verify_streamed(
    signature: &[u8],
    digests: &ContentDigests,
    sender: Option<String>,
    form: &'static str,
    opts: &VerifyOptions<'_>,
) -> anyhow::Result<MessageVerification> {
    let parsed = ParsedSignedData::parse(signature).map_err(|e| anyhow!("cannot verify: {e}"))?;
    let mut o = opts.clone();
    o.sender_email = sender.as_deref();
    let report = verify(&parsed, digests, &o);
    Ok(MessageVerification {
        report,
        content: Vec::new(),
        sender,
        form,
    })
}

/// Whether the input can be streamed as opaque SignedData: bare DER/BER, or a MIME header
/// announcing base64 `application/pkcs7-mime` signed-data.
fn stream_opaque(header: Option<&(Vec<HeaderField>, usize)>, head: &[u8]) -> bool {
    match header {
        None => head.first() == Some(&0x30),
        Some((h, _)) => {
            let ct = h
                .iter()
                .find(|f| f.is("Content-Type"))
                .map(|f| ContentType::parse(&f.value()));
            let cte = h
                .iter()
                .find(|f| f.is("Content-Transfer-Encoding"))
                .map(|f| f.value().to_ascii_lowercase());
            matches!(&ct, Some(ct)
                if (ct.mime == "application/pkcs7-mime" || ct.mime == "application/x-pkcs7-mime")
                    && ct.param("smime-type").is_none_or(|t| t.eq_ignore_ascii_case("signed-data")))
                && cte.as_deref() == Some("base64")
        }
    }
}

/// Run `tokenmail verify` on the process's standard output and error; returns the exit code.
pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(args, &mut stdout.lock(), &mut stderr.lock())
}

/// [`run`] with explicit output streams (for tests and embedding).
///
/// Detached content and `multipart/signed` messages are streamed (hashed, and written to the
/// temporary output file, chunk by chunk); other forms are read whole.
pub fn run_with(
    args: VerifyArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<i32> {
    let anchors = load_anchors(&trust_paths(&args)?)?;
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
    let mut input = open_input(args.input.as_deref())?;
    let mut sink = Sink::new(args.output.as_deref())?;
    let mut buf = vec![0u8; CHUNK];

    let v = if let Some(sig) = &signature {
        // detached: the content is IN, byte for byte
        let cms = bare_cms(sig)
            .map_err(|e| anyhow!("cannot verify: {e}"))?
            .ok_or_else(|| anyhow!("the --signature file is neither DER nor PEM CMS"))?;
        // the signature is at hand: hash only with what its signers use
        let algs = ParsedSignedData::parse(&cms)
            .map_err(|e| anyhow!("cannot verify: {e}"))?
            .digest_algorithms();
        let mut hasher = MultiHasher::new(&algs);
        let mut head = Vec::new();
        loop {
            let n = read_chunk(&mut *input, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            sink.write(&buf[..n])?;
            if head.len() < CHUNK {
                head.extend_from_slice(&buf[..n]);
            }
        }
        let sender = parse_header(&head)
            .ok()
            .flatten()
            .and_then(|(h, _)| from_address(&h));
        verify_streamed(&cms, &hasher.finalize(), sender, "detached", &opts)?
    } else {
        // read until the header is complete (or the input is obviously not MIME)
        let mut head = Vec::new();
        let mut eof = false;
        let parsed_header = loop {
            if head.first() == Some(&0x30) || head.starts_with(b"-----") {
                break None;
            }
            match parse_header(&head) {
                Ok(Some(h)) => break Some(h),
                Ok(None) => {}
                Err(_) => break None,
            }
            if head.len() > (1 << 20) {
                break None;
            }
            let n = read_chunk(&mut *input, &mut buf)?;
            if n == 0 {
                eof = true;
                break None;
            }
            head.extend_from_slice(&buf[..n]);
        };
        let multipart = parsed_header.as_ref().and_then(|(h, _)| {
            let ct = h.iter().find(|f| f.is("Content-Type"))?;
            let ct = ContentType::parse(&ct.value());
            let boundary = (ct.mime == "multipart/signed")
                .then(|| ct.param("boundary").map(str::to_string))
                .flatten()?;
            Some((boundary, micalg_hashes(ct.param("micalg"))))
        });
        match (parsed_header, multipart) {
            (Some((headers, body_off)), Some((boundary, algs))) => {
                let mut scanner = SignedPartScanner::new(&boundary);
                let mut hasher = MultiHasher::new(&algs);
                let part = scanner
                    .update(&head[body_off..])
                    .map_err(|e| anyhow!("cannot verify: {e}"))?;
                hasher.update(&part);
                sink.write(&part)?;
                loop {
                    let n = read_chunk(&mut *input, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    let part = scanner
                        .update(&buf[..n])
                        .map_err(|e| anyhow!("cannot verify: {e}"))?;
                    hasher.update(&part);
                    sink.write(&part)?;
                }
                let sig = scanner
                    .finish()
                    .map_err(|e| anyhow!("cannot verify: {e}"))?;
                verify_streamed(
                    &sig,
                    &hasher.finalize(),
                    from_address(&headers),
                    "multipart/signed",
                    &opts,
                )?
            }
            (header, None) if stream_opaque(header.as_ref(), &head) => {
                let (headers, body_off) = match header {
                    Some((h, off)) => (Some(h), off),
                    None => (None, 0),
                };
                let mut b64 = headers.as_ref().map(|_| Base64Decoder::default());
                let mut splitter = EncapsulatedSplitter::new();
                // created once the digestAlgorithms (which precede the content) are read
                let mut hasher: Option<MultiHasher> = None;
                let cms_err = |e: tokenmail_smime::SmimeError| anyhow!("cannot verify: {e}");
                let mut feed = |data: &[u8],
                                b64: &mut Option<Base64Decoder>,
                                sink: &mut Sink|
                 -> anyhow::Result<()> {
                    let cms = match b64 {
                        Some(d) => d.update(data).map_err(cms_err)?,
                        None => data.to_vec(),
                    };
                    let content = splitter.update(&cms).map_err(cms_err)?;
                    if hasher.is_none() {
                        if let Some(algs) = splitter.digest_algorithms() {
                            hasher = Some(MultiHasher::new(&with_fallback(algs)));
                        }
                    }
                    if let Some(h) = &mut hasher {
                        h.update(&content);
                    }
                    sink.write(&content)
                };
                feed(&head[body_off..], &mut b64, &mut sink)?;
                if !eof {
                    loop {
                        let n = read_chunk(&mut *input, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        feed(&buf[..n], &mut b64, &mut sink)?;
                    }
                }
                if let Some(d) = b64.take() {
                    let rest = d.finish().map_err(cms_err)?;
                    feed(&rest, &mut None, &mut sink)?;
                }
                let hasher = hasher.unwrap_or_else(|| MultiHasher::new(&[HashAlg::Sha256]));
                let parsed = splitter.finish().map_err(cms_err)?;
                let sender = headers.as_deref().and_then(from_address);
                let mut o = opts.clone();
                o.sender_email = sender.as_deref();
                let report = verify(&parsed, &hasher.finalize(), &o);
                MessageVerification {
                    report,
                    content: Vec::new(),
                    sender,
                    form: if headers.is_some() {
                        "pkcs7-mime"
                    } else {
                        "cms"
                    },
                }
            }
            (_, _) => {
                if !eof {
                    input
                        .read_to_end(&mut head)
                        .context("cannot read the input")?;
                }
                let v =
                    verify_smime(&head, None, &opts).map_err(|e| anyhow!("cannot verify: {e}"))?;
                sink.write(&v.content)?;
                v
            }
        }
    };

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
        render(&v)
    };
    if content_to_stdout {
        stderr.write_all(report.as_bytes())?;
    } else {
        stdout.write_all(report.as_bytes())?;
        stdout.flush()?;
    }

    if v.report.valid {
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
