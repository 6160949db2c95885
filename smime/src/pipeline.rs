//! Whole-message streaming drivers, shared by the command line (`tokenmail verify`,
//! `tokenmail encrypt`) and the agent's stream operations (docs/protocol.md §12).
//!
//! They are written over [`std::io::Read`] and [`std::io::Write`]: the caller opens the
//! files, sockets or spools and decides what to do with the output; nothing here knows a
//! path or the agent's protocol. Memory stays bounded (a few [`CHUNK`]s) whatever the
//! message size.
//!
//! Speed (docs/performance.md): input is read in 1 MiB chunks, and the second half of the
//! work runs on a second thread ([`BackgroundFeed`]): hashing while verifying, writing while
//! encrypting. Chunks are handed over by value and their buffers come back for reuse.

use std::io::{self, Read, Write};

use crate::alg::{ContentDigests, ContentHasher, HashAlg, MultiHasher};
use crate::envelope::mime::{
    find_header_end, looks_like_headers, outer_headers, split_headers, Base64LineEncoder,
    CrlfCanonicalizer, SplitHeaders, MAX_HEADER_BLOCK,
};
use crate::envelope::{ContentCipher, EncryptError, EncryptRecipient, Encryptor};
use crate::mime::{
    bare_cms, from_address, is_streamable_opaque, micalg_hashes, micalg_named, parse_header,
    verify_smime, with_sha256_fallback, Base64Decoder, ContentType, MessageVerification,
    SignedPartScanner,
};
use crate::stream::EncapsulatedSplitter;
use crate::verify::{verify, ParsedSignedData, VerifyOptions};
use crate::SmimeError;

/// Read size: big reads keep per-call costs (syscalls, thread hand-overs) negligible.
pub const CHUNK: usize = 1 << 20;
/// Output of one encrypted chunk: base64 of the ciphertext (4/3, plus CRLF every 76
/// characters).
pub const OUT_CHUNK: usize = CHUNK / 57 * 78 + 1024;
/// A MIME header block to verify must be complete within this (else the input is taken for
/// something other than MIME).
const MAX_VERIFY_HEADER: usize = 1 << 20;
/// Of detached content, this much is kept to find the From address in.
const DETACHED_HEAD: usize = 64 * 1024;

/// What went wrong in a streaming driver. The I/O variants say which side failed, so that
/// each caller can answer in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the input failed.
    #[error("cannot read the input")]
    Read(#[source] io::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Write(#[source] io::Error),
    /// The signed message or signature cannot be read.
    #[error("cannot verify: {0}")]
    Verify(SmimeError),
    /// The detached signature is not a CMS structure.
    #[error("the detached signature is neither DER nor PEM CMS")]
    SignatureNotCms,
    /// A signed form that is verified in memory is larger than the caller allows.
    #[error("this form of signed message is verified in memory, up to {limit} bytes")]
    TooLargeForMemory {
        /// the caller's limit, in bytes
        limit: usize,
    },
    /// The content written so far could not be opened again (for a second hash).
    #[error("cannot reread the content")]
    Reread(#[source] io::Error),
    /// The input could not be opened again (for a second hash).
    #[error("cannot read the input again")]
    Reopen(#[source] io::Error),
    /// The message to encrypt has a header block over [`MAX_HEADER_BLOCK`].
    #[error("the input's header block is larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderTooLarge,
    /// Encryption failed (recipient, randomness).
    #[error("cannot encrypt")]
    Encrypt(#[source] EncryptError),
    /// The hashing thread stopped.
    #[error("{0}")]
    Background(io::Error),
}

fn read_chunk(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, PipelineError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PipelineError::Read(e)),
        }
    }
}

// ------------------------------------------------------------------ background thread

/// Something fed chunk by chunk on a background thread: a content hasher, or a writer.
pub trait Feed: Send + 'static {
    /// Feed one chunk.
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()>;
}

impl Feed for ContentHasher {
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.update(chunk);
        Ok(())
    }
}

impl Feed for MultiHasher {
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.update(chunk);
        Ok(())
    }
}

/// A [`Write`] fed by a background thread.
#[derive(Debug)]
pub struct WriteFeed<W>(pub W);

