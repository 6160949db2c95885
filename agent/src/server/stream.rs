//! Stream operations (docs/protocol.md §12): `sign`, `verify`, `encrypt`, `decrypt` of
//! whole messages, so that a client needs no CMS implementation of its own.
//!
//! Frame sequence: the request Message frame, the client's Data frames, one End frame;
//! then the agent's Data frames (the output), one End frame, and one final Message frame
//! (the result, or an `error`).
//!
//! Memory stays bounded whatever the message size: the socket side (async) reads one
//! frame at a time and hands it through a small bounded channel to a worker on the
//! blocking pool, which processes it chunk by chunk. The worker writes its output to a
//! private spool file (unnamed, mode 0600, in `$TMPDIR`, gone when closed); the output is
//! sent only after the client's End and only when the operation succeeded. `verify` and
//! `encrypt` run the drivers the command line runs (`tokenmail_smime::pipeline`; `verify`
//! hashes on a second thread). So:
//! * a client may write all its input before reading anything (no deadlock on full
//!   socket buffers);
//! * `decrypt` releases no plaintext before the AEAD tag (or the CBC padding) checked;
//! * `verify` releases the content only when the signature is valid.
//!
//! After an error the agent still reads (and discards) the client's Data frames up to
//! End, then answers End + `error`: the connection stays usable. A Message frame inside
//! the input, or a framing error, is answered with an error and the connection closed.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokenmail_proto::codec::{self, Deadlines};
use tokenmail_proto::frame::CHUNK;
use tokenmail_proto::v1::{HashAlgorithm, Request, Response, SignForm};
use tokenmail_proto::FrameKind;
use tokenmail_smime::alg::{KeyKind, SignatureScheme};
use tokenmail_smime::envelope::{
    ContentCipher, DecryptError, EncryptRecipient, KeyOpError, KeyTransport, ParsedEnvelope,
    RecipientKey,
};
use tokenmail_smime::ess::{ReceiptRequest, SecurityLabel};
use tokenmail_smime::mime::boundary_from_random;
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::pipeline::{
    decrypt_stream, encrypt_stream_with, sign_stream, verify_stream, ContentSink, DecryptFailure,
    DecryptStream, PipelineError, SignStream, VerifyStream, WriteChunks,
};
use tokenmail_smime::signed::{DigestSigner, SignOptions, SignerError};
use tokenmail_smime::verify::VerifyOptions;
use tokenmail_smime::SmimeError;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};
use x509_cert::der::Decode;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::connection::write_response;
use crate::error::AgentError;
use crate::service::Service;
use crate::token::{KeyEntry, KeyStore, PublicKey, TokenError};

/// Chunks in flight between the socket and the worker (each ≤ 1 MiB, usually 64 KiB).
const QUEUE: usize = 4;
/// Signed forms that cannot be streamed (e.g. PEM CMS, quoted-printable pkcs7-mime)
/// are verified in memory, up to this size.
const MAX_IN_MEMORY: usize = 8 << 20;

/// How the connection goes on after a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Ready for the next request.
    Continue,
    /// The peer went away or a write failed: close silently.
    Closed,
    /// Answered with an error that ends the connection: close gracefully.
    Answered,
}

/// What the socket side hands the worker.
enum Chunk {
    Data(Vec<u8>),
    End,
}

/// The client's input as a blocking `Read`, fed by the socket side. Ends cleanly only
/// at the client's End frame; if the socket side gives up first, reads fail.
struct Input {
    rx: mpsc::Receiver<Chunk>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Some(Chunk::End) => self.done = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the client's input stream ended without End",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The worker's output: a private spool file and a byte count.
struct Spool {
    w: BufWriter<File>,
    n: u64,
}

impl Spool {
    fn new() -> Result<Self, AgentError> {
        Ok(Spool {
            w: BufWriter::with_capacity(CHUNK, new_spool_file()?),
            n: 0,
        })
    }

    /// The file, flushed and rewound, and its length.
    fn finish(self) -> Result<(File, u64), AgentError> {
        let n = self.n;
        let mut f = self.w.into_inner().map_err(|e| spool_failure(e.error()))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| spool_failure(&e))?;
        Ok((f, n))
    }
}

/// Default for the largest input or output one stream operation may spool.
pub const DEFAULT_MAX_SPOOL: u64 = 8 << 30;

