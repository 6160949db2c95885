//! The bodies of tokenmail's fuzz targets (issue 11 item 15), in one place.
//!
//! Each function takes arbitrary bytes, runs one family of parsers over them and checks
//! the invariants that are cheap to check. None may panic, and each bounds its work (the
//! inputs libFuzzer makes are small; the parsers' own limits bound the rest). They are
//! called by the cargo-fuzz project in `fuzz/` (one libFuzzer target per function, nightly)
//! and, on stable, by `tests/corpus.rs`, which replays the committed corpus
//! (`fuzz/corpus/<target>/`) and a bounded number of seeded mutations of it.
//!
//! A panic here is a finding: either a real defect (fix it in smime/ or proto/, add the
//! reproducer to the corpus) or a wrong invariant (fix the assertion, say why).

use std::io::{self, Read};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokenmail_proto::frame::{self, FrameKind, Header, HEADER_LEN, MAX_FRAME};
use tokenmail_proto::v1;
use tokenmail_smime::envelope::{
    self, mime::CmsInputDecoder, EncryptRecipient, EnvelopeParser, RecipientKey, SoftwareKey,
};
use tokenmail_smime::mime::{self as smime_mime, HeaderField};
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::pipeline::{self, WriteChunks};
use tokenmail_smime::reencode::{self, QpEncoder, TreeEncoder};
use tokenmail_smime::stream::EncapsulatedSplitter;
use tokenmail_smime::verify::{ParsedSignedData, VerifyOptions};
use tokenmail_smime::{address, ber};

/// The names of the targets, as the corpus directories and the libFuzzer targets name them.
pub const TARGETS: &[&str] = &[
    "frame",
    "request",
    "signed_data",
    "enveloped",
    "decrypt_stream",
    "mime",
    "pem",
    "from_header",
    "verify",
    "crl",
    "ocsp",
    "path_checks",
];

/// Runs the target called `name` (one of [`TARGETS`]) on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "frame" => frame,
        "request" => request,
        "signed_data" => signed_data,
        "enveloped" => enveloped,
        "decrypt_stream" => decrypt_stream,
        "mime" => mime,
        "pem" => pem,
        "from_header" => from_header,
        "verify" => verify,
        "crl" => crl,
        "ocsp" => ocsp,
        "path_checks" => path_checks,
        _ => return false,
    };
    f(data);
    true
}

// ------------------------------------------------------------------ fixtures and helpers

/// The fixed test PKI (fixtures/make-fixtures.sh): root (RSA, the anchor) -> int (P-256) ->
/// ee_rsa, ee_p256 (alice@example.org), valid from 2026-12-06 for ten years.
pub mod fixture {
    /// The trust anchor.
    pub const ROOT_PEM: &str = include_str!("../fixtures/root.pem");
    /// The intermediate CA.
    pub const INT_PEM: &str = include_str!("../fixtures/int.pem");
    /// RSA-2048 end entity, certificate and PKCS#8 key.
    pub const EE_RSA_PEM: &str = include_str!("../fixtures/ee_rsa.pem");
    /// Its key.
    pub const EE_RSA_KEY: &str = include_str!("../fixtures/ee_rsa.key");
    /// P-256 end entity.
    pub const EE_P256_PEM: &str = include_str!("../fixtures/ee_p256.pem");
    /// Its key.
    pub const EE_P256_KEY: &str = include_str!("../fixtures/ee_p256.key");
}

/// The verification time of the targets: 2027-06-01T00:00:00Z (inside the fixtures'
/// validity, whatever the machine's clock says).
pub fn verify_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_811_808_000)
}