impl<W: Write + Send + 'static> Feed for WriteFeed<W> {
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
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
    handle: Option<std::thread::JoinHandle<io::Result<F>>>,
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

    /// Hands a chunk over (blocks while one is waiting). When the thread stopped on an
    /// error, that error is returned.
    pub fn feed(&mut self, chunk: Vec<u8>) -> io::Result<()> {
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
                .unwrap_or_else(|| io::Error::other("the background thread stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> io::Result<F> {
        drop(self.tx.take());
        let h = self
            .handle
            .take()
            .ok_or_else(|| io::Error::other("the background thread is gone"))?;
        h.join()
            .map_err(|_| io::Error::other("the background thread panicked"))?
    }

    /// Waits for the thread and returns the feed.
    pub fn finish(mut self) -> io::Result<F> {
        self.join()
    }
}

/// Where a streaming driver puts its output chunks: written in place, or handed to a
/// writing thread.
pub trait ChunkSink {
    /// An empty buffer for the next chunk.
    fn buffer(&mut self, capacity: usize) -> Vec<u8>;
    /// Writes (or hands over) a chunk.
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<()>;
}

impl<F: Feed> ChunkSink for BackgroundFeed<F> {
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        BackgroundFeed::buffer(self, capacity)
    }
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.feed(chunk)
    }
}

/// A [`ChunkSink`] that writes each chunk in place, on the caller's thread (one buffer,
/// reused).
#[derive(Debug)]
pub struct WriteChunks<W> {
    w: W,
    spare: Vec<u8>,
}

impl<W: Write> WriteChunks<W> {
    /// Writes to `w`.
    pub fn new(w: W) -> Self {
        Self {
            w,
            spare: Vec::new(),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.w
    }
}

impl<W: Write> ChunkSink for WriteChunks<W> {
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.spare);
        b.clear();
        b.reserve(capacity);
        b
    }
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.w.write_all(&chunk)?;
        self.spare = chunk;
        Ok(())
    }
}

// ---------------------------------------------------------------------------- verify

/// Where [`verify_stream`] writes the content it verifies (the signed MIME entity, the
/// encapsulated content, or the detached content). Nothing in it is verified until the
/// driver returns a valid report: release it only then.
pub trait ContentSink: Write {
    /// Whether [`ContentSink::reread`] can give back what was written.
    fn rereadable(&self) -> bool {
        false
    }

    /// Everything written so far, from its start. Called at most once, after the last
    /// write and a flush, and only when [`ContentSink::rereadable`] said so.
    fn reread(&mut self) -> io::Result<Box<dyn Read + '_>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this output cannot be read again",
        ))
    }
}

/// The content is not wanted.
impl ContentSink for io::Sink {}

/// The input opened again from its start (see [`VerifyStream::reopen_input`]).
pub type Reopen<'a> = Box<dyn FnMut() -> io::Result<Box<dyn Read>> + 'a>;

/// How [`verify_stream`] reads its input.
#[derive(Default)]
pub struct VerifyStream<'a> {
    /// A detached signature (DER or PEM CMS): the input is then the signed content, byte
    /// for byte.
    pub detached_signature: Option<&'a [u8]>,
    /// The forms that cannot be streamed (PEM CMS, pkcs7-mime not in base64) are verified
    /// in memory: up to this many bytes (`None`: no limit).
    pub max_in_memory: Option<usize>,
    /// Opens the input again from its start, when it can be (a file, not a pipe).
    ///
    /// `multipart/signed` is hashed with the algorithms `micalg` names; when the SignerInfos
    /// (at the end) use another one, the signed part is hashed again, from the content sink
    /// if it is [rereadable](ContentSink::rereadable), else from the input opened again.
    /// When neither can be read twice, every supported algorithm is computed up front.
    pub reopen_input: Option<Reopen<'a>>,
    /// Read size (0 = [`CHUNK`]). Memory is a few of these: a long-running server with
    /// many streams picks less than the CLI's 1 MiB.
    pub chunk: usize,
}

impl std::fmt::Debug for VerifyStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyStream")
            .field(
                "detached_signature",
                &self.detached_signature.map(<[u8]>::len),
            )
            .field("max_in_memory", &self.max_in_memory)
            .field("reopen_input", &self.reopen_input.is_some())
            .field("chunk", &self.chunk)
            .finish()
    }
}

