//! `tokenmail verify [--trust PEM]... [--signature SIG] [--json] [IN] [-o OUT]`
//!
//! Works without an agent: everything happens in `tokenmail-smime`.
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
use tokenmail_smime::alg::{ContentDigests, HashAlg, MultiHasher};
use tokenmail_smime::mime::{
    bare_cms, from_address, parse_header, verify_smime, Base64Decoder, ContentType,
    MessageVerification, SignedPartScanner,
};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::stream::EncapsulatedSplitter;
use tokenmail_smime::verify::{verify, ParsedSignedData, VerifyOptions};

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
    /// Input: a MIME message or entity, or a bare CMS in DER or PEM (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Write the verified content here ('-' for standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Where trust anchors come from, in contract order: `--trust`, `$TOKENMAIL_TRUST`, the
/// configuration's `[trust] anchors`.
fn trust_paths(args: &VerifyArgs) -> anyhow::Result<Vec<PathBuf>> {
    if !args.trust.is_empty() {
        return Ok(args.trust.clone());
    }
    let (paths, _) = crate::store::default_anchor_paths()?;
    if !paths.is_empty() {
        return Ok(paths);
    }
    bail!("no trust anchor: pass --trust CA.pem, set TOKENMAIL_TRUST, or list anchors under [trust] in the configuration")
}

fn load_anchors(paths: &[PathBuf]) -> anyhow::Result<Vec<CertEntry>> {
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
    File(
        std::io::BufWriter<EarlySync>,
        tempfile::NamedTempFile,
        PathBuf,
    ),
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
                // flushed to disk in the background as it is written: the fsync before
                // the rename then has little left to do
                let early = EarlySync::new(tmp.as_file())
                    .with_context(|| format!("cannot write in {}", dir.display()))?;
                Sink::File(
                    std::io::BufWriter::with_capacity(CHUNK, early),
                    tmp,
                    p.to_path_buf(),
                )
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::None => {}
            Sink::Stdout(v) => v.extend_from_slice(data),
            Sink::File(f, _, p) => f
                .write_all(data)
                .with_context(|| format!("cannot write {}", p.display()))?,
        }
        Ok(())
    }

    /// Write out what is buffered (before the file is read back).
    fn flush(&mut self) -> anyhow::Result<()> {
        if let Sink::File(f, _, p) = self {
            f.flush()
                .with_context(|| format!("cannot write {}", p.display()))?;
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
            Sink::File(w, f, p) => {
                w.into_inner()
                    .map_err(|e| anyhow!("cannot write {}: {}", p.display(), e.error()))?
                    .finish()
                    .with_context(|| format!("cannot write {}", p.display()))?;
                f.persist(&p)
                    .map_err(|e| anyhow!("cannot rename into {}: {}", p.display(), e.error))?;
            }
        }
        Ok(())
    }
}