struct Keys {
    rsa: SoftwareKey,
    p256: SoftwareKey,
    anchors: Vec<CertEntry>,
    int: CertEntry,
    ee_rsa: CertEntry,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let load = |k: &str, c: &str| match SoftwareKey::from_pem(k, c) {
            Ok(k) => k,
            Err(e) => panic!("fixture key: {e}"),
        };
        let anchors = match CertEntry::from_pem_bundle(fixture::ROOT_PEM.as_bytes()) {
            Ok(a) => a,
            Err(e) => panic!("fixture root: {e}"),
        };
        let one = |pem: &str| match CertEntry::from_pem_bundle(pem.as_bytes()) {
            Ok(mut c) if !c.is_empty() => c.remove(0),
            _ => panic!("fixture certificate"),
        };
        Keys {
            rsa: load(fixture::EE_RSA_KEY, fixture::EE_RSA_PEM),
            p256: load(fixture::EE_P256_KEY, fixture::EE_P256_PEM),
            anchors,
            int: one(fixture::INT_PEM),
            ee_rsa: one(fixture::EE_RSA_PEM),
        }
    })
}

/// A deterministic stream of chunk sizes derived from the input (FNV-1a of all of it,
/// then xorshift): mostly small, sometimes large, so that chunk boundaries fall everywhere
/// without the fuzzer spending input bytes on them.
struct Chunks {
    state: u64,
}

impl Chunks {
    fn of(data: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self { state: h | 1 }
    }

    fn next_size(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        let r = (x >> 8) as usize;
        match x & 3 {
            0 => 1 + r % 3,
            1 => 1 + r % 64,
            2 => 1 + r % 1024,
            _ => 1 + r % 65_536,
        }
    }

    /// `data` cut into pieces of the next sizes.
    fn split<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.next_size().min(data.len());
            let (a, b) = data.split_at(n);
            out.push(a);
            data = b;
        }
        out
    }
}

/// A reader that returns `data` in the pieces [`Chunks`] chooses (a slow socket or pipe).
struct ChoppyReader<'a> {
    data: &'a [u8],
    chunks: Chunks,
}

impl Read for ChoppyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunks.next_size().min(buf.len()).min(self.data.len());
        let (a, b) = self.data.split_at(n);
        buf[..n].copy_from_slice(a);
        self.data = b;
        Ok(n)
    }
}

fn choppy(data: &[u8]) -> ChoppyReader<'_> {
    ChoppyReader {
        data,
        chunks: Chunks::of(data),
    }
}

/// Whether every byte is 7-bit and not NUL.
fn seven_bit(data: &[u8]) -> bool {
    data.iter().all(|b| *b != 0 && *b < 0x80)
}

// ------------------------------------------------------------------ proto