/// Verifies a signed message read from `input`, writing the signed content to `sink` as it
/// goes: detached content, `multipart/signed`, base64 `application/pkcs7-mime` and bare
/// DER/BER SignedData are streamed (hashed on a second thread where the algorithms are
/// known before the content); other forms are read whole and verified in memory.
///
/// The result's `content` is empty: the content went to `sink`.
pub fn verify_stream(
    input: &mut dyn Read,
    sink: &mut dyn ContentSink,
    opts: &VerifyOptions<'_>,
    mut stream: VerifyStream<'_>,
) -> Result<MessageVerification, PipelineError> {
    let w = PipelineError::Write;
    let cms_err = PipelineError::Verify;
    let chunk_len = if stream.chunk == 0 {
        CHUNK
    } else {
        stream.chunk
    };
    if let Some(sig) = stream.detached_signature {
        let cms = bare_cms(sig)
            .map_err(cms_err)?
            .ok_or(PipelineError::SignatureNotCms)?;
        // the signature is at hand: hash only with what its signers use
        let algs = ParsedSignedData::parse(&cms)
            .map_err(cms_err)?
            .digest_algorithms();
        // hashed on a second thread while the next chunk is read
        let mut hasher = BackgroundFeed::new(MultiHasher::new(&algs));
        let mut head = Vec::new();
        loop {
            let mut chunk = hasher.buffer(chunk_len);
            chunk.resize(chunk_len, 0);
            let n = read_chunk(input, &mut chunk)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            sink.write_all(&chunk).map_err(w)?;
            if head.len() < DETACHED_HEAD {
                head.extend_from_slice(&chunk[..n.min(DETACHED_HEAD)]);
            }
            hasher.feed(chunk).map_err(PipelineError::Background)?;
        }
        let sender = parse_header(&head)
            .ok()
            .flatten()
            .and_then(|(h, _)| from_address(&h));
        let digests = hasher
            .finish()
            .map_err(PipelineError::Background)?
            .finalize();
        return verify_streamed(&cms, &digests, sender, "detached", opts);
    }

    // read until the header is complete (or the input is obviously not MIME)
    let mut buf = vec![0u8; chunk_len];
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
        if head.len() > MAX_VERIFY_HEADER {
            break None;
        }
        let n = read_chunk(input, &mut buf)?;
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
            let rereadable = sink.rereadable() || stream.reopen_input.is_some();
            let named = micalg_named(micalg.as_deref());
            let algs = if rereadable && !named.is_empty() {
                named
            } else {
                micalg_hashes(micalg.as_deref())
            };
            let mut scanner = SignedPartScanner::new(&boundary);
            let mut hasher = BackgroundFeed::new(MultiHasher::new(&algs));
            let mut data = &head[body_off..];
            loop {
                let mut part = hasher.buffer(chunk_len + chunk_len / 8);
                scanner.update_into(data, &mut part).map_err(cms_err)?;
                sink.write_all(&part).map_err(w)?;
                hasher.feed(part).map_err(PipelineError::Background)?;
                if eof {
                    break;
                }
                let n = read_chunk(input, &mut buf)?;
                if n == 0 {
                    break;
                }
                data = &buf[..n];
            }
            let sig = scanner.finish().map_err(cms_err)?;
            let mut digests = hasher
                .finish()
                .map_err(PipelineError::Background)?
                .finalize();
            let parsed = ParsedSignedData::parse(&sig).map_err(cms_err)?;
            let missing: Vec<HashAlg> = parsed
                .digest_algorithms()
                .into_iter()
                .filter(|a| digests.get(*a).is_none())
                .collect();
            if !missing.is_empty() && rereadable {
                sink.flush().map_err(w)?;
                let extra = rehash_signed_part(
                    sink,
                    stream.reopen_input.as_mut(),
                    body_off,
                    &boundary,
                    &missing,
                    &mut buf,
                )?;
                digests.0.extend(extra.0);
            }
            let sender = from_address(&headers);
            let mut o = opts.clone();
            o.sender_email = sender.as_deref();
            let report = verify(&parsed, &digests, &o);
            Ok(MessageVerification {
                report,
                content: Vec::new(),
                sender,
                form: "multipart/signed",
            })
        }
        (header, None) if is_streamable_opaque(header.as_ref(), &head) => {
            let (headers, body_off) = match header {
                Some((h, off)) => (Some(h), off),
                None => (None, 0),
            };
            let mut b64 = headers.as_ref().map(|_| Base64Decoder::default());
            let mut splitter = EncapsulatedSplitter::new();
            // created once the digestAlgorithms (which precede the content) are read
            let mut hasher: Option<MultiHasher> = None;
            let mut feed = |data: &[u8],
                            b64: &mut Option<Base64Decoder>,
                            sink: &mut dyn ContentSink|
             -> Result<(), PipelineError> {
                let cms = match b64 {
                    Some(d) => d.update(data).map_err(cms_err)?,
                    None => data.to_vec(),
                };
                let content = splitter.update(&cms).map_err(cms_err)?;
                if hasher.is_none() {
                    if let Some(algs) = splitter.digest_algorithms() {
                        hasher = Some(MultiHasher::new(&with_sha256_fallback(algs)));
                    }
                }
                if let Some(h) = &mut hasher {
                    h.update(&content);
                }
                sink.write_all(&content).map_err(w)
            };
            feed(&head[body_off..], &mut b64, sink)?;
            if !eof {
                loop {
                    let n = read_chunk(input, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    feed(&buf[..n], &mut b64, sink)?;
                }
            }
            if let Some(d) = b64.take() {
                let rest = d.finish().map_err(cms_err)?;
                feed(&rest, &mut None, sink)?;
            }
            let hasher = hasher.unwrap_or_else(|| MultiHasher::new(&[HashAlg::Sha256]));
            let parsed = splitter.finish().map_err(cms_err)?;
            let sender = headers.as_deref().and_then(from_address);
            let mut o = opts.clone();
            o.sender_email = sender.as_deref();
            let report = verify(&parsed, &hasher.finalize(), &o);
            Ok(MessageVerification {
                report,
                content: Vec::new(),
                sender,
                form: if headers.is_some() {
                    "pkcs7-mime"
                } else {
                    "cms"
                },
            })
        }
        (_, _) => {
            // forms that need the whole input (PEM CMS, non-base64 pkcs7-mime)
            if !eof {
                match stream.max_in_memory {
                    None => {
                        input.read_to_end(&mut head).map_err(PipelineError::Read)?;
                    }
                    Some(limit) => {
                        let room = (limit + 1 - head.len().min(limit)) as u64;
                        (&mut *input)
                            .take(room)
                            .read_to_end(&mut head)
                            .map_err(PipelineError::Read)?;
                        if head.len() > limit {
                            return Err(PipelineError::TooLargeForMemory { limit });
                        }
                    }
                }
            }
            let v = verify_smime(&head, None, opts).map_err(cms_err)?;
            sink.write_all(&v.content).map_err(w)?;
            Ok(v)
        }
    }
}