/// Hashes `algs` over everything `r` yields.
fn hash_reader(
    r: &mut dyn Read,
    algs: &[HashAlg],
    buf: &mut [u8],
) -> anyhow::Result<ContentDigests> {
    let mut h = MultiHasher::new(algs);
    loop {
        let n = read_chunk(r, buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Second pass for the algorithms `micalg` did not name: the signed part again, from the
/// input file (`body_off`: where the body starts) or from the content sink.
fn rehash_signed_part(
    input: Option<&Path>,
    body_off: usize,
    boundary: &str,
    sink: &Sink,
    algs: &[HashAlg],
    buf: &mut [u8],
) -> anyhow::Result<ContentDigests> {
    match sink {
        Sink::File(_, f, _) => {
            return hash_reader(
                &mut f.reopen().context("cannot reread the content")?,
                algs,
                buf,
            )
        }
        Sink::Stdout(v) => return Ok(ContentDigests::of(algs, v)),
        Sink::None => {}
    }
    let path = input
        .filter(|p| p.as_os_str() != "-")
        .ok_or_else(|| anyhow!("cannot read the input a second time"))?;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::copy(&mut (&mut f).take(body_off as u64), &mut std::io::sink())?;
    let mut scanner = SignedPartScanner::new(boundary);
    let mut h = MultiHasher::new(algs);
    let mut part = Vec::new();
    loop {
        let n = read_chunk(&mut f, buf)?;
        if n == 0 {
            break;
        }
        part.clear();
        scanner
            .update_into(&buf[..n], &mut part)
            .map_err(|e| anyhow!("cannot verify: {e}"))?;
        h.update(&part);
    }
    Ok(h.finalize())
}

/// Read size: big reads keep per-call costs (syscalls, thread hand-overs) negligible.
const CHUNK: usize = 1 << 20;

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
        // hashed on a second thread while the next chunk is read
        let mut hasher = BackgroundFeed::new(MultiHasher::new(&algs));
        let mut head = Vec::new();
        loop {
            let mut chunk = hasher.buffer(CHUNK);
            chunk.resize(CHUNK, 0);
            let n = read_chunk(&mut *input, &mut chunk)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            sink.write(&chunk)?;
            if head.len() < 64 * 1024 {
                head.extend_from_slice(&chunk[..n.min(64 * 1024)]);
            }
            hasher.feed(chunk)?;
        }
        let sender = parse_header(&head)
            .ok()
            .flatten()
            .and_then(|(h, _)| from_address(&h));
        verify_streamed(
            &cms,
            &hasher.finish()?.finalize(),
            sender,
            "detached",
            &opts,
        )?
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
            Some((boundary, ct.param("micalg").map(str::to_string)))
        });
        match (parsed_header, multipart) {
            (Some((headers, body_off)), Some((boundary, micalg))) => {
                // hash what micalg names when the signed part can be read again should the
                // SignerInfos use something else; else every supported algorithm
                let rereadable = args.input.as_deref().is_some_and(|p| p.as_os_str() != "-")
                    || !matches!(sink, Sink::None);
                let named = tokenmail_smime::mime::micalg_named(micalg.as_deref());
                let algs = if rereadable && !named.is_empty() {
                    named
                } else {
                    tokenmail_smime::mime::micalg_hashes(micalg.as_deref())
                };
                let mut scanner = SignedPartScanner::new(&boundary);
                let mut hasher = BackgroundFeed::new(MultiHasher::new(&algs));
                let mut part = hasher.buffer(CHUNK + CHUNK / 8);
                scanner
                    .update_into(&head[body_off..], &mut part)
                    .map_err(|e| anyhow!("cannot verify: {e}"))?;
                sink.write(&part)?;
                hasher.feed(part)?;
                if !eof {
                    loop {
                        let n = read_chunk(&mut *input, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        let mut part = hasher.buffer(CHUNK + CHUNK / 8);
                        scanner
                            .update_into(&buf[..n], &mut part)
                            .map_err(|e| anyhow!("cannot verify: {e}"))?;
                        sink.write(&part)?;
                        hasher.feed(part)?;
                    }
                }
                let sig = scanner
                    .finish()
                    .map_err(|e| anyhow!("cannot verify: {e}"))?;
                let mut digests = hasher.finish()?.finalize();
                let parsed =
                    ParsedSignedData::parse(&sig).map_err(|e| anyhow!("cannot verify: {e}"))?;
                let missing: Vec<HashAlg> = parsed
                    .digest_algorithms()
                    .into_iter()
                    .filter(|a| digests.get(*a).is_none())
                    .collect();
                if !missing.is_empty() && rereadable {
                    sink.flush()?;
                    let extra = rehash_signed_part(
                        args.input.as_deref(),
                        body_off,
                        &boundary,
                        &sink,
                        &missing,
                        &mut buf,
                    )?;
                    digests.0.extend(extra.0);
                }
                let sender = from_address(&headers);
                let mut o = opts.clone();
                o.sender_email = sender.as_deref();
                let report = verify(&parsed, &digests, &o);
                MessageVerification {
                    report,
                    content: Vec::new(),
                    sender,
                    form: "multipart/signed",
                }
            }
            (header, None)
                if tokenmail_smime::mime::is_streamable_opaque(header.as_ref(), &head) =>
            {
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
                            hasher = Some(MultiHasher::new(
                                &tokenmail_smime::mime::with_sha256_fallback(algs),
                            ));
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

// ---------------------------------------------------------------------------
// Background helpers shared with sign, encrypt and decrypt (re-exported by output.rs). They
// live here because cli/tests/verify_cmd.rs compiles this file on its own.

/// Something fed chunk by chunk on a background thread: a content hasher, or a file.
pub trait Feed: Send + 'static {
    /// Feed one chunk.
    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()>;
}

impl Feed for tokenmail_smime::alg::ContentHasher {
    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.update(chunk);
        Ok(())
    }
}

impl Feed for tokenmail_smime::alg::MultiHasher {
    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.update(chunk);
        Ok(())
    }
}

/// A [`Write`] fed by a background thread.
#[derive(Debug)]
pub struct WriteFeed<W>(pub W);

impl<W: std::io::Write + Send + 'static> Feed for WriteFeed<W> {
    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0.write_all(chunk)
    }
}

