//! Signing: a message (or MIME entity) into `multipart/signed`, opaque signed-data, or a
//! detached CMS over the exact bytes.
//!
//! The input is read more than once — a fast 7-bit check over the body, then (only when the
//! body is not 7-bit safe) a scan of its MIME tree ([`crate::reencode`]), then the writing
//! pass — so it must be seekable: a file, or standard input / a socket spooled to one.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use x509_cert::Certificate;

use super::{read_chunk, BackgroundFeed, PipelineError, CHUNK};
use crate::alg::{ContentHasher, HashAlg};
use crate::mime::{
    pem_encode, BodyPlan, Canonicalizer, HeaderField, MultipartSigned, OpaqueWriter,
    SevenBitScanner,
};
use crate::reencode::TreeEncoder;
use crate::signed::{sign_detached, DigestSigner, SignOptions};
use crate::SmimeError;

/// The header block of a message to sign must fit in this.
pub const MAX_SIGN_HEADER: usize = 1 << 20;

/// What [`sign_stream`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignForm {
    /// `multipart/signed` (RFC 8551 §3.5.3): readable without S/MIME support
    Multipart,
    /// `application/pkcs7-mime; smime-type=signed-data`
    Opaque,
    /// the detached CMS SignedData only, DER
    DetachedDer,
    /// the detached CMS SignedData only, PEM
    DetachedPem,
}

/// Options of [`sign_stream`] besides the key and [`SignOptions`].
#[derive(Clone, Debug)]
pub struct SignStream {
    /// The output form.
    pub form: SignForm,
    /// Detached forms: sign the content with its line endings made CRLF, as it travels in a
    /// message (what `openssl smime -sign` does without `-binary`).
    pub crlf: bool,
    /// `multipart/signed`: the boundary (e.g. [`crate::mime::boundary_from_random`]).
    pub boundary: String,
    /// Read size (0 = [`CHUNK`]).
    pub chunk: usize,
}

fn sign_err(e: SmimeError) -> PipelineError {
    match e {
        e @ (SmimeError::Signer(_) | SmimeError::SelfCheck(_)) => PipelineError::Signer(e),
        e => PipelineError::Sign(e),
    }
}

/// Signs what `input` holds (from its current position to the end) and writes the result to
/// `output`. `opts.scheme` (or the key's default) sets the digest; the multipart form's
/// `micalg` follows it. Only the digest of the signed attributes goes to `signer`.
pub fn sign_stream<R: Read + Seek>(
    input: &mut R,
    output: &mut dyn Write,
    signer: &dyn DigestSigner,
    cert: &Certificate,
    chain: &[Certificate],
    opts: &SignOptions,
    stream: &SignStream,
) -> Result<(), PipelineError> {
    let hash = opts.scheme_for(signer.key_kind()).map_err(sign_err)?.hash();
    let chunk = if stream.chunk == 0 {
        CHUNK
    } else {
        stream.chunk
    };
    let mut out = BufWriter::with_capacity(64 * 1024, output);
    let w = PipelineError::Write;
    match stream.form {
        SignForm::DetachedDer | SignForm::DetachedPem => {
            let digest = hash_detached(input, hash, stream.crlf, chunk)?;
            let der = sign_detached(signer, cert, chain, &digest, opts).map_err(sign_err)?;
            if stream.form == SignForm::DetachedPem {
                out.write_all(pem_encode("CMS", &der).as_bytes())
                    .map_err(w)?;
            } else {
                out.write_all(&der).map_err(w)?;
            }
        }
        SignForm::Multipart | SignForm::Opaque => {
            let start = input.stream_position().map_err(PipelineError::Read)?;
            let (headers, body_off) = read_header(input, chunk)?;
            let body_at = start + body_off;
            let plan = plan_body(input, &headers, body_at, chunk)?;
            input
                .seek(SeekFrom::Start(body_at))
                .map_err(PipelineError::Read)?;
            if stream.form == SignForm::Opaque {
                write_opaque(
                    input,
                    &mut out,
                    &headers,
                    &plan,
                    hash,
                    chunk,
                    (signer, cert, chain, opts),
                )?;
            } else {
                let mp = MultipartSigned::new(&headers, &plan, &stream.boundary, hash)
                    .map_err(PipelineError::Sign)?;
                let digest = write_multipart(input, &mut out, &mp, hash, chunk)?;
                let sig = sign_detached(signer, cert, chain, &digest, opts).map_err(sign_err)?;
                out.write_all(&mp.trailer(&sig)).map_err(w)?;
            }
        }
    }
    out.flush().map_err(w)
}

/// The key and what goes with it.
type Signer<'a> = (
    &'a dyn DigestSigner,
    &'a Certificate,
    &'a [Certificate],
    &'a SignOptions,
);