/// Verifies a signature (not parsed yet) against content digests computed while streaming.
fn verify_streamed(
    signature: &[u8],
    digests: &ContentDigests,
    sender: Option<String>,
    form: &'static str,
    opts: &VerifyOptions<'_>,
) -> Result<MessageVerification, PipelineError> {
    let parsed = ParsedSignedData::parse(signature).map_err(PipelineError::Verify)?;
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

/// Hashes `algs` over everything `r` yields.
fn hash_reader(
    r: &mut dyn Read,
    algs: &[HashAlg],
    buf: &mut [u8],
) -> Result<ContentDigests, PipelineError> {
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
/// content sink, or from the input opened again (`body_off`: where the body starts).
fn rehash_signed_part(
    sink: &mut dyn ContentSink,
    reopen: Option<&mut Reopen<'_>>,
    body_off: usize,
    boundary: &str,
    algs: &[HashAlg],
    buf: &mut [u8],
) -> Result<ContentDigests, PipelineError> {
    if sink.rereadable() {
        let mut content = sink.reread().map_err(PipelineError::Reread)?;
        return hash_reader(&mut content, algs, buf);
    }
    let Some(reopen) = reopen else {
        return Err(PipelineError::Reopen(io::Error::other(
            "the input cannot be read a second time",
        )));
    };
    let mut f = reopen().map_err(PipelineError::Reopen)?;
    io::copy(&mut (&mut f).take(body_off as u64), &mut io::sink()).map_err(PipelineError::Read)?;
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
            .map_err(PipelineError::Verify)?;
        h.update(&part);
    }
    Ok(h.finalize())
}

// --------------------------------------------------------------------------- encrypt

/// The plaintext of a message to encrypt, read from its source chunk by chunk: the MIME
/// entity (Content-* header fields, an empty line, the body), with CRLF line endings unless
/// the body is `Content-Transfer-Encoding: binary`. The header block (bounded by
/// [`MAX_HEADER_BLOCK`]) is read first; the other header fields (From, To, Subject…) stay
/// outside the encryption.
pub struct EntityReader<'a> {
    input: &'a mut dyn Read,
    /// The plaintext from the header block, handed out first.
    first: Option<Vec<u8>>,
    binary: bool,
    canon: CrlfCanonicalizer,
    buf: Vec<u8>,
    chunk: usize,
}

impl std::fmt::Debug for EntityReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityReader")
            .field("binary", &self.binary)
            .finish_non_exhaustive()
    }
}

