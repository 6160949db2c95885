//! The streaming drivers (`pipeline::verify_stream`, `pipeline::encrypt_stream`) that the
//! command line and the agent share: forms, the second hash for a mislabelled `micalg`,
//! limits, and which side an I/O error is reported on.

mod common;
mod envelope_common;

use std::io::{self, Read, Write};
use std::process::Command;
use std::time::SystemTime;

use common::{pki, run, scratch};
use envelope_common::{fixture, Who};
use tokenmail_smime::envelope::{decrypt, ContentCipher};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::pipeline::{
    encrypt_stream, verify_stream, BackgroundFeed, ChunkSink, ContentSink, EntityReader,
    PipelineError, VerifyStream, WriteChunks, WriteFeed,
};
use tokenmail_smime::verify::VerifyOptions;

// ------------------------------------------------------------------------ helpers

/// A chunk sink whose disk is full.
struct FullDisk;

impl ChunkSink for FullDisk {
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        Vec::with_capacity(capacity)
    }
    fn put(&mut self, _: Vec<u8>) -> io::Result<()> {
        Err(io::Error::other("disk full"))
    }
}

/// Content kept in memory, readable again; counts the second reads.
#[derive(Default)]
struct Kept {
    data: Vec<u8>,
    rereads: usize,
}

impl Write for Kept {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ContentSink for Kept {
    fn rereadable(&self) -> bool {
        true
    }
    fn reread(&mut self) -> io::Result<Box<dyn Read + '_>> {
        self.rereads += 1;
        Ok(Box::new(&self.data[..]))
    }
}

/// Yields `data`, then fails.
struct Broken<'a>(&'a [u8]);

impl Read for Broken<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "gone"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn anchors() -> Vec<CertEntry> {
    let pem = std::fs::read(pki().path("root.pem")).expect("root");
    CertEntry::from_pem_or_der(&pem).expect("anchors")
}

fn options(anchors: &[CertEntry]) -> VerifyOptions<'_> {
    VerifyOptions {
        policy: Policy::default(),
        ..VerifyOptions::at(anchors, SystemTime::now())
    }
}

/// A text body over several 1 MiB chunks, LF line ends.
fn body() -> Vec<u8> {
    let line = b"The quick brown fox jumps over the lazy dog 0123456789\n";
    line.repeat((3 << 20) / line.len())
}

/// `openssl cms -sign` of `msg.txt` (a MIME entity) with `extra` arguments; returns the
/// output and the scratch directory.
fn openssl_sign(entity: &[u8], extra: &[&str]) -> (Vec<u8>, tempfile::TempDir) {
    let p = pki();
    let d = scratch();
    let input = d.path().join("msg.txt");
    let output = d.path().join("out");
    std::fs::write(&input, entity).expect("write");
    let (ok, _, err) = run(Command::new("openssl")
        .args(["cms", "-sign", "-in"])
        .arg(&input)
        .arg("-signer")
        .arg(p.path("ee_rsa.pem"))
        .arg("-inkey")
        .arg(p.path("ee_rsa.key"))
        .arg("-certfile")
        .arg(p.path("int.pem"))
        .args(["-from", "Alice <alice@example.com>"])
        .args(extra)
        .arg("-out")
        .arg(&output));
    assert!(ok, "openssl: {err}");
    (std::fs::read(&output).expect("read"), d)
}

fn entity() -> Vec<u8> {
    let mut e = b"Content-Type: text/plain\n\n".to_vec();
    e.extend_from_slice(&body());
    e
}

// ------------------------------------------------------------------------- verify

