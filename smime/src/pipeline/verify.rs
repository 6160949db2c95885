//! Verification: detached content, `multipart/signed`, base64 `application/pkcs7-mime`
//! and bare DER/BER SignedData streamed; other forms read whole (bounded) and verified in
//! memory.

use std::io::{self, Read, Write};

use super::{read_chunk, BackgroundFeed, PipelineError, CHUNK};
use crate::alg::{ContentDigests, HashAlg, MultiHasher};
use crate::mime::{
    bare_cms, is_streamable_opaque, micalg_hashes, micalg_named, parse_header, sender_of,
    verify_smime, with_sha256_fallback, Base64Decoder, ContentType, MessageVerification,
    SignedPartScanner,
};
use crate::stream::EncapsulatedSplitter;
use crate::verify::{verify, ParsedSignedData, VerifyOptions};

/// A MIME header block to verify must be complete within this (else the input is taken for
/// something other than MIME).
const MAX_VERIFY_HEADER: usize = 1 << 20;
/// Of detached content, this much is kept to find the From address in.
const DETACHED_HEAD: usize = 64 * 1024;

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
    let chunk_len = if stream.chunk == 0 {
        CHUNK
    } else {
        stream.chunk
    };
    if let Some(sig) = stream.detached_signature {
        return verify_detached(input, sink, opts, sig, chunk_len);
    }
    let mut r = HeadReader::read(input, chunk_len)?;
    let multipart = r.header.as_ref().and_then(|(h, _)| {
        let ct = h.iter().find(|f| f.is("Content-Type"))?;
        let ct = ContentType::parse(&ct.value());
        let boundary = (ct.mime == "multipart/signed")
            .then(|| ct.param("boundary").map(str::to_string))
            .flatten()?;
        Some((boundary, ct.param("micalg").map(str::to_string)))
    });
    match multipart {
        Some((boundary, micalg)) => verify_multipart(
            input,
            sink,
            opts,
            &mut stream,
            r,
            &boundary,
            micalg.as_deref(),
        ),
        None if is_streamable_opaque(r.header.as_ref(), &r.head) => {
            verify_opaque(input, sink, opts, r)
        }
        None => {
            // forms that need the whole input (PEM CMS, non-base64 pkcs7-mime)
            r.read_rest(input, stream.max_in_memory)?;
            let v = verify_smime(&r.head, None, opts).map_err(PipelineError::Verify)?;
            sink.write_all(&v.content).map_err(PipelineError::Write)?;
            Ok(v)
        }
    }
}

/// The start of the input: read until the MIME header is complete, or the input is
/// obviously not MIME (DER, PEM), or the header limit.
struct HeadReader {
    head: Vec<u8>,
    /// the header fields and the offset of the body, when the input is MIME
    header: Option<(Vec<crate::mime::HeaderField>, usize)>,
    /// the input ended while the head was read
    eof: bool,
    buf: Vec<u8>,
}

impl HeadReader {
    fn read(input: &mut dyn Read, chunk_len: usize) -> Result<Self, PipelineError> {
        let mut buf = vec![0u8; chunk_len];
        let mut head = Vec::new();
        let mut eof = false;
        let header = loop {
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
        Ok(Self {
            head,
            header,
            eof,
            buf,
        })
    }

    /// Reads the rest of the input into `head`, up to `limit` bytes in all.
    fn read_rest(
        &mut self,
        input: &mut dyn Read,
        limit: Option<usize>,
    ) -> Result<(), PipelineError> {
        if self.eof {
            return Ok(());
        }
        match limit {
            None => {
                input
                    .read_to_end(&mut self.head)
                    .map_err(PipelineError::Read)?;
            }
            Some(limit) => {
                let room = (limit + 1 - self.head.len().min(limit)) as u64;
                input
                    .take(room)
                    .read_to_end(&mut self.head)
                    .map_err(PipelineError::Read)?;
                if self.head.len() > limit {
                    return Err(PipelineError::TooLargeForMemory { limit });
                }
            }
        }
        Ok(())
    }
}

/// Detached content: hashed (on a second thread) with what the signature's signers use.
fn verify_detached(
    input: &mut dyn Read,
    sink: &mut dyn ContentSink,
    opts: &VerifyOptions<'_>,
    sig: &[u8],
    chunk_len: usize,
) -> Result<MessageVerification, PipelineError> {
    let cms_err = PipelineError::Verify;
    let cms = bare_cms(sig)
        .map_err(cms_err)?
        .ok_or(PipelineError::SignatureNotCms)?;
    // the signature is at hand: hash only with what its signers use
    let algs = ParsedSignedData::parse(&cms)
        .map_err(cms_err)?
        .digest_algorithms();
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
        sink.write_all(&chunk).map_err(PipelineError::Write)?;
        if head.len() < DETACHED_HEAD {
            head.extend_from_slice(&chunk[..n.min(DETACHED_HEAD)]);
        }
        hasher.feed(chunk).map_err(PipelineError::Background)?;
    }
    let sender = parse_header(&head)
        .ok()
        .flatten()
        .map(|(h, _)| sender_of(&h))
        .unwrap_or_default();
    let digests = hasher
        .finish()
        .map_err(PipelineError::Background)?
        .finalize();
    verify_streamed(&cms, &digests, sender, "detached", opts)
}