/// The blocking and the async frame readers over a byte stream delivered in pieces, and
/// header decoding; every frame read re-encodes to the same bytes.
pub fn frame(data: &[u8]) {
    if let Some(h) = data.first_chunk::<HEADER_LEN>() {
        if let Ok(header) = Header::decode(h) {
            assert!(header.len as usize <= MAX_FRAME);
            assert_eq!(Header::decode(&header.encode()).ok(), Some(header));
        }
    }
    // the blocking reader, frame after frame
    let mut r = choppy(data);
    let mut blocking = Vec::new();
    let mut consumed = 0usize;
    loop {
        match frame::read_frame(&mut r) {
            Ok(Some((header, payload))) => {
                assert_eq!(header.len as usize, payload.len());
                let again = frame::encode_frame(header.kind, &payload).expect("within the cap");
                // what was read re-encodes to the bytes it was read from (our minor version)
                let orig = &data[consumed..consumed + HEADER_LEN + payload.len()];
                assert_eq!(&again[..5], &orig[..5]);
                assert_eq!(&again[6..], &orig[6..]);
                consumed += again.len();
                if header.kind == FrameKind::Message {
                    let _ = tokenmail_proto::decode_message::<v1::Request>(&payload);
                }
                blocking.push((header, payload));
            }
            Ok(None) => {
                assert_eq!(consumed, data.len());
                break;
            }
            Err(_) => break,
        }
    }
    // the agent's async reader (proto::codec) reads the same frames
    let rt = runtime();
    let deadlines = tokenmail_proto::codec::Deadlines {
        idle: Duration::from_secs(3600),
        frame: Duration::from_secs(3600),
    };
    let mut rest = data;
    let mut n = 0;
    rt.block_on(async {
        while let Ok(Some(f)) = tokenmail_proto::codec::read_frame(&mut rest, deadlines).await {
            assert_eq!(
                blocking.get(n),
                Some(&f),
                "async and blocking readers agree"
            );
            n += 1;
        }
    });
    assert_eq!(n, blocking.len(), "async and blocking readers agree");
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// A `Message` frame payload decoded as a request and as a response; a request that
/// decodes encodes and decodes back to itself, and its wire enums convert to the core's
/// types without panicking.
pub fn request(data: &[u8]) {
    if let Ok(req) = tokenmail_proto::decode_message::<v1::Request>(data) {
        let _ = req.is_stream();
        let bytes = tokenmail_proto::encode_message(&req).expect("a decoded request encodes");
        let back: v1::Request =
            tokenmail_proto::decode_message(&bytes).expect("an encoded request decodes");
        assert_eq!(back, req);
        match &req {
            v1::Request::SignDigest { algorithm, .. }
            | v1::Request::SignDigestCert { algorithm, .. } => {
                if let Some(s) = algorithm.to_scheme() {
                    assert_eq!(v1::SignAlgorithm::from_scheme(s), Some(*algorithm));
                }
            }
            v1::Request::DecryptKey { algorithm, .. } => {
                if let Some(t) = algorithm.to_key_transport() {
                    assert_eq!(
                        v1::DecryptAlgorithm::from_key_transport(t),
                        Some(*algorithm)
                    );
                }
            }
            v1::Request::Sign { form, digest, .. } => {
                let _ = form.to_pipeline();
                let _ = digest.map(v1::HashAlgorithm::to_signing_hash);
            }
            _ => {}
        }
    }
    if let Ok(resp) = tokenmail_proto::decode_message::<v1::Response>(data) {
        let _ = tokenmail_proto::encode_message(&resp);
    }
}

// ------------------------------------------------------------------ CMS

/// BER → DER, TLV walking, SignedData parsing, and the streaming splitter of encapsulated
/// SignedData fed in pieces. DER normalisation is idempotent, and the splitter returns the
/// same content as the whole parse.
pub fn signed_data(data: &[u8]) {
    if let Ok(der) = ber::ber_to_der(data) {
        assert_eq!(
            ber::ber_to_der(&der).ok().as_ref(),
            Some(&der),
            "DER is a fixed point"
        );
        if let Ok(t) = ber::Tlv::parse_exact(&der) {
            walk(t, 0);
        }
    }
    let _ = ber::header(data);
    let parsed = ParsedSignedData::parse(data).ok();
    if let Some(p) = &parsed {
        let _ = p.digest_algorithms();
        for c in &p.certificates {
            cert_facts(c);
        }
    }
    let mut s = EncapsulatedSplitter::new();
    let mut content = Vec::new();
    let mut chunks = Chunks::of(data);
    for piece in chunks.split(data) {
        match s.update(piece) {
            Ok(c) => content.extend_from_slice(&c),
            Err(_) => return,
        }
        let _ = s.digest_algorithms();
    }
    if let (Ok(detached), Some(p)) = (s.finish(), &parsed) {
        assert!(detached.encapsulated_content().is_none());
        assert_eq!(detached.signers.len(), p.signers.len());
        if let Some(e) = p.encapsulated_content() {
            assert_eq!(
                e,
                content.as_slice(),
                "splitter and parser agree on the content"
            );
        }
    }
}

fn walk(t: ber::Tlv<'_>, depth: usize) {
    if depth > 64 || t.tag & 0x20 == 0 {
        return;
    }
    if let Ok(children) = t.children() {
        for c in children {
            walk(c, depth + 1);
        }
    }
}

fn cert_facts(c: &CertEntry) {
    let _ = (c.subject(), c.issuer(), c.serial_hex(), c.emails());
    let _ = (c.is_self_issued(), c.validity_problem(verify_time()));
    if let Ok(k) = c.public_key() {
        let _ = (k.kind(), k.rsa_bits());
    }
}

/// The EnvelopedData / AuthEnvelopedData header parser, whole and in pieces, and the input
/// form decoder (MIME, PEM, DER) in pieces; no key is used.
pub fn enveloped(data: &[u8]) {
    let k = keys();
    let whole = EnvelopeParser::new().push(data);
    if let Ok(Some(env)) = &whole {
        let _ = (
            env.kind(),
            env.authenticated(),
            env.cipher_name(),
            env.legacy_cipher(),
        );
        let _ = env.is_recipient(k.rsa.certificate());
        let _ = env.is_recipient(k.p256.certificate());
    }
    let mut parser = EnvelopeParser::new();
    let mut chunks = Chunks::of(data);
    let mut chunked = None;
    for piece in chunks.split(data) {
        match parser.push(piece) {
            Ok(Some(env)) => {
                chunked = Some(env);
                break;
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
    if let (Ok(Some(a)), Some(b)) = (&whole, &chunked) {
        assert_eq!(a.kind(), b.kind());
        assert_eq!(a.recipient_ids(), b.recipient_ids());
    }
    // the input-form decoder
    let mut dec = CmsInputDecoder::new();
    let mut out = Vec::new();
    for piece in Chunks::of(data).split(data) {
        match dec.push_into(piece, &mut out) {
            Ok(()) => {}
            Err(_) => return,
        }
    }
    if let Ok(tail) = dec.finish() {
        out.extend_from_slice(&tail);
        let _ = EnvelopeParser::new().push(&out);
    }
}

/// The streaming decryption driver (`pipeline::decrypt_stream`) with the input delivered in
/// pieces, and the one-shot `envelope::decrypt`, with the fixture's RSA and P-256 keys:
/// when both succeed they give the same plaintext, and the plaintext is never longer than
/// the input.
pub fn decrypt_stream(data: &[u8]) {
    let k = keys();
    let pick = |env: &envelope::ParsedEnvelope| -> Result<&SoftwareKey, ()> {
        if env.is_recipient(k.p256.certificate()) {
            Ok(&k.p256)
        } else if env.is_recipient(k.rsa.certificate()) {
            Ok(&k.rsa)
        } else {
            Err(())
        }
    };
    let mut r = choppy(data);
    let mut sink = WriteChunks::new(Vec::new());
    // mostly every cipher, sometimes a stricter decrypt policy (refused before any key use)
    let policy = match Chunks::of(data).next_size() % 4 {
        0 => pipeline::CipherPolicy::Aes,
        1 => pipeline::CipherPolicy::Authenticated,
        _ => pipeline::CipherPolicy::Any,
    };
    let opts = pipeline::DecryptStream {
        entity_only: true,
        chunk: 4096,
        policy,
    };
    let streamed = pipeline::decrypt_stream(&mut r, &mut sink, &opts, pick);
    let streamed_plain = sink.into_inner();
    let mut cms = CmsInputDecoder::new();
    let one_shot = cms
        .push(data)
        .ok()
        .and_then(|d| EnvelopeParser::new().push(&d).ok().flatten())
        .and_then(|env| pick(&env).ok())
        .and_then(|key| envelope::decrypt(data, key).ok());
    if let Ok(outcome) = streamed {
        assert!(streamed_plain.len() <= data.len());
        if let Some(d) = one_shot {
            assert_eq!(outcome.authenticated, d.authenticated);
            assert_eq!(*d.content, streamed_plain, "streaming and one-shot agree");
        }
    }
}

// ------------------------------------------------------------------ MIME

/// The header parser and message splitter, the CRLF canonicalizer (in pieces = whole), the
/// 7-bit re-encoder (scan + encode, whole and streamed: same output, 7-bit bodies), the
/// quoted-printable encoder (round trip, 7-bit, line length) and decoder, base64 lines (round
/// trip), and the `multipart/signed` splitters (whole and streamed: same signed part).
pub fn mime(data: &[u8]) {
    // canonicalizer: pieces = whole
    let whole = smime_mime::canonicalize(data);
    let mut c = smime_mime::Canonicalizer::default();
    let mut pieces = Vec::new();
    for p in Chunks::of(data).split(data) {
        c.update_into(p, &mut pieces);
    }
    assert_eq!(pieces, whole, "canonicalizer: pieces = whole");

    // quoted-printable
    let mut q = QpEncoder::default();
    let mut enc = Vec::new();
    for p in Chunks::of(data).split(data) {
        q.update_into(p, &mut enc);
    }
    q.finish_into(&mut enc);
    assert!(seven_bit(&enc), "quoted-printable output is 7-bit");
    for line in enc.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= 76, "quoted-printable lines are at most 76");
    }
    let mut crlf = Vec::new();
    tokenmail_smime::text::crlf_into(&mut false, data, &mut crlf);
    assert_eq!(
        reencode::qp_decode(&enc),
        crlf,
        "quoted-printable round trip"
    );
    let _ = reencode::qp_decode(data);

    // base64 lines
    let b64 = smime_mime::Base64Lines::encode(data);
    let mut d = smime_mime::Base64Decoder::default();
    let mut back = Vec::new();
    for p in Chunks::of(&b64).split(&b64) {
        d.update_into(p, &mut back).expect("our base64 decodes");
    }
    back.extend_from_slice(&d.finish().expect("our base64 decodes"));
    assert_eq!(back, data, "base64 round trip");
    let mut d = smime_mime::Base64Decoder::default();
    let _ = d.update(data);
    let _ = d.finish();

    // header block and body
    let _ = smime_mime::parse_header(data);
    let Ok((fields, body)) = smime_mime::split_message(data) else {
        return;
    };
    for f in &fields {
        let v = f.value();
        let _ = (f.is_content(), f.canonical());
        let _ = smime_mime::ContentType::parse(&v);
    }
    reencode_both_ways(&fields, body);
    let _ = smime_mime::signed_entity(data);

    // multipart/signed: the whole-message splitter and the streaming scanner agree
    if let Ok(smime_mime::SmimeInput::MultipartSigned {
        signed_part,
        signature,
        ..
    }) = smime_mime::parse_smime(data)
    {
        let ct = fields
            .iter()
            .find(|f| f.is("Content-Type"))
            .map(|f| smime_mime::ContentType::parse(&f.value()));
        if let Some(boundary) = ct.as_ref().and_then(|c| c.param("boundary")) {
            let mut s = smime_mime::SignedPartScanner::new(boundary);
            let mut part = Vec::new();
            let mut ok = true;
            for p in Chunks::of(body).split(body) {
                if s.update_into(p, &mut part).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                if let Ok(sig) = s.finish() {
                    assert_eq!(part, signed_part, "multipart/signed: scanner = splitter");
                    assert_eq!(sig, signature, "multipart/signed: scanner = splitter");
                }
            }
        }
    }
}

fn reencode_both_ways(fields: &[HeaderField], body: &[u8]) {
    let Ok((written, out)) = reencode::reencode(fields, body) else {
        return;
    };
    let _ = written;
    // streamed, in pieces: the same plan and the same output
    let Ok(mut scan) = TreeEncoder::scan(fields) else {
        panic!("reencode succeeded, the scan must start");
    };
    for p in Chunks::of(body).split(body) {
        scan.update_into(p, &mut Vec::new())
            .expect("reencode succeeded, the scan must too");
    }
    let plan = scan
        .finish_into(&mut Vec::new())
        .expect("reencode succeeded, the scan must too")
        .expect("a scan returns a plan");
    if !plan.needs_encoding() {
        assert_eq!(out, smime_mime::canonicalize(body));
        return;
    }
    let (mut enc, _) = TreeEncoder::encode(fields, plan).expect("the encode pass starts");
    let mut streamed = Vec::new();
    for p in Chunks::of(body).split(body) {
        enc.update_into(p, &mut streamed)
            .expect("reencode succeeded, the streamed encode must too");
    }
    enc.finish_into(&mut streamed)
        .expect("reencode succeeded, the streamed encode must too");
    assert_eq!(streamed, out, "re-encoding: pieces = whole");
    // Every body line comes out 7-bit and at most 998 octets. The header blocks of nested
    // parts are copied as they are (8-bit bytes and long lines included: docs/smime.md), so
    // a line that is not is one of the input's lines.
    let input_lines: std::collections::HashSet<&[u8]> = body
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    for line in out.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !seven_bit(line) || line.len() > 998 {
            assert!(
                input_lines.contains(line),
                "a re-encoded body line that is not 7-bit safe is a header line of the input"
            );
        }
    }
}

/// PEM blocks (round trip through `pem_encode`), bare CMS detection, certificate bundles,
/// PKCS#8 private keys and recipient certificates.
pub fn pem(data: &[u8]) {
    if let Ok(blocks) = smime_mime::pem_blocks(data) {
        for (label, der) in &blocks {
            let text = smime_mime::pem_encode(label, der);
            let again = smime_mime::pem_blocks(text.as_bytes()).expect("our PEM parses");
            assert_eq!(again.len(), 1, "one block back");
            assert_eq!(&again[0].0, label, "PEM round trip: label");
            assert_eq!(&again[0].1, der, "PEM round trip: content");
        }
    }
    let _ = smime_mime::bare_cms(data);
    if let Ok(certs) = CertEntry::from_pem_or_der(data) {
        for c in &certs {
            cert_facts(c);
        }
    }
    let _ = EncryptRecipient::from_pem_or_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tokenmail_smime::signed::SoftwareSigner::from_pkcs8_pem(text);
        let _ = SoftwareKey::from_pem(text, fixture::EE_RSA_PEM);
    }
}