/// The digest of the content for a detached signature.
fn hash_detached(
    input: &mut dyn Read,
    hash: HashAlg,
    crlf: bool,
    chunk: usize,
) -> Result<Vec<u8>, PipelineError> {
    let mut h = ContentHasher::new(hash);
    let mut buf = vec![0u8; chunk];
    let mut canon = crlf.then(Canonicalizer::default);
    let mut text = Vec::new();
    loop {
        let n = read_chunk(input, &mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        match canon.as_mut() {
            Some(c) => {
                text.clear();
                c.update_into(&buf[..n], &mut text);
                h.update(&text);
            }
            None => h.update(&buf[..n]),
        }
    }
}

/// Reads the header block: its fields and the offset of the body. Input without a blank
/// line is all header (an entity with an empty body).
fn read_header(
    input: &mut dyn Read,
    chunk: usize,
) -> Result<(Vec<HeaderField>, u64), PipelineError> {
    let mut head = Vec::new();
    loop {
        if let Some((h, off)) = crate::mime::parse_header(&head).map_err(PipelineError::Sign)? {
            return Ok((h, off as u64));
        }
        if head.len() > MAX_SIGN_HEADER {
            return Err(PipelineError::Sign(SmimeError::Malformed(format!(
                "the message's header block is over {} MiB; is this a message?",
                MAX_SIGN_HEADER >> 20
            ))));
        }
        let n = crate::text::read_some(input, &mut head, chunk).map_err(PipelineError::Read)?;
        if n == 0 {
            if head.is_empty() {
                return Err(PipelineError::Empty);
            }
            let (h, _) = crate::mime::split_message(&head).map_err(PipelineError::Sign)?;
            return Ok((h, head.len() as u64));
        }
    }
}

/// Decides how the body is written: a fast 7-bit check, and when it fails, a scan of the
/// MIME tree for the parts to re-encode.
fn plan_body<R: Read + Seek>(
    input: &mut R,
    headers: &[HeaderField],
    body_at: u64,
    chunk: usize,
) -> Result<BodyPlan, PipelineError> {
    let r = PipelineError::Read;
    input.seek(SeekFrom::Start(body_at)).map_err(r)?;
    let mut buf = vec![0u8; chunk];
    let mut scan = SevenBitScanner::default();
    while !scan.needs_encoding() {
        let n = read_chunk(input, &mut buf)?;
        if n == 0 {
            return Ok(BodyPlan::Clean);
        }
        scan.update(&buf[..n]);
    }
    input.seek(SeekFrom::Start(body_at)).map_err(r)?;
    let fields = crate::mime::entity_fields(headers, true);
    let mut tree = TreeEncoder::scan(&fields).map_err(PipelineError::Sign)?;
    let mut none = Vec::new();
    loop {
        let n = read_chunk(input, &mut buf)?;
        if n == 0 {
            break;
        }
        tree.update_into(&buf[..n], &mut none)
            .map_err(PipelineError::Sign)?;
    }
    let plan = tree.finish_into(&mut none).map_err(PipelineError::Sign)?;
    Ok(BodyPlan::from_scan(plan))
}

/// Writes the multipart/signed message up to the signature (input at the body's start);
/// returns the digest of the signed part, hashed on a second thread while the next chunk is
/// read, encoded and written.
fn write_multipart(
    input: &mut dyn Read,
    out: &mut dyn Write,
    plan: &MultipartSigned,
    hash: HashAlg,
    chunk: usize,
) -> Result<Vec<u8>, PipelineError> {
    let w = PipelineError::Write;
    let bg = PipelineError::Background;
    out.write_all(&plan.preamble()).map_err(w)?;
    let mut hasher = BackgroundFeed::new(ContentHasher::new(hash));
    let part_header = plan.part_header();
    out.write_all(&part_header).map_err(w)?;
    hasher.feed(part_header).map_err(bg)?;
    let mut encoder = plan.body_encoder().map_err(PipelineError::Sign)?;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = read_chunk(input, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut part = hasher.buffer(chunk + chunk / 2);
        encoder
            .update_into(&buf[..n], &mut part)
            .map_err(PipelineError::Sign)?;
        out.write_all(&part).map_err(w)?;
        hasher.feed(part).map_err(bg)?;
    }
    let tail = encoder.finish().map_err(PipelineError::Sign)?;
    out.write_all(&tail).map_err(w)?;
    hasher.feed(tail).map_err(bg)?;
    Ok(hasher.finish().map_err(bg)?.finalize())
}

/// Writes the opaque form (input at the body's start), signing at the end.
fn write_opaque(
    input: &mut dyn Read,
    out: &mut dyn Write,
    headers: &[HeaderField],
    plan: &BodyPlan,
    hash: HashAlg,
    chunk: usize,
    (signer, cert, chain, opts): Signer<'_>,
) -> Result<(), PipelineError> {
    let w = PipelineError::Write;
    let (mut ow, first) = OpaqueWriter::new(headers, plan, hash).map_err(PipelineError::Sign)?;
    out.write_all(&first).map_err(w)?;
    let mut buf = vec![0u8; chunk];
    let mut encoded = Vec::with_capacity(2 * chunk);
    loop {
        let n = read_chunk(input, &mut buf)?;
        if n == 0 {
            break;
        }
        encoded.clear();
        ow.update_into(&buf[..n], &mut encoded)
            .map_err(PipelineError::Sign)?;
        out.write_all(&encoded).map_err(w)?;
    }
    let last = ow.finish(signer, cert, chain, opts).map_err(sign_err)?;
    out.write_all(&last).map_err(w)
}