/// Runs a [`Feed`] (hashing, or writing) on a second thread, so that it overlaps reading and
/// transforming the next chunk: on a 2-core machine the wall time becomes the larger of the
/// two instead of their sum. Chunks are handed over by value and their buffers come back for
/// reuse, so memory stays at a few chunks.
#[derive(Debug)]
pub struct BackgroundFeed<F: Feed> {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<std::io::Result<F>>>,
}

impl<F: Feed> BackgroundFeed<F> {
    /// Starts the thread.
    pub fn new(mut feed: F) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            for buf in rx {
                feed.feed(&buf)?;
                let _ = back_tx.send(buf);
            }
            Ok(feed)
        });
        Self {
            tx: Some(tx),
            back,
            handle: Some(handle),
        }
    }

    /// An empty buffer to fill: a returned one when there is one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        match self.back.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(capacity),
        }
    }

    /// Hands a chunk over (blocks while one is waiting). When the thread stopped on
    /// an error, that error is returned (by [`BackgroundFeed::finish`]).
    pub fn feed(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let failed = match &self.tx {
            Some(tx) => tx.send(chunk).is_err(),
            None => true,
        };
        if failed {
            self.tx = None;
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the background thread stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> anyhow::Result<F> {
        drop(self.tx.take());
        let h = self
            .handle
            .take()
            .ok_or_else(|| anyhow::anyhow!("the background thread is gone"))?;
        Ok(h.join()
            .map_err(|_| anyhow::anyhow!("the background thread panicked"))??)
    }

    /// Waits for the thread and returns the feed.
    pub fn finish(mut self) -> anyhow::Result<F> {
        self.join()
    }
}

/// Bytes written between two background flushes.
const EARLY_SYNC_EVERY: u64 = 32 << 20;

/// A file writer that starts writing big outputs to disk while they are produced: every
/// [`EARLY_SYNC_EVERY`] bytes a second thread calls `fdatasync` on the file, so the final
/// `fsync` (which makes the rename durable) only waits for the last part instead of the whole
/// file. Without it, a 256 MiB output spends ~0.1 s in that last `fsync`.
#[derive(Debug)]
pub struct EarlySync {
    pub(crate) file: std::fs::File,
    /// whether to flush in the background at all
    early: bool,
    pub(crate) since: u64,
    tick: Option<std::sync::mpsc::SyncSender<()>>,
    handle: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl EarlySync {
    /// Wraps a handle on `file` (writes go straight through).
    pub fn new(file: &std::fs::File) -> std::io::Result<Self> {
        Ok(Self {
            early: true,
            file: file.try_clone()?,
            since: 0,
            tick: None,
            handle: None,
        })
    }

    fn kick(&mut self) -> std::io::Result<()> {
        if self.tick.is_none() {
            let clone = self.file.try_clone()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            self.handle = Some(std::thread::spawn(move || {
                for () in rx {
                    clone.sync_data()?;
                }
                Ok(())
            }));
            self.tick = Some(tx);
        }
        if let Some(tx) = &self.tick {
            // one waiting request is enough: a flush covers everything written before it
            let _ = tx.try_send(());
        }
        Ok(())
    }

    /// Wraps a handle on a scratch file that is never synced: writes go straight through.
    pub fn scratch(file: &std::fs::File) -> std::io::Result<Self> {
        Ok(Self {
            early: false,
            ..Self::new(file)?
        })
    }

    /// Waits for the background flushes (for a scratch file that is never synced).
    pub fn finish_unsynced(mut self) -> anyhow::Result<()> {
        drop(self.tick.take());
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("the flushing thread panicked"))??;
        }
        Ok(())
    }

    /// Waits for the background flushes, then `fsync`s the file.
    pub fn finish(mut self) -> anyhow::Result<()> {
        drop(self.tick.take());
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("the flushing thread panicked"))??;
        }
        self.file.sync_all()?;
        Ok(())
    }
}

impl std::io::Write for EarlySync {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since += n as u64;
        if self.early && self.since >= EARLY_SYNC_EVERY {
            self.since = 0;
            self.kick()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