/// The sender of a message: `sender_address` / `sender_of` over the header block of the input,
/// and over one From field whose value is the input. A sender that parses has exactly one
/// '@' outside a quoted local part, no white space outside it, and a second From field makes
/// any message senderless.
pub fn from_header(data: &[u8]) {
    if let Ok((fields, _)) = smime_mime::split_message(data) {
        check_sender(&fields);
    }
    let mut raw = b"From: ".to_vec();
    raw.extend_from_slice(data);
    check_sender(&[HeaderField {
        name: "From".into(),
        raw,
    }]);
}

fn check_sender(fields: &[HeaderField]) {
    let got = address::sender_address(fields);
    let (a, why) = smime_mime::sender_of(fields);
    assert_eq!(got.clone().ok().flatten(), a);
    assert_eq!(got.clone().err(), why);
    assert_eq!(smime_mime::from_address(fields), a);
    if let Ok(Some(addr)) = &got {
        assert!(!addr.chars().any(char::is_control), "{addr:?}");
        let at = addr.rfind('@').expect("a sender has an '@'");
        let (local, domain) = (&addr[..at], &addr[at + 1..]);
        assert!(!local.is_empty() && !domain.is_empty(), "{addr:?}");
        assert!(!domain.contains(['@', ' ', '\t', '\r', '\n']), "{addr:?}");
        if !local.starts_with('"') {
            assert!(
                !local.contains(['@', ' ', '\t', '\r', '\n', '<', '>', ',']),
                "{addr:?}"
            );
        }
        // the address is in the field as written (not made up from pieces)
        let from = fields
            .iter()
            .find(|f| f.is("From"))
            .map(HeaderField::value)
            .unwrap_or_default();
        assert!(from.contains(addr.as_str()), "{addr:?} in {from:?}");
        // a second From field: no sender
        let mut two = fields.to_vec();
        two.push(HeaderField {
            name: "From".into(),
            raw: format!("From: {addr}").into_bytes(),
        });
        assert!(address::sender_address(&two).is_err(), "two From fields");
    }
}