static SPOOL_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_MAX_SPOOL);

/// Sets the largest input or output one stream operation may spool (`max_spool` in the
/// configuration, `--max-spool`): past it, the operation fails with a clear error and its
/// spool file is dropped. Set once at start.
pub fn set_spool_limit(bytes: u64) {
    SPOOL_LIMIT.store(bytes, Ordering::Relaxed);
}

/// The current spool limit in bytes.
pub fn spool_limit() -> u64 {
    SPOOL_LIMIT.load(Ordering::Relaxed)
}

/// The error past the spool limit, naming the limit and the way out.
fn over_spool_limit(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "the {what} is larger than the agent's spool limit ({}); raise max_spool in the agent's configuration or use the command line with the message in a file",
            crate::config::format_size(spool_limit())
        ),
    )
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.n + buf.len() as u64 > spool_limit() {
            return Err(over_spool_limit("output"));
        }
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// An unnamed temporary file (mode 0600, in `$TMPDIR`): nothing to clean up, nothing for
/// another process to open.
fn new_spool_file() -> Result<File, AgentError> {
    tempfile::tempfile().map_err(|e| {
        AgentError::Internal(format!(
            "the agent cannot create a temporary file in $TMPDIR: {e}"
        ))
    })
}

fn spool_failure(e: &io::Error) -> AgentError {
    AgentError::Internal(format!("the agent's temporary file failed: {e}"))
}

/// A read error on the input (the connection is going away) or a write error on the spool.
fn rw_failure(e: io::Error) -> AgentError {
    if e.kind() == io::ErrorKind::ConnectionAborted {
        AgentError::Pipeline(PipelineError::Read(e))
    } else {
        spool_failure(&e)
    }
}

/// Most stream operations at once, well below the blocking pool (64 threads): clients that
/// open streams and send nothing cannot starve the other requests, `wait-token`, SIGHUP
/// release or the PIN timer. One more is answered `busy` once its input has been read.
pub const MAX_STREAMS: usize = 16;
/// Inside a stream, the longest pause between two frames of the client's input (default;
/// `--stream-idle-timeout`).
pub const STREAM_IDLE: Duration = Duration::from_secs(60);
/// The longest a client may take to accept the output (a client that never reads does not
/// hold its slot and spool forever) (default; `--write-timeout`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

static STREAM_IDLE_SECS: AtomicU64 = AtomicU64::new(STREAM_IDLE.as_secs());
static WRITE_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(WRITE_TIMEOUT.as_secs());

/// Sets the stream deadlines (seconds, at least 1), once at start.
pub fn set_stream_deadlines(idle_secs: u64, write_secs: u64) {
    STREAM_IDLE_SECS.store(idle_secs.max(1), Ordering::Relaxed);
    WRITE_TIMEOUT_SECS.store(write_secs.max(1), Ordering::Relaxed);
}

fn stream_idle() -> Duration {
    Duration::from_secs(STREAM_IDLE_SECS.load(Ordering::Relaxed))
}

fn write_timeout() -> Duration {
    Duration::from_secs(WRITE_TIMEOUT_SECS.load(Ordering::Relaxed))
}

static SLOTS: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(MAX_STREAMS)));

fn stream_deadlines() -> Deadlines {
    Deadlines {
        idle: stream_idle(),
        frame: super::FRAME_TIMEOUT,
    }
}

/// Serves one stream request on the connection (the request frame is read).
pub(crate) async fn serve(stream: &mut UnixStream, svc: Arc<Service>, req: Request) -> Flow {
    let Ok(slot) = SLOTS.clone().try_acquire_owned() else {
        warn!("{MAX_STREAMS} stream operations running; answering busy");
        let busy = AgentError::Busy(format!(
            "the agent is busy with {MAX_STREAMS} stream operations; try again shortly"
        ));
        return match feed(stream, None).await {
            Ok(()) => finish(stream, busy.into(), None).await,
            Err(flow) => flow,
        };
    };
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUE);
    let input = Input {
        rx,
        cur: Vec::new(),
        pos: 0,
        done: false,
    };
    let worker = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        run(&svc, req, input)
    });
    if let Err(flow) = feed(stream, Some(tx)).await {
        return flow;
    }
    let (resp, output) = match worker.await {
        Ok(Ok((resp, out))) => (resp, out),
        Ok(Err(e)) => (e.into(), None),
        Err(e) => {
            warn!("stream handler failed: {e}");
            (
                AgentError::Internal("internal error; see the agent's log".into()).into(),
                None,
            )
        }
    };
    debug!(ok = !matches!(resp, Response::Error(_)), "stream done");
    finish(stream, resp, output).await
}