/// Signed with SHA-384, `micalg` says SHA-256: the second hash comes from the content sink,
/// from the input opened again, or (neither) every algorithm was hashed up front.
#[test]
fn mislabelled_micalg_is_hashed_again_from_wherever_it_can() {
    let (signed, _d) = openssl_sign(&entity(), &["-md", "sha384"]);
    let text = String::from_utf8_lossy(&signed).into_owned();
    assert!(text.contains("micalg=\"sha-384\""));
    let mislabelled = text
        .replace("micalg=\"sha-384\"", "micalg=\"sha-256\"")
        .into_bytes();
    let anchors = anchors();
    let opts = options(&anchors);

    let mut kept = Kept::default();
    let v = verify_stream(
        &mut &mislabelled[..],
        &mut kept,
        &opts,
        VerifyStream::default(),
    )
    .expect("verify");
    assert!(v.report.valid, "{:?}", v.report);
    assert_eq!(v.form, "multipart/signed");
    assert_eq!(v.sender.as_deref(), Some("alice@example.com"));
    assert_eq!(kept.rereads, 1, "hashed again from the content");
    assert!(kept
        .data
        .starts_with(b"Content-Type: text/plain\r\n\r\nThe quick"));
    assert!(v.content.is_empty());

    let mut reopened = 0;
    let copy = mislabelled.clone();
    let v = verify_stream(
        &mut &mislabelled[..],
        &mut io::sink(),
        &opts,
        VerifyStream {
            reopen_input: Some(Box::new(|| {
                reopened += 1;
                Ok(Box::new(io::Cursor::new(copy.clone())) as Box<dyn Read>)
            })),
            ..VerifyStream::default()
        },
    )
    .expect("verify");
    assert!(v.report.valid, "{:?}", v.report);
    assert_eq!(reopened, 1, "hashed again from the input");

    let v = verify_stream(
        &mut &mislabelled[..],
        &mut io::sink(),
        &opts,
        VerifyStream::default(),
    )
    .expect("verify");
    assert!(v.report.valid, "every algorithm hashed up front");

    // a correct micalg needs no second pass
    let mut kept = Kept::default();
    let v =
        verify_stream(&mut &signed[..], &mut kept, &opts, VerifyStream::default()).expect("verify");
    assert!(v.report.valid);
    assert_eq!(kept.rereads, 0);

    // and a changed body fails, whatever micalg says
    let bad = String::from_utf8_lossy(&mislabelled)
        .replacen("lazy dog", "lazy cat", 1)
        .into_bytes();
    let mut kept = Kept::default();
    let v =
        verify_stream(&mut &bad[..], &mut kept, &opts, VerifyStream::default()).expect("verify");
    assert!(!v.report.valid);
}

#[test]
fn detached_opaque_and_in_memory_forms() {
    let anchors = anchors();
    let opts = options(&anchors);
    let entity = entity();

    // detached DER signature: the input is the content, byte for byte
    let (sig, _d) = openssl_sign(&entity, &["-binary", "-outform", "DER"]);
    let mut kept = Kept::default();
    let v = verify_stream(
        &mut &entity[..],
        &mut kept,
        &opts,
        VerifyStream {
            detached_signature: Some(&sig),
            ..VerifyStream::default()
        },
    )
    .expect("verify");
    assert!(v.report.valid, "{:?}", v.report);
    assert_eq!(v.form, "detached");
    assert_eq!(kept.data, entity);
    let e = verify_stream(
        &mut &entity[..],
        &mut io::sink(),
        &opts,
        VerifyStream {
            detached_signature: Some(b"not a signature"),
            ..VerifyStream::default()
        },
    )
    .expect_err("garbage signature");
    assert!(matches!(e, PipelineError::SignatureNotCms), "{e}");

    // base64 application/pkcs7-mime: streamed
    let (opaque, _d) = openssl_sign(&entity, &["-nodetach", "-binary"]);
    let mut kept = Kept::default();
    let v =
        verify_stream(&mut &opaque[..], &mut kept, &opts, VerifyStream::default()).expect("verify");
    assert!(v.report.valid, "{:?}", v.report);
    assert_eq!(v.form, "pkcs7-mime");
    assert_eq!(kept.data, entity);

    // PEM CMS: in memory, within the caller's limit
    let (pem, _d) = openssl_sign(&entity, &["-nodetach", "-binary", "-outform", "PEM"]);
    let mut kept = Kept::default();
    let v =
        verify_stream(&mut &pem[..], &mut kept, &opts, VerifyStream::default()).expect("verify");
    assert!(v.report.valid, "{:?}", v.report);
    assert_eq!(kept.data, entity);
    let e = verify_stream(
        &mut &pem[..],
        &mut io::sink(),
        &opts,
        VerifyStream {
            max_in_memory: Some(1 << 20),
            ..VerifyStream::default()
        },
    )
    .expect_err("over the limit");
    assert!(
        matches!(e, PipelineError::TooLargeForMemory { limit } if limit == 1 << 20),
        "{e}"
    );
}