/// `multipart/signed`: the signed part hashed with what `micalg` names (every supported
/// algorithm when the part cannot be read again), and again should the SignerInfos use
/// something else.
fn verify_multipart(
    input: &mut dyn Read,
    sink: &mut dyn ContentSink,
    opts: &VerifyOptions<'_>,
    stream: &mut VerifyStream<'_>,
    mut r: HeadReader,
    boundary: &str,
    micalg: Option<&str>,
) -> Result<MessageVerification, PipelineError> {
    let cms_err = PipelineError::Verify;
    let Some((headers, body_off)) = r.header.take() else {
        return Err(PipelineError::Verify(crate::SmimeError::Malformed(
            "no MIME header".into(),
        )));
    };
    let chunk_len = r.buf.len();
    let rereadable = sink.rereadable() || stream.reopen_input.is_some();
    let named = micalg_named(micalg);
    let algs = if rereadable && !named.is_empty() {
        named
    } else {
        micalg_hashes(micalg)
    };
    let mut scanner = SignedPartScanner::new(boundary);
    let mut hasher = BackgroundFeed::new(MultiHasher::new(&algs));
    let mut data = &r.head[body_off..];
    loop {
        let mut part = hasher.buffer(chunk_len + chunk_len / 8);
        scanner.update_into(data, &mut part).map_err(cms_err)?;
        sink.write_all(&part).map_err(PipelineError::Write)?;
        hasher.feed(part).map_err(PipelineError::Background)?;
        if r.eof {
            break;
        }
        let n = read_chunk(input, &mut r.buf)?;
        if n == 0 {
            break;
        }
        data = &r.buf[..n];
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
        sink.flush().map_err(PipelineError::Write)?;
        let extra = rehash_signed_part(
            sink,
            stream.reopen_input.as_mut(),
            body_off,
            boundary,
            &missing,
            &mut r.buf,
        )?;
        digests.0.extend(extra.0);
    }
    let (sender, problem) = sender_of(&headers);
    let mut o = opts.clone();
    o.sender_email = sender.as_deref();
    o.sender_problem = problem.as_deref();
    let report = verify(&parsed, &digests, &o);
    Ok(MessageVerification {
        report,
        content: Vec::new(),
        sender,
        form: "multipart/signed",
    })
}

/// Base64 `application/pkcs7-mime` or bare DER/BER SignedData: the encapsulated content is
/// split out and hashed as it streams (the digestAlgorithms precede it).
fn verify_opaque(
    input: &mut dyn Read,
    sink: &mut dyn ContentSink,
    opts: &VerifyOptions<'_>,
    mut r: HeadReader,
) -> Result<MessageVerification, PipelineError> {
    let cms_err = PipelineError::Verify;
    let (headers, body_off) = match r.header.take() {
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
        sink.write_all(&content).map_err(PipelineError::Write)
    };
    feed(&r.head[body_off..], &mut b64, sink)?;
    while !r.eof {
        let n = read_chunk(input, &mut r.buf)?;
        if n == 0 {
            break;
        }
        feed(&r.buf[..n], &mut b64, sink)?;
    }
    if let Some(d) = b64.take() {
        let rest = d.finish().map_err(cms_err)?;
        feed(&rest, &mut None, sink)?;
    }
    let hasher = hasher.unwrap_or_else(|| MultiHasher::new(&[HashAlg::Sha256]));
    let parsed = splitter.finish().map_err(cms_err)?;
    let (sender, problem) = headers.as_deref().map(sender_of).unwrap_or_default();
    let mut o = opts.clone();
    o.sender_email = sender.as_deref();
    o.sender_problem = problem.as_deref();
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

/// Verifies a signature (not parsed yet) against content digests computed while streaming.
fn verify_streamed(
    signature: &[u8],
    digests: &ContentDigests,
    (sender, problem): (Option<String>, Option<String>),
    form: &'static str,
    opts: &VerifyOptions<'_>,
) -> Result<MessageVerification, PipelineError> {
    let parsed = ParsedSignedData::parse(signature).map_err(PipelineError::Verify)?;
    let mut o = opts.clone();
    o.sender_email = sender.as_deref();
    o.sender_problem = problem.as_deref();
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
