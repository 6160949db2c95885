//! Throughput of the streaming paths (ignored by default; run with
//! `cargo test --release -p tokenmail-smime --test throughput -- --ignored --nocapture`).

mod common;

use common::pki;
use std::time::Instant;
use tokenmail_smime::alg::{ContentHasher, HashAlg, MultiHasher};
use tokenmail_smime::mime::{split_message, MultipartSignedWriter, SignedPartScanner};
use tokenmail_smime::signed::{DigestSigner, SignOptions};
use tokenmail_smime::stream::EncapsulatedSplitter;

#[test]
#[ignore]
fn streaming_throughput() {
    let p = pki();
    let signer = p.signer("ee_p256");
    let opts = SignOptions::default();
    let hash = opts.scheme_for(signer.key_kind()).expect("scheme").hash();
    let line = b"The quick brown fox jumps over the lazy dog, 0123456789 abcdefghij\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(1 << 16).collect();
    let total = 256usize << 20;

    let t = Instant::now();
    let mut h = ContentHasher::new(HashAlg::Sha256);
    for _ in 0..total / chunk.len() {
        h.update(&chunk);
    }
    let _ = h.finalize();
    report("SHA-256", total, t);

    let (headers, _) =
        split_message(b"From: a@example.com\nContent-Type: text/plain\n\n").expect("h");
    let t = Instant::now();
    let (mut w, mut out) =
        MultipartSignedWriter::new(&headers, &tokenmail_smime::mime::BodyPlan::Clean, "b", hash)
            .expect("w");
    let mut n = out.len();
    for _ in 0..total / chunk.len() {
        n += w.update(&chunk).expect("update").len();
    }
    out = w
        .finish(&signer, &p.cert("ee_p256"), &[p.cert("int")], &opts)
        .expect("finish");
    n += out.len();
    report("sign multipart/signed (CRLF + SHA-256)", total, t);
    assert!(n > total);

    let mut body = b"--b\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    let t = Instant::now();
    let mut sc = SignedPartScanner::new("b");
    let mut m = MultiHasher::new(&[
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ]);
    m.update(&sc.update(&body).expect("scan"));
    body.clear();
    for _ in 0..total / chunk.len() {
        m.update(&sc.update(&chunk).expect("scan"));
    }
    let _ = m.finalize();
    report("verify split + 4 hashes", total, t);

    let t = Instant::now();
    let mut sp = EncapsulatedSplitter::new();
    let mut hdr = vec![
        0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    hdr.extend_from_slice(&[
        0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x80,
    ]);
    hdr.extend_from_slice(&[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
    ]);
    hdr.extend_from_slice(&[0xa0, 0x80, 0x24, 0x80]);
    let _ = sp.update(&hdr).expect("hdr");
    let mut seg = vec![0x04, 0x83, 0x01, 0x00, 0x00];
    seg.extend_from_slice(&chunk);
    let mut got = 0;
    for _ in 0..total / chunk.len() {
        got += sp.update(&seg).expect("seg").len();
    }
    assert_eq!(got, total);
    report("opaque BER splitter", total, t);
}

fn report(what: &str, bytes: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    eprintln!("{what}: {:.0} MiB/s", bytes as f64 / s / (1 << 20) as f64);
}