/// Whole-message verification, in memory (`verify_smime`) and streamed (`verify_stream`,
/// input in pieces), against the fixture's root at a fixed time. Path building is bounded
/// (smime/src/path.rs); a message the streaming verifier finds valid is valid in memory too.
pub fn verify(data: &[u8]) {
    let k = keys();
    let opts = VerifyOptions::at(&k.anchors, verify_time());
    let in_memory = smime_mime::verify_smime(data, None, &opts);
    let mut r = choppy(data);
    let stream = pipeline::VerifyStream {
        max_in_memory: Some(4 << 20),
        chunk: 4096,
        ..Default::default()
    };
    let streamed = pipeline::verify_stream(&mut r, &mut io::sink(), &opts, stream);
    if let Ok(s) = &streamed {
        if s.report.valid {
            let m = in_memory.as_ref().expect("streamed valid: in memory too");
            assert!(m.report.valid, "streamed valid: in memory too");
            assert_eq!(m.sender, s.sender);
        }
    }
    if let Ok(m) = &in_memory {
        if m.report.valid {
            assert!(!m.report.signers.is_empty());
        }
    }
}

/// CRL parsing (DER or PEM) and the revocation decision for the fixture's path
/// (ee_rsa -> int -> root) under hard-fail, offline: whatever the CRL says, the answer is
/// one of good / revoked / unknown and a revoked or unknown entry fails the check.
pub fn crl(data: &[u8]) {
    use tokenmail_smime::revocation::{check_chain, Crl, RevocationInputs, RevocationMode};
    let Ok(crls) = Crl::from_pem_or_der(data, "fuzz") else {
        return;
    };
    for c in &crls {
        let _ = (c.is_delta(), c.this_update(), c.next_update(), c.issuer());
    }
    let k = keys();
    let chain: Vec<&CertEntry> = vec![&k.ee_rsa, &k.int, &k.anchors[0]];
    let pool = vec![k.int.clone()];
    let inp = RevocationInputs {
        mode: RevocationMode::HardFail,
        crls: &crls,
        now: verify_time(),
        skew: Duration::from_secs(300),
        fetcher: None,
        sources: Default::default(),
        pool: &pool,
        anchor: None,
        max_intermediates: 3,
        depth: 0,
        signer_budget: None,
    };
    let check = check_chain(&chain, &inp);
    assert_eq!(check.certificates.len(), 2);
    for e in &check.certificates {
        assert!(["good", "revoked", "unknown"].contains(&e.status.as_str()));
        if e.status != "good" {
            assert!(
                !check.ok,
                "hard-fail: a revoked or unknown certificate fails"
            );
        }
    }
}