#[test]
fn verify_reports_which_side_failed() {
    let anchors = anchors();
    let opts = options(&anchors);
    let (signed, _d) = openssl_sign(&entity(), &[]);
    let e = verify_stream(
        &mut Broken(&signed[..2 << 20]),
        &mut io::sink(),
        &opts,
        VerifyStream::default(),
    )
    .expect_err("input breaks");
    assert!(matches!(e, PipelineError::Read(_)), "{e}");

    let e = verify_stream(
        &mut &signed[..],
        &mut FullWriter,
        &opts,
        VerifyStream::default(),
    )
    .expect_err("output breaks");
    assert!(matches!(e, PipelineError::Write(_)), "{e}");
}

// ------------------------------------------------------------------------ encrypt

#[test]
fn encrypt_stream_round_trips_through_either_sink() {
    let f = fixture();
    let mut msg =
        b"From: a@example.org\nTo: b@example.org\nSubject: s\nContent-Type: text/plain\n\n"
            .to_vec();
    msg.extend_from_slice(&body());
    let mut expected = b"Content-Type: text/plain\r\n\r\n".to_vec();
    expected.extend_from_slice(
        &String::from_utf8_lossy(&body())
            .replace('\n', "\r\n")
            .into_bytes(),
    );

    let mut in_place = WriteChunks::new(Vec::new());
    encrypt_stream(
        &[f.recipient(Who::Rsa)],
        ContentCipher::Aes256Gcm,
        &mut &msg[..],
        &mut in_place,
    )
    .expect("encrypt");
    let in_place = in_place.into_inner();
    let mut threaded = BackgroundFeed::new(WriteFeed(Vec::new()));
    encrypt_stream(
        &[f.recipient(Who::P256)],
        ContentCipher::Aes128Cbc,
        &mut &msg[..],
        &mut threaded,
    )
    .expect("encrypt");
    let threaded = threaded.finish().expect("writer").0;

    for (out, who, authenticated) in [(&in_place, Who::Rsa, true), (&threaded, Who::P256, false)] {
        assert!(out.starts_with(b"From: a@example.org\r\nTo: b@example.org\r\nSubject: s\r\n"));
        let d = decrypt(out, &f.software_key(who)).expect("decrypt");
        assert_eq!(d.authenticated, authenticated);
        assert!(d.content[..] == expected[..], "plaintext differs");
    }
}

#[test]
fn binary_bodies_are_not_canonicalised() {
    let mut msg =
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n".to_vec();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    msg.extend_from_slice(&body);
    let mut input = &msg[..];
    let (mut entity, outer) = EntityReader::open(&mut input).expect("open");
    assert!(outer.is_empty());
    let mut text = Vec::new();
    while entity.next_into(&mut text).expect("read") {}
    let mut expected =
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            .to_vec();
    expected.extend_from_slice(&body);
    assert!(text == expected);
}

#[test]
fn encrypt_reports_which_side_failed() {
    let f = fixture();
    let r = [f.recipient(Who::Rsa)];
    let cipher = ContentCipher::Aes256Gcm;

    // the limit is checked between reads of 1 MiB: a header block that does not end
    // within the first read is too large
    let mut huge = b"Subject: x\n".to_vec();
    huge.extend_from_slice(&b"X-Filler: 0123456789abcdef\n".repeat(50_000));
    huge.extend_from_slice(b"\nbody\n");
    let e = encrypt_stream(
        &r,
        cipher,
        &mut &huge[..],
        &mut WriteChunks::new(Vec::new()),
    )
    .expect_err("header block too large");
    assert!(matches!(e, PipelineError::HeaderTooLarge), "{e}");

    let mut msg = b"Content-Type: text/plain\n\n".to_vec();
    msg.extend_from_slice(&body());
    let e = encrypt_stream(
        &r,
        cipher,
        &mut Broken(&msg[..2 << 20]),
        &mut WriteChunks::new(Vec::new()),
    )
    .expect_err("input breaks");
    assert!(matches!(e, PipelineError::Read(_)), "{e}");

    let e = encrypt_stream(&r, cipher, &mut &msg[..], &mut FullDisk).expect_err("output breaks");
    assert!(matches!(e, PipelineError::Write(_)), "{e}");

    let mut full = BackgroundFeed::new(WriteFeed(FullWriter));
    let e = encrypt_stream(&r, cipher, &mut &msg[..], &mut full).expect_err("writer breaks");
    assert!(matches!(e, PipelineError::Write(_)), "{e}");
    assert_eq!(e.to_string(), "cannot write the output");
}

/// A writer whose disk is full.
struct FullWriter;

impl ContentSink for FullWriter {}

impl Write for FullWriter {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