/// Hands the client's Data frames to the worker (or discards them, without one or after it
/// gave up) up to End. `Err` when the connection must end.
async fn feed(stream: &mut UnixStream, mut tx: Option<mpsc::Sender<Chunk>>) -> Result<(), Flow> {
    loop {
        let (header, payload) = match codec::read_frame(stream, stream_deadlines()).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                debug!("client went away inside a stream");
                return Err(Flow::Closed);
            }
            Err(e) => {
                debug!("closing connection inside a stream: {e}");
                let _ = write_response(stream, &AgentError::from(e).into()).await;
                return Err(Flow::Answered);
            }
        };
        match header.kind {
            FrameKind::Data => {
                if let Some(t) = &tx {
                    if t.send(Chunk::Data(payload)).await.is_err() {
                        tx = None; // the worker finished early (an error): discard the rest
                    }
                }
            }
            FrameKind::End => break,
            _ => {
                let _ = write_response(
                    stream,
                    &AgentError::bad("unexpected message frame inside a stream: send the input as data frames, then an end frame").into(),
                )
                .await;
                return Err(Flow::Answered);
            }
        }
    }
    if let Some(t) = tx.take() {
        let _ = t.send(Chunk::End).await;
    }
    Ok(())
}

/// The output (if any), End and the final message, each within the write deadline
/// ([`WRITE_TIMEOUT`] by default).
async fn finish(stream: &mut UnixStream, resp: Response, output: Option<File>) -> Flow {
    let send = async {
        if let Some(file) = output {
            send_file(stream, file).await?;
        }
        codec::write_frame(stream, FrameKind::End, &[])
            .await
            .map_err(io::Error::other)?;
        write_response(stream, &resp)
            .await
            .map_err(io::Error::other)
    };
    let limit = write_timeout();
    match tokio::time::timeout(limit, send).await {
        Ok(Ok(())) => Flow::Continue,
        Ok(Err(e)) => {
            debug!("client went away while receiving: {e}");
            Flow::Closed
        }
        Err(_) => {
            warn!("a client did not read its output in {limit:?}: closing");
            Flow::Closed
        }
    }
}

async fn send_file(stream: &mut UnixStream, file: File) -> io::Result<()> {
    let mut f = tokio::fs::File::from_std(file);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut got = 0;
        while got < CHUNK {
            let n = f.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == 0 {
            return Ok(());
        }
        codec::write_frame(stream, FrameKind::Data, &buf[..got])
            .await
            .map_err(io::Error::other)?;
        if got < CHUNK {
            return Ok(());
        }
    }
}

type Done = (Response, Option<File>);

/// The worker: runs on the blocking pool, reads the input, returns the final response
/// and the output to send (only on success).
fn run(svc: &Service, req: Request, mut input: Input) -> Result<Done, AgentError> {
    match req {
        Request::Sign {
            key,
            form,
            digest,
            pss,
            crlf,
            receipt_request,
            security_label,
        } => sign(
            svc,
            &key,
            SignParams {
                form,
                digest,
                pss: pss.unwrap_or(false),
                crlf: crlf.unwrap_or(false),
                receipt_request: receipt_request.unwrap_or(false),
                security_label,
            },
            &mut input,
        ),
        Request::Verify { trust, signature } => {
            verify_op(svc, &trust, signature.map(|b| b.0), &mut input)
        }
        Request::Encrypt { recipients, cipher } => {
            encrypt_op(svc, &recipients, cipher.as_deref(), &mut input)
        }
        Request::Decrypt => decrypt_op(svc, &mut input),
        _ => Err(AgentError::bad("not a stream operation")),
    }
}

// ------------------------------------------------------------------------- sign

/// A key on a token as a [`DigestSigner`]; keeps the token error for the answer.
struct StoreSigner {
    store: Arc<dyn KeyStore>,
    id: Vec<u8>,
    kind: KeyKind,
    error: RefCell<Option<TokenError>>,
}