/// OCSP responses: whatever the bytes, `check_response` answers a status or an error, and
/// an accepted answer is current at the verification time.
pub fn ocsp(data: &[u8]) {
    use tokenmail_smime::ocsp::{check_response, next_update, request};
    let k = keys();
    let Ok(q) = request(&k.ee_rsa, &k.int, Some(&[1u8; 16])) else {
        return;
    };
    let _ = next_update(data, &q);
    let now = verify_time();
    let skew = Duration::from_secs(300);
    for cached in [false, true] {
        if let Ok(a) = check_response(data, &q, &k.int, now, skew, cached) {
            assert!(
                a.this_update <= now + skew,
                "accepted an answer from the future"
            );
            if let Some(n) = a.next_update {
                assert!(n + skew >= now, "accepted an out-of-date answer");
            }
        }
    }
}

/// Name constraints and certificate policies (RFC 5280 §6.1) over a path of whatever
/// certificates the input holds (DER, one after another; end entity first, anchor last;
/// at most 8): no signature links them, so every extension reaches the processing. Both
/// checks answer; a policy outcome has policies or a problem, never both; the work is
/// bounded (the tree's node cap).
pub fn path_checks(data: &[u8]) {
    use tokenmail_smime::cert_policies::{check_path as policies, PolicyInputs};
    use tokenmail_smime::name_constraints::check_path as names;
    let mut certs = Vec::new();
    let mut rest = data;
    while certs.len() < 8 {
        let Ok((tlv, after)) = tokenmail_smime::ber::Tlv::parse(rest) else {
            break;
        };
        if let Ok(c) = CertEntry::from_der(tlv.raw.to_vec()) {
            certs.push(c);
        }
        rest = after;
    }
    if certs.len() < 2 {
        return;
    }
    let chain: Vec<&CertEntry> = certs.iter().collect();
    if let Some(o) = names(&chain) {
        assert!(o.problems.iter().all(|p| !p.is_empty()));
    }
    let strict = PolicyInputs {
        policies: vec!["2.16.840.1.101.3.2.1.48.1".into()],
        require_explicit_policy: true,
        inhibit_policy_mapping: true,
        inhibit_any_policy: true,
    };
    for inputs in [PolicyInputs::default(), strict] {
        let o = policies(&chain, &inputs);
        assert!(o.problem.is_none() || o.policies.is_empty(), "{o:?}");
        if inputs.require_explicit_policy && o.problem.is_none() {
            assert!(
                !o.policies.is_empty(),
                "an explicit policy was required: {o:?}"
            );
        }
    }
}