impl<'a> EntityReader<'a> {
    /// Reads the header block; returns the reader and the header fields that stay outside
    /// the encryption (CRLF-terminated).
    pub fn open(input: &'a mut dyn Read) -> Result<(Self, Vec<u8>), PipelineError> {
        Self::open_with(input, CHUNK)
    }

    /// As [`EntityReader::open`], reading `chunk` bytes at a time.
    pub fn open_with(
        input: &'a mut dyn Read,
        chunk: usize,
    ) -> Result<(Self, Vec<u8>), PipelineError> {
        let chunk = chunk.max(4096);
        let mut head = Vec::with_capacity(chunk);
        let (split, body_start) = loop {
            let n = crate::text::read_some(input, &mut head, chunk).map_err(PipelineError::Read)?;
            if !head.is_empty() && !looks_like_headers(&head) {
                break (SplitHeaders::default(), 0);
            }
            if let Some((end, body)) = find_header_end(&head) {
                break (split_headers(&head[..end]), body);
            }
            if n == 0 {
                // headers only (or empty input)
                let s = if head.is_empty() {
                    SplitHeaders::default()
                } else {
                    split_headers(&head)
                };
                let len = head.len();
                break (s, len);
            }
            if head.len() > MAX_HEADER_BLOCK {
                return Err(PipelineError::HeaderTooLarge);
            }
        };
        let mut canon = CrlfCanonicalizer::new();
        let mut text = Vec::with_capacity(chunk + chunk / 8);
        canon.push(&split.inner, &mut text);
        canon.push(b"\r\n", &mut text);
        let binary = split.body_is_binary();
        if binary {
            text.extend_from_slice(&head[body_start..]);
        } else {
            canon.push(&head[body_start..], &mut text);
        }
        Ok((
            Self {
                input,
                first: Some(text),
                binary,
                canon,
                buf: Vec::with_capacity(chunk),
                chunk,
            },
            split.outer,
        ))
    }

    /// Appends the next plaintext chunk to `out`; `false` at the end.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, PipelineError> {
        if let Some(first) = self.first.take() {
            out.extend_from_slice(&first);
            return Ok(true);
        }
        self.buf.clear();
        let n = crate::text::read_some(self.input, &mut self.buf, self.chunk)
            .map_err(PipelineError::Read)?;
        if n == 0 {
            return Ok(false);
        }
        if self.binary {
            out.extend_from_slice(&self.buf);
        } else {
            self.canon.push(&self.buf, out);
        }
        Ok(true)
    }
}

/// Encrypts a message from `input` into an `application/pkcs7-mime` message, streaming:
/// the header block (bounded) is read first and split (From, To, Subject… stay outside),
/// then the entity goes through CRLF canonicalisation (not for
/// `Content-Transfer-Encoding: binary`), the encryptor and base64, chunk by chunk. Hand
/// `output` a [`BackgroundFeed`] to write on a second thread.
pub fn encrypt_stream(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
    input: &mut dyn Read,
    output: &mut dyn ChunkSink,
) -> Result<(), PipelineError> {
    encrypt_stream_with(recipients, cipher, input, output, CHUNK)
}

/// As [`encrypt_stream`], reading `chunk` bytes at a time (memory is a few chunks).
pub fn encrypt_stream_with(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
    input: &mut dyn Read,
    output: &mut dyn ChunkSink,
    chunk: usize,
) -> Result<(), PipelineError> {
    let enc_err = PipelineError::Encrypt;
    let (mut entity, outer) = EntityReader::open_with(input, chunk)?;
    let chunk = chunk.max(4096);
    let out_chunk = chunk / 57 * 78 + 1024;
    let (mut enc, header) = Encryptor::new(recipients, cipher).map_err(enc_err)?;
    let mut b64 = Base64LineEncoder::new();
    let mut text = Vec::with_capacity(chunk + chunk / 8);
    let mut ct = Vec::with_capacity(chunk + chunk / 8);
    let mut out = output.buffer(out_chunk);
    out.extend_from_slice(&outer_headers(&outer, cipher));
    b64.push(&header, &mut out);
    loop {
        text.clear();
        if !entity.next_into(&mut text)? {
            break;
        }
        ct.clear();
        enc.update_into(&text, &mut ct).map_err(enc_err)?;
        b64.push(&ct, &mut out);
        output.put(out).map_err(PipelineError::Write)?;
        out = output.buffer(out_chunk);
    }
    b64.push(&enc.finish().map_err(enc_err)?, &mut out);
    b64.finish(&mut out);
    output.put(out).map_err(PipelineError::Write)?;
    Ok(())
}