impl DigestSigner for StoreSigner {
    fn key_kind(&self) -> KeyKind {
        self.kind
    }

    fn sign_digest(&self, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.store
            .sign_digest(&self.id, scheme, digest)
            .map_err(|e| {
                let msg = e.to_string();
                *self.error.borrow_mut() = Some(e);
                SignerError::Backend(msg)
            })
    }
}

fn key_kind(k: &KeyEntry) -> Result<KeyKind, AgentError> {
    match &k.public {
        PublicKey::Rsa { .. } => Ok(KeyKind::Rsa {
            bits: k.public.rsa_len().unwrap_or(256) * 8,
        }),
        PublicKey::P256(_) => Ok(KeyKind::P256),
        PublicKey::P384(_) => Ok(KeyKind::P384),
        PublicKey::Other(a) => Err(AgentError::KeyMismatch(format!(
            "key {:?} is {a}, which cannot sign S/MIME",
            k.label
        ))),
    }
}

/// A signing failure: the token's own error when the token failed, else the driver's.
fn sign_failure(signer: &StoreSigner, e: SmimeError) -> AgentError {
    match signer.error.borrow_mut().take() {
        Some(t) => AgentError::Token(t),
        None => AgentError::Pipeline(PipelineError::Signer(e)),
    }
}

/// What a `sign` request asks for besides the key.
struct SignParams {
    form: SignForm,
    digest: Option<HashAlgorithm>,
    pss: bool,
    crlf: bool,
    /// ESS receiptRequest to the signer's address
    receipt_request: bool,
    /// ESS securityLabel, `POLICY-OID:CLASSIFICATION[...]`
    security_label: Option<String>,
}

fn sign(
    svc: &Service,
    key: &str,
    SignParams {
        form,
        digest,
        pss,
        crlf,
        receipt_request,
        security_label,
    }: SignParams,
    input: &mut Input,
) -> Result<Done, AgentError> {
    let (store, entry) = svc.find_key(key)?;
    if !entry.can_sign {
        return Err(AgentError::KeyMismatch(format!(
            "key {:?} may not sign (no CKA_SIGN)",
            entry.label
        )));
    }
    let kind = key_kind(&entry)?;
    let cert_der = entry.certificate.as_deref().ok_or_else(|| {
        AgentError::KeyMismatch(format!(
            "key {:?} has no certificate on the token: import one first",
            entry.label
        ))
    })?;
    let cert = Certificate::from_der(cert_der).map_err(|e| {
        AgentError::KeyMismatch(format!(
            "the certificate of key {:?} does not parse: {e}",
            entry.label
        ))
    })?;
    let chain: Vec<Certificate> = entry
        .chain
        .iter()
        .filter_map(|d| Certificate::from_der(d).ok())
        .collect();
    let hash = match digest {
        None => None,
        Some(d) => Some(d.to_signing_hash().ok_or_else(|| {
            AgentError::bad("digest sha1 is not accepted for signing; use sha256, sha384 or sha512")
        })?),
    };
    let scheme = kind.scheme(hash, pss).map_err(|e| {
        AgentError::bad(format!(
            "{e}: {:?} is {}",
            entry.label,
            entry.public.algorithm_name()
        ))
    })?;
    let mut opts = SignOptions {
        scheme: Some(scheme),
        signing_time: Some(SystemTime::now()),
        ..SignOptions::default()
    };
    if let Some(label) = &security_label {
        let l = SecurityLabel::from_arg(label)
            .map_err(|e| AgentError::bad(format!("security_label: {e}")))?;
        opts.extra_signed_attributes.push(
            l.attribute()
                .map_err(|e| AgentError::bad(format!("security_label: {e}")))?,
        );
    }
    if receipt_request {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id)
            .map_err(|e| AgentError::Internal(format!("no randomness: {e}")))?;
        let rr = ReceiptRequest::to_signer(&id, &cert)
            .and_then(|r| r.attribute())
            .map_err(|e| AgentError::KeyMismatch(format!("receipt_request: {e}")))?;
        opts.extra_signed_attributes.push(rr);
    }
    let signer = StoreSigner {
        store,
        id: entry.id.clone(),
        kind,
        error: RefCell::new(None),
    };
    if crlf && !matches!(form, SignForm::DetachedDer | SignForm::DetachedPem) {
        return Err(AgentError::bad(
            "crlf is for the detached forms (the MIME forms are canonical already)",
        ));
    }
    // The driver reads the input more than once: spool it first.
    let mut spooled = new_spool_file()?;
    let limit = spool_limit();
    let n = io::copy(&mut input.take(limit.saturating_add(1)), &mut spooled).map_err(rw_failure)?;
    if n > limit {
        return Err(AgentError::BadRequest(
            over_spool_limit("message").to_string(),
        ));
    }
    spooled
        .seek(SeekFrom::Start(0))
        .map_err(|e| spool_failure(&e))?;
    let mut random = [0u8; 12];
    getrandom::fill(&mut random)
        .map_err(|e| AgentError::Internal(format!("no randomness: {e}")))?;
    let stream = SignStream {
        form: form.to_pipeline(),
        crlf,
        boundary: boundary_from_random(&random),
        chunk: CHUNK,
    };
    let mut out = Spool::new()?;
    sign_stream(
        &mut spooled,
        &mut out,
        &signer,
        &cert,
        &chain,
        &opts,
        &stream,
    )
    .map_err(|e| match e {
        PipelineError::Signer(e) => sign_failure(&signer, e),
        other => AgentError::Pipeline(other),
    })?;
    let (file, n) = out.finish()?;
    Ok((
        Response::Signed {
            key: entry.label,
            bytes: n,
        },
        Some(file),
    ))
}

// ----------------------------------------------------------------------- verify

/// The spool can be read again: `verify` then hashes only what `micalg` names, and hashes
/// the content a second time should the signature use another algorithm.
impl ContentSink for Spool {
    fn rereadable(&self) -> bool {
        true
    }

    fn reread(&mut self) -> io::Result<Box<dyn Read + '_>> {
        self.w.flush()?;
        // shares the file offset: read to the end, where writing would go on
        let mut f = self.w.get_ref().try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        Ok(Box::new(f))
    }
}

fn verify_op(
    svc: &Service,
    trust: &[String],
    signature: Option<Vec<u8>>,
    input: &mut Input,
) -> Result<Done, AgentError> {
    let configured = svc.trust();
    if trust.is_empty() && configured.anchors.is_empty() {
        return Err(AgentError::bad(
            "no trust anchor: pass trust (PEM certificates of the CAs to trust), or configure [trust] anchors for the agent",
        ));
    }
    let mut anchors = if trust.is_empty() {
        configured.anchors.clone()
    } else {
        Vec::new()
    };
    for (i, pem) in trust.iter().enumerate() {
        let certs = CertEntry::from_pem_or_der(pem.as_bytes())
            .map_err(|e| AgentError::bad(format!("trust[{i}] is not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(AgentError::bad(format!("trust[{i}] holds no certificate")));
        }
        anchors.extend(certs);
    }
    // the configured policy; revocation from the carried CRLs and the cache the CLI
    // fills: the agent does not go to the network while it holds a worker
    let cache = configured.cache();
    let opts = VerifyOptions {
        policy: configured.config.policy(),
        extra_certs: &configured.intermediates,
        revocation: configured.config.revocation(),
        clock_skew: configured.config.clock_skew(),
        fetcher: cache
            .as_ref()
            .map(|c| c as &dyn tokenmail_smime::revocation::RevocationFetcher),
        revocation_sources: configured.config.revocation_sources(),
        ..VerifyOptions::at(&anchors, SystemTime::now())
    };
    let mut sink = Spool::new()?;
    // the driver `tokenmail verify` uses: detached content, multipart/signed and base64
    // pkcs7-mime / DER are streamed; other forms are verified in memory (bounded)
    let stream = VerifyStream {
        detached_signature: signature.as_deref(),
        max_in_memory: Some(MAX_IN_MEMORY),
        reopen_input: None,
        // one frame at a time: the agent serves many streams, each a few chunks
        chunk: CHUNK,
    };
    let v = verify_stream(input, &mut sink, &opts, stream).map_err(AgentError::Pipeline)?;
    let report = serde_json::json!({
        "valid": v.report.valid,
        "form": v.form,
        "sender": v.sender,
        "signers": v.report.signers,
    });
    let valid = v.report.valid;
    // The content only when valid; otherwise the spool is dropped unread.
    let output = if valid { Some(sink.finish()?.0) } else { None };
    Ok((Response::Verified { valid, report }, output))
}

// ---------------------------------------------------------------------- encrypt

fn encrypt_op(
    svc: &Service,
    recipients: &[String],
    cipher: Option<&str>,
    input: &mut Input,
) -> Result<Done, AgentError> {
    if recipients.is_empty() {
        return Err(AgentError::bad(
            "no recipient: pass recipients (PEM certificates to encrypt to)",
        ));
    }
    let cipher = match cipher {
        None => ContentCipher::Aes256Gcm,
        Some(name) => ContentCipher::from_name(name).ok_or_else(|| {
            AgentError::bad(format!(
                "unknown cipher {name:?}; use aes256-gcm, aes128-gcm, aes256-cbc or aes128-cbc"
            ))
        })?,
    };
    let recipients_pem = recipients;
    let recipients = recipients
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            EncryptRecipient::from_pem_or_der(pem.as_bytes())
                .map_err(|e| AgentError::bad(format!("cannot encrypt to recipients[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_recipients(svc, recipients_pem)?;
    // the driver `tokenmail encrypt` uses; the spool is written in place (the client's
    // upload, not this thread, sets the pace)
    let mut out = WriteChunks::new(Spool::new()?);
    encrypt_stream_with(&recipients, cipher, input, &mut out, CHUNK)
        .map_err(AgentError::Pipeline)?;
    let (file, n) = out.into_inner().finish()?;
    Ok((Response::Encrypted { bytes: n }, Some(file)))
}

/// The recipients' certificates against the agent's `[trust]` (as `tokenmail encrypt`
/// checks them): validity, key usage, emailProtection, and with configured anchors a path
/// and its revocation from the CRLs at hand and the revocation cache (the agent does not
/// fetch).
fn check_recipients(svc: &Service, recipients: &[String]) -> Result<(), AgentError> {
    use tokenmail_smime::recipient::{check_recipient, RecipientChecks};
    let trust = svc.trust();
    let policy = trust.config.policy();
    for (i, pem) in recipients.iter().enumerate() {
        let certs = CertEntry::from_pem_or_der(pem.as_bytes())
            .map_err(|e| AgentError::bad(format!("cannot encrypt to recipients[{i}]: {e}")))?;
        let Some((cert, bundled)) = certs.split_first() else {
            return Err(AgentError::bad(format!(
                "recipients[{i}] holds no certificate"
            )));
        };
        let mut pool = trust.intermediates.clone();
        pool.extend(bundled.iter().cloned());
        if !trust.anchors.is_empty() {
            // the CA certificates the tokens hold help too
            for store in svc.stores() {
                for key in store.keys().unwrap_or_default() {
                    for der in &key.chain {
                        if let Ok(c) = CertEntry::from_der(der.clone()) {
                            if !pool.contains(&c) {
                                pool.push(c);
                            }
                        }
                    }
                }
            }
        }
        let cache = trust.cache();
        let mut revocation = trust
            .config
            .revocation_inputs(&[], &pool, SystemTime::now());
        revocation.fetcher = cache
            .as_ref()
            .map(|c| c as &dyn tokenmail_smime::revocation::RevocationFetcher);
        check_recipient(
            cert,
            &RecipientChecks {
                anchors: &trust.anchors,
                intermediates: &pool,
                policy: &policy,
                revocation: &revocation,
                allow_untrusted: false,
                now: SystemTime::now(),
            },
        )
        .map_err(|e| AgentError::bad(format!("not encrypting: {e} (recipients[{i}])")))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------- decrypt

/// A key on a token as a [`RecipientKey`]; keeps the token error for the answer.
struct StoreKey {
    store: Arc<dyn KeyStore>,
    id: Vec<u8>,
    cert: Certificate,
    label: String,
    /// shared with the caller, who reads it after a failure
    error: Rc<RefCell<Option<TokenError>>>,
}

impl StoreKey {
    fn fail(&self, e: TokenError) -> KeyOpError {
        let out = match &e {
            TokenError::DecryptFailed | TokenError::Invalid(_) => KeyOpError::Failed,
            TokenError::Mechanism(m) => KeyOpError::Unsupported(m.clone()),
            other => KeyOpError::Unavailable(other.to_string()),
        };
        *self.error.borrow_mut() = Some(e);
        out
    }
}

impl RecipientKey for StoreKey {
    fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn decrypt_key(
        &self,
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        self.store
            .decrypt(&self.id, alg, wrapped)
            .map_err(|e| self.fail(e))
    }

    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        self.store
            .derive(&self.id, peer_point)
            .map_err(|e| self.fail(e))
    }
}

/// After the recipient matched: one uniform `decrypt-failed`, except for the state of
/// the token (PIN, presence, mechanism), which says nothing about the ciphertext.
fn after_key(error: Option<&Rc<RefCell<Option<TokenError>>>>) -> AgentError {
    match error.and_then(|e| e.borrow_mut().take()) {
        Some(
            e @ (TokenError::PinRequired(_)
            | TokenError::PinSourceRefused { .. }
            | TokenError::PinIncorrect { .. }
            | TokenError::PinLocked(_)
            | TokenError::PinSource(_)
            | TokenError::NotPresent(_)
            | TokenError::NotInModule { .. }
            | TokenError::CardAbsent(_)
            | TokenError::Mechanism(_)),
        ) => AgentError::Token(e),
        _ => AgentError::DecryptFailed,
    }
}

fn decrypt_op(svc: &Service, input: &mut Input) -> Result<Done, AgentError> {
    let mut out = WriteChunks::new(Spool::new()?);
    let mut used: Option<(Rc<RefCell<Option<TokenError>>>, String)> = None;
    let stream = DecryptStream {
        entity_only: false,
        chunk: CHUNK,
        policy: svc.cipher_policy(),
    };
    let result = decrypt_stream(input, &mut out, &stream, |env| {
        let key = match find_recipient(svc, env) {
            Some(k) => k,
            None => {
                // an absent token may hold the key; else look again at fresh key lists
                if let Some(e) = absent_token(svc) {
                    return Err(e);
                }
                find_recipient(svc, env).ok_or(AgentError::Message(DecryptError::NotARecipient))?
            }
        };
        used = Some((key.error.clone(), key.label.clone()));
        Ok::<_, AgentError>(key)
    });
    let outcome = result.map_err(|e| match e {
        DecryptFailure::Read(e) => AgentError::Pipeline(PipelineError::Read(e)),
        DecryptFailure::Write(e) => spool_failure(&e),
        DecryptFailure::Message(e) => AgentError::Message(e),
        DecryptFailure::Refused(why) => AgentError::CipherRefused(why),
        DecryptFailure::NoKey(e) => e,
        DecryptFailure::KeyUnavailable(_) | DecryptFailure::Failed => {
            after_key(used.as_ref().map(|(err, _)| err))
        }
    })?;
    let label = used.map(|(_, l)| l).unwrap_or_default();
    let (file, n) = out.into_inner().finish()?;
    Ok((
        Response::Decrypted {
            key: label,
            authenticated: outcome.authenticated,
            bytes: n,
            cipher: Some(outcome.cipher.to_string()),
        },
        Some(file),
    ))
}

/// No key on the present tokens is a recipient: the error to give when a configured token
/// is absent, since the key may well be on it (`token-not-present` naming the token, as for
/// a named key in `Service::find_key`, rather than `no-such-key`, which tells the user the
/// message is not for them). `check_present` drops the stores' cached key lists, so a
/// second search reads them anew.
fn absent_token(svc: &Service) -> Option<AgentError> {
    for s in svc.stores() {
        if let Err(
            e @ (TokenError::NotPresent(_)
            | TokenError::NotInModule { .. }
            | TokenError::CardAbsent(_)),
        ) = s.keys().and_then(|_| s.check_present())
        {
            return Some(AgentError::Token(e));
        }
    }
    None
}

/// The first key on the tokens that the envelope is encrypted to.
fn find_recipient(svc: &Service, env: &ParsedEnvelope) -> Option<StoreKey> {
    svc.keys().into_iter().find_map(|(store, k)| {
        if !(k.can_decrypt || k.can_derive) {
            return None;
        }
        let cert = Certificate::from_der(k.certificate.as_deref()?).ok()?;
        env.is_recipient(&cert).then(|| StoreKey {
            store,
            id: k.id.clone(),
            cert,
            label: k.label.clone(),
            error: Rc::new(RefCell::new(None)),
        })
    })
}

#[cfg(test)]
mod tests;
